"""Chart specs (marks, encodings, UTC, change rules), aggregation, offline rendering."""

from __future__ import annotations

import threading
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
    spec = charts.outcomes_chart(requests(), [FLIP]).to_dict()
    band, plot = spec["vconcat"]
    bars, rule = plot["layer"]
    assert bars["mark"]["type"] == "bar"
    enc = bars["encoding"]
    assert enc["x"]["field"] == "start" and enc["x"]["type"] == "temporal"
    assert enc["x"]["scale"]["type"] == "utc"
    assert enc["x2"]["field"] == "end"
    assert enc["y"]["aggregate"] == "sum" and enc["y"]["stack"] == "zero"
    assert enc["color"]["field"] == "outcome"
    assert enc["color"]["scale"]["domain"] == list(OUTCOMES)
    assert enc["color"]["scale"]["range"][:2] == ["#1a7f37", "#cf222e"]
    assert enc["color"]["legend"]["orient"] == "bottom"  # never under the change labels
    assert rule["mark"]["type"] == "rule" and rule["encoding"]["x"]["scale"]["type"] == "utc"
    # The band and the plot share one explicit time domain, so labels sit on their rules.
    band_rule, band_text = band["layer"]
    assert band_rule["encoding"]["x"]["scale"] == enc["x"]["scale"]
    assert (
        band_text["mark"]["type"] == "text" and band_text["encoding"]["text"]["field"] == "change"
    )
    change_rows = [rows for rows in dataset_rows(spec) if rows and "change" in rows[0]]
    assert [(r["change"], r["at"]) for r in change_rows[-1]] == [
        ("EgressNetwork all-egress-traffic: Deny", "2025-01-01T12:00:30+00:00")
    ]


def test_one_colour_per_outcome_on_every_chart() -> None:
    """An allowed route is green and a forbidden one red on every chart: routes are told
    apart by row (routes chart) or point shape and dash (proxy chart), never by colour."""
    frame = requests(60).assign(
        route_name=["httpbin-get"] * 20 + ["http-egress-allow"] * 10 + ["http-egress-deny"] * 30
    )

    def colours(spec: dict[str, Any]) -> list[dict[str, Any]]:
        found = []

        def walk(node: Any) -> None:
            if isinstance(node, dict):
                if "color" in node.get("encoding", {}):
                    found.append(node["encoding"]["color"])
                for v in node.values():
                    walk(v)
            elif isinstance(node, list):
                for v in node:
                    walk(v)

        walk(spec)
        return found

    series = proxy_series()
    specs = [
        charts.outcomes_chart(frame, [FLIP]).to_dict(),
        charts.routes_chart(frame, [FLIP]).to_dict(),
        charts.hostnames_chart(frame).to_dict(),
        charts.proxy_chart(series, [FLIP]).to_dict(),
        charts.story_chart(frame, series, [FLIP]).to_dict(),
    ]
    for spec in specs:
        found = colours(spec)
        assert found, "every chart colours something"
        for colour in found:
            assert colour["field"] == "outcome"
            assert dict(zip(colour["scale"]["domain"], colour["scale"]["range"], strict=True)) == (
                charts.OUTCOME_COLOURS
            )
    routes = charts.routes_chart(frame, [FLIP]).to_dict()
    titles = [c.get("layer", [{}])[0].get("title") for c in routes["vconcat"][1:]]
    assert titles == [
        "Requests per route: http-egress-allow", "http-egress-deny", "httpbin-get"
    ]  # fmt: skip


def proxy_series() -> pd.DataFrame:
    """Classified counter increases, as outcomes.classify_series gives them."""

    def row(t: int, route: str, status: str, outcome: str, inc: float) -> dict[str, Any]:
        return {
            "scraped_at": pd.Timestamp(T0 + timedelta(seconds=t)),
            "metric": "outbound_http_route_request_statuses_total",
            "route_name": route,
            "http_status": status,
            "grpc_status": "",
            "error": "",
            "increase": inc,
            "outcome": outcome,
        }

    return pd.DataFrame(
        [
            row(0, "http-egress-allow", "200", "allowed", np.nan),
            row(10, "http-egress-allow", "200", "allowed", 10),
            row(20, "http-egress-allow", "200", "allowed", 10),
            row(40, "http-egress-deny", "403", "forbidden", 20),
            row(50, "http-egress-deny", "403", "forbidden", 10),
        ]
    ).assign(
        metric=lambda f: f["metric"],
    )


def test_proxy_chart_plots_counter_increases_per_route_and_status_with_zeros() -> None:
    spec = charts.proxy_chart(proxy_series(), [FLIP], bin="10s").to_dict()
    lines, rule = spec["layer"]
    assert lines["mark"]["type"] == "line"
    enc = lines["encoding"]
    assert (enc["color"]["field"], enc["shape"]["field"], enc["strokeDash"]["field"]) == (
        "outcome", "series", "series"
    )  # fmt: skip
    assert enc["y"]["title"] == "increase per 10s"
    (rows,) = [r for r in dataset_rows(spec) if r and "series" in r[0]]
    got = {(r["series"], r["start"][11:19]): r["count"] for r in rows}
    # Increases land in the bin of the scrape that saw them; bins without one are 0.
    assert got[("http-egress-allow 200", "12:00:10")] == 10.0
    assert got[("http-egress-allow 200", "12:00:40")] == 0.0
    assert got[("http-egress-deny 403", "12:00:40")] == 20.0
    assert got[("http-egress-deny 403", "12:00:10")] == 0.0
    assert rule["mark"]["type"] == "rule"


def test_series_label_names_route_and_status_per_protocol() -> None:
    frame = pd.DataFrame(
        {
            "route_name": ["httpbin-get", "tcp-egress-deny", "tls-egress", "grpc-r"],
            "http_status": ["200", "", "", ""],
            "grpc_status": ["", "", "", "OK"],
            "error": ["", "forbidden", "", ""],
        }
    )
    assert charts.series_label(frame).tolist() == [
        "httpbin-get 200", "tcp-egress-deny closed error=forbidden", "tls-egress closed",
        "grpc-r grpc OK",
    ]  # fmt: skip


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
    assert len(spec["vconcat"]) == 1 + 7  # the change band, then one row per route


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


def test_progress_caption_counts_the_requests_it_classified_on_both_lines() -> None:
    from egresskit import guide
    from egresskit.analysis import live
    from egresskit.analysis.outcomes import classify_requests
    from egresskit.analysis.timeline import PolicyTimeline
    from egresskit.traffic import start_traffic
    from tests.test_traffic import FakeMesh

    mesh = FakeMesh(guide.NAMESPACE, guide.EGRESS_NETWORK, guide.CLIENT_POD)
    traffic = start_traffic(mesh, "http://httpbin.org/get", rate=50.0, duration=0.1)
    traffic.wait(10)
    timeline = PolicyTimeline.of(mesh)
    classified = classify_requests(traffic.frame(), timeline)
    # A request recorded after the table was made (the loop, or a notebook's own curl).
    traffic.record(mesh.curl("-s", "http://httpbin.org/get", pod="client", namespace="egress-test"))
    first, second = str(live._caption(traffic, None, classified)).splitlines()[:2]
    n = len(classified)
    assert first.startswith(f"traffic: {n} requests ({n} HTTP 200)")
    assert second.startswith(f"client view by outcome: {n} allowed, ")
    assert len(traffic.records) == n + 1


class _Handle:
    def __init__(self) -> None:
        self.updates: list[Any] = []

    def update(self, obj: Any) -> None:
        self.updates.append(obj)


class _FakeDisplay:
    """Stands in for IPython.display: records what the live view shows."""

    def __init__(self) -> None:
        self.handles: list[_Handle] = []
        self.shown: list[Any] = []

    def display(self, obj: Any, display_id: bool = False) -> _Handle:
        assert display_id is True
        self.shown.append(obj)
        self.handles.append(_Handle())
        return self.handles[-1]

    def HTML(self, text: str) -> tuple[str, str]:
        return ("html", text)

    def SVG(self, text: str) -> tuple[str, str]:
        return ("svg", text)


def _live_in_fake_jupyter(monkeypatch: pytest.MonkeyPatch) -> _FakeDisplay:
    from egresskit.analysis import live

    fake = _FakeDisplay()
    monkeypatch.setattr(live, "in_jupyter", lambda: True)
    monkeypatch.setattr(live, "_display", lambda: fake)
    return fake


def test_live_view_in_jupyter_updates_in_place_and_leaves_a_png(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from egresskit import guide
    from egresskit.analysis import live
    from egresskit.analysis.scrape import Scraper
    from egresskit.traffic import start_traffic
    from tests.test_traffic import FakeMesh

    fake = _live_in_fake_jupyter(monkeypatch)
    mesh = FakeMesh(guide.NAMESPACE, guide.EGRESS_NETWORK, guide.CLIENT_POD)
    scraper = Scraper(mesh, [("client", "egress-test")], 0.05).start()
    traffic = start_traffic(mesh, "http://httpbin.org/get", rate=50.0)
    frames_seen = threading.Event()
    real_display = fake.display

    def display(obj: Any, display_id: bool = False) -> _Handle:
        handle = real_display(obj, display_id)
        if len(fake.handles) == 2:  # the chart's output: stop the traffic after 2 frames
            real_update = handle.update

            def update(obj: Any) -> None:
                real_update(obj)
                if len(handle.updates) == 2:
                    frames_seen.set()
                    threading.Thread(target=traffic.stop).start()

            handle.update = update  # type: ignore[method-assign]
        return handle

    fake.display = display  # type: ignore[method-assign]
    guard = threading.Timer(60, traffic.stop)  # bounded: a broken view still ends the test
    guard.start()
    live.watch(traffic, scraper=scraper, every=0.1)
    guard.cancel()
    scraper.stop()
    assert frames_seen.is_set(), "the chart changed twice while the traffic ran"
    # Two outputs, each updated in place: the caption and the chart.
    caption, _ = fake.shown
    assert isinstance(caption, live.Caption) and repr(caption).startswith("traffic: ")
    assert caption._repr_html_().startswith("<pre")  # formatted text, not a quoted string
    captions = fake.handles[0].updates
    assert "client view by outcome: " in repr(captions[-1])
    assert "allowed, 0 forbidden, 0 redirected, 0 failed" in repr(captions[-1])
    frames = [u for u in fake.handles[1].updates[:-1] if u[0] == "html"]
    assert len(frames) >= 2, "the chart changed at least twice while the traffic ran"
    assert all(f[1].startswith("<svg") for f in frames)
    assert "what the proxy counted" in frames[-1][1]  # the metrics chart is live too
    final = fake.handles[1].updates[-1]._repr_mimebundle_()
    assert final["image/png"][:8] == b"\x89PNG\r\n\x1a\n"


def test_interrupting_the_live_view_stops_the_traffic_and_re_raises(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from egresskit import guide
    from egresskit.analysis import live
    from egresskit.traffic import start_traffic
    from tests.test_traffic import FakeMesh

    fake = _live_in_fake_jupyter(monkeypatch)
    mesh = FakeMesh(guide.NAMESPACE, guide.EGRESS_NETWORK, guide.CLIENT_POD)
    traffic = start_traffic(mesh, "http://httpbin.org/get", rate=50.0)
    real_wait = traffic.wait
    calls = {"n": 0}

    def wait(timeout: float | None = None) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_wait(timeout)

    monkeypatch.setattr(traffic, "wait", wait)
    with pytest.raises(KeyboardInterrupt):
        live.watch(traffic, every=0.1, for_seconds=30)
    assert not traffic.running
    assert traffic.ended_because == "it was interrupted (KeyboardInterrupt)"
    assert "interrupted, traffic stopped" in capsys.readouterr().out
    assert "image/png" in fake.handles[1].updates[-1]._repr_mimebundle_()  # the chart so far


@pytest.mark.parametrize(
    ("seconds", "every"), [(None, 1.0), (2.0, 2.0 / 6), (0.5, 0.25), (60.0, 1.0)]
)
def test_a_short_watch_still_shows_several_frames(seconds: float | None, every: float) -> None:
    from egresskit.analysis import live

    assert live.frame_interval(seconds) == pytest.approx(every)
    if seconds is not None and seconds >= 1.2:
        assert seconds / live.frame_interval(seconds) >= live.MIN_FRAMES


def test_the_render_worker_renders_and_reports_errors() -> None:
    from egresskit.analysis.render import Renderer
    from egresskit.errors import BackendError

    spec = charts.outcomes_chart(requests(), [FLIP]).to_dict()
    with Renderer() as renderer:
        assert renderer.svg(spec).startswith("<svg")
        assert renderer.png(spec)[:8] == b"\x89PNG\r\n\x1a\n"
        with pytest.raises(BackendError, match="chart renderer: error"):
            renderer.svg({"mark": {"type": "no-such-mark"}, "data": 3})
        assert renderer.svg(spec).startswith("<svg")  # still serving after an error


def test_png_and_svg_from_one_rendering_show_the_same_chart(tmp_path: Path) -> None:
    chart = charts.outcomes_chart(requests(), [FLIP])
    png, svg = charts.save_png_and_svg(chart, tmp_path / "story")
    assert (png.name, svg.name) == ("story.png", "story.svg")
    assert "EgressNetwork all-egress-traffic: Deny" in svg.read_text()
    assert png.read_bytes() == charts.png_bytes(chart)  # the very pixels of a PNG rendering
