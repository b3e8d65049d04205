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
    assert "a_bar ~ normal(0, 1.5)" in how and "exponential(1)" in how
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
    assert list(figs) == ["ppc", "prior"]
    figs = fit_figures(comp.fits["complete"])
    assert list(figs) == ["prior"]


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
