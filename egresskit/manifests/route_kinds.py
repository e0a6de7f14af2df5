"""The route kinds: HTTPRoute (Gateway API and Linkerd's), GRPCRoute, TLSRoute, TCPRoute.

Job: read each route kind's rules and matches (paths, headers, query parameters, methods,
gRPC methods) into model values, using the shared pieces in
:mod:`egresskit.manifests.route_parts` and the CRD differences in
:mod:`egresskit.manifests.route_schema`. :data:`ROUTE_PARSERS` maps each (apiVersion, kind)
to its parser.

Rules:

- Matches Linkerd cannot convert are not errors: the route records them in ``unsupported``
  and the engine leaves the route out (gateway-api-matching.md D11, D12).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

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
    TCPRoute,
    TLSRoute,
    ValueMatch,
)
from egresskit.manifests.reader import Parser, Reader, at, show
from egresskit.manifests.route_parts import (
    check_total_matches,
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
    GRPC_METHOD,
    GRPC_SERVICE,
    HEADER_NAME,
    HEADER_NAME_TEXT,
    LINKERD_HTTP,
    LINKERD_HTTP_LEGACY,
    METHODS,
    PATH_CHARS,
    PATH_TYPES,
    VALUE_TYPES,
    Flavor,
)


def _value_matches(
    r: Reader,
    m: Mapping[str, Any],
    mpath: str,
    key: str,
    *,
    name_pattern: re.Pattern[str] | None,
    max_value: int,
) -> tuple[ValueMatch, ...]:
    items = r.get_list(m, mpath, key, max_items=16, noun="match")
    out = []
    for path, v in r.item_maps(items or [], at(mpath, key)):
        type_ = r.get_str(v, path, "type", enum=VALUE_TYPES) or "Exact"
        name = r.get_str(
            v,
            path,
            "name",
            required=True,
            pattern=name_pattern,
            pattern_text=HEADER_NAME_TEXT,
            min_len=1,
            max_len=256,
        )
        value = r.get_str(v, path, "value", required=True, min_len=1, max_len=max_value)
        if name is not None and value is not None:
            out.append(ValueMatch(type=type_, name=name, value=value))  # type: ignore[arg-type]
    return tuple(out)


_BAD_PATH_PARTS = ("//", "/./", "/../", "%2f", "%2F", "#")


def _path_match(r: Reader, m: Mapping[str, Any], mpath: str, flavor: Flavor) -> PathMatch:
    p = r.get_map(m, mpath, "path")
    if p is None:
        return PathMatch()  # CRD default: PathPrefix "/"
    path = at(mpath, "path")
    type_ = r.get_str(p, path, "type", enum=PATH_TYPES) or "PathPrefix"
    value = r.get_str(p, path, "value", max_len=1024)
    value = "/" if value is None else value
    vpath = at(path, "value")
    if type_ != "RegularExpression":
        # CEL on HTTPPathMatch (gateway-api-matching.md 1.2); Linkerd's own CRD has no CEL,
        # but a path that does not start with "/" can never match a request either.
        bad = next((part for part in _BAD_PATH_PARTS if part in value), None)
        if not value.startswith("/"):
            r.problem(vpath, 'an absolute path starting with "/"', show(value))
        elif flavor.gateway and bad is not None:
            r.problem(vpath, f'a path without "{bad}"', show(value))
        elif flavor.gateway and value.endswith(("/..", "/.")):
            r.problem(vpath, 'a path not ending in "/." or "/.."', show(value))
        elif flavor.gateway and not PATH_CHARS.match(value):
            r.problem(vpath, "a path of RFC 3986 path characters", show(value))
    return PathMatch(type=type_, value=value)  # type: ignore[arg-type]


def _http_rule(
    r: Reader,
    rule: Mapping[str, Any],
    rpath: str,
    route_ns: str,
    flavor: Flavor,
    unsupported: list[str],
) -> HTTPRouteRule:
    items = r.get_list(rule, rpath, "matches", max_items=flavor.max_matches, noun="match")
    matches = []
    for mpath, m in r.item_maps(items or [], at(rpath, "matches")):
        query_pattern = HEADER_NAME if flavor.gateway else None
        matches.append(
            HTTPRouteMatch(
                path=_path_match(r, m, mpath, flavor),
                headers=_value_matches(
                    r, m, mpath, "headers", name_pattern=HEADER_NAME, max_value=4096
                ),
                query_params=_value_matches(
                    r, m, mpath, "queryParams", name_pattern=query_pattern, max_value=1024
                ),
                method=r.get_str(m, mpath, "method", enum=METHODS),
            )
        )
    filters = read_filters(r, rule, rpath, flavor, flavor.rule_filters, unsupported)
    backends = read_backend_refs(
        r, rule, rpath, route_ns, flavor, with_filters=True, unsupported=unsupported
    )
    if flavor.gateway and backends and any(f.type == "RequestRedirect" for f in filters):
        # CEL: "RequestRedirect filter must not be used together with backendRefs".
        r.problem(
            at(rpath, "backendRefs"),
            "no backendRefs in a rule with a RequestRedirect filter",
            show(rule.get("backendRefs")),
        )
    return HTTPRouteRule(
        name=read_rule_name(r, rule, rpath) if flavor.gateway else None,
        # Omitted (or empty) matches mean PathPrefix "/": the CRD default, and what
        # Linkerd makes of a rule without matches (linkerd-egress.md 4.5).
        matches=tuple(matches) or (HTTPRouteMatch(),),
        filters=filters,
        backend_refs=backends,
    )


def _http_route(flavor: Flavor) -> Parser:
    def parse(r: Reader, doc: dict[str, Any], common: dict[str, Any]) -> K8sObject:
        spec = read_route_spec(r, doc, flavor)
        ns = common["metadata"].namespace
        unsupported: list[str] = []
        items = r.get_list(spec, "spec", "rules", max_items=16, noun="rule")
        if items is None:
            rules: tuple[HTTPRouteRule, ...] = (HTTPRouteRule(),)  # CRD default: PathPrefix "/"
        else:
            if flavor.gateway:
                check_total_matches(r, items)
            rules = tuple(
                _http_rule(r, rule, rpath, ns, flavor, unsupported)
                for rpath, rule in r.item_maps(items, "spec.rules")
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
    config = r.get_map(m, mpath, "method")
    if config is None:
        return None
    path = at(mpath, "method")
    type_ = r.get_str(config, path, "type", enum=VALUE_TYPES) or "Exact"
    service = r.get_str(config, path, "service", max_len=1024)
    method = r.get_str(config, path, "method", max_len=1024)
    if config.get("service") is None and config.get("method") is None:
        r.problem(path, "a service or a method (or both)", "neither")
    if type_ == "Exact":
        if service is not None and not GRPC_SERVICE.match(service):
            r.problem(at(path, "service"), "a gRPC service name (pkg.Service)", show(service))
        if method is not None and not GRPC_METHOD.match(method):
            r.problem(at(path, "method"), "a gRPC method name", show(method))
    else:
        # Linkerd cannot convert regex method matches (gateway-api-matching.md D11).
        unsupported.append(f"{path}: RegularExpression method match")
    return GRPCMethodMatch(type=type_, service=service, method=method)  # type: ignore[arg-type]


def _grpc_route(r: Reader, doc: dict[str, Any], common: dict[str, Any]) -> K8sObject:
    flavor = GATEWAY_GRPC
    spec = read_route_spec(r, doc, flavor)
    ns = common["metadata"].namespace
    unsupported: list[str] = []
    items = r.get_list(spec, "spec", "rules", max_items=16, noun="rule") or []
    check_total_matches(r, items)
    rules = []
    for rpath, rule in r.item_maps(items, "spec.rules"):
        matches = r.get_list(rule, rpath, "matches", max_items=flavor.max_matches, noun="match")
        rules.append(
            GRPCRouteRule(
                name=read_rule_name(r, rule, rpath),
                # No matches means every gRPC request (gateway-api-matching.md 4.1).
                matches=tuple(
                    GRPCRouteMatch(
                        method=_grpc_method(r, m, mpath, unsupported),
                        headers=_value_matches(
                            r, m, mpath, "headers", name_pattern=HEADER_NAME, max_value=4096
                        ),
                    )
                    for mpath, m in r.item_maps(matches or [], at(rpath, "matches"))
                ),
                filters=read_filters(r, rule, rpath, flavor, flavor.rule_filters, unsupported),
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
    items = r.get_list(spec, "spec", "rules", required=True, min_items=1, max_items=16, noun="rule")
    if items and len(items) > 1:
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
            # The CRDs require 1-16 backendRefs per rule (linkerd-egress.md 4.8).
            backend_refs=read_backend_refs(
                r, rule, rpath, ns, GATEWAY_L4, with_filters=False, unsupported=unused, min_items=1
            ),
        )
        for rpath, rule in r.item_maps(items or [], "spec.rules")
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
