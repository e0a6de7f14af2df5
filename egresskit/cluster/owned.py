"""What a cluster facade owns besides its own parts: traffic loops and scrapers.

Job: a thread-safe registry a backend keeps of the background jobs started on it, so
``close()`` stops every one of them before the data plane goes away, and nothing started
on a closed facade ever runs (docs: issue "nothing outlives its cluster").

Rules:

* ``adopt`` and ``close`` take one lock, so a job registered from another thread while the
  facade closes is either stopped by ``close`` or refused with :class:`ClusterClosed`,
  never left running.
* ``close`` returns the jobs; the backend stops them (outside the lock, since a job's stop
  waits for its thread, which may be inside a call on the facade) before stopping proxies,
  so a curl in flight finishes against a live mesh.
* Jobs are held strongly until they end: a job calls ``release`` when it stops by itself.
* Backends without a registry (the helper :func:`adopt` tolerates them) leave their jobs
  to their owners.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol

from egresskit.errors import BackendError, ClusterClosed

__all__ = ["Job", "Jobs", "Teardown", "adopt", "release"]


class Job(Protocol):
    """A background job tied to a cluster: ``close()`` stops it (bounded, never raises
    for the job's own failures, which its owner reads later)."""

    def close(self) -> None: ...


class Jobs:
    """The background jobs started on one cluster facade."""

    def __init__(self, closed_error: Callable[[], ClusterClosed]) -> None:
        """``closed_error()`` is what ``adopt`` raises once the cluster is closed (the
        same error the cluster's own calls raise)."""
        self._closed_error = closed_error
        self._lock = threading.Lock()
        self._jobs: list[Job] = []
        self._closed = False

    def adopt(self, job: Job) -> None:
        with self._lock:
            if self._closed:
                raise self._closed_error()
            self._jobs.append(job)

    def release(self, job: Job) -> None:
        with self._lock:
            self._jobs = [j for j in self._jobs if j is not job]

    def close(self) -> list[Job]:
        """Refuse new jobs from now on; the jobs still registered, for the caller to stop."""
        with self._lock:
            self._closed = True
            jobs, self._jobs = self._jobs, []
        return jobs

    def __len__(self) -> int:
        with self._lock:
            return len(self._jobs)


class Teardown:
    """What did not stop while a facade closed: each step runs even when an earlier one
    raised (a stuck job must not leave proxies, threads or the CA directory behind), and
    ``raise_if_any`` ends the close with one error listing every failure."""

    def __init__(self, what: str) -> None:
        """``what`` names the thing closing, e.g. ``"the local cluster"``."""
        self.what = what
        self.failures: list[str] = []

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Run one teardown step; an Exception is recorded, not raised (KeyboardInterrupt
        and other BaseExceptions still propagate: the caller's ``finally`` finishes)."""
        try:
            yield
        except Exception as exc:
            self.failures.append(f"{name}: {type(exc).__name__}: {exc}")

    def stop_jobs(self, jobs: list[Job]) -> None:
        for job in jobs:
            # A job's own repr when it has one (Traffic's names its URL), else its class.
            name = repr(job) if type(job).__repr__ is not object.__repr__ else type(job).__name__
            with self.step(f"job {name}"):
                job.close()

    def raise_if_any(self) -> None:
        if self.failures:
            lines = "\n".join(f"  - {f}" for f in self.failures)
            raise BackendError(
                f"closing {self.what}: {len(self.failures)} part(s) did not stop cleanly "
                f"(everything else was stopped):\n{lines}"
            )


def adopt(cluster: object, job: Job) -> None:
    """Register ``job`` with ``cluster`` when the backend keeps a registry (``jobs``)."""
    jobs = getattr(cluster, "jobs", None)
    if isinstance(jobs, Jobs):
        jobs.adopt(job)


def release(cluster: object, job: Job) -> None:
    jobs = getattr(cluster, "jobs", None)
    if isinstance(jobs, Jobs):
        jobs.release(job)
