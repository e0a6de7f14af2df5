"""A fake Kubernetes API server: real HTTP on 127.0.0.1:0, enough REST for the kube backend.

It speaks discovery (``/api``, ``/api/v1``, ``/apis``, ``/apis/<g>``, ``/apis/<g>/<v>``),
server-side apply and merge patch on object URLs, GET, DELETE, ``Status`` error bodies in the
real shape, the pod proxy URL for the proxy's ``/metrics``, and pod ``exec`` over a websocket
(``v4.channel.k8s.io``: one byte of channel, then data). Every request is recorded.

What it serves comes from the real CRDs in ``egresskit/crds`` (:mod:`tests.fakes.crd_catalog`):
only their served versions, each with its schema and status subresource. What it is sent is
checked against that schema (422 ``Invalid``), and unknown fields are rejected with
``fieldValidation=Strict`` (400, ``strict decoding error: unknown field "spec.hostname"``) or
pruned with a ``Warning`` header otherwise, as a real API server does. With a status
subresource, writes to the object itself never change its ``status``.

Status is filled in on GET the way Linkerd's status controller and the built-in controllers
would write it (EgressNetwork Accepted, route parents Accepted, Pod Ready, Deployment
available), without ``observedGeneration`` on Linkerd's conditions (as Linkerd writes them),
optionally only after ``ready_after`` GETs of that object, never for objects named in
``never_ready``, or with the condition given in ``egress_status`` (e.g. ``Accepted=False``,
``EgressReasonNetworkOverlap``).

Deletion: objects named in a deleted namespace go with it; with ``pods_ignore_sigterm`` a pod
(``sh -c "sleep infinity"`` as PID 1 ignores SIGTERM) stays terminating, and keeps its
namespace terminating, unless it was deleted with ``gracePeriodSeconds=0``.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import hashlib
import json
import re
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

from tests.fakes.crd_catalog import (
    BUILTIN,
    GATEWAY,
    POLICY,
    Served,
    crd_kinds,
    prune,
    schema_problems,
    unknown_fields,
    version_priority,
)

_CORE_SUB = ["pods/exec", "pods/proxy", "pods/status"]
_WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


@dataclass(frozen=True, kw_only=True)
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    content_type: str | None
    authorization: str | None
    body: Any


@dataclass(frozen=True, kw_only=True)
class ExecResult:
    stdout: str = ""
    stderr: str = ""
    exit_code: int = 0
    #: A Status to send instead of Success/NonZeroExitCode (e.g. container not found).
    failure: str | None = None


def fake_curl(command: list[str]) -> ExecResult:
    """Answer like curl would: a body, then the ``-w`` text with its variables filled in."""
    write_out = command[command.index("-w") + 1] if "-w" in command else ""
    out = write_out.replace("%{http_code}", "200").replace("%{time_total}", "0.012345")
    return ExecResult(stdout='{"url": "http://httpbin.org/get"}' + out)


def status_body(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


@dataclass
class FakeApiServer:
    """Start with ``with FakeApiServer() as api:``; ``api.kubeconfig(tmp_path)`` points at it."""

    crds: bool = True
    gateway_api: bool = True
    ready_after: int = 0
    never_ready: set[str] = field(default_factory=set)
    #: GETs after a DELETE that still return the object (terminating).
    delete_lag: int = 0
    exec_handler: Callable[[list[str]], ExecResult] = fake_curl
    metrics: dict[tuple[str, str], str] = field(default_factory=dict)
    #: (method, path-regex) -> (code, reason, message): answer with that Status instead.
    fail: dict[tuple[str, str], tuple[int, str, str]] = field(default_factory=dict)

    requests: list[Recorded] = field(default_factory=list)
    objects: dict[tuple[str, str, str, str], dict[str, Any]] = field(default_factory=dict)
    exec_calls: list[dict[str, list[str]]] = field(default_factory=list)
    #: EgressNetwork name -> (status, reason, message) of the Accepted condition Linkerd writes.
    egress_status: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    #: Pods ignore SIGTERM: deleted without ``gracePeriodSeconds=0`` they stay terminating.
    pods_ignore_sigterm: bool = False
    #: Hang up right after the exec websocket handshake (connection lost mid-exec).
    exec_drop: bool = False

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._gets: dict[tuple[str, str, str, str], int] = {}
        self._deleting: dict[tuple[str, str, str, str], int] = {}
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def __enter__(self) -> FakeApiServer:
        handler = type("Handler", (_Handler,), {"fake": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.02},
            name="fake-apiserver",
            daemon=True,
        )
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None and self._thread is not None
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def kubeconfig(self, directory: Path, *, context: str = "fake", token: str = "t0k3n") -> Path:
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {"token": token}}],
            "contexts": [{"name": context, "context": {"cluster": "fake", "user": "fake"}}],
            "current-context": context,
        }
        path = directory / "kubeconfig"
        path.write_text(yaml.safe_dump(doc))
        return path

    # -- views for assertions -------------------------------------------------------------

    def calls(self, method: str | None = None, prefix: str = "") -> list[Recorded]:
        return [
            r
            for r in self.requests
            if (method is None or r.method == method) and r.path.startswith(prefix)
        ]

    def writes(self) -> list[Recorded]:
        return [r for r in self.requests if r.method in ("PATCH", "POST", "PUT", "DELETE")]

    # -- REST -----------------------------------------------------------------------------

    def catalogue(self) -> list[Served]:
        """Every kind served now: the built-ins, and the CRDs this fake has installed."""
        crds = [
            k
            for k in crd_kinds()
            if (k.group != POLICY or self.crds) and (k.group != GATEWAY or self.gateway_api)
        ]
        return [*BUILTIN, *crds]

    def served(self, group: str, version: str) -> list[Served] | None:
        kinds = [k for k in self.catalogue() if (k.group, k.version) == (group, version)]
        return kinds or None

    def _versions(self, group: str) -> list[str]:
        found = {k.version for k in self.catalogue() if k.group == group}
        return sorted(found, key=version_priority)

    def discovery(self, parts: list[str]) -> tuple[int, Any] | None:
        if parts == ["api"]:
            return 200, {"kind": "APIVersions", "versions": ["v1"]}
        if parts == ["apis"]:
            names = sorted({k.group for k in self.catalogue() if k.group})
            return 200, {"kind": "APIGroupList", "groups": [self._group(g) for g in names]}
        if len(parts) == 2 and parts[0] == "apis":
            if not self._versions(parts[1]):
                return 404, status_body(
                    404, "NotFound", "the server could not find the requested resource"
                )
            return 200, self._group(parts[1])
        if parts[0] == "api" and len(parts) == 2:
            group, version = "", parts[1]
        elif parts[0] == "apis" and len(parts) == 3:
            group, version = parts[1], parts[2]
        else:
            return None
        kinds = self.served(group, version)
        if kinds is None:
            return 404, status_body(
                404, "NotFound", "the server could not find the requested resource"
            )
        resources: list[dict[str, Any]] = []
        for k in kinds:
            resources.append(
                {
                    "name": k.plural,
                    "singularName": k.kind.lower(),
                    "namespaced": k.namespaced,
                    "kind": k.kind,
                    "verbs": ["delete", "deletecollection", "get", "list", "patch"],
                }
            )
            if k.status_subresource:
                resources.append(
                    {
                        "name": f"{k.plural}/status",
                        "namespaced": k.namespaced,
                        "kind": k.kind,
                        "verbs": ["get", "patch", "update"],
                    }
                )
        if group == "":
            resources += [
                {"name": s, "namespaced": True, "kind": "Pod", "verbs": ["get"]} for s in _CORE_SUB
            ]
        gv = f"{group}/{version}" if group else version
        return 200, {"kind": "APIResourceList", "groupVersion": gv, "resources": resources}

    def _group(self, name: str) -> dict[str, Any]:
        vs = self._versions(name)
        entries = [{"groupVersion": f"{name}/{v}", "version": v} for v in vs]
        return {
            "name": name,
            "versions": entries,
            "preferredVersion": {"groupVersion": f"{name}/{vs[0]}", "version": vs[0]},
        }

    def object_key(self, parts: list[str]) -> tuple[tuple[str, str, str, str], Served] | None:
        """(group, plural, namespace, name) and what is served there, for an object URL."""
        if parts[0] == "api":
            group, version, rest = "", parts[1], parts[2:]
        else:
            group, version, rest = parts[1], parts[2], parts[3:]
        ns = ""
        if len(rest) >= 3 and rest[0] == "namespaces" and rest[2] != "":
            ns, rest = rest[1], rest[2:]
        if len(rest) != 2:
            return None
        plural, name = rest
        kind = next((k for k in self.served(group, version) or [] if k.plural == plural), None)
        if kind is None:
            return None
        return (group, plural, ns, name), kind

    def check(
        self, served: Served, obj: dict[str, Any], *, strict: bool
    ) -> tuple[int, dict[str, Any]] | list[str]:
        """A ``Status`` error for ``obj``, or the warnings of a request that may proceed.

        Unknown fields: rejected under ``fieldValidation=Strict`` (the API server's strict
        decoding), else pruned from ``obj`` with one warning each (its default, ``Warn``).
        Schema violations: 422 ``Invalid``, every field at once.
        """
        if served.schema is None:
            return []
        unknown = unknown_fields(served.schema, obj)
        if unknown and strict:
            fields = ", ".join(f'unknown field "{u}"' for u in unknown)
            message = (
                f'{served.kind} in version "{served.version}" cannot be handled as a '
                f"{served.kind}: strict decoding error: {fields}"
            )
            return 400, status_body(400, "BadRequest", message)
        prune(served.schema, obj, unknown)
        problems = schema_problems(served.schema, obj)
        if problems:
            name = (obj.get("metadata") or {}).get("name")
            details = "; ".join(
                f"{path}: Invalid value: {str(value)[:80]}: {why}" for path, value, why in problems
            )
            message = f'{served.kind}.{served.group} "{name}" is invalid: {details}'
            return 422, status_body(422, "Invalid", message)
        return [f'unknown field "{u}"' for u in unknown]

    def get(self, key: tuple[str, str, str, str]) -> dict[str, Any] | None:
        with self._lock:
            obj = self.objects.get(key)
            if obj is None:
                return None
            if key in self._deleting:
                self._deleting[key] -= 1
                held = key[:2] == ("", "namespaces") and self._pods_left(key[3])
                if self._deleting[key] < 0 and not held:
                    del self.objects[key], self._deleting[key]
                    if key[:2] == ("", "namespaces"):  # its content went before it
                        for other in [k for k in self.objects if k[2] == key[3]]:
                            del self.objects[other]
                            self._deleting.pop(other, None)
                    return None
                return copy.deepcopy(obj)
            self._gets[key] = self._gets.get(key, 0) + 1
            if self._gets[key] > self.ready_after and key[3] not in self.never_ready:
                _fill_status(obj, self.egress_status.get(key[3]))
            elif obj.get("kind") in ("HTTPRoute", "TLSRoute"):
                _route_status(obj, accepted=False)
            return copy.deepcopy(obj)

    def apply(
        self,
        key: tuple[str, str, str, str],
        served: Served,
        body: dict[str, Any],
        dry_run: bool,
    ) -> tuple[int, dict[str, Any]]:
        with self._lock:
            old = self.objects.get(key)
            new = copy.deepcopy(body)
            new["apiVersion"], new["kind"] = served.api_version, served.kind
            if served.status_subresource:  # the main resource never writes status
                new.pop("status", None)
            meta = new.setdefault("metadata", {})
            if key[2]:
                meta["namespace"] = key[2]
            if old is None:
                meta.update(uid=f"uid-{len(self.objects)}", generation=1, resourceVersion="1")
            else:
                changed = old.get("spec") != new.get("spec")
                meta.update(
                    uid=old["metadata"]["uid"],
                    generation=old["metadata"]["generation"] + (1 if changed else 0),
                    resourceVersion=str(int(old["metadata"]["resourceVersion"]) + 1),
                )
                if "status" in old:
                    new["status"] = old["status"]
            if not dry_run:
                self.objects[key] = new
            return (201 if old is None else 200), copy.deepcopy(new)

    def merged(
        self, key: tuple[str, str, str, str], patch: dict[str, Any]
    ) -> dict[str, Any] | None:
        """What ``patch`` would make of the object (``None`` if there is none); stores nothing."""
        with self._lock:
            old = self.objects.get(key)
            return None if old is None else merge_patch(old, patch)

    def store_merged(
        self, key: tuple[str, str, str, str], served: Served, new: dict[str, Any]
    ) -> dict[str, Any]:
        with self._lock:
            old = self.objects[key]
            if served.status_subresource:
                new["status"] = copy.deepcopy(old.get("status"))
                if new["status"] is None:
                    del new["status"]
            if new.get("spec") != old.get("spec"):
                new["metadata"]["generation"] = old["metadata"]["generation"] + 1
            self.objects[key] = new
            return copy.deepcopy(new)

    def delete(self, key: tuple[str, str, str, str], *, grace: str | None) -> dict[str, Any] | None:
        with self._lock:
            obj = self.objects.get(key)
            if obj is None:
                return None
            self._mark_deleting(key, grace)
            if key[:2] == ("", "namespaces"):  # the namespace controller deletes its content
                for other in list(self.objects):
                    if other[2] == key[3] and other not in self._deleting:
                        self._mark_deleting(other, None)
            return copy.deepcopy(obj)

    def delete_pods(self, namespace: str, *, grace: str | None) -> list[dict[str, Any]]:
        """``deletecollection`` of the pods in ``namespace``."""
        with self._lock:
            keys = [k for k in self.objects if k[:3] == ("", "pods", namespace)]
            items = [copy.deepcopy(self.objects[k]) for k in keys]
            for key in keys:
                self._mark_deleting(key, grace)
            return items

    def _mark_deleting(self, key: tuple[str, str, str, str], grace: str | None) -> None:
        if key[1] == "pods" and grace == "0":
            # gracePeriodSeconds=0 removes the pod from the API at once (a force delete).
            del self.objects[key]
            self._deleting.pop(key, None)
            return
        self.objects[key]["metadata"]["deletionTimestamp"] = "2025-01-01T00:00:00Z"
        if key[1] == "pods" and self.pods_ignore_sigterm:
            self._deleting[key] = 10**9  # SIGTERM ignored: terminating for the whole grace
        else:
            self._deleting[key] = self.delete_lag

    def _pods_left(self, namespace: str) -> bool:
        return any(k[:3] == ("", "pods", namespace) for k in self.objects)


def _fill_status(obj: dict[str, Any], egress: tuple[str, str, str] | None = None) -> None:
    kind, gen = obj["kind"], obj["metadata"].get("generation", 1)
    if kind == "EgressNetwork":
        # Linkerd's status controller: no observedGeneration (docs/facts/linkerd-egress.md 4.6).
        status, reason, message = egress or ("True", "Accepted", "")
        cond = {"type": "Accepted", "status": status, "reason": reason, "message": message}
        obj["status"] = {"conditions": [cond]}
    elif kind in ("HTTPRoute", "GRPCRoute", "TLSRoute", "TCPRoute"):
        _route_status(obj, accepted=True)
    elif kind == "Pod":
        obj["status"] = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
    elif kind == "Deployment":
        replicas = obj.get("spec", {}).get("replicas", 1)
        obj["status"] = {
            "observedGeneration": gen,
            "replicas": replicas,
            "updatedReplicas": replicas,
            "availableReplicas": replicas,
            "conditions": [
                {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"}
            ],
        }


def _route_status(obj: dict[str, Any], *, accepted: bool) -> None:
    """The shape Linkerd's status controller writes (docs/facts/linkerd-egress.md 4.6)."""
    parents = []
    for ref in obj.get("spec", {}).get("parentRefs", []):
        if ref.get("kind") != "EgressNetwork":
            continue
        cond = (
            {"type": "Accepted", "status": "True", "reason": "Accepted", "message": ""}
            if accepted
            else {
                "type": "Accepted",
                "status": "False",
                "reason": "NoMatchingParent",
                "message": "EgressNetwork parent has not been accepted",
            }
        )
        parents.append(
            {
                "parentRef": {
                    "group": POLICY,
                    "kind": "EgressNetwork",
                    "namespace": ref.get("namespace") or obj["metadata"]["namespace"],
                    "name": ref["name"],
                    "port": ref.get("port"),
                },
                "controllerName": "linkerd.io/policy-controller",
                "conditions": [
                    cond,
                    {"type": "ResolvedRefs", "status": "True", "reason": "ResolvedRefs"},
                ],
            }
        )
    obj["status"] = {"parents": parents}


class _Handler(BaseHTTPRequestHandler):
    fake: FakeApiServer
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes: without this, Nagle + delayed ACK add 40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _send(
        self,
        code: int,
        body: Any,
        content_type: str = "application/json",
        warnings: list[str] | None = None,
    ) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        for warning in warnings or []:  # RFC 7234 warn-code 299, as the API server sends
            self.send_header("Warning", f'299 - "{warning}"')
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _not_found(self, what: str) -> None:
        self._send(404, status_body(404, "NotFound", what))

    def _record(self) -> tuple[list[str], dict[str, list[str]], Any]:
        split = urlsplit(self.path)
        query = parse_qs(split.query, keep_blank_values=True)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else None
        self.fake.requests.append(
            Recorded(
                method=self.command,
                path=unquote(split.path),
                query=query,
                content_type=self.headers.get("Content-Type"),
                authorization=self.headers.get("Authorization"),
                body=body,
            )
        )
        return [unquote(p) for p in split.path.strip("/").split("/")], query, body

    def _failure(self, path: str) -> bool:
        for (method, pattern), (code, reason, message) in self.fake.fail.items():
            if method == self.command and re.fullmatch(pattern, path):
                self._send(code, status_body(code, reason, message))
                return True
        return False

    def do_GET(self) -> None:
        if self.headers.get("Upgrade", "").lower() == "websocket":
            self._exec()
            return
        parts, _, _ = self._record()
        if self._failure("/" + "/".join(parts)):
            return
        disc = self.fake.discovery(parts)
        if disc is not None:
            self._send(*disc)
            return
        # Pod proxy: /api/v1/namespaces/NS/pods/POD:PORT/proxy/metrics
        if len(parts) >= 7 and parts[4] == "pods" and parts[6] == "proxy":
            pod, _, port = parts[5].partition(":")
            text = self.fake.metrics.get((parts[3], pod))
            if port != "4191" or text is None:
                self._send(
                    503,
                    status_body(
                        503,
                        "ServiceUnavailable",
                        "error trying to reach service: dial tcp 10.244.0.9:"
                        f"{port}: connect: connection refused",
                    ),
                )
            else:
                self._send(200, text.encode(), "text/plain; version=0.0.4")
            return
        found = self.fake.object_key(parts)
        if found is None:
            self._not_found("the server could not find the requested resource")
            return
        key, _ = found
        obj = self.fake.get(key)
        if obj is None:
            self._not_found(f'{key[1]} "{key[3]}" not found')
        else:
            self._send(200, obj)

    def do_PATCH(self) -> None:
        parts, query, body = self._record()
        if self._failure("/" + "/".join(parts)):
            return
        found = self.fake.object_key(parts)
        if found is None:
            self._not_found("the server could not find the requested resource")
            return
        key, served = found
        strict = query.get("fieldValidation") == ["Strict"]
        ctype = self.headers.get("Content-Type")
        if ctype == "application/apply-patch+yaml":
            new = copy.deepcopy(body)
            checked = self.fake.check(served, new, strict=strict)
            if isinstance(checked, tuple):
                self._send(*checked)
                return
            code, obj = self.fake.apply(key, served, new, dry_run=query.get("dryRun") == ["All"])
            self._send(code, obj, warnings=checked)
        elif ctype == "application/merge-patch+json":
            merged = self.fake.merged(key, body)
            if merged is None:
                self._not_found(f'{key[1]} "{key[3]}" not found')
                return
            checked = self.fake.check(served, merged, strict=strict)
            if isinstance(checked, tuple):
                self._send(*checked)
                return
            self._send(200, self.fake.store_merged(key, served, merged), warnings=checked)
        else:
            self._send(
                415,
                status_body(
                    415,
                    "UnsupportedMediaType",
                    "the body of the request was in an unknown format - accepted media types "
                    "include: application/json-patch+json, application/merge-patch+json, "
                    f"application/apply-patch+yaml; found {ctype}",
                ),
            )

    def do_DELETE(self) -> None:
        parts, query, _ = self._record()
        grace = (query.get("gracePeriodSeconds") or [None])[0]
        # deletecollection of pods: /api/v1/namespaces/NS/pods
        if parts[:3] == ["api", "v1", "namespaces"] and parts[4:] == ["pods"]:
            items = self.fake.delete_pods(parts[3], grace=grace)
            self._send(200, {"kind": "PodList", "apiVersion": "v1", "items": items})
            return
        found = self.fake.object_key(parts)
        obj = self.fake.delete(found[0], grace=grace) if found else None
        if obj is None:
            self._not_found(f'{found[0][1] if found else "resource"} "{parts[-1]}" not found')
        else:
            self._send(200, obj)

    # -- exec over websocket --------------------------------------------------------------

    def _exec(self) -> None:
        split = urlsplit(self.path)
        query = parse_qs(split.query)
        self.fake.exec_calls.append({"path": [split.path], **query})
        parts = split.path.strip("/").split("/")
        key = ("", "pods", parts[3], parts[5])
        if key not in self.fake.objects:
            self._send(404, status_body(404, "NotFound", f'pods "{parts[5]}" not found'))
            return
        accept = base64.b64encode(
            hashlib.sha1((self.headers["Sec-WebSocket-Key"] + _WS_GUID).encode()).digest()
        ).decode()
        self.send_response(101, "Switching Protocols")
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.send_header("Sec-WebSocket-Protocol", "v4.channel.k8s.io")
        self.end_headers()
        if self.fake.exec_drop:
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        result = self.fake.exec_handler(query.get("command", []))
        if result.failure is not None:
            status = {
                "metadata": {},
                "status": "Failure",
                "message": result.failure,
                "reason": "InternalError",
            }
        elif result.exit_code == 0:
            status = {"metadata": {}, "status": "Success"}
        else:
            status = {
                "metadata": {},
                "status": "Failure",
                "message": "command terminated with non-zero exit code: exit status "
                f"{result.exit_code}",
                "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": str(result.exit_code)}]},
            }
        for channel, data in _frames(result, status):
            self.wfile.write(_ws_frame(0x2, bytes([channel]) + data))
        self.wfile.write(_ws_frame(0x8, (1000).to_bytes(2, "big")))
        self.wfile.flush()
        # Wait for the client's close frame (or EOF), bounded, then hang up.
        self.connection.settimeout(5)
        with contextlib.suppress(TimeoutError, OSError):
            self.connection.recv(64)
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)


def _frames(result: ExecResult, status: dict[str, Any]) -> Iterator[tuple[int, bytes]]:
    if result.stdout:
        yield 1, result.stdout.encode()
    if result.stderr:
        yield 2, result.stderr.encode()
    yield 3, json.dumps(status).encode()


def _ws_frame(opcode: int, payload: bytes) -> bytes:
    head = bytes([0x80 | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([n])
    elif n < 65536:
        head += bytes([126]) + n.to_bytes(2, "big")
    else:
        head += bytes([127]) + n.to_bytes(8, "big")
    return head + payload
