"""Text for people: numbers with significant digits, R-hat, and tables of text and badge cells.

The bottom of the presentation: every table, the CLI, the compact displays and the HTML report
format numbers here, so the same number prints the same way everywhere. Saved outputs (CSV,
JSON) keep full precision instead. Nothing here knows a poolwise type.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["ELLIPSIS", "MAX_LABEL", "Badge", "Cell", "LabelShortener", "Table", "fmt_rhat",
           "fmt_sig", "short_labels", "short_row_names"]


def _g(v: float) -> str:
    return f"{float(v):.6g}"


def fmt_sig(v: Any, digits: int | None = 3) -> str:
    """``v`` as text with ``digits`` significant digits, for people (tables, the CLI, the
    report): ``-0.00512``, ``0.392``, ``1.24``, ``1235``; ``digits=None``: a whole number.
    A nonzero value never prints as zero (tiny values use an exponent: ``3.1e-06``); NaN
    and None give ``""``. Saved outputs (CSV, JSON) keep full precision instead."""
    if v is None:
        return ""
    if isinstance(v, bool | np.bool_):
        return "yes" if v else "no"
    if isinstance(v, int | np.integer) and not isinstance(v, bool):
        return str(int(v))
    try:
        x = float(v)
    except (TypeError, ValueError):
        return str(v)
    if np.isnan(x):
        return ""
    if np.isinf(x):
        return "inf" if x > 0 else "-inf"
    if digits is None:
        return f"{x:.0f}"
    if x == 0.0:
        return "0"
    mantissa, exp = f"{x:.{digits - 1}e}".split("e")  # the exponent after rounding
    e = int(exp)
    if e < -4:
        return f"{float(mantissa):.{digits - 1}f}e{e:03d}".replace("e-0", "e-")
    return f"{x:.{max(0, digits - 1 - e)}f}"


def fmt_rhat(v: Any, threshold: float = 1.01) -> str:
    """R-hat with 3 decimals, or 4 where 3 would hide that it exceeds ``threshold``
    (1.0103 prints as ``1.0103``, never as a passing-looking ``1.010``); '' for NaN."""
    if v is None:
        return ""
    x = float(v)
    if np.isnan(x):
        return ""
    if np.isinf(x):
        return "inf"
    text = f"{x:.3f}"
    return f"{x:.4f}" if x > threshold and float(text) <= threshold else text


@dataclass(frozen=True)
class Badge:
    """A PASS / WARN / FAIL badge."""

    state: str  # "pass", "warn", "fail", or "info" (a note, not a check)

    @property
    def label(self) -> str:
        return {"pass": "PASS", "warn": "WARN", "fail": "FAIL", "info": "NOTE"}[self.state]

    def __str__(self) -> str:
        return self.label


Cell = str | Badge


@dataclass(frozen=True)
class Table:
    """A table of text (and badge) cells. ``text_cols``: left-aligned, wrapping columns."""

    header: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]
    cls: str = ""
    text_cols: tuple[int, ...] = ()

    def text(self, *, indent: str = "  ", max_width: int = 60) -> str:
        """Aligned plain text (cells cut to ``max_width`` characters)."""
        def cut(c: Cell) -> str:
            s = str(c)
            return s if len(s) <= max_width else s[: max_width - 3] + "..."

        cells = [list(map(cut, self.header))] + [list(map(cut, r)) for r in self.rows]
        widths = [max(len(r[i]) for r in cells) for i in range(len(self.header))]
        lines = []
        for r in cells:
            parts = [
                c.ljust(w) if (i == 0 or i in self.text_cols) else c.rjust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            ]
            lines.append(indent + "  ".join(parts).rstrip())
        return "\n".join(lines)


# ---- long labels in the terminal --------------------------------------------------------------

#: labels longer than this many characters are shortened in terminal tables (the CSV, JSON and
#: HTML outputs keep them whole)
MAX_LABEL = 40
#: what stands for the characters left out of a shortened label
ELLIPSIS = "..."
_TAIL = 12  # characters kept at the end of a shortened label (the rest of MAX_LABEL: its head)
_WINDOW = 10  # characters kept around the first difference of labels alike at both ends


def _head_tail(label: str, width: int) -> str:
    tail = min(_TAIL, (width - len(ELLIPSIS)) // 3)
    return label[: width - len(ELLIPSIS) - tail] + ELLIPSIS + label[-tail:]


def _first_differences(labels: list[str]) -> dict[str, int]:
    """For each of ``labels`` (distinct), the index of its first character that no other of
    them shares at the same place after the same prefix (its shortest unique prefix minus
    one); the closest label by prefix is a neighbour in sorted order."""
    order = sorted(labels)

    def common(a: str, b: str) -> int:
        n = min(len(a), len(b))
        return next((i for i in range(n) if a[i] != b[i]), n)

    out = {}
    for i, lab in enumerate(order):
        near = [common(lab, order[j]) for j in (i - 1, i + 1) if 0 <= j < len(order)]
        out[lab] = min(max(near, default=0), len(lab) - 1)
    return out


def _with_difference(label: str, d: int, width: int) -> str:
    """``label`` cut to its head, the characters from about index ``d`` (from the start of
    the number ``d`` is in: ``12346``, not ``346``) and its tail."""
    e = len(ELLIPSIS)
    tail = (width - 2 * e - _WINDOW) // 2
    head = width - 2 * e - _WINDOW - tail
    start = d - 2
    if label[d].isdigit():
        start = d
        while start > d - _WINDOW + 2 and label[start - 1].isdigit():
            start -= 1
    start = min(max(start, head), len(label) - tail - _WINDOW)
    if start <= head:  # the difference is near the start: the head shows it
        return _head_tail(label, width)
    if start + _WINDOW >= len(label) - tail:  # ... or near the end
        return label[:head] + ELLIPSIS + label[-(width - head - e):]
    return label[:head] + ELLIPSIS + label[start:start + _WINDOW] + ELLIPSIS + label[-tail:]


def _collisions(short: dict[str, str], whole: set[str]) -> list[list[str]]:
    by_form: dict[str, list[str]] = {}
    for lab, form in short.items():
        by_form.setdefault(form, []).append(lab)
    return [labs for form, labs in by_form.items() if len(labs) > 1 or form in whole]


def short_labels(labels: Any, width: int = MAX_LABEL) -> dict[str, str]:
    """The shortened form of each label longer than ``width`` characters (labels that fit are
    not in the result): its first characters, :data:`ELLIPSIS` and its last 12 characters,
    ``width`` characters in all. Distinct labels stay distinct on screen: labels that would
    look alike (the same start and end: ``https://host/a/<id>/index.html``) show the
    characters around the place where each first differs from the others instead
    (``https://h...<id>...index.html``); should two still look alike, they are numbered
    (``... #1``, ``... #2``, in sorted order), and a label that still matches another one
    is shown whole."""
    labels = list(dict.fromkeys(str(v) for v in labels))
    whole = {lab for lab in labels if len(lab) <= width}
    short = {lab: _head_tail(lab, width) for lab in labels if len(lab) > width}
    for group in _collisions(short, whole):
        firsts = _first_differences(group)
        short.update({lab: _with_difference(lab, firsts[lab], width) for lab in group})
    for group in _collisions(short, whole):
        short.update({lab: f"{short[lab]} #{i}" for i, lab in enumerate(sorted(group), 1)})
    for group in _collisions(short, whole):  # never two labels shown the same
        for lab in group:
            short.pop(lab)
    return short


def short_row_names(names: Any, width: int = MAX_LABEL) -> list[str]:
    """Row names with their labels shortened as :func:`short_labels` does: in ``x[label]``
    the label inside the brackets, any other name longer than ``width`` whole."""
    names = [str(n) for n in names]
    split = [(n[: n.index("[") + 1], n[n.index("[") + 1:-1], "]")
             if n.endswith("]") and "[" in n else ("", n, "") for n in names]
    short = short_labels([lab for _, lab, _ in split], width)
    return [head + short.get(lab, lab) + end for head, lab, end in split]


class LabelShortener:
    """Shortens the long labels of a set (:func:`short_labels`) in table cells and wherever
    they occur in a text (a finding naming the levels it is about), for the terminal."""

    _KEY = 16  # a long label is looked up by its first characters

    def __init__(self, labels: Any, width: int = MAX_LABEL) -> None:
        self._labels, self._width = labels, width  # shortened when first needed

    @functools.cached_property
    def short(self) -> dict[str, str]:
        """Each long label of the set -> its shortened form."""
        return short_labels(self._labels, self._width)

    @functools.cached_property
    def _by_key(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for lab in sorted(self.short, key=len, reverse=True):  # the longest match first
            out.setdefault(lab[: self._KEY], []).append(lab)
        return out

    def __call__(self, label: Any) -> str:
        return self.short.get(str(label), str(label))

    def text(self, text: str) -> str:
        """``text`` with every long label of the set replaced by its shortened form."""
        if len(text) <= self._width or not self.short:
            return text
        out, i, last = [], 0, 0
        while i <= len(text) - self._KEY:
            hit = next((lab for lab in self._by_key.get(text[i:i + self._KEY], ())
                        if text.startswith(lab, i)), None)
            if hit is None:
                i += 1
                continue
            out += [text[last:i], self.short[hit]]
            i = last = i + len(hit)
        return "".join(out) + text[last:]
