"""The impact of a policy change: which requests change outcome, before it is applied.

Job: for each request of a set, ask the engine (:func:`egresskit.explain`) under the current
policy and under the proposed one, and keep only the requests whose outcome or backend
changes, grouped as a reviewer reads them:

* ``newly forbidden``: was not forbidden, now is (the change breaks it);
* ``newly allowed``: now reaches its original destination, and did not before;
* ``newly redirected``: now goes to an in-cluster Service (or gets an HTTP redirect);
* ``backend changed``: same outcome, another backend (e.g. a different Service);
* ``newly failing``: anything else the proxy cannot serve any more (invalid backend,
  protocol mismatch).

A change of route alone (``http-egress-allow`` to ``httpbin-get``, both forwarding) is not a
change in behaviour and is not listed. The set of requests (:class:`~egresskit.probes.Probe`)
comes from :mod:`egresskit.probes`: a file of URLs, or the traffic the proxies saw.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from egresskit.errors import EgressKitError
from egresskit.explaining import explain
from egresskit.policy.decision import Decision
from egresskit.probes import Probe

GROUPS = (
    "newly forbidden",
    "newly allowed",
    "newly redirected",
    "backend changed",
    "newly failing",
)


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """One probe under both policies."""

    probe: Probe
    before: Decision | None
    after: Decision | None
    #: One of GROUPS, or "" when the behaviour does not change.
    group: str
    error: str = ""


@dataclass(frozen=True, kw_only=True)
class Impact:
    """Every probe judged twice; ``changes`` are the ones a reviewer must read."""

    namespace: str
    outcomes: list[Outcome]
    #: What the request set could not know (hostname labels off, paths not recorded, ...).
    lost: list[str] = field(default_factory=list)

    @property
    def changes(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.group]

    def grouped(self) -> dict[str, list[Outcome]]:
        return {g: [o for o in self.outcomes if o.group == g] for g in GROUPS}

    def frame(self) -> pd.DataFrame:
        """Only the changes: one row each, in group order."""
        rows = [
            {
                "change": o.group,
                "request": o.probe.label,
                "before": _short(o.before),
                "after": _short(o.after),
                "seen": o.probe.seen,
                "note": o.probe.note or o.error,
            }
            for group in GROUPS
            for o in self.outcomes
            if o.group == group
        ]
        return pd.DataFrame(rows, columns=["change", "request", "before", "after", "seen", "note"])

    def text(self) -> str:
        lines = [
            f"{len(self.changes)} of {len(self.outcomes)} requests change "
            f"(client namespace {self.namespace})"
        ]
        for group, items in self.grouped().items():
            if not items:
                continue
            lines.append(f"{group} ({len(items)}):")
            for o in items:
                seen = f"  [seen {o.probe.seen:g}x]" if o.probe.seen else ""
                lines.append(f"  {o.probe.label}{seen}")
                lines.append(f"      before: {_short(o.before)}")
                lines.append(f"      after:  {_short(o.after)}")
                if o.probe.note:
                    lines.append(f"      note:   {o.probe.note}")
        same = [o.probe.label for o in self.outcomes if not o.group and not o.error]
        if same:
            lines.append(f"unchanged ({len(same)}): {', '.join(same)}")
        errors = [o for o in self.outcomes if o.error]
        for o in errors:
            lines.append(f"cannot judge {o.probe.label}: {o.error}")
        for text in self.lost:
            lines.append(f"not recorded: {text}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.text()


def _short(d: Decision | None) -> str:
    if d is None:
        return "(cannot be judged)"
    backend = f" -> {d.backend}" if d.outcome == "redirected" and d.backend else ""
    return d.summary() + backend


def classify(before: Decision, after: Decision) -> str:
    """Which group a (before, after) pair belongs to; "" when behaviour is unchanged."""
    if before.outcome != after.outcome:
        if after.outcome in ("forbidden", "allowed", "redirected"):
            return f"newly {after.outcome}"
        return "newly failing"
    if (before.backend, before.target, before.location) != (
        after.backend,
        after.target,
        after.location,
    ):
        return "backend changed"
    return ""


def impact(
    current: object,
    proposed: object,
    probes: Iterable[Probe],
    *,
    namespace: str = "default",
    hosts: dict[str, str] | None = None,
    lost: Sequence[str] = (),
) -> Impact:
    """Each probe under ``current`` and ``proposed`` (anything :func:`explain` takes)."""
    from egresskit.explaining import snapshot_of

    before_snap, after_snap = snapshot_of(current), snapshot_of(proposed)
    outcomes = []
    for probe in probes:
        try:
            kw: dict[str, Any] = {"namespace": namespace, "hosts": hosts, "method": probe.method}
            before = explain(before_snap, probe.url, headers=dict(probe.headers), **kw)
            after = explain(after_snap, probe.url, headers=dict(probe.headers), **kw)
        except EgressKitError as exc:
            outcomes.append(Outcome(probe=probe, before=None, after=None, group="", error=str(exc)))
            continue
        outcomes.append(
            Outcome(probe=probe, before=before, after=after, group=classify(before, after))
        )
    return Impact(namespace=namespace, outcomes=outcomes, lost=list(lost))
