"""Notebook 6, "Before you restrict: what would break?": built from the same cells as
:data:`egresskit.whatbreaks.CELLS`, and it runs with every check passing (papermill)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.builders import load_builder

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "06-what-would-break.ipynb"


def build_audit() -> object:
    return load_builder("build_audit")


def test_committed_notebook_is_the_built_one() -> None:
    committed = json.loads(NOTEBOOK.read_text())["cells"]
    built = build_audit().cells()  # type: ignore[attr-defined]
    assert ["".join(c["source"]) for c in committed] == [c.source for c in built], (
        "run: .venv/bin/python notebooks/build_audit.py"
    )
    verify = [c for c in committed if "verify" in c["metadata"].get("tags", [])]
    assert len(verify) == 3
    for cell in verify:
        text = "".join("".join(o.get("text", "")) for o in cell["outputs"])
        assert text.startswith("PASS "), text


@pytest.mark.slow
def test_notebook_runs_and_every_check_passes(tmp_path: Path) -> None:
    import papermill

    out = tmp_path / NOTEBOOK.name
    papermill.execute_notebook(
        str(NOTEBOOK),
        str(out),
        parameters={"backend": "local", "output_dir": str(tmp_path)},
        kernel_name="python3",
        progress_bar=False,
        cwd=str(NOTEBOOK.parent),
    )
    cells = json.loads(out.read_text())["cells"]
    verify = [c for c in cells if "verify" in c["metadata"].get("tags", [])]
    lines = ["".join("".join(o.get("text", "")) for o in c["outputs"]) for c in verify]
    assert [line.split(":")[0] for line in lines] == [
        "PASS prediction for https",
        "PASS prediction for http",
        "PASS traffic after the change",
    ]
