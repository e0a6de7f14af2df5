"""``explain``: what would Linkerd do with this request, and why, in words.

The human face of the policy engine. It takes a URL as the client would curl it,
resolves the host through the simulated DNS, builds the request the proxy would see
(``http://`` is HTTP to port 80, ``https://`` is a TLS connection whose SNI is the host to
port 443, or the port the URL names), and returns the engine's :class:`Decision` with its
reasoning filled in. It renders as text (``print``) and as HTML in a notebook.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import replace
from urllib.parse import urlsplit

from egresskit.dns import SimulatedDNS
from egresskit.errors import PolicyError
from egresskit.manifests import load_manifests
from egresskit.manifests.model import K8sObject, Service
from egresskit.policy.decision import Decision, HttpRequest, Request, TlsConnection
from egresskit.policy.engine import decide
from egresskit.policy.snapshot import MeshSettings, Snapshot

#: Where Services without a ClusterIP get one when explaining (kind's default service CIDR
#: 10.96.0.0/12, inside the default cluster networks).
SERVICE_CIDR = ipaddress.IPv4Network("10.96.0.0/12")


def with_cluster_ips(objects: Iterable[K8sObject]) -> list[K8sObject]:
    """Give every Service without a ClusterIP a stable one, in order, from 10.96.0.10 on."""
    out: list[K8sObject] = []
    taken = {o.cluster_ip for o in objects if isinstance(o, Service) and o.cluster_ip}
    next_host = 10
    for obj in objects:
        if isinstance(obj, Service) and not obj.cluster_ip:
            while str(SERVICE_CIDR[next_host]) in taken:
                next_host += 1
            ip = str(SERVICE_CIDR[next_host])
            taken.add(ip)
            obj = replace(obj, cluster_ip=ip)
        out.append(obj)
    return out


def build_request(
    url: str,
    *,
    namespace: str,
    dns: SimulatedDNS,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
) -> tuple[Request, str]:
    """The request the client's proxy sees for ``url``, and a sentence saying so."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise PolicyError(f"{url!r}: expected an http:// or https:// URL, found {parts.scheme!r}")
    if not parts.hostname:
        raise PolicyError(f"{url!r}: expected a host in the URL, found none")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise PolicyError(f"{url!r}: expected a port between 1 and 65535") from exc
    host = parts.hostname
    ip = str(dns.resolve(host, search_namespace=namespace))
    if parts.scheme == "https":
        sni = None if _is_ip(host) else host  # clients send no SNI for IP literals
        req: Request = TlsConnection(client_namespace=namespace, dst_ip=ip, dst_port=port, sni=sni)
        said = f"TLS to {ip}:{port} ({host} resolves to {ip}), SNI {sni!r}"
        return req, said
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    authority = parts.netloc.rsplit("@", 1)[-1]
    req = HttpRequest(
        client_namespace=namespace,
        dst_ip=ip,
        dst_port=port,
        method=method.upper(),
        path=target,
        host=authority,
        headers=tuple((headers or {}).items()),
    )
    said = (
        f"HTTP {method.upper()} {target} Host: {authority} to {ip}:{port} ({host} resolves to {ip})"
    )
    return req, said


def explain(
    manifests: object,
    url: str,
    *,
    namespace: str,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    hosts: Mapping[str, str] | None = None,
    settings: MeshSettings | None = None,
) -> Decision:
    """What Linkerd does with ``url`` requested from a pod in ``namespace``, and why.

    ``manifests`` is anything :func:`~egresskit.manifests.load_manifests` takes, or an
    already built :class:`Snapshot`.
    """
    if isinstance(manifests, Snapshot):
        snap = manifests
    else:
        snap = Snapshot.build(with_cluster_ips(load_manifests(manifests)), settings)  # type: ignore[arg-type]
    dns = dns_for(snap, hosts)
    request, said = build_request(url, namespace=namespace, dns=dns, method=method, headers=headers)
    trace: list[str] = [f"the client in {namespace} sends {said}"]
    decision = decide(snap, request, trace=trace)
    trace.append(
        f"outcome: {decision.summary()}" + (f" ({decision.reason})" if decision.reason else "")
    )
    return replace(decision, reasons=tuple(trace))


def dns_for(snap: Snapshot, hosts: Mapping[str, str] | None = None) -> SimulatedDNS:
    dns = SimulatedDNS()
    for host, ip in (hosts or {}).items():
        dns.add(host, ip)
    for (ns, name), svc in snap.services.items():
        if svc.cluster_ip and svc.cluster_ip != "None":
            dns.register_service(name, ns, svc.cluster_ip)
    return dns


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
