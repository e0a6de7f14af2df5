"""HTTP/2 and gRPC through the egress proxy: the ``h2`` state machine driven by asyncio.

Job: serve one client connection that speaks HTTP/2 -- a port with a GRPCRoute (HTTP/2 with
no detection) or a detect port that saw the HTTP/2 preface (docs/facts/linkerd-egress.md
5.2). Each request stream is judged on its own by the engine, with the snapshot current
when its header block arrives, then either answered by the proxy (gRPC deny:
``grpc-status: 7`` "traffic not allowed" in a 200; HTTP deny: 403 with ``l5d-proxy-error``;
spec 3) or forwarded, as HTTP/2, to the original destination or an in-cluster Service over
one kept upstream HTTP/2 connection per target, messages streamed both ways with HTTP/2
flow control. The route and backend metrics are counted in ``outbound_grpc_route_*`` (a
GRPCRoute port) or ``outbound_http_route_*`` (a detect port), once per stream, before its
last frame reaches the client.

Faults and bounds (the HTTP/1 path's standards, :mod:`egresskit.mesh.http1`):

* bytes that are not HTTP/2 (HTTP/1 on a gRPC port included), a frame over 16 KiB, a header
  list over ``max_header_bytes``, more than 64 CONTINUATION frames, more than
  :data:`MAX_STREAMS` open streams: ``h2`` rejects them; the proxy sends its GOAWAY and
  closes the connection, no route metrics (Linkerd's HTTP/2 server fails the same way);
* a header block without ``:method``/``:scheme``/``:path``: that stream is reset
  (PROTOCOL_ERROR), the connection lives on;
* rapid reset (CVE-2023-44487): more than :data:`MAX_RESETS` streams reset by the client
  while being served, over half of those served: GOAWAY(ENHANCE_YOUR_CALM), closed;
* a client that sends no request within ``request_head_timeout``, or stays idle (no open
  stream) past ``idle_timeout`` (checked at least every ``idle_timeout``, so closed within
  two), gets a GOAWAY and is closed; a stream with no progress either way for
  ``idle_timeout`` is reset;
* upstream refused: 502 / ``grpc-status`` 14, ``error="REFUSED"``; no response head within
  ``response_timeout`` (one bound for the whole head, 1xx responses included): 504 / 14,
  ``error="RESPONSE_HEADERS_TIMEOUT"``; upstream reset or gone: ``error="RESET"`` /
  ``"IO"``; client reset: the upstream stream is reset, ``error="CANCEL"``.

Pure parts (header blocks, answers, status codes) are in :mod:`egresskit.mesh.http2_wire`;
the connections themselves (h2 state, queues, flow control) in :mod:`egresskit.mesh.http2_peer`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import h2.config
import h2.connection
import h2.events
import h2.exceptions
from h2.errors import ErrorCodes
from h2.settings import SettingCodes

from egresskit.mesh.http2_peer import ClientReset, Item, Peer, Upstream, UpstreamGone
from egresskit.mesh.http2_wire import (
    BadRequest,
    Headers,
    engine_request,
    error_answer,
    grpc_status,
    host_only,
    http_status,
    proxy_answer,
    read_head,
    upstream_headers,
)
from egresskit.policy.decision import Decision, HeaderEdit
from egresskit.policy.engine import decide

if TYPE_CHECKING:
    from egresskit.mesh.runtime import Channel
    from egresskit.mesh.settings import DataPlane

log = logging.getLogger(__name__)

#: SETTINGS_MAX_CONCURRENT_STREAMS we announce (hyper's server default is 200; 100 is the
#: value RFC 9113 section 6.5.2 recommends as a floor).
MAX_STREAMS = 100
#: Rapid reset (CVE-2023-44487): a client that opens a stream and resets it at once, over
#: and over, makes the proxy judge and open an upstream stream each time while never
#: holding more than one stream open. Past this many client resets of streams still being
#: served, when they are over half the streams served on the connection, the proxy sends
#: GOAWAY(ENHANCE_YOUR_CALM) and closes it. 20 is hyper's
#: ``max_pending_accept_reset_streams`` default (the h2 crate's, as of 0.4.0; hyperium/hyper
#: issue 2877); the half-of-the-streams rule is Envoy's premature-reset rule, so a long-lived
#: gRPC channel that cancels some calls is not cut.
MAX_RESETS = 20
_Record = Callable[[int | None, str | None, str], None]


async def serve_http2(
    proxy: DataPlane,
    client: Channel,
    buffered: bytes,
    port: int,
    fixed_ip: str | None,
) -> None:
    """Serve one HTTP/2 client connection (``buffered``: bytes already read, the preface
    included when detection saw it). Returns when the connection is done."""
    server = _Server(proxy, client, port, fixed_ip)
    try:
        await server.run(buffered)
    finally:
        await server.shutdown()


class _Server:
    """One client connection: the h2 server state, its stream tasks, its upstreams."""

    def __init__(self, proxy: DataPlane, client: Channel, port: int, fixed_ip: str | None) -> None:
        self.proxy = proxy
        self.config = proxy.config
        self.client = client
        self.port = port
        self.fixed_ip = fixed_ip
        self.loop = asyncio.get_running_loop()
        conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding=None)
        )
        self.peer = Peer(conn, client.write, client.drain)
        self.tasks: set[asyncio.Task[None]] = set()
        self.upstreams: dict[tuple[str, int], Upstream] = {}
        self.served = 0
        self.goaway = False
        #: Client resets of streams still being served (see MAX_RESETS).
        self.resets = 0
        self.calm = False

    async def run(self, buffered: bytes) -> None:
        peer = self.peer
        peer.conn.initiate_connection()
        peer.conn.update_settings(
            {
                SettingCodes.MAX_CONCURRENT_STREAMS: MAX_STREAMS,
                SettingCodes.MAX_HEADER_LIST_SIZE: self.config.max_header_bytes,
            }
        )
        # Until our SETTINGS are acknowledged h2 applies its own default header bound
        # (64 KiB); apply ours at once, so the first header block is bounded by it too.
        peer.conn.decoder.max_header_list_size = self.config.max_header_bytes
        peer.flush()
        data = buffered
        while True:
            if data:
                try:
                    events = peer.conn.receive_data(data)
                except h2.exceptions.H2Error as exc:
                    # Not HTTP/2, or HTTP/2 broken beyond one stream: h2 has queued its
                    # GOAWAY; send it and close (no route was chosen, no route metrics).
                    log.debug("proxy %s: HTTP/2 connection error: %s", self.proxy.pod, exc)
                    peer.flush()
                    return
                self._handle(events)
                peer.flush()
                if self.calm:
                    return  # GOAWAY(ENHANCE_YOUR_CALM) sent: shutdown() cancels the streams
            if self.goaway and not self.tasks:
                return
            # With streams open the wait is only a poll: a stream ending does not wake
            # this read, so an idle connection is closed within two idle timeouts.
            bound = self.config.idle_timeout if self.served else self.config.request_head_timeout
            try:
                data = await self.client.read(self.loop.time() + bound)
            except TimeoutError:
                if self.tasks:
                    data = b""
                    continue
                with contextlib.suppress(h2.exceptions.H2Error):
                    peer.conn.close_connection(ErrorCodes.NO_ERROR)
                peer.flush()
                return
            except OSError:
                return
            if not data:
                return

    def _handle(self, events: list[h2.events.Event]) -> None:
        for event in events:
            if self.calm:
                break
            if isinstance(event, h2.events.StreamReset) and event.stream_id in self.peer.streams:
                self.resets += 1
                if self.resets > MAX_RESETS and self.resets * 2 > self.served:
                    self._enhance_your_calm()
                    break
            if isinstance(event, h2.events.RequestReceived):
                stream_id = event.stream_id
                if len(self.tasks) >= MAX_STREAMS:
                    # Our SETTINGS bind the client only once acknowledged: bound it here too.
                    self._reset(stream_id, ErrorCodes.REFUSED_STREAM)
                    continue
                queue: asyncio.Queue[Item] = asyncio.Queue()
                self.peer.streams[stream_id] = queue
                ended = event.stream_ended is not None
                self.served += 1
                task = self.loop.create_task(
                    self._exchange(stream_id, list(event.headers or []), ended, queue),
                    name=f"proxy {self.proxy.pod} h2 stream {stream_id}",
                )
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
            elif isinstance(event, h2.events.ConnectionTerminated):
                self.goaway = True
        self.peer.dispatch([e for e in events if not isinstance(e, h2.events.RequestReceived)])

    def _enhance_your_calm(self) -> None:
        """Too many streams reset by the client while served (MAX_RESETS): GOAWAY and close."""
        log.debug(
            "proxy %s: HTTP/2 client reset %d of %d streams: GOAWAY ENHANCE_YOUR_CALM",
            self.proxy.pod,
            self.resets,
            self.served,
        )
        self.calm = True
        with contextlib.suppress(h2.exceptions.H2Error):
            self.peer.conn.close_connection(ErrorCodes.ENHANCE_YOUR_CALM)
        self.peer.flush()

    async def shutdown(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=2.0)
        for up in self.upstreams.values():
            up.close()
        self.upstreams.clear()

    # -- one stream ---------------------------------------------------------------------

    async def _exchange(
        self, stream_id: int, raw: Headers, ended: bool, queue: asyncio.Queue[Item]
    ) -> None:
        try:
            await self._serve(stream_id, raw, ended, queue)
        except (h2.exceptions.H2Error, OSError, TimeoutError) as exc:
            # The client's stream or connection went away under us: nothing to answer.
            log.debug("proxy %s: h2 stream %s: %s", self.proxy.pod, stream_id, exc)
        except Exception:
            # A bug, not the client's doing: say so loudly, but only this stream fails.
            log.exception("proxy %s: h2 stream %s failed", self.proxy.pod, stream_id)
            self._reset(stream_id, ErrorCodes.INTERNAL_ERROR)
        finally:
            self.peer.streams.pop(stream_id, None)

    def _reset(self, stream_id: int, code: ErrorCodes) -> None:
        with contextlib.suppress(h2.exceptions.H2Error):
            self.peer.conn.reset_stream(stream_id, code)
        self.peer.flush()

    def _answer(self, stream_id: int, headers: Headers, request_open: bool) -> None:
        """Send a whole answer (one header block with END_STREAM); a request still being
        sent is then cancelled with RST_STREAM(NO_ERROR) (RFC 9113 section 8.1)."""
        conn = self.peer.conn
        conn.send_headers(stream_id, headers, end_stream=True)
        if request_open:
            with contextlib.suppress(h2.exceptions.H2Error):
                conn.reset_stream(stream_id, ErrorCodes.NO_ERROR)
        self.peer.flush()

    async def _serve(
        self, stream_id: int, raw: Headers, ended: bool, queue: asyncio.Queue[Item]
    ) -> None:
        proxy = self.proxy
        started = time.monotonic()
        try:
            head = read_head(raw)
        except BadRequest as exc:
            log.debug("proxy %s: h2 stream %s: %s", proxy.pod, stream_id, exc)
            self._reset(stream_id, ErrorCodes.PROTOCOL_ERROR)
            return
        hostname = host_only(head.authority)
        dst_ip = proxy.resolve(hostname or None, self.fixed_ip)
        if dst_ip is None:
            self._answer(
                stream_id,
                error_answer(502, f"unknown host {head.authority!r}", grpc=head.grpc),
                not ended,
            )
            return
        request = engine_request(head, namespace=proxy.namespace, dst_ip=dst_ip, dst_port=self.port)
        # One snapshot per stream: judged entirely by the old or the new policy.
        decision = decide(proxy.snapshot(), request)
        if decision.outcome == "failed" or decision.family not in ("http", "grpc"):
            # The port cannot serve this request at all: no answer, no route metrics.
            self._reset(stream_id, ErrorCodes.REFUSED_STREAM)
            return
        record = self._recorder(decision, hostname, started)
        if decision.target is None or decision.http_status is not None:
            headers, grpc_name = proxy_answer(decision, grpc=head.grpc)
            record(decision.http_status or 502, grpc_name, "")
            self._answer(stream_id, headers, not ended)
            return
        target = proxy.upstreams(hostname or None, dst_ip, self.port, False, decision)
        if target is None:
            record(None, None, "REFUSED")
            message = "connection refused: nothing answers for this destination"
            self._answer(stream_id, error_answer(502, message, grpc=head.grpc), not ended)
            return
        try:
            up = await self._upstream(target)
        except (OSError, TimeoutError) as exc:
            record(None, None, "REFUSED")
            answer = error_answer(502, f"connection refused: {exc}", grpc=head.grpc)
            self._answer(stream_id, answer, not ended)
            return
        except asyncio.CancelledError:
            record(None, None, "CANCEL")  # the client's connection ended meanwhile
            raise
        await self._forward(stream_id, raw, ended, queue, up, decision, head.grpc, record)

    def _recorder(self, decision: Decision, hostname: str, started: float) -> _Record:
        """Count the stream in the route (and backend) metrics once; later calls do nothing."""
        metrics = self.proxy.metrics
        labels = decision.labels
        backend = decision.backend_labels or None
        recorded = False

        def record(status: int | None, grpc_name: str | None, error: str) -> None:
            nonlocal recorded
            if recorded or not labels:
                return
            recorded = True
            duration = time.monotonic() - started
            if decision.family == "grpc":
                metrics.grpc_request(
                    labels,
                    hostname=hostname,
                    grpc_status=grpc_name,
                    error=error,
                    duration_s=duration,
                )
                if backend is not None and (decision.target or decision.outcome == "invalid"):
                    # Counted with the response (the HTTP path's http_exchange does the same).
                    metrics.grpc_backend_request(labels, backend)
                    metrics.grpc_backend_response(
                        labels, backend, grpc_status=grpc_name, error=error, duration_s=duration
                    )
            else:
                invalid = decision.outcome == "invalid"
                metrics.http_exchange(
                    labels,
                    backend if (decision.target or invalid) else None,
                    hostname=hostname,
                    http_status=status,
                    error=error,
                    duration_s=duration,
                )

        return record

    async def _upstream(self, target: tuple[str, int]) -> Upstream:
        up = self.upstreams.get(target)
        if up is not None and up.usable():
            return up
        if up is not None:
            up.close()
        async with asyncio.timeout(self.config.connect_timeout):
            reader, writer = await asyncio.open_connection(*target)
        up = self.upstreams[target] = Upstream(reader, writer)
        return up

    async def _forward(
        self,
        stream_id: int,
        raw: Headers,
        ended: bool,
        queue: asyncio.Queue[Item],
        up: Upstream,
        decision: Decision,
        grpc: bool,
        record: _Record,
    ) -> None:
        upeer = up.peer
        up_id = upeer.conn.get_next_available_stream_id()
        up_queue: asyncio.Queue[Item] = asyncio.Queue()
        upeer.streams[up_id] = up_queue
        try:
            upeer.conn.send_headers(
                up_id, upstream_headers(raw, decision.request_headers), end_stream=ended
            )
            upeer.flush()
            pump = self.loop.create_task(
                self._pump_request(stream_id, queue, upeer, up_id, up_queue, ended),
                name=f"proxy {self.proxy.pod} h2 stream {stream_id} request",
            )
            try:
                await self._pump_response(
                    stream_id, upeer, up_id, up_queue, grpc, record, decision.response_header_edit
                )
            except (h2.exceptions.H2Error, OSError, TimeoutError, asyncio.CancelledError):
                # The client's side went away (reset, closed, window never opened, or the
                # whole connection ended) while the response was being relayed: nobody gets
                # the rest; stop the upstream too.
                record(None, None, "CANCEL")
                with contextlib.suppress(h2.exceptions.H2Error):
                    upeer.conn.reset_stream(up_id, ErrorCodes.CANCEL)
                upeer.flush()
                raise
            finally:
                pump.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await pump
        finally:
            upeer.streams.pop(up_id, None)

    async def _next(self, queue: asyncio.Queue[Item], deadline: float) -> Item:
        async with asyncio.timeout_at(deadline):
            return await queue.get()

    async def _pump_request(
        self,
        stream_id: int,
        queue: asyncio.Queue[Item],
        upeer: Peer,
        up_id: int,
        up_queue: asyncio.Queue[Item],
        ended: bool,
    ) -> None:
        """Client -> upstream: DATA (acknowledged to the client only once passed on, so a
        slow upstream slows the client: HTTP/2 flow control end to end), trailers, END."""
        peer = self.peer
        idle = self.config.idle_timeout
        try:
            while True:
                # After the request ended, only a reset can still come: wait without bound
                # (the response side bounds the exchange).
                item = await (queue.get() if ended else self._next(queue, self.loop.time() + idle))
                if isinstance(item, h2.events.StreamReset):
                    with contextlib.suppress(h2.exceptions.H2Error):
                        upeer.conn.reset_stream(up_id, ErrorCodes.CANCEL)
                    upeer.flush()
                    up_queue.put_nowait(ClientReset())
                    return
                if ended:
                    continue
                if isinstance(item, h2.events.DataReceived):
                    await upeer.send_data(up_id, item.data or b"", self.loop.time() + idle)
                    with contextlib.suppress(h2.exceptions.H2Error):
                        peer.conn.acknowledge_received_data(item.flow_controlled_length, stream_id)
                    peer.flush()
                elif isinstance(item, h2.events.TrailersReceived):
                    upeer.conn.send_headers(up_id, list(item.headers or []), end_stream=True)
                    upeer.flush()
                    ended = True
                elif isinstance(item, h2.events.StreamEnded):
                    with contextlib.suppress(h2.exceptions.H2Error):
                        upeer.conn.end_stream(up_id)
                    upeer.flush()
                    ended = True
        except (TimeoutError, h2.exceptions.H2Error, OSError):
            # The client stalled its body, or either side's stream closed: give up the
            # exchange; the response side sees the reset.
            with contextlib.suppress(h2.exceptions.H2Error):
                upeer.conn.reset_stream(up_id, ErrorCodes.CANCEL)
            upeer.flush()
            up_queue.put_nowait(ClientReset())

    async def _pump_response(
        self,
        stream_id: int,
        upeer: Peer,
        up_id: int,
        up_queue: asyncio.Queue[Item],
        grpc: bool,
        record: _Record,
        edit: HeaderEdit | None,
    ) -> None:
        """Upstream -> client: the response head (bounded by ``response_timeout``) with the
        route's ResponseHeaderModifier applied, DATA, trailers; counted in the metrics before
        the last frame goes to the client."""
        peer = self.peer
        conn = peer.conn
        # One bound for the whole response head, 1xx responses included: an upstream
        # sending 100 Continue forever must not hold the stream past response_timeout.
        deadline = self.loop.time() + self.config.response_timeout
        try:
            item = await self._next(up_queue, deadline)
            while isinstance(item, h2.events.InformationalResponseReceived):
                item = await self._next(up_queue, deadline)
        except TimeoutError:
            with contextlib.suppress(h2.exceptions.H2Error):
                upeer.conn.reset_stream(up_id, ErrorCodes.CANCEL)
            upeer.flush()
            record(None, None, "RESPONSE_HEADERS_TIMEOUT")
            message = "response headers timeout: the upstream did not answer in time"
            self._answer(stream_id, error_answer(504, message, grpc=grpc), True)
            return
        if not isinstance(item, h2.events.ResponseReceived):
            kind = self._fault(item)
            record(None, None, kind)
            if kind != "CANCEL":
                message = f"{kind.lower()}: the upstream ended the stream before its response"
                self._answer(stream_id, error_answer(502, message, grpc=grpc), True)
            return
        headers = upstream_headers(list(item.headers or []), edit)
        status = http_status(headers)
        name = grpc_status(headers)  # a trailers-only response carries it here
        if item.stream_ended is not None:
            record(status, name, "")
            conn.send_headers(stream_id, headers, end_stream=True)
            peer.flush()
            return
        conn.send_headers(stream_id, headers)
        peer.flush()
        idle = self.config.idle_timeout
        while True:
            try:
                item = await self._next(up_queue, self.loop.time() + idle)
            except TimeoutError:
                record(status, name, "RESPONSE_STREAM_TIMEOUT")
                self._reset(stream_id, ErrorCodes.CANCEL)
                with contextlib.suppress(h2.exceptions.H2Error):
                    upeer.conn.reset_stream(up_id, ErrorCodes.CANCEL)
                upeer.flush()
                return
            if isinstance(item, h2.events.DataReceived):
                await peer.send_data(stream_id, item.data or b"", self.loop.time() + idle)
                with contextlib.suppress(h2.exceptions.H2Error):
                    upeer.conn.acknowledge_received_data(item.flow_controlled_length, up_id)
                upeer.flush()
            elif isinstance(item, h2.events.TrailersReceived):
                trailers = list(item.headers or [])
                record(status, grpc_status(trailers) or name, "")
                conn.send_headers(stream_id, trailers, end_stream=True)
                peer.flush()
                return
            elif isinstance(item, h2.events.StreamEnded):
                record(status, name, "")
                conn.end_stream(stream_id)
                peer.flush()
                return
            elif isinstance(item, h2.events.StreamReset | UpstreamGone | ClientReset):
                kind = self._fault(item)
                record(status, name, kind)
                if kind != "CANCEL":
                    self._reset(stream_id, ErrorCodes.INTERNAL_ERROR)
                return

    @staticmethod
    def _fault(item: Item) -> str:
        """The metric ``error`` label for how a stream ended early."""
        if isinstance(item, ClientReset):
            return "CANCEL"
        if isinstance(item, h2.events.StreamReset):
            return "RESET"
        return "IO"
