"""predict() through every formula function: new data are encoded exactly as the fitted data
(the Design's encoding), so predicting the fitted rows gives the fitted linear predictor; the
offset in the log density; saving and loading keeps the encoding."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.special import gammaln, log_expit

import poolwise
from poolwise.comparison.predict import predict, predict_draws
from poolwise.engine import density as D
from poolwise.engine.layout import pack
from poolwise.errors import DataError, SpecError
from poolwise.model.predictor import inverse_link, linear_predictor
from poolwise.model.spec import build_model


def _data(seed: int = 11, n: int = 160) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    size = rng.integers(2, 10, n)
    period = rng.integers(1, 5, n)
    age = np.round(rng.uniform(15, 49, n), 1)
    w = np.round(rng.uniform(0.5, 3.0, n), 2)
    site = rng.choice(["north", "east", "west"], n)
    herd = rng.choice([f"h{i}" for i in range(6)], n)
    eta = -0.5 + 0.3 * (period == 2) - 0.02 * (age - 30) + 0.2 * np.log(w) + 0.3 * (site == "east")
    k = rng.binomial(size, 1 / (1 + np.exp(-eta)))
    return pd.DataFrame({"k": k, "size": size, "period": period, "age": age, "w": w,
                         "z": np.round(rng.normal(size=n), 2), "site": site, "herd": herd})


DATA = _data()
FORMULA = ('cbind(k, size - k) ~ factor(period) + poly(age, 2) + scale(z) + I(w^2) + log(w)'
           ' + C(site, ref = "west") + offset(log(size)) + (1 + log(w) | herd)')


def _fit(formula, data, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a short run: only the linear predictor matters here
        return poolwise.fit(formula, data, chains=2, tune=150, draws=60, seed=5, repair=False,
                            prior_check=False, log_likelihood=False, **kw)


@pytest.fixture(scope="module")
def fit():
    return _fit(FORMULA, DATA)


def _fitted_p(f):
    """The fitted success probability of every data row, from the fit's own cells."""
    eta = linear_predictor(f.spec, f.posterior)
    return inverse_link(f.spec.link, eta)[:, f.spec.design.row_cell]


def test_predict_on_the_fitted_rows_is_the_fitted_linear_predictor(fit):
    draws, info = predict_draws(fit, DATA)
    np.testing.assert_allclose(draws, _fitted_p(fit), rtol=1e-10, atol=1e-13)
    assert (info["herd_status"] == "existing").all()


def test_new_rows_in_another_order_and_types(fit):
    """A shuffled subset, with period as text and only some levels present: the same numbers
    row by row (levels are matched to the fitted ones, transforms use the stored states)."""
    idx = np.random.default_rng(1).permutation(len(DATA))[:25]
    new = DATA.iloc[idx].reset_index(drop=True)
    new = new.assign(period=new["period"].astype(str))
    draws, _ = predict_draws(fit, new)
    np.testing.assert_allclose(draws, _fitted_p(fit)[:, idx], rtol=1e-10, atol=1e-13)
    # one row alone (scale() and poly() of a single value need the stored states)
    one, _ = predict_draws(fit, DATA.iloc[[7]])
    np.testing.assert_allclose(one[:, 0], _fitted_p(fit)[:, 7], rtol=1e-10, atol=1e-13)


def test_predict_table_shows_the_source_columns(fit):
    out = predict(fit, DATA.head(3))
    assert list(out.columns[:7]) == ["period", "age", "z", "w", "site", "size", "herd"]
    np.testing.assert_allclose(out["mean"], _fitted_p(fit)[:, :3].mean(axis=0), rtol=1e-10)


def test_saved_fit_predicts_the_same(fit, tmp_path):
    poolwise.save_fit(fit, tmp_path)
    loaded = poolwise.load_fit(tmp_path)
    assert loaded.spec.design.encoding == fit.spec.design.encoding
    a, _ = predict_draws(fit, DATA.head(20))
    b, _ = predict_draws(loaded, DATA.head(20))
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        ({"period": 7}, DataError, "predictor 'factor(period)' has value(s) 7 in new_data (rows 1"),
        ({"site": "south"}, DataError,
         "predictor 'C(site, ref = \"west\")' has value(s) 'south' in new_data (rows 1"),
        ({"age": "old"}, DataError, "column 'age' is used in poly(age, 2), which needs numbers"),
        ({"w": -1.0}, DataError, "log(w): w has values outside the domain of log()"),
        ({"z": np.nan}, DataError, "predictor 'scale(z)' must be numeric and not missing"),
        ({"size": 0}, DataError, "log(size): size has values outside the domain of log()"),
    ],
)
def test_new_data_errors(fit, change, error, message):
    new = DATA.head(3).assign(**change)
    with pytest.raises(error) as info:
        predict_draws(fit, new)
    assert str(info.value).startswith(message)


def test_unknown_level_lists_the_known_ones(fit):
    with pytest.raises(DataError, match=r"known levels: 'west' \(reference\), 'east', 'north'"):
        predict_draws(fit, DATA.head(2).assign(site="south"))


def test_missing_offset_column(fit):
    with pytest.raises(DataError, match="lacks the column\\(s\\) size"):
        predict_draws(fit, DATA.head(2).drop(columns="size"))
    # offset= replaces the model's offset expression
    draws, _ = predict_draws(fit, DATA.head(2).drop(columns="size"),
                             offset=np.log(DATA["size"].head(2)))
    np.testing.assert_allclose(draws, _fitted_p(fit)[:, :2], rtol=1e-10)


def test_offset_given_as_values():
    data = DATA.assign(o=np.log(DATA["size"]))
    f = _fit("k | trials(size) ~ log(w) + (1 | herd)", data, offset=data["o"].to_numpy())
    draws, _ = predict_draws(f, data.head(4), offset=data["o"].head(4).to_numpy())
    np.testing.assert_allclose(draws, _fitted_p(f)[:, :4], rtol=1e-10)
    with pytest.raises(SpecError, match="pass offset= to predict with one value per row"):
        predict_draws(f, data.head(4))
    with pytest.raises(SpecError, match="offset has 2 values but new_data has 4 rows"):
        predict_draws(f, data.head(4), offset=[0.0, 1.0])


def test_an_offset_of_known_size_is_recovered():
    """A model with offset log(size) for data simulated with that offset: the intercept is
    the simulated one; without the offset it would be off by about mean(log(size))."""
    rng = np.random.default_rng(3)
    n = 400
    size = rng.integers(1, 30, n)
    expo = rng.uniform(0.2, 3.0, n)
    p = 1 - np.exp(-np.exp(-1.5 + np.log(expo)))  # cloglog with offset log(expo)
    data = pd.DataFrame({"k": rng.binomial(size, p), "size": size, "expo": expo})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        f = poolwise.fit("k | trials(size) ~ 1 + offset(log(expo))", data, link="cloglog",
                         chains=4, tune=300, draws=300, seed=2, log_likelihood=False)
    s = f.summary()
    assert abs(s.loc["Intercept", "mean"] + 1.5) < 4 * s.loc["Intercept", "sd"]


# ---- the offset in the compiled log density ----------------------------------------------


def _scipy_logp_offset(spec, x: np.ndarray) -> float:
    """Complete pooling, y ~ 1 + z + offset(o) with standardize=False: written independently."""
    d = spec.design
    lp = stats.norm.logpdf(x[0], *spec.priors.intercept.params)
    lp += stats.norm.logpdf(x[1], *spec.priors.b.params)
    eta = (x[0] + x[1] * DATA["z"].to_numpy() + np.log(DATA["size"].to_numpy())
           + DATA["w"].to_numpy())
    y, n = d.row_y, d.row_n
    lp += np.sum(gammaln(n + 1) - gammaln(y + 1) - gammaln(n - y + 1)
                 + y * log_expit(eta) + (n - y) * log_expit(-eta))
    return float(lp)


def test_log_density_and_gradient_with_offset(fd_gradient):
    spec = build_model("cbind(k, size - k) ~ z + offset(log(size)) + offset(w)", DATA,
                       pooling="complete", standardize=False)
    packed = pack(spec)
    assert packed.dim == 2
    rng = np.random.default_rng(8)
    for _ in range(30):
        x = rng.normal(size=2)
        grad = np.empty(2)
        assert D.logp_grad(x, grad, packed.ib, packed.fb) == pytest.approx(
            _scipy_logp_offset(spec, x), abs=1e-8, rel=1e-12)
        fd = fd_gradient(packed, x, 1e-6)
        assert np.max(np.abs(grad - fd) / np.maximum(1.0, np.abs(fd))) < 1e-5


def test_zero_offset_changes_nothing():
    a = build_model("cbind(k, size - k) ~ z + (1 | herd)", DATA, parameterization="centered")
    b = build_model("cbind(k, size - k) ~ z + offset(zero) + (1 | herd)", DATA.assign(zero=0.0),
                    parameterization="centered")
    pa, pb = pack(a), pack(b)
    x = np.random.default_rng(2).normal(size=pa.dim)
    assert D.logp_grad(x, np.empty(pa.dim), pa.ib, pa.fb) == D.logp_grad(
        x, np.empty(pb.dim), pb.ib, pb.fb)
