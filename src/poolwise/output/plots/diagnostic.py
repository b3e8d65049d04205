"""Diagnostic figures of one fit and of its repair: trace, rank ("trank") histograms, the
funnel pair plot of a group SD against the group effects with divergences marked, effective
sample size per parameter across repair attempts, and densities of candidate SD priors.

Every function returns a :class:`matplotlib.figure.Figure` on the Agg canvas; none shows it.
The trace plot is drawn by arviz-plots (``plot_trace_dist``, which marks divergences); the
others are plain matplotlib without pyplot, so they touch no global state.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from poolwise.model import naming

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from poolwise.inference.diagnostics import Diagnosis
    from poolwise.inference.fitted import Fit
    from poolwise.inference.repair import RepairLog
    from poolwise.model.priors import Prior

__all__ = [
    "plot_trace",
    "plot_rank",
    "plot_pair_funnel",
    "plot_ess_attempts",
    "plot_sd_priors",
    "diagnostic_figures",
    "CANDIDATE_SD_PRIORS",
]

DIVERGENT = "#d62728"
CHAIN_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                "#bcbd22")


def _figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _tree(fit: Any) -> Any:
    return fit.idata if hasattr(fit, "idata") else fit


def _posterior(fit: Any) -> Any:
    return _tree(fit)["posterior"].to_dataset()


def _groups(fit: Any) -> set[str] | None:
    """The fit's grouping factors (to read names back), or None for a bare DataTree."""
    spec = getattr(fit, "spec", None)
    return {t.name for t in spec.terms} if spec is not None else None


def _is_sd(name: str) -> bool:
    return naming.kind(name) == "sd"


def _diverging(fit: Any, shape: tuple[int, int]) -> np.ndarray:
    tree = _tree(fit)
    if "sample_stats" in tree.children and "diverging" in tree["sample_stats"]:
        return tree["sample_stats"]["diverging"].transpose("chain", "draw").values.astype(bool)
    return np.zeros(shape, dtype=bool)


def _default_vars(post: Any, max_levels: int = 8) -> list[str]:
    out = []
    for name, v in post.data_vars.items():
        extra = [d for d in v.dims if d not in ("chain", "draw")]
        if not extra or (len(extra) == 1 and v.sizes[extra[0]] <= max_levels):
            out.append(str(name))
    return out


def _components(
    post: Any, var_names: Sequence[str] | None, limit: int
) -> list[tuple[str, np.ndarray]]:
    """(label, (chain, draw) array) for every scalar component of the chosen variables."""
    names = list(var_names) if var_names is not None else _default_vars(post)
    out: list[tuple[str, np.ndarray]] = []
    for name in names:
        v = post[name]
        extra = [d for d in v.dims if d not in ("chain", "draw")]
        arr = v.transpose("chain", "draw", *extra).values
        if not extra:
            out.append((name, arr))
            continue
        flat = arr.reshape(arr.shape[0], arr.shape[1], -1)
        labels = v[extra[0]].values if len(extra) == 1 else range(flat.shape[-1])
        for i, lab in enumerate(labels):
            out.append((f"{name}[{lab}]", flat[:, :, i]))
    return out[:limit]


# ---------------------------------------------------------------------------------------------
# trace and rank
# ---------------------------------------------------------------------------------------------


def plot_trace(fit: Fit, *, var_names: Sequence[str] | None = None) -> Figure:
    """Trace and per-chain density of each variable (arviz-plots ``plot_trace_dist``), with
    divergent transitions marked. Default: every scalar variable and the group effects of
    terms with at most 8 levels."""
    import arviz_plots as azp
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    post = _posterior(fit)
    names = list(var_names) if var_names is not None else _default_vars(post)
    pc = azp.plot_trace_dist(_tree(fit), var_names=names, backend="matplotlib")
    fig = pc.viz["figure"].values.item()
    _release_from_pyplot(fig)
    FigureCanvasAgg(fig)
    fig.suptitle("trace and density per chain (divergent transitions marked)")
    return fig


def _release_from_pyplot(fig: Any) -> None:
    """arviz-plots creates figures through pyplot; drop them from pyplot's registry (the
    figure stays usable) so nothing accumulates or is ever shown."""
    import sys

    plt = sys.modules.get("matplotlib.pyplot")
    if plt is not None:
        plt.close(fig)


def plot_rank(
    fit: Fit, *, var_names: Sequence[str] | None = None, bins: int = 20, max_panels: int = 12
) -> Figure:
    """Rank histograms per chain ("trank" plots, Vehtari et al. 2021): the draws of all chains
    are ranked together and each chain's ranks histogrammed. Chains that target the same
    posterior give flat histograms (dashed line: the uniform count); a chain that sits in a
    part of the posterior the others do not visit piles up at one end."""
    from scipy.stats import rankdata

    post = _posterior(fit)
    comps = _components(post, var_names, max_panels)
    n = len(comps)
    cols = min(3, max(n, 1))
    rows = max(1, -(-n // cols))
    fig = _figure(4.0 * cols, 0.9 + 2.4 * rows)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.set_axis_off()
    for ax, (label, arr) in zip(axes.ravel(), comps, strict=False):
        chains, draws = arr.shape
        finite = np.isfinite(arr).all()
        if not finite or np.ptp(arr) == 0:
            ax.text(0.5, 0.5, "constant or non-finite draws:\nranks undefined",
                    ha="center", va="center", transform=ax.transAxes)
            ax.set_title(label)
            continue
        ranks = rankdata(arr.ravel()).reshape(chains, draws)
        edges = np.linspace(0.5, chains * draws + 0.5, bins + 1)
        height = draws / bins
        for c in range(chains):
            counts, _ = np.histogram(ranks[c], bins=edges)
            base = c * height * 2.2
            ax.bar(edges[:-1], counts, width=np.diff(edges), bottom=base, align="edge",
                   color=CHAIN_COLORS[c % len(CHAIN_COLORS)], alpha=0.85, edgecolor="white",
                   linewidth=0.3)
            ax.axhline(base + height, color="black", linestyle="--", linewidth=0.7)
        ax.set_yticks([c * height * 2.2 + height / 2 for c in range(chains)],
                      [str(c) for c in range(chains)])
        ax.set_ylabel("chain")
        ax.set_xlabel("rank (all chains)")
        ax.set_title(label)
    fig.suptitle("rank histograms per chain (flat = chains agree)")
    return fig


# ---------------------------------------------------------------------------------------------
# funnel pair plot
# ---------------------------------------------------------------------------------------------


def _culprit_sd(fit: Any, sd: str | None) -> str:
    post = _posterior(fit)
    if sd is not None:
        if sd not in post:
            have = ", ".join(str(n) for n in post.data_vars)
            raise ValueError(f"no variable {sd!r} in the posterior; have {have}")
        return sd
    diag = getattr(fit, "diagnosis", None)
    if diag is not None and diag.culprit is not None:
        return diag.culprit.parameter
    sds = [str(n) for n in post.data_vars if _is_sd(str(n))]
    if not sds:
        raise ValueError("this fit has no group SD (sd_...) to plot")
    return sds[0]


def plot_pair_funnel(fit: Fit, *, sd: str | None = None, max_effects: int = 6) -> Figure:
    """The culprit group SD (log scale, y) against the population intercept and each group
    effect (x), every draw a grey dot and every divergent transition a red one: the funnel of
    a centered term shows as a neck at small SD where the red dots gather."""
    post = _posterior(fit)
    sd = _culprit_sd(fit, sd)
    s = post[sd].transpose("chain", "draw").values
    div = _diverging(fit, s.shape)
    parsed = naming.parse(sd, _groups(fit))
    group, coef, effect = parsed.group, parsed.coef, str(parsed.effect)
    xs: list[tuple[str, np.ndarray]] = []
    if "Intercept" in post and coef == "Intercept":
        xs.append(("Intercept", post["Intercept"].transpose("chain", "draw").values))
    if effect in post:
        xs.extend(_components(post, [effect], max_effects))
    n = max(len(xs), 1)
    cols = min(4, n)
    rows = -(-n // cols)
    fig = _figure(3.3 * cols, 0.9 + 3.0 * rows)
    axes = fig.subplots(rows, cols, squeeze=False, sharey=True)
    for ax in axes.ravel()[n:]:
        ax.set_axis_off()
    for ax, (label, x) in zip(axes.ravel(), xs, strict=False):
        ax.scatter(x[~div], s[~div], s=3, color="#555555", alpha=0.25, linewidths=0,
                   label="draws", rasterized=True)
        if div.any():
            ax.scatter(x[div], s[div], s=9, color=DIVERGENT, alpha=0.9, linewidths=0,
                       label=f"divergent ({int(div.sum())})")
        ax.set_yscale("log")
        ax.set_xlabel(label)
    for r in range(rows):
        axes[r, 0].set_ylabel(f"{sd} (log scale)")
    if xs:
        axes[0, 0].legend(loc="lower left", fontsize=8, markerscale=2)
    fig.suptitle(f"{sd} against the effects of '{group}' ({int(div.sum())} divergent "
                 "transitions in red)")
    return fig


# ---------------------------------------------------------------------------------------------
# ESS across attempts
# ---------------------------------------------------------------------------------------------


def _ess_sources(source: Any, kind: str) -> tuple[list[tuple[str, dict[str, float]]], int | None]:
    """(label, {parameter: ess}) per bar group, and the number of chains (for the line)."""
    from poolwise.inference.repair import RepairLog

    if hasattr(source, "repair_log") and isinstance(source.repair_log, RepairLog):
        source = source.repair_log
    if isinstance(source, RepairLog):
        out = [(f"attempt {a.number}: {a.action}", dict(a.ess_bulk)) for a in source.attempts]
        chains = source.attempts[-1].settings.get("chains") if source.attempts else None
        if kind == "tail":
            raise ValueError("repair attempts keep bulk ESS only; use kind='bulk'")
        return out, chains
    if isinstance(source, Mapping):
        out = []
        chains = None
        for label, item in source.items():
            diag: Diagnosis = item.diagnosis if hasattr(item, "diagnosis") else item
            out.append((str(label), diag.ess_by_parameter(kind)))  # type: ignore[arg-type]
            chains = diag.chains
        return out, chains
    raise TypeError(
        "plot_ess_attempts takes a Fit (with its repair log), a RepairLog, or a mapping "
        f"label -> Fit/Diagnosis; got {type(source).__name__}"
    )


def plot_ess_attempts(
    source: Fit | RepairLog | Mapping[str, Any],
    *,
    parameters: Sequence[str] | None = None,
    kind: str = "bulk",
    max_parameters: int = 12,
) -> Figure:
    """Effective sample size per parameter, one bar per repair attempt (or per fit of a
    ``{label: fit}`` mapping, as the seed compares its models), with the 100-per-chain line."""
    groups, chains = _ess_sources(source, kind)
    if parameters is None:
        seen: dict[str, None] = {}
        for _, d in groups:
            for name in d:
                seen.setdefault(name, None)
        parameters = list(seen)[:max_parameters]
    params = list(parameters)
    k = max(len(groups), 1)
    fig = _figure(max(6.0, 0.9 * len(params) * max(1.0, k / 2.5)), 4.2)
    ax = fig.add_subplot()
    width = 0.8 / k
    x = np.arange(len(params))
    for i, (label, d) in enumerate(groups):
        vals = np.array([d.get(p, np.nan) for p in params], dtype=float)
        ax.bar(x - 0.4 + width * (i + 0.5), np.nan_to_num(vals, nan=0.0), width=width,
               label=label, color=CHAIN_COLORS[i % len(CHAIN_COLORS)])
    if chains:
        ax.axhline(100 * chains, color="black", linestyle="--", linewidth=0.8,
                   label=f"100 per chain ({100 * chains})")
    ax.set_xticks(x, params, rotation=45, ha="right")
    ax.set_ylabel(f"effective sample size ({kind})")
    ax.set_ylim(0, ax.get_ylim()[1] * (1.15 + 0.08 * k))  # room for the legend
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title("effective sample size per parameter")
    return fig


# ---------------------------------------------------------------------------------------------
# candidate SD priors
# ---------------------------------------------------------------------------------------------


def _candidates() -> tuple[Prior, ...]:
    from poolwise.model.priors import exponential, half_normal

    return (exponential(1.0), half_normal(0.5), half_normal(0.25), half_normal(0.1))


#: the seed's candidates for a group SD prior
CANDIDATE_SD_PRIORS = ("exponential(1)", "half_normal(0.5)", "half_normal(0.25)",
                       "half_normal(0.1)")


def _density(prior: Prior, x: np.ndarray) -> np.ndarray:
    from poolwise.inference.diagnostics import sd_prior_logpdf

    return np.exp(sd_prior_logpdf(prior, x))


def _quantile(prior: Prior, q: float) -> float:
    from poolwise.model import families

    return float(families.get(prior.family).ppf(prior.params, q))


def plot_sd_priors(
    priors: Sequence[Prior] | None = None,
    *,
    fit: Fit | None = None,
    sd: str | None = None,
    xmax: float = 3.0,
) -> Figure:
    """Densities of candidate priors for a group SD (default: the seed's exponential(1),
    half_normal(0.5), half_normal(0.25), half_normal(0.1)), each labelled with the value below
    which 95% of its mass lies. With ``fit``, the posterior of its SD (``sd``, default the
    culprit) is overlaid as a histogram: a prior that leaves no room where the posterior sits
    does not repair a sampler, it changes the answer."""
    from poolwise.model.priors import parse_prior

    cands = [parse_prior(p) if isinstance(p, str) else p for p in (priors or _candidates())]
    x = np.linspace(1e-4, xmax, 600)
    fig = _figure(7.0, 4.2)
    ax = fig.add_subplot()
    for i, p in enumerate(cands):
        q95 = _quantile(p, 0.95)
        ax.plot(x, _density(p, x), color=CHAIN_COLORS[i % len(CHAIN_COLORS)], linewidth=1.8,
                label=f"{p}: 95% below {q95:.2g}")
    if fit is not None:
        name = _culprit_sd(fit, sd)
        draws = _posterior(fit)[name].values.ravel()
        draws = draws[np.isfinite(draws) & (draws <= xmax)]
        ax.hist(draws, bins=60, density=True, color="#999999", alpha=0.45,
                label=f"posterior of {name}")
    ax.set_xlim(0, xmax)
    top = max(float(_density(p, x).max()) for p in cands)
    ax.set_ylim(0, min(top * 1.05, 10.0))
    ax.set_xlabel("group standard deviation")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    ax.set_title("candidate priors for a group SD")
    return fig


# ---------------------------------------------------------------------------------------------
# all of them
# ---------------------------------------------------------------------------------------------


def diagnostic_figures(fit: Fit) -> dict[str, Figure]:
    """Every diagnostic figure that applies to ``fit``: ``trace``, ``rank``, ``pair`` (when it
    has a group SD), ``ess`` (when it carries a repair log with more than one attempt) and
    ``sd_priors`` (with its SD's posterior)."""
    from poolwise.inference.repair import RepairLog

    out = {"trace": plot_trace(fit), "rank": plot_rank(fit)}
    post = _posterior(fit)
    has_sd = any(_is_sd(str(n)) for n in post.data_vars)
    if has_sd:
        out["pair"] = plot_pair_funnel(fit)
    log = getattr(fit, "repair_log", None)
    if isinstance(log, RepairLog) and len(log) > 1:
        out["ess"] = plot_ess_attempts(log)
    if has_sd:
        out["sd_priors"] = plot_sd_priors(fit=fit)
    return out
