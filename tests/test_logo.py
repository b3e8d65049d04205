"""Leave-one-group-out (issue 13, item 13): the quadrature, exact LOGO against hand
computations, PSIS-LOGO against exact refits within Monte Carlo error, and the hooks in
compare_pooling, the narrative and the CLI."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import integrate, stats
from scipy.special import expit, logsumexp

import poolwise
from poolwise.comparison import logo
from poolwise.comparison.logo import logo_compare
from poolwise.comparison.pooling import POOLINGS
from poolwise.model import links
from poolwise.model.likelihood import CellLikelihood
from poolwise.model.quadrature import NewLevelPrior, new_level_log_density


def _fits(formula: str, df: pd.DataFrame, **kw) -> dict:
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for p in POOLINGS:
            out[p] = poolwise.fit(formula, df, pooling=p, seed=3, tune=500, draws=1000, **kw)
    return out


@pytest.mark.parametrize("link", ["logit", "probit", "cloglog"])
def test_new_group_integral_matches_dense_quadrature(link):
    rng = np.random.default_rng(0)
    S, C = 3, 7
    eta0 = rng.normal(0.0, 1.0, (S, C))
    n = rng.integers(1, 60, C).astype(float)
    y = np.minimum(np.floor(rng.uniform(0, 1, C) * (n + 1)), n)
    bounds = [0, 3, 4, 7]
    tau = np.array([0.05, 0.8, 3.0])
    prior = NewLevelPrior.of(np.zeros((S, 1)), tau[:, None, None])
    got = new_level_log_density(CellLikelihood(link), eta0, y, n, np.ones((C, 1)),
                                np.array(bounds[:-1]), prior)
    L = links.get(link)
    for s in range(S):
        grid = np.linspace(-12 * tau[s] - 10, 12 * tau[s] + 10, 400_001)
        for j in range(3):
            sl = slice(bounds[j], bounds[j + 1])
            lp, lq = L.log_p_q(eta0[s, sl][None, :] + grid[:, None])
            lf = (y[sl] * lp + (n[sl] - y[sl]) * lq).sum(axis=1)
            lf = lf + stats.norm.logpdf(grid, 0.0, tau[s])
            m = lf.max()
            ref = m + np.log(integrate.trapezoid(np.exp(lf - m), grid))
            assert got[s, j] == pytest.approx(ref, abs=1e-5)


# ---- exact LOGO on a tiny data set, by hand ---------------------------------------------------

TINY = pd.DataFrame({"g": ["a", "b", "c"], "s": [3, 9, 5], "n": [10, 12, 15]})


@pytest.fixture(scope="module")
def tiny():
    fits = _fits("s | trials(n) ~ 1 + (1 | g)", TINY)
    return fits, logo_compare(fits)


def _binom(y, n, p):
    return stats.binom.logpmf(y, n, p)


def test_exact_logo_complete_pooling_by_hand(tiny):
    """Complete pooling: p(y_j | y_-j) = int Binom(y_j | a) p(a | y_-j) da, by quadrature over
    the intercept with its normal(0, 1.5) prior; the refit's estimate must agree within 4 MCSE."""
    _, lg = tiny
    assert lg.exact and set(lg.method["complete"]) == {"refit"}
    a = np.linspace(-10, 10, 20_001)
    for j, lab in enumerate(TINY["g"]):
        rest = TINY.drop(index=j)
        lpost = stats.norm.logpdf(a, 0, 1.5) + sum(
            _binom(r.s, r.n, expit(a)) for r in rest.itertuples())
        post = np.exp(lpost - lpost.max())
        post /= integrate.trapezoid(post, a)
        want = np.log(integrate.trapezoid(post * np.exp(_binom(TINY.s[j], TINY.n[j], expit(a))), a))
        got, se = lg.pointwise.loc[lab, "complete"], lg.mcse.loc[lab, "complete"]
        assert 0 < se < 0.05
        assert abs(got - want) < 4 * se, (lab, got, want, se)


def test_no_pooling_new_group_is_its_prior_predictive(tiny):
    """No pooling, intercept only: a new group's prediction does not depend on the other
    groups; exact, without a refit."""
    _, lg = tiny
    assert set(lg.method["none"]) == {"exact"}
    u = np.linspace(-12, 12, 40_001)
    for j, lab in enumerate(TINY["g"]):
        f = np.exp(_binom(TINY.s[j], TINY.n[j], expit(u)) + stats.norm.logpdf(u, 0, 1.5))
        assert lg.pointwise.loc[lab, "none"] == pytest.approx(
            np.log(integrate.trapezoid(f, u)), abs=1e-6)


@pytest.mark.slow  # exact refits: about 15-20 s each on 2 cores
def test_exact_logo_partial_pooling_by_hand(tiny):
    """Partial pooling: p(y_j | y_-j) = int int p(y_j | a_bar, sigma) p(a_bar, sigma | y_-j),
    each group's intercept integrated over N(a_bar, sigma); a grid over (a_bar, sigma) with
    the default priors normal(0, 1.5) and exponential(1)."""
    _, lg = tiny
    abar = np.linspace(-5, 5, 201)
    sig = np.linspace(1e-3, 6, 240)
    z = np.linspace(-8, 8, 321)  # u = sigma z
    wz = stats.norm.pdf(z) * (z[1] - z[0])
    A, SG = np.meshgrid(abar, sig, indexing="ij")

    def integrated(y, n):
        eta = A[..., None] + SG[..., None] * z
        return logsumexp(_binom(y, n, expit(eta)) + np.log(wz), axis=-1)

    lint = [integrated(r.s, r.n) for r in TINY.itertuples()]
    lprior = stats.norm.logpdf(A, 0, 1.5) + stats.expon.logpdf(SG)
    for j, lab in enumerate(TINY["g"]):
        lpost = lprior + sum(lint[k] for k in range(3) if k != j)
        want = logsumexp(lpost + lint[j]) - logsumexp(lpost)
        got, se = lg.pointwise.loc[lab, "partial"], lg.mcse.loc[lab, "partial"]
        assert abs(got - want) < 4 * se + 2e-3, (lab, got, want, se)


# ---- PSIS-LOGO against exact refits -----------------------------------------------------------


@pytest.fixture(scope="module")
def eight():
    rng = np.random.default_rng(2)
    G = 8
    g = np.repeat(np.arange(G), 15)
    a = rng.normal(0, 0.7, G)
    x = rng.normal(0, 1, len(g))
    y = rng.binomial(1, expit(-0.2 + a[g] + 0.5 * x))
    return _fits("y ~ x + (1 | g)", pd.DataFrame({"y": y, "g": g, "x": x}))


@pytest.mark.slow  # exact refits: about 15-20 s each on 2 cores
def test_psis_logo_agrees_with_exact_refits(eight):
    """Every model here has shared parameters (the coefficient of x), so every group goes
    through PSIS and through a refit; they agree within 4 combined Monte Carlo SEs."""
    approx = logo_compare(eight, exact=False)
    exact = logo_compare(eight, exact=True)
    assert not approx.exact and (approx.method == "psis").all().all()
    assert (exact.method == "refit").all().all()
    assert float(approx.pareto_k.max().max()) < 0.7
    diff = (approx.pointwise - exact.pointwise).abs()
    tol = 4 * np.sqrt(approx.mcse**2 + exact.mcse**2)
    assert (approx.mcse > 0).all().all() and (tol < 0.5).all().all()
    assert (diff < tol).all().all(), pd.concat({"diff": diff, "tol": tol}, axis=1)
    # the ranking and the totals agree too
    for m in POOLINGS:
        assert approx.table.loc[m, "elpd"] == pytest.approx(exact.table.loc[m, "elpd"], abs=0.5)


def test_bad_pareto_k_groups_are_refitted(eight, monkeypatch):
    monkeypatch.setattr(logo, "K_THRESHOLD", -1.0)  # every group counts as bad
    lg = logo_compare(eight, exact=False, max_refits=2)
    for m in POOLINGS:
        assert (lg.method[m] == "refit").sum() == 2
        # the two refitted are those with the largest k; the rest stay flagged
        k = lg.pareto_k[m]
        assert set(k.nlargest(2).index) == set(lg.method.index[lg.method[m] == "refit"])
        assert lg.table.loc[m, "n_bad_k"] == 6 and lg.table.loc[m, "n_refit"] == 2
    assert any("Pareto k" in n for n in lg.notes)
    # without refits (a report of saved fits does not sample): PSIS only, all still flagged
    lg = logo_compare(eight, refit=False)
    assert not lg.exact and (lg.method == "psis").all().all()
    assert (lg.table["n_bad_k"] == 8).all() and (lg.table["n_refit"] == 0).all()


@pytest.mark.slow  # exact refits: about 15-20 s each on 2 cores
def test_compare_pooling_reports_logo_with_its_unit(eight, capsys):
    comp = poolwise.compare_fits(eight)
    assert comp.logo is not None and comp.logo.exact
    para = [p for p in comp.narrative if "leave-one-group-out" in p][0]
    best = comp.logo.table.index[0]
    assert f"elpd {comp.logo.table.loc[best, 'elpd']:.1f}" in para
    assert "for predicting a new g" in para and "different question" not in para


@pytest.mark.parametrize("link", ["logit", "probit", "cloglog"])
@pytest.mark.parametrize("compiled", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_a_new_level_with_a_correlated_slope_matches_a_dense_grid(link, compiled):
    """Two varying coefficients: the adaptive Gauss-Hermite grid against a dense 2-d grid of
    the same integrand, summed by numpy and by the compiled kernel leave-one-group-out calls
    (which compiles once per install: the slow tier)."""
    from scipy.stats import multivariate_normal

    from poolwise.model.likelihood import binomial_log_lik

    rng = np.random.default_rng(0)
    S, N = 3, 9
    eta0 = rng.normal(0, 1, (S, N))
    n = rng.integers(1, 40, N).astype(float)
    y = np.minimum(np.floor(rng.uniform(0, 1, N) * (n + 1)), n)
    Z = np.column_stack([np.ones(N), rng.normal(0, 1, N)])
    mean = rng.normal(0, 0.3, (S, 2))
    sds, r = np.array([[0.5, 0.3], [1.5, 0.8], [0.1, 2.0]]), np.array([0.3, -0.6, 0.0])
    cov = np.stack([[[a * a, c * a * b], [c * a * b, b * b]]
                    for (a, b), c in zip(sds, r, strict=True)])
    got = new_level_log_density(CellLikelihood(link), eta0, y, n, Z, np.array([0, 4]),
                                NewLevelPrior.of(mean, np.linalg.cholesky(cov)),
                                compiled=compiled)
    for s in range(S):
        g = [np.linspace(mean[s, c] - 9 * sds[s, c], mean[s, c] + 9 * sds[s, c], 801)
             for c in range(2)]
        V = np.stack([a.ravel() for a in np.meshgrid(*g, indexing="ij")], 1)
        lp = multivariate_normal(mean[s], cov[s]).logpdf(V)
        for j, sl in enumerate([slice(0, 4), slice(4, N)]):
            ll = binomial_log_lik(link, y[sl], n[sl], eta0[s, sl][None, :] + V @ Z[sl].T)
            ref = logsumexp(ll.sum(1) + lp) + np.log((g[0][1] - g[0][0]) * (g[1][1] - g[1][0]))
            assert got[s, j] == pytest.approx(ref, abs=1e-6)


@pytest.mark.parametrize("link", ["logit", "probit"])
def test_nested_levels_are_integrated_inside_their_owner(link):
    """A left-out level holding two nested levels (and two cells of its own): nested adaptive
    quadrature against a dense grid over the outer and both nested effects."""
    from scipy.stats import norm

    from poolwise.model.likelihood import binomial_log_lik

    rng = np.random.default_rng(3)
    S, N = 2, 7
    own = np.array([False, False, True, True, True, True, True])
    eta0 = rng.normal(0, 0.5, (S, N))
    n = rng.integers(2, 25, N).astype(float)
    y = np.minimum(np.floor(rng.uniform(0, 1, N) * (n + 1)), n)
    m, s, tau = np.array([[0.2], [-0.4]]), np.array([0.7, 1.3]), np.array([0.5, 1.1])
    outer = NewLevelPrior.of(m, s[:, None, None] * np.ones((S, 1, 1)))
    inner = NewLevelPrior.of(np.zeros((S, 1)), tau[:, None, None] * np.ones((S, 1, 1)))
    got = new_level_log_density(CellLikelihood(link), eta0, y, n, np.ones((N, 1)),
                                np.array([0]), outer,
                                (np.ones((N, 1)), np.array([2, 5]), np.array([0, 0]), inner, own))
    for k in range(S):
        gv = np.linspace(m[k, 0] - 10 * s[k], m[k, 0] + 10 * s[k], 1001)
        gw = np.linspace(-10 * tau[k], 10 * tau[k], 1001)
        tot = binomial_log_lik(link, y[:2], n[:2], eta0[k, :2][None, :] + gv[:, None]).sum(1)
        for sl in (slice(2, 5), slice(5, 7)):
            e = eta0[k, sl][None, None, :] + gv[:, None, None] + gw[None, :, None]
            ll = binomial_log_lik(link, y[sl], n[sl], e).sum(-1) + norm.logpdf(gw, 0, tau[k])
            tot = tot + logsumexp(ll, axis=1) + np.log(gw[1] - gw[0])
        ref = logsumexp(tot + norm.logpdf(gv, m[k, 0], s[k])) + np.log(gv[1] - gv[0])
        assert got[k, 0] == pytest.approx(ref, abs=1e-7)


def test_logo_covers_slopes_crossed_and_nested_terms(bangladesh):
    """Real fits with varying slopes and with a crossed term: PSIS-LOGO runs for every pooling
    and the chosen term, the other terms' levels stay as fitted (the values themselves are held
    to a direct computation in tests/test_consistency.py)."""
    from poolwise.errors import SpecError

    df = bangladesh[bangladesh["district"] <= 8]
    short = {"seed": 3, "tune": 150, "draws": 150, "chains": 2, "prior_sensitivity": False}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        slopes = {p: poolwise.fit("use.contraception ~ urban + (urban | district)", df,
                                  pooling=p, **short) for p in ("none", "partial")}
        lg = logo_compare(slopes, refit=False)
        assert lg.group == "district" and len(lg.pointwise) == 8
        assert np.isfinite(lg.pointwise.to_numpy()).all()
        crossed = {p: poolwise.fit("use.contraception ~ 1 + (1 | district) + (1 | urban)", df,
                                   pooling=p, **short) for p in ("none", "partial")}
        with pytest.raises(SpecError, match="choose one with group="):
            logo_compare(crossed, refit=False)
        by = logo_compare(crossed, group="district", refit=False)
        assert np.isfinite(by.pointwise.to_numpy()).all()


def test_cli_compare_states_the_unit_of_each_comparison(tmp_path, capsys):
    from poolwise.cli import main

    path = tmp_path / "tiny.csv"
    TINY.to_csv(path, index=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = main(["compare", str(path), "-f", "s | trials(n) ~ 1 + (1 | g)", "--seed", "2",
                     "--tune", "300", "--draws", "500", "--out", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert code == 0
    assert "PSIS-LOO, per row (a new observation in an existing g)" in out
    assert "leave-one-group-out, per new g (group; exact refits;" in out
    saved = pd.read_csv(tmp_path / "out" / "pooling_logo.csv", index_col=0)
    assert set(saved.index) == set(POOLINGS)
