"""GRPCRoute and TCPRoute with real traffic through the local proxy (egresskit issue 14).

Real parts only: the gRPC client is ``python -m egresskit.grpcclient`` (grpcio) run as a
separate process "in" the client pod, the upstream is a grpcio server (the simulated
internet's site, or bb's gRPC terminus in the cluster), TCP is real bytes over sockets,
and the HTTP/1 check uses the real curl. Expectations cite docs/facts/linkerd-egress.md.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from egresskit import grpcguide as g
from egresskit import guide
from egresskit.cluster.local import LocalCluster
from egresskit.errors import VerificationFailed
from tests.contract import eventually, value

pytestmark = pytest.mark.slow

NS = guide.NAMESPACE_NAME
GRPC_STATUSES = "outbound_grpc_route_request_statuses_total"
GRPC_BACKEND = "outbound_grpc_route_backend_response_statuses_total"
HTTP_STATUSES = "outbound_http_route_request_statuses_total"
TCP_OPEN = "outbound_tcp_route_open_total"
TCP_CLOSE = "outbound_tcp_route_close_total"


@pytest.fixture
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster() as c:
        c.apply([guide.NAMESPACE, g.EGRESS_NETWORK_DENY, guide.CLIENT_POD])
        yield c


def test_grpc_without_grpcroute_takes_the_http_routes(cluster: LocalCluster) -> None:
    # No GRPCRoute on 50051: the port is HTTP-detected; the gRPC client's HTTP/2 takes
    # http-egress-*, and the 403 deny reaches a gRPC client as FAILED_PRECONDITION (spec 3).
    denied = g.grpc_call(cluster, g.SAY_HELLO, data=[{"name": "x"}])
    assert (denied.code, denied.details) == ("FAILED_PRECONDITION", "traffic not allowed")
    assert value(cluster, HTTP_STATUSES, route_name="http-egress-deny", http_status="403") == 1
    cluster.patch(
        "egressnetwork",
        guide.EGRESS_NETWORK_NAME,
        {"spec": {"trafficPolicy": "Allow"}},
        namespace=NS,
    )
    allowed = g.grpc_call(cluster, g.SAY_HELLO, data=[{"name": "x"}])
    assert allowed.ok and allowed.responses == [{"message": "Hello, x!"}]
    assert value(cluster, HTTP_STATUSES, route_name="http-egress-allow", http_status="200") == 1
    assert value(cluster, GRPC_STATUSES) == 0


def test_grpcroute_method_match_allows_and_default_route_denies(cluster: LocalCluster) -> None:
    cluster.apply(g.GREETER_ROUTE)
    hello = g.grpc_call(cluster, g.SAY_HELLO, data=[{"name": "learner"}])
    assert hello.ok and hello.responses == [{"message": "Hello, learner!"}]
    # The answer came from the simulated internet's gRPC site (its initial metadata).
    assert dict(hello.initial_metadata)["x-simulated-internet"].startswith("egresskit")
    echo = g.grpc_call(cluster, g.ECHO, data=[{"message": "x"}])
    # Linkerd's deny for gRPC: grpc-status 7 with "traffic not allowed" (spec 3).
    assert (echo.code, echo.code_number, echo.details) == (
        "PERMISSION_DENIED",
        7,
        "traffic not allowed",
    )
    route = {"route_kind": "GRPCRoute", "route_name": "grpc-greeter", "parent_port": "50051"}
    assert (
        value(cluster, GRPC_STATUSES, grpc_status="OK", hostname="grpc.example.com", **route) == 1
    )
    assert (
        value(cluster, GRPC_BACKEND, backend_kind="EgressNetwork", backend_port="50051", **route)
        == 1
    )
    deny = {"route_kind": "default", "route_name": "grpc-egress-deny"}
    assert value(cluster, GRPC_STATUSES, grpc_status="PERMISSION_DENIED", error="", **deny) == 1
    # The deny is a route-level filter: no backend series for it (spec 6.2).
    assert value(cluster, GRPC_BACKEND, **deny) == 0
    assert value(cluster, HTTP_STATUSES) == 0


def test_grpcroute_header_match(cluster: LocalCluster) -> None:
    cluster.apply(g.TEAM_HEADER_ROUTE)
    blue = g.grpc_call(cluster, g.ECHO, data=[{"message": "hi"}], headers=["x-team: blue"])
    red = g.grpc_call(cluster, g.ECHO, data=[{"message": "hi"}], headers=["x-team: red"])
    assert blue.ok and blue.responses == [{"message": "hi"}]
    assert red.code == "PERMISSION_DENIED"
    assert value(cluster, GRPC_STATUSES, route_name="grpc-echo-blue-team", grpc_status="OK") == 1
    assert value(cluster, GRPC_STATUSES, route_name="grpc-egress-deny") == 1


def test_grpcroute_redirects_to_an_in_cluster_grpc_service(cluster: LocalCluster) -> None:
    cluster.apply([g.INTERNAL_GRPC, g.BB_REDIRECT_ROUTE])
    result = g.grpc_call(cluster, g.BB)
    assert result.ok
    assert result.responses[0]["payload"] == "answered inside the cluster"
    assert result.responses[0]["requestUID"].startswith("in:grpc-sid:terminus-grpc:9090-h1:-1-")
    assert (
        value(
            cluster,
            GRPC_BACKEND,
            route_name="grpc-bb-internal",
            backend_kind="Service",
            backend_name="internal-grpc",
            backend_port="9090",
            grpc_status="OK",
        )
        == 1
    )
    # Without the route the call goes out, where nobody serves bb's method... but the
    # EgressNetwork denies it first (no other route on the port matches).
    cluster.delete("grpcroute", "grpc-bb-internal", namespace=NS)
    cluster.apply(g.GREETER_ROUTE)
    assert g.grpc_call(cluster, g.BB).code == "PERMISSION_DENIED"


def test_streaming_both_ways_and_upstream_statuses(cluster: LocalCluster) -> None:
    cluster.apply(g.TEAM_HEADER_ROUTE)
    blue = ["x-team: blue"]
    server = g.grpc_call(
        cluster, "egresskit.echo.Echo/ServerStream", data=[{"message": "s"}], headers=blue
    )
    client = g.grpc_call(
        cluster,
        "egresskit.echo.Echo/ClientStream",
        data=[{"message": "a"}, {"message": "b"}],
        headers=blue,
    )
    bidi = g.grpc_call(
        cluster, "egresskit.echo.Echo/Bidi", data=[{"message": m} for m in "xyz"], headers=blue
    )
    failing = g.grpc_call(cluster, g.ECHO, data=[{"message": "status:NOT_FOUND"}], headers=blue)
    assert server.responses == [{"message": f"s #{i}"} for i in (1, 2, 3)]
    assert client.responses == [{"message": "a b"}]
    assert bidi.responses == [{"message": m} for m in "xyz"]
    assert failing.code == "NOT_FOUND"
    # The upstream's status, from its trailers, is what the proxy records (spec 6.2).
    assert value(cluster, GRPC_STATUSES, route_name="grpc-echo-blue-team", grpc_status="OK") == 3
    assert (
        value(cluster, GRPC_STATUSES, route_name="grpc-echo-blue-team", grpc_status="NOT_FOUND")
        == 1
    )


def test_http1_on_a_grpc_port_fails(cluster: LocalCluster) -> None:
    # A GRPCRoute makes the port HTTP/2 without detection (spec 5.2): HTTP/1 fails the
    # HTTP/2 handshake, nothing is answered by a route, nothing is counted.
    cluster.apply(g.GREETER_ROUTE)
    result = cluster.curl("-s", "-m", "10", f"http://{g.GRPC_TARGET}/", pod="client", namespace=NS)
    assert result.exit_code != 0 and result.http_status is None
    assert value(cluster, GRPC_STATUSES) == 0 and value(cluster, HTTP_STATUSES) == 0


def test_plain_http2_deny_on_a_detect_port(cluster: LocalCluster) -> None:
    # HTTP/2 prior knowledge on port 80 is detected and takes the HTTP routes: 403 with
    # l5d-proxy-error, as for HTTP/1 (spec 3).
    result = cluster.curl(
        "-s", "-i", "--http2-prior-knowledge", "http://httpbin.org/get", pod="client", namespace=NS
    )
    assert result.http_status == 403
    assert "l5d-proxy-error: traffic not allowed" in result.stdout
    assert result.stdout.startswith("HTTP/2 403")
    assert value(cluster, HTTP_STATUSES, route_name="http-egress-deny", http_status="403") == 1


def test_tcproute_allows_then_redirects_real_bytes(cluster: LocalCluster) -> None:
    cluster.apply(guide.INTERNAL_EGRESS)
    deny = {"route_name": "tcp-egress-deny", "parent_port": "6379", "target_port": "6379"}
    # 6379 is opaque by default; under Deny the connection is accepted, then closed.
    assert g.tcp_call(cluster, b"PING\r\nQUIT\r\n") == b""
    assert eventually(cluster, TCP_CLOSE, 1, error="forbidden", **deny) == 1
    cluster.apply(g.TCP_ALLOW_ROUTE)
    assert (
        g.tcp_call(cluster, b"PING\r\nECHO egress\r\nQUIT\r\n") == b"+PONG\r\n+egress\r\n+BYE\r\n"
    )
    allow = {"route_kind": "TCPRoute", "route_name": "tcp-6379"}
    assert value(cluster, TCP_OPEN, **allow) == 1
    assert eventually(cluster, TCP_CLOSE, 1, error="", **allow) == 1
    # Only the first TCPRoute is used (spec 4.5): replace it with the redirect.
    cluster.delete("tcproute", "tcp-6379", namespace=NS)
    cluster.apply(g.TCP_REDIRECT_ROUTE)
    answer = g.tcp_call(cluster, b"GET / HTTP/1.0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 OK") and b"You cannot go there right now" in answer
    assert value(cluster, TCP_OPEN, route_name="tcp-6379-internal") == 1


def test_expect_grpc_prints_pass_or_raises_fail(cluster: LocalCluster) -> None:
    cluster.apply(g.GREETER_ROUTE)
    lines: list[str] = []
    result = g.grpc_call(cluster, g.ECHO, data=[{"message": "x"}])
    g.expect_grpc("Echo is denied", result, "PERMISSION_DENIED", out=lines.append)
    assert lines == [
        "PASS Echo is denied: expected grpc-status PERMISSION_DENIED, saw PERMISSION_DENIED"
    ]
    with pytest.raises(
        VerificationFailed,
        match=r"^FAIL Echo is allowed: expected grpc-status OK, "
        r"saw PERMISSION_DENIED \(traffic not allowed\)$",
    ):
        g.expect_grpc("Echo is allowed", result, "OK", out=lines.append)


def test_expect_count_passes_on_the_exact_count_and_fails_naming_what_it_saw(
    cluster: LocalCluster,
) -> None:
    assert g.tcp_call(cluster, b"PING\r\n") == b""  # denied: closed by the proxy
    lines: list[str] = []
    labels = {"route_name": "tcp-egress-deny", "error": "forbidden"}
    g.expect_count(cluster, TCP_CLOSE, 1, out=lines.append, **labels)
    assert lines == [
        f'PASS {TCP_CLOSE}{{route_name="tcp-egress-deny", error="forbidden"}}: expected 1, saw 1'
    ]
    with pytest.raises(VerificationFailed, match=r"expected 2, saw 1 after waiting 0.2s$"):
        g.expect_count(cluster, TCP_CLOSE, 2, out=lines.append, within=0.2, **labels)


@pytest.mark.parametrize(
    ("answer", "text"),
    [
        (
            b'HTTP/1.1 200 OK\r\n\r\n{"requestUID":"in:1","payload":"You cannot go there"}',
            "You cannot go there",
        ),
        (b"HTTP/1.1 200 OK\r\n\r\nnot json", "not json"),
        (b'HTTP/1.1 200 OK\r\n\r\n["a list"]', '["a list"]'),
        (b"", ""),
    ],
)
def test_http_body_text_shows_the_payload_not_the_uid(answer: bytes, text: str) -> None:
    assert g.http_body_text(answer) == text


def test_predictions_match_what_the_wire_shows(cluster: LocalCluster) -> None:
    # The engine's prediction (grpcguide.predict) and the real call agree, route for route.
    cluster.apply([g.GREETER_ROUTE, g.TEAM_HEADER_ROUTE])
    cases = [
        (g.SAY_HELLO, [], "grpc-greeter", "OK"),
        (g.ECHO, [], "grpc-egress-deny", "PERMISSION_DENIED"),
        (g.ECHO, ["x-team: blue"], "grpc-echo-blue-team", "OK"),
    ]
    for method, headers, route, code in cases:
        decision = g.predict(cluster.objects(), g.GRPC_TARGET, method, headers=headers)
        assert decision.route is not None and decision.route.name == route
        assert g.grpc_call(cluster, method, headers=headers).code == code
        assert value(cluster, GRPC_STATUSES, route_name=route, grpc_status=code) >= 1
    tcp = g.predict(cluster.objects(), g.TCP_TARGET)
    assert (tcp.outcome, tcp.error) == ("forbidden", "forbidden")


def test_header_modifiers_on_http2(cluster: LocalCluster) -> None:
    # GRPCRoute: RequestHeaderModifier reaches the upstream. (Linkerd leaves out a
    # GRPCRoute with a ResponseHeaderModifier: the engine knows, see its reasons.)
    cluster.apply(
        g.TEAM_HEADER_ROUTE.replace(
            "        value: blue\n",
            "        value: blue\n"
            "    filters:\n"
            "    - type: RequestHeaderModifier\n"
            "      requestHeaderModifier:\n"
            "        set:\n"
            "        - name: x-via\n"
            "          value: egress-route\n",
        )
    )
    result = g.grpc_call(cluster, g.ECHO, data=[{"message": "m"}], headers=["x-team: blue"])
    assert result.ok
    metadata = dict(result.initial_metadata)
    assert (metadata["x-echo-x-via"], metadata["x-echo-x-team"]) == ("egress-route", "blue")
    # An HTTPRoute on a port without GRPCRoute takes gRPC's HTTP/2 too (detect), and its
    # ResponseHeaderModifier edits the response the client sees.
    cluster.delete("grpcroute", "grpc-echo-blue-team", namespace=NS)
    cluster.apply(
        """\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: grpc-port-http
  namespace: egress-test
spec:
  parentRefs:
    - name: all-egress-traffic
      kind: EgressNetwork
      group: policy.linkerd.io
      namespace: egress-test
      port: 50051
  rules:
  - filters:
    - type: ResponseHeaderModifier
      responseHeaderModifier:
        add:
        - name: x-route
          value: grpc-port-http
"""
    )
    answered = g.grpc_call(cluster, g.ECHO, data=[{"message": "m"}])
    assert answered.ok and dict(answered.initial_metadata)["x-route"] == "grpc-port-http"
    assert value(cluster, HTTP_STATUSES, route_name="grpc-port-http", http_status="200") == 1
