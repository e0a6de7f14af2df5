"""Pure helpers of the HTTP/2 path: request heads in, engine requests and answers out.

Job: everything about one HTTP/2 exchange that needs no socket -- read a request's header
block into an :class:`~egresskit.policy.decision.HttpRequest`, build the header block the
proxy sends upstream (route header edits applied), the answer the proxy gives itself
(HTTP 403/500/3xx or a gRPC error in a 200), and the gRPC status a response ended with.
The I/O around it is :mod:`egresskit.mesh.http2`.

Rules (RFC 9113 section 8.3; gRPC over HTTP/2, grpc/grpc ``doc/PROTOCOL-HTTP2.md``):

* a request needs ``:method``, ``:scheme`` and ``:path``; ``:authority`` (else ``host``)
  is the host the engine and the ``hostname`` label see (docs/facts/linkerd-egress.md 6.2);
* a gRPC request is one whose ``content-type`` starts with ``application/grpc``;
* a gRPC status is read from the trailers, or from the headers of a trailers-only response;
  absent, it is recorded ``UNKNOWN`` (spec 6.2).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from egresskit.policy.decision import Decision, HeaderEdit, HttpRequest

Headers = list[tuple[bytes, bytes]]

#: gRPC status codes by number (grpc/grpc ``doc/statuscodes.md``).
GRPC_CODES: dict[int, str] = {
    0: "OK",
    1: "CANCELLED",
    2: "UNKNOWN",
    3: "INVALID_ARGUMENT",
    4: "DEADLINE_EXCEEDED",
    5: "NOT_FOUND",
    6: "ALREADY_EXISTS",
    7: "PERMISSION_DENIED",
    8: "RESOURCE_EXHAUSTED",
    9: "FAILED_PRECONDITION",
    10: "ABORTED",
    11: "OUT_OF_RANGE",
    12: "UNIMPLEMENTED",
    13: "INTERNAL",
    14: "UNAVAILABLE",
    15: "DATA_LOSS",
    16: "UNAUTHENTICATED",
}
GRPC_NUMBERS: dict[str, int] = {name: code for code, name in GRPC_CODES.items()}


class BadRequest(ValueError):
    """A request header block the proxy cannot route (the stream is reset)."""


@dataclass(frozen=True, kw_only=True)
class Head:
    """One request's header block, split."""

    method: str
    scheme: str
    path: str
    authority: str | None
    headers: tuple[tuple[str, str], ...]
    grpc: bool


def read_head(raw: Sequence[tuple[bytes, bytes]]) -> Head:
    """Split a request header block; ``BadRequest`` says which pseudo-header is missing."""
    pseudo: dict[bytes, bytes] = {}
    headers: list[tuple[str, str]] = []
    for name, value in raw:
        if name.startswith(b":"):
            pseudo[name] = value
        else:
            headers.append((name.decode("latin-1"), value.decode("latin-1")))
    for required in (b":method", b":scheme", b":path"):
        if required not in pseudo:
            raise BadRequest(f"request headers: expected {required.decode()}, found none")
    authority = pseudo.get(b":authority")
    if authority is None:
        authority = next((v.encode("latin-1") for k, v in headers if k == "host"), None)
    content_type = next((v for k, v in headers if k == "content-type"), "")
    return Head(
        method=pseudo[b":method"].decode("latin-1"),
        scheme=pseudo[b":scheme"].decode("latin-1"),
        path=pseudo[b":path"].decode("latin-1"),
        authority=None if authority is None else authority.decode("latin-1"),
        headers=tuple(headers),
        grpc=content_type.lower().startswith("application/grpc"),
    )


def engine_request(head: Head, *, namespace: str, dst_ip: str, dst_port: int) -> HttpRequest:
    """The engine's view of the request (HTTP/2, gRPC when the content-type says so)."""
    return HttpRequest(
        client_namespace=namespace,
        dst_ip=dst_ip,
        dst_port=dst_port,
        method=head.method,
        path=head.path,
        host=head.authority,
        headers=head.headers,
        http_version="2",
        grpc=head.grpc,
    )


def host_only(authority: str | None) -> str:
    """``:authority`` without port or brackets, lower case (the ``hostname`` label)."""
    if not authority:
        return ""
    host = authority.strip()
    if host.startswith("["):
        return host[1:].partition("]")[0].lower()
    if host.count(":") == 1:
        host = host.partition(":")[0]
    return host.rstrip(".").lower()


def upstream_headers(raw: Sequence[tuple[bytes, bytes]], edit: HeaderEdit | None) -> Headers:
    """A header block as it goes on: pseudo-headers first, as received, then the others
    with a route's header modifier applied (add, set, remove; header names are lower case
    in HTTP/2, RFC 9113 8.2.1). Requests get RequestHeaderModifier, responses
    ResponseHeaderModifier."""
    pseudo = [(k, v) for k, v in raw if k.startswith(b":")]
    rest = [(k, v) for k, v in raw if not k.startswith(b":")]
    if edit is not None:
        rest = apply_edit(rest, edit)
    return pseudo + rest


def apply_edit(headers: Headers, edit: HeaderEdit) -> Headers:
    out = list(headers)
    for name, value in edit.add:
        out.append((name.lower().encode("latin-1"), value.encode("latin-1")))
    for name, value in edit.set:
        key = name.lower().encode("latin-1")
        out = [(k, v) for k, v in out if k != key]
        out.append((key, value.encode("latin-1")))
    removed = {name.lower().encode("latin-1") for name in edit.remove}
    return [(k, v) for k, v in out if k not in removed]


def proxy_answer(decision: Decision, *, grpc: bool) -> tuple[Headers, str | None]:
    """The header block of an answer the proxy gives itself (sent with END_STREAM), and the
    gRPC status name to record for it (None for a plain HTTP answer).

    * gRPC route (family ``grpc``): ``200`` with the engine's ``grpc-status`` and
      ``grpc-message`` (deny: 7 PERMISSION_DENIED, "traffic not allowed"; spec 3);
    * a gRPC request answered on an HTTP route: the 403 rendered as ``grpc-status`` 9
      FAILED_PRECONDITION (spec 3, derived) -- a gRPC client sees a gRPC error;
    * otherwise the HTTP status with ``content-length: 0`` and the engine's headers
      (``l5d-proxy-error``, ``location``).
    """
    status = decision.http_status or 502
    extra = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in decision.response_headers]
    if decision.family == "grpc":
        head: Headers = [(b":status", b"200"), (b"content-type", b"application/grpc")]
        return head + extra, decision.grpc_status
    if grpc and decision.grpc_status is not None:
        code = GRPC_NUMBERS[decision.grpc_status]
        message = dict(decision.response_headers).get("l5d-proxy-error", "")
        head = [
            (b":status", b"200"),
            (b"content-type", b"application/grpc"),
            (b"grpc-status", str(code).encode()),
            (b"grpc-message", message.encode("latin-1")),
        ]
        return head + extra, decision.grpc_status
    return [(b":status", str(status).encode()), (b"content-length", b"0"), *extra], None


def error_answer(status: int, message: str, *, grpc: bool) -> Headers:
    """The proxy's answer to an upstream fault: HTTP ``status`` with ``l5d-proxy-error``,
    or for a gRPC request ``grpc-status`` 14 UNAVAILABLE (assumption: Linkerd renders
    connection and timeout errors of gRPC calls as UNAVAILABLE)."""
    info = (b"l5d-proxy-error", message.encode("latin-1", "replace"))
    if grpc:
        return [
            (b":status", b"200"),
            (b"content-type", b"application/grpc"),
            (b"grpc-status", b"14"),
            (b"grpc-message", message.encode("latin-1", "replace")),
            info,
        ]
    return [(b":status", str(status).encode()), (b"content-length", b"0"), info]


def grpc_status(headers: Sequence[tuple[bytes, bytes]]) -> str | None:
    """The status name in a ``grpc-status`` header (None when absent or not a known code)."""
    for name, value in headers:
        if name == b"grpc-status":
            try:
                return GRPC_CODES.get(int(value))
            except ValueError:
                return None
    return None


def http_status(headers: Sequence[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name == b":status":
            try:
                code = int(value)
            except ValueError:
                return None
            return code if 100 <= code <= 599 else None
    return None
