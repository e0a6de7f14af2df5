"""Change labels never overlap each other, their rules never cross text, and labels stay
inside the plot's width (right-aligned near the right edge)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from egresskit.analysis import charts
from egresskit.analysis.markers import Placement, label_rows
from egresskit.cluster.base import ChangeRecord

WIDTH = 700.0


def assert_clear(xs: list[float], places: list[Placement]) -> None:
    for i, p in enumerate(places):
        assert p.x == pytest.approx(xs[i])
        for j, q in enumerate(places):
            if i == j:
                continue
            if p.row == q.row:
                assert p.right <= q.left or q.right <= p.left, (i, j, places)
            if q.row <= p.row:  # q's rule runs down through p's row
                assert not (p.left < q.x < p.right), (i, j, places)


def test_changes_seconds_apart_go_on_rows_of_their_own() -> None:
    xs = [100.0, 104.0, 110.0]
    places = label_rows(xs, [200.0, 200.0, 200.0], WIDTH)
    assert [p.row for p in places] == [0, 1, 2]  # each rule starts below the earlier texts
    assert_clear(xs, places)


def test_changes_far_apart_share_a_row() -> None:
    places = label_rows([10.0, 400.0], [150.0, 150.0], WIDTH)
    assert [p.row for p in places] == [0, 0]


def test_a_label_near_the_right_edge_is_right_aligned_inside_the_plot() -> None:
    (place,) = label_rows([690.0], [200.0], WIDTH)
    assert place.align == "right" and place.left >= 0 and place.right <= WIDTH


@pytest.mark.parametrize("seed", range(30))
def test_random_changes_never_overlap(seed: int) -> None:
    rng = random.Random(seed)
    n = rng.randint(1, 12)
    xs = [rng.uniform(0, WIDTH) for _ in range(n)]
    places = label_rows(xs, [rng.uniform(40, 400) for _ in range(n)], WIDTH)
    assert_clear(xs, places)


def test_a_chart_with_a_burst_of_changes_draws_every_label() -> None:
    t0 = datetime(2025, 1, 1, 12, tzinfo=UTC)
    changes = [
        ChangeRecord(at=t0 + timedelta(seconds=s), verb="apply", objects=(), summary=text)
        for s, text in [
            (0.0, "EgressNetwork all-egress-traffic: Allow"),
            (0.1, "Pod egress-test/client"),
            (5.0, "EgressNetwork all-egress-traffic: Deny"),
            (5.2, "HTTPRoute httpbin-get"),
            (9.9, "TLSRoute tls-egress"),
        ]
    ]
    import pandas as pd

    frame = pd.DataFrame(
        {"at": [t0 + timedelta(seconds=i) for i in range(10)], "outcome": ["allowed"] * 10}
    )
    svg = charts.svg_text(charts.outcomes_chart(frame, changes))
    for change in changes:
        assert change.summary in svg
