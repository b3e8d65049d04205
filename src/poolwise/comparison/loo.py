"""Row-level PSIS-LOO from the per-pattern log-likelihood (:mod:`poolwise.data.patterns`).

PSIS is deterministic in the log-likelihood draws, so each row gets its pattern's ``elpd_i``,
``p_loo_i`` and Pareto k, and

* ``elpd_loo = sum_i count_i elpd_i``, ``p_loo = sum_i count_i p_i``;
* ``se = sqrt(N var(elpd over rows))`` with ``var`` the count-weighted variance (``ddof=1``
  over the ``N = sum count_i`` rows), exactly what ArviZ computes on the expanded rows.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import xarray as xr

from poolwise.data.patterns import PATTERN_DIM, _row_index, row_patterns
from poolwise.data.weights import refuse_cross_validation
from poolwise.model.likelihood import log_likelihood_group

if TYPE_CHECKING:
    from arviz_stats.utils import ELPDDataLOO

    from poolwise.inference.fitted import Fit

__all__ = ["PatternLOO", "pattern_loo", "row_loo"]


@dataclass(frozen=True)
class PatternLOO:
    """PSIS-LOO per row pattern (each row of a pattern has these values) with the counts."""

    elpd_i: np.ndarray  # (P,)
    p_i: np.ndarray  # (P,)
    pareto_k: np.ndarray  # (P,)
    count: np.ndarray  # (P,)
    n_samples: int
    good_k: float
    warning: bool

    def summary(self) -> tuple[float, float, float]:
        """(elpd, se, p_loo) over the rows, exactly as ArviZ computes them on the rows."""
        c = self.count.astype(float)
        N = float(c.sum())
        elpd = float(np.sum(c * self.elpd_i))
        p = float(np.sum(c * self.p_i))
        if N > 1:
            mean = elpd / N
            var = float(np.sum(c * (self.elpd_i - mean) ** 2)) / (N - 1.0)
            se = math.sqrt(N * var)
        else:
            se = 0.0
        return elpd, se, p


def pattern_loo(fit: Fit) -> PatternLOO:
    """PSIS-LOO (``arviz_stats.loo``) on the pattern-level log-likelihood (the fit's
    ``log_likelihood`` group, or computed from its draws when it has none)."""
    import arviz_stats as azs
    from scipy.special import logsumexp

    from poolwise.errors import SpecError

    refuse_cross_validation(fit.spec.design, "row-level LOO")
    if "log_likelihood" in fit.idata.children:
        ll = fit.idata["log_likelihood"]["y"]
    else:  # a deterministic function of the draws and the design: computed when needed
        ll = log_likelihood_group(fit.spec, fit.posterior)["y"]
    if PATTERN_DIM not in ll.dims:
        raise SpecError(
            "this fit stores a per-row log_likelihood (an older format); fit it again"
        )
    pat = row_patterns(fit.spec.design)
    if ll.sizes[PATTERN_DIM] != pat.n_patterns:
        raise SpecError(
            f"the log_likelihood group has {ll.sizes[PATTERN_DIM]} patterns but the design "
            f"has {pat.n_patterns}; the saved fit is inconsistent"
        )
    tree = xr.DataTree.from_dict({
        "posterior": fit.idata["posterior"].to_dataset(),
        "log_likelihood": xr.Dataset({"y": ll}),
    })
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pareto k warnings: reported by the caller instead
        res = azs.loo(tree, pointwise=True)
    v = ll.transpose("chain", "draw", PATTERN_DIM).values.reshape(-1, ll.sizes[PATTERN_DIM])
    lppd = logsumexp(v, axis=0) - math.log(v.shape[0])
    elpd_i = np.asarray(res.elpd_i.values, dtype=float)
    return PatternLOO(
        elpd_i=elpd_i, p_i=lppd - elpd_i, pareto_k=np.asarray(res.pareto_k.values, dtype=float),
        count=pat.count, n_samples=int(res.n_samples), good_k=float(res.good_k),
        warning=bool(res.warning),
    )


def row_loo(fit: Fit) -> ELPDDataLOO:
    """Row-level PSIS-LOO from the pattern-level values: an ``ELPDDataLOO`` whose pointwise
    ``elpd_i`` and ``pareto_k`` have one entry per data row (coordinate ``obs``: the 1-based
    row numbers), and whose elpd, se and p equal ``arviz_stats.loo(expand_rows(fit))``. For
    data counted by a data engine the rows come grouped by entry, each with its entry's first
    row number (the other row numbers are not kept)."""
    from arviz_stats.utils import ELPDDataLOO

    res = pattern_loo(fit)
    idx, obs = _row_index(fit.spec.design)
    elpd, se, p = res.summary()
    elpd_i = xr.DataArray(res.elpd_i[idx], dims=["obs"], coords={"obs": obs})
    k_i = xr.DataArray(res.pareto_k[idx], dims=["obs"], coords={"obs": obs})
    return ELPDDataLOO(
        elpd=elpd, se=se, p=p, n_samples=res.n_samples, n_data_points=len(obs), scale="log",
        warning=res.warning, good_k=res.good_k, elpd_i=elpd_i, pareto_k=k_i,
        approx_posterior=False,
    )
