"""The impact of a policy change: which requests change outcome, before it is applied.

Job: for each request of a set, ask the engine (:func:`egresskit.explain`) under the current
policy and under the proposed one, and keep only the requests whose outcome or backend
changes, grouped as a reviewer reads them:

* ``newly forbidden``: was not forbidden, now is (the change breaks it);
* ``newly allowed``: now reaches its original destination, and did not before;
* ``newly redirected``: now goes to an in-cluster Service (or gets an HTTP redirect);
* ``backend changed``: same outcome, another backend (e.g. a different Service);
* ``newly failing``: anything else the proxy cannot serve any more (invalid backend,
  protocol mismatch).

A change of route alone (``http-egress-allow`` to ``httpbin-get``, both forwarding) is not a
change in behaviour and is not listed. The set of requests is a file of URLs
(:func:`probes_from_lines`) or the traffic the proxies saw (:func:`probes_from_traffic`),
where what the metrics do not record (path, method, a gRPC call's name, with hostname labels
off the hostname) is probed once per candidate that the policies distinguish, each probe
saying what it stands for.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from egresskit.errors import EgressKitError, PolicyError
from egresskit.explaining import dns_for, explain
from egresskit.manifests.model import GRPCRoute, HTTPRoute, K8sObject, TLSRoute
from egresskit.policy.decision import Decision
from egresskit.policy.snapshot import Snapshot
from egresskit.seen import SeenSeries

GROUPS = (
    "newly forbidden",
    "newly allowed",
    "newly redirected",
    "backend changed",
    "newly failing",
)
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


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """One probe under both policies."""

    probe: Probe
    before: Decision | None
    after: Decision | None
    #: One of GROUPS, or "" when the behaviour does not change.
    group: str
    error: str = ""


@dataclass(frozen=True, kw_only=True)
class Impact:
    """Every probe judged twice; ``changes`` are the ones a reviewer must read."""

    namespace: str
    outcomes: list[Outcome]
    #: What the request set could not know (hostname labels off, paths not recorded, ...).
    lost: list[str] = field(default_factory=list)

    @property
    def changes(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.group]

    def grouped(self) -> dict[str, list[Outcome]]:
        return {g: [o for o in self.outcomes if o.group == g] for g in GROUPS}

    def frame(self) -> pd.DataFrame:
        """Only the changes: one row each, in group order."""
        rows = [
            {
                "change": o.group,
                "request": o.probe.label,
                "before": _short(o.before),
                "after": _short(o.after),
                "seen": o.probe.seen,
                "note": o.probe.note or o.error,
            }
            for group in GROUPS
            for o in self.outcomes
            if o.group == group
        ]
        return pd.DataFrame(rows, columns=["change", "request", "before", "after", "seen", "note"])

    def text(self) -> str:
        lines = [
            f"{len(self.changes)} of {len(self.outcomes)} requests change "
            f"(client namespace {self.namespace})"
        ]
        for group, items in self.grouped().items():
            if not items:
                continue
            lines.append(f"{group} ({len(items)}):")
            for o in items:
                seen = f"  [seen {o.probe.seen:g}x]" if o.probe.seen else ""
                lines.append(f"  {o.probe.label}{seen}")
                lines.append(f"      before: {_short(o.before)}")
                lines.append(f"      after:  {_short(o.after)}")
                if o.probe.note:
                    lines.append(f"      note:   {o.probe.note}")
        same = [o.probe.label for o in self.outcomes if not o.group and not o.error]
        if same:
            lines.append(f"unchanged ({len(same)}): {', '.join(same)}")
        errors = [o for o in self.outcomes if o.error]
        for o in errors:
            lines.append(f"cannot judge {o.probe.label}: {o.error}")
        for text in self.lost:
            lines.append(f"not recorded: {text}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.text()


def _short(d: Decision | None) -> str:
    if d is None:
        return "(cannot be judged)"
    backend = f" -> {d.backend}" if d.outcome == "redirected" and d.backend else ""
    return d.summary() + backend


def classify(before: Decision, after: Decision) -> str:
    """Which group a (before, after) pair belongs to; "" when behaviour is unchanged."""
    if before.outcome != after.outcome:
        if after.outcome in ("forbidden", "allowed", "redirected"):
            return f"newly {after.outcome}"
        return "newly failing"
    if (before.backend, before.target, before.location) != (
        after.backend,
        after.target,
        after.location,
    ):
        return "backend changed"
    return ""


def impact(
    current: object,
    proposed: object,
    probes: Iterable[Probe],
    *,
    namespace: str = "default",
    hosts: dict[str, str] | None = None,
    lost: Sequence[str] = (),
) -> Impact:
    """Each probe under ``current`` and ``proposed`` (anything :func:`explain` takes)."""
    from egresskit.explaining import snapshot_of

    before_snap, after_snap = snapshot_of(current), snapshot_of(proposed)
    outcomes = []
    for probe in probes:
        try:
            kw: dict[str, Any] = {"namespace": namespace, "hosts": hosts, "method": probe.method}
            before = explain(before_snap, probe.url, headers=dict(probe.headers), **kw)
            after = explain(after_snap, probe.url, headers=dict(probe.headers), **kw)
        except EgressKitError as exc:
            outcomes.append(Outcome(probe=probe, before=None, after=None, group="", error=str(exc)))
            continue
        outcomes.append(
            Outcome(probe=probe, before=before, after=after, group=classify(before, after))
        )
    return Impact(namespace=namespace, outcomes=outcomes, lost=list(lost))


# ----------------------------------------------------------------------- request sets


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
