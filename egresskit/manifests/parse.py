"""Turn one Kubernetes manifest (a mapping) into a frozen, defaulted model value.

Job: read the fields egresskit uses from Namespace, Pod, Service, Deployment, EgressNetwork
and the route kinds; fill in the defaults the API server would (CRD ``default`` values, the
core API's defaulting); reject what a real cluster would reject (CRD schema, the CEL rules
that matter here, and Linkerd's admission webhook: shared spec linkerd-egress.md sections 1,
4.2 and 4.8).

Rules:

- Collect every problem, not the first: a :class:`_Reader` walks the document, records a
  :class:`~egresskit.errors.Problem` (where, expected, found) for each bad field and carries
  on with what it can read, so one run shows the user everything to fix.
- A JSON ``null`` is the same as an absent field (as for the API server).
- Fields egresskit does not use are ignored silently, as the API server prunes them.
- Filters and matches Linkerd cannot convert are not errors: the route records them in
  ``unsupported`` and the engine leaves the route out (gateway-api-matching.md D11, D12).
- No I/O here: PyYAML and files live in :mod:`egresskit.manifests.load`.

This is the package's one large "heart" module: the reader, the core kinds and the route
kinds share the same few helpers and are read the same way.
"""

from __future__ import annotations

import copy
import datetime as dt
import ipaddress
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from egresskit.errors import ManifestError, Problem
from egresskit.manifests.model import (
    GATEWAY_GROUP,
    POLICY_GROUP,
    BackendRef,
    Container,
    ContainerPort,
    Deployment,
    EgressNetwork,
    Filter,
    GRPCMethodMatch,
    GRPCRoute,
    GRPCRouteMatch,
    GRPCRouteRule,
    HeaderModifier,
    HTTPRoute,
    HTTPRouteMatch,
    HTTPRouteRule,
    K8sObject,
    L4RouteRule,
    Namespace,
    Network,
    ObjectMeta,
    ParentRef,
    PathMatch,
    Pod,
    PodTemplate,
    RequestRedirect,
    Service,
    ServicePort,
    Source,
    TCPRoute,
    TLSRoute,
    TrafficPolicy,
    ValueMatch,
)

#: RFC 1123 label and subdomain, as Kubernetes validates object names.
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS_LABEL_TEXT = "a lowercase RFC 1123 label (a-z, 0-9, '-'; at most 63 characters)"
DNS_SUBDOMAIN_TEXT = "a lowercase RFC 1123 name (a-z, 0-9, '-', '.'; at most 253 characters)"

_MISSING: Any = object()


def show(value: Any) -> str:
    """Render a found value for a message: scalars as JSON, containers by their shape."""
    if value is _MISSING or value is None:
        return "nothing"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return f"a list of {len(value)} item{'s' if len(value) != 1 else ''}"
    text = json.dumps(value, default=str)
    return text if len(text) <= 80 else text[:77] + '..."'


def at(path: str, key: str | int) -> str:
    """``spec`` + ``rules`` -> ``spec.rules``; ``spec.rules`` + 0 -> ``spec.rules[0]``."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


class _Reader:
    """Collects problems for one document; every getter records its own and returns None."""

    def __init__(self, *, source: Source, prefix: str = "") -> None:
        self.source = source
        self.prefix = prefix
        self.obj: str | None = None
        self.problems: list[Problem] = []

    def problem(self, path: str, expected: str, found: str) -> None:
        full = f"{self.prefix}.{path}" if self.prefix and path else (self.prefix or path)
        self.problems.append(
            Problem(
                source=self.source.name,
                document=self.source.document,
                obj=self.obj,
                path=full,
                expected=expected,
                found=found,
            )
        )

    def _present(self, m: Mapping[str, Any], path: str, key: str, required: bool) -> Any:
        value = m.get(key)
        if value is None:
            if required:
                self.problem(at(path, key), "a value (required)", "nothing")
            return _MISSING
        return value

    def get_map(
        self, m: Mapping[str, Any], path: str, key: str, *, required: bool = False
    ) -> dict[str, Any] | None:
        value = self._present(m, path, key, required)
        if value is _MISSING:
            return None
        if not isinstance(value, Mapping):
            self.problem(at(path, key), "a mapping", show(value))
            return None
        return dict(value)

    def get_list(
        self,
        m: Mapping[str, Any],
        path: str,
        key: str,
        *,
        required: bool = False,
        min_items: int = 0,
        max_items: int | None = None,
        noun: str = "item",
    ) -> list[Any] | None:
        value = self._present(m, path, key, required)
        if value is _MISSING:
            return None
        if not isinstance(value, list | tuple):
            self.problem(at(path, key), "a list", show(value))
            return None
        if len(value) < min_items:
            self.problem(at(path, key), f"at least {count(min_items, noun)}", str(len(value)))
        if max_items is not None and len(value) > max_items:
            self.problem(at(path, key), f"at most {count(max_items, noun)}", str(len(value)))
        return list(value)

    def get_str(
        self,
        m: Mapping[str, Any],
        path: str,
        key: str,
        *,
        required: bool = False,
        enum: tuple[str, ...] | None = None,
        pattern: re.Pattern[str] | None = None,
        pattern_text: str = "",
        min_len: int = 0,
        max_len: int | None = None,
    ) -> str | None:
        value = self._present(m, path, key, required)
        if value is _MISSING:
            return None
        where = at(path, key)
        expected = f"one of {', '.join(enum)}" if enum else "a string"
        if not isinstance(value, str) or (enum is not None and value not in enum):
            self.problem(where, expected, show(value))
        elif len(value) < min_len:
            self.problem(where, "a non-empty string", show(value))
        elif max_len is not None and len(value) > max_len:
            self.problem(where, f"at most {max_len} characters", f"{len(value)} characters")
        elif pattern is not None and not pattern.match(value):
            self.problem(where, pattern_text, show(value))
        else:
            return value
        return None

    def get_int(
        self,
        m: Mapping[str, Any],
        path: str,
        key: str,
        *,
        required: bool = False,
        lo: int | None = None,
        hi: int | None = None,
        enum: tuple[int, ...] | None = None,
    ) -> int | None:
        value = self._present(m, path, key, required)
        if value is _MISSING:
            return None
        if enum is not None:
            expected = f"one of {', '.join(map(str, enum))}"
        elif lo is not None and hi is not None:
            expected = f"an integer {lo}-{hi}"
        else:
            expected = "an integer"
        # bool is an int in Python; YAML `true` for a port is a mistake, not 1.
        if (
            not isinstance(value, int)
            or isinstance(value, bool)
            or (lo is not None and value < lo)
            or (hi is not None and value > hi)
            or (enum is not None and value not in enum)
        ):
            self.problem(at(path, key), expected, show(value))
            return None
        return value

    def str_list(
        self, m: Mapping[str, Any], path: str, key: str, *, max_items: int | None = None
    ) -> tuple[str, ...]:
        items = self.get_list(m, path, key, max_items=max_items) or []
        out = []
        for i, item in enumerate(items):
            if isinstance(item, str):
                out.append(item)
            else:
                self.problem(at(at(path, key), i), "a string", show(item))
        return tuple(out)

    def str_map(self, m: Mapping[str, Any], path: str, key: str) -> tuple[tuple[str, str], ...]:
        # Label and annotation values must be strings: kubectl refuses `x: true` unquoted.
        value = self.get_map(m, path, key) or {}
        out = []
        for k, v in value.items():
            if isinstance(v, str):
                out.append((str(k), v))
            else:
                self.problem(at(at(path, key), str(k)), "a string (quote it)", show(v))
        return tuple(out)

    def item_maps(self, items: list[Any], path: str) -> list[tuple[str, dict[str, Any]]]:
        """The mapping items of a list with their paths; a problem for each non-mapping."""
        out = []
        for i, item in enumerate(items):
            if isinstance(item, Mapping):
                out.append((at(path, i), dict(item)))
            else:
                self.problem(at(path, i), "a mapping", show(item))
        return out


def count(n: int, noun: str) -> str:
    """``count(1, "rule")`` -> "1 rule"; ``count(64, "match")`` -> "64 matches"."""
    if n == 1:
        return f"1 {noun}"
    return f"{n} {noun}{'es' if noun.endswith(('ch', 'sh', 's')) else 's'}"


# ------------------------------------------------------------------- entry points


def parse_object(doc: Any, *, source: Source, default_namespace: str) -> K8sObject:
    """Parse one manifest; raise :class:`ManifestError` listing every problem in it."""
    obj, problems = read_object(doc, source=source, default_namespace=default_namespace)
    if problems or obj is None:
        raise ManifestError(problems)
    return obj


def read_object(
    doc: Any, *, source: Source, default_namespace: str, prefix: str = ""
) -> tuple[K8sObject | None, list[Problem]]:
    """Parse one manifest, returning the object (None if any problem) and its problems.

    ``prefix`` locates the document inside a ``kind: List`` (``items[2]``).
    """
    r = _Reader(source=source, prefix=prefix)
    if not isinstance(doc, Mapping):
        r.problem("", "a mapping with apiVersion, kind and metadata", show(doc))
        return None, r.problems
    doc = plain(doc)
    r.obj = _label(doc, default_namespace)
    api_version = r.get_str(doc, "", "apiVersion", required=True)
    kind = r.get_str(doc, "", "kind", required=True)
    meta = r.get_map(doc, "", "metadata", required=True)
    parser = _resolve(r, api_version, kind)
    name_pattern = DNS_LABEL if kind in ("Namespace", "Service") else DNS_SUBDOMAIN
    # Without metadata the one problem is "metadata"; no second one about its name.
    name = None
    if meta is not None:
        name = r.get_str(
            meta,
            "metadata",
            "name",
            required=True,
            pattern=name_pattern,
            pattern_text=DNS_LABEL_TEXT if name_pattern is DNS_LABEL else DNS_SUBDOMAIN_TEXT,
            max_len=63 if name_pattern is DNS_LABEL else 253,
        )
    meta = meta or {}
    namespace: str | None = None
    if kind != "Namespace":  # the only cluster-scoped kind egresskit reads
        given = r.get_str(
            meta, "metadata", "namespace", pattern=DNS_LABEL, pattern_text=DNS_LABEL_TEXT
        )
        namespace = given or default_namespace
    metadata = ObjectMeta(
        name=name or "",
        namespace=namespace,
        creation_timestamp=_timestamp(r, meta),
        labels=r.str_map(meta, "metadata", "labels"),
        annotations=r.str_map(meta, "metadata", "annotations"),
    )
    if parser is None or api_version is None or kind is None:
        return None, r.problems
    common: dict[str, Any] = {
        "api_version": api_version,
        "kind": kind,
        "metadata": metadata,
        "source": source,
        "raw": doc,
    }
    obj = parser(r, doc, common)
    return (None if r.problems else obj), r.problems


def _label(doc: Mapping[str, Any], default_namespace: str) -> str | None:
    """``HTTPRoute egress-test/httpbin-get`` for messages, read leniently before validation."""
    kind = doc.get("kind")
    if not isinstance(kind, str) or not kind:
        return None
    meta = doc.get("metadata")
    meta = meta if isinstance(meta, Mapping) else {}
    name, namespace = meta.get("name"), meta.get("namespace")
    if not isinstance(name, str) or not name:
        return kind
    if kind == "Namespace":
        return f"{kind} {name}"
    namespace = namespace if isinstance(namespace, str) and namespace else default_namespace
    return f"{kind} {namespace}/{name}"


def plain(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy with YAML timestamps turned back into RFC 3339 strings (JSON-safe)."""

    def walk(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [walk(v) for v in value]
        if isinstance(value, dt.datetime):
            if value.tzinfo is None:
                value = value.replace(tzinfo=dt.UTC)
            return value.isoformat().replace("+00:00", "Z")
        if isinstance(value, dt.date):
            return value.isoformat()
        return copy.copy(value)

    out: dict[str, Any] = walk(doc)
    return out


def _timestamp(r: _Reader, meta: Mapping[str, Any]) -> str | None:
    value = r.get_str(meta, "metadata", "creationTimestamp")
    if value is None:
        return None
    try:
        dt.datetime.fromisoformat(value)
    except ValueError:
        r.problem("metadata.creationTimestamp", "an RFC 3339 timestamp", show(value))
        return None
    return value


# ------------------------------------------------------------------- kind table

Parser = Callable[[_Reader, dict[str, Any], dict[str, Any]], K8sObject | None]


def _resolve(r: _Reader, api_version: str | None, kind: str | None) -> Parser | None:
    table = PARSERS
    if api_version is None or kind is None:
        return None
    parser = table.get((api_version, kind))
    if parser is not None:
        return parser
    versions = [v for v, k in table if k == kind]
    if versions:
        r.problem("apiVersion", f"one of {', '.join(versions)} for kind {kind}", show(api_version))
    else:
        kinds = ", ".join(dict.fromkeys(k for _, k in table))
        r.problem("kind", f"one of {kinds}", show(kind))
    return None


def supported_kinds() -> list[tuple[str, str]]:
    """Every (apiVersion, kind) pair the loader accepts."""
    return list(PARSERS)


# ------------------------------------------------------------------- core kinds


def _namespace(r: _Reader, doc: dict[str, Any], common: dict[str, Any]) -> K8sObject:
    return Namespace(**common)


def _containers(r: _Reader, spec: Mapping[str, Any], path: str) -> tuple[Container, ...]:
    items = r.get_list(spec, path, "containers", required=True, min_items=1, noun="container")
    out = []
    for cpath, c in r.item_maps(items or [], at(path, "containers")):
        name = r.get_str(
            c, cpath, "name", required=True, pattern=DNS_LABEL, pattern_text=DNS_LABEL_TEXT
        )
        image = r.get_str(c, cpath, "image", required=True)
        ports = []
        for ppath, p in r.item_maps(r.get_list(c, cpath, "ports") or [], at(cpath, "ports")):
            number = r.get_int(p, ppath, "containerPort", required=True, lo=1, hi=65535)
            protocol = r.get_str(p, ppath, "protocol", enum=("TCP", "UDP", "SCTP")) or "TCP"
            if number is not None:
                ports.append(
                    ContainerPort(
                        container_port=number, name=r.get_str(p, ppath, "name"), protocol=protocol
                    )
                )
        out.append(
            Container(
                name=name or "",
                image=image or "",
                command=r.str_list(c, cpath, "command"),
                args=r.str_list(c, cpath, "args"),
                ports=tuple(ports),
            )
        )
    return tuple(out)


def _pod(r: _Reader, doc: dict[str, Any], common: dict[str, Any]) -> K8sObject:
    spec = r.get_map(doc, "", "spec", required=True) or {}
    return Pod(**common, containers=_containers(r, spec, "spec"))


def _service(r: _Reader, doc: dict[str, Any], common: dict[str, Any]) -> K8sObject:
    spec = r.get_map(doc, "", "spec", required=True) or {}
    types = ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName")
    ports = []
    for ppath, p in r.item_maps(r.get_list(spec, "spec", "ports") or [], "spec.ports"):
        port = r.get_int(p, ppath, "port", required=True, lo=1, hi=65535)
        target = p.get("targetPort")
        if target is not None and not isinstance(target, str):
            target = r.get_int(p, ppath, "targetPort", lo=1, hi=65535)
        if port is not None:
            ports.append(
                ServicePort(
                    port=port,
                    name=r.get_str(p, ppath, "name"),
                    protocol=r.get_str(p, ppath, "protocol", enum=("TCP", "UDP", "SCTP")) or "TCP",
                    # The API server defaults targetPort to port.
                    target_port=port if target is None else target,
                    app_protocol=r.get_str(p, ppath, "appProtocol"),
                )
            )
    return Service(
        **common,
        type=r.get_str(spec, "spec", "type", enum=types) or "ClusterIP",
        selector=r.str_map(spec, "spec", "selector"),
        ports=tuple(ports),
        cluster_ip=r.get_str(spec, "spec", "clusterIP"),
    )


def _deployment(r: _Reader, doc: dict[str, Any], common: dict[str, Any]) -> K8sObject:
    spec = r.get_map(doc, "", "spec", required=True) or {}
    selector_map = r.get_map(spec, "spec", "selector", required=True) or {}
    selector = r.str_map(selector_map, "spec.selector", "matchLabels")
    template = r.get_map(spec, "spec", "template", required=True) or {}
    tmeta = r.get_map(template, "spec.template", "metadata") or {}
    labels = r.str_map(tmeta, "spec.template.metadata", "labels")
    # apps/v1 validation: the selector must select the template's own pods.
    if template and not set(selector) <= set(labels):
        wanted = ",".join(f"{k}={v}" for k, v in selector)
        r.problem(
            "spec.template.metadata.labels",
            f"labels matching spec.selector ({wanted})",
            ",".join(f"{k}={v}" for k, v in labels) or "none",
        )
    tspec = r.get_map(template, "spec.template", "spec", required=True) or {}
    return Deployment(
        **common,
        replicas=_default(r.get_int(spec, "spec", "replicas", lo=0, hi=2**31 - 1), 1),
        selector=selector,
        template=PodTemplate(
            labels=labels,
            annotations=r.str_map(tmeta, "spec.template.metadata", "annotations"),
            containers=_containers(r, tspec, "spec.template.spec") if tspec else (),
        ),
    )


def _default(value: int | None, default: int) -> int:
    return default if value is None else value


# ------------------------------------------------------------------ EgressNetwork

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _cidr(r: _Reader, value: Any, path: str) -> IPNetwork | None:
    # Linkerd parses a network first, then a bare address as a single host; host bits may
    # be set (ipnet is not strict): linkerd-egress.md section 1, network.rs `Cidr`.
    if isinstance(value, str):
        try:
            return ipaddress.ip_network(value, strict=False)
        except ValueError:
            pass
    r.problem(path, "a CIDR or IP address (10.0.0.0/8, 192.0.2.1, ::/0)", show(value))
    return None


def _egress_network(r: _Reader, doc: dict[str, Any], common: dict[str, Any]) -> K8sObject:
    spec = r.get_map(doc, "", "spec", required=True) or {}
    policy = r.get_str(spec, "spec", "trafficPolicy", required=True, enum=("Allow", "Deny"))
    items = r.get_list(spec, "spec", "networks", noun="network")
    networks: tuple[Network, ...] | None = None
    if items is not None:
        if not items:
            # Admission webhook: "at least one network must be specified" (spec section 1).
            r.problem("spec.networks", "at least one network (or omit networks)", "[]")
        out = []
        for npath, n in r.item_maps(items, "spec.networks"):
            raw_cidr = n.get("cidr")
            cidr = None
            if raw_cidr is None:
                r.problem(at(npath, "cidr"), "a value (required)", "nothing")
            else:
                cidr = _cidr(r, raw_cidr, at(npath, "cidr"))
            excepts = r.get_list(n, npath, "except") or []
            normal = []
            for i, raw in enumerate(excepts):
                epath = at(at(npath, "except"), i)
                exc = _cidr(r, raw, epath)
                if exc is None or cidr is None:
                    continue
                # Webhook `validate_networks`: an except lies inside its cidr and does not
                # cover all of it (spec section 1).
                if exc.version != cidr.version or not exc.subnet_of(cidr):  # type: ignore[arg-type]
                    r.problem(epath, f"a network inside {cidr}", show(raw))
                elif exc == cidr:
                    r.problem(epath, f"a network smaller than {cidr} (not all of it)", show(raw))
                normal.append(str(exc))
            if cidr is not None:
                # Stored in canonical form ("192.0.2.1" -> "192.0.2.1/32", host bits cleared)
                # so the engine can use ipaddress.ip_network() on it as it is.
                out.append(Network(cidr=str(cidr), except_=tuple(normal)))
        networks = tuple(out)
    traffic_policy: TrafficPolicy = "Deny" if policy == "Deny" else "Allow"
    return EgressNetwork(**common, traffic_policy=traffic_policy, networks=networks)


_CORE_PARSERS: dict[tuple[str, str], Parser] = {
    ("v1", "Namespace"): _namespace,
    ("v1", "Pod"): _pod,
    ("v1", "Service"): _service,
    ("apps/v1", "Deployment"): _deployment,
    ("policy.linkerd.io/v1alpha1", "EgressNetwork"): _egress_network,
}


# ------------------------------------------------------------------------ routes

HOSTNAME = re.compile(r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
HOSTNAME_TEXT = 'a lowercase RFC 1123 hostname, optionally with a leading "*." (no IP address)'
GROUP = re.compile(r"^$|^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
GROUP_TEXT = 'an API group ("" or a lowercase DNS name)'
KIND = re.compile(r"^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$")
HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$")
HEADER_NAME_TEXT = "an HTTP header name (RFC 7230 token)"
#: Characters Gateway API allows in Exact/PathPrefix values (CEL on HTTPPathMatch).
PATH_CHARS = re.compile(r"^(?:[-A-Za-z0-9/._~!$&'()*+,;=:@]|[%][0-9a-fA-F]{2})+$")
GRPC_SERVICE = re.compile(r"^\.?[a-z_][a-z_0-9]*(\.[a-z_][a-z_0-9]*)*$", re.IGNORECASE)
GRPC_METHOD = re.compile(r"^[A-Za-z_][A-Za-z_0-9]*$")
METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")
PATH_TYPES = ("Exact", "PathPrefix", "RegularExpression")
VALUE_TYPES = ("Exact", "RegularExpression")

#: Filter type -> the field holding its configuration.
FILTER_FIELDS = {
    "RequestHeaderModifier": "requestHeaderModifier",
    "ResponseHeaderModifier": "responseHeaderModifier",
    "RequestRedirect": "requestRedirect",
    "URLRewrite": "urlRewrite",
    "RequestMirror": "requestMirror",
    "ExtensionRef": "extensionRef",
    "CORS": "cors",
    "ExternalAuth": "externalAuth",
}
#: Gateway API CEL: these may appear at most once per filter list.
NOT_REPEATABLE = (
    "RequestHeaderModifier",
    "ResponseHeaderModifier",
    "RequestRedirect",
    "URLRewrite",
)


@dataclass(frozen=True, kw_only=True)
class Flavor:
    """What differs between the route CRDs (and CRD versions) egresskit reads."""

    #: Gateway API CRD (its CEL rules apply) rather than Linkerd's policy.linkerd.io one.
    gateway: bool
    #: CRD default of parentRefs[].group: Gateway API defaults it to its own group, Linkerd's
    #: HTTPRoute CRD to policy.linkerd.io; kind defaults to Gateway in both.
    parent_group: str
    #: policy.linkerd.io HTTPRoute v1alpha1/v1beta1 backendRefs have only name, port,
    #: namespace (default "default") and filters; the API server prunes group, kind, weight.
    legacy_backends: bool = False
    max_matches: int = 64
    rule_filters: tuple[str, ...] = ()
    backend_filters: tuple[str, ...] = ()
    #: Filter types Linkerd cannot convert: recorded in ``unsupported``, not rejected
    #: (gateway-api-matching.md D11, D12 and section 3.2).
    unconvertible: tuple[str, ...] = ()


_HTTP_FILTERS = ("RequestHeaderModifier", "ResponseHeaderModifier", "RequestRedirect")
GATEWAY_HTTP = Flavor(
    gateway=True,
    parent_group=GATEWAY_GROUP,
    rule_filters=_HTTP_FILTERS,
    backend_filters=_HTTP_FILTERS,
    unconvertible=("URLRewrite", "RequestMirror", "ExtensionRef", "CORS", "ExternalAuth"),
)
LINKERD_HTTP = Flavor(
    gateway=False,
    parent_group=POLICY_GROUP,
    max_matches=8,
    # Linkerd's CRD enums: rule filters lack ResponseHeaderModifier, backend filters have it.
    rule_filters=("RequestHeaderModifier", "RequestRedirect"),
    backend_filters=_HTTP_FILTERS,
)
LINKERD_HTTP_LEGACY = replace(LINKERD_HTTP, legacy_backends=True)
GATEWAY_GRPC = Flavor(
    gateway=True,
    parent_group=GATEWAY_GROUP,
    max_matches=8,
    rule_filters=("RequestHeaderModifier",),
    backend_filters=("RequestHeaderModifier",),
    unconvertible=("ResponseHeaderModifier", "RequestMirror", "ExtensionRef"),
)
GATEWAY_L4 = Flavor(gateway=True, parent_group=GATEWAY_GROUP)


def _hostnames(r: _Reader, spec: Mapping[str, Any]) -> tuple[str, ...]:
    out = []
    for i, name in enumerate(
        r.get_list(spec, "spec", "hostnames", max_items=16, noun="hostname") or []
    ):
        path = at("spec.hostnames", i)
        if not isinstance(name, str) or len(name) > 253 or not HOSTNAME.match(name) or _is_ip(name):
            r.problem(path, HOSTNAME_TEXT, show(name))
        else:
            out.append(name)
    return tuple(out)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _parent_refs(
    r: _Reader, spec: Mapping[str, Any], route_ns: str, flavor: Flavor
) -> tuple[ParentRef, ...]:
    items = r.get_list(spec, "spec", "parentRefs", max_items=32, noun="parentRef")
    out = []
    for path, p in r.item_maps(items or [], "spec.parentRefs"):
        group = r.get_str(p, path, "group", pattern=GROUP, pattern_text=GROUP_TEXT, max_len=253)
        kind = r.get_str(p, path, "kind", pattern=KIND, pattern_text="a kind name", min_len=1)
        namespace = r.get_str(p, path, "namespace", pattern=DNS_LABEL, pattern_text=DNS_LABEL_TEXT)
        name = r.get_str(p, path, "name", required=True, min_len=1, max_len=253)
        port = r.get_int(p, path, "port", lo=1, hi=65535)
        section = r.get_str(
            p, path, "sectionName", pattern=DNS_SUBDOMAIN, pattern_text=DNS_SUBDOMAIN_TEXT
        )
        ref = ParentRef(
            group=flavor.parent_group if p.get("group") is None else (group or ""),
            kind=kind or "Gateway",
            namespace=namespace or route_ns,
            name=name or "",
            port=port,
            section_name=section,
        )
        if ref.is_egress_network and p.get("port") is None:
            # Linkerd's webhook rejects port-less EgressNetwork parents (linkerd-egress.md 4.2).
            r.problem(
                at(path, "port"), "a port (required when the parent is an EgressNetwork)", "nothing"
            )
        if name is not None:
            out.append(ref)
    return tuple(out)


def _backend_refs(
    r: _Reader,
    rule: Mapping[str, Any],
    rpath: str,
    route_ns: str,
    flavor: Flavor,
    *,
    with_filters: bool,
    unsupported: list[str],
    min_items: int = 0,
) -> tuple[BackendRef, ...]:
    items = r.get_list(
        rule,
        rpath,
        "backendRefs",
        required=min_items > 0,
        min_items=min_items,
        max_items=16,
        noun="backendRef",
    )
    out = []
    for path, b in r.item_maps(items or [], at(rpath, "backendRefs")):
        name = r.get_str(b, path, "name", required=True, min_len=1, max_len=253)
        namespace = r.get_str(b, path, "namespace", pattern=DNS_LABEL, pattern_text=DNS_LABEL_TEXT)
        port = r.get_int(b, path, "port", lo=1, hi=65535)
        if flavor.legacy_backends:
            group, kind, weight = "", "Service", 1
            namespace = namespace or "default"  # that CRD version's own default
        else:
            group = r.get_str(b, path, "group", pattern=GROUP, pattern_text=GROUP_TEXT) or ""
            kind = (
                r.get_str(b, path, "kind", pattern=KIND, pattern_text="a kind name", min_len=1)
                or "Service"
            )
            weight = _default(r.get_int(b, path, "weight", lo=0, hi=1_000_000), 1)
        if flavor.gateway and group == "" and kind == "Service" and b.get("port") is None:
            # Gateway API CEL: "Must have port for Service reference".
            r.problem(at(path, "port"), "a port (required for a Service backend)", "nothing")
        filters: tuple[Filter, ...] = ()
        if with_filters:
            filters = _filters(r, b, path, flavor, flavor.backend_filters, unsupported)
        if name is not None:
            out.append(
                BackendRef(
                    group=group,
                    kind=kind,
                    namespace=namespace or route_ns,
                    name=name,
                    port=port,
                    weight=weight,
                    filters=filters,
                )
            )
    return tuple(out)


def _filters(
    r: _Reader,
    owner: Mapping[str, Any],
    opath: str,
    flavor: Flavor,
    allowed: tuple[str, ...],
    unsupported: list[str],
) -> tuple[Filter, ...]:
    items = r.get_list(owner, opath, "filters", max_items=16, noun="filter")
    known = allowed + flavor.unconvertible
    seen: set[str] = set()
    out = []
    for path, f in r.item_maps(items or [], at(opath, "filters")):
        type_ = r.get_str(f, path, "type", required=True, enum=known)
        if type_ is None:
            continue
        if flavor.gateway and type_ in NOT_REPEATABLE and type_ in seen:
            r.problem(path, f"at most one {type_} filter in this list", f"another {type_}")
        seen.add(type_)
        if flavor.gateway:
            for other, field_name in FILTER_FIELDS.items():
                if other != type_ and f.get(field_name) is not None:
                    r.problem(at(path, field_name), f"nothing when type is {type_}", "a value")
        if type_ in flavor.unconvertible:
            unsupported.append(f"{path}: {type_} filter")
            continue
        field_name = FILTER_FIELDS[type_]
        cpath = at(path, field_name)
        if f.get(field_name) is None:
            r.problem(cpath, f"a value (required when type is {type_})", "nothing")
            continue
        config = r.get_map(f, path, field_name)
        if config is None:
            continue
        if type_ == "RequestRedirect":
            out.append(Filter(type=type_, request_redirect=_redirect(r, config, cpath)))
        elif type_ == "RequestHeaderModifier":
            modifier = _header_modifier(r, config, cpath)
            out.append(Filter(type=type_, request_header_modifier=modifier))
        else:
            modifier = _header_modifier(r, config, cpath)
            out.append(Filter(type=type_, response_header_modifier=modifier))
    return tuple(out)


def _header_modifier(r: _Reader, config: Mapping[str, Any], path: str) -> HeaderModifier:
    def pairs(key: str) -> tuple[tuple[str, str], ...]:
        items = r.get_list(config, path, key, max_items=16, noun="header")
        out = []
        for hpath, h in r.item_maps(items or [], at(path, key)):
            name = r.get_str(
                h, hpath, "name", required=True, pattern=HEADER_NAME, pattern_text=HEADER_NAME_TEXT
            )
            value = r.get_str(h, hpath, "value", required=True, max_len=4096)
            if name is not None and value is not None:
                out.append((name, value))
        return tuple(out)

    return HeaderModifier(
        set=pairs("set"), add=pairs("add"), remove=r.str_list(config, path, "remove", max_items=16)
    )


def _redirect(r: _Reader, config: Mapping[str, Any], path: str) -> RequestRedirect:
    path_type: Any = None
    path_value = None
    p = r.get_map(config, path, "path")
    if p is not None:
        ppath = at(path, "path")
        types = ("ReplaceFullPath", "ReplacePrefixMatch")
        path_type = r.get_str(p, ppath, "type", required=True, enum=types)
        if path_type is not None:
            key = path_type[0].lower() + path_type[1:]
            # CEL: the value field must match the type (replaceFullPath for ReplaceFullPath).
            path_value = r.get_str(p, ppath, key, required=True, max_len=1024)
    hostname = r.get_str(
        config,
        path,
        "hostname",
        pattern=DNS_SUBDOMAIN,
        pattern_text=DNS_SUBDOMAIN_TEXT,
        max_len=253,
    )
    return RequestRedirect(
        scheme=r.get_str(config, path, "scheme", enum=("http", "https")),
        hostname=hostname,
        path_type=path_type,
        path_value=path_value,
        port=r.get_int(config, path, "port", lo=1, hi=65535),
        # CRD default 302 (gateway-api-matching.md 3.1; the proxy alone would use 301: D14).
        status_code=_default(r.get_int(config, path, "statusCode", enum=(301, 302)), 302),
    )


def _value_matches(
    r: _Reader,
    m: Mapping[str, Any],
    mpath: str,
    key: str,
    *,
    name_pattern: re.Pattern[str] | None,
    max_value: int,
) -> tuple[ValueMatch, ...]:
    items = r.get_list(m, mpath, key, max_items=16, noun="match")
    out = []
    for path, v in r.item_maps(items or [], at(mpath, key)):
        type_ = r.get_str(v, path, "type", enum=VALUE_TYPES) or "Exact"
        name = r.get_str(
            v,
            path,
            "name",
            required=True,
            pattern=name_pattern,
            pattern_text=HEADER_NAME_TEXT,
            min_len=1,
            max_len=256,
        )
        value = r.get_str(v, path, "value", required=True, min_len=1, max_len=max_value)
        if name is not None and value is not None:
            out.append(ValueMatch(type=type_, name=name, value=value))  # type: ignore[arg-type]
    return tuple(out)


_BAD_PATH_PARTS = ("//", "/./", "/../", "%2f", "%2F", "#")


def _path_match(r: _Reader, m: Mapping[str, Any], mpath: str, flavor: Flavor) -> PathMatch:
    p = r.get_map(m, mpath, "path")
    if p is None:
        return PathMatch()  # CRD default: PathPrefix "/"
    path = at(mpath, "path")
    type_ = r.get_str(p, path, "type", enum=PATH_TYPES) or "PathPrefix"
    value = r.get_str(p, path, "value", max_len=1024)
    value = "/" if value is None else value
    vpath = at(path, "value")
    if type_ != "RegularExpression":
        # CEL on HTTPPathMatch (gateway-api-matching.md 1.2); Linkerd's own CRD has no CEL,
        # but a path that does not start with "/" can never match a request either.
        bad = next((part for part in _BAD_PATH_PARTS if part in value), None)
        if not value.startswith("/"):
            r.problem(vpath, 'an absolute path starting with "/"', show(value))
        elif flavor.gateway and bad is not None:
            r.problem(vpath, f'a path without "{bad}"', show(value))
        elif flavor.gateway and value.endswith(("/..", "/.")):
            r.problem(vpath, 'a path not ending in "/." or "/.."', show(value))
        elif flavor.gateway and not PATH_CHARS.match(value):
            r.problem(vpath, "a path of RFC 3986 path characters", show(value))
    return PathMatch(type=type_, value=value)  # type: ignore[arg-type]


def _http_rule(
    r: _Reader,
    rule: Mapping[str, Any],
    rpath: str,
    route_ns: str,
    flavor: Flavor,
    unsupported: list[str],
) -> HTTPRouteRule:
    items = r.get_list(rule, rpath, "matches", max_items=flavor.max_matches, noun="match")
    matches = []
    for mpath, m in r.item_maps(items or [], at(rpath, "matches")):
        query_pattern = HEADER_NAME if flavor.gateway else None
        matches.append(
            HTTPRouteMatch(
                path=_path_match(r, m, mpath, flavor),
                headers=_value_matches(
                    r, m, mpath, "headers", name_pattern=HEADER_NAME, max_value=4096
                ),
                query_params=_value_matches(
                    r, m, mpath, "queryParams", name_pattern=query_pattern, max_value=1024
                ),
                method=r.get_str(m, mpath, "method", enum=METHODS),
            )
        )
    filters = _filters(r, rule, rpath, flavor, flavor.rule_filters, unsupported)
    backends = _backend_refs(
        r, rule, rpath, route_ns, flavor, with_filters=True, unsupported=unsupported
    )
    if flavor.gateway and backends and any(f.type == "RequestRedirect" for f in filters):
        # CEL: "RequestRedirect filter must not be used together with backendRefs".
        r.problem(
            at(rpath, "backendRefs"),
            "no backendRefs in a rule with a RequestRedirect filter",
            show(rule.get("backendRefs")),
        )
    return HTTPRouteRule(
        name=_rule_name(r, rule, rpath) if flavor.gateway else None,
        # Omitted (or empty) matches mean PathPrefix "/": the CRD default, and what
        # Linkerd makes of a rule without matches (linkerd-egress.md 4.5).
        matches=tuple(matches) or (HTTPRouteMatch(),),
        filters=filters,
        backend_refs=backends,
    )


def _rule_name(r: _Reader, rule: Mapping[str, Any], rpath: str) -> str | None:
    return r.get_str(
        rule, rpath, "name", pattern=DNS_SUBDOMAIN, pattern_text=DNS_SUBDOMAIN_TEXT, max_len=253
    )


def _route_spec(r: _Reader, doc: Mapping[str, Any], flavor: Flavor) -> dict[str, Any]:
    # Gateway API CRDs require spec; Linkerd's HTTPRoute CRD does not.
    return r.get_map(doc, "", "spec", required=flavor.gateway) or {}


def _check_total_matches(r: _Reader, rules: list[Any]) -> None:
    # Gateway API CEL on spec.rules: at most 128 matches across all rules.
    total = sum(
        len(rule["matches"])
        for rule in rules
        if isinstance(rule, Mapping) and isinstance(rule.get("matches"), list)
    )
    if total > 128:
        r.problem("spec.rules", "at most 128 matches across all rules", str(total))


def _http_route(flavor: Flavor) -> Parser:
    def parse(r: _Reader, doc: dict[str, Any], common: dict[str, Any]) -> K8sObject:
        spec = _route_spec(r, doc, flavor)
        ns = common["metadata"].namespace
        unsupported: list[str] = []
        items = r.get_list(spec, "spec", "rules", max_items=16, noun="rule")
        if items is None:
            rules: tuple[HTTPRouteRule, ...] = (HTTPRouteRule(),)  # CRD default: PathPrefix "/"
        else:
            if flavor.gateway:
                _check_total_matches(r, items)
            rules = tuple(
                _http_rule(r, rule, rpath, ns, flavor, unsupported)
                for rpath, rule in r.item_maps(items, "spec.rules")
            )
        return HTTPRoute(
            **common,
            hostnames=_hostnames(r, spec),
            parent_refs=_parent_refs(r, spec, ns, flavor),
            rules=rules,
            unsupported=tuple(unsupported),
        )

    return parse


def _grpc_method(
    r: _Reader, m: Mapping[str, Any], mpath: str, unsupported: list[str]
) -> GRPCMethodMatch | None:
    config = r.get_map(m, mpath, "method")
    if config is None:
        return None
    path = at(mpath, "method")
    type_ = r.get_str(config, path, "type", enum=VALUE_TYPES) or "Exact"
    service = r.get_str(config, path, "service", max_len=1024)
    method = r.get_str(config, path, "method", max_len=1024)
    if config.get("service") is None and config.get("method") is None:
        r.problem(path, "a service or a method (or both)", "neither")
    if type_ == "Exact":
        if service is not None and not GRPC_SERVICE.match(service):
            r.problem(at(path, "service"), "a gRPC service name (pkg.Service)", show(service))
        if method is not None and not GRPC_METHOD.match(method):
            r.problem(at(path, "method"), "a gRPC method name", show(method))
    else:
        # Linkerd cannot convert regex method matches (gateway-api-matching.md D11).
        unsupported.append(f"{path}: RegularExpression method match")
    return GRPCMethodMatch(type=type_, service=service, method=method)  # type: ignore[arg-type]


def _grpc_route(r: _Reader, doc: dict[str, Any], common: dict[str, Any]) -> K8sObject:
    flavor = GATEWAY_GRPC
    spec = _route_spec(r, doc, flavor)
    ns = common["metadata"].namespace
    unsupported: list[str] = []
    items = r.get_list(spec, "spec", "rules", max_items=16, noun="rule") or []
    _check_total_matches(r, items)
    rules = []
    for rpath, rule in r.item_maps(items, "spec.rules"):
        matches = r.get_list(rule, rpath, "matches", max_items=flavor.max_matches, noun="match")
        rules.append(
            GRPCRouteRule(
                name=_rule_name(r, rule, rpath),
                # No matches means every gRPC request (gateway-api-matching.md 4.1).
                matches=tuple(
                    GRPCRouteMatch(
                        method=_grpc_method(r, m, mpath, unsupported),
                        headers=_value_matches(
                            r, m, mpath, "headers", name_pattern=HEADER_NAME, max_value=4096
                        ),
                    )
                    for mpath, m in r.item_maps(matches or [], at(rpath, "matches"))
                ),
                filters=_filters(r, rule, rpath, flavor, flavor.rule_filters, unsupported),
                backend_refs=_backend_refs(
                    r, rule, rpath, ns, flavor, with_filters=True, unsupported=unsupported
                ),
            )
        )
    return GRPCRoute(
        **common,
        hostnames=_hostnames(r, spec),
        parent_refs=_parent_refs(r, spec, ns, flavor),
        rules=tuple(rules),
        unsupported=tuple(unsupported),
    )


def _l4_rules(r: _Reader, spec: Mapping[str, Any], kind: str, ns: str) -> tuple[L4RouteRule, ...]:
    items = r.get_list(spec, "spec", "rules", required=True, min_items=1, max_items=16, noun="rule")
    if items and len(items) > 1:
        # Linkerd's webhook: "TlsRoute/TcpRoute supports a single rule only" (spec 4.8).
        r.problem(
            "spec.rules",
            f"exactly 1 rule (Linkerd accepts a single rule per {kind})",
            str(len(items)),
        )
    unused: list[str] = []
    return tuple(
        L4RouteRule(
            name=_rule_name(r, rule, rpath),
            # The CRDs require 1-16 backendRefs per rule (linkerd-egress.md 4.8).
            backend_refs=_backend_refs(
                r, rule, rpath, ns, GATEWAY_L4, with_filters=False, unsupported=unused, min_items=1
            ),
        )
        for rpath, rule in r.item_maps(items or [], "spec.rules")
    )


def _tls_route(r: _Reader, doc: dict[str, Any], common: dict[str, Any]) -> K8sObject:
    spec = _route_spec(r, doc, GATEWAY_L4)
    ns = common["metadata"].namespace
    return TLSRoute(
        **common,
        hostnames=_hostnames(r, spec),
        parent_refs=_parent_refs(r, spec, ns, GATEWAY_L4),
        rules=_l4_rules(r, spec, "TLSRoute", ns),
    )


def _tcp_route(r: _Reader, doc: dict[str, Any], common: dict[str, Any]) -> K8sObject:
    spec = _route_spec(r, doc, GATEWAY_L4)
    ns = common["metadata"].namespace
    return TCPRoute(
        **common,
        parent_refs=_parent_refs(r, spec, ns, GATEWAY_L4),
        rules=_l4_rules(r, spec, "TCPRoute", ns),
    )


_GW = f"{GATEWAY_GROUP}/"
_LD = f"{POLICY_GROUP}/"

#: Every (apiVersion, kind) the loader reads (linkerd-egress.md 4.1; the brief's list).
PARSERS: dict[tuple[str, str], Parser] = {
    **_CORE_PARSERS,
    **{(_GW + v, "HTTPRoute"): _http_route(GATEWAY_HTTP) for v in ("v1", "v1beta1", "v1alpha2")},
    **{(_GW + v, "GRPCRoute"): _grpc_route for v in ("v1", "v1alpha2")},
    (_GW + "v1alpha2", "TLSRoute"): _tls_route,
    (_GW + "v1alpha2", "TCPRoute"): _tcp_route,
    (_LD + "v1alpha1", "HTTPRoute"): _http_route(LINKERD_HTTP_LEGACY),
    (_LD + "v1beta1", "HTTPRoute"): _http_route(LINKERD_HTTP_LEGACY),
    (_LD + "v1beta2", "HTTPRoute"): _http_route(LINKERD_HTTP),
    (_LD + "v1beta3", "HTTPRoute"): _http_route(LINKERD_HTTP),
}
