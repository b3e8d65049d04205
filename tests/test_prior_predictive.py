"""Prior predictive check on the probability scale (poolwise.prior_predictive)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.special import logit

from poolwise.errors import DataWarning
from poolwise.model.prior_predictive import (
    check_prior_predictive,
    prior_predictive,
    sample_lkj_cholesky,
)
from poolwise.model.priors import Priors, exponential, flat, normal
from poolwise.model.spec import build_model

SLOPES = "use.contraception ~ urban + (1 + urban | district)"


@pytest.mark.parametrize(("C", "eta"), [(2, 1.0), (2, 2.0), (3, 2.0), (4, 0.7)])
def test_lkj_sampler_marginals(C, eta):
    """Every correlation of LKJ(eta) in C dimensions is 2 Beta(a, a) - 1, a = eta - 1 + C/2."""
    L = sample_lkj_cholesky(eta, C, np.random.default_rng(C * 10 + int(eta * 10)), 20_000)
    R = L @ np.transpose(L, (0, 2, 1))
    np.testing.assert_allclose(np.diagonal(R, axis1=1, axis2=2), 1.0, atol=1e-12)
    a = eta - 1 + C / 2
    for i in range(1, C):
        for j in range(i):
            p = stats.kstest((R[:, i, j] + 1) / 2, stats.beta(a, a).cdf).pvalue
            assert p > 1e-3, (i, j, p)


def test_default_priors_pass_on_the_seed_data(bangladesh):
    spec = build_model(SLOPES, bangladesh)
    pp = prior_predictive(spec, draws=500, seed=1)
    assert pp.ok
    assert pp.proportions.shape == (500, 60)
    assert pp.units[0] == "district[1]"
    assert pp.frac_extreme < 0.15
    assert 0.3 < pp.quantiles["q50"] < 0.7


def test_wide_priors_warn(bangladesh):
    spec = build_model(SLOPES, bangladesh,
                       priors=Priors(intercept=normal(0, 10), sd=exponential(0.1)))
    with pytest.warns(DataWarning, match="the priors pile their mass near 0 or 1") as rec:
        pp = check_prior_predictive(spec, draws=400, seed=2)
    assert not pp.ok and pp.frac_extreme > 0.6
    assert "outside [0.01, 0.99]" in str(rec[0].message)
    assert pp.to_dict()["ok"] is False


def test_flat_prior_is_skipped(bangladesh):
    spec = build_model("use.contraception ~ urban + (1 | district)", bangladesh,
                       priors=Priors(b=flat()))
    pp = check_prior_predictive(spec)  # no warning
    assert pp.ok and pp.skipped and "flat" in pp.message


def test_simulated_spread_matches_the_priors():
    """One cell per group: logit of a group's proportion is Intercept + sd z, whose variance is
    1.5^2 + E[sd^2] = 2.25 + 2 under the default priors; and without groups, Intercept alone."""
    rng = np.random.default_rng(0)
    J = 40
    data = pd.DataFrame({"g": np.arange(J), "n": 10, "s": rng.integers(0, 11, J)})
    spec = build_model("s | trials(n) ~ 1 + (1 | g)", data)
    pp = prior_predictive(spec, draws=4000, seed=3)
    eta = logit(pp.proportions)
    assert np.all(np.isfinite(eta))
    # a group's logit over independent draws: variance 4.25; fourth moment 114, so the
    # estimate from 4000 draws has SE sqrt((114 - 4.25^2) / 4000) = 0.155 (4 SE: 0.62)
    assert abs(np.mean(eta.var(axis=0)) - 4.25) < 0.62
    spec0 = build_model("s | trials(n) ~ 1", data)
    pp0 = prior_predictive(spec0, draws=20_000, seed=4)
    lo = np.mean(pp0.proportions[:, 0] < 0.01) + np.mean(pp0.proportions[:, 0] > 0.99)
    exact = 2 * stats.norm.sf(logit(0.99) / 1.5)
    assert abs(lo - exact) < 4 * np.sqrt(exact * (1 - exact) / 20_000)
    assert pp0.units[0] == "cell 0"
