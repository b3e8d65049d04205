"""Funnel localisation: for every estimated group SD, are the divergent transitions
concentrated at its small values (the funnel of a centered term) or at its large values (the
inverted funnel of a non-centered, data-rich term)? The answer names the culprit term for the
repair loop (:mod:`poolwise.inference.repair`) and for the findings.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import xarray as xr

from poolwise.inference.diagnostics.findings import Finding, FindingCode, Funnel, two_digits

if TYPE_CHECKING:
    from poolwise.model.spec import ModelSpec

__all__ = [
    "FUNNEL_AUC",
    "FUNNEL_MIN_DIVERGENT",
    "FUNNEL_P",
    "FUNNEL_SHARE",
    "check_funnels",
    "localise_funnels",
]

#: funnel localisation: at least this many divergent draws, this p-value and this effect
FUNNEL_MIN_DIVERGENT = 4
FUNNEL_P = 0.01
FUNNEL_AUC = 0.15  # |P(log sd_div < log sd_other) - 0.5| must exceed this
#: the reported threshold: this share of the divergent draws lies beyond it
FUNNEL_SHARE = 0.75


def _sd_terms(post: xr.Dataset, spec: ModelSpec | None) -> list[tuple[str, str]]:
    """(sd variable, group term name) for every estimated group SD in the posterior."""
    if spec is not None:
        from poolwise.model.naming import sd_name

        out: list[tuple[str, str]] = []
        for t in spec.terms:
            if t.estimated:
                out.extend((sd_name(t, c), t.name) for c in t.group.coef_names)
        return [(v, t) for v, t in out if v in post]
    from poolwise.model import naming

    out = []  # no spec: read the names
    for name, v in post.data_vars.items():
        s = str(name)
        if naming.kind(s) == "sd" and set(v.dims) <= {"chain", "draw"}:
            out.append((s, str(naming.parse(s).group)))
    return out


def localise_funnels(
    post: xr.Dataset, diverging: np.ndarray, *, spec: ModelSpec | None = None
) -> tuple[Funnel, ...]:
    """For each group SD, test whether divergent transitions concentrate at its small or
    large values.

    Rule: with at least 4 divergent draws, compare log SD of the divergent draws with the
    other draws by the Mann-Whitney U statistic. A funnel is reported when the two-sided
    p-value is below 0.01 **and** the effect is clear: ``auc`` (the probability that a
    divergent draw's SD is below a non-divergent one's) is above 0.65 (``"small"``) or below
    0.35 (``"large"``), and the median SD of the divergent draws is below (above) the median
    of all draws. The reported threshold is the 75% quantile of SD among the divergent draws
    (``"small"``; the 25% quantile for ``"large"``), and ``share_all`` says how much of the
    whole posterior lies on the same side, for contrast.
    """
    div = np.asarray(diverging, dtype=bool)
    n_div = int(div.sum())
    if n_div < FUNNEL_MIN_DIVERGENT or n_div == div.size:
        return ()
    out: list[Funnel] = []
    for var, term in _sd_terms(post, spec):
        s = post[var].transpose("chain", "draw").values.astype(float)
        if s.shape != div.shape or not np.isfinite(s).all() or (s <= 0).any():
            continue
        funnel = _funnel_of(term, var, s, div)
        if funnel is not None:
            out.append(funnel)
    return tuple(out)


def _funnel_of(term: str, var: str, s: np.ndarray, div: np.ndarray) -> Funnel | None:
    """The funnel of one SD's draws ``s`` (positive, finite), or None (the rule of
    :func:`localise_funnels`)."""
    from scipy.stats import mannwhitneyu  # here: scipy.stats takes 0.35 s to import

    ls = np.log(s)
    a, b = ls[div], ls[~div]
    if np.ptp(ls) == 0.0:
        return None
    res = mannwhitneyu(a, b, alternative="two-sided")
    # U counts pairs with a > b; auc = P(a < b) (+ half ties)
    auc = 1.0 - float(res.statistic) / (a.size * b.size)
    p = float(res.pvalue)
    med_div, med_all = float(np.median(s[div])), float(np.median(s))
    if p >= FUNNEL_P or abs(auc - 0.5) <= FUNNEL_AUC:
        return None
    n_div = int(div.sum())
    if auc > 0.5 and med_div < med_all:
        thr = float(np.quantile(s[div], FUNNEL_SHARE))
        share = float(np.mean(s <= thr))
        return Funnel(term, var, "small", thr, share, med_div, med_all, auc, p, n_div)
    if auc < 0.5 and med_div > med_all:
        thr = float(np.quantile(s[div], 1.0 - FUNNEL_SHARE))
        share = float(np.mean(s >= thr))
        return Funnel(term, var, "large", thr, share, med_div, med_all, auc, p, n_div)
    return None


def check_funnels(
    funnels: tuple[Funnel, ...], n_div: int, spec: ModelSpec | None
) -> list[Finding]:
    """Where the divergences are (:func:`localise_funnels`), strongest first, or why they
    could not be attributed to a group term."""
    if n_div and funnels:
        return [_funnel_finding(f, spec) for f in sorted(funnels, key=lambda f: -abs(f.auc - 0.5))]
    if n_div < 1:
        return []
    why = (
        f"only {n_div} divergent transition(s), too few to localise"
        if n_div < FUNNEL_MIN_DIVERGENT
        else "they are not concentrated at small or large values of any group SD"
    )
    return [Finding(
        FindingCode.FUNNEL_UNLOCALISED, "info",
        f"The divergences could not be attributed to a group term: {why}. Raise "
        "target_accept; if they persist, look at the pair plot of the parameters.",
    )]


def _funnel_finding(f: Funnel, spec: ModelSpec | None) -> Finding:
    """What the funnel ``f`` shows, what it means and what to do."""
    term_txt = f"(... | {f.term})"
    par = None
    if spec is not None:
        t = next((t for t in spec.terms if t.name == f.term), None)
        if t is not None:
            term_txt = str(t.group.term) or term_txt
            par = t.parameterization
    par_txt = f" (now {par})" if par else ""
    seen = (
        f"{f.describe().capitalize()}: {100 * FUNNEL_SHARE:.0f}% of the {f.n_divergent} "
        f"divergent transitions, but only {100 * f.share_all:.0f}% of all draws, lie there "
        f"(median {f.parameter} "
        f"{two_digits(f.median_divergent)} in divergent draws vs {two_digits(f.median_all)} "
        f"overall; Mann-Whitney p = {f.p_value:.1g})."
    )
    if f.direction == "small":
        meaning = (
            f" This is the funnel of the centered group term {term_txt}{par_txt}: as "
            f"{f.parameter} shrinks the group effects are squeezed together, no single step "
            f"size fits both the neck and the mouth, and the sampler cannot enter the neck, so "
            f"small values of {f.parameter} are under-represented. Non-center this term "
            "(parameterization='noncentered' or 'auto'); do not tighten its prior to hide the "
            "neck."
        )
    else:
        meaning = (
            f" This is the inverted funnel of a non-centered term {term_txt}{par_txt} whose "
            f"levels are well informed by data: at large {f.parameter} the standardized effects "
            "are pinned by the data. Center the data-rich levels (parameterization='auto') or "
            "increase target_accept."
        )
    return Finding(FindingCode.FUNNEL, "warning", seen + meaning, (f.parameter,))
