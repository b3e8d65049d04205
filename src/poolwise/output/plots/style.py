"""What every figure shares: a Figure outside pyplot, the rc settings, colours, line styles that
stay distinguishable in grey, titles wrapped to the figure's width (never clipped) and the
selection of levels shown when a group has too many to label.

Why one module: the comparison figures (:mod:`.pooling`), the estimates of one fit
(:mod:`.estimates`) and the sampler diagnostics (:mod:`.diagnostic`) draw with the same
settings, so a title or a legend looks and wraps the same in all of them.
"""

from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__: list[str] = []

COLORS = {
    "none": "#6b6b6b",
    "partial": "#1f5fa8",
    "complete": "#c0392b",
    "raw": "#111111",
    "observed": "#c0392b",
}
#: per model of a comparison: line style, width and drawing order, so that two curves of the
#: same shape (no pooling and complete pooling share their prior for a group's intercept)
#: both stay visible: the lower one wide and solid, the upper one narrow and dashed on it
LINE_STYLES: dict[str, dict[str, Any]] = {
    "none": {"ls": "-", "lw": 4.5, "alpha": 0.45, "zorder": 2},
    "partial": {"ls": "-", "lw": 2.0, "alpha": 1.0, "zorder": 3},
    "complete": {"ls": (0, (4, 2)), "lw": 1.6, "alpha": 1.0, "zorder": 4},
}
#: chain colours and line styles (distinct in colour and, for the first four, in dash)
CHAIN_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                "#bcbd22")
CHAIN_STYLES = ("-", (0, (5, 2)), (0, (1, 1.5)), (0, (6, 2, 1, 2)))

RC: dict[str, Any] = {
    "font.size": 10.5,
    "axes.titlesize": 12,
    "axes.labelsize": 11,
    "legend.fontsize": 9.5,
    "xtick.labelsize": 9.5,
    "ytick.labelsize": 9.5,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "svg.hashsalt": "poolwise",
}

#: a group with more levels than this is summarised (bins, extremes and a sample), not drawn
#: one tick per level
MAX_LEVELS_SHOWN = 60


def figure(width: float, height: float) -> Figure:
    """A Figure on the Agg canvas, outside pyplot (nothing global, nothing shown)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def rc() -> Any:
    import matplotlib

    return matplotlib.rc_context(RC)  # type: ignore[arg-type]


def wrap(text: str, width_in: float, fontsize: float = 12.0) -> str:
    """``text`` wrapped to lines that fit ``width_in`` inches at ``fontsize`` points (each
    existing line on its own), so that a title is never wider than its figure."""
    chars = max(24, int(width_in * 72 / (0.62 * fontsize)))
    return "\n".join(textwrap.fill(line, chars) if line else "" for line in text.split("\n"))


def set_title(ax: Any, text: str, *, fontsize: float | None = None) -> None:
    """An axes title wrapped to the axes' width."""
    import matplotlib

    fig = ax.get_figure()
    size = fontsize or matplotlib.rcParams["axes.titlesize"]
    size = float(size) if not isinstance(size, str) else 12.0
    width = fig.get_figwidth() * ax.get_position().width
    ax.set_title(wrap(text, max(width, 2.5), size), fontsize=size)


def suptitle(fig: Any, text: str, *, fontsize: float = 13.0) -> None:
    """A figure title wrapped to the figure's width."""
    fig.suptitle(wrap(text, fig.get_figwidth() - 0.3, fontsize), fontsize=fontsize)


def tick_fontsize(n_labels: int) -> float:
    return 9.0 if n_labels <= 30 else 8.0 if n_labels <= 70 else 6.5


def pct(prob: float) -> str:
    return f"{100 * prob:g}%"


def pick_levels(order: np.ndarray, *, seed: int, k: int = 20) -> tuple[np.ndarray, str]:
    """Which levels to draw when there are more than :data:`MAX_LEVELS_SHOWN`: ``order`` is
    the levels sorted by the value drawn; returns the positions in ``order`` of the ``k``
    lowest, ``k`` drawn at random (seeded) from the rest, and the ``k`` highest, in order,
    and the sentence that says so. All of them when there are few."""
    L = len(order)
    if L <= MAX_LEVELS_SHOWN:
        return np.arange(L), f"all {L:,} levels"
    rng = np.random.default_rng([seed, 11])
    middle = np.sort(rng.choice(np.arange(k, L - k), size=k, replace=False))
    pos = np.concatenate([np.arange(k), middle, np.arange(L - k, L)])
    return pos, (f"{3 * k} of {L:,} levels: the {k} lowest, {k} drawn at random from the "
                 f"other {L - 2 * k:,} and the {k} highest")
