"""``explain`` takes every protocol the engine decides and says why in plain words
(issue 14 item 5, issue 10 item 2)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from egresskit import explain, guide
from egresskit.errors import PolicyError

DENY = guide.EGRESS_NETWORK.replace("trafficPolicy: Allow", "trafficPolicy: Deny")
NS = guide.NAMESPACE_NAME

GRPC_ROUTE = """
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: greeter, namespace: egress-test}
spec:
  hostnames: [grpc.example.com]
  parentRefs:
  - {name: all-egress-traffic, kind: EgressNetwork, group: policy.linkerd.io, port: 50051}
  rules:
  - matches:
    - method: {service: helloworld.Greeter, method: SayHello}
      headers: [{name: x-team, value: blue}]
"""

TCP_ROUTE = """
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: postgres, namespace: egress-test}
spec:
  parentRefs:
  - {name: all-egress-traffic, kind: EgressNetwork, group: policy.linkerd.io, port: 5432}
  rules:
  - backendRefs:
    - {name: all-egress-traffic, kind: EgressNetwork, group: policy.linkerd.io, port: 5432}
"""


def ex(url: str, *docs: str, **kw: Any) -> Any:
    return explain([guide.NAMESPACE, DENY, *docs], url, namespace=NS, **kw)


@pytest.mark.parametrize(
    ("url", "headers", "outcome", "route", "sees"),
    [
        (
            "grpc://grpc.example.com:50051/helloworld.Greeter/SayHello",
            {"x-team": "blue"},
            "allowed",
            "greeter",
            "the destination's own answer",
        ),
        (
            "grpc://grpc.example.com:50051/helloworld.Greeter/SayHello",
            {"x-team": "red"},
            "forbidden",
            "grpc-egress-deny",
            "grpc-status PERMISSION_DENIED",
        ),
        (
            "grpc://grpc.example.com:50051/helloworld.Greeter/SayGoodbye",
            {"x-team": "blue"},
            "forbidden",
            "grpc-egress-deny",
            "grpc-status PERMISSION_DENIED",
        ),
        ("tcp://db.example.com:5432", {}, "allowed", "postgres", "the destination's own answer"),
        ("tcp://db.example.com:6379", {}, "forbidden", "tcp-egress-deny", "closes the connection"),
    ],
    ids=[
        "grpc-method-and-header",
        "grpc-wrong-header",
        "grpc-wrong-method",
        "tcp-route",
        "tcp-deny",
    ],
)
def test_grpc_and_tcp_urls(
    url: str, headers: dict[str, str], outcome: str, route: str, sees: str
) -> None:
    d = ex(url, GRPC_ROUTE, TCP_ROUTE, headers=headers)
    assert (d.outcome, d.labels["route_name"]) == (outcome, route)
    assert sees in d.reasons[-1]


def test_grpc_metadata_and_call_are_in_the_first_reason() -> None:
    d = ex(
        "grpc://grpc.example.com:50051/helloworld.Greeter/SayHello",
        GRPC_ROUTE,
        headers={"x-team": "blue"},
    )
    assert d.family == "grpc"
    assert "gRPC call helloworld.Greeter/SayHello" in d.reasons[0]
    assert "metadata x-team: blue" in d.reasons[0]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("ftp://httpbin.org/", "expected a URL starting with http://, https://, grpc://, tcp://"),
        ("tcp://httpbin.org", "expected a port"),
        ("grpc://h.example.com:50051/not-a-call", "expected the call as /package.Service/Method"),
    ],
)
def test_bad_urls_say_what_was_expected(url: str, expected: str) -> None:
    with pytest.raises(PolicyError, match=re.escape(expected)):
        ex(url)


def test_reasoning_speaks_plainly() -> None:
    text = str(ex("http://httpbin.org/ip", guide.HTTPBIN_GET_ROUTE))
    assert "contains 192.0.2.10" in text
    for internal in ("host rank", "addresses)", "rule summary", "4272881670"):
        assert internal not in text
    assert "the client sees: HTTP 403 from the proxy itself" in text


def test_explicit_networks_are_named() -> None:
    en = DENY.replace(
        "trafficPolicy: Deny", "trafficPolicy: Deny\n  networks:\n  - cidr: 192.0.2.0/24"
    )
    d = explain([guide.NAMESPACE, en], "http://httpbin.org/", namespace=NS)
    assert any("contains 192.0.2.10 (in its network 192.0.2.0/24)" in r for r in d.reasons)


def test_explain_can_be_called_again_and_again() -> None:
    import egresskit.explaining  # noqa: F401  (the import that used to shadow the function)

    for _ in range(3):
        assert ex("https://httpbin.org/").outcome == "forbidden"
