"""Policy-change markers for time charts: a dashed rule per change, labels that never
overlap each other or the legend.

Job: place each change's label (``EgressNetwork all-egress-traffic: Deny``) in a band
above the plot. Labels go on rows: a label takes the first row where it does not overlap
a label already there; a label that would run past the right edge is right-aligned to its
rule instead. The legend sits below the plot (see charts.py), so the band never meets it.

Rules:

* Placement is a pure function of pixel positions and estimated text widths
  (:func:`label_rows`): testable without rendering. Widths are estimated generously
  (:data:`CHAR_PX` per character at :data:`FONT_SIZE`), so an estimate errs on the side of
  a new row, never of an overlap.
* The time scale's domain is explicit and shared with the plots below, so a label's pixel
  position is known before Vega renders anything.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import altair as alt
import pandas as pd

from egresskit.cluster.base import ChangeRecord

__all__ = ["CHAR_PX", "FONT_SIZE", "Placement", "change_band", "change_rules", "label_rows"]

FONT_SIZE = 10
#: Upper bound of the average glyph width of Vega's default sans-serif at 10 px.
CHAR_PX = 6.5
ROW_PX = 14
_GAP = 6  # pixels kept free between two labels on one row
_DX = 3  # label offset from its rule


@dataclass(frozen=True)
class Placement:
    row: int
    align: str  # "left": text starts right of the rule; "right": text ends left of it
    left: float  # pixel span the text takes
    right: float

    @property
    def x(self) -> float:
        """The rule's pixel position."""
        return self.left - _DX if self.align == "left" else self.right + _DX


def label_rows(xs: Sequence[float], widths: Sequence[float], width: float) -> list[Placement]:
    """Rows and alignment for labels at pixel ``xs`` (in any order) of ``widths``, in a
    plot ``width`` pixels wide.

    Each change's rule runs from its label's row down to the plot. No two labels on one
    row overlap (``_GAP`` apart), and no rule crosses a label: a label on row ``r`` keeps
    clear of the rules of labels on rows ``<= r``, and its own rule keeps clear of labels
    on rows ``>= r``. A label is right-aligned to its rule when left-aligned it would run
    past ``width``.
    """
    placed: dict[int, Placement] = {}
    for i in sorted(range(len(xs)), key=lambda k: (xs[k], k)):
        x, w = xs[i], widths[i]
        left = (x + _DX, x + _DX + w)
        right = (x - _DX - w, x - _DX)
        prefer = [left, right] if left[1] <= width or right[0] < 0 else [right, left]
        choice = _first_free(x, prefer, placed.values(), len(xs))
        placed[i] = choice
    return [placed[i] for i in range(len(xs))]


def _first_free(
    x: float, spans: list[tuple[float, float]], placed: Iterable[Placement], limit: int
) -> Placement:
    """The lowest clear row for the first alignment in ``spans`` that has one. Labels are
    placed left to right, so a left-aligned label always finds a row within ``limit``:
    no earlier rule lies right of its rule, and a row below every label covering its
    rule is free."""
    others = list(placed)
    for span in spans:
        align = "left" if span[0] > x else "right"
        for row in range(limit + 1):
            if _clear(x, span, row, others):
                return Placement(row, align, *span)
    raise AssertionError(f"no clear row for a label at x={x}")  # unreachable, see above


def _clear(x: float, span: tuple[float, float], row: int, others: list[Placement]) -> bool:
    a, b = span[0] - 1, span[1] + 1  # a rule needs a pixel of air either side of text
    for p in others:
        if p.row == row and not (span[1] + _GAP <= p.left or p.right + _GAP <= span[0]):
            return False  # two labels on one row
        if p.row <= row and a < p.x < b:
            return False  # an earlier rule crosses this text
        if p.row >= row and p.left - 1 < x < p.right + 1:
            return False  # this rule would cross that text
    return True


def _labels(changes: Sequence[ChangeRecord]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "at": pd.to_datetime([c.at for c in changes], utc=True),
            "change": [c.summary or f"{c.verb} {', '.join(c.objects)}" for c in changes],
            "verb": [c.verb for c in changes],
        }
    )


def change_rules(changes: Sequence[ChangeRecord], scale: alt.Scale) -> list[alt.Chart]:
    """A dashed vertical rule per change, for layering onto a plot (no text)."""
    if not changes:
        return []
    x = alt.X("at:T", scale=scale, title=None)
    rule: alt.Chart = (
        alt.Chart(_labels(changes))
        .mark_rule(color="#24292f", strokeDash=[4, 3])
        .encode(x=x, tooltip=["change:N", "verb:N", "at:T"])
    )
    return [rule]


def change_band(
    changes: Sequence[ChangeRecord],
    scale: alt.Scale,
    domain: tuple[pd.Timestamp, pd.Timestamp],
    *,
    width: int,
) -> alt.LayerChart | None:
    """The labelled band above the plots (None without changes)."""
    if not changes:
        return None
    data = _labels(changes)
    start, end = domain
    span = max((end - start).total_seconds(), 1e-9)
    xs = [(t - start).total_seconds() / span * width for t in data["at"]]
    widths = [len(text) * CHAR_PX for text in data["change"]]
    places = label_rows(xs, widths, width)
    data["ypx"] = [p.row * ROW_PX + 1 for p in places]
    data["align"] = [p.align for p in places]
    height = ROW_PX * (max(p.row for p in places) + 1) + 2
    data["bottom"] = height
    x = alt.X("at:T", scale=scale, axis=None, title=None)  # the plots below carry the axis
    rule = (
        alt.Chart(data)
        .mark_rule(color="#24292f", strokeDash=[4, 3])
        .encode(x=x, y=alt.Y("ypx:Q", scale=None), y2="bottom:Q")
    )
    texts = [
        alt.Chart(data[data["align"] == align])
        .mark_text(
            align=align,
            baseline="top",
            dx=_DX if align == "left" else -_DX,
            fontSize=FONT_SIZE,
            color="#24292f",
        )
        .encode(x=x, y=alt.Y("ypx:Q", scale=None, axis=None), text="change:N")
        for align in ("left", "right")
        if (data["align"] == align).any()
    ]
    return alt.LayerChart(layer=[rule, *texts]).properties(width=width, height=height)
