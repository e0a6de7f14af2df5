"""One proxy's route metrics, rendered exactly as Linkerd's proxy prints them.

Job: count what the local egress proxy does (requests, backend dispatches, TLS and TCP
connections) in Linkerd's ``outbound_*_route_*`` families, and render the admin
``/metrics`` text byte for byte the way ``linkerd2-proxy`` does, so a DataFrame built from
the local mesh lines up column for column with one scraped from a kind cluster.

This module is the recording API, :class:`ProxyMetrics`. Its parts live beside it and
their public names are re-exported here, so import them from this module:

* ``metrics_families`` -- the families, label keys and label values of docs/facts/linkerd-egress.md
  linkerd-egress.md section 6.2, and the checks on recorded values;
* ``metrics_text`` -- counter and histogram series and their text format (section 6.3,
  the Rust ``prometheus-client`` crate's encoder).

Rules:

* One :class:`ProxyMetrics` per proxy; there is no global registry. :meth:`render` is a
  pure function of the recorded values (prometheus/client_python's model).
* The text ends with ``# EOF``: Linkerd encodes its prometheus-client registry with
  ``encoding::text::encode`` (registry + EOF) and emits it last on purpose
  (``linkerd2-proxy:linkerd/app/src/lib.rs``: "The prom registry reports an "# EOF" at
  the end of its export, so it should be emitted last"; ``linkerd/metrics/src/lib.rs``
  ``impl FmtMetrics for prom::Report``).
* Recording sits on the proxy's hot path: label text is encoded once per distinct label
  set and cached; one lock per registry guards plain dicts and ints.
  :meth:`ProxyMetrics.count_exchange` runs once per proxied request and inlines its
  work on purpose.
"""

from __future__ import annotations

import math
import threading
from bisect import bisect_left
from collections.abc import Mapping

from egresskit.mesh.metrics_families import (
    _BACKEND_DURATION_BOUNDS,
    _ROUTE_DURATION_BOUNDS,
    BACKEND_LABEL_KEYS,
    GRPC_STATUS_NAMES,
    HOSTNAME_LABELS_ANNOTATION,
    HTTP_ERRORS,
    ROUTE_LABEL_KEYS,
    TRANSPORT_ERRORS,
    ExchangeSeries,
    _check_duration,
    _check_error,
    _grpc,
    _http,
    _is_ip_literal,
    _RouteFamilies,
    _transport_error,
    _TransportFamilies,
    hostname_labels_enabled,
)
from egresskit.mesh.metrics_text import _Counter, _encoded, _label, format_f64

__all__ = [
    "BACKEND_LABEL_KEYS",
    "GRPC_STATUS_NAMES",
    "HOSTNAME_LABELS_ANNOTATION",
    "HTTP_ERRORS",
    "ROUTE_LABEL_KEYS",
    "TRANSPORT_ERRORS",
    "ExchangeSeries",
    "ProxyMetrics",
    "format_f64",
    "hostname_labels_enabled",
]

_EXCHANGE_CACHE_SIZE = 4096


class ProxyMetrics:
    """The route metrics registry of one proxy; thread-safe.

    ``route_labels`` and ``backend_labels`` are the ordered dicts the policy engine
    produces (:data:`ROUTE_LABEL_KEYS`, :data:`BACKEND_LABEL_KEYS`); a wrong, missing or
    misplaced key raises ``ValueError``. ``hostname_labels=False`` (Linkerd 2.18+'s
    default) records ``hostname=""`` everywhere; hostnames that are IP literals are
    always recorded as "" (proxy PR #3258, docs/facts/linkerd-egress.md 6.2 -- not re-verified in
    code).
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
        if not 0 <= duration_s < math.inf:  # also False for NaN
            _check_duration(duration_s)
        key = (id(route_labels), id(backend_labels), hostname, http_status, error)
        with self._lock:
            # exchange_series and count_exchange under one lock (once per request).
            entry = self._exchanges.get(key)
            if (
                entry is None
                or entry.route_labels is not route_labels
                or entry.backend_labels is not backend_labels
            ):
                entry = self._new_exchange(route_labels, backend_labels, key)
                if len(self._exchanges) >= _EXCHANGE_CACHE_SIZE:
                    self._exchanges.clear()  # new policies make new dicts: stay bounded
                self._exchanges[key] = entry
            self._count_locked(entry, duration_s)

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
                entry = self._new_exchange(route_labels, backend_labels, key)
                if len(self._exchanges) >= _EXCHANGE_CACHE_SIZE:
                    self._exchanges.clear()  # new policies make new dicts: stay bounded
                self._exchanges[key] = entry
        return entry

    def count_exchange(self, entry: ExchangeSeries, duration_s: float) -> None:
        """Count one exchange of the kind ``entry`` stands for."""
        if not 0 <= duration_s < math.inf:  # also False for NaN
            _check_duration(duration_s)
        with self._lock:
            self._count_locked(entry, duration_s)

    @staticmethod
    def _count_locked(entry: ExchangeSeries, duration_s: float) -> None:
        """:meth:`count_exchange`'s work, lock held."""
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

    def _new_exchange(
        self,
        route_labels: Mapping[str, str],
        backend_labels: Mapping[str, str] | None,
        cache_key: tuple[int, int, str, int | None, str],
    ) -> ExchangeSeries:
        """The series one exchange touches (lock held): the very series, keys and label
        text the three separate calls use, so both APIs add up in one place. ``cache_key`` is
        :meth:`exchange_series`'s cache key: (ids of the label dicts, hostname, status,
        error)."""
        _, _, hostname, http_status, error = cache_key
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
