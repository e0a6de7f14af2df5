"""A pure, simulated DNS for the local mesh: names to addresses, without sockets.

The local backend never resolves real names: a pod's ``curl https://httpbin.org`` must reach
an address that an ``EgressNetwork``'s ``networks`` can match, deterministically and offline.
So external names map to addresses in the documentation ranges (RFC 5737: 192.0.2.0/24,
198.51.100.0/24, 203.0.113.0/24), and Services map to their ClusterIP.

Rules:

* names are case-insensitive; an optional trailing dot marks a name absolute;
* IP literals resolve to themselves;
* ``DEFAULT_HOSTS`` live in 192.0.2.0/24 and 198.51.100.0/24; unknown external names get a
  stable address in 203.0.113.0/24 derived from a hash of the name (the first free one from
  there on), remembered for later look-ups, unless ``allocate_unknown`` is off;
* Service names follow the Kubernetes pod resolver: ``name.ns.svc.cluster.local``, and, when
  not absolute, ``name.ns.svc``, ``name.ns`` and (with ``search_namespace``) ``name``;
  unknown cluster names are an error, never allocated;
* every failure is a :class:`~egresskit.errors.PolicyError` naming the host and the value.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from egresskit.errors import PolicyError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Source = Literal["default", "added", "allocated", "service"]

#: The guide's hosts and a few common ones, at fixed documentation addresses (RFC 5737).
#: 203.0.113.0/24 is left free for names allocated on demand.
DEFAULT_HOSTS: Mapping[str, str] = {
    "httpbin.org": "192.0.2.10",
    "google.com": "192.0.2.20",
    "www.google.com": "192.0.2.21",
    "github.com": "192.0.2.30",
    "api.github.com": "192.0.2.31",
    "postman-echo.com": "192.0.2.40",
    "example.com": "198.51.100.10",
    "www.example.com": "198.51.100.11",
    "example.org": "198.51.100.12",
    "api.example.com": "198.51.100.13",
    "linkerd.io": "198.51.100.20",
    "kubernetes.io": "198.51.100.21",
}

#: Where unknown external names are allocated (RFC 5737 TEST-NET-3).
ALLOCATION_NETWORK = ipaddress.IPv4Network("203.0.113.0/24")
CLUSTER_DOMAIN = "svc.cluster.local"

_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
# A Service name and a namespace are RFC 1123 labels (Kubernetes object name rules).
_RFC1123_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


@dataclass(frozen=True, kw_only=True)
class DNSEntry:
    """One row of the table, for display."""

    name: str
    address: IPAddress
    source: Source


class SimulatedDNS:
    """A host table with deterministic allocation for unknown names and Service records."""

    def __init__(
        self, hosts: Mapping[str, str] | None = None, *, allocate_unknown: bool = True
    ) -> None:
        self.allocate_unknown = allocate_unknown
        self._table: dict[str, tuple[IPAddress, Source]] = {}
        self._reverse: dict[IPAddress, str] = {}
        given = DEFAULT_HOSTS if hosts is None else hosts
        for host, ip in given.items():
            self._put(_dns_name(host), _address(host, ip), "default" if hosts is None else "added")

    def add(self, host: str, ip: str) -> None:
        """Map ``host`` to ``ip``, replacing any earlier address for that name."""
        self._put(_dns_name(host), _address(host, ip), "added")

    def register_service(self, name: str, namespace: str, cluster_ip: str) -> None:
        """Make ``name.namespace.svc.cluster.local`` (and its short forms) resolve."""
        for what, value in (("service name", name), ("namespace", namespace)):
            if not _RFC1123_LABEL.fullmatch(value):
                raise PolicyError(
                    f"service {namespace}/{name}: {what}: expected an RFC 1123 label "
                    f"(lowercase letters, digits and '-', at most 63), found {value!r}"
                )
        fqdn = f"{name}.{namespace}.{CLUSTER_DOMAIN}"
        self._put(fqdn, _address(fqdn, cluster_ip), "service")

    def resolve(self, host: str, *, search_namespace: str | None = None) -> IPAddress:
        """The address of ``host`` as a pod in ``search_namespace`` would see it."""
        literal = _literal(host)
        if literal is not None:
            return literal
        name = _dns_name(host)
        for candidate in _search_path(name, absolute=host.endswith("."), ns=search_namespace):
            found = self._table.get(candidate)
            if found is not None and found[1] == "service":
                return found[0]
        if name.endswith((".svc", ".cluster.local")) or name == "cluster.local":
            raise PolicyError(f"{host}: no such Service (registered: {self._services()})")
        found = self._table.get(name)
        if found is not None:
            return found[0]
        if "." not in name:
            where = f" in namespace {search_namespace}" if search_namespace else ""
            raise PolicyError(
                f"{host}: expected a Service{where} or a known host, found neither "
                "(single-label names are never allocated)"
            )
        if not self.allocate_unknown:
            raise PolicyError(
                f"{host}: unknown host and allocation of unknown names is off; "
                f"add it with SimulatedDNS.add({name!r}, '<ip>')"
            )
        address = self._allocate(name)
        self._put(name, address, "allocated")
        return address

    def reverse(self, ip: str | IPAddress) -> str | None:
        """The first name registered for ``ip``, or ``None``."""
        try:
            address = ipaddress.ip_address(ip)
        except ValueError as exc:
            raise PolicyError(f"reverse lookup: expected an IP address, found {ip!r}") from exc
        return self._reverse.get(address)

    def entries(self) -> tuple[DNSEntry, ...]:
        """Every name in the table, in the order it was added."""
        return tuple(
            DNSEntry(name=name, address=address, source=source)
            for name, (address, source) in self._table.items()
        )

    def _put(self, name: str, address: IPAddress, source: Source) -> None:
        old = self._table.get(name)
        if old is not None and self._reverse.get(old[0]) == name:
            del self._reverse[old[0]]
        self._table[name] = (address, source)
        self._reverse.setdefault(address, name)

    def _allocate(self, name: str) -> IPAddress:
        # Start from a hash of the name so the same name gets the same address in every
        # table where that slot is free; probe upwards past taken ones (.0 and .255 excluded).
        size = ALLOCATION_NETWORK.num_addresses - 2
        start = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") % size
        taken = {address for address, _ in self._table.values()}
        for step in range(size):
            address = ALLOCATION_NETWORK[1 + (start + step) % size]
            if address not in taken:
                return address
        raise PolicyError(f"{name}: no free address left in {ALLOCATION_NETWORK} to allocate")

    def _services(self) -> str:
        names = [n for n, (_, source) in self._table.items() if source == "service"]
        return ", ".join(names) or "none"


def _search_path(name: str, *, absolute: bool, ns: str | None) -> list[str]:
    """Candidate Service names for ``name``, as a pod resolver's search list expands them."""
    candidates = [name]
    if absolute:
        return candidates  # a trailing dot turns the search list off
    labels = name.split(".")
    if len(labels) == 1 and ns:
        candidates.append(f"{name}.{ns}.{CLUSTER_DOMAIN}")
    elif len(labels) == 2:
        candidates.append(f"{name}.{CLUSTER_DOMAIN}")
    elif len(labels) == 3 and labels[2] == "svc":
        candidates.append(f"{name}.cluster.local")
    return candidates


def _literal(host: str) -> IPAddress | None:
    text = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _address(host: str, ip: str) -> IPAddress:
    try:
        return ipaddress.ip_address(ip)
    except ValueError as exc:
        raise PolicyError(f"{host}: expected an IPv4 or IPv6 address, found {ip!r}") from exc


def _dns_name(host: str) -> str:
    """``host`` lowercased without its trailing dot; a :class:`PolicyError` if it is no name."""
    name = host.lower().removesuffix(".")
    if not name or len(name) > 253:
        raise PolicyError(f"{host!r}: expected a DNS name of 1 to 253 characters")
    for label in name.split("."):
        if not _LABEL.fullmatch(label):
            raise PolicyError(
                f"{host!r}: expected DNS labels of letters, digits, '-' and '_' "
                f"(1 to 63 characters, no '-' at either end), found {label!r}"
            )
    if _literal(name) is not None:
        raise PolicyError(f"{host!r}: expected a name, found an IP address")
    return name
