"""The local backend: a Linkerd-meshed cluster emulated on loopback, behind the facade.

``LocalCluster`` wires the pieces of :mod:`egresskit.mesh` together:

* an :class:`~egresskit.mesh.store.ObjectStore` (the API server and Linkerd's status
  controller), whose snapshot every proxy reads per request;
* one :class:`~egresskit.mesh.proxy.EgressProxy` per meshed Pod (``linkerd.io/inject:
  enabled`` on the Pod or its Namespace), with its own metrics registry;
* the simulated internet (real httpbin for httpbin.org, an echo site elsewhere, TLS from a
  local CA) and one local server per Deployment running ``buoyantio/bb terminus``;
* a simulated DNS: external names in the documentation ranges, Services at ClusterIPs.

``curl`` runs the real curl binary "inside" a pod: each URL's host:port is pointed at that
pod's proxy (``--connect-to``), so the Host header and SNI stay what the client sent, and
curl trusts the local CA. A pod that is not meshed bypasses the proxy and goes straight to
the simulated internet, which is exactly the guide's warning about bypassing the sidecar.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from egresskit.cluster.base import ChangeRecord, CurlResult, Manifests, PatchType
from egresskit.cluster.owned import Jobs, Teardown
from egresskit.dns import SimulatedDNS
from egresskit.errors import BackendError, ClusterClosed, EgressKitError
from egresskit.manifests import load_manifests
from egresskit.manifests.model import (
    Deployment,
    EgressNetwork,
    GRPCRoute,
    HTTPRoute,
    K8sObject,
    Namespace,
    Pod,
    Service,
    TCPRoute,
    TLSRoute,
)
from egresskit.mesh import heap
from egresskit.mesh.internet import SimulatedInternet
from egresskit.mesh.metrics import ProxyMetrics, hostname_labels_enabled
from egresskit.mesh.proxy import EgressProxy, ProxyConfig
from egresskit.mesh.runtime import LoopThread
from egresskit.mesh.store import ObjectStore, canonical_kind
from egresskit.mesh.workloads import RunningWorkload, parse_terminus, start_workload
from egresskit.podcalls import GrpcCallResult, run_grpcclient, tcp_exchange
from egresskit.policy.decision import Decision
from egresskit.policy.snapshot import MeshSettings, Snapshot

INJECT_ANNOTATION = "linkerd.io/inject"
CURL_MARKER = "@@egresskit"
_MARKER_RE = re.compile(
    rf"\n?{CURL_MARKER} http_code=(?P<code>\d+) time_total=(?P<time>[\d.]+)\n?$"
)


@dataclass
class _PodRuntime:
    pod: Pod
    proxy: EgressProxy | None
    metrics: ProxyMetrics | None


class LocalCluster:
    """The embedded mesh. Use as a context manager: everything stops on exit.

    ``close()`` first stops the traffic loops and scrapers started on this cluster
    (:attr:`jobs`), then the proxies, workloads, simulated internet and the loop thread;
    every later call raises :class:`~egresskit.errors.ClusterClosed`. The temporary CA
    directory is removed by ``close()``, or at interpreter exit when ``close()`` never
    ran (a notebook that failed before its cleanup cell): ``weakref.finalize``.
    """

    name = "local"

    def __init__(
        self,
        *,
        upstreams: Mapping[str, str] | None = None,
        hosts: Mapping[str, str] | None = None,
        settings: MeshSettings | None = None,
        proxy_config: ProxyConfig | None = None,
        curl_binary: str = "curl",
    ) -> None:
        self.settings = settings or MeshSettings()
        self.proxy_config = proxy_config or ProxyConfig()
        self.curl_binary = curl_binary
        self._lock = threading.RLock()
        self._changes: list[ChangeRecord] = []
        self._pods: dict[tuple[str, str], _PodRuntime] = {}
        #: (namespace, deployment) -> (pod template labels, running servers)
        self._workloads: dict[tuple[str, str], tuple[dict[str, str], list[RunningWorkload]]] = {}
        self._closed = False
        self._closed_at: datetime | None = None
        self.jobs = Jobs(self._closed_error)
        self.dns = SimulatedDNS()
        for host, ip in (hosts or {}).items():
            self.dns.add(host, ip)
        self.store = ObjectStore(settings=self.settings)
        self._loop = LoopThread().start()
        try:
            self.internet = SimulatedInternet(upstreams=upstreams).start()
        except BaseException:
            self._loop.stop()
            raise
        # The CA's directory goes with the cluster even if close() is never called
        # (finalize runs at interpreter exit, or when the cluster is collected).
        self._remove_tmp = weakref.finalize(
            self, shutil.rmtree, self.internet.ca_file.parent, ignore_errors=True
        )
        # What is loaded now lives as long as the process: out of the collector's full
        # collections, which would otherwise stall every proxy (egresskit/mesh/heap.py).
        heap.settle()

    # -- context manager ------------------------------------------------------------------

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop every traffic loop and scraper started on this cluster, then every proxy,
        workload, server and thread, in that order; idempotent and thread-safe. A part that
        fails to stop does not stop the rest: every part is stopped, then one BackendError
        lists what failed."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._closed_at = datetime.now(UTC)
        # Jobs first, outside the lock: a loop's curl in flight finishes on a live mesh,
        # and its next call sees the cluster closed and ends the loop. A step that fails
        # (a job stuck past its bound) is reported at the end, after every other part has
        # stopped: the close flag is already set, so there is no second chance (Teardown).
        teardown = Teardown("the local cluster")
        try:
            teardown.stop_jobs(self.jobs.close())
        finally:
            try:
                with self._lock:
                    pods = list(self._pods.items())
                    self._pods.clear()
                    workloads = [(k, w) for k, ws in self._workloads.items() for w in ws[1]]
                    self._workloads.clear()
                for (ns, name), rt in pods:
                    if rt.proxy is not None:
                        with teardown.step(f"the proxy of pod {ns}/{name}"):
                            self._loop.call(rt.proxy.close(), timeout=5, what="a proxy to stop")
                for (ns, name), w in workloads:
                    with teardown.step(f"a server of deployment {ns}/{name}"):
                        w.close()
                with teardown.step("the simulated internet"):
                    self.internet.close()
            finally:
                self._remove_tmp()
                self._loop.stop()
        teardown.raise_if_any()

    @property
    def closed(self) -> bool:
        return self._closed

    # -- the facade: writes ----------------------------------------------------------------

    def apply(self, manifests: Manifests) -> list[str]:
        self._check_open()
        if not isinstance(manifests, str | Path | Mapping):
            manifests = list(manifests)  # read twice below: materialise generators
        parsed = load_manifests(manifests)  # validate first: nothing applies on error
        self._check_runnable(parsed)
        # The store parses the same input again, so its errors name the same file/document.
        # Write and reconcile under one lock: two threads applying at once would otherwise
        # each reconcile against a stale read and stop the other's new pod's proxy.
        with self._lock:
            self._check_open()
            results = self.store.apply(manifests)
            self._reconcile()
        lines = [f"{obj.kind.lower()}/{obj.name} {verb}" for obj, verb in results]
        self._record("apply", [obj for obj, _ in results], _summary_apply(parsed))
        return lines

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
            raise BackendError(f"patch type {type!r} is not supported; expected 'merge'")
        if isinstance(patch, str):
            try:
                patch = json.loads(patch)
            except json.JSONDecodeError as exc:
                raise BackendError(f"patch is not valid JSON: {exc}") from exc
        if not isinstance(patch, Mapping):
            raise BackendError(f"patch must be a JSON object, found {patch!r}")
        with self._lock:  # one write and its reconcile at a time (see apply)
            self._check_open()
            obj = self.store.patch(kind, name, namespace, patch)
            self._reconcile()
        self._record("patch", [obj], _summary_patch(obj, patch))
        return self.store.get(obj.kind, obj.name, obj.namespace)

    def delete(self, kind: str, name: str, *, namespace: str | None = None) -> None:
        self._check_open()
        with self._lock:  # one write and its reconcile at a time (see apply)
            self._check_open()
            removed = self.store.delete(kind, name, namespace)
            self._reconcile()
        self._record("delete", removed, f"delete {canonical_kind(kind)} {name}")

    # -- the facade: reads ------------------------------------------------------------------

    def get(self, kind: str, name: str, *, namespace: str | None = None) -> dict[str, Any]:
        self._check_open()
        return self.store.get(kind, name, namespace)

    def objects(self) -> list[K8sObject]:
        """Every object in force now (for analyses that need the manifests in force)."""
        self._check_open()
        return self.store.objects()

    def snapshot(self) -> Snapshot:
        self._check_open()
        return self.store.snapshot

    @property
    def changes(self) -> list[ChangeRecord]:
        with self._lock:
            return list(self._changes)

    def proxy_metrics(self, pod: str, *, namespace: str) -> str:
        self._check_open()
        rt = self._pod(pod, namespace)
        if rt.metrics is None:
            # linkerd dg proxy-metrics on an unmeshed pod: no admin port to scrape.
            return f"#\n# POD {pod} (1 of 1)\n#\n# ERROR: pod {pod} is not meshed\n"
        return f"#\n# POD {pod} (1 of 1)\n#\n" + rt.metrics.render()

    def outbound_ports(self, pod: str, *, namespace: str) -> dict[int, int]:
        """Original destination port -> loopback port capturing this pod's outbound traffic.

        Send anything there as if from the pod; the destination is the ``Host`` or SNI name,
        e.g. ``curl --connect-to httpbin.org:80:127.0.0.1:<port> http://httpbin.org/get``.
        """
        self._check_open()
        rt = self._pod(pod, namespace)
        if rt.proxy is None:
            raise BackendError(f"pod {namespace}/{pod} is not meshed: it has no proxy")
        for port in self._route_ports():
            self._loop.call(rt.proxy.listen(port), timeout=5, what=f"a listener on :{port}")
        return rt.proxy.ports()

    # -- curl -------------------------------------------------------------------------------

    def curl(self, *args: str, pod: str, namespace: str, timeout: float = 30.0) -> CurlResult:
        self._check_open()
        rt = self._pod(pod, namespace)
        extra: list[str] = ["--cacert", str(self.internet.ca_file), "--noproxy", "*"]
        for url in _urls(args):
            extra += ["--connect-to", self._connect_to(rt, url, namespace)]
        wants_write_out = any(a in ("-w", "--write-out") for a in args)
        marker = (
            []
            if wants_write_out
            else [
                "-w",
                f"%{{stderr}}\n{CURL_MARKER} http_code=%{{http_code}} time_total=%{{time_total}}\n",
            ]
        )
        argv = [self.curl_binary, *args, *extra, *marker]
        env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        started = datetime.now(UTC)
        try:
            proc = subprocess.run(argv, capture_output=True, timeout=timeout, env=env, check=False)
        except FileNotFoundError as exc:
            raise BackendError(f"the curl binary {self.curl_binary!r} is not installed") from exc
        except subprocess.TimeoutExpired as exc:
            raise BackendError(f"curl {' '.join(args)} did not finish within {timeout:g}s") from exc
        stdout = proc.stdout.decode("utf-8", "replace")
        stderr = proc.stderr.decode("utf-8", "replace")
        status: int | None = None
        time_total = (datetime.now(UTC) - started).total_seconds()
        m = _MARKER_RE.search(stderr)
        if m:
            stderr = stderr[: m.start()] + stderr[m.end() :]
            code = int(m.group("code"))
            status = code or None
            time_total = float(m.group("time"))
        return CurlResult(
            args=tuple(args),
            exit_code=proc.returncode,
            http_status=status,
            stdout=stdout,
            stderr=stderr,
            time_total=time_total,
            started_at=started,
        )

    # -- gRPC and TCP clients "in the pod" (egresskit.podcalls) -----------------------------

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
        """Run ``python -m egresskit.grpcclient`` as if inside ``pod``, the way :meth:`curl`
        runs curl: ``target`` (``host:port``) is pointed at the pod's proxy."""
        self._check_open()
        connect_to = self._connect_to(self._pod(pod, namespace), f"http://{target}", namespace)
        return run_grpcclient(
            target, method, connect_to=connect_to, data=data, headers=headers, timeout=timeout
        )

    def tcp(
        self, target: str, data: bytes, *, pod: str, namespace: str, timeout: float = 10.0
    ) -> bytes:
        """Send ``data`` to ``target`` (``host:port``) as if from ``pod`` and return every
        byte that came back until the other end closed (b"": closed at once)."""
        self._check_open()
        connect_to = self._connect_to(self._pod(pod, namespace), f"tcp://{target}", namespace)
        return tcp_exchange(connect_to, data, timeout=timeout)

    def _connect_to(self, rt: _PodRuntime, url: str, namespace: str) -> str:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        host = parts.hostname or ""
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError as exc:
            raise BackendError(f"{url!r}: the port is not a number between 1 and 65535") from exc
        try:
            ip = str(self.dns.resolve(host, search_namespace=namespace))
        except EgressKitError as exc:
            raise BackendError(f"{url!r}: {exc}") from exc
        url_host = f"[{host}]" if ":" in host else host
        if rt.proxy is None:
            # Not meshed: the pod's packets go straight out, bypassing any policy.
            target = self._upstream(host, ip, port, parts.scheme == "https", None)
            if target is None:
                raise BackendError(f"{url!r}: nothing answers at {ip}:{port}")
            return f"{url_host}:{port}:{target[0]}:{target[1]}"
        lport = self._loop.call(
            rt.proxy.listen(port, ip), timeout=5, what=f"a listener for {ip}:{port}"
        )
        return f"{url_host}:{port}:127.0.0.1:{lport}"

    # -- where traffic lands ---------------------------------------------------------------

    def _upstream(
        self, host: str | None, ip: str, port: int, is_tls: bool, decision: Decision | None
    ) -> tuple[str, int] | None:
        snap = self.store.snapshot
        if decision is not None and decision.target == "service" and decision.backend:
            b = decision.backend
            return self._service_endpoint(snap, b.namespace, b.name, b.port)
        svc = snap.services_by_ip.get(ip)
        if svc is not None:
            return self._service_endpoint(snap, svc.namespace or "", svc.name, port)
        return self.internet.upstream_for(host, ip, port, tls=is_tls)

    def _service_endpoint(
        self, snap: Snapshot, namespace: str, name: str, port: int | None
    ) -> tuple[str, int] | None:
        svc = snap.services.get((namespace, name))
        if svc is None or port is None:
            return None
        sport = next((p for p in svc.ports if p.port == port), None)
        if sport is None:
            return None
        target_port = sport.target_port if sport.target_port is not None else sport.port
        selector = dict(svc.selector)
        with self._lock:
            items = list(self._workloads.items())
        for (ns, _), (labels, workloads) in items:
            if ns != namespace:
                continue
            for w in workloads:
                selected = selector and all(labels.get(k) == v for k, v in selector.items())
                if selected and (address := w.serves(target_port)) is not None:
                    return address
        return None

    # -- keeping processes in line with the objects ------------------------------------------

    def _check_runnable(self, parsed: list[K8sObject]) -> None:
        for obj in parsed:
            if isinstance(obj, Deployment):
                for container in obj.template.containers:
                    parse_terminus(container)  # raises UnsupportedWorkload, before any change

    def _reconcile(self) -> None:
        """Bring proxies and workloads in line with the store; callers hold ``_lock``.

        The store is read under the lock too: a read taken before another thread's write
        and reconcile would stop that thread's new pod as if it had been deleted."""
        with self._lock:
            # Under the lock close() takes too: a write racing close() starts nothing.
            self._check_open()
            objs = self.store.objects()
            namespaces = {o.name: o for o in objs if isinstance(o, Namespace)}
            for svc in (o for o in objs if isinstance(o, Service)):
                if svc.cluster_ip:
                    self.dns.register_service(svc.name, svc.namespace or "", svc.cluster_ip)
            # Pods: a proxy for each meshed pod.
            pods = {(o.namespace or "", o.name): o for o in objs if isinstance(o, Pod)}
            for key in [k for k in self._pods if k not in pods]:
                rt = self._pods.pop(key)
                if rt.proxy is not None:
                    self._loop.call(rt.proxy.close(), timeout=5, what="a proxy to stop")
            for key, pod in pods.items():
                if key in self._pods:
                    continue
                ns_obj = namespaces.get(key[0])
                self._pods[key] = self._start_pod(pod, ns_obj)
            # Deployments: one local server per replica's container.
            deps = {(o.namespace or "", o.name): o for o in objs if isinstance(o, Deployment)}
            for key in [k for k in self._workloads if k not in deps]:
                for w in self._workloads.pop(key)[1]:
                    w.close()
            for key, dep in deps.items():
                if key in self._workloads:
                    continue
                started = [start_workload(c) for c in dep.template.containers]
                self._workloads[key] = (dict(dep.template.labels), started)

    def _start_pod(self, pod: Pod, ns: Namespace | None) -> _PodRuntime:
        pod_ann = dict(pod.metadata.annotations)
        ns_ann = dict(ns.metadata.annotations) if ns else {}
        inject = pod_ann.get(INJECT_ANNOTATION, ns_ann.get(INJECT_ANNOTATION, ""))
        if inject != "enabled":
            return _PodRuntime(pod=pod, proxy=None, metrics=None)
        metrics = ProxyMetrics(hostname_labels=hostname_labels_enabled(pod_ann, ns_ann))
        proxy = EgressProxy(
            namespace=pod.namespace or "",
            pod=pod.name,
            snapshot=lambda: self.store.snapshot,
            dns=self.dns,
            upstreams=self._upstream,
            metrics=metrics,
            config=self.proxy_config,
        )
        for port in (80, 443):
            self._loop.call(proxy.listen(port), timeout=5, what=f"a listener on :{port}")
        return _PodRuntime(pod=pod, proxy=proxy, metrics=metrics)

    def _pod(self, pod: str, namespace: str) -> _PodRuntime:
        with self._lock:
            rt = self._pods.get((namespace, pod))
        if rt is None:
            raise BackendError(f'pod "{pod}" not found in namespace {namespace}')
        return rt

    def _route_ports(self) -> set[int]:
        ports = {80, 443}
        for o in self.store.objects():
            if isinstance(o, HTTPRoute | GRPCRoute | TLSRoute | TCPRoute):
                ports |= {r.port for r in o.parent_refs if r.port is not None}
        return ports

    def _record(self, verb: str, objs: list[K8sObject], summary: str) -> None:
        rec = ChangeRecord(
            at=datetime.now(UTC),
            verb=verb,  # type: ignore[arg-type]
            objects=tuple(o.display for o in objs),
            summary=summary,
        )
        with self._lock:
            self._changes.append(rec)

    def _check_open(self) -> None:
        if self._closed:
            raise self._closed_error()

    def _closed_error(self) -> ClusterClosed:
        when = f" at {self._closed_at:%H:%M:%S} UTC" if self._closed_at else ""
        return ClusterClosed(
            f"this local cluster was closed{when}; start a new one with "
            "egresskit.connect('local') (or a new Tutorial)"
        )


def _urls(args: tuple[str, ...]) -> list[str]:
    """The URLs in a curl command line (``http://``/``https://`` arguments)."""
    return [a for a in args if re.match(r"^https?://", a)]


def _summary_apply(objs: list[K8sObject]) -> str:
    names = []
    for o in objs:
        if isinstance(o, EgressNetwork):
            names.append(f"EgressNetwork {o.name}: {o.traffic_policy}")
        elif not isinstance(o, Namespace | Pod):
            names.append(f"{o.kind} {o.name}")
    return ", ".join(names) if names else ", ".join(o.display for o in objs)


def _summary_patch(obj: K8sObject, patch: Mapping[str, Any]) -> str:
    if isinstance(obj, EgressNetwork) and "trafficPolicy" in patch.get("spec", {}):
        return f"EgressNetwork {obj.name}: {obj.traffic_policy}"
    return f"patch {obj.kind} {obj.name}"
