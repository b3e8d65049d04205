"""The codes of the diagnosis' findings: one :class:`FindingCode` member per kind of finding.

A ``str`` enum (:class:`enum.StrEnum`): a member equals, hashes and formats as its value, so
``result.json`` and saved fits keep the plain strings they always held (``"rhat"``,
``"funnel"``, ...) and a :class:`~poolwise.inference.diagnostics.Finding` read back from disk
holds the member again. The values are part of those files: never change one.

Who creates which: :mod:`poolwise.inference.diagnostics` (the sampler checks, funnels, data
structure and prior sensitivity); who reads them: the repair loop, the displays, the report.

Why a module of its own, outside the ``diagnostics`` package: the displays
(:mod:`poolwise.inference.display`) read the codes, and the Diagnosis imports the displays
when it is shown; importing any module of the package runs the package's ``__init__`` (which
imports the Diagnosis), so the codes sit beside it, in a module that imports nothing.
"""

from __future__ import annotations

import enum

__all__ = ["FindingCode"]


class FindingCode(enum.StrEnum):
    """What a :class:`~poolwise.inference.diagnostics.Finding` is about."""

    #: divergent transitions after tuning (error)
    DIVERGENCES = "divergences"
    #: NaN or infinite draws (error)
    NONFINITE = "nonfinite"
    #: constant draws: R-hat undefined, never "not mixed" (error)
    RHAT_UNDEFINED = "rhat_undefined"
    #: one chain: R-hat cannot be computed (error)
    RHAT_SINGLE_CHAIN = "rhat_single_chain"
    #: R-hat above 1.01 (error; a warning for a few group-level parameters)
    RHAT = "rhat"
    #: bulk effective sample size below 100 per chain (error)
    ESS_BULK = "ess_bulk"
    #: tail effective sample size below 100 per chain (error)
    ESS_TAIL = "ess_tail"
    #: E-BFMI below 0.3 in a chain (error)
    BFMI = "bfmi"
    #: transitions at the maximum tree depth (warning)
    TREEDEPTH = "treedepth"
    #: mean acceptance off target_accept (warning)
    ACCEPTANCE = "acceptance"
    #: divergences concentrated at small or large values of a group SD (warning)
    FUNNEL = "funnel"
    #: divergences that no group SD explains (info)
    FUNNEL_UNLOCALISED = "funnel_unlocalised"
    #: a grouping factor with fewer than 5 levels (warning)
    FEW_LEVELS = "few_levels"
    #: levels whose outcomes are all 0 or all 1 (info)
    EXTREME_LEVELS = "extreme_levels"
    #: posterior dominated by its prior: prior-sensitive, likelihood-insensitive (warning)
    PRIOR_DOMINATED = "prior_dominated"
    #: posterior sensitive to its prior (warning)
    PRIOR_SENSITIVE = "prior_sensitive"
    #: rows of several trials spread more than the binomial allows (warning)
    OVERDISPERSION = "overdispersion"
    #: method='approx': its quadrature (over each group's effect, or the grid of its draws)
    #: failed its refinement check (error)
    APPROX_QUADRATURE = "approx_quadrature"
    #: method='approx': the importance weights' Pareto k too high (error)
    APPROX_PARETO_K = "approx_pareto_k"
    #: method='approx': the importance sampling's effective sample size too small (error)
    APPROX_ESS = "approx_ess"
    #: method='approx' with check_against_nuts: its posterior differs from a short NUTS run's
    #: (error), or that NUTS run is not healthy enough to judge it (warning)
    APPROX_VS_NUTS = "approx_vs_nuts"
