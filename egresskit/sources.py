"""Where the CLI's manifests come from: ``-f`` as kubectl reads it.

Job: turn the ``-f/--filename`` values of a command into parsed objects, the way
``kubectl apply -f`` reads them, all or nothing.

Rules (kubectl's ``resource.Builder`` file visitor, ``FilenameOptions``):

- ``-f`` repeats; each value is a file, a directory or ``-`` (standard input, read once).
- A directory contributes its files ending in ``.yaml``, ``.yml`` or ``.json``, in lexical
  order; subdirectories only with ``-R/--recursive``. A directory with none of those is an
  error, as in kubectl, rather than a silent empty policy.
- A path that does not exist is an error naming it; nothing is read from a batch with one
  bad source. Every problem of every document is reported together
  (:class:`~egresskit.errors.ManifestError`), each naming its file and document.
- Objects without a namespace get ``-n`` (kubectl's ``--namespace`` for the objects it
  applies); two objects with the same kind/namespace/name: the later one wins.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TextIO

from egresskit.errors import ManifestError, Problem
from egresskit.manifests import load_manifests
from egresskit.manifests.model import K8sObject

#: The extensions kubectl reads from a directory (``FileExtensions``).
EXTENSIONS = (".yaml", ".yml", ".json")
STDIN = "-"


def manifest_files(value: str, *, recursive: bool) -> list[Path]:
    """The files one ``-f`` value names (a file, or a directory's manifests)."""
    path = Path(value)
    if path.is_dir():
        pattern = "**/*" if recursive else "*"
        found = sorted(
            p for p in path.glob(pattern) if p.is_file() and p.suffix.lower() in EXTENSIONS
        )
        if not found:
            hint = "" if recursive else " (add -R to read its subdirectories)"
            raise ManifestError(
                [
                    _problem(
                        value,
                        "files ending in .yaml, .yml or .json" + hint,
                        "none in this directory",
                    )
                ]
            )
        return found
    if not path.exists():
        raise ManifestError([_problem(value, "a file, a directory or - (stdin)", "no such path")])
    return [path]


def read_filenames(
    values: Sequence[str],
    *,
    recursive: bool = False,
    namespace: str = "default",
    stdin: TextIO | None = None,
) -> list[K8sObject]:
    """Every object the ``-f`` values name, parsed and validated, or ManifestError."""
    problems: list[Problem] = []
    objects: list[K8sObject] = []
    stdin_read = False
    for value in values:
        try:
            if value == STDIN:
                if stdin_read:
                    raise ManifestError([_problem("-", "stdin given once", "- given twice")])
                stdin_read = True
                text = (stdin or sys.stdin).read()
                objects += load_manifests(text, default_namespace=namespace, source_name="<stdin>")
                continue
            for path in manifest_files(value, recursive=recursive):
                objects += load_manifests(path, default_namespace=namespace)
        except ManifestError as exc:
            problems += exc.problems
    if problems:
        raise ManifestError(problems)
    last = {obj.key: i for i, obj in enumerate(objects)}
    return [obj for i, obj in enumerate(objects) if last[obj.key] == i]


def overlay(current: Sequence[K8sObject], proposed: Sequence[K8sObject]) -> list[K8sObject]:
    """``current`` after ``kubectl apply`` of ``proposed``: same key replaced in place, new
    objects added after. (Deletions are not expressed by apply; see ``egresskit diff``.)"""
    replaced = {obj.key: obj for obj in proposed}
    out = []
    for old in current:
        new = replaced.pop(old.key, None)
        if new is None:
            out.append(old)
        elif new.metadata.creation_timestamp is None:
            # An update keeps the object's creationTimestamp (route order depends on it).
            stamp = old.metadata.creation_timestamp
            out.append(replace(new, metadata=replace(new.metadata, creation_timestamp=stamp)))
        else:
            out.append(new)
    return out + [obj for obj in proposed if obj.key in replaced]


def _problem(source: str, expected: str, found: str) -> Problem:
    return Problem(source=source, document=None, obj=None, path="", expected=expected, found=found)
