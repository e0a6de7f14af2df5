"""The mesh's event loop on a thread of its own, so the facade can stay synchronous.

Notebooks already run an event loop (Jupyter's), so the proxies cannot borrow it: the
local backend owns one loop on one named daemon thread, submits coroutines to it with a
bound on every wait, and on close cancels what is left and joins the thread.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from egresskit.errors import WaitTimeout

T = TypeVar("T")


class LoopThread:
    def __init__(self, name: str = "egresskit-mesh") -> None:
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> LoopThread:
        self._thread.start()
        if not self._ready.wait(5.0):
            raise WaitTimeout("the mesh event loop to start", 5.0, "thread not running")
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._ready.set)
        try:
            self.loop.run_forever()
        finally:
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

    def call(self, coro: Coroutine[Any, Any, T], *, timeout: float, what: str) -> T:
        """Run ``coro`` on the loop and wait for its result, at most ``timeout`` seconds."""
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except TimeoutError as exc:
            future.cancel()
            raise WaitTimeout(what, timeout, "still running") from exc

    def stop(self, grace: float = 5.0) -> None:
        if not self._thread.is_alive():
            return

        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            if tasks:
                await asyncio.wait(tasks, timeout=grace)

        try:
            self.call(cancel_all(), timeout=grace + 1, what="mesh tasks to finish")
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(grace)
