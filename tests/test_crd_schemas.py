"""The kit's manifests against the real CRDs in egresskit/crds (see its README).

What passes here would also pass a real API server's structural-schema validation for the
served version. What cannot be checked: the CRDs' CEL rules (``x-kubernetes-validations``)
need a CEL evaluator, so they are dropped with the other ``x-kubernetes-*`` keys; the
loader's own tests (test_manifests.py) cover the CEL rules that matter here. Also checked:
the defaults and enums the loader hard-codes still equal the CRDs' own, so drift is caught.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from egresskit import guide
from egresskit.manifests import load_manifests, supported_kinds
from egresskit.manifests import parse as p
from egresskit.manifests.model import (
    GATEWAY_GROUP,
    POLICY_GROUP,
    GRPCRoute,
    HTTPRoute,
    TCPRoute,
    TLSRoute,
)

CRDS = Path(__file__).resolve().parents[1] / "egresskit" / "crds"

Schemas = dict[tuple[str, str], dict[str, dict[str, Any]]]


def _strip(node: Any) -> Any:
    """Drop ``x-kubernetes-*`` keys (CEL and list/map hints jsonschema does not know)."""
    if isinstance(node, dict):
        return {k: _strip(v) for k, v in node.items() if not k.startswith("x-kubernetes-")}
    if isinstance(node, list):
        return [_strip(v) for v in node]
    return node


@pytest.fixture(scope="module")
def schemas() -> Schemas:
    """(group, kind) -> served version -> openAPIV3Schema (x-kubernetes-* removed)."""
    out: Schemas = {}
    for path in sorted(CRDS.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text(encoding="utf-8"))
        spec = crd["spec"]
        versions = out.setdefault((spec["group"], spec["names"]["kind"]), {})
        for version in spec["versions"]:
            if version.get("served"):
                versions[version["name"]] = _strip(version["schema"]["openAPIV3Schema"])
    return out


def _validate(schemas: Schemas, doc: dict[str, Any]) -> list[str]:
    group, _, version = doc["apiVersion"].rpartition("/")
    served = schemas[(group, doc["kind"])]
    assert version in served, f"{doc['kind']} {doc['apiVersion']} is not served"
    validator = jsonschema.Draft7Validator(served[version])
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(doc)]


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
def test_guide_manifest_validates_against_its_crd(schemas: Schemas, name: str, index: int) -> None:
    doc = _docs(guide.ALL_MANIFESTS[name])[index]
    assert _validate(schemas, doc) == []


def test_the_checker_is_not_vacuous(schemas: Schemas) -> None:
    doc = _docs(guide.HTTPBIN_GET_ROUTE)[0]
    doc["spec"]["parentRefs"][0]["port"] = "eighty"
    doc["spec"]["rules"][0]["matches"][0]["path"]["type"] = "Prefix"
    errors = _validate(schemas, doc)
    assert len(errors) == 2
    assert any("'eighty' is not of type 'integer'" in e for e in errors)


def test_guide_v1alpha2_httproute_is_not_served(schemas: Schemas) -> None:
    served = schemas[(GATEWAY_GROUP, "HTTPRoute")]
    # Gateway API v1.2.1 serves HTTPRoute v1 and v1beta1 only (linkerd-egress.md 7.4).
    assert sorted(served) == ["v1", "v1beta1"]
    literal = _docs(guide.HTTPBIN_GET_ROUTE_V1ALPHA2)[0]
    assert literal["apiVersion"] == "gateway.networking.k8s.io/v1alpha2"
    assert literal["apiVersion"].rpartition("/")[2] not in served
    ours = _docs(guide.HTTPBIN_GET_ROUTE)[0]
    assert _validate(schemas, ours) == []
    # Everything but apiVersion is the guide's text.
    assert {**literal, "apiVersion": ours["apiVersion"]} == ours


def test_every_served_version_is_loadable(schemas: Schemas) -> None:
    ours = set(supported_kinds())
    served = {(f"{g}/{v}", k) for (g, k), versions in schemas.items() for v in versions}
    assert served <= ours


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
    method = _at(schema, "spec.rules[].matches[].method")
    assert tuple(method["enum"]) == p.METHODS
    assert tuple(_at(schema, "spec.rules[].matches[].path.type")["enum"]) == p.PATH_TYPES
    assert _at(schema, "spec.hostnames[]")["pattern"] == p.HOSTNAME.pattern
    assert _at(schema, "spec.parentRefs[].group")["pattern"] == p.GROUP.pattern


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
    assert _at(schema, "spec.rules[].matches")["maxItems"] == p.LINKERD_HTTP.max_matches
    rule_filters = _at(schema, "spec.rules[].filters[].type")["enum"]
    assert tuple(rule_filters) == p.LINKERD_HTTP.rule_filters


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
    assert filter_types == set(p.GATEWAY_GRPC.rule_filters + p.GATEWAY_GRPC.unconvertible)


def test_egress_network_enum_matches_crd(schemas: Schemas) -> None:
    schema = schemas[(POLICY_GROUP, "EgressNetwork")]["v1alpha1"]
    assert _at(schema, "spec.trafficPolicy")["enum"] == ["Allow", "Deny"]
    assert _at(schema, "spec")["required"] == ["trafficPolicy"]
    assert "default" not in _at(schema, "spec.networks")  # omitted stays None: ours
