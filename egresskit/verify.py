"""Verify steps, as a tutorial platform checks them: one clear line, raise on failure.

Every check prints ``PASS <what>: expected <x>, saw <y>`` or raises
:class:`~egresskit.errors.VerificationFailed` whose message is the ``FAIL`` line and, when
the check has one, a ``hint:`` line. In a notebook that message is the cell's whole error
output (no traceback: ``VerificationFailed._render_traceback_``), and the cell still fails,
so Run All and papermill stop there. Lines carry no times, counts or ports, so saved
outputs compare exactly (nbval).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from egresskit.errors import VerificationFailed

#: A hint, or a function computing it (called only when the check fails).
Hint = str | Callable[[], str] | None


def check(
    what: str,
    ok: bool,
    *,
    expected: object,
    seen: object,
    hint: Hint = None,
    out: Callable[[str], Any] = print,
) -> None:
    """Print PASS or raise FAIL (with the hint on a second line) for one condition."""
    line = f"{what}: expected {expected}, saw {seen}"
    if not ok:
        text = hint() if callable(hint) else hint
        raise VerificationFailed(f"FAIL {line}" + (f"\n  hint: {text}" if text else ""))
    out(f"PASS {line}")


def equal(
    what: str,
    expected: object,
    seen: object,
    *,
    hint: Hint = None,
    out: Callable[[str], Any] = print,
) -> None:
    check(what, expected == seen, expected=expected, seen=seen, hint=hint, out=out)
