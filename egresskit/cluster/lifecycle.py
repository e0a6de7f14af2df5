"""``egresskit cluster up|down|status``: a kind cluster with Gateway API and Linkerd.

Job: drive the ``kind``, ``kubectl`` and ``linkerd`` CLIs through the sequence of
docs/facts/linkerd-egress.md section 7.3 (kind cluster, ``linkerd check --pre``, Gateway API
experimental CRDs before Linkerd, Linkerd CRDs, control plane, ``linkerd check``).

Rules:

- Preflight first: every tool the plan needs is on PATH, the ``linkerd`` CLI is the pinned
  release (``linkerd version --client --short``), and ``docker info`` answers, or we stop,
  naming each problem and how to fix it (the install hint pins the release), before anything
  changes.
- Idempotent: what already exists is skipped (and said so), so ``up`` can be run again.
- A marker file per cluster (``<state>/cluster-<name>.json``) records what ``up`` created;
  ``down`` removes only that: the kind cluster if ``up`` created it, otherwise the Linkerd
  control plane and CRDs and the Gateway API CRDs that ``up`` installed into a cluster it
  found.
- Every step is printed with its duration; its argv, exit code and output go to
  ``<state>/logs/<step>.log``, and a failing step's error names that file.
- Every CLI call is bounded (``versions.STEP_TIMEOUT``); all pins come from
  :mod:`egresskit.versions`.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from egresskit import versions
from egresskit.errors import BackendError

Echo = Callable[[str], None]
DEFAULT_STATE_DIR = Path(".egresskit")

#: One line each: how to get the tool (shown when it is missing).
INSTALL_HINTS = {
    "docker": "install Docker Engine or Docker Desktop: https://docs.docker.com/get-docker/",
    "kind": (
        f"install kind {versions.KIND_VERSION}: "
        "https://kind.sigs.k8s.io/docs/user/quick-start/#installation"
    ),
    "kubectl": (
        f"install kubectl {versions.KUBECTL_VERSION}: https://kubernetes.io/docs/tasks/tools/"
    ),
    # The install script takes the release from LINKERD2_VERSION (its default is the latest
    # edge, which would render a different control plane than the one pinned here).
    "linkerd": (
        f"install the Linkerd CLI {versions.LINKERD_RELEASE}: "
        "curl --proto '=https' --tlsv1.2 -sSfL https://run.linkerd.io/install-edge "
        f"| LINKERD2_VERSION={versions.LINKERD_RELEASE} sh"
    ),
}

_LINKERD_VERSION_RE = re.compile(r"\b((?:edge|stable|enterprise)-[0-9][0-9A-Za-z.+-]*)")


def _echo(line: str) -> None:
    print(line, flush=True)


@dataclass(frozen=True, kw_only=True)
class Marker:
    """What ``up`` created, so ``down`` removes exactly that."""

    cluster: str
    context: str
    created_cluster: bool = False
    installed_gateway_api: bool = False
    installed_linkerd: bool = False
    updated_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())

    @staticmethod
    def load(path: Path) -> Marker | None:
        try:
            return Marker(**json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError) as exc:
            raise BackendError(f"{path}: unreadable marker ({exc}); delete it and retry") from exc

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")


@dataclass(frozen=True, kw_only=True)
class Status:
    cluster: bool
    crds: dict[str, bool]
    linkerd_ok: bool

    @property
    def ready(self) -> bool:
        return self.cluster and all(self.crds.values()) and self.linkerd_ok


class _Runner:
    """Runs numbered steps, prints each with its duration, keeps each one's log."""

    def __init__(self, state_dir: Path, echo: Echo) -> None:
        self.logs = state_dir / "logs"
        self.echo = echo

    def _log_path(self, title: str) -> Path:
        slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:60]
        return self.logs / f"{slug}.log"

    def probe(self, argv: Sequence[str]) -> bool:
        """A read-only question (exit status only); never raises for a non-zero exit."""
        try:
            done = subprocess.run(
                list(argv), capture_output=True, text=True, timeout=versions.STEP_TIMEOUT
            )
        except (OSError, subprocess.TimeoutExpired):
            return False
        return done.returncode == 0

    def output(self, argv: Sequence[str]) -> str:
        """stdout of a read-only command, '' on any failure."""
        try:
            done = subprocess.run(
                list(argv), capture_output=True, text=True, timeout=versions.STEP_TIMEOUT
            )
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return done.stdout if done.returncode == 0 else ""

    def step(self, title: str, *argvs: Sequence[str], check: bool = True) -> bool:
        """Run one command, or a pipeline (each command's stdout is the next one's stdin)."""
        log = self._log_path(title)
        log.parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        text, code, stdin = [], 0, None
        try:
            for argv in argvs:
                text.append(f"$ {' '.join(argv)}")
                done = subprocess.run(
                    list(argv),
                    input=stdin,
                    capture_output=True,
                    text=True,
                    timeout=versions.STEP_TIMEOUT,
                )
                text += [done.stdout, done.stderr, f"exit {done.returncode}"]
                code, stdin = done.returncode, done.stdout
                if code != 0:
                    break
        except subprocess.TimeoutExpired:
            text.append(f"timed out after {versions.STEP_TIMEOUT:g}s")
            code = -1
        except OSError as exc:
            text.append(str(exc))
            code = -1
        finally:
            log.write_text("\n".join(text) + "\n", encoding="utf-8")
        took = time.monotonic() - started
        if code == 0:
            self.echo(f"  ok    {title} ({took:.1f}s)")
            return True
        self.echo(f"  FAIL  {title} ({took:.1f}s); output in {log}")
        if check:
            raise BackendError(f"step '{title}' failed (exit {code}); output kept in {log}")
        return False

    def skip(self, title: str, why: str) -> None:
        self.echo(f"  skip  {title} ({why})")


def linkerd_cli_problem() -> str | None:
    """Why the ``linkerd`` CLI on PATH is not the pinned release, or ``None`` when it is.

    The CLI renders the manifests ``linkerd install`` applies, so its release is the control
    plane's: another one would install a Linkerd the kit was not checked against.
    """
    argv = ["linkerd", "version", "--client", "--short"]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"`{' '.join(argv)}` failed ({exc}): {INSTALL_HINTS['linkerd']}"
    found = _LINKERD_VERSION_RE.search(done.stdout)
    if done.returncode != 0 or found is None:
        said = (done.stdout + done.stderr).strip()[:200] or f"exit {done.returncode}"
        return (
            f"cannot read the linkerd CLI's version from `{' '.join(argv)}` ({said}); "
            f"expected {versions.LINKERD_RELEASE}: {INSTALL_HINTS['linkerd']}"
        )
    if found[1] != versions.LINKERD_RELEASE:
        return (
            f"the linkerd CLI on PATH is {found[1]}, egresskit pins {versions.LINKERD_RELEASE} "
            f"(the CLI decides which Linkerd `linkerd install` installs): "
            f"{INSTALL_HINTS['linkerd']}"
        )
    return None


def preflight(tools: Sequence[str], *, need_docker_daemon: bool = True) -> None:
    """Stop before any change when a tool is missing, the Linkerd CLI is not the pinned
    release, or Docker does not answer."""
    missing = [t for t in tools if shutil.which(t) is None]
    problems = [f"{t} not found on PATH: {INSTALL_HINTS[t]}" for t in missing]
    if "linkerd" in tools and "linkerd" not in missing:
        linkerd = linkerd_cli_problem()
        if linkerd is not None:
            problems.append(linkerd)
    if need_docker_daemon and "docker" in tools and "docker" not in missing:
        try:
            answered = (
                subprocess.run(
                    ["docker", "info"], capture_output=True, timeout=60, check=False
                ).returncode
                == 0
            )
        except (OSError, subprocess.TimeoutExpired):
            answered = False
        if not answered:
            problems.append("docker is installed but `docker info` failed: start the daemon")
    if problems:
        raise BackendError("preflight failed, nothing changed:\n  " + "\n  ".join(problems))


def marker_file(state_dir: Path, name: str) -> Path:
    return state_dir / f"cluster-{name}.json"


def _kind_clusters(run: _Runner) -> list[str]:
    return run.output(["kind", "get", "clusters"]).split()


def up(
    *,
    name: str = versions.KIND_CLUSTER_NAME,
    state_dir: Path = DEFAULT_STATE_DIR,
    echo: Echo = _echo,
) -> Marker:
    """Create (or complete) the kind cluster with Gateway API and Linkerd; idempotent."""
    preflight(["docker", "kind", "kubectl", "linkerd"])
    ctx = f"kind-{name}"
    marker_path = marker_file(state_dir, name)
    mine = Marker.load(marker_path)
    run = _Runner(state_dir, echo)
    kubectl, linkerd = ["kubectl", "--context", ctx], ["linkerd", "--context", ctx]
    echo(f"egresskit cluster up: kind cluster {name!r}, Linkerd {versions.LINKERD_RELEASE}")

    created = bool(mine and mine.created_cluster)
    title = f"kind create cluster --name {name}"
    if name in _kind_clusters(run):
        run.skip(title, "cluster exists")
    else:
        run.step(
            title,
            [
                "kind",
                "create",
                "cluster",
                "--name",
                name,
                "--image",
                versions.KIND_NODE_IMAGE,
                "--wait",
                versions.KIND_CREATE_WAIT,
            ],
        )
        created = True
    # Saved after each change, so a failure later still lets `down` undo what was done.
    marker = Marker(
        cluster=name,
        context=ctx,
        created_cluster=created,
        installed_gateway_api=bool(mine and mine.installed_gateway_api),
        installed_linkerd=bool(mine and mine.installed_linkerd),
    )
    marker.save(marker_path)

    linkerd_there = run.probe([*kubectl, "get", "namespace", "linkerd"])
    if linkerd_there:
        run.skip("linkerd check --pre", "Linkerd already installed")
    else:
        run.step("linkerd check --pre", [*linkerd, "check", "--pre"])

    # Gateway API before Linkerd: the policy controller only watches route kinds whose CRDs
    # exist when it starts (spec 4.1, 7.2); TLSRoute is experimental-only (spec 7.2).
    title = f"Gateway API {versions.GATEWAY_API_VERSION} experimental CRDs"
    if run.probe([*kubectl, "get", "crd", "tlsroutes.gateway.networking.k8s.io"]):
        run.skip(title, "TLSRoute CRD exists")
    else:
        # Recorded before the step: a half-applied install is still ours to remove.
        marker = _replace(marker, installed_gateway_api=True)
        marker.save(marker_path)
        run.step(
            title, [*kubectl, "apply", "--server-side", "-f", versions.GATEWAY_API_INSTALL_URL]
        )

    if linkerd_there:
        run.skip("linkerd install --crds", "Linkerd already installed")
        run.skip("linkerd install", "Linkerd already installed")
    else:
        marker = _replace(marker, installed_linkerd=True)
        marker.save(marker_path)
        run.step(
            "linkerd install --crds",
            [*linkerd, "install", "--crds"],
            [*kubectl, "apply", "-f", "-"],
        )
        sets = [arg for s in versions.LINKERD_INSTALL_SETS for arg in ("--set", s)]
        run.step("linkerd install", [*linkerd, "install", *sets], [*kubectl, "apply", "-f", "-"])
    run.step("linkerd check", [*linkerd, "check", "--wait", versions.LINKERD_CHECK_WAIT])
    echo(f"ready: use context {ctx} (egresskit.connect('kind'))")
    return marker


def _replace(marker: Marker, **changes: bool) -> Marker:
    return Marker(**{**asdict(marker), **changes, "updated_at": datetime.now(UTC).isoformat()})


def down(
    *,
    name: str = versions.KIND_CLUSTER_NAME,
    state_dir: Path = DEFAULT_STATE_DIR,
    echo: Echo = _echo,
) -> bool:
    """Remove what ``up`` recorded, nothing else. False when nothing was recorded."""
    marker_path = marker_file(state_dir, name)
    marker = Marker.load(marker_path)
    if marker is None:
        echo(f"nothing to do: no record of `egresskit cluster up` in {marker_path}")
        return False
    run = _Runner(state_dir, echo)
    kubectl = ["kubectl", "--context", marker.context]
    linkerd = ["linkerd", "--context", marker.context]
    echo(f"egresskit cluster down: {marker.cluster}")
    if marker.created_cluster:
        preflight(["docker", "kind"])
        run.step(
            f"kind delete cluster --name {marker.cluster}",
            ["kind", "delete", "cluster", "--name", marker.cluster],
        )
    else:
        preflight(["kubectl", "linkerd"], need_docker_daemon=False)
        if marker.installed_linkerd:
            run.step(
                "linkerd uninstall",
                [*linkerd, "uninstall"],
                [*kubectl, "delete", "--ignore-not-found", "-f", "-"],
            )
        if marker.installed_gateway_api:
            run.step(
                f"delete Gateway API {versions.GATEWAY_API_VERSION} CRDs",
                [*kubectl, "delete", "--ignore-not-found", "-f", versions.GATEWAY_API_INSTALL_URL],
            )
        if not (marker.installed_linkerd or marker.installed_gateway_api):
            run.skip("delete", "up created nothing in this cluster")
    marker_path.unlink()
    return True


def status(
    *,
    name: str = versions.KIND_CLUSTER_NAME,
    state_dir: Path = DEFAULT_STATE_DIR,
    echo: Echo = _echo,
) -> Status:
    """What exists: the kind cluster, the CRDs the guide needs, and ``linkerd check``."""
    preflight(["docker", "kind", "kubectl", "linkerd"])
    ctx = f"kind-{name}"
    run = _Runner(state_dir, echo)
    cluster = name in _kind_clusters(run)
    echo(f"cluster {name} (context {ctx}): {'present' if cluster else 'absent'}")
    crds: dict[str, bool] = {}
    linkerd_ok = False
    if cluster:
        for crd in (
            "egressnetworks.policy.linkerd.io",
            "httproutes.gateway.networking.k8s.io",
            "tlsroutes.gateway.networking.k8s.io",
        ):
            crds[crd] = run.probe(["kubectl", "--context", ctx, "get", "crd", crd])
            echo(f"CRD {crd}: {'present' if crds[crd] else 'absent'}")
        linkerd_ok = run.step(
            "linkerd check", ["linkerd", "--context", ctx, "check", "--wait", "30s"], check=False
        )
    result = Status(cluster=cluster, crds=crds, linkerd_ok=linkerd_ok)
    echo("ready" if result.ready else "not ready: run `egresskit cluster up`")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """``egresskit cluster up|down|status``; 0 on success/ready, 1 otherwise."""
    parser = argparse.ArgumentParser(prog="egresskit cluster", description=__doc__.split("\n")[0])
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.add_argument("--name", default=versions.KIND_CLUSTER_NAME, help="kind cluster name")
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=DEFAULT_STATE_DIR,
        help="where the marker and step logs live (default: .egresskit)",
    )
    args = parser.parse_args(argv)
    try:
        if args.action == "up":
            up(name=args.name, state_dir=args.state_dir)
            return 0
        if args.action == "down":
            down(name=args.name, state_dir=args.state_dir)
            return 0
        return 0 if status(name=args.name, state_dir=args.state_dir).ready else 1
    except BackendError as exc:
        print(f"egresskit cluster {args.action}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
