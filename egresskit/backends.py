"""``egresskit.connect`` lives here: one entry point over a backend registry.

``connect("local")`` (the default) is the embedded mesh; ``connect("kind")`` a kind
cluster named ``egresskit`` (or ``cluster=``); ``connect("kube", context=...)`` any kube
context with Linkerd. Every backend returns an object implementing
:class:`egresskit.cluster.base.Cluster`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from egresskit.cluster.base import Cluster
from egresskit.errors import BackendError


def _local(**kwargs: Any) -> Cluster:
    from egresskit.cluster.local import LocalCluster

    return LocalCluster(**kwargs)


def _kind(**kwargs: Any) -> Cluster:
    from egresskit.cluster.kube import connect_kind

    return connect_kind(**kwargs)


def _kube(**kwargs: Any) -> Cluster:
    from egresskit.cluster.kube import connect_kube

    return connect_kube(**kwargs)


BACKENDS: dict[str, Callable[..., Cluster]] = {"local": _local, "kind": _kind, "kube": _kube}


def connect(backend: str = "local", **kwargs: Any) -> Cluster:
    """A cluster facade for ``backend`` (``local``, ``kind`` or ``kube``)."""
    factory = BACKENDS.get(backend)
    if factory is None:
        raise BackendError(
            f"unknown backend {backend!r}: expected one of {', '.join(sorted(BACKENDS))}"
        )
    return factory(**kwargs)
