"""The estimates of one fit: the population-level coefficients with their intervals, a
caterpillar of every group term's levels for each of its coefficients (intercepts and slopes)
and, for a term whose intercepts and slopes are correlated, the intercept-slope plot.

Every number drawn is read from the fit's summary table (:meth:`Fit.summary`, cached on the
fit, the same numbers the report's table shows), so no figure here touches the draws again:
with 10^4-10^5 levels a figure costs what drawing it costs. A group with more than
:data:`~poolwise.output.plots.style.MAX_LEVELS_SHOWN` levels is drawn as its extremes and a
seeded random sample of the rest, and the figure says how many of how many it shows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from poolwise.inference.summary import interval_of
from poolwise.model import naming
from poolwise.output.plots import style

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from poolwise.inference.fitted import Fit
    from poolwise.model.spec import TermSpec

__all__ = [
    "plot_approx_vs_nuts",
    "plot_coefficients",
    "plot_caterpillar",
    "plot_intercept_slope",
    "population_ellipse",
    "correlated_terms",
]


def _interval_name(prob: float, kind: str) -> str:
    return f"{style.pct(prob)} {kind.upper()}"


def _scale(fit: Fit) -> str:
    return "log-odds" if fit.spec.link == "logit" else f"{fit.spec.link} scale"


def _seed(fit: Fit) -> int:
    return int(fit.config.seed or 0)


# ---- population-level coefficients ---------------------------------------------------------


def _population_rows(fit: Fit, table: pd.DataFrame) -> tuple[list[str], list[str]]:
    """The fixed coefficients, and the SDs and correlations of the group terms, that the
    summary table holds."""
    spec = fit.spec
    unpooled = {c for t in spec.terms if not t.estimated for c in t.group.coef_names}
    fixed = [naming.fixed_name(c) for c in spec.design.fixed_names if c not in unpooled]
    scales = []
    for t in spec.terms:
        if not t.estimated:
            continue
        coefs = t.group.coef_names
        scales += [naming.sd_name(t, c) for c in coefs]
        if t.correlated:
            scales += [naming.cor_name(t, a, b) for i, a in enumerate(coefs)
                       for b in coefs[i + 1:]]
    return [n for n in fixed if n in table.index], [n for n in scales if n in table.index]


def _point_intervals(ax: Any, table: pd.DataFrame, names: list[str], color: str) -> None:
    y = np.arange(len(names))[::-1]
    rows = table.loc[names]
    ax.hlines(y, *(rows[c] for c in interval_of(table)), color=color, lw=2.0)
    ax.plot(rows["mean"], y, "o", color=color, ms=5.5)
    ax.set_yticks(y, names)
    ax.set_ylim(-0.7, len(names) - 0.3)
    ax.grid(axis="y", visible=False)


def plot_coefficients(fit: Fit, *, prob: float = 0.89, kind: str = "hdi") -> Figure:
    """The population-level estimates, mean and ``prob`` interval: the fixed effects (left,
    on the link's scale, with 0 marked) and, when the model has group terms, their SDs and
    correlations (right)."""
    table = fit.summary(prob=prob, kind=kind)
    fixed, scales = _population_rows(fit, table)
    ci = _interval_name(prob, kind)
    panels = [(fixed, f"fixed effects ({_scale(fit)})")] if fixed else []
    if scales:
        cors = any(naming.kind(n) == "cor" for n in scales)
        panels.append((scales, "group-level SDs" + (" and correlations" if cors else "")))
    rows = max((len(n) for n, _ in panels), default=1)
    with style.rc():
        fig = style.figure(11.0 if len(panels) > 1 else 8.0, 1.9 + 0.42 * rows)
        axes = fig.subplots(1, max(len(panels), 1), squeeze=False)[0]
        for ax, (names, what) in zip(axes, panels, strict=False):
            _point_intervals(ax, table, names, style.COLORS["partial"])
            if what.startswith("fixed"):
                ax.axvline(0.0, color="#444444", ls=":", lw=1)
            ax.set_xlabel(what)
        style.suptitle(fig, f"Population-level estimates of {fit.spec.formula.text} "
                            f"(mean and {ci})")
    return fig


# ---- caterpillars --------------------------------------------------------------------------


def level_table(fit: Fit, term: TermSpec, coef: str, *, prob: float = 0.89,
                kind: str = "hdi") -> pd.DataFrame:
    """The summary rows of one group term's coefficient, one per level (in level order):
    ``mean`` and the interval (``hdi_89_lower``, ``hdi_89_upper``; ``attrs`` as the
    summary's), with ``label`` and ``n`` (the level's trials)."""
    table = fit.summary(prob=prob, kind=kind)
    name = naming.total_name(term, coef)
    g = term.group
    keys = [naming.element(name, lab) for lab in g.labels]
    pos = table.index.get_indexer(keys)
    if (pos < 0).any():
        raise ValueError(f"the summary has no rows for {name}")
    out = table.iloc[pos][["mean", *interval_of(table)]].copy()
    out["label"] = [str(v) for v in g.labels]
    out["n"] = np.asarray(g.level_trials, dtype=float)
    out.attrs.update(table.attrs)
    return out


def plot_caterpillar(fit: Fit, term: TermSpec | str, coef: str = naming.INTERCEPT, *,
                     prob: float = 0.89, kind: str = "hdi") -> Figure:
    """Every level's posterior mean and ``prob`` interval of one coefficient of a group term
    (its intercept ``a_<g>`` or a slope ``b_<g>__<coef>``), sorted by the mean, with the
    population mean it is pooled towards. More than ``MAX_LEVELS_SHOWN`` levels: the 20
    lowest, 20 drawn at random from the rest and the 20 highest, separated by dotted lines;
    the title says how many of how many are shown."""
    t = _term(fit, term)
    rows = level_table(fit, t, coef, prob=prob, kind=kind)
    name = naming.total_name(t, coef)
    order = np.argsort(rows["mean"].to_numpy(), kind="stable")
    pos, shown = style.pick_levels(order, seed=_seed(fit))
    sel = rows.iloc[order[pos]]
    k = len(sel)
    y = np.arange(k)
    ci = _interval_name(prob, kind)
    what = "intercept" if coef == naming.INTERCEPT else f"slope of {coef}"
    with style.rc():
        fig = style.figure(9.0, max(3.6, 0.15 * k + 1.9))
        ax = fig.subplots()
        ax.hlines(y, *(sel[c] for c in interval_of(rows)), color=style.COLORS["partial"], lw=1.4,
                  alpha=0.8, label=ci)
        ax.plot(sel["mean"], y, "o", color=style.COLORS["partial"], ms=3.5,
                label="posterior mean")
        mi = t.mu_index[t.group.coef_names.index(coef)]
        if t.estimated and mi >= 0:
            pop_name = naming.fixed_name(coef)
            table = fit.summary(prob=prob, kind=kind)
            if pop_name in table.index:
                m = float(table.loc[pop_name, "mean"])
                ax.axvline(m, color="#333333", ls="--", lw=1,
                           label=f"population mean, {pop_name} = {m:.3g}")
        if k < len(rows):  # the extremes and the sample, separated
            for cut in (19.5, k - 20.5):
                ax.axhline(cut, color="#777777", ls=":", lw=1)
        ax.set_yticks(y, [f"{lab} (n={n:.0f})" for lab, n in zip(sel["label"], sel["n"],
                                                                  strict=True)],
                      fontsize=style.tick_fontsize(k))
        ax.set_ylim(-1, k)
        ax.grid(axis="y", visible=False)
        ax.set_ylabel(f"{t.name} (sorted by posterior mean)")
        ax.set_xlabel(f"{name}: each {t.name}'s {what} ({_scale(fit)}), mean and {ci}")
        style.set_title(ax, f"{name}: the {what} of each {t.name}; {shown}")
        ax.legend(loc="lower right", fontsize=8.5)
    return fig


def _term(fit: Fit, term: TermSpec | str) -> TermSpec:
    if not isinstance(term, str):
        return term
    for t in fit.spec.terms:
        if t.name == term:
            return t
    raise ValueError(f"the fit has no group term {term!r}")


# ---- intercepts against slopes -------------------------------------------------------------


def correlated_terms(fit: Fit) -> list[TermSpec]:
    """The group terms whose varying intercept and slopes have an estimated correlation."""
    return [t for t in fit.spec.terms
            if t.estimated and t.correlated and naming.INTERCEPT in t.group.coef_names
            and t.group.n_coefs > 1]


def population_ellipse(mu: np.ndarray, sd: np.ndarray, rho: float, level: float,
                       points: int = 200) -> np.ndarray:
    """The region holding ``level`` of a 2-D normal (means ``mu``, SDs ``sd``, correlation
    ``rho``): its outline, shape (2, points)."""
    cov = np.array([[sd[0] ** 2, rho * sd[0] * sd[1]], [rho * sd[0] * sd[1], sd[1] ** 2]])
    vals, vecs = np.linalg.eigh(cov)
    t = np.linspace(0, 2 * np.pi, points)
    circle = np.stack([np.cos(t), np.sin(t)])
    r = np.sqrt(-2 * np.log(1 - level))  # radius of a 2-D normal's level region
    return mu[:, None] + vecs @ (np.sqrt(np.clip(vals, 0, None))[:, None] * circle * r)


def plot_intercept_slope(fit: Fit, term: TermSpec | str, *, prob: float = 0.89,
                         kind: str = "hdi") -> Figure:
    """For a term with correlated varying intercepts and slopes: each level's posterior mean
    intercept (x) against its slope (y), one panel per slope, point size by the level's
    trials, with the population mean and the ellipses holding 50% and 89% of the estimated
    population of levels (posterior means of the SDs and the correlation)."""
    t = _term(fit, term)
    slopes = [c for c in t.group.coef_names if c != naming.INTERCEPT]
    if naming.INTERCEPT not in t.group.coef_names or not slopes:
        raise ValueError(f"the term for {t.name!r} has no varying intercept and slope")
    table = fit.summary(prob=prob, kind=kind)
    a = level_table(fit, t, naming.INTERCEPT, prob=prob, kind=kind)
    n = a["n"].to_numpy()
    size = 8 + 120 * np.sqrt(n / max(float(n.max()), 1.0))
    with style.rc():
        fig = style.figure(min(12.0, 5.4 * len(slopes) + 0.8), 5.8)
        axes = fig.subplots(1, len(slopes), squeeze=False)[0]
        for ax, coef in zip(axes, slopes, strict=True):
            b = level_table(fit, t, coef, prob=prob, kind=kind)
            mu = np.array([float(table.loc[naming.fixed_name(c), "mean"])
                           if naming.fixed_name(c) in table.index else 0.0
                           for c in (naming.INTERCEPT, coef)])
            sd = np.array([float(table.loc[naming.sd_name(t, c), "mean"])
                           for c in (naming.INTERCEPT, coef)])
            cor = naming.cor_name(t, naming.INTERCEPT, coef)
            rho = float(table.loc[cor, "mean"]) if cor in table.index else 0.0
            for level, ls in ((0.5, "--"), (0.89, ":")):
                pts = population_ellipse(mu, sd, rho, level)
                ax.plot(pts[0], pts[1], ls=ls, color="#444444", lw=1.2,
                        label=f"{round(100 * level)}% of the population of {t.name}s")
            ax.scatter(a["mean"], b["mean"], s=size, color=style.COLORS["partial"],
                       alpha=0.45 if len(n) <= 500 else 0.15, lw=0, rasterized=len(n) > 500,
                       label=f"{t.name}s ({len(n):,}; posterior means; size: n)")
            ax.plot(*mu, marker="+", color="black", ms=14, mew=2, ls="",
                    label="population mean")
            ax.set_xlabel(f"{naming.total_name(t, naming.INTERCEPT)}: intercept ({_scale(fit)})")
            ax.set_ylabel(f"{naming.total_name(t, coef)}: slope of {coef}")
            lo, hi = (float(table.loc[cor, c]) for c in interval_of(table)) \
                if cor in table.index else (np.nan, np.nan)
            style.set_title(ax, f"Intercept and slope of {coef} by {t.name}: correlation "
                                f"{rho:+.2f} ({_interval_name(prob, kind)} {lo:+.2f} to "
                                f"{hi:+.2f})")
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncols=2, frameon=False,
                   markerscale=0.6)
    return fig


# ---- an approximate fit against its short NUTS run (--check) --------------------------------


def plot_approx_vs_nuts(fit: Fit) -> Figure | None:
    """``--method approx --check``: each parameter's posterior mean under approx against
    NUTS's (left: the group effects, on the line y = x where they agree), and each
    population-level parameter's difference in NUTS posterior sds with the bar the check
    holds it to (right). None without the comparison's points (no ``--check``, or a folder
    saved before they were kept)."""
    from poolwise.inference.diagnostics.approx_check import (
        NUTS_GROUP_P95_MAX,
        NUTS_POPULATION_MAX,
    )

    check = fit.nuts_check
    pts = None if check is None else check.points
    if not pts:
        return None
    group = np.asarray(pts["group"], dtype=bool)
    a, n, sd = (np.asarray(pts[k], dtype=float) for k in ("approx_mean", "nuts_mean",
                                                           "nuts_sd"))
    z = np.abs(a - n) / sd
    names = np.asarray(pts["name"], dtype=object)
    with style.rc():
        fig = style.figure(10.0, 4.4)
        left, right = fig.subplots(1, 2, width_ratios=[1.25, 1.0])
        if group.any():
            lo, hi = float(min(a[group].min(), n[group].min())), float(
                max(a[group].max(), n[group].max()))
            left.plot([lo, hi], [lo, hi], color="0.6", lw=1, ls="--", zorder=1)
            sc = left.scatter(n[group], a[group], c=z[group], cmap="viridis", s=14,
                              vmin=0.0, vmax=max(NUTS_GROUP_P95_MAX, float(z[group].max())),
                              zorder=2)
            fig.colorbar(sc, ax=left, label="|difference| / NUTS sd")
            left.set_xlabel("posterior mean under NUTS")
            left.set_ylabel("posterior mean under approx")
            style.set_title(left, f"Group effects: 95th percentile of the difference "
                                  f"{check.group_p95:.2f} NUTS sd (at most "
                                  f"{NUTS_GROUP_P95_MAX})")
        else:
            left.set_axis_off()
            left.text(0.5, 0.5, "no group effects", ha="center", va="center")
        pop = np.flatnonzero(~group)
        if len(pop):
            y = np.arange(len(pop))
            right.barh(y, z[pop], color=["#b2182b" if v > NUTS_POPULATION_MAX else "#4d4d4d"
                                         for v in z[pop]])
            right.axvline(NUTS_POPULATION_MAX, color="#b2182b", ls="--", lw=1)
            right.set_yticks(y, [str(v) for v in names[pop]])
            right.invert_yaxis()
            right.set_xlim(0.0, max(2 * NUTS_POPULATION_MAX, 1.1 * float(z[pop].max())))
            right.set_xlabel("|mean approx - mean NUTS| / NUTS sd")
            style.set_title(right, f"Population level (at most {NUTS_POPULATION_MAX})")
        else:
            right.set_axis_off()
            right.text(0.5, 0.5, "no population-level parameter", ha="center", va="center")
    return fig
