"""HTTP/1.1 through the egress proxy: the asyncio shell around the exchange machine.

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
last or not, is decided by :class:`~egresskit.mesh.http1_machine.Http1Machine` (sans-IO:
events in, actions out); this module is the one asyncio Protocol that drives it, as
uvicorn drives httptools: the client's transport is handed over from the detection
:class:`Channel`, each upstream connection has a small Protocol, and there is one timer
per connection. No task wakes up for an exchange (a new upstream connection is opened
by one). Flow control: while one side does not take our bytes, the other side is not
read.

Framing (RFC 9112 section 6) is decided in one place,
:mod:`egresskit.mesh.http1_framing`, when the parser completes a head: a head it
refuses is never judged or forwarded, and what goes on carries the framing used.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from egresskit.mesh.http1_machine import Act, Count, Http1Machine, Judgement
from egresskit.mesh.http1_wire import Request, host_only
from egresskit.policy.decision import HttpRequest
from egresskit.policy.engine import decide

if TYPE_CHECKING:
    from egresskit.mesh.runtime import Channel
    from egresskit.mesh.settings import DataPlane


async def serve_http1(
    proxy: DataPlane,
    client: Channel,
    buffered: bytes,
    port: int,
    fixed_ip: str | None,
) -> None:
    """Serve HTTP/1 on ``client`` (``buffered``: bytes detection already read) until the
    connection closes."""
    conn = _Connection(proxy, client, port, fixed_ip)
    try:
        await conn.run(buffered)
    finally:
        conn.shut()


class _Upstream(asyncio.Protocol):
    """One upstream connection: its bytes and state go to the client connection."""

    def __init__(self, owner: _Connection, target: tuple[str, int]) -> None:
        self.owner = owner
        self.target = target
        self.transport: asyncio.Transport | None = None
        self.closed = False
        #: Bytes came while it sat in the pool: not fit for another request.
        self.dirty = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A cast by assignment: uvloop's transports do not subclass asyncio's.
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        owner = self.owner
        if owner.up is self:
            owner.do(owner.machine.upstream_data(data, owner.now()))
        else:
            self.dirty = True

    def eof_received(self) -> bool:
        self._gone()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self._gone()

    def _gone(self) -> None:
        if self.closed:
            return
        self.closed = True
        owner = self.owner
        if owner.up is self:
            owner.do(owner.machine.upstream_closed(owner.now()))

    def pause_writing(self) -> None:
        self.owner.full(client=False, full=True, who=self)

    def resume_writing(self) -> None:
        self.owner.full(client=False, full=False, who=self)

    def usable(self) -> bool:
        """Open both ways with nothing unread: fit to carry a new request."""
        transport = self.transport
        return not (self.closed or self.dirty or transport is None or transport.is_closing())

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class _Connection(asyncio.Protocol):
    """One client connection: the machine, the transports, the pool, the one timer."""

    def __init__(self, proxy: DataPlane, client: Channel, port: int, fixed_ip: str | None) -> None:
        self.proxy = proxy
        self.channel = client
        assert client.transport is not None
        self.transport = client.transport
        self.port = port
        self.dst_ip = fixed_ip
        self.loop = asyncio.get_running_loop()
        self.now = self.loop.time
        self.done: asyncio.Future[None] = self.loop.create_future()
        self.pool: dict[tuple[str, int], _Upstream] = {}
        self.up: _Upstream | None = None
        self.connecting: asyncio.Task[None] | None = None
        self.queue: list[Act] = []
        self.running = False
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = 0.0
        self.deadline: float | None = None
        #: Why the client is not read (the machine's own pause, the upstream full), and
        #: whether the upstream is not read (the client full).
        self.client_paused: set[str] = set()
        self.up_paused = False
        self.handlers = self._handlers()
        self.machine = Http1Machine(proxy.config, self.judge, self.now())

    # -- the machine's world ----------------------------------------------------------

    def judge(self, req: Request, host: str | None) -> Judgement:
        """The policy's decision for one request head, under the snapshot current now
        (one snapshot per request: judged entirely by the old or the new policy)."""
        proxy = self.proxy
        name = host_only(host)
        if self.dst_ip is None:
            # A name-routed listener: the original destination is the Host's address,
            # fixed for the connection as iptables would have fixed it.
            self.dst_ip = proxy.resolve(name, None)
            if self.dst_ip is None:
                return Judgement("unknown-host")
        request = HttpRequest(
            client_namespace=proxy.namespace,
            dst_ip=self.dst_ip,
            dst_port=self.port,
            method=req.method.decode("ascii"),
            path=req.target.decode("latin-1"),
            host=host,
            headers=tuple([(k.decode("latin-1"), v.decode("latin-1")) for k, v in req.headers]),
        )
        decision = decide(proxy.snapshot(), request)
        hostname = name or ""
        if decision.outcome == "failed" or decision.family not in ("http", None):
            return Judgement("close", decision=decision)
        if decision.target is None or decision.http_status is not None:
            return Judgement(
                "answer",
                decision=decision,
                hostname=hostname,
                status=decision.http_status or 502,
                headers=tuple(decision.response_headers),
            )
        target = proxy.upstreams(hostname or None, self.dst_ip, self.port, False, decision)
        return Judgement("forward", decision=decision, target=target, hostname=hostname)

    async def run(self, buffered: bytes) -> None:
        channel = self.channel
        self.transport.set_protocol(self)
        self.do(self.machine.flush())
        data = buffered + channel.take()
        if data:
            self.do(self.machine.client_data(data, self.now()))
        if channel.at_eof():
            self.do(self.machine.client_closed(self.now(), lost=self.transport.is_closing()))
        await self.done

    def shut(self) -> None:
        """Close whatever is left (also when the proxy cancels the connection)."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.connecting is not None:
            self.connecting.cancel()
        for up in self.pool.values():
            up.close()
        self.pool.clear()
        if self.up is not None:
            self.up.close()
            self.up = None
        self.transport.close()
        if not self.done.done():
            self.done.set_result(None)

    def do(self, acts: list[Act]) -> None:
        """Carry out the machine's actions in order (the actions of events they cause,
        such as a pooled upstream opened at once, queue behind)."""
        if self.running:
            self.queue.extend(acts)
            return
        self.running = True
        handlers = self.handlers
        try:
            for kind, data, arg in acts:
                handlers[kind](data, arg)
            while self.queue:
                batch, self.queue = self.queue, []
                for kind, data, arg in batch:
                    handlers[kind](data, arg)
        finally:
            self.running = False

    def _handlers(self) -> dict[str, Callable[[bytes, Any], None]]:
        """What each kind of action does, given its ``data`` and ``arg`` (one dict lookup
        and one call per action: several are carried out per exchange)."""
        return {
            "client": self._to_client,
            "upstream": self._to_upstream,
            "deadline": self._deadline,
            "count": self._count,
            "open": self._open,
            "release": self._release,
            "pause": self._pause_machine,
            "resume": self._resume_machine,
            "eof": self._client_eof,
            "client-eof": self._client_eof,
            "upstream-eof": self._upstream_eof,
            "close": self._close,
            # Nothing to do here: the machine relays in its tunnel phase.
            "tunnel": self._nothing,
        }

    def _to_client(self, data: bytes, _: object) -> None:
        if not self.transport.is_closing():
            self.transport.write(data)

    def _to_upstream(self, data: bytes, _: object) -> None:
        up = self.up
        if up is not None and up.transport is not None and not up.transport.is_closing():
            up.transport.write(data)

    def _client_eof(self, *_: object) -> None:
        if self.transport.can_write_eof() and not self.transport.is_closing():
            self.transport.write_eof()

    def _upstream_eof(self, *_: object) -> None:
        up = self.up
        transport = up.transport if up is not None else None
        if transport is not None and not transport.is_closing() and transport.can_write_eof():
            transport.write_eof()

    def _pause_machine(self, *_: object) -> None:
        self._pause_client("machine", True)

    def _resume_machine(self, *_: object) -> None:
        self._pause_client("machine", False)

    def _close(self, *_: object) -> None:
        self.shut()

    def _nothing(self, *_: object) -> None:
        pass

    def _count(self, _: bytes, act: Count) -> None:
        decision = act.decision
        backend = decision.backend_labels or None
        if decision.target is None or decision.http_status is not None:
            # An answer of the proxy's own: backend labels only for an invalid backend.
            backend = backend if decision.outcome == "invalid" else None
        self.proxy.metrics.http_exchange(
            decision.labels,
            backend,
            hostname=act.hostname,
            http_status=act.status,
            error=act.error,
            duration_s=act.duration,
        )

    # -- upstreams --------------------------------------------------------------------

    def _open(self, _: bytes, arg: tuple[tuple[str, int], bool]) -> None:
        target, fresh = arg
        up = self.pool.get(target)
        if up is not None and not fresh and up.usable():
            self.up = up
            self.do(self.machine.upstream_opened(self.now(), reused=True))
            return
        if up is not None:
            del self.pool[target]
            up.close()
        self.connecting = self.loop.create_task(
            self._connect(target), name=f"http1 connect {target[0]}:{target[1]}"
        )

    async def _connect(self, target: tuple[str, int]) -> None:
        try:
            _, up = await self.loop.create_connection(lambda: _Upstream(self, target), *target)
        except ConnectionRefusedError:
            self.connecting = None
            self.do(self.machine.upstream_failed(self.now(), cause="refused"))
            return
        except Exception as exc:  # OSError and the like: an I/O fault, answered 502
            self.connecting = None
            self.do(self.machine.upstream_failed(self.now(), cause="io", detail=str(exc)))
            return
        self.connecting = None
        if self.done.done():
            up.close()
            return
        self.pool[target] = up
        self.up = up
        self.do(self.machine.upstream_opened(self.now(), reused=False))

    def _release(self, _: bytes, keep: bool) -> None:
        if self.connecting is not None:
            self.connecting.cancel()
            self.connecting = None
        up = self.up
        self.up = None
        if self.up_paused and up is not None and up.transport is not None:
            self.up_paused = False
            if not up.transport.is_closing():
                up.transport.resume_reading()
        self._pause_client("upstream", False)
        if up is None:
            return
        if not keep or not up.usable():
            up.close()
            if self.pool.get(up.target) is up:
                del self.pool[up.target]

    # -- flow control -------------------------------------------------------------------

    def _pause_client(self, why: str, pause: bool) -> None:
        paused = self.client_paused
        if not pause and why not in paused:
            return  # the usual case, once per exchange: nothing to resume
        before = bool(paused)
        if pause:
            paused.add(why)
        else:
            paused.discard(why)
        if self.transport.is_closing() or before == bool(paused):
            return
        if paused:
            self.transport.pause_reading()
        else:
            self.transport.resume_reading()

    def full(self, *, client: bool, full: bool, who: _Upstream | None = None) -> None:
        """A write buffer went over (or back under) its mark: stop (or restart) reading
        the other side, and tell the machine (its deadline may change)."""
        if not client:
            if who is not self.up:
                return
            self._pause_client("upstream", full)
        else:
            up = self.up
            if up is not None and up.transport is not None and not up.transport.is_closing():
                if full and not self.up_paused:
                    up.transport.pause_reading()
                elif not full and self.up_paused:
                    up.transport.resume_reading()
            self.up_paused = full and up is not None
        self.do(self.machine.write_full(self.now(), client=client, full=full))

    # -- the one timer --------------------------------------------------------------------

    def _deadline(self, _: bytes, at: float) -> None:
        """The machine tells a deadline only when it must fire earlier than the last
        (:meth:`Http1Machine.flush`); a timer that fires early re-arms."""
        self.deadline = at
        if self.timer is None or self.timer_at > at:
            if self.timer is not None:
                self.timer.cancel()
            self.timer_at = at
            self.timer = self.loop.call_at(at, self._expire)

    def _expire(self) -> None:
        self.timer = None
        deadline = self.deadline
        if deadline is None:
            return
        if self.now() < deadline:
            self._deadline(b"", deadline)
            return
        self.do(self.machine.timeout(self.now()))

    # -- the client's transport ---------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        self.do(self.machine.client_data(data, self.now()))

    def eof_received(self) -> bool:
        self.do(self.machine.client_closed(self.now(), lost=False))
        return True  # keep our half open: the answer may still have to go out

    def connection_lost(self, exc: Exception | None) -> None:
        self.do(self.machine.client_closed(self.now(), lost=True))
        self.channel.connection_lost(exc)  # the proxy's bookkeeping of the connection
        self.shut()

    def pause_writing(self) -> None:
        self.full(client=True, full=True)

    def resume_writing(self) -> None:
        self.full(client=True, full=False)
