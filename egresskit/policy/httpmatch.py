"""HTTP route matching and Linkerd's per-rule precedence summary.

A rule matches when ANY of its matches is satisfied; a match is satisfied when ALL of its
conditions hold (Gateway API ``httproute_types.go``). A rule is judged by its best
satisfied match. The summary that ranks matches is Linkerd's (``http/route/src/http/
match.rs`` ``RequestMatch`` Ord; gateway-api-matching.md D1, D2, D3, D7), which differs
from the Gateway API spec's order (path, method, headers, query).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from urllib.parse import parse_qsl

from egresskit.manifests.model import HTTPRouteMatch, PathMatch, ValueMatch

#: (path length, header count, query-param count, has method). Bigger wins.
MatchSummary = tuple[int, int, int, int]


def match_summary(
    match: HTTPRouteMatch,
    *,
    method: str,
    path: str,
    query: str,
    headers: Sequence[tuple[str, str]],
) -> MatchSummary | None:
    """Linkerd's summary of one satisfied match, or None when it is not satisfied."""
    path_len = path_match_length(match.path, path)
    if path_len is None:
        return None
    if match.method is not None and match.method != method:
        return None
    for hm in match.headers:
        if not _header_matches(hm, headers):
            return None
    if match.query_params:
        params = _query_pairs(query)
        for qm in match.query_params:
            if not _value_in(qm, [v for k, v in params if k == qm.name]):
                return None
    return (
        # 1. longest path match, whatever its kind (D2); prefix length after trimming "/" (D3)
        path_len,
        # 2. then the most header matches (D1: headers before method in Linkerd)
        len(match.headers),
        # 3. then the most query-param matches
        len(match.query_params),
        # 4. then having a method match
        1 if match.method is not None else 0,
    )


def path_match_length(pm: PathMatch, path: str) -> int | None:
    """Linkerd ``match/path.rs``: length of the match, None when it does not match."""
    if pm.type == "Exact":
        return len(pm.value) if path == pm.value else None
    if pm.type == "RegularExpression":
        # A regex must match the whole path and counts as the path's full length (D2).
        return len(path) if _regex(pm.value).fullmatch(path) else None
    prefix = pm.value
    if prefix == "/":
        return 1
    # Element-wise prefix: strip trailing "/" from both, then the rest must be empty or
    # start with "/" (gateway-api-matching.md 2.1).
    p = prefix.rstrip("/")
    r = path.rstrip("/")
    if not r.startswith(p):
        return None
    rest = r[len(p) :]
    if rest and not rest.startswith("/"):
        return None
    return len(p)


def _header_matches(hm: ValueMatch, headers: Sequence[tuple[str, str]]) -> bool:
    # Names compare case-insensitively; ANY value of a repeated header may match (D7).
    name = hm.name.lower()
    return _value_in(hm, [v for k, v in headers if k.lower() == name])


def _value_in(vm: ValueMatch, values: Sequence[str]) -> bool:
    if vm.type == "RegularExpression":
        rx = _regex(vm.value)
        return any(rx.fullmatch(v) for v in values)
    return vm.value in values


def _query_pairs(query: str) -> list[tuple[str, str]]:
    # Form-urlencoded decoding: "+" is a space, %XX decoded; any occurrence counts (D7).
    return parse_qsl(query, keep_blank_values=True)


@lru_cache(maxsize=1024)
def _regex(pattern: str) -> re.Pattern[str]:
    # Linkerd uses Rust's regex crate (RE2-like); Python's re is a close superset for the
    # patterns routes use. Assumption recorded in the issue note.
    return re.compile(pattern)


def split_target(target: str) -> tuple[str, str]:
    """``/get?x=1`` -> (``/get``, ``x=1``). The path is compared raw, never decoded (D7)."""
    path, _, query = target.partition("?")
    return (path or "/"), query
