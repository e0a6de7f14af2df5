"""One proxy's route metrics, rendered exactly as Linkerd's proxy prints them.

Job: count what the local egress proxy does (requests, backend dispatches, TLS and TCP
connections) in Linkerd's ``outbound_*_route_*`` families, and render the admin
``/metrics`` text byte for byte the way ``linkerd2-proxy`` does, so a DataFrame built from
the local mesh lines up column for column with one scraped from a kind cluster.

Rules:

* One :class:`ProxyMetrics` per proxy; there is no global registry. :meth:`render` is a
  pure function of the recorded values (prometheus/client_python's model).
* Label names, their order and the family names follow shared spec linkerd-egress.md
  section 6.2; the text format follows section 6.3 and the Rust ``prometheus-client``
  crate's text encoder (``prometheus/client_rust@0575a56:src/encoding/text.rs``), which
  Linkerd's admin server uses for these families:

  - ``# HELP <family> <help>.`` (the crate appends the full stop: ``Descriptor::new`` /
    ``Metadata::new`` do ``help + "."``), ``# TYPE <family> <type>``, and for families
    registered with a unit ``# UNIT <family> <unit>``;
  - a counter family is typed without ``_total`` and its samples carry it; values are
    integers; no ``_created`` series;
  - a histogram prints ``_sum`` (float), ``_count`` (integer), then cumulative
    ``_bucket`` lines; the ``le`` label comes FIRST, before the family labels
    (``MetricEncoder::encode_labels`` writes "additional" labels before family labels),
    and bounds are printed by ``dtoa`` (``le="1.0"``, ``le="10.0"``). A real dump shows
    exactly this (``olix0r/schlep`` README, ``linkerd diagnostics proxy-metrics``);
  - the text ends with ``# EOF``: Linkerd encodes its prometheus-client registry with
    ``encoding::text::encode`` (registry + EOF) and emits it last on purpose
    (``linkerd2-proxy:linkerd/app/src/lib.rs``: "The prom registry reports an "# EOF" at
    the end of its export, so it should be emitted last"; ``linkerd/metrics/src/lib.rs``
    ``impl FmtMetrics for prom::Report``).

* Recording sits on the proxy's hot path: label text is encoded once per distinct label
  set and cached; one lock per registry guards plain dicts and ints.

Deliberate omissions (say so rather than fake them):

* ``*_frame_size_bytes`` histograms are left out: they observe the size of every body
  data frame (``linkerd/http/prom/src/body_data``, buckets 128, 1024, 10240), and frame
  boundaries are an artefact of hyper's reads that a Python proxy cannot reproduce.
* ``*_retry_*`` families are left out: the local mesh does not retry, and their label
  set is not verified (shared spec section 11).
* Legacy families (``request_total``, ``tcp_open_total``, ...) are not emitted.
"""

from __future__ import annotations

import ipaddress
import math
import threading
from bisect import bisect_left
from collections.abc import Mapping
from decimal import Decimal

from egresskit.policy.decision import BACKEND_LABELS, PARENT_LABELS, ROUTE_LABELS

__all__ = [
    "BACKEND_LABEL_KEYS",
    "GRPC_STATUS_NAMES",
    "HOSTNAME_LABELS_ANNOTATION",
    "HTTP_ERRORS",
    "ROUTE_LABEL_KEYS",
    "TRANSPORT_ERRORS",
    "ProxyMetrics",
    "format_f64",
    "hostname_labels_enabled",
]

#: P + R and B, in the order the proxy emits them: one definition, the policy engine's
#: (shared spec 6.2; linkerd2-proxy ``app/outbound/src/metrics.rs``).
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


def format_f64(value: float) -> str:
    """Render a float as the ``dtoa`` crate does (used for ``_sum`` values and ``le``).

    Shortest round-trip digits laid out by dtoa's ``prettify`` rules: integers keep a
    ``.0`` (``1.0``, ``10.0``), small magnitudes down to 1e-6 stay positional
    (``0.000012``), beyond 21 digits or below that it switches to ``1.5e-7`` (no ``+``,
    no zero padding). Assumption: Python's shortest repr and dtoa's Grisu output agree on
    the digits; Grisu is occasionally one or two digits longer (``280.96408839699998``).
    """
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if value == 0:
        return "-0.0" if math.copysign(1.0, value) < 0 else "0.0"
    sign, digit_tuple, exponent = Decimal(repr(value)).as_tuple()
    assert isinstance(exponent, int)  # finite values only past this point
    digits = "".join(map(str, digit_tuple)).rstrip("0")
    exponent += len(digit_tuple) - len(digits)
    prefix = "-" if sign else ""
    length = len(digits)
    kk = length + exponent  # 10^(kk-1) <= |value| < 10^kk
    if exponent >= 0 and kk <= 21:
        text = digits + "0" * exponent + ".0"
    elif 0 < kk <= 21:
        text = digits[:kk] + "." + digits[kk:]
    elif -6 < kk <= 0:
        text = "0." + "0" * -kk + digits
    elif length == 1:
        text = f"{digits}e{kk - 1}"
    else:
        text = f"{digits[0]}.{digits[1:]}e{kk - 1}"
    return prefix + text


def _escape(value: str) -> str:
    # The crate writes label values verbatim; we escape as the Prometheus text format
    # requires so the output always parses. For values Linkerd can produce (DNS names,
    # Kubernetes names, numbers) the two are identical.
    if "\\" in value or '"' in value or "\n" in value:
        value = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


def _label(name: str, value: str) -> str:
    return f'{name}="{_escape(value)}"'


def _encoded(
    what: str,
    labels: Mapping[str, str],
    expected: tuple[str, ...],
    cache: dict[tuple[str, ...], str],
) -> tuple[tuple[str, ...], str]:
    """The label values as a key, and their ``k="v",...`` text (encoded once, then cached)."""
    _check_label_set(what, labels, expected)
    values = tuple(labels.values())
    text = cache.get(values)
    if text is None:
        for key, value in zip(expected, values, strict=True):
            if not isinstance(value, str):
                raise TypeError(
                    f"{what}[{key!r}]: expected a str label value, "
                    f"found {type(value).__name__} {value!r}"
                )
        text = cache[values] = ",".join(_label(k, v) for k, v in zip(expected, values, strict=True))
    return values, text


def _check_label_set(what: str, labels: Mapping[str, str], expected: tuple[str, ...]) -> None:
    keys = tuple(labels)
    if keys == expected:
        return
    order = ", ".join(expected)
    for key in expected:
        if key not in labels:
            raise ValueError(f"{what}: missing key {key!r}; expected keys in this order: {order}")
    for key in keys:
        if key not in expected:
            raise ValueError(f"{what}: unexpected key {key!r}; expected exactly: {order}")
    for position, (found, wanted) in enumerate(zip(keys, expected, strict=True)):
        if found != wanted:
            raise ValueError(
                f"{what}: key {found!r} is misplaced: position {position} must hold "
                f"{wanted!r}; expected keys in this order: {order}"
            )


class _Counter:
    __slots__ = ("labels", "value")

    def __init__(self, labels: str) -> None:
        self.labels = labels
        self.value = 0


class _Histogram:
    __slots__ = ("buckets", "count", "labels", "sum")

    def __init__(self, labels: str, size: int) -> None:
        self.labels = labels
        self.buckets = [0] * size  # per bucket, not cumulative; the last one is +Inf
        self.sum = 0.0
        self.count = 0


class _CounterFamily:
    def __init__(self, name: str, help_text: str) -> None:
        self.name = name
        self.help = help_text
        self.series: dict[tuple[object, ...], _Counter] = {}

    def get(self, key: tuple[object, ...], labels: str) -> _Counter:
        series = self.series.get(key)
        if series is None:
            series = self.series[key] = _Counter(labels)
        return series

    def render(self, out: list[str]) -> None:
        out.append(f"# HELP {self.name} {self.help}.")
        out.append(f"# TYPE {self.name} counter")
        total = self.name + "_total"
        for series in self.series.values():
            out.append(f"{total}{{{series.labels}}} {series.value}")


class _HistogramFamily:
    def __init__(self, name: str, help_text: str, bounds: tuple[float, ...]) -> None:
        self.name = name
        self.help = help_text
        self.bounds = bounds
        self.le = [f'le="{format_f64(b)}"' for b in bounds] + ['le="+Inf"']
        self.series: dict[tuple[object, ...], _Histogram] = {}

    def observe(self, key: tuple[object, ...], labels: str, value: float) -> None:
        _observe(self.series_for(key, labels), self.bounds, value)

    def series_for(self, key: tuple[object, ...], labels: str) -> _Histogram:
        series = self.series.get(key)
        if series is None:
            series = self.series[key] = _Histogram(labels, len(self.bounds) + 1)
        return series

    def render(self, out: list[str]) -> None:
        name = self.name
        out.append(f"# HELP {name} {self.help}.")
        out.append(f"# TYPE {name} histogram")
        out.append(f"# UNIT {name} seconds")
        for s in self.series.values():
            out.append(f"{name}_sum{{{s.labels}}} {format_f64(s.sum)}")
            out.append(f"{name}_count{{{s.labels}}} {s.count}")
            cumulative = 0
            for le, n in zip(self.le, s.buckets, strict=True):
                cumulative += n
                out.append(f"{name}_bucket{{{le},{s.labels}}} {cumulative}")


def _observe(series: _Histogram, bounds: tuple[float, ...], value: float) -> None:
    # The crate counts v into the first bucket whose upper bound is >= v.
    series.buckets[bisect_left(bounds, value)] += 1
    series.sum += value
    series.count += 1


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


_EXCHANGE_CACHE_SIZE = 4096


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


_TRANSPORT_ERROR_INDEX = {error: i for i, error in enumerate(TRANSPORT_ERRORS)}


class ProxyMetrics:
    """The route metrics registry of one proxy; thread-safe.

    ``route_labels`` and ``backend_labels`` are the ordered dicts the policy engine
    produces (:data:`ROUTE_LABEL_KEYS`, :data:`BACKEND_LABEL_KEYS`); a wrong, missing or
    misplaced key raises ``ValueError``. ``hostname_labels=False`` (Linkerd 2.18+'s
    default) records ``hostname=""`` everywhere; hostnames that are IP literals are
    always recorded as "" (proxy PR #3258, shared spec 6.2 -- not re-verified in code).
    ``hostname`` is the bare host: no port, no brackets needed.
    """

    def __init__(self, *, hostname_labels: bool = False) -> None:
        self._hostname_labels = hostname_labels
        self._lock = threading.Lock()
        self._http = _RouteFamilies("http")
        self._grpc = _RouteFamilies("grpc")
        self._tls = _TransportFamilies("tls")
        self._tcp = _TransportFamilies("tcp")
        # Caches of encoded label text, keyed by label values.
        self._route_text: dict[tuple[str, ...], str] = {}
        self._backend_text: dict[tuple[str, ...], str] = {}
        self._host_text: dict[str, str] = {}
        # http_exchange's series, keyed by the label dicts' ids (the entry holds the dicts,
        # so an id cannot be reused while its entry lives), hostname, status and error.
        self._exchanges: dict[tuple[int, int, str, int | None, str], ExchangeSeries] = {}

    @property
    def hostname_labels(self) -> bool:
        """Whether real hostnames are recorded (fixed for the proxy's lifetime)."""
        return self._hostname_labels

    # -- label encoding (cached) -----------------------------------------------------

    def _route(self, labels: Mapping[str, str]) -> tuple[tuple[str, ...], str]:
        return _encoded("route_labels", labels, ROUTE_LABEL_KEYS, self._route_text)

    def _backend(self, labels: Mapping[str, str]) -> tuple[tuple[str, ...], str]:
        return _encoded("backend_labels", labels, BACKEND_LABEL_KEYS, self._backend_text)

    def _host(self, hostname: str) -> str:
        text = self._host_text.get(hostname)
        if text is None:
            if not isinstance(hostname, str):
                raise TypeError(f"hostname: expected a str, found {type(hostname).__name__}")
            value = hostname if self._hostname_labels and not _is_ip_literal(hostname) else ""
            text = self._host_text[hostname] = _label("hostname", value)
        return text

    # -- HTTP and gRPC -----------------------------------------------------------------

    def http_request(
        self,
        route_labels: Mapping[str, str],
        *,
        hostname: str,
        http_status: int | None,
        error: str,
        duration_s: float,
    ) -> None:
        """A request-response stream on an HTTP route ended (route-level families).

        ``http_status`` is None when the stream ended in an error; policy answers (403
        deny, 500 invalid backend) are a status with ``error=""`` (spec 6.2).
        """
        status = _http(http_status)
        self._request(self._http, route_labels, hostname, "http_status", status, error, duration_s)

    def http_backend_request(
        self, route_labels: Mapping[str, str], backend_labels: Mapping[str, str]
    ) -> None:
        """An HTTP request was dispatched to a backend (denied requests never are)."""
        self._backend_request(self._http, route_labels, backend_labels)

    def http_backend_response(
        self,
        route_labels: Mapping[str, str],
        backend_labels: Mapping[str, str],
        *,
        http_status: int | None,
        error: str,
        duration_s: float,
    ) -> None:
        """A backend's response stream ended."""
        status = _http(http_status)
        self._backend_response(
            self._http, route_labels, backend_labels, "http_status", status, error, duration_s
        )

    def http_exchange(
        self,
        route_labels: Mapping[str, str],
        backend_labels: Mapping[str, str] | None,
        *,
        hostname: str,
        http_status: int | None,
        error: str,
        duration_s: float,
    ) -> None:
        """One whole HTTP exchange in one call, the proxy's hot path: the same as
        :meth:`http_request` and, with ``backend_labels``, :meth:`http_backend_request` plus
        :meth:`http_backend_response`, all with the same duration, under one lock.

        Label text is looked up by the identity of the label dicts (the engine's decisions
        reuse theirs), so pass the same dicts for the same labels and do not mutate them.
        """
        self.count_exchange(
            self.exchange_series(
                route_labels,
                backend_labels,
                hostname=hostname,
                http_status=http_status,
                error=error,
            ),
            duration_s,
        )

    def exchange_series(
        self,
        route_labels: Mapping[str, str],
        backend_labels: Mapping[str, str] | None,
        *,
        hostname: str,
        http_status: int | None,
        error: str,
    ) -> ExchangeSeries:
        """The series one kind of exchange counts into, for :meth:`count_exchange`; a
        caller that sees the same kind again and again (the proxy's fast path) keeps it.
        Series are never dropped, so a kept one stays valid for the proxy's lifetime."""
        key = (id(route_labels), id(backend_labels), hostname, http_status, error)
        with self._lock:
            entry = self._exchanges.get(key)
            if (
                entry is None
                or entry.route_labels is not route_labels
                or entry.backend_labels is not backend_labels
            ):
                entry = self._exchange(route_labels, backend_labels, hostname, http_status, error)
                if len(self._exchanges) >= _EXCHANGE_CACHE_SIZE:
                    self._exchanges.clear()  # new policies make new dicts: stay bounded
                self._exchanges[key] = entry
        return entry

    def count_exchange(self, entry: ExchangeSeries, duration_s: float) -> None:
        """Count one exchange of the kind ``entry`` stands for."""
        if not 0 <= duration_s < math.inf:  # also False for NaN
            _check_duration(duration_s)
        with self._lock:
            # _observe inlined (this is once per proxied request).
            series = entry.duration
            series.buckets[bisect_left(_ROUTE_DURATION_BOUNDS, duration_s)] += 1
            series.sum += duration_s
            series.count += 1
            entry.statuses.value += 1
            backend = entry.backend_duration
            if backend is not None:
                assert entry.backend_requests is not None and entry.backend_statuses is not None
                entry.backend_requests.value += 1
                backend.buckets[bisect_left(_BACKEND_DURATION_BOUNDS, duration_s)] += 1
                backend.sum += duration_s
                backend.count += 1
                entry.backend_statuses.value += 1

    def _exchange(
        self,
        route_labels: Mapping[str, str],
        backend_labels: Mapping[str, str] | None,
        hostname: str,
        http_status: int | None,
        error: str,
    ) -> ExchangeSeries:
        """The series one exchange touches (lock held): the very series, keys and label
        text the three separate calls use, so both APIs add up in one place."""
        status = _http(http_status)
        _check_error(error)
        families = self._http
        route_key, route_text = self._route(route_labels)
        host_text = self._host(hostname)
        labels = f"{route_text},{host_text}"
        tail = f"{_label('http_status', status)},{_label('error', error)}"
        entry = ExchangeSeries(
            route_labels,
            backend_labels,
            families.request_duration.series_for((route_key, host_text), labels),
            families.request_statuses.get(
                (route_key, host_text, status, error), f"{labels},{tail}"
            ),
        )
        if backend_labels is not None:
            backend_key, backend_text = self._backend(backend_labels)
            key = (route_key, backend_key)
            pair = f"{route_text},{backend_text}"
            entry.backend_requests = families.backend_requests.get(key, pair)
            entry.backend_duration = families.backend_duration.series_for(key, pair)
            entry.backend_statuses = families.backend_statuses.get(
                (route_key, backend_key, status, error), f"{pair},{tail}"
            )
        return entry

    def grpc_request(
        self,
        route_labels: Mapping[str, str],
        *,
        hostname: str,
        grpc_status: str | None,
        error: str,
        duration_s: float,
    ) -> None:
        """A gRPC call on a GRPCRoute ended; ``grpc_status`` None is recorded ``UNKNOWN``."""
        status = _grpc(grpc_status)
        self._request(self._grpc, route_labels, hostname, "grpc_status", status, error, duration_s)

    def grpc_backend_request(
        self, route_labels: Mapping[str, str], backend_labels: Mapping[str, str]
    ) -> None:
        """A gRPC call was dispatched to a backend."""
        self._backend_request(self._grpc, route_labels, backend_labels)

    def grpc_backend_response(
        self,
        route_labels: Mapping[str, str],
        backend_labels: Mapping[str, str],
        *,
        grpc_status: str | None,
        error: str,
        duration_s: float,
    ) -> None:
        """A backend's gRPC response ended."""
        status = _grpc(grpc_status)
        self._backend_response(
            self._grpc, route_labels, backend_labels, "grpc_status", status, error, duration_s
        )

    def _request(
        self,
        families: _RouteFamilies,
        route_labels: Mapping[str, str],
        hostname: str,
        status_name: str,
        status: str,
        error: str,
        duration_s: float,
    ) -> None:
        _check_error(error)
        _check_duration(duration_s)
        with self._lock:
            route_key, route_text = self._route(route_labels)
            host_text = self._host(hostname)
            labels = f"{route_text},{host_text}"
            families.request_duration.observe((route_key, host_text), labels, duration_s)
            key = (route_key, host_text, status, error)
            counter = families.request_statuses.series.get(key)
            if counter is None:
                status_labels = f"{labels},{_label(status_name, status)},{_label('error', error)}"
                counter = families.request_statuses.get(key, status_labels)
            counter.value += 1

    def _backend_request(
        self,
        families: _RouteFamilies,
        route_labels: Mapping[str, str],
        backend_labels: Mapping[str, str],
    ) -> None:
        with self._lock:
            route_key, route_text = self._route(route_labels)
            backend_key, backend_text = self._backend(backend_labels)
            key = (route_key, backend_key)
            counter = families.backend_requests.series.get(key)
            if counter is None:
                counter = families.backend_requests.get(key, f"{route_text},{backend_text}")
            counter.value += 1

    def _backend_response(
        self,
        families: _RouteFamilies,
        route_labels: Mapping[str, str],
        backend_labels: Mapping[str, str],
        status_name: str,
        status: str,
        error: str,
        duration_s: float,
    ) -> None:
        _check_error(error)
        _check_duration(duration_s)
        with self._lock:
            route_key, route_text = self._route(route_labels)
            backend_key, backend_text = self._backend(backend_labels)
            labels = f"{route_text},{backend_text}"
            families.backend_duration.observe((route_key, backend_key), labels, duration_s)
            key = (route_key, backend_key, status, error)
            counter = families.backend_statuses.series.get(key)
            if counter is None:
                status_labels = f"{labels},{_label(status_name, status)},{_label('error', error)}"
                counter = families.backend_statuses.get(key, status_labels)
            counter.value += 1

    # -- TLS and TCP -----------------------------------------------------------------

    def tls_open(self, route_labels: Mapping[str, str], *, hostname: str) -> None:
        """A TLS connection (SNI ``hostname``) was routed; every connection that is later
        closed -- denied ones included -- is opened first (transport.rs ``inc_open``)."""
        with self._lock:
            self._tls_target(route_labels, hostname)[0].value += 1

    def tls_close(self, route_labels: Mapping[str, str], *, hostname: str, error: str) -> None:
        """A TLS connection ended; ``error`` is one of :data:`TRANSPORT_ERRORS`."""
        index = _transport_error(error)
        with self._lock:
            self._tls_target(route_labels, hostname)[1][index].value += 1

    def tcp_open(
        self, route_labels: Mapping[str, str], *, target_ip: str, target_port: int
    ) -> None:
        """An opaque TCP connection to ``target_ip:target_port`` was routed."""
        with self._lock:
            self._tcp_target(route_labels, target_ip, target_port)[0].value += 1

    def tcp_close(
        self,
        route_labels: Mapping[str, str],
        *,
        target_ip: str,
        target_port: int,
        error: str,
    ) -> None:
        """An opaque TCP connection ended; ``error`` is one of :data:`TRANSPORT_ERRORS`."""
        index = _transport_error(error)
        with self._lock:
            self._tcp_target(route_labels, target_ip, target_port)[1][index].value += 1

    def _tls_target(
        self, route_labels: Mapping[str, str], hostname: str
    ) -> tuple[_Counter, list[_Counter]]:
        route_key, route_text = self._route(route_labels)
        host_text = self._host(hostname)
        key = (route_key, host_text)
        target = self._tls.targets.get(key)
        if target is None:
            target = self._tls.target(key, f"{route_text},{host_text}")
        return target

    def _tcp_target(
        self, route_labels: Mapping[str, str], target_ip: str, target_port: int
    ) -> tuple[_Counter, list[_Counter]]:
        route_key, route_text = self._route(route_labels)
        key = (route_key, target_ip, target_port)
        target = self._tcp.targets.get(key)
        if target is None:
            if not isinstance(target_ip, str):
                raise TypeError(f"target_ip: expected a str, found {target_ip!r}")
            if isinstance(target_port, bool) or not isinstance(target_port, int):
                raise TypeError(f"target_port: expected an int, found {target_port!r}")
            ip = _label("target_ip", target_ip)
            target = self._tcp.target(key, f'{route_text},{ip},target_port="{target_port}"')
        return target

    # -- exposition ------------------------------------------------------------------

    def render(self) -> str:
        """The proxy's ``/metrics`` text for these families, ending with ``# EOF``.

        Every family's HELP/TYPE lines are printed even before it has series (the crate
        encodes every registered family). Series appear in creation order; Linkerd's
        order is a hash map's and therefore arbitrary, so compare series, not lines.
        """
        out: list[str] = []
        with self._lock:
            self._http.render(out)
            self._grpc.render(out)
            self._tls.render(out)
            self._tcp.render(out)
        out.append("# EOF")
        return "\n".join(out) + "\n"


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
