"""The kind workflow's supply chain (issue 12 item 8): zizmor finds nothing, actions are pinned
by commit, the checkout keeps no credentials, and each download is checked against its
published checksum before it is installed.

zizmor runs offline (``--offline``: no GitHub API), from the dev tools ``make setup``
installs. The checksum logic is run here for real, on files this test makes.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / ".github" / "workflows" / "kind.yml"
ZIZMOR = Path(sys.executable).parent / "zizmor"
INSTALL_STEP = "Install kind, kubectl and the Linkerd CLI, each verified against its checksum"


def _steps() -> list[dict[str, Any]]:
    doc = yaml.safe_load(WORKFLOW.read_text())
    return list(doc["jobs"]["kind"]["steps"])


def test_zizmor_offline_finds_nothing() -> None:
    done = subprocess.run(
        [str(ZIZMOR), "--offline", "--persona=auditor", "--format=json", str(WORKFLOW)],
        capture_output=True,
        text=True,
        timeout=100,
    )
    findings = json.loads(done.stdout or "null")
    assert findings == [], [f"{f['ident']}: {f['desc']}" for f in findings or []]
    assert done.returncode == 0, done.stderr


def test_every_action_is_pinned_by_commit_with_its_tag_in_a_comment() -> None:
    uses = re.findall(r"uses:\s*(\S+)(.*)", WORKFLOW.read_text())
    assert len(uses) == 3
    for ref, comment in uses:
        assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", ref), ref
        assert re.fullmatch(r"\s+#\s+v\d+\.\d+\.\d+", comment), (ref, comment)


def test_the_checkout_keeps_no_credentials() -> None:
    [checkout] = [s for s in _steps() if str(s.get("uses", "")).startswith("actions/checkout@")]
    assert checkout["with"]["persist-credentials"] is False


def test_each_binary_is_installed_through_the_checksum_check() -> None:
    [step] = [s for s in _steps() if s.get("name") == INSTALL_STEP]
    script = step["run"]
    for tool in ("kind", "kubectl", "linkerd"):
        assert re.search(rf"^\s*verified {tool} ", script, re.M), tool
    # No other download and no other install of a binary.
    assert script.count("curl ") == 1 and script.count("install -m") == 1


def _run_verified(
    tmp_path: Path, payload: bytes, checksum_text: str
) -> subprocess.CompletedProcess[str]:
    """The workflow's own ``fetch``/``verified`` functions, with ``fetch`` reading local files."""
    [step] = [s for s in _steps() if s.get("name") == INSTALL_STEP]
    lines = step["run"].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("fetch()"))
    end = next(i for i, line in enumerate(lines) if line == "}")
    functions = "\n".join(lines[start : end + 1])
    (tmp_path / "asset").write_bytes(payload)
    (tmp_path / "asset.sha").write_text(checksum_text)
    (tmp_path / "bin").mkdir(exist_ok=True)
    script = (
        "set -euo pipefail\n"
        f'bin="{tmp_path}/bin"; dl="$(mktemp -d -p {tmp_path})"\n'
        f"{functions}\n"
        'fetch() { cp "$2" "$1"; }\n'
        f'verified tool "{tmp_path}/asset" "{tmp_path}/asset.sha"\n'
    )
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize(
    "form",
    ["{digest}  kind-linux-amd64\n", "{digest}\n", "{digest}"],
    ids=["kind", "bare", "no-eol"],
)
def test_a_matching_checksum_installs_the_binary(tmp_path: Path, form: str) -> None:
    payload = b"#!/bin/sh\necho real\n"
    done = _run_verified(tmp_path, payload, form.format(digest=hashlib.sha256(payload).hexdigest()))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "bin" / "tool").read_bytes() == payload


@pytest.mark.parametrize("checksum", ["0" * 64 + "\n", "", "<html>Not Found</html>\n"])
def test_a_wrong_or_missing_checksum_stops_before_installing(tmp_path: Path, checksum: str) -> None:
    done = _run_verified(tmp_path, b"tampered", checksum)
    assert done.returncode != 0
    assert not (tmp_path / "bin" / "tool").exists()
