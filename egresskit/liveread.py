"""Read the policy objects and the proxies' metrics of a live cluster, read-only.

Job: what ``kubectl get -A`` of the kinds the engine reads, and ``linkerd dg proxy-metrics``
of the meshed pods of a namespace, give, as the kit's values, for ``--context``.

Rules:

- Read-only: only ``GET`` (list, and the pod proxy for ``/metrics``); nothing is written.
  Connection and kubeconfig handling are the ``kubernetes`` client's (``ApiClient``), as in
  :mod:`egresskit.cluster.kube`; its exceptions become :class:`BackendError` here, once.
- Each kind is listed cluster-wide at the first version the API server serves (a 404 means
  that version, or the whole CRD, is not installed: the next version is tried, then the
  kind is reported as not served, never silently treated as empty).
- A listed item is reduced to what a manifest holds (``apiVersion``, ``kind``, ``metadata``
  name/namespace/labels/annotations/creationTimestamp, ``spec``; a Service's spec to the
  fields a manifest sets), then parsed by :func:`~egresskit.manifests.load_manifests` with
  the context as source name. An object the kit cannot read is left out and named in
  :attr:`LiveObjects.skipped` (a cluster holds objects the user did not write).
- A pod is meshed when it has a ``linkerd-proxy`` container (sidecar or native sidecar).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import urllib3
from kubernetes.client.exceptions import ApiException

from egresskit.cluster.kube_wire import (
    proxy_metrics_error,
    proxy_metrics_path,
    proxy_metrics_section,
    status_error,
)
from egresskit.errors import BackendError, ManifestError
from egresskit.manifests import load_manifests
from egresskit.manifests.model import K8sObject

GATEWAY = "gateway.networking.k8s.io"
POLICY = "policy.linkerd.io"
#: (kind, plural, versions to try in order): the objects the engine reads.
LISTED: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("Service", "services", ("v1",)),
    ("EgressNetwork", "egressnetworks", (f"{POLICY}/v1alpha1",)),
    ("HTTPRoute", "httproutes", (f"{GATEWAY}/v1", f"{GATEWAY}/v1beta1")),
    ("HTTPRoute", "httproutes", (f"{POLICY}/v1beta3", f"{POLICY}/v1beta2")),
    ("GRPCRoute", "grpcroutes", (f"{GATEWAY}/v1", f"{GATEWAY}/v1alpha2")),
    ("TLSRoute", "tlsroutes", (f"{GATEWAY}/v1alpha2",)),
    ("TCPRoute", "tcproutes", (f"{GATEWAY}/v1alpha2",)),
)
_SERVICE_SPEC = ("type", "selector", "ports", "clusterIP")
_PORT_FIELDS = ("name", "port", "protocol", "targetPort", "appProtocol")
_DROPPED_ANNOTATIONS = ("kubectl.kubernetes.io/last-applied-configuration",)
PROXY_CONTAINER = "linkerd-proxy"


@dataclass(frozen=True, kw_only=True)
class LiveObjects:
    """What a context holds: the objects, and the kinds it does not serve."""

    context: str
    objects: list[K8sObject]
    not_served: list[str]
    #: Objects the kit cannot read (one line each, naming the object and the field): left
    #: out rather than failing the whole read, since a cluster holds others' objects too.
    skipped: list[str] = field(default_factory=list)


class LiveReader:
    """A read-only view of one kube context. Use as a context manager."""

    def __init__(self, context: str | None = None, *, kubeconfig: str | None = None) -> None:
        from egresskit.cluster.kube import api_client

        self._api, self.context = api_client(context, kubeconfig)

    def __enter__(self) -> LiveReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._api.close()

    def _get(self, path: str, accept: str = "application/json") -> tuple[int, bytes]:
        try:
            method, url, headers, _body, _ = self._api.param_serialize(
                method="GET",
                resource_path=path,
                header_params={"Accept": accept},
                auth_settings=["BearerToken"],
            )
            resp = self._api.call_api(method, url, header_params=headers, _request_timeout=30)
            data = resp.read() or b""
            resp.response.release_conn()
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise BackendError(f"{self.context}: GET {path}: {exc}") from exc
        return int(resp.status), bytes(data)

    def _list(self, path: str, what: str) -> list[dict[str, Any]] | None:
        """The items of a list, or None when the API server does not serve it (404)."""
        status, data = self._get(path)
        if status == 404:
            return None
        if status != 200:
            raise status_error(self.context, what, status, data)
        try:
            items = json.loads(data).get("items")
        except (ValueError, AttributeError) as exc:
            raise BackendError(f"{self.context}: {what}: the answer is not a JSON list") from exc
        return cast(list[dict[str, Any]], items or [])

    def policy_objects(self) -> LiveObjects:
        """Every object of the kinds the engine reads, in every namespace."""
        docs: list[dict[str, Any]] = []
        not_served = []
        for kind, plural, versions in LISTED:
            for api_version in versions:
                base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
                items = self._list(f"{base}/{plural}", f"list {kind} ({api_version})")
                if items is not None:
                    docs += [as_manifest(item, api_version, kind) for item in items]
                    break
            else:
                not_served.append(f"{kind} ({' or '.join(versions)})")
        objects, skipped = _parse_each(docs, f"context {self.context}")
        return LiveObjects(
            context=self.context, objects=objects, not_served=not_served, skipped=skipped
        )

    def meshed_pods(self, namespace: str) -> list[str]:
        """Names of the pods in ``namespace`` that run Linkerd's proxy."""
        items = self._list(f"/api/v1/namespaces/{namespace}/pods", f"list pods in {namespace}")
        return sorted(
            item["metadata"]["name"] for item in items or [] if is_meshed(item.get("spec") or {})
        )

    def proxy_metrics(self, pod: str, *, namespace: str) -> str:
        """``linkerd dg proxy-metrics -n NS po/POD``'s text for one pod (errors inline)."""
        try:
            status, data = self._get(proxy_metrics_path(namespace, pod), accept="text/plain")
        except BackendError as exc:
            return proxy_metrics_error(pod, exc)
        if status != 200:
            return proxy_metrics_error(pod, status_error(self.context, "metrics", status, data))
        return proxy_metrics_section(pod, data.decode("utf-8", "replace"))


def _parse_each(docs: list[dict[str, Any]], source: str) -> tuple[list[K8sObject], list[str]]:
    """Every document that parses; a line per problem of those that do not."""
    try:
        return load_manifests(docs, source_name=source), []
    except ManifestError:
        pass
    objects: list[K8sObject] = []
    skipped: list[str] = []
    for doc in docs:
        try:
            objects += load_manifests(doc, source_name=source)
        except ManifestError as exc:
            skipped += [str(p) for p in exc.problems]
    return objects, skipped


def is_meshed(spec: dict[str, Any]) -> bool:
    containers = [*(spec.get("containers") or []), *(spec.get("initContainers") or [])]
    return any(c.get("name") == PROXY_CONTAINER for c in containers)


def as_manifest(item: dict[str, Any], api_version: str, kind: str) -> dict[str, Any]:
    """A listed object as the manifest that would create it (no status, no server fields)."""
    meta = item.get("metadata") or {}
    annotations = {
        k: v for k, v in (meta.get("annotations") or {}).items() if k not in _DROPPED_ANNOTATIONS
    }
    metadata: dict[str, Any] = {"name": meta.get("name")}
    for key, value in (
        ("namespace", meta.get("namespace")),
        ("labels", meta.get("labels")),
        ("annotations", annotations),
        ("creationTimestamp", meta.get("creationTimestamp")),
    ):
        if value:
            metadata[key] = value
    spec = item.get("spec") or {}
    if kind == "Service":
        spec = {k: spec[k] for k in _SERVICE_SPEC if k in spec}
        spec["ports"] = [{k: p[k] for k in _PORT_FIELDS if k in p} for p in spec.get("ports") or []]
    return {"apiVersion": api_version, "kind": kind, "metadata": metadata, "spec": spec}


def read_live(context: str | None, *, kubeconfig: str | None = None) -> LiveObjects:
    """The policy objects of ``context`` (one read, then the connection is closed)."""
    with LiveReader(context, kubeconfig=kubeconfig) as reader:
        return reader.policy_objects()


def live_metrics(
    context: str | None, namespace: str, *, kubeconfig: str | None = None
) -> dict[str, str]:
    """Each meshed pod of ``namespace`` -> its proxy's metrics text."""
    with LiveReader(context, kubeconfig=kubeconfig) as reader:
        return {
            pod: reader.proxy_metrics(pod, namespace=namespace)
            for pod in reader.meshed_pods(namespace)
        }


__all__: Sequence[str] = ("LiveObjects", "LiveReader", "as_manifest", "live_metrics", "read_live")
