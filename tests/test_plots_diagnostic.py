"""Diagnostic figures: each returns a matplotlib Figure, shows nothing, leaves nothing in pyplot."""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest

import poolwise
from poolwise.errors import ConvergenceWarning, DataWarning

FORMULA = "use.contraception ~ 1 + (1 | district)"


@pytest.fixture(scope="module")
def fits(bangladesh_first3):
    """The seed's divergent centered fit (no repair) and its repaired version, short chains."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        with pytest.warns(ConvergenceWarning):
            bad = poolwise.fit(FORMULA, bangladesh_first3, parameterization="centered",
                               target_accept=0.8, seed=1, tune=500, draws=500, repair=False)
        good = poolwise.fit(FORMULA, bangladesh_first3, parameterization="centered",
                            target_accept=0.8, seed=1)
    return bad, good


def _png(fig, tmp_path, name) -> None:
    from matplotlib.figure import Figure

    assert isinstance(fig, Figure)
    path = tmp_path / f"{name}.png"
    fig.savefig(path, dpi=60)
    assert path.stat().st_size > 1000


def _no_pyplot_figures() -> None:
    plt = sys.modules.get("matplotlib.pyplot")
    assert plt is None or plt.get_fignums() == []


def test_plots_import_lazily():
    import importlib

    mod = importlib.import_module("poolwise.output.plots")
    assert callable(mod.plot_pair_funnel)
    with pytest.raises(AttributeError):
        mod.no_such_plot  # noqa: B018


def test_trace_and_rank(fits, tmp_path):
    from poolwise.output.plots import plot_rank, plot_trace

    bad, _ = fits
    trace = plot_trace(bad)
    chains = bad.idata.posterior.sizes["chain"]
    # one (density, trace) pair of panels per variable: Intercept, sd_district, a_district[1..3]
    density, draws = trace.axes[0::2], trace.axes[1::2]
    assert [ax.get_xlabel() for ax in density] == ["Intercept", "sd_district", "a_district"]
    assert [ax.get_xlabel() for ax in draws] == ["Draw"] * 3
    # a line per chain (and per district for the three-level effect), in both panels
    assert [len(ax.get_lines()) for ax in density] == [chains, chains, 3 * chains]
    assert [len(ax.get_lines()) for ax in draws] == [chains, chains, 3 * chains]
    assert trace._suptitle.get_text().startswith("trace and density per chain")
    _png(trace, tmp_path, "trace")
    fig = plot_rank(bad)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["Intercept", "sd_district", "a_district[1]", "a_district[2]",
                      "a_district[3]"]
    _png(fig, tmp_path, "rank")
    _no_pyplot_figures()


def test_pair_plot_marks_every_divergence(fits, tmp_path):
    from poolwise.output.plots import plot_pair_funnel

    bad, _ = fits
    fig = plot_pair_funnel(bad)
    n_div = bad.diagnosis.divergences
    assert n_div > 0
    ax = fig.axes[0]
    assert ax.get_yscale() == "log" and ax.get_xlabel() == "Intercept"
    red = [c for c in ax.collections if c.get_label().startswith("divergent")]
    assert len(red) == 1 and len(red[0].get_offsets()) == n_div
    assert [a.get_xlabel() for a in fig.axes] == ["Intercept", "a_district[1]", "a_district[2]",
                                                  "a_district[3]"]
    _png(fig, tmp_path, "pair")
    with pytest.raises(ValueError, match="no variable"):
        plot_pair_funnel(bad, sd="sd_nothing")


def test_ess_across_repair_attempts(fits, tmp_path):
    from poolwise.output.plots import plot_ess_attempts

    bad, good = fits
    fig = plot_ess_attempts(good)
    ax = fig.axes[0]
    n_attempts = len(good.repair_log)
    assert len(ax.containers) == n_attempts
    heights = [b.get_height() for b in ax.containers[-1]]
    ess = good.repair_log[-1].ess_bulk
    labels = [t.get_text() for t in ax.get_xticklabels()]
    np.testing.assert_allclose(heights, [ess[p] for p in labels])
    _png(fig, tmp_path, "ess")
    fig2 = plot_ess_attempts({"centered": bad, "repaired": good})
    assert len(fig2.axes[0].containers) == 2
    with pytest.raises(TypeError, match="takes a Fit"):
        plot_ess_attempts(42)  # type: ignore[arg-type]


def test_candidate_sd_priors(fits, tmp_path):
    from poolwise.output.plots import CANDIDATE_SD_PRIORS, plot_sd_priors

    _, good = fits
    fig = plot_sd_priors(fit=good)
    labels = [ln.get_label() for ln in fig.axes[0].get_lines()]
    assert [lab.split(":")[0] for lab in labels] == list(CANDIDATE_SD_PRIORS)
    assert "half_normal(0.1): 95% below 0.2" in labels
    _png(fig, tmp_path, "sd_priors")
    fig2 = plot_sd_priors(["half_normal(1)"], xmax=2.0)
    assert len(fig2.axes[0].get_lines()) == 1


def test_all_diagnostic_figures(fits, tmp_path):
    from poolwise.output.plots import diagnostic_figures

    _, good = fits
    figs = diagnostic_figures(good)
    assert set(figs) == {"trace", "rank", "pair", "ess", "sd_priors"}
    _no_pyplot_figures()


def test_the_chains_of_the_worst_parameters(fits, tmp_path, clipped_texts):
    """What a report shows of the sampler: the components with the largest R-hat and the
    smallest ESS first, then the group SDs; one trace row per component (a line per chain,
    divergences marked) and one rank panel each."""
    from poolwise.output.plots import chain_figures, chain_parameters, plot_rank, plot_trace

    bad, _ = fits
    d = bad.diagnosis
    params = chain_parameters(bad)
    rhat = dict(zip(d.parameters, d.rhat, strict=True))
    assert params[0] == max(rhat, key=rhat.get)  # the worst R-hat comes first
    ess = {p: min(b, t) for p, b, t in zip(d.parameters, d.ess_bulk, d.ess_tail, strict=True)}
    assert min(ess, key=ess.get) in params[:4]
    assert "sd_district" in params and len(params) == len(set(params)) <= 6
    chains = bad.idata.posterior.sizes["chain"]
    fig = plot_trace(bad, parameters=params)
    traces, densities = fig.axes[0::2], fig.axes[1::2]
    assert [ax.get_ylabel() for ax in traces] == params
    for ax, label in zip(traces, params, strict=True):
        lines = ax.get_lines()
        assert len(lines) == chains + 1  # a line per chain and the divergence ticks
        marks = lines[-1]
        assert marks.get_marker() == "|" and len(marks.get_xdata()) > 0
        name, _, level = label.partition("[")
        v = bad.posterior[name]
        if level:  # a_district[3]: the level labelled 3
            dim = v.dims[-1]
            v = v.isel({dim: [str(x) for x in v[dim].values].index(level[:-1])})
        np.testing.assert_array_equal(lines[0].get_ydata(), v.values[0])  # chain 0
    for ax in densities:  # a density per chain, each with its own dash
        assert len({str(p.get_linestyle()) for p in ax.patches}) == chains
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend[:chains] == [f"chain {c}" for c in range(chains)]
    assert legend[-1] == f"divergent transition ({d.divergences})"
    rank = plot_rank(bad, parameters=params)
    assert [ax.get_title() for ax in rank.axes if ax.get_title()] == params
    figs = chain_figures(bad)
    assert list(figs) == ["trace", "rank", "energy"]
    energy = figs["energy"][1].axes[0]
    legend = [t.get_text() for t in energy.get_legend().get_texts()]
    assert legend[:2] == ["marginal energy (centred)", "energy transition (draw to draw)"]
    assert legend[2:] == [f"chain {c}: E-BFMI {b:.2f}" for c, b in enumerate(d.bfmi)]
    caption = figs["trace"][0]
    assert caption.index(params[0]) < caption.index(params[1])
    for _, f in figs.values():
        assert clipped_texts(f) == []
    with pytest.raises(ValueError, match="no level"):
        plot_trace(bad, parameters=["a_district[99]"])
    _no_pyplot_figures()
