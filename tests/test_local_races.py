"""Writes from several threads at once keep every pod's proxy (reviewer finding: a
reconcile working from a store read taken before another thread's write stopped that
thread's new pod's proxy as if it had been deleted).

Deterministic, not timing-based: thread A is paused inside its read of the store, and
thread B's whole apply is let run until it either finishes (the race: B reconciled in
between) or is seen blocked on the cluster's lock (the fix: A's read and reconcile are
one step).
"""

from __future__ import annotations

import threading
from typing import Any

from egresskit import guide
from egresskit.cluster.local import LocalCluster
from egresskit.manifests.model import Pod

NS = guide.NAMESPACE_NAME
POD2 = guide.CLIENT_POD.replace("name: client\n", "name: client2\n")


class _WatchedLock:
    """The cluster's RLock, reporting when thread ``watch`` has to wait for it."""

    def __init__(self, inner: Any, watch: str, blocked: threading.Event) -> None:
        self._inner, self._watch, self._blocked = inner, watch, blocked

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if self._inner.acquire(blocking=False):
            return True
        if threading.current_thread().name == self._watch:
            self._blocked.set()
        return bool(self._inner.acquire(blocking, timeout))

    def release(self) -> None:
        self._inner.release()

    def __enter__(self) -> _WatchedLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def test_two_threads_applying_distinct_pods_both_keep_a_running_proxy() -> None:
    assert POD2 != guide.CLIENT_POD
    with LocalCluster() as cluster:
        cluster.apply([guide.NAMESPACE])
        b_moved = threading.Event()  # B finished its apply, or waits on the lock
        cluster._lock = _WatchedLock(cluster._lock, "B", b_moved)  # type: ignore[assignment]
        errors: list[BaseException] = []

        def run(manifest: str) -> None:
            try:
                cluster.apply(manifest)
            except BaseException as exc:  # reported by the assertion below
                errors.append(exc)
            finally:
                if threading.current_thread().name == "B":
                    b_moved.set()

        b = threading.Thread(target=run, args=(POD2,), name="B")
        original = cluster.store.objects
        paused = False

        def objects_pausing_a() -> list[Any]:
            nonlocal paused
            objs = original()
            if threading.current_thread().name == "A" and not paused:
                paused = True
                b.start()  # B's whole apply runs while A holds this read
                assert b_moved.wait(60), "thread B neither finished its apply nor blocked"
            return objs

        cluster.store.objects = objects_pausing_a  # type: ignore[method-assign]
        a = threading.Thread(target=run, args=(guide.CLIENT_POD,), name="A")
        a.start()
        a.join(60)
        b.join(60)
        assert not a.is_alive() and not b.is_alive(), "an apply thread did not finish in 60 s"
        cluster.store.objects = original  # type: ignore[method-assign]
        assert paused, "thread A never read the store"
        assert errors == []
        stored = sorted(o.name for o in cluster.objects() if isinstance(o, Pod))
        assert stored == ["client", "client2"]
        running = sorted(
            name for (ns, name), rt in cluster._pods.items() if ns == NS and rt.proxy is not None
        )
        assert running == stored, f"stored pods {stored}, pods with a running proxy {running}"
        for pod in stored:
            assert (
                cluster.curl("-sS", "http://httpbin.org/get", pod=pod, namespace=NS).exit_code == 0
            )
