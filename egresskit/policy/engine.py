"""The policy engine: values in, a :class:`Decision` out.

``decide(snapshot, request)`` answers what Linkerd's outbound proxy does with one HTTP
request, TLS connection or opaque TCP connection from a meshed client. It follows the
controller and the proxy step by step (shared spec linkerd-egress.md):

1. parent: a Service ClusterIP, else an EgressNetwork (2.3), else the egress fallback for
   IPs outside the cluster networks (2.4), else nothing (the proxy forwards as is);
2. the port's protocol: opaque ports, GRPCRoute, HTTPRoute, TLSRoute, TCPRoute (5.2);
3. the route: explicit routes in policy order with the synthesised ``*-egress-allow|deny``
   route appended for HTTP, gRPC and TLS; a TCPRoute replaces the TCP default (3, 4.5);
4. the backend: original destination, an in-cluster Service, or invalid (4.4);
5. the outcome and the metric labels (3, 6.2).

Nothing here reads a socket, the clock or the environment. Work that depends only on the
snapshot (parent resolution, per-port route tables, the decisions of every rule) is done
once and memoised on the snapshot, so a decision is a few dict lookups and the match of
the candidate rules.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
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
from egresskit.policy import networks as nets
from egresskit.policy.decision import (
    Decision,
    HeaderEdit,
    HttpRequest,
    PortProtocol,
    Ref,
    Request,
    RouteFamily,
    TcpConnection,
    TlsConnection,
)
from egresskit.policy.grpcmatch import grpc_rule_summary
from egresskit.policy.hostmatch import NO_HOSTNAMES, HostRank, host_rank, normalize_host
from egresskit.policy.httpmatch import MatchSummary, match_summary, split_target
from egresskit.policy.snapshot import Snapshot

POLICY_GROUP = "policy.linkerd.io"
DENY_MESSAGE = "traffic not allowed"

#: Default route names per protocol and trafficPolicy (shared spec section 3 table).
DEFAULT_ROUTE_NAMES: dict[RouteFamily, dict[str, str]] = {
    "http": {"Allow": "http-egress-allow", "Deny": "http-egress-deny"},
    "grpc": {"Allow": "grpc-egress-allow", "Deny": "grpc-egress-deny"},
    "tls": {"Allow": "tls-egress-allow", "Deny": "tls-egress-deny"},
    "tcp": {"Allow": "tcp-egress-allow", "Deny": "tcp-egress-deny"},
}
FALLBACK_NAME = "egress-fallback"


# ============================================================== parent resolution


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
                f"EgressNetwork {en.namespace}/{en.name} contains {ip} "
                f"(smallest matching network: {size} addresses)"
            )
    if winner is not None:
        if len(matched) > 1:
            reasons.append(
                f"{winner.namespace}/{winner.name} wins: smallest network, then oldest, "
                "then namespace and name"
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


# ================================================================ compiled tables


@dataclass(kw_only=True)
class CompiledRule:
    index: int
    matches: tuple[HTTPRouteMatch, ...]
    grpc_rule: GRPCRouteRule | None
    #: (cumulative weight upper bound, decision) per usable backend, in order.
    choices: tuple[tuple[float, Decision], ...]
    redirect: Filter | None = None
    #: When every match is a path alone (the common egress rule), the paths compiled to
    #: (kind, value, length): kind 0 Exact, 1 PathPrefix "/", 2 PathPrefix (trimmed value).
    #: None: some match has headers, query params, a method or a regex (slow path).
    paths: tuple[tuple[int, str, int], ...] | None = None
    #: Matches with exact headers and/or a method too, compiled the same way (header names
    #: lower-cased once); None when a match has query params or a regex (slow path).
    compiled: tuple[CompiledMatch, ...] | None = None

    def __post_init__(self) -> None:
        if self.grpc_rule is None:
            self.paths = _compile_paths(self.matches)
            self.compiled = _compile_matches(self.matches) if self.paths is None else None


#: (path kind, path value, path length, exact headers as (lower-case name, value), method)
CompiledMatch = tuple[int, str, int, tuple[tuple[str, str], ...], str | None]


def _compile_path(m: HTTPRouteMatch) -> tuple[int, str, int] | None:
    if m.path.type == "Exact":
        return (0, m.path.value, len(m.path.value))
    if m.path.type == "PathPrefix" and m.path.value == "/":
        return (1, "/", 1)
    if m.path.type == "PathPrefix":
        trimmed = m.path.value.rstrip("/")
        return (2, trimmed, len(trimmed))
    return None


def _compile_matches(matches: tuple[HTTPRouteMatch, ...]) -> tuple[CompiledMatch, ...] | None:
    out = []
    for m in matches:
        compiled_path = _compile_path(m)
        if compiled_path is None or m.query_params:
            return None
        if any(h.type != "Exact" for h in m.headers):
            return None
        headers = tuple((h.name.lower(), h.value) for h in m.headers)
        out.append((*compiled_path, headers, m.method))
    return tuple(out) if out else None


def _compiled_summary(
    compiled: tuple[CompiledMatch, ...],
    path: str,
    trimmed: str,
    method: str,
    header_map: dict[str, list[str]],
) -> MatchSummary | None:
    """``match_summary`` over compiled matches (same rules: D1, D2, D3, D7)."""
    best: MatchSummary | None = None
    for kind, value, length, headers, want_method in compiled:
        if kind == 0:
            if path != value:
                continue
        elif kind == 2 and not (
            trimmed.startswith(value) and (len(trimmed) == length or trimmed[length] == "/")
        ):
            continue
        if want_method is not None and want_method != method:
            continue
        # Any value of a repeated header may match (D7).
        if not all(v in header_map.get(n, ()) for n, v in headers):
            continue
        s = (length, len(headers), 0, 0 if want_method is None else 1)
        if best is None or s > best:
            best = s
    return best


def _compile_paths(matches: tuple[HTTPRouteMatch, ...]) -> tuple[tuple[int, str, int], ...] | None:
    out = []
    for m in matches:
        if m.headers or m.query_params or m.method is not None:
            return None
        compiled = _compile_path(m)
        if compiled is None:
            return None
        out.append(compiled)
    return tuple(out) if out else None


def _path_only_summary(
    paths: tuple[tuple[int, str, int], ...], path: str, trimmed: str
) -> MatchSummary | None:
    """``match_summary`` for path-only matches, without the per-match calls: the same
    rules as :func:`~egresskit.policy.httpmatch.path_match_length` (D2, D3)."""
    best = -1
    for kind, value, length in paths:
        if length <= best:
            continue
        if kind == 0:
            if path == value:
                best = length
        elif kind == 1:
            best = 1
        elif trimmed.startswith(value) and (len(trimmed) == length or trimmed[length] == "/"):
            best = length
    return (best, 0, 0, 0) if best >= 0 else None


@dataclass(kw_only=True)
class CompiledRoute:
    ref: Ref
    hostnames: tuple[str, ...]
    rules: tuple[CompiledRule, ...]
    is_default: bool = False
    #: Why this route is left out (unsupported filters), if it is.
    skipped: str | None = None


@dataclass(kw_only=True)
class HostTable:
    """Routes grouped by hostname so a lookup touches only routes that can match."""

    routes: list[CompiledRoute]
    exact: dict[str, list[int]] = field(default_factory=dict)
    suffix: dict[str, list[int]] = field(default_factory=dict)
    nohost: list[int] = field(default_factory=list)
    #: Per route, the first path segments its rules can match; None: any path (regex,
    #: prefix "/", gRPC, TLS). Used to skip routes in long tiers (see ``narrow``).
    segments: list[frozenset[str] | None] = field(default_factory=list)
    known: frozenset[str] = frozenset()
    _narrowed: dict[tuple[int, str | None], list[int]] = field(default_factory=dict)

    @classmethod
    def of(cls, routes: list[CompiledRoute]) -> HostTable:
        table = cls(routes=routes)
        table.segments = [_route_segments(r) for r in routes]
        table.known = frozenset().union(*(s for s in table.segments if s))
        for idx, route in enumerate(routes):
            if not route.hostnames:
                table.nohost.append(idx)
                continue
            for h in route.hostnames:
                h = h.rstrip(".").lower()
                bucket = table.suffix.setdefault(h[1:], []) if h.startswith("*.") else None
                if bucket is None:
                    bucket = table.exact.setdefault(h, [])
                if idx not in bucket:
                    bucket.append(idx)
        return table

    def narrow(self, bucket: list[int], seg: str | None) -> list[int]:
        """The routes of ``bucket`` that can match a path whose first segment is ``seg``.

        Filtering only drops routes with no satisfiable rule, so the winner is unchanged.
        Cached per (bucket, segment); segments no route names share one entry, so the
        cache is bounded by the table, not by the traffic.
        """
        if len(bucket) <= NARROW_MIN:
            return bucket
        key = (id(bucket), seg if seg in self.known else None)
        got = self._narrowed.get(key)
        if got is None:
            got = [i for i in bucket if _may_match(self.segments[i], key[1])]
            self._narrowed[key] = got
        return got


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


#: Tiers this short are scanned as they are: narrowing would cost more than it saves.
NARROW_MIN = 4


def _may_match(segments: frozenset[str] | None, seg: str | None) -> bool:
    return segments is None or (seg is not None and seg in segments)


def _first_segment(path: str) -> str:
    return path[1:].split("/", 1)[0]


def _route_segments(route: CompiledRoute) -> frozenset[str] | None:
    """First path segments ``route`` can match, or None when it may match any path.

    PathPrefix compares element-wise after trimming "/" (gateway-api-matching.md 2.1), so a
    matching path starts with the prefix's first segment; Exact compares the raw path.
    """
    out: set[str] = set()
    for rule in route.rules:
        if rule.grpc_rule is not None or not rule.matches:
            return None
        for m in rule.matches:
            if m.path.type == "PathPrefix":
                value = m.path.value.rstrip("/")
            elif m.path.type == "Exact":
                value = m.path.value
            else:
                return None
            if not value.startswith("/"):
                return None
            out.add(_first_segment(value))
    return frozenset(out)


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
                rule.choices = tuple((b, _with_protocol(d, policy)) for b, d in rule.choices)
    if policy.tcp is not None:
        policy.tcp = _with_protocol(policy.tcp, policy)
    return policy


def _other_policy(res: Resolution, port: int) -> PortPolicy:
    if res.kind == "fallback":
        # The egress-fallback policy: Detect, one HTTP route and one opaque route, both
        # named egress-fallback, forwarding untouched (2.4). Labels derived from the
        # proxy's Default meta: group "", kind "default", no port (spec 2.4, 11).
        parent = Ref(group="", kind="default", namespace="", name=FALLBACK_NAME)
        labels = _parent_labels(parent, port_label="")
        route = Ref(group="", kind="default", namespace="", name=FALLBACK_NAME)
        allow = Decision(
            outcome="allowed",
            protocol="detect",
            family="http",
            parent=parent,
            route=route,
            backend=parent,
            target="original",
            labels=labels | _route_labels(route),
            backend_labels=_backend_labels(parent, port_label=""),
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
    labels = _parent_labels(parent, port_label=str(port))
    routes = snap.routes_for(en, port, client_namespace)
    grpc_routes = [r for r in routes if isinstance(r, GRPCRoute)]
    http_routes = [r for r in routes if isinstance(r, HTTPRoute)]
    tls_routes = [r for r in routes if isinstance(r, TLSRoute)]
    tcp_routes = [r for r in routes if isinstance(r, TCPRoute)]
    policy = obj.traffic_policy
    ctx = _Ctx(snap=snap, parent=parent, parent_labels=labels, policy=policy, port=port)
    reasons = [f"trafficPolicy {policy}"]

    # TCP: only the FIRST TCPRoute is used and it replaces the default (spec 4.5, D18).
    tcp = ctx.l4_route(tcp_routes[0], "tcp") if tcp_routes else ctx.default_l4("tcp")

    opaque = port in snap.opaque_ports_for(obj)
    if opaque:
        # Opaque ports ignore HTTP/gRPC/TLS routes (5.2; surprise 7).
        reasons.append(f"port {port} is opaque: HTTP, gRPC and TLS routes do not apply")
        return PortPolicy(
            protocol="opaque", parent=parent, parent_labels=labels, tcp=tcp, reasons=tuple(reasons)
        )
    if grpc_routes:
        reasons.append("a GRPCRoute is attached: the port is HTTP/2 without detection")
        grpc = [ctx.http_route(r, "grpc") for r in grpc_routes]
        grpc.append(ctx.default_http("grpc"))
        return PortPolicy(
            protocol="grpc",
            parent=parent,
            parent_labels=labels,
            grpc=HostTable.of(grpc),
            tcp=tcp,
            reasons=tuple(reasons),
        )
    if http_routes:
        reasons.append("an HTTPRoute is attached: HTTP is detected, other bytes are opaque")
        http = [ctx.http_route(r, "http") for r in http_routes]
        http.append(ctx.default_http("http"))
        return PortPolicy(
            protocol="detect",
            parent=parent,
            parent_labels=labels,
            http=HostTable.of(http),
            tcp=ctx.default_l4("tcp"),
            reasons=tuple(reasons),
        )
    if tls_routes:
        reasons.append("a TLSRoute is attached: the port requires TLS with an SNI")
        tls = [ctx.tls_route(r) for r in tls_routes]
        tls.append(ctx.default_tls())
        return PortPolicy(
            protocol="tls",
            parent=parent,
            parent_labels=labels,
            tls=HostTable.of(tls),
            tcp=tcp,
            reasons=tuple(reasons),
        )
    if tcp_routes:
        reasons.append("a TCPRoute is attached: the port is opaque")
        return PortPolicy(
            protocol="opaque", parent=parent, parent_labels=labels, tcp=tcp, reasons=tuple(reasons)
        )
    reasons.append("no routes attached: HTTP is detected, other bytes are opaque")
    return PortPolicy(
        protocol="detect",
        parent=parent,
        parent_labels=labels,
        http=HostTable.of([ctx.default_http("http")]),
        tcp=tcp,
        reasons=tuple(reasons),
    )


def _parent_labels(parent: Ref, *, port_label: str) -> dict[str, str]:
    return {
        "parent_group": parent.group,
        "parent_kind": parent.kind,
        "parent_namespace": parent.namespace,
        "parent_name": parent.name,
        "parent_port": port_label,
        "parent_section_name": "",
    }


def _route_labels(route: Ref) -> dict[str, str]:
    return {
        "route_group": route.group,
        "route_kind": route.kind,
        "route_namespace": route.namespace,
        "route_name": route.name,
    }


def _backend_labels(backend: Ref, *, port_label: str) -> dict[str, str]:
    return {
        "backend_group": backend.group,
        "backend_kind": backend.kind,
        "backend_namespace": backend.namespace,
        "backend_name": backend.name,
        "backend_port": port_label,
        "backend_section_name": "",
    }


@dataclass(kw_only=True)
class _Ctx:
    """Compiles routes of one (client namespace, EgressNetwork, port) into decisions."""

    snap: Snapshot
    parent: Ref
    parent_labels: dict[str, str]
    policy: str
    port: int

    # -- defaults ----------------------------------------------------------------------

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
        backend = replace(self.parent, port=port)
        return Decision(
            outcome="allowed",
            protocol=None,
            family=family,
            parent=self.parent,
            route=route,
            backend=backend,
            target="original",
            labels=self.parent_labels | _route_labels(route),
            backend_labels=_backend_labels(backend, port_label=str(port)),
            rule_index=rule_index,
            reason="forwarded to the original destination",
        )

    def _deny(self, family: RouteFamily, route: Ref) -> Decision:
        labels = self.parent_labels | _route_labels(route)
        base = Decision(
            outcome="forbidden",
            protocol=None,
            family=family,
            parent=self.parent,
            route=route,
            backend=None,
            labels=labels,
            reason=f"trafficPolicy Deny: {route.name} rejects what no explicit route allows",
        )
        if family == "http":
            # Route-level failure injector: 403 with l5d-proxy-error (spec 3).
            return replace(
                base, http_status=403, response_headers=(("l5d-proxy-error", DENY_MESSAGE),)
            )
        if family == "grpc":
            return replace(
                base,
                http_status=200,
                grpc_status="PERMISSION_DENIED",
                response_headers=(("grpc-status", "7"), ("grpc-message", DENY_MESSAGE)),
            )
        # TLS/TCP: the Forbidden filter closes the connection, error="forbidden".
        return replace(base, error="forbidden")

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
            backend = Ref(
                group="core", kind="Service", namespace=b.namespace, name=b.name, port=b.port
            )
            return Decision(
                outcome="redirected",
                protocol=None,
                family=family,
                parent=self.parent,
                route=route,
                backend=backend,
                target="service",
                labels=self.parent_labels | _route_labels(route),
                backend_labels=_backend_labels(backend, port_label=str(b.port)),
                rule_index=rule_index,
                reason=f"sent to the in-cluster Service {b.namespace}/{b.name}:{b.port}",
            )
        return self._invalid(
            route, family, b, rule_index, f"unsupported backend type {b.group or 'core'} {b.kind}"
        )

    def _invalid(
        self, route: Ref, family: RouteFamily, b: BackendRef | None, rule_index: int, message: str
    ) -> Decision:
        backend = None
        blabels: dict[str, str] = {}
        if b is not None:
            group = "core" if b.is_service else b.group
            backend = Ref(group=group, kind=b.kind, namespace=b.namespace, name=b.name, port=b.port)
            blabels = _backend_labels(backend, port_label="" if b.port is None else str(b.port))
        base = Decision(
            outcome="invalid",
            protocol=None,
            family=family,
            parent=self.parent,
            route=route,
            backend=backend,
            labels=self.parent_labels | _route_labels(route),
            backend_labels=blabels,
            rule_index=rule_index,
            reason=message,
        )
        if family == "http":
            # Backend-level failure injector: HTTP 500 (D10), recorded with error="" (6.2).
            return replace(base, http_status=500, response_headers=(("l5d-proxy-error", message),))
        if family == "grpc":
            # The controller injects grpc-status 500, not a valid gRPC code (D10).
            return replace(
                base,
                http_status=200,
                grpc_status="UNKNOWN",
                response_headers=(("grpc-status", "500"), ("grpc-message", message)),
            )
        return replace(base, error="invalid_backend")


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


# ==================================================================== selection


Summary = tuple[int, ...]
SummaryFn = Callable[["CompiledRule"], Summary | None]
HttpKey = tuple[HostRank, Summary]


def _best_in(
    table: HostTable,
    indices: Iterable[int],
    host: str | None,
    rule_summary: SummaryFn,
    trace: list[str] | None,
) -> tuple[CompiledRoute, CompiledRule] | None:
    """Linkerd's ``find``/``best``: the highest (host rank, rule summary); ties go to the
    earlier route, and inside a route to the earlier rule."""
    best: tuple[HttpKey, CompiledRoute, CompiledRule] | None = None
    for idx in indices:
        route = table.routes[idx]
        if route.skipped is not None:
            if trace is not None:
                trace.append(f"{_route_name(route)}: {route.skipped}")
            continue
        if route.hostnames:
            rank = host_rank(route.hostnames, host)
            if rank is None:
                if trace is not None:
                    trace.append(
                        f"{_route_name(route)}: hostnames {list(route.hostnames)} do "
                        f"not match {host!r}"
                    )
                continue
        else:
            rank = NO_HOSTNAMES
        route_best: tuple[Summary, CompiledRule] | None = None
        for rule in route.rules:
            summary = rule_summary(rule)
            if summary is not None and (route_best is None or summary > route_best[0]):
                route_best = (summary, rule)
        if route_best is None:
            if trace is not None:
                trace.append(f"{_route_name(route)}: no rule matches")
            continue
        key = (rank, route_best[0])
        if trace is not None:
            trace.append(
                f"{_route_name(route)}: rule {route_best[1].index} matches "
                f"(host rank {_rank_text(rank)}, {_summary_text(route_best[0])})"
            )
        if best is None or key > best[0]:
            best = (key, route, route_best[1])
    return (best[1], best[2]) if best else None


def _best_in_tier(
    table: HostTable, indices: list[int], rule_summary: SummaryFn
) -> tuple[CompiledRoute, CompiledRule] | None:
    """``_best_in`` for one host tier, without tracing: first best summary wins ties."""
    best: tuple[Summary, CompiledRoute, CompiledRule] | None = None
    routes = table.routes
    for idx in indices:
        route = routes[idx]
        if route.skipped is not None:
            continue
        for rule in route.rules:
            summary = rule_summary(rule)
            if summary is not None and (best is None or summary > best[0]):
                best = (summary, route, rule)
    return (best[1], best[2]) if best else None


def _route_name(route: CompiledRoute) -> str:
    if route.is_default:
        return f"{route.ref.name} (default route)"
    return f"{route.ref.kind} {route.ref.namespace}/{route.ref.name}"


def _rank_text(rank: HostRank) -> str:
    return {
        0: "none (no hostnames)",
        1: f"wildcard, {rank[1]} chars",
        2: f"exact, {rank[1]} chars",
    }[rank[0]]


def _summary_text(summary: object) -> str:
    if isinstance(summary, tuple) and len(summary) == 4:
        return (
            f"path length {summary[0]}, {summary[1]} headers, {summary[2]} query params, "
            f"{'a' if summary[3] else 'no'} method match"
        )
    if isinstance(summary, tuple) and len(summary) == 3:
        return f"service {summary[0]} chars, method {summary[1]} chars, {summary[2]} headers"
    return str(summary)


def _select(
    table: HostTable,
    host: str | None,
    rule_summary: SummaryFn,
    trace: list[str] | None,
    path: str | None = None,
) -> tuple[CompiledRoute, CompiledRule] | None:
    if trace is not None:
        # Explaining: look at every route so the reader sees every candidate.
        return _best_in(table, range(len(table.routes)), host, rule_summary, trace)
    narrow = path is not None and path.startswith("/")
    seg = _first_segment(path) if narrow else None  # type: ignore[arg-type]
    # Every route in a tier has the tier's host rank (a better pattern of the same route
    # sits in an earlier tier), so only the rule summaries are compared. Tiers are walked
    # inline (exact host, wildcard suffixes longest first, no hostnames): the first tier
    # with a match holds the winner.
    if host is not None:
        exact = table.exact.get(host)
        if exact:
            found = _best_in_tier(
                table, table.narrow(exact, seg) if narrow else exact, rule_summary
            )
            if found is not None:
                return found
        if table.suffix:
            idx = host.find(".")
            while idx != -1:
                bucket = table.suffix.get(host[idx:])
                if bucket and idx > 0:
                    found = _best_in_tier(
                        table, table.narrow(bucket, seg) if narrow else bucket, rule_summary
                    )
                    if found is not None:
                        return found
                idx = host.find(".", idx + 1)
    nohost = table.nohost
    return _best_in_tier(table, table.narrow(nohost, seg) if narrow else nohost, rule_summary)


def _pick(rule: CompiledRule, pick: float) -> Decision:
    for bound, decision in rule.choices:
        if pick < bound:
            return decision
    return rule.choices[-1][1]


# ====================================================================== decide


def decide(snap: Snapshot, request: Request, *, trace: list[str] | None = None) -> Decision:
    """What Linkerd's proxy does with ``request``. Pass ``trace`` to collect the reasoning."""
    policy = port_policy(snap, request.client_namespace, request.dst_ip, request.dst_port)
    if trace is not None:
        trace.extend(resolve_parent(snap, request.client_namespace, request.dst_ip).reasons)
        trace.extend(policy.reasons)
    if policy.parent is None or policy.parent.kind == "Service":
        return Decision(
            outcome="allowed",
            protocol=None,
            family=None,
            parent=policy.parent,
            route=None,
            backend=None,
            target="original",
            reason=resolve_parent(snap, request.client_namespace, request.dst_ip).reasons[-1],
        )
    proto = policy.protocol
    if isinstance(request, HttpRequest):
        if proto == "detect":
            assert policy.http is not None
            return _decide_http(policy, policy.http, request, "http", trace)
        if proto == "grpc":
            if request.http_version != "2":
                return _failed(
                    policy,
                    "the port serves gRPC (HTTP/2 without detection); an "
                    "HTTP/1 request fails the HTTP/2 handshake",
                )
            assert policy.grpc is not None
            return _decide_http(policy, policy.grpc, request, "grpc", trace)
        if proto == "tls":
            return _failed(
                policy,
                "the port requires TLS with an SNI; plaintext has no SNI (Could not find SNI)",
            )
        return _opaque(policy, trace)
    if isinstance(request, TlsConnection):
        if proto == "tls":
            assert policy.tls is not None
            return _decide_tls(policy, policy.tls, request, trace)
        if proto == "grpc":
            return _failed(policy, "the port serves gRPC (HTTP/2); TLS bytes are not HTTP/2")
        if trace is not None and proto == "detect":
            trace.append(
                "TLS is not HTTP, so detection falls back to the opaque route "
                "(no TLSRoute on this port)"
            )
        return _opaque(policy, trace)
    assert isinstance(request, TcpConnection)
    if proto == "tls":
        return _failed(policy, "the port requires TLS with an SNI (Could not find SNI)")
    if proto == "grpc":
        return _failed(policy, "the port serves gRPC (HTTP/2 without detection)")
    return _opaque(policy, trace)


def _with_protocol(d: Decision, policy: PortPolicy) -> Decision:
    return d if d.protocol == policy.protocol else replace(d, protocol=policy.protocol)


def _failed(policy: PortPolicy, why: str) -> Decision:
    return Decision(
        outcome="failed",
        protocol=policy.protocol,
        family=None,
        parent=policy.parent,
        route=None,
        backend=None,
        reason=why,
    )


def _opaque(policy: PortPolicy, trace: list[str] | None) -> Decision:
    assert policy.tcp is not None
    if trace is not None and policy.tcp.route is not None:
        trace.append(f"opaque traffic takes {policy.tcp.route}")
    return _with_protocol(policy.tcp, policy)


def _decide_http(
    policy: PortPolicy,
    table: HostTable,
    req: HttpRequest,
    family: RouteFamily,
    trace: list[str] | None,
) -> Decision:
    host = normalize_host(req.host)
    path, query = split_target(req.path)
    method = req.method
    headers = req.headers
    if family == "grpc":

        def summary(rule: CompiledRule) -> Summary | None:
            if rule.grpc_rule is None:  # the default route: no matches = every request
                return (0, 0, 0)
            return grpc_rule_summary(
                rule.grpc_rule,
                method=method,
                path=path,
                headers=headers,
            )
    else:
        trimmed = path.rstrip("/")
        header_map: dict[str, list[str]] = {}
        for name, value in headers:
            header_map.setdefault(name.lower(), []).append(value)

        def summary(rule: CompiledRule) -> Summary | None:
            if rule.paths is not None:
                return _path_only_summary(rule.paths, path, trimmed)
            if rule.compiled is not None:
                return _compiled_summary(rule.compiled, path, trimmed, method, header_map)
            best: MatchSummary | None = None
            for m in rule.matches:
                s = match_summary(m, method=method, path=path, query=query, headers=headers)
                if s is not None and (best is None or s > best):
                    best = s
            return best

    found = _select(table, host, summary, trace, path if family == "http" else None)
    if found is None:
        # NoRoute -> 404 / gRPC NOT_FOUND (D8); impossible for an EgressNetwork, whose
        # default route matches everything.
        return replace(_failed(policy, "no route matches"), http_status=404)
    route, rule = found
    decision = _pick(rule, req.backend_pick)
    if trace is not None:
        trace.append(
            f"winner: {_route_name(route)}, rule {rule.index} (highest host rank, then rule "
            "summary; ties go to the older route, then the earlier rule)"
        )
    if rule.redirect is not None and rule.redirect.request_redirect is not None:
        return _redirect(decision, rule, req, host, path, query, policy)
    if req.grpc and family == "http" and decision.http_status == 403:
        # A gRPC client on a port with no GRPCRoute: the synthetic 403 is rendered as
        # grpc-status FAILED_PRECONDITION (9) (spec 3, derived from respond.rs).
        decision = replace(decision, grpc_status="FAILED_PRECONDITION")
    return _with_protocol(decision, policy)


def _redirect(
    decision: Decision,
    rule: CompiledRule,
    req: HttpRequest,
    host: str | None,
    path: str,
    query: str,
    policy: PortPolicy,
) -> Decision:
    """RequestRedirect as Linkerd's proxy builds the Location (D14)."""
    assert rule.redirect is not None
    rr = rule.redirect.request_redirect
    assert rr is not None
    scheme = rr.scheme or "http"
    authority = req.host or host or req.dst_ip
    orig_host, _, orig_port = authority.rpartition(":") if ":" in authority else (authority, "", "")
    new_host = rr.hostname or orig_host
    if rr.port is not None:
        default = 443 if scheme == "https" else 80
        port_part = "" if rr.port == default else f":{rr.port}"
    elif rr.hostname is not None:
        # A hostname override keeps the original port unless it is the scheme default.
        default_s = "443" if scheme == "https" else "80"
        port_part = f":{orig_port}" if orig_port and orig_port != default_s else ""
    else:
        port_part = f":{orig_port}" if orig_port else ""
    new_path = path
    keep_query = True
    if rr.path_type == "ReplaceFullPath" and rr.path_value is not None:
        new_path = rr.path_value
        keep_query = False
    elif rr.path_type == "ReplacePrefixMatch" and rr.path_value is not None:
        prefix = rule.matches[0].path.value if rule.matches else "/"
        new_path = _replace_prefix(path, prefix, rr.path_value)
    location = f"{scheme}://{new_host}{port_part}{new_path}"
    if keep_query and query:
        location += f"?{query}"
    return replace(
        decision,
        outcome="redirected",
        protocol=policy.protocol,
        backend=None,
        backend_labels={},
        target=None,
        http_status=rr.status_code,
        location=location,
        response_headers=(("location", location),),
        reason=f"RequestRedirect filter: {rr.status_code} to {location}",
    )


def _replace_prefix(path: str, prefix: str, replacement: str) -> str:
    # Linkerd appends the remainder after the matched prefix, adding "/" only when the
    # remainder is non-empty and lacks one, so "/xyz/" + "/bar" gives "/xyz//bar" (D14).
    # The CRD requires exactly one PathPrefix match on such a rule.
    trimmed = prefix.rstrip("/")
    rest = path[len(trimmed) :] if trimmed else path
    if not rest:
        return replacement
    return replacement + ("" if rest.startswith("/") else "/") + rest


def _decide_tls(
    policy: PortPolicy, table: HostTable, conn: TlsConnection, trace: list[str] | None
) -> Decision:
    if not conn.sni:
        return _failed(policy, "the ClientHello carries no SNI (Could not find SNI)")
    sni = normalize_host(conn.sni)
    found = _select(table, sni, lambda rule: (0,), trace)
    if found is None:  # pragma: no cover - the default TLS route matches every SNI
        return _failed(policy, "no TLS route matches")
    route, rule = found
    if trace is not None:
        trace.append(f"winner: {_route_name(route)}")
    return _with_protocol(_pick(rule, conn.backend_pick), policy)
