"""The check of an approximate fit against NUTS (``method="approx"`` with
``check_against_nuts=True``, ``--method approx --check``): a short NUTS run of the same model
(the same data and spec; ``NUTS_CHAINS`` chains x ``NUTS_TUNE`` tuning + ``NUTS_DRAWS``
draws, its seed derived from the fit's, no repair) and the comparison of the two posteriors,
parameter by parameter: ``|mean_approx - mean_nuts| / sd_nuts`` for every fixed effect, the
group SD and each group's effect, and the ratio of the posterior sds of the population-level
parameters.

The numbers (:class:`~poolwise.inference.diagnostics.approx_check.NutsCheck`) are saved with
the fit's self-check (the root attribute ``poolwise_approx``, key ``against_nuts``), so a
loaded fit is judged alike; their finding is
:func:`poolwise.inference.diagnostics.approx_check.check_nuts`.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from poolwise.inference.diagnostics.approx_check import (
    APPROX_ATTR,
    NutsCheck,
    approx_rows,
    check_nuts,
)
from poolwise.model.naming import fixed_name, sd_name, total_name
from poolwise.progress import phase

if TYPE_CHECKING:
    from poolwise.inference.fitted import Fit
    from poolwise.model.spec import ModelSpec

__all__ = ["NUTS_CHAINS", "NUTS_DRAWS", "NUTS_TUNE", "check_against_nuts", "compare_posteriors",
           "nuts_seed"]

#: the short NUTS run (read when called)
NUTS_CHAINS = 4
NUTS_TUNE = 500
NUTS_DRAWS = 500
#: the stream of the fit's seed that the NUTS run's seed is drawn from (as K-fold's folds)
_SEED_STREAM = 61


def nuts_seed(seed: int) -> int:
    """The NUTS run's seed, derived from the fit's."""
    return int(np.random.SeedSequence([int(seed), _SEED_STREAM]).generate_state(1)[0])


def _short_nuts(fit: Fit) -> Fit:
    """The short NUTS run of the fit's model (no repair, no log-likelihood)."""
    from poolwise.inference.sampling import sample_spec

    config = replace(fit.config, chains=NUTS_CHAINS, tune=NUTS_TUNE, draws=NUTS_DRAWS,
                     seed=nuts_seed(int(fit.config.seed)), progress=False)
    return sample_spec(fit.spec, config, log_likelihood=False)


def _points(spec: ModelSpec, approx: xr.Dataset, nuts: xr.Dataset,
            population: list[str]) -> dict[str, list[Any]]:
    """NutsCheck.points: each compared parameter's name, whether it is a group effect, its
    mean under approx and NUTS and its NUTS sd (population-level first)."""
    dims = ("chain", "draw")
    names: list[str] = []
    group: list[bool] = []
    cols: list[list[float]] = [[], [], []]
    variables = [(v, [v], False) for v in population]
    if spec.terms:
        term = spec.terms[0]
        g = total_name(term, "Intercept")
        labels = nuts[g][term.group.name].values
        variables.append((g, [f"{g}[{lab}]" for lab in labels], True))
    for v, labels, is_group in variables:
        names += labels
        group += [is_group] * len(labels)
        for col, arr in zip(cols, (approx[v].mean(dims), nuts[v].mean(dims), nuts[v].std(dims)),
                            strict=True):
            col += [float(x) for x in np.atleast_1d(arr.values).ravel()]
    return {"name": names, "group": group, "approx_mean": cols[0], "nuts_mean": cols[1],
            "nuts_sd": cols[2]}


def _standardized(a: xr.DataArray, n: xr.DataArray) -> tuple[np.ndarray, np.ndarray]:
    """Per element: ``|mean_a - mean_n| / sd_n`` and ``sd_a / sd_n`` (flattened)."""
    dims = ("chain", "draw")
    sd_n = n.std(dims).values.ravel()
    diff = np.abs(a.mean(dims).values.ravel() - n.mean(dims).values.ravel())
    with np.errstate(divide="ignore", invalid="ignore"):
        return diff / sd_n, a.std(dims).values.ravel() / sd_n


def compare_posteriors(spec: ModelSpec, approx: xr.Dataset, nuts: xr.Dataset
                       ) -> dict[str, Any]:
    """The comparison's numbers (the fields of ``NutsCheck`` without the run's settings and
    health) from the two posteriors of ``spec`` (at most one group term, with a varying
    intercept). A part the model lacks (no group effects under complete pooling, no
    population-level parameter under no pooling of ``y ~ 1 + (1 | g)``) has 0 and an empty
    name: nothing was compared there."""
    term = spec.terms[0] if spec.terms else None
    population = [fixed_name(c) for c in spec.design.fixed_names]
    if term is not None and term.estimated:
        population.append(sd_name(term, "Intercept"))
    out: dict[str, Any] = {"population_max": 0.0, "population_name": "",
                                   "group_max": 0.0, "group_name": "", "group_p95": 0.0,
                                   "sd_ratio_min": 1.0, "sd_ratio_max": 1.0}
    if population:
        z, ratio = zip(*(_standardized(approx[v], nuts[v]) for v in population), strict=True)
        z_pop, ratio_pop = np.concatenate(z), np.concatenate(ratio)
        i = int(np.nanargmax(z_pop))
        out.update({"population_max": float(z_pop[i]), "population_name": population[i],
                    "sd_ratio_min": float(np.min(ratio_pop)),
                    "sd_ratio_max": float(np.max(ratio_pop))})
    if term is not None:
        group = total_name(term, "Intercept")
        z_group = _standardized(approx[group], nuts[group])[0]
        labels = nuts[group][term.group.name].values
        j = int(np.nanargmax(z_group))
        out.update({"group_max": float(z_group[j]), "group_name": f"{group}[{labels[j]}]",
                    "group_p95": float(np.quantile(z_group, 0.95))})
    out["points"] = _points(spec, approx, nuts, population)  # type: ignore[assignment]
    return out


def check_against_nuts(fit: Fit) -> Fit:
    """``fit`` (made by ``method="approx"``) with the check against a short NUTS run: its
    numbers saved with the self-check, its finding in the diagnosis, its time in the
    timings (``nuts_check_s``, counted in ``total_s``)."""
    t0 = time.perf_counter()
    with phase("the check against NUTS"):
        nuts = _short_nuts(fit)
        numbers = compare_posteriors(fit.spec, fit.posterior, nuts.posterior)
    d = nuts.diagnosis
    seconds = time.perf_counter() - t0
    check = NutsCheck(chains=d.chains, tune=nuts.config.tune, draws=d.draws,
                      seed=int(nuts.config.seed), divergences=int(d.divergences),
                      max_rhat=float(d.max_rhat), seconds=seconds,
                      **numbers)  # type: ignore[arg-type]
    saved = json.loads(fit.idata.attrs[APPROX_ATTR])
    saved["against_nuts"] = check.to_dict()
    fit.idata.attrs[APPROX_ATTR] = json.dumps(saved)
    findings = fit.diagnosis.findings + tuple(check_nuts(check))
    diagnosis = replace(fit.diagnosis, findings=findings,
                        approx_checks=approx_rows(saved, findings))
    timings = {**fit.timings, "nuts_check_s": seconds,
               "total_s": fit.timings["total_s"] + seconds}
    return replace(fit, diagnosis=diagnosis, timings=timings)
