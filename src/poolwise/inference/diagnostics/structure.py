"""Findings about the data's structure, read from the model (no draws): grouping factors with
fewer than 5 levels, and levels whose outcomes are all 0 or all 1.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from poolwise.inference.diagnostics.findings import Finding, FindingCode, name_list

if TYPE_CHECKING:
    from poolwise.model.spec import ModelSpec

__all__ = ["MIN_LEVELS", "check_structure"]

#: lme4: "grouping factors with < 5 sampled levels may give unreliable estimates"
MIN_LEVELS = 5


def check_structure(spec: ModelSpec) -> list[Finding]:
    """Grouping factors with few levels, levels whose outcomes are all 0 or all 1."""
    out: list[Finding] = []
    for t in spec.terms:
        if t.estimated and t.group.n_levels < MIN_LEVELS:
            out.append(_few_levels(t))
        if "Intercept" in t.group.coef_names:
            out.extend(_extreme_levels(t.group))
    return out


def _few_levels(term: Any) -> Finding:
    """The SD of a group term with fewer than :data:`MIN_LEVELS` levels is prior-shaped."""
    from poolwise.model.naming import sd_name

    g = term.group
    return Finding(
        FindingCode.FEW_LEVELS, "warning",
        f"Grouping factor '{g.name}' has only {g.n_levels} levels (< {MIN_LEVELS}): "
        f"its standard deviation is weakly identified and strongly influenced by the "
        "prior, and its posterior reaches near 0, where a centered term has its "
        "funnel. Read its SD as prior-shaped; compare prior and posterior.",
        tuple(sd_name(term, c) for c in g.coef_names),
    )


def _extreme_levels(g: Any) -> list[Finding]:
    """The levels of group ``g`` whose outcomes are all 0 or all 1 (none: no finding)."""
    zero = [str(lab) for lab, s in zip(g.labels, g.level_successes, strict=True) if s == 0]
    one = [
        str(lab) for lab, s, n in
        zip(g.labels, g.level_successes, g.level_trials, strict=True) if s == n and n > 0
    ]
    if not (zero or one):
        return []
    parts = []
    if zero:
        parts.append(f"{name_list(zero, 8)} have all outcomes 0")
    if one:
        parts.append(f"{name_list(one, 8)} have all outcomes 1")
    return [Finding(
        FindingCode.EXTREME_LEVELS, "info",
        f"Levels of '{g.name}': {'; '.join(parts)}. Their maximum-likelihood "
        "estimates are infinite; the Bayesian estimates shown are finite, set by "
        "the prior (no pooling) or pulled toward the population mean (partial "
        "pooling).",
    )]
