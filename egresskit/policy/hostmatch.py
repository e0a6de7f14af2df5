"""Hostname matching for HTTP authorities and TLS SNI, as Linkerd's proxy does it.

Rules (linkerd2-proxy ``http/route/src/http/match/host.rs``, ``tls/route/src/sni.rs``;
gateway-api-matching.md D4, D5, D19):

* The request's port is ignored, comparison is case-insensitive, a trailing ``.`` is
  tolerated.
* ``*.example.com`` is a suffix match over ONE OR MORE labels; never the apex.
* An exact match beats any suffix match; a longer name beats a shorter one.
* A route without hostnames matches every host at the lowest rank.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache

#: Host rank tuples compare with ``>``: (kind, length); kind 2 = exact, 1 = suffix,
#: 0 = the route has no hostnames (matches anything, ranks lowest).
HostRank = tuple[int, int]
NO_HOSTNAMES: HostRank = (0, 0)


@lru_cache(maxsize=4096)  # a pure function of its text; clients repeat their hosts
def normalize_host(authority: str | None) -> str | None:
    """``Host``/``:authority``/SNI text to the name Linkerd matches on (no port, lower case)."""
    if not authority:
        return None
    host = authority.strip()
    if host.startswith("["):  # IPv6 literal with or without port
        end = host.find("]")
        return host[1:end].lower() if end > 0 else None
    if host.count(":") == 1:
        host = host.split(":", 1)[0]
    host = host.rstrip(".").lower()
    return host or None


def host_rank(patterns: Iterable[str], host: str | None) -> HostRank | None:
    """The best rank of ``host`` against a route's hostnames, or None when none match."""
    best: HostRank | None = None
    if host is None:
        return None
    for pattern in patterns:
        rank = _rank_one(pattern, host)
        if rank is not None and (best is None or rank > best):
            best = rank
    return best


def _rank_one(pattern: str, host: str) -> HostRank | None:
    pattern = pattern.rstrip(".").lower()
    if pattern.startswith("*."):
        suffix = pattern[1:]  # ".example.com"
        # One or more labels before the suffix: "a.example.com" yes, "example.com" no.
        if host.endswith(suffix) and len(host) > len(suffix):
            return (1, len(suffix))
        return None
    if pattern == host:
        return (2, len(pattern))
    return None


def suffixes_of(host: str) -> list[str]:
    """Wildcard keys that could match ``host``, longest first: a.b.c -> .b.c, .c."""
    out = []
    idx = host.find(".")
    while idx != -1:
        out.append(host[idx:])
        idx = host.find(".", idx + 1)
    return out
