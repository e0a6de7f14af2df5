"""The project's own promises: the README's commands, CI, and environment.yml vs pyproject."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def _names(specs: list[str]) -> dict[str, str]:
    out = {}
    for spec in specs:
        name = re.split(r"[<>=!~\[ ]", spec, maxsplit=1)[0].lower().replace("_", "-")
        out[name] = spec.replace(" ", "")
    return out


def test_environment_yml_matches_pyproject_dependencies() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert "python=3.11" in env["dependencies"]
    pip = next(d for d in env["dependencies"] if isinstance(d, dict))["pip"]
    assert "-e .[dev]" in pip
    pinned = _names([p for p in pip if not p.startswith("-e")])
    declared = _names(project["dependencies"])
    assert pinned == declared, "environment.yml drifted from pyproject.toml dependencies"


def test_readme_opens_with_the_two_commands() -> None:
    head = "\n".join((ROOT / "README.md").read_text().splitlines()[:8])
    assert "make run" in head and "make test" in head


def test_ci_runs_make_test() -> None:
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_makefile_targets_exist() -> None:
    text = (ROOT / "Makefile").read_text()
    for target in ("setup", "run", "test", "lab", "bench", "lint", "clean"):
        assert re.search(rf"^{target}:", text, re.M), target
    assert re.search(r"^run: setup", text, re.M) and re.search(r"^test: setup", text, re.M)


def test_cli_reports_bad_manifests_without_a_traceback(tmp_path: Path, capsys: object) -> None:
    from egresskit.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: policy.linkerd.io/v1alpha1\nkind: EgressNetwork\n"
        "metadata: {name: en, namespace: egress-test}\nspec: {trafficPolicy: Maybe}\n"
    )
    assert main(["explain", "-f", str(bad), "-n", "egress-test", "http://x.org"]) == 2
    err = capsys.readouterr().err  # type: ignore[attr-defined]
    assert f"{bad}: document 1 (EgressNetwork egress-test/en): spec.trafficPolicy" in err
    assert "Traceback" not in err
