"""The pieces every route kind shares: spec, hostnames, parentRefs, backendRefs, filters.

Job: read the parts of HTTPRoute, GRPCRoute, TLSRoute and TCPRoute specs that are the same
across the route kinds, with the CRD defaults filled in and the CEL rules (for the Gateway
API flavors) and Linkerd webhook rules that matter here (linkerd-egress.md 4.2 and 4.8).

Rules:

- What differs between the CRDs comes in as a :class:`~egresskit.manifests.route_schema.Flavor`,
  never as a check of the kind's name.
- Filters Linkerd cannot convert are not errors: they are appended to the route's
  ``unsupported`` list (gateway-api-matching.md D11, D12).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from egresskit.manifests.model import (
    BackendRef,
    Filter,
    HeaderModifier,
    ParentRef,
    RequestRedirect,
)
from egresskit.manifests.reader import (
    DNS_LABEL,
    DNS_LABEL_TEXT,
    DNS_SUBDOMAIN,
    DNS_SUBDOMAIN_TEXT,
    Reader,
    at,
    or_default,
    show,
)
from egresskit.manifests.route_schema import (
    FILTER_FIELDS,
    GROUP,
    GROUP_TEXT,
    HEADER_NAME,
    HEADER_NAME_TEXT,
    HOSTNAME,
    HOSTNAME_TEXT,
    KIND,
    NOT_REPEATABLE,
    Flavor,
)


def read_rule_name(r: Reader, rule: Mapping[str, Any], rpath: str) -> str | None:
    return r.get_str(
        rule, rpath, "name", pattern=DNS_SUBDOMAIN, pattern_text=DNS_SUBDOMAIN_TEXT, max_len=253
    )


def read_route_spec(r: Reader, doc: Mapping[str, Any], flavor: Flavor) -> dict[str, Any]:
    # Gateway API CRDs require spec; Linkerd's HTTPRoute CRD does not.
    return r.get_map(doc, "", "spec", required=flavor.gateway) or {}


def check_total_matches(r: Reader, rules: list[Any]) -> None:
    # Gateway API CEL on spec.rules: at most 128 matches across all rules.
    total = sum(
        len(rule["matches"])
        for rule in rules
        if isinstance(rule, Mapping) and isinstance(rule.get("matches"), list)
    )
    if total > 128:
        r.problem("spec.rules", "at most 128 matches across all rules", str(total))


def read_hostnames(r: Reader, spec: Mapping[str, Any]) -> tuple[str, ...]:
    out = []
    for i, name in enumerate(
        r.get_list(spec, "spec", "hostnames", max_items=16, noun="hostname") or []
    ):
        path = at("spec.hostnames", i)
        if not isinstance(name, str) or len(name) > 253 or not HOSTNAME.match(name) or _is_ip(name):
            r.problem(path, HOSTNAME_TEXT, show(name))
        else:
            out.append(name)
    return tuple(out)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def read_parent_refs(
    r: Reader, spec: Mapping[str, Any], route_ns: str, flavor: Flavor
) -> tuple[ParentRef, ...]:
    items = r.get_list(spec, "spec", "parentRefs", max_items=32, noun="parentRef")
    out = []
    for path, p in r.item_maps(items or [], "spec.parentRefs"):
        group = r.get_str(p, path, "group", pattern=GROUP, pattern_text=GROUP_TEXT, max_len=253)
        kind = r.get_str(p, path, "kind", pattern=KIND, pattern_text="a kind name", min_len=1)
        namespace = r.get_str(p, path, "namespace", pattern=DNS_LABEL, pattern_text=DNS_LABEL_TEXT)
        name = r.get_str(p, path, "name", required=True, min_len=1, max_len=253)
        port = r.get_int(p, path, "port", lo=1, hi=65535)
        section = r.get_str(
            p, path, "sectionName", pattern=DNS_SUBDOMAIN, pattern_text=DNS_SUBDOMAIN_TEXT
        )
        ref = ParentRef(
            group=flavor.parent_group if p.get("group") is None else (group or ""),
            kind=kind or "Gateway",
            namespace=namespace or route_ns,
            name=name or "",
            port=port,
            section_name=section,
        )
        if ref.is_egress_network and p.get("port") is None:
            # Linkerd's webhook rejects port-less EgressNetwork parents (linkerd-egress.md 4.2).
            r.problem(
                at(path, "port"), "a port (required when the parent is an EgressNetwork)", "nothing"
            )
        if name is not None:
            out.append(ref)
    return tuple(out)


def read_backend_refs(
    r: Reader,
    rule: Mapping[str, Any],
    rpath: str,
    route_ns: str,
    flavor: Flavor,
    *,
    with_filters: bool,
    unsupported: list[str],
    min_items: int = 0,
) -> tuple[BackendRef, ...]:
    items = r.get_list(
        rule,
        rpath,
        "backendRefs",
        required=min_items > 0,
        min_items=min_items,
        max_items=16,
        noun="backendRef",
    )
    out = []
    for path, b in r.item_maps(items or [], at(rpath, "backendRefs")):
        name = r.get_str(b, path, "name", required=True, min_len=1, max_len=253)
        namespace = r.get_str(b, path, "namespace", pattern=DNS_LABEL, pattern_text=DNS_LABEL_TEXT)
        port = r.get_int(b, path, "port", lo=1, hi=65535)
        if flavor.legacy_backends:
            group, kind, weight = "", "Service", 1
            namespace = namespace or "default"  # that CRD version's own default
        else:
            group = r.get_str(b, path, "group", pattern=GROUP, pattern_text=GROUP_TEXT) or ""
            kind = (
                r.get_str(b, path, "kind", pattern=KIND, pattern_text="a kind name", min_len=1)
                or "Service"
            )
            weight = or_default(r.get_int(b, path, "weight", lo=0, hi=1_000_000), 1)
        if flavor.gateway and group == "" and kind == "Service" and b.get("port") is None:
            # Gateway API CEL: "Must have port for Service reference".
            r.problem(at(path, "port"), "a port (required for a Service backend)", "nothing")
        filters: tuple[Filter, ...] = ()
        if with_filters:
            filters = read_filters(r, b, path, flavor, flavor.backend_filters, unsupported)
        if name is not None:
            out.append(
                BackendRef(
                    group=group,
                    kind=kind,
                    namespace=namespace or route_ns,
                    name=name,
                    port=port,
                    weight=weight,
                    filters=filters,
                )
            )
    return tuple(out)


def read_filters(
    r: Reader,
    owner: Mapping[str, Any],
    opath: str,
    flavor: Flavor,
    allowed: tuple[str, ...],
    unsupported: list[str],
) -> tuple[Filter, ...]:
    items = r.get_list(owner, opath, "filters", max_items=16, noun="filter")
    known = allowed + flavor.unconvertible
    seen: set[str] = set()
    out = []
    for path, f in r.item_maps(items or [], at(opath, "filters")):
        type_ = r.get_str(f, path, "type", required=True, enum=known)
        if type_ is None:
            continue
        if flavor.gateway and type_ in NOT_REPEATABLE and type_ in seen:
            r.problem(path, f"at most one {type_} filter in this list", f"another {type_}")
        seen.add(type_)
        if flavor.gateway:
            for other, field_name in FILTER_FIELDS.items():
                if other != type_ and f.get(field_name) is not None:
                    r.problem(at(path, field_name), f"nothing when type is {type_}", "a value")
        if type_ in flavor.unconvertible:
            unsupported.append(f"{path}: {type_} filter")
            continue
        field_name = FILTER_FIELDS[type_]
        cpath = at(path, field_name)
        if f.get(field_name) is None:
            r.problem(cpath, f"a value (required when type is {type_})", "nothing")
            continue
        config = r.get_map(f, path, field_name)
        if config is None:
            continue
        if type_ == "RequestRedirect":
            out.append(Filter(type=type_, request_redirect=_redirect(r, config, cpath)))
        elif type_ == "RequestHeaderModifier":
            modifier = _header_modifier(r, config, cpath)
            out.append(Filter(type=type_, request_header_modifier=modifier))
        else:
            modifier = _header_modifier(r, config, cpath)
            out.append(Filter(type=type_, response_header_modifier=modifier))
    return tuple(out)


def _header_modifier(r: Reader, config: Mapping[str, Any], path: str) -> HeaderModifier:
    def pairs(key: str) -> tuple[tuple[str, str], ...]:
        items = r.get_list(config, path, key, max_items=16, noun="header")
        out = []
        for hpath, h in r.item_maps(items or [], at(path, key)):
            name = r.get_str(
                h, hpath, "name", required=True, pattern=HEADER_NAME, pattern_text=HEADER_NAME_TEXT
            )
            value = r.get_str(h, hpath, "value", required=True, max_len=4096)
            if name is not None and value is not None:
                out.append((name, value))
        return tuple(out)

    return HeaderModifier(
        set=pairs("set"), add=pairs("add"), remove=r.str_list(config, path, "remove", max_items=16)
    )


def _redirect(r: Reader, config: Mapping[str, Any], path: str) -> RequestRedirect:
    path_type: Any = None
    path_value = None
    p = r.get_map(config, path, "path")
    if p is not None:
        ppath = at(path, "path")
        types = ("ReplaceFullPath", "ReplacePrefixMatch")
        path_type = r.get_str(p, ppath, "type", required=True, enum=types)
        if path_type is not None:
            key = path_type[0].lower() + path_type[1:]
            # CEL: the value field must match the type (replaceFullPath for ReplaceFullPath).
            path_value = r.get_str(p, ppath, key, required=True, max_len=1024)
    hostname = r.get_str(
        config,
        path,
        "hostname",
        pattern=DNS_SUBDOMAIN,
        pattern_text=DNS_SUBDOMAIN_TEXT,
        max_len=253,
    )
    return RequestRedirect(
        scheme=r.get_str(config, path, "scheme", enum=("http", "https")),
        hostname=hostname,
        path_type=path_type,
        path_value=path_value,
        port=r.get_int(config, path, "port", lo=1, hi=65535),
        # CRD default 302 (gateway-api-matching.md 3.1; the proxy alone would use 301: D14).
        status_code=or_default(r.get_int(config, path, "statusCode", enum=(301, 302)), 302),
    )
