"""The gRPC benchmark's shape (never its speed: that is ``make bench``'s job)."""

from __future__ import annotations

import json

import pytest

from benchmarks import bench_grpc

pytestmark = pytest.mark.slow


def test_quick_run_measures_both_paths_and_the_proxy_counts_every_call() -> None:
    rows = bench_grpc.run(quick=True)
    assert [r["path"] for r in rows] == ["direct", "proxy"]
    timed = bench_grpc.QUICK_CALLS // bench_grpc.ROUNDS * bench_grpc.ROUNDS
    assert all(r["calls"] == timed and r["calls_per_s"] > 0 for r in rows)
    assert all(0 < r["median_ms"] <= r["p99_ms"] for r in rows)
    # Every call went through the proxy's GRPCRoute: warm-up and timed ones.
    assert rows[1]["counted_by_proxy"] == bench_grpc.WARMUP + timed
    notes = bench_grpc.summarize(rows)
    assert notes[0].startswith("the proxy adds ") and "calls/s" in notes[0]
    json.dumps(rows)
