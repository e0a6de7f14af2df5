"""Manifest loading: defaults as the API server applies them, and every rejection.

Tables read like the specs: gateway-api-matching.md 1.1 (defaults), linkerd-egress.md
sections 1, 4.2 and 4.8 (Linkerd's admission webhook), the CRDs in egresskit/crds.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from egresskit import guide
from egresskit.errors import ManifestError, Problem
from egresskit.manifests import load_manifests, parse_object, supported_kinds
from egresskit.manifests.model import (
    BackendRef,
    Deployment,
    EgressNetwork,
    GRPCMethodMatch,
    GRPCRoute,
    HTTPRoute,
    HTTPRouteMatch,
    HTTPRouteRule,
    K8sObject,
    Namespace,
    Network,
    ParentRef,
    PathMatch,
    Pod,
    Service,
    Source,
    TLSRoute,
    ValueMatch,
)

NS = "egress-test"
GW = "gateway.networking.k8s.io"
EN_PARENT: dict[str, Any] = {
    "name": "all-egress-traffic",
    "kind": "EgressNetwork",
    "group": "policy.linkerd.io",
    "namespace": NS,
    "port": 80,
}
EN_BACKEND: dict[str, Any] = {
    "kind": "EgressNetwork",
    "group": "policy.linkerd.io",
    "name": "all-egress-traffic",
}

# ------------------------------------------------------------------ builders


def route(kind: str = "HTTPRoute", api: str = f"{GW}/v1", **spec: Any) -> dict[str, Any]:
    """A route in egress-test with an EgressNetwork parent on port 80, plus ``spec``."""
    body: dict[str, Any] = {"parentRefs": [dict(EN_PARENT)], **spec}
    name = {"HTTPRoute": "httpbin-get", "GRPCRoute": "grpc", "TLSRoute": "tls-egress"}
    return {
        "apiVersion": api,
        "kind": kind,
        "metadata": {"name": name.get(kind, "tcp"), "namespace": NS},
        "spec": body,
    }


def http(**rule: Any) -> dict[str, Any]:
    """An HTTPRoute with one rule."""
    return route(rules=[rule])


def grpc(**rule: Any) -> dict[str, Any]:
    return route("GRPCRoute", rules=[rule])


def l4(kind: str, rules: list[Any]) -> dict[str, Any]:
    return route(kind, f"{GW}/v1alpha2", rules=rules)


def linkerd(version: str = "v1beta3", **rule: Any) -> dict[str, Any]:
    return route(api=f"policy.linkerd.io/{version}", rules=[rule])


def network(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "policy.linkerd.io/v1alpha1",
        "kind": "EgressNetwork",
        "metadata": {"name": "all-egress-traffic", "namespace": NS},
        "spec": {"trafficPolicy": "Deny", **spec},
    }


def with_(doc: dict[str, Any], edit: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
    """A deep copy of ``doc`` changed by ``edit``."""
    out = copy.deepcopy(doc)
    edit(out)
    return out


def problems_of(source: Any, **kwargs: Any) -> list[Problem]:
    with pytest.raises(ManifestError) as info:
        load_manifests(source, **kwargs)
    return info.value.problems


def one(source: Any, **kwargs: Any) -> K8sObject:
    objs = load_manifests(source, **kwargs)
    assert len(objs) == 1
    return objs[0]


DEPLOYMENT = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "internal-egress", "namespace": NS},
    "spec": {
        "selector": {"matchLabels": {"app": "internal-egress"}},
        "template": {
            "metadata": {"labels": {"app": "internal-egress"}},
            "spec": {"containers": [{"name": "app", "image": "buoyantio/bb:v0.0.5"}]},
        },
    },
}

# ------------------------------------------------------------------- defaults

PREFIX_ROOT = PathMatch(type="PathPrefix", value="/")

DEFAULTS: list[tuple[str, Any, Callable[[Any], Any], Any]] = [
    (
        "rules-omitted-one-rule-prefix-root",
        route(),
        lambda o: o.rules,
        (HTTPRouteRule(matches=(HTTPRouteMatch(path=PREFIX_ROOT),)),),
    ),
    (
        "rule-without-matches-prefix-root",
        http(backendRefs=[{"name": "svc", "port": 80}]),
        lambda o: o.rules[0].matches,
        (HTTPRouteMatch(path=PREFIX_ROOT),),
    ),
    (
        "empty-matches-prefix-root",
        http(matches=[]),
        lambda o: o.rules[0].matches[0].path,
        PREFIX_ROOT,
    ),
    (
        "match-without-path-prefix-root",
        http(matches=[{"method": "GET"}]),
        lambda o: o.rules[0].matches[0],
        HTTPRouteMatch(path=PREFIX_ROOT, method="GET"),
    ),
    (
        "path-type-defaults-to-prefix",
        http(matches=[{"path": {"value": "/get"}}]),
        lambda o: o.rules[0].matches[0].path,
        PathMatch(type="PathPrefix", value="/get"),
    ),
    (
        "path-value-defaults-to-root",
        http(matches=[{"path": {"type": "Exact"}}]),
        lambda o: o.rules[0].matches[0].path,
        PathMatch(type="Exact", value="/"),
    ),
    (
        "header-type-defaults-to-exact",
        http(matches=[{"headers": [{"name": "x-a", "value": "1"}]}]),
        lambda o: o.rules[0].matches[0].headers,
        (ValueMatch(type="Exact", name="x-a", value="1"),),
    ),
    (
        "query-type-defaults-to-exact",
        http(matches=[{"queryParams": [{"name": "q", "value": "1"}]}]),
        lambda o: o.rules[0].matches[0].query_params,
        (ValueMatch(type="Exact", name="q", value="1"),),
    ),
    (
        "gateway-parent-group-kind-namespace",
        route(parentRefs=[{"name": "gw"}]),
        lambda o: o.parent_refs,
        (ParentRef(group=GW, kind="Gateway", namespace=NS, name="gw"),),
    ),
    (
        "linkerd-parent-group-is-policy",
        with_(linkerd(), lambda d: d["spec"].update(parentRefs=[{"name": "gw"}])),
        lambda o: o.parent_refs,
        (ParentRef(group="policy.linkerd.io", kind="Gateway", namespace=NS, name="gw"),),
    ),
    (
        "explicit-empty-group-kept",
        route(parentRefs=[{"name": "svc", "group": "", "kind": "Service", "port": 80}]),
        lambda o: o.parent_refs[0].group,
        "",
    ),
    (
        "backend-group-kind-namespace-weight",
        http(backendRefs=[{"name": "internal-egress", "port": 80}]),
        lambda o: o.rules[0].backend_refs,
        (BackendRef(group="", kind="Service", namespace=NS, name="internal-egress", port=80),),
    ),
    (
        "linkerd-v1alpha1-backend-namespace-default",
        linkerd("v1alpha1", backendRefs=[{"name": "svc", "port": 80}]),
        lambda o: o.rules[0].backend_refs,
        (BackendRef(group="", kind="Service", namespace="default", name="svc", port=80),),
    ),
    (
        "linkerd-v1beta3-backend-namespace-is-route",
        linkerd("v1beta3", backendRefs=[{"name": "svc", "port": 80}]),
        lambda o: o.rules[0].backend_refs[0].namespace,
        NS,
    ),
    (
        "redirect-status-302",
        http(filters=[{"type": "RequestRedirect", "requestRedirect": {"hostname": "example.com"}}]),
        lambda o: o.rules[0].filters[0].request_redirect.status_code,
        302,
    ),
    (
        "grpc-method-type-exact",
        grpc(matches=[{"method": {"service": "pkg.Echo"}}]),
        lambda o: o.rules[0].matches[0].method,
        GRPCMethodMatch(type="Exact", service="pkg.Echo"),
    ),
    ("grpc-no-matches-stays-empty", grpc(), lambda o: o.rules[0].matches, ()),
    ("grpc-rules-omitted-none", route("GRPCRoute"), lambda o: o.rules, ()),
    ("egress-networks-omitted-is-none", network(), lambda o: o.networks, None),
    (
        "egress-bare-ip-is-one-address",
        network(networks=[{"cidr": "192.0.2.1", "except": []}]),
        lambda o: o.networks,
        (Network(cidr="192.0.2.1/32"),),
    ),
    (
        "egress-cidr-host-bits-cleared",
        network(networks=[{"cidr": "10.1.1.5/24", "except": ["10.1.1.7"]}]),
        lambda o: o.networks,
        (Network(cidr="10.1.1.0/24", except_=("10.1.1.7/32",)),),
    ),
    (
        "service-target-port-is-port",
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "s", "namespace": NS},
            "spec": {"ports": [{"port": 80}]},
        },
        lambda o: (o.type, o.ports[0].target_port, o.ports[0].protocol),
        ("ClusterIP", 80, "TCP"),
    ),
    ("deployment-replicas-1", DEPLOYMENT, lambda o: o.replicas, 1),
    (
        "namespace-has-no-namespace",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "n", "namespace": "x"}},
        lambda o: o.namespace,
        None,
    ),
    (
        "creation-timestamp-kept",
        with_(route(), lambda d: d["metadata"].update(creationTimestamp="2024-05-01T10:00:00Z")),
        lambda o: o.metadata.creation_timestamp,
        "2024-05-01T10:00:00Z",
    ),
    (
        "unquoted-yaml-timestamp-becomes-rfc3339",
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: n\n"
        "  creationTimestamp: 2024-05-01T10:00:00Z\n",
        lambda o: o.metadata.creation_timestamp,
        "2024-05-01T10:00:00Z",
    ),
]


@pytest.mark.parametrize(
    ("doc", "get", "want"), [c[1:] for c in DEFAULTS], ids=[c[0] for c in DEFAULTS]
)
def test_defaults(doc: Any, get: Callable[[Any], Any], want: Any) -> None:
    assert get(one(doc)) == want


@pytest.mark.parametrize(
    ("doc", "want"),
    [
        ({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}}, "team-a"),
        (with_(route(), lambda d: d["metadata"].pop("namespace")), "team-a"),
    ],
    ids=["pod", "route"],
)
def test_namespace_defaults_to_default_namespace(doc: dict[str, Any], want: str) -> None:
    # Pod without spec is a problem; give it one so only the namespace is under test.
    doc.setdefault("spec", {"containers": [{"name": "c", "image": "i"}]})
    obj = one(doc, default_namespace="team-a")
    assert obj.namespace == want


def test_route_namespace_flows_into_refs() -> None:
    doc = with_(
        http(backendRefs=[{"name": "svc", "port": 80}]),
        lambda d: (d["metadata"].pop("namespace"), d["spec"]["parentRefs"][0].pop("namespace")),
    )
    obj = one(doc, default_namespace="team-a")
    assert isinstance(obj, HTTPRoute)
    assert obj.parent_refs[0].namespace == "team-a"
    assert obj.rules[0].backend_refs[0].namespace == "team-a"


# ----------------------------------------------------------------- rejections

HTTPROUTE_VERSIONS = (
    "a version the HTTPRoute CRD serves: gateway.networking.k8s.io/v1, "
    "gateway.networking.k8s.io/v1beta1"
)
EXACT_PREFIX = "['Exact', 'PathPrefix']"
CRD_HOST = 'a lowercase RFC 1123 hostname, optionally with a leading "*."'
KINDS = (
    "Namespace, Pod, Service, Deployment, EgressNetwork, HTTPRoute, GRPCRoute, TLSRoute, TCPRoute"
)
PORT = "an integer 1-65535"
EN_PORT = "a port (required when the parent is an EgressNetwork)"
R = "HTTPRoute egress-test/httpbin-get"
EN = "EgressNetwork egress-test/all-egress-traffic"
M0 = "spec.rules[0].matches[0]"
F0 = "spec.rules[0].filters[0]"


def _parent(**change: Any) -> Callable[[dict[str, Any]], None]:
    def edit(d: dict[str, Any]) -> None:
        ref = d["spec"]["parentRefs"][0]
        for key, value in change.items():
            if value is None:
                ref.pop(key, None)
            else:
                ref[key] = value

    return edit


def _redirect(**config: Any) -> dict[str, Any]:
    return http(filters=[{"type": "RequestRedirect", "requestRedirect": config}])


# (id, document, object, path, expected, found)
REJECTIONS: list[tuple[str, Any, str | None, str, str, str]] = [
    # --- document shape
    ("not-a-mapping", "- a\n- b\n", None, "", "a mapping with apiVersion, kind and metadata",
     "a list of 2 items"),
    ("scalar-document", "just text\n", None, "", "a mapping with apiVersion, kind and metadata",
     '"just text"'),
    ("missing-apiVersion", with_(route(), lambda d: d.pop("apiVersion")), R, "apiVersion",
     "a value (required)", "nothing"),
    ("missing-kind", with_(route(), lambda d: d.pop("kind")), None, "kind", "a value (required)",
     "nothing"),
    ("missing-metadata", with_(route(), lambda d: d.pop("metadata")), "HTTPRoute",
     "metadata", "a value (required)", "nothing"),
    ("missing-name", with_(route(), lambda d: d["metadata"].pop("name")), "HTTPRoute",
     "metadata.name", "a value (required)", "nothing"),
    ("uppercase-name", with_(route(), lambda d: d["metadata"].update(name="Httpbin")),
     "HTTPRoute egress-test/Httpbin", "metadata.name",
     "a lowercase RFC 1123 name (a-z, 0-9, '-', '.'; at most 253 characters)", '"Httpbin"'),
    ("unknown-kind", {"apiVersion": f"{GW}/v1", "kind": "Gateway", "metadata": {"name": "g"}},
     "Gateway default/g", "kind", f"one of {KINDS}", '"Gateway"'),
    ("unserved-version", route(api=f"{GW}/v2"), R, "apiVersion", HTTPROUTE_VERSIONS,
     f'"{GW}/v2" (no matches for kind "HTTPRoute" in version "{GW}/v2")'),
    # The guide's own v1alpha2 HTTPRoute: Gateway API v1.2.1 no longer serves it (7.4).
    ("guide-v1alpha2-httproute", route(api=f"{GW}/v1alpha2"), R, "apiVersion",
     HTTPROUTE_VERSIONS,
     f'"{GW}/v1alpha2" (no matches for kind "HTTPRoute" in version "{GW}/v1alpha2")'),
    ("grpcroute-v1alpha2", route("GRPCRoute", api=f"{GW}/v1alpha2"), "GRPCRoute egress-test/grpc",
     "apiVersion", f"a version the GRPCRoute CRD serves: {GW}/v1",
     f'"{GW}/v1alpha2" (no matches for kind "GRPCRoute" in version "{GW}/v1alpha2")'),
    ("annotation-not-string",
     with_(route(), lambda d: d["metadata"].update(annotations={"x/y": True})), R,
     "metadata.annotations.x/y", "a string (quote it)", "true"),
    ("bad-timestamp", with_(route(), lambda d: d["metadata"].update(creationTimestamp="today")),
     R, "metadata.creationTimestamp", "an RFC 3339 timestamp", '"today"'),
    # --- types and ranges
    ("port-eighty", with_(route(), _parent(port="eighty")), R, "spec.parentRefs[0].port", PORT,
     '"eighty"'),
    ("port-zero", with_(route(), _parent(port=0)), R, "spec.parentRefs[0].port", PORT, "0"),
    ("port-65536", with_(route(), _parent(port=65536)), R, "spec.parentRefs[0].port", PORT,
     "65536"),
    ("port-boolean", with_(route(), _parent(port=True)), R, "spec.parentRefs[0].port", PORT,
     "true"),
    ("backend-port-range", http(backendRefs=[{"name": "s", "port": 70000}]), R,
     "spec.rules[0].backendRefs[0].port", PORT, "70000"),
    ("weight-negative", http(backendRefs=[{"name": "s", "port": 80, "weight": -1}]), R,
     "spec.rules[0].backendRefs[0].weight", "an integer 0-1000000", "-1"),
    ("weight-too-big", http(backendRefs=[{"name": "s", "port": 80, "weight": 1000001}]), R,
     "spec.rules[0].backendRefs[0].weight", "an integer 0-1000000", "1000001"),
    ("parent-refs-not-list", route(parentRefs={"name": "x"}), R, "spec.parentRefs", "a list",
     "a mapping"),
    ("parent-ref-not-mapping", route(parentRefs=["all-egress-traffic"]), R, "spec.parentRefs[0]",
     "a mapping", '"all-egress-traffic"'),
    ("parent-name-missing", with_(route(), _parent(name=None)), R, "spec.parentRefs[0].name",
     "a value (required)", "nothing"),
    ("service-without-spec", {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}},
     "Service default/s", "spec", "a value (required)", "nothing"),
    ("pod-without-containers",
     {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": []}},
     "Pod default/p", "spec.containers", "at least 1 container", "0"),
    ("deployment-selector-mismatch",
     with_(DEPLOYMENT, lambda d: d["spec"]["template"]["metadata"].update(labels={"app": "x"})),
     "Deployment egress-test/internal-egress", "spec.template.metadata.labels",
     "labels matching spec.selector (app=internal-egress)", "app=x"),
    # --- EgressNetwork admission (linkerd-egress.md 1)
    ("networks-not-list", network(networks="10.0.0.0/8"), EN, "spec.networks", "a list",
     '"10.0.0.0/8"'),
    ("networks-empty", network(networks=[]), EN, "spec.networks",
     "at least one network (or omit networks)", "[]"),
    ("except-outside-cidr",
     network(networks=[{"cidr": "10.0.0.0/8", "except": ["192.168.0.0/16"]}]), EN,
     "spec.networks[0].except[0]", "a network inside 10.0.0.0/8", '"192.168.0.0/16"'),
    ("except-other-family", network(networks=[{"cidr": "10.0.0.0/8", "except": ["fd00::/8"]}]),
     EN, "spec.networks[0].except[0]", "a network inside 10.0.0.0/8", '"fd00::/8"'),
    ("except-whole-cidr", network(networks=[{"cidr": "10.0.0.0/8", "except": ["10.0.0.0/8"]}]),
     EN, "spec.networks[0].except[0]", "a network smaller than 10.0.0.0/8 (not all of it)",
     '"10.0.0.0/8"'),
    ("bad-cidr", network(networks=[{"cidr": "10.0.0.0/33"}]), EN, "spec.networks[0].cidr",
     "a CIDR or IP address (10.0.0.0/8, 192.0.2.1, ::/0)", '"10.0.0.0/33"'),
    ("bad-except-text", network(networks=[{"cidr": "10.0.0.0/8", "except": ["ten"]}]), EN,
     "spec.networks[0].except[0]", "a CIDR or IP address (10.0.0.0/8, 192.0.2.1, ::/0)",
     '"ten"'),
    ("cidr-missing", network(networks=[{"except": ["10.0.0.0/8"]}]), EN,
     "spec.networks[0].cidr", "a value (required)", "nothing"),
    ("traffic-policy-bad", network(trafficPolicy="Block"), EN, "spec.trafficPolicy",
     "one of Allow, Deny", '"Block"'),
    ("traffic-policy-missing", with_(network(), lambda d: d["spec"].pop("trafficPolicy")), EN,
     "spec.trafficPolicy", "a value (required)", "nothing"),
    # --- parentRef.port for EgressNetwork parents (linkerd-egress.md 4.2)
    ("http-en-parent-no-port", with_(route(), _parent(port=None)), R, "spec.parentRefs[0].port",
     EN_PORT, "nothing"),
    ("kind-case-insensitive-no-port", with_(route(), _parent(port=None, kind="egressnetwork")), R,
     "spec.parentRefs[0].port", EN_PORT, "nothing"),
    ("linkerd-http-en-parent-no-port", with_(linkerd(), _parent(port=None)), R,
     "spec.parentRefs[0].port", EN_PORT, "nothing"),
    ("grpc-en-parent-no-port", with_(grpc(), _parent(port=None)), "GRPCRoute egress-test/grpc",
     "spec.parentRefs[0].port", EN_PORT, "nothing"),
    ("tls-en-parent-no-port", with_(l4("TLSRoute", [{"backendRefs": [EN_BACKEND]}]),
                                    _parent(port=None)),
     "TLSRoute egress-test/tls-egress", "spec.parentRefs[0].port", EN_PORT, "nothing"),
    # --- TLSRoute / TCPRoute shape (linkerd-egress.md 4.8)
    ("tls-two-rules", l4("TLSRoute", [{"backendRefs": [EN_BACKEND]}] * 2),
     "TLSRoute egress-test/tls-egress", "spec.rules",
     "exactly 1 rule (Linkerd accepts a single rule per TLSRoute)", "2"),
    ("tcp-two-rules", l4("TCPRoute", [{"backendRefs": [EN_BACKEND]}] * 2),
     "TCPRoute egress-test/tcp", "spec.rules",
     "exactly 1 rule (Linkerd accepts a single rule per TCPRoute)", "2"),
    ("tcp-no-rules", l4("TCPRoute", []), "TCPRoute egress-test/tcp", "spec.rules",
     "at least 1 item", "0"),
    ("tls-rules-missing", with_(l4("TLSRoute", []), lambda d: d["spec"].pop("rules")),
     "TLSRoute egress-test/tls-egress", "spec.rules", "a value (required)", "nothing"),
    ("tls-rule-without-backend", l4("TLSRoute", [{}]), "TLSRoute egress-test/tls-egress",
     "spec.rules[0].backendRefs", "a value (required)", "nothing"),
    ("tls-rule-empty-backends", l4("TLSRoute", [{"backendRefs": []}]),
     "TLSRoute egress-test/tls-egress", "spec.rules[0].backendRefs", "at least 1 item",
     "0"),
    # --- CRD schema constraints
    ("path-no-leading-slash", http(matches=[{"path": {"value": "get"}}]), R, f"{M0}.path",
     f"value must be an absolute path and start with '/' when type one of {EXACT_PREFIX} "
     "(CRD rule)", '{"type": "PathPrefix", "value": "get"}'),
    ("exact-path-no-leading-slash", http(matches=[{"path": {"type": "Exact", "value": "get"}}]),
     R, f"{M0}.path", f"value must be an absolute path and start with '/' when type one of "
     f"{EXACT_PREFIX} (CRD rule)", '{"type": "Exact", "value": "get"}'),
    ("linkerd-path-no-leading-slash", linkerd(matches=[{"path": {"value": "get"}}]), R,
     f"{M0}.path.value", 'an absolute path starting with "/"', '"get"'),
    ("path-double-slash", http(matches=[{"path": {"value": "/a//b"}}]), R, f"{M0}.path",
     f"must not contain '//' when type one of {EXACT_PREFIX} (CRD rule)",
     '{"type": "PathPrefix", "value": "/a//b"}'),
    ("path-dot-end", http(matches=[{"path": {"value": "/a/."}}]), R, f"{M0}.path",
     f"must not end with '/.' when type one of {EXACT_PREFIX} (CRD rule)",
     '{"type": "PathPrefix", "value": "/a/."}'),
    ("path-bad-char", http(matches=[{"path": {"value": "/a b"}}]), R, f"{M0}.path",
     "must only contain valid characters (matching ^(?:[-A-Za-z0-9/._~!$&'()*+,;=:@]|"
     f"[%][0-9a-fA-F]{{2}})+$) for types {EXACT_PREFIX} (CRD rule)",
     '{"type": "PathPrefix", "value": "/a b"}'),
    ("path-type-bad", http(matches=[{"path": {"type": "Prefix", "value": "/"}}]), R,
     f"{M0}.path.type", "one of Exact, PathPrefix, RegularExpression", '"Prefix"'),
    ("hostname-uppercase", route(hostnames=["HTTPBIN.org"]), R, "spec.hostnames[0]", CRD_HOST,
     '"HTTPBIN.org"'),
    # Gateway API's prose ("IPs are not allowed"); the CRD's pattern lets a dotted quad by.
    ("hostname-ip", route(hostnames=["192.0.2.1"]), R, "spec.hostnames[0]",
     "a hostname, not an IP address", '"192.0.2.1"'),
    ("hostname-inner-wildcard", route(hostnames=["foo.*.org"]), R, "spec.hostnames[0]", CRD_HOST,
     '"foo.*.org"'),
    ("tls-hostname-bad", with_(l4("TLSRoute", [{"backendRefs": [EN_BACKEND]}]),
                               lambda d: d["spec"].update(hostnames=["-bad.org"])),
     "TLSRoute egress-test/tls-egress", "spec.hostnames[0]", CRD_HOST, '"-bad.org"'),
    ("too-many-hostnames", route(hostnames=[f"h{i}.org" for i in range(17)]), R,
     "spec.hostnames", "at most 16 items", "17"),
    ("too-many-rules", route(rules=[{}] * 17), R, "spec.rules", "at most 16 items", "17"),
    ("too-many-linkerd-matches", linkerd(matches=[{}] * 9), R, "spec.rules[0].matches",
     "at most 8 items", "9"),
    ("method-lowercase", http(matches=[{"method": "get"}]), R, f"{M0}.method",
     "one of GET, HEAD, POST, PUT, DELETE, CONNECT, OPTIONS, TRACE, PATCH", '"get"'),
    ("header-type-bad",
     http(matches=[{"headers": [{"name": "a", "value": "b", "type": "Prefix"}]}]), R,
     f"{M0}.headers[0].type", "one of Exact, RegularExpression", '"Prefix"'),
    ("header-value-missing", http(matches=[{"headers": [{"name": "a"}]}]), R,
     f"{M0}.headers[0].value", "a value (required)", "nothing"),
    ("header-name-bad", http(matches=[{"headers": [{"name": "a b", "value": "1"}]}]), R,
     f"{M0}.headers[0].name", "an HTTP header name (RFC 7230 token)", '"a b"'),
    ("service-backend-without-port", http(backendRefs=[{"name": "internal-egress"}]), R,
     "spec.rules[0].backendRefs[0]", "Must have port for Service reference (CRD rule)",
     '{"group": "", "kind": "Service", "name": "internal-egress", "weight": 1}'),
    ("redirect-status-307", _redirect(statusCode=307), R, f"{F0}.requestRedirect.statusCode",
     "one of 301, 302", "307"),
    ("redirect-scheme-bad", _redirect(scheme="ftp"), R, f"{F0}.requestRedirect.scheme",
     "one of http, https", '"ftp"'),
    ("redirect-path-value-missing", _redirect(path={"type": "ReplaceFullPath"}), R,
     f"{F0}.requestRedirect.path",
     "replaceFullPath must be specified when type is set to 'ReplaceFullPath' (CRD rule)",
     '{"type": "ReplaceFullPath"}'),
    ("redirect-with-backends",
     http(filters=[{"type": "RequestRedirect", "requestRedirect": {}}],
          backendRefs=[{"name": "s", "port": 80}]),
     R, "spec.rules[0]", "RequestRedirect filter must not be used together with backendRefs "
     "(CRD rule)", '{"backendRefs": [{"group": "", "kind": "Service", "name": "s", "port": 80, '
     '"weight": 1}], "filters": [{"requestRedire...'),
    ("filter-config-missing", http(filters=[{"type": "RequestRedirect"}]), R, F0,
     "filter.requestRedirect must be specified for RequestRedirect filter.type (CRD rule)",
     '{"type": "RequestRedirect"}'),
    ("filter-type-unknown", http(filters=[{"type": "Teleport"}]), R, f"{F0}.type",
     "one of RequestHeaderModifier, ResponseHeaderModifier, RequestMirror, RequestRedirect, "
     "URLRewrite, ExtensionRef", '"Teleport"'),
    # CORS is not a filter type of Gateway API v1.2.1 (later versions add it).
    ("filter-type-cors", http(filters=[{"type": "CORS"}]), R, f"{F0}.type",
     "one of RequestHeaderModifier, ResponseHeaderModifier, RequestMirror, RequestRedirect, "
     "URLRewrite, ExtensionRef", '"CORS"'),
    ("filter-repeated",
     http(filters=[{"type": "RequestHeaderModifier", "requestHeaderModifier": {}}] * 2), R,
     "spec.rules[0].filters", "RequestHeaderModifier filter cannot be repeated (CRD rule)",
     '[{"requestHeaderModifier": {}, "type": "RequestHeaderModifier"}, {"requestHeaderModifier": '
     '{}, "type": "RequestHeader...'),
    ("linkerd-rule-response-modifier",
     linkerd(filters=[{"type": "ResponseHeaderModifier"}]), R,
     f"{F0}.type", "one of RequestHeaderModifier, RequestRedirect", '"ResponseHeaderModifier"'),
    ("grpc-method-neither", grpc(matches=[{"method": {"type": "Exact"}}]),
     "GRPCRoute egress-test/grpc", f"{M0}.method",
     "One or both of 'service' or 'method' must be specified (CRD rule)", '{"type": "Exact"}'),
    ("grpc-method-bad-name", grpc(matches=[{"method": {"service": "pkg.Echo", "method": "a/b"}}]),
     "GRPCRoute egress-test/grpc", f"{M0}.method", "method must only contain valid characters "
     "(matching ^[A-Za-z_][A-Za-z_0-9]*$) (CRD rule)",
     '{"method": "a/b", "service": "pkg.Echo", "type": "Exact"}'),
]  # fmt: skip


@pytest.mark.parametrize(
    ("doc", "obj", "path", "expected", "found"),
    [c[1:] for c in REJECTIONS],
    ids=[c[0] for c in REJECTIONS],
)
def test_rejections(doc: Any, obj: str | None, path: str, expected: str, found: str) -> None:
    problems = problems_of(doc, source_name="egress.yaml")
    assert problems == [
        Problem(
            source="egress.yaml",
            document=1,
            obj=obj,
            path=path,
            expected=expected,
            found=found,
        )
    ]


def test_rejection_message_reads_like_the_style_guide() -> None:
    doc = with_(route(), _parent(port=None))
    with pytest.raises(ManifestError) as info:
        load_manifests([guide.NAMESPACE, doc], source_name="egress.yaml")
    assert str(info.value) == (
        "egress.yaml: document 2 (HTTPRoute egress-test/httpbin-get): spec.parentRefs[0].port: "
        "expected a port (required when the parent is an EgressNetwork), found nothing"
    )


@pytest.mark.parametrize(
    ("text", "document", "path", "found"),
    [
        ("a: b: c\n", 1, "line 1, column 5", "mapping values are not allowed here"),
        (
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\nkind: [1, 2\nb: 3\n",
            2,
            "line 6, column 2",
            "expected ',' or ']', but got ':' (while parsing a flow sequence)",
        ),
        (
            "\tkind: Pod\n",
            1,
            "line 1, column 1",
            "found character '\\t' that cannot start any token (while scanning for the next token)",
        ),
    ],
    ids=["mapping-in-value", "unclosed-flow-in-doc-2", "tab"],
)
def test_malformed_yaml(text: str, document: int, path: str, found: str) -> None:
    assert problems_of(text) == [
        Problem(
            source="<string>",
            document=document,
            obj=None,
            path=path,
            expected="valid YAML",
            found=found,
        )
    ]


def test_every_problem_in_a_document_is_reported() -> None:
    doc = with_(
        http(matches=[{"path": {"value": "get"}, "method": "get"}]),
        _parent(port="eighty"),
    )
    paths = [p.path for p in problems_of(doc)]
    # In document order: parentRefs is written before rules.
    assert paths == ["spec.parentRefs[0].port", f"{M0}.path", f"{M0}.method"]


def test_batch_with_one_bad_document_lists_only_its_problems() -> None:
    bad = with_(route(), _parent(port=None))
    text = "\n---\n".join([guide.NAMESPACE, guide.EGRESS_NETWORK, _yaml(bad), guide.CLIENT_POD])
    problems = problems_of(text, source_name="egress.yaml")
    assert [(p.source, p.document, p.obj, p.path) for p in problems] == [
        ("egress.yaml", 3, R, "spec.parentRefs[0].port")
    ]


# --------------------------------------------------------- not errors: recorded

MIRROR = {"backendRef": {"name": "mirror", "port": 80}}
EXTENSION = {"group": "example.com", "kind": "Teleport", "name": "t"}

# (id, document, unsupported)
UNSUPPORTED: list[tuple[str, dict[str, Any], tuple[str, ...]]] = [
    ("url-rewrite", http(filters=[{"type": "URLRewrite", "urlRewrite": {}}]),
     (f"{F0}: URLRewrite filter",)),
    ("request-mirror", http(filters=[{"type": "RequestMirror", "requestMirror": MIRROR}]),
     (f"{F0}: RequestMirror filter",)),
    ("extension-ref", http(filters=[{"type": "ExtensionRef", "extensionRef": EXTENSION}]),
     (f"{F0}: ExtensionRef filter",)),
    ("backend-mirror",
     http(backendRefs=[{"name": "s", "port": 80,
                        "filters": [{"type": "RequestMirror", "requestMirror": MIRROR}]}]),
     ("spec.rules[0].backendRefs[0].filters[0]: RequestMirror filter",)),
    ("grpc-response-modifier",
     grpc(filters=[{"type": "ResponseHeaderModifier", "responseHeaderModifier": {}}]),
     (f"{F0}: ResponseHeaderModifier filter",)),
    ("grpc-mirror", grpc(filters=[{"type": "RequestMirror", "requestMirror": MIRROR}]),
     (f"{F0}: RequestMirror filter",)),
    ("grpc-extension-ref", grpc(filters=[{"type": "ExtensionRef", "extensionRef": EXTENSION}]),
     (f"{F0}: ExtensionRef filter",)),
    ("grpc-regex-method",
     grpc(matches=[{"method": {"type": "RegularExpression", "service": "pkg\\..*"}}]),
     (f"{M0}.method: RegularExpression method match",)),
    ("supported-filters-none",
     http(filters=[{"type": "RequestHeaderModifier",
                    "requestHeaderModifier": {"set": [{"name": "x", "value": "1"}]}},
                   {"type": "ResponseHeaderModifier",
                    "responseHeaderModifier": {"remove": ["server"]}}]),
     ()),
    ("grpc-request-modifier-none",
     grpc(filters=[{"type": "RequestHeaderModifier", "requestHeaderModifier": {}}]), ()),
]  # fmt: skip


@pytest.mark.parametrize(
    ("doc", "want"), [c[1:] for c in UNSUPPORTED], ids=[c[0] for c in UNSUPPORTED]
)
def test_unconvertible_filters_are_recorded_not_rejected(
    doc: dict[str, Any], want: tuple[str, ...]
) -> None:
    obj = one(doc)
    assert isinstance(obj, HTTPRoute | GRPCRoute)
    assert obj.unsupported == want


def test_supported_filters_are_parsed() -> None:
    obj = one(
        http(
            filters=[
                {
                    "type": "RequestHeaderModifier",
                    "requestHeaderModifier": {
                        "set": [{"name": "x-a", "value": "1"}],
                        "add": [{"name": "x-b", "value": "2"}],
                        "remove": ["x-c"],
                    },
                },
                {
                    "type": "RequestRedirect",
                    "requestRedirect": {
                        "scheme": "https",
                        "hostname": "example.com",
                        "port": 8443,
                        "statusCode": 301,
                        "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/v2"},
                    },
                },
            ]
        )
    )
    assert isinstance(obj, HTTPRoute)
    modifier, redirect = obj.rules[0].filters
    assert modifier.request_header_modifier is not None
    assert modifier.request_header_modifier.set == (("x-a", "1"),)
    assert modifier.request_header_modifier.add == (("x-b", "2"),)
    assert modifier.request_header_modifier.remove == ("x-c",)
    assert redirect.request_redirect is not None
    r = redirect.request_redirect
    assert (r.scheme, r.hostname, r.port, r.status_code) == ("https", "example.com", 8443, 301)
    assert (r.path_type, r.path_value) == ("ReplacePrefixMatch", "/v2")


@pytest.mark.parametrize(
    "doc",
    [
        http(matches=[{"path": {"type": "RegularExpression", "value": "get.*"}}]),
        route(hostnames=["*.httpbin.org", "httpbin.org"]),
        network(
            networks=[{"cidr": "10.1.0.0/24"}, {"cidr": "10.1.1.0/24", "except": ["10.1.1.0/28"]}]
        ),
        network(networks=[{"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"]}, {"cidr": "::/0"}]),
        with_(route(), _parent(port=None, kind="Service", group="", name="svc")),
        with_(route(), _parent(port=None, group=None)),
    ],
    ids=[
        "regex-path-without-slash",
        "wildcard-hostname",
        "admitted-networks-t11",
        "all-but-cluster",
        "service-parent-without-port",
        "en-kind-without-group-is-a-gateway-parent",
    ],
)
def test_accepted(doc: dict[str, Any]) -> None:
    assert one(doc).name


# ------------------------------------------------------------ inputs and batches


def _yaml(doc: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(doc, sort_keys=False)


KIT_MANIFESTS = [n for n in guide.ALL_MANIFESTS if not n.endswith("_V1ALPHA2")]


@pytest.mark.parametrize("name", KIT_MANIFESTS, ids=KIT_MANIFESTS)
def test_guide_manifest_loads(name: str) -> None:
    objects = load_manifests(guide.ALL_MANIFESTS[name])
    assert objects
    assert all(o.namespace in (None, guide.NAMESPACE_NAME) for o in objects)


def test_guide_objects() -> None:
    objs = load_manifests(
        [
            guide.NAMESPACE,
            guide.EGRESS_NETWORK,
            guide.CLIENT_POD,
            guide.HTTPBIN_GET_ROUTE,
            guide.TLS_EGRESS_ROUTE,
            guide.INTERNAL_EGRESS,
            guide.UNENCRYPTED_HTTP_ROUTE,
        ]
    )
    assert [o.display for o in objs] == [
        "Namespace egress-test",
        "EgressNetwork egress-test/all-egress-traffic",
        "Pod egress-test/client",
        "HTTPRoute egress-test/httpbin-get",
        "TLSRoute egress-test/tls-egress",
        "Service egress-test/internal-egress",
        "Deployment egress-test/internal-egress",
        "HTTPRoute egress-test/unencrypted-http",
    ]
    ns, en, pod, get, tls, svc, deploy, unencrypted = objs
    assert isinstance(en, EgressNetwork) and en.traffic_policy == "Allow"
    assert isinstance(pod, Pod)
    assert pod.metadata.annotation("config.linkerd.io/proxy-metrics-hostname-labels") == "true"
    assert pod.containers[0].command == ("sh", "-c", "sleep infinity")
    assert isinstance(get, HTTPRoute)
    assert get.parent_refs == (
        ParentRef(
            group="policy.linkerd.io",
            kind="EgressNetwork",
            namespace=NS,
            name="all-egress-traffic",
            port=80,
        ),
    )
    assert get.parent_refs[0].is_egress_network
    # The guide's "/get" has no type: it is a prefix match (linkerd-egress.md 4.5).
    assert get.rules == (
        HTTPRouteRule(matches=(HTTPRouteMatch(path=PathMatch(type="PathPrefix", value="/get")),)),
    )
    assert isinstance(tls, TLSRoute) and tls.hostnames == ("httpbin.org",)
    assert tls.rules[0].backend_refs[0].is_egress_network
    assert tls.rules[0].backend_refs[0].namespace == NS
    assert isinstance(svc, Service) and svc.ports[0].port == 80
    assert isinstance(deploy, Deployment) and deploy.template.containers[0].name == "legacy-app"
    assert isinstance(unencrypted, HTTPRoute)
    assert unencrypted.rules[0].backend_refs[0].is_service
    assert isinstance(ns, Namespace)


def test_guide_deny_patch_and_final_tls_route() -> None:
    assert guide.DENY_PATCH == {"spec": {"trafficPolicy": "Deny"}}
    tls_all = one(guide.TLS_EGRESS_ROUTE_ALL)
    assert isinstance(tls_all, TLSRoute) and tls_all.hostnames == ()


@pytest.mark.parametrize(
    ("v1", "v1alpha2"),
    [
        (guide.HTTPBIN_GET_ROUTE, guide.HTTPBIN_GET_ROUTE_V1ALPHA2),
        (guide.UNENCRYPTED_HTTP_ROUTE, guide.UNENCRYPTED_HTTP_ROUTE_V1ALPHA2),
    ],
    ids=["httpbin-get", "unencrypted-http"],
)
def test_guide_v1alpha2_text_is_refused_and_differs_only_in_api_version(
    v1: str, v1alpha2: str
) -> None:
    # The guide's literal text: a cluster with Gateway API v1.2.1 does not serve HTTPRoute
    # v1alpha2 (linkerd-egress.md 7.4), and apply says which versions it does serve.
    (problem,) = problems_of(v1alpha2, source_name="guide.yaml")
    assert (problem.document, problem.path, problem.expected) == (1, "apiVersion",
                                                                  HTTPROUTE_VERSIONS)  # fmt: skip
    assert problem.found.startswith('"gateway.networking.k8s.io/v1alpha2" (no matches for kind')
    fixed = v1alpha2.replace(  # guide.py marks the changed line with a YAML comment
        "gateway.networking.k8s.io/v1alpha2\n", f"gateway.networking.k8s.io/v1{guide.V1_COMMENT}\n"
    )
    assert fixed == v1
    assert one(v1).api_version == "gateway.networking.k8s.io/v1"


def test_multi_document_text_skips_empty_documents_but_counts_them() -> None:
    bad = with_(route(), _parent(port=None))
    text = f"---\n{guide.NAMESPACE}---\n---\n{_yaml(bad)}"
    problems = problems_of(text)
    assert [(p.source, p.document) for p in problems] == [("<string>", 3)]
    good = f"---\n{guide.NAMESPACE}---\n---\n{guide.EGRESS_NETWORK}---\n"
    assert [o.kind for o in load_manifests(good)] == ["Namespace", "EgressNetwork"]
    assert [o.source for o in load_manifests(good)] == [
        Source(name="<string>", document=1),
        Source(name="<string>", document=3),
    ]


def test_file_input(tmp_path: Path) -> None:
    path = tmp_path / "egress.yaml"
    path.write_text(guide.INTERNAL_EGRESS, encoding="utf-8")
    objs = load_manifests(path)
    assert [o.kind for o in objs] == ["Service", "Deployment"]
    assert objs[1].source == Source(name=str(path), document=2)
    bad = tmp_path / "bad.yaml"
    bad.write_text(guide.NAMESPACE + "---\n" + _yaml(with_(route(), _parent(port=0))))
    assert [(p.source, p.document) for p in problems_of(bad)] == [(str(bad), 2)]
    assert [p.source for p in problems_of(bad, source_name="bad")] == ["bad"]


def test_missing_file_is_a_problem(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    (problem,) = problems_of(missing)
    assert (problem.source, problem.document, problem.expected) == (
        str(missing),
        None,
        "a readable UTF-8 YAML file",
    )
    assert problem.found == "No such file or directory"


def test_dict_and_mixed_list_input(tmp_path: Path) -> None:
    path = tmp_path / "pod.yaml"
    path.write_text(guide.CLIENT_POD, encoding="utf-8")
    objs = load_manifests((network(), guide.NAMESPACE, path, route()))
    assert [o.kind for o in objs] == ["EgressNetwork", "Namespace", "Pod", "HTTPRoute"]
    assert [o.source for o in objs] == [
        Source(name="<dict>", document=1),
        Source(name="<string>", document=1),
        Source(name=str(path), document=1),
        Source(name="<dict>", document=2),
    ]
    assert objs[0].raw == network()


def test_kind_list_items() -> None:
    bad = with_(route(), _parent(port="x"))
    listing = {"apiVersion": "v1", "kind": "List", "items": [network(), bad]}
    (problem,) = problems_of(listing)
    assert (problem.document, problem.path) == (1, "items[1].spec.parentRefs[0].port")
    listing["items"] = [network(), route()]
    assert [o.kind for o in load_manifests(listing)] == ["EgressNetwork", "HTTPRoute"]


def test_later_duplicate_wins() -> None:
    allow = with_(network(), lambda d: d["spec"].update(trafficPolicy="Allow"))
    objs = load_manifests([network(), guide.NAMESPACE, allow])
    assert [o.kind for o in objs] == ["Namespace", "EgressNetwork"]
    assert isinstance(objs[1], EgressNetwork) and objs[1].traffic_policy == "Allow"
    # Same name, different group: two objects (Gateway API vs Linkerd HTTPRoute).
    assert len(load_manifests([route(), linkerd()])) == 2


def test_parse_object() -> None:
    src = Source(name="patch", document=None)
    obj = parse_object(network(), source=src, default_namespace="default")
    assert isinstance(obj, EgressNetwork) and obj.source == src
    with pytest.raises(ManifestError) as info:
        parse_object(network(trafficPolicy="Block"), source=src, default_namespace="default")
    assert str(info.value) == (
        f'patch ({EN}): spec.trafficPolicy: expected one of Allow, Deny, found "Block"'
    )


def test_any_iterable_of_sources() -> None:
    objs = load_manifests(doc for doc in (guide.NAMESPACE, network()))
    assert [o.kind for o in objs] == ["Namespace", "EgressNetwork"]


def test_wrong_source_type_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="not int"):
        load_manifests(42)  # type: ignore[arg-type]


def test_supported_kinds() -> None:
    kinds = supported_kinds()
    assert ("policy.linkerd.io/v1alpha1", "EgressNetwork") in kinds
    assert ("gateway.networking.k8s.io/v1alpha2", "TLSRoute") in kinds
    assert ("policy.linkerd.io/v1beta3", "HTTPRoute") in kinds
    # Gateway API v1.2.1 serves neither HTTPRoute nor GRPCRoute at v1alpha2 any more.
    assert ("gateway.networking.k8s.io/v1alpha2", "HTTPRoute") not in kinds
    assert ("gateway.networking.k8s.io/v1alpha2", "GRPCRoute") not in kinds
    assert len(kinds) == 14


@pytest.mark.parametrize(
    ("text", "path", "meant"),
    [
        (guide.CLIENT_POD.replace("annotations:", "annotation:"), "metadata.annotation",
         "annotations"),
        (guide.NAMESPACE.replace("metadata:", "metdata: {}\nmetadata:"), "metdata", "metadata"),
        (guide.INTERNAL_EGRESS.replace("spec:", "specs: {}\nspec:", 1), "specs", "spec"),
    ],
    ids=["pod-annotation", "namespace-metdata", "service-specs"],
)  # fmt: skip
def test_core_kinds_refuse_unknown_top_level_and_metadata_fields(
    text: str, path: str, meant: str
) -> None:
    (problem,) = problems_of(text, source_name="egress.yaml")
    assert (problem.document, problem.path) == (1, path)
    assert problem.expected.endswith(f'(did you mean "{meant}"?)')
    assert problem.found == f'unknown field "{path}"'


# ------------------------------------------------- mutated manifests: refused, never a crash

SEEDS = [
    *(d for t in guide.ALL_MANIFESTS.values() for d in yaml.safe_load_all(t) if d),
    grpc(matches=[{"method": {"service": "pkg.Echo", "method": "Say"},
                   "headers": [{"name": "x", "value": "1"}]}],
         filters=[{"type": "RequestHeaderModifier",
                   "requestHeaderModifier": {"set": [{"name": "a", "value": "b"}]}}],
         backendRefs=[{"name": "svc", "port": 80}]),
    linkerd("v1alpha1", matches=[{"path": {"value": "/a"}, "method": "GET"}],
            backendRefs=[{"name": "svc", "port": 80}]),
    linkerd("v1beta3", filters=[{"type": "RequestRedirect",
                                 "requestRedirect": {"path": {"type": "ReplaceFullPath",
                                                              "replaceFullPath": "/x"}}}],
            timeouts={"request": "10s"}),
    l4("TCPRoute", [{"backendRefs": [EN_BACKEND]}]),
    _redirect(hostname="example.com", statusCode=301, path={"type": "ReplacePrefixMatch",
                                                            "replacePrefixMatch": "/v2"}),
    network(networks=[{"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}]),
]  # fmt: skip
ODD_VALUES = [None, 0, -1, 70000, "", "x", "/get", True, 1.5, [], {}, [{}], {"a": 1}, ["x"]]


def _places(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _places(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _places(v, (*path, i))
    return out


def _mutated(rng: random.Random) -> dict[str, Any]:
    doc = copy.deepcopy(rng.choice(SEEDS))
    for _ in range(rng.randint(1, 3)):
        *parents, last = rng.choice(_places(doc)[1:])
        parent = doc
        for key in parents:
            parent = parent[key]
        if rng.random() < 0.6:
            parent[last] = copy.deepcopy(rng.choice(ODD_VALUES))
        elif isinstance(parent, dict):
            parent.pop(last)
    return doc


def test_a_mutated_manifest_is_loaded_or_refused_never_a_crash() -> None:
    # The parsers trust what the CRD validation admitted: a seeded fuzz makes sure nothing
    # it lets through trips them up (a crash would be a KeyError or TypeError here).
    rng = random.Random(10)
    outcomes = {"loaded": 0, "refused": 0}
    for _ in range(600):
        doc = _mutated(rng)
        try:
            load_manifests(doc)
        except ManifestError as exc:
            assert exc.problems and all(p.expected and p.found for p in exc.problems)
            outcomes["refused"] += 1
        else:
            outcomes["loaded"] += 1
    assert outcomes["loaded"] > 20 and outcomes["refused"] > 300, outcomes
