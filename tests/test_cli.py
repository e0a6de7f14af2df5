"""The ``egresskit`` command as a kubectl user drives it (issue 13, items 2-4 and 6)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from egresskit import guide
from egresskit.cli import main

DENY = guide.EGRESS_NETWORK.replace("trafficPolicy: Allow", "trafficPolicy: Deny")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository of manifests: the guide's Allow state, and a proposed restriction."""
    (tmp_path / "current").mkdir()
    (tmp_path / "current" / "namespace.yaml").write_text(guide.NAMESPACE)
    (tmp_path / "current" / "egress-network.yaml").write_text(guide.EGRESS_NETWORK)
    (tmp_path / "proposed").mkdir()
    (tmp_path / "proposed" / "deny.yaml").write_text(DENY)
    (tmp_path / "proposed" / "httpbin-get.yaml").write_text(guide.HTTPBIN_GET_ROUTE)
    (tmp_path / "requests.txt").write_text(
        "# the guide's traffic\n"
        "http://httpbin.org/get\n"
        "http://httpbin.org/ip\n"
        "https://httpbin.org/get\n"
        "POST http://httpbin.org/post -H 'x-team: blue'\n"
    )
    return tmp_path


def run(capsys: pytest.CaptureFixture[str], *args: str, stdin: str = "") -> tuple[int, str, str]:
    code = main(list(args), stdin=io.StringIO(stdin))
    out, err = capsys.readouterr()
    return code, out, err


def test_explain_reads_a_directory_and_exits_by_outcome(capsys, repo: Path) -> None:
    code, out, _ = run(
        capsys, "explain", "http://httpbin.org/ip", "-f", str(repo / "current"), "-n", "egress-test"
    )
    assert (code, out.splitlines()[0]) == (0, "ALLOWED via http-egress-allow")
    code, out, _ = run(
        capsys,
        "explain",
        "http://httpbin.org/ip",
        "-f",
        str(repo / "current"),
        "-f",
        str(repo / "proposed"),
        "-n",
        "egress-test",
    )
    assert (code, out.splitlines()[0]) == (1, "FORBIDDEN via http-egress-deny HTTP 403")


def test_explain_reads_stdin_and_recursive_directories(capsys, repo: Path) -> None:
    code, out, _ = run(
        capsys,
        "explain",
        "http://httpbin.org/ip",
        "-f",
        "-",
        "-n",
        "egress-test",
        stdin=guide.NAMESPACE + "---\n" + DENY,
    )
    assert (code, out.splitlines()[0]) == (1, "FORBIDDEN via http-egress-deny HTTP 403")
    code, out, _ = run(
        capsys, "explain", "http://httpbin.org/get", "-f", str(repo), "-R", "-n", "egress-test"
    )
    assert (code, out.splitlines()[0]) == (0, "ALLOWED via httpbin-get")


def test_namespace_defaults_to_default(capsys, tmp_path: Path) -> None:
    # No namespace anywhere: the EgressNetwork lands in "default", the client too.
    (tmp_path / "en.yaml").write_text(DENY.replace("  namespace: egress-test\n", ""))
    code, out, _ = run(capsys, "explain", "http://httpbin.org/", "-f", str(tmp_path / "en.yaml"))
    assert code == 1
    assert "EgressNetwork default/all-egress-traffic:80" in out
    assert "the client in default sends" in out


def test_json_output_carries_the_full_decision(capsys, repo: Path) -> None:
    code, out, _ = run(
        capsys,
        "explain",
        "http://httpbin.org/ip",
        "tcp://httpbin.org:5432",
        "-f",
        str(repo / "current"),
        "-f",
        str(repo / "proposed"),
        "-n",
        "egress-test",
        "-o",
        "json",
    )
    data = json.loads(out)
    first, second = data["items"]
    assert data["namespace"] == "egress-test" and code == 1
    assert first["url"] == "http://httpbin.org/ip"
    assert (first["outcome"], first["http_status"]) == ("forbidden", 403)
    assert first["route"] == {
        "group": "",
        "kind": "default",
        "namespace": "",
        "name": "http-egress-deny",
        "port": None,
    }
    assert first["labels"]["route_name"] == "http-egress-deny"
    assert first["reasons"][0].startswith("the client in egress-test sends HTTP GET /ip")
    assert (second["family"], second["error"]) == ("tcp", "forbidden")


def test_yaml_output_parses_back_to_the_json(capsys, repo: Path) -> None:
    args = [
        "explain",
        "grpc://httpbin.org:50051/pkg.Svc/Call",
        "-H",
        "x-team: blue",
        "-f",
        str(repo / "current"),
        "-n",
        "egress-test",
    ]
    _, as_json, _ = run(capsys, *args, "-o", "json")
    _, as_yaml, _ = run(capsys, *args, "-o", "yaml")
    assert yaml.safe_load(as_yaml) == json.loads(as_json)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["explain", "http://x/"], "expected -f PATH (file, directory or -) or --context"),
        (["explain", "ftp://x/", "-f", "{repo}/current"], "expected a URL starting with http://"),
        (["explain", "http://x/", "-f", "{repo}/nope"], "expected a file, a directory or -"),
        (["explain", "http://x/", "-f", "{repo}/current", "--context", "c"], "found both"),
        (
            ["diff", "-f", "{repo}/current", "-p", "{repo}/proposed", "--from-traffic"],
            "--from-traffic: expected --context",
        ),
    ],
    ids=["no-source", "bad-url", "missing-path", "two-sources", "traffic-without-cluster"],
)
def test_bad_input_exits_2_with_a_message(
    capsys, repo: Path, args: list[str], message: str
) -> None:
    code, out, err = run(capsys, *[a.format(repo=repo) for a in args])
    assert (code, out) == (2, "")
    assert message in err


def test_audit_is_a_ci_gate(capsys, repo: Path) -> None:
    both = ["-f", str(repo / "current"), "-f", str(repo / "proposed"), "-n", "egress-test"]
    code, out, _ = run(capsys, "audit", *both)
    assert code == 0  # without --fail-on, findings are reported, not fatal
    assert "WARNING HTTPRoute egress-test/httpbin-get: no hostnames" in out
    assert "proof: http://unlisted.example.net/get -> allowed via httpbin-get" in out
    assert "http://unlisted.example.net/get  ALLOWED via httpbin-get" in out
    assert run(capsys, "audit", *both, "--fail-on", "warning")[0] == 1
    assert run(capsys, "audit", *both, "--fail-on", "error")[0] == 0
    code, out, _ = run(
        capsys, "audit", *both, "--requests", str(repo / "requests.txt"), "-o", "json"
    )
    data = json.loads(out)
    assert data["worst"] == "warning"
    proof = data["findings"][0]["proof_decision"]
    assert (proof["url"], proof["outcome"]) == ("http://unlisted.example.net/get", "allowed")
    assert [r["url"] for r in data["requests"]][-4:] == [
        "http://httpbin.org/get",
        "http://httpbin.org/ip",
        "https://httpbin.org/get",
        "http://httpbin.org/post",
    ]


def test_diff_lists_only_the_changes_grouped(capsys, repo: Path) -> None:
    code, out, _ = run(
        capsys,
        "diff",
        "-f",
        str(repo / "current"),
        "-p",
        str(repo / "proposed"),
        "--requests",
        str(repo / "requests.txt"),
        "-n",
        "egress-test",
    )
    assert code == 1
    assert out.splitlines()[:2] == [
        "3 of 4 requests change (client namespace egress-test)",
        "newly forbidden (3):",
    ]
    assert "unchanged (1): http://httpbin.org/get" in out
    code, out, _ = run(
        capsys,
        "diff",
        "-f",
        str(repo / "current"),
        "-p",
        str(repo / "proposed"),
        "--requests",
        str(repo / "requests.txt"),
        "-n",
        "egress-test",
        "-o",
        "json",
    )
    changes = json.loads(out)["changes"]
    forbidden = changes["newly forbidden"]
    assert [c["request"]["url"] for c in forbidden] == [
        "http://httpbin.org/ip",
        "https://httpbin.org/get",
        "http://httpbin.org/post",
    ]
    assert forbidden[2]["request"]["method"] == "POST"
    assert forbidden[2]["request"]["headers"] == [["x-team", "blue"]]
    assert forbidden[0]["before"]["outcome"] == "allowed"
    assert forbidden[0]["after"]["route"]["name"] == "http-egress-deny"
    assert changes["newly allowed"] == []


def test_diff_of_nothing_exits_0(capsys, repo: Path) -> None:
    code, out, _ = run(
        capsys,
        "diff",
        "-f",
        str(repo / "current"),
        "-p",
        str(repo / "current"),
        "--requests",
        str(repo / "requests.txt"),
        "-n",
        "egress-test",
    )
    assert code == 0 and out.startswith("0 of 4 requests change")


@pytest.mark.parametrize("command", [[], ["explain"], ["audit"], ["diff"]])
def test_help_is_plain_text_with_exit_codes(command: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "egresskit.cli", *command, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "``" not in done.stdout and ":func:" not in done.stdout
    assert "exit codes:" in done.stdout
    assert "1  explain: a request is forbidden" in done.stdout
