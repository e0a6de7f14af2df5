"""Status as Linkerd's status controller writes it (spec 8.4, T1-T10)."""

from __future__ import annotations

from typing import Any

import pytest

from egresskit.manifests.model import K8sObject
from egresskit.policy.snapshot import Snapshot
from tests.enginekit import (
    egress_network,
    en_backend,
    route,
    service,
    snapshot,
    svc_backend,
)

DEFAULT_CLUSTER = ["10.0.0.0/8", "100.64.0.0/10", "172.16.0.0/12", "192.168.0.0/16"]


def en_status(snap: Snapshot, name: str = "all-egress-traffic") -> dict[str, Any]:
    obj = next(o for o in snap.objects if o.kind == "EgressNetwork" and o.name == name)
    conds = snap.status_of(obj)["conditions"]
    assert isinstance(conds, list)
    return dict(conds[0])


def route_conditions(snap: Snapshot, name: str) -> list[tuple[str, str, str]]:
    obj: K8sObject = next(o for o in snap.objects if o.name == name and o.kind.endswith("Route"))
    parents = snap.status_of(obj)["parents"]
    assert isinstance(parents, list) and len(parents) == 1
    assert parents[0]["controllerName"] == "linkerd.io/policy-controller"
    return [(c["type"], c["status"], c["reason"]) for c in parents[0]["conditions"]]


@pytest.mark.parametrize(
    ("case", "networks", "status", "reason"),
    [
        ("T1", None, "True", "Accepted"),
        ("T2", [{"cidr": "0.0.0.0/0", "except": DEFAULT_CLUSTER}], "True", "Accepted"),
        (
            "T3",
            [{"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8", "100.64.0.0/10", "192.168.0.0/16"]}],
            "False",
            "EgressReasonNetworkOverlap",
        ),
        ("inside", [{"cidr": "10.1.0.0/24"}], "False", "EgressReasonNetworkOverlap"),
        ("outside", [{"cidr": "192.0.2.0/24"}], "True", "Accepted"),
    ],
    ids=lambda v: (
        v if isinstance(v, str) and (v.startswith("T") or v in ("inside", "outside")) else ""
    ),
)
def test_egress_network_accepted(case: str, networks: Any, status: str, reason: str) -> None:
    cond = en_status(snapshot(egress_network(networks=networks)))
    assert (cond["type"], cond["status"], cond["reason"]) == ("Accepted", status, reason)
    if status == "False":
        assert cond["message"] == "networks overlap with clusterNetworks"


def test_t4_service_backend_resolves() -> None:
    snap = snapshot(
        egress_network(),
        service("web", 80),
        route("HTTPRoute", "r", port=8080, rules=[{"backendRefs": [svc_backend("web", 80)]}]),
    )
    assert route_conditions(snap, "r") == [
        ("Accepted", "True", "Accepted"),
        ("ResolvedRefs", "True", "ResolvedRefs"),
    ]


def test_t5_egress_network_backend_other_than_parent_is_invalid_kind() -> None:
    snap = snapshot(
        egress_network(),
        egress_network("other"),
        route("HTTPRoute", "r", rules=[{"backendRefs": [en_backend("other")]}]),
    )
    assert route_conditions(snap, "r") == [
        ("Accepted", "True", "Accepted"),
        ("ResolvedRefs", "False", "InvalidKind"),
    ]


def test_missing_service_backend_is_backend_not_found() -> None:
    snap = snapshot(
        egress_network(), route("HTTPRoute", "r", rules=[{"backendRefs": [svc_backend("nope")]}])
    )
    assert route_conditions(snap, "r")[1] == ("ResolvedRefs", "False", "BackendNotFound")


def test_t7_route_without_its_egress_network_has_no_matching_parent() -> None:
    snap = snapshot(route("HTTPRoute", "r", rules=[{}]))
    assert route_conditions(snap, "r")[0] == ("Accepted", "False", "NoMatchingParent")


def test_route_on_an_overlapping_egress_network_is_not_accepted() -> None:
    snap = snapshot(
        egress_network(networks=[{"cidr": "10.1.0.0/24"}]), route("HTTPRoute", "r", rules=[{}])
    )
    assert route_conditions(snap, "r")[0] == ("Accepted", "False", "NoMatchingParent")


@pytest.mark.parametrize(
    ("higher", "lower"),
    [
        ("GRPCRoute", "HTTPRoute"),
        ("HTTPRoute", "TLSRoute"),
        ("GRPCRoute", "TLSRoute"),
        ("TLSRoute", "TCPRoute"),
        ("HTTPRoute", "TCPRoute"),
        ("GRPCRoute", "TCPRoute"),
    ],
)
def test_t9_t10_kind_conflicts_on_the_same_parent_and_port(higher: str, lower: str) -> None:
    def rules(kind: str) -> list[dict[str, Any]]:
        if kind in ("TLSRoute", "TCPRoute"):
            return [{"backendRefs": [en_backend()]}]
        return [{}]

    snap = snapshot(
        egress_network(),
        route(lower, "low", port=443, rules=rules(lower)),
        route(higher, "high", port=443, rules=rules(higher)),
    )
    assert route_conditions(snap, "low")[0] == ("Accepted", "False", "RouteReasonConflicted")
    assert route_conditions(snap, "high")[0] == ("Accepted", "True", "Accepted")


def test_kinds_on_different_ports_do_not_conflict() -> None:
    snap = snapshot(
        egress_network(),
        route("HTTPRoute", "http80", port=80, rules=[{}]),
        route("TLSRoute", "tls443", port=443, rules=[{"backendRefs": [en_backend()]}]),
    )
    assert route_conditions(snap, "tls443")[0] == ("Accepted", "True", "Accepted")
