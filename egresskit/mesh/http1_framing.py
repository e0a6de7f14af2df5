"""How an HTTP/1 message's body is framed, decided once, by RFC 9112 section 6.

Job: from a parsed head (its fields and version) decide the one framing the proxy uses,
or refuse the head; and write that framing, and only it, into the head that goes on.
Pure, no I/O: :mod:`egresskit.mesh.http1_wire` calls it from the parser the moment a head
is complete, before the head becomes a message anyone judges or forwards.

Why one place: a proxy that frames a body one way while the next hop frames it another
can be smuggled past (a request hidden in what the proxy took for a body reaches the
upstream unjudged). So the proxy accepts only heads whose framing has exactly one reading,
and forwards exactly the framing it used (one normalized header, never the client's own).

Rules (RFC 9112; "6.3 (3)" is the third rule of section 6.3's list):

* ``Transfer-Encoding`` in an HTTP/1.0 message: faulty framing (6.1, last paragraph).
* ``Transfer-Encoding`` with ``Content-Length``: an error, "might indicate an attempt to
  perform request smuggling" (6.3 (3); 6.2: a sender MUST NOT send both).
* The final transfer coding of a request must be ``chunked``, else 400 and close
  (6.3 (4)); ``chunked`` applied twice is invalid (6.1: MUST NOT apply it more than once).
  A coding the proxy cannot decode before it (``gzip, chunked``) gets 501 (6.1: SHOULD).
* ``Content-Length`` values that differ, or are not decimal digits: 400 (6.3 (5)); the
  same value repeated (``5, 5`` or two fields) is accepted as one (6.3 (5)).
* A field value with CR, LF or NUL is refused (RFC 9110 5.5: "invalid and dangerous";
  llhttp refuses CR and NUL itself, an LF could only come from a folded line).
* Responses are held to the same rules; a faulty response framing is the upstream's
  fault (6.3 (5): a proxy MUST discard it and answer 502). Assumption: a response whose
  final coding is not chunked (legal, close-delimited by 6.3 (4)) is refused too, as the
  proxy cannot re-frame a coding it does not decode.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

Headers = list[tuple[bytes, bytes]]
Framing = Literal["none", "length", "chunked"]

#: RFC 9110 5.6.2: token = 1*tchar.
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
#: RFC 9110 8.6: Content-Length = 1*DIGIT (bounded: no body is larger than 2**63).
_DIGITS = re.compile(rb"[0-9]{1,18}")
#: RFC 9110 7.2 / RFC 3986 3.2.2-3.2.3: host = IP-literal / reg-name (with IPv4 in it),
#: port = *DIGIT. Stricter than 3986 on the port: an empty one ("h:") is refused too, as
#: servers behind the proxy crash on it (a port past 65535 is checked after).
_HOST = re.compile(
    rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]*)(?::(?P<port>[0-9]{1,5}))?"
)


class BadHead(Exception):
    """The head cannot be framed or forwarded safely: answer ``status`` and close."""

    def __init__(self, status: int, reason: str) -> None:
        self.status = status
        self.reason = reason
        super().__init__(f"{status}: {reason}")


def framing(
    transfer_encodings: Sequence[bytes],
    content_lengths: Sequence[bytes],
    version: str,
    *,
    request: bool,
) -> tuple[Framing, int]:
    """The body framing of a head, from the values of its Transfer-Encoding and
    Content-Length fields (in order; the parser collects them), and its length (0
    unless ``length``); raises :class:`BadHead` (400 or 501 for a request; a response
    is the upstream's fault)."""
    if not transfer_encodings and len(content_lengths) == 1:
        value = content_lengths[0]
        if value.isdigit() and len(value) <= 18:
            # The usual head: one Content-Length of plain ASCII digits, which the rules
            # below accept as it is (anything else takes them).
            return "length", int(value)
    codings: list[bytes] = []
    lengths: list[bytes] = []
    for value in transfer_encodings:
        if b"\n" in value or b"\r" in value or b"\0" in value:
            raise BadHead(400, "Transfer-Encoding: CR, LF or NUL in its value (RFC 9110 5.5)")
        codings += [c.strip(b" ").lower() for c in value.split(b",")]
    for value in content_lengths:
        if b"\n" in value or b"\r" in value or b"\0" in value:
            raise BadHead(400, "Content-Length: CR, LF or NUL in its value (RFC 9110 5.5)")
        lengths += [v.strip(b" ") for v in value.split(b",")]
    if codings:
        if version != "1.1":
            raise BadHead(400, "Transfer-Encoding in an HTTP/1.0 message (RFC 9112 6.1)")
        if lengths:
            raise BadHead(400, "Transfer-Encoding with Content-Length (RFC 9112 6.3 (3))")
        for coding in codings:
            if not _TOKEN.fullmatch(coding):
                raise BadHead(400, f"Transfer-Encoding: {coding!r} is not a coding")
        if codings[-1] != b"chunked":
            raise BadHead(400, "the final transfer coding is not chunked (RFC 9112 6.3 (4))")
        if codings.count(b"chunked") > 1:
            raise BadHead(400, "chunked applied more than once (RFC 9112 6.1)")
        if len(codings) > 1:
            # Only chunked is decoded here: the rest would reach the next hop undone.
            raise BadHead(501 if request else 502, f"transfer codings {codings[:-1]!r}")
        return "chunked", 0
    if lengths:
        if not all(_DIGITS.fullmatch(v) for v in lengths):
            raise BadHead(400, f"Content-Length: {lengths!r} (RFC 9112 6.3 (5))")
        if len({int(v) for v in lengths}) > 1:
            raise BadHead(400, f"Content-Length values differ: {lengths!r} (RFC 9112 6.3 (5))")
        return "length", int(lengths[0])
    return "none", 0


#: RFC 9112 3.2: a request-target has no whitespace or control characters.
_TARGET = re.compile(rb"[\x21-\x7e\x80-\xff]+")


def check_request_line(target: bytes, version: str) -> None:
    """Refuse what would go on as a different request line: an empty or spaced target
    (RFC 9112 3.2), a version other than HTTP/1.0 or 1.1 (an HTTP/0.9 line is not
    HTTP/1, RFC 9112 2.3); raises :class:`BadHead`."""
    if version not in ("1.0", "1.1"):
        raise BadHead(400, f"HTTP/{version} is not HTTP/1.0 or HTTP/1.1 (RFC 9112 2.3)")
    if not _TARGET.fullmatch(target):
        raise BadHead(400, f"request-target {target[:40]!r} (RFC 9112 3.2)")


def check_host(hosts: Sequence[bytes], version: str) -> bytes | None:
    """The request's one Host value (None: absent in HTTP/1.0), from the values of its
    Host fields (in order; the parser collects them); raises :class:`BadHead` for none
    in HTTP/1.1, several (RFC 9112 3.2: MUST respond 400) or a malformed one (a port
    that is not a number must not reach anything behind the proxy)."""
    if len(hosts) > 1:
        raise BadHead(400, "more than one Host (RFC 9112 3.2)")
    if not hosts:
        if version == "1.1":
            raise BadHead(400, "no Host in an HTTP/1.1 request (RFC 9112 3.2)")
        return None
    host = hosts[0].strip(b" \t")
    match = _HOST.fullmatch(host)
    port = match.group("port") if match else None
    if match is None or (port and int(port) > 65535):
        raise BadHead(400, f"Host: {host!r} is not host[:port] (RFC 9110 7.2)")
    return host


def reframe(headers: Headers, body: Framing, length: int) -> Headers:
    """``headers`` without any framing field of their own, plus the one the proxy sends
    the body with: the framing used is the framing forwarded (names in lower case)."""
    out = [(k, v) for k, v in headers if k not in (b"transfer-encoding", b"content-length")]
    if body == "chunked":
        out.append((b"transfer-encoding", b"chunked"))
    elif body == "length":
        out.append((b"content-length", b"%d" % length))
    return out
