"""Kubernetes manifests as typed, defaulted, validated values.

``load_manifests`` reads a batch (YAML text, files, dicts) all or nothing;
``parse_object`` reads one mapping (the store's patch path). Both raise
:class:`~egresskit.errors.ManifestError` naming every problem. The values are in
:mod:`egresskit.manifests.model`.
"""

from egresskit.manifests.load import ManifestSource, load_manifests
from egresskit.manifests.parse import parse_object, supported_kinds

__all__ = ["ManifestSource", "load_manifests", "parse_object", "supported_kinds"]
