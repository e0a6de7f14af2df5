"""The kube backend's wire core: what :mod:`egresskit.cluster.kube` sends and reads, as values.

Job: build REST paths, query strings and request bodies, and read what comes back (discovery
listings, ``Status`` errors, the exec status channel, curl's output, proxy metrics), with no
I/O (h11's split: :class:`~egresskit.cluster.kube.KubeCluster` does the requests and hands
the answers here).

Rules:

- Nothing here opens a connection, reads the clock or the environment.
- An answer that cannot be read becomes :class:`BackendError`, prefixed with ``where`` (the
  caller's cluster name or exec target), so every message still says which cluster spoke.
- Change-record summaries are made here too: they are functions of the objects alone.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import yaml

from egresskit import versions
from egresskit.errors import BackendError, ManifestError, Problem
from egresskit.manifests.model import POLICY_GROUP, K8sObject

GATEWAY_GROUP = "gateway.networking.k8s.io"
#: Linkerd's proxy admin server (Helm ``proxy.ports.admin``): docs/facts/linkerd-egress.md 6.1.
PROXY_ADMIN_PORT = 4191

#: Which version ``get``/``patch``/``delete`` use for a bare kind when this instance has not
#: applied one of that kind yet. HTTPRoute means the Gateway API one, as in the guide.
DEFAULT_API_VERSIONS = {
    "namespace": "v1",
    "pod": "v1",
    "service": "v1",
    "deployment": "apps/v1",
    "egressnetwork": f"{POLICY_GROUP}/v1alpha1",
    "httproute": f"{GATEWAY_GROUP}/v1",
    "grpcroute": f"{GATEWAY_GROUP}/v1",
    "tlsroute": f"{GATEWAY_GROUP}/v1alpha2",
    "tcproute": f"{GATEWAY_GROUP}/v1alpha2",
}


# ------------------------------------------------------------------------------ discovery


@dataclass(frozen=True, kw_only=True)
class Resource:
    """Where one kind lives in the REST API, as discovery says."""

    api_version: str
    kind: str
    plural: str
    namespaced: bool

    def path(self, namespace: str | None, name: str | None = None) -> str:
        base = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        scope = f"/namespaces/{quote(namespace or 'default', safe='')}" if self.namespaced else ""
        item = f"/{quote(name, safe='')}" if name is not None else ""
        return f"{base}{scope}/{self.plural}{item}"


def missing_api_message(api_version: str, kind: str) -> str:
    """Why ``api_version`` is not served, with the step that installs it when we know it."""
    group = api_version.rpartition("/")[0]
    if group == POLICY_GROUP:
        return (
            f"{kind} CRD not installed: is Linkerd installed? run `egresskit cluster up` "
            f"({api_version} is not served)"
        )
    if group == GATEWAY_GROUP:
        return (
            f"{kind} CRD not installed: are the Gateway API {versions.GATEWAY_API_VERSION} "
            f"experimental CRDs installed? run `egresskit cluster up` ({api_version} is not served)"
        )
    return f"{api_version} is not served by the API server (needed for {kind})"


def resource_in(api_version: str, kind: str, data: bytes, *, where: str) -> Resource | None:
    """``kind`` (case-insensitive) in the discovery document of ``api_version``, if listed."""
    for res in _listed(api_version, data, where=where):
        if res["kind"].lower() == kind.lower():
            return Resource(
                api_version=api_version,
                kind=res["kind"],
                plural=res["name"],
                namespaced=bool(res.get("namespaced")),
            )
    return None


def _listed(api_version: str, data: bytes, *, where: str) -> list[dict[str, Any]]:
    try:
        listed = json.loads(data).get("resources") or []
    except (ValueError, AttributeError) as exc:
        raise BackendError(f"{where}: discovery of {api_version}: not a list") from exc
    # Subresources such as pods/exec are listed too; they are not kinds of their own.
    return [r for r in listed if "/" not in r["name"]]


def discovered_resource(api_version: str, kind: str, data: bytes, *, where: str) -> Resource:
    """``kind`` (case-insensitive) in the discovery document of ``api_version``, or why not."""
    found = resource_in(api_version, kind, data, where=where)
    if found is not None:
        return found
    if api_version.rpartition("/")[0] in (POLICY_GROUP, GATEWAY_GROUP):
        raise BackendError(f"{where}: {missing_api_message(api_version, kind)}")
    kinds = ", ".join(r["kind"] for r in _listed(api_version, data, where=where))
    raise BackendError(f"{where}: {api_version} has no kind {kind}; it serves {kinds}")


def group_versions(data: bytes) -> list[str]:
    """The versions an ``APIGroup`` discovery document lists, preferred first as served."""
    try:
        doc = json.loads(data)
        return [str(v["version"]) for v in doc.get("versions") or []]
    except (ValueError, AttributeError, KeyError, TypeError):
        return []


def unserved_version_message(api_version: str, kind: str, served: Sequence[str]) -> str:
    """``kind`` is installed, but not at ``api_version``: say which versions serve it."""
    group = api_version.rpartition("/")[0]
    return (
        f"{kind} {api_version}: version not served; served: {', '.join(served)} "
        f"(the {kind} CRD is installed: use apiVersion {group}/{served[0]})"
    )


def status_error(where: str, what: str, status: int, data: bytes) -> BackendError:
    """An HTTP error answer as :class:`BackendError`: the API's ``Status`` message if any."""
    try:
        doc = json.loads(data)
    except ValueError:
        doc = None
    if isinstance(doc, dict) and doc.get("kind") == "Status":
        reason = f"{doc.get('reason')}, " if doc.get("reason") else ""
        return BackendError(f"{where}: {what}: {doc.get('message')} ({reason}HTTP {status})")
    text = data[:300].decode("utf-8", "replace").strip()
    return BackendError(f"{where}: {what}: HTTP {status}: {text}")


# -------------------------------------------------------------------------- apply, patch

#: One object of an ``apply`` batch with its resource, keyed by its place in the batch.
BatchItem = tuple[int, tuple[K8sObject, Resource]]


def apply_phases(
    objects: Sequence[K8sObject], resources: Sequence[Resource]
) -> tuple[list[BatchItem], list[BatchItem]]:
    """The batch split into (namespaces, everything else), each in the batch's order."""
    pairs = list(enumerate(zip(objects, resources, strict=True)))
    # Namespaces first: nothing in a namespace can even be dry-run before it exists.
    namespaces = [p for p in pairs if p[1][1].kind == "Namespace"]
    others = [p for p in pairs if p[1][1].kind != "Namespace"]
    return namespaces, others


def apply_request(
    obj: K8sObject, res: Resource, *, field_manager: str, dry_run: bool
) -> tuple[str, list[tuple[str, str]], dict[str, Any]]:
    """Path, query and body of one server-side apply of ``obj``."""
    body = copy.deepcopy(obj.raw)
    namespace = (obj.namespace or "default") if res.namespaced else None
    if namespace is not None:
        body.setdefault("metadata", {})["namespace"] = namespace
    # Strict: an unknown field is an error, as with `kubectl apply` (the API server's
    # default, Warn, would drop it and apply the rest: a typo would pass silently).
    query = [("fieldManager", field_manager), ("force", "true"), ("fieldValidation", "Strict")]
    if dry_run:
        query.append(("dryRun", "All"))
    return res.path(namespace, obj.name), query, body


def patch_body(patch: Mapping[str, Any] | str) -> dict[str, Any]:
    """A merge patch given as a mapping, or as JSON/YAML text (ManifestError otherwise)."""
    if not isinstance(patch, str):
        return dict(patch)
    try:
        body = yaml.safe_load(patch)  # JSON is YAML
    except yaml.YAMLError as exc:
        raise _not_a_patch(f"unparsable text ({exc.__class__.__name__})") from exc
    if not isinstance(body, dict):
        raise _not_a_patch(type(body).__name__)
    return body


def _not_a_patch(found: str) -> ManifestError:
    problem = Problem(
        source="patch", document=None, obj=None, path="", expected="a JSON object", found=found
    )
    return ManifestError([problem])


# ---------------------------------------------------------------------- change summaries


def _label(obj: K8sObject) -> str:
    policy = (obj.raw.get("spec") or {}).get("trafficPolicy")
    return f"{obj.kind} {obj.name}" + (f": {policy}" if obj.kind == "EgressNetwork" else "")


def apply_summary(objects: Sequence[K8sObject]) -> str:
    """What an ``apply`` changed, in one line (Namespaces only when there is nothing else)."""
    shown = [_label(o) for o in objects if o.kind != "Namespace"] or [_label(o) for o in objects]
    more = f" (+{len(shown) - 3} more)" if len(shown) > 3 else ""
    return ", ".join(shown[:3]) + more


def patch_summary(kind: str, name: str, body: Mapping[str, Any]) -> str:
    """What a ``patch`` changed, in one line (an EgressNetwork's new traffic policy)."""
    policy = (body.get("spec") or {}).get("trafficPolicy") if kind == "EgressNetwork" else None
    return f"{kind} {name}: {policy}" if policy else f"patch {kind} {name}"


# ---------------------------------------------------------------------------- curl marker

#: curl prints this line after the body (``-w``), so status and timing come from curl itself.
CURL_MARKER = "@@egresskit-curl@@"
_WRITE_OUT = f"\n{CURL_MARKER} http_code=%{{http_code}} time_total=%{{time_total}}\n"
_MARKER_RE = re.compile(
    rf"\n{re.escape(CURL_MARKER)} http_code=(?P<code>\d+) time_total=(?P<time>[0-9.]+)\n?\Z"
)


def curl_command(args: Sequence[str], *, timeout: float) -> list[str]:
    """The argv run in the pod: our ``--max-time`` first so the caller's own ``-m`` wins
    (curl keeps the last occurrence), our ``-w`` last so the marker is always written."""
    return ["curl", "--max-time", f"{timeout:g}", *args, "-w", _WRITE_OUT]


def parse_curl_stdout(stdout: str) -> tuple[str, int | None, float]:
    """Split curl's stdout into (body, http status, time_total); status ``000`` is ``None``.

    Without the marker (curl died before writing it, e.g. a bad option) the whole text is
    the body, the status ``None`` and the time 0.
    """
    match = _MARKER_RE.search(stdout)
    if match is None:
        return stdout, None, 0.0
    code = int(match["code"])
    return stdout[: match.start()], (code or None), float(match["time"])


def exec_exit_code(status_text: str, *, where: str) -> int:
    """Exit code from the exec status channel (channel 3: a ``Status`` object).

    ``Success`` is 0; ``NonZeroExitCode`` carries the code in ``details.causes[ExitCode]``;
    anything else (no such container, pod not running) is the API's own error.
    """
    try:
        status = yaml.safe_load(status_text) if status_text else None
    except yaml.YAMLError as exc:
        raise BackendError(f"{where}: unreadable exec status {status_text!r}") from exc
    if not isinstance(status, dict):
        raise BackendError(f"{where}: exec ended without a status (connection lost?)")
    if status.get("status") == "Success":
        return 0
    for cause in (status.get("details") or {}).get("causes") or []:
        if cause.get("reason") == "ExitCode":
            return int(cause.get("message", "1"))
    raise BackendError(f"{where}: {status.get('message') or status_text}")


# -------------------------------------------------------------------------- proxy metrics


def proxy_metrics_path(namespace: str, pod: str) -> str:
    """The API server's pod proxy path to the proxy's ``/metrics`` on its admin port."""
    # It reaches the admin port like the CLI's port-forward does.
    return (
        f"/api/v1/namespaces/{quote(namespace, safe='')}/pods/"
        f"{quote(pod, safe='')}:{PROXY_ADMIN_PORT}/proxy/metrics"
    )


def proxy_metrics_section(pod: str, text: str) -> str:
    """One pod's section of ``linkerd dg proxy-metrics``: the header, then ``text``."""
    # Same framing as the CLI (linkerd2 cli/cmd/metrics.go; spec 6.1 and 6.3).
    return f"#\n# POD {pod} (1 of 1)\n#\n{text}"


def proxy_metrics_error(pod: str, error: object) -> str:
    """The section for a pod whose metrics could not be read: ``# ERROR: `` and why.

    linkerd2 ``cli/cmd/metrics.go`` prints ``# ERROR: %s`` for a pod it could not read (the
    colon-less ``# ERROR %s`` is only its obfuscation failure, and older CLIs).
    """
    return proxy_metrics_section(pod, f"# ERROR: {error}\n")
