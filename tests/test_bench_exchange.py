"""benchmarks/bench_exchange.py: the proxy's Python per exchange, measured without sockets.

Nothing here is timed: the quick run is checked for what it measured (every exchange
forwarded and answered, or the run raises), not for how fast.
"""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks import bench_exchange
from egresskit.mesh.http1_wire import Request, RequestParser


@pytest.fixture(scope="module")
def rows() -> list[dict[str, Any]]:
    return bench_exchange.run(quick=True)


def test_the_whole_exchange_and_its_three_parts_are_measured(rows: list[dict[str, Any]]) -> None:
    assert [r["part"] for r in rows] == [
        "exchange",
        "request parse",
        "response parse",
        "decision",
    ]
    whole = rows[0]["us_per_request"]
    assert whole > 0 and rows[0]["share"] == 1
    for row in rows[1:]:
        # A part of the exchange costs less than the whole of it.
        assert 0 < row["us_per_request"] < whole, row


def test_the_summary_names_the_figure(rows: list[dict[str, Any]]) -> None:
    (line,) = bench_exchange.summarize(rows)
    assert line.startswith(f"one exchange: {rows[0]['us_per_request']} us of Python")


def test_requests_differ_as_the_headline_benchmarks_do() -> None:
    heads = []
    for i in (1, 2):
        parser = RequestParser(65536)
        parser.feed(bench_exchange.request(i))
        head = parser.events[0]
        assert isinstance(head, Request)
        heads.append(head)
    assert heads[0].target != heads[1].target
    ids = [dict(h.headers)[b"X-Request-Id"] for h in heads]
    assert ids == [b"req-1", b"req-2"]
