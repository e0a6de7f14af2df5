"""Hooks for real-cluster (``kube``-marked) tests: selected by EGRESSKIT_KUBE_CONTEXT.

Use from ``tests/conftest.py``::

    from tests.kube_fixtures import kube_cluster, skip_kube_tests_without_context

    def pytest_collection_modifyitems(config, items):
        skip_kube_tests_without_context(items)

A ``kube`` test then takes the ``kube_cluster`` fixture. Without the variable every such test
is skipped with a reason that says how to run it; with it, the facade is connected to that
context once per session (``EGRESSKIT_KUBE_CONTEXT=kind-egresskit`` after
``egresskit cluster up``), and each such test gets a time limit that fits a real cluster
(``versions.KUBE_TEST_TIMEOUT`` instead of the 120 s of the local tests).

:func:`delete_test_namespace` is the teardown: pods deleted without a grace period (the
guide's pods ignore SIGTERM), so it does not wait 30 s per namespace.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import pytest

from egresskit import versions
from egresskit.cluster.kube import KubeCluster, connect_kube

KUBE_CONTEXT_ENV = "EGRESSKIT_KUBE_CONTEXT"
SKIP_REASON = (
    f"real-cluster test: set {KUBE_CONTEXT_ENV} to a kube context with Linkerd "
    "(e.g. kind-egresskit after `egresskit cluster up`) to run it"
)


def kube_context() -> str | None:
    """The context named by the environment, or ``None`` (blank counts as unset)."""
    return os.environ.get(KUBE_CONTEXT_ENV, "").strip() or None


def skip_kube_tests_without_context(items: Sequence[pytest.Item]) -> None:
    """Mark every ``kube`` test skipped, with a visible reason, when no context is given;
    with one, give each the real-cluster time limit (pytest-timeout's marker wins over the
    ini ``timeout``, and covers setup and teardown too)."""
    context = kube_context()
    for item in items:
        if item.get_closest_marker("kube") is None:
            continue
        if context is None:
            item.add_marker(pytest.mark.skip(reason=SKIP_REASON))
        else:
            item.add_marker(pytest.mark.timeout(versions.KUBE_TEST_TIMEOUT))


def delete_test_namespace(cluster: KubeCluster, namespace: str) -> None:
    """Teardown of a test's namespace: gone (404) before it returns, pods without a grace
    period (the test does not care how they stop)."""
    cluster.delete("namespace", namespace, grace_period=0)


@pytest.fixture(scope="session")
def kube_cluster() -> Iterator[KubeCluster]:
    """The facade on ``$EGRESSKIT_KUBE_CONTEXT``; skips the test when it is unset."""
    context = kube_context()
    if context is None:
        pytest.skip(SKIP_REASON)
    with connect_kube(context) as cluster:
        yield cluster
