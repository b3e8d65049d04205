"""Grouped K-fold cross-validation: folds stratified by group size, every group scored once as
a new group by the fit without its fold, seeds recorded, the tables saved."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import warnings

import numpy as np
import pandas as pd
import pytest

import poolwise
from poolwise.comparison import kfold as K
from poolwise.comparison.logo import group_log_lik, log_mean_exp
from poolwise.comparison.pooling import compare_fits
from poolwise.errors import SpecError, StoreError
from poolwise.output.io import KFOLD_FILES, load_comparison, read_kfold, save_comparison
from poolwise.output.report import render_report, write_report
from poolwise.output.store import MANIFEST, safe_csv, write_manifest


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


# ---- a saved K-fold read back: `poolwise report DIR` shows it without the refits ----------

KFOLD_HEADING = "<h3>Predicting new groups (grouped K-fold cross-validation)</h3>"


def _kfold_section(html: str) -> str | None:
    """The K-fold part of a report (its heading, note and table), or None."""
    if KFOLD_HEADING not in html:
        return None
    part = html[html.index(KFOLD_HEADING):]
    return part[:part.index("<h3>", len(KFOLD_HEADING))]


def _stand_in_kfold(fits, monkeypatch):
    """Grouped 3-fold of ``fits``, each full fit standing in for its refits (fast; the
    real refits: test_kfold_runs_real_refits_and_is_saved)."""
    monkeypatch.setattr(K, "refit_without", lambda fit, *a, seed=None: fit)
    return K.kfold_compare(fits, 3, workers=1)


def _saved(comp, out):
    save_comparison(comp, out, extra={"report.html": lambda p: write_report(
        p, comp, figures=False)})
    return (out / "report.html").read_text(encoding="utf-8")


def _assert_same_kfold(got, want, *, mcse=True):
    assert (got.group, got.k, got.unit) == (want.group, want.k, want.unit)
    same = {"check_exact": True}  # every number as computed, to the last bit
    pd.testing.assert_frame_equal(got.table, want.table, **same)
    pd.testing.assert_frame_equal(got.pointwise, want.pointwise, **same)
    pd.testing.assert_frame_equal(got.folds, want.folds, **same)
    assert got.table.attrs["unit"] == want.table.attrs["unit"]
    if mcse:
        pd.testing.assert_frame_equal(got.mcse, want.mcse, **same)


def test_a_saved_kfold_is_read_back_into_the_rebuilt_report(fits, monkeypatch, tmp_path):
    """load_comparison gives the comparison its saved K-fold (every number as computed, no
    refit), and its report shows the same K-fold table as the original; a comparison saved
    without K-fold is rebuilt without one."""
    comp = dataclasses.replace(compare_fits(fits, loo=False, logo=False),
                               kfold=_stand_in_kfold(fits, monkeypatch))
    out = tmp_path / "cmp"
    first = _saved(comp, out)
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["kfold"] == {"group": "district", "k": 3, "unit": comp.kfold.unit}
    assert set(KFOLD_FILES.values()) <= set(manifest["files"])

    monkeypatch.setattr(K, "refit_without", lambda *a, **kw: pytest.fail("refitted"))
    loaded = load_comparison(out, loo=False, logo=False)
    _assert_same_kfold(loaded.kfold, comp.kfold)
    again = render_report(loaded, figures=False)
    assert _kfold_section(first) is not None
    assert _kfold_section(again) == _kfold_section(first)
    for _, r in comp.kfold.table.iterrows():
        assert f"{r['elpd']:.1f}" in _kfold_section(again)

    plain = tmp_path / "plain"
    assert _kfold_section(_saved(dataclasses.replace(comp, kfold=None), plain)) is None
    rebuilt = load_comparison(plain, loo=False, logo=False)
    assert rebuilt.kfold is None
    assert _kfold_section(render_report(rebuilt, figures=False)) is None


def test_a_folder_saved_before_the_mcse_file_loads_its_kfold(fits, monkeypatch, tmp_path):
    """A folder written before pooling_kfold_mcse.csv and the manifest's "kfold": the same
    table, groups and folds; the Monte Carlo SEs missing (NaN), not made up."""
    comp = dataclasses.replace(compare_fits(fits, loo=False, logo=False),
                               kfold=_stand_in_kfold(fits, monkeypatch))
    out = tmp_path / "old"
    _saved(comp, out)
    m = json.loads((out / MANIFEST).read_text())
    (out / KFOLD_FILES["kfold_mcse"]).unlink()
    keep = {k: v for k, v in m.items() if k not in (
        "files", "kind", "poolwise_manifest", "format", "written", "kfold")}
    write_manifest(out, "comparison", extra=keep)
    loaded = load_comparison(out, loo=False, logo=False)
    _assert_same_kfold(loaded.kfold, comp.kfold, mcse=False)
    assert loaded.kfold.mcse.isna().all().all()
    assert list(loaded.kfold.mcse.columns) == list(comp.kfold.mcse.columns)
    # a K-fold file missing from the manifest's list: refused, not half read
    (out / KFOLD_FILES["kfold_folds"]).unlink()
    write_manifest(out, "comparison", extra=keep)
    with pytest.raises(StoreError, match="K-fold result is incomplete"):
        load_comparison(out, loo=False, logo=False)


def test_read_kfold_restores_spreadsheet_safe_labels(tmp_path):
    """Labels that safe_csv changes ('-1' -> "'-1") or that look missing ('NA') come back as
    the fits have them; files that name other levels are refused."""
    labels = ["-1", "=x", "NA", "a b", "plain", "+2"]
    fold = K.fold_of_levels(np.arange(6), 2, seed=3)
    rng = np.random.default_rng(0)
    elpd = {m: rng.normal(-5, 1, 6) for m in ("none", "partial")}
    mcse = {m: rng.uniform(0, 0.1, 6) for m in ("none", "partial")}
    kf = K._comparison("g", 2, labels, fold, [11, 12], elpd, mcse)
    frames = {"kfold": kf.table, "kfold_groups": kf.pointwise, "kfold_folds": kf.folds,
              "kfold_mcse": kf.mcse}
    for key, frame in frames.items():
        safe_csv(frame, tmp_path / KFOLD_FILES[key], index=key != "kfold_folds")
    assert "'-1" in (tmp_path / KFOLD_FILES["kfold_groups"]).read_text()
    manifest = {"files": {n: {} for n in KFOLD_FILES.values()},
                "kfold": {"group": "g", "k": 2, "unit": kf.unit}}
    _assert_same_kfold(read_kfold(tmp_path, manifest, "g", labels), kf)
    assert read_kfold(tmp_path, {"files": {}}, "g", labels) is None
    with pytest.raises(StoreError, match="do not match its fits"):
        read_kfold(tmp_path, manifest, "g", [*labels[:-1], "other"])
    with pytest.raises(StoreError, match="do not match its fits"):
        read_kfold(tmp_path, manifest, "h", labels)


@pytest.mark.slow  # `poolwise report` computes LOO and leave-one-group-out again
def test_poolwise_report_dir_shows_the_saved_kfold(fits, monkeypatch, tmp_path):
    from poolwise.cli import main

    comp = dataclasses.replace(compare_fits(fits, loo=False, logo=False),
                               kfold=_stand_in_kfold(fits, monkeypatch))
    out = tmp_path / "cmp"
    first = _saved(comp, out)
    monkeypatch.setattr(K, "refit_without", lambda *a, **kw: pytest.fail("refitted"))
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert main(["report", str(out), "-o", str(tmp_path / "again.html")]) == 0
    again = (tmp_path / "again.html").read_text(encoding="utf-8")
    assert _kfold_section(again) is not None
    assert _kfold_section(again) == _kfold_section(first)
