"""Routes indexed by hostname, and the choice of the winning route and rule.

Rules (linkerd2-proxy ``http/route/src/lib.rs`` ``find``/``best``; gateway-api-matching.md
1.9, D4, D5, D19):

* A route whose hostnames miss the request's host (or SNI) is skipped; a route without
  hostnames matches every host at the lowest rank.
* Routes compare on (host rank, best rule summary); ties go to the earlier route (policy
  order: docs/facts/linkerd-egress.md 4.8), inside a route to the earlier rule.
* The index groups routes in tiers of equal host rank (exact host, wildcard suffixes
  longest first, no hostnames), so the first tier with a match holds the winner; long
  tiers are narrowed to the routes that can match the path's first segment
  (gateway-api-matching.md 2.1). Neither shortcut changes the winner.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from egresskit.policy.compiledrule import CompiledRule
from egresskit.policy.decision import Ref
from egresskit.policy.hostmatch import NO_HOSTNAMES, HostRank, host_rank


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
                trace.append(f"{route_name(route)}: {route.skipped}")
            continue
        if route.hostnames:
            rank = host_rank(route.hostnames, host)
            if rank is None:
                if trace is not None:
                    trace.append(
                        f"{route_name(route)}: its hostnames ({', '.join(route.hostnames)}) "
                        f"do not cover {host or '(no host)'}"
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
                trace.append(f"{route_name(route)}: no rule matches")
            continue
        key = (rank, route_best[0])
        if trace is not None and route.is_default:
            trace.append(
                f"{route_name(route)}: matches everything, and loses to any other route "
                "that matches"
            )
        elif trace is not None:
            trace.append(
                f"{route_name(route)}: rule {route_best[1].index} matches "
                f"({_rank_text(rank, host)}; {_summary_text(route_best[0])})"
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


def route_name(route: CompiledRoute) -> str:
    if route.is_default:
        return f"{route.ref.name} (default route)"
    return f"{route.ref.kind} {route.ref.namespace}/{route.ref.name}"


def _rank_text(rank: HostRank, host: str | None) -> str:
    """How the route's hostnames matched, in words (reasoning only)."""
    return {
        0: "the route lists no hostnames, so it applies to every host",
        1: f"one of its wildcard hostnames covers {host}",
        2: f"it names {host} exactly",
    }[rank[0]]


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _summary_text(summary: object) -> str:
    """What a winning rule matched on, in words; specificity is compared in this order."""
    parts: list[str] = []
    if isinstance(summary, tuple) and len(summary) == 4:
        path, headers, query, method = summary
        if path:
            parts.append(f"the path (a {path}-character match)")
        if headers:
            parts.append(_plural(headers, "header"))
        if query:
            parts.append(_plural(query, "query parameter"))
        if method:
            parts.append("the method")
    elif isinstance(summary, tuple) and len(summary) == 3:
        service, method, headers = summary
        if service:
            parts.append("the gRPC service")
        if method:
            parts.append("the gRPC method")
        if headers:
            parts.append(_plural(headers, "header"))
    else:  # TLS rules have no matches: the SNI alone decides
        return "TLS routes match by SNI only"
    return "it matches on " + ", ".join(parts) if parts else "it matches every request"


def select_route(
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
