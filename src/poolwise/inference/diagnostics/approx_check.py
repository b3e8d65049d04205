"""The self-check of an approximate fit (``method="approx"``, :mod:`poolwise.inference.approx`)
as findings: its numbers are saved with the fit (the root attribute ``poolwise_approx``), so
:func:`poolwise.inference.diagnostics.diagnose` judges a loaded fit the same way.

(a) quadrature refinement: the log posterior density of the fixed effects and group SD at its
mode moves by less than ``QUADRATURE_TOL`` with more Gauss-Hermite nodes per group, and every
group effect was drawn (its rejection sampler never ran out of proposals); (b) the Pareto k
of the importance weights is below ``PARETO_K_MAX``; (c) the
importance sampling's effective sample size is at least ``MIN_IS_ESS`` and
``MIN_IS_ESS_FRACTION`` of the proposals. Each failure is an error: the fit is not ok, and the
message says why and names the command that runs NUTS. A part that does not apply does not run
(:func:`applies`): (a) without group effects (complete pooling), (b) and (c) without a fixed
effect or SD to weight (no pooling of a model with only the group intercepts); its rows say
"not applicable" (state ``"info"``), never "pass".

With ``check_against_nuts`` (``--check``) the fit also holds a :class:`NutsCheck`, the
comparison with a short NUTS run of the same model (saved under the key ``against_nuts`` of
the same attribute): each scalar parameter's ``|mean_approx - mean_nuts| / sd_nuts``. Beyond
``NUTS_POPULATION_MAX`` for a population-level parameter (fixed effects, group SD) or
``NUTS_GROUP_P95_MAX`` for the 95th percentile over the group effects, an error; a NUTS run
with divergences or an R-hat of ``NUTS_RHAT_MAX`` or more makes the comparison
inconclusive, which a warning says.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from types import SimpleNamespace
from typing import Any

from poolwise.inference.diagnostics.findings import Finding, FindingCode, check_state

__all__ = [
    "APPROX_ATTR",
    "applies",
    "approx_rows",
    "checked_names",
    "MIN_IS_ESS",
    "MIN_IS_ESS_FRACTION",
    "NUTS_GROUP_P95_MAX",
    "NUTS_POPULATION_MAX",
    "NUTS_RHAT_MAX",
    "PARETO_K_MAX",
    "QUADRATURE_TOL",
    "NutsCheck",
    "check_approx",
    "check_nuts",
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
#: the check against NUTS (the accuracy bar of method='approx'): the largest difference of a
#: population-level mean, and the 95th percentile over the group effects, in NUTS sds
NUTS_POPULATION_MAX = 0.15
NUTS_GROUP_P95_MAX = 0.25
#: the short NUTS run is healthy with no divergence and every R-hat below this: looser than a
#: fit's RHAT_MAX, since with 500 draws per chain a largest R-hat of 1.01-1.02 over dozens of
#: group effects is noise, while chains that disagree (a stuck or unadapted chain) lie above
NUTS_RHAT_MAX = 1.05


@dataclass(frozen=True)
class NutsCheck:
    """The comparison of an approximate fit with a short NUTS run of the same model: per
    scalar parameter ``|mean_approx - mean_nuts| / sd_nuts``, the largest over the
    population-level parameters (fixed effects, group SD) and over the group effects (with
    the 95th percentile over groups), where they occur, the ratio of posterior sds (approx /
    NUTS) over the population-level parameters, and the NUTS run's own health."""

    chains: int
    tune: int
    draws: int
    seed: int
    population_max: float
    population_name: str
    group_max: float
    group_name: str
    group_p95: float
    sd_ratio_min: float
    sd_ratio_max: float
    divergences: int
    max_rhat: float
    seconds: float = 0.0
    #: per compared parameter (population-level first, then each group effect): its name,
    #: whether it is a group effect, its posterior mean under approx and under NUTS, and its
    #: NUTS posterior sd (what the report's figure draws); None in folders saved before them
    points: Mapping[str, list[Any]] | None = None

    @property
    def healthy(self) -> bool:
        """The NUTS run has no divergence and every R-hat below ``NUTS_RHAT_MAX``."""
        return self.divergences == 0 and self.max_rhat < NUTS_RHAT_MAX

    @property
    def passed(self) -> bool:
        """Both differences within the accuracy bar."""
        return (self.population_max <= NUTS_POPULATION_MAX
                and self.group_p95 <= NUTS_GROUP_P95_MAX)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> NutsCheck:
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})

    def lines(self) -> list[str]:
        """The comparison in one line, and the NUTS run's health in a second."""
        health = f"NUTS run: {self.divergences} divergences, max R-hat {self.max_rhat:.3f}"
        health += (" (healthy)" if self.healthy else
                   f" - not healthy (a divergence, or an R-hat of {NUTS_RHAT_MAX} or more): "
                   "the comparison means little")
        population = (f"largest difference {self.population_max:.2f} NUTS sd "
                      f"({self.population_name}); " if self.population_name else
                      "no population-level parameter; ")
        groups = (f"group effects: max {self.group_max:.2f} ({self.group_name}), 95th pct "
                  f"{self.group_p95:.2f}" if self.group_name else "no group effects")
        ratio = (f"; sd ratio {self.sd_ratio_min:.2f}-{self.sd_ratio_max:.2f}"
                 if self.population_name else "")
        return [f"check against NUTS ({self.chains} x {self.draws}): {population}{groups}"
                f"{ratio}", health]


def nuts_command() -> str:
    """How to fit with NUTS instead, in the API and on the command line."""
    return "method='nuts' (on the command line: --method nuts)"


def _message(text: str) -> str:
    return f"method='approx': {text}; do not trust these draws, fit with {nuts_command()}"


def applies(numbers: Mapping[str, Any]) -> tuple[bool, bool]:
    """Which parts of the self-check ran: ``(quadrature, importance)``. The quadrature
    refinement and the group draws only where the model has group integrals (not under
    complete pooling); the Pareto k and the importance ESS only where theta has a dimension
    (not under no pooling without fixed effects, whose draws are all exact). A fit saved
    before these flags ran both."""
    return bool(numbers.get("quadrature", True)), bool(numbers.get("importance", True))


def checked_names(numbers: Mapping[str, Any]) -> list[str]:
    """The checks that ran, in words, for a status line: ``["quadrature", "Pareto k",
    "ESS"]`` with every part, and ``"NUTS"`` after them with the check against NUTS."""
    quadrature, importance = applies(numbers)
    return ([*(["quadrature"] if quadrature else []),
             *(["Pareto k", "ESS"] if importance else []),
             *(["NUTS"] if numbers.get("against_nuts") else [])])


def importance_text(numbers: Mapping[str, Any]) -> str | None:
    """The importance ESS of an approximate fit's population level, for a status line
    ("importance ESS 3,512 of 4,000 proposals"): how many independent draws its resampled
    draws are worth (their chain-based R-hat and ESS take the repeats for fresh draws); None
    when nothing was importance-sampled."""
    if not applies(numbers)[1] or numbers.get("is_ess") is None:
        return None
    return (f"importance ESS {float(numbers['is_ess']):,.0f} of "
            f"{int(numbers.get('proposals', 0)):,} proposals")


def _per_group(numbers: Mapping[str, Any]) -> str:
    """What a node count counts: nodes per group, or with several varying coefficients per
    dimension of each group's tensor grid (a fit saved before slopes had one)."""
    k = int(numbers.get("coefficients", 1))
    return "nodes per group" if k == 1 else f"nodes per dimension of each group's {k}-d grid"


def check_approx(numbers: Mapping[str, Any]) -> list[Finding]:
    """The self-check's failures as error findings (none when it passes), from its numbers
    (:class:`poolwise.inference.approx.ApproxCheck`, as saved with the fit)."""
    c = SimpleNamespace(**numbers)
    out = []
    quadrature, importance = applies(numbers)
    if quadrature and not c.refinement_change < QUADRATURE_TOL:
        out.append(Finding(FindingCode.APPROX_QUADRATURE, "error", _message(
            f"the quadrature over each group's effect is not accurate enough: with "
            f"{c.refined_nodes} {_per_group(numbers)} instead of {c.nodes} the log posterior "
            f"density at the mode moves by {c.refinement_change:.3g} (at most {QUADRATURE_TOL} is "
            "accepted)")))
    if quadrature and c.failed_group_draws:
        out.append(Finding(FindingCode.APPROX_QUADRATURE, "error", _message(
            f"{c.failed_group_draws} group effects could not be drawn from their conditional "
            "posterior (its sampler ran out of proposals: the density is not the log-concave "
            "one it assumes)")))
    if importance and not c.pareto_k < PARETO_K_MAX:
        out.append(Finding(FindingCode.APPROX_PARETO_K, "error", _message(
            f"the approximation of the fixed effects and group SD does not match their exact "
            f"posterior: the Pareto k of the importance weights is {c.pareto_k:.2f} (below "
            f"{PARETO_K_MAX} is needed)")))
    need = max(MIN_IS_ESS, MIN_IS_ESS_FRACTION * c.proposals)
    if importance and not c.is_ess >= need:
        out.append(Finding(FindingCode.APPROX_ESS, "error", _message(
            f"the importance sampling's effective sample size is {c.is_ess:.0f} of "
            f"{c.proposals} proposals (at least {need:.0f} is needed)")))
    if numbers.get("against_nuts"):
        out.extend(check_nuts(NutsCheck.from_dict(numbers["against_nuts"])))
    return out


def check_nuts(c: NutsCheck) -> list[Finding]:
    """The check against NUTS as findings: an error beyond the accuracy bar, a warning when the
    NUTS run is not healthy enough to judge by (none when both pass)."""
    out = []
    health = (f"the short NUTS run had {c.divergences} divergences and a max R-hat of "
              f"{c.max_rhat:.3f}")
    if not c.passed:
        out.append(Finding(FindingCode.APPROX_VS_NUTS, "error", _message(
            f"its posterior differs from a short NUTS run's ({c.chains} x {c.draws}): the "
            f"largest difference of a population-level mean is {c.population_max:.2f} NUTS sd "
            f"({c.population_name}; at most {NUTS_POPULATION_MAX} is accepted), the 95th "
            f"percentile over the group effects {c.group_p95:.2f} (at most "
            f"{NUTS_GROUP_P95_MAX})" + ("" if c.healthy else f"; but {health}, so NUTS may "
                                        "be the one that is off"))))
    elif not c.healthy:
        out.append(Finding(FindingCode.APPROX_VS_NUTS, "warning", (
            f"the check against NUTS is inconclusive: {health} (a short run that is not "
            f"healthy makes the comparison meaningless); to be sure, fit with {nuts_command()}")))
    return out


def approx_rows(numbers: Mapping[str, Any],
                findings: Sequence[Finding]) -> tuple[tuple[str, str, str, str], ...]:
    """The self-check as the diagnostics table's ``(check, state, value, needed)`` rows, in
    place of the sampler's checks (divergences, E-BFMI, tree depth), which an approximate fit
    does not have. ``state`` comes from ``findings``, as for every other row."""
    c = SimpleNamespace(**numbers)

    def state(code: FindingCode) -> str:
        return check_state(findings, code)

    need = max(MIN_IS_ESS, MIN_IS_ESS_FRACTION * c.proposals)
    quadrature, importance = applies(numbers)
    no_groups = ("info", "not applicable", "no group effects to integrate (complete pooling)")
    no_theta = ("info", "not applicable", "no fixed effect or SD to weight (every draw exact)")
    return (
        ("quadrature refinement", *(
            (state(FindingCode.APPROX_QUADRATURE), f"{c.refinement_change:.2g}",
             f"< {QUADRATURE_TOL:g} ({c.nodes} -> {c.refined_nodes} {_per_group(numbers)}"
             + (f"; refined automatically from {first}" if (first := getattr(
                 c, "first_nodes", None)) not in (None, c.nodes) else "") + ")")
            if quadrature else no_groups)),
        ("group effects drawn", *(
            (state(FindingCode.APPROX_QUADRATURE),
             "all" if not c.failed_group_draws else f"{c.failed_group_draws} failed", "all")
            if quadrature else no_groups)),
        ("importance weights' Pareto k", *(
            (state(FindingCode.APPROX_PARETO_K), f"{c.pareto_k:.2f}", f"< {PARETO_K_MAX:g}")
            if importance else no_theta)),
        ("importance sampling ESS", *(
            (state(FindingCode.APPROX_ESS), f"{c.is_ess:.0f} of {c.proposals}",
             f">= {need:.0f}") if importance else no_theta)),
        *_nuts_row(numbers.get("against_nuts"), state(FindingCode.APPROX_VS_NUTS)),
    )


def _nuts_row(against: Mapping[str, Any] | None,
              state: str) -> tuple[tuple[str, str, str, str], ...]:
    """The row of the check against a short NUTS run (``--check``), when it was run."""
    if not against:
        return ()
    n = NutsCheck.from_dict(against)
    pop = f"{n.population_max:.2f}" if n.population_name else "-"  # "-": none to compare
    grp = f"{n.group_p95:.2f}" if n.group_name else "-"
    return ((f"against NUTS ({n.chains} x {n.draws})", state, f"{pop} / {grp} NUTS sd",
             f"<= {NUTS_POPULATION_MAX:g} (population) / {NUTS_GROUP_P95_MAX:g} (groups, 95th "
             "pct)"),)
