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
  ``b_j = diag(sd) L z_j``;
* for the beta-binomial family, last, ``log phi`` (its precision).

The binomial family's cells are the design's binomial cells (rows summed); the
beta-binomial's are the row patterns, each with its count as a weight (the sum of two
beta-binomial rows is not beta-binomial, so rows are never summed for it).

The log density includes every normalizing constant except the LKJ normalizer of correlated
terms (constant in the parameters), so it equals the row-level log posterior density.

The cells are stored as a struct of arrays: successes, trials, the per-cell offset, each
column of X and of each term's Z as N contiguous float64 words, each term's level codes as N
int64 words. Per gradient: the level effects b of every term (per level), then the cells in
blocks of ``CELL_BLOCK`` (eta term by term; one likelihood loop per link, hoisted out of the
cell loop; the cells' gradient by dot products and a scatter-add by level), then the gradient
through each term's parameterization (per level). The logit loop uses branch-free polynomial
exp / log1p (``exp_nonpos``, ``log1p_unit``) so that it runs in SIMD lanes; the cell loops use
one fastmath flag, ``contract`` (fused multiply-add), and no reassociation: every sum has a
fixed order, so draws are bitwise reproducible.

Every kernel is compiled with ``error_model="numpy"``: a division by zero (a correlation that
rounds to +-1 at |atanh| > 19) gives inf / nan, which the C callbacks report to nutpie as a
non-finite density, instead of raising. Inside a C callback a raised exception is swallowed
and the output left unset; that once made whole chains of the varying-slopes model wander
(87 divergences, R-hat 1.59).

Why one module: the numba kernels call each other inside one compiled function and read one
buffer layout; numba's cache and inlining work per module, so they stay together.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from llvmlite import ir
from numba.extending import intrinsic

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
H_OFFSET = 13  # per-cell offset added to eta (zeros when the model has none)
H_FAMILY = 14  # BINOMIAL or BETA_BINOMIAL
H_PPHI = 15  # index of log phi in the parameter vector (beta-binomial), else -1
H_PHIPRIOR = 16  # word offset of phi's prior (kind id + 3 parameters)
H_WEIGHT = 17  # word offset of the per-cell weights (N; ones for the binomial)
HEADER = 18

# outcome families
BINOMIAL = 0
BETA_BINOMIAL = 1

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

# prior kinds (ids of the families in poolwise.model.families)
FLAT = 0
NORMAL = 1
STUDENT_T = 2
EXPONENTIAL = 3
HALF_NORMAL = 4
HALF_STUDENT_T = 5

# links (ids of the links in poolwise.model.links)
LOGIT = 0
PROBIT = 1
CLOGLOG = 2

_LOG_2PI = math.log(2.0 * math.pi)
_LOG2 = math.log(2.0)
_SQRT2 = math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_LOG2E = 1.4426950408889634
_LN2_HI = 6.93147180369123816490e-01  # ln 2 split so that k * _LN2_HI is exact (Cody-Waite)
_LN2_LO = 1.90821492927058770002e-10
_SQRT2_M1 = 0.41421356237309503  # sqrt(2) - 1


#: the one fastmath flag the cell loops use: a * b + c may become one fused multiply-add (one
#: rounding instead of two: as accurate or more, and deterministic for a given machine). No
#: reassociation ("reassoc"), no "nnan" / "ninf": sums keep their written order, and a
#: non-finite density still reaches nutpie as such.
_CONTRACT = {"contract"}


# ---- vectorizable elementary functions for the logit likelihood ------------------------
# libm's exp / log1p are opaque calls that stop LLVM from vectorizing a loop (numba has no
# SVML here); these are straight-line arithmetic, so the cell loop runs in SIMD lanes. Both are
# within about 1 ulp of libm on their domains (checked in tests/engine/test_density.py).


@intrinsic
def _bits_to_f64(typingctx, v):
    """Reinterpret the bits of an int64 as a float64 (no conversion)."""
    sig = numba.types.float64(numba.types.int64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return sig, codegen


@numba.njit(cache=True, error_model="numpy", fastmath=_CONTRACT)
def exp_nonpos(a: float) -> float:
    """exp(a) for a <= 0 (a below -708 is taken as -708: exp(-708) is 3e-308)."""
    a = a if a > -708.0 else -708.0
    k = math.floor(a * _LOG2E + 0.5)
    r = (a - k * _LN2_HI) - k * _LN2_LO  # |r| <= ln2 / 2
    p = 1.0 / 6227020800.0  # Taylor to degree 13: truncation below 1e-17 relative
    p = p * r + 1.0 / 479001600.0
    p = p * r + 1.0 / 39916800.0
    p = p * r + 1.0 / 3628800.0
    p = p * r + 1.0 / 362880.0
    p = p * r + 1.0 / 40320.0
    p = p * r + 1.0 / 5040.0
    p = p * r + 1.0 / 720.0
    p = p * r + 1.0 / 120.0
    p = p * r + 1.0 / 24.0
    p = p * r + 1.0 / 6.0
    p = p * r + 0.5
    p = p * r + 1.0
    p = p * r + 1.0
    return p * _bits_to_f64((int(k) + 1023) << 52)


@numba.njit(cache=True, inline="always", error_model="numpy", fastmath=_CONTRACT)
def _log1p_poly(f: float) -> float:
    """log(1 + f) for f in [sqrt(2)/2 - 1, sqrt(2) - 1] (fdlibm's log1p polynomial, in
    s = f / (2 + f))."""
    s = f / (2.0 + f)
    z = s * s
    R = z * (6.666666666666735130e-01 + z * (3.999999999940941908e-01 + z * (
        2.857142874366239149e-01 + z * (2.222219843214978396e-01 + z * (
            1.818357216161805012e-01 + z * (1.531383769920937332e-01
                                            + z * 1.479819860511658591e-01))))))
    hfsq = 0.5 * f * f
    return f - (hfsq - s * (hfsq + R))


@numba.njit(cache=True, error_model="numpy", fastmath=_CONTRACT)
def log1p_unit(e: float) -> float:
    """log(1 + e) for 0 <= e <= 1 (:func:`_log1p_poly`)."""
    big = e > _SQRT2_M1
    f = (e - 1.0) * 0.5 if big else e  # 1 + e = 2 (1 + f) with f in (-0.293, 0]
    v = _log1p_poly(f)
    return v + _LN2_HI + _LN2_LO if big else v


@intrinsic
def _f64_to_bits(typingctx, v):
    """Reinterpret the bits of a float64 as an int64 (no conversion)."""
    sig = numba.types.int64(numba.types.float64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return sig, codegen


@numba.njit(cache=True, inline="always", error_model="numpy", fastmath=_CONTRACT)
def log_pos(x: float) -> float:
    """log(x) for a positive normal x, without a branch (a loop of them runs in SIMD lanes):
    x = 2^k m with m in [sqrt(2)/2, sqrt(2)), log m by :func:`_log1p_poly` of m - 1 (exact),
    k ln 2 in two parts. Infinity and NaN come back as they are."""
    b = _f64_to_bits(x)
    m = _bits_to_f64((b & 0xFFFFFFFFFFFFF) | (1023 << 52))
    big = m > _SQRT2
    f = (m * 0.5 if big else m) - 1.0
    k = np.float64((b >> 52) - 1023) + (1.0 if big else 0.0)
    v = k * _LN2_HI + (_log1p_poly(f) + k * _LN2_LO)
    return v if x <= 1.7976931348623157e308 else x


@numba.njit(cache=True, inline="always", error_model="numpy", fastmath=_CONTRACT)
def log1p_any(w: float) -> float:
    """log(1 + w) for w > -1 with 1 + w normal (or infinite), without a branch: log of
    u = 1 + w by :func:`log_pos`, plus the rounding of u relative to u ((w - (u - 1)) / u,
    fdlibm's correction); infinity comes back as it is."""
    u = 1.0 + w
    c = (w - (u - 1.0)) / u
    return w if (u == 1.0) | (u > 1.7976931348623157e308) else log_pos(u) + c


@numba.njit(cache=True, error_model="numpy", fastmath=_CONTRACT)
def _sum(a: np.ndarray) -> float:
    """Sum in 8 interleaved partial sums: a fixed order (reproducible), in SIMD lanes."""
    n = a.shape[0]
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
    m = n - n % 8
    for i in range(0, m, 8):
        s0 += a[i]
        s1 += a[i + 1]
        s2 += a[i + 2]
        s3 += a[i + 3]
        s4 += a[i + 4]
        s5 += a[i + 5]
        s6 += a[i + 6]
        s7 += a[i + 7]
    for i in range(m, n):
        s0 += a[i]
    return ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))


@numba.njit(cache=True, error_model="numpy", fastmath=_CONTRACT)
def _dot(a: np.ndarray, b: np.ndarray) -> float:
    """sum_i a_i b_i in 8 interleaved partial sums (fixed order)."""
    n = a.shape[0]
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
    m = n - n % 8
    for i in range(0, m, 8):
        s0 += a[i] * b[i]
        s1 += a[i + 1] * b[i + 1]
        s2 += a[i + 2] * b[i + 2]
        s3 += a[i + 3] * b[i + 3]
        s4 += a[i + 4] * b[i + 4]
        s5 += a[i + 5] * b[i + 5]
        s6 += a[i + 6] * b[i + 6]
        s7 += a[i + 7] * b[i + 7]
    for i in range(m, n):
        s0 += a[i] * b[i]
    return ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))


# One kernel per prior family: (p1, p2, p3, v) -> (log density at v, d/dv), every normalizing
# constant included. poolwise.model.families names each kernel and its id; tests/test_registry.py
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
    # normal(0, sigma) folded at 0: twice the density on v >= 0
    lp, g = _normal_logp_grad(0.0, p1, 0.0, v)
    return _LOG2 + lp, g


@numba.njit(cache=True, inline="always", error_model="numpy")
def _half_student_t_logp_grad(p1: float, p2: float, p3: float, v: float) -> tuple[float, float]:
    # student_t(nu, 0, sigma) folded at 0: twice the density on v >= 0
    lp, g = _student_t_logp_grad(p1, 0.0, p2, v)
    return _LOG2 + lp, g


@numba.njit(cache=True, inline="always", error_model="numpy")
def _prior_logp_grad(kind: int, p1: float, p2: float, p3: float, v: float) -> tuple[float, float]:
    """log density and d/dv of a prior at v (on the natural scale): the kernel of family
    ``kind`` (ids: poolwise.model.families). An unknown id gives nan, never a silently flat prior
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


# ---- the beta-binomial ---------------------------------------------------------------------
# y successes of n trials with mean p and precision phi: alpha = p phi, beta = (1 - p) phi,
# log f = log C(n, y) + [lgamma(y + alpha) - lgamma(alpha)] + [lgamma(n - y + beta)
# - lgamma(beta)] - [lgamma(n + phi) - lgamma(phi)]. Each bracket is a ratio of gammas
# lgamma(a + k) - lgamma(a), taken as a sum of logs for a small whole k (exact however large a
# is: the binomial limit phi -> infinity loses no digits) and as the difference otherwise.

_RATIO_TERMS = 64


@numba.njit(cache=True, inline="always", error_model="numpy")
def digamma(x: float) -> float:
    """psi(x) for x > 0: the recurrence up to x >= 6, then the asymptotic series (within
    about 1e-13 of SciPy's)."""
    acc = 0.0
    while x < 6.0:
        acc -= 1.0 / x
        x += 1.0
    f = 1.0 / (x * x)
    series = f * (-1.0 / 12 + f * (1.0 / 120 + f * (-1.0 / 252 + f * (
        1.0 / 240 + f * (-1.0 / 132 + f * (691.0 / 32760 - f / 12.0))))))
    return acc + math.log(x) - 0.5 / x + series


@numba.njit(cache=True, inline="always", error_model="numpy")
def _gamma_ratio(a: float, k: float) -> tuple[float, float]:
    """lgamma(a + k) - lgamma(a) and its derivative in a (psi(a + k) - psi(a)), a > 0, k >= 0."""
    if k == 0.0:
        return 0.0, 0.0
    if k < _RATIO_TERMS and k == math.floor(k):
        v = 0.0
        d = 0.0
        for j in range(int(k)):
            v += math.log(a + j)
            d += 1.0 / (a + j)
        return v, d
    return math.lgamma(a + k) - math.lgamma(a), digamma(a + k) - digamma(a)


@numba.njit(cache=True, inline="always", error_model="numpy")
def beta_binomial_loglik(y: float, n: float, p: float, q: float,
                         phi: float) -> tuple[float, float, float]:
    """log f(y | n, p, phi) without log C(n, y), and its derivatives in p (with q = 1 - p
    moving the other way) and in phi. p and q are floored at 1e-300: where the link's p
    rounds to 0 or 1 (a probit eta beyond about 38) the value stays finite (very negative),
    never -inf or NaN."""
    p = max(p, 1e-300)
    q = max(q, 1e-300)
    ra, da = _gamma_ratio(p * phi, y)
    rb, db = _gamma_ratio(q * phi, n - y)
    rn, dn = _gamma_ratio(phi, n)
    return ra + rb - rn, phi * (da - db), p * da + q * db - dn


@numba.njit(cache=True, inline="always", error_model="numpy")
def inverse_and_slope(link: int, eta: float) -> tuple[float, float, float]:
    """p, 1 - p (each without cancellation) and dp/deta of the link at eta."""
    if link == LOGIT:
        if eta >= 0.0:
            e = math.exp(-eta)
            p = 1.0 / (1.0 + e)
            q = e * p
        else:
            e = math.exp(eta)
            q = 1.0 / (1.0 + e)
            p = e * q
        return p, q, p * q
    if link == PROBIT:
        p = 0.5 * math.erfc(-eta / _SQRT2)
        q = 0.5 * math.erfc(eta / _SQRT2)
        return p, q, math.exp(-0.5 * eta * eta) * _INV_SQRT_2PI
    mu = math.exp(eta)  # CLOGLOG
    q = math.exp(-mu)
    return -math.expm1(-mu), q, mu * q


@numba.njit(cache=True, inline="always", error_model="numpy")
def cell_loglik_family(family: int, link: int, y: float, n: float, eta: float,
                       phi: float) -> tuple[float, float, float]:
    """A cell's log-likelihood without log C(n, y), its derivative in eta and in phi (0 for
    the binomial): the per-cell reference of every family."""
    if family == BETA_BINOMIAL:
        p, q, dp = inverse_and_slope(link, eta)
        v, d_p, d_phi = beta_binomial_loglik(y, n, p, q, phi)
        return v, d_p * dp, d_phi
    v, d = cell_loglik(link, y, n, eta)
    return v, d, 0.0


@numba.njit(cache=True, error_model="numpy")
def _loglik_beta_binomial(link: int, y: np.ndarray, n: np.ndarray, w: np.ndarray,
                          eta: np.ndarray, r: np.ndarray, phi: float) -> tuple[float, float]:
    """The beta-binomial over a block of cells with weights ``w``: writes w d/d eta into r and
    returns the weighted log-likelihood and its derivative in phi."""
    total = 0.0
    dphi = 0.0
    for i in range(eta.shape[0]):
        p, q, dp = inverse_and_slope(link, eta[i])
        v, d_p, d_f = beta_binomial_loglik(y[i], n[i], p, q, phi)
        total += w[i] * v
        dphi += w[i] * d_f
        r[i] = w[i] * d_p * dp
    return total, dphi


@numba.njit(cache=True, inline="always", error_model="numpy", fastmath=_CONTRACT)
def log_p_q(link: int, eta: float) -> tuple[float, float]:
    """log p and log(1 - p) of the link's p = inverse_link(eta), stable in both tails: the
    link's kernel for every log-likelihood computed from draws
    (:mod:`poolwise.model.likelihood`). The logit uses the branch-free exp and log1p of the
    sampler's loop (within about 1 ulp of libm's). A NaN eta gives NaN."""
    if link == LOGIT:
        return logit_log_p_q(eta)
    if eta != eta:
        return math.nan, math.nan
    if link == PROBIT:
        return _log_ndtr_and_mills(eta)[0], _log_ndtr_and_mills(-eta)[0]
    if link == CLOGLOG:
        mu = math.exp(eta)
        return math.log(-math.expm1(-mu)), -mu
    return math.nan, math.nan  # an unknown link id (poolwise.model.links refuses it before this)


@numba.njit(cache=True, inline="always", error_model="numpy", fastmath=_CONTRACT)
def logit_log_p_q(eta: float) -> tuple[float, float]:
    """:func:`log_p_q` of the logit without a branch (selects, so a loop over cells runs in
    SIMD lanes): ``t = log1p(exp(-|eta|))``, ``log p = -t`` (eta >= 0) or ``eta - t``, ``log(1
    - p) = -eta - t`` or ``-t``; the comparisons put a NaN eta on the side that keeps it."""
    t = log1p_unit(exp_nonpos(-abs(eta)))
    lp = -t if eta >= 0.0 else eta - t
    lq = -t if eta < 0.0 else -eta - t
    return lp, lq


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
    return math.nan, math.nan  # an unknown link id (poolwise.model.links refuses it before this)


# ---- the likelihood over all cells, one loop per link ---------------------------------
# Each takes successes y, trials n and eta (all N contiguous), writes d loglik / d eta into r and
# the per-cell log-likelihood over eta (eta is not needed afterwards), and returns the total.
# They compute the same values as cell_loglik (the per-cell reference) up to rounding.


@numba.njit(cache=True, error_model="numpy", fastmath=_CONTRACT)
def _loglik_logit(y: np.ndarray, n: np.ndarray, eta: np.ndarray, r: np.ndarray) -> float:
    """y log p + (n - y) log(1 - p), p = expit(eta); derivative y - n p. One exp and one log1p
    of exp(-|eta|) <= 1 per cell, branch-free, in SIMD lanes.

    With e = exp(-|eta|), l = log(1 + e), q = e / (1 + e) (the smaller of p and 1 - p):
    eta >= 0: ll = (y - n) eta - n l, d = (y - n) + n q;  eta < 0: ll = y eta - n l, d = y - n q.
    Both terms of ll have the same sign, so no cancellation (y eta - n log(1 + exp(eta)) loses
    every digit when y = n and eta is large)."""
    for i in range(eta.shape[0]):
        v = eta[i]
        pos = v >= 0.0
        e = exp_nonpos(-v if pos else v)
        q = e / (1.0 + e)
        # below 1e-100, e changes l by less than 1e-100; flooring it keeps the polynomial's
        # e^2, e^3 terms off subnormal numbers, which are slow
        lg = log1p_unit(e if e > 1e-100 else 1e-100)
        ni = n[i]
        t = y[i] - ni if pos else y[i]
        nq = ni * q
        r[i] = t + nq if pos else t - nq
        eta[i] = t * v - ni * lg
    return _sum(eta)


@numba.njit(cache=True, error_model="numpy")
def _loglik_probit(y: np.ndarray, n: np.ndarray, eta: np.ndarray, r: np.ndarray) -> float:
    """y log Phi(eta) + (n - y) log Phi(-eta), with one erfc per cell for both sides."""
    for i in range(eta.shape[0]):
        v = eta[i]
        av = abs(v)
        if av > 35.0:  # the small side by its asymptotic series, as _log_ndtr_and_mills
            x2 = v * v
            sr = 1.0 - 1.0 / x2 + 3.0 / (x2 * x2) - 15.0 / (x2 * x2 * x2)
            logpdf = -0.5 * x2 - 0.5 * _LOG_2PI
            l_small = logpdf - math.log(av) + math.log(sr)
            m_small = av / sr
            l_big = math.log1p(-math.exp(l_small))
            m_big = math.exp(logpdf - l_big)
        else:
            t = 0.5 * math.erfc(av / _SQRT2)  # Phi(-|eta|)
            pdf = math.exp(-0.5 * v * v) * _INV_SQRT_2PI
            l_small = math.log(t)
            l_big = math.log1p(-t)
            m_small = pdf / t
            m_big = pdf / (1.0 - t)
        if v >= 0.0:
            lp, mp, lq, mq = l_big, m_big, l_small, m_small
        else:
            lp, mp, lq, mq = l_small, m_small, l_big, m_big
        yi = y[i]
        fi = n[i] - yi
        ll = 0.0
        d = 0.0
        if yi > 0.0:
            ll += yi * lp
            d += yi * mp
        if fi > 0.0:
            ll += fi * lq
            d -= fi * mq
        r[i] = d
        eta[i] = ll
    return _sum(eta)


@numba.njit(cache=True, error_model="numpy")
def _loglik_cloglog(y: np.ndarray, n: np.ndarray, eta: np.ndarray, r: np.ndarray) -> float:
    """Complementary log-log: p = 1 - exp(-exp(eta))."""
    for i in range(eta.shape[0]):
        mu = math.exp(eta[i])
        yi = y[i]
        fi = n[i] - yi
        ll = -fi * mu
        d = -fi * mu
        if yi > 0.0:
            ll += yi * math.log(-math.expm1(-mu))
            d += yi * mu / math.expm1(mu)
        r[i] = d
        eta[i] = ll
    return _sum(eta)


@numba.njit(cache=True, error_model="numpy", fastmath=_CONTRACT)
def _add_scaled(eta: np.ndarray, col: np.ndarray, w: float) -> None:
    for i in range(eta.shape[0]):
        eta[i] += col[i] * w


@numba.njit(cache=True, error_model="numpy", fastmath=_CONTRACT)
def _add_gathered(eta: np.ndarray, col: np.ndarray, codes: np.ndarray, b: np.ndarray, C: int,
                  c: int) -> None:
    """eta_i += Z_ic b[codes_i, c] (b level-major, C per level)."""
    for i in range(eta.shape[0]):
        eta[i] += col[i] * b[codes[i] * C + c]


@numba.njit(cache=True, error_model="numpy", fastmath=_CONTRACT)
def _add_gathered2(eta: np.ndarray, z0: np.ndarray, z1: np.ndarray, codes: np.ndarray,
                   b: np.ndarray) -> None:
    """Two coefficients per level in one pass: eta_i += Z_i0 b[codes_i, 0] + Z_i1 b[codes_i, 1]."""
    for i in range(eta.shape[0]):
        j = 2 * codes[i]
        eta[i] += z0[i] * b[j] + z1[i] * b[j + 1]


@numba.njit(cache=True, error_model="numpy", fastmath=_CONTRACT)
def _scatter_add2(gb: np.ndarray, r: np.ndarray, z0: np.ndarray, z1: np.ndarray,
                  codes: np.ndarray) -> None:
    """Two coefficients per level in one pass, in cell order."""
    for i in range(r.shape[0]):
        j = 2 * codes[i]
        gb[j] += r[i] * z0[i]
        gb[j + 1] += r[i] * z1[i]


@numba.njit(cache=True, error_model="numpy", fastmath=_CONTRACT)
def _scatter_add(gb: np.ndarray, r: np.ndarray, col: np.ndarray, codes: np.ndarray, C: int,
                 c: int) -> None:
    """gb[codes_i, c] += r_i Z_ic, in cell order."""
    for i in range(r.shape[0]):
        gb[codes[i] * C + c] += r[i] * col[i]


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


#: cells per block of the cell pass: its working set (eta, r, and one block of each column)
#: stays in the core's L1/L2 cache whatever the number of cells. A constant, so the order of
#: every floating-point sum is fixed (bitwise reproducible draws).
CELL_BLOCK = 2048


@numba.njit(cache=True, error_model="numpy")
def _cell_pass(x: np.ndarray, grad: np.ndarray, ib: np.ndarray, fb: np.ndarray,
               b_all: np.ndarray) -> float:
    """Sum of the cells' log-likelihoods; adds d/d beta into grad and d/d b into grad's slots
    of each term's level parameters (zero on entry; :func:`logp_grad` turns them into the
    levels' gradient in place, so no effect-sized array is allocated for them).

    Block by block of CELL_BLOCK cells: eta = offset + X beta + sum_t Z_t b_t[codes_t], one
    term / column at a time (contiguous loops), then the link's likelihood loop, then the
    gradient: dot products for beta, a scatter-add by level for the group effects."""
    N = ib[H_N]
    K = ib[H_K]
    T = ib[H_T]
    link = ib[H_LINK]
    off_y = ib[H_Y]
    off_n = ib[H_NTRIALS]
    off_x = ib[H_X]
    off_o = ib[H_OFFSET]
    family = ib[H_FAMILY]
    pphi = ib[H_PPHI]
    off_w = ib[H_WEIGHT]
    phi = math.exp(x[pphi]) if family == BETA_BINOMIAL else 0.0
    size = min(N, CELL_BLOCK)
    eta_buf = np.empty(size)
    r_buf = np.empty(size)
    lp = 0.0
    for s0 in range(0, N, CELL_BLOCK):
        s1 = min(N, s0 + CELL_BLOCK)
        m = s1 - s0
        eta = eta_buf[:m]
        r = r_buf[:m]
        off = fb[off_o + s0 : off_o + s1]
        for i in range(m):
            eta[i] = off[i]
        for k in range(K):
            _add_scaled(eta, fb[off_x + k * N + s0 : off_x + k * N + s1], x[k])
        boff = 0
        for t in range(T):
            rec = ib[H_TERMS] + t * TERM_WORDS
            nl = ib[rec + T_L]
            C = ib[rec + T_C]
            codes = ib[ib[rec + T_CODES] + s0 : ib[rec + T_CODES] + s1]
            zoff = ib[rec + T_Z] + s0
            bt = b_all[boff : boff + nl * C]
            if C == 2:
                _add_gathered2(eta, fb[zoff : zoff + m], fb[zoff + N : zoff + N + m], codes, bt)
            else:
                for c in range(C):
                    _add_gathered(eta, fb[zoff + c * N : zoff + c * N + m], codes, bt, C, c)
            boff += nl * C
        # likelihood: one loop per link, no per-cell dispatch (eta is overwritten)
        y = fb[off_y + s0 : off_y + s1]
        n = fb[off_n + s0 : off_n + s1]
        if family == BETA_BINOMIAL:
            w = fb[off_w + s0 : off_w + s1]
            v, dphi = _loglik_beta_binomial(link, y, n, w, eta, r, phi)
            lp += v
            grad[pphi] += phi * dphi  # d/d log phi
        elif link == LOGIT:
            lp += _loglik_logit(y, n, eta, r)
        elif link == PROBIT:
            lp += _loglik_probit(y, n, eta, r)
        else:
            lp += _loglik_cloglog(y, n, eta, r)
        for k in range(K):
            grad[k] += _dot(fb[off_x + k * N + s0 : off_x + k * N + s1], r)
        boff = 0
        for t in range(T):
            rec = ib[H_TERMS] + t * TERM_WORDS
            nl = ib[rec + T_L]
            C = ib[rec + T_C]
            codes = ib[ib[rec + T_CODES] + s0 : ib[rec + T_CODES] + s1]
            zoff = ib[rec + T_Z] + s0
            plev = ib[rec + T_PLEV]
            gb = grad[plev : plev + nl * C]
            if C == 2:
                _scatter_add2(gb, r, fb[zoff : zoff + m], fb[zoff + N : zoff + N + m], codes)
            else:
                for c in range(C):
                    _scatter_add(gb, r, fb[zoff + c * N : zoff + c * N + m], codes, C, c)
            boff += nl * C
    return lp


# The levels of a term without correlations, coefficient by coefficient: one contiguous loop
# over the levels, each level's parameterization a select between the two forms (both are
# computed; a select, not a blend by 0/1 weights, so an overflow in the form not taken cannot
# turn into 0 * inf = NaN), and no effect-sized temporary; the sums keep their written order
# (no reassociation).


@numba.njit(cache=True, error_model="numpy", fastmath=_CONTRACT)
def _levels_forward(x: np.ndarray, ib: np.ndarray, cen: int, muidx: int, plev: int, nl: int,
                    C: int, sd: np.ndarray, log_sd: np.ndarray, b: np.ndarray) -> float:
    """Effects b (level-major, C per level) of one term and their prior's log density."""
    lp = 0.0
    for c in range(C):
        mi = ib[muidx + c]
        mu = x[mi] if mi >= 0 else 0.0
        sdc = sd[c]
        s_cen = 0.0
        s_non = 0.0
        n_cen = 0.0
        for j in range(nl):
            k = j * C + c
            centered = ib[cen + j] == 1
            xv = x[plev + k]
            dev = xv - mu
            b[k] = dev if centered else sdc * xv
            s_cen += dev * dev if centered else 0.0
            s_non += 0.0 if centered else xv * xv
            n_cen += 1.0 if centered else 0.0
        inv = 1.0 / sdc
        lp += -0.5 * s_cen * (inv * inv) - n_cen * log_sd[c] - 0.5 * s_non - nl * 0.5 * _LOG_2PI
    return lp


@numba.njit(cache=True, error_model="numpy", fastmath=_CONTRACT)
def _levels_backward(x: np.ndarray, grad: np.ndarray, ib: np.ndarray, cen: int, muidx: int,
                     plev: int, psd: int, nl: int, C: int, sd: np.ndarray, fixed: bool,
                     b: np.ndarray) -> None:
    """Gradient of one term's levels, SD and mean; on entry grad's level slots hold
    d loglik / d b (from the cell pass), and are overwritten with the levels' gradient."""
    for c in range(C):
        sdc = sd[c]
        inv = 1.0 / (sdc * sdc)
        g_mu = 0.0
        g_sd = 0.0
        for j in range(nl):
            k = j * C + c
            centered = ib[cen + j] == 1
            g_b = grad[plev + k]
            bv = b[k]
            g_cen = g_b - bv * inv
            grad[plev + k] = g_cen if centered else g_b * sdc - x[plev + k]
            g_mu -= g_cen if centered else 0.0
            g_sd += bv * bv * inv - 1.0 if centered else g_b * bv
        mi = ib[muidx + c]
        if mi >= 0:
            grad[mi] += g_mu
        if not fixed:
            grad[psd + c] += g_sd


@numba.njit(cache=True, error_model="numpy")
def logp_grad(x: np.ndarray, grad: np.ndarray, ib: np.ndarray, fb: np.ndarray) -> float:
    """Log posterior density at x; writes its gradient into grad."""
    K = ib[H_K]
    T = ib[H_T]
    off_bp = ib[H_BPRIOR]
    for d in range(grad.shape[0]):
        grad[d] = 0.0
    lp = fb[ib[H_CONST]]

    # fixed effects
    for k in range(K):
        pk = off_bp + 4 * k
        v, g = _prior_logp_grad(int(fb[pk]), fb[pk + 1], fb[pk + 2], fb[pk + 3], x[k])
        lp += v
        grad[k] += g

    # group terms: forward pass (effects b and their prior)
    nb = 0
    maxc = 1
    for t in range(T):
        rec = ib[H_TERMS] + t * TERM_WORDS
        nb += ib[rec + T_L] * ib[rec + T_C]
        maxc = max(maxc, ib[rec + T_C])
    b_all = np.empty(nb)
    sd = np.empty(maxc)
    log_sd = np.empty(maxc)
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
        for c in range(C):
            log_sd[c] = math.log(sd[c])  # once per term, not once per centered level
        if corr == 0:
            lp += _levels_forward(x, ib, cen, muidx, plev, nl, C, sd, log_sd,
                                  b_all[boff : boff + nl * C])
            boff += nl * C
            continue
        for j in range(nl):
            base = plev + j * C
            if ib[cen + j] == 1:
                for c in range(C):
                    mi = ib[muidx + c]
                    mu = x[mi] if mi >= 0 else 0.0
                    bv = x[base + c] - mu
                    b_all[boff + j * C + c] = bv
                    lp += -0.5 * (bv / sd[c]) ** 2 - log_sd[c] - 0.5 * _LOG_2PI
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
        boff += nl * C

    # the beta-binomial's precision: its prior on phi, sampled as log phi (the Jacobian)
    if ib[H_FAMILY] == BETA_BINOMIAL:
        pphi = ib[H_PPHI]
        pp = ib[H_PHIPRIOR]
        phi = math.exp(x[pphi])
        v, g = _prior_logp_grad(int(fb[pp]), fb[pp + 1], fb[pp + 2], fb[pp + 3], phi)
        lp += v + x[pphi]
        grad[pphi] += g * phi + 1.0

    # the cells: eta, likelihood, and their gradient wrt beta and the effects (d/d b into
    # grad's level slots, still zero here: the forward pass wrote no level gradient)
    lp += _cell_pass(x, grad, ib, fb, b_all)

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
        gL = np.zeros((C, C))
        gl = np.empty(C)
        if corr == 1:
            pc = ib[rec + T_PCORR]
            _chol_corr(x[pc : pc + C * (C - 1) // 2], C, Lc)
            eta_lkj = fb[ib[rec + T_LKJ]]
            for i in range(1, C):
                gL[i, i] += (C - i - 1 + 2.0 * (eta_lkj - 1.0)) / Lc[i, i]
        cen = ib[rec + T_CENTERED]
        muidx = ib[rec + T_MUIDX]
        if corr == 0:
            _levels_backward(x, grad, ib, cen, muidx, plev, psd, nl, C, sd, fixed,
                             b_all[boff : boff + nl * C])
        for j in range(nl if corr == 1 else 0):
            base = plev + j * C
            for c in range(C):  # d/d b of this level (from the cell pass), then its gradient
                gl[c] = grad[base + c]
                grad[base + c] = 0.0
            if ib[cen + j] == 1:
                for c in range(C):
                    bv = b_all[boff + j * C + c]
                    g_b = gl[c]
                    inv = 1.0 / (sd[c] * sd[c])
                    grad[base + c] += g_b - bv * inv
                    mi = ib[muidx + c]
                    if mi >= 0:
                        grad[mi] += -g_b + bv * inv
                    if not fixed:
                        grad[psd + c] += bv * bv * inv - 1.0
            else:
                for c in range(C):
                    g_b = gl[c]
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
    """Natural-scale quantities: beta, then per term sd, correlations, per-level totals; last
    the beta-binomial's phi."""
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
    if ib[H_FAMILY] == BETA_BINOMIAL:
        out[o] = math.exp(x[ib[H_PPHI]])


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
