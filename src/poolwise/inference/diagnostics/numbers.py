"""The numbers the sampler checks read, from the posterior and the sample statistics: every
parameter's R-hat and bulk / tail ESS (:class:`Convergence`, arviz-stats' algorithms batched
by :mod:`poolwise.inference.convergence`), the divergent transitions, E-BFMI, tree-depth
saturation and acceptance per chain.

Undefined numbers are NaN, never "large": constant or non-finite draws have no R-hat or ESS
(arviz gives ESS = N for constant draws), chains stuck each at its own value have R-hat inf.
The posterior is read a block of components at a time (no stacked copy of all draws).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import xarray as xr

__all__ = [
    "TAIL_PROB",
    "Convergence",
    "acceptance_per_chain",
    "bfmi_per_chain",
    "convergence_numbers",
    "divergent_draws",
    "stack_draws",
    "treedepth_saturation",
]

TAIL_PROB = (0.05, 0.95)  # tail ESS at the 5% and 95% quantiles (Vehtari et al. 2021)


def _named_blocks(post: xr.Dataset):
    """:func:`poolwise.inference.convergence.component_blocks` with the components' names (like
    ``a_district[3]``) and whether they are group-level (a dimension besides chain and draw):
    yields ``(names, group_level, block)``."""
    from poolwise.inference.convergence import component_blocks

    for name, v, extra, start, blk in component_blocks(post):
        if start == 0:
            if not extra:
                labels: Any = [name]
            elif len(extra) == 1:
                labels = [f"{name}[{lab}]" for lab in v[extra[0]].values]
            else:
                labels = [f"{name}[{i}]" for i in range(v.size // (v.sizes["chain"]
                                                                  * v.sizes["draw"]))]
        yield labels[start:start + blk.shape[0]], bool(extra), blk


def stack_draws(post: xr.Dataset) -> tuple[list[str], np.ndarray, np.ndarray]:
    """All scalar components of all variables as one (n, chain, draw) array, with names like
    ``a_district[3]``, and a flag per component: True for group-level components (variables
    with a dimension besides chain and draw)."""
    names: list[str] = []
    group_level: list[bool] = []
    blocks: list[np.ndarray] = []
    for labels, grp, blk in _named_blocks(post):
        names.extend(labels)
        group_level.extend([grp] * len(labels))
        blocks.append(blk)
    if not blocks:
        return [], np.zeros((0, 1, 1)), np.zeros(0, dtype=bool)
    return names, np.concatenate(blocks, axis=0), np.array(group_level, dtype=bool)



def divergent_draws(stats: xr.Dataset, chains: int, draws: int) -> np.ndarray:
    """Which transitions after tuning diverged, shape (chain, draw)."""
    if "diverging" in stats:
        return stats["diverging"].transpose("chain", "draw").values.astype(bool)
    return np.zeros((chains, draws), dtype=bool)


@dataclass(frozen=True, eq=False)
class Convergence:
    """Per parameter (flattened, in :func:`stack_draws` order): R-hat, bulk and tail ESS
    (NaN where undefined: constant or non-finite draws; R-hat inf for chains stuck each at
    its own value), and which draws are finite, constant or stuck."""

    names: list[str]
    group_level: np.ndarray
    finite: np.ndarray
    constant: np.ndarray
    stuck: np.ndarray
    rhat: np.ndarray
    ess_bulk: np.ndarray
    ess_tail: np.ndarray

    @property
    def max_rhat(self) -> float:
        defined = np.isfinite(self.rhat) | np.isinf(self.rhat)
        return float(np.max(self.rhat[defined])) if defined.any() else math.nan

    def min_ess(self, kind: Literal["bulk", "tail"]) -> float:
        """The smallest ESS; NaN when any parameter has non-finite draws or none is defined."""
        ess = self.ess_bulk if kind == "bulk" else self.ess_tail
        defined = np.isfinite(ess)
        if bool((~self.finite).any()) or not defined.any():
            return math.nan
        return float(np.min(ess[defined]))


def convergence_numbers(post: xr.Dataset, *, group_numbers: bool = True) -> Convergence:
    """R-hat and ESS of every parameter of ``post`` (arviz-stats' algorithms, batched:
    :mod:`poolwise.inference.convergence`), with undefined numbers as NaN, never "large": arviz
    gives ESS = N for constant draws. Computed a block of components at a time (no stacked copy
    of all draws).

    ``group_numbers=False``: no R-hat or ESS for the group-level components (NaN; whether their
    draws are finite or constant is still found): the draws of ``method="approx"``, exact
    independent draws given the population-level ones, have no chains to mix
    (:func:`poolwise.inference.convergence.clustered_mcse` gives their MCSE)."""
    names: list[str] = []
    group_level: list[bool] = []
    cols: list[list[np.ndarray]] = [[] for _ in range(6)]
    for labels, grp, blk in _named_blocks(post):
        names.extend(labels)
        group_level.extend([grp] * len(labels))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            numbers = (_convergence_numbers(blk) if group_numbers or not grp
                       else (np.full(len(blk), np.nan),) * 3)
            # per chain extremes: NaN propagates (not finite), and from them whether a
            # parameter is constant, or every chain constant at different values (stuck)
            hi, lo = blk.max(axis=2), blk.min(axis=2)
        finite = np.isfinite(hi).all(axis=1) & np.isfinite(lo).all(axis=1)
        constant = finite & (hi.max(axis=1) == lo.min(axis=1))
        stuck = finite & ~constant & ((hi - lo).max(axis=1) == 0.0)
        for col, val in zip(cols, (*numbers, finite, constant, stuck), strict=True):
            col.append(val)
    if not names:
        z, f = np.zeros(0), np.zeros(0, dtype=bool)
        return Convergence([], np.zeros(0, dtype=bool), f, f, f, z, z, z)
    rhat, ess_b, ess_t, finite, constant, stuck = (np.concatenate(c) for c in cols)
    ess_b = np.where(constant | ~finite, np.nan, ess_b)
    ess_t = np.where(constant | ~finite, np.nan, ess_t)
    rhat = np.where(constant | ~finite, np.nan, rhat)
    rhat = np.where(stuck, np.inf, rhat)
    return Convergence(names, np.array(group_level, dtype=bool), finite, constant, stuck, rhat,
                       ess_b, ess_t)


def bfmi_per_chain(stats: xr.Dataset) -> tuple[float, ...]:
    """E-BFMI of each chain (arviz-stats); empty without the energy."""
    if "energy" not in stats:
        return ()
    return tuple(float(b) for b in _bfmi(stats["energy"].transpose("chain", "draw").values))


def treedepth_saturation(stats: xr.Dataset) -> tuple[float, ...]:
    """Share of each chain's transitions that hit the maximum tree depth."""
    if "reached_max_treedepth" not in stats:
        return ()
    return tuple(float(s) for s in stats["reached_max_treedepth"].transpose("chain", "draw")
                 .values.astype(float).mean(axis=1))


def acceptance_per_chain(stats: xr.Dataset) -> tuple[tuple[float, ...], float]:
    """Mean acceptance probability of each chain, and over all chains (NaN without it)."""
    if "acceptance_rate" not in stats:
        return (), math.nan
    a = stats["acceptance_rate"].transpose("chain", "draw").values.astype(float)
    return tuple(float(x) for x in np.nanmean(a, axis=1)), float(np.nanmean(a))


def _convergence_numbers(stacked: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # ArviZ's algorithms, batched over parameters (poolwise.inference.convergence: equal to
    # arviz-stats to 1e-10, and 10k group levels take seconds instead of a minute)
    from poolwise.inference.convergence import diagnostics

    if stacked.size == 0:
        z = np.zeros(0)
        return z, z, z
    return diagnostics(stacked, TAIL_PROB)


def _bfmi(energy: np.ndarray) -> np.ndarray:
    from poolwise.inference.convergence import bfmi

    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.atleast_1d(bfmi(energy))

