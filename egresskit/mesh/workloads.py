"""In-cluster workloads of the local backend: a Deployment's container as a loopback server.

Job: the guide's internal service runs ``buoyantio/bb`` in ``terminus`` mode; the local
backend has no container runtime, so :func:`start_workload` reads the container's
command and args and serves, on ``127.0.0.1:0``, what that bb would answer on HTTP/1.

Rules, from bb's source (github.com/BuoyantIO/bb, the v0.0.5 line the guide pins):

- argv is Kubernetes': ``command`` replaces the image ENTRYPOINT (``/out/bb`` for bb),
  ``args`` follow; ``sh -c "<script>"`` is split the way a shell would (``shlex``), and a
  script with shell operators (``;``, ``&&``, ``|``, ...) is refused: it cannot be emulated.
- flags are cobra's: ``--flag value`` or ``--flag=value``; a bare boolean flag is true.
- every request gets status 200 and ``{"requestUID":"in:http-sid:<id>-<n>","payload":...}``
  where ``<id>`` is ``--id`` or ``terminus-grpc:<grpc port>-h1:<h1 port>`` (cmd/root.go) and
  ``<n>`` is the nanosecond field of the clock (protocols/http.go ``newRequestUID``). The
  ports are the container's (``--h1-server-port``), not the loopback port.
- the body is Go's ``jsonpb`` output (compact, empty fields left out) written with
  ``fmt.Fprint`` and no Content-Type, so Go's content sniffing labels it
  ``text/plain; charset=utf-8``; we send the same label.
- a request with a body is read as a JSON ``TheRequest``: its ``requestUID`` is echoed back;
  a body that is not one is answered 500, as bb does.
- ``--grpc-server-port`` serves ``buoyantio.bb.TheService/theFunction`` over gRPC
  (:func:`~egresskit.mesh.grpcsite.bb_site`; ``--sleep-in-millis`` and
  ``--percent-failure`` are not applied there);
- ``--sleep-in-millis`` and ``--percent-failure`` behave as in bb (service/service.go);
  ``--fire-and-forget``, ``--log-level`` and ``--downstream-timeout`` change nothing for a
  terminus. Anything else the local backend cannot honour raises
  :class:`~egresskit.errors.UnsupportedWorkload` naming the container, what it found and what
  the local backend can run.
"""

from __future__ import annotations

import json
import random
import shlex
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import PurePosixPath
from types import TracebackType
from wsgiref.types import StartResponse, WSGIEnvironment

from egresskit.errors import UnsupportedWorkload
from egresskit.manifests.model import Container
from egresskit.mesh.grpcsite import GrpcServer, bb_site
from egresskit.mesh.internet import LoopbackHTTPServer
from egresskit.mesh.wsgi_http import read_body

__all__ = ["BB_IMAGE", "RunningWorkload", "TerminusConfig", "parse_terminus", "start_workload"]

BB_IMAGE = "buoyantio/bb"
#: What the local backend can run, for error messages.
CAN_RUN = f"the local backend runs only {BB_IMAGE} in 'terminus' mode with an HTTP/1 or gRPC port"
BB_ENTRYPOINT = ("/out/bb",)  # bb's Dockerfile: ENTRYPOINT ["/out/bb"]
#: Go's http.DetectContentType for a body starting with "{" (no Content-Type was set).
CONTENT_TYPE = "text/plain; charset=utf-8"

_SHELLS = {"sh", "bash", "ash", "dash"}
_SHELL_OPERATORS = {";", "&&", "||", "|", "&", ">", ">>", "<", "(", ")"}
_INT_FLAGS = {
    "h1-server-port",
    "grpc-server-port",
    "percent-failure",
    "sleep-in-millis",
    "terminate-after",
}
_IGNORED_FLAGS = {"fire-and-forget", "log-level", "downstream-timeout"}
_BOOL_FLAGS = {"fire-and-forget"}
_VALUE_FLAGS = {
    "id",
    "grpc-server-port",
    "h1-server-port",
    "percent-failure",
    "sleep-in-millis",
    "terminate-after",
    "grpc-downstream-server",
    "h1-downstream-server",
    "grpc-proxy",
    "response-text",
    "log-level",
    "downstream-timeout",
}


@dataclass(frozen=True, kw_only=True)
class TerminusConfig:
    """What a ``bb terminus`` command line asks for."""

    h1_server_port: int
    grpc_server_port: int = -1
    response_text: str = ""
    id: str = ""
    sleep_in_millis: int = 0
    percent_failure: int = 0

    @property
    def service_id(self) -> str:
        # cmd/root.go: ID defaults to "<command>-grpc:<grpc port>-h1:<h1 port>".
        return self.id or f"terminus-grpc:{self.grpc_server_port}-h1:{self.h1_server_port}"


def parse_terminus(container: Container) -> TerminusConfig:
    """Read a container spec as a ``bb terminus`` invocation, or raise UnsupportedWorkload."""

    def refuse(found: str) -> UnsupportedWorkload:
        return UnsupportedWorkload(
            f"container {container.name!r} (image {container.image!r}): {found}; {CAN_RUN}"
        )

    if _image_name(container.image) != BB_IMAGE:
        raise refuse("this image is not emulated")
    argv = list(container.command or BB_ENTRYPOINT) + list(container.args)
    if len(argv) >= 3 and PurePosixPath(argv[0]).name in _SHELLS and argv[1] == "-c":
        script = argv[2]
        try:
            argv = shlex.split(script)
        except ValueError as exc:
            raise refuse(f"cannot split the shell script {script!r}: {exc}") from exc
        if argv[:1] == ["exec"]:
            argv = argv[1:]
        operators = _SHELL_OPERATORS.intersection(argv)
        if operators:
            raise refuse(f"shell operators {sorted(operators)} in {script!r}")
    if not argv or PurePosixPath(argv[0]).name != "bb":
        raise refuse(f"command {shlex.join(argv)!r} does not run bb")
    flags, positional = _parse_flags(argv[1:], refuse)
    mode = positional[0] if positional else "(none)"
    if mode != "terminus":
        raise refuse(f"bb mode {mode!r}")
    for name in ("grpc-downstream-server", "h1-downstream-server", "grpc-proxy"):
        if name in flags:
            raise refuse(f"--{name}: a terminus takes no downstream services")
    if int(flags.get("terminate-after", "0")) != 0:
        raise refuse("--terminate-after")
    config = TerminusConfig(
        h1_server_port=int(flags.get("h1-server-port", "-1")),
        grpc_server_port=int(flags.get("grpc-server-port", "-1")),
        response_text=flags.get("response-text", ""),
        id=flags.get("id", ""),
        sleep_in_millis=int(flags.get("sleep-in-millis", "0")),
        percent_failure=int(flags.get("percent-failure", "0")),
    )
    if config.h1_server_port == -1 and config.grpc_server_port == -1:
        raise refuse("no --h1-server-port or --grpc-server-port")
    return config


def _image_name(image: str) -> str:
    """``docker.io/buoyantio/bb:v0.0.5@sha256:..`` -> ``buoyantio/bb``."""
    name = image.partition("@")[0]
    head, _, tail = name.rpartition(":")
    if head and "/" not in tail:  # a tag, not a registry port
        name = head
    for registry in ("docker.io/", "index.docker.io/", "registry-1.docker.io/"):
        name = name.removeprefix(registry)
    return name.lower()


def _parse_flags(
    args: list[str], refuse: Callable[[str], UnsupportedWorkload]
) -> tuple[dict[str, str], list[str]]:
    """cobra/pflag's long flags: ``--name value``, ``--name=value``, bare booleans."""
    flags: dict[str, str] = {}
    positional: list[str] = []
    it = iter(args)
    for arg in it:
        if not arg.startswith("--") or arg == "--":
            positional.append(arg)
            continue
        name, eq, value = arg[2:].partition("=")
        if name in _BOOL_FLAGS:
            value = value if eq else "true"
        elif name in _VALUE_FLAGS:
            if not eq:
                value = next(it, None) or ""
                if not value:
                    raise refuse(f"flag --{name} needs a value")
        else:
            raise refuse(f"unknown bb flag --{name}")
        if name in _INT_FLAGS:
            try:
                int(value)
            except ValueError:
                raise refuse(f"--{name} {value!r} is not an integer") from None
        if name not in _IGNORED_FLAGS:
            flags[name] = value
    return flags, positional


# ----------------------------------------------------------------------- serving


_GO_ESCAPES = (
    ("<", "\\u003c"),
    (">", "\\u003e"),
    ("&", "\\u0026"),
    ("\u2028", "\\u2028"),
    ("\u2029", "\\u2029"),
)


def _go_json(obj: dict[str, str]) -> bytes:
    # Go's encoding/json (used by jsonpb for strings) escapes <, >, & and U+2028/9.
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    for char, escaped in _GO_ESCAPES:
        text = text.replace(char, escaped)
    return text.encode()


class _TerminusApp:
    """bb's HTTP handler with the terminus strategy, as a WSGI app."""

    def __init__(self, config: TerminusConfig) -> None:
        self.config = config
        self._random = random.Random()

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        body = read_body(environ)  # Go's net/http reads a chunked body too
        if body:
            uid = _request_uid_from(body)
            if uid is None:  # protocols/http.go: the error's text is the body itself
                return _error(start_response, f"error unmarshalling the request: {body.decode()}")
        else:
            uid = f"in:http-sid:{self.config.service_id}-{time.time_ns() % 1_000_000_000}"
        # service/service.go Handle: sleep, then maybe fail, then run the strategy.
        if self.config.sleep_in_millis > 0:
            time.sleep(self.config.sleep_in_millis / 1000)
        if self._random.randrange(100) < self.config.percent_failure:
            return _error(
                start_response,
                "error handling http request: "
                f"this error was injected by [{self.config.service_id}]",
            )
        payload = self.config.response_text or f"terminus at [{time.time_ns() % 1_000_000_000}]"
        answer = {k: v for k, v in (("requestUID", uid), ("payload", payload)) if v}
        data = _go_json(answer)
        start_response(
            "200 OK", [("Content-Type", CONTENT_TYPE), ("Content-Length", str(len(data)))]
        )
        return [data]


def _request_uid_from(body: bytes) -> str | None:
    """The ``requestUID`` of a JSON ``TheRequest``; None when jsonpb would refuse it."""
    try:
        obj = json.loads(body)
    except ValueError:
        return None
    if not isinstance(obj, dict) or set(obj) - {"requestUID"}:
        return None
    uid = obj.get("requestUID", "")
    return uid if isinstance(uid, str) else None


def _error(start_response: StartResponse, message: str) -> Iterable[bytes]:
    # Go's http.Error: text/plain, nosniff, message plus a newline.
    data = (message + "\n").encode()
    start_response(
        "500 Internal Server Error",
        [
            ("Content-Type", CONTENT_TYPE),
            ("X-Content-Type-Options", "nosniff"),
            ("Content-Length", str(len(data))),
        ],
    )
    return [data]


class RunningWorkload:
    """A container running as a loopback server; close() stops it and joins its threads."""

    def __init__(self, container: Container, config: TerminusConfig) -> None:
        self.container = container
        self.config = config
        self._server: LoopbackHTTPServer | None = None
        if config.h1_server_port != -1:
            self._server = LoopbackHTTPServer(
                _TerminusApp(config), name=f"workload-{container.name}"
            )
        self._grpc: GrpcServer | None = None
        self._lock = threading.Lock()

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` on loopback where the container's main port is served (the
        HTTP/1 port, else the gRPC port)."""
        found = self.address_for(self.container_port)
        if found is None:
            raise UnsupportedWorkload(f"container {self.container.name!r}: not started")
        return found

    @property
    def container_port(self) -> int:
        """The port the container listens on in the cluster (``--h1-server-port``, else
        ``--grpc-server-port``)."""
        if self.config.h1_server_port != -1:
            return self.config.h1_server_port
        return self.config.grpc_server_port

    def address_for(self, port: int) -> tuple[str, int] | None:
        """Where the container's ``port`` is served on loopback, or None (not one of its)."""
        if port == self.config.h1_server_port and self._server is not None:
            return self._server.address
        if port == self.config.grpc_server_port and self._grpc is not None:
            return self._grpc.address
        return None

    def serves(self, target_port: int | str) -> tuple[str, int] | None:
        """Where a Service's ``targetPort`` (number or container port name) lands."""
        if isinstance(target_port, str):
            named = next((p for p in self.container.ports if p.name == target_port), None)
            if named is None:
                return None
            target_port = named.container_port
        return self.address_for(target_port)

    def start(self) -> RunningWorkload:
        if self._server is not None:
            self._server.start()
        if self.config.grpc_server_port != -1:
            self._grpc = bb_site(
                service_id=self.config.service_id, response_text=self.config.response_text
            )
        return self

    def close(self) -> None:
        with self._lock:
            if self._server is not None:
                self._server.close()
            grpc_server, self._grpc = self._grpc, None
            if grpc_server is not None:
                grpc_server.close()

    def __enter__(self) -> RunningWorkload:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def start_workload(container: Container) -> RunningWorkload:
    """Run ``container`` locally; raises UnsupportedWorkload for what cannot be emulated."""
    return RunningWorkload(container, parse_terminus(container)).start()
