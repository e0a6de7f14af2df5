"""A guide step as a lesson: apply YAML, say what changed, predict a request, observe it.

The notebooks show every manifest as YAML in the cell that applies it; this module is what
that cell calls (through :class:`egresskit.tutorial.Tutorial`), on any backend:

* :meth:`Lesson.apply` / :meth:`Lesson.patch` apply and return an :class:`ApplyReport`:
  one line per object, as ``kubectl apply`` prints it (``created`` / ``configured`` /
  ``unchanged``), each followed by Linkerd's verdict from the object's status (Accepted, or
  the condition's reason and message when not).
* :meth:`Lesson.explain` asks the policy engine (:func:`egresskit.explaining.explain`) about one
  request under the objects in force now and under those in force before the last change,
  so a learner sees the decision move before the traffic confirms it.
* :meth:`Lesson.observe` runs the client's curl once and shows what the client saw and the
  proxy series that counted it, one label per line as the guide prints them.

The objects in force are recorded here from what the cluster returns after each change
(``get``, creation timestamps included, so route age ties break as on the cluster).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from egresskit.analysis.parse import parse_proxy_metrics
from egresskit.cluster.base import Cluster, CurlResult, Manifests
from egresskit.errors import EgressKitError, WaitTimeout
from egresskit.explaining import explain
from egresskit.manifests import load_manifests
from egresskit.manifests.model import K8sObject
from egresskit.policy.decision import Decision

Key = tuple[str, str, str]  # (kind, namespace, name)

#: The route families a request can be counted in, by what the client sends
#: (docs/facts/linkerd-egress.md 6.2): HTTP and gRPC requests, TLS and opaque connections.
BACKENDS = "outbound_http_route_backend_requests_total"
FAMILIES = (
    "outbound_http_route_request_statuses_total",
    "outbound_grpc_route_request_statuses_total",
    "outbound_tls_route_open_total",
    "outbound_tls_route_close_total",
    "outbound_tcp_route_open_total",
    "outbound_tcp_route_close_total",
    #: Where a forwarded HTTP request went (``backend_kind="Service"`` for the redirect).
    BACKENDS,
)

#: Fields the API server writes itself: not part of what a learner applies.
_SERVER_META = ("uid", "resourceVersion", "creationTimestamp", "generation", "managedFields")

#: Synthesized default routes: (traffic, Allow name, Deny name, what a denied client sees).
#: docs/facts/linkerd-egress.md section 3; tests/test_lesson.py asks the engine for each.
DEFAULT_ROUTES = (
    ("plaintext HTTP (any port with HTTP routes, or none)", "http-egress-allow",
     "http-egress-deny", "HTTP 403, header `l5d-proxy-error: traffic not allowed`"),
    ("TLS on a port with at least one TLSRoute (SNI no TLSRoute matches)", "tls-egress-allow",
     "tls-egress-deny", "connection closed during the handshake (curl exit 35)"),
    ("anything not HTTP on a port with no TLSRoute/TCPRoute (e.g. HTTPS before any TLSRoute)",
     "tcp-egress-allow", "tcp-egress-deny", "connection closed (curl exit 35 for HTTPS)"),
    ("gRPC on a port with at least one GRPCRoute", "grpc-egress-allow", "grpc-egress-deny",
     "HTTP 200 with `grpc-status: 7` (PERMISSION_DENIED)"),
)  # fmt: skip


def default_routes_markdown() -> str:
    """The default routes as a markdown table, for the notebooks."""
    rows = [
        "| traffic | `trafficPolicy: Allow` | `trafficPolicy: Deny` | a denied client sees |",
        "|---|---|---|---|",
    ]
    rows += [f"| {t} | `{a}` | `{d}` | {seen} |" for t, a, d, seen in DEFAULT_ROUTES]
    return "\n".join(rows)


# ------------------------------------------------------------------------ reports


@dataclass(frozen=True, kw_only=True)
class ObjectResult:
    """One object of an apply: what happened to it and what Linkerd said."""

    obj: str  # kubectl's name: "httproute.gateway.networking.k8s.io/httpbin-get"
    verb: str  # created | configured | unchanged
    #: Linkerd's verdict, "" for kinds Linkerd gives no status (Pods, Services, ...).
    verdict: str = ""
    accepted: bool = True

    def __str__(self) -> str:
        line = f"{self.obj} {self.verb}"
        return line + (f"\n  Linkerd: {self.verdict}" if self.verdict else "")


@dataclass(frozen=True, kw_only=True)
class ApplyReport:
    """What an apply or patch did, printed as plain text in a notebook."""

    results: tuple[ObjectResult, ...]

    @property
    def accepted(self) -> bool:
        return all(r.accepted for r in self.results)

    def __str__(self) -> str:
        return "\n".join(str(r) for r in self.results)

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(str(self))


@dataclass(frozen=True, kw_only=True)
class Prediction:
    """The engine's decision for one request now, and before the last change."""

    url: str
    now: Decision
    before: Decision | None
    change: str = ""

    def __str__(self) -> str:
        d = self.now
        lines = [f"{self.url}"]
        if self.before is not None:
            moved = "" if self.before.summary() != d.summary() else "   (no change)"
            lines.append(f"  before {self.change or 'the last change'}: {self.before.summary()}")
            lines.append(f"  now: {d.summary()}{moved}")
        else:
            lines.append(f"  now: {d.summary()}")
        lines.append(f"  parent:  {d.parent or '(none)'}")
        lines.append(f"  route:   {d.route or '(none)'}")
        lines.append(f"  backend: {d.backend or '(none)'}")
        if d.reasons:
            lines.append("  why:")
            lines.extend(f"    - {r}" for r in d.reasons)
        return "\n".join(lines)

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(str(self))


@dataclass(frozen=True, kw_only=True)
class Counted:
    """One proxy series that moved, with how much."""

    family: str
    labels: tuple[tuple[str, str], ...]
    increase: float

    def label(self, name: str) -> str:
        return dict(self.labels).get(name, "")

    def __str__(self) -> str:
        # One label per line, as the guide prints them.
        body = ",\n".join(f'  {k}="{v}"' for k, v in self.labels)
        return f"{self.family}{{\n{body}\n}} +{self.increase:g}"


@dataclass(frozen=True, kw_only=True)
class Observation:
    """One curl from the client: what it saw, and what the proxy counted for it."""

    url: str
    args: tuple[str, ...]
    result: CurlResult
    counted: tuple[Counted, ...] = field(default=())
    #: Set when the wait for the proxy's count ran out (Lesson.moved): what it waited for.
    waited: str = ""

    @property
    def client_view(self) -> str:
        r = self.result
        if r.http_status is not None:
            return f"HTTP {r.http_status}"
        message = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ""
        return f"no HTTP response, curl exit {r.exit_code}" + (f" ({message})" if message else "")

    def __str__(self) -> str:
        lines = [f"$ curl {' '.join(self.args)}", f"client: {self.client_view}"]
        if "-i" in self.args and self.result.http_status is not None:
            # curl -i: the response head, as curl prints it.
            head = self.result.stdout.replace("\r\n", "\n").split("\n\n", 1)[0]
            lines.extend(f"  < {line}" for line in head.splitlines())
        if self.counted:
            lines.append("proxy (linkerd dg proxy-metrics, the series this request moved):")
            lines.extend(str(c) for c in self.counted)
        else:
            lines.append("proxy: no route series moved for this request")
        if self.waited:
            lines.append(f"note: the proxy's count may be incomplete: {self.waited}")
        return "\n".join(lines)

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(str(self))


# ------------------------------------------------------------------------ the lesson


class Lesson:
    """Applies, patches, explains and observes on one cluster, for one client pod."""

    def __init__(self, cluster: Cluster, *, pod: str = "client", namespace: str = "egress-test"):
        self.cluster = cluster
        self.pod = pod
        self.namespace = namespace
        #: The objects in force, as the cluster returned them after each change.
        self.objects: dict[Key, dict[str, Any]] = {}
        self._before: dict[Key, dict[str, Any]] | None = None
        self._last_change = ""
        #: What the last :meth:`moved` waited for when its bound ran out ("" if it did not).
        self.expired = ""

    # -- changes ----------------------------------------------------------------------

    def apply(self, manifests: Manifests) -> ApplyReport:
        """Apply all or nothing (the cluster validates first), then report each object."""
        parsed = load_manifests(manifests)
        previous = {_key(o): self._get(o.kind, o.name, o.namespace) for o in parsed}
        self.cluster.apply(manifests)
        self._before = dict(self.objects)
        results = []
        for obj in parsed:
            now = self._get(obj.kind, obj.name, obj.namespace)
            before = previous[_key(obj)]
            if before is None:
                verb = "created"
            elif _content(before) == _content(now or {}) or _content(obj.raw) == _content(before):
                verb = "unchanged"
            else:
                verb = "configured"
            if now is not None:
                self.objects[_key(obj)] = _applied(now)
            results.append(_result(obj.kind, obj.group, obj.name, verb, now or {}))
        self._last_change = "this apply"
        return ApplyReport(results=tuple(results))

    def patch(self, kind: str, name: str, body: Mapping[str, Any] | str) -> ApplyReport:
        """``kubectl patch KIND NAME -p BODY --type=merge`` and the verdict after it."""
        before = self._get(kind, name, self.namespace)
        out = self.cluster.patch(kind, name, body, namespace=self.namespace)
        self._before = dict(self.objects)
        real_kind = str(out.get("kind", kind))
        group = str(out.get("apiVersion", "")).rpartition("/")[0]
        self.objects[(real_kind, self.namespace, name)] = _applied(out)
        verb = "patched" if before is None or _content(before) != _content(out) else "unchanged"
        if verb == "unchanged":
            verb = "patched (no change)"
        self._last_change = "this patch"
        return ApplyReport(results=(_result(real_kind, group, name, verb, out),))

    def delete(self, kind: str, name: str, namespace: str | None = None) -> None:
        ns = namespace if namespace is not None else self.namespace
        self.cluster.delete(kind, name, namespace=ns)
        self._before = dict(self.objects)
        for key in [k for k in self.objects if k[0].lower() == kind.lower() and k[2] == name]:
            if key[1] == ns or kind.lower() == "namespace":
                del self.objects[key]
        if kind.lower() == "namespace":
            for key in [k for k in self.objects if k[1] == name]:
                del self.objects[key]

    def forget(self) -> None:
        """The namespace is gone (cleanup): nothing is in force any more."""
        self.objects.clear()
        self._before = None

    # -- reading ----------------------------------------------------------------------

    def in_force(self) -> list[dict[str, Any]]:
        return list(self.objects.values())

    def decide(
        self,
        url: str,
        *,
        method: str = "GET",
        headers: Mapping[str, str] | None = None,
        objects: Sequence[Mapping[str, Any]] | None = None,
    ) -> Decision:
        docs = list(objects if objects is not None else self.in_force())
        return explain(docs, url, namespace=self.namespace, method=method, headers=headers)

    def explain(
        self, url: str, *, method: str = "GET", headers: Mapping[str, str] | None = None
    ) -> Prediction:
        now = self.decide(url, method=method, headers=headers)
        before = None
        if self._before:
            before = self.decide(
                url, method=method, headers=headers, objects=list(self._before.values())
            )
        return Prediction(url=url, now=now, before=before, change=self._last_change)

    def observe(self, *args: str, backends: bool = False, settle: float = 2.0) -> Observation:
        """Run ``curl ARGS`` from the client once; report its view and the series it moved
        (with ``backends``, also where the proxy sent it: the backend series)."""
        url = next((a for a in args if "://" in a), "")
        before = self.samples()
        result = self.cluster.curl(*args, pod=self.pod, namespace=self.namespace)
        counted = self.moved(before, url, within=settle)
        if not backends:
            counted = tuple(c for c in counted if c.family != BACKENDS)
        return Observation(
            url=url, args=tuple(args), result=result, counted=counted, waited=self.expired
        )

    def samples(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """The route families' samples now, by (family, labels)."""
        scrape = parse_proxy_metrics(self.cluster.proxy_metrics(self.pod, namespace=self.namespace))
        return {(s.metric, s.labels): s.value for s in scrape.samples if s.metric in FAMILIES}

    def moved(
        self,
        before: Mapping[tuple[str, tuple[tuple[str, str], ...]], float],
        url: str,
        *,
        within: float = 2.0,
    ) -> tuple[Counted, ...]:
        """The series for ``url``'s host and port that grew since ``before``. The proxy counts
        a connection's close a moment after curl returns, so wait (bounded) for a close or a
        status series to move, then one more scrape's worth for the rest.

        When ``within`` runs out first, what moved so far is returned (a notebook goes on:
        the request may really not be counted) and :attr:`expired` says which wait gave up;
        it is "" after a wait that ended by itself."""
        self.expired = ""
        parts = urlsplit(url)
        port = str(parts.port or (443 if parts.scheme == "https" else 80))
        host = parts.hostname or ""
        deadline = time.monotonic() + within
        while True:
            now = self.samples()
            grown = [
                Counted(family=k[0], labels=k[1], increase=v - before.get(k, 0.0))
                for k, v in now.items()
                if v > before.get(k, 0.0) and _for(k[1], host, port)
            ]
            final = [c for c in grown if not c.family.endswith("_open_total")]
            if not final and time.monotonic() >= deadline:
                seen = ", ".join(sorted({c.family for c in grown})) or "no series moved"
                self.expired = str(
                    WaitTimeout(
                        f"the proxy to count the end of a request to {host}:{port} "
                        "(a status or close series)",
                        within,
                        seen,
                    )
                )
            if final or self.expired:
                return tuple(sorted(grown, key=lambda c: (FAMILIES.index(c.family), c.labels)))
            time.sleep(0.05)

    # -- internals --------------------------------------------------------------------

    def _get(self, kind: str, name: str, namespace: str | None) -> dict[str, Any] | None:
        try:
            return self.cluster.get(kind, name, namespace=namespace)
        except EgressKitError:
            return None


def _key(obj: K8sObject) -> Key:
    return (obj.kind, obj.namespace or "", obj.name)


def _for(labels: tuple[tuple[str, str], ...], host: str, port: str) -> bool:
    lbl = dict(labels)
    if lbl.get("parent_port") != port:
        return False
    # Series without a hostname label (TCP) or with hostname labels off match any host.
    return lbl.get("hostname", "") in ("", host)


def _content(raw: Mapping[str, Any]) -> dict[str, Any]:
    """What a learner controls in an object: everything but status and server metadata."""
    meta = {k: v for k, v in dict(raw.get("metadata") or {}).items() if k not in _SERVER_META}
    meta = {k: v for k, v in meta.items() if v not in (None, {}, [])}
    out = {k: v for k, v in raw.items() if k not in ("metadata", "status", "apiVersion")}
    return out | {"metadata": meta}


def _applied(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The object as it is in force, without status, keeping its creation timestamp."""
    meta = dict(raw.get("metadata") or {})
    keep = {k: v for k, v in meta.items() if k not in _SERVER_META or k == "creationTimestamp"}
    return {k: v for k, v in raw.items() if k not in ("metadata", "status")} | {"metadata": keep}


def _kubectl_name(kind: str, group: str, name: str) -> str:
    # kubectl prints "<plural-ish lowercase kind>.<group>/<name>", core kinds without a group.
    core = group in ("", "v1", "apps")
    return f"{kind.lower()}/{name}" if core else f"{kind.lower()}.{group}/{name}"


def _result(kind: str, group: str, name: str, verb: str, raw: Mapping[str, Any]) -> ObjectResult:
    verdict, accepted = _verdict(raw.get("status") or {})
    return ObjectResult(
        obj=_kubectl_name(kind, group, name), verb=verb, verdict=verdict, accepted=accepted
    )


def _verdict(status: Mapping[str, Any]) -> tuple[str, bool]:
    """Linkerd's status in words: an EgressNetwork's conditions, or a route's per parent
    (docs/facts/linkerd-egress.md 4.6: Accepted and ResolvedRefs per parentRef)."""
    if status.get("conditions"):
        return _conditions(status["conditions"], where="")
    verdicts = []
    ok = True
    for parent in status.get("parents") or []:
        ref = parent.get("parentRef", {})
        where = f" on {ref.get('kind', '')} {ref.get('name', '')} port {ref.get('port', '')}"
        text, accepted = _conditions(parent.get("conditions") or [], where=where)
        verdicts.append(text)
        ok = ok and accepted
    return "; ".join(verdicts), ok


def _conditions(conds: Sequence[Mapping[str, Any]], *, where: str) -> tuple[str, bool]:
    by_type = {c.get("type"): c for c in conds}
    acc = by_type.get("Accepted")
    if acc is None:
        return f"no Accepted condition yet{where}", False
    if acc.get("status") != "True":
        msg = f": {acc['message']}" if acc.get("message") else ""
        return f"NOT accepted{where}, reason {acc.get('reason')}{msg}", False
    refs = by_type.get("ResolvedRefs")
    if refs is not None and refs.get("status") != "True":
        msg = f": {refs['message']}" if refs.get("message") else ""
        return f"accepted{where}, but a backend is not resolved ({refs.get('reason')}{msg})", False
    return f"Accepted{where}", True
