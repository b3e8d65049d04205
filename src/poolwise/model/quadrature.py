"""The log density of a group's rows as a new group: its effects integrated out.

For one level of a group term, per posterior draw of the shared parameters::

    log int prod_c Binom(y_c | n_c, p(eta0_c + Z_c v)) N(v | m, Sigma) dv

where ``eta0`` is the linear predictor without the level's own effects
(:mod:`poolwise.model.predictor`) and ``N(m, Sigma)`` is what the model says about a level it
has not seen (:func:`poolwise.model.predictor.new_level_draws`). Computed by adaptive
Gauss-Hermite quadrature: nodes ``v* + chol(H^-1) x`` around the mode ``v*`` of the integrand
(Fisher scoring, each step halved until it raises the integrand) with the observed curvature
``H`` there, ``NODES[C]`` nodes per dimension on a tensor grid. The Laplace approximation is the
one-node case. Accuracy against a dense grid of the same integrand (every link; the
consistency suite's models and the tests of this module): a varying intercept (21 nodes)
within 2e-5, 1e-4 with nested levels integrated inside; an intercept and a slope (21 x 21
nodes) within 5e-3: where the 0/1 rows of a small group leave the integrand skewed, with a
flat side where the link saturates, a tensor grid converges slowly (one such case: 2.3e-3 with
21, 7e-4 with 31, 1.5e-4 with 51 nodes a side). The Monte Carlo error of an ``elpd_j`` is
1e-2 or more, so neither limits leave-one-group-out.

Levels of a nested term whose rows all lie inside the left-out level (``(1 | a/b)`` left out by
``a``) are integrated inside, per outer node, by the same quadrature. The outer nodes come
from the joint mode of the outer and nested effects (Newton steps on the whole block-arrow
curvature) and the Laplace approximation over the nested levels there (the outer curvature
less their Schur complement).

The integrand's values come from the one likelihood kernel
(:func:`poolwise.model.likelihood.binomial_log_lik`); the link's derivatives
(:mod:`poolwise.model.links`) only steer the search for the mode. Used by leave-one-group-out
(:mod:`poolwise.comparison.logo`).

**The varying intercept's fast path** (:func:`intercept_log_integrals`,
:func:`intercept_draws`): the same adaptive Gauss-Hermite integral for one varying intercept
``u ~ N(0, sd^2)`` of a binomial model, compiled with numba over every (draw, level) pair at
once, without temporaries, for the many draws and levels of the approximate posterior
(:mod:`poolwise.inference.approx`): the mode by Fisher scoring with step halving, the observed
curvature there, then ``nodes`` Gauss-Hermite nodes. Its values are those of
:func:`new_level_log_density` (``tests/test_approx.py``), with the cell's log-likelihood from
the model's kernel (:func:`poolwise.model.likelihood.binomial_cell`). ``intercept_draws``
draws each level's intercept from its conditional posterior exactly: that density is
log-concave, so the tangents of its log density at a few points around the mode bound it from
above, and rejection from that piecewise-exponential envelope accepts about 19 proposals in
20. The groups that share a level's cells take their first proposals together in a loop
without branches (SIMD lanes: the logarithms by :func:`poolwise.engine.density.log_pos`, not
libm's calls); the squeeze (the chords between tangent points, below the concave log
density) decides 5 in 6 of them there, and only the rest evaluate the density: 18 ns a draw
at 50,000 groups on 2 cores, 37 ns before. Draws with the same shared parameters (the
importance sampling's resampling repeats about a third of its proposals) share each level's
envelope (``draws_of``): at 10,000 groups the envelopes (about 0.6 us each) were half the
draws' time.

**Several varying coefficients** (:func:`kd_log_integrals`, :func:`kd_draws`): the general
quadrature's nodes for a level of C varying coefficients, compiled over every (draw, level)
pair (held equal to the numpy path to 1e-8, ``tests/test_approx_slopes.py``; leave-one-group-out
takes it without nested levels), and exact draws of a level's C effects by rejection from the
Gaussian envelope with the prior's covariance that the concave log-likelihood guarantees at the
mode.

Why one module: the general quadrature and its compiled paths are one method with one
accuracy statement, and the tests hold them equal.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numba
import numpy as np
from scipy.special import logsumexp

from poolwise.engine.density import (
    BINOMIAL,
    LOGIT,
    cell_loglik_family,
    exp_nonpos,
    inverse_and_slope,
    log1p_any,
    log_pos,
    logit_log_p_q,
)
from poolwise.errors import SpecError
from poolwise.model import links
from poolwise.model.likelihood import CellLikelihood, binomial_cell

__all__ = ["NODES", "DrawCounts", "NewLevelPrior", "intercept_draws", "intercept_log_integrals",
           "kd_draws", "kd_log_integrals", "new_level_log_density", "segment_sums"]


#: Gauss-Hermite nodes per dimension for a new level with this many varying coefficients
NODES = {1: 21, 2: 21, 3: 11, 4: 7, 5: 5, 6: 4}


_LOG_2PI = math.log(2.0 * math.pi)


@dataclass(frozen=True, eq=False)
class NewLevelPrior:
    """A new level's effects ``v ~ N(mean, chol chol')`` per draw: mean (S, C), chol (S, C, C),
    and the precision ``prec`` (S, C, C) and ``log_det`` (S,) of chol."""

    mean: np.ndarray
    chol: np.ndarray
    prec: np.ndarray
    log_det: np.ndarray

    @classmethod
    def of(cls, mean: np.ndarray, chol: np.ndarray) -> NewLevelPrior:
        C = mean.shape[1]
        diag = np.diagonal(chol, axis1=1, axis2=2)
        chol = chol.copy()
        small = np.maximum(diag, 1e-12) - diag  # a zero SD: a very narrow prior, not a crash
        chol[:, np.arange(C), np.arange(C)] += small
        inv = np.linalg.inv(chol)
        return cls(mean, chol, np.einsum("sji,sjk->sik", inv, inv),
                   np.log(np.diagonal(chol, axis1=1, axis2=2)).sum(axis=1))

    def log_pdf(self, v: np.ndarray) -> np.ndarray:
        """log N(v | mean, Sigma) for v (S, B, C)."""
        C = v.shape[-1]
        r = v - self.mean[:, None, :]
        q = np.einsum("sbi,sij,sbj->sb", r, self.prec, r)
        return -0.5 * q - self.log_det[:, None] - 0.5 * C * _LOG_2PI


def _nodes(C: int, per_dim: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Tensor-product Gauss-Hermite nodes (Q, C) and log weights (Q,) for exp(-|x|^2 / 2),
    ``per_dim`` nodes per dimension (None: ``NODES[C]``)."""
    if C not in NODES:
        raise SpecError(f"leave-one-group-out integrates up to {max(NODES)} varying "
                        f"coefficients per group; this term has {C}")
    x, w = np.polynomial.hermite_e.hermegauss(NODES[C] if per_dim is None else int(per_dim))
    X = np.array(list(itertools.product(x, repeat=C)))
    logw = np.log(np.array(list(itertools.product(w, repeat=C)))).sum(axis=1)
    return X, logw


def _score_and_weight(lik: CellLikelihood, y: np.ndarray, n: np.ndarray, eta: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
    """d loglik / d eta (the likelihood kernel's, stable in both tails) and the Fisher weight
    of each cell: what the search for the mode steps with."""
    return lik.score(y, n, eta), lik.fisher_weight(n, eta)


def _observed_weight(lik: CellLikelihood, y: np.ndarray, n: np.ndarray,
                     eta: np.ndarray) -> np.ndarray:
    """``-d^2 loglik / d eta^2`` of each cell (the observed information; the Fisher weight for
    the binomial logit), by a central difference of the analytic score, clipped at 0 (the
    binomial log-likelihood is concave in eta for every link here; the beta-binomial's nearly
    so where it matters)."""
    if lik.link == "logit" and lik.family == "binomial":
        return _score_and_weight(lik, y, n, eta)[1]
    h = 1e-5 * np.maximum(1.0, np.abs(eta))
    up = lik.score(y, n, eta + h)
    down = lik.score(y, n, eta - h)
    return np.maximum(-(up - down) / (2.0 * h), 0.0)


def segment_sums(a: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Sums of consecutive runs of cells (axis 1) starting at ``starts``."""
    return np.add.reduceat(a, starts, axis=1)


def _newton(lik: CellLikelihood, eta0: np.ndarray, y: np.ndarray, n: np.ndarray, Z: np.ndarray,
            starts: np.ndarray, block: np.ndarray, prior: NewLevelPrior, v: np.ndarray,
            iters: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """The mode ``v`` (S, B, C) of each block's integrand ``loglik(eta0 + Z v) + log N(v)`` by
    Fisher scoring with step halving (a step is taken only as far as it raises the integrand),
    and the observed curvature there (S, B, C, C). Cells (axis 1 of eta0) come in runs per
    block (``starts``; ``block`` the block of each cell)."""

    def objective(vq: np.ndarray) -> np.ndarray:
        eta = eta0 + np.einsum("snc,nc->sn", vq[:, block, :], Z)
        return segment_sums(lik.log_lik(y, n, eta), starts) + prior.log_pdf(vq)

    current = objective(v)
    for _ in range(iters):
        eta = eta0 + np.einsum("snc,nc->sn", v[:, block, :], Z)
        score, w = _score_and_weight(lik, y, n, eta)
        grad = segment_sums(score[:, :, None] * Z[None], starts) - np.einsum(
            "sij,sbj->sbi", prior.prec, v - prior.mean[:, None, :])
        v, current, done = _step(v, _curvature(w, Z, starts, prior), grad, prior, objective,
                                 current)
        if done:
            break
    eta = eta0 + np.einsum("snc,nc->sn", v[:, block, :], Z)
    return v, _curvature(_observed_weight(lik, y, n, eta), Z, starts, prior)


def _step(v: np.ndarray, H: np.ndarray, grad: np.ndarray, prior: NewLevelPrior,
          objective: Callable[[np.ndarray], np.ndarray] | None, current: np.ndarray | None
          ) -> tuple[np.ndarray, np.ndarray | None, bool]:
    """One Newton step per block, at most 3 prior SDs long, halved (up to 20 times) where it
    would lower the ``objective`` by more than rounding (no halving without one): the new
    point, its objective, and whether every step was negligible."""
    step = np.linalg.solve(H, grad[..., None])[..., 0]
    step = np.where(np.isfinite(step), step, 0.0)  # a point where the link overflowed: stay
    size = np.sqrt(np.einsum("sbi,sij,sbj->sb", step, prior.prec, step))
    step *= np.minimum(1.0, 3.0 / np.maximum(size, 1e-300))[..., None]
    if objective is None or current is None:
        return v + step, None, bool(np.max(np.abs(step)) < 1e-9)
    scale = np.ones(current.shape)
    for _ in range(20):
        trial = v + scale[..., None] * step
        value = objective(trial)
        worse = ~(value >= current - 1e-9 * (1.0 + np.abs(current)))
        if not worse.any():
            break
        scale = np.where(worse, 0.5 * scale, scale)
    else:  # no ascent left along the step: stay
        scale = np.where(worse, 0.0, scale)
        trial = v + scale[..., None] * step
        value = objective(trial)
    taken = scale[..., None] * step
    return trial, value, bool(np.max(np.abs(taken)) < 1e-9)


def _curvature(w: np.ndarray, Z: np.ndarray, starts: np.ndarray, prior: NewLevelPrior
               ) -> np.ndarray:
    """Each block's ``sum_c w_c Z_c Z_c' + Sigma^-1`` (S, B, C, C)."""
    return segment_sums(w[:, :, None, None] * (Z[:, :, None] * Z[:, None, :])[None], starts) \
        + prior.prec[:, None, :, :]


def _agh(v_mode: np.ndarray, H: np.ndarray, prior: NewLevelPrior,
         log_lik: Callable[[np.ndarray], np.ndarray], per_dim: int | None = None) -> np.ndarray:
    """``log int exp(log_lik(v)) N(v | prior) dv`` per (draw, block) by adaptive Gauss-Hermite
    quadrature around ``v_mode`` with the curvature ``H``: nodes ``v_mode + chol(H^-1) x``,
    ``per_dim`` per dimension (None: ``NODES[C]``)."""
    S, B, C = v_mode.shape
    X, logw = _nodes(C, per_dim)
    Lh = np.linalg.cholesky(np.linalg.inv(H))  # (S, B, C, C)
    log_det = np.log(np.diagonal(Lh, axis1=2, axis2=3)).sum(axis=-1)
    terms = np.empty((len(X), S, B))
    for q, (x, lw) in enumerate(zip(X, logw, strict=True)):
        v = v_mode + Lh @ x
        terms[q] = lw + 0.5 * float(x @ x) + log_lik(v) + prior.log_pdf(v)
    return log_det + logsumexp(terms, axis=0)


def new_level_log_density(lik: CellLikelihood, eta0: np.ndarray, y: np.ndarray, n: np.ndarray,
                          Z: np.ndarray, starts: np.ndarray, prior: NewLevelPrior,
                          inner: tuple | None = None, nodes: int | None = None,
                          compiled: bool = True) -> np.ndarray:
    """``log int prod_c Binom(y_c | n_c, p(eta0_c + Z_c v)) N(v | prior) dv`` (without the
    binomial coefficients) per draw and level: cells (axis 1 of eta0, with Z (cells, C)) come
    in runs per level starting at ``starts``. Returns (S, G).

    ``inner``: ``(Zu, inner_starts, inner_level_of_run, inner_prior, own)`` for the levels of a
    nested term inside each level: cells whose ``own`` is True belong to one nested level each
    (runs starting at ``inner_starts``, of outer level ``inner_level_of_run``), whose effects
    ``w ~ inner_prior`` are integrated inside (``eta = eta0 + Z v + Zu w``).

    ``nodes``: Gauss-Hermite nodes per dimension without nested levels (None: ``NODES[C]``).

    With several varying coefficients, no nested levels and the binomial (``compiled``), the
    same nodes are summed by :func:`kd_log_integrals`, compiled (leave-one-group-out of a
    varying-slopes model: about 20x faster); its prior's mean moves into eta0."""
    # exp(eta) of the cloglog overflows at trial points far out; such points are refused
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        S = eta0.shape[0]
        G = len(starts)
        C = Z.shape[1]
        if compiled and inner is None and C > 1 and lik.family == "binomial":
            centred = NewLevelPrior(np.zeros_like(prior.mean), prior.chol, prior.prec,
                                    prior.log_det)
            return kd_log_integrals(links.get(lik.link).kernel_id,
                                    eta0 + np.einsum("sc,nc->sn", prior.mean, Z), y, n, Z,
                                    starts, centred, NODES[C] if nodes is None else nodes)[0]
        counts = np.diff(np.append(starts, eta0.shape[1]))
        block = np.repeat(np.arange(G), counts)
        v0 = np.broadcast_to(prior.mean[:, None, :], (S, G, C)).copy()
        if inner is None:
            def log_lik(v: np.ndarray) -> np.ndarray:
                eta = eta0 + np.einsum("snc,nc->sn", v[:, block, :], Z)
                return segment_sums(lik.log_lik(y, n, eta), starts)

            v, H = _newton(lik, eta0, y, n, Z, starts, block, prior, v0)
            return _agh(v, H, prior, log_lik, nodes)
        return _nested_log_density(lik, eta0, y, n, Z, starts, block, prior, v0, inner)


def _nested_log_density(lik: CellLikelihood, eta0: np.ndarray, y: np.ndarray, n: np.ndarray,
                        Z: np.ndarray, starts: np.ndarray, block: np.ndarray, prior: NewLevelPrior,
                        v: np.ndarray, inner: tuple) -> np.ndarray:
    """:func:`new_level_log_density` with nested levels. The joint mode of the outer and nested
    effects by Newton steps on the whole (block-arrow) curvature with step halving; the outer
    nodes from the Laplace approximation over the nested levels there (the outer curvature less
    their Schur complement); then at every outer node each nested level integrated by its own
    adaptive quadrature."""
    Zu, in_starts, in_outer, in_prior, own = inner
    S, G = eta0.shape[0], len(starts)
    cells_in = np.flatnonzero(own)
    cells_out = np.flatnonzero(~own)
    kin = np.searchsorted(in_starts, cells_in, side="right") - 1
    kin_starts = np.flatnonzero(np.r_[True, np.diff(kin) != 0])
    y_in, n_in, Z_in, Zu_in = y[cells_in], n[cells_in], Z[cells_in], Zu[cells_in]
    w = np.broadcast_to(in_prior.mean[:, None, :], (S, len(in_starts), Zu.shape[1])).copy()

    def joint_eta(vq: np.ndarray, wq: np.ndarray) -> np.ndarray:
        eta = eta0 + np.einsum("snc,nc->sn", vq[:, block, :], Z)
        eta[:, cells_in] += np.einsum("snc,nc->sn", wq[:, kin, :], Zu_in)
        return eta

    def per_block(nested: np.ndarray) -> np.ndarray:
        # sums over each block's nested levels (S, K, ...) -> (S, G, ...)
        out = np.zeros((S, G) + nested.shape[2:])
        np.add.at(out, (slice(None), in_outer), nested)
        return out

    def joint(vq: np.ndarray, wq: np.ndarray) -> np.ndarray:
        ll = segment_sums(lik.log_lik(y, n, joint_eta(vq, wq)), starts)
        return ll + prior.log_pdf(vq) + per_block(in_prior.log_pdf(wq))

    def pieces(wt: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        # the outer curvature, the nested levels' own and their cross curvature, all from the
        # same weights (so the Schur complement leaves a positive definite outer curvature)
        w_in = wt[:, cells_in, None, None]
        cross = segment_sums(w_in * (Z_in[:, :, None] * Zu_in[:, None, :])[None], kin_starts)
        Hk = segment_sums(w_in * (Zu_in[:, :, None] * Zu_in[:, None, :])[None], kin_starts) \
            + in_prior.prec[:, None, :, :]
        return _curvature(wt, Z, starts, prior), Hk, cross

    current = joint(v, w)
    for _ in range(60):
        score, wt = _score_and_weight(lik, y, n, joint_eta(v, w))
        gv = segment_sums(score[:, :, None] * Z[None], starts) - np.einsum(
            "sij,sbj->sbi", prior.prec, v - prior.mean[:, None, :])
        gw = segment_sums(score[:, cells_in, None] * Zu_in[None], kin_starts) - np.einsum(
            "sij,skj->ski", in_prior.prec, w - in_prior.mean[:, None, :])
        Hv, Hk, cross = pieces(wt)
        Hk_inv = np.linalg.inv(Hk)
        # eliminate the nested levels: (Hv - sum_k X_k Hk^-1 X_k') dv = gv - sum_k X_k Hk^-1 gw_k
        schur = Hv.copy()
        np.subtract.at(schur, (slice(None), in_outer),
                       np.einsum("skcu,skuv,skdv->skcd", cross, Hk_inv, cross))
        rhs = gv - per_block(np.einsum("skcu,skuv,skv->skc", cross, Hk_inv, gw))
        dv = np.linalg.solve(schur, rhs[..., None])[..., 0]
        dw = np.einsum("skuv,skv->sku", Hk_inv,
                       gw - np.einsum("skcu,skc->sku", cross, dv[:, in_outer, :]))
        scale = np.ones((S, G))
        for _ in range(20):  # halve a block's step (with its nested levels') until it rises
            value = joint(v + scale[..., None] * dv, w + scale[:, in_outer, None] * dw)
            worse = ~(value >= current - 1e-9 * (1.0 + np.abs(current)))
            if not worse.any():
                break
            scale = np.where(worse, 0.5 * scale, scale)
        else:
            scale = np.where(worse, 0.0, scale)
            value = joint(v + scale[..., None] * dv, w + scale[:, in_outer, None] * dw)
        v = v + scale[..., None] * dv
        w = w + scale[:, in_outer, None] * dw
        current = value
        if max(np.max(np.abs(scale[..., None] * dv)), np.max(np.abs(dw))) < 1e-9:
            break
    Hv, Hk, cross = pieces(_observed_weight(lik, y, n, joint_eta(v, w)))
    H = Hv.copy()
    np.subtract.at(H, (slice(None), in_outer),
                   np.einsum("skcu,skuv,skdv->skcd", cross, np.linalg.inv(Hk), cross))

    def log_lik(vq: np.ndarray) -> np.ndarray:
        eta = eta0 + np.einsum("snc,nc->sn", vq[:, block, :], Z)
        base = eta[:, cells_in]
        wq, Hq = _newton(lik, base, y_in, n_in, Zu_in, kin_starts, kin, in_prior, w, iters=30)
        nested = _agh(wq, Hq, in_prior, lambda x: segment_sums(lik.log_lik(
            y_in, n_in, base + np.einsum("snc,nc->sn", x[:, kin, :], Zu_in)),
            kin_starts))
        out = per_block(nested)
        if cells_out.size:
            ll = np.zeros(eta.shape)
            ll[:, cells_out] = lik.log_lik(y[cells_out], n[cells_out],
                                               eta[:, cells_out])
            out += segment_sums(ll, starts)
        return out

    return _agh(v, H, prior, log_lik)


# ---- one varying intercept: numba over every (draw, level) pair ----------------------------


@numba.njit(cache=True, error_model="numpy")
def _score_info(link, y, n, e, fisher):  # pragma: no cover - compiled
    """A cell's score in eta and (with ``fisher``) its Fisher information ``n p'^2 / (p q)``:
    the logit's ``y - n p`` and ``n p q`` by ``exp_nonpos`` (no libm call: the searches for
    the modes and the envelopes' tangents spent most of their time in libm's exp and log1p),
    the other links' by ``cell_loglik_family`` and ``inverse_and_slope``. A NaN eta gives
    NaN. (A call, not inlined: inlined at its nine call sites, themselves inlined, it added
    about 40 s to the first compile of the leave-one-group-out quadrature; the draws are as
    fast either way.)"""
    if link == LOGIT:
        ea = exp_nonpos(-abs(e))
        a = 1.0 / (1.0 + ea)
        p = a if e >= 0.0 else ea * a
        if e != e:
            return math.nan, math.nan
        return y - n * p, n * p * (ea * a if e >= 0.0 else a)
    g = cell_loglik_family(BINOMIAL, link, y, n, e, 0.0)[1]
    if not fisher:
        return g, 0.0
    p, q, dp = inverse_and_slope(link, e)
    return g, (n * dp * dp / (p * q) if p * q > 0.0 else 0.0)


@numba.njit(cache=True, inline="always", error_model="numpy")
def _level_objective(link, eta0, s, y, n, cells, c0, c1, sd2, u):  # pragma: no cover
    """``sum_c loglik(eta0[s, c] + u) - u^2 / (2 sd^2)`` over a level's cells."""
    f = -0.5 * u * u / sd2
    for k in range(c0, c1):
        c = cells[k]
        f += binomial_cell(link, y[c], n[c], eta0[s, c] + u)
    return f


@numba.njit(cache=True, inline="always", error_model="numpy")
def _level_curvature(link, eta0, s, y, n, cells, c0, c1, sd2, u,
                     observed):  # pragma: no cover - compiled
    """The score in ``u`` and the curvature (the Fisher information, or with ``observed``
    the observed one: a central difference of the score; the same for the logit)."""
    g = -u / sd2
    h = 1.0 / sd2
    for k in range(c0, c1):
        c = cells[k]
        e = eta0[s, c] + u
        if observed and link != LOGIT:
            g += _score_info(link, y[c], n[c], e, False)[0]
            d = 1e-5 * max(1.0, abs(e))
            up = _score_info(link, y[c], n[c], e + d, False)[0]
            down = _score_info(link, y[c], n[c], e - d, False)[0]
            h += max(-(up - down) / (2.0 * d), 0.0)
        else:
            sc, w = _score_info(link, y[c], n[c], e, True)
            g += sc
            h += w
    return g, h


@numba.njit(cache=True, error_model="numpy")
def _level_mode(link, eta0, s, y, n, cells, c0, c1, sd2, u):  # pragma: no cover - compiled
    """The mode of a level's integrand by Fisher scoring, each step at most 3 prior SDs
    farther from 0 than the current point (a start far out, from another draw's SD, returns
    in one step) and halved until it raises the integrand; returns (mode, objective,
    observed curvature)."""
    f = _level_objective(link, eta0, s, y, n, cells, c0, c1, sd2, u)
    for _ in range(100):
        g, h = _level_curvature(link, eta0, s, y, n, cells, c0, c1, sd2, u, False)
        step = g / h
        if not math.isfinite(step):
            break
        lim = 3.0 * math.sqrt(sd2) + abs(u)
        step = min(max(step, -lim), lim)
        t = 1.0
        fn = f
        for _ in range(40):
            fn = _level_objective(link, eta0, s, y, n, cells, c0, c1, sd2, u + t * step)
            if fn >= f - 1e-12 * (1.0 + abs(f)):
                break
            t *= 0.5
        else:
            t = 0.0
            fn = f
        u += t * step
        f = fn
        if abs(t * step) < 1e-10 * (1.0 + abs(u)):
            break
    h = _level_curvature(link, eta0, s, y, n, cells, c0, c1, sd2, u, True)[1]
    return u, f, h


@numba.njit(cache=True, parallel=True, error_model="numpy")
def _intercept_integrals(link, eta0, y, n, cells, starts, sd, start, x, logw, out, mode,
                         curv):  # pragma: no cover - compiled
    S = eta0.shape[0]
    G = starts.shape[0] - 1
    half_log_2pi = 0.5 * math.log(2.0 * math.pi)
    for i in numba.prange(S * G):
        s = i // G
        g = i % G
        sd2 = sd[s] * sd[s]
        c0, c1 = starts[g], starts[g + 1]
        u, f, h = _level_mode(link, eta0, s, y, n, cells, c0, c1, sd2, start[g])
        scale = 1.0 / math.sqrt(h)
        best = -math.inf
        acc = 0.0
        for q in range(x.shape[0]):  # log-sum-exp, on line
            v = logw[q] + 0.5 * x[q] * x[q] + _level_objective(
                link, eta0, s, y, n, cells, c0, c1, sd2, u + scale * x[q])
            if v > best:
                acc = acc * math.exp(best - v) + 1.0
                best = v
            else:
                acc += math.exp(v - best)
        out[s, g] = best + math.log(acc) + math.log(scale) - math.log(sd[s]) - half_log_2pi
        mode[s, g] = u
        curv[s, g] = h


# ---- several varying coefficients: numba over every (draw, level) pair ----------------------


@numba.njit(cache=True, inline="always", error_model="numpy")
def _kd_objective(link, eta0, s, y, n, Z, c0, c1, P, v):  # pragma: no cover - compiled
    """``sum_c loglik(eta0[s, c] + Z_c v) - v' P v / 2`` over a level's cells ``c0:c1``."""
    C = v.shape[0]
    f = 0.0
    for i in range(C):
        for j in range(C):
            f -= 0.5 * v[i] * P[i, j] * v[j]
    for c in range(c0, c1):
        e = eta0[s, c]
        for k in range(C):
            e += Z[c, k] * v[k]
        f += binomial_cell(link, y[c], n[c], e)
    return f


@numba.njit(cache=True, inline="always", error_model="numpy")
def _kd_curvature(link, eta0, s, y, n, Z, c0, c1, P, v, observed, g,
                  H):  # pragma: no cover - compiled
    """Into ``g`` the gradient of :func:`_kd_objective` and into ``H`` its curvature ``sum_c
    w_c Z_c Z_c' + P``: the Fisher weights, or with ``observed`` the observed ones (a central
    difference of the score; the same for the logit), as :func:`_level_curvature`."""
    C = v.shape[0]
    for i in range(C):
        acc = 0.0
        for j in range(C):
            H[i, j] = P[i, j]
            acc += P[i, j] * v[j]
        g[i] = -acc
    for c in range(c0, c1):
        e = eta0[s, c]
        for k in range(C):
            e += Z[c, k] * v[k]
        if observed and link != LOGIT:
            score = _score_info(link, y[c], n[c], e, False)[0]
            d = 1e-5 * max(1.0, abs(e))
            up = _score_info(link, y[c], n[c], e + d, False)[0]
            down = _score_info(link, y[c], n[c], e - d, False)[0]
            w = max(-(up - down) / (2.0 * d), 0.0)
        else:
            score, w = _score_info(link, y[c], n[c], e, True)
        for i in range(C):
            g[i] += score * Z[c, i]
            for j in range(C):
                H[i, j] += w * Z[c, i] * Z[c, j]


@numba.njit(cache=True, error_model="numpy")
def _cholesky(H, L):  # pragma: no cover - compiled
    """``L`` the Cholesky factor of ``H`` (C x C, positive definite)."""
    C = H.shape[0]
    for i in range(C):
        for j in range(i + 1):
            acc = H[i, j]
            for k in range(j):
                acc -= L[i, k] * L[j, k]
            if i == j:
                L[i, i] = math.sqrt(max(acc, 1e-300))
            else:
                L[i, j] = acc / L[j, j]
        for j in range(i + 1, C):
            L[i, j] = 0.0


@numba.njit(cache=True, error_model="numpy")
def _chol_solve(H, L, b, x):  # pragma: no cover - compiled
    """``L`` the Cholesky factor of ``H`` (C x C, positive definite) and ``x`` = H^-1 b."""
    C = H.shape[0]
    _cholesky(H, L)
    for i in range(C):  # L w = b
        acc = b[i]
        for k in range(i):
            acc -= L[i, k] * x[k]
        x[i] = acc / L[i, i]
    for i in range(C - 1, -1, -1):  # L' x = w
        acc = x[i]
        for k in range(i + 1, C):
            acc -= L[k, i] * x[k]
        x[i] = acc / L[i, i]


@numba.njit(cache=True, error_model="numpy")
def _kd_mode(link, eta0, s, y, n, Z, c0, c1, P, v, g, H, L, step,
             trial):  # pragma: no cover - compiled
    """The mode ``v`` of a level's integrand (from the ``v`` given) by Fisher scoring, each
    step at most 3 prior SDs longer than the current point's distance from 0 (in the prior's
    metric) and halved until it raises the integrand, as :func:`_level_mode`; returns the
    objective there and leaves the observed curvature in ``H``."""
    C = v.shape[0]
    f = _kd_objective(link, eta0, s, y, n, Z, c0, c1, P, v)
    for _ in range(100):
        _kd_curvature(link, eta0, s, y, n, Z, c0, c1, P, v, False, g, H)
        _chol_solve(H, L, g, step)
        size = 0.0
        here = 0.0
        finite = True
        for i in range(C):
            finite = finite and math.isfinite(step[i])
            for j in range(C):
                size += step[i] * P[i, j] * step[j]
                here += v[i] * P[i, j] * v[j]
        if not finite:
            break
        lim = 3.0 + math.sqrt(max(here, 0.0))
        if size > lim * lim:
            r = lim / math.sqrt(size)
            for i in range(C):
                step[i] *= r
        t = 1.0
        fn = f
        for _ in range(40):
            for i in range(C):
                trial[i] = v[i] + t * step[i]
            fn = _kd_objective(link, eta0, s, y, n, Z, c0, c1, P, trial)
            if fn >= f - 1e-12 * (1.0 + abs(f)):
                break
            t *= 0.5
        else:
            t = 0.0
            fn = f
        big = 0.0
        top = 0.0
        for i in range(C):
            v[i] += t * step[i]
            big = max(big, abs(t * step[i]))
            top = max(top, abs(v[i]))
        f = fn
        if big < 1e-10 * (1.0 + top):
            break
    _kd_curvature(link, eta0, s, y, n, Z, c0, c1, P, v, True, g, H)
    return f


@numba.njit(cache=True, parallel=True, error_model="numpy")
def _kd_integrals(link, eta0, y, n, Z, starts, prec, log_det, start, x, logw, out,
                  mode):  # pragma: no cover - compiled
    S = eta0.shape[0]
    G = starts.shape[0] - 1
    C = Z.shape[1]
    half_log_2pi = 0.5 * math.log(2.0 * math.pi)
    n_pairs = S * G
    block = 256  # pairs per task: the work arrays are made once per task
    for b in numba.prange((n_pairs + block - 1) // block):
        v, grad, step, w = np.empty(C), np.empty(C), np.empty(C), np.empty(C)
        H, L, Hinv = np.empty((C, C)), np.empty((C, C)), np.empty((C, C))
        vals = np.empty(x.shape[1])
        for i in range(b * block, min(n_pairs, (b + 1) * block)):
            s = i // G
            g = i % G
            _kd_pair(link, eta0, s, g, y, n, Z, starts, prec, log_det, start, x, logw, out,
                     mode, v, grad, H, L, Hinv, step, w, vals, half_log_2pi)


@numba.njit(cache=True, inline="always", error_model="numpy")
def _kd_pair(link, eta0, s, g, y, n, Z, starts, prec, log_det, start, x, logw, out, mode, v,
             grad, H, L, Hinv, step, w, vals, half_log_2pi):  # pragma: no cover - compiled
    """One (draw, level) pair of :func:`_kd_integrals`."""
    C = Z.shape[1]
    P = prec[s]
    for k in range(C):
        v[k] = start[g, k]
    c0, c1 = starts[g], starts[g + 1]
    _kd_mode(link, eta0, s, y, n, Z, c0, c1, P, v, grad, H, L, step, w)
    for k in range(C):  # the nodes v + chol(H^-1) x, as the general path has them
        for j in range(C):
            grad[j] = 1.0 if j == k else 0.0
        _chol_solve(H, L, grad, w)
        for j in range(C):
            Hinv[j, k] = w[j]
    _cholesky(Hinv, L)
    log_det_a = 0.0
    for k in range(C):
        log_det_a += math.log(L[k, k])
    total = _kd_node_sum(link, eta0, s, y, n, Z, c0, c1, P, v, L, x, logw, vals, Hinv, step,
                         w)
    out[s, g] = total + log_det_a - log_det[s] - C * half_log_2pi
    for k in range(C):
        mode[s, g, k] = v[k]


@numba.njit(cache=True, inline="always", error_model="numpy")
def _kd_node_sum(link, eta0, s, y, n, Z, c0, c1, P, v, L, xT, logw, vals, M, q1,
                 B):  # pragma: no cover - compiled
    """``log sum_q exp(logw_q + |x_q|^2 / 2 + objective(v + L x_q))`` over the nodes (``xT``
    (C, Q), one row per dimension): the prior's quadratic form expanded in x once, then each
    cell's log-likelihood at every node (:func:`_kd_cells`) and their log-sum-exp. ``vals``
    (Q,), ``M`` (C, C), ``q1`` and ``B`` (C,) are work arrays."""
    C = v.shape[0]
    Q = xT.shape[1]
    q0 = 0.0
    for k in range(C):  # q1 = L' P v, M = L' P L, q0 = -v' P v / 2
        pv = 0.0
        for m in range(C):
            pv += P[k, m] * v[m]
        q0 -= 0.5 * v[k] * pv
        B[k] = pv
    for j in range(C):
        acc = 0.0
        for k in range(C):
            acc += L[k, j] * B[k]
        q1[j] = acc
        for i in range(C):
            acc = 0.0
            for k in range(C):
                for m in range(C):
                    acc += L[k, j] * P[k, m] * L[m, i]
            M[j, i] = acc
    for q in range(Q):
        acc = logw[q] + q0
        for j in range(C):
            xj = xT[j, q]
            acc += 0.5 * xj * xj - q1[j] * xj
            for i in range(C):
                acc -= 0.5 * xj * M[j, i] * xT[i, q]
        vals[q] = acc
    _kd_cells(link, eta0, s, y, n, Z, c0, c1, v, L, xT, vals, B)
    return _log_sum_exp(vals)


@numba.njit(cache=True, inline="always", error_model="numpy")
def _kd_cells(link, eta0, s, y, n, Z, c0, c1, v, L, xT, vals, B):  # pragma: no cover
    """Adds each cell's log-likelihood at every node ``v + L x_q`` to ``vals`` (for the logit
    branch-free, :func:`poolwise.engine.density.logit_log_p_q`: a loop the compiler vectorizes;
    written out for two coefficients, where an inner loop over them kept it from doing so).
    ``B`` (C,) is a work array."""
    C = v.shape[0]
    Q = xT.shape[1]
    for c in range(c0, c1):
        base = eta0[s, c]
        for k in range(C):
            base += Z[c, k] * v[k]
        for j in range(C):
            acc = 0.0
            for k in range(C):
                acc += Z[c, k] * L[k, j]
            B[j] = acc
        yc, nc = y[c], n[c]
        if link == LOGIT and C == 2:  # the node loop without an inner loop: in SIMD lanes
            b0, b1 = B[0], B[1]
            for q in range(Q):
                e = base + b0 * xT[0, q] + b1 * xT[1, q]
                vals[q] += nc * logit_log_p_q(e)[0] - (nc - yc) * e
        elif link == LOGIT:  # y log p + (n - y) log(1 - p) = n log p - (n - y) eta
            for q in range(Q):
                e = base
                for j in range(C):
                    e += B[j] * xT[j, q]
                vals[q] += nc * logit_log_p_q(e)[0] - (nc - yc) * e
        else:
            for q in range(Q):
                e = base
                for j in range(C):
                    e += B[j] * xT[j, q]
                vals[q] += binomial_cell(link, yc, nc, e)


@numba.njit(cache=True, inline="always", error_model="numpy")
def _log_sum_exp(vals):  # pragma: no cover - compiled
    """``log sum_q exp(vals[q])``; NaN if any is NaN (``exp_nonpos``, not libm's ``exp``: a
    loop in SIMD lanes)."""
    Q = vals.shape[0]
    best = -math.inf
    for q in range(Q):
        best = max(best, vals[q])
    acc = 0.0
    nan = False
    for q in range(Q):
        d = vals[q] - best
        nan |= d != d
        acc += exp_nonpos(d)
    return math.nan if nan else best + math.log(acc)


def kd_log_integrals(link_id: int, eta0: np.ndarray, y: np.ndarray, n: np.ndarray,
                     Z: np.ndarray, starts: np.ndarray, prior: NewLevelPrior, nodes: int,
                     start: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`new_level_log_density` without nested levels, compiled over every (draw, level)
    pair (the approximate posterior's path for several varying coefficients): ``log int
    prod_c Binom(y_c | n_c, p(eta0_c + Z_c v)) N(v | prior) dv`` per draw and level, cells in
    runs per level (``starts``), ``nodes`` Gauss-Hermite nodes per dimension around each
    mode (whose search starts at ``start`` (levels, C), 0 by default). Returns the log
    integrals (S, levels) and the modes (S, levels, C)."""
    S, C = eta0.shape[0], Z.shape[1]
    X, logw = _nodes(C, nodes)
    G = len(starts)
    out, mode = np.empty((S, G)), np.empty((S, G, C))
    start = np.zeros((G, C)) if start is None else np.ascontiguousarray(start, dtype=float)
    bounds = np.append(np.asarray(starts, dtype=np.int64), eta0.shape[1])
    _kd_integrals(int(link_id), np.ascontiguousarray(eta0, dtype=np.float64),
                  np.asarray(y, dtype=np.float64), np.asarray(n, dtype=np.float64),
                  np.ascontiguousarray(Z, dtype=np.float64), bounds,
                  np.ascontiguousarray(prior.prec), np.ascontiguousarray(prior.log_det), start,
                  np.ascontiguousarray(X.T), logw, out, mode)
    return out, mode


#: proposals per draw of several varying coefficients before it counts as failed (the
#: envelope accepts about the ratio of the posterior's volume to the prior's: 1 in 2 for the
#: bundled example's districts, less for groups with many rows; a failure is reported)
KD_MAX_TRIES = 2000


@numba.njit(cache=True, parallel=True, error_model="numpy")
def _kd_draws(link, eta0, y, n, Z, starts, prec, chol, start, members, member_starts,
              n_groups, key, rows, row_starts, out, counts):  # pragma: no cover - compiled
    """Per (shared parameters s, level): its mode and envelope once, then one draw for each
    group that has the level's cells and each draw with those parameters (``rows[row_starts[s]:
    row_starts[s + 1]]``: pairs (row of out, draw index), as :func:`_intercept_draws`); each
    group's uniforms come from its own (draw, group) index. ``counts`` (tasks, 3): per task,
    the draws that failed, the proposals made, the most one draw took."""
    S = eta0.shape[0]
    K = starts.shape[0] - 1
    C = Z.shape[1]
    half = (C + 1) // 2
    per_try = np.uint64(2 * half + 1)
    n_pairs = S * K
    block = 256
    for b in numba.prange((n_pairs + block - 1) // block):
        a, g, step, trial, center, z, v = (np.empty(C), np.empty(C), np.empty(C),
                                           np.empty(C), np.empty(C), np.empty(2 * half),
                                           np.empty(C))
        H = np.empty((C, C))
        L = np.empty((C, C))
        failed, proposals, most = 0, 0, 0
        for i in range(b * block, min(n_pairs, (b + 1) * block)):
            s = i // K
            k = i % K
            P = prec[s]
            Lc = chol[s]
            c0, c1 = starts[k], starts[k + 1]
            for c in range(C):
                a[c] = start[k, c]
            f = _kd_mode(link, eta0, s, y, n, Z, c0, c1, P, a, g, H, L, step, trial)
            _kd_curvature(link, eta0, s, y, n, Z, c0, c1, P, a, False, g, H)
            top = f
            for c in range(C):  # the center a + Sigma g, and the envelope's log there
                acc = 0.0
                for j in range(C):
                    for m in range(C):
                        acc += Lc[c, m] * Lc[j, m] * g[j]
                center[c] = a[c] + acc
                top += 0.5 * g[c] * acc
            for r in range(row_starts[s], row_starts[s + 1]):
                o = rows[r, 0]
                for q in range(member_starts[k], member_starts[k + 1]):
                    grp = members[q]
                    pair = np.uint64(rows[r, 1]) * np.uint64(n_groups) + np.uint64(grp)
                    t, accepted = _kd_propose(link, eta0, s, y, n, Z, c0, c1, P, Lc, center,
                                              top, key,
                                              pair * np.uint64(KD_MAX_TRIES) * per_try, z, v)
                    proposals += t
                    most = max(most, t)
                    if not accepted:  # reported by the caller; the mode stands in
                        failed += 1
                        for c in range(C):
                            v[c] = a[c]
                    for c in range(C):
                        out[o, grp, c] = v[c]
        counts[b, 0], counts[b, 1], counts[b, 2] = failed, proposals, most


@numba.njit(cache=True, inline="always", error_model="numpy")
def _kd_propose(link, eta0, s, y, n, Z, c0, c1, P, Lc, center, top, key, base, z,
                v):  # pragma: no cover - compiled
    """Proposals ``center + Lc z`` into ``v`` until one is accepted or ``KD_MAX_TRIES`` are
    spent, the uniforms counted from ``base``: (proposals made, whether one was accepted)."""
    C = v.shape[0]
    half = z.shape[0] // 2
    per_try = np.uint64(2 * half + 1)
    t = 0
    accepted = False
    while t < KD_MAX_TRIES and not accepted:
        cnt = base + np.uint64(t) * per_try
        for h in range(half):  # Box-Muller: two normals from two uniforms
            u1 = _uniform(key, cnt + np.uint64(2 * h))
            u2 = _uniform(key, cnt + np.uint64(2 * h + 1))
            r = math.sqrt(-2.0 * math.log(u1))
            z[2 * h] = r * math.cos(2.0 * math.pi * u2)
            z[2 * h + 1] = r * math.sin(2.0 * math.pi * u2)
        zz = 0.0
        for c in range(C):
            acc = center[c]
            for j in range(c + 1):
                acc += Lc[c, j] * z[j]
            v[c] = acc
            zz += z[c] * z[c]
        ratio = _kd_objective(link, eta0, s, y, n, Z, c0, c1, P, v) - top + 0.5 * zz
        u = _uniform(key, cnt + np.uint64(2 * half))
        t += 1
        accepted = math.log(u) < ratio  # nan (an overflow): rejected
    return t, accepted


def kd_draws(link_id: int, eta0: np.ndarray, y: np.ndarray, n: np.ndarray, Z: np.ndarray,
             starts: np.ndarray, prior: NewLevelPrior, start: np.ndarray, key: int,
             first: int = 0, members: tuple[np.ndarray, np.ndarray, int] | None = None,
             out: np.ndarray | None = None,
             draws_of: tuple[np.ndarray, np.ndarray] | None = None
             ) -> tuple[np.ndarray, DrawCounts]:
    """One exact draw per (draw, group) of a level's C varying effects ``v`` from their
    conditional posterior ``prod_c Binom(y_c | n_c, p(eta0_c + Z_c v)) N(v | 0, Sigma)``
    (``prior``: ``N(0, Sigma)`` per draw): cells (axis 1 of eta0, with Z (cells, C)) in runs
    per level starting at ``starts``; ``start`` (levels, C) where each search for a mode
    starts; ``members`` as for :func:`intercept_draws` (one draw per group; groups with the
    same cells share a level). Returns (S, groups, C) (into ``out`` when given, a
    C-contiguous float64 or float32 array) and the :class:`DrawCounts`. The uniforms come
    from ``key`` and the pair's index (draw ``first + s``, group): any split into batches
    gives the same draws. ``draws_of``: draws that share their parameters, as for
    :func:`intercept_draws` (each row's modes and envelopes made once for all its draws).

    By rejection from a Gaussian envelope with the prior's covariance: the log-likelihood is
    concave in ``v`` (every link here; survey-weighted cells alike), so at any point ``a``
    with log density ``f`` and gradient ``g``, ``log p(v) <= f + g'(v - a) - (v - a)' P
    (v - a) / 2`` (``P`` the prior precision): a Gaussian ``N(a + Sigma g, Sigma)``, tight at
    ``a``, here the level's mode (:func:`_kd_mode`, where ``g`` is 0 up to its tolerance).
    Every accepted proposal is an exact draw; about the ratio of the posterior's volume to the
    prior's is accepted (1 for a level its rows say little about, about 1 in 2 for the bundled
    example's districts); a draw that finds none in ``KD_MAX_TRIES`` counts as failed (the
    level's mode stands in; the caller reports it)."""
    S, C = eta0.shape[0], Z.shape[1]
    K = len(starts)
    if members is None:
        members = (np.arange(K), np.arange(K + 1), K)
    groups, member_starts, n_groups = members
    rows, row_starts = _draw_rows(S, first, draws_of)
    out = np.empty((len(rows), n_groups, C)) if out is None else out
    counts = np.zeros(((S * K + 255) // 256, 3), dtype=np.int64)
    _kd_draws(int(link_id), np.ascontiguousarray(eta0, dtype=np.float64),
              np.asarray(y, dtype=np.float64), np.asarray(n, dtype=np.float64),
              np.ascontiguousarray(Z, dtype=np.float64),
              np.append(np.asarray(starts, dtype=np.int64), eta0.shape[1]),
              np.ascontiguousarray(prior.prec), np.ascontiguousarray(prior.chol),
              np.ascontiguousarray(start, dtype=np.float64),
              np.asarray(groups, dtype=np.int64), np.asarray(member_starts, dtype=np.int64),
              int(n_groups), np.uint64(key), rows, row_starts, out, counts)
    return out, DrawCounts(int(counts[:, 0].sum()), int(counts[:, 1].sum()),
                           int(counts[:, 2].max(initial=0)), len(rows) * n_groups)



@numba.njit(cache=True, inline="always")
def _uniform(key, counter):  # pragma: no cover - compiled
    """A uniform on (0, 1) from (key, counter) by splitmix64: reproducible in any order, on
    any number of threads."""
    z = key + counter * np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return (np.float64(z >> np.uint64(11)) + 0.5) * (1.0 / 9007199254740992.0)


@numba.njit(cache=True, inline="always", error_model="numpy")
def _level_score(link, eta0, s, y, n, cells, c0, c1, sd2, u):  # pragma: no cover
    g = -u / sd2
    for k in range(c0, c1):
        c = cells[k]
        g += _score_info(link, y[c], n[c], eta0[s, c] + u, False)[0]
    return g


#: where the tangents of the rejection sampler's envelope touch, in SDs of the Laplace
#: approximation around the mode (five: the draws' loop picks a segment's numbers by selects
#: written out for five, :func:`_pick`)
TANGENTS = np.array([-2.2, -0.8, 0.0, 0.8, 2.2])
#: proposals per draw before a pair counts as failed (each is accepted with probability about
#: 0.95, 1.05 proposals a draw at 50,000 groups; a failure is reported, never hidden)
MAX_TRIES = 60


@numba.njit(cache=True, inline="always", error_model="numpy")
def _segment_mass(x, f, d, z, ex, j):  # pragma: no cover - compiled
    """The log mass of segment j of the envelope (``ex[j]``: ``expm1(d (b - a))`` of an
    inner one, made once for this and the inversion)."""
    m = x.shape[0]
    if j == 0:
        return f[j] + d[j] * (z[j] - x[j]) - math.log(d[j])
    if j == m - 1:
        return f[j] + d[j] * (z[j - 1] - x[j]) - math.log(-d[j])
    a, b = z[j - 1], z[j]
    if abs(d[j]) * (b - a) < 1e-12:
        return f[j] + d[j] * (a - x[j]) + math.log(b - a)
    return f[j] + d[j] * (a - x[j]) + math.log(ex[j] / d[j])


@numba.njit(cache=True, error_model="numpy")
def _envelope(link, eta0, s, y, n, cells, c0, c1, sd2, u0, x, f, d, z, mass,
              ex):  # pragma: no cover - compiled
    """The envelope of a level's conditional log density (log-concave: the binomial
    log-likelihood of these links is concave in eta, the prior too): its tangents at
    ``TANGENTS`` (in SDs of the Laplace approximation around the mode) at ``x`` with values
    ``f`` (relative to the mode's) and slopes ``d``, the tangents' crossings ``z``, each
    segment's mass (scaled) and, for the inner segments, ``expm1(d (b - a))`` (``ex``: what
    their inversion in :func:`_table` needs), into the arrays given; returns the mode's log
    density and the total mass. (Called once per level and draw, not inlined: inlined into
    the draws' loop it doubled their compile time.)"""
    u, fm, h = _level_mode(link, eta0, s, y, n, cells, c0, c1, sd2, u0)
    m = TANGENTS.shape[0]
    sc = 1.0 / math.sqrt(h)
    for j in range(m):
        x[j] = u + sc * TANGENTS[j]
        f[j] = _level_objective(link, eta0, s, y, n, cells, c0, c1, sd2, x[j]) - fm
        d[j] = _level_score(link, eta0, s, y, n, cells, c0, c1, sd2, x[j])
    for j in range(m - 1):
        dd = d[j] - d[j + 1]
        z[j] = 0.5 * (x[j] + x[j + 1]) if dd <= 1e-300 else (
            f[j + 1] - f[j] - x[j + 1] * d[j + 1] + x[j] * d[j]) / dd
        z[j] = min(max(z[j], x[j]), x[j + 1])
    for j in range(1, m - 1):
        ex[j] = math.expm1(d[j] * (z[j] - z[j - 1]))
    top = -math.inf
    for j in range(m):
        mass[j] = _segment_mass(x, f, d, z, ex, j)
        top = max(top, mass[j])
    total = 0.0
    for j in range(m):
        mass[j] = math.exp(mass[j] - top)
        total += mass[j]
    return fm, total


@numba.njit(cache=True, inline="always", error_model="numpy")
def _five(a):  # pragma: no cover - compiled
    """An array of five as a tuple (its values in registers, not loaded in the loop)."""
    return a[0], a[1], a[2], a[3], a[4]


@numba.njit(cache=True, inline="always", error_model="numpy")
def _inner(zl, zr, dj, exj):  # pragma: no cover - compiled
    """An inner segment's inversion ``(base, slope, gam, lin)`` (see :func:`_table`)."""
    if abs(dj) * (zr - zl) < 1e-12:
        return zl, 0.0, 0.0, zr - zl
    return zl, exj, 1.0 / dj, 0.0


@numba.njit(cache=True, inline="always", error_model="numpy")
def _table(x, f, d, z, mass, ex):  # pragma: no cover - compiled
    """What a draw from the envelope of :func:`_envelope` needs, per segment j (tuples of
    five: ``TANGENTS`` has five points), so that a loop of draws reads no array: where its
    mass starts (``lead``) and 1 / its mass; the inversion ``base + gam log1p(slope r) + lin
    r`` of its share ``r`` in (0, 1) (outer segments: ``z + log1p(-r) / d``, the mirror image
    of ``z + log(r) / d``, equally uniform; inner ones ``a + log1p(r expm1(d (b - a))) / d``,
    or ``a + r (b - a)`` where that is flat); the tangent's point, value and slope; and the
    slopes of the chords between tangent points (the squeeze). Made of scalars, no array:
    six small arrays a call had cost more than the envelope's arithmetic."""
    m0, m1, m2, m3, m4 = _five(mass)
    lead = (0.0, m0, m0 + m1, m0 + m1 + m2, m0 + m1 + m2 + m3)
    inv = (1.0 / m0, 1.0 / m1, 1.0 / m2, 1.0 / m3, 1.0 / m4)
    b1, s1, g1, l1 = _inner(z[0], z[1], d[1], ex[1])
    b2, s2, g2, l2 = _inner(z[1], z[2], d[2], ex[2])
    b3, s3, g3, l3 = _inner(z[2], z[3], d[3], ex[3])
    cs = ((f[1] - f[0]) / (x[1] - x[0]), (f[2] - f[1]) / (x[2] - x[1]),
          (f[3] - f[2]) / (x[3] - x[2]), (f[4] - f[3]) / (x[4] - x[3]))
    return (lead, inv, (z[0], b1, b2, b3, z[3]), (-1.0, s1, s2, s3, -1.0),
            (1.0 / d[0], g1, g2, g3, 1.0 / d[4]), (0.0, l1, l2, l3, 0.0),
            _five(x), _five(f), _five(d), cs)


@numba.njit(cache=True, inline="always", error_model="numpy")
def _pick(a, g1, g2, g3, g4):  # pragma: no cover - compiled
    """``a[g1 + g2 + g3 + g4]`` (the flags ascending) by selects, not an indexed load."""
    return a[4] if g4 else (a[3] if g3 else (a[2] if g2 else (a[1] if g1 else a[0])))


@numba.njit(cache=True, inline="always", error_model="numpy", fastmath={"contract"})
def _propose(key, counter, total, tab):  # pragma: no cover - compiled
    """A proposal from the envelope ``tab`` (:func:`_table`, scaled mass ``total``) made of
    the uniforms at ``counter`` and ``counter + 1``, without a branch: the proposal, ``log u +
    hull`` (it is accepted when the log density, relative to the mode's, is at least that),
    and whether the squeeze (the chord between two tangent points lies below the concave log
    density) accepts it already."""
    lead, inv, base, slope, gam, lin, x, f, d, cs = tab
    v = _uniform(key, counter) * total
    g1, g2, g3, g4 = v > lead[1], v > lead[2], v > lead[3], v > lead[4]
    r = min(max((v - _pick(lead, g1, g2, g3, g4)) * _pick(inv, g1, g2, g3, g4), 1e-300),
            1.0 - 1e-16)
    xp = (_pick(base, g1, g2, g3, g4) + _pick(gam, g1, g2, g3, g4)
          * log1p_any(_pick(slope, g1, g2, g3, g4) * r) + _pick(lin, g1, g2, g3, g4) * r)
    hull = _pick(f, g1, g2, g3, g4) + _pick(d, g1, g2, g3, g4) * (
        xp - _pick(x, g1, g2, g3, g4))
    need = log_pos(_uniform(key, counter + np.uint64(1))) + hull
    h1, h2, h3 = xp > x[1], xp > x[2], xp > x[3]
    lo_x = x[3] if h3 else (x[2] if h2 else (x[1] if h1 else x[0]))
    lo_f = f[3] if h3 else (f[2] if h2 else (f[1] if h1 else f[0]))
    chord = lo_f + (cs[3] if h3 else (cs[2] if h2 else (cs[1] if h1 else cs[0]))) * (
        xp - lo_x)
    return xp, need, (xp > x[0]) & (xp < x[4]) & (chord >= need)


@numba.njit(cache=True, error_model="numpy")
def _retry(link, eta0, s, y, n, cells, c0, c1, sd2, fm, total, tab, key,
           counter):  # pragma: no cover - compiled
    """Proposals 1, 2, ... of a draw whose first was rejected: the accepted one and the
    proposals made in all (``MAX_TRIES + 1`` and the middle tangent point when none was)."""
    for tr in range(1, MAX_TRIES):
        xq, need, squeezed = _propose(key, counter + np.uint64(2 * tr), total, tab)
        if squeezed or _level_objective(link, eta0, s, y, n, cells, c0, c1, sd2,
                                        xq) - fm >= need:
            return xq, tr + 1
    return tab[6][2], MAX_TRIES + 1


#: draws per chunk of a level's groups: their first proposals in one loop without branches
#: (SIMD lanes), the few the squeeze leaves undecided after it
CHUNK = 64


@numba.njit(cache=True, error_model="numpy")
def _level_draws(link, eta0, s, y, n, cells, c0, c1, sd2, u0, members, q_start, q_end,
                 rows, n_groups, key, out, x, f, d, z, mass, ex, xb, nb, ok
                 ):  # pragma: no cover - compiled
    """One draw per group of a level (``members[q_start:q_end]``) for each draw in ``rows``
    (pairs ``(row of out, draw index)``: the draws whose shared parameters are ``eta0[s]``
    and ``sd2``): the envelope once, then a chunk of groups at a time takes its first
    proposals together (:func:`_propose`, no branch); those the squeeze leaves undecided
    evaluate the density, and those rejected propose again (proposal t from the counters 2t
    and 2t + 1 of the pair's ``draw * n_groups + group``). Returns the draws that failed,
    the proposals made and the most one draw took. (Not inlined into the parallel loop:
    parfors' array analysis refuses the envelope's tuple of tuples.)"""
    fm, total = _envelope(link, eta0, s, y, n, cells, c0, c1, sd2, u0, x, f, d, z, mass, ex)
    tab = _table(x, f, d, z, mass, ex)
    failed, proposals, most = 0, 0, 0
    for r in range(rows.shape[0]):
        o = rows[r, 0]
        row = np.uint64(rows[r, 1]) * np.uint64(n_groups)
        for q0 in range(q_start, q_end, CHUNK):
            q1 = min(q0 + CHUNK, q_end)
            for q in range(q0, q1):
                counter = (row + np.uint64(members[q])) * np.uint64(2 * MAX_TRIES)
                xb[q - q0], nb[q - q0], ok[q - q0] = _propose(key, counter, total, tab)
            for q in range(q0, q1):
                g = members[q]
                t = 1
                xp = xb[q - q0]
                if not ok[q - q0] and not (_level_objective(
                        link, eta0, s, y, n, cells, c0, c1, sd2, xp) - fm >= nb[q - q0]):
                    xp, t = _retry(link, eta0, s, y, n, cells, c0, c1, sd2, fm, total, tab,
                                   key, (row + np.uint64(g)) * np.uint64(2 * MAX_TRIES))
                out[o, g] = xp
                proposals += t
                most = max(most, t)
                if t > MAX_TRIES:
                    failed += 1
    return failed, proposals, most


@numba.njit(cache=True, parallel=True, error_model="numpy")
def _intercept_draws(link, eta0, y, n, cells, starts, members, member_starts, n_groups, sd,
                     start, key, rows, row_starts, out, counts):  # pragma: no cover - compiled
    """Per (shared parameters s, level): one draw for each group that has the level's cells
    (``members[member_starts[k]:member_starts[k + 1]]``) and each draw with those parameters
    (``rows[row_starts[s]:row_starts[s + 1]]``, :func:`_level_draws`); each group's uniforms
    come from its own (draw, group) index. ``counts`` (tasks, 3): per task, the draws that
    failed, the proposals made, and the most proposals one draw took."""
    S = eta0.shape[0]
    K = starts.shape[0] - 1
    m = TANGENTS.shape[0]
    n_pairs = S * K
    block = 256  # pairs per task: the envelope's arrays are made once per task
    for b in numba.prange((n_pairs + block - 1) // block):
        x, f, d, z, mass = np.empty(m), np.empty(m), np.empty(m), np.empty(m - 1), np.empty(m)
        ex = np.zeros(m)
        xb, nb = np.empty(CHUNK), np.empty(CHUNK)
        ok = np.empty(CHUNK, dtype=np.bool_)
        failed, proposals, most = 0, 0, 0
        for i in range(b * block, min(n_pairs, (b + 1) * block)):
            s = i // K
            k = i % K
            fl, pr, mo = _level_draws(
                link, eta0, s, y, n, cells, starts[k], starts[k + 1], sd[s] * sd[s], start[k],
                members, member_starts[k], member_starts[k + 1],
                rows[row_starts[s]:row_starts[s + 1]], n_groups, key, out, x, f, d, z, mass,
                ex, xb, nb, ok)
            failed += fl
            proposals += pr
            most = max(most, mo)
        counts[b, 0], counts[b, 1], counts[b, 2] = failed, proposals, most


class DrawCounts(NamedTuple):
    """How the rejection sampler of :func:`intercept_draws` went: draws that found no
    accepted proposal in ``MAX_TRIES``, proposals made, the most one draw took, and draws."""

    failed: int
    proposals: int
    most: int
    draws: int


def _level_runs(codes: np.ndarray, n_levels: int) -> tuple[np.ndarray, np.ndarray]:
    """The cells of each level in runs: ``cells`` (their indices, level by level) and
    ``starts`` (G + 1: level g's cells are ``cells[starts[g]:starts[g + 1]]``)."""
    cells = np.argsort(codes, kind="stable").astype(np.int64)
    counts = np.bincount(codes, minlength=n_levels)
    return cells, np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


def _draw_rows(S: int, first: int, draws_of: tuple[np.ndarray, np.ndarray] | None
               ) -> tuple[np.ndarray, np.ndarray]:
    """The kernels' ``rows`` ((row of out, draw number) per draw) and ``row_starts`` (S + 1):
    one draw per row of parameters, numbered from ``first``, or ``draws_of``'s."""
    if draws_of is None:
        return (np.column_stack([np.arange(S), first + np.arange(S)]).astype(np.int64),
                np.arange(S + 1, dtype=np.int64))
    idx = np.asarray(draws_of[0], dtype=np.int64)
    return np.column_stack([idx, idx]), np.asarray(draws_of[1], dtype=np.int64)


def intercept_log_integrals(link_id: int, eta0: np.ndarray, y: np.ndarray, n: np.ndarray,
                            codes: np.ndarray, n_levels: int, sd: np.ndarray,
                            start: np.ndarray | None = None, nodes: int = NODES[1]
                            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``log int prod_c Binom(y_c | n_c, p(eta0_c + u)) N(u | 0, sd^2) du`` (without the
    binomial coefficients) per draw and level, for one varying intercept: eta0 (S, cells) the
    linear predictor without it, ``codes`` (cells,) each cell's level, ``sd`` (S,) the
    intercepts' SD, ``start`` (levels,) where each level's search for the mode starts (0 by
    default). Returns the log integrals, the modes and the observed curvatures there, each
    (S, levels)."""
    cells, starts = _level_runs(np.asarray(codes, dtype=np.int64), n_levels)
    S = eta0.shape[0]
    x, w = np.polynomial.hermite_e.hermegauss(int(nodes))
    out, mode, curv = (np.empty((S, n_levels)) for _ in range(3))
    start = np.zeros(n_levels) if start is None else np.ascontiguousarray(start, dtype=float)
    _intercept_integrals(int(link_id), np.ascontiguousarray(eta0, dtype=np.float64),
                         np.asarray(y, dtype=np.float64), np.asarray(n, dtype=np.float64),
                         cells, starts, np.ascontiguousarray(sd, dtype=np.float64), start,
                         x, np.log(w), out, mode, curv)
    return out, mode, curv


def intercept_draws(link_id: int, eta0: np.ndarray, y: np.ndarray, n: np.ndarray,
                    codes: np.ndarray, n_levels: int, sd: np.ndarray, start: np.ndarray,
                    key: int, first: int = 0,
                    members: tuple[np.ndarray, np.ndarray, int] | None = None,
                    out: np.ndarray | None = None,
                    draws_of: tuple[np.ndarray, np.ndarray] | None = None
                    ) -> tuple[np.ndarray, DrawCounts]:
    """One exact draw per (draw, level) of the varying intercept from its conditional
    posterior ``prod_c Binom(y_c | n_c, p(eta0_c + u)) N(u | 0, sd^2)`` (eta0 (S, cells),
    ``sd`` (S,), ``start`` (levels,) where each search for the mode starts), by rejection
    from a piecewise-exponential envelope (its log density's tangents). The uniforms come
    from ``key`` and the pair's index (draw ``first + s``, group), so a batch of draws is
    the same whichever way the draws are split.

    ``members``: ``(groups, starts, n_groups)`` when a level stands for several groups with
    the same cells (the groups of level k are ``groups[starts[k]:starts[k + 1]]``): one draw
    per group, each from the level's envelope. ``draws_of``: ``(draws, starts)`` where
    several draws have the same parameters (importance sampling's resampling repeats
    proposals): row s of ``eta0`` and ``sd`` holds those of the draws
    ``draws[starts[s]:starts[s + 1]]`` (rows of ``out``, and the draw numbers their uniforms
    are keyed by; ``first`` is not added). Each row's envelopes are then made once for all
    its draws, and the draws are those made one row per draw. Returns the draws (S, groups;
    into ``out`` when given, a C-contiguous float64 or float32 array: each draw rounded once)
    and their :class:`DrawCounts` (failed draws took ``MAX_TRIES + 1`` proposals; the caller
    reports them)."""
    cells, starts = _level_runs(np.asarray(codes, dtype=np.int64), n_levels)
    if members is None:
        members = (np.arange(n_levels), np.arange(n_levels + 1), n_levels)
    groups, member_starts, n_groups = members
    S = eta0.shape[0]
    rows, row_starts = _draw_rows(S, first, draws_of)
    out = np.empty((len(rows), n_groups)) if out is None else out
    K = len(starts) - 1
    counts = np.zeros(((S * K + 255) // 256, 3), dtype=np.int64)  # tasks of 256 pairs
    _intercept_draws(int(link_id), np.ascontiguousarray(eta0, dtype=np.float64),
                     np.asarray(y, dtype=np.float64), np.asarray(n, dtype=np.float64), cells,
                     starts, np.asarray(groups, dtype=np.int64),
                     np.asarray(member_starts, dtype=np.int64), int(n_groups),
                     np.ascontiguousarray(sd, dtype=np.float64),
                     np.ascontiguousarray(start, dtype=float), np.uint64(key), rows,
                     row_starts, out, counts)
    return out, DrawCounts(int(counts[:, 0].sum()), int(counts[:, 1].sum()),
                           int(counts[:, 2].max(initial=0)), len(rows) * n_groups)
