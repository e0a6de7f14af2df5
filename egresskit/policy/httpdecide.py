"""An HTTP or gRPC request on a port with routes: the winning rule, its decision, and a
redirect's ``Location``.

Rules (gateway-api-matching.md 1.9, D1, D2, D3, D7, D8, D14, D16):

* HTTP rules are ranked by Linkerd's summary (path, headers, query params, method),
  through a rule's compiled fast path when it has one; gRPC rules by service, method,
  headers (D16).
* No matching route gives 404 or gRPC NOT_FOUND (D8).
* A RequestRedirect filter answers with the ``Location`` Linkerd's proxy builds (D14).
* A gRPC client that meets the synthetic 403 of an HTTP port gets grpc-status
  FAILED_PRECONDITION (docs/facts/linkerd-egress.md 3).
"""

from __future__ import annotations

from dataclasses import replace

from egresskit.policy.compiledrule import (
    CompiledRule,
    compiled_summary,
    path_only_summary,
    pick_choice,
)
from egresskit.policy.decision import Decision, HttpRequest, RouteFamily
from egresskit.policy.grpcmatch import grpc_rule_summary
from egresskit.policy.hostmatch import normalize_host
from egresskit.policy.httpmatch import MatchSummary, match_summary, split_target
from egresskit.policy.portpolicy import PortPolicy, failed, with_protocol
from egresskit.policy.routetable import HostTable, Summary, route_name, select_route


def decide_http(
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
        # Built when a rule first looks at headers (path-only rules never do).
        header_map: dict[str, list[str]] | None = None

        def summary(rule: CompiledRule) -> Summary | None:
            nonlocal header_map
            if rule.paths is not None:
                return path_only_summary(rule.paths, path, trimmed)
            if rule.compiled is not None:
                if header_map is None:
                    header_map = {}
                    for name, value in headers:
                        header_map.setdefault(name.lower(), []).append(value)
                return compiled_summary(rule.compiled, path, trimmed, method, header_map)
            best: MatchSummary | None = None
            for m in rule.matches:
                s = match_summary(m, method=method, path=path, query=query, headers=headers)
                if s is not None and (best is None or s > best):
                    best = s
            return best

    found = select_route(table, host, summary, trace, path if family == "http" else None)
    if found is None:
        # NoRoute -> 404 / gRPC NOT_FOUND (D8); impossible for an EgressNetwork, whose
        # default route matches everything.
        return replace(failed(policy, "no route matches"), http_status=404)
    route, rule = found
    decision = pick_choice(rule, req.backend_pick)
    if trace is not None:
        trace.append(
            f"chosen: {route_name(route)}, rule {rule.index} (a route naming the host beats "
            "a wildcard, which beats one without hostnames; then the most specific match "
            "wins: longer path, then more headers, query parameters, a method; ties go to "
            "the older route, then the earlier rule)"
        )
    if rule.redirect is not None and rule.redirect.request_redirect is not None:
        return _redirect(decision, rule, req, host, path, query, policy)
    if req.grpc and family == "http" and decision.http_status == 403:
        # A gRPC client on a port with no GRPCRoute: the synthetic 403 is rendered as
        # grpc-status FAILED_PRECONDITION (9) (spec 3, derived from respond.rs).
        decision = replace(decision, grpc_status="FAILED_PRECONDITION")
    return with_protocol(decision, policy)


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
