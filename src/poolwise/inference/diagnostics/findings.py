"""The diagnosis' records: :class:`Finding` (one result, coded by a :class:`FindingCode`),
:class:`Funnel` (where divergences concentrate), :class:`Diagnosis` (everything
:func:`~poolwise.inference.diagnostics.diagnose` found), and the thresholds its headline
checks share with the sampler checks (:mod:`poolwise.inference.diagnostics.sampler`).

``Diagnosis``' reprs are built by :mod:`poolwise.inference.display`, in this layer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from poolwise.inference.finding_codes import FindingCode

__all__ = [
    "ACCEPT_TOLERANCE",
    "BFMI_MIN",
    "ESS_PER_CHAIN",
    "RHAT_GROUP_FRACTION",
    "RHAT_MAX",
    "Diagnosis",
    "Finding",
    "FindingCode",
    "Funnel",
    "Severity",
    "check_state",
    "name_list",
    "two_digits",
]

RHAT_MAX = 1.01
ESS_PER_CHAIN = 100
BFMI_MIN = 0.3
#: PyMC warns when the mean acceptance differs from target_accept by more than this
ACCEPT_TOLERANCE = 0.1
#: fraction of group-level parameters allowed above RHAT_MAX before the check fails (H1)
RHAT_GROUP_FRACTION = 0.01

Severity = Literal["error", "warning", "info"]


@dataclass(frozen=True)
class Finding:
    """One diagnostic result: what (``code``), how bad, which parameters, and a plain-language
    message that says what was seen, what it means and what to do next.

    ``code`` is a :class:`FindingCode`; its string value is taken too (a saved fit holds the
    strings) and becomes the member, and any other string is a ValueError."""

    code: FindingCode
    severity: Severity
    message: str
    parameters: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # a code given as its string (a saved fit holds strings) becomes the member;
        # an unknown code is a ValueError
        object.__setattr__(self, "code", FindingCode(self.code))

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code.value, "severity": self.severity, "message": self.message,
                "parameters": list(self.parameters)}


@dataclass(frozen=True)
class Funnel:
    """Divergent transitions concentrated at small (``"small"``: the funnel of a centered
    term) or large (``"large"``: the inverted funnel) values of one group SD.

    ``threshold``: 75% of the divergent draws have ``parameter`` below it (``"small"``) or
    above it (``"large"``); ``share_all``: the fraction of *all* draws on that side.
    ``p_value``: two-sided Mann-Whitney test of log SD, divergent vs other draws (draws are
    autocorrelated, so it is read together with the effect size ``auc``, the probability that
    a divergent draw's SD is below another draw's).
    """

    term: str
    parameter: str
    direction: Literal["small", "large"]
    threshold: float
    share_all: float
    median_divergent: float
    median_all: float
    auc: float
    p_value: float
    n_divergent: int

    @property
    def sign(self) -> str:
        return "<" if self.direction == "small" else ">"

    def describe(self) -> str:
        """``"divergences concentrate where sd_district < 0.12"``."""
        return (f"divergences concentrate where {self.parameter} {self.sign} "
                f"{two_digits(self.threshold)}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "term": self.term, "parameter": self.parameter, "direction": self.direction,
            "threshold": _num(self.threshold), "share_all": _num(self.share_all),
            "median_divergent": _num(self.median_divergent), "median_all": _num(self.median_all),
            "auc": _num(self.auc), "p_value": _num(self.p_value),
            "n_divergent": self.n_divergent, "description": self.describe(),
        }


@dataclass(frozen=True)
class Diagnosis:
    """Everything :func:`diagnose` found. ``ok`` is False whenever any finding is an error."""

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
    accept_per_chain: tuple[float, ...] = ()
    funnels: tuple[Funnel, ...] = ()
    #: power-scaling sensitivity of the intercept, coefficients and SDs: name -> (prior, lik.)
    sensitivity: dict[str, tuple[float, float]] = field(default_factory=dict, compare=False)
    #: per-parameter numbers, aligned with ``parameters`` (components like ``a_g[3]``)
    parameters: tuple[str, ...] = field(default=(), repr=False)
    rhat: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False, compare=False)
    ess_bulk: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False, compare=False)
    ess_tail: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False, compare=False)
    #: an approximate fit's self-check as ``(check, state, value, needed)`` rows
    #: (``method="approx"``, :func:`~poolwise.inference.diagnostics.approx_check.approx_rows`;
    #: None for a sampler's fit): shown in place of the sampler's checks, which do not apply
    approx_checks: tuple[tuple[str, str, str, str], ...] | None = field(
        default=None, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        """True only when nothing of severity 'error' was found."""
        return not any(f.severity == "error" for f in self.findings)

    @property
    def divergence_pct_per_chain(self) -> tuple[float, ...]:
        return tuple(100.0 * d / self.draws for d in self.divergences_per_chain)

    @property
    def errors(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity == "error")

    def has(self, code: FindingCode | str) -> bool:
        return any(f.code == code for f in self.findings)

    def finding(self, code: FindingCode | str) -> Finding | None:
        return next((f for f in self.findings if f.code == code), None)

    @property
    def culprit(self) -> Funnel | None:
        """The funnel that best explains the divergences (strongest effect), if any."""
        if not self.funnels:
            return None
        return max(self.funnels, key=lambda f: abs(f.auc - 0.5))

    @property
    def min_ess(self) -> float:
        """min(bulk, tail) ESS; NaN when either is undefined."""
        if not (np.isfinite(self.min_ess_bulk) and np.isfinite(self.min_ess_tail)):
            return math.nan
        return min(self.min_ess_bulk, self.min_ess_tail)

    def ess_by_parameter(self, kind: Literal["bulk", "tail"] = "bulk") -> dict[str, float]:
        vals = self.ess_bulk if kind == "bulk" else self.ess_tail
        return {n: float(v) for n, v in zip(self.parameters, vals, strict=True)}

    def checks(self) -> tuple[tuple[str, str, str, str], ...]:
        """The headline checks as ``(check, state, value, needed)`` rows. ``state`` ("pass",
        "warn" or "fail") comes from this diagnosis' findings only (an error finding of the
        check fails it, a warning warns), so a table of badges never contradicts ``ok``:
        e.g. R-hat above 1.01 for under 1% of the group-level parameters is a warning."""
        from poolwise.textfmt import fmt_rhat, fmt_sig

        def state(*codes: FindingCode) -> str:
            return check_state(self.findings, *codes)

        ess_min = ESS_PER_CHAIN * self.chains
        bfmi = min(self.bfmi) if self.bfmi else math.nan
        sat = max(self.treedepth_saturation) if self.treedepth_saturation else 0.0
        rhat = fmt_rhat(self.max_rhat, RHAT_MAX) or "undefined"
        code = FindingCode
        convergence = [
            ("largest R-hat",
             state(code.RHAT, code.RHAT_UNDEFINED, code.RHAT_SINGLE_CHAIN, code.NONFINITE),
             rhat, f"<= {RHAT_MAX} (all population-level, {100 - 100 * RHAT_GROUP_FRACTION:g}% "
             "of group-level parameters)"),
            ("smallest bulk ESS", state(code.ESS_BULK, code.NONFINITE),
             fmt_sig(self.min_ess_bulk, None) or "undefined", f">= {ess_min}"),
            ("smallest tail ESS", state(code.ESS_TAIL, code.NONFINITE),
             fmt_sig(self.min_ess_tail, None) or "undefined", f">= {ess_min}"),
        ]
        if self.approx_checks is not None:
            # shown, not judged: an approximate fit's "chains" are groups of independent draws
            # (its group effects have no R-hat or ESS at all; how many distinct proposals carry
            # the fixed effects and SDs is the importance ESS row)
            why = "not judged: independent draws, not chains"
            return (*self.approx_checks,
                    *((f"{name} (fixed effects and SDs)", "info", value, why)
                      for name, _, value, _ in convergence))
        rows = [
            ("divergent transitions", state(code.DIVERGENCES), str(self.divergences), "0"),
            *convergence,
            ("smallest E-BFMI", state(code.BFMI), fmt_sig(bfmi, 2) or "not recorded",
             f">= {BFMI_MIN}"),
            ("draws at max tree depth", state(code.TREEDEPTH), f"{100 * sat:.1f}%", "0%"),
        ]
        if self.target_accept is not None and self.accept_per_chain:
            rows.append(("mean acceptance", state(code.ACCEPTANCE), fmt_sig(self.mean_accept, 2),
                         f"target_accept {self.target_accept:g} +/- {ACCEPT_TOLERANCE:g}"))
        return tuple(rows)

    def __repr__(self) -> str:
        from poolwise.inference.display import diagnosis_text

        return diagnosis_text(self)

    def _repr_html_(self) -> str:
        from poolwise.inference.display import diagnosis_html

        return diagnosis_html(self)

    def to_dict(self) -> dict:
        return {
            "divergences": self.divergences,
            "divergences_per_chain": list(self.divergences_per_chain),
            "divergence_pct_per_chain": [_num(p) for p in self.divergence_pct_per_chain],
            "max_rhat": _num(self.max_rhat),
            "min_ess_bulk": _num(self.min_ess_bulk),
            "min_ess_tail": _num(self.min_ess_tail),
            "bfmi": [_num(b) for b in self.bfmi],
            "treedepth_saturation": [_num(s) for s in self.treedepth_saturation],
            "mean_accept": _num(self.mean_accept),
            "accept_per_chain": [_num(a) for a in self.accept_per_chain],
            "target_accept": self.target_accept,
            "funnels": [f.to_dict() for f in self.funnels],
            "prior_sensitivity": {
                k: {"prior": _num(p), "likelihood": _num(lk)}
                for k, (p, lk) in self.sensitivity.items()
            },
            "ok": self.ok,
            "findings": [f.to_dict() for f in self.findings],
        }


def check_state(findings: Sequence[Finding], *codes: FindingCode) -> str:
    """A check's badge from its findings: "fail" with an error among ``codes``, "warn" with a
    warning, else "pass" (a table of badges never contradicts ``Diagnosis.ok``)."""
    sev = {f.severity for f in findings if f.code in codes}
    return "fail" if "error" in sev else "warn" if "warning" in sev else "pass"


def _num(v: float | None) -> float | None:
    return None if v is None or not np.isfinite(v) else round(float(v), 6)


def two_digits(v: float) -> str:
    """Two significant digits, for messages: 0.12, 2.3, 15."""
    return f"{float(v):.2g}" if abs(v) < 100 else f"{float(v):.0f}"


def name_list(items: list[str], k: int = 5) -> str:
    """The first ``k`` names, for messages: ``"a, b, c and 4 more"``."""
    more = f" and {len(items) - k} more" if len(items) > k else ""
    return ", ".join(items[:k]) + more
