"""Judging a change: the groups, and request files read with errors that say where."""

from __future__ import annotations

import pytest

from egresskit import guide
from egresskit.errors import PolicyError
from egresskit.impact import impact
from egresskit.probes import Probe, probes_from_lines

NS = guide.NAMESPACE_NAME
ALLOW = [guide.NAMESPACE, guide.EGRESS_NETWORK]
DENY = [guide.NAMESPACE, guide.EGRESS_NETWORK.replace("Allow", "Deny")]
REDIRECT = [*DENY, guide.INTERNAL_EGRESS, guide.UNENCRYPTED_HTTP_ROUTE]


def group(current: list[str], proposed: list[str], url: str) -> str:
    (o,) = impact(current, proposed, [Probe(url=url)], namespace=NS).outcomes
    return o.group


@pytest.mark.parametrize(
    ("current", "proposed", "url", "expected"),
    [
        (ALLOW, DENY, "http://httpbin.org/get", "newly forbidden"),
        (DENY, ALLOW, "https://httpbin.org/", "newly allowed"),
        (DENY, REDIRECT, "http://google.com/", "newly redirected"),
        (ALLOW, REDIRECT, "http://google.com/", "newly redirected"),
        (ALLOW, [*ALLOW, guide.HTTPBIN_GET_ROUTE], "http://httpbin.org/get", ""),  # route only
        (DENY, DENY, "http://httpbin.org/get", ""),
    ],
    ids=["allow-deny", "deny-allow", "deny-redirect", "allow-redirect", "route-only", "same"],
)
def test_groups(current: list[str], proposed: list[str], url: str, expected: str) -> None:
    assert group(current, proposed, url) == expected


def test_backend_changed_when_the_redirect_target_moves() -> None:
    other = guide.INTERNAL_EGRESS.replace("internal-egress", "internal-egress-2")
    moved = [
        *DENY,
        guide.INTERNAL_EGRESS,
        other,
        guide.UNENCRYPTED_HTTP_ROUTE.replace(
            "name: internal-egress\n", "name: internal-egress-2\n"
        ),
    ]
    assert "internal-egress-2" in moved[-1]
    assert group(REDIRECT, moved, "http://google.com/") == "backend changed"


def test_request_file() -> None:
    probes = probes_from_lines(
        [
            "# comment",
            "",
            "http://a.example/x",
            "post https://b.example/ -H 'x-a: 1' -H 'x-b: two words'",
        ]
    )
    assert probes == [
        Probe(url="http://a.example/x"),
        Probe(
            url="https://b.example/", method="POST", headers=(("x-a", "1"), ("x-b", "two words"))
        ),
    ]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("GET", "requests.txt: line 2: expected [METHOD] URL [-H 'name: value'], found 'GET'"),
        (
            "http://a/ -X POST",
            "requests.txt: line 2: expected -H 'name: value' after the URL, found '-X'",
        ),
        ("http://a/ -H 'unterminated", "requests.txt: line 2: expected shell-style words"),
    ],
)
def test_request_file_errors_name_the_line(line: str, expected: str) -> None:
    with pytest.raises(PolicyError) as err:
        probes_from_lines(["http://ok/", line], source="requests.txt")
    assert str(err.value).startswith(expected)
