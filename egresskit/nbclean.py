"""Committed notebooks carry nothing of the machine that executed them.

Job: remove what papermill and Jupyter write about one run on one machine (papermill's
``input_path``/``output_path``, environment, start and end times; each cell's ``execution``
timestamps and papermill record; the interpreter's patch version), and find what is left
that names a machine (absolute home, work or temporary paths, the host name).

Rules:

- :func:`clean` is pure (a notebook dict in, a cleaned copy out); cell sources and outputs
  are never changed, so nbval compares exactly what was executed.
- :func:`machine_specific` reports, it does not fix: a path printed in an output is a bug of
  the cell that printed it.
- ``python -m egresskit.nbclean FILE...`` cleans notebooks in place (``egresskit.runner``'s
  refresh calls :func:`clean_file` after executing each one).
"""

from __future__ import annotations

import copy
import json
import re
import socket
import sys
from pathlib import Path
from typing import Any

#: Papermill's notebook-level keys that describe one run, not the notebook.
RUN_KEYS = (
    "input_path",
    "output_path",
    "environment_variables",
    "start_time",
    "end_time",
    "duration",
    "exception",
)
#: Absolute paths that belong to one machine.
MACHINE_PATH = re.compile(
    r"(?<![\w.])/(?:root|work|tmp|home/[^/\s\"']+|Users/[^/\s\"']+)(?=[/\"'\s]|$)"
)


def clean(nb: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``nb`` without run- and machine-specific metadata."""
    out = copy.deepcopy(nb)
    meta = out.setdefault("metadata", {})
    pm = meta.get("papermill")
    if isinstance(pm, dict):
        for key in RUN_KEYS:
            pm.pop(key, None)
    lang = meta.get("language_info")
    if isinstance(lang, dict):
        lang.pop("version", None)
    for cell in out.get("cells", []):
        cmeta = cell.get("metadata", {})
        cmeta.pop("execution", None)
        cmeta.pop("papermill", None)
    return out


def machine_specific(nb: dict[str, Any], *, hostname: str | None = None) -> list[str]:
    """Every place in ``nb`` that names a machine: a run's paths, or any absolute path or
    the host name anywhere in its metadata, sources or outputs."""
    found = []
    pm = nb.get("metadata", {}).get("papermill", {})
    for key in ("input_path", "output_path"):
        if pm.get(key):
            found.append(f"metadata.papermill.{key}: {pm[key]}")
    host = hostname if hostname is not None else socket.gethostname()
    host_re = re.compile(rf"\b{re.escape(host)}\b") if len(host) >= 3 else None
    for where, text in _texts(nb):
        for m in MACHINE_PATH.finditer(text):
            found.append(f"{where}: absolute path {text[m.start() : m.start() + 60]!r}")
        if host_re is not None and host_re.search(text):
            found.append(f"{where}: host name {host!r}")
    return found


def _texts(nb: dict[str, Any]) -> list[tuple[str, str]]:
    out = [("metadata", json.dumps(nb.get("metadata", {})))]
    for i, cell in enumerate(nb.get("cells", [])):
        out.append((f"cell {i} metadata", json.dumps(cell.get("metadata", {}))))
        out.append((f"cell {i} source", "".join(cell.get("source", ""))))
        for j, output in enumerate(cell.get("outputs", [])):
            out.append((f"cell {i} output {j}", json.dumps(output)))
    return out


def clean_file(path: Path) -> None:
    """Clean one notebook file in place (same JSON layout as nbformat writes)."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    text = json.dumps(clean(nb), indent=1, sort_keys=True, ensure_ascii=False)
    path.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    for name in sys.argv[1:]:
        clean_file(Path(name))
