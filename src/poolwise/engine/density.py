"""The model family's log density and its analytic gradient, compiled once with numba.

The model structure is *data*: everything is packed into one buffer of 8-byte words
(see :mod:`poolwise.engine.layout`), read through an int64 view and a float64 view of the same
memory. The kernels below are compiled once (``cache=True``) and never again, whatever the
model: no per-model compilation at run time.

Parameter vector (unconstrained), in order:

* ``beta`` (K fixed-effect coefficients, the intercept first when present);
* per group term ``t``: ``log sd`` (C_t, when the SDs are estimated), the canonical partial
  correlations on the atanh scale (C_t (C_t - 1) / 2, when correlated), then the level
  parameters, level-major (L_t x C_t): for a *centered* level the natural effects
  ``u_jc = mu_c + b_jc``; for a *non-centered* level standard normals ``z_j`` with
  ``b_j = diag(sd) L z_j``.

The log density includes every normalizing constant except the LKJ normalizer of correlated
terms (constant in the parameters), so it equals the row-level log posterior density.

Every kernel is compiled with ``error_model="numpy"``: a division by zero (a correlation that
rounds to +-1 at |atanh| > 19) gives inf / nan, which the C callbacks report to nutpie as a
non-finite density, instead of raising. Inside a C callback a raised exception is swallowed
and the output left unset; that once made whole chains of the varying-slopes model wander
(87 divergences, R-hat 1.59).
"""

from __future__ import annotations

import math

import numba
import numpy as np

# ---- integer header layout (word index) ------------------------------------------------
H_WORDS = 0
H_N = 1
H_K = 2
H_T = 3
H_LINK = 4
H_DIM = 5
H_NEXP = 6
H_Y = 7
H_NTRIALS = 8
H_X = 9
H_BPRIOR = 10
H_CONST = 11
H_TERMS = 12
HEADER = 13

# per-term record
T_L = 0
T_C = 1
T_CORR = 2
T_SDFIXED = 3
T_CODES = 4
T_Z = 5
T_MUIDX = 6
T_SDPRIOR = 7
T_LKJ = 8
T_CENTERED = 9
T_PSD = 10
T_PCORR = 11
T_PLEV = 12
TERM_WORDS = 13

# prior kinds (ids of the families in poolwise.families)
FLAT = 0
NORMAL = 1
STUDENT_T = 2
EXPONENTIAL = 3
HALF_NORMAL = 4
HALF_STUDENT_T = 5

# links (ids of the links in poolwise.links)
LOGIT = 0
PROBIT = 1
CLOGLOG = 2

_LOG_2PI = math.log(2.0 * math.pi)
_LOG2 = math.log(2.0)
_SQRT2 = math.sqrt(2.0)


# One kernel per prior family: (p1, p2, p3, v) -> (log density at v, d/dv), every normalizing
# constant included. poolwise.families names each kernel and its id; tests/test_registry.py
# checks them against SciPy and finite differences.


@numba.njit(cache=True, inline="always", error_model="numpy")
def _flat_logp_grad(p1: float, p2: float, p3: float, v: float) -> tuple[float, float]:
    return 0.0, 0.0


@numba.njit(cache=True, inline="always", error_model="numpy")
def _normal_logp_grad(p1: float, p2: float, p3: float, v: float) -> tuple[float, float]:
    d = (v - p1) / p2
    return -0.5 * d * d - math.log(p2) - 0.5 * _LOG_2PI, -d / p2


@numba.njit(cache=True, inline="always", error_model="numpy")
def _student_t_logp_grad(p1: float, p2: float, p3: float, v: float) -> tuple[float, float]:
    nu = p1
    d = (v - p2) / p3
    c = (
        math.lgamma(0.5 * (nu + 1.0))
        - math.lgamma(0.5 * nu)
        - 0.5 * math.log(nu * math.pi)
        - math.log(p3)
    )
    q = 1.0 + d * d / nu
    return c - 0.5 * (nu + 1.0) * math.log(q), -(nu + 1.0) * d / (nu * q * p3)


@numba.njit(cache=True, inline="always", error_model="numpy")
def _exponential_logp_grad(p1: float, p2: float, p3: float, v: float) -> tuple[float, float]:
    return math.log(p1) - p1 * v, -p1


@numba.njit(cache=True, inline="always", error_model="numpy")
def _half_normal_logp_grad(p1: float, p2: float, p3: float, v: float) -> tuple[float, float]:
    d = v / p1
    return _LOG2 - 0.5 * d * d - math.log(p1) - 0.5 * _LOG_2PI, -d / p1


@numba.njit(cache=True, inline="always", error_model="numpy")
def _half_student_t_logp_grad(p1: float, p2: float, p3: float, v: float) -> tuple[float, float]:
    nu = p1
    d = v / p2
    c = (
        _LOG2
        + math.lgamma(0.5 * (nu + 1.0))
        - math.lgamma(0.5 * nu)
        - 0.5 * math.log(nu * math.pi)
        - math.log(p2)
    )
    q = 1.0 + d * d / nu
    return c - 0.5 * (nu + 1.0) * math.log(q), -(nu + 1.0) * d / (nu * q * p2)


@numba.njit(cache=True, inline="always", error_model="numpy")
def _prior_logp_grad(kind: int, p1: float, p2: float, p3: float, v: float) -> tuple[float, float]:
    """log density and d/dv of a prior at v (on the natural scale): the kernel of family
    ``kind`` (ids: poolwise.families). An unknown id gives nan, never a silently flat prior
    (poolwise.engine.layout refuses unknown families before this runs)."""
    if kind == FLAT:
        return _flat_logp_grad(p1, p2, p3, v)
    if kind == NORMAL:
        return _normal_logp_grad(p1, p2, p3, v)
    if kind == STUDENT_T:
        return _student_t_logp_grad(p1, p2, p3, v)
    if kind == EXPONENTIAL:
        return _exponential_logp_grad(p1, p2, p3, v)
    if kind == HALF_NORMAL:
        return _half_normal_logp_grad(p1, p2, p3, v)
    if kind == HALF_STUDENT_T:
        return _half_student_t_logp_grad(p1, p2, p3, v)
    return math.nan, math.nan


@numba.njit(cache=True, inline="always", error_model="numpy")
def _log_ndtr_and_mills(x: float) -> tuple[float, float]:
    """log Phi(x) and phi(x) / Phi(x), stable in both tails."""
    if x < -35.0:
        x2 = x * x
        s = 1.0 - 1.0 / x2 + 3.0 / (x2 * x2) - 15.0 / (x2 * x2 * x2)
        logphi = -0.5 * x2 - 0.5 * _LOG_2PI
        return logphi - math.log(-x) + math.log(s), -x / s
    if x > 0.0:
        tail = 0.5 * math.erfc(x / _SQRT2)
        lcdf = math.log1p(-tail)
    else:
        lcdf = math.log(0.5 * math.erfc(-x / _SQRT2))
    logpdf = -0.5 * x * x - 0.5 * _LOG_2PI
    return lcdf, math.exp(logpdf - lcdf)


@numba.njit(cache=True, inline="always", error_model="numpy")
def cell_loglik(link: int, y: float, n: float, eta: float) -> tuple[float, float]:
    """Binomial kernel y log p + (n - y) log(1 - p) and its derivative in eta."""
    if link == LOGIT:
        if eta > 0.0:
            log_p = -math.log1p(math.exp(-eta))
        else:
            log_p = eta - math.log1p(math.exp(eta))
        log_q = log_p - eta
        p = math.exp(log_p)
        return y * log_p + (n - y) * log_q, y - n * p
    if link == PROBIT:
        lp, mp = _log_ndtr_and_mills(eta)
        lq, mq = _log_ndtr_and_mills(-eta)
        ll = 0.0
        d = 0.0
        if y > 0.0:
            ll += y * lp
            d += y * mp
        if n - y > 0.0:
            ll += (n - y) * lq
            d -= (n - y) * mq
        return ll, d
    if link == CLOGLOG:
        mu = math.exp(eta)
        ll = -(n - y) * mu
        d = -(n - y) * mu
        if y > 0.0:
            ll += y * math.log(-math.expm1(-mu))
            d += y * mu / math.expm1(mu)
        return ll, d
    return math.nan, math.nan  # an unknown link id (poolwise.links refuses it before this)


@numba.njit(cache=True, error_model="numpy")
def _chol_corr(y: np.ndarray, C: int, L: np.ndarray) -> float:
    """Cholesky factor of a correlation matrix from unconstrained y; returns log |Jacobian|."""
    for i in range(C):
        for j in range(C):
            L[i, j] = 0.0
    L[0, 0] = 1.0
    k = 0
    logj = 0.0
    for i in range(1, C):
        acc = 0.0
        for j in range(i):
            z = math.tanh(y[k])
            # log(1 - tanh(y)^2) = log sech(y)^2, written so it stays finite for large |y|
            ay = abs(y[k])
            logj += 2.0 * (_LOG2 - ay - math.log1p(math.exp(-2.0 * ay))) + 0.5 * math.log1p(-acc)
            L[i, j] = z * math.sqrt(1.0 - acc)
            acc += L[i, j] * L[i, j]
            k += 1
        L[i, i] = math.sqrt(max(1.0 - acc, 0.0))
    return logj


@numba.njit(cache=True, error_model="numpy")
def _chol_corr_backward(y: np.ndarray, C: int, L: np.ndarray, gL: np.ndarray, gy: np.ndarray):
    """Add to gy the gradient of (f(L) + log|J|) given gL = df/dL (lower triangle)."""
    k0 = 0
    for i in range(1, C):
        # recompute the row's forward quantities
        acc_before = np.empty(i)
        acc = 0.0
        for j in range(i):
            acc_before[j] = acc
            acc += L[i, j] * L[i, j]
        g_acc = gL[i, i] * (-0.5 / L[i, i]) if L[i, i] > 0.0 else 0.0
        for j in range(i - 1, -1, -1):
            k = k0 + j
            z = math.tanh(y[k])
            s = math.sqrt(1.0 - acc_before[j])
            g_l = gL[i, j] + g_acc * 2.0 * L[i, j]
            g_z = g_l * s
            g_s = g_l * z + 1.0 / s  # 1/s: from the Jacobian term log s
            g_acc = g_acc + g_s * (-0.5 / s)
            gy[k] += g_z * (1.0 - z * z) - 2.0 * z  # tanh and its log-Jacobian
        k0 += i


@numba.njit(cache=True, error_model="numpy")
def logp_grad(x: np.ndarray, grad: np.ndarray, ib: np.ndarray, fb: np.ndarray) -> float:
    """Log posterior density at x; writes its gradient into grad."""
    N = ib[H_N]
    K = ib[H_K]
    T = ib[H_T]
    link = ib[H_LINK]
    off_y = ib[H_Y]
    off_n = ib[H_NTRIALS]
    off_x = ib[H_X]
    off_bp = ib[H_BPRIOR]
    for d in range(grad.shape[0]):
        grad[d] = 0.0
    lp = fb[ib[H_CONST]]

    # fixed effects
    eta = np.zeros(N)
    for k in range(K):
        pk = off_bp + 4 * k
        v, g = _prior_logp_grad(int(fb[pk]), fb[pk + 1], fb[pk + 2], fb[pk + 3], x[k])
        lp += v
        grad[k] += g
    for i in range(N):
        s = 0.0
        row = off_x + i * K
        for k in range(K):
            s += fb[row + k] * x[k]
        eta[i] = s

    # group terms: forward pass (effects b and their prior)
    nb = 0
    maxc = 1
    for t in range(T):
        rec = ib[H_TERMS] + t * TERM_WORDS
        nb += ib[rec + T_L] * ib[rec + T_C]
        maxc = max(maxc, ib[rec + T_C])
    b_all = np.empty(nb)
    sd = np.empty(maxc)
    Lc = np.empty((maxc, maxc))
    boff = 0
    for t in range(T):
        rec = ib[H_TERMS] + t * TERM_WORDS
        nl = ib[rec + T_L]
        C = ib[rec + T_C]
        corr = ib[rec + T_CORR]
        psd = ib[rec + T_PSD]
        plev = ib[rec + T_PLEV]
        if ib[rec + T_SDFIXED] == 1:
            for c in range(C):
                sd[c] = fb[ib[rec + T_SDPRIOR] + c]
        else:
            for c in range(C):
                s_log = x[psd + c]
                sd[c] = math.exp(s_log)
                pp = ib[rec + T_SDPRIOR] + 4 * c
                v, g = _prior_logp_grad(int(fb[pp]), fb[pp + 1], fb[pp + 2], fb[pp + 3], sd[c])
                lp += v + s_log
                grad[psd + c] += g * sd[c] + 1.0
        if corr == 1:
            pc = ib[rec + T_PCORR]
            ncor = C * (C - 1) // 2
            lp += _chol_corr(x[pc : pc + ncor], C, Lc)
            eta_lkj = fb[ib[rec + T_LKJ]]
            for i in range(1, C):
                lp += (C - i - 1 + 2.0 * (eta_lkj - 1.0)) * math.log(Lc[i, i])
        cen = ib[rec + T_CENTERED]
        muidx = ib[rec + T_MUIDX]
        for j in range(nl):
            base = plev + j * C
            if ib[cen + j] == 1:
                for c in range(C):
                    mi = ib[muidx + c]
                    mu = x[mi] if mi >= 0 else 0.0
                    bv = x[base + c] - mu
                    b_all[boff + j * C + c] = bv
                    lp += -0.5 * (bv / sd[c]) ** 2 - math.log(sd[c]) - 0.5 * _LOG_2PI
            else:
                for c in range(C):
                    zc = x[base + c]
                    lp += -0.5 * zc * zc - 0.5 * _LOG_2PI
                    if corr == 1:
                        w = 0.0
                        for kk in range(c + 1):
                            w += Lc[c, kk] * x[base + kk]
                        b_all[boff + j * C + c] = sd[c] * w
                    else:
                        b_all[boff + j * C + c] = sd[c] * zc
        codes = ib[rec + T_CODES]
        zoff = ib[rec + T_Z]
        for i in range(N):
            lev = ib[codes + i]
            s = 0.0
            for c in range(C):
                s += fb[zoff + i * C + c] * b_all[boff + lev * C + c]
            eta[i] += s
        boff += nl * C

    # likelihood
    r = np.empty(N)
    for i in range(N):
        ll, d = cell_loglik(link, fb[off_y + i], fb[off_n + i], eta[i])
        lp += ll
        r[i] = d
    for i in range(N):
        row = off_x + i * K
        for k in range(K):
            grad[k] += fb[row + k] * r[i]

    # group terms: backward pass
    boff = 0
    for t in range(T):
        rec = ib[H_TERMS] + t * TERM_WORDS
        nl = ib[rec + T_L]
        C = ib[rec + T_C]
        corr = ib[rec + T_CORR]
        psd = ib[rec + T_PSD]
        plev = ib[rec + T_PLEV]
        fixed = ib[rec + T_SDFIXED] == 1
        for c in range(C):
            sd[c] = fb[ib[rec + T_SDPRIOR] + c] if fixed else math.exp(x[psd + c])
        gb = np.zeros(nl * C)
        codes = ib[rec + T_CODES]
        zoff = ib[rec + T_Z]
        for i in range(N):
            lev = ib[codes + i]
            for c in range(C):
                gb[lev * C + c] += r[i] * fb[zoff + i * C + c]
        gL = np.zeros((C, C))
        if corr == 1:
            pc = ib[rec + T_PCORR]
            _chol_corr(x[pc : pc + C * (C - 1) // 2], C, Lc)
            eta_lkj = fb[ib[rec + T_LKJ]]
            for i in range(1, C):
                gL[i, i] += (C - i - 1 + 2.0 * (eta_lkj - 1.0)) / Lc[i, i]
        cen = ib[rec + T_CENTERED]
        muidx = ib[rec + T_MUIDX]
        for j in range(nl):
            base = plev + j * C
            if ib[cen + j] == 1:
                for c in range(C):
                    bv = b_all[boff + j * C + c]
                    g_b = gb[j * C + c]
                    inv = 1.0 / (sd[c] * sd[c])
                    grad[base + c] += g_b - bv * inv
                    mi = ib[muidx + c]
                    if mi >= 0:
                        grad[mi] += -g_b + bv * inv
                    if not fixed:
                        grad[psd + c] += bv * bv * inv - 1.0
            else:
                for c in range(C):
                    g_b = gb[j * C + c]
                    if not fixed:
                        grad[psd + c] += g_b * b_all[boff + j * C + c]
                    grad[base + c] -= x[base + c]
                    if corr == 1:
                        gw = g_b * sd[c]
                        for kk in range(c + 1):
                            grad[base + kk] += Lc[c, kk] * gw
                            gL[c, kk] += gw * x[base + kk]
                    else:
                        grad[base + c] += g_b * sd[c]
        if corr == 1:
            pc = ib[rec + T_PCORR]
            ncor = C * (C - 1) // 2
            gy = np.zeros(ncor)
            _chol_corr_backward(x[pc : pc + ncor], C, Lc, gL, gy)
            for k in range(ncor):
                grad[pc + k] += gy[k]
        boff += nl * C
    return lp


@numba.njit(cache=True, error_model="numpy")
def expand(x: np.ndarray, out: np.ndarray, ib: np.ndarray, fb: np.ndarray) -> None:
    """Natural-scale quantities: beta, then per term sd, correlations, per-level totals."""
    K = ib[H_K]
    T = ib[H_T]
    o = 0
    for k in range(K):
        out[o] = x[k]
        o += 1
    for t in range(T):
        rec = ib[H_TERMS] + t * TERM_WORDS
        nl = ib[rec + T_L]
        C = ib[rec + T_C]
        corr = ib[rec + T_CORR]
        psd = ib[rec + T_PSD]
        plev = ib[rec + T_PLEV]
        fixed = ib[rec + T_SDFIXED] == 1
        sd = np.empty(C)
        for c in range(C):
            sd[c] = fb[ib[rec + T_SDPRIOR] + c] if fixed else math.exp(x[psd + c])
            if not fixed:
                out[o] = sd[c]
                o += 1
        Lc = np.zeros((C, C))
        if corr == 1:
            pc = ib[rec + T_PCORR]
            _chol_corr(x[pc : pc + C * (C - 1) // 2], C, Lc)
            for i in range(1, C):
                for j in range(i):
                    s = 0.0
                    for kk in range(j + 1):
                        s += Lc[i, kk] * Lc[j, kk]
                    out[o] = s
                    o += 1
        cen = ib[rec + T_CENTERED]
        muidx = ib[rec + T_MUIDX]
        for c in range(C):
            mi = ib[muidx + c]
            mu = x[mi] if mi >= 0 else 0.0
            for j in range(nl):
                base = plev + j * C
                if ib[cen + j] == 1:
                    out[o] = x[base + c]
                else:
                    if corr == 1:
                        w = 0.0
                        for kk in range(c + 1):
                            w += Lc[c, kk] * x[base + kk]
                        out[o] = mu + sd[c] * w
                    else:
                        out[o] = mu + sd[c] * x[base + c]
                o += 1


# ---- C callbacks for nutpie's compiled-model interface ---------------------------------
_LOGP_SIG = numba.types.int64(
    numba.types.uint64,
    numba.types.CPointer(numba.types.double),
    numba.types.CPointer(numba.types.double),
    numba.types.CPointer(numba.types.double),
    numba.types.voidptr,
)
_EXPAND_SIG = numba.types.int64(
    numba.types.uint64,
    numba.types.uint64,
    numba.types.CPointer(numba.types.double),
    numba.types.CPointer(numba.types.double),
    numba.types.voidptr,
)


@numba.cfunc(_LOGP_SIG, cache=True)
def logp_cfunc(dim, x_, out_, logp_, user_data_):  # pragma: no cover - called from Rust
    words = numba.carray(user_data_, (1,), np.int64)[0]
    ib = numba.carray(user_data_, (words,), np.int64)
    fb = numba.carray(user_data_, (words,), np.float64)
    if dim != ib[H_DIM]:
        return -1
    x = numba.carray(x_, (dim,))
    out = numba.carray(out_, (dim,))
    logp = numba.carray(logp_, (1,))
    val = logp_grad(x, out, ib, fb)
    logp[0] = val
    for d in range(dim):
        if not np.isfinite(out[d]):
            return 3
    if not np.isfinite(val):
        return 4
    return 0


@numba.cfunc(_EXPAND_SIG, cache=True)
def expand_cfunc(dim, nexp, x_, out_, user_data_):  # pragma: no cover - called from Rust
    words = numba.carray(user_data_, (1,), np.int64)[0]
    ib = numba.carray(user_data_, (words,), np.int64)
    fb = numba.carray(user_data_, (words,), np.float64)
    if dim != ib[H_DIM] or nexp != ib[H_NEXP]:
        return -1
    x = numba.carray(x_, (dim,))
    out = numba.carray(out_, (nexp,))
    expand(x, out, ib, fb)
    return 0
