"""Data plane: the egress proxy against nginx as a one-worker reverse proxy, measured by wrk.

Rules of the measurement (egresskit issue 3):

* One upstream for every target: nginx with one worker answering ``return 200`` with a
  fixed 3-byte body, in its own process, so no target shares a worker with it.
* Four targets, each measured by the same wrk command (``wrk -t1 -c16 -d5s --latency``,
  ``Host: bench.example``): ``direct`` (the upstream itself), ``nginx`` (a second nginx,
  ``worker_processes 1``, HTTP/1.1 upstream keep-alive, ``proxy_set_header Host``),
  ``python-floor`` (:mod:`benchmarks.floor_proxy`: the least a Python proxy on uvloop and
  httptools does, a yardstick for what is Python's cost and what is egresskit's) and
  ``egresskit`` (the local backend's proxy of the guide's client pod: EgressNetwork Allow,
  an HTTPRoute matched on hostname and path prefix, hostname metric labels on).
* Two kinds of requests (issue 11): ``varied``, the headline, where every request has a
  path and an ``x-request-id`` of its own (a wrk Lua script; as an API client sends
  them, so nothing can be reused from an earlier request's bytes), and ``identical``,
  the same bytes every time (wrk's default). Ratios compare targets on the same kind.
* Each target gets one untimed warm-up run per kind; measured rounds are interleaved
  (direct, nginx, python-floor, egresskit, direct, ...) so drift on the machine hits all
  four alike, and each figure is the median over rounds; the egresskit/nginx ratios of
  each round (throughput and p99) are shown as ranges.
* The proxy's own count is checked against wrk's: the sum of
  ``outbound_http_route_request_statuses_total`` over the measured rounds (read once the
  proxy is quiet after each round) against wrk's total of completed requests; it may
  exceed wrk's by the requests in flight when wrk stops (see :func:`metrics_verdict`).
* The targets, on varied requests (issue 11): egresskit throughput >= 0.5x nginx's,
  egresskit p99 <= 2x nginx's. Identical requests are reported beside them.
* nginx runs as a foreground child (``daemon off``) with its own temporary prefix (pid,
  error log, temp paths); ports are picked by binding 127.0.0.1 port 0 first.
* ``python -m benchmarks.bench_dataplane --profile`` runs the egresskit target under
  cProfile, enabled on the mesh's event-loop thread only, and prints the hotspots.
* ``python -m benchmarks.bench_dataplane --cpu`` prints the CPU time of the mesh's
  event-loop thread per request (and its kernel share), three rounds of varied requests:
  on a shared machine, throughput moves with the other load, this figure far less, so two
  versions of the proxy are compared by it, back to back.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import os
import pstats
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from egresskit import guide
from egresskit.cluster.local import LocalCluster
from egresskit.errors import BackendError, WaitTimeout

TITLE = "Data plane: egresskit proxy vs nginx (1 worker), wrk"

HOST = "bench.example"
PATH = "/bench/ok"
BODY = "ok\n"
THREADS = 1
CONNECTIONS = 16
DURATION_S = 5
QUICK_DURATION_S = 1
WARMUP_S = 1
ROUNDS = 5
QUICK_ROUNDS = 1
#: The issue's targets (issue 11, on varied requests).
MIN_RPS_VS_NGINX = 0.5
MAX_P99_VS_NGINX = 2.0

#: ``python-floor`` is :mod:`benchmarks.floor_proxy`: the least a Python proxy on the same
#: loop and parser does (no policy, metrics, framing rules or timeouts), the yardstick
#: that splits egresskit's cost into Python's floor and egresskit's own work.
TARGETS = ("direct", "nginx", "python-floor", "egresskit")
#: The kinds of requests, the headline first.
KINDS = ("varied", "identical")

#: wrk's Lua hook for varied requests: a path and a request id of their own each time
#: (one wrk thread, so one counter; the route's path prefix still matches).
VARIED_LUA = """\
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", "%s/" .. n, {["Host"] = "%s", ["X-Request-Id"] = "req-" .. n})
end
"""
STATUS_FAMILY = "outbound_http_route_request_statuses_total"

#: An HTTPRoute on the guide's EgressNetwork, so every request goes through the matcher
#: (hostname, then path prefix) rather than the EgressNetwork's default route.
BENCH_ROUTE = f"""\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: bench
  namespace: {guide.NAMESPACE_NAME}
spec:
  hostnames:
  - {HOST}
  parentRefs:
    - name: {guide.EGRESS_NETWORK_NAME}
      kind: EgressNetwork
      group: policy.linkerd.io
      namespace: {guide.NAMESPACE_NAME}
      port: 80
  rules:
    - matches:
      - path:
          type: PathPrefix
          value: /bench
"""


# ====================================================================== wrk


@dataclass(frozen=True, kw_only=True)
class WrkResult:
    """What one wrk run reported."""

    requests: int
    seconds: float
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    socket_errors: int
    non_2xx: int


_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
_LATENCY_RE = re.compile(r"^\s*(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.M)
_TOTAL_RE = re.compile(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h)", re.M)
_RPS_RE = re.compile(r"^Requests/sec:\s+([\d.]+)", re.M)
_SOCKET_RE = re.compile(
    r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", re.M
)
_NON2XX_RE = re.compile(r"Non-2xx or 3xx responses: (\d+)", re.M)


def parse_wrk(text: str) -> WrkResult:
    """Parse ``wrk --latency`` output (wrk 4.x)."""
    latency = {pct: float(v) * _UNITS_MS[u] for pct, v, u in _LATENCY_RE.findall(text)}
    total = _TOTAL_RE.search(text)
    rps = _RPS_RE.search(text)
    if total is None or rps is None or set(latency) != {"50", "99"}:
        raise BackendError(
            "wrk output: expected 'N requests in T', 'Requests/sec:' and the 50%/99% lines "
            f"of --latency, found:\n{text}"
        )
    sock = _SOCKET_RE.search(text)
    non2xx = _NON2XX_RE.search(text)
    return WrkResult(
        requests=int(total.group(1)),
        seconds=float(total.group(2)) * _UNITS_MS[total.group(3)] / 1e3,
        requests_per_s=float(rps.group(1)),
        p50_ms=latency["50"],
        p99_ms=latency["99"],
        socket_errors=sum(int(g) for g in sock.groups()) if sock else 0,
        non_2xx=int(non2xx.group(1)) if non2xx else 0,
    )


def run_wrk(port: int, *, duration_s: int, script: Path | None = None) -> WrkResult:
    """One wrk run against ``127.0.0.1:port`` with ``Host: bench.example``; ``script``:
    a wrk Lua script making each request (:data:`VARIED_LUA`)."""
    argv = [
        "wrk",
        f"-t{THREADS}",
        f"-c{CONNECTIONS}",
        f"-d{duration_s}s",
        "--latency",
        "-H",
        f"Host: {HOST}",
        *(["-s", str(script)] if script is not None else []),
        f"http://127.0.0.1:{port}{PATH}",
    ]
    bound = duration_s + 30
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=bound, check=False)
    except FileNotFoundError as exc:
        raise BackendError("wrk is not installed (Debian package wrk; `make bench`)") from exc
    except subprocess.TimeoutExpired as exc:
        raise WaitTimeout(f"wrk against :{port}", bound, "still running") from exc
    if proc.returncode != 0:
        raise BackendError(f"{' '.join(argv)}: exit {proc.returncode}: {proc.stderr.strip()}")
    return parse_wrk(proc.stdout)


# ====================================================================== nginx


def free_port() -> int:
    """A loopback port the kernel just handed out (bound to port 0, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def nginx_config(*, prefix: Path, port: int, upstream_port: int | None) -> str:
    """nginx.conf for the upstream (``upstream_port`` None) or the reverse proxy in front of it.

    One worker either way; access log off (nginx's default logs every request, the
    egresskit proxy does not); every path a non-root nginx writes is under ``prefix``.
    """
    temp = " ".join(
        f"{kind}_temp_path {prefix / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    if upstream_port is None:
        server = f'location / {{ default_type text/plain; return 200 "{BODY.strip()}\\n"; }}'
        upstream = ""
    else:
        # HTTP/1.1 with "Connection: ''" is what lets nginx keep upstream connections
        # alive (ngx_http_upstream_module, keepalive); the Host is passed on unchanged.
        upstream = (
            f"upstream bench_upstream {{ server 127.0.0.1:{upstream_port}; keepalive 32; "
            "keepalive_requests 1000000; }"
        )
        server = (
            "location / { proxy_pass http://bench_upstream; proxy_http_version 1.1; "
            'proxy_set_header Connection ""; proxy_set_header Host $http_host; }'
        )
    return f"""\
worker_processes 1;
daemon off;
pid {prefix / "nginx.pid"};
error_log {prefix / "error.log"} warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  {temp}
  # wrk reuses its connections; nginx's default (1000) would close one every 1000 requests.
  keepalive_requests 1000000;
  {upstream}
  server {{
    listen 127.0.0.1:{port};
    {server}
  }}
}}
"""


def wait_port(port: int, *, timeout: float, what: str) -> None:
    """Wait until something accepts on ``127.0.0.1:port``, at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last = "nothing tried"
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError as exc:
            last = str(exc)
        time.sleep(0.02)  # a poll interval, not a readiness assumption
    raise WaitTimeout(what, timeout, last)


@contextlib.contextmanager
def nginx(*, upstream_port: int | None = None) -> Iterator[int]:
    """A foreground nginx in a temporary prefix; yields its port; stopped on exit."""
    if shutil.which("nginx") is None:
        raise BackendError("nginx is not installed (Debian package nginx; `make bench`)")
    role = "upstream" if upstream_port is None else "proxy"
    with tempfile.TemporaryDirectory(prefix=f"egresskit-nginx-{role}-") as tmp:
        prefix = Path(tmp)
        port = free_port()
        conf = prefix / "nginx.conf"
        conf.write_text(nginx_config(prefix=prefix, port=port, upstream_port=upstream_port))
        # -e: the error log before the config is read (else /var/log/nginx, not ours).
        argv = ["nginx", "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")]
        with (prefix / "stderr.log").open("wb") as stderr:
            proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            try:
                wait_port(port, timeout=10, what=f"nginx ({role}) on :{port}")
            except WaitTimeout as exc:
                logs = "".join(
                    (prefix / name).read_text(errors="replace")
                    for name in ("stderr.log", "error.log")
                    if (prefix / name).exists()
                )
                raise BackendError(f"nginx ({role}) did not start: {exc}\n{logs}") from exc
            yield port
        finally:
            proc.terminate()  # SIGTERM: nginx's fast shutdown
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


@contextlib.contextmanager
def floor_proxy(upstream_port: int) -> Iterator[tuple[int, int]]:
    """:mod:`benchmarks.floor_proxy` in a process of its own; yields (port, pid)."""
    port = free_port()
    argv = [sys.executable, "-m", "benchmarks.floor_proxy", str(upstream_port), str(port)]
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen(argv, cwd=root, stdout=subprocess.DEVNULL)
    try:
        wait_port(port, timeout=10, what=f"the Python floor proxy on :{port}")
        yield port, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def process_cpu(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of process ``pid`` so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


# ====================================================================== egresskit


@contextlib.contextmanager
def egresskit_proxy(upstream_port: int) -> Iterator[tuple[LocalCluster, int]]:
    """The guide's client pod behind its proxy, with ``bench.example`` at the upstream."""
    with LocalCluster(upstreams={HOST: f"127.0.0.1:{upstream_port}"}) as cluster:
        cluster.apply(guide.NAMESPACE)
        cluster.apply(guide.EGRESS_NETWORK)
        cluster.apply(guide.CLIENT_POD)
        cluster.apply(BENCH_ROUTE)
        ports = cluster.outbound_ports("client", namespace=guide.NAMESPACE_NAME)
        yield cluster, ports[80]


_SAMPLE_RE = re.compile(rf"^{STATUS_FAMILY}\{{(?P<labels>[^}}]*)\}} (?P<value>\d+)$", re.M)


def counted(cluster: LocalCluster) -> dict[str, int]:
    """The client proxy's request count by ``http_status`` (``error`` appended when set)."""
    text = cluster.proxy_metrics("client", namespace=guide.NAMESPACE_NAME)
    out: dict[str, int] = {}
    for m in _SAMPLE_RE.finditer(text):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group("labels")))
        key = labels.get("http_status", "") + (f" {labels['error']}" if labels.get("error") else "")
        out[key] = out.get(key, 0) + int(m.group("value"))
    return out


@contextlib.contextmanager
def varied_script() -> Iterator[Path]:
    """:data:`VARIED_LUA` in a temporary file, for ``wrk -s``."""
    with tempfile.TemporaryDirectory(prefix="egresskit-wrk-") as tmp:
        path = Path(tmp) / "varied.lua"
        path.write_text(VARIED_LUA % (PATH, HOST))
        yield path


def quiet_count(cluster: LocalCluster, *, timeout: float = 5.0) -> dict[str, int]:
    """The count once it stops moving: requests in flight when wrk stopped are recorded."""
    deadline = time.monotonic() + timeout
    last = counted(cluster)
    while time.monotonic() < deadline:
        time.sleep(0.05)  # a poll interval
        now = counted(cluster)
        if now == last:
            return now
        last = now
    raise WaitTimeout("the proxy's request count to settle", timeout, str(last))


# ====================================================================== the run


def _median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def run(quick: bool = False) -> list[dict[str, Any]]:
    duration = QUICK_DURATION_S if quick else DURATION_S
    rounds = QUICK_ROUNDS if quick else ROUNDS
    if shutil.which("wrk") is None:
        raise BackendError("wrk is not installed (Debian package wrk; `make bench`)")
    results: dict[tuple[str, str], list[WrkResult]] = {(k, t): [] for k in KINDS for t in TARGETS}
    metrics_total = dict.fromkeys(KINDS, 0)
    metrics_ok = dict.fromkeys(KINDS, 0)
    with (
        nginx() as upstream,
        nginx(upstream_port=upstream) as proxy,
        floor_proxy(upstream) as (floor, _),
        egresskit_proxy(upstream) as (cluster, mesh),
        varied_script() as lua,
    ):
        ports = {"direct": upstream, "nginx": proxy, "python-floor": floor, "egresskit": mesh}
        scripts = {"varied": lua, "identical": None}
        for kind in KINDS:
            for target in TARGETS:
                run_wrk(ports[target], duration_s=WARMUP_S, script=scripts[kind])
        for _ in range(rounds):
            for kind in KINDS:
                for target in TARGETS:
                    before = quiet_count(cluster) if target == "egresskit" else {}
                    result = run_wrk(ports[target], duration_s=duration, script=scripts[kind])
                    results[(kind, target)].append(result)
                    if target == "egresskit":
                        after = quiet_count(cluster)
                        delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
                        metrics_total[kind] += sum(delta.values())
                        metrics_ok[kind] += delta.get("200", 0)
    rows: list[dict[str, Any]] = []
    for kind in KINDS:
        # Each round's ratio, egresskit against the nginx run just before it: the spread
        # shows how much the shared machine moved while the medians were taken.
        pairs = list(zip(results[(kind, "egresskit")], results[(kind, "nginx")], strict=True))
        per_round = [e.requests_per_s / n.requests_per_s for e, n in pairs]
        # p99 moves more between rounds than throughput: its spread is shown too.
        p99_per_round = [e.p99_ms / n.p99_ms for e, n in pairs]
        med = {
            t: {
                "rps": _median([r.requests_per_s for r in results[(kind, t)]]),
                "p50": _median([r.p50_ms for r in results[(kind, t)]]),
                "p99": _median([r.p99_ms for r in results[(kind, t)]]),
            }
            for t in TARGETS
        }
        for t in TARGETS:
            rs = results[(kind, t)]
            ek = t == "egresskit"
            rows.append(
                {
                    "requests": kind,
                    "target": t,
                    "requests_per_s": round(med[t]["rps"], 1),
                    "p50_ms": round(med[t]["p50"], 3),
                    "p99_ms": round(med[t]["p99"], 3),
                    "rps_vs_nginx": round(med[t]["rps"] / med["nginx"]["rps"], 3),
                    "p99_vs_nginx": round(med[t]["p99"] / med["nginx"]["p99"], 3),
                    "rps_vs_direct": round(med[t]["rps"] / med["direct"]["rps"], 3),
                    "wrk_requests": sum(r.requests for r in rs),
                    "wrk_errors": sum(r.socket_errors + r.non_2xx for r in rs),
                    "metrics_requests": metrics_total[kind] if ek else None,
                    "metrics_200": metrics_ok[kind] if ek else None,
                    "metrics_check": (
                        metrics_verdict(
                            counted=metrics_total[kind],
                            completed=sum(r.requests for r in rs),
                            rounds=rounds,
                        )
                        if ek
                        else None
                    ),
                    "rps_vs_nginx_rounds": (
                        f"{min(per_round):.2f}-{max(per_round):.2f}" if ek else None
                    ),
                    "p99_vs_nginx_rounds": (
                        f"{min(p99_per_round):.2f}-{max(p99_per_round):.2f}" if ek else None
                    ),
                    "rounds": rounds,
                    "duration_s": duration,
                    "connections": CONNECTIONS,
                }
            )
    return rows


def metrics_verdict(*, counted: int, completed: int, rounds: int) -> str:
    """``exact``, ``in-flight`` or ``MISMATCH``: the proxy's count against wrk's.

    The proxy records a response before its last bytes go out (so a client holding its
    answer can already see it counted); wrk stops at its deadline without reading what is
    in flight, at most one request per connection (wrk does not pipeline). So the proxy
    may count up to ``connections x rounds`` more than wrk completed, never fewer.
    """
    extra = counted - completed
    if extra == 0:
        return "exact"
    if 0 < extra <= CONNECTIONS * rounds:
        return "in-flight"
    return "MISMATCH"


def summarize(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Verdict lines against the issue's targets (varied requests) and the metrics
    cross-check for each kind of request."""
    lines = []
    for kind in KINDS:
        ek = next(r for r in rows if r["target"] == "egresskit" and r["requests"] == kind)
        rps, p99 = ek["rps_vs_nginx"], ek["p99_vs_nginx"]
        if kind == KINDS[0]:
            ok = "PASS" if rps >= MIN_RPS_VS_NGINX else "FAIL"
            lat = "PASS" if p99 <= MAX_P99_VS_NGINX else "FAIL"
            lines += [
                f"{ok}: {kind} requests: egresskit throughput {rps:.2f}x nginx (1 worker); "
                f"target >= {MIN_RPS_VS_NGINX}x",
                f"{lat}: {kind} requests: egresskit p99 {p99:.2f}x nginx; "
                f"target <= {MAX_P99_VS_NGINX}x",
            ]
        else:
            lines.append(
                f"{kind} requests: egresskit throughput {rps:.2f}x nginx, p99 {p99:.2f}x nginx"
            )
        lines.append(
            f"{kind} requests: egresskit {ek['rps_vs_direct']:.2f}x the upstream served "
            f"directly; vs nginx round by round: throughput {ek['rps_vs_nginx_rounds']}x, "
            f"p99 {ek['p99_vs_nginx_rounds']}x"
        )
        floor = next(r for r in rows if r["target"] == "python-floor" and r["requests"] == kind)
        lines.append(
            f"{kind} requests: the Python floor (no policy, metrics or framing rules) "
            f"{floor['rps_vs_nginx']:.2f}x nginx; egresskit "
            f"{ek['requests_per_s'] / floor['requests_per_s']:.2f}x the floor"
        )
        verdict = ek["metrics_check"]
        why = {
            "exact": "",
            "in-flight": " (the difference: requests in flight when wrk stopped, which wrk "
            "does not count)",
            "MISMATCH": " (more than one request per connection apart: a counting bug)",
        }[verdict]
        lines.append(
            f"{'FAIL' if verdict == 'MISMATCH' else 'PASS'}: {kind} requests: proxy metrics "
            f"counted {ek['metrics_requests']:,} requests ({ek['metrics_200']:,} with status "
            f"200), wrk completed {ek['wrk_requests']:,}: {verdict}{why}"
        )
    return lines


# ====================================================================== profiling


def profile(*, duration_s: int = DURATION_S, top: int = 30, varied: bool = True) -> str:
    """Run wrk (varied requests unless told otherwise) against the egresskit proxy with
    cProfile on the mesh's loop thread.

    The timer is the thread's CPU clock: wall time would charge the proxy's functions
    with the time its thread waits for the GIL or for a core shared with wrk and nginx.
    """
    profiler = cProfile.Profile(time.thread_time)
    with (
        nginx() as upstream,
        egresskit_proxy(upstream) as (cluster, mesh),
        varied_script() as lua,
    ):
        script = lua if varied else None
        run_wrk(mesh, duration_s=WARMUP_S, script=script)
        loop = cluster._loop  # the one thread the proxy runs on; cProfile is per thread
        loop.call(_enable(profiler), timeout=5, what="the profiler to start")
        result = run_wrk(mesh, duration_s=duration_s, script=script)
        loop.call(_disable(profiler), timeout=5, what="the profiler to stop")
    out = io.StringIO()
    out.write(f"under cProfile: {result.requests_per_s:,.0f} req/s, p99 {result.p99_ms} ms\n")
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    return out.getvalue()


def cpu_per_request(*, duration_s: int = DURATION_S, rounds: int = 3, varied: bool = True) -> str:
    """CPU time of the mesh's loop thread per proxied request (microseconds), one line per
    round: a figure a loaded machine moves far less than throughput, for comparing two
    versions of the proxy back to back."""
    lines = []
    kind = "varied" if varied else "identical"
    with (
        nginx() as upstream,
        floor_proxy(upstream) as (floor, floor_pid),
        egresskit_proxy(upstream) as (cluster, mesh),
        varied_script() as lua,
    ):
        script = lua if varied else None
        run_wrk(floor, duration_s=WARMUP_S, script=script)
        user0, sys0 = process_cpu(floor_pid)
        result = run_wrk(floor, duration_s=duration_s, script=script)
        user1, sys1 = process_cpu(floor_pid)
        n = result.requests
        lines.append(
            f"{kind}, python-floor: {(user1 + sys1 - user0 - sys0) / n * 1e6:.1f} us CPU per "
            f"request, {(sys1 - sys0) / n * 1e6:.1f} of it in the kernel ({n:,} requests, "
            f"{result.requests_per_s:,.0f} req/s, p99 {result.p99_ms} ms)"
        )
        run_wrk(mesh, duration_s=WARMUP_S, script=script)
        loop = cluster._loop  # the one thread the proxy runs on
        for _ in range(rounds):
            before = quiet_count(cluster)
            cpu0 = loop.call(_thread_cpu(), timeout=5, what="the loop thread's CPU time")
            sys0 = loop.call(_thread_sys(), timeout=5, what="the loop thread's system time")
            result = run_wrk(mesh, duration_s=duration_s, script=script)
            after = quiet_count(cluster)
            cpu1 = loop.call(_thread_cpu(), timeout=5, what="the loop thread's CPU time")
            sys1 = loop.call(_thread_sys(), timeout=5, what="the loop thread's system time")
            n = sum(after.values()) - sum(before.values())
            lines.append(
                f"{kind}, egresskit: {(cpu1 - cpu0) / n * 1e6:.1f} us CPU "
                f"per request, {(sys1 - sys0) / n * 1e6:.1f} of it in the kernel "
                f"({n:,} requests, {result.requests_per_s:,.0f} req/s, "
                f"p99 {result.p99_ms} ms)"
            )
    return "\n".join(lines)


async def _thread_cpu() -> float:
    return time.thread_time()


async def _thread_sys() -> float:
    """The loop thread's system (kernel) CPU time so far, seconds (Linux only)."""
    with open("/proc/thread-self/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[12]) / os.sysconf("SC_CLK_TCK")


async def _enable(profiler: cProfile.Profile) -> None:
    profiler.enable()


async def _disable(profiler: cProfile.Profile) -> None:
    profiler.disable()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_dataplane")
    parser.add_argument("--quick", action="store_true", help="short runs, one round")
    parser.add_argument("--profile", action="store_true", help="cProfile the egresskit proxy")
    parser.add_argument(
        "--identical", action="store_true", help="profile identical requests, not varied ones"
    )
    parser.add_argument(
        "--cpu", action="store_true", help="CPU time per request on the proxy's thread"
    )
    args = parser.parse_args(argv)
    if args.cpu:
        print(cpu_per_request(varied=not args.identical))
        return 0
    if args.profile:
        duration = QUICK_DURATION_S if args.quick else DURATION_S
        print(profile(duration_s=duration, varied=not args.identical))
        return 0
    rows = run(quick=args.quick)
    from benchmarks import report

    print(report.text_table(rows, title=TITLE))
    for line in summarize(rows):
        print(f"   {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
