"""The kube backend used from several threads at once, as the notebooks do (issue 12 item 1).

The traffic loop curls, the scraper reads metrics and the main thread patches and curls, all
on one :class:`~egresskit.cluster.kube.KubeCluster`. ``kubernetes.stream.stream()`` swaps
``call_api`` on the ``ApiClient`` it is given (kubernetes-client/python issue 928, and the
warning in its README), so exec must never run on the client the REST calls use.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from egresskit import guide
from egresskit.cluster.kube import KubeCluster
from egresskit.errors import EgressKitError
from tests.fakes.apiserver import FakeApiServer

NS = "egress-test"
METRICS = "# TYPE x counter\nx_total 1\n"


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    with FakeApiServer() as server:
        yield server


def test_curls_metrics_and_rest_calls_from_several_threads(
    api: FakeApiServer, tmp_path: Path
) -> None:
    with KubeCluster(
        "fake", kubeconfig=str(api.kubeconfig(tmp_path)), poll_interval=0.001, progress=None
    ) as c:
        c.apply([guide.NAMESPACE, guide.EGRESS_NETWORK, guide.CLIENT_POD])
        api.metrics[(NS, "client")] = METRICS
        rounds = 40
        failures: list[str] = []
        done: list[str] = []
        lock = threading.Lock()

        def run(name: str, call: Callable[[], object], check: Callable[[object], bool]) -> None:
            for _ in range(rounds):
                try:
                    result = call()
                except Exception as exc:  # every failure is counted, whatever its type
                    with lock:
                        failures.append(f"{name}: {type(exc).__name__}: {exc}")
                    continue
                with lock:
                    (done if check(result) else failures).append(f"{name}: {result!r:.80}")

        def curl() -> object:
            return c.curl("-s", "http://httpbin.org/get", pod="client", namespace=NS)

        jobs = [
            ("curl-1", curl, lambda r: getattr(r, "http_status", None) == 200),
            ("curl-2", curl, lambda r: getattr(r, "http_status", None) == 200),
            (
                "metrics",
                lambda: c.proxy_metrics("client", namespace=NS),
                lambda r: str(r).endswith(METRICS),
            ),
            (
                "rest",
                lambda: c.get("egressnetwork", "all-egress-traffic", namespace=NS),
                lambda r: isinstance(r, dict) and r["spec"]["trafficPolicy"] == "Allow",
            ),
            (
                "patch",  # the main thread's changes: a no-op merge patch, waited on like any
                lambda: c.patch(
                    "pod", "client", {"metadata": {"labels": {"t": "1"}}}, namespace=NS
                ),
                lambda r: isinstance(r, dict) and r["metadata"]["labels"] == {"t": "1"},
            ),
        ]
        threads = [threading.Thread(target=run, args=job, name=job[0], daemon=True) for job in jobs]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=100)
        assert not any(t.is_alive() for t in threads), "a worker thread did not finish"
        assert failures == [], f"{len(failures)} of {len(failures) + len(done)} calls failed"
        assert len(done) == rounds * len(jobs)
        # The REST client still works afterwards (a swapped call_api restored last breaks it).
        assert c.get("pod", "client", namespace=NS)["metadata"]["name"] == "client"
        patched = c.patch("egressnetwork", "all-egress-traffic", guide.DENY_PATCH, namespace=NS)
        assert patched["spec"] == {"trafficPolicy": "Deny"}


def test_a_foreign_error_in_exec_is_wrapped_once(api: FakeApiServer, tmp_path: Path) -> None:
    """What the exec path raises is the kit's error, whatever the transport does."""
    with KubeCluster("fake", kubeconfig=str(api.kubeconfig(tmp_path)), progress=None) as c:
        c.apply([guide.NAMESPACE, guide.CLIENT_POD])
        api.exec_drop = True  # the server hangs up right after the handshake
        with pytest.raises(EgressKitError) as info:
            c.curl("http://x", pod="client", namespace=NS, timeout=1)
    assert "exec curl in egress-test/client" in str(info.value)
