"""The Python an HTTP/1 exchange costs the proxy's loop thread, without sockets.

What it measures: the egress proxy's own work for one forwarded request and its answer,
everything the loop thread runs in Python between the bytes arriving and the bytes
leaving: the asyncio shell (:mod:`egresskit.mesh.http1`), the exchange machine, both
llhttp parsers with their callbacks, the policy decision and the route metrics. The
sockets are replaced by transports that drop what is written (the shell calls the same
methods on them), so what the kernel and uvloop cost (see ``--cpu`` of
:mod:`benchmarks.bench_dataplane`) stays out and the figure is steady on a shared
machine: it is how two versions of the proxy's Python are compared.

Rules:

* Requests vary as in the data-plane benchmark's headline (a path and an
  ``x-request-id`` of their own); the policy is the same (the guide's EgressNetwork and
  an HTTPRoute matched on hostname and path prefix). One client connection, kept alive,
  with one pooled upstream connection (what ``wrk -c16`` makes of each of its
  connections).
* CPU time of this thread (``time.thread_time``); the figure is the lowest of several
  rounds (interference only adds), after one untimed round.
* Beside the whole exchange, its three largest parts measured alone: the request head's
  parse, the response's parse, and the policy decision (the engine's request value, the
  decision, the upstream).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from benchmarks.bench_dataplane import BENCH_ROUTE, HOST, PATH
from egresskit import guide
from egresskit.cluster.local import LocalCluster
from egresskit.mesh import http1
from egresskit.mesh.http1_wire import Request, RequestParser, ResponseParser

TITLE = "HTTP/1 exchange: the proxy's Python per request, without sockets"

#: An nginx answer, as the data-plane benchmark's upstream sends it.
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Mon, 30 Nov 2026 21:00:00 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\nok\n"
)


def request(i: int) -> bytes:
    """The ``i``-th request, as wrk sends the varied ones (with curl's User-Agent)."""
    return (
        b"GET %s/%d HTTP/1.1\r\nHost: %s\r\nUser-Agent: curl/7.88.1\r\n"
        b"X-Request-Id: req-%d\r\n\r\n" % (PATH.encode(), i, HOST.encode(), i)
    )


class DropTransport:
    """The transport methods the HTTP/1 shell calls; what is written is counted and
    dropped (also the fake sockets of tests/test_mesh_deadlines.py)."""

    def __init__(self) -> None:
        self.writes = 0
        self.closing = False

    def write(self, data: bytes) -> None:
        self.writes += 1

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def set_protocol(self, protocol: object) -> None:
        pass

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        pass


class _Channel:
    """The detection channel the shell takes the client connection over from."""

    def __init__(self) -> None:
        self.transport = DropTransport()

    def take(self) -> bytes:
        return b""

    def at_eof(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        pass


def _head(data: bytes) -> Request:
    parser = RequestParser(65536)
    parser.feed(data)
    head = parser.events[0]
    assert isinstance(head, Request), head
    return head


def _lowest(fn: Callable[[int], object], n: int, rounds: int) -> float:
    """The lowest CPU time per call of ``fn(i)`` over ``rounds`` rounds of ``n`` (us),
    after an untimed one; ``i`` never repeats."""
    best = float("inf")
    for r in range(rounds + 1):
        start = time.thread_time()
        for i in range(r * n, (r + 1) * n):
            fn(i)
        if r:
            best = min(best, (time.thread_time() - start) / n * 1e6)
    return best


async def _measure(cluster: LocalCluster, n: int, rounds: int) -> dict[str, float]:
    # The client pod's proxy: its settings, snapshot, metrics and upstream table (driven
    # here from this thread while the cluster's loop thread has nothing to do).
    proxy = cluster._pods[(guide.NAMESPACE_NAME, "client")].proxy
    channel = _Channel()
    conn = http1._Connection(proxy, channel, 80, None)  # type: ignore[arg-type]
    # The upstream the policy sends bench.example to, pooled as after a first exchange.
    verdict = conn.judge(_head(request(0)), HOST)
    assert verdict.target is not None, verdict
    upstream = http1._Upstream(conn, verdict.target)
    up_transport = DropTransport()
    upstream.connection_made(up_transport)  # type: ignore[arg-type]
    conn.pool[verdict.target] = upstream
    conn.do(conn.machine.flush())

    def exchange(i: int) -> None:
        conn.data_received(request(i))
        upstream.data_received(RESPONSE)

    figures = {"exchange": _lowest(exchange, n, rounds)}
    done = (rounds + 1) * n
    if conn.machine.phase != "idle" or up_transport.writes != done:
        raise RuntimeError(
            f"the exchanges did not all complete: phase {conn.machine.phase}, "
            f"{up_transport.writes} of {done} requests written upstream"
        )
    if channel.transport.writes != done:
        raise RuntimeError(f"{channel.transport.writes} of {done} answers written")
    conn.shut()

    requests = RequestParser(65536)

    def parse_request(i: int) -> None:
        requests.feed(request(i))
        requests.events.clear()

    responses = ResponseParser()

    def parse_response(i: int) -> None:
        responses.expect(head_only=False)
        responses.feed(RESPONSE)
        responses.events.clear()

    heads = [_head(request(i)) for i in range(n)]
    judge = http1._Connection(proxy, _Channel(), 80, None)  # type: ignore[arg-type]
    figures["request parse"] = _lowest(parse_request, n, rounds)
    figures["response parse"] = _lowest(parse_response, n, rounds)
    figures["decision"] = _lowest(lambda i: judge.judge(heads[i % n], HOST), n, rounds)
    judge.shut()
    return figures


def run(quick: bool = False) -> list[dict[str, Any]]:
    n, rounds = (2_000, 2) if quick else (20_000, 5)
    with LocalCluster(upstreams={HOST: "127.0.0.1:9"}) as cluster:  # never connected
        for manifest in (guide.NAMESPACE, guide.EGRESS_NETWORK, guide.CLIENT_POD, BENCH_ROUTE):
            cluster.apply(manifest)
        figures = asyncio.run(_measure(cluster, n, rounds))
    whole = figures["exchange"]
    return [
        {
            "part": part,
            "us_per_request": round(us, 2),
            "share": round(us / whole, 2),
            "requests": n,
            "rounds": rounds,
        }
        for part, us in figures.items()
    ]


def summarize(rows: list[dict[str, Any]]) -> list[str]:
    whole = next(r for r in rows if r["part"] == "exchange")["us_per_request"]
    parts = ", ".join(
        f"{r['part']} {r['us_per_request']} us" for r in rows if r["part"] != "exchange"
    )
    return [f"one exchange: {whole} us of Python on the loop thread (of it: {parts})"]


def main() -> None:
    from benchmarks import report

    rows = run()
    print(report.text_table(rows, title=TITLE))
    for line in summarize(rows):
        print(f"   {line}")


if __name__ == "__main__":
    main()
