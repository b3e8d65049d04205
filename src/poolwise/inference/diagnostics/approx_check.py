"""The self-check of an approximate fit (``method="approx"``, :mod:`poolwise.inference.approx`)
as findings: its numbers are saved with the fit (the root attribute ``poolwise_approx``), so
:func:`poolwise.inference.diagnostics.diagnose` judges a loaded fit the same way.

(a) quadrature refinement: the log posterior density of the fixed effects and group SD at its
mode moves by less than ``QUADRATURE_TOL`` with more Gauss-Hermite nodes per group; the grid
of the group effects' draws leaves out no mass (its ends ``EDGE_LOG_DENSITY`` below the mode
or lower); (b) the Pareto k of the importance weights is below ``PARETO_K_MAX``; (c) the
importance sampling's effective sample size is at least ``MIN_IS_ESS`` and
``MIN_IS_ESS_FRACTION`` of the proposals. Each failure is an error: the fit is not ok, and the
message says why and names the command that runs NUTS.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

from poolwise.inference.diagnostics.findings import Finding, FindingCode

__all__ = [
    "APPROX_ATTR",
    "EDGE_LOG_DENSITY",
    "MIN_IS_ESS",
    "MIN_IS_ESS_FRACTION",
    "PARETO_K_MAX",
    "QUADRATURE_TOL",
    "check_approx",
    "nuts_command",
]

#: the root attribute of an approximate fit's DataTree that holds the check's numbers (JSON)
APPROX_ATTR = "poolwise_approx"
#: the refinement may move the log density at the mode by at most this much
QUADRATURE_TOL = 0.01
#: the importance weights' Pareto k must stay below this (PSIS: above it, unreliable)
PARETO_K_MAX = 0.7
#: the importance sampling's effective sample size: at least this many, and this fraction
MIN_IS_ESS = 200
MIN_IS_ESS_FRACTION = 0.1
#: the group effects' grid: its ends must lie this far below the mode in log density
EDGE_LOG_DENSITY = -12.0


def nuts_command() -> str:
    """How to fit with NUTS instead, in the API and on the command line."""
    return "method='nuts' (on the command line: --method nuts)"


def check_approx(numbers: Mapping[str, Any]) -> list[Finding]:
    """The self-check's failures as error findings (none when it passes), from its numbers
    (:class:`poolwise.inference.approx.ApproxCheck`, as saved with the fit)."""
    check = SimpleNamespace(**numbers)
    why = []
    if not check.refinement_change < QUADRATURE_TOL:
        why.append((FindingCode.APPROX_QUADRATURE,
                    f"the quadrature over each group's effect is not accurate enough: with "
                    f"{check.refined_nodes} nodes per group instead of {check.nodes} the log "
                    f"posterior density at the mode moves by {check.refinement_change:.3g} "
                    f"(at most {QUADRATURE_TOL} is accepted)"))
    if not check.pareto_k < PARETO_K_MAX:
        why.append((FindingCode.APPROX_PARETO_K,
                    f"the approximation of the fixed effects and group SD does not match "
                    f"their exact posterior: the Pareto k of the importance weights is "
                    f"{check.pareto_k:.2f} (below {PARETO_K_MAX} is needed)"))
    need = max(MIN_IS_ESS, MIN_IS_ESS_FRACTION * check.proposals)
    if not check.is_ess >= need:
        why.append((FindingCode.APPROX_ESS,
                    f"the importance sampling's effective sample size is {check.is_ess:.0f} of "
                    f"{check.proposals} proposals (at least {need:.0f} is needed)"))
    if not check.edge_log_density <= EDGE_LOG_DENSITY:
        why.append((FindingCode.APPROX_QUADRATURE,
                    f"a group effect's conditional posterior reaches beyond its grid (log "
                    f"density {check.edge_log_density:.1f} at the grid's end, at most "
                    f"{EDGE_LOG_DENSITY} is accepted)"))
    return [Finding(code, "error", f"method='approx': {text}; do not trust these draws, "
                         f"fit with {nuts_command()}") for code, text in why]
