"""Counter increases per scrape interval, the way Prometheus ``increase()`` reads counters.

Job: from the long-form frame of :func:`egresskit.analysis.parse.to_frame` (many scrapes),
compute for every counter sample how much it grew since the previous scrape of its pod.

Rules (one series = pod + metric + every label column):

* A value lower than the previous one is a counter reset (the proxy restarted): the new
  value counts from 0, so the increase is the new value (Prometheus ``increase()``).
* The first sample of a series present in the pod's FIRST scrape is masked (``NaN``): what
  happened before the run is unknown.
* A series born mid-run -- absent from earlier successful scrapes of its pod, e.g. the
  first ``http_status="403"`` series after the guide's Deny patch -- counts its first value
  from 0: the proxy creates a series on its first event (docs/facts/linkerd-egress.md 6.2/6.3).
* Which scrapes of a pod succeeded comes from ``scrapes`` (``pod``, ``scraped_at``; see
  :meth:`egresskit.analysis.scrape.Scraper.scrapes_frame`) when given: a fresh proxy's
  first scrape has no samples at all, and without that list its series would look
  present from the start and be masked. Without it, the list a Scraper stores in
  ``frame.attrs[SCRAPES_ATTR]`` is used, else the frame's own times. The output carries
  that attribute on, so ``reconciliation.reconcile`` finds it too.
* Likewise a series missing from the pod's previous successful scrape and back later was
  re-created (the proxy restarted in between): it counts from 0 again.
* Only counters: samples named ``*_total`` (Linkerd's counters all carry the suffix in
  the exposition, spec 6.3); histogram ``_bucket``/``_count``/``_sum`` pass too when asked.
* Vectorised: one sort, one ``groupby().ngroup()``, shifts and ``numpy.where``; no Python
  loop over rows.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

__all__ = ["COUNTER_SUFFIXES", "SCRAPES_ATTR", "increases", "scrapes_from", "series_columns"]

#: ``DataFrame.attrs`` key under which a Scraper's frame lists its successful scrapes, as a
#: tuple of (pod, scraped_at) pairs (a tuple: pandas compares attrs when concatenating).
SCRAPES_ATTR = "egresskit.scrapes"

#: Sample names treated as counters by default (spec 6.3).
COUNTER_SUFFIXES: tuple[str, ...] = ("_total",)
_VALUE_COLUMNS = ("scraped_at", "value", "family", "type")


def scrapes_from(frame: pd.DataFrame) -> pd.DataFrame | None:
    """The successful scrapes listed in ``frame.attrs`` (``pod``, ``scraped_at``), if any."""
    done = frame.attrs.get(SCRAPES_ATTR)
    if not done:
        return None
    return pd.DataFrame(
        {
            "pod": pd.Series([p for p, _ in done], dtype="str"),
            "scraped_at": pd.to_datetime(
                pd.Series([t for _, t in done], dtype=object), utc=True
            ).astype("datetime64[us, UTC]"),
        }
    )


def series_columns(frame: pd.DataFrame) -> list[str]:
    """The columns that identify a series: ``pod``, ``metric`` and every label column."""
    return [c for c in frame.columns if c not in _VALUE_COLUMNS and c != "increase"]


def increases(
    frame: pd.DataFrame,
    *,
    scrapes: pd.DataFrame | None = None,
    suffixes: Sequence[str] = COUNTER_SUFFIXES,
) -> pd.DataFrame:
    """Counter samples with ``increase`` (since the pod's previous scrape; ``NaN`` when
    unknown) and ``reset`` (True where the counter restarted or was re-created).

    Rows are sorted by series, then ``scraped_at``. Pass ``suffixes=()`` to keep every
    metric of the frame.
    """
    attrs = dict(frame.attrs)
    if scrapes is None:
        scrapes = scrapes_from(frame)
    if suffixes:
        frame = frame[frame["metric"].str.endswith(tuple(suffixes))]
    keys = series_columns(frame)
    if frame.empty:
        out = frame.copy()
        out["increase"] = pd.Series(dtype="float64")
        out["reset"] = pd.Series(dtype="bool")
        out.attrs = attrs
        return out

    # Rank of each scrape within its pod: 0 for the pod's first scrape, then 1, 2, ...
    known = frame[["pod", "scraped_at"]]
    if scrapes is not None:
        known = pd.concat([known, scrapes[["pod", "scraped_at"]].astype(known.dtypes.to_dict())])
    times = known.drop_duplicates().sort_values(["pod", "scraped_at"])
    times["scrape_index"] = times.groupby("pod", sort=False).cumcount()
    out = frame.merge(times, on=["pod", "scraped_at"], how="left", sort=False)

    out["series"] = out.groupby(keys, sort=False, dropna=False).ngroup()
    out = out.sort_values(["series", "scraped_at"], kind="stable").reset_index(drop=True)

    series = out["series"].to_numpy()
    value = out["value"].to_numpy(dtype="float64")
    index = out["scrape_index"].to_numpy(dtype="int64")
    same = np.empty(len(out), dtype=bool)
    same[0] = False
    same[1:] = series[1:] == series[:-1]
    prev_value = np.roll(value, 1)
    prev_index = np.roll(index, 1)

    first = ~same
    gap = same & (index - prev_index > 1)  # missing from the pod's previous scrape
    drop = same & (value < prev_value)
    reset = gap | drop
    born = first & (index > 0)  # absent from the pod's earlier scrapes: counts from 0
    masked = first & (index == 0)

    inc = np.where(reset | born, value, value - prev_value)
    inc = np.where(masked, np.nan, inc)
    out["increase"] = inc
    out["reset"] = reset
    out = out.drop(columns=["series", "scrape_index"])
    out.attrs = attrs
    return out
