"""Posterior summary tables (like the seeds' ``az.summary``) and the ``result.json`` contract."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import xarray as xr

from poolwise.naming import fixed_name, sd_name, total_name
from poolwise.posterior import inverse_link

if TYPE_CHECKING:
    from poolwise.fit import Fit

__all__ = ["summary", "result_dict", "COLUMNS", "scaling_dict", "priors_by_parameter"]

COLUMNS = ["mean", "sd", "lower", "upper", "mcse_mean", "ess_bulk", "ess_tail", "r_hat"]


def _az_summary(tree: xr.DataTree, prob: float, kind: str) -> pd.DataFrame:
    import arviz_stats as azs

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        df = azs.summary(tree, ci_prob=prob, ci_kind=kind, round_to="none")
    lb = [c for c in df.columns if c.endswith("_lb")][0]
    ub = [c for c in df.columns if c.endswith("_ub")][0]
    df = df.rename(columns={lb: "lower", ub: "upper"})
    return df[COLUMNS].astype(float)


def summary(
    fit: Fit,
    *,
    prob: float = 0.89,
    kind: Literal["hdi", "eti"] = "hdi",
    scale: Literal["logit", "probability"] = "logit",
) -> pd.DataFrame:
    """One row per parameter: mean, sd, ``prob`` interval, MCSE, bulk/tail ESS, R-hat.

    Group rows (``a_<group>[<label>]``) also carry ``n`` (trials), ``successes`` and the raw
    proportion. ``scale="probability"`` summarises the intercept and the per-group intercepts
    after the inverse link (the predicted proportion of a group at zero predictors).
    """
    if not 0.0 < prob < 1.0:
        from poolwise.errors import SpecError

        raise SpecError(f"prob must lie strictly between 0 and 1; got {prob!r}")
    spec = fit.spec
    post = fit.posterior
    if scale == "probability":
        data = {}
        if "Intercept" in post:
            data["Intercept"] = inverse_link(spec.link, post["Intercept"])
        for term in spec.terms:
            if "Intercept" in term.group.coef_names:
                name = total_name(term, "Intercept")
                data[name] = inverse_link(spec.link, post[name])
        tree = xr.DataTree.from_dict({"posterior": xr.Dataset(data)})
    else:
        tree = xr.DataTree.from_dict({"posterior": post})
    df = _az_summary(tree, prob, kind)
    df["n"] = np.nan
    df["successes"] = np.nan
    df["raw_proportion"] = np.nan
    for term in spec.terms:
        g = term.group
        for coef in g.coef_names:
            name = total_name(term, coef)
            for j, lab in enumerate(g.labels):
                key = f"{name}[{lab}]"
                if key in df.index:
                    df.loc[key, "n"] = g.level_trials[j]
                    df.loc[key, "successes"] = g.level_successes[j]
                    df.loc[key, "raw_proportion"] = g.level_successes[j] / g.level_trials[j]
    df.attrs.update({"prob": prob, "kind": kind, "scale": scale})
    df.attrs["priors"] = priors_by_parameter(spec)
    df.attrs["scaling"] = scaling_dict(spec)
    return df


def _g(v: float) -> str:
    return f"{float(v):.6g}"


def scaling_dict(spec: Any) -> dict[str, Any]:
    """How the engine rescaled the design (see :mod:`poolwise.design`) and what the reported
    ``Intercept`` means. Every reported number is on the original scale."""
    d = spec.design
    K = len(d.fixed_names)
    center = d.x_center if d.x_center is not None else np.zeros(K)
    scale = d.x_scale if d.x_scale is not None else np.ones(K)
    centered = bool(np.any(center != 0.0))
    intercept = (
        "log-odds at all predictors = 0 on their original scale (reference level of every "
        "categorical predictor)"
    )
    if "Intercept" in d.fixed_names:
        intercept += (
            "; its prior applies to the log-odds at the predictors' means (the fixed-effect "
            "columns are centered for sampling)"
            if centered
            else "; its prior applies to it directly"
        )
    return {
        "standardize": bool(d.standardize),
        "predictors": {
            v: {"center": float(c), "scale": float(sc)}
            for v, (c, sc) in d.predictor_scaling.items()
        },
        "columns": {
            fixed_name(n): {"center": float(center[k]), "scale": float(scale[k])}
            for k, n in enumerate(d.fixed_names)
            if n != "Intercept" and (center[k] != 0.0 or scale[k] != 1.0)
        },
        "intercept": intercept,
        "reference_levels": {col: _label(v) for col, v in d.reference.items()},
    }


def _label(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    return v if isinstance(v, int | float | str) else str(v)


def priors_by_parameter(spec: Any) -> dict[str, str]:
    """The prior of every population-level parameter, with the scale it applies on."""
    d = spec.design
    K = len(d.fixed_names)
    center = d.x_center if d.x_center is not None else np.zeros(K)
    scale = d.x_scale if d.x_scale is not None else np.ones(K)
    out: dict[str, str] = {}
    for k, (coef, prior) in enumerate(zip(d.fixed_names, spec.fixed_priors, strict=True)):
        text = str(prior)
        if coef == "Intercept":
            if np.any(center != 0.0):
                text += " on the intercept at the predictors' means"
        elif scale[k] != 1.0:
            text += f" per {_g(scale[k])} units of {coef} (its scale)"
        out[fixed_name(coef)] = text
    for term in spec.terms:
        g = term.group
        zs = g.z_scale if g.z_scale is not None else np.ones(g.n_coefs)
        for c, coef in enumerate(g.coef_names):
            if term.estimated:
                text = str(term.sd_priors[c])
                if zs[c] != 1.0:
                    text += f" per {_g(zs[c])} units of {coef} (its scale)"
                out[sd_name(term, coef)] = text
            else:
                out[total_name(term, coef)] = f"normal(0, {_g(term.sd_fixed[c])}) (no pooling)"
        if term.correlated:
            out[f"cor_{term.name}"] = f"lkj({_g(term.lkj_eta)})"
    return out


def result_dict(
    fit: Fit,
    *,
    prob: float = 0.89,
    kind: Literal["hdi", "eti"] = "hdi",
    table: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """The stable ``result.json`` contract that scripts rely on. ``table``: the
    :func:`summary` of ``fit`` at ``prob`` / ``kind`` when the caller has computed it already."""
    df = table if table is not None else summary(fit, prob=prob, kind=kind)
    d = fit.diagnosis
    params = {
        str(name): {
            "mean": _f(row["mean"]),
            "sd": _f(row["sd"]),
            "lower": _f(row["lower"]),
            "upper": _f(row["upper"]),
            "ess_bulk": _f(row["ess_bulk"]),
            "r_hat": _f(row["r_hat"]),
        }
        for name, row in df.iterrows()
    }
    return {
        "formula": fit.spec.formula.text,
        "pooling": fit.spec.pooling,
        "link": fit.spec.link,
        "parameterization": fit.spec.parameterization_by_term(),
        "priors": fit.spec.priors.to_dict(),
        "priors_by_parameter": priors_by_parameter(fit.spec),
        "scaling": _scaling_with_draws(fit),
        "prior_predictive": _prior_predictive(fit),
        "settings": fit.config.to_dict(),
        "interval": {"prob": prob, "kind": kind},
        "data": {
            "source": fit.spec.design.source,
            "sha256": fit.spec.design.data_sha256,
            "rows": fit.spec.design.n_rows,
            "cells": fit.spec.design.n_cells,
        },
        "diagnostics": {
            "divergences": d.divergences,
            "max_rhat": _f(d.max_rhat),
            "min_ess_bulk": _f(d.min_ess_bulk),
            "min_ess_tail": _f(d.min_ess_tail),
            "ok": d.ok,
            "findings": d.to_dict()["findings"],
        },
        # the repair journal (poolwise.repair): one entry per fit attempt, the last is this one
        "repair": _repair_attempts(fit),
        "repair_notes": _repair_notes(fit),
        "warnings": list(fit.warnings),
        "notes": list(fit.spec.design.notes),
        "parameters": params,
        "timings": {k: round(float(v), 4) for k, v in fit.timings.items()},
    }


def _repair_attempts(fit: Fit) -> list[dict[str, Any]]:
    from poolwise.repair import RepairLog

    log = fit.repair_log
    return log.to_list() if isinstance(log, RepairLog) else []  # a fit without repair: ()


def _repair_notes(fit: Fit) -> dict[str, Any] | None:
    from poolwise.repair import RepairLog

    log = fit.repair_log
    if not isinstance(log, RepairLog):
        return None
    notes = log.to_dict()
    notes.pop("attempts", None)
    return notes


def _scaling_with_draws(fit: Fit) -> dict[str, Any]:
    """:func:`scaling_dict`, plus each rescaled coefficient per unit of its scale (the scale
    its prior applies on): posterior mean and sd of ``b * scale``."""
    out = scaling_dict(fit.spec)
    post = fit.posterior
    for name, info in out["columns"].items():
        if name in post and info["scale"] != 1.0:
            v = np.asarray(post[name].values, dtype=float) * info["scale"]
            info["per_scale_unit"] = {"mean": _f(v.mean()), "sd": _f(v.std(ddof=1))}
    return out


def _prior_predictive(fit: Fit) -> dict[str, Any] | None:
    import json

    text = fit.idata.attrs.get("poolwise_prior_predictive")
    return json.loads(text) if text else None


def _f(v: Any) -> float | None:
    v = float(v)
    return None if not np.isfinite(v) else v
