"""The policy engine is pure: values in, decision out (style.md rule 1); so is the
proxy's HTTP/1 wire core (egresskit/mesh/http1_wire.py).

Walk the AST of every module under egresskit/policy, and of the wire core, and fail if one
imports I/O, concurrency, the clock, the environment, kubernetes or pandas.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import egresskit.policy

FORBIDDEN = {
    "asyncio",
    "socket",
    "ssl",
    "selectors",
    "threading",
    "subprocess",
    "os",
    "time",
    "random",
    "kubernetes",
    "pandas",
    "requests",
    "urllib.request",
    "http.client",
    "datetime.now",
}
POLICY_DIR = Path(egresskit.policy.__file__).parent
#: The policy engine, and the proxy's HTTP/1 wire core (bytes <-> messages, h11-style).
MODULES = [*sorted(POLICY_DIR.glob("*.py")), POLICY_DIR.parent / "mesh" / "http1_wire.py"]


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Attribute) and node.attr in ("now", "utcnow", "today"):
            names.add(f"datetime.{node.attr}")
    return names


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_policy_module_imports_no_io(path: Path) -> None:
    bad = {
        n
        for n in imported(path)
        if n in FORBIDDEN or n.split(".")[0] in FORBIDDEN - {"datetime.now"}
    }
    bad |= {
        n
        for n in imported(path)
        if n.startswith("datetime.") and n.split(".")[1] in ("now", "utcnow", "today")
    }
    assert not bad, f"{path.name} imports {sorted(bad)}: the engine must stay pure"


def test_the_walker_would_catch_an_io_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import socket\nfrom datetime import datetime\nx = datetime.now()\n")
    found = imported(bad)
    assert "socket" in found and "datetime.now" in found
