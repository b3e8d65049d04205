"""The public fit pipeline: formula + data -> ModelSpec -> nutpie -> Fit.

:func:`fit` builds the model, checks the run and hands it to the repair loop
(:mod:`poolwise.inference.repair`), which samples with :mod:`poolwise.inference.sampling`. ``Fit``,
``sample_spec``, ``with_log_likelihood`` and ``versions`` live in :mod:`poolwise.inference.sampling`
and are re-exported here.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, Literal

from poolwise.data.validate import emit_warnings
from poolwise.engine.sampler import EngineKind, SamplerConfig
from poolwise.errors import ConvergenceWarning, SamplingError
from poolwise.formula import Formula
from poolwise.inference.fitted import Fit, versions
from poolwise.inference.options import FitOptions, check_against_formula, resolved_pooling
from poolwise.inference.plan import check_approx_run, check_run, memory_plan
from poolwise.inference.repair import RepairPolicy, repair_fit
from poolwise.inference.sampling import sample_spec, with_log_likelihood
from poolwise.model.priors import Priors
from poolwise.model.spec import Link, Parameterization, Pooling, build_model
from poolwise.progress import announce, phase

__all__ = ["Fit", "fit", "sample_spec", "versions", "with_log_likelihood"]

IntervalKind = Literal["hdi", "eti"]


def _ladder_top(policy: RepairPolicy, start: int, cap: int, repair: bool) -> int:
    """The largest value a setting that starts at ``start`` reaches on the repair ladder:
    :func:`poolwise.inference.repair._next_remedy` multiplies tuning and draws by ``tune_factor``
    per
    attempt, up to ``cap``."""
    if not repair or policy.max_attempts <= 1:
        return start
    grown = start * policy.tune_factor ** (policy.max_attempts - 1)
    return max(start, min(grown, cap))


def _ladder_draws(policy: RepairPolicy, draws: int, repair: bool) -> int:
    """The most draws per chain that any attempt of the repair ladder can use."""
    return _ladder_top(policy, draws, policy.max_draws, repair)


def _ladder_tune(policy: RepairPolicy, tune: int, repair: bool) -> int:
    """The most tuning draws per chain that any attempt of the repair ladder can use."""
    return _ladder_top(policy, tune, policy.max_tune, repair)


def _fit_ladder(spec: Any, config: SamplerConfig, policy: RepairPolicy, log_likelihood: bool,
                available: int) -> RepairPolicy:
    """``policy`` with its largest tuning and draws capped so that every attempt of the repair
    ladder fits in ``available`` bytes (the first attempt fits: ``check_run`` says so). The
    ladder grows tuning and draws by the same factor, and nutpie holds the tuning draws too,
    so both are capped at the largest factor whose attempt fits."""
    tune, draws = config.tune, config.draws

    def capped(f: float) -> RepairPolicy:
        return replace(policy, max_tune=max(tune, min(policy.max_tune, int(tune * f))),
                       max_draws=max(draws, min(policy.max_draws, int(draws * f))))

    def fits(p: RepairPolicy) -> bool:
        plan = memory_plan(spec, config, log_likelihood=log_likelihood,
                           max_draws=_ladder_draws(p, draws, True),
                           max_tune=_ladder_tune(p, tune, True))
        return plan.ladder <= available

    lo, hi = 1.0, float(max(policy.max_tune / tune, policy.max_draws / draws, 1.0))
    for _ in range(40):  # bisection on the factor
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if fits(capped(mid)) else (lo, mid)
    return capped(lo)


def fit(
    formula: str | Formula,
    data: Any,
    *,
    pooling: Pooling | None = None,
    parameterization: Parameterization | dict[str, Parameterization] = "auto",
    priors: Priors | None = None,
    link: Link = "logit",
    success: Any = None,
    drop_missing: bool = False,
    chains: int = 4,
    tune: int = 1000,
    draws: int = 1000,
    seed: int | None = None,
    target_accept: float | None = None,
    max_treedepth: int = 10,
    cores: int | None = None,
    progress: bool = False,
    engine: EngineKind = "cfunc",
    log_likelihood: bool = True,
    prior_sensitivity: bool = True,
    strict: bool = False,
    repair: bool | RepairPolicy = True,
    standardize: bool = True,
    reference: Mapping[str, Any] | None = None,
    prior_check: bool = True,
    offset: Any = None,
    family: Literal["binomial", "beta_binomial"] = "binomial",
    weights: str | None = None,
    weights_kind: Literal["frequency", "survey"] | None = None,
    method: Literal["nuts", "approx"] = "nuts",
    check_against_nuts: bool = False,
) -> Fit:
    """Fit a multilevel binomial regression.

    All input is validated before anything is sampled. The returned :class:`Fit` is ``ok`` only
    if the diagnostics pass; otherwise a :class:`ConvergenceWarning` is emitted (or, with
    ``strict=True``, :class:`SamplingError` raised). ``repair`` re-fits a failing model; the
    journal is ``fit.repair_log``, and a fit that is still failing when the budget is spent is
    not ok. Every result is reported on the original scale (``Intercept``: log-odds at all
    predictors = 0; see :mod:`poolwise.data.design`).

    Parameters
    ----------
    formula : str or Formula
        lme4 / brms style formula (``y ~ 1 + x + (1 | g)``, ``cbind(s, f) ~ ...``,
        ``s | trials(n) ~ ...``) or one parsed by :func:`parse_formula`.
    data : str, pathlib.Path, Table, pandas.DataFrame or polars.DataFrame
        The data: a CSV/TSV/Parquet path (read with :func:`read_table`), a :class:`Table` or a
        data frame.
    pooling : {"partial", "none", "complete"} or None, default None
        Partial pooling (multilevel: group effects drawn from a fitted population), no pooling
        (independent per-group intercepts) or complete pooling (groups ignored); None means
        partial where the formula has a group term and complete where it has none. Partial or
        no pooling without a group term is an error.
    parameterization : {"auto", "centered", "noncentered"} or dict[str, str], default "auto"
        Centered or non-centered group effects, for every group term or per grouping factor
        (``{"district": "noncentered"}``); ``"auto"`` picks per term from the data (for
        :func:`fit`: from a short pilot run,
        :func:`poolwise.inference.repair.choose_parameterization`).
    priors : Priors or None, default None
        Priors by class (:class:`Priors`); None means ``Priors()``, the defaults (intercept
        normal(0, 1.5), coefficients normal(0, 1), group SDs exponential(1), correlations
        lkj(2)). Priors are never changed by repair.
    link : {"logit", "probit", "cloglog"}, default "logit"
        Link function of the success probability.
    success : Any, default None
        For a 0/1 outcome column with two other values (e.g. ``"yes"`` / ``"no"``): the value
        that counts as a success. Not needed for 0/1, True/False or count outcomes.
    drop_missing : bool, default False
        Drop rows with a missing value in a model column (reported in the notes) instead of
        raising :class:`DataError`.
    chains : int, default 4
        Number of NUTS chains.
    tune : int, default 1000
        Warm-up (adaptation) draws per chain, discarded.
    draws : int, default 1000
        Kept draws per chain.
    seed : int or None, default None
        Random seed; drawn once and recorded in the fit when None, so any run can be repeated.
    target_accept : float or None, default None
        NUTS target acceptance rate; None means 0.8, or 0.95 / 0.99 when the automatic rule
        predicts a funnel that no parameterization removes. A given value is used as is for
        the first attempt.
    max_treedepth : int, default 10
        Maximum NUTS tree depth (at most 2**max_treedepth leapfrog steps per draw).
    cores : int or None, default None
        Chains run in parallel on this many cores; None means ``min(chains, CPU count)``.
    progress : bool, default False
        Show nutpie's progress bar.
    engine : {"cfunc", "pyfunc"}, default "cfunc"
        How nutpie calls the numba density: a compiled C function (fast) or a Python
        function (for debugging).
    log_likelihood : bool, default True
        Store the pointwise log-likelihood (per cell) for LOO / model comparison.
    prior_sensitivity : bool, default True
        Run the power-scaling prior-sensitivity check of the fixed intercept, the fixed
        coefficients and the group SDs (arviz-stats' ``psense``; its findings are warnings,
        never errors). False skips it, for a caller that shows neither the findings nor saves
        the fit; :func:`poolwise.inference.sampling.with_log_likelihood` adds it later.
    strict : bool, default False
        Raise :class:`SamplingError` when the fit fails its diagnostics instead of emitting a
        :class:`ConvergenceWarning`.
    repair : bool or RepairPolicy, default True
        Re-fit a failing model with remedies in order: non-center the culprit term, raise
        target_accept (0.9, 0.95, 0.99), tune longer; a
        :class:`~poolwise.inference.repair.RepairPolicy`
        sets the budget, False fits once.
    standardize : bool, default True
        Sample with numeric predictors scaled by their SD and the fixed-effect columns centered,
        so the default priors fit any units; every result is reported on the original scale
        (see :mod:`poolwise.data.design`).
    reference : Mapping[str, Any] or None, default None
        Reference level per categorical predictor (``{"col": level}``); by default the first
        level (in category order for a pandas categorical, otherwise sorted).
    prior_check : bool, default True
        Simulate group proportions from the priors and warn (:class:`DataWarning`) when they
        pile up near 0 or 1 (:mod:`poolwise.model.prior_predictive`).
    offset : str, array-like or None, default None
        Known per-row addition to the linear predictor: an expression of columns
        (``"log(exposure)"``, the same as ``+ offset(log(exposure))`` in the formula) or one
        value per data row.
    family : {"binomial", "beta_binomial"}, default "binomial"
        The outcome's distribution given the success probability: binomial, or beta-binomial
        for overdispersed counts (rows of several trials whose spread exceeds the binomial's;
        its precision ``phi`` has the prior ``priors.phi``, default exponential(0.05)).
    weights : str or None, default None
        A column of row weights (see README "Weights"). Frequency weights (whole numbers): a
        row of weight w stands for w identical rows, exactly (every quantity equals that of
        the data with each row repeated w times). Survey weights (``weights_kind="survey"``):
        a pseudo-likelihood, each row's log-likelihood times its weight, the weights scaled
        to sum to the number of rows; its intervals are model-based, not design-based (a
        :class:`DataWarning` says so, kept in ``fit.warnings``), and row-level LOO,
        leave-one-group-out and K-fold refuse it. Missing, non-numeric, infinite, negative
        or zero weights, and a weights column the model also uses, are errors.
    weights_kind : {"frequency", "survey"} or None, default None
        What the weights are; None means frequency when every weight is a whole number (and
        an error, pointing at ``weights_kind="survey"``, when one is not).
    method : {"nuts", "approx"}, default "nuts"
        How the draws are made: NUTS, or ``"approx"``, a deterministic approximation for one
        grouping factor with a varying intercept and up to two slopes (binomial): the fixed
        effects and group SDs (and correlations) from their exact marginal posterior (each
        group's effects integrated by adaptive
        Gauss-Hermite quadrature) by importance sampling, the group effects from their
        conditional posteriors (:mod:`poolwise.inference.approx`). The fit checks itself
        (quadrature refinement, Pareto k, effective sample size) and is not ok when a check
        fails; other models raise :class:`SpecError` naming ``method="nuts"``.
    check_against_nuts : bool, default False
        With ``method="approx"`` only (otherwise a :class:`SpecError`): after the
        approximation, a short NUTS run of the same model (4 chains x 500 tuning + 500 draws,
        its seed derived from ``seed``) and the comparison of the two posteriors
        (:mod:`poolwise.inference.approx_nuts`, ``fit.nuts_check``): each parameter's
        difference of means in NUTS posterior sds and the ratio of sds. The fit is not ok when
        the population-level difference exceeds 0.15 or the 95th percentile over the group
        effects exceeds 0.25.

    Returns
    -------
    Fit
        The draws (``fit.idata``, an ArviZ DataTree), the model (``fit.spec``), the diagnosis
        (``fit.diagnosis``, ``fit.ok``), the repair journal and the warnings.

    Raises
    ------
    FormulaError
        When the formula cannot be parsed or names a column the data lack.
    DataError
        When the data cannot be read or are unusable (missing values without
        ``drop_missing=True``, an outcome that is not 0/1 or a count within its trials, ...),
        naming the column and rows.
    SpecError
        When a setting is invalid (pooling, link, priors, parameterization, sampler settings,
        memory for the draws, flat priors on separated data).
    SamplingError
        With ``strict=True``, when the fit fails its diagnostics after repair.
    """
    options = FitOptions(  # every setting is checked here, before the data are read
        pooling=pooling, parameterization=parameterization, priors=priors, link=link,
        success=success, drop_missing=drop_missing, chains=chains, tune=tune, draws=draws,
        seed=seed, target_accept=target_accept, max_treedepth=max_treedepth, cores=cores,
        progress=progress, engine=engine, log_likelihood=log_likelihood,
        prior_sensitivity=prior_sensitivity, strict=strict, repair=repair,
        standardize=standardize, reference=reference, prior_check=prior_check, offset=offset,
        family=family, weights=weights, weights_kind=weights_kind, method=method,
        check_against_nuts=check_against_nuts,
    )
    return fit_with_options(formula, data, options)


def fit_with_options(formula: str | Formula, data: Any, options: FitOptions) -> Fit:
    """:func:`fit` with its keywords as :class:`~poolwise.inference.options.FitOptions` (what
    :func:`poolwise.compare_pooling` calls for each pooling)."""
    options = options.with_seed()  # drawn once and recorded, when not given
    formula = check_against_formula(options, formula)  # before the data are read
    options = replace(options, pooling=resolved_pooling(options, formula))
    config = options.sampler_config()
    policy = options.repair_policy
    repair = bool(options.repair)
    seed = int(config.seed)  # type: ignore[arg-type]
    t0 = time.perf_counter()
    with phase("reading and checking the data"):
        spec = build_model(
            formula, data, pooling=options.pooling, link=options.link, priors=options.priors,
            parameterization=options.parameterization, success=options.success,
            drop_missing=options.drop_missing, standardize=options.standardize,
            reference=options.reference, offset=options.offset, family=options.family,
            weights=options.weights, weights_kind=options.weights_kind,
        )
    build_s = time.perf_counter() - t0
    if options.method == "approx":
        return _fit_approx(spec, config, options, build_s)
    log_likelihood = options.log_likelihood
    # before anything samples (the pilot run included): flat priors on separated data,
    # memory for the draws (errors), weak settings (warnings, kept in Fit.warnings)
    run_warnings = check_run(spec, config, log_likelihood=log_likelihood)
    # the memory plan covers the repair ladder: cap its tuning and draws at what fits (the
    # first attempt fits, check_run says so), so a repair attempt can never run out of memory
    plan = memory_plan(spec, config, log_likelihood=log_likelihood,
                       max_draws=_ladder_draws(policy, config.draws, repair),
                       max_tune=_ladder_tune(policy, config.tune, repair))
    if plan.available is not None and plan.ladder > plan.available:
        policy = _fit_ladder(spec, config, policy, log_likelihood, plan.available)
    announce(spec, config)  # the reporter's header: what will be sampled, before it is
    prior_warnings: tuple[str, ...] = ()
    if options.prior_check:
        from poolwise.model.prior_predictive import check_prior_predictive

        with phase("the prior predictive check"):
            pp = check_prior_predictive(spec, seed=seed % (2**32), stacklevel=3)
        prior_warnings = () if pp.ok else (pp.message,)
    result = repair_fit(
        spec, config, policy=policy, repair=repair, log_likelihood=log_likelihood,
        sensitivity=options.prior_sensitivity,
        target_accept_given=options.target_accept is not None,
    )
    if options.prior_check:
        result.idata.attrs["poolwise_prior_predictive"] = json.dumps(pp.to_dict())
    if run_warnings or prior_warnings:
        result = replace(
            result, warnings=tuple(dict.fromkeys(result.warnings + run_warnings + prior_warnings))
        )
    result.timings["build_s"] = build_s
    result.timings["total_s"] += build_s
    _report_status(result, options.strict)
    return result


def _prior_check(spec: Any, seed: int) -> Any:
    """The prior predictive check (its warning points at the caller of :func:`fit`)."""
    from poolwise.model.prior_predictive import check_prior_predictive

    with phase("the prior predictive check"):
        return check_prior_predictive(spec, seed=seed % (2**32), stacklevel=5)


def _fit_approx(spec: Any, config: SamplerConfig, options: FitOptions, build_s: float) -> Fit:
    """``method="approx"`` (:mod:`poolwise.inference.approx`): checked before anything runs,
    then the approximation, its self-check in the diagnosis, the prior predictive check."""
    from poolwise.inference.approx import approx_fit, check_supported

    check_supported(spec)
    # an improper posterior or too little memory: errors; fewer stored draws: a note
    plan = check_approx_run(spec, config, log_likelihood=options.log_likelihood)
    note = plan.note()
    run_warnings = () if note is None else (note,)
    if note is not None:
        emit_warnings(run_warnings, stacklevel=5)  # fit -> fit_with_options -> here
        config = replace(config, draws=plan.stored)
    announce(spec, config)
    pp = _prior_check(spec, int(config.seed)) if options.prior_check else None
    result = approx_fit(spec, config, log_likelihood=options.log_likelihood,
                        sensitivity=options.prior_sensitivity)
    if run_warnings:
        result = replace(result, warnings=tuple(dict.fromkeys(result.warnings + run_warnings)))
    if options.check_against_nuts:
        from poolwise.inference.approx_nuts import check_against_nuts

        result = check_against_nuts(result)
    if pp is not None:
        result.idata.attrs["poolwise_prior_predictive"] = json.dumps(pp.to_dict())
        if not pp.ok:
            result = replace(result, warnings=tuple(dict.fromkeys(
                result.warnings + (pp.message,))))
    result.timings["build_s"] = build_s
    result.timings["total_s"] += build_s
    _report_status(result, options.strict)
    return result


def _report_status(result: Fit, strict: bool) -> None:
    if result.ok:
        return
    problems = "; ".join(f.message for f in result.diagnosis.findings if f.severity == "error")
    log = result.repair_log
    n = len(log) if hasattr(log, "__len__") else 0
    tried = f" after {n} attempts ({getattr(log, 'stopped', '')})" if n > 1 else ""
    if strict:
        raise SamplingError(f"the fit did not pass its diagnostics{tried}: {problems}")
    warnings.warn(
        f"the fit did not pass its diagnostics{tried}, do not trust it: {problems}",
        ConvergenceWarning,
        stacklevel=4,  # fit -> fit_with_options -> here
    )
