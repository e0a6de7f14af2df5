"""HTTP/1.1 through the egress proxy, one request at a time, bodies streamed (h11).

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

Rules: every wait is bounded by a :class:`~egresskit.mesh.proxy.ProxyConfig` value;
every forwarded request that gets an answer is counted exactly once in the route
metrics, before its last byte reaches the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from http import HTTPStatus
from typing import TYPE_CHECKING

import h11

from egresskit.policy.decision import Decision, HeaderEdit, HttpRequest
from egresskit.policy.engine import decide

if TYPE_CHECKING:
    from egresskit.mesh.proxy import EgressProxy

READ_CHUNK = 65536
#: What ``h11.Connection.next_event`` returns.
_Event = h11.Event | type[h11.NEED_DATA] | type[h11.PAUSED]
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


async def serve_http1(
    proxy: EgressProxy,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    buffered: bytes,
    port: int,
    fixed_ip: str | None,
) -> None:
    config = proxy.config
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=config.max_header_bytes)
    conn.receive_data(buffered)
    upstreams: dict[tuple[str, int], _Upstream] = {}
    dst_ip = fixed_ip
    try:
        while True:
            try:
                event = await _read_head(
                    conn,
                    reader,
                    idle=config.idle_timeout,
                    head=config.request_head_timeout,
                    limit=config.max_header_bytes,
                )
            except h11.RemoteProtocolError as exc:
                await _reject(reader, writer, exc.error_status_hint)
                return
            except (_HeadTimeout, _ClientGone):
                return  # hyper closes a slow or idle client without an answer
            if not isinstance(event, h11.Request):
                return  # ConnectionClosed, or PAUSED after a protocol switch
            headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in event.headers]
            host = next((v for k, v in headers if k.lower() == "host"), None)
            if dst_ip is None:
                # A name-routed listener: the original destination is the Host's address,
                # fixed for the connection as iptables would have fixed it.
                dst_ip = proxy.resolve(_host_only(host), None)
                if dst_ip is None:
                    await _drain_body(conn, reader, config.idle_timeout)
                    await _respond(
                        conn, writer, 502, [("l5d-proxy-error", f"unknown host {host!r}")]
                    )
                    return
            request = HttpRequest(
                client_namespace=proxy.namespace,
                dst_ip=dst_ip,
                dst_port=port,
                method=event.method.decode("ascii"),
                path=event.target.decode("latin-1"),
                host=host,
                headers=tuple(headers),
            )
            # One snapshot per request: judged entirely by the old or the new policy.
            decision = decide(proxy.snapshot(), request)
            keep = await _handle(proxy, conn, reader, writer, event, request, decision, upstreams)
            if not keep:
                return
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return  # MUST_CLOSE, or a body left unread
            conn.start_next_cycle()
    finally:
        for up in upstreams.values():
            up.close()


async def _handle(
    proxy: EgressProxy,
    conn: h11.Connection,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    event: h11.Request,
    request: HttpRequest,
    decision: Decision,
    upstreams: dict[tuple[str, int], _Upstream],
) -> bool:
    """Serve one request; False when the client connection must close afterwards."""
    started = time.monotonic()
    hostname = _host_only(request.host) or ""
    metrics = proxy.metrics
    labels = decision.labels
    if decision.outcome == "failed" or (decision.family not in ("http", None)):
        # The port does not serve HTTP/1 (SNI-required TLS, gRPC/HTTP/2, opaque on a
        # name-routed listener): the proxy's protocol handling fails and the connection
        # closes with no answer and no route metrics (spec 5.2).
        return False

    if decision.target is None or decision.http_status is not None:
        # The proxy answers itself: drain the request body first, then respond.
        await _drain_body(conn, reader, proxy.config.idle_timeout)
        answer = decision.http_status or 502
        # Counted before the answer goes out, so a client that has its answer can already
        # see it in the metrics.
        if labels:
            metrics.http_request(
                labels,
                hostname=hostname,
                http_status=answer,
                error="",
                duration_s=time.monotonic() - started,
            )
            if decision.outcome == "invalid" and decision.backend_labels:
                metrics.http_backend_request(labels, decision.backend_labels)
                metrics.http_backend_response(
                    labels,
                    decision.backend_labels,
                    http_status=answer,
                    error="",
                    duration_s=time.monotonic() - started,
                )
        return await _respond(conn, writer, answer, list(decision.response_headers))

    target = proxy.upstreams(hostname or None, request.dst_ip, request.dst_port, False, decision)
    if labels and decision.backend_labels:
        metrics.http_backend_request(labels, decision.backend_labels)
    recorded = False

    def record(status: int | None, error: str) -> None:
        nonlocal recorded
        if recorded or not labels:
            return
        recorded = True
        duration = time.monotonic() - started
        metrics.http_request(
            labels, hostname=hostname, http_status=status, error=error, duration_s=duration
        )
        if decision.backend_labels:
            metrics.http_backend_response(
                labels,
                decision.backend_labels,
                http_status=status,
                error=error,
                duration_s=duration,
            )

    try:
        if target is None:
            raise _UpstreamError("REFUSED", 502, "nothing answers for this destination")
        await _forward(proxy, conn, reader, writer, event, decision, target, upstreams, record)
    except _UpstreamError as exc:
        record(None, exc.kind)
        if conn.our_state is h11.SEND_RESPONSE:
            await _drain_body(conn, reader, proxy.config.idle_timeout)
            error = f"{exc.kind.lower().replace('_', ' ')}: {exc}"
            await _respond(
                conn, writer, exc.status, [("l5d-proxy-error", error), ("connection", "close")]
            )
        return False
    except _ClientGone:
        # The client went away (or stalled its body) mid-exchange: nobody gets an answer.
        record(None, "CANCEL")
        return False
    return True


def _fault(exc: BaseException, *, phase: str) -> _UpstreamError:
    """Classify an upstream I/O failure during ``phase`` (connect, request, head, body)."""
    if isinstance(exc, _UpstreamError):
        return exc
    if isinstance(exc, TimeoutError):
        if phase == "head":
            return _UpstreamError("RESPONSE_HEADERS_TIMEOUT", 504, "no response headers in time")
        if phase == "request":
            # The upstream stopped taking the request: no headers will come in time.
            return _UpstreamError("RESPONSE_HEADERS_TIMEOUT", 504, "request not taken in time")
        if phase == "body":
            return _UpstreamError("RESPONSE_STREAM_TIMEOUT", 504, "response body stalled")
        # A connect timeout is neither a route timeout nor an h2 reason: UNKNOWN.
        return _UpstreamError("UNKNOWN", 504, f"{phase} timed out")
    if isinstance(exc, ConnectionRefusedError):
        return _UpstreamError("REFUSED", 502, "connection refused")
    return _UpstreamError("IO", 502, f"{phase}: {exc}" if str(exc) else phase)


class _Upstream:
    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeout: float
    ) -> None:
        self.reader = reader
        self.writer = writer
        #: Bound on the upstream taking our bytes (the response timeout covers sending).
        self.timeout = timeout
        self.conn = h11.Connection(h11.CLIENT)
        self.reused = False

    def usable(self) -> bool:
        # at_eof: the server closed its idle keep-alive connection.
        return (
            self.conn.our_state is h11.IDLE
            and not self.writer.is_closing()
            and not self.reader.at_eof()
        )

    def close(self) -> None:
        self.writer.close()


async def _upstream(
    proxy: EgressProxy, target: tuple[str, int], pool: dict[tuple[str, int], _Upstream]
) -> _Upstream:
    up = pool.pop(target, None)
    if up is not None and up.usable():
        up.reused = True
        pool[target] = up
        return up
    if up is not None:
        up.close()
    try:
        r, w = await asyncio.wait_for(
            asyncio.open_connection(*target, limit=READ_CHUNK), proxy.config.connect_timeout
        )
    except (OSError, TimeoutError) as exc:
        raise _fault(exc, phase="connect") from exc
    up = _Upstream(r, w, proxy.config.response_timeout)
    pool[target] = up
    return up


async def _forward(
    proxy: EgressProxy,
    conn: h11.Connection,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    event: h11.Request,
    decision: Decision,
    target: tuple[str, int],
    pool: dict[tuple[str, int], _Upstream],
    record: Callable[[int | None, str], None],
) -> None:
    config = proxy.config
    client_timeout = config.idle_timeout
    headers = _edit_headers(list(event.headers), decision.request_headers)
    request = h11.Request(method=event.method, target=event.target, headers=headers)
    try:
        first = conn.next_event()  # EndOfMessage at once: a request without a body
    except h11.RemoteProtocolError as exc:
        raise _ClientGone() from exc
    up = await _upstream(proxy, target, pool)
    if isinstance(first, h11.EndOfMessage):
        try:
            await _send_upstream(up, request, first)
            resp = await _response_head(up, config.response_timeout)
        except _UpstreamError as exc:
            if not (up.reused and exc.kind == "IO"):
                raise
            # A kept-alive upstream connection may have been closed by the server just
            # then; a request without a body can go again on a fresh one (RFC 9112 9.3.1).
            up.close()
            pool.pop(target, None)
            up = await _upstream(proxy, target, pool)
            await _send_upstream(up, request, first)
            resp = await _response_head(up, config.response_timeout)
    else:
        await _send_upstream(up, request)
        if conn.client_is_waiting_for_100_continue:
            # hyper answers ``Expect: 100-continue`` itself when the body is first read.
            informational = h11.InformationalResponse(status_code=100, headers=[])
            await _client_write(writer, conn.send(informational), client_timeout)
        # Stream the request body as it arrives: never buffered whole.
        ev = first
        while True:
            if ev is h11.NEED_DATA:
                try:
                    ev = await _next_event(conn, reader, config.idle_timeout)
                except (TimeoutError, h11.RemoteProtocolError) as exc:
                    raise _ClientGone() from exc
            if isinstance(ev, h11.Data):
                await _send_upstream(up, h11.Data(data=ev.data))
            elif isinstance(ev, h11.EndOfMessage):
                await _send_upstream(up, h11.EndOfMessage(headers=ev.headers))
                break
            else:
                raise _ClientGone()
            ev = h11.NEED_DATA
        resp = await _response_head(up, config.response_timeout)

    out_headers = _edit_headers(list(resp.headers), decision.response_header_edit)
    status = int(resp.status_code)
    await _client_write(
        writer,
        conn.send(h11.Response(status_code=status, headers=out_headers, reason=resp.reason)),
        client_timeout,
    )
    # One event of look-ahead, so the response is counted before its last bytes reach the
    # client (a client that has its answer can already see it in the metrics).
    try:
        ev = await _upstream_event(up, config.response_timeout, "body")
        while isinstance(ev, h11.Data):
            following = await _upstream_event(up, config.response_timeout, "body")
            if not isinstance(following, h11.Data):
                record(status, "")
            await _client_write(writer, conn.send(h11.Data(data=ev.data)), client_timeout)
            ev = following
    except _ClientGone:
        record(status, "CANCEL")
        raise
    except _UpstreamError as exc:
        record(status, exc.kind)
        raise
    if not isinstance(ev, h11.EndOfMessage):
        record(status, "IO")
        raise _UpstreamError("IO", 502, f"unexpected upstream event {type(ev).__name__}")
    record(status, "")
    await _client_write(writer, conn.send(h11.EndOfMessage(headers=ev.headers)), client_timeout)
    if up.conn.our_state is h11.DONE and up.conn.their_state is h11.DONE:
        up.conn.start_next_cycle()
    else:
        up.close()
        pool.pop(target, None)


async def _send_upstream(up: _Upstream, *events: h11.Event) -> None:
    try:
        for ev in events:
            data = up.conn.send(ev)
            if data:
                up.writer.write(data)
        await asyncio.wait_for(up.writer.drain(), up.timeout)
    except (OSError, h11.LocalProtocolError) as exc:
        raise _fault(exc, phase="request") from exc


async def _response_head(up: _Upstream, timeout: float) -> h11.Response:
    resp = await _upstream_event(up, timeout, "head")
    while isinstance(resp, h11.InformationalResponse):
        resp = await _upstream_event(up, timeout, "head")
    if not isinstance(resp, h11.Response):
        raise _UpstreamError("IO", 502, "the upstream closed the connection without a response")
    return resp


async def _upstream_event(up: _Upstream, timeout: float, phase: str) -> _Event:
    try:
        return await _next_event(up.conn, up.reader, timeout)
    except (OSError, TimeoutError, h11.RemoteProtocolError, _ClientGone) as exc:
        raise _fault(exc, phase=phase) from exc


async def _client_write(writer: asyncio.StreamWriter, data: bytes | None, timeout: float) -> None:
    """Write to the client; one that stops reading for ``timeout`` is gone."""
    try:
        if data:
            writer.write(data)
        await asyncio.wait_for(writer.drain(), timeout)
    except OSError as exc:  # TimeoutError included
        raise _ClientGone() from exc


def _edit_headers(
    headers: list[tuple[bytes, bytes]], edit: HeaderEdit | None
) -> list[tuple[bytes, bytes]]:
    """Linkerd's header modifier order: add, then set, then remove (D15)."""
    if edit is None:
        return headers
    out = list(headers)
    for name, value in edit.add:
        out.append((name.encode("latin-1"), value.encode("latin-1")))
    for name, value in edit.set:
        lname = name.lower().encode("latin-1")
        out = [(k, v) for k, v in out if k.lower() != lname]
        out.append((name.encode("latin-1"), value.encode("latin-1")))
    for name in edit.remove:
        lname = name.lower().encode("latin-1")
        out = [(k, v) for k, v in out if k.lower() != lname]
    return out


async def _read_head(
    conn: h11.Connection,
    reader: asyncio.StreamReader,
    *,
    idle: float,
    head: float,
    limit: int,
) -> _Event:
    """The next request head: ``idle`` bounds the wait for its first byte, ``head`` the
    whole head from there (one deadline, so trickling bytes cannot extend it)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + head if conn.trailing_data[0] else None
    while True:
        _check_head_size(conn, limit)
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        timeout = idle if deadline is None else deadline - loop.time()
        if timeout <= 0:
            raise _HeadTimeout()
        try:
            data = await asyncio.wait_for(reader.read(READ_CHUNK), timeout)
        except TimeoutError as exc:
            raise _HeadTimeout() from exc
        except OSError as exc:
            raise _ClientGone() from exc
        if deadline is None:
            deadline = loop.time() + head
        conn.receive_data(data)
        if not data:
            event = conn.next_event()  # EOF: ConnectionClosed, or a protocol error
            if event is h11.NEED_DATA:
                raise _ClientGone()
            return event


def _check_head_size(conn: h11.Connection, limit: int) -> None:
    """431 for a head over ``limit`` bytes, complete or not (h11's own bound only covers
    heads still incomplete, so a big head read in one go would slip through)."""
    if conn.their_state is not h11.IDLE:
        return
    buf = conn.trailing_data[0]
    if len(buf) <= limit:
        return
    ends = [i for i in (buf.find(b"\r\n\r\n"), buf.find(b"\n\n")) if i >= 0]
    size = min(ends) if ends else len(buf)
    if size > limit:
        raise h11.RemoteProtocolError(
            f"request head larger than {limit} bytes", error_status_hint=431
        )


async def _next_event(conn: h11.Connection, reader: asyncio.StreamReader, timeout: float) -> _Event:
    """The next h11 event; ``timeout`` bounds each read (an inactivity bound)."""
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        try:
            data = await asyncio.wait_for(reader.read(READ_CHUNK), timeout)
        except TimeoutError:
            raise  # a TimeoutError is an OSError too: not a broken connection
        except OSError as exc:
            raise _ClientGone() from exc
        conn.receive_data(data)
        if not data:
            # EOF: h11 turns it into ConnectionClosed, EndOfMessage or a protocol error.
            event = conn.next_event()
            if event is h11.NEED_DATA:
                raise _ClientGone()
            return event


async def _drain_body(conn: h11.Connection, reader: asyncio.StreamReader, timeout: float) -> None:
    with contextlib.suppress(Exception):
        while conn.their_state is h11.SEND_BODY:
            ev = await _next_event(conn, reader, timeout)
            if isinstance(ev, h11.EndOfMessage | h11.ConnectionClosed):
                break


async def _respond(
    conn: h11.Connection,
    writer: asyncio.StreamWriter,
    status: int,
    headers: list[tuple[str, str]],
) -> bool:
    """A synthetic empty answer (``content-length: 0``); False if it could not be sent."""
    hdrs = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]
    hdrs.append((b"content-length", b"0"))
    try:
        writer.write(
            conn.send(h11.Response(status_code=status, headers=hdrs, reason=_reason(status)))
        )
        writer.write(conn.send(h11.EndOfMessage()))
        await writer.drain()
    except (OSError, h11.LocalProtocolError):
        return False
    return True


async def _reject(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, status: int) -> None:
    """hyper answers an unparsable head with 400 (431 when too large) and closes."""
    # A fresh connection object: the client's one is in an error state and refuses to send.
    raw = h11.Connection(h11.SERVER)
    raw.receive_data(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
    raw.next_event()
    hdrs = [(b"content-length", b"0"), (b"connection", b"close")]
    try:
        writer.write(
            raw.send(h11.Response(status_code=status, headers=hdrs, reason=_reason(status)))
        )
        writer.write(raw.send(h11.EndOfMessage()))
        await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except OSError:
        return
    # Lingering close: read (and drop) what the client is still sending, for a bounded
    # time, so closing with unread data does not reset the answer away (RFC 9112 9.6).
    loop = asyncio.get_running_loop()
    deadline = loop.time() + LINGER_SECONDS
    with contextlib.suppress(OSError, TimeoutError):
        while (remaining := deadline - loop.time()) > 0:
            if not await asyncio.wait_for(reader.read(READ_CHUNK), remaining):
                break


def _reason(status: int) -> bytes:
    """The canonical reason phrase, as hyper writes it (``403 Forbidden``)."""
    try:
        return HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b""


def _host_only(host: str | None) -> str | None:
    if not host:
        return None
    if host.startswith("["):
        return host[1 : host.find("]")]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host
