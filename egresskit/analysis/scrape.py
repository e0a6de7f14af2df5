"""Scrape proxy metrics at a steady interval while traffic runs.

Job: call ``cluster.proxy_metrics(pod, namespace=ns)`` for each pod every ``interval``
seconds on a named daemon thread, parse each answer with
:func:`egresskit.analysis.parse.parse_proxy_metrics`, and keep the long-form DataFrame
(:meth:`Scraper.frame`) for :mod:`egresskit.analysis.counters`.

Rules:

* A failed scrape is never silently empty: a backend error, or a ``# ERROR`` pod in the
  output, becomes a :class:`ScrapeFailure` in :attr:`Scraper.errors` and a warning in
  :meth:`Scraper.progress`.
* The first scrape happens synchronously in :meth:`Scraper.start`, so the counters'
  baseline (masked, see counters.py) is taken before the traffic starts; ``stop()``
  scrapes once more by default so every request made is counted.
* Deadlines are absolute (``start + k * interval``); ones missed while a scrape ran long
  are skipped. Waiting is ``Event.wait``; ``stop()`` joins with a bound.
* An optional :class:`~egresskit.analysis.timeline.PolicyTimeline` is synced on every
  tick so the objects in force are captured soon after each change.
* The scraper belongs to its cluster (:mod:`egresskit.cluster.owned`): closing the
  cluster stops it; a cluster closed under it ends the loop after one recorded failure.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType

import pandas as pd

from egresskit.analysis.counters import SCRAPES_ATTR
from egresskit.analysis.parse import LABEL_COLUMN_ORDER, ParsedScrape, parse_proxy_metrics, to_frame
from egresskit.analysis.timeline import PolicyTimeline
from egresskit.cluster.base import Cluster
from egresskit.cluster.owned import adopt, release
from egresskit.errors import ClusterClosed, EgressKitError, WaitTimeout

__all__ = ["ScrapeFailure", "Scraper"]

_names = itertools.count(1)
_JOIN_BOUND = 35.0  # linkerd dg proxy-metrics waits 30 s at most (docs/facts/linkerd-egress.md 6.1)


@dataclass(frozen=True, kw_only=True)
class ScrapeFailure:
    """One pod whose metrics could not be read at ``at``."""

    at: datetime
    pod: str
    namespace: str
    message: str

    def __str__(self) -> str:
        return f"{self.at:%H:%M:%SZ} {self.namespace}/{self.pod}: {self.message}"


class Scraper:
    """Background scrapes of ``pods`` (``(pod, namespace)`` pairs) every ``interval`` s."""

    def __init__(
        self,
        cluster: Cluster,
        pods: Sequence[tuple[str, str]] = (("client", "egress-test"),),
        interval: float = 1.0,
        *,
        timeline: PolicyTimeline | None = None,
    ) -> None:
        if not (interval > 0 and math.isfinite(interval)):
            raise ValueError(f"interval: expected seconds > 0, found {interval!r}")
        if not pods:
            raise ValueError("pods: expected at least one (pod, namespace), found none")
        self.cluster = cluster
        self.pods = tuple(pods)
        self.interval = interval
        self.timeline = timeline
        self.errors: list[ScrapeFailure] = []
        self.scrapes = 0
        self._lock = threading.Lock()
        self._pending: list[ParsedScrape] = []
        self._done: list[tuple[str, datetime]] = []  # (pod, scraped_at) of good scrapes
        self._frame: pd.DataFrame | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = 0.0

    # -- control -------------------------------------------------------------------------

    def start(self) -> Scraper:
        """Scrape once now (the baseline), then every ``interval`` in the background."""
        if self._thread is not None:
            raise RuntimeError("Scraper.start: expected a new scraper, found one already started")
        adopt(self.cluster, self)  # raises ClusterClosed before anything starts
        self._started = time.monotonic()
        self.scrape_now()
        self._thread = threading.Thread(
            target=self._run, name=f"egresskit-scraper-{next(_names)}", daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop without the final scrape: what the cluster calls when it closes."""
        self.stop(final_scrape=False)

    def stop(self, *, final_scrape: bool = True) -> Scraper:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(_JOIN_BOUND)
            if self._thread.is_alive():
                raise WaitTimeout(
                    f"scraper {self._thread.name} to stop", _JOIN_BOUND, self.progress()
                )
        if final_scrape:
            self.scrape_now()
        return self

    def __enter__(self) -> Scraper:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop(final_scrape=exc_type is None)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        k = 1
        try:
            while True:
                wait = self._started + k * self.interval - time.monotonic()
                if (wait > 0 and self._stop.wait(wait)) or self._stop.is_set():
                    return
                if not self.scrape_now():
                    return  # the cluster is closed: one failure recorded, no more
                k = max(k + 1, math.ceil((time.monotonic() - self._started) / self.interval))
        finally:
            release(self.cluster, self)

    # -- one scrape ----------------------------------------------------------------------

    def scrape_now(self) -> bool:
        """Scrape every pod once (synchronously); failures are recorded, not raised.
        False when the cluster is closed."""
        if self.timeline is not None:
            try:
                self.timeline.sync()
            except ClusterClosed as exc:
                self._fail(datetime.now(UTC), "(policy timeline)", "", str(exc))
                return False
            except EgressKitError as exc:
                self._fail(datetime.now(UTC), "(policy timeline)", "", str(exc))
        for pod, namespace in self.pods:
            at = datetime.now(UTC)
            try:
                text = self.cluster.proxy_metrics(pod, namespace=namespace)
            except ClusterClosed as exc:
                self._fail(at, pod, namespace, str(exc))
                return False
            except EgressKitError as exc:
                self._fail(at, pod, namespace, str(exc))
                continue
            parsed = parse_proxy_metrics(text, scraped_at=at, pod=pod)
            for error in parsed.errors:
                self._fail(at, error.pod or pod, namespace, str(error))
            failed = {e.pod or pod for e in parsed.errors}
            with self._lock:
                self._pending.append(parsed)
                self.scrapes += 1
                self._done.extend((p, at) for p in (parsed.pods or (pod,)) if p not in failed)
        return True

    def _fail(self, at: datetime, pod: str, namespace: str, message: str) -> None:
        with self._lock:
            self.errors.append(ScrapeFailure(at=at, pod=pod, namespace=namespace, message=message))

    # -- results -------------------------------------------------------------------------

    def frame(self) -> pd.DataFrame:
        """Every sample scraped so far, long form (see :func:`parse.to_frame`); the list of
        successful scrapes rides along in ``attrs`` (see counters.py)."""
        with self._lock:
            pending, self._pending = self._pending, []
            if pending:
                new = to_frame(pending)
                self._frame = new if self._frame is None else _concat(self._frame, new)
            frame = self._frame.copy() if self._frame is not None else to_frame([])
            frame.attrs[SCRAPES_ATTR] = tuple(self._done)
            return frame

    def scrapes_frame(self) -> pd.DataFrame:
        """``pod``, ``scraped_at`` of every successful scrape, samples or not (for
        :func:`egresskit.analysis.counters.increases` and ``reconcile``)."""
        with self._lock:
            done = list(self._done)
        return pd.DataFrame(
            {
                "pod": pd.Series([p for p, _ in done], dtype="str"),
                "scraped_at": pd.to_datetime(
                    pd.Series([t for _, t in done], dtype=object), utc=True
                ).astype("datetime64[us, UTC]"),
            }
        )

    def progress(self) -> str:
        """``scrape: 41 scrapes, every 1s`` plus a WARNING part when some failed."""
        with self._lock:
            n, errors = self.scrapes, list(self.errors)
        line = f"scrape: {n} scrapes of {len(self.pods)} pod(s), every {self.interval:g}s"
        if errors:
            line += f"; WARNING {len(errors)} failed, last: {errors[-1]}"
        return line


def _concat(old: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    """Concatenate two long frames whose label columns may differ ("" where absent)."""
    labels = [
        c for c in [*old.columns, *new.columns] if c not in ("scraped_at", "pod", "metric", "value")
    ]
    seen = list(dict.fromkeys(labels))
    ordered = [c for c in LABEL_COLUMN_ORDER if c in seen] + sorted(
        c for c in seen if c not in LABEL_COLUMN_ORDER
    )
    both = pd.concat([old, new], ignore_index=True)
    for c in ordered:
        both[c] = both[c].fillna("").astype("str")
    return both[["scraped_at", "pod", "metric", *ordered, "value"]]
