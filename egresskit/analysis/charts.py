"""Charts of egress outcomes over time, and images of them that need no JavaScript.

Job: the guide's story as pictures -- allowed 200s, then forbidden 403s after the Deny
patch, then redirected answers -- with every policy change (``cluster.changes``) marked as
a rule and a label; per-route and per-hostname breakdowns; the latest counters in the
guide's layout; and PNG/SVG/HTML files rendered offline by vl-convert.

Rules:

* Input is either classified requests (:func:`outcomes.classify_requests`: one row per
  request, time ``at``) or classified series (:func:`outcomes.classify_series`: time
  ``scraped_at``, weight ``increase``); both are aggregated into time bins first.
* The bin is the smallest of a ladder of round widths that keeps the chart's data under
  altair's 5000-row limit (:data:`MAX_ROWS`), so long runs never hit it.
* Times are UTC: data are timezone-aware, and every time scale is ``type: utc``.
* Offline HTML embeds the rendered SVG (or a PNG as a data URL): Vega's scripts from a
  CDN are not available offline, and inline Vega is not wanted.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import altair as alt
import pandas as pd
import vl_convert as vlc

from egresskit.analysis.markers import change_band, change_rules
from egresskit.analysis.outcomes import OUTCOMES
from egresskit.cluster.base import ChangeRecord

__all__ = [
    "BIN_LADDER",
    "MAX_ROWS",
    "OUTCOME_COLOURS",
    "aggregate",
    "choose_bin",
    "counters_table",
    "counters_text",
    "hostnames_chart",
    "outcomes_chart",
    "png_bytes",
    "proxy_chart",
    "routes_chart",
    "save_html",
    "save_png",
    "save_png_and_svg",
    "save_svg",
    "series_label",
    "story_chart",
    "svg_text",
]

#: Altair refuses datasets of 5000 rows or more (``alt.data_transformers`` max_rows).
MAX_ROWS = 4999
BIN_LADDER: tuple[str, ...] = (
    "1s",
    "2s",
    "5s",
    "10s",
    "15s",
    "30s",
    "1min",
    "2min",
    "5min",
    "10min",
    "15min",
    "30min",
    "1h",
    "2h",
    "3h",
    "6h",
    "12h",
    "1D",
    "7D",
)
OUTCOME_COLOURS: dict[str, str] = {
    "allowed": "#1a7f37",
    "forbidden": "#cf222e",
    "redirected": "#8250df",
    "failed": "#6e7781",
}
#: The guide's label order (docs/facts/linkerd-egress.md 6.2) for the counters table.
_GUIDE_LABELS = (
    "parent_group",
    "parent_kind",
    "parent_namespace",
    "parent_name",
    "parent_port",
    "parent_section_name",
    "route_group",
    "route_kind",
    "route_namespace",
    "route_name",
    "backend_group",
    "backend_kind",
    "backend_namespace",
    "backend_name",
    "backend_port",
    "backend_section_name",
    "hostname",
    "target_ip",
    "target_port",
    "http_status",
    "grpc_status",
    "error",
)
_ALWAYS = _GUIDE_LABELS[:10]  # P + R: every route family has them
_B = _GUIDE_LABELS[10:16]
#: Labels after P + R, per sample name suffix (docs/facts/linkerd-egress.md 6.2); the long
#: frame cannot tell an empty label from a missing one, so the family decides (``error=""``
#: shows).
_FAMILY_EXTRA: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("_route_request_statuses_total", ("hostname", "http_status", "grpc_status", "error")),
    ("_route_backend_requests_total", _B),
    ("_route_backend_response_statuses_total", (*_B, "http_status", "grpc_status", "error")),
    ("_tls_route_open_total", ("hostname",)),
    ("_tls_route_close_total", ("hostname", "error")),
    ("_tcp_route_open_total", ("target_ip", "target_port")),
    ("_tcp_route_close_total", ("target_ip", "target_port", "error")),
)


# ------------------------------------------------------------------------ aggregation


#: Wall-clock labels: with sub-minute runs Vega's default multi-format shows ".500".
_TIME_AXIS = alt.Axis(format="%H:%M:%S", labelAngle=0, tickMinStep=1000)


def _time_and_weight(frame: pd.DataFrame) -> tuple[str, str | None]:
    if "increase" in frame.columns and "scraped_at" in frame.columns:
        return "scraped_at", "increase"
    return "at", None


def choose_bin(
    start: pd.Timestamp, end: pd.Timestamp, groups: int, max_rows: int = MAX_ROWS
) -> str:
    """The smallest width of :data:`BIN_LADDER` keeping ``bins * groups <= max_rows``."""
    span = max((end - start).total_seconds(), 0.0)
    for width in BIN_LADDER:
        seconds = pd.Timedelta(width).total_seconds()
        if (span // seconds + 2) * max(groups, 1) <= max_rows:
            return width
    return BIN_LADDER[-1]


def aggregate(
    frame: pd.DataFrame,
    by: Sequence[str] = ("outcome",),
    *,
    bin: str | None = None,
    max_rows: int = MAX_ROWS,
) -> tuple[pd.DataFrame, str]:
    """Counts per time bin and ``by`` columns: ``start``, ``end`` (UTC), ``*by``, ``count``."""
    time_col, weight = _time_and_weight(frame)
    by = list(by)
    columns = ["start", "end", *by, "count"]
    if frame.empty:
        empty = pd.DataFrame(
            {c: pd.Series(dtype="float64" if c == "count" else "str") for c in columns}
        )
        return empty, bin or BIN_LADDER[0]
    times = pd.to_datetime(frame[time_col], utc=True)
    groups = max(len(frame[by].drop_duplicates()), 1) if by else 1
    bin = bin or choose_bin(times.min(), times.max(), groups, max_rows)
    n = frame[weight].fillna(0) if weight else pd.Series(1.0, index=frame.index)
    data = frame[by].assign(start=times.dt.floor(bin), count=n.astype("float64"))
    out = data.groupby(["start", *by], sort=True, observed=True)["count"].sum().reset_index()
    out = out[out["count"] > 0]
    out["end"] = out["start"] + pd.Timedelta(bin)
    return out[columns].reset_index(drop=True), bin


# ----------------------------------------------------------------------------- charts


def _domain(
    times: Sequence[pd.Series], changes: Sequence[ChangeRecord], bin: str
) -> tuple[pd.Timestamp, pd.Timestamp]:
    """The time span every chart of one figure shares: all data bins and all changes."""
    points = [pd.to_datetime(t, utc=True) for t in times if len(t)]
    points.append(pd.to_datetime(pd.Series([c.at for c in changes], dtype=object), utc=True))
    stamps = pd.concat(points) if points else pd.Series(dtype="datetime64[ns, UTC]")
    stamps = stamps.dropna()
    if stamps.empty:
        now = pd.Timestamp.now(tz="UTC").floor("s")
        return now, now + pd.Timedelta(bin)
    start = stamps.min().floor(bin)
    end = stamps.max().floor(bin) + pd.Timedelta(bin)
    return start, end


def _scale(domain: tuple[pd.Timestamp, pd.Timestamp]) -> alt.Scale:
    ms = [int(t.value // 1_000_000) for t in domain]  # Vega reads numbers as epoch ms
    return alt.Scale(type="utc", domain=ms)


def _x(domain: tuple[pd.Timestamp, pd.Timestamp], field: str, title: str | None) -> alt.X:
    return alt.X(f"{field}:T", scale=_scale(domain), axis=_TIME_AXIS, title=title)


def _outcome_colour() -> alt.Color:
    """One colour per outcome, the same on every chart (never by route)."""
    return alt.Color(
        "outcome:N",
        title="outcome",
        scale=alt.Scale(domain=list(OUTCOMES), range=[OUTCOME_COLOURS[o] for o in OUTCOMES]),
        sort=list(OUTCOMES),
        legend=alt.Legend(orient="bottom", direction="horizontal"),
    )


def _bars(
    data: pd.DataFrame,
    domain: tuple[pd.Timestamp, pd.Timestamp],
    *,
    bin: str,
    title: str,
    y_title: str,
    width: int,
    height: int,
    changes: Sequence[ChangeRecord],
    axis_title: bool = True,
) -> alt.LayerChart:
    x = _x(domain, "start", f"time (UTC), {bin} bins" if axis_title else None)
    bars = (
        alt.Chart(data, title=title)
        .mark_bar(stroke="white", strokeWidth=0.5)
        .encode(
            x=x,
            x2="end:T",
            y=alt.Y("sum(count):Q", title=y_title, stack="zero"),
            color=_outcome_colour(),
            order=alt.Order("outcome_rank:Q"),
            tooltip=["start:T", "outcome:N", "sum(count):Q"],
        )
        .transform_calculate(outcome_rank=_RANK)
        .properties(width=width, height=height)
    )
    return alt.LayerChart(layer=[bars, *change_rules(changes, _scale(domain))])


# The stacking order of outcomes: allowed at the bottom, failed on top.
_RANK = " ".join(f"datum.outcome === '{o}' ? {i} :" for i, o in enumerate(OUTCOMES)) + " 9"


def _with_band(
    plots: Sequence[alt.LayerChart],
    changes: Sequence[ChangeRecord],
    domain: tuple[pd.Timestamp, pd.Timestamp],
    width: int,
) -> alt.VConcatChart:
    band = change_band(changes, _scale(domain), domain, width=width)
    parts = [band, *plots] if band is not None else list(plots)
    figure: alt.VConcatChart = alt.vconcat(*parts, spacing=6).resolve_scale(x="shared")
    return figure


def outcomes_chart(
    frame: pd.DataFrame,
    changes: Sequence[ChangeRecord] = (),
    *,
    title: str = "Egress outcomes over time",
    bin: str | None = None,
    width: int = 700,
    height: int = 260,
) -> alt.VConcatChart:
    """Stacked bars of allowed / forbidden / redirected / failed per bin (the client's
    view, or proxy series weighted by increase), the changes marked above the plot."""
    data, bin = aggregate(frame, ("outcome",), bin=bin)
    domain = _domain([data["start"], data["end"]], changes, bin)
    y_title = "increase" if _time_and_weight(frame)[1] else "requests"
    bars = _bars(data, domain, bin=bin, title=title, y_title=y_title, width=width,
                 height=height, changes=changes)  # fmt: skip
    return _with_band([bars], changes, domain, width)


def series_label(frame: pd.DataFrame) -> pd.Series:
    """``route status`` per series row, as a Grafana legend shows ``{{route_name}}
    {{http_status}}``: the HTTP or gRPC status, else the TLS/TCP close's ``error``."""

    def col(name: str) -> pd.Series:
        if name in frame.columns:
            return frame[name].fillna("").astype("str")
        return pd.Series("", index=frame.index, dtype="str")

    route = col("route_name").replace("", "(no route)")
    status = col("http_status").where(col("http_status") != "", "grpc " + col("grpc_status"))
    error = col("error")
    closed = "closed" + error.where(error == "", " error=" + error)
    status = status.where(col("grpc_status").ne("") | col("http_status").ne(""), closed)
    return (route + " " + status).astype("str")


def proxy_chart(
    series: pd.DataFrame,
    changes: Sequence[ChangeRecord] = (),
    *,
    title: str = "What the proxy counted: increase of outbound_*_route_* per bin",
    bin: str | None = None,
    width: int = 700,
    height: int = 220,
    domain: tuple[pd.Timestamp, pd.Timestamp] | None = None,
    axis_title: bool = True,
) -> alt.LayerChart:
    """The proxy's route metrics over time, as a Prometheus/Grafana user plots them:
    ``sum by (route_name, status) (increase(outbound_*_route_*[bin]))``, one line per
    route and status, coloured by outcome, told apart by dash and point shape.

    ``series`` is :func:`outcomes.classify_series` output (``scraped_at``, ``increase``,
    ``outcome``, labels). Bins with no increase are drawn at 0, not skipped.
    """
    frame = series.assign(series=series_label(series)) if len(series) else series
    if "series" not in frame.columns:
        frame = frame.assign(series=pd.Series(dtype="str"))
    data, bin = aggregate(frame, ("outcome", "series"), bin=bin)
    if domain is None:
        domain = _domain([data["start"], data["end"]], changes, bin)
    data = _zero_filled(data, domain, bin)
    data["at"] = data["start"] + pd.Timedelta(bin) / 2  # a bin's point sits at its middle
    x = _x(domain, "at", f"time (UTC), {bin} bins" if axis_title else None)
    lines = (
        alt.Chart(data, title=title)
        .mark_line(point=alt.OverlayMarkDef(filled=True, size=36), strokeWidth=2)
        .encode(
            x=x,
            y=alt.Y("count:Q", title=f"increase per {bin}"),
            color=_outcome_colour(),
            strokeDash=alt.StrokeDash("series:N", legend=None),
            shape=alt.Shape("series:N", title="route and status", legend=_SERIES_LEGEND),
            tooltip=["start:T", "series:N", "outcome:N", "count:Q"],
        )
        .properties(width=width, height=height)
    )
    return alt.LayerChart(layer=[lines, *change_rules(changes, _scale(domain))])


# Routes and statuses are told apart by point shape (and dash); the legend shows shapes.
_SERIES_LEGEND = alt.Legend(
    orient="bottom",
    columns=3,
    labelLimit=0,
    symbolSize=120,
    symbolStrokeWidth=2,
    symbolStrokeColor="#24292f",
    symbolFillColor="#24292f",
)


def _zero_filled(
    data: pd.DataFrame, domain: tuple[pd.Timestamp, pd.Timestamp], bin: str
) -> pd.DataFrame:
    """Every (series, bin) from the first to the last bin of ``domain``, 0 where absent."""
    if data.empty:
        return data
    bins = pd.date_range(domain[0], domain[1] - pd.Timedelta(bin), freq=bin, tz="UTC")
    keys = data[["outcome", "series"]].drop_duplicates()
    grid = keys.merge(pd.DataFrame({"start": bins.astype(data["start"].dtype)}), how="cross")
    out = grid.merge(data, on=["start", "outcome", "series"], how="left")
    out["count"] = out["count"].fillna(0.0)
    out["end"] = out["start"] + pd.Timedelta(bin)
    return out[["start", "end", "outcome", "series", "count"]]


def story_chart(
    requests: pd.DataFrame,
    series: pd.DataFrame | None,
    changes: Sequence[ChangeRecord] = (),
    *,
    title: str = "Egress over time",
    bin: str | None = None,
    width: int = 700,
) -> alt.VConcatChart:
    """The headline figure: the proxy's route metrics (what an operator of a real cluster
    sees) above the client's own view of the same requests, one shared time axis, the
    policy changes labelled above both."""
    req_data, req_bin = aggregate(requests, ("outcome",), bin=bin)
    bin = bin or req_bin
    if series is not None and len(series):
        groups = len(series_label(series).drop_duplicates())
        times = pd.to_datetime(series["scraped_at"], utc=True)
        bin = max(bin, choose_bin(times.min(), times.max(), groups), key=_seconds)
        req_data, _ = aggregate(requests, ("outcome",), bin=bin)
    times = [req_data["start"], req_data["end"]]
    if series is not None and len(series):
        times.append(series["scraped_at"])
    domain = _domain(times, changes, bin)
    plots: list[alt.LayerChart] = []
    if series is not None:
        plots.append(
            proxy_chart(
                series,
                changes,
                bin=bin,
                domain=domain,
                width=width,
                height=200,
                axis_title=False,
                title=f"{title}: what the proxy counted (route metrics)",
            )
        )
    plots.append(
        _bars(
            req_data,
            domain,
            bin=bin,
            title=f"{title}: what the client saw (curl results)",
            y_title="requests",
            width=width,
            height=160,
            changes=changes,
        )
    )
    return _with_band(plots, changes, domain, width)


def _seconds(width: str) -> float:
    return float(pd.Timedelta(width).total_seconds())


def routes_chart(
    frame: pd.DataFrame,
    changes: Sequence[ChangeRecord] = (),
    *,
    title: str = "Requests per route",
    bin: str | None = None,
    width: int = 700,
    height: int = 70,
) -> alt.VConcatChart:
    """One row of stacked bars per ``route_name`` (``http-egress-allow``, ``httpbin-get``,
    ...): routes are told apart by their row, outcomes by the one outcome colour."""
    data, bin = aggregate(frame, ("route_name", "outcome"), bin=bin)
    domain = _domain([data["start"], data["end"]], changes, bin)
    routes = sorted(data["route_name"].unique()) if len(data) else ["(no requests)"]
    rows = [
        _bars(
            data[data["route_name"] == route] if len(data) else data,
            domain,
            bin=bin,
            title=f"{title}: {route}" if i == 0 else route,
            y_title="requests",
            width=width,
            height=height,
            changes=changes,
            axis_title=i == len(routes) - 1,
        )
        for i, route in enumerate(routes)
    ]
    return _with_band(rows, changes, domain, width)


def hostnames_chart(
    frame: pd.DataFrame, *, title: str = "Requests per hostname", width: int = 500
) -> alt.Chart:
    """Total requests per ``hostname``, split by outcome (horizontal bars)."""
    _, weight = _time_and_weight(frame)
    n = frame[weight].fillna(0) if weight else pd.Series(1.0, index=frame.index)
    data = (
        frame[["hostname", "outcome"]]
        .assign(count=n.astype("float64"), hostname=frame["hostname"].replace("", "(none)"))
        .groupby(["hostname", "outcome"], sort=True)["count"]
        .sum()
        .reset_index()
    )
    data = data[data["count"] > 0]
    chart: alt.Chart = (
        alt.Chart(data, title=title)
        .mark_bar()
        .encode(
            y=alt.Y("hostname:N", sort="-x"),
            x=alt.X("sum(count):Q", title="requests"),
            color=_outcome_colour(),
            tooltip=["hostname:N", "outcome:N", "sum(count):Q"],
        )
        .properties(width=width)
    )
    return chart


# --------------------------------------------------------------------------- counters


def counters_table(
    frame: pd.DataFrame, metric: str = "outbound_http_route_request_statuses_total"
) -> pd.DataFrame:
    """The latest value of each ``metric`` series per pod, columns in the guide's order
    (P and R always, other labels when any series has them), largest first."""
    rows = frame[frame["metric"] == metric]
    if rows.empty:
        return pd.DataFrame(columns=["pod", *_ALWAYS, "value"])
    latest = rows[rows["scraped_at"] == rows.groupby("pod")["scraped_at"].transform("max")]
    family = next((labels for end, labels in _FAMILY_EXTRA if metric.endswith(end)), None)
    if family is not None:
        # http_status or grpc_status: the one the family's protocol uses.
        status = "grpc_status" if "_grpc_" in metric else "http_status"
        family = tuple(c for c in family if c not in ("http_status", "grpc_status") or c == status)
        extra = [c for c in family if c in latest.columns]
    else:
        extra = [c for c in _GUIDE_LABELS[10:] if c in latest.columns and (latest[c] != "").any()]
    cols = ["pod", *[c for c in _ALWAYS if c in latest.columns], *extra, "value"]
    table = latest[cols].sort_values("value", ascending=False, kind="stable")
    return table.reset_index(drop=True)


def counters_text(
    frame: pd.DataFrame, metric: str = "outbound_http_route_request_statuses_total"
) -> str:
    """The table as the guide prints it: ``metric{`` one label a line ``} value``."""
    table = counters_table(frame, metric)
    blocks = []
    for _, row in table.iterrows():
        labels = [c for c in table.columns if c not in ("pod", "value")]
        body = ",\n".join(f'  {c}="{row[c]}"' for c in labels)
        blocks.append(f"{metric}{{\n{body}\n}} {row['value']:g}")
    return "\n".join(blocks)


# ---------------------------------------------------------------------------- render


def _spec(chart: alt.TopLevelMixin | dict[str, Any]) -> str:
    spec = chart if isinstance(chart, dict) else chart.to_dict()
    return json.dumps(spec)


def svg_text(chart: alt.TopLevelMixin | dict[str, Any]) -> str:
    """The chart as SVG markup, rendered by vl-convert (no browser, no network)."""
    return str(vlc.vegalite_to_svg(_spec(chart)))


def png_bytes(chart: alt.TopLevelMixin | dict[str, Any], *, scale: float = 2.0) -> bytes:
    return bytes(vlc.vegalite_to_png(_spec(chart), scale=scale))


def save_svg(chart: alt.TopLevelMixin | dict[str, Any], path: str | Path) -> Path:
    out = Path(path)
    out.write_text(svg_text(chart), encoding="utf-8")
    return out


def save_png(
    chart: alt.TopLevelMixin | dict[str, Any], path: str | Path, *, scale: float = 2.0
) -> Path:
    out = Path(path)
    out.write_bytes(png_bytes(chart, scale=scale))
    return out


def save_png_and_svg(
    chart: alt.TopLevelMixin | dict[str, Any], stem: str | Path, *, scale: float = 2.0
) -> tuple[Path, Path]:
    """``stem.png`` and ``stem.svg`` from one rendering: the PNG is rasterised from the SVG
    (the same pixels as rendering the chart twice, in a fraction of the time)."""
    svg = svg_text(chart)
    png_path, svg_path = Path(f"{stem}.png"), Path(f"{stem}.svg")
    svg_path.write_text(svg, encoding="utf-8")
    png_path.write_bytes(bytes(vlc.svg_to_png(svg, scale=scale)))
    return png_path, svg_path


def save_html(
    chart: alt.TopLevelMixin | dict[str, Any],
    path: str | Path,
    *,
    title: str = "egresskit chart",
    image: Literal["svg", "png"] = "svg",
) -> Path:
    """A self-contained HTML page showing the rendered image: no scripts at all."""
    if image == "svg":
        body = svg_text(chart)
    else:
        data = base64.b64encode(png_bytes(chart)).decode("ascii")
        body = f'<img alt="{html.escape(title)}" src="data:image/png;base64,{data}">'
    page = (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title></head>\n<body>\n{body}\n</body></html>\n"
    )
    out = Path(path)
    out.write_text(page, encoding="utf-8")
    return out
