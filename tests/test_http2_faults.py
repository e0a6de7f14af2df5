"""Hostile and broken HTTP/2 on the proxy's gRPC port: bounded, no traceback, no hang.

Raw sockets and the ``h2`` client state machine build the bytes; the proxy runs in a real
:class:`LocalCluster` with small bounds. After every fault the same proxy still serves a
real gRPC call (grpcio). The fuzz mutates a valid call's bytes with a fixed seed, so a
failure names a case that reproduces.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import socket
import struct
from collections.abc import Iterator

import h2.config
import h2.connection
import h2.errors
import h2.events
import pytest

from egresskit import grpcguide as g
from egresskit import guide
from egresskit.cluster.local import LocalCluster
from egresskit.grpcproto import ECHO_UNARY
from egresskit.mesh.proxy import ProxyConfig
from tests.contract import eventually, value

pytestmark = pytest.mark.slow

NS = guide.NAMESPACE_NAME
FAST = ProxyConfig(
    detect_timeout=0.3,
    request_head_timeout=0.5,
    idle_timeout=0.5,
    connect_timeout=1.0,
    response_timeout=1.0,
    max_header_bytes=4096,
)
#: Bound on every read a test makes: a proxy that hangs fails the test, it does not stall it.
WAIT = 5.0
FUZZ_CASES = 300


@pytest.fixture
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster(proxy_config=FAST) as c:
        c.apply([guide.NAMESPACE, g.EGRESS_NETWORK_DENY, guide.CLIENT_POD, g.TEAM_HEADER_ROUTE])
        yield c


def grpc_port(cluster: LocalCluster) -> tuple[str, int]:
    """The client pod's proxy listener for grpc.example.com:50051 (what its packets hit)."""
    # The facade's own lookup, as LocalCluster.grpc uses it (no public address API).
    connect_to = cluster._connect_to(cluster._pod("client", NS), f"http://{g.GRPC_TARGET}", NS)
    host, port = connect_to.rsplit(":", 2)[-2:]
    return host, int(port)


#: The request head of an Echo/Unary call the team-header route allows.
CALL_HEADERS = [
    (":method", "POST"),
    (":scheme", "http"),
    (":path", ECHO_UNARY.path),
    (":authority", g.GRPC_TARGET),
    ("content-type", "application/grpc"),
    ("te", "trailers"),
    ("x-team", "blue"),
]


def call_bytes(
    *,
    extra_headers: tuple[tuple[str, str], ...] = (),
    conn: h2.connection.H2Connection | None = None,
    message: str = "fuzz",
) -> bytes:
    """A whole, valid unary call to Echo/Unary as a client sends it (preface included);
    pass ``conn`` to keep the client state for reading the answer."""
    conn = conn or h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    conn.send_headers(1, [*CALL_HEADERS, *extra_headers])
    conn.send_data(1, echo_message(message), end_stream=True)
    return conn.data_to_send()


def echo_message(message: str) -> bytes:
    """One length-prefixed gRPC message (uncompressed) of an Echo/Unary request."""
    body = ECHO_UNARY.encode_request({"message": message})
    return b"\x00" + struct.pack(">I", len(body)) + body


def exchange(address: tuple[str, int], data: bytes, *, close: bool = True) -> bytes:
    """Send ``data`` (then EOF if ``close``); everything received until the proxy closes."""
    received = bytearray()
    with socket.create_connection(address, timeout=WAIT) as sock:
        try:
            sock.sendall(data)
            if close:
                sock.shutdown(socket.SHUT_WR)
            while chunk := sock.recv(65536):
                received += chunk
        except (ConnectionResetError, BrokenPipeError):
            pass
    return bytes(received)


def server_events(
    data: bytes, conn: h2.connection.H2Connection | None = None
) -> list[h2.events.Event]:
    """What a client's h2 makes of the proxy's bytes (``conn``: the client that sent)."""
    if conn is None:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
    return list(conn.receive_data(data))


def still_serves(cluster: LocalCluster) -> None:
    result = g.grpc_call(cluster, g.ECHO, data=[{"message": "after"}], headers=["x-team: blue"])
    assert result.ok and result.responses == [{"message": "after"}]


def test_a_valid_call_from_raw_bytes_is_answered(cluster: LocalCluster) -> None:
    # The fuzz's seed input works: the proxy answers it (client waits for the trailers,
    # then the EOF ends the connection).
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    data = call_bytes(conn=client)
    events = server_events(exchange(grpc_port(cluster), data, close=False), client)
    trailers = [e for e in events if isinstance(e, h2.events.TrailersReceived)]
    assert trailers and (b"grpc-status", b"0") in list(trailers[0].headers or [])


def test_header_list_over_the_bound_closes_the_connection(
    cluster: LocalCluster, caplog: pytest.LogCaptureFixture
) -> None:
    big = call_bytes(extra_headers=(("x-big", "a" * 8000),))
    events = server_events(exchange(grpc_port(cluster), big))
    closed = [e for e in events if isinstance(e, h2.events.ConnectionTerminated)]
    assert closed, "expected a GOAWAY for a header list over max_header_bytes"
    assert not any(isinstance(e, h2.events.ResponseReceived) for e in events)
    assert value(cluster, "outbound_grpc_route_request_statuses_total") == 0
    still_serves(cluster)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_frame_over_16_kib_is_a_connection_error(cluster: LocalCluster) -> None:
    preface = call_bytes()[:24]  # the client preface alone
    # A DATA frame header announcing 20000 bytes on stream 1 (RFC 9113 section 4.2).
    frame = struct.pack(">I", 20000)[1:] + b"\x00\x00" + struct.pack(">I", 1)
    events = server_events(exchange(grpc_port(cluster), preface + frame + b"x" * 20000))
    closed = [e for e in events if isinstance(e, h2.events.ConnectionTerminated)]
    assert closed and closed[0].error_code is not None and closed[0].error_code != 0
    still_serves(cluster)


def test_a_silent_client_is_closed_after_the_head_timeout(cluster: LocalCluster) -> None:
    with socket.create_connection(grpc_port(cluster), timeout=WAIT) as sock:
        received = bytearray()
        while chunk := sock.recv(65536):
            received += chunk
    events = server_events(bytes(received))
    assert any(isinstance(e, h2.events.ConnectionTerminated) for e in events)


def test_mutation_fuzz_never_hangs_or_logs_a_traceback(
    cluster: LocalCluster, caplog: pytest.LogCaptureFixture
) -> None:
    seed = call_bytes()
    address = grpc_port(cluster)
    rng = random.Random(14)
    for case in range(FUZZ_CASES):
        data = bytearray(seed)
        for _ in range(rng.randint(1, 4)):
            kind = rng.randrange(4)
            # Mostly past the 24-byte preface, so h2 gets to parse frames.
            at = rng.randrange(len(data)) if rng.random() < 0.2 else rng.randrange(24, len(data))
            if kind == 0:
                data[at] = rng.randrange(256)
            elif kind == 1:
                del data[at : at + rng.randint(1, 16)]
            elif kind == 2:
                data[at:at] = rng.randbytes(rng.randint(1, 32))
            else:
                data[at:at] = data[at : at + rng.randint(1, 64)]
        try:
            exchange(address, bytes(data))
        except TimeoutError:
            pytest.fail(f"fuzz case {case}: the proxy neither answered nor closed in {WAIT}s")
    still_serves(cluster)
    # A mutated message the policy allowed reaches the simulated gRPC site, whose grpcio
    # server logs its own "Exception deserializing message!": that is the upstream judging
    # bad bytes, not a fault of the proxy, so only the kit's loggers are held to no errors.
    errors = [
        r for r in caplog.records if r.levelno >= logging.ERROR and not r.name.startswith("grpc.")
    ]
    assert not errors, f"tracebacks logged: {[r.getMessage() for r in errors]}"


def test_concurrent_and_large_calls_share_one_connection(cluster: LocalCluster) -> None:
    # One grpcio channel (one HTTP/2 connection) to the proxy: 20 calls in flight at once
    # are multiplexed, and a 1 MiB message each way needs many WINDOW_UPDATEs (the default
    # window is 64 KiB), so flow control works end to end.
    import grpc

    host, port = grpc_port(cluster)
    options = [("grpc.default_authority", g.GRPC_TARGET), ("grpc.enable_http_proxy", 0)]
    with grpc.insecure_channel(f"{host}:{port}", options=options) as channel:
        stub = channel.unary_unary(ECHO_UNARY.path)
        metadata = [("x-team", "blue")]
        futures = [
            stub.future(
                ECHO_UNARY.encode_request({"message": f"m{i}"}), metadata=metadata, timeout=WAIT
            )
            for i in range(20)
        ]
        answers = [ECHO_UNARY.decode_response(f.result()) for f in futures]
        big = "x" * (1 << 20)
        echoed = ECHO_UNARY.decode_response(
            stub(ECHO_UNARY.encode_request({"message": big}), metadata=metadata, timeout=WAIT)
        )
    assert answers == [{"message": f"m{i}"} for i in range(20)]
    assert echoed == {"message": big}
    assert value(cluster, "outbound_grpc_route_request_statuses_total", grpc_status="OK") == 21


def test_mutated_calls_left_open_are_served_or_closed_in_bounds(
    cluster: LocalCluster, caplog: pytest.LogCaptureFixture
) -> None:
    # The clients keep their side open, so the proxy runs the streams (decides, forwards,
    # answers) and must then close each connection itself within its idle bound.
    from concurrent.futures import ThreadPoolExecutor

    seed = call_bytes()
    address = grpc_port(cluster)
    rng = random.Random(41)
    cases = []
    for _ in range(40):
        data = bytearray(seed)
        at = rng.randrange(24, len(data))
        data[at] = rng.randrange(256)
        cases.append(bytes(data))
    with ThreadPoolExecutor(len(cases)) as pool:
        results = list(pool.map(lambda d: exchange(address, d, close=False), cases))
    assert len(results) == len(cases)  # every one ended: a hang would have raised TimeoutError
    still_serves(cluster)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_upstream_faults_are_answered_as_grpc_errors_and_counted() -> None:
    # A response head later than response_timeout: the proxy answers the call itself
    # (grpc-status 14) and counts RESPONSE_HEADERS_TIMEOUT; a call the client resets is
    # CANCEL; a redirect to a Service nothing serves is REFUSED.
    config = dataclasses.replace(FAST, response_timeout=0.3, idle_timeout=5.0)
    with LocalCluster(proxy_config=config) as cluster:
        service_only = g.INTERNAL_GRPC.split("---")[0]
        cluster.apply(
            [guide.NAMESPACE, g.EGRESS_NETWORK_DENY, guide.CLIENT_POD, g.TEAM_HEADER_ROUTE]
        )
        blue = ["x-team: blue"]
        late = g.grpc_call(cluster, g.ECHO, data=[{"message": "sleep:1500"}], headers=blue)
        assert late.code == "UNAVAILABLE" and late.details.startswith("response headers timeout")
        statuses = "outbound_grpc_route_request_statuses_total"
        assert (
            value(cluster, statuses, error="RESPONSE_HEADERS_TIMEOUT", grpc_status="UNKNOWN") == 1
        )

        # A client that resets its call right after sending it (RST_STREAM CANCEL, on
        # the same connection, so the proxy sees the call first).
        client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        data = call_bytes(conn=client, message="sleep:1000")
        client.reset_stream(1, h2.errors.ErrorCodes.CANCEL)
        with socket.create_connection(grpc_port(cluster), timeout=WAIT) as sock:
            sock.sendall(data + client.data_to_send())
            assert eventually(cluster, statuses, 1, error="CANCEL") == 1

        cluster.apply([service_only, g.BB_REDIRECT_ROUTE])
        refused = g.grpc_call(cluster, g.BB)
        assert refused.code == "UNAVAILABLE"
        assert value(cluster, statuses, route_name="grpc-bb-internal", error="REFUSED") == 1


def test_a_client_that_closes_mid_call_is_counted_as_cancel(cluster: LocalCluster) -> None:
    # The whole call is sent, then the TCP connection ends before the (late) answer.
    data = call_bytes(message="sleep:1000")
    assert exchange(grpc_port(cluster), data) is not None
    statuses = "outbound_grpc_route_request_statuses_total"
    assert eventually(cluster, statuses, 1, error="CANCEL") == 1
    still_serves(cluster)
