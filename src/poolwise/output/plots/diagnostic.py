"""Diagnostic figures of one fit and of its repair: trace, rank ("trank") histograms, the
funnel pair plot of a group SD against the group effects with divergences marked, effective
sample size per parameter across repair attempts, and densities of candidate SD priors.

Every function returns a :class:`matplotlib.figure.Figure` on the Agg canvas; none shows it.
The trace plot of whole variables is drawn by arviz-plots (``plot_trace_dist``, which marks
divergences); the trace of chosen components (``parameters=``, what the report shows: the
components with the worst R-hat and ESS and the group SDs, :func:`chain_parameters`) and the
others are plain matplotlib without pyplot, so they touch no global state.

Why one module: every figure here reads the same draws and sample statistics of one fit (or
its repair journal) through the same helpers (posterior, divergences, named components), and
``diagnostic_figures`` / ``chain_figures`` assemble them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from poolwise.model import naming
from poolwise.output.plots import style

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from poolwise.inference.diagnostics import Diagnosis
    from poolwise.inference.fitted import Fit
    from poolwise.inference.repair import RepairLog
    from poolwise.model.priors import Prior

__all__ = [
    "chain_parameters",
    "chain_figures",
    "plot_trace",
    "plot_rank",
    "plot_energy",
    "plot_pair_funnel",
    "plot_ess_attempts",
    "plot_sd_priors",
    "diagnostic_figures",
    "CANDIDATE_SD_PRIORS",
]

DIVERGENT = "#d62728"
CHAIN_COLORS = style.CHAIN_COLORS
_figure = style.figure


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


def _select(post: Any, parameters: Sequence[str]) -> list[tuple[str, np.ndarray]]:
    """(label, (chain, draw) array) of named components: a scalar variable (``sd_g``) or one
    level of a per-group variable (``a_g[3]``, matched by its label's text)."""
    out: list[tuple[str, np.ndarray]] = []
    index: dict[str, dict[str, int]] = {}
    for label in parameters:
        if label in post.data_vars:
            v = post[label]
            extra = [d for d in v.dims if d not in ("chain", "draw")]
            if extra:
                raise ValueError(f"{label} has {len(extra)} more dimension(s); name one "
                                 f"component, e.g. {label}[{v[extra[0]].values[0]}]")
            out.append((label, v.transpose("chain", "draw").values))
            continue
        name, _, rest = label.partition("[")
        if name not in post.data_vars or not rest.endswith("]"):
            have = ", ".join(str(n) for n in list(post.data_vars)[:12])
            raise ValueError(f"no component {label!r} in the posterior; variables: {have}")
        v = post[name]
        dim = next(d for d in v.dims if d not in ("chain", "draw"))
        if name not in index:
            index[name] = {str(x): i for i, x in enumerate(v[dim].values.tolist())}
        i = index[name].get(rest[:-1])
        if i is None:
            raise ValueError(f"no level {rest[:-1]!r} of {name} in the posterior")
        out.append((label, v.isel({dim: i}).transpose("chain", "draw").values))
    return out


def chain_parameters(fit: Fit, *, limit: int = 6) -> list[str]:
    """The components whose chains a report shows: the 2 with the largest R-hat, the 2 with
    the smallest effective sample size (bulk or tail), then the group SDs (where a sampler
    fails first), then the intercept; without repeats, at most ``limit``. Undefined R-hat or
    ESS (constant or non-finite draws) counts as the worst."""
    d = fit.diagnosis
    post_vars = set(_posterior(fit).data_vars)
    picked: list[str] = []
    names = list(d.parameters)
    if names and len(d.rhat) == len(names) and len(d.ess_bulk) == len(names):
        rhat = np.asarray(d.rhat, dtype=float)
        ess = np.minimum(np.asarray(d.ess_bulk, dtype=float), np.asarray(d.ess_tail, dtype=float))
        rhat = np.where(np.isfinite(rhat), rhat, np.inf)
        ess = np.where(np.isfinite(ess), ess, -np.inf)
        picked += [names[i] for i in np.argsort(-rhat, kind="stable")[:2]]
        picked += [names[i] for i in np.argsort(ess, kind="stable")[:2]]
    post = _posterior(fit)
    picked += [str(n) for n in post.data_vars if _is_sd(str(n))]
    if "Intercept" in post_vars:
        picked.append("Intercept")
    # without per-parameter numbers (or too few picks): the other population-level scalars
    picked += [str(n) for n, v in post.data_vars.items() if v.ndim == 2]
    out = list(dict.fromkeys(picked))
    return out[:limit]


def chain_figures(fit: Fit, *, limit: int = 6) -> dict[str, tuple[str, Figure]]:
    """The trace and rank figures of :func:`chain_parameters`, with their captions: what the
    report shows of the sampler (right after the status of a fit that fails)."""
    params = chain_parameters(fit, limit=limit)
    if not params:
        return {}
    d = fit.diagnosis
    where = {p: i for i, p in enumerate(d.parameters)}

    def numbers(p: str) -> str:
        i = where.get(p)
        if i is None or i >= len(d.rhat):
            return p
        from poolwise.textfmt import fmt_rhat

        ess = min(float(d.ess_bulk[i]), float(d.ess_tail[i]))
        return f"{p} (R-hat {fmt_rhat(float(d.rhat[i])) or 'undefined'}, ESS {ess:.0f})"

    listed = "; ".join(numbers(p) for p in params)
    return {
        "trace": (
            f"Trace of each chain and its density for the parameters with the largest R-hat "
            f"and the smallest ESS, and the group SDs: {listed}. Chains that mix overlap and "
            f"look alike; " + ("red ticks mark divergent transitions." if fit.method == "nuts"
                               else "here the chains are groups of independent draws (method "
                               f"{fit.method}: no sampler)."),
            plot_trace(fit, parameters=params),
        ),
        "rank": (
            "Rank histograms per chain for the same parameters: flat bars (the dashed line) "
            "when the chains sample the same distribution; a chain piled at one end sits "
            "where the others do not go.",
            plot_rank(fit, parameters=params),
        ),
        **({"energy": (
            "Energy: the distribution of the Hamiltonian energy (centred) against that of its "
            "change from one draw to the next, with each chain's E-BFMI; when the changes are "
            "much narrower than the energy (E-BFMI below 0.3) the sampler cannot explore the "
            "tails.",
            plot_energy(fit),
        )} if _has_energy(fit) else {}),
    }


# ---------------------------------------------------------------------------------------------
# trace and rank
# ---------------------------------------------------------------------------------------------


def plot_trace(fit: Fit, *, var_names: Sequence[str] | None = None,
               parameters: Sequence[str] | None = None, max_draws: int = 2000) -> Figure:
    """Trace and per-chain density of each variable (arviz-plots ``plot_trace_dist``), with
    divergent transitions marked. Default: every scalar variable and the group effects of
    terms with at most 8 levels.

    ``parameters``: components instead (``["sd_g", "a_g[3]"]``, e.g.
    :func:`chain_parameters`), one row each: the trace of every chain (its own colour and
    dash; at most ``max_draws`` draws per chain, evenly thinned) with divergent transitions
    as red ticks below it, and each chain's density beside it."""
    if parameters is not None:
        return _trace_components(fit, list(parameters), max_draws)
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


def _trace_components(fit: Fit, parameters: list[str], max_draws: int) -> Figure:
    post = _posterior(fit)
    comps = _select(post, parameters)
    chains, draws = comps[0][1].shape if comps else (0, 0)
    div = _diverging(fit, (chains, draws))
    keep = np.unique(np.linspace(0, draws - 1, min(draws, max_draws)).astype(int))
    n = max(len(comps), 1)
    with style.rc():
        fig = _figure(11.0, 1.2 + 1.55 * n)
        axes = fig.subplots(n, 2, squeeze=False, gridspec_kw={"width_ratios": [3.2, 1]})
        for (ax, ax_d), (label, arr) in zip(axes, comps, strict=False):
            finite = arr[np.isfinite(arr)]
            lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
            bins = np.linspace(lo, hi if hi > lo else lo + 1.0, 31)
            for c in range(chains):
                color = CHAIN_COLORS[c % len(CHAIN_COLORS)]
                ls = style.CHAIN_STYLES[c % len(style.CHAIN_STYLES)]
                ax.plot(keep, arr[c, keep], color=color, lw=0.6, alpha=0.75)
                ax_d.hist(arr[c][np.isfinite(arr[c])], bins=bins, density=True,
                          histtype="step", orientation="horizontal", color=color, ls=ls, lw=1.4)
            at = np.flatnonzero(div.any(axis=0)) if div.shape == arr.shape else []
            if len(at):
                ax.plot(at, np.full(len(at), lo), ls="", marker="|", ms=9, color=DIVERGENT,
                        clip_on=False)
            ax.set_ylabel(label, rotation=0, ha="right", va="center")
            ax.set_xlim(0, max(draws - 1, 1))
            ax.grid(axis="x", visible=False)
            ax_d.set_yticks([])
            ax_d.set_ylim(ax.get_ylim())
            ax_d.grid(visible=False)
        axes[-1, 0].set_xlabel("draw (after tuning)")
        axes[-1, 1].set_xlabel("density per chain")
        from matplotlib.lines import Line2D

        handles = [Line2D([], [], color=CHAIN_COLORS[c % len(CHAIN_COLORS)], lw=1.4,
                          ls=style.CHAIN_STYLES[c % len(style.CHAIN_STYLES)], label=f"chain {c}")
                   for c in range(chains)]
        if div.any():
            handles.append(Line2D([], [], ls="", marker="|", ms=9, color=DIVERGENT,
                                  label=f"divergent transition ({int(div.sum())})"))
        fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 6),
                   frameon=False)
        style.suptitle(fig, "Trace and density of each chain (divergent transitions in red)")
    return fig


def _release_from_pyplot(fig: Any) -> None:
    """arviz-plots creates figures through pyplot; drop them from pyplot's registry (the
    figure stays usable) so nothing accumulates or is ever shown."""
    import sys

    plt = sys.modules.get("matplotlib.pyplot")
    if plt is not None:
        plt.close(fig)


def plot_rank(
    fit: Fit, *, var_names: Sequence[str] | None = None, bins: int = 20, max_panels: int = 12,
    parameters: Sequence[str] | None = None,
) -> Figure:
    """Rank histograms per chain ("trank" plots, Vehtari et al. 2021): the draws of all chains
    are ranked together and each chain's ranks histogrammed. Chains that target the same
    posterior give flat histograms (dashed line: the uniform count); a chain that sits in a
    part of the posterior the others do not visit piles up at one end. ``parameters``: named
    components (``["sd_g", "a_g[3]"]``) instead of whole variables."""
    from scipy.stats import rankdata

    post = _posterior(fit)
    comps = (_select(post, parameters)[:max_panels] if parameters is not None
             else _components(post, var_names, max_panels))
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


def _has_energy(fit: Any) -> bool:
    tree = _tree(fit)
    return "sample_stats" in tree.children and "energy" in tree["sample_stats"]


def plot_energy(fit: Fit, *, bins: int = 50) -> Figure:
    """The energy plot (Betancourt 2016): the marginal energy (centred, all chains) against
    the energy transitions (the change of energy between consecutive draws of a chain), as
    two densities, with each chain's E-BFMI in the legend. Similar widths: the sampler moves
    through the energy levels; transitions much narrower (E-BFMI < 0.3): it cannot."""
    energy = _tree(fit)["sample_stats"]["energy"].transpose("chain", "draw").values
    energy = energy.astype(float)
    marginal = (energy - energy.mean(axis=1, keepdims=True)).ravel()
    transition = np.diff(energy, axis=1).ravel()
    both = np.concatenate([marginal, transition])
    both = both[np.isfinite(both)]
    lo, hi = (np.quantile(both, [0.001, 0.999]) if both.size else (-1.0, 1.0))
    edges = np.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1)
    diag = getattr(fit, "diagnosis", None)
    bfmi = list(getattr(diag, "bfmi", ()) or ())
    if not bfmi:
        num = np.mean(np.diff(energy, axis=1) ** 2, axis=1)
        bfmi = list(num / np.var(energy, axis=1))
    with style.rc():
        fig = _figure(8.0, 4.8)
        ax = fig.subplots()
        ax.hist(marginal[np.isfinite(marginal)], bins=edges, density=True, alpha=0.45,
                color=style.COLORS["partial"], label="marginal energy (centred)")
        ax.hist(transition[np.isfinite(transition)], bins=edges, density=True,
                histtype="step", lw=2.2, ls=(0, (4, 2)), color=style.COLORS["complete"],
                label="energy transition (draw to draw)")
        for c, b in enumerate(bfmi):
            ax.plot([], [], ls="", label=f"chain {c}: E-BFMI {b:.2f}")
        ax.set_xlabel("energy")
        ax.set_ylabel("density")
        ax.set_yticks([])
        ax.legend(fontsize=8.5, loc="upper right")
        style.set_title(ax, "Energy: marginal against transitions (E-BFMI below 0.3: the "
                            "sampler cannot explore the tails)")
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
    style.suptitle(fig, f"{sd} against the effects of '{group}' ({int(div.sum())} divergent "
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
