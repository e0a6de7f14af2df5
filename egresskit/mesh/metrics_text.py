"""Prometheus text building blocks for :mod:`egresskit.mesh.metrics`: values, labels, families.

Job: hold counter and histogram series and print them in the text format Linkerd's admin
server prints, byte for byte: numbers, label text, and one family's HELP/TYPE/UNIT header
and samples. Nothing here knows Linkerd's family names; see ``metrics_families``.

Rules:

* The format follows docs/facts/linkerd-egress.md section 6.3 and the Rust
  ``prometheus-client`` crate's text encoder (``prometheus/client_rust@0575a56:
  src/encoding/text.rs``), which Linkerd's admin server uses for these families:

  - ``# HELP <family> <help>.`` (the crate appends the full stop: ``Descriptor::new`` /
    ``Metadata::new`` do ``help + "."``), ``# TYPE <family> <type>``, and for families
    registered with a unit ``# UNIT <family> <unit>``;
  - a counter family is typed without ``_total`` and its samples carry it; values are
    integers; no ``_created`` series;
  - a histogram prints ``_sum`` (float), ``_count`` (integer), then cumulative
    ``_bucket`` lines; the ``le`` label comes FIRST, before the family labels
    (``MetricEncoder::encode_labels`` writes "additional" labels before family labels),
    and bounds are printed by ``dtoa`` (``le="1.0"``, ``le="10.0"``). A real dump shows
    exactly this (``olix0r/schlep`` README, ``linkerd diagnostics proxy-metrics``).

* Label text is encoded once per distinct label set and cached by the caller; a wrong,
  missing or misplaced label key raises ``ValueError`` naming the expected order.
* Underscore names are private to the ``egresskit.mesh.metrics*`` modules; only
  :func:`format_f64` is public (and re-exported by :mod:`egresskit.mesh.metrics`).
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Mapping
from decimal import Decimal


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
