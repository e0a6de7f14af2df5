"""The two ends of the proxy's HTTP/2 relay: one ``h2`` connection and its bytes.

Job: what :mod:`egresskit.mesh.http2` needs from a connection, client side or upstream
side -- the ``h2`` state, flushing its output, one event queue per stream, sending DATA as
the peer's flow-control windows allow (RFC 9113 section 5.2), and, for an upstream, the
task that reads its bytes. No policy here.

Rules: a stream's queue gets the ``h2`` events of that stream, then a marker when the
stream cannot continue (:class:`ClientReset`, :class:`UpstreamGone`); DATA nobody waits
for any more is acknowledged at once so the connection's window is not lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import h2.config
import h2.connection
import h2.events
import h2.exceptions

log = logging.getLogger(__name__)

#: Bytes read from an upstream at once.
_READ = 64 * 1024


class ClientReset:
    """Queue marker: the client reset its stream."""


class UpstreamGone:
    """Queue marker: the upstream connection ended (EOF, protocol error, GOAWAY)."""


Item = h2.events.Event | ClientReset | UpstreamGone


class Peer:
    """One HTTP/2 connection (the client's or an upstream's): ``h2`` state, its bytes out,
    one event queue per stream, and a wake-up for flow-control windows."""

    def __init__(
        self,
        conn: h2.connection.H2Connection,
        write: Callable[[bytes], None],
        drain: Callable[[float], Awaitable[None]],
    ) -> None:
        self.conn = conn
        self._write = write
        self._drain = drain
        self.streams: dict[int, asyncio.Queue[Item]] = {}
        self.window = asyncio.Event()
        self.dead = False

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data and not self.dead:
            self._write(data)

    def dispatch(self, events: list[h2.events.Event]) -> None:
        """Route stream events to their queues; wake window waiters."""
        for event in events:
            if isinstance(event, h2.events.WindowUpdated | h2.events.RemoteSettingsChanged):
                self.window.set()
                continue
            stream_id = getattr(event, "stream_id", None)
            if not stream_id:
                continue
            queue = self.streams.get(stream_id)
            if queue is not None:
                queue.put_nowait(event)
            elif isinstance(event, h2.events.DataReceived):
                # Nobody wants it any more: give the window back so others can send.
                with contextlib.suppress(h2.exceptions.H2Error):
                    self.conn.acknowledge_received_data(event.flow_controlled_length, stream_id)

    def fail_all(self) -> None:
        self.dead = True
        for queue in self.streams.values():
            queue.put_nowait(UpstreamGone())
        self.window.set()

    async def send_data(self, stream_id: int, data: bytes, deadline: float) -> None:
        """Send ``data`` on ``stream_id`` as the peer's windows allow, waiting until
        ``deadline`` (loop time) for them to open. h2 errors and timeouts propagate."""
        view = memoryview(data)
        while view:
            if self.dead:
                raise ConnectionResetError("the connection is gone")
            window = self.conn.local_flow_control_window(stream_id)
            if window <= 0:
                self.window.clear()
                async with asyncio.timeout_at(deadline):
                    await self.window.wait()
                continue
            n = min(window, self.conn.max_outbound_frame_size, len(view))
            self.conn.send_data(stream_id, bytes(view[:n]))
            view = view[n:]
            self.flush()
            await self._drain(deadline)


class Upstream:
    """A kept HTTP/2 connection to one upstream target, shared by the client's streams."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self.peer = Peer(conn, writer.write, self._drain)
        conn.initiate_connection()
        self.peer.flush()
        self.task = asyncio.get_running_loop().create_task(self._read(), name="h2 upstream read")

    async def _drain(self, deadline: float) -> None:
        async with asyncio.timeout_at(deadline):
            await self.writer.drain()

    async def _read(self) -> None:
        peer = self.peer
        try:
            while True:
                data = await self.reader.read(_READ)
                if not data:
                    break
                events = peer.conn.receive_data(data)
                peer.dispatch(events)
                peer.flush()
                if any(isinstance(e, h2.events.ConnectionTerminated) for e in events):
                    break
        except (OSError, h2.exceptions.H2Error) as exc:
            log.debug("h2 upstream: %s", exc)
            with contextlib.suppress(Exception):
                peer.flush()
        finally:
            peer.fail_all()
            self.writer.close()

    def usable(self) -> bool:
        conn = self.peer.conn
        return (
            not self.peer.dead
            and conn.open_outbound_streams < conn.remote_settings.max_concurrent_streams
        )

    def close(self) -> None:
        self.task.cancel()
        self.writer.close()
