"""The heap a local cluster starts with is kept out of the collector's full collections
(egresskit/mesh/heap.py): counted, in a fresh interpreter, never timed."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import threading

import pytest

from egresskit.mesh import heap

# Runs in a fresh interpreter: the freeze is once per process, and pytest's own heap would
# say nothing about what a notebook kernel or `egresskit run` gets.
_PROBE = """
import gc, json
from egresskit.cluster.local import LocalCluster
from egresskit import guide
tracked_before = len(gc.get_objects())
frozen_before = gc.get_freeze_count()
with LocalCluster() as first:
    frozen_after_first = gc.get_freeze_count()
    first.apply(guide.NAMESPACE)
    first.apply(guide.EGRESS_NETWORK)
    first.apply(guide.CLIENT_POD)
    gc.collect()
    oldest_after_apply = len(gc.get_objects(generation=2))
with LocalCluster():
    frozen_after_second = gc.get_freeze_count()
print(json.dumps(dict(
    tracked_before=tracked_before, frozen_before=frozen_before,
    frozen_after_first=frozen_after_first, frozen_after_second=frozen_after_second,
    oldest_after_apply=oldest_after_apply,
)))
"""


def test_a_started_cluster_leaves_its_loaded_heap_out_of_full_collections() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=90, check=True
    )
    n = json.loads(out.stdout.strip().splitlines()[-1])
    assert n["frozen_before"] == 0
    # Everything imported before the cluster (egresskit, httpbin, jsonschema, ...) and the
    # cluster itself is frozen: at least what was tracked before it started.
    assert n["frozen_after_first"] >= n["tracked_before"] > 50_000, n
    # What a full collection still walks after the guide's first steps is a small part of
    # the process: that is what bounds the pause (about 0.5 us per object here).
    assert n["oldest_after_apply"] < n["frozen_after_first"] // 2, n
    # Once per process: a second cluster freezes nothing more (a notebook re-creating its
    # cluster must not freeze the previous one's cycles each time). Frozen objects are
    # still freed by reference counting, so the count may only shrink.
    assert n["frozen_after_second"] <= n["frozen_after_first"], n


def test_settle_runs_once_when_threads_race(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(heap, "_settled", False)
    monkeypatch.setattr(gc, "freeze", lambda: calls.append("freeze"))
    monkeypatch.setattr(gc, "collect", lambda *a: calls.append("collect") or 0)
    barrier = threading.Barrier(8)
    results: list[bool] = []

    def start() -> None:
        barrier.wait()
        results.append(heap.settle())

    threads = [threading.Thread(target=start) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(results) == [False] * 7 + [True]
    assert calls == ["collect", "freeze"]
