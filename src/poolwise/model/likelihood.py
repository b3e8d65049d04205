"""The likelihood: the one place in poolwise that turns eta into a log-likelihood.

A row with ``y`` successes out of ``n`` trials and linear predictor ``eta`` (from
:mod:`poolwise.model.predictor`) contributes::

    log C(n, y) + y log p + (n - y) log(1 - p),   p = inverse_link(eta)

with ``log p`` and ``log(1 - p)`` from the link's kernel
(:func:`poolwise.engine.density.log_p_q`, the same kernel family the sampler's density uses;
zero counts are skipped, so ``p`` of exactly 0 or 1 gives no ``0 * -inf``); for the
beta-binomial family (``spec.family == "beta_binomial"``), ``log C(n, y)`` plus the
beta-binomial's log pmf with mean ``p`` and each draw's precision ``phi``
(:func:`poolwise.engine.density.beta_binomial_loglik`, the sampler's kernel). Rows are stored
once per row pattern with a count (:mod:`poolwise.data.patterns`):

* :func:`pattern_log_likelihood`: one row of each pattern, per draw (the fit's
  ``log_likelihood`` group, :func:`log_likelihood_group`), from which row-level LOO is exact;
* :func:`total_log_likelihood`: all rows, per draw (the prior sensitivity check);
* :class:`CellLikelihood`: the kernel on arrays of eta, for callers that hold eta already
  (leave-one-group-out integrates a new group's effect over quadrature nodes).

The fused kernel computes eta cell by cell inside the loop (no draws x cells array), so memory
follows the patterns; it runs on every core.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numba
import numpy as np
import xarray as xr

from poolwise.data.patterns import PATTERN_DIM, row_patterns
from poolwise.engine.density import (
    BETA_BINOMIAL,
    BINOMIAL,
    LOGIT,
    beta_binomial_loglik,
    cell_loglik_family,
    inverse_and_slope,
    log_p_q,
    logit_log_p_q,
)
from poolwise.model import links
from poolwise.model.predictor import (
    Rows,
    coefficients,
    eta_at,
    predictor_arrays,
)

if TYPE_CHECKING:
    from poolwise.model.spec import ModelSpec

__all__ = [
    "CellLikelihood",
    "binomial_cell",
    "binomial_log_lik",
    "binomial_score",
    "phi_draws",
    "log_likelihood_group",
    "pattern_log_likelihood",
    "total_log_likelihood",
]


#: draws per task of :func:`_patterns` at most: each task's buffers (eta, log p, log(1 - p)
#: of every cell, each pattern's value) are made once
_TASKS = 64


@numba.njit(cache=True, parallel=True, error_model="numpy")
def _patterns(link, family, phi, beta, tot, mu, X, offset, col, z, cell, y, n, const, count,
              store):  # pragma: no cover - compiled
    """Per draw: each pattern's log-likelihood (into ``out`` when ``store``) and the
    count-weighted total (summed in pattern order). eta is computed once per cell; the
    binomial's ``log p`` and ``log(1 - p)`` of every cell in one loop (the logit's without a
    branch: SIMD lanes, 7x faster than cell by cell), then the patterns (sorted by cell); the
    beta-binomial (``family``) reads each draw's precision ``phi[s]``, cell by cell."""
    S = beta.shape[0]
    P = cell.shape[0]
    n_cells = X.shape[0]
    out = np.empty((S, P if store else 0))
    total = np.zeros(S)
    tasks = min(S, _TASKS)
    for b in numba.prange(tasks):
        e = np.empty(n_cells)
        lp = np.empty(n_cells)
        lq = np.empty(n_cells)
        for s in range(b * S // tasks, (b + 1) * S // tasks):
            if family != BETA_BINOMIAL:
                for c in range(n_cells):
                    e[c] = eta_at(s, c, beta, tot, mu, X, offset, col, z)
                if link == LOGIT:
                    for c in range(n_cells):
                        lp[c], lq[c] = logit_log_p_q(e[c])
                else:
                    for c in range(n_cells):
                        lp[c], lq[c] = log_p_q(link, e[c])
            acc = 0.0
            last = -1
            pp = 0.0
            qq = 0.0
            for p in range(P):
                c = cell[p]
                v = const[p]
                if family == BETA_BINOMIAL:
                    if c != last:
                        eta = eta_at(s, c, beta, tot, mu, X, offset, col, z)
                        pp, qq, _ = inverse_and_slope(link, eta)
                        last = c
                    v += beta_binomial_loglik(y[p], n[p], pp, qq, phi[s])[0]
                else:
                    if y[p] > 0.0:
                        v += y[p] * lp[c]
                    if n[p] - y[p] > 0.0:
                        v += (n[p] - y[p]) * lq[c]
                if store:
                    out[s, p] = v
                acc += count[p] * v
            total[s] = acc
    return out, total


def _family_id(spec: ModelSpec) -> int:
    return BETA_BINOMIAL if spec.family == "beta_binomial" else BINOMIAL


def phi_draws(spec: ModelSpec, post: xr.Dataset) -> np.ndarray:
    """The beta-binomial's precision per draw (S,) (zeros for the binomial)."""
    S = post.sizes["chain"] * post.sizes["draw"]
    if spec.family != "beta_binomial":
        return np.zeros(S)
    return np.ascontiguousarray(post["phi"].values.reshape(S), dtype=np.float64)


def _pointwise(spec: ModelSpec, post: xr.Dataset,
               store: bool) -> tuple[np.ndarray, np.ndarray]:
    pat = row_patterns(spec.design)
    coefs = coefficients(spec, post)
    arrays = predictor_arrays(coefs, Rows.of_design(spec.design))
    return _patterns(links.get(spec.link).kernel_id, _family_id(spec), phi_draws(spec, post),
                     coefs.beta, coefs.tot, coefs.mu, *arrays, pat.cell, pat.y, pat.n,
                     pat.log_binom_const, pat.likelihood_weight, store)


def pattern_log_likelihood(spec: ModelSpec, post: xr.Dataset) -> np.ndarray:
    """Log-likelihood of one row of each pattern, shape (chain, draw, n_patterns)."""
    C, D = post.sizes["chain"], post.sizes["draw"]
    return _pointwise(spec, post, True)[0].reshape(C, D, -1)


def total_log_likelihood(spec: ModelSpec, post: xr.Dataset,
                         group: xr.Dataset | None = None) -> np.ndarray:
    """The log-likelihood of all data rows, per draw, shape (chain, draw) (the sum of every
    row's log-likelihood, computed from the patterns with their counts; with survey weights
    each row's times its weight: the pseudo-likelihood the sampler's density uses).

    ``group``: the fit's ``log_likelihood`` group (:func:`log_likelihood_group` of these
    draws), when it has one: its float64 per-pattern values are summed with the patterns'
    weights instead of being computed again (at 50,000 groups x 4,000 draws that pass took
    0.7 s). A group of another shape or dtype (row-level, float32) is not read."""
    C, D = post.sizes["chain"], post.sizes["draw"]
    ll = group.get("y") if group is not None \
        and group.attrs.get("poolwise_unit") == PATTERN_DIM else None
    weight = row_patterns(spec.design).likelihood_weight
    if ll is not None and ll.dtype == np.float64 \
            and ll.dims == ("chain", "draw", PATTERN_DIM) and ll.shape == (C, D, len(weight)):
        return (ll.values.reshape(C * D, -1) @ weight).reshape(C, D)
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


@numba.njit(cache=True, inline="always", error_model="numpy")
def binomial_cell(link, y, n, eta):  # pragma: no cover - compiled
    """One binomial cell's ``y log p + (n - y) log(1 - p)`` (without ``log C(n, y)``; zero
    counts skipped): what :class:`CellLikelihood` evaluates, and the numba kernels of the
    varying intercept's quadrature (:mod:`poolwise.model.quadrature`) call."""
    lp, lq = log_p_q(link, eta)
    v = 0.0
    if y > 0.0:
        v += y * lp
    if n - y > 0.0:
        v += (n - y) * lq
    return v


def _cell_ll_kernel(link, family, y, n, eta, phi):  # pragma: no cover - compiled
    if family == BETA_BINOMIAL:
        p, q, _ = inverse_and_slope(link, eta)
        return beta_binomial_loglik(y, n, p, q, phi)[0]
    return binomial_cell(link, y, n, eta)


def _cell_score_kernel(link, family, y, n, eta, phi):  # pragma: no cover - compiled
    return cell_loglik_family(family, link, y, n, eta, phi)[1]


@functools.cache
def _cell_ufuncs() -> tuple[np.ufunc, np.ufunc]:
    """The two kernels above as NumPy ufuncs, built on first use (leave-one-group-out's
    integrals): numba caches a vectorized kernel, but builds its ufunc's loop anew in every
    process (about 0.1 s for the two), which a fit that never calls them should not pay."""
    sig = ["float64(int64, int64, float64, float64, float64, float64)"]
    return (numba.vectorize(sig, cache=True)(_cell_ll_kernel),
            numba.vectorize(sig, cache=True)(_cell_score_kernel))


def binomial_log_lik(link: str, y: np.ndarray, n: np.ndarray, eta: np.ndarray) -> np.ndarray:
    """``y log p + (n - y) log(1 - p)`` elementwise (broadcast), without ``log C(n, y)``."""
    return CellLikelihood(link).log_lik(y, n, eta)


@dataclass(frozen=True, eq=False)
class CellLikelihood:
    """A cell's likelihood given its eta, on arrays whose first axis is the draw: the link, the
    family and, for the beta-binomial, each draw's precision ``phi`` (S, 1). What the
    integrals of leave-one-group-out evaluate (:mod:`poolwise.model.quadrature`)."""

    link: str
    family: str = "binomial"
    phi: np.ndarray | None = None

    @classmethod
    def of(cls, spec: ModelSpec, post: xr.Dataset) -> CellLikelihood:
        phi = phi_draws(spec, post)[:, None] if spec.family == "beta_binomial" else None
        return cls(spec.link, spec.family, phi)

    def _args(self, y: np.ndarray, n: np.ndarray, eta: np.ndarray) -> tuple:
        fam = BETA_BINOMIAL if self.family == "beta_binomial" else BINOMIAL
        phi = 0.0 if self.phi is None else self.phi.reshape((-1,) + (1,) * (np.ndim(eta) - 1))
        return (links.get(self.link).kernel_id, fam, np.asarray(y, dtype=np.float64),
                np.asarray(n, dtype=np.float64), np.asarray(eta, dtype=np.float64), phi)

    def log_lik(self, y: np.ndarray, n: np.ndarray, eta: np.ndarray) -> np.ndarray:
        """The log-likelihood without ``log C(n, y)``, elementwise (broadcast)."""
        return _cell_ufuncs()[0](*self._args(y, n, eta))

    def score(self, y: np.ndarray, n: np.ndarray, eta: np.ndarray) -> np.ndarray:
        """Its derivative in eta (the sampler's kernel: stable in both tails)."""
        return _cell_ufuncs()[1](*self._args(y, n, eta))

    def fisher_weight(self, n: np.ndarray, eta: np.ndarray) -> np.ndarray:
        """The expected information about eta: the binomial's, divided by the beta-binomial's
        variance inflation ``1 + (n - 1) / (phi + 1)``."""
        w = links.get(self.link).fisher_weight(n, eta)
        if self.phi is None:
            return w
        phi = self.phi.reshape((-1,) + (1,) * (np.ndim(eta) - 1))
        return w / (1.0 + (np.asarray(n, dtype=float) - 1.0) / (phi + 1.0))


def binomial_score(link: str, y: np.ndarray, n: np.ndarray, eta: np.ndarray) -> np.ndarray:
    """``d/d eta [y log p + (n - y) log(1 - p)]`` elementwise (broadcast): the derivative the
    sampler's density uses (:func:`poolwise.engine.density.cell_loglik`), stable in both
    tails."""
    return CellLikelihood(link).score(y, n, eta)
