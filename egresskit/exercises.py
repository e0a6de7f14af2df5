"""Exercises: tasks a learner solves by writing manifests, checked with real traffic.

The tasks themselves (:class:`Exercise`, :class:`Probe`, :data:`EXERCISES`) are data in
:mod:`egresskit.exercise_tasks`, re-exported here. :meth:`Workshop.check` applies the
learner's YAML on the cluster, sends each probe for real from the client pod (curl for
``http(s)://``, a gRPC call for ``grpc://``, a line of the TCP site's protocol for
``tcp://``), and judges it twice: by what the client saw (403, a closed connection,
``PERMISSION_DENIED``, the internal service's body, or the destination's answer) and by the
proxy series it moved (a default ``*-egress-deny`` route, or one of the learner's routes).
On a mismatch it prints one ``FAIL`` line with a hint built from the policy engine's
reasoning for that request (:func:`egresskit.explaining.explain`), e.g. "your HTTPRoute
httpbin-get has no hostnames, so it also allows google.com/get". It never raises for a
wrong answer: a bad manifest (parse or schema error, any ``EgressKitError`` that ``apply``
raises) is a FAIL line too, naming what the error names.

Every check starts from the same base (namespace, EgressNetwork ``Deny``, client pod,
``internal-egress``): objects applied by the previous check are deleted first.
"""

from __future__ import annotations

import contextlib
import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

from egresskit import guide
from egresskit.errors import EgressKitError
from egresskit.exercise_tasks import EXERCISES, NS, TERMINUS_TEXT, Exercise, Probe
from egresskit.grpcguide import grpc_call, tcp_call
from egresskit.lesson import ApplyReport, Counted, Lesson, Observation
from egresskit.manifests import load_manifests
from egresskit.manifests.model import K8sObject
from egresskit.policy.decision import Decision

__all__ = ["EXERCISES", "CheckResult", "Exercise", "Probe", "ProbeResult", "Workshop", "hint"]

ROUTE_KINDS = ("HTTPRoute", "GRPCRoute", "TLSRoute", "TCPRoute")

#: What every exercise starts from: the guide's objects with the EgressNetwork on Deny.
BASE = (
    guide.NAMESPACE,
    guide.EGRESS_NETWORK.replace("trafficPolicy: Allow", "trafficPolicy: Deny"),
    guide.CLIENT_POD,
    guide.INTERNAL_EGRESS,
)

_SAYS = {
    "allowed": "allowed to its destination",
    "forbidden": "forbidden",
    "redirected": "sent to internal-egress",
}


@dataclass(frozen=True, kw_only=True)
class ProbeResult:
    probe: Probe
    got: str  # allowed | forbidden | redirected | other
    client: str
    proxy: str  # the route the proxy counted it under, or what the engine chose
    ok: bool
    decision: Decision | None = None


@dataclass(frozen=True, kw_only=True)
class CheckResult:
    """The outcome of one check: printed as lines, the last one PASS or FAIL."""

    exercise: Exercise
    ok: bool
    verdict: str
    note: str = ""  # e.g. " (checking the solution: solutions = True)"
    report: ApplyReport | None = None
    probes: tuple[ProbeResult, ...] = field(default=())

    def lines(self) -> list[str]:
        out = [f"Exercise {self.exercise.number}: {self.exercise.title}{self.note}"]
        if self.report is not None:
            for r in self.report.results:
                said = f" (Linkerd: {r.verdict})" if r.verdict else ""
                out.append(f"  applied: {r.obj} {r.verb}{said}")
        for p in self.probes:
            mark = "ok   " if p.ok else "WRONG"
            out.append(f"  {mark} {p.probe.shown}: client {p.client}; proxy: {p.proxy}")
        out.append(self.verdict)
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(str(self))

    def _repr_html_(self) -> str:
        colour = "#1a7f37" if self.ok else "#cf222e"
        *body, last = self.lines()
        return (
            # JupyterLab styles an output's <pre> with word-break: break-all, which cuts
            # "HTTPRoute" into "H" / "TTPRoute"; wrap at spaces, break only words too long
            # for a line (issue 10 item 7; tests/test_jupyterlab_lessons.py measures it).
            "<pre style='white-space:pre-wrap;word-break:normal;overflow-wrap:break-word;"
            "margin:0;font-family:monospace'>"
            + html.escape("\n".join(body))
            + f"\n<b style='color:{colour}'>{html.escape(last)}</b></pre>"
        )


# ------------------------------------------------------------------------ the workshop


class Workshop:
    """Runs the checks on one cluster (through a :class:`Lesson`), one base for all."""

    def __init__(self, lesson: Lesson, *, use_solutions: bool = False) -> None:
        self.lesson = lesson
        #: Check each exercise's own solution instead of the answer given (the notebook's
        #: ``solutions`` parameter: CI runs the notebook both ways).
        self.use_solutions = use_solutions
        self._applied: list[K8sObject] = []
        self.base_report = lesson.apply(list(BASE))

    def check(self, number: int, answer: str) -> CheckResult:
        """Apply ``answer`` for exercise ``number`` and send its probes. The result shows
        itself in a notebook (its lines, the last one PASS or FAIL); it never raises for a
        wrong answer."""
        ex = EXERCISES[number - 1]
        if not self.use_solutions:
            return self._check(ex, answer)
        return replace(self._check(ex, ex.solution), note=" (its solution: solutions = True)")

    def _check(self, ex: Exercise, answer: str) -> CheckResult:
        self._reset()
        if not answer.strip() or not load_or_none(answer):
            return _fail(ex, "the answer is empty: write the manifest in the cell above")
        try:
            objects = load_manifests(answer, source_name="your answer")
        except EgressKitError as exc:
            return _fail(ex, f"your manifest was refused: {_one_line(exc)}")
        wrong_ns = [o for o in objects if o.namespace != NS and o.kind != "Namespace"]
        if wrong_ns:
            o = wrong_ns[0]
            return _fail(
                ex,
                f"{o.kind} {o.name}: metadata.namespace: expected {NS!r} (the client's "
                f"namespace), found {o.namespace!r}",
            )
        try:
            report = self.lesson.apply(answer)
        except EgressKitError as exc:
            return _fail(ex, f"your manifest was refused: {_one_line(exc)}")
        self._applied = list(objects)
        if not report.accepted:
            bad = next(r for r in report.results if not r.accepted)
            return _fail(ex, f"{bad.obj}: Linkerd says {bad.verdict}", report=report)
        results = tuple(self._probe(p, objects) for p in ex.probes)
        wrong = [r for r in results if not r.ok]
        if not wrong:
            how = "the client and the proxy agree"
            verdict = (
                f"PASS exercise {ex.number} ({ex.title}): all {len(results)} requests "
                f"behave as asked; {how}"
            )
            return CheckResult(exercise=ex, ok=True, verdict=verdict, report=report, probes=results)
        first = wrong[0]
        if first.got == first.probe.want:  # the client saw the right thing, the proxy did not
            verdict = (
                f"FAIL {first.probe.shown}: the client saw {first.client} as asked, but the "
                f"proxy counted it under {first.proxy}. Hint: {hint(first, objects, ex)}"
            )
            return CheckResult(
                exercise=ex, ok=False, verdict=verdict, report=report, probes=results
            )
        verdict = (
            f"FAIL {first.probe.shown}: expected {first.probe.expected}, saw {first.client}. "
            f"Hint: {hint(first, objects, ex)}"
        )
        return CheckResult(exercise=ex, ok=False, verdict=verdict, report=report, probes=results)

    def _reset(self) -> None:
        """Delete what the previous check applied; restore base objects it changed."""
        base_keys = {_key(o): text for text in BASE for o in load_manifests(text)}
        restore = []
        for obj in self._applied:
            if _key(obj) in base_keys:
                restore.append(base_keys[_key(obj)])
                continue
            with contextlib.suppress(EgressKitError):  # already gone
                self.lesson.delete(obj.kind, obj.name, obj.namespace or NS)
        if restore:
            self.lesson.apply(restore)
        self._applied = []

    def _probe(self, probe: Probe, learner: Sequence[K8sObject]) -> ProbeResult:
        decision = self.lesson.decide(probe.url, method=probe.method, headers=dict(probe.headers))
        try:
            client_got, client, counted = self._send(probe)
        except EgressKitError as exc:  # the client could not even run: say so, no traceback
            client_got, client, counted = "other", f"an error ({_one_line(exc)})", ()
        proxy_got, proxy = _proxy_view(counted)
        ok = client_got == probe.want and proxy_got in (probe.want, "counted")
        got = client_got if client_got != probe.want else proxy_got
        return ProbeResult(
            probe=probe, got=got, client=client, proxy=proxy, ok=ok, decision=decision
        )

    def _send(self, probe: Probe) -> tuple[str, str, tuple[Counted, ...]]:
        """Send the probe for real from the client pod: (outcome seen, client's view,
        the proxy series it moved)."""
        lesson = self.lesson
        if probe.scheme in ("http", "https"):
            seen = lesson.observe(*probe.curl_args())
            got, client = _client_view(probe, seen)
            return got, client, seen.counted
        before = lesson.samples()
        target = urlsplit(probe.url).netloc
        if probe.scheme == "grpc":
            call = grpc_call(
                lesson.cluster,
                probe.grpc_method,
                target=target,
                headers=[f"{k}: {v}" for k, v in probe.headers],
                pod=lesson.pod,
                namespace=lesson.namespace,
            )
            denied = ("PERMISSION_DENIED", "FAILED_PRECONDITION")
            got = "allowed" if call.ok else "forbidden" if call.code in denied else "other"
            client = f"grpc-status {call.code}"
        else:
            answer = tcp_call(
                lesson.cluster,
                probe.send,
                target=target,
                pod=lesson.pod,
                namespace=lesson.namespace,
            )
            got = "allowed" if answer else "forbidden"
            text = answer.decode(errors="replace").strip().splitlines()[0] if answer else ""
            client = f"the answer {text!r}" if answer else "a closed connection (no bytes back)"
        return got, client, lesson.moved(before, probe.url)


# ------------------------------------------------------------------------ judging


def _client_view(probe: Probe, seen: Observation) -> tuple[str, str]:
    r = seen.result
    if r.http_status is None:
        if r.exit_code == 0:
            return "other", "no HTTP response"
        return "forbidden", f"a closed connection (curl exit {r.exit_code})"
    if TERMINUS_TEXT in r.stdout:
        return "redirected", f"HTTP {r.http_status}, internal-egress's answer"
    if r.http_status == 403:
        return "forbidden", "HTTP 403"
    return "allowed", f"HTTP {r.http_status} from {urlsplit(probe.url).hostname}"


def _proxy_view(counted: Sequence[Counted]) -> tuple[str, str]:
    """What the proxy's series say: the route that counted the request's end."""
    final = [c for c in counted if not c.family.endswith("_open_total")] or list(counted)
    if not final:
        return "other", "counted nothing"
    c = final[0]
    name = c.label("route_name")
    if c.label("route_kind") == "default":
        got = "forbidden" if name.endswith("-egress-deny") else "allowed"
        return got, name
    # One of the learner's routes: the client's view tells allowed from redirected.
    return "counted", f"{c.label('route_kind')} {name}"


def hint(result: ProbeResult, learner: Sequence[K8sObject], ex: Exercise) -> str:
    """A hint for the request that went wrong, from the engine's reasoning for it."""
    d, probe = result.decision, result.probe
    if d is None:
        return "compare your manifest with the task"
    host = urlsplit(probe.url).hostname or ""
    port = urlsplit(probe.url).port or (443 if probe.url.startswith("https") else 80)
    target = {
        "grpc": probe.grpc_method,
        "https": f"{host} (its SNI)",
        "tcp": f"{host}:{port}",
    }.get(probe.scheme, f"{host}{urlsplit(probe.url).path}")
    mine = {(o.kind, o.name): o for o in learner if o.kind in ROUTE_KINDS}
    route = d.route
    if route is None:
        return f"the engine says {d.summary()}: {d.reason}"
    ours = route is not None and (route.kind, route.name) in mine
    if probe.want == "forbidden" and ours and route is not None:
        obj = mine[(route.kind, route.name)]
        rule = _rule(obj, d.rule_index)
        verb = "sends" if d.outcome == "redirected" else "allows"
        if route.kind == "TCPRoute":
            return (
                f"a TCPRoute matches every connection on its port, and yours is on port {port}: "
                "attach it only to the port that needs it (spec.parentRefs[].port)"
            )
        if not obj.raw.get("spec", {}).get("hostnames"):
            also = f"{target} to internal-egress" if verb == "sends" else target
            return f"your {route.kind} {route.name} has no hostnames, so it also {verb} {also}"
        if probe.scheme == "grpc" and not _has(rule, "method", "method"):
            return (
                f"the match of your {route.kind} {route.name} names no method, so it also "
                f"allows {probe.grpc_method}"
            )
        wanted = [p for p in ex.probes if p.want != "forbidden"]
        if probe.method not in {p.method for p in wanted} and not _has(rule, "method"):
            return (
                f"rule {d.rule_index} of your {route.kind} {route.name} has no method, "
                f"so it also {verb} {probe.method} {target}"
            )
        if any(p.headers for p in wanted) and not _has(rule, "headers"):
            return (
                f"rule {d.rule_index} of your {route.kind} {route.name} matches no header, so "
                f"it also {verb} {target} {_with(probe)}"
            )
        return (
            f"rule {d.rule_index} of your {route.kind} {route.name} matches {probe.shown}: "
            "make its matches narrower"
        )
    if probe.want == "redirected" and d.outcome == "allowed" and ours and route is not None:
        return (
            f"your {route.kind} {route.name} sends it to the original destination: give the "
            "rule backendRefs with kind Service, name internal-egress, port 80"
        )
    if probe.want in ("allowed", "redirected") and not ours:
        about = [r for r in d.reasons if any(f"{k} {NS}/{n}" in r for k, n in mine)]
        on_port = {
            (o.kind, o.name): [p.get("port") for p in o.raw.get("spec", {}).get("parentRefs", [])]
            for o in mine.values()
        }
        if not about:
            attached = ", ".join(
                f"{k} {n} on port {', '.join(str(p) for p in ports)}"
                for (k, n), ports in on_port.items()
            )
            return (
                f"none of your routes is attached to port {port} ({attached or 'no routes'}), "
                f"so the default route {d.route.name if d.route else '?'} decided"
            )
        why = "; ".join(_plain(r) for r in about)
        return (
            f"no rule of yours matched it, so the default route "
            f"{d.route.name if d.route else '?'} decided. The engine says: {why}"
        )
    if result.got != d.outcome and d.outcome == probe.want:
        return (
            f"the engine expects {d.outcome} via {d.route.name if d.route else 'no route'}, "
            "but the traffic disagrees: run the check again"
        )
    why = d.reason or (d.reasons[-1] if d.reasons else "")
    return f"the engine says {d.summary()}: {why}"


def _rule(obj: K8sObject, index: int | None) -> Mapping[str, Any]:
    rules = obj.raw.get("spec", {}).get("rules") or [{}]
    return dict(rules[index or 0]) if (index or 0) < len(rules) else {}


def _has(rule: Mapping[str, Any], key: str, sub: str | None = None) -> bool:
    for m in rule.get("matches") or []:
        value = m.get(key)
        if value and (sub is None or (isinstance(value, Mapping) and value.get(sub))):
            return True
    return False


def _with(probe: Probe) -> str:
    if not probe.headers:
        return "without any header"
    return "with " + ", ".join(f"{k}: {v}" for k, v in probe.headers)


def _plain(reason: str) -> str:
    return reason.replace(f" {NS}/", " ")


def _key(obj: K8sObject) -> tuple[str, str, str]:
    return (obj.kind, obj.namespace or "", obj.name)


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


def _fail(ex: Exercise, why: str, *, report: ApplyReport | None = None) -> CheckResult:
    return CheckResult(exercise=ex, ok=False, verdict=f"FAIL {why}", report=report)


def load_or_none(text: str) -> bool:
    """True when ``text`` holds at least one YAML document that is not empty."""
    import yaml

    try:
        return any(doc for doc in yaml.safe_load_all(text))
    except yaml.YAMLError:
        return True  # let load_manifests name the error
