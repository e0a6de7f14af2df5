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
    "routes_chart",
    "save_html",
    "save_png",
    "save_svg",
    "svg_text",
]

#: Altair refuses datasets of 5000 rows or more (``alt.data_transformers`` max_rows).
MAX_ROWS = 4999
BIN_LADDER: tuple[str, ...] = (
    "1s", "2s", "5s", "10s", "15s", "30s", "1min", "2min", "5min", "10min", "15min",
    "30min", "1h", "2h", "3h", "6h", "12h", "1D", "7D",
)  # fmt: skip
OUTCOME_COLOURS: dict[str, str] = {
    "allowed": "#1a7f37",
    "forbidden": "#cf222e",
    "redirected": "#8250df",
    "failed": "#6e7781",
}
#: The guide's label order (docs/facts/linkerd-egress.md 6.2) for the counters table.
_GUIDE_LABELS = (
    "parent_group", "parent_kind", "parent_namespace", "parent_name", "parent_port",
    "parent_section_name", "route_group", "route_kind", "route_namespace", "route_name",
    "backend_group", "backend_kind", "backend_namespace", "backend_name", "backend_port",
    "backend_section_name", "hostname", "target_ip", "target_port", "http_status",
    "grpc_status", "error",
)  # fmt: skip
_ALWAYS = _GUIDE_LABELS[:10]  # P + R: every route family has them
_B = _GUIDE_LABELS[10:16]
#: Labels after P + R, per sample name suffix (docs/facts/linkerd-egress.md 6.2); the long frame
#: cannot
#: tell an empty label from a missing one, so the family decides (``error=""`` shows).
_FAMILY_EXTRA: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("_route_request_statuses_total", ("hostname", "http_status", "grpc_status", "error")),
    ("_route_backend_requests_total", _B),
    ("_route_backend_response_statuses_total", (*_B, "http_status", "grpc_status", "error")),
    ("_tls_route_open_total", ("hostname",)),
    ("_tls_route_close_total", ("hostname", "error")),
    ("_tcp_route_open_total", ("target_ip", "target_port")),
    ("_tcp_route_close_total", ("target_ip", "target_port", "error")),
)
_UTC = alt.Scale(type="utc")
_LABEL_LINES = 4


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


def _changes_layers(changes: Sequence[ChangeRecord]) -> list[alt.Chart]:
    """A dashed rule per change and its summary; labels of successive changes go on
    successive lines (4 in turn) so changes made seconds apart stay readable."""
    if not changes:
        return []
    data = pd.DataFrame(
        {
            "at": pd.to_datetime([c.at for c in changes], utc=True),
            "change": [c.summary or f"{c.verb} {', '.join(c.objects)}" for c in changes],
            "verb": [c.verb for c in changes],
        }
    )
    rule = (
        alt.Chart(data)
        .mark_rule(color="#24292f", strokeDash=[4, 3])
        .encode(
            x=alt.X("at:T", scale=_UTC, axis=_TIME_AXIS), tooltip=["change:N", "verb:N", "at:T"]
        )
    )
    texts = [
        alt.Chart(data.iloc[line::_LABEL_LINES])
        .mark_text(
            align="left", baseline="top", dx=3, dy=2 + 12 * line, fontSize=10, color="#24292f"
        )
        .encode(x=alt.X("at:T", scale=_UTC, axis=_TIME_AXIS), y=alt.value(0), text="change:N")
        for line in range(min(_LABEL_LINES, len(data)))
    ]
    return [rule, *texts]


def _bars(data: pd.DataFrame, colour: str, colour_enc: alt.Color, *, bin: str, title: str,
          width: int, height: int) -> alt.Chart:  # fmt: skip
    chart: alt.Chart = (
        alt.Chart(data, title=title)
        .mark_bar()
        .encode(
            x=alt.X("start:T", scale=_UTC, title=f"time (UTC), {bin} bins", axis=_TIME_AXIS),
            x2="end:T",
            y=alt.Y("sum(count):Q", title="requests", stack="zero"),
            color=colour_enc,
            tooltip=["start:T", f"{colour}:N", "sum(count):Q"],
        )
        .properties(width=width, height=height)
    )
    return chart


def outcomes_chart(
    frame: pd.DataFrame,
    changes: Sequence[ChangeRecord] = (),
    *,
    title: str = "Egress outcomes over time",
    bin: str | None = None,
    width: int = 700,
    height: int = 260,
) -> alt.LayerChart:
    """Stacked bars of allowed / forbidden / redirected / failed per bin, changes marked."""
    data, bin = aggregate(frame, ("outcome",), bin=bin)
    colour = alt.Color(
        "outcome:N",
        scale=alt.Scale(domain=list(OUTCOMES), range=[OUTCOME_COLOURS[o] for o in OUTCOMES]),
        sort=list(OUTCOMES),
    )
    bars = _bars(data, "outcome", colour, bin=bin, title=title, width=width, height=height)
    return alt.LayerChart(layer=[bars, *_changes_layers(changes)])


def routes_chart(
    frame: pd.DataFrame,
    changes: Sequence[ChangeRecord] = (),
    *,
    title: str = "Requests per route",
    bin: str | None = None,
    width: int = 700,
    height: int = 260,
) -> alt.LayerChart:
    """Stacked bars per ``route_name`` (``http-egress-allow``, ``httpbin-get``, ...)."""
    data, bin = aggregate(frame, ("route_name", "outcome"), bin=bin)
    colour = alt.Color("route_name:N", title="route")
    bars = _bars(data, "route_name", colour, bin=bin, title=title, width=width, height=height)
    return alt.LayerChart(layer=[bars, *_changes_layers(changes)])


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
            color=alt.Color(
                "outcome:N",
                scale=alt.Scale(
                    domain=list(OUTCOMES), range=[OUTCOME_COLOURS[o] for o in OUTCOMES]
                ),
            ),
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
