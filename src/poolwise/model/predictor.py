"""Quantities computed from posterior draws of the natural-scale variables: the linear
predictor of each cell, probabilities, and per-row log-likelihood (for LOO)."""

from __future__ import annotations

import numba
import numpy as np
import xarray as xr
from scipy.special import gammaln

from poolwise.model import links
from poolwise.model.naming import fixed_name, total_name
from poolwise.model.spec import ModelSpec

__all__ = ["cell_eta", "inverse_link", "log_p_q", "row_log_likelihood"]


def _draws(post: xr.Dataset, name: str) -> np.ndarray:
    """(chain*draw, ...) array of a variable."""
    v = post[name].values
    return v.reshape((-1,) + v.shape[2:])




def cell_eta(spec: ModelSpec, post: xr.Dataset) -> np.ndarray:
    """Linear predictor, shape (chain*draw, n_cells)."""
    d = spec.design
    S = post.sizes["chain"] * post.sizes["draw"]
    eta = np.zeros((S, d.n_cells))
    beta = (np.column_stack([_draws(post, fixed_name(c)) for c in d.fixed_names])
            if d.fixed_names else np.zeros((S, 0)))
    eta += beta @ d.X.T
    if getattr(d, "offset", None) is not None:  # a known per-cell addition (offset)
        eta += d.offset
    for term in spec.terms:
        g = term.group
        for c, coef in enumerate(g.coef_names):
            total = _draws(post, total_name(term, coef))  # (S, L)
            mi = term.mu_index[c]
            dev = total - (beta[:, [mi]] if mi >= 0 else 0.0)
            eta += dev[:, g.codes] * g.Z[:, c]
    return eta


def inverse_link(link: str, eta: np.ndarray) -> np.ndarray:
    """p from the linear predictor (:mod:`poolwise.model.links`; SpecError for an unknown link)."""
    return links.get(link).inverse(eta)


def log_p_q(link: str, eta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """log p and log(1 - p)."""
    return links.get(link).log_p_q(eta)


def row_log_likelihood(spec: ModelSpec, post: xr.Dataset) -> np.ndarray:
    """Log-likelihood of each original data row, shape (chain, draw, n_rows)."""
    d = spec.design
    lp, lq = log_p_q(spec.link, cell_eta(spec, post))
    const = gammaln(d.row_n + 1) - gammaln(d.row_y + 1) - gammaln(d.row_n - d.row_y + 1)
    ll = _gather_rows(lp, lq, d.row_cell, d.row_y, d.row_n, const)
    return ll.reshape(post.sizes["chain"], post.sizes["draw"], -1)


@numba.njit(cache=True, parallel=True)
def _gather_rows(lp, lq, cell, y, n, const):  # pragma: no cover - compiled
    S = lp.shape[0]
    R = cell.shape[0]
    out = np.empty((S, R))
    for s in numba.prange(S):  # memory-bound (first touch of a large array): use every core
        for r in range(R):
            c = cell[r]
            v = const[r]
            # skip zero counts: 0 * -inf would be nan where p is exactly 0 or 1
            if y[r] > 0:
                v += y[r] * lp[s, c]
            if n[r] - y[r] > 0:
                v += (n[r] - y[r]) * lq[s, c]
            out[s, r] = v
    return out
