"""HTTP/1.1 through the egress proxy, bodies streamed (httptools, on :class:`Channel`).

Job: read each request head, ask the policy engine with the snapshot current at that
moment, then either answer for the proxy (403 deny, 500 invalid backend, 3xx redirect
filter, 502/504 upstream faults) or forward to the original destination / in-cluster
Service over a kept-alive upstream connection, streaming the body both ways, and record
the route and backend metrics.

Faults, as Linkerd's proxy (hyper) answers them:

* a malformed request head gets 400, a head over ``max_header_bytes`` 431, and the
  connection closes (hyper's ``on_parse_error``); no route metrics, no route was chosen;
* a client that does not finish its head within ``request_head_timeout`` (slowloris), or
  stays idle between requests past ``idle_timeout``, is closed without an answer;
* an upstream that refuses gets 502 ``error="REFUSED"``, one that does not send its
  response head within ``response_timeout`` 504 ``error="RESPONSE_HEADERS_TIMEOUT"``,
  any other upstream I/O fault 502 ``error="IO"``; the route metric then has
  ``http_status=""`` (spec 6.2: empty when the stream ended in an error). These
  answers carry ``l5d-proxy-error`` and ``connection: close`` and the client connection
  closes after them;
* a request the port cannot serve at all (plaintext on an SNI-required TLS port, HTTP/1
  on a gRPC port: engine outcome ``failed``) is closed without an answer, as the proxy's
  failed protocol detection does (spec 5.2).

Wire rules (hyper's, and what the h11-based version of this module did): header names
go out in lower case; ``Expect: 100-continue`` is answered by the proxy when it starts
reading the body; a body is re-framed per hop (chunked stays chunked, a close-delimited
response goes to an HTTP/1.1 client chunked, to an HTTP/1.0 one close-delimited);
pipelined requests are served in order; an upgrade (101) or an accepted ``CONNECT``
turns the connection into a tunnel. Assumption: a declined upgrade or CONNECT gets its
answer and the connection closes (the bytes after it are not HTTP we could parse).

Rules: every wait is bounded by a :class:`~egresskit.mesh.settings.ProxyConfig` value;
every forwarded request that gets an answer is counted exactly once in the route
metrics, before its last byte reaches the client.

One path: every exchange, the first on a connection or the thousandth, identical to the
last or not, takes the code below (issue 11: two paths kept equal by parity tests, and
caches of byte-identical heads that only a benchmark of identical requests used, were
complexity without a user). Speed comes from no task or timer per read (the
:class:`Channel` has one lazy deadline per connection), one write per direction when the
whole message is at hand, one metrics call per exchange.

Framing (RFC 9112 section 6) is decided in one place,
:mod:`egresskit.mesh.http1_framing`, when the parser completes a head: a head it
refuses is never judged or forwarded, and what goes on carries the framing used.

The bytes themselves (messages, parsers, serialisation) are in the pure
:mod:`egresskit.mesh.http1_wire`; this module is the I/O around them.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from egresskit.mesh.http1_wire import (
    End,
    Fault,
    Request,
    RequestParser,
    Response,
    ResponseParser,
    chunk,
    edit_headers,
    expects_continue,
    host_only,
    last_chunk,
    one_host,
    reason_phrase,
    request_head,
    response_line,
    response_plan,
    switches,
)
from egresskit.mesh.runtime import Channel, connect, relay
from egresskit.policy.decision import Decision, HttpRequest
from egresskit.policy.engine import decide

if TYPE_CHECKING:
    from egresskit.mesh.settings import DataPlane

#: How long a rejected client may keep sending before the socket is closed anyway: long
#: enough for it to read the 400/431 instead of a reset (RFC 9112 section 9.6).
LINGER_SECONDS = 0.5


class _ClientGone(Exception):
    """The client closed, broke or stalled the connection."""


class _HeadTimeout(Exception):
    """The client did not (finish) sending a request head in time."""


class _UpstreamError(Exception):
    """An upstream fault: ``kind`` is the metric ``error`` label, ``status`` the answer."""

    def __init__(self, kind: str, status: int, message: str) -> None:
        self.kind = kind
        self.status = status
        super().__init__(message)


# ====================================================================== one connection


async def serve_http1(
    proxy: DataPlane,
    client: Channel,
    buffered: bytes,
    port: int,
    fixed_ip: str | None,
) -> None:
    conn = _Connection(proxy, client, port, fixed_ip)
    try:
        await conn.run(buffered)
    finally:
        for up in conn.pool.values():
            up.close()


class _Upstream:
    """A kept-alive upstream connection and its response parser."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.responses = ResponseParser()
        self.reused = False

    def usable(self) -> bool:
        # Not idle: among others, the server closed its idle keep-alive connection.
        responses = self.responses
        # Events left over (an upstream that answered twice): not fit for a new request.
        return not (responses.busy or responses.dead or responses.events) and self.channel.idle()

    def close(self) -> None:
        self.channel.close()


class _Connection:
    """One client connection's HTTP/1 state: parser, upstream pool."""

    def __init__(self, proxy: DataPlane, client: Channel, port: int, fixed_ip: str | None) -> None:
        self.proxy = proxy
        self.config = proxy.config
        self.client = client
        self.port = port
        self.dst_ip = fixed_ip
        self.loop = asyncio.get_running_loop()
        self.requests = RequestParser(self.config.max_header_bytes)
        self.pool: dict[tuple[str, int], _Upstream] = {}
        self.head_sent = False
        #: Whether the current request's body was read to its end (nothing to drain).
        self.body_done = False

    # -- the request loop -------------------------------------------------------------

    async def run(self, buffered: bytes) -> None:
        if buffered:
            self.requests.feed(buffered)
        while True:
            try:
                event = await self._next_head()
            except (_HeadTimeout, _ClientGone):
                return  # hyper closes a slow or idle client without an answer
            if isinstance(event, Fault):
                await self._reject(event.status)
                return
            if event is None:
                return
            if not await self._serve(event):
                return

    async def _next_head(self) -> Request | Fault | None:
        """The next request head: ``idle`` bounds the wait for its first byte, ``head``
        the whole head from there (one deadline, so trickling bytes cannot extend it)."""
        requests = self.requests
        events = requests.events
        loop = self.loop
        deadline = loop.time() + self.config.request_head_timeout if requests.head_open else None
        while not events:
            if requests.dead:
                return None  # after an upgrade: nothing more to parse
            wait = deadline if deadline is not None else loop.time() + self.config.idle_timeout
            try:
                data = await self.client.read(wait)
            except TimeoutError as exc:
                raise _HeadTimeout() from exc
            except OSError as exc:
                raise _ClientGone() from exc
            if not data:
                # EOF: clean between requests, a 400 in the middle of a head (h11's and
                # hyper's "incomplete message").
                return Fault(400) if requests.head_open else None
            requests.feed(data)
            if deadline is None and requests.head_open:
                deadline = loop.time() + self.config.request_head_timeout
        event = events.popleft()
        if isinstance(event, Request | Fault):
            return event
        return Fault(400)  # a body piece where a head belongs cannot happen; be safe

    async def _serve(self, req: Request) -> bool:
        """Serve one request; False when the client connection must close afterwards."""
        proxy = self.proxy
        self.body_done = False
        host_raw = one_host(req)
        if host_raw is False or (host_raw is None and req.version == "1.1"):
            # h11 and hyper: one Host only; RFC 9112 3.2: an HTTP/1.1 request needs one.
            await self._reject(400)
            return False
        host = host_raw.decode("latin-1") if host_raw is not None else None
        if self.dst_ip is None:
            # A name-routed listener: the original destination is the Host's address,
            # fixed for the connection as iptables would have fixed it.
            self.dst_ip = proxy.resolve(host_only(host), None)
            if self.dst_ip is None:
                await self._drain_body()
                await self._respond(502, [("l5d-proxy-error", f"unknown host {host!r}")], req)
                return False
        request, decision = self._decide(req, host, self.dst_ip)
        self.head_sent = False
        self.body_done = False
        return await self._handle(req, request, decision)

    def _decide(self, req: Request, host: str | None, dst_ip: str) -> tuple[HttpRequest, Decision]:
        """The engine's decision for ``req`` under the snapshot current now: one snapshot
        per request, so it is judged entirely by the old or the new policy."""
        snap = self.proxy.snapshot()
        request = HttpRequest(
            client_namespace=self.proxy.namespace,
            dst_ip=dst_ip,
            dst_port=self.port,
            method=req.method.decode("ascii"),
            path=req.target.decode("latin-1"),
            host=host,
            headers=tuple([(k.decode("latin-1"), v.decode("latin-1")) for k, v in req.headers]),
        )
        return request, decide(snap, request)

    async def _handle(self, req: Request, request: HttpRequest, decision: Decision) -> bool:
        started = time.monotonic()
        hostname = host_only(request.host) or ""
        metrics = self.proxy.metrics
        labels = decision.labels
        if decision.outcome == "failed" or (decision.family not in ("http", None)):
            # The port does not serve HTTP/1 (SNI-required TLS, gRPC/HTTP/2, opaque on a
            # name-routed listener): the proxy's protocol handling fails and the connection
            # closes with no answer and no route metrics (spec 5.2).
            return False

        if decision.target is None or decision.http_status is not None:
            # The proxy answers itself: drain the request body first, then respond.
            drained = await self._drain_body()
            answer = decision.http_status or 502
            # Counted before the answer goes out, so a client that has its answer can
            # already see it in the metrics.
            if labels:
                backend = (
                    decision.backend_labels
                    if decision.outcome == "invalid" and decision.backend_labels
                    else None
                )
                metrics.http_exchange(
                    labels,
                    backend,
                    hostname=hostname,
                    http_status=answer,
                    error="",
                    duration_s=time.monotonic() - started,
                )
            sent = await self._respond(answer, list(decision.response_headers), req)
            return sent and drained

        target = self._target(hostname, request, decision)
        record = self._recorder(decision, hostname, started)

        async def forward() -> bool:
            if target is None:
                raise _UpstreamError("REFUSED", 502, "nothing answers for this destination")
            return await self._forward(req, decision, target, record)

        return await self._guarded(req, record, forward)

    def _recorder(self, decision: Decision, hostname: str, started: float) -> _Record:
        """Count the exchange in the route metrics once (later calls do nothing)."""
        labels = decision.labels
        metrics = self.proxy.metrics
        recorded = False

        def record(status: int | None, error: str) -> None:
            nonlocal recorded
            if recorded or not labels:
                return
            recorded = True
            metrics.http_exchange(
                labels,
                decision.backend_labels or None,
                hostname=hostname,
                http_status=status,
                error=error,
                duration_s=time.monotonic() - started,
            )

        return record

    async def _guarded(
        self, req: Request, record: _Record, step: Callable[[], Awaitable[bool]]
    ) -> bool:
        """Run a forwarded exchange's ``step``; upstream faults get the proxy's answer."""
        try:
            return await step()
        except _UpstreamError as exc:
            record(None, exc.kind)
            if not self.head_sent:
                await self._drain_body()
                error = f"{exc.kind.lower().replace('_', ' ')}: {exc}"
                await self._respond(
                    exc.status, [("l5d-proxy-error", error), ("connection", "close")], req
                )
            return False
        except _ClientGone:
            # The client went away (or stalled its body) mid-exchange: nobody gets an answer.
            record(None, "CANCEL")
            return False

    def _target(
        self, hostname: str, request: HttpRequest, decision: Decision
    ) -> tuple[str, int] | None:
        return self.proxy.upstreams(
            hostname or None, request.dst_ip, request.dst_port, False, decision
        )

    # -- forwarding -------------------------------------------------------------------

    async def _forward(
        self,
        req: Request,
        decision: Decision,
        target: tuple[str, int],
        record: _Record,
    ) -> bool:
        head = self._upstream_head(req, decision)
        if head is None:
            # h11 (the client side before) refuses to send an HTTP/1.1 request without one.
            raise _UpstreamError("IO", 502, "request: Missing mandatory Host: header")
        body, complete = self._take_body(req)
        up = await self._upstream(target)
        head_only = req.method == b"HEAD"
        up.responses.expect(head_only=head_only)
        if complete and not body:
            await self._send_upstream(up, head)
            return await self._after_send(req, decision, target, up, head, record)
        await self._send_upstream(up, head + body if body else head)
        if not complete:
            if not body and expects_continue(req):
                # hyper answers ``Expect: 100-continue`` itself when the body is read.
                await self._client_write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await self._stream_body(req, up)
        return await self._after_send(req, decision, target, up, None, record)

    async def _after_send(
        self,
        req: Request,
        decision: Decision,
        target: tuple[str, int],
        up: _Upstream,
        retry: bytes | None,
        record: _Record,
    ) -> bool:
        """The request is with the upstream: wait for its response and pass it on.

        ``retry``: the whole request (a head without a body), to send again on a fresh
        connection if a kept-alive one turns out closed.
        """
        try:
            resp = await self._response_head(up)
        except _UpstreamError as exc:
            if retry is None or not (up.reused and exc.kind == "IO"):
                raise
            # A kept-alive upstream connection may have been closed by the server just
            # then; a request without a body can go again on a fresh one (RFC 9112 9.3.1).
            up.close()
            self.pool.pop(target, None)
            up = await self._upstream(target)
            up.responses.expect(head_only=req.method == b"HEAD")
            await self._send_upstream(up, retry)
            resp = await self._response_head(up)
        if req.upgrade and switches(req, resp):
            return await self._tunnel(req, resp, decision, up, target, record)
        return await self._respond_upstream(req, resp, decision, up, target, record)

    def _upstream_head(self, req: Request, decision: Decision) -> bytes | None:
        """The request head as it goes upstream (None: no Host left after the edits)."""
        headers = edit_headers(req.headers, decision.request_headers)
        return request_head(req, headers) if any(k == b"host" for k, _ in headers) else None

    def _take_body(self, req: Request) -> tuple[bytes, bool]:
        """The request body bytes at hand, framed for the upstream, and whether it is all."""
        events = self.requests.events
        if not events:
            return b"", False
        chunked = req.body == "chunked"
        parts: list[bytes] = []
        while events:
            event = events[0]
            if isinstance(event, bytes):
                events.popleft()
                parts.append(chunk(event) if chunked else event)
            elif isinstance(event, End):
                events.popleft()
                self.body_done = True
                if chunked:
                    parts.append(last_chunk(event.trailers))
                return b"".join(parts), True
            else:
                break  # a fault: the body did not finish
        return b"".join(parts), False

    async def _stream_body(self, req: Request, up: _Upstream) -> None:
        """Stream the rest of the request body as it arrives: never buffered whole."""
        requests = self.requests
        while True:
            if not requests.events:
                if requests.dead:
                    raise _ClientGone()
                try:
                    data = await self.client.read(self.loop.time() + self.config.idle_timeout)
                except (OSError, TimeoutError) as exc:
                    raise _ClientGone() from exc
                if not data:
                    raise _ClientGone()
                requests.feed(data)
            body, complete = self._take_body(req)
            if body:
                await self._send_upstream(up, body)
            if complete:
                return
            if requests.events and isinstance(requests.events[0], Fault):
                raise _ClientGone()

    async def _send_upstream(self, up: _Upstream, data: bytes) -> None:
        ch = up.channel
        try:
            if ch.is_closing():
                raise ConnectionResetError("the upstream connection is closed")
            ch.write(data)
            await ch.drain(self.loop.time() + self.config.response_timeout)
        except (OSError, RuntimeError) as exc:  # TimeoutError included
            raise _fault(exc, phase="request") from exc

    async def _response_head(self, up: _Upstream) -> Response:
        """The response head; ``response_timeout`` bounds each read."""
        # _fill inlined: this wait sits at the bottom of the deepest await chain, and every
        # resumption walks the whole chain.
        responses = up.responses
        events = responses.events
        while not events:
            if responses.dead:
                raise _UpstreamError("IO", 502, "head: the upstream sent malformed HTTP")
            try:
                data = await up.channel.read(self.loop.time() + self.config.response_timeout)
            except (OSError, TimeoutError) as exc:
                raise _fault(exc, phase="head") from exc
            if not data:
                break
            responses.feed(data)
        event = events.popleft() if events else None
        if not isinstance(event, Response):
            raise _UpstreamError("IO", 502, "the upstream closed the connection without a response")
        return event

    async def _fill(self, up: _Upstream, phase: str) -> None:
        """Read until some upstream event is queued; ``response_timeout`` bounds each read."""
        responses = up.responses
        events = responses.events
        while not events:
            if responses.dead:
                raise _UpstreamError("IO", 502, f"{phase}: the upstream sent malformed HTTP")
            try:
                data = await up.channel.read(self.loop.time() + self.config.response_timeout)
            except (OSError, TimeoutError) as exc:
                raise _fault(exc, phase=phase) from exc
            if not data:
                if phase == "body" and responses.busy:
                    events.append(End([]))  # the caller knows whether EOF may end the body
                    return
                raise _UpstreamError("IO", 502, f"{phase}: the upstream closed the connection")
            responses.feed(data)

    async def _respond_upstream(
        self,
        req: Request,
        resp: Response,
        decision: Decision,
        up: _Upstream,
        target: tuple[str, int],
        record: _Record,
    ) -> bool:
        status = resp.status
        parts, chunked, keep, keep_up = response_plan(req, resp, decision)
        framing = "eof" if resp.body == "eof" and req.method != b"HEAD" else ""
        self.head_sent = True
        events = up.responses.events
        # One event of look-ahead, so the response is counted before its last bytes
        # reach the client (a client that has its answer can already see it counted).
        try:
            while True:
                done = False
                while events and not done:
                    event = events.popleft()
                    if isinstance(event, bytes):
                        parts.append(chunk(event) if chunked else event)
                    elif isinstance(event, End):
                        if framing != "eof" and up.responses.busy:
                            # EOF before the announced end of the body.
                            record(status, "IO")
                            raise _UpstreamError("IO", 502, "the upstream body was cut short")
                        if chunked:
                            parts.append(last_chunk(event.trailers))
                        done = True
                    else:
                        record(status, "IO")
                        raise _UpstreamError("IO", 502, "unexpected upstream event")
                if done:
                    record(status, "")
                    await self._client_write(b"".join(parts))
                    break
                if parts:
                    await self._client_write(b"".join(parts))
                    parts = []
                try:
                    await self._fill(up, "body")
                except _UpstreamError as exc:
                    record(status, exc.kind)
                    raise
        except _ClientGone:
            record(status, "CANCEL")
            raise
        if not keep_up or up.responses.busy or up.responses.dead:
            up.close()
            self.pool.pop(target, None)
        return keep

    async def _tunnel(
        self,
        req: Request,
        resp: Response,
        decision: Decision,
        up: _Upstream,
        target: tuple[str, int],
        record: _Record,
    ) -> bool:
        """An accepted upgrade or CONNECT: the head goes back, then bytes both ways."""
        self.pool.pop(target, None)
        headers = edit_headers(resp.headers, decision.response_header_edit)
        parts = [response_line(resp.status, resp.reason)]
        for name, value in headers:
            parts += (name, b": ", value, b"\r\n")
        parts.append(b"\r\n")
        responses = up.responses
        while responses.events:  # bytes the upstream sent right after its head
            event = responses.events.popleft()
            if isinstance(event, bytes):
                parts.append(event)
        if responses.rest:
            parts.append(responses.rest)
        self.head_sent = True
        record(resp.status, "")
        try:
            await self._client_write(b"".join(parts))
            rest = self.requests.rest
            if rest:
                up.channel.write(rest)
            await relay(self.client, up.channel)
        finally:
            up.close()
        return False

    async def _upstream(self, target: tuple[str, int]) -> _Upstream:
        pool = self.pool
        up = pool.get(target)
        if up is not None:
            if up.usable():
                up.reused = True
                return up
            del pool[target]
            up.close()
        try:
            channel = await connect(target, self.config.connect_timeout)
        except (OSError, TimeoutError) as exc:
            raise _fault(exc, phase="connect") from exc
        up = _Upstream(channel)
        pool[target] = up
        return up

    # -- the client side ----------------------------------------------------------------

    async def _client_write(self, data: bytes) -> None:
        """Write to the client; one that stops reading for ``idle_timeout`` is gone."""
        client = self.client
        if client.is_closing():
            raise _ClientGone()
        client.write(data)
        try:
            await client.drain(self.loop.time() + self.config.idle_timeout)
        except OSError as exc:  # TimeoutError included
            raise _ClientGone() from exc

    async def _drain_body(self) -> bool:
        """Read and drop the rest of the current request's body (bounded, never raises);
        False when it did not end (the connection cannot go on)."""
        if self.body_done:
            return True  # already forwarded whole: nothing of it is left to read
        requests = self.requests
        events = requests.events
        while True:
            while events:
                event = events[0]
                if isinstance(event, bytes):
                    events.popleft()
                elif isinstance(event, End):
                    events.popleft()
                    self.body_done = True
                    return True
                else:
                    return False
            if requests.dead:
                return False
            try:
                data = await self.client.read(self.loop.time() + self.config.idle_timeout)
            except (OSError, TimeoutError):
                return False
            if not data:
                return False
            requests.feed(data)

    async def _respond(self, status: int, headers: list[tuple[str, str]], req: Request) -> bool:
        """A synthetic empty answer (``content-length: 0``); False if it could not be sent."""
        parts = [response_line(status, reason_phrase(status))]
        for name, value in headers:
            parts += (name.lower().encode("latin-1"), b": ", value.encode("latin-1"), b"\r\n")
        parts.append(b"content-length: 0\r\n")
        close = (
            not req.keep_alive
            or req.upgrade
            or any(k.lower() == "connection" and "close" in v.lower() for k, v in headers)
        )
        if close and not any(k.lower() == "connection" for k, _ in headers):
            parts.append(b"connection: close\r\n")
        parts.append(b"\r\n")
        self.head_sent = True
        try:
            await self._client_write(b"".join(parts))
        except _ClientGone:
            return False
        return not close

    async def _reject(self, status: int) -> None:
        """hyper answers an unparsable head with 400 (431 when too large) and closes."""
        client = self.client
        if client.is_closing():
            return
        client.write(
            response_line(status, reason_phrase(status))
            + b"content-length: 0\r\nconnection: close\r\n\r\n"
        )
        deadline = self.loop.time() + LINGER_SECONDS
        try:
            await client.drain(deadline)
            if client.can_write_eof():
                client.write_eof()
            # Lingering close: read (and drop) what the client is still sending, for a
            # bounded time, so closing with unread data does not reset the answer away
            # (RFC 9112 9.6).
            while await client.read(deadline):
                pass
        except (OSError, RuntimeError):  # TimeoutError included
            return


# ====================================================================== helpers

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    _Record = Callable[[int | None, str], None]


#: Linkerd's answer to an upstream fault, by the exchange's phase (connect, request,
#: head, body; ``*``: any) and the fault's cause: the metric ``error`` label, the status
#: and the ``l5d-proxy-error`` text (docs/facts/linkerd-egress.md 6.2; hyper's errors).
FAULTS: dict[tuple[str, str], tuple[str, int, str]] = {
    # The upstream stopped taking the request: no headers will come in time.
    ("request", "timeout"): ("RESPONSE_HEADERS_TIMEOUT", 504, "request not taken in time"),
    ("head", "timeout"): ("RESPONSE_HEADERS_TIMEOUT", 504, "no response headers in time"),
    ("body", "timeout"): ("RESPONSE_STREAM_TIMEOUT", 504, "response body stalled"),
    # A connect timeout is neither a route timeout nor an h2 reason: UNKNOWN.
    ("connect", "timeout"): ("UNKNOWN", 504, "connect timed out"),
    ("*", "refused"): ("REFUSED", 502, "connection refused"),
    ("*", "io"): ("IO", 502, ""),
}


def _fault(exc: BaseException, *, phase: str) -> _UpstreamError:
    """Classify an upstream I/O failure during ``phase`` by :data:`FAULTS`."""
    if isinstance(exc, _UpstreamError):
        return exc
    if isinstance(exc, TimeoutError):
        cause = "timeout"
    elif isinstance(exc, ConnectionRefusedError):
        cause = "refused"
    else:
        cause = "io"
    kind, status, text = FAULTS.get((phase, cause)) or FAULTS[("*", cause)]
    if not text:
        text = f"{phase}: {exc}" if str(exc) else phase
    return _UpstreamError(kind, status, text)
