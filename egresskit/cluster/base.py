"""The cluster facade: one small contract, implemented by every backend.

Notebooks and tests talk to a :class:`Cluster` and never know which backend is behind
it (``local``: the embedded mesh on loopback; ``kind``/``kube``: a real cluster with
Linkerd). The verbs mirror the guide's ``kubectl``/``linkerd`` commands. Every verb is
synchronous; backends that need an event loop run it on a thread of their own.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

#: What ``apply`` accepts: YAML text, a path to a YAML file, one manifest as a dict,
#: or a list mixing those.
Manifests = str | Path | Mapping[str, Any] | Iterable["str | Path | Mapping[str, Any]"]

PatchType = Literal["merge"]


@dataclass(frozen=True, kw_only=True)
class CurlResult:
    """What one run of the real ``curl`` binary gave, as seen from inside the pod."""

    args: tuple[str, ...]
    exit_code: int
    #: ``None`` when no HTTP response arrived (connection closed, TLS error, ...).
    http_status: int | None
    stdout: str
    stderr: str
    #: Seconds from start to end as curl measured them (``%{time_total}``).
    time_total: float
    started_at: datetime = field(compare=False)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


@dataclass(frozen=True, kw_only=True)
class ChangeRecord:
    """One ``apply``/``patch``/``delete``, kept so charts can mark policy changes."""

    at: datetime
    verb: Literal["apply", "patch", "delete"]
    objects: tuple[str, ...]  # "Kind ns/name", in the order given
    summary: str  # short human label, e.g. "EgressNetwork all-egress-traffic: Deny"


@runtime_checkable
class Cluster(Protocol):
    """The facade every backend implements. Use it as a context manager."""

    name: str  # "local", "kind-egresskit", ...

    def __enter__(self) -> Cluster: ...
    def __exit__(self, *exc: object) -> None: ...
    def close(self) -> None: ...

    def apply(self, manifests: Manifests) -> list[str]:
        """Validate then apply all or nothing; returns "Kind ns/name configured|created".

        Returns once the change is in force for the next request (routes Accepted).
        """
        ...

    def patch(
        self,
        kind: str,
        name: str,
        patch: Mapping[str, Any] | str,
        *,
        namespace: str,
        type: PatchType = "merge",
    ) -> dict[str, Any]: ...

    def delete(self, kind: str, name: str, *, namespace: str | None = None) -> None: ...

    def get(self, kind: str, name: str, *, namespace: str | None = None) -> dict[str, Any]:
        """The object as the API server would return it, ``status`` included."""
        ...

    def curl(self, *args: str, pod: str, namespace: str, timeout: float = 30.0) -> CurlResult:
        """Run the real ``curl`` as if inside ``pod`` (its ``client`` container)."""
        ...

    def proxy_metrics(self, pod: str, *, namespace: str) -> str:
        """What ``linkerd dg proxy-metrics -n NS po/POD`` prints."""
        ...

    @property
    def changes(self) -> list[ChangeRecord]:
        """Every apply/patch/delete so far, oldest first."""
        ...
