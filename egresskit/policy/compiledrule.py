"""A route rule compiled for the hot path: its decisions, and its matches as tuples.

Rules:

* A rule holds one (cumulative weight bound, decision) pair per usable backendRef, in
  order; a request's ``backend_pick`` takes the first bound above it (weighted random
  choice: docs/facts/linkerd-egress.md 4.4, gateway-api-matching.md D22).
* Path-only matches, and matches with exact headers and/or a method, are compiled once
  into tuples and summarised without a :func:`~egresskit.policy.httpmatch.match_summary`
  call per match, by the same rules (gateway-api-matching.md D1, D2, D3, D7). Any other
  match (query params, regular expressions) keeps the slow path; gRPC rules are matched
  by :mod:`egresskit.policy.grpcmatch`.
"""

from __future__ import annotations

from dataclasses import dataclass

from egresskit.manifests.model import Filter, GRPCRouteRule, HTTPRouteMatch
from egresskit.policy.decision import Decision
from egresskit.policy.httpmatch import MatchSummary


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


def compiled_summary(
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


def path_only_summary(
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


def pick_choice(rule: CompiledRule, pick: float) -> Decision:
    for bound, decision in rule.choices:
        if pick < bound:
            return decision
    return rule.choices[-1][1]
