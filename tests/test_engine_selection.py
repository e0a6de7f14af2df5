"""Choosing ONE EgressNetwork (docs/facts/linkerd-egress.md 2.2-2.4), as tables."""

from __future__ import annotations

import pytest

from egresskit.policy.networks import host_count, parse_net
from tests.enginekit import egress_network, http, snapshot

T1 = "2024-01-01T00:00:00Z"
T2 = "2024-01-02T00:00:00Z"


def parent_of(*docs: dict, ip: str = "192.0.2.10", namespace: str = "egress-test") -> str:  # type: ignore[type-arg]
    d = http(snapshot(*docs), "/", ip=ip, namespace=namespace)
    return f"{d.parent.namespace}/{d.parent.name}" if d.parent else "(none)"


@pytest.mark.parametrize(
    ("cidr", "hosts"),
    [
        ("192.0.2.0/24", 254),
        ("192.0.2.1/32", 1),
        ("192.0.2.1", 1),
        ("10.0.0.0/31", 2),
        ("10.0.0.0/16", 65534),
        ("fd00::/120", 256),
    ],
)
def test_host_count_as_ipnet_counts(cidr: str, hosts: int) -> None:
    assert host_count(parse_net(cidr)) == hosts


def test_picks_smallest_cidr() -> None:
    assert (
        parent_of(
            egress_network("wide", networks=[{"cidr": "192.0.0.0/16"}]),
            egress_network("narrow", networks=[{"cidr": "192.0.2.0/24"}]),
        )
        == "egress-test/narrow"
    )


def test_picks_local_namespace_over_a_smaller_global_one() -> None:
    assert (
        parent_of(
            egress_network(
                "global", namespace="linkerd-egress", networks=[{"cidr": "192.0.2.0/24"}]
            ),
            egress_network("local", networks=[{"cidr": "192.0.0.0/16"}]),
        )
        == "egress-test/local"
    )


def test_global_namespace_applies_when_the_client_namespace_has_none() -> None:
    assert (
        parent_of(egress_network("global", namespace="linkerd-egress")) == "linkerd-egress/global"
    )


def test_does_not_pick_network_in_unrelated_namespace() -> None:
    d = http(snapshot(egress_network("elsewhere", namespace="other")), "/")
    assert d.parent is not None and d.parent.name == "egress-fallback"


def test_picks_older_resource() -> None:
    assert (
        parent_of(egress_network("b-newer", created=T2), egress_network("z-older", created=T1))
        == "egress-test/z-older"
    )


def test_picks_alphabetical_order() -> None:
    assert (
        parent_of(egress_network("b", created=T1), egress_network("a", created=T1))
        == "egress-test/a"
    )


def test_respects_exception() -> None:
    assert (
        parent_of(
            egress_network(
                "with-hole", networks=[{"cidr": "192.0.2.0/24", "except": ["192.0.2.10/32"]}]
            ),
            egress_network("wide", networks=[{"cidr": "192.0.0.0/16"}]),
        )
        == "egress-test/wide"
    )


def test_excepts_shrink_the_size() -> None:
    # /24 minus a /25 = 254 - 126 = 128, smaller than a plain /25's 126? no: 126 < 128
    assert (
        parent_of(
            egress_network(
                "holed", networks=[{"cidr": "192.0.2.0/24", "except": ["192.0.2.128/25"]}]
            ),
            egress_network("plain", networks=[{"cidr": "192.0.2.0/25"}]),
        )
        == "egress-test/plain"
    )


def test_a_local_network_that_misses_the_ip_still_shadows_the_global_one() -> None:
    # Surprise 2: the global namespace is not consulted; the IP is outside the cluster
    # networks, so the egress fallback (allowed, untouched) applies.
    d = http(
        snapshot(
            egress_network("local", networks=[{"cidr": "198.51.100.0/24"}]),
            egress_network("global", namespace="linkerd-egress", policy="Deny"),
        ),
        "/",
    )
    assert d.parent is not None and d.parent.name == "egress-fallback"
    assert d.outcome == "allowed"


def test_egress_fallback_labels_are_the_default_meta() -> None:
    d = http(snapshot(), "/")
    assert d.labels == {
        "parent_group": "",
        "parent_kind": "default",
        "parent_namespace": "",
        "parent_name": "egress-fallback",
        "parent_port": "",
        "parent_section_name": "",
        "route_group": "",
        "route_kind": "default",
        "route_namespace": "",
        "route_name": "egress-fallback",
    }


def test_cluster_ip_without_egress_network_gets_no_policy() -> None:
    d = http(snapshot(egress_network()), "/", ip="10.1.2.3")
    assert d.parent is None and d.outcome == "allowed" and d.labels == {}


def test_default_networks_exclude_the_cluster_networks() -> None:
    d = http(snapshot(egress_network(policy="Deny")), "/", ip="172.16.5.5")
    assert d.parent is None
    d = http(snapshot(egress_network(policy="Deny")), "/", ip="8.8.8.8")
    assert d.outcome == "forbidden"


def test_selection_ignores_status_overlap_still_captures() -> None:
    snap = snapshot(egress_network(policy="Deny", networks=[{"cidr": "10.1.0.0/16"}]))
    d = http(snap, "/", ip="10.1.2.3")
    assert d.parent is not None and d.parent.name == "all-egress-traffic"
    assert d.outcome == "forbidden"


def test_ipv6_destination() -> None:
    d = http(snapshot(egress_network(policy="Deny")), "/", ip="2001:db8::1")
    assert d.outcome == "forbidden"
