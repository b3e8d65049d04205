"""The sampler checks: each reads the numbers of :mod:`poolwise.inference.diagnostics.numbers`
and returns its findings.

Thresholds of Vehtari et al. 2021, CmdStan ``diagnose`` and ArviZ ``diagnose``:

* divergent transitions after tuning, per chain, with their percentage (must be 0);
* rank-normalized split R-hat, bulk and folded (must be <= 1.01); constant draws make it
  undefined, which is reported as such and never as "not mixed"; with many group-level
  parameters (RELIABILITY H1) a few may exceed 1.01 by chance, so the check fails when any
  population-level parameter or more than 1% of the group-level ones exceed it; one chain
  cannot be checked at all;
* bulk and tail effective sample size (>= 100 per chain); non-finite draws make it NaN;
* E-BFMI per chain (>= 0.3);
* tree-depth saturation per chain (an efficiency warning, not a validity error);
* mean acceptance per chain against ``target_accept`` (a warning, as PyMC's).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from poolwise.inference.diagnostics.findings import (
    ACCEPT_TOLERANCE,
    BFMI_MIN,
    ESS_PER_CHAIN,
    RHAT_GROUP_FRACTION,
    RHAT_MAX,
    Finding,
    FindingCode,
    name_list,
)
from poolwise.inference.diagnostics.numbers import Convergence

__all__ = [
    "check_acceptance",
    "check_bfmi",
    "check_constant",
    "check_divergences",
    "check_ess",
    "check_nonfinite",
    "check_one_chain",
    "check_rhat",
    "check_treedepth",
]


def check_divergences(div: np.ndarray, chains: int, draws: int) -> list[Finding]:
    """Divergent transitions after tuning (must be 0), per chain with their percentage of the
    posterior's ``chains`` x ``draws``."""
    per_chain = tuple(int(c) for c in div.sum(axis=1))
    n_div = int(div.sum())
    if not n_div:
        return []
    pct = 100.0 * n_div / (chains * draws)
    detail = ", ".join(
        f"chain {i}: {c} ({100.0 * c / draws:.1f}%)" for i, c in enumerate(per_chain)
    )
    return [Finding(
        FindingCode.DIVERGENCES, "error",
        f"{n_div} of {chains * draws} transitions after tuning ({pct:.1f}%) ended with a "
        f"divergence ({detail}). These divergent transitions indicate that HMC is not "
        "fully able to explore the posterior distribution, so the estimates may be "
        "biased. Reparameterize the group term (non-centered), or increase target_accept "
        "closer to 1; do not use these draws.",
    )]


def check_nonfinite(conv: Convergence) -> list[Finding]:
    """Parameters with NaN or infinite draws."""
    nonfinite = [n for n, ok_ in zip(conv.names, conv.finite, strict=True) if not ok_]
    if not nonfinite:
        return []
    return [Finding(
        FindingCode.NONFINITE, "error",
        f"{len(nonfinite)} parameter(s) have NaN or infinite draws ({name_list(nonfinite)}): "
        "R-hat and ESS are undefined for them (reported as NaN) and the sampler or the "
        "model evaluation failed. Do not use these draws; check the data and the priors.",
        tuple(nonfinite),
    )]


def check_constant(conv: Convergence) -> list[Finding]:
    """Parameters whose every draw is the same: R-hat undefined (not "not mixed")."""
    const_names = [n for n, c in zip(conv.names, conv.constant, strict=True) if c]
    if not const_names:
        return []
    return [Finding(
        FindingCode.RHAT_UNDEFINED, "error",
        f"R-hat undefined (constant draws) for {name_list(const_names)}: every draw of every "
        "chain has the same value, so mixing cannot be assessed at all (this is not a "
        "verdict of 'not mixed'). A sampled parameter that never moves means the sampler "
        "was stuck; check the model, the initial values and the step size.",
        tuple(const_names),
    )]


def check_one_chain(conv: Convergence, chains: int) -> list[Finding]:
    """One chain: R-hat cannot be computed, so the fit cannot pass."""
    if chains >= 2 or not conv.names:
        return []
    # a fit whose convergence cannot be checked is not a fit that passed: an error
    return [Finding(
        FindingCode.RHAT_SINGLE_CHAIN, "error",
        f"R-hat cannot be computed: it compares chains and needs at least 2, but this fit "
        f"has {chains}. Convergence cannot be checked, so the fit is not OK whatever its "
        "other numbers say. Run 4 chains (chains=4, --chains 4).",
    )]


def check_rhat(conv: Convergence) -> list[Finding]:
    """R-hat above :data:`RHAT_MAX`: an error for any population-level parameter or more than
    :data:`RHAT_GROUP_FRACTION` of the group-level ones, a warning otherwise."""
    names, rhat, group_level = conv.names, conv.rhat, conv.group_level
    defined = np.isfinite(rhat) | np.isinf(rhat)
    max_rhat = conv.max_rhat
    high = defined & (rhat > RHAT_MAX)
    bad_rhat = _ordered(names, rhat, high, descending=True)
    if not bad_rhat:
        return []
    n_group = int(group_level.sum())
    n_high_group = int((high & group_level).sum())
    n_high_pop = int((high & ~group_level).sum())
    frac = n_high_group / n_group if n_group else 0.0
    fails = n_high_pop > 0 or frac > RHAT_GROUP_FRACTION
    stuck_names = [n for n, s in zip(names, conv.stuck, strict=True) if s]
    stuck_note = (
        f" Chains are stuck, each at its own constant value, for {name_list(stuck_names)}."
        if stuck_names else ""
    )
    counts = (
        f"{n_high_pop} population-level and {n_high_group} of {n_group} group-level "
        f"parameters ({100 * frac:.1f}%)" if n_group else f"{n_high_pop} parameter(s)"
    )
    if fails:
        return [Finding(
            FindingCode.RHAT, "error",
            f"R-hat is above {RHAT_MAX} for {counts}; the largest is {_fmt_rhat(max_rhat)} "
            f"({name_list(bad_rhat)}). The chains have not mixed: they disagree about the "
            f"posterior, so the estimates are not reliable.{stuck_note} Run longer chains "
            "(more tuning and draws) or reparameterize.",
            tuple(bad_rhat),
        )]
    return [Finding(
        FindingCode.RHAT, "warning",
        f"R-hat is above {RHAT_MAX} for {counts} (max {_fmt_rhat(max_rhat)}: "
        f"{name_list(bad_rhat)}); with this many group-level parameters a few exceed "
        f"{RHAT_MAX} by chance, and all population-level parameters are below it. Check "
        "these groups; more draws will settle them.",
        tuple(bad_rhat),
    )]


def check_ess(conv: Convergence, chains: int, kind: Literal["bulk", "tail"]) -> list[Finding]:
    """Bulk or tail effective sample size below :data:`ESS_PER_CHAIN` per chain."""
    threshold = ESS_PER_CHAIN * chains
    ess = conv.ess_bulk if kind == "bulk" else conv.ess_tail
    defined = np.isfinite(ess)
    low = _ordered(conv.names, ess, defined & (ess < threshold))
    if not low:
        return []
    v = float(np.min(ess[defined]))
    if kind == "bulk":
        return [Finding(
            FindingCode.ESS_BULK, "error",
            f"Bulk effective sample size is below {ESS_PER_CHAIN} per chain (min {v:.0f} < "
            f"{threshold}) for {name_list(low)}: posterior means and medians are unreliable. "
            "Run more draws, or reparameterize if the chains mix this slowly.",
            tuple(low),
        )]
    return [Finding(
        FindingCode.ESS_TAIL, "error",
        f"Tail effective sample size is below {ESS_PER_CHAIN} per chain (min {v:.0f} < "
        f"{threshold}) for {name_list(low)}: posterior variances and tail quantiles (the "
        "5% and 95% quantiles, and so the intervals) are unreliable. Run more draws, or "
        "reparameterize.",
        tuple(low),
    )]


def check_bfmi(bfmi: tuple[float, ...]) -> list[Finding]:
    """E-BFMI below :data:`BFMI_MIN` in any chain."""
    low_bfmi = [i for i, b in enumerate(bfmi) if b < BFMI_MIN]
    if not low_bfmi:
        return []
    vals = ", ".join(f"chain {i}: {bfmi[i]:.2f}" for i in low_bfmi)
    return [Finding(
        FindingCode.BFMI, "error",
        f"E-BFMI is below {BFMI_MIN} ({vals}), which suggests that HMC may have trouble "
        "exploring the tails of the target distribution (often the neck of a funnel); "
        "the draws may miss part of the posterior. Reparameterize the model.",
    )]


def check_treedepth(sat: tuple[float, ...]) -> list[Finding]:
    """Transitions at the maximum tree depth (an efficiency warning)."""
    sat_chains = [i for i, s in enumerate(sat) if s > 0]
    if not sat_chains:
        return []
    detail = ", ".join(f"chain {i}: {100 * sat[i]:.1f}%" for i in sat_chains)
    return [Finding(
        FindingCode.TREEDEPTH, "warning",
        f"Transitions hit the maximum tree depth ({detail}). Trajectories that are cut "
        "short explore slowly: an efficiency problem, not a validity one. Standardize "
        "predictors, or increase max_treedepth.",
    )]


def check_acceptance(acc_chain: tuple[float, ...], target_accept: float | None) -> list[Finding]:
    """Mean acceptance of a chain off ``target_accept`` by more than :data:`ACCEPT_TOLERANCE`."""
    if target_accept is None or not acc_chain:
        return []
    off = [i for i, x in enumerate(acc_chain) if abs(x - target_accept) > ACCEPT_TOLERANCE]
    if not off:
        return []
    detail = ", ".join(f"chain {i}: {acc_chain[i]:.2f}" for i in off)
    return [Finding(
        FindingCode.ACCEPTANCE, "warning",
        f"The acceptance probability does not match the target: it is {detail}, but "
        f"should be close to target_accept {target_accept:g}. The step size did not "
        "adapt well; try to increase the number of tuning steps.",
    )]



def _ordered(
    names: list[str], values: np.ndarray, mask: np.ndarray, descending: bool = False
) -> list[str]:
    idx = np.flatnonzero(mask)
    order = np.argsort(values[idx], kind="stable")
    if descending:
        order = order[::-1]
    return [names[i] for i in idx[order]]



def _fmt_rhat(v: float) -> str:
    return "inf" if np.isinf(v) else f"{v:.3f}"
