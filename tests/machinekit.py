"""What the HTTP/1 exchange machine's tests share: the decision a forwarding judge gives
(an allowed request on route ``r``, so exchanges are counted) and where it forwards."""

from __future__ import annotations

from egresskit.policy.decision import Decision

TARGET = ("127.0.0.1", 8080)
DECISION = Decision(
    outcome="allowed",
    protocol=None,
    family="http",
    parent=None,
    route=None,
    backend=None,
    target="original",
    labels={"route_name": "r"},
)
