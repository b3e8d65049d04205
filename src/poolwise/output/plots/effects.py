"""The average comparison of each predictor on the outcome scale: one point and interval per
contrast (a level against the reference, or + 1 unit), from the table of
:func:`poolwise.comparison.effects.comparisons`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from poolwise.inference.summary import interval_columns
from poolwise.output.plots import style

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

__all__ = ["plot_comparisons"]


def contrast_labels(table: pd.DataFrame) -> list[str]:
    """``urban: 1 - 0``; a numeric predictor's ``x: +1``."""
    return [f"{t}: {c}" for t, c in zip(table["term"], table["contrast"], strict=True)]


def plot_comparisons(table: pd.DataFrame, *, outcome: str, title: str) -> Figure:
    """Each contrast's posterior mean and interval of the average difference in the
    probability of ``outcome``, with 0 (no difference) marked."""
    prob, kind = float(table.attrs["prob"]), str(table.attrs["kind"])
    from matplotlib.ticker import PercentFormatter

    lo, hi = interval_columns(prob, kind)
    labels = contrast_labels(table)
    y = np.arange(len(labels))[::-1]
    with style.rc():
        fig = style.figure(8.0, 2.3 + 0.42 * len(labels))
        ax = fig.subplots()
        ax.hlines(y, table[lo], table[hi], color=style.COLORS["partial"], lw=2.0,
                  label=f"{style.pct(prob)} {kind.upper()}")
        ax.plot(table["estimate"], y, "o", color=style.COLORS["partial"], ms=5.5,
                label="posterior mean")
        ax.axvline(0.0, color="#444444", ls=":", lw=1)
        ax.set_yticks(y, labels, fontsize=style.tick_fontsize(len(labels)))
        ax.set_ylim(-0.7, len(labels) - 0.3)
        ax.grid(axis="y", visible=False)
        ax.xaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=None))
        ax.set_xlabel(f"difference in the probability of {outcome} (percentage points)")
        handles, names = ax.get_legend_handles_labels()
        fig.legend(handles[::-1], names[::-1], loc="outside lower center", ncols=2,
                   frameon=False)
        style.suptitle(fig, title)
    return fig
