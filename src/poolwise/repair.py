"""Choosing the parameterization, and repairing a fit whose diagnostics fail.

``parameterization="auto"`` (:func:`choose_parameterization`): a short pilot run (every level
non-centered, 300 tuning + 300 draws per chain at target_accept 0.9, no log-likelihood, no
diagnostics) estimates the 5%-95% range ``[s_lo, s_hi]`` of every group SD and each cell's
success probability; :func:`poolwise.model.resolve_parameterization` then centers exactly the
levels whose data outweigh the group prior across that range (``I_j * s_lo**2 > 1``). What is
left is measured by the *funnel severity* of each level: how much its conditional posterior
scale changes as the SD moves across its range,

* centered level: ``sqrt((I + 1/s_lo**2) / (I + 1/s_hi**2))`` (the funnel);
* non-centered level: ``sqrt((1 + s_hi**2 I) / (1 + s_lo**2 I))`` (the inverted funnel).

One step size cannot serve scales that differ by more than a few times; when the worst level's
severity exceeds 3 and the user did not set ``target_accept``, the first attempt already uses
0.95, and above 6 it uses 0.99 (:data:`SEVERITY_LADDER`). On the seed's three districts the
SD ranges over 0.05-2, so every district is non-centered and district 1 (117 women) keeps a
severity of 9-10: non-centered, the three districts have no divergences at 0.95 and at 0.99,
but at 0.95 half the seeds miss R-hat <= 1.01 or ESS >= 400 and need a second attempt, at 0.99
one in eight (``bench/repair_bench.py --part ta``). On all 60 districts the range is
0.38-0.68; the 26-28 districts with more than ~30 women are centered and the severity is
below 1.5, so the default 0.8 stays.

Repair (:func:`repair_fit`, the default of :func:`poolwise.fit`): when the diagnosis fails,
the remedies are applied in this order, one per attempt, until it passes or the budget
(:class:`RepairPolicy`) is spent:

1. **reparameterize** the culprit term: when the divergences concentrate at small values of
   its SD (the funnel, :func:`poolwise.diagnostics.localise_funnels`), or cannot be localised,
   its centered levels become non-centered; when they concentrate at *large* values (the
   inverted funnel) its data-rich levels are centered by the ``auto`` rule with the SD range
   of the failed attempt. Each term is reparameterized at most once in each direction. If the
   new parameterization still leaves a severity above 3 (6), target_accept is raised to 0.95
   (0.99) in the same step (said so in the log);
2. **raise target_accept** along 0.9, 0.95, 0.99;
3. **more tuning** (tuning and, when the effective sample size is short, draws doubled).

R-hat / ESS failures without divergences go straight to 3; stuck or non-finite draws to 2.
A prior is never tightened: where a tighter SD prior would hide a funnel, the log carries
that as *advice*, with its consequence. Out of budget the fit stays not ok: ``fit.ok`` is
False, a :class:`~poolwise.errors.ConvergenceWarning` is emitted (``strict=True``:
:class:`~poolwise.errors.SamplingError`), the CLI exits with 1.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from poolwise.diagnostics import Diagnosis, Funnel
from poolwise.engine.sampler import SamplerConfig
from poolwise.model import (
    ModelSpec,
    Parameterization,
    level_information,
    resolve_parameterization,
)

if TYPE_CHECKING:
    from poolwise.fit import Fit

__all__ = [
    "RepairPolicy",
    "RepairAttempt",
    "RepairLog",
    "TermChoice",
    "AutoChoice",
    "choose_parameterization",
    "funnel_severity",
    "recommend_target_accept",
    "repair_fit",
    "DEFAULT_TARGET_ACCEPT",
    "SEVERITY_LADDER",
    "SEVERITY_RAISE",
]

DEFAULT_TARGET_ACCEPT = 0.8
#: worst-level funnel severity above which one step size cannot serve the whole SD range
SEVERITY_RAISE = 3.0
#: (severity above which, target_accept to use), most severe first (rstanarm's default for
#: hierarchical models is 0.95; the seed's repaired model used 0.99)
SEVERITY_LADDER = ((6.0, 0.99), (SEVERITY_RAISE, 0.95))
#: the pilot of parameterization="auto"
PILOT_TUNE = 300
PILOT_DRAWS = 300
PILOT_TARGET_ACCEPT = 0.9
#: quantiles of a group SD that stand for its plausible range
SD_QUANTILES = (0.05, 0.95)


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
class TermChoice:
    """What the ``auto`` rule decided for one group term, and why."""

    term: str
    sd_range: tuple[tuple[float, float], ...]  # per coefficient: (s_lo, s_hi)
    source: str  # "pilot", "prior", "fixed SD" or "attempt N"
    n_centered: int
    n_levels: int
    severity: float
    worst_level: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "term": self.term, "sd_range": [list(map(_r, r)) for r in self.sd_range],
            "source": self.source, "n_centered": self.n_centered, "n_levels": self.n_levels,
            "severity": _r(self.severity), "worst_level": self.worst_level,
        }

    def describe(self) -> str:
        rng = ", ".join(f"{lo:.2g}-{hi:.2g}" for lo, hi in self.sd_range)
        return (
            f"({self.term}): {self.n_centered} of {self.n_levels} levels centered; SD range "
            f"{rng} ({self.source}); funnel severity {self.severity:.1f} (level "
            f"{self.worst_level})"
        )


@dataclass(frozen=True)
class AutoChoice:
    """The result of :func:`choose_parameterization`."""

    terms: tuple[TermChoice, ...]
    target_accept: float | None  # recommended; None: no reason to leave the default
    pilot_seconds: float

    @property
    def severity(self) -> float:
        return max((t.severity for t in self.terms), default=1.0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "terms": [t.to_dict() for t in self.terms],
            "recommended_target_accept": self.target_accept,
            "pilot_seconds": _r(self.pilot_seconds),
        }


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
    problems: tuple[str, ...]
    culprit: str | None
    next_step: str
    ess_bulk: dict[str, float] = field(default_factory=dict, repr=False, compare=False)

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
            "problems": list(self.problems),
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


def _r(v: float | None) -> float | None:
    if v is None:
        return None
    v = float(v)
    return round(v, 6) if math.isfinite(v) else None


# ---------------------------------------------------------------------------------------------
# parameterization="auto"
# ---------------------------------------------------------------------------------------------


def funnel_severity(info: np.ndarray, centered: np.ndarray, sd_range: np.ndarray) -> np.ndarray:
    """Per level: the factor by which its conditional posterior scale changes as the group SD
    moves across ``sd_range`` (shape (C, 2)), under the parameterization ``centered``; the
    worst coefficient counts. 1 means no funnel at all."""
    info = np.asarray(info, dtype=float)
    rng = np.asarray(sd_range, dtype=float).reshape(info.shape[1], 2)
    lo, hi = np.maximum(rng[:, 0], 1e-12), np.maximum(rng[:, 1], 1e-12)
    cen = np.sqrt((info + 1.0 / lo**2) / (info + 1.0 / hi**2))
    non = np.sqrt((1.0 + hi**2 * info) / (1.0 + lo**2 * info))
    ratio = np.where(np.asarray(centered, dtype=bool)[:, None], cen, non)
    return ratio.max(axis=1)


def _sd_draws(post: Any, term: Any) -> list[np.ndarray]:
    from poolwise.naming import sd_name

    return [np.asarray(post[sd_name(term, c)].values, dtype=float).ravel()
            for c in term.group.coef_names]


def _sd_range_from(post: Any, term: Any) -> np.ndarray:
    rows = []
    for x in _sd_draws(post, term):
        x = x[np.isfinite(x)]
        rows.append(np.quantile(x, SD_QUANTILES) if x.size else [np.nan, np.nan])
    return np.array(rows, dtype=float)


def _cell_p(spec: ModelSpec, post: Any) -> np.ndarray:
    from poolwise.posterior import cell_eta, inverse_link, to_original_scale

    eta = cell_eta(spec, to_original_scale(spec, post))
    return np.asarray(inverse_link(spec.link, eta), dtype=float).mean(axis=0)


def _term_choice(spec: ModelSpec, t_index: int, sd_range: np.ndarray, source: str,
                 cell_p: np.ndarray | None, flags: np.ndarray) -> TermChoice:
    t = spec.terms[t_index]
    info = level_information(t, spec.design, cell_p, link=spec.link)
    sev = funnel_severity(info, flags, sd_range)
    worst = int(np.argmax(sev)) if sev.size else 0
    rng = tuple((float(lo), float(hi)) for lo, hi in np.asarray(sd_range).reshape(-1, 2))
    return TermChoice(
        term=t.name, sd_range=rng, source=source, n_centered=int(np.sum(flags)),
        n_levels=t.group.n_levels, severity=float(sev.max()) if sev.size else 1.0,
        worst_level=str(t.group.labels[worst]) if t.group.n_levels else "",
    )


def recommend_target_accept(severity: float) -> float | None:
    """The target_accept for a remaining funnel of this severity (None: keep the default)."""
    for above, ta in SEVERITY_LADDER:
        if severity > above:
            return ta
    return None


def choose_parameterization(
    spec: ModelSpec, config: SamplerConfig, *, pilot: bool = True
) -> tuple[ModelSpec, AutoChoice]:
    """Resolve every term whose requested parameterization is ``"auto"``.

    With ``pilot`` (and at least one estimated SD among them) a short pilot run estimates the
    SD ranges and the cell probabilities; otherwise the SD priors' 5%-95% ranges are used.
    Returns the resolved spec and what was decided (with the recommended target_accept).
    """
    from poolwise.model import sd_prior_range

    t0 = time.perf_counter()
    auto_idx = [i for i, t in enumerate(spec.terms) if t.requested == "auto"]
    if not auto_idx:
        return spec, AutoChoice((), None, 0.0)
    post = None
    cell_p = None
    # correlated terms are always non-centered: a pilot only helps the others
    if pilot and any(spec.terms[i].estimated and not spec.terms[i].correlated for i in auto_idx):
        post = _pilot(spec.with_parameterization("noncentered"), config)
        cell_p = _cell_p(spec, post)
    terms = list(spec.terms)
    choices = []
    for i in auto_idx:
        t = terms[i]
        if not t.estimated:
            rng, source = sd_prior_range(t), "fixed SD"
        elif post is not None:
            rng, source = _sd_range_from(post, t), "pilot"
        else:
            rng, source = sd_prior_range(t, SD_QUANTILES), "prior"
        if not np.isfinite(rng).all():
            rng, source = sd_prior_range(t, SD_QUANTILES), "prior"
        flags = resolve_parameterization(t, "auto", spec.design, sd_range=rng, cell_p=cell_p,
                                         link=spec.link)
        terms[i] = replace(t, centered=flags)
        choices.append((i, rng, source, flags))
    choices = _one_centered_term_per_mean(terms, choices)
    new_spec = replace(spec, terms=tuple(terms))
    picked = tuple(_term_choice(new_spec, i, rng, src, cell_p, fl) for i, rng, src, fl in choices)
    sev = max((c.severity for c in picked), default=1.0)
    return new_spec, AutoChoice(picked, recommend_target_accept(sev), time.perf_counter() - t0)


def _one_centered_term_per_mean(terms: list, choices: list) -> list:
    """Crossed terms that are centered on the same fixed coefficient (say two intercept terms
    ``(1 | a) + (1 | b)``) put that coefficient on a ridge: their centered effects all move
    with it. Keep centered levels in only one of them, the one with the most data per level,
    and make the others non-centered."""
    by_mean: dict[int, list[int]] = {}
    for pos, (i, _rng, _src, flags) in enumerate(choices):
        if flags.any():
            for mi in set(terms[i].mu_index) - {-1}:
                by_mean.setdefault(mi, []).append(pos)
    demote: set[int] = set()
    for positions in by_mean.values():
        if len(positions) > 1:
            def richness(pos: int) -> float:
                g = terms[choices[pos][0]].group
                return float(np.sum(g.level_trials) / max(g.n_levels, 1))

            keep = max(positions, key=richness)
            demote.update(p for p in positions if p != keep)
    out = []
    for pos, (i, rng, src, flags) in enumerate(choices):
        if pos in demote:
            flags = np.zeros_like(flags)
            terms[i] = replace(terms[i], centered=flags)
        out.append((i, rng, src, flags))
    return out


def _pilot(spec: ModelSpec, config: SamplerConfig) -> Any:
    from poolwise.engine.layout import pack
    from poolwise.engine.sampler import run_nuts

    cfg = replace(
        config, tune=min(PILOT_TUNE, config.tune) or PILOT_TUNE, draws=PILOT_DRAWS,
        target_accept=max(PILOT_TARGET_ACCEPT, config.target_accept), progress=False,
    )
    tree, _ = run_nuts(pack(spec), cfg)
    return tree["posterior"].to_dataset()


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


def inverse_p(spec: ModelSpec, post: Any) -> np.ndarray:
    """Posterior mean success probability of each cell (natural-scale draws)."""
    from poolwise.posterior import cell_eta, inverse_link

    return np.asarray(inverse_link(spec.link, cell_eta(spec, post)), dtype=float).mean(axis=0)


def _engine_scale_range(post: Any, term: Any) -> np.ndarray:
    """SD range on the engine's scale (slopes' SDs are reported divided by the column scale)."""
    rng = _sd_range_from(post, term)
    zs = getattr(term.group, "z_scale", None)
    if zs is not None:
        rng = rng * np.asarray(zs, dtype=float)[:, None]
    return rng


def _next_remedy(
    diag: Diagnosis, fit: Fit, spec: ModelSpec, config: SamplerConfig,
    policy: RepairPolicy, state: _State,
) -> tuple[ModelSpec, SamplerConfig, str, str] | None:
    """(spec, config, action label, reason) for the next attempt, or None when nothing is left."""
    codes = {f.code for f in diag.errors}
    geometry = bool(codes & {"divergences", "bfmi"})
    stuck = bool(codes & {"nonfinite", "rhat_undefined"})
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
            what = "divergent transitions remain" if geometry else "draws are stuck or non-finite"
            return (spec, replace(config, target_accept=ta), f"target_accept {ta:g}",
                    f"{what}; a higher target_accept ({config.target_accept:g} -> {ta:g}) "
                    "takes smaller steps")
    # more tuning (and draws, when the effective sample size is short)
    tune = min(config.tune * policy.tune_factor, policy.max_tune) if config.tune else 1000
    short = bool(codes & {"ess_bulk", "ess_tail", "rhat"})
    draws = min(config.draws * policy.tune_factor, policy.max_draws) if short else config.draws
    if tune == config.tune and draws == config.draws:
        return None
    why = []
    if geometry:
        why.append("divergences remain at the highest target_accept")
    if codes & {"rhat"}:
        why.append("R-hat is above 1.01")
    if codes & {"ess_bulk", "ess_tail"}:
        why.append("the effective sample size is short")
    if stuck:
        why.append("draws are stuck")
    label = f"tune {tune}" + (f", draws {draws}" if draws != config.draws else "")
    return (spec, replace(config, tune=tune, draws=draws), f"more tuning ({label})",
            f"{' and '.join(why) or 'diagnostics fail'}; more tuning"
            + (" and draws" if draws != config.draws else "") + " for adaptation and mixing")


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
        why = ("divergent transitions that could not be localised; centered levels are the "
               "usual cause")
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
    few = {f.parameters[0] for f in final.findings if f.code == "few_levels" and f.parameters}
    dominated = {f.parameters[0] for f in final.findings
                 if f.code in ("prior_dominated", "prior_sensitive") and f.parameters}
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
            "so the between-group variation can be hidden (the seed's half_normal(0.1) forced "
            "sigma to about 0.08). Only use it if you hold that belief before seeing the data; "
            "poolwise never tightens a prior by itself."
        )
    for name in sorted((few | dominated) - seen):
        out.append(
            f"{name} is shaped by its prior (few levels or prior-sensitive): report it with its "
            "prior, and check how it changes under another reasonable prior rather than "
            "tightening it to make sampling easier."
        )
    return tuple(out)


def repair_fit(
    spec: ModelSpec,
    config: SamplerConfig,
    *,
    policy: RepairPolicy | None = None,
    repair: bool = True,
    log_likelihood: bool = True,
    target_accept_given: bool = True,
    pilot: bool = True,
) -> Fit:
    """Fit ``spec``; while the diagnosis fails, apply the next remedy and fit again.

    ``repair=False`` makes one attempt. ``target_accept_given=False`` lets the ``auto`` rule
    raise the first attempt's target_accept. The returned Fit carries the final attempt's draws,
    its full diagnosis (with prior sensitivity when ``log_likelihood``) and the
    :class:`RepairLog` in ``repair_log``.
    """
    from poolwise.fit import sample_spec, with_log_likelihood

    policy = policy or RepairPolicy()
    t_start = time.perf_counter()
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
        with warnings.catch_warnings():
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
        else:
            remedy = _next_remedy(diag, current, spec, config, policy, state)
            if remedy is None:
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
    final = with_log_likelihood(current) if log_likelihood else current
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
