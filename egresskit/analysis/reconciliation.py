"""Client and proxy counts of each outcome, compared over the same scrape intervals.

Job: from classified requests (:func:`egresskit.analysis.outcomes.classify_requests`)
and classified series (:func:`egresskit.analysis.outcomes.classify_series`), count each
outcome per interval on both sides and show where they differ (:class:`Reconciliation`).

Rules:

* Each request is assigned to the first scrape at or after it completed, so both sides
  are counted over the same scrape intervals; requests completed before the first scrape
  (its counters are masked) or after the last one are left out and counted.
* Agreement needs two scrapes at least: the first one's counters are masked, so a
  single scrape counts nothing on the proxy side.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from egresskit.analysis.counters import scrapes_from

__all__ = ["Reconciliation", "reconcile"]


@dataclass(frozen=True, kw_only=True)
class Reconciliation:
    """Client and proxy counts per interval and outcome; ``.ok`` when they all agree."""

    table: pd.DataFrame  # interval, outcome, client, proxy, diff
    #: Requests left out: completed before the first scrape or after the last one.
    excluded: int
    scrapes: int
    notes: tuple[str, ...] = field(default=())

    @property
    def mismatches(self) -> pd.DataFrame:
        return self.table[self.table["diff"] != 0]

    @property
    def ok(self) -> bool:
        return bool(self.scrapes >= 2 and self.mismatches.empty)

    def __str__(self) -> str:
        head = "client and proxy agree" if self.ok else "client and proxy DISAGREE"
        lines = [
            f"{head}: {len(self.table)} rows over {self.scrapes} scrapes, "
            f"{self.excluded} requests outside the scraped span"
        ]
        for row in self.mismatches.itertuples(index=False):
            lines.append(
                f"  {row.interval:%Y-%m-%dT%H:%M:%SZ} {row.outcome}: "
                f"client {row.client}, proxy {row.proxy} (diff {row.diff:+d})"
            )
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)


def reconcile(
    requests: pd.DataFrame,
    series: pd.DataFrame,
    *,
    interval: str | None = None,
    pod: str | None = None,
    scrapes: pd.DataFrame | None = None,
) -> Reconciliation:
    """Compare :func:`classify_requests` counts with :func:`classify_series` increases.

    ``interval`` (a pandas frequency such as ``"30s"``) groups scrape intervals; None
    compares run totals. ``pod`` selects the proxy's pod (default: the requests' pod).
    ``scrapes`` lists the successful scrapes (``Scraper.scrapes_frame()``); by default
    the list carried in ``series.attrs`` (counters.SCRAPES_ATTR), else the times of ``series``.
    Per-interval counts can differ by one at a boundary when a scrape lands between the
    proxy recording an answer and curl finishing reading it; totals cannot.
    """
    if scrapes is None:
        scrapes = scrapes_from(series)
    if pod is None and len(requests) and "pod" in requests.columns:
        pod = str(requests["pod"].iloc[0])
    proxy = series if pod is None else series[series["pod"] == pod]
    known = proxy if scrapes is None else scrapes if pod is None else scrapes[scrapes["pod"] == pod]
    scrape_times = np.sort(known["scraped_at"].unique()) if len(known) else np.array([])
    if len(scrape_times) == 0:
        empty = pd.DataFrame({"interval": [], "outcome": [], "client": [], "proxy": [], "diff": []})
        return Reconciliation(table=empty, excluded=len(requests), scrapes=0, notes=("no scrapes",))
    times = pd.Series(pd.to_datetime(scrape_times, utc=True)).astype("datetime64[us, UTC]")
    done = requests["completed_at"].astype("datetime64[us, UTC]")
    pos = np.searchsorted(times.to_numpy(), done.to_numpy(), side="left")
    inside = (done > times.iloc[0]).to_numpy() & (pos < len(times))
    client = pd.DataFrame(
        {
            "scrape": times.to_numpy()[np.clip(pos, 0, len(times) - 1)][inside],
            "outcome": requests["outcome"].to_numpy()[inside],
        }
    )
    client["n"] = 1
    proxy = pd.DataFrame(
        {
            "scrape": proxy["scraped_at"].to_numpy(),
            "outcome": proxy["outcome"].to_numpy(),
            "n": proxy["increase"].fillna(0).to_numpy(),
        }
    )
    proxy = proxy[proxy["scrape"] > times.iloc[0]]

    def bucket(frame: pd.DataFrame) -> pd.Series:
        at = pd.to_datetime(frame["scrape"], utc=True)
        return at.dt.floor(interval) if interval else pd.Series(times.iloc[0], index=frame.index)

    counts = []
    for name, frame in (("client", client), ("proxy", proxy)):
        grouped = frame.assign(interval=bucket(frame)).groupby(["interval", "outcome"])["n"].sum()
        counts.append(grouped.rename(name))
    table = pd.concat(counts, axis=1).fillna(0).astype("int64").reset_index()
    table["diff"] = table["client"] - table["proxy"]
    table = table.sort_values(["interval", "outcome"]).reset_index(drop=True)
    notes: tuple[str, ...] = ()
    if len(requests) and pod is not None and not (series["pod"] == pod).any():
        notes = (f"no proxy series for pod {pod}",)
    return Reconciliation(
        table=table, excluded=int((~inside).sum()), scrapes=len(times), notes=notes
    )
