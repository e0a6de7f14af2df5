"""The local mesh's lifecycle through the facade: start, stop, meshing, overrides.

``with egresskit.connect("local")`` owns threads and loopback ports; after the block --
whether it ended normally or by an exception -- none of them may be left. Also shown: the
guide's warning that an unmeshed pod bypasses the proxy, ``outbound_ports()`` for tools
other than the facade's curl, namespace deletion, all-or-nothing apply of an unsupported
workload, and ``upstreams=`` putting a local server behind a hostname.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest

import egresskit
from egresskit import audit, guide
from egresskit.cluster.local import LocalCluster
from egresskit.errors import BackendError, ManifestError, UnsupportedWorkload
from tests.contract import eventually, value
from tests.test_mesh_faults import WAIT, LocalServer, h11_app, pinned_port

NS = guide.NAMESPACE_NAME
HTTP_STATUSES = "outbound_http_route_request_statuses_total"
PLAIN_POD = """\
apiVersion: v1
kind: Pod
metadata:
  name: plain
  namespace: egress-test
spec:
  containers:
  - name: client
    image: curlimages/curl
"""
NGINX_DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  namespace: egress-test
  name: web
spec:
  replicas: 1
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
      - name: web
        image: nginx:1.27
"""


@pytest.fixture
def mesh() -> Iterator[LocalCluster]:
    with LocalCluster() as cluster:
        cluster.apply([guide.NAMESPACE, guide.EGRESS_NETWORK, guide.CLIENT_POD])
        yield cluster


def proxy_ports(cluster: LocalCluster, pod: str = "client") -> list[int]:
    """The pod proxy's name-routed listeners and the pinned one curl uses for httpbin."""
    ports = list(cluster.outbound_ports(pod, namespace=NS).values())
    return [*ports, pinned_port(cluster, "httpbin.org", 80)]


def refuses(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=WAIT).close()
    except ConnectionRefusedError:
        return True
    return False


def new_threads(before: set[threading.Thread]) -> list[threading.Thread]:
    """Threads started since ``before`` that are still alive after a bounded wait."""
    deadline = time.monotonic() + WAIT
    while True:
        left = [t for t in threading.enumerate() if t not in before]
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.02)


def exercise(cluster: LocalCluster) -> list[int]:
    """Use every part (proxy, internet over HTTP and TLS, a workload); return its ports."""
    cluster.apply(guide.INTERNAL_EGRESS)
    for url in ("http://httpbin.org/get", "https://httpbin.org/get"):
        assert cluster.curl("-s", url, pod="client", namespace=NS).http_status == 200
    internet = [cluster.internet.http_address[1], cluster.internet.https_address[1]]
    workloads = [w.address[1] for _, ws in cluster._workloads.values() for w in ws]
    assert len(workloads) == 1
    ports = [*proxy_ports(cluster), *internet, *workloads]
    assert not any(refuses(p) for p in ports), "everything listens while the mesh runs"
    return ports


@pytest.mark.parametrize("raises", [False, True], ids=["normal-exit", "exception"])
def test_exit_stops_every_thread_and_port(raises: bool) -> None:
    before = set(threading.enumerate())
    ports: list[int] = []
    expected = pytest.raises(RuntimeError, match="boom") if raises else contextlib.nullcontext()
    with expected, egresskit.connect("local") as cluster:
        assert isinstance(cluster, LocalCluster)
        cluster.apply([guide.NAMESPACE, guide.EGRESS_NETWORK, guide.CLIENT_POD])
        ports = exercise(cluster)
        if raises:
            raise RuntimeError("boom")
    assert ports
    assert new_threads(before) == []
    assert [p for p in ports if not refuses(p)] == []
    with pytest.raises(BackendError, match="closed"):
        cluster.apply(guide.NAMESPACE)


def test_unmeshed_pod_bypasses_the_proxy(mesh: LocalCluster) -> None:
    mesh.apply(PLAIN_POD)  # no linkerd.io/inject on the pod or its namespace
    mesh.patch("egressnetwork", guide.EGRESS_NETWORK_NAME, guide.DENY_PATCH, namespace=NS)
    meshed = mesh.curl("-s", "http://httpbin.org/get", pod="client", namespace=NS)
    plain = mesh.curl("-s", "http://httpbin.org/get", pod="plain", namespace=NS)
    assert (meshed.http_status, plain.http_status) == (403, 200), "Deny binds meshed pods only"
    assert "not meshed" in mesh.proxy_metrics("plain", namespace=NS)
    assert value(mesh, HTTP_STATUSES) == 1, "only the meshed pod's request is counted"
    with pytest.raises(BackendError, match="not meshed"):
        mesh.outbound_ports("plain", namespace=NS)


def test_the_bypass_demo_takes_the_learners_pod_yaml(mesh: LocalCluster) -> None:
    mesh.patch("egressnetwork", guide.EGRESS_NETWORK_NAME, guide.DENY_PATCH, namespace=NS)
    renamed = audit.BYPASS_POD.replace("name: bypass", "name: no-sidecar")
    frame = audit.bypass_demo(mesh, ["http://httpbin.org/get"], manifest=renamed)
    seen = {row.pod: (row.meshed, row.http_status) for row in frame.itertuples()}
    assert seen == {"client": (True, 403), "no-sidecar": (False, 200)}


@pytest.mark.parametrize(
    ("yaml", "found"),
    [
        (
            guide.CLIENT_POD + "---\n" + audit.BYPASS_POD,
            "Pod egress-test/client, Pod egress-test/bypass",
        ),
        (guide.INTERNAL_EGRESS.split("---")[0], "Service egress-test/internal-egress"),
    ],
)
def test_a_bypass_yaml_that_is_not_one_pod_is_refused_whole(
    mesh: LocalCluster, yaml: str, found: str
) -> None:
    before = {o.key for o in mesh.objects()}
    with pytest.raises(ManifestError) as refused:
        audit.bypass_demo(mesh, ["http://httpbin.org/get"], manifest=yaml)
    assert str(refused.value) == f"bypass pod: expected one Pod, found {found}"
    assert {o.key for o in mesh.objects()} == before  # nothing applied


@pytest.mark.parametrize(
    ("edit", "said"),
    [
        (
            ("name: bypass", "name: client"),
            "metadata.name: expected a name other than client, found client",
        ),
        (
            ("namespace: egress-test", "namespace: default"),
            "metadata.namespace: expected egress-test, found default",
        ),
        (
            (
                "  namespace: egress-test\n",
                "  namespace: egress-test\n  annotations:\n    linkerd.io/inject: enabled\n",
            ),
            "metadata.annotations.linkerd.io/inject: expected absent or disabled (no proxy), "
            "found enabled",
        ),
    ],
    ids=["the-meshed-clients-name", "another-namespace", "meshed"],
)
def test_a_bypass_pod_that_would_not_show_a_pod_without_proxy_is_refused(
    mesh: LocalCluster, edit: tuple[str, str], said: str
) -> None:
    before = {o.key for o in mesh.objects()}
    yaml = audit.BYPASS_POD.replace(*edit)
    with pytest.raises(ManifestError) as refused:
        audit.bypass_demo(mesh, ["http://httpbin.org/get"], manifest=yaml)
    assert str(refused.value).startswith("bypass pod: document 1 (Pod ")
    assert str(refused.value).endswith(said)
    assert {o.key for o in mesh.objects()} == before  # nothing applied


def test_outbound_ports_serve_any_client(mesh: LocalCluster) -> None:
    ports = mesh.outbound_ports("client", namespace=NS)
    assert {80, 443} <= set(ports)
    base = ["curl", "-s", "--noproxy", "*", "--max-time", str(WAIT)]
    http = subprocess.run(
        [*base, "--connect-to", f"httpbin.org:80:127.0.0.1:{ports[80]}", "http://httpbin.org/get"],
        capture_output=True,
        check=True,
        timeout=WAIT * 2,
    )
    assert json.loads(http.stdout)["headers"]["Host"] == "httpbin.org"
    assert value(mesh, HTTP_STATUSES, route_name="http-egress-allow", http_status="200") == 1
    tls = subprocess.run(
        [
            *base,
            "--cacert",
            str(mesh.internet.ca_file),
            "--connect-to",
            f"httpbin.org:443:127.0.0.1:{ports[443]}",
            "https://httpbin.org/get",
        ],
        capture_output=True,
        check=True,
        timeout=WAIT * 2,
    )
    assert json.loads(tls.stdout)["url"] == "https://httpbin.org/get"
    closed = eventually(
        mesh,
        "outbound_tcp_route_close_total",
        1,
        route_name="tcp-egress-allow",
        parent_port="443",
        error="",
    )
    assert closed == 1


def test_deleting_the_namespace_stops_its_proxies(mesh: LocalCluster) -> None:
    ports = proxy_ports(mesh)
    assert not any(refuses(p) for p in ports)
    mesh.delete("namespace", NS)
    assert [p for p in ports if not refuses(p)] == []
    with pytest.raises(BackendError, match="not found"):
        mesh.proxy_metrics("client", namespace=NS)


def test_unsupported_image_is_rejected_and_nothing_applies() -> None:
    with LocalCluster() as cluster:
        with pytest.raises(UnsupportedWorkload, match="nginx"):
            cluster.apply([guide.NAMESPACE, NGINX_DEPLOYMENT])
        for kind, name, ns in (("namespace", NS, None), ("deployment", "web", NS)):
            with pytest.raises(BackendError, match="not found"):
                cluster.get(kind, name, namespace=ns)
        assert cluster.changes == []


def test_upstreams_put_a_local_server_behind_a_hostname() -> None:
    server = LocalServer(h11_app)
    upstreams = {"api.example.com": server.address}
    with server, egresskit.connect("local", upstreams=upstreams) as c:
        c.apply([guide.NAMESPACE, guide.EGRESS_NETWORK, guide.CLIENT_POD])
        r = c.curl("-s", "http://api.example.com/v1/x", pod="client", namespace=NS)
        assert r.http_status == 200
        assert json.loads(r.stdout) == {"received": 0, "chunked": False}, "our server"
        assert value(c, HTTP_STATUSES, hostname="api.example.com", http_status="200") == 1
