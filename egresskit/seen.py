"""The egress traffic actually seen: route series from the proxies' metrics, per destination.

Job: read ``linkerd dg proxy-metrics`` text of the meshed pods of a namespace into
:class:`SeenSeries`, one per (protocol, parent, port, route, destination), with how many
requests or connections each counted, and say what the metrics do not record.

What the route metrics carry (docs/facts/linkerd-egress.md 6.2): the parent (EgressNetwork
and port), the route, and for HTTP, gRPC and TLS the ``hostname`` label (the Host, the
``:authority`` or the SNI), which Linkerd 2.18+ leaves empty unless the pod sets
``config.linkerd.io/proxy-metrics-hostname-labels: "true"``; for opaque TCP the
``target_ip`` and ``target_port``. Never the path, the method, the headers or a gRPC call's
name: a prediction that depends on those is made per candidate (see :mod:`egresskit.impact`).

Pure except :func:`scrape_local`, the I/O shell for the local backend (the live cluster's
is :func:`egresskit.liveread.live_metrics`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from egresskit.analysis.parse import parse_proxy_metrics

#: One sample per request (HTTP, gRPC) or connection opened (TLS, TCP), by family.
COUNTING = {
    "outbound_http_route_request_statuses_total": "http",
    "outbound_grpc_route_request_statuses_total": "grpc",
    "outbound_tls_route_open_total": "tls",
    "outbound_tcp_route_open_total": "tcp",
}
HOSTNAME_ANNOTATION = "config.linkerd.io/proxy-metrics-hostname-labels"
HOSTNAME_LOST = (
    "hostname not recorded: the pod's proxy has hostname metric labels off (Linkerd 2.18+ "
    f'default); set the annotation {HOSTNAME_ANNOTATION}: "true" on the pod to record them'
)


@dataclass(frozen=True, kw_only=True)
class SeenSeries:
    """Traffic one route series counted, summed over pods and statuses."""

    family: str  # http, grpc, tls, tcp
    parent_kind: str
    parent_namespace: str
    parent_name: str
    port: int | None
    route_kind: str
    route_name: str
    #: Host, :authority or SNI; "" when the proxy records no hostname.
    hostname: str
    #: Opaque TCP only: the address dialled.
    target_ip: str
    count: float
    pods: tuple[str, ...]

    @property
    def destination(self) -> str:
        host = self.hostname or self.target_ip or "(hostname not recorded)"
        return f"{self.family} {host}:{self.port}" if self.port else f"{self.family} {host}"

    @property
    def lost(self) -> str:
        """What the metrics do not say about this traffic (for the report)."""
        if self.family == "tcp":
            return "opaque TCP: only the address is recorded (no hostname, no SNI)"
        if not self.hostname:
            return HOSTNAME_LOST
        if self.family == "tls":
            return ""
        if self.family == "grpc":
            return "the gRPC service, method and metadata are not recorded"
        return "the path, method and headers are not recorded"


def series_seen(metrics: Mapping[str, str] | str) -> tuple[list[SeenSeries], list[str]]:
    """The traffic in ``proxy-metrics`` text (one text, or pod -> text); and every error."""
    texts = {"": metrics} if isinstance(metrics, str) else dict(metrics)
    sums: dict[tuple[Any, ...], float] = defaultdict(float)
    pods: dict[tuple[Any, ...], set[str]] = defaultdict(set)
    errors: list[str] = []
    for pod, text in texts.items():
        scrape = parse_proxy_metrics(text, pod=pod or None)
        errors += [str(e) for e in scrape.errors]
        for s in scrape.samples:
            family = COUNTING.get(s.metric)
            if family is None or s.value <= 0:
                continue
            labels = dict(s.labels)
            port = labels.get("parent_port") or labels.get("target_port") or ""
            key = (
                family,
                labels.get("parent_kind", ""),
                labels.get("parent_namespace", ""),
                labels.get("parent_name", ""),
                int(port) if port.isdigit() else None,
                labels.get("route_kind", ""),
                labels.get("route_name", ""),
                labels.get("hostname", ""),
                labels.get("target_ip", ""),
            )
            sums[key] += s.value
            pods[key].add(s.pod)
    out = [
        SeenSeries(
            family=k[0],
            parent_kind=k[1],
            parent_namespace=k[2],
            parent_name=k[3],
            port=k[4],
            route_kind=k[5],
            route_name=k[6],
            hostname=k[7],
            target_ip=k[8],
            count=value,
            pods=tuple(sorted(pods[k])),
        )
        for k, value in sorted(sums.items(), key=lambda kv: tuple(map(str, kv[0])))
    ]
    return out, errors


def scrape_local(cluster: Any, namespace: str) -> dict[str, str]:
    """Each meshed pod of ``namespace`` on the local backend -> its proxy's metrics text."""
    from egresskit.manifests.model import Pod

    texts = {}
    for obj in cluster.objects():
        if isinstance(obj, Pod) and obj.metadata.namespace == namespace:
            text = cluster.proxy_metrics(obj.name, namespace=namespace)
            if "is not meshed" not in text:
                texts[obj.name] = text
    return texts
