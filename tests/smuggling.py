"""Request smuggling, tried as an attacker would: a corpus, a mutation fuzzer, two checks.

Job: the property "a request the policy did not judge never reaches an upstream", for
the tests (``tests/test_mesh_smuggling.py``) and ``make fuzz`` (``python -m tests.fuzz``).

* :data:`CORPUS`: named smuggling shapes (CL.TE, TE.CL, TE.TE with obfuscated values,
  duplicated and folded fields, bare LF, chunk-size tricks, pipelining behind a body,
  Host tricks), each hiding ``GET /forbidden`` where a lax hop would see a request.
* :func:`mutate`: a seeded mutation of a corpus entry (bytes flipped, inserted, cut,
  lines doubled, tokens that matter to framing spliced in).
* :func:`check_in_process`: the proxy's sans-IO HTTP/1 machine on its own, as fast as a
  fuzzer needs: every request it judges is recorded; what it forwards is parsed by a
  strict llhttp (no leniency, as Node's http module); the upstream must see exactly
  the judged requests, in order, and never more.
* :class:`StrictUpstream`: the same strict parser behind real sockets, recording every
  request head it parses, answering each whole request ``200 ok``.
"""

from __future__ import annotations

import itertools
import random
import socket
import threading
from dataclasses import dataclass, field

import httptools

from egresskit.mesh.http1_machine import Act, Http1Machine, Judgement
from egresskit.mesh.http1_wire import Request
from egresskit.mesh.settings import ProxyConfig
from egresskit.policy.decision import Decision
from tests.machinekit import DECISION

HOST = b"httpbin.org"
HIDDEN = b"GET /forbidden HTTP/1.1\r\nHost: httpbin.org\r\n\r\n"
LIMIT = 64 * 1024


def _post(fields: bytes, body: bytes, *, target: bytes = b"/get") -> bytes:
    return b"POST " + target + b" HTTP/1.1\r\nHost: httpbin.org\r\n" + fields + b"\r\n" + body


def _chunked(payload: bytes) -> bytes:
    """One chunk carrying ``payload``, then the last chunk."""
    return b"%x\r\n%s\r\n0\r\n\r\n" % (len(payload), payload)


#: The issue's TE.TE body: a lax hop that takes the body as the dechunked payload, the
#: next as chunked, ends the body at the payload's ``0`` and reads HIDDEN as a request.
_TETE = _chunked(b"0\r\n\r\n" + HIDDEN)
_CLTE = b"0\r\n\r\n" + HIDDEN


_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def _te(value: bytes) -> bytes:
    return b"Transfer-Encoding: " + value + b"\r\n"


CORPUS: dict[str, bytes] = {
    # CL.TE and TE.CL: both headers (RFC 9112 6.3 (3)).
    "cl.te": _post(b"Content-Length: %d\r\n" % len(_CLTE) + _te(b"chunked"), _CLTE),
    "te.cl": _post(_te(b"chunked") + b"Content-Length: 4\r\n", b"5c\r\n" + _CLTE),
    "cl.te-te-first": _post(_te(b"chunked") + b"Content-Length: %d\r\n" % len(_CLTE), _CLTE),
    # TE.TE: two Transfer-Encoding fields, or one obfuscated value.
    **{
        f"te.te-{name}": _post(_te(first) + _te(b"chunked"), _TETE)
        for name, first in [
            ("identity", b"identity"),
            ("gzip", b"gzip"),
            ("deflate", b"deflate"),
            ("empty", b""),
            ("chunked-then", b"chunked"),
        ]
    },
    "te.te-chunked-identity": _post(_te(b"chunked") + _te(b"identity"), _TETE),
    **{
        f"te-{name}": _post(_te(value), _TETE)
        for name, value in [
            ("identity", b"identity"),
            ("gzip", b"gzip"),
            ("chunked-tab", b"chunked\t"),
            ("tab-chunked", b"\tchunked"),
            ("xchunked", b"xchunked"),
            ("chunked-x", b"chunked, identity"),
            ("list", b"identity, chunked"),
            ("Chunked", b"ChUnKeD"),
            ("vtab", b"\x0bchunked"),
            ("quoted", b'"chunked"'),
            ("chunked-nul", b"chunked\x00"),
        ]
    },
    "te-space-before-colon": _post(b"Transfer-Encoding : chunked\r\n", _TETE),
    "te-underscore": _post(b"Transfer_Encoding: chunked\r\n", _TETE),
    "te-folded": _post(b"Transfer-Encoding:\r\n chunked\r\n", _TETE),
    "te-folded-after-identity": _post(b"Transfer-Encoding: identity\r\n chunked\r\n", _TETE),
    "folded-te-inside-other": _post(b"X-Foo: a\r\n Transfer-Encoding: chunked\r\n", _TETE),
    "te-http10": b"POST /get HTTP/1.0\r\nHost: httpbin.org\r\n" + _te(b"chunked") + b"\r\n" + _TETE,
    # Content-Length tricks (6.3 (5)).
    "cl-differ": _post(b"Content-Length: 0\r\nContent-Length: %d\r\n" % len(HIDDEN), HIDDEN),
    "cl-list": _post(b"Content-Length: 0, %d\r\n" % len(HIDDEN), HIDDEN),
    "cl-plus": _post(b"Content-Length: +%d\r\n" % len(HIDDEN), HIDDEN),
    "cl-space-inside": _post(b"Content-Length: 4 7\r\n", HIDDEN),
    "cl-leading-zeros": _post(b"Content-Length: 0000\r\n", HIDDEN),
    # Bare LF and bare CR line endings.
    "bare-lf-head": b"POST /get HTTP/1.1\nHost: httpbin.org\nTransfer-Encoding: chunked\n\n"
    + _TETE,
    "bare-lf-te-line": _post(b"X-A: 1\nTransfer-Encoding: chunked\r\n", _TETE),
    "bare-cr-te-line": _post(b"X-A: 1\rTransfer-Encoding: chunked\r\n", _TETE),
    "lf-in-chunk-size": _post(_te(b"chunked"), b"%x\n" % (5 + len(HIDDEN)) + b"0\r\n\r\n" + HIDDEN),
    # Chunk-size tricks.
    "chunk-size-hex-prefix": _post(_te(b"chunked"), b"0x5\r\nhello\r\n0\r\n\r\n" + HIDDEN),
    "chunk-size-plus": _post(_te(b"chunked"), b"+5\r\nhello\r\n0\r\n\r\n" + HIDDEN),
    "chunk-size-space": _post(_te(b"chunked"), b"5 \r\nhello\r\n0\r\n\r\n" + HIDDEN),
    "chunk-size-overflow": _post(_te(b"chunked"), b"1" + b"0" * 16 + b"5\r\nhello\r\n0\r\n\r\n"),
    "chunk-ext-smuggle": _post(_te(b"chunked"), b'5;x="\r\n0\r\n\r\n"\r\nhello\r\n0\r\n\r\n'),
    "chunk-too-long": _post(_te(b"chunked"), b"3\r\nabc" + HIDDEN + b"\r\n0\r\n\r\n"),
    "chunk-no-crlf": _post(_te(b"chunked"), b"5\r\nhello0\r\n\r\n" + HIDDEN),
    "chunk-negative": _post(_te(b"chunked"), b"-1\r\n" + HIDDEN),
    # Pipelining behind a body: the second request is a request, and must be judged.
    "pipeline-behind-length": _post(b"Content-Length: 5\r\n", b"hello" + HIDDEN),
    "pipeline-behind-chunked": _post(_te(b"chunked"), b"5\r\nhello\r\n0\r\n\r\n" + HIDDEN),
    "pipeline-get-with-body": b"GET /get HTTP/1.1\r\nHost: httpbin.org\r\nContent-Length: %d"
    b"\r\n\r\n" % len(HIDDEN) + HIDDEN + HIDDEN,
    "pipeline-after-trailer": _post(_te(b"chunked"), b"0\r\nX-T: 1\r\n\r\n" + HIDDEN),
    # Host and request-line tricks.
    "host-bad-port": b"GET /get HTTP/1.1\r\nHost: httpbin.org:MPLE\r\n\r\n",
    "host-twice": b"GET /get HTTP/1.1\r\nHost: httpbin.org\r\nHost: evil.example\r\n\r\n",
    "host-crlf": b"GET /get HTTP/1.1\r\nHost: httpbin.org\r\n\r\n\r\n" + HIDDEN,
    "absolute-form": b"GET http://httpbin.org/forbidden HTTP/1.1\r\nHost: httpbin.org\r\n\r\n",
    "upgrade-then-hidden": b"GET /get HTTP/1.1\r\nHost: httpbin.org\r\nConnection: upgrade\r\n"
    b"Upgrade: websocket\r\n\r\n" + HIDDEN,
    # An h2c upgrade: after a 101 the h2 preface and frames would reach an h2 server as
    # requests nobody judged; the proxy strips the upgrade (a fake upstream answers 101
    # to any upgrade it sees, see check_in_process).
    "upgrade-h2c": b"GET /get HTTP/1.1\r\nHost: httpbin.org\r\nConnection: Upgrade, HTTP2-Settings"
    b"\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n" + _H2_PREFACE + HIDDEN,
    "upgrade-h2c-no-connection": b"GET /get HTTP/1.1\r\nHost: httpbin.org\r\nUpgrade: h2c\r\n"
    b"Connection: keep-alive\r\n\r\n" + _H2_PREFACE + HIDDEN,
    "upgrade-h2c-and-websocket": b"GET /get HTTP/1.1\r\nHost: httpbin.org\r\nConnection: upgrade"
    b"\r\nUpgrade: websocket, h2c\r\n\r\n" + _H2_PREFACE + HIDDEN,
    "connect": b"CONNECT httpbin.org:80 HTTP/1.1\r\nHost: httpbin.org\r\n\r\n" + HIDDEN,
    "expect-continue": _post(
        b"Expect: 100-continue\r\nContent-Length: %d\r\n" % len(_CLTE) + _te(b"chunked"), _CLTE
    ),
    "nul-in-value": _post(b"X-A: a\x00b\r\n" + _te(b"chunked"), _TETE),
    "lf-inside-target": b"GET /get\nGET /forbidden HTTP/1.1\r\nHost: httpbin.org\r\n\r\n",
    "http09": b"GET /forbidden\r\n\r\n",
    # Valid requests: the control group (must be served, hidden or not).
    "valid-get": b"GET /get HTTP/1.1\r\nHost: httpbin.org\r\n\r\n",
    "valid-chunked": _post(_te(b"chunked"), b"5\r\nhello\r\n0\r\n\r\n"),
    "valid-length": _post(b"Content-Length: 5\r\n", b"hello"),
}

_TOKENS = [
    b"\r\n",
    b"\n",
    b"\r",
    b" ",
    b"\t",
    b"\x00",
    b",",
    b";",
    b":",
    b"0",
    b"5",
    b"f" * 9,
    b"chunked",
    b"identity",
    b"Transfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: identity\r\n",
    b"Content-Length: 0\r\n",
    b"Content-Length: 47\r\n",
    b"Host: httpbin.org\r\n",
    b"Connection: close\r\n",
    b"0\r\n\r\n",
    b"\r\n\r\n",
    HIDDEN,
]


def mutate(rng: random.Random, data: bytes) -> bytes:
    """One to four random edits of ``data``."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(7)
        at = rng.randint(0, len(out))
        if op == 0 and out:  # flip a byte
            out[min(at, len(out) - 1)] = rng.randrange(256)
        elif op == 1:  # splice in a token that matters to framing
            out[at:at] = rng.choice(_TOKENS)
        elif op == 2:  # cut a span
            del out[at : at + rng.randint(1, 12)]
        elif op == 3:  # double a span
            out[at:at] = out[at : at + rng.randint(1, 40)]
        elif op == 4:  # double a line
            lines = bytes(out).split(b"\r\n")
            i = rng.randrange(len(lines))
            lines.insert(i, lines[i])
            out = bytearray(b"\r\n".join(lines))
        elif op == 5:  # change a line's case
            lines = bytes(out).split(b"\r\n")
            i = rng.randrange(len(lines))
            lines[i] = lines[i].swapcase()
            out = bytearray(b"\r\n".join(lines))
        else:  # swap two lines
            lines = bytes(out).split(b"\r\n")
            i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
            out = bytearray(b"\r\n".join(lines))
    return bytes(out)


def fuzz_input(rng: random.Random, seeds: list[bytes]) -> bytes:
    """A mutated seed; one time in four, two seeds pipelined on one connection first."""
    data = rng.choice(seeds)
    if rng.random() < 0.25:
        data += rng.choice(seeds)
    return mutate(rng, data)


def cuts(rng: random.Random, data: bytes) -> list[bytes]:
    """``data`` cut into one to four pieces, as TCP may deliver it."""
    points = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(0, 3))))
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds) if b > a]


# ------------------------------------------------------------------ the strict upstream


#: A request as each side saw it: method, target, its Host values.
Head = tuple[bytes, bytes, bytes]


def head_of(req: Request) -> Head:
    return (
        req.method,
        req.target,
        b"".join(b"|" + v for k, v in req.headers if k.lower() == b"host"),
    )


class _Recorder:
    """httptools callbacks: the (method, target) of every request head parsed."""

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)  # strict: no leniency at all
        self.heads: list[Head] = []
        self.complete = 0
        #: The protocols the last head asked to upgrade to (lower case; b"": none).
        self.upgrade = b""
        self._url = b""
        self._host = b""

    def on_message_begin(self) -> None:
        self._url = self._host = self.upgrade = b""

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"host":
            self._host += b"|" + value
        if name.lower() == b"upgrade":
            self.upgrade += value.lower()

    def on_headers_complete(self) -> None:
        self.heads.append((self.parser.get_method(), self._url, self._host))

    def on_message_complete(self) -> None:
        self.complete += 1

    def feed(self, data: bytes) -> bool:
        """False once the parser stopped (an error, or an upgrade)."""
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            return False
        return True


@dataclass
class Verdict:
    """What one input did in-process: the requests judged, the requests the upstream
    parsed from what was forwarded, the fault the client got (None: none)."""

    judged: list[Head] = field(default_factory=list)
    upstream: list[Head] = field(default_factory=list)
    fault: int | None = None
    #: The protocol the upstream switched to (b"": none), and the bytes forwarded after.
    switched: bytes = b""
    tunneled: bytes = b""

    @property
    def unjudged(self) -> int:
        """Requests the upstream parsed beyond (or other than) those judged; bytes
        tunneled after an h2c upgrade count as one (an h2 server reads requests in them)."""
        extra = len(self.upstream) - len(self.judged)
        wrong = sum(a != b for a, b in zip(self.upstream, self.judged, strict=False))
        h2c = int(b"h2c" in self.switched and bool(self.tunneled))
        return max(extra, 0) + wrong + h2c


_ALLOWED = DECISION
_DENIED = Decision(
    outcome="forbidden",
    protocol=None,
    family="http",
    parent=None,
    route=None,
    backend=None,
    http_status=403,
)
_OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
_SWITCH = b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: "


def check_in_process(pieces: list[bytes]) -> Verdict:
    """Drive the proxy's HTTP/1 machine (:class:`Http1Machine`, the same one the proxy
    runs) with ``pieces`` from the client and a strict llhttp as the upstream, which
    answers each whole request ``200`` (``101`` to one that asks to upgrade); every
    head the machine judges is recorded
    (CONNECT is denied, as under the guide's restricting policy: an accepted CONNECT is
    a tunnel, opaque by design). At the end the client half-closes."""
    verdict = Verdict()
    upstream = _Recorder()
    state = {"answered": 0, "closed": False, "alive": True}

    def judge(req: Request, host: str | None) -> Judgement:
        verdict.judged.append(head_of(req))
        if req.method == b"CONNECT":
            return Judgement("answer", decision=_DENIED, status=403)
        return Judgement("forward", decision=_ALLOWED, target=("upstream", 80), hostname="h")

    machine = Http1Machine(ProxyConfig(max_header_bytes=LIMIT), judge, 0.0)

    def run(acts: list[Act]) -> None:
        for kind, data, _ in acts:
            if kind == "open":
                run(machine.upstream_opened(0.0, reused=False))
            elif kind == "upstream" and verdict.switched:
                verdict.tunneled += data
            elif kind == "upstream" and state["alive"]:
                state["alive"] = upstream.feed(data)
                while upstream.complete > state["answered"]:
                    state["answered"] += 1
                    if not state["alive"] and upstream.upgrade:
                        # An upgrade it takes (as an h2c or WebSocket server would).
                        verdict.switched = upstream.upgrade
                        run(machine.upstream_data(_SWITCH + upstream.upgrade + b"\r\n\r\n", 0.0))
                    else:
                        run(machine.upstream_data(_OK, 0.0))
            elif kind == "client" and verdict.fault is None:
                status = data[9:12]
                if data.startswith(b"HTTP/1.1 ") and status[:1] in (b"4", b"5"):
                    verdict.fault = int(status)
            elif kind == "close":
                state["closed"] = True

    run(machine.flush())
    for piece in pieces:
        run(machine.client_data(piece, 0.0))
        if state["closed"]:
            break
    if not state["closed"]:
        run(machine.client_closed(0.0, lost=False))
    verdict.upstream = upstream.heads
    return verdict


class StrictUpstream:
    """A strict HTTP/1 server on ``127.0.0.1:0`` (a thread per connection) that records
    every request head it parses and answers each whole request ``200`` with ``ok``."""

    def __init__(self) -> None:
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.05)
        self.port: int = self._sock.getsockname()[1]
        self.lock = threading.Lock()
        self.seen: list[Head] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._accept = threading.Thread(target=self._serve, name="strict-upstream", daemon=True)
        self._accept.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            thread = threading.Thread(target=self._run, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _run(self, conn: socket.socket) -> None:
        conn.settimeout(0.05)
        recorder = _Recorder()
        answered = 0
        with conn:
            while not self._stop.is_set():
                try:
                    data = conn.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not data:
                    return
                before = len(recorder.heads)
                alive = recorder.feed(data)
                with self.lock:
                    self.seen.extend(recorder.heads[before:])
                try:
                    for _ in range(recorder.complete - answered):
                        conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                except OSError:
                    return
                answered = recorder.complete
                if not alive:
                    return

    def count(self) -> int:
        with self.lock:
            return len(self.seen)

    def close(self) -> None:
        self._stop.set()
        self._accept.join(timeout=5)
        for thread in self._threads:
            thread.join(timeout=5)
        self._sock.close()
