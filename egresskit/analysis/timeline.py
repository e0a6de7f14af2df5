"""The objects in force over time, so every answer is judged against the policy it met.

Job: keep a list of (from-time, objects) states, one
:class:`~egresskit.policy.snapshot.Snapshot` each, given up front or tracked from a
cluster: ``cluster.objects()`` where the backend has it, else every object that
``cluster.changes`` named, fetched again (:func:`objects_from_changes`).

Rules:

* A state holds from its time until the next one; the first also holds before its time.
  Times are timezone-aware.
* Only the state after the latest of several changes between two syncs can be known: it
  is dated at that change, and the changes before it are kept in
  :attr:`PolicyTimeline.gaps`.
* Thread-safe: a :class:`~egresskit.analysis.scrape.Scraper` syncs the timeline on its
  own thread while the notebook reads it.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from egresskit.cluster.base import ChangeRecord, Cluster
from egresskit.errors import BackendError
from egresskit.explaining import with_cluster_ips
from egresskit.manifests import load_manifests
from egresskit.manifests.model import K8sObject
from egresskit.policy.snapshot import Snapshot

__all__ = ["ObjectsSource", "PolicyTimeline", "objects_from_changes"]

_EPOCH = datetime.min.replace(tzinfo=UTC)

ObjectsSource = Callable[[], Sequence[K8sObject]]


class PolicyTimeline:
    """The objects in force over time: a list of (from-time, objects) states.

    A state holds from its time until the next one; the first also holds before its time.
    :meth:`sync` adds a state for new ``cluster.changes`` by calling ``source`` (e.g. the
    local backend's ``cluster.objects``): when several changes arrive between two syncs
    only the latest state is known, so it is dated at the latest of them and the others
    are listed in :attr:`gaps`. Thread-safe.
    """

    def __init__(
        self,
        states: Iterable[tuple[datetime, Sequence[K8sObject]]] = (),
        *,
        source: ObjectsSource | None = None,
        changes: Callable[[], Sequence[ChangeRecord]] | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._times: list[datetime] = []
        self._snaps: list[Snapshot] = []
        self._source = source
        self._changes = changes
        self._seen = len(changes()) if changes is not None else 0
        self.gaps: list[ChangeRecord] = []
        for at, objects in sorted(states, key=lambda s: s[0]):
            self.add(at, objects)

    @classmethod
    def of(cls, cluster: Cluster, objects: ObjectsSource | None = None) -> PolicyTimeline:
        """Track ``cluster``: the current objects now, then one state per new change.

        ``objects`` defaults to ``cluster.objects`` when the backend has it (local), else
        to :func:`objects_from_changes`.
        """
        source: ObjectsSource = (
            objects or getattr(cluster, "objects", None) or (objects_from_changes(cluster))
        )
        timeline = cls(source=source, changes=lambda: cluster.changes)
        timeline.add(_EPOCH, source())
        return timeline

    def add(self, at: datetime, objects: Sequence[K8sObject] | Snapshot) -> None:
        """Objects in force from ``at`` (timezone-aware) on."""
        if at.tzinfo is None:
            raise ValueError(f"at: expected a timezone-aware datetime, found {at.isoformat()}")
        snap = (
            objects if isinstance(objects, Snapshot) else Snapshot.build(with_cluster_ips(objects))
        )
        with self._lock:
            i = bisect.bisect_right(self._times, at)
            self._times.insert(i, at)
            self._snaps.insert(i, snap)

    def sync(self) -> int:
        """Record a state for changes made since the last sync; returns how many."""
        if self._changes is None or self._source is None:
            return 0
        changes = list(self._changes())
        new = changes[self._seen :]
        if not new:
            return 0
        objects = self._source()
        self._seen = len(changes)
        self.gaps.extend(new[:-1])
        self.add(new[-1].at, objects)
        return len(new)

    @property
    def times(self) -> list[datetime]:
        with self._lock:
            return list(self._times)

    def index_at(self, times: pd.Series) -> np.ndarray:
        """The state index in force at each time (vectorised)."""
        with self._lock:
            if not self._times:
                raise ValueError("PolicyTimeline: expected at least one state, found none")
            edges = pd.to_datetime(pd.Series(self._times), utc=True).astype("datetime64[us, UTC]")
        t = pd.to_datetime(times, utc=True).astype("datetime64[us, UTC]")
        found = np.searchsorted(edges.to_numpy(), t.to_numpy(), side="right") - 1
        clipped: np.ndarray = np.clip(found, 0, None).astype("int64")
        return clipped

    def snapshot(self, index: int) -> Snapshot:
        with self._lock:
            return self._snaps[index]

    def snapshot_at(self, at: datetime) -> Snapshot:
        return self.snapshot(int(self.index_at(pd.Series([at]))[0]))

    def objects_at(self, at: datetime) -> tuple[K8sObject, ...]:
        return self.snapshot_at(at).objects


def objects_from_changes(cluster: Cluster) -> ObjectsSource:
    """A source for backends without ``objects()``: ``get`` every object any change named
    ("Kind ns/name"), skipping the ones that are gone (``BackendError``)."""

    def source() -> list[K8sObject]:
        docs: dict[str, object] = {}
        for change in cluster.changes:
            for ref in change.objects:
                kind, _, rest = ref.partition(" ")
                ns, _, name = rest.rpartition("/")
                try:
                    docs[ref] = cluster.get(kind, name, namespace=ns or None)
                except BackendError:
                    docs.pop(ref, None)
        return load_manifests(list(docs.values())) if docs else []

    return source
