"""HTTP/1.1 through the egress proxy, one request at a time, bodies streamed (h11).

Job: read each request head, ask the policy engine with the snapshot current at that
moment, then either answer for the proxy (403 deny, 500 invalid backend, 3xx redirect
filter, 502/504 upstream faults) or forward to the original destination / in-cluster
Service over a kept-alive upstream connection, streaming the body both ways, and record
the route and backend metrics.

Faults, as Linkerd's proxy (hyper) answers them: a malformed request gets 400 and the
connection closes; oversized headers 431; a client that stays silent past the head
timeout is closed; an upstream that refuses gets 502, one that hangs 504. Synthetic
answers carry ``l5d-proxy-error`` (informational headers are on by default; spec 3).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import h11

from egresskit.policy.decision import Decision, HeaderEdit, HttpRequest
from egresskit.policy.engine import decide

if TYPE_CHECKING:
    from egresskit.mesh.proxy import EgressProxy

READ_CHUNK = 65536


class _ClientGone(Exception):
    """The client closed or broke the connection."""


async def serve_http1(
    proxy: EgressProxy,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    buffered: bytes,
    port: int,
    fixed_ip: str | None,
) -> None:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=proxy.config.max_header_bytes)
    conn.receive_data(buffered)
    upstreams: dict[tuple[str, int], _Upstream] = {}
    dst_ip = fixed_ip
    first = True
    try:
        while True:
            timeout = proxy.config.request_head_timeout if first else proxy.config.idle_timeout
            try:
                event = await _next_event(conn, reader, timeout)
            except h11.RemoteProtocolError as exc:
                await _reject(conn, writer, exc.error_status_hint, str(exc))
                return
            except (TimeoutError, _ClientGone):
                return
            if isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                return
            if not isinstance(event, h11.Request):
                return
            first = False
            headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in event.headers]
            host = next((v for k, v in headers if k.lower() == "host"), None)
            if dst_ip is None:
                # A name-routed listener: the original destination is the Host's address,
                # fixed for the connection as iptables would have fixed it.
                dst_ip = proxy.resolve(_host_only(host), None)
                if dst_ip is None:
                    await _respond(
                        conn, writer, 502, b"", [("l5d-proxy-error", f"unknown host {host!r}")]
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
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                return
            try:
                conn.start_next_cycle()
            except h11.LocalProtocolError:
                return
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
    started = time.monotonic()
    hostname = _host_only(request.host) or ""
    metrics = proxy.metrics
    labels = decision.labels
    forwards = decision.target is not None and decision.http_status is None

    if not forwards:
        # The proxy answers itself: drain the request body first, then respond.
        await _drain_body(conn, reader, proxy.config.request_head_timeout)
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
        await _respond(conn, writer, answer, b"", list(decision.response_headers))
        return True

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
            raise ConnectionRefusedError("nothing answers for this destination")
        await _forward(proxy, conn, reader, writer, event, decision, target, upstreams, record)
    except (OSError, TimeoutError, h11.ProtocolError, _UpstreamError) as exc:
        error, reply = _fault(exc)
        record(None, error)
        if conn.our_state is h11.SEND_RESPONSE:
            await _drain_body(conn, reader, proxy.config.request_head_timeout)
            with contextlib.suppress(Exception):
                await _respond(
                    conn, writer, reply, b"", [("l5d-proxy-error", f"{error.lower()}: {exc}")]
                )
        return False
    return True


class _UpstreamError(Exception):
    def __init__(self, kind: str, message: str) -> None:
        self.kind = kind
        super().__init__(message)


def _fault(exc: BaseException) -> tuple[str, int]:
    """(metric ``error`` label, status the client gets) for an upstream fault."""
    if isinstance(exc, _UpstreamError):
        return exc.kind, 504 if exc.kind == "RESPONSE_HEADERS_TIMEOUT" else 502
    if isinstance(exc, TimeoutError):
        return "RESPONSE_HEADERS_TIMEOUT", 504
    if isinstance(exc, ConnectionRefusedError):
        return "REFUSED", 502
    return "IO", 502


class _Upstream:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.conn = h11.Connection(h11.CLIENT)

    def usable(self) -> bool:
        return self.conn.our_state is h11.IDLE and not self.writer.is_closing()

    def close(self) -> None:
        self.writer.close()


async def _upstream(
    proxy: EgressProxy, target: tuple[str, int], pool: dict[tuple[str, int], _Upstream]
) -> _Upstream:
    up = pool.get(target)
    if up is not None and up.usable():
        return up
    if up is not None:
        up.close()
    r, w = await asyncio.wait_for(
        asyncio.open_connection(*target, limit=READ_CHUNK), proxy.config.connect_timeout
    )
    up = _Upstream(r, w)
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
) -> int:
    up = await _upstream(proxy, target, pool)
    headers = _edit_headers(list(event.headers), decision.request_headers)
    up_send = up.conn.send(h11.Request(method=event.method, target=event.target, headers=headers))
    up.writer.write(up_send)
    # Stream the request body as it arrives.
    while True:
        ev = await _next_event(conn, reader, proxy.config.request_head_timeout)
        if isinstance(ev, h11.Data):
            up.writer.write(up.conn.send(h11.Data(data=ev.data)))
            await up.writer.drain()
        elif isinstance(ev, h11.EndOfMessage):
            up.writer.write(up.conn.send(h11.EndOfMessage()))
            await up.writer.drain()
            break
        else:
            raise _UpstreamError("IO", f"unexpected client event {type(ev).__name__}")
    # Response head, bounded.
    try:
        resp = await _next_event(up.conn, up.reader, proxy.config.response_timeout)
    except _ClientGone as exc:
        raise _UpstreamError("IO", "upstream closed before responding") from exc
    while isinstance(resp, h11.InformationalResponse):
        resp = await _next_event(up.conn, up.reader, proxy.config.response_timeout)
    if not isinstance(resp, h11.Response):
        raise _UpstreamError("IO", "upstream sent no response")
    out_headers = _edit_headers(list(resp.headers), decision.response_header_edit)
    writer.write(
        conn.send(
            h11.Response(status_code=resp.status_code, headers=out_headers, reason=resp.reason)
        )
    )
    # One event of look-ahead, so the response is counted before its last bytes reach the
    # client (a client that has its answer can already see it in the metrics).
    ev = await _next_event(up.conn, up.reader, proxy.config.response_timeout)
    while isinstance(ev, h11.Data):
        following = await _next_event(up.conn, up.reader, proxy.config.response_timeout)
        if not isinstance(following, h11.Data):
            record(int(resp.status_code), "")
        writer.write(conn.send(h11.Data(data=ev.data)))
        await writer.drain()
        ev = following
    if isinstance(ev, h11.EndOfMessage):
        record(int(resp.status_code), "")
        writer.write(conn.send(h11.EndOfMessage()))
        await writer.drain()
    if up.conn.our_state is h11.DONE and up.conn.their_state is h11.DONE:
        up.conn.start_next_cycle()
    else:
        up.close()
        pool.pop(target, None)
    return int(resp.status_code)


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


async def _next_event(conn: h11.Connection, reader: asyncio.StreamReader, timeout: float) -> object:
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        try:
            data = await asyncio.wait_for(reader.read(READ_CHUNK), timeout)
        except (ConnectionError, OSError) as exc:
            raise _ClientGone() from exc
        conn.receive_data(data)
        if not data and conn.their_state is not h11.DONE:
            # EOF: h11 turns it into ConnectionClosed or a protocol error.
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
    body: bytes,
    headers: list[tuple[str, str]],
) -> None:
    hdrs = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]
    hdrs.append((b"content-length", str(len(body)).encode()))
    try:
        writer.write(conn.send(h11.Response(status_code=status, headers=hdrs)))
        if body:
            writer.write(conn.send(h11.Data(data=body)))
        writer.write(conn.send(h11.EndOfMessage()))
        await writer.drain()
    except (ConnectionError, OSError, h11.LocalProtocolError):
        pass


async def _reject(
    conn: h11.Connection, writer: asyncio.StreamWriter, status: int, why: str
) -> None:
    # hyper answers a malformed request with 400 (431 for oversized heads) and closes.
    with contextlib.suppress(Exception):
        raw = h11.Connection(h11.SERVER)
        raw.receive_data(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        raw.next_event()
        hdrs = [(b"content-length", b"0"), (b"connection", b"close")]
        writer.write(raw.send(h11.Response(status_code=status, headers=hdrs)))
        writer.write(raw.send(h11.EndOfMessage()))
        await writer.drain()
    del conn, why


def _host_only(host: str | None) -> str | None:
    if not host:
        return None
    if host.startswith("["):
        return host[1 : host.find("]")]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host
