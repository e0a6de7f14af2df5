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

Rules: every wait is bounded by a :class:`~egresskit.mesh.proxy.ProxyConfig` value;
every forwarded request that gets an answer is counted exactly once in the route
metrics, before its last byte reaches the client.

Speed (this is the data plane the benchmark measures): the common exchange runs on the
fast path (see "the fast path" in :class:`_Connection` and docs/local-backend.md) as
transport callbacks, with remembered request and response heads; the coroutine path has
no task or timer per read (the :class:`Channel` has one lazy deadline per connection),
one write per direction when the whole message is at hand, one metrics call per exchange,
the upstream target cached per connection and decision.

The bytes themselves (messages, parsers, serialisation) are in the pure
:mod:`egresskit.mesh.http1_wire`; this module is the I/O around them.
"""

from __future__ import annotations

import asyncio
import time
from time import monotonic
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
    from egresskit.mesh.metrics import ExchangeSeries
    from egresskit.mesh.proxy import EgressProxy
    from egresskit.policy.snapshot import Snapshot

#: How long a rejected client may keep sending before the socket is closed anyway: long
#: enough for it to read the 400/431 instead of a reset (RFC 9112 section 9.6).
LINGER_SECONDS = 0.5
#: How long a closed upstream connection may take to go before it is reset.
CLOSE_GRACE = 5.0


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
    proxy: EgressProxy,
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


#: How many distinct request heads and response heads a connection remembers, and the
#: longest it remembers (a 64 KiB head is legal, but not worth keeping 16 of).
_SEEN_HEADS = 16
_MAX_SEEN_HEAD = 8 * 1024


class _Plan:
    """How the fast path forwards one request under one snapshot."""

    __slots__ = ("decision", "head", "hostname", "req", "same_out", "series", "snap", "target")

    def __init__(
        self,
        req: Request,
        snap: Snapshot,
        decision: Decision,
        target: tuple[str, int],
        head: bytes,
        hostname: str,
        same_out: bool,
    ) -> None:
        self.req = req
        self.snap = snap
        self.decision = decision
        self.target = target
        self.head = head
        self.hostname = hostname
        self.same_out = same_out
        #: The metric series this plan's exchanges count into, by response status.
        self.series: dict[int, ExchangeSeries] = {}


class _Inflight:
    """A request the fast path sent upstream, waiting for its response."""

    __slots__ = ("expected", "plan", "started", "up")

    def __init__(self, plan: _Plan, up: _Upstream, started: float) -> None:
        self.plan = plan
        self.up = up
        self.started = started
        #: Whether the response parser was told to expect the response (it is fed).
        self.expected = False


class _Known:
    """A response head parsed once: how it goes out, and the body length it announces."""

    __slots__ = ("keep", "keep_up", "length", "out", "status")

    def __init__(self, status: int, length: int, out: bytes, keep: bool, keep_up: bool) -> None:
        self.status = status
        self.length = length
        self.out = out
        self.keep = keep
        self.keep_up = keep_up


async def _closed() -> bool:
    """The step after an answer that closes the client connection."""
    return False


class _Connection:
    """One client connection's HTTP/1 state: parser, upstream pool, caches."""

    def __init__(
        self, proxy: EgressProxy, client: Channel, port: int, fixed_ip: str | None
    ) -> None:
        self.proxy = proxy
        self.config = proxy.config
        self.client = client
        self.port = port
        self.dst_ip = fixed_ip
        self.loop = asyncio.get_running_loop()
        self.requests = RequestParser(self.config.max_header_bytes)
        self.pool: dict[tuple[str, int], _Upstream] = {}
        #: (id of decision, hostname) -> (decision, target): the decision object is held
        #: so its id cannot be reused while the entry lives.
        self.targets: dict[tuple[int, str | None], tuple[Decision, tuple[str, int] | None]] = {}
        self.head_sent = False
        #: Whether the current request's body was read to its end (nothing to drain).
        self.body_done = False
        #: The last (snapshot, raw request, request, decision) on this connection.
        self.memo: tuple[Snapshot, tuple[object, ...], HttpRequest, Decision] | None = None
        #: The upstream request head for the memo's request and decision, once built.
        self.memo_head: bytes | None = None
        #: Fast path: the connection task's wake-up, the exchange in flight, and whether
        #: the head deadline is set for the head being read.
        self.wake: asyncio.Future[_Step | None] | None = None
        self.inflight: _Inflight | None = None
        self.head_armed = False
        self.plan: _Plan | None = None
        #: Whole request heads seen (the chunk's bytes -> the parsed request), and
        #: response heads seen (bytes -> how they go out).
        self.heads: dict[bytes, Request] = {}
        self.known: dict[bytes, _Known] = {}
        # Looked up once here rather than once per exchange on the fast path.
        self.snapshot = proxy.snapshot
        self.now = self.loop.time
        self.idle_timeout = self.config.idle_timeout
        self.response_timeout = self.config.response_timeout

    # -- the request loop -------------------------------------------------------------

    async def run(self, buffered: bytes) -> None:
        if buffered:
            self.requests.feed(buffered)
        while True:
            if self.config.fast_path:
                try:
                    step = await self._fast()
                except _HeadTimeout:
                    return  # hyper closes a slow or idle client without an answer
                if step is not None:
                    if not await step():
                        return
                    continue
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

    def _decide(
        self, req: Request, host: str | None, dst_ip: str, snap: Snapshot | None = None
    ) -> tuple[HttpRequest, Decision]:
        """The engine's decision for ``req`` under ``snap`` (default: the one current now)."""
        # One snapshot per request: judged entirely by the old or the new policy.
        if snap is None:
            snap = self.proxy.snapshot()
        # The engine is a pure function of (snapshot, request): a request identical to the
        # previous one on this connection under the same snapshot gets the same decision.
        key = (req.method, req.target, tuple(req.headers))
        memo = self.memo
        if memo is not None and memo[0] is snap and memo[1] == key:
            return memo[2], memo[3]
        request = HttpRequest(
            client_namespace=self.proxy.namespace,
            dst_ip=dst_ip,
            dst_port=self.port,
            method=req.method.decode("ascii"),
            path=req.target.decode("latin-1"),
            host=host,
            headers=tuple([(k.decode("latin-1"), v.decode("latin-1")) for k, v in key[2]]),
        )
        decision = decide(snap, request)
        self.memo = (snap, key, request, decision)
        self.memo_head = None
        return request, decision

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

    # -- the fast path -----------------------------------------------------------------
    #
    # The common exchange (a whole request head without a body, forwarded on a kept-alive
    # upstream connection, the whole response in one go) runs as a chain of transport
    # callbacks, with no task waking up for it: that is what lets one CPython thread keep
    # pace with a one-worker nginx (benchmarks/bench_dataplane.py). Meanwhile the
    # connection's task waits in _fast(). Anything else is handed over to the coroutine
    # path above at a point it already has (the next head, or _after_send once the
    # request is upstream), with every byte already fed to the parsers: both paths give
    # the same answers, metrics, timeouts and faults (tests/test_mesh_faults.py runs on
    # both).

    async def _fast(self) -> _Step | None:
        """Serve exchanges on the fast path until one needs the coroutine path; returns
        None (read the next head there) or the step that finishes an exchange begun here.
        Raises ``_HeadTimeout`` when the client is idle or slow past its bound."""
        wake: asyncio.Future[_Step | None] = self.loop.create_future()
        self.wake = wake
        self._await_head()
        try:
            return await wake
        finally:
            self.wake = None
            self.client.unhook()
            inflight = self.inflight
            if inflight is not None:  # cancelled mid-exchange: the proxy is closing
                self.inflight = None
                inflight.up.channel.unhook()

    def _await_head(self) -> None:
        """Between exchanges: serve what the client already sent, else wait for it."""
        client = self.client
        client.hook(self._client_data, self._client_wake, self.now() + self.idle_timeout)
        requests = self.requests
        # A head already begun (pipelined behind the last request) has request_head_timeout
        # from now, as _next_head gives it.
        self.head_armed = requests.head_open
        if requests.head_open:
            client.arm(self.now() + self.config.request_head_timeout)
        data = client.take()
        if data or requests.events or requests.dead or client.eof():
            self._client_data(data)

    def _client_data(self, data: bytes) -> None:
        requests = self.requests
        remember = False
        if data:
            if requests.idle():
                # A chunk byte-identical to a whole request head (without a body) already
                # parsed on this connection parses the same way: the parser sits between
                # messages either way, so skip it.
                seen = self.heads.get(data)
                if seen is not None and self._start(seen):
                    return
                remember = seen is None
            requests.feed(data)
        events = requests.events
        if not events:
            if requests.dead or self.client.eof():
                self._hand_over(None)  # after an upgrade, at EOF, or lost: it decides
            elif not requests.head_open:
                # Bytes that begin no head (blank lines between requests): like each of
                # _next_head's reads, they start a fresh idle timeout.
                self.client.arm(self.now() + self.idle_timeout)
            elif not self.head_armed:
                # The head began: from here it has request_head_timeout to finish.
                self.head_armed = True
                self.client.arm(self.now() + self.config.request_head_timeout)
            return
        req = events[0]
        if len(events) == 2 and isinstance(events[1], End) and isinstance(req, Request):
            if remember and not requests.head_open and len(data) <= _MAX_SEEN_HEAD:
                # The chunk was exactly this one request: remember it.
                if len(self.heads) >= _SEEN_HEADS:
                    self.heads.clear()
                self.heads[data] = req
            if self._start(req):
                events.clear()
                return
        self._hand_over(None)  # a body, a fault, pipelining: the coroutine path

    def _client_wake(self, kind: str) -> None:
        if kind == "timeout":
            self._hand_over(None, _HeadTimeout())
        else:
            self._hand_over(None)  # EOF or lost: the coroutine path reads it and decides

    def _start(self, req: Request) -> bool:
        """Send ``req`` upstream on the fast path; False, with nothing done, when it needs
        the coroutine path."""
        snap = self.snapshot()
        plan = self.plan
        if plan is None or plan.req is not req or plan.snap is not snap:
            plan = self._plan(req, snap)
            if plan is None:
                return False
        up = self.pool.get(plan.target)
        if up is None or not up.usable():
            return False
        # The exchange is the fast path's from here (the request is whole: no body left).
        self.head_sent = False
        self.body_done = True
        self.client.unhook()
        up.reused = True
        self.inflight = _Inflight(plan, up, monotonic())
        channel = up.channel
        channel.hook(self._upstream_data, self._upstream_wake, self.now() + self.response_timeout)
        channel.write(plan.head)
        return True

    def _plan(self, req: Request, snap: Snapshot) -> _Plan | None:
        """How the fast path forwards ``req`` under ``snap`` (the same checks as _serve and
        _forward, in their order); None when it needs the coroutine path."""
        dst_ip = self.dst_ip
        # Chunked: even an empty body has a last chunk to send (the coroutine path does).
        if req.upgrade or req.method == b"HEAD" or req.body == "chunked" or dst_ip is None:
            return None
        host_raw = one_host(req)
        if not host_raw:
            return None
        host = host_raw.decode("latin-1")
        request, decision = self._decide(req, host, dst_ip, snap)
        if (
            decision.outcome == "failed"
            or decision.family not in ("http", None)
            or decision.target is None
            or decision.http_status is not None
        ):
            return None
        hostname = host_only(host) or ""
        target = self._target(hostname, request, decision)
        if target is None:
            return None
        head = self._upstream_head(req, decision)
        if head is None:
            return None
        # A response head then goes out the same way whatever the request: keep-alive
        # HTTP/1.1 (not HEAD, not an upgrade: checked above) and no response edits.
        same_out = req.keep_alive and req.version == "1.1" and not decision.response_header_edit
        plan = _Plan(req, snap, decision, target, head, hostname, same_out)
        self.plan = plan
        return plan

    def _upstream_data(self, data: bytes) -> None:
        inflight = self.inflight
        if inflight is None:
            return
        responses = inflight.up.responses
        if not inflight.expected:
            if inflight.plan.same_out:
                # A response head byte-identical to one already parsed on this connection
                # (typically all but the Date changes once a second) goes out the same way.
                end = data.find(b"\r\n\r\n", 0, _MAX_SEEN_HEAD) + 4
                if end > 3:
                    head = data if end == len(data) else data[:end]
                    known = self.known.get(head)
                    if known is None:
                        known = self._learn(head, inflight.plan)
                    if known is not None and len(data) - end == known.length:
                        out = known.out + data[end:] if known.length else known.out
                        self._finish(inflight, known.status, out, known.keep, known.keep_up)
                        return
            inflight.expected = True
            responses.expect(head_only=False)
        responses.feed(data)
        events = responses.events
        if not events and not responses.dead:
            # The head is still coming (or a 1xx went by): like _response_head, each read
            # has response_timeout.
            inflight.up.channel.arm(self.now() + self.response_timeout)
            return
        resp = events[0] if events else None
        if (
            not isinstance(resp, Response)
            or not isinstance(events[-1], End)
            or responses.busy
            or responses.dead
            or resp.body == "eof"
        ):
            # A body still streaming, a fault, an odd message: the coroutine path.
            self._hand_over_exchange(inflight, timed_out=False)
            return
        events.popleft()
        parts, chunked, keep, keep_up = response_plan(
            inflight.plan.req, resp, inflight.plan.decision
        )
        while events:
            event = events.popleft()
            if isinstance(event, bytes):
                parts.append(chunk(event) if chunked else event)
            elif isinstance(event, End):
                if chunked:
                    parts.append(last_chunk(event.trailers))
                break
        self._finish(inflight, resp.status, b"".join(parts), keep, keep_up)

    def _learn(self, head: bytes, plan: _Plan) -> _Known | None:
        """Parse a response head on its own; what it means, if it ends the fast way."""
        probe = ResponseParser()
        probe.expect(head_only=False)
        probe.feed(head)
        resp = probe.events[0] if probe.events else None
        if probe.dead or not isinstance(resp, Response):
            return None  # malformed, or a 1xx: the full parser deals with it
        if resp.body == "none":
            length = 0
        elif resp.body == "length":
            length = resp.length
        else:
            return None  # chunked or close-delimited: re-framed on the full path
        parts, _, keep, keep_up = response_plan(plan.req, resp, plan.decision)
        known = _Known(resp.status, length, b"".join(parts), keep, keep_up)
        if len(self.known) >= _SEEN_HEADS:
            self.known.clear()
        self.known[head] = known
        return known

    def _upstream_wake(self, kind: str) -> None:
        inflight = self.inflight
        if inflight is not None:
            # EOF or lost: _after_send reads it, then retries or answers 502 as usual.
            self._hand_over_exchange(inflight, timed_out=kind == "timeout")

    def _finish(
        self, inflight: _Inflight, status: int, out: bytes, keep: bool, keep_up: bool
    ) -> None:
        """The whole response is here: count it, send it, wait for the next head."""
        plan = inflight.plan
        decision = plan.decision
        if decision.labels:
            # Counted before the answer goes out, as on the coroutine path.
            metrics = self.proxy.metrics
            series = plan.series.get(status)
            if series is None:
                series = plan.series[status] = metrics.exchange_series(
                    decision.labels,
                    decision.backend_labels or None,
                    hostname=plan.hostname,
                    http_status=status,
                    error="",
                )
            metrics.count_exchange(series, monotonic() - inflight.started)
        self.head_sent = True
        self.inflight = None
        self.proxy.fast_exchanges += 1
        up = inflight.up
        up.channel.unhook()
        responses = up.responses
        if not keep_up or responses.busy or responses.dead or responses.events:
            up.close()
            self.pool.pop(plan.target, None)
        client = self.client
        if not client.send(out):
            self._hand_over(_closed)  # the client is gone: nobody reads the answer
            return
        if not keep:
            self._hand_over(_closed)
        elif client.write_paused():
            self._hand_over(self._drained)  # the client is slow: drain, bounded, there
        else:
            self._await_head()

    def _hand_over_exchange(self, inflight: _Inflight, *, timed_out: bool) -> None:
        """Finish the exchange begun on the fast path on the coroutine path."""
        up = inflight.up
        up.channel.unhook()
        if not inflight.expected:
            up.responses.expect(head_only=False)
        self.inflight = None
        plan = inflight.plan
        req, decision = plan.req, plan.decision
        record = self._recorder(decision, plan.hostname, inflight.started)

        async def respond() -> bool:
            if timed_out:
                raise _fault(TimeoutError(), phase="head")
            return await self._after_send(req, decision, plan.target, up, plan.head, record)

        async def step() -> bool:
            return await self._guarded(req, record, respond)

        self._hand_over(step)

    def _hand_over(self, step: _Step | None, exc: BaseException | None = None) -> None:
        self.client.unhook()
        wake = self.wake
        if wake is None or wake.done():
            return
        if exc is not None:
            wake.set_exception(exc)
        else:
            wake.set_result(step)

    async def _drained(self) -> bool:
        try:
            await self._client_write(b"")
        except _ClientGone:
            return False
        return True

    def _target(
        self, hostname: str, request: HttpRequest, decision: Decision
    ) -> tuple[str, int] | None:
        key = (id(decision), hostname)
        cached = self.targets.get(key)
        if cached is not None and cached[0] is decision:
            return cached[1]
        target = self.proxy.upstreams(
            hostname or None, request.dst_ip, request.dst_port, False, decision
        )
        if len(self.targets) > 64:
            self.targets.clear()  # policy changes make new decisions: keep this small
        self.targets[key] = (decision, target)
        return target

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
        """The request head as it goes upstream (None: no Host left after the edits);
        kept with the connection's decision memo, as it depends on the same inputs."""
        memo = self.memo
        if memo is not None and memo[3] is decision and self.memo_head is not None:
            return self.memo_head
        headers = edit_headers(req.headers, decision.request_headers)
        head = request_head(req, headers) if any(k == b"host" for k, _ in headers) else None
        if memo is not None and memo[3] is decision:
            self.memo_head = head
        return head

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
    #: What finishes an exchange the fast path handed over: True keeps the connection.
    _Step = Callable[[], Awaitable[bool]]


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
