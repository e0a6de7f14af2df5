"""Helpers for contract tests: read the proxy's metrics the way a user would."""

from __future__ import annotations

from typing import Any

from egresskit.analysis.parse import parse_proxy_metrics


def samples(
    cluster: Any, metric: str, pod: str = "client", namespace: str = "egress-test"
) -> list[tuple[dict[str, str], float]]:
    scrape = parse_proxy_metrics(cluster.proxy_metrics(pod, namespace=namespace))
    scrape.raise_for_errors()
    return [(dict(s.labels), s.value) for s in scrape.samples if s.metric == metric]


def value(cluster: Any, metric: str, **labels: str) -> float:
    """Sum of the samples of ``metric`` whose labels include ``labels``."""
    return sum(
        v for lbl, v in samples(cluster, metric) if all(lbl.get(k) == x for k, x in labels.items())
    )


def eventually(
    cluster: Any, metric: str, expected: float, *, within: float = 5.0, **labels: str
) -> float:
    """The value once it equals ``expected`` or ``within`` seconds passed (connection
    closes are counted when the proxy sees them, a moment after curl has exited)."""
    import time

    deadline = time.monotonic() + within
    while True:
        got = value(cluster, metric, **labels)
        if got == expected or time.monotonic() >= deadline:
            return got
        time.sleep(0.02)
