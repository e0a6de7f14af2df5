"""Policy engine throughput: decisions per second against the number of routes.

Rules of the measurement (egresskit issue 2):

* One EgressNetwork (trafficPolicy Deny, an allow-list, the way egress policy is usually
  written) in the global egress namespace; clients in two other namespaces, so every route
  is a producer route that applies to both (docs/facts/linkerd-egress.md 2.3, 4.7).
* N HTTPRoutes on port 80 and N TLSRoutes on port 443. Each HTTPRoute has its own hostname,
  1-3 rules with path prefixes, some with a header or method; every 10th route uses a
  wildcard hostname; ``max(1, N // 20)`` routes (~5%) have no hostnames.
* The requests are a fixed list, built once per size from a seeded RNG: hits on random
  routes (exact, wildcard, hostname-less), misses that fall through to the default route
  (unknown host, known host with a path no rule matches), and TLS connections with SNI.
* The snapshot is built once per size (``build_s``, not part of the rate); one untimed pass
  compiles and memoises the per-port tables (``warm_s``); then ``decide()`` runs over the
  list in repeated rounds with the garbage collector paused (as ``timeit`` does). The rate
  is reported from the best round and the median round.
* The baseline runs in the same process on the same list, in rounds interleaved with the
  decide rounds: a one-line function doing one attribute read and one ``dict.get`` per
  request. ``vs_baseline`` = decisions/s divided by baseline lookups/s, so runs on
  different (or differently loaded) machines compare.
"""

from __future__ import annotations

import gc
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from egresskit.manifests import load_manifests
from egresskit.policy.decision import Decision, HttpRequest, Request, TlsConnection
from egresskit.policy.engine import decide
from egresskit.policy.snapshot import Snapshot

TITLE = "Policy engine: decisions per second"

SIZES = (10, 100, 1_000, 10_000)
QUICK_SIZES = (10, 100)
REQUESTS = 2_000
QUICK_REQUESTS = 200
ROUNDS = 11
QUICK_ROUNDS = 2
BASELINE_REPEAT = 4
SEED = 2

#: The issue's targets: throughput at 1,000 routes, and the cost of growing 10 -> 10,000.
TARGET_SIZE = 1_000
TARGET_DPS = 200_000
MAX_SLOWDOWN = 2.0

EN_NAMESPACE = "linkerd-egress"  # the global egress namespace (docs/facts/linkerd-egress.md 2.3)
EN_NAME = "egress"
CLIENT_NAMESPACES = ("shop", "billing")
#: Destinations outside the cluster networks, so the EgressNetwork (no ``networks``: all
#: but the cluster networks) is the parent (docs/facts/linkerd-egress.md 1, 2.3).
DST_IPS = tuple(f"203.0.113.{i}" for i in range(1, 9)) + tuple(
    f"198.51.100.{i}" for i in range(1, 9)
)
HTTP_PORT = 80
TLS_PORT = 443

#: Request mix, in percent; the rest are TLS connections (3/4 hits, 1/4 misses).
MIX_EXACT = 50
MIX_WILDCARD = 10
MIX_NOHOST = 5
MIX_UNKNOWN_HOST = 10
MIX_WRONG_PATH = 5


# ================================================================== the workload


@dataclass(frozen=True, kw_only=True)
class RouteSpec:
    """What one generated HTTPRoute accepts, so requests can be aimed at it."""

    index: int
    hostname: str | None  # None: no hostnames; "*.x" for a wildcard
    #: Per rule: (path prefix, header (name, value) or None, method or None).
    rules: tuple[tuple[str, tuple[str, str] | None, str | None], ...]


def host_of(i: int) -> str:
    return f"svc-{i:05d}.example.com"


def route_specs(n: int, rng: random.Random) -> list[RouteSpec]:
    nohost = set(rng.sample(range(n), max(1, n // 20)))
    out = []
    for i in range(n):
        if i in nohost:
            hostname = None
        elif i % 10 == 3:
            hostname = f"*.zone-{i:05d}.example.net"
        else:
            hostname = host_of(i)
        rules = []
        for r in range(rng.randint(1, 3)):
            # Hostname-less routes match every host, so their paths are made unique to
            # them; otherwise they would swallow the misses and hide the fall-through.
            prefix = f"/only-{i:05d}/v{r}" if hostname is None else f"/api/v{r + 1}"
            header = ("x-tenant", f"t{rng.randint(0, 9)}") if rng.random() < 0.3 else None
            method = "POST" if rng.random() < 0.2 else None
            rules.append((prefix, header, method))
        out.append(RouteSpec(index=i, hostname=hostname, rules=tuple(rules)))
    return out


def manifests(specs: Sequence[RouteSpec]) -> list[dict[str, Any]]:
    """The EgressNetwork, one HTTPRoute per spec on port 80, as many TLSRoutes on 443."""
    docs: list[dict[str, Any]] = [
        {
            "apiVersion": "policy.linkerd.io/v1alpha1",
            "kind": "EgressNetwork",
            "metadata": {"name": EN_NAME, "namespace": EN_NAMESPACE},
            "spec": {"trafficPolicy": "Deny"},
        }
    ]
    for spec in specs:
        rules = []
        for prefix, header, method in spec.rules:
            match: dict[str, Any] = {"path": {"type": "PathPrefix", "value": prefix}}
            if header is not None:
                match["headers"] = [{"name": header[0], "value": header[1]}]
            if method is not None:
                match["method"] = method
            rules.append({"matches": [match]})
        docs.append(_route("HTTPRoute", f"http-{spec.index:05d}", HTTP_PORT, spec.hostname, rules))
        # TLSRoutes get a hostname each: a hostname-less one would take every SNI.
        sni = spec.hostname or host_of(spec.index)
        # A TLSRoute rule needs backendRefs; the parent itself means "the original
        # destination", as in the guide's tls-egress route (docs/facts/linkerd-egress.md 4.4).
        to_parent = {"group": "policy.linkerd.io", "kind": "EgressNetwork", "name": EN_NAME}
        tls_rules = [{"backendRefs": [to_parent]}]
        docs.append(_route("TLSRoute", f"tls-{spec.index:05d}", TLS_PORT, sni, tls_rules))
    return docs


def _route(
    kind: str, name: str, port: int, hostname: str | None, rules: list[dict[str, Any]]
) -> dict[str, Any]:
    version = "v1" if kind == "HTTPRoute" else "v1alpha2"
    spec: dict[str, Any] = {
        "parentRefs": [
            {
                "group": "policy.linkerd.io",
                "kind": "EgressNetwork",
                "name": EN_NAME,
                "namespace": EN_NAMESPACE,
                "port": port,
            }
        ],
        "rules": rules,
    }
    if hostname is not None:
        spec["hostnames"] = [hostname]
    return {
        "apiVersion": f"gateway.networking.k8s.io/{version}",
        "kind": kind,
        "metadata": {"name": name, "namespace": EN_NAMESPACE},
        "spec": spec,
    }


def requests(specs: Sequence[RouteSpec], count: int, rng: random.Random) -> list[Request]:
    """A fixed mix of hits, misses and TLS connections (see the MIX_* percentages)."""
    exact = [s for s in specs if s.hostname is not None and not s.hostname.startswith("*.")]
    wild = [s for s in specs if s.hostname is not None and s.hostname.startswith("*.")]
    nohost = [s for s in specs if s.hostname is None]
    out: list[Request] = []
    for _ in range(count):
        ns = rng.choice(CLIENT_NAMESPACES)
        ip = rng.choice(DST_IPS)
        roll = rng.randrange(100)
        limit = 0
        kind = "tls"
        for name, share in (
            ("exact", MIX_EXACT),
            ("wildcard", MIX_WILDCARD),
            ("nohost", MIX_NOHOST),
            ("unknown", MIX_UNKNOWN_HOST),
            ("wrongpath", MIX_WRONG_PATH),
        ):
            limit += share
            if roll < limit:
                kind = name
                break
        if kind == "wildcard" and not wild:
            kind = "exact"
        if kind == "tls":
            spec = rng.choice(specs)
            hit = rng.random() < 0.75
            sni = (spec.hostname or host_of(spec.index)).replace("*", "edge")
            out.append(
                TlsConnection(
                    client_namespace=ns,
                    dst_ip=ip,
                    dst_port=TLS_PORT,
                    sni=sni if hit else f"unknown-{rng.randrange(10**6)}.example.org",
                )
            )
            continue
        if kind in ("exact", "wildcard", "nohost"):
            spec = rng.choice({"exact": exact, "wildcard": wild, "nohost": nohost}[kind])
            host = (
                host_of(spec.index)
                if spec.hostname is None
                else spec.hostname.replace("*", f"api{rng.randrange(3)}")
            )
            out.append(_aimed(spec, host, ns, ip, rng))
        elif kind == "unknown":
            out.append(
                HttpRequest(
                    client_namespace=ns,
                    dst_ip=ip,
                    dst_port=HTTP_PORT,
                    host=f"unknown-{rng.randrange(10**6)}.example.org",
                    path="/api/v1/items",
                )
            )
        else:
            spec = rng.choice(exact)
            out.append(
                HttpRequest(
                    client_namespace=ns,
                    dst_ip=ip,
                    dst_port=HTTP_PORT,
                    host=host_of(spec.index),
                    path="/internal/metrics",
                )
            )
    return out


def _aimed(spec: RouteSpec, host: str, ns: str, ip: str, rng: random.Random) -> HttpRequest:
    prefix, header, method = rng.choice(spec.rules)
    return HttpRequest(
        client_namespace=ns,
        dst_ip=ip,
        dst_port=HTTP_PORT,
        method=method or "GET",
        path=f"{prefix}/items/{rng.randrange(1000)}?page=2",
        host=host,
        headers=(("user-agent", "bench/1"), *([header] if header else [])),
    )


# ==================================================================== measuring


T = TypeVar("T")


def _round(fn: Callable[[T, Request], object], arg: T, reqs: Sequence[Request]) -> float:
    start = time.perf_counter()
    for req in reqs:
        fn(arg, req)
    return time.perf_counter() - start


def _rounds(
    snap: Snapshot, table: dict[int, int], reqs: Sequence[Request], rounds: int
) -> tuple[list[float], list[float]]:
    """Times of ``rounds`` decide rounds and of the baseline rounds run between them.

    Interleaving keeps both under the same load when the machine is shared, so the ratio
    holds even when the absolute numbers wander.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        times: list[float] = []
        base: list[float] = []
        for _ in range(rounds):
            times.append(_round(decide, snap, reqs))
            # The baseline is ~200x cheaper, so one round is short and noisy: take several.
            base.extend(_round(baseline_lookup, table, reqs) for _ in range(BASELINE_REPEAT))
        return times, base
    finally:
        if enabled:
            gc.enable()


def baseline_lookup(table: dict[int, int], req: Request) -> int | None:
    """The baseline's "decision": one attribute read and one dict lookup."""
    return table.get(req.dst_port)


def is_hit(d: Decision) -> bool:
    """Served by an explicit route rather than a synthesised default (docs/facts/linkerd-egress.md
    3)."""
    return d.route is not None and d.route.kind != "default"


def measure(n: int, *, count: int, rounds: int, seed: int = SEED) -> dict[str, Any]:
    """One row: build, warm and time ``decide()`` for ``n`` HTTPRoutes (+ ``n`` TLSRoutes)."""
    rng = random.Random(seed)
    specs = route_specs(n, rng)
    docs = manifests(specs)
    reqs = requests(specs, count, rng)

    start = time.perf_counter()
    snap = Snapshot.build(load_manifests(docs))
    build_s = time.perf_counter() - start

    start = time.perf_counter()
    decisions = [decide(snap, r) for r in reqs]
    warm_s = time.perf_counter() - start
    hits = sum(1 for d in decisions if is_hit(d))

    times, base = _rounds(snap, {HTTP_PORT: 1, TLS_PORT: 2}, reqs, rounds)
    best_dps = len(reqs) / min(times)
    baseline_lps = len(reqs) / min(base)
    return {
        "routes": n,
        "requests": len(reqs),
        "rounds": rounds,
        "build_s": round(build_s, 3),
        "warm_s": round(warm_s, 3),
        "hits_pct": round(100.0 * hits / len(reqs), 1),
        "best_dps": round(best_dps),
        "median_dps": round(len(reqs) / statistics.median(times)),
        "us_per_decision": round(1e6 * min(times) / len(reqs), 2),
        "baseline_lps": round(baseline_lps),
        "vs_baseline": round(best_dps / baseline_lps, 4),
    }


def run(*, quick: bool = False) -> list[dict[str, Any]]:
    """One row per size; ``slowdown`` is the smallest size's rate over this size's."""
    sizes = QUICK_SIZES if quick else SIZES
    count = QUICK_REQUESTS if quick else REQUESTS
    rounds = QUICK_ROUNDS if quick else ROUNDS
    rows = [measure(n, count=count, rounds=rounds) for n in sizes]
    smallest = rows[0]["best_dps"]
    for row in rows:
        row["slowdown"] = round(smallest / row["best_dps"], 2)
    return rows


def summarize(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The issue's two targets, judged on these rows (only when the sizes were run)."""
    by_size = {row["routes"]: row for row in rows}
    lines = []
    at = by_size.get(TARGET_SIZE)
    if at is not None:
        verdict = "met" if at["best_dps"] >= TARGET_DPS else "NOT met"
        lines.append(
            f"{TARGET_SIZE:,} routes: {at['best_dps']:,} decisions/s "
            f"(target >= {TARGET_DPS:,}): {verdict}"
        )
    lo, hi = min(by_size), max(by_size)
    if hi > lo:
        slowdown = by_size[hi]["slowdown"]
        line = f"{hi:,} routes vs {lo:,}: {slowdown}x slower"
        if (lo, hi) == (SIZES[0], SIZES[-1]):  # the target is about the full range only
            verdict = "met" if slowdown <= MAX_SLOWDOWN else "NOT met"
            line += f" (target <= {MAX_SLOWDOWN}x): {verdict}"
        lines.append(line)
    return lines
