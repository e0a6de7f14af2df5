"""The benchmark harness: the engine benchmark's shape (never its speed), the tables, and
``python -m benchmarks`` running, reporting and surviving a failing module.

No timing thresholds here: speed is judged only by ``make bench``.
"""

from __future__ import annotations

import datetime as dt
import json
import random
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from benchmarks import __main__ as cli
from benchmarks import bench_engine, report
from egresskit.manifests import load_manifests
from egresskit.policy.decision import HttpRequest, TlsConnection
from egresskit.policy.engine import decide
from egresskit.policy.snapshot import Snapshot

# ====================================================================== engine


@pytest.fixture(scope="module")
def quick_rows() -> list[dict[str, Any]]:
    return bench_engine.run(quick=True)


def test_quick_run_has_one_row_per_size(quick_rows: list[dict[str, Any]]) -> None:
    assert [r["routes"] for r in quick_rows] == list(bench_engine.QUICK_SIZES)
    assert len({tuple(r) for r in quick_rows}) == 1, "every row has the same columns"


@pytest.mark.parametrize(
    "column",
    ["best_dps", "median_dps", "baseline_lps", "vs_baseline", "us_per_decision", "slowdown"],
)
def test_quick_run_rates_are_positive(quick_rows: list[dict[str, Any]], column: str) -> None:
    assert all(r[column] > 0 for r in quick_rows), [r[column] for r in quick_rows]


def test_quick_run_values_are_consistent(quick_rows: list[dict[str, Any]]) -> None:
    for row in quick_rows:
        assert row["requests"] == bench_engine.QUICK_REQUESTS
        assert row["build_s"] >= 0 and row["warm_s"] >= 0
        # best round is the fastest, so never below the median
        assert row["best_dps"] >= row["median_dps"]
        # the mix aims ~80% at explicit routes; misses fall through to the default
        assert 50 < row["hits_pct"] < 100
    assert quick_rows[0]["slowdown"] == 1.0
    json.dumps(quick_rows)  # results are written as JSON


def test_workload_mix_reaches_every_kind_of_route() -> None:
    """The request list really exercises exact, wildcard, hostname-less and default routes,
    over HTTP and TLS, so the benchmark measures what it claims to."""
    rng = random.Random(bench_engine.SEED)
    specs = bench_engine.route_specs(100, rng)
    reqs = bench_engine.requests(specs, 400, rng)
    snap = Snapshot.build(load_manifests(bench_engine.manifests(specs)))
    assert sum(s.hostname is None for s in specs) == 5
    seen: set[tuple[str, str]] = set()
    for req in reqs:
        d = decide(snap, req)
        assert d.outcome in ("allowed", "forbidden"), d
        family = "tls" if isinstance(req, TlsConnection) else "http"
        assert d.route is not None
        if d.route.kind == "default":
            seen.add((family, d.route.name))
            continue
        idx = int(d.route.name.split("-")[1])
        hostname = specs[idx].hostname
        kind = "nohost" if hostname is None else "wild" if hostname[0] == "*" else "exact"
        seen.add((family, kind))
    assert {
        ("http", "exact"),
        ("http", "wild"),
        ("http", "nohost"),
        ("http", "http-egress-deny"),
        ("tls", "exact"),
        ("tls", "wild"),
        ("tls", "tls-egress-deny"),
    } <= seen
    assert all(isinstance(r, HttpRequest | TlsConnection) for r in reqs)


@pytest.mark.parametrize(
    ("sizes", "expected"),
    [
        pytest.param(
            {10: 500_000, 1_000: 250_000, 10_000: 200_000},
            ["met", "NOT met"],
            id="fast-but-grows",
        ),
        pytest.param(
            {10: 100_000, 1_000: 100_000, 10_000: 100_000},
            ["NOT met", "met"],
            id="flat-but-slow",
        ),
    ],
)
def test_summary_judges_both_targets(sizes: dict[int, int], expected: list[str]) -> None:
    smallest = sizes[10]
    rows = [
        {"routes": n, "best_dps": v, "slowdown": round(smallest / v, 2)} for n, v in sizes.items()
    ]
    lines = bench_engine.summarize(rows)
    assert [line.rsplit(": ", 1)[1] for line in lines] == expected


def test_summary_gives_no_verdict_on_a_quick_run() -> None:
    rows = [
        {"routes": 10, "best_dps": 10, "slowdown": 1.0},
        {"routes": 100, "best_dps": 5, "slowdown": 2.0},
    ]
    assert bench_engine.summarize(rows) == ["100 routes vs 10: 2.0x slower"]


# ====================================================================== report


ROWS: list[dict[str, Any]] = [
    {"routes": 10, "best_dps": 52383, "vs_baseline": 0.0042, "ok": True, "note": "a|b"},
    {"routes": 10000, "best_dps": 7263.4, "vs_baseline": 0.00043, "ok": False},
]


@pytest.mark.parametrize(
    ("value", "text"),
    [
        pytest.param(1234567, "1,234,567", id="int"),
        pytest.param(7263.4, "7,263", id="big-float"),
        pytest.param(0.000432, "0.000432", id="small-float"),
        pytest.param(19.0912, "19.09", id="float"),
        pytest.param(True, "yes", id="bool"),
        pytest.param(None, "", id="none"),
        pytest.param("x", "x", id="str"),
    ],
)
def test_cell(value: object, text: str) -> None:
    assert report.cell(value) == text


def test_text_table_aligns_columns_and_right_aligns_numbers() -> None:
    out = report.text_table(ROWS, title="T").splitlines()
    assert out[0] == "T"
    assert out[1].split() == ["routes", "best_dps", "vs_baseline", "ok", "note"]
    assert set(out[2]) == {"-", " "}
    assert out[3].split() == ["10", "52,383", "0.0042", "yes", "a|b"]
    assert out[4].split() == ["10,000", "7,263", "0.00043", "no"]
    # numbers right-aligned: the routes column ends at the same place on both rows
    assert out[3].index("10 ") + 2 == out[4].index("10,000") + 6


def test_markdown_table_escapes_pipes_and_fills_missing_cells() -> None:
    lines = report.markdown_table(ROWS).splitlines()
    assert lines[0] == "| routes | best_dps | vs_baseline | ok | note |"
    assert lines[1] == "|---:|---:|---:|---|---|"
    assert lines[2] == "| 10 | 52,383 | 0.0042 | yes | a\\|b |"
    assert lines[3] == "| 10,000 | 7,263 | 0.00043 | no |  |"


def test_empty_tables_say_so() -> None:
    assert report.text_table([]) == "(no rows)"
    assert report.markdown_table([]) == "_(no rows)_"


def test_cpu_model_is_read_from_cpuinfo(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Test CPU @ 2.0GHz\n")
    assert report.cpu_model(info) == "Test CPU @ 2.0GHz"
    assert report.cpu_model(tmp_path / "missing")  # falls back, never empty


def test_machine_facts_and_readme() -> None:
    facts = report.machine_facts(dt.datetime(2025, 1, 2, 3, 4, tzinfo=dt.UTC))
    assert set(facts) == {"cpu", "cores", "python", "platform", "date"}
    assert facts["date"] == "2025-01-02 03:04 UTC"
    good = {"name": "engine", "title": "Engine", "quick": True, "rows": ROWS, "notes": ["n1"]}
    bad = {"name": "broken", "title": "Broken", "error": "Traceback...\nValueError: boom"}
    text = report.readme([good, bad], facts)
    assert "| cpu | " + facts["cpu"] + " |" in text
    assert "## Engine (`engine`)" in text and "quick run" in text
    assert report.markdown_table(ROWS) in text
    assert "- n1" in text
    assert "## Broken (`broken`)" in text and "**FAILED**" in text and "ValueError: boom" in text


# ============================================================== python -m benchmarks


def _module(name: str, **attrs: Any) -> ModuleType:
    mod = ModuleType(name, f"{name} doc line\n\nmore")
    for key, value in attrs.items():
        setattr(mod, key, value)
    return mod


def test_discover_finds_bench_modules() -> None:
    assert "engine" in cli.discover()


def test_run_module_passes_quick_only_to_runs_that_take_it() -> None:
    seen: list[bool] = []

    def with_quick(*, quick: bool = False) -> list[dict[str, Any]]:
        seen.append(quick)
        return [{"x": 1}]

    def plain() -> list[dict[str, Any]]:
        return [{"y": 2}]

    a = cli.run_module("a", _module("a", run=with_quick), quick=True)
    b = cli.run_module("b", _module("b", run=plain, TITLE="Bee"), quick=True)
    assert a is not None and b is not None
    assert (a.rows, a.title, seen) == ([{"x": 1}], "a doc line", [True])
    assert (b.rows, b.title, b.error) == ([{"y": 2}], "Bee", None)


@pytest.mark.parametrize(
    ("run", "needle"),
    [
        pytest.param(lambda: 1 / 0, "ZeroDivisionError", id="raises"),
        pytest.param(lambda: {"x": 1}, "expected a list of dicts, found dict", id="not-a-list"),
    ],
)
def test_run_module_reports_failures(run: Any, needle: str) -> None:
    outcome = cli.run_module("bad", _module("bad", run=run), quick=False)
    assert outcome is not None and outcome.error is not None
    assert needle in outcome.error and outcome.rows == []


def test_module_without_run_is_not_a_benchmark() -> None:
    assert cli.run_module("helper", _module("helper"), quick=False) is None


def test_import_failure_is_reported() -> None:
    outcome = cli.run_named("does_not_exist", quick=True)
    assert outcome is not None and outcome.error is not None
    assert "ModuleNotFoundError" in outcome.error


def test_write_results_keeps_other_sections(tmp_path: Path) -> None:
    facts = {"cpu": "c", "cores": "2", "python": "p", "platform": "x", "date": "d"}
    old = cli.Outcome(name="older", title="Older", rows=[{"k": 1}])
    cli.write_results([old], tmp_path, quick=False, machine=facts)
    new = cli.Outcome(name="engine", title="Engine", rows=[{"routes": 10}], notes=["ok"])
    failed = cli.Outcome(name="broken", title="Broken", error="Traceback: boom")
    readme = cli.write_results([new, failed], tmp_path, quick=True, machine=facts)
    data = json.loads((tmp_path / "engine.json").read_text())
    assert data["rows"] == [{"routes": 10}] and data["quick"] is True and data["error"] is None
    assert json.loads((tmp_path / "broken.json").read_text())["error"] == "Traceback: boom"
    text = readme.read_text()
    assert text.index("(`broken`)") < text.index("(`engine`)") < text.index("(`older`)")


def test_main_runs_engine_quick_and_rejects_unknown_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["--only", "nope", "--out", str(tmp_path)]) == 2
    assert "found nope" in capsys.readouterr().err
    assert cli.main(["--only", "bench_engine", "--quick", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "best_dps" in out
    assert [p.name for p in sorted(tmp_path.iterdir())] == ["README.md", "engine.json"]
