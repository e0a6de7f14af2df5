"""The pinned CRDs (package data in ``egresskit/crds``) as an index: kind -> served schemas.

Job: read every CRD file once, and answer "which versions of this group/kind are served?"
and "what is the ``openAPIV3Schema`` of this served version?". Nothing is validated here;
:mod:`egresskit.manifests.crd_validation` does that.

Rules:

- Only ``served: true`` versions count: the API server answers any other version with
  ``no matches for kind "HTTPRoute" in version "gateway.networking.k8s.io/v1alpha2"``
  (Gateway API v1.2.1 serves HTTPRoute at v1 and v1beta1 only; linkerd-egress.md 7.4).
- The files are read lazily on first use and kept for the life of the process (they are
  package data and never change underneath us).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources
from typing import Any

import yaml


@dataclass(frozen=True, kw_only=True)
class Crd:
    """One CustomResourceDefinition: its group, kind and schema per served version."""

    group: str
    kind: str
    plural: str
    namespaced: bool
    #: served version name -> its ``openAPIV3Schema``, in the CRD's own order.
    schemas: dict[str, dict[str, Any]]
    file: str

    @property
    def served(self) -> tuple[str, ...]:
        return tuple(self.schemas)


_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@functools.cache
def crd_index() -> dict[tuple[str, str], Crd]:
    """(group, kind) -> :class:`Crd`, for every pinned CRD file."""
    out: dict[tuple[str, str], Crd] = {}
    folder = resources.files("egresskit") / "crds"
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".yaml"):
            continue
        # libyaml's loader when PyYAML has it: the CRDs are 1.3 MB of YAML, ~2 s pure Python.
        doc = yaml.load(entry.read_text(encoding="utf-8"), Loader=_LOADER)
        spec = doc["spec"]
        crd = Crd(
            group=spec["group"],
            kind=spec["names"]["kind"],
            plural=spec["names"]["plural"],
            namespaced=spec["scope"] == "Namespaced",
            schemas={
                v["name"]: v["schema"]["openAPIV3Schema"]
                for v in spec["versions"]
                if v.get("served")
            },
            file=entry.name,
        )
        out[(crd.group, crd.kind)] = crd
    return out


def find_crd(api_version: str, kind: str) -> Crd | None:
    """The CRD for ``apiVersion``'s group and ``kind`` (any version), or None."""
    group, _, _ = api_version.rpartition("/")
    return crd_index().get((group, kind))


def served_api_versions() -> list[tuple[str, str]]:
    """Every (apiVersion, kind) the pinned CRDs serve."""
    return [(f"{c.group}/{v}", c.kind) for c in crd_index().values() for v in c.served]
