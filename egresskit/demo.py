"""A short demonstration of the policy engine on the guide's manifests (``egresskit demo``).

Walks the guide's states and asks :func:`egresskit.explain` what Linkerd does with the
guide's requests in each, printing one line per request.
"""

from __future__ import annotations

from collections.abc import Callable

from egresskit import guide
from egresskit.explaining import explain

DENY_EN = guide.EGRESS_NETWORK.replace("trafficPolicy: Allow", "trafficPolicy: Deny")

#: "Similar to HTTP and TLS routes, we can use GRPCRoute and TCPRoute in a similar fashion"
#: (the guide's last sentence on restricting), as two small routes under Deny.
GRPC_AND_TCP_ROUTES = """\
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
---
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

STEPS: list[tuple[str, list[str], list[str]]] = [
    (
        "EgressNetwork Allow",
        [guide.EGRESS_NETWORK],
        ["http://httpbin.org/get", "https://httpbin.org/get"],
    ),
    ("trafficPolicy Deny", [DENY_EN], ["http://httpbin.org/get", "https://httpbin.org/get"]),
    (
        "+ HTTPRoute httpbin-get",
        [DENY_EN, guide.HTTPBIN_GET_ROUTE],
        ["http://httpbin.org/get", "http://httpbin.org/ip"],
    ),
    (
        "+ TLSRoute tls-egress",
        [DENY_EN, guide.HTTPBIN_GET_ROUTE, guide.TLS_EGRESS_ROUTE],
        ["https://httpbin.org/get", "https://github.com/"],
    ),
    (
        "redirect to internal-egress",
        [
            DENY_EN,
            guide.INTERNAL_EGRESS,
            guide.HTTPBIN_GET_ROUTE,
            guide.TLS_EGRESS_ROUTE_ALL,
            guide.UNENCRYPTED_HTTP_ROUTE,
        ],
        [
            "http://httpbin.org/get",
            "http://httpbin.org/ip",
            "http://google.com",
            "https://github.com/",
        ],
    ),
    (
        "+ GRPCRoute greeter, TCPRoute postgres",
        [DENY_EN, GRPC_AND_TCP_ROUTES],
        [
            "grpc://grpc.example.com:50051/helloworld.Greeter/SayHello",
            "grpc://grpc.example.com:50051/helloworld.Greeter/SayGoodbye",
            "tcp://db.example.com:5432",
            "tcp://db.example.com:6379",
        ],
    ),
]


def run(out: Callable[[str], None] = print) -> int:
    for title, docs, urls in STEPS:
        out(f"== {title}")
        for url in urls:
            d = explain([guide.NAMESPACE, *docs], url, namespace=guide.NAMESPACE_NAME)
            out(f"   {url:<60} {d.summary()}")
    return 0
