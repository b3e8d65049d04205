"""Posterior summary tables (like the seeds' ``az.summary``) and the ``result.json`` contract."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import xarray as xr

from poolwise.engine.layout import total_name
from poolwise.posterior import inverse_link

if TYPE_CHECKING:
    from poolwise.fit import Fit

__all__ = ["summary", "result_dict", "COLUMNS"]

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
    return df


def result_dict(fit: Fit, *, prob: float = 0.89, kind: Literal["hdi", "eti"] = "hdi") -> dict[str, Any]:
    """The stable ``result.json`` contract that scripts rely on."""
    df = summary(fit, prob=prob, kind=kind)
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
        "warnings": list(fit.warnings),
        "parameters": params,
        "timings": {k: round(float(v), 4) for k, v in fit.timings.items()},
    }


def _f(v: Any) -> float | None:
    v = float(v)
    return None if not np.isfinite(v) else v
