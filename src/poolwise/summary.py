"""Posterior summary tables (like the seeds' ``az.summary``) and the ``result.json`` contract.

Import cycle: poolwise.summary -> poolwise.repair: ``result.json`` carries the repair journal
when the fit has one (``isinstance`` of ``RepairLog``), imported lazily when called.
"""

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

__all__ = [
    "summary",
    "result_dict",
    "COLUMNS",
    "scaling_dict",
    "priors_by_parameter",
    "fmt_sig",
    "fmt_rhat",
    "format_summary",
    "summary_text",
]

COLUMNS = ["mean", "sd", "lower", "upper", "mcse_mean", "ess_bulk", "ess_tail", "r_hat"]


def _labels(name: str, v: xr.DataArray, extra: list[str]) -> list[str]:
    """ArviZ's row labels: ``a``, ``b[x]``, ``c[p, 0]``."""
    if not extra:
        return [name]
    grids = np.meshgrid(*[v[d].values for d in extra], indexing="ij")
    flat = [g.ravel() for g in grids]
    return [f"{name}[{', '.join(str(f[i]) for f in flat)}]" for i in range(len(flat[0]))]


def _known_numbers(names: list[str], known: Any) -> tuple[np.ndarray, ...]:
    out = tuple(np.full(len(names), np.nan) for _ in range(3))
    params = getattr(known, "parameters", ())
    if len(params) and len(known.rhat) == len(params):
        where = {p: i for i, p in enumerate(params)}
        rows = np.array([where.get(n, -1) for n in names], dtype=int)
        hit = rows >= 0
        for dst, src in zip(out, (known.rhat, known.ess_bulk, known.ess_tail), strict=True):
            dst[hit] = np.asarray(src, dtype=float)[rows[hit]]
    return out


def _numbers_table(
    post: xr.Dataset, prob: float, kind: str, known: Any = None
) -> pd.DataFrame:
    """The numbers of ``arviz_stats.summary`` (mean, sd, interval, MCSE, ESS, R-hat) for
    every scalar component, computed for all components at once (:mod:`poolwise.
    convergence`; equal to ArviZ's table to 1e-10, tested). One difference, on purpose: the
    tail ESS is taken at the 5% and 95% quantiles, as the diagnostics take it
    (``TAIL_PROB``), where ArviZ's table uses its interval probability (11% and 89%), so
    that the table and the verdict show the same number.

    ``known``: a :class:`poolwise.diagnostics.Diagnosis` of the same draws, whose R-hat and
    ESS are reused for the components it names with finite numbers (the others, e.g.
    constant draws, which the diagnosis marks undefined, are computed here)."""
    from poolwise import convergence as cv
    from poolwise.diagnostics import TAIL_PROB

    names: list[str] = []
    parts: list[dict[str, np.ndarray]] = []
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        for name, v, extra, start, x in cv.component_blocks(post):
            k = x.shape[0]
            if start == 0:
                labels = _labels(name, v, extra)
            names.extend(labels[start:start + k])
            parts.append(cv.table_numbers(x, prob, kind))
        table = {c: np.concatenate([p[c] for p in parts]) if parts else np.zeros(0)
                 for c in ("mean", "sd", "lower", "upper", "mcse_mean")}
        rhat, ess_b, ess_t = _known_numbers(names, known)
        todo = np.flatnonzero(~(np.isfinite(rhat) & np.isfinite(ess_b) & np.isfinite(ess_t)))
        if len(todo):  # components the diagnosis does not cover: their draws, by block
            done = 0
            for _, _, _, _, x in cv.component_blocks(post):
                k = x.shape[0]
                mine = todo[(todo >= done) & (todo < done + k)]
                if len(mine):
                    r, b, t = cv.diagnostics(x[mine - done], TAIL_PROB)
                    rhat[mine], ess_b[mine], ess_t[mine] = r, b, t
                done += k
        table.update({"ess_bulk": ess_b, "ess_tail": ess_t, "r_hat": rhat})
    return pd.DataFrame(table, index=pd.Index(names, dtype=object))[COLUMNS].astype(float)


def summary(
    fit: Fit,
    *,
    prob: float = 0.89,
    kind: Literal["hdi", "eti"] = "hdi",
    scale: Literal["logit", "probability"] = "logit",
) -> pd.DataFrame:
    """One row per parameter: mean, sd, ``prob`` interval, MCSE, bulk/tail ESS, R-hat.

    Group rows (``a_<group>[<label>]``) also carry ``n`` (trials), ``successes`` and the raw
    proportion.

    Parameters
    ----------
    fit : Fit
        The fit to summarise.
    prob : float, default 0.89
        Probability mass of the intervals, strictly between 0 and 1.
    kind : {"hdi", "eti"}, default "hdi"
        Highest-density (``"hdi"``) or equal-tailed (``"eti"``) intervals.
    scale : {"logit", "probability"}, default "logit"
        ``"probability"`` summarises the intercept and the per-group intercepts after the
        inverse link (the predicted proportion of a group at zero predictors).

    Returns
    -------
    pandas.DataFrame
        The table, indexed by parameter name.

    Raises
    ------
    SpecError
        When ``prob`` is not strictly between 0 and 1.
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
        post = xr.Dataset(data)
    df = _numbers_table(post, prob, kind, known=fit.diagnosis if scale == "logit" else None)
    df["n"] = np.nan
    df["successes"] = np.nan
    df["raw_proportion"] = np.nan
    keys: list[str] = []
    trials: list[np.ndarray] = []
    succ: list[np.ndarray] = []
    for term in spec.terms:
        g = term.group
        for coef in g.coef_names:
            name = total_name(term, coef)
            keys.extend(f"{name}[{lab}]" for lab in g.labels)
            trials.append(np.asarray(g.level_trials, dtype=float))
            succ.append(np.asarray(g.level_successes, dtype=float))
    if keys:  # one vectorized lookup, not one .loc per level (10^5 levels)
        pos = df.index.get_indexer(pd.Index(keys))
        hit = pos >= 0
        n_all, s_all = np.concatenate(trials)[hit], np.concatenate(succ)[hit]
        rows = pos[hit]
        for col, vals in (("n", n_all), ("successes", s_all), ("raw_proportion", s_all / n_all)):
            arr = df[col].to_numpy(dtype=float, copy=True)
            arr[rows] = vals
            df[col] = arr
    df.attrs.update({"prob": prob, "kind": kind, "scale": scale})
    df.attrs["priors"] = priors_by_parameter(spec)
    df.attrs["scaling"] = scaling_dict(spec)
    return df


def _g(v: float) -> str:
    return f"{float(v):.6g}"


# ---- printed form: significant digits (CSV / JSON keep full precision) ----------------------

#: significant digits per summary column in printed tables; ``None``: a whole number
DIGITS: dict[str, int | None] = {
    "mean": 3, "sd": 3, "lower": 3, "upper": 3, "mcse_mean": 2, "mcse_sd": 2,
    "ess_bulk": None, "ess_tail": None, "n": None, "successes": None, "raw_proportion": 3,
}


def fmt_sig(v: Any, digits: int | None = 3) -> str:
    """``v`` as text with ``digits`` significant digits, for people (tables, the CLI, the
    report): ``-0.00512``, ``0.392``, ``1.24``, ``1235``; ``digits=None``: a whole number.
    A nonzero value never prints as zero (tiny values use an exponent: ``3.1e-06``); NaN
    and None give ``""``. Saved outputs (CSV, JSON) keep full precision instead."""
    if v is None:
        return ""
    if isinstance(v, bool | np.bool_):
        return "yes" if v else "no"
    if isinstance(v, int | np.integer) and not isinstance(v, bool):
        return str(int(v))
    try:
        x = float(v)
    except (TypeError, ValueError):
        return str(v)
    if np.isnan(x):
        return ""
    if np.isinf(x):
        return "inf" if x > 0 else "-inf"
    if digits is None:
        return f"{x:.0f}"
    if x == 0.0:
        return "0"
    mantissa, exp = f"{x:.{digits - 1}e}".split("e")  # the exponent after rounding
    e = int(exp)
    if e < -4:
        return f"{float(mantissa):.{digits - 1}f}e{e:03d}".replace("e-0", "e-")
    return f"{x:.{max(0, digits - 1 - e)}f}"


def format_summary(df: pd.DataFrame, digits: dict[str, int | None] | None = None) -> pd.DataFrame:
    """The summary table as text for people: significant digits per column (``DIGITS``;
    R-hat with 3 decimals), missing values blank."""
    rules = dict(DIGITS)
    rules.update(digits or {})
    out = pd.DataFrame(index=df.index)
    for c in df.columns:
        if c == "r_hat":
            out[c] = [fmt_rhat(v) for v in df[c]]
        else:
            out[c] = [fmt_sig(v, rules.get(c, 3)) for v in df[c]]
    return out


def fmt_rhat(v: Any, threshold: float = 1.01) -> str:
    """R-hat with 3 decimals, or 4 where 3 would hide that it exceeds ``threshold``
    (1.0103 prints as ``1.0103``, never as a passing-looking ``1.010``); '' for NaN."""
    if v is None:
        return ""
    x = float(v)
    if np.isnan(x):
        return ""
    if np.isinf(x):
        return "inf"
    text = f"{x:.3f}"
    return f"{x:.4f}" if x > threshold and float(text) <= threshold else text


def summary_text(df: pd.DataFrame, prob: float, kind: str) -> str:
    """The summary as the CLI prints it: estimates to 3 significant digits, MCSE to 2, ESS
    and counts as whole numbers, R-hat to 3 decimals."""
    cols = ["mean", "sd", "lower", "upper", "mcse_mean", "ess_bulk", "ess_tail", "r_hat", "n",
            "raw_proportion"]
    pct = f"{100 * prob:g}%"
    show = format_summary(df[[c for c in cols if c in df.columns]])
    show = show.rename(columns={"lower": f"{kind}_{pct}_lo", "upper": f"{kind}_{pct}_hi",
                                "mcse_mean": "mcse", "raw_proportion": "raw_prop"})
    with pd.option_context("display.max_rows", 500, "display.width", 130):
        return show.to_string()


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


def _per_units(scale: float, coef: str) -> str:
    """Where a prior applies to a standardized column: one unit there is ``scale`` units of
    the original ``coef``."""
    return f" on the standardized scale (per {fmt_sig(scale)} units of {coef})"


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
            text += _per_units(scale[k], coef)
        out[fixed_name(coef)] = text
    for term in spec.terms:
        g = term.group
        zs = g.z_scale if g.z_scale is not None else np.ones(g.n_coefs)
        for c, coef in enumerate(g.coef_names):
            if term.estimated:
                text = str(term.sd_priors[c])
                if zs[c] != 1.0:
                    text += _per_units(zs[c], coef)
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
        ``parameters`` (one entry per summary row), ``timings`` and more.

    Raises
    ------
    SpecError
        When ``prob`` is not strictly between 0 and 1 (from :func:`summary`).
    """
    df = table if table is not None else summary(fit, prob=prob, kind=kind)
    d = fit.diagnosis
    # column by column (a row at a time cost 17 s with 10^5 group levels: pandas copies the
    # table's attributes into every row)
    keys = ("mean", "sd", "lower", "upper", "ess_bulk", "r_hat")
    cols = [_finite_list(df[k].to_numpy(dtype=float)) for k in keys]
    params = {
        str(name): dict(zip(keys, values, strict=True))
        for name, *values in zip(df.index, *cols, strict=True)
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


def _finite_list(a: np.ndarray) -> list[float | None]:
    """The values as Python floats, None where not finite (as :func:`_f`, for a column)."""
    ok = np.isfinite(a)
    return [v if k else None for v, k in zip(a.tolist(), ok.tolist(), strict=True)]


def _f(v: Any) -> float | None:
    v = float(v)
    return None if not np.isfinite(v) else v
