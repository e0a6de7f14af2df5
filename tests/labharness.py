"""JupyterLab in headless Chromium, for tests that use the notebooks as a learner does.

Job: start a throw-away JupyterLab server on a copy of the notebooks (loopback, a free port,
a token, its own config/data/runtime/HOME directories and an ``egresskit`` kernelspec for
this interpreter), and, on a page of Debian's ``chromium`` (:mod:`tests.cdp`), read what
JupyterLab renders: each cell's prompt, output text and output kinds.

Rules:

* Nothing outside the temporary directory is read or written: the user's ``~/.jupyter``,
  ``~/.ipython`` and kernelspecs stay untouched.
* Every wait is bounded and says what it waited for; everything started is torn down, the
  server through its own ``/api/shutdown`` (which shuts its kernels down) and then by signal.
* Cells are read from the DOM, in DOM order, which is the notebook's cell order because the
  notebook is rendered without windowing (see ``_USER_SETTINGS``).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.cdp import CHROMIUM, Page

#: The marks of a test module that drives JupyterLab in Chromium: slow, and skipped (with
#: the reason) where Debian's chromium is missing.
BROWSER_MARKS = [
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which(CHROMIUM) is None,
        reason="Debian package chromium not installed (make test installs it)",
    ),
]


def artifacts_dir(name: str) -> Path:
    """An empty directory for a browser test's screenshots: ``out/test-artifacts/NAME``,
    or under ``$EGRESSKIT_TEST_ARTIFACTS``. Emptied first, so no screenshot from an earlier
    run stays behind."""
    root = Path(__file__).resolve().parent.parent
    path = Path(os.environ.get("EGRESSKIT_TEST_ARTIFACTS", root / "out" / "test-artifacts"))
    path = path / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


KERNEL_NAME = "egresskit"  # what `make lab` registers and the notebooks declare

# JupyterLab user settings: every cell stays in the DOM (JupyterLab 4 may otherwise detach
# cells scrolled out of view: "windowingMode"), and no news or update check pops a toast
# over the notebook (both would fetch from the internet).
_USER_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
}

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """A bounded wait ran out; the message says what was awaited and for how long."""


def wait_for(probe: Callable[[], T | None], *, what: str, timeout: float, every: float = 0.05) -> T:
    """Call ``probe`` until it returns something other than None/False; at most ``timeout``
    seconds, then :class:`WaitTimeout` naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        got = probe()
        if got is not None and got is not False:
            return got
        if time.monotonic() >= deadline:
            raise WaitTimeout(f"waited {timeout:.0f} s for {what}; it did not happen")
        time.sleep(every)


def free_port() -> int:
    """A port free on 127.0.0.1 right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class LabServer:
    """A running JupyterLab: its base URL, token, notebook root and log file."""

    url: str
    token: str
    root_dir: Path
    log: Path

    def api(self, path: str, method: str = "GET") -> Any:
        """One call to the Jupyter server's REST API, the JSON answer or None."""
        request = urllib.request.Request(
            f"{self.url}{path}",
            method=method,
            headers={"Authorization": f"token {self.token}"},
            data=b"" if method == "POST" else None,
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
        return json.loads(body) if body else None

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def _lab_environment(home: Path) -> dict[str, str]:
    """Environment for the server and its kernels: every Jupyter/IPython directory inside
    ``home``; the interpreter's own data path (lab extensions) stays visible."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "IPYTHON"))}
    env.update(
        HOME=str(home),
        JUPYTER_CONFIG_DIR=str(home / "config"),
        JUPYTER_DATA_DIR=str(home / "data"),
        JUPYTER_RUNTIME_DIR=str(home / "runtime"),
        JUPYTERLAB_SETTINGS_DIR=str(home / "config" / "lab" / "user-settings"),
        JUPYTERLAB_WORKSPACES_DIR=str(home / "config" / "lab" / "workspaces"),
        IPYTHONDIR=str(home / "ipython"),
    )
    return env


@contextlib.contextmanager
def jupyterlab(
    work: Path, notebooks: Path, *, start_timeout: float = 60.0, kernel_name: str = KERNEL_NAME
) -> Iterator[LabServer]:
    """JupyterLab serving a copy of ``notebooks`` (placed at ``work/notebooks``, so the
    notebooks' ``../out`` lands in ``work/out``), with ``kernel_name`` registered for this
    interpreter as ``make lab`` does. Shut down on exit, kernels first."""
    home = work / "home"
    root = work / "notebooks"
    shutil.copytree(notebooks, root, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    env = _lab_environment(home)
    settings = Path(env["JUPYTERLAB_SETTINGS_DIR"])
    for name, value in _USER_SETTINGS.items():
        (settings / name).parent.mkdir(parents=True, exist_ok=True)
        (settings / name).write_text(json.dumps(value))
    # `make lab` runs `ipykernel install --user --name egresskit`; --user honours
    # JUPYTER_DATA_DIR, so here the spec lands in the temporary data dir.
    installed = subprocess.run(
        [sys.executable, "-m", "ipykernel", "install", "--user", "--name", kernel_name],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if installed.returncode != 0:
        raise AssertionError(f"ipykernel install --name {kernel_name} failed: {installed.stderr}")
    token = secrets.token_hex(16)
    port = free_port()
    args = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        # window.jupyterapp: the command registry (run all, interrupt) for the test.
        "--LabApp.expose_app_in_browser=True",
        "--LabApp.news_url=",
    ]
    if os.geteuid() == 0:
        args.append("--allow-root")
    log = work / "jupyterlab.log"
    server = LabServer(url=f"http://127.0.0.1:{port}", token=token, root_dir=root, log=log)
    with log.open("wb") as log_stream:
        process = subprocess.Popen(
            args, cwd=root, env=env, stdout=log_stream, stderr=subprocess.STDOUT
        )
    try:

        def up() -> bool:
            if process.poll() is not None:
                raise AssertionError(
                    f"jupyterlab exited with {process.returncode} before serving:\n"
                    f"{server.log_tail()}"
                )
            with contextlib.suppress(OSError):
                return server.api("/api/status") is not None
            return False

        wait_for(up, what=f"jupyterlab to answer {server.url}/api/status", timeout=start_timeout)
        yield server
    finally:
        _stop(server, process)


def _stop(server: LabServer, process: subprocess.Popen[bytes]) -> None:
    """The server shuts its kernels down on /api/shutdown; a signal if it does not exit."""
    if process.poll() is None:
        with contextlib.suppress(OSError, urllib.error.URLError):
            server.api("/api/shutdown", method="POST")
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


@dataclass(frozen=True)
class CellView:
    """One cell as the page renders it."""

    index: int
    kind: str  # "code" | "markdown" | "raw"
    prompt: str  # the input prompt: "[ ]:", "[*]:", "[3]:"
    text: str  # the outputs' text as shown
    mimes: tuple[str, ...]  # data-mime-type of each rendered output

    @property
    def running(self) -> bool:
        """Queued or executing: JupyterLab shows ``[*]`` for both."""
        return "*" in self.prompt

    @property
    def executed(self) -> bool:
        return any(ch.isdigit() for ch in self.prompt)

    @property
    def lines(self) -> list[str]:
        return [line.strip() for line in self.text.splitlines() if line.strip()]


@dataclass(frozen=True)
class Source:
    """One cell of the notebook file: its kind, source and tags."""

    kind: str
    text: str
    tags: tuple[str, ...]

    @property
    def verify(self) -> bool:
        return "verify" in self.tags

    @property
    def live(self) -> bool:
        return self.kind == "code" and "watch(" in self.text

    @property
    def traffic(self) -> bool:
        return self.kind == "code" and ("run_for(" in self.text or "start_traffic(" in self.text)


def read_sources(path: Path) -> list[Source]:
    """The cells of the notebook file at ``path``, in order."""
    cells = json.loads(path.read_text())["cells"]
    return [
        Source(
            kind=c["cell_type"],
            text="".join(c["source"]),
            tags=tuple(c.get("metadata", {}).get("tags", [])),
        )
        for c in cells
    ]


def verify_cells(sources: list[Source], cells: list[CellView]) -> list[int]:
    """Verify cells: tagged ``verify``, or printing a line that starts with PASS or FAIL."""
    return [
        c.index
        for c in cells
        if c.kind == "code"
        and (sources[c.index].verify or any(line.startswith(("PASS", "FAIL")) for line in c.lines))
    ]


def chart_changes(states: list[dict[str, Any]]) -> int:
    """How often a live cell's chart changed while it ran, from :func:`output_states`.

    Only what the cell showed while running counts, and only states with a chart: the
    frames a learner saw. They start once Run All has cleared the previous run's output
    (the first ``[*]`` state without a chart), so a chart left from before is not a frame.
    """
    start = next((i for i, s in enumerate(states) if s["running"] and not s["chart"]), 0)
    frames = [s for s in states[start:] if s["running"] and s["chart"]]
    return sum(1 for a, b in itertools.pairwise(frames) if a["sig"] != b["sig"])


_READ_CELLS = """() => {
  const cells = document.querySelectorAll('.jp-NotebookPanel .jp-Notebook .jp-Cell');
  return Array.from(cells, (cell, index) => {
    const kind = cell.classList.contains('jp-CodeCell') ? 'code'
      : cell.classList.contains('jp-MarkdownCell') ? 'markdown' : 'raw';
    const prompt = cell.querySelector('.jp-InputPrompt');
    const outputs = Array.from(cell.querySelectorAll('.jp-OutputArea-output'));
    return {
      index, kind,
      prompt: prompt ? prompt.innerText.trim() : '',
      text: kind === 'code' ? outputs.map(o => o.innerText).join('\\n') : '',
      mimes: outputs.map(o => o.getAttribute('data-mime-type') || ''),
    };
  });
}"""


class NotebookPage:
    """A notebook open in JupyterLab in the browser: run it, interrupt it, read it."""

    def __init__(self, page: Page, server: LabServer, name: str) -> None:
        self.page = page
        self.server = server
        self.name = name

    def open(self, *, timeout: float = 60.0) -> None:
        """Load JupyterLab on the notebook and wait until its kernel is idle."""
        self.page.navigate(f"{self.server.url}/lab/tree/{self.name}?token={self.server.token}")
        wait_for(
            lambda: self.page.evaluate("() => !!(window.jupyterapp && window.jupyterapp.started)"),
            what="JupyterLab's application object (window.jupyterapp)",
            timeout=timeout,
        )
        wait_for(
            lambda: len(self.cells()) > 0,
            what=f"the cells of {self.name} to render",
            timeout=timeout,
        )
        wait_for(
            lambda: self.kernel_status() == "idle",
            what=f"the kernel of {self.name} to start and be idle",
            timeout=timeout,
        )

    def cells(self) -> list[CellView]:
        return [CellView(**{**c, "mimes": tuple(c["mimes"])}) for c in self._read()]

    def _read(self) -> list[dict[str, Any]]:
        got: list[dict[str, Any]] = self.page.evaluate(_READ_CELLS)
        return got

    def kernel_status(self) -> str:
        """The kernel's status as the notebook's session knows it ('idle', 'busy', ...), or
        'none' before there is a kernel."""
        status: str = self.page.evaluate(_KERNEL_STATUS, self.name)
        return status

    def kernel_name(self) -> str:
        """The kernelspec name of the notebook's kernel ('none' before there is one)."""
        name: str = self.page.evaluate(_KERNEL_NAME, self.name)
        return name

    def command(self, name: str) -> None:
        """Start one of JupyterLab's commands, as its menu or toolbar would, without waiting
        for it to finish (Run All's promise settles only when the last cell has run)."""
        known = self.page.evaluate(_START_COMMAND, name, self.name)
        if not known:
            raise AssertionError(f"JupyterLab has no command {name!r} or no notebook {self.name}")

    def command_errors(self) -> list[str]:
        """Errors of the commands started so far (a rejected promise)."""
        errors: list[str] = self.page.evaluate("() => window.__egresskitCommandErrors || []")
        return errors

    def wait_done(self, *, what: str, timeout: float) -> list[CellView]:
        """Wait until no cell is queued or running and the kernel is idle."""

        def done() -> list[CellView] | None:
            cells = self.cells()
            if any(c.running for c in cells) or self.kernel_status() != "idle":
                return None
            return cells

        return wait_for(done, what=what, timeout=timeout, every=0.1)

    def screenshot_cells(self, path: Path, first: int, last: int | None = None) -> Path:
        """A PNG of cells ``first`` to ``last`` (as much as the viewport shows), scrolled so
        ``first`` is at the top."""
        clip = self.page.evaluate(_CELLS_RECT, first, first if last is None else last)
        return self.page.screenshot(path, clip=clip)

    def screenshot(self, path: Path) -> Path:
        return self.page.screenshot(path)


# Finds the notebook panel open on `path` in JupyterLab's main area, and its kernel (null
# while there is none). Commands act on the current notebook, so it is activated first.
_FIND_PANEL = """
  const app = window.jupyterapp;
  const panel = app ? Array.from(app.shell.widgets('main')).find(
    w => w.context && w.context.path === path && w.sessionContext) : null;
  const session = panel ? panel.sessionContext.session : null;
  const kernel = session ? session.kernel : null;
"""
_KERNEL_STATUS = "(path) => {" + _FIND_PANEL + "return kernel ? kernel.status : 'none'; }"
_KERNEL_NAME = "(path) => {" + _FIND_PANEL + "return kernel ? kernel.name : 'none'; }"
_START_COMMAND = (
    "(name, path) => {"
    + _FIND_PANEL
    + """
  if (!panel || !app.commands.hasCommand(name)) return false;
  app.shell.activateById(panel.id);
  window.__egresskitCommandErrors = window.__egresskitCommandErrors || [];
  app.commands.execute(name).catch(e => window.__egresskitCommandErrors.push(name + ': ' + e));
  return true;
}"""
)

# Scrolls cell `first` to the top of the notebook and returns the visible rectangle that
# holds cells first..last.
_CELLS_RECT = """(first, last) => {
  const cells = document.querySelectorAll('.jp-NotebookPanel .jp-Notebook .jp-Cell');
  cells[first].scrollIntoView({block: 'start'});
  const a = cells[first].getBoundingClientRect(), b = cells[last].getBoundingClientRect();
  const top = Math.max(0, a.top), bottom = Math.min(window.innerHeight, b.bottom);
  return {x: Math.max(0, a.left), y: top, width: Math.max(1, a.width),
          height: Math.max(1, bottom - top)};
}"""


# Records every distinct state of one cell's outputs while the page runs: a MutationObserver
# catches each re-render, a 100 ms timer catches canvases drawn after insertion.
_WATCH_OUTPUTS = """(index) => {
  const hash = (s) => { let h = 2166136261;
    for (let i = 0; i < s.length; i++) { h ^= s.charCodeAt(i); h = Math.imul(h, 16777619); }
    return (h >>> 0).toString(16) + ':' + s.length; };
  const cell = document.querySelectorAll('.jp-NotebookPanel .jp-Notebook .jp-Cell')[index];
  const log = [];
  window.__egresskitOutputs = window.__egresskitOutputs || {};
  window.__egresskitOutputs[index] = log;
  const record = () => {
    const outs = Array.from(cell.querySelectorAll('.jp-OutputArea-output'));
    const pics = outs.flatMap(o => [
      ...Array.from(o.querySelectorAll('img'), i => i.src),
      ...Array.from(o.querySelectorAll('svg'), s => s.outerHTML),
      ...Array.from(o.querySelectorAll('canvas'), c => c.toDataURL()),
    ]);
    const text = outs.map(o => o.innerText).join('\\n');
    const prompt = cell.querySelector('.jp-InputPrompt');
    const state = {
      running: !!prompt && prompt.innerText.includes('*'),
      chart: pics.length > 0,
      sig: hash(text + '\\u0000' + pics.join('\\u0000')),
      text: text.slice(0, 200),
    };
    const last = log[log.length - 1];
    if (!last || last.sig !== state.sig || last.running !== state.running) {
      log.push({...state, t: performance.now()});
    }
  };
  new MutationObserver(record).observe(cell, {subtree: true, childList: true,
    attributes: true, characterData: true});
  setInterval(record, 100);
  record();
}"""


def watch_outputs(page: Page, index: int) -> None:
    """Start recording the output states of cell ``index`` (see :func:`output_states`)."""
    page.evaluate(_WATCH_OUTPUTS, index)


def output_states(page: Page, index: int) -> list[dict[str, Any]]:
    """The states of cell ``index`` recorded since :func:`watch_outputs`, in order: running
    (prompt ``[*]``), chart (an image, SVG or canvas is shown), sig (a hash of all that is
    shown), text (its first 200 characters), t (page clock, ms)."""
    states: list[dict[str, Any]] = page.evaluate(
        "(i) => (window.__egresskitOutputs || {})[i] || []", index
    )
    return states
