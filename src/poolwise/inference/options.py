"""The options of a fit, in one place: :class:`FitOptions` (what :func:`poolwise.fit`,
:func:`poolwise.compare_pooling` and the command line share), :class:`CompareOptions` (what a
comparison adds), and :data:`OPTIONS`, the table that describes each of them once: its
group, its meaning and its command-line flag.

Every value is checked when the options are made, before any data is read or anything is
sampled: an out-of-range or unknown value is a :class:`~poolwise.errors.SpecError` that names
the setting and the fix. :func:`check_against_formula` then checks what needs the formula but
not the data (a pooling that needs a group term, a prior that matches no parameter of the
model). The random seed is drawn in one place (:meth:`FitOptions.with_seed`), so a fit and a
comparison record the seed they used the same way.

``tests/test_options.py`` fails when :func:`poolwise.fit`, :func:`poolwise.compare_pooling` or
a subcommand of the command line lacks an option of this table, or has another default than
the table says (the command line's context-dependent defaults are listed in it, each with
its reason).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

import numpy as np

from poolwise.data.validate import source_role, weights_used_message
from poolwise.data.weights import KINDS as WEIGHTS_KINDS
from poolwise.engine.sampler import SamplerConfig
from poolwise.errors import SpecError
from poolwise.formula import Formula, parse_formula
from poolwise.inference.repair import DEFAULT_TARGET_ACCEPT, RepairPolicy
from poolwise.model import links
from poolwise.model.parameterization import PARAMETERIZATIONS
from poolwise.model.priors import Priors
from poolwise.model.spec import check_family

__all__ = [
    "OPTIONS",
    "CompareOptions",
    "FitOptions",
    "Option",
    "check_against_formula",
    "check_comparison",
    "fresh_seed",
    "resolved_pooling",
]

POOLINGS: tuple[str, ...] = ("partial", "none", "complete")
#: the methods of a fit (poolwise.inference.approx.METHODS, without importing it here)
METHODS: tuple[str, ...] = ("nuts", "approx")
INTERVALS: tuple[str, ...] = ("hdi", "eti")


@dataclass(frozen=True)
class Option:
    """One option: its keyword, the group it belongs to (how help lists it), its meaning,
    its command-line flag (None: not on the command line) and, where the command line
    decides the default from its context, that default and why."""

    name: str
    group: Literal["data", "model", "priors", "sampler", "checks", "comparison", "output"]
    help: str
    flag: str | None
    cli_default: str | None = None  # "auto: ..." where the command line's default differs


#: every option of a fit and a comparison, once
OPTIONS: tuple[Option, ...] = (
    Option("success", "data", "the outcome value that counts as a success (e.g. yes) for a "
           "0/1 outcome stored as two other values", "--success"),
    Option("drop_missing", "data", "drop rows with a missing value in a model column (each "
           "reported) instead of stopping", "--drop-missing"),
    Option("offset", "data", "a known per-row addition to the linear predictor: a column or an "
           "expression of columns, e.g. log(exposure) (the same as + offset(log(exposure)) in "
           "the formula), or (API) one value per row", "--offset"),
    Option("weights", "data", "a column of row weights: whole numbers are frequency weights "
           "(a row of weight w stands for w identical rows, exactly); survey weights need "
           "weights_kind='survey'", "--weights"),
    Option("weights_kind", "data", "what the weights are: frequency (the default when every "
           "weight is a whole number) or survey (each row's log-likelihood times its weight, "
           "scaled to sum to the rows: a pseudo-likelihood with model-based, not design-based "
           "intervals, and no LOO)", "--weights-kind"),
    Option("reference", "data", "reference level of a categorical predictor, e.g. urban=0 "
           "(default: the first level)", "--reference"),
    Option("pooling", "model", "partial: group effects from a fitted population (multilevel); "
           "none: independent per-group intercepts; complete: groups ignored (default: partial "
           "where the formula has a group term, else complete)", "--pooling"),
    Option("link", "model", "link function of the success probability", "--link"),
    Option("family", "model", "the outcome's distribution given the success probability: "
           "binomial, or beta_binomial for overdispersed counts (rows of several trials that "
           "spread more than the binomial; precision phi)", "--family"),
    Option("parameterization", "model", "centered, noncentered or auto (data-rich levels "
           "centered), for every group term or per term as GROUP=KIND", "--parameterization"),
    Option("standardize", "model", "sample with numeric predictors scaled by their SD and the "
           "fixed columns centered, so the default priors fit any units (results are always "
           "on the original scale)", "--no-standardize"),
    Option("priors", "priors", "priors by class: intercept, b, sd, cor, unpooled, phi or "
           "sd_<group>, e.g. sd=half_normal(0.5)", "--prior"),
    Option("method", "sampler", "nuts: sample the posterior with NUTS; approx: a fast "
           "deterministic approximation checked against the exact posterior of the fixed "
           "effects and group SDs (one grouping factor with a varying intercept and up to two "
           "slopes, binomial; a "
           "fit that fails its check is NOT OK: refit with nuts)", "--method"),
    Option("check_against_nuts", "checks", "with method approx: also run a short NUTS (4 "
           "chains x 500 tuning + 500 draws) of the same model and compare: the largest "
           "difference of posterior means in NUTS sds (population-level parameters, group "
           "effects) and the ratio of sds; the fit is NOT OK beyond 0.15 (population) or 0.25 "
           "(95th percentile of groups)", "--check"),
    Option("chains", "sampler", "number of NUTS chains", "--chains"),
    Option("tune", "sampler", "warm-up draws per chain (discarded)", "--tune"),
    Option("draws", "sampler", "kept draws per chain", "--draws"),
    Option("seed", "sampler", "random seed (default: drawn once and recorded)", "--seed"),
    Option("target_accept", "sampler", "NUTS target acceptance rate (default 0.8, or 0.95 / "
           "0.99 when the auto parameterization predicts a funnel)", "--target-accept"),
    Option("max_treedepth", "sampler", "maximum NUTS tree depth", "--max-treedepth"),
    Option("cores", "sampler", "chains run in parallel on this many cores (default: one per "
           "chain, at most the CPU count)", "--cores"),
    Option("progress", "sampler", "show what the run is doing: the phases (pilot, each repair "
           "attempt, sampling, LOO, the report) and the sampler's progress with the time left; "
           "in Python, nutpie's progress bar", "--progress",
           cli_default="on (standard error: a live line in a terminal, plain lines every 10%% "
           "or 10 s in a file or a pipe); --quiet or --no-progress turn it off"),
    Option("engine", "sampler", "how nutpie calls the density: compiled callbacks (cfunc) or "
           "a Python function (pyfunc, for debugging)", "--engine"),
    Option("repair", "checks", "re-fit a failing model with remedies (non-center the culprit "
           "term, a higher target_accept, longer tuning); priors are never changed",
           "--repair"),
    Option("strict", "checks", "raise an error instead of a warning when the fit fails its "
           "diagnostics", None),  # the command line's exit code 1 says it already
    Option("prior_check", "checks", "simulate group proportions from the priors and warn when "
           "they pile up near 0 or 1", "--no-prior-check"),
    Option("prior_sensitivity", "checks", "power-scaling prior sensitivity of the intercept, "
           "coefficients and group SDs", "--prior-sensitivity",
           cli_default="run when its findings are printed or saved, i.e. not for --quiet "
           "with neither --out nor --report"),
    Option("log_likelihood", "checks", "keep the pointwise log-likelihood (per row pattern and "
           "draw) with the draws", "--log-likelihood",
           cli_default="off: fit.nc keeps the draws and the design, from which LOO recomputes "
           "it exactly; --log-likelihood stores it for other ArviZ tools"),
    Option("group", "comparison", "the grouping factor to compare (default: the only one)",
           "--group"),
    Option("prob", "output", "probability mass of the intervals, strictly between 0 and 1",
           "--prob"),
    Option("kind", "output", "highest-density (hdi) or equal-tailed (eti) intervals",
           "--interval"),
    Option("loo", "comparison", "row-level PSIS-LOO of the three models (a new observation in "
           "an existing group)", "--no-loo"),
    Option("logo", "comparison", "leave-one-group-out (a new group): exact refits where needed "
           "(True), PSIS only ('psis') or none (False)", "--logo"),
    Option("kfold", "comparison", "grouped K-fold cross-validation with K folds of groups "
           "(stratified by size; for many groups, or where PSIS leave-one-group-out is "
           "unreliable)", "--kfold"),
)


def fresh_seed() -> int:
    """A random seed, drawn from the operating system's entropy: the one way poolwise picks
    a seed when none is given (it is then recorded with the result)."""
    return int(np.random.SeedSequence().generate_state(1)[0])


def _bool(name: str, v: Any) -> None:
    if not isinstance(v, bool | np.bool_):
        raise SpecError(f"{name} must be True or False; got {v!r}")


def _choice(name: str, v: Any, allowed: tuple[str, ...]) -> None:
    if v not in allowed:
        import difflib

        close = difflib.get_close_matches(str(v), allowed, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise SpecError(f"{name} must be one of {', '.join(allowed)}; got {v!r}{hint}")


@dataclass(frozen=True)
class FitOptions:
    """Every option of a fit, checked when made (see the module docstring). The keywords of
    :func:`poolwise.fit`; :func:`poolwise.compare_pooling` takes them too."""

    pooling: Literal["partial", "none", "complete"] | None = None
    parameterization: Any = "auto"
    priors: Priors | None = None
    link: str = "logit"
    success: Any = None
    drop_missing: bool = False
    chains: int = 4
    tune: int = 1000
    draws: int = 1000
    seed: int | None = None
    target_accept: float | None = None
    max_treedepth: int = 10
    cores: int | None = None
    progress: bool = False
    engine: Literal["cfunc", "pyfunc"] = "cfunc"
    log_likelihood: bool = True
    prior_sensitivity: bool = True
    strict: bool = False
    repair: bool | RepairPolicy = True
    standardize: bool = True
    reference: Mapping[str, Any] | None = None
    prior_check: bool = True
    offset: Any = None
    family: Literal["binomial", "beta_binomial"] = "binomial"
    weights: str | None = None
    weights_kind: Literal["frequency", "survey"] | None = None
    method: Literal["nuts", "approx"] = "nuts"
    check_against_nuts: bool = False

    def __post_init__(self) -> None:
        _choice("method", self.method, METHODS)
        _bool("check_against_nuts", self.check_against_nuts)
        if self.check_against_nuts and self.method != "approx":
            raise SpecError(
                f"check_against_nuts (--check) compares method='approx' with a short NUTS run; "
                f"with method={self.method!r} there is nothing to check: drop it, or add "
                "method='approx' (--method approx)")
        if self.pooling is not None:
            _choice("pooling", self.pooling, POOLINGS)
        links.get(self.link)  # SpecError naming the known links
        check_family(self.family)
        self._check_parameterization()
        if self.priors is not None and not isinstance(self.priors, Priors):
            raise SpecError(
                f"priors must be poolwise.Priors(...), e.g. Priors(sd='half_normal(0.5)'); "
                f"got {self.priors!r}"
            )
        for name in ("drop_missing", "progress", "log_likelihood", "prior_sensitivity",
                     "strict", "standardize", "prior_check"):
            _bool(name, getattr(self, name))
        if not isinstance(self.repair, bool | RepairPolicy):
            raise SpecError(f"repair must be True, False or a RepairPolicy; got {self.repair!r}")
        if self.reference is not None and not isinstance(self.reference, Mapping):
            raise SpecError(f"reference maps a categorical predictor to its reference level, "
                            f"e.g. {{'urban': 0}}; got {self.reference!r}")
        self._check_weights()
        self.sampler_config()  # chains, tune, draws, seed, target_accept, ... (SpecError)

    def _check_weights(self) -> None:
        w = self.weights
        if w is not None and (not isinstance(w, str) or not w.strip()):
            raise SpecError(f"weights names the column of row weights, e.g. weights='w' "
                            f"(--weights w); got {w!r}")
        if self.weights_kind is not None:
            _choice("weights_kind", self.weights_kind, WEIGHTS_KINDS)
            if w is None:
                raise SpecError(
                    f"weights_kind={self.weights_kind!r} says what the weights are, but no "
                    "weights column is given; pass weights='COL' (--weights COL)")

    def _check_parameterization(self) -> None:
        p = self.parameterization
        values = list(p.values()) if isinstance(p, Mapping) else [p]
        for v in values:
            _choice("parameterization", v, PARAMETERIZATIONS)

    def sampler_config(self) -> SamplerConfig:
        """The sampler settings (target_accept: the default where none is given)."""
        return SamplerConfig(
            chains=self.chains, tune=self.tune, draws=self.draws, seed=self.seed,
            target_accept=DEFAULT_TARGET_ACCEPT if self.target_accept is None
            else self.target_accept,
            max_treedepth=self.max_treedepth, cores=self.cores, progress=self.progress,
            engine=self.engine,
        )

    def with_seed(self) -> FitOptions:
        """These options with a seed: the given one, or one drawn now (:func:`fresh_seed`)."""
        return self if self.seed is not None else replace(self, seed=fresh_seed())

    @property
    def repair_policy(self) -> RepairPolicy:
        return self.repair if isinstance(self.repair, RepairPolicy) else RepairPolicy()

    def keywords(self) -> dict[str, Any]:
        """The options as keyword arguments of :func:`poolwise.fit`."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class CompareOptions:
    """What a comparison of pooling strategies adds to :class:`FitOptions`, checked when made."""

    group: str | None = None
    prob: float = 0.89
    kind: Literal["hdi", "eti"] = "hdi"
    loo: bool = True
    logo: bool | Literal["psis"] = True
    kfold: int | None = None
    fit: FitOptions = field(default_factory=FitOptions)

    def __post_init__(self) -> None:
        if self.group is not None and not isinstance(self.group, str):
            raise SpecError(f"group names a grouping factor; got {self.group!r}")
        p = self.prob
        if isinstance(p, bool) or not isinstance(p, float | int) or not 0.0 < p < 1.0:
            raise SpecError(f"prob must lie strictly between 0 and 1 (e.g. 0.89, not 89); "
                            f"got {p!r}")
        _choice("kind", self.kind, INTERVALS)
        _bool("loo", self.loo)
        if self.logo not in (True, False, "psis"):
            raise SpecError(f"logo must be True, False or 'psis'; got {self.logo!r}")
        k = self.kfold
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 2):
            raise SpecError(f"kfold must be a whole number >= 2 (folds of groups); got {k!r}")


def check_comparison(options: FitOptions) -> None:
    """What a comparison of pooling strategies does not take of a fit's options, refused before
    the data are read: ``check_against_nuts`` (three short NUTS runs; a model is checked on
    its own)."""
    if options.check_against_nuts:
        raise SpecError(
            "a comparison of pooling strategies does not take check_against_nuts (--check): "
            "check one of its models against NUTS on its own, e.g. poolwise fit DATA -f "
            "FORMULA --method approx --check --pooling none (in Python: poolwise.fit(..., "
            "method='approx', check_against_nuts=True, pooling='none'))")


def check_against_formula(options: FitOptions, formula: str | Formula, *,
                          poolings: tuple[str, ...] | None = None) -> Formula:
    """What needs the formula but not the data, checked before the data are read: a pooling
    that needs a group term, and every prior given for a class of parameters the model has.
    ``poolings``: the models that share these options (a comparison fits all three; a prior
    must apply in at least one of them). Returns the parsed formula."""
    f = formula if isinstance(formula, Formula) else parse_formula(formula)
    poolings = (resolved_pooling(options, f),) if poolings is None else poolings
    groups = [g.group_name for g in f.groups]
    pooled = [p for p in poolings if p != "complete"]
    if pooled and not groups:
        raise SpecError(
            f"pooling={pooled[0]!r} pools group effects, but the formula {f.text!r} has no "
            "group term; add one such as (1 | group), or use pooling='complete' "
            "(--pooling complete) for a single-level model"
        )
    if options.priors is not None:
        _check_priors(options.priors, f, groups, poolings, options.family)
    if options.weights is not None and options.weights in f.source_columns:  # [R.23]
        raise SpecError(weights_used_message(options.weights,
                                             source_role(f, options.weights)))
    return f


def resolved_pooling(options: FitOptions, formula: Formula) -> str:
    """The pooling asked for, or by default partial where the formula has a group term and
    complete (a single-level model) where it has none."""
    if options.pooling is not None:
        return options.pooling
    return "partial" if formula.groups else "complete"


def _parameters(f: Formula, groups: list[str], pooling: str, family: str) -> dict[str, bool]:
    """Which prior classes have a parameter in the model of ``f`` under ``pooling``."""
    return {
        "phi": family == "beta_binomial",
        "intercept": f.intercept,
        "b": bool(f.terms) and not (pooling == "none" and _all_unpooled(f)),
        "sd": pooling == "partial" and bool(groups),
        "cor": pooling == "partial" and any(
            g.correlated and len(g.coef_names) > 1 for g in f.groups),
        "unpooled": pooling == "none" and bool(groups),
    }


_NO_PARAMETER = {
    "intercept": "the formula has no intercept (0 + ... or - 1)",
    "b": "the model has no fixed coefficient (no predictor outside the group terms)",
    "sd": "group SDs are estimated only with pooling='partial' and a group term",
    "cor": "the model has no correlated varying slopes (1 + x | g) under partial pooling",
    "unpooled": "unpooled group intercepts exist only with pooling='none'",
    "phi": "phi is the beta-binomial's precision (family='beta_binomial')",
}


def _check_priors(priors: Priors, f: Formula, groups: list[str],
                  poolings: tuple[str, ...], family: str) -> None:
    has = [_parameters(f, groups, p, family) for p in poolings]
    shown = "/".join(poolings)
    for name in priors.given():
        if name.startswith("sd_"):
            g = name[3:]
            if g not in groups:
                import difflib

                close = difflib.get_close_matches(g, groups, n=1)
                hint = f"did you mean sd_{close[0]}? " if close else ""
                have = ", ".join(groups) if groups else "none (the formula has no group term)"
                raise SpecError(f"prior sd_{g} names no grouping factor of the formula; {hint}"
                                f"its grouping factors are: {have}")
            if "partial" not in poolings:
                raise SpecError(f"a prior is given for sd_{g}, but {_NO_PARAMETER['sd']} "
                                f"(pooling={shown!r}); drop it")
            continue
        if not any(h[name] for h in has):
            raise SpecError(
                f"a prior is given for {name!r}, but {_NO_PARAMETER[name]}: it would apply to "
                f"nothing (pooling={shown!r}, formula {f.text!r}); drop it"
            )


def _all_unpooled(f: Formula) -> bool:
    """Under no pooling every fixed term that a group term also varies is unpooled."""
    varied = {c for g in f.groups for c in g.coef_names}
    return all(t.name in varied for t in f.terms)
