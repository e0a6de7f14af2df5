"""A live view of traffic outcomes that updates in place in Jupyter.

Job: while a :class:`~egresskit.traffic.Traffic` runs, redraw two outputs of the notebook
cell several times (``display(..., display_id=True)`` then ``handle.update``): a caption
(progress as formatted text: counts per outcome and what "missed" means) and the chart so
far (the proxy's route metrics over the client's view, :func:`charts.story_chart`). When
the watch ends the chart is left as a static PNG, so the saved notebook shows it without
JavaScript. Outside Jupyter the same call prints one progress line per update.

Rules:

* Nothing here decides anything: outcomes come from :mod:`egresskit.analysis.outcomes`,
  pictures from :mod:`egresskit.analysis.charts`.
* Drawing never throttles the traffic it shows: charts are built and rendered by a worker
  process (:mod:`egresskit.analysis.render`: vl-convert holds the GIL while it renders,
  altair spends 0.15-0.4 s of pure Python per figure), and the traffic loop runs on its
  own thread, on its own deadlines. The kernel only classifies and sends small tables.
* A watch of ``for_seconds`` ticks at least :data:`MIN_FRAMES` times (one per ``every``
  seconds, :func:`frame_interval`) and shows at least :data:`MIN_LIVE_FRAMES` charts,
  running up to :data:`GRACE` seconds longer if drawing is slow (a busy machine).
* Interrupting the kernel (KeyboardInterrupt) stops the traffic, leaves the chart so far
  and re-raises, so Run All stops; every wait is ``Traffic.wait(every)``, bounded.
"""

from __future__ import annotations

import contextlib
import html
import importlib
import sys
import time
from collections.abc import Callable
from typing import Any, Literal

import pandas as pd

from egresskit.analysis.counters import increases
from egresskit.analysis.outcomes import OUTCOMES, classify_requests, classify_series
from egresskit.analysis.render import Renderer
from egresskit.analysis.scrape import Scraper
from egresskit.analysis.timeline import PolicyTimeline
from egresskit.traffic import MISSED_MEANS, Traffic

__all__ = ["MIN_FRAMES", "Caption", "frame_interval", "in_jupyter", "progress_text", "watch"]

MIN_FRAMES = 6  # ticks (caption updates) in a watch of any length
MIN_LIVE_FRAMES = 3  # charts shown before a short watch may end ...
GRACE = 5.0  # ... if that takes at most this many seconds more


def in_jupyter() -> bool:
    """True inside a Jupyter kernel (where display handles update in place)."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    shell = ipython.get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def frame_interval(for_seconds: float | None) -> float:
    """Seconds between frames: 1 s, or less so a short watch still shows MIN_FRAMES."""
    if for_seconds is None:
        return 1.0
    return min(1.0, max(0.25, for_seconds / MIN_FRAMES))


class Caption:
    """Progress as formatted text: ``<pre>`` in Jupyter, plain lines elsewhere (never a
    quoted Python string)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def _repr_html_(self) -> str:
        return f"<pre style='white-space:pre-wrap;margin:0'>{html.escape(self.text)}</pre>"

    def __repr__(self) -> str:
        return self.text


class _Png:
    """A PNG output (``image/png``) with a text alternative."""

    def __init__(self, data: bytes, alt: str) -> None:
        self.data, self.alt = data, alt

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        return {"image/png": self.data, "text/plain": self.alt}


def _caption(traffic: Traffic, scraper: Scraper | None, classified: pd.DataFrame) -> Caption:
    counts = classified["outcome"].value_counts() if len(classified) else pd.Series(dtype=int)
    outcomes = ", ".join(f"{int(counts.get(o, 0))} {o}" for o in OUTCOMES)
    # Both lines count the same requests: the ones classified (more may have come since).
    lines = [traffic.progress(upto=len(classified)), f"client view by outcome: {outcomes}"]
    if scraper is not None:
        lines.append(scraper.progress())
    if traffic.missed:
        lines.append(MISSED_MEANS)
    return Caption("\n".join(lines))


def progress_text(traffic: Traffic, scraper: Scraper | None, timeline: PolicyTimeline) -> Caption:
    """The caption once, for a cell that waited without a live chart (``run_for``)."""
    timeline.sync()
    return _caption(traffic, scraper, classify_requests(traffic.frame(), timeline))


def _series(scraper: Scraper | None, timeline: PolicyTimeline) -> pd.DataFrame | None:
    if scraper is None:
        return None
    return classify_series(increases(scraper.frame()), timeline)


def watch(
    traffic: Traffic,
    *,
    scraper: Scraper | None = None,
    timeline: PolicyTimeline | None = None,
    every: float | None = None,
    image: Literal["png", "svg"] = "png",
    out: Callable[[str], None] = print,
    for_seconds: float | None = None,
    renderer: Renderer | None = None,
) -> pd.DataFrame:
    """Show ``traffic`` live until it ends, ``for_seconds`` pass, or Ctrl-C, then the final
    chart as an image (the traffic itself keeps running when ``for_seconds`` ends it).

    Returns the classified requests. ``out`` receives progress lines outside Jupyter.
    The objects in force come from ``timeline``, else the scraper's, else a new
    :meth:`PolicyTimeline.of` the traffic's cluster, synced at every update.
    ``renderer``: a running render worker to use (else one for this watch only).
    """
    if timeline is None:
        timeline = scraper.timeline if scraper is not None else None
    if timeline is None:
        timeline = PolicyTimeline.of(traffic.cluster)
    every = every or frame_interval(for_seconds)
    if not in_jupyter():
        return _watch_text(traffic, scraper, timeline, every, out, for_seconds)
    display = _display()
    caption = display.display(Caption(traffic.progress()), display_id=True)
    picture = display.display(Caption("(the chart appears with the first requests)"),
                              display_id=True)  # fmt: skip
    started = time.monotonic()
    so_far = _Classified(timeline)
    own = renderer is None or not renderer.running
    with contextlib.ExitStack() as stack:
        if own:
            renderer = stack.enter_context(Renderer())
        assert renderer is not None
        frames = 0
        try:
            while traffic.running:
                timeline.sync()
                classified = so_far.update(traffic)
                caption.update(_caption(traffic, scraper, classified))
                # The worker draws while the traffic runs on; a frame still being drawn
                # is shown at the next tick, and no new one is sent until it is done.
                svg = renderer.poll()
                if svg is not None:
                    picture.update(display.HTML(svg.decode("utf-8")))
                    frames += 1
                if len(classified):
                    renderer.submit_story(
                        classified,
                        _series(scraper, timeline),
                        traffic.cluster.changes,
                        title="Live",
                    )
                left = _time_left(started, for_seconds, frames)
                if left <= 0:
                    break
                traffic.wait(min(every, left))
        except KeyboardInterrupt:
            traffic.interrupt()
            _final(traffic, scraper, timeline, renderer, caption, picture, image)
            raise
        return _final(traffic, scraper, timeline, renderer, caption, picture, image)


def _time_left(started: float, for_seconds: float | None, frames: int) -> float:
    """Seconds the watch goes on: ``for_seconds``, stretched (by at most
    :data:`GRACE` s) until :data:`MIN_LIVE_FRAMES` charts were shown, so even a short
    watch on a busy machine is seen to move. The traffic runs on either way."""
    if for_seconds is None:
        return float("inf")
    elapsed = time.monotonic() - started
    if frames < MIN_LIVE_FRAMES:
        return for_seconds + GRACE - elapsed
    return for_seconds - elapsed


class _Classified:
    """The requests classified so far: each frame classifies only the new ones (the
    policy engine runs per request; redoing all of them every frame grew with the run and
    competed with the proxies for the GIL). The final picture classifies all afresh."""

    def __init__(self, timeline: PolicyTimeline) -> None:
        self.timeline = timeline
        self.frame: pd.DataFrame | None = None

    def update(self, traffic: Traffic) -> pd.DataFrame:
        records = traffic.frame()
        done = 0 if self.frame is None else len(self.frame)
        new = classify_requests(records.iloc[done:].reset_index(drop=True), self.timeline)
        if self.frame is None or not len(self.frame):
            self.frame = new
        elif len(new):
            self.frame = pd.concat([self.frame, new], ignore_index=True)
        return self.frame


def _final(
    traffic: Traffic,
    scraper: Scraper | None,
    timeline: PolicyTimeline,
    renderer: Renderer,
    caption: Any,
    picture: Any,
    image: Literal["png", "svg"],
) -> pd.DataFrame:
    timeline.sync()
    classified = classify_requests(traffic.frame(), timeline)
    caption.update(_caption(traffic, scraper, classified))
    if len(classified):
        data = renderer.story(
            classified,
            _series(scraper, timeline),
            traffic.cluster.changes,
            title="Live",
            fmt=image,
        )
        if image == "svg":
            picture.update(_display().SVG(data.decode("utf-8")))
        else:
            picture.update(_Png(data, "egress outcomes so far"))
    return classified


def _watch_text(
    traffic: Traffic,
    scraper: Scraper | None,
    timeline: PolicyTimeline,
    every: float,
    out: Callable[[str], None],
    for_seconds: float | None,
) -> pd.DataFrame:
    until = None if for_seconds is None else time.monotonic() + for_seconds
    try:
        while traffic.running:
            left = every if until is None else min(every, until - time.monotonic())
            if left <= 0:
                break
            traffic.wait(left)
            out(traffic.progress())
    except KeyboardInterrupt:
        traffic.interrupt()
        raise
    timeline.sync()
    out(traffic.progress())
    return classify_requests(traffic.frame(), timeline)


def _display() -> Any:
    """``IPython.display`` (untyped; imported only inside Jupyter)."""
    return importlib.import_module("IPython.display")
