"""How a refusal reads: :class:`FieldError`, field paths, and jsonschema's errors in words.

Job: turn what :mod:`jsonschema` reports against a CRD's ``openAPIV3Schema`` into the kit's
``field.path: expected X, found Y`` (style guide, rule 3): one sentence per keyword, the
CRDs' common patterns in plain words, and the ``format`` checks the API server makes
(kube-openapi's ``duration`` and ``date-time``), which jsonschema leaves to the caller.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import jsonschema

from egresskit.manifests.reader import show

Path = tuple[str | int, ...]


@dataclass(frozen=True, kw_only=True)
class FieldError:
    """One refused field: ``spec.hostname: expected ..., found ...``."""

    #: ``spec.rules[0].matches[0].path.value``; ``""`` for the object itself.
    path: str
    expected: str
    found: str

    def __str__(self) -> str:
        where = f"{self.path}: " if self.path else ""
        return f"{where}expected {self.expected}, found {self.found}"


def render(path: tuple[str | int, ...] | list[str | int]) -> str:
    """``("spec", "rules", 0, "matches")`` -> ``spec.rules[0].matches``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


#: Go's time.ParseDuration grammar, as ``format: duration`` is checked by kube-openapi
#: (k8s.io/kube-openapi/pkg/validation/strfmt/duration.go, which also takes "1 day", "2w").
_GO_DURATION = re.compile(r"^[-+]?((\d+(\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h))+$|^0$")
_UNIT_DURATION = re.compile(
    r"^(\s*\d+\s*(ns|us|µs|ms|s|m|h|d|w|"
    r"(nanosecond|microsecond|millisecond|second|minute|hour|day|week)s?)\s*)+$"
)

FORMATS = jsonschema.FormatChecker(formats=())


@FORMATS.checks("duration")
def _is_duration(value: object) -> bool:
    if not isinstance(value, str):
        return True
    return bool(_GO_DURATION.match(value) or _UNIT_DURATION.match(value))


@FORMATS.checks("date-time")
def _is_date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return "T" in value.upper()


#: Friendlier words for the patterns of the Gateway API and Linkerd CRDs.
_PATTERNS = {
    r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$": (
        'a lowercase RFC 1123 hostname, optionally with a leading "*."'
    ),
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$": (
        "a lowercase RFC 1123 name (a-z, 0-9, '-', '.')"
    ),
    r"^$|^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$": (
        'an API group ("" or a lowercase DNS name)'
    ),
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$": "a lowercase RFC 1123 label (a-z, 0-9, '-')",
    r"^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$": "a kind name (letters, digits, '-')",
    r"^[A-Za-z0-9!#$%&'*+\-.^_\x60|~]+$": "an HTTP header name (RFC 7230 token)",
    r"^([0-9]{1,5}(h|m|s|ms)){1,4}$": "a Gateway API duration such as 10s, 1h30m or 500ms",
}
_TYPES = {
    "integer": "an integer",
    "number": "a number",
    "string": "a string",
    "boolean": "true or false",
    "object": "a mapping",
    "array": "a list",
}


def _bounds(schema: Mapping[str, Any]) -> str:
    lo, hi = schema.get("minimum"), schema.get("maximum")
    if lo is not None and hi is not None:
        return f"an integer {lo}-{hi}"
    if lo is not None:
        return f"an integer >= {lo}"
    return f"an integer <= {hi}"


def field_error(error: jsonschema.ValidationError) -> tuple[Path, FieldError]:
    path = list(error.absolute_path)
    schema, kind = error.schema, error.validator
    value: Any = error.instance
    if not isinstance(schema, Mapping):
        schema = {}
    expected = error.message
    found = show(value)
    if kind == "required":
        missing = re.match(r"'(.*)' is a required property", error.message)
        path.append(missing.group(1) if missing else "?")
        expected, found = "a value (required)", "nothing"
    elif kind == "type":
        expected = _TYPES.get(str(schema.get("type")), f"a {schema.get('type')}")
        if schema.get("type") == "integer" and ("minimum" in schema or "maximum" in schema):
            expected = _bounds(schema)
    elif kind == "enum":
        expected = "one of " + ", ".join(str(v) for v in schema["enum"])
    elif kind in ("minimum", "maximum"):
        expected = _bounds(schema)
    elif kind == "minItems":
        expected, found = f"at least {_items(schema['minItems'])}", str(len(value))
    elif kind == "maxItems":
        expected, found = f"at most {_items(schema['maxItems'])}", str(len(value))
    elif kind == "minLength":
        expected = f"at least {schema['minLength']} character{'s' * (schema['minLength'] != 1)}"
    elif kind == "maxLength":
        expected, found = f"at most {schema['maxLength']} characters", f"{len(value)} characters"
    elif kind == "pattern":
        expected = _PATTERNS.get(schema["pattern"], f"a string matching {schema['pattern']}")
    elif kind == "format":
        expected = {
            "duration": "a duration such as 10s, 1m30s or 1h",
            "date-time": "an RFC 3339 date-time",
        }.get(schema["format"], f"a {schema['format']}")
    return tuple(path), FieldError(path=render(path), expected=expected, found=found)


def _items(n: int) -> str:
    return f"{n} item{'s' * (n != 1)}"
