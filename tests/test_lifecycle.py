"""``egresskit cluster up|down|status`` against fake CLIs first on PATH (no Docker here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from egresskit import versions
from egresskit.cluster import lifecycle
from egresskit.cluster.lifecycle import Marker
from egresskit.errors import BackendError
from tests.fakes import clis
from tests.fakes.clis import FakeClis

IMAGE, URL = versions.KIND_NODE_IMAGE, versions.GATEWAY_API_INSTALL_URL

VERSION = "linkerd version --client --short"
FRESH_UP = [
    VERSION,
    "docker info",
    "kind get clusters",
    f"kind create cluster --name egresskit --image {IMAGE} --wait 180s",
    "kubectl get namespace linkerd",
    "linkerd check --pre",
    "kubectl get crd tlsroutes.gateway.networking.k8s.io",
    f"kubectl apply --server-side -f {URL}",
    "linkerd install --crds",
    "kubectl apply -f -",
    "linkerd install --set proxy.metrics.hostnameLabels=true",
    "kubectl apply -f -",
    "linkerd check --wait 5m",
]


@pytest.fixture
def fakes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeClis:
    tools = clis.install(tmp_path / "fakes")
    # Only the fakes on PATH, so no real docker/kubectl of this machine is ever reached.
    monkeypatch.setenv("PATH", str(tools.bin_dir))
    monkeypatch.setenv("FAKE_CLI_STATE", str(tools.state))
    return tools


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / ".egresskit"


@pytest.fixture
def echo() -> list[str]:
    return []


def test_up_runs_the_spec_sequence(fakes: FakeClis, state: Path, echo: list[str]) -> None:
    marker = lifecycle.up(state_dir=state, echo=echo.append)

    assert fakes.command_lines() == FRESH_UP
    # Every kubectl/linkerd call that reaches the cluster names the context explicitly.
    for call in fakes.calls():
        if call[0] in ("kubectl", "linkerd") and call[1:3] != ["version", "--client"]:
            assert call[1:3] == ["--context", "kind-egresskit"]
    assert (marker.created_cluster, marker.installed_gateway_api, marker.installed_linkerd) == (
        True,
        True,
        True,
    )
    assert Marker.load(state / "cluster-egresskit.json") == marker
    oks = [line for line in echo if line.startswith("  ok")]
    assert len(oks) == 6
    assert all(line.endswith("s)") for line in oks)  # each step with its duration


def test_up_twice_is_idempotent(fakes: FakeClis, state: Path, echo: list[str]) -> None:
    lifecycle.up(state_dir=state, echo=echo.append)
    fakes.clear_calls()
    marker = lifecycle.up(state_dir=state, echo=echo.append)

    assert fakes.command_lines() == [
        VERSION,
        "docker info",
        "kind get clusters",
        "kubectl get namespace linkerd",
        "kubectl get crd tlsroutes.gateway.networking.k8s.io",
        "linkerd check --wait 5m",
    ]
    # What the first run created is still recorded as created by us.
    assert (marker.created_cluster, marker.installed_gateway_api, marker.installed_linkerd) == (
        True,
        True,
        True,
    )
    assert "  skip  kind create cluster --name egresskit (cluster exists)" in echo


@pytest.mark.parametrize("missing", ["docker", "kind", "kubectl", "linkerd"])
def test_a_missing_tool_stops_before_any_change(fakes: FakeClis, state: Path, missing: str) -> None:
    (fakes.bin_dir / missing).unlink()
    with pytest.raises(BackendError) as info:
        lifecycle.up(state_dir=state, echo=lambda _: None)
    message = str(info.value)
    assert message.startswith("preflight failed, nothing changed:")
    assert f"{missing} not found on PATH: {lifecycle.INSTALL_HINTS[missing]}" in message
    assert message.count("not found on PATH") == 1
    assert set(fakes.command_lines()) <= {"docker info", VERSION}  # read-only questions only
    assert not state.exists()


def test_the_linkerd_hint_installs_the_pinned_release() -> None:
    hint = lifecycle.INSTALL_HINTS["linkerd"]
    assert hint.endswith(f"| LINKERD2_VERSION={versions.LINKERD_RELEASE} sh")
    assert "https://run.linkerd.io/install-edge" in hint


@pytest.mark.parametrize(
    ("cli", "expected"),
    [
        (
            "edge-25.9.1",
            f"the linkerd CLI on PATH is edge-25.9.1, egresskit pins {versions.LINKERD_RELEASE}",
        ),
        ("", "cannot read the linkerd CLI's version from `linkerd version --client --short`"),
    ],
    ids=["other-release", "unreadable"],
)
def test_a_linkerd_cli_of_another_release_stops_before_any_change(
    fakes: FakeClis, state: Path, cli: str, expected: str
) -> None:
    fakes.set_world(linkerd_cli=cli)
    with pytest.raises(BackendError) as info:
        lifecycle.up(state_dir=state, echo=lambda _: None)
    message = str(info.value)
    assert message.startswith("preflight failed, nothing changed:\n  " + expected)
    assert message.endswith(lifecycle.INSTALL_HINTS["linkerd"])
    assert set(fakes.command_lines()) <= {"docker info", VERSION}
    assert not state.exists()


def test_docker_daemon_down_stops_before_any_change(fakes: FakeClis, state: Path) -> None:
    fakes.set_world(docker_up=False)
    with pytest.raises(BackendError, match=r"`docker info` failed: start the daemon"):
        lifecycle.up(state_dir=state, echo=lambda _: None)
    assert fakes.command_lines() == [VERSION, "docker info"]


def test_a_failing_step_keeps_its_log_and_names_it(
    fakes: FakeClis, state: Path, echo: list[str]
) -> None:
    fakes.fail("linkerd install --crds")
    with pytest.raises(BackendError) as info:
        lifecycle.up(state_dir=state, echo=echo.append)

    log = state / "logs" / "linkerd-install-crds.log"
    assert str(info.value) == f"step 'linkerd install --crds' failed (exit 1); output kept in {log}"
    text = log.read_text()
    assert "$ linkerd --context kind-egresskit install --crds" in text
    assert "boom: linkerd install --crds" in text
    assert "exit 1" in text
    assert "kubectl apply -f -" not in fakes.command_lines()  # the pipe stopped there
    # The marker already records what was (being) installed, so `down` cleans up a failed up.
    marker = Marker.load(state / "cluster-egresskit.json")
    assert marker is not None
    assert (marker.created_cluster, marker.installed_gateway_api, marker.installed_linkerd) == (
        True,
        True,
        True,
    )


def test_main_reports_a_failed_step_and_returns_1(
    fakes: FakeClis, state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fakes.fail("linkerd check --wait")
    assert lifecycle.main(["up", "--state-dir", str(state)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("egresskit cluster up: step 'linkerd check' failed (exit 1)")
    assert str(state / "logs" / "linkerd-check.log") in err


def test_down_deletes_the_cluster_up_created(fakes: FakeClis, state: Path) -> None:
    lifecycle.up(state_dir=state, echo=lambda _: None)
    fakes.clear_calls()
    assert lifecycle.down(state_dir=state, echo=lambda _: None)

    assert fakes.command_lines() == ["docker info", "kind delete cluster --name egresskit"]
    assert fakes.world()["clusters"] == []
    assert not (state / "cluster-egresskit.json").exists()


def test_down_leaves_a_cluster_it_found_and_removes_only_its_installs(
    fakes: FakeClis, state: Path
) -> None:
    # The cluster and the Gateway API CRDs were there before `up`.
    gateway = ["httproutes.gateway.networking.k8s.io", "tlsroutes.gateway.networking.k8s.io"]
    fakes.set_world(clusters=["egresskit"], crds=gateway)
    marker = lifecycle.up(state_dir=state, echo=lambda _: None)
    assert (marker.created_cluster, marker.installed_gateway_api, marker.installed_linkerd) == (
        False,
        False,
        True,
    )
    fakes.clear_calls()
    lifecycle.down(state_dir=state, echo=lambda _: None)

    assert fakes.command_lines() == [
        VERSION,
        "linkerd uninstall",
        "kubectl delete --ignore-not-found -f -",
    ]
    world = fakes.world()
    assert world["clusters"] == ["egresskit"]
    assert world["crds"] == gateway
    assert world["linkerd"] is False


def test_down_without_a_marker_changes_nothing(
    fakes: FakeClis, state: Path, echo: list[str]
) -> None:
    fakes.set_world(clusters=["egresskit"])
    assert lifecycle.down(state_dir=state, echo=echo.append) is False
    assert fakes.calls() == []
    assert echo == [
        f"nothing to do: no record of `egresskit cluster up` in {state}/cluster-egresskit.json"
    ]


def test_status_of_a_ready_cluster(
    fakes: FakeClis, state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lifecycle.up(state_dir=state, echo=lambda _: None)
    assert lifecycle.main(["status", "--state-dir", str(state)]) == 0
    out = capsys.readouterr().out
    assert "cluster egresskit (context kind-egresskit): present" in out
    assert "CRD tlsroutes.gateway.networking.k8s.io: present" in out
    assert out.rstrip().endswith("ready")


@pytest.mark.parametrize(
    ("world", "expected"),
    [
        ({}, "cluster egresskit (context kind-egresskit): absent"),
        ({"clusters": ["egresskit"]}, "CRD egressnetworks.policy.linkerd.io: absent"),
    ],
    ids=["no-cluster", "no-linkerd"],
)
def test_status_not_ready_is_non_zero(
    fakes: FakeClis,
    state: Path,
    capsys: pytest.CaptureFixture[str],
    world: dict[str, list[str]],
    expected: str,
) -> None:
    fakes.set_world(**world)
    assert lifecycle.main(["status", "--state-dir", str(state)]) == 1
    out = capsys.readouterr().out
    assert expected in out
    assert out.rstrip().endswith("not ready: run `egresskit cluster up`")
