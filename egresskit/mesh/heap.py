"""Keep the garbage collector's full collections from stalling the mesh's event loop.

CPython (3.11) runs a full collection whenever the objects promoted to its oldest
generation since the last one reach a quarter of that generation; a full collection walks
every tracked object with the GIL held. Everything the mesh loads before it serves (the
modules, the simulated internet's apps, a notebook's kernel) is most of that heap and
lives as long as the process, yet every full collection walks it again: measured on the
data-plane benchmark, one full collection of the ~200,000 objects a local cluster holds
takes ~90 ms, during which the proxies answer nothing (p99 62 ms under load, against 2 ms
without). In a notebook kernel the heap, and so each stall, is larger.

:func:`settle` moves that long-lived heap out of the collector's sight once per process
(``gc.freeze``, the permanent generation: https://docs.python.org/3/library/gc.html#gc.freeze),
after a collection so that no garbage is frozen with it. Later objects are collected as
before; frozen ones are still freed by reference counting, only a cycle among them that
becomes garbage later is never collected. Once per process, not per cluster: a notebook
that re-creates its cluster would otherwise freeze the previous cluster's cycles each time.
"""

from __future__ import annotations

import gc
import threading

_lock = threading.Lock()
_settled = False


def settle() -> bool:
    """Collect, then freeze the heap, the first time it is called in this process.

    Returns whether this call did it. Thread-safe: clusters may start on several threads.
    """
    global _settled
    with _lock:
        if _settled:
            return False
        _settled = True
        gc.collect()
        gc.freeze()
        return True
