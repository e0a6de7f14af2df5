"""How `egresskit run` reads the verdict of a verify cell from an executed notebook."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from egresskit.runner import verify_steps


def executed(tmp_path: Path, text: str, *, error: bool = False) -> Path:
    outputs: list[dict[str, object]] = [{"output_type": "stream", "name": "stdout", "text": text}]
    if error:
        outputs.append({"output_type": "error", "ename": "X", "evalue": "", "traceback": []})
    cell = {"cell_type": "code", "metadata": {"tags": ["verify"]}, "outputs": outputs}
    path = tmp_path / "nb.ipynb"
    path.write_text(json.dumps({"cells": [cell]}))
    return path


@pytest.mark.parametrize(
    ("text", "error", "ok"),
    [
        ("PASS curl: expected 200, saw 200\n", False, True),
        (
            "PASS SayHello denied: expected FAILED_PRECONDITION, saw FAILED_PRECONDITION\n",
            False,
            True,
        ),
        ("FAIL curl: expected 403, saw 200\nhint: ...\n", False, False),
        ("PASS one\nFAIL two\n", False, False),
        ("PASS but the cell raised\n", True, False),
    ],
    ids=["pass", "grpc-status-in-pass", "fail", "second-line-fails", "error-output"],
)
def test_a_verify_cell_fails_only_on_a_fail_line_or_an_error(
    tmp_path: Path, text: str, error: bool, ok: bool
) -> None:
    (step,) = verify_steps(executed(tmp_path, text, error=error))
    assert step.ok is ok
    assert step.name == text.splitlines()[0]
