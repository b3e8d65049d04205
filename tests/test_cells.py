"""Row patterns: per-pattern storage with counts keeps row-level quantities exact."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from scipy import stats

import poolwise
from poolwise.comparison.loo import row_loo
from poolwise.data.patterns import row_patterns
from poolwise.model.likelihood import total_log_likelihood
from poolwise.model.predictor import inverse_link, linear_predictor

KW = dict(chains=4, tune=200, draws=200, repair=False, parameterization="noncentered",
          prior_check=False)


@pytest.fixture(scope="module")
def bern_fit(bangladesh):
    df = bangladesh[bangladesh["district"].isin(range(4, 12))].reset_index(drop=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # short chains: only the algebra of the draws matters
        return poolwise.fit("use.contraception ~ 1 + urban + (1 | district)", df, seed=5, **KW)


@pytest.fixture(scope="module")
def binom_fit():
    rng = np.random.default_rng(3)
    g = np.repeat(list("abcdef"), 6)
    x = np.tile([0, 1, 0, 1, 0, 1], 6)
    n = np.tile([5, 5, 5, 5, 8, 8], 6)
    s = rng.binomial(n, 0.3 + 0.2 * x)
    s[:4] = [2, 2, 2, 3]  # identical rows, and two outcomes in one cell
    df = pd.DataFrame({"g": g, "x": x, "n": n, "s": s})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # short chains: only the algebra of the draws matters
        fit = poolwise.fit("s | trials(n) ~ 1 + x + (1 | g)", df, seed=8, **KW)
    return fit


def _arviz_row_loo(fit):
    import arviz_stats as azs

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return azs.loo(fit.row_level(), pointwise=True)


@pytest.mark.parametrize("which", ["bern_fit", "binom_fit"])
def test_pattern_loo_equals_arviz_on_rows(which, request):
    fit = request.getfixturevalue(which)
    pat = row_patterns(fit.spec.design)
    d = fit.spec.design
    assert pat.n_patterns < d.n_rows
    assert fit.idata["log_likelihood"]["y"].shape[-1] == pat.n_patterns
    ours = row_loo(fit)
    ref = _arviz_row_loo(fit)
    assert ref.n_data_points == ours.n_data_points == d.n_rows
    assert abs(ours.elpd - ref.elpd) < 1e-10
    assert abs(ours.se - ref.se) < 1e-10
    assert abs(ours.p - ref.p) < 1e-10
    np.testing.assert_allclose(ours.pareto_k.values, ref.pareto_k.values, rtol=0, atol=1e-10)
    np.testing.assert_allclose(ours.elpd_i.values, ref.elpd_i.values, rtol=0, atol=1e-10)
    np.testing.assert_array_equal(ours.pareto_k["obs"].values, d.row_number)


@pytest.mark.parametrize("which", ["bern_fit", "binom_fit"])
def test_patterns_reproduce_every_row(which, request):
    fit = request.getfixturevalue(which)
    d = fit.spec.design
    pat = row_patterns(d)
    obs = fit.idata["observed_data"]
    assert int(obs["count"].sum()) == d.n_rows
    # every row maps to a pattern with its own cell and outcome
    np.testing.assert_array_equal(pat.cell[pat.row_pattern], d.row_cell)
    np.testing.assert_array_equal(pat.y[pat.row_pattern], d.row_y)
    np.testing.assert_array_equal(pat.n[pat.row_pattern], d.row_n)
    # patterns are distinct
    keys = set(zip(pat.cell.tolist(), pat.y.tolist(), pat.n.tolist(), strict=True))
    assert len(keys) == pat.n_patterns
    # the expanded per-row log-likelihood is the binomial log pmf of each row (scipy)
    rows = fit.row_level()
    ll = rows["log_likelihood"]["y"].values
    assert ll.shape == (4, 200, d.n_rows)
    p = inverse_link(fit.spec.link, linear_predictor(fit.spec, fit.posterior)).reshape(4, 200, -1)
    expected = stats.binom.logpmf(d.row_y, d.row_n, p[:, :, d.row_cell])
    np.testing.assert_allclose(ll, expected, rtol=1e-10, atol=1e-10)
    np.testing.assert_array_equal(rows["observed_data"]["y"].values, d.row_y)
    np.testing.assert_array_equal(rows["observed_data"]["obs"].values, d.row_number)
    # the total over rows, from the cells
    np.testing.assert_allclose(total_log_likelihood(fit.spec, fit.posterior), ll.sum(axis=-1),
                               rtol=1e-12, atol=1e-8)


def test_bernoulli_patterns_are_cell_by_outcome(bern_fit):
    d = bern_fit.spec.design
    pat = row_patterns(d)
    # each cell has one pattern per outcome present in it
    per_cell = np.bincount(pat.cell, minlength=d.n_cells)
    present = (d.y > 0).astype(int) + (d.y < d.n).astype(int)
    np.testing.assert_array_equal(per_cell, present)
    np.testing.assert_array_equal(np.bincount(pat.cell, weights=pat.count * pat.y), d.y)


@pytest.mark.parametrize("link", ["logit", "probit", "cloglog"])
def test_pattern_log_likelihood_is_the_binomial_log_pmf(bern_fit, binom_fit, link):
    """The fused kernel (eta cell by cell, the link's log p / log q) against SciPy's binomial
    log pmf at the linear predictor, for every link; the total is the count-weighted sum."""
    from dataclasses import replace

    import poolwise.model.likelihood as LL

    for fit in (bern_fit, binom_fit):
        spec = replace(fit.spec, link=link)
        got = LL.pattern_log_likelihood(spec, fit.posterior)
        pat = row_patterns(spec.design)
        p = inverse_link(link, linear_predictor(spec, fit.posterior))
        want = stats.binom.logpmf(pat.y, pat.n, p[:, pat.cell]).reshape(got.shape)
        ok = (p[:, pat.cell] > 1e-9).reshape(got.shape) & (p[:, pat.cell] < 1 - 1e-9).reshape(
            got.shape)  # where SciPy's pmf is itself exact
        np.testing.assert_allclose(got[ok], want[ok], rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(LL.total_log_likelihood(spec, fit.posterior),
                                   (got * pat.count).sum(axis=-1), rtol=1e-12, atol=1e-9)


def test_row_level_view_refuses_what_does_not_fit(bern_fit, monkeypatch):
    import poolwise.inference.fitted as fitted
    from poolwise.errors import SpecError

    monkeypatch.setattr(fitted, "available_memory_bytes", lambda: 1000)
    with pytest.raises(SpecError, match="row-level view needs .*row_loo"):
        bern_fit.row_level()
    # row-level LOO itself needs no row-level view
    assert row_loo(bern_fit).n_data_points == bern_fit.spec.design.n_rows


def test_loo_without_a_stored_log_likelihood_is_the_same(bern_fit):
    """The log-likelihood is a function of the draws and the design: a fit saved without it
    (--no-log-likelihood) still gets the same LOO."""
    from dataclasses import replace

    groups = {n.path: n.to_dataset() for n in bern_fit.idata.subtree
              if n is not bern_fit.idata and n.name != "log_likelihood"}
    bare = replace(bern_fit, idata=xr.DataTree.from_dict(groups))
    assert "log_likelihood" not in bare.idata.children
    a, b = row_loo(bare), row_loo(bern_fit)
    assert (a.elpd, a.se, a.p) == (b.elpd, b.se, b.p)
    np.testing.assert_array_equal(a.pareto_k.values, b.pareto_k.values)
