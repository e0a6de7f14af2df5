"""The guide's expectations (docs/facts/linkerd-egress.md 8.5, G1-G12) at engine level.

Each row: the state of the guide, the request from egress-test/client, and what Linkerd
does: outcome, route, status, and the metric labels the guide shows.
"""

from __future__ import annotations

import pytest

from egresskit import guide
from egresskit.policy.decision import Decision
from egresskit.policy.snapshot import Snapshot
from tests.enginekit import GITHUB_IP, HTTPBIN_IP, http, snapshot, tcp, tls
from tests.guide_labels import route_labels

GOOGLE_IP = "192.0.2.20"

DENY_EN = guide.EGRESS_NETWORK.replace("trafficPolicy: Allow", "trafficPolicy: Deny")


def state(step: str) -> Snapshot:
    base = [guide.NAMESPACE, guide.CLIENT_POD]
    return {
        "allow": lambda: snapshot(*base, guide.EGRESS_NETWORK),
        "deny": lambda: snapshot(*base, DENY_EN),
        "deny+get": lambda: snapshot(*base, DENY_EN, guide.HTTPBIN_GET_ROUTE),
        "deny+get+tls": lambda: snapshot(
            *base, DENY_EN, guide.HTTPBIN_GET_ROUTE, guide.TLS_EGRESS_ROUTE
        ),
        "final": lambda: snapshot(
            *base,
            DENY_EN,
            guide.INTERNAL_EGRESS,
            guide.HTTPBIN_GET_ROUTE,
            guide.TLS_EGRESS_ROUTE_ALL,
            guide.UNENCRYPTED_HTTP_ROUTE,
        ),
    }[step]()


def labels(d: Decision) -> dict[str, str]:
    return d.labels


def default_route(name: str, port: int = 80) -> dict[str, str]:
    return route_labels(port, "default", name)


def explicit(kind: str, name: str, port: int = 80) -> dict[str, str]:
    return route_labels(port, kind, name)


def test_g1_allow_http_takes_http_egress_allow() -> None:
    d = http(state("allow"), "/get")
    assert d.outcome == "allowed" and d.target == "original"
    assert d.labels == default_route("http-egress-allow")
    assert list(d.labels) == list(default_route("x")), "Linkerd's order"


def test_g2_allow_https_without_tlsroute_is_opaque_tcp_egress_allow() -> None:
    d = tls(state("allow"), "httpbin.org")
    assert (d.outcome, d.family, d.protocol) == ("allowed", "tcp", "detect")
    assert d.labels == default_route("tcp-egress-allow", 443)


def test_g3_deny_http_is_403_with_l5d_proxy_error() -> None:
    d = http(state("deny"), "/get")
    assert (d.outcome, d.http_status, d.error) == ("forbidden", 403, "")
    assert ("l5d-proxy-error", "traffic not allowed") in d.response_headers
    assert d.labels == default_route("http-egress-deny")
    assert d.backend is None, "the deny filter is route-level: no backend series"


def test_g4_deny_https_closes_on_tcp_egress_deny() -> None:
    d = tls(state("deny"), "httpbin.org")
    assert (d.outcome, d.family, d.error) == ("forbidden", "tcp", "forbidden")
    assert d.labels == default_route("tcp-egress-deny", 443)


def test_g5_httpbin_get_route_allows_get() -> None:
    d = http(state("deny+get"), "/get")
    assert (d.outcome, d.target) == ("allowed", "original")
    assert d.labels == explicit("HTTPRoute", "httpbin-get")
    assert d.backend_labels == {
        "backend_group": "policy.linkerd.io",
        "backend_kind": "EgressNetwork",
        "backend_namespace": "egress-test",
        "backend_name": "all-egress-traffic",
        "backend_port": "80",
        "backend_section_name": "",
    }


@pytest.mark.parametrize("path", ["/ip", "/getx", "/", "/headers"])
def test_g6_other_paths_fall_through_to_http_egress_deny(path: str) -> None:
    d = http(state("deny+get"), path)
    assert (d.outcome, d.http_status) == ("forbidden", 403)
    assert d.labels["route_name"] == "http-egress-deny"


@pytest.mark.parametrize("path", ["/get", "/get/", "/get/x", "/get?show_env=1"])
def test_g6_prefix_is_segment_aware(path: str) -> None:
    assert http(state("deny+get"), path).labels["route_name"] == "httpbin-get"


def test_g7_tls_route_allows_httpbin_by_sni() -> None:
    d = tls(state("deny+get+tls"), "httpbin.org")
    assert (d.outcome, d.family, d.protocol) == ("allowed", "tls", "tls")
    assert d.labels == explicit("TLSRoute", "tls-egress", 443)


def test_g8_tls_to_github_is_closed_by_tls_egress_deny() -> None:
    d = tls(state("deny+get+tls"), "github.com", ip=GITHUB_IP)
    assert (d.outcome, d.error) == ("forbidden", "forbidden")
    assert d.labels == default_route("tls-egress-deny", 443)


def test_g8_plaintext_on_a_tls_port_fails_without_sni() -> None:
    d = tcp(state("deny+get+tls"), port=443)
    assert d.outcome == "failed" and "SNI" in d.reason


def test_g9_port_80_is_unaffected_by_the_tls_route() -> None:
    d = http(state("deny+get+tls"), "/", host="github.com", ip=GITHUB_IP)
    assert (d.outcome, d.http_status) == ("forbidden", 403)
    assert d.labels["route_name"] == "http-egress-deny"


def test_g10_final_get_goes_to_httpbin() -> None:
    d = http(state("final"), "/get")
    assert (d.outcome, d.target) == ("allowed", "original")
    assert d.labels["route_name"] == "httpbin-get"


@pytest.mark.parametrize(
    ("host", "ip", "path"),
    [("httpbin.org", HTTPBIN_IP, "/ip"), ("google.com", GOOGLE_IP, "/")],
    ids=["httpbin-ip", "google"],
)
def test_g11_other_plaintext_is_redirected_to_internal_egress(
    host: str, ip: str, path: str
) -> None:
    d = http(state("final"), path, host=host, ip=ip)
    assert (d.outcome, d.target) == ("redirected", "service")
    assert d.labels == explicit("HTTPRoute", "unencrypted-http")
    assert d.backend_labels["backend_kind"] == "Service"
    assert d.backend_labels["backend_name"] == "internal-egress"
    assert d.backend_labels["backend_group"] == "core"
    assert d.backend_labels["backend_port"] == "80"


def test_g11_get_on_any_host_is_allowed_because_httpbin_get_has_no_hostnames() -> None:
    # The reviewer's finding: /get is allowed on every host, not only httpbin.org.
    d = http(state("final"), "/get", host="google.com", ip=GOOGLE_IP)
    assert (d.outcome, d.labels["route_name"]) == ("allowed", "httpbin-get")


@pytest.mark.parametrize("sni", ["httpbin.org", "github.com", "anything.example"])
def test_g12_any_https_goes_through_the_hostname_less_tls_route(sni: str) -> None:
    d = tls(state("final"), sni, ip=GITHUB_IP)
    assert (d.outcome, d.labels["route_name"]) == ("allowed", "tls-egress")


def test_port_80_never_reaches_http_egress_deny_in_the_final_state() -> None:
    for path in ["/", "/ip", "/status/418", "/anything"]:
        assert http(state("final"), path).labels["route_name"] != "http-egress-deny"
