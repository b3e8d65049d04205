"""Row patterns: per-row quantities stored once per distinct row, with a count.

Rows that fall in the same binomial cell and have the same outcome (successes, trials) have
identical pointwise values in every draw: log-likelihood, posterior predictive, LOO. So the
fit stores them once per *pattern* (cell x outcome for Bernoulli rows; the cell itself for a
binomial row that is alone in its cell) with the number of rows that share it, and memory and
disk follow patterns x draws instead of rows x draws. Row-level PSIS-LOO stays exact
(:mod:`poolwise.comparison.loo`).

The groups of :attr:`poolwise.Fit.idata`:

* ``observed_data``: ``y``, ``trials``, ``count``, ``cell`` and ``first_row`` (1-based row
  number of the pattern's first data row), dimension ``pattern`` (:func:`observed_group`);
* ``log_likelihood``: ``y`` with dimensions ``(chain, draw, pattern)``; its attribute
  ``poolwise_unit`` is ``"pattern"`` (:mod:`poolwise.model.likelihood`).

ArviZ functions that take a DataTree (``arviz_stats.loo``) treat each pattern as one
observation; for the row-level tree they expect, use ``fit.row_level()``
(:func:`poolwise.inference.fitted.expand_rows`), which repeats each pattern's values for its
rows (for data small enough to hold rows x draws).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr
from scipy.special import gammaln

if TYPE_CHECKING:
    from poolwise.data.design import Design

__all__ = ["PATTERN_DIM", "RowPatterns", "observed_group", "row_patterns"]

PATTERN_DIM = "pattern"


@dataclass(frozen=True, eq=False)
class RowPatterns:
    """The distinct (cell, successes, trials) rows of a design, in a deterministic order (by
    cell, then trials, then successes), with their counts and the row -> pattern map."""

    cell: np.ndarray  # (P,) int64
    y: np.ndarray  # (P,) float64
    n: np.ndarray  # (P,) float64
    count: np.ndarray  # (P,) int64 rows per pattern
    first_row: np.ndarray  # (P,) 1-based data row number of the first row of each pattern
    row_pattern: np.ndarray  # (entries,) int64: the pattern of each of the design's row entries
    #: (P,) float64: each pattern's weight in the likelihood: its count, or with survey
    #: weights the sum of its rows' (scaled) weights (:mod:`poolwise.data.weights`)
    weight: np.ndarray | None = None

    @property
    def likelihood_weight(self) -> np.ndarray:
        """Each pattern's weight in the (pseudo-)likelihood: ``weight``, else the count."""
        return self.count.astype(np.float64) if self.weight is None else self.weight

    @property
    def n_patterns(self) -> int:
        return len(self.cell)

    @property
    def n_rows(self) -> int:
        """Data rows (the sum of the counts; engine data hold fewer entries than rows)."""
        return int(np.sum(self.count))

    @property
    def log_binom_const(self) -> np.ndarray:
        """log C(n, y) per pattern (per row of the pattern)."""
        return gammaln(self.n + 1) - gammaln(self.y + 1) - gammaln(self.n - self.y + 1)


_CACHE: weakref.WeakKeyDictionary[Any, RowPatterns] = weakref.WeakKeyDictionary()


def row_patterns(design: Design) -> RowPatterns:
    """The row patterns of a design (computed once per Design object)."""
    try:
        return _CACHE[design]
    except (KeyError, TypeError):
        pass
    cell = np.asarray(design.row_cell, dtype=np.int64)
    y = np.asarray(design.row_y, dtype=np.float64)
    n = np.asarray(design.row_n, dtype=np.float64)
    if cell.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        out = RowPatterns(empty, y, n, empty, empty, empty)
    else:
        yi = y.astype(np.int64)
        ni = n.astype(np.int64)
        m = int(ni.max()) + 1
        whole = np.array_equal(yi, y) and np.array_equal(ni, n)
        if whole and (int(cell.max()) + 1) * m < 2**62 // max(m, 1):
            key = (cell * m + ni) * m + yi
            _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
        else:
            keys = np.column_stack([cell.astype(np.float64), n, y])
            _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
        inverse = np.asarray(inverse, dtype=np.int64).reshape(-1)
        # patterns counted by a data engine (Design.row_count): each entry stands for that
        # many identical rows, so the row-level quantities stay exact
        weights = getattr(design, "row_count", None)
        count = np.rint(np.bincount(inverse, weights=weights, minlength=len(first))).astype(
            np.int64
        )
        rows = np.asarray(design.row_number)
        out = RowPatterns(
            cell=cell[first], y=y[first], n=n[first], count=count,
            first_row=np.asarray(rows[first], dtype=np.int64), row_pattern=inverse,
            weight=_survey_weight(design, inverse, len(first)),
        )
    try:
        _CACHE[design] = out
    except TypeError:  # pragma: no cover - not weak-referenceable
        pass
    return out


def _survey_weight(design: Design, inverse: np.ndarray, n_patterns: int) -> np.ndarray | None:
    """Survey weights: each pattern's sum of its entries' weights as given, scaled once
    (:attr:`poolwise.data.design.Design.likelihood_weight`); None without them."""
    w = getattr(design, "row_weight", None)
    if w is None:
        return None
    return (np.bincount(inverse, weights=np.asarray(w, dtype=float), minlength=n_patterns)
            * design.weighting.scale)


def _row_index(design: Design) -> tuple[np.ndarray, np.ndarray]:
    """(pattern of every data row, its 1-based row number). For data counted by a data engine
    (``design.row_count``) each entry is repeated for the rows it stands for, in order of the
    entries' first rows, and those rows carry the first row number of their entry."""
    pat = row_patterns(design)
    rows = np.asarray(design.row_number)
    idx = pat.row_pattern
    w = getattr(design, "row_count", None)
    if w is not None:
        w = np.asarray(w, dtype=np.int64)
        idx, rows = np.repeat(idx, w), np.repeat(rows, w)
    return idx, rows


def observed_group(design: Design) -> xr.Dataset:
    """The ``observed_data`` group: one entry per row pattern, with its count."""
    pat = row_patterns(design)
    coords = {PATTERN_DIM: np.arange(pat.n_patterns)}
    return xr.Dataset(
        {
            "y": (PATTERN_DIM, pat.y),
            "trials": (PATTERN_DIM, pat.n),
            "count": (PATTERN_DIM, pat.count),
            "cell": (PATTERN_DIM, pat.cell),
            "first_row": (PATTERN_DIM, pat.first_row),
        },
        coords=coords,
        attrs={"poolwise_unit": PATTERN_DIM},
    )
