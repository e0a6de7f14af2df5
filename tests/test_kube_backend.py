"""The kube backend against a fake API server with the real REST conventions.

What runs here is the real ``kubernetes`` client (kubeconfig, urllib3, websocket exec) talking
HTTP to :mod:`tests.fakes.apiserver`; only the cluster is fake. A real cluster is exercised by
the ``kube``-marked contract tests in CI (see docs/kind.md).
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from egresskit import versions
from egresskit.cluster import kube
from egresskit.cluster.base import Cluster
from egresskit.cluster.kube import (
    CURL_MARKER,
    KubeCluster,
    connect_kind,
    curl_command,
    exec_exit_code,
    parse_curl_stdout,
    readiness,
)
from egresskit.errors import BackendError, ManifestError, Problem, WaitTimeout
from egresskit.manifests.model import K8sObject, ObjectMeta
from tests import kube_fixtures
from tests.fakes.apiserver import ExecResult, FakeApiServer

NS = "egress-test"
EN_PATH = f"/apis/policy.linkerd.io/v1alpha1/namespaces/{NS}/egressnetworks/all-egress-traffic"
ROUTE_PATH = f"/apis/gateway.networking.k8s.io/v1/namespaces/{NS}/httproutes/httpbin-get"
POD_PATH = f"/api/v1/namespaces/{NS}/pods/client"
SSA = "application/apply-patch+yaml"

# The guide's first steps, in one batch (namespace last on purpose: it must still go first).
GUIDE = """
apiVersion: policy.linkerd.io/v1alpha1
kind: EgressNetwork
metadata: {namespace: egress-test, name: all-egress-traffic}
spec: {trafficPolicy: Allow}
---
apiVersion: v1
kind: Pod
metadata:
  name: client
  namespace: egress-test
  annotations: {linkerd.io/inject: enabled}
spec:
  containers:
  - name: client
    image: curlimages/curl
    command: ["sh", "-c", "sleep infinity"]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: httpbin-get, namespace: egress-test}
spec:
  parentRefs:
  - {name: all-egress-traffic, kind: EgressNetwork, group: policy.linkerd.io,
     namespace: egress-test, port: 80}
  rules:
  - matches:
    - path: {value: /get}
---
apiVersion: v1
kind: Namespace
metadata: {name: egress-test}
"""


def _shim_load(source: Any) -> list[K8sObject]:
    """Stand-in for egresskit.manifests.load_manifests while that module is being written."""
    docs = [d for d in yaml.safe_load_all(source)] if isinstance(source, str) else [source]
    problems, out = [], []
    for i, doc in enumerate(docs, 1):
        if not doc:
            continue
        policy = (doc.get("spec") or {}).get("trafficPolicy")
        if doc.get("kind") == "EgressNetwork" and policy not in ("Allow", "Deny"):
            problems.append(
                Problem(
                    source="<string>",
                    document=i,
                    obj=None,
                    path="spec.trafficPolicy",
                    expected="Allow or Deny",
                    found=repr(policy),
                )
            )
        meta = doc["metadata"]
        ns = meta.get("namespace") or (None if doc["kind"] == "Namespace" else "default")
        out.append(
            K8sObject(
                api_version=doc["apiVersion"],
                kind=doc["kind"],
                metadata=ObjectMeta(name=meta["name"], namespace=ns),
                raw=doc,
            )
        )
    if problems:
        raise ManifestError(problems)
    return out


@pytest.fixture(autouse=True)
def manifests_loader(monkeypatch: pytest.MonkeyPatch) -> None:
    try:
        from egresskit.manifests import load_manifests

        load_manifests("apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n")
    except Exception:  # the real loader is written in parallel; any breakage there -> shim
        monkeypatch.setattr(kube, "_load_manifests", _shim_load)


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    with FakeApiServer() as server:
        yield server


@pytest.fixture
def progress() -> list[str]:
    return []


def _connect(server: FakeApiServer, tmp_path: Path, progress: list[str], **kw: Any) -> KubeCluster:
    kw.setdefault("timeout", 5.0)
    return KubeCluster(
        "fake",
        kubeconfig=str(server.kubeconfig(tmp_path)),
        poll_interval=0.001,
        progress=progress.append,
        **kw,
    )


@pytest.fixture
def cluster(api: FakeApiServer, tmp_path: Path, progress: list[str]) -> Iterator[KubeCluster]:
    with _connect(api, tmp_path, progress) as c:
        yield c


# ---------------------------------------------------------------------------------- apply


def test_it_is_a_cluster(cluster: KubeCluster) -> None:
    assert isinstance(cluster, Cluster)
    assert cluster.name == "fake"


def test_apply_is_server_side_apply_namespaces_first_then_dry_run_then_apply(
    api: FakeApiServer, cluster: KubeCluster
) -> None:
    lines = cluster.apply(GUIDE)

    assert lines == [
        "EgressNetwork egress-test/all-egress-traffic created",
        "Pod egress-test/client created",
        "HTTPRoute egress-test/httpbin-get created",
        "Namespace egress-test created",
    ]
    writes = [(r.path, r.query.get("dryRun")) for r in api.writes()]
    assert writes == [
        ("/api/v1/namespaces/egress-test", None),
        (EN_PATH, ["All"]),
        (POD_PATH, ["All"]),
        (ROUTE_PATH, ["All"]),
        (EN_PATH, None),
        (POD_PATH, None),
        (ROUTE_PATH, None),
    ]
    for r in api.writes():
        assert r.method == "PATCH"
        assert r.content_type == SSA
        assert r.query["fieldManager"] == ["egresskit"]
        assert r.query["force"] == ["true"]
        assert r.query["fieldValidation"] == ["Strict"]
        assert r.authorization == "Bearer t0k3n"
    # Discovery of every group/version happened before the first write.
    first_write = api.requests.index(api.writes()[0])
    discovered = {r.path for r in api.requests[:first_write]}
    assert {"/api/v1", "/apis/policy.linkerd.io/v1alpha1"} <= discovered
    assert "/apis/gateway.networking.k8s.io/v1" in discovered
    assert api.writes()[-1].body["spec"]["parentRefs"][0]["port"] == 80


def test_second_apply_reports_configured(api: FakeApiServer, cluster: KubeCluster) -> None:
    cluster.apply(GUIDE)
    assert cluster.apply(GUIDE)[0] == "EgressNetwork egress-test/all-egress-traffic configured"


def test_apply_records_one_change_with_objects_in_given_order(cluster: KubeCluster) -> None:
    cluster.apply(GUIDE)
    [change] = cluster.changes
    assert change.verb == "apply"
    assert change.objects == (
        "EgressNetwork egress-test/all-egress-traffic",
        "Pod egress-test/client",
        "HTTPRoute egress-test/httpbin-get",
        "Namespace egress-test",
    )
    assert (
        change.summary
        == "EgressNetwork all-egress-traffic: Allow, Pod client, HTTPRoute httpbin-get"
    )


def test_apply_waits_until_status_says_in_force(tmp_path: Path, progress: list[str]) -> None:
    with FakeApiServer(ready_after=3) as api, _connect(api, tmp_path, progress) as c:
        c.apply(GUIDE)
        route_gets = api.calls("GET", ROUTE_PATH)
    assert len(route_gets) == 4  # three polls without Accepted=True, the fourth with
    assert (
        "waiting for HTTPRoute egress-test/httpbin-get: parent EgressNetwork all-egress-traffic"
        " port 80: Accepted=False (NoMatchingParent: EgressNetwork parent has not been accepted)"
    ) in progress
    assert any(m.startswith("HTTPRoute egress-test/httpbin-get: Accepted=True") for m in progress)
    assert any(m.startswith("Pod egress-test/client: Ready") for m in progress)
    assert any(
        m.startswith("EgressNetwork egress-test/all-egress-traffic: Accepted=True")
        for m in progress
    )
    # A change is reported once, not once per poll.
    assert sum(m.startswith("waiting for HTTPRoute") for m in progress) == 1


def test_apply_wait_is_bounded_and_says_what_it_saw(tmp_path: Path, progress: list[str]) -> None:
    with (
        FakeApiServer(never_ready={"httpbin-get"}) as api,
        _connect(api, tmp_path, progress, timeout=0.05) as c,
        pytest.raises(WaitTimeout) as info,
    ):
        c.apply(GUIDE)
    assert info.value.what == "HTTPRoute egress-test/httpbin-get to be in force"
    assert info.value.seconds == 0.05
    assert "NoMatchingParent" in info.value.last_seen
    assert info.value.last_seen.startswith(
        "HTTPRoute egress-test/httpbin-get: parent EgressNetwork"
    )


def test_invalid_manifest_sends_nothing(api: FakeApiServer, cluster: KubeCluster) -> None:
    bad = GUIDE.replace("trafficPolicy: Allow", "trafficPolicy: Maybe")
    with pytest.raises(ManifestError, match="trafficPolicy"):
        cluster.apply(bad)
    assert api.requests == []
    assert cluster.changes == []


@pytest.mark.parametrize(
    ("server", "message"),
    [
        (
            {"crds": False},
            "fake: EgressNetwork CRD not installed: is Linkerd installed? "
            "run `egresskit cluster up` (policy.linkerd.io/v1alpha1 is not served)",
        ),
        (
            {"gateway_api": False},
            "fake: HTTPRoute CRD not installed: are the Gateway API v1.2.1 experimental CRDs "
            "installed? run `egresskit cluster up` (gateway.networking.k8s.io/v1 is not "
            "served)",
        ),
    ],
    ids=["linkerd-crds-missing", "gateway-api-missing"],
)
def test_missing_crd_is_a_backend_error_before_any_write(
    tmp_path: Path, progress: list[str], server: dict[str, bool], message: str
) -> None:
    with FakeApiServer(**server) as api, _connect(api, tmp_path, progress) as c:
        with pytest.raises(BackendError) as info:
            c.apply(GUIDE)
        assert str(info.value) == message
        assert api.writes() == []


def test_admission_denial_in_dry_run_applies_nothing_but_namespaces(
    tmp_path: Path, progress: list[str]
) -> None:
    denial = (
        'admission webhook "linkerd-policy-validator.linkerd.io" denied the request: '
        "cannot target an EgressNetwork without specifying a port"
    )
    fail = {("PATCH", ".*/httproutes/httpbin-get"): (400, "BadRequest", denial)}
    with FakeApiServer(fail=fail) as api, _connect(api, tmp_path, progress) as c:
        with pytest.raises(BackendError) as info:
            c.apply(GUIDE)
        real_writes = [r.path for r in api.writes() if "dryRun" not in r.query]
    assert str(info.value) == (
        f"fake: dry-run apply HTTPRoute egress-test/httpbin-get: {denial} (BadRequest, HTTP 400)"
    )
    assert real_writes == ["/api/v1/namespaces/egress-test"]
    assert info.value.__cause__ is None  # an HTTP answer, not a foreign exception


# --------------------------------------------------------------------- patch / get / delete


@pytest.mark.parametrize(
    "patch",
    [{"spec": {"trafficPolicy": "Deny"}}, '{"spec":{"trafficPolicy": "Deny"}}'],
    ids=["mapping", "json-text"],
)
def test_patch_is_a_merge_patch(
    api: FakeApiServer, cluster: KubeCluster, patch: dict[str, Any] | str
) -> None:
    cluster.apply(GUIDE)
    before = len(api.requests)
    result = cluster.patch("EgressNetwork", "all-egress-traffic", patch, namespace=NS)

    [req] = [r for r in api.requests[before:] if r.method == "PATCH"]
    assert req.path == EN_PATH
    assert req.content_type == "application/merge-patch+json"
    assert req.query == {"fieldManager": ["egresskit"], "fieldValidation": ["Strict"]}
    assert req.body == {"spec": {"trafficPolicy": "Deny"}}
    assert result["spec"]["trafficPolicy"] == "Deny"
    assert cluster.changes[-1].verb == "patch"
    assert cluster.changes[-1].objects == ("EgressNetwork egress-test/all-egress-traffic",)
    assert cluster.changes[-1].summary == "EgressNetwork all-egress-traffic: Deny"


def test_patch_text_that_is_not_an_object_is_a_manifest_error(
    api: FakeApiServer, cluster: KubeCluster
) -> None:
    with pytest.raises(ManifestError, match="patch: expected a JSON object, found list"):
        cluster.patch("EgressNetwork", "x", "[1, 2]", namespace=NS)
    assert api.writes() == []


def test_get_returns_the_object_with_status(cluster: KubeCluster) -> None:
    cluster.apply(GUIDE)
    obj = cluster.get("egressnetwork", "all-egress-traffic", namespace=NS)
    assert obj["spec"] == {"trafficPolicy": "Allow"}
    assert obj["status"]["conditions"][0]["type"] == "Accepted"


def test_get_uses_the_version_last_applied(api: FakeApiServer, cluster: KubeCluster) -> None:
    cluster.apply(GUIDE)
    cluster.get("HTTPRoute", "httpbin-get", namespace=NS)
    assert api.requests[-1].path == ROUTE_PATH


def test_get_kind_dot_group_uses_the_preferred_version(
    api: FakeApiServer, cluster: KubeCluster
) -> None:
    with pytest.raises(BackendError, match="not found"):
        cluster.get("HTTPRoute.policy.linkerd.io", "r", namespace=NS)
    assert api.requests[-1].path == f"/apis/policy.linkerd.io/v1beta3/namespaces/{NS}/httproutes/r"


def test_get_missing_object_carries_the_api_message(cluster: KubeCluster) -> None:
    with pytest.raises(BackendError) as info:
        cluster.get("EgressNetwork", "nope", namespace=NS)
    assert str(info.value) == (
        'fake: get EgressNetwork egress-test/nope: egressnetworks "nope" not found '
        "(NotFound, HTTP 404)"
    )


def test_get_unknown_kind(api: FakeApiServer, cluster: KubeCluster) -> None:
    with pytest.raises(BackendError, match="unknown kind 'ConfigMap'"):
        cluster.get("ConfigMap", "x", namespace=NS)
    assert api.requests == []


def test_delete_waits_until_not_found(tmp_path: Path, progress: list[str]) -> None:
    with FakeApiServer(delete_lag=2) as api, _connect(api, tmp_path, progress) as c:
        c.apply(GUIDE)
        start = len(api.requests)
        c.delete("Pod", "client", namespace=NS)
        seen = [(r.method, r.path, r.query) for r in api.requests[start:]]
    assert seen[0] == ("DELETE", POD_PATH, {"propagationPolicy": ["Background"]})
    assert seen[1:] == [("GET", POD_PATH, {})] * 3  # two while terminating, then 404
    assert c.changes[-1].verb == "delete"
    assert c.changes[-1].objects == ("Pod egress-test/client",)


def test_delete_wait_is_bounded(tmp_path: Path, progress: list[str]) -> None:
    with FakeApiServer(delete_lag=10**6) as api, _connect(api, tmp_path, progress) as c:
        c.apply(GUIDE)
        c._timeout = 0.02
        with pytest.raises(WaitTimeout) as info:
            c.delete("Pod", "client", namespace=NS)
    assert info.value.what == "Pod egress-test/client to be deleted"
    assert info.value.last_seen == "still present (deletionTimestamp 2025-01-01T00:00:00Z)"


def test_delete_missing_object(cluster: KubeCluster) -> None:
    with pytest.raises(BackendError, match='pods "ghost" not found'):
        cluster.delete("Pod", "ghost", namespace=NS)
    assert cluster.changes == []


# ------------------------------------------------------------------------- error mapping


def test_connection_refused_is_a_backend_error(tmp_path: Path, progress: list[str]) -> None:
    with socket.socket() as s:  # a port that was free a moment ago and has no listener
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with FakeApiServer() as api:
        path = api.kubeconfig(tmp_path)
    path.write_text(path.read_text().replace(api.url, f"http://127.0.0.1:{port}"))
    with (
        KubeCluster("fake", kubeconfig=str(path), progress=progress.append) as c,
        pytest.raises(BackendError) as info,
    ):
        c.get("Pod", "client", namespace=NS)
    assert str(info.value).startswith("fake: GET /api/v1: ")
    assert "refused" in str(info.value).lower()
    assert info.value.__cause__ is not None


def test_unknown_context_is_a_backend_error(api: FakeApiServer, tmp_path: Path) -> None:
    path = api.kubeconfig(tmp_path)
    with pytest.raises(BackendError) as info:
        KubeCluster("kind-nope", kubeconfig=str(path))
    assert str(info.value) == f"kubeconfig {path}: no context 'kind-nope'; expected one of fake"


def test_missing_kubeconfig_is_a_backend_error(tmp_path: Path) -> None:
    missing = tmp_path / "absent"
    with pytest.raises(BackendError, match=f"kubeconfig {missing}: cannot use context None"):
        KubeCluster(kubeconfig=str(missing))


def test_kubeconfig_env_is_read_at_connect_time(
    api: FakeApiServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(api.kubeconfig(tmp_path)))
    with KubeCluster() as c:
        assert c.name == "fake"


def test_connect_kind_uses_the_kind_context(api: FakeApiServer, tmp_path: Path) -> None:
    path = api.kubeconfig(tmp_path, context="kind-egresskit")
    with connect_kind(kubeconfig=str(path)) as c:
        assert c.name == "kind-egresskit"


# ------------------------------------------------------------------------ proxy metrics

METRICS = (
    "# HELP outbound_http_route_request_statuses Completed request-response streams.\n"
    "# TYPE outbound_http_route_request_statuses counter\n"
    'outbound_http_route_request_statuses_total{parent_kind="EgressNetwork"} 697\n'
)


def test_proxy_metrics_go_through_the_pod_proxy(api: FakeApiServer, cluster: KubeCluster) -> None:
    cluster.apply(GUIDE)
    api.metrics[(NS, "client")] = METRICS
    text = cluster.proxy_metrics("client", namespace=NS)
    assert text == "#\n# POD client (1 of 1)\n#\n" + METRICS
    req = api.requests[-1]
    assert (req.method, req.path) == ("GET", f"{POD_PATH}:4191/proxy/metrics")


def test_proxy_metrics_failure_is_reported_like_the_cli(
    api: FakeApiServer, cluster: KubeCluster
) -> None:
    cluster.apply(GUIDE)
    text = cluster.proxy_metrics("client", namespace=NS)
    head, error = text.split("#\n", 2)[1:]
    assert head == "# POD client (1 of 1)\n"
    assert error.startswith("# ERROR: fake: proxy metrics: error trying to reach service: ")
    assert error.endswith("connection refused (ServiceUnavailable, HTTP 503)\n")


def test_proxy_metrics_of_a_pod_not_running(tmp_path: Path, progress: list[str]) -> None:
    with (
        FakeApiServer(never_ready={"client"}) as api,
        _connect(api, tmp_path, progress, timeout=0.01) as c,
    ):
        with pytest.raises(WaitTimeout):
            c.apply(GUIDE)
        text = c.proxy_metrics("client", namespace=NS)
    assert text == "#\n# POD client (1 of 1)\n#\n# ERROR: pod not running: client\n"


# --------------------------------------------------------------------------------- curl


def test_curl_execs_in_the_client_container_over_a_websocket(
    api: FakeApiServer, cluster: KubeCluster
) -> None:
    cluster.apply(GUIDE)
    result = cluster.curl("-s", "http://httpbin.org/get", pod="client", namespace=NS, timeout=7)

    [call] = api.exec_calls
    assert call["path"] == [f"{POD_PATH}/exec"]
    assert call["command"] == curl_command(["-s", "http://httpbin.org/get"], timeout=7)
    assert call["container"] == ["client"]
    assert (call["stdout"], call["stderr"], call["stdin"], call["tty"]) == (
        ["true"],
        ["true"],
        ["false"],
        ["false"],
    )
    assert result.args == ("-s", "http://httpbin.org/get")
    assert (result.exit_code, result.http_status, result.time_total) == (0, 200, 0.012345)
    assert result.stdout == '{"url": "http://httpbin.org/get"}'
    assert result.ok


def test_curl_exit_code_comes_from_the_status_channel(
    api: FakeApiServer, cluster: KubeCluster
) -> None:
    cluster.apply(GUIDE)
    api.exec_handler = lambda cmd: ExecResult(
        stdout=f"\n{CURL_MARKER} http_code=000 time_total=0.002000\n",
        stderr="curl: (35) TLS connect error\n",
        exit_code=35,
    )
    result = cluster.curl("https://httpbin.org/get", pod="client", namespace=NS)
    assert (result.exit_code, result.http_status, result.stdout) == (35, None, "")
    assert result.stderr == "curl: (35) TLS connect error\n"
    assert not result.ok


def test_curl_exec_failure_is_a_backend_error(api: FakeApiServer, cluster: KubeCluster) -> None:
    cluster.apply(GUIDE)
    api.exec_handler = lambda cmd: ExecResult(failure='container "client" not found')
    with pytest.raises(BackendError, match='container "client" not found'):
        cluster.curl("http://x", pod="client", namespace=NS)


def test_curl_in_a_missing_pod_is_a_backend_error(cluster: KubeCluster) -> None:
    with pytest.raises(BackendError, match="exec curl in egress-test/ghost") as info:
        cluster.curl("http://x", pod="ghost", namespace=NS)
    assert "404" in str(info.value)


# ------------------------------------------------------------------------ pure helpers


@pytest.mark.parametrize(
    ("stdout", "expected"),
    [
        (f'{{"a": 1}}\n{CURL_MARKER} http_code=200 time_total=0.5\n', ('{"a": 1}', 200, 0.5)),
        (f"body\n\n{CURL_MARKER} http_code=403 time_total=0.01\n", ("body\n", 403, 0.01)),
        (f"\n{CURL_MARKER} http_code=000 time_total=1.2\n", ("", None, 1.2)),
        ("curl: option --bad: is unknown", ("curl: option --bad: is unknown", None, 0.0)),
        (
            f"\n{CURL_MARKER} http_code=200 time_total=9\nx\n{CURL_MARKER} http_code=204 "
            "time_total=0.3\n",
            (f"\n{CURL_MARKER} http_code=200 time_total=9\nx", 204, 0.3),
        ),
    ],
    ids=["json-body", "body-ends-in-newline", "no-response", "no-marker", "last-marker-wins"],
)
def test_parse_curl_stdout(stdout: str, expected: tuple[str, int | None, float]) -> None:
    assert parse_curl_stdout(stdout) == expected


def test_curl_command_lets_the_callers_own_options_win() -> None:
    cmd = curl_command(["-m", "3", "http://x"], timeout=30)
    assert cmd[:3] == ["curl", "--max-time", "30"]
    assert cmd[3:6] == ["-m", "3", "http://x"]
    assert cmd[6] == "-w" and "%{http_code}" in cmd[7] and "%{time_total}" in cmd[7]


@pytest.mark.parametrize(
    ("status", "code"),
    [
        ('{"metadata":{},"status":"Success"}', 0),
        (
            json.dumps(
                {
                    "status": "Failure",
                    "reason": "NonZeroExitCode",
                    "details": {"causes": [{"reason": "ExitCode", "message": "6"}]},
                }
            ),
            6,
        ),
    ],
    ids=["success", "non-zero"],
)
def test_exec_exit_code(status: str, code: int) -> None:
    assert exec_exit_code(status, where="w") == code


@pytest.mark.parametrize(
    "status",
    ["", '{"status":"Failure","message":"container not found"}'],
    ids=["no-status", "other-failure"],
)
def test_exec_exit_code_errors(status: str) -> None:
    with pytest.raises(BackendError, match=r"^w: "):
        exec_exit_code(status, where="w")


def _route(parents: list[dict[str, Any]] | None, port: int = 80) -> dict[str, Any]:
    ref = {"name": "en", "kind": "EgressNetwork", "group": "policy.linkerd.io", "port": port}
    obj: dict[str, Any] = {
        "kind": "HTTPRoute",
        "metadata": {"name": "r", "namespace": "ns", "generation": 2},
        "spec": {"parentRefs": [ref]},
    }
    if parents is not None:
        obj["status"] = {"parents": parents}
    return obj


def _parent(status: str, port: int | None = 80, **cond: Any) -> dict[str, Any]:
    return {
        "parentRef": {"kind": "EgressNetwork", "name": "en", "namespace": "ns", "port": port},
        "conditions": [{"type": "Accepted", "status": status, **cond}],
    }


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        ({"kind": "Namespace"}, None),
        ({"kind": "Service"}, None),
        ({"kind": "EgressNetwork"}, (False, "no Accepted condition yet")),
        (
            {
                "kind": "EgressNetwork",
                "status": {
                    "conditions": [
                        {
                            "type": "Accepted",
                            "status": "False",
                            "reason": "EgressReasonNetworkOverlap",
                        }
                    ]
                },
            },
            (False, "Accepted=False (EgressReasonNetworkOverlap)"),
        ),
        (_route(None), (False, "parent EgressNetwork en port 80: no status yet")),
        (
            _route([_parent("True", port=443)]),
            (False, "parent EgressNetwork en port 80: no status yet"),
        ),
        (_route([_parent("True")]), (True, "Accepted=True for every EgressNetwork parent")),
        (
            _route([_parent("True", port=None)]),
            (True, "Accepted=True for every EgressNetwork parent"),
        ),
        (
            _route([_parent("True", observedGeneration=1)]),
            (False, "parent EgressNetwork en port 80: no Accepted condition yet"),
        ),
        (
            {"kind": "HTTPRoute", "spec": {"parentRefs": [{"name": "svc", "kind": "Service"}]}},
            None,
        ),
        (
            {
                "kind": "Pod",
                "status": {
                    "phase": "Pending",
                    "containerStatuses": [
                        {"name": "client", "state": {"waiting": {"reason": "ImagePullBackOff"}}}
                    ],
                },
            },
            (False, "phase Pending, waiting (client: ImagePullBackOff)"),
        ),
        (
            {"kind": "Pod", "status": {"conditions": [{"type": "Ready", "status": "True"}]}},
            (True, "Ready"),
        ),
        (
            {
                "kind": "Deployment",
                "metadata": {"generation": 2},
                "spec": {"replicas": 1},
                "status": {"observedGeneration": 1},
            },
            (False, "rollout not observed yet"),
        ),
        (
            {
                "kind": "Deployment",
                "metadata": {"generation": 1},
                "spec": {"replicas": 2},
                "status": {
                    "observedGeneration": 1,
                    "updatedReplicas": 2,
                    "conditions": [{"type": "Available", "status": "True"}],
                },
            },
            (True, "Available, 2/2 updated"),
        ),
    ],
    ids=[
        "namespace",
        "service",
        "egress-network-no-status",
        "egress-network-overlap-is-not-in-force",
        "route-no-status",
        "route-other-port",
        "route-accepted",
        "route-parent-without-port",
        "route-stale-generation",
        "route-service-parent",
        "pod-pulling",
        "pod-ready",
        "deployment-not-observed",
        "deployment-available",
    ],
)
def test_readiness(obj: dict[str, Any], expected: tuple[bool, str] | None) -> None:
    assert readiness(obj) == expected


# --------------------------------------------------------------------- kube test hooks


class _Item:
    def __init__(self, marked: bool) -> None:
        self.marks: list[pytest.MarkDecorator] = []
        self.marked = marked

    def get_closest_marker(self, name: str) -> object | None:
        return object() if self.marked and name == "kube" else None

    def add_marker(self, mark: pytest.MarkDecorator) -> None:
        self.marks.append(mark)


@pytest.mark.parametrize(
    ("env", "marks"),
    [
        (None, [["skip"], []]),
        ("  ", [["skip"], []]),
        ("kind-egresskit", [["timeout"], []]),
    ],
    ids=["unset", "blank", "set"],
)
def test_kube_tests_are_skipped_without_a_context_and_get_a_cluster_limit_with_one(
    monkeypatch: pytest.MonkeyPatch, env: str | None, marks: list[list[str]]
) -> None:
    if env is None:
        monkeypatch.delenv(kube_fixtures.KUBE_CONTEXT_ENV, raising=False)
    else:
        monkeypatch.setenv(kube_fixtures.KUBE_CONTEXT_ENV, env)
    items = [_Item(marked=True), _Item(marked=False)]
    kube_fixtures.skip_kube_tests_without_context(items)  # type: ignore[arg-type]
    assert [[m.mark.name for m in i.marks] for i in items] == marks
    for mark in items[0].marks:
        if mark.mark.name == "skip":
            assert "EGRESSKIT_KUBE_CONTEXT" in mark.mark.kwargs["reason"]
        else:
            assert mark.mark.args == (versions.KUBE_TEST_TIMEOUT,)


def test_the_kube_test_limit_outlasts_the_waits_inside_one_guide_test() -> None:
    # g10-g12: the setup apply, the Deny patch, the Deployment, the routes and the namespace
    # deletion each wait up to APPLY_WAIT_TIMEOUT; two effect probes; the 120 s local limit
    # would cut a real cluster's first image pull short.
    waits = 5 * versions.APPLY_WAIT_TIMEOUT + 2 * versions.EFFECT_WAIT_TIMEOUT
    assert versions.KUBE_TEST_TIMEOUT > waits > 120


# ----------------------------------------------------------------------------- teardown


def test_teardown_deletes_the_pods_without_a_grace_period(
    tmp_path: Path, progress: list[str]
) -> None:
    # sh -c "sleep infinity" as PID 1 ignores SIGTERM: with the default grace period the
    # namespace stays terminating until the kubelet kills the pods 30 s later.
    with FakeApiServer(pods_ignore_sigterm=True) as api, _connect(api, tmp_path, progress) as c:
        c.apply(GUIDE)
        start = len(api.requests)
        kube_fixtures.delete_test_namespace(c, NS)
        deletes = [(r.path, r.query) for r in api.requests[start:] if r.method == "DELETE"]
        assert api.objects == {}
    assert deletes == [
        (
            "/api/v1/namespaces/egress-test",
            {"propagationPolicy": ["Background"], "gracePeriodSeconds": ["0"]},
        ),
        ("/api/v1/namespaces/egress-test/pods", {"gracePeriodSeconds": ["0"]}),
    ]


def test_a_plain_namespace_delete_waits_for_pods_that_ignore_sigterm(
    tmp_path: Path, progress: list[str]
) -> None:
    """What the teardown did before: the wait runs into its bound (30 s on a real cluster)."""
    with (
        FakeApiServer(pods_ignore_sigterm=True) as api,
        _connect(api, tmp_path, progress, timeout=0.05) as c,
    ):
        c.apply(GUIDE)
        with pytest.raises(WaitTimeout) as info:
            c.delete("namespace", NS)
    assert info.value.what == "Namespace egress-test to be deleted"
