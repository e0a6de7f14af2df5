"""A small Chrome DevTools Protocol client for tests: Debian's headless Chromium, one page.

Job: start ``/usr/bin/chromium`` headless with a fresh profile, attach to its page over
the DevTools WebSocket (``websocket-client``), and offer the few calls the browser tests
need: navigate, evaluate JavaScript, take a screenshot. Close everything on exit.

Rules:

* No browser download: only the Debian package (``make test`` installs it).
* Chromium picks its own DevTools port (``--remote-debugging-port=0``) and writes it to
  ``DevToolsActivePort`` in the profile; no port is guessed.
* Every wait is bounded and says what it waited for; the browser is started in its own
  process group, which is ended by its id on exit (renderers included).

Protocol reference: https://chromedevtools.github.io/devtools-protocol/ (Runtime.evaluate,
Page.navigate, Page.captureScreenshot, Emulation.setDeviceMetricsOverride).
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import websocket

CHROMIUM = "/usr/bin/chromium"

# Flags that keep Chromium off the network on a closed machine (its background fetches are
# refused here and slow the start) and let it run as root in a container.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--remote-debugging-port=0",
]


class CDPError(AssertionError):
    """The browser answered a command with an error, or a script threw."""


class Page:
    """One page target: send commands and read their results (events are ignored)."""

    def __init__(self, ws: websocket.WebSocket, *, timeout: float) -> None:
        self._ws = ws
        self._ids = itertools.count(1)
        self._timeout = timeout

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        """One command; its ``result``. Events arriving meanwhile are dropped."""
        ident = next(self._ids)
        self._ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        deadline = time.monotonic() + self._timeout
        while True:
            self._ws.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                message = json.loads(self._ws.recv())
            except websocket.WebSocketTimeoutException:
                raise CDPError(
                    f"waited {self._timeout:.0f} s for the browser's answer to {method}"
                ) from None
            if message.get("id") != ident:
                continue
            if "error" in message:
                raise CDPError(f"{method}: {message['error']}")
            result: dict[str, Any] = message.get("result", {})
            return result

    def evaluate(self, script: str, *args: Any) -> Any:
        """The JSON value of ``(script)(...args)``, a JavaScript function expression;
        promises are awaited. A thrown exception becomes :class:`CDPError`."""
        call = f"({script})(...{json.dumps(list(args))})"
        result = self.send(
            "Runtime.evaluate", expression=call, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise CDPError(f"script failed: {text}")
        return result["result"].get("value")

    def navigate(self, url: str) -> None:
        result = self.send("Page.navigate", url=url)
        if result.get("errorText"):
            raise CDPError(f"navigating to {url}: {result['errorText']}")

    def screenshot(self, path: Path, clip: dict[str, float] | None = None) -> Path:
        """A PNG of the viewport, or of ``clip`` (x, y, width, height in CSS pixels)."""
        params: dict[str, Any] = {"format": "png"}
        if clip is not None:
            params["clip"] = {**clip, "scale": 1}
        data = self.send("Page.captureScreenshot", **params)["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path


def _wait_for_port(profile: Path, process: subprocess.Popen[bytes], timeout: float) -> int:
    """Chromium writes its DevTools port to ``DevToolsActivePort`` once it listens."""
    marker = profile / "DevToolsActivePort"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise CDPError(f"chromium exited with {process.returncode} before listening")
        with contextlib.suppress(FileNotFoundError, ValueError, IndexError):
            return int(marker.read_text().splitlines()[0])
        time.sleep(0.05)
    raise CDPError(f"waited {timeout:.0f} s for chromium to write {marker}")


def _page_socket(port: int, timeout: float) -> str:
    """The WebSocket URL of the first page target (the blank page Chromium opened)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as r:
            targets = json.loads(r.read())
        pages = [t for t in targets if t.get("type") == "page"]
        if pages:
            return str(pages[0]["webSocketDebuggerUrl"])
        time.sleep(0.05)
    raise CDPError(f"waited {timeout:.0f} s for a page target on DevTools port {port}")


@contextlib.contextmanager
def chromium(
    profile: Path, *, width: int = 1400, height: int = 1000, timeout: float = 30.0
) -> Iterator[Page]:
    """Headless Chromium with a fresh profile at ``profile``; its one page, sized
    ``width`` x ``height``. The browser's process group is ended on exit."""
    profile.mkdir(parents=True, exist_ok=True)
    log = (profile.parent / "chromium.log").open("wb")
    process = subprocess.Popen(
        [
            CHROMIUM,
            *CHROMIUM_ARGS,
            f"--user-data-dir={profile}",
            f"--window-size={width},{height}",
            "about:blank",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: renderers end with it
    )
    ws: websocket.WebSocket | None = None
    try:
        port = _wait_for_port(profile, process, timeout)
        # suppress_origin: Chromium refuses DevTools WebSockets that carry an Origin header.
        ws = websocket.create_connection(
            _page_socket(port, timeout), timeout=timeout, suppress_origin=True
        )
        page = Page(ws, timeout=timeout)
        # A headless page never has OS focus; apps that track the focused widget (JupyterLab's
        # current notebook) need the page to act focused, as Playwright also arranges.
        page.send("Emulation.setFocusEmulationEnabled", enabled=True)
        page.send(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )
        yield page
    finally:
        if ws is not None:
            with contextlib.suppress(Exception):
                ws.close()
        _end_group(process)
        log.close()


def _end_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the browser's own process group, SIGKILL if it lingers."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    with contextlib.suppress(ProcessLookupError):  # renderers that outlived the browser
        os.killpg(process.pid, signal.SIGKILL)
