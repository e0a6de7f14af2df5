"""Refuse what a real API server refuses for a custom resource, from the pinned CRDs alone.

Job: :func:`validate` takes one object (a mapping as written in YAML) of a kind the pinned
CRDs in ``egresskit/crds`` define, and returns a :class:`FieldError` (field path, expected,
found) for everything the API server would refuse, the way kubectl-validate does it: the CRD
is the source of truth, no schema rule is re-coded by hand. In the API server's order
(apiextensions-apiserver, "Extend the Kubernetes API with CustomResourceDefinitions"):

1. the version must be one the CRD serves (otherwise ``no matches for kind``);
2. strict decoding: an unknown field is refused, naming the nearest known one
   (``kubectl apply --validate=strict``, the default; :mod:`.structural`);
3. pruning and defaulting (:mod:`.structural`);
4. the ``openAPIV3Schema`` of the served version: types, enums, required, bounds, patterns,
   formats (``jsonschema``), unique list-map keys and set items;
5. the CEL rules ``x-kubernetes-validations`` (:mod:`.cel_rules`).

Kinds without a pinned CRD (Namespace, Pod, Service, Deployment) get ``[]`` from
:func:`validate`; :func:`validate_envelope` checks their top level and metadata strictly, and
:mod:`egresskit.manifests.core_kinds` their specs. Linkerd's admission-webhook rules are not
CRD rules and stay as code in the route and EgressNetwork parsers. The kube backend's fake
API server can call this same function, so both backends admit exactly the same objects.

Speed: one compiled ``jsonschema`` validator per CRD version and one compiled CEL program
per rule, kept for the process; verdicts remembered per document and per CEL node
(``make bench`` measures what an apply pays: ``benchmarks/bench_validation.py``).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from typing import Any

import jsonschema

from egresskit.manifests import cel_rules, structural
from egresskit.manifests.crds import Crd, find_crd
from egresskit.manifests.field_errors import FORMATS, FieldError, Path, field_error, render

__all__ = ["FieldError", "as_stored", "validate", "validate_envelope"]


def validate(obj: Mapping[str, Any]) -> list[FieldError]:
    """Everything the API server (with the pinned CRDs) refuses in ``obj``; [] if admitted.

    ``obj`` is one manifest as a mapping with ``apiVersion`` and ``kind``. Objects of kinds
    no pinned CRD defines, and objects without a string apiVersion and kind, give [].
    """
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    if not isinstance(api_version, str) or not isinstance(kind, str):
        return []
    crd = find_crd(api_version, kind)
    if crd is None:
        return []
    version = api_version.rpartition("/")[2]
    if version not in crd.schemas:
        return [_unserved(crd, api_version)]
    # The local backend reads each applied document twice, and notebooks re-apply the same
    # YAML: a document seen before costs one JSON dump (the errors are frozen values).
    key = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    seen = _SEEN.get(key)
    if seen is None:
        seen = tuple(_validate(obj, crd, version))
        if len(_SEEN) >= _SEEN_MAX:
            _SEEN.clear()
        _SEEN[key] = seen
    return list(seen)


def as_stored(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    """``obj`` as the API server stores it: pruned, with the CRD's defaults filled in.

    Call it on an admitted object (:func:`validate` gave []); objects of a kind without a
    pinned CRD are returned as they are.
    """
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    if not isinstance(api_version, str) or not isinstance(kind, str):
        return obj
    crd = find_crd(api_version, kind)
    schema = crd.schemas.get(api_version.rpartition("/")[2]) if crd is not None else None
    if schema is None:
        return obj
    stored: Mapping[str, Any] = structural.pruned_with_defaults(obj, schema)
    return stored


#: The top level of the core kinds (Namespace, Pod, Service, Deployment), in their OpenAPI.
_CORE_TOP: dict[str, Any] = {"properties": {"spec": {}, "status": {}}}


def validate_envelope(obj: Mapping[str, Any]) -> list[FieldError]:
    """For a kind without a pinned CRD: unknown fields at the top level and in ``metadata``.

    Strict decoding refuses them in every kind (``metadata.annotation`` for
    ``annotations`` would silently drop the guide's hostname-labels annotation). Inside a
    core kind's ``spec`` unknown fields are not found: egresskit carries no OpenAPI for the
    core API. Objects of a CRD kind give [] (:func:`validate` covers them).
    """
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    if isinstance(api_version, str) and isinstance(kind, str) and find_crd(api_version, kind):
        return []
    label = kind if isinstance(kind, str) else "object"
    return [
        _unknown(u, f"a field a {label} has") for u in structural.unknown_fields(obj, _CORE_TOP)
    ]


def _unknown(u: structural.UnknownField, known: str) -> FieldError:
    where = render(u.path)
    return FieldError(path=where, expected=known + _did_you_mean(u.nearest),
                      found=f'unknown field "{where}"')  # fmt: skip


_SEEN: dict[str, tuple[FieldError, ...]] = {}
_SEEN_MAX = 10_000


def _validate(obj: Mapping[str, Any], crd: Crd, version: str) -> list[FieldError]:
    schema = crd.schemas[version]
    found: list[tuple[Path, int, FieldError]] = [
        (u.path, 0, _unknown(u, f"a field the {crd.kind} CRD knows"))
        for u in structural.unknown_fields(obj, schema)
    ]
    stored = structural.pruned_with_defaults(obj, schema)
    bad: set[Path] = set()
    for error in _validator(crd.group, crd.kind, version).iter_errors(stored):
        path, field = field_error(error)
        found.append((path, _PRIORITY.get(str(error.validator), 9), field))
        bad.add(tuple(error.absolute_path))
    for path in structural.duplicate_items(stored, schema):
        bad.add(path)
        found.append((path, 10, FieldError(path=render(path), expected="a unique item",
                                           found="a duplicate of an earlier item")))  # fmt: skip
    for broken in cel_rules.check(stored, schema, skip=frozenset(bad)):
        text = _json(broken.value)
        if broken.error is not None:
            text += f" (the rule could not be evaluated: {broken.error})"
        found.append(
            (
                broken.path,
                _CEL,
                FieldError(
                    path=render(broken.path), expected=f"{broken.message} (CRD rule)", found=text
                ),
            )
        )
    return _in_document_order(obj, found)


#: Sort order of problems at one field: unknown 0, required 1, type 2, other schema
#: keywords 9, duplicates 10, CEL rules 11 (_CEL).
_PRIORITY = {"required": 1, "type": 2}
_CEL = 11


def _in_document_order(obj: Any, found: list[tuple[Path, int, FieldError]]) -> list[FieldError]:
    """Sort by where each field is written in ``obj`` (defaulted fields after their parent)."""
    positions: dict[Path, int] = {}

    def walk(value: Any, path: Path) -> None:
        positions[path] = len(positions)
        if isinstance(value, Mapping):
            for k, v in value.items():
                walk(v, (*path, str(k)))
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(v, (*path, i))

    walk(obj, ())

    def position(path: Path) -> tuple[int, int]:
        for cut in range(len(path), -1, -1):
            if path[:cut] in positions:
                return positions[path[:cut]], len(path) - cut
        return (0, 0)

    out: list[FieldError] = []
    paths: set[str] = set()
    for _, category, field in sorted(found, key=lambda f: (position(f[0]), f[1])):
        # One schema problem per field (a wrong type hides the enum it also breaks);
        # every broken CEL rule is kept: each says something different about the node.
        if category < _CEL and field.path in paths:
            continue
        paths.add(field.path)
        out.append(field)
    return out


def _did_you_mean(nearest: str | None) -> str:
    return f' (did you mean "{nearest}"?)' if nearest else ""


def _unserved(crd: Crd, api_version: str) -> FieldError:
    served = ", ".join(f"{crd.group}/{v}" for v in crd.served)
    # kubectl's words for a version no CRD serves (its REST mapping fails before sending).
    return FieldError(
        path="apiVersion",
        expected=f"a version the {crd.kind} CRD serves: {served}",
        found=f'"{api_version}" (no matches for kind "{crd.kind}" in version "{api_version}")',
    )


def _json(value: Any) -> str:
    text = json.dumps(value, separators=(", ", ": "), sort_keys=True, default=str)
    return text if len(text) <= 120 else text[:117] + "..."


@functools.cache
def _validator(group: str, kind: str, version: str) -> jsonschema.protocols.Validator:
    crd = find_crd(f"{group}/{version}", kind)
    assert crd is not None
    # Kubernetes' structural schemas are an OpenAPI v3.0 subset, Draft 4 in JSON Schema terms.
    return jsonschema.Draft4Validator(crd.schemas[version], format_checker=FORMATS)
