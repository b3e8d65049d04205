"""Varying slopes with correlations, links, standardization and the result.json names.

The headline check: ``use.contraception ~ urban + (1 + urban | district)`` on the seed data
(Statistical Rethinking 2nd ed., problem 14H1) fits with zero divergences and R-hat <= 1.01,
finds a clearly negative intercept-slope correlation and higher use in urban areas, and agrees
within 4 MCSE with a long run of an independent NumPy implementation sampled by nutpie's public
``from_pyfunc`` (tests/reference/slopes_bangladesh.py -> slopes_bangladesh.json).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.special import expit, log_ndtr, ndtr

import poolwise
from poolwise.errors import DataWarning
from poolwise.inference.summary import summary_text
from poolwise.model.predictor import inverse_link
from poolwise.model.priors import Priors, exponential, normal
from poolwise.output.results import result_dict
from poolwise.textfmt import fmt_rhat, fmt_sig

SLOPES = "use.contraception ~ urban + (1 + urban | district)"
REFERENCE = json.loads(
    (Path(__file__).parent / "reference" / "slopes_bangladesh.json").read_text()
)


@pytest.fixture(scope="module")
def slopes_fit(bangladesh):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return poolwise.fit(SLOPES, bangladesh, chains=4, tune=1000, draws=1000, seed=1234)


def test_slopes_model_samples_cleanly(slopes_fit):
    d = slopes_fit.diagnosis
    assert d.divergences == 0
    assert d.max_rhat <= 1.01
    assert slopes_fit.ok


def test_slopes_model_matches_independent_reference(slopes_fit):
    s = slopes_fit.summary()
    ref = REFERENCE["parameters"]
    assert REFERENCE["divergences"] == 0
    for name, r in ref.items():
        assert r["r_hat"] <= 1.01
        mcse = np.hypot(s.loc[name, "mcse_mean"], r["mcse_mean"])
        assert abs(s.loc[name, "mean"] - r["mean"]) < 4 * mcse, (name, s.loc[name, "mean"], r)
    # the published solution: a clearly negative correlation, around -0.65
    cor = s.loc["cor_district__Intercept__urban"]
    assert -0.8 < cor["mean"] < -0.5
    assert cor["hdi_89_upper"] < 0.0


def test_urban_districts_use_more_contraception(slopes_fit):
    post = slopes_fit.posterior
    b = post["b_urban"].values.ravel()
    assert np.mean(b > 0) > 0.99
    # on the probability scale, district by district: urban above rural in most districts
    a = post["a_district"].values.reshape(-1, post.sizes["district"])
    bj = post["b_district__urban"].values.reshape(-1, post.sizes["district"])
    diff = expit(a + bj) - expit(a)
    assert np.mean(diff.mean(axis=0) > 0) > 0.8


def test_result_names_follow_the_contract(slopes_fit, bangladesh):
    post = slopes_fit.posterior
    assert set(post.data_vars) == {
        "Intercept", "b_urban", "sd_district__Intercept", "sd_district__urban",
        "cor_district__Intercept__urban", "a_district", "b_district__urban",
    }
    labels = sorted(bangladesh["district"].unique())
    assert list(post["a_district"].coords["district"].values) == labels
    assert 54 not in labels and len(labels) == 60
    res = result_dict(slopes_fit)
    params = res["parameters"]
    for key in ("Intercept", "b_urban", "sd_district__Intercept", "sd_district__urban",
                "cor_district__Intercept__urban", "a_district[1]", "a_district[61]",
                "b_district__urban[1]", "b_district__urban[61]"):
        assert key in params
    assert "a_district[54]" not in params
    # every default prior is visible
    assert res["priors"] == {"intercept": "normal(0, 1.5)", "b": "normal(0, 1)",
                             "sd": "exponential(1)", "cor": "lkj(2)", "unpooled": "normal(0, 1.5)"}
    assert res["priors_by_parameter"] == {
        "Intercept": "normal(0, 1.5) on the intercept at the predictors' means",
        "b_urban": "normal(0, 1)",
        "sd_district__Intercept": "exponential(1)",
        "sd_district__urban": "exponential(1)",
        "cor_district": "lkj(2)",
    }
    assert res["scaling"]["predictors"] == {}  # urban is 0/1: centered, not scaled
    center = res["scaling"]["columns"]["b_urban"]["center"]
    assert center == pytest.approx(bangladesh["urban"].mean())
    assert res["scaling"]["intercept"].startswith("log-odds at all predictors = 0")
    assert res["prior_predictive"]["ok"] is True
    json.dumps(res)


def test_only_intercept_rows_carry_the_levels_data(slopes_fit, bangladesh):
    """A district's n, successes and raw proportion sit on its intercept's row, the data that
    intercept is estimated from; its slope's row leaves them empty (a proportion is no slope,
    and how much a district says about its urban slope depends on its urban and rural
    women, not on its count: district 3 has 2 women, both in one area)."""
    s = slopes_fit.summary()
    by = bangladesh.groupby("district")["use.contraception"].agg(["size", "sum"])
    a = s.loc[[f"a_district[{lab}]" for lab in by.index]]
    np.testing.assert_array_equal(a["n"], by["size"])
    np.testing.assert_array_equal(a["successes"], by["sum"])
    np.testing.assert_allclose(a["raw_proportion"], by["sum"] / by["size"], rtol=1e-15)
    assert (a.loc["a_district[3]", ["n", "successes", "raw_proportion"]].tolist()
            == [2.0, 2.0, 1.0])
    slopes = s.loc[[f"b_district__urban[{lab}]" for lab in by.index]]
    assert len(slopes) == 60
    assert slopes[["n", "successes", "raw_proportion"]].isna().all().all()
    assert s.loc[["Intercept", "b_urban", "sd_district__urban"], "n"].isna().all()
    # the printed table: an intercept row ends with n and the raw proportion, a slope's row
    # with R-hat
    text = summary_text(s, 0.89, "hdi").splitlines()
    row = {line.split()[0]: line.split() for line in text[1:]}
    assert row["a_district[3]"][-2:] == ["2", "1.00"]
    assert len(row["a_district[3]"]) == 11 and len(row["b_district__urban[3]"]) == 9
    assert row["b_district__urban[3]"][-1] == fmt_rhat(s.loc["b_district__urban[3]", "r_hat"])


def test_totals_are_consistent_with_population_values(slopes_fit):
    """a_district[j] - Intercept and b_district__urban[j] - b_urban are the deviations: their
    spread matches the SDs and their correlation the reported correlation (roughly)."""
    post = slopes_fit.posterior
    a = post["a_district"] - post["Intercept"]
    b = post["b_district__urban"] - post["b_urban"]
    sa = a.std("district").mean().item()
    assert 0.5 * post["sd_district__Intercept"].mean().item() < sa < 1.5 * post[
        "sd_district__Intercept"].mean().item()
    r = np.mean([np.corrcoef(x, y)[0, 1] for x, y in zip(
        a.values.reshape(-1, 60)[::10], b.values.reshape(-1, 60)[::10], strict=True)])
    assert r < -0.2


def _synthetic_slopes(seed=5, J=20, n=30):
    rng = np.random.default_rng(seed)
    rows = []
    R = np.array([[1, -0.5, 0.2], [-0.5, 1, 0.3], [0.2, 0.3, 1]])
    sd = np.array([0.8, 0.5, 0.4])
    dev = rng.multivariate_normal(np.zeros(3), R * np.outer(sd, sd), size=J)
    for j in range(J):
        x = rng.normal(size=n)
        w = rng.normal(size=n)
        eta = -0.2 + 0.7 * x - 0.4 * w + dev[j, 0] + dev[j, 1] * x + dev[j, 2] * w
        for xi, wi, yi in zip(x, w, rng.binomial(1, expit(eta)), strict=True):
            rows.append({"g": f"g{j:02d}", "x": xi, "w": wi, "y": yi})
    return pd.DataFrame(rows)


def test_three_coefficients_posterior_correlations_form_valid_matrices():
    data = _synthetic_slopes()
    # 1000 draws: at 400 the tail ESS of sd_g__x (272 < 400) depended on the seed and on the
    # last bits of the predictor scaling; this test is about the correlation matrices
    fit = poolwise.fit("y ~ x + w + (1 + x + w | g)", data, chains=4, tune=600, draws=1000,
                       seed=7, log_likelihood=False, parameterization="noncentered", repair=False)
    post = fit.posterior
    names = ["cor_g__Intercept__x", "cor_g__Intercept__w", "cor_g__x__w"]
    assert all(n in post for n in names)
    r01, r02, r12 = (post[n].values.ravel() for n in names)
    R = np.empty((r01.size, 3, 3))
    R[:, 0, 0] = R[:, 1, 1] = R[:, 2, 2] = 1.0
    R[:, 0, 1] = R[:, 1, 0] = r01
    R[:, 0, 2] = R[:, 2, 0] = r02
    R[:, 1, 2] = R[:, 2, 1] = r12
    assert np.linalg.eigvalsh(R).min() > 0.0  # every draw is (L L^T) of a Cholesky factor
    assert fit.diagnosis.divergences == 0
    s = fit.summary()
    for name in ("sd_g__Intercept", "sd_g__x", "sd_g__w", "b_g__x[g00]", "b_g__w[g19]"):
        assert name in s.index


# ---- links ---------------------------------------------------------------------------------


@pytest.mark.parametrize("link", ["logit", "probit", "cloglog"])
def test_links_end_to_end(bangladesh, link):
    fit = poolwise.fit("use.contraception ~ urban + (1 | district)", bangladesh, link=link,
                       chains=4, tune=400, draws=300, seed=11)
    assert fit.ok and fit.diagnosis.divergences == 0
    assert result_dict(fit)["link"] == link
    post = fit.posterior
    sp = fit.summary(scale="probability")
    # the probability scale is the inverse link of the draws, draw by draw
    inv = {"logit": expit, "probit": ndtr, "cloglog": lambda e: -np.expm1(-np.exp(e))}[link]
    by_hand = float(np.mean(inv(post["Intercept"].values)))
    assert sp.loc["Intercept", "mean"] == pytest.approx(by_hand)
    np.testing.assert_allclose(inverse_link(link, post["Intercept"].values),
                               inv(post["Intercept"].values))
    # whatever the link, the model predicts the same rural proportion (about 0.31)
    rural = bangladesh.loc[bangladesh["urban"] == 0, "use.contraception"].mean()
    assert abs(sp.loc["Intercept", "mean"] - rural) < 0.06
    # the pointwise log-likelihood uses the link too
    ll = fit.row_level()["log_likelihood"]["y"].values[0, 0]
    eta = (post["Intercept"].values[0, 0] + post["b_urban"].values[0, 0] * bangladesh["urban"]
           + post["a_district"].sel(district=bangladesh["district"].values).values[0, 0]
           - post["Intercept"].values[0, 0])
    y = bangladesh["use.contraception"].to_numpy()
    if link == "probit":
        expected = np.where(y == 1, log_ndtr(eta), log_ndtr(-eta))
    else:
        expected = stats.bernoulli.logpmf(y, inv(np.asarray(eta)))
    np.testing.assert_allclose(ll, expected, rtol=1e-9, atol=1e-12)


# ---- standardization, reported on the original scale -----------------------------------------


def test_numeric_predictor_reported_per_original_unit(bangladesh):
    formula = "use.contraception ~ urban + age.centered + (1 | district)"
    # 1000 draws: at 500, whether one of the 60 district R-hats crosses 1.01 (and the fit warns)
    # is down to the seed (2 of seeds 3-5 did), and this test is about the scaling, not mixing
    kw = dict(chains=4, tune=500, draws=1000, seed=3, log_likelihood=False,
              parameterization="noncentered", repair=False)
    std = poolwise.fit(formula, bangladesh, **kw)
    raw = poolwise.fit(formula, bangladesh, standardize=False, **kw)
    s_std, s_raw = std.summary(), raw.summary()
    sd_age = float(np.std(bangladesh["age.centered"]))
    scaling = s_std.attrs["scaling"]
    assert scaling["predictors"]["age.centered"]["scale"] == pytest.approx(sd_age)
    assert scaling["standardize"] is True and s_raw.attrs["scaling"]["standardize"] is False
    assert s_raw.attrs["scaling"]["columns"] == {}
    assert s_std.attrs["priors"]["b_age.centered"] == (
        f"normal(0, 1) on the standardized scale (per {fmt_sig(sd_age)} units of age.centered)")
    col = result_dict(std)["scaling"]["columns"]["b_age.centered"]
    assert col["scale"] == pytest.approx(sd_age)
    assert col["center"] == pytest.approx(bangladesh["age.centered"].mean())
    per_sd = s_std.loc["b_age.centered", "mean"] * sd_age
    assert col["per_scale_unit"]["mean"] == pytest.approx(per_sd)
    # both are per year of age; the priors differ (per SD vs per year) but the data dominate
    for name in ("b_age.centered", "b_urban", "Intercept", "a_district[1]"):
        sd = s_raw.loc[name, "sd"]
        assert abs(s_std.loc[name, "mean"] - s_raw.loc[name, "mean"]) < 0.25 * sd, name


def test_extreme_scale_is_standardized_even_without_standardize():
    """A predictor with sd > 1e4 is scaled for sampling (validate.py warns); the engine then
    sees exactly the design of the same predictor divided by 2^14, so the draws are identical
    and the reported coefficients differ by exactly that factor."""
    rng = np.random.default_rng(8)
    n = 400
    xk = np.round(rng.normal(2.0, 1.0, n), 2)
    g = rng.integers(0, 12, n)
    y = rng.binomial(1, expit(-0.5 + 0.6 * (xk - 2.0) + rng.normal(0, 0.5, 12)[g]))
    data = pd.DataFrame({"y": y, "g": g, "xk": xk, "big": xk * 2.0**14})
    with pytest.warns(DataWarning, match="extreme scale"):
        big = poolwise.fit("y ~ big + (1 | g)", data, standardize=False, chains=4, tune=300,
                           draws=200, seed=9, log_likelihood=False)
    small = poolwise.fit("y ~ xk + (1 | g)", data, chains=4, tune=300, draws=200, seed=9,
                         log_likelihood=False)
    np.testing.assert_allclose(big.posterior["b_big"].values * 2.0**14,
                               small.posterior["b_xk"].values, rtol=1e-9)
    np.testing.assert_allclose(big.posterior["Intercept"].values,
                               small.posterior["Intercept"].values, rtol=1e-9, atol=1e-12)
    assert big.summary().attrs["scaling"]["predictors"]["big"]["scale"] == pytest.approx(
        np.std(data["big"]))


def test_wide_priors_trigger_the_prior_predictive_warning(bangladesh):
    with pytest.warns(DataWarning, match="the priors pile their mass near 0 or 1"):
        fit = poolwise.fit("use.contraception ~ urban + (1 | district)", bangladesh,
                           priors=Priors(intercept=normal(0, 10), sd=exponential(0.1)),
                           chains=4, tune=300, draws=200, seed=2, log_likelihood=False)
    assert any("pile their mass" in w for w in fit.warnings)
    res = result_dict(fit)
    assert res["prior_predictive"]["ok"] is False
    assert res["prior_predictive"]["frac_extreme"] > 0.4
