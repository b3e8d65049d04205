"""Rows into binomial cells: rows with the same fixed-effect columns, group levels, group
columns and offset collapse into one cell (successes, trials), which leaves the likelihood in
the parameters unchanged up to the constant :func:`binomial_constant`.

Everything here works on rows or on row patterns counted by a data engine
(:mod:`poolwise.data.ingest`, ``counts``: the rows each entry stands for), and both give the
same cells in the same order and the same totals.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import gammaln

from poolwise.data.encode import GroupColumns

__all__ = ["Cells", "binomial_constant", "compress", "level_totals", "likelihood_cells",
           "survey_cells"]


@dataclass(frozen=True, eq=False)
class Cells:
    """The cell of each row (``row_cell``), the first row of each cell (``first_rows``) and the
    cells' successes ``y`` and trials ``n``."""

    row_cell: np.ndarray
    first_rows: np.ndarray
    y: np.ndarray
    n: np.ndarray


def _weighted(values: np.ndarray, counts: np.ndarray | None) -> np.ndarray:
    """Per-entry values times the rows each entry stands for (None: one row each)."""
    return values if counts is None else values * counts


def _cell_of_rows(key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's cell, cells numbered in order of their first row, and that first row.
    Patterns counted by a data engine come in order of their first row, so they give the same
    cells in the same order."""
    _, first, inverse = np.unique(key, axis=0, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return rank[inverse.reshape(-1)].astype(np.int64), first[order]


def compress(
    X: np.ndarray,
    groups: Sequence[GroupColumns],
    row_offset: np.ndarray | None,
    successes: np.ndarray,
    trials: np.ndarray,
    counts: np.ndarray | None,
) -> Cells:
    """The binomial cells of the rows: ``X`` (rows, K), each group term's codes and columns,
    and the offset (None: no offset; rows with different offsets stay apart)."""
    key_parts = [X] + [g.codes[:, None].astype(float) for g in groups] + [g.Z for g in groups]
    if row_offset is not None:
        key_parts.append(row_offset[:, None])
    row_cell, first_rows = _cell_of_rows(np.column_stack(key_parts))
    n_cells = len(first_rows)
    y = np.bincount(row_cell, weights=_weighted(successes, counts), minlength=n_cells)
    n = np.bincount(row_cell, weights=_weighted(trials, counts), minlength=n_cells)
    return Cells(row_cell, first_rows, y, n)


def level_totals(
    codes: np.ndarray,
    n_levels: int,
    successes: np.ndarray,
    trials: np.ndarray,
    counts: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The rows, trials and successes of each level of a group term (``codes``: per row)."""
    rows = (
        np.bincount(codes, minlength=n_levels) if counts is None
        else np.bincount(codes, weights=counts, minlength=n_levels).astype(np.int64)
    )
    level_trials = np.bincount(codes, weights=_weighted(trials, counts), minlength=n_levels)
    level_successes = np.bincount(codes, weights=_weighted(successes, counts),
                                  minlength=n_levels)
    return rows, level_trials, level_successes


def binomial_constant(
    successes: np.ndarray, trials: np.ndarray, counts: np.ndarray | None
) -> float:
    """The sum over rows of ``log C(trials, successes)``: what compressing rows into cells
    leaves out of the likelihood. Summed over the distinct (successes, trials) pairs with
    their row counts, so rows and patterns give the same number."""
    if np.all(trials == 1):  # Bernoulli rows: every term is exactly 0
        return 0.0
    pairs, pair_of = np.unique(np.column_stack([successes, trials]), axis=0,
                               return_inverse=True)
    pair_rows = np.bincount(pair_of.reshape(-1), weights=counts, minlength=len(pairs))
    py, pn = pairs[:, 0], pairs[:, 1]
    return float(np.dot(pair_rows.astype(float),
                        gammaln(pn + 1) - gammaln(py + 1) - gammaln(pn - py + 1)))


def survey_cells(design: Any) -> tuple[np.ndarray, np.ndarray]:
    """The cells as a survey-weighted pseudo-likelihood sees them: per cell the sums of
    ``w y`` and ``w n`` over its rows (``w``: each entry's survey weight), whose binomial
    kernel ``y log p + (n - y) log(1 - p)`` is, being linear in y and n, the sum of the rows'
    kernels times their weights. The weights as given are summed first and scaled once, so
    rows and the same rows counted into patterns give the same numbers wherever the sums of
    the weights are exact."""
    d = design
    w = np.asarray(d.row_weight, dtype=float)
    scale = d.weighting.scale
    y = np.bincount(d.row_cell, weights=w * d.row_y, minlength=d.n_cells) * scale
    n = np.bincount(d.row_cell, weights=w * d.row_n, minlength=d.n_cells) * scale
    return y, n


def likelihood_cells(design: Any) -> tuple[np.ndarray, np.ndarray]:
    """The binomial cells' successes and trials as the likelihood sees them: the design's
    ``y`` and ``n`` (frequency weights are already in them, as counts), or with survey weights
    :func:`survey_cells` (the pseudo-likelihood's weighted sums, not whole numbers in
    general). What the sampler's binomial density (:mod:`poolwise.engine.layout`) and
    ``method="approx"`` (:mod:`poolwise.inference.approx`) both evaluate."""
    if design.row_weight is not None:
        return survey_cells(design)
    return design.y, design.n
