"""A change is in force when its effect is observed: a bounded probe from inside a pod.

Job: after ``apply``/``patch``, curl one URL from a pod until it answers the way the change
says it should (``403`` once an EgressNetwork is ``Deny``, ``200`` once a route allows a
path), or give up after a bound and say what was seen last. Works on any backend through
the facade's ``curl``; on the local one the first probe already sees the change.

Why a probe and not the object's status: Linkerd's status controller writes conditions
without ``observedGeneration`` and does not rewrite an EgressNetwork's status when only its
``trafficPolicy`` changes, so after ``patch(... Deny)`` the status still reads as before; and
a route that is ``Accepted`` in the API may not yet be pushed to the proxies (the outbound
policy watch; docs/facts/linkerd-egress.md 4.3). ``audit.enforcement_delay`` measures the
same thing; this module only waits for it.

Rules: every wait is bounded (``versions.EFFECT_WAIT_TIMEOUT`` by default) and ends in
:class:`~egresskit.errors.WaitTimeout` naming the URL, the pod, what was expected and what
each probe saw last. Probes are real requests: they show up in the proxy's counters, so a
caller that counts requests takes its baseline after the wait.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from egresskit import versions
from egresskit.errors import WaitTimeout


@dataclass(frozen=True, kw_only=True)
class Effect:
    """What one request from ``pod`` answers once the change is in force."""

    url: str
    #: The HTTP status curl sees; ``None`` for no HTTP response (e.g. a denied TLS connection).
    http_status: int | None
    pod: str = "client"
    namespace: str = "egress-test"

    def describe(self) -> str:
        want = f"HTTP {self.http_status}" if self.http_status is not None else "no HTTP response"
        return f"{self.url} from {self.namespace}/{self.pod} to answer {want}"


@dataclass(frozen=True, kw_only=True)
class Observed:
    """The effect was seen: after how many probes and how long."""

    probes: int
    seconds: float


def _seen(result: Any) -> str:
    if result.http_status is not None:
        return f"HTTP {result.http_status}"
    return f"no HTTP response (curl exit {result.exit_code})"


def await_effect(
    cluster: Any,
    effect: Effect,
    *,
    timeout: float = versions.EFFECT_WAIT_TIMEOUT,
    interval: float = versions.POLL_INTERVAL,
    sleep: Callable[[float], None] = time.sleep,
) -> Observed:
    """Probe ``effect.url`` with curl from ``effect.pod`` until it answers as expected."""
    started = time.monotonic()
    probes = 0
    last = "no probe finished"
    while True:
        # Each probe is itself bounded by curl's --max-time, never past the overall bound.
        left = max(1.0, timeout - (time.monotonic() - started))
        result = cluster.curl(
            "-s",
            "-o",
            "/dev/null",
            effect.url,
            pod=effect.pod,
            namespace=effect.namespace,
            timeout=min(left, 10.0),
        )
        probes += 1
        if result.http_status == effect.http_status and (
            effect.http_status is not None or result.exit_code != 0
        ):
            return Observed(probes=probes, seconds=time.monotonic() - started)
        last = f"{_seen(result)} (probe {probes})"
        if time.monotonic() - started >= timeout:
            raise WaitTimeout(effect.describe(), timeout, last)
        sleep(interval)
