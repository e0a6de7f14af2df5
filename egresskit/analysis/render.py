"""Render Vega-Lite charts in a separate process, so drawing never holds the kernel's GIL.

Job: vl-convert renders a chart while holding the GIL (measured: a thread that wakes
every millisecond ran 5 times instead of ~150 during five SVG renders), which stalls the
embedded mesh's proxies and the traffic loop in the same process: the live chart
throttled the very traffic it showed. :class:`Renderer` keeps one worker process
(``python -m egresskit.analysis.render``) for the length of a live view; the kernel only
writes a spec and waits on a pipe, with the GIL released.

Protocol (one request at a time): a JSON line ``{"format": "svg"|"png", "scale": 2,
"spec": {...}}``; the answer is a line ``ok <n>`` followed by ``n`` bytes, or a line
``error <message>``. Every wait for an answer is bounded (:data:`TIMEOUT`).
"""

from __future__ import annotations

import json
import select
import subprocess
import sys
from types import TracebackType
from typing import IO, Any

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
        )

    def svg(self, spec: dict[str, Any]) -> str:
        return self._ask("svg", spec).decode("utf-8")

    def png(self, spec: dict[str, Any], *, scale: float = 2.0) -> bytes:
        return self._ask("png", spec, scale)

    def _ask(self, fmt: str, spec: dict[str, Any], scale: float = 2.0) -> bytes:
        stdin, stdout = self._pipes()
        stdin.write(json.dumps({"format": fmt, "scale": scale, "spec": spec}).encode() + b"\n")
        stdin.flush()
        ready, _, _ = select.select([stdout], [], [], TIMEOUT)
        if not ready:
            self.close()
            raise BackendError(f"chart renderer: no answer within {TIMEOUT:g}s")
        head = stdout.readline().decode("utf-8", "replace").rstrip("\n")
        if head.startswith("ok "):
            return stdout.read(int(head[3:]))
        raise BackendError(f"chart renderer: {head or 'the worker exited'}")

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


_WARM_UP = '{"data": {"values": [{"a": 1}]}, "mark": "bar", "encoding": {"x": {"field": "a"}}}'


def _serve(stdin: IO[bytes], stdout: IO[bytes]) -> None:
    import vl_convert as vlc

    vlc.vegalite_to_svg(_WARM_UP)  # the first rendering starts vl-convert's engine: do it now

    for line in stdin:
        try:
            req = json.loads(line)
            spec = json.dumps(req["spec"])
            if req["format"] == "svg":
                out = str(vlc.vegalite_to_svg(spec)).encode("utf-8")
            else:
                out = bytes(vlc.vegalite_to_png(spec, scale=float(req["scale"])))
        except Exception as exc:  # answer the error; the kernel raises it
            stdout.write(f"error {type(exc).__name__}: {exc}".replace("\n", " ").encode() + b"\n")
        else:
            stdout.write(f"ok {len(out)}\n".encode() + out)
        stdout.flush()


if __name__ == "__main__":
    _serve(sys.stdin.buffer, sys.stdout.buffer)
