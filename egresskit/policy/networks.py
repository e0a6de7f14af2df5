"""EgressNetwork networks: containment, size, status, and choosing ONE EgressNetwork.

Rules (docs/facts/linkerd-egress.md sections 1 and 2):

* ``networks`` omitted means ``0.0.0.0/0`` and ``::/0``, each except the cluster networks.
* A network matches an IP when its CIDR contains it and no ``except`` entry does.
* Size of a network = host count of the CIDR (``ipnet``'s ``hosts()``: IPv4 /24 = 254,
  /31 = 2, /32 = 1; IPv6 counts every address) minus the summed sizes of its excepts.
* Candidates: the client's namespace if it has ANY EgressNetwork, else the global egress
  namespace; never another namespace. Winner: smallest size, then older, then namespace,
  then name. Status is not consulted.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from egresskit.manifests.model import EgressNetwork

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Helm value ``clusterNetworks`` default (linkerd2 charts/linkerd-control-plane/values.yaml).
DEFAULT_CLUSTER_NETWORKS = (
    "10.0.0.0/8",
    "100.64.0.0/10",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "fd00::/8",
)
#: Policy-controller flag ``--global-egress-network-namespace`` default.
DEFAULT_GLOBAL_EGRESS_NAMESPACE = "linkerd-egress"


def parse_net(text: str) -> IPNetwork:
    """A CIDR or a bare IP (a single address): Linkerd's ``Cidr`` parses net first."""
    return ipaddress.ip_network(text.strip(), strict=False)


def host_count(net: IPNetwork) -> int:
    """Hosts in a network the way ``ipnet``'s ``hosts()`` counts them."""
    if net.version == 4 and net.prefixlen < 31:
        # ipnet excludes the network and broadcast addresses for IPv4 below /31.
        return int(net.num_addresses) - 2
    return int(net.num_addresses)


@dataclass(frozen=True, kw_only=True)
class ResolvedNetwork:
    cidr: IPNetwork
    excepts: tuple[IPNetwork, ...]
    size: int

    def matches(self, ip: IPAddress) -> bool:
        if ip.version != self.cidr.version or ip not in self.cidr:
            return False
        return not any(ip in ex for ex in self.excepts if ex.version == ip.version)


def resolve_networks(
    en: EgressNetwork, cluster_networks: Sequence[IPNetwork]
) -> tuple[ResolvedNetwork, ...]:
    """The networks an EgressNetwork covers, with the default applied."""
    if en.networks is None:
        # EgressNetwork::from_resource: two networks, each except the cluster networks of
        # its family (docs/facts/linkerd-egress.md section 1).
        out = []
        for everything in (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")):
            excepts = tuple(n for n in cluster_networks if n.version == everything.version)
            out.append(_resolved(everything, excepts))
        return tuple(out)
    return tuple(
        _resolved(parse_net(n.cidr), tuple(parse_net(e) for e in n.except_)) for n in en.networks
    )


def _resolved(cidr: IPNetwork, excepts: tuple[IPNetwork, ...]) -> ResolvedNetwork:
    size = host_count(cidr) - sum(host_count(e) for e in excepts)
    return ResolvedNetwork(cidr=cidr, excepts=excepts, size=size)


def overlaps_cluster(
    networks: Iterable[ResolvedNetwork], cluster_networks: Sequence[IPNetwork]
) -> bool:
    """``Network::intersect``: either CIDR contains the other, and the cluster network is
    not wholly covered by one of the ``except`` entries (docs/facts/linkerd-egress.md section 1)."""
    for net in networks:
        for cluster in cluster_networks:
            if cluster.version != net.cidr.version:
                continue
            contains = _subnet(cluster, net.cidr) or _subnet(net.cidr, cluster)
            if not contains:
                continue
            if any(_subnet(cluster, ex) for ex in net.excepts if ex.version == cluster.version):
                continue
            return True
    return False


def _subnet(inner: IPNetwork, outer: IPNetwork) -> bool:
    return inner.version == outer.version and inner.subnet_of(outer)  # type: ignore[arg-type]


@dataclass(frozen=True, kw_only=True)
class IndexedEgressNetwork:
    """An EgressNetwork with everything selection needs precomputed."""

    obj: EgressNetwork
    networks: tuple[ResolvedNetwork, ...]
    accepted: bool
    created: datetime | None

    @property
    def namespace(self) -> str:
        return self.obj.metadata.namespace or ""

    @property
    def name(self) -> str:
        return self.obj.metadata.name

    def match_size(self, ip: IPAddress) -> int | None:
        """Size of the smallest of its networks that matches ``ip``, or None."""
        sizes = [n.size for n in self.networks if n.matches(ip)]
        return min(sizes) if sizes else None


def selection_key(en: IndexedEgressNetwork, size: int) -> tuple[int, int, datetime, str, str]:
    """Order of preference among matching EgressNetworks (``compare_matched_egress_network``)."""
    return (
        # 1. the smallest matching network wins (test_picks_smallest_cidr)
        size,
        # 2. then the older resource; one without a timestamp sorts after every dated one
        0 if en.created is not None else 1,
        en.created or datetime.max,
        # 3. then namespace, then name, alphabetically (test_picks_alphabetical_order)
        en.namespace,
        en.name,
    )


def candidates_for(
    client_namespace: str,
    by_namespace: dict[str, list[IndexedEgressNetwork]],
    global_namespace: str,
) -> tuple[list[IndexedEgressNetwork], str]:
    """Which EgressNetworks may serve this client, and why (``resolve_egress_network``)."""
    local = by_namespace.get(client_namespace)
    if local:
        # Any local EgressNetwork shadows the global namespace, even one that does not
        # contain the IP (docs/facts/linkerd-egress.md 2.3 item 1; surprise 10.2).
        return local, f"namespace {client_namespace} has EgressNetworks, so only those count"
    return (
        by_namespace.get(global_namespace, []),
        f"namespace {client_namespace} has no EgressNetwork; the global namespace "
        f"{global_namespace} applies",
    )


def select(
    ip: IPAddress, candidates: Iterable[IndexedEgressNetwork]
) -> tuple[IndexedEgressNetwork | None, list[tuple[IndexedEgressNetwork, int]]]:
    """The winning EgressNetwork for ``ip`` and every candidate that matched, best first."""
    matched = []
    for en in candidates:
        size = en.match_size(ip)
        if size is not None:
            matched.append((en, size))
    matched.sort(key=lambda pair: selection_key(pair[0], pair[1]))
    return (matched[0][0] if matched else None), matched


def in_cluster_networks(ip: IPAddress, cluster_networks: Sequence[IPNetwork]) -> bool:
    return any(ip.version == n.version and ip in n for n in cluster_networks)
