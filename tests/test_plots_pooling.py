"""The comparison figures: built without pyplot, labelled, reproducible byte for byte."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import poolwise
from poolwise.comparison.pooling import compare_pooling
from poolwise.output.plots.pooling import (
    fit_figures,
    plot_forest_comparison,
    plot_ppc_groups,
    plot_predicted_proportions,
    plot_prior_predictive,
    plot_sd_comparison,
    plot_shrinkage,
    pooling_figures,
    prior_group_proportions,
)
from poolwise.output.report import figure_png

FORMULA = "use.contraception ~ 1 + (1 | district)"


@pytest.fixture(scope="module")
def comp(bangladesh):
    df = bangladesh[bangladesh["district"] <= 14].reset_index(drop=True)
    # PSIS leave-one-group-out: the exact refits are tested in tests/test_logo.py
    return compare_pooling(FORMULA, df, tune=400, draws=400, seed=31, logo="psis")


def _texts(fig):
    ax = fig.axes[0]
    return ax.get_title(), ax.get_xlabel(), ax.get_ylabel()


def test_pooling_figures_are_labelled(comp):
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    figs = pooling_figures(comp)
    assert list(figs) == ["forest", "sd", "proportions", "shrinkage", "ppc", "prior"]
    for name, (caption, fig) in figs.items():
        title, xlabel, ylabel = _texts(fig)
        assert caption and xlabel and ylabel, name
        assert title or fig.get_suptitle(), name
        assert fig.get_figwidth() <= 12.0  # readable at report width (1200 px at 100 dpi)
    assert plt.get_fignums() == before  # nothing registered with pyplot, nothing shown


def test_forest_has_both_models_and_all_groups(comp):
    fig = plot_forest_comparison(comp)
    left, right = fig.axes[:2]
    assert "no pooling" in left.get_title() and "partial pooling" in right.get_title()
    labels = [t.get_text() for t in left.get_yticklabels()]
    assert labels[0] == "1 (n=117)" and len(labels) == len(comp.groups)


def test_sd_plot_has_identity_line_and_sizes(comp):
    fig = plot_sd_comparison(comp)
    ax = fig.axes[0]
    line = ax.get_lines()[0]
    np.testing.assert_allclose(line.get_xdata(), line.get_ydata())
    sizes = ax.collections[0].get_sizes()
    n = comp.groups["n"].to_numpy()
    assert np.argmax(sizes) == np.argmax(n) and np.argmin(sizes) == np.argmin(n)


def test_proportions_plot_lines(comp):
    fig = plot_predicted_proportions(comp)
    ax = fig.axes[0]
    pop = comp.population
    ys = sorted(round(float(line.get_ydata()[0]), 6) for line in ax.get_lines()
                if len(set(line.get_ydata())) == 1 and len(line.get_ydata()) == 2)
    want = sorted(round(float(pop.loc[k, "mean"]), 6)
                  for k in ("p_typical_group", "raw_pooled_proportion"))
    assert ys == want
    legend = " ".join(t.get_text() for t in fig.legends[0].get_texts())
    assert "population mean" in legend and "raw pooled proportion" in legend


def test_shrinkage_and_ppc(comp):
    fig = plot_shrinkage(comp)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    assert "Shrinkage" in ax.get_title()
    fig = plot_ppc_groups(comp.main_fit)
    assert "of 14 observed" in fig.axes[0].get_title()


def test_prior_predictive(comp):
    draws, how = prior_group_proportions(comp.fits["partial"].spec, seed=1)
    assert draws is not None and ((draws >= 0) & (draws <= 1)).all()
    # the priors of the fitted model, in its own parameter names
    assert how == ("Intercept ~ normal(0, 1.5); a_district[j] ~ normal(Intercept, "
                   "sd_district), sd_district ~ exponential(1)")
    flat = dataclasses.replace(
        comp.fits["complete"].spec,
        fixed_priors=(poolwise.flat(),),
    )
    draws, why = prior_group_proportions(flat)
    assert draws is None and "flat" in why
    fig = plot_prior_predictive({"complete": flat, "partial": comp.fits["partial"].spec})
    assert "flat" in fig.axes[0].get_title()


def test_png_is_byte_identical(comp):
    a = figure_png(plot_shrinkage(comp))
    b = figure_png(plot_shrinkage(comp))
    assert a == b and a.startswith(b"\x89PNG")
    assert b"Software" not in a and b"matplotlib" not in a


def test_single_fit_figures(comp):
    figs = fit_figures(comp.fits["partial"])
    assert list(figs) == ["coefficients", "caterpillar_a_district", "ppc", "prior"]
    figs = fit_figures(comp.fits["complete"])
    assert list(figs) == ["coefficients", "prior"]
    figs = fit_figures(comp.fits["none"])  # no pooling: the caterpillar has no population line
    assert list(figs) == ["coefficients", "caterpillar_a_district", "ppc", "prior"]
    ax = figs["caterpillar_a_district"][1].axes[0]
    assert not [ln for ln in ax.get_lines() if ln.get_linestyle() == "--"]


def test_no_title_or_label_is_clipped(comp, clipped_texts):
    """Titles are wrapped to their axes (the posterior predictive check's title of a long
    model name used to run off the figure), and so are the prior predictive legends."""
    figs = {**pooling_figures(comp), **fit_figures(comp.fits["partial"])}
    for name, (_, fig) in figs.items():
        assert clipped_texts(fig) == [], name


def test_prior_predictive_lines_are_all_visible(comp):
    """No pooling and complete pooling put the same prior on a district's intercept, so
    their curves coincide: each model has its own style (the lower line wide and pale, the
    upper one narrow and dashed), and each legend entry gives that model's priors."""
    fig = plot_prior_predictive({k: f.spec for k, f in comp.fits.items()})
    ax = fig.axes[0]
    steps = {p.get_label().split(":")[0]: p for p in ax.patches}
    assert len(steps) == 3
    styles = {(str(p.get_linestyle()), p.get_linewidth()) for p in steps.values()}
    assert len(styles) == 3
    none = next(p for k, p in steps.items() if k.startswith("no pooling"))
    complete = next(p for k, p in steps.items() if k.startswith("complete pooling"))
    assert none.get_linewidth() > complete.get_linewidth()  # the wide one shows around
    assert complete.get_zorder() > none.get_zorder()  # the narrow one on top
    assert complete.get_linestyle() != "-"
    legend = [t.get_text().replace("\n", " ") for t in fig.legends[0].get_texts()]
    assert any("a_district[j] ~ normal(0, 1.5) independently (no pooling)" in t
               for t in legend)
    assert any(t.startswith("complete pooling: Intercept ~ normal(0, 1.5)") for t in legend)


def test_shrinkage_2d_for_varying_slopes():
    """Varying intercepts and slopes get the 2-D shrinkage plot: one arrow per group from the
    no-pooling to the partial-pooling (intercept, slope), plus the population ellipses."""
    import warnings

    import numpy as np
    import pandas as pd

    import poolwise
    from poolwise.output.plots.pooling import plot_shrinkage_2d, pooling_figures

    rng = np.random.default_rng(8)
    J = 12
    a = rng.normal(-0.3, 0.6, J)
    b = 0.5 - 0.5 * (a + 0.3) + rng.normal(0, 0.2, J)
    rows = []
    for j in range(J):
        for x in (0, 1):
            n = int(rng.integers(5, 40))
            p = 1 / (1 + np.exp(-(a[j] + b[j] * x)))
            rows.append({"g": f"g{j}", "x": x, "n": n, "s": int(rng.binomial(n, p))})
    data = pd.DataFrame(rows)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", poolwise.ConvergenceWarning)
        comp = poolwise.compare_pooling("s | trials(n) ~ x + (1 + x | g)", data, seed=4,
                                        draws=400, tune=400, loo=False)
    figs = pooling_figures(comp)
    assert "shrinkage_2d" in figs
    fig = plot_shrinkage_2d(comp)
    ax = fig.axes[0]
    arrows = [c for c in ax.texts if getattr(c, "arrow_patch", None) is not None]
    assert len(arrows) == J
    assert "slope of x" in ax.get_ylabel()
    # the comparison's titles and legends name the model that was fitted
    forest = figs["forest"][1]
    assert forest.axes[1].get_title().replace("\n", " ") == (
        "partial pooling (varying intercepts and slopes of x, correlated)")

    # one fit of varying slopes: a caterpillar per coefficient, the intercept-slope plot, and
    # titles and legends of the slopes model (never "varying intercepts)")
    from poolwise.output.plots.estimates import plot_caterpillar

    fit = comp.main_fit
    figs = fit_figures(fit)
    assert list(figs) == ["coefficients", "caterpillar_a_g", "caterpillar_b_g__x",
                          "intercept_slope_g", "ppc", "prior"]
    coef_ax = figs["coefficients"][1].axes
    assert [t.get_text() for t in coef_ax[0].get_yticklabels()] == ["Intercept", "b_x"]
    assert [t.get_text() for t in coef_ax[1].get_yticklabels()] == [
        "sd_g__Intercept", "sd_g__x", "cor_g__Intercept__x"]
    slope = plot_caterpillar(fit, "g", "x").axes[0]
    assert len(slope.get_yticklabels()) == J
    assert "slope of x" in slope.get_title().replace("\n", " ")
    pop = [ln for ln in slope.get_lines() if ln.get_linestyle() == "--"]
    assert len(pop) == 1 and "b_x" in pop[0].get_label()
    scatter = figs["intercept_slope_g"][1]
    assert scatter.axes[0].collections[0].get_offsets().shape == (J, 2)
    assert "correlation" in scatter.axes[0].get_title().replace("\n", " ")
    texts = []
    for _, f in figs.values():
        texts += [f.get_suptitle()] + [t.get_text() for leg in f.legends for t in leg.get_texts()]
        texts += [a.get_title() for a in f.axes]
    texts = [t.replace("\n", " ") for t in texts]
    assert not [t for t in texts if "(varying intercepts)" in t]
    assert any("varying intercepts and slopes of x" in t for t in texts)
    prior = " ".join(t.get_text() for t in figs["prior"][1].legends[0].get_texts())
    prior = prior.replace("\n", " ")
    assert "b_x ~ normal(0, 1)" in prior
    assert "(a_g[j], b_g__x[j]) ~ MVNormal((Intercept, b_x)" in prior
    assert "correlations ~ lkj(2)" in prior


@pytest.fixture(scope="module")
def comp_predictors(bangladesh):
    import warnings

    df = bangladesh[bangladesh["district"] <= 14].reset_index(drop=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", poolwise.ConvergenceWarning)
        comp = compare_pooling("use.contraception ~ urban + age.centered + (1 | district)", df,
                               tune=300, draws=300, seed=31, loo=False)
    return comp, df


def _points(ax):
    """(label, y) of the plotted point series (markers without lines)."""
    return {line.get_label(): np.asarray(line.get_ydata(), dtype=float)
            for line in ax.get_lines() if line.get_marker() in ("o", "x")}


def test_proportions_plot_with_predictors_compares_like_with_like(comp_predictors):
    """Each district's posterior mean proportion over its own rows (recomputed here from the
    draws and the data rows), not the proportion at urban = 0 and age = 0."""
    from scipy.special import expit

    comp, df = comp_predictors
    fig = plot_predicted_proportions(comp)
    ax = fig.axes[0]
    pts = _points(ax)
    partial = next(v for k, v in pts.items() if k.startswith("partial pooling"))
    post = comp.main_fit.posterior
    a = post["a_district"].values.reshape(-1, post.sizes["district"])
    col = {int(v): j for j, v in enumerate(post["a_district"].coords["district"].values)}
    b_u = post["b_urban"].values.reshape(-1, 1)
    b_a = post["b_age.centered"].values.reshape(-1, 1)
    want = []
    for lab in comp.groups.index:
        rows = df[df["district"] == int(lab)]
        eta = (a[:, [col[int(lab)]] * len(rows)] + b_u * rows["urban"].to_numpy()
               + b_a * rows["age.centered"].to_numpy())
        want.append(expit(eta).mean(axis=1).mean())
    np.testing.assert_allclose(partial, want, rtol=1e-10)
    # at the reference values every district sat low; over its own rows it sits near its raw
    raw = comp.groups["raw_proportion"].to_numpy()
    big = comp.groups["n"].to_numpy() >= 30
    assert np.abs(partial - raw)[big].max() < np.abs(comp.groups["partial_p_mean"] - raw)[big].max()
    np.testing.assert_allclose(pts["raw proportion in the data"], raw)
    legend = " ".join(t.get_text() for t in fig.legends[0].get_texts())
    assert "raw pooled proportion" in legend and "inverse link of a_bar" not in legend
    assert "own rows" in ax.get_title()
    caption = pooling_figures(comp)["proportions"][0]
    assert "averaged over its own rows" in caption


def test_proportions_plot_without_predictors_is_unchanged(comp):
    pts = _points(plot_predicted_proportions(comp).axes[0])
    partial = next(v for k, v in pts.items() if k.startswith("partial pooling"))
    np.testing.assert_allclose(partial, comp.groups["partial_p_mean"].to_numpy())


@pytest.fixture(scope="module")
def many_groups_fit():
    """80 groups (above the 60 drawn one tick each), 3 Bernoulli rows each, short chains."""
    import warnings

    import pandas as pd

    rng = np.random.default_rng(12)
    G = 80
    a = rng.normal(-0.2, 0.7, G)
    g = np.repeat(np.arange(G), 3)
    y = (rng.random(len(g)) < 1 / (1 + np.exp(-a[g]))).astype(int)
    data = pd.DataFrame({"y": y, "g": g})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", poolwise.ConvergenceWarning)
        warnings.simplefilter("ignore", poolwise.DataWarning)
        return poolwise.fit("y ~ 1 + (1 | g)", data, tune=200, draws=200, seed=3,
                            repair=False)


def test_many_groups_are_checked_in_bins(many_groups_fit, clipped_texts):
    """More than 60 groups: the posterior predictive check is drawn in bins that do not
    depend on the outcome (no tick per group), and the caterpillar shows the extremes and a
    sample, saying how many of how many."""
    from poolwise.output.plots.estimates import plot_caterpillar

    fit = many_groups_fit
    fig = plot_ppc_groups(fit)
    assert len(fig.axes) == 3
    counts, means, spread = fig.axes
    # one point per possible proportion 0/3 .. 3/3, the observed counts of groups
    observed = [ln for ln in counts.get_lines() if ln.get_label() == "observed"][0]
    assert [t.get_text() for t in counts.get_xticklabels()] == ["0/3", "1/3", "2/3", "3/3"]
    g = fit.spec.terms[0].group
    want = np.bincount((g.level_successes).astype(int), minlength=4)
    np.testing.assert_array_equal(observed.get_ydata(), want)
    for ax in (means, spread):
        assert len(ax.get_xticklabels()) == 1  # every group has 3 trials: one size bin
        assert "inside the 89% interval" in ax.get_title().replace("\n", " ")
    title = fig.get_suptitle().replace("\n", " ")
    assert "80 gs in bins" in title
    cat = plot_caterpillar(fit, "g").axes[0]
    assert len(cat.get_yticklabels()) == 60
    assert "60 of 80 levels" in cat.get_title().replace("\n", " ")
    assert clipped_texts(fig) == []


def test_level_replicates_by_blocks(many_groups_fit, monkeypatch):
    """The replicated group totals come a block of draws at a time (never draws x cells at
    once); the block size does not change them, and they average to the expected totals."""
    from poolwise.model import predictive
    from poolwise.model.predictive import cell_probabilities, level_replicates

    fit = many_groups_fit
    spec, post = fit.spec, fit.posterior
    g = spec.terms[0].group
    draws = np.arange(0, 800, 4)
    whole = level_replicates(spec, post, np.random.default_rng(1), draws, g.codes, g.n_levels)
    monkeypatch.setattr(predictive, "_BLOCK", 3 * spec.design.n_cells)  # 3 draws a block
    blocks = level_replicates(spec, post, np.random.default_rng(1), draws, g.codes,
                              g.n_levels)
    np.testing.assert_array_equal(whole, blocks)
    expected = predictive.level_sums(cell_probabilities(spec, post, draws) * spec.design.n,
                                     g.codes, g.n_levels)
    assert whole.shape == (len(draws), g.n_levels)
    assert abs(whole.mean() - expected.mean()) < 0.05
