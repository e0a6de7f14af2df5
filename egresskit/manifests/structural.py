"""What the API server does to a custom resource before it validates it: strict decoding,
pruning and defaulting against the CRD's structural schema.

Job: three pure walks over (value, ``openAPIV3Schema``):

- :func:`unknown_fields`: every field the schema does not know, with the nearest known
  field. ``kubectl apply`` asks for ``fieldValidation=Strict`` (its default ``--validate=strict``
  since Kubernetes 1.27), and the API server then refuses the object with ``strict decoding
  error: unknown field "spec.hostname"``. Without Strict the server *prunes* unknown fields
  silently (apiextensions "Pruning versus preserving unknown fields"); egresskit refuses, so a
  typo never passes unnoticed.
- :func:`pruned_with_defaults`: the object as the server stores it: unknown fields dropped,
  ``null`` fields dropped (the server prunes nulls of non-nullable fields before defaulting;
  none of the pinned CRDs has a nullable field), then every ``default`` of the schema filled
  in top-down (apiextensions "Defaulting": defaults apply when the field is absent, and the
  defaulted value is walked too).
- :func:`duplicate_items`: ``x-kubernetes-list-type: set`` items and ``map`` keys must be
  unique (apiextensions "Listtype"): the server answers ``Duplicate value``.

Rules: no I/O; values are plain JSON (dict, list, str, int, float, bool); a schema node
without ``properties`` (such as ``metadata: {type: object}``) is not walked into, except
``metadata`` itself, checked against ObjectMeta's fields (the server decodes it as one).
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

#: Every field of ObjectMeta (k8s.io/apimachinery/pkg/apis/meta/v1/types.go), which the API
#: server decodes strictly like the rest of the object.
OBJECT_META_FIELDS = (
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
)

Path = tuple[str | int, ...]

#: Always known at the root, whatever the schema says: the API server reads them itself
#: (apiextensions "Pruning": apiVersion, kind and metadata at the root are never pruned).
_ROOT = {"apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {}}


def _props(schema: Mapping[str, Any], path: Path) -> Mapping[str, Any] | None:
    if path == ():
        return {**_ROOT, **(schema.get("properties") or {})}
    if path == ("metadata",):
        return {key: {} for key in OBJECT_META_FIELDS}
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return None
    props: Mapping[str, Any] | None = schema.get("properties")
    return props


@dataclass(frozen=True, kw_only=True)
class UnknownField:
    path: Path
    #: The nearest field the schema knows at that place, if any is close.
    nearest: str | None


def nearest(name: str, known: list[str]) -> str | None:
    """The known field ``name`` most likely meant (``hostname`` -> ``hostnames``)."""
    lowered = {k.lower(): k for k in known}
    if name.lower() in lowered:
        return lowered[name.lower()]
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return close[0] if close else None


def unknown_fields(value: Any, schema: Mapping[str, Any], path: Path = ()) -> list[UnknownField]:
    """Every field of ``value`` that ``schema`` does not declare, in document order."""
    return list(_unknown(value, schema, path))


def _unknown(value: Any, schema: Mapping[str, Any], path: Path) -> Iterator[UnknownField]:
    if isinstance(value, Mapping):
        props = _props(schema, path)
        if props is None:
            return
        for key, child in value.items():
            sub = props.get(key)
            if sub is None:
                yield UnknownField(path=(*path, str(key)), nearest=nearest(str(key), list(props)))
            elif child is not None:
                yield from _unknown(child, sub, (*path, str(key)))
    elif isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            yield from _unknown(item, schema["items"], (*path, i))


def pruned_with_defaults(value: Any, schema: Mapping[str, Any], path: Path = ()) -> Any:
    """A copy of ``value`` without unknown or null fields, with the schema's defaults."""
    if isinstance(value, Mapping):
        props = _props(schema, path) if path != ("metadata",) else None
        if props is None:
            return {k: copy.deepcopy(v) for k, v in value.items() if v is not None}
        out = {
            k: pruned_with_defaults(v, props[k], (*path, k))
            for k, v in value.items()
            if k in props and v is not None
        }
        for key, sub in props.items():
            if key not in out and "default" in sub:
                out[key] = pruned_with_defaults(copy.deepcopy(sub["default"]), sub, (*path, key))
        return out
    if isinstance(value, list):
        items = schema.get("items", {})
        return [pruned_with_defaults(v, items, (*path, i)) for i, v in enumerate(value)]
    return value


def duplicate_items(value: Any, schema: Mapping[str, Any], path: Path = ()) -> list[Path]:
    """Paths of list items that repeat an earlier item (set) or its key fields (map)."""
    out: list[Path] = []
    _duplicates(value, schema, path, out)
    return out


def _duplicates(value: Any, schema: Mapping[str, Any], path: Path, out: list[Path]) -> None:
    if isinstance(value, Mapping):
        props = schema.get("properties") or {}
        for key, child in value.items():
            if key in props:
                _duplicates(child, props[key], (*path, key), out)
    elif isinstance(value, list):
        items = schema.get("items", {})
        list_type = schema.get("x-kubernetes-list-type")
        keys: list[str] | None = schema.get("x-kubernetes-list-map-keys", [])
        if list_type not in ("set", "map"):
            keys = None
        seen: list[Any] = []
        for i, item in enumerate(value):
            if keys is not None:
                if list_type == "set":
                    ident: Any = item
                elif isinstance(item, Mapping):
                    # A missing key field counts with its default (apiextensions "Listtype").
                    props = items.get("properties", {})
                    ident = [item.get(k, props.get(k, {}).get("default")) for k in keys]
                else:
                    ident = [object()]  # not a mapping: a schema error, never a duplicate
                if ident in seen:
                    out.append((*path, i))
                seen.append(ident)
            _duplicates(item, items, (*path, i), out)
