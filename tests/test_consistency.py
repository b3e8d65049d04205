"""One model, computed once: every quantity derived from the model, on models that combine every
feature, against a direct computation written here from the draws.

Hypothesis draws a model over every feature (link x family x offset x varying slopes, correlated
or not x crossed x nested x trials x pooling x standardization x row weights: none, frequency or
survey) on a small data frame, and draws of
its
parameters (random points of the engine's parameter space pushed through the engine's
transform, so sds, correlations and totals are coherent; no sampling). For each model:

* the row-level, per-pattern and stored log-likelihood and the total over rows;
* row-level PSIS-LOO;
* leave-one-group-out: the log density of each group's rows as a new group (its effects, and
  those of levels nested in it, integrated out), for the partial, no and complete pooling fit,
  and the subset model an exact refit samples;
* the likelihood side of the prior sensitivity check;
* predictions for the data's own rows and for a new group; effects on the outcome scale
  (the average prediction, the average difference when x grows by one) and
  poststratification;
* the prior predictive group proportions and the posterior predictive replicates;
* the engine's log density: what the data add to it equals the model layer's log-likelihood.

The direct computation works row by row from the data frame: the offset is read from the
frame's column (or the array given), each row's linear predictor is written out as the sum the
model defines, and the binomial log-likelihood uses SciPy's ``log_expit`` / ``log_ndtr``. Row
weights enter as their definition says: a frequency weight w repeats its row w times (the
row-level values, LOO over the rows represented), every row's log-likelihood is multiplied by
its weight in a total (survey weights scaled to sum to the rows), and with survey weights LOO
and leave-one-group-out refuse. A
feature that one path forgets (the offset in a likelihood, a term in a prediction) fails here.
A new feature is not done until this suite passes with it.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from unittest import mock

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from scipy import stats
from scipy.special import expit, gammaln, log_expit, log_ndtr, logsumexp, ndtr

from poolwise.data.patterns import PATTERN_DIM
from poolwise.engine import density as D
from poolwise.engine.layout import pack
from poolwise.engine.sampler import SamplerConfig
from poolwise.errors import DataWarning, SpecError
from poolwise.model.naming import cor_name, fixed_name, sd_name, total_name
from poolwise.model.scale import to_original_scale
from poolwise.model.spec import build_model

CHAINS, DRAWS = 2, 40

# ---- the models ------------------------------------------------------------------------------

GROUPS = {
    "intercept": "(1 | g)",
    "slope": "(1 + x | g)",
    "slope_uncorrelated": "(1 + x || g)",
    "crossed": "(1 | g) + (1 | h)",
    "nested": "(1 | g/k)",
    "slope_crossed": "(1 + x | g) + (1 | h)",
}


@dataclass(frozen=True)
class Case:
    link: str
    offset: str  # "none", "formula" (+ offset(o)), "expression" (offset="o"), "array"
    trials: bool
    fixed: str
    groups: str
    pooling: str
    standardize: bool
    seed: int
    family: str = "binomial"
    weights: str = "none"  # "none", "frequency" (column fw), "survey" (column sw)


cases = st.builds(
    Case,
    link=st.sampled_from(["logit", "probit", "cloglog"]),
    offset=st.sampled_from(["none", "formula", "expression", "array"]),
    trials=st.booleans(),
    fixed=st.sampled_from(["1", "x", "x + f"]),
    groups=st.sampled_from(sorted(GROUPS)),
    pooling=st.sampled_from(["partial", "none", "complete"]),
    standardize=st.booleans(),
    seed=st.integers(0, 2**16),
    family=st.sampled_from(["binomial", "beta_binomial"]),
    weights=st.sampled_from(["none", "frequency", "survey"]),
)


def frame(seed: int) -> pd.DataFrame:
    """48 rows: g (4 levels of 12 rows), k (2 levels nested in each g), h (3 levels, crossed),
    x on a scale standardization changes, f (3 categories), an offset o, trials n, frequency
    weights fw and survey weights sw."""
    rng = np.random.default_rng(seed)
    R = 48
    g = np.repeat(["a", "b", "c", "d"], 12)
    return pd.DataFrame({
        "g": g,
        "k": np.tile(np.repeat(["u", "v"], 6), 4),
        "h": rng.choice(["p", "q", "r"], R),
        "x": rng.normal(1.5, 2.0, R).round(2),
        "f": rng.choice(["lo", "mid", "hi"], R),
        "o": rng.uniform(-1.0, 1.0, R).round(3),
        "n": rng.integers(1, 12, R),
        "y": rng.integers(0, 2, R),
    }).assign(s=lambda df: np.minimum(rng.integers(0, 12, R), df["n"])).assign(
        fw=lambda df: rng.integers(1, 4, R), sw=lambda df: rng.uniform(0.2, 3.0, R).round(3))


def row_weights(case: Case, df: pd.DataFrame, design) -> tuple[np.ndarray, np.ndarray]:
    """Per entry of the design (a data row): the rows it stands for (its frequency weight, or
    1) and its weight in a total log-likelihood (the frequency weight, the survey weight scaled
    so that the weights sum to the rows, or 1)."""
    rows = design.row_number - 1
    ones = np.ones(len(rows))
    if case.weights == "frequency":
        fw = df["fw"].to_numpy(dtype=float)[rows]
        return fw, fw
    if case.weights == "survey":
        sw = df["sw"].to_numpy(dtype=float)[rows]
        return ones, sw * len(rows) / sw.sum()
    return ones, ones


def model(case: Case):
    """(spec, frame, formula, keywords, the offset of each data row) or None where the
    combination is not a model (hypothesis skips it)."""
    df = frame(case.seed)
    # the beta-binomial needs rows of several trials
    response = "s | trials(n)" if case.trials or case.family == "beta_binomial" else "y"
    rhs = f"{case.fixed} + {GROUPS[case.groups]}"
    kw: dict = {"pooling": case.pooling, "link": case.link, "standardize": case.standardize,
                "parameterization": "noncentered", "family": case.family}
    if case.weights != "none":
        kw["weights"] = "fw" if case.weights == "frequency" else "sw"
        kw["weights_kind"] = case.weights
    offset = np.zeros(len(df))
    if case.offset == "formula":
        rhs += " + offset(o)"
        offset = df["o"].to_numpy()
    elif case.offset == "expression":
        kw["offset"] = "o"
        offset = df["o"].to_numpy()
    elif case.offset == "array":
        kw["offset"] = offset = np.linspace(-0.8, 0.8, len(df))
    formula = f"{response} ~ {rhs}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)  # few levels, separation: not our concern
        try:
            spec = build_model(formula, df, **kw)
        except SpecError:
            return None
    return spec, df, formula, kw, offset


def posterior(spec, seed: int) -> xr.Dataset:
    """Original-scale draws: random points of the engine's parameter space through its own
    transform (sds positive, correlation matrices valid, totals = mean + deviation)."""
    packed = pack(spec)
    rng = np.random.default_rng(seed)
    xs = rng.normal(0.0, 0.6, (CHAINS * DRAWS, packed.dim))
    out = np.empty((CHAINS * DRAWS, packed.n_expanded))
    for i, x in enumerate(xs):
        D.expand(x, out[i], packed.ib, packed.fb)
    data, o = {}, 0
    for v in packed.variables:
        vals = out[:, o:o + v.size].reshape((CHAINS, DRAWS) + ((v.size,) if v.dims else ()))
        data[v.name] = (("chain", "draw", *v.dims), vals)
        o += v.size
    coords = {"chain": np.arange(CHAINS), "draw": np.arange(DRAWS)}
    coords.update({k: np.asarray(vals, dtype=object) for k, vals in packed.coords.items()})
    return to_original_scale(spec, xr.Dataset(data, coords=coords))


@contextmanager
def drawn(post: xr.Dataset):
    """sample_spec with these draws instead of NUTS (the Fit a user gets, without sampling)."""
    def run_nuts(packed, config):
        stats_ = xr.Dataset({"diverging": (("chain", "draw"), np.zeros((CHAINS, DRAWS), bool))},
                            coords={"chain": np.arange(CHAINS), "draw": np.arange(DRAWS)})
        return xr.DataTree.from_dict({"posterior": post, "sample_stats": stats_}), 0.0

    with mock.patch("poolwise.inference.sampling.run_nuts", run_nuts), \
            mock.patch("poolwise.inference.sampling.to_original_scale", lambda spec, p: p):
        yield


def fit_of(spec, post):
    from poolwise.inference.sampling import sample_spec

    with drawn(post), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sample_spec(spec, SamplerConfig(chains=CHAINS, draws=DRAWS, tune=1, seed=1))


# ---- the direct computation --------------------------------------------------------------------


def flat(post: xr.Dataset, name: str) -> np.ndarray:
    v = post[name].values
    return v.reshape((-1,) + v.shape[2:])


def row_eta(spec, post, offset: np.ndarray, *, skip: dict | None = None) -> np.ndarray:
    """eta of every data row (S, rows), as the model defines it; ``skip``: {term index: mask of
    rows} whose effect of that term is left out (a new level)."""
    d = spec.design
    rows = d.row_cell
    beta = {c: flat(post, fixed_name(c)) for c in d.fixed_names}
    eta = np.zeros((CHAINS * DRAWS, len(rows)))
    for k, c in enumerate(d.fixed_names):
        eta += beta[c][:, None] * d.X[rows, k][None, :]
    eta += offset[d.row_number - 1][None, :]
    for t, term in enumerate(spec.terms):
        g = term.group
        level = g.codes[rows]
        for c, coef in enumerate(g.coef_names):
            total = flat(post, total_name(term, coef))[:, level]
            mi = term.mu_index[c]
            dev = total - (beta[d.fixed_names[mi]][:, None] if mi >= 0 else 0.0)
            contrib = dev * g.Z[rows, c][None, :]
            if skip is not None and t in skip:
                contrib[:, skip[t]] = 0.0
            eta += contrib
    return eta


def log_p_q(link: str, eta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if link == "logit":
        return log_expit(eta), log_expit(-eta)
    if link == "probit":
        return log_ndtr(eta), log_ndtr(-eta)
    mu = np.exp(eta)
    with np.errstate(divide="ignore"):
        return np.log(-np.expm1(-mu)), -mu


def row_loglik(link: str, y: np.ndarray, n: np.ndarray, eta: np.ndarray,
               phi: np.ndarray | float | None = None) -> np.ndarray:
    """Each row's log-likelihood: the binomial, or with ``phi`` (per draw: broadcast on the
    first axis) SciPy's beta-binomial with mean p and precision phi."""
    if phi is not None:
        p, q = inverse(link, eta), inverse(link, eta, upper=True)  # q without 1 - p
        # the kernel's documented floor (engine.density.beta_binomial_loglik): p and q below
        # 1e-300 count as 1e-300, so that a probability that rounds to 0 stays finite
        p, q = np.maximum(p, 1e-300), np.maximum(q, 1e-300)
        phi = np.asarray(phi, dtype=float)
        phi = phi.reshape(phi.shape + (1,) * (np.ndim(eta) - phi.ndim)) if phi.ndim else phi
        with np.errstate(all="ignore"):  # SciPy's pmf where p rounds to 0 or 1: NaN
            return stats.betabinom.logpmf(y, n, p * phi, q * phi)
    lp, lq = log_p_q(link, eta)
    const = gammaln(n + 1) - gammaln(y + 1) - gammaln(n - y + 1)
    return const + np.where(y > 0, y * lp, 0.0) + np.where(n - y > 0, (n - y) * lq, 0.0)


def phi_of(spec, post) -> np.ndarray | None:
    """The beta-binomial's precision per draw (S,), or None for the binomial."""
    return flat(post, "phi") if spec.family == "beta_binomial" else None


def inverse(link: str, eta: np.ndarray, *, upper: bool = False) -> np.ndarray:
    """p, or with ``upper`` 1 - p computed directly (no cancellation where p is near 1)."""
    if upper:
        return {"logit": lambda e: expit(-e), "probit": lambda e: ndtr(-e),
                "cloglog": lambda e: np.exp(-np.exp(e))}[link](eta)
    return {"logit": expit, "probit": ndtr,
            "cloglog": lambda e: -np.expm1(-np.exp(e))}[link](eta)


def new_level_prior(spec, post, term, s: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of a new level's coefficients in draw ``s``: the population
    N(0, Sigma) for partial pooling; for no pooling the fixed prior normal(0, sd), which applies
    on the engine's scale (the intercept at the predictors' means, a slope per SD of x)."""
    g = term.group
    C = g.n_coefs
    if term.estimated:
        sds = np.array([flat(post, sd_name(term, c))[s] for c in g.coef_names])
        R = np.eye(C)
        if term.correlated:
            for i in range(1, C):
                for j in range(i):
                    R[i, j] = R[j, i] = flat(post, cor_name(term, g.coef_names[j],
                                                        g.coef_names[i]))[s]
        return np.zeros(C), R * np.outer(sds, sds)
    d = spec.design
    zs = np.ones(C) if g.z_scale is None else g.z_scale
    mean = np.zeros(C)
    if "Intercept" in g.coef_names:
        shift = sum(flat(post, fixed_name(c))[s] * d.x_center[k]
                    for k, c in enumerate(d.fixed_names))
        mean[g.coef_names.index("Intercept")] = -shift
    return mean, np.diag((np.asarray(term.sd_fixed) / zs) ** 2)


def log_integral(log_f, mean: np.ndarray, cov: np.ndarray, points: int) -> float:
    """``log int exp(log_f(v)) N(v | mean, cov) dv`` by a dense grid: first over +-10 prior
    SDs, then again over the box where the integrand is within e^-40 of its peak (data make it
    far narrower than the prior), ``points`` nodes a side each time. ``log_f`` takes nodes
    (P, C) and returns (P,)."""
    prior = stats.multivariate_normal(mean, cov)
    sd = np.sqrt(np.diag(cov))
    lo, hi = mean - 10 * sd, mean + 10 * sd
    for _ in range(2):
        axes = [np.linspace(a, b, points) for a, b in zip(lo, hi, strict=True)]
        V = np.stack([a.ravel() for a in np.meshgrid(*axes, indexing="ij")], axis=1)
        lf = log_f(V) + prior.logpdf(V).reshape(len(V))
        lf = np.where(np.isnan(lf), -np.inf, lf)  # SciPy's pmf where p rounds to 0 or 1
        keep = V[lf > lf.max() - 40.0]
        step = np.array([a[1] - a[0] for a in axes])
        lo, hi = keep.min(axis=0) - 2 * step, keep.max(axis=0) + 2 * step
    return float(logsumexp(lf) + np.log(np.prod(step)))


def direct_new_group(spec_fit, post, scoring, offset, j: int, s: int, link: str,
                     count: np.ndarray) -> float:
    """log p(rows of level j of 'g' | theta_s) with the level's effects (and those of the levels
    of 'g:k' nested in it) integrated over a dense grid, from the rows (``count``: the rows each
    data row stands for, its frequency weight)."""
    d = scoring.design
    gs = d.groups[0]  # the term 'g' of the scoring model
    rows = gs.codes[d.row_cell] == j
    c = count[rows]
    fit_terms = [t.name for t in spec_fit.terms]
    skip = {t: np.ones(len(rows), bool) for t, name in enumerate(fit_terms)
            if name in ("g", "g:k")}
    eta0 = row_eta(spec_fit, post, offset, skip=skip)[s, rows]
    y, n = d.row_y[rows], d.row_n[rows]
    phi = None if phi_of(spec_fit, post) is None else float(phi_of(spec_fit, post)[s])
    if "g" not in fit_terms:
        return float((row_loglik(link, y, n, eta0, phi) * c).sum())
    term = spec_fit.terms[fit_terms.index("g")]
    Z = term.group.Z[spec_fit.design.row_cell[rows]]
    mean, cov = new_level_prior(spec_fit, post, term, s)
    if "g:k" not in fit_terms:
        def log_f(V):
            return (row_loglik(link, y, n, eta0[None, :] + V @ Z.T, phi) * c).sum(axis=1)

        return log_integral(log_f, mean, cov, 801 if len(mean) == 1 else 161)
    inner = spec_fit.terms[fit_terms.index("g:k")]
    im, icov = new_level_prior(spec_fit, post, inner, s)
    sub = inner.group.codes[spec_fit.design.row_cell[rows]]

    def log_f_outer(V):
        out = np.zeros(len(V))
        for i, v in enumerate(V):
            eta = eta0 + Z @ v
            for k in np.unique(sub):
                m = sub == k
                out[i] += log_integral(lambda W, m=m, eta=eta: (row_loglik(
                    link, y[m], n[m], eta[m][None, :] + W[:, :1], phi) * c[m]).sum(axis=1),
                    im, icov, 101)
        return out

    return log_integral(log_f_outer, mean, cov, 101)


# ---- the suite ---------------------------------------------------------------------------------

SETTINGS = settings(max_examples=14, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def check_case(case: Case) -> None:
    from hypothesis import assume

    built = model(case)
    assume(built is not None)
    spec, df, formula, kw, offset = built
    post = posterior(spec, case.seed)
    fit = fit_of(spec, post)
    d = spec.design
    link = case.link
    eta = row_eta(spec, post, offset)
    phi = phi_of(spec, post)
    ll_rows = row_loglik(link, d.row_y, d.row_n, eta, phi)  # (S, rows)
    count, weight = row_weights(case, df, d)  # rows each stands for; weight in a total
    represented = np.repeat(np.arange(len(count)), count.astype(int))  # each row, w times

    # the stored per-pattern log-likelihood, seen per row represented, and the total
    from poolwise.model.likelihood import pattern_log_likelihood, total_log_likelihood

    stored = fit.row_level()["log_likelihood"]["y"].values.reshape(CHAINS * DRAWS, -1)
    if phi is not None:  # where p rounds to 0 or 1, SciPy's beta-binomial has no value
        assert np.isfinite(stored).all()
        ll_rows = np.where(np.isnan(ll_rows), stored[:, np.searchsorted(represented,
                                                                        np.arange(len(count)))],
                           ll_rows)
    np.testing.assert_allclose(stored, ll_rows[:, represented], rtol=1e-9, atol=1e-9)
    again = pattern_log_likelihood(spec, fit.posterior).reshape(CHAINS * DRAWS, -1)
    np.testing.assert_allclose(again, fit.idata["log_likelihood"]["y"].values.reshape(
        CHAINS * DRAWS, -1), rtol=1e-12, atol=1e-12)
    ll_total = (ll_rows * weight[None, :]).sum(axis=1)
    np.testing.assert_allclose(total_log_likelihood(spec, fit.posterior).ravel(),
                               ll_total, rtol=1e-9, atol=1e-8)
    # the same total from the stored log_likelihood group (what the prior sensitivity reads)
    group = fit.idata["log_likelihood"].to_dataset()
    assert group.attrs["poolwise_unit"] == PATTERN_DIM and group["y"].dtype == np.float64
    np.testing.assert_allclose(total_log_likelihood(spec, fit.posterior, group).ravel(),
                               ll_total, rtol=1e-9, atol=1e-8)

    # row-level PSIS-LOO against ArviZ on the direct values of the rows represented; survey
    # weights: refused, with the reason
    import arviz_stats as azs

    from poolwise.comparison.loo import row_loo

    tree = xr.DataTree.from_dict({
        "posterior": fit.idata["posterior"].to_dataset(),
        "log_likelihood": xr.Dataset({"y": (("chain", "draw", "obs"),
                                            ll_rows[:, represented].reshape(CHAINS, DRAWS, -1))}),
    })
    if case.weights == "survey":
        with pytest.raises(SpecError, match="not computed under survey weights"):
            row_loo(fit)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            want = azs.loo(tree, pointwise=True)
            got = row_loo(fit)
        np.testing.assert_allclose([got.elpd, got.p, got.se], [want.elpd, want.p, want.se],
                                   rtol=1e-8, atol=1e-8)  # NaN in both where a row's is -inf
        np.testing.assert_allclose(got.pareto_k.values, want.pareto_k.values, rtol=1e-6,
                                   atol=1e-6)

    # the likelihood side of the prior sensitivity check
    from poolwise.inference.diagnostics import prior_sensitivity

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sens = prior_sensitivity(fit.idata, spec)
        for name, (_, lsens) in sens.items():
            x = fit.posterior[name].transpose("chain", "draw").values
            sub = xr.DataTree.from_dict({
                "posterior": xr.Dataset({name: (("chain", "draw"), x)}),
                "log_likelihood": xr.Dataset({"y": (("chain", "draw"),
                                                    ll_total.reshape(CHAINS, DRAWS))}),
                "log_prior": xr.Dataset({name: (("chain", "draw"), np.zeros_like(x))}),
            })
            ref = float(azs.psense(sub, var_names=[name], group="likelihood")[name])
            assert lsens == pytest.approx(ref, rel=1e-9, abs=1e-9), name

    # predictions for the data's own rows, and for a new level of g
    from poolwise.comparison.predict import predict_draws

    new = df.iloc[d.row_number - 1].reset_index(drop=True)
    off = None if case.offset != "array" else offset[d.row_number - 1]
    p, _ = predict_draws(fit, new, offset=off)
    np.testing.assert_allclose(p, inverse(link, eta), rtol=1e-9, atol=1e-12)
    if any(t.name == "g" for t in spec.terms):
        unseen = new.assign(g="zz", k="zz")
        t_g = [t.name for t in spec.terms].index("g")
        skip = {t_g: np.ones(len(new), bool)}
        if "g:k" in [t.name for t in spec.terms]:
            skip[[t.name for t in spec.terms].index("g:k")] = np.ones(len(new), bool)
        if spec.terms[t_g].estimated:
            p_new, info = predict_draws(fit, unseen, offset=off, new_groups="population")
            assert set(info["g_status"]) == {"new"}
            np.testing.assert_allclose(p_new, inverse(link, row_eta(spec, post, offset,
                                                                     skip=skip)),
                                       rtol=1e-9, atol=1e-12)
        else:
            with pytest.raises(SpecError, match="no population"):
                predict_draws(fit, unseen, offset=off, new_groups="population")

    # effects on the outcome scale and poststratification, averaged over the data's rows
    from poolwise.comparison.effects import comparisons, predictions
    from poolwise.comparison.poststratify import poststratify

    p_avg = predictions(fit, new, by=True, offset=off)
    np.testing.assert_allclose(p_avg.loc[0, "estimate"], inverse(link, eta).mean(),
                               rtol=1e-9)
    delta = np.zeros_like(eta)  # what x + 1 adds to each row's eta, written out
    if "x" in d.fixed_names:
        delta += flat(post, fixed_name("x"))[:, None]
    for term in spec.terms:
        if "x" in term.group.coef_names:
            level = term.group.codes[d.row_cell]
            dev = flat(post, total_name(term, "x"))[:, level]
            mi = term.mu_index[term.group.coef_names.index("x")]
            delta += dev - (flat(post, fixed_name("x"))[:, None] if mi >= 0 else 0.0)
    if "x" in spec.formula.predictors:
        c = comparisons(fit, "x", new, offset=off)
        want = (inverse(link, eta + delta) - inverse(link, eta)).mean(axis=1)
        assert c.loc[0, "contrast"] == "+1"
        np.testing.assert_allclose(c.loc[0, "estimate"], want.mean(), rtol=1e-8, atol=1e-12)
    counts = np.arange(1, len(new) + 1, dtype=float)
    post_strat = poststratify(fit, new.assign(N=counts), draws=CHAINS * DRAWS, offset=off)
    np.testing.assert_allclose(post_strat.iloc[-1]["estimate"],
                               (inverse(link, eta) * counts).sum(axis=1).mean() / counts.sum(),
                               rtol=1e-9)

    # leave-one-group-out: each level of g as a new group, for this fit, scored on the
    # partial-pooling model of the same data; and the model an exact refit samples
    from poolwise.comparison.logo import group_log_lik
    from poolwise.model.subset import without_levels

    if case.pooling == "partial":
        scoring = spec
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DataWarning)
            scoring = build_model(formula, df, **{**kw, "pooling": "partial"})
    if case.weights == "survey":
        with pytest.raises(SpecError, match="not computed under survey weights"):
            group_log_lik(fit, scoring, group="g")
    else:
        got = group_log_lik(fit, scoring, group="g")
        # the quadrature's documented accuracy (poolwise.model.quadrature): 2e-5 for a
        # varying intercept, 1e-4 with nested levels inside it, 5e-3 with a slope (the Monte
        # Carlo error of an elpd_j is 1e-2 or more)
        nested = "g:k" in [t.name for t in spec.terms]
        tol = 5e-3 if scoring.design.groups[0].n_coefs > 1 else 1e-4 if nested else 2e-5
        # (frequency weights: each row's log-likelihood counted w times; survey: refused)
        for s in (0, CHAINS * DRAWS - 1):
            for j in range(scoring.design.groups[0].n_levels):
                want = direct_new_group(spec, post, scoring, offset, j, s, link, count)
                assert got[s, j] == pytest.approx(want, abs=tol), (s, j)
    if spec.terms:  # the model an exact refit without level "b" samples: those rows gone
        sub = without_levels(spec, "g", [list(spec.terms[0].group.labels).index("b")])
        keep = df["g"].to_numpy()[d.row_number - 1] != "b"
        sd_ = sub.design
        assert sd_.n_rows == count[keep].sum() and "b" not in list(sd_.groups[0].labels)
        np.testing.assert_array_equal(sd_.row_y, d.row_y[keep])
        np.testing.assert_array_equal(sd_.row_number, d.row_number[keep])
        np.testing.assert_array_equal(sd_.X[sd_.row_cell], d.X[d.row_cell[keep]])
        if d.offset is not None:
            np.testing.assert_array_equal(sd_.offset[sd_.row_cell],
                                          offset[d.row_number[keep] - 1])
        for g_full, g_sub in zip(d.groups, sd_.groups, strict=True):
            np.testing.assert_array_equal(g_sub.labels[g_sub.codes[sd_.row_cell]],
                                          g_full.labels[g_full.codes[d.row_cell[keep]]])
            np.testing.assert_array_equal(g_sub.Z[sd_.row_cell], g_full.Z[d.row_cell[keep]])

    # prior predictive proportions from the prior draws, and posterior predictive replicates
    from poolwise.model.predictive import replicated_successes
    from poolwise.model.prior_predictive import prior_predictive, sample_prior_parameters

    pp = prior_predictive(spec, draws=30, seed=case.seed)
    beta, devs = sample_prior_parameters(spec, np.random.default_rng(case.seed), 30)
    rows = d.row_cell
    eta_pp = beta @ d.X_engine[rows].T + offset[d.row_number - 1][None, :]
    for term, dev in zip(spec.terms, devs, strict=True):
        g = term.group
        eta_pp += np.einsum("src,rc->sr", dev[:, g.codes[rows], :], g.Z_engine[rows])
    with np.errstate(over="ignore"):
        p_pp = inverse(link, eta_pp)
    col = 0
    for term in spec.terms:
        level = term.group.codes[rows]
        for j in range(term.group.n_levels):
            m = level == j
            nw = d.row_n[m] * count[m]  # the trials of the rows represented
            want = (p_pp[:, m] * nw).sum(axis=1) / nw.sum()
            np.testing.assert_allclose(pp.proportions[:, col + j], want, rtol=1e-9, atol=1e-12)
        col += term.group.n_levels
    first = np.array([np.flatnonzero(rows == c)[0] for c in range(d.n_cells)])
    rep = replicated_successes(spec, fit.posterior, np.random.default_rng(5))
    rng = np.random.default_rng(5)
    if phi is None:  # a binomial draw per cell
        want = rng.binomial(d.n.astype(np.int64), inverse(link, eta[:, first]))
    else:  # per data row a probability from Beta(p phi, (1 - p) phi), then its binomial draw
        from poolwise.data.patterns import row_patterns

        pat = row_patterns(d)
        r = np.repeat(np.arange(pat.n_patterns), pat.count)
        pr = inverse(link, eta[:, first])[:, pat.cell[r]]
        pi = rng.beta(np.maximum(pr * phi[:, None], 1e-300),
                      np.maximum((1 - pr) * phi[:, None], 1e-300))
        y = rng.binomial(pat.n[r].astype(np.int64), pi)
        want = np.stack([np.bincount(pat.cell[r], weights=ys, minlength=d.n_cells)
                         for ys in y]).astype(np.int64)
    np.testing.assert_array_equal(rep, want)


#: always in the default tier, whatever hypothesis draws: each weighting with each family
EXAMPLES = (
    Case("logit", "formula", True, "x", "slope", "partial", True, 3, "beta_binomial", "survey"),
    Case("probit", "array", True, "x + f", "nested", "partial", False, 5, "beta_binomial"),
    Case("cloglog", "expression", False, "x", "crossed", "partial", True, 8, "binomial",
         "frequency"),
)


def with_examples(test):
    for case in EXAMPLES:
        test = example(case=case)(test)
    return test


@SETTINGS
@with_examples
@given(case=cases)
def test_every_path_equals_the_direct_computation(case):
    check_case(case)


@pytest.mark.slow
@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(case=cases)
def test_every_path_equals_the_direct_computation_on_many_models(case):
    check_case(case)


# ---- the engine's density and the model layer's likelihood --------------------------------------


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@with_examples
@given(case=cases)
def test_the_engine_density_adds_the_model_layers_log_likelihood(case):
    """At random points x of the engine's parameter space, the compiled log density minus its
    value on the same model with no data (every cell 0 of 0 trials) equals
    :func:`poolwise.model.likelihood.total_log_likelihood` of the natural draws at x: the
    sampler and every quantity computed from its draws use one likelihood."""
    from dataclasses import replace

    from hypothesis import assume

    from poolwise.model.likelihood import total_log_likelihood

    built = model(case)
    assume(built is not None)
    spec = built[0]
    d = spec.design
    empty = replace(spec, design=replace(
        d, y=np.zeros_like(d.y), n=np.zeros_like(d.n), row_y=np.zeros_like(d.row_y),
        row_n=np.zeros_like(d.row_n), log_binom_const=0.0))  # the beta-binomial's rows too
    full, none = pack(spec), pack(empty)
    post = posterior(spec, case.seed)
    rng = np.random.default_rng(case.seed)
    xs = rng.normal(0.0, 0.6, (CHAINS * DRAWS, full.dim))  # the points posterior() used
    ll = total_log_likelihood(spec, post).ravel()
    grad = np.empty(full.dim)
    for i in (0, 7, CHAINS * DRAWS - 1):
        diff = (D.logp_grad(xs[i], grad, full.ib, full.fb)
                - D.logp_grad(xs[i], grad, none.ib, none.fb))
        assert diff == pytest.approx(ll[i], rel=1e-9, abs=1e-7)
