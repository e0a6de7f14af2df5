"""Fake ``docker``, ``kind``, ``kubectl`` and ``linkerd`` executables for lifecycle tests.

:func:`install` writes one small Python program under the four names into a directory meant
to go first on PATH. Each run appends ``[tool, *argv]`` as a JSON line to ``calls.jsonl`` and
keeps a tiny world in ``world.json``: which kind clusters exist, which CRDs, whether the
Linkerd control plane is installed. ``kubectl apply -f -`` learns from its stdin what was
applied (the fake ``linkerd install`` prints recognisable manifests).

``linkerd version --client --short`` prints ``world["linkerd_cli"]`` (the pinned release
unless a test sets another).

Failure injection: a line in ``fail.txt`` that the command line (``tool arg ...``, without
``--context X``) starts with makes that run print ``boom`` on stderr and exit 1.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from egresskit import versions

_PROGRAM = r"""
import json, os, sys
from pathlib import Path

state = Path(os.environ["FAKE_CLI_STATE"])
tool, args = Path(sys.argv[0]).name, sys.argv[1:]
with (state / "calls.jsonl").open("a") as f:
    f.write(json.dumps([tool, *args]) + "\n")
if "--context" in args:
    i = args.index("--context")
    args = args[:i] + args[i + 2:]
line = " ".join([tool, *args])
fail = state / "fail.txt"
if fail.exists() and any(p and line.startswith(p) for p in fail.read_text().splitlines()):
    print(f"boom: {line}", file=sys.stderr)
    sys.exit(1)
world_path = state / "world.json"
world = json.loads(world_path.read_text())
def save():
    world_path.write_text(json.dumps(world))

LINKERD_CRDS = "kind: CustomResourceDefinition\nname: egressnetworks.policy.linkerd.io\n"
CONTROL_PLANE = "kind: Deployment\nname: linkerd-destination\n"
GATEWAY = ["httproutes.gateway.networking.k8s.io", "tlsroutes.gateway.networking.k8s.io"]

if tool == "docker":
    sys.exit(0 if args[:1] == ["info"] and world.get("docker_up", True) else 1)
if tool == "kind":
    if args[:2] == ["get", "clusters"]:
        print("\n".join(world["clusters"]))
    elif args[:2] == ["create", "cluster"]:
        world["clusters"].append(args[args.index("--name") + 1]); save()
    elif args[:2] == ["delete", "cluster"]:
        world["clusters"].remove(args[args.index("--name") + 1])
        world["crds"], world["linkerd"] = [], False; save()
    sys.exit(0)
if tool == "kubectl":
    if args[:2] == ["get", "crd"]:
        sys.exit(0 if args[2] in world["crds"] else 1)
    if args[:2] == ["get", "namespace"]:
        sys.exit(0 if world["linkerd"] else 1)
    if args[0] in ("apply", "delete"):
        source = args[args.index("-f") + 1]
        text = sys.stdin.read() if source == "-" else ""
        names = GATEWAY if source.startswith("https://") else []
        if "egressnetworks.policy.linkerd.io" in text:
            names = ["egressnetworks.policy.linkerd.io"]
        if args[0] == "apply":
            world["crds"] += [n for n in names if n not in world["crds"]]
            world["linkerd"] = world["linkerd"] or "linkerd-destination" in text
        else:
            world["crds"] = [n for n in world["crds"] if n not in names]
            world["linkerd"] = world["linkerd"] and "linkerd-destination" not in text
        save()
        sys.exit(0)
if tool == "linkerd":
    if args[:2] == ["install", "--crds"]:
        print(LINKERD_CRDS)
    elif args[:1] == ["install"]:
        print(CONTROL_PLANE)
    elif args[:1] == ["uninstall"]:  # every Linkerd resource, CRDs included
        print(LINKERD_CRDS + "---\n" + CONTROL_PLANE)
    elif args[:1] == ["version"]:  # `linkerd version --client --short`: the release only
        print(world["linkerd_cli"])
    elif args[:1] == ["check"]:
        sys.exit(0 if "--pre" in args or world["linkerd"] else 1)
    sys.exit(0)
sys.exit(2)
"""

TOOLS = ("docker", "kind", "kubectl", "linkerd")


@dataclass(frozen=True, kw_only=True)
class FakeClis:
    bin_dir: Path
    state: Path

    def calls(self) -> list[list[str]]:
        path = self.state / "calls.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines()]

    def command_lines(self) -> list[str]:
        """Each call as ``tool args``, ``--context X`` dropped (as for ``fail.txt`` prefixes)."""
        out = []
        for call in self.calls():
            if "--context" in call:
                i = call.index("--context")
                call = call[:i] + call[i + 2 :]
            out.append(" ".join(call))
        return out

    def clear_calls(self) -> None:
        (self.state / "calls.jsonl").unlink(missing_ok=True)

    def world(self) -> dict[str, Any]:
        return dict(json.loads((self.state / "world.json").read_text()))

    def set_world(self, **changes: Any) -> None:
        world = self.world()
        world.update(changes)
        (self.state / "world.json").write_text(json.dumps(world))

    def fail(self, prefix: str) -> None:
        with (self.state / "fail.txt").open("a") as f:
            f.write(prefix + "\n")


def install(directory: Path, tools: tuple[str, ...] = TOOLS) -> FakeClis:
    """Write the fake tools into ``directory/bin``; the caller puts it first on PATH and
    sets ``FAKE_CLI_STATE`` to ``directory/state``."""
    bin_dir, state = directory / "bin", directory / "state"
    bin_dir.mkdir(parents=True)
    state.mkdir()
    world = {"clusters": [], "crds": [], "linkerd": False, "linkerd_cli": versions.LINKERD_RELEASE}
    (state / "world.json").write_text(json.dumps(world))
    for tool in tools:
        path = bin_dir / tool
        path.write_text(f"#!{sys.executable}\n{_PROGRAM}")
        path.chmod(0o755)
    return FakeClis(bin_dir=bin_dir, state=state)
