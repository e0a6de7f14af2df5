"""The browser test's reading rules, on values: which cells are verify/live/traffic cells,
and what counts as a change of the live chart. (The browser itself is exercised by
tests/test_jupyterlab_browser.py.)"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.labharness import CellView, Source, chart_changes, read_sources, verify_cells


def _cell(index: int, text: str = "", kind: str = "code") -> CellView:
    return CellView(index=index, kind=kind, prompt="[1]:", text=text, mimes=())


def test_sources_come_from_the_notebook_file_in_order(tmp_path: Path) -> None:
    nb = tmp_path / "n.ipynb"
    nb.write_text(
        json.dumps(
            {
                "cells": [
                    {"cell_type": "markdown", "metadata": {}, "source": ["# T"]},
                    {"cell_type": "code", "metadata": {"tags": ["verify"]}, "source": ["t.a()"]},
                    {"cell_type": "code", "metadata": {}, "source": ["t.watch(", "2)"]},
                ]
            }
        )
    )
    got = read_sources(nb)
    assert [s.kind for s in got] == ["markdown", "code", "code"]
    assert [s.verify for s in got] == [False, True, False]
    assert [s.live for s in got] == [False, False, True]


@pytest.mark.parametrize(
    ("text", "traffic"),
    [
        ("t.run_for(duration)", True),
        ('t.start_traffic(["http://x"])', True),
        ("t.watch(duration)", False),
        ("t.deny()", False),
    ],
    ids=["run_for", "start_traffic", "watch", "other"],
)
def test_traffic_cells_are_found_by_their_calls(text: str, traffic: bool) -> None:
    assert Source(kind="code", text=text, tags=()).traffic is traffic


def test_verify_cells_are_tagged_or_print_pass_or_fail() -> None:
    sources = [
        Source(kind="code", text="t.verify_x()", tags=("verify",)),
        Source(kind="code", text="t.check()", tags=()),
        Source(kind="code", text="t.check()", tags=()),
        Source(kind="code", text="t.other()", tags=()),
        Source(kind="markdown", text="PASS in prose", tags=()),
    ]
    cells = [
        _cell(0, ""),  # tagged, printed nothing: still a verify cell (and will fail the test)
        _cell(1, "PASS a: expected 1, saw 1"),
        _cell(2, "FAIL b: expected 1, saw 2 (hint)"),
        _cell(3, "the word PASS later in a line"),
        _cell(4, "", kind="markdown"),
    ]
    assert verify_cells(sources, cells) == [0, 1, 2]


def _state(running: bool, chart: bool, sig: str) -> dict[str, Any]:
    return {"running": running, "chart": chart, "sig": sig, "text": "", "t": 0.0}


@pytest.mark.parametrize(
    ("states", "changes"),
    [
        # main today: progress text, one live frame, the final image
        ([(False, True, "old"), (True, False, "q"), (True, True, "f1"), (True, True, "png")], 1),
        # two live frames and the final image
        ([(True, False, "q"), (True, True, "f1"), (True, True, "f2"), (True, True, "png")], 2),
        # the previous run's chart, still shown as the cell is queued, is not a frame
        ([(True, True, "old"), (True, False, "q"), (True, True, "f1"), (True, True, "png")], 1),
        # a re-render that blanks the output between two identical frames is no change
        ([(True, False, "q"), (True, True, "f1"), (True, False, "q"), (True, True, "f1")], 0),
        # frames after the cell finished do not count
        ([(True, False, "q"), (True, True, "f1"), (False, True, "f2"), (False, True, "f3")], 0),
    ],
    ids=["one-frame", "two-frames", "old-chart", "blank-rerender", "after-finish"],
)
def test_chart_changes_count_frames_shown_while_running(
    states: list[tuple[bool, bool, str]], changes: int
) -> None:
    assert chart_changes([_state(*s) for s in states]) == changes
