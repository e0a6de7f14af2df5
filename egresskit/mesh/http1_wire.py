"""HTTP/1.1 on the wire for the egress proxy: the messages, their parsers, their bytes.

Job: turn bytes into messages and messages into bytes, with no I/O (h11's split: a pure
core that :mod:`egresskit.mesh.http1` drives from its sockets). Parsing is httptools
(llhttp) with hyper's leniencies; what goes out follows hyper's wire rules (header names
in lower case, bodies re-framed per hop; see :mod:`egresskit.mesh.http1`).

Parse records use ``__slots__`` classes, not dataclasses: they are made once per message
on the proxy's hot path.
"""

from __future__ import annotations

from collections import deque
from http import HTTPStatus
from typing import TYPE_CHECKING, Generic, Literal, TypeVar

import httptools

from egresskit.mesh.http1_framing import (
    BadHead,
    Framing,
    check_host,
    check_request_line,
    framing,
)

if TYPE_CHECKING:
    from egresskit.policy.decision import Decision, HeaderEdit

#: Bound on an upstream response head, and on its trailers: hyper's client read buffer
#: (8 KiB + 100 fields of 4 KiB, ``DEFAULT_MAX_BUFFER_SIZE``). Past it: 502, closed.
MAX_RESPONSE_HEAD = 8192 + 4096 * 100


#: Most trailer fields a message may carry (hyper's default header count, 100).
MAX_TRAILER_FIELDS = 100

#: The fields that frame a body (lower case): never forwarded as the sender wrote them.
_FRAMING_FIELDS = frozenset((b"transfer-encoding", b"content-length"))

#: The lengths of the names :meth:`_Messages._collect` keeps: host, connection,
#: content-length, transfer-encoding.
_COLLECTED_LENGTHS = frozenset((4, 10, 14, 17))

#: What never goes on from a response but an upgrade's: the framing fields, and the
#: connection fields linkerd2-proxy's HTTP/1 client strips from every other response
#: (``linkerd_http_upgrade::strip_connection_headers``): Connection (the fields it names
#: go too, :func:`response_plan`), and always Upgrade, Proxy-Connection and Keep-Alive.
#: They describe the upstream's hop, not the client's (RFC 9110 7.6.1).
_RESPONSE_DROPPED = _FRAMING_FIELDS | {
    b"connection",
    b"upgrade",
    b"proxy-connection",
    b"keep-alive",
}


class HeadTooLarge(Exception):
    """A request head over ``max_header_bytes`` (raised from a parser callback)."""


# ====================================================================== parse records

Headers = list[tuple[bytes, bytes]]


class Request:
    __slots__ = (
        "body",
        "headers",
        "host",
        "keep_alive",
        "length",
        "method",
        "target",
        "upgrade",
        "version",
    )

    def __init__(
        self,
        method: bytes,
        target: bytes,
        version: str,
        headers: Headers,
        keep_alive: bool,
        upgrade: bool,
        body: Framing = "none",
        length: int = 0,
        host: bytes | None = None,
    ) -> None:
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers
        # h11 (this module's parser before) never kept an HTTP/1.0 connection alive.
        self.keep_alive = keep_alive and version == "1.1"
        self.upgrade = upgrade
        #: "length", "chunked" or "none": how the request body is framed, as decided by
        #: :func:`~egresskit.mesh.http1_framing.framing` (and forwarded so), and its length.
        self.body: Framing = body
        self.length = length
        #: The value of its one Host field, as sent (None: none; the parser refuses more).
        self.host = host


class Response:
    __slots__ = (
        "announced",
        "body",
        "connection",
        "headers",
        "keep_alive",
        "length",
        "reason",
        "status",
        "version",
    )

    def __init__(
        self,
        status: int,
        reason: bytes,
        version: str,
        headers: Headers,
        keep_alive: bool,
        body: Framing = "none",
        length: int = 0,
        connection: tuple[bytes, ...] = (),
    ) -> None:
        self.status = status
        self.reason = reason
        self.version = version
        self.headers = headers
        self.keep_alive = keep_alive
        #: The values of its Connection fields, in order.
        self.connection = connection
        #: The framing the head announces (for a HEAD answer or a 304: what a GET's body
        #: would have), and the length it announces.
        self.announced: Framing = body
        self.length = length
        #: "length", "chunked", "none" (no body by status), or "eof" (until close):
        #: RFC 9112 6.3 (1) and (7).
        self.body: Framing | Literal["eof"] = body
        if status < 200 or status in (204, 304):
            self.body = "none"
        elif body == "none":
            self.body = "eof"


class End:
    """The end of a message, with its trailers (chunked bodies only)."""

    __slots__ = ("trailers",)

    def __init__(self, trailers: Headers) -> None:
        self.trailers = trailers


#: The end of every message without trailers: one shared record (its list is never
#: filled; a message's trailers go into a list of its own).
_NO_TRAILERS = End([])


class Fault:
    """The client's bytes stopped parsing: answer ``status`` and close."""

    __slots__ = ("status",)

    def __init__(self, status: int) -> None:
        self.status = status


_Event = Request | Response | bytes | End | Fault


_P = TypeVar("_P", httptools.HttpRequestParser, httptools.HttpResponseParser)


def _parser(parser_type: type[_P], callbacks: object) -> _P:
    parser = parser_type(callbacks)
    # hyper (httparse) takes bare LF line endings; llhttp only when told.
    parser.set_dangerous_leniencies(lenient_optional_cr_before_lf=True)
    return parser


class _Messages(Generic[_P]):
    """httptools callbacks for one direction of one connection: heads, body pieces and
    ends queued in order, so pipelined messages wait their turn.

    The callbacks run once per field of every message on the proxy's one loop thread, so
    each subclass writes its own in full: no ``super()`` chain or helper call per field,
    helpers only on the rare paths (trailers, a refused head)."""

    def __init__(self, parser_type: type[_P]) -> None:
        self.parser: _P = _parser(parser_type, self)
        self.events: deque[_Event] = deque()
        self.head_open = False
        #: Bytes after an upgrade or CONNECT head: the tunnel's first bytes.
        self.rest: bytes | None = None
        self.dead = False
        self.too_large = False
        #: The status a head refused by :mod:`~egresskit.mesh.http1_framing` gets.
        self.refused = 0
        self._headers: Headers = []
        #: The trailers: the empty list of ``_NO_TRAILERS`` until the first one.
        self._trailers: Headers = _NO_TRAILERS.trailers
        self._in_body = False
        #: The values of the head's fields its checks read, in order (tuples: most heads
        #: have few, and an empty one costs nothing): Transfer-Encoding and Content-Length
        #: for framing(), Host for check_host(), Connection for response_plan().
        self._te: tuple[bytes, ...] = ()
        self._cl: tuple[bytes, ...] = ()
        self._hosts: tuple[bytes, ...] = ()
        self._conn: tuple[bytes, ...] = ()

    def _collect(self, lname: bytes, value: bytes) -> None:
        """Keep ``value`` if its field is one the head's checks read (see ``_te``). The
        callbacks call it only for names of those lengths (``_COLLECTED_LENGTHS``)."""
        if lname == b"host":
            self._hosts += (value,)
        elif lname == b"content-length":
            self._cl += (value,)
        elif lname == b"transfer-encoding":
            self._te += (value,)
        elif lname == b"connection":
            self._conn += (value,)

    def _parse(self, data: bytes) -> bool:
        """Feed llhttp: bytes after an upgrade or CONNECT head are kept for the tunnel;
        bytes it refuses end the direction with a Fault (False)."""
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self.dead = True
            self.rest = data[int(exc.args[0]) :]
        except httptools.HttpParserError:
            self._fault()
            return False
        return True

    def _fault(self) -> None:
        """The parser stopped on the bytes: a Fault with the status the head gets.

        A callback's own exception comes back as HttpParserCallbackError: the fields say
        whether it was the head size or a head refused by its framing."""
        self.dead = True
        self.events.append(Fault(self.refused or (431 if self.too_large else 400)))

    def discard(self) -> None:
        """Done with: break the cycle between the httptools parser and this object (the
        parser keeps our bound methods), so reference counting frees both now. Left to
        the cyclic collector, a response parser per exchange was ~19 objects of garbage
        each, and its collections ~6% of the proxy's Python time."""
        del self.parser

    def _too_large(self) -> None:
        """From a callback: the parser stops, feed() answers the bound's status."""
        self.too_large = True
        raise HeadTooLarge()


class RequestParser(_Messages[httptools.HttpRequestParser]):
    """The client side: request heads, with the head size bounded (431).

    The bound holds however the head is cut into chunks. A head that starts at a chunk's
    first byte (the parser was between messages) or goes on from the last chunk is
    counted in raw bytes: every byte of it up to its blank line (found in the chunk: the
    parser does not say where the head ended), looked for only when the bytes counted so
    far and the whole chunk could together be over the limit, or when a later head in the
    chunk needs to know where this one ended. A head that starts mid-chunk (pipelined
    behind a body or another request) is counted by what the callbacks saw while it
    completes in that chunk; if it goes on past it, by the rest of that chunk (less what
    earlier messages in it are known to have used, never more than they did), then in raw
    bytes. Either way a head over the limit, complete or not, is a 431, and an over-long
    complete head is never queued as a request.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(httptools.HttpRequestParser)
        self.limit = limit
        self.head_size = 0
        #: A complete head not yet queued: llhttp checks a head's framing only after the
        #: head callback (and may refuse it then), so a head is queued once the parser
        #: went past it (a body byte, the message's end, the end of the chunk).
        self.held: Request | None = None
        self._url = b""
        #: The open head is counted in raw bytes (see the class docstring).
        self._raw = False
        #: The next head to begin starts at the current chunk's first byte.
        self._at_start = False
        #: The chunk being parsed, and the end of the previous one while a head was open
        #: across them (a blank line may straddle the two).
        self._chunk = b""
        self._tail = b""
        #: Bytes of the chunk known to belong to earlier messages (at most what they used).
        self._used = 0
        #: The ``_tail`` of a raw-counted head that ended in this chunk while its size
        #: was not looked for (it could not be over the limit): its bytes count towards
        #: ``_used`` only if a later head stays open past the chunk.
        self._first: bytes | None = None
        self._body_open = False
        #: Trailer bytes (by the callbacks) and, for a chunked body, the bytes fed since
        #: the last body byte that were not body (chunk lines, extensions, trailers: an
        #: over-estimate by at most one read), both bounded by ``limit`` (431).
        self._trailer_size = 0
        self._gap = 0
        self._body_seen = 0
        self._chunked = False

    def idle(self) -> bool:
        """Between messages, nothing queued: the next bytes start a new head."""
        return not (self.head_open or self._body_open or self.events or self.dead)

    def on_message_begin(self) -> None:
        self.head_open = True
        self._in_body = False
        self._url = b""
        self._headers = []
        self._trailers = _NO_TRAILERS.trailers
        self._te = self._cl = self._hosts = self._conn = ()
        self.head_size = self._gap = 0
        self._raw = self._at_start
        self._at_start = False  # another head in this chunk starts mid-chunk
        self._tail = b""

    def on_url(self, url: bytes) -> None:
        self._url += url
        if not self._raw:
            self.head_size += len(url)
            if self.head_size > self.limit:
                self._too_large()

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._in_body:
            self._trailer(name, value)
            return
        self._headers.append((name, value))
        n = len(name)
        if n in _COLLECTED_LENGTHS:  # few other names pass
            self._collect(name.lower(), value)
        if not self._raw:
            self.head_size += n + len(value) + 4
            if self.head_size > self.limit:
                self._too_large()

    def _trailer(self, name: bytes, value: bytes) -> None:
        # Trailers count against the same bound as the head (RFC 9110 6.5), and their
        # number is capped. (No trailer counted yet in this message: the count restarts.)
        if not self._trailers:
            self._trailer_size = 0
            self._trailers = []
        self._trailer_size += len(name) + len(value) + 4
        if self._trailer_size > self.limit or len(self._trailers) >= MAX_TRAILER_FIELDS:
            self._too_large()
        self._trailers.append((name, value))

    def on_headers_complete(self) -> None:
        if self._raw:
            if self.head_size + len(self._chunk) > self.limit:
                part = _head_part(self._tail, self._chunk)
                self._used += part
                self.head_size += part
                if self.head_size > self.limit:
                    self._too_large()
            else:
                # The head is within the limit whatever its part of the chunk: where it
                # ended is looked for only if feed() needs it.
                self._first = self._tail
        else:
            self._used += self.head_size
        parser = self.parser
        version = parser.get_http_version()
        # The head's framing (RFC 9112 6), or the parser stops with the refusal.
        try:
            check_request_line(self._url, version)
            check_host(self._hosts, version)
            if self._te or self._cl:
                body, length = framing(self._te, self._cl, version, request=True)
            else:
                # No field frames the body. (CR, LF and NUL in a value, and folded lines,
                # llhttp refuses itself: tests/test_http1_wire.py holds it to that.)
                body, length = "none", 0
        except BadHead as exc:
            self.refused = exc.status
            raise  # from a callback: the parser stops, feed() answers the status
        self.head_open = False
        self._in_body = self._body_open = True
        self._chunked = body == "chunked"
        self.held = Request(
            parser.get_method(),
            self._url,
            version,
            self._headers,
            parser.should_keep_alive(),
            parser.should_upgrade(),
            body,
            length,
            self._hosts[0] if self._hosts else None,
        )

    def on_body(self, body: bytes) -> None:
        held = self.held
        if held is not None:  # the parser took a body byte: the head is accepted
            self.events.append(held)
            self.held = None
        n = len(body)
        self._used += n  # (llhttp calls on_body only while the body is open)
        self._body_seen += n
        self.events.append(body)

    def on_message_complete(self) -> None:
        self._body_open = False
        held = self.held
        if held is not None:
            self.events.append(held)
            self.held = None
        self.events.append(End(self._trailers) if self._trailers else _NO_TRAILERS)

    def feed(self, data: bytes) -> None:
        if self.dead:
            return
        was_open = self.head_open
        body_open = self._body_open
        if not body_open:
            # llhttp refuses a bare LF after the request line even when lenient; h11 and
            # httparse take it. Rewritten only when the chunk's first LF is bare, so the
            # usual CRLF head costs one find().
            # An LF first in the chunk is bare unless the last chunk ended in its CR.
            lf = data.find(b"\n")
            if (lf == 0 and not self._tail.endswith(b"\r")) or (lf > 0 and data[lf - 1] != 13):
                data = _crlf_head(data, self._tail if was_open else b"")
        self._at_start = not (was_open or body_open)
        self._chunk = data
        self._used = 0
        self._first = None
        chunked_body = body_open and self._chunked
        self._body_seen = 0
        if not self._parse(data):
            self.held = None  # the parser did not accept this head: it never goes on
        held = self.held
        if held is not None:
            # The head held back since its last byte: the parser took what followed.
            self.events.append(held)
            self.held = None
        if chunked_body and self._body_open and not self.dead:
            # Still in the same chunked body: what was not body since its last byte.
            other = len(data) - self._body_seen
            self._gap = other if self._body_seen else self._gap + other
            if self._gap > self.limit:
                self.dead = True
                self.too_large = True
                self.events.append(Fault(431))
        if self.head_open and not self.dead:
            # The head goes on past this chunk.
            if self._raw:
                self.head_size += len(data)  # all of the chunk is head
            else:
                # It began mid-chunk: the rest of the chunk after earlier messages.
                if self._first is not None:
                    self._used += _head_part(self._first, data)
                self.head_size = max(self.head_size, len(data) - self._used)
                self._raw = True
            self._tail = data[-3:]
            if self.head_size > self.limit:
                self.dead = True
                self.events.append(Fault(431))
        self._chunk = b""


def _head_part(tail: bytes, chunk: bytes) -> int:
    """How many bytes of ``chunk`` belong to a head that ends in it: up to and including
    the first blank line (CRLF CRLF, or the bare-LF forms hyper takes), which may begin in
    ``tail``, the end of the previous chunk. A head that starts in ``chunk`` (``tail``
    empty) may have blank lines before it, which are skipped."""
    if tail:
        buf, start = tail + chunk, 0
    else:
        buf = chunk
        start = len(chunk) - len(chunk.lstrip(b"\r\n")) if chunk[:1] in (b"\r", b"\n") else 0
    # The earliest end of a blank line: a later form is only looked for before it.
    end = len(buf)
    for blank in (b"\r\n\r\n", b"\n\n", b"\n\r\n"):
        i = buf.find(blank, start, end)
        if i >= 0:
            end = i + len(blank)
    return max(0, end - len(tail))


class ResponseParser(_Messages[httptools.HttpResponseParser]):
    """The upstream side: response heads; 1xx other than 101 are dropped (hyper's client
    swallows them too), and the response to a HEAD request ends with its head."""

    def __init__(self) -> None:
        super().__init__(httptools.HttpResponseParser)
        self.busy = False
        self._reason = b""
        self._head_only = False
        self._informational = False
        self._stopped = False
        self._pending = b""
        #: The bytes of the head, then of its trailers, by the callbacks: bounded by
        #: MAX_RESPONSE_HEAD (502).
        self._size = 0
        #: Raw bytes fed while a head stayed open (a field llhttp is still collecting).
        self._raw = 0
        #: A chunked body is open; bytes fed since its last body byte that were not body
        #: (chunk lines, trailers: a trailer llhttp is still collecting), at most one
        #: read over; body bytes seen in the current read.
        self._chunked = False
        self._gap = 0
        self._body_seen = 0

    def idle(self) -> bool:
        """No response expected, none begun, nothing queued: safe to pool the connection."""
        return not (
            self.busy or self.head_open or self.events or self.dead or self._pending or self.rest
        )

    def expect(self, *, head_only: bool) -> None:
        """The next response answers a request: ``head_only`` for a HEAD request."""
        self.busy = True
        self._head_only = head_only

    def on_message_begin(self) -> None:
        self.head_open = True
        self._in_body = False
        self._reason = b""
        self._headers = []
        self._trailers = _NO_TRAILERS.trailers
        self._te = self._cl = self._hosts = self._conn = ()
        self._informational = False
        self._size = 0

    def on_status(self, reason: bytes) -> None:
        self._reason += reason
        self._size += len(reason)
        if self._size > MAX_RESPONSE_HEAD:
            self._too_large()

    def on_header(self, name: bytes, value: bytes) -> None:
        # The head's (and then its trailers') bytes, bounded; past the bound the parser
        # stops.
        n = len(name)
        self._size += n + len(value) + 4
        if self._size > MAX_RESPONSE_HEAD:
            self._too_large()
        if self._in_body:
            if not self._trailers:
                self._trailers = []  # its own list, not the shared empty one
            elif len(self._trailers) >= MAX_TRAILER_FIELDS:
                self._too_large()
            self._trailers.append((name, value))
            return
        self._headers.append((name, value))
        if n in _COLLECTED_LENGTHS:  # few other names pass
            self._collect(name.lower(), value)

    def on_headers_complete(self) -> None:
        parser = self.parser
        status = parser.get_status_code()
        self.head_open = False
        self._in_body = True
        if 100 <= status < 200 and status != 101:
            self._informational = True
            return
        version = parser.get_http_version()
        if self._te or self._cl:
            # The head's framing (RFC 9112 6), or the parser stops with the refusal.
            try:
                body, length = framing(self._te, self._cl, version, request=False)
            except BadHead as exc:
                self.refused = exc.status
                raise  # from a callback: the parser stops, feed() answers the status
        else:
            body, length = "none", 0  # no field frames the body
        self._chunked, self._gap = body == "chunked", 0
        self.events.append(
            Response(
                status,
                self._reason,
                version,
                self._headers,
                parser.should_keep_alive(),
                body,
                length,
                self._conn,
            )
        )
        if self._head_only:
            self.events.append(_NO_TRAILERS)
            self._head_only = False
            self.busy = False
            self._stopped = True
            raise _HeadDone()

    def on_body(self, body: bytes) -> None:
        if not self._informational:
            self._body_seen += len(body)
            self.events.append(body)

    def on_message_complete(self) -> None:
        if self._informational:
            return
        self._chunked = False
        self.events.append(End(self._trailers) if self._trailers else _NO_TRAILERS)
        self.busy = False

    def feed(self, data: bytes) -> None:
        if not self._head_only:
            if self.dead:
                return
            was_open, chunked = self.head_open, self._chunked
            self._body_seen = 0
            self._parse(data)
            if chunked and self._chunked and not self.dead:
                other = len(data) - self._body_seen
                self._gap = other if self._body_seen else self._gap + other
                if self._gap > MAX_RESPONSE_HEAD:
                    self.dead = True
                    self.events.append(Fault(502))
            if self.head_open and not self.dead:
                self._raw = self._raw + len(data) if was_open else len(data)
                if self._raw > MAX_RESPONSE_HEAD:
                    self.dead = True
                    self.events.append(Fault(502))
            return
        # A HEAD response announces a body it does not send, and llhttp cannot be told
        # so: feed it only up to the end of the head, then start a fresh parser.
        buf = self._pending + data
        ends = [i + n for i, n in ((buf.find(b"\r\n\r\n"), 4), (buf.find(b"\n\n"), 2)) if i >= 0]
        if not ends:
            self._pending = buf
            if len(buf) > MAX_RESPONSE_HEAD:
                self.dead = True
            return
        end = min(ends)
        self._pending = b""
        self._stopped = False
        try:
            self.parser.feed_data(buf[:end])
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            if not self._stopped:
                self.dead = True
                return
            # Stopped on purpose (_HeadDone, which httptools reports as a callback error).
            self.parser = _parser(httptools.HttpResponseParser, self)
            if len(buf) > end:
                self.feed(buf[end:])
            return
        if len(buf) > end:
            self.feed(buf[end:])  # that was an informational head: the final one follows


class _HeadDone(Exception):
    """Raised from a callback to stop the parser after a HEAD response's head."""


# ====================================================================== bytes out


def response_plan(
    req: Request, resp: Response, decision: Decision
) -> tuple[list[bytes], bool, bool, bool]:
    """How a response goes to the client: (head parts, body chunked?, keep the client
    connection?, keep the upstream connection?).

    The upstream's connection fields stop here, as linkerd2-proxy's HTTP/1 client strips
    them before the route's filters see the response (``_RESPONSE_DROPPED``), and with
    them the upstream's wish to close: the client's connection is the proxy's own, which
    hyper's server keeps open unless the client asked to close it (or a header the
    route's ResponseHeaderModifier writes says close)."""
    dropped = _RESPONSE_DROPPED
    if resp.connection:
        named = {t.strip().lower() for value in resp.connection for t in value.split(b",")}
        if not named <= dropped:
            dropped = dropped | named
    edit = decision.response_header_edit
    headers = resp.headers
    keep = req.keep_alive
    if edit is not None:
        # Stripped first, then edited: the filter's own fields all go on.
        headers = [(k, v) for k, v in headers if k.lower() not in dropped]
        headers = edit_headers(headers, edit)
        dropped = _FRAMING_FIELDS
        keep = keep and not has_close(headers)
    framing = resp.body
    if req.method == b"HEAD":
        framing = "none"  # the parser ended the message with its head
    if req.upgrade:
        keep = False  # a declined upgrade: what follows is not HTTP we can parse
    chunked = False
    # The framing the client is sent is the one the body goes out with, in one header
    # (RFC 9112 6.3), whatever the upstream or a header edit wrote.
    out: Framing = "none"
    if framing == "chunked" or framing == "eof":
        if req.version == "1.1":
            chunked = True
            out = "chunked"
        else:
            # An HTTP/1.0 client cannot read chunks: close-delimited, as h11 sends it.
            keep = False
    elif framing == "length":
        out = "length"
    elif req.method == b"HEAD" or resp.status == 304:
        # No body, but the head says what a GET's would have been (RFC 9110 8.6, 9.3.2).
        out = resp.announced
    if out == "chunked" and req.version != "1.1":
        out = "none"  # RFC 9112 6.1: no Transfer-Encoding to an HTTP/1.0 client
    keep_up = framing != "eof" and resp.keep_alive and req.keep_alive
    parts = [response_line(resp.status, resp.reason)]
    _fields(parts, headers, out, resp.length, dropped)
    # The upstream's own Connection field was dropped; a filter's went out.
    if not keep and (edit is None or not has_close(headers)):
        parts.append(b"connection: close\r\n")
    parts.append(b"\r\n")
    return parts, chunked, keep, keep_up


def _fields(
    parts: list[bytes],
    headers: Headers,
    body: Framing,
    length: int,
    dropped: frozenset[bytes] | set[bytes] = _FRAMING_FIELDS,
) -> None:
    """Append the header lines of a head that goes on, in one pass: names in lower case
    (hyper writes them so), no framing field of the sender's own (nor any other field
    named in ``dropped``), then the one framing field the body goes on with
    (:func:`~egresskit.mesh.http1_framing.reframe`'s rule: the framing used is the
    framing forwarded, RFC 9112 6)."""
    for name, value in headers:
        name = name.lower()
        if name not in dropped:
            parts += (name, b": ", value, b"\r\n")
    if body == "chunked":
        parts.append(b"transfer-encoding: chunked\r\n")
    elif body == "length":
        parts.append(b"content-length: %d\r\n" % length)


def _crlf_head(data: bytes, tail: bytes = b"") -> bytes:
    """``data`` with the bare LFs of its first head turned into CRLF (the body untouched).
    ``tail``: the end of the previous chunk when the head began there, so a blank line
    straddling the two ends the head at its first bytes here."""
    buf = tail + data
    ends = [i + n for i, n in ((buf.find(b"\n\n"), 2), (buf.find(b"\n\r\n"), 3)) if i >= 0]
    end = max(0, min(ends) - len(tail)) if ends else len(data)
    return data[:end].replace(b"\r\n", b"\n").replace(b"\n", b"\r\n") + data[end:]


def edit_headers(headers: Headers, edit: HeaderEdit | None) -> Headers:
    """Lower-case names (hyper writes them so), then Linkerd's header modifier order:
    add, then set, then remove (D15)."""
    out = [(k.lower(), v) for k, v in headers]
    if edit is None:
        return out
    for name, value in edit.add:
        out.append((name.lower().encode("latin-1"), value.encode("latin-1")))
    for name, value in edit.set:
        lname = name.lower().encode("latin-1")
        out = [(k, v) for k, v in out if k != lname]
        out.append((lname, value.encode("latin-1")))
    for name in edit.remove:
        lname = name.lower().encode("latin-1")
        out = [(k, v) for k, v in out if k != lname]
    return out


def request_head(req: Request, headers: Headers) -> bytes:
    """The head that goes upstream: ``headers`` (names in any case: they go out in lower
    case) with the request's own framing in one header, the framing its body is
    forwarded with (RFC 9112 6)."""
    parts = [req.method, b" ", req.target, b" HTTP/1.1\r\n"]
    _fields(parts, headers, req.body, req.length)
    parts.append(b"\r\n")
    return b"".join(parts)


_LINES: dict[tuple[int, bytes], bytes] = {}


def response_line(status: int, reason: bytes) -> bytes:
    line = _LINES.get((status, reason))
    if line is None:
        line = b"HTTP/1.1 %d %s\r\n" % (status, reason)
        if len(_LINES) < 256:
            _LINES[(status, reason)] = line
    return line


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data) if data else b""


def last_chunk(trailers: Headers) -> bytes:
    if not trailers:
        return b"0\r\n\r\n"
    return b"0\r\n" + b"".join(k.lower() + b": " + v + b"\r\n" for k, v in trailers) + b"\r\n"


#: Hop-by-hop fields (RFC 9110 7.6.1, plus the legacy ``Proxy-Connection`` and h2c's
#: ``HTTP2-Settings``, RFC 7540 3.2): they describe the client's hop, never the next one.
_HOP_BY_HOP = frozenset(
    (b"connection", b"keep-alive", b"proxy-connection", b"te", b"upgrade", b"http2-settings")
)


def upgrade_protocols(req: Request) -> list[bytes]:
    """The protocols the request's ``Upgrade`` fields name, lower case (RFC 9110 7.8)."""
    return [
        token.strip().split(b"/")[0].lower()
        for name, value in req.headers
        if name.lower() == b"upgrade"
        for token in value.split(b",")
        if token.strip()
    ]


def tunnel_allowed(req: Request) -> bool:
    """Whether an accepted answer to ``req`` may become a tunnel: a CONNECT, or an
    HTTP/1 upgrade to WebSocket (RFC 6455) and nothing else. linkerd2-proxy proxies
    HTTP/1 upgrades (WebSocket) as a tunnel opened after the judged request, and never
    forwards an h2c upgrade (an assumption, not checked in its source here: its HTTP/1
    server strips the connection headers; h2 is spoken by prior knowledge or ALPN
    only): a tunnel to an h2 server would carry requests nobody judged."""
    if req.method == b"CONNECT":
        return True
    if not req.upgrade:
        return False
    protocols = upgrade_protocols(req)
    # Only the upgrade the kit means to pass, named alone: an allow-list, so a value an
    # upstream might read as h2c some other way ("we h2c", "h2c/1") is never passed.
    return bool(protocols) and all(p == b"websocket" for p in protocols)


def strip_hop_by_hop(headers: Headers, *, upgrade: bool) -> Headers:
    """``headers`` without the hop-by-hop fields and those the ``Connection`` fields
    name (RFC 9110 7.6.1: a proxy removes them before forwarding). With ``upgrade``
    (an upgrade the proxy passes on, :func:`tunnel_allowed`), ``Upgrade`` is kept and
    ``connection: upgrade`` sent. ``TE: trailers`` is kept (and ``te`` named in
    Connection, RFC 9110 10.1.4): the proxy itself takes trailers on the next hop and
    forwards them, so the client's wish holds for it too; any other TE value is dropped
    (this proxy decodes no transfer coding but chunked)."""
    named: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            named.update(t.strip().lower() for t in value.split(b",") if t.strip())
    out: Headers = []
    trailers = False
    for name, value in headers:
        lname = name.lower()
        if lname == b"upgrade" and upgrade:
            out.append((name, value))
        elif lname == b"te":
            trailers = trailers or value.strip().lower() == b"trailers"
        elif lname not in _HOP_BY_HOP and lname not in named:
            out.append((name, value))
    if trailers:
        out.append((b"te", b"trailers"))
    options = [b"upgrade"] if upgrade else []
    if trailers:
        options.append(b"te")
    if options:
        out.append((b"connection", b", ".join(options)))
    return out


def origin_form(target: bytes, host: bytes | None) -> bytes | None:
    """The origin-form of an absolute-form request target (RFC 9112 3.2.2), or None
    when the request must be refused (400): a server takes the target's authority over
    Host, so a target naming an authority other than the Host the policy judges would
    reach an upstream the policy never judged. The target must be ``http`` or
    ``https``, with no userinfo, and its authority the request's Host (case aside)."""
    scheme, sep, rest = target.partition(b"://")
    if not sep or scheme.lower() not in (b"http", b"https") or host is None:
        return None
    cut = min((i for i in (rest.find(b"/"), rest.find(b"?")) if i >= 0), default=len(rest))
    authority, path = rest[:cut], rest[cut:]
    if not authority or b"@" in authority or authority.lower() != host.strip().lower():
        return None
    if path.startswith(b"?"):
        path = b"/" + path
    return path or b"/"


def has_close(headers: Headers) -> bool:
    """Whether a Connection field lists the ``close`` option (RFC 9112 9.6: a token of
    its comma-separated list, any case; ``x-closer`` is another option)."""
    return any(
        k.lower() == b"connection" and any(t.strip().lower() == b"close" for t in v.split(b","))
        for k, v in headers
    )


def expects_continue(req: Request) -> bool:
    if req.version != "1.1":
        return False
    return any(
        k.lower() == b"expect" and v.strip().lower() == b"100-continue" for k, v in req.headers
    )


def switches(req: Request, resp: Response) -> bool:
    """Whether the upstream accepted the upgrade (101) or the CONNECT (2xx)."""
    if req.method == b"CONNECT":
        return 200 <= resp.status < 300
    return resp.status == 101


def reason_phrase(status: int) -> bytes:
    """The canonical reason phrase, as hyper writes it (``403 Forbidden``)."""
    try:
        return HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b""


def host_only(host: str | None) -> str | None:
    if not host:
        return None
    if host.startswith("["):
        return host[1 : host.find("]")]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host
