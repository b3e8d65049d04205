"""Figures of a pooling comparison (the seed's four plots, a shrinkage plot) and two checks of
one fit: the posterior predictive check of group proportions and the prior predictive
distribution of a group's proportion.

Every function builds a :class:`matplotlib.figure.Figure` directly (no pyplot, so no global
state and nothing is shown) and returns it. Random draws (predictive simulations) use a
generator seeded from the fit's seed, so the same fit gives the same figure.

Why one module: every figure of a pooling comparison reads the same PoolingComparison tables
and shares the axis, colour and label helpers at the top.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from poolwise.inference.summary import interval_columns, interval_of
from poolwise.model import naming
from poolwise.output.plots import style

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from poolwise.comparison.pooling import PoolingComparison
    from poolwise.inference.fitted import Fit
    from poolwise.model.spec import ModelSpec

__all__ = [
    "plot_forest_comparison",
    "plot_sd_comparison",
    "plot_predicted_proportions",
    "group_mean_proportions",
    "plot_shrinkage",
    "plot_ppc_groups",
    "plot_ppc_bins",
    "plot_prior_predictive",
    "pooling_figures",
    "fit_figures",
    "COLORS",
]

COLORS = style.COLORS
_figure = style.figure
_rc = style.rc
_pct = style.pct
_tick_fontsize = style.tick_fontsize


def _label(spec: ModelSpec) -> str:
    """The fitted model in words (:func:`poolwise.model.describe.pooling_title`)."""
    from poolwise.model.describe import pooling_title

    return pooling_title(spec)


def _model(comp: PoolingComparison, key: str) -> str:
    return _label(comp.fits[key].spec)


def _group_ticklabels(comp: PoolingComparison) -> list[str]:
    g = comp.groups
    return [f"{lab} (n={int(n)})" for lab, n in zip(g.index, g["n"], strict=True)]


# ---- 1. forest plots side by side ----------------------------------------------------------


def plot_forest_comparison(comp: PoolingComparison) -> Figure:
    """The group intercepts (log-odds) of both models side by side, with their intervals."""
    g = comp.groups
    L = len(g)
    y = np.arange(L)[::-1]
    ci = f"{_pct(comp.prob)} {comp.kind.upper()}"
    with _rc():
        fig = _figure(11, max(4.0, 0.17 * L + 1.6))
        axes = fig.subplots(1, 2, sharex=True, sharey=True)
        a_bar = comp.population.loc["a_bar", "mean"]
        for ax, model in zip(axes, ("none", "partial"), strict=True):
            c = COLORS[model]
            ax.hlines(y, *(g[col] for col in interval_of(g, f"{model}_")), color=c, lw=1.6)
            ax.plot(g[f"{model}_mean"], y, "o", color=c, ms=4)
            ax.axvline(a_bar, color=COLORS["partial"], ls="--", lw=1,
                       label=f"population mean of the intercepts, a_bar = {a_bar:.2f}")
            style.set_title(ax, _model(comp, model))
            ax.set_xlabel(f"log-odds (mean and {ci})")
            ax.grid(axis="y", visible=False)
        axes[0].set_yticks(y, _group_ticklabels(comp), fontsize=_tick_fontsize(L))
        axes[0].set_ylabel(comp.group)
        axes[0].set_ylim(-1, L)
        fig.legend(*axes[1].get_legend_handles_labels(), loc="outside lower center",
                   frameon=False)
        style.suptitle(fig, f"Posterior of each {comp.group}'s intercept")
    return fig


# ---- 2. posterior SD, no pooling vs partial pooling -----------------------------------------


def _size(n: np.ndarray, n_max: float) -> np.ndarray:
    return 12 + 300 * np.sqrt(np.asarray(n, dtype=float) / n_max)


def plot_sd_comparison(comp: PoolingComparison) -> Figure:
    """Posterior SD of each group's log-odds: no pooling (x) vs partial pooling (y), sized by n."""
    g = comp.groups
    n = g["n"].to_numpy(dtype=float)
    x, yv = g["none_sd"].to_numpy(), g["partial_sd"].to_numpy()
    top = 1.08 * float(max(x.max(), yv.max()))
    with _rc():
        fig = _figure(7.5, 6.2)
        ax = fig.subplots()
        ax.plot([0, top], [0, top], color="black", ls="--", lw=1, label="equal SD")
        ax.scatter(x, yv, s=_size(n, n.max()), color=COLORS["partial"], alpha=0.35,
                   edgecolor=COLORS["partial"], lw=0.8)
        # the three most-reduced groups, labels stacked in the empty space below the cloud
        picked = g.loc[g["sd_ratio"].nsmallest(3).index].sort_values("none_sd", ascending=False)
        for i, (lab, r) in enumerate(picked.iterrows()):
            ax.annotate(f"{comp.group} {lab} (n={int(r['n'])})", (r["none_sd"], r["partial_sd"]),
                        xytext=(-6, -(22 + 16 * i)), textcoords="offset points", ha="right",
                        va="center", fontsize=9,
                        arrowprops={"arrowstyle": "-", "lw": 0.6, "color": "#444444",
                                    "shrinkA": 0, "shrinkB": 3})
        for v in _legend_sizes(n):
            ax.scatter([], [], s=_size(np.array([v]), n.max()), color=COLORS["partial"],
                       alpha=0.35, label=f"n = {v:g}")
        ax.set_xlim(0, top)
        ax.set_ylim(0, top)
        ax.set_aspect("equal")
        ax.set_xlabel("posterior SD of log-odds, no pooling (fixed effects)")
        ax.set_ylabel("posterior SD of log-odds, partial pooling")
        style.set_title(ax, "Impact of sample size on the posterior SD")
        ax.legend(loc="upper left", labelspacing=1.2, borderpad=0.9)
    return fig


def _legend_sizes(n: np.ndarray) -> list[float]:
    lo, hi = float(n.min()), float(n.max())
    cands = [float(v) for v in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
             if lo <= v <= hi]
    if len(cands) <= 3:
        return cands or [hi]
    return [cands[0], cands[len(cands) // 2], cands[-1]]


# ---- 3. predicted proportions on the outcome scale -----------------------------------------


def _with_predictors(comp: PoolingComparison) -> bool:
    from poolwise.comparison.narrative import has_predictors

    return has_predictors(comp.main_fit.spec)


def _population_lines(ax: Axes, comp: PoolingComparison) -> None:
    """The population mean (inverse link of a_bar) and, for a model without predictors, the
    raw pooled proportion. With predictors a_bar is at the predictors' zero values, which the
    label says, and the raw pooled proportion (an average over the data) is left out."""
    from poolwise.comparison.narrative import reference_values

    pop = comp.population
    p = pop.loc["p_typical_group", "mean"]
    if _with_predictors(comp):
        ax.axhline(p, color=COLORS["partial"], ls="--", lw=1.2,
                   label=f"population mean at {reference_values(comp.main_fit.spec)}, "
                         f"inverse link of a_bar = {p:.3g}")
        return
    raw = pop.loc["raw_pooled_proportion", "mean"]
    ax.axhline(p, color=COLORS["partial"], ls="--", lw=1.2,
               label=f"population mean, inverse link of a_bar = {p:.3g}")
    ax.axhline(raw, color=COLORS["complete"], ls=":", lw=1.5,
               label=f"raw pooled proportion = {raw:.3g}")


def group_mean_proportions(
    fit: Fit, group: str, *, prob: float = 0.89, kind: str = "hdi"
) -> pd.DataFrame:
    """Each group's posterior mean proportion over its own rows: per draw, the trials-weighted
    average of the cells' predicted proportions (each cell at its own predictor values), then
    mean and ``prob`` interval. The like-with-like counterpart of the group's raw proportion
    when the model has predictors. Columns ``mean`` and the interval (``hdi_89_lower``,
    ``hdi_89_upper``; ``attrs`` hold ``prob`` and ``kind``), one row per level."""
    import pandas as pd
    from arviz_stats.base import array_stats

    from poolwise.model.predictive import cell_probabilities
    from poolwise.model.prior_predictive import level_proportions

    spec = fit.spec
    terms = [t for t in spec.terms if t.name == group]
    if not terms:
        raise ValueError(f"the fit has no group term {group!r}")
    gd = terms[0].group
    p = cell_probabilities(spec, fit.posterior)  # (S, cells)
    per_draw = level_proportions(p, spec.design.n, gd.codes, gd.n_levels)  # (S, L)
    fn = array_stats.hdi if kind == "hdi" else array_stats.eti
    lo, hi = np.moveaxis(fn(per_draw, prob, axis=0), -1, 0)
    lo_name, hi_name = interval_columns(prob, kind)
    out = pd.DataFrame(
        {"mean": per_draw.mean(axis=0), lo_name: lo, hi_name: hi},
        index=pd.Index([str(v) for v in gd.labels], name=group),
    )
    out.attrs.update({"prob": prob, "kind": kind})
    return out


def plot_predicted_proportions(comp: PoolingComparison) -> Figure:
    """Each group's predicted proportion with its interval, both models, against its raw
    proportion (the seed's outcome-scale plot).

    Without predictors: the proportion of each group's intercept, the population mean
    (inverse link of a_bar) and the raw pooled proportion. With predictors the intercepts are
    at the predictors' zero values, so like is compared with like instead: each group's
    posterior mean proportion over its own rows (:func:`group_mean_proportions`)."""
    g = comp.groups
    L = len(g)
    x = np.arange(L)
    ci = f"{_pct(comp.prob)} {comp.kind.upper()}"
    predictors = _with_predictors(comp)
    if predictors:
        est = {m: group_mean_proportions(comp.fits[m], comp.group, prob=comp.prob,
                                         kind=comp.kind).loc[list(g.index)]
               for m in ("none", "partial")}
        cols = {m: (est[m]["mean"], *(est[m][c] for c in interval_of(est[m]))) for m in est}
    else:
        cols = {m: (g[f"{m}_p_mean"], *(g[c] for c in interval_of(g, f"{m}_p_")))
                for m in ("none", "partial")}
    with _rc():
        fig = _figure(max(9.0, min(12.0, 0.2 * L + 3)), 5.8)
        ax = fig.subplots()
        for model, off in (("none", -0.17), ("partial", 0.17)):
            c = COLORS[model]
            mean, lo, hi = cols[model]
            ax.vlines(x + off, lo, hi, color=c, lw=1.3, alpha=0.8)
            ax.plot(x + off, mean, "o" if model == "partial" else "s", color=c, ms=4.5,
                    label=f"{_model(comp, model)}: mean and {ci}")
        ax.plot(x, g["raw_proportion"], "x", color=COLORS["raw"], ms=4.5, mew=1.1,
                label="raw proportion in the data")
        if predictors:
            raw = comp.population.loc["raw_pooled_proportion", "mean"]
            ax.axhline(raw, color=COLORS["complete"], ls=":", lw=1.5,
                       label=f"raw pooled proportion = {raw:.3g}")
        else:
            _population_lines(ax, comp)
        ax.set_xticks(x, [str(v) for v in g.index], rotation=90, fontsize=_tick_fontsize(L))
        ax.set_xlim(-1, L)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(axis="x", visible=False)
        ax.set_xlabel(comp.group)
        if predictors:
            ax.set_ylabel("predicted proportion, averaged over the group's rows")
            style.set_title(ax, f"Predicted proportion per {comp.group} over its own rows: "
                                "no pooling vs partial pooling")
        else:
            ax.set_ylabel("predicted proportion of successes")
            style.set_title(
                ax, f"Predicted proportion per {comp.group}: no pooling vs partial pooling")
        fig.legend(loc="outside lower center", ncols=2, frameon=False)
    return fig


# ---- 4. shrinkage ------------------------------------------------------------------------


def plot_shrinkage(comp: PoolingComparison, *, label_top: int = 4) -> Figure:
    """Arrows from each group's no-pooling to its partial-pooling estimate (probability
    scale) against the group's size; point size is n, the line is the population mean."""
    from matplotlib.ticker import ScalarFormatter

    g = comp.groups
    n = g["n"].to_numpy(dtype=float)
    x = n
    with _rc():
        fig = _figure(10, 6.0)
        ax = fig.subplots()
        ax.set_xscale("log")
        _population_lines(ax, comp)
        sizes = _size(n, n.max())
        for xi, a, b in zip(x, g["none_p_mean"], g["partial_p_mean"], strict=True):
            if abs(b - a) > 1e-3:
                ax.annotate("", xy=(xi, b), xytext=(xi, a), zorder=5,
                            arrowprops={"arrowstyle": "-|>", "color": "#555555", "lw": 0.9,
                                        "shrinkA": 2, "shrinkB": 2, "mutation_scale": 9})
        ax.scatter(x, g["none_p_mean"], s=sizes, facecolor="white",
                   edgecolor=COLORS["none"], lw=1.2, label=_model(comp, "none"), zorder=3)
        ax.scatter(x, g["partial_p_mean"], s=sizes, color=COLORS["partial"], alpha=0.75,
                   label=_model(comp, "partial"), zorder=4)
        order = g["shift_p"].abs().sort_values(ascending=False, kind="stable").index[:label_top]
        ax.set_xlim(n.min() / 1.3, n.max() * 1.3)
        ax.set_ylim(-0.02, 1.02)
        placed: list[tuple[float, float]] = []  # label anchors in pixels, to avoid overlaps
        for lab in sorted(order, key=lambda k: (g.loc[k, "none_p_mean"], g.loc[k, "n"])):
            r = g.loc[lab]
            px, py = ax.transData.transform((r["n"], r["none_p_mean"]))
            dy = 0.0
            while any(abs(px - qx) < 150 and abs(py + dy - qy) < 13 for qx, qy in placed):
                dy += 13.0
            placed.append((px, py + dy))
            ax.annotate(
                f"{comp.group} {lab}: {int(r['successes'])}/{int(r['n'])}",
                (r["n"], r["none_p_mean"]), xytext=(8, dy * 72 / fig.dpi),
                textcoords="offset points", fontsize=9, va="center",
            )
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.set_xlabel(f"observations in the {comp.group} (n, log scale)")
        ax.set_ylabel("estimated proportion at the predictors' zero values"
                      if _with_predictors(comp) else "estimated proportion of successes")
        style.set_title(
            ax, f"Shrinkage towards the population mean, by {comp.group} size\n"
                "(arrow: no-pooling estimate to partial-pooling estimate; point size: n)"
        )
        fig.legend(loc="outside lower center", ncols=2, frameon=False, markerscale=0.6)
    return fig


def slope_coef(comp: PoolingComparison) -> str | None:
    """The first varying slope of the compared group term, or None for intercepts only."""
    for term in comp.main_fit.spec.terms:
        if term.name == comp.group:
            slopes = [c for c in term.group.coef_names if c != "Intercept"]
            if slopes and "Intercept" in term.group.coef_names:
                return slopes[0]
    return None


def plot_shrinkage_2d(comp: PoolingComparison, *, coef: str | None = None) -> Figure:
    """Varying intercepts and slopes: arrows from each group's no-pooling (intercept, slope)
    to its partial-pooling estimate (posterior means, logit scale); point size is n; the
    cross and the ellipses (50% and 89% of the population distribution, from the posterior
    means of the SDs and the correlation) show where partial pooling pulls the groups."""
    coef = coef or slope_coef(comp)
    if coef is None:
        raise ValueError(f"the term for {comp.group!r} has no varying slope to plot")
    g = comp.group
    none, partial = comp.fits["none"].posterior, comp.fits["partial"].posterior
    term = next(t for t in comp.fits["partial"].spec.terms if t.name == g)
    slope_var = naming.total_name(term, coef)
    a_var = naming.total_name(term, naming.INTERCEPT)
    a0 = none[a_var].mean(("chain", "draw")).values
    b0 = none[slope_var].mean(("chain", "draw")).values
    a1 = partial[a_var].mean(("chain", "draw")).values
    b1 = partial[slope_var].mean(("chain", "draw")).values
    n = comp.groups["n"].to_numpy(dtype=float)
    mu = np.array([float(partial[naming.fixed_name(naming.INTERCEPT)].mean()),
                   float(partial[naming.fixed_name(coef)].mean())])
    sd = np.array([float(partial[naming.sd_name(term, naming.INTERCEPT)].mean()),
                   float(partial[naming.sd_name(term, coef)].mean())])
    cor_name = naming.cor_name(term, naming.INTERCEPT, coef)
    rho = float(partial[cor_name].mean()) if cor_name in partial else 0.0
    from poolwise.output.plots.estimates import population_ellipse

    with _rc():
        fig = _figure(8.5, 7.0)
        ax = fig.subplots()
        for level, ls in ((0.5, "--"), (0.89, ":")):
            pts = population_ellipse(mu, sd, rho, level)
            ax.plot(pts[0], pts[1], ls=ls, color="#444444", lw=1,
                    label=f"{round(100 * level)}% of the population of {g}s")
        for xa, ya, xb, yb in zip(a0, b0, a1, b1, strict=True):
            ax.annotate("", xy=(xb, yb), xytext=(xa, ya), zorder=2,
                        arrowprops={"arrowstyle": "-|>", "color": "#888888", "lw": 0.7,
                                    "shrinkA": 2, "shrinkB": 2, "mutation_scale": 7})
        sizes = _size(n, n.max())
        ax.scatter(a0, b0, s=sizes, facecolor="white", edgecolor=COLORS["none"], lw=1.1,
                   label=_model(comp, "none"), zorder=3)
        ax.scatter(a1, b1, s=sizes, color=COLORS["partial"], alpha=0.75,
                   label=_model(comp, "partial"), zorder=4)
        ax.plot(*mu, marker="+", color="black", ms=14, mew=2, ls="", zorder=5,
                label="population mean")
        ax.set_xlabel(f"{g} intercept (log-odds at {coef} = 0)")
        ax.set_ylabel(f"{g} slope of {coef} (log-odds)")
        style.set_title(
            ax, f"Shrinkage of intercepts and slopes by {g} (correlation {rho:+.2f})\n"
                "(arrow: no-pooling estimate to partial-pooling estimate; point size: n)"
        )
        fig.legend(loc="outside lower center", ncols=3, frameon=False, markerscale=0.6)
    return fig


# ---- 5. posterior predictive check per group ---------------------------------------------


def group_predictive(
    fit: Fit, *, group: str | None = None, max_draws: int = 1000
) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray]:
    """Replicated group proportions from the posterior predictive distribution.

    Returns the group design, the observed proportions (L,), the trials (L,) and the
    replicated proportions (draws, L). Draws are thinned evenly to at most ``max_draws``
    and simulated a block of draws at a time (:func:`poolwise.model.predictive.
    level_replicates`: never draws x cells at once); the binomial noise uses a generator
    seeded from the fit's seed.
    """
    from poolwise.model.predictive import level_replicates, thinned_draws

    spec = fit.spec
    terms = [t for t in spec.terms if group is None or t.name == group]
    if not terms:
        raise ValueError(f"the fit has no group term{' ' + group if group else ''}")
    gd = terms[0].group
    rng = np.random.default_rng([int(fit.config.seed or 0), 7])
    post = fit.posterior
    keep = thinned_draws(post, max_draws)
    y_rep = level_replicates(spec, post, rng, keep, gd.codes, gd.n_levels)
    trials = gd.level_trials
    return gd, gd.level_successes / trials, trials, y_rep / trials


def _model_words(fit: Fit) -> str:
    return _label(fit.spec)


def plot_ppc_groups(fit: Fit, *, prob: float = 0.89, group: str | None = None) -> Figure:
    """Observed proportion per group against the posterior predictive interval of the
    proportion a replicate of that group's data would show (same n). A group with more than
    ``MAX_LEVELS_SHOWN`` levels is checked in bins instead (:func:`plot_ppc_bins`)."""
    terms = [t for t in fit.spec.terms if group is None or t.name == group]
    if terms and terms[0].group.n_levels > style.MAX_LEVELS_SHOWN:
        return plot_ppc_bins(fit, prob=prob, group=terms[0].name)
    from arviz_stats.base import array_stats

    gd, obs, trials, rep = group_predictive(fit, group=group)
    L = len(obs)
    x = np.arange(L)
    lo, hi = np.moveaxis(array_stats.eti(rep, prob, axis=0), -1, 0)
    lo50, hi50 = np.moveaxis(array_stats.eti(rep, 0.5, axis=0), -1, 0)
    outside = (obs < lo) | (obs > hi)
    with _rc():
        fig = _figure(max(9.0, min(12.0, 0.2 * L + 3)), 5.4)
        ax = fig.subplots()
        ax.vlines(x, lo, hi, color="#9db7d5", lw=2.2, label=f"replicated, {_pct(prob)} interval")
        ax.vlines(x, lo50, hi50, color=COLORS["partial"], lw=4.0, label="replicated, 50% interval")
        ax.plot(x, obs, "o", color=COLORS["observed"], ms=4.5, label="observed proportion",
                zorder=3)
        if outside.any():
            ax.plot(x[outside], obs[outside], "o", ms=10, mfc="none", mec="black", mew=1.2,
                    label=f"outside the {_pct(prob)} interval ({int(outside.sum())} of {L})")
        ax.set_xticks(x, [str(v) for v in gd.labels], rotation=90, fontsize=_tick_fontsize(L))
        ax.set_xlim(-1, L)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(axis="x", visible=False)
        ax.set_xlabel(gd.name)
        ax.set_ylabel("proportion of successes")
        style.set_title(
            ax, f"Posterior predictive check, {_model_words(fit)}: {int((~outside).sum())} of "
                f"{L} observed {gd.name} proportions inside the {_pct(prob)} interval"
        )
        fig.legend(loc="outside lower center", ncols=4, frameon=False)
    return fig


def _bins(values: np.ndarray, k: int) -> np.ndarray:
    """Each value's bin (0..): quantile bins of ``values``, at most ``k``, one per distinct
    value when there are at most ``k`` of them."""
    uniq = np.unique(values)
    if len(uniq) <= k:
        return np.searchsorted(uniq, values)
    edges = np.unique(np.quantile(values, np.linspace(0, 1, k + 1)))
    return np.clip(np.searchsorted(edges, values, side="right") - 1, 0, len(edges) - 2)


def _proportion_bins(obs: np.ndarray, trials: np.ndarray, k: int = 10
                     ) -> tuple[np.ndarray, list[str]]:
    """Fixed bins of a proportion (they do not depend on the data, so observed and replicated
    counts compare like with like): one per possible value when every level has the same
    few trials (0/5, 1/5, ...), else 0, ``k`` equal bins of (0, 1) and 1. Returns the edges
    (for ``np.digitize``) and the labels."""
    n = np.unique(trials)
    if len(n) == 1 and n[0] <= 12:
        vals = np.arange(int(n[0]) + 1) / n[0]
        edges = (vals[1:] + vals[:-1]) / 2
        return edges, [f"{i}/{int(n[0])}" for i in range(int(n[0]) + 1)]
    inner = np.linspace(0, 1, k + 1)
    edges = np.concatenate([[1e-12], inner[1:-1], [1 - 1e-12]])
    labels = ["0"] + [f"{a:.1f}-{b:.1f}" for a, b in zip(inner[:-1], inner[1:], strict=True)]
    return edges, [*labels, "1"]


def _ppc_bin_panels(name: str, obs: np.ndarray, trials: np.ndarray,
                    rep: np.ndarray) -> list[tuple]:
    """The three panels of :func:`plot_ppc_bins`: (key, ticks, observed, replicated, y label,
    x label, title) for the distribution of the level proportions and, over levels binned by
    their trials, the pooled proportion and the spread of the proportions."""
    L = len(obs)
    edges, labels = _proportion_bins(obs, trials)
    B = len(labels)
    count_obs = np.bincount(np.digitize(obs, edges), minlength=B)
    count_rep = np.stack([np.bincount(np.digitize(r, edges), minlength=B) for r in rep])
    size = _bins(trials, 8)
    by_size = []
    for b in range(int(size.max()) + 1):
        m = size == b
        if m.sum() < 2:
            continue
        lo_n, hi_n = trials[m].min(), trials[m].max()
        lab = f"{lo_n:.0f}" if lo_n == hi_n else f"{lo_n:.0f}-{hi_n:.0f}"
        n_b = trials[m].sum()
        pooled_rep = (rep[:, m] * trials[m]).sum(axis=1) / n_b
        by_size.append((f"n {lab}\n({int(m.sum()):,})",
                        float((obs[m] * trials[m]).sum() / n_b), pooled_rep,
                        float(obs[m].std()), rep[:, m].std(axis=1)))
    panels = [
        ("count", labels, count_obs.astype(float), count_rep.astype(float),
         f"{name}s with this proportion", f"proportion of successes in a {name}",
         f"Distribution of the {L:,} {name} proportions"),
        ("mean", [r[0] for r in by_size], np.array([r[1] for r in by_size]),
         np.stack([r[2] for r in by_size], axis=1) if by_size else np.zeros((len(rep), 0)),
         "proportion of successes (all trials)", f"{name}s binned by trials n (count)",
         "Proportion by size"),
        ("sd", [r[0] for r in by_size], np.array([r[3] for r in by_size]),
         np.stack([r[4] for r in by_size], axis=1) if by_size else np.zeros((len(rep), 0)),
         f"SD of the proportions between {name}s", f"{name}s binned by trials n (count)",
         f"Spread between {name}s by size"),
    ]
    return panels


def plot_ppc_bins(fit: Fit, *, prob: float = 0.89, group: str | None = None,
                  max_draws: int = 200) -> Figure:
    """The posterior predictive check of a group with many levels, in bins that do not
    depend on the outcome (one tick per level would be a smear), each an observed statistic
    against the interval of the same statistic in replicated data (at most ``max_draws``
    replicates): left, how many levels have each proportion (the distribution of the level
    proportions); middle and right, the levels binned by their trials n, the proportion of
    all their trials and the spread (SD) of their proportions: too much or too little
    pooling shows in the spread."""
    gd, obs, trials, rep = group_predictive(fit, group=group, max_draws=max_draws)
    L = len(obs)
    ci = _pct(prob)

    def interval(v: np.ndarray, p: float) -> np.ndarray:  # equal-tailed
        return np.quantile(v, [(1 - p) / 2, (1 + p) / 2], axis=0)

    panels = _ppc_bin_panels(gd.name, obs, trials, rep)
    markers = {"count": "o", "mean": "s", "sd": "D"}
    with _rc():
        fig = _figure(12.0, 5.6)
        axes = fig.subplots(1, 3, width_ratios=[1.5, 1, 1])
        for ax, (key, ticks, observed, replicated, ylab, xlab, title) in zip(
                axes, panels, strict=True):
            x = np.arange(len(ticks))
            if len(x):
                lo, hi = interval(replicated, prob)
                lo50, hi50 = interval(replicated, 0.5)
                ax.vlines(x, lo, hi, color="#9db7d5", lw=2.6,
                          label=f"replicated, {ci} interval")
                ax.vlines(x, lo50, hi50, color=COLORS["partial"], lw=5.0,
                          label="replicated, 50% interval")
                ax.plot(x, observed, markers[key], color=COLORS["observed"], ms=6, zorder=3,
                        label="observed")
                inside = int(((observed >= lo) & (observed <= hi)).sum())
                title += f": {inside} of {len(x)} inside the {ci} interval"
            ax.set_xticks(x, ticks, rotation=0 if len(x) <= 8 else 60,
                          fontsize=_tick_fontsize(len(x)))
            ax.set_xlim(-0.7, max(len(x), 1) - 0.3)
            ax.set_xlabel(xlab)
            ax.set_ylabel(ylab)
            ax.grid(axis="x", visible=False)
            style.set_title(ax, title, fontsize=11)
        handles, names = axes[0].get_legend_handles_labels()
        fig.legend(handles, names, loc="outside lower center", ncols=3, frameon=False)
        style.suptitle(fig, f"Posterior predictive check, {_model_words(fit)}: {L:,} "
                            f"{gd.name}s in bins ({len(rep):,} replicated data sets)")
    return fig


# ---- 6. prior predictive -------------------------------------------------------------------


def _prior_description(spec: ModelSpec) -> str:
    """The priors the simulation draws from, every parameter class and group term of the
    fitted model (:func:`poolwise.model.describe.prior_summary`)."""
    from poolwise.model.describe import prior_summary

    return "; ".join(prior_summary(spec))


def prior_group_proportions(
    spec: ModelSpec, *, draws: int | None = None, seed: int = 0
) -> tuple[np.ndarray | None, str]:
    """Prior predictive proportions of the groups of the first group term, pooled over
    groups and draws (:func:`poolwise.prior_predictive.prior_predictive`; for a model without
    group terms, of the cells), and a description of the priors. ``None`` and the reason when
    a prior is flat. Default ``draws``: enough for about 10^5-10^6 simulated proportions
    (the cost is draws x cells), between 200 and 4000."""
    from poolwise.model.prior_predictive import prior_predictive

    if draws is None:  # enough simulated proportions for a smooth histogram, cheaply
        units = spec.terms[0].group.n_levels if spec.terms else spec.design.n_cells
        draws = int(np.clip(min(200_000 // max(units, 1), 4_000_000 // max(
            spec.design.n_cells, 1)), 200, 4000))
    pp = prior_predictive(spec, draws=draws, seed=seed)
    if pp.skipped is not None:
        return None, pp.skipped
    props = pp.proportions
    if spec.terms:
        props = props[:, : spec.terms[0].group.n_levels]
    vals = props.ravel()
    return vals[np.isfinite(vals)], _prior_description(spec)


def plot_prior_predictive(
    specs: dict[str, ModelSpec], observed: np.ndarray | None = None, *, seed: int = 0,
    group: str = "group",
) -> Figure:
    """Prior predictive distribution of a group's proportion for each model in ``specs``
    (keyed by pooling), with the observed raw group proportions as a rug. Each model has its
    own colour, line style and width (``style.LINE_STYLES``), so curves of the same shape
    (no and complete pooling put the same prior on a group's intercept) stay visible; the
    legend gives each model's priors."""
    bins = np.linspace(0, 1, 41)
    width = 10.0
    with _rc():
        fig = _figure(width, 6.4)
        ax = fig.subplots()
        notes = []
        for key, spec in specs.items():
            draws, how = prior_group_proportions(spec, seed=seed)
            name = _label(spec)
            if draws is None:
                notes.append(f"{name}: {how}")
                continue
            ax.hist(draws, bins=list(bins), density=True, histtype="step",
                    color=COLORS.get(key, "black"),
                    label=style.wrap(f"{name}: {how}", width - 0.8, 9.5),
                    **style.LINE_STYLES.get(key, {"lw": 2}))
        if observed is not None and len(observed):
            ax.plot(observed, np.zeros_like(observed), "|", color="black", ms=18, mew=1.2,
                    label=f"observed raw {group} proportions", clip_on=False)
        ax.set_xlim(-0.01, 1.01)
        ax.set_ylim(bottom=0)
        ax.set_xlabel(f"proportion of successes in a {group}")
        ax.set_ylabel("prior density")
        title = f"Prior predictive distribution of a {group}'s proportion"
        if notes:
            title += "\n" + "; ".join(notes)
        style.set_title(ax, title)
        fig.legend(loc="outside lower center", ncols=1, frameon=False)
    return fig


# ---- collections ---------------------------------------------------------------------------


def pooling_figures(comp: PoolingComparison) -> dict[str, tuple[str, Figure]]:
    """All comparison figures in report order: name -> (caption, figure)."""
    partial = comp.main_fit
    ci = f"{_pct(comp.prob)} {comp.kind.upper()}"
    g = comp.group
    return {
        "forest": (
            f"Posterior mean and {ci} of each {g}'s intercept (log-odds), no pooling (left) and "
            f"partial pooling (right); the dashed line is the population mean a_bar.",
            plot_forest_comparison(comp),
        ),
        "sd": (
            f"Posterior SD of each {g}'s log-odds under no pooling (x) and partial pooling (y), "
            f"point size proportional to the square root of n; the dashed line marks equal SD.",
            plot_sd_comparison(comp),
        ),
        "proportions": (
            (f"Predicted proportion per {g} with {ci}, both models, each {g}'s posterior mean "
             f"proportion averaged over its own rows (its own predictor values), against its "
             f"raw proportion (crosses); dotted: raw pooled proportion.")
            if _with_predictors(comp) else
            (f"Predicted proportion per {g} on the outcome scale with {ci}, both models; "
             f"dashed: population mean (inverse link of a_bar); dotted: raw pooled proportion; "
             f"crosses: raw proportions."),
            plot_predicted_proportions(comp),
        ),
        "shrinkage": (
            f"Shrinkage: each arrow runs from a {g}'s no-pooling estimate to its partial-pooling "
            f"estimate, against its size n; the most-moved {g}s are labelled.",
            plot_shrinkage(comp),
        ),
        **_shrinkage_2d_entry(comp),
        "ppc": (
            _ppc_caption(partial, comp.group),
            plot_ppc_groups(partial, prob=comp.prob, group=comp.group),
        ),
        "prior": (
            f"Prior predictive distribution of a {g}'s proportion under each model's priors "
            f"(the legend lists them), with the observed raw proportions as a rug. Each model "
            f"has its own line style: where two models imply the same distribution, the wide "
            f"pale line shows under the narrow dashed one.",
            plot_prior_predictive(
                {k: f.spec for k, f in comp.fits.items()},
                comp.groups["raw_proportion"].to_numpy(), seed=int(partial.config.seed or 0),
                group=g,
            ),
        ),
    }


def _shrinkage_2d_entry(comp: PoolingComparison) -> dict[str, tuple[str, Figure]]:
    coef = slope_coef(comp)
    if coef is None:
        return {}
    return {
        "shrinkage_2d": (
            f"Intercepts and slopes of {coef} by {comp.group}: arrows from no-pooling to "
            f"partial-pooling estimates; ellipses hold 50% and 89% of the estimated population "
            f"of {comp.group}s.",
            plot_shrinkage_2d(comp, coef=coef),
        )
    }


def _ppc_caption(fit: Fit, group: str) -> str:
    term = next(t for t in fit.spec.terms if t.name == group)
    L = term.group.n_levels
    if L > style.MAX_LEVELS_SHOWN:
        return (f"Posterior predictive check of {_label(fit.spec)} in bins ({L:,} {group}s: "
                f"one tick each would be unreadable), each observed statistic against its "
                f"interval in replicated data: left, how many {group}s have each proportion; "
                f"middle, the proportion of successes of the {group}s binned by their trials; "
                f"right, the spread between the {group}s' proportions in the same bins.")
    return (f"Posterior predictive check of {_label(fit.spec)}: observed proportion per "
            f"{group} against the proportions replicated data of the same size would show.")


def _check_figure(fit: Fit, fig: Figure | None) -> dict[str, tuple[str, Figure]]:
    """``approx_vs_nuts``: an approximate fit's check against NUTS, when it has one."""
    if fig is None:
        return {}
    nc = fit.nuts_check
    return {"approx_vs_nuts": (
        f"The approximation against a short NUTS run of the same model ({nc.chains} x "
        f"{nc.draws} draws, --check): each group effect's posterior mean under both (left; on "
        "the dashed line they agree; colour: the difference in NUTS posterior sds) and each "
        "population-level parameter's difference (right; the dashed line is the most the "
        "check accepts).", fig)}


def fit_figures(fit: Fit, *, prob: float = 0.89,
                kind: str = "hdi") -> dict[str, tuple[str, Figure]]:
    """Figures for a single fit, in report order: the population-level estimates
    (``coefficients``), a caterpillar of every group term's levels for each coefficient
    (``caterpillar_<variable>``: intercepts and slopes), the intercept-slope plot of every
    term with correlated intercepts and slopes (``intercept_slope_<group>``), the posterior
    predictive check of the first group term (``ppc``) and the prior predictive distribution
    (``prior``). The sampler's trace and rank figures are
    :func:`poolwise.output.plots.diagnostic.chain_figures`."""
    from poolwise.output.plots.estimates import (
        correlated_terms,
        plot_approx_vs_nuts,
        plot_caterpillar,
        plot_coefficients,
        plot_intercept_slope,
    )

    out: dict[str, tuple[str, Figure]] = {}
    spec = fit.spec
    ci = f"{_pct(prob)} {kind.upper()}"
    model = _label(spec)
    out["coefficients"] = (
        f"Population-level estimates of {model} ({spec.formula.text}): posterior mean and "
        f"{ci} of each fixed effect" + (", and of the group-level SDs and correlations."
                                        if any(t.estimated for t in spec.terms) else "."),
        plot_coefficients(fit, prob=prob, kind=kind),
    )
    for t in spec.terms:
        for coef in t.group.coef_names:
            name = naming.total_name(t, coef)
            what = "intercept" if coef == naming.INTERCEPT else f"slope of {coef}"
            L = t.group.n_levels
            shown = ("every level" if L <= style.MAX_LEVELS_SHOWN else
                     f"60 of the {L:,} levels: the 20 lowest, 20 drawn at random and the 20 "
                     f"highest")
            out[f"caterpillar_{name}"] = (
                f"Caterpillar of {name}: each {t.name}'s {what} (posterior mean and {ci}), "
                f"sorted, {shown}; the dashed line is the population mean it is pooled "
                f"towards." if t.estimated else
                f"Caterpillar of {name}: each {t.name}'s {what} (posterior mean and {ci}, "
                f"no pooling), sorted, {shown}.",
                plot_caterpillar(fit, t, coef, prob=prob, kind=kind),
            )
    for t in correlated_terms(fit):
        out[f"intercept_slope_{t.name}"] = (
            f"Intercepts against slopes by {t.name} (posterior means; point size: trials), "
            f"with the population mean and the ellipses holding 50% and 89% of the estimated "
            f"population of {t.name}s.",
            plot_intercept_slope(fit, t, prob=prob, kind=kind),
        )
    out.update(_check_figure(fit, plot_approx_vs_nuts(fit)))
    group = spec.terms[0].name if spec.terms else "group"
    if spec.terms:
        out["ppc"] = (_ppc_caption(fit, group), plot_ppc_groups(fit, prob=prob))
    observed = None
    if spec.terms:
        gd = spec.terms[0].group
        observed = gd.level_successes / gd.level_trials
    out["prior"] = (
        f"Prior predictive distribution of a {group}'s proportion under the priors of "
        f"{model} (the legend lists them), with the observed raw proportions as a rug.",
        plot_prior_predictive({spec.pooling: spec}, observed, seed=int(fit.config.seed or 0),
                              group=group),
    )
    return out
