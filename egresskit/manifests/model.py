"""Typed, frozen values for the Kubernetes objects egresskit understands.

Field names follow the CRD fields in snake case (``parent_refs``, ``backend_refs``,
``traffic_policy``). Every value here is already defaulted the way the API server's
CRD defaults would leave it (see :mod:`egresskit.manifests.parse`), so the policy
engine never has to guess. Objects keep the raw dict they came from (``raw``) so a
backend can send exactly what the user wrote.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

GATEWAY_GROUP = "gateway.networking.k8s.io"
POLICY_GROUP = "policy.linkerd.io"

PathMatchType = Literal["Exact", "PathPrefix", "RegularExpression"]
ValueMatchType = Literal["Exact", "RegularExpression"]
TrafficPolicy = Literal["Allow", "Deny"]


@dataclass(frozen=True, kw_only=True)
class ObjectMeta:
    name: str
    namespace: str | None
    #: Creation order as the API server would stamp it. The local store fills it in on
    #: apply; manifests may carry one (RFC 3339) for tests of age-based precedence.
    creation_timestamp: str | None = None
    labels: tuple[tuple[str, str], ...] = ()
    annotations: tuple[tuple[str, str], ...] = ()

    def annotation(self, key: str) -> str | None:
        return dict(self.annotations).get(key)


@dataclass(frozen=True, kw_only=True)
class Source:
    """Where a document came from, for error messages."""

    name: str
    document: int | None


# --------------------------------------------------------------------------- refs


@dataclass(frozen=True, kw_only=True)
class ParentRef:
    group: str
    kind: str
    namespace: str
    name: str
    port: int | None = None
    section_name: str | None = None

    @property
    def is_egress_network(self) -> bool:
        # Linkerd compares group and kind case-insensitively and does NOT default a
        # missing group to policy.linkerd.io: docs/facts/linkerd-egress.md 4.1.
        return self.kind.lower() == "egressnetwork" and self.group.lower() == POLICY_GROUP


@dataclass(frozen=True, kw_only=True)
class HeaderModifier:
    set: tuple[tuple[str, str], ...] = ()
    add: tuple[tuple[str, str], ...] = ()
    remove: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class RequestRedirect:
    scheme: str | None = None
    hostname: str | None = None
    path_type: Literal["ReplaceFullPath", "ReplacePrefixMatch"] | None = None
    path_value: str | None = None
    port: int | None = None
    status_code: int = 302


@dataclass(frozen=True, kw_only=True)
class Filter:
    """One route or backend filter. ``type`` is the Gateway API filter type."""

    type: str
    request_header_modifier: HeaderModifier | None = None
    response_header_modifier: HeaderModifier | None = None
    request_redirect: RequestRedirect | None = None


@dataclass(frozen=True, kw_only=True)
class BackendRef:
    group: str
    kind: str
    namespace: str
    name: str
    port: int | None = None
    weight: int = 1
    filters: tuple[Filter, ...] = ()

    @property
    def is_egress_network(self) -> bool:
        return self.kind.lower() == "egressnetwork" and self.group.lower() == POLICY_GROUP

    @property
    def is_service(self) -> bool:
        return self.kind == "Service" and self.group in ("", "core")


# ------------------------------------------------------------------- HTTP routes


@dataclass(frozen=True, kw_only=True)
class PathMatch:
    type: PathMatchType = "PathPrefix"
    value: str = "/"


@dataclass(frozen=True, kw_only=True)
class ValueMatch:
    """A header or query-param match: ``name`` compared per kind, ``value`` per ``type``."""

    type: ValueMatchType = "Exact"
    name: str
    value: str


@dataclass(frozen=True, kw_only=True)
class HTTPRouteMatch:
    path: PathMatch = field(default_factory=PathMatch)
    headers: tuple[ValueMatch, ...] = ()
    query_params: tuple[ValueMatch, ...] = ()
    method: str | None = None


@dataclass(frozen=True, kw_only=True)
class HTTPRouteRule:
    name: str | None = None
    matches: tuple[HTTPRouteMatch, ...] = (HTTPRouteMatch(),)
    filters: tuple[Filter, ...] = ()
    backend_refs: tuple[BackendRef, ...] = ()


@dataclass(frozen=True, kw_only=True)
class GRPCMethodMatch:
    type: ValueMatchType = "Exact"
    service: str | None = None
    method: str | None = None


@dataclass(frozen=True, kw_only=True)
class GRPCRouteMatch:
    method: GRPCMethodMatch | None = None
    headers: tuple[ValueMatch, ...] = ()


@dataclass(frozen=True, kw_only=True)
class GRPCRouteRule:
    name: str | None = None
    #: Empty means "matches every gRPC request" (Gateway API grpcroute_types.go).
    matches: tuple[GRPCRouteMatch, ...] = ()
    filters: tuple[Filter, ...] = ()
    backend_refs: tuple[BackendRef, ...] = ()


@dataclass(frozen=True, kw_only=True)
class L4RouteRule:
    """The single rule of a TLSRoute or TCPRoute."""

    name: str | None = None
    backend_refs: tuple[BackendRef, ...] = ()


# -------------------------------------------------------------------- objects


@dataclass(frozen=True, kw_only=True)
class K8sObject:
    api_version: str
    kind: str
    metadata: ObjectMeta
    source: Source | None = field(default=None, compare=False)
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str | None:
        return self.metadata.namespace

    @property
    def key(self) -> tuple[str, str, str, str]:
        """Identity as the API server sees it: (group, kind, namespace, name)."""
        return (self.group, self.kind, self.metadata.namespace or "", self.metadata.name)

    @property
    def display(self) -> str:
        ns = f"{self.metadata.namespace}/" if self.metadata.namespace else ""
        return f"{self.kind} {ns}{self.metadata.name}"


@dataclass(frozen=True, kw_only=True)
class Namespace(K8sObject):
    pass


@dataclass(frozen=True, kw_only=True)
class ContainerPort:
    container_port: int
    name: str | None = None
    protocol: str = "TCP"


@dataclass(frozen=True, kw_only=True)
class Container:
    name: str
    image: str
    command: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    ports: tuple[ContainerPort, ...] = ()


@dataclass(frozen=True, kw_only=True)
class PodTemplate:
    labels: tuple[tuple[str, str], ...] = ()
    annotations: tuple[tuple[str, str], ...] = ()
    containers: tuple[Container, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Pod(K8sObject):
    containers: tuple[Container, ...] = ()


@dataclass(frozen=True, kw_only=True)
class ServicePort:
    port: int
    name: str | None = None
    protocol: str = "TCP"
    target_port: int | str | None = None
    app_protocol: str | None = None


@dataclass(frozen=True, kw_only=True)
class Service(K8sObject):
    type: str = "ClusterIP"
    selector: tuple[tuple[str, str], ...] = ()
    ports: tuple[ServicePort, ...] = ()
    cluster_ip: str | None = None


@dataclass(frozen=True, kw_only=True)
class Deployment(K8sObject):
    replicas: int = 1
    selector: tuple[tuple[str, str], ...] = ()
    template: PodTemplate = field(default_factory=PodTemplate)


@dataclass(frozen=True, kw_only=True)
class Network:
    cidr: str
    except_: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class EgressNetwork(K8sObject):
    traffic_policy: TrafficPolicy
    #: ``None`` when ``spec.networks`` is omitted: the engine then uses "all but the
    #: cluster networks" (docs/facts/linkerd-egress.md section 1).
    networks: tuple[Network, ...] | None = None


@dataclass(frozen=True, kw_only=True)
class HTTPRoute(K8sObject):
    """Gateway API ``HTTPRoute`` or Linkerd's ``policy.linkerd.io`` ``HTTPRoute``."""

    hostnames: tuple[str, ...] = ()
    parent_refs: tuple[ParentRef, ...] = ()
    rules: tuple[HTTPRouteRule, ...] = ()
    #: Filters Linkerd cannot convert (URLRewrite, RequestMirror, ExtensionRef, ...):
    #: the whole route is left out of outbound config (gateway-api-matching.md D11).
    unsupported: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class GRPCRoute(K8sObject):
    hostnames: tuple[str, ...] = ()
    parent_refs: tuple[ParentRef, ...] = ()
    rules: tuple[GRPCRouteRule, ...] = ()
    unsupported: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class TLSRoute(K8sObject):
    hostnames: tuple[str, ...] = ()
    parent_refs: tuple[ParentRef, ...] = ()
    rules: tuple[L4RouteRule, ...] = ()


@dataclass(frozen=True, kw_only=True)
class TCPRoute(K8sObject):
    parent_refs: tuple[ParentRef, ...] = ()
    rules: tuple[L4RouteRule, ...] = ()


Route = HTTPRoute | GRPCRoute | TLSRoute | TCPRoute
