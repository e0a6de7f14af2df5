"""The proxy's HTTP/1 wire core (egresskit.mesh.http1_wire), without sockets.

The request head bound (431 over ``max_header_bytes``, as hyper answers) must not depend
on how TCP cuts the bytes into chunks: the same head is refused or accepted whatever the
chunking. A fault test once passed or failed by the machine's load because the chunk that
completed a head went uncounted.
"""

from __future__ import annotations

import itertools
import random

import pytest

from egresskit.mesh.http1_wire import End, Fault, Request, RequestParser

LIMIT = 64 * 1024


def head(value_size: int, *, headers: int = 1) -> bytes:
    lines = b"".join(b"X-H%d: %s\r\n" % (i, b"y" * value_size) for i in range(headers))
    return b"GET /get HTTP/1.1\r\nHost: httpbin.org\r\n" + lines + b"\r\n"


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = [0, *sorted(c for c in cuts if 0 < c < len(data)), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(points) if b > a]


def events_for(chunks: list[bytes]) -> list[object]:
    parser = RequestParser(LIMIT)
    for chunk in chunks:
        parser.feed(chunk)
        if parser.dead:
            break
    return list(parser.events)


def cut_sets(size: int) -> dict[str, list[int]]:
    """Ways to cut ``size`` bytes: whole, near the start, near the end, in the middle,
    right before the blank line, in fixed steps of several sizes."""
    return {
        "whole": [],
        "after-10": [10],
        "before-last-2": [size - 2],
        "before-last-3": [size - 3],
        "before-last-1": [size - 1],
        "middle": [size // 2],
        "near-start-and-end": [50, size - 100],
        "steps-1000": list(range(1000, size, 1000)),
        "steps-7000": list(range(7000, size, 7000)),
        "steps-16384": list(range(16384, size, 16384)),
        "steps-65536": list(range(65536, size, 65536)),
    }


BIG_ONE = head(70 * 1024)
BIG_MANY = head(1000, headers=200)
NEAR_LIMIT = head(LIMIT - 200)
assert len(NEAR_LIMIT) < LIMIT


@pytest.mark.parametrize(
    "cuts", list(cut_sets(len(BIG_ONE)).values()), ids=list(cut_sets(len(BIG_ONE)))
)
@pytest.mark.parametrize("data", [BIG_ONE, BIG_MANY], ids=["one-70KiB-header", "200KiB-of-headers"])
def test_an_oversized_head_is_431_however_it_is_chunked(data: bytes, cuts: list[int]) -> None:
    events = events_for(chunked(data, cuts))
    assert not any(isinstance(e, Request) for e in events), "an oversized head was queued"
    assert any(isinstance(e, Fault) and e.status == 431 for e in events), events


@pytest.mark.parametrize(
    "cuts", list(cut_sets(len(NEAR_LIMIT)).values()), ids=list(cut_sets(len(NEAR_LIMIT)))
)
def test_a_head_just_under_the_limit_is_accepted_however_it_is_chunked(cuts: list[int]) -> None:
    events = events_for(chunked(NEAR_LIMIT, cuts))
    assert [type(e) for e in events] == [Request, End]


def test_a_body_in_the_same_chunk_does_not_count_towards_the_head() -> None:
    body = b"z" * (LIMIT * 2)
    data = b"POST /post HTTP/1.1\r\nHost: httpbin.org\r\nContent-Length: %d\r\n\r\n" % len(body)
    for cuts in ([], [20], [len(data) - 2]):
        events = events_for(chunked(data + body, cuts))
        assert isinstance(events[0], Request)
        assert isinstance(events[-1], End)


def test_a_pipelined_head_after_a_body_is_bounded_too() -> None:
    # The second head starts mid-chunk (behind the first request's body).
    first = b"POST /post HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"
    for cuts in ([], [len(first) + 10], [len(first) + 40_000]):
        events = events_for(chunked(first + BIG_ONE, cuts))
        assert [type(e) for e in events[:3]] == [Request, bytes, End]
        assert not any(isinstance(e, Request) for e in events[3:])
        assert isinstance(events[-1], Fault) and events[-1].status == 431


@pytest.mark.parametrize("tail", [b"", b"\r\n\r\n"], ids=["at-start", "after-blank-lines"])
def test_a_pipelined_head_is_counted_from_where_the_head_before_it_ended(tail: bytes) -> None:
    # Two heads in one read, the second going on past it: the bytes of the first (which
    # ended in the read, counted in raw bytes) are not the second's. Together they are
    # over the limit, the second alone is under it: accepted, however the rest is cut.
    first = tail + head(LIMIT // 2)
    second = head(LIMIT - 2000)
    assert len(first) + len(second) > LIMIT > len(second)
    for cut in (len(first) + 10, len(first) + len(second) // 2, len(first) + len(second) - 3):
        for rest in ([], [cut + 1, cut + 7000]):
            events = events_for(chunked(first + second, [cut, *rest]))
            assert [type(e) for e in events] == [Request, End, Request, End], (cut, events)


def test_blank_lines_before_a_request_do_not_end_its_head_early() -> None:
    # RFC 9112 2.2: a server SHOULD ignore at least one empty line before a request line.
    events = events_for([b"\r\n\r\n" + BIG_ONE[:40_000], BIG_ONE[40_000:]])
    assert isinstance(events[-1], Fault) and events[-1].status == 431


def describe(events: list[object]) -> list[object]:
    """Events in comparable form (body pieces joined: their cuts follow the chunks)."""
    out: list[object] = []
    for e in events:
        if isinstance(e, bytes):
            if out and isinstance(out[-1], bytes):
                out[-1] += e
            else:
                out.append(e)
        elif isinstance(e, Request):
            out.append(("request", e.method, e.target, e.version, tuple(e.headers), e.body))
        elif isinstance(e, End):
            out.append(("end", tuple(e.trailers)))
        else:
            out.append(("fault", getattr(e, "status", None)))
    return out


#: A valid stream a client may pipeline: heads of several sizes, a body by length, a
#: chunked body with a trailer, a head of 60 KiB (under the bound), blank lines between.
STREAM = b"".join(
    [
        b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n",
        b"POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n0123456789",
        b"\r\n",
        b"PUT /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n3\r\nabc\r\n0\r\nX-Trailer: t\r\n\r\n",
        head(60 * 1024),
        b"GET /d HTTP/1.1\r\nHost: h\r\nX-Many: 1\r\nX-Many: 2\r\n\r\n",
    ]
)


@pytest.mark.parametrize("seed", range(40))
def test_any_chunking_of_a_valid_stream_parses_as_the_whole(seed: int) -> None:
    rng = random.Random(seed)
    cuts = rng.sample(range(1, len(STREAM)), rng.choice([1, 3, 10, 60, 400]))
    # Some cuts right inside a CRLF, where a split line ending must stay a CRLF.
    crlfs = [i + 1 for i in range(len(STREAM) - 1) if STREAM[i : i + 2] == b"\r\n"]
    cuts += rng.sample(crlfs, 5)
    whole = describe(events_for([STREAM]))
    assert [e[0] for e in whole if isinstance(e, tuple)].count("request") == 5
    assert describe(events_for(chunked(STREAM, cuts))) == whole


# ------------------------------------------------------------------ framing (RFC 9112 6)

POST = b"POST /get HTTP/1.1\r\nHost: httpbin.org\r\n"


def refused(data: bytes) -> int | None:
    """The status a head is refused with (fed all at once and one byte at a time, which
    must agree), or None when it is accepted; a refused head is never queued."""
    whole = events_for([data])
    bytewise = events_for([data[i : i + 1] for i in range(len(data))])
    assert describe(whole) == describe(bytewise)
    if whole and isinstance(whole[-1], Fault):
        assert not any(isinstance(e, Request) for e in whole), "a refused head was queued"
        return whole[-1].status
    return None


@pytest.mark.parametrize(
    ("fields", "status"),
    [
        # 6.3 (4): the final coding of a request must be chunked.
        pytest.param(b"Transfer-Encoding: identity\r\n", 400, id="te-identity"),
        pytest.param(b"Transfer-Encoding: gzip\r\n", 400, id="te-gzip"),
        pytest.param(b"Transfer-Encoding: chunked, gzip\r\n", 400, id="te-chunked-then-gzip"),
        pytest.param(b"Transfer-Encoding: chunked\t\r\n", 400, id="te-chunked-tab"),
        pytest.param(b"Transfer-Encoding: xchunked\r\n", 400, id="te-xchunked"),
        pytest.param(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n", 400, id="te-te-x"),
        pytest.param(b"Transfer-Encoding: chunked, chunked\r\n", 400, id="te-chunked-twice"),
        # 6.1: codings the proxy cannot decode: 501.
        pytest.param(
            b"Transfer-Encoding: identity\r\nTransfer-Encoding: chunked\r\n", 501, id="te-te-id"
        ),
        pytest.param(b"Transfer-Encoding: gzip, chunked\r\n", 501, id="te-gzip-chunked"),
        # 6.3 (3): both.
        pytest.param(b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", 400, id="cl-and-te"),
        # 6.3 (5): Content-Length values.
        pytest.param(b"Content-Length: 5\r\nContent-Length: 6\r\n", 400, id="cl-differ"),
        pytest.param(b"Content-Length: 5, 6\r\n", 400, id="cl-list-differs"),
        pytest.param(b"Content-Length: +5\r\n", 400, id="cl-sign"),
        pytest.param(b"Content-Length: 0x5\r\n", 400, id="cl-hex"),
        # RFC 9110 7.2: a Host whose port is not a number.
        pytest.param(b"Host: example.com:MPLE\r\n", 400, id="second-host"),
        # 6.3 (5) allows the same length twice, llhttp refuses it: refused, never misread.
        pytest.param(b"Content-Length: 0\r\nContent-Length: 0\r\n", 400, id="cl-same-twice"),
        pytest.param(b"Content-Length: 0, 0\r\n", 400, id="cl-same-list"),
        # Accepted: plain chunked, in any case.
        pytest.param(b"Transfer-Encoding: Chunked\r\n", None, id="te-chunked-any-case"),
    ],
)
def test_a_head_is_framed_one_way_or_refused(fields: bytes, status: int | None) -> None:
    body = b"0\r\n\r\n" if b"hunked" in fields and status is None else b""
    assert refused(POST + fields + b"\r\n" + body) == status


@pytest.mark.parametrize(
    "host",
    [
        b"example.com:MPLE",
        b"example.com:80x",
        b"example.com:99999",
        b"example.com:",
        b"a b",
        b"h/x",
        b"h:1:2",
    ],
)
def test_a_malformed_host_is_400(host: bytes) -> None:
    assert refused(b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n") == 400


@pytest.mark.parametrize(
    "host", [b"httpbin.org", b"httpbin.org:80", b"127.0.0.1:8080", b"[::1]:80", b"h"]
)
def test_a_well_formed_host_is_accepted(host: bytes) -> None:
    assert refused(b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n") is None


def test_te_in_http_1_0_is_400() -> None:
    # RFC 9112 6.1: Transfer-Encoding in an HTTP/1.0 message means faulty framing.
    data = b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    assert refused(data) == 400


def test_the_framing_used_is_the_framing_forwarded() -> None:
    from egresskit.mesh.http1_wire import edit_headers, request_head

    data = POST + b"Transfer-Encoding: CHUNKED\r\nX-A: 1\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    req = events_for([data])[0]
    assert isinstance(req, Request) and req.body == "chunked"
    out = request_head(req, edit_headers(req.headers, None))
    assert out.lower().count(b"transfer-encoding") == 1
    assert b"transfer-encoding: chunked\r\n" in out
    data = POST + b"content-length: 3\r\n\r\nabc"
    req = events_for([data])[0]
    assert isinstance(req, Request) and (req.body, req.length) == ("length", 3)
    out = request_head(req, edit_headers(req.headers, None))
    assert out.lower().count(b"content-length") == 1 and b"content-length: 3\r\n" in out


# ------------------------------------------------------------------ responses, same rules


@pytest.mark.parametrize(
    ("fields", "ok"),
    [
        pytest.param(b"Content-Length: 2\r\n", True, id="length"),
        pytest.param(b"Transfer-Encoding: chunked\r\n", True, id="chunked"),
        pytest.param(b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n", False, id="cl-te"),
        pytest.param(b"Content-Length: 2\r\nContent-Length: 3\r\n", False, id="cl-differ"),
        pytest.param(b"Transfer-Encoding: gzip\r\n", False, id="te-gzip"),
        pytest.param(b"Transfer-Encoding: identity\r\n", False, id="te-identity"),
        pytest.param(
            b"Transfer-Encoding: identity\r\nTransfer-Encoding: chunked\r\n", False, id="te-te"
        ),
    ],
)
def test_an_upstream_response_is_framed_one_way_or_refused(fields: bytes, ok: bool) -> None:
    from egresskit.mesh.http1_wire import Response, ResponseParser

    parser = ResponseParser()
    parser.expect(head_only=False)
    body = b"2\r\nok\r\n0\r\n\r\n" if b"chunked" in fields else b"ok"
    parser.feed(b"HTTP/1.1 200 OK\r\n" + fields + b"\r\n" + body)
    events = list(parser.events)
    if ok:
        assert isinstance(events[0], Response) and not parser.dead
        assert b"".join(e for e in events if isinstance(e, bytes)) == b"ok"
    else:
        assert parser.dead and not any(isinstance(e, Response) for e in events), events


def test_the_client_gets_the_framing_the_body_goes_out_with() -> None:
    from egresskit.mesh.http1_wire import Response, ResponseParser, response_plan
    from egresskit.policy.decision import Decision

    # A close-delimited response goes to an HTTP/1.1 client chunked, a length-framed one
    # with its length: one framing header either way (RFC 9112 6).
    for raw, want in [
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nok", b"transfer-encoding: chunked\r\n"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", b"content-length: 2\r\n"),
    ]:
        parser = ResponseParser()
        parser.expect(head_only=False)
        parser.feed(raw)
        resp = parser.events[0]
        assert isinstance(resp, Response)
        req = events_for([b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"])[0]
        assert isinstance(req, Request)
        decision = Decision(
            outcome="allowed", protocol=None, family="http", parent=None, route=None, backend=None
        )
        head = b"".join(response_plan(req, resp, decision)[0])
        assert head.count(want) == 1
        assert head.lower().count(b"content-length") + head.count(b"transfer-encoding") == 1


@pytest.mark.parametrize(
    "field",
    [
        pytest.param(b"X-A: a\rb\r\n", id="bare-cr"),
        pytest.param(b"X-A: a\x00b\r\n", id="nul"),
        pytest.param(b"X-A: a\r\n b\r\n", id="folded"),
        pytest.param(b"X-A: a\n\tb\n", id="folded-bare-lf"),
        pytest.param(b"X-A:\r\n b\r\n", id="folded-empty"),
    ],
)
def test_cr_nul_and_folded_lines_are_refused_by_the_parser_itself(field: bytes) -> None:
    # RFC 9110 5.5 / RFC 9112 5.2: framing() looks at values only when a field may frame
    # the body, relying on llhttp for the rest: this holds llhttp to it, both ways.
    assert refused(b"GET / HTTP/1.1\r\nHost: h\r\n" + field + b"\r\n") == 400
    from egresskit.mesh.http1_wire import ResponseParser

    parser = ResponseParser()
    parser.expect(head_only=False)
    parser.feed(b"HTTP/1.1 200 OK\r\n" + field + b"content-length: 0\r\n\r\n")
    assert parser.dead


CHUNKED_HEAD = b"POST /post HTTP/1.1\r\nHost: httpbin.org\r\nTransfer-Encoding: chunked\r\n\r\n"


@pytest.mark.parametrize(
    "trailers",
    [
        b"x-a: " + b"a" * 1000 + b"\r\n",  # many fields over the byte bound
        b"x: 1\r\n",  # small fields past the field cap
        b"x-a: " + b"a" * 70_000,  # one field that never ends
    ],
)
def test_request_trailers_are_bounded_431(trailers: bytes) -> None:
    p = RequestParser(64 * 1024)
    p.feed(CHUNKED_HEAD + b"1\r\na\r\n0\r\n")
    for _ in range(200):
        p.feed(trailers)
        if p.dead:
            break
    faults = [e.status for e in p.events if isinstance(e, Fault)]
    assert faults == [431] and not any(isinstance(e, End) for e in p.events)


def test_trailers_within_the_bounds_and_many_small_chunks_pass() -> None:
    p = RequestParser(64 * 1024)
    data = CHUNKED_HEAD + b"1\r\na\r\n" * 20_000 + b"0\r\nx-t: 1\r\n\r\n"
    for at in range(0, len(data), 16 * 1024):  # as reads deliver it
        p.feed(data[at : at + 16 * 1024])
    ends = [e for e in p.events if isinstance(e, End)]
    assert len(ends) == 1 and ends[0].trailers == [(b"x-t", b"1")]
    assert b"".join(e for e in p.events if isinstance(e, bytes)) == b"a" * 20_000


@pytest.mark.parametrize(
    "pieces",
    [
        [b"POST /post HTTP/1.1\nHost: httpbin.org\nContent-Length: 6\n", b"\na\nb\n\nX"],
        [b"POST /post HTTP/1.1\nHost: httpbin.org\nContent-Length: 6\n\n", b"a\nb\n\nX"],
        [b"POST /post HTTP/1.1\nHost: httpbin.org\nContent-Length: 6\n\na\nb\n\nX"],
    ],
)
def test_a_bare_lf_head_split_at_its_blank_line_leaves_the_body_as_sent(
    pieces: list[bytes],
) -> None:
    p = RequestParser(64 * 1024)
    for piece in pieces:
        p.feed(piece)
    assert b"".join(e for e in p.events if isinstance(e, bytes)) == b"a\nb\n\nX"
    assert any(isinstance(e, End) for e in p.events)
