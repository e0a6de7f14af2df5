"""The CRDs' CEL rules (``x-kubernetes-validations``), evaluated as the API server does.

Job: find every rule in a schema, evaluate it with ``self`` bound to the node it sits on,
and report the ones that do not hold. The CEL implementation is ``common-expression-language``
(PyPI; Python bindings of the Rust cel-interpreter): it compiles and evaluates every rule of
the pinned CRDs, including the ``r\"\"\"...\"\"\"`` raw strings, ``matches`` (RE2-style regex),
``duration()``, ``exists_one``, ``all``, ``filter`` and ``size``, about ten times faster than
``cel-python``. ``tests/test_crd_schemas.py`` checks that every rule of the pinned CRDs
compiles and calls only functions known here, so a new CRD needing a Kubernetes CEL library
(``isURL``, ``quantity``, the string extension library) fails a test instead of a user.

Rules (Kubernetes docs, "Validation rules" in "Extend the Kubernetes API with
CustomResourceDefinitions"; k8s.io/apiserver/pkg/cel):

- ``self`` is the node's value after pruning and defaulting; rules run only where the node
  is present. Rules with ``oldSelf`` (transition rules) run only on update: none of the
  pinned CRDs has one, so they are skipped here (a test keeps it that way).
- Property names that are CEL keywords, or hold ``__ . - /``, are escaped as the API server
  escapes them (k8s.io/apiserver/pkg/cel/common/escaping.go): ``namespace`` is
  ``__namespace__`` in a rule, ``a.b`` is ``a__dot__b``.
- Compiled programs are cached per rule text for the life of the process, and the verdicts
  per (schema node, node value), so a node seen before costs one JSON dump.
- A rule that fails to evaluate (a missing field reached without ``has()``) is refused, as
  the API server refuses it, with the evaluation error as the reason.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import cel

#: CEL keywords and reserved words the API server escapes as ``__word__`` (escaping.go).
_RESERVED = frozenset(
    {"true", "false", "null", "in", "as", "break", "const", "continue", "else", "for"}
    | {"function", "if", "import", "let", "loop", "package", "namespace", "return", "var"}
    | {"void", "while"}
)

#: Standard CEL functions the rules of the pinned CRDs call, all built into the library
#: (macros such as ``has``, ``all``, ``exists_one`` and ``filter`` are not functions).
#: Kubernetes' own CEL libraries (``isURL``, ``url()``, ``quantity()``, ``lowerAscii()``...)
#: would need registering: no pinned rule uses them, and a test keeps it that way.
KNOWN_FUNCTIONS = frozenset(
    {"size", "contains", "startsWith", "endsWith", "matches", "duration", "timestamp"}
)


def escape(name: str) -> str:
    """A property name as a CEL rule spells it (``namespace`` -> ``__namespace__``)."""
    if name in _RESERVED:
        return f"__{name}__"
    out = name.replace("__", "__underscores__")
    return out.replace(".", "__dot__").replace("-", "__dash__").replace("/", "__slash__")


@functools.lru_cache(maxsize=1024)
def program(rule: str) -> cel.Program:
    """The compiled rule (cached: the CRDs' rules are a fixed set of texts)."""
    return cel.compile(rule)


@dataclass(frozen=True, kw_only=True)
class Broken:
    """A rule that does not hold (or could not be evaluated) at ``path``."""

    path: tuple[str | int, ...]
    rule: str
    message: str
    #: The evaluation error, when the rule could not be evaluated at all.
    error: str | None
    value: Any


def rules_in(schema: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every ``x-kubernetes-validations`` entry anywhere in ``schema``."""
    yield from schema.get("x-kubernetes-validations", ())
    for sub in (schema.get("properties") or {}).values():
        yield from rules_in(sub)
    if "items" in schema:
        yield from rules_in(schema["items"])


def check(
    value: Any,
    schema: Mapping[str, Any],
    path: tuple[str | int, ...] = (),
    *,
    skip: frozenset[tuple[str | int, ...]] = frozenset(),
) -> list[Broken]:
    """Every rule in ``schema`` that does not hold for ``value`` (pruned and defaulted).

    Nodes at, under or above a path in ``skip`` (where the schema already found a problem)
    are not checked, so one mistake is reported once, in the schema's words.
    """
    out: list[Broken] = []
    _walk(value, schema, path, skip, out)
    return out


def _walk(
    value: Any,
    schema: Mapping[str, Any],
    path: tuple[str | int, ...],
    skip: frozenset[tuple[str | int, ...]],
    out: list[Broken],
) -> None:
    # A node at or under a bad field is not checked, nor are the rules of a node holding
    # one (its children still are): they would only repeat the problem in other words.
    if any(path[: len(s)] == s for s in skip):
        return
    if isinstance(value, Mapping):
        props = schema.get("properties") or {}
        for key, child in value.items():
            if key in props:
                _walk(child, props[key], (*path, key), skip, out)
    elif isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            _walk(item, schema["items"], (*path, i), skip, out)
    rules = schema.get("x-kubernetes-validations")
    if not rules or any(s[: len(path)] == path for s in skip):
        return
    for rule, message, error in _verdicts(rules, cel_view(value, schema)):
        out.append(Broken(path=path, rule=rule, message=message, error=error, value=value))


#: (id of a schema node's rule list, the node as canonical JSON) -> its broken rules. The
#: schemas live as long as the process (crds.crd_index), so their ids are stable keys;
#: manifests repeat nodes (parentRefs, path matches), and a re-applied file repeats all.
_MEMO: dict[tuple[int, str], tuple[tuple[str, str, str | None], ...]] = {}
_MEMO_MAX = 50_000


def _verdicts(rules: list[dict[str, Any]], view: Any) -> tuple[tuple[str, str, str | None], ...]:
    """(rule, message, evaluation error or None) of each rule that does not hold."""
    key = (id(rules), json.dumps(view, sort_keys=True, separators=(",", ":"), default=str))
    hit = _MEMO.get(key)
    if hit is not None:
        return hit
    broken: list[tuple[str, str, str | None]] = []
    # One context per node: the library converts ``self`` to CEL once, not once per rule.
    context = cel.Context()
    context.add_variable("self", view)
    for entry in rules:
        rule = entry["rule"]
        if "oldSelf" in rule:
            continue  # a transition rule: only on update (see the module docstring)
        message = entry.get("message") or f"failed rule: {rule}"
        try:
            held = program(rule).execute(context)
        except (RuntimeError, ValueError, KeyError, TypeError) as exc:
            broken.append((rule, message, str(exc)))
            continue
        if held is not True:
            broken.append((rule, message, None))
    if len(_MEMO) >= _MEMO_MAX:
        _MEMO.clear()
    result = _MEMO[key] = tuple(broken)
    return result


def cel_view(value: Any, schema: Mapping[str, Any]) -> Any:
    """``value`` with property names escaped for CEL (maps without properties kept as is)."""
    if isinstance(value, Mapping):
        props = schema.get("properties")
        if props is None:
            return dict(value)
        return {escape(k): cel_view(v, props.get(k, {})) for k, v in value.items()}
    if isinstance(value, list):
        items = schema.get("items", {})
        return [cel_view(v, items) for v in value]
    return value
