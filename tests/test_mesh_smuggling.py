"""No request reaches an upstream unjudged, however the client frames it (issue 11).

The property: under the guide's restricting policy (Deny plus ``httpbin-get``), every
request a strict upstream (llhttp with no leniency, as Node's http module parses) sees
behind the proxy is one the proxy's metrics counted as allowed by ``httpbin-get``. Tried
with the smuggling corpus of :mod:`tests.smuggling` and a seeded mutation fuzzer, first on
the proxy's sans-IO request side in-process (thousands of inputs, each checked against
what the proxy would forward), then through the real proxy on real sockets. The same
fuzzer on the TLS listener: no traceback, no hang, the proxy keeps serving.
"""

from __future__ import annotations

import logging
import random
import socket
import ssl
from collections.abc import Iterator

import pytest

from egresskit import guide
from egresskit.cluster.local import LocalCluster
from egresskit.mesh.proxy import ProxyConfig
from egresskit.mesh.sniff import ClientHello, sniff_client_hello
from tests.contract import value
from tests.smuggling import (
    CORPUS,
    HIDDEN,
    StrictUpstream,
    check_in_process,
    cuts,
    fuzz_input,
    mutate,
)
from tests.test_mesh_faults import LocalServer

NS = guide.NAMESPACE_NAME
HTTP_STATUSES = "outbound_http_route_request_statuses_total"
FAST = ProxyConfig(
    detect_timeout=0.3,
    request_head_timeout=0.5,
    idle_timeout=0.5,
    connect_timeout=1.0,
    response_timeout=1.0,
)
WAIT = 5.0
#: Inputs per run of the fuzzers here (``make fuzz`` runs far more: tests/fuzz.py).
IN_PROCESS_CASES = 10_000
SOCKET_CASES = 120
TLS_CASES = 60


# ------------------------------------------------------------------ in-process


@pytest.mark.parametrize("name", list(CORPUS))
def test_each_shape_forwards_only_what_was_judged(name: str) -> None:
    data = CORPUS[name]
    whole = check_in_process([data])
    assert whole.unjudged == 0, whole
    # However TCP cuts it, nothing unjudged goes on. A head whose body breaks in the
    # same chunk is never judged (400); cut before its body, it is (it cannot wait for
    # the body), and what it forwarded is then cut short with the connection (no
    # answer: the exchange is cancelled). Otherwise the same answer either way.
    bytewise = check_in_process([data[i : i + 1] for i in range(len(data))])
    assert bytewise.unjudged == 0, bytewise
    assert bytewise.judged[: len(whole.judged)] == whole.judged
    if bytewise.judged == whole.judged:
        assert bytewise.fault == whole.fault


def test_the_hidden_request_is_judged_or_refused_never_forwarded_inside_a_body() -> None:
    for name, data in CORPUS.items():
        verdict = check_in_process([data])
        hidden = [h for h in verdict.upstream if h[1] == b"/forbidden"]
        judged = [h for h in verdict.judged if h[1] == b"/forbidden"]
        assert len(hidden) <= len(judged), name


@pytest.mark.parametrize(
    "target",
    [b"http://forbidden.example/ip", b"http://user@httpbin.org/ip", b"ftp://httpbin.org/ip"],
)
def test_an_absolute_target_other_than_its_host_is_400_never_forwarded(target: bytes) -> None:
    # RFC 9112 3.2.2: the upstream takes the target's authority over Host.
    verdict = check_in_process([b"GET " + target + b" HTTP/1.1\r\nHost: httpbin.org\r\n\r\n"])
    assert (verdict.fault, verdict.judged, verdict.upstream) == (400, [], [])


def test_an_absolute_target_is_judged_and_forwarded_in_origin_form() -> None:
    data = b"GET http://HTTPBIN.org?q=1 HTTP/1.1\r\nHost: httpbin.org\r\n\r\n"
    verdict = check_in_process([data])
    assert verdict.judged == verdict.upstream == [(b"GET", b"/?q=1", b"|httpbin.org")]


def test_mutated_inputs_forward_only_what_was_judged() -> None:
    rng = random.Random(11)
    seeds = list(CORPUS.values())
    failures = []
    for _ in range(IN_PROCESS_CASES):
        data = fuzz_input(rng, seeds)
        verdict = check_in_process(cuts(rng, data) if len(data) > 1 else [data])
        if verdict.unjudged:
            failures.append((data, verdict))
    assert failures == []


def client_hello(sni: str = "httpbin.org") -> bytes:
    """A real ClientHello, as Python's TLS client writes it."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ssl.create_default_context().wrap_bio(incoming, outgoing, server_hostname=sni)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def test_mutated_client_hellos_are_sniffed_without_an_exception() -> None:
    hello = client_hello()
    assert isinstance(sniff_client_hello(hello), ClientHello)
    rng = random.Random(7)
    for _ in range(IN_PROCESS_CASES // 4):
        mutated = mutate(rng, hello)
        sniff_client_hello(mutated)  # any exception fails the test
        sniff_client_hello(mutated[: rng.randint(0, len(mutated))])


# ------------------------------------------------------------------ through the proxy


@pytest.fixture
def restricted() -> Iterator[tuple[LocalCluster, StrictUpstream]]:
    """The guide's restricting policy with httpbin.org behind a strict upstream."""
    upstream = StrictUpstream()
    cluster = LocalCluster(upstreams={"httpbin.org": upstream.address}, proxy_config=FAST)
    try:
        cluster.apply([guide.NAMESPACE, guide.EGRESS_NETWORK, guide.CLIENT_POD])
        cluster.patch("egressnetwork", guide.EGRESS_NETWORK_NAME, guide.DENY_PATCH, namespace=NS)
        cluster.apply(guide.HTTPBIN_GET_ROUTE)
        yield cluster, upstream
    finally:
        cluster.close()
        upstream.close()


def send(port: int, data: bytes) -> bytes:
    """Send ``data``, end our side, read until the proxy closes (bounded by WAIT)."""
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            try:
                piece = sock.recv(65536)
            except ConnectionResetError:
                break
            if not piece:
                break
            chunks.append(piece)
    return b"".join(chunks)


def allowed(cluster: LocalCluster) -> float:
    """Exchanges counted under httpbin-get, whatever their answer or error."""
    return value(cluster, HTTP_STATUSES, route_name="httpbin-get")


def run_through(cluster: LocalCluster, upstream: StrictUpstream, inputs: list[bytes]) -> None:
    """Each input on a connection of its own; after each, every request the upstream has
    parsed so far is for ``/get`` and no more than the exchanges counted as allowed (the
    upstream records on its own thread, so a request may show up there a little late:
    the totals are compared, which a late record can only make stricter)."""
    port = cluster.outbound_ports("client", namespace=NS)[80]
    assert send(port, HIDDEN).startswith(b"HTTP/1.1 403 "), "the policy must restrict"
    for data in inputs:
        send(port, data)
        with upstream.lock:
            reached = list(upstream.seen)
        assert all(target.startswith(b"/get") for _, target, _ in reached), (data, reached)
        assert len(reached) <= allowed(cluster), (data, reached)
    # Still serving: an allowed request gets its 200 from the upstream.
    last = send(port, b"GET /get HTTP/1.1\r\nHost: httpbin.org\r\n\r\n")
    assert last.startswith(b"HTTP/1.1 200 "), last
    assert upstream.count() <= allowed(cluster)


def test_the_corpus_through_the_proxy(
    restricted: tuple[LocalCluster, StrictUpstream], caplog: pytest.LogCaptureFixture
) -> None:
    cluster, upstream = restricted
    with caplog.at_level(logging.ERROR):
        run_through(cluster, upstream, list(CORPUS.values()))
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert upstream.count() > 0, "the control group reached the upstream"


def test_mutated_inputs_through_the_proxy(
    restricted: tuple[LocalCluster, StrictUpstream], caplog: pytest.LogCaptureFixture
) -> None:
    cluster, upstream = restricted
    rng = random.Random(3)
    seeds = list(CORPUS.values())
    with caplog.at_level(logging.ERROR):
        run_through(cluster, upstream, [fuzz_input(rng, seeds) for _ in range(SOCKET_CASES)])
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_mutated_client_hellos_through_the_tls_listener(caplog: pytest.LogCaptureFixture) -> None:
    cluster = LocalCluster(proxy_config=FAST)
    try:
        cluster.apply([guide.NAMESPACE, guide.EGRESS_NETWORK, guide.CLIENT_POD])
        cluster.apply(guide.TLS_EGRESS_ROUTE)
        port = cluster.outbound_ports("client", namespace=NS)[443]
        rng = random.Random(5)
        hello = client_hello()
        with caplog.at_level(logging.ERROR):
            for _ in range(TLS_CASES):
                send(port, mutate(rng, hello))  # bounded: ends or raises TimeoutError
        assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
        ok = cluster.curl("-s", "https://httpbin.org/get", pod="client", namespace=NS)
        assert (ok.exit_code, ok.http_status) == (0, 200), "the proxy keeps serving"
    finally:
        cluster.close()


# ------------------------------------------------------------------ responses


def smuggling_upstream(server: LocalServer, conn: socket.socket) -> None:
    """Answers every request with a response framed two ways (CL and TE), the second
    response hidden in its body for a hop that reads the length."""
    hidden = b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nhidden"
    body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(hidden), hidden)
    while data := server.recv(conn):
        if b"\r\n\r\n" in data:
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n" + body
            )


def test_a_response_framed_two_ways_is_502_and_never_reaches_the_client() -> None:
    # RFC 9112 6.3 (3) and (5): a proxy discards such a response and answers 502.
    with LocalServer(smuggling_upstream) as server:
        cluster = LocalCluster(upstreams={"httpbin.org": server.address}, proxy_config=FAST)
        try:
            cluster.apply([guide.NAMESPACE, guide.EGRESS_NETWORK, guide.CLIENT_POD])
            port = cluster.outbound_ports("client", namespace=NS)[80]
            raw = send(port, b"GET /get HTTP/1.1\r\nHost: httpbin.org\r\n\r\n")
            assert raw.startswith(b"HTTP/1.1 502 "), raw[:80]
            assert b"hidden" not in raw
            assert value(cluster, HTTP_STATUSES, error="IO", http_status="") == 1
        finally:
            cluster.close()
