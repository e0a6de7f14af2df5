"""Chart specs (marks, encodings, UTC, change rules), aggregation, offline rendering."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from egresskit.analysis import charts
from egresskit.analysis.outcomes import OUTCOMES
from egresskit.cluster.base import ChangeRecord
from tests.guide_labels import route_labels

T0 = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
FLIP = ChangeRecord(
    at=T0 + timedelta(seconds=30),
    verb="patch",
    objects=("EgressNetwork egress-test/all-egress-traffic",),
    summary="EgressNetwork all-egress-traffic: Deny",
)


def requests(n: int = 60, *, step: float = 1.0) -> pd.DataFrame:
    """Classified client requests: allowed for the first half, forbidden after."""
    at = pd.Series([pd.Timestamp(T0 + timedelta(seconds=i * step)) for i in range(n)])
    half = n // 2
    return pd.DataFrame(
        {
            "at": at,
            "hostname": "httpbin.org",
            "route_name": ["http-egress-allow"] * half + ["http-egress-deny"] * (n - half),
            "outcome": ["allowed"] * half + ["forbidden"] * (n - half),
        }
    )


def layers(chart: Any) -> list[dict[str, Any]]:
    spec = chart.to_dict()
    return list(spec["layer"]), spec  # type: ignore[return-value]


def dataset_rows(spec: dict[str, Any]) -> list[list[dict[str, Any]]]:
    return list(spec.get("datasets", {}).values())


def test_outcomes_chart_is_stacked_bars_in_utc_with_the_changes_marked() -> None:
    (bars, rule, text), spec = layers(charts.outcomes_chart(requests(), [FLIP]))
    assert bars["mark"]["type"] == "bar"
    enc = bars["encoding"]
    assert enc["x"]["field"] == "start" and enc["x"]["type"] == "temporal"
    assert enc["x"]["scale"] == {"type": "utc"}
    assert enc["x2"]["field"] == "end"
    assert enc["y"]["aggregate"] == "sum" and enc["y"]["stack"] == "zero"
    assert enc["color"]["field"] == "outcome"
    assert enc["color"]["scale"]["domain"] == list(OUTCOMES)
    assert enc["color"]["scale"]["range"][:2] == ["#1a7f37", "#cf222e"]
    assert rule["mark"]["type"] == "rule" and rule["encoding"]["x"]["scale"] == {"type": "utc"}
    assert text["mark"]["type"] == "text" and text["encoding"]["text"]["field"] == "change"
    change_rows = [rows for rows in dataset_rows(spec) if rows and "change" in rows[0]]
    assert change_rows == [
        [
            {
                "at": "2025-01-01T12:00:30+00:00",
                "change": "EgressNetwork all-egress-traffic: Deny",
                "verb": "patch",
            }
        ]
    ]


def test_bars_count_requests_per_bin_and_outcome() -> None:
    data, bin = charts.aggregate(requests(60))
    assert bin == "1s"
    assert data.groupby("outcome")["count"].sum().to_dict() == {"allowed": 30.0, "forbidden": 30.0}
    assert str(data["start"].dt.tz) == "UTC"
    assert (data["end"] - data["start"] == pd.Timedelta("1s")).all()


def test_series_frames_are_weighted_by_increase() -> None:
    series = pd.DataFrame(
        {
            "scraped_at": [pd.Timestamp(T0), pd.Timestamp(T0 + timedelta(seconds=1))],
            "outcome": ["allowed", "allowed"],
            "increase": [np.nan, 5.0],
        }
    )
    data, _ = charts.aggregate(series)
    assert data["count"].tolist() == [5.0]


@pytest.mark.parametrize(
    ("span_s", "groups", "expected"),
    [(60, 4, "1s"), (3600, 1, "1s"), (3600, 4, "5s"), (3600, 50, "1min"), (86400, 4, "2min")],
    ids=["minute", "hour-1", "hour-4", "hour-50-groups", "day"],
)
def test_bin_keeps_rows_under_altairs_limit(span_s: int, groups: int, expected: str) -> None:
    end = pd.Timestamp(T0 + timedelta(seconds=span_s))
    width = charts.choose_bin(pd.Timestamp(T0), end, groups)
    assert width == expected
    assert (span_s // pd.Timedelta(width).total_seconds() + 2) * groups <= charts.MAX_ROWS


def test_an_hour_at_one_hertz_with_many_routes_never_hits_the_row_limit() -> None:
    n = 3600 * 4
    frame = pd.DataFrame(
        {
            "at": pd.Series([pd.Timestamp(T0 + timedelta(seconds=i / 4)) for i in range(n)]),
            "route_name": [f"route-{i % 7}" for i in range(n)],
            "outcome": [OUTCOMES[i % 4] for i in range(n)],
            "hostname": "httpbin.org",
        }
    )
    spec = charts.routes_chart(frame, [FLIP]).to_dict()  # raises MaxRowsError otherwise
    assert max(len(rows) for rows in dataset_rows(spec)) < 5000
    assert spec["layer"][0]["encoding"]["color"]["field"] == "route_name"


def test_hostnames_chart_totals_per_host_and_outcome() -> None:
    frame = requests(10).assign(hostname=["httpbin.org"] * 6 + ["github.com"] * 3 + [""])
    spec = charts.hostnames_chart(frame).to_dict()
    (rows,) = dataset_rows(spec)
    got = {(r["hostname"], r["outcome"]): r["count"] for r in rows}
    assert got == {
        ("httpbin.org", "allowed"): 5.0,
        ("httpbin.org", "forbidden"): 1.0,
        ("github.com", "forbidden"): 3.0,
        ("(none)", "forbidden"): 1.0,
    }
    assert spec["encoding"]["y"]["field"] == "hostname"


# --------------------------------------------------------------------------- counters


def scrape_frame() -> pd.DataFrame:
    def row(t: int, name: str, status: str, value: float) -> dict[str, Any]:
        return {
            "scraped_at": pd.Timestamp(T0 + timedelta(seconds=t)),
            "pod": "client",
            "metric": "outbound_http_route_request_statuses_total",
            **route_labels(80, "default", name),
            "backend_name": "",
            "hostname": "httpbin.org",
            "http_status": status,
            "error": "",
            "value": value,
        }

    return pd.DataFrame(
        [
            row(0, "http-egress-allow", "200", 10),
            row(1, "http-egress-allow", "200", 12),
            row(1, "http-egress-deny", "403", 30),
        ]
    )


def test_counters_table_shows_the_latest_values_in_the_guides_label_order() -> None:
    table = charts.counters_table(scrape_frame())
    assert list(table.columns) == [
        "pod", "parent_group", "parent_kind", "parent_namespace", "parent_name", "parent_port",
        "parent_section_name", "route_group", "route_kind", "route_namespace", "route_name",
        "hostname", "http_status", "error", "value",
    ]  # fmt: skip
    assert table[["route_name", "value"]].values.tolist() == [
        ["http-egress-deny", 30.0],
        ["http-egress-allow", 12.0],
    ]


def test_counters_text_reads_like_the_guide() -> None:
    text = charts.counters_text(scrape_frame())
    assert text.startswith(
        'outbound_http_route_request_statuses_total{\n  parent_group="policy.linkerd.io",\n'
    )
    assert '  route_name="http-egress-deny",\n  hostname="httpbin.org",\n' in text
    assert '  error=""\n} 30\n' in text


# -------------------------------------------------------------------------- rendering


def test_png_svg_and_html_render_offline(tmp_path: Path) -> None:
    chart = charts.outcomes_chart(requests(), [FLIP])
    png = charts.save_png(chart, tmp_path / "outcomes.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000
    svg = charts.save_svg(chart, tmp_path / "outcomes.svg").read_text()
    assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>")
    assert "EgressNetwork all-egress-traffic: Deny" in svg  # the change label is drawn
    page = charts.save_html(chart, tmp_path / "outcomes.html").read_text()
    assert "<svg" in page and "<script" not in page
    page_png = charts.save_html(chart, tmp_path / "png.html", image="png").read_text()
    assert 'src="data:image/png;base64,iVBORw0KGgo' in page_png and "<script" not in page_png


def test_empty_data_still_renders() -> None:
    chart = charts.outcomes_chart(requests(0))
    assert charts.svg_text(chart).startswith("<svg")


# ------------------------------------------------------------------------------ live


def test_live_view_outside_jupyter_prints_progress_lines() -> None:
    from egresskit import guide
    from egresskit.analysis import live
    from egresskit.traffic import start_traffic
    from tests.test_traffic import FakeMesh

    mesh = FakeMesh(guide.NAMESPACE, guide.EGRESS_NETWORK, guide.CLIENT_POD)
    traffic = start_traffic(mesh, "http://httpbin.org/get", rate=50.0, duration=0.1)
    lines: list[str] = []
    classified = live.watch(traffic, every=0.02, out=lines.append)
    assert not live.in_jupyter()
    assert lines and all(line.startswith("traffic: ") for line in lines)
    assert "stopped after" in lines[-1]
    assert set(classified["outcome"]) == {"allowed"}


class _Handle:
    def __init__(self) -> None:
        self.updates: list[Any] = []

    def update(self, obj: Any) -> None:
        self.updates.append(obj)


class _FakeDisplay:
    """Stands in for IPython.display: records what the live view shows."""

    def __init__(self) -> None:
        self.handle = _Handle()
        self.shown: list[Any] = []

    def display(self, obj: Any, display_id: bool = False) -> _Handle:
        assert display_id is True
        self.shown.append(obj)
        return self.handle

    def HTML(self, text: str) -> tuple[str, str]:
        return ("html", text)

    def SVG(self, text: str) -> tuple[str, str]:
        return ("svg", text)

    def Image(self, *, data: bytes, format: str) -> tuple[str, bytes]:
        return (format, data)


def test_live_view_in_jupyter_updates_in_place_and_leaves_a_png(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from egresskit import guide
    from egresskit.analysis import live
    from egresskit.traffic import start_traffic
    from tests.test_traffic import FakeMesh

    fake = _FakeDisplay()
    monkeypatch.setattr(live, "in_jupyter", lambda: True)
    monkeypatch.setattr(live, "_display", lambda: fake)
    mesh = FakeMesh(guide.NAMESPACE, guide.EGRESS_NETWORK, guide.CLIENT_POD)
    traffic = start_traffic(mesh, "http://httpbin.org/get", rate=50.0, duration=0.1)
    live.watch(traffic, every=0.02)
    assert len(fake.shown) == 1  # one output, updated in place
    kind, data = fake.handle.updates[-1]
    assert kind == "png" and data[:8] == b"\x89PNG\r\n\x1a\n"
    live_updates = [u for u in fake.handle.updates[:-1] if u[0] == "html"]
    assert all(u[1].startswith("<pre>traffic: ") for u in live_updates)
