"""The fake API server cannot accept what a real one refuses (issue 12 item 6).

It serves only the versions the real CRDs in ``egresskit/crds`` serve, validates what it is
sent against their schemas, and with ``fieldValidation=Strict`` rejects unknown fields the way
the API server's strict decoding does; the kube backend sends Strict with every write.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from egresskit import guide
from egresskit.cluster.kube import KubeCluster
from egresskit.errors import BackendError, ManifestError
from tests.fakes.apiserver import FakeApiServer
from tests.fakes.crd_catalog import crd_kinds, schema_problems, unknown_fields, version_priority

NS = "egress-test"
GW = "gateway.networking.k8s.io"


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    with FakeApiServer() as server:
        yield server


@pytest.fixture
def cluster(api: FakeApiServer, tmp_path: Path) -> Iterator[KubeCluster]:
    kubeconfig = str(api.kubeconfig(tmp_path))
    with KubeCluster("fake", kubeconfig=kubeconfig, poll_interval=0.001, progress=None) as c:
        yield c


def _get(api: FakeApiServer, path: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(api.url + path, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())


def _kinds(api: FakeApiServer, group_version: str) -> list[str]:
    status, doc = _get(api, f"/apis/{group_version}")
    return [] if status != 200 else [r["kind"] for r in doc["resources"] if "/" not in r["name"]]


def test_served_versions_are_the_crds_served_versions(api: FakeApiServer) -> None:
    # Gateway API v1.2.1 experimental: HTTPRoute at v1 and v1beta1, GRPCRoute at v1 only,
    # TLSRoute and TCPRoute at v1alpha2 only.
    assert sorted(_kinds(api, f"{GW}/v1")) == ["GRPCRoute", "HTTPRoute"]
    assert _kinds(api, f"{GW}/v1beta1") == ["HTTPRoute"]
    assert sorted(_kinds(api, f"{GW}/v1alpha2")) == ["TCPRoute", "TLSRoute"]
    assert _get(api, f"/apis/{GW}/v1alpha3")[0] == 404
    _, group = _get(api, f"/apis/{GW}")
    assert [v["version"] for v in group["versions"]] == ["v1", "v1beta1", "v1alpha2"]
    assert group["preferredVersion"]["version"] == "v1"
    _, group = _get(api, "/apis/policy.linkerd.io")
    assert group["preferredVersion"]["version"] == "v1beta3"


def test_the_catalogue_is_read_from_the_crd_files() -> None:
    served = {(k.group, k.version, k.kind) for k in crd_kinds()}
    assert (GW, "v1alpha2", "HTTPRoute") not in served
    assert (GW, "v1beta1", "HTTPRoute") in served
    assert ("policy.linkerd.io", "v1alpha1", "EgressNetwork") in served
    assert all(k.schema and k.status_subresource for k in crd_kinds())


def test_status_subresource_is_listed(api: FakeApiServer) -> None:
    _, doc = _get(api, "/apis/policy.linkerd.io/v1alpha1")
    names = [r["name"] for r in doc["resources"]]
    assert names.index("egressnetworks/status") == names.index("egressnetworks") + 1


@pytest.mark.parametrize(
    ("versions", "expected"),
    [
        (["v1alpha2", "v1", "v1beta1"], ["v1", "v1beta1", "v1alpha2"]),
        (["v1beta2", "v1beta3", "v1alpha1", "v2"], ["v2", "v1beta3", "v1beta2", "v1alpha1"]),
    ],
)
def test_version_priority_is_kubernetes_order(versions: list[str], expected: list[str]) -> None:
    assert sorted(versions, key=version_priority) == expected


# ---------------------------------------------------------------- the backend against it


def test_the_guides_literal_v1alpha2_route_is_a_version_not_served(
    api: FakeApiServer, cluster: KubeCluster
) -> None:
    # The kit checks the pinned CRDs before it sends anything, as kubectl's discovery does:
    # the refusal names the versions that are served, and nothing reaches the server.
    with pytest.raises(ManifestError) as info:
        cluster.apply([guide.NAMESPACE, guide.HTTPBIN_GET_ROUTE_V1ALPHA2])
    message = str(info.value)
    assert "expected a version the HTTPRoute CRD serves" in message
    assert f"{GW}/v1, {GW}/v1beta1" in message
    assert f'found "{GW}/v1alpha2"' in message
    assert api.writes() == []


def test_a_version_the_cluster_does_not_serve_names_the_served_ones(
    api: FakeApiServer, cluster: KubeCluster
) -> None:
    # A cluster whose CRDs differ from the pinned ones: the server's discovery decides.
    with pytest.raises(BackendError) as info:
        cluster._resource(f"{GW}/v1alpha2", "HTTPRoute")
    assert str(info.value) == (
        f"fake: HTTPRoute {GW}/v1alpha2: version not served; served: v1, v1beta1 "
        f"(the HTTPRoute CRD is installed: use apiVersion {GW}/v1)"
    )


def test_a_missing_gateway_api_is_still_not_installed(tmp_path: Path) -> None:
    with FakeApiServer(gateway_api=False) as api:
        kubeconfig = str(api.kubeconfig(tmp_path))
        with (
            KubeCluster("fake", kubeconfig=kubeconfig, progress=None) as c,
            pytest.raises(BackendError, match="HTTPRoute CRD not installed"),
        ):
            c.apply([guide.NAMESPACE, guide.HTTPBIN_GET_ROUTE])


def _route_with(**spec: Any) -> dict[str, Any]:
    route = yaml.safe_load(guide.HTTPBIN_GET_ROUTE)
    route["spec"].update(spec)
    return route


def test_an_unknown_field_is_refused_before_anything_is_applied(
    api: FakeApiServer, cluster: KubeCluster
) -> None:
    bad = _route_with(hostname="httpbin.org")  # the field is `hostnames`
    with pytest.raises(ManifestError, match=r'spec\.hostname: .*did you mean "hostnames"'):
        cluster.apply([guide.NAMESPACE, guide.EGRESS_NETWORK, bad])
    assert api.writes() == []


def _patch(api: FakeApiServer, path: str, body: Any, query: str = "") -> tuple[int, Any, list[str]]:
    req = urllib.request.Request(
        f"{api.url}{path}?fieldManager=t{query}",
        data=json.dumps(body).encode(),
        method="PATCH",
        headers={"Content-Type": "application/apply-patch+yaml"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read()), resp.headers.get_all("Warning") or []
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read()), []


ROUTE_URL = f"/apis/{GW}/v1/namespaces/egress-test/httproutes/httpbin-get"


def test_a_schema_violation_is_invalid(api: FakeApiServer) -> None:
    # The kit's own loader stops this before sending; the fake must refuse it too.
    route = yaml.safe_load(guide.HTTPBIN_GET_ROUTE)
    route["spec"]["parentRefs"][0]["port"] = 70000
    code, status, _ = _patch(api, ROUTE_URL, route, "&fieldValidation=Strict")
    assert (code, status["reason"]) == (422, "Invalid")
    assert status["message"].startswith(
        'HTTPRoute.gateway.networking.k8s.io "httpbin-get" is invalid: '
        "spec.parentRefs[0].port: Invalid value: 70000: "
    )
    assert api.objects == {}


def test_an_unknown_field_in_a_merge_patch_is_refused(
    api: FakeApiServer, cluster: KubeCluster
) -> None:
    cluster.apply([guide.NAMESPACE, guide.EGRESS_NETWORK])
    with pytest.raises(BackendError, match=r'unknown field "spec.trafficpolicy"'):
        cluster.patch(
            "egressnetwork", "all-egress-traffic", {"spec": {"trafficpolicy": "Deny"}}, namespace=NS
        )
    en = cluster.get("egressnetwork", "all-egress-traffic", namespace=NS)
    assert en["spec"] == {"trafficPolicy": "Allow"}, "nothing half-applied"


def test_a_bad_enum_in_a_merge_patch_is_invalid(cluster: KubeCluster) -> None:
    cluster.apply([guide.NAMESPACE, guide.EGRESS_NETWORK])
    with pytest.raises(BackendError, match=r"spec.trafficPolicy: Invalid value: \"Maybe\""):
        cluster.patch(
            "egressnetwork",
            "all-egress-traffic",
            {"spec": {"trafficPolicy": "Maybe"}},
            namespace=NS,
        )


def test_without_strict_unknown_fields_are_pruned_with_a_warning(api: FakeApiServer) -> None:
    code, stored, warnings = _patch(api, ROUTE_URL, _route_with(hostname="httpbin.org"))
    assert code == 201
    assert warnings == ['299 - "unknown field "spec.hostname""']
    assert "hostname" not in stored["spec"]


def test_writes_to_the_object_never_set_its_status(
    api: FakeApiServer, cluster: KubeCluster
) -> None:
    en = yaml.safe_load(guide.EGRESS_NETWORK)
    en["status"] = {"conditions": [{"type": "Accepted", "status": "False", "reason": "Forged"}]}
    cluster.apply([guide.NAMESPACE, en])
    got = cluster.get("egressnetwork", "all-egress-traffic", namespace=NS)
    assert got["status"]["conditions"][0]["reason"] == "Accepted"  # the controller's, not ours


# ------------------------------------------------------------------ the validation core


def test_unknown_fields_follow_pruning_rules() -> None:
    [en] = [k for k in crd_kinds() if k.kind == "EgressNetwork"]
    assert en.schema is not None
    obj = yaml.safe_load(guide.EGRESS_NETWORK)
    # Root apiVersion/kind/metadata are always known (Linkerd's schema spells "apiVerson").
    assert unknown_fields(en.schema, obj) == []
    obj["spec"]["networks"] = [{"cidr": "0.0.0.0/0", "exceptt": []}]
    obj["extra"] = 1
    assert unknown_fields(en.schema, obj) == ["spec.networks[0].exceptt", "extra"]
    assert schema_problems(en.schema, yaml.safe_load(guide.EGRESS_NETWORK)) == []
