"""Power-scaling sensitivity (Kallioinen et al. 2024), the numbers of ``arviz_stats.psense``
for one parameter, in NumPy.

The prior-sensitivity check (:mod:`poolwise.inference.diagnostics.sensitivity`) needs, per
parameter, how far its posterior moves when the prior (or the likelihood) is raised to the
power 0.99 and 1.01: Pareto-smoothed importance weights of the power-scaled component
(``(alpha - 1) * log component``, the right tail of the weights smoothed by a generalized
Pareto fit, its size set by the component's relative tail ESS) and the cumulative
Jensen-Shannon distance between the draws and the reweighted draws, as a finite-difference
derivative. This module computes exactly what arviz-stats 1.x computes, step for step
(``_power_scale_lw``, ``_get_ps_tails``, ``_ps_tail``, ``_gpdfit``, ``_gpinv``, ``_cjs_dist``,
``_power_scale_sense``, and the relative tail ESS of ``_ess_tail``), without importing
arviz-stats: its import pulls in scipy.stats, about 0.4 s of a 2-second command
(``bench/fixed_cost.py``). ``tests/test_prior_sensitivity.py`` holds every number equal to
``arviz_stats.psense``.
"""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp

__all__ = ["ALPHAS", "power_scale_sensitivity", "psis_log_weights"]

#: the powers of the prior (or likelihood) around 1 (arviz-stats' default)
ALPHAS = (0.99, 1.01)


def _next_fast_len(n: int) -> int:
    """The smallest 5-smooth number (2^a 3^b 5^c) >= n: the FFT length arviz-stats pads to
    (``scipy.fftpack.next_fast_len``)."""
    best = 1 << max(0, (n - 1).bit_length())
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            m = p35
            while m < n:
                m *= 2
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best


def _autocov(x: np.ndarray) -> np.ndarray:
    """The autocovariance of each row at every lag (FFT, divided by the length)."""
    n = x.shape[1]
    m = _next_fast_len(2 * n)
    x = x - x.mean(axis=1, keepdims=True)
    f = np.fft.rfft(x, n=m, axis=1)
    f *= np.conjugate(f)
    return np.fft.irfft(f, n=m, axis=1)[:, :n] / n


def _relative_ess(x: np.ndarray) -> float:
    """The relative effective sample size of the rows (chains) of ``x``: Geyer's initial
    positive and monotone sequences, as arviz-stats' ``_ess(ary, relative=True)``."""
    x = np.asarray(x, dtype=float)
    if np.max(x) - np.min(x) < np.finfo(float).resolution:
        return float(x.size)  # arviz-stats returns the size here, relative or not
    n_chain, n_draw = x.shape
    acov = _autocov(x)
    mean_var = np.mean(acov[:, 0]) * n_draw / (n_draw - 1.0)
    var_plus = mean_var * (n_draw - 1.0) / n_draw
    if n_chain > 1:
        var_plus += np.var(x.mean(axis=1), axis=None, ddof=1)
    rho = np.zeros(n_draw)
    even = rho[0] = 1.0
    odd = rho[1] = 1.0 - (mean_var - np.mean(acov[:, 1])) / var_plus
    t = 1
    while t < n_draw - 3 and even + odd > 0.0:
        even = 1.0 - (mean_var - np.mean(acov[:, t + 1])) / var_plus
        odd = 1.0 - (mean_var - np.mean(acov[:, t + 2])) / var_plus
        if even + odd >= 0:
            rho[t + 1], rho[t + 2] = even, odd
        t += 2
    max_t = t - 2
    if even > 0:
        rho[max_t + 1] = even
    t = 1
    while t <= max_t - 2:
        if rho[t + 1] + rho[t + 2] > rho[t - 1] + rho[t]:
            rho[t + 1] = rho[t + 2] = (rho[t - 1] + rho[t]) / 2.0
        t += 2
    tau = -1.0 + 2.0 * np.sum(rho[: max_t + 1]) + np.sum(rho[max_t + 1: max_t + 2])
    tau = max(tau, 1 / np.log10(n_chain * n_draw))
    return float("nan") if np.isnan(rho).any() else 1 / tau


def _relative_tail_ess(c: np.ndarray) -> float:
    """The relative tail ESS (5% and 95% quantiles) of the draws ``c`` taken as one chain,
    split in halves (what ``_power_scale_lw`` passes to ``_ess_tail``)."""
    if c.size < 4 or np.isnan(c).any():
        return float("nan")
    half = c.size // 2
    out = []
    for prob in (0.05, 0.95):
        below = c <= np.quantile(c, prob)
        out.append(_relative_ess(np.vstack((below[:half], below[-half:]))))
    return min(out)


def _tail_size(n: int, r_eff: float) -> int:
    """Draws in the smoothed tail (``_get_ps_tails``, both tails: at most half, at least 5)."""
    size = np.floor(3 * (n / r_eff) ** 0.5) if n * r_eff > 225 else np.floor(n / 5)
    return int(max(min(size, n // 2), 5))


def _gpd_fit(x: np.ndarray) -> tuple[float, float]:
    """Empirical-Bayes estimate of a generalized Pareto's shape and scale from the sorted
    exceedances ``x`` (Zhang and Stephens, with arviz-stats' weak prior on the shape)."""
    prior_bs, prior_k = 3, 10
    n = len(x)
    m_est = 30 + int(n**0.5)
    xstar = x[int((n / 4 + 0.5) - 1)]  # the first quartile
    if xstar <= x[0]:
        return float("nan"), float("nan")
    b = 1 - np.sqrt(m_est / (np.arange(1, m_est + 1, dtype=float) - 0.5))
    b /= prior_bs * xstar
    b += 1 / x[-1]
    k = np.mean(np.log1p(-b[:, None] * x), axis=1)
    len_scale = n * (np.log(-b / k) - k - 1)
    w = np.exp(len_scale - logsumexp(len_scale))
    keep = w >= 10 * np.finfo(float).eps
    if not np.all(keep):
        w, b = w[keep], b[keep]
    w /= w.sum()
    b_post = np.sum(b * w)
    kappa = np.mean(np.log1p(-b_post * x))
    sigma = -kappa / b_post
    kappa = (n * kappa + prior_k * 0.5) / (n + prior_k)
    if np.isnan(kappa):
        return float("inf"), float("nan")
    return float(kappa), float(sigma)


def _gpd_quantile(p: np.ndarray, kappa: float, sigma: float, mu: float) -> np.ndarray:
    if sigma <= 0:
        return np.full_like(p, np.nan)
    if kappa == 0:
        return mu - sigma * np.log1p(-p)
    return mu + sigma * np.expm1(-kappa * np.log1p(-p)) / kappa


def psis_log_weights(log_ratios: np.ndarray, r_eff: float = 1.0) -> tuple[np.ndarray, float]:
    """Pareto-smoothed importance sampling of the log importance ratios ``log_ratios``
    (``arviz_stats`` ``psislw`` of their negation, step for step): the normalized smoothed
    log weights and the Pareto k of the right tail (its size ``3 sqrt(n / r_eff)``, or n / 5
    with n r_eff of 225 or less). ``method="approx"`` weighs its proposals with it (the
    import of arviz-stats would cost 0.4 s of the approximate path's start)."""
    lw = np.asarray(log_ratios, dtype=float).ravel()
    n = lw.size
    tail = int(np.floor(3 * (n / r_eff) ** 0.5) if n * r_eff > 225 else np.floor(n / 5))
    if tail < 5:
        raise ValueError("n_draws_tail must be at least 5")
    return _smoothed_log_weights(lw, tail)


def _smoothed_log_weights(lw: np.ndarray, tail: int) -> tuple[np.ndarray, float]:
    """Log weights with their largest ``tail`` replaced by the quantiles of a generalized
    Pareto fitted to them, normalized (``_ps_tail(..., smooth_draws=True,
    log_weights=True)``), and the fitted shape (the Pareto k)."""
    lw = lw - np.max(lw)
    n = lw.size
    ids = np.arange(n - tail, n, dtype=int)
    order = np.argsort(lw)
    top = lw[order[ids]]
    cutoff = lw[order[ids[0] - 1]]  # the largest value below the tail
    max_top = np.max(top)
    if abs(max_top - np.min(top)) < np.finfo(float).tiny:
        raise ValueError("All tail values are the same")
    kappa, sigma = _gpd_fit(np.exp(top) - np.exp(cutoff))
    if np.isfinite(kappa):
        smoothed = np.log(_gpd_quantile(np.arange(0.5, tail) / tail, kappa, sigma,
                                        np.exp(cutoff)))
        smoothed[smoothed > max_top] = max_top
        lw[order[ids]] = smoothed
    return lw - logsumexp(lw), kappa


def _cjs_distance(x: np.ndarray, w: np.ndarray) -> float:
    """The cumulative Jensen-Shannon distance between the draws ``x`` and the same draws
    with the weights ``w``."""
    order = np.argsort(x)
    x, w = x[order], w[order]
    width = np.diff(x)
    cdf_p = np.linspace(1 / len(x), 1 - 1 / len(x), len(x) - 1)
    cdf_q = np.cumsum(w / np.sum(w))[:-1]
    p_int, q_int = np.dot(cdf_p, width), np.dot(cdf_q, width)
    log_p = np.log2(cdf_p, out=np.zeros_like(cdf_p), where=cdf_p != 0)
    log_q = np.log2(cdf_q, out=np.zeros_like(cdf_q), where=cdf_q != 0)
    mid = 0.5 * (cdf_p + cdf_q)
    log_mid = np.log2(mid, out=np.zeros_like(mid), where=mid != 0)
    pq = np.sum(width * (cdf_p * (log_p - log_mid))) + 0.5 / np.log(2) * (q_int - p_int)
    qp = np.sum(width * (cdf_q * (log_q - log_mid))) + 0.5 / np.log(2) * (p_int - q_int)
    return float(np.sqrt((max(0, pq) + max(0, qp)) / (p_int + q_int)))


def power_scale_sensitivity(x: np.ndarray, log_component: np.ndarray,
                            alphas: tuple[float, float] = ALPHAS) -> float:
    """The power-scaling sensitivity of the draws ``x`` (chain, draw) to the component whose
    log density at each draw is ``log_component`` (the prior of ``x``, or the total
    log-likelihood): ``arviz_stats.psense`` of ``x`` with that component as its
    ``log_prior`` (or ``log_likelihood``) group."""
    x = np.asarray(x, dtype=float).ravel()
    c = np.asarray(log_component, dtype=float).ravel()
    tail = _tail_size(c.size, _relative_tail_ess(c))
    lower, upper = alphas
    grads = []
    for alpha in (lower, upper):
        w = np.exp(_smoothed_log_weights((alpha - 1) * c, tail)[0])
        w = w / w.sum()
        grads.append(max(_cjs_distance(x, w), _cjs_distance(-x, w)) / np.log2(alpha))
    return (-grads[0] + grads[1]) / 2
