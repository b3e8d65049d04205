"""The pooling narrative, one paragraph at a time, on an intercept-only model and on a model
with predictors (bangladesh ``use.contraception ~ urban + age.centered + (1 | district)``):
every quoted number is checked against the fit, recomputed here from the draws or the data,
and no sentence that is only true without predictors appears with them."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.special import expit

import poolwise
from poolwise.comparison.narrative import (
    boundary_paragraph,
    caution_paragraph,
    has_predictors,
    movers_paragraph,
    overall_paragraph,
    pooling_narrative,
    population_paragraph,
    predictive_paragraph,
    reference_values,
    uncertainty_paragraph,
)
from poolwise.comparison.pooling import compare_pooling
from poolwise.textfmt import fmt_sig

PLAIN = "use.contraception ~ 1 + (1 | district)"
WITH_PREDICTORS = "use.contraception ~ urban + age.centered + (1 | district)"


@pytest.fixture(scope="module")
def data(bangladesh):
    # districts 1-14: district 11 has no users (0 of 21), district 3 only users (2 of 2)
    return bangladesh[bangladesh["district"] <= 14].reset_index(drop=True)


def _compare(formula, data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", poolwise.ConvergenceWarning)
        warnings.simplefilter("ignore", poolwise.DataWarning)
        # PSIS leave-one-group-out: the exact refits are tested in tests/test_logo.py
        return compare_pooling(formula, data, tune=400, draws=400, seed=31, logo="psis")


@pytest.fixture(scope="module")
def plain(data):
    return _compare(PLAIN, data)


@pytest.fixture(scope="module")
def pred(data):
    return _compare(WITH_PREDICTORS, data)


@pytest.fixture(params=["plain", "pred"])
def comp(request, plain, pred):
    return {"plain": plain, "pred": pred}[request.param]


def _draws(fit, name):
    v = fit.posterior[name].values
    return v.reshape((-1,) + v.shape[2:])


def _row_proportion(fit, data):
    """Per draw: the model's proportion averaged over the data rows, from the draws and the
    data frame directly (no cells, no design matrices)."""
    post = fit.posterior
    eta = np.zeros((post.sizes["chain"] * post.sizes["draw"], len(data)))
    if "a_district" in post:
        labels = [int(v) for v in post["a_district"].coords["district"].values]
        col = {lab: j for j, lab in enumerate(labels)}
        a = _draws(fit, "a_district")
        eta += a[:, [col[int(d)] for d in data["district"]]]
    else:
        eta += _draws(fit, "Intercept")[:, None]
    for var in ("urban", "age.centered"):
        if f"b_{var}" in post:
            eta += _draws(fit, f"b_{var}")[:, None] * data[var].to_numpy()[None, :]
    return expit(eta).mean(axis=1)


def test_the_model_is_recognised(plain, pred):
    assert not has_predictors(plain.main_fit.spec)
    assert has_predictors(pred.main_fit.spec)
    assert reference_values(pred.main_fit.spec) == "urban = 0 and age.centered = 0"


def test_overall_paragraph(comp):
    text = overall_paragraph(comp)
    g, pop = comp.groups, comp.population
    assert f"= {fmt_sig(pop.loc['p_typical_group', 'mean'])} (89% HDI" in text
    lo, hi = g["shrinkage"].idxmax(), g["shrinkage"].idxmin()
    assert f"from {fmt_sig(g.loc[lo, 'shrinkage'], 2)} for district {lo} (n = " in text
    assert f"to {fmt_sig(g.loc[hi, 'shrinkage'], 2)} for district {hi} (n = " in text
    assert f"each of the {len(g)} districts" in text
    if has_predictors(comp.main_fit.spec):
        assert f"a_bar = {fmt_sig(pop.loc['a_bar', 'mean'])} on the log-odds scale" in text
        assert "at urban = 0 and age.centered = 0" in text
    else:
        assert "estimate towards the population mean logistic(a_bar)" in text


def test_movers_paragraph(comp):
    text = movers_paragraph(comp)
    g = comp.groups
    top = g["shift_p"].abs().idxmax()
    r = g.loc[top]
    quoted = (f"district {top} ({int(r['successes'])} of {int(r['n'])}: no pooling "
              f"{fmt_sig(r['none_p_mean'])}, partial pooling {fmt_sig(r['partial_p_mean'])}")
    assert quoted in text
    assert f"median n = {np.median(g['n']):g}" in text
    if has_predictors(comp.main_fit.spec):
        assert "with proportions at urban = 0 and age.centered = 0" in text
        assert "raw proportion far from" not in text  # raw vs intercept: not like with like
    else:
        assert "with proportions at" not in text


def test_boundary_paragraph(comp):
    text = boundary_paragraph(comp)
    assert text is not None
    g = comp.groups
    r = g.loc["11"]
    assert r["successes"] == 0 and r["boundary"] == "all failures"
    assert (f"district 11 (0 of 21): no pooling log-odds {fmt_sig(r['none_mean'])} "
            f"(SD {fmt_sig(r['none_sd'])}, proportion {fmt_sig(r['none_p_mean'])})") in text
    assert "normal(0, 1.5)" in text  # the fixed prior that alone stops the estimate
    assert f"sigma = {fmt_sig(comp.population.loc['sigma', 'mean'])}" in text
    if has_predictors(comp.main_fit.spec):
        assert "intercepts and proportions at urban = 0 and age.centered = 0" in text


def test_uncertainty_paragraph_claims_what_the_numbers_show(comp):
    text = uncertainty_paragraph(comp)
    g = comp.groups
    k = len(g) // 4
    by_n = g.sort_values("n", kind="stable")
    r_small = by_n.iloc[:k]["sd_ratio"].median()
    r_large = by_n.iloc[-k:]["sd_ratio"].median()
    assert f"on median {fmt_sig(r_small, 2)} times" in text
    assert f"it is {fmt_sig(r_large, 2)} times" in text
    narrows = r_small < 1 and r_small < r_large
    assert ("narrows the uncertainty most where the data are thinnest" in text) == narrows
    best = g["sd_ratio"].idxmin()
    if g.loc[best, "sd_ratio"] < 1:
        assert f"largest reduction is for district {best}" in text


def test_population_paragraph_without_predictors(plain):
    text = population_paragraph(plain)
    g, pop = plain.groups, plain.population
    s, n = int(g["successes"].sum()), int(g["n"].sum())
    assert f"raw pooled proportion {s}/{n} = {fmt_sig(s / n)}" in text
    cp = pop.loc["p_complete_pooling"]
    # complete pooling's one proportion, recomputed from its draws
    c = expit(_draws(plain.fits["complete"], "Intercept")).mean()
    assert fmt_sig(c) == fmt_sig(cp["mean"])
    reproduces = cp["hdi_89_lower"] <= s / n <= cp["hdi_89_upper"]
    assert reproduces  # 14 districts, 400 draws: the pooled proportion is inside the interval
    assert f"which complete pooling reproduces ({fmt_sig(c)}" in text
    assert f"raw proportions is {fmt_sig(np.mean(g['successes'] / g['n']))}" in text


def test_population_paragraph_with_predictors(pred, data):
    text = population_paragraph(pred)
    pop = pred.population
    s, n = int(data["use.contraception"].sum()), len(data)
    assert f"raw pooled proportion {s}/{n} = {fmt_sig(s / n)}" in text
    assert "not comparable with the raw pooled proportion" in text
    assert "complete pooling reproduces" not in text  # only true without predictors
    assert f"a_bar = {fmt_sig(pop.loc['a_bar', 'mean'])} is the log-odds of a typical" in text
    # like with like: the model's proportion over the data's own rows, recomputed from rows
    partial = _row_proportion(pred.main_fit, data).mean()
    complete = _row_proportion(pred.fits["complete"], data).mean()
    assert f"predicts a proportion of {fmt_sig(partial)}" in text
    assert f"with the same predictors, predicts {fmt_sig(complete)}" in text
    assert abs(partial - s / n) < 0.02  # and it is close to the raw pooled proportion
    assert (f"new district at urban = 0 and age.centered = 0 is "
            f"{fmt_sig(pop.loc['p_new_group_mean', 'mean'])}") in text


def test_predictive_and_caution(comp):
    text = predictive_paragraph(comp)
    t = comp.loo
    best = t.index[0]
    quoted = f"{best} has the highest expected log predictive density (elpd " \
        f"{t.loc[best, 'elpd']:.1f}"
    assert quoted in text
    assert "existing district" in text
    assert (caution_paragraph(comp) is None) == comp.ok


def test_narrative_assembles_the_paragraphs(comp):
    paras = pooling_narrative(comp)
    assert paras[0] == overall_paragraph(comp)
    assert paras[1] == movers_paragraph(comp)
    assert population_paragraph(comp) in paras
    for note in comp.notes:
        assert note in paras
    assert comp.narrative == paras
