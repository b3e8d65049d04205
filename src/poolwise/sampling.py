"""Sampling one ModelSpec once: :class:`Fit`, :func:`sample_spec` and
:func:`with_log_likelihood`.

The bottom of the fitting layers: sampling (this module) -> the repair loop
(:mod:`poolwise.repair`) -> the public :func:`poolwise.fit` (:mod:`poolwise.fit`). Each
imports only the ones before it.

Import cycle: poolwise.sampling -> poolwise.summary, poolwise.report.display: ``Fit.summary``
and ``Fit``'s reprs hand over to the presentation modules, imported lazily when called.
"""

from __future__ import annotations

import functools
import json
import platform
import time
from dataclasses import dataclass, field, replace
from importlib.metadata import version
from typing import Any

import pandas as pd
import xarray as xr

from poolwise.cells import expand_rows, log_likelihood_group, observed_group
from poolwise.diagnostics import Diagnosis, diagnose, with_sensitivity
from poolwise.engine.layout import pack
from poolwise.engine.sampler import SamplerConfig, run_nuts
from poolwise.errors import SpecError
from poolwise.model import ModelSpec
from poolwise.plan import check_run, memory_plan
from poolwise.posterior import to_original_scale

__all__ = ["Fit", "sample_spec", "versions", "with_log_likelihood"]


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
    #: summary tables already computed, by (prob, kind, scale): the CLI prints the table and
    #: saves it, and with 10^4-10^5 group levels each table costs seconds
    _summaries: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        """False whenever the diagnostics do not support trusting the draws."""
        return self.diagnosis.ok

    @property
    def posterior(self) -> xr.Dataset:
        return self.idata["posterior"].to_dataset()

    def summary(self, **kwargs: Any) -> pd.DataFrame:
        """One row per parameter: mean, sd, interval, MCSE, bulk/tail ESS, R-hat.

        The same as :func:`poolwise.summary` applied to this fit.

        Parameters
        ----------
        **kwargs : Any
            Keyword arguments of :func:`poolwise.summary`: ``prob`` (default 0.89), ``kind``
            (``"hdi"`` or ``"eti"``, default ``"hdi"``) and ``scale`` (``"logit"`` or
            ``"probability"``, default ``"logit"``).

        Returns
        -------
        pandas.DataFrame
            The table, indexed by parameter name.

        Raises
        ------
        SpecError
            When ``prob`` is not strictly between 0 and 1.
        """
        from poolwise.summary import summary

        prob, kind, scale = (kwargs.get("prob", 0.89), kwargs.get("kind", "hdi"),
                             kwargs.get("scale", "logit"))
        try:
            key = (float(prob), str(kind), str(scale))
        except (TypeError, ValueError):
            return summary(self, **kwargs)  # summary() reports the bad argument
        if key not in self._summaries:
            self._summaries[key] = summary(self, **kwargs)
        return self._summaries[key].copy(deep=True)

    def __repr__(self) -> str:
        """Compact: model, data size, status, population parameters, findings (the draws are
        ``.idata``, the full table ``.summary()``)."""
        from poolwise.report.display import fit_text

        return fit_text(self)

    def _repr_html_(self) -> str:
        from poolwise.report.display import fit_html

        return fit_html(self)

    def row_level(self) -> xr.DataTree:
        """The DataTree with one entry per data row in ``observed_data`` and ``log_likelihood``.

        The fit stores them per row pattern (:mod:`poolwise.cells`); ArviZ expects them per row
        (dimension ``obs``). For small data: it holds rows x draws values.

        Returns
        -------
        xarray.DataTree
            The fit's DataTree with every per-pattern group repeated to one entry per data row
            (coordinate ``obs``: the 1-based data row numbers).

        Raises
        ------
        SpecError
            When the row-level log-likelihood (rows x draws x 8 bytes) would not fit in the
            available memory.
        """
        return expand_rows(self)


@functools.cache
def _versions() -> tuple[tuple[str, str], ...]:
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("poolwise", "nutpie", "numba", "numpy", "arviz-base", "arviz-stats", "xarray",
                "pandas"):
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
