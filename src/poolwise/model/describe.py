"""The model in words: what each prior applies to and how the design was rescaled.

Shared by the summary, the diagnostics' findings, ``result.json`` and the report, so the same
prior prints the same way everywhere.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from poolwise.model.naming import fixed_name, sd_name, total_name
from poolwise.textfmt import _g, fmt_sig

__all__ = ["priors_by_parameter", "scaling_dict"]


def scaling_dict(spec: Any) -> dict[str, Any]:
    """How the engine rescaled the design (see :mod:`poolwise.data.design`) and what the reported
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
