"""When an applied object is in force, read from the status the API server returns.

Job: the rules :class:`~egresskit.cluster.kube.KubeCluster` waits on after ``apply`` and
``patch``, as functions of object dicts (no I/O; the shell polls and calls them).

Rules:

- EgressNetworks carry an ``Accepted`` condition; routes are ``Accepted=True`` for each
  EgressNetwork parent (the outbound index ignores a route until then: docs/facts/linkerd-egress.md
  linkerd-egress.md 4.3); Pods are Ready; Deployments available, rollout observed.
- A condition from an older generation (``observedGeneration`` below ``generation``) does
  not count: it describes the object before the change.
- An EgressNetwork that Linkerd refused (``Accepted=False``, e.g.
  ``EgressReasonNetworkOverlap``) is an error, not a success: :func:`refusal` says why.
- Status is not the effect. Linkerd writes its conditions without ``observedGeneration`` and
  does not rewrite an EgressNetwork's status when only ``trafficPolicy`` changes, so these
  rules say "stored and accepted", never "the proxies enforce it"; that is confirmed by
  probing the effect (:mod:`egresskit.cluster.effect`).
- Kinds with nothing to wait for (Namespace, Service, routes without an EgressNetwork
  parent) have no rule at all: :func:`readiness` returns ``None`` for them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, cast

from egresskit.cluster.kube_wire import Resource
from egresskit.manifests.model import POLICY_GROUP

_ROUTE_KINDS = frozenset({"HTTPRoute", "GRPCRoute", "TLSRoute", "TCPRoute"})


def _condition(obj: Mapping[str, Any], type_: str) -> Mapping[str, Any] | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return cast(Mapping[str, Any], cond)
    return None


def _stale(cond: Mapping[str, Any], obj: Mapping[str, Any]) -> bool:
    generation = (obj.get("metadata") or {}).get("generation")
    seen = cond.get("observedGeneration")
    return generation is not None and seen is not None and seen < generation


def _describe(cond: Mapping[str, Any]) -> str:
    text = f"{cond.get('type')}={cond.get('status')}"
    extra = ": ".join(str(x) for x in (cond.get("reason"), cond.get("message")) if x)
    return f"{text} ({extra})" if extra else text


def _egress_parents(route: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    for ref in (route.get("spec") or {}).get("parentRefs") or []:
        # Linkerd compares case-insensitively and does not default the group: spec 4.1.
        kind, group = str(ref.get("kind", "")).lower(), str(ref.get("group", "")).lower()
        if kind == "egressnetwork" and group == POLICY_GROUP:
            yield ref


def _parent_status(route: Mapping[str, Any], ref: Mapping[str, Any]) -> Mapping[str, Any] | None:
    route_ns = (route.get("metadata") or {}).get("namespace")
    want_ns = ref.get("namespace") or route_ns
    for parent in (route.get("status") or {}).get("parents") or []:
        got = parent.get("parentRef") or {}
        if (
            str(got.get("kind", "")).lower() == "egressnetwork"
            and got.get("name") == ref.get("name")
            and (got.get("namespace") or route_ns) == want_ns
            # Port equal or absent: spec 4.3.
            and got.get("port") in (None, ref.get("port"))
        ):
            return cast(Mapping[str, Any], parent)
    return None


def readiness(obj: Mapping[str, Any]) -> tuple[bool, str] | None:
    """Whether a freshly applied object is in force, and what its status says.

    ``None`` for kinds with nothing to wait for (Namespace, Service, ...).
    """
    kind = obj.get("kind")
    status = obj.get("status") or {}
    if kind == "EgressNetwork":
        cond = _condition(obj, "Accepted")
        if cond is None or _stale(cond, obj):
            return False, "no Accepted condition yet"
        return cond.get("status") == "True", _describe(cond)
    if kind in _ROUTE_KINDS:
        refs = list(_egress_parents(obj))
        if not refs:
            return None
        for ref in refs:
            label = f"parent EgressNetwork {ref.get('name')} port {ref.get('port')}"
            parent = _parent_status(obj, ref)
            if parent is None:
                return False, f"{label}: no status yet"
            cond = next(
                (c for c in parent.get("conditions") or [] if c.get("type") == "Accepted"), None
            )
            if cond is None or _stale(cond, obj):
                return False, f"{label}: no Accepted condition yet"
            if cond.get("status") != "True":
                return False, f"{label}: {_describe(cond)}"
        return True, "Accepted=True for every EgressNetwork parent"
    if kind == "Pod":
        cond = _condition(obj, "Ready")
        if cond is not None and cond.get("status") == "True":
            return True, "Ready"
        waiting = [
            f"{cs.get('name')}: {cs['state']['waiting'].get('reason')}"
            for cs in status.get("containerStatuses") or []
            if (cs.get("state") or {}).get("waiting")
        ]
        detail = f"phase {status.get('phase', 'unknown')}"
        return False, detail + (f", waiting ({', '.join(waiting)})" if waiting else "")
    if kind == "Deployment":
        meta = obj.get("metadata") or {}
        want = int((obj.get("spec") or {}).get("replicas", 1))
        if status.get("observedGeneration", -1) < meta.get("generation", 0):
            return False, "rollout not observed yet"
        updated = int(status.get("updatedReplicas", 0))
        cond = _condition(obj, "Available")
        if updated < want or cond is None or cond.get("status") != "True":
            avail = _describe(cond) if cond else "no Available condition"
            return False, f"{updated}/{want} updated, {avail}"
        return True, f"Available, {updated}/{want} updated"
    return None


def refusal(obj: Mapping[str, Any]) -> str | None:
    """Why Linkerd refused the object for good, or ``None``.

    An EgressNetwork with ``Accepted=False`` (``EgressReasonNetworkOverlap``, ...) stays so
    until its spec changes: waiting longer cannot make it true. A route's ``Accepted=False``
    is not final (its parent may be accepted a moment later), so it is waited on.
    """
    if obj.get("kind") != "EgressNetwork":
        return None
    cond = _condition(obj, "Accepted")
    if cond is None or _stale(cond, obj) or cond.get("status") != "False":
        return None
    return _describe(cond)


#: Where to read one object back: its resource, namespace (``None`` if cluster-wide) and name.
Target = tuple[Resource, str | None, str]


def wait_targets(applied: Sequence[tuple[Resource, Mapping[str, Any]]]) -> dict[str, Target]:
    """The applied objects that have a readiness rule, keyed by the label progress shows."""
    pending: dict[str, Target] = {}
    for res, body in applied:
        if readiness(body) is None:
            continue
        meta = body.get("metadata") or {}
        ns = meta.get("namespace") if res.namespaced else None
        label = f"{res.kind} {ns + '/' if ns else ''}{meta.get('name')}"
        pending[label] = (res, ns, str(meta.get("name")))
    return pending
