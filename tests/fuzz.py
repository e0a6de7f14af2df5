"""``make fuzz``: the smuggling and ClientHello fuzzers of issue 11, run long.

Job: run :mod:`tests.smuggling`'s mutation fuzzer far past what ``make test`` runs and
print, per pass, the cases, crashes (an exception, or an ERROR logged by the proxy),
hangs (an input the proxy neither answered nor closed within ``--wait`` seconds, or an
in-process case slower than that) and requests that reached an upstream unjudged. Exits
1 unless all but the cases are 0.

Passes: HTTP/1 in-process (the proxy's sans-IO request side, every forwarded byte
parsed by a strict llhttp), ClientHello in-process (the TLS sniffer), then both through
the real proxy on real sockets under the guide's restricting policy (Deny plus
``httpbin-get``; httpbin.org behind a strict recording upstream).

    python -m tests.fuzz [--cases 300000] [--socket-cases 10000] [--seed 1]
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import random
import socket
import ssl
import sys
import time
from dataclasses import dataclass

from egresskit import guide
from egresskit.cluster.local import LocalCluster
from egresskit.mesh.sniff import sniff_client_hello
from tests.smuggling import (
    CORPUS,
    HIDDEN,
    StrictUpstream,
    check_in_process,
    cuts,
    fuzz_input,
    mutate,
)
from tests.test_mesh_smuggling import FAST, allowed

NS = guide.NAMESPACE_NAME


@dataclass
class Tally:
    name: str
    cases: int = 0
    crashes: int = 0
    hangs: int = 0
    unjudged: int = 0
    seconds: float = 0.0

    def line(self) -> str:
        return (
            f"{self.name:28} cases {self.cases:>7}  crashes {self.crashes}  hangs {self.hangs}"
            f"  unjudged-requests-reaching-upstream {self.unjudged}  ({self.seconds:.1f} s)"
        )


class _Errors(logging.Handler):
    """Counts ERROR records (a traceback from a proxy connection is one)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.count = 0
        self.first: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        if len(self.first) < 5:
            self.first.append(record.getMessage())


def client_hello() -> bytes:
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ssl.create_default_context().wrap_bio(incoming, outgoing, server_hostname="httpbin.org")
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def http_in_process(cases: int, seed: int, wait: float) -> Tally:
    tally = Tally("http1 in-process")
    rng = random.Random(seed)
    seeds = list(CORPUS.values())
    start = time.monotonic()
    for _ in range(cases):
        data = fuzz_input(rng, seeds)
        began = time.monotonic()
        try:
            verdict = check_in_process(cuts(rng, data) if len(data) > 1 else [data])
        except Exception as exc:
            tally.crashes += 1
            print(f"  crash: {exc!r} on {data[:200]!r}")
            continue
        finally:
            tally.cases += 1
        if time.monotonic() - began > wait:
            tally.hangs += 1
        if verdict.unjudged:
            tally.unjudged += verdict.unjudged
            print(f"  unjudged: {verdict} on {data[:200]!r}")
    tally.seconds = time.monotonic() - start
    return tally


def tls_in_process(cases: int, seed: int, wait: float) -> Tally:
    tally = Tally("client hello in-process")
    rng = random.Random(seed)
    hello = client_hello()
    start = time.monotonic()
    for _ in range(cases):
        data = mutate(rng, hello)
        data = data[: rng.randint(0, len(data))] if rng.random() < 0.3 else data
        began = time.monotonic()
        try:
            sniff_client_hello(data)
        except Exception as exc:
            tally.crashes += 1
            print(f"  crash: {exc!r} on {data[:80]!r}")
        tally.cases += 1
        if time.monotonic() - began > wait:
            tally.hangs += 1
    tally.seconds = time.monotonic() - start
    return tally


def send(port: int, data: bytes, wait: float) -> bool:
    """Send, end our side, read to the close; False if the proxy kept it past ``wait``."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(65536):
                pass
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False
    return True


def through_proxy(cases: int, seed: int, wait: float) -> list[Tally]:
    errors = _Errors()
    logging.getLogger().addHandler(errors)
    upstream = StrictUpstream()
    cluster = LocalCluster(upstreams={"httpbin.org": upstream.address}, proxy_config=FAST)
    tallies = [Tally("http1 through the proxy"), Tally("client hello through the proxy")]
    try:
        cluster.apply([guide.NAMESPACE, guide.EGRESS_NETWORK, guide.CLIENT_POD])
        cluster.patch("egressnetwork", guide.EGRESS_NETWORK_NAME, guide.DENY_PATCH, namespace=NS)
        cluster.apply(guide.HTTPBIN_GET_ROUTE)
        ports = cluster.outbound_ports("client", namespace=NS)
        rng = random.Random(seed)
        seeds = list(CORPUS.values())
        hello = client_hello()
        for tally, port, make in (
            (tallies[0], ports[80], lambda: fuzz_input(rng, seeds)),
            (tallies[1], ports[443], lambda: mutate(rng, hello)),
        ):
            start = time.monotonic()
            before = errors.count
            for _ in range(cases if port == ports[80] else cases // 4):
                data = make()
                tally.cases += 1
                if not send(port, data, wait):
                    tally.hangs += 1
                    print(f"  hang: {data[:200]!r}")
            tally.crashes = errors.count - before
            tally.seconds = time.monotonic() - start
        if not send(ports[80], HIDDEN, wait):
            tallies[0].hangs += 1
        with upstream.lock:
            seen = list(upstream.seen)
        wrong = [h for h in seen if not h[1].startswith(b"/get")]
        tallies[0].unjudged = len(wrong) + max(0, len(seen) - int(allowed(cluster)))
        for head in wrong[:5]:
            print(f"  unjudged: {head!r}")
        print(
            f"  the strict upstream parsed {len(seen)} requests; httpbin-get counted "
            f"{int(allowed(cluster))}"
        )
    finally:
        cluster.close()
        upstream.close()
        logging.getLogger().removeHandler(errors)
    for message in errors.first:
        print(f"  crash: {message}")
    return tallies


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=300_000, help="in-process HTTP inputs")
    parser.add_argument("--socket-cases", type=int, default=10_000, help="inputs on sockets")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--wait", type=float, default=5.0, help="seconds before a hang")
    args = parser.parse_args(argv)
    tallies = [
        http_in_process(args.cases, args.seed, args.wait),
        tls_in_process(args.cases, args.seed, args.wait),
        *through_proxy(args.socket_cases, args.seed, args.wait),
    ]
    print()
    for tally in tallies:
        print(tally.line())
    total = Tally("total")
    for tally in tallies:
        total.cases += tally.cases
        total.crashes += tally.crashes
        total.hangs += tally.hangs
        total.unjudged += tally.unjudged
        total.seconds += tally.seconds
    print(total.line())
    return 1 if total.crashes or total.hangs or total.unjudged else 0


if __name__ == "__main__":
    sys.exit(main())
