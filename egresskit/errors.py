"""The kit's one exception tree.

Everything egresskit raises on purpose derives from :class:`EgressKitError`;
foreign exceptions (PyYAML, sockets, the kubernetes client) are wrapped once, at
the boundary where they happen, with ``raise ... from exc``::

    EgressKitError
    ├── ManifestError          one or more documents are malformed or invalid
    │                          (``.problems`` lists every :class:`Problem`)
    ├── PolicyError            a question the engine cannot answer (bad URL, unknown host)
    ├── BackendError           a cluster backend failed (API error, no such context, ...)
    │   ├── UnsupportedWorkload    the local backend cannot run this image
    │   └── ClusterClosed          a call on a cluster facade after its close()
    ├── NotRunning             a call that needs running traffic found none (says why)
    ├── WaitTimeout            a bounded wait ran out; says what it waited for and saw last
    └── VerificationFailed     a notebook verify step saw something other than expected
"""

from __future__ import annotations

from dataclasses import dataclass


class EgressKitError(Exception):
    """Base class of every error egresskit raises on purpose."""


@dataclass(frozen=True, kw_only=True)
class Problem:
    """One thing wrong with one document, located precisely.

    Rendered as ``source: document N (Kind ns/name): field.path: expected X, found Y``.
    """

    source: str
    document: int | None
    obj: str | None
    path: str
    expected: str
    found: str

    def __str__(self) -> str:
        where = self.source
        if self.document is not None:
            where += f": document {self.document}"
        if self.obj:
            where += f" ({self.obj})"
        field = f": {self.path}" if self.path else ""
        return f"{where}{field}: expected {self.expected}, found {self.found}"


class ManifestError(EgressKitError):
    """The batch was rejected whole; ``problems`` says every place that is wrong."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        lines = [str(p) for p in self.problems]
        head = lines[0] if len(lines) == 1 else f"{len(lines)} problems, nothing applied:"
        body = "" if len(lines) == 1 else "\n" + "\n".join(f"  - {line}" for line in lines)
        super().__init__(head + body)


class PolicyError(EgressKitError):
    """The engine was asked something it cannot answer (bad URL, unknown host)."""


class BackendError(EgressKitError):
    """A cluster backend failed; the message carries the backend's own words."""


class UnsupportedWorkload(BackendError):
    """The local backend cannot run this workload (an image it does not emulate)."""


class ClusterClosed(BackendError):
    """The cluster facade was closed; every later call raises this, once per call."""


class WaitTimeout(EgressKitError):
    """A bounded wait ran out."""

    def __init__(self, what: str, seconds: float, last_seen: str) -> None:
        self.what = what
        self.seconds = seconds
        self.last_seen = last_seen
        super().__init__(f"timed out after {seconds:g}s waiting for {what}; last seen: {last_seen}")


class _OneLine(EgressKitError):
    """An error a notebook shows as its message alone, without a traceback.

    IPython asks an exception for ``_render_traceback_()`` before formatting a traceback
    (``InteractiveShell.showtraceback``); what it returns is the whole error output. The
    cell still fails, so Run All stops and papermill records the error (ename, evalue).
    """

    def _render_traceback_(self) -> list[str]:
        return str(self).splitlines() or [type(self).__name__]


class TrafficInterrupted(KeyboardInterrupt):
    """Ctrl-C in a traffic or live cell, after the traffic was stopped: still a
    KeyboardInterrupt (the cell fails, so Run All stops), shown as one line instead of a
    traceback through threading's internals (IPython's ``_render_traceback_``, as above)."""

    def _render_traceback_(self) -> list[str]:
        return [f"KeyboardInterrupt: {self}"]


class NotRunning(_OneLine):
    """A call that needs running traffic (``run_for``, ``watch``) found none; says why."""


class VerificationFailed(_OneLine):
    """A verify step saw something other than what the guide expects: its message is the
    ``FAIL`` line (with a hint when there is one), shown without a traceback."""
