"""gRPC unary calls through the local egress proxy, against the same calls made directly.

Rules of the measurement (egresskit issue 14):

* One grpcio client channel (HTTP/2, kept open) in this process calls
  ``helloworld.Greeter/SayHello`` on the simulated internet's gRPC site (grpcio server,
  in this process too), one call at a time: the latency a single caller sees.
* ``direct``: the channel connects to the site itself. ``proxy``: it connects to the client
  pod's proxy listener for ``grpc.example.com:50051`` on a port with a GRPCRoute
  (HTTP/2 without detection), EgressNetwork Deny, the call allowed by the route: every call
  is judged by the engine, forwarded over the proxy's kept upstream HTTP/2 connection and
  counted in ``outbound_grpc_route_*``.
* Warm-up calls first (connections, caches), then ``CALLS`` timed calls per path, paths
  interleaved in rounds so machine load hits both alike. Reported: calls/s over all timed
  calls, median and p99 latency, and the proxy's added median latency.
* The proxy's loop is on its own thread, sharing the interpreter (and the GIL) with the
  client and the server: the figure is for this kit on this machine, not for Linkerd.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import grpc

from egresskit import grpcguide as g
from egresskit import guide
from egresskit.cluster.local import LocalCluster
from egresskit.grpcproto import GREETER

TITLE = "gRPC unary call: through the proxy vs direct"

CALLS = 2_000
QUICK_CALLS = 100
ROUNDS = 5
WARMUP = 50


def _timed(stub: Any, request: bytes, n: int) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        stub(request, timeout=10.0)
        out.append(time.perf_counter() - start)
    return out


def run(quick: bool = False) -> list[dict[str, Any]]:
    calls = QUICK_CALLS if quick else CALLS
    per_round = max(1, calls // ROUNDS)
    request = GREETER.encode_request({"name": "bench"})
    with LocalCluster() as cluster:
        cluster.apply([guide.NAMESPACE, g.EGRESS_NETWORK_DENY, guide.CLIENT_POD, g.GREETER_ROUTE])
        direct = cluster.internet.extra.grpc_address
        assert direct is not None
        # Where the pod's packets to grpc.example.com:50051 land (the facade's own lookup).
        connect_to = cluster._connect_to(
            cluster._pod("client", guide.NAMESPACE_NAME),
            f"http://{g.GRPC_TARGET}",
            guide.NAMESPACE_NAME,
        )
        proxied = connect_to.rsplit(":", 2)[-2:]
        addresses = {
            "direct": f"{direct[0]}:{direct[1]}",
            "proxy": f"{proxied[0]}:{proxied[1]}",
        }
        options = [("grpc.default_authority", g.GRPC_TARGET), ("grpc.enable_http_proxy", 0)]
        channels = {k: grpc.insecure_channel(a, options=options) for k, a in addresses.items()}
        try:
            stubs = {k: ch.unary_unary(GREETER.path) for k, ch in channels.items()}
            for stub in stubs.values():
                _timed(stub, request, WARMUP)
            samples: dict[str, list[float]] = {k: [] for k in stubs}
            elapsed = dict.fromkeys(stubs, 0.0)
            for _ in range(ROUNDS):
                for name, stub in stubs.items():
                    start = time.perf_counter()
                    samples[name] += _timed(stub, request, per_round)
                    elapsed[name] += time.perf_counter() - start
        finally:
            for ch in channels.values():
                ch.close()
        counted = g.proxy_count(
            cluster,
            "outbound_grpc_route_request_statuses_total",
            route_name="grpc-greeter",
            grpc_status="OK",
        )
    rows = []
    for name, lat in samples.items():
        lat.sort()
        rows.append(
            {
                "path": name,
                "calls": len(lat),
                "calls_per_s": round(len(lat) / elapsed[name]),
                "median_ms": round(statistics.median(lat) * 1000, 3),
                "p99_ms": round(lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000, 3),
                "counted_by_proxy": int(counted) if name == "proxy" else None,
            }
        )
    return rows


def summarize(rows: list[dict[str, Any]]) -> list[str]:
    by = {r["path"]: r for r in rows}
    direct, proxy = by["direct"], by["proxy"]
    added = proxy["median_ms"] - direct["median_ms"]
    ratio = proxy["calls_per_s"] / direct["calls_per_s"] if direct["calls_per_s"] else 0.0
    return [
        f"the proxy adds {added:.3f} ms to the median unary call "
        f"({proxy['calls_per_s']} vs {direct['calls_per_s']} calls/s, {ratio:.0%} of direct)",
        f"the proxy counted {proxy['counted_by_proxy']} OK calls on grpc-greeter "
        f"(warm-up {WARMUP} + {proxy['calls']} timed)",
    ]
