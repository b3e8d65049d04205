"""Row weights (``weights=``, ``--weights``; poolwise.data.weights).

* frequency weights are exact: the model, the draws (same seed), LOO over the rows represented,
  the summaries and the predictive replicates equal those of the data with each row repeated w
  times, for the binomial and the beta-binomial family; DuckDB gives the same as pandas;
* survey weights are a pseudo-likelihood: the mode of the sampler's density is the weighted
  logistic regression computed here by Newton's method, its curvature that of the weights
  scaled to sum to the rows; a simulation of informative sampling recovers the population
  proportion; the caveat is warned, stored and printed; LOO, leave-one-group-out and K-fold
  refuse it with the reason;
* bad weights are errors before anything is sampled, naming the column, values, rows and fix
  (docs/reliability.md R.22-R.29), with the same message from DuckDB.

(the consistency suite, tests/test_consistency.py, holds every path to the direct computation
with weights as one of its dimensions.)
"""

from __future__ import annotations

import importlib
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit

import poolwise
from poolwise.cli import main
from poolwise.data.design import build_design
from poolwise.data.ingest import FileSource
from poolwise.data.patterns import row_patterns
from poolwise.engine import density as D
from poolwise.engine.layout import pack
from poolwise.errors import DataError, DataWarning, FormulaError, SpecError
from poolwise.model.spec import build_model

sampling_module = importlib.import_module("poolwise.inference.sampling")
sampler_module = importlib.import_module("poolwise.engine.sampler")

FAST = dict(chains=2, tune=150, draws=100, repair=False, prior_check=False,
            parameterization="noncentered")


def _data(n: int = 60, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    trials = rng.integers(1, 9, n)
    return pd.DataFrame({
        "g": rng.choice(list("abcdef"), n),
        "x": rng.normal(size=n).round(2),
        "y": rng.integers(0, 2, n),
        "s": rng.binomial(trials, 0.4),
        "n": trials,
        "w": rng.integers(1, 5, n),
    })


def _repeated(df: pd.DataFrame) -> pd.DataFrame:
    """Each row repeated w times, in place (what a frequency weight stands for)."""
    return df.loc[np.repeat(df.index, df["w"])].reset_index(drop=True).drop(columns="w")


def _quiet(f, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return f(*args, **kwargs)


MODELS = [
    ("bernoulli", "y ~ x + (1 | g)", "binomial"),
    ("trials", "s | trials(n) ~ x + (1 + x | g)", "binomial"),
    ("beta_binomial", "s | trials(n) ~ x + (1 | g)", "beta_binomial"),
    ("cbind", "cbind(s, n - s) ~ 1 + (1 | g)", "binomial"),
]


# ---- frequency weights are exact -------------------------------------------------------------


@pytest.mark.parametrize(("name", "formula", "family"), MODELS, ids=[m[0] for m in MODELS])
def test_frequency_weights_pack_the_model_of_the_repeated_rows(name, formula, family):
    """The sampler reads the same buffer (cells, weights, constant, standardization), and the
    patterns, level totals and rows are those of the repeated data."""
    df = _data()
    a = _quiet(build_model, formula, df, weights="w", family=family)
    b = _quiet(build_model, formula, _repeated(df), family=family)
    np.testing.assert_array_equal(pack(a).buffer, pack(b).buffer)
    da, db = a.design, b.design
    assert da.n_rows == db.n_rows == int(df["w"].sum())
    assert da.weighting.kind == "frequency" and da.weighting.data_rows == len(df)
    pa, pb = row_patterns(da), row_patterns(db)
    for field in ("cell", "y", "n", "count"):
        np.testing.assert_array_equal(getattr(pa, field), getattr(pb, field))
    for ga, gb in zip(da.groups, db.groups, strict=True):
        np.testing.assert_array_equal(ga.level_rows, gb.level_rows)
        np.testing.assert_array_equal(ga.level_trials, gb.level_trials)
        np.testing.assert_array_equal(ga.level_successes, gb.level_successes)


@pytest.mark.parametrize("family", ["binomial", "beta_binomial"])
def test_frequency_weights_give_the_draws_loo_and_checks_of_the_repeated_rows(family):
    from poolwise.comparison.loo import row_loo
    from poolwise.model.likelihood import total_log_likelihood
    from poolwise.model.predictive import replicated_successes

    df = _data(40)
    formula = "s | trials(n) ~ x + (1 | g)"
    a = _quiet(poolwise.fit, formula, df, weights="w", family=family, seed=4, **FAST)
    b = _quiet(poolwise.fit, formula, _repeated(df), family=family, seed=4, **FAST)
    for var in b.posterior.data_vars:
        np.testing.assert_array_equal(a.posterior[var].values, b.posterior[var].values)
    np.testing.assert_array_equal(total_log_likelihood(a.spec, a.posterior),
                                  total_log_likelihood(b.spec, b.posterior))
    la, lb = row_loo(a), row_loo(b)  # LOO over the rows represented: each copy left out
    assert (la.elpd, la.se, la.p) == pytest.approx((lb.elpd, lb.se, lb.p), rel=1e-12)
    np.testing.assert_allclose(np.sort(la.elpd_i.values), np.sort(lb.elpd_i.values),
                               rtol=1e-12)
    assert la.n_data_points == lb.n_data_points == int(df["w"].sum())
    sa, sb = a.summary(), b.summary()
    pd.testing.assert_frame_equal(sa, sb)
    rep_a = replicated_successes(a.spec, a.posterior, np.random.default_rng(2))
    rep_b = replicated_successes(b.spec, b.posterior, np.random.default_rng(2))
    np.testing.assert_array_equal(rep_a, rep_b)


def test_duckdb_frequency_and_dyadic_survey_weights_equal_pandas(tmp_path):
    """Through DuckDB (SUM of the weights where rows are counted): the same buffer and, with
    the same seed, the same draws as the pandas path. Survey weights with few binary digits
    sum exactly in any order, so their buffers are equal too."""
    rng = np.random.default_rng(7)
    df = _data(1200, seed=3).assign(
        x=lambda d: d["x"].round(0), v=rng.choice([0.25, 0.5, 1.25, 3.0], 1200))
    path = tmp_path / "d.parquet"
    df.to_parquet(path)
    formula = "y ~ x + (1 | g)"
    for kw in ({"weights": "w"}, {"weights": "v", "weights_kind": "survey"}):
        rows = _quiet(build_model, formula, pd.read_parquet(path), **kw)
        pats = _quiet(build_model, formula, FileSource(str(path)), **kw)
        assert pats.design.row_count is not None and len(pats.design.row_y) < len(df)
        np.testing.assert_array_equal(pack(rows).buffer, pack(pats).buffer)
        assert rows.design.weighting == pats.design.weighting
        a = _quiet(poolwise.fit, formula, pd.read_parquet(path), seed=9, log_likelihood=False,
                   prior_sensitivity=False, **kw, **FAST)
        b = _quiet(poolwise.fit, formula, FileSource(str(path)), seed=9, log_likelihood=False,
                   prior_sensitivity=False, **kw, **FAST)
        for var in a.posterior.data_vars:
            np.testing.assert_array_equal(a.posterior[var].values, b.posterior[var].values)


def test_duckdb_survey_weights_of_any_value_give_the_same_model(tmp_path):
    """Weights of many digits: their sums differ from pandas' by rounding only."""
    df = _data(800, seed=5).assign(v=lambda d: np.random.default_rng(1).uniform(0.1, 9, len(d)))
    path = tmp_path / "d.parquet"
    df.to_parquet(path)
    kw = {"weights": "v", "weights_kind": "survey"}
    rows = _quiet(build_model, "s | trials(n) ~ x + (1 | g)", pd.read_parquet(path), **kw)
    pats = _quiet(build_model, "s | trials(n) ~ x + (1 | g)", FileSource(str(path)), **kw)
    fa, fb = pack(rows).fb, pack(pats).fb
    np.testing.assert_allclose(fa, fb, rtol=1e-12)
    assert rows.design.weighting.ess == pytest.approx(pats.design.weighting.ess, rel=1e-12)


# ---- survey weights: a pseudo-likelihood -----------------------------------------------------


def _newton_weighted_logit(X: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """argmax_b sum_i w_i [y_i log p_i + (1 - y_i) log(1 - p_i)], by Newton's method."""
    b = np.zeros(X.shape[1])
    for _ in range(50):
        p = expit(X @ b)
        step = np.linalg.solve((X * (w * p * (1 - p))[:, None]).T @ X, X.T @ (w * (y - p)))
        b += step
        if np.max(np.abs(step)) < 1e-13:
            break
    return b


def test_survey_weighted_mode_is_the_weighted_logistic_regression():
    """With flat priors the sampler's log density is the pseudo-log-likelihood: its mode is the
    weighted logistic regression, and its curvature X' diag(w~ p (1 - p)) X with the weights
    w~ scaled to sum to the rows (the information of n = rows, not of the sum of the raw
    weights)."""
    from scipy.optimize import minimize

    rng = np.random.default_rng(11)
    n = 400
    x = rng.normal(size=n).round(3)
    z = rng.choice(["a", "b", "c"], n)
    y = rng.binomial(1, expit(-0.3 + 0.8 * x + (z == "b") * 0.5))
    w = rng.uniform(0.2, 5.0, n)  # raw weights summing to about 1000, not to n
    df = pd.DataFrame({"x": x, "z": z, "y": y, "w": w})
    priors = poolwise.Priors(intercept=poolwise.flat(), b=poolwise.flat())
    spec = _quiet(build_model, "y ~ x + z", df, pooling="complete", priors=priors,
                  standardize=False, weights="w", weights_kind="survey")
    packed = pack(spec)
    grad = np.empty(packed.dim)

    def neg(b):
        v = D.logp_grad(np.asarray(b, dtype=float), grad, packed.ib, packed.fb)
        return -v, -grad.copy()

    mode = minimize(neg, np.zeros(packed.dim), jac=True, method="BFGS",
                    options={"gtol": 1e-10}).x
    X = spec.design.X[spec.design.row_cell]
    want = _newton_weighted_logit(X, y.astype(float), w)
    np.testing.assert_allclose(mode, want, rtol=1e-6, atol=1e-7)
    # the curvature: finite differences of the analytic gradient at the mode
    wt = w * n / w.sum()
    p = expit(X @ want)
    info = (X * (wt * p * (1 - p))[:, None]).T @ X
    h = 1e-5
    hess = np.empty((packed.dim, packed.dim))
    for i in range(packed.dim):
        e = np.zeros(packed.dim)
        e[i] = h
        hess[:, i] = (neg(want + e)[1] - neg(want - e)[1]) / (2 * h)
    np.testing.assert_allclose(hess, info, rtol=1e-5, atol=1e-6)
    # the density's value: sum of w~ times each row's log-likelihood (flat priors add 0)
    ll = wt * (y * np.log(p) + (1 - y) * np.log1p(-p))
    assert -neg(want)[0] == pytest.approx(ll.sum(), rel=1e-10)


def test_survey_weights_recover_a_population_proportion():
    """Informative sampling: successes are sampled 4 times as often as failures, so the sample
    proportion is far from the population's 0.3; weights 1 / P(sampled) recover it (the
    posterior mean equals the weighted proportion, within the Monte Carlo error, and the
    truth within the sampling error), the unweighted fit does not."""
    rng = np.random.default_rng(2024)
    pop = rng.binomial(1, 0.3, 20000)
    prob = np.where(pop == 1, 0.4, 0.1)
    keep = rng.random(pop.size) < prob
    df = pd.DataFrame({"y": pop[keep], "w": 1.0 / prob[keep]})
    weighted = float(np.sum(df["w"] * df["y"]) / df["w"].sum())
    kw = dict(chains=4, tune=300, draws=500, seed=1, repair=False, prior_check=False)
    fw = _quiet(poolwise.fit, "y ~ 1", df, weights="w", weights_kind="survey", **kw)
    fu = _quiet(poolwise.fit, "y ~ 1", df.drop(columns="w"), **kw)
    pw = expit(fw.posterior["Intercept"].values.ravel())
    pu = expit(fu.posterior["Intercept"].values.ravel())
    ess = fw.spec.design.weighting.ess
    se = np.sqrt(weighted * (1 - weighted) / ess)  # the design effect of the weights
    assert abs(pw.mean() - weighted) < 0.005
    assert abs(weighted - 0.3) < 4 * se
    assert abs(pu.mean() - df["y"].mean()) < 0.005 and pu.mean() > 0.55
    assert fw.ok and any("model-based, not design-based" in w for w in fw.warnings)


def test_survey_weights_are_scale_free_and_their_caveat_is_warned_and_kept(monkeypatch):
    df = _data()
    df["v"] = np.random.default_rng(3).uniform(0.5, 2.0, len(df))
    with pytest.warns(DataWarning, match="model-based, not design-based"):
        a = build_model("y ~ x + (1 | g)", df, weights="v", weights_kind="survey")
    b = _quiet(build_model, "y ~ x + (1 | g)", df.assign(v=df["v"] * 37.5), weights="v",
               weights_kind="survey")
    np.testing.assert_allclose(pack(a).fb, pack(b).fb, rtol=1e-13)
    d = a.design
    assert d.likelihood_weight.sum() == pytest.approx(len(df))
    assert d.weighting.ess == pytest.approx(df["v"].sum() ** 2 / (df["v"] ** 2).sum())
    # whole-number weights are survey weights when asked
    c = _quiet(build_model, "y ~ x + (1 | g)", df, weights="w", weights_kind="survey")
    assert c.design.weighting.kind == "survey" and c.design.row_count is None


def test_cross_validation_refuses_survey_weights_with_the_reason():
    from poolwise.comparison.kfold import kfold_compare
    from poolwise.comparison.logo import group_log_lik, logo_compare
    from poolwise.comparison.loo import row_loo

    df = _data(80)
    df["v"] = np.random.default_rng(3).uniform(0.5, 2.0, len(df))
    kw = dict(FAST, draws=60, tune=100, weights="v", weights_kind="survey", seed=2)
    comp = _quiet(poolwise.compare_pooling, "y ~ x + (1 | g)", df, kfold=2, **kw)
    assert comp.loo is None and comp.logo is None and comp.kfold is None
    text = " ".join(comp.narrative)
    for what in ("Row-level LOO", "Leave-one-group-out", "K-fold cross-validation"):
        assert f"{what} is not computed under survey weights" in text
    assert "pseudo-likelihood" in text
    fit = comp.fits["partial"]
    for call in (lambda: row_loo(fit), lambda: group_log_lik(fit, fit.spec),
                 lambda: logo_compare(comp.fits), lambda: kfold_compare(comp.fits, 2)):
        with pytest.raises(SpecError, match="not computed under survey weights"):
            call()
    # the fit's own quantities stay: the pointwise log-likelihood (unweighted, per row) ...
    assert fit.row_level()["log_likelihood"]["y"].sizes["obs"] == len(df)


# ---- saved and loaded ----------------------------------------------------------------------


def test_the_saved_fit_records_the_weights_and_loads_back(tmp_path):
    from poolwise.comparison.loo import row_loo

    df = _data(40)
    df["v"] = np.random.default_rng(3).uniform(0.5, 2.0, len(df))
    for kw in ({"weights": "w"}, {"weights": "v", "weights_kind": "survey"}):
        fit = _quiet(poolwise.fit, "y ~ x + (1 | g)", df, seed=3, **kw, **FAST)
        out = tmp_path / kw["weights"]
        poolwise.save_fit(fit, out)
        result = json.loads((out / "result.json").read_text())
        w = result["data"]["weights"]
        assert (w["column"], w["kind"]) == (kw["weights"], kw.get("weights_kind", "frequency"))
        assert json.loads(fit.idata.attrs["poolwise_weights"]) == {
            "column": kw["weights"], "kind": w["kind"]}
        back = poolwise.load_fit(out)
        d, d0 = back.spec.design, fit.spec.design
        assert d.weighting == d0.weighting
        assert json.loads(back.idata.attrs["poolwise_weights"])["kind"] == w["kind"]
        if w["kind"] == "survey":
            assert "model-based, not design-based" in w["caveat"]
            assert any("model-based" in t for t in result["warnings"])
            np.testing.assert_array_equal(d.row_weight, d0.row_weight)
            np.testing.assert_array_equal(pack(back.spec).buffer, pack(fit.spec).buffer)
        else:
            assert w["represented"] == df["w"].sum() and result["data"]["rows"] == df["w"].sum()
            assert row_loo(back).elpd == pytest.approx(row_loo(fit).elpd, rel=1e-12)


# ---- bad weights: errors before sampling -----------------------------------------------------


def _forbid_sampler(monkeypatch):
    def spy(*args, **kwargs):
        pytest.fail("the sampler was called for weights that should have been rejected")

    monkeypatch.setattr(sampler_module, "run_nuts", spy)
    monkeypatch.setattr(sampling_module, "run_nuts", spy)


def _bad(df: pd.DataFrame, col: str, rows: list[int], values: list) -> pd.DataFrame:
    out = df.copy()
    out[col] = out[col].astype(str if isinstance(values[0], str) else float)
    out.loc[[r - 1 for r in rows], col] = values
    return out


BASE = _data(30)
BAD = [
    ("missing", _bad(BASE, "w", [4, 17], [np.nan, np.nan]), {}, DataError,
     ["weights column 'w' has 2 missing values (rows 4, 17)", "drop_missing=True"]),
    ("negative", _bad(BASE, "w", [5], [-2.0]), {}, DataError,
     ["weights must be > 0; column 'w' has negative values {-2} (row 5)", "fix the column"]),
    ("zero", _bad(BASE, "w", [3, 9, 11], [0.0, 0.0, 0.0]), {}, DataError,
     ["column 'w' has 0 in 3 rows (rows 3, 9, 11)", "drops no rows",
      "data[data['w'] > 0]"]),
    ("zero survey", _bad(BASE, "w", [3], [0.0]), {"weights_kind": "survey"}, DataError,
     ["column 'w' has 0 in 1 row (row 3)"]),
    ("not numeric", _bad(BASE, "w", [2, 8], ["heavy", "1,5"]), {}, DataError,
     ["weights column 'w' must be numeric; could not parse {'heavy', '1,5'} (rows 2, 8)",
      "decimal=','"]),
    ("infinite", _bad(BASE, "w", [6], [np.inf]), {}, DataError,
     ["weights column 'w' has infinite values {inf} (row 6)"]),
    ("fraction", _bad(BASE, "w", [1, 7], [0.5, 2.25]), {}, DataError,
     ["weights in column 'w' are not whole numbers: {0.5, 2.25} (rows 1, 7)",
      "weights_kind='survey' (--weights-kind survey)"]),
    ("fraction as frequency", _bad(BASE, "w", [7], [2.25]), {"weights_kind": "frequency"},
     DataError, ["{2.25} (row 7)", "weights_kind='frequency' says each row stands for"]),
    ("too large", _bad(BASE, "w", [2], [2.0**53]), {}, DataError,
     ["frequency weights must be below 2^53", "(row 2)"]),
    ("too many trials", _bad(BASE, "w", [2], [2.0**51]), {"formula": "s | trials(n) ~ x"},
     DataError, ["frequency weights in column 'w' stand for", "at least 2^53"]),
    ("unknown column", BASE, {"weights": "wt"}, DataError,
     ["weights column 'wt' not found; did you mean 'w'?"]),
    ("a predictor", BASE, {"weights": "x"}, SpecError,
     ["weights column 'x' is also used by the model (predictor)", "--weights COL"]),
    ("the outcome", BASE, {"weights": "y"}, SpecError,
     ["weights column 'y' is also used by the model (outcome)"]),
    ("the group", BASE, {"weights": "g"}, SpecError,
     ["weights column 'g' is also used by the model (grouping)"]),
    ("inside an expression", BASE, {"weights": "n", "formula": "y ~ log(n) + (1 | g)"},
     SpecError, ["weights column 'n' is also used by the model (predictor)"]),
    ("kind without weights", BASE, {"weights": None, "weights_kind": "survey"}, SpecError,
     ["weights_kind='survey' says what the weights are, but no weights column is given"]),
    ("unknown kind", BASE, {"weights_kind": "sampling"}, SpecError,
     ["weights_kind must be one of frequency, survey; got 'sampling'"]),
    ("not a name", BASE, {"weights": 3}, SpecError, ["weights names the column"]),
]


@pytest.mark.parametrize(("name", "df", "kw", "exc", "texts"), BAD, ids=[b[0] for b in BAD])
def test_bad_weights_are_errors_before_sampling(monkeypatch, name, df, kw, exc, texts):
    _forbid_sampler(monkeypatch)
    kw = {"weights": "w", **kw}
    formula = kw.pop("formula", "y ~ x + (1 | g)")
    with pytest.raises(exc) as err:
        _quiet(poolwise.fit, formula, df, **kw, **FAST)
    for text in texts:
        assert text in str(err.value), str(err.value)


def test_missing_weights_are_dropped_with_drop_missing():
    df = _bad(BASE, "w", [4, 17], [np.nan, np.nan])
    with pytest.warns(DataWarning, match=r"dropped 2 of 30 rows with missing values in w "
                                         r"\(rows 4, 17\)"):
        spec = build_model("y ~ x + (1 | g)", df, weights="w", drop_missing=True)
    assert spec.design.n_rows == int(df["w"].sum())
    assert 4 not in spec.design.row_number


DB_BAD = [b for b in BAD if b[0] not in ("kind without weights", "unknown kind", "not a name")]


@pytest.mark.parametrize(("name", "df", "kw", "exc", "texts"), DB_BAD,
                         ids=[b[0] for b in DB_BAD])
def test_bad_weights_get_the_pandas_message_from_duckdb(tmp_path, name, df, kw, exc, texts):
    path = tmp_path / "bad.parquet"
    df.to_parquet(path)
    kw = {"weights": "w", **kw}
    formula = kw.pop("formula", "y ~ x + (1 | g)")
    messages = []
    for data in (pd.read_parquet(path), FileSource(str(path))):
        with pytest.raises((DataError, FormulaError, SpecError)) as err:
            _quiet(build_design, formula, data, **kw)
        messages.append((type(err.value), str(err.value)))
    assert messages[0] == messages[1]
    assert messages[0][0] is exc


def test_weights_on_learned_transforms_are_refused():
    with pytest.raises(SpecError, match="frequency weights \\(column 'w'\\)"):
        _quiet(build_design, "y ~ scale(x) + (1 | g)", BASE, weights="w")


# ---- the command line ----------------------------------------------------------------------


def _csv(tmp_path: Path, df: pd.DataFrame) -> str:
    path = tmp_path / "d.csv"
    df.to_csv(path, index=False)
    return str(path)


CLI = ["--chains", "2", "--tune", "100", "--draws", "100", "--seed", "1", "--no-repair",
       "--no-prior-check", "--no-progress", "--parameterization", "noncentered"]


def test_cli_frequency_weights(tmp_path, capsys):
    path = _csv(tmp_path, BASE)
    rc = main(["fit", path, "-f", "y ~ x + (1 | g)", "--weights", "w", *CLI,
               "--out", str(tmp_path / "out")])
    out, err = capsys.readouterr()
    assert rc in (0, 1), err
    rows = int(BASE["w"].sum())
    assert f"weights: column 'w', frequency weights: 30 data rows stand for {rows} rows" in out
    assert f"({rows} rows -> " in out
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert result["data"]["weights"]["kind"] == "frequency"


def test_cli_survey_weights_print_the_caveat(tmp_path, capsys):
    df = BASE.assign(w=np.random.default_rng(1).uniform(0.3, 3.0, len(BASE)).round(3))
    path = _csv(tmp_path, df)
    rc = main(["fit", path, "-f", "y ~ x + (1 | g)", "--weights", "w", *CLI])
    out, err = capsys.readouterr()
    assert rc == 3
    assert "error: weights in column 'w' are not whole numbers" in err
    assert "--weights-kind survey" in err
    rc = main(["fit", path, "-f", "y ~ x + (1 | g)", "--weights", "w", "--weights-kind",
               "survey", *CLI, "--out", str(tmp_path / "out")])
    out, err = capsys.readouterr()
    assert rc in (0, 1), err
    assert "weights: column 'w', survey weights (a pseudo-likelihood" in out
    assert "warning: survey weights (column 'w'): each row's log-likelihood is multiplied" in err
    assert "model-based, not design-based" in err
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert result["data"]["weights"]["kind"] == "survey"
    assert "poolwise fit" in poolwise.load_fit(tmp_path / "out").idata.attrs["poolwise_command"]


def test_cli_usage_errors_of_the_weights(tmp_path, capsys):
    path = _csv(tmp_path, BASE)
    rc = main(["fit", path, "-f", "y ~ x + (1 | g)", "--weights-kind", "survey", *CLI])
    _, err = capsys.readouterr()
    assert rc == 3 and "no weights column is given; pass weights='COL' (--weights COL)" in err
    rc = main(["fit", path, "-f", "y ~ x + (1 | g)", "--weights", "x", *CLI])
    _, err = capsys.readouterr()
    assert rc == 3 and "weights column 'x' is also used by the model (predictor)" in err
    with pytest.raises(SystemExit) as ex:
        main(["fit", path, "-f", "y ~ x + (1 | g)", "--weights-kind", "sampling"])
    assert ex.value.code == 2


def test_cli_compare_with_survey_weights_says_why_there_is_no_loo(tmp_path, capsys):
    df = BASE.assign(w=np.random.default_rng(1).uniform(0.3, 3.0, len(BASE)).round(3))
    path = _csv(tmp_path, df)
    rc = main(["compare", path, "-f", "y ~ x + (1 | g)", "--weights", "w", "--weights-kind",
               "survey", *CLI])
    out, err = capsys.readouterr()
    assert rc in (0, 1), err
    flat = " ".join(out.split())
    assert "Row-level LOO is not computed under survey weights" in flat
    assert "Leave-one-group-out is not computed under survey weights" in flat
    assert "PSIS-LOO, per row" not in out
