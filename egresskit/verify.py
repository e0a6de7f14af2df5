"""Verify steps, as a tutorial platform checks them: one clear line, raise on failure.

Every check prints ``PASS <what>: expected <x>, saw <y>`` or raises
:class:`~egresskit.errors.VerificationFailed` whose message is the ``FAIL`` line, so a
failing step fails the notebook run (papermill) and names what went wrong. Lines carry
no times, counts or ports, so saved outputs compare exactly (nbval).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from egresskit.errors import VerificationFailed


def check(
    what: str, ok: bool, *, expected: object, seen: object, out: Callable[[str], Any] = print
) -> None:
    """Print PASS or raise FAIL for one condition."""
    line = f"{what}: expected {expected}, saw {seen}"
    if not ok:
        raise VerificationFailed(f"FAIL {line}")
    out(f"PASS {line}")


def equal(what: str, expected: object, seen: object, *, out: Callable[[str], Any] = print) -> None:
    check(what, expected == seen, expected=expected, seen=seen, out=out)
