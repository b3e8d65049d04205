"""predict(): the probability of success for new rows, in existing and unseen groups."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit

import poolwise
from poolwise.comparison.predict import predict, predict_draws
from poolwise.errors import DataError, SpecError
from poolwise.inference.summary import interval_of

FORMULA = "use.contraception ~ 1 + (1 | district)"


@pytest.fixture(scope="module")
def data(bangladesh):
    df = bangladesh[bangladesh["district"] <= 12].reset_index(drop=True)
    df["area"] = np.where(df["urban"] == 1, "urban", "rural")
    return df


@pytest.fixture(scope="module")
def fits(data):
    return {
        k: poolwise.fit(FORMULA, data, pooling=k, tune=400, draws=400, seed=21)
        for k in ("partial", "none", "complete")
    }


@pytest.fixture(scope="module")
def urban_fit(data):
    return poolwise.fit("use.contraception ~ area + (1 | district)", data, tune=400, draws=400,
                        seed=22)


def _draws(fit, name):
    v = fit.posterior[name].values
    return v.reshape((-1,) + v.shape[2:])


NEW = pd.DataFrame({"district": [3, 11, 3, 54, 54, 99]})


def test_existing_groups_use_their_own_posterior(fits):
    fit = fits["partial"]
    out = predict(fit, NEW)
    s = fit.summary(scale="probability")
    for row, lab in ((0, 3), (1, 11)):
        assert out.loc[row, "mean"] == pytest.approx(s.loc[f"a_district[{lab}]", "mean"], abs=1e-12)
        for c in ("hdi_89_lower", "hdi_89_upper"):
            assert out.loc[row, c] == pytest.approx(s.loc[f"a_district[{lab}]", c])
    assert out.loc[0, "mean"] == out.loc[2, "mean"]
    assert list(out["district_status"]) == ["existing"] * 3 + ["new"] * 3
    assert out.attrs["scale"] == "probability" and out.attrs["prob"] == 0.89
    assert ((out["hdi_89_lower"] <= out["mean"]) & (out["mean"] <= out["hdi_89_upper"])).all()


def test_interval_columns_say_kind_and_probability(fits):
    """The prediction table names its interval as the summary does: ``hdi_89_lower`` by
    default, ``eti_95_...`` for a 95% equal-tailed interval (the draws' 2.5% and 97.5%
    quantiles)."""
    fit = fits["partial"]
    out = predict(fit, NEW)
    assert list(out.columns) == ["district", "mean", "sd", "hdi_89_lower", "hdi_89_upper",
                                 "district_status"]
    assert interval_of(out) == ("hdi_89_lower", "hdi_89_upper")
    eti = predict(fit, NEW, prob=0.95, kind="eti")
    assert list(eti.columns[3:5]) == ["eti_95_lower", "eti_95_upper"]
    draws, _ = predict_draws(fit, NEW)
    np.testing.assert_allclose(eti[["eti_95_lower", "eti_95_upper"]].to_numpy(),
                               np.quantile(draws, [0.025, 0.975], axis=0).T, rtol=1e-12)


def test_unseen_groups_population_vs_sample(fits):
    fit = fits["partial"]
    pop, _ = predict_draws(fit, NEW, new_groups="population")
    a_bar = _draws(fit, "Intercept")
    np.testing.assert_allclose(pop[:, 3], expit(a_bar))
    np.testing.assert_array_equal(pop[:, 3], pop[:, 5])
    smp, _ = predict_draws(fit, NEW, new_groups="sample")
    np.testing.assert_array_equal(smp[:, 0], pop[:, 0])  # existing groups are unaffected
    np.testing.assert_array_equal(smp[:, 3], smp[:, 4])  # one draw per unseen label
    assert not np.array_equal(smp[:, 3], smp[:, 5])
    # a new group's proportion spreads with sigma: wider than the typical group's
    assert smp[:, 3].std() > 2 * pop[:, 3].std()
    # its mean is E[logistic(a_bar + sigma z)], within 4 Monte Carlo standard errors
    sigma = _draws(fit, "sd_district")
    x, w = np.polynomial.hermite_e.hermegauss(41)
    truth = (expit(a_bar[:, None] + sigma[:, None] * x) * w / w.sum()).sum(1).mean()
    assert abs(smp[:, 3].mean() - truth) < 4 * smp[:, 3].std() / np.sqrt(len(smp))
    again, _ = predict_draws(fit, NEW, new_groups="sample")
    np.testing.assert_array_equal(again, smp)  # seeded from the fit
    other, _ = predict_draws(fit, NEW, new_groups="sample", seed=5)
    assert not np.array_equal(other[:, 3], smp[:, 3])


def test_no_pooling_has_no_population(fits):
    with pytest.raises(SpecError, match="no population of district"):
        predict(fits["none"], NEW)
    draws, _ = predict_draws(fits["none"], NEW, new_groups="sample")
    # a new district under no pooling: its fixed prior normal(0, 1.5), symmetric around 0.5
    assert abs(draws[:, 3].mean() - 0.5) < 4 * draws[:, 3].std() / np.sqrt(len(draws))
    known = predict(fits["none"], NEW.iloc[:2])
    s = fits["none"].summary(scale="probability")
    assert known.loc[0, "mean"] == pytest.approx(s.loc["a_district[3]", "mean"])


def test_complete_pooling_ignores_groups(fits):
    out = predict(fits["complete"], NEW)
    assert out["mean"].nunique() == 1
    assert "district_status" not in out.columns
    assert out.loc[0, "mean"] == pytest.approx(expit(_draws(fits["complete"], "Intercept")).mean())


def test_predictors_and_categorical_levels(urban_fit, data):
    fit = urban_fit
    new = pd.DataFrame({"district": [1, 1, 54], "area": ["rural", "urban", "urban"]})
    draws, _ = predict_draws(fit, new)
    a1 = _draws(fit, "a_district")[:, 0]
    b = _draws(fit, "b_areaurban")
    np.testing.assert_allclose(draws[:, 0], expit(a1), rtol=1e-12)
    np.testing.assert_allclose(draws[:, 1], expit(a1 + b), rtol=1e-12)
    np.testing.assert_allclose(draws[:, 2], expit(_draws(fit, "Intercept") + b), rtol=1e-12)
    with pytest.raises(DataError, match="'suburb'"):
        predict(fit, pd.DataFrame({"district": [1], "area": ["suburb"]}))


def test_input_errors(fits):
    fit = fits["partial"]
    with pytest.raises(DataError, match="lacks the column"):
        predict(fit, pd.DataFrame({"region": [1]}))
    with pytest.raises(DataError, match="no rows"):
        predict(fit, pd.DataFrame({"district": []}))
    with pytest.raises(SpecError, match="new_groups"):
        predict(fit, NEW, new_groups="typical")  # type: ignore[arg-type]
    with pytest.raises(SpecError, match="prob"):
        predict(fit, NEW, prob=0)
    out = predict(fit, {"district": [3]}, kind="eti", prob=0.5)
    assert out.attrs["kind"] == "eti" and len(out) == 1
