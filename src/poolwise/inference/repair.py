"""Repairing a fit whose diagnostics fail: the loop between sampling once
(:mod:`poolwise.inference.sampling`) and the public :func:`poolwise.fit`.

The first attempt's parameterization (``parameterization="auto"``) and the target_accept
it calls for are decided in :mod:`poolwise.model.parameterization`; its names
(``choose_parameterization``, ``AutoChoice``, ``TermChoice``, ``funnel_severity``,
``recommend_target_accept``, ``data_sd_range``, ``SEVERITY_*``) are re-exported here.

Repair (:func:`repair_fit`, the default of :func:`poolwise.fit`): when the diagnosis fails,
the remedies are applied in this order, one per attempt, until it passes or the budget
(:class:`RepairPolicy`) is spent:

1. **reparameterize** the culprit term: when the divergences concentrate at small values of
   its SD (the funnel, :func:`poolwise.inference.diagnostics.localise_funnels`), or cannot be
   localised,
   its centered levels become non-centered; when they concentrate at *large* values (the
   inverted funnel) its data-rich levels are centered by the ``auto`` rule with the SD range
   of the failed attempt. Each term is reparameterized at most once in each direction. If the
   new parameterization still leaves a severity above 3.2 (7), target_accept is raised to 0.95
   (0.99) in the same step (said so in the log);
2. **raise target_accept** along 0.9, 0.95, 0.99;
3. **more tuning** (tuning and, when the effective sample size is short, draws doubled).

R-hat / ESS failures without divergences go straight to 3; stuck or non-finite draws to 2.
A prior is never tightened: where a tighter SD prior would hide a funnel, the log carries
that as *advice*, with its consequence. Out of budget the fit stays not ok: ``fit.ok`` is
False, a :class:`~poolwise.errors.ConvergenceWarning` is emitted (``strict=True``:
:class:`~poolwise.errors.SamplingError`), the CLI exits with 1.

``RepairLog``'s reprs are built by :mod:`poolwise.inference.display`, in this layer.

Why one module: the remedies, the loop that applies them and the journal it writes (RepairLog,
whose fields are the saved-fit schema) change together; the deciding of the parameterization is
in poolwise.model.parameterization.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from poolwise.engine.sampler import SamplerConfig
from poolwise.inference.diagnostics import BFMI_MIN, RHAT_MAX, Diagnosis, Funnel
from poolwise.inference.finding_codes import FindingCode
from poolwise.inference.fitted import Fit
from poolwise.inference.pilot import _engine_scale_range, choose_parameterization, inverse_p
from poolwise.inference.sampling import sample_spec, with_log_likelihood
from poolwise.model.parameterization import (
    SEVERITY_LADDER,
    SEVERITY_RAISE,
    AutoChoice,
    TermChoice,
    _r,
    data_sd_range,
    funnel_severity,
    level_information,
    recommend_target_accept,
    resolve_parameterization,
)
from poolwise.model.spec import ModelSpec, Parameterization
from poolwise.progress import phase

__all__ = [
    "RepairPolicy",
    "RepairAttempt",
    "RepairLog",
    "TermChoice",
    "AutoChoice",
    "choose_parameterization",
    "data_sd_range",
    "funnel_severity",
    "recommend_target_accept",
    "repair_fit",
    "DEFAULT_TARGET_ACCEPT",
    "SEVERITY_LADDER",
    "SEVERITY_RAISE",
]

DEFAULT_TARGET_ACCEPT = 0.8

#: error findings of the geometry (divergences, low E-BFMI): reparameterize, then raise
#: target_accept
_GEOMETRY = frozenset({FindingCode.DIVERGENCES, FindingCode.BFMI})
#: error findings of stuck or non-finite draws: raise target_accept
_STUCK = frozenset({FindingCode.NONFINITE, FindingCode.RHAT_UNDEFINED})
#: error findings of short effective samples: more draws as well as more tuning
_SHORT = frozenset({FindingCode.ESS_BULK, FindingCode.ESS_TAIL, FindingCode.RHAT})
#: the error findings :func:`_failing` words itself
_WORDED = _GEOMETRY | _STUCK | _SHORT
#: findings that say a parameter is shaped by its prior
_PRIOR_SHAPED = frozenset({FindingCode.PRIOR_DOMINATED, FindingCode.PRIOR_SENSITIVE})


# ---------------------------------------------------------------------------------------------
# records
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RepairPolicy:
    """The repair budget and ladder. ``max_attempts`` counts every fit, the first included;
    ``max_seconds`` (optional) stops starting new attempts once the loop has run that long."""

    max_attempts: int = 6
    max_seconds: float | None = None
    target_accepts: tuple[float, ...] = (0.9, 0.95, 0.99)
    tune_factor: int = 2
    max_tune: int = 8000
    max_draws: int = 8000

    def __post_init__(self) -> None:
        from poolwise.errors import SpecError

        if not isinstance(self.max_attempts, int) or self.max_attempts < 1:
            raise SpecError(f"max_attempts must be a whole number >= 1; got {self.max_attempts!r}")
        if any(not 0.0 < t < 1.0 for t in self.target_accepts):
            raise SpecError(f"target_accepts must lie in (0, 1); got {self.target_accepts!r}")


@dataclass(frozen=True)
class RepairAttempt:
    """One fit of the repair loop: its settings, what it found, and why the next was made."""

    number: int
    action: str
    settings: dict[str, Any]
    parameterization: dict[str, str]
    divergences: int
    min_ess_bulk: float
    min_ess_tail: float
    max_rhat: float
    min_bfmi: float
    ok: bool
    seconds: float
    problems: tuple[FindingCode, ...]
    culprit: str | None
    next_step: str
    ess_bulk: dict[str, float] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        # codes given as their strings (a saved fit holds strings) become the members
        object.__setattr__(self, "problems", tuple(FindingCode(p) for p in self.problems))

    def to_dict(self) -> dict[str, Any]:
        return {
            "attempt": self.number,
            "action": self.action,
            "settings": dict(self.settings),
            "parameterization": dict(self.parameterization),
            "divergences": self.divergences,
            "min_ess_bulk": _r(self.min_ess_bulk),
            "min_ess_tail": _r(self.min_ess_tail),
            "max_rhat": _r(self.max_rhat),
            "min_bfmi": _r(self.min_bfmi),
            "ok": self.ok,
            "seconds": _r(self.seconds),
            "problems": [str(c) for c in self.problems],
            "culprit": self.culprit,
            "next_step": self.next_step,
        }

    def line(self) -> str:
        s = self.settings
        ess = "nan" if not math.isfinite(self.min_ess_bulk) else f"{self.min_ess_bulk:.0f}"
        esst = "nan" if not math.isfinite(self.min_ess_tail) else f"{self.min_ess_tail:.0f}"
        rh = "nan" if not math.isfinite(self.max_rhat) else f"{self.max_rhat:.3f}"
        par = "; ".join(f"{k}: {v}" for k, v in self.parameterization.items()) or "-"
        verdict = "ok" if self.ok else "NOT OK"
        return (
            f"attempt {self.number}: {self.action} [{par}; target_accept {s['target_accept']:g}, "
            f"tune {s['tune']}, draws {s['draws']}] -> {verdict}: divergences {self.divergences}, "
            f"max R-hat {rh}, min ESS bulk {ess} / tail {esst}, {self.seconds:.2f} s"
        )


@dataclass(frozen=True)
class RepairLog:
    """The whole repair journal. Iterating it yields the attempts (as ``Fit.repair_log``)."""

    attempts: tuple[RepairAttempt, ...] = ()
    ok: bool = True
    stopped: str = ""
    advice: tuple[str, ...] = ()
    auto: AutoChoice | None = None

    def __iter__(self) -> Iterator[RepairAttempt]:
        return iter(self.attempts)

    def __len__(self) -> int:
        return len(self.attempts)

    def __getitem__(self, i: int) -> RepairAttempt:
        return self.attempts[i]

    @property
    def repaired(self) -> bool:
        """True when the first attempt failed and a later one passed."""
        return len(self.attempts) > 1 and self.ok

    def to_list(self) -> list[dict[str, Any]]:
        return [a.to_dict() for a in self.attempts]

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "stopped": self.stopped,
            "attempts": self.to_list(),
            "advice": list(self.advice),
            "auto": self.auto.to_dict() if self.auto else None,
        }

    def journal(self) -> list[str]:
        """Plain-text lines for a terminal."""
        out: list[str] = []
        if self.auto is not None:
            for t in self.auto.terms:
                out.append(f"auto parameterization {t.describe()}")
            if any(t.source == "pilot" for t in self.auto.terms):
                out.append(f"auto: the pilot run took {self.auto.pilot_seconds:.1f} s")
            if self.auto.target_accept is not None:
                out.append(
                    f"auto: target_accept {self.auto.target_accept:g} because a funnel of "
                    f"severity {self.auto.severity:.1f} (> {SEVERITY_RAISE:g}) remains"
                )
        for a in self.attempts:
            out.append(a.line())
            if a.culprit:
                out.append(f"    culprit: {a.culprit}")
            if a.next_step:
                out.append(f"    next: {a.next_step}")
        if self.stopped:
            out.append(f"repair: {self.stopped}")
        out.extend(f"advice: {a}" for a in self.advice)
        return out

    def __repr__(self) -> str:
        from poolwise.inference.display import repair_text

        return repair_text(self)

    def _repr_html_(self) -> str:
        from poolwise.inference.display import repair_html

        return repair_html(self)


# ---------------------------------------------------------------------------------------------
# parameterization="auto"
# ---------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# the repair loop
# ---------------------------------------------------------------------------------------------


@dataclass
class _State:
    noncentered: set[str] = field(default_factory=set)
    centered: set[str] = field(default_factory=set)
    funnels: list[Funnel] = field(default_factory=list)


def _settings(c: SamplerConfig) -> dict[str, Any]:
    return {"chains": c.chains, "tune": c.tune, "draws": c.draws, "seed": c.seed,
            "target_accept": c.target_accept, "max_treedepth": c.max_treedepth}


def _term_by_name(spec: ModelSpec, name: str) -> Any:
    return next((t for t in spec.terms if t.name == name), None)


def _set_flags(
    spec: ModelSpec, name: str, flags: np.ndarray, requested: Parameterization
) -> ModelSpec:
    terms = tuple(
        replace(t, centered=np.asarray(flags, dtype=bool), requested=requested)
        if t.name == name else t for t in spec.terms
    )
    return replace(spec, terms=terms)


def _severity_after(spec: ModelSpec, fit: Fit) -> float:
    """Worst funnel severity of the estimated terms of ``spec``, with SD ranges from ``fit``."""
    sev = 1.0
    post = fit.idata["posterior"].to_dataset()
    cell_p = None
    for t in spec.terms:
        if not t.estimated:
            continue
        rng = _engine_scale_range(post, t)
        if not np.isfinite(rng).all():
            continue
        if cell_p is None:
            cell_p = np.asarray(inverse_p(spec, post), dtype=float)
        info = level_information(t, spec.design, cell_p, link=spec.link)
        sev = max(sev, float(funnel_severity(info, t.centered, rng).max()))
    return sev


def _next_remedy(
    diag: Diagnosis, fit: Fit, spec: ModelSpec, config: SamplerConfig,
    policy: RepairPolicy, state: _State,
) -> tuple[ModelSpec, SamplerConfig, str, str] | None:
    """(spec, config, action label, reason) for the next attempt, or None when nothing is left."""
    codes = {f.code for f in diag.errors}
    if FindingCode.RHAT_SINGLE_CHAIN in codes:
        return None  # no remedy makes R-hat computable with one chain
    geometry = bool(codes & _GEOMETRY)
    stuck = bool(codes & _STUCK)
    ladder = [t for t in policy.target_accepts if t > config.target_accept + 1e-12]

    if geometry:
        culprit = diag.culprit
        step = _reparameterize(diag, fit, spec, culprit, state)
        if step is not None:
            new_spec, label, reason = step
            ta = config.target_accept
            sev = _severity_after(new_spec, fit)
            rec = recommend_target_accept(sev)
            if rec is not None and ta < rec:
                ta = rec
                reason += (
                    f"; the new parameterization still leaves a funnel of severity {sev:.1f} "
                    f"(> {SEVERITY_RAISE:g}) over this attempt's SD range, so target_accept "
                    f"goes to {ta:g} in the same step"
                )
                label += f" + target_accept {ta:g}"
            return new_spec, replace(config, target_accept=ta), label, reason
    if geometry or stuck:
        if ladder:
            ta = ladder[0]
            return (spec, replace(config, target_accept=ta), f"target_accept {ta:g}",
                    f"{_failing(diag)}; a higher target_accept ({config.target_accept:g} -> "
                    f"{ta:g}) takes smaller steps")
    # more tuning (and draws, when the effective sample size is short)
    tune = min(config.tune * policy.tune_factor, policy.max_tune) if config.tune else 1000
    short = bool(codes & _SHORT)
    draws = min(config.draws * policy.tune_factor, policy.max_draws) if short else config.draws
    if tune == config.tune and draws == config.draws:
        return None
    why = _failing(diag)
    if geometry:
        why += " at the highest target_accept"
    label = f"tune {tune}" + (f", draws {draws}" if draws != config.draws else "")
    return (spec, replace(config, tune=tune, draws=draws), f"more tuning ({label})",
            f"{why}; more tuning"
            + (" and draws" if draws != config.draws else "") + " for adaptation and mixing")


def _failing(diag: Diagnosis) -> str:
    """The failing diagnostics in words, from the error findings only: never "divergent
    transitions remain" for a fit without divergences."""
    codes = {f.code for f in diag.errors}
    parts = []
    if FindingCode.DIVERGENCES in codes:
        parts.append(f"{diag.divergences} divergent transition(s) remain")
    if FindingCode.BFMI in codes:
        parts.append(f"E-BFMI is below {BFMI_MIN}")
    if FindingCode.RHAT in codes:
        parts.append(f"R-hat is above {RHAT_MAX} (max {diag.max_rhat:.3f})")
    if codes & {FindingCode.ESS_BULK, FindingCode.ESS_TAIL}:
        parts.append("the effective sample size is short")
    if codes & _STUCK:
        parts.append("draws are stuck or non-finite")
    parts.extend(f"check '{c}' fails" for c in sorted(codes - _WORDED))
    if not parts:
        return "diagnostics fail"
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _reparameterize(
    diag: Diagnosis, fit: Fit, spec: ModelSpec, culprit: Funnel | None, state: _State
) -> tuple[ModelSpec, str, str] | None:
    if culprit is not None and culprit.direction == "large":
        t = _term_by_name(spec, culprit.term)
        if t is None or t.correlated or culprit.term in state.centered:
            return None
        post = fit.idata["posterior"].to_dataset()
        rng = _engine_scale_range(post, t)
        flags = resolve_parameterization(
            t, "auto", spec.design, sd_range=rng, cell_p=inverse_p(spec, post), link=spec.link
        )
        flags = flags | t.centered
        if np.array_equal(flags, t.centered):
            return None
        state.centered.add(culprit.term)
        k = int(flags.sum() - t.centered.sum())
        return (
            _set_flags(spec, t.name, flags, "auto"),
            f"center {k} data-rich level(s) of ({t.name})",
            f"{culprit.describe()} (inverted funnel): center the levels whose data outweigh "
            "the group prior over this attempt's SD range",
        )
    # the funnel, or divergences we cannot localise: non-center centered levels
    if culprit is not None:
        names = [culprit.term]
        why = f"{culprit.describe()} (the funnel of a centered term)"
    else:
        names = [t.name for t in spec.terms if t.centered.any()]
        why = (("divergent transitions that could not be localised" if diag.divergences
                else f"E-BFMI below {BFMI_MIN} without divergences")
               + "; centered levels are the usual cause")
    names = [n for n in names if n not in state.noncentered]
    targets = [t for t in spec.terms if t.name in names and t.centered.any()]
    if not targets:
        return None
    new = spec
    for t in targets:
        new = _set_flags(new, t.name, np.zeros(t.group.n_levels, dtype=bool), "noncentered")
        state.noncentered.add(t.name)
    label = "non-center " + ", ".join(f"({t.name})" for t in targets)
    return new, label, f"{why}: non-center {', '.join(t.name for t in targets)}"


def _advice(state: _State, spec: ModelSpec, final: Diagnosis) -> tuple[str, ...]:
    """Suggestions that change the model (never applied automatically)."""
    out = []
    seen: set[str] = set()
    few = {f.parameters[0] for f in final.findings
           if f.code == FindingCode.FEW_LEVELS and f.parameters}
    dominated = {f.parameters[0] for f in final.findings
                 if f.code in _PRIOR_SHAPED and f.parameters}
    for f in state.funnels:
        if f.direction != "small" or f.parameter in seen:
            continue
        seen.add(f.parameter)
        t = _term_by_name(spec, f.term)
        prior = t.sd_priors[0] if t is not None and t.sd_priors else None
        out.append(
            f"a tighter prior on {f.parameter} (now {prior}), e.g. half_normal(0.5) or "
            f"half_normal(0.1), would narrow the funnel's neck, but it changes the model: it "
            f"pulls {f.parameter} toward 0 and every level of '{f.term}' toward the average, "
            "so the between-group variation can be hidden (on three districts of the bundled "
            "example, poolwise.load_example('bangladesh'), half_normal(0.1) forced sigma to "
            "about 0.08). Only use it if you hold that belief before seeing the data; poolwise "
            "never tightens a prior by itself."
        )
    for name in sorted((few | dominated) - seen):
        out.append(
            f"{name} is shaped by its prior (few levels or prior-sensitive): report it with its "
            "prior, and check how it changes under another reasonable prior rather than "
            "tightening it to make sampling easier."
        )
    return tuple(out)


def unidentified_sd_terms(spec: ModelSpec) -> list[str]:
    """Group terms with an estimated SD whose every level holds exactly one 0/1 outcome.

    A single Bernoulli trial per level is, whatever the SD, a Bernoulli draw with the
    population's mean probability: the data say nothing about how much the levels differ, the
    SD's posterior is its prior bent along a ridge, and in thousands of dimensions NUTS
    cannot make its chains agree (10,000 such levels: six attempts up to target_accept 0.99
    and 4000 + 4000 iterations, R-hat still 1.11). No sampler setting fixes it, so the
    repair loop stops there and says why (RELIABILITY.md section 7, row 30 warns before)."""
    return [str(t.group.term) for t in spec.terms
            if t.estimated and t.group.n_levels > 1 and np.all(t.group.level_trials == 1.0)]


def repair_fit(
    spec: ModelSpec,
    config: SamplerConfig,
    *,
    policy: RepairPolicy | None = None,
    repair: bool = True,
    log_likelihood: bool = True,
    sensitivity: bool = True,
    target_accept_given: bool = True,
    pilot: bool = True,
) -> Fit:
    """Fit ``spec``; while the diagnosis fails, apply the next remedy and fit again.

    ``repair=False`` makes one attempt. ``target_accept_given=False`` lets the ``auto`` rule
    raise the first attempt's target_accept. The returned Fit carries the final attempt's draws,
    its full diagnosis (with prior sensitivity; the ``log_likelihood`` group when asked) and the
    :class:`RepairLog` in ``repair_log``.
    """
    policy = policy or RepairPolicy()
    t_start = time.perf_counter()
    with phase("the pilot"):
        spec, auto = choose_parameterization(spec, config, pilot=pilot)
    if auto.target_accept is not None and not target_accept_given:
        config = replace(config, target_accept=max(config.target_accept, auto.target_accept))
    auto_log = auto if auto.terms else None
    state = _State()
    attempts: list[RepairAttempt] = []
    action = "initial fit"
    if auto_log is not None:
        action += " (auto parameterization" + (
            f", target_accept {config.target_accept:g})" if auto.target_accept else ")"
        )
    max_attempts = policy.max_attempts if repair else 1
    current: Fit | None = None
    stopped = ""
    first_warnings: tuple[str, ...] = ()
    for k in range(1, max_attempts + 1):
        t0 = time.perf_counter()
        attempt = (phase(f"repair attempt {k}",
                         shown=f"repair attempt {k} of at most {max_attempts}")
                   if k > 1 else contextlib.nullcontext())
        with warnings.catch_warnings(), attempt:
            if k > 1:  # weak-settings warnings were emitted by the first attempt already
                warnings.simplefilter("ignore")
            current = sample_spec(spec, config, log_likelihood=False)
        if k == 1:
            first_warnings = current.warnings
        seconds = time.perf_counter() - t0
        diag = current.diagnosis
        state.funnels.extend(diag.funnels)
        culprit = diag.culprit.describe() if diag.culprit else None
        remedy = None
        next_step = ""
        if diag.ok:
            stopped = "diagnostics passed" + (f" after {k} attempts" if k > 1 else "")
        elif not repair:
            stopped = "diagnostics failed; repair is off (repair=False)"
        elif k == max_attempts:
            stopped = f"out of budget: {max_attempts} attempts, diagnostics still fail"
        elif policy.max_seconds is not None and time.perf_counter() - t_start > policy.max_seconds:
            stopped = (f"out of budget: {policy.max_seconds:g} s spent, diagnostics still fail")
        elif unidentified := unidentified_sd_terms(spec):
            names = ", ".join(unidentified)
            stopped = (
                f"no remedy: every level of {names} has exactly one 0/1 outcome, so the data "
                "do not identify its SD and no sampler setting can make the chains agree; "
                "drop the term or group at a coarser level"
            )
        else:
            remedy = _next_remedy(diag, current, spec, config, policy, state)
            if remedy is None and diag.has(FindingCode.RHAT_SINGLE_CHAIN):
                stopped = ("no remedy: R-hat needs at least 2 chains, so a 1-chain fit cannot "
                           "be checked; run chains >= 2")
            elif remedy is None:
                stopped = "no remedy left (all were tried); diagnostics still fail"
            else:
                next_step = remedy[3]
        attempts.append(RepairAttempt(
            number=k, action=action, settings=_settings(config),
            parameterization=spec.parameterization_by_term(),
            divergences=diag.divergences, min_ess_bulk=diag.min_ess_bulk,
            min_ess_tail=diag.min_ess_tail, max_rhat=diag.max_rhat,
            min_bfmi=min(diag.bfmi) if diag.bfmi else math.nan, ok=diag.ok, seconds=seconds,
            problems=tuple(f.code for f in diag.errors), culprit=culprit, next_step=next_step,
            ess_bulk=diag.ess_by_parameter("bulk"),
        ))
        if remedy is None:
            break
        spec, config, action, _ = remedy
    assert current is not None
    # prior sensitivity (from the cells) and the log_likelihood group, each when asked
    with phase("the log-likelihood and prior sensitivity"):
        final = with_log_likelihood(current, group=log_likelihood, sensitivity=sensitivity)
    advice = _advice(state, spec, final.diagnosis)
    log = RepairLog(tuple(attempts), ok=final.diagnosis.ok, stopped=stopped, advice=advice,
                    auto=auto_log)
    total = time.perf_counter() - t_start
    timings = dict(final.timings)
    timings.update({
        "total_s": total,
        "pilot_s": auto.pilot_seconds,
        "attempts_s": float(sum(a.seconds for a in attempts)),
        "attempts": float(len(attempts)),
    })
    final.idata.attrs["poolwise_repair"] = json.dumps(log.to_dict())
    return replace(final, timings=timings, repair_log=log,
                   warnings=tuple(dict.fromkeys(first_warnings + final.warnings)))
