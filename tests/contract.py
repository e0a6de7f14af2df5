"""Helpers for contract tests: read the proxy's metrics the way a user would.

Counts are taken ``since`` a :func:`snapshot` when a test has probed for a change's effect
first (:func:`egresskit.cluster.effect.await_effect`): the probes are real requests.
"""

from __future__ import annotations

from typing import Any

from egresskit.analysis.parse import parse_proxy_metrics


def samples(
    cluster: Any, metric: str, pod: str = "client", namespace: str = "egress-test"
) -> list[tuple[dict[str, str], float]]:
    scrape = parse_proxy_metrics(cluster.proxy_metrics(pod, namespace=namespace))
    scrape.raise_for_errors()
    return [(dict(s.labels), s.value) for s in scrape.samples if s.metric == metric]


Snapshot = dict[tuple[str, frozenset[tuple[str, str]]], float]


def snapshot(cluster: Any, pod: str = "client", namespace: str = "egress-test") -> Snapshot:
    """Every sample of the pod's proxy now, to count from."""
    scrape = parse_proxy_metrics(cluster.proxy_metrics(pod, namespace=namespace))
    scrape.raise_for_errors()
    return {(s.metric, frozenset(dict(s.labels).items())): s.value for s in scrape.samples}


def value(cluster: Any, metric: str, since: Snapshot | None = None, **labels: str) -> float:
    """Sum of the samples of ``metric`` whose labels include ``labels`` (minus what they were
    at ``since``)."""
    total = 0.0
    for lbl, v in samples(cluster, metric):
        if all(lbl.get(k) == x for k, x in labels.items()):
            total += v - (since or {}).get((metric, frozenset(lbl.items())), 0.0)
    return total


def eventually(
    cluster: Any,
    metric: str,
    expected: float,
    *,
    within: float = 5.0,
    since: Snapshot | None = None,
    **labels: str,
) -> float:
    """The value once it equals ``expected`` or ``within`` seconds passed (connection
    closes are counted when the proxy sees them, a moment after curl has exited)."""
    import time

    deadline = time.monotonic() + within
    while True:
        got = value(cluster, metric, since, **labels)
        if got == expected or time.monotonic() >= deadline:
            return got
        time.sleep(0.02)
