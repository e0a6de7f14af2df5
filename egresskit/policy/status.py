"""Status as Linkerd's policy controller writes it, for EgressNetworks and their routes.

Shared spec linkerd-egress.md sections 1 (EgressNetwork ``Accepted``), 4.4 (backend
``ResolvedRefs``), 4.6 (route ``Accepted``) and 5.1 (route-kind conflicts). Only routes
whose status says ``Accepted=True`` for a parent take effect for that parent (4.3). The
engine has no clock, so conditions carry no ``lastTransitionTime``; a backend adds it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from egresskit.manifests.model import (
    BackendRef,
    ParentRef,
    Route,
)

CONTROLLER_NAME = "linkerd.io/policy-controller"

#: GEP-1426 precedence for one parent and port: GRPCRoute > HTTPRoute > TLSRoute > TCPRoute
#: (``parent_has_conflicting_routes``; docs/facts/linkerd-egress.md 5.1). Higher number wins.
KIND_RANK = {"GRPCRoute": 4, "HTTPRoute": 3, "TLSRoute": 2, "TCPRoute": 1}


@dataclass(frozen=True, kw_only=True)
class Condition:
    type: str
    status: bool
    reason: str
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "status": "True" if self.status else "False",
            "reason": self.reason,
            "message": self.message,
        }


@dataclass(frozen=True, kw_only=True)
class RouteParentStatus:
    parent_ref: ParentRef
    accepted: Condition
    resolved_refs: Condition

    def to_dict(self) -> dict[str, Any]:
        ref: dict[str, Any] = {
            "group": self.parent_ref.group,
            "kind": self.parent_ref.kind,
            "namespace": self.parent_ref.namespace,
            "name": self.parent_ref.name,
        }
        if self.parent_ref.port is not None:
            ref["port"] = self.parent_ref.port
        return {
            "parentRef": ref,
            "controllerName": CONTROLLER_NAME,
            "conditions": [self.accepted.to_dict(), self.resolved_refs.to_dict()],
        }


def egress_network_condition(overlaps: bool) -> Condition:
    """``network_condition`` in the status controller (docs/facts/linkerd-egress.md section 1)."""
    if overlaps:
        return Condition(
            type="Accepted",
            status=False,
            reason="EgressReasonNetworkOverlap",
            message="networks overlap with clusterNetworks",
        )
    return Condition(type="Accepted", status=True, reason="Accepted")


def route_parent_statuses(
    route: Route,
    *,
    egress_networks: Mapping[tuple[str, str], bool],
    services: frozenset[tuple[str, str]],
    routes_by_parent: Mapping[tuple[str, str, int | None], set[str]],
) -> tuple[RouteParentStatus, ...]:
    """One status entry per EgressNetwork parentRef of ``route``.

    ``egress_networks`` maps (namespace, name) to whether that EgressNetwork is Accepted;
    ``routes_by_parent`` maps (namespace, name, port) to the route kinds attached there.
    Parents that are not EgressNetworks (Services, Gateways) are outside egresskit's scope
    and get no entry (assumption written in the issue note).
    """
    out = []
    for ref in route.parent_refs:
        if not ref.is_egress_network:
            continue
        out.append(
            RouteParentStatus(
                parent_ref=ref,
                accepted=_accepted(route, ref, egress_networks, routes_by_parent),
                resolved_refs=_resolved_refs(route, ref, egress_networks, services),
            )
        )
    return tuple(out)


def _accepted(
    route: Route,
    ref: ParentRef,
    egress_networks: Mapping[tuple[str, str], bool],
    routes_by_parent: Mapping[tuple[str, str, int | None], set[str]],
) -> Condition:
    en_accepted = egress_networks.get((ref.namespace, ref.name))
    if en_accepted is None:
        # The parent does not exist (test gateway_route_rejected_after_egress_network_delete).
        return Condition(type="Accepted", status=False, reason="NoMatchingParent")
    if not en_accepted:
        return Condition(
            type="Accepted",
            status=False,
            reason="NoMatchingParent",
            message="EgressNetwork parent has not been accepted",
        )
    mine = KIND_RANK[route.kind]
    present = routes_by_parent.get((ref.namespace, ref.name, ref.port), set())
    if any(KIND_RANK[k] > mine for k in present):
        # The mere presence of a higher-precedence kind on the same parent and port
        # (docs/facts/linkerd-egress.md 5.1; tests/conflict.rs).
        return Condition(type="Accepted", status=False, reason="RouteReasonConflicted")
    return Condition(type="Accepted", status=True, reason="Accepted")


def _resolved_refs(
    route: Route,
    parent: ParentRef,
    egress_networks: Mapping[tuple[str, str], bool],
    services: frozenset[tuple[str, str]],
) -> Condition:
    for backend in backend_refs_of(route):
        problem = backend_problem(backend, parent, egress_networks, services)
        if problem is not None:
            reason, message = problem
            return Condition(type="ResolvedRefs", status=False, reason=reason, message=message)
    return Condition(type="ResolvedRefs", status=True, reason="ResolvedRefs")


def backend_problem(
    backend: BackendRef,
    parent: ParentRef,
    egress_networks: Mapping[tuple[str, str], bool],
    services: frozenset[tuple[str, str]],
) -> tuple[str, str] | None:
    """(reason, message) for a backend the status controller flags (``backend_condition``)."""
    if backend.is_egress_network:
        if (backend.namespace, backend.name) not in egress_networks:
            return ("BackendNotFound", f"EgressNetwork not found {backend.name}")
        if parent.is_egress_network and (backend.namespace, backend.name) != (
            parent.namespace,
            parent.name,
        ):
            return (
                "InvalidKind",
                "EgressNetwork backend needs to be on a route that has an EgressNetwork parent",
            )
        return None
    if backend.is_service:
        if (backend.namespace, backend.name) not in services:
            return ("BackendNotFound", f"Service not found {backend.name}")
        return None
    return ("InvalidKind", f"unsupported backend type {backend.group} {backend.kind}")


def backend_refs_of(route: Route) -> list[BackendRef]:
    return [b for rule in route.rules for b in rule.backend_refs]
