"""Two HTTP/2 bounds the reviewer found missing, driven with the ``h2`` library as client
against a real :class:`LocalCluster` proxy on its gRPC port.

* Rapid reset (CVE-2023-44487): HEADERS then RST_STREAM, over and over, made the proxy
  judge and open an upstream stream each time; now the connection gets
  GOAWAY(ENHANCE_YOUR_CALM) past ``MAX_RESETS`` (egresskit.mesh.http2).
* An upstream sending 1xx responses forever re-armed ``response_timeout`` with each one;
  now one bound covers the whole response head.
"""

from __future__ import annotations

import dataclasses
import socket
import threading
from collections.abc import Iterator

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import pytest

from egresskit import grpcguide as g
from egresskit import guide
from egresskit.cluster.local import LocalCluster
from egresskit.mesh.http2 import MAX_RESETS
from tests.contract import value
from tests.test_http2_faults import (
    CALL_HEADERS,
    FAST,
    WAIT,
    echo_message,
    exchange,
    grpc_port,
    server_events,
    still_serves,
)

NS = guide.NAMESPACE_NAME
STATUSES = "outbound_grpc_route_request_statuses_total"


def reset_calls(client: h2.connection.H2Connection, n: int) -> None:
    """Open ``n`` calls and cancel each at once (RST_STREAM right behind its HEADERS)."""
    for _ in range(n):
        stream_id = client.get_next_available_stream_id()
        client.send_headers(stream_id, CALL_HEADERS)
        client.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)


@pytest.fixture
def cluster() -> Iterator[LocalCluster]:
    # idle_timeout well above what the test takes: the only GOAWAY is the reset bound's.
    config = dataclasses.replace(FAST, idle_timeout=5.0, request_head_timeout=5.0)
    with LocalCluster(proxy_config=config) as c:
        c.apply([guide.NAMESPACE, g.EGRESS_NETWORK_DENY, guide.CLIENT_POD, g.TEAM_HEADER_ROUTE])
        yield c


def test_rapid_reset_gets_goaway_enhance_your_calm(cluster: LocalCluster) -> None:
    n = 100
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    reset_calls(client, n)
    data = exchange(grpc_port(cluster), client.data_to_send(), close=False)
    events = server_events(data, client)
    goaways = [e for e in events if isinstance(e, h2.events.ConnectionTerminated)]
    assert [e.error_code for e in goaways] == [h2.errors.ErrorCodes.ENHANCE_YOUR_CALM]
    # Every stream the proxy judged and forwarded is counted once (as CANCEL): before the
    # bound, all n were.
    assert value(cluster, STATUSES) < n / 2
    still_serves(cluster)  # a new connection is served


def test_a_client_resetting_a_few_calls_keeps_its_connection(cluster: LocalCluster) -> None:
    # MAX_RESETS resets, then a whole call on the same connection: answered, no GOAWAY.
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    reset_calls(client, MAX_RESETS)
    last = client.get_next_available_stream_id()
    client.send_headers(last, CALL_HEADERS)
    client.send_data(last, echo_message("kept"), end_stream=True)
    events: list[h2.events.Event] = []
    with socket.create_connection(grpc_port(cluster), timeout=WAIT) as sock:
        sock.sendall(client.data_to_send())
        while not any(isinstance(e, h2.events.StreamEnded) and e.stream_id == last for e in events):
            chunk = sock.recv(65536)
            assert chunk, f"the proxy closed before answering stream {last}: {events}"
            events += client.receive_data(chunk)
            sock.sendall(client.data_to_send())
    assert not [e for e in events if isinstance(e, h2.events.ConnectionTerminated)]
    trailers = [e for e in events if isinstance(e, h2.events.TrailersReceived)]
    assert (b"grpc-status", b"0") in list(trailers[-1].headers or [])


class _EndlessContinue:
    """An HTTP/2 upstream that answers every request with ``100`` informational heads,
    one every 50 ms, and never a final response (until ``stop``)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.address = self.sock.getsockname()[:2]
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="endless-100", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.sock.settimeout(0.05)
        conns: list[tuple[socket.socket, h2.connection.H2Connection, list[int]]] = []
        while not self.stopped.is_set():
            try:
                raw, _ = self.sock.accept()
                raw.settimeout(0.05)
                conn = h2.connection.H2Connection(
                    h2.config.H2Configuration(client_side=False, header_encoding=None)
                )
                conn.initiate_connection()
                raw.sendall(conn.data_to_send())
                conns.append((raw, conn, []))
            except TimeoutError:
                pass
            for raw, conn, streams in conns:
                try:
                    data = raw.recv(65536)
                except TimeoutError:
                    data = None
                except OSError:
                    continue
                for event in conn.receive_data(data) if data else []:
                    if isinstance(event, h2.events.RequestReceived):
                        streams.append(event.stream_id)
                for stream_id in streams:
                    try:
                        conn.send_headers(stream_id, [(":status", "100")])
                    except h2.exceptions.H2Error:
                        continue
                try:
                    raw.sendall(conn.data_to_send())
                except OSError:
                    continue
        for raw, _, _ in conns:
            raw.close()

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(WAIT)
        self.sock.close()


def test_endless_1xx_responses_are_bounded_by_the_response_timeout() -> None:
    upstream = _EndlessContinue()
    config = dataclasses.replace(FAST, response_timeout=0.5, idle_timeout=5.0)
    try:
        with LocalCluster(
            proxy_config=config, upstreams={g.GRPC_TARGET: "{}:{}".format(*upstream.address)}
        ) as cluster:
            cluster.apply(
                [guide.NAMESPACE, g.EGRESS_NETWORK_DENY, guide.CLIENT_POD, g.TEAM_HEADER_ROUTE]
            )
            result = g.grpc_call(cluster, g.ECHO, data=[{"message": "x"}], headers=["x-team: blue"])
            assert result.code == "UNAVAILABLE", result
            assert result.details.startswith("response headers timeout"), result
            assert value(cluster, STATUSES, error="RESPONSE_HEADERS_TIMEOUT") == 1
    finally:
        upstream.stop()
    assert not upstream.thread.is_alive()
