"""Prometheus sample lines laid out as the guide prints them: one label a line.

Job: turn exposition text (``name{a="1",b="2"} 3``, all labels on one line, as the proxy
writes them: docs/facts/linkerd-egress.md 6.3) into the guide's reading layout::

    name{
      a="1",
      b="2"
    } 3

Pure text in, text out. Comment lines and lines without labels are kept as they are;
label values keep their escapes (``\\"``, ``\\\\``, ``\\n``) exactly.
"""

from __future__ import annotations

import re

__all__ = ["one_label_per_line"]

# A sample line: name, a brace-delimited label set, the rest (value, optional timestamp).
_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)\{(?P<labels>.*)\}(?P<rest>\s.*)$")
# One label: name="value" with escapes inside the quotes (the text format's only escapes).
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*,?')


def one_label_per_line(text: str, indent: str = "  ") -> str:
    """``text`` with every labelled sample line spread over one line per label."""
    out = []
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        labels = _labels(m.group("labels")) if m else None
        if m is None or not labels:
            out.append(line)
            continue
        body = ",\n".join(f'{indent}{k}="{v}"' for k, v in labels)
        out.append(f"{m.group('name')}{{\n{body}\n}}{m.group('rest')}")
    return "\n".join(out)


def _labels(text: str) -> list[tuple[str, str]] | None:
    """The label pairs, or None when ``text`` is not exactly a label list."""
    pairs, pos = [], 0
    while pos < len(text):
        m = _LABEL.match(text, pos)
        if m is None or m.end() == pos:
            return None
        pairs.append((m.group(1), m.group(2)))
        pos = m.end()
    return pairs
