"""The simulated internet: what answers when allowed egress traffic leaves the local mesh.

Job: stand in for every host outside the cluster, on loopback, with no internet. Two real
servers on ``127.0.0.1`` (port 0, the ports got are reported): one plaintext HTTP/1.1 and one
HTTPS (certificates from :class:`~egresskit.mesh.tlsca.LocalCA` for whatever SNI the client
sends). Both dispatch by ``Host`` header:

- ``httpbin.org`` is the real httpbin WSGI app (PyPI ``httpbin``), so ``/get``, ``/ip``,
  ``/status/418``, ``/headers``, ``/anything`` answer as httpbin does (the ``origin`` it
  reports is the client's loopback address);
- every other host gets the echo site: JSON with host, method, path, query, headers and a
  line saying this is egresskit's simulated internet.

:meth:`SimulatedInternet.upstream_for` tells the egress proxy where to connect for an
original destination; its rule is in its docstring.

The servers are Tornado's HTTP/1.1 server (keep-alive, non-blocking TLS handshakes, so a
stuck client cannot block accepts) running WSGI apps on a thread pool. Werkzeug's dev server
was not used: it sends ``Connection: close`` on every response, so no keep-alive. Each
:class:`LoopbackHTTPServer` owns one event-loop thread and one worker pool; ``close()`` stops
listening, closes every connection, and joins every thread it started, with a bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import shutil
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from tornado.httpserver import HTTPServer
from tornado.httputil import HTTPServerRequest
from tornado.netutil import bind_sockets
from tornado.wsgi import WSGIContainer

from egresskit.errors import BackendError, WaitTimeout
from egresskit.mesh.extrasites import ExtraSites
from egresskit.mesh.tlsca import LocalCA
from egresskit.mesh.wsgi_http import BAD_HOST, correct_http, host_is_valid, read_body

__all__ = ["ECHO_BANNER", "LoopbackHTTPServer", "SimulatedInternet"]

log = logging.getLogger(__name__)

# httpbin warns at import that flasgger (its Swagger UI) is missing; the kit never serves it.
logging.getLogger("httpbin.core").setLevel(logging.ERROR)
import httpbin  # noqa: E402

LOOPBACK = "127.0.0.1"
ECHO_BANNER = (
    "egresskit simulated internet: this echo site answers for every host but httpbin.org; "
    "nothing left this machine"
)


def httpbin_site(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    """httpbin as httpbin.org serves it: under gunicorn (httpbin's Dockerfile).

    httpbin accepts a chunked request body only when ``SERVER_SOFTWARE`` starts with
    ``gunicorn/`` (``before_request`` in httpbin/core.py; else 501 "Chunked requests are not
    supported for server"), because gunicorn terminates the input. Our container does too
    (``wsgi.input_terminated``), so it says so in the words httpbin checks.
    """
    environ["SERVER_SOFTWARE"] = "gunicorn/egresskit"
    result: Iterable[bytes] = httpbin.app(environ, start_response)
    return result


#: The hosts with a real site; every other host gets the echo site.
SITES: Mapping[str, WSGIApplication] = {"httpbin.org": httpbin_site}
_TLS_PORT = 443


# ------------------------------------------------------------------------ the sites


def echo_app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    """The echo site: says what it received, as JSON."""
    body = read_body(environ)
    headers = {
        key[5:].replace("_", "-").title(): value
        for key, value in environ.items()
        if key.startswith("HTTP_")
    }
    for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        if environ.get(key):
            headers[key.replace("_", "-").title()] = environ[key]
    answer = {
        "simulated_internet": ECHO_BANNER,
        "scheme": environ["wsgi.url_scheme"],
        "host": _host_only(environ.get("HTTP_HOST", "")),
        "method": environ["REQUEST_METHOD"],
        "path": environ.get("PATH_INFO", "/"),
        "query": environ.get("QUERY_STRING", ""),
        "headers": headers,
        "body": body.decode("utf-8", "replace"),
    }
    data = (json.dumps(answer, indent=2, sort_keys=False) + "\n").encode()
    start_response(
        "200 OK",
        [("Content-Type", "application/json"), ("Content-Length", str(len(data)))],
    )
    return [data]


def site_app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    """Dispatch by ``Host``: the real site if there is one, else the echo site."""
    app = SITES.get(_host_only(environ.get("HTTP_HOST", "")), echo_app)
    return app(environ, start_response)


def _host_only(host_header: str) -> str:
    """``Host`` header without port, lower case, no trailing dot (RFC 9110 7.2, RFC 4343)."""
    host = host_header.strip()
    if host.startswith("["):  # an IPv6 literal: [::1]:8080
        host = host[1 : host.find("]")] if "]" in host else host[1:]
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    return host.rstrip(".").lower()


# ------------------------------------------------------------------- the server


class _QuietWSGIContainer(WSGIContainer):
    # Tornado logs every request on ``tornado.access`` (4xx as warnings, on stderr when
    # logging is not configured); the simulated internet logs at debug on its own logger.
    def _log(self, status_code: int, request: HTTPServerRequest) -> None:
        log.debug("%s %s %s -> %d", request.method, request.host, request.uri, status_code)

    def environ(self, request: HTTPServerRequest) -> dict[str, Any]:
        # Tornado has read the whole body (a chunked one decoded) before the app runs, so the
        # input is terminated (PEP 3333; httpbin answers 501 to a chunked body without it).
        # A Host port that is not a port would crash Tornado's environ: marked, answered 400
        # by correct_http (egresskit.mesh.wsgi_http).
        host = request.host
        valid = host_is_valid(host)
        if not valid:
            request.host = host.partition(":")[0]
        elif host.endswith(":"):  # an empty port is allowed (RFC 3986) but crashes Tornado
            request.host = host[:-1]
        environ = super().environ(request)
        environ["wsgi.input_terminated"] = True
        if not valid:
            environ[BAD_HOST] = host
        return environ


class LoopbackHTTPServer:
    """A WSGI app served over HTTP/1.1 (keep-alive), optionally TLS, on ``127.0.0.1:0``."""

    def __init__(
        self,
        app: WSGIApplication,
        *,
        name: str,
        ssl_context: ssl.SSLContext | None = None,
        workers: int = 16,
        timeout: float = 10.0,
    ) -> None:
        self.name = name
        self._app = app
        self._ssl_context = ssl_context
        self._workers = workers
        self._timeout = timeout
        self._sockets: list[socket.socket] = []
        self._executor: ThreadPoolExecutor | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._address: tuple[str, int] | None = None

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` the server listens on."""
        if self._address is None:
            raise BackendError(f"{self.name}: not started; call start() first")
        return self._address

    def start(self) -> LoopbackHTTPServer:
        if self._thread is not None:
            raise BackendError(f"{self.name}: already started")
        try:
            self._sockets = bind_sockets(0, LOOPBACK, family=socket.AF_INET)
        except OSError as exc:
            raise BackendError(f"{self.name}: cannot listen on {LOOPBACK}:0: {exc}") from exc
        host, port = self._sockets[0].getsockname()[:2]
        self._address = (host, port)
        self._executor = ThreadPoolExecutor(self._workers, thread_name_prefix=f"{self.name}-app")
        self._thread = threading.Thread(target=self._run, name=f"{self.name}-loop", daemon=True)
        self._thread.start()
        if not self._ready.wait(self._timeout):
            self.close()
            raise WaitTimeout(f"{self.name} event loop to start", self._timeout, "not ready")
        if self._failure is not None:
            failure = self._failure
            self.close()
            raise BackendError(f"{self.name}: server failed to start: {failure}") from failure
        return self

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported by start(); a thread must not die loudly
            self._failure = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        assert self._executor is not None
        server = HTTPServer(
            _QuietWSGIContainer(correct_http(self._app), executor=self._executor),
            ssl_options=self._ssl_context,
            idle_connection_timeout=60,
        )
        server.add_sockets(self._sockets)  # the server owns (and closes) them from here
        self._sockets = []
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            server.stop()
            await server.close_all_connections()

    def close(self) -> None:
        """Stop listening, close every connection, join every thread; idempotent."""
        deadline = time.monotonic() + self._timeout
        thread, self._thread = self._thread, None
        if thread is not None:
            if self._loop is not None and self._stop is not None:
                # RuntimeError: the loop already ended (it failed at start).
                with contextlib.suppress(RuntimeError):
                    self._loop.call_soon_threadsafe(self._stop.set)
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                raise WaitTimeout(f"{self.name} event loop to stop", self._timeout, "running")
        for sock in self._sockets:
            sock.close()
        self._sockets = []
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
            # shutdown(wait=True) has no bound; join the workers ourselves (an app may
            # be mid-request, e.g. httpbin's /delay/10).
            for worker in list(executor._threads):
                worker.join(max(0.0, deadline - time.monotonic()))
                if worker.is_alive():
                    raise WaitTimeout(f"{self.name} app workers to finish", self._timeout, "busy")
        self._loop = None
        self._stop = None

    def __enter__(self) -> LoopbackHTTPServer:
        return self if self._thread is not None else self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


# --------------------------------------------------------------- the internet


class SimulatedInternet:
    """Every host outside the cluster, on loopback: httpbin.org for real, an echo elsewhere.

    ``upstreams`` maps a hostname (or IP), optionally with ``:port``, to a real local
    server ``"host:port"`` that answers for it instead, e.g.
    ``SimulatedInternet(upstreams={"api.example.com": "127.0.0.1:9000"})``.
    """

    def __init__(self, *, upstreams: Mapping[str, str] | None = None) -> None:
        self._upstreams: dict[str, tuple[str, int]] = {}
        for key, value in (upstreams or {}).items():
            target = _parse_hostport(key, value)  # validates the key too
            self._upstreams[_override_key(key)] = target
        self.ca = LocalCA()
        self._tmpdir: Path | None = None
        self._ca_file: Path | None = None
        self._http = LoopbackHTTPServer(site_app, name="internet-http")
        self._https: LoopbackHTTPServer | None = None
        self.extra = ExtraSites()  # gRPC and TCP sites, by port (egresskit.mesh.extrasites)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> SimulatedInternet:
        if self._tmpdir is not None:
            raise BackendError("SimulatedInternet: already started")
        self._tmpdir = Path(tempfile.mkdtemp(prefix="egresskit-internet-"))
        try:
            self._ca_file = self.ca.ca_pem_path(self._tmpdir)
            self._https = LoopbackHTTPServer(
                site_app, name="internet-https", ssl_context=self.ca.server_context()
            )
            self._http.start()
            self._https.start()
            self.extra.start()
        except BaseException:
            self.close()
            raise
        log.debug("simulated internet: http %s, https %s", self.http_address, self.https_address)
        return self

    def close(self) -> None:
        """Shut both servers down (joining their threads) and remove the CA file; idempotent."""
        try:
            self.extra.close()
            self._http.close()
            if self._https is not None:
                self._https.close()
        finally:
            if self._tmpdir is not None:
                shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None
            self._ca_file = None

    def __enter__(self) -> SimulatedInternet:
        return self if self._tmpdir is not None else self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ facts

    @property
    def http_address(self) -> tuple[str, int]:
        """Where the plaintext server listens (it serves every host, any original port)."""
        return self._http.address

    @property
    def https_address(self) -> tuple[str, int]:
        """Where the TLS server listens (a valid certificate for any SNI)."""
        if self._https is None:
            raise BackendError("SimulatedInternet: not started; call start() first")
        return self._https.address

    @property
    def ca_file(self) -> Path:
        """PEM file of the CA that signs every certificate here (``curl --cacert``)."""
        if self._ca_file is None:
            raise BackendError("SimulatedInternet: not started; call start() first")
        return self._ca_file

    def upstream_for(
        self, host: str | None, ip: str, port: int, *, tls: bool | None = None
    ) -> tuple[str, int]:
        """Where the egress proxy should connect for the original destination ``ip:port``.

        ``host`` is the name the proxy learnt (SNI or ``Host``), if any. The rule, first
        match wins:

        1. a user override for ``host:port``, then ``host``, then ``ip:port``, then ``ip``;
        2. the gRPC or TCP site for their ports (:mod:`egresskit.mesh.extrasites`);
        3. the HTTPS server when the stream is TLS: ``tls=True``, or ``tls=None`` (the
           caller did not sniff) and ``port == 443``;
        4. otherwise the plaintext HTTP server, which serves any original port.
        """
        for key in _lookup_keys(host, ip, port):
            if key in self._upstreams:
                return self._upstreams[key]
        is_tls = port == _TLS_PORT if tls is None else tls
        site = self.extra.upstream_for(port, tls=is_tls)
        if site is not None:
            return site
        return self.https_address if is_tls else self.http_address


@functools.lru_cache(maxsize=1024)
def _lookup_keys(host: str | None, ip: str, port: int) -> tuple[str, ...]:
    """The override keys for a destination, most specific first. Memoised (bounded): a
    pure function of its arguments, asked once per proxied request with the few
    destinations a pod talks to (a ValueError is not cached: it is raised again)."""
    keys: list[str] = []
    for name in (host, ip):
        if name:
            norm = _override_key(name)
            keys += [f"{norm}:{port}", norm]
    return tuple(keys)


def _override_key(key: str) -> str:
    name, port = _split_hostport(key)
    norm = name.rstrip(".").lower()
    return norm if port is None else f"{norm}:{port}"


def _split_hostport(text: str) -> tuple[str, int | None]:
    text = text.strip()
    if text.startswith("["):
        name, _, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else None
    elif text.count(":") == 1:
        name, _, port_text = text.partition(":")
    else:
        name, port_text = text, None  # a bare name, or a bare IPv6 address
    if port_text is None:
        return name, None
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"expected a port 1-65535, found {port_text!r}")
    return name, int(port_text)


def _parse_hostport(key: str, value: object) -> tuple[str, int]:
    where = f"SimulatedInternet(upstreams=...): {key!r}"
    try:
        _override_key(key)
    except ValueError as exc:
        raise BackendError(f"{where}: key: {exc}") from exc
    if isinstance(value, str):
        try:
            host, port = _split_hostport(value)
        except ValueError:
            host, port = "", None
        if host and port is not None:
            return host, port
    raise BackendError(f"{where}: expected 'host:port' with a port 1-65535, found {value!r}")
