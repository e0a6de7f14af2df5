"""One client connection's HTTP/1 exchanges as a state machine, with no I/O (sans-IO).

Job: everything the proxy decides on an HTTP/1 connection, driven by events and
answered with actions, the way h11 and mitmproxy's layers are built; the asyncio shell
(:mod:`egresskit.mesh.http1`) only moves bytes and runs the one timer. Events in:
client bytes, client EOF or loss, upstream opened or failed, upstream bytes, EOF or
loss, a write buffer full or drained, the deadline passed (each with ``now``, so tests
drive it with a fake clock). Actions out (:class:`Act`): send to the client or the
upstream, open or release an upstream, pause or resume reading the client, set the
deadline, count the exchange, tunnel, close.

Phases and what moves between them (:data:`TRANSITIONS` is the table, checked on every
move):

* ``idle`` -> ``head`` (a head began) -> request judged -> ``connecting`` (forward),
  ``draining`` (the proxy answers once the body is read), or ``closed`` (refused,
  failed detection, a malformed head via ``linger``);
* ``connecting`` -> ``sending`` (a body to stream) or ``waiting`` (request whole);
* ``sending`` -> ``waiting`` -> ``streaming`` (or ``tunnel`` after a 101 or CONNECT 2xx)
  -> ``idle`` for the next request, or ``closed``.

Deadlines (one per connection): ``idle_timeout`` for the first byte of a head, restarted
by bytes that begin none; ``request_head_timeout`` for the whole head, armed once from
its first byte; ``connect_timeout``; ``response_timeout`` per upstream read;
``idle_timeout`` per client read of a body and while the client does not take our
bytes; ``LINGER_SECONDS`` for a lingering close. Faults get Linkerd's answers from
:data:`FAULTS`, keyed by phase and cause. Every forwarded exchange is counted exactly
once, before its last byte goes to the client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, NamedTuple

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
    last_chunk,
    origin_form,
    reason_phrase,
    request_head,
    response_line,
    response_plan,
    strip_hop_by_hop,
    switches,
    tunnel_allowed,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from egresskit.mesh.settings import ProxyConfig
    from egresskit.policy.decision import Decision

#: How long a rejected client may keep sending before the socket is closed anyway: long
#: enough for it to read the 400/431 instead of a reset (RFC 9112 section 9.6).
LINGER_SECONDS = 0.5
#: Bytes of a client's next request held while an exchange is in flight, before the
#: shell is told to stop reading the client.
PENDING_LIMIT = 256 * 1024
#: How much of a request body the proxy reads and drops before its own answer (a
#: denial, a fault), and for how long at most: past either it answers with
#: ``connection: close`` and closes, so a client cannot hold it reading forever.
DRAIN_LIMIT = 64 * 1024
DRAIN_SECONDS = 10.0

Phase = Literal[
    "idle",
    "head",
    "connecting",
    "sending",
    "waiting",
    "streaming",
    "draining",
    "tunnel",
    "linger",
    "closed",
]

#: Where each phase may go next; a move outside this table is a bug (AssertionError).
TRANSITIONS: dict[Phase, frozenset[Phase]] = {
    "idle": frozenset({"head", "connecting", "draining", "linger", "closed"}),
    "head": frozenset({"connecting", "draining", "linger", "closed"}),
    "connecting": frozenset({"sending", "waiting", "draining", "closed"}),
    "sending": frozenset({"waiting", "draining", "closed"}),
    "waiting": frozenset({"connecting", "streaming", "tunnel", "draining", "closed"}),
    "streaming": frozenset({"idle", "closed"}),
    "draining": frozenset({"idle", "closed"}),
    "tunnel": frozenset({"closed"}),
    "linger": frozenset({"closed"}),
    "closed": frozenset(),
}

#: Linkerd's answer to an upstream fault, by phase (``*``: any) and cause: the metric
#: ``error`` label, the status and the ``l5d-proxy-error`` text (docs/facts/
#: linkerd-egress.md 6.2; hyper's errors). Empty text: the cause's own words.
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


def fault(phase: str, cause: str, detail: str = "") -> tuple[str, int, str]:
    """(error label, status, message) for a fault of ``cause`` during ``phase``."""
    kind, status, text = FAULTS.get((phase, cause)) or FAULTS[("*", cause)]
    return kind, status, text or (f"{phase}: {detail}" if detail else phase)


#: One action for the shell: ``(kind, data, arg)``, data or arg as the kind needs them.
#: A plain tuple, not an object: several are made per exchange, and a tuple is made in a
#: twentieth of the time of a slotted instance (the proxy's loop thread is its CPU).
#:
#: * ``client`` / ``upstream``: write ``data``;
#: * ``open``: an upstream connection, ``arg`` = (target, fresh: not a pooled one);
#: * ``release``: the upstream is done with, ``arg`` = keep it in the pool;
#: * ``pause`` / ``resume``: stop or restart reading the client;
#: * ``deadline``: the one timer must fire at ``arg`` (loop time) or before; told only
#:   when the deadline moved earlier than the one the shell has (see :meth:`flush`);
#: * ``count``: the exchange into the route metrics, ``arg`` a :class:`Count`;
#: * ``tunnel``: from now on bytes go both ways unread;
#: * ``eof`` / ``client-eof`` / ``upstream-eof``: half-close that side;
#: * ``close``: close the client connection (after what was written) and any upstream.
Act = tuple[str, bytes, Any]


class Count(NamedTuple):
    """One exchange for the route metrics."""

    decision: Decision
    hostname: str
    status: int | None
    error: str
    duration: float


class Judgement(NamedTuple):
    """What the policy made of one request head (from :class:`Judge`). A named tuple:
    one per request, made in a third of a frozen dataclass's time."""

    #: ``forward``, ``answer`` (the proxy answers ``status``), ``close`` (no answer),
    #: ``unknown-host`` (a name-routed listener could not resolve the Host).
    verdict: Literal["forward", "answer", "close", "unknown-host"]
    decision: Decision | None = None
    target: tuple[str, int] | None = None
    hostname: str = ""
    status: int = 0
    headers: tuple[tuple[str, str], ...] = ()


class _Exchange:
    """The request being served: how it was judged, what it forwarded, its clock."""

    __slots__ = (
        "body_done",
        "counted",
        "decision",
        "eof_ends",
        "head",
        "head_sent",
        "hostname",
        "keep",
        "keep_up",
        "out_chunked",
        "req",
        "resp",
        "retry",
        "started",
        "target",
        "tunnel_ok",
    )

    def __init__(self, req: Request, started: float) -> None:
        self.req = req
        self.started = started
        self.decision: Decision | None = None
        self.target: tuple[str, int] | None = None
        self.hostname = ""
        self.head = b""
        #: The whole request (a head without a body), to send again on a fresh
        #: connection if a kept-alive one turns out closed (RFC 9112 9.3.1).
        self.retry: bytes | None = None
        self.body_done = False
        self.head_sent = False
        self.counted = False
        self.resp: Response | None = None
        self.out_chunked = False
        self.keep = False
        self.keep_up = False
        self.eof_ends = False
        #: The judged request asked for a tunnel the proxy passes (tunnel_allowed).
        self.tunnel_ok = False


class Http1Machine:
    """One client connection. Feed it events; each returns the actions to carry out,
    in order. ``judge`` is the policy call (see :data:`Judge`)."""

    def __init__(
        self,
        config: ProxyConfig,
        judge: Callable[[Request, str | None], Judgement],
        now: float,
    ) -> None:
        """``judge``: the policy call, (request, its Host value) -> :class:`Judgement`;
        pure but for the snapshot it reads, one per request head."""
        self.config = config
        self.judge = judge
        self.phase: Phase = "idle"
        self.requests = RequestParser(config.max_header_bytes)
        self.responses = ResponseParser()
        #: The response parser of the upstream connection last released to the pool,
        #: idle between responses, and that connection's target: an exchange that goes on
        #: on that connection goes on with its parser (llhttp keeps state per connection,
        #: as uvicorn keeps one parser per connection); any other gets a fresh one.
        self.parked: tuple[tuple[str, int], ResponseParser] | None = None
        self.ex: _Exchange | None = None
        self.acts: list[Act] = []
        #: Client bytes held while an exchange is in flight, and whether reading paused.
        self.pending = b""
        self.paused = False
        self.client_eof = False
        self.up_closed = False
        self.up_reused = False
        self.client_full = False
        self.up_full = False
        self.deadline: float | None = None
        #: The deadline the shell was last told.
        self.told: float | None = None
        #: The deadline to drain toward, then what to answer: (status, headers, close).
        self.answer: tuple[int, tuple[tuple[str, str], ...], bool] | None = None
        self.drained = True
        #: While draining: bytes dropped so far, and when draining stops anyway.
        self.drain_bytes = 0
        self.drain_until = 0.0
        self._enter_idle(now)

    # ------------------------------------------------------------------ events

    def client_data(self, data: bytes, now: float) -> list[Act]:
        phase = self.phase
        if phase in ("idle", "head", "sending", "draining"):
            self.requests.feed(data)
            self._client_progress(now)
        elif phase == "tunnel":
            self._act("upstream", data)
        elif phase == "linger" or phase == "closed":
            pass  # dropped: a lingering close reads what still comes
        else:
            self.pending += data
            if len(self.pending) > PENDING_LIMIT and not self.paused:
                self.paused = True
                self._act("pause")
        return self.flush()

    def client_closed(self, now: float, *, lost: bool) -> list[Act]:
        """EOF from the client (``lost``: the connection is gone, or broke)."""
        self.client_eof = True
        phase = self.phase
        if phase == "closed":
            return self.flush()
        if lost and phase in ("connecting", "waiting", "streaming", "sending", "draining"):
            self._cancel(now)
        elif phase == "tunnel":
            self._act("upstream-eof")
            if self.up_closed or lost:
                self._close()
        elif phase in ("idle", "head", "sending", "draining", "linger"):
            self._client_progress(now)
        return self.flush()

    def upstream_opened(self, now: float, *, reused: bool) -> list[Act]:
        if self.phase == "connecting":
            self.up_reused = reused
            self.up_closed = False
            parked, self.parked = self.parked, None
            ex = self.ex
            assert ex is not None
            if reused and parked is not None and parked[0] == ex.target:
                self.responses = parked[1]  # the pooled connection it was released with
            else:
                # A new connection, or another target's pooled one: a parser of its own.
                self.responses.discard()
                self.responses = ResponseParser()
            self._send_request(now)
        return self.flush()

    def upstream_failed(self, now: float, *, cause: str, detail: str = "") -> list[Act]:
        if self.phase == "connecting":
            self._fault("connect", cause, detail, now)
        return self.flush()

    def upstream_data(self, data: bytes, now: float) -> list[Act]:
        phase = self.phase
        if phase == "tunnel":
            self._act("client", data)
        elif phase in ("sending", "waiting", "streaming"):
            self.responses.feed(data)
            if phase == "waiting":
                self._await_response(now)
            elif phase == "streaming":
                self._stream(now)
        return self.flush()

    def upstream_closed(self, now: float) -> list[Act]:
        self.up_closed = True
        phase = self.phase
        if phase == "tunnel":
            self._act("client-eof")
            if self.client_eof:
                self._close()
        elif phase == "waiting":
            self._await_response(now)
        elif phase == "streaming":
            self._stream(now)
        return self.flush()

    def write_full(self, now: float, *, client: bool, full: bool) -> list[Act]:
        """A side's write buffer went over (``full``) or back under its high-water mark."""
        if client:
            self.client_full = full
        else:
            self.up_full = full
        self._arm(now)
        return self.flush()

    def timeout(self, now: float) -> list[Act]:
        """The shell's timer fired: the deadline passed, or it fired early (a deadline
        that moved later since it was told: told now)."""
        self.told = None  # the shell has no timer until told again
        if self.deadline is None or now < self.deadline:
            return self.flush()
        self.deadline = None
        phase = self.phase
        if phase in ("idle", "head", "linger"):
            # hyper closes a slow or idle client without an answer.
            self._close()
        elif phase == "connecting":
            self._fault("connect", "timeout", "", now)
        elif phase == "sending":
            if self.up_full:
                self._fault("request", "timeout", "", now)
            else:
                self._cancel(now)  # the client stalled its body
        elif phase == "waiting":
            self._fault("head", "timeout", "", now)
        elif phase == "streaming":
            if self.client_full:
                self._cancel(now)  # the client stopped taking its answer
            else:
                self._fault("body", "timeout", "", now)
        elif phase == "draining":
            self._drain_done(now, drained=False)
        return self.flush()

    # ------------------------------------------------------------------ moves

    def _move(self, phase: Phase) -> None:
        assert phase in TRANSITIONS[self.phase], f"{self.phase} -> {phase}"
        self.phase = phase

    def _act(self, kind: str, data: bytes = b"", arg: Any = None) -> None:
        self.acts.append((kind, data, arg))

    def flush(self) -> list[Act]:
        """The actions of one event; the deadline, if it must fire earlier than the one
        the shell was told. A later deadline (the usual move: each read pushes it on) or
        none is not told: the shell's timer fires at the old one, :meth:`timeout` finds
        it early and tells the current one. One timer move per exchange saved, at the
        price of one early wake-up per connection per timeout period."""
        deadline = self.deadline
        if deadline is not None:
            told = self.told
            if told is None or deadline < told:
                self.told = deadline
                self.acts.append(("deadline", b"", deadline))
        acts, self.acts = self.acts, []
        return acts

    def _arm(self, now: float) -> None:
        """The deadline of the phase the connection is in (see the module docstring)."""
        config = self.config
        phase = self.phase
        if phase == "sending":
            wait = config.response_timeout if self.up_full else config.idle_timeout
            self.deadline = now + wait
        elif phase in ("waiting",):
            self.deadline = now + config.response_timeout
        elif phase == "streaming":
            wait = config.idle_timeout if self.client_full else config.response_timeout
            self.deadline = now + wait
        elif phase == "draining":
            self.deadline = min(now + config.idle_timeout, self.drain_until)

    def _close(self) -> None:
        if self.phase != "closed":
            self._move("closed")
        self.deadline = None
        self._act("close")

    # ------------------------------------------------------------------ the client side

    def _enter_idle(self, now: float) -> None:
        self.ex = None
        if self.phase != "idle":
            self._move("idle")
        if self.paused:
            self.paused = False
            self._act("resume")
        pending, self.pending = self.pending, b""
        if pending:
            self.requests.feed(pending)
        # A head already begun (pipelined) has request_head_timeout from now.
        if self.requests.head_open:
            self._move("head")
            self.deadline = now + self.config.request_head_timeout
        else:
            self.deadline = now + self.config.idle_timeout
        self._client_progress(now)

    def _client_progress(self, now: float) -> None:
        """Act on what the request parser holds, in the phase the connection is in."""
        phase = self.phase
        requests = self.requests
        if phase in ("idle", "head"):
            events = requests.events
            if events:
                event = events.popleft()
                if isinstance(event, Request):
                    self._serve(event, now)
                else:
                    self._reject(event.status if isinstance(event, Fault) else 400, now)
            elif requests.dead:
                self._close()  # after an upgrade: nothing more to parse
            elif self.client_eof:
                # EOF: clean between requests, a 400 in the middle of a head (h11's and
                # hyper's "incomplete message").
                if requests.head_open:
                    self._reject(400, now)
                else:
                    self._close()
            elif requests.head_open:
                if phase == "idle":
                    # The head began: from here it has request_head_timeout to finish,
                    # one deadline, so trickling bytes cannot extend it.
                    self._move("head")
                    self.deadline = now + self.config.request_head_timeout
            else:
                # Bytes that begin no head (blank lines): a fresh idle timeout.
                self.deadline = now + self.config.idle_timeout
        elif phase == "sending":
            self._send_body(now)
        elif phase == "draining":
            self._drain(now)
        elif phase == "linger" and self.client_eof:
            self._close()

    def _reject(self, status: int, now: float) -> None:
        """hyper answers an unparsable head with 400 (431 when too large) and closes,
        lingering: what the client still sends is read and dropped for a bounded time,
        so closing with unread data does not reset the answer away (RFC 9112 9.6)."""
        self._move("linger")
        self._act(
            "client",
            data=response_line(status, reason_phrase(status))
            + b"content-length: 0\r\nconnection: close\r\n\r\n",
        )
        self._act("eof")
        self.deadline = now + LINGER_SECONDS
        if self.client_eof:
            self._close()

    # ------------------------------------------------------------------ a request

    def _serve(self, req: Request, now: float) -> None:
        ex = self.ex = _Exchange(req, now)
        # The parser refused a head with more than one Host (RFC 9112 3.2).
        host_raw = req.host
        host = host_raw.decode("latin-1") if host_raw else None
        if req.target[:1] != b"/" and req.target != b"*" and req.method != b"CONNECT":
            # Absolute form: judged and forwarded as origin-form, its authority being the
            # Host judged, or refused (RFC 9112 3.2.2; origin_form says why).
            origin = origin_form(req.target, host_raw)
            if origin is None:
                self._reject(400, now)
                return
            req.target = origin
        verdict = self.judge(req, host)
        ex.decision = verdict.decision
        ex.hostname = verdict.hostname
        if verdict.verdict == "close":
            # The port does not serve HTTP/1 (SNI-required TLS, gRPC, opaque on a
            # name-routed listener): closed with no answer and no route metrics (5.2).
            self._close()
            return
        if verdict.verdict == "unknown-host":
            self._drain_then(now, 502, (("l5d-proxy-error", f"unknown host {host!r}"),), True)
            return
        if verdict.verdict == "answer":
            # The proxy answers itself (403, 500, 3xx): the body is read first; the
            # exchange is counted before the answer goes out.
            self._drain_then(now, verdict.status, verdict.headers, False, count=True)
            return
        if verdict.target is None:
            self._fault("connect", "refused", "", now, "nothing answers for this destination")
            return
        decision = verdict.decision
        assert decision is not None
        edit = decision.request_headers
        if edit is None:
            headers, has_host = req.headers, host_raw is not None
        else:
            headers = edit_headers(req.headers, edit)
            has_host = any(k == b"host" for k, _ in headers)
        if not has_host:
            # h11 refuses to send an HTTP/1.1 request without one.
            self._fault("request", "io", "", now, "request: Missing mandatory Host: header")
            return
        # Hop-by-hop fields stop here (RFC 9110 7.6.1); an upgrade the proxy does not
        # pass on (h2c) goes as a plain request the server answers in HTTP/1.1.
        ex.tunnel_ok = tunnel_allowed(req)
        headers = strip_hop_by_hop(headers, upgrade=ex.tunnel_ok and req.method != b"CONNECT")
        ex.head = request_head(req, headers)
        ex.target = verdict.target
        self._open(fresh=False, now=now)

    def _open(self, *, fresh: bool, now: float) -> None:
        ex = self.ex
        assert ex is not None
        self._move("connecting")
        self.deadline = now + self.config.connect_timeout
        self._act("open", b"", (ex.target, fresh))

    def _take_body(self) -> tuple[bytes, bool]:
        """The request body bytes at hand, framed for the upstream, and whether it is all."""
        ex = self.ex
        assert ex is not None
        events = self.requests.events
        chunked = ex.req.body == "chunked"
        parts: list[bytes] = []
        while events:
            event = events[0]
            if isinstance(event, bytes):
                events.popleft()
                parts.append(chunk(event) if chunked else event)
            elif isinstance(event, End):
                events.popleft()
                ex.body_done = True
                if chunked:
                    parts.append(last_chunk(event.trailers))
                return b"".join(parts), True
            else:
                break  # a fault, or the next head: the body did not finish here
        return b"".join(parts), False

    def _send_request(self, now: float) -> None:
        ex = self.ex
        assert ex is not None
        req = ex.req
        self.responses.expect(head_only=req.method == b"HEAD")
        pending, self.pending = self.pending, b""
        if pending:
            self.requests.feed(pending)
        body, complete = self._take_body()
        if ex.retry is not None:
            self._act("upstream", ex.retry)
            self._move("waiting")
            self._arm(now)
            return
        if complete:
            if not body:
                ex.retry = ex.head
            self._act("upstream", ex.head + body)
            self._move("waiting")
            self._arm(now)
            return
        self._act("upstream", ex.head + body)
        if not body and expects_continue(req):
            # hyper answers ``Expect: 100-continue`` itself when the body is read.
            self._act("client", b"HTTP/1.1 100 Continue\r\n\r\n")
        self._move("sending")
        if self.paused:
            self.paused = False
            self._act("resume")
        self._arm(now)
        self._send_body(now)

    def _send_body(self, now: float) -> None:
        """Stream the request body as it arrives: never buffered whole."""
        body, complete = self._take_body()
        if body:
            self._act("upstream", body)
        if complete:
            self._move("waiting")
            self._arm(now)
            self._await_response(now)
            return
        events = self.requests.events
        if (events and isinstance(events[0], Fault)) or self.requests.dead or self.client_eof:
            self._cancel(now)  # the client went away (or broke its body) mid-exchange
            return
        if body:
            self._arm(now)  # each client read of the body has idle_timeout

    # ------------------------------------------------------------------ the response

    def _await_response(self, now: float) -> None:
        ex = self.ex
        assert ex is not None
        responses = self.responses
        events = responses.events
        if responses.dead and not events:
            self._fault("head", "io", "", now, "head: the upstream sent malformed HTTP")
            return
        if not events:
            if not self.up_closed:
                self._arm(now)  # each upstream read has response_timeout
                return
            if ex.retry is not None and self.up_reused:
                # A kept-alive connection may have been closed by the server just then;
                # a request without a body goes again on a fresh one (RFC 9112 9.3.1).
                self._act("release", b"", False)
                self.up_reused = False
                self._open(fresh=True, now=now)
                return
            self._fault(
                "head", "io", "", now, "the upstream closed the connection without a response"
            )
            return
        event = events.popleft()
        if not isinstance(event, Response):
            why = "the upstream closed the connection without a response"
            if isinstance(event, Fault):
                why = "head: the upstream sent malformed HTTP or a head too large"
            self._fault("head", "io", "", now, why)
            return
        req = ex.req
        decision = ex.decision
        assert decision is not None
        if switches(req, event) or event.status == 101:
            # The tunnel opens only for the upgrade the judged request asked for and the
            # proxy passed on; linkerd2-proxy does the same (HTTP/1 upgrades are a tunnel
            # after the judged request; h2c is never forwarded).
            if req.upgrade and ex.tunnel_ok and switches(req, event):
                self._tunnel(event, now)
                return
            if event.status == 101:
                self._fault("head", "io", "", now, "head: the upstream switched protocols unasked")
                return
        parts, chunked, keep, keep_up = response_plan(req, event, decision)
        ex.resp = event
        ex.out_chunked = chunked
        ex.keep = keep
        ex.keep_up = keep_up
        ex.eof_ends = event.body == "eof" and req.method != b"HEAD"
        ex.head_sent = True
        self._move("streaming")
        self._stream(now, b"".join(parts))

    def _stream(self, now: float, head: bytes = b"") -> None:
        """Pass on what the upstream sent of the body; the exchange is counted before
        its last bytes go to the client."""
        ex = self.ex
        assert ex is not None and ex.resp is not None
        status = ex.resp.status
        responses = self.responses
        events = responses.events
        parts = [head] if head else []
        done = False
        while events and not done:
            event = events.popleft()
            if isinstance(event, bytes):
                parts.append(chunk(event) if ex.out_chunked else event)
            elif isinstance(event, End):
                if ex.out_chunked:
                    parts.append(last_chunk(event.trailers))
                done = True
            else:
                self._count(status, "IO", now)
                self._close()
                return
        if not done and self.up_closed:
            if ex.eof_ends and responses.busy:
                if ex.out_chunked:
                    parts.append(last_chunk([]))
                done = True
            else:
                # EOF before the announced end of the body: the answer is cut short.
                self._count(status, "IO", now)
                if parts:
                    self._act("client", b"".join(parts))
                self._close()
                return
        if not done and responses.dead:
            self._count(status, "IO", now)
            if parts:
                self._act("client", b"".join(parts))
            self._close()
            return
        if done:
            self._count(status, "", now)
        if parts:
            self._act("client", b"".join(parts))
        if not done:
            self._arm(now)
            return
        # Pooled only when nothing more came: bytes the upstream sent unasked (a second
        # response, a head begun) would be served as the next request's answer.
        pooled = ex.keep_up and responses.idle() and not self.up_closed
        if pooled:
            assert ex.target is not None
            self.parked = (ex.target, responses)
        self._act("release", b"", pooled)
        if ex.keep:
            self._enter_idle(now)
        else:
            self._close()

    def _tunnel(self, resp: Response, now: float) -> None:
        """An accepted upgrade or CONNECT: the head goes back, then bytes both ways."""
        ex = self.ex
        assert ex is not None and ex.decision is not None
        headers = edit_headers(resp.headers, ex.decision.response_header_edit)
        parts = [response_line(resp.status, resp.reason)]
        for name, value in headers:
            parts += (name, b": ", value, b"\r\n")
        parts.append(b"\r\n")
        responses = self.responses
        while responses.events:  # bytes the upstream sent right after its head
            event = responses.events.popleft()
            if isinstance(event, bytes):
                parts.append(event)
        if responses.rest:
            parts.append(responses.rest)
        ex.head_sent = True
        self._count(resp.status, "", now)
        self._move("tunnel")
        self.deadline = None
        self._act("client", b"".join(parts))
        rest = (self.requests.rest or b"") + self.pending
        self.pending = b""
        if rest:
            self._act("upstream", rest)
        if self.paused:
            self.paused = False
            self._act("resume")
        self._act("tunnel")
        if self.client_eof:
            self._act("upstream-eof")
        if self.up_closed:
            self._act("client-eof")

    # ------------------------------------------------------------------ answers, faults

    def _count(self, status: int | None, error: str, now: float) -> None:
        """Count the exchange in the route metrics, once."""
        ex = self.ex
        if ex is None or ex.counted or ex.decision is None or not ex.decision.labels:
            return
        ex.counted = True
        self._act("count", b"", Count(ex.decision, ex.hostname, status, error, now - ex.started))

    def _cancel(self, now: float) -> None:
        """The client went away (or stalled) mid-exchange: nobody gets an answer."""
        ex = self.ex
        if ex is not None:
            self._count(ex.resp.status if ex.resp is not None else None, "CANCEL", now)
        self._close()

    def _fault(self, phase: str, cause: str, detail: str, now: float, message: str = "") -> None:
        """An upstream fault: counted, answered with Linkerd's status (unless the
        response head already went), the connection closed after."""
        kind, status, text = fault(phase, cause, detail)
        if message:
            text = message
        ex = self.ex
        self._count(None, kind, now)
        self._act("release", b"", False)
        if ex is not None and ex.head_sent:
            self._close()
            return
        error = f"{kind.lower().replace('_', ' ')}: {text}"
        self._drain_then(now, status, (("l5d-proxy-error", error), ("connection", "close")), True)

    def _drain_then(
        self,
        now: float,
        status: int,
        headers: tuple[tuple[str, str], ...],
        close: bool,
        *,
        count: bool = False,
    ) -> None:
        """Read and drop the rest of the request body (bounded), then answer."""
        ex = self.ex
        assert ex is not None
        if count:
            self._count(status, "", now)
        self.answer = (status, headers, close)
        self.drain_bytes = 0
        self.drain_until = now + DRAIN_SECONDS
        self._move("draining")
        pending, self.pending = self.pending, b""
        if pending:
            self.requests.feed(pending)
        if self.paused:
            self.paused = False
            self._act("resume")
        if ex.body_done:
            self._drain_done(now, drained=True)
            return
        self._arm(now)
        self._drain(now)

    def _drain(self, now: float) -> None:
        ex = self.ex
        assert ex is not None
        events = self.requests.events
        while events:
            event = events[0]
            if isinstance(event, bytes):
                events.popleft()
                self.drain_bytes += len(event)
                if self.drain_bytes > DRAIN_LIMIT:
                    self._drain_done(now, drained=False)
                    return
            elif isinstance(event, End):
                events.popleft()
                ex.body_done = True
                self._drain_done(now, drained=True)
                return
            else:
                self._drain_done(now, drained=False)
                return
        if self.requests.dead or self.client_eof:
            self._drain_done(now, drained=False)
            return
        self._arm(now)

    def _drain_done(self, now: float, *, drained: bool) -> None:
        ex = self.ex
        assert ex is not None and self.answer is not None
        status, headers, close = self.answer
        self.answer = None
        req = ex.req
        parts = [response_line(status, reason_phrase(status))]
        for name, value in headers:
            parts += (name.lower().encode("latin-1"), b": ", value.encode("latin-1"), b"\r\n")
        parts.append(b"content-length: 0\r\n")
        close = (
            close
            or not drained
            or not req.keep_alive
            or req.upgrade
            or any(k.lower() == "connection" and "close" in v.lower() for k, v in headers)
        )
        if close and not any(k.lower() == "connection" for k, _ in headers):
            parts.append(b"connection: close\r\n")
        parts.append(b"\r\n")
        ex.head_sent = True
        self._act("client", b"".join(parts))
        if close or not drained:
            self._close()
        else:
            self._enter_idle(now)
