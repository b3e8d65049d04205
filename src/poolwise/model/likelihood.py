"""The binomial log-likelihood of the data, per row pattern and in total, from posterior draws.

Import cycle (temporary): see poolwise.model.predictor.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numba
import numpy as np
import xarray as xr

from poolwise.data.patterns import PATTERN_DIM, _chunks, row_patterns
from poolwise.engine.density import exp_nonpos, log1p_unit

if TYPE_CHECKING:
    from poolwise.model.spec import ModelSpec

__all__ = ["log_likelihood_group", "pattern_log_likelihood", "total_log_likelihood"]


def _eta_parts(spec: ModelSpec, post: xr.Dataset) -> tuple[np.ndarray, ...]:
    """The linear predictor as data for the fused kernel: ``beta`` (S, K) with ``X`` (cells, K),
    and the per-level totals ``tot`` (S, M) of every group term and coefficient side by side,
    with ``idx`` (J, cells) each cell's column in ``tot``, ``z`` (J, cells) its Z value and
    ``mu`` (J,) the column of ``beta`` that is the totals' mean (-1: none); the deviation is
    ``tot - beta[mu]`` (the same algebra as :func:`poolwise.model.predictor.cell_eta`). The totals
    are the posterior's own arrays where one term has one coefficient: no copy of draws x
    levels values, which with 10^4-10^5 levels cost seconds."""
    from poolwise.model.naming import fixed_name, total_name
    from poolwise.model.predictor import _draws

    d = spec.design
    S = post.sizes["chain"] * post.sizes["draw"]
    beta = (np.column_stack([_draws(post, fixed_name(c)) for c in d.fixed_names])
            if d.fixed_names else np.zeros((S, 0)))
    tots, idx, zs, mus = [], [], [], []
    off = 0
    for term in spec.terms:
        g = term.group
        for c, coef in enumerate(g.coef_names):
            total = _draws(post, total_name(term, coef))
            tots.append(total)
            mus.append(term.mu_index[c])
            idx.append(np.asarray(g.codes, dtype=np.int64) + off)
            zs.append(np.asarray(g.Z[:, c], dtype=np.float64))
            off += total.shape[1]
    n = d.n_cells
    if len(tots) == 1:  # float32 totals (a large trace) stay float32: the kernel takes both
        tot = np.ascontiguousarray(tots[0])
        if tot.dtype not in (np.float32, np.float64):
            tot = tot.astype(np.float64)
    else:
        tot = np.ascontiguousarray(np.column_stack(tots) if tots else np.zeros((S, 0)),
                                   dtype=np.float64)
    idx_a = np.array(idx, dtype=np.int64).reshape(len(idx), n)
    z_a = np.array(zs, dtype=np.float64).reshape(len(zs), n)
    return (np.ascontiguousarray(beta, dtype=np.float64),
            np.ascontiguousarray(d.X, dtype=np.float64), tot, idx_a, z_a,
            np.array(mus, dtype=np.int64))


@numba.njit(cache=True, parallel=True)
def _fused_logit(beta, X, tot, idx, z, mu, cell, y, n, const, count, store):  # pragma: no cover
    """Per draw: each pattern's log-likelihood (into ``out`` when ``store``) and the
    count-weighted total, for the logit link, without cell-sized temporaries."""
    S = beta.shape[0]
    P = cell.shape[0]
    K = X.shape[1]
    J = idx.shape[0]
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
                eta = 0.0
                for k in range(K):
                    eta += X[c, k] * beta[s, k]
                for j in range(J):
                    dev = tot[s, idx[j, c]]
                    if mu[j] >= 0:
                        dev -= beta[s, mu[j]]
                    eta += dev * z[j, c]
                # log expit(eta) and log expit(-eta), stable on both sides (the density's
                # exp and log1p: within about 1 ulp of libm's, without a call per cell)
                if eta >= 0.0:
                    lp = -log1p_unit(exp_nonpos(-eta))
                    lq = lp - eta
                else:
                    lq = -log1p_unit(exp_nonpos(eta))
                    lp = lq + eta
                last = c
            v = const[p]
            # skip zero counts: 0 * -inf would be nan where p is exactly 0 or 1
            if y[p] > 0:
                v += y[p] * lp
            if n[p] - y[p] > 0:
                v += (n[p] - y[p]) * lq
            if store:
                out[s, p] = v
            acc += count[p] * v
        total[s] = acc
    return out, total


def _pointwise(spec: ModelSpec, post: xr.Dataset, store: bool) -> tuple[np.ndarray, np.ndarray]:
    pat = row_patterns(spec.design)
    beta, X, tot, idx, z, mu = _eta_parts(spec, post)
    return _fused_logit(beta, X, tot, idx, z, mu, pat.cell, pat.y, pat.n, pat.log_binom_const,
                        pat.count.astype(np.float64), store)


def pattern_log_likelihood(spec: ModelSpec, post: xr.Dataset) -> np.ndarray:
    """Log-likelihood of one row of each pattern, shape (chain, draw, n_patterns)."""
    C, D = post.sizes["chain"], post.sizes["draw"]
    if spec.link == "logit":
        return _pointwise(spec, post, True)[0].reshape(C, D, -1)
    return _pattern_ll_numpy(spec, post)


def _pattern_ll_numpy(spec: ModelSpec, post: xr.Dataset) -> np.ndarray:
    """Any link: cell by cell with numpy / scipy, in chunks of draws."""
    from poolwise.model.predictor import _gather_rows, cell_eta, log_p_q

    pat = row_patterns(spec.design)
    C, D = post.sizes["chain"], post.sizes["draw"]
    out = np.empty((C, D, pat.n_patterns))
    const = pat.log_binom_const
    for a, b, part in _chunks(post, spec.design.n_cells):
        lp, lq = log_p_q(spec.link, cell_eta(spec, part))
        ll = _gather_rows(lp, lq, pat.cell, pat.y, pat.n, const)
        out[:, a:b, :] = ll.reshape(C, b - a, -1)
    return out


def total_log_likelihood(spec: ModelSpec, post: xr.Dataset) -> np.ndarray:
    """The log-likelihood of all data rows, per draw, shape (chain, draw), from the cells
    (equal to the sum of every row's log-likelihood)."""
    from poolwise.model.predictor import cell_eta, log_p_q

    d = spec.design
    C, D = post.sizes["chain"], post.sizes["draw"]
    if spec.link == "logit":
        return _pointwise(spec, post, False)[1].reshape(C, D)
    y = np.asarray(d.y, dtype=float)
    f = np.asarray(d.n, dtype=float) - y
    out = np.empty((C, D))
    for a, b, part in _chunks(post, d.n_cells):
        lp, lq = log_p_q(spec.link, cell_eta(spec, part))
        # skip zero counts: 0 * -inf would be nan where p is exactly 0 or 1
        tot = np.where(y > 0, lp * y, 0.0).sum(axis=1) + np.where(f > 0, lq * f, 0.0).sum(axis=1)
        out[:, a:b] = tot.reshape(C, b - a)
    pat = row_patterns(d)
    return out + float(np.sum(pat.log_binom_const * pat.count))


def log_likelihood_group(spec: ModelSpec, post: xr.Dataset) -> xr.Dataset:
    """The ``log_likelihood`` group: ``y`` per (chain, draw, pattern)."""
    ll = pattern_log_likelihood(spec, post)
    return xr.Dataset(
        {"y": (("chain", "draw", PATTERN_DIM), ll)},
        coords={"chain": post["chain"].values, "draw": post["draw"].values,
                PATTERN_DIM: np.arange(ll.shape[-1])},
        attrs={"poolwise_unit": PATTERN_DIM},
    )
