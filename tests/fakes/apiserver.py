"""A fake Kubernetes API server: real HTTP on 127.0.0.1:0, enough REST for the kube backend.

It speaks discovery (``/api``, ``/api/v1``, ``/apis``, ``/apis/<g>``, ``/apis/<g>/<v>``),
server-side apply and merge patch on object URLs, GET, DELETE, ``Status`` error bodies in the
real shape, the pod proxy URL for the proxy's ``/metrics``, and pod ``exec`` over a websocket
(``v4.channel.k8s.io``: one byte of channel, then data). Every request is recorded.

Status is filled in on GET the way the controllers would write it (EgressNetwork Accepted,
route parents Accepted, Pod Ready, Deployment available), optionally only after ``ready_after``
GETs of that object, or never for objects named in ``never_ready``.
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

GATEWAY = "gateway.networking.k8s.io"
POLICY = "policy.linkerd.io"

# (group, version) -> [(plural, kind, namespaced)]
_CORE = [("namespaces", "Namespace", False), ("pods", "Pod", True), ("services", "Service", True)]
_CORE_SUB = ["pods/exec", "pods/proxy", "pods/status"]
_ROUTES = [("httproutes", "HTTPRoute", True), ("grpcroutes", "GRPCRoute", True)]
_L4 = [("tlsroutes", "TLSRoute", True), ("tcproutes", "TCPRoute", True)]
GROUPS: dict[tuple[str, str], list[tuple[str, str, bool]]] = {
    ("apps", "v1"): [("deployments", "Deployment", True)],
    (POLICY, "v1alpha1"): [("egressnetworks", "EgressNetwork", True)],
    (POLICY, "v1beta3"): [("httproutes", "HTTPRoute", True)],
    (GATEWAY, "v1"): _ROUTES,
    (GATEWAY, "v1beta1"): [("httproutes", "HTTPRoute", True)],
    (GATEWAY, "v1alpha2"): _ROUTES + _L4,
}
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

    def served(self, group: str, version: str) -> list[tuple[str, str, bool]] | None:
        if group == "":
            return _CORE if version == "v1" else None
        if group == POLICY and not self.crds:
            return None
        if group == GATEWAY and not self.gateway_api:
            return None
        return GROUPS.get((group, version))

    def discovery(self, parts: list[str]) -> tuple[int, Any] | None:
        if parts == ["api"]:
            return 200, {"kind": "APIVersions", "versions": ["v1"]}
        if parts == ["apis"]:
            names = sorted({g for g, v in GROUPS if self.served(g, v)})
            return 200, {"kind": "APIGroupList", "groups": [self._group(g) for g in names]}
        if len(parts) == 2 and parts[0] == "apis":
            if not any(g == parts[1] and self.served(g, v) for g, v in GROUPS):
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
        resources = [
            {
                "name": p,
                "singularName": k.lower(),
                "namespaced": ns,
                "kind": k,
                "verbs": ["get", "patch", "delete"],
            }
            for p, k, ns in kinds
        ]
        if group == "":
            resources += [
                {"name": s, "namespaced": True, "kind": "Pod", "verbs": ["get"]} for s in _CORE_SUB
            ]
        gv = f"{group}/{version}" if group else version
        return 200, {"kind": "APIResourceList", "groupVersion": gv, "resources": resources}

    def _group(self, name: str) -> dict[str, Any]:
        vs = [v for g, v in GROUPS if g == name and self.served(g, v)]
        preferred = "v1beta3" if name == POLICY else vs[0]
        entries = [{"groupVersion": f"{name}/{v}", "version": v} for v in vs]
        return {
            "name": name,
            "versions": entries,
            "preferredVersion": {"groupVersion": f"{name}/{preferred}", "version": preferred},
        }

    def object_key(self, parts: list[str]) -> tuple[tuple[str, str, str, str], str, str] | None:
        """(group, plural, namespace, name), kind, apiVersion for an object URL."""
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
        kinds = self.served(group, version) or []
        kind = next((k for p, k, _ in kinds if p == plural), None)
        if kind is None:
            return None
        return (group, plural, ns, name), kind, f"{group}/{version}" if group else version

    def get(self, key: tuple[str, str, str, str]) -> dict[str, Any] | None:
        with self._lock:
            obj = self.objects.get(key)
            if obj is None:
                return None
            if key in self._deleting:
                self._deleting[key] -= 1
                if self._deleting[key] < 0:
                    del self.objects[key], self._deleting[key]
                    return None
                return copy.deepcopy(obj)
            self._gets[key] = self._gets.get(key, 0) + 1
            if self._gets[key] > self.ready_after and key[3] not in self.never_ready:
                _fill_status(obj)
            elif obj.get("kind") in ("HTTPRoute", "TLSRoute"):
                _route_status(obj, accepted=False)
            return copy.deepcopy(obj)

    def apply(
        self,
        key: tuple[str, str, str, str],
        kind: str,
        api_version: str,
        body: dict[str, Any],
        dry_run: bool,
    ) -> tuple[int, dict[str, Any]]:
        with self._lock:
            old = self.objects.get(key)
            new = copy.deepcopy(body)
            new["apiVersion"], new["kind"] = api_version, kind
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

    def merge(self, key: tuple[str, str, str, str], patch: dict[str, Any]) -> dict[str, Any] | None:
        with self._lock:
            old = self.objects.get(key)
            if old is None:
                return None
            new = merge_patch(old, patch)
            if new.get("spec") != old.get("spec"):
                new["metadata"]["generation"] = old["metadata"]["generation"] + 1
            self.objects[key] = new
            return copy.deepcopy(new)

    def delete(self, key: tuple[str, str, str, str]) -> dict[str, Any] | None:
        with self._lock:
            obj = self.objects.get(key)
            if obj is None:
                return None
            obj["metadata"]["deletionTimestamp"] = "2025-01-01T00:00:00Z"
            self._deleting[key] = self.delete_lag
            return copy.deepcopy(obj)


def _fill_status(obj: dict[str, Any]) -> None:
    kind, gen = obj["kind"], obj["metadata"].get("generation", 1)
    if kind == "EgressNetwork":
        cond = {"type": "Accepted", "status": "True", "reason": "Accepted", "message": ""}
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

    def _send(self, code: int, body: Any, content_type: str = "application/json") -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
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
        key, _, _ = found
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
        key, kind, api_version = found
        ctype = self.headers.get("Content-Type")
        if ctype == "application/apply-patch+yaml":
            code, obj = self.fake.apply(
                key, kind, api_version, body, dry_run=query.get("dryRun") == ["All"]
            )
            self._send(code, obj)
        elif ctype == "application/merge-patch+json":
            merged = self.fake.merge(key, body)
            if merged is None:
                self._not_found(f'{key[1]} "{key[3]}" not found')
            else:
                self._send(200, merged)
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
        parts, _, _ = self._record()
        found = self.fake.object_key(parts)
        obj = self.fake.delete(found[0]) if found else None
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
