"""The self-check of an approximate fit (``method="approx"``, :mod:`poolwise.inference.approx`)
as findings: its numbers are saved with the fit (the root attribute ``poolwise_approx``), so
:func:`poolwise.inference.diagnostics.diagnose` judges a loaded fit the same way.

(a) quadrature refinement: the log posterior density of the fixed effects and group SD at its
mode moves by less than ``QUADRATURE_TOL`` with more Gauss-Hermite nodes per group, and every
group effect was drawn (its rejection sampler never ran out of proposals); (b) the Pareto k
of the importance weights is below ``PARETO_K_MAX``; (c) the
importance sampling's effective sample size is at least ``MIN_IS_ESS`` and
``MIN_IS_ESS_FRACTION`` of the proposals. Each failure is an error: the fit is not ok, and the
message says why and names the command that runs NUTS.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import SimpleNamespace
from typing import Any

from poolwise.inference.diagnostics.findings import Finding, FindingCode

__all__ = [
    "APPROX_ATTR",
    "approx_rows",
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


def nuts_command() -> str:
    """How to fit with NUTS instead, in the API and on the command line."""
    return "method='nuts' (on the command line: --method nuts)"


def _message(text: str) -> str:
    return f"method='approx': {text}; do not trust these draws, fit with {nuts_command()}"


def check_approx(numbers: Mapping[str, Any]) -> list[Finding]:
    """The self-check's failures as error findings (none when it passes), from its numbers
    (:class:`poolwise.inference.approx.ApproxCheck`, as saved with the fit)."""
    c = SimpleNamespace(**numbers)
    out = []
    if not c.refinement_change < QUADRATURE_TOL:
        out.append(Finding(FindingCode.APPROX_QUADRATURE, "error", _message(
            f"the quadrature over each group's effect is not accurate enough: with "
            f"{c.refined_nodes} nodes per group instead of {c.nodes} the log posterior density "
            f"at the mode moves by {c.refinement_change:.3g} (at most {QUADRATURE_TOL} is "
            "accepted)")))
    if c.failed_group_draws:
        out.append(Finding(FindingCode.APPROX_QUADRATURE, "error", _message(
            f"{c.failed_group_draws} group effects could not be drawn from their conditional "
            "posterior (its sampler ran out of proposals: the density is not the log-concave "
            "one it assumes)")))
    if not c.pareto_k < PARETO_K_MAX:
        out.append(Finding(FindingCode.APPROX_PARETO_K, "error", _message(
            f"the approximation of the fixed effects and group SD does not match their exact "
            f"posterior: the Pareto k of the importance weights is {c.pareto_k:.2f} (below "
            f"{PARETO_K_MAX} is needed)")))
    need = max(MIN_IS_ESS, MIN_IS_ESS_FRACTION * c.proposals)
    if not c.is_ess >= need:
        out.append(Finding(FindingCode.APPROX_ESS, "error", _message(
            f"the importance sampling's effective sample size is {c.is_ess:.0f} of "
            f"{c.proposals} proposals (at least {need:.0f} is needed)")))
    return out


def approx_rows(numbers: Mapping[str, Any],
                findings: Sequence[Finding]) -> tuple[tuple[str, str, str, str], ...]:
    """The self-check as the diagnostics table's ``(check, state, value, needed)`` rows, in
    place of the sampler's checks (divergences, E-BFMI, tree depth), which an approximate fit
    does not have. ``state`` comes from ``findings``, as for every other row."""
    c = SimpleNamespace(**numbers)

    def state(code: FindingCode) -> str:
        return "fail" if any(f.code == code and f.severity == "error" for f in findings) \
            else "pass"

    need = max(MIN_IS_ESS, MIN_IS_ESS_FRACTION * c.proposals)
    return (
        ("quadrature refinement", state(FindingCode.APPROX_QUADRATURE),
         f"{c.refinement_change:.2g}",
         f"< {QUADRATURE_TOL:g} ({c.nodes} -> {c.refined_nodes} nodes per group)"),
        ("group effects drawn", state(FindingCode.APPROX_QUADRATURE),
         "all" if not c.failed_group_draws else f"{c.failed_group_draws} failed", "all"),
        ("importance weights' Pareto k", state(FindingCode.APPROX_PARETO_K),
         f"{c.pareto_k:.2f}", f"< {PARETO_K_MAX:g}"),
        ("importance sampling ESS", state(FindingCode.APPROX_ESS),
         f"{c.is_ess:.0f} of {c.proposals}", f">= {need:.0f}"),
    )
