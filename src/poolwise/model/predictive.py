"""Posterior predictive quantities: each cell's success probability and replicated data, from
the one linear predictor (:mod:`poolwise.model.predictor`).

The posterior predictive check of the report (:mod:`poolwise.output.plots.pooling`) and the
group summaries read them here; the prior predictive check
(:mod:`poolwise.model.prior_predictive`) pushes prior draws through the same predictor.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import xarray as xr

from poolwise.model.predictor import (
    Coefficients,
    coefficients,
    inverse_link,
    linear_predictor,
)

if TYPE_CHECKING:
    from poolwise.model.spec import ModelSpec

__all__ = ["cell_probabilities", "level_replicates", "level_sums", "replicated_successes",
           "thinned_draws"]

#: draws x cells per block of :func:`level_replicates` (16 MB of float64 per array)
_BLOCK = 2_000_000


def level_sums(values: np.ndarray, codes: np.ndarray, L: int) -> np.ndarray:
    """Per draw, the sum of ``values`` (S, cells) over each level's cells: (S, L). One
    bincount for all draws (bin ``s * L + level``; each bin adds its cells in cell order)."""
    S = values.shape[0]
    idx = (np.arange(S)[:, None] * L + np.asarray(codes)[None, :]).ravel()
    return np.bincount(idx, weights=np.asarray(values, dtype=float).ravel(),
                       minlength=S * L).reshape(S, L)


def thinned_draws(post: xr.Dataset, max_draws: int) -> np.ndarray:
    """At most ``max_draws`` draws (indices into the draws flattened over chains), evenly
    spaced."""
    S = post.sizes["chain"] * post.sizes["draw"]
    return np.unique(np.linspace(0, S - 1, min(S, max_draws)).astype(int))


def cell_probabilities(spec: ModelSpec, post: xr.Dataset,
                       draws: np.ndarray | None = None) -> np.ndarray:
    """Each cell's success probability per draw (S, cells); ``draws``: only these (indices
    into the draws flattened over chains)."""
    coefs = coefficients(spec, post)
    if draws is not None:
        coefs = coefs.take(draws)
    return inverse_link(spec.link, linear_predictor(spec, coefs))


def replicated_successes(spec: ModelSpec, post: xr.Dataset, rng: np.random.Generator,
                         draws: np.ndarray | None = None) -> np.ndarray:
    """Replicated successes of every cell (S, cells): one binomial draw per posterior draw
    with the cell's trials and probability (the posterior predictive distribution)."""
    p = cell_probabilities(spec, post, draws)
    return rng.binomial(spec.design.n.astype(np.int64), p)


def level_replicates(spec: ModelSpec, post: xr.Dataset, rng: np.random.Generator,
                     draws: np.ndarray, codes: np.ndarray, L: int) -> np.ndarray:
    """Replicated successes summed per level (``codes``: each cell's level of ``L``), for the
    posterior draws ``draws`` (indices into the draws flattened over chains): (len(draws), L).

    The posterior predictive distribution of the level totals, as
    ``level_sums(replicated_successes(...), codes, L)`` gives it, computed a block of draws
    at a time, so that memory is a block x cells (about :data:`_BLOCK` values), never
    draws x cells (with 10^5 cells and 1000 draws that array alone is 800 MB); the random
    numbers are drawn draw by draw, so the block size does not change them. A cell of one
    trial is a Bernoulli draw, a uniform below p (ten times cheaper than NumPy's binomial
    sampler); the others are binomial draws."""
    coefs: Coefficients = coefficients(spec, post).take(np.asarray(draws))
    n = spec.design.n.astype(np.int64)
    one = np.flatnonzero(n == 1)
    many = np.flatnonzero(n != 1)
    codes = np.asarray(codes)
    S = coefs.n_draws
    block = max(1, min(S, _BLOCK // max(1, spec.design.n_cells)))
    out = np.empty((S, L))
    for start in range(0, S, block):
        part = coefs.take(np.arange(start, min(S, start + block)))
        p = inverse_link(spec.link, linear_predictor(spec, part))
        y = np.zeros(n.shape)
        for s in range(part.n_draws):  # draw by draw: the same numbers whatever the block
            y[one] = rng.random(len(one)) < p[s, one]
            if len(many):
                y[many] = rng.binomial(n[many], p[s, many])
            out[start + s] = np.bincount(codes, weights=y, minlength=L)
    return out
