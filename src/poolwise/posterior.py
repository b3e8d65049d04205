"""Quantities computed from posterior draws of the natural-scale variables: the linear
predictor of each cell, probabilities, and per-row log-likelihood (for LOO)."""

from __future__ import annotations

import numba
import numpy as np
import xarray as xr
from scipy.special import gammaln

from poolwise import links
from poolwise.model import ModelSpec
from poolwise.naming import fixed_name, sd_name, total_name

__all__ = ["cell_eta", "inverse_link", "log_p_q", "row_log_likelihood", "to_original_scale"]


def _draws(post: xr.Dataset, name: str) -> np.ndarray:
    """(chain*draw, ...) array of a variable."""
    v = post[name].values
    return v.reshape((-1,) + v.shape[2:])


def to_original_scale(spec: ModelSpec, post: xr.Dataset) -> xr.Dataset:
    """Draws of the engine (centered / scaled design, see :mod:`poolwise.design`) on the
    original scale of the predictors. Exact, draw by draw:

    * ``b_<col> = b_std / scale`` and ``Intercept = Intercept_std - sum_k b_k * center_k``
      (the log-odds at all predictors = 0 on their original scale);
    * per-level totals ``a_<g>[j]`` get the same intercept shift (when their mean is the fixed
      intercept, or they are the unpooled intercepts of ``pooling="none"``) and slopes
      ``b_<g>__<coef>[j]`` and their SDs ``sd_<g>__<coef>`` are divided by the column's scale;
      correlations are unchanged (the group-level columns are never centered).
    """
    d = spec.design
    if not d.rescaled:
        return post
    out = post.copy()
    K = len(d.fixed_names)
    center = d.x_center if d.x_center is not None else np.zeros(K)
    scale = d.x_scale if d.x_scale is not None else np.ones(K)
    shift = None
    for k, coef in enumerate(d.fixed_names):
        if coef == "Intercept":
            continue
        name = fixed_name(coef)
        out[name] = post[name] / scale[k]
        if center[k] != 0.0:
            contrib = out[name] * center[k]
            shift = -contrib if shift is None else shift - contrib
    if shift is not None and "Intercept" in d.fixed_names:
        out["Intercept"] = post["Intercept"] + shift
    for term in spec.terms:
        g = term.group
        zs = g.z_scale if g.z_scale is not None else np.ones(g.n_coefs)
        for c, coef in enumerate(g.coef_names):
            name = total_name(term, coef)
            if coef == "Intercept":
                mi = term.mu_index[c]
                carries = (mi >= 0 and d.fixed_names[mi] == "Intercept") or (
                    mi < 0 and "Intercept" not in d.fixed_names
                )
                if shift is not None and carries:
                    # in the totals' own dtype (float32 for a large trace: no float64 copy)
                    out[name] = post[name] + shift.astype(post[name].dtype)
            elif zs[c] != 1.0:
                out[name] = post[name] / post[name].dtype.type(zs[c])
                sdn = sd_name(term, coef)
                if sdn in post:
                    out[sdn] = post[sdn] / zs[c]
    return out


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
    """p from the linear predictor (:mod:`poolwise.links`; SpecError for an unknown link)."""
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
