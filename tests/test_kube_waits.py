"""Honest waits on a real cluster (issue 12 item 3), against a fake that behaves like Linkerd.

Linkerd's status controller writes conditions without ``observedGeneration`` and does not
rewrite an EgressNetwork's status when only ``trafficPolicy`` changes; the proxies get the new
policy a moment later. So ``patch`` returning proves only that the API stored it; the change
is in force when its effect is observed (:func:`egresskit.cluster.effect.await_effect`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from egresskit import guide
from egresskit.cluster.effect import Effect, await_effect
from egresskit.cluster.kube import KubeCluster
from egresskit.errors import BackendError, WaitTimeout
from tests.fakes.apiserver import ExecResult, FakeApiServer

NS = "egress-test"
EN_KEY = ("policy.linkerd.io", "egressnetworks", NS, "all-egress-traffic")
GET = "http://httpbin.org/get"


class LaggingProxy:
    """The client's proxy: it enforces the trafficPolicy it last received, and receives a
    change only ``lag`` requests after the API server stored it (the policy push)."""

    def __init__(self, api: FakeApiServer, lag: int) -> None:
        self.api, self.lag = api, lag
        self.enforced = "Allow"
        self.pending: tuple[str, int] | None = None

    def __call__(self, command: list[str]) -> ExecResult:
        stored = self.api.objects[EN_KEY]["spec"]["trafficPolicy"]
        if stored != self.enforced:
            policy, seen = (
                self.pending if self.pending and self.pending[0] == stored else (stored, 0)
            )
            self.pending = (policy, seen + 1)
            if seen >= self.lag:
                self.enforced, self.pending = stored, None
        code = "403" if self.enforced == "Deny" else "200"
        write_out = command[command.index("-w") + 1]
        out = write_out.replace("%{http_code}", code).replace("%{time_total}", "0.001")
        return ExecResult(stdout=out)


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    with FakeApiServer() as server:
        yield server


@pytest.fixture
def cluster(api: FakeApiServer, tmp_path: Path) -> Iterator[KubeCluster]:
    kubeconfig = str(api.kubeconfig(tmp_path))
    with KubeCluster("fake", kubeconfig=kubeconfig, poll_interval=0.001, progress=None) as c:
        c.apply([guide.NAMESPACE, guide.EGRESS_NETWORK, guide.CLIENT_POD])
        yield c


def test_patch_returns_before_the_proxy_enforces_it_and_the_probe_waits(
    api: FakeApiServer, cluster: KubeCluster
) -> None:
    api.exec_handler = LaggingProxy(api, lag=3)
    cluster.patch("egressnetwork", "all-egress-traffic", guide.DENY_PATCH, namespace=NS)
    # The status still reads as before the change: it cannot tell the change is in force.
    en = cluster.get("egressnetwork", "all-egress-traffic", namespace=NS)
    assert [c["status"] for c in en["status"]["conditions"]] == ["True"]
    assert "observedGeneration" not in en["status"]["conditions"][0]

    seen = await_effect(cluster, Effect(url=GET, http_status=403), interval=0.001)

    assert seen.probes == 4  # three answered by the old policy, the fourth by the new one
    assert cluster.curl("-s", GET, pod="client", namespace=NS).http_status == 403


def test_a_curl_right_after_patch_races_the_push(api: FakeApiServer, cluster: KubeCluster) -> None:
    """What the contract tests did before: curl at once, and see the old policy."""
    api.exec_handler = LaggingProxy(api, lag=3)
    cluster.patch("egressnetwork", "all-egress-traffic", guide.DENY_PATCH, namespace=NS)
    assert cluster.curl("-s", GET, pod="client", namespace=NS).http_status == 200


def test_the_probe_is_bounded_and_says_what_it_saw(
    api: FakeApiServer, cluster: KubeCluster
) -> None:
    api.exec_handler = LaggingProxy(api, lag=10**6)
    cluster.patch("egressnetwork", "all-egress-traffic", guide.DENY_PATCH, namespace=NS)
    with pytest.raises(WaitTimeout) as info:
        await_effect(cluster, Effect(url=GET, http_status=403), timeout=0.05, interval=0.001)
    assert info.value.what == f"{GET} from egress-test/client to answer HTTP 403"
    assert info.value.last_seen.startswith("HTTP 200 (probe ")


def test_no_http_response_is_an_effect_too(api: FakeApiServer, cluster: KubeCluster) -> None:
    api.exec_handler = lambda cmd: ExecResult(stderr="curl: (35) TLS connect error", exit_code=35)
    seen = await_effect(cluster, Effect(url="https://httpbin.org/get", http_status=None))
    assert seen.probes == 1


def test_an_egress_network_linkerd_refused_is_an_error_with_its_reason(tmp_path: Path) -> None:
    overlap = (
        "False",
        "EgressReasonNetworkOverlap",
        "networks overlap with the cluster networks: 10.0.0.0/8",
    )
    with FakeApiServer(egress_status={"all-egress-traffic": overlap}) as api:
        kubeconfig = str(api.kubeconfig(tmp_path))
        with (
            KubeCluster("fake", kubeconfig=kubeconfig, timeout=30, progress=None) as c,
            pytest.raises(BackendError) as info,
        ):
            c.apply([guide.NAMESPACE, guide.EGRESS_NETWORK])
    assert str(info.value) == (
        "fake: EgressNetwork egress-test/all-egress-traffic not accepted by Linkerd: "
        "Accepted=False (EgressReasonNetworkOverlap: networks overlap with the cluster "
        "networks: 10.0.0.0/8)"
    )
