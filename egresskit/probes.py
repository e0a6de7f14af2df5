"""The requests a change is judged on: from a file of URLs, or from the traffic seen.

Job: build :class:`Probe` values (a URL as :func:`egresskit.explain` takes it, with method,
headers, how often it was seen and what it stands for) from

* a file of requests (:func:`probes_from_lines`): ``[METHOD] URL [-H 'name: value']...`` per
  line, ``#`` comments;
* the route series the proxies counted (:func:`probes_from_traffic`): where the metrics do
  not record what a policy looks at (path, method, a gRPC call's name; the hostname when
  hostname labels are off; the SNI of opaque traffic), one probe per candidate that a route
  of the current or proposed policy names, plus one for "anything else", each saying what
  it stands for (docs/facts/linkerd-egress.md 6.2 lists the labels).
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from egresskit.errors import PolicyError
from egresskit.explaining import dns_for
from egresskit.manifests.model import GRPCRoute, HTTPRoute, K8sObject, TLSRoute
from egresskit.policy.snapshot import Snapshot
from egresskit.seen import SeenSeries

#: A host no route names, standing for "any other host" in a probe.
OTHER_HOST = "unlisted.example.net"


@dataclass(frozen=True, kw_only=True)
class Probe:
    """One request of the set: a URL as :func:`egresskit.explain` takes it."""

    url: str
    method: str = "GET"
    headers: tuple[tuple[str, str], ...] = ()
    #: How many such requests the proxies counted (None: from a file, not counted).
    seen: float | None = None
    #: What this probe stands for when the metrics did not record everything.
    note: str = ""

    @property
    def label(self) -> str:
        method = "" if self.method == "GET" or not self.url.startswith("http:") else self.method
        hdrs = "".join(f" -H '{k}: {v}'" for k, v in self.headers)
        return " ".join(p for p in (method, self.url) if p) + hdrs


def probes_from_lines(lines: Iterable[str], *, source: str = "<urls>") -> list[Probe]:
    """A file of requests: ``[METHOD] URL [-H 'name: value']...`` per line; ``#`` comments."""
    probes = []
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        try:
            words = shlex.split(text)
        except ValueError as exc:
            raise PolicyError(
                f"{source}: line {number}: expected shell-style words: {exc}"
            ) from exc
        method = "GET"
        if words and "://" not in words[0]:
            method = words.pop(0).upper()
        if not words or "://" not in words[0]:
            raise PolicyError(
                f"{source}: line {number}: expected [METHOD] URL [-H 'name: value'], found {text!r}"
            )
        url, rest = words[0], words[1:]
        headers = []
        while rest:
            flag = rest.pop(0)
            if flag != "-H" or not rest or ":" not in rest[0]:
                raise PolicyError(
                    f"{source}: line {number}: expected -H 'name: value' after the URL, "
                    f"found {flag!r}"
                )
            name, _, value = rest.pop(0).partition(":")
            headers.append((name.strip(), value.strip()))
        probes.append(Probe(url=url, method=method, headers=tuple(headers)))
    return probes


def probes_from_traffic(
    series: Sequence[SeenSeries], snapshots: Sequence[Snapshot]
) -> tuple[list[Probe], list[str]]:
    """Requests standing for the traffic seen, and what the metrics lost.

    Where the metrics do not record what the policies look at, one probe is made per
    candidate that a route of ``snapshots`` (current and proposed) names at that parent
    port, plus one for "anything else": paths for HTTP, calls for gRPC, hosts when the
    hostname is not recorded.
    """
    probes: dict[str, Probe] = {}
    lost: dict[str, None] = {}
    dns = dns_for(snapshots[0]) if snapshots else None

    def add(url: str, s: SeenSeries, note: str) -> None:
        old = probes.get(url)
        seen = s.count + (old.seen or 0 if old else 0)
        probes[url] = Probe(url=url, seen=seen, note=old.note if old else note)

    for s in series:
        if s.lost:
            lost[f"{s.destination} ({s.count:g} seen): {s.lost}"] = None
        if s.parent_kind != "EgressNetwork" or s.port is None:
            continue
        routes = _routes_at(snapshots, s)
        hosts = [s.hostname] if s.hostname else [*_route_hosts(routes, s.family), OTHER_HOST]
        for host in hosts:
            hnote = "" if s.hostname else f"hostname not recorded: if the host was {host}; "
            if s.family == "tls":
                add(f"https://{_at(host, s.port, 443)}/", s, hnote.rstrip("; "))
            elif s.family == "http":
                for path, note in _paths(routes):
                    add(f"http://{_at(host, s.port, 80)}{path}", s, hnote + note)
            elif s.family == "grpc":
                for call, note in _calls(routes):
                    add(f"grpc://{host}:{s.port}{call}", s, hnote + note)
        if s.family == "tcp":
            name = dns.reverse(s.target_ip) if dns is not None and s.target_ip else None
            tls_port = s.port == 443 or any(isinstance(r, TLSRoute) for r in routes)
            if name and tls_port:
                note = (
                    f"opaque metrics record no SNI: taken as TLS to {name} "
                    f"({s.target_ip} in the simulated DNS)"
                )
                add(f"https://{_at(name, s.port, 443)}/", s, note)
            else:
                add(f"tcp://{s.target_ip}:{s.port}", s, "opaque: only the address is recorded")
    return list(probes.values()), list(lost)


def _at(host: str, port: int, default: int) -> str:
    return host if port == default else f"{host}:{port}"


def _routes_at(snapshots: Sequence[Snapshot], s: SeenSeries) -> list[K8sObject]:
    out: list[K8sObject] = []
    for snap in snapshots:
        for item in snap.attached.get((s.parent_namespace, s.parent_name, s.port or 0), []):
            if item.route not in out:
                out.append(item.route)
    return out


def _route_hosts(routes: Sequence[K8sObject], family: str) -> list[str]:
    kinds = {"http": HTTPRoute, "grpc": GRPCRoute, "tls": TLSRoute}
    hosts: list[str] = []
    for r in routes:
        if isinstance(r, kinds.get(family, ())) and hasattr(r, "hostnames"):
            hosts += [h for h in r.hostnames if not h.startswith("*") and h not in hosts]
    return hosts


def _paths(routes: Sequence[K8sObject]) -> list[tuple[str, str]]:
    """(path, note): "/" for paths no route names, then each path a route matches on."""
    out = [("/", "path not recorded: / stands for every path no route names")]
    for r in routes:
        if isinstance(r, HTTPRoute):
            for rule in r.rules:
                for m in rule.matches:
                    if m.path.type != "RegularExpression" and m.path.value != "/":
                        note = f"path not recorded: if it was {m.path.value} ({r.display})"
                        if (m.path.value, note) not in out:
                            out.append((m.path.value, note))
    return out


def _calls(routes: Sequence[K8sObject]) -> list[tuple[str, str]]:
    other = "/unlisted.Service/Method"
    out = [(other, f"call not recorded: {other[1:]} stands for every call no route names")]
    for r in routes:
        if isinstance(r, GRPCRoute):
            for rule in r.rules:
                for m in rule.matches:
                    if m.method is not None and m.method.service and m.method.method:
                        call = f"/{m.method.service}/{m.method.method}"
                        out.append((call, f"call not recorded: if it was {call[1:]}"))
    return out
