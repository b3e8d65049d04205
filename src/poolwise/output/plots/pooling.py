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

from poolwise.model import naming

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
    "plot_prior_predictive",
    "pooling_figures",
    "fit_figures",
    "COLORS",
]

COLORS = {
    "none": "#6b6b6b",
    "partial": "#1f5fa8",
    "complete": "#c0392b",
    "raw": "#111111",
    "observed": "#c0392b",
}
LABELS = {
    "none": "no pooling (fixed effects)",
    "partial": "partial pooling (varying intercepts)",
    "complete": "complete pooling",
}
_RC: dict[str, Any] = {
    "font.size": 10.5,
    "axes.titlesize": 12,
    "axes.labelsize": 11,
    "legend.fontsize": 9.5,
    "xtick.labelsize": 9.5,
    "ytick.labelsize": 9.5,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "svg.hashsalt": "poolwise",
}


def _figure(width: float, height: float) -> Figure:
    """A Figure outside pyplot (nothing global, nothing shown)."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _rc() -> Any:
    import matplotlib

    return matplotlib.rc_context(_RC)  # type: ignore[arg-type]


def _pct(prob: float) -> str:
    return f"{100 * prob:g}%"


def _group_ticklabels(comp: PoolingComparison) -> list[str]:
    g = comp.groups
    return [f"{lab} (n={int(n)})" for lab, n in zip(g.index, g["n"], strict=True)]


def _tick_fontsize(n_labels: int) -> float:
    return 9.0 if n_labels <= 30 else 8.0 if n_labels <= 70 else 6.5


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
            ax.hlines(y, g[f"{model}_lower"], g[f"{model}_upper"], color=c, lw=1.6)
            ax.plot(g[f"{model}_mean"], y, "o", color=c, ms=4)
            ax.axvline(a_bar, color=COLORS["partial"], ls="--", lw=1,
                       label=f"population mean of the intercepts, a_bar = {a_bar:.2f}")
            ax.set_title(LABELS[model])
            ax.set_xlabel(f"log-odds (mean and {ci})")
            ax.grid(axis="y", visible=False)
        axes[0].set_yticks(y, _group_ticklabels(comp), fontsize=_tick_fontsize(L))
        axes[0].set_ylabel(comp.group)
        axes[0].set_ylim(-1, L)
        fig.legend(*axes[1].get_legend_handles_labels(), loc="outside lower center",
                   frameon=False)
        fig.suptitle(f"Posterior of each {comp.group}'s intercept", fontsize=13)
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
        ax.set_title("Impact of sample size on the posterior SD")
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
    when the model has predictors. Columns ``mean``, ``lower``, ``upper``, one row per level."""
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
    return pd.DataFrame(
        {"mean": per_draw.mean(axis=0), "lower": lo, "upper": hi},
        index=pd.Index([str(v) for v in gd.labels], name=group),
    )


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
        cols = {m: (est[m]["mean"], est[m]["lower"], est[m]["upper"]) for m in est}
    else:
        cols = {m: (g[f"{m}_p_mean"], g[f"{m}_p_lower"], g[f"{m}_p_upper"])
                for m in ("none", "partial")}
    with _rc():
        fig = _figure(max(9.0, min(12.0, 0.2 * L + 3)), 5.8)
        ax = fig.subplots()
        for model, off in (("none", -0.17), ("partial", 0.17)):
            c = COLORS[model]
            mean, lo, hi = cols[model]
            ax.vlines(x + off, lo, hi, color=c, lw=1.3, alpha=0.8)
            ax.plot(x + off, mean, "o", color=c, ms=4.5,
                    label=f"{LABELS[model]}: mean and {ci}")
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
            ax.set_title(f"Predicted proportion per {comp.group} over its own rows: "
                         "no pooling vs partial pooling")
        else:
            ax.set_ylabel("predicted proportion of successes")
            ax.set_title(
                f"Predicted proportion per {comp.group}: no pooling vs partial pooling")
        fig.legend(loc="outside lower center", ncols=2 if predictors else 3, frameon=False)
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
                   edgecolor=COLORS["none"], lw=1.2, label=LABELS["none"], zorder=3)
        ax.scatter(x, g["partial_p_mean"], s=sizes, color=COLORS["partial"], alpha=0.75,
                   label=LABELS["partial"], zorder=4)
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
        ax.set_title(
            f"Shrinkage towards the population mean, by {comp.group} size\n"
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
    cov = np.array([[sd[0] ** 2, rho * sd[0] * sd[1]], [rho * sd[0] * sd[1], sd[1] ** 2]])
    with _rc():
        fig = _figure(8.5, 7.0)
        ax = fig.subplots()
        vals, vecs = np.linalg.eigh(cov)
        t = np.linspace(0, 2 * np.pi, 200)
        circle = np.stack([np.cos(t), np.sin(t)])
        for level, style in ((0.5, "--"), (0.89, ":")):
            r = np.sqrt(-2 * np.log(1 - level))  # radius of a 2-D normal's level region
            pts = mu[:, None] + vecs @ (np.sqrt(vals)[:, None] * circle * r)
            ax.plot(pts[0], pts[1], style, color="#444444", lw=1,
                    label=f"{round(100 * level)}% of the population of {g}s")
        for xa, ya, xb, yb in zip(a0, b0, a1, b1, strict=True):
            ax.annotate("", xy=(xb, yb), xytext=(xa, ya), zorder=2,
                        arrowprops={"arrowstyle": "-|>", "color": "#888888", "lw": 0.7,
                                    "shrinkA": 2, "shrinkB": 2, "mutation_scale": 7})
        sizes = _size(n, n.max())
        ax.scatter(a0, b0, s=sizes, facecolor="white", edgecolor=COLORS["none"], lw=1.1,
                   label=LABELS["none"], zorder=3)
        ax.scatter(a1, b1, s=sizes, color=COLORS["partial"], alpha=0.75,
                   label="partial pooling (varying intercepts and slopes)", zorder=4)
        ax.plot(*mu, marker="+", color="black", ms=14, mew=2, ls="", zorder=5,
                label="population mean")
        ax.set_xlabel(f"{g} intercept (log-odds at {coef} = 0)")
        ax.set_ylabel(f"{g} slope of {coef} (log-odds)")
        ax.set_title(
            f"Shrinkage of intercepts and slopes by {g} (correlation {rho:+.2f})\n"
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
    replicated proportions (draws, L). Draws are thinned evenly to at most ``max_draws``;
    the binomial noise uses a generator seeded from the fit's seed.
    """
    from poolwise.model.predictive import level_sums, replicated_successes, thinned_draws

    spec = fit.spec
    terms = [t for t in spec.terms if group is None or t.name == group]
    if not terms:
        raise ValueError(f"the fit has no group term{' ' + group if group else ''}")
    gd = terms[0].group
    rng = np.random.default_rng([int(fit.config.seed or 0), 7])
    keep = thinned_draws(fit.posterior, max_draws)
    y_rep = level_sums(replicated_successes(spec, fit.posterior, rng, keep), gd.codes,
                       gd.n_levels)
    trials = gd.level_trials
    return gd, gd.level_successes / trials, trials, y_rep / trials


def plot_ppc_groups(fit: Fit, *, prob: float = 0.89, group: str | None = None) -> Figure:
    """Observed proportion per group against the posterior predictive interval of the
    proportion a replicate of that group's data would show (same n)."""
    from arviz_stats.base import array_stats

    gd, obs, trials, rep = group_predictive(fit, group=group)
    L = len(obs)
    x = np.arange(L)
    lo, hi = np.moveaxis(array_stats.eti(rep, prob, axis=0), -1, 0)
    lo50, hi50 = np.moveaxis(array_stats.eti(rep, 0.5, axis=0), -1, 0)
    outside = (obs < lo) | (obs > hi)
    model = {"partial": "partial pooling", "none": "no pooling"}.get(fit.spec.pooling, "")
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
        ax.set_title(
            f"Posterior predictive check ({model}): {int((~outside).sum())} of {L} observed "
            f"{gd.name} proportions inside the {_pct(prob)} interval"
        )
        fig.legend(loc="outside lower center", ncols=4, frameon=False)
    return fig


# ---- 6. prior predictive -------------------------------------------------------------------


def _prior_description(spec: ModelSpec) -> str:
    from poolwise.model.naming import sd_name

    pr = spec.priors
    terms = [t for t in spec.terms if "Intercept" in t.group.coef_names]
    if spec.pooling == "none" and terms:
        t = terms[0]
        return f"a_j ~ normal(0, {t.sd_fixed[t.group.coef_names.index('Intercept')]:g})"
    if spec.pooling == "partial" and terms:
        t = terms[0]
        return (f"a_bar ~ {pr.intercept}, {sd_name(t, 'Intercept')} ~ {pr.sd_for(t.name)}, "
                f"a_j ~ normal(a_bar, sigma)")
    return f"Intercept ~ {pr.intercept}"


def prior_group_proportions(
    spec: ModelSpec, *, draws: int | None = None, seed: int = 0
) -> tuple[np.ndarray | None, str]:
    """Prior predictive proportions of the groups of the first group term, pooled over
    groups and draws (:func:`poolwise.prior_predictive.prior_predictive`; for a model without
    group terms, of the cells), and a description of the priors. ``None`` and the reason when
    a prior is flat."""
    from poolwise.model.prior_predictive import prior_predictive

    if draws is None:  # enough simulated proportions for a smooth histogram, cheaply
        if spec.terms:  # prior_predictive loops over draws when there are group terms
            draws = int(np.clip(100_000 // spec.terms[0].group.n_levels, 1000, 4000))
        else:
            draws = int(np.clip(100_000 // max(spec.design.n_cells, 1), 1000, 100_000))
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
    (keyed by pooling), with the observed raw group proportions as a rug."""
    bins = np.linspace(0, 1, 41)
    with _rc():
        fig = _figure(9, 6.0)
        ax = fig.subplots()
        notes = []
        for key, spec in specs.items():
            draws, how = prior_group_proportions(spec, seed=seed)
            if draws is None:
                notes.append(f"{LABELS.get(key, key)}: {how}")
                continue
            ax.hist(draws, bins=list(bins), density=True, histtype="step", lw=2,
                    ls=(0, (4, 3)) if key == "complete" else "-",
                    zorder=3 if key == "complete" else 2,
                    color=COLORS.get(key, "black"), label=f"{LABELS.get(key, key)}: {how}")
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
        ax.set_title(title)
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
            f"Posterior predictive check of the partial-pooling model: observed proportion per "
            f"{g} against the proportions replicated data of the same size would show.",
            plot_ppc_groups(partial, prob=comp.prob, group=comp.group),
        ),
        "prior": (
            f"Prior predictive distribution of a {g}'s proportion under each model's priors, "
            f"with the observed raw proportions as a rug.",
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


def fit_figures(fit: Fit, *, prob: float = 0.89) -> dict[str, tuple[str, Figure]]:
    """Figures for a single fit: the posterior predictive check per group (when the model has
    a group term) and the prior predictive distribution."""
    out: dict[str, tuple[str, Figure]] = {}
    spec = fit.spec
    group = spec.terms[0].name if spec.terms else "group"
    if spec.terms:
        out["ppc"] = (
            f"Posterior predictive check: observed proportion per {group} against the "
            f"proportions replicated data of the same size would show.",
            plot_ppc_groups(fit, prob=prob),
        )
    observed = None
    if spec.terms:
        gd = spec.terms[0].group
        observed = gd.level_successes / gd.level_trials
    out["prior"] = (
        f"Prior predictive distribution of a {group}'s proportion under the model's priors.",
        plot_prior_predictive({spec.pooling: spec}, observed, seed=int(fit.config.seed or 0),
                              group=group),
    )
    return out
