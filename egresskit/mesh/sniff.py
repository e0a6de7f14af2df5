"""Pure sniffers for the first bytes a client sends: protocol detection and the TLS ClientHello.

The local egress proxy must look at a connection's first bytes before it can pick a policy
(docs/facts/linkerd-egress.md, section 5.2): a port with HTTPRoutes (or none) is
``Detect``: HTTP/1 and HTTP/2 go to the HTTP routes, anything else is opaque and goes to
``tcp-egress-*``; a port with TLSRoutes requires an SNI in the ClientHello, and a connection
without one fails ("Could not find SNI",
``linkerd2-proxy@29637b6:linkerd/tls/src/server/required_sni.rs``).

Rules, in the manner of h11:

* bytes in, a frozen value out; no I/O, no asyncio, no clock;
* "need more data" is a return value (:class:`NeedMore`), never an exception, and a sniffer
  never guesses early: it answers only once the bytes seen so far settle the question;
* a verdict never changes when more bytes are appended to the same buffer;
* a rejection (:class:`NotTLS`, ``Detected(protocol="opaque")``) carries a precise reason.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Literal

# --- results ---------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class NeedMore:
    """The bytes so far are a valid prefix; call again with a longer buffer."""

    #: A lower bound on the total buffer length a positive answer needs (always more than
    #: the bytes given): a read-size hint. A rejection may come with fewer bytes.
    at_least: int


@dataclass(frozen=True, kw_only=True)
class ClientHello:
    """What the proxy needs from a complete ClientHello."""

    #: The ``host_name`` of the server_name extension, lowercased (Linkerd's names are
    #: lowercase DNS names); ``None`` when absent or not a valid DNS name, which is what
    #: Linkerd's ``parse_sni`` does too (``linkerd2-proxy:linkerd/tls/src/server/client_hello.rs``).
    sni: str | None
    #: The ALPN protocol names offered, in the client's order (RFC 7301 section 3.1).
    alpn: tuple[str, ...]
    #: ``legacy_record_version`` of the first record, e.g. ``0x0301``.
    record_version: int
    #: ``legacy_version`` of the ClientHello body, e.g. ``0x0303``.
    legacy_version: int
    #: How many TLS records carried the handshake message (usually 1).
    records: int
    #: Bytes of ``data`` taken by those records; anything after them is not looked at.
    consumed: int


@dataclass(frozen=True, kw_only=True)
class NotTLS:
    """The bytes are not a ClientHello the proxy accepts; ``reason`` says where and why."""

    reason: str


Protocol = Literal["http1", "http2", "tls", "opaque"]


@dataclass(frozen=True, kw_only=True)
class Detected:
    """The protocol of a connection, decided from its first bytes."""

    protocol: Protocol
    reason: str


# --- constants, each with where it comes from ---------------------------------------------------

_HANDSHAKE = 0x16  # ContentType.handshake (RFC 8446 section 5.1)
_CLIENT_HELLO = 0x01  # HandshakeType.client_hello (RFC 8446 section 4)
_RECORD_HEADER = 5  # type(1) legacy_record_version(2) length(2)
_MAX_FRAGMENT = 1 << 14  # "The length MUST NOT exceed 2^14 bytes" (RFC 8446 section 5.1)
#: A ClientHello body larger than this is rejected as "too large". Linkerd refuses vectors
#: over 8192 bytes and assumes one record; we allow one full record's worth so that
#: post-quantum key shares fit, and a message spanning records.
MAX_CLIENT_HELLO = 1 << 14
_EXT_SERVER_NAME = 0x0000  # RFC 6066 section 3
_EXT_ALPN = 0x0010  # RFC 7301 section 3.1
_NAME_TYPE_HOST_NAME = 0x00  # RFC 6066 section 3

#: The HTTP/2 connection preface (RFC 9113 section 3.4). Linkerd matches only its first
#: 14 bytes; we require all 24, so a client that deviates after them is opaque, not HTTP/2.
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#: Bound on the HTTP/1 request line (leading empty lines included). Linkerd decides from
#: one read of at most 1024 bytes; hyper accepts far longer heads. 8 KiB is the common
#: server default for a request line and never cuts a real client short.
MAX_REQUEST_LINE = 8192
#: tchar (RFC 9110 section 5.6.2): a method is a token (RFC 9110 section 9.1).
_TCHAR = frozenset(b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
#: httparse's request-target alphabet: visible ASCII and, for UTF-8 paths, bytes >= 0x80.
_TARGET = frozenset(range(0x21, 0x7F)) | frozenset(range(0x80, 0x100))
#: httparse accepts only HTTP/1.0 and HTTP/1.1 in a request line: the bytes allowed at each
#: position of the version.
_H1_VERSION = (*(bytes([b]) for b in b"HTTP/1."), b"01")
_DNS_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")


# --- TLS ClientHello ------------------------------------------------------------------------


class _Malformed(Exception):
    """Internal: a complete ClientHello is malformed. Never leaves this module."""


def sniff_client_hello(data: bytes) -> NeedMore | ClientHello | NotTLS:
    """Parse the ClientHello at the start of ``data``.

    Returns :class:`NeedMore` until every record carrying the handshake message is in
    ``data``; bytes after those records are ignored. Record-layer problems are reported as
    soon as the offending byte arrives.
    """
    message = bytearray()  # the handshake stream, reassembled from record fragments
    offset = 0
    records = 0
    record_version = 0
    while True:
        header = data[offset : offset + _RECORD_HEADER]
        problem = _check_record_header(header, offset)
        if problem is not None:
            return problem
        if len(header) < _RECORD_HEADER:
            return NeedMore(at_least=offset + _RECORD_HEADER)
        if records == 0:
            record_version = int.from_bytes(header[1:3], "big")
        length = int.from_bytes(header[3:5], "big")
        if length == 0:
            # "Implementations MUST NOT send zero-length fragments of Handshake types"
            return NotTLS(reason=f"TLS record at byte {offset}: length 0 (empty handshake record)")
        if length > _MAX_FRAGMENT:
            return NotTLS(
                reason=f"TLS record at byte {offset}: length {length} exceeds 2^14 (too large)"
            )
        body_start = offset + _RECORD_HEADER
        fragment = data[body_start : body_start + length]
        problem = _check_handshake_header(bytes(message[:4]) + fragment[:4])
        if problem is not None:
            return problem
        if len(fragment) < length:
            return NeedMore(at_least=body_start + length)
        message += fragment
        offset = body_start + length
        records += 1
        if len(message) >= 4 and len(message) >= 4 + int.from_bytes(message[1:4], "big"):
            break
    size = int.from_bytes(message[1:4], "big")
    try:
        sni, alpn, legacy_version = _parse_body(bytes(message[4 : 4 + size]))
    except _Malformed as exc:
        return NotTLS(reason=str(exc))
    return ClientHello(
        sni=sni,
        alpn=alpn,
        record_version=record_version,
        legacy_version=legacy_version,
        records=records,
        consumed=offset,
    )


def _check_record_header(header: bytes, offset: int) -> NotTLS | None:
    """Reject a (possibly partial) record header as soon as one of its bytes is wrong."""
    where = f"TLS record at byte {offset}"
    if len(header) >= 1 and header[0] != _HANDSHAKE:
        return NotTLS(
            reason=f"{where}: expected content type 0x16 (handshake), found {header[0]:#04x}"
        )
    if len(header) >= 2 and header[1] != 0x03:
        return NotTLS(reason=f"{where}: expected record version major 0x03, found {header[1]:#04x}")
    if len(header) >= 3 and header[2] > 0x04:
        return NotTLS(
            reason=f"{where}: expected record version minor 0x00..0x04, found {header[2]:#04x}"
        )
    return None


def _check_handshake_header(head: bytes) -> NotTLS | None:
    """Reject a (possibly partial) handshake header: wrong type or a hello that is too big."""
    if len(head) >= 1 and head[0] != _CLIENT_HELLO:
        return NotTLS(reason=f"handshake message: expected type 1 (client_hello), found {head[0]}")
    if len(head) >= 4:
        size = int.from_bytes(head[1:4], "big")
        if size > MAX_CLIENT_HELLO:
            return NotTLS(
                reason=f"ClientHello: length {size} exceeds {MAX_CLIENT_HELLO} bytes (too large)"
            )
    return None


class _Reader:
    """Reads TLS presentation-language fields, raising :class:`_Malformed` with the offset."""

    def __init__(self, data: bytes, what: str, base: int = 0) -> None:
        self.data = data
        self.pos = 0
        self.what = what
        self.base = base  # offset of ``data`` inside the ClientHello body, for messages

    @property
    def remaining(self) -> int:
        return len(self.data) - self.pos

    def take(self, n: int, field: str) -> bytes:
        if n > self.remaining:
            raise _Malformed(
                f"{self.what} {field} at ClientHello byte {self.base + self.pos}: "
                f"expected {n} bytes, found {self.remaining}"
            )
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def uint(self, size: int, field: str) -> int:
        return int.from_bytes(self.take(size, field), "big")

    def vector(self, size: int, field: str, *, minimum: int = 0) -> _Reader:
        """A ``<minimum..2^(8*size)-1>`` vector, returned as a reader over its contents."""
        length = self.uint(size, f"{field} length")
        if length < minimum:
            raise _Malformed(
                f"{self.what} {field} at ClientHello byte {self.base + self.pos - size}: "
                f"expected at least {minimum} bytes, found {length}"
            )
        start = self.base + self.pos
        return _Reader(self.take(length, field), f"{self.what} {field}", start)


def _parse_body(body: bytes) -> tuple[str | None, tuple[str, ...], int]:
    """Walk a complete ClientHello body (RFC 8446 section 4.1.2) for SNI and ALPN."""
    r = _Reader(body, "ClientHello")
    legacy_version = r.uint(2, "legacy_version")
    if legacy_version >> 8 != 0x03:
        raise _Malformed(
            f"ClientHello legacy_version: expected 0x03xx, found {legacy_version:#06x}"
        )
    r.take(32, "random")
    session_id = r.vector(1, "legacy_session_id")
    if session_id.remaining > 32:
        raise _Malformed(
            "ClientHello legacy_session_id: expected at most 32 bytes, "
            f"found {session_id.remaining}"
        )
    suites = r.vector(2, "cipher_suites", minimum=2)
    if suites.remaining % 2:
        raise _Malformed(
            f"ClientHello cipher_suites: expected an even length, found {suites.remaining}"
        )
    r.vector(1, "legacy_compression_methods", minimum=1)
    if r.remaining == 0:
        return None, (), legacy_version  # TLS 1.2 and older may omit extensions entirely
    block = r.vector(2, "extensions")
    if r.remaining:
        raise _Malformed(
            f"ClientHello: {r.remaining} bytes after the extensions block "
            f"(block ends at byte {r.pos})"
        )
    sni: str | None = None
    alpn: tuple[str, ...] = ()
    seen: set[int] = set()
    while block.remaining:
        ext_type = block.uint(2, "extension type")
        data = block.vector(2, f"extension {ext_type:#06x}")
        if ext_type in seen:
            # "There MUST NOT be more than one extension of the same type" (RFC 8446 4.2)
            raise _Malformed(f"ClientHello extensions: extension {ext_type:#06x} appears twice")
        seen.add(ext_type)
        if ext_type == _EXT_SERVER_NAME:
            sni = _parse_server_name(data)
        elif ext_type == _EXT_ALPN:
            alpn = _parse_alpn(data)
    return sni, alpn, legacy_version


def _parse_server_name(ext: _Reader) -> str | None:
    names = ext.vector(2, "server_name_list", minimum=1)
    if ext.remaining:
        raise _Malformed(f"{ext.what}: {ext.remaining} bytes after server_name_list")
    host: bytes | None = None
    while names.remaining:
        name_type = names.uint(1, "name_type")
        name = names.vector(2, "HostName", minimum=1).data
        if name_type != _NAME_TYPE_HOST_NAME:
            continue  # unknown name types are skipped; only host_name is defined
        if host is not None:
            # "MUST NOT contain more than one name of the same name_type" (RFC 6066 section 3)
            raise _Malformed(f"{names.what}: more than one host_name")
        host = name
    return None if host is None else _dns_name(host)


def _dns_name(raw: bytes) -> str | None:
    """The lowercased host name, or ``None`` when it is not a DNS name (as Linkerd does)."""
    try:
        name = raw.decode("ascii").lower()
    except UnicodeDecodeError:
        return None
    if len(name) > 253 or not all(_DNS_LABEL.fullmatch(label) for label in name.split(".")):
        return None  # also rejects a trailing dot: RFC 6066 sends names without one
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return name
    return None  # "Literal IPv4 and IPv6 addresses are not permitted" (RFC 6066 section 3)


def _parse_alpn(ext: _Reader) -> tuple[str, ...]:
    names = ext.vector(2, "protocol_name_list", minimum=2)
    if ext.remaining:
        raise _Malformed(f"{ext.what}: {ext.remaining} bytes after protocol_name_list")
    found: list[str] = []
    while names.remaining:
        name = names.vector(1, "ProtocolName", minimum=1).data
        found.append(name.decode("ascii", errors="backslashreplace"))
    return tuple(found)


# --- protocol detection -------------------------------------------------------------------

# A matcher answers True (it is this protocol), a NotTLS-like reason string (it is not), or a
# NeedMore (still a valid prefix).
_Verdict = bool | str | NeedMore


def detect_protocol(data: bytes) -> NeedMore | Detected:
    """Classify a connection as Linkerd's ``Detect`` does (docs/facts/linkerd-egress.md, section
    5.2).

    HTTP/2 needs the whole prior-knowledge preface; HTTP/1 needs a whole request line
    ``method SP request-target SP HTTP/1.0|1.1 CRLF`` (LF alone is accepted, as httparse
    does; leading empty lines are skipped, RFC 9112 section 2.2); TLS needs a handshake record
    header ``16 03 0X``. Anything that can no longer become one of those is opaque.
    """
    if not data:
        return NeedMore(at_least=1)
    verdicts: dict[Protocol, _Verdict] = {
        "http2": _match_h2(data),
        "http1": _match_h1(data),
        "tls": _match_tls(data),
    }
    for protocol, verdict in verdicts.items():
        if verdict is True:
            return Detected(protocol=protocol, reason=_REASONS[protocol])
    pending = [v.at_least for v in verdicts.values() if isinstance(v, NeedMore)]
    if pending:
        return NeedMore(at_least=min(pending))
    # Every matcher said no; the HTTP/1 reason is the most telling one to show.
    return Detected(protocol="opaque", reason=str(verdicts["http1"]))


_REASONS: dict[Protocol, str] = {
    "http2": "HTTP/2 connection preface",
    "http1": "HTTP/1 request line",
    "tls": "TLS handshake record",
}


def _match_h2(data: bytes) -> _Verdict:
    n = min(len(data), len(H2_PREFACE))
    if data[:n] != H2_PREFACE[:n]:
        return "not the HTTP/2 preface"
    return True if n == len(H2_PREFACE) else NeedMore(at_least=len(H2_PREFACE))


def _match_tls(data: bytes) -> _Verdict:
    problem = _check_record_header(data[:3], 0)
    if problem is not None:
        return problem.reason
    return True if len(data) >= 3 else NeedMore(at_least=3)


def _match_h1(data: bytes) -> _Verdict:
    # Judge only the bounded prefix, so a line that cannot end within it is rejected the
    # same way whatever the buffer size (a verdict never changes as bytes arrive).
    data = data[:MAX_REQUEST_LINE]
    pos = 0
    end = len(data)
    # Leading empty lines: a server "SHOULD ignore at least one" (RFC 9112 section 2.2).
    while pos < end and data[pos] in b"\r\n":
        if data[pos] == 0x0D:
            if pos + 1 >= len(data):
                return _h1_more(pos + 2)
            if data[pos + 1] != 0x0A:
                return f"not an HTTP/1 request line: CR not followed by LF at byte {pos}"
            pos += 1
        pos += 1
    fields = (("method", _TCHAR), ("request-target", _TARGET))
    for field, alphabet in fields:
        start = pos
        while pos < end and data[pos] in alphabet:
            pos += 1
        if pos == end:
            return _h1_more(pos + 1)
        if pos == start:
            return f"not an HTTP/1 request line: empty {field} at byte {pos} ({data[pos]:#04x})"
        if data[pos] != 0x20:
            return f"not an HTTP/1 request line: byte {data[pos]:#04x} at {pos} in the {field}"
        pos += 1
    for i, byte in enumerate(data[pos : pos + len(_H1_VERSION)]):
        if byte not in _H1_VERSION[i]:
            return (
                f"not an HTTP/1 request line: byte {byte:#04x} at {pos + i} in the version "
                "(expected HTTP/1.0 or HTTP/1.1)"
            )
    if end - pos < len(_H1_VERSION):
        return _h1_more(pos + len(_H1_VERSION))
    pos += len(_H1_VERSION)
    eol = data[pos : pos + 2]
    if eol[:1] == b"\n" or eol == b"\r\n":
        return True
    if eol == b"\r":
        return _h1_more(pos + 2)
    if not eol:
        return _h1_more(pos + 1)
    return f"not an HTTP/1 request line: expected CRLF after the version at byte {pos}"


def _h1_more(at_least: int) -> _Verdict:
    if at_least > MAX_REQUEST_LINE:
        return f"not an HTTP/1 request line: no complete line in {MAX_REQUEST_LINE} bytes"
    return NeedMore(at_least=at_least)
