"""Shared fixtures: the cluster facade, on the local backend always and on a real cluster
when EGRESSKIT_KUBE_CONTEXT names one (``kube`` marker)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest

from tests.kube_fixtures import (
    delete_test_namespace,
    kube_cluster,
    kube_context,
    skip_kube_tests_without_context,
)

__all__ = ["kube_cluster"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip_kube_tests_without_context(items)


@pytest.fixture(params=["local", pytest.param("kube", marks=pytest.mark.kube)])
def cluster(request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh cluster facade for one test. On ``kube`` the test namespace is deleted after."""
    import egresskit

    if request.param == "local":
        with egresskit.connect("local") as c:
            yield c
        return
    context = kube_context()
    if context is None:  # pragma: no cover - deselected by the hook above
        pytest.skip("no kube context")
    with egresskit.connect("kube", context=context) as c:
        yield c
        with contextlib.suppress(Exception):
            delete_test_namespace(c, "egress-test")
