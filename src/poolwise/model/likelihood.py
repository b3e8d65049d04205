"""The likelihood: the one place in poolwise that turns eta into a log-likelihood.

A row with ``y`` successes out of ``n`` trials and linear predictor ``eta`` (from
:mod:`poolwise.model.predictor`) contributes::

    log C(n, y) + y log p + (n - y) log(1 - p),   p = inverse_link(eta)

with ``log p`` and ``log(1 - p)`` from the link's kernel
(:func:`poolwise.engine.density.log_p_q`, the same kernel family the sampler's density uses;
zero counts are skipped, so ``p`` of exactly 0 or 1 gives no ``0 * -inf``). Rows are stored
once per row pattern with a count (:mod:`poolwise.data.patterns`):

* :func:`pattern_log_likelihood`: one row of each pattern, per draw (the fit's
  ``log_likelihood`` group, :func:`log_likelihood_group`), from which row-level LOO is exact;
* :func:`total_log_likelihood`: all rows, per draw (the prior sensitivity check);
* :func:`binomial_log_lik`: the kernel on arrays of eta, for callers that hold eta already
  (leave-one-group-out integrates a new group's effect over quadrature nodes).

The fused kernel computes eta cell by cell inside the loop (no draws x cells array), so memory
follows the patterns; it runs on every core.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numba
import numpy as np
import xarray as xr

from poolwise.data.patterns import PATTERN_DIM, row_patterns
from poolwise.engine.density import cell_loglik, log_p_q
from poolwise.model import links
from poolwise.model.predictor import (
    Coefficients,
    Rows,
    coefficients,
    eta_at,
    predictor_arrays,
)

if TYPE_CHECKING:
    from poolwise.model.spec import ModelSpec

__all__ = [
    "binomial_log_lik",
    "binomial_score",
    "log_likelihood_group",
    "pattern_log_likelihood",
    "total_log_likelihood",
]


@numba.njit(cache=True, parallel=True, error_model="numpy")
def _patterns(link, beta, tot, mu, X, offset, col, z, cell, y, n, const, count,
              store):  # pragma: no cover - compiled
    """Per draw: each pattern's log-likelihood (into ``out`` when ``store``) and the
    count-weighted total. eta is computed once per cell (patterns come sorted by cell)."""
    S = beta.shape[0]
    P = cell.shape[0]
    out = np.empty((S, P if store else 0))
    total = np.zeros(S)
    for s in numba.prange(S):
        acc = 0.0
        last = -1
        lp = 0.0
        lq = 0.0
        for p in range(P):
            c = cell[p]
            if c != last:
                lp, lq = log_p_q(link, eta_at(s, c, beta, tot, mu, X, offset, col, z))
                last = c
            v = const[p]
            if y[p] > 0.0:
                v += y[p] * lp
            if n[p] - y[p] > 0.0:
                v += (n[p] - y[p]) * lq
            if store:
                out[s, p] = v
            acc += count[p] * v
        total[s] = acc
    return out, total


def _pointwise(spec: ModelSpec, post: xr.Dataset | Coefficients,
               store: bool) -> tuple[np.ndarray, np.ndarray]:
    pat = row_patterns(spec.design)
    coefs = post if isinstance(post, Coefficients) else coefficients(spec, post)
    arrays = predictor_arrays(coefs, Rows.of_design(spec.design))
    return _patterns(links.get(spec.link).kernel_id, coefs.beta, coefs.tot, coefs.mu, *arrays,
                     pat.cell, pat.y, pat.n, pat.log_binom_const,
                     pat.count.astype(np.float64), store)


def pattern_log_likelihood(spec: ModelSpec, post: xr.Dataset) -> np.ndarray:
    """Log-likelihood of one row of each pattern, shape (chain, draw, n_patterns)."""
    C, D = post.sizes["chain"], post.sizes["draw"]
    return _pointwise(spec, post, True)[0].reshape(C, D, -1)


def total_log_likelihood(spec: ModelSpec, post: xr.Dataset) -> np.ndarray:
    """The log-likelihood of all data rows, per draw, shape (chain, draw) (the sum of every
    row's log-likelihood, computed from the patterns with their counts)."""
    C, D = post.sizes["chain"], post.sizes["draw"]
    return _pointwise(spec, post, False)[1].reshape(C, D)


def log_likelihood_group(spec: ModelSpec, post: xr.Dataset) -> xr.Dataset:
    """The ``log_likelihood`` group: ``y`` per (chain, draw, pattern)."""
    ll = pattern_log_likelihood(spec, post)
    return xr.Dataset(
        {"y": (("chain", "draw", PATTERN_DIM), ll)},
        coords={"chain": post["chain"].values, "draw": post["draw"].values,
                PATTERN_DIM: np.arange(ll.shape[-1])},
        attrs={"poolwise_unit": PATTERN_DIM},
    )


@numba.vectorize(["float64(int64, float64, float64, float64)"], cache=True)
def _binomial(link, y, n, eta):  # pragma: no cover - compiled
    lp, lq = log_p_q(link, eta)
    v = 0.0
    if y > 0.0:
        v += y * lp
    if n - y > 0.0:
        v += (n - y) * lq
    return v


def binomial_log_lik(link: str, y: np.ndarray, n: np.ndarray, eta: np.ndarray) -> np.ndarray:
    """``y log p + (n - y) log(1 - p)`` elementwise (broadcast), without ``log C(n, y)``."""
    return _binomial(links.get(link).kernel_id, np.asarray(y, dtype=np.float64),
                     np.asarray(n, dtype=np.float64), np.asarray(eta, dtype=np.float64))


@numba.vectorize(["float64(int64, float64, float64, float64)"], cache=True)
def _score(link, y, n, eta):  # pragma: no cover - compiled
    return cell_loglik(link, y, n, eta)[1]


def binomial_score(link: str, y: np.ndarray, n: np.ndarray, eta: np.ndarray) -> np.ndarray:
    """``d/d eta [y log p + (n - y) log(1 - p)]`` elementwise (broadcast): the derivative the
    sampler's density uses (:func:`poolwise.engine.density.cell_loglik`), stable in both
    tails."""
    return _score(links.get(link).kernel_id, np.asarray(y, dtype=np.float64),
                  np.asarray(n, dtype=np.float64), np.asarray(eta, dtype=np.float64))
