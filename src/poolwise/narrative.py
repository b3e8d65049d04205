"""Plain-language explanation of a pooling comparison, generated from the fitted numbers.

It answers the question of Statistical Rethinking's exercise 13H1: how do the no-pooling
("fixed effects") and partial-pooling ("varying intercepts") models disagree, which groups
move most and why, how much the uncertainty of small groups shrinks, and how the population
mean differs from the raw pooled proportion. Every number in the text comes from the fits or
the data; nothing is a canned example.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from poolwise import links

if TYPE_CHECKING:
    from poolwise.pooling import PoolingComparison

__all__ = ["pooling_narrative"]


def _p(x: float) -> str:
    return f"{x:.3f}"


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


def pooling_narrative(comp: PoolingComparison, *, top: int = 3) -> tuple[str, ...]:
    """Paragraphs explaining ``comp`` (see the module docstring)."""
    g = comp.groups
    pop = comp.population
    name = comp.group
    ci = f"{_pct(comp.prob)} {comp.kind.upper()}"
    link = comp.main_fit.spec.link
    inv = links.get(link).inverse_name
    pop_p = pop.loc["p_typical_group"]
    a_bar = pop.loc["a_bar"]
    sigma = pop.loc["sigma"]
    L = len(g)
    n = g["n"].to_numpy(dtype=float)
    paras: list[str] = []

    def label(row_label: object) -> str:
        return f"{name} {row_label}"

    def counts(r: pd.Series) -> str:
        return f"{_n(r['successes'])} of {_n(r['n'])}"

    # 1. the overall pattern
    rho_ns = _rho(n, g["shrinkage"].to_numpy())
    lo, hi = g["shrinkage"].idxmax(), g["shrinkage"].idxmin()
    paras.append(
        f"Partial pooling (a varying-intercepts or mixed-effects model) pulls every {name}'s "
        f"estimate towards the population mean "
        f"{inv}(a_bar) = {_p(pop_p['mean'])} ({ci} {_p(pop_p['lower'])} to {_p(pop_p['upper'])}); "
        f"no pooling (a fixed-effects model) estimates each of the {L} {name}s from its own data "
        f"and a fixed prior. "
        f"How far a {name} is pulled depends on how much its own data say: the shrinkage "
        f"fraction (the weight the partial-pooling estimate gives to the population mean) "
        f"ranges from {g.loc[lo, 'shrinkage']:.2f} for {label(lo)} (n = {_n(g.loc[lo, 'n'])}) "
        f"to {g.loc[hi, 'shrinkage']:.2f} for {label(hi)} (n = {_n(g.loc[hi, 'n'])}), and the "
        f"Spearman correlation between n and shrinkage is {rho_ns:.2f}."
    )

    # 2. who moves most, and why
    order = g["shift_p"].abs().sort_values(ascending=False, kind="stable").index[:top]
    q1, med = np.quantile(n, 0.25), np.median(n)
    dev = (g["raw_proportion"] - pop_p["mean"]).abs()
    dev_q3 = np.quantile(dev, 0.75)
    movers = []
    for lab in order:
        r = g.loc[lab]
        movers.append(
            f"{label(lab)} ({counts(r)}: no pooling {_p(r['none_p_mean'])}, partial pooling "
            f"{_p(r['partial_p_mean'])}, a shift of {r['shift_p']:+.3f})"
        )
    reasons = []
    for lab in order:
        r = g.loc[lab]
        why = []
        rank_n = int((n < r["n"]).sum()) + 1
        if r["n"] <= q1:
            why.append(
                f"few observations (n = {_n(r['n'])}, the {_ordinal(rank_n)}smallest of {L})"
            )
        if r["boundary"]:
            why.append(f"{r['boundary']} ({counts(r)})")
        elif dev[lab] >= dev_q3:
            why.append(
                f"a raw proportion far from the population mean ({_p(r['raw_proportion'])} vs "
                f"{_p(pop_p['mean'])})"
            )
        if not why:
            why.append(f"a shrinkage fraction of {r['shrinkage']:.2f}")
        reasons.append(f"{label(lab)}: {_list(why)}")
    paras.append(
        f"On the outcome scale the {name}s that move most between the two models are "
        f"{_list(movers)}. The reasons, from the data (median n = {med:g}): "
        f"{'; '.join(reasons)}. A {name} moves far "
        f"when little data hold it in place (a high shrinkage fraction) and its no-pooling "
        f"estimate sits far from the population mean; large {name}s hardly move even when their "
        f"proportions are unusual (Spearman correlation between n and the absolute shift: "
        f"{_rho(n, g['shift_p'].abs().to_numpy()):.2f})."
    )

    # 3. all-0 / all-1 groups
    bnd = g[g["boundary"] != ""]
    if len(bnd):
        prior = comp.fits["none"].spec.priors.unpooled
        items = []
        for lab, r in bnd.iterrows():
            items.append(
                f"{label(lab)} ({counts(r)}): no pooling log-odds {r['none_mean']:.2f} "
                f"(SD {r['none_sd']:.2f}, proportion {_p(r['none_p_mean'])}), partial pooling "
                f"log-odds {r['partial_mean']:.2f} (SD {r['partial_sd']:.2f}, proportion "
                f"{_p(r['partial_p_mean'])}, {ci} {_p(r['partial_p_lower'])} to "
                f"{_p(r['partial_p_upper'])})"
            )
        paras.append(
            f"Of the {L} {name}s, {len(bnd)} had only failures or only successes "
            f"({_list([label(x) for x in bnd.index])}). For such a group the likelihood keeps "
            f"rising as the log-odds run to "
            f"minus or plus infinity, so the data alone give no finite estimate: the no-pooling "
            f"estimate stops where it does only because of the fixed prior {prior} on each "
            f"{name}'s log-odds, and moving that prior would move the estimate. Partial pooling "
            f"replaces the fixed prior with the distribution of {name}s learned from all the "
            f"data, Normal(a_bar = {a_bar['mean']:.2f}, sigma = {sigma['mean']:.2f}), which "
            f"gives every such {name} a finite, data-informed estimate: {'; '.join(items)}."
        )

    # 4. uncertainty
    k = max(1, L // 4)
    by_n = g.sort_values("n", kind="stable")
    small, large = by_n.iloc[:k], by_n.iloc[-k:]
    biggest = g["sd_ratio"].idxmin()
    rb = g.loc[biggest]
    paras.append(
        f"Partial pooling also narrows the uncertainty most where the data are thinnest. For "
        f"the {k} smallest {name}s (n from {_n(small['n'].min())} to {_n(small['n'].max())}) "
        f"the posterior SD of the log-odds is on median {small['sd_ratio'].median():.2f} times "
        f"the no-pooling SD (median {small['none_sd'].median():.2f} to "
        f"{small['partial_sd'].median():.2f}); for the {k} largest (n from "
        f"{_n(large['n'].min())} to {_n(large['n'].max())}) it is "
        f"{large['sd_ratio'].median():.2f} times, close to no change. The largest reduction is "
        f"for {label(biggest)} (n = {_n(rb['n'])}): SD {rb['none_sd']:.2f} to "
        f"{rb['partial_sd']:.2f}. Small {name}s borrow strength from the others through the "
        f"population distribution; large ones are informed mainly by their own data, so the "
        f"two models agree on them."
    )

    # 5. population mean vs raw pooled proportion
    pooled = pop.loc["raw_pooled_proportion", "mean"]
    raw_mean = pop.loc["raw_mean_of_groups", "mean"]
    newg = pop.loc["p_new_group_mean"]
    rel = "below" if pop_p["mean"] < pooled else "above"
    tot_s, tot_n = g["successes"].sum(), g["n"].sum()
    rho_np = _rho(n, g["raw_proportion"].to_numpy())
    text = (
        f"The population mean of the partial-pooling model, {inv}(a_bar) = "
        f"{_p(pop_p['mean'])} ({ci} {_p(pop_p['lower'])} to {_p(pop_p['upper'])}), is {rel} the "
        f"raw pooled proportion {_n(tot_s)}/{_n(tot_n)} = {_p(pooled)}"
    )
    if "p_complete_pooling" in pop.index:
        text += (
            f", which complete pooling reproduces ({_p(pop.loc['p_complete_pooling', 'mean'])})"
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
    text += (
        f". Also, {inv}(a_bar) is the proportion of the median {name}; averaged over the "
        f"spread of {name}s (sigma = {sigma['mean']:.2f} on the log-odds scale) the expected "
        f"proportion of a new {name} is {_p(newg['mean'])}."
    )
    paras.append(text)

    # 6. predictive comparison
    if comp.loo is not None:
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
            ktxt = (f"Some PSIS estimates are unreliable ({ktxt}); treat those elpd values "
                    "with care.")
        else:
            thr = min(pk.threshold for pk in comp.pareto_k.values())
            ktxt = f"All Pareto k values are at most {thr:.2f}, so the PSIS estimates are reliable."
        paras.append(
            f"For predicting a new observation in an existing {name} (row-level PSIS-LOO), "
            f"{'; '.join(parts)}. {ktxt} This compares predictions for the {name}s in the data; "
            f"how well each model predicts a new {name} is a different question "
            f"(leave-one-group-out)."
        )

    for note in comp.notes:
        paras.append(note)
    failed = [m for m, f in comp.fits.items() if not f.ok]
    if failed:
        paras.append(
            f"Caution: the {', '.join(failed)} pooling fit(s) did not pass the sampling "
            "diagnostics; numbers from them are not to be trusted until the fit is repaired."
        )
    return tuple(paras)


def _ordinal(k: int) -> str:
    """'' for 1 (as in "the smallest"), else '2nd ', '3rd ', '11th ', ..."""
    if k == 1:
        return ""
    if 10 <= k % 100 <= 20:
        suf = "th"
    else:
        suf = {1: "st", 2: "nd", 3: "rd"}.get(k % 10, "th")
    return f"{k}{suf} "
