"""Posterior predictive quantities: each cell's success probability and replicated data, from
the one linear predictor (:mod:`poolwise.model.predictor`).

The posterior predictive check of the report (:mod:`poolwise.output.plots.pooling`) and the
group summaries read them here; the prior predictive check
(:mod:`poolwise.model.prior_predictive`) pushes prior draws through the same predictor.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numba
import numpy as np
import xarray as xr

from poolwise.engine.density import log_p_q
from poolwise.model import links
from poolwise.model.predictor import (
    Coefficients,
    Rows,
    coefficients,
    eta_at,
    inverse_link,
    linear_predictor,
    predictor_arrays,
)

if TYPE_CHECKING:
    from poolwise.model.spec import ModelSpec

__all__ = [
    "cell_probabilities",
    "level_replicates",
    "level_sums",
    "mean_probabilities",
    "replicated_successes",
    "row_replicates",
    "thinned_draws",
]

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
                       draws: np.ndarray | None = None,
                       cells: np.ndarray | None = None) -> np.ndarray:
    """Each cell's success probability per draw (S, cells); ``draws``: only these (indices
    into the draws flattened over chains); ``cells``: only these cells."""
    coefs = coefficients(spec, post)
    if draws is not None and not np.array_equal(draws, np.arange(len(coefs.beta))):
        coefs = coefs.take(draws)  # a copy of those draws (not when they are all)
    rows = None if cells is None else Rows.of_design(spec.design).take(cells)
    return inverse_link(spec.link, linear_predictor(spec, coefs, rows))


def replicated_successes(spec: ModelSpec, post: xr.Dataset, rng: np.random.Generator,
                         draws: np.ndarray | None = None) -> np.ndarray:
    """Replicated successes of every cell (S, cells), one per posterior draw: a binomial draw
    with the cell's trials and probability; for the beta-binomial family each data row of
    the cell draws its own probability from Beta(p phi, (1 - p) phi) first (the rows of a
    cell are not one beta-binomial)."""
    p = cell_probabilities(spec, post, draws)
    d = spec.design
    if spec.family != "beta_binomial":
        return rng.binomial(d.n.astype(np.int64), p)
    from poolwise.data.patterns import row_patterns
    from poolwise.model.likelihood import phi_draws

    phi = phi_draws(spec, post)
    phi = phi if draws is None else phi[draws]
    pat = row_patterns(d)
    row = np.repeat(np.arange(pat.n_patterns), pat.count)  # every data row
    pr = p[:, pat.cell[row]]
    pi = rng.beta(np.maximum(pr * phi[:, None], 1e-300),
                  np.maximum((1.0 - pr) * phi[:, None], 1e-300))
    y = rng.binomial(pat.n[row].astype(np.int64), pi)
    return level_sums(y, pat.cell[row], d.n_cells).astype(np.int64)


def row_replicates(spec: ModelSpec, post: xr.Dataset, rng: np.random.Generator,
                   draws: np.ndarray, rows: np.ndarray | None = None
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per data row (``row_patterns`` repeated by their counts; ``rows``: only these of
    them): its trials, its success probability per draw (S, rows) and one replicate per draw
    (a binomial draw, or for the beta-binomial a beta-binomial one)."""
    from poolwise.data.patterns import row_patterns
    from poolwise.model.likelihood import phi_draws

    pat = row_patterns(spec.design)
    row = np.repeat(np.arange(pat.n_patterns), pat.count)
    if rows is not None:
        row = row[rows]
    n = pat.n[row]
    cells, at = np.unique(pat.cell[row], return_inverse=True)  # the cells of these rows
    p = cell_probabilities(spec, post, draws, cells)[:, np.asarray(at).ravel()]
    if spec.family == "beta_binomial":
        phi = phi_draws(spec, post)[draws][:, None]
        pi = rng.beta(np.maximum(p * phi, 1e-300), np.maximum((1.0 - p) * phi, 1e-300))
    else:
        pi = p
    return n, p, _binomial_in_parts(rng, n.astype(np.int64), pi)


#: parts of the draws whose binomial replicates come from their own generators (a fixed
#: number: the replicates do not depend on the cores)
_PARTS = 4


def _binomial_in_parts(rng: np.random.Generator, n: np.ndarray, p: np.ndarray) -> np.ndarray:
    """``Binomial(n, p)`` for every row of ``p`` (draws, rows), in ``_PARTS`` blocks of
    draws, each from its own child of ``rng`` (``Generator.spawn``) on its own thread: NumPy's
    binomial runs without the GIL but one generator at a time, and at 400 x 20,000 it took
    0.7 s on one core."""
    from concurrent.futures import ThreadPoolExecutor

    parts = np.array_split(np.arange(p.shape[0]), _PARTS)
    gens = rng.spawn(_PARTS)
    out = np.empty(p.shape, dtype=np.int64)

    def part(k: int) -> None:
        if parts[k].size:
            out[parts[k]] = gens[k].binomial(n, p[parts[k]])

    with ThreadPoolExecutor(min(_PARTS, os.cpu_count() or 1)) as pool:
        list(pool.map(part, range(_PARTS)))
    return out


@numba.njit(cache=True, parallel=True, error_model="numpy")
def _weighted_p(link, beta, tot, mu, X, offset, col, z, weight, level,
                n_levels):  # pragma: no cover - compiled
    S = beta.shape[0]
    out = np.zeros((S, n_levels))
    for s in numba.prange(S):
        for r in range(X.shape[0]):
            lp, _ = log_p_q(link, eta_at(s, r, beta, tot, mu, X, offset, col, z))
            out[s, level[r]] += weight[r] * np.exp(lp)
    return out


def mean_probabilities(spec: ModelSpec, coefs: Coefficients, rows: Rows, weight: np.ndarray,
                       level: np.ndarray, n_levels: int) -> np.ndarray:
    """Per draw, each level's weighted sum of the rows' success probabilities,
    ``sum_r weight_r p_r`` over the rows of that level (``level``: 0 .. n_levels - 1), shape
    (S, n_levels). Computed row by row inside one compiled loop: memory follows draws x
    levels, not draws x rows (a population of 10^6 cells in seconds). The probabilities are
    ``exp(log p)`` from the likelihood's link kernel."""
    X, offset, col, z = predictor_arrays(coefs, rows)
    return _weighted_p(links.get(spec.link).kernel_id, coefs.beta, coefs.tot, coefs.mu, X,
                       offset, col, z, np.ascontiguousarray(weight, dtype=np.float64),
                       np.ascontiguousarray(level, dtype=np.int64), int(n_levels))


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
    sampler); the others are binomial draws. The beta-binomial family replicates each data
    row (:func:`replicated_successes`), a block of draws at a time."""
    codes = np.asarray(codes)
    if spec.family == "beta_binomial":
        draws = np.asarray(draws)
        step = max(1, _BLOCK // max(1, int(spec.design.n.size)))
        return np.concatenate([
            level_sums(replicated_successes(spec, post, rng, draws[i:i + step]), codes, L)
            for i in range(0, len(draws), step)
        ])
    coefs: Coefficients = coefficients(spec, post).take(np.asarray(draws))
    n = spec.design.n.astype(np.int64)
    one = np.flatnonzero(n == 1)
    many = np.flatnonzero(n != 1)
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
