"""apply on the local backend: errors name the user's file, and nothing is half-applied."""

from __future__ import annotations

from pathlib import Path

import pytest

import egresskit
from egresskit import guide
from egresskit.errors import BackendError, ManifestError


def test_missing_namespace_error_names_the_file_and_applies_nothing(tmp_path: Path) -> None:
    f = tmp_path / "egress.yaml"
    f.write_text(guide.EGRESS_NETWORK + "\n---\n" + guide.CLIENT_POD)
    with egresskit.connect("local") as c:
        with pytest.raises(ManifestError) as err:
            c.apply(f)
        assert str(f) in str(err.value) and "document 1" in str(err.value)
        assert "metadata.namespace" in str(err.value)
        with pytest.raises(BackendError):
            c.get("egressnetwork", "all-egress-traffic", namespace="egress-test")


def test_generator_input_is_applied_once_read_twice() -> None:
    with egresskit.connect("local") as c:
        lines = c.apply(doc for doc in [guide.NAMESPACE, guide.EGRESS_NETWORK])
        assert lines == [
            "namespace/egress-test created",
            "egressnetwork/all-egress-traffic created",
        ]
        assert c.apply(guide.EGRESS_NETWORK) == ["egressnetwork/all-egress-traffic configured"]
