"""The public fit pipeline: formula + data -> ModelSpec -> nutpie -> Fit."""

from __future__ import annotations

import functools
import json
import platform
import time
import warnings
from dataclasses import dataclass, field
from importlib.metadata import version
from typing import Any, Literal

import numpy as np
import pandas as pd
import xarray as xr

from poolwise.diagnostics import Diagnosis, diagnose
from poolwise.engine.layout import pack
from poolwise.engine.sampler import EngineKind, SamplerConfig, run_nuts
from poolwise.errors import ConvergenceWarning, SamplingError, SpecError
from poolwise.formula import Formula
from poolwise.model import Link, ModelSpec, Parameterization, Pooling, build_model
from poolwise.posterior import row_log_likelihood
from poolwise.priors import Priors

__all__ = ["Fit", "fit", "sample_spec", "versions"]

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
    repair_log: tuple[Any, ...] = field(default_factory=tuple)

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
    d = spec.design
    coords = {"obs": d.row_number}
    return xr.Dataset(
        {"y": ("obs", d.row_y), "trials": ("obs", d.row_n)},
        coords=coords,
    )


def sample_spec(spec: ModelSpec, config: SamplerConfig, *, log_likelihood: bool = True) -> Fit:
    """Sample one ModelSpec once (no repair); build the DataTree with provenance."""
    t0 = time.perf_counter()
    packed = pack(spec)
    tree, sampling_s = run_nuts(packed, config)
    t1 = time.perf_counter()
    groups: dict[str, xr.Dataset] = {
        "posterior": tree["posterior"].to_dataset(),
        "sample_stats": tree["sample_stats"].to_dataset(),
        "observed_data": _observed(spec),
    }
    if log_likelihood:
        ll = row_log_likelihood(spec, groups["posterior"])
        post = groups["posterior"]
        groups["log_likelihood"] = xr.Dataset(
            {"y": (("chain", "draw", "obs"), ll)},
            coords={"chain": post["chain"].values, "draw": post["draw"].values,
                    "obs": spec.design.row_number},
        )
    idata = xr.DataTree.from_dict(groups)
    diagnosis = diagnose(idata, target_accept=config.target_accept)
    t2 = time.perf_counter()
    timings = {"sampling_s": sampling_s, "total_s": t2 - t0, "postprocess_s": t2 - t1}
    idata.attrs.update(_provenance(spec, config))
    return Fit(idata, spec, config, diagnosis, timings, warnings=spec.design.warnings)


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
        "poolwise_columns_used": json.dumps(list(d.formula.columns)),
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
    target_accept: float = 0.8,
    max_treedepth: int = 10,
    cores: int | None = None,
    progress: bool = False,
    engine: EngineKind = "cfunc",
    log_likelihood: bool = True,
    strict: bool = False,
) -> Fit:
    """Fit a multilevel binomial regression.

    ``formula`` uses the lme4 / brms grammar (``y ~ 1 + (1 | g)``, ``cbind(s, f) ~ ...``,
    ``s | trials(n) ~ ...``); ``data`` is a path (CSV/Parquet), a pandas or polars frame.
    All input is validated before anything is sampled. The returned :class:`Fit` is ``ok``
    only if the diagnostics pass; otherwise a :class:`ConvergenceWarning` is emitted (or, with
    ``strict=True``, :class:`SamplingError` raised).
    """
    if seed is None:
        seed = int(np.random.SeedSequence().entropy % (2**32))
    config = SamplerConfig(
        chains=chains, tune=tune, draws=draws, seed=seed, target_accept=target_accept,
        max_treedepth=max_treedepth, cores=cores, progress=progress, engine=engine,
    )
    t0 = time.perf_counter()
    spec = build_model(
        formula, data, pooling=pooling, link=link, priors=priors,
        parameterization=parameterization, success=success, drop_missing=drop_missing,
    )
    build_s = time.perf_counter() - t0
    result = sample_spec(spec, config, log_likelihood=log_likelihood)
    result.timings["build_s"] = build_s
    result.timings["total_s"] += build_s
    _report_status(result, strict)
    return result


def _report_status(result: Fit, strict: bool) -> None:
    if result.ok:
        return
    problems = "; ".join(f.message for f in result.diagnosis.findings if f.severity == "error")
    if strict:
        raise SamplingError(f"the fit did not pass its diagnostics: {problems}")
    warnings.warn(
        f"the fit did not pass its diagnostics, do not trust it: {problems}",
        ConvergenceWarning,
        stacklevel=3,
    )
