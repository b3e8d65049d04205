"""Diagnosis of a fit: divergences, R-hat, ESS, E-BFMI, tree depth (numbers from arviz-stats)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import xarray as xr

__all__ = ["Diagnosis", "Finding", "diagnose", "RHAT_MAX", "ESS_PER_CHAIN", "BFMI_MIN"]

RHAT_MAX = 1.01
ESS_PER_CHAIN = 100
BFMI_MIN = 0.3
TAIL_PROB = (0.05, 0.95)  # tail ESS at the 5% and 95% quantiles (Vehtari et al. 2021)

Severity = Literal["error", "warning", "info"]


@dataclass(frozen=True)
class Finding:
    """One diagnostic result: what, how bad, which parameters, and what to do."""

    code: str
    severity: Severity
    message: str
    parameters: tuple[str, ...] = ()


@dataclass(frozen=True)
class Diagnosis:
    chains: int
    draws: int
    divergences: int
    divergences_per_chain: tuple[int, ...]
    max_rhat: float
    min_ess_bulk: float
    min_ess_tail: float
    bfmi: tuple[float, ...]
    treedepth_saturation: tuple[float, ...]  # fraction of draws per chain at max depth
    mean_accept: float
    target_accept: float | None
    findings: tuple[Finding, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        """True only when nothing of severity 'error' was found."""
        return not any(f.severity == "error" for f in self.findings)

    def to_dict(self) -> dict:
        return {
            "divergences": self.divergences,
            "divergences_per_chain": list(self.divergences_per_chain),
            "max_rhat": _num(self.max_rhat),
            "min_ess_bulk": _num(self.min_ess_bulk),
            "min_ess_tail": _num(self.min_ess_tail),
            "bfmi": [_num(b) for b in self.bfmi],
            "treedepth_saturation": [_num(s) for s in self.treedepth_saturation],
            "mean_accept": _num(self.mean_accept),
            "ok": self.ok,
            "findings": [
                {"code": f.code, "severity": f.severity, "message": f.message,
                 "parameters": list(f.parameters)}
                for f in self.findings
            ],
        }


def _num(v: float) -> float | None:
    return None if v is None or not np.isfinite(v) else round(float(v), 6)


def stack_draws(post: xr.Dataset) -> tuple[list[str], np.ndarray]:
    """All scalar components of all variables as one (n, chain, draw) array, with names
    like ``a_district[3]``."""
    names: list[str] = []
    blocks: list[np.ndarray] = []
    for name, v in post.data_vars.items():
        extra = [d for d in v.dims if d not in ("chain", "draw")]
        arr = v.transpose("chain", "draw", *extra).values
        arr = arr.reshape(arr.shape[0], arr.shape[1], -1)
        blocks.append(np.moveaxis(arr, -1, 0))
        if extra:
            labels = v[extra[0]].values if len(extra) == 1 else range(arr.shape[-1])
            names.extend(f"{name}[{lab}]" for lab in labels)
        else:
            names.append(str(name))
    return names, np.concatenate(blocks, axis=0).astype(float)


def _worst(names: list[str], values: np.ndarray, mask: np.ndarray, descending: bool = False) -> list[str]:
    idx = np.flatnonzero(mask)
    order = np.argsort(values[idx])
    if descending:
        order = order[::-1]
    return [names[i] for i in idx[order]]


def diagnose(tree: xr.DataTree, *, target_accept: float | None = None) -> Diagnosis:
    """Run the standard checks on a DataTree with ``posterior`` and ``sample_stats``."""
    import arviz_stats as azs
    from arviz_stats.base import array_stats

    post = tree["posterior"].to_dataset()
    stats = tree["sample_stats"].to_dataset()
    chains, draws = post.sizes["chain"], post.sizes["draw"]
    div = stats["diverging"].values.astype(bool)
    per_chain = tuple(int(c) for c in div.sum(axis=1))
    names, stacked = stack_draws(post)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        rhat = array_stats.rhat(stacked, chain_axis=-2, draw_axis=-1)
        ess_b = array_stats.ess(stacked, chain_axis=-2, draw_axis=-1, method="bulk")
        ess_t = array_stats.ess(
            stacked, chain_axis=-2, draw_axis=-1, method="tail", prob=TAIL_PROB
        )
        bfmi = tuple(float(b) for b in azs.bfmi(tree)["energy"].values) if "energy" in stats else ()
    max_rhat = float(np.nanmax(rhat)) if np.isfinite(rhat).any() else np.nan
    bad_rhat = _worst(names, rhat, rhat > RHAT_MAX, descending=True)
    min_eb = float(np.nanmin(ess_b)) if np.isfinite(ess_b).any() else np.nan
    min_et = float(np.nanmin(ess_t)) if np.isfinite(ess_t).any() else np.nan
    sat = (
        tuple(float(s) for s in stats["reached_max_treedepth"].values.mean(axis=1))
        if "reached_max_treedepth" in stats
        else ()
    )
    acc = float(stats["acceptance_rate"].values.mean()) if "acceptance_rate" in stats else np.nan

    findings: list[Finding] = []
    n_div = int(div.sum())
    if n_div:
        pct = 100.0 * n_div / (chains * draws)
        detail = ", ".join(f"chain {i}: {c}" for i, c in enumerate(per_chain) if c)
        findings.append(Finding(
            "divergences", "error",
            f"There were {n_div} divergent transitions after tuning ({pct:.1f}% of draws; {detail}). "
            "The sampler could not explore part of the posterior, so estimates may be biased. "
            "Reparameterize the group term (non-centered), or raise target_accept.",
        ))
    threshold = ESS_PER_CHAIN * chains
    if bad_rhat:
        findings.append(Finding(
            "rhat", "error",
            f"The largest R-hat is {max_rhat:.3f} (> {RHAT_MAX}), indicating chains have not mixed "
            f"({', '.join(bad_rhat[:5])}). Run longer or reparameterize.",
            tuple(bad_rhat),
        ))
    low_b = _worst(names, ess_b, ess_b < threshold)
    if low_b:
        findings.append(Finding(
            "ess_bulk", "error",
            f"Bulk effective sample size is too low (min {min_eb:.0f} < {threshold}), indicating "
            f"posterior means and medians may be unreliable ({', '.join(low_b[:5])}).",
            tuple(low_b),
        ))
    low_t = _worst(names, ess_t, ess_t < threshold)
    if low_t:
        findings.append(Finding(
            "ess_tail", "error",
            f"Tail effective sample size is too low (min {min_et:.0f} < {threshold}), indicating "
            f"posterior variances and tail quantiles may be unreliable ({', '.join(low_t[:5])}).",
            tuple(low_t),
        ))
    low_bfmi = [i for i, b in enumerate(bfmi) if b < BFMI_MIN]
    if low_bfmi:
        findings.append(Finding(
            "bfmi", "error",
            f"E-BFMI is below {BFMI_MIN} in chain(s) {', '.join(map(str, low_bfmi))} "
            f"(min {min(bfmi):.2f}): the sampler may have trouble exploring the tails. "
            "Reparameterize the model.",
        ))
    sat_chains = [i for i, s in enumerate(sat) if s > 0]
    if sat_chains:
        findings.append(Finding(
            "treedepth", "warning",
            f"{100 * max(sat):.1f}% of transitions hit the maximum tree depth in chain(s) "
            f"{', '.join(map(str, sat_chains))}: an efficiency problem, not a validity one. "
            "Standardize predictors or increase max_treedepth.",
        ))
    return Diagnosis(
        chains=chains, draws=draws, divergences=n_div, divergences_per_chain=per_chain,
        max_rhat=max_rhat, min_ess_bulk=min_eb, min_ess_tail=min_et, bfmi=bfmi,
        treedepth_saturation=sat, mean_accept=acc, target_accept=target_accept,
        findings=tuple(findings),
    )
