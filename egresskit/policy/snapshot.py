"""A snapshot of the cluster's policy objects, indexed for fast decisions.

A :class:`Snapshot` is built once per change of the object set and never mutated (its
memo caches only remember answers that follow from it). The proxy takes a reference to
the current snapshot for each request, so a request is judged entirely by the old or
entirely by the new policy.

Indexing follows the policy controller: routes are grouped by (EgressNetwork, port) once
their status says Accepted (docs/facts/linkerd-egress.md 4.3), ordered by creation time then name
(4.8),
and split into producer and consumer routes (4.7).
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from egresskit.manifests.model import (
    EgressNetwork,
    GRPCRoute,
    HTTPRoute,
    K8sObject,
    Route,
    Service,
    TCPRoute,
    TLSRoute,
)
from egresskit.policy import networks as nets
from egresskit.policy.status import (
    Condition,
    RouteParentStatus,
    egress_network_condition,
    route_parent_statuses,
)

#: Helm ``proxy.opaquePorts`` default (linkerd2 charts/linkerd-control-plane/values.yaml).
DEFAULT_OPAQUE_PORTS = frozenset({25, 587, 3306, 4444, 5432, 6379, 9300, 11211})
OPAQUE_PORTS_ANNOTATION = "config.linkerd.io/opaque-ports"


@dataclass(frozen=True, kw_only=True)
class MeshSettings:
    """The control plane's install-time settings that change policy answers."""

    cluster_networks: tuple[str, ...] = nets.DEFAULT_CLUSTER_NETWORKS
    global_egress_namespace: str = nets.DEFAULT_GLOBAL_EGRESS_NAMESPACE
    opaque_ports: frozenset[int] = DEFAULT_OPAQUE_PORTS


def parse_timestamp(text: str | None) -> datetime | None:
    if not text:
        return None
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def route_order_key(route: Route) -> tuple[int, datetime, str]:
    """``timestamp_then_name`` (policy-controller outbound.rs): older first, then name;
    routes without a timestamp last. Namespace is NOT part of the key (D6)."""
    created = parse_timestamp(route.metadata.creation_timestamp)
    return (
        0 if created is not None else 1,
        created or datetime.max.replace(tzinfo=UTC),
        route.metadata.name,
    )


def parse_port_list(text: str) -> frozenset[int]:
    """``config.linkerd.io/opaque-ports``: comma-separated ports and ``a-b`` ranges."""
    ports: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            lo, hi = part.split("-", 1)
            ports.update(range(int(lo), int(hi) + 1))
        else:
            ports.add(int(part))
    return frozenset(ports)


@dataclass(frozen=True, kw_only=True)
class AttachedRoute:
    route: Route
    #: A route in the EgressNetwork's own namespace serves every client (producer); one in
    #: another namespace serves only clients in its namespace (consumer; spec 4.7).
    producer: bool


@dataclass(kw_only=True)
class Snapshot:
    """Indexed policy state. Build with :meth:`Snapshot.build`."""

    settings: MeshSettings
    objects: tuple[K8sObject, ...]
    cluster_networks: tuple[nets.IPNetwork, ...]
    egress_networks: dict[str, list[nets.IndexedEgressNetwork]]
    egress_network_status: dict[tuple[str, str], Condition]
    route_status: dict[tuple[str, str, str, str], tuple[RouteParentStatus, ...]]
    services: dict[tuple[str, str], Service]
    services_by_ip: dict[str, Service]
    #: (EgressNetwork namespace, name, port) -> accepted routes there, in policy order.
    attached: dict[tuple[str, str, int], list[AttachedRoute]]
    #: Memo caches (answers that follow from this snapshot alone).
    _resolve_cache: dict[tuple[str, str], object] = field(default_factory=dict)
    _policy_cache: dict[tuple[str, str, int], object] = field(default_factory=dict)

    @classmethod
    def build(cls, objects: Iterable[K8sObject], settings: MeshSettings | None = None) -> Snapshot:
        settings = settings or MeshSettings()
        objs = tuple(objects)
        cluster = tuple(nets.parse_net(n) for n in settings.cluster_networks)

        ens: dict[str, list[nets.IndexedEgressNetwork]] = defaultdict(list)
        en_status: dict[tuple[str, str], Condition] = {}
        services: dict[tuple[str, str], Service] = {}
        by_ip: dict[str, Service] = {}
        routes: list[Route] = []
        for obj in objs:
            if isinstance(obj, EgressNetwork):
                resolved = nets.resolve_networks(obj, cluster)
                cond = egress_network_condition(nets.overlaps_cluster(resolved, cluster))
                ns = obj.metadata.namespace or ""
                en_status[(ns, obj.metadata.name)] = cond
                ens[ns].append(
                    nets.IndexedEgressNetwork(
                        obj=obj,
                        networks=resolved,
                        accepted=cond.status,
                        created=parse_timestamp(obj.metadata.creation_timestamp),
                    )
                )
            elif isinstance(obj, Service):
                services[(obj.metadata.namespace or "", obj.metadata.name)] = obj
                if obj.cluster_ip and obj.cluster_ip != "None":
                    by_ip[obj.cluster_ip] = obj
            elif isinstance(obj, HTTPRoute | GRPCRoute | TLSRoute | TCPRoute):
                routes.append(obj)

        kinds_at: dict[tuple[str, str, int | None], set[str]] = defaultdict(set)
        for route in routes:
            for ref in route.parent_refs:
                if ref.is_egress_network:
                    kinds_at[(ref.namespace, ref.name, ref.port)].add(route.kind)

        accepted_ens = {key: cond.status for key, cond in en_status.items()}
        service_keys = frozenset(services)
        statuses: dict[tuple[str, str, str, str], tuple[RouteParentStatus, ...]] = {}
        attached: dict[tuple[str, str, int], list[AttachedRoute]] = defaultdict(list)
        for route in sorted(routes, key=route_order_key):
            st = route_parent_statuses(
                route,
                egress_networks=accepted_ens,
                services=service_keys,
                routes_by_parent=kinds_at,
            )
            statuses[route.key] = st
            for entry in st:
                ref = entry.parent_ref
                # Only Accepted routes are installed (route_accepted_by_resource_port, 4.3);
                # port-less EgressNetwork parentRefs are ignored by the index (4.2).
                if entry.accepted.status and ref.port is not None:
                    attached[(ref.namespace, ref.name, ref.port)].append(
                        AttachedRoute(
                            route=route,
                            producer=(route.metadata.namespace or "") == ref.namespace,
                        )
                    )
        return cls(
            settings=settings,
            objects=objs,
            cluster_networks=cluster,
            egress_networks=dict(ens),
            egress_network_status=en_status,
            route_status=statuses,
            services=services,
            services_by_ip=by_ip,
            attached=dict(attached),
        )

    # -- queries ------------------------------------------------------------------------

    def routes_for(
        self, en: nets.IndexedEgressNetwork, port: int, client_namespace: str
    ) -> list[Route]:
        """Accepted routes a client in ``client_namespace`` sees on ``en``:``port``.

        Producer routes apply to every client; consumer routes are added for clients in
        their own namespace (merged, not replacing: gateway-api-matching.md D20).
        """
        out = []
        for item in self.attached.get((en.namespace, en.name, port), ()):
            if item.producer or (item.route.metadata.namespace or "") == client_namespace:
                out.append(item.route)
        return out

    def opaque_ports_for(self, en: EgressNetwork) -> frozenset[int]:
        text = en.metadata.annotation(OPAQUE_PORTS_ANNOTATION)
        if text is None:
            return self.settings.opaque_ports
        return parse_port_list(text)

    def ip(self, text: str) -> nets.IPAddress:
        return ipaddress.ip_address(text)

    def status_of(self, obj: K8sObject) -> dict[str, object]:
        """``status`` as Linkerd's status controller writes it (without timestamps)."""
        if isinstance(obj, EgressNetwork):
            cond = self.egress_network_status.get((obj.metadata.namespace or "", obj.name))
            return {"conditions": [cond.to_dict()]} if cond else {}
        if isinstance(obj, HTTPRoute | GRPCRoute | TLSRoute | TCPRoute):
            entries = self.route_status.get(obj.key, ())
            return {"parents": [e.to_dict() for e in entries]}
        return {}


def sorted_routes(routes: Sequence[Route]) -> list[Route]:
    return sorted(routes, key=route_order_key)
