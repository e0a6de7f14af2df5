"""Bad input and faults on the local mesh's data plane (egresskit issue 3).

Real sockets everywhere: the real curl through the facade, raw ``socket`` clients for
malformed traffic, and small local servers (:class:`LocalServer`) standing behind
hostnames via ``LocalCluster(upstreams=...)``. Each fault is answered as Linkerd's
hyper-based proxy answers it (status or close, metric ``error`` label; docs/facts/linkerd-egress.md
linkerd-egress.md sections 3, 5.2, 6.2), within a small ``ProxyConfig`` bound, and the
same proxy keeps serving a normal request afterwards.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import h11
import pytest

from egresskit import guide
from egresskit.cluster.local import LocalCluster
from egresskit.mesh.proxy import ProxyConfig
from tests.contract import eventually, value

NS = guide.NAMESPACE_NAME
HTTP_STATUSES = "outbound_http_route_request_statuses_total"
BACKEND_STATUSES = "outbound_http_route_backend_response_statuses_total"
ALLOW_PATCH = {"spec": {"trafficPolicy": "Allow"}}
#: Small bounds so every fault shows up fast; WAIT bounds every read a test makes.
FAST = ProxyConfig(
    detect_timeout=0.3,
    request_head_timeout=0.5,
    idle_timeout=0.5,
    connect_timeout=1.0,
    response_timeout=0.5,
)
WAIT = 5.0


# ------------------------------------------------------------------ local servers


class LocalServer:
    """A TCP server on ``127.0.0.1:0`` running ``handler(server, conn)`` on a thread per
    connection; counts request body bytes for the handlers below. ``close()`` joins all."""

    def __init__(self, handler: Callable[[LocalServer, socket.socket], None]) -> None:
        self._handler = handler
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.05)
        self.port: int = self._sock.getsockname()[1]
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.first_body = threading.Event()
        self.received = 0
        self.max_chunk = 0
        self._threads: list[threading.Thread] = []
        self._accept = threading.Thread(target=self._serve, name="test-server", daemon=True)
        self._accept.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            conn.settimeout(0.05)
            thread = threading.Thread(target=self._run, args=(conn,), daemon=True)
            with self.lock:
                self._threads.append(thread)
            thread.start()

    def _run(self, conn: socket.socket) -> None:
        # OSError, ProtocolError: the proxy went away mid-exchange, not this server's concern.
        with conn, contextlib.suppress(OSError, h11.ProtocolError):
            self._handler(self, conn)

    def recv(self, conn: socket.socket) -> bytes | None:
        """The next bytes from ``conn`` (b"" at EOF), or None once the server stops."""
        while not self.stop.is_set():
            try:
                return conn.recv(65536)
            except TimeoutError:
                continue
        return None

    def close(self) -> None:
        self.stop.set()
        self._accept.join(WAIT)
        self._sock.close()
        with self.lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(WAIT)
        assert not any(t.is_alive() for t in [self._accept, *threads]), "server threads left"

    def __enter__(self) -> LocalServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def hang(server: LocalServer, conn: socket.socket) -> None:
    """Accept, read whatever comes, never answer."""
    while server.recv(conn):
        pass


def h11_app(server: LocalServer, conn: socket.socket) -> None:
    """HTTP/1.1 keep-alive server: ``/echo`` echoes the body, anything else answers JSON
    about the request. Responses have no content-length, so they go out chunked."""
    h = h11.Connection(h11.SERVER)
    body: list[bytes] = []
    chunked = False
    target = b"/"
    while True:
        ev = h.next_event()
        if ev is h11.NEED_DATA:
            data = server.recv(conn)
            if data is None:
                return
            h.receive_data(data)
        elif isinstance(ev, h11.Request):
            target, body = ev.target, []
            chunked = any(k == b"transfer-encoding" and v == b"chunked" for k, v in ev.headers)
        elif isinstance(ev, h11.Data):
            with server.lock:
                server.received += len(ev.data)
                server.max_chunk = max(server.max_chunk, len(ev.data))
            server.first_body.set()
            if target == b"/echo":
                body.append(ev.data)
        elif isinstance(ev, h11.EndOfMessage):
            with server.lock:
                meta = {"received": server.received, "chunked": chunked}
            pieces = body if target == b"/echo" else [json.dumps(meta).encode()]
            out = h.send(h11.Response(status_code=200, headers=[("content-type", "text/plain")]))
            for piece in pieces:
                out += h.send(h11.Data(data=piece))
            conn.sendall(out + h.send(h11.EndOfMessage()))
            if h.our_state is not h11.DONE or h.their_state is not h11.DONE:
                return
            h.start_next_cycle()
        else:
            return  # ConnectionClosed


# ------------------------------------------------------------------ fixtures, helpers


@pytest.fixture
def make_mesh() -> Iterator[Callable[..., LocalCluster]]:
    """A local cluster with the guide's namespace, EgressNetwork (Allow) and client pod."""
    clusters: list[LocalCluster] = []
    config = FAST

    def make(upstreams: dict[str, str] | None = None) -> LocalCluster:
        cluster = LocalCluster(upstreams=upstreams, proxy_config=config)
        clusters.append(cluster)
        cluster.apply([guide.NAMESPACE, guide.EGRESS_NETWORK, guide.CLIENT_POD])
        return cluster

    yield make
    for cluster in clusters:
        cluster.close()


@pytest.fixture
def mesh(make_mesh: Callable[..., LocalCluster]) -> LocalCluster:
    return make_mesh()


def name_port(cluster: LocalCluster, port: int = 80) -> int:
    """The client pod's name-routed listener for ``port`` (destination from Host/SNI)."""
    return cluster.outbound_ports("client", namespace=NS)[port]


def pinned_port(cluster: LocalCluster, host: str, port: int) -> int:
    """The client pod's listener for the original destination ``host``'s IP and ``port``,
    as iptables would pin it (the one curl goes through)."""
    ip = str(cluster.dns.resolve(host, search_namespace=NS))
    proxy = cluster._pod("client", NS).proxy
    assert proxy is not None
    return cluster._loop.call(proxy.listen(port, ip), timeout=5, what="a pinned listener")


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=WAIT)


def read_to_close(sock: socket.socket) -> bytes:
    """Everything until the proxy closes (a reset counts as closed); bounded by WAIT."""
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def status_of(raw: bytes) -> int:
    line = raw.split(b"\r\n", 1)[0].decode()
    assert line.startswith("HTTP/1.1 "), f"expected a status line, found {raw[:80]!r}"
    return int(line.split()[1])


def get(port: int, host: str = "httpbin.org", path: str = "/get") -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT)
    try:
        conn.request("GET", path, headers={"Host": host})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def assert_still_serving(cluster: LocalCluster) -> None:
    """A normal request through the same proxy still gets its 200."""
    before = value(cluster, HTTP_STATUSES, http_status="200")
    assert get(name_port(cluster))[0] == 200
    assert value(cluster, HTTP_STATUSES, http_status="200") == before + 1


# ------------------------------------------------------------------ 1. malformed heads


BIG = b"x" * (70 * 1024)
MALFORMED = [
    pytest.param(b"GET /get HTTP/1.1\r\n\x01\x02garbage\r\n\r\n", 400, id="garbage-after-line"),
    pytest.param(
        b"GET /get HTTP/1.1\r\nHost: httpbin.org\r\nno colon here\r\n\r\n", 400, id="bad-header"
    ),
    pytest.param(b"GET /get HTTP/1.1\r\nHost : httpbin.org\r\n\r\n", 400, id="space-before-colon"),
    pytest.param(
        b"POST /post HTTP/1.1\r\nHost: httpbin.org\r\nContent-Length: ten\r\n\r\n",
        400,
        id="bad-content-length",
    ),
    pytest.param(
        b"GET /get HTTP/1.1\r\nHost: httpbin.org\r\nX-Big: " + BIG + b"\r\n\r\n",
        431,
        id="one-70KiB-header",
    ),
    pytest.param(
        b"GET /get HTTP/1.1\r\nHost: httpbin.org\r\n"
        + b"".join(b"X-H%d: %s\r\n" % (i, b"y" * 1000) for i in range(200))
        + b"\r\n",
        431,
        id="200KiB-of-headers",
    ),
]


@pytest.mark.parametrize(("request_bytes", "status"), MALFORMED)
def test_malformed_head_is_answered_and_closed(
    mesh: LocalCluster, request_bytes: bytes, status: int
) -> None:
    with connect(name_port(mesh)) as sock:
        sock.sendall(request_bytes)
        raw = read_to_close(sock)
    assert status_of(raw) == status
    assert b"connection: close" in raw.lower()
    assert value(mesh, HTTP_STATUSES) == 0, "no route was chosen, nothing is counted"
    assert_still_serving(mesh)


# ------------------------------------------------------------------ 2. detection faults

BROKEN_HELLOS = [
    pytest.param(b"\x16\x03\x01\x00\x04\x02\x00\x00\x00", id="server-hello-type"),
    pytest.param(b"\x16\x03\x01\x00\x00", id="empty-record"),
    pytest.param(b"\x16\x03\x01\x00\x08\x01\x00\x00\x04\xff\xff\xff\xff", id="truncated-body"),
    pytest.param(b"\x16\x03\x01\x40\x01", id="record-too-large"),
]
TRANSPORT = ("outbound_tls_route_open_total", "outbound_tcp_route_open_total")


@pytest.mark.parametrize("pinned", [True, False], ids=["pinned", "name-routed"])
@pytest.mark.parametrize("hello", BROKEN_HELLOS)
def test_broken_client_hello_on_a_tls_route_port_is_closed(
    mesh: LocalCluster, hello: bytes, pinned: bool
) -> None:
    mesh.apply(guide.TLS_EGRESS_ROUTE)  # port 443 now requires an SNI (spec 5.2)
    port = pinned_port(mesh, "httpbin.org", 443) if pinned else name_port(mesh, 443)
    with connect(port) as sock:
        sock.sendall(hello)
        assert read_to_close(sock) == b""
    assert all(value(mesh, family) == 0 for family in TRANSPORT), "no route metrics"
    ok = mesh.curl("-s", "https://httpbin.org/get", pod="client", namespace=NS)
    assert (ok.exit_code, ok.http_status) == (0, 200)
    assert value(mesh, "outbound_tls_route_open_total", route_name="tls-egress") == 1


def test_client_hello_without_sni_on_a_tls_route_port_is_closed(mesh: LocalCluster) -> None:
    mesh.apply(guide.TLS_EGRESS_ROUTE)
    # An IP literal in the URL: curl sends no SNI.
    r = mesh.curl("-sS", "-k", "https://192.0.2.10/get", pod="client", namespace=NS)
    assert r.exit_code == 35 and r.http_status is None
    assert all(value(mesh, family) == 0 for family in TRANSPORT)


def test_silence_on_a_detect_port_is_opaque_after_the_detect_timeout(mesh: LocalCluster) -> None:
    port = pinned_port(mesh, "httpbin.org", 80)
    with connect(port) as sock:
        # Say nothing: after detect_timeout the proxy routes the stream as opaque.
        assert eventually(mesh, "outbound_tcp_route_open_total", 1, within=WAIT) == 1
        sock.sendall(b"GET /get HTTP/1.1\r\nHost: httpbin.org\r\nConnection: close\r\n\r\n")
        raw = read_to_close(sock)
    assert status_of(raw) == 200, "the opaque relay reached httpbin"
    labels = {"route_name": "tcp-egress-allow", "parent_port": "80", "target_port": "80"}
    assert value(mesh, "outbound_tcp_route_open_total", **labels) == 1
    assert value(mesh, HTTP_STATUSES) == 0, "never seen as HTTP"
    assert_still_serving(mesh)


def test_silence_on_a_tls_route_port_is_closed_after_the_detect_timeout(
    mesh: LocalCluster,
) -> None:
    mesh.apply(guide.TLS_EGRESS_ROUTE)
    with connect(pinned_port(mesh, "httpbin.org", 443)) as sock:
        assert read_to_close(sock) == b""
    assert all(value(mesh, family) == 0 for family in TRANSPORT)


# ------------------------------------------------------------------ 3. slow clients


def test_idle_keepalive_client_is_closed_after_idle_timeout(mesh: LocalCluster) -> None:
    with connect(name_port(mesh)) as sock:
        sock.sendall(b"GET /get HTTP/1.1\r\nHost: httpbin.org\r\n\r\n")
        resp = http.client.HTTPResponse(sock)
        try:
            resp.begin()
            assert resp.status == 200 and not resp.will_close
            resp.read()
        finally:
            resp.close()
        # Kept alive, then idle: the proxy closes it without a word.
        assert read_to_close(sock) == b""
    assert_still_serving(mesh)


def test_slowloris_head_is_closed_after_request_head_timeout(mesh: LocalCluster) -> None:
    received = b""
    with connect(name_port(mesh)) as sock:
        sock.sendall(b"GET /get HTTP/1.1\r\nHost: httpbin.org\r\n")
        sock.settimeout(0.1)  # one header line every 0.1 s, each well within any bound
        closed = False
        for i in range(int(WAIT / 0.1)):
            try:
                sock.sendall(b"X-Slow-%d: v\r\n" % i)
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            received += chunk
            if not chunk:
                closed = True
                break
    assert closed, "a head trickling in forever was never cut off"
    assert received == b"", "closed without an answer, as hyper does"
    assert value(mesh, HTTP_STATUSES) == 0
    assert_still_serving(mesh)


# ------------------------------------------------------------------ 4. upstream faults


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port that refuses connections for the whole test: bound, never listening, so the
    mesh's own listeners (port 0) cannot be handed it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield int(s.getsockname()[1])


def test_refusing_upstream_is_502_refused(
    make_mesh: Callable[..., LocalCluster], closed_port: int
) -> None:
    mesh = make_mesh(upstreams={"refuse.example": f"127.0.0.1:{closed_port}"})
    r = mesh.curl("-si", "http://refuse.example/x", pod="client", namespace=NS)
    assert r.http_status == 502
    head = r.stdout.lower()
    assert "l5d-proxy-error: refused" in head and "connection: close" in head
    labels = {"route_name": "http-egress-allow", "hostname": "refuse.example"}
    assert value(mesh, HTTP_STATUSES, **labels, http_status="", error="REFUSED") == 1
    assert value(mesh, HTTP_STATUSES, **labels) == 1
    assert value(mesh, BACKEND_STATUSES, http_status="", error="REFUSED") == 1
    assert_still_serving(mesh)


def test_hanging_upstream_is_504_after_response_timeout(
    make_mesh: Callable[..., LocalCluster],
) -> None:
    with LocalServer(hang) as server:
        mesh = make_mesh(upstreams={"hang.example": server.address})
        r = mesh.curl("-si", "http://hang.example/x", pod="client", namespace=NS)
        assert r.http_status == 504
        assert "l5d-proxy-error: response headers timeout" in r.stdout.lower()
        labels = {"hostname": "hang.example", "http_status": ""}
        assert value(mesh, HTTP_STATUSES, **labels, error="RESPONSE_HEADERS_TIMEOUT") == 1
        assert_still_serving(mesh)
        mesh.close()  # before the server, so the proxy's upstream connection goes first


# ------------------------------------------------------------------ 5. bodies


def test_request_body_is_streamed_not_buffered(make_mesh: Callable[..., LocalCluster]) -> None:
    total, first = 8 * 1024 * 1024, 1024 * 1024
    with LocalServer(h11_app) as server:
        mesh = make_mesh(upstreams={"stream.example": server.address})
        with connect(name_port(mesh)) as sock:
            head = b"POST /upload HTTP/1.1\r\nHost: stream.example\r\nContent-Length: %d\r\n\r\n"
            sock.sendall(head % total + b"a" * first)
            # The server must see body bytes while the client still holds most of them.
            assert server.first_body.wait(WAIT), "the proxy held the body back"
            with server.lock:
                assert 0 < server.received <= first
            sock.sendall(b"b" * (total - first))
            resp = http.client.HTTPResponse(sock)
            try:
                resp.begin()
                assert resp.status == 200
                assert json.loads(resp.read())["received"] == total
            finally:
                resp.close()
        mesh.close()


def test_curl_posts_20mb_through_the_proxy(
    make_mesh: Callable[..., LocalCluster], tmp_path: Path
) -> None:
    size = 20 * 1024 * 1024
    upload = tmp_path / "upload.bin"
    upload.write_bytes(b"z" * size)
    with LocalServer(h11_app) as server:
        mesh = make_mesh(upstreams={"upload.example": server.address})
        r = mesh.curl(
            "-s",
            "--data-binary",
            f"@{upload}",
            "http://upload.example/upload",
            pod="client",
            namespace=NS,
            timeout=60,
        )
        assert (r.exit_code, r.http_status) == (0, 200)
        assert json.loads(r.stdout)["received"] == size
        assert server.max_chunk < size, "the body arrived in pieces, as it was streamed"
        assert value(mesh, HTTP_STATUSES, hostname="upload.example", http_status="200") == 1
        mesh.close()


def test_chunked_request_and_chunked_response_pass_through(
    make_mesh: Callable[..., LocalCluster], tmp_path: Path
) -> None:
    payload = b"0123456789abcdef" * 8192
    upload = tmp_path / "chunked.bin"
    upload.write_bytes(payload)
    with LocalServer(h11_app) as server:
        mesh = make_mesh(upstreams={"chunk.example": server.address})
        args = ("-s", "-H", "Transfer-Encoding: chunked", "--data-binary", f"@{upload}")
        meta = mesh.curl(*args, "http://chunk.example/meta", pod="client", namespace=NS)
        assert json.loads(meta.stdout) == {"received": len(payload), "chunked": True}
        echo = mesh.curl(
            "-s", "-D", str(tmp_path / "headers"), *args[1:], "http://chunk.example/echo",
            pod="client", namespace=NS,
        )  # fmt: skip
        assert echo.http_status == 200
        assert "transfer-encoding: chunked" in (tmp_path / "headers").read_text().lower()
        assert echo.stdout == payload.decode()
        mesh.close()


# ------------------------------------------------------------------ 6. keep-alive


def test_curl_reuses_one_connection_for_two_urls(mesh: LocalCluster) -> None:
    r = mesh.curl(
        "-s",
        "-o",
        "/dev/null",
        "-o",
        "/dev/null",
        "-w",
        "%{num_connects}\n",
        "http://httpbin.org/get",
        "http://httpbin.org/headers",
        pod="client",
        namespace=NS,
    )
    assert r.exit_code == 0
    assert r.stdout.split() == ["1", "0"], "the second transfer reused the connection"
    assert value(mesh, HTTP_STATUSES, http_status="200") == 2


@pytest.mark.parametrize(
    ("first", "patch", "second"),
    [(200, guide.DENY_PATCH, 403), (403, ALLOW_PATCH, 200)],
    ids=["allow-then-deny", "deny-then-allow"],
)
def test_each_request_on_one_connection_takes_the_policy_current_at_its_head(
    mesh: LocalCluster, first: int, patch: dict[str, Any], second: int
) -> None:
    if first == 403:
        mesh.patch("egressnetwork", guide.EGRESS_NETWORK_NAME, guide.DENY_PATCH, namespace=NS)
    conn = http.client.HTTPConnection("127.0.0.1", name_port(mesh), timeout=WAIT)
    try:
        conn.request("GET", "/get", headers={"Host": "httpbin.org"})
        resp = conn.getresponse()
        assert (resp.status, resp.will_close) == (first, False)
        resp.read()
        sock = conn.sock
        mesh.patch("egressnetwork", guide.EGRESS_NETWORK_NAME, patch, namespace=NS)
        conn.request("GET", "/get", headers={"Host": "httpbin.org"})
        resp = conn.getresponse()
        assert resp.status == second
        resp.read()
        assert conn.sock is sock, "both requests went over the same connection"
    finally:
        conn.close()
    assert value(mesh, HTTP_STATUSES, route_name="http-egress-allow", http_status="200") == 1
    assert value(mesh, HTTP_STATUSES, route_name="http-egress-deny", http_status="403") == 1


def closing_app(server: LocalServer, conn: socket.socket) -> None:
    """Answers one request with connection fields of its own hop, then closes."""
    data = b""
    while b"\r\n\r\n" not in data:
        more = server.recv(conn)
        if not more:
            return
        data += more
    conn.sendall(
        b"HTTP/1.1 200 OK\r\nConnection: close, X-Hop\r\nX-Hop: upstream-only\r\n"
        b"Keep-Alive: timeout=5\r\nProxy-Connection: close\r\nUpgrade: h2c\r\n"
        b"X-Kept: yes\r\nContent-Length: 2\r\n\r\nok"
    )


def test_an_upstream_closing_after_each_answer_leaves_the_clients_connection_open(
    make_mesh: Callable[..., LocalCluster],
) -> None:
    # linkerd2-proxy's HTTP/1 client strips the upstream's connection fields; hyper's
    # server keeps the client's connection, and the next request gets a new upstream.
    with LocalServer(closing_app) as server:
        mesh = make_mesh(upstreams={"closing.example": server.address})
        conn = http.client.HTTPConnection("127.0.0.1", name_port(mesh), timeout=WAIT)
        socks = []
        try:
            for i in range(2):
                conn.request("GET", f"/{i}", headers={"Host": "closing.example"})
                resp = conn.getresponse()
                assert (resp.status, resp.read(), resp.will_close) == (200, b"ok", False)
                fields = {k.lower(): v for k, v in resp.getheaders()}
                assert fields == {"x-kept": "yes", "content-length": "2"}, fields
                socks.append(conn.sock)
            assert socks[0] is socks[1], "both answers came over the same client connection"
        finally:
            conn.close()
    assert value(mesh, HTTP_STATUSES, http_status="200") == 2


# ------------------------------------------------------------------ 7. atomicity


def test_policy_flips_under_load_give_only_200_or_403(mesh: LocalCluster) -> None:
    port = name_port(mesh)
    stop = threading.Event()
    lock = threading.Lock()
    statuses: list[int] = []
    failures: list[str] = []

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT)
        try:
            for _ in range(2000):  # bounded even if stop is never set
                if stop.is_set():
                    return
                conn.request("GET", "/", headers={"Host": "example.com"})
                resp = conn.getresponse()
                resp.read()
                with lock:
                    statuses.append(resp.status)
        except Exception as exc:  # recorded: any reset or protocol error fails the test
            with lock:
                failures.append(repr(exc))
        finally:
            conn.close()

    def seen() -> int:
        with lock:
            return len(statuses) + len(failures)

    threads = [threading.Thread(target=client, name=f"load-{i}") for i in range(4)]
    for t in threads:
        t.start()
    try:
        for i in range(20):
            # Let some requests through under each policy before flipping again.
            mark, deadline = seen(), time.monotonic() + WAIT
            while seen() < mark + 8 and time.monotonic() < deadline:
                time.sleep(0.005)
            patch = guide.DENY_PATCH if i % 2 == 0 else ALLOW_PATCH
            mesh.patch("egressnetwork", guide.EGRESS_NETWORK_NAME, patch, namespace=NS)
    finally:
        stop.set()
        for t in threads:
            t.join(WAIT)
    assert not any(t.is_alive() for t in threads)
    assert failures == []
    assert set(statuses) == {200, 403}
    assert value(mesh, HTTP_STATUSES) == len(statuses)
