"""The guide's client loop as a background job: ``while sleep 1; do curl -s URL; done``.

Job: run ``cluster.curl(...)`` against one or more URLs at a steady rate on a named daemon
thread, on any backend, and record every request (UTC time, URL, curl exit code, HTTP
status, ``time_total``, the first 200 characters of the body) for later analysis.

Rules:

* Scheduling is by absolute deadlines on the monotonic clock: request ``j`` is due at
  ``start + j / (rate * len(urls))``, the URLs taking turns, so the rate never drifts with
  curl's own duration. A deadline already past when the previous curl returns is skipped
  (counted in :attr:`Traffic.missed`), never fired in a burst; so ``requests + missed`` is
  exactly the number of deadlines that fell due.
* Waiting is ``Event.wait(timeout)``: no busy loop, and :meth:`Traffic.stop` wakes it.
* :meth:`Traffic.paused` holds the loop between two curls (the one in flight finishes
  first, bounded), so a notebook's own request is the only one the proxy counts meanwhile;
  the grid moves by the time paused, so a pause is neither missed requests nor a burst.
* A curl that the backend cannot run (:class:`~egresskit.errors.EgressKitError`) is
  recorded as exit code ``-1`` with the error text; anything else is a bug: the loop stops
  and :meth:`Traffic.wait` / :meth:`Traffic.stop` re-raise it as :class:`BackendError`.
* Stopping is bounded: ``stop()`` joins for at most ``curl_timeout + 5`` seconds (the curl
  in flight finishes first) and raises :class:`WaitTimeout` otherwise.
* KeyboardInterrupt: a notebook cell calls :meth:`Traffic.wait`; interrupting the kernel
  while it waits stops the traffic (as Ctrl-C stops the guide's shell loop) and re-raises,
  so Run All stops there instead of running later cells against no traffic.
* The loop belongs to its cluster (:mod:`egresskit.cluster.owned`): closing the cluster
  stops it, a loop cannot start on a closed cluster, and a loop whose cluster closes
  under it ends at once (:class:`~egresskit.errors.ClusterClosed` is never recorded as a
  request). :attr:`Traffic.ended_because` says why a loop is no longer running.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType

import pandas as pd

from egresskit.cluster.base import Cluster, CurlResult
from egresskit.cluster.owned import adopt, release
from egresskit.errors import BackendError, ClusterClosed, EgressKitError, WaitTimeout

__all__ = ["BODY_PREFIX", "MISSED_MEANS", "RequestRecord", "Traffic", "due_count", "start_traffic"]

#: How much of each response body is kept (enough for "You cannot go there right now").
BODY_PREFIX = 200
_STOP_GRACE = 5.0
_names = itertools.count(1)


@dataclass(frozen=True, kw_only=True)
class RequestRecord:
    """One curl run of the traffic loop."""

    at: datetime  # UTC, when curl started
    url: str
    exit_code: int  # -1: the backend could not run curl at all (see ``error``)
    http_status: int | None
    time_total: float
    body: str  # first BODY_PREFIX characters of stdout
    error: str  # first line of curl's stderr, or the backend's error

    @property
    def completed_at(self) -> datetime:
        return self.at + timedelta(seconds=self.time_total)

    @property
    def key(self) -> str:
        """Short result key for progress lines: ``200``, ``403``, ``exit35``, ``error``."""
        if self.http_status is not None:
            return str(self.http_status)
        return "error" if self.exit_code < 0 else f"exit{self.exit_code}"


#: What "missed" counts, for progress captions (see the module's scheduling rule).
MISSED_MEANS = (
    "missed: requests the loop skipped because the previous curl was still running when "
    "they fell due (the loop keeps its rate instead of catching up in a burst)"
)


def _key_text(key: str) -> str:
    if key.isdigit():
        return f"HTTP {key}"
    if key.startswith("exit"):
        return f"curl exit {key[4:]}"
    return "backend errors"


def due_count(elapsed: float, *, rate: float, n_urls: int) -> int:
    """How many deadlines ``start + j / (rate * n_urls)`` fall in ``[start, start + elapsed)``."""
    if elapsed <= 0:
        return 0
    return math.ceil(elapsed * rate * n_urls - 1e-9)


class Traffic:
    """A running (or finished) traffic loop; create it with :func:`start_traffic`."""

    def __init__(
        self,
        cluster: Cluster,
        urls: Sequence[str],
        *,
        pod: str,
        namespace: str,
        rate: float,
        duration: float | None,
        curl_args: Sequence[str],
        curl_timeout: float,
    ) -> None:
        if not urls:
            raise ValueError("urls: expected at least one URL, found none")
        if not (rate > 0 and math.isfinite(rate)):
            raise ValueError(f"rate: expected requests/s per URL > 0, found {rate!r}")
        if duration is not None and not duration > 0:
            raise ValueError(f"duration: expected seconds > 0 or None, found {duration!r}")
        self.cluster = cluster
        self.urls = tuple(urls)
        self.pod = pod
        self.namespace = namespace
        self.rate = rate
        self.duration = duration
        self.curl_args = tuple(curl_args)
        self.curl_timeout = curl_timeout
        self.missed = 0
        self._records: list[RequestRecord] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        # Held by the loop for each curl and by paused() for its block; re-entrant, so a
        # pause inside a pause (t.observe in a learner's own `with paused()`) just nests.
        self._turn = threading.RLock()
        self._pause_depth = 0  # paused() blocks open, on the thread holding _turn
        self._paused_for = 0.0  # seconds paused so far: the grid starts that much later
        self._crash: BaseException | None = None
        self._started = time.monotonic()
        self._ended: float | None = None
        #: Why the loop is not running any more ("" while it runs).
        self.ended_because = ""
        self.started_at = datetime.now(UTC)
        self._thread = threading.Thread(
            target=self._run, name=f"egresskit-traffic-{next(_names)}-{pod}", daemon=True
        )
        adopt(cluster, self)  # raises ClusterClosed before any thread starts
        try:
            self._thread.start()
        except BaseException as exc:
            # Nobody will hold this Traffic to stop it (the constructor did not return).
            # Ctrl-C inside start(), which waits for the thread to begin: its loop ends at
            # its next step. A thread that never started (Ctrl-C before it, or no thread
            # to be had): nothing runs, so the cluster lets go of it now.
            why = "was interrupted" if isinstance(exc, KeyboardInterrupt) else f"failed ({exc})"
            self._end(f"it {why} while starting")
            self._stop.set()
            if self._thread.ident is None:
                release(cluster, self)
            raise

    # -- the loop ------------------------------------------------------------------------

    def _run(self) -> None:
        period = 1.0 / (self.rate * len(self.urls))
        j = 0
        try:
            while True:
                if self.duration is not None and j * period >= self.duration - 1e-9:
                    self._end(f"it ran its {self.duration:g}s")
                    return
                wait = self._grid_start() + j * period - time.monotonic()
                if (wait > 0 and self._stop.wait(wait)) or self._stop.is_set():
                    return
                if not self._take_turn():
                    return  # stopped while paused
                if self._grid_start() + j * period > time.monotonic():
                    self._turn.release()  # a pause moved this deadline: wait for it again
                    continue
                try:
                    if not self._one(self.urls[j % len(self.urls)]):
                        self._end("its cluster was closed")
                        return
                finally:
                    self._turn.release()
                # Next deadline on the grid that is still ahead; the ones passed are missed.
                due = due_count(
                    time.monotonic() - self._grid_start(), rate=self.rate, n_urls=len(self.urls)
                )
                if self.duration is not None:
                    due = min(due, due_count(self.duration, rate=self.rate, n_urls=len(self.urls)))
                nxt = max(j + 1, due)
                with self._lock:
                    self.missed += nxt - (j + 1)
                j = nxt
        except BaseException as exc:  # a bug in a backend: keep it for wait()/stop()
            self._crash = exc
            self._end(f"it failed: {exc}")
        finally:
            self._ended = time.monotonic()
            release(self.cluster, self)

    def _grid_start(self) -> float:
        with self._lock:
            return self._started + self._paused_for

    def _take_turn(self) -> bool:
        """The loop's turn for one curl, after any pause; False if stopped meanwhile."""
        while not self._turn.acquire(timeout=0.05):
            if self._stop.is_set():
                return False
        return True

    def _end(self, why: str) -> None:
        with self._lock:
            if not self.ended_because:
                self.ended_because = why

    def _one(self, url: str) -> bool:
        """One curl, recorded; False when the cluster is closed (nothing recorded)."""
        args = (*self.curl_args, url)
        started = datetime.now(UTC)
        try:
            result: CurlResult = self.cluster.curl(
                *args, pod=self.pod, namespace=self.namespace, timeout=self.curl_timeout
            )
        except ClusterClosed:
            return False
        except EgressKitError as exc:
            record = RequestRecord(
                at=started,
                url=url,
                exit_code=-1,
                http_status=None,
                time_total=0.0,
                body="",
                error=str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
            )
        else:
            record = _record_of(result, url, started)
        with self._lock:
            self._records.append(record)
        return True

    def record(self, result: CurlResult, url: str | None = None) -> None:
        """Add a curl run made outside the loop from the same pod (a notebook's own
        ``cluster.curl``), so client-side totals still match the proxy's counters.

        ``url`` defaults to the last argument containing ``://``.
        """
        if url is None:
            url = next((a for a in reversed(result.args) if "://" in a), None)
            if url is None:
                raise ValueError(f"record: expected a URL among the curl args, found {result.args}")
        with self._lock:
            self._records.append(_record_of(result, url, datetime.now(UTC)))

    # -- control -------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self, why: str = "it was stopped") -> Traffic:
        """Stop after the curl in flight (bounded); re-raise a crash of the loop."""
        self._halt(why)
        self._raise_crash()
        return self

    def close(self) -> None:
        """Stop (bounded) without raising the loop's own crash, which ``wait``/``stop``
        still raise later: what the cluster calls on its jobs when it closes."""
        self._halt("its cluster was closed")

    @contextmanager
    def paused(self) -> Iterator[Traffic]:
        """No curl from the loop inside the block: the one in flight finishes first (at
        most ``curl_timeout + 5`` s, else :class:`WaitTimeout`). The deadlines that fall
        inside move with the pause: none is missed, none fires in a burst after it."""
        bound = self.curl_timeout + _STOP_GRACE
        acquired = False
        began = time.monotonic()
        try:  # acquired inside: a Ctrl-C right after acquire() cannot leave the loop held
            acquired = self._turn.acquire(timeout=bound)
            if not acquired:
                raise WaitTimeout(
                    f"the curl in flight of {self._thread.name}", bound, self.progress()
                )
            self._pause_depth += 1
            began = time.monotonic()
            yield self
        finally:
            if acquired:
                self._pause_depth -= 1
                if self._pause_depth == 0:  # only the outermost pause moves the grid
                    with self._lock:
                        self._paused_for += time.monotonic() - began
                self._turn.release()

    def _halt(self, why: str) -> None:
        self._end(why)
        self._stop.set()
        if threading.current_thread() is self._thread or self._thread.ident is None:
            return  # stopping itself from inside the loop, or its thread never started
        bound = self.curl_timeout + _STOP_GRACE
        self._thread.join(bound)
        if self._thread.is_alive():
            raise WaitTimeout(f"traffic thread {self._thread.name} to stop", bound, self.progress())

    def wait(self, timeout: float | None = None) -> Traffic:
        """Block until the traffic ends (``duration``) or ``timeout``.

        Joins in short slices so the kernel's KeyboardInterrupt reaches this thread;
        an interrupt stops the traffic, says so, and is re-raised (Run All stops).
        """
        end = None if timeout is None else time.monotonic() + timeout
        try:
            while self._thread.is_alive():
                left = 0.2 if end is None else min(0.2, end - time.monotonic())
                if left <= 0:
                    break
                self._thread.join(left)
        except KeyboardInterrupt:
            self.interrupt()
            raise
        self._raise_crash()
        return self

    def interrupt(self) -> None:
        """What a KeyboardInterrupt does to the loop: stop it and say so (one line)."""
        self._halt("it was interrupted (KeyboardInterrupt)")
        print(f"interrupted, traffic stopped: {self.progress()}", flush=True)

    def _raise_crash(self) -> None:
        crash, self._crash = self._crash, None
        if crash is not None:
            raise BackendError(
                f"traffic to {', '.join(self.urls)}: the loop failed: {crash}"
            ) from crash

    def __enter__(self) -> Traffic:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- results -------------------------------------------------------------------------

    @property
    def records(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._records)

    def elapsed(self) -> float:
        end = self._ended if self._ended is not None else time.monotonic()
        return end - self._started

    def progress(self, upto: int | None = None) -> str:
        """One line: ``traffic: 42 requests (30 HTTP 200, 12 HTTP 403), 1 missed, running
        for 41s`` (``missed``: see :data:`MISSED_MEANS`). ``upto``: count only the first
        that many requests (records only grow at the end), to agree with a table made of
        them a moment ago."""
        records = self.records[:upto]
        counts = Counter(r.key for r in records)
        parts = ", ".join(f"{n} {_key_text(key)}" for key, n in sorted(counts.items()))
        state = (
            f"running for {self.elapsed():.0f}s"
            if self.running
            else f"stopped after {self.elapsed():.0f}s ({self.ended_because or 'it ended'})"
        )
        missed = f", {self.missed} missed" if self.missed else ""
        line = f"traffic: {len(records)} requests"
        return f"{line}{f' ({parts})' if parts else ''}{missed}, {state}"

    def __repr__(self) -> str:
        return f"<Traffic {self.progress()}>"

    def frame(self) -> pd.DataFrame:
        """One row per request: ``at``, ``completed_at`` (UTC), ``pod``, ``namespace``,
        ``url``, ``exit_code``, ``http_status`` (nullable Int64), ``time_total``, ``body``,
        ``error``."""
        records = self.records
        at = pd.to_datetime(pd.Series([r.at for r in records], dtype=object), utc=True)
        total = pd.Series([r.time_total for r in records], dtype="float64")
        return pd.DataFrame(
            {
                "at": at.astype("datetime64[us, UTC]"),
                "completed_at": (at + pd.to_timedelta(total, unit="s")).astype(
                    "datetime64[us, UTC]"
                ),
                "pod": pd.Series([self.pod] * len(records), dtype="str"),
                "namespace": pd.Series([self.namespace] * len(records), dtype="str"),
                "url": pd.Series([r.url for r in records], dtype="str"),
                "exit_code": pd.Series([r.exit_code for r in records], dtype="int64"),
                "http_status": pd.Series([r.http_status for r in records], dtype="Int64"),
                "time_total": total,
                "body": pd.Series([r.body for r in records], dtype="str"),
                "error": pd.Series([r.error for r in records], dtype="str"),
            }
        )


def _record_of(result: CurlResult, url: str, fallback: datetime) -> RequestRecord:
    at = result.started_at.astimezone(UTC) if result.started_at.tzinfo else fallback
    return RequestRecord(
        at=at,
        url=url,
        exit_code=result.exit_code,
        http_status=result.http_status,
        time_total=result.time_total,
        body=result.stdout[:BODY_PREFIX],
        error=(result.stderr.strip().splitlines() or [""])[0],
    )


def start_traffic(
    cluster: Cluster,
    urls: str | Sequence[str],
    *,
    pod: str = "client",
    namespace: str = "egress-test",
    rate: float = 1.0,
    duration: float | None = None,
    curl_args: Sequence[str] = ("-s",),
    curl_timeout: float = 10.0,
) -> Traffic:
    """Start the guide's curl loop against ``urls`` from ``namespace/pod``.

    ``rate`` is requests per second per URL; ``duration`` seconds, or None to run until
    :meth:`Traffic.stop`. Use it as a context manager to stop it on exit.
    """
    return Traffic(
        cluster,
        [urls] if isinstance(urls, str) else list(urls),
        pod=pod,
        namespace=namespace,
        rate=rate,
        duration=duration,
        curl_args=curl_args,
        curl_timeout=curl_timeout,
    )
