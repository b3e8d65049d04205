"""The compiled density of the whole model family against an independent SciPy/NumPy
implementation (to 1e-8), and its gradient against central finite differences (to 1e-5).

The reference below does not use poolwise's design matrices: every case builds its own
row-level design by hand from the data frame (treatment coding, interactions, group codes of
sorted labels, nesting), evaluates the likelihood row by row (Bernoulli rows are never
compressed here), and computes the LKJ-Cholesky part from the canonical partial correlations
with the Jacobian taken *numerically* (complex-step derivatives, exact to rounding) instead of
from the closed form the engine uses. What it shares with the engine is only the documented
order of the parameter vector (``poolwise.engine.density``'s docstring) and the per-level
centering flags (a sampling choice stored in the spec).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from scipy import stats
from scipy.special import expit, gammaln, log_expit, log_ndtr, ndtr

from poolwise.engine import density as D
from poolwise.engine.layout import pack
from poolwise.model.predictor import linear_predictor
from poolwise.model.priors import Priors, half_normal, half_student_t, lkj, normal, student_t
from poolwise.model.scale import to_original_scale
from poolwise.model.spec import build_model

# ---- the reference ------------------------------------------------------------------------


@dataclass
class RefTerm:
    codes: np.ndarray  # (rows,) level of each row, levels = sorted labels
    Z: np.ndarray  # (rows, C)
    correlated: bool
    mu_index: tuple[int, ...]  # fixed column that is each coefficient's mean, or -1


@dataclass
class RefModel:
    X: np.ndarray  # (rows, K), the engine's (possibly standardized) columns
    y: np.ndarray
    n: np.ndarray
    terms: list[RefTerm]


def prior_logpdf(prior, v: float) -> float:
    fam, p = prior.family, prior.params
    if fam == "normal":
        return float(stats.norm.logpdf(v, p[0], p[1]))
    if fam == "student_t":
        return float(stats.t.logpdf(v, p[0], p[1], p[2]))
    if fam == "exponential":
        return float(stats.expon.logpdf(v, scale=1.0 / p[0]))
    if fam == "half_normal":
        return float(stats.halfnorm.logpdf(v, scale=p[0]))
    if fam == "half_student_t":
        return float(math.log(2.0) + stats.t.logpdf(v, p[0], 0.0, p[1]))
    if fam == "flat":
        return 0.0
    raise AssertionError(fam)


def cpc_cholesky(y: np.ndarray, C: int) -> np.ndarray:
    """Cholesky factor of a correlation matrix from unconstrained CPCs ``tanh(y)``, row by row
    (Stan reference manual, "Cholesky factors of correlation matrices"). Works for complex y."""
    L = np.zeros((C, C), dtype=np.result_type(y, float))
    L[0, 0] = 1.0
    k = 0
    for i in range(1, C):
        for j in range(i):
            L[i, j] = np.tanh(y[k]) * np.sqrt(1.0 - np.sum(L[i, :j] ** 2))
            k += 1
        L[i, i] = np.sqrt(1.0 - np.sum(L[i, :i] ** 2))
    return L


def cpc_log_jacobian(y: np.ndarray, C: int) -> float:
    """log |det d(strict lower triangle of L) / dy|, by complex-step differentiation."""
    m = len(y)
    if m == 0:
        return 0.0
    rows, cols = np.tril_indices(C, -1)
    J = np.empty((m, m))
    h = 1e-30
    for k in range(m):
        yc = y.astype(complex)
        yc[k] += 1j * h
        J[:, k] = cpc_cholesky(yc, C)[rows, cols].imag / h
    sign, logdet = np.linalg.slogdet(J)
    assert sign != 0
    return float(logdet)


def log_p_q(link: str, eta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if link == "logit":
        return log_expit(eta), log_expit(-eta)
    if link == "probit":
        return log_ndtr(eta), log_ndtr(-eta)
    mu = np.exp(eta)
    return np.log(-np.expm1(-mu)), -mu


def ref_logp(spec, ref: RefModel, x: np.ndarray, *, pmf: bool = False) -> float | None:
    """Row-level log posterior density, written independently of the engine. ``pmf=True``
    uses scipy.stats.binom.logpmf (None where a probability is within 1e-6 of 0 or 1)."""
    K = ref.X.shape[1]
    beta = x[:K]
    lp = sum(prior_logpdf(p, b) for p, b in zip(spec.fixed_priors, beta, strict=True))
    eta = ref.X @ beta
    pos = K
    for term, rt in zip(spec.terms, ref.terms, strict=True):
        C = rt.Z.shape[1]
        L = int(rt.codes.max()) + 1
        assert L == term.group.n_levels
        if term.estimated:
            log_sd = x[pos : pos + C]
            sd = np.exp(log_sd)
            lp += sum(prior_logpdf(p, s) for p, s in zip(term.sd_priors, sd, strict=True))
            lp += float(np.sum(log_sd))  # Jacobian of sd = exp(log_sd)
            pos += C
        else:
            sd = np.asarray(term.sd_fixed, dtype=float)
        Lc = np.eye(C)
        if rt.correlated:
            m = C * (C - 1) // 2
            y = x[pos : pos + m]
            pos += m
            Lc = cpc_cholesky(y, C)
            lp += cpc_log_jacobian(y, C)
            eta_lkj = term.lkj_eta
            lp += sum((C - i - 1 + 2.0 * (eta_lkj - 1.0)) * math.log(Lc[i, i]) for i in range(1, C))
        lev = x[pos : pos + L * C].reshape(L, C)
        pos += L * C
        mu = np.array([beta[i] if i >= 0 else 0.0 for i in rt.mu_index])
        dev = np.empty((L, C))
        for j in range(L):
            if term.centered[j]:
                assert not rt.correlated
                dev[j] = lev[j] - mu
                lp += float(np.sum(stats.norm.logpdf(lev[j], mu, sd)))
            else:
                dev[j] = sd * (Lc @ lev[j])
                lp += float(np.sum(stats.norm.logpdf(lev[j])))
        eta = eta + np.sum(rt.Z * dev[rt.codes], axis=1)
    assert pos == len(x)
    if pmf:  # scipy's pmf: exact only where p does not round to 0 or 1
        p = {"logit": expit, "probit": ndtr, "cloglog": lambda e: -np.expm1(-np.exp(e))}[spec.link](
            eta
        )
        if np.any(np.minimum(p, 1.0 - p) < 1e-6):  # 1 - p has lost its digits
            return None
        return float(lp + np.sum(stats.binom.logpmf(ref.y, ref.n, p)))
    lpp, lqq = log_p_q(spec.link, eta)
    ll = gammaln(ref.n + 1) - gammaln(ref.y + 1) - gammaln(ref.n - ref.y + 1)
    ll = ll + np.where(ref.y > 0, ref.y * lpp, 0.0)
    ll = ll + np.where(ref.n > ref.y, (ref.n - ref.y) * lqq, 0.0)
    return float(lp + np.sum(ll))


# ---- data and hand-built designs -----------------------------------------------------------


def _frame(seed: int = 11, rows: int = 240) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    g = rng.choice(["g1", "g2", "g3", "g4", "g5", "g6"], size=rows)
    a = rng.integers(1, 9, size=rows)
    b = rng.choice(["u", "v", "w", "x", "p", "q", "r"], size=rows)
    f = rng.choice(["A", "B", "C"], size=rows)
    x = np.round(rng.normal(size=rows), 1)  # repeats, so rows collapse into cells
    z = rng.integers(0, 2, size=rows).astype(float)
    w = np.round(rng.uniform(-1, 1, size=rows), 1)
    y = rng.integers(0, 2, size=rows)
    n = rng.integers(1, 9, size=rows)
    s = rng.binomial(n, 0.4)
    return pd.DataFrame(
        {
            "y": y,
            "s": s,
            "n": n,
            "fail": n - s,
            "g": g,
            "a": a,
            "b": b,
            "f": f,
            "x": x,
            "z": z,
            "w": w,
        }
    )


FRAME = _frame()


def codes_of(labels) -> np.ndarray:
    _, inv = np.unique(np.asarray(labels), return_inverse=True)
    return inv.reshape(-1)


def ones(df):
    return np.ones(len(df))


def ind(df, col, level):
    return (df[col].to_numpy() == level).astype(float)


def bern(df):
    return df["y"].to_numpy(float), np.ones(len(df))


def binom(df):
    return df["s"].to_numpy(float), df["n"].to_numpy(float)


@dataclass
class Case:
    id: str
    formula: str
    fixed: list[str]  # expected fixed_names
    X: Callable[[pd.DataFrame], np.ndarray]
    terms: Callable[[pd.DataFrame], list[RefTerm]]
    response: Callable = bern
    link: str = "logit"
    pooling: str = "partial"
    param: str = "auto"
    priors: Priors | None = None


def col(df, name):
    return df[name].to_numpy(float)


def ones_col(df):
    return ones(df)[:, None]


CASES = [
    Case(
        "slopes-2-correlated",
        "y ~ x + (1 + x | g)",
        ["Intercept", "x"],
        lambda d: np.column_stack([ones(d), col(d, "x")]),
        lambda d: [
            RefTerm(codes_of(d["g"]), np.column_stack([ones(d), col(d, "x")]), True, (0, 1))
        ],
    ),
    Case(
        "slopes-3-correlated",
        "y ~ x + w + (1 + x + w | g)",
        ["Intercept", "x", "w"],
        lambda d: np.column_stack([ones(d), col(d, "x"), col(d, "w")]),
        lambda d: [
            RefTerm(
                codes_of(d["g"]),
                np.column_stack([ones(d), col(d, "x"), col(d, "w")]),
                True,
                (0, 1, 2),
            )
        ],
        priors=Priors(cor=lkj(1.5), sd=half_normal(0.8)),
    ),
    Case(
        "slopes-uncorrelated-centered",
        "y ~ x + (1 + x || g)",
        ["Intercept", "x"],
        lambda d: np.column_stack([ones(d), col(d, "x")]),
        lambda d: [
            RefTerm(codes_of(d["g"]), np.column_stack([ones(d), col(d, "x")]), False, (0, 1))
        ],
        param="centered",
    ),
    Case(
        "slopes-uncorrelated-mixed",
        "y ~ x + (1 + x || g)",
        ["Intercept", "x"],
        lambda d: np.column_stack([ones(d), col(d, "x")]),
        lambda d: [
            RefTerm(codes_of(d["g"]), np.column_stack([ones(d), col(d, "x")]), False, (0, 1))
        ],
        param="mixed",
        link="probit",
    ),
    Case(
        "slopes-uncorrelated-noncentered",
        "y ~ x + (1 + x || g)",
        ["Intercept", "x"],
        lambda d: np.column_stack([ones(d), col(d, "x")]),
        lambda d: [
            RefTerm(codes_of(d["g"]), np.column_stack([ones(d), col(d, "x")]), False, (0, 1))
        ],
        param="noncentered",
        priors=Priors(sd=half_student_t(3, 1.0), b=student_t(5, 0.2, 1.3)),
    ),
    Case(
        "slope-only",
        "y ~ x + (0 + x | g)",
        ["Intercept", "x"],
        lambda d: np.column_stack([ones(d), col(d, "x")]),
        lambda d: [RefTerm(codes_of(d["g"]), col(d, "x")[:, None], False, (1,))],
        param="noncentered",
    ),
    Case(
        "slope-only-no-fixed-mean",
        "y ~ 1 + (0 + x | g)",
        ["Intercept"],
        ones_col,
        lambda d: [RefTerm(codes_of(d["g"]), col(d, "x")[:, None], False, (-1,))],
        param="centered",
    ),
    Case(
        "crossed",
        "y ~ 1 + (1 | a) + (1 | b)",
        ["Intercept"],
        ones_col,
        lambda d: [
            RefTerm(codes_of(d["a"]), ones(d)[:, None], False, (0,)),
            RefTerm(codes_of(d["b"]), ones(d)[:, None], False, (0,)),
        ],
        param="centered",
        priors=Priors(sd_by_group={"b": half_normal(0.5)}),
    ),
    Case(
        "crossed-noncentered",
        "y ~ 1 + (1 | a) + (1 | b)",
        ["Intercept"],
        ones_col,
        lambda d: [
            RefTerm(codes_of(d["a"]), ones(d)[:, None], False, (0,)),
            RefTerm(codes_of(d["b"]), ones(d)[:, None], False, (0,)),
        ],
        param="noncentered",
    ),
    Case(
        "crossed-mixed-centering",
        "s | trials(n) ~ 1 + (1 | a) + (1 | g)",
        ["Intercept"],
        ones_col,
        lambda d: [
            RefTerm(codes_of(d["a"]), ones(d)[:, None], False, (0,)),
            RefTerm(codes_of(d["g"]), ones(d)[:, None], False, (0,)),
        ],
        response=binom,
        param="mixed",
    ),
    Case(
        "nested",
        "y ~ 1 + (1 | b/g)",
        ["Intercept"],
        ones_col,
        lambda d: [
            RefTerm(codes_of(d["b"]), ones(d)[:, None], False, (0,)),
            RefTerm(
                codes_of([f"{u}:{v}" for u, v in zip(d["b"], d["g"], strict=True)]),
                ones(d)[:, None],
                False,
                (0,),
            ),
        ],
    ),
    Case(
        "categorical-interactions",
        "y ~ f * x + x:w + (1 + f | g)",
        ["Intercept", "fB", "fC", "x", "fB:x", "fC:x", "x:w"],
        lambda d: np.column_stack(
            [
                ones(d),
                ind(d, "f", "B"),
                ind(d, "f", "C"),
                col(d, "x"),
                ind(d, "f", "B") * col(d, "x"),
                ind(d, "f", "C") * col(d, "x"),
                col(d, "x") * col(d, "w"),
            ]
        ),
        lambda d: [
            RefTerm(
                codes_of(d["g"]),
                np.column_stack([ones(d), ind(d, "f", "B"), ind(d, "f", "C")]),
                True,
                (0, 1, 2),
            )
        ],
    ),
    Case(
        "probit-slopes",
        "y ~ x + (1 + x | g)",
        ["Intercept", "x"],
        lambda d: np.column_stack([ones(d), col(d, "x")]),
        lambda d: [
            RefTerm(codes_of(d["g"]), np.column_stack([ones(d), col(d, "x")]), True, (0, 1))
        ],
        link="probit",
    ),
    Case(
        "cloglog-slopes",
        "y ~ x + (1 + x | g)",
        ["Intercept", "x"],
        lambda d: np.column_stack([ones(d), col(d, "x")]),
        lambda d: [
            RefTerm(codes_of(d["g"]), np.column_stack([ones(d), col(d, "x")]), True, (0, 1))
        ],
        link="cloglog",
    ),
    Case(
        "binomial-trials",
        "s | trials(n) ~ z + (1 + z | g)",
        ["Intercept", "z"],
        lambda d: np.column_stack([ones(d), col(d, "z")]),
        lambda d: [
            RefTerm(codes_of(d["g"]), np.column_stack([ones(d), col(d, "z")]), True, (0, 1))
        ],
        response=binom,
    ),
    Case(
        "binomial-cbind-probit",
        "cbind(s, fail) ~ z + (1 | a)",
        ["Intercept", "z"],
        lambda d: np.column_stack([ones(d), col(d, "z")]),
        lambda d: [RefTerm(codes_of(d["a"]), ones(d)[:, None], False, (0,))],
        response=binom,
        link="probit",
    ),
    Case(
        "no-pooling-slopes",
        "y ~ x + (1 + x | g)",
        [],
        lambda d: np.empty((len(d), 0)),
        lambda d: [
            RefTerm(codes_of(d["g"]), np.column_stack([ones(d), col(d, "x")]), False, (-1, -1))
        ],
        pooling="none",
        priors=Priors(unpooled=normal(0.3, 2.0), b=normal(0, 0.7)),
    ),
    Case(
        "complete-pooling",
        "y ~ f + x + (1 | g)",
        ["Intercept", "fB", "fC", "x"],
        lambda d: np.column_stack([ones(d), ind(d, "f", "B"), ind(d, "f", "C"), col(d, "x")]),
        lambda d: [],
        pooling="complete",
        link="cloglog",
    ),
]


def _spec(case: Case, *, standardize: bool = False):
    spec = _build(case, standardize=standardize)
    if case.param == "mixed":  # every other level centered, in every term
        terms = tuple(
            replace(t, centered=np.arange(t.group.n_levels) % 2 == 0) for t in spec.terms
        )
        spec = replace(spec, terms=terms)
        assert all(0 < t.centered.sum() < t.group.n_levels for t in spec.terms)
    return spec


def _build(case: Case, *, standardize: bool = False):
    param = "auto" if case.param == "mixed" else case.param
    return build_model(
        case.formula,
        FRAME,
        link=case.link,
        pooling=case.pooling,
        parameterization=param,
        priors=case.priors,
        standardize=standardize,
    )


def _ref(case: Case) -> RefModel:
    y, n = case.response(FRAME)
    return RefModel(case.X(FRAME), y, n, case.terms(FRAME))


def _engine(packed, x):
    grad = np.empty(packed.dim)
    return D.logp_grad(x, grad, packed.ib, packed.fb), grad


def _close(a: float, b: float, rel: float = 1e-8) -> bool:
    return abs(a - b) <= rel * max(1.0, abs(b))


# ---- the tests ---------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_log_density_matches_reference(case):
    spec = _spec(case)
    assert list(spec.design.fixed_names) == case.fixed
    ref = _ref(case)
    packed = pack(spec)
    rng = np.random.default_rng(20240605)
    for _ in range(50):
        x = rng.normal(size=packed.dim)
        ours, _ = _engine(packed, x)
        theirs = ref_logp(spec, ref, x)
        assert _close(ours, theirs), (ours, theirs)
    checked = 0
    for _ in range(20):  # moderate points: scipy.stats.binom.logpmf itself is exact there
        x = rng.normal(scale=0.3, size=packed.dim)
        ours, _ = _engine(packed, x)
        theirs = ref_logp(spec, ref, x, pmf=True)
        if theirs is not None:
            checked += 1
            assert _close(ours, theirs)
    assert checked >= 10


@pytest.mark.parametrize("link", ["logit", "probit", "cloglog"])
def test_extreme_linear_predictor(link, fd_gradient):
    """|eta| up to 40: the stable forms of log p and log(1 - p), in both tails."""
    case = CASES[0]
    spec = build_model(case.formula, FRAME, link=link, standardize=False)
    ref = _ref(case)
    packed = pack(spec)
    rng = np.random.default_rng(3)
    etas = []
    for k in range(60):
        x = rng.normal(scale=0.2, size=packed.dim)
        x[0] = -38.0 + 76.0 * k / 59  # the intercept sweeps [-38, 38]
        ours, grad = _engine(packed, x)
        theirs = ref_logp(spec, ref, x)
        assert np.isfinite(ours) and np.all(np.isfinite(grad))
        assert _close(ours, theirs), (x[0], ours, theirs)
        etas.append(np.abs(ref.X @ x[:2]).max())
        fd = fd_gradient(packed, x, 1e-5)
        assert np.all(np.abs(fd - grad) <= 1e-5 * np.maximum(1.0, np.abs(grad))), x[0]
    assert max(etas) > 38.0


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_gradient_matches_finite_differences(case, fd_gradient):
    packed = pack(_spec(case))
    rng = np.random.default_rng(99)
    for _ in range(10):
        x = rng.normal(size=packed.dim)
        _, grad = _engine(packed, x)
        # h = 1e-5, not 1e-6: at some of these points |log density| is about 1.4e6 (cloglog,
        # exp(eta) large), and its last bit (2.3e-10) alone moves (f(x+h) - f(x-h)) / 2h by
        # 1.2e-4 at h = 1e-6; at 1e-5 the truncation error (h^2 f'''/6) is still negligible
        fd = fd_gradient(packed, x, 1e-5)
        rel = np.abs(grad - fd) / np.maximum(1.0, np.abs(fd))
        assert rel.max() < 1e-5, (rel.max(), packed.param_names[int(np.argmax(rel))])


def test_bernoulli_rows_equal_binomial_cells():
    """The same data as Bernoulli rows and as aggregated binomial counts: identical densities
    up to the binomial coefficients, which the engine adds as a constant."""
    rows = FRAME[["y", "g", "z"]]
    agg = rows.groupby(["g", "z"], as_index=False).agg(s=("y", "sum"), n=("y", "size"))
    f_rows = "y ~ z + (1 + z | g)"
    f_agg = "s | trials(n) ~ z + (1 + z | g)"
    spec_r = build_model(f_rows, rows, standardize=False)
    spec_a = build_model(f_agg, agg, standardize=False)
    assert spec_r.design.n_cells == spec_a.design.n_cells == len(agg)
    assert spec_r.design.n_rows == len(rows)
    pr, pa = pack(spec_r), pack(spec_a)
    assert pr.param_names == pa.param_names
    const = float(
        np.sum(gammaln(agg["n"] + 1) - gammaln(agg["s"] + 1) - gammaln(agg["n"] - agg["s"] + 1))
    )
    rng = np.random.default_rng(4)
    for _ in range(50):
        x = rng.normal(size=pr.dim)
        a, ga = _engine(pr, x)
        b, gb = _engine(pa, x)
        assert _close(a, b - const)
        np.testing.assert_allclose(ga, gb, rtol=1e-10, atol=1e-10)


def test_cpc_jacobian_closed_form_equals_numeric():
    """The engine's closed-form log-Jacobian (inside its density) against the complex-step
    determinant: density of a correlated term with everything else held fixed."""
    for C in (2, 3, 4):
        rng = np.random.default_rng(C)
        for _ in range(20):
            y = rng.normal(size=C * (C - 1) // 2)
            L = cpc_cholesky(y, C)
            closed = 0.0
            for i in range(1, C):
                acc = 0.0
                for j in range(i):
                    z = math.tanh(y[i * (i - 1) // 2 + j])
                    closed += math.log1p(-z * z) + 0.5 * math.log1p(-acc)
                    acc += L[i, j] ** 2
            assert cpc_log_jacobian(y, C) == pytest.approx(closed, abs=1e-10)


def test_lkj_part_matches_vine_beta_densities():
    """Independent check of the LKJ kernel + Jacobian: under LKJ(eta) the canonical partial
    correlations are independent, the one of column j (0-based) is 2 Beta(b, b) - 1 with
    b = eta + (C - 2 - j) / 2 (Lewandowski, Kurowicka & Joe 2009), so in y = atanh(cpc) the
    density is prod (1 - tanh(y)^2)^b up to a constant. Differences between points must agree."""
    rng = np.random.default_rng(17)
    frame = FRAME
    for C, formula, eta in (
        (2, "y ~ x + (1 + x | g)", 2.0),
        (3, "y ~ x + w + (1 + x + w | g)", 1.5),
        (3, "y ~ x + w + (1 + x + w | g)", 4.0),
    ):
        spec = build_model(formula, frame, priors=Priors(cor=lkj(eta)), standardize=False)
        packed = pack(spec)
        pc = [i for i, n in enumerate(packed.param_names) if n.startswith("atanh_cpc_")]
        assert len(pc) == C * (C - 1) // 2
        base = rng.normal(size=packed.dim)
        # with every z of the level parameters at zero the likelihood does not see the CPCs
        lev = [i for i, n in enumerate(packed.param_names) if n.startswith("z_")]
        base[lev] = 0.0

        def vine(y, C=C, eta=eta):
            out, k = 0.0, 0
            for i in range(1, C):
                for j in range(i):
                    b = eta + (C - 2 - j) / 2
                    out += b * math.log1p(-(math.tanh(y[k]) ** 2))
                    k += 1
            return out

        y0 = base[pc].copy()
        lp0, _ = _engine(packed, base)
        for _ in range(20):
            x = base.copy()
            x[pc] = rng.normal(scale=1.5, size=len(pc))
            lp1, _ = _engine(packed, x)
            assert lp1 - lp0 == pytest.approx(vine(x[pc]) - vine(y0), abs=1e-9)


@pytest.mark.parametrize(
    "case",
    [c for c in CASES if c.id.endswith("-correlated") or "categorical" in c.id],
    ids=lambda c: c.id,
)
def test_correlations_and_totals_equal_cholesky_products(case):
    """expand(): cor_<g>__<ci>__<cj> = (L L^T)[i, j], and totals = mean + diag(sd) L z."""
    spec = _spec(case)
    packed = pack(spec)
    term = spec.terms[0]
    g = term.group
    C, Lv = g.n_coefs, g.n_levels
    K = len(spec.design.fixed_names)
    rng = np.random.default_rng(8)
    names = [v.name for v in packed.variables]
    for _ in range(50):
        x = rng.normal(size=packed.dim)
        out = np.empty(packed.n_expanded)
        D.expand(x, out, packed.ib, packed.fb)
        values = dict(
            zip(
                names,
                np.split(out, np.cumsum([v.size for v in packed.variables])[:-1]),
                strict=True,
            )
        )
        sd = np.exp(x[K : K + C])
        m = C * (C - 1) // 2
        Lc = cpc_cholesky(x[K + C : K + C + m], C)
        R = Lc @ Lc.T
        for i in range(1, C):
            for j in range(i):
                name = f"cor_{g.name}__{g.coef_names[j]}__{g.coef_names[i]}"
                assert values[name][0] == pytest.approx(R[i, j], abs=1e-12)
        z = x[K + C + m :].reshape(Lv, C)
        dev = (Lc @ z.T).T * sd
        for c, coef in enumerate(g.coef_names):
            mu = x[term.mu_index[c]] if term.mu_index[c] >= 0 else 0.0
            total = values["a_g" if coef == "Intercept" else f"b_g__{coef}"]
            np.testing.assert_allclose(total, mu + dev[:, c], atol=1e-12)
            name = f"sd_g__{coef}"
            assert values[name][0] == pytest.approx(sd[c], rel=1e-14)


def test_extreme_correlation_parameters_do_not_raise():
    """atanh-CPCs far out (tanh rounds to +-1): the density returns a number or -inf with a
    finite-or-nan gradient, never an exception (inside nutpie's C callback an exception was
    swallowed and left logp unset, wrecking whole chains)."""
    spec = _spec(CASES[1])
    packed = pack(spec)
    pc = [i for i, n in enumerate(packed.param_names) if n.startswith("atanh_cpc_")]
    for v in (15.0, 19.0, 19.5, 25.0, 40.0, 400.0):
        for sign in (1.0, -1.0):
            x = np.zeros(packed.dim)
            x[pc] = sign * v
            lp, _ = _engine(packed, x)
            assert not np.isnan(lp) and lp < 0


# ---- standardization: the engine's scale and the way back ------------------------------------


def test_standardized_density_matches_reference_with_hand_scaling():
    """standardize=True: x and w (many values) are divided by their SD in every column they
    appear in, z (0/1) is not; fixed columns are centered at their row means."""
    formula = "y ~ x * z + w + (1 + x | g)"
    spec = build_model(formula, FRAME)
    d = spec.design
    assert list(d.fixed_names) == ["Intercept", "x", "z", "w", "x:z"]
    sx, sw = np.std(FRAME["x"]), np.std(FRAME["w"])
    assert d.predictor_scaling["x"] == pytest.approx((FRAME["x"].mean(), sx))
    assert "z" not in d.predictor_scaling  # binary
    x, z, w = col(FRAME, "x"), col(FRAME, "z"), col(FRAME, "w")
    raw = np.column_stack([x / sx, z, w / sw, x * z / sx])
    X = np.column_stack([np.ones(len(FRAME)), raw - raw.mean(axis=0)])
    terms = [
        RefTerm(codes_of(FRAME["g"]), np.column_stack([np.ones(len(FRAME)), x / sx]), True, (0, 1))
    ]
    y, n = bern(FRAME)
    ref = RefModel(X, y, n, terms)
    packed = pack(spec)
    rng = np.random.default_rng(5)
    for _ in range(50):
        xx = rng.normal(size=packed.dim)
        assert _close(_engine(packed, xx)[0], ref_logp(spec, ref, xx))


@pytest.mark.parametrize(
    ("formula", "pooling"),
    [
        ("y ~ x * z + w + (1 + x | g)", "partial"),
        ("y ~ f * x + x:w + (1 + x + w | g) + (1 | a)", "partial"),
        ("y ~ x + w + (1 + x || g)", "partial"),
        ("y ~ 0 + x + w + (1 + x | g)", "partial"),
        ("y ~ x + w + (1 + x | g)", "none"),
        ("s | trials(n) ~ w + f + (0 + w | g)", "partial"),
    ],
)
def test_original_scale_draws_reproduce_the_linear_predictor(formula, pooling):
    """to_original_scale is exact: the original-scale draws with the original design give the
    same linear predictor as the engine's draws with the engine's design, draw by draw."""
    spec = build_model(formula, FRAME, pooling=pooling)
    d = spec.design
    assert d.rescaled
    packed = pack(spec)
    rng = np.random.default_rng(6)
    S = 7
    xs = rng.normal(size=(S, packed.dim))
    outs = np.empty((S, packed.n_expanded))
    for s in range(S):
        D.expand(xs[s], outs[s], packed.ib, packed.fb)
    data = {}
    off = 0
    for v in packed.variables:
        block = outs[:, off : off + v.size]
        off += v.size
        if v.dims:
            data[v.name] = (("chain", "draw", v.dims[0]), block.reshape(1, S, v.size))
        else:
            data[v.name] = (("chain", "draw"), block.reshape(1, S))
    post = xr.Dataset(data, coords={k: np.asarray(c) for k, c in packed.coords.items()})
    # the engine's eta, straight from its own matrices
    K = len(d.fixed_names)
    eta_engine = xs[:, :K] @ d.X_engine.T
    for term in spec.terms:
        g = term.group
        for c, coef in enumerate(g.coef_names):
            from poolwise.engine.layout import total_name

            tot = post[total_name(term, coef)].values.reshape(S, -1)
            mi = term.mu_index[c]
            dev = tot - (xs[:, [mi]] if mi >= 0 else 0.0)
            eta_engine += dev[:, g.codes] * g.Z_engine[:, c]
    orig = to_original_scale(spec, post)
    np.testing.assert_allclose(linear_predictor(spec, orig), eta_engine, rtol=1e-10, atol=1e-10)
