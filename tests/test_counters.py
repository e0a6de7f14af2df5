"""Counter increases per scrape interval, as Prometheus ``increase()`` reads counters."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from egresskit.analysis.counters import SCRAPES_ATTR, increases, series_columns
from egresskit.analysis.parse import parse_proxy_metrics, to_frame
from egresskit.mesh.metrics import ProxyMetrics
from tests.guide_labels import route_labels

T0 = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
STATUSES = "outbound_http_route_request_statuses_total"
NAN = math.nan


def at(i: int) -> datetime:
    return T0 + timedelta(seconds=i)


def frame(rows: list[tuple[int, str, str, float]], metric: str = STATUSES) -> pd.DataFrame:
    """Rows of (scrape index, pod, http_status, value) as parse.to_frame lays them out."""
    return pd.DataFrame(
        {
            "scraped_at": pd.to_datetime([at(i) for i, *_ in rows], utc=True).astype(
                "datetime64[us, UTC]"
            ),
            "pod": pd.Series([p for _, p, _, _ in rows], dtype="str"),
            "metric": pd.Series([metric] * len(rows), dtype="str"),
            "route_name": pd.Series(["http-egress-allow"] * len(rows), dtype="str"),
            "http_status": pd.Series([s for _, _, s, _ in rows], dtype="str"),
            "value": pd.Series([v for *_, v in rows], dtype="float64"),
        }
    )


def incs(out: pd.DataFrame, pod: str = "client", status: str = "200") -> list[float]:
    rows = out[(out["pod"] == pod) & (out["http_status"] == status)].sort_values("scraped_at")
    return rows["increase"].tolist()


def same(a: list[float], b: list[float]) -> bool:
    return len(a) == len(b) and all(
        (math.isnan(x) and math.isnan(y)) or x == y for x, y in zip(a, b, strict=True)
    )


@pytest.mark.parametrize(
    ("values", "expected", "resets"),
    [
        ([5, 7, 10], [NAN, 2, 3], [False, False, False]),
        ([5, 7, 2, 4], [NAN, 2, 2, 2], [False, False, True, False]),
        ([5, 5, 0, 0], [NAN, 0, 0, 0], [False, False, True, False]),
    ],
    ids=["steady", "reset-counts-from-zero", "reset-to-zero"],
)
def test_first_sample_is_masked_and_resets_count_from_zero(
    values: list[float], expected: list[float], resets: list[bool]
) -> None:
    out = increases(frame([(i, "client", "200", v) for i, v in enumerate(values)]))
    assert same(incs(out), expected)
    assert out["reset"].tolist() == resets


def test_series_born_mid_run_counts_its_first_value_from_zero() -> None:
    # The 403 series appears at scrape 2, after the Deny patch: its 3 requests count.
    out = increases(
        frame(
            [
                (0, "client", "200", 10),
                (1, "client", "200", 12),
                (2, "client", "200", 12),
                (2, "client", "403", 3),
                (3, "client", "200", 12),
                (3, "client", "403", 5),
            ]
        )
    )
    assert same(incs(out, status="200"), [NAN, 2, 0, 0])
    assert same(incs(out, status="403"), [3, 2])


def test_scrapes_list_makes_a_fresh_proxys_first_series_born_not_masked() -> None:
    # Scrape 0 succeeded but the proxy had no series yet (nothing in the frame).
    data = frame([(1, "client", "200", 2), (2, "client", "200", 3)])
    scrapes = pd.DataFrame({"pod": ["client"], "scraped_at": [at(0)]})
    assert same(incs(increases(data)), [NAN, 1])
    assert same(incs(increases(data, scrapes=scrapes)), [2, 1])


def test_each_pod_has_its_own_first_scrape() -> None:
    # Pod b is first scraped at scrape 2: its series are present from ITS start: masked.
    out = increases(
        frame(
            [
                (0, "a", "200", 1),
                (1, "a", "200", 2),
                (2, "a", "200", 4),
                (2, "b", "200", 50),
                (3, "a", "200", 4),
                (3, "b", "200", 53),
            ]
        )
    )
    assert same(incs(out, pod="a"), [NAN, 1, 2, 0])
    assert same(incs(out, pod="b"), [NAN, 3])


def test_series_missing_from_a_scrape_of_its_pod_was_recreated() -> None:
    # 403 present at 0, gone at 1 (pod scraped: the proxy restarted), back at 2 with 6.
    out = increases(
        frame(
            [
                (0, "client", "200", 1),
                (0, "client", "403", 4),
                (1, "client", "200", 1),
                (2, "client", "200", 2),
                (2, "client", "403", 6),
            ]
        )
    )
    assert same(incs(out, status="403"), [NAN, 6])
    assert out[out["http_status"] == "403"]["reset"].tolist() == [False, True]


def test_only_counters_by_default() -> None:
    data = pd.concat(
        [
            frame([(0, "client", "200", 1), (1, "client", "200", 2)]),
            frame(
                [(0, "client", "200", 1), (1, "client", "200", 2)],
                metric="outbound_http_route_request_duration_seconds_bucket",
            ),
        ],
        ignore_index=True,
    )
    assert set(increases(data)["metric"]) == {STATUSES}
    assert len(increases(data, suffixes=())) == 4


def test_empty_frame_gives_empty_columns() -> None:
    out = increases(frame([]))
    assert out.empty and {"increase", "reset"} <= set(out.columns)


def test_series_are_keyed_by_pod_metric_and_every_label() -> None:
    assert series_columns(frame([(0, "client", "200", 1)])) == [
        "pod",
        "metric",
        "route_name",
        "http_status",
    ]


def test_real_exposition_text_through_parse() -> None:
    allow = route_labels(80, "default", "http-egress-allow")
    deny = allow | {"route_name": "http-egress-deny"}
    metrics = ProxyMetrics(hostname_labels=True)
    scrapes = []
    plan = [(allow, 200, 3), (allow, 200, 2), (deny, 403, 4)]
    for i, (labels, status, n) in enumerate(plan):
        for _ in range(n):
            metrics.http_request(
                labels, hostname="httpbin.org", http_status=status, error="", duration_s=0.1
            )
        scrapes.append(parse_proxy_metrics(metrics.render(), scraped_at=at(i), pod="client"))
    out = increases(to_frame(scrapes))
    statuses = out[out["metric"] == STATUSES]
    assert same(incs(statuses, status="200"), [NAN, 2, 0])
    assert same(incs(statuses, status="403"), [4])
    assert (statuses["hostname"] == "httpbin.org").all()


def test_a_scrapers_frame_carries_its_scrape_list_in_attrs() -> None:
    data = frame([(1, "client", "200", 2), (2, "client", "200", 3)])
    data.attrs[SCRAPES_ATTR] = (("client", at(0)), ("client", at(1)), ("client", at(2)))
    out = increases(data)
    assert same(incs(out), [2, 1])
    assert out.attrs[SCRAPES_ATTR] == data.attrs[SCRAPES_ATTR]  # reconcile finds it too
