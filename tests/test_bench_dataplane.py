"""The data-plane benchmark: wrk parsing, the nginx configs, the metrics verdict, and one
quick run's shape (never its speed: speed is judged only by ``make bench``).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from benchmarks import bench_dataplane as bench
from egresskit.errors import BackendError

WRK_OUTPUT = """\
Running 1s test @ http://127.0.0.1:47581/bench/ok
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    34.99us   71.71us   2.14ms   98.84%
    Req/Sec   110.87k     4.76k  114.29k    90.00%
  Latency Distribution
     50%   {p50}
     75%   30.00us
     90%   38.00us
     99%  {p99}
  109868 requests in 1.00s, 15.72MB read
{extra}Requests/sec: 109838.12
Transfer/sec:     15.71MB
"""


@pytest.mark.parametrize(
    ("p50", "p99", "want_p50_ms", "want_p99_ms"),
    [
        ("27.00us", "145.00us", 0.027, 0.145),
        ("1.50ms", "12.25ms", 1.5, 12.25),
        ("1.02s", "2.00s", 1020.0, 2000.0),
    ],
    ids=["microseconds", "milliseconds", "seconds"],
)
def test_parse_wrk_latency_units(
    p50: str, p99: str, want_p50_ms: float, want_p99_ms: float
) -> None:
    result = bench.parse_wrk(WRK_OUTPUT.format(p50=p50, p99=p99, extra=""))
    assert result.p50_ms == pytest.approx(want_p50_ms)
    assert result.p99_ms == pytest.approx(want_p99_ms)
    assert result.requests == 109868
    assert result.requests_per_s == pytest.approx(109838.12)
    assert result.seconds == pytest.approx(1.0)
    assert (result.socket_errors, result.non_2xx) == (0, 0)


def test_parse_wrk_counts_errors() -> None:
    extra = (
        "  Socket errors: connect 1, read 2, write 3, timeout 4\n  Non-2xx or 3xx responses: 7\n"
    )
    result = bench.parse_wrk(WRK_OUTPUT.format(p50="1ms", p99="2ms", extra=extra))
    assert (result.socket_errors, result.non_2xx) == (10, 7)


def test_parse_wrk_rejects_output_without_latency() -> None:
    with pytest.raises(BackendError, match="--latency"):
        bench.parse_wrk("unable to connect to 127.0.0.1:1 Connection refused\n")


@pytest.mark.parametrize(
    ("upstream_port", "expected", "absent"),
    [
        (None, ["worker_processes 1;", "return 200", "daemon off;"], ["proxy_pass"]),
        (
            4321,
            [
                "worker_processes 1;",
                "server 127.0.0.1:4321; keepalive 32;",
                "proxy_http_version 1.1;",
                'proxy_set_header Connection "";',
                "proxy_set_header Host $http_host;",
            ],
            ["return 200"],
        ),
    ],
    ids=["upstream", "reverse-proxy"],
)
def test_nginx_config(
    tmp_path: Path, upstream_port: int | None, expected: list[str], absent: list[str]
) -> None:
    conf = bench.nginx_config(prefix=tmp_path, port=1234, upstream_port=upstream_port)
    assert "listen 127.0.0.1:1234;" in conf
    assert f"pid {tmp_path / 'nginx.pid'};" in conf
    assert f"proxy_temp_path {tmp_path / 'proxy'};" in conf
    for text in expected:
        assert text in conf
    for text in absent:
        assert text not in conf


@pytest.mark.parametrize(
    ("counted", "completed", "verdict"),
    [
        (1000, 1000, "exact"),
        (1016, 1000, "in-flight"),
        (1017, 1000, "MISMATCH"),
        (999, 1000, "MISMATCH"),
    ],
    ids=["equal", "one-per-connection-more", "too-many", "fewer"],
)
def test_metrics_verdict(counted: int, completed: int, verdict: str) -> None:
    assert bench.metrics_verdict(counted=counted, completed=completed, rounds=1) == verdict


# ====================================================================== one quick run

needs_tools = pytest.mark.skipif(
    shutil.which("wrk") is None or shutil.which("nginx") is None,
    reason="wrk and nginx are needed (Debian packages; `make bench` installs them)",
)


@pytest.fixture(scope="module")
def quick_rows() -> list[dict[str, Any]]:
    return bench.run(quick=True)


@needs_tools
@pytest.mark.slow
def test_quick_run_has_one_row_per_target_and_kind(quick_rows: list[dict[str, Any]]) -> None:
    assert [(r["requests"], r["target"]) for r in quick_rows] == [
        (k, t) for k in bench.KINDS for t in bench.TARGETS
    ]
    assert bench.KINDS[0] == "varied", "the headline is varied requests"
    assert len({tuple(r) for r in quick_rows}) == 1, "every row has the same columns"
    for nginx in (r for r in quick_rows if r["target"] == "nginx"):
        assert nginx["rps_vs_nginx"] == 1.0
        assert nginx["p99_vs_nginx"] == 1.0


@needs_tools
@pytest.mark.slow
@pytest.mark.parametrize("column", ["requests_per_s", "p50_ms", "p99_ms", "wrk_requests"])
def test_quick_run_measured_every_target(quick_rows: list[dict[str, Any]], column: str) -> None:
    for row in quick_rows:
        assert row[column] > 0, f"{row['target']}: {column}"
        assert row["wrk_errors"] == 0, f"{row['target']}: wrk saw errors"


@needs_tools
@pytest.mark.slow
def test_quick_run_proxy_counted_what_wrk_completed(quick_rows: list[dict[str, Any]]) -> None:
    for ek in (r for r in quick_rows if r["target"] == "egresskit"):
        assert ek["metrics_check"] in ("exact", "in-flight")
        assert ek["metrics_200"] == ek["metrics_requests"], "every request counted as a 200"
        for column in ("rps_vs_nginx_rounds", "p99_vs_nginx_rounds"):
            low, high = (float(x) for x in ek[column].split("-"))
            assert 0 < low <= high, column
    lines = bench.summarize(quick_rows)
    assert len(lines) == 9
    assert lines[0].startswith(("PASS: varied", "FAIL: varied"))
    floor = [line for line in lines if "the Python floor" in line]
    assert [line.split(" requests")[0] for line in floor] == list(bench.KINDS)
    assert "metrics counted" in lines[-1]


def test_the_varied_script_makes_every_request_differ(tmp_path: Path) -> None:
    # The Lua hook itself is run by wrk in the quick run; here, what it writes.
    with bench.varied_script() as script:
        text = script.read_text()
    assert '"/bench/ok/" .. n' in text and '"req-" .. n' in text
    assert f'["Host"] = "{bench.HOST}"' in text
