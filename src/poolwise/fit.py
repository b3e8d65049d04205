"""The public fit pipeline: formula + data -> ModelSpec -> nutpie -> Fit."""

from __future__ import annotations

import functools
import json
import platform
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from importlib.metadata import version
from typing import Any, Literal

import numpy as np
import pandas as pd
import xarray as xr

from poolwise.cells import expand_rows, log_likelihood_group, observed_group
from poolwise.diagnostics import Diagnosis, diagnose, with_sensitivity
from poolwise.engine.layout import pack
from poolwise.engine.sampler import EngineKind, SamplerConfig, run_nuts
from poolwise.errors import ConvergenceWarning, SamplingError, SpecError
from poolwise.formula import Formula
from poolwise.model import Link, ModelSpec, Parameterization, Pooling, build_model
from poolwise.posterior import to_original_scale
from poolwise.priors import Priors
from poolwise.repair import DEFAULT_TARGET_ACCEPT, RepairPolicy, repair_fit
from poolwise.validate import check_run, memory_plan

__all__ = ["Fit", "fit", "sample_spec", "versions", "with_log_likelihood"]

IntervalKind = Literal["hdi", "eti"]


@dataclass(frozen=True, eq=False)
class Fit:
    """A fitted model: the ArviZ DataTree of draws plus everything that produced it."""

    idata: xr.DataTree
    spec: ModelSpec
    config: SamplerConfig
    diagnosis: Diagnosis
    timings: dict[str, float]
    warnings: tuple[str, ...] = ()
    #: the repair journal, a :class:`poolwise.repair.RepairLog` (iterating it yields the
    #: attempts), also for a fit loaded with :func:`poolwise.load_fit`; ``()`` without repair
    repair_log: Any = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        """False whenever the diagnostics do not support trusting the draws."""
        return self.diagnosis.ok

    @property
    def posterior(self) -> xr.Dataset:
        return self.idata["posterior"].to_dataset()

    def summary(self, **kwargs: Any) -> pd.DataFrame:
        from poolwise.summary import summary

        return summary(self, **kwargs)

    def __repr__(self) -> str:
        """Compact: model, data size, status, population parameters, findings (the draws are
        ``.idata``, the full table ``.summary()``)."""
        from poolwise.report.display import fit_text

        return fit_text(self)

    def _repr_html_(self) -> str:
        from poolwise.report.display import fit_html

        return fit_html(self)

    def row_level(self) -> xr.DataTree:
        """The DataTree with one entry per data row in ``observed_data`` and
        ``log_likelihood`` (dimension ``obs``), as ArviZ expects; the fit stores them per row
        pattern (:mod:`poolwise.cells`). For small data: it holds rows x draws values."""
        return expand_rows(self)


@functools.cache
def _versions() -> tuple[tuple[str, str], ...]:
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("poolwise", "nutpie", "numba", "numpy", "arviz-base", "arviz-stats", "xarray", "pandas"):
        try:
            out[pkg] = version(pkg)
        except Exception:  # noqa: BLE001 - not installed as a distribution
            out[pkg] = "unknown"
    return tuple(out.items())


def versions() -> dict[str, str]:
    """Versions of Python, the platform and every library that shapes the result."""
    return dict(_versions())


def _observed(spec: ModelSpec) -> xr.Dataset:
    """One entry per distinct row pattern (cell x outcome) with its row count
    (:mod:`poolwise.cells`)."""
    return observed_group(spec)


def sample_spec(spec: ModelSpec, config: SamplerConfig, *, log_likelihood: bool = True) -> Fit:
    """Sample one ModelSpec once (no repair); build the DataTree with provenance."""
    t0 = time.perf_counter()
    packed = pack(spec)
    # flat priors on separated data, memory for the draws (fit() has checked them already,
    # with the settings warnings; this covers direct callers and repaired settings)
    check_run(
        spec, config, n_params=packed.n_expanded, log_likelihood=log_likelihood,
        warn_settings=False,
    )
    try:
        tree, sampling_s = run_nuts(packed, config)
        t1 = time.perf_counter()
        groups: dict[str, xr.Dataset] = {
            # the engine samples a centered / scaled design: back to the original scale
            "posterior": to_original_scale(spec, tree["posterior"].to_dataset()),
            "sample_stats": tree["sample_stats"].to_dataset(),
            "observed_data": _observed(spec),
        }
        del tree
        if log_likelihood:
            groups["log_likelihood"] = _log_likelihood_group(spec, groups["posterior"])
        idata = xr.DataTree.from_dict(groups)
        diagnosis = diagnose(
            idata, target_accept=config.target_accept, spec=spec, sensitivity=log_likelihood
        )
    except MemoryError:
        raise SpecError(_out_of_memory(spec, config, log_likelihood)) from None
    t2 = time.perf_counter()
    timings = {"sampling_s": sampling_s, "total_s": t2 - t0, "postprocess_s": t2 - t1}
    idata.attrs.update(_provenance(spec, config))
    return Fit(
        idata, spec, config, diagnosis, timings, warnings=spec.design.warnings
    )


def _log_likelihood_group(spec: ModelSpec, post: xr.Dataset) -> xr.Dataset:
    """Per row pattern, not per row (:mod:`poolwise.cells`): rows x draws would not scale, and
    rows of one pattern have identical values, so row-level LOO stays exact."""
    return log_likelihood_group(spec, post)


def with_log_likelihood(fit: Fit, *, group: bool = True) -> Fit:
    """The fit with its ``log_likelihood`` group (per row pattern) added (when missing; not
    with ``group=False``) and its diagnosis completed with the checks that need the total
    log-likelihood (prior sensitivity of the group SDs, computed from the cells)."""
    t0 = time.perf_counter()
    idata = fit.idata
    try:
        if group and "log_likelihood" not in idata.children:
            groups = {node.path: node.to_dataset() for node in idata.subtree if node is not idata}
            groups["/log_likelihood"] = _log_likelihood_group(fit.spec, fit.posterior)
            new = xr.DataTree.from_dict(groups)
            new.attrs.update(idata.attrs)
            idata = new
        diagnosis = with_sensitivity(fit.diagnosis, idata, fit.spec)
    except MemoryError:
        raise SpecError(_out_of_memory(fit.spec, fit.config, True)) from None
    timings = dict(fit.timings)
    extra = time.perf_counter() - t0
    timings["postprocess_s"] = timings.get("postprocess_s", 0.0) + extra
    timings["total_s"] = timings.get("total_s", 0.0) + extra
    return replace(fit, idata=idata, diagnosis=diagnosis, timings=timings)


def _out_of_memory(spec: ModelSpec, config: SamplerConfig, log_likelihood: bool) -> str:
    plan = memory_plan(spec, config, log_likelihood=log_likelihood)
    return "ran out of memory after sampling; " + plan.message().replace(
        " exceeds ", " against ", 1)


def _ladder_draws(policy: RepairPolicy, draws: int, repair: bool) -> int:
    """The most draws per chain that any attempt of the repair ladder can use
    (:func:`poolwise.repair._next_remedy` multiplies them by ``tune_factor`` per attempt, up
    to ``max_draws``)."""
    if not repair or policy.max_attempts <= 1:
        return draws
    grown = draws * policy.tune_factor ** (policy.max_attempts - 1)
    return max(draws, min(grown, policy.max_draws))


def _provenance(spec: ModelSpec, config: SamplerConfig) -> dict[str, str]:
    d = spec.design
    return {
        "poolwise_formula": d.formula.text,
        "poolwise_pooling": spec.pooling,
        "poolwise_link": spec.link,
        "poolwise_parameterization": json.dumps(spec.parameterization_by_term()),
        "poolwise_priors": json.dumps(spec.priors.to_dict()),
        "poolwise_settings": json.dumps(config.to_dict()),
        "poolwise_seed": str(config.seed),
        "poolwise_versions": json.dumps(versions()),
        "poolwise_data_sha256": d.data_sha256,
        "poolwise_data_source": d.source,
        "poolwise_rows_used": str(d.n_rows),
        "poolwise_columns_used": json.dumps(list(d.formula.source_columns)),
    }


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
    a short pilot run (:func:`poolwise.repair.choose_parameterization`). ``target_accept``
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
