"""Kept-alive HTTP/1 connections through the local proxy (egresskit.mesh.http1).

Many exchanges on one client connection and one pooled upstream connection: each answer
keeps its own body, header names go out in lower case, responses split across reads,
informational and bodyless responses, upstreams that close or hang, HTTP/1.0 and
``Connection: close`` clients, and a policy change between two identical requests.
"""

from __future__ import annotations

import dataclasses
import socket
import time
from collections.abc import Iterator

import h11
import pytest

from egresskit import guide
from egresskit.cluster.local import LocalCluster
from tests.contract import value
from tests.test_mesh_faults import FAST, WAIT, LocalServer, h11_app

NS = guide.NAMESPACE_NAME
HOST = "api.example.com"
HTTP_STATUSES = "outbound_http_route_request_statuses_total"

#: What the scripted upstream answers, by request path: raw bytes, sent as they are.
#: A list is sent piece by piece with a pause between (a response split across reads).
SCRIPT: dict[str, bytes | list[bytes]] = {
    "/len": b"HTTP/1.1 200 OK\r\nX-Mixed-Case: Yes\r\nContent-Length: 5\r\n\r\nhello",
    "/no-content": b"HTTP/1.1 204 No Content\r\nX-Empty: 1\r\n\r\n",
    "/zero": b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    "/chunked": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Te: Chunked\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    ),
    "/split": [b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n", b"sp", b"lit!\n"],
    "/not-found": b"HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\nno\n",
    "/informational": (
        b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    ),
}


def request_heads(server: LocalServer, conn: socket.socket) -> Iterator[bytes]:
    """Each request head (without its blank line) as it arrives on ``conn``; bodyless
    requests only. Ends when the connection or the server does."""
    buf = b""
    while True:
        while b"\r\n\r\n" not in buf:
            data = server.recv(conn)
            if not data:
                return
            buf += data
        head, buf = buf.split(b"\r\n\r\n", 1)
        yield head


class Upstream:
    """A scripted HTTP/1.1 upstream: answers bodyless requests from :data:`SCRIPT`; ``/n``
    answers a fixed-length counter (same head, different body each time). Records the raw
    bytes it receives; ``close_after`` closes each connection after that many answers."""

    def __init__(self, close_after: int | None = None) -> None:
        self.close_after = close_after
        self.received: list[bytes] = []
        self.connections = 0
        self.counter = 0
        self.server = LocalServer(self._handle)

    def _handle(self, server: LocalServer, conn: socket.socket) -> None:
        with server.lock:
            self.connections += 1
        for answered, head in enumerate(request_heads(server, conn), start=1):
            with server.lock:
                self.received.append(head + b"\r\n\r\n")
                self.counter += 1
                n = self.counter
            path = head.split(b" ", 2)[1].decode()
            if path == "/hang":
                while server.recv(conn):  # never answer; wait for the proxy to give up
                    pass
                return
            answer = SCRIPT.get(path)
            if answer is None:
                body = b"%05d" % n
                answer = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-N: Same\r\n\r\n" + body
            pieces = answer if isinstance(answer, list) else [answer]
            for i, piece in enumerate(pieces):
                if i:
                    time.sleep(0.05)  # the next piece comes in a later read
                conn.sendall(piece)
            if self.close_after is not None and answered >= self.close_after:
                return

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    up = Upstream()
    yield up
    up.close()


def mesh_for(upstream: Upstream) -> LocalCluster:
    config = dataclasses.replace(FAST, idle_timeout=WAIT)
    cluster = LocalCluster(upstreams={HOST: upstream.server.address}, proxy_config=config)
    cluster.apply([guide.NAMESPACE, guide.EGRESS_NETWORK, guide.CLIENT_POD])
    return cluster


class Client:
    """One kept-alive raw connection to the client pod's name-routed :80 listener;
    responses are delimited with h11 and returned with their raw bytes."""

    def __init__(self, cluster: LocalCluster) -> None:
        port = cluster.outbound_ports("client", namespace=NS)[80]
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
        self.h11 = h11.Connection(h11.CLIENT)

    def get(self, path: str, *, extra: bytes = b"", version: bytes = b"1.1") -> Answer:
        self.sock.sendall(
            b"GET %s HTTP/%s\r\nHost: %s\r\n%s\r\n" % (path.encode(), version, HOST.encode(), extra)
        )
        if version != b"1.1":
            self.h11 = h11.Connection(h11.CLIENT)  # h11 speaks 1.1; read the 1.0 answer raw
            return read_to_close(self.sock)
        self.h11.send(h11.Request(method="GET", target=path, headers=[("Host", HOST)]))
        self.h11.send(h11.EndOfMessage())
        raw = b""
        status, headers, body = 0, [], b""
        while True:
            event = self.h11.next_event()
            if event is h11.NEED_DATA:
                data = self.sock.recv(65536)
                raw += data
                self.h11.receive_data(data)
            elif isinstance(event, h11.Response):
                status, headers = event.status_code, list(event.headers)
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                break
        if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
            self.h11.start_next_cycle()
        return Answer(status, headers, body, raw)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclasses.dataclass
class Answer:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    raw: bytes


def read_to_close(sock: socket.socket) -> Answer:
    raw = b""
    while chunk := sock.recv(65536):
        raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    headers = [tuple(line.split(b": ", 1)) for line in lines[1:]]
    return Answer(int(lines[0].split()[1]), headers, body, raw)  # type: ignore[arg-type]


# ------------------------------------------------------------------ one connection


def test_repeated_requests_keep_their_own_bodies(
    upstream: Upstream,
) -> None:
    with mesh_for(upstream) as cluster:
        with Client(cluster) as client:
            bodies = [client.get("/n").body for _ in range(30)]
        # The same request head and the same response head every time (only the body
        # differs): each answer still carries its own body, in order.
        assert bodies == [b"%05d" % n for n in range(1, 31)]
        assert upstream.connections == 1, "one pooled upstream connection"
        assert value(cluster, HTTP_STATUSES, http_status="200", hostname=HOST) == 30


def test_response_header_names_go_out_in_lower_case_as_linkerd_sends_them(
    upstream: Upstream,
) -> None:
    # Linkerd's proxy (hyper) writes HTTP/1 header names in lower case
    # (linkerd/linkerd2#2878, #3964).
    with mesh_for(upstream) as cluster:
        with Client(cluster) as client:
            answers = [client.get("/len") for _ in range(3)]
        for answer in answers:
            assert answer.body == b"hello"
            assert b"x-mixed-case: Yes\r\n" in answer.raw
            assert b"X-Mixed-Case" not in answer.raw


def test_a_response_split_across_reads_is_streamed(
    upstream: Upstream,
) -> None:
    with mesh_for(upstream) as cluster:
        with Client(cluster) as client:
            for _ in range(3):
                answer = client.get("/split")
                assert (answer.status, answer.body) == (200, b"split!\n")
                # Then the common case again on the same connection.
                assert client.get("/len").body == b"hello"
        assert value(cluster, HTTP_STATUSES, http_status="200", hostname=HOST) == 6


@pytest.mark.parametrize("close_after", [1, 2])
def test_an_upstream_that_closes_its_connections_is_reconnected(close_after: int) -> None:
    # The upstream closes after each (or every second) answer without saying so: the
    # next request finds the pooled connection gone, or is sent on it just as it closes
    # (then retried on a fresh one, RFC 9112 9.3.1). Every request gets its answer.
    upstream = Upstream(close_after=close_after)
    try:
        with mesh_for(upstream) as cluster:
            with Client(cluster) as client:
                answers = [client.get("/len") for _ in range(12)]
            assert [a.status for a in answers] == [200] * 12
            assert all(a.body == b"hello" for a in answers)
            assert upstream.connections >= 12 // close_after
            assert value(cluster, HTTP_STATUSES, http_status="200", hostname=HOST) == 12
    finally:
        upstream.close()


def test_clients_that_close_or_speak_http10_get_connection_close(upstream: Upstream) -> None:
    with mesh_for(upstream) as cluster:
        with Client(cluster) as client:
            assert client.get("/len").body == b"hello"
            last = client.get("/len", extra=b"Connection: close\r\n")
            assert last.body == b"hello"
            assert (b"connection", b"close") in last.headers
            assert client.sock.recv(1) == b"", "the proxy closes after a connection: close"
        with Client(cluster) as old:
            answer = old.get("/len", version=b"1.0")
        assert (answer.status, answer.body) == (200, b"hello")
        assert (b"connection", b"close") in answer.headers


# ------------------------------------------------------------------ a mixed sequence

SEQUENCE = [
    "/len",
    "/len",
    "/n",
    "/no-content",
    "/zero",
    "/chunked",
    "/len",
    "/split",
    "/not-found",
    "/informational",
    "/chunked",
    "/n",
    "/n",
]


def test_a_mixed_sequence_on_one_connection(upstream: Upstream) -> None:
    with mesh_for(upstream) as cluster:
        with Client(cluster) as client:
            answers = {path: client.get(path) for path in SEQUENCE}
        counts = {
            status: value(cluster, HTTP_STATUSES, http_status=status, hostname=HOST)
            for status in ("200", "204", "404")
        }
    assert counts == {"200": 11.0, "204": 1.0, "404": 1.0}
    assert (answers["/chunked"].status, answers["/chunked"].body) == (200, b"hello world")
    # One framing header, the one the body goes out with (RFC 9112 6).
    assert answers["/chunked"].raw.count(b"transfer-encoding: chunked\r\n") == 1
    assert (answers["/no-content"].status, answers["/no-content"].body) == (204, b"")
    assert b"content-length" not in answers["/no-content"].raw.lower()
    # The 103 is dropped (hyper's client swallows informational answers).
    assert answers["/informational"].raw.startswith(b"HTTP/1.1 200 ")
    assert (answers["/not-found"].status, answers["/not-found"].body) == (404, b"no\n")
    # Every request went upstream once, on one connection, lower-cased and framed once.
    assert len(upstream.received) == len(SEQUENCE) and upstream.connections == 1
    assert all(b"Host:" not in raw and b"host: " in raw for raw in upstream.received)


# ------------------------------------------------------------------ a policy flip


def test_an_identical_request_is_judged_again_after_a_policy_change(upstream: Upstream) -> None:
    def policy(traffic: str) -> None:
        patch = {"spec": {"trafficPolicy": traffic}}
        cluster.patch("EgressNetwork", guide.EGRESS_NETWORK_NAME, patch, namespace=NS)

    with mesh_for(upstream) as cluster, Client(cluster) as client:
        # The same request bytes each time, on one connection, judged by the policy
        # current when each one arrives.
        assert [client.get("/len").status for _ in range(2)] == [200, 200]
        policy("Deny")
        assert [client.get("/len").status for _ in range(2)] == [403, 403]
        policy("Allow")
        assert [client.get("/len").status for _ in range(2)] == [200, 200]


# ------------------------------------------------------------------ edge cases


def test_an_empty_chunked_body_is_forwarded_with_its_last_chunk() -> None:
    # "0\r\n\r\n" right behind the head: the request is whole without body bytes, yet
    # the upstream needs the last chunk to see its end.
    with (
        LocalServer(h11_app) as server,
        mesh_for_address(server.address) as cluster,
        Client(cluster) as client,
    ):
        for _ in range(3):
            client.sock.sendall(
                b"POST /echo HTTP/1.1\r\nHost: %s\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"0\r\n\r\n" % HOST.encode()
            )
            raw = read_response(client.sock)
            assert raw.startswith(b"HTTP/1.1 200 "), raw[:60]


def test_an_upstream_that_hangs_on_a_kept_alive_connection_gets_504(upstream: Upstream) -> None:
    # The second request goes out on the pooled connection; the upstream never answers
    # it: 504 after response_timeout, counted with the error.
    # Not a moment later: the request was whole, so there is no body to wait for first
    # (idle_timeout is long here on purpose).
    with mesh_for(upstream) as cluster, Client(cluster) as client:
        assert client.get("/len").status == 200
        started = time.monotonic()
        answer = client.get("/hang")
        waited = time.monotonic() - started
        assert answer.status == 504
        assert FAST.response_timeout <= waited < WAIT
        timeouts = value(cluster, HTTP_STATUSES, error="RESPONSE_HEADERS_TIMEOUT", http_status="")
        assert timeouts == 1


def mesh_for_address(address: str) -> LocalCluster:
    config = dataclasses.replace(FAST, idle_timeout=WAIT)
    cluster = LocalCluster(upstreams={HOST: address}, proxy_config=config)
    cluster.apply([guide.NAMESPACE, guide.EGRESS_NETWORK, guide.CLIENT_POD])
    return cluster


def read_response(sock: socket.socket) -> bytes:
    """One whole response with a content-length or chunked body (h11 finds its end)."""
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="GET", target="/", headers=[("Host", HOST)]))
    conn.send(h11.EndOfMessage())
    raw = b""
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = sock.recv(65536)
            raw += data
            conn.receive_data(data)
        elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            return raw
