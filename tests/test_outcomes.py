"""Outcomes for every guide step (docs/facts/linkerd-egress.md 8.5, G1-G12), both sides, and
reconciliation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from egresskit import guide
from egresskit.analysis.outcomes import (
    PolicyTimeline,
    classify_requests,
    classify_series,
    objects_from_changes,
    reconcile,
    route_outcome,
)
from egresskit.explaining import with_cluster_ips
from egresskit.manifests import load_manifests
from egresskit.manifests.model import HTTPRoute
from egresskit.policy.snapshot import Snapshot
from tests.guide_labels import route_labels
from tests.test_traffic import FakeMesh

T0 = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
DENY_EN = guide.EGRESS_NETWORK.replace("trafficPolicy: Allow", "trafficPolicy: Deny")
BASE = [guide.NAMESPACE, guide.CLIENT_POD]
STATES: dict[str, list[str]] = {
    "allow": [*BASE, guide.EGRESS_NETWORK],
    "deny": [*BASE, DENY_EN],
    "deny+get": [*BASE, DENY_EN, guide.HTTPBIN_GET_ROUTE],
    "deny+get+tls": [*BASE, DENY_EN, guide.HTTPBIN_GET_ROUTE, guide.TLS_EGRESS_ROUTE],
    "final": [
        *BASE,
        DENY_EN,
        guide.INTERNAL_EGRESS,
        guide.HTTPBIN_GET_ROUTE,
        guide.TLS_EGRESS_ROUTE_ALL,
        guide.UNENCRYPTED_HTTP_ROUTE,
    ],
}
STATUSES = "outbound_http_route_request_statuses_total"
TLS_CLOSE = "outbound_tls_route_close_total"
TCP_CLOSE = "outbound_tcp_route_close_total"


def timeline(state: str) -> PolicyTimeline:
    return PolicyTimeline([(T0, load_manifests(STATES[state]))])


def series_row(
    metric: str, port: int, kind: str, name: str, *, status: str = "", error: str = ""
) -> dict[str, object]:
    return {
        "scraped_at": pd.Timestamp(T0 + timedelta(seconds=5)),
        "pod": "client",
        "metric": metric,
        **route_labels(port, kind, name),
        "http_status": status,
        "error": error,
        "value": 1.0,
        "increase": 1.0,
    }


def h(kind: str, name: str, status: str = "", error: str = "") -> dict[str, object]:
    return series_row(STATUSES, 80, kind, name, status=status, error=error)


def tls(kind: str, name: str, error: str = "") -> dict[str, object]:
    return series_row(TLS_CLOSE, 443, kind, name, error=error)


def tcp(kind: str, name: str, error: str = "") -> dict[str, object]:
    return series_row(TCP_CLOSE, 443, kind, name, error=error)


# (id, state, series labels, expected outcome) -- docs/facts/linkerd-egress.md 8.5.
SERIES_CASES = [
    ("G1", "allow", h("default", "http-egress-allow", "200"), "allowed"),
    ("G2", "allow", tcp("default", "tcp-egress-allow"), "allowed"),
    ("G3", "deny", h("default", "http-egress-deny", "403"), "forbidden"),
    ("G4", "deny", tcp("default", "tcp-egress-deny", "forbidden"), "forbidden"),
    ("G5", "deny+get", h("HTTPRoute", "httpbin-get", "200"), "allowed"),
    ("G6", "deny+get", h("default", "http-egress-deny", "403"), "forbidden"),
    ("G7", "deny+get+tls", tls("TLSRoute", "tls-egress"), "allowed"),
    ("G8", "deny+get+tls", tls("default", "tls-egress-deny", "forbidden"), "forbidden"),
    ("G9", "deny+get+tls", h("default", "http-egress-deny", "403"), "forbidden"),
    ("G10", "final", h("HTTPRoute", "httpbin-get", "200"), "allowed"),
    ("G11", "final", h("HTTPRoute", "unencrypted-http", "200"), "redirected"),
    ("G12", "final", tls("TLSRoute", "tls-egress"), "allowed"),
    ("stream-error", "allow", h("default", "http-egress-allow", error="FAIL_FAST"), "failed"),
    ("tls-invalid", "final", tls("TLSRoute", "tls-egress", "invalid_backend"), "failed"),
    ("route-gone", "deny", h("HTTPRoute", "httpbin-get", "200"), "failed"),
]


@pytest.mark.parametrize(
    ("state", "row", "expected"), [c[1:] for c in SERIES_CASES], ids=[c[0] for c in SERIES_CASES]
)
def test_proxy_series_outcome_for_each_guide_step(
    state: str, row: dict[str, object], expected: str
) -> None:
    out = classify_series(pd.DataFrame([row]), timeline(state))
    assert out["outcome"].tolist() == [expected], out["reason"].tolist()
    assert out["reason"].iloc[0]


def test_route_series_reason_names_the_service_of_the_redirect() -> None:
    row = series_row(STATUSES, 80, "HTTPRoute", "unencrypted-http", status="200")
    out = classify_series(pd.DataFrame([row]), timeline("final"))
    assert out["reason"].iloc[0] == (
        "HTTPRoute egress-test/unencrypted-http: Service egress-test/internal-egress"
    )


def test_non_request_families_are_left_out() -> None:
    row = series_row("outbound_http_route_backend_requests_total", 80, "default", "x")
    assert classify_series(pd.DataFrame([row]), timeline("allow")).empty


def test_the_state_at_each_scrape_decides() -> None:
    # httpbin-get is an HTTPRoute in force only after T0+10s.
    later = T0 + timedelta(seconds=10)
    tl = PolicyTimeline(
        [(T0, load_manifests(STATES["deny"])), (later, load_manifests(STATES["deny+get"]))]
    )
    early = series_row(STATUSES, 80, "HTTPRoute", "httpbin-get", status="200")
    late = early | {"scraped_at": pd.Timestamp(T0 + timedelta(seconds=11))}
    out = classify_series(pd.DataFrame([early, late]), tl)
    assert out["outcome"].tolist() == ["failed", "allowed"]


# ----------------------------------------------------------------- route_outcome itself


def _route(yaml_text: str) -> HTTPRoute:
    (route,) = [o for o in load_manifests(yaml_text) if isinstance(o, HTTPRoute)]
    return route


MIXED = guide.UNENCRYPTED_HTTP_ROUTE.replace(
    "  rules:\n", "  rules:\n  - matches:\n    - path:\n        value: /get\n"
)
REDIRECT = guide.HTTPBIN_GET_ROUTE.replace(
    '          value: "/get"\n',
    '          value: "/get"\n      filters:\n      - type: RequestRedirect\n'
    "        requestRedirect:\n          hostname: example.com\n",
)


@pytest.mark.parametrize(
    ("route_yaml", "objects", "expected"),
    [
        (guide.HTTPBIN_GET_ROUTE, [], "allowed"),
        (guide.UNENCRYPTED_HTTP_ROUTE, [guide.INTERNAL_EGRESS], "redirected"),
        (guide.UNENCRYPTED_HTTP_ROUTE, [], "failed"),
        (MIXED, [guide.INTERNAL_EGRESS], "failed"),
        (REDIRECT, [], "redirected"),
    ],
    ids=["no-backends", "service", "service-missing", "mixed-rules", "request-redirect"],
)
def test_route_outcome_from_its_backends(
    route_yaml: str, objects: list[str], expected: str
) -> None:
    snap = Snapshot.build(with_cluster_ips(load_manifests([DENY_EN, *objects])))
    outcome, reason = route_outcome(
        _route(route_yaml),
        parent_namespace="egress-test",
        parent_name="all-egress-traffic",
        snap=snap,
    )
    assert outcome == expected, reason


# ------------------------------------------------------------------------ client side


def request_row(
    url: str, *, status: int | None = 200, exit_code: int = 0, body: str = "{}", error: str = ""
) -> dict[str, object]:
    start = pd.Timestamp(T0 + timedelta(seconds=5))
    return {
        "at": start,
        "completed_at": start + pd.Timedelta(seconds=0.1),
        "pod": "client",
        "namespace": "egress-test",
        "url": url,
        "exit_code": exit_code,
        "http_status": status,
        "time_total": 0.1,
        "body": body,
        "error": error,
    }


REDIRECT_BODY = "You cannot go there right now"
HB, HBS, GH = "http://httpbin.org", "https://httpbin.org", "github.com"


def r(
    url: str, status: int | None = 200, exit_code: int = 0, body: str = "{}", error: str = ""
) -> dict[str, object]:
    return request_row(url, status=status, exit_code=exit_code, body=body, error=error)


# (id, state, request as curl saw it, outcome, route the engine names):
# docs/facts/linkerd-egress.md 8.5.
REQUEST_CASES = [
    ("G1", "allow", r(f"{HB}/get"), "allowed", "http-egress-allow"),
    ("G2", "allow", r(f"{HBS}/get"), "allowed", "tcp-egress-allow"),
    ("G3", "deny", r(f"{HB}/get", 403, body=""), "forbidden", "http-egress-deny"),
    ("G4", "deny", r(f"{HBS}/get", None, 35, ""), "forbidden", "tcp-egress-deny"),
    ("G5", "deny+get", r(f"{HB}/get"), "allowed", "httpbin-get"),
    ("G6", "deny+get", r(f"{HB}/ip", 403, body=""), "forbidden", "http-egress-deny"),
    ("G7", "deny+get+tls", r(f"{HBS}/get"), "allowed", "tls-egress"),
    ("G8", "deny+get+tls", r(f"https://{GH}", None, 35, ""), "forbidden", "tls-egress-deny"),
    ("G9", "deny+get+tls", r(f"http://{GH}/", 403, body=""), "forbidden", "http-egress-deny"),
    ("G10", "final", r(f"{HB}/get"), "allowed", "httpbin-get"),
    ("G11-ip", "final", r(f"{HB}/ip", body=REDIRECT_BODY), "redirected", "unencrypted-http"),
    (
        "G11-google",
        "final",
        r("http://google.com", body=REDIRECT_BODY),
        "redirected",
        "unencrypted-http",
    ),
    ("G11-no-body", "final", r(f"{HB}/ip"), "redirected", "unencrypted-http"),
    ("G12", "final", r(f"https://{GH}"), "allowed", "tls-egress"),
    ("deny-but-200", "deny", r(f"{HB}/get"), "failed", "http-egress-deny"),
    (
        "curl-timeout",
        "allow",
        r(f"{HB}/get", None, 28, error="(28)"),
        "failed",
        "http-egress-allow",
    ),
    (
        "backend-error",
        "allow",
        r(f"{HB}/get", None, -1, error="exec"),
        "failed",
        "http-egress-allow",
    ),
    ("bad-url", "allow", r("ftp://httpbin.org/"), "failed", ""),
]


@pytest.mark.parametrize(
    ("state", "row", "outcome", "route"),
    [c[1:] for c in REQUEST_CASES],
    ids=[c[0] for c in REQUEST_CASES],
)
def test_client_outcome_for_each_guide_step(
    state: str, row: dict[str, object], outcome: str, route: str
) -> None:
    frame = pd.DataFrame([row]).astype({"http_status": "Int64"})
    out = classify_requests(frame, timeline(state))
    assert (out["outcome"].iloc[0], out["route_name"].iloc[0]) == (outcome, route), out[
        "reason"
    ].iloc[0]


def test_client_reason_says_both_sides_when_they_disagree() -> None:
    frame = pd.DataFrame([request_row("http://httpbin.org/get")]).astype({"http_status": "Int64"})
    reason = classify_requests(frame, timeline("deny"))["reason"].iloc[0]
    assert reason == (
        "the policy in force says FORBIDDEN via http-egress-deny HTTP 403, curl got HTTP 200"
    )


def test_the_redirect_body_confirms_a_redirect_the_policy_did_not_predict() -> None:
    frame = pd.DataFrame([request_row("http://httpbin.org/get", body=REDIRECT_BODY)])
    out = classify_requests(frame.astype({"http_status": "Int64"}), timeline("allow"))
    assert out["outcome"].iloc[0] == "redirected"
    assert "although the policy says ALLOWED" in out["reason"].iloc[0]


@pytest.mark.parametrize(
    ("start_s", "status", "exit_code", "expected"),
    [
        (9.9, 403, 0, "forbidden"),  # started before the change, met the new policy
        (9.9, 200, 0, "allowed"),  # started before the change, met the old policy
        (9.7, 403, 0, "forbidden"),  # finished just before the change was recorded
        (5.0, 403, 0, "allowed"),  # long before: a 403 from the destination itself
        (10.5, 200, 0, "failed"),  # after the change: a 200 contradicts the Deny
    ],
    ids=["in-flight-403", "in-flight-200", "within-slack", "long-before", "after"],
)
def test_a_request_around_a_change_is_judged_by_the_policy_it_met(
    start_s: float, status: int, exit_code: int, expected: str
) -> None:
    flip = T0 + timedelta(seconds=10)
    tl = PolicyTimeline(
        [(T0, load_manifests(STATES["allow"])), (flip, load_manifests(STATES["deny"]))]
    )
    row = request_row("http://httpbin.org/get", status=status, exit_code=exit_code, body="")
    row["at"] = pd.Timestamp(T0 + timedelta(seconds=start_s))
    row["completed_at"] = row["at"] + pd.Timedelta(seconds=0.2)  # type: ignore[operator]
    out = classify_requests(pd.DataFrame([row]).astype({"http_status": "Int64"}), tl)
    assert out["outcome"].iloc[0] == expected, out["reason"].iloc[0]


# --------------------------------------------------------------------------- timeline


def test_timeline_answers_the_objects_in_force_at_a_time() -> None:
    tl = PolicyTimeline(
        [
            (T0 + timedelta(seconds=10), load_manifests(STATES["deny"])),
            (T0, load_manifests(STATES["allow"])),
        ]
    )
    policy = {
        t: next(o for o in tl.objects_at(T0 + timedelta(seconds=t)) if o.kind == "EgressNetwork")
        for t in (-5, 0, 9, 10, 60)
    }
    assert {t: en.traffic_policy for t, en in policy.items()} == {  # type: ignore[attr-defined]
        -5: "Allow",  # the first state also holds before its time
        0: "Allow",
        9: "Allow",
        10: "Deny",
        60: "Deny",
    }


def test_timeline_sync_adds_a_state_per_change_and_lists_gaps() -> None:
    mesh = FakeMesh(*STATES["allow"])
    tl = PolicyTimeline.of(mesh)
    assert tl.sync() == 0
    mesh.patch("EgressNetwork", "all-egress-traffic", guide.DENY_PATCH, namespace="egress-test")
    assert tl.sync() == 1
    assert tl.times[-1] == mesh.changes[-1].at
    mesh.apply(guide.HTTPBIN_GET_ROUTE)
    mesh.apply(guide.TLS_EGRESS_ROUTE)
    assert tl.sync() == 2
    assert tl.gaps == [mesh.changes[-2]]
    names = {o.name for o in tl.objects_at(mesh.changes[-1].at)}
    assert {"httpbin-get", "tls-egress"} <= names


def test_objects_from_changes_gets_what_changes_named_and_skips_deleted() -> None:
    mesh = FakeMesh(*STATES["deny+get"])
    mesh.delete("HTTPRoute", "httpbin-get", namespace="egress-test")
    names = sorted(o.display for o in objects_from_changes(mesh)())
    assert "HTTPRoute egress-test/httpbin-get" not in names
    assert "EgressNetwork egress-test/all-egress-traffic" in names


def test_timeline_rejects_naive_times() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        PolicyTimeline([(datetime(2025, 1, 1), [])])


# --------------------------------------------------------------------- reconciliation


def _sides(proxy_forbidden: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Three scrapes at T0, T0+10s, T0+20s; 2 allowed then 3 forbidden requests."""
    s0, s1, s2 = (pd.Timestamp(T0 + timedelta(seconds=s)) for s in (0, 10, 20))
    done = [s0 + pd.Timedelta(seconds=s) for s in (2, 4, 12, 14, 16)]
    requests = pd.DataFrame(
        {
            "pod": "client",
            "completed_at": done,
            "outcome": ["allowed", "allowed", "forbidden", "forbidden", "forbidden"],
        }
    )
    series = pd.DataFrame(
        {
            "scraped_at": [s0, s1, s2, s1, s2],
            "pod": "client",
            "outcome": ["allowed", "allowed", "allowed", "forbidden", "forbidden"],
            "increase": [float("nan"), 2.0, 0.0, 0.0, float(proxy_forbidden)],
        }
    )
    return requests, series


def test_reconcile_exact_match_per_interval() -> None:
    requests, series = _sides(proxy_forbidden=3)
    result = reconcile(requests, series, interval="10s")
    assert result.ok, str(result)
    assert result.excluded == 0 and result.scrapes == 3
    table = result.table.set_index(["outcome"]).groupby("outcome")[["client", "proxy"]].sum()
    assert table.loc["forbidden"].tolist() == [3, 3]
    assert str(result).startswith("client and proxy agree")


def test_reconcile_reports_a_mismatch_with_its_numbers() -> None:
    requests, series = _sides(proxy_forbidden=2)
    result = reconcile(requests, series)
    assert not result.ok
    (row,) = result.mismatches.itertuples(index=False)
    assert (row.outcome, row.client, row.proxy, row.diff) == ("forbidden", 3, 2, 1)
    assert "forbidden: client 3, proxy 2 (diff +1)" in str(result)


def test_reconcile_leaves_out_requests_before_the_baseline_or_after_the_last_scrape() -> None:
    requests, series = _sides(proxy_forbidden=3)
    extra = pd.DataFrame(
        {
            "pod": "client",
            "completed_at": [
                pd.Timestamp(T0 - timedelta(seconds=1)),
                pd.Timestamp(T0 + timedelta(seconds=30)),
            ],
            "outcome": ["allowed", "allowed"],
        }
    )
    result = reconcile(pd.concat([requests, extra], ignore_index=True), series)
    assert result.ok and result.excluded == 2


def test_reconcile_without_scrapes_is_not_ok() -> None:
    requests, series = _sides(proxy_forbidden=3)
    result = reconcile(requests, series.iloc[0:0])
    assert not result.ok and result.notes == ("no scrapes",)
