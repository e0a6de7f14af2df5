"""One outcome per request and per metric series, and the two sides reconciled.

Job: say what happened to egress traffic -- ``allowed`` (forwarded to the original
destination), ``forbidden`` (the EgressNetwork's Deny), ``redirected`` (sent to an
in-cluster Service, or answered by a RequestRedirect) or ``failed`` (anything else, with
its reason) -- from the client's side (curl records) and from the proxy's side (counter
increases), then check that both sides count the same.

Rules:

* A redirect answers 200 too, so labels and statuses alone are not enough: every answer
  is judged together with the objects in force at that moment (:class:`PolicyTimeline`).
* Proxy side (shared spec sections 3, 4.4, 6.2): default routes by name (``*-egress-deny``
  forbidden, ``*-egress-allow`` allowed); an explicit route is looked up by kind, namespace
  and name in the objects in force at the scrape, and its rules' backends decide
  (Service -> redirected, none or the parent EgressNetwork -> allowed, anything else
  invalid -> failed; a RequestRedirect filter -> redirected; rules that disagree -> failed,
  the route series cannot tell them apart). TLS/TCP ``error="forbidden"`` is forbidden,
  any other non-empty ``error`` label is failed.
* Client side: the policy engine's answer for the URL under the objects in force when the
  request started (:func:`egresskit.explain.explain`), checked against what curl saw
  (a Deny must be a 403 or a closed TLS/TCP connection); the body prefix confirms a
  redirect ("You cannot go there right now"). Disagreement is ``failed`` with both sides
  in ``reason``.
* One request is one ``*_route_request_statuses_total`` increment (HTTP, gRPC) or one
  ``*_route_close_total`` increment (TLS, TCP: the error label is only known at close).
* Reconciliation assigns each request to the first scrape at or after it completed, so
  both sides are counted over the same scrape intervals; requests completed before the
  first scrape (its counters are masked) or after the last one are left out and counted.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal
from urllib.parse import urlsplit

import numpy as np
import pandas as pd

from egresskit.analysis.counters import scrapes_from
from egresskit.cluster.base import ChangeRecord, Cluster
from egresskit.errors import BackendError, EgressKitError
from egresskit.explain import explain, with_cluster_ips
from egresskit.manifests import load_manifests
from egresskit.manifests.model import K8sObject, Route
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
_EPOCH = datetime.min.replace(tzinfo=UTC)

ObjectsSource = Callable[[], Sequence[K8sObject]]


# ------------------------------------------------------------------- objects over time


class PolicyTimeline:
    """The objects in force over time: a list of (from-time, objects) states.

    A state holds from its time until the next one; the first also holds before its time.
    :meth:`sync` adds a state for new ``cluster.changes`` by calling ``source`` (e.g. the
    local backend's ``cluster.objects``): when several changes arrive between two syncs
    only the latest state is known, so it is dated at the latest of them and the others
    are listed in :attr:`gaps`. Thread-safe.
    """

    def __init__(
        self,
        states: Iterable[tuple[datetime, Sequence[K8sObject]]] = (),
        *,
        source: ObjectsSource | None = None,
        changes: Callable[[], Sequence[ChangeRecord]] | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._times: list[datetime] = []
        self._snaps: list[Snapshot] = []
        self._source = source
        self._changes = changes
        self._seen = len(changes()) if changes is not None else 0
        self.gaps: list[ChangeRecord] = []
        for at, objects in sorted(states, key=lambda s: s[0]):
            self.add(at, objects)

    @classmethod
    def of(cls, cluster: Cluster, objects: ObjectsSource | None = None) -> PolicyTimeline:
        """Track ``cluster``: the current objects now, then one state per new change.

        ``objects`` defaults to ``cluster.objects`` when the backend has it (local), else
        to :func:`objects_from_changes`.
        """
        source: ObjectsSource = (
            objects or getattr(cluster, "objects", None) or (objects_from_changes(cluster))
        )
        timeline = cls(source=source, changes=lambda: cluster.changes)
        timeline.add(_EPOCH, source())
        return timeline

    def add(self, at: datetime, objects: Sequence[K8sObject] | Snapshot) -> None:
        """Objects in force from ``at`` (timezone-aware) on."""
        if at.tzinfo is None:
            raise ValueError(f"at: expected a timezone-aware datetime, found {at.isoformat()}")
        snap = (
            objects if isinstance(objects, Snapshot) else Snapshot.build(with_cluster_ips(objects))
        )
        with self._lock:
            i = bisect.bisect_right(self._times, at)
            self._times.insert(i, at)
            self._snaps.insert(i, snap)

    def sync(self) -> int:
        """Record a state for changes made since the last sync; returns how many."""
        if self._changes is None or self._source is None:
            return 0
        changes = list(self._changes())
        new = changes[self._seen :]
        if not new:
            return 0
        objects = self._source()
        self._seen = len(changes)
        self.gaps.extend(new[:-1])
        self.add(new[-1].at, objects)
        return len(new)

    @property
    def times(self) -> list[datetime]:
        with self._lock:
            return list(self._times)

    def index_at(self, times: pd.Series) -> np.ndarray:
        """The state index in force at each time (vectorised)."""
        with self._lock:
            if not self._times:
                raise ValueError("PolicyTimeline: expected at least one state, found none")
            edges = pd.to_datetime(pd.Series(self._times), utc=True).astype("datetime64[us, UTC]")
        t = pd.to_datetime(times, utc=True).astype("datetime64[us, UTC]")
        found = np.searchsorted(edges.to_numpy(), t.to_numpy(), side="right") - 1
        clipped: np.ndarray = np.clip(found, 0, None).astype("int64")
        return clipped

    def snapshot(self, index: int) -> Snapshot:
        with self._lock:
            return self._snaps[index]

    def snapshot_at(self, at: datetime) -> Snapshot:
        return self.snapshot(int(self.index_at(pd.Series([at]))[0]))

    def objects_at(self, at: datetime) -> tuple[K8sObject, ...]:
        return self.snapshot_at(at).objects


def objects_from_changes(cluster: Cluster) -> ObjectsSource:
    """A source for backends without ``objects()``: ``get`` every object any change named
    ("Kind ns/name"), skipping the ones that are gone (``BackendError``)."""

    def source() -> list[K8sObject]:
        docs: dict[str, object] = {}
        for change in cluster.changes:
            for ref in change.objects:
                kind, _, rest = ref.partition(" ")
                ns, _, name = rest.rpartition("/")
                try:
                    docs[ref] = cluster.get(kind, name, namespace=ns or None)
                except BackendError:
                    docs.pop(ref, None)
        return load_manifests(list(docs.values())) if docs else []

    return source


# ------------------------------------------------------------------------ proxy side


def route_outcome(
    route: Route, *, parent_namespace: str, parent_name: str, snap: Snapshot
) -> tuple[Outcome, str]:
    """What an explicit route does with what it matches (shared spec 4.4)."""
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
        # Default route names: shared spec section 3.
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


# -------------------------------------------------------------------- reconciliation


@dataclass(frozen=True, kw_only=True)
class Reconciliation:
    """Client and proxy counts per interval and outcome; ``.ok`` when they all agree."""

    table: pd.DataFrame  # interval, outcome, client, proxy, diff
    #: Requests left out: completed before the first scrape or after the last one.
    excluded: int
    scrapes: int
    notes: tuple[str, ...] = field(default=())

    @property
    def mismatches(self) -> pd.DataFrame:
        return self.table[self.table["diff"] != 0]

    @property
    def ok(self) -> bool:
        return bool(self.scrapes >= 2 and self.mismatches.empty)

    def __str__(self) -> str:
        head = "client and proxy agree" if self.ok else "client and proxy DISAGREE"
        lines = [
            f"{head}: {len(self.table)} rows over {self.scrapes} scrapes, "
            f"{self.excluded} requests outside the scraped span"
        ]
        for row in self.mismatches.itertuples(index=False):
            lines.append(
                f"  {row.interval:%Y-%m-%dT%H:%M:%SZ} {row.outcome}: "
                f"client {row.client}, proxy {row.proxy} (diff {row.diff:+d})"
            )
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)


def reconcile(
    requests: pd.DataFrame,
    series: pd.DataFrame,
    *,
    interval: str | None = None,
    pod: str | None = None,
    scrapes: pd.DataFrame | None = None,
) -> Reconciliation:
    """Compare :func:`classify_requests` counts with :func:`classify_series` increases.

    ``interval`` (a pandas frequency such as ``"30s"``) groups scrape intervals; None
    compares run totals. ``pod`` selects the proxy's pod (default: the requests' pod).
    ``scrapes`` lists the successful scrapes (``Scraper.scrapes_frame()``); by default
    the list carried in ``series.attrs`` (counters.SCRAPES_ATTR), else the times of ``series``.
    Per-interval counts can differ by one at a boundary when a scrape lands between the
    proxy recording an answer and curl finishing reading it; totals cannot.
    """
    if scrapes is None:
        scrapes = scrapes_from(series)
    if pod is None and len(requests) and "pod" in requests.columns:
        pod = str(requests["pod"].iloc[0])
    proxy = series if pod is None else series[series["pod"] == pod]
    known = proxy if scrapes is None else scrapes if pod is None else scrapes[scrapes["pod"] == pod]
    scrape_times = np.sort(known["scraped_at"].unique()) if len(known) else np.array([])
    if len(scrape_times) == 0:
        empty = pd.DataFrame({"interval": [], "outcome": [], "client": [], "proxy": [], "diff": []})
        return Reconciliation(table=empty, excluded=len(requests), scrapes=0, notes=("no scrapes",))
    times = pd.Series(pd.to_datetime(scrape_times, utc=True)).astype("datetime64[us, UTC]")
    done = requests["completed_at"].astype("datetime64[us, UTC]")
    pos = np.searchsorted(times.to_numpy(), done.to_numpy(), side="left")
    inside = (done > times.iloc[0]).to_numpy() & (pos < len(times))
    client = pd.DataFrame(
        {
            "scrape": times.to_numpy()[np.clip(pos, 0, len(times) - 1)][inside],
            "outcome": requests["outcome"].to_numpy()[inside],
        }
    )
    client["n"] = 1
    proxy = pd.DataFrame(
        {
            "scrape": proxy["scraped_at"].to_numpy(),
            "outcome": proxy["outcome"].to_numpy(),
            "n": proxy["increase"].fillna(0).to_numpy(),
        }
    )
    proxy = proxy[proxy["scrape"] > times.iloc[0]]

    def bucket(frame: pd.DataFrame) -> pd.Series:
        at = pd.to_datetime(frame["scrape"], utc=True)
        return at.dt.floor(interval) if interval else pd.Series(times.iloc[0], index=frame.index)

    counts = []
    for name, frame in (("client", client), ("proxy", proxy)):
        grouped = frame.assign(interval=bucket(frame)).groupby(["interval", "outcome"])["n"].sum()
        counts.append(grouped.rename(name))
    table = pd.concat(counts, axis=1).fillna(0).astype("int64").reset_index()
    table["diff"] = table["client"] - table["proxy"]
    table = table.sort_values(["interval", "outcome"]).reset_index(drop=True)
    notes: tuple[str, ...] = ()
    if len(requests) and pod is not None and not (series["pod"] == pod).any():
        notes = (f"no proxy series for pod {pod}",)
    return Reconciliation(
        table=table, excluded=int((~inside).sum()), scrapes=len(times), notes=notes
    )
