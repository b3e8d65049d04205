"""R-hat, ESS and MCSE of many parameters at once: ArviZ's algorithms, batched.

arviz-stats computes the rank-normalized split R-hat (Vehtari et al. 2021), the bulk and tail
ESS and the MCSE one parameter at a time, in a Python loop (``make_ufunc``) around a Python
loop (Geyer's initial sequences). That costs a few milliseconds per parameter: about a minute
for a model with 10,000 group levels, and the repair loop pays it at every attempt. This
module runs the same algorithms on an array of shape ``(parameters, chains, draws)`` in a few
NumPy calls: rank normalization by sorting along the last axis, every autocovariance by one
FFT, and Geyer's initial positive and monotone sequences as a first-nonpositive index and a
running minimum over the pair sums.

It is not a different estimator: ``tests/test_convergence.py`` checks every number against
``arviz_stats.base.array_stats`` (and the summary against ``arviz_stats.summary``) to 1e-10
on AR(1) chains of many lengths, ties, constant and nearly constant draws, odd draw counts
and one chain. Edge cases follow ArviZ: constant draws give ESS = chains x draws, fewer than
4 draws (or 2 chains for R-hat) give NaN. Parameters with non-finite draws get NaN here;
:func:`poolwise.diagnostics.convergence_numbers` reports those itself.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from scipy import fft as _fft
from scipy import special

__all__ = [
    "component_blocks",
    "diagnostics", "ess_bulk", "ess_mean", "ess_tail", "hdi", "mcse_mean", "mcse_sd", "rhat",
]

#: parameters per batch: small temporaries are reused by the allocator; with 2,000 parameters
#: of 4 x 1000 draws a batch (64 MB arrays) fresh pages made the same work 3-6x slower
_BLOCK = 64


def component_blocks(post, size: int = 4096):
    """The draws of every scalar component of the Dataset ``post``, a block of at most
    ``size`` components of one variable at a time, as float arrays (k, chains, draws).

    Yields ``(name, variable, extra_dims, start, block)``: ``start`` is the block's first
    component within the variable (components in C order over ``extra_dims``). With 10^5
    group levels the posterior is gigabytes; blocks keep one small copy at a time instead of
    a stacked copy of everything.
    """
    for name, v in post.data_vars.items():
        extra = [d for d in v.dims if d not in ("chain", "draw")]
        arr = v.transpose("chain", "draw", *extra).values
        arr = arr.reshape(arr.shape[0], arr.shape[1], -1)
        for i in range(0, arr.shape[-1], size):
            sub = arr[:, :, i:i + size]
            blk = np.empty((sub.shape[2], sub.shape[0], sub.shape[1]))
            for c in range(sub.shape[0]):  # a chain at a time: 3x faster than one transpose
                blk[:, c, :] = sub[c].T
            yield str(name), v, extra, i, blk


def _on_cores(fn, n: int) -> list:
    """``fn(start)`` for the start of every block of ``_BLOCK`` of ``n`` parameters, in order,
    on every core (NumPy's sorts and FFTs release the GIL; each block's numbers are the same
    whichever thread computes them)."""
    starts = range(0, n, _BLOCK)
    workers = min(len(starts), os.cpu_count() or 1)
    if workers <= 1:
        return [fn(i) for i in starts]
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(fn, starts))


def _blocks(x: np.ndarray, fn, *args) -> np.ndarray:
    """``fn`` over blocks of parameters (axis 0), on every core; keeps temporary arrays
    small."""
    if x.shape[0] <= _BLOCK:
        return fn(x, *args)
    return np.concatenate(_on_cores(lambda i: fn(x[i:i + _BLOCK], *args), x.shape[0]))


def _split(x: np.ndarray) -> np.ndarray:
    """(P, C, D) -> (P, 2C, D // 2): the first and the last half of every chain (the middle
    draw of an odd count is left out), as ArviZ splits."""
    half = x.shape[2] // 2
    return np.concatenate((x[:, :, :half], x[:, :, x.shape[2] - half:]), axis=1)


def _ranks(flat: np.ndarray) -> np.ndarray:
    """1-based ranks along axis 1, ties averaged (``scipy.stats.rankdata(method="average")``),
    from one argsort. Ties are common: the folded draws ``|x - median|`` of an even number of
    draws tie at the two middle ones."""
    P, n = flat.shape
    order = np.argsort(flat, axis=1)
    srt = np.take_along_axis(flat, order, axis=1)
    pos = np.broadcast_to(np.arange(n), (P, n))
    change = srt[:, 1:] != srt[:, :-1]
    if change.all():
        avg = pos + 1.0
    else:  # a tie group at sorted positions i..j (0-based) gets the rank (i + j) / 2 + 1
        first = np.concatenate([np.ones((P, 1), bool), change], axis=1)
        last = np.concatenate([change, np.ones((P, 1), bool)], axis=1)
        start = np.maximum.accumulate(np.where(first, pos, 0), axis=1)
        end = np.minimum.accumulate(np.where(last, pos, n - 1)[:, ::-1], axis=1)[:, ::-1]
        avg = (start + end) / 2.0 + 1.0
    rank = np.empty((P, n))
    np.put_along_axis(rank, order, avg, axis=1)
    return rank


def _z_scale(x: np.ndarray) -> np.ndarray:
    """Rank-normalize each parameter over all its draws (average ranks for ties, Blom's
    offset 3/8), as ArviZ's ``_z_scale``."""
    P, C, D = x.shape
    rank = _ranks(x.reshape(P, C * D))
    n = C * D
    return special.ndtri((rank - 0.375) / (n - 0.75 + 1.0)).reshape(P, C, D)


def _rhat_raw(x: np.ndarray) -> np.ndarray:
    """The basic R-hat of chains ``x`` (P, M, N)."""
    n = x.shape[2]
    chain_mean = x.mean(axis=2)
    chain_var = x.var(axis=2, ddof=1)
    between = n * chain_mean.var(axis=1, ddof=1)
    within = chain_var.mean(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.sqrt((between / within + n - 1) / n)


def _rhat_block(x: np.ndarray, z_bulk: np.ndarray) -> np.ndarray:
    """R-hat of ``x`` (P, C, D), given its rank-normalized split chains ``z_bulk``."""
    s = _split(x)
    bulk = _rhat_raw(z_bulk)
    med = np.median(s.reshape(s.shape[0], -1), axis=1)
    tail = _rhat_raw(_z_scale(np.abs(s - med[:, None, None])))
    # Python's max(bulk, tail), as ArviZ: NaN bulk wins, NaN tail loses
    return np.where(tail > bulk, tail, bulk)


def _valid(x: np.ndarray, min_chains: int) -> np.ndarray:
    """Per parameter: ArviZ would compute a number (finite draws, enough chains and draws)."""
    ok = np.isfinite(x).all(axis=(1, 2))
    if x.shape[1] < min_chains or x.shape[2] < 4:
        ok[:] = False
    return ok


def rhat(x: np.ndarray) -> np.ndarray:
    """Rank-normalized split R-hat (the larger of the bulk and the folded one) of every
    parameter.

    Parameters
    ----------
    x : numpy.ndarray
        Draws, shape (parameters, chains, draws).

    Returns
    -------
    numpy.ndarray
        Shape (parameters,); NaN where ArviZ gives NaN (fewer than 2 chains or 4 draws) and
        for non-finite draws.
    """
    return diagnostics(x)[0]


def _autocov(x: np.ndarray) -> np.ndarray:
    """Autocovariance of every chain at every lag, by FFT (ArviZ's ``autocov``)."""
    n = x.shape[-1]
    m = _fft.next_fast_len(2 * n)
    c = x - x.mean(axis=-1, keepdims=True)
    f = _fft.rfft(c, n=m, axis=-1)
    f *= np.conjugate(f)
    acov = _fft.irfft(f, n=m, axis=-1)[..., :n]
    acov /= n
    return acov


def _ess_raw(x: np.ndarray) -> np.ndarray:
    """ArviZ's ``_ess`` of chains ``x`` (P, M, N): Geyer's initial positive sequence, then
    the initial monotone sequence, over the pairs of lags (2k, 2k+1)."""
    P, M, N = x.shape
    size = M * N
    out = np.empty(P)
    flat = x.reshape(P, -1)
    const = (flat.max(axis=1) - flat.min(axis=1)) < np.finfo(float).resolution
    out[const] = size
    todo = ~const
    if not todo.any():
        return out
    x = x[todo]
    acov = _autocov(x)  # (p, M, N)
    mean_acov = acov.mean(axis=1)  # (p, N)
    mean_var = mean_acov[:, 0] * N / (N - 1.0)
    var_plus = mean_var * (N - 1.0) / N
    if M > 1:
        var_plus = var_plus + x.mean(axis=2).var(axis=1, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = 1.0 - (mean_var[:, None] - mean_acov) / var_plus[:, None]  # (p, N)
    p = rho.shape[0]
    # pair sums S_0 = 1 + rho_1 and S_k = rho_2k + rho_2k+1; ArviZ's loop computes pair k
    # while 2k - 1 < N - 3 and the pair before was positive
    kmax = 0  # the number of pairs the loop may compute (k = 1..kmax)
    while 2 * (kmax + 1) - 1 < N - 3:
        kmax += 1
    pairs = np.empty((p, kmax + 1))
    pairs[:, 0] = 1.0 + rho[:, 1]
    if kmax:
        pairs[:, 1:] = rho[:, 2:2 * kmax + 2:2] + rho[:, 3:2 * kmax + 2:2]
    nonpos = ~(pairs > 0.0)  # NaN counts as "not positive", as in the loop's test
    first = np.where(nonpos.any(axis=1), nonpos.argmax(axis=1), kmax)
    K = np.minimum(first, kmax)  # the last pair the loop computed
    idx = np.arange(kmax + 1)
    # pairs 0..K-1 were positive and kept; the monotone sequence is their running minimum
    kept = np.where(idx[None, :] < K[:, None], pairs, np.inf)
    mono = np.minimum.accumulate(kept, axis=1)
    total = np.where(idx[None, :] < K[:, None], mono, 0.0).sum(axis=1)
    rows = np.arange(p)
    last_even = np.where(K > 0, rho[rows, np.minimum(2 * K, N - 1)], 1.0)
    last_pair = pairs[rows, K]
    keep_even = (K == 0) | (last_pair >= 0.0) | (last_even > 0.0)
    tail = np.where(keep_even, last_even, 0.0)
    tau = -1.0 + 2.0 * total + tail
    with np.errstate(divide="ignore"):
        tau = np.maximum(tau, 1.0 / np.log10(size))
    ess = size / tau
    # ArviZ returns NaN when any stored autocorrelation is NaN
    ess[np.isnan(rho[:, 1]) | np.isnan(var_plus)] = np.nan
    out[todo] = ess
    return out


def ess_bulk(x: np.ndarray) -> np.ndarray:
    """Bulk ESS (rank-normalized split chains) of every parameter of ``x`` (P, C, D)."""
    return diagnostics(x)[1]


def ess_mean(x: np.ndarray) -> np.ndarray:
    """ESS of the mean (split chains, no rank normalization) of every parameter."""
    x = np.asarray(x, dtype=float)
    out = np.full(x.shape[0], np.nan)
    ok = _valid(x, 1)
    if ok.any():
        with np.errstate(divide="ignore", invalid="ignore"):
            out[ok] = _blocks(x[ok], lambda b: _ess_raw(_split(b)))
    return out


def _tail_ess(b: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """The smaller of the ESS of the indicators ``draw <= q`` at the quantiles ``lo`` and
    ``hi`` of each parameter of ``b`` (P, C, D)."""
    q = np.quantile(b.reshape(b.shape[0], -1), [lo, hi], axis=1)  # (2, P)
    low = _ess_raw(_split((b <= q[0][:, None, None]).astype(float)))
    high = _ess_raw(_split((b <= q[1][:, None, None]).astype(float)))
    return np.minimum(low, high)


def ess_tail(x: np.ndarray, prob: tuple[float, float] = (0.05, 0.95)) -> np.ndarray:
    """Tail ESS: the smaller of the ESS of the indicators ``draw <= q`` at the two quantiles
    ``prob`` (ArviZ's ``method="tail"``), for every parameter of ``x`` (P, C, D)."""
    return diagnostics(x, prob)[2]


def diagnostics(
    x: np.ndarray, tail_prob: tuple[float, float] = (0.05, 0.95)
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """R-hat, bulk ESS and tail ESS of every parameter in one pass (the rank-normalized split
    chains are computed once for the R-hat and the bulk ESS).

    Parameters
    ----------
    x : numpy.ndarray
        Draws, shape (parameters, chains, draws).
    tail_prob : tuple of float, default (0.05, 0.95)
        The two quantiles of the tail ESS.

    Returns
    -------
    tuple of numpy.ndarray
        ``(rhat, ess_bulk, ess_tail)``, each of shape (parameters,); NaN where ArviZ gives
        NaN (R-hat: fewer than 2 chains; all: fewer than 4 draws) and for non-finite draws.
    """
    x = np.asarray(x, dtype=float)
    P = x.shape[0]
    r, b, t = np.full(P, np.nan), np.full(P, np.nan), np.full(P, np.nan)
    ok_r, ok_e = _valid(x, 2), _valid(x, 1)
    lo, hi = sorted(tail_prob)

    def block(i: int) -> None:
        blk = slice(i, min(i + _BLOCK, P))
        sub, er, ee = x[blk], ok_r[blk], ok_e[blk]
        if not ee.any():
            return
        with np.errstate(divide="ignore", invalid="ignore"):
            z = _z_scale(_split(sub[ee]))
            b[blk][ee] = _ess_raw(z)
            if er.any():
                r[blk][er] = _rhat_block(sub[er], z[er[ee]])
            t[blk][ee] = _tail_ess(sub[ee], lo, hi)

    _on_cores(block, P)
    return r, b, t


def mcse_mean(x: np.ndarray) -> np.ndarray:
    """Monte Carlo SE of the posterior mean: ``sd / sqrt(ess_mean)``."""
    x = np.asarray(x, dtype=float)
    sd = x.reshape(x.shape[0], -1).std(axis=1, ddof=1)
    return sd / np.sqrt(ess_mean(x))


def mcse_sd(x: np.ndarray) -> np.ndarray:
    """Monte Carlo SE of the posterior SD (ArviZ's ``method="sd"``)."""
    x = np.asarray(x, dtype=float)
    c = x - x.reshape(x.shape[0], -1).mean(axis=1)[:, None, None]
    c2 = c**2
    ess = ess_mean(c2)
    evar = c2.reshape(c.shape[0], -1).mean(axis=1)
    varvar = ((c2**2).reshape(c.shape[0], -1).mean(axis=1) - evar**2) / ess
    return np.sqrt(varvar / evar / 4)


def hdi(x: np.ndarray, prob: float) -> np.ndarray:
    """Highest-density interval of every parameter over all its draws: the narrowest
    interval between two draws holding ``prob`` of them (ArviZ's ``method="nearest"``).
    Shape (P, 2)."""
    x = np.asarray(x, dtype=float)
    flat = np.sort(x.reshape(x.shape[0], -1), axis=1)
    n = flat.shape[1]
    inc = min(int(np.floor(prob * n)), n - 1)
    width = flat[:, inc:] - flat[:, :n - inc]
    i = np.argmin(width, axis=1)
    rows = np.arange(flat.shape[0])
    return np.stack([flat[rows, i], flat[rows, i + inc]], axis=1)
