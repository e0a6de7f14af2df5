"""The mesh's event loop on a thread of its own, so the facade can stay synchronous.

Notebooks already run an event loop (Jupyter's), so the proxies cannot borrow it: the
local backend owns one loop on one named daemon thread, submits coroutines to it with a
bound on every wait, and on close cancels what is left and joins the thread.

:class:`Channel` is the byte stream every proxied connection (client and upstream side)
is read and written through; :func:`connect` opens one to an upstream, :func:`relay`
pipes two together.

The loop is uvloop's when uvloop is installed (several times asyncio's throughput on the
proxy's data plane), else asyncio's own; the proxy uses only what both provide.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar, cast

from egresskit.errors import WaitTimeout

T = TypeVar("T")


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop when it is installed, else asyncio's default one."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class LoopThread:
    def __init__(self, name: str = "egresskit-mesh") -> None:
        self.loop = new_event_loop()
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


class Channel(asyncio.Protocol):
    """One TCP connection's bytes for the proxy: reads and drains with one lazy deadline.

    Rules: one reader and one drainer at a time (the relay's two pipes read different
    channels). A read returns every byte buffered (one chunk in the common case, so no
    copy), or b"" at EOF; it raises ``TimeoutError`` once ``deadline`` (loop time) passes,
    and the exception the connection was lost with. The deadline is one timer per
    connection that is only moved when a wait needs it earlier (a timer per read costs
    more than the rest of a proxied exchange); moving it later costs nothing, the timer
    re-arms itself when it fires early. Reading pauses above ``limit`` buffered bytes.

    Detection, TLS and opaque streams read through it; an HTTP/1 connection's transport
    is handed over to :mod:`egresskit.mesh.http1`'s Protocol once detected.
    """

    def __init__(
        self,
        *,
        on_open: Callable[[Channel], None] | None = None,
        on_lost: Callable[[Channel], None] | None = None,
        limit: int = 256 * 1024,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self._on_open = on_open
        self._on_lost = on_lost
        self._limit = limit
        self._chunks: list[bytes] = []
        self._size = 0
        self._eof = False
        self._lost = False
        self._exc: BaseException | None = None
        self._read_paused = False
        self._write_paused = False
        self._reader: asyncio.Future[None] | None = None
        self._drainer: asyncio.Future[None] | None = None
        self._deadline: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._closed: asyncio.Future[None] = self._loop.create_future()

    # -- protocol callbacks ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A cast, not an isinstance check: uvloop's transports do not subclass asyncio's.
        self.transport = cast(asyncio.Transport, transport)
        if self._on_open is not None:
            self._on_open(self)

    def data_received(self, data: bytes) -> None:
        self._chunks.append(data)
        self._size += len(data)
        if self._size > self._limit and not self._read_paused and self.transport is not None:
            self._read_paused = True
            self.transport.pause_reading()
        waiter = self._reader
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def eof_received(self) -> bool:
        self._eof = True
        waiter = self._reader
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        return True  # keep our half open: the answer may still have to go out

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = self._eof = True
        self._exc = exc
        for waiter in (self._reader, self._drainer):
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._closed.done():
            self._closed.set_result(None)
        if self._on_lost is not None:
            self._on_lost(self)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        waiter = self._drainer
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- the deadline ---------------------------------------------------------------

    def _arm(self, deadline: float) -> None:
        self._deadline = deadline
        if self._timer is None or self._timer_at > deadline:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = deadline
            self._timer = self._loop.call_at(deadline, self._expire)

    def _expire(self) -> None:
        self._timer = None
        waiters = [w for w in (self._reader, self._drainer) if w is not None and not w.done()]
        if not waiters or self._deadline is None:
            return
        if self._loop.time() < self._deadline:
            self._arm(self._deadline)  # the deadline moved on since the timer was set
            return
        for waiter in waiters:
            waiter.set_exception(TimeoutError())

    def take(self) -> bytes:
        """Every buffered byte, without waiting (b"" when there is none)."""
        chunks = self._chunks
        if not chunks:
            return b""
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self._size = 0
        if self._read_paused and self.transport is not None:
            self._read_paused = False
            self.transport.resume_reading()
        return data

    # -- reading and writing --------------------------------------------------------

    def _waiter(self, deadline: float | None) -> asyncio.Future[None]:
        """A future for one wait (read or drain), with the deadline moved to ``deadline``
        (None: no deadline); the timer fails the future with ``TimeoutError``."""
        if deadline is not None:
            self._arm(deadline)
        else:
            self._deadline = None
        return self._loop.create_future()

    async def read(self, deadline: float | None = None) -> bytes:
        """Every buffered byte, waiting for some first; b"" at EOF."""
        if not self._chunks:
            if self._eof:
                if self._exc is not None:
                    raise self._exc
                return b""
            waiter = self._reader = self._waiter(deadline)
            try:
                await waiter
            finally:
                self._reader = None
            if not self._chunks:
                if self._exc is not None:
                    raise self._exc
                return b""
        return self.take()

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    async def drain(self, deadline: float | None = None) -> None:
        """Wait until the peer takes our bytes (only while the write buffer is full)."""
        if self._lost:
            raise ConnectionResetError("connection lost")
        if not self._write_paused:
            return
        waiter = self._drainer = self._waiter(deadline)
        try:
            await waiter
        finally:
            self._drainer = None
        if self._lost:
            raise ConnectionResetError("connection lost")

    def at_eof(self) -> bool:
        """The peer closed its side and every byte it sent was read."""
        return self._eof and not self._chunks

    def is_closing(self) -> bool:
        return self._lost or self.transport is None or self.transport.is_closing()

    def can_write_eof(self) -> bool:
        return self.transport is not None and self.transport.can_write_eof()

    def write_eof(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write_eof()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    async def wait_closed(self, timeout: float) -> None:
        """Until the connection is gone; aborted (reset) after ``timeout`` seconds."""
        if self.transport is None or self._closed.done():
            return
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(self._closed)
        except TimeoutError:
            self.transport.abort()


async def connect(target: tuple[str, int], timeout: float) -> Channel:
    """A connection to ``target``, bounded by ``timeout``."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(timeout):
        _, channel = await loop.create_connection(Channel, *target)
    return channel


async def relay(client: Channel, upstream: Channel) -> None:
    """Pipe both directions until either side is done."""

    async def pipe(src: Channel, dst: Channel) -> None:
        try:
            while chunk := await src.read():
                dst.write(chunk)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                if dst.can_write_eof():
                    dst.write_eof()

    a = asyncio.create_task(pipe(client, upstream), name="relay client->upstream")
    b = asyncio.create_task(pipe(upstream, client), name="relay upstream->client")
    try:
        await asyncio.wait({a, b}, return_when=asyncio.ALL_COMPLETED)
    finally:
        for t in (a, b):
            t.cancel()
