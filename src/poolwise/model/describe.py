"""The model in words: what each prior applies to and how the design was rescaled.

Shared by the summary, the diagnostics' findings, ``result.json`` and the report, so the same
prior prints the same way everywhere.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from poolwise.model.naming import fixed_name, sd_name, total_name
from poolwise.textfmt import _g, fmt_sig

__all__ = ["priors_by_parameter", "scaling_dict", "pooling_title", "prior_summary"]


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


_POOLING_WORDS = {"complete": "complete pooling", "none": "no pooling (fixed effects)",
                  "partial": "partial pooling"}


def _varying(spec: Any) -> str:
    """What varies by group: ``"varying intercepts"``, ``"varying intercepts and slopes of
    x"``, ``"varying slopes of x"``; with several grouping factors, by which."""
    parts = []
    for t in spec.terms:
        coefs = t.group.coef_names
        slopes = [c for c in coefs if c != "Intercept"]
        if not slopes:
            what = "intercepts"
        elif "Intercept" in coefs:
            what = f"intercepts and slopes of {', '.join(slopes)}"
        else:
            what = f"slopes of {', '.join(slopes)}"
        if t.correlated and len(coefs) > 1:
            what += ", correlated"
        parts.append((what, t.name))
    if len(parts) == 1 or len({w for w, _ in parts}) == 1:
        by = "" if len(parts) == 1 else f" by {' and '.join(g for _, g in parts)}"
        return f"varying {parts[0][0]}{by}"
    return "; ".join(f"varying {w} by {g}" for w, g in parts)


def pooling_title(spec: Any) -> str:
    """The fitted model in a few words, for titles and legends: its pooling and what varies
    by group, e.g. ``"partial pooling (varying intercepts)"``, ``"partial pooling (varying
    intercepts and slopes of x, correlated)"``, ``"complete pooling"``."""
    base = _POOLING_WORDS.get(spec.pooling, str(spec.pooling))
    if spec.pooling == "complete" or not spec.terms:
        return base
    varying = _varying(spec)
    if spec.pooling == "none":
        slopes = any(c != "Intercept" for t in spec.terms for c in t.group.coef_names)
        if not slopes:
            return base
        return f"no pooling (fixed {varying.replace('varying ', '').replace(', correlated', '')})"
    return f"{base} ({varying})"


def prior_summary(spec: Any) -> list[str]:
    """The model's priors in short statements, one per parameter class and group term (every
    fixed coefficient, every group term's levels, SDs and correlations), as the prior
    predictive simulation draws them: ``["Intercept ~ normal(0, 1.5)", "b_x ~ normal(0, 1)",
    "a_g[j] ~ normal(Intercept, sd_g), sd_g ~ exponential(1)"]``. Identical priors of several
    fixed coefficients are written once (``b_x, b_z ~ normal(0, 1)``)."""
    d = spec.design
    unpooled = {c for t in spec.terms if not t.estimated for c in t.group.coef_names}
    by_prior: dict[str, list[str]] = {}
    for coef, prior in zip(d.fixed_names, spec.fixed_priors, strict=True):
        if coef in unpooled:
            continue
        by_prior.setdefault(str(prior), []).append(fixed_name(coef))
    out = [f"{', '.join(names)} ~ {prior}" for prior, names in by_prior.items()]
    for t in spec.terms:
        coefs = t.group.coef_names
        tots = [f"{total_name(t, c)}[j]" for c in coefs]
        if not t.estimated:
            fixed = {_g(s) for s in t.sd_fixed}
            if len(fixed) == 1:
                out.append(f"{', '.join(tots)} ~ normal(0, {fixed.pop()}) independently "
                           "(no pooling)")
            else:
                out.append(", ".join(f"{tot} ~ normal(0, {_g(s)})"
                                     for tot, s in zip(tots, t.sd_fixed, strict=True))
                           + " independently (no pooling)")
            continue
        means = [fixed_name(c) if mi >= 0 else "0" for c, mi in zip(coefs, t.mu_index,
                                                                   strict=True)]
        sds = [sd_name(t, c) for c in coefs]
        sd_priors = {str(p) for p in t.sd_priors}
        sd_text = (f"{', '.join(sds)} ~ {sd_priors.pop()}" if len(sd_priors) == 1 else
                   ", ".join(f"{s} ~ {p}" for s, p in zip(sds, t.sd_priors, strict=True)))
        if t.correlated and len(coefs) > 1:
            out.append(f"({', '.join(tots)}) ~ MVNormal(({', '.join(means)}), SDs and "
                       f"correlations of {t.name}), {sd_text}, correlations ~ "
                       f"lkj({_g(t.lkj_eta)})")
        else:
            levels = ", ".join(f"{tot} ~ normal({mu}, {sd})"
                               for tot, mu, sd in zip(tots, means, sds, strict=True))
            out.append(f"{levels}, {sd_text}")
    return out
