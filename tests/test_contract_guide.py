"""The guide through the facade with the real curl: the client's view and the metrics.

Shared spec linkerd-egress.md 8.5 (G1-G12). These run on the local backend always, and
unchanged against a real cluster when EGRESSKIT_KUBE_CONTEXT names one (``kube`` marker).

A change is in force when its effect is observed: after each policy change the test probes
for it (``await_effect``, bounded) before it curls and counts, and counts from a snapshot
taken after the probes. On a real cluster a curl right after ``patch`` races Linkerd's
status controller and the push to the proxies.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from egresskit import guide
from egresskit.cluster.effect import Effect, await_effect
from tests.contract import eventually, snapshot, value

pytestmark = pytest.mark.slow
NS = "egress-test"
EN = {"parent_kind": "EgressNetwork", "parent_name": "all-egress-traffic"}
HTTP_STATUSES = "outbound_http_route_request_statuses_total"


def curl(cluster: Any, *args: str) -> Any:
    return cluster.curl(*args, pod="client", namespace=NS)


def setup_allow(cluster: Any) -> None:
    cluster.apply([guide.NAMESPACE, guide.EGRESS_NETWORK, guide.CLIENT_POD])


def deny(cluster: Any) -> None:
    cluster.patch("egressnetwork", "all-egress-traffic", guide.DENY_PATCH, namespace=NS)
    await_effect(cluster, Effect(url="http://httpbin.org/get", http_status=403))


def apply_until(cluster: Any, manifests: Any, url: str, http_status: int) -> None:
    """Apply, then wait until ``url`` answers ``http_status`` from the client."""
    cluster.apply(manifests)
    await_effect(cluster, Effect(url=url, http_status=http_status))


def test_g1_allow_http_reaches_httpbin_via_http_egress_allow(cluster: Any) -> None:
    setup_allow(cluster)
    r = curl(cluster, "-s", "http://httpbin.org/get")
    assert (r.exit_code, r.http_status) == (0, 200)
    assert json.loads(r.stdout)["headers"]["Host"] == "httpbin.org"
    labels = EN | {
        "parent_port": "80",
        "route_kind": "default",
        "route_name": "http-egress-allow",
        "hostname": "httpbin.org",
        "http_status": "200",
        "error": "",
    }
    assert value(cluster, HTTP_STATUSES, **labels) == 1


def test_g2_allow_https_is_opaque_tcp_egress_allow(cluster: Any) -> None:
    setup_allow(cluster)
    r = curl(cluster, "-s", "https://httpbin.org/get")
    assert (r.exit_code, r.http_status) == (0, 200)
    assert json.loads(r.stdout)["url"] == "https://httpbin.org/get"
    labels = EN | {"parent_port": "443", "route_name": "tcp-egress-allow", "target_port": "443"}
    assert value(cluster, "outbound_tcp_route_open_total", **labels) == 1
    assert eventually(cluster, "outbound_tcp_route_close_total", 1, **labels, error="") == 1


def test_g3_deny_http_is_403_with_l5d_proxy_error(cluster: Any) -> None:
    setup_allow(cluster)
    deny(cluster)
    since = snapshot(cluster)
    r = curl(cluster, "-si", "http://httpbin.org/get")
    assert r.http_status == 403
    assert "l5d-proxy-error: traffic not allowed" in r.stdout.lower()
    labels = EN | {
        "route_name": "http-egress-deny",
        "http_status": "403",
        "error": "",
        "hostname": "httpbin.org",
    }
    assert value(cluster, HTTP_STATUSES, since, **labels) == 1
    assert (
        value(cluster, "outbound_http_route_backend_requests_total", route_name="http-egress-deny")
        == 0
    ), "deny is route-level: no backend series"


def test_g4_deny_https_fails_with_curl_35_and_tcp_egress_deny(cluster: Any) -> None:
    setup_allow(cluster)
    deny(cluster)
    since = snapshot(cluster)
    r = curl(cluster, "-sS", "https://httpbin.org/get")
    assert r.exit_code == 35 and "curl: (35)" in r.stderr
    assert r.http_status is None
    assert (
        value(
            cluster,
            "outbound_tcp_route_close_total",
            since,
            route_name="tcp-egress-deny",
            error="forbidden",
        )
        == 1
    )


def test_g5_g6_httpbin_get_allows_get_only(cluster: Any) -> None:
    setup_allow(cluster)
    deny(cluster)
    before = curl(cluster, "-s", "http://httpbin.org/get")
    assert before.http_status == 403, "the condition must not hold before the step"
    apply_until(cluster, guide.HTTPBIN_GET_ROUTE, "http://httpbin.org/get", 200)
    since = snapshot(cluster)
    assert curl(cluster, "-s", "http://httpbin.org/get").http_status == 200
    assert curl(cluster, "-s", "http://httpbin.org/ip").http_status == 403
    route = {
        "route_group": "gateway.networking.k8s.io",
        "route_kind": "HTTPRoute",
        "route_namespace": NS,
        "route_name": "httpbin-get",
    }
    assert value(cluster, HTTP_STATUSES, since, **route, http_status="200") == 1
    assert (
        value(
            cluster,
            "outbound_http_route_backend_requests_total",
            since,
            **route,
            backend_kind="EgressNetwork",
            backend_port="80",
        )
        == 1
    )
    assert (
        value(cluster, HTTP_STATUSES, since, route_name="http-egress-deny", http_status="403") == 1
    )


def test_g7_g8_g9_tls_route_by_sni(cluster: Any) -> None:
    setup_allow(cluster)
    deny(cluster)
    routes = [guide.HTTPBIN_GET_ROUTE, guide.TLS_EGRESS_ROUTE]
    apply_until(cluster, routes, "https://httpbin.org/get", 200)
    since = snapshot(cluster)
    ok = curl(cluster, "-s", "https://httpbin.org/get")
    assert (ok.exit_code, ok.http_status) == (0, 200)
    gh = curl(cluster, "-sS", "https://github.com/")
    assert gh.exit_code != 0 and gh.http_status is None
    assert curl(cluster, "-s", "http://github.com/").http_status == 403
    assert (
        value(
            cluster,
            "outbound_tls_route_open_total",
            since,
            route_kind="TLSRoute",
            route_name="tls-egress",
            hostname="httpbin.org",
        )
        == 1
    )
    assert (
        value(
            cluster,
            "outbound_tls_route_close_total",
            since,
            route_kind="default",
            route_name="tls-egress-deny",
            hostname="github.com",
            error="forbidden",
        )
        == 1
    )
    assert (
        value(
            cluster,
            HTTP_STATUSES,
            since,
            route_name="http-egress-deny",
            hostname="github.com",
            http_status="403",
        )
        == 1
    )


def test_g10_g11_g12_redirect_back_to_the_cluster(cluster: Any) -> None:
    setup_allow(cluster)
    deny(cluster)
    cluster.apply(guide.INTERNAL_EGRESS)
    routes = [guide.HTTPBIN_GET_ROUTE, guide.TLS_EGRESS_ROUTE_ALL, guide.UNENCRYPTED_HTTP_ROUTE]
    apply_until(cluster, routes, "http://httpbin.org/ip", 200)  # redirected: no longer 403
    since = snapshot(cluster)
    get = curl(cluster, "-s", "http://httpbin.org/get")
    assert get.http_status == 200 and json.loads(get.stdout)["url"] == "http://httpbin.org/get"
    for url in ("http://httpbin.org/ip", "http://google.com"):
        r = curl(cluster, "-s", url)
        assert r.http_status == 200
        body = json.loads(r.stdout)
        assert body["payload"] == "You cannot go there right now"
        assert body["requestUID"].startswith("in:http-sid:terminus-grpc:-1-h1:80-")
    assert (
        value(
            cluster,
            "outbound_http_route_backend_requests_total",
            since,
            route_name="unencrypted-http",
            backend_kind="Service",
            backend_name="internal-egress",
            backend_port="80",
        )
        == 2
    )
    for url in ("https://httpbin.org/ip", "https://github.com/"):
        r = curl(cluster, "-s", url)
        assert (r.exit_code, r.http_status) == (0, 200)
    assert value(cluster, "outbound_tls_route_open_total", since, route_name="tls-egress") == 2


def test_status_is_written_like_linkerd(cluster: Any) -> None:
    setup_allow(cluster)
    cluster.apply(guide.HTTPBIN_GET_ROUTE)
    en = cluster.get("egressnetwork", "all-egress-traffic", namespace=NS)
    cond = en["status"]["conditions"][0]
    assert (cond["type"], cond["status"], cond["reason"]) == ("Accepted", "True", "Accepted")
    route = cluster.get("httproute", "httpbin-get", namespace=NS)
    parent = route["status"]["parents"][0]
    assert parent["controllerName"] == "linkerd.io/policy-controller"
    assert [(c["type"], c["status"]) for c in parent["conditions"]] == [
        ("Accepted", "True"),
        ("ResolvedRefs", "True"),
    ]


def test_metrics_text_has_the_pod_header(cluster: Any) -> None:
    setup_allow(cluster)
    text = cluster.proxy_metrics("client", namespace=NS)
    assert text.startswith("#\n# POD client (1 of 1)\n#\n")
