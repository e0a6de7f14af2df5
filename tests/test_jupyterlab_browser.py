"""Notebook 3 as a learner runs it: JupyterLab in Debian's headless Chromium, local backend.

Issue 10, "How it is checked": open notebook 3, Run All, and check from the rendered page
that every verify cell shows PASS, that the live chart's output changed at least twice
while running, and that no output shows a traceback; then interrupt a second run in its
traffic cell and check that the cells after it did not run. Screenshots are written to
``out/test-artifacts/jupyterlab/`` (or ``$EGRESSKIT_TEST_ARTIFACTS``).

Cells are found by what they are, not by position: verify cells by their ``verify`` tag or
by output lines starting with PASS/FAIL, the live cell by ``watch(`` in its source, traffic
cells by ``run_for(`` or ``start_traffic(``. Sources and tags come from the notebook file,
prompts and outputs from the page (same order: the harness renders every cell).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.cdp import chromium
from tests.labharness import (
    BROWSER_MARKS,
    KERNEL_NAME,
    CellView,
    LabServer,
    NotebookPage,
    Source,
    artifacts_dir,
    chart_changes,
    jupyterlab,
    output_states,
    read_sources,
    verify_cells,
    wait_for,
    watch_outputs,
)

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = "03-redirecting-egress-traffic.ipynb"
RUN_TIMEOUT = 90.0  # notebook 3 runs in ~10 s on the local backend (papermill)

pytestmark = BROWSER_MARKS


@dataclass
class Session:
    """JupyterLab with notebook 3 open in the browser, and the notebook file's cells."""

    lab: LabServer
    nb: NotebookPage
    sources: list[Source]
    shots: Path


@dataclass(frozen=True)
class FirstRun:
    cells: list[CellView]
    live: dict[int, list[dict[str, Any]]]  # live cell index -> its recorded output states


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    work = tmp_path_factory.mktemp("jupyterlab")
    shots = artifacts_dir("jupyterlab")
    try:
        with (
            jupyterlab(work, ROOT / "notebooks") as lab,
            chromium(work / "chromium-profile", width=1400, height=1600) as page,
        ):
            nb = NotebookPage(page, lab, NOTEBOOK)
            nb.open()
            nb.screenshot(shots / "01-opened.png")
            sources = read_sources(lab.root_dir / NOTEBOOK)
            rendered = nb.cells()
            assert [c.kind for c in rendered] == [s.kind for s in sources], (
                "the page's cells do not line up with the notebook file's"
            )
            yield Session(lab=lab, nb=nb, sources=sources, shots=shots)
    finally:
        for log in ("jupyterlab.log", "chromium.log"):
            if (work / log).exists():
                shutil.copyfile(work / log, shots / log)


@pytest.fixture(scope="module")
def first_run(session: Session) -> FirstRun:
    """Run All once, recording the live cells' outputs; one screenshot of a live chart while
    its cell runs, and the verify cells once done."""
    nb, shots = session.nb, session.shots
    live = [i for i, s in enumerate(session.sources) if s.live]
    assert live, f"{NOTEBOOK} has no live cell (a code cell calling watch(...))"
    for index in live:
        watch_outputs(nb.page, index)
    nb.command("notebook:run-all-cells")
    wait_for(
        lambda: any(c.running for c in nb.cells()),
        what="Run All to queue the cells ([*] prompts)",
        timeout=30,
    )
    shot_taken = False

    def finished() -> list[CellView] | None:
        nonlocal shot_taken
        if not shot_taken and any(
            s["running"] and s["chart"] for s in output_states(nb.page, live[0])
        ):
            nb.screenshot_cells(shots / "02-live-chart-while-running.png", live[0])
            shot_taken = True
        cells = nb.cells()
        if any(c.running for c in cells) or nb.kernel_status() != "idle":
            return None
        return cells

    cells = wait_for(finished, what=f"Run All of {NOTEBOOK} to finish", timeout=RUN_TIMEOUT)
    assert not nb.command_errors(), nb.command_errors()
    nb.screenshot_cells(shots / "03-run-all-done-live-cell.png", live[-1])
    verify = verify_cells(session.sources, cells)
    if verify:
        nb.screenshot_cells(shots / "04-run-all-done-verify-cells.png", verify[0], verify[-1])
    return FirstRun(cells=cells, live={i: output_states(nb.page, i) for i in live})


def _describe(cell: CellView, source: Source) -> str:
    first = source.text.splitlines()[0] if source.text.strip() else ""
    return f"cell {cell.index} {first!r} shows {cell.text[:300]!r}"


def test_notebook_opens_on_the_egresskit_kernel(session: Session) -> None:
    # The kernel `make lab` registers; the notebook declares it, so none is chosen by hand.
    assert session.nb.kernel_name() == KERNEL_NAME


def test_run_all_runs_every_cell_and_every_verify_cell_shows_pass(
    session: Session, first_run: FirstRun
) -> None:
    cells, sources = first_run.cells, session.sources
    not_run = [_describe(c, sources[c.index]) for c in cells if c.kind == "code" and not c.executed]
    assert not not_run, "Run All left cells unexecuted:\n" + "\n".join(not_run)
    verify = verify_cells(sources, cells)
    tagged = [i for i, s in enumerate(sources) if s.verify]
    assert tagged, f"{NOTEBOOK} has no cell tagged verify"
    assert set(tagged) <= set(verify)
    bad = [
        _describe(cells[i], sources[i])
        for i in verify
        if not any(line.startswith("PASS") for line in cells[i].lines)
        or any(line.startswith("FAIL") for line in cells[i].lines)
    ]
    assert not bad, "verify cells without a PASS (or with a FAIL):\n" + "\n".join(bad)


def test_run_all_shows_no_traceback(session: Session, first_run: FirstRun) -> None:
    shown = [
        _describe(c, session.sources[c.index])
        for c in first_run.cells
        if "Traceback" in c.text or "application/vnd.jupyter.error" in c.mimes
    ]
    assert not shown, "outputs with a traceback:\n" + "\n".join(shown)


def test_live_chart_output_changes_at_least_twice_while_running(first_run: FirstRun) -> None:
    for index, states in first_run.live.items():
        changes = chart_changes(states)
        seen = [(round(s["t"]), s["running"], s["chart"], s["sig"]) for s in states]
        assert changes >= 2, (
            f"live cell {index}: its chart changed {changes} time(s) while running, "
            f"expected at least 2; states seen (ms, running, chart, hash): {seen}"
        )


def test_interrupting_a_second_run_in_its_traffic_cell_stops_run_all(
    session: Session, first_run: FirstRun
) -> None:
    nb, sources = session.nb, session.sources
    assert any(s.traffic for s in sources), f"{NOTEBOOK} has no traffic cell"
    nb.command("notebook:run-all-cells")

    def running_traffic_cell() -> int | None:
        # Cells run in order and all queued ones show [*]: the first [*] is the one running.
        running = next((c for c in nb.cells() if c.running), None)
        return running.index if running is not None and sources[running.index].traffic else None

    interrupted = wait_for(
        running_traffic_cell,
        what="the second Run All to reach a traffic cell (run_for/start_traffic)",
        timeout=RUN_TIMEOUT,
        every=0.02,
    )
    nb.command("notebook:interrupt-kernel")
    cells = nb.wait_done(what="the interrupted Run All to settle", timeout=RUN_TIMEOUT)
    # The interrupt travels browser -> Lab -> kernel: on a slow machine the traffic cell seen
    # running may have just finished, and it lands in the next one. It must land in a
    # traffic cell all the same (the ones that run for a while), and stop Run All there.
    landed = next(
        (
            c.index
            for c in cells[interrupted:]
            if c.kind == "code" and "interrupt" in c.text.lower()
        ),
        None,
    )
    assert landed is not None, f"no cell from {interrupted} on shows the interrupt"
    assert sources[landed].traffic, "the interrupt landed outside a traffic cell: " + _describe(
        cells[landed], sources[landed]
    )
    interrupted = landed
    nb.screenshot_cells(session.shots / "05-interrupted-traffic-cell.png", interrupted)
    if interrupted + 1 < len(cells):
        nb.screenshot_cells(
            session.shots / "06-cells-after-the-interrupt.png", interrupted + 1, len(cells) - 1
        )
    assert not nb.command_errors(), nb.command_errors()
    ran_after = [
        _describe(c, sources[c.index])
        for c in cells[interrupted + 1 :]
        if c.kind == "code" and (c.executed or c.text.strip())
    ]
    assert not ran_after, (
        f"cells after the interrupted traffic cell {interrupted} ran:\n" + "\n".join(ran_after)
    )
    # The learner is told so in that cell, in one line: no traceback through the traffic
    # loop's threads.
    cell = cells[interrupted]
    assert "Traceback" not in cell.text, _describe(cell, sources[interrupted])
    assert "traffic stopped, later cells not run" in cell.text, _describe(
        cell, sources[interrupted]
    )
