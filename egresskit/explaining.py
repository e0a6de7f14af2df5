"""``explain``: what would Linkerd do with this request, and why, in words.

The human face of the policy engine (public as :func:`egresskit.explain`; the module is
``explaining`` so that importing it never shadows the function). It takes a URL as the
client would use it, resolves the host through the simulated DNS, builds the request the
proxy would see (``http://`` is HTTP to port 80, ``https://`` a TLS connection whose SNI is
the host to port 443, ``grpc://host:port/pkg.Service/Method`` a gRPC call, ``tcp://host:port``
an opaque connection), and returns the engine's :class:`Decision` with its reasoning filled
in. It renders as text (``print``) and as HTML in a notebook.
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
from egresskit.policy.decision import (
    Decision,
    HttpRequest,
    Request,
    TcpConnection,
    TlsConnection,
)
from egresskit.policy.engine import decide
from egresskit.policy.grpcmatch import split_grpc_path
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


#: The schemes :func:`build_request` understands, one per kind of traffic the engine decides.
SCHEMES = ("http", "https", "grpc", "tcp")
_DEFAULT_PORTS = {"http": 80, "https": 443, "grpc": 80}


def build_request(
    url: str,
    *,
    namespace: str,
    dns: SimulatedDNS,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
) -> tuple[Request, str]:
    """The request the client's proxy sees for ``url``, and a sentence saying so.

    * ``http://host[:port]/path``: an HTTP/1.1 request (``method``, ``headers``);
    * ``https://host[:port]/``: a TLS connection whose SNI is the host (none for an IP);
    * ``grpc://host:port/package.Service/Method``: a gRPC call (HTTP/2 ``POST`` with
      ``content-type: application/grpc``); ``headers`` are its metadata;
    * ``tcp://host:port``: a connection whose bytes are neither HTTP nor TLS.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise PolicyError(
            f"{url!r}: expected a URL starting with {', '.join(s + '://' for s in SCHEMES)}; "
            f"found {parts.scheme + '://' if parts.scheme else 'no scheme'}"
        )
    if not parts.hostname:
        raise PolicyError(f"{url!r}: expected a host in the URL, found none")
    try:
        port = parts.port or _DEFAULT_PORTS.get(scheme)
    except ValueError as exc:
        raise PolicyError(f"{url!r}: expected a port between 1 and 65535") from exc
    if port is None:
        raise PolicyError(f"{url!r}: expected a port (tcp://host:port), found none")
    host = parts.hostname
    ip = str(dns.resolve(host, search_namespace=namespace))
    resolved = f"{ip}:{port}" + ("" if host == ip else f" ({host} resolves to {ip})")
    if scheme == "https":
        sni = None if _is_ip(host) else host  # clients send no SNI for IP literals
        req: Request = TlsConnection(client_namespace=namespace, dst_ip=ip, dst_port=port, sni=sni)
        return req, f"TLS to {resolved}, " + (f"SNI {sni}" if sni else "no SNI (an IP address)")
    if scheme == "tcp":
        req = TcpConnection(client_namespace=namespace, dst_ip=ip, dst_port=port)
        return req, f"a TCP connection (bytes that are neither HTTP nor TLS) to {resolved}"
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    authority = parts.netloc.rsplit("@", 1)[-1]
    extra = tuple((headers or {}).items())
    if scheme == "grpc":
        if split_grpc_path(target) is None:
            raise PolicyError(
                f"{url!r}: expected the call as /package.Service/Method after the port, "
                f"found {target!r}"
            )
        req = HttpRequest(
            client_namespace=namespace,
            dst_ip=ip,
            dst_port=port,
            method="POST",
            path=target,
            host=authority,
            headers=(("content-type", "application/grpc"), *extra),
            http_version="2",
            grpc=True,
        )
        meta = "".join(f", metadata {k}: {v}" for k, v in extra)
        return req, f"the gRPC call {target[1:]} (HTTP/2 POST) to {resolved}{meta}"
    req = HttpRequest(
        client_namespace=namespace,
        dst_ip=ip,
        dst_port=port,
        method=method.upper(),
        path=target,
        host=authority,
        headers=extra,
    )
    hdrs = "".join(f", {k}: {v}" for k, v in extra)
    return req, f"HTTP {method.upper()} {target} Host: {authority}{hdrs} to {resolved}"


def client_sees(decision: Decision) -> str:
    """What the client observes for ``decision``, in its own terms."""
    d = decision
    if d.grpc_status is not None:
        return f"the call ends with grpc-status {d.grpc_status}"
    if d.location is not None:
        return f"HTTP {d.http_status} redirecting to {d.location}"
    if d.http_status is not None:
        return f"HTTP {d.http_status} from the proxy itself"
    if d.outcome in ("forbidden", "invalid"):
        return "the proxy closes the connection (curl reports exit 35 for TLS, 52 or 56 otherwise)"
    if d.outcome == "failed":
        return "the connection fails"
    if d.outcome == "redirected" and d.backend is not None:
        return f"the answer of {d.backend}, not of the destination it dialled"
    return "the destination's own answer"


def explain(
    manifests: object,
    url: str,
    *,
    namespace: str = "default",
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    hosts: Mapping[str, str] | None = None,
    settings: MeshSettings | None = None,
) -> Decision:
    """What Linkerd does with ``url`` requested from a pod in ``namespace``, and why.

    ``manifests`` is anything :func:`~egresskit.manifests.load_manifests` takes, a list of
    parsed objects, or an already built :class:`Snapshot`.
    """
    snap = snapshot_of(manifests, settings)
    dns = dns_for(snap, hosts)
    request, said = build_request(url, namespace=namespace, dns=dns, method=method, headers=headers)
    trace: list[str] = [f"the client in {namespace} sends {said}"]
    decision = decide(snap, request, trace=trace)
    trace.append(
        f"outcome: {decision.summary()}" + (f" ({decision.reason})" if decision.reason else "")
    )
    trace.append(f"the client sees: {client_sees(decision)}")
    return replace(decision, reasons=tuple(trace))


def snapshot_of(manifests: object, settings: MeshSettings | None = None) -> Snapshot:
    """A :class:`Snapshot` of manifests (text, paths, dicts), parsed objects, or a snapshot."""
    if isinstance(manifests, Snapshot):
        return manifests
    if isinstance(manifests, list | tuple) and all(isinstance(o, K8sObject) for o in manifests):
        objects = list(manifests)
    else:
        objects = load_manifests(manifests)  # type: ignore[arg-type]
    return Snapshot.build(with_cluster_ips(objects), settings)


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
