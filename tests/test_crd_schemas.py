"""The pinned CRDs in egresskit/crds (see its README) as the source of truth.

``egresskit.manifests.crd_validation.validate`` admits what a real API server with these CRDs
admits (schema, strict fields, CEL rules). Checked here: the kit's own manifests pass; a
table of mistakes (typos, wrong types, enum values, missing fields, CEL rules, versions) is
refused with the field named; every CEL rule compiles with functions the library has; and
the defaults and enums the loader's model relies on still equal the CRDs' own.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from egresskit import guide
from egresskit.errors import ManifestError
from egresskit.manifests import load_manifests, supported_kinds
from egresskit.manifests.cel_rules import KNOWN_FUNCTIONS, program, rules_in
from egresskit.manifests.crd_validation import FieldError, validate
from egresskit.manifests.crds import crd_index, served_api_versions
from egresskit.manifests.model import (
    GATEWAY_GROUP,
    POLICY_GROUP,
    GRPCRoute,
    HTTPRoute,
    TCPRoute,
    TLSRoute,
)
from egresskit.manifests.route_schema import (
    FILTER_FIELDS,
    GATEWAY_GRPC,
    GATEWAY_HTTP,
    LINKERD_HTTP,
)

Schemas = dict[tuple[str, str], dict[str, dict[str, Any]]]


@pytest.fixture(scope="module")
def schemas() -> Schemas:
    """(group, kind) -> served version -> openAPIV3Schema."""
    return {key: crd.schemas for key, crd in crd_index().items()}


def _docs(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def _crd_docs() -> list[tuple[str, int]]:
    """(constant name, document index) of every guide document backed by a CRD."""
    out = []
    for name, text in guide.ALL_MANIFESTS.items():
        if name.endswith("_V1ALPHA2"):
            continue  # not served: see test_guide_v1alpha2_httproute_is_not_served
        for i, doc in enumerate(_docs(text)):
            if "/" in doc["apiVersion"] and doc["apiVersion"] != "apps/v1":
                out.append((name, i))
    return out


@pytest.mark.parametrize(("name", "index"), _crd_docs(), ids=[n for n, _ in _crd_docs()])
def test_guide_manifest_validates_against_its_crd(name: str, index: int) -> None:
    doc = _docs(guide.ALL_MANIFESTS[name])[index]
    assert validate(doc) == []


def test_core_kinds_are_not_this_validators_job() -> None:
    assert validate(_docs(guide.CLIENT_POD)[0]) == []
    assert validate({"kind": "HTTPRoute"}) == []  # no apiVersion: the loader says so


def test_guide_v1alpha2_httproute_is_not_served(schemas: Schemas) -> None:
    # Gateway API v1.2.1 serves HTTPRoute v1 and v1beta1 only (linkerd-egress.md 7.4).
    assert sorted(schemas[(GATEWAY_GROUP, "HTTPRoute")]) == ["v1", "v1beta1"]
    literal = _docs(guide.HTTPBIN_GET_ROUTE_V1ALPHA2)[0]
    assert validate(literal) == [
        FieldError(
            path="apiVersion",
            expected="a version the HTTPRoute CRD serves: gateway.networking.k8s.io/v1, "
            "gateway.networking.k8s.io/v1beta1",
            found='"gateway.networking.k8s.io/v1alpha2" (no matches for kind "HTTPRoute" in '
            'version "gateway.networking.k8s.io/v1alpha2")',
        )
    ]
    ours = _docs(guide.HTTPBIN_GET_ROUTE)[0]
    assert validate(ours) == []
    # Everything but apiVersion is the guide's text.
    assert {**literal, "apiVersion": ours["apiVersion"]} == ours


def test_loadable_versions_are_exactly_the_served_ones() -> None:
    crd_kinds = {kind for _, kind in served_api_versions()}
    ours = {(v, k) for v, k in supported_kinds() if k in crd_kinds}
    assert ours == set(served_api_versions())


def test_every_cel_rule_compiles_with_known_functions() -> None:
    rules = [
        r["rule"]
        for crd in crd_index().values()
        for schema in crd.schemas.values()
        for r in rules_in(schema)
    ]
    assert len(rules) > 150  # Gateway API v1.2.1 has ~200 (counted per served version)
    for rule in rules:
        called = {f for f in program(rule).functions() if f[0] not in "_@!"}
        assert called <= KNOWN_FUNCTIONS, rule
        assert "oldSelf" not in rule  # transition rules would need the stored object


# ------------------------------------------------------------ the table of mistakes

GW = GATEWAY_GROUP
EN_PARENT = {"name": "all-egress-traffic", "kind": "EgressNetwork", "group": POLICY_GROUP,
             "namespace": "egress-test", "port": 80}  # fmt: skip
GET_ROUTE = _docs(guide.HTTPBIN_GET_ROUTE)[0]
TLS_ROUTE = _docs(guide.TLS_EGRESS_ROUTE)[0]
NETWORK = _docs(guide.EGRESS_NETWORK)[0]
UNENCRYPTED = _docs(guide.UNENCRYPTED_HTTP_ROUTE)[0]


def edit(doc: dict[str, Any], change: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    change(out)
    return out


def rule0(doc: dict[str, Any]) -> dict[str, Any]:
    rule: dict[str, Any] = doc["spec"]["rules"][0]
    return rule


def match0(doc: dict[str, Any]) -> dict[str, Any]:
    match: dict[str, Any] = rule0(doc)["matches"][0]
    return match


def grpc(**rule: Any) -> dict[str, Any]:
    return {"apiVersion": f"{GW}/v1", "kind": "GRPCRoute",
            "metadata": {"name": "g", "namespace": "egress-test"},
            "spec": {"parentRefs": [EN_PARENT], "rules": [rule]}}  # fmt: skip


R0 = "spec.rules[0]"
M0 = "spec.rules[0].matches[0]"
DID_YOU_MEAN = 'a field the {} CRD knows (did you mean "{}"?)'

# (id, document, field path, expected): each refused by a real API server with these CRDs.
MISTAKES: list[tuple[str, dict[str, Any], str, str]] = [
    # --- typos: unknown fields, with the nearest known one (strict field validation)
    ("typo-hostname", edit(GET_ROUTE, lambda d: d["spec"].update(hostname=["httpbin.org"])),
     "spec.hostname", DID_YOU_MEAN.format("HTTPRoute", "hostnames")),
    ("typo-parentref", edit(GET_ROUTE, lambda d: d["spec"].update(parentRef=[EN_PARENT])),
     "spec.parentRef", DID_YOU_MEAN.format("HTTPRoute", "parentRefs")),
    ("typo-match", edit(GET_ROUTE, lambda d: rule0(d).update(match=[{}])),
     f"{R0}.match", DID_YOU_MEAN.format("HTTPRoute", "matches")),
    ("typo-backendref", edit(UNENCRYPTED, lambda d: rule0(d).update(backendRef=[])),
     f"{R0}.backendRef", DID_YOU_MEAN.format("HTTPRoute", "backendRefs")),
    ("typo-path-case", edit(GET_ROUTE, lambda d: match0(d).update(Path={"value": "/ip"})),
     f"{M0}.Path", DID_YOU_MEAN.format("HTTPRoute", "path")),
    ("typo-traffic-policy", edit(NETWORK, lambda d: d["spec"].update(trafficpolicy="Deny")),
     "spec.trafficpolicy", DID_YOU_MEAN.format("EgressNetwork", "trafficPolicy")),
    ("typo-metadata-labels", edit(GET_ROUTE, lambda d: d["metadata"].update(lables={"a": "b"})),
     "metadata.lables", DID_YOU_MEAN.format("HTTPRoute", "labels")),
    ("tls-rule-with-path-matches",
     edit(TLS_ROUTE, lambda d: rule0(d).update(matches=[{"path": {"value": "/get"}}])),
     f"{R0}.matches", "a field the TLSRoute CRD knows"),
    ("unknown-top-level", edit(NETWORK, lambda d: d.update(specs={})),
     "specs", DID_YOU_MEAN.format("EgressNetwork", "spec")),
    # --- wrong types
    ("port-string", edit(GET_ROUTE, lambda d: d["spec"]["parentRefs"][0].update(port="80")),
     "spec.parentRefs[0].port", "an integer 1-65535"),
    ("hostnames-string", edit(GET_ROUTE, lambda d: d["spec"].update(hostnames="httpbin.org")),
     "spec.hostnames", "a list"),
    ("rules-mapping", edit(GET_ROUTE, lambda d: d["spec"].update(rules={"matches": []})),
     "spec.rules", "a list"),
    ("weight-float", edit(UNENCRYPTED, lambda d: rule0(d)["backendRefs"][0].update(weight=1.5)),
     f"{R0}.backendRefs[0].weight", "an integer 0-1000000"),
    # --- enum values
    ("path-type-prefix", edit(GET_ROUTE, lambda d: match0(d)["path"].update(type="Prefix")),
     f"{M0}.path.type", "one of Exact, PathPrefix, RegularExpression"),
    ("method-lowercase", edit(GET_ROUTE, lambda d: match0(d).update(method="get")),
     f"{M0}.method", "one of GET, HEAD, POST, PUT, DELETE, CONNECT, OPTIONS, TRACE, PATCH"),
    ("traffic-policy-block", edit(NETWORK, lambda d: d["spec"].update(trafficPolicy="Block")),
     "spec.trafficPolicy", "one of Allow, Deny"),
    ("redirect-status-307",
     edit(GET_ROUTE, lambda d: rule0(d).update(filters=[
         {"type": "RequestRedirect", "requestRedirect": {"statusCode": 307}}])),
     f"{R0}.filters[0].requestRedirect.statusCode", "one of 301, 302"),
    # --- bounds, patterns, formats
    ("port-zero", edit(GET_ROUTE, lambda d: d["spec"]["parentRefs"][0].update(port=0)),
     "spec.parentRefs[0].port", "an integer 1-65535"),
    ("hostname-uppercase", edit(GET_ROUTE, lambda d: d["spec"].update(hostnames=["HTTPBIN.org"])),
     "spec.hostnames[0]", 'a lowercase RFC 1123 hostname, optionally with a leading "*."'),
    ("timeout-bad-duration",
     edit(GET_ROUTE, lambda d: rule0(d).update(timeouts={"request": "10 seconds"})),
     f"{R0}.timeouts.request", "a Gateway API duration such as 10s, 1h30m or 500ms"),
    ("too-many-hostnames",
     edit(GET_ROUTE, lambda d: d["spec"].update(hostnames=[f"h{i}.org" for i in range(17)])),
     "spec.hostnames", "at most 16 items"),
    ("duplicate-header-match",
     edit(GET_ROUTE, lambda d: match0(d).update(headers=[{"name": "x", "value": "1"}] * 2)),
     f"{M0}.headers[1]", "a unique item"),
    # --- missing required fields
    ("parent-name-missing", edit(GET_ROUTE, lambda d: d["spec"]["parentRefs"][0].pop("name")),
     "spec.parentRefs[0].name", "a value (required)"),
    ("traffic-policy-missing", edit(NETWORK, lambda d: d["spec"].pop("trafficPolicy")),
     "spec.trafficPolicy", "a value (required)"),
    ("tls-rules-missing", edit(TLS_ROUTE, lambda d: d["spec"].pop("rules")),
     "spec.rules", "a value (required)"),
    # v1.2.1 makes backendRefs optional but never empty (minItems 1).
    ("tls-backendrefs-empty", edit(TLS_ROUTE, lambda d: rule0(d).update(backendRefs=[])),
     f"{R0}.backendRefs", "at least 1 item"),
    ("header-value-missing", edit(GET_ROUTE, lambda d: match0(d).update(headers=[{"name": "x"}])),
     f"{M0}.headers[0].value", "a value (required)"),
    # --- CEL rules (x-kubernetes-validations)
    ("backend-request-longer-than-request",
     edit(GET_ROUTE, lambda d: rule0(d).update(timeouts={"request": "5s",
                                                         "backendRequest": "10s"})),
     f"{R0}.timeouts",
     "backendRequest timeout cannot be longer than request timeout (CRD rule)"),
    ("path-without-slash", edit(GET_ROUTE, lambda d: match0(d)["path"].update(value="get")),
     f"{M0}.path", "value must be an absolute path and start with '/' when type one of "
     "['Exact', 'PathPrefix'] (CRD rule)"),
    ("service-backend-without-port",
     edit(UNENCRYPTED, lambda d: rule0(d)["backendRefs"][0].pop("port")),
     f"{R0}.backendRefs[0]", "Must have port for Service reference (CRD rule)"),
    ("redirect-with-backends",
     edit(UNENCRYPTED, lambda d: rule0(d).update(filters=[
         {"type": "RequestRedirect", "requestRedirect": {"port": 8080}}])),
     R0, "RequestRedirect filter must not be used together with backendRefs (CRD rule)"),
    ("filter-config-missing",
     edit(GET_ROUTE, lambda d: rule0(d).update(filters=[{"type": "RequestHeaderModifier"}])),
     f"{R0}.filters[0]", "filter.requestHeaderModifier must be specified for "
     "RequestHeaderModifier filter.type (CRD rule)"),
    ("duplicate-rule-names",
     edit(GET_ROUTE, lambda d: d["spec"].update(rules=[{"name": "a"}, {"name": "a"}])),
     "spec.rules", "Rule name must be unique within the route (CRD rule)"),
    ("grpc-method-neither", grpc(matches=[{"method": {"type": "Exact"}}]),
     f"{M0}.method", "One or both of 'service' or 'method' must be specified (CRD rule)"),
    # --- versions the CRD does not serve
    ("httproute-v1alpha2", edit(GET_ROUTE, lambda d: d.update(apiVersion=f"{GW}/v1alpha2")),
     "apiVersion", f"a version the HTTPRoute CRD serves: {GW}/v1, {GW}/v1beta1"),
    ("egressnetwork-v1", edit(NETWORK, lambda d: d.update(apiVersion=f"{POLICY_GROUP}/v1")),
     "apiVersion", f"a version the EgressNetwork CRD serves: {POLICY_GROUP}/v1alpha1"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("doc", "path", "expected"), [m[1:] for m in MISTAKES], ids=[m[0] for m in MISTAKES]
)
def test_mistake_is_refused_naming_the_field(doc: dict[str, Any], path: str, expected: str) -> None:
    errors = validate(doc)
    assert [(e.path, e.expected) for e in errors][:1] == [(path, expected)]
    # The loader refuses it the same way, naming the file and the document.
    with pytest.raises(ManifestError) as info:
        load_manifests([guide.NAMESPACE, doc], source_name="egress.yaml")
    first = info.value.problems[0]
    assert (first.source, first.document, first.path) == ("egress.yaml", 2, path)


def test_mistakes_cover_the_issue() -> None:
    assert len(MISTAKES) >= 27


# --------------------------------------------------------------- default drift


def _at(schema: dict[str, Any], path: str) -> dict[str, Any]:
    """``spec.rules[].matches[].path`` -> that node of the schema."""
    node = schema
    for part in path.split("."):
        items = part.endswith("[]")
        node = node["properties"][part.removesuffix("[]")]
        if items:
            node = node["items"]
    return node


def _route(api: str, kind: str, spec: dict[str, Any]) -> Any:
    doc = {"apiVersion": api, "kind": kind, "metadata": {"name": "r", "namespace": "ns"}}
    return load_manifests({**doc, "spec": spec})[0]


BARE_RULE = {
    "matches": [
        {"headers": [{"name": "h", "value": "v"}], "queryParams": [{"name": "q", "value": "v"}]}
    ],
    "filters": [{"type": "RequestRedirect", "requestRedirect": {"hostname": "example.com"}}],
}


@pytest.mark.parametrize("version", ["v1", "v1beta1"])
def test_gateway_httproute_defaults_match_crd(schemas: Schemas, version: str) -> None:
    schema = schemas[(GATEWAY_GROUP, "HTTPRoute")][version]
    api = f"{GATEWAY_GROUP}/{version}"
    bare = _route(api, "HTTPRoute", {"parentRefs": [{"name": "gw"}]})
    assert isinstance(bare, HTTPRoute)
    rule = bare.rules[0]
    match = rule.matches[0]
    crd_rules = _at(schema, "spec.rules")["default"]
    assert crd_rules == [
        {"matches": [{"path": {"type": match.path.type, "value": match.path.value}}]}
    ]
    assert len(bare.rules) == len(crd_rules)
    assert _at(schema, "spec.rules[].matches")["default"] == [
        {"path": {"type": match.path.type, "value": match.path.value}}
    ]
    assert _at(schema, "spec.rules[].matches[].path.type")["default"] == match.path.type
    assert _at(schema, "spec.rules[].matches[].path.value")["default"] == match.path.value
    ref = bare.parent_refs[0]
    assert _at(schema, "spec.parentRefs[].group")["default"] == ref.group
    assert _at(schema, "spec.parentRefs[].kind")["default"] == ref.kind
    assert "default" not in _at(schema, "spec.parentRefs[].namespace")  # the route's: ours

    route = _route(api, "HTTPRoute", {"rules": [{**BARE_RULE}]})
    assert isinstance(route, HTTPRoute)
    m = route.rules[0].matches[0]
    assert _at(schema, "spec.rules[].matches[].headers[].type")["default"] == m.headers[0].type
    assert _at(schema, "spec.rules[].matches[].queryParams[].type")["default"] == (
        m.query_params[0].type
    )
    redirect = route.rules[0].filters[0].request_redirect
    assert redirect is not None
    status = _at(schema, "spec.rules[].filters[].requestRedirect.statusCode")
    assert status["default"] == redirect.status_code
    assert tuple(status["enum"]) == (301, 302)


BACKEND = {"name": "svc", "port": 80}


@pytest.mark.parametrize(
    ("group", "kind", "version"),
    [
        (GATEWAY_GROUP, "HTTPRoute", "v1"),
        (GATEWAY_GROUP, "GRPCRoute", "v1"),
        (GATEWAY_GROUP, "TLSRoute", "v1alpha2"),
        (GATEWAY_GROUP, "TCPRoute", "v1alpha2"),
        (POLICY_GROUP, "HTTPRoute", "v1beta2"),
        (POLICY_GROUP, "HTTPRoute", "v1beta3"),
    ],
)
def test_backend_ref_defaults_match_crd(
    schemas: Schemas, group: str, kind: str, version: str
) -> None:
    schema = schemas[(group, kind)][version]
    obj = _route(f"{group}/{version}", kind, {"rules": [{"backendRefs": [BACKEND]}]})
    assert isinstance(obj, HTTPRoute | GRPCRoute | TLSRoute | TCPRoute)
    backend = obj.rules[0].backend_refs[0]
    assert _at(schema, "spec.rules[].backendRefs[].group")["default"] == backend.group
    assert _at(schema, "spec.rules[].backendRefs[].kind")["default"] == backend.kind
    assert _at(schema, "spec.rules[].backendRefs[].weight")["default"] == backend.weight
    assert backend.namespace == "ns"  # no CRD default: the route's namespace
    assert "default" not in _at(schema, "spec.rules[].backendRefs[].namespace")


@pytest.mark.parametrize("version", ["v1alpha1", "v1beta1", "v1beta2", "v1beta3"])
def test_linkerd_httproute_defaults_match_crd(schemas: Schemas, version: str) -> None:
    schema = schemas[(POLICY_GROUP, "HTTPRoute")][version]
    obj = _route(
        f"{POLICY_GROUP}/{version}",
        "HTTPRoute",
        {"parentRefs": [{"name": "gw"}], "rules": [{"backendRefs": [BACKEND]}]},
    )
    assert isinstance(obj, HTTPRoute)
    # Linkerd's own CRD defaults parentRef group to policy.linkerd.io, kind to Gateway.
    assert _at(schema, "spec.parentRefs[].group")["default"] == obj.parent_refs[0].group
    assert _at(schema, "spec.parentRefs[].kind")["default"] == obj.parent_refs[0].kind
    backend_ns = _at(schema, "spec.rules[].backendRefs[].namespace")
    # v1alpha1/v1beta1 default a backend's namespace to "default" (and have no group,
    # kind or weight); later versions leave it to the route's namespace.
    assert obj.rules[0].backend_refs[0].namespace == backend_ns.get("default", "ns")
    # Every filter type of Linkerd's CRD is one Linkerd converts.
    rule_filters = set(_at(schema, "spec.rules[].filters[].type")["enum"])
    assert rule_filters <= set(FILTER_FIELDS) and not LINKERD_HTTP.unconvertible


def test_grpc_defaults_match_crd(schemas: Schemas) -> None:
    schema = schemas[(GATEWAY_GROUP, "GRPCRoute")]["v1"]
    obj = _route(
        f"{GATEWAY_GROUP}/v1",
        "GRPCRoute",
        {"rules": [{"matches": [{"method": {"service": "pkg.Echo"}}]}]},
    )
    assert isinstance(obj, GRPCRoute)
    method = obj.rules[0].matches[0].method
    assert method is not None
    assert _at(schema, "spec.rules[].matches[].method.type")["default"] == method.type
    assert "default" not in _at(schema, "spec.rules")  # no default rule, unlike HTTPRoute
    filter_types = set(_at(schema, "spec.rules[].filters[].type")["enum"])
    assert set(GATEWAY_GRPC.unconvertible) < filter_types <= set(FILTER_FIELDS)


@pytest.mark.parametrize("version", ["v1", "v1beta1"])
def test_every_gateway_http_filter_type_is_read_or_recorded(schemas: Schemas, version: str) -> None:
    schema = schemas[(GATEWAY_GROUP, "HTTPRoute")][version]
    types = set(_at(schema, "spec.rules[].filters[].type")["enum"])
    assert types == set(FILTER_FIELDS)
    assert set(GATEWAY_HTTP.unconvertible) < types


def test_egress_network_enum_matches_crd(schemas: Schemas) -> None:
    schema = schemas[(POLICY_GROUP, "EgressNetwork")]["v1alpha1"]
    assert _at(schema, "spec.trafficPolicy")["enum"] == ["Allow", "Deny"]
    assert _at(schema, "spec")["required"] == ["trafficPolicy"]
    assert "default" not in _at(schema, "spec.networks")  # omitted stays None: ours


def test_validation_benchmark_shape() -> None:
    # Speed is judged by `make bench` only; here, that the benchmark measures what it says.
    from benchmarks import bench_validation

    (row,) = bench_validation.run(quick=True)
    assert row["documents"] == bench_validation.QUICK_SIZES[0]
    assert all(row[k] > 0 for k in ("index_s", "cold_ms_per_doc", "load_ms_per_doc"))
    assert bench_validation.summarize([row])[0].startswith("first apply")
    assert validate(GET_ROUTE) == []  # the caches it cleared come back


def test_kind_list_item_with_a_typo_names_its_place() -> None:
    listing = {"apiVersion": "v1", "kind": "List", "items": [NETWORK, MISTAKES[0][1]]}
    with pytest.raises(ManifestError) as info:
        load_manifests(listing, source_name="list.yaml")
    (problem,) = info.value.problems
    assert (problem.document, problem.path) == (1, "items[1].spec.hostname")
