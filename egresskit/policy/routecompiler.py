"""What each route rule does, compiled into decisions once per (client namespace,
EgressNetwork, port).

Rules (docs/facts/linkerd-egress.md sections 3, 4.4 and 6.2; gateway-api-matching.md
D9, D10):

* The synthesised default route (``*-egress-allow`` or ``*-egress-deny``, section 3)
  forwards to the original destination, or denies: HTTP 403 with ``l5d-proxy-error``,
  gRPC PERMISSION_DENIED, TLS and TCP closed with ``error="forbidden"``.
* A rule without backendRefs forwards to the original destination, with the
  EgressNetwork as its backend (D9). An EgressNetwork backend must be the parent; a
  Service backend must exist and name a port; anything else is an invalid backend: HTTP
  500, gRPC status 500, TLS and TCP ``error="invalid_backend"`` (D10).
* Header modifiers of a rule and of its backendRef are merged, the rule's first.
* Metric label sets are Linkerd's, in its order (6.2).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

from egresskit.manifests.model import (
    BackendRef,
    Filter,
    GRPCRoute,
    GRPCRouteRule,
    HTTPRoute,
    HTTPRouteMatch,
    HTTPRouteRule,
    Route,
    TCPRoute,
    TLSRoute,
)
from egresskit.policy.compiledrule import CompiledRule
from egresskit.policy.decision import Decision, HeaderEdit, Outcome, Ref, RouteFamily
from egresskit.policy.routetable import CompiledRoute
from egresskit.policy.snapshot import Snapshot

DENY_MESSAGE = "traffic not allowed"

#: Default route names per protocol and trafficPolicy (docs/facts/linkerd-egress.md section 3
#: table).
DEFAULT_ROUTE_NAMES: dict[RouteFamily, dict[str, str]] = {
    "http": {"Allow": "http-egress-allow", "Deny": "http-egress-deny"},
    "grpc": {"Allow": "grpc-egress-allow", "Deny": "grpc-egress-deny"},
    "tls": {"Allow": "tls-egress-allow", "Deny": "tls-egress-deny"},
    "tcp": {"Allow": "tcp-egress-allow", "Deny": "tcp-egress-deny"},
}


def parent_labels_of(parent: Ref, *, port_label: str) -> dict[str, str]:
    return {
        "parent_group": parent.group,
        "parent_kind": parent.kind,
        "parent_namespace": parent.namespace,
        "parent_name": parent.name,
        "parent_port": port_label,
        "parent_section_name": "",
    }


def route_labels_of(route: Ref) -> dict[str, str]:
    return {
        "route_group": route.group,
        "route_kind": route.kind,
        "route_namespace": route.namespace,
        "route_name": route.name,
    }


def backend_labels_of(backend: Ref, *, port_label: str) -> dict[str, str]:
    return {
        "backend_group": backend.group,
        "backend_kind": backend.kind,
        "backend_namespace": backend.namespace,
        "backend_name": backend.name,
        "backend_port": port_label,
        "backend_section_name": "",
    }


@dataclass(kw_only=True)
class RouteCompiler:
    """Compiles routes of one (client namespace, EgressNetwork, port) into decisions."""

    snap: Snapshot
    parent: Ref
    parent_labels: dict[str, str]
    policy: str
    port: int

    # -- defaults ----------------------------------------------------------------------

    def _decision(
        self,
        outcome: Outcome,
        family: RouteFamily,
        route: Ref,
        reason: str,
        *,
        backend: Ref | None = None,
        backend_port: str = "",
        target: Literal["original", "service"] | None = None,
        rule_index: int | None = None,
    ) -> Decision:
        """A decision of ``route`` under this parent: the route's label set (P + R), and the
        backend's (B) when there is one, in Linkerd's order (6.2)."""
        return Decision(
            outcome=outcome,
            protocol=None,
            family=family,
            parent=self.parent,
            route=route,
            backend=backend,
            target=target,
            labels=self.parent_labels | route_labels_of(route),
            backend_labels=(
                backend_labels_of(backend, port_label=backend_port) if backend is not None else {}
            ),
            rule_index=rule_index,
            reason=reason,
        )

    def _default_ref(self, family: RouteFamily) -> Ref:
        name = DEFAULT_ROUTE_NAMES[family][self.policy]
        return Ref(group="", kind="default", namespace="", name=name)

    def _forward_original(
        self,
        family: RouteFamily,
        route: Ref,
        *,
        port_label: int | None = None,
        rule_index: int | None = None,
    ) -> Decision:
        # Forward to the original destination; backend metadata is the EgressNetwork with
        # the original port (default_backend / egress_net_meta in outbound.rs; 4.4).
        port = port_label if port_label is not None else self.port
        return self._decision(
            "allowed",
            family,
            route,
            "forwarded to the original destination",
            backend=replace(self.parent, port=port),
            backend_port=str(port),
            target="original",
            rule_index=rule_index,
        )

    def _deny(self, family: RouteFamily, route: Ref) -> Decision:
        base = self._decision(
            "forbidden",
            family,
            route,
            f"trafficPolicy Deny: {route.name} rejects what no explicit route allows",
        )
        return _failure(base, DENY_MESSAGE)

    def default_http(self, family: RouteFamily) -> CompiledRoute:
        ref = self._default_ref(family)
        decision = (
            self._forward_original(family, ref, rule_index=0)
            if self.policy == "Allow"
            else self._deny(family, ref)
        )
        # HTTP default: one rule, PathPrefix "/"; gRPC default: one rule, no matches (3).
        matches = (HTTPRouteMatch(),) if family == "http" else ()
        rule = CompiledRule(index=0, matches=matches, grpc_rule=None, choices=((1.0, decision),))
        return CompiledRoute(ref=ref, hostnames=(), rules=(rule,), is_default=True)

    def default_tls(self) -> CompiledRoute:
        ref = self._default_ref("tls")
        return CompiledRoute(
            ref=ref, hostnames=(), rules=(self._l4_rule(ref, "tls", None),), is_default=True
        )

    def default_l4(self, family: RouteFamily) -> Decision:
        ref = self._default_ref(family)
        if self.policy == "Allow":
            return self._forward_original(family, ref)
        return self._deny(family, ref)

    # -- explicit routes -----------------------------------------------------------------

    def _route_ref(self, route: Route) -> Ref:
        return Ref(
            group=route.group,
            kind=route.kind,
            namespace=route.metadata.namespace or "",
            name=route.name,
        )

    def http_route(self, route: HTTPRoute | GRPCRoute, family: RouteFamily) -> CompiledRoute:
        ref = self._route_ref(route)
        rules = []
        route_rules: Sequence[HTTPRouteRule | GRPCRouteRule] = route.rules
        for idx, rule in enumerate(route_rules):
            redirect = next((f for f in rule.filters if f.type == "RequestRedirect"), None)
            choices = self._choices(ref, family, rule.backend_refs, idx, rule.filters)
            rules.append(
                CompiledRule(
                    index=idx,
                    matches=rule.matches if isinstance(rule, HTTPRouteRule) else (),
                    grpc_rule=rule if isinstance(rule, GRPCRouteRule) else None,
                    choices=choices,
                    redirect=redirect,
                )
            )
        skipped = None
        if route.unsupported:
            # The controller fails to convert the route and leaves it out (D11, D12).
            skipped = "left out by Linkerd: " + "; ".join(route.unsupported)
        return CompiledRoute(
            ref=ref, hostnames=route.hostnames, rules=tuple(rules), skipped=skipped
        )

    def tls_route(self, route: TLSRoute) -> CompiledRoute:
        ref = self._route_ref(route)
        rule = route.rules[0] if route.rules else None
        return CompiledRoute(
            ref=ref,
            hostnames=route.hostnames,
            rules=(self._l4_rule(ref, "tls", rule.backend_refs if rule else ()),),
        )

    def l4_route(self, route: TCPRoute, family: RouteFamily) -> Decision:
        ref = self._route_ref(route)
        rule = route.rules[0] if route.rules else None
        choices = self._choices(ref, family, rule.backend_refs if rule else (), 0, ())
        return choices[0][1]

    def _l4_rule(
        self, ref: Ref, family: RouteFamily, backends: Sequence[BackendRef] | None
    ) -> CompiledRule:
        if backends is None:  # the default TLS route
            decision = (
                self._forward_original(family, ref, rule_index=0)
                if self.policy == "Allow"
                else self._deny(family, ref)
            )
            return CompiledRule(index=0, matches=(), grpc_rule=None, choices=((1.0, decision),))
        return CompiledRule(
            index=0, matches=(), grpc_rule=None, choices=self._choices(ref, family, backends, 0, ())
        )

    def _choices(
        self,
        route: Ref,
        family: RouteFamily,
        backends: Sequence[BackendRef],
        rule_index: int,
        rule_filters: Sequence[Filter],
    ) -> tuple[tuple[float, Decision], ...]:
        req_edit, resp_edit = _header_edits(rule_filters)
        if not backends:
            # No backendRefs: forward to the original destination, backend = the parent
            # (routes_without_backends; 4.4, D9).
            d = self._forward_original(family, route, rule_index=rule_index)
            return ((1.0, replace(d, request_headers=req_edit, response_header_edit=resp_edit)),)
        usable = [b for b in backends if b.weight > 0]
        total = float(sum(b.weight for b in usable)) or 1.0
        out = []
        acc = 0.0
        for b in usable:
            acc += b.weight / total
            d = self._backend_decision(route, family, b, rule_index)
            b_req, b_resp = _header_edits(b.filters)
            d = replace(
                d,
                request_headers=_merge_edits(req_edit, b_req),
                response_header_edit=_merge_edits(resp_edit, b_resp),
            )
            out.append((acc, d))
        if not out:  # all weights zero: the controller rejects it; treat as invalid
            out.append(
                (
                    1.0,
                    self._invalid(route, family, None, rule_index, "every backendRef has weight 0"),
                )
            )
        return tuple(out)

    def _backend_decision(
        self, route: Ref, family: RouteFamily, b: BackendRef, rule_index: int
    ) -> Decision:
        if b.is_egress_network:
            if (b.namespace, b.name) == (self.parent.namespace, self.parent.name):
                # Same EgressNetwork as the parent: the original destination; the backendRef
                # port only changes the backend_port label (4.4; surprise 8).
                return self._forward_original(
                    family, route, port_label=b.port, rule_index=rule_index
                )
            return self._invalid(
                route,
                family,
                b,
                rule_index,
                "Route with EgressNetwork backend needs to have the same EgressNetwork as a parent",
            )
        if b.is_service:
            if (b.namespace, b.name) not in self.snap.services:
                return self._invalid(route, family, b, rule_index, f"Service not found {b.name}")
            if b.port is None:
                return self._invalid(
                    route, family, b, rule_index, f"missing port for backend Service {b.name}"
                )
            return self._decision(
                "redirected",
                family,
                route,
                f"sent to the in-cluster Service {b.namespace}/{b.name}:{b.port}",
                backend=Ref(
                    group="core", kind="Service", namespace=b.namespace, name=b.name, port=b.port
                ),
                backend_port=str(b.port),
                target="service",
                rule_index=rule_index,
            )
        return self._invalid(
            route, family, b, rule_index, f"unsupported backend type {b.group or 'core'} {b.kind}"
        )

    def _invalid(
        self, route: Ref, family: RouteFamily, b: BackendRef | None, rule_index: int, message: str
    ) -> Decision:
        backend = None
        if b is not None:
            group = "core" if b.is_service else b.group
            backend = Ref(group=group, kind=b.kind, namespace=b.namespace, name=b.name, port=b.port)
        base = self._decision(
            "invalid",
            family,
            route,
            message,
            backend=backend,
            backend_port="" if b is None or b.port is None else str(b.port),
            rule_index=rule_index,
        )
        return _failure(base, message)


#: How the proxy answers an exchange it refuses, by outcome: (HTTP status, gRPC status
#: recorded, the grpc-status it sends, the TLS/TCP close ``error`` label).
_FAILURE_ANSWERS: dict[str, tuple[int, str, str, str]] = {
    # Deny: the route-level failure injector, 403 with l5d-proxy-error; gRPC
    # PERMISSION_DENIED (7); TLS/TCP: the Forbidden filter closes the connection (spec 3).
    "forbidden": (403, "PERMISSION_DENIED", "7", "forbidden"),
    # Invalid backend: the backend-level failure injector, HTTP 500 recorded with error=""
    # (6.2); the controller injects grpc-status 500, not a valid gRPC code (D10).
    "invalid": (500, "UNKNOWN", "500", "invalid_backend"),
}


def _failure(base: Decision, message: str) -> Decision:
    """``base`` (a forbidden or invalid decision) with the answer its family gets."""
    http_status, grpc_status, grpc_code, l4_error = _FAILURE_ANSWERS[base.outcome]
    if base.family == "http":
        return replace(
            base, http_status=http_status, response_headers=(("l5d-proxy-error", message),)
        )
    if base.family == "grpc":
        return replace(
            base,
            http_status=200,
            grpc_status=grpc_status,
            response_headers=(("grpc-status", grpc_code), ("grpc-message", message)),
        )
    return replace(base, error=l4_error)


def _header_edits(filters: Sequence[Filter]) -> tuple[HeaderEdit | None, HeaderEdit | None]:
    req = resp = None
    for f in filters:
        if f.request_header_modifier is not None:
            m = f.request_header_modifier
            req = _merge_edits(req, HeaderEdit(add=m.add, set=m.set, remove=m.remove))
        if f.response_header_modifier is not None:
            m = f.response_header_modifier
            resp = _merge_edits(resp, HeaderEdit(add=m.add, set=m.set, remove=m.remove))
    return req, resp


def _merge_edits(a: HeaderEdit | None, b: HeaderEdit | None) -> HeaderEdit | None:
    if a is None:
        return b
    if b is None:
        return a
    return HeaderEdit(add=a.add + b.add, set=a.set + b.set, remove=a.remove + b.remove)
