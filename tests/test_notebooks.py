"""The notebooks as integration tests: papermill runs each on the local backend, the
report renders in headless Chromium. (nbval checks the committed notebooks themselves:
pytest collects notebooks/*.ipynb with --nbval.)"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from egresskit.runner import notebooks, run_all

# The module's fixture runs all seven notebooks (about 50 s here, CPU-bound) inside the
# first test's time, which the suite's 120 s per test would make a race on a loaded machine.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def run_out(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, Path, str]:
    out = tmp_path_factory.mktemp("run")
    log = out / "log.txt"
    with log.open("w") as stream:
        code = run_all(backend="local", out=out, stream=stream)
    return code, out, log.read_text()


def test_every_notebook_runs_and_every_check_passes(run_out: tuple[int, Path, str]) -> None:
    code, out, log = run_out
    assert code == 0, log
    for nb in notebooks():
        executed = out / nb.name
        assert executed.exists(), f"{nb.name} was not executed"
        cells = json.loads(executed.read_text())["cells"]
        verify = [c for c in cells if "verify" in c["metadata"].get("tags", [])]
        assert verify, f"{nb.name} has no verify cells"
        for cell in verify:
            text = "".join("".join(o.get("text", "")) for o in cell["outputs"])
            assert text.startswith("PASS "), (nb.name, cell["source"], text)


def test_charts_are_written_as_png_and_svg(run_out: tuple[int, Path, str]) -> None:
    _, out, _ = run_out
    pngs = sorted((out / "charts").glob("*.png"))
    assert {p.stem for p in pngs} >= {"01-visualizing", "02-restricting", "03-redirecting"}
    for p in pngs:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        svg = p.with_suffix(".svg")
        if svg.exists():
            assert "<svg" in svg.read_text()[:500]


def test_summary_names_steps_and_writes_the_report(run_out: tuple[int, Path, str]) -> None:
    _, out, log = run_out
    assert "PASS curl http://httpbin.org/get: HTTP status: expected 200, saw 200" in log
    assert (out / "report.html").exists()


def test_a_failing_check_fails_the_run_and_names_the_cell(tmp_path: Path) -> None:
    import egresskit.runner as runner

    bad = tmp_path / "nb"
    bad.mkdir()
    src = json.loads((runner.NOTEBOOKS / "01-visualizing-egress-traffic.ipynb").read_text())
    for cell in src["cells"]:
        if "verify" in cell["metadata"].get("tags", []) and "httpbin.org/get" in "".join(
            cell["source"]
        ):
            cell["source"] = "".join(cell["source"]).replace("status=200", "status=418")
            cell["outputs"] = []
    (bad / "01-broken.ipynb").write_text(json.dumps(src))
    old = runner.NOTEBOOKS
    runner.NOTEBOOKS = bad
    try:
        log = tmp_path / "log.txt"
        with log.open("w") as stream:
            code = run_all(backend="local", out=tmp_path / "out", stream=stream)
    finally:
        runner.NOTEBOOKS = old
    text = log.read_text()
    assert code == 1
    assert "FAILED: 01-broken, cell" in text
    assert "FAIL curl http://httpbin.org/get: HTTP status: expected 418, saw 200" in text
    # The notebook shows the FAIL line and its hint, not a traceback.
    executed = json.loads((tmp_path / "out" / "01-broken.ipynb").read_text())
    (error,) = [
        o for c in executed["cells"] for o in c.get("outputs", []) if o["output_type"] == "error"
    ]
    assert error["ename"] == "VerificationFailed"
    assert error["traceback"][0] == (
        "FAIL curl http://httpbin.org/get: HTTP status: expected 418, saw 200"
    )
    assert error["traceback"][1].startswith("  hint: with the objects in force, Linkerd gives")
    assert len(error["traceback"]) == 2


def test_egresskit_run_prints_no_kernel_warnings_and_whole_pass_lines(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "egresskit.cli", "run", "--only", "04-", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "WARNING" not in done.stderr and "TCP" not in done.stderr, done.stderr
    # The longest PASS line of notebook 4, whole (the summary used to cut at 70 characters).
    assert (
        "PASS meshed client vs unmeshed pod under Deny: expected {'client': 403, 'bypass': 200}, "
        "saw {'client': 403, 'bypass': 200}"
    ) in done.stdout


@pytest.mark.skipif(
    shutil.which("chromium") is None,
    reason="Debian package chromium not installed (make test installs it)",
)
def test_report_renders_charts_in_headless_chromium(
    run_out: tuple[int, Path, str], tmp_path: Path
) -> None:
    from PIL import Image

    _, out, _ = run_out
    shot = tmp_path / "report.png"
    subprocess.run(
        [
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--window-size=1200,1600",
            f"--screenshot={shot}",
            (out / "report.html").as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    image = Image.open(shot).convert("RGB")
    colours = image.getcolors(maxcolors=1 << 20) or []
    # A blank page has one colour; the charts' green/red/purple bars add many.
    assert len(colours) > 50, f"screenshot looks blank: {len(colours)} colours"
    greens = sum(n for n, (r, g, b) in colours if g > 100 and r < 80 and b < 100)
    assert greens > 100, "no allowed (green) bars visible in the rendered report"


@pytest.mark.parametrize(
    "hang",
    [
        "import threading\nthreading.Event().wait()  # never set",
        # What a traffic cell does with Ctrl-C: it answers with its own one-line error.
        "import threading\ntry:\n    threading.Event().wait()  # never set\n"
        "except KeyboardInterrupt:\n    raise RuntimeError('stopped') from None",
    ],
    ids=["plain", "turns-the-interrupt-into-its-own-error"],
)
def test_a_cell_that_hangs_is_stopped_at_its_bound_and_named(tmp_path: Path, hang: str) -> None:
    import nbformat

    from egresskit.runner import KERNELSPEC, run_one

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = KERNELSPEC
    check = nbformat.v4.new_code_cell("print('PASS never reached')")
    check.metadata["tags"] = ["verify"]
    nb.cells = [
        nbformat.v4.new_code_cell("backend = 'local'"),
        nbformat.v4.new_code_cell(hang),
        check,
    ]
    path = tmp_path / "01-hangs.ipynb"
    nbformat.write(nb, path)
    result = run_one(path, backend="local", context=None, out=tmp_path, cell_timeout=2)
    assert not result.ok
    assert result.error == "CellTimeoutError: the cell ran over 2s and was stopped"
    executed = json.loads((tmp_path / "01-hangs.ipynb").read_text())["cells"]
    (hung,) = [c for c in executed if "never set" in "".join(c["source"])]
    # Named as a failing check's cell is: by its execution count (papermill's injected
    # parameters cell counts too).
    assert result.failed_cell == hung["execution_count"] is not None
    assert executed[-1]["outputs"] == []  # Run All stopped there
    (step,) = result.steps
    assert not step.ok and step.name == "(not run: an earlier cell failed)"
