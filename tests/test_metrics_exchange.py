"""``ProxyMetrics.http_exchange`` (the proxy's hot path) renders exactly what the three
separate calls render, for forwarded and for denied exchanges."""

from __future__ import annotations

import pytest

from egresskit.mesh.metrics import ProxyMetrics
from tests.enginekit import egress_network, http, route, service, snapshot, svc_backend


@pytest.mark.parametrize(
    ("docs", "path", "status"),
    [
        ([egress_network()], "/get", 200),
        ([egress_network(policy="Deny")], "/get", 403),
        (
            [
                egress_network(),
                service("web", 80),
                route("HTTPRoute", "r", rules=[{"backendRefs": [svc_backend("web", 80)]}]),
            ],
            "/",
            200,
        ),
        ([egress_network()], "/gone", None),
    ],
    ids=["allow", "deny", "service", "upstream-error"],
)
def test_exchange_equals_separate_calls(docs: list, path: str, status: int | None) -> None:  # type: ignore[type-arg]
    d = http(snapshot(*docs), path)
    error = "" if status is not None else "REFUSED"
    backend = d.backend_labels or None
    one, three = ProxyMetrics(hostname_labels=True), ProxyMetrics(hostname_labels=True)
    for _ in range(3):
        one.http_exchange(
            d.labels,
            backend,
            hostname="httpbin.org",
            http_status=status,
            error=error,
            duration_s=0.2,
        )
        three.http_request(
            d.labels, hostname="httpbin.org", http_status=status, error=error, duration_s=0.2
        )
        if backend:
            three.http_backend_request(d.labels, backend)
            three.http_backend_response(
                d.labels, backend, http_status=status, error=error, duration_s=0.2
            )
    assert one.render() == three.render()
    assert 'route_name="' in one.render()
