"""Protocol per port, default routes, gRPC/TLS/TCP routes and backends (spec 3, 4, 5.2, 8.3)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.enginekit import (
    GITHUB_IP,
    egress_network,
    en_backend,
    http,
    route,
    service,
    snapshot,
    svc_backend,
    tcp,
    tls,
)

GOOGLE_IP = "192.0.2.20"


def grpc(
    snap: Any,
    path: str,
    *,
    headers: dict[str, str] | None = None,
    method: str = "POST",
    host: str = "httpbin.org",
) -> Any:
    return http(snap, path, method=method, headers=headers, version="2", grpc=True, host=host)


@pytest.mark.parametrize(
    ("routes", "port", "protocol"),
    [
        ([], 80, "detect"),
        ([("HTTPRoute", [{}])], 80, "detect"),
        ([("GRPCRoute", [{}])], 80, "grpc"),
        ([("TLSRoute", [{"backendRefs": [en_backend()]}])], 443, "tls"),
        ([("TCPRoute", [{"backendRefs": [en_backend()]}])], 443, "opaque"),
        ([("HTTPRoute", [{}])], 3306, "opaque"),
    ],
    ids=["none", "httproute", "grpcroute", "tlsroute", "tcproute", "opaque-port"],
)
def test_protocol_per_port(
    routes: list[tuple[str, list[dict[str, Any]]]], port: int, protocol: str
) -> None:
    docs = [egress_network()] + [
        route(k, f"r{i}", port=port, rules=r) for i, (k, r) in enumerate(routes)
    ]
    snap = snapshot(*docs)
    assert tcp(snap, port=port).protocol == protocol


def test_opaque_ports_annotation_replaces_the_default_list() -> None:
    snap = snapshot(
        egress_network(annotations={"config.linkerd.io/opaque-ports": "8000-8010,80"}),
        route("HTTPRoute", "r", rules=[{}]),
    )
    assert tcp(snap, port=80).protocol == "opaque"
    assert tcp(snap, port=3306).protocol == "detect"


@pytest.mark.parametrize(
    ("family", "policy", "name"),
    [
        ("http", "Allow", "http-egress-allow"),
        ("http", "Deny", "http-egress-deny"),
        ("tcp", "Allow", "tcp-egress-allow"),
        ("tcp", "Deny", "tcp-egress-deny"),
    ],
)
def test_default_route_names(family: str, policy: str, name: str) -> None:
    snap = snapshot(egress_network(policy=policy))
    d = http(snap, "/") if family == "http" else tcp(snap, port=5000)
    assert d.labels["route_name"] == name and d.labels["route_kind"] == "default"


# -- gRPC ------------------------------------------------------------------------------

SVC = "gateway_api_conformance.echo_basic.grpcecho.GrpcEcho"


def grpc_rule(method: str | None, to: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    m: dict[str, Any] = {}
    if method:
        m["method"] = {"service": SVC, "method": method}
    if headers:
        m["headers"] = [{"name": k, "value": v} for k, v in headers.items()]
    return {"matches": [m], "backendRefs": [svc_backend(to)]}


GRPC = snapshot(
    egress_network(policy="Deny"),
    service("gv1"),
    service("gv2"),
    route(
        "GRPCRoute", "exact-method", rules=[grpc_rule("Echo", "gv1"), grpc_rule("EchoTwo", "gv2")]
    ),
)


@pytest.mark.parametrize(
    ("case", "rpc", "expected"),
    [
        ("G-01", "Echo", "gv1"),
        ("G-02", "EchoTwo", "gv2"),
        ("G-03", "EchoThree", "grpc-egress-deny"),
    ],
)
def test_grpc_exact_method(case: str, rpc: str, expected: str) -> None:
    d = grpc(GRPC, f"/{SVC}/{rpc}")
    got = d.backend.name if d.target == "service" else d.labels["route_name"]
    assert got == expected


def test_grpc_deny_is_permission_denied_in_a_200() -> None:
    d = grpc(GRPC, f"/{SVC}/EchoThree")
    assert (d.outcome, d.http_status, d.grpc_status) == ("forbidden", 200, "PERMISSION_DENIED")
    assert ("grpc-status", "7") in d.response_headers


def test_grpc_needs_post_d16() -> None:
    assert grpc(GRPC, f"/{SVC}/Echo", method="GET").labels["route_name"] == "grpc-egress-deny"


def test_http1_on_a_grpc_port_fails() -> None:
    assert http(GRPC, f"/{SVC}/Echo").outcome == "failed"


def test_grpc_client_on_a_port_without_grpcroute_sees_failed_precondition() -> None:
    d = grpc(snapshot(egress_network(policy="Deny")), f"/{SVC}/Echo")
    assert (d.http_status, d.grpc_status) == (403, "FAILED_PRECONDITION")
    assert d.labels["route_name"] == "http-egress-deny"


def test_grpc_header_precedence_g06_g07() -> None:
    snap = snapshot(
        egress_network(),
        service("gv1"),
        service("gv2"),
        route(
            "GRPCRoute",
            "hdr",
            rules=[
                grpc_rule(None, "gv1", {"version": "one"}),
                grpc_rule(None, "gv2", {"version": "two"}),
                grpc_rule(None, "gv1", {"version": "two", "color": "orange"}),
                grpc_rule(None, "gv1", {"color": "blue"}),
            ],
        ),
    )
    assert (
        grpc(snap, f"/{SVC}/Echo", headers={"version": "two", "color": "orange"}).backend.name
        == "gv1"
    )
    assert (
        grpc(snap, f"/{SVC}/Echo", headers={"version": "two", "color": "blue"}).backend.name
        == "gv2"
    )


# -- TLS (T-09..T-11 without listeners; D19) ------------------------------------------------

TLS = snapshot(
    egress_network(policy="Deny"),
    service("tls-backend"),
    service("tls-backend-2"),
    route(
        "TLSRoute",
        "exact",
        port=443,
        hostnames=["abc.example.com"],
        rules=[{"backendRefs": [svc_backend("tls-backend")]}],
    ),
    route(
        "TLSRoute",
        "wild",
        port=443,
        hostnames=["*.com"],
        rules=[{"backendRefs": [svc_backend("tls-backend-2")]}],
    ),
)


@pytest.mark.parametrize(
    ("case", "sni", "expected"),
    [
        ("T-09", "abc.example.com", "tls-backend"),
        ("T-10", "other.example.com", "tls-backend-2"),
        ("T-11", "non.matching.org", "tls-egress-deny"),
    ],
)
def test_tls_sni_precedence(case: str, sni: str, expected: str) -> None:
    d = tls(TLS, sni)
    got = d.backend.name if d.target == "service" else d.labels["route_name"]
    assert got == expected


def test_tls_without_sni_fails() -> None:
    assert tls(TLS, None).outcome == "failed"


def test_tls_invalid_backend_closes_with_invalid_backend() -> None:
    snap = snapshot(
        egress_network(),
        route("TLSRoute", "t", port=443, rules=[{"backendRefs": [svc_backend("missing")]}]),
    )
    d = tls(snap, "x.org")
    assert (d.outcome, d.error) == ("invalid", "invalid_backend")


def test_hostname_less_tls_route_shadows_the_default() -> None:
    snap = snapshot(
        egress_network(policy="Deny"),
        route("TLSRoute", "t", port=443, rules=[{"backendRefs": [en_backend()]}]),
    )
    assert tls(snap, "anything.org").labels["route_name"] == "t"


# -- TCP ----------------------------------------------------------------------------------


def test_only_the_first_tcp_route_is_used_and_it_replaces_the_default() -> None:
    snap = snapshot(
        egress_network(policy="Deny"),
        service("web", 80),
        route(
            "TCPRoute",
            "b-second",
            port=443,
            created="2024-01-02T00:00:00Z",
            rules=[{"backendRefs": [svc_backend("web", 80)]}],
        ),
        route(
            "TCPRoute",
            "a-first",
            port=443,
            created="2024-01-01T00:00:00Z",
            rules=[{"backendRefs": [en_backend()]}],
        ),
    )
    d = tcp(snap, port=443)
    assert (d.outcome, d.labels["route_name"]) == ("allowed", "a-first")


def test_egress_network_backend_port_only_changes_the_label() -> None:
    snap = snapshot(
        egress_network(),
        route("TCPRoute", "t", port=443, rules=[{"backendRefs": [en_backend(port=8443)]}]),
    )
    d = tcp(snap, port=443)
    assert (d.target, d.backend_labels["backend_port"]) == ("original", "8443")


# -- backends (4.4) -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("backend", "outcome", "status"),
    [
        (en_backend(), "allowed", None),
        (en_backend("other"), "invalid", 500),
        (svc_backend("missing", 80), "invalid", 500),
        ({"group": "example.com", "kind": "Thing", "name": "x"}, "invalid", 500),
        (svc_backend("web", 80), "redirected", None),
    ],
    ids=["same-en", "other-en", "svc-missing", "unsupported-kind", "service"],
)
def test_backend_kinds(backend: dict[str, Any], outcome: str, status: int | None) -> None:
    snap = snapshot(
        egress_network(),
        egress_network("other", networks=[{"cidr": "203.0.113.0/24"}]),
        service("web", 80),
        route("HTTPRoute", "r", rules=[{"backendRefs": [backend]}]),
    )
    d = http(snap, "/")
    assert (d.outcome, d.http_status) == (outcome, status)


def test_weighted_backends_follow_the_pick() -> None:
    snap = snapshot(
        egress_network(),
        service("a", 80),
        service("b", 80),
        route(
            "HTTPRoute",
            "r",
            rules=[
                {
                    "backendRefs": [
                        {"name": "a", "port": 80, "weight": 1},
                        {"name": "b", "port": 80, "weight": 3},
                    ]
                }
            ],
        ),
    )
    from egresskit.policy.decision import HttpRequest
    from egresskit.policy.engine import decide

    def pick(p: float) -> str:
        d = decide(
            snap,
            HttpRequest(
                client_namespace="egress-test",
                dst_ip="192.0.2.10",
                dst_port=80,
                host="h",
                backend_pick=p,
            ),
        )
        assert d.backend is not None
        return d.backend.name

    assert [pick(p) for p in (0.0, 0.24, 0.25, 0.99)] == ["a", "a", "b", "b"]


# -- 8.3 end-to-end cases at engine level ------------------------------------------------------

PM = "192.0.2.40"


@pytest.mark.parametrize(
    ("case", "docs", "request_", "expected"),
    [
        ("E1", [], ("http", "postman-echo.com", "/get"), "allowed"),
        ("E2", ["deny"], ("http", "postman-echo.com", "/get"), "forbidden"),
        ("E3", [], ("tls", "postman-echo.com"), "allowed"),
        ("E4", ["deny"], ("tls", "postman-echo.com"), "forbidden"),
        ("E5-get", ["deny", "exact-get"], ("http", "postman-echo.com", "/get"), "allowed"),
        ("E5-ip", ["deny", "exact-get"], ("http", "postman-echo.com", "/ip"), "forbidden"),
        ("E6-ok", ["deny", "tls-pm"], ("tls", "postman-echo.com"), "allowed"),
        ("E6-google", ["deny", "tls-pm"], ("tls", "google.com"), "forbidden"),
        ("E7-tls", ["deny", "tcp443"], ("tls", "postman-echo.com"), "allowed"),
        ("E7-http", ["deny", "tcp443"], ("http", "postman-echo.com", "/get"), "forbidden"),
        ("E8-get", ["web", "get-to-web"], ("http", "postman-echo.com", "/get"), "redirected"),
        ("E8-ip", ["web", "get-to-web"], ("http", "postman-echo.com", "/ip"), "allowed"),
        ("E9-pm", ["web", "tls-to-web"], ("tls", "postman-echo.com"), "redirected"),
        ("E9-google", ["web", "tls-to-web"], ("tls", "google.com"), "allowed"),
        ("E10", ["web", "tcp80-to-web"], ("tcp80", "postman-echo.com"), "redirected"),
    ],
    ids=lambda v: v if isinstance(v, str) and v.startswith("E") else "",
)
def test_policy_test_e2e_cases(
    case: str, docs: list[str], request_: tuple[str, ...], expected: str
) -> None:
    parts: dict[str, Any] = {
        "exact-get": route(
            "HTTPRoute", "r", rules=[{"matches": [{"path": {"type": "Exact", "value": "/get"}}]}]
        ),
        "tls-pm": route(
            "TLSRoute",
            "t",
            port=443,
            hostnames=["postman-echo.com"],
            rules=[{"backendRefs": [en_backend()]}],
        ),
        "tcp443": route("TCPRoute", "t", port=443, rules=[{"backendRefs": [en_backend()]}]),
        "web": service("web", 80),
        "get-to-web": route(
            "HTTPRoute",
            "r",
            hostnames=["postman-echo.com"],
            rules=[
                {
                    "matches": [{"path": {"type": "Exact", "value": "/get"}}],
                    "backendRefs": [svc_backend("web", 80)],
                }
            ],
        ),
        "tls-to-web": route(
            "TLSRoute",
            "t",
            port=443,
            hostnames=["postman-echo.com"],
            rules=[{"backendRefs": [svc_backend("web", 80)]}],
        ),
        "tcp80-to-web": route(
            "TCPRoute", "t", port=80, rules=[{"backendRefs": [svc_backend("web", 80)]}]
        ),
    }
    en = egress_network(policy="Deny" if "deny" in docs else "Allow")
    snap = snapshot(en, *[parts[k] for k in docs if k != "deny"])
    kind, host = request_[0], request_[1]
    ip = {"postman-echo.com": PM, "google.com": GOOGLE_IP}.get(host, GITHUB_IP)
    if kind == "http":
        d = http(snap, request_[2], host=host, ip=ip)
    elif kind == "tls":
        d = tls(snap, host, ip=ip)
    else:
        d = tcp(snap, ip=ip, port=80)
    assert d.outcome == expected
