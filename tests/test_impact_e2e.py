"""The impact of a change, predicted then checked with real traffic on the local backend.

Traffic under Allow; the diff of a proposed Deny + ``httpbin-get``, from a list of URLs and
from the proxies' metrics; then the change is applied and the traffic that follows agrees
with the prediction request by request (issue 13, item 4).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import egresskit
from egresskit import guide
from egresskit.dns import SimulatedDNS
from egresskit.explaining import snapshot_of
from egresskit.impact import impact
from egresskit.manifests import load_manifests
from egresskit.probes import Probe, probes_from_traffic
from egresskit.seen import SeenSeries, scrape_local, series_seen
from egresskit.sources import overlay

NS = guide.NAMESPACE_NAME
DENY = guide.EGRESS_NETWORK.replace("trafficPolicy: Allow", "trafficPolicy: Deny")
TRAFFIC = [
    "http://httpbin.org/get",
    "http://httpbin.org/ip",
    "http://httpbin.org/get?x=1",
    "https://httpbin.org/get",
    "http://google.com/get",
    "http://google.com/",
    "https://github.com/",
]


def observed(cluster: Any, url: str) -> tuple[str, int | None]:
    r = cluster.curl("-s", "-o", "/dev/null", url, pod="client", namespace=NS)
    if r.http_status == 403:
        return "forbidden", 403
    if r.http_status is not None and r.exit_code == 0:
        return "allowed", r.http_status
    assert r.exit_code != 0, r
    return "forbidden", None  # the proxy closed the connection (TLS/TCP Forbidden)


def counts(series: list[SeenSeries]) -> dict[tuple[str, int | None, str], float]:
    """(destination IP, port, route) -> requests or connections counted."""
    dns = SimulatedDNS()
    out: dict[tuple[str, int | None, str], float] = defaultdict(float)
    for s in series:
        ip = s.target_ip or str(dns.resolve(s.hostname))
        out[(ip, s.port, s.route_name)] += s.count
    return out


def test_prediction_then_traffic_agree_request_by_request() -> None:
    with egresskit.connect("local") as cluster:
        cluster.apply([guide.NAMESPACE, guide.EGRESS_NETWORK, guide.CLIENT_POD])
        for url in TRAFFIC:
            assert observed(cluster, url)[0] == "allowed", url

        current = cluster.objects()
        proposed = overlay(current, load_manifests([DENY, guide.HTTPBIN_GET_ROUTE]))
        from_urls = impact(current, proposed, [Probe(url=u) for u in TRAFFIC], namespace=NS)
        before_series, errors = series_seen(scrape_local(cluster, NS))
        assert errors == []
        probes, lost = probes_from_traffic(
            before_series, [snapshot_of(current), snapshot_of(proposed)]
        )
        from_metrics = impact(current, proposed, probes, namespace=NS, lost=lost)

        # What the prediction says before anything changes.
        grouped = {g: [o.probe.url for o in items] for g, items in from_urls.grouped().items()}
        assert grouped["newly forbidden"] == [
            "http://httpbin.org/ip",
            "https://httpbin.org/get",
            "http://google.com/",
            "https://github.com/",
        ]
        assert all(not v for g, v in grouped.items() if g != "newly forbidden")

        cluster.apply([DENY, guide.HTTPBIN_GET_ROUTE])
        for o in from_urls.outcomes:
            assert o.after is not None
            outcome, status = observed(cluster, o.probe.url)
            assert outcome == o.after.outcome, (o.probe.url, outcome, o.after.summary())
            if o.after.http_status is not None:
                assert status == o.after.http_status, o.probe.url

        # The metrics side: every route the new traffic took is the one the traffic-based
        # prediction named for that destination and port.
        after_series, _ = series_seen(scrape_local(cluster, NS))
        new = counts(after_series)
        for key, value in counts(before_series).items():
            new[key] -= value
        dns = SimulatedDNS()
        predicted = {
            (
                str(dns.resolve(o.probe.url.split("/")[2].split(":")[0])),
                int(o.after.labels["parent_port"]),
                o.after.labels["route_name"],
            )
            for o in from_metrics.outcomes
            if o.after is not None
        }
        took = {key for key, value in new.items() if value > 0}
        assert took, "no traffic counted after the change"
        assert took <= predicted, (took - predicted, predicted)
        assert ("192.0.2.10", 80, "httpbin-get") in took
        assert ("192.0.2.10", 80, "http-egress-deny") in took
        assert ("192.0.2.10", 443, "tcp-egress-deny") in took
