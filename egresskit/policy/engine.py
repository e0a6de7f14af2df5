"""The policy engine: values in, a :class:`Decision` out.

``decide(snapshot, request)`` answers what Linkerd's outbound proxy does with one HTTP
request, TLS connection or opaque TCP connection from a meshed client. It follows the
controller and the proxy step by step (docs/facts/linkerd-egress.md):

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

Job of this module: ``decide``, the dispatch on the port's protocol and the request's
kind, and the TLS and opaque answers. The steps live in:

* :mod:`~egresskit.policy.portpolicy`: steps 1 and 2, per (client namespace, IP, port);
* :mod:`~egresskit.policy.routecompiler`: steps 3 to 5 for every rule, compiled once;
* :mod:`~egresskit.policy.compiledrule` and :mod:`~egresskit.policy.routetable`: the
  compiled rules, the route index and the precedence that picks the winner;
* :mod:`~egresskit.policy.httpdecide`: HTTP and gRPC requests, and redirects.

The names other code imports from here are re-exported (``__all__``).
"""

from __future__ import annotations

from egresskit.policy.compiledrule import CompiledRule, pick_choice
from egresskit.policy.decision import Decision, HttpRequest, Request, TcpConnection, TlsConnection
from egresskit.policy.hostmatch import normalize_host
from egresskit.policy.httpdecide import _replace_prefix, decide_http
from egresskit.policy.portpolicy import (
    FALLBACK_NAME,
    POLICY_GROUP,
    PortPolicy,
    Resolution,
    failed,
    port_policy,
    resolve_parent,
    with_protocol,
)
from egresskit.policy.routecompiler import DEFAULT_ROUTE_NAMES, DENY_MESSAGE
from egresskit.policy.routetable import CompiledRoute, HostTable, route_name, select_route
from egresskit.policy.snapshot import Snapshot

#: What other code imports from here; ``_replace_prefix`` is pinned by the D14 tests.
__all__ = [
    "DEFAULT_ROUTE_NAMES",
    "DENY_MESSAGE",
    "FALLBACK_NAME",
    "POLICY_GROUP",
    "CompiledRoute",
    "CompiledRule",
    "HostTable",
    "PortPolicy",
    "Resolution",
    "_replace_prefix",
    "decide",
    "port_policy",
    "resolve_parent",
]


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
            return decide_http(policy, policy.http, request, "http", trace)
        if proto == "grpc":
            if request.http_version != "2":
                return failed(
                    policy,
                    "the port serves gRPC (HTTP/2 without detection); an "
                    "HTTP/1 request fails the HTTP/2 handshake",
                )
            assert policy.grpc is not None
            return decide_http(policy, policy.grpc, request, "grpc", trace)
        if proto == "tls":
            return failed(
                policy,
                "the port requires TLS with an SNI; plaintext has no SNI (Could not find SNI)",
            )
        return _opaque(policy, trace)
    if isinstance(request, TlsConnection):
        if proto == "tls":
            assert policy.tls is not None
            return _decide_tls(policy, policy.tls, request, trace)
        if proto == "grpc":
            return failed(policy, "the port serves gRPC (HTTP/2); TLS bytes are not HTTP/2")
        if trace is not None and proto == "detect":
            trace.append(
                "TLS is not HTTP, so detection falls back to the opaque route "
                "(no TLSRoute on this port)"
            )
        return _opaque(policy, trace)
    assert isinstance(request, TcpConnection)
    if proto == "tls":
        return failed(policy, "the port requires TLS with an SNI (Could not find SNI)")
    if proto == "grpc":
        return failed(policy, "the port serves gRPC (HTTP/2 without detection)")
    return _opaque(policy, trace)


def _opaque(policy: PortPolicy, trace: list[str] | None) -> Decision:
    assert policy.tcp is not None
    if trace is not None and policy.tcp.route is not None:
        trace.append(f"opaque traffic takes {policy.tcp.route}")
    return with_protocol(policy.tcp, policy)


def _decide_tls(
    policy: PortPolicy, table: HostTable, conn: TlsConnection, trace: list[str] | None
) -> Decision:
    if not conn.sni:
        return failed(policy, "the ClientHello carries no SNI (Could not find SNI)")
    sni = normalize_host(conn.sni)
    found = select_route(table, sni, lambda rule: (0,), trace)
    if found is None:  # pragma: no cover - the default TLS route matches every SNI
        return failed(policy, "no TLS route matches")
    route, rule = found
    if trace is not None:
        trace.append(f"chosen: {route_name(route)}")
    return with_protocol(pick_choice(rule, conn.backend_pick), policy)
