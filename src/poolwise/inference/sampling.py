"""Sampling one ModelSpec once: :func:`sample_spec` and :func:`with_log_likelihood`.

The bottom of the fitting steps: sampling (this module) -> the repair loop
(:mod:`poolwise.inference.repair`) -> the public :func:`poolwise.fit`
(:mod:`poolwise.inference.fit`). Each imports only the ones before it. The result type,
:class:`~poolwise.inference.fitted.Fit`, is in :mod:`poolwise.inference.fitted`.
"""
from __future__ import annotations

import json
import time
from dataclasses import replace

import xarray as xr

from poolwise.data.patterns import observed_group
from poolwise.engine.layout import pack
from poolwise.engine.sampler import SamplerConfig, check_complete, run_nuts
from poolwise.errors import SpecError
from poolwise.inference.diagnostics import diagnose, with_sensitivity
from poolwise.inference.fitted import Fit, versions
from poolwise.inference.plan import check_run, memory_plan
from poolwise.model.likelihood import log_likelihood_group
from poolwise.model.scale import to_original_scale
from poolwise.model.spec import ModelSpec
from poolwise.progress import phase

__all__ = ["Fit", "provenance", "sample_spec", "versions", "with_log_likelihood"]








def _observed(spec: ModelSpec) -> xr.Dataset:
    """One entry per distinct row pattern (cell x outcome) with its row count
    (:mod:`poolwise.data.patterns`)."""
    return observed_group(spec.design)


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
        with phase("sampling"):
            tree, sampling_s = run_nuts(packed, config)
            # whatever sampler ran (run_nuts checks its own): a partial trace is no fit
            check_complete(tree, config)
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
        with phase("the diagnostics"):
            diagnosis = diagnose(
                idata, target_accept=config.target_accept, spec=spec, sensitivity=log_likelihood
            )
    except MemoryError:
        raise SpecError(_out_of_memory(spec, config, log_likelihood)) from None
    t2 = time.perf_counter()
    timings = {"sampling_s": sampling_s, "total_s": t2 - t0, "postprocess_s": t2 - t1}
    idata.attrs.update(provenance(spec, config))
    return Fit(
        idata, spec, config, diagnosis, timings, warnings=spec.design.warnings
    )


def _log_likelihood_group(spec: ModelSpec, post: xr.Dataset) -> xr.Dataset:
    """Per row pattern, not per row (:mod:`poolwise.data.patterns`): rows x draws would not scale,
    and
    rows of one pattern have identical values, so row-level LOO stays exact."""
    return log_likelihood_group(spec, post)


def with_log_likelihood(fit: Fit, *, group: bool = True, sensitivity: bool = True) -> Fit:
    """The fit with its ``log_likelihood`` group (per row pattern) added (when missing; not
    with ``group=False``) and its diagnosis completed with the checks that need the total
    log-likelihood (prior sensitivity of the group SDs, computed from the cells; not with
    ``sensitivity=False``)."""
    if not group and not sensitivity:
        return fit
    t0 = time.perf_counter()
    idata = fit.idata
    try:
        if group and "log_likelihood" not in idata.children:
            groups = {node.path: node.to_dataset() for node in idata.subtree if node is not idata}
            groups["/log_likelihood"] = _log_likelihood_group(fit.spec, fit.posterior)
            new = xr.DataTree.from_dict(groups)
            new.attrs.update(idata.attrs)
            idata = new
        diagnosis = (with_sensitivity(fit.diagnosis, idata, fit.spec) if sensitivity
                     else fit.diagnosis)
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


def provenance(spec: ModelSpec, config: SamplerConfig) -> dict[str, str]:
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
        # the weights' column and kind ("null" without weights)
        "poolwise_weights": json.dumps(None if d.weighting is None else
                                       {"column": d.weighting.column, "kind": d.weighting.kind}),
    }
