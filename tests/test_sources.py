"""``-f`` as kubectl reads it: files, directories (``-R``), stdin, repeated; all or nothing."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from egresskit import guide
from egresskit.errors import ManifestError
from egresskit.manifests import load_manifests
from egresskit.sources import overlay, read_filenames


def tree(tmp_path: Path) -> Path:
    (tmp_path / "sub").mkdir()
    (tmp_path / "00-ns.yaml").write_text(guide.NAMESPACE)
    (tmp_path / "10-en.yml").write_text(guide.EGRESS_NETWORK)
    (tmp_path / "notes.txt").write_text("not a manifest: ignored, as kubectl does")
    (tmp_path / "sub" / "route.yaml").write_text(guide.HTTPBIN_GET_ROUTE)
    return tmp_path


def names(objs: list) -> list[str]:
    return [o.display for o in objs]


def test_a_directory_reads_its_manifests_in_lexical_order(tmp_path: Path) -> None:
    assert names(read_filenames([str(tree(tmp_path))])) == [
        "Namespace egress-test",
        "EgressNetwork egress-test/all-egress-traffic",
    ]


def test_recursive_reads_subdirectories(tmp_path: Path) -> None:
    objs = read_filenames([str(tree(tmp_path))], recursive=True)
    assert "HTTPRoute egress-test/httpbin-get" in names(objs)


def test_stdin_and_repeated_filenames(tmp_path: Path) -> None:
    tree(tmp_path)
    objs = read_filenames(
        [str(tmp_path / "00-ns.yaml"), "-", str(tmp_path / "sub")],
        stdin=io.StringIO(guide.EGRESS_NETWORK),
    )
    assert names(objs) == [
        "Namespace egress-test",
        "EgressNetwork egress-test/all-egress-traffic",
        "HTTPRoute egress-test/httpbin-get",
    ]


def test_objects_without_namespace_get_the_namespace_flag(tmp_path: Path) -> None:
    doc = guide.EGRESS_NETWORK.replace("  namespace: egress-test\n", "")
    assert "namespace" not in doc.split("spec:")[0]
    (tmp_path / "en.yaml").write_text(doc)
    (obj,) = read_filenames([str(tmp_path / "en.yaml")], namespace="team-a")
    assert obj.metadata.namespace == "team-a"
    (obj,) = read_filenames([str(tmp_path / "en.yaml")])
    assert obj.metadata.namespace == "default"


def test_every_bad_source_is_reported_together(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.yaml").write_text(guide.EGRESS_NETWORK.replace("Allow", "Maybe"))
    with pytest.raises(ManifestError) as err:
        read_filenames(
            [str(tmp_path / "missing.yaml"), str(tmp_path / "empty"), str(tmp_path / "bad.yaml")]
        )
    text = str(err.value)
    assert "3 problems" in text
    assert f"{tmp_path / 'missing.yaml'}: expected a file, a directory or - (stdin)" in text
    assert "expected files ending in .yaml, .yml or .json (add -R" in text
    assert "bad.yaml: document 1 (EgressNetwork egress-test/all-egress-traffic)" in text
    assert "spec.trafficPolicy" in text


def test_stdin_twice_is_refused() -> None:
    with pytest.raises(ManifestError, match="- given twice"):
        read_filenames(["-", "-"], stdin=io.StringIO(guide.NAMESPACE))


def test_overlay_replaces_in_place_keeps_age_and_appends_new() -> None:
    current = load_manifests([guide.NAMESPACE, guide.EGRESS_NETWORK])
    stamped = current[1].metadata.__class__(
        name=current[1].metadata.name,
        namespace=current[1].metadata.namespace,
        creation_timestamp="2025-01-01T00:00:00Z",
    )
    from dataclasses import replace

    current = [current[0], replace(current[1], metadata=stamped)]
    proposed = load_manifests(
        [guide.EGRESS_NETWORK.replace("Allow", "Deny"), guide.HTTPBIN_GET_ROUTE]
    )
    out = overlay(current, proposed)
    assert names(out) == [
        "Namespace egress-test",
        "EgressNetwork egress-test/all-egress-traffic",
        "HTTPRoute egress-test/httpbin-get",
    ]
    assert out[1].traffic_policy == "Deny"  # type: ignore[attr-defined]
    assert out[1].metadata.creation_timestamp == "2025-01-01T00:00:00Z"
