"""The docs' Python examples run as written (the README's on the local backend; the kind
guide's with ``connect("kind")`` swapped for ``connect("local")``, since no cluster runs here)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def python_blocks(doc: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", doc.read_text(), flags=re.S)


def run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=90
    )


@pytest.mark.slow
def test_the_readme_example_runs() -> None:
    (block,) = [b for b in python_blocks(ROOT / "README.md") if "egresskit.connect" in b]
    done = run(block)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "FORBIDDEN via http-egress-deny" in done.stdout
    assert "outbound_http_route_request_statuses_total" in done.stdout


@pytest.mark.slow
def test_the_kind_guide_example_runs_on_the_local_backend() -> None:
    blocks = [b for b in python_blocks(ROOT / "docs" / "kind.md") if 'connect("kind")' in b]
    assert blocks, 'docs/kind.md has no connect("kind") example'
    done = run(blocks[0].replace('connect("kind")', 'connect("local")'))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "outbound_http_route_request_statuses_total" in done.stdout
