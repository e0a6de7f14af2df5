"""A live view of traffic outcomes that updates in place in Jupyter.

Job: while a :class:`~egresskit.traffic.Traffic` runs, redraw one output of the notebook
cell every ``every`` seconds (``display(..., display_id=True)`` then ``handle.update``):
the progress lines and the outcomes chart so far. When the traffic ends the output is
left holding the final chart as a static image, so the saved notebook shows it without
JavaScript. Outside Jupyter the same call prints one progress line per update.

Rules:

* Nothing here decides anything: outcomes come from
  :func:`egresskit.analysis.outcomes.classify_requests`, pictures from
  :mod:`egresskit.analysis.charts`.
* Interrupting the kernel (KeyboardInterrupt) stops the traffic and still draws the
  final image; every wait is ``Traffic.wait(every)``, which is bounded.
"""

from __future__ import annotations

import importlib
import sys
import time
from collections.abc import Callable
from typing import Any, Literal

import altair as alt
import pandas as pd

from egresskit.analysis import charts
from egresskit.analysis.outcomes import classify_requests
from egresskit.analysis.scrape import Scraper
from egresskit.analysis.timeline import PolicyTimeline
from egresskit.traffic import Traffic

__all__ = ["in_jupyter", "watch"]


def in_jupyter() -> bool:
    """True inside a Jupyter kernel (where display handles update in place)."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    shell = ipython.get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def _chart(traffic: Traffic, timeline: PolicyTimeline) -> alt.LayerChart | None:
    frame = traffic.frame()
    if frame.empty:
        return None
    classified = classify_requests(frame, timeline)
    return charts.outcomes_chart(classified, traffic.cluster.changes)


def watch(
    traffic: Traffic,
    *,
    scraper: Scraper | None = None,
    timeline: PolicyTimeline | None = None,
    every: float = 2.0,
    image: Literal["png", "svg"] = "png",
    out: Callable[[str], None] = print,
    for_seconds: float | None = None,
) -> pd.DataFrame:
    """Show ``traffic`` live until it ends, ``for_seconds`` pass, or Ctrl-C, then the final
    chart as an image (the traffic itself keeps running when ``for_seconds`` ends it).

    Returns the classified requests. ``out`` receives progress lines outside Jupyter.
    The objects in force come from ``timeline``, else the scraper's, else a new
    :meth:`PolicyTimeline.of` the traffic's cluster, synced at every update.
    """
    if timeline is None:
        timeline = scraper.timeline if scraper is not None else None
    if timeline is None:
        timeline = PolicyTimeline.of(traffic.cluster)
    jupyter = in_jupyter()
    handle: Any = None
    if jupyter:
        handle = _display().display(_progress(traffic, scraper), display_id=True)
    until = None if for_seconds is None else time.monotonic() + for_seconds
    try:
        while traffic.running:
            if until is not None:
                left = until - time.monotonic()
                if left <= 0:
                    break
                traffic.wait(min(every, left))
            else:
                traffic.wait(every)
            timeline.sync()
            if jupyter:
                chart = _chart(traffic, timeline)
                handle.update(_live_bundle(traffic, scraper, chart))
            else:
                out(_progress(traffic, scraper))
    except KeyboardInterrupt:
        traffic.stop()
    timeline.sync()
    classified = classify_requests(traffic.frame(), timeline)
    final = charts.outcomes_chart(classified, traffic.cluster.changes) if len(classified) else None
    if jupyter:
        handle.update(
            _final_image(final, image) if final is not None else _progress(traffic, scraper)
        )
    else:
        out(_progress(traffic, scraper))
    return classified


def _progress(traffic: Traffic, scraper: Scraper | None) -> str:
    lines = [traffic.progress()]
    if scraper is not None:
        lines.append(scraper.progress())
    return "\n".join(lines)


def _live_bundle(traffic: Traffic, scraper: Scraper | None, chart: alt.LayerChart | None) -> Any:
    """While running: an SVG of the chart so far, with the progress as its caption."""
    text = _progress(traffic, scraper).replace("\n", "<br>")
    svg = charts.svg_text(chart) if chart is not None else ""
    return _display().HTML(f"<pre>{text}</pre>{svg}")


def _final_image(chart: alt.LayerChart, image: Literal["png", "svg"]) -> Any:
    if image == "svg":
        return _display().SVG(charts.svg_text(chart))
    return _display().Image(data=charts.png_bytes(chart), format="png")


def _display() -> Any:
    """``IPython.display`` (untyped; imported only inside Jupyter)."""
    return importlib.import_module("IPython.display")
