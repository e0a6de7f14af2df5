"""``egresskit run``: execute every notebook with papermill, then summarise and report.

Each notebook in ``notebooks/`` runs on the chosen backend into ``OUT/`` with its
parameters (backend, context, output folder); papermill records each cell's duration.
Notebooks declare the ``egresskit`` kernel (what ``make lab`` registers); here that name
maps to this very Python (:class:`EgressKitKernel`), so a fresh clone needs no kernel
registered, and a kernel registered by another clone is never picked up. The kernel talks
over IPC sockets, not TCP (no "running over TCP without encryption" warning). The
summary lists every notebook and every verify step (cells tagged ``verify``) with its
result and duration, in the terminal and as ``OUT/report.html`` (charts embedded as
images, so it renders offline). Exits non-zero when a check fails, naming the notebook
and the cell.
"""

from __future__ import annotations

import html
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from egresskit import versions

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
#: The kernel name the notebooks declare and ``make lab`` registers.
KERNEL_NAME = "egresskit"
#: The ``kernelspec`` every notebook builder writes (notebooks/build*.py).
KERNELSPEC = {"name": KERNEL_NAME, "display_name": "egresskit", "language": "python"}


def kernel_manager() -> type[Any]:
    """A jupyter_client kernel manager whose ``egresskit`` kernel is this Python, over IPC.

    Built on first use: jupyter_client is imported only when notebooks run.
    """
    from jupyter_client.kernelspec import KernelSpec
    from jupyter_client.manager import AsyncKernelManager

    class EgressKitKernel(AsyncKernelManager):
        # ipykernel warns on stderr when the transport is TCP without CurveZMQ keys
        # (ipykernel/kernelapp.py, init_sockets); local IPC sockets need neither.
        transport = "ipc"

        @property
        def kernel_spec(self) -> KernelSpec:
            return KernelSpec(
                argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                display_name="egresskit",
                language="python",
                name=KERNEL_NAME,
            )

    return EgressKitKernel


@dataclass(kw_only=True)
class StepResult:
    notebook: str
    cell: int
    name: str
    ok: bool
    seconds: float
    output: str


@dataclass(kw_only=True)
class NotebookResult:
    name: str
    ok: bool
    seconds: float
    error: str = ""
    failed_cell: int | None = None
    steps: list[StepResult] = field(default_factory=list)


def notebooks(only: str | None = None) -> list[Path]:
    found = sorted(NOTEBOOKS.glob("[0-9]*.ipynb"))
    return [p for p in found if only is None or only in p.name]


def run_all(
    *,
    backend: str = "local",
    context: str | None = None,
    out: Path = Path("out"),
    only: str | None = None,
    stream: Any = sys.stdout,
) -> int:
    out = out.resolve()
    (out / "charts").mkdir(parents=True, exist_ok=True)
    paths = notebooks(only)
    if not paths:
        print(f"egresskit run: no notebooks matching {only!r} in {NOTEBOOKS}", file=stream)
        return 1
    results = []
    started = time.monotonic()
    for i, path in enumerate(paths, 1):
        print(f"[{i}/{len(paths)}] {path.stem} ...", end="", flush=True, file=stream)
        result = run_one(path, backend=backend, context=context, out=out)
        results.append(result)
        verdict = "ok" if result.ok else f"FAILED at cell {result.failed_cell}"
        print(f" {verdict} ({result.seconds:.1f}s)", file=stream)
    total = time.monotonic() - started
    print(summary_table(results, total), file=stream)
    write_report(results, out, total)
    print(f"executed notebooks, charts and report.html in {out}", file=stream)
    failed = [r for r in results if not r.ok]
    for r in failed:
        print(f"FAILED: {r.name}, cell {r.failed_cell}: {r.error}", file=stream)
    return 1 if failed else 0


def run_one(
    path: Path,
    *,
    backend: str,
    context: str | None,
    out: Path,
    cell_timeout: float = versions.CELL_TIMEOUT,
) -> NotebookResult:
    import papermill
    from nbclient.exceptions import CellTimeoutError
    from papermill.exceptions import PapermillExecutionError

    target = out / path.name
    params = {"backend": backend, "kube_context": context, "output_dir": str(out)}
    started = time.monotonic()
    error = ""
    failed_cell = None
    try:
        papermill.execute_notebook(
            str(path),
            str(target),
            parameters=params,
            kernel_name=KERNEL_NAME,
            kernel_manager_class=kernel_manager(),
            progress_bar=False,
            cwd=str(path.parent),
            # Whole seconds, at least 1: papermill reads 0 as "no bound".
            execution_timeout=max(1, math.ceil(cell_timeout)),
        )
    except PapermillExecutionError as exc:
        error = f"{exc.ename}: {exc.evalue}"
        failed_cell = int(exc.exec_count) if exc.exec_count is not None else None
    except CellTimeoutError:
        # nbclient gave up on the cell and papermill saved the notebook as far as it ran; the
        # kernel is shut down (what the cell prints then varies: it may catch the interrupt).
        error = f"CellTimeoutError: the cell ran over {cell_timeout:g}s and was stopped"
        failed_cell = last_started_cell(target)
    seconds = time.monotonic() - started
    steps = verify_steps(target) if target.exists() else []
    return NotebookResult(
        name=path.stem,
        ok=not error,
        seconds=seconds,
        error=error,
        failed_cell=failed_cell,
        steps=steps,
    )


def last_started_cell(executed: Path) -> int | None:
    """The execution count of the last cell papermill started (its ``start_time``), in a
    notebook it saved when a run stopped: the cell that was running."""
    if not executed.exists():
        return None
    started = [
        cell
        for cell in json.loads(executed.read_text())["cells"]
        if cell.get("metadata", {}).get("papermill", {}).get("start_time")
    ]
    count = started[-1].get("execution_count") if started else None
    return int(count) if count is not None else None


def verify_steps(executed: Path) -> list[StepResult]:
    """The verify cells of an executed notebook, with results and papermill's durations."""
    nb = json.loads(executed.read_text())
    steps = []
    for idx, cell in enumerate(nb.get("cells", [])):
        if "verify" not in cell.get("metadata", {}).get("tags", []):
            continue
        text = "".join(
            "".join(o.get("text", "")) for o in cell.get("outputs", []) if o.get("name") == "stdout"
        )
        failed = any(o.get("output_type") == "error" for o in cell.get("outputs", []))
        pm = cell.get("metadata", {}).get("papermill", {})
        # A check that never ran (an earlier cell failed) passed nothing.
        ran = bool(cell.get("outputs")) or cell.get("execution_count") is not None
        first = text.strip().splitlines()[0] if text.strip() else "(no output)"
        if not ran:
            first, failed = "(not run: an earlier cell failed)", True
        steps.append(
            StepResult(
                notebook=executed.stem,
                cell=idx,
                name=first,
                # A verify line starts with its verdict; "FAILED_PRECONDITION" inside a PASS
                # line (a gRPC status the check expected) is not a failure.
                ok=not failed and not any(ln.startswith("FAIL") for ln in text.splitlines()),
                seconds=float(pm.get("duration") or 0.0),
                output=text,
            )
        )
    return steps


def summary_table(results: list[NotebookResult], total: float) -> str:
    """Result and seconds first, then the notebook or the step's whole line (never cut:
    a PASS line is the evidence; a terminal wraps it)."""
    lines = [f"{'result':<6} {'seconds':>8}  notebook / step", "-" * 88]
    for r in results:
        lines.append(f"{'ok' if r.ok else 'FAIL':<6} {r.seconds:>8.1f}  {r.name}")
        for s in r.steps:
            lines.append(f"{'pass' if s.ok else 'FAIL':<6} {s.seconds:>8.2f}    {s.name}")
    lines.append("-" * 88)
    lines.append(f"{'':<6} {total:>8.1f}  total")
    return "\n".join(lines)


def write_report(results: list[NotebookResult], out: Path, total: float) -> Path:
    rows = []
    for r in results:
        colour = "#1a7f37" if r.ok else "#cf222e"
        rows.append(
            f"<tr><th colspan=2 style='text-align:left'>{html.escape(r.name)}</th>"
            f"<td style='color:{colour}'>{'ok' if r.ok else 'FAILED'}</td>"
            f"<td>{r.seconds:.1f}s</td></tr>"
        )
        for s in r.steps:
            c = "#1a7f37" if s.ok else "#cf222e"
            verdict = "pass" if s.ok else "FAIL"
            rows.append(
                f"<tr><td></td><td>{html.escape(s.name)}</td>"
                f"<td style='color:{c}'>{verdict}</td><td>{s.seconds:.2f}s</td></tr>"
            )
    charts = "".join(
        f"<figure><img src='charts/{p.name}' alt='{html.escape(p.stem)}'>"
        f"<figcaption>{html.escape(p.stem)}</figcaption></figure>"
        for p in sorted((out / "charts").glob("*.png"))
    )
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>egresskit report</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{padding:2px 8px}"
        "img{max-width:100%;border:1px solid #ddd}</style></head><body>"
        f"<h1>egresskit: the guide, run</h1><p>total {total:.1f}s</p>"
        f"<table>{''.join(rows)}</table><h2>Charts</h2>{charts}</body></html>"
    )
    path = out / "report.html"
    path.write_text(page)
    return path


def refresh(only: str | None = None, stream: Any = sys.stdout) -> int:
    """Execute the notebooks in place with their default parameters, so the committed
    copies carry their outputs (charts as images) and nbval has something to compare."""
    import papermill

    from egresskit.nbclean import clean_file

    for path in notebooks(only):
        print(f"refreshing {path.name} ...", file=stream, flush=True)
        papermill.execute_notebook(
            str(path),
            str(path),
            kernel_name=KERNEL_NAME,
            kernel_manager_class=kernel_manager(),
            progress_bar=False,
            cwd=str(path.parent),
        )
        clean_file(path)  # committed copies carry no paths or timestamps of this machine
    return 0


if __name__ == "__main__":
    sys.exit(refresh(sys.argv[1] if len(sys.argv) > 1 else None))
