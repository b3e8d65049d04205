"""The ``result.json`` contract: a fit's results as plain JSON that scripts rely on."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from poolwise.inference.repair import RepairLog
from poolwise.inference.summary import interval_columns, summary
from poolwise.model.describe import priors_by_parameter, scaling_dict

if TYPE_CHECKING:
    from poolwise.inference.fitted import Fit

__all__ = ["result_dict"]


def _approx_check(fit: Fit) -> dict[str, Any] | None:
    """The numbers of an approximate fit's self-check (None for NUTS)."""
    text = fit.idata.attrs.get("poolwise_approx")
    return json.loads(text) if text else None


def _priors(spec: Any) -> dict[str, str]:
    """The priors by class; ``phi`` only where the family has it."""
    out = spec.priors.to_dict()
    if spec.family != "beta_binomial":
        out.pop("phi")
    return out


def result_dict(
    fit: Fit,
    *,
    prob: float = 0.89,
    kind: Literal["hdi", "eti"] = "hdi",
    table: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """The stable ``result.json`` contract that scripts rely on.

    Parameters
    ----------
    fit : Fit
        The fit to describe.
    prob : float, default 0.89
        Probability mass of the intervals, strictly between 0 and 1.
    kind : {"hdi", "eti"}, default "hdi"
        Highest-density (``"hdi"``) or equal-tailed (``"eti"``) intervals.
    table : pandas.DataFrame or None, default None
        The :func:`summary` of ``fit`` at ``prob`` / ``kind`` when the caller has computed it
        already; computed here when None.

    Returns
    -------
    dict[str, Any]
        JSON-serialisable result: ``formula``, ``pooling``, ``link``, ``priors``,
        ``settings``, ``interval``, ``data``, ``diagnostics``, ``repair``, ``warnings``,
        ``parameters`` (one entry per summary row: ``mean``, ``sd``, the interval under the
        names of the summary's columns, ``hdi_89_lower`` and ``hdi_89_upper``, ``ess_bulk``,
        ``r_hat``), ``timings`` and more.

    Raises
    ------
    SpecError
        When ``prob`` is not strictly between 0 and 1 (from :func:`summary`).
    """
    df = table if table is not None else summary(fit, prob=prob, kind=kind)
    d = fit.diagnosis
    # column by column (a row at a time cost 17 s with 10^5 group levels: pandas copies the
    # table's attributes into every row)
    keys = ("mean", "sd", *interval_columns(prob, kind), "ess_bulk", "r_hat")
    cols = [_finite_list(df[k].to_numpy(dtype=float)) for k in keys]
    params = {
        str(name): dict(zip(keys, values, strict=True))
        for name, *values in zip(df.index, *cols, strict=True)
    }
    return {
        "formula": fit.spec.formula.text,
        "pooling": fit.spec.pooling,
        "link": fit.spec.link,
        "family": fit.spec.family,
        "parameterization": fit.spec.parameterization_by_term(),
        "priors": _priors(fit.spec),
        "priors_by_parameter": priors_by_parameter(fit.spec),
        "scaling": _scaling_with_draws(fit),
        "prior_predictive": _prior_predictive(fit),
        "method": fit.method,
        "approx_check": _approx_check(fit),
        "settings": fit.config.to_dict(),
        "interval": {"prob": prob, "kind": kind},
        "data": {
            "source": fit.spec.design.source,
            "sha256": fit.spec.design.data_sha256,
            "rows": fit.spec.design.n_rows,
            "cells": fit.spec.design.n_cells,
            # the weights (column, kind, totals; survey: the caveat), None without
            "weights": _weights(fit),
        },
        "diagnostics": {
            "divergences": d.divergences,
            "max_rhat": _f(d.max_rhat),
            "min_ess_bulk": _f(d.min_ess_bulk),
            "min_ess_tail": _f(d.min_ess_tail),
            "ok": d.ok,
            "findings": d.to_dict()["findings"],
        },
        # the repair journal (poolwise.inference.repair): one entry per fit attempt, the last is
        # this one
        "repair": _repair_attempts(fit),
        "repair_notes": _repair_notes(fit),
        "warnings": list(fit.warnings),
        "notes": list(fit.spec.design.notes),
        "parameters": params,
        "timings": {k: round(float(v), 4) for k, v in fit.timings.items()},
    }


def _weights(fit: Fit) -> dict[str, Any] | None:
    w = fit.spec.design.weighting
    return None if w is None else w.to_dict()


def _repair_attempts(fit: Fit) -> list[dict[str, Any]]:
    log = fit.repair_log
    return log.to_list() if isinstance(log, RepairLog) else []  # a fit without repair: ()


def _repair_notes(fit: Fit) -> dict[str, Any] | None:
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


def _finite_list(a: np.ndarray) -> list[float | None]:
    """The values as Python floats, None where not finite (as :func:`_f`, for a column)."""
    ok = np.isfinite(a)
    return [v if k else None for v, k in zip(a.tolist(), ok.tolist(), strict=True)]


def _f(v: Any) -> float | None:
    v = float(v)
    return None if not np.isfinite(v) else v
