"""What makes a WSGI app, served by Tornado's WSGIContainer, a correct HTTP/1.1 origin server.

Job: the servers behind the egress proxy (the simulated internet's sites, the emulated
workloads) are plain WSGI apps; this module adds, once for all of them, the parts of HTTP
that the app or the container gets wrong:

- **HEAD has no body** (RFC 9110 9.3.2: "The server SHOULD send the same header fields in
  response to a HEAD request as it would have sent if the request method had been GET",
  without content). Tornado refuses to write a body after a HEAD ("Tried to write more data
  than Content-Length"), closing the connection without a response; :func:`head_without_body`
  runs the app, drops its body and keeps the ``Content-Length`` a GET would have had.
- **A chunked request body is a body** (RFC 9112 7.1). Tornado decodes it completely before
  the app runs, so the input is terminated: PEP 3333's ``wsgi.input_terminated`` (Werkzeug,
  hence Flask and httpbin, answers 501 "Chunked requests are not supported for server"
  without it, as gunicorn and uWSGI set it). :func:`read_body` reads such a body to its end.
- **A Host header with a bad port is a 400** (RFC 9112 3.2: "A server MUST respond with a 400
  (Bad Request) status code to any HTTP/1.1 request message that ... contains ... a Host
  header field with an invalid field value"). Tornado's container raises ``ValueError`` on
  ``Host: example.com:MPLE`` and the connection dies; :func:`with_valid_host` answers 400.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from types import TracebackType
from typing import Any
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

#: Set in the environ when the Host header's port is not a port (see :func:`with_valid_host`).
BAD_HOST = "egresskit.bad_host"

# RFC 3986 3.2.2/3.2.3: host (reg-name or IPv4 here; IP-literals in [...]), then an optional
# all-digit port. Only the port is judged: names are the proxy's and the sites' business.
_HOST_PORT = re.compile(r"^(\[[^\]]*\]|[^:\[\]]*)(:[0-9]*)?$")

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None] | tuple[None, None, None]


def host_is_valid(host: str) -> bool:
    """Whether a ``Host`` value has no port, or an all-digit one (RFC 3986 ``port = *DIGIT``)."""
    match = _HOST_PORT.match(host.strip())
    return match is not None and int((match.group(2) or ":0")[1:] or "0") < 65536


def read_body(environ: WSGIEnvironment) -> bytes:
    """The request body: ``CONTENT_LENGTH`` bytes, or all of a terminated (chunked) input."""
    stream = environ["wsgi.input"]
    length = environ.get("CONTENT_LENGTH")
    if length:
        return bytes(stream.read(int(length)))
    if environ.get("wsgi.input_terminated"):
        return bytes(stream.read())
    return b""


def head_without_body(app: WSGIApplication) -> WSGIApplication:
    """``app`` answering HEAD with a GET's status and headers and no body."""

    def wrapped(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") != "HEAD":
            return app(environ, start_response)
        captured: list[tuple[str, list[tuple[str, str]], Any]] = []

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            captured[:] = [(status, list(headers), exc_info)]
            return lambda data: None  # a HEAD's write() output is dropped as well

        result = app(environ, capture)
        try:
            size = sum(len(chunk) for chunk in result)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        status, headers, exc_info = captured[0]
        if not any(name.lower() == "content-length" for name, _ in headers):
            headers.append(("Content-Length", str(size)))
        start_response(status, headers, exc_info)
        return []

    return wrapped


def with_valid_host(app: WSGIApplication) -> WSGIApplication:
    """``app`` behind a 400 for requests whose Host header has an invalid port."""

    def wrapped(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if BAD_HOST not in environ:
            return app(environ, start_response)
        data = f"400 Bad Request: invalid Host header {environ[BAD_HOST]!r}\n".encode()
        start_response(
            "400 Bad Request",
            [
                ("Content-Type", "text/plain; charset=utf-8"),
                ("Content-Length", str(len(data))),
                ("Connection", "close"),
            ],
        )
        return [data]

    return wrapped


def correct_http(app: WSGIApplication) -> WSGIApplication:
    """Both wrappers: a bad Host is refused first, then HEAD is answered without a body."""
    return with_valid_host(head_without_body(app))
