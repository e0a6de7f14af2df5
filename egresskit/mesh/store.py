"""The local backend's API server: an object store with Kubernetes' write semantics.

Job: keep the objects the user applied, stamp what the API server stamps
(``creationTimestamp``, ``uid``, ``resourceVersion``, Service ``clusterIP``), compute
status the way Linkerd's status controller would, and publish one immutable
:class:`~egresskit.policy.snapshot.Snapshot` per change.

Rules:

* Every write validates the whole batch first and swaps in the new state in one step:
  all or nothing, and a reader sees the old snapshot or the new one, never a mix.
* ``apply`` is create-or-update by (group, kind, namespace, name); an update keeps the
  original ``creationTimestamp`` (route age decides precedence).
* ``patch`` is a JSON merge patch (RFC 7386), validated like an apply.
* Deleting a Namespace deletes everything in it.
* Timestamps come from an injected clock (``now``), with microsecond precision so apply
  order is preserved. A real API server stamps whole seconds, so on a cluster two routes
  applied in the same second tie on age and fall back to name order (spec 4.8).
"""

from __future__ import annotations

import copy
import ipaddress
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from egresskit.errors import BackendError, ManifestError, Problem
from egresskit.manifests import load_manifests
from egresskit.manifests.model import K8sObject, Namespace, Service
from egresskit.policy.snapshot import MeshSettings, Snapshot

#: Where Services get their ClusterIP (kind's default service CIDR, inside the cluster
#: networks).
SERVICE_CIDR = ipaddress.IPv4Network("10.96.0.0/12")

#: Short names ``kubectl`` accepts for the kinds the guide uses.
KIND_ALIASES = {
    "ns": "Namespace",
    "namespace": "Namespace",
    "namespaces": "Namespace",
    "po": "Pod",
    "pod": "Pod",
    "pods": "Pod",
    "svc": "Service",
    "service": "Service",
    "services": "Service",
    "deploy": "Deployment",
    "deployment": "Deployment",
    "deployments": "Deployment",
    "egressnetwork": "EgressNetwork",
    "egressnetworks": "EgressNetwork",
    "httproute": "HTTPRoute",
    "httproutes": "HTTPRoute",
    "grpcroute": "GRPCRoute",
    "grpcroutes": "GRPCRoute",
    "tlsroute": "TLSRoute",
    "tlsroutes": "TLSRoute",
    "tcproute": "TCPRoute",
    "tcproutes": "TCPRoute",
}

Key = tuple[str, str, str]  # (kind, namespace, name); one API group per kind here


def canonical_kind(kind: str) -> str:
    return KIND_ALIASES.get(kind.lower(), kind)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: objects merge recursively, ``null`` deletes, the rest
    replaces."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


class ObjectStore:
    """Thread-safe; ``snapshot`` is swapped atomically on every successful write."""

    def __init__(
        self,
        *,
        settings: MeshSettings | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.settings = settings or MeshSettings()
        self._now = now
        self._lock = threading.Lock()
        self._objects: dict[Key, K8sObject] = {}
        self._meta: dict[Key, dict[str, Any]] = {}
        self._version = 0
        self._last_stamp: datetime | None = None
        self.snapshot: Snapshot = Snapshot.build((), self.settings)
        self._listeners: list[Callable[[Snapshot], None]] = []

    # -- reading ------------------------------------------------------------------------

    def objects(self) -> list[K8sObject]:
        with self._lock:
            return list(self._objects.values())

    def find(self, kind: str, name: str, namespace: str | None) -> K8sObject | None:
        with self._lock:
            return self._objects.get((canonical_kind(kind), namespace or "", name))

    def get(self, kind: str, name: str, namespace: str | None) -> dict[str, Any]:
        """The object as ``kubectl get -o json`` shows it, with Linkerd's status."""
        kind = canonical_kind(kind)
        with self._lock:
            obj = self._objects.get((kind, namespace or "", name))
            meta = self._meta.get((kind, namespace or "", name), {})
            snap = self.snapshot
        if obj is None:
            where = f" in namespace {namespace}" if namespace else ""
            raise BackendError(f'{kind} "{name}" not found{where}')
        out = copy.deepcopy(obj.raw)
        out.setdefault("metadata", {}).update(meta)
        status = snap.status_of(obj)
        if status:
            out["status"] = _stamp_conditions(status, meta.get("creationTimestamp", ""))
        if isinstance(obj, Service) and obj.cluster_ip:
            out.setdefault("spec", {})["clusterIP"] = obj.cluster_ip
        return out

    def on_change(self, listener: Callable[[Snapshot], None]) -> None:
        self._listeners.append(listener)

    # -- writing ------------------------------------------------------------------------

    def apply(self, source: Any, *, source_name: str | None = None) -> list[tuple[K8sObject, str]]:
        """Validate everything, then create or update all at once. Returns (obj, verb)."""
        parsed = load_manifests(source, source_name=source_name)
        with self._lock:
            staged = dict(self._objects)
            staged_meta = dict(self._meta)
            results = []
            self._check_namespaces(parsed, staged)
            for obj in parsed:
                key = self._key(obj)
                verb = "configured" if key in staged else "created"
                obj, meta = self._stamp(obj, staged.get(key), staged_meta.get(key), staged)
                staged[key] = obj
                staged_meta[key] = meta
                results.append((obj, verb))
            self._commit(staged, staged_meta)
        self._notify()
        return results

    def patch(
        self, kind: str, name: str, namespace: str | None, patch: Mapping[str, Any]
    ) -> K8sObject:
        kind = canonical_kind(kind)
        key = (kind, namespace or "", name)
        with self._lock:
            current = self._objects.get(key)
            if current is None:
                raise BackendError(f'{kind} "{name}" not found in namespace {namespace}')
            merged = merge_patch(current.raw, patch)
        # Validated exactly like an apply (all or nothing).
        result = self.apply(merged, source_name=f"patch of {kind} {namespace}/{name}")
        return result[0][0]

    def delete(self, kind: str, name: str, namespace: str | None) -> list[K8sObject]:
        kind = canonical_kind(kind)
        key = (kind, namespace or "", name)
        with self._lock:
            if key not in self._objects:
                where = f" in namespace {namespace}" if namespace else ""
                raise BackendError(f'{kind} "{name}" not found{where}')
            staged = dict(self._objects)
            staged_meta = dict(self._meta)
            removed = [staged.pop(key)]
            staged_meta.pop(key, None)
            if kind == "Namespace":
                for other in [k for k in staged if k[1] == name]:
                    removed.append(staged.pop(other))
                    staged_meta.pop(other, None)
            self._commit(staged, staged_meta)
        self._notify()
        return removed

    # -- internals ----------------------------------------------------------------------

    @staticmethod
    def _key(obj: K8sObject) -> Key:
        return (obj.kind, obj.metadata.namespace or "", obj.metadata.name)

    def _check_namespaces(
        self, parsed: Iterable[K8sObject], staged: Mapping[Key, K8sObject]
    ) -> None:
        # Like the API server: a namespaced object needs its namespace to exist (it may be
        # created earlier in the same batch).
        known = {k[2] for k in staged if k[0] == "Namespace"}
        known |= {"default"}
        problems = []
        for obj in parsed:
            if isinstance(obj, Namespace):
                known.add(obj.name)
                continue
            ns = obj.metadata.namespace
            if ns and ns not in known:
                src = obj.source
                problems.append(
                    Problem(
                        source=src.name if src else "<input>",
                        document=src.document if src else None,
                        obj=obj.display,
                        path="metadata.namespace",
                        expected="an existing namespace (create it first)",
                        found=repr(ns),
                    )
                )
        if problems:
            raise ManifestError(problems)

    def _stamp(
        self,
        obj: K8sObject,
        previous: K8sObject | None,
        previous_meta: Mapping[str, Any] | None,
        staged: Mapping[Key, K8sObject],
    ) -> tuple[K8sObject, dict[str, Any]]:
        self._version += 1
        if previous is not None and previous_meta is not None:
            meta = dict(previous_meta)
            created = previous.metadata.creation_timestamp
        else:
            created = obj.metadata.creation_timestamp or self._timestamp()
            meta = {"uid": str(uuid.uuid4()), "creationTimestamp": created}
        meta["resourceVersion"] = str(self._version)
        meta["creationTimestamp"] = created
        obj = replace(obj, metadata=replace(obj.metadata, creation_timestamp=created))
        if isinstance(obj, Service) and not obj.cluster_ip:
            previous_ip = previous.cluster_ip if isinstance(previous, Service) else None
            obj = replace(obj, cluster_ip=previous_ip or self._allocate_ip(staged))
        return obj, meta

    def _timestamp(self) -> str:
        now = self._now().astimezone(UTC)
        if self._last_stamp is not None and now <= self._last_stamp:
            # Keep apply order even if the clock did not move (same microsecond).
            now = self._last_stamp + timedelta(microseconds=1)
        self._last_stamp = now
        return now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    @staticmethod
    def _allocate_ip(staged: Mapping[Key, K8sObject]) -> str:
        taken = {o.cluster_ip for o in staged.values() if isinstance(o, Service)}
        for host in range(10, SERVICE_CIDR.num_addresses - 1):
            ip = str(SERVICE_CIDR[host])
            if ip not in taken:
                return ip
        raise BackendError(f"no free ClusterIP left in {SERVICE_CIDR}")

    def _commit(self, staged: dict[Key, K8sObject], staged_meta: dict[Key, dict[str, Any]]) -> None:
        snapshot = Snapshot.build(staged.values(), self.settings)
        self._objects = staged
        self._meta = staged_meta
        self.snapshot = snapshot  # one reference swap: readers see old or new

    def _notify(self) -> None:
        snap = self.snapshot
        for listener in list(self._listeners):
            listener(snap)


def _stamp_conditions(status: Mapping[str, Any], when: str) -> dict[str, Any]:
    """Add ``lastTransitionTime`` (the object's creation time: the engine has no clock)."""
    out = copy.deepcopy(dict(status))
    for cond in out.get("conditions", []):
        cond.setdefault("lastTransitionTime", when)
    for parent in out.get("parents", []):
        for cond in parent.get("conditions", []):
            cond.setdefault("lastTransitionTime", when)
    return out
