"""Benchmark tables as plain text (for the terminal) and markdown (for results/README.md).

Rules:

* A table is a list of row dicts; its columns are every key in order of first appearance,
  and a row without a column shows an empty cell.
* Numbers are right-aligned and rendered for reading: integers and floats of 1,000 or more
  with thousands separators, other floats with up to four significant digits; booleans as
  yes/no; None as an empty cell.
* Markdown cells escape ``|`` so a value cannot break the table.
* The README carries the machine facts (CPU model from /proc/cpuinfo, cores, Python, date)
  so numbers are never read without knowing where they came from.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

Row = Mapping[str, Any]

CPUINFO = Path("/proc/cpuinfo")


def columns(rows: Sequence[Row]) -> list[str]:
    """Every key of every row, in order of first appearance."""
    seen: dict[str, None] = {}
    for row in rows:
        for key in row:
            seen.setdefault(key, None)
    return list(seen)


def cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.4g}"
    return str(value)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _grid(rows: Sequence[Row]) -> tuple[list[str], list[list[str]], list[bool]]:
    cols = columns(rows)
    body = [[cell(row.get(c)) for c in cols] for row in rows]
    numeric = [any(_is_number(row.get(c)) for row in rows) for c in cols]
    return cols, body, numeric


def text_table(rows: Sequence[Row], *, title: str | None = None) -> str:
    """An aligned plain-text table (numbers right-aligned), with an optional title line."""
    lines = [title] if title else []
    if not rows:
        lines.append("(no rows)")
        return "\n".join(lines)
    cols, body, numeric = _grid(rows)
    widths = [max(len(c), *(len(r[i]) for r in body)) for i, c in enumerate(cols)]

    def fmt(values: Sequence[str]) -> str:
        parts = [
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ]
        return "  ".join(parts).rstrip()

    lines.append(fmt(cols))
    lines.append("  ".join("-" * w for w in widths))
    lines.extend(fmt(r) for r in body)
    return "\n".join(lines)


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: Sequence[Row]) -> str:
    """A GitHub-flavoured markdown table; numeric columns are right-aligned."""
    if not rows:
        return "_(no rows)_"
    cols, body, numeric = _grid(rows)
    lines = [
        "| " + " | ".join(_md(c) for c in cols) + " |",
        "|" + "|".join("---:" if num else "---" for num in numeric) + "|",
    ]
    lines.extend("| " + " | ".join(_md(v) for v in r) + " |" for r in body)
    return "\n".join(lines)


# ================================================================ machine facts


def cpu_model(cpuinfo: Path = CPUINFO) -> str:
    """The ``model name`` of the first CPU in /proc/cpuinfo, else what platform knows."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "model name":
            return value.strip()
    return platform.processor() or platform.machine() or "unknown"


def machine_facts(now: dt.datetime | None = None) -> dict[str, str]:
    """Where and when the numbers were taken."""
    when = now or dt.datetime.now(dt.UTC)
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    cores = str(os.cpu_count() or "unknown")
    if usable is not None and str(usable) != cores:
        cores += f" ({usable} usable)"
    return {
        "cpu": cpu_model(),
        "cores": cores,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
        "date": when.strftime("%Y-%m-%d %H:%M UTC"),
    }


# ======================================================================= README


def result_section(result: Mapping[str, Any]) -> str:
    """One benchmark's part of the README, from its ``results/<name>.json`` content."""
    name = str(result.get("name", "?"))
    title = str(result.get("title") or name)
    lines = [f"## {_md(title)} (`{name}`)", ""]
    machine = result.get("machine") or {}
    meta = [f"run {machine.get('date', '?')}"]
    if result.get("quick"):
        meta.append("**quick run (smaller sizes; not for comparison)**")
    if result.get("seconds") is not None:
        meta.append(f"took {cell(result['seconds'])} s")
    lines += ["_" + ", ".join(meta) + "_", ""]
    if result.get("error"):
        lines += ["**FAILED**:", "", "```", str(result["error"]).rstrip(), "```"]
        return "\n".join(lines)
    lines.append(markdown_table(result.get("rows") or []))
    notes = result.get("notes") or []
    if notes:
        lines.append("")
        lines.extend(f"- {_md(str(n))}" for n in notes)
    return "\n".join(lines)


def readme(results: Sequence[Mapping[str, Any]], facts: Mapping[str, str]) -> str:
    """The combined ``results/README.md``: machine facts, then one section per benchmark."""
    lines = [
        "# Benchmark results",
        "",
        "Written by `python -m benchmarks` (`make bench`); each section also has its",
        "`<name>.json`. Sections from earlier runs keep their own date.",
        "",
        "| machine | |",
        "|---|---|",
    ]
    lines.extend(f"| {_md(k)} | {_md(v)} |" for k, v in facts.items())
    for result in results:
        lines += ["", result_section(result)]
    return "\n".join(lines) + "\n"
