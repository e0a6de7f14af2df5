"""One outcome per request and per metric series, seen from the client and the proxy.

Job: say what happened to egress traffic -- ``allowed`` (forwarded to the original
destination), ``forbidden`` (the EgressNetwork's Deny), ``redirected`` (sent to an
in-cluster Service, or answered by a RequestRedirect) or ``failed`` (anything else, with
its reason) -- from the client's side (curl records) and from the proxy's side (counter
increases); :mod:`egresskit.analysis.reconciliation` checks that both sides count the
same.

Rules:

* A redirect answers 200 too, so labels and statuses alone are not enough: every answer
  is judged together with the objects in force at that moment
  (:class:`~egresskit.analysis.timeline.PolicyTimeline`).
* Proxy side (docs/facts/linkerd-egress.md sections 3, 4.4, 6.2): default routes by name
  (``*-egress-deny`` forbidden, ``*-egress-allow`` allowed); an explicit route is looked
  up by kind, namespace and name in the objects in force at the scrape, and its rules'
  backends decide (Service -> redirected, none or the parent EgressNetwork -> allowed, anything else
  invalid -> failed; a RequestRedirect filter -> redirected; rules that disagree -> failed,
  the route series cannot tell them apart). TLS/TCP ``error="forbidden"`` is forbidden,
  any other non-empty ``error`` label is failed.
* Client side: the policy engine's answer for the URL under the objects in force when the
  request started (:func:`egresskit.explaining.explain`), checked against what curl saw
  (a Deny must be a 403 or a closed TLS/TCP connection); the body prefix confirms a
  redirect ("You cannot go there right now"). Disagreement is ``failed`` with both sides
  in ``reason``.
* One request is one ``*_route_request_statuses_total`` increment (HTTP, gRPC) or one
  ``*_route_close_total`` increment (TLS, TCP: the error label is only known at close).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal
from urllib.parse import urlsplit

import numpy as np
import pandas as pd

# Re-exported (see __all__): the tutorial, tests and benchmarks import these from here,
# though they live in timeline.py and reconciliation.py.
from egresskit.analysis.reconciliation import Reconciliation, reconcile
from egresskit.analysis.timeline import PolicyTimeline, objects_from_changes
from egresskit.errors import EgressKitError
from egresskit.explaining import explain
from egresskit.manifests.model import Route
from egresskit.policy.decision import Decision
from egresskit.policy.snapshot import Snapshot

__all__ = [
    "OUTCOMES",
    "REDIRECT_TEXT",
    "REQUEST_METRICS",
    "Outcome",
    "PolicyTimeline",
    "Reconciliation",
    "classify_requests",
    "classify_series",
    "objects_from_changes",
    "reconcile",
    "route_outcome",
]

Outcome = Literal["allowed", "forbidden", "redirected", "failed"]
OUTCOMES: tuple[Outcome, ...] = ("allowed", "forbidden", "redirected", "failed")
#: The guide's internal-egress answer (``bb terminus --response-text``).
REDIRECT_TEXT = "You cannot go there right now"
#: Samples counting one request (HTTP/gRPC) or one connection (TLS/TCP), by family.
REQUEST_METRICS: Mapping[str, str] = {
    "outbound_http_route_request_statuses_total": "http",
    "outbound_grpc_route_request_statuses_total": "grpc",
    "outbound_tls_route_close_total": "tls",
    "outbound_tcp_route_close_total": "tcp",
}


# ------------------------------------------------------------------------ proxy side


def route_outcome(
    route: Route, *, parent_namespace: str, parent_name: str, snap: Snapshot
) -> tuple[Outcome, str]:
    """What an explicit route does with what it matches (docs/facts/linkerd-egress.md 4.4)."""
    found: dict[Outcome, list[str]] = {}
    rules = route.rules or ()
    for rule in rules:
        if any(f.request_redirect is not None for f in getattr(rule, "filters", ())):
            found.setdefault("redirected", []).append("RequestRedirect filter")
            continue
        if not rule.backend_refs:
            found.setdefault("allowed", []).append("no backendRefs: original destination")
        for b in rule.backend_refs:
            if b.is_service:
                if (b.namespace, b.name) in snap.services:
                    found.setdefault("redirected", []).append(f"Service {b.namespace}/{b.name}")
                else:
                    found.setdefault("failed", []).append(
                        f"invalid backend: Service {b.name} not found"
                    )
            elif b.is_egress_network and (b.namespace, b.name) == (parent_namespace, parent_name):
                found.setdefault("allowed", []).append(
                    "the parent EgressNetwork: original destination"
                )
            else:
                found.setdefault("failed", []).append(f"invalid backend {b.kind} {b.name}")
    if not rules:
        return "allowed", "no rules"
    if len(found) > 1:
        detail = "; ".join(f"{o}: {', '.join(sorted(set(r)))}" for o, r in found.items())
        return "failed", f"rules disagree, the route series cannot tell them apart ({detail})"
    ((outcome, reasons),) = found.items()
    return outcome, ", ".join(sorted(set(reasons)))


def _series_outcome(
    labels: Mapping[str, str], protocol: str, snap: Snapshot
) -> tuple[Outcome, str]:
    error = labels.get("error", "")
    kind, name = labels.get("route_kind", ""), labels.get("route_name", "")
    if protocol in ("tls", "tcp") and error == "forbidden":
        return "forbidden", f"connection closed by {name} (error=forbidden)"
    if error:
        return "failed", f"{name}: error={error}"
    if labels.get("parent_kind", "") != "EgressNetwork":
        return "allowed", f"not egress traffic (parent {labels.get('parent_kind', '')})"
    if kind == "default":
        # Default route names: docs/facts/linkerd-egress.md section 3.
        if name.endswith("-egress-deny"):
            return (
                "forbidden",
                f"{name} ({labels.get('http_status') or labels.get('grpc_status') or 'closed'})",
            )
        if name.endswith("-egress-allow"):
            return "allowed", name
        return "failed", f"unknown default route {name!r}"
    ns = labels.get("route_namespace", "")
    for obj in snap.objects:
        if obj.kind == kind and obj.name == name and (obj.namespace or "") == ns:
            outcome, why = route_outcome(
                obj,  # type: ignore[arg-type]
                parent_namespace=labels.get("parent_namespace", ""),
                parent_name=labels.get("parent_name", ""),
                snap=snap,
            )
            return outcome, f"{kind} {ns}/{name}: {why}"
    return "failed", f"{kind} {ns}/{name} is not among the objects in force"


def classify_series(increases: pd.DataFrame, timeline: PolicyTimeline) -> pd.DataFrame:
    """Rows of :data:`REQUEST_METRICS` with ``protocol``, ``outcome`` and ``reason``.

    ``increases`` is :func:`egresskit.analysis.counters.increases` output (or any frame
    with ``scraped_at``, ``metric`` and label columns). Each distinct label set and state
    is judged once, then merged back.
    """
    out = increases[increases["metric"].isin(list(REQUEST_METRICS))].copy()
    out["protocol"] = out["metric"].map(dict(REQUEST_METRICS)).astype("str")
    out["_state"] = timeline.index_at(out["scraped_at"]) if len(out) else np.zeros(0, "int64")
    label_cols = [c for c in _JUDGED_LABELS if c in out.columns]
    keys = ["_state", "protocol", *label_cols]
    combos = out[keys].drop_duplicates()
    outcomes: list[str] = []
    reasons: list[str] = []
    for row in combos.itertuples(index=False):
        values = dict(zip(keys, row, strict=True))
        o, r = _series_outcome(
            {k: str(values[k]) for k in label_cols},
            str(values["protocol"]),
            timeline.snapshot(int(values["_state"])),
        )
        outcomes.append(o)
        reasons.append(r)
    combos = combos.assign(
        outcome=pd.Series(outcomes, index=combos.index, dtype="str"),
        reason=pd.Series(reasons, index=combos.index, dtype="str"),
    )
    out = out.merge(combos, on=keys, how="left", sort=False).drop(columns=["_state"])
    out.attrs = dict(increases.attrs)  # the scrape list (counters.SCRAPES_ATTR) rides along
    return out


_JUDGED_LABELS = (
    "parent_kind",
    "parent_namespace",
    "parent_name",
    "route_group",
    "route_kind",
    "route_namespace",
    "route_name",
    "http_status",
    "grpc_status",
    "error",
)


# ----------------------------------------------------------------------- client side


def _client_outcome(
    decision: Decision | EgressKitError,
    *,
    exit_code: int,
    http_status: int | None,
    redirect_body: bool,
    error: str,
    redirect_text: str,
) -> tuple[Outcome, str, int]:
    """(outcome, reason, strength): 2 when what curl saw confirms the policy's answer
    (a 403 or a closed connection for a Deny, the redirect body or a 3xx for a redirect),
    1 when it is merely consistent with it, 0 when it contradicts it (``failed``)."""
    if exit_code < 0:
        return "failed", f"the backend could not run curl: {error}", 0
    if isinstance(decision, EgressKitError):
        return "failed", f"cannot evaluate the URL: {decision}", 0
    d = decision
    said = d.summary()
    if http_status is not None:
        if redirect_body:
            if d.outcome == "redirected":
                return "redirected", f"{said}; body: {redirect_text!r}", 2
            return "redirected", f"body {redirect_text!r} although the policy says {said}", 1
        if d.outcome == "forbidden":
            if http_status == 403 or d.grpc_status is not None:
                return "forbidden", said, 2
            return "failed", f"the policy in force says {said}, curl got HTTP {http_status}", 0
        if d.outcome == "redirected":
            if d.location is not None:
                if 300 <= http_status < 400:
                    return "redirected", said, 2
                return "failed", f"the policy in force says {said}, curl got HTTP {http_status}", 0
            return "redirected", said, 1
        if d.outcome == "allowed":
            return "allowed", f"{said}; HTTP {http_status} from the destination", 1
        return "failed", f"{said} ({d.reason})" if d.reason else said, 0
    if d.outcome == "forbidden" and d.family in ("tls", "tcp") and exit_code != 0:
        return "forbidden", f"{said}; curl exit {exit_code}", 2
    detail = f"curl exit {exit_code}" + (f": {error}" if error else "")
    return "failed", f"{detail} (the policy in force says {said})", 0


def classify_requests(
    requests: pd.DataFrame,
    timeline: PolicyTimeline,
    *,
    redirect_text: str = REDIRECT_TEXT,
    hosts: Mapping[str, str] | None = None,
    slack: float = 0.5,
) -> pd.DataFrame:
    """:meth:`egresskit.traffic.Traffic.frame` rows with ``hostname``, ``route_name``,
    ``outcome`` and ``reason``.

    A request in flight across a policy change may have met either policy, and a backend
    records a change just after it is in force: every state from ``at`` to
    ``completed_at + slack`` seconds is tried, and the one that what curl saw confirms
    best wins (the later one on a tie). The engine judges each distinct URL once per state.
    """
    out = requests.copy()
    empty = np.zeros(0, "int64")
    out["_s0"] = timeline.index_at(out["at"]) if len(out) else empty
    late = out["completed_at"] + pd.Timedelta(seconds=slack)
    out["_s1"] = timeline.index_at(late) if len(out) else empty
    out["hostname"] = out["url"].map(lambda u: urlsplit(u).hostname or "").astype("str")
    status = out["http_status"].astype("Int64")
    has_body = out["body"].str.contains(redirect_text, regex=False) if redirect_text else False
    out = out.assign(_status=status.fillna(-1).astype("int64"), _redirect_body=has_body)
    judged = ["_s0", "_s1", "url", "namespace", "exit_code", "_status", "_redirect_body", "error"]
    combos = out[judged].drop_duplicates()

    decisions: dict[tuple[int, str, str], Decision | EgressKitError] = {}

    def decision(state: int, url: str, ns: str) -> Decision | EgressKitError:
        key = (state, url, ns)
        if key not in decisions:
            try:
                decisions[key] = explain(timeline.snapshot(state), url, namespace=ns, hosts=hosts)
            except EgressKitError as exc:
                decisions[key] = exc
        return decisions[key]

    rows = []
    for s0, s1, url, ns, code, st, redirect_body, error in combos.itertuples(index=False):
        best: tuple[int, int, Outcome, str, str] | None = None
        for state in range(int(s0), int(s1) + 1):
            d = decision(state, str(url), str(ns))
            o, r, strength = _client_outcome(
                d,
                exit_code=int(code),
                http_status=None if st < 0 else int(st),
                redirect_body=bool(redirect_body),
                error=str(error),
                redirect_text=redirect_text,
            )
            route = d.labels.get("route_name", "") if isinstance(d, Decision) else ""
            if best is None or (strength, state) >= best[:2]:
                best = (strength, state, o, r, route)
        assert best is not None  # s0 <= s1: times only move forward
        rows.append(best[2:])
    combos = combos.assign(
        outcome=pd.Series([r[0] for r in rows], index=combos.index, dtype="str"),
        reason=pd.Series([r[1] for r in rows], index=combos.index, dtype="str"),
        route_name=pd.Series([r[2] for r in rows], index=combos.index, dtype="str"),
    )
    out = out.merge(combos, on=judged, how="left", sort=False)
    return out.drop(columns=["_s0", "_s1", "_status", "_redirect_body"])
