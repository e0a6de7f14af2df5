"""The real-cluster backend: the :class:`~egresskit.cluster.base.Cluster` facade on a kube context.

Job: do what the guide's ``kubectl``/``linkerd`` commands do, through the Kubernetes REST API
with the ``kubernetes`` client's ``ApiClient`` (kubeconfig loading, TLS, auth), so that kind or
any cluster with Linkerd answers the same calls as the local emulator.

This module is the I/O shell: requests, polls and exec. What it sends and how it reads the
answers is :mod:`egresskit.cluster.kube_wire`; when an object is in force is
:mod:`egresskit.cluster.kube_readiness`. Both are pure.

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
- ``apply``/``patch`` return once the API server stored the change and the controllers
  accepted it (the rules of :mod:`~egresskit.cluster.kube_readiness`: EgressNetworks
  Accepted, routes Accepted for each EgressNetwork parent, Pods Ready, Deployments
  available). An EgressNetwork Linkerd refused (``Accepted=False``) is a
  :class:`BackendError` with Linkerd's reason. Status cannot say that the proxies enforce a
  change (Linkerd writes no ``observedGeneration``); callers that depend on it confirm it by
  its effect with :func:`egresskit.cluster.effect.await_effect`. Every wait is bounded and
  ends in :class:`WaitTimeout` saying what it waited for and what it saw last.
- No ``kubernetes``/``urllib3``/``websocket`` exception leaves this module: each is wrapped
  once, where the call is made, in :class:`BackendError` carrying the API server's message.
- Safe to use from several threads at once (the notebooks curl from a traffic loop, scrape
  metrics from another thread and patch from the main one). REST calls share one
  ``ApiClient`` (its urllib3 pool is thread-safe); every exec gets an ``ApiClient`` of its own,
  because ``kubernetes.stream.stream()`` swaps ``call_api`` on the client it is given and puts
  it back afterwards (kubernetes-client/python issue 928 and the warning in its README), which
  would break concurrent REST calls on a shared one. The instance's own caches and change
  log sit behind one lock.
- Like the local backend, the facade owns the traffic loops and scrapers started on it
  (:attr:`KubeCluster.jobs`, :mod:`egresskit.cluster.owned`): ``close()`` stops them, then
  the REST client; every later call raises :class:`~egresskit.errors.ClusterClosed`.
- ``grpc`` and ``tcp`` exec the kit's gRPC client and a small TCP client in a pod built from
  :data:`egresskit.podimages.GRPC_CLIENT_POD`; their commands and how their output is read
  are :mod:`egresskit.cluster.kube_calls` (pure).
- Needs ``kubernetes>=37`` (``versions.KUBERNETES_CLIENT_MIN``): ``ApiClient.param_serialize``
  and the six-argument ``call_api`` first appear there; an older client is refused at connect
  time with a clear message instead of an ``AttributeError`` mid-call.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote

import kubernetes
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
from egresskit.cluster.kube_calls import (
    EXEC_STARTUP,
    grpc_exec_command,
    parse_grpc_exec,
    parse_tcp_exec,
    tcp_exec_command,
)
from egresskit.cluster.kube_readiness import readiness, refusal, wait_targets
from egresskit.cluster.kube_wire import (
    CURL_MARKER,
    DEFAULT_API_VERSIONS,
    PROXY_ADMIN_PORT,
    Resource,
    apply_phases,
    apply_request,
    apply_summary,
    curl_command,
    discovered_resource,
    exec_exit_code,
    group_versions,
    missing_api_message,
    parse_curl_stdout,
    patch_body,
    patch_summary,
    proxy_metrics_error,
    proxy_metrics_path,
    proxy_metrics_section,
    resource_in,
    status_error,
    unserved_version_message,
)
from egresskit.cluster.owned import Jobs, Teardown
from egresskit.errors import BackendError, ClusterClosed, WaitTimeout
from egresskit.grpcclient import GrpcCallResult
from egresskit.manifests.model import K8sObject
from egresskit.podimages import GRPC_CLIENT_CONTAINER, GRPC_CLIENT_POD_NAME

# The pure helpers live in kube_wire and kube_readiness; the ones callers have always
# imported from here stay importable from here.
__all__ = [
    "CLIENT_CONTAINER",
    "CURL_MARKER",
    "FIELD_MANAGER",
    "PROXY_ADMIN_PORT",
    "KubeCluster",
    "ProgressFn",
    "connect_kind",
    "connect_kube",
    "curl_command",
    "exec_exit_code",
    "parse_curl_stdout",
    "readiness",
    "stderr_progress",
]

ProgressFn = Callable[[str], None]

# The kubeconfig helpers are untyped; used through Any on purpose.
kconfig: Any = _kconfig

FIELD_MANAGER = "egresskit"
CLIENT_CONTAINER = "client"


def _require_client_version() -> None:
    """Refuse a ``kubernetes`` client older than the one whose API this module calls."""
    # param_serialize and call_api(method, url, ...) arrived with kubernetes 37.0.0, the
    # first release generated by openapi-generator 7 (36.0.3 has neither).
    if not hasattr(kclient.ApiClient, "param_serialize"):
        raise BackendError(
            f"the kubernetes client {getattr(kubernetes, '__version__', '?')} is installed; "
            f"egresskit needs kubernetes>={versions.KUBERNETES_CLIENT_MIN} "
            f"(ApiClient.param_serialize): pip install 'kubernetes>="
            f"{versions.KUBERNETES_CLIENT_MIN}'"
        )


def stderr_progress(message: str) -> None:
    """Default progress sink: one line on stderr (keeps notebook output clean)."""
    print(f"egresskit: {message}", file=sys.stderr, flush=True)


def _load_manifests(source: Manifests) -> list[K8sObject]:
    """Validate the batch with the kit's own loader (raises ManifestError, sends nothing)."""
    # Imported here so this module loads even while the manifests package is mid-change.
    from egresskit.manifests import load_manifests

    if isinstance(source, str | Path | Mapping):
        return load_manifests(source)
    return load_manifests(list(source))


# ---------------------------------------------------------------------------- the backend


def api_client(context: str | None, kubeconfig: str | None) -> tuple[Any, str]:
    """A REST client for ``context`` of ``kubeconfig`` (or ``$KUBECONFIG``, read now, not when
    the kubernetes package was imported), and the context's name; every kubeconfig problem
    as one :class:`BackendError` naming the file and the context."""
    path = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
    try:
        contexts, current = kconfig.list_kube_config_contexts(config_file=path)
        names = [c["name"] for c in contexts or []]
        if context is not None and context not in names:
            raise BackendError(
                f"kubeconfig {path}: no context {context!r}; "
                f"expected one of {', '.join(names) or '(none)'}"
            )
        api = kconfig.new_client_from_config(
            config_file=path, context=context, persist_config=False
        )
    except (ConfigException, OSError, yaml.YAMLError, KeyError, TypeError) as exc:
        raise BackendError(f"kubeconfig {path}: cannot use context {context!r}: {exc}") from exc
    return api, context or (current or {}).get("name", "kube")


class KubeCluster:
    """The facade on a kube context (``kind-egresskit`` or any cluster with Linkerd).

    Safe to use from several threads at once (curls, metrics scrapes and changes together, as
    the notebooks do): exec never touches the client the REST calls use (module docstring).
    """

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
        _require_client_version()
        self._api, self.name = api_client(context, kubeconfig)
        self._field_manager = field_manager
        self._timeout = timeout
        self._request_timeout = request_timeout
        self._poll_interval = poll_interval
        self._progress = progress or stderr_progress
        self._changes: list[ChangeRecord] = []
        self._resources: dict[tuple[str, str], Resource] = {}
        self._groups: dict[str, str] = {}
        self._applied_versions: dict[str, str] = {}
        # Guards the caches, the change log and the closed flag; never held across a request.
        self._lock = threading.Lock()
        self._closed_at: datetime | None = None
        #: The traffic loops and scrapers started on this cluster; ``close()`` stops them.
        self.jobs = Jobs(self._closed_error)

    # -- context manager ------------------------------------------------------------------

    def __enter__(self) -> KubeCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop every traffic loop and scraper started on this cluster, then the REST
        client; idempotent and thread-safe. Every later call raises ClusterClosed. A job
        that fails to stop does not keep the rest running: one BackendError lists it."""
        with self._lock:
            if self._closed_at is not None:
                return
            self._closed_at = datetime.now(UTC)
        # Jobs first, outside the lock (a job's stop waits for its thread, which may be in a
        # call on this facade): an exec in flight finishes, the loop's next call sees the
        # cluster closed and ends the loop (egresskit.cluster.owned).
        # A job that fails to stop is reported after the REST client is closed, not
        # instead of closing it (Teardown).
        teardown = Teardown(f"the kube cluster ({self.name})")
        try:
            teardown.stop_jobs(self.jobs.close())
        finally:
            with teardown.step("the REST client"):
                self._api.close()
        teardown.raise_if_any()

    @property
    def closed(self) -> bool:
        with self._lock:
            return self._closed_at is not None

    def _check_open(self) -> None:
        with self._lock:
            closed = self._closed_at is not None
        if closed:
            raise self._closed_error()

    def _closed_error(self) -> ClusterClosed:
        when = f" at {self._closed_at:%H:%M:%S} UTC" if self._closed_at else ""
        return ClusterClosed(
            f"this kube cluster ({self.name}) was closed{when}; connect again with "
            f"egresskit.connect('kube', context={self.name!r}) (or a new Tutorial)"
        )

    @property
    def changes(self) -> list[ChangeRecord]:
        with self._lock:
            return list(self._changes)

    def _record(self, change: ChangeRecord) -> None:
        with self._lock:
            self._changes.append(change)

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
        return status_error(self.name, what, status, data)

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
        with self._lock:
            cached = self._resources.get(key)
        if cached is not None:
            return cached
        path = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        status, data = self._request("GET", path)
        if status not in (200, 404):
            raise self._error(f"discovery of {api_version}", status, data)
        resource = resource_in(api_version, kind, data, where=self.name) if status == 200 else None
        if resource is None:
            # Installed at other versions (the guide's literal v1alpha2 HTTPRoute on Gateway
            # API v1.2.1, which serves it at v1 and v1beta1 only) is not "not installed".
            served = self._versions_serving(api_version, kind)
            if served:
                raise BackendError(
                    f"{self.name}: {unserved_version_message(api_version, kind, served)}"
                )
            if status == 404:
                raise BackendError(f"{self.name}: {missing_api_message(api_version, kind)}")
            resource = discovered_resource(api_version, kind, data, where=self.name)
        with self._lock:
            self._resources[key] = resource
        return resource

    def _versions_serving(self, api_version: str, kind: str) -> list[str]:
        """The versions of ``api_version``'s group that serve ``kind``, in discovery order."""
        group = api_version.rpartition("/")[0]
        if not group:
            return []
        status, data = self._request("GET", f"/apis/{group}")
        if status != 200:
            return []
        served = []
        for version in group_versions(data):
            if f"{group}/{version}" == api_version:
                continue
            status, listing = self._request("GET", f"/apis/{group}/{version}")
            if status == 200 and resource_in(f"{group}/{version}", kind, listing, where=self.name):
                served.append(version)
        return served

    def _resource_for_kind(self, kind: str) -> Resource:
        """A bare kind (``EgressNetwork``) or ``Kind.group`` (``HTTPRoute.policy.linkerd.io``)."""
        base, _, group = kind.partition(".")
        if group:
            version = self._preferred_version(group)
            return self._resource(f"{group}/{version}", base)
        with self._lock:
            applied = self._applied_versions.get(base.lower())
        api_version = applied or DEFAULT_API_VERSIONS.get(base.lower())
        if api_version is None:
            raise BackendError(
                f"{self.name}: unknown kind {kind!r}: expected one of "
                f"{', '.join(sorted(DEFAULT_API_VERSIONS))} or Kind.group"
            )
        return self._resource(api_version, base)

    def _preferred_version(self, group: str) -> str:
        with self._lock:
            known = self._groups.get(group)
        if known is None:
            doc = self._json(f"discovery of group {group}", "GET", f"/apis/{group}")
            known = str(doc["preferredVersion"]["version"])
            with self._lock:
                self._groups[group] = known
        return known

    # -- verbs ----------------------------------------------------------------------------

    def apply(self, manifests: Manifests) -> list[str]:
        self._check_open()
        objects = _load_manifests(manifests)  # ManifestError: nothing sent
        resources = [self._resource(o.api_version, o.kind) for o in objects]
        namespaces, others = apply_phases(objects, resources)
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
            with self._lock:
                self._applied_versions[res.kind.lower()] = res.api_version
        self._record(
            ChangeRecord(
                at=datetime.now(UTC),
                verb="apply",
                objects=tuple(o.display for o in objects),
                summary=apply_summary(objects),
            )
        )
        self._wait_in_force(applied)
        return [results[i] for i in range(len(objects))]

    def _server_side_apply(
        self, obj: K8sObject, res: Resource, *, dry_run: bool
    ) -> tuple[str, dict[str, Any]]:
        path, query, body = apply_request(
            obj, res, field_manager=self._field_manager, dry_run=dry_run
        )
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
        self._check_open()
        if type != "merge":
            raise BackendError(f"{self.name}: patch type {type!r}: expected 'merge'")
        body = patch_body(patch)
        res = self._resource_for_kind(kind)
        display = f"{res.kind} {namespace + '/' if res.namespaced else ''}{name}"
        result = self._json(
            f"patch {display}",
            "PATCH",
            res.path(namespace, name),
            query=[("fieldManager", self._field_manager), ("fieldValidation", "Strict")],
            body=body,
            content_type="application/merge-patch+json",
        )
        self._record(
            ChangeRecord(
                at=datetime.now(UTC),
                verb="patch",
                objects=(display,),
                summary=patch_summary(res.kind, name, body),
            )
        )
        self._wait_in_force([(res, result)])
        return result

    def delete(
        self,
        kind: str,
        name: str,
        *,
        namespace: str | None = None,
        grace_period: int | None = None,
    ) -> None:
        """Delete and wait until gone (404). ``grace_period`` (``gracePeriodSeconds``) bounds
        how long pods may take to stop; for a Namespace it applies to the pods in it.

        The guide's pods run ``sh -c "sleep infinity"`` as PID 1, which ignores SIGTERM, so
        each waits out its whole grace period (30 s by default) and keeps its namespace
        terminating that long; ``grace_period=0`` is for teardown where nothing cares how
        they stop.
        """
        self._check_open()
        res = self._resource_for_kind(kind)
        path = res.path(namespace, name)
        display = f"{res.kind} {(namespace or 'default') + '/' if res.namespaced else ''}{name}"
        query = [("propagationPolicy", "Background")]
        if grace_period is not None:
            query.append(("gracePeriodSeconds", str(grace_period)))
        self._json(f"delete {display}", "DELETE", path, query=query)
        if grace_period is not None and res.kind == "Namespace" and res.api_version == "v1":
            # After the namespace: once it is terminating no new pod can be created in it
            # (NamespaceLifecycle admission), so a Deployment cannot replace these.
            self._json(
                f"delete the pods in {name}",
                "DELETE",
                f"/api/v1/namespaces/{quote(name, safe='')}/pods",
                query=[("gracePeriodSeconds", str(grace_period))],
            )
        self._record(
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
        self._check_open()
        res = self._resource_for_kind(kind)
        display = f"{res.kind} {(namespace or 'default') + '/' if res.namespaced else ''}{name}"
        return self._json(f"get {display}", "GET", res.path(namespace, name))

    def curl(self, *args: str, pod: str, namespace: str, timeout: float = 30.0) -> CurlResult:
        self._check_open()
        started_at = datetime.now(UTC)
        # curl stops itself at --max-time; the extra 10 s covers exec start-up.
        stdout, stderr, exit_code = self._exec(
            curl_command(args, timeout=timeout),
            pod=pod,
            namespace=namespace,
            container=CLIENT_CONTAINER,
            what="curl",
            bound=timeout + 10.0,
        )
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

    def grpc(
        self,
        target: str,
        method: str,
        *,
        pod: str,
        namespace: str,
        data: Sequence[Mapping[str, Any]] = (),
        headers: Sequence[str] = (),
        timeout: float = 30.0,
    ) -> GrpcCallResult:
        """``kubectl exec POD -c grpc-client -- python -m egresskit.grpcclient --json ...``:
        one gRPC call from ``pod`` (a pod from :data:`egresskit.podimages.GRPC_CLIENT_POD`),
        through its proxy as its application's calls go; the same result as the local
        backend's ``grpc``. A non-OK gRPC status is a result, not an error."""
        self._check_open()
        command = grpc_exec_command(target, method, data=data, headers=headers, timeout=timeout)
        stdout, stderr, exit_code = self._exec_client(
            command, pod=pod, namespace=namespace, what="grpcclient", timeout=timeout
        )
        where = f"{self.name}: grpcclient {target} {method} in {namespace}/{pod}"
        return parse_grpc_exec(stdout, stderr, exit_code, where=where)

    def tcp(
        self, target: str, data: bytes, *, pod: str, namespace: str, timeout: float = 10.0
    ) -> bytes:
        """Send ``data`` to ``target`` (``host:port``) from ``pod`` (Python in the
        ``grpc-client`` container) and return every byte that came back until the other
        end closed (b"": closed at once), as the local backend's ``tcp``."""
        self._check_open()
        stdout, stderr, exit_code = self._exec_client(
            tcp_exec_command(target, data, timeout=timeout),
            pod=pod,
            namespace=namespace,
            what="tcp",
            timeout=timeout,
        )
        where = f"{self.name}: tcp {target} from {namespace}/{pod}"
        return parse_tcp_exec(stdout, stderr, exit_code, where=where)

    def _exec_client(
        self, command: list[str], *, pod: str, namespace: str, what: str, timeout: float
    ) -> tuple[str, str, int]:
        """Exec in the ``grpc-client`` container; a refusal says which pod to use."""
        try:
            return self._exec(
                command,
                pod=pod,
                namespace=namespace,
                container=GRPC_CLIENT_CONTAINER,
                what=what,
                bound=timeout + EXEC_STARTUP,
            )
        except BackendError as exc:
            raise BackendError(
                f"{exc} (gRPC and TCP calls run in the {GRPC_CLIENT_CONTAINER} container of a "
                "pod applied from egresskit.podimages.GRPC_CLIENT_POD, "
                f"pod={GRPC_CLIENT_POD_NAME!r})"
            ) from exc

    def _exec(
        self,
        command: list[str],
        *,
        pod: str,
        namespace: str,
        container: str,
        what: str,
        bound: float,
    ) -> tuple[str, str, int]:
        """Run ``command`` in the container over the exec websocket: (stdout, stderr, exit
        code); the API's own refusals (no pod, no container) are BackendError."""
        where = f"{self.name}: exec {what} in {namespace}/{pod} (container {container})"
        # A client of its own: stream() swaps call_api on the client it is given (module
        # docstring), so the REST client is never touched by exec.
        exec_api: Any = kclient.ApiClient(configuration=self._api.configuration)
        try:
            resp = stream(
                kclient.CoreV1Api(exec_api).connect_get_namespaced_pod_exec,
                pod,
                namespace,
                command=command,
                container=container,
                stdin=False,
                stdout=True,
                stderr=True,
                tty=False,
                _preload_content=False,
            )
        except (ApiException, urllib3.exceptions.HTTPError, WebSocketException, OSError) as exc:
            exec_api.close()
            raise BackendError(f"{where}: {exc}") from exc
        try:
            resp.run_forever(timeout=bound)
            if resp.is_open():
                raise WaitTimeout(f"{what} in {namespace}/{pod} to exit", bound, "still running")
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
            exec_api.close()
        return stdout, stderr, exit_code

    def proxy_metrics(self, pod: str, *, namespace: str) -> str:
        """``linkerd dg proxy-metrics -n NS po/POD``: header, then the text or ``# ERROR``."""
        self._check_open()
        obj = self.get("Pod", pod, namespace=namespace)  # a missing pod is an error, as there
        if (obj.get("status") or {}).get("phase") != "Running":
            return proxy_metrics_error(pod, f"pod not running: {pod}")
        path = proxy_metrics_path(namespace, pod)
        try:
            status, data = self._request("GET", path, accept="text/plain")
        except BackendError as exc:
            return proxy_metrics_error(pod, exc)
        if status != 200:
            return proxy_metrics_error(pod, self._error("proxy metrics", status, data))
        return proxy_metrics_section(pod, data.decode("utf-8", "replace"))

    # -- helpers --------------------------------------------------------------------------

    def _wait_in_force(self, applied: Sequence[tuple[Resource, Mapping[str, Any]]]) -> None:
        """Poll every object with a readiness rule until all are ready, within the bound."""
        pending = wait_targets(applied)
        started = time.monotonic()
        last: dict[str, str] = {}
        while pending:
            for label, (res, ns, name) in list(pending.items()):
                obj = self._json(f"get {label}", "GET", res.path(ns, name))
                refused = refusal(obj)
                if refused is not None:
                    raise BackendError(f"{self.name}: {label} not accepted by Linkerd: {refused}")
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


def connect_kube(context: str | None = None, **kw: Any) -> KubeCluster:
    """The facade on ``context`` (the kubeconfig's current context when ``None``)."""
    return KubeCluster(context, **kw)


def connect_kind(cluster: str = versions.KIND_CLUSTER_NAME, **kw: Any) -> KubeCluster:
    """The facade on the kind cluster ``cluster`` (context ``kind-<cluster>``)."""
    return KubeCluster(f"kind-{cluster}", **kw)
