"""Notebooks 4 and 5 as a learner sees them: JupyterLab in Debian's headless Chromium.

Issue 10, item 7 and item 3, checked on the rendered page rather than in nbconvert HTML:

* notebook 4: Run All; its explain table (the cell calling ``audit.explain_table(``) and
  its findings table (``audit.findings(``) are HTML tables whose every cell shows the
  engine's whole value (nothing cut, no ``...``), long cells wrap inside the output instead
  of running off to the right and no word is split across lines, the explain table's
  status column is filled in every row, and every verify cell shows PASS;
* notebook 5: Run All with the skeletons (its default parameters) runs to the end, every
  check cell shows a FAIL line with a hint, and each solution is hidden in a closed
  ``<details>`` that one click on its summary opens to show the solution's YAML.

Screenshots go to ``out/test-artifacts/jupyterlab-lessons/`` (or
``$EGRESSKIT_TEST_ARTIFACTS``). Each notebook gets its own Chromium, closed before the next
opens, and its own JupyterLab workspace, so the page holds exactly that notebook's cells.
Cells are found by content (``audit.explain_table(``, ``workshop.check(``, ``<details>``),
never by position. What the page shows is read once, in the fixtures; tests assert on it.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from egresskit.exercise_tasks import EXERCISES
from tests.cdp import Page, chromium
from tests.labharness import (
    BROWSER_MARKS,
    CellView,
    LabServer,
    NotebookPage,
    Source,
    WaitTimeout,
    artifacts_dir,
    jupyterlab,
    read_sources,
    verify_cells,
    wait_for,
)

ROOT = Path(__file__).resolve().parent.parent
AUDIT = "04-auditing-egress-policy.ipynb"
EXERCISES_NB = "05-exercises.ipynb"
RUN_TIMEOUT = 90.0  # each notebook runs in seconds on the local backend (papermill)
# Narrower than the explain table's one-line width (~240 characters a row), so the table
# has to wrap to fit: the wrap checks below then test something.
WIDTH, HEIGHT = 1100, 1400

pytestmark = BROWSER_MARKS


@dataclass
class Lab:
    server: LabServer
    work: Path
    shots: Path


@dataclass(frozen=True)
class Ran:
    """A notebook after Run All in the browser: the file's cells, the page's cells."""

    sources: list[Source]
    cells: list[CellView]
    command_errors: list[str]


# Notebook 4's tables, by the call that makes them: the explain table and the findings.
TABLES = ("audit.explain_table(", "audit.findings(")


@dataclass(frozen=True)
class Table:
    cell: int
    shown: dict[str, Any]  # what _READ_TABLE measured on the page
    expected: pd.DataFrame  # the same table computed here by the engine
    cut_words: list[dict[str, Any]]  # words of the table split across lines (_CUT_WORDS)


@dataclass(frozen=True)
class Audit:
    ran: Ran
    tables: dict[str, Table]  # by the call in TABLES


@dataclass(frozen=True)
class Exercises:
    ran: Ran
    before: list[dict[str, Any]]  # each solution's <details>, as _READ_DETAILS reads it
    after: list[dict[str, Any]]  # the same after one click on its summary
    cut_words: dict[int, list[dict[str, Any]]]  # check cell -> its words split across lines


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    work = tmp_path_factory.mktemp("jupyterlab-lessons")
    shots = artifacts_dir("jupyterlab-lessons")
    try:
        with jupyterlab(work, ROOT / "notebooks") as server:
            yield Lab(server=server, work=work, shots=shots)
    finally:
        if (work / "jupyterlab.log").exists():
            shutil.copyfile(work / "jupyterlab.log", shots / "jupyterlab.log")


class _Workspace(NotebookPage):
    """A notebook page in a JupyterLab workspace of its own (``/lab/workspaces/<name>``),
    so the notebook opened before it is not restored beside it."""

    def open(self, *, timeout: float = 60.0) -> None:
        real = self.page.navigate

        def navigate(url: str) -> None:
            real(url.replace("/lab/tree/", f"/lab/workspaces/{_slug(self.name)}/tree/", 1))

        self.page.navigate = navigate  # type: ignore[method-assign]
        try:
            super().open(timeout=timeout)
        finally:
            self.page.navigate = real  # type: ignore[method-assign]


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def _run_all(page: Page, lab: Lab, name: str) -> tuple[NotebookPage, Ran]:
    nb = _Workspace(page, lab.server, name)
    nb.open()
    sources = read_sources(lab.server.root_dir / name)
    assert [c.kind for c in nb.cells()] == [s.kind for s in sources], (
        f"the page's cells do not line up with {name}'s"
    )
    nb.command("notebook:run-all-cells")
    wait_for(
        lambda: any(c.running for c in nb.cells()),
        what=f"Run All of {name} to queue the cells ([*] prompts)",
        timeout=30,
    )
    cells = nb.wait_done(what=f"Run All of {name} to finish", timeout=RUN_TIMEOUT)
    return nb, Ran(sources=sources, cells=cells, command_errors=nb.command_errors())


def _browser(lab: Lab, name: str) -> Any:
    return chromium(lab.work / f"chromium-{_slug(name)}", width=WIDTH, height=HEIGHT)


def _engine_table(sources: list[Source], table_cell: int) -> pd.DataFrame:
    """A table as the notebook computes it: its manifest cell (``final_state =``) and the
    table cell (whose last line names the table) run here. Both are pure engine calls, no
    cluster; the cells are the notebook's own, from the repository."""
    setup = next(s.text for s in sources if s.kind == "code" and "final_state =" in s.text)
    *body, last = sources[table_cell].text.strip().splitlines()
    scope: dict[str, Any] = {}
    exec(setup, scope)
    exec("\n".join(body), scope)
    table = eval(last, scope)
    assert isinstance(table, pd.DataFrame), f"cell {table_cell}'s last line {last!r}"
    return table


@pytest.fixture(scope="module")
def audit_nb(lab: Lab) -> Audit:
    with _browser(lab, AUDIT) as page:
        nb, ran = _run_all(page, lab, AUDIT)
        tables = {}
        for call in TABLES:
            cell = next(
                (i for i, s in enumerate(ran.sources) if s.kind == "code" and call in s.text),
                None,
            )
            assert cell is not None, f"{AUDIT} has no cell calling {call}"
            tables[call] = Table(
                cell=cell,
                shown=page.evaluate(_READ_TABLE, cell),
                expected=_engine_table(ran.sources, cell),
                cut_words=page.evaluate(_CUT_WORDS, cell),
            )
            nb.screenshot_cells(lab.shots / f"04-{_slug(call)}.png", cell)
        verify = verify_cells(ran.sources, ran.cells)
        if verify:
            nb.screenshot_cells(lab.shots / "04-first-verify-cells.png", verify[0], verify[-1])
    return Audit(ran=ran, tables=tables)


@pytest.fixture(scope="module")
def exercises_nb(lab: Lab) -> Exercises:
    with _browser(lab, EXERCISES_NB) as page:
        nb, ran = _run_all(page, lab, EXERCISES_NB)
        checks = _check_cells(ran.sources)
        cut_words = {i: page.evaluate(_CUT_WORDS, i) for i in checks}
        if checks:
            nb.screenshot_cells(lab.shots / "05-check-1-fails-with-hint.png", checks[0])
        solutions = _solution_cells(ran.sources)
        assert solutions, f"{EXERCISES_NB} has no markdown cell with a <details> solution"
        before = [page.evaluate(_READ_DETAILS, i) for i in solutions]
        nb.screenshot_cells(lab.shots / "05-solution-1-before-click.png", solutions[0])
        after: list[dict[str, Any]] = []
        for index in solutions:
            _click(page, page.evaluate(_SUMMARY_CENTRE, index))

            def opened(i: int = index) -> dict[str, Any] | None:
                details: dict[str, Any] = page.evaluate(_READ_DETAILS, i)
                return details if details.get("open") and details.get("codeVisible") else None

            try:
                after.append(
                    wait_for(
                        opened,
                        what=f"cell {index}'s <details> to open after one click on its summary",
                        timeout=5,
                    )
                )
            except WaitTimeout:  # the test then says what the page showed instead
                after.append(page.evaluate(_READ_DETAILS, index))
            if index == solutions[0]:
                nb.screenshot_cells(lab.shots / "05-solution-1-after-click.png", index)
    return Exercises(ran=ran, before=before, after=after, cut_words=cut_words)


def _click(page: Page, at: dict[str, float]) -> None:
    """One left click at ``at`` (CSS pixels), as a mouse makes it: press, release."""
    for kind in ("mousePressed", "mouseReleased"):
        page.send(
            "Input.dispatchMouseEvent",
            type=kind,
            x=at["x"],
            y=at["y"],
            button="left",
            buttons=1 if kind == "mousePressed" else 0,
            clickCount=1,
        )


def _check_cells(sources: list[Source]) -> list[int]:
    return [
        i
        for i, s in enumerate(sources)
        if s.kind == "code" and ("exercise-check" in s.tags or "workshop.check(" in s.text)
    ]


def _solution_cells(sources: list[Source]) -> list[int]:
    return [i for i, s in enumerate(sources) if s.kind == "markdown" and "<details>" in s.text]


def _describe(cell: CellView, source: Source) -> str:
    first = source.text.splitlines()[0] if source.text.strip() else ""
    return f"cell {cell.index} {first!r} shows {cell.text[:300]!r}"


def _ran_to_the_end(ran: Ran, name: str) -> None:
    assert not ran.command_errors, ran.command_errors
    not_run = [
        _describe(c, ran.sources[c.index]) for c in ran.cells if c.kind == "code" and not c.executed
    ]
    assert not not_run, f"Run All of {name} left cells unexecuted:\n" + "\n".join(not_run)
    tracebacks = [
        _describe(c, ran.sources[c.index])
        for c in ran.cells
        if "Traceback" in c.text or "application/vnd.jupyter.error" in c.mimes
    ]
    assert not tracebacks, f"{name}: outputs with a traceback:\n" + "\n".join(tracebacks)


# --------------------------------------------------------------------------- notebook 4


def test_audit_notebook_runs_to_the_end_and_every_verify_cell_shows_pass(
    audit_nb: Audit,
) -> None:
    ran = audit_nb.ran
    _ran_to_the_end(ran, AUDIT)
    verify = verify_cells(ran.sources, ran.cells)
    assert any(s.verify for s in ran.sources), f"{AUDIT} has no cell tagged verify"
    bad = [
        _describe(ran.cells[i], ran.sources[i])
        for i in verify
        if not any(line.startswith("PASS") for line in ran.cells[i].lines)
        or any(line.startswith("FAIL") for line in ran.cells[i].lines)
    ]
    assert not bad, "verify cells without a PASS (or with a FAIL):\n" + "\n".join(bad)


@pytest.mark.parametrize("call", TABLES)
def test_table_shows_every_value_whole(audit_nb: Audit, call: str) -> None:
    # The page's table against the engine's own DataFrame: same columns, same rows, and
    # each cell's text is the whole value (pandas cuts at display.max_colwidth with "...").
    table, expected = audit_nb.tables[call].shown, audit_nb.tables[call].expected
    assert table["found"], f"cell {audit_nb.tables[call].cell} shows no HTML table: {table}"
    assert table["heads"] == list(expected.columns)
    shown = [[cell["text"] for cell in row] for row in table["rows"]]
    want = [[str(v) for v in row] for row in expected.itertuples(index=False)]
    assert shown == want, f"the page shows {shown}, the engine computes {want}"
    cut = [c for row in shown for c in row if c.endswith(("...", "\u2026"))]
    assert not cut, f"cells shown cut: {cut}"


@pytest.mark.parametrize("call", TABLES)
def test_table_wraps_long_cells_inside_the_output(audit_nb: Audit, call: str) -> None:
    # Robust check of "wrap, never cut": (1) no cell forbids wrapping or clips its text
    # (white-space nowrap/pre, text-overflow ellipsis); (2) every cell's content fits its box
    # (scrollWidth <= clientWidth: nothing overflows or is hidden); (3) the table fits the
    # output's width (no horizontal scrolling hides columns); and (4) at this viewport width
    # the table cannot fit on one line per row, so at least one cell does wrap: a positive
    # proof that (1)-(3) hold because the text wraps, not because it happened to be short.
    table = audit_nb.tables[call].shown
    cells = [cell for row in table["rows"] for cell in row]
    nowrap = [(c["text"], c["whiteSpace"]) for c in cells if c["whiteSpace"] in ("nowrap", "pre")]
    assert not nowrap, f"cells that may not wrap (computed white-space): {nowrap}"
    ellipsis = [c["text"] for c in cells if c["textOverflow"] == "ellipsis"]
    assert not ellipsis, f"cells clipped with an ellipsis: {ellipsis}"
    spill = [
        (c["text"], c["scrollWidth"], c["clientWidth"])
        for c in cells
        if c["scrollWidth"] > c["clientWidth"] + 1
    ]
    assert not spill, f"cells whose text is wider than the cell (text, scroll, client): {spill}"
    assert table["tableRight"] <= table["boxRight"] + 1, (
        f"the table ({table['tableWidth']:.0f} px) runs past its output "
        f"({table['boxWidth']:.0f} px)"
    )
    assert table["boxScrollWidth"] <= table["boxClientWidth"] + 1, (
        f"the output scrolls sideways: {table['boxScrollWidth']} > {table['boxClientWidth']}"
    )
    wrapped = [c["text"] for c in cells if c["lines"] >= 2]
    assert wrapped, f"no cell wraps at {WIDTH} px; cell heights: {[c['lines'] for c in cells]}"


@pytest.mark.parametrize("call", TABLES)
def test_table_cuts_no_word_across_lines(audit_nb: Audit, call: str) -> None:
    # Wrapping may break at spaces, hyphens and slashes, never inside a run of letters.
    cut = audit_nb.tables[call].cut_words
    assert not cut, f"words split across lines: {cut}"


def test_explain_table_status_column_is_filled_in_every_row(audit_nb: Audit) -> None:
    table = audit_nb.tables["audit.explain_table("].shown
    column = table["heads"].index("status")
    empty = [row[0]["text"] for row in table["rows"] if not row[column]["text"].strip()]
    assert table["rows"], "the explain table has no rows"
    assert not empty, f"rows with an empty status: {empty}"


# --------------------------------------------------------------------------- notebook 5


def test_exercises_run_all_with_skeletons_runs_to_the_end(exercises_nb: Exercises) -> None:
    # A failing check prints FAIL and returns: it must not raise and stop Run All.
    _ran_to_the_end(exercises_nb.ran, EXERCISES_NB)


def test_every_check_cell_shows_fail_with_a_hint(exercises_nb: Exercises) -> None:
    ran = exercises_nb.ran
    checks = _check_cells(ran.sources)
    assert len(checks) >= 6, f"{EXERCISES_NB}: {len(checks)} check cells, issue 10 asks >= 6"
    bad = [
        _describe(ran.cells[i], ran.sources[i])
        for i in checks
        if not any(line.startswith("FAIL") and "Hint" in line for line in ran.cells[i].lines)
        or any(line.startswith("PASS") for line in ran.cells[i].lines)
    ]
    assert not bad, "check cells without a FAIL line with a Hint:\n" + "\n".join(bad)


def test_check_cells_cut_no_word_across_lines(exercises_nb: Exercises) -> None:
    # The FAIL line and its hint are read once; "H / TTPRoute" or "al / so" costs a re-read.
    cut = {i: words for i, words in exercises_nb.cut_words.items() if words}
    assert not cut, f"check cells whose output splits words across lines: {cut}"


def test_solutions_are_hidden_until_one_click_shows_their_yaml(exercises_nb: Exercises) -> None:
    ran = exercises_nb.ran
    solutions = _solution_cells(ran.sources)
    assert len(solutions) == len(_check_cells(ran.sources)), "one solution per check cell"
    by_number = {ex.number: ex for ex in EXERCISES}
    for index, before, after in zip(
        solutions, exercises_nb.before, exercises_nb.after, strict=True
    ):
        assert before["found"], f"cell {index}: no <details> rendered: {before}"
        assert not before["open"] and not before["codeVisible"], (
            f"cell {index}: the solution shows before any click: {before}"
        )
        number = re.search(r"Solution (\d+)", before["summary"])
        assert number, f"cell {index}: summary {before['summary']!r} names no solution"
        assert after["open"] and after["codeVisible"], (
            f"cell {index}: one click on the summary did not show the solution: {after}"
        )
        assert not after["editing"], f"cell {index}: the click opened the Markdown editor"
        solution = by_number[int(number.group(1))].solution
        assert after["code"].strip() == solution.strip(), (
            f"cell {index} shows {after['code']!r}, exercise {number.group(1)}'s solution is "
            f"{solution!r}"
        )


# ---------------------------------------------------------------------- page scripts

# The explain table in cell `index`: headers (pandas' index column dropped), and for each
# body cell its text and what decides whether it wraps or is cut.
_READ_TABLE = """(index) => {
  const cell = document.querySelectorAll('.jp-NotebookPanel .jp-Notebook .jp-Cell')[index];
  const table = cell.querySelector('.jp-OutputArea-output table');
  if (!table) return {found: false, text: cell.innerText.slice(0, 500)};
  const box = table.closest('.jp-OutputArea-output');
  const heads = Array.from(table.querySelectorAll('thead th'), th => th.innerText.trim())
    .filter((h, i) => i > 0 || h !== '');
  const rows = Array.from(table.querySelectorAll('tbody tr'), tr =>
    Array.from(tr.querySelectorAll('td'), td => {
      const s = getComputedStyle(td);
      const line = parseFloat(s.lineHeight) || parseFloat(s.fontSize) * 1.2;
      const pad = parseFloat(s.paddingTop) + parseFloat(s.paddingBottom);
      const range = document.createRange(); range.selectNodeContents(td);
      return {text: td.innerText, whiteSpace: s.whiteSpace, textOverflow: s.textOverflow,
              scrollWidth: td.scrollWidth, clientWidth: td.clientWidth,
              lines: Math.round(range.getBoundingClientRect().height / line)};
    }));
  const t = table.getBoundingClientRect(), b = box.getBoundingClientRect();
  return {found: true, heads, rows, tableWidth: t.width, tableRight: t.right,
          boxWidth: b.width, boxRight: b.right,
          boxScrollWidth: box.scrollWidth, boxClientWidth: box.clientWidth};
}"""

# The <details> of markdown cell `index`: open or not, its summary, whether its code is on
# screen (a closed <details> renders no box for its content), and whether the cell is in
# edit mode (a click that opened the Markdown editor instead).
_READ_DETAILS = """(index) => {
  const cell = document.querySelectorAll('.jp-NotebookPanel .jp-Notebook .jp-Cell')[index];
  const details = cell.querySelector('.jp-RenderedMarkdown details');
  const editing = !cell.querySelector('.jp-RenderedMarkdown')
    || cell.classList.contains('jp-mod-editMode')
    || !!cell.querySelector('.jp-InputArea-editor:not(.lm-mod-hidden) .cm-focused');
  if (!details) return {found: false, editing, text: cell.innerText.slice(0, 300)};
  const code = details.querySelector('pre');
  return {found: true, editing, open: details.open,
          summary: (details.querySelector('summary') || {}).innerText || '',
          // Chromium keeps a box for a closed <details>' content but skips it
          // (content-visibility: hidden): checkVisibility() says whether it is drawn.
          codeVisible: !!code && code.checkVisibility({visibilityProperty: true})
            && code.getBoundingClientRect().height > 0,
          code: code ? code.innerText : ''};
}"""

# Scrolls the summary of cell `index`'s <details> into view; its centre in CSS pixels.
_SUMMARY_CENTRE = """(index) => {
  const cell = document.querySelectorAll('.jp-NotebookPanel .jp-Notebook .jp-Cell')[index];
  const summary = cell.querySelector('.jp-RenderedMarkdown details summary');
  if (!summary) return {x: 0, y: 0};
  summary.scrollIntoView({block: 'center'});
  const r = summary.getBoundingClientRect();
  return {x: r.left + Math.min(40, r.width / 2), y: r.top + r.height / 2};
}"""

# Words of cell `index`'s outputs that the page splits across two lines (a run of letters
# and digits whose text range covers more than one line box), with the computed
# word-break/line-break of their element; words longer than the output is wide may break.
_CUT_WORDS = """(index) => {
  const cell = document.querySelectorAll('.jp-NotebookPanel .jp-Notebook .jp-Cell')[index];
  const out = [];
  for (const area of cell.querySelectorAll('.jp-OutputArea-output')) {
    const width = area.clientWidth;
    const walk = document.createTreeWalker(area, NodeFilter.SHOW_TEXT);
    for (let node = walk.nextNode(); node; node = walk.nextNode()) {
      for (const m of node.data.matchAll(/[\\p{L}\\p{N}_]+/gu)) {
        const range = document.createRange();
        range.setStart(node, m.index); range.setEnd(node, m.index + m[0].length);
        const rects = Array.from(range.getClientRects()).filter(r => r.width > 0);
        const lines = new Set(rects.map(r => Math.round(r.top)));
        if (lines.size > 1 && rects.reduce((a, r) => a + r.width, 0) < width) {
          const s = getComputedStyle(node.parentElement);
          out.push({word: m[0], wordBreak: s.wordBreak, lineBreak: s.lineBreak,
                    overflowWrap: s.overflowWrap, element: node.parentElement.tagName});
        }
      }
    }
  }
  return out;
}"""
