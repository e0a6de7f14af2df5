"""``KubeCluster.grpc`` and ``KubeCluster.tcp`` (issue 14 item 2) against the fake API server.

What is real here: the ``kubernetes`` client's exec websocket to :mod:`tests.fakes.apiserver`,
and the command it carries, which the fake's exec handler runs as a local process with the
file layout the ``grpc-client`` pod's init container writes (its own script, with the pod's
own environment), against the kit's real gRPC and TCP servers on loopback. So the exact
command a pod would get is sent, runs, and its output is read into the local backend's result
types. What is not real: the pod, its image, its proxy and the cluster network (the target is
a loopback address, not ``grpc.example.com``); nothing here has run on kind.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from egresskit import guide
from egresskit.cluster.kube import KubeCluster
from egresskit.cluster.kube_calls import grpc_exec_command, tcp_exec_command
from egresskit.errors import BackendError
from egresskit.grpcclient import GrpcCallResult
from egresskit.grpcmanifests import ECHO, SAY_HELLO
from egresskit.manifests import load_manifests
from egresskit.mesh.grpcsite import GrpcServer, internet_site
from egresskit.mesh.tcpsite import TcpSite, exchange
from egresskit.podcalls import run_grpcclient
from egresskit.podimages import (
    GRPC_CLIENT_CONTAINER,
    GRPC_CLIENT_IMAGE,
    GRPC_CLIENT_POD,
    GRPC_CLIENT_POD_NAME,
    PROXY_UID,
    SITE,
)
from tests.fakes.apiserver import ExecResult, FakeApiServer

NS = guide.NAMESPACE_NAME
POD = GRPC_CLIENT_POD_NAME


def _pod() -> dict[str, Any]:
    return dict(yaml.safe_load(GRPC_CLIENT_POD))


def pod_layout(directory: Path) -> Path:
    """Run the pod's init step that writes the kit's client (not its pip install: grpcio is
    in this venv) with the pod's environment, ``SITE`` pointed at ``directory``."""
    [init] = _pod()["spec"]["initContainers"]
    env = {e["name"]: e["value"] for e in init["env"]} | {"SITE": str(directory)}
    script = init["command"][2].split(" && ", 1)[1]
    subprocess.run(
        ["sh", "-c", script.replace("python -c", f"{sys.executable} -c", 1)],
        env={"PATH": os.environ["PATH"], **env},
        check=True,
        timeout=60,
    )
    return directory


class InPod:
    """An exec handler running each received command as a local process, with the
    ``grpc-client`` container's PYTHONPATH pointing at :func:`pod_layout`'s directory."""

    def __init__(self, site: Path) -> None:
        self.site = site
        [container] = _pod()["spec"]["containers"]
        self.env = {e["name"]: e["value"] for e in container["env"]}

    def __call__(self, command: list[str]) -> ExecResult:
        assert command[0] == "python", command
        env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        env |= self.env | {"PYTHONPATH": str(self.site)}
        proc = subprocess.run(
            [sys.executable, *command[1:]],
            capture_output=True,
            text=True,
            env=env,
            cwd=self.site,
            timeout=60,
            check=False,
        )
        return ExecResult(stdout=proc.stdout, stderr=proc.stderr, exit_code=proc.returncode)


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    with FakeApiServer() as server:
        yield server


@pytest.fixture
def cluster(api: FakeApiServer, tmp_path: Path) -> Iterator[KubeCluster]:
    with KubeCluster(
        "fake", kubeconfig=str(api.kubeconfig(tmp_path)), poll_interval=0.001, progress=None
    ) as c:
        c.apply([guide.NAMESPACE, guide.EGRESS_NETWORK, GRPC_CLIENT_POD])
        yield c


@pytest.fixture
def in_pod(api: FakeApiServer, tmp_path: Path) -> InPod:
    handler = InPod(pod_layout(tmp_path / "site"))
    api.exec_handler = handler
    return handler


@pytest.fixture(scope="module")
def grpc_site() -> Iterator[GrpcServer]:
    server = internet_site()  # already started
    yield server
    server.close()


@pytest.fixture(scope="module")
def tcp_site() -> Iterator[TcpSite]:
    site = TcpSite().start()
    yield site
    site.close()


# ------------------------------------------------------------------------- the pod


def test_the_pod_is_meshed_python_with_the_kits_own_client_source() -> None:
    [pod] = load_manifests(GRPC_CLIENT_POD)  # what apply validates
    raw = _pod()
    assert (pod.kind, pod.name, pod.namespace) == ("Pod", POD, NS)
    assert raw["metadata"]["annotations"]["linkerd.io/inject"] == "enabled"
    [init] = raw["spec"]["initContainers"]
    [main] = raw["spec"]["containers"]
    assert init["image"] == main["image"] == GRPC_CLIENT_IMAGE == "python:3.11-slim"
    assert main["name"] == GRPC_CLIENT_CONTAINER
    # Outside the pod's proxy, so the install does not depend on the lesson's policy.
    assert init["securityContext"]["runAsUser"] == PROXY_UID == 2102
    assert "pip install" in init["command"][2] and f"--target {SITE}" in init["command"][2]
    env = {e["name"]: e["value"] for e in init["env"]}
    root = Path(__file__).parents[1] / "egresskit"
    assert env["EGRESSKIT_GRPCCLIENT_PY"] == (root / "grpcclient.py").read_text()
    assert env["EGRESSKIT_GRPCPROTO_PY"] == (root / "grpcproto.py").read_text()


def test_the_init_step_writes_a_client_that_runs_from_its_own_layout(tmp_path: Path) -> None:
    site = pod_layout(tmp_path / "site")
    assert sorted(p.name for p in (site / "egresskit").iterdir()) == [
        "__init__.py",
        "grpcclient.py",
        "grpcproto.py",
    ]
    result = InPod(site)(["python", "-c", "import egresskit.grpcclient as m; print(m.__file__)"])
    assert result.exit_code == 0, result.stderr
    assert Path(result.stdout.strip()) == site / "egresskit" / "grpcclient.py"


# ------------------------------------------------------------------------------ grpc


def test_grpc_execs_the_kits_client_in_the_grpc_client_container(
    api: FakeApiServer, cluster: KubeCluster, in_pod: InPod, grpc_site: GrpcServer
) -> None:
    target = f"127.0.0.1:{grpc_site.address[1]}"
    data = [{"name": "kind"}]
    result = cluster.grpc(
        target, SAY_HELLO, pod=POD, namespace=NS, data=data, headers=["x-team: blue"], timeout=9
    )

    [call] = api.exec_calls
    assert call["path"] == [f"/api/v1/namespaces/{NS}/pods/{POD}/exec"]
    assert call["container"] == [GRPC_CLIENT_CONTAINER]
    assert call["command"] == [
        "python",
        "-m",
        "egresskit.grpcclient",
        "--json",
        "--timeout",
        "9",
        "-d",
        '{"name": "kind"}',
        "-H",
        "x-team: blue",
        target,
        SAY_HELLO,
    ]
    assert call["command"] == grpc_exec_command(
        target, SAY_HELLO, data=data, headers=["x-team: blue"], timeout=9
    )
    assert isinstance(result, GrpcCallResult)
    assert (result.code, result.code_number, result.responses) == (
        "OK",
        0,
        [{"message": "Hello, kind!"}],
    )
    # The local backend's process, same call: the same result but for the clock.
    local = run_grpcclient(target, SAY_HELLO, connect_to=None, data=data, timeout=9)
    assert (local.code, local.responses, local.initial_metadata) == (
        result.code,
        result.responses,
        result.initial_metadata,
    )


def test_a_grpc_status_other_than_ok_is_a_result_not_an_error(
    cluster: KubeCluster, in_pod: InPod, grpc_site: GrpcServer
) -> None:
    target = f"127.0.0.1:{grpc_site.address[1]}"
    result = cluster.grpc(
        target, ECHO, pod=POD, namespace=NS, data=[{"message": "status: permission_denied"}]
    )
    assert (result.code, result.code_number) == ("PERMISSION_DENIED", 7)
    assert result.details == "as asked: PERMISSION_DENIED" and not result.ok


def test_grpc_in_a_pod_without_the_client_says_which_pod_to_use(
    api: FakeApiServer, cluster: KubeCluster
) -> None:
    api.exec_handler = lambda cmd: ExecResult(
        stderr='exec: "python": executable file not found in $PATH', exit_code=127
    )
    with pytest.raises(BackendError, match=r"GRPC_CLIENT_POD") as info:
        cluster.grpc("grpc.example.com:50051", SAY_HELLO, pod=POD, namespace=NS)
    assert f"grpcclient grpc.example.com:50051 {SAY_HELLO} in {NS}/{POD}" in str(info.value)


def test_grpc_exec_refused_by_the_api_is_a_backend_error(
    api: FakeApiServer, cluster: KubeCluster
) -> None:
    api.exec_handler = lambda cmd: ExecResult(
        failure="container grpc-client is not valid for pod client"
    )
    with pytest.raises(BackendError, match="exec grpcclient in egress-test/grpc-client") as info:
        cluster.grpc("grpc.example.com:50051", SAY_HELLO, pod=POD, namespace=NS)
    assert "container grpc-client is not valid for pod client" in str(info.value)
    assert "egresskit.podimages.GRPC_CLIENT_POD, pod='grpc-client'" in str(info.value)


# ------------------------------------------------------------------------------- tcp


def test_tcp_sends_bytes_and_returns_what_came_back_until_close(
    api: FakeApiServer, cluster: KubeCluster, in_pod: InPod, tcp_site: TcpSite
) -> None:
    target = f"127.0.0.1:{tcp_site.address[1]}"
    data = b"PING\r\nECHO \xff\x00bin\r\nQUIT\r\n"
    answer = cluster.tcp(target, data, pod=POD, namespace=NS, timeout=5)

    [call] = api.exec_calls
    assert call["container"] == [GRPC_CLIENT_CONTAINER]
    assert call["command"] == tcp_exec_command(target, data, timeout=5)
    assert call["command"][:2] == ["python", "-c"]
    assert call["command"][3:] == [
        "127.0.0.1",
        str(tcp_site.address[1]),
        "UElORw0KRUNITyD/AGJpbg0KUVVJVA0K",
        "5",
    ]
    assert answer.startswith(b"+PONG\r\n") and answer.endswith(b"+BYE\r\n")
    assert answer == exchange(tcp_site.address, data, timeout=5)  # the local backend's client


def test_tcp_to_nothing_listening_is_a_backend_error(
    cluster: KubeCluster, in_pod: InPod, tcp_site: TcpSite
) -> None:
    # A port just closed: nothing listens there.
    closed = TcpSite()
    port = closed.address[1]
    closed.close()
    with pytest.raises(
        BackendError,
        match=r"tcp 127\.0\.0\.1:\d+ from egress-test/grpc-client: "
        r"ConnectionRefusedError",
    ):
        cluster.tcp(f"127.0.0.1:{port}", b"PING\r\n", pod=POD, namespace=NS)


@pytest.mark.parametrize("target", ["tcp.example.com", "tcp.example.com:http", ":6379", "h:0"])
def test_tcp_bad_target_sends_nothing(
    api: FakeApiServer, cluster: KubeCluster, target: str
) -> None:
    with pytest.raises(BackendError, match=f"tcp target {target!r}: expected host:port"):
        cluster.tcp(target, b"x", pod=POD, namespace=NS)
    assert api.exec_calls == []


def test_the_same_pod_serves_the_same_calls_on_the_local_backend() -> None:
    """One notebook for both backends: the local mesh accepts the pod (meshed there too)
    and ``grpc``/``tcp`` from it go through that pod's proxy, which counts the call."""
    from egresskit import grpcguide
    from egresskit.cluster.local import LocalCluster

    with LocalCluster() as local:
        local.apply([guide.NAMESPACE, guide.EGRESS_NETWORK, GRPC_CLIENT_POD])
        result = grpcguide.grpc_call(local, SAY_HELLO, data=[{"name": "x"}], pod=POD)
        assert (result.code, result.responses) == ("OK", [{"message": "Hello, x!"}])
        assert grpcguide.tcp_call(local, b"PING\r\nQUIT\r\n", pod=POD) == b"+PONG\r\n+BYE\r\n"
        metrics = local.proxy_metrics(POD, namespace=NS)
    # No GRPCRoute on 50051: the call took the HTTP default route (docs/local-backend.md).
    counted = [
        line
        for line in metrics.splitlines()
        if line.startswith("outbound_http_route_request_statuses_total{")
        and 'parent_port="50051"' in line
        and 'route_name="http-egress-allow"' in line
    ]
    assert len(counted) == 1 and counted[0].endswith(" 1"), counted


def test_the_pods_pins_satisfy_the_kits_own_requirements() -> None:
    """The pod installs exact versions; each must be one the kit itself accepts."""
    import tomllib

    from packaging.requirements import Requirement

    from egresskit.podimages import GRPC_CLIENT_REQUIREMENTS

    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    wanted = {r.name: r for r in map(Requirement, pyproject["project"]["dependencies"])}
    for pin in map(Requirement, GRPC_CLIENT_REQUIREMENTS):
        [spec] = pin.specifier
        assert spec.operator == "==", pin
        assert wanted[pin.name].specifier.contains(spec.version), (pin, wanted[pin.name])
