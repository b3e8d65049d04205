"""Pooling comparison: the seed's conclusions on the Bangladesh survey, shrinkage on
synthetic data, row-level LOO and the input checks of compare_fits."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

import poolwise
from poolwise.comparison.pooling import LOO_UNIT, compare_fits, compare_pooling, row_loo
from poolwise.errors import ConvergenceWarning, DataWarning, SpecError
from poolwise.inference.summary import interval_of

FORMULA = "use.contraception ~ 1 + (1 | district)"
SETTINGS = {"tune": 500, "draws": 500, "seed": 1301}

# The seed article's az.summary rows (mean, sd, ess_bulk), 4 x 1000 draws:
# fixed effects a[2] (district 3) and a[0] (district 1); mixed effects a_bar, a[2], a[0].
SEED_FE = {"3": (1.240, 1.156, 8900), "1": (-1.052, 0.205, 11082)}
SEED_ME = {"3": (-0.240, 0.501, 7501), "1": (-0.992, 0.198, 5973)}
SEED_A_BAR = (-0.540, 0.088, 3125)


@pytest.fixture(scope="module")
def comp():
    return compare_pooling(FORMULA, poolwise.load_example(), **SETTINGS)


def _agree(fit, name, seed_row):
    """|ours - seed| within 4 combined Monte Carlo standard errors."""
    s = fit.summary().loc[name]
    mean, sd, ess = seed_row
    tol = 4 * math.hypot(s["mcse_mean"], sd / math.sqrt(ess))
    assert abs(s["mean"] - mean) < tol, (name, s["mean"], mean, tol)


def test_table_layout(comp):
    g = comp.groups
    assert len(g) == 60 and comp.group == "district"
    assert "54" not in g.index and list(g.index[:3]) == ["1", "2", "3"]
    assert g["n"].sum() == 1934 and g["successes"].sum() == 759
    # every interval column says its kind and probability, as the CSV opened alone must
    assert list(g.columns) == [
        "label", "n", "rows", "successes", "raw_proportion",
        "none_mean", "none_sd", "none_hdi_89_lower", "none_hdi_89_upper",
        "none_p_mean", "none_p_sd", "none_p_hdi_89_lower", "none_p_hdi_89_upper",
        "partial_mean", "partial_sd", "partial_hdi_89_lower", "partial_hdi_89_upper",
        "partial_p_mean", "partial_p_sd", "partial_p_hdi_89_lower", "partial_p_hdi_89_upper",
        "shift_p", "shift_logit", "sd_ratio", "shrinkage", "boundary"]
    assert interval_of(g, "partial_p_") == ("partial_p_hdi_89_lower", "partial_p_hdi_89_upper")
    assert (g["partial_p_hdi_89_lower"] < g["partial_p_mean"]).all()
    assert (g["partial_p_mean"] < g["partial_p_hdi_89_upper"]).all()
    # ... and holds the fits' own summary intervals, on both scales
    s = comp.fits["none"].summary(scale="probability")
    np.testing.assert_array_equal(
        g["none_p_hdi_89_upper"], s.loc[[f"a_district[{lab}]" for lab in g.index],
                                        "hdi_89_upper"])
    s = comp.fits["partial"].summary()
    assert g.loc["11", "partial_hdi_89_lower"] == s.loc["a_district[11]", "hdi_89_lower"]
    assert g.loc["3", "boundary"] == "all successes"
    assert set(g.index[g["boundary"] == "all failures"]) == {"11", "49"}
    assert comp.ok and set(comp.fits) == {"complete", "none", "partial"}
    # the same settings for all three fits (a repaired fit may have moved on from them)
    first = {k: (f.config.seed, f.repair_log[0].settings["tune"], f.repair_log[0].settings["draws"])
             for k, f in comp.fits.items()}
    assert set(first.values()) == {(1301, 500, 500)}


def test_matches_the_seed_article(comp):
    for lab, row in SEED_FE.items():
        _agree(comp.fits["none"], f"a_district[{lab}]", row)
    for lab, row in SEED_ME.items():
        _agree(comp.fits["partial"], f"a_district[{lab}]", row)
    _agree(comp.fits["partial"], "Intercept", SEED_A_BAR)


def test_seed_conclusions(comp):
    g = comp.groups
    # the 2-woman district moves most on the outcome scale, downwards
    assert g["shift_p"].abs().idxmax() == "3"
    assert g.loc["3", "shift_p"] < -0.2
    # the all-zero district gets a finite partial-pooling estimate above its raw 0
    r = g.loc["11"]
    assert r["raw_proportion"] == 0.0
    assert 0.0 < r["partial_p_hdi_89_lower"] < r["partial_p_mean"] < r["partial_p_hdi_89_upper"]
    assert r["partial_p_hdi_89_upper"] < 0.5
    assert np.isfinite([r["partial_mean"], r["partial_sd"]]).all()
    assert r["partial_p_mean"] > r["none_p_mean"]
    # mixed-effects SDs below fixed-effects SDs for small districts, close for large ones
    by_n = g.sort_values("n")
    small, large = by_n.iloc[:15], by_n.iloc[-15:]
    assert (small["partial_sd"] < small["none_sd"]).all()
    assert small["sd_ratio"].median() < 0.8
    assert large["sd_ratio"].median() > 0.85
    assert (g["sd_ratio"] < 1.05).all()


def test_shrinkage(comp):
    s = comp.groups["shrinkage"]
    assert ((s >= 0) & (s <= 1)).all()
    assert spearmanr(comp.groups["n"], s).statistic < -0.9
    assert s.idxmax() == "3"


def test_population(comp):
    pop = comp.population
    assert pop.loc["raw_pooled_proportion", "mean"] == pytest.approx(759 / 1934)
    raw = comp.groups["raw_proportion"].mean()
    assert pop.loc["raw_mean_of_groups", "mean"] == pytest.approx(raw)
    a_bar = comp.fits["partial"].posterior["Intercept"].values.ravel()
    p = pop.loc["p_typical_group"]
    assert p["mean"] == pytest.approx(np.mean(1 / (1 + np.exp(-a_bar))))
    assert p["hdi_89_lower"] < p["mean"] < p["hdi_89_upper"]
    # logistic(a_bar) sits below the raw pooled proportion (the seed's two dashed lines)
    assert p["mean"] < pop.loc["raw_pooled_proportion", "mean"]
    c = pop.loc["p_complete_pooling"]
    assert c["hdi_89_lower"] < 759 / 1934 < c["hdi_89_upper"]
    assert pop.loc["sigma", "mean"] > 0
    assert list(pop.columns) == ["model", "scale", "mean", "sd", "hdi_89_lower",
                                 "hdi_89_upper", "description"]
    # the rows of the data have no draws, hence no interval
    assert pop.loc["raw_pooled_proportion", ["sd", "hdi_89_lower", "hdi_89_upper"]].isna().all()


def test_saved_tables_name_their_intervals(comp, tmp_path):
    """pooling_groups.csv, pooling_population.csv and each fit's summary.csv, opened alone,
    say that their intervals are 89% HDIs, and hold the comparison's numbers."""
    from poolwise.output.io import save_comparison

    save_comparison(comp, tmp_path / "c")
    groups = pd.read_csv(tmp_path / "c" / "pooling_groups.csv", index_col=0)
    assert [c for c in groups.columns if c.endswith(("_lower", "_upper"))] == [
        f"{m}_hdi_89_{b}" for m in ("none", "none_p", "partial", "partial_p")
        for b in ("lower", "upper")]
    np.testing.assert_array_equal(groups["none_hdi_89_upper"], comp.groups["none_hdi_89_upper"])
    pop = pd.read_csv(tmp_path / "c" / "pooling_population.csv", index_col=0)
    assert list(pop.columns) == ["model", "scale", "mean", "sd", "hdi_89_lower",
                                 "hdi_89_upper", "description"]
    assert pop.loc["sigma", "hdi_89_lower"] == comp.population.loc["sigma", "hdi_89_lower"]
    for key in ("complete", "none", "partial"):
        head = pd.read_csv(tmp_path / "c" / key / "summary.csv", nrows=1).columns
        assert list(head[1:5]) == ["mean", "sd", "hdi_89_lower", "hdi_89_upper"]


def test_interval_columns_follow_prob_and_kind(comp):
    """Another probability and kind rename every interval column of both tables (the names
    say what the numbers are); the values are the fits' 95% equal-tailed intervals."""
    other = compare_fits(comp.fits, prob=0.95, kind="eti", loo=False, logo=False)
    g, pop = other.groups, other.population
    assert [c for c in g.columns if c.endswith(("_lower", "_upper"))] == [
        f"{m}_eti_95_{b}" for m in ("none", "none_p", "partial", "partial_p")
        for b in ("lower", "upper")]
    assert interval_of(pop) == ("eti_95_lower", "eti_95_upper") and "eti_95_lower" in pop
    a_bar = comp.fits["partial"].posterior["Intercept"].values.ravel()
    np.testing.assert_allclose(pop.loc["a_bar", ["eti_95_lower", "eti_95_upper"]].to_numpy(
        dtype=float), np.quantile(a_bar, [0.025, 0.975]), rtol=1e-12)
    s = comp.fits["partial"].summary(prob=0.95, kind="eti", scale="probability")
    assert g.loc["3", "partial_p_eti_95_upper"] == s.loc["a_district[3]", "eti_95_upper"]


def test_loo(comp):
    t = comp.loo
    assert list(t.index) == [*t.index] and set(t.index) == {
        "complete pooling", "no pooling", "partial pooling"}
    assert t.loc["complete pooling", "rank"] == 2
    assert t.attrs["unit"] == LOO_UNIT and "existing group" in comp.loo_unit
    for key, pk in comp.pareto_k.items():
        assert pk.threshold <= 0.7 and pk.ok, key
        assert pk.max_k <= pk.threshold


def test_row_loo_equals_arviz(bangladesh):
    import arviz_stats as azs

    df = bangladesh[bangladesh["district"].isin(range(4, 12))].reset_index(drop=True)
    fit = poolwise.fit(FORMULA, df, tune=300, draws=300, seed=5)
    ours = row_loo(fit)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = azs.loo(fit.row_level(), pointwise=True)
    assert ours.n_data_points == len(df)
    assert ours.elpd == pytest.approx(ref.elpd, abs=1e-9)
    assert ours.se == pytest.approx(ref.se, abs=1e-9)
    assert ours.p == pytest.approx(ref.p, abs=1e-9)
    np.testing.assert_allclose(ours.elpd_i.values, ref.elpd_i.values, atol=1e-10)
    np.testing.assert_allclose(ours.pareto_k.values, ref.pareto_k.values, atol=1e-10)


def test_narrative_is_data_driven(comp):
    text = "\n".join(comp.narrative)
    g = comp.groups
    assert "district 3 (2 of 2" in text
    assert f"{g.loc['3', 'none_p_mean']:.3f}" in text
    assert f"{g.loc['3', 'partial_p_mean']:.3f}" in text
    assert f"{g.loc['11', 'partial_p_mean']:.3f}" in text
    assert "759/1934 = 0.392" in text
    assert "normal(0, 1.5)" in text  # the prior that alone stops all-0 / all-1 groups
    assert "all failures (0 of 21)" in text
    assert "existing district" in text and "Pareto k" in text
    assert f"{comp.population.loc['p_typical_group', 'mean']:.3f}" in text


def test_shrinkage_equal_rates_synthetic():
    rng = np.random.default_rng(7)
    n = np.round(np.geomspace(2, 200, 30)).astype(int)
    df = pd.DataFrame({"g": [f"g{i:02d}" for i in range(30)], "y": rng.binomial(n, 0.3), "n": n})
    fits = {
        k: poolwise.fit("y | trials(n) ~ 1 + (1 | g)", df, pooling=k, seed=11, tune=500,
                        draws=500)
        for k in ("none", "partial")
    }
    comp = compare_fits(fits, loo=False)
    s = comp.groups["shrinkage"].to_numpy()
    assert ((s >= 0) & (s <= 1)).all()
    assert spearmanr(comp.groups["n"], s).statistic < -0.8
    assert comp.loo is None and comp.pareto_k == {}


def test_compare_fits_checks_its_input(comp, bangladesh):
    fits = comp.fits
    with pytest.raises(SpecError, match="needs the none"):
        compare_fits({"partial": fits["partial"]})
    with pytest.raises(SpecError, match="keyed by"):
        compare_fits({"partial": fits["partial"], "none": fits["none"], "half": fits["none"]})
    with pytest.raises(SpecError, match="was fitted with pooling='partial'"):
        compare_fits({"partial": fits["partial"], "none": fits["partial"]})
    with pytest.raises(SpecError, match="no group term with a varying intercept for 'region'"):
        compare_fits(fits, group="region")
    with pytest.raises(SpecError, match="prob"):
        compare_fits(fits, prob=1.5)
    other = bangladesh[bangladesh["district"] <= 5].reset_index(drop=True)
    small = poolwise.fit(FORMULA, other, pooling="none", tune=300, draws=300, seed=3)
    with pytest.raises(SpecError, match="different data"):
        compare_fits({"partial": fits["partial"], "none": small})


def test_warnings_are_reemitted_once_with_the_model_name():
    from poolwise.comparison.pooling import _reemit

    def msg(cat, text):
        return warnings.WarningMessage(cat(text), cat, "x.py", 1)

    caught = [
        ("none", msg(DataWarning, "dropped 2 rows")),
        ("partial", msg(DataWarning, "dropped 2 rows")),
        ("partial", msg(ConvergenceWarning, "R-hat 1.05")),
    ]
    with warnings.catch_warnings(record=True) as out:
        warnings.simplefilter("always")
        _reemit(caught)
    texts = [(w.category, str(w.message)) for w in out]
    assert texts == [(DataWarning, "dropped 2 rows"),
                     (ConvergenceWarning, "partial pooling fit: R-hat 1.05")]
