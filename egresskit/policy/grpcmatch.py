"""GRPCRoute matching as Linkerd's proxy does it (``grpc/match.rs``; D16).

gRPC matching needs POST; service and method are compared exactly against the first two
segments of ``:path`` (``/pkg.Service/Method``). A rule with no matches matches every gRPC
request. Ranking: service characters, then method characters, then header count (the
hostname rank comes first, at route level).
"""

from __future__ import annotations

from collections.abc import Sequence

from egresskit.manifests.model import GRPCRouteMatch, GRPCRouteRule
from egresskit.policy.httpmatch import _header_matches

#: (service chars, method chars, header count). Bigger wins.
GrpcSummary = tuple[int, int, int]


def split_grpc_path(path: str) -> tuple[str, str] | None:
    parts = path.split("?", 1)[0].split("/")
    if len(parts) != 3 or parts[0] != "":
        return None
    return parts[1], parts[2]


def grpc_rule_summary(
    rule: GRPCRouteRule,
    *,
    method: str,
    path: str,
    headers: Sequence[tuple[str, str]],
) -> GrpcSummary | None:
    if not rule.matches:
        return (0, 0, 0)
    best: GrpcSummary | None = None
    for m in rule.matches:
        s = _summary(m, method=method, path=path, headers=headers)
        if s is not None and (best is None or s > best):
            best = s
    return best


def _summary(
    m: GRPCRouteMatch, *, method: str, path: str, headers: Sequence[tuple[str, str]]
) -> GrpcSummary | None:
    if method != "POST":
        return None
    svc_len = meth_len = 0
    if m.method is not None:
        parsed = split_grpc_path(path)
        if parsed is None:
            return None
        service, rpc = parsed
        if m.method.service is not None:
            if m.method.service != service:
                return None
            svc_len = len(service)
        if m.method.method is not None:
            if m.method.method != rpc:
                return None
            meth_len = len(rpc)
    for hm in m.headers:
        if not _header_matches(hm, headers):
            return None
    return (svc_len, meth_len, len(m.headers))
