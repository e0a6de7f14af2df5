"""Readable output (issue 10 item 7): tables never cut mid-word, the explain table's
status column says what the client gets, metric lines one label per line."""

from __future__ import annotations

import pandas as pd
import pytest

from egresskit import audit, guide
from egresskit.analysis.metric_lines import one_label_per_line

FINAL_STATE = [
    guide.NAMESPACE, guide.EGRESS_NETWORK.replace("Allow", "Deny"), guide.INTERNAL_EGRESS,
    guide.HTTPBIN_GET_ROUTE, guide.TLS_EGRESS_ROUTE_ALL, guide.UNENCRYPTED_HTTP_ROUTE,
]  # fmt: skip


@pytest.mark.parametrize(
    ("objects", "url", "status"),
    [
        (FINAL_STATE, "http://httpbin.org/get", "the destination's own answer (forwarded)"),
        (
            FINAL_STATE,
            "http://example.com/",
            "the answer of Service egress-test/internal-egress:80 (the proxy swapped the backend)",
        ),
        (FINAL_STATE[:2], "http://httpbin.org/ip", "HTTP 403 from the proxy"),
        (FINAL_STATE[:2], "https://github.com/", "connection closed by the proxy (forbidden)"),
    ],
    ids=["allowed", "redirected", "forbidden-http", "forbidden-tls"],
)
def test_the_explain_tables_status_column_says_what_the_client_gets(
    objects: list[str], url: str, status: str
) -> None:
    table = audit.explain_table(objects, [url], namespace="egress-test")
    assert table["status"].tolist() == [status]


def test_a_tutorial_kernel_shows_whole_cells() -> None:
    from egresskit.tutorial import _readable_tables

    with pd.option_context("display.max_colwidth", 50):
        _readable_tables()
        table = audit.explain_table(FINAL_STATE, ["http://example.com/"], namespace="egress-test")
        html = table.to_html()
        assert "(the proxy swapped the backend)" in html and "..." not in html
        assert "(the proxy swapped the backend)" in repr(table.to_string())


def test_metric_lines_spread_one_label_a_line_keeping_escapes() -> None:
    text = (
        "# HELP outbound_http_route_request_statuses Completed request-response streams.\n"
        'outbound_http_route_request_statuses_total{parent_kind="EgressNetwork",'
        'route_name="http-egress-allow",hostname="a,\\"b\\"",error=""} 7\n'
        "process_start_time_seconds 1.7e9"
    )
    assert one_label_per_line(text) == (
        "# HELP outbound_http_route_request_statuses Completed request-response streams.\n"
        "outbound_http_route_request_statuses_total{\n"
        '  parent_kind="EgressNetwork",\n'
        '  route_name="http-egress-allow",\n'
        '  hostname="a,\\"b\\"",\n'
        '  error=""\n'
        "} 7\n"
        "process_start_time_seconds 1.7e9"
    )
    assert one_label_per_line("bad{a=1} 3") == "bad{a=1} 3"  # not a label list: as it was
