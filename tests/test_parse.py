"""parse_proxy_metrics / to_frame read ``linkerd dg proxy-metrics`` output (spec 6.1, 6.3)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from egresskit.analysis.parse import (
    ParsedScrape,
    Sample,
    ScrapeError,
    parse_proxy_metrics,
    to_frame,
)
from egresskit.errors import BackendError
from egresskit.mesh.metrics import ProxyMetrics
from tests.guide_labels import route_labels

FIXTURES = Path(__file__).parent / "fixtures"
PODS = (FIXTURES / "proxy_metrics_client_pods.txt").read_text()
ERROR_ONLY = (FIXTURES / "proxy_metrics_error_only.txt").read_text()
WHEN = datetime(2025, 4, 21, 12, 0, tzinfo=UTC)

POD_A, POD_B, POD_C = (f"client-7f9c6d5b8-{s}" for s in ("abcde", "fghij", "klmno"))
ALLOW = route_labels(80, "default", "http-egress-allow")
TLS_DENY = {**ALLOW, "parent_port": "443", "route_name": "tls-egress-deny"}
TCP_ALLOW = {**ALLOW, "parent_port": "443", "route_name": "tcp-egress-allow"}
BACKEND_EN = {
    "backend_group": "policy.linkerd.io",
    "backend_kind": "EgressNetwork",
    "backend_namespace": "egress-test",
    "backend_name": "all-egress-traffic",
    "backend_port": "80",
    "backend_section_name": "",
}


def only(scrape: ParsedScrape, pod: str, metric: str, **labels: str) -> Sample:
    """The one sample of ``pod`` named ``metric`` whose labels include ``labels``."""
    found = [
        s
        for s in scrape.samples
        if s.pod == pod and s.metric == metric and labels.items() <= dict(s.labels).items()
    ]
    assert len(found) == 1, found
    return found[0]


# -------------------------------------------------------------------- the CLI's layout


def test_pod_headers_split_the_output_and_the_error_pod_is_kept() -> None:
    scrape = parse_proxy_metrics(PODS, scraped_at=WHEN)
    assert scrape.pods == (POD_A, POD_B, POD_C)
    assert scrape.errors == (
        ScrapeError(
            pod=POD_B,
            message=f"error forwarding port 4191 to pod {POD_B}: pod is not running",
            line=41,
        ),
    )
    assert {s.pod for s in scrape.samples} == {POD_A, POD_C}
    assert sum(s.pod == POD_A for s in scrape.samples) == 18
    assert sum(s.pod == POD_C for s in scrape.samples) == 19


def test_new_style_counter_takes_its_type_from_the_family_typed_without_total() -> None:
    scrape = parse_proxy_metrics(PODS, scraped_at=WHEN)
    sample = only(
        scrape, POD_A, "outbound_http_route_request_statuses_total", hostname="httpbin.org"
    )
    assert sample.family == "outbound_http_route_request_statuses"
    assert sample.type == "counter"
    assert sample.value == 697.0
    assert dict(sample.labels) == {
        **ALLOW,
        "hostname": "httpbin.org",
        "http_status": "200",
        "error": "",
    }
    # Labels keep the proxy's order.
    assert [k for k, _ in sample.labels][-3:] == ["hostname", "http_status", "error"]


def test_legacy_counter_typed_with_total_is_a_counter_too() -> None:
    scrape = parse_proxy_metrics(PODS, scraped_at=WHEN)
    request = only(scrape, POD_A, "request_total")
    assert (request.family, request.type, request.value) == ("request", "counter", 697.0)
    cpu = only(scrape, POD_C, "process_cpu_seconds_total")
    assert (cpu.family, cpu.type, cpu.value, cpu.labels) == (
        "process_cpu_seconds",
        "counter",
        1.37,
        (),
    )
    gauge = only(scrape, POD_A, "tcp_open_connections")
    assert (gauge.family, gauge.type) == ("tcp_open_connections", "gauge")


def test_histogram_samples_keep_le_and_their_family() -> None:
    scrape = parse_proxy_metrics(PODS, scraped_at=WHEN)
    name = "outbound_http_route_request_duration_seconds"
    bucket = only(scrape, POD_A, f"{name}_bucket", le="0.5")
    assert (bucket.family, bucket.type, bucket.value) == (name, "histogram", 690.0)
    assert bucket.labels[0] == ("le", "0.5")  # le first, as the crate prints it
    total = only(scrape, POD_A, f"{name}_sum")
    assert total.value == pytest.approx(83.21)


def test_label_value_escapes_are_undone() -> None:
    scrape = parse_proxy_metrics(PODS, scraped_at=WHEN)
    sample = only(scrape, POD_A, "outbound_http_route_request_statuses_total", error="IO")
    assert dict(sample.labels)["hostname"] == 'we"ird\\host\nname'
    assert dict(sample.labels)["http_status"] == ""


def test_five_close_series_of_a_tcp_route() -> None:
    scrape = parse_proxy_metrics(PODS, scraped_at=WHEN)
    closes = {
        dict(s.labels)["error"]: s.value
        for s in scrape.samples
        if s.metric == "outbound_tcp_route_close_total"
    }
    assert closes == {
        "": 2.0,
        "forbidden": 0.0,
        "invalid_backend": 0.0,
        "invalid_policy": 0.0,
        "unexpected": 0.0,
    }


@pytest.mark.parametrize(
    ("text", "pod"),
    [
        pytest.param(ERROR_ONLY, POD_A, id="with-pod-header-and-colon"),
        pytest.param("# ERROR pod not running: client-7f9c6d5b8-abcde\n", None, id="bare"),
    ],
)
def test_an_error_only_scrape_has_no_rows_and_one_error(text: str, pod: str | None) -> None:
    scrape = parse_proxy_metrics(text, scraped_at=WHEN)
    assert scrape.samples == ()
    assert len(scrape.errors) == 1
    error = scrape.errors[0]
    assert error.pod == pod
    assert error.message == f"pod not running: {POD_A}"
    frame = to_frame(scrape)
    assert list(frame.columns) == ["scraped_at", "pod", "metric", "value"]
    assert frame.empty
    with pytest.raises(BackendError, match=f"pod not running: {POD_A}"):
        scrape.raise_for_errors()


def test_text_that_does_not_parse_is_an_error_for_that_pod_only() -> None:
    broken = PODS.replace("process_cpu_seconds_total 1.37", 'process_cpu_seconds_total{x="1.37')
    scrape = parse_proxy_metrics(broken, scraped_at=WHEN)
    assert {s.pod for s in scrape.samples} == {POD_A}
    assert [e.pod for e in scrape.errors] == [POD_B, POD_C]
    assert scrape.errors[1].line == 44
    assert "cannot parse the exposition text (lines 44-" in scrape.errors[1].message


def test_raw_text_without_headers_takes_the_given_pod() -> None:
    metrics = ProxyMetrics(hostname_labels=True)
    metrics.tls_open(TLS_DENY, hostname="github.com")
    scrape = parse_proxy_metrics(metrics.render(), scraped_at=WHEN, pod="local-client")
    assert scrape.pods == ()
    assert scrape.errors == ()
    assert {s.pod for s in scrape.samples} == {"local-client"}
    unnamed = parse_proxy_metrics(metrics.render(), scraped_at=WHEN)
    assert {s.pod for s in unnamed.samples} == {""}


def test_scraped_at_must_be_timezone_aware_and_is_kept_in_utc() -> None:
    with pytest.raises(ValueError, match="scraped_at: expected a timezone-aware datetime"):
        parse_proxy_metrics(PODS, scraped_at=datetime(2025, 4, 21, 12, 0))
    plus_two = timezone(timedelta(hours=2))
    scrape = parse_proxy_metrics(PODS, scraped_at=datetime(2025, 4, 21, 14, 0, tzinfo=plus_two))
    assert scrape.scraped_at == WHEN
    assert scrape.scraped_at.tzinfo is UTC


def test_rows_carry_family_type_labels_and_value() -> None:
    scrape = parse_proxy_metrics(PODS, scraped_at=WHEN)
    row = next(r for r in scrape.rows() if r["metric"] == "outbound_tls_route_open_total")
    assert row == {
        "pod": POD_A,
        "metric": "outbound_tls_route_open_total",
        "family": "outbound_tls_route_open",
        "type": "counter",
        **TLS_DENY,
        "hostname": "github.com",
        "value": 1.0,
    }


# --------------------------------------------------------------------------- frames


def test_frame_columns_line_up_in_linkerd_order() -> None:
    frame = to_frame([parse_proxy_metrics(PODS, scraped_at=WHEN)])
    assert list(frame.columns) == [
        "scraped_at",
        "pod",
        "metric",
        *ALLOW,
        *BACKEND_EN,
        "hostname",
        "target_ip",
        "target_port",
        "http_status",
        "error",
        "le",
        "authority",
        "classification",
        "direction",
        "no_tls_reason",
        "peer",
        "status_code",
        "target_addr",
        "tls",
        "value",
    ]
    assert str(frame["scraped_at"].dt.tz) == "UTC"
    assert (frame["scraped_at"] == pd.Timestamp(WHEN)).all()
    assert frame["value"].dtype == "float64"
    # A label a sample does not have is "" (never NaN).
    cpu = frame[frame["metric"] == "process_cpu_seconds_total"].iloc[0]
    assert cpu["route_name"] == "" and cpu["le"] == "" and cpu["pod"] == POD_C
    assert not frame.isna().any().any()


def test_frames_of_several_scrapes_stack() -> None:
    later = WHEN + timedelta(seconds=30)
    frame = to_frame(
        [parse_proxy_metrics(PODS, scraped_at=WHEN), parse_proxy_metrics(PODS, scraped_at=later)]
    )
    assert len(frame) == 2 * 37
    assert list(frame["scraped_at"].drop_duplicates()) == [pd.Timestamp(WHEN), pd.Timestamp(later)]


def test_a_label_named_like_a_fixed_column_gets_a_prefix() -> None:
    text = '# TYPE thing gauge\nthing{pod="other",value="v"} 3\n'
    frame = to_frame(parse_proxy_metrics(text, scraped_at=WHEN, pod="me"))
    assert list(frame.columns) == [
        "scraped_at",
        "pod",
        "metric",
        "label_pod",
        "label_value",
        "value",
    ]
    assert frame.iloc[0][["pod", "label_pod", "label_value", "value"]].tolist() == [
        "me",
        "other",
        "v",
        3.0,
    ]


# ------------------------------------------------------------------------ round trip


def test_render_then_parse_gives_back_what_was_recorded() -> None:
    metrics = ProxyMetrics(hostname_labels=True)
    for duration in (0.01, 0.3, 0.7):
        metrics.http_request(
            ALLOW, hostname="httpbin.org", http_status=200, error="", duration_s=duration
        )
    metrics.http_backend_request(ALLOW, BACKEND_EN)
    metrics.http_backend_response(ALLOW, BACKEND_EN, http_status=200, error="", duration_s=0.2)
    metrics.tls_open(TLS_DENY, hostname='a"b\\c\nd')
    metrics.tls_close(TLS_DENY, hostname='a"b\\c\nd', error="forbidden")
    metrics.tcp_open(TCP_ALLOW, target_ip="54.243.23.111", target_port=443)

    scrape = parse_proxy_metrics(metrics.render(), scraped_at=WHEN, pod="client")
    assert scrape.errors == ()
    frame = to_frame(scrape)

    statuses = frame[frame["metric"] == "outbound_http_route_request_statuses_total"]
    assert statuses[
        ["route_name", "hostname", "http_status", "error", "value"]
    ].values.tolist() == [["http-egress-allow", "httpbin.org", "200", "", 3.0]]
    buckets = frame[frame["metric"] == "outbound_http_route_request_duration_seconds_bucket"]
    assert dict(zip(buckets["le"], buckets["value"], strict=True)) == {
        "0.05": 1.0,
        "0.5": 2.0,
        "1.0": 3.0,
        "10.0": 3.0,
        "+Inf": 3.0,
    }
    closes = frame[frame["metric"] == "outbound_tls_route_close_total"]
    assert set(closes["hostname"]) == {'a"b\\c\nd'}
    assert dict(zip(closes["error"], closes["value"], strict=True)) == {
        "": 0.0,
        "forbidden": 1.0,
        "invalid_backend": 0.0,
        "invalid_policy": 0.0,
        "unexpected": 0.0,
    }
    backend = frame[frame["metric"] == "outbound_http_route_backend_requests_total"].iloc[0]
    assert (backend["backend_kind"], backend["backend_port"], backend["value"]) == (
        "EgressNetwork",
        "80",
        1.0,
    )
    tcp = frame[frame["metric"] == "outbound_tcp_route_open_total"].iloc[0]
    assert (tcp["target_ip"], tcp["target_port"], tcp["hostname"]) == ("54.243.23.111", "443", "")
    types = {s.family: s.type for s in scrape.samples}
    assert types["outbound_http_route_request_duration_seconds"] == "histogram"
    assert types["outbound_tcp_route_open"] == "counter"


def test_local_and_fixture_frames_share_their_column_order() -> None:
    metrics = ProxyMetrics()
    metrics.tcp_open(TCP_ALLOW, target_ip="54.243.23.111", target_port=443)
    metrics.http_request(ALLOW, hostname="h", http_status=200, error="", duration_s=0.1)
    local = to_frame(parse_proxy_metrics(metrics.render(), scraped_at=WHEN, pod="client"))
    kind = to_frame(parse_proxy_metrics(PODS, scraped_at=WHEN))
    shared = [c for c in kind.columns if c in set(local.columns)]
    assert shared == list(local.columns)


# --------------------------------------------- why the classic text parser (spec 6.3)


def test_classic_parser_orphans_total_samples_of_new_style_counters() -> None:
    families = list(text_string_to_metric_families(PODS))
    typed = next(f for f in families if f.name == "outbound_tls_route_open")
    assert (typed.type, typed.samples) == ("counter", [])
    orphan = next(f for f in families if f.name == "outbound_tls_route_open_total")
    assert orphan.type == "unknown"
    assert [s.name for s in orphan.samples] == ["outbound_tls_route_open_total"]


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(PODS, id="cli-output"),
        pytest.param(PODS.split("#\n# POD")[1].split("\n", 2)[2], id="one-proxy"),
    ],
)
def test_openmetrics_parser_rejects_linkerd_output(text: str) -> None:
    # Legacy families typed WITH _total (``# TYPE request_total counter``) are invalid
    # OpenMetrics; so are the CLI's ``# POD`` comment lines.
    assert "# TYPE request_total counter" in text
    with pytest.raises(ValueError):
        list(openmetrics_families(text))
