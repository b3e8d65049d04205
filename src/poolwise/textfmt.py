"""Text for people: numbers with significant digits, R-hat, and tables of text and badge cells.

The bottom of the presentation: every table, the CLI, the compact displays and the HTML report
format numbers here, so the same number prints the same way everywhere. Saved outputs (CSV,
JSON) keep full precision instead. Nothing here knows a poolwise type.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Badge", "Cell", "Table", "fmt_rhat", "fmt_sig"]


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
