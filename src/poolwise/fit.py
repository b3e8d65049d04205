"""The public fit pipeline: formula + data -> ModelSpec -> nutpie -> Fit.

:func:`fit` builds the model, checks the run and hands it to the repair loop
(:mod:`poolwise.repair`), which samples with :mod:`poolwise.sampling`. ``Fit``,
``sample_spec``, ``with_log_likelihood`` and ``versions`` live in :mod:`poolwise.sampling`
and are re-exported here.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, Literal

import numpy as np

from poolwise.engine.sampler import EngineKind, SamplerConfig
from poolwise.errors import ConvergenceWarning, SamplingError
from poolwise.formula import Formula
from poolwise.model import Link, Parameterization, Pooling, build_model
from poolwise.priors import Priors
from poolwise.repair import DEFAULT_TARGET_ACCEPT, RepairPolicy, repair_fit
from poolwise.sampling import Fit, sample_spec, versions, with_log_likelihood
from poolwise.plan import check_run, memory_plan

__all__ = ["Fit", "fit", "sample_spec", "versions", "with_log_likelihood"]

IntervalKind = Literal["hdi", "eti"]


def _ladder_draws(policy: RepairPolicy, draws: int, repair: bool) -> int:
    """The most draws per chain that any attempt of the repair ladder can use
    (:func:`poolwise.repair._next_remedy` multiplies them by ``tune_factor`` per attempt, up
    to ``max_draws``)."""
    if not repair or policy.max_attempts <= 1:
        return draws
    grown = draws * policy.tune_factor ** (policy.max_attempts - 1)
    return max(draws, min(grown, policy.max_draws))


def fit(
    formula: str | Formula,
    data: Any,
    *,
    pooling: Pooling = "partial",
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
    strict: bool = False,
    repair: bool | RepairPolicy = True,
    standardize: bool = True,
    reference: Mapping[str, Any] | None = None,
    prior_check: bool = True,
    offset: Any = None,
) -> Fit:
    """Fit a multilevel binomial regression.

    ``formula`` uses the lme4 / brms grammar (``y ~ 1 + (1 | g)``, ``cbind(s, f) ~ ...``,
    ``s | trials(n) ~ ...``); ``data`` is a path (CSV/Parquet), a pandas or polars frame, or,
    for data too large for pandas, a glob of Parquet files, a DuckDB relation or a Spark
    DataFrame (validated and aggregated in DuckDB / Spark: :mod:`poolwise.ingest`).
    All input is validated before anything is sampled. The returned :class:`Fit` is ``ok``
    only if the diagnostics pass; otherwise a :class:`ConvergenceWarning` is emitted (or, with
    ``strict=True``, :class:`SamplingError` raised).

    ``parameterization="auto"`` (default) picks centered or non-centered per group level from
    a short pilot run (:func:`poolwise.parameterization.choose_parameterization`). ``target_accept``
    defaults to 0.8, or 0.95 / 0.99 when the auto rule predicts a funnel that no
    parameterization removes; a value you pass is used as given for the first attempt.
    ``repair`` (default True; or a :class:`~poolwise.repair.RepairPolicy` with the budget)
    re-fits a failing model with remedies in order: non-center the culprit term, raise
    target_accept (0.9, 0.95, 0.99), tune longer. Priors are never changed. The journal is ``fit.repair_log``; a fit that
    is still failing when the budget is spent is not ok.

    ``standardize`` (default True) samples with numeric predictors scaled by their SD and the
    fixed-effect columns centered, so the default priors fit any units; every result is
    reported on the original scale (``Intercept``: log-odds at all predictors = 0; see
    :mod:`poolwise.design`). ``reference={"col": level}`` sets a categorical predictor's
    reference level. ``offset`` is a known per-row addition to the linear predictor: an
    expression of columns (``"log(exposure)"``, the same as ``+ offset(log(exposure))`` in the
    formula) or one value per data row. ``prior_check`` simulates group proportions from the priors and warns
    (:class:`DataWarning`) when they pile up near 0 or 1 (:mod:`poolwise.prior_predictive`).
    """
    if seed is None:
        seed = int(np.random.SeedSequence().entropy % (2**32))
    config = SamplerConfig(
        chains=chains, tune=tune, draws=draws, seed=seed,
        target_accept=DEFAULT_TARGET_ACCEPT if target_accept is None else target_accept,
        max_treedepth=max_treedepth, cores=cores, progress=progress, engine=engine,
    )
    policy = repair if isinstance(repair, RepairPolicy) else RepairPolicy()
    t0 = time.perf_counter()
    spec = build_model(
        formula, data, pooling=pooling, link=link, priors=priors,
        parameterization=parameterization, success=success, drop_missing=drop_missing,
        standardize=standardize, reference=reference, offset=offset,
    )
    build_s = time.perf_counter() - t0
    # before anything samples (the pilot run included): flat priors on separated data,
    # memory for the draws (errors), weak settings (warnings, kept in Fit.warnings)
    run_warnings = check_run(spec, config, log_likelihood=log_likelihood)
    # the memory plan covers the repair ladder: cap its draws at what fits (the first attempt
    # fits, check_run says so), so a repair attempt can never run out of memory
    plan = memory_plan(spec, config, log_likelihood=log_likelihood,
                       max_draws=_ladder_draws(policy, draws, bool(repair)))
    if plan.available is not None and plan.ladder > plan.available and plan.draws_that_fit:
        policy = replace(policy, max_draws=max(draws, min(policy.max_draws, plan.draws_that_fit)))
    prior_warnings: tuple[str, ...] = ()
    if prior_check:
        from poolwise.prior_predictive import check_prior_predictive

        pp = check_prior_predictive(spec, seed=seed % (2**32), stacklevel=2)
        prior_warnings = () if pp.ok else (pp.message,)
    result = repair_fit(
        spec, config, policy=policy, repair=bool(repair), log_likelihood=log_likelihood,
        target_accept_given=target_accept is not None,
    )
    if prior_check:
        result.idata.attrs["poolwise_prior_predictive"] = json.dumps(pp.to_dict())
    if run_warnings or prior_warnings:
        result = replace(
            result, warnings=tuple(dict.fromkeys(result.warnings + run_warnings + prior_warnings))
        )
    result.timings["build_s"] = build_s
    result.timings["total_s"] += build_s
    _report_status(result, strict)
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
        stacklevel=3,
    )
