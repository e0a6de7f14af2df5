"""``python -m benchmarks``: run every ``benchmarks/bench_*.py`` and write the results.

Rules:

* A benchmark is a module ``benchmarks/bench_<name>.py`` with ``run() -> list[dict]``; its
  name is ``<name>``. ``run`` may take a keyword ``quick`` (smaller sizes for a smoke run);
  it gets ``quick=True`` under ``--quick``. Optional module attributes: ``TITLE`` (else the
  docstring's first line) and ``summarize(rows) -> list[str]`` (verdict lines).
* Modules run one after another in name order, in this process. A module that fails to
  import, raises, or returns something other than a list of dicts is reported with its
  traceback and the others still run; the exit status is 1 if any failed.
* Each result goes to ``results/<name>.json`` (a failure too, with its error), and
  ``results/README.md`` is rewritten from every ``results/*.json`` present, so
  ``--only NAME`` refreshes one section and keeps the others.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from benchmarks import report

HERE = Path(__file__).resolve().parent
PREFIX = "bench_"


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """What one benchmark module produced."""

    name: str
    title: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0


def discover(directory: Path = HERE) -> list[str]:
    """Benchmark names (``bench_<name>.py`` -> ``<name>``), sorted."""
    return sorted(p.stem[len(PREFIX) :] for p in directory.glob(f"{PREFIX}*.py"))


def _title(module: ModuleType, name: str) -> str:
    title = getattr(module, "TITLE", None)
    if isinstance(title, str) and title:
        return title
    doc = (module.__doc__ or "").strip()
    return doc.splitlines()[0] if doc else name


def _call(run: Callable[..., object], quick: bool) -> object:
    try:
        params = list(inspect.signature(run).parameters.values())
    except (TypeError, ValueError):  # a callable without a signature: call it plainly
        params = []
    takes_quick = any(p.name == "quick" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
    return run(quick=quick) if takes_quick else run()


def _rows(name: str, value: object) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(r, dict) for r in value):
        raise TypeError(
            f"benchmarks/{PREFIX}{name}.py: run(): expected a list of dicts, "
            f"found {type(value).__name__}"
        )
    return value


def run_module(name: str, module: ModuleType, *, quick: bool) -> Outcome | None:
    """Run one imported module; None when it has no ``run`` (not a benchmark)."""
    run = getattr(module, "run", None)
    if not callable(run):
        return None
    title = _title(module, name)
    start = time.perf_counter()
    try:
        rows = _rows(name, _call(run, quick))
        summarize = getattr(module, "summarize", None)
        notes = [str(n) for n in summarize(rows)] if callable(summarize) else []
    except Exception:
        # Any failure of one benchmark is reported and must not stop the others.
        return Outcome(
            name=name,
            title=title,
            error=traceback.format_exc(),
            seconds=time.perf_counter() - start,
        )
    return Outcome(
        name=name, title=title, rows=rows, notes=notes, seconds=time.perf_counter() - start
    )


def run_named(name: str, *, quick: bool, package: str = "benchmarks") -> Outcome | None:
    try:
        module = importlib.import_module(f"{package}.{PREFIX}{name}")
    except Exception:
        return Outcome(name=name, title=name, error=traceback.format_exc())
    return run_module(name, module, quick=quick)


def to_json(outcome: Outcome, *, quick: bool, machine: dict[str, str]) -> dict[str, Any]:
    return {
        "name": outcome.name,
        "title": outcome.title,
        "quick": quick,
        "machine": machine,
        "seconds": round(outcome.seconds, 2),
        "rows": outcome.rows,
        "notes": outcome.notes,
        "error": outcome.error,
    }


def write_results(
    outcomes: Sequence[Outcome], out_dir: Path, *, quick: bool, machine: dict[str, str]
) -> Path:
    """Write each ``<name>.json``, then ``README.md`` from every JSON in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for outcome in outcomes:
        data = to_json(outcome, quick=quick, machine=machine)
        path = out_dir / f"{outcome.name}.json"
        # default=str: a row value JSON cannot hold (a Path, a Decimal) is kept as text.
        path.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    results = []
    for path in sorted(out_dir.glob("*.json")):
        try:
            results.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError) as exc:
            results.append({"name": path.stem, "error": f"{path}: unreadable: {exc}"})
    readme = out_dir / "README.md"
    readme.write_text(report.readme(results, machine), encoding="utf-8")
    return readme


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument(
        "--only",
        metavar="NAME",
        action="append",
        help="run only this benchmark (engine or bench_engine); repeatable",
    )
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    parser.add_argument(
        "--out", type=Path, default=HERE / "results", help="results directory (%(default)s)"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    names = discover()
    if args.only:
        wanted = [n.removeprefix(PREFIX).removesuffix(".py") for n in args.only]
        unknown = [n for n in wanted if n not in names]
        if unknown:
            print(
                f"--only: expected one of {', '.join(names) or '(none)'}, "
                f"found {', '.join(unknown)}",
                file=sys.stderr,
            )
            return 2
        names = [n for n in names if n in wanted]
    machine = report.machine_facts()
    print(" | ".join(f"{k}: {v}" for k, v in machine.items()), flush=True)
    outcomes = []
    for name in names:
        print(f"\n== {name} ...", flush=True)
        outcome = run_named(name, quick=args.quick)
        if outcome is None:
            print(f"   skipped: benchmarks/{PREFIX}{name}.py has no run()")
            continue
        outcomes.append(outcome)
        if outcome.error:
            print(f"   FAILED after {outcome.seconds:.1f} s:\n{outcome.error}", flush=True)
            continue
        print(report.text_table(outcome.rows, title=f"{outcome.title} ({outcome.seconds:.1f} s)"))
        for note in outcome.notes:
            print(f"   {note}")
    readme = write_results(outcomes, args.out, quick=args.quick, machine=machine)
    failed = [o.name for o in outcomes if o.error]
    print(f"\nresults: {readme}")
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
