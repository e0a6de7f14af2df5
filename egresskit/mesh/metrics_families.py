"""Linkerd's outbound route families and label vocabulary, as docs/facts/linkerd-egress.md 6.2
defines them.

Job: name what :class:`~egresskit.mesh.metrics.ProxyMetrics` records -- the
``outbound_{http,grpc}_route_*`` and ``outbound_{tls,tcp}_route_*`` families with their
HELP texts and histogram bounds, the label keys in the proxy's order, the allowed label
values -- and check values against them before they are recorded. The per-protocol
family groups and :class:`ExchangeSeries` (one HTTP exchange's series across a group,
kept by the proxy's fast path) live here too.

Rules:

* Label names, their order and the family names follow docs/facts/linkerd-egress.md
  section 6.2 and linkerd2-proxy; each definition cites where it comes from.
* Underscore names are private to the ``egresskit.mesh.metrics*`` modules; the public
  names are re-exported by :mod:`egresskit.mesh.metrics`, which is where to import them.

Deliberate omissions (say so rather than fake them):

* ``*_frame_size_bytes`` histograms are left out: they observe the size of every body
  data frame (``linkerd/http/prom/src/body_data``, buckets 128, 1024, 10240), and frame
  boundaries are an artefact of hyper's reads that a Python proxy cannot reproduce.
* ``*_retry_*`` families are left out: the local mesh does not retry, and their label
  set is not verified (docs/facts/linkerd-egress.md section 11).
* Legacy families (``request_total``, ``tcp_open_total``, ...) are not emitted.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Mapping

from egresskit.mesh.metrics_text import (
    _Counter,
    _CounterFamily,
    _Histogram,
    _HistogramFamily,
    _label,
)
from egresskit.policy.decision import BACKEND_LABELS, PARENT_LABELS, ROUTE_LABELS

#: P + R and B, in the order the proxy emits them: one definition, the policy engine's
#: (docs/facts/linkerd-egress.md 6.2; linkerd2-proxy ``app/outbound/src/metrics.rs``).
ROUTE_LABEL_KEYS: tuple[str, ...] = PARENT_LABELS + ROUTE_LABELS
BACKEND_LABEL_KEYS: tuple[str, ...] = BACKEND_LABELS
#: The HTTP/gRPC ``error`` label values; "" means the stream ended normally (spec 6.2).
HTTP_ERRORS: frozenset[str] = frozenset(
    {
        "",
        "FAIL_FAST",
        "LOAD_SHED",
        "REQUEST_TIMEOUT",
        "RESPONSE_HEADERS_TIMEOUT",
        "RESPONSE_STREAM_TIMEOUT",
        "IDLE_TIMEOUT",
        "CANCEL",
        "REFUSED",
        "ENHANCE_YOUR_CALM",
        "RESET",
        "GO_AWAY",
        "IO",
        "UNKNOWN",
    }
)
#: TLS/TCP ``close_total`` error values, in the order their zero series are created
#: (``linkerd2-proxy:app/outbound/src/metrics/transport.rs`` ``metrics()``; spec 6.2).
TRANSPORT_ERRORS: tuple[str, ...] = (
    "",
    "forbidden",
    "invalid_backend",
    "invalid_policy",
    "unexpected",
)
#: gRPC status codes by the upper-case names the proxy prints (spec 6.2).
GRPC_STATUS_NAMES: frozenset[str] = frozenset(
    {
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    }
)
#: Pod (or namespace) annotation that turns hostname labels on in Linkerd 2.18+ (spec 6.2).
HOSTNAME_LABELS_ANNOTATION = "config.linkerd.io/proxy-metrics-hostname-labels"

# Histogram bounds (spec 6.2; linkerd2-proxy route/metrics.rs and route/backend/metrics.rs).
_ROUTE_DURATION_BOUNDS = (0.05, 0.5, 1.0, 10.0)
_BACKEND_DURATION_BOUNDS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 10.0)

# HELP texts as registered in linkerd2-proxy (linkerd/http/prom/src/record_response/*.rs,
# app/outbound/src/metrics/transport.rs); the crate appends the full stop when rendering.
_HELP_REQUEST_DURATION = "The time between request initialization and response completion"
_HELP_REQUEST_STATUSES = "Completed request-response streams"
_HELP_BACKEND_REQUESTS = "The total number of requests dispatched"
_HELP_BACKEND_DURATION = "The time between request completion and response completion"
_HELP_BACKEND_STATUSES = "Completed responses"
_HELP_OPEN = "The number of connections opened"
_HELP_CLOSE = "The number of connections closed"


def hostname_labels_enabled(
    pod_annotations: Mapping[str, str],
    namespace_annotations: Mapping[str, str] | None = None,
) -> bool:
    """Whether a pod's proxy exports real ``hostname`` labels (Linkerd 2.18+, spec 6.2).

    The pod annotation wins over the namespace one (Linkerd's inject precedence); the
    default is off. Only ``"true"`` (any case) enables it -- an assumption: the proxy
    reads the value as a boolean environment variable.
    """
    for source in (pod_annotations, namespace_annotations or {}):
        value = source.get(HOSTNAME_LABELS_ANNOTATION)
        if value is not None:
            return value.strip().lower() == "true"
    return False


class _RouteFamilies:
    """The five HTTP or gRPC route families (``outbound_{http,grpc}_route_*``)."""

    def __init__(self, protocol: str) -> None:
        prefix = f"outbound_{protocol}_route_"
        self.request_duration = _HistogramFamily(
            prefix + "request_duration_seconds", _HELP_REQUEST_DURATION, _ROUTE_DURATION_BOUNDS
        )
        self.request_statuses = _CounterFamily(prefix + "request_statuses", _HELP_REQUEST_STATUSES)
        self.backend_requests = _CounterFamily(prefix + "backend_requests", _HELP_BACKEND_REQUESTS)
        self.backend_duration = _HistogramFamily(
            prefix + "backend_response_duration_seconds",
            _HELP_BACKEND_DURATION,
            _BACKEND_DURATION_BOUNDS,
        )
        self.backend_statuses = _CounterFamily(
            prefix + "backend_response_statuses", _HELP_BACKEND_STATUSES
        )

    def render(self, out: list[str]) -> None:
        # Registration order in linkerd2-proxy: route-level request metrics, then the
        # backend families (as in the real dump cited in the module docstring).
        self.request_duration.render(out)
        self.request_statuses.render(out)
        self.backend_requests.render(out)
        self.backend_duration.render(out)
        self.backend_statuses.render(out)


class _TransportFamilies:
    """``outbound_{tls,tcp}_route_{open,close}_total``."""

    def __init__(self, protocol: str) -> None:
        self.open = _CounterFamily(f"outbound_{protocol}_route_open", _HELP_OPEN)
        self.close = _CounterFamily(f"outbound_{protocol}_route_close", _HELP_CLOSE)
        self.targets: dict[tuple[object, ...], tuple[_Counter, list[_Counter]]] = {}

    def target(self, key: tuple[object, ...], labels: str) -> tuple[_Counter, list[_Counter]]:
        """Create the open counter and all five close counters of one target together, as
        the proxy does when it builds a route's service, so they show up as 0 (spec 6.2;
        transport.rs ``TransportRouteMetricsFamily::metrics``)."""
        counters = (
            self.open.get(key, labels),
            [
                self.close.get((*key, error), f"{labels},{_label('error', error)}")
                for error in TRANSPORT_ERRORS
            ],
        )
        self.targets[key] = counters
        return counters

    def render(self, out: list[str]) -> None:
        self.open.render(out)
        self.close.render(out)


class ExchangeSeries:
    """The series one kind of HTTP exchange records into (see ``http_exchange``)."""

    __slots__ = (
        "backend_duration",
        "backend_labels",
        "backend_requests",
        "backend_statuses",
        "duration",
        "route_labels",
        "statuses",
    )

    def __init__(
        self,
        route_labels: Mapping[str, str],
        backend_labels: Mapping[str, str] | None,
        duration: _Histogram,
        statuses: _Counter,
    ) -> None:
        self.route_labels = route_labels
        self.backend_labels = backend_labels
        self.duration = duration
        self.statuses = statuses
        self.backend_requests: _Counter | None = None
        self.backend_duration: _Histogram | None = None
        self.backend_statuses: _Counter | None = None


_TRANSPORT_ERROR_INDEX = {error: i for i, error in enumerate(TRANSPORT_ERRORS)}


def _http(status: int | None) -> str:
    if status is None:
        return ""
    if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
        raise ValueError(f"http_status: expected an int in 100..599 or None, found {status!r}")
    return str(status)


def _grpc(status: str | None) -> str:
    if status is None:
        return "UNKNOWN"
    if status not in GRPC_STATUS_NAMES:
        raise ValueError(
            f"grpc_status: expected an upper-case gRPC code name such as OK or "
            f"PERMISSION_DENIED, found {status!r}"
        )
    return status


def _check_error(error: str) -> None:
    if error not in HTTP_ERRORS:
        expected = ", ".join(sorted(e or '""' for e in HTTP_ERRORS))
        raise ValueError(f"error: expected one of {expected}; found {error!r}")


def _transport_error(error: str) -> int:
    index = _TRANSPORT_ERROR_INDEX.get(error)
    if index is None:
        expected = ", ".join(e or '""' for e in TRANSPORT_ERRORS)
        raise ValueError(f"error: expected one of {expected}; found {error!r}")
    return index


def _check_duration(duration_s: float) -> None:
    if not (duration_s >= 0 and math.isfinite(duration_s)):
        raise ValueError(f"duration_s: expected a finite number >= 0, found {duration_s!r}")


def _is_ip_literal(host: str) -> bool:
    # Cheap pre-check first: DNS names start with a letter far more often than not.
    if not host or not (host[0].isdigit() or host[0] == "[" or ":" in host):
        return False
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True
