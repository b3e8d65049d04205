"""Grouped K-fold cross-validation: folds stratified by group size, every group scored once as
a new group by the fit without its fold, seeds recorded, the tables saved."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import poolwise
from poolwise.comparison import kfold as K
from poolwise.comparison.logo import group_log_lik, log_mean_exp
from poolwise.comparison.pooling import compare_fits
from poolwise.errors import SpecError


@pytest.fixture(scope="module")
def fits(bangladesh):
    df = bangladesh[bangladesh["district"] <= 9]
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for p in ("none", "partial"):
            out[p] = poolwise.fit("use.contraception ~ 1 + (1 | district)", df, pooling=p,
                                  seed=4, tune=150, draws=150, chains=2,
                                  prior_sensitivity=False)
    return out


def test_folds_are_stratified_by_group_size():
    sizes = np.array([1, 50, 2, 40, 3, 30, 4, 20, 5, 10])
    fold = K.fold_of_levels(sizes, 2, seed=1)
    assert np.bincount(fold).tolist() == [5, 5]
    # each fold holds small and large groups alike: dealt out in size order
    order = np.argsort(sizes, kind="stable")
    assert set(fold[order[0::2]]) == {fold[order[0]]} and set(fold[order[1::2]]) == {
        fold[order[1]]}
    assert np.array_equal(K.fold_of_levels(sizes, 2, seed=1), fold)


def test_every_group_is_scored_by_the_fit_without_its_fold(fits, monkeypatch):
    """A stand-in refit (the full fit, whose draws are known): each group's elpd is
    log mean exp of its log density as a new group, in the right place, fold by fold."""
    calls = []

    def fake_refit(fit, levels, scoring, group, *, seed=None):
        calls.append((fit.spec.pooling, tuple(levels), seed))
        return fit

    monkeypatch.setattr(K, "refit_without", fake_refit)
    res = K.kfold_compare(fits, 3, workers=1)
    scoring = fits["partial"].spec
    for key, f in fits.items():
        want = log_mean_exp(group_log_lik(f, scoring, group="district"))
        np.testing.assert_allclose(res.pointwise[key].to_numpy(), want, rtol=1e-12)
    folds = res.pointwise["fold"].to_numpy()
    assert sorted(np.bincount(folds)) == [3, 3, 3]
    assert {(p, lv) for p, lv, _ in calls} == {
        (p, tuple(np.flatnonzero(folds == f))) for p in fits for f in range(3)}
    assert list(res.folds["seed"]) == sorted({s for *_, s in calls}, key=list(
        res.folds["seed"]).index)
    assert res.table.index[0] in fits and {"elpd", "se", "elpd_diff", "dse"} <= set(
        res.table.columns)


@pytest.mark.slow  # six refits
def test_kfold_runs_real_refits_and_is_saved(fits, tmp_path):
    comp = compare_fits(fits, loo=False, logo=False, kfold=3)
    kf = comp.kfold
    assert kf.k == 3 and len(kf.pointwise) == 9
    assert np.isfinite(kf.pointwise[["none", "partial"]].to_numpy()).all()
    from poolwise.output.io import save_comparison

    names = save_comparison(comp, tmp_path / "cmp")
    assert {"kfold", "kfold_groups", "kfold_folds"} <= set(names)
    folds = pd.read_csv(names["kfold_folds"])
    assert list(folds.columns) == ["fold", "groups", "seed", "labels"]
    assert folds["groups"].sum() == 9
    # the report shows the table, each model's elpd as computed
    from poolwise.output.report import render_report

    html = render_report(comp, figures=False)
    assert "Predicting new groups (grouped K-fold cross-validation)" in html
    assert "in 3 folds, stratified by their size" in html
    for m, r in kf.table.iterrows():
        assert f"{r['elpd']:.1f}" in html, m


def test_bad_k_is_a_clear_error(fits):
    with pytest.raises(SpecError, match="kfold must be a whole number from 2"):
        K.kfold_compare(fits, 1)
    with pytest.raises(SpecError, match="kfold must be a whole number >= 2"):
        poolwise.compare_pooling("use.contraception ~ 1 + (1 | district)", "no.csv", kfold=1)
