"""The pure sniffers: ClientHello parsing and protocol detection, fed whole, byte by byte and
with trailing bytes; real ClientHellos from Python's ``ssl`` module and from ``curl``."""

from __future__ import annotations

import itertools
import shutil
import socket
import ssl
import subprocess

import pytest

from egresskit.mesh.sniff import (
    H2_PREFACE,
    MAX_REQUEST_LINE,
    ClientHello,
    Detected,
    NeedMore,
    NotTLS,
    detect_protocol,
    sniff_client_hello,
)

# --- builders for hand-made ClientHellos ----------------------------------------------------


def u16(n: int) -> bytes:
    return n.to_bytes(2, "big")


def ext(ext_type: int, data: bytes) -> bytes:
    return u16(ext_type) + u16(len(data)) + data


def sni_ext(*names: bytes, name_type: int = 0) -> bytes:
    entries = b"".join(bytes([name_type]) + u16(len(n)) + n for n in names)
    return ext(0x0000, u16(len(entries)) + entries)


def alpn_ext(*names: bytes) -> bytes:
    entries = b"".join(bytes([len(n)]) + n for n in names)
    return ext(0x0010, u16(len(entries)) + entries)


def body(
    *extensions: bytes,
    legacy_version: bytes = b"\x03\x03",
    session_id: bytes = b"",
    suites: bytes = b"\x13\x01",
    compression: bytes = b"\x00",
    block: bytes | None = None,
) -> bytes:
    """A ClientHello body; ``block`` replaces the whole extensions block (length included)."""
    exts = b"".join(extensions)
    if block is None:
        block = u16(len(exts)) + exts
    return (
        legacy_version
        + b"\x11" * 32
        + bytes([len(session_id)])
        + session_id
        + u16(len(suites))
        + suites
        + bytes([len(compression)])
        + compression
        + block
    )


def handshake(payload: bytes, msg_type: int = 1) -> bytes:
    return bytes([msg_type]) + len(payload).to_bytes(3, "big") + payload


def records(message: bytes, *splits: int, version: bytes = b"\x03\x01") -> bytes:
    """Wrap ``message`` in handshake records, cut at the given offsets."""
    cuts = [0, *splits, len(message)]
    return b"".join(
        b"\x16" + version + u16(b - a) + message[a:b] for a, b in itertools.pairwise(cuts)
    )


def hello(*extensions: bytes, **kwargs: bytes) -> bytes:
    return records(handshake(body(*extensions, **kwargs)))


def python_hello(server_hostname: str | None, alpn: list[str] | None = None) -> bytes:
    """The first flight of a real TLS client (OpenSSL via ``ssl``), with no socket."""
    ctx = ssl.create_default_context()
    if server_hostname is None:
        ctx.check_hostname = False
    if alpn:
        ctx.set_alpn_protocols(alpn)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname=server_hostname)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


# --- ClientHello: real clients --------------------------------------------------------------

REAL = [
    pytest.param("httpbin.org", ["h2", "http/1.1"], "httpbin.org", ("h2", "http/1.1"), id="alpn"),
    pytest.param("HTTPBin.ORG", None, "httpbin.org", (), id="sni-lowercased"),
    pytest.param("api.github.com", ["http/1.1"], "api.github.com", ("http/1.1",), id="subdomain"),
    pytest.param(None, None, None, (), id="no-server-hostname"),
    pytest.param("127.0.0.1", None, None, (), id="ip-literal-sends-no-sni"),
]


@pytest.mark.parametrize(("hostname", "alpn", "sni", "offered"), REAL)
def test_python_client_hello(
    hostname: str | None, alpn: list[str] | None, sni: str | None, offered: tuple[str, ...]
) -> None:
    data = python_hello(hostname, alpn)
    result = sniff_client_hello(data)
    assert isinstance(result, ClientHello), result
    assert result.sni == sni
    assert result.alpn == offered
    assert result.consumed == len(data)
    assert result.records == 1
    assert result.legacy_version == 0x0303


def test_one_byte_at_a_time_needs_more_until_complete() -> None:
    data = python_hello("httpbin.org")
    for n in range(len(data)):
        result = sniff_client_hello(data[:n])
        assert isinstance(result, NeedMore), (n, result)
        assert n < result.at_least <= len(data)
    assert isinstance(sniff_client_hello(data), ClientHello)


@pytest.mark.parametrize(
    "trailing",
    [
        pytest.param(b"\x17\x03\x03\x00\x05hello", id="app-data-record"),
        pytest.param(b"GET / HTTP/1.1\r\n", id="garbage"),
        pytest.param(b"\x16", id="partial-next-record"),
    ],
)
def test_trailing_bytes_after_the_hello_are_ignored(trailing: bytes) -> None:
    data = python_hello("example.com")
    result = sniff_client_hello(data + trailing)
    assert result == sniff_client_hello(data)
    assert isinstance(result, ClientHello)
    assert result.consumed == len(data)


@pytest.mark.parametrize("cut", [1, 2, 4, 100, -1], ids=lambda c: f"cut-at-{c}")
def test_handshake_message_spanning_two_records(cut: int) -> None:
    single = python_hello("httpbin.org", ["h2"])
    message = single[5:]  # one record: strip its header
    split = records(message, cut % len(message))
    result = sniff_client_hello(split)
    assert isinstance(result, ClientHello), result
    assert (result.sni, result.alpn, result.records) == ("httpbin.org", ("h2",), 2)
    assert result.consumed == len(split) == len(single) + 5
    for n in range(len(split)):
        assert isinstance(sniff_client_hello(split[:n]), NeedMore), n


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("curl") is None, reason="the curl binary is not installed")
def test_curl_client_hello() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        server.settimeout(10)
        port = server.getsockname()[1]
        args = ["curl", "-sk", "https://httpbin.org/", "--max-time", "2"]
        args += ["--connect-to", f"httpbin.org:443:127.0.0.1:{port}"]
        with subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as curl:
            try:
                conn, _ = server.accept()
                with conn:
                    conn.settimeout(10)
                    data = b""
                    while isinstance(result := sniff_client_hello(data), NeedMore):
                        chunk = conn.recv(65536)
                        assert chunk, f"curl closed after {len(data)} bytes"
                        data += chunk
            finally:
                curl.wait(timeout=10)
    assert isinstance(result, ClientHello), result
    assert result.sni == "httpbin.org"
    assert "http/1.1" in result.alpn
    assert detect_protocol(data) == Detected(protocol="tls", reason="TLS handshake record")


# --- ClientHello: hand-made edge cases --------------------------------------------------------

VALUES = [
    pytest.param(hello(sni_ext(b"Example.COM")), "example.com", (), id="sni-mixed-case"),
    pytest.param(hello(), None, (), id="empty-extensions"),
    pytest.param(records(handshake(body(block=b""))), None, (), id="no-extensions-block"),
    pytest.param(hello(sni_ext(b"caf\xc3\xa9.example")), None, (), id="sni-not-ascii"),
    pytest.param(hello(sni_ext(b"192.0.2.1")), None, (), id="sni-ip-literal"),
    pytest.param(hello(sni_ext(b"example.com.")), None, (), id="sni-trailing-dot"),
    pytest.param(hello(sni_ext(b"ex ample.com")), None, (), id="sni-space"),
    pytest.param(hello(sni_ext(b"a" * 64 + b".com")), None, (), id="sni-label-too-long"),
    pytest.param(hello(sni_ext(b"x", name_type=7)), None, (), id="unknown-name-type"),
    pytest.param(
        hello(ext(0x002B, b"\x02\x03\x04"), alpn_ext(b"h2"), sni_ext(b"a.b")),
        "a.b",
        ("h2",),
        id="sni-after-other-extensions",
    ),
    pytest.param(
        records(handshake(body(sni_ext(b"v.test"))), version=b"\x03\x03"),
        "v.test",
        (),
        id="record-version-1.2",
    ),
]


@pytest.mark.parametrize(("data", "sni", "alpn"), VALUES)
def test_hand_made_hellos(data: bytes, sni: str | None, alpn: tuple[str, ...]) -> None:
    result = sniff_client_hello(data)
    assert isinstance(result, ClientHello), result
    assert (result.sni, result.alpn) == (sni, alpn)


MALFORMED = [
    pytest.param(b"GET / HTTP/1.1\r\n", "expected content type 0x16", id="http"),
    pytest.param(b"\x17\x03\x03\x00\x01x", "found 0x17", id="application-data"),
    pytest.param(b"\x16\x02", "version major 0x03, found 0x02", id="record-major"),
    pytest.param(b"\x16\x03\x05", "minor 0x00..0x04, found 0x05", id="record-minor"),
    pytest.param(b"\x16\x03\x01\x00\x00", "length 0", id="empty-record"),
    pytest.param(b"\x16\x03\x01\x40\x01", "exceeds 2^14", id="record-too-long"),
    pytest.param(b"\x16\x03\x01\x00\x04\x02", "expected type 1 (client_hello)", id="server-hello"),
    pytest.param(b"\x16\x03\x01\x40\x00\x01\x00\x40\x01", "too large", id="hello-too-large"),
    pytest.param(
        hello(block=u16(20) + ext(0, b"")), "expected 20 bytes, found 4", id="extensions-truncated"
    ),
    pytest.param(
        hello(block=u16(6) + u16(0x0A) + u16(10) + b"xx"),
        "extension 0x000a at ClientHello byte 47: expected 10 bytes, found 2",
        id="extension-overruns-block",
    ),
    pytest.param(hello(block=u16(0) + b"xx"), "2 bytes after the extensions", id="after-block"),
    pytest.param(hello(alpn_ext(b"h2"), alpn_ext(b"h2")), "0x0010 appears twice", id="dup-ext"),
    pytest.param(hello(legacy_version=b"\x02\x00"), "found 0x0200", id="legacy-version"),
    pytest.param(hello(session_id=b"s" * 33), "at most 32 bytes, found 33", id="session-id"),
    pytest.param(hello(suites=b"\x13\x01\x13"), "even length, found 3", id="odd-suites"),
    pytest.param(hello(suites=b""), "cipher_suites at ClientHello byte 35", id="no-suites"),
    pytest.param(hello(compression=b""), "at least 1 bytes, found 0", id="no-compression"),
    pytest.param(hello(ext(0, u16(0))), "server_name_list at ClientHello", id="empty-sni-list"),
    pytest.param(hello(sni_ext(b"a.b", b"c.d")), "more than one host_name", id="two-host-names"),
    pytest.param(hello(sni_ext(b"")), "HostName", id="empty-host-name"),
    pytest.param(hello(ext(0, u16(4) + b"\x00" + u16(1) + b"x!")), "1 bytes after", id="sni-tail"),
    pytest.param(hello(alpn_ext(b"h2", b"")), "ProtocolName", id="empty-alpn-name"),
    pytest.param(
        records(handshake(body()), 10)[:15] + b"\x17\x03\x01\x00\x01x",
        "TLS record at byte 15: expected content type 0x16",
        id="second-record-not-handshake",
    ),
    pytest.param(
        records(handshake(body()), 3)[:8] + b"\x16\x03\x01\x00\x00",
        "TLS record at byte 8: length 0",
        id="second-record-empty",
    ),
]


@pytest.mark.parametrize(("data", "reason"), MALFORMED)
def test_malformed_is_not_tls_with_a_precise_reason(data: bytes, reason: str) -> None:
    result = sniff_client_hello(data)
    assert isinstance(result, NotTLS), result
    assert reason in result.reason


@pytest.mark.parametrize(
    ("data", "at_least"),
    [
        pytest.param(b"", 5, id="empty"),
        pytest.param(b"\x16\x03\x01", 5, id="partial-header"),
        pytest.param(b"\x16\x03\x01\x02\x00\x01", 5 + 0x200, id="partial-record"),
        pytest.param(records(b"\x01\x00\x00\x30" + b"x" * 8), 5 + 12 + 5, id="next-record"),
    ],
)
def test_need_more_says_how_much(data: bytes, at_least: int) -> None:
    assert sniff_client_hello(data) == NeedMore(at_least=at_least)


def test_too_large_is_rejected_before_the_body_arrives() -> None:
    # The body would need several records; the verdict comes from the handshake header alone.
    data = b"\x16\x03\x01\x40\x00" + handshake(b"")[:1] + (0x10001).to_bytes(3, "big")
    result = sniff_client_hello(data)
    assert isinstance(result, NotTLS)
    assert "65537" in result.reason


# --- protocol detection ---------------------------------------------------------------------

METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"]

DETECT = [
    *[pytest.param(f"{m} / HTTP/1.1\r\n".encode(), "http1", id=f"method-{m}") for m in METHODS],
    # RFC 9110 section 9.1: methods are case-sensitive tokens, so "get" is a valid (if
    # unknown) method; httparse and hyper accept it and so does Linkerd's detection.
    pytest.param(b"get / HTTP/1.1\r\n", "http1", id="lowercase-method-is-a-token"),
    pytest.param(b"M-SEARCH * HTTP/1.1\r\n", "http1", id="extension-method"),
    pytest.param(b"GET http://httpbin.org/get HTTP/1.1\r\n", "http1", id="absolute-form"),
    pytest.param(b"CONNECT httpbin.org:443 HTTP/1.1\r\n", "http1", id="authority-form"),
    pytest.param(b"GET /caf\xc3\xa9 HTTP/1.1\r\n", "http1", id="utf8-target"),
    pytest.param(b"GET / HTTP/1.0\r\n", "http1", id="http-1.0"),
    pytest.param(b"GET / HTTP/1.1\n", "http1", id="bare-lf"),
    pytest.param(b"\r\n\r\nGET / HTTP/1.1\r\n", "http1", id="leading-empty-lines"),
    pytest.param(b"PRI * HTTP/1.1\r\n", "http1", id="pri-as-http1"),
    pytest.param(H2_PREFACE, "http2", id="h2-preface"),
    pytest.param(b"\x16\x03\x01", "tls", id="tls-1.0-record"),
    pytest.param(b"\x16\x03\x03", "tls", id="tls-1.2-record"),
    pytest.param(b"SSH-2.0-OpenSSH_9.6\r\n", "opaque", id="ssh-banner"),
    pytest.param(b"GET / HTTP/2.0\r\n", "opaque", id="http2-request-line"),
    pytest.param(b"GET / HTTP/1.2\r\n", "opaque", id="http-1.2"),
    pytest.param(b"GET / http/1.1\r\n", "opaque", id="lowercase-version"),
    pytest.param(b"GET  / HTTP/1.1\r\n", "opaque", id="double-space"),
    pytest.param(b"GET\t/ HTTP/1.1\r\n", "opaque", id="tab"),
    pytest.param(b" / HTTP/1.1\r\n", "opaque", id="empty-method"),
    pytest.param(b"GET / HTTP/1.1\rX", "opaque", id="cr-without-lf"),
    pytest.param(b"GET / HTTP/1.1 \r\n", "opaque", id="space-after-version"),
    pytest.param(b"\rGET", "opaque", id="leading-lone-cr"),
    pytest.param(b"G{T / HTTP/1.1\r\n", "opaque", id="non-token-method"),
    pytest.param(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n", "opaque", id="h2-preface-corrupt"),
    pytest.param(b"\x16\x02\x00", "opaque", id="not-tls-version"),
    pytest.param(b"*1\r\n$4\r\nPING\r\n", "opaque", id="redis"),
    pytest.param(b"\x00\x00\x00\x08\x04\xd2\x16\x2f", "opaque", id="postgres-ssl-request"),
    pytest.param(b"\xff\xfe\x00", "opaque", id="binary"),
]


@pytest.mark.parametrize(("data", "protocol"), DETECT)
def test_detect_all_at_once(data: bytes, protocol: str) -> None:
    result = detect_protocol(data)
    assert isinstance(result, Detected), result
    assert result.protocol == protocol, result.reason


@pytest.mark.parametrize(("data", "protocol"), DETECT)
def test_detect_one_byte_at_a_time(data: bytes, protocol: str) -> None:
    final = detect_protocol(data)
    decided_at = None
    for n in range(len(data) + 1):
        result = detect_protocol(data[:n])
        if isinstance(result, NeedMore):
            assert decided_at is None, f"undecided again at {n} after deciding at {decided_at}"
            assert result.at_least > n
        else:
            decided_at = n if decided_at is None else decided_at
            assert result == final, n
    # Positive answers need every byte of the line, preface or header: no early guess.
    if protocol != "opaque":
        assert decided_at == len(data)


@pytest.mark.parametrize(("data", "protocol"), DETECT)
def test_detect_with_trailing_bytes(data: bytes, protocol: str) -> None:
    result = detect_protocol(data + b"Host: httpbin.org\r\n\r\n\x00\xff")
    assert result == detect_protocol(data)


def test_detect_real_client_hello() -> None:
    result = detect_protocol(python_hello("httpbin.org"))
    assert isinstance(result, Detected)
    assert result.protocol == "tls"


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"GE", id="partial-method"),
        pytest.param(b"GET /index.html HTTP/1.", id="partial-version"),
        pytest.param(b"GET / HTTP/1.1\r", id="cr-only"),
        pytest.param(b"PRI * HTTP/", id="h2-or-h1"),
        pytest.param(H2_PREFACE[:-1], id="h2-preface-minus-one"),
        pytest.param(b"\x16\x03", id="partial-tls"),
        pytest.param(b"\r", id="lone-cr"),
    ],
)
def test_detect_never_guesses_early(data: bytes) -> None:
    assert isinstance(detect_protocol(data), NeedMore)


def test_request_line_bound() -> None:
    head = b"GET /"
    tail = b" HTTP/1.1\r\n"
    fits = head + b"a" * (MAX_REQUEST_LINE - len(head) - len(tail)) + tail
    assert len(fits) == MAX_REQUEST_LINE
    assert detect_protocol(fits) == Detected(protocol="http1", reason="HTTP/1 request line")
    too_long = head + b"a" * (MAX_REQUEST_LINE - len(head) - len(tail) + 1) + tail
    result = detect_protocol(too_long)
    assert isinstance(result, Detected)
    assert result.protocol == "opaque"
    assert str(MAX_REQUEST_LINE) in result.reason
    # Same verdict from any prefix long enough to show the line cannot end in time.
    assert detect_protocol(too_long[: MAX_REQUEST_LINE + 1]) == result
