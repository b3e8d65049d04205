"""How group effects count when a fitted model is asked about rows: in the rows' own fitted
groups, in a new group integrated over its distribution, or averaged over the fitted groups
(the ``groups`` option of :mod:`poolwise.comparison.effects`).

:func:`evaluation` turns rows (as the predictor takes them) with their weights and levels of
``by`` into an :class:`Evaluation`: rows that the predictor cannot tell apart collapsed into one
with their summed weight, then each row repeated once per fitted level (``"average"``) or per
quadrature node / Monte Carlo draw of a new group (``"new"``), the new levels appended to the
coefficients (:func:`poolwise.model.predictor.with_new_levels`). :func:`mean_p` then sums the
probabilities per draw and level of ``by`` in one compiled loop.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from poolwise.errors import DataError, SpecError
from poolwise.model.predictive import mean_probabilities
from poolwise.model.predictor import (
    Coefficients,
    Rows,
    coefficients,
    new_level_draws,
    with_new_levels,
)

if TYPE_CHECKING:
    from poolwise.inference.fitted import Fit

__all__ = ["Evaluation", "by_levels", "evaluation", "mean_p"]


#: Monte Carlo draws of new groups' effects per posterior draw (more than two varying
#: coefficients in all)
NEW_GROUP_DRAWS = 400


#: rows x combinations of levels that groups="average" evaluates per draw at most
AVERAGE_MAX_ROWS = 2_000_000


def by_levels(frame: pd.DataFrame, by: str | list[str] | None
               ) -> tuple[np.ndarray, pd.DataFrame]:
    """Each row's level of ``by`` and the table of levels (no ``by``: one level, all rows)."""
    if by is None:
        return np.zeros(len(frame), dtype=np.int64), pd.DataFrame(index=[0])
    cols = [by] if isinstance(by, str) else list(by)
    missing = [c for c in cols if c not in frame.columns]
    if missing:
        raise DataError(f"by names column(s) {', '.join(missing)}, which the data lack; "
                        f"columns: {', '.join(map(str, frame.columns[:20]))}")
    keys = frame[cols].astype(object)
    codes, uniques = pd.MultiIndex.from_frame(keys).factorize(sort=True)
    levels = pd.DataFrame(list(uniques), columns=cols)
    return np.asarray(codes, dtype=np.int64), levels


@dataclass(frozen=True)
class Evaluation:
    """Rows for the group handling: the rows (as the predictor takes them), each row's
    weight and level of ``by``, and the coefficients (with the virtual levels of new groups
    appended)."""

    rows: Rows
    weight: np.ndarray
    level: np.ndarray
    coefs: Coefficients
    method: str


def _collapse(rows: Rows, weight: np.ndarray, level: np.ndarray, codes: bool
              ) -> tuple[Rows, np.ndarray, np.ndarray]:
    """Rows that the predictor cannot tell apart (the same fixed columns, offset, Z values,
    level of ``by`` and, with ``codes``, group levels) as one row with their summed weight:
    the fitted data repeat their covariates, and every row is evaluated once per group level
    or quadrature node after this."""
    parts = [rows.X, level[:, None].astype(float)]
    parts += [z for z in rows.Z]
    if rows.offset is not None:
        parts.append(rows.offset[:, None])
    if codes:
        parts += [c[:, None].astype(float) for c in rows.codes]
    key = np.column_stack(parts)
    _, first, inverse = np.unique(key, axis=0, return_index=True, return_inverse=True)
    summed = np.bincount(inverse.reshape(-1), weights=weight, minlength=len(first))
    return rows.take(first), summed, level[first]


def evaluation(fit: Fit, rows: Rows, weight: np.ndarray, level: np.ndarray, groups: str,
                seed: int) -> Evaluation:
    coefs = coefficients(fit.spec, fit.posterior)
    if groups == "fitted":
        for term, codes in zip(fit.spec.terms, rows.codes, strict=True):
            if not term.estimated and (codes < 0).any():
                raise SpecError(
                    f"the no-pooling model has no population of {term.name} groups for the "
                    f"labels it has not seen; use groups='new' (a new group from the fixed "
                    "prior of a level) or a partial-pooling fit"
                )
    if not fit.spec.terms or groups == "fitted":
        rows, weight, level = _collapse(rows, weight, level, codes=True)
        return Evaluation(rows, weight, level, coefs, "the rows' own fitted groups")
    rows, weight, level = _collapse(rows, weight, level, codes=False)
    if groups == "average":
        return _average(fit, rows, weight, level, coefs)
    return _new_groups(fit, rows, weight, level, coefs, seed)


def _average(fit: Fit, rows: Rows, weight: np.ndarray, level: np.ndarray,
             coefs: Coefficients) -> Evaluation:
    """Each row in every combination of fitted levels that occurs in the data, weighted by
    its share of the data rows."""
    d = fit.spec.design
    codes = np.column_stack([g.codes for g in d.groups])
    from poolwise.data.patterns import row_patterns

    pat = row_patterns(d)
    rows_per_cell = np.bincount(pat.cell, weights=pat.count, minlength=d.n_cells)
    combos, inverse = np.unique(codes, axis=0, return_inverse=True)
    share = np.bincount(inverse.reshape(-1), weights=rows_per_cell, minlength=len(combos))
    share = share / share.sum()
    n, m = rows.n, len(combos)
    if n * m > AVERAGE_MAX_ROWS:
        raise SpecError(
            f"averaging over the fitted groups evaluates {n:,} rows x {m:,} combinations of "
            f"levels per draw (more than {AVERAGE_MAX_ROWS:,}); use groups='new' (a new group, "
            "integrated over the population) or fewer rows"
        )
    rep = np.repeat(np.arange(n), m)
    combo = np.tile(np.arange(m), n)
    expanded = rows.take(rep)
    for t in range(len(d.groups)):
        expanded = expanded.with_codes(t, combos[combo, t])
    return Evaluation(expanded, weight[rep] * share[combo], level[rep], coefs,
                       f"averaged over the {m:,} combinations of fitted group levels, weighted "
                       "by their data rows")


def _new_groups(fit: Fit, rows: Rows, weight: np.ndarray, level: np.ndarray,
                coefs: Coefficients, seed: int) -> Evaluation:
    """Each row in a new level of every group term, its effects integrated over their
    distribution: virtual levels appended to the coefficients (one per quadrature node or
    Monte Carlo draw), each row repeated once per node with the node's weight."""
    spec, post = fit.spec, fit.posterior
    dims = sum(t.group.n_coefs for t in spec.terms)
    S = coefs.n_draws
    if dims <= 2:
        x1, w1 = np.polynomial.hermite_e.hermegauss(21 if dims == 1 else 11)
        nodes = np.array(list(itertools.product(x1, repeat=dims)))
        node_w = np.prod(np.array(list(itertools.product(w1, repeat=dims))), axis=1)
        node_w = node_w / node_w.sum()
        z = np.broadcast_to(nodes, (S,) + nodes.shape)
        method = (f"a new group, integrated over its distribution by Gauss-Hermite "
                  f"quadrature ({len(nodes)} nodes)")
    else:
        rng = np.random.default_rng([seed, 31])
        z = rng.standard_normal((S, NEW_GROUP_DRAWS, dims))
        node_w = np.full(NEW_GROUP_DRAWS, 1.0 / NEW_GROUP_DRAWS)
        method = (f"a new group, integrated over its distribution by Monte Carlo "
                  f"({NEW_GROUP_DRAWS} draws per posterior draw)")
    Q = z.shape[1]
    deviations, d0 = [], 0
    for term in spec.terms:
        C = term.group.n_coefs
        mean, chol = new_level_draws(spec, post, term)
        deviations.append(mean[:, None, :]
                          + np.einsum("sij,sqj->sqi", chol, z[:, :, d0:d0 + C]))  # (S, Q, C)
        d0 += C
    aug = with_new_levels(spec, coefs, deviations)
    n = rows.n
    rep = np.repeat(np.arange(n), Q)
    node = np.tile(np.arange(Q), n)
    expanded = rows.take(rep)
    for t, term in enumerate(spec.terms):
        expanded = expanded.with_codes(t, term.group.n_levels + node)
    return Evaluation(expanded, weight[rep] * node_w[node], level[rep], aug, method)


def mean_p(fit: Fit, ev: Evaluation, n_levels: int) -> np.ndarray:
    """Per draw, each level's weighted mean probability (S, n_levels)."""
    sums = mean_probabilities(fit.spec, ev.coefs, ev.rows, ev.weight, ev.level, n_levels)
    return sums / np.bincount(ev.level, weights=ev.weight, minlength=n_levels)
