"""Committed notebooks carry no machine-specific paths or metadata (issue 13, item 6)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from egresskit.nbclean import clean, machine_specific

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = sorted(
    p for p in ROOT.glob("notebooks/**/*.ipynb") if ".ipynb_checkpoints" not in p.parts
)


@pytest.mark.parametrize("path", COMMITTED, ids=[p.name for p in COMMITTED])
def test_committed_notebook_names_no_machine(path: Path) -> None:
    nb = json.loads(path.read_text(encoding="utf-8"))
    assert machine_specific(nb) == [], f"run: python -m egresskit.nbclean {path.relative_to(ROOT)}"
    for cell in nb["cells"]:
        assert "execution" not in cell["metadata"], "per-cell run timestamps"


def test_there_are_notebooks_to_check() -> None:
    assert len(COMMITTED) >= 4


RUN = {
    "metadata": {
        "language_info": {"name": "python", "version": "3.11.7"},
        "papermill": {
            "input_path": "/work/main/notebooks/x.ipynb",
            "output_path": "/home/ana/out/x.ipynb",
            "parameters": {"a": 1},
            "start_time": "2026-01-01T00:00:00",
        },
    },
    "cells": [
        {
            "cell_type": "code",
            "source": "print(1)",
            "outputs": [
                {"output_type": "stream", "name": "stdout", "text": "wrote /tmp/abc/chart.png\n"}
            ],
            "metadata": {
                "tags": ["verify"],
                "execution": {"iopub.status.busy": "2026"},
                "papermill": {"duration": 0.1},
            },
        },
    ],
}


def test_clean_removes_the_run_and_keeps_the_lesson() -> None:
    cleaned = clean(RUN)
    assert cleaned["metadata"]["papermill"] == {"parameters": {"a": 1}}
    assert cleaned["metadata"]["language_info"] == {"name": "python"}
    assert cleaned["cells"][0]["metadata"] == {"tags": ["verify"]}
    assert cleaned["cells"][0]["outputs"] == RUN["cells"][0]["outputs"]  # outputs untouched
    assert RUN["metadata"]["papermill"]["input_path"]  # the input is not modified


def test_machine_specific_finds_paths_and_the_host_name() -> None:
    found = machine_specific(RUN, hostname="buildhost-7")
    assert any(f.startswith("metadata.papermill.input_path: /work/main") for f in found)
    assert any("cell 0 output 0: absolute path '/tmp/abc/chart.png" in f for f in found)
    text = {"metadata": {}, "cells": [{"source": "on buildhost-7 today", "metadata": {}}]}
    assert machine_specific(text, hostname="buildhost-7") == [
        "cell 0 source: host name 'buildhost-7'"
    ]
    assert machine_specific({"metadata": {}, "cells": [{"source": "curl -o /dev/null"}]}) == []
