"""Render Vega-Lite charts in a separate process, so drawing never holds the kernel's GIL.

Job: vl-convert renders a chart while holding the GIL (measured: a thread that wakes
every millisecond ran 5 times instead of ~150 during five SVG renders), which stalls the
embedded mesh's proxies and the traffic loop in the same process: the live chart
throttled the very traffic it showed. :class:`Renderer` keeps one worker process
(``python -m egresskit.analysis.render``) for the length of a live view; the kernel only
writes a spec and waits on a pipe, with the GIL released.

Building the chart is moved out too (:meth:`Renderer.story`): altair validates and copies
a figure's spec in pure Python (0.15-0.4 s a frame here, measured), which also holds the
GIL. The kernel sends the figure's small input tables; the worker builds
:func:`egresskit.analysis.charts.story_chart` and renders it.

Protocol (one request at a time): a JSON line ``{"format": "svg"|"png", "scale": 2,
"spec": {...}}`` or ``{..., "story": {"requests": ..., "series": ..., "changes": ...,
"title": ...}}``; the answer is a line ``ok <n>`` followed by ``n`` bytes, or a line
``error <message>``. Every wait for an answer is bounded (:data:`TIMEOUT`).
"""

from __future__ import annotations

import io
import json
import os
import select
import subprocess
import sys
from collections.abc import Sequence
from datetime import datetime
from types import TracebackType
from typing import IO, Any, Literal

import pandas as pd

from egresskit.cluster.base import ChangeRecord
from egresskit.errors import BackendError

__all__ = ["TIMEOUT", "Renderer"]

#: Seconds to wait for one rendering (the first one includes the worker's start-up).
TIMEOUT = 30.0


class Renderer:
    """A worker process rendering charts; use as a context manager (it stops on exit).

    The worker warms up as soon as it starts (about 0.6 s here), so a caller that knows a
    live view is coming (``Tutorial.start_traffic``) starts one early."""

    def __init__(self) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "egresskit.analysis.render"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            # Its own process group: the kernel's Interrupt (SIGINT to the kernel's group)
            # is for the cell, not for the worker; EOF on stdin ends the worker.
            start_new_session=True,
        )
        self._pending = False  # a request sent, its answer not read yet

    def svg(self, spec: dict[str, Any]) -> str:
        return self._ask({"format": "svg", "spec": spec}).decode("utf-8")

    def png(self, spec: dict[str, Any], *, scale: float = 2.0) -> bytes:
        return self._ask({"format": "png", "scale": scale, "spec": spec})

    def story(
        self,
        requests: pd.DataFrame,
        series: pd.DataFrame | None,
        changes: Sequence[ChangeRecord],
        *,
        title: str,
        fmt: Literal["svg", "png"] = "svg",
        scale: float = 2.0,
    ) -> bytes:
        """:func:`charts.story_chart` of these tables, built and rendered by the worker."""
        return self._ask(_story_request(requests, series, changes, title, fmt, scale))

    def submit_story(
        self,
        requests: pd.DataFrame,
        series: pd.DataFrame | None,
        changes: Sequence[ChangeRecord],
        *,
        title: str,
    ) -> bool:
        """Start an SVG of :meth:`story` without waiting; False (nothing sent) while the
        worker is still busy with the previous one. Collect it with :meth:`poll`."""
        if self._pending:
            return False
        self._send(_story_request(requests, series, changes, title, "svg", 2.0))
        return True

    def poll(self, timeout: float = 0.0) -> bytes | None:
        """The answer to the request in flight if it is ready within ``timeout``."""
        if not self._pending:
            return None
        _, stdout = self._pipes()
        ready, _, _ = select.select([stdout], [], [], timeout)
        if not ready:
            return None
        self._pending = False
        head = stdout.readline().decode("utf-8", "replace").rstrip("\n")
        if head.startswith("ok "):
            return stdout.read(int(head[3:]))
        raise BackendError(f"chart renderer: {head or 'the worker exited'}")

    def _send(self, request: dict[str, Any]) -> None:
        stdin, _ = self._pipes()
        stdin.write(json.dumps(request).encode() + b"\n")
        stdin.flush()
        self._pending = True

    def _ask(self, request: dict[str, Any]) -> bytes:
        if self._pending:
            self._wait()  # an answer nobody wants any more: drop it
        self._send(request)
        return self._wait()

    def _wait(self) -> bytes:
        answer = self.poll(TIMEOUT)
        if answer is None:
            self.close()
            raise BackendError(f"chart renderer: no answer within {TIMEOUT:g}s")
        return answer

    def _pipes(self) -> tuple[IO[bytes], IO[bytes]]:
        if self._proc.stdin is None or self._proc.stdout is None or self._proc.poll() is not None:
            raise BackendError("chart renderer: the worker is not running")
        return self._proc.stdin, self._proc.stdout

    @property
    def running(self) -> bool:
        return self._proc.poll() is None

    def close(self) -> None:
        """End the worker (EOF on its stdin), bounded; kill it if it does not go."""
        if self._proc.stdin is not None and not self._proc.stdin.closed:
            self._proc.stdin.close()
        try:
            self._proc.wait(5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(5)
        if self._proc.stdout is not None:
            self._proc.stdout.close()

    def __enter__(self) -> Renderer:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


#: The columns story_chart reads (the rest of the tables stays in the kernel).
_REQUEST_COLUMNS = ("at", "outcome")
_SERIES_COLUMNS = (
    "scraped_at", "increase", "outcome", "route_name", "http_status", "grpc_status", "error",
)  # fmt: skip
_TIME_COLUMNS = ("at", "scraped_at")


def _story_request(
    requests: pd.DataFrame,
    series: pd.DataFrame | None,
    changes: Sequence[ChangeRecord],
    title: str,
    fmt: str,
    scale: float,
) -> dict[str, Any]:
    story = {
        "requests": _table(requests, _REQUEST_COLUMNS),
        "series": None if series is None else _table(series, _SERIES_COLUMNS),
        "changes": [
            {
                "at": c.at.isoformat(),
                "verb": c.verb,
                "objects": list(c.objects),
                "summary": c.summary,
            }
            for c in changes
        ],
        "title": title,
    }
    return {"format": fmt, "scale": scale, "story": story}


def _table(frame: pd.DataFrame, columns: Sequence[str]) -> str:
    text: str = frame[[c for c in columns if c in frame.columns]].to_json(
        orient="split", date_format="iso", date_unit="us", index=False
    )
    return text


def _untable(text: str) -> pd.DataFrame:
    frame = pd.read_json(io.StringIO(text), orient="split", dtype=False)
    for c in _TIME_COLUMNS:
        if c in frame.columns:
            frame[c] = pd.to_datetime(frame[c], utc=True, format="ISO8601")
    for c in _SERIES_COLUMNS[3:]:
        if c in frame.columns:
            frame[c] = frame[c].fillna("").astype("str")
    return frame


def _story_spec(story: dict[str, Any]) -> str:
    from altair.utils.schemapi import debug_mode

    from egresskit.analysis import charts

    changes = [
        ChangeRecord(at=datetime.fromisoformat(c["at"]), verb=c["verb"],
                     objects=tuple(c["objects"]), summary=c["summary"])
        for c in story["changes"]
    ]  # fmt: skip
    series = None if story["series"] is None else _untable(story["series"])
    with debug_mode(False):  # validated where the final chart is built in the kernel
        chart = charts.story_chart(
            _untable(story["requests"]), series, changes, title=story["title"]
        )
        return json.dumps(chart.to_dict(validate=False))


_WARM_UP = '{"data": {"values": [{"a": 1}]}, "mark": "bar", "encoding": {"x": {"field": "a"}}}'


def _serve(stdin: IO[bytes], stdout: IO[bytes]) -> None:
    # Lowest priority: on a busy machine the proxies and curl come first, the picture after.
    os.nice(10)
    import vl_convert as vlc

    vlc.vegalite_to_svg(_WARM_UP)  # the first rendering starts vl-convert's engine: do it now
    import egresskit.analysis.charts  # noqa: F401  (and altair: imported before it is needed)

    for line in stdin:
        try:
            req = json.loads(line)
            spec = _story_spec(req["story"]) if "story" in req else json.dumps(req["spec"])
            if req["format"] == "svg":
                out = str(vlc.vegalite_to_svg(spec)).encode("utf-8")
            else:
                out = bytes(vlc.vegalite_to_png(spec, scale=float(req.get("scale", 2.0))))
        except Exception as exc:  # answer the error; the kernel raises it
            stdout.write(f"error {type(exc).__name__}: {exc}".replace("\n", " ").encode() + b"\n")
        else:
            stdout.write(f"ok {len(out)}\n".encode() + out)
        stdout.flush()


if __name__ == "__main__":
    _serve(sys.stdin.buffer, sys.stdout.buffer)
