"""Gateway API matching and precedence as Linkerd does it (gateway-api-matching.md).

Conformance routes are attached to an EgressNetwork on port 80 with ``trafficPolicy:
Allow``; their backends are the Services v1, v2, v3. Where the conformance suite expects
404 (nothing matches), the EgressNetwork's default route catches the request instead:
``http-egress-allow`` (docs/facts/linkerd-egress.md 4.5: never a 404 for an EgressNetwork).
"""

from __future__ import annotations

from typing import Any

import pytest

from egresskit.manifests.model import PathMatch
from egresskit.policy.engine import _replace_prefix
from egresskit.policy.httpmatch import path_match_length
from tests.enginekit import egress_network, http, route, service, snapshot, svc_backend

NO_ROUTE = "http-egress-allow"


def P(v: str) -> dict[str, Any]:
    return {"path": {"type": "PathPrefix", "value": v}}


def E(v: str) -> dict[str, Any]:
    return {"path": {"type": "Exact", "value": v}}


def H(**kv: str) -> dict[str, Any]:
    return {"headers": [{"name": k, "value": v} for k, v in kv.items()]}


def Q(**kv: str) -> dict[str, Any]:
    return {"queryParams": [{"name": k, "value": v} for k, v in kv.items()]}


def M(m: str) -> dict[str, Any]:
    return {"method": m}


def match(*parts: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for p in parts:
        out.update(p)
    return out


def rule(*matches: dict[str, Any], to: str) -> dict[str, Any]:
    r: dict[str, Any] = {"backendRefs": [svc_backend(to)]}
    if matches:
        r["matches"] = list(matches)
    return r


def conformance(*rules: dict[str, Any], hostnames: list[str] | None = None):  # type: ignore[no-untyped-def]
    return snapshot(
        egress_network(),
        service("v1"),
        service("v2"),
        service("v3"),
        route("HTTPRoute", "matching", rules=list(rules), hostnames=hostnames),
    )


def winner(d: Any) -> str:
    if d.target == "service":
        return str(d.backend.name)
    return str(d.labels["route_name"])


# -- 5.1 httproute-matching ------------------------------------------------------------

MATCHING = conformance(
    rule(P("/"), H(version="one"), to="v1"),
    rule(P("/v2"), H(version="two"), to="v2"),
)


@pytest.mark.parametrize(
    ("case", "path", "headers", "expected"),
    [
        ("M-01", "/", {}, "v1"),
        ("M-02", "/example", {}, "v1"),
        ("M-03", "/", {"Version": "one"}, "v1"),
        ("M-04", "/v2", {}, "v2"),
        ("M-05", "/v2/example", {}, "v2"),
        ("M-06", "/", {"Version": "two"}, "v2"),
        ("M-07", "/v2/", {}, "v2"),
        ("M-08", "/v2example", {}, "v1"),
        ("M-09", "/foo/v2/example", {}, "v1"),
    ],
    ids=lambda v: v if isinstance(v, str) and v.startswith("M-") else "",
)
def test_httproute_matching(case: str, path: str, headers: dict[str, str], expected: str) -> None:
    assert winner(http(MATCHING, path, headers=headers)) == expected


# -- 5.2 exact paths -------------------------------------------------------------------

EXACT = conformance(rule(E("/one"), to="v1"), rule(E("/two"), to="v2"))


@pytest.mark.parametrize(
    ("case", "path", "expected"),
    [
        ("E-01", "/one", "v1"),
        ("E-02", "/two", "v2"),
        ("E-03", "/", NO_ROUTE),
        ("E-04", "/one/example", NO_ROUTE),
        ("E-05", "/two/", NO_ROUTE),
        ("E-06", "/Two", NO_ROUTE),
    ],
    ids=lambda v: v if isinstance(v, str) and v.startswith("E-") else "",
)
def test_exact_path_matching(case: str, path: str, expected: str) -> None:
    assert winner(http(EXACT, path)) == expected


# -- 5.5 header matching ---------------------------------------------------------------

HEADERS = conformance(
    rule(H(version="one"), to="v1"),
    rule(H(version="two"), to="v2"),
    rule(H(version="two", color="orange"), to="v1"),
    rule(H(color="blue"), H(color="green"), to="v1"),
    rule(H(color="red"), H(color="yellow"), to="v2"),
)


@pytest.mark.parametrize(
    ("case", "headers", "expected"),
    [
        ("H-01", {"Version": "one"}, "v1"),
        ("H-02", {"Version": "two"}, "v2"),
        ("H-03", {"Version": "two", "Color": "orange"}, "v1"),
        ("H-04", {"Version": "two", "Color": "blue"}, "v2"),
        ("H-05", {"Color": "orange"}, NO_ROUTE),
        ("H-06", {"Some-Other-Header": "one"}, NO_ROUTE),
        ("H-07", {"Color": "blue"}, "v1"),
        ("H-08", {"Color": "green"}, "v1"),
        ("H-09", {"Color": "red"}, "v2"),
        ("H-10", {"Color": "yellow"}, "v2"),
        ("H-11", {"Color": "purple"}, NO_ROUTE),
    ],
    ids=lambda v: v if isinstance(v, str) and v.startswith("H-") else "",
)
def test_header_matching(case: str, headers: dict[str, str], expected: str) -> None:
    assert winner(http(HEADERS, "/", headers=headers)) == expected


def test_repeated_header_matches_any_value_d7() -> None:
    d = http(HEADERS, "/", headers=[("color", "purple"), ("color", "blue")])
    assert winner(d) == "v1"


# -- 5.7 method matching (Linkerd ranks headers before method: D1) ----------------------

METHODS = conformance(
    rule(M("POST"), to="v1"),
    rule(M("GET"), to="v2"),
    rule(match(P("/path1"), M("GET")), to="v1"),
    rule(match(H(version="one"), M("PUT")), to="v2"),
    rule(match(P("/path2"), H(version="two"), M("POST")), to="v3"),
    rule(
        match(P("/path3"), M("PATCH")),
        match(P("/path4"), H(version="three"), M("DELETE")),
        to="v1",
    ),
    rule(P("/path5"), to="v1"),
    rule(M("PATCH"), to="v2"),
    rule(H(version="four"), to="v3"),
)


@pytest.mark.parametrize(
    ("case", "method", "path", "headers", "expected"),
    [
        ("MM-01", "POST", "/", {}, "v1"),
        ("MM-02", "GET", "/", {}, "v2"),
        ("MM-03", "HEAD", "/", {}, NO_ROUTE),
        ("MM-04", "GET", "/path1", {}, "v1"),
        ("MM-05", "PUT", "/", {"version": "one"}, "v2"),
        ("MM-06", "POST", "/path2", {"version": "two"}, "v3"),
        ("MM-07", "PATCH", "/path3", {}, "v1"),
        ("MM-08", "DELETE", "/path4", {"version": "three"}, "v1"),
        ("MM-09", "PUT", "/", {}, NO_ROUTE),
        ("MM-10", "DELETE", "/path4", {}, NO_ROUTE),
        ("MM-11", "PATCH", "/path5", {}, "v1"),
        # The spec says v2 (method beats headers); Linkerd ranks headers first: v3 (D1).
        ("MM-12", "PATCH", "/", {"version": "four"}, "v3"),
    ],
    ids=lambda v: v if isinstance(v, str) and v.startswith("MM-") else "",
)
def test_method_matching_linkerd_order(
    case: str, method: str, path: str, headers: dict[str, str], expected: str
) -> None:
    assert winner(http(METHODS, path, method=method, headers=headers)) == expected


# -- query params (D7) ------------------------------------------------------------------

QUERY = conformance(
    rule(Q(animal="whale"), to="v1"), rule(Q(animal="dolphin", color="blue"), to="v2")
)


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/?animal=whale", "v1"),
        ("/?ANIMAL=Whale", NO_ROUTE),
        ("/?animal=dolphin&color=blue", "v2"),
        ("/?color=blue&animal=dolphin", "v2"),
        ("/?animal=dolphin", NO_ROUTE),
        ("/?animal=shark&animal=whale", "v1"),
        ("/?animal=wh%61le", "v1"),
    ],
    ids=[
        "exact",
        "name-case-sensitive",
        "two-params",
        "any-order",
        "missing-one",
        "any-occurrence",
        "decoded",
    ],
)
def test_query_param_matching(target: str, expected: str) -> None:
    assert winner(http(QUERY, target)) == expected


# -- 2.2 PathPrefix, precisely -----------------------------------------------------------


@pytest.mark.parametrize(
    ("prefix", "path", "length"),
    [
        ("/foo", "/foo", 4),
        ("/foo", "/foo/", 4),
        ("/foo", "/foo/bar", 4),
        ("/foo", "/foobar", None),
        ("/foo/", "/foo", 4),
        ("/foo/", "/foo/bar", 4),
        ("/foo/", "/foobar", None),
        ("/", "/foobar", 1),
        ("/v2", "/v2example", None),
        ("/v2", "/foo/v2/example", None),
        ("/match/", "/match", 6),
        ("/full", "/full-path-and-host", None),
        ("/abc", "/ABC", None),
        ("/foo", "/foo//bar", 4),
    ],
)
def test_path_prefix_table(prefix: str, path: str, length: int | None) -> None:
    assert path_match_length(PathMatch(type="PathPrefix", value=prefix), path) == length


def test_exact_and_prefix_of_equal_length_tie_to_the_earlier_rule_d2() -> None:
    snap = conformance(rule(P("/match/"), to="v1"), rule(E("/match"), to="v2"))
    assert winner(http(snap, "/match")) == "v1"


def test_regex_counts_as_full_path_length_d2() -> None:
    snap = conformance(
        rule({"path": {"type": "RegularExpression", "value": "/re.*"}}, to="v1"),
        rule(P("/re"), to="v2"),
    )
    assert winner(http(snap, "/regex")) == "v1"
    assert winner(http(snap, "/re")) == "v1"  # regex length 3 == prefix length 3: earlier


# -- hostnames (D4, D5) -----------------------------------------------------------------


def test_hostname_match_beats_longer_path_on_a_hostless_route_d5() -> None:
    snap = snapshot(
        egress_network(),
        service("v1"),
        service("v2"),
        route("HTTPRoute", "long-path", rules=[rule(P("/a/very/long/path"), to="v1")]),
        route("HTTPRoute", "by-host", hostnames=["httpbin.org"], rules=[rule(to="v2")]),
    )
    assert winner(http(snap, "/a/very/long/path", host="httpbin.org:80")) == "v2"
    assert winner(http(snap, "/a/very/long/path", host="other.org")) == "v1"


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("abc.example.com", "v1"),
        ("other.example.com", "v2"),
        ("deep.other.example.com", "v2"),
        ("example.com", NO_ROUTE),
        ("ABC.Example.COM.", "v1"),
        ("abc.example.com:8080", "v1"),
    ],
)
def test_exact_host_beats_wildcard_and_wildcard_needs_a_label(host: str, expected: str) -> None:
    snap = snapshot(
        egress_network(),
        service("v1"),
        service("v2"),
        route("HTTPRoute", "wild", hostnames=["*.example.com"], rules=[rule(to="v2")]),
        route("HTTPRoute", "exact", hostnames=["abc.example.com"], rules=[rule(to="v1")]),
    )
    assert winner(http(snap, "/", host=host)) == expected


# -- route order: creation time, then name (not namespace) (D6) ----------------------------


def test_older_route_wins_a_tie_then_name() -> None:
    snap = snapshot(
        egress_network(),
        service("v1"),
        service("v2"),
        route(
            "HTTPRoute", "aaa-newer", rules=[rule(P("/x"), to="v1")], created="2024-01-02T00:00:00Z"
        ),
        route(
            "HTTPRoute", "zzz-older", rules=[rule(P("/x"), to="v2")], created="2024-01-01T00:00:00Z"
        ),
    )
    assert winner(http(snap, "/x")) == "v2"
    same_time = snapshot(
        egress_network(),
        service("v1"),
        service("v2"),
        route(
            "HTTPRoute", "b-route", rules=[rule(P("/x"), to="v1")], created="2024-01-01T00:00:00Z"
        ),
        route(
            "HTTPRoute", "a-route", rules=[rule(P("/x"), to="v2")], created="2024-01-01T00:00:00Z"
        ),
    )
    assert winner(http(same_time, "/x")) == "v2"


# -- redirects (D14; mesh keeps the request's own port) -----------------------------------


def redirect_rule(prefix: str, **redirect: Any) -> dict[str, Any]:
    return {
        "matches": [P(prefix)],
        "filters": [{"type": "RequestRedirect", "requestRedirect": redirect}],
    }


REDIRECTS = snapshot(
    egress_network(),
    route(
        "HTTPRoute",
        "redirects",
        rules=[
            redirect_rule(
                "/original-prefix",
                path={"type": "ReplacePrefixMatch", "replacePrefixMatch": "/replacement-prefix"},
            ),
            redirect_rule(
                "/full",
                path={"type": "ReplaceFullPath", "replaceFullPath": "/full-path-replacement"},
            ),
            redirect_rule(
                "/path-and-host",
                hostname="example.org",
                path={"type": "ReplacePrefixMatch", "replacePrefixMatch": "/replacement-prefix"},
            ),
            redirect_rule(
                "/path-and-status",
                statusCode=301,
                path={"type": "ReplacePrefixMatch", "replacePrefixMatch": "/replacement-prefix"},
            ),
            redirect_rule("/hostname-redirect", hostname="example.org"),
            redirect_rule("/port", port=8083),
            redirect_rule("/scheme", scheme="https"),
        ],
    ),
)


@pytest.mark.parametrize(
    ("case", "path", "status", "location"),
    [
        ("RD-01", "/original-prefix/lemon", 302, "http://httpbin.org/replacement-prefix/lemon"),
        ("RD-02", "/full/path/original", 302, "http://httpbin.org/full-path-replacement"),
        ("RD-03", "/path-and-host", 302, "http://example.org/replacement-prefix"),
        ("RD-04", "/path-and-status", 301, "http://httpbin.org/replacement-prefix"),
        ("RD-07", "/hostname-redirect", 302, "http://example.org/hostname-redirect"),
        ("RD-09", "/port", 302, "http://httpbin.org:8083/port"),
        ("RD-13", "/scheme", 302, "https://httpbin.org/scheme"),
    ],
    ids=lambda v: v if isinstance(v, str) and v.startswith("RD-") else "",
)
def test_request_redirect(case: str, path: str, status: int, location: str) -> None:
    d = http(REDIRECTS, path)
    assert (d.outcome, d.http_status, d.location) == ("redirected", status, location)


@pytest.mark.parametrize(
    ("path", "prefix", "replacement", "expected"),
    [
        ("/foo/bar", "/foo", "/xyz", "/xyz/bar"),
        ("/foo/bar", "/foo", "/xyz/", "/xyz//bar"),
        ("/foo/bar", "/foo/", "/xyz", "/xyz/bar"),
        ("/foo", "/foo", "/xyz", "/xyz"),
        ("/foo/", "/foo", "/xyz", "/xyz/"),
        ("/foo", "/foo", "/", "/"),
    ],
)
def test_replace_prefix_match_linkerd_d14(
    path: str, prefix: str, replacement: str, expected: str
) -> None:
    assert _replace_prefix(path, prefix, replacement) == expected


# -- unsupported filters leave the route out (D11) -----------------------------------------


def test_url_rewrite_route_is_left_out() -> None:
    snap = snapshot(
        egress_network(policy="Deny"),
        route(
            "HTTPRoute",
            "rewrite",
            rules=[
                {
                    "matches": [P("/get")],
                    "filters": [{"type": "URLRewrite", "urlRewrite": {"hostname": "x.org"}}],
                }
            ],
        ),
    )
    assert http(snap, "/get").labels["route_name"] == "http-egress-deny"
