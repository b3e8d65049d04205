"""Plain-language explanation of a pooling comparison, generated from the fitted numbers.

It answers the question of Statistical Rethinking's exercise 13H1: how do the no-pooling
("fixed effects") and partial-pooling ("varying intercepts") models disagree, which groups
move most and why, how much the uncertainty of small groups shrinks, and how the population
mean differs from the raw pooled proportion. Every number in the text comes from the fits or
the data; nothing is a canned example.

One function per paragraph, each testable on its own. Every sentence is true for the model at
hand: with predictors, the group intercepts and ``a_bar`` are log-odds at the predictors' zero
values (reference levels of categorical predictors), so their proportions are proportions at
those values and are never compared with raw proportions; the population paragraph then
compares like with like (the model's proportion averaged over the data's own rows against the
raw pooled proportion).

Why one module: the paragraphs are one text, built from one context (``_Context``) with the
same number formats and the same rules of wording; a paragraph with two cases (the population
paragraph, with and without predictors) is a short dispatch to one function per case.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from poolwise.inference.summary import interval_columns
from poolwise.model import links
from poolwise.textfmt import fmt_sig

if TYPE_CHECKING:
    from poolwise.comparison.pooling import PoolingComparison
    from poolwise.inference.fitted import Fit
    from poolwise.model.spec import ModelSpec

__all__ = [
    "pooling_narrative",
    "overall_paragraph",
    "movers_paragraph",
    "boundary_paragraph",
    "uncertainty_paragraph",
    "population_paragraph",
    "predictive_paragraph",
    "caution_paragraph",
    "has_predictors",
    "reference_values",
    "fitted_pooled_proportion",
]


def _p(x: float) -> str:
    """A proportion or an estimate: 3 significant digits."""
    return fmt_sig(x, 3)


def _s2(x: float) -> str:
    """A ratio or a fraction: 2 significant digits."""
    return fmt_sig(x, 2)


def _signed(x: float) -> str:
    return ("+" if x > 0 else "") + fmt_sig(x, 3)


def _n(x: float) -> str:
    return f"{int(round(float(x)))}"


def _pct(prob: float) -> str:
    return f"{100 * prob:g}%"


def _rho(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)


def _list(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


# ---- what the model is ----------------------------------------------------------------------


def has_predictors(spec: ModelSpec) -> bool:
    """True when the model has predictors besides the intercepts (fixed or varying)."""
    return len(spec.design.fixed_names) > 1 or any(
        t.group.n_coefs > 1 for t in spec.terms
    )


def reference_values(spec: ModelSpec) -> str:
    """Where the intercepts are: ``"urban = 0 and age = 0"``, a categorical predictor at its
    reference level (``"livch = 0 (its reference level)"``)."""
    d = spec.design
    parts = []
    for v in spec.formula.predictors:
        if v in d.reference:
            parts.append(f"{v} = {d.reference[v]} (its reference level)")
        else:
            parts.append(f"{v} = 0")
    return _list(parts) if parts else "the predictors' zero values"


def fitted_pooled_proportion(fit: Fit) -> np.ndarray:
    """Per draw: the model's proportion averaged over the data's own rows (each cell at its own
    predictor values and groups, weighted by its trials), comparable with the raw pooled
    proportion (all successes / all trials)."""
    from poolwise.model.predictor import inverse_link, linear_predictor

    d = fit.spec.design
    p = inverse_link(fit.spec.link, linear_predictor(fit.spec, fit.posterior))
    return (p * d.n).sum(axis=1) / d.n.sum()


@dataclass(frozen=True)
class _Context:
    comp: PoolingComparison
    g: pd.DataFrame
    pop: pd.DataFrame
    name: str
    ci: str
    inv: str
    predictors: bool
    at: str  # "" or " at urban = 0 and age = 0"
    lower: str  # the interval's columns, "hdi_89_lower" (the groups': "partial_p_" before)
    upper: str

    def label(self, row_label: object) -> str:
        return f"{self.name} {row_label}"

    @staticmethod
    def counts(r: pd.Series) -> str:
        return f"{_n(r['successes'])} of {_n(r['n'])}"

    def interval(self, row: pd.Series, prefix: str = "") -> str:
        """``89% HDI 0.1 to 0.3``: the interval of a population row, or with ``prefix`` that
        of one model and scale of a groups row (``"partial_p_"``)."""
        return (f"{self.ci} {_p(row[prefix + self.lower])} to "
                f"{_p(row[prefix + self.upper])}")


def _context(comp: PoolingComparison) -> _Context:
    spec = comp.main_fit.spec
    link = spec.link
    pred = has_predictors(spec)
    lower, upper = interval_columns(comp.prob, comp.kind)
    return _Context(
        comp=comp, g=comp.groups, pop=comp.population, name=comp.group,
        ci=f"{_pct(comp.prob)} {comp.kind.upper()}",
        inv=links.get(link).inverse_name,
        predictors=pred, at=f" at {reference_values(spec)}" if pred else "",
        lower=lower, upper=upper,
    )


# ---- the paragraphs ---------------------------------------------------------------------------


def overall_paragraph(comp: PoolingComparison) -> str:
    """1. The overall pattern: partial pooling pulls groups towards the population mean, by
    how much (the shrinkage fraction) and how that follows n."""
    c = _context(comp)
    g, name = c.g, c.name
    pop_p, a_bar = c.pop.loc["p_typical_group"], c.pop.loc["a_bar"]
    n = g["n"].to_numpy(dtype=float)
    rho_ns = _rho(n, g["shrinkage"].to_numpy())
    lo, hi = g["shrinkage"].idxmax(), g["shrinkage"].idxmin()
    if c.predictors:
        target = (
            f"every {name}'s intercept towards the population mean a_bar = "
            f"{_p(a_bar['mean'])} on the log-odds scale, the intercept of a typical {name}"
            f"{c.at}: a proportion of {c.inv}(a_bar) = {_p(pop_p['mean'])} "
            f"({c.interval(pop_p)}) at those values"
        )
    else:
        target = (
            f"every {name}'s estimate towards the population mean {c.inv}(a_bar) = "
            f"{_p(pop_p['mean'])} ({c.interval(pop_p)})"
        )
    return (
        f"Partial pooling (a varying-intercepts or mixed-effects model) pulls {target}; "
        f"no pooling (a fixed-effects model) estimates each of the {len(g)} {name}s from its own "
        f"data and a fixed prior. How far a {name} is pulled depends on how much its own data "
        f"say: the shrinkage fraction (the weight the partial-pooling estimate gives to the "
        f"population mean) ranges from {_s2(g.loc[lo, 'shrinkage'])} for {c.label(lo)} "
        f"(n = {_n(g.loc[lo, 'n'])}) to {_s2(g.loc[hi, 'shrinkage'])} for {c.label(hi)} "
        f"(n = {_n(g.loc[hi, 'n'])}), and the Spearman correlation between n and shrinkage is "
        f"{rho_ns:.2f}."
    )


def movers_paragraph(comp: PoolingComparison, *, top: int = 3) -> str:
    """2. The groups that move most between the two models, and why (from the data)."""
    c = _context(comp)
    g, name = c.g, c.name
    n = g["n"].to_numpy(dtype=float)
    L = len(g)
    pop_p = c.pop.loc["p_typical_group"]
    a_bar = c.pop.loc["a_bar", "mean"]
    order = g["shift_p"].abs().sort_values(ascending=False, kind="stable").index[:top]
    q1, med = np.quantile(n, 0.25), np.median(n)
    # how unusual a group is: with predictors on the intercept (log-odds) scale, where no
    # pooling and a_bar are both at the predictors' zero values; else its raw proportion
    dev = (g["none_mean"] - a_bar).abs() if c.predictors else (
        g["raw_proportion"] - pop_p["mean"]).abs()
    dev_q3 = np.quantile(dev, 0.75)
    movers = []
    reasons = []
    for lab in order:
        r = g.loc[lab]
        movers.append(
            f"{c.label(lab)} ({c.counts(r)}: no pooling {_p(r['none_p_mean'])}, partial "
            f"pooling {_p(r['partial_p_mean'])}, a shift of {_signed(r['shift_p'])})"
        )
        why = []
        rank_n = int((n < r["n"]).sum()) + 1
        if r["n"] <= q1:
            why.append(
                f"few observations (n = {_n(r['n'])}, the {_ordinal(rank_n)}smallest of {L})"
            )
        if r["boundary"]:
            why.append(f"{r['boundary']} ({c.counts(r)})")
        elif dev[lab] >= dev_q3:
            why.append(
                f"a no-pooling intercept far from a_bar ({_p(r['none_mean'])} vs {_p(a_bar)} "
                "on the log-odds scale)" if c.predictors else
                f"a raw proportion far from the population mean ({_p(r['raw_proportion'])} vs "
                f"{_p(pop_p['mean'])})"
            )
        if not why:
            why.append(f"a shrinkage fraction of {_s2(r['shrinkage'])}")
        reasons.append(f"{c.label(lab)}: {_list(why)}")
    scale = (f"On the outcome scale, with proportions{c.at}," if c.predictors
             else "On the outcome scale")
    unusual = "intercepts" if c.predictors else "proportions"
    return (
        f"{scale} the {name}s that move most between the two models are {_list(movers)}. "
        f"The reasons, from the data (median n = {med:g}): {'; '.join(reasons)}. A {name} "
        f"moves far when little data hold it in place (a high shrinkage fraction) and its "
        f"no-pooling estimate sits far from the population mean; large {name}s hardly move "
        f"even when their {unusual} are unusual (Spearman correlation between n and the "
        f"absolute shift: {_rho(n, g['shift_p'].abs().to_numpy()):.2f})."
    )


def boundary_paragraph(comp: PoolingComparison) -> str | None:
    """3. Groups with only failures or only successes (None when there are none)."""
    c = _context(comp)
    g, name = c.g, c.name
    bnd = g[g["boundary"] != ""]
    if not len(bnd):
        return None
    a_bar, sigma = c.pop.loc["a_bar"], c.pop.loc["sigma"]
    prior = comp.fits["none"].spec.priors.unpooled
    items = []
    for lab, r in bnd.iterrows():
        items.append(
            f"{c.label(lab)} ({c.counts(r)}): no pooling log-odds {_p(r['none_mean'])} "
            f"(SD {_p(r['none_sd'])}, proportion {_p(r['none_p_mean'])}), partial pooling "
            f"log-odds {_p(r['partial_mean'])} (SD {_p(r['partial_sd'])}, proportion "
            f"{_p(r['partial_p_mean'])}, {c.interval(r, 'partial_p_')})"
        )
    where = f" (intercepts and proportions{c.at})" if c.predictors else ""
    return (
        f"Of the {len(g)} {name}s, {len(bnd)} had only failures or only successes "
        f"({_list([c.label(x) for x in bnd.index])}). For such a group the likelihood keeps "
        f"rising as its intercept runs to minus or plus infinity, so the data alone give no "
        f"finite estimate: the no-pooling estimate stops where it does only because of the "
        f"fixed prior {prior} on each {name}'s intercept, and moving that prior would move the "
        f"estimate. Partial pooling replaces the fixed prior with the distribution of {name}s "
        f"learned from all the data, Normal(a_bar = {_p(a_bar['mean'])}, sigma = "
        f"{_p(sigma['mean'])}), which gives every such {name} a finite, data-informed "
        f"estimate{where}: {'; '.join(items)}."
    )


def uncertainty_paragraph(comp: PoolingComparison) -> str:
    """4. How partial pooling changes the uncertainty, small against large groups; the text
    says "narrows most where the data are thinnest" only when the numbers show it."""
    c = _context(comp)
    g, name = c.g, c.name
    L = len(g)
    k = max(1, L // 4)
    by_n = g.sort_values("n", kind="stable")
    small, large = by_n.iloc[:k], by_n.iloc[-k:]
    r_small, r_large = small["sd_ratio"].median(), large["sd_ratio"].median()
    numbers = (
        f"For the {k} smallest {name}s (n from {_n(small['n'].min())} to "
        f"{_n(small['n'].max())}) the posterior SD of the intercept (log-odds) under partial "
        f"pooling is on median {_s2(r_small)} times the no-pooling SD (median "
        f"{_p(small['none_sd'].median())} to {_p(small['partial_sd'].median())}); for the {k} "
        f"largest (n from {_n(large['n'].min())} to {_n(large['n'].max())}) it is "
        f"{_s2(r_large)} times."
    )
    if r_small < 1.0 and r_small < r_large:
        text = (
            "Partial pooling also narrows the uncertainty most where the data are thinnest. "
            + numbers
        )
    else:
        text = (
            f"Here partial pooling does not narrow the uncertainty of the smallest {name}s more "
            f"than that of the largest. " + numbers
        )
    biggest = g["sd_ratio"].idxmin()
    rb = g.loc[biggest]
    if rb["sd_ratio"] < 1.0:
        text += (
            f" The largest reduction is for {c.label(biggest)} (n = {_n(rb['n'])}): SD "
            f"{_p(rb['none_sd'])} to {_p(rb['partial_sd'])}."
        )
    else:
        text += f" No {name}'s SD is smaller under partial pooling."
    if r_small < 1.0 and r_small < r_large:
        text += (
            f" Small {name}s borrow strength from the others through the population "
            f"distribution; large ones are informed mainly by their own data, so the two models "
            f"agree more closely on them."
        )
    return text


def population_paragraph(comp: PoolingComparison) -> str:
    """5. The population mean against the raw pooled proportion. Without predictors:
    ``inverse_link(a_bar)`` against the raw pooled proportion (which complete pooling
    reproduces) and the unweighted mean of the groups. With predictors ``a_bar`` is at the
    predictors' zero values, so the like-with-like comparison is the model's proportion
    averaged over the data's own rows."""
    c = _context(comp)
    pooled = c.pop.loc["raw_pooled_proportion", "mean"]
    tot_s, tot_n = c.g["successes"].sum(), c.g["n"].sum()
    raw_text = f"the raw pooled proportion {_n(tot_s)}/{_n(tot_n)} = {_p(pooled)}"
    if c.predictors:
        return _population_with_predictors(c, pooled, raw_text)
    return _population_without_predictors(c, pooled, raw_text)


def _population_with_predictors(c: _Context, pooled: float, raw_text: str) -> str:
    """The population paragraph of a model with predictors: ``a_bar`` is at the predictors'
    zero values, so the model's proportion averaged over the data's rows is what compares
    with the raw pooled proportion."""
    comp, pop, name, inv = c.comp, c.pop, c.name, c.inv
    pop_p, sigma, newg = pop.loc["p_typical_group"], pop.loc["sigma"], pop.loc["p_new_group_mean"]
    a_bar = pop.loc["a_bar"]
    fitted = fitted_pooled_proportion(comp.main_fit)
    lo, hi = _interval(fitted, comp.prob, comp.kind)
    text = (
        f"The population intercept a_bar = {_p(a_bar['mean'])} is the log-odds of a "
        f"typical {name}{c.at}, so {inv}(a_bar) = {_p(pop_p['mean'])} ({c.interval(pop_p)}) "
        f"is the proportion of a typical {name} at those values, not an average over the "
        f"data, and it is not comparable with {raw_text}. Compared like with like, "
        f"averaged over the data's own rows (each at its own predictor values and {name}), "
        f"the partial-pooling model predicts a proportion of {_p(float(fitted.mean()))} "
        f"({c.ci} {_p(lo)} to {_p(hi)}) against the raw {_p(pooled)}"
    )
    if "complete" in comp.fits:
        text += (
            f"; complete pooling, with the same predictors, predicts "
            f"{_p(float(fitted_pooled_proportion(comp.fits['complete']).mean()))}"
        )
    return text + (
        f". Averaged over the spread of {name}s (sigma = {_p(sigma['mean'])} on the "
        f"log-odds scale), the expected proportion of a new {name}{c.at} is "
        f"{_p(newg['mean'])}."
    )


def _population_without_predictors(c: _Context, pooled: float, raw_text: str) -> str:
    """The population paragraph of an intercept-only model: ``inverse_link(a_bar)`` against
    the raw pooled proportion (which complete pooling reproduces) and the unweighted mean of
    the groups."""
    g, pop, name, inv = c.g, c.pop, c.name, c.inv
    pop_p, sigma, newg = pop.loc["p_typical_group"], pop.loc["sigma"], pop.loc["p_new_group_mean"]
    raw_mean = pop.loc["raw_mean_of_groups", "mean"]
    rel = "below" if pop_p["mean"] < pooled else "above"
    rho_np = _rho(g["n"].to_numpy(dtype=float), g["raw_proportion"].to_numpy())
    text = (
        f"The population mean of the partial-pooling model, {inv}(a_bar) = "
        f"{_p(pop_p['mean'])} ({c.interval(pop_p)}), is {rel} {raw_text}"
    )
    if "p_complete_pooling" in pop.index:
        cp = pop.loc["p_complete_pooling"]
        text += (
            f", which complete pooling reproduces ({_p(cp['mean'])}, {c.interval(cp)})"
            if cp[c.lower] <= pooled <= cp[c.upper]
            else f"; complete pooling estimates {_p(cp['mean'])} ({c.interval(cp)})"
        )
    text += (
        f". The raw pooled proportion weighs every observation equally, so large {name}s "
        f"dominate it; a_bar is the centre of the {name}s' log-odds, which weighs {name}s "
        f"rather than observations. The unweighted mean of the {name}s' raw proportions is "
        f"{_p(raw_mean)}"
    )
    if np.isfinite(rho_np) and abs(raw_mean - pooled) > 1e-3:
        more = "higher" if pooled > raw_mean else "lower"
        text += (
            f": here larger {name}s have {more} proportions (Spearman correlation between n and "
            f"raw proportion {rho_np:.2f}), which is what separates the two lines"
        )
    return text + (
        f". Also, {inv}(a_bar) is the proportion of the median {name}; averaged over the "
        f"spread of {name}s (sigma = {_p(sigma['mean'])} on the log-odds scale) the expected "
        f"proportion of a new {name} is {_p(newg['mean'])}."
    )


def _interval(x: np.ndarray, prob: float, kind: str) -> tuple[float, float]:
    from arviz_stats.base import array_stats

    fn = array_stats.hdi if kind == "hdi" else array_stats.eti
    lo, hi = fn(np.asarray(x, dtype=float), prob)
    return float(lo), float(hi)


def predictive_paragraph(comp: PoolingComparison) -> str | None:
    """6. The row-level PSIS-LOO comparison (None without one)."""
    if comp.loo is None:
        return None
    name = comp.group
    t = comp.loo
    best = t.index[0]
    parts = [f"{best} has the highest expected log predictive density (elpd "
             f"{t.loc[best, 'elpd']:.1f}, SE {t.loc[best, 'se']:.1f})"]
    for m in t.index[1:]:
        diff, dse = -t.loc[m, "elpd_diff"], t.loc[m, "dse"]
        verdict = (
            "a clear difference" if diff > 2 * dse
            else "within about two standard errors, so not decisive"
        )
        parts.append(f"{m} is {diff:.1f} lower (SE of the difference {dse:.1f}; {verdict})")
    bad = {m: pk for m, pk in comp.pareto_k.items() if not pk.ok}
    if bad:
        ktxt = "; ".join(
            f"{m}: {pk.n_bad} rows with Pareto k > {pk.threshold:.2f} (max {pk.max_k:.2f})"
            for m, pk in bad.items()
        )
        ktxt = f"Some PSIS estimates are unreliable ({ktxt}); treat those elpd values with care."
    else:
        thr = min(pk.threshold for pk in comp.pareto_k.values())
        ktxt = f"All Pareto k values are at most {thr:.2f}, so the PSIS estimates are reliable."
    return (
        f"For predicting a new observation in an existing {name} (row-level PSIS-LOO), "
        f"{'; '.join(parts)}. {ktxt} This compares predictions for the {name}s in the data; "
        + _logo_sentence(comp, name)
    )


def _logo_sentence(comp: PoolingComparison, name: str) -> str:
    """How well each model predicts a new group (leave-one-group-out), from ``comp.logo``."""
    from poolwise.comparison.logo import MODEL_NAMES

    lg = getattr(comp, "logo", None)
    if lg is None:
        return (f"how well each model predicts a new {name} is a different question "
                "(leave-one-group-out), not computed here.")
    t = lg.table
    best = t.index[0]
    G = len(lg.pointwise)
    parts = [f"{MODEL_NAMES[best]} predicts best (elpd {t.loc[best, 'elpd']:.1f}, "
             f"SE {t.loc[best, 'se']:.1f}, over {G} {name}s)"]
    for m in t.index[1:]:
        diff, dse = -t.loc[m, "elpd_diff"], t.loc[m, "dse"]
        verdict = "clear" if diff > 2 * dse else "not decisive"
        parts.append(f"{MODEL_NAMES[m]} is {diff:.1f} lower (SE {dse:.1f}; {verdict})")
    n_refit = int(t["n_refit"].sum())
    n_bad = int(t["n_bad_k"].sum())
    if lg.exact:
        how = f"each {name} left out in turn and the models refitted without it"
    else:
        how = (f"PSIS-LOGO over each {name}'s log-likelihood, its own intercept integrated "
               "out; " + (f"{n_refit} {name}(s) with Pareto k > 0.7 refitted exactly"
                          if n_refit else "no refits needed" if not n_bad else "no refits"))
        if n_bad:
            how += f", {n_bad} estimate(s) with Pareto k > 0.7 (unreliable)"
    return (f"for predicting a new {name} (leave-one-group-out, one {name} at a time: {how}), "
            f"{'; '.join(parts)}.")


def caution_paragraph(comp: PoolingComparison) -> str | None:
    """7. A warning when a fit did not pass its diagnostics (None when all passed)."""
    failed = [m for m, f in comp.fits.items() if not f.ok]
    if not failed:
        return None
    return (
        f"Caution: the {', '.join(failed)} pooling fit(s) did not pass the sampling "
        "diagnostics; numbers from them are not to be trusted until the fit is repaired."
    )


def pooling_narrative(comp: PoolingComparison, *, top: int = 3) -> tuple[str, ...]:
    """Paragraphs explaining ``comp`` (see the module docstring), followed by the
    comparison's own notes."""
    paras = [
        overall_paragraph(comp),
        movers_paragraph(comp, top=top),
        boundary_paragraph(comp),
        uncertainty_paragraph(comp),
        population_paragraph(comp),
        predictive_paragraph(comp),
    ]
    out = [p for p in paras if p]
    out.extend(comp.notes)
    caution = caution_paragraph(comp)
    if caution:
        out.append(caution)
    return tuple(out)


def _ordinal(k: int) -> str:
    """'' for 1 (as in "the smallest"), else '2nd ', '3rd ', '11th ', ..."""
    if k == 1:
        return ""
    if 10 <= k % 100 <= 20:
        suf = "th"
    else:
        suf = {1: "st", 2: "nd", 3: "rd"}.get(k % 10, "th")
    return f"{k}{suf} "
