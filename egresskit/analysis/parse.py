"""Turn ``linkerd diagnostics proxy-metrics`` output into rows and a pandas DataFrame.

Job: read what ``linkerd dg proxy-metrics -n NS po/POD`` prints -- or one proxy's raw
``/metrics`` text, from kind or from the local mesh's :meth:`ProxyMetrics.render` -- into
samples, then into one long-form DataFrame whose columns line up whatever the source.

Rules:

* Input layout (docs/facts/linkerd-egress.md 6.1/6.3; ``linkerd2:cli/cmd/metrics.go``):
  for each pod, ``#`` / ``# POD <name> (<i> of <n>)`` / ``#`` then that pod's text; a pod
  that failed is a ``# ERROR <message>`` line (newer CLIs print ``# ERROR: <message>``)
  and the command still exits 0. Text without any ``# POD`` header is one pod's text.
* Parsing is ``prometheus_client.parser.text_string_to_metric_families`` (the classic
  text format) and nothing else: its OpenMetrics parser rejects Linkerd's mix of legacy
  families typed WITH ``_total`` and prometheus-client-crate families typed without.
* The classic parser returns a new-style counter as a typed family with no samples and
  puts each ``..._total`` sample in an ``unknown`` family of its own (spec 6.3). We walk
  every sample and give it the type of the typed family it belongs to by name.
* Errors never vanish: every ``# ERROR`` line and every pod whose text does not parse
  becomes a :class:`ScrapeError` in :attr:`ParsedScrape.errors`.
* Pure: no I/O; the only clock read is the default ``scraped_at``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import pandas as pd
from prometheus_client.parser import text_string_to_metric_families

from egresskit.errors import BackendError
from egresskit.mesh.metrics import BACKEND_LABEL_KEYS, ROUTE_LABEL_KEYS

__all__ = [
    "LABEL_COLUMN_ORDER",
    "ParsedScrape",
    "Sample",
    "ScrapeError",
    "parse_proxy_metrics",
    "to_frame",
]

#: Known labels come first, in Linkerd's emitted order (spec 6.2), so frames from any
#: source line up; other labels follow in alphabetical order.
LABEL_COLUMN_ORDER: tuple[str, ...] = (
    *ROUTE_LABEL_KEYS,
    *BACKEND_LABEL_KEYS,
    "hostname",
    "target_ip",
    "target_port",
    "http_status",
    "grpc_status",
    "error",
    "le",
)
_FIXED_COLUMNS = ("scraped_at", "pod", "metric", "value")

_POD_HEADER = re.compile(r"^# POD (?P<pod>\S+) \((?P<index>\d+) of (?P<total>\d+)\)\s*$")
_ERROR_LINE = re.compile(r"^# ERROR(?::\s*|\s+)(?P<message>.*)$")

# Sample-name suffixes a typed family owns, by type (OpenMetrics naming).
_SUFFIXES: dict[str, tuple[str, ...]] = {
    "counter": ("_total", "_created"),
    "info": ("_info",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
    "summary": ("_sum", "_count", "_created"),
}


@dataclass(frozen=True, kw_only=True)
class Sample:
    """One sample line: ``metric`` is the sample name, ``family`` its family's name."""

    pod: str
    metric: str
    family: str
    type: str
    #: (name, value) pairs in the order the proxy printed them, values unescaped.
    labels: tuple[tuple[str, str], ...]
    value: float


@dataclass(frozen=True, kw_only=True)
class ScrapeError:
    """A pod the scrape could not read: a ``# ERROR`` line, or text that does not parse."""

    pod: str | None
    message: str
    #: 1-based line of the input where the problem was reported or the pod's text starts.
    line: int

    def __str__(self) -> str:
        who = f"pod {self.pod}" if self.pod is not None else "scrape"
        return f"line {self.line}: {who}: {self.message}"


@dataclass(frozen=True, kw_only=True)
class ParsedScrape:
    """Everything one ``proxy-metrics`` run returned."""

    scraped_at: datetime
    samples: tuple[Sample, ...]
    errors: tuple[ScrapeError, ...]
    #: Pods named by ``# POD`` headers, in order (failed ones included).
    pods: tuple[str, ...]

    def rows(self) -> list[dict[str, object]]:
        """One dict per sample: pod, metric, family, type, every label, value."""
        rows: list[dict[str, object]] = []
        for s in self.samples:
            row: dict[str, object] = {
                "pod": s.pod,
                "metric": s.metric,
                "family": s.family,
                "type": s.type,
            }
            row.update(s.labels)
            row["value"] = s.value
            rows.append(row)
        return rows

    def raise_for_errors(self) -> None:
        """Raise :class:`BackendError` listing every error, if there is any."""
        if self.errors:
            lines = "\n".join(f"  - {e}" for e in self.errors)
            raise BackendError(f"proxy-metrics reported {len(self.errors)} error(s):\n{lines}")


def parse_proxy_metrics(
    text: str, *, scraped_at: datetime | None = None, pod: str | None = None
) -> ParsedScrape:
    """Parse ``linkerd dg proxy-metrics`` output (or one proxy's raw ``/metrics`` text).

    ``pod`` names the pod for text before any ``# POD`` header (raw text); samples with no
    pod at all get ``""``. ``scraped_at`` must be timezone-aware (it is converted to UTC);
    by default it is now.
    """
    if scraped_at is None:
        scraped_at = datetime.now(UTC)
    elif scraped_at.tzinfo is None or scraped_at.utcoffset() is None:
        raise ValueError(
            f"scraped_at: expected a timezone-aware datetime, found naive {scraped_at.isoformat()}"
        )
    else:
        scraped_at = scraped_at.astimezone(UTC)

    samples: list[Sample] = []
    errors: list[ScrapeError] = []
    pods: list[str] = []
    for section in _sections(text.replace("\r\n", "\n"), pod):
        if section.pod is not None and section.from_header:
            pods.append(section.pod)
        errors.extend(section.errors)
        body = "\n".join(section.lines)
        if not any(line.strip() and not line.startswith("#") for line in section.lines):
            continue  # only comments (or nothing): no samples, nothing to parse
        try:
            samples.extend(_samples(body, section.pod or ""))
        except ValueError as exc:
            where = f"lines {section.first_line}-{section.first_line + len(section.lines) - 1}"
            errors.append(
                ScrapeError(
                    pod=section.pod,
                    message=f"cannot parse the exposition text ({where}): {exc}",
                    line=section.first_line,
                )
            )
    errors.sort(key=lambda e: e.line)
    return ParsedScrape(
        scraped_at=scraped_at, samples=tuple(samples), errors=tuple(errors), pods=tuple(pods)
    )


def to_frame(scrapes: ParsedScrape | Iterable[ParsedScrape]) -> pd.DataFrame:
    """Long-form DataFrame: ``scraped_at`` (UTC), ``pod``, ``metric``, one column per label
    (missing -> ""), ``value`` (float).

    Label columns follow :data:`LABEL_COLUMN_ORDER`. A label whose name clashes with a
    fixed column (``pod``, ``metric``, ``value``, ``scraped_at``) becomes ``label_<name>``.
    """
    if isinstance(scrapes, ParsedScrape):
        scrapes = [scrapes]
    scrapes = list(scrapes)

    seen: dict[str, None] = {}
    for scrape in scrapes:
        for s in scrape.samples:
            for name, _ in s.labels:
                seen.setdefault(_column(name))
    known = [c for c in LABEL_COLUMN_ORDER if c in seen]
    label_columns = known + sorted(c for c in seen if c not in LABEL_COLUMN_ORDER)

    scraped_at: list[datetime] = []
    pod: list[str] = []
    metric: list[str] = []
    value: list[float] = []
    labels: dict[str, list[str]] = {c: [] for c in label_columns}
    for scrape in scrapes:
        for s in scrape.samples:
            scraped_at.append(scrape.scraped_at)
            pod.append(s.pod)
            metric.append(s.metric)
            value.append(s.value)
            present = {_column(k): v for k, v in s.labels}
            for column, values in labels.items():
                values.append(present.get(column, ""))

    data: dict[str, object] = {
        "scraped_at": pd.to_datetime(pd.Series(scraped_at, dtype=object), utc=True).astype(
            "datetime64[us, UTC]"
        ),
        "pod": pd.Series(pod, dtype="str"),
        "metric": pd.Series(metric, dtype="str"),
    }
    for column, values in labels.items():
        data[column] = pd.Series(values, dtype="str")
    data["value"] = pd.Series(value, dtype="float64")
    return pd.DataFrame(data, columns=["scraped_at", "pod", "metric", *label_columns, "value"])


# ----------------------------------------------------------------------------- internals


@dataclass
class _Section:
    pod: str | None
    from_header: bool
    first_line: int
    lines: list[str]
    errors: list[ScrapeError]


def _sections(text: str, default_pod: str | None) -> Iterator[_Section]:
    """Split the CLI output at ``# POD`` headers; pull out ``# ERROR`` lines."""
    current = _Section(pod=default_pod, from_header=False, first_line=1, lines=[], errors=[])
    for number, line in enumerate(text.split("\n"), start=1):
        header = _POD_HEADER.match(line)
        if header:
            yield current
            current = _Section(
                pod=header["pod"], from_header=True, first_line=number + 1, lines=[], errors=[]
            )
            continue
        error = _ERROR_LINE.match(line)
        if error:
            current.errors.append(
                ScrapeError(pod=current.pod, message=error["message"].strip(), line=number)
            )
            continue
        current.lines.append(line)
    yield current


def _column(label: str) -> str:
    return f"label_{label}" if label in _FIXED_COLUMNS else label


def _samples(body: str, pod: str) -> Iterator[Sample]:
    families = list(text_string_to_metric_families(body))
    typed = {f.name: f.type for f in families if f.type != "unknown"}
    for family in families:
        for sample in family.samples:
            name, kind = family.name, family.type
            if kind == "unknown":
                name, kind = _owner(sample.name, typed)
            yield Sample(
                pod=pod,
                metric=sample.name,
                family=name,
                type=kind,
                labels=tuple(sample.labels.items()),
                value=float(sample.value),
            )


def _owner(sample_name: str, typed: dict[str, str]) -> tuple[str, str]:
    """The typed family an orphaned sample belongs to, e.g. the ``counter`` family
    ``outbound_http_route_request_statuses`` for ``..._statuses_total`` (spec 6.3)."""
    for kind_suffixes in _SUFFIXES.values():
        for suffix in kind_suffixes:
            if sample_name.endswith(suffix):
                base = sample_name[: -len(suffix)]
                kind = typed.get(base)
                if kind is not None and suffix in _SUFFIXES.get(kind, ()):
                    return base, kind
    return sample_name, "unknown"
