"""The pieces every route kind shares: spec, hostnames, parentRefs, backendRefs, filters.

Job: read the parts of HTTPRoute, GRPCRoute, TLSRoute and TCPRoute specs that are the same
across the route kinds into model values, with the CRD defaults filled in, plus the rules
that are not the CRD's: Linkerd's admission webhook (linkerd-egress.md 4.2 and 4.8) and the
Gateway API's prose where its CRD is silent.

Rules:

- The document has passed its CRD's schema and CEL rules
  (:mod:`egresskit.manifests.crd_validation`): types, enums, patterns and bounds hold, so
  the readers here only read; none of those rules is repeated.
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
from egresskit.manifests.reader import Reader, at, show
from egresskit.manifests.route_schema import FILTER_FIELDS, Flavor


def read_rule_name(r: Reader, rule: Mapping[str, Any], rpath: str) -> str | None:
    return r.get_str(rule, rpath, "name")


def read_route_spec(r: Reader, doc: Mapping[str, Any], flavor: Flavor) -> dict[str, Any]:
    # Gateway API CRDs require spec (the CRD says so); Linkerd's HTTPRoute CRD does not.
    return r.get_map(doc, "", "spec") or {}


def read_hostnames(r: Reader, spec: Mapping[str, Any]) -> tuple[str, ...]:
    out = []
    for i, name in enumerate(r.str_list(spec, "spec", "hostnames")):
        if _is_ip(name):
            # Gateway API: "IPs are not allowed" in hostnames (its Hostname type's doc; the
            # CRD pattern alone lets a dotted quad through).
            r.problem(at("spec.hostnames", i), "a hostname, not an IP address", show(name))
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
    out = []
    for path, p in r.item_maps(r.get_list(spec, "spec", "parentRefs") or [], "spec.parentRefs"):
        ref = ParentRef(
            group=p["group"],  # CRD defaults: group and kind (Gateway) are always there
            kind=p["kind"],
            namespace=p.get("namespace") or route_ns,
            name=p["name"],
            port=p.get("port"),
            section_name=p.get("sectionName"),
        )
        if ref.is_egress_network and ref.port is None:
            # Linkerd's webhook rejects port-less EgressNetwork parents (linkerd-egress.md 4.2).
            r.problem(
                at(path, "port"), "a port (required when the parent is an EgressNetwork)", "nothing"
            )
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
    required: bool = False,
) -> tuple[BackendRef, ...]:
    items = r.get_list(rule, rpath, "backendRefs", required=required)
    out = []
    for path, b in r.item_maps(items or [], at(rpath, "backendRefs")):
        namespace = b.get("namespace")
        if flavor.legacy_backends:
            # These CRD versions have no group, kind or weight; namespace defaults to
            # "default" (the CRD's own default, already filled in).
            group, kind, weight = "", "Service", 1
        else:
            group, kind, weight = b["group"], b["kind"], b["weight"]  # CRD defaults
        if b.get("name") is None:
            # Only Linkerd's v1alpha1/v1beta1 CRDs leave a backend's name optional; a backend
            # without one names nothing to send to.
            r.problem(at(path, "name"), "a value (required)", "nothing")
            continue
        filters: tuple[Filter, ...] = ()
        if with_filters:
            filters = read_filters(r, b, path, flavor, unsupported)
        out.append(
            BackendRef(
                group=group,
                kind=kind,
                namespace=namespace or route_ns,
                name=b["name"],
                port=b.get("port"),
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
    unsupported: list[str],
) -> tuple[Filter, ...]:
    out = []
    for path, f in r.item_maps(r.get_list(owner, opath, "filters") or [], at(opath, "filters")):
        type_ = f["type"]
        if type_ in flavor.unconvertible:
            unsupported.append(f"{path}: {type_} filter")
            continue
        field_name = FILTER_FIELDS[type_]
        config = f.get(field_name)
        if config is None:
            # The Gateway API CRDs refuse this by CEL; Linkerd's own CRD has no such rule, and
            # Linkerd cannot build the filter without its configuration.
            r.problem(at(path, field_name), f"a value (required when type is {type_})", "nothing")
            continue
        cpath = at(path, field_name)
        if type_ == "RequestRedirect":
            out.append(Filter(type=type_, request_redirect=_redirect(config)))
        elif type_ == "RequestHeaderModifier":
            modifier = _header_modifier(r, config, cpath)
            out.append(Filter(type=type_, request_header_modifier=modifier))
        else:
            modifier = _header_modifier(r, config, cpath)
            out.append(Filter(type=type_, response_header_modifier=modifier))
    return tuple(out)


def _header_modifier(r: Reader, config: Mapping[str, Any], path: str) -> HeaderModifier:
    def pairs(key: str) -> tuple[tuple[str, str], ...]:
        items = r.item_maps(config.get(key) or [], at(path, key))
        return tuple((h["name"], h["value"]) for _, h in items)

    return HeaderModifier(
        set=pairs("set"), add=pairs("add"), remove=tuple(config.get("remove") or ())
    )


def _redirect(config: Mapping[str, Any]) -> RequestRedirect:
    path_type: Any = None
    path_value = None
    p = config.get("path")
    if p is not None:
        path_type = p["type"]
        # The value sits in the field named after the type (CEL: replaceFullPath for
        # ReplaceFullPath); Linkerd's CRD has no such rule, so a missing value stays None.
        path_value = p.get(path_type[0].lower() + path_type[1:])
    return RequestRedirect(
        scheme=config.get("scheme"),
        hostname=config.get("hostname"),
        path_type=path_type,
        path_value=path_value,
        port=config.get("port"),
        # CRD default 302, filled in (gateway-api-matching.md 3.1; the proxy alone would use
        # 301: D14).
        status_code=config["statusCode"],
    )
