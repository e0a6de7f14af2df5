"""The problem-collecting field reader every kind parser is written against.

Job: read one field of a manifest (a mapping, list, string, integer) with its CRD
constraints, and on a bad field record a :class:`~egresskit.errors.Problem` (where, expected,
found) instead of raising, so the parsers carry on and one run shows every problem.

Rules:

- A JSON ``null`` is the same as an absent field (as for the API server).
- Every getter records its own problem and returns None; callers only decide what to build.
- Messages render found values with :func:`show` and paths with :func:`at`, so every
  problem in the package reads the same way.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from egresskit.errors import Problem
from egresskit.manifests.model import K8sObject, Source

#: RFC 1123 label and subdomain, as Kubernetes validates object names.
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS_LABEL_TEXT = "a lowercase RFC 1123 label (a-z, 0-9, '-'; at most 63 characters)"
DNS_SUBDOMAIN_TEXT = "a lowercase RFC 1123 name (a-z, 0-9, '-', '.'; at most 253 characters)"

_MISSING: Any = object()


def show(value: Any) -> str:
    """Render a found value for a message: scalars as JSON, containers by their shape."""
    if value is _MISSING or value is None:
        return "nothing"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return f"a list of {len(value)} item{'s' if len(value) != 1 else ''}"
    text = json.dumps(value, default=str)
    return text if len(text) <= 80 else text[:77] + '..."'


def at(path: str, key: str | int) -> str:
    """``spec`` + ``rules`` -> ``spec.rules``; ``spec.rules`` + 0 -> ``spec.rules[0]``."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


class Reader:
    """Collects problems for one document; every getter records its own and returns None."""

    def __init__(self, *, source: Source, prefix: str = "") -> None:
        self.source = source
        self.prefix = prefix
        self.obj: str | None = None
        self.problems: list[Problem] = []

    def problem(self, path: str, expected: str, found: str) -> None:
        full = f"{self.prefix}.{path}" if self.prefix and path else (self.prefix or path)
        self.problems.append(
            Problem(
                source=self.source.name,
                document=self.source.document,
                obj=self.obj,
                path=full,
                expected=expected,
                found=found,
            )
        )

    def _present(self, m: Mapping[str, Any], path: str, key: str, required: bool) -> Any:
        value = m.get(key)
        if value is None:
            if required:
                self.problem(at(path, key), "a value (required)", "nothing")
            return _MISSING
        return value

    def get_map(
        self, m: Mapping[str, Any], path: str, key: str, *, required: bool = False
    ) -> dict[str, Any] | None:
        value = self._present(m, path, key, required)
        if value is _MISSING:
            return None
        if not isinstance(value, Mapping):
            self.problem(at(path, key), "a mapping", show(value))
            return None
        return dict(value)

    def get_list(
        self,
        m: Mapping[str, Any],
        path: str,
        key: str,
        *,
        required: bool = False,
        min_items: int = 0,
        max_items: int | None = None,
        noun: str = "item",
    ) -> list[Any] | None:
        value = self._present(m, path, key, required)
        if value is _MISSING:
            return None
        if not isinstance(value, list | tuple):
            self.problem(at(path, key), "a list", show(value))
            return None
        if len(value) < min_items:
            self.problem(at(path, key), f"at least {count(min_items, noun)}", str(len(value)))
        if max_items is not None and len(value) > max_items:
            self.problem(at(path, key), f"at most {count(max_items, noun)}", str(len(value)))
        return list(value)

    def get_str(
        self,
        m: Mapping[str, Any],
        path: str,
        key: str,
        *,
        required: bool = False,
        enum: tuple[str, ...] | None = None,
        pattern: re.Pattern[str] | None = None,
        pattern_text: str = "",
        min_len: int = 0,
        max_len: int | None = None,
    ) -> str | None:
        value = self._present(m, path, key, required)
        if value is _MISSING:
            return None
        where = at(path, key)
        expected = f"one of {', '.join(enum)}" if enum else "a string"
        if not isinstance(value, str) or (enum is not None and value not in enum):
            self.problem(where, expected, show(value))
        elif len(value) < min_len:
            self.problem(where, "a non-empty string", show(value))
        elif max_len is not None and len(value) > max_len:
            self.problem(where, f"at most {max_len} characters", f"{len(value)} characters")
        elif pattern is not None and not pattern.match(value):
            self.problem(where, pattern_text, show(value))
        else:
            return value
        return None

    def get_int(
        self,
        m: Mapping[str, Any],
        path: str,
        key: str,
        *,
        required: bool = False,
        lo: int | None = None,
        hi: int | None = None,
        enum: tuple[int, ...] | None = None,
    ) -> int | None:
        value = self._present(m, path, key, required)
        if value is _MISSING:
            return None
        if enum is not None:
            expected = f"one of {', '.join(map(str, enum))}"
        elif lo is not None and hi is not None:
            expected = f"an integer {lo}-{hi}"
        else:
            expected = "an integer"
        # bool is an int in Python; YAML `true` for a port is a mistake, not 1.
        if (
            not isinstance(value, int)
            or isinstance(value, bool)
            or (lo is not None and value < lo)
            or (hi is not None and value > hi)
            or (enum is not None and value not in enum)
        ):
            self.problem(at(path, key), expected, show(value))
            return None
        return value

    def str_list(
        self, m: Mapping[str, Any], path: str, key: str, *, max_items: int | None = None
    ) -> tuple[str, ...]:
        items = self.get_list(m, path, key, max_items=max_items) or []
        out = []
        for i, item in enumerate(items):
            if isinstance(item, str):
                out.append(item)
            else:
                self.problem(at(at(path, key), i), "a string", show(item))
        return tuple(out)

    def str_map(self, m: Mapping[str, Any], path: str, key: str) -> tuple[tuple[str, str], ...]:
        # Label and annotation values must be strings: kubectl refuses `x: true` unquoted.
        value = self.get_map(m, path, key) or {}
        out = []
        for k, v in value.items():
            if isinstance(v, str):
                out.append((str(k), v))
            else:
                self.problem(at(at(path, key), str(k)), "a string (quote it)", show(v))
        return tuple(out)

    def item_maps(self, items: list[Any], path: str) -> list[tuple[str, dict[str, Any]]]:
        """The mapping items of a list with their paths; a problem for each non-mapping."""
        out = []
        for i, item in enumerate(items):
            if isinstance(item, Mapping):
                out.append((at(path, i), dict(item)))
            else:
                self.problem(at(path, i), "a mapping", show(item))
        return out


def count(n: int, noun: str) -> str:
    """``count(1, "rule")`` -> "1 rule"; ``count(64, "match")`` -> "64 matches"."""
    if n == 1:
        return f"1 {noun}"
    return f"{n} {noun}{'es' if noun.endswith(('ch', 'sh', 's')) else 's'}"


def or_default(value: int | None, default: int) -> int:
    """The CRD (or API server) default for an integer field the manifest left out."""
    return default if value is None else value


#: One kind's parser: (reader, document, the common fields) -> the model value.
Parser = Callable[[Reader, dict[str, Any], dict[str, Any]], K8sObject | None]
