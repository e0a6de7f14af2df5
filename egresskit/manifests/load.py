"""Load a batch of manifests: YAML text, files, dicts, or lists of those.

Job: split the input into documents, hand each to :func:`~egresskit.manifests.parse.read_object`
and either return every object or reject the whole batch.

Rules:

- All or nothing, like a careful ``kubectl apply``: every problem in every document is
  collected, then :class:`~egresskit.errors.ManifestError` lists them all; nothing is
  returned from a batch with one bad document.
- Documents are numbered from 1 per source name (``<string>``, ``<dict>``, the file path, or
  ``source_name``), counting empty documents, so ``egress.yaml: document 3`` is the third
  ``---`` section of that file. A ``kind: List`` keeps its own number and names its items
  ``items[N]`` in the field path.
- Empty documents are skipped. Two objects with the same group/kind/namespace/name: the
  later one wins (as a second ``kubectl apply`` would), in the later one's place.
- PyYAML errors become problems here, with the line and column of PyYAML's mark (1-based,
  counted over the whole text).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from egresskit.errors import ManifestError, Problem
from egresskit.manifests.model import K8sObject, Source
from egresskit.manifests.parse import read_object, show

#: What :func:`load_manifests` accepts (the same shape as ``Cluster.apply``).
ManifestSource = str | Path | Mapping[str, Any] | Iterable[Any]


def load_manifests(
    source: ManifestSource, *, default_namespace: str = "default", source_name: str | None = None
) -> list[K8sObject]:
    """Parse every document in ``source``; raise :class:`ManifestError` if any is invalid.

    ``source`` is YAML text (one or more documents), a :class:`~pathlib.Path` to a YAML file,
    one manifest as a mapping, or a list (any iterable) mixing those. Namespaced objects without a
    namespace get ``default_namespace``. ``source_name`` replaces ``<string>``, ``<dict>`` or
    the file path in messages.
    """
    problems: list[Problem] = []
    objects: list[K8sObject] = []
    numbers: dict[str, int] = {}
    for src, doc in _documents(source, source_name, numbers, problems):
        if doc is None:
            continue
        if isinstance(doc, Mapping) and doc.get("kind") == "List" and "items" in doc:
            items = doc.get("items")
            if not isinstance(items, list):
                problems.append(_problem(src, "items", "a list", show(items)))
                continue
            for i, item in enumerate(items):
                _collect(item, src, f"items[{i}]", default_namespace, objects, problems)
        else:
            _collect(doc, src, "", default_namespace, objects, problems)
    if problems:
        raise ManifestError(problems)
    return _later_wins(objects)


def _collect(
    doc: Any,
    src: Source,
    prefix: str,
    default_namespace: str,
    objects: list[K8sObject],
    problems: list[Problem],
) -> None:
    obj, found = read_object(doc, source=src, default_namespace=default_namespace, prefix=prefix)
    problems.extend(found)
    if obj is not None:
        objects.append(obj)


def _documents(
    source: Any, name: str | None, numbers: dict[str, int], problems: list[Problem]
) -> Iterator[tuple[Source, Any]]:
    if isinstance(source, Mapping):
        yield _next(name or "<dict>", numbers), source
    elif isinstance(source, str):
        yield from _yaml(source, name or "<string>", numbers, problems)
    elif isinstance(source, Path):
        label = name or str(source)
        try:
            text = source.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            problems.append(_problem(Source(name=label, document=None), "", "a readable "
                                     "UTF-8 YAML file", reason))  # fmt: skip
            return
        yield from _yaml(text, label, numbers, problems)
    elif isinstance(source, Iterable) and not isinstance(source, bytes | bytearray):
        for item in source:
            yield from _documents(item, name, numbers, problems)
    else:
        raise TypeError(
            "manifests must be YAML text, a pathlib.Path, a mapping or a list of those, "
            f"not {type(source).__name__}"
        )


def _yaml(
    text: str, name: str, numbers: dict[str, int], problems: list[Problem]
) -> Iterator[tuple[Source, Any]]:
    try:
        for doc in yaml.safe_load_all(text):
            yield _next(name, numbers), doc
    except yaml.YAMLError as exc:
        # PyYAML cannot resume after an error, so the rest of this text is not read.
        src = _next(name, numbers)
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        what = getattr(exc, "problem", None) or str(exc)
        context = getattr(exc, "context", None)
        found = f"{what} ({context})" if context else str(what)
        problems.append(_problem(src, where, "valid YAML", found))


def _next(name: str, numbers: dict[str, int]) -> Source:
    numbers[name] = numbers.get(name, 0) + 1
    return Source(name=name, document=numbers[name])


def _problem(src: Source, path: str, expected: str, found: str) -> Problem:
    return Problem(
        source=src.name, document=src.document, obj=None, path=path, expected=expected, found=found
    )


def _later_wins(objects: list[K8sObject]) -> list[K8sObject]:
    last = {obj.key: i for i, obj in enumerate(objects)}
    return [obj for i, obj in enumerate(objects) if last[obj.key] == i]
