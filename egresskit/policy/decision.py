"""Values that go into the engine (requests) and come out of it (decisions).

Everything here is frozen and plain: no sockets, no clock. A :class:`Decision` says what
Linkerd's outbound proxy does with one request or connection, and carries the exact label
sets the proxy would put on its route and backend metrics (docs/facts/linkerd-egress.md
linkerd-egress.md section 6.2), in Linkerd's label order.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Literal

Outcome = Literal["allowed", "forbidden", "redirected", "invalid", "failed"]
RouteFamily = Literal["http", "grpc", "tls", "tcp"]
PortProtocol = Literal["detect", "grpc", "tls", "opaque"]

#: Label names in the order the proxy emits them (linkerd2-proxy metrics.rs
#: ``prom_encode_service_labels`` / ``prom_encode_meta_labels``; docs/facts/linkerd-egress.md 6.2).
PARENT_LABELS = (
    "parent_group",
    "parent_kind",
    "parent_namespace",
    "parent_name",
    "parent_port",
    "parent_section_name",
)
ROUTE_LABELS = ("route_group", "route_kind", "route_namespace", "route_name")
BACKEND_LABELS = (
    "backend_group",
    "backend_kind",
    "backend_namespace",
    "backend_name",
    "backend_port",
    "backend_section_name",
)


@dataclass(frozen=True, kw_only=True)
class Ref:
    """A reference to a parent, route or backend, as the proxy's metadata names it."""

    group: str
    kind: str
    namespace: str
    name: str
    port: int | None = None

    def __str__(self) -> str:
        ns = f"{self.namespace}/" if self.namespace else ""
        port = f":{self.port}" if self.port is not None else ""
        return f"{self.kind} {ns}{self.name}{port}"


# ------------------------------------------------------------------------ requests


@dataclass(frozen=True, kw_only=True)
class HttpRequest:
    """One HTTP request as the client's proxy sees it after protocol detection."""

    client_namespace: str
    dst_ip: str
    dst_port: int
    method: str = "GET"
    #: The raw request target's path and query (``/get?x=1``); never decoded.
    path: str = "/"
    #: The authority: Host header for HTTP/1, ``:authority`` for HTTP/2 (port allowed).
    host: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    http_version: Literal["1.1", "2"] = "1.1"
    #: True for ``content-type: application/grpc`` requests.
    grpc: bool = False
    #: Where in [0, 1) the weighted backend choice falls (the proxy draws it at random;
    #: the engine stays deterministic).
    backend_pick: float = 0.0


@dataclass(frozen=True, kw_only=True)
class TlsConnection:
    """A connection that opened with a TLS ClientHello (``sni`` may be absent)."""

    client_namespace: str
    dst_ip: str
    dst_port: int
    sni: str | None
    backend_pick: float = 0.0


@dataclass(frozen=True, kw_only=True)
class TcpConnection:
    """A connection whose first bytes are neither HTTP nor TLS (or were never read)."""

    client_namespace: str
    dst_ip: str
    dst_port: int
    backend_pick: float = 0.0


Request = HttpRequest | TlsConnection | TcpConnection


# ------------------------------------------------------------------------ decision


@dataclass(frozen=True, kw_only=True)
class HeaderEdit:
    """A header modifier the proxy applies in Linkerd's order: add, set, remove (D15)."""

    add: tuple[tuple[str, str], ...] = ()
    set: tuple[tuple[str, str], ...] = ()
    remove: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Decision:
    """What Linkerd does with one request or connection.

    ``outcome`` is one of:

    * ``allowed``: forwarded to the original destination;
    * ``forbidden``: the EgressNetwork's Deny (HTTP 403, gRPC PERMISSION_DENIED, TLS/TCP close
      with ``error="forbidden"``);
    * ``redirected``: sent to an in-cluster Service instead (the guide's redirect), or answered
      with an HTTP redirect by a RequestRedirect filter (``location`` set);
    * ``invalid``: the route's backend is invalid (HTTP 500, TLS/TCP ``invalid_backend``);
    * ``failed``: the proxy cannot serve it at all (no SNI on a TLS port, HTTP/1 on a gRPC
      port, no route); ``reason`` says why.
    """

    outcome: Outcome
    protocol: PortProtocol | None
    family: RouteFamily | None
    parent: Ref | None
    route: Ref | None
    backend: Ref | None
    #: Where forwarded traffic goes: ``original`` (ip:port as dialled), ``service``, or None.
    target: Literal["original", "service"] | None = None
    #: For synthetic answers (403, 500, 3xx, gRPC errors in a 200): the HTTP status the
    #: proxy itself returns. ``None`` when the upstream's response is passed through.
    http_status: int | None = None
    grpc_status: str | None = None
    #: The metric ``error`` label: "" for HTTP policy answers; ``forbidden``,
    #: ``invalid_backend`` for TLS/TCP closes (docs/facts/linkerd-egress.md 6.2).
    error: str = ""
    #: The route metric's label set (P + R) in Linkerd's order; empty when no route applies.
    labels: dict[str, str] = field(default_factory=dict)
    backend_labels: dict[str, str] = field(default_factory=dict)
    #: Extra response headers of a synthetic answer (``l5d-proxy-error``, ``location``).
    response_headers: tuple[tuple[str, str], ...] = ()
    location: str | None = None
    request_headers: HeaderEdit | None = None
    response_header_edit: HeaderEdit | None = None
    rule_index: int | None = None
    reason: str = ""
    #: Human-readable reasoning, filled by :func:`egresskit.explain`; empty on the fast path.
    reasons: tuple[str, ...] = ()

    # -- rendering for people ---------------------------------------------------------

    def summary(self) -> str:
        route = self.route.name if self.route else "(no route)"
        status = ""
        if self.http_status is not None:
            status = f" HTTP {self.http_status}"
        if self.grpc_status is not None:
            status += f" grpc-status {self.grpc_status}"
        if self.error:
            status += f' error="{self.error}"'
        return f"{self.outcome.upper()} via {route}{status}"

    def __str__(self) -> str:
        lines = [self.summary()]
        lines.append(f"  parent:  {self.parent or '(none)'}")
        lines.append(f"  route:   {self.route or '(none)'}")
        lines.append(f"  backend: {self.backend or '(none)'}")
        if self.reasons:
            lines.append("  why:")
            lines.extend(f"    - {r}" for r in self.reasons)
        if self.labels:
            rendered = ", ".join(f'{k}="{v}"' for k, v in self.labels.items())
            lines.append(f"  labels:  {{{rendered}}}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        colour = {
            "allowed": "#1a7f37",
            "forbidden": "#cf222e",
            "redirected": "#8250df",
            "invalid": "#bc4c00",
            "failed": "#6e7781",
        }[self.outcome]
        esc = html.escape
        rows = "".join(
            f"<tr><th style='text-align:left'>{k}</th><td><code>{esc(str(v))}</code></td></tr>"
            for k, v in (
                ("parent", self.parent or "(none)"),
                ("route", self.route or "(none)"),
                ("backend", self.backend or "(none)"),
            )
        )
        why = "".join(f"<li>{esc(r)}</li>" for r in self.reasons)
        labels = ", ".join(f'{k}="{esc(v)}"' for k, v in self.labels.items())
        return (
            f"<div><b style='color:{colour}'>{esc(self.summary())}</b>"
            f"<table>{rows}</table>"
            + (f"<ol>{why}</ol>" if why else "")
            + (f"<small><code>{{{labels}}}</code></small>" if labels else "")
            + "</div>"
        )
