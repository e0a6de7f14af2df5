"""Turn one Kubernetes manifest (a mapping) into a frozen, defaulted model value.

Job: read the fields egresskit uses from Namespace, Pod, Service, Deployment, EgressNetwork
and the route kinds; fill in the defaults the API server would (CRD ``default`` values, the
core API's defaulting); reject what a real cluster would reject: for CRD kinds, everything
the pinned CRD's schema and CEL rules refuse (:mod:`~egresskit.manifests.crd_validation`,
run first, so the parsers see only admitted documents), and Linkerd's admission webhook
(docs/facts/linkerd-egress.md sections 1, 4.2 and 4.8). This module reads what every object
has (apiVersion, kind, metadata) and hands the rest to the parser for its (apiVersion, kind).

Rules:

- Collect every problem, not the first: a :class:`~egresskit.manifests.reader.Reader` walks
  the document, records a :class:`~egresskit.errors.Problem` (where, expected, found) for
  each bad field and carries on with what it can read, so one run shows the user everything
  to fix.
- A JSON ``null`` is the same as an absent field (as for the API server).
- For CRD kinds an unknown field is refused (strict field validation, as ``kubectl apply``
  asks for); in the core kinds, fields egresskit does not use are ignored.
- Filters and matches Linkerd cannot convert are not errors: the route records them in
  ``unsupported`` and the engine leaves the route out (gateway-api-matching.md D11, D12).
- No I/O here: PyYAML and files live in :mod:`egresskit.manifests.load`.

The parsers live in :mod:`~egresskit.manifests.core_kinds` (core kinds and EgressNetwork)
and :mod:`~egresskit.manifests.route_kinds` (with :mod:`~egresskit.manifests.route_parts`
and :mod:`~egresskit.manifests.route_schema`); the reader and its message helpers in
:mod:`~egresskit.manifests.reader`.
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Mapping
from typing import Any

from egresskit.errors import ManifestError, Problem
from egresskit.manifests import crd_validation
from egresskit.manifests.core_kinds import CORE_PARSERS
from egresskit.manifests.model import K8sObject, ObjectMeta, Source
from egresskit.manifests.reader import (
    DNS_LABEL,
    DNS_LABEL_TEXT,
    DNS_SUBDOMAIN,
    DNS_SUBDOMAIN_TEXT,
    Parser,
    Reader,
    show,
)
from egresskit.manifests.route_kinds import ROUTE_PARSERS

__all__ = [
    "PARSERS",
    "parse_object",
    "plain",
    "read_object",
    "show",
    "supported_kinds",
]


# ------------------------------------------------------------------- entry points


def parse_object(doc: Any, *, source: Source, default_namespace: str) -> K8sObject:
    """Parse one manifest; raise :class:`ManifestError` listing every problem in it."""
    obj, problems = read_object(doc, source=source, default_namespace=default_namespace)
    if problems or obj is None:
        raise ManifestError(problems)
    return obj


def read_object(
    doc: Any, *, source: Source, default_namespace: str, prefix: str = ""
) -> tuple[K8sObject | None, list[Problem]]:
    """Parse one manifest, returning the object (None if any problem) and its problems.

    ``prefix`` locates the document inside a ``kind: List`` (``items[2]``).
    """
    r = Reader(source=source, prefix=prefix)
    if not isinstance(doc, Mapping):
        r.problem("", "a mapping with apiVersion, kind and metadata", show(doc))
        return None, r.problems
    doc = plain(doc)
    r.obj = _label(doc, default_namespace)
    api_version = r.get_str(doc, "", "apiVersion", required=True)
    kind = r.get_str(doc, "", "kind", required=True)
    meta = r.get_map(doc, "", "metadata", required=True)
    # The CRD's own schema and CEL rules, as the API server applies them (crd_validation).
    crd_errors = crd_validation.validate(doc)
    unserved = any(e.path == "apiVersion" for e in crd_errors)
    parser = None if unserved else _resolve(r, api_version, kind)
    name_pattern = DNS_LABEL if kind in ("Namespace", "Service") else DNS_SUBDOMAIN
    # Without metadata the one problem is "metadata"; no second one about its name.
    name = None
    if meta is not None:
        name = r.get_str(
            meta,
            "metadata",
            "name",
            required=True,
            pattern=name_pattern,
            pattern_text=DNS_LABEL_TEXT if name_pattern is DNS_LABEL else DNS_SUBDOMAIN_TEXT,
            max_len=63 if name_pattern is DNS_LABEL else 253,
        )
    meta = meta or {}
    namespace: str | None = None
    if kind != "Namespace":  # the only cluster-scoped kind egresskit reads
        given = r.get_str(
            meta, "metadata", "namespace", pattern=DNS_LABEL, pattern_text=DNS_LABEL_TEXT
        )
        namespace = given or default_namespace
    metadata = ObjectMeta(
        name=name or "",
        namespace=namespace,
        creation_timestamp=_timestamp(r, meta),
        labels=r.str_map(meta, "metadata", "labels"),
        annotations=r.str_map(meta, "metadata", "annotations"),
    )
    for error in crd_errors:
        r.problem(error.path, error.expected, error.found)
    if parser is None or api_version is None or kind is None or crd_errors:
        return None, r.problems
    # Core kinds: strict decoding of the top level and metadata (crd_validation, ibid).
    for error in crd_validation.validate_envelope(doc):
        r.problem(error.path, error.expected, error.found)
    common: dict[str, Any] = {
        "api_version": api_version,
        "kind": kind,
        "metadata": metadata,
        "source": source,
        "raw": doc,
    }
    # The parsers read the object as the API server stores it: the CRD's defaults filled in
    # (so no default is re-coded by hand); ``raw`` keeps what the user wrote.
    obj = parser(r, dict(crd_validation.as_stored(doc)), common)
    return (None if r.problems else obj), r.problems


def _label(doc: Mapping[str, Any], default_namespace: str) -> str | None:
    """``HTTPRoute egress-test/httpbin-get`` for messages, read leniently before validation."""
    kind = doc.get("kind")
    if not isinstance(kind, str) or not kind:
        return None
    meta = doc.get("metadata")
    meta = meta if isinstance(meta, Mapping) else {}
    name, namespace = meta.get("name"), meta.get("namespace")
    if not isinstance(name, str) or not name:
        return kind
    if kind == "Namespace":
        return f"{kind} {name}"
    namespace = namespace if isinstance(namespace, str) and namespace else default_namespace
    return f"{kind} {namespace}/{name}"


def plain(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy with YAML timestamps turned back into RFC 3339 strings (JSON-safe)."""

    def walk(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [walk(v) for v in value]
        if isinstance(value, dt.datetime):
            if value.tzinfo is None:
                value = value.replace(tzinfo=dt.UTC)
            return value.isoformat().replace("+00:00", "Z")
        if isinstance(value, dt.date):
            return value.isoformat()
        return copy.copy(value)

    out: dict[str, Any] = walk(doc)
    return out


def _timestamp(r: Reader, meta: Mapping[str, Any]) -> str | None:
    value = r.get_str(meta, "metadata", "creationTimestamp")
    if value is None:
        return None
    try:
        dt.datetime.fromisoformat(value)
    except ValueError:
        r.problem("metadata.creationTimestamp", "an RFC 3339 timestamp", show(value))
        return None
    return value


# ------------------------------------------------------------------- kind table


def _resolve(r: Reader, api_version: str | None, kind: str | None) -> Parser | None:
    table = PARSERS
    if api_version is None or kind is None:
        return None
    parser = table.get((api_version, kind))
    if parser is not None:
        return parser
    versions = [v for v, k in table if k == kind]
    if versions:
        r.problem("apiVersion", f"one of {', '.join(versions)} for kind {kind}", show(api_version))
    else:
        kinds = ", ".join(dict.fromkeys(k for _, k in table))
        r.problem("kind", f"one of {kinds}", show(kind))
    return None


def supported_kinds() -> list[tuple[str, str]]:
    """Every (apiVersion, kind) pair the loader accepts."""
    return list(PARSERS)


#: Every (apiVersion, kind) the loader reads (linkerd-egress.md 4.1; the brief's list).
PARSERS: dict[tuple[str, str], Parser] = {
    **CORE_PARSERS,
    **ROUTE_PARSERS,
}
