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
from poolwise.comparison.logo import _integrated, logo_compare
from poolwise.comparison.pooling import POOLINGS
from poolwise.model import links


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
    got = _integrated(link, eta0, y, n, np.array(bounds[:-1]), tau)
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


def test_slopes_and_several_terms_are_out_of_scope(bangladesh):
    from poolwise.errors import SpecError
    from poolwise.model.spec import build_model

    df = bangladesh
    with pytest.raises(SpecError, match="varying intercept only.*slopes"):
        logo._only_term(build_model("use.contraception ~ urban + (urban | district)", df), None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # few levels of living.children: a DataWarning
        crossed = build_model(
            "use.contraception ~ 1 + (1 | district) + (1 | living.children)", df)
    with pytest.raises(SpecError, match="exactly one group term"):
        logo._only_term(crossed, None)


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
