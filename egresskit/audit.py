"""Auditing egress policy: what happens to each request and why, and what a reviewer flags.

* :func:`explain_table`: the engine's answer for a list of requests, one row each.
* :func:`findings` (:func:`finding_list`): rules a reviewer would flag in a set of
  manifests, each with the request that proves it (so a finding is shown, not told).
* :func:`audit`: both for a set of requests, with a severity to gate CI on.
* :func:`enforcement_delay`: how long after a policy change the client sees it.
* :func:`bypass_demo`: the guide's warning, shown: a workload without the proxy is not
  subject to any EgressNetwork.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import pandas as pd

from egresskit.errors import ManifestError, Problem
from egresskit.explaining import explain, snapshot_of
from egresskit.manifests import load_manifests
from egresskit.manifests.model import (
    EgressNetwork,
    GRPCRoute,
    HTTPRoute,
    TCPRoute,
    TLSRoute,
)
from egresskit.policy.decision import Decision
from egresskit.policy.snapshot import Snapshot

COLUMNS = ["url", "outcome", "status", "route", "backend", "reason"]


def _snapshot(manifests: object) -> Snapshot:
    return snapshot_of(manifests)


def explain_table(
    manifests: object,
    urls: Iterable[str],
    *,
    namespace: str,
    hosts: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """One row per URL: outcome, HTTP status or error, route, backend and the reason."""
    snap = _snapshot(manifests)
    rows = []
    for url in urls:
        d = explain(snap, url, namespace=namespace, hosts=hosts)
        status = client_sees(d)
        rows.append(
            {
                "url": url,
                "outcome": d.outcome,
                "status": status,
                "route": d.route.name if d.route else "",
                "backend": str(d.backend) if d.backend else "",
                "reason": d.reason,
            }
        )
    return pd.DataFrame(rows, columns=COLUMNS)


def client_sees(d: Decision) -> str:
    """The status column: what the client gets back. The engine knows the answers the
    proxy makes itself (403, 500, a redirect); a forwarded request is answered by its
    destination, so the column says where it went instead of leaving a blank."""
    if d.http_status is not None:
        where = f" -> {d.location}" if d.location else ""
        return f"HTTP {d.http_status} from the proxy{where}"
    if d.error:
        return f"connection closed by the proxy ({d.error})"
    if d.outcome == "redirected" and d.backend is not None:
        return f"the answer of {d.backend} (the proxy swapped the backend)"
    if d.outcome == "allowed":
        return "the destination's own answer (forwarded)"
    return d.outcome


#: Severities from least to most serious; ``--fail-on`` takes one of them.
SEVERITIES = ("info", "warning", "error")


@dataclass(frozen=True, kw_only=True)
class Finding:
    severity: str  # one of SEVERITIES
    obj: str
    finding: str
    proof_url: str | None = None
    proof: str = ""
    #: The engine's answer for ``proof_url``: the request that shows the finding.
    proof_decision: Decision | None = None


def finding_list(manifests: object, *, namespace: str = "default") -> list[Finding]:
    """What a reviewer would flag, each proven with the engine where a request can show it."""
    snap = _snapshot(manifests)
    out: list[Finding] = []
    for obj in snap.objects:
        if isinstance(obj, EgressNetwork):
            cond = snap.egress_network_status.get((obj.metadata.namespace or "", obj.name))
            if cond is not None and not cond.status:
                out.append(
                    Finding(
                        severity="error",
                        obj=obj.display,
                        finding=f"not Accepted ({cond.reason}: {cond.message}): no route "
                        "can attach to it",
                    )
                )
        if isinstance(obj, EgressNetwork) and obj.traffic_policy == "Allow":
            out.append(
                Finding(
                    severity="warning",
                    obj=obj.display,
                    finding="trafficPolicy Allow: anything no route matches leaves the "
                    "cluster untouched",
                    proof_url="http://unlisted.example.net/",
                )
            )
        if isinstance(obj, HTTPRoute) and not obj.hostnames:
            path = _first_path(obj)
            out.append(
                Finding(
                    severity="warning",
                    obj=obj.display,
                    finding=f"no hostnames: its rules ({path} ...) apply to every external "
                    "host, not only the one it was written for",
                    proof_url=f"http://unlisted.example.net{path if path != '/' else '/x'}",
                )
            )
        if isinstance(obj, TLSRoute) and not obj.hostnames:
            out.append(
                Finding(
                    severity="warning",
                    obj=obj.display,
                    finding="no hostnames: every TLS destination on this port is allowed, "
                    "whatever its SNI",
                    proof_url="https://unlisted.example.net/",
                )
            )
        if isinstance(obj, TCPRoute):
            out.append(
                Finding(
                    severity="info",
                    obj=obj.display,
                    finding="TCPRoutes match nothing: only the oldest applies and it "
                    "replaces the port's default route",
                )
            )
        if isinstance(obj, HTTPRoute | TLSRoute | TCPRoute | GRPCRoute):
            for entry in snap.route_status.get(obj.key, ()):
                if not entry.accepted.status:
                    out.append(
                        Finding(
                            severity="warning",
                            obj=obj.display,
                            finding=f"not Accepted ({entry.accepted.reason}) on "
                            f"{entry.parent_ref.name}:{entry.parent_ref.port}: it has no effect",
                        )
                    )
    proven = []
    for f in out:
        if f.proof_url:
            d = explain(snap, f.proof_url, namespace=namespace)
            via = d.route.name if d.route else "no route"
            f = replace(f, proof=f"{f.proof_url} -> {d.outcome} via {via}", proof_decision=d)
        proven.append(f)
    return proven


def findings(manifests: object, *, namespace: str = "default") -> pd.DataFrame:
    """:func:`finding_list` as a table: severity, object, finding, proof."""
    rows = [
        {"severity": f.severity, "object": f.obj, "finding": f.finding, "proof": f.proof}
        for f in finding_list(manifests, namespace=namespace)
    ]
    return pd.DataFrame(rows, columns=["severity", "object", "finding", "proof"])


def default_urls(manifests: object) -> list[str]:
    """Requests worth explaining when none are given: one per hostname and path the routes
    name (each on its parent port), and a host no route names on each of those ports."""
    snap = _snapshot(manifests)
    urls: dict[str, None] = {}
    for (_, _, port), items in sorted(snap.attached.items()):
        for item in items:
            route = item.route
            hosts = [h for h in getattr(route, "hostnames", ()) if not h.startswith("*")]
            if isinstance(route, HTTPRoute):
                paths = [
                    m.path.value
                    for r in route.rules
                    for m in r.matches
                    if m.path.type != "RegularExpression"
                ] or ["/"]
                for host in hosts or ["unlisted.example.net"]:
                    for path in paths:
                        urls[f"http://{host}{'' if port == 80 else f':{port}'}{path}"] = None
            elif isinstance(route, TLSRoute):
                for host in hosts or ["unlisted.example.net"]:
                    urls[f"https://{host}{'' if port == 443 else f':{port}'}/"] = None
            elif isinstance(route, TCPRoute):
                urls[f"tcp://unlisted.example.net:{port}"] = None
    for url in ("http://unlisted.example.net/", "https://unlisted.example.net/"):
        urls[url] = None
    return list(urls)


@dataclass(frozen=True, kw_only=True)
class Audit:
    """Findings and the explain table for a set of requests, over one set of manifests."""

    namespace: str
    findings: list[Finding]
    requests: list[tuple[str, Decision]]

    def worst(self) -> str | None:
        found = [SEVERITIES.index(f.severity) for f in self.findings]
        return SEVERITIES[max(found)] if found else None

    def fails(self, fail_on: str | None) -> bool:
        """True when a finding is at least as serious as ``fail_on`` (None: never)."""
        worst = self.worst()
        if fail_on is None or worst is None:
            return False
        return SEVERITIES.index(worst) >= SEVERITIES.index(fail_on)

    def text(self) -> str:
        lines = [f"findings ({len(self.findings)}):"]
        for f in sorted(self.findings, key=lambda f: -SEVERITIES.index(f.severity)):
            lines.append(f"  {f.severity.upper():<7} {f.obj}: {f.finding}")
            if f.proof:
                lines.append(f"          proof: {f.proof}")
        lines.append(f"requests (client namespace {self.namespace}):")
        width = max((len(u) for u, _ in self.requests), default=0)
        for url, d in self.requests:
            lines.append(f"  {url:<{width}}  {d.summary()}")
        return "\n".join(lines)


def audit(
    manifests: object,
    urls: Iterable[str] | None = None,
    *,
    namespace: str = "default",
    hosts: Mapping[str, str] | None = None,
) -> Audit:
    """The reviewer's findings and the engine's answer for ``urls`` (default:
    :func:`default_urls`)."""
    snap = _snapshot(manifests)
    chosen = list(urls) if urls is not None else default_urls(snap)
    return Audit(
        namespace=namespace,
        findings=finding_list(snap, namespace=namespace),
        requests=[(u, explain(snap, u, namespace=namespace, hosts=hosts)) for u in chosen],
    )


def _first_path(route: HTTPRoute) -> str:
    for rule in route.rules:
        for m in rule.matches:
            return m.path.value
    return "/"


def enforcement_delay(
    cluster: Any,
    change: Any,
    *,
    url: str,
    expect_status: int,
    pod: str = "client",
    namespace: str = "egress-test",
    timeout: float = 60.0,
) -> float:
    """Seconds from calling ``change()`` until the client first sees ``expect_status``.

    On a real cluster this includes Linkerd's status controller and the policy push
    (spec 4.3: up to ~10 s); the local backend applies changes before ``apply`` returns.
    """
    start = time.monotonic()
    change()
    deadline = start + timeout
    last = None
    while time.monotonic() < deadline:
        r = cluster.curl("-s", "-o", "/dev/null", url, pod=pod, namespace=namespace)
        last = r.http_status
        if last == expect_status:
            return time.monotonic() - start
        time.sleep(0.05)
    from egresskit.errors import WaitTimeout

    raise WaitTimeout(f"{url} to answer {expect_status}", timeout, f"HTTP {last}")


#: The guide's meshed client, and the annotation that meshes a pod.
MESHED_POD = "client"
INJECT = "linkerd.io/inject"

BYPASS_POD = """
apiVersion: v1
kind: Pod
metadata:
  name: bypass
  namespace: egress-test
spec:
  containers:
  - name: client
    image: curlimages/curl
    command: ["sh", "-c", "sleep infinity"]
"""


def bypass_demo(
    cluster: Any,
    urls: Sequence[str],
    *,
    namespace: str = "egress-test",
    manifest: str = BYPASS_POD,
    source: str = "bypass pod",
) -> pd.DataFrame:
    """The same requests from the meshed client and from the Pod ``manifest`` describes
    (without ``linkerd.io/inject``, so no proxy is injected: nothing judges its traffic)."""
    objects = load_manifests(manifest, default_namespace=namespace, source_name=source)
    if len(objects) != 1 or objects[0].kind != "Pod":
        found = ", ".join(o.display for o in objects) or "no document"
        not_one_pod = Problem(
            source=source, document=None, obj=None, path="", expected="one Pod", found=found
        )
        raise ManifestError([not_one_pod])
    pod = objects[0]
    inject = pod.metadata.annotation(INJECT) or ""

    def problem(path: str, expected: str, found: str) -> Problem:
        return Problem(
            source=source, document=1, obj=pod.display, path=path, expected=expected, found=found
        )

    # What would make the demo show something else than a pod without a proxy beside the
    # meshed client: another namespace (curl asks this one), the client itself, a proxy.
    problems = []
    if (pod.namespace or namespace) != namespace:
        problems.append(problem("metadata.namespace", namespace, pod.namespace or ""))
    if pod.name == MESHED_POD:
        problems.append(problem("metadata.name", f"a name other than {MESHED_POD}", pod.name))
    if inject == "enabled":
        problems.append(
            problem(f"metadata.annotations.{INJECT}", "absent or disabled (no proxy)", inject)
        )
    if problems:
        raise ManifestError(problems)
    bypass = pod.name
    cluster.apply(manifest)
    rows = []
    for url in urls:
        for pod_name in (MESHED_POD, bypass):
            r = cluster.curl("-s", "-o", "/dev/null", url, pod=pod_name, namespace=namespace)
            rows.append(
                {
                    "url": url,
                    "pod": pod_name,
                    "meshed": pod_name == MESHED_POD,
                    "exit_code": r.exit_code,
                    "http_status": r.http_status,
                }
            )
    return pd.DataFrame(rows)
