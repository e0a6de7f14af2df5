"""Machine-readable answers: decisions, audits and impacts as plain data, JSON or YAML.

Job: turn the kit's result values into dicts of str/int/float/bool/None/list/dict (the
full decision, nothing dropped), and those into ``-o json`` or ``-o yaml`` text, so a
script can parse back exactly what the text output says.

Rules: keys are the dataclass field names (snake case, as in the code); tuples become
lists; the ``reasons`` of a decision are kept (they are the explanation); a request's
``url`` is always next to its decision.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pandas as pd
import yaml

from egresskit.impact import Impact, Outcome
from egresskit.policy.decision import Decision

FORMATS = ("text", "json", "yaml")


def plain(value: Any) -> Any:
    """Dataclasses, tuples, frames and the like as JSON-ready data."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, pd.DataFrame):
        return [plain(row) for row in value.to_dict(orient="records")]
    if isinstance(value, float) and value != value:  # NaN from a frame: no value
        return None
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def decision_dict(url: str, decision: Decision) -> dict[str, Any]:
    """One request and its full decision (``summary`` added for readers)."""
    return {"url": url, "summary": decision.summary(), **plain(decision)}


def outcome_dict(o: Outcome) -> dict[str, Any]:
    return {
        "request": plain(o.probe),
        "change": o.group,
        "before": decision_dict(o.probe.url, o.before) if o.before else None,
        "after": decision_dict(o.probe.url, o.after) if o.after else None,
        "error": o.error,
    }


def impact_dict(imp: Impact) -> dict[str, Any]:
    return {
        "namespace": imp.namespace,
        "changes": {g: [outcome_dict(o) for o in items] for g, items in imp.grouped().items()},
        "unchanged": [outcome_dict(o) for o in imp.outcomes if not o.group and not o.error],
        "errors": [outcome_dict(o) for o in imp.outcomes if o.error],
        "not_recorded": list(imp.lost),
    }


def dump(data: Any, fmt: str) -> str:
    """``data`` as JSON (indented, key order kept) or YAML."""
    if fmt == "json":
        return json.dumps(data, indent=2)
    if fmt == "yaml":
        return yaml.safe_dump(data, sort_keys=False, width=100)
    raise ValueError(f"output format: expected one of {', '.join(FORMATS)}, found {fmt!r}")
