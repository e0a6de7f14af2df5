"""Which policy applies to a (client namespace, IP, port): the parent, then the port's
protocol and route tables, memoised on the snapshot.

Rules (docs/facts/linkerd-egress.md sections 2, 4.5 and 5.2):

* The parent: a Service ClusterIP, else ONE EgressNetwork (2.3), else the egress-fallback
  policy for IPs outside the cluster networks (2.4), else none: the proxy forwards the
  connection as it is.
* The port's protocol: an opaque port ignores HTTP, gRPC and TLS routes; otherwise a
  GRPCRoute makes the port gRPC, an HTTPRoute HTTP-detected, a TLSRoute SNI-required and
  a TCPRoute opaque; with no routes HTTP is detected (5.2).
* The HTTP, gRPC and TLS tables end with the synthesised default route; the first
  TCPRoute replaces the TCP default (4.5, gateway-api-matching.md D18).
* A request the port cannot serve at all (plaintext on a TLS port, HTTP/1 on a gRPC port)
  has the outcome ``failed`` (5.2).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

from egresskit.manifests.model import GRPCRoute, HTTPRoute, HTTPRouteMatch, TCPRoute, TLSRoute
from egresskit.policy import networks as nets
from egresskit.policy.compiledrule import CompiledRule
from egresskit.policy.decision import Decision, PortProtocol, Ref, RouteFamily
from egresskit.policy.routecompiler import (
    RouteCompiler,
    backend_labels_of,
    parent_labels_of,
    route_labels_of,
)
from egresskit.policy.routetable import CompiledRoute, HostTable
from egresskit.policy.snapshot import Snapshot

POLICY_GROUP = "policy.linkerd.io"
FALLBACK_NAME = "egress-fallback"


@dataclass(frozen=True, kw_only=True)
class Resolution:
    """Who the parent of traffic to one IP is, for one client namespace."""

    kind: Literal["egress", "fallback", "service", "none"]
    egress_network: nets.IndexedEgressNetwork | None = None
    service_name: tuple[str, str] | None = None
    reasons: tuple[str, ...] = ()


def resolve_parent(snap: Snapshot, client_namespace: str, ip_text: str) -> Resolution:
    key = (client_namespace, ip_text)
    cached = snap._resolve_cache.get(key)
    if cached is None:
        cached = _resolve_parent(snap, client_namespace, ip_text)
        snap._resolve_cache[key] = cached
    assert isinstance(cached, Resolution)
    return cached


def _resolve_parent(snap: Snapshot, client_namespace: str, ip_text: str) -> Resolution:
    ip = ipaddress.ip_address(ip_text)
    svc = snap.services_by_ip.get(str(ip))
    if svc is not None:
        # lookup_ip step 1: a Service ClusterIP is served by that Service (2.2).
        return Resolution(
            kind="service",
            service_name=(svc.metadata.namespace or "", svc.metadata.name),
            reasons=(f"{ip} is the ClusterIP of Service {svc.metadata.namespace}/{svc.name}",),
        )
    candidates, why = nets.candidates_for(
        client_namespace, snap.egress_networks, snap.settings.global_egress_namespace
    )
    reasons = [why]
    winner, matched = nets.select(ip, candidates)
    if not candidates:
        reasons.append("there are no EgressNetworks to consider")
    for en in candidates:
        size = en.match_size(ip)
        if size is None:
            reasons.append(f"EgressNetwork {en.namespace}/{en.name} does not contain {ip}")
        else:
            reasons.append(
                f"EgressNetwork {en.namespace}/{en.name} contains {ip} ({_network_words(en, ip)})"
            )
    if winner is not None:
        if len(matched) > 1:
            reasons.append(
                f"{winner.namespace}/{winner.name} wins: the one whose matching network is "
                "smallest, then the oldest, then by namespace and name"
            )
        return Resolution(kind="egress", egress_network=winner, reasons=tuple(reasons))
    if not nets.in_cluster_networks(ip, snap.cluster_networks):
        reasons.append(
            f"{ip} is outside the cluster networks and no EgressNetwork matched: "
            "the controller serves the egress-fallback policy (traffic allowed, untouched)"
        )
        return Resolution(kind="fallback", reasons=tuple(reasons))
    reasons.append(
        f"{ip} is inside the cluster networks and is not a Service: the controller answers "
        "NotFound and the proxy forwards the connection as it is"
    )
    return Resolution(kind="none", reasons=tuple(reasons))


def _network_words(en: nets.IndexedEgressNetwork, ip: nets.IPAddress) -> str:
    """Which of its networks holds ``ip``, in words (for the reasoning only)."""
    if en.obj.networks is None:
        return "it lists no networks, so it covers every address outside the cluster networks"
    net = min((n for n in en.networks if n.matches(ip)), key=lambda n: n.size)
    but = f" except {', '.join(map(str, net.excepts))}" if net.excepts else ""
    return f"in its network {net.cidr}{but}"


@dataclass(kw_only=True)
class PortPolicy:
    """Everything the proxy needs for one client namespace, parent and port."""

    protocol: PortProtocol
    parent: Ref | None
    parent_labels: dict[str, str]
    http: HostTable | None = None
    grpc: HostTable | None = None
    tls: HostTable | None = None
    tcp: Decision | None = None
    reasons: tuple[str, ...] = ()


def port_policy(snap: Snapshot, client_namespace: str, ip_text: str, port: int) -> PortPolicy:
    key = (client_namespace, ip_text, port)
    cached = snap._policy_cache.get(key)
    if cached is None:
        res = resolve_parent(snap, client_namespace, ip_text)
        if res.kind == "egress":
            assert res.egress_network is not None
            # The table depends on the EgressNetwork, not the IP: share it across IPs.
            en = res.egress_network
            shared_key = (client_namespace, f"en:{en.namespace}/{en.name}", port)
            cached = snap._policy_cache.get(shared_key)
            if cached is None:
                cached = _stamp(_egress_policy(snap, client_namespace, en, port))
                snap._policy_cache[shared_key] = cached
        else:
            cached = _stamp(_other_policy(res, port))
        snap._policy_cache[key] = cached
    assert isinstance(cached, PortPolicy)
    return cached


def _stamp(policy: PortPolicy) -> PortPolicy:
    """Set ``protocol`` on every precompiled decision once, so ``decide`` never copies one."""
    for table in (policy.http, policy.grpc, policy.tls):
        if table is None:
            continue
        for route in table.routes:
            for rule in route.rules:
                rule.choices = tuple((b, with_protocol(d, policy)) for b, d in rule.choices)
    if policy.tcp is not None:
        policy.tcp = with_protocol(policy.tcp, policy)
    return policy


def _other_policy(res: Resolution, port: int) -> PortPolicy:
    if res.kind == "fallback":
        # The egress-fallback policy: Detect, one HTTP route and one opaque route, both
        # named egress-fallback, forwarding untouched (2.4). Labels derived from the
        # proxy's Default meta: group "", kind "default", no port (spec 2.4, 11).
        parent = Ref(group="", kind="default", namespace="", name=FALLBACK_NAME)
        labels = parent_labels_of(parent, port_label="")
        route = Ref(group="", kind="default", namespace="", name=FALLBACK_NAME)
        allow = Decision(
            outcome="allowed",
            protocol="detect",
            family="http",
            parent=parent,
            route=route,
            backend=parent,
            target="original",
            labels=labels | route_labels_of(route),
            backend_labels=backend_labels_of(parent, port_label=""),
            reason="egress-fallback: no EgressNetwork matched an address outside the cluster",
        )
        rule = CompiledRule(
            index=0, matches=(HTTPRouteMatch(),), grpc_rule=None, choices=((1.0, allow),)
        )
        compiled = CompiledRoute(ref=route, hostnames=(), rules=(rule,), is_default=True)
        return PortPolicy(
            protocol="detect",
            parent=parent,
            parent_labels=labels,
            http=HostTable.of([compiled]),
            tcp=replace(allow, family="tcp"),
        )
    if res.kind == "service":
        assert res.service_name is not None
        ns, name = res.service_name
        parent = Ref(group="core", kind="Service", namespace=ns, name=name, port=port)
        return PortPolicy(protocol="detect", parent=parent, parent_labels={})
    return PortPolicy(protocol="opaque", parent=None, parent_labels={})


def _egress_policy(
    snap: Snapshot, client_namespace: str, en: nets.IndexedEgressNetwork, port: int
) -> PortPolicy:
    obj = en.obj
    parent = Ref(
        group=POLICY_GROUP, kind="EgressNetwork", namespace=en.namespace, name=en.name, port=port
    )
    labels = parent_labels_of(parent, port_label=str(port))
    routes = snap.routes_for(en, port, client_namespace)
    grpc_routes = [r for r in routes if isinstance(r, GRPCRoute)]
    http_routes = [r for r in routes if isinstance(r, HTTPRoute)]
    tls_routes = [r for r in routes if isinstance(r, TLSRoute)]
    tcp_routes = [r for r in routes if isinstance(r, TCPRoute)]
    policy = obj.traffic_policy
    ctx = RouteCompiler(snap=snap, parent=parent, parent_labels=labels, policy=policy, port=port)
    reasons = [f"trafficPolicy {policy}"]

    # TCP: only the FIRST TCPRoute is used and it replaces the default (spec 4.5, D18).
    tcp = ctx.l4_route(tcp_routes[0], "tcp") if tcp_routes else ctx.default_l4("tcp")

    def policy_for(
        protocol: PortProtocol,
        why: str,
        *,
        http: HostTable | None = None,
        grpc: HostTable | None = None,
        tls: HostTable | None = None,
        l4: Decision = tcp,
    ) -> PortPolicy:
        reasons.append(why)
        return PortPolicy(
            protocol=protocol,
            parent=parent,
            parent_labels=labels,
            http=http,
            grpc=grpc,
            tls=tls,
            tcp=l4,
            reasons=tuple(reasons),
        )

    # The first kind attached decides the port's protocol, in the order of Linkerd's kind
    # conflicts (GRPC > HTTP > TLS > TCP, spec 4.8); opaque ports come before all (5.2).
    if port in snap.opaque_ports_for(obj):
        # Opaque ports ignore HTTP/gRPC/TLS routes (5.2; surprise 7).
        return policy_for(
            "opaque", f"port {port} is opaque: HTTP, gRPC and TLS routes do not apply"
        )

    def http_table(routes: Sequence[HTTPRoute | GRPCRoute], family: RouteFamily) -> HostTable:
        # The routes, then the EgressNetwork's default route for what none of them matches.
        return HostTable.of(
            [*(ctx.http_route(r, family) for r in routes), ctx.default_http(family)]
        )

    if grpc_routes:
        return policy_for(
            "grpc",
            "a GRPCRoute is attached: the port is HTTP/2 without detection",
            grpc=http_table(grpc_routes, "grpc"),
        )
    if http_routes:
        return policy_for(
            "detect",
            "an HTTPRoute is attached: HTTP is detected, other bytes are opaque",
            http=http_table(http_routes, "http"),
            l4=ctx.default_l4("tcp"),
        )
    if tls_routes:
        tls = [ctx.tls_route(r) for r in tls_routes]
        tls.append(ctx.default_tls())
        return policy_for(
            "tls",
            "a TLSRoute is attached: the port requires TLS with an SNI",
            tls=HostTable.of(tls),
        )
    if tcp_routes:
        return policy_for("opaque", "a TCPRoute is attached: the port is opaque")
    return policy_for(
        "detect",
        "no routes attached: HTTP is detected, other bytes are opaque",
        http=HostTable.of([ctx.default_http("http")]),
    )


def with_protocol(d: Decision, policy: PortPolicy) -> Decision:
    return d if d.protocol == policy.protocol else replace(d, protocol=policy.protocol)


def failed(policy: PortPolicy, why: str) -> Decision:
    return Decision(
        outcome="failed",
        protocol=policy.protocol,
        family=None,
        parent=policy.parent,
        route=None,
        backend=None,
        reason=why,
    )
