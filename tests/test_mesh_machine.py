"""The HTTP/1 exchange machine (egresskit.mesh.http1_machine), fed events on a fake clock.

No sockets and no sleeps: each test feeds events with an explicit ``now`` and checks the
actions that come out, exactly (the deadline the shell is told, what is written to
whom, what is counted and when). The real-socket fault suite (tests/test_mesh_faults.py)
runs the same machine through the asyncio shell.
"""

from __future__ import annotations

import dataclasses
import gc

import pytest

from egresskit.mesh.http1_machine import (
    DRAIN_SECONDS,
    FAULTS,
    LINGER_SECONDS,
    TRANSITIONS,
    Act,
    Count,
    Http1Machine,
    Judgement,
)
from egresskit.mesh.http1_wire import Request
from egresskit.mesh.settings import ProxyConfig
from egresskit.policy.decision import HeaderEdit
from tests.machinekit import DECISION, TARGET

CONFIG = ProxyConfig(
    request_head_timeout=10.0, idle_timeout=60.0, connect_timeout=3.0, response_timeout=30.0
)
GET = b"GET /get HTTP/1.1\r\nHost: httpbin.org\r\n\r\n"
OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


class Judge:
    """Forwards everything to TARGET (or answers ``answer``); records what it judged."""

    def __init__(self, answer: int = 0) -> None:
        self.answer = answer
        self.seen: list[bytes] = []

    def __call__(self, req: Request, host: str | None) -> Judgement:
        self.seen.append(req.target)
        if self.answer:
            return Judgement("answer", decision=DECISION, status=self.answer, hostname="h")
        return Judgement("forward", decision=DECISION, target=TARGET, hostname="httpbin.org")


def kinds(acts: list[Act]) -> list[str]:
    return [kind for kind, _, _ in acts]


def deadline(m: Http1Machine, acts: list[Act]) -> float | None:
    """The connection's deadline after the event that returned ``acts``; if the event
    told the shell one (it must fire earlier than the last told), that one."""
    told = [arg for kind, _, arg in acts if kind == "deadline"]
    if told:
        assert told == [m.deadline], f"told {told}, the deadline is {m.deadline}"
    return m.deadline


def counted(acts: list[Act]) -> list[Count]:
    return [arg for kind, _, arg in acts if kind == "count"]


def written(acts: list[Act], to: str = "client") -> bytes:
    return b"".join(data for kind, data, _ in acts if kind == to)


def machine(judge: Judge | None = None) -> tuple[Http1Machine, list[Act]]:
    m = Http1Machine(CONFIG, judge or Judge(), now=0.0)
    return m, m.flush()


def exchange(m: Http1Machine, now: float, *, reused: bool = False) -> list[Act]:
    """One GET forwarded and answered OK at ``now``; the actions of the answer."""
    acts = m.client_data(GET, now)
    assert acts[0] == ("open", b"", (TARGET, False))
    acts = m.upstream_opened(now, reused=reused)
    assert written(acts, "upstream").startswith(b"GET /get HTTP/1.1\r\n")
    return m.upstream_data(OK, now)


def test_the_transition_table_is_closed() -> None:
    for phase, nexts in TRANSITIONS.items():
        assert nexts <= set(TRANSITIONS), phase
    assert TRANSITIONS["closed"] == frozenset()


def test_a_new_connection_waits_idle_timeout_for_its_first_byte() -> None:
    _, acts = machine()
    assert acts == [("deadline", b"", 60.0)]


def test_the_head_deadline_is_armed_once_from_the_first_byte() -> None:
    m, _ = machine()
    assert deadline(m, m.client_data(b"GET /get HT", 5.0)) == 15.0
    # Trickling bytes do not extend it (slowloris).
    assert m.client_data(b"TP/1.1\r\nHost: h", 14.0) == []
    # An early timer changes nothing: the same deadline, told again for the shell to re-arm.
    assert m.timeout(14.9) == [("deadline", b"", 15.0)]
    acts = m.timeout(15.0)
    assert kinds(acts) == ["close"] and written(acts) == b"" and m.deadline is None


def test_blank_lines_between_requests_restart_the_idle_timeout() -> None:
    m, _ = machine()
    assert deadline(m, m.client_data(b"\r\n", 30.0)) == 90.0


def test_the_idle_timeout_restarts_after_each_exchange() -> None:
    m, _ = machine()
    acts = exchange(m, 100.0)
    assert written(acts) == OK
    assert deadline(m, acts) == 160.0
    acts = exchange(m, 150.0, reused=True)
    assert deadline(m, acts) == 210.0


def test_a_later_deadline_is_told_when_the_earlier_timer_fires() -> None:
    m, told = machine()
    assert told == [("deadline", b"", 60.0)]
    acts = exchange(m, 10.0)
    # Every move of the exchange went later than 60: the shell was told none of them.
    assert "deadline" not in kinds(acts) and m.deadline == 70.0
    # Its timer fires at 60, early: the machine answers with the deadline to re-arm for.
    assert m.timeout(60.0) == [("deadline", b"", 70.0)]
    acts = m.timeout(70.0)  # and that one is enforced: the idle connection closes
    assert kinds(acts) == ["close"] and m.phase == "closed"


def test_an_earlier_deadline_is_told_at_once() -> None:
    m, _ = machine()
    acts = m.client_data(b"GET /get HT", 5.0)  # request_head_timeout: 15 < 60
    assert [arg for kind, _, arg in acts if kind == "deadline"] == [15.0]


def test_each_upstream_read_has_response_timeout() -> None:
    m, _ = machine()
    m.client_data(GET, 0.0)
    assert deadline(m, m.upstream_opened(1.0, reused=False)) == 31.0
    assert deadline(m, m.upstream_data(b"HTTP/1.1 200 OK\r\n", 20.0)) == 50.0
    acts = m.upstream_data(b"content-length: 4\r\n\r\nok", 40.0)
    assert written(acts) == b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nok"
    assert deadline(m, acts) == 70.0  # the body's next read
    acts = m.timeout(70.0)
    # The head went out: no answer can follow; counted with the stream timeout.
    assert [c.error for c in counted(acts)] == ["RESPONSE_STREAM_TIMEOUT"]
    assert written(acts) == b"" and "close" in kinds(acts)


def test_no_response_head_in_time_is_504_counted_once() -> None:
    m, _ = machine()
    m.client_data(GET, 0.0)
    m.upstream_opened(0.0, reused=False)
    acts = m.timeout(30.0)
    counts = counted(acts)
    assert counts == [Count(DECISION, "httpbin.org", None, "RESPONSE_HEADERS_TIMEOUT", 30.0)]
    out = written(acts)
    assert out.startswith(b"HTTP/1.1 504 Gateway Timeout\r\n")
    assert b"l5d-proxy-error: response headers timeout: no response headers in time" in out
    assert kinds(acts)[-1] == "close" and m.deadline is None
    assert m.timeout(100.0) == [] and m.upstream_data(OK, 100.0) == []


@pytest.mark.parametrize(
    ("cause", "status", "error"),
    [("refused", 502, "REFUSED"), ("io", 502, "IO")],
)
def test_an_upstream_that_cannot_be_reached(cause: str, status: int, error: str) -> None:
    m, _ = machine()
    m.client_data(GET, 0.0)
    acts = m.upstream_failed(1.0, cause=cause, detail="boom")
    assert [c.error for c in counted(acts)] == [error]
    assert written(acts).startswith(b"HTTP/1.1 %d " % status)
    assert FAULTS[("*", cause)][:2] == (error, status)


def test_a_connect_timeout_is_504_unknown() -> None:
    m, _ = machine()
    assert deadline(m, m.client_data(GET, 0.0)) == 3.0
    acts = m.timeout(3.0)
    assert [c.error for c in counted(acts)] == ["UNKNOWN"]
    assert written(acts).startswith(b"HTTP/1.1 504 ")


def test_a_bodyless_request_is_sent_again_when_a_reused_connection_was_closed() -> None:
    m, _ = machine()
    exchange(m, 0.0)
    m.client_data(GET, 1.0)
    first = written(m.upstream_opened(1.0, reused=True), "upstream")
    acts = m.upstream_closed(1.5)  # the server had closed it just then
    assert kinds(acts)[:2] == ["release", "open"] and acts[1][2] == (TARGET, True)
    assert written(m.upstream_opened(1.6, reused=False), "upstream") == first
    acts = m.upstream_data(OK, 2.0)
    assert written(acts) == OK
    assert [c.status for c in counted(acts)] == [200]


def test_a_fresh_connection_closed_without_an_answer_is_502() -> None:
    m, _ = machine()
    m.client_data(GET, 0.0)
    m.upstream_opened(0.0, reused=False)
    acts = m.upstream_closed(1.0)
    assert written(acts).startswith(b"HTTP/1.1 502 ")
    assert [c.error for c in counted(acts)] == ["IO"]


def test_the_exchange_is_counted_before_its_last_byte_goes_out() -> None:
    m, _ = machine()
    m.client_data(GET, 0.0)
    m.upstream_opened(0.0, reused=False)
    acts = m.upstream_data(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n", 1.0)
    assert "count" not in kinds(acts)
    acts = m.upstream_data(b"0\r\n\r\n", 2.0)
    assert kinds(acts)[:2] == ["count", "client"]
    assert acts[1][1] == b"0\r\n\r\n"
    assert acts[0][2].duration == 2.0


def test_expect_100_continue_is_answered_by_the_proxy() -> None:
    m, _ = machine()
    head = b"POST /get HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n"
    m.client_data(head, 0.0)
    acts = m.upstream_opened(0.0, reused=False)
    assert written(acts) == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert deadline(m, acts) == 60.0  # the body's first read has idle_timeout
    acts = m.client_data(b"ok", 1.0)
    assert written(acts, "upstream") == b"ok"
    assert deadline(m, acts) == 31.0  # whole: now the response head


def test_a_malformed_head_is_400_with_a_lingering_close_and_never_judged() -> None:
    judge = Judge()
    m, _ = machine(judge)
    acts = m.client_data(b"POST /get HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n", 4.0)
    assert written(acts).startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert kinds(acts) == ["client", "eof", "deadline"]
    assert deadline(m, acts) == 4.0 + LINGER_SECONDS
    assert m.client_data(b"more bytes", 4.1) == []  # read and dropped
    assert kinds(m.timeout(4.0 + LINGER_SECONDS)) == ["close"] and m.deadline is None
    assert judge.seen == []


def test_the_client_leaving_mid_exchange_is_counted_as_cancel() -> None:
    m, _ = machine()
    m.client_data(GET, 0.0)
    m.upstream_opened(0.0, reused=False)
    acts = m.client_closed(5.0, lost=True)
    assert [c.error for c in counted(acts)] == ["CANCEL"]
    assert "close" in kinds(acts) and written(acts) == b""


def test_a_denied_request_is_answered_after_its_body_and_counted_first() -> None:
    m, _ = machine(Judge(answer=403))
    acts = m.client_data(b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nab", 1.0)
    assert kinds(acts) == ["count", "deadline"]  # counted, then the body is read
    # Each read of the body has idle_timeout, within DRAIN_SECONDS of the judgement.
    assert deadline(m, acts) == min(61.0, 1.0 + DRAIN_SECONDS)
    acts = m.client_data(b"cd", 2.0)
    assert written(acts).startswith(b"HTTP/1.1 403 Forbidden\r\n")
    assert deadline(m, acts) == 62.0  # kept alive: the next request's idle timeout


def test_pipelined_requests_wait_their_turn_and_are_each_judged() -> None:
    judge = Judge()
    m, _ = machine(judge)
    acts = m.client_data(GET + GET.replace(b"/get", b"/get2"), 0.0)
    assert kinds(acts)[0] == "open" and judge.seen == [b"/get"]
    m.upstream_opened(0.0, reused=False)
    acts = m.upstream_data(OK, 1.0)
    # The second request starts as soon as the first is answered.
    assert ("open", b"", (TARGET, False)) in acts and judge.seen == [b"/get", b"/get2"]


def test_hop_by_hop_fields_stop_at_the_proxy_and_a_websocket_upgrade_goes_on() -> None:
    m, _ = machine()
    m.client_data(
        b"GET /get HTTP/1.1\r\nHost: httpbin.org\r\nConnection: Upgrade, X-Secret, keep-alive"
        b"\r\nUpgrade: websocket\r\nX-Secret: 1\r\nKeep-Alive: timeout=5\r\n"
        b"Proxy-Connection: keep-alive\r\nTE: trailers\r\nX-Kept: 2\r\n\r\n",
        0.0,
    )
    head = written(m.upstream_opened(0.0, reused=False), "upstream").lower()
    for gone in (b"x-secret", b"keep-alive", b"proxy-connection"):
        assert gone not in head, head
    assert b"upgrade: websocket\r\n" in head and b"connection: upgrade, te\r\n" in head
    assert b"te: trailers\r\n" in head and b"x-kept: 2\r\n" in head
    # The upgrade the judged request asked for opens the tunnel.
    acts = m.upstream_data(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n", 1.0)
    assert "tunnel" in kinds(acts) and m.phase == "tunnel"


def test_connection_fields_of_a_response_stop_at_the_proxy() -> None:
    # linkerd2-proxy's HTTP/1 client strips them from every response but an upgrade's:
    # Connection, the fields it names, and Upgrade, Proxy-Connection, Keep-Alive always.
    m, _ = machine()
    m.client_data(GET, 0.0)
    m.upstream_opened(0.0, reused=False)
    acts = m.upstream_data(
        b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop\r\nKeep-Alive: timeout=5\r\n"
        b"X-Hop: secret\r\nProxy-Connection: keep-alive\r\nUpgrade: h2c\r\nX-Kept: 1\r\n"
        b"CONNECTION: x-other\r\nX-Other: 2\r\nContent-Length: 2\r\n\r\nok",
        0.0,
    )
    assert written(acts) == b"HTTP/1.1 200 OK\r\nx-kept: 1\r\ncontent-length: 2\r\n\r\nok"
    assert ("release", b"", True) in acts and m.phase == "idle"


def test_an_upstream_closing_its_connection_leaves_the_clients_open() -> None:
    # The upstream's Connection: close is about its own hop (stripped with the other
    # connection fields): hyper keeps the client's connection; the upstream's is not pooled.
    m, _ = machine()
    m.client_data(GET, 0.0)
    m.upstream_opened(0.0, reused=False)
    acts = m.upstream_data(
        b"HTTP/1.1 200 OK\r\nConnection: close\r\ncontent-length: 2\r\n\r\nok", 0.0
    )
    assert written(acts) == OK
    assert ("release", b"", False) in acts and "close" not in kinds(acts)
    assert m.phase == "idle"
    assert m.client_data(GET, 1.0)[0] == ("open", b"", (TARGET, False))
    # An HTTP/1.0 answer without a length ends at EOF: an HTTP/1.1 client gets it chunked,
    # on a connection kept open.
    m.upstream_opened(1.0, reused=False)
    acts = m.upstream_data(b"HTTP/1.0 200 OK\r\n\r\nok", 1.0) + m.upstream_closed(1.0)
    assert written(acts) == (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
    )
    assert "close" not in kinds(acts) and m.phase == "idle"


def answered_through(edit: HeaderEdit, response: bytes) -> list[Act]:
    """The actions of ``response`` to a GET whose route has the ResponseHeaderModifier
    ``edit``."""
    decision = dataclasses.replace(DECISION, response_header_edit=edit)
    m = Http1Machine(
        CONFIG,
        lambda req, host: Judgement("forward", decision=decision, target=TARGET, hostname="h"),
        now=0.0,
    )
    m.client_data(GET, 0.0)
    m.upstream_opened(0.0, reused=False)
    return m.upstream_data(response, 0.0)


def test_a_response_header_filter_sees_the_response_after_the_connection_fields_go() -> None:
    # Stripped first (linkerd2-proxy's client), then the route's ResponseHeaderModifier:
    # what the filter writes goes on, even a name the upstream's Connection listed, and
    # a Connection: close it writes closes the client's connection.
    edit = HeaderEdit(add=(("x-hop", "from-the-route"),), set=(("connection", "close"),))
    acts = answered_through(
        edit,
        b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop\r\nX-Hop: upstream\r\n"
        b"content-length: 2\r\n\r\nok",
    )
    assert written(acts) == (
        b"HTTP/1.1 200 OK\r\nx-hop: from-the-route\r\nconnection: close\r\n"
        b"content-length: 2\r\n\r\nok"
    )
    assert kinds(acts)[-1] == "close"


@pytest.mark.parametrize(
    ("value", "closes"), [("x-closer", False), ("Keep-Alive, CLOSE", True), ("close ", True)]
)
def test_a_filters_connection_field_closes_only_with_the_close_option(
    value: str, closes: bool
) -> None:
    acts = answered_through(HeaderEdit(set=(("connection", value),)), OK)
    assert ("close" in kinds(acts)) is closes
    assert written(acts).count(b"connection:") == 1


def test_an_http10_client_gets_an_answer_that_ends_at_eof_with_a_close() -> None:
    m, _ = machine()
    m.client_data(b"GET /get HTTP/1.0\r\nHost: httpbin.org\r\n\r\n", 0.0)
    m.upstream_opened(0.0, reused=False)
    acts = m.upstream_data(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nok", 0.0)
    acts += m.upstream_closed(0.0)
    assert written(acts) == b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nok"
    assert kinds(acts)[-1] == "close"


def test_an_h2c_upgrade_is_not_forwarded_and_an_unasked_101_is_502() -> None:
    m, _ = machine()
    m.client_data(
        b"GET /get HTTP/1.1\r\nHost: httpbin.org\r\nConnection: Upgrade, HTTP2-Settings\r\n"
        b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
        0.0,
    )
    head = written(m.upstream_opened(0.0, reused=False), "upstream").lower()
    assert b"upgrade" not in head and b"http2-settings" not in head, head
    acts = m.upstream_data(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: h2c\r\n\r\n", 1.0)
    assert m.phase != "tunnel" and "tunnel" not in kinds(acts)
    assert written(acts).startswith(b"HTTP/1.1 502 ")
    assert written(m.client_data(b"GET /forbidden HTTP/1.1\r\n\r\n", 1.0), "upstream") == b""


@pytest.mark.parametrize(
    "line",
    [b"x-a: " + b"a" * 1000 + b"\r\n", b"x-a: " + b"a" * 10_000],  # many fields; one endless
)
def test_an_upstream_response_head_past_the_bound_is_502_io_and_closed(line: bytes) -> None:
    m, _ = machine()
    m.client_data(GET, 0.0)
    m.upstream_opened(0.0, reused=False)
    acts = m.upstream_data(b"HTTP/1.1 200 OK\r\n", 0.0)
    for _ in range(1000):  # up to 1 MB: more than the bound (MAX_RESPONSE_HEAD)
        acts += m.upstream_data(line, 0.0)
        if m.phase != "waiting":
            break
    assert written(acts).startswith(b"HTTP/1.1 502 ")
    assert [c.error for c in counted(acts)] == ["IO"]
    assert m.phase in ("draining", "closed") and ("release", b"", False) in acts


@pytest.mark.parametrize(
    "line", [b"x-a: " + b"a" * 1000 + b"\r\n", b"x-a: " + b"a" * 1000]
)  # many trailers; one endless
def test_upstream_trailers_past_the_bound_close_the_answer_as_io(line: bytes) -> None:
    m, _ = machine()
    m.client_data(GET, 0.0)
    m.upstream_opened(0.0, reused=False)
    acts = m.upstream_data(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n", 0
    )
    for _ in range(1000):
        acts += m.upstream_data(line, 0.0)
        if m.phase == "closed":
            break
    assert m.phase == "closed" and [c.error for c in counted(acts)] == ["IO"]


@pytest.mark.parametrize("piece", [b"x" * 1000, b"x"])  # too many bytes; too long a time
def test_draining_a_denied_body_is_bounded_then_answered_with_close(piece: bytes) -> None:
    m, _ = machine(Judge(answer=403))
    m.client_data(
        b"POST /post HTTP/1.1\r\nHost: httpbin.org\r\nContent-Length: 999999999999\r\n\r\n", 0.0
    )
    assert m.phase == "draining"
    now, acts = 0.0, []
    for _ in range(10_000):  # each read well within idle_timeout of the last
        now += 1.0
        acts = m.timeout(now) + m.client_data(piece, now)
        if m.phase != "draining":
            break
    assert m.phase == "closed", (now, m.phase)
    answer = written(acts)
    assert answer.startswith(b"HTTP/1.1 403 ") and b"connection: close\r\n" in answer


def test_an_upstream_that_sent_more_than_the_answer_is_not_pooled() -> None:
    m, _ = machine()
    m.client_data(GET, 0.0)
    m.upstream_opened(0.0, reused=False)
    acts = m.upstream_data(OK + b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nSTALE", 0.0)
    assert written(acts) == OK and ("release", b"", False) in acts
    m.client_data(GET, 1.0)
    assert written(m.upstream_opened(1.0, reused=True)) == b""  # nothing stale served
    acts = m.upstream_data(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nBB", 1.0)
    assert written(acts).endswith(b"\r\n\r\nBB")


def test_an_idle_upstream_is_pooled() -> None:
    m, _ = machine()
    acts = exchange(m, 0.0)
    assert ("release", b"", True) in acts


def test_a_pooled_connection_goes_on_with_its_own_response_parser() -> None:
    m, _ = machine()
    exchange(m, 0.0)
    parser = m.responses
    assert written(exchange(m, 1.0, reused=True)) == OK
    assert m.responses is parser  # the same connection: llhttp's state goes on with it
    assert written(exchange(m, 2.0, reused=False)) == OK
    assert m.responses is not parser  # a new connection: a parser of its own


def test_another_targets_pooled_connection_gets_a_fresh_response_parser() -> None:
    other = ("127.0.0.1", 9090)

    class TwoTargets(Judge):
        def __call__(self, req: Request, host: str | None) -> Judgement:
            target = other if req.target == b"/other" else TARGET
            return Judgement("forward", decision=DECISION, target=target, hostname="h")

    m, _ = machine(TwoTargets())
    exchange(m, 0.0)  # TARGET's connection is pooled with its parser
    parser = m.responses
    m.client_data(GET.replace(b"/get", b"/other"), 1.0)
    m.upstream_opened(1.0, reused=True)  # the shell had a pooled connection to `other`
    assert m.responses is not parser and m.parked is None
    acts = m.upstream_data(OK, 1.0)
    assert written(acts) == OK and m.parked == (other, m.responses)


def test_an_upstream_not_pooled_leaves_no_parser_parked() -> None:
    m, _ = machine()
    m.client_data(GET, 0.0)
    m.upstream_opened(0.0, reused=False)
    m.upstream_data(OK + b"HTTP/1.1 200 OK\r\n", 0.0)  # a second head begun, unasked
    assert m.parked is None


def test_an_exchange_leaves_no_cyclic_garbage() -> None:
    """Each exchange's response parser is freed by reference counting: left to the cyclic
    collector (httptools' parser keeps our bound methods), ~19 objects per exchange
    piled up and the collections they caused cost the proxy's thread ~6% of its time."""
    m, _ = machine()
    exchange(m, 0.0)
    gc.collect()
    gc.disable()
    try:
        for i in range(200):
            exchange(m, float(i), reused=True)
        found = gc.collect()
    finally:
        gc.enable()
    assert found < 20, f"{found} objects of cyclic garbage after 200 exchanges"
