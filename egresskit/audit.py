"""Auditing egress policy: what happens to each request and why, and what a reviewer flags.

* :func:`explain_table`: the engine's answer for a list of requests, one row each.
* :func:`findings`: rules a reviewer would flag in a set of manifests, each with the
  request that proves it (so a finding is shown, not told).
* :func:`enforcement_delay`: how long after a policy change the client sees it.
* :func:`bypass_demo`: the guide's warning, shown: a workload without the proxy is not
  subject to any EgressNetwork.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from egresskit.explaining import explain, snapshot_of
from egresskit.manifests.model import (
    EgressNetwork,
    HTTPRoute,
    TCPRoute,
    TLSRoute,
)
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
        status = str(d.http_status) if d.http_status is not None else (d.error or "")
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


@dataclass(frozen=True, kw_only=True)
class Finding:
    severity: str  # "warning" or "info"
    obj: str
    finding: str
    proof_url: str | None = None
    proof: str = ""


def findings(manifests: object, *, namespace: str) -> pd.DataFrame:
    """What a reviewer would flag, each proven with the engine where a request can show it."""
    snap = _snapshot(manifests)
    out: list[Finding] = []
    for obj in snap.objects:
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
        if isinstance(obj, HTTPRoute | TLSRoute | TCPRoute):
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
    rows = []
    for f in out:
        proof = ""
        if f.proof_url:
            d = explain(snap, f.proof_url, namespace=namespace)
            via = d.route.name if d.route else "no route"
            proof = f"{f.proof_url} -> {d.outcome} via {via}"
        rows.append({"severity": f.severity, "object": f.obj, "finding": f.finding, "proof": proof})
    return pd.DataFrame(rows, columns=["severity", "object", "finding", "proof"])


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
    cluster: Any, urls: Sequence[str], *, namespace: str = "egress-test"
) -> pd.DataFrame:
    """The same requests from the meshed client and from a pod without the proxy."""
    cluster.apply(BYPASS_POD)
    rows = []
    for url in urls:
        for pod in ("client", "bypass"):
            r = cluster.curl("-s", "-o", "/dev/null", url, pod=pod, namespace=namespace)
            rows.append(
                {
                    "url": url,
                    "pod": pod,
                    "meshed": pod == "client",
                    "exit_code": r.exit_code,
                    "http_status": r.http_status,
                }
            )
    return pd.DataFrame(rows)
