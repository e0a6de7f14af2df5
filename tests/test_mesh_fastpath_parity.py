"""Timeouts and lifetimes on the HTTP/1 fast path (egresskit.mesh.http1), against the
coroutine path.

The contract: with ``ProxyConfig(fast_path=True)`` the proxy behaves exactly as with
``fast_path=False`` (same bytes, metrics, timeouts, faults and closes). Each test here
pins one place where the two once differed (a review of the fast path found them; each
test failed before its fix): the response timeout per read, the head timeout of a
pipelined partial head, blank lines between requests, and connections freed without
the cycle collector.
"""

from __future__ import annotations

import dataclasses
import gc
import socket
import time
import weakref
from collections.abc import Iterator

import h11
import pytest

from egresskit import guide
from egresskit.cluster.local import LocalCluster
from egresskit.mesh import http1
from egresskit.mesh.proxy import ProxyConfig
from tests.contract import value
from tests.test_mesh_fastpath import (
    HOST,
    HTTP_STATUSES,
    Client,
    Upstream,
    proxy_of,
    read_response,
    request_heads,
)
from tests.test_mesh_faults import FAST, WAIT, LocalServer

NS = guide.NAMESPACE_NAME
REQUEST = b"GET /len HTTP/1.1\r\nHost: %s\r\n\r\n" % HOST.encode()
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def mesh(address: str, config: ProxyConfig) -> LocalCluster:
    cluster = LocalCluster(upstreams={HOST: address}, proxy_config=config)
    cluster.apply([guide.NAMESPACE, guide.EGRESS_NETWORK, guide.CLIENT_POD])
    return cluster


def port_of(cluster: LocalCluster) -> int:
    return cluster.outbound_ports("client", namespace=NS)[80]


def status_or_closed(sock: socket.socket) -> str:
    """The status of the next response on ``sock``, or "closed" if the proxy closed it."""
    try:
        raw = read_response(sock)
    except (ConnectionResetError, BrokenPipeError, h11.RemoteProtocolError):
        return "closed"
    if not raw:
        return "closed"
    return raw.split(b" ", 2)[1].decode()


# ------------------------------------------------------------------ response_timeout

#: A response head that comes in two pieces, each well within response_timeout, the
#: whole of it not: the proxy's wait is bounded per read on the coroutine path
#: (_response_head: "response_timeout bounds each read").
RESPONSE_TIMEOUT = 0.45
GAP = 0.3
TRICKLES = {
    # The status line first, the rest of the head GAP later.
    "split-head": [b"HTTP/1.1 200 OK\r\n", b"Content-Length: 2\r\n\r\nok"],
    # A slow upstream that says 102 Processing first (what 102 is for), then answers.
    "informational-first": [b"HTTP/1.1 102 Processing\r\n\r\n", OK],
}


def trickling_upstream(pieces: list[bytes]) -> LocalServer:
    """Answers ``/len`` at once and ``/slow`` as ``pieces``, GAP apart (GAP before the
    first one too), on one kept-alive connection."""

    def handle(server: LocalServer, conn: socket.socket) -> None:
        for head in request_heads(server, conn):
            if b" /slow " not in head:
                conn.sendall(OK)
                continue
            for piece in pieces:
                time.sleep(GAP)
                conn.sendall(piece)

    return LocalServer(handle)


def trickled_exchange(pieces: list[bytes], *, fast_path: bool) -> tuple[str, float, float]:
    """(status of ``/slow``, its 200 count, its RESPONSE_HEADERS_TIMEOUT count), sent on a
    connection whose upstream is pooled (so the fast path takes it)."""
    config = dataclasses.replace(
        FAST, fast_path=fast_path, idle_timeout=WAIT, response_timeout=RESPONSE_TIMEOUT
    )
    with trickling_upstream(pieces) as server, mesh(server.address, config) as cluster:
        with socket.create_connection(("127.0.0.1", port_of(cluster)), timeout=WAIT) as sock:
            sock.sendall(REQUEST)
            assert status_or_closed(sock) == "200"
            sock.sendall(b"GET /slow HTTP/1.1\r\nHost: %s\r\n\r\n" % HOST.encode())
            status = status_or_closed(sock)
        ok = value(cluster, HTTP_STATUSES, hostname=HOST, http_status="200")
        timeouts = value(cluster, HTTP_STATUSES, error="RESPONSE_HEADERS_TIMEOUT")
    return status, ok, timeouts


@pytest.mark.parametrize("trickle", list(TRICKLES), ids=list(TRICKLES))
def test_a_response_head_in_pieces_is_timed_per_read_on_both_paths(trickle: str) -> None:
    # The coroutine path (_response_head) gives every read its own response_timeout; the
    # fast path (_upstream_data) must re-arm it on each piece too, not time the whole
    # head from the request (which answered 504 RESPONSE_HEADERS_TIMEOUT here).
    fast = trickled_exchange(TRICKLES[trickle], fast_path=True)
    slow = trickled_exchange(TRICKLES[trickle], fast_path=False)
    assert fast == slow, f"fast path {fast} != coroutine path {slow} (status, 200s, timeouts)"


# ------------------------------------------------------------------ request_head_timeout


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    up = Upstream()
    yield up
    up.close()


@pytest.mark.parametrize("after", ["coroutine-exchange", "fast-exchange"])
def test_a_pipelined_partial_head_gets_request_head_timeout(upstream: Upstream, after: str) -> None:
    # A request with the start of the next head behind it, in one chunk; then the client
    # stalls. The head is open, so request_head_timeout bounds it (slowloris): the
    # coroutine path arms it in _next_head (requests.head_open on entry), and so must the
    # fast path's _await_head, not keep the stalled head for idle_timeout.
    config = dataclasses.replace(FAST, request_head_timeout=0.3, idle_timeout=3.0)
    partial = b"GET /len HTTP/1.1\r\nHo"
    with mesh(upstream.server.address, config) as cluster:
        with socket.create_connection(("127.0.0.1", port_of(cluster)), timeout=WAIT) as sock:
            if after == "fast-exchange":
                sock.sendall(REQUEST)  # opens the pooled upstream connection
                assert status_or_closed(sock) == "200"
            sock.sendall(REQUEST + partial)
            assert status_or_closed(sock) == "200"
            started = time.monotonic()
            sock.settimeout(1.2)
            try:
                rest = sock.recv(65536)
            except TimeoutError:
                rest = None
            waited = time.monotonic() - started
        if after == "fast-exchange":
            assert proxy_of(cluster).fast_exchanges >= 1
    assert rest == b"", f"the stalled head was not closed after {waited:.2f} s"
    assert waited < 1.0


# ------------------------------------------------------------------ idle_timeout


def keepalive_with_blank_lines(upstream: Upstream, *, fast_path: bool) -> list[str]:
    """Statuses on one connection: a request, then blank lines (CRLF, which HTTP/1.1
    allows before a request line) every 0.1 s for 0.5 s, then a request again."""
    config = dataclasses.replace(FAST, fast_path=fast_path, idle_timeout=0.3)
    statuses = []
    with (
        mesh(upstream.server.address, config) as cluster,
        socket.create_connection(("127.0.0.1", port_of(cluster)), timeout=WAIT) as sock,
    ):
        sock.sendall(REQUEST)
        statuses.append(status_or_closed(sock))
        try:
            for _ in range(5):
                time.sleep(0.1)
                sock.sendall(b"\r\n")
            sock.sendall(REQUEST)
        except (ConnectionResetError, BrokenPipeError):
            statuses.append("closed")
        else:
            statuses.append(status_or_closed(sock))
    return statuses


def test_blank_lines_between_requests_count_alike_for_idle_timeout_on_both_paths(
    upstream: Upstream,
) -> None:
    # The coroutine path's _next_head gives every read a fresh idle_timeout, so bytes that
    # open no head (blank lines) keep the connection; so must the fast path's _client_data.
    fast = keepalive_with_blank_lines(upstream, fast_path=True)
    slow = keepalive_with_blank_lines(upstream, fast_path=False)
    assert fast == slow, f"fast path {fast} != coroutine path {slow}"


# ------------------------------------------------------------------ reference cycles


def test_a_closed_connection_is_freed_without_the_cycle_collector(
    upstream: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A _Connection must not refer to itself (its own bound methods kept as attributes
    # did): a finished connection's state (remembered heads, plans, pool, channels) would
    # live on until a cyclic GC pass, for a long-lived connection a full one.
    connections: list[weakref.ref[http1._Connection]] = []
    init = http1._Connection.__init__

    def tracked(self: http1._Connection, *args: object, **kwargs: object) -> None:
        init(self, *args, **kwargs)  # type: ignore[arg-type]
        connections.append(weakref.ref(self))

    monkeypatch.setattr(http1._Connection, "__init__", tracked)
    config = dataclasses.replace(FAST, idle_timeout=WAIT)
    with mesh(upstream.server.address, config) as cluster:
        proxy = proxy_of(cluster)
        gc.collect()
        gc.disable()
        try:
            with Client(cluster) as client:
                assert [client.get("/len").status for _ in range(3)] == [200] * 3
            deadline = time.monotonic() + WAIT
            while proxy._tasks and time.monotonic() < deadline:
                time.sleep(0.01)
            assert not proxy._tasks, "the connection task did not end"
            time.sleep(0.05)
            assert len(connections) == 1
            assert connections[0]() is None, "the closed connection is still alive"
        finally:
            gc.enable()
