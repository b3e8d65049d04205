"""``method="approx"`` with survey weights: the sampler's pseudo-likelihood (each row's
log-likelihood times its weight, the weights scaled to sum to the rows), through the same cells
the sampler's binomial density takes (:func:`poolwise.data.cells.likelihood_cells`).

* the default tier: approx takes survey weights under every pooling, and its cells are the
  sampler's, whose sums per group are those of the data frame's weighted rows;
* the slow tier (the compiled approximation, about 45 s once per install): the marginal
  density equals a direct computation from the data frame, row by row, each row's
  log-likelihood times its scaled weight (rows sharing a cell with different weights
  included); on the bundled example approx agrees with NUTS under the same survey weights
  (the bar of tests/test_approx.py); the caveat is warned, kept in ``fit.warnings`` and
  ``result.json``; row-level LOO, leave-one-group-out and K-fold are refused as for NUTS, and
  ``compare --method approx`` skips them and says why.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
from reference.marginal import direct_log_density

import poolwise
from poolwise.cli import main
from poolwise.errors import DataWarning, SpecError
from poolwise.inference import approx
from poolwise.model import links
from poolwise.model.spec import build_model

FORMULA = "use.contraception ~ 1 + urban + (1 | district)"
POPULATION = ("Intercept", "b_urban", "sd_district")
CAVEAT = "model-based, not design-based"


def _agree_with_nuts(a: poolwise.Fit, n: poolwise.Fit, population: tuple[str, ...],
                     group: str) -> dict[str, float]:
    """The bar of tests/test_approx.py (population-level means within 0.15 NUTS posterior sd,
    their sds within 20%; group-level means within 0.25 sd at the 95th percentile); returns
    the figures."""
    pa, pn = a.posterior, n.posterior
    figures: dict[str, float] = {}
    for name in population:
        sd = float(pn[name].std())
        figures[f"{name} mean / sd"] = abs(float(pa[name].mean()) - float(pn[name].mean())) / sd
        figures[f"{name} sd ratio - 1"] = abs(float(pa[name].std()) / sd - 1.0)
    dims = ("chain", "draw")
    z = np.abs(pa[group].mean(dims) - pn[group].mean(dims)) / pn[group].std(dims)
    figures[f"{group} q95"] = float(np.quantile(z.values, 0.95))
    for name in population:
        assert figures[f"{name} mean / sd"] < 0.15, (name, figures)
        assert figures[f"{name} sd ratio - 1"] < 0.20, (name, figures)
    assert figures[f"{group} q95"] < 0.25, figures
    return figures


def _weighted(df: pd.DataFrame, seed: int = 20) -> pd.DataFrame:
    return df.assign(w=np.random.default_rng(seed).uniform(0.5, 2.0, len(df)))


def _quiet(f, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        return f(*args, **kwargs)


# ---- the default tier: no compiled approximation ---------------------------------------------


@pytest.mark.parametrize("pooling", ["partial", "none", "complete"])
def test_approx_takes_survey_weights_with_the_samplers_cells(bangladesh, pooling):
    from poolwise.engine.layout import _engine_cells

    df = _weighted(bangladesh)
    spec = _quiet(build_model, FORMULA, df, weights="w", weights_kind="survey",
                  pooling=pooling)
    approx.check_supported(spec)  # no refusal
    problem = approx._Problem.of(spec)
    _, y, n, _ = _engine_cells(spec)
    scale = len(df) / df["w"].sum()
    w = df["w"].to_numpy() * scale
    outcome = df["use.contraception"].to_numpy()
    # the weighted sums: not whole numbers, summing to the weighted rows
    assert problem.y.sum() == pytest.approx(float(np.sum(w * outcome)), rel=1e-12)
    assert problem.n.sum() == pytest.approx(len(df), rel=1e-12)
    assert not np.allclose(problem.y, np.round(problem.y))
    if pooling == "complete":  # every cell, as the sampler has them
        np.testing.assert_array_equal(problem.y, y)
        np.testing.assert_array_equal(problem.n, n)
        return
    # random weights: no two districts share their cells, so every cell is kept, in order
    assert problem.n_levels == spec.terms[0].group.n_levels and np.all(problem.weight == 1)
    np.testing.assert_array_equal(problem.y, y)
    np.testing.assert_array_equal(problem.n, n)
    # each district's weighted successes and trials, from the data frame
    groups, starts, _ = problem.members
    district = np.asarray(spec.terms[0].group.labels)[groups[starts[:-1]][problem.codes]]
    got = pd.DataFrame({"d": district, "y": problem.y, "n": problem.n}).groupby("d").sum()
    want = (pd.DataFrame({"d": df["district"], "y": w * outcome, "n": w})
            .groupby("d").sum())
    got.index = got.index.astype(want.index.dtype)
    np.testing.assert_allclose(got.loc[want.index].to_numpy(), want.to_numpy(), rtol=1e-12)


# ---- the slow tier: the compiled approximation ------------------------------------------------


def _simulated(G: int, seed: int, link: str) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=G)
    n = rng.integers(5, 31, size=G)
    exposure = rng.uniform(0.5, 2.0, size=G)
    eta = -0.5 + 0.4 * x + rng.normal(0, 0.7, size=G) + np.log(exposure)
    p = links.get(link).inverse(eta)
    return pd.DataFrame({"y": rng.binomial(n, p), "n": n, "x": x, "g": np.arange(G),
                         "exposure": exposure})


@pytest.mark.slow
@pytest.mark.parametrize("link", links.names())
def test_the_survey_weighted_marginal_density_equals_a_direct_computation(link):
    """log p(theta | y) of the pseudo-likelihood up to its constant, against the data frame
    row by row: each row's binomial log-likelihood times its weight (scaled to sum to the
    rows), each group's integral on a dense grid, the priors from SciPy. Five rows repeat
    another's predictors, group and offset with their own outcome and weight: one cell, two
    weights."""

    df = _simulated(30, seed=9, link=link)
    extra = df.iloc[:5].copy()
    extra["y"] = np.minimum(extra["n"], extra["y"] + 2)
    df = pd.concat([df, extra], ignore_index=True)
    df["v"] = np.random.default_rng(4).uniform(0.5, 2.0, len(df))
    spec = _quiet(build_model, "y | trials(n) ~ 1 + x + (1 | g) + offset(log(exposure))", df,
                  link=link, standardize=False, weights="v", weights_kind="survey")
    assert spec.design.n_cells == 30  # the repeated rows share their cells
    problem = approx._Problem.of(spec)
    thetas = np.array([[-0.4, 0.3, np.log(0.7)], [0.1, -0.2, np.log(1.3)]])
    got = problem.log_density(thetas, nodes=61)
    np.testing.assert_allclose(problem.log_density(thetas), got, atol=1e-3)
    w_all = df["v"].to_numpy() * len(df) / df["v"].sum()
    for theta, value in zip(thetas, got, strict=True):
        assert value == pytest.approx(direct_log_density(df, link, theta, w_all),
                                      abs=1e-6), link
    # the weights matter: the same rows unweighted give another density
    plain = build_model("y | trials(n) ~ 1 + x + (1 | g) + offset(log(exposure))",
                        df.drop(columns="v"), link=link, standardize=False)
    assert np.all(np.abs(approx._Problem.of(plain).log_density(thetas, nodes=61) - got) > 0.1)


@pytest.fixture(scope="module")
def survey_pair(bangladesh):
    df = _weighted(bangladesh)
    kw = {"weights": "w", "weights_kind": "survey"}
    with pytest.warns(DataWarning, match=CAVEAT):
        a = poolwise.fit(FORMULA, df, method="approx", seed=11, **kw)
    n = _quiet(poolwise.fit, FORMULA, df, seed=12, **kw)
    return df, a, n


@pytest.mark.slow
def test_survey_weighted_approx_agrees_with_nuts(survey_pair):
    _, a, n = survey_pair
    assert a.ok and n.ok and a.method == "approx"
    figures = _agree_with_nuts(a, n, POPULATION, "a_district")
    print("approx vs NUTS, survey weights:", json.dumps(figures))


@pytest.mark.slow
def test_the_caveat_is_kept_and_cross_validation_refused(survey_pair, tmp_path):
    from poolwise.comparison.loo import row_loo

    _, a, _ = survey_pair
    assert any(CAVEAT in w and "Kish's effective sample size" in w for w in a.warnings)
    poolwise.save_fit(a, tmp_path / "fit")
    result = json.loads((tmp_path / "fit" / "result.json").read_text())
    assert result["method"] == "approx"
    assert result["data"]["weights"]["kind"] == "survey"
    assert CAVEAT in result["data"]["weights"]["caveat"]
    assert any(CAVEAT in t for t in result["warnings"])
    back = poolwise.load_fit(tmp_path / "fit")
    assert back.method == "approx" and back.spec.design.weighting == a.spec.design.weighting
    with pytest.raises(SpecError, match="row-level LOO is not computed under survey weights"):
        row_loo(a)


@pytest.mark.slow
def test_compare_method_approx_with_survey_weights_says_why_there_is_no_loo(
        tmp_path, bangladesh, capsys):
    data = tmp_path / "survey.csv"
    _weighted(bangladesh).to_csv(data, index=False)
    code = main(["compare", str(data), "-f", FORMULA, "--method", "approx", "--weights", "w",
                 "--weights-kind", "survey", "--seed", "8", "--draws", "300", "--kfold", "2",
                 "--no-progress", "--out", str(tmp_path / "cmp")])
    out, err = capsys.readouterr()
    assert code == 0, out + err
    assert "status: OK | method approx" in out
    assert "warning: survey weights (column 'w')" in err and CAVEAT in err
    flat = " ".join(out.split())
    for what in ("Row-level LOO", "Leave-one-group-out", "K-fold cross-validation"):
        assert f"{what} is not computed under survey weights" in flat
    assert "PSIS-LOO, per row" not in out
