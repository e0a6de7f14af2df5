"""The real-cluster backend: the :class:`~egresskit.cluster.base.Cluster` facade on a kube context.

Job: do what the guide's ``kubectl``/``linkerd`` commands do, through the Kubernetes REST API
with the ``kubernetes`` client's ``ApiClient`` (kubeconfig loading, TLS, auth), so that kind or
any cluster with Linkerd answers the same calls as the local emulator.

Rules:

- Manifests are validated by :func:`egresskit.manifests.load_manifests` before any request.
  Every REST path comes from API discovery, for built-in and CRD kinds alike, and is resolved
  for the whole batch before the first write: a missing CRD stops ``apply`` before anything
  changes.
- ``apply`` is server-side apply (``application/apply-patch+yaml``, ``fieldManager``,
  ``force=true``). Namespaces are applied first; every other object is then dry-run
  (``dryRun=All``, so admission webhooks such as Linkerd's policy validator see it), and only
  when all pass are they applied for real. That is as close to "all or nothing" as the API
  allows.
- ``apply``/``patch`` return once the change is in force: EgressNetworks carry an
  ``Accepted`` condition, routes are ``Accepted=True`` for each EgressNetwork parent (the
  outbound index ignores a route until then: shared spec linkerd-egress.md 4.3), Pods are
  Ready, Deployments available. Every wait is bounded and ends in :class:`WaitTimeout`
  saying what it waited for and what it saw last.
- No ``kubernetes``/``urllib3``/``websocket`` exception leaves this module: each is wrapped
  once, where the call is made, in :class:`BackendError` carrying the API server's message.
- One thread at a time per instance (the exec helper swaps a method on the client).
"""

from __future__ import annotations

import copy
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote

import urllib3
import yaml
from kubernetes import client as kclient
from kubernetes import config as _kconfig
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from kubernetes.stream import stream
from websocket import WebSocketException

from egresskit import versions
from egresskit.cluster.base import ChangeRecord, CurlResult, Manifests, PatchType
from egresskit.errors import BackendError, ManifestError, Problem, WaitTimeout
from egresskit.manifests.model import POLICY_GROUP, K8sObject

ProgressFn = Callable[[str], None]

# The kubeconfig helpers are untyped; used through Any on purpose.
kconfig: Any = _kconfig

FIELD_MANAGER = "egresskit"
#: Linkerd's proxy admin server (Helm ``proxy.ports.admin``): shared spec linkerd-egress.md 6.1.
PROXY_ADMIN_PORT = 4191
CLIENT_CONTAINER = "client"
_GATEWAY_GROUP = "gateway.networking.k8s.io"

#: Which version ``get``/``patch``/``delete`` use for a bare kind when this instance has not
#: applied one of that kind yet. HTTPRoute means the Gateway API one, as in the guide.
_DEFAULT_API_VERSIONS = {
    "namespace": "v1",
    "pod": "v1",
    "service": "v1",
    "deployment": "apps/v1",
    "egressnetwork": f"{POLICY_GROUP}/v1alpha1",
    "httproute": f"{_GATEWAY_GROUP}/v1",
    "grpcroute": f"{_GATEWAY_GROUP}/v1",
    "tlsroute": f"{_GATEWAY_GROUP}/v1alpha2",
    "tcproute": f"{_GATEWAY_GROUP}/v1alpha2",
}
_ROUTE_KINDS = frozenset({"HTTPRoute", "GRPCRoute", "TLSRoute", "TCPRoute"})


def stderr_progress(message: str) -> None:
    """Default progress sink: one line on stderr (keeps notebook output clean)."""
    print(f"egresskit: {message}", file=sys.stderr, flush=True)


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


# ------------------------------------------------------------------------------ readiness


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
        return True, _describe(cond)
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


def _missing_api_message(api_version: str, kind: str) -> str:
    group = api_version.rpartition("/")[0]
    if group == POLICY_GROUP:
        return (
            f"{kind} CRD not installed: is Linkerd installed? run `egresskit cluster up` "
            f"({api_version} is not served)"
        )
    if group == _GATEWAY_GROUP:
        return (
            f"{kind} CRD not installed: are the Gateway API {versions.GATEWAY_API_VERSION} "
            f"experimental CRDs installed? run `egresskit cluster up` ({api_version} is not served)"
        )
    return f"{api_version} is not served by the API server (needed for {kind})"


def _load_manifests(source: Manifests) -> list[K8sObject]:
    """Validate the batch with the kit's own loader (raises ManifestError, sends nothing)."""
    # Imported here so this module loads even while the manifests package is mid-change.
    from egresskit.manifests import load_manifests

    if isinstance(source, str | Path | Mapping):
        return load_manifests(source)
    return load_manifests(list(source))


# ---------------------------------------------------------------------------- the backend


class KubeCluster:
    """The facade on a kube context (``kind-egresskit`` or any cluster with Linkerd)."""

    def __init__(
        self,
        context: str | None = None,
        *,
        kubeconfig: str | None = None,
        field_manager: str = FIELD_MANAGER,
        timeout: float = versions.APPLY_WAIT_TIMEOUT,
        request_timeout: float = versions.REQUEST_TIMEOUT,
        poll_interval: float = versions.POLL_INTERVAL,
        progress: ProgressFn | None = None,
    ) -> None:
        # KUBECONFIG is read now, not when the kubernetes package was imported.
        path = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
        try:
            contexts, current = kconfig.list_kube_config_contexts(config_file=path)
            names = [c["name"] for c in contexts or []]
            if context is not None and context not in names:
                raise BackendError(
                    f"kubeconfig {path}: no context {context!r}; "
                    f"expected one of {', '.join(names) or '(none)'}"
                )
            self._api = kconfig.new_client_from_config(
                config_file=path, context=context, persist_config=False
            )
        except (ConfigException, OSError, yaml.YAMLError, KeyError, TypeError) as exc:
            raise BackendError(f"kubeconfig {path}: cannot use context {context!r}: {exc}") from exc
        self.name: str = context or (current or {}).get("name", "kube")
        self._field_manager = field_manager
        self._timeout = timeout
        self._request_timeout = request_timeout
        self._poll_interval = poll_interval
        self._progress = progress or stderr_progress
        self._changes: list[ChangeRecord] = []
        self._resources: dict[tuple[str, str], Resource] = {}
        self._groups: dict[str, str] = {}
        self._applied_versions: dict[str, str] = {}

    # -- context manager ------------------------------------------------------------------

    def __enter__(self) -> KubeCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._api.close()

    @property
    def changes(self) -> list[ChangeRecord]:
        return list(self._changes)

    # -- transport ------------------------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        *,
        query: Sequence[tuple[str, str]] = (),
        body: Any = None,
        content_type: str | None = None,
        accept: str = "application/json",
    ) -> tuple[int, bytes]:
        """One HTTP exchange; transport failures become BackendError, HTTP errors do not."""
        headers = {"Accept": accept}
        if content_type:
            headers["Content-Type"] = content_type
        try:
            method, url, headers, body, _ = self._api.param_serialize(
                method=method,
                resource_path=path,
                query_params=list(query),
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
            )
            resp = self._api.call_api(
                method,
                url,
                header_params=headers,
                body=body,
                _request_timeout=self._request_timeout,
            )
            data = resp.read() or b""
            resp.response.release_conn()
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise BackendError(f"{self.name}: {method} {path}: {exc}") from exc
        return int(resp.status), bytes(data)

    def _error(self, what: str, status: int, data: bytes) -> BackendError:
        try:
            doc = json.loads(data)
        except ValueError:
            doc = None
        if isinstance(doc, dict) and doc.get("kind") == "Status":
            reason = f"{doc.get('reason')}, " if doc.get("reason") else ""
            return BackendError(
                f"{self.name}: {what}: {doc.get('message')} ({reason}HTTP {status})"
            )
        text = data[:300].decode("utf-8", "replace").strip()
        return BackendError(f"{self.name}: {what}: HTTP {status}: {text}")

    def _json(self, what: str, method: str, path: str, **kw: Any) -> dict[str, Any]:
        status, data = self._request(method, path, **kw)
        if not 200 <= status < 300:
            raise self._error(what, status, data)
        try:
            return cast(dict[str, Any], json.loads(data))
        except ValueError as exc:
            raise BackendError(f"{self.name}: {what}: response is not JSON") from exc

    # -- discovery ------------------------------------------------------------------------

    def _resource(self, api_version: str, kind: str) -> Resource:
        """Where ``kind`` lives (case-insensitive), from discovery of its group/version."""
        key = (api_version, kind.lower())
        if key in self._resources:
            return self._resources[key]
        path = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        status, data = self._request("GET", path)
        if status == 404:
            raise BackendError(f"{self.name}: {_missing_api_message(api_version, kind)}")
        if status != 200:
            raise self._error(f"discovery of {api_version}", status, data)
        try:
            listed = json.loads(data).get("resources") or []
        except (ValueError, AttributeError) as exc:
            raise BackendError(f"{self.name}: discovery of {api_version}: not a list") from exc
        found = []
        for res in listed:
            if "/" in res["name"]:  # subresources such as pods/exec
                continue
            found.append(res["kind"])
            if res["kind"].lower() == kind.lower():
                resource = Resource(
                    api_version=api_version,
                    kind=res["kind"],
                    plural=res["name"],
                    namespaced=bool(res.get("namespaced")),
                )
                self._resources[key] = resource
                return resource
        if api_version.rpartition("/")[0] in (POLICY_GROUP, _GATEWAY_GROUP):
            raise BackendError(f"{self.name}: {_missing_api_message(api_version, kind)}")
        raise BackendError(
            f"{self.name}: {api_version} has no kind {kind}; it serves {', '.join(found)}"
        )

    def _resource_for_kind(self, kind: str) -> Resource:
        """A bare kind (``EgressNetwork``) or ``Kind.group`` (``HTTPRoute.policy.linkerd.io``)."""
        base, _, group = kind.partition(".")
        if group:
            version = self._preferred_version(group)
            return self._resource(f"{group}/{version}", base)
        api_version = self._applied_versions.get(base.lower()) or _DEFAULT_API_VERSIONS.get(
            base.lower()
        )
        if api_version is None:
            raise BackendError(
                f"{self.name}: unknown kind {kind!r}: expected one of "
                f"{', '.join(sorted(_DEFAULT_API_VERSIONS))} or Kind.group"
            )
        return self._resource(api_version, base)

    def _preferred_version(self, group: str) -> str:
        if group not in self._groups:
            doc = self._json(f"discovery of group {group}", "GET", f"/apis/{group}")
            self._groups[group] = doc["preferredVersion"]["version"]
        return self._groups[group]

    # -- verbs ----------------------------------------------------------------------------

    def apply(self, manifests: Manifests) -> list[str]:
        objects = _load_manifests(manifests)  # ManifestError: nothing sent
        resources = [self._resource(o.api_version, o.kind) for o in objects]
        pairs = list(enumerate(zip(objects, resources, strict=True)))
        # Namespaces first: nothing in a namespace can even be dry-run before it exists.
        namespaces = [p for p in pairs if p[1][1].kind == "Namespace"]
        others = [p for p in pairs if p[1][1].kind != "Namespace"]
        results: dict[int, str] = {}
        applied: list[tuple[Resource, dict[str, Any]]] = []
        for i, (obj, res) in namespaces:
            results[i], body = self._server_side_apply(obj, res, dry_run=False)
            applied.append((res, body))
        for _, (obj, res) in others:
            self._server_side_apply(obj, res, dry_run=True)
        for i, (obj, res) in others:
            results[i], body = self._server_side_apply(obj, res, dry_run=False)
            applied.append((res, body))
            self._applied_versions[res.kind.lower()] = res.api_version
        self._changes.append(
            ChangeRecord(
                at=datetime.now(UTC),
                verb="apply",
                objects=tuple(o.display for o in objects),
                summary=_summary(objects),
            )
        )
        self._wait_in_force(applied)
        return [results[i] for i in range(len(objects))]

    def _server_side_apply(
        self, obj: K8sObject, res: Resource, *, dry_run: bool
    ) -> tuple[str, dict[str, Any]]:
        body = copy.deepcopy(obj.raw)
        namespace = (obj.namespace or "default") if res.namespaced else None
        if namespace is not None:
            body.setdefault("metadata", {})["namespace"] = namespace
        query = [("fieldManager", self._field_manager), ("force", "true")]
        if dry_run:
            query.append(("dryRun", "All"))
        path = res.path(namespace, obj.name)
        status, data = self._request(
            "PATCH", path, query=query, body=body, content_type="application/apply-patch+yaml"
        )
        if not 200 <= status < 300:
            verb = "dry-run apply" if dry_run else "apply"
            raise self._error(f"{verb} {obj.display}", status, data)
        verb = "created" if status == 201 else "configured"
        return f"{obj.display} {verb}", cast(dict[str, Any], json.loads(data))

    def patch(
        self,
        kind: str,
        name: str,
        patch: Mapping[str, Any] | str,
        *,
        namespace: str,
        type: PatchType = "merge",
    ) -> dict[str, Any]:
        if type != "merge":
            raise BackendError(f"{self.name}: patch type {type!r}: expected 'merge'")
        body = _patch_body(patch)
        res = self._resource_for_kind(kind)
        display = f"{res.kind} {namespace + '/' if res.namespaced else ''}{name}"
        result = self._json(
            f"patch {display}",
            "PATCH",
            res.path(namespace, name),
            query=[("fieldManager", self._field_manager)],
            body=body,
            content_type="application/merge-patch+json",
        )
        self._changes.append(
            ChangeRecord(
                at=datetime.now(UTC),
                verb="patch",
                objects=(display,),
                summary=_patch_summary(res.kind, name, body),
            )
        )
        self._wait_in_force([(res, result)])
        return result

    def delete(self, kind: str, name: str, *, namespace: str | None = None) -> None:
        res = self._resource_for_kind(kind)
        path = res.path(namespace, name)
        display = f"{res.kind} {(namespace or 'default') + '/' if res.namespaced else ''}{name}"
        self._json(f"delete {display}", "DELETE", path, query=[("propagationPolicy", "Background")])
        self._changes.append(
            ChangeRecord(
                at=datetime.now(UTC),
                verb="delete",
                objects=(display,),
                summary=f"delete {res.kind} {name}",
            )
        )
        # Gone means 404: pods stay while they terminate (grace period).
        deadline = time.monotonic() + self._timeout
        last_seen = "deletion requested"
        while True:
            status, data = self._request("GET", path)
            if status == 404:
                return
            if status == 200:
                meta = json.loads(data).get("metadata") or {}
                last_seen = f"still present (deletionTimestamp {meta.get('deletionTimestamp')})"
            else:
                last_seen = str(self._error("get", status, data))
            if time.monotonic() >= deadline:
                raise WaitTimeout(f"{display} to be deleted", self._timeout, last_seen)
            time.sleep(self._poll_interval)

    def get(self, kind: str, name: str, *, namespace: str | None = None) -> dict[str, Any]:
        res = self._resource_for_kind(kind)
        display = f"{res.kind} {(namespace or 'default') + '/' if res.namespaced else ''}{name}"
        return self._json(f"get {display}", "GET", res.path(namespace, name))

    def curl(self, *args: str, pod: str, namespace: str, timeout: float = 30.0) -> CurlResult:
        where = f"{self.name}: exec curl in {namespace}/{pod} (container {CLIENT_CONTAINER})"
        started_at = datetime.now(UTC)
        core = kclient.CoreV1Api(self._api)
        try:
            resp = stream(
                core.connect_get_namespaced_pod_exec,
                pod,
                namespace,
                command=curl_command(args, timeout=timeout),
                container=CLIENT_CONTAINER,
                stdin=False,
                stdout=True,
                stderr=True,
                tty=False,
                _preload_content=False,
            )
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise BackendError(f"{where}: {exc}") from exc
        try:
            # curl stops itself at --max-time; the extra 10 s covers exec start-up.
            bound = timeout + 10.0
            resp.run_forever(timeout=bound)
            if resp.is_open():
                raise WaitTimeout(f"curl in {namespace}/{pod} to exit", bound, "still running")
            stdout = resp.read_stdout(timeout=0) or ""
            stderr = resp.read_stderr(timeout=0) or ""
            exit_code = exec_exit_code(resp.read_channel(3, timeout=0) or "", where=where)
        except (ApiException, WebSocketException, OSError, ValueError) as exc:
            raise BackendError(f"{where}: {exc}") from exc
        finally:
            resp.close()
            # After the server's close frame websocket-client marks itself closed, so close()
            # above returns early and leaves the socket open; shutdown() closes it for real.
            if resp.sock is not None:
                resp.sock.shutdown()
        body, http_status, time_total = parse_curl_stdout(stdout)
        return CurlResult(
            args=tuple(args),
            exit_code=exit_code,
            http_status=http_status,
            stdout=body,
            stderr=stderr,
            time_total=time_total,
            started_at=started_at,
        )

    def proxy_metrics(self, pod: str, *, namespace: str) -> str:
        """``linkerd dg proxy-metrics -n NS po/POD``: header, then the text or ``# ERROR``."""
        # Same framing as the CLI (linkerd2 cli/cmd/metrics.go; spec 6.1 and 6.3).
        head = f"#\n# POD {pod} (1 of 1)\n#\n"
        obj = self.get("Pod", pod, namespace=namespace)  # a missing pod is an error, as there
        if (obj.get("status") or {}).get("phase") != "Running":
            return head + f"# ERROR pod not running: {pod}\n"
        # The API server's pod proxy reaches the admin port like the CLI's port-forward does.
        path = (
            f"/api/v1/namespaces/{quote(namespace, safe='')}/pods/"
            f"{quote(pod, safe='')}:{PROXY_ADMIN_PORT}/proxy/metrics"
        )
        try:
            status, data = self._request("GET", path, accept="text/plain")
        except BackendError as exc:
            return head + f"# ERROR {exc}\n"
        if status != 200:
            return head + f"# ERROR {self._error('proxy metrics', status, data)}\n"
        return head + data.decode("utf-8", "replace")

    # -- helpers --------------------------------------------------------------------------

    def _wait_in_force(self, applied: Sequence[tuple[Resource, Mapping[str, Any]]]) -> None:
        """Poll every object with a readiness rule until all are ready, within the bound."""
        pending: dict[str, tuple[Resource, str | None, str]] = {}
        for res, body in applied:
            if readiness(body) is None:
                continue
            meta = body.get("metadata") or {}
            ns = meta.get("namespace") if res.namespaced else None
            label = f"{res.kind} {ns + '/' if ns else ''}{meta.get('name')}"
            pending[label] = (res, ns, str(meta.get("name")))
        started = time.monotonic()
        last: dict[str, str] = {}
        while pending:
            for label, (res, ns, name) in list(pending.items()):
                obj = self._json(f"get {label}", "GET", res.path(ns, name))
                state = readiness(obj) or (True, "")
                if state[0]:
                    waited = time.monotonic() - started
                    self._progress(f"{label}: {state[1]} ({waited:.1f}s)")
                    del pending[label]
                elif last.get(label) != state[1]:
                    self._progress(f"waiting for {label}: {state[1]}")
                last[label] = state[1]
            if pending and time.monotonic() - started >= self._timeout:
                raise WaitTimeout(
                    ", ".join(f"{label} to be in force" for label in pending),
                    self._timeout,
                    "; ".join(f"{label}: {last[label]}" for label in pending),
                )
            if pending:
                time.sleep(self._poll_interval)


def _patch_body(patch: Mapping[str, Any] | str) -> dict[str, Any]:
    if not isinstance(patch, str):
        return dict(patch)
    try:
        body = yaml.safe_load(patch)  # JSON is YAML
    except yaml.YAMLError as exc:
        problem = Problem(
            source="patch",
            document=None,
            obj=None,
            path="",
            expected="a JSON object",
            found=f"unparsable text ({exc.__class__.__name__})",
        )
        raise ManifestError([problem]) from exc
    if not isinstance(body, dict):
        problem = Problem(
            source="patch",
            document=None,
            obj=None,
            path="",
            expected="a JSON object",
            found=type(body).__name__,
        )
        raise ManifestError([problem])
    return body


def _label(obj: K8sObject) -> str:
    policy = (obj.raw.get("spec") or {}).get("trafficPolicy")
    return f"{obj.kind} {obj.name}" + (f": {policy}" if obj.kind == "EgressNetwork" else "")


def _summary(objects: Sequence[K8sObject]) -> str:
    shown = [_label(o) for o in objects if o.kind != "Namespace"] or [_label(o) for o in objects]
    more = f" (+{len(shown) - 3} more)" if len(shown) > 3 else ""
    return ", ".join(shown[:3]) + more


def _patch_summary(kind: str, name: str, body: Mapping[str, Any]) -> str:
    policy = (body.get("spec") or {}).get("trafficPolicy") if kind == "EgressNetwork" else None
    return f"{kind} {name}: {policy}" if policy else f"patch {kind} {name}"


def connect_kube(context: str | None = None, **kw: Any) -> KubeCluster:
    """The facade on ``context`` (the kubeconfig's current context when ``None``)."""
    return KubeCluster(context, **kw)


def connect_kind(cluster: str = versions.KIND_CLUSTER_NAME, **kw: Any) -> KubeCluster:
    """The facade on the kind cluster ``cluster`` (context ``kind-<cluster>``)."""
    return KubeCluster(f"kind-{cluster}", **kw)
