"""What the proxy and its protocol handlers share: their bounds, and what a handler may
ask of the proxy.

Job: break the circle between :mod:`egresskit.mesh.proxy` (which hands connections to
the protocol handlers) and :mod:`egresskit.mesh.http1` (which needs the proxy's policy
snapshot, metrics, resolver and upstream table): both import this module, neither the
other's internals. A new handler (HTTP/2) takes the same :class:`DataPlane`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from egresskit.mesh.metrics import ProxyMetrics
    from egresskit.policy.decision import Decision
    from egresskit.policy.snapshot import Snapshot

#: How long a closed connection may take to flush before it is reset.
CLOSE_GRACE = 5.0

#: Where an allowed or redirected stream goes: (original host name, ip, port, is_tls,
#: decision) -> (host, port) on loopback, or None when nothing answers there.
Upstreams = Callable[[str | None, str, int, bool, "Decision"], tuple[str, int] | None]


@dataclass(kw_only=True)
class ProxyConfig:
    """Every wait of the proxy is bounded by one of these (seconds) or by the head size."""

    detect_timeout: float = 10.0
    #: How long a client may take to send a request head (slowloris bound).
    request_head_timeout: float = 10.0
    #: How long a keep-alive connection may sit idle between requests.
    idle_timeout: float = 60.0
    connect_timeout: float = 3.0
    #: Bound on waiting for the upstream's response head (Linkerd has no default; a hung
    #: upstream must not hold a notebook forever).
    response_timeout: float = 30.0
    max_header_bytes: int = 64 * 1024


class DataPlane(Protocol):
    """What a protocol handler asks of the pod's proxy (:class:`~egresskit.mesh.proxy.
    EgressProxy` is one)."""

    @property
    def namespace(self) -> str: ...

    @property
    def pod(self) -> str:
        """The pod's name (for log lines)."""
        ...

    @property
    def config(self) -> ProxyConfig: ...

    @property
    def metrics(self) -> ProxyMetrics: ...

    @property
    def snapshot(self) -> Callable[[], Snapshot]:
        """The policy in force now (one call per request head)."""
        ...

    @property
    def upstreams(self) -> Upstreams: ...

    def resolve(self, host: str | None, fixed_ip: str | None) -> str | None:
        """The original destination's IP for a name (or the fixed one)."""
        ...
