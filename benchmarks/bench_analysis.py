"""Metrics analysis: parsing an exposition, and one hour of scrapes analysed and charted.

Rules of the measurement (egresskit issue 5):

* ``parse``: one proxy's ``/metrics`` text with 10,000 series in Linkerd's families
  (new-style counters typed without ``_total``, histograms with ``le`` first,
  docs/facts/linkerd-egress.md
  6.3), parsed by :func:`parse_proxy_metrics` and turned into a frame by ``to_frame``.
* ``hour``: one hour of 1 Hz scrapes of 50 series (180,000 rows, the long frame a
  :class:`~egresskit.analysis.scrape.Scraper` keeps), built untimed; then timed:
  counter increases, proxy-side outcomes under a timeline of the guide's four states
  (Allow, Deny, + httpbin-get, final), aggregation and the outcomes chart's ``to_dict``.
  The proxy restarts once (a counter reset). The PNG rendering is reported separately.
* Each stage runs ``rounds`` times; the best round is reported. Target: the hour under 2 s.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from egresskit import guide
from egresskit.analysis import charts
from egresskit.analysis.counters import increases
from egresskit.analysis.outcomes import PolicyTimeline, classify_series
from egresskit.analysis.parse import parse_proxy_metrics, to_frame
from egresskit.cluster.base import ChangeRecord
from egresskit.manifests import load_manifests

TITLE = "Metrics analysis: parse, increases, outcomes, chart"
TARGET_HOUR_S = 2.0
PARSE_SERIES = 10_000
HOUR_SCRAPES = 3_600
HOUR_SERIES = 50
ROUNDS = 3
T0 = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)

_P = (
    'parent_group="policy.linkerd.io",parent_kind="EgressNetwork",'
    'parent_namespace="egress-test",parent_name="all-egress-traffic",'
    'parent_port="{port}",parent_section_name=""'
)


def exposition(series: int = PARSE_SERIES) -> str:
    """Linkerd-shaped text with ``series`` samples (statuses, TLS closes, histograms)."""
    lines = [
        "# HELP outbound_http_route_request_statuses Completed request-response streams.",
        "# TYPE outbound_http_route_request_statuses counter",
    ]
    n_status = series // 2
    for i in range(n_status):
        route = ("http-egress-allow", "http-egress-deny")[i % 2]
        status = ("200", "403")[i % 2]
        lines.append(
            "outbound_http_route_request_statuses_total{" + _P.format(port=80) + ","
            f'route_group="",route_kind="default",route_namespace="",route_name="{route}",'
            f'hostname="host-{i}.example.com",http_status="{status}",error=""}} {i * 7}'
        )
    lines += [
        "# HELP outbound_tls_route_close The number of connections closed.",
        "# TYPE outbound_tls_route_close counter",
    ]
    n_tls = series // 4
    for i in range(n_tls):
        lines.append(
            "outbound_tls_route_close_total{" + _P.format(port=443) + ","
            'route_group="",route_kind="default",route_namespace="",route_name="tls-egress-deny",'
            f'hostname="tls-{i}.example.com",error="forbidden"}} {i}'
        )
    name = "outbound_http_route_request_duration_seconds"
    lines += [
        f"# HELP {name} The time between request initialization and response completion.",
        f"# TYPE {name} histogram",
        f"# UNIT {name} seconds",
    ]
    left = series - n_status - n_tls
    bounds = ("0.05", "0.5", "1.0", "10.0", "+Inf")
    labels = _P.format(port=80) + ',route_group="",route_kind="default",route_namespace=""'
    i = 0
    while left > 0:
        host = f'route_name="http-egress-allow",hostname="h-{i}.example.com"'
        for le in bounds[:left]:
            lines.append(f'{name}_bucket{{le="{le}",{labels},{host}}} {i}')
        left -= min(left, len(bounds))
        i += 1
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


# (route_kind, route_name, metric, http_status, error, port) x 10 hostnames = 50 series.
_KINDS = (
    ("default", "http-egress-allow", "outbound_http_route_request_statuses_total", "200", "", 80),
    ("default", "http-egress-deny", "outbound_http_route_request_statuses_total", "403", "", 80),
    ("HTTPRoute", "httpbin-get", "outbound_http_route_request_statuses_total", "200", "", 80),
    ("HTTPRoute", "unencrypted-http", "outbound_http_route_request_statuses_total", "200", "", 80),
    ("default", "tls-egress-deny", "outbound_tls_route_close_total", "", "forbidden", 443),
)  # fmt: skip


def hour_frame(scrapes: int = HOUR_SCRAPES, series: int = HOUR_SERIES) -> pd.DataFrame:
    """``scrapes`` x ``series`` rows laid out as :func:`parse.to_frame` does."""
    rng = np.random.default_rng(5)
    kinds = [_KINDS[i % len(_KINDS)] for i in range(series)]
    hosts = [f"host-{i // len(_KINDS)}.example.com" for i in range(series)]
    steps = rng.integers(0, 3, size=(scrapes, series)).astype("float64")
    values = np.cumsum(steps, axis=0)
    restart = scrapes // 2  # the proxy restarts: counters start again from 0
    values[restart:] -= values[restart - 1]
    at = pd.date_range(T0, periods=scrapes, freq="1s", tz="UTC").astype("datetime64[us, UTC]")

    def column(items: Sequence[str]) -> pd.Series:
        return pd.Series(np.tile(np.asarray(items, dtype=object), scrapes), dtype="str")

    explicit = [k[0] != "default" for k in kinds]
    return pd.DataFrame(
        {
            "scraped_at": np.repeat(at.to_numpy(), series),
            "pod": pd.Series(["client"] * (scrapes * series), dtype="str"),
            "metric": column([k[2] for k in kinds]),
            "parent_group": column(["policy.linkerd.io"] * series),
            "parent_kind": column(["EgressNetwork"] * series),
            "parent_namespace": column(["egress-test"] * series),
            "parent_name": column(["all-egress-traffic"] * series),
            "parent_port": column([str(k[5]) for k in kinds]),
            "parent_section_name": column([""] * series),
            "route_group": column(["gateway.networking.k8s.io" if e else "" for e in explicit]),
            "route_kind": column([k[0] for k in kinds]),
            "route_namespace": column(["egress-test" if e else "" for e in explicit]),
            "route_name": column([k[1] for k in kinds]),
            "hostname": column(hosts),
            "http_status": column([k[3] for k in kinds]),
            "error": column([k[4] for k in kinds]),
            "value": values.reshape(-1),
        }
    )


def guide_timeline() -> tuple[PolicyTimeline, list[ChangeRecord]]:
    deny = guide.EGRESS_NETWORK.replace("trafficPolicy: Allow", "trafficPolicy: Deny")
    base = [guide.NAMESPACE, guide.CLIENT_POD]
    states = [
        ("EgressNetwork all-egress-traffic: Allow", [*base, guide.EGRESS_NETWORK]),
        ("EgressNetwork all-egress-traffic: Deny", [*base, deny]),
        ("apply HTTPRoute httpbin-get", [*base, deny, guide.HTTPBIN_GET_ROUTE]),
        (
            "apply HTTPRoute unencrypted-http",
            [*base, deny, guide.INTERNAL_EGRESS, guide.HTTPBIN_GET_ROUTE,
             guide.TLS_EGRESS_ROUTE_ALL, guide.UNENCRYPTED_HTTP_ROUTE],
        ),
    ]  # fmt: skip
    timeline = PolicyTimeline()
    changes = []
    for i, (summary, docs) in enumerate(states):
        at = T0 + timedelta(seconds=900 * i)
        timeline.add(at, load_manifests(docs))
        changes.append(ChangeRecord(at=at, verb="apply", objects=(), summary=summary))
    return timeline, changes


def _best(fn: Callable[[], Any], rounds: int) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(rounds):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def run(*, quick: bool = False) -> list[dict[str, Any]]:
    rounds = 1 if quick else ROUNDS
    scrapes = 600 if quick else HOUR_SCRAPES
    rows: list[dict[str, Any]] = []

    text = exposition(PARSE_SERIES)
    s, parsed = _best(lambda: parse_proxy_metrics(text, scraped_at=T0, pod="client"), rounds)
    n = len(parsed.samples)
    rows.append({"stage": "parse 10k-series exposition", "rows": n, "seconds": s})
    s, _ = _best(lambda: to_frame(parsed), rounds)
    rows.append({"stage": "to_frame 10k samples", "rows": n, "seconds": s})

    frame = hour_frame(scrapes)
    timeline, changes = guide_timeline()
    n = len(frame)
    s_inc, inc = _best(lambda: increases(frame), rounds)
    rows.append({"stage": "increases", "rows": n, "seconds": s_inc})
    s_cls, classified = _best(lambda: classify_series(inc, timeline), rounds)
    rows.append({"stage": "classify_series", "rows": n, "seconds": s_cls})
    s_chart, chart = _best(lambda: charts.outcomes_chart(classified, changes).to_dict(), rounds)
    rows.append({"stage": "aggregate + chart to_dict", "rows": n, "seconds": s_chart})
    hour = s_inc + s_cls + s_chart
    rows.append({"stage": "the hour: analysis + chart", "rows": n, "seconds": hour})
    s_png, _ = _best(lambda: charts.png_bytes(chart), 1)
    rows.append({"stage": "render PNG (vl-convert)", "rows": n, "seconds": s_png})
    for row in rows:
        row["seconds"] = round(row["seconds"], 4)
        row["rows_per_s"] = int(row["rows"] / row["seconds"]) if row["seconds"] else 0
    return rows


def summarize(rows: Sequence[dict[str, Any]]) -> list[str]:
    hour = next(r for r in rows if r["stage"] == "the hour: analysis + chart")
    line = f"{hour['rows']:,} rows analysed and charted in {hour['seconds']:.2f} s"
    if hour["rows"] != HOUR_SCRAPES * HOUR_SERIES:  # a quick run: not the hour
        return [
            f"{line} (quick run; the target is for one hour, {HOUR_SCRAPES * HOUR_SERIES:,} rows)"
        ]
    verdict = "met" if hour["seconds"] < TARGET_HOUR_S else "NOT met"
    return [f"{line} (target < {TARGET_HOUR_S:g} s): {verdict}"]


def main() -> None:
    rows = run()
    width = max(len(r["stage"]) for r in rows)
    print(f"{TITLE}\n")
    print(f"{'stage':<{width}}  {'rows':>9}  {'seconds':>8}  {'rows/s':>11}")
    for r in rows:
        print(
            f"{r['stage']:<{width}}  {r['rows']:>9,}  {r['seconds']:>8.3f}  {r['rows_per_s']:>11,}"
        )
    print()
    for line in summarize(rows):
        print(line)


if __name__ == "__main__":
    main()
