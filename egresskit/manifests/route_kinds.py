"""The route kinds: HTTPRoute (Gateway API and Linkerd's), GRPCRoute, TLSRoute, TCPRoute.

Job: read each route kind's rules and matches (paths, headers, query parameters, methods,
gRPC methods) into model values, using the shared pieces in
:mod:`egresskit.manifests.route_parts` and the CRD differences in
:mod:`egresskit.manifests.route_schema`. :data:`ROUTE_PARSERS` maps each (apiVersion, kind)
to its parser.

Rules:

- The document has passed its CRD's schema and CEL rules
  (:mod:`egresskit.manifests.crd_validation`); only rules that are not the CRD's live here
  (Linkerd's webhook, what Linkerd cannot convert).
- Matches Linkerd cannot convert are not errors: the route records them in ``unsupported``
  and the engine leaves the route out (gateway-api-matching.md D11, D12).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from egresskit.manifests.model import (
    GATEWAY_GROUP,
    POLICY_GROUP,
    GRPCMethodMatch,
    GRPCRoute,
    GRPCRouteMatch,
    GRPCRouteRule,
    HTTPRoute,
    HTTPRouteMatch,
    HTTPRouteRule,
    K8sObject,
    L4RouteRule,
    PathMatch,
    PathMatchType,
    TCPRoute,
    TLSRoute,
    ValueMatch,
    ValueMatchType,
)
from egresskit.manifests.reader import Parser, Reader, at, show
from egresskit.manifests.route_parts import (
    read_backend_refs,
    read_filters,
    read_hostnames,
    read_parent_refs,
    read_route_spec,
    read_rule_name,
)
from egresskit.manifests.route_schema import (
    GATEWAY_GRPC,
    GATEWAY_HTTP,
    GATEWAY_L4,
    LINKERD_HTTP,
    LINKERD_HTTP_LEGACY,
    Flavor,
)


def _value_matches(r: Reader, m: Mapping[str, Any], mpath: str, key: str) -> tuple[ValueMatch, ...]:
    return tuple(
        ValueMatch(type=cast(ValueMatchType, v["type"]), name=v["name"], value=v["value"])
        for _, v in r.item_maps(m.get(key) or [], at(mpath, key))
    )


def _path_match(r: Reader, m: Mapping[str, Any], mpath: str, flavor: Flavor) -> PathMatch:
    p = m.get("path")
    if p is None:
        return PathMatch()  # GRPCRoute has no path; HTTPRoute CRDs default it to this
    type_, value = cast(PathMatchType, p["type"]), p["value"]  # CRD defaults: PathPrefix "/"
    if not flavor.gateway and type_ != "RegularExpression" and not value.startswith("/"):
        # The Gateway API CRDs refuse this by CEL; Linkerd's own CRD has no such rule, but a
        # path that does not start with "/" can never match a request either.
        r.problem(at(at(mpath, "path"), "value"), 'an absolute path starting with "/"', show(value))
    return PathMatch(type=type_, value=value)


def _http_rule(
    r: Reader,
    rule: Mapping[str, Any],
    rpath: str,
    route_ns: str,
    flavor: Flavor,
    unsupported: list[str],
) -> HTTPRouteRule:
    matches = [
        HTTPRouteMatch(
            path=_path_match(r, m, mpath, flavor),
            headers=_value_matches(r, m, mpath, "headers"),
            query_params=_value_matches(r, m, mpath, "queryParams"),
            method=m.get("method"),
        )
        for mpath, m in r.item_maps(rule.get("matches") or [], at(rpath, "matches"))
    ]
    return HTTPRouteRule(
        name=read_rule_name(r, rule, rpath) if flavor.gateway else None,
        # Omitted (or empty) matches mean PathPrefix "/": the CRD default, and what
        # Linkerd makes of a rule without matches (linkerd-egress.md 4.5).
        matches=tuple(matches) or (HTTPRouteMatch(),),
        filters=read_filters(r, rule, rpath, flavor, unsupported),
        backend_refs=read_backend_refs(
            r, rule, rpath, route_ns, flavor, with_filters=True, unsupported=unsupported
        ),
    )


def _http_route(flavor: Flavor) -> Parser:
    def parse(r: Reader, doc: dict[str, Any], common: dict[str, Any]) -> K8sObject:
        spec = read_route_spec(r, doc, flavor)
        ns = common["metadata"].namespace
        unsupported: list[str] = []
        # Omitted rules get the CRD default (one rule, PathPrefix "/"); only a Linkerd
        # HTTPRoute without any spec (its CRD allows that) has none: the same one rule.
        items = spec.get("rules")
        rules = (
            tuple(
                _http_rule(r, rule, rpath, ns, flavor, unsupported)
                for rpath, rule in r.item_maps(items, "spec.rules")
            )
            if items is not None
            else (HTTPRouteRule(),)
        )
        return HTTPRoute(
            **common,
            hostnames=read_hostnames(r, spec),
            parent_refs=read_parent_refs(r, spec, ns, flavor),
            rules=rules,
            unsupported=tuple(unsupported),
        )

    return parse


def _grpc_method(
    r: Reader, m: Mapping[str, Any], mpath: str, unsupported: list[str]
) -> GRPCMethodMatch | None:
    config = m.get("method")
    if config is None:
        return None
    type_ = cast(ValueMatchType, config["type"])  # CRD default: Exact
    if type_ != "Exact":
        # Linkerd cannot convert regex method matches (gateway-api-matching.md D11).
        unsupported.append(f"{at(mpath, 'method')}: RegularExpression method match")
    return GRPCMethodMatch(type=type_, service=config.get("service"), method=config.get("method"))


def _grpc_route(r: Reader, doc: dict[str, Any], common: dict[str, Any]) -> K8sObject:
    flavor = GATEWAY_GRPC
    spec = read_route_spec(r, doc, flavor)
    ns = common["metadata"].namespace
    unsupported: list[str] = []
    rules = []
    for rpath, rule in r.item_maps(spec.get("rules") or [], "spec.rules"):
        rules.append(
            GRPCRouteRule(
                name=read_rule_name(r, rule, rpath),
                # No matches means every gRPC request (gateway-api-matching.md 4.1).
                matches=tuple(
                    GRPCRouteMatch(
                        method=_grpc_method(r, m, mpath, unsupported),
                        headers=_value_matches(r, m, mpath, "headers"),
                    )
                    for mpath, m in r.item_maps(rule.get("matches") or [], at(rpath, "matches"))
                ),
                filters=read_filters(r, rule, rpath, flavor, unsupported),
                backend_refs=read_backend_refs(
                    r, rule, rpath, ns, flavor, with_filters=True, unsupported=unsupported
                ),
            )
        )
    return GRPCRoute(
        **common,
        hostnames=read_hostnames(r, spec),
        parent_refs=read_parent_refs(r, spec, ns, flavor),
        rules=tuple(rules),
        unsupported=tuple(unsupported),
    )


def _l4_rules(r: Reader, spec: Mapping[str, Any], kind: str, ns: str) -> tuple[L4RouteRule, ...]:
    items = spec.get("rules") or []
    if len(items) > 1:
        # Linkerd's webhook: "TlsRoute/TcpRoute supports a single rule only" (spec 4.8).
        r.problem(
            "spec.rules",
            f"exactly 1 rule (Linkerd accepts a single rule per {kind})",
            str(len(items)),
        )
    unused: list[str] = []
    return tuple(
        L4RouteRule(
            name=read_rule_name(r, rule, rpath),
            # A rule needs a backend to carry traffic: the Gateway API v1.2.1 CRD makes
            # backendRefs optional (never empty); Linkerd's bundled CRD required it
            # (linkerd-egress.md 4.8), and so does egresskit.
            backend_refs=read_backend_refs(
                r,
                rule,
                rpath,
                ns,
                GATEWAY_L4,
                with_filters=False,
                unsupported=unused,
                required=True,
            ),
        )
        for rpath, rule in r.item_maps(items, "spec.rules")
    )


def _tls_route(r: Reader, doc: dict[str, Any], common: dict[str, Any]) -> K8sObject:
    spec = read_route_spec(r, doc, GATEWAY_L4)
    ns = common["metadata"].namespace
    return TLSRoute(
        **common,
        hostnames=read_hostnames(r, spec),
        parent_refs=read_parent_refs(r, spec, ns, GATEWAY_L4),
        rules=_l4_rules(r, spec, "TLSRoute", ns),
    )


def _tcp_route(r: Reader, doc: dict[str, Any], common: dict[str, Any]) -> K8sObject:
    spec = read_route_spec(r, doc, GATEWAY_L4)
    ns = common["metadata"].namespace
    return TCPRoute(
        **common,
        parent_refs=read_parent_refs(r, spec, ns, GATEWAY_L4),
        rules=_l4_rules(r, spec, "TCPRoute", ns),
    )


_GW = f"{GATEWAY_GROUP}/"
_LD = f"{POLICY_GROUP}/"

#: Every route (apiVersion, kind) the loader reads (linkerd-egress.md 4.1): exactly the
#: versions the pinned CRDs serve (Gateway API v1.2.1 no longer serves HTTPRoute or
#: GRPCRoute v1alpha2; tests/test_crd_schemas.py keeps the two lists equal).
ROUTE_PARSERS: dict[tuple[str, str], Parser] = {
    **{(_GW + v, "HTTPRoute"): _http_route(GATEWAY_HTTP) for v in ("v1", "v1beta1")},
    (_GW + "v1", "GRPCRoute"): _grpc_route,
    (_GW + "v1alpha2", "TLSRoute"): _tls_route,
    (_GW + "v1alpha2", "TCPRoute"): _tcp_route,
    (_LD + "v1alpha1", "HTTPRoute"): _http_route(LINKERD_HTTP_LEGACY),
    (_LD + "v1beta1", "HTTPRoute"): _http_route(LINKERD_HTTP_LEGACY),
    (_LD + "v1beta2", "HTTPRoute"): _http_route(LINKERD_HTTP),
    (_LD + "v1beta3", "HTTPRoute"): _http_route(LINKERD_HTTP),
}
