"""End to end: the guide's curl loop through an Allow -> Deny flip, on a real backend.

Real curl, real proxies (the local backend; a kube cluster too under the ``kube`` marker):
the client sees 200s then 403s / closed TLS connections, the proxy's counters say the same,
and both sides reconcile exactly (docs/facts/linkerd-egress.md 3 and 8.5, G1-G4).
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from egresskit import guide
from egresskit.analysis.counters import increases
from egresskit.analysis.outcomes import (
    PolicyTimeline,
    classify_requests,
    classify_series,
    reconcile,
)
from egresskit.analysis.scrape import Scraper
from egresskit.traffic import Traffic, start_traffic

pytestmark = pytest.mark.slow
BOUND = 60.0
URLS = ("http://httpbin.org/get", "https://httpbin.org/get")


def wait_records(traffic: Traffic, n: int) -> None:
    tick = threading.Event()
    for _ in range(int(BOUND / 0.05)):
        if len(traffic.records) >= n or tick.wait(0.05):
            return
    raise AssertionError(f"expected {n} requests within {BOUND:g}s; {traffic.progress()}")


def test_allow_to_deny_flip_outcomes_and_totals_reconcile(cluster: Any) -> None:
    cluster.apply([guide.NAMESPACE, guide.EGRESS_NETWORK, guide.CLIENT_POD])
    timeline = PolicyTimeline.of(cluster)
    scraper = Scraper(cluster, [("client", guide.NAMESPACE_NAME)], interval=0.25)
    scraper.timeline = timeline
    scraper.start()
    with start_traffic(cluster, URLS, rate=8.0, curl_timeout=10.0) as traffic:
        wait_records(traffic, 8)
        cluster.patch(
            "EgressNetwork",
            guide.EGRESS_NETWORK_NAME,
            guide.DENY_PATCH,
            namespace=guide.NAMESPACE_NAME,
        )
        wait_records(traffic, len(traffic.records) + 8)
    scraper.stop()  # one last scrape after the last request
    assert not scraper.errors, scraper.progress()

    requests = classify_requests(traffic.frame(), timeline)
    for url in URLS:
        seq = requests[requests["url"] == url].sort_values("at")["outcome"].tolist()
        flip = seq.index("forbidden")
        assert seq[:flip] == ["allowed"] * flip and flip >= 2, seq
        assert seq[flip:] == ["forbidden"] * (len(seq) - flip) and len(seq) - flip >= 2, seq
    http = requests[requests["url"] == URLS[0]]
    assert set(http["http_status"].dropna()) == {200, 403}
    https_denied = requests[(requests["url"] == URLS[1]) & (requests["outcome"] == "forbidden")]
    assert (https_denied["exit_code"] != 0).all()

    scrapes = scraper.scrapes_frame()
    series = classify_series(increases(scraper.frame(), scrapes=scrapes), timeline)
    routes = set(series.loc[series["increase"] > 0, "route_name"])
    assert {"http-egress-allow", "http-egress-deny"} <= routes
    result = reconcile(requests, series, scrapes=scrapes)
    assert result.ok, str(result)
    assert result.excluded == 0
    totals = result.table.groupby("outcome")["proxy"].sum()
    assert totals["allowed"] + totals["forbidden"] == len(requests)
