"""What the fake API server serves, read from the real CRDs, and how it checks what it is sent.

Job: turn ``egresskit/crds/*.yaml`` (the pinned Gateway API v1.2.1 and Linkerd 2.19 CRDs, the
same ones ``egresskit cluster up`` installs) into the fake's catalogue: for each *served*
version of each CRD its group, version, plural, kind, scope, ``openAPIV3Schema`` and whether
it has a ``status`` subresource; plus the few built-in kinds the guide uses (no schema here).
A version a CRD does not serve is not in the catalogue, so the fake cannot accept what a real
API server refuses (Gateway API v1.2.1 serves HTTPRoute at v1 and v1beta1 only, GRPCRoute at
v1 only, TLSRoute and TCPRoute at v1alpha2 only).

Rules:

- Preferred versions and the order of a group's versions follow Kubernetes version priority
  (GA, then beta, then alpha; higher numbers first), as the API server's discovery does.
- :func:`schema_problems` is the one place that validates an object against a CRD: it calls
  the kit's own CRD validator (jsonschema + CEL rules), so the fake and the local backend
  admit exactly the same objects.
- :func:`unknown_fields` finds the fields a schema does not declare, as the API server's
  pruning does: ``apiVersion``, ``kind`` and ``metadata`` at the root are always known (the
  Linkerd EgressNetwork schema even misspells ``apiVerson``), and
  ``x-kubernetes-preserve-unknown-fields`` keeps everything below it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

import egresskit

CRD_DIR = Path(egresskit.__file__).parent / "crds"
GATEWAY = "gateway.networking.k8s.io"
POLICY = "policy.linkerd.io"
_ROOT_FIELDS = frozenset({"apiVersion", "kind", "metadata"})


@dataclass(frozen=True, kw_only=True)
class Served:
    """One kind as served at one group/version."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    #: The version's ``openAPIV3Schema``; ``None`` for built-in kinds (not checked here).
    schema: dict[str, Any] | None = None
    status_subresource: bool = False

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


BUILTIN = (
    Served(group="", version="v1", plural="namespaces", kind="Namespace", namespaced=False),
    Served(group="", version="v1", plural="pods", kind="Pod", namespaced=True),
    Served(group="", version="v1", plural="services", kind="Service", namespaced=True),
    Served(group="apps", version="v1", plural="deployments", kind="Deployment", namespaced=True),
)


@cache
def crd_kinds(directory: Path = CRD_DIR) -> tuple[Served, ...]:
    """Every served version of every CRD in ``directory``."""
    out = []
    for path in sorted(directory.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            spec = doc["spec"]
            for version in spec["versions"]:
                if not version.get("served"):
                    continue
                out.append(
                    Served(
                        group=spec["group"],
                        version=version["name"],
                        plural=spec["names"]["plural"],
                        kind=spec["names"]["kind"],
                        namespaced=spec["scope"] == "Namespaced",
                        schema=(version.get("schema") or {}).get("openAPIV3Schema"),
                        status_subresource="status" in (version.get("subresources") or {}),
                    )
                )
    return tuple(out)


_VERSION_RE = re.compile(r"^v(?P<major>\d+)(?:(?P<stage>alpha|beta)(?P<minor>\d+))?$")


def version_priority(version: str) -> tuple[int, int, int]:
    """Sort key, smallest first = most preferred: v1 > v1beta3 > v1beta1 > v1alpha2."""
    m = _VERSION_RE.match(version)
    if m is None:  # not Kubernetes-like: after every Kubernetes-like version
        return (3, 0, 0)
    stage = {None: 0, "beta": 1, "alpha": 2}[m["stage"]]
    return (stage, -int(m["major"]), -int(m["minor"] or 0))


# ------------------------------------------------------------------------------ validation


def schema_problems(schema: dict[str, Any], obj: dict[str, Any]) -> list[tuple[str, Any, str]]:
    """``(field path, value found, what is wrong)`` for each violation of ``obj``.

    The one validation call of the fake: the kit's own CRD validator
    (:func:`egresskit.manifests.crd_validation.validate`: the served version's
    ``openAPIV3Schema`` and its CEL rules), so the fake admits exactly what ``apply`` on the
    local backend admits. ``schema`` must be the one of ``obj``'s served version; unknown
    fields were handled (refused or pruned) before this is called.
    """
    from egresskit.manifests.crd_validation import validate

    if not isinstance(obj.get("apiVersion"), str) or not isinstance(obj.get("kind"), str):
        return [("", obj, "expected apiVersion and kind")]
    return [(e.path, e.found, f"expected {e.expected}") for e in validate(obj)]


def unknown_fields(schema: dict[str, Any], obj: Any) -> list[str]:
    """Dotted paths of the fields in ``obj`` that ``schema`` does not declare."""
    return list(_unknown(schema, obj, "", root=True))


def _unknown(schema: dict[str, Any], value: Any, path: str, *, root: bool = False) -> Iterator[str]:
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return
    if isinstance(value, dict):
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            where = f"{path}.{key}" if path else key
            if root and key in _ROOT_FIELDS:
                continue
            if props is not None and key in props:
                yield from _unknown(props[key], item, where)
            elif isinstance(extra, dict):
                yield from _unknown(extra, item, where)
            elif props is not None or extra is False:
                yield where
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            yield from _unknown(schema["items"], item, f"{path}[{i}]")


def prune(schema: dict[str, Any], obj: dict[str, Any], paths: list[str]) -> None:
    """Drop the unknown ``paths`` from ``obj`` (what the API server does without Strict)."""
    for path in paths:
        parts = re.findall(r"[^.\[\]]+|\[\d+\]", path)
        node: Any = obj
        for part in parts[:-1]:
            node = node[int(part[1:-1])] if part.startswith("[") else node[part]
        node.pop(parts[-1], None)


def _dotted(path: Any) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out
