"""A model on a subset of its data: levels of a group term left out, for cross-validation.

The result samples the same model (priors, standardization, parameterization request) on the
remaining rows, so its posterior is the posterior without those levels.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
from scipy.special import gammaln

from poolwise.errors import SpecError

if TYPE_CHECKING:
    from poolwise.model.spec import ModelSpec

__all__ = ["without_levels"]


def without_levels(spec: ModelSpec, group: str, levels: Iterable[int]) -> ModelSpec:
    """``spec`` with the levels ``levels`` (codes) of its group term ``group`` and all their rows
    removed, and every level of another term left without rows; priors and the standardization
    (centers and scales) of the full model are kept, so the result samples the same model on
    less data. Every per-cell array (X, successes, trials, the offset, each term's codes and Z)
    and every per-row array (successes, trials, row numbers, pattern counts) is subset."""
    d = spec.design
    names = [t.name for t in spec.terms]
    if group not in names:
        raise SpecError(f"no group term {group!r} in {spec.formula.text!r}; group terms: "
                        f"{', '.join(names) or 'none'}")
    t = names.index(group)
    out = np.asarray(list(levels), dtype=np.int64)
    keep_cell = ~np.isin(d.groups[t].codes, out)
    new_cell = np.cumsum(keep_cell) - 1
    keep_row = keep_cell[d.row_cell]
    groups, terms = [], []
    for u, (g, term) in enumerate(zip(d.groups, spec.terms, strict=True)):
        codes = g.codes[keep_cell]
        lv = np.zeros(g.n_levels, dtype=bool)
        lv[codes] = True
        if u == t:
            lv[out] = False
        remap = np.cumsum(lv) - 1
        g2 = replace(
            g, labels=g.labels[lv], codes=remap[codes].astype(np.int64), Z=g.Z[keep_cell],
            level_rows=g.level_rows[lv], level_trials=g.level_trials[lv],
            level_successes=g.level_successes[lv],
        )
        groups.append(g2)
        terms.append(replace(term, group=g2, centered=np.zeros(g2.n_levels, dtype=bool)))
    row_count = None if d.row_count is None else d.row_count[keep_row]
    row_weight = None if d.row_weight is None else d.row_weight[keep_row]
    ry, rn = d.row_y[keep_row], d.row_n[keep_row]
    per_row = gammaln(rn + 1) - gammaln(ry + 1) - gammaln(rn - ry + 1)
    const = float(np.sum(per_row if row_count is None else per_row * row_count))
    if row_weight is not None:  # survey weights: each row's term times its weight, as in the fit
        const = float(np.sum(per_row * row_weight)) * d.weighting.scale
    d2 = replace(
        d, X=d.X[keep_cell], y=d.y[keep_cell], n=d.n[keep_cell], groups=tuple(groups),
        offset=None if d.offset is None else d.offset[keep_cell],
        row_cell=new_cell[d.row_cell[keep_row]], row_y=ry, row_n=rn,
        row_number=d.row_number[keep_row], log_binom_const=const, row_count=row_count,
        row_weight=row_weight,
    )
    s2 = replace(spec, design=d2, terms=tuple(terms))
    return s2.with_parameterization({x.name: x.requested for x in spec.terms})
