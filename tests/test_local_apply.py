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


# Issue 10 item 4: refused as a real API server refuses it (the CRD's schema and CEL rules),
# naming file, document, field and, for a typo, the field meant; nothing of the batch applied.
TYPO = guide.HTTPBIN_GET_ROUTE.replace("  parentRefs:", "  hostname: [httpbin.org]\n  parentRefs:")
TIMEOUT = "      timeouts: {TIMEOUTS}\n"  # under the rule's "- matches:" (4 spaces + 2)
BAD_DURATION = guide.HTTPBIN_GET_ROUTE + TIMEOUT.replace("TIMEOUTS", "request: 10 seconds")
LONGER = guide.HTTPBIN_GET_ROUTE + TIMEOUT.replace("TIMEOUTS", "request: 5s, backendRequest: 9s")
TLS_MATCHES = guide.TLS_EGRESS_ROUTE + "    matches:\n    - path: {value: /get}\n"


@pytest.mark.parametrize(
    ("bad", "field", "words"),
    [
        (TYPO, "spec.hostname", 'did you mean "hostnames"?'),
        (BAD_DURATION, "spec.rules[0].timeouts.request", "duration"),
        (LONGER, "spec.rules[0].timeouts", "backendRequest timeout cannot be longer"),
        (TLS_MATCHES, "spec.rules[0].matches", 'unknown field "spec.rules[0].matches"'),
        (guide.HTTPBIN_GET_ROUTE_V1ALPHA2, "apiVersion", "gateway.networking.k8s.io/v1, "),
    ],
    ids=["typo", "bad-duration", "backend-request-longer", "tls-path-matches", "v1alpha2"],
)
def test_apply_refuses_what_the_crd_refuses(
    tmp_path: Path, bad: str, field: str, words: str
) -> None:
    f = tmp_path / "egress.yaml"
    f.write_text("\n---\n".join([guide.NAMESPACE, guide.EGRESS_NETWORK, bad]))
    with egresskit.connect("local") as c:
        with pytest.raises(ManifestError) as err:
            c.apply(f)
        (problem,) = err.value.problems
        assert (problem.source, problem.document, problem.path) == (str(f), 3, field)
        assert words in str(problem)
        # Nothing half-applied: the two good documents before it were not stored either.
        with pytest.raises(BackendError):
            c.get("namespace", "egress-test")
        assert c.objects() == []


def test_patch_is_held_to_the_crd_too() -> None:
    with egresskit.connect("local") as c:
        c.apply([guide.NAMESPACE, guide.EGRESS_NETWORK])
        with pytest.raises(ManifestError, match=r"spec.trafficPolicy: expected one of Allow, Deny"):
            c.patch(
                "egressnetwork",
                "all-egress-traffic",
                {"spec": {"trafficPolicy": "Block"}},
                namespace="egress-test",
            )
        with pytest.raises(ManifestError, match=r'did you mean "trafficPolicy"'):
            c.patch(
                "egressnetwork",
                "all-egress-traffic",
                {"spec": {"trafficpolicy": "Deny"}},
                namespace="egress-test",
            )
        kept = c.get("egressnetwork", "all-egress-traffic", namespace="egress-test")
        assert kept["spec"] == {"trafficPolicy": "Allow"}
