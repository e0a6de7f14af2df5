"""The guide's metric label sets (P + R, docs/facts/linkerd-egress.md 6.2), written out once for
the tests."""

from __future__ import annotations

GATEWAY_GROUP = "gateway.networking.k8s.io"


def route_labels(port: int | str, kind: str, name: str) -> dict[str, str]:
    """P + R for a route on ``egress-test/all-egress-traffic``: ``kind`` "default" for the
    synthesised routes, else a Gateway API route kind in ``egress-test``."""
    explicit = kind != "default"
    return {
        "parent_group": "policy.linkerd.io",
        "parent_kind": "EgressNetwork",
        "parent_namespace": "egress-test",
        "parent_name": "all-egress-traffic",
        "parent_port": str(port),
        "parent_section_name": "",
        "route_group": GATEWAY_GROUP if explicit else "",
        "route_kind": kind,
        "route_namespace": "egress-test" if explicit else "",
        "route_name": name,
    }
