"""Power-scaling prior sensitivity (Kallioinen et al. 2024, the numbers of
``arviz_stats.psense``, computed by :mod:`poolwise.inference.power_scaling`): the intercept,
coefficients and group SDs whose posterior is shaped (``prior_sensitive``) or dominated
(``prior_dominated``) by their prior, each prior power-scaled on the scale where it applies.

It needs the total log-likelihood (from the cells), so it runs only when asked:
:func:`~poolwise.inference.diagnostics.diagnose` with a model, or later
:func:`with_sensitivity`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from poolwise.inference.diagnostics.findings import Diagnosis, Finding, FindingCode

if TYPE_CHECKING:
    from poolwise.model.spec import ModelSpec

__all__ = [
    "PSENSE_THRESHOLD",
    "check_sensitivity",
    "prior_scale_draws",
    "prior_sensitivity",
    "sd_prior_logpdf",
    "with_sensitivity",
]

#: power-scaling sensitivity threshold (Kallioinen et al. 2024; arviz-stats' default)
PSENSE_THRESHOLD = 0.05


def sd_prior_logpdf(prior: Any, x: np.ndarray) -> np.ndarray:
    """Log density of a group-SD prior (exponential, half-normal, half-Student-t) at x
    (:meth:`poolwise.model.families.FamilySpec.logpdf`)."""
    from poolwise.model import families

    return families.get(prior.family).logpdf(prior.params, x)


def prior_scale_draws(
    post: xr.Dataset, spec: ModelSpec
) -> list[tuple[str, Any, np.ndarray]]:
    """Every parameter that has its own proper prior, with its draws *on the scale where the
    prior applies*: (reported name, prior, draws (chain, draw)).

    The posterior holds original-scale draws (:func:`poolwise.model.predictor.to_original_scale`);
    the priors of the fixed effects and of the slope SDs apply on the engine's standardized
    scale (:mod:`poolwise.data.design`): ``b_std = b * x_scale``, the intercept at the predictors'
    means ``Intercept_std = Intercept + sum_k b_k * x_center_k``, ``sd_std = sd * z_scale``.
    """
    from poolwise.model import families
    from poolwise.model.naming import fixed_name, sd_name

    def draws(name: str) -> np.ndarray:
        return np.asarray(post[name].transpose("chain", "draw").values, dtype=float)

    out: list[tuple[str, Any, np.ndarray]] = []
    d = spec.design
    K = len(d.fixed_names)
    center = d.x_center if d.x_center is not None else np.zeros(K)
    scale = d.x_scale if d.x_scale is not None else np.ones(K)
    for k, (coef, prior) in enumerate(zip(d.fixed_names, spec.fixed_priors, strict=True)):
        name = fixed_name(coef)
        if name not in post or not families.get(prior.family).proper:
            continue
        if coef == "Intercept":
            x = draws(name)
            for j, other in enumerate(d.fixed_names):
                if other != "Intercept" and center[j] != 0.0 and fixed_name(other) in post:
                    x = x + draws(fixed_name(other)) * center[j]
        else:
            x = draws(name) * scale[k]
        out.append((name, prior, x))
    for t in spec.terms:
        if not t.estimated:
            continue
        zs = t.group.z_scale if t.group.z_scale is not None else np.ones(t.group.n_coefs)
        for c, (coef, prior) in enumerate(zip(t.group.coef_names, t.sd_priors, strict=True)):
            name = sd_name(t, coef)
            if name in post and families.get(prior.family).proper:
                out.append((name, prior, draws(name) * zs[c]))
    return out


def prior_sensitivity(tree: xr.DataTree, spec: ModelSpec) -> dict[str, tuple[float, float]]:
    """Power-scaling sensitivity (Kallioinen et al. 2024, ``arviz_stats.psense``) of the fixed
    intercept, every fixed coefficient and every estimated group SD: (prior, likelihood).

    Each parameter's prior is power-scaled on its own: its log density
    (:meth:`poolwise.model.families.FamilySpec.logpdf`) evaluated at the draws on the scale
    where the prior applies (standardized predictors: the standardized scale, see
    :func:`prior_scale_draws`); the sensitivity is measured on the reported (original-scale)
    draws. The likelihood is the total log-likelihood of the data (computed from the cells).
    Flat (improper) priors are skipped."""
    from poolwise.inference.power_scaling import power_scale_sensitivity

    post = tree["posterior"].to_dataset()
    items = prior_scale_draws(post, spec)
    if not items:
        return {}
    # the total over all rows: the log_likelihood group's patterns summed with their weights,
    # or (without that group) computed from the cells
    from poolwise.model.likelihood import total_log_likelihood

    group = tree["log_likelihood"].to_dataset() if "log_likelihood" in tree.children else None
    ll = np.asarray(total_log_likelihood(spec, post, group))
    out: dict[str, tuple[float, float]] = {}
    for name, prior, x_prior in items:
        x = post[name].transpose("chain", "draw").values
        try:
            with np.errstate(all="ignore"):
                out[name] = (
                    float(power_scale_sensitivity(x, sd_prior_logpdf(prior, x_prior))),
                    float(power_scale_sensitivity(x, ll)),
                )
        except Exception:  # noqa: BLE001 - a diagnostic must not break the fit
            continue
    return out


def check_sensitivity(sens: dict[str, tuple[float, float]], spec: ModelSpec) -> list[Finding]:
    """The intercept, coefficients and group SDs shaped by their prior (power-scaling
    sensitivity, :func:`prior_sensitivity`): ``prior_dominated`` when the likelihood is
    insensitive too, ``prior_sensitive`` otherwise."""
    from poolwise.model.describe import priors_by_parameter

    prior_of = _priors_by_name(spec)
    text_of = priors_by_parameter(spec)
    out: list[Finding] = []
    for name, (ps, ls) in sens.items():
        if not (np.isfinite(ps) and ps >= PSENSE_THRESHOLD):
            continue
        prior = prior_of.get(name)
        out.append(_sensitivity_finding(name, ps, ls, prior, text_of.get(name, str(prior))))
    return out


def _sensitivity_finding(name: str, ps: float, ls: float, prior: Any, text: str) -> Finding:
    """The finding of one prior-sensitive parameter (``ps`` >= :data:`PSENSE_THRESHOLD`)."""
    wide = _wider(prior) if prior is not None else None
    widen = (f" A wider prior such as {wide} would move it." if wide is not None else "")
    what = "coefficient" if not name.startswith("sd_") else "group SD"
    if np.isfinite(ls) and ls < PSENSE_THRESHOLD:
        return Finding(
            FindingCode.PRIOR_DOMINATED, "warning",
            f"The posterior of {name} is dominated by its prior {text}: power-scaling "
            f"prior sensitivity {ps:.3f} >= {PSENSE_THRESHOLD} with likelihood sensitivity "
            f"{ls:.3f} < {PSENSE_THRESHOLD} (strong prior / weak likelihood).{widen} Its "
            f"estimate says more about the prior than about the data; report this {what} "
            "as such, and a different prior would give a different answer.",
            (name,),
        )
    return Finding(
        FindingCode.PRIOR_SENSITIVE, "warning",
        f"The posterior of {name} is sensitive to its prior {text}: power-scaling "
        f"prior sensitivity {ps:.3f} >= {PSENSE_THRESHOLD} (likelihood sensitivity "
        f"{ls:.3f}).{widen} The prior is informative here or conflicts with the data; "
        "check how the estimate changes under another reasonable prior.",
        (name,),
    )


def _wider(prior: Any) -> Any:
    """The same prior ten times wider (scale x 10, rate / 10); None when it has no scale."""
    from dataclasses import replace

    from poolwise.model import families

    fam = families.get(prior.family)
    params = list(prior.params)
    if "sigma" in fam.params:
        params[fam.params.index("sigma")] *= 10.0
    elif "rate" in fam.params:
        params[fam.params.index("rate")] /= 10.0
    else:
        return None
    return replace(prior, params=tuple(params))


def _priors_by_name(spec: ModelSpec) -> dict[str, Any]:
    """The prior of every fixed effect and estimated group SD, by reported name."""
    from poolwise.model.naming import fixed_name, sd_name

    out: dict[str, Any] = {
        fixed_name(c): p
        for c, p in zip(spec.design.fixed_names, spec.fixed_priors, strict=True)
    }
    for t in spec.terms:
        if t.estimated:
            out.update((sd_name(t, c), p)
                       for c, p in zip(t.group.coef_names, t.sd_priors, strict=True))
    return out


def with_sensitivity(diagnosis: Diagnosis, tree: xr.DataTree, spec: ModelSpec) -> Diagnosis:
    """``diagnosis`` plus the prior-sensitivity check (which needs the log-likelihood), without
    recomputing the convergence numbers. A diagnosis that has it already is returned as is."""
    from dataclasses import replace

    done = (diagnosis.has(FindingCode.PRIOR_DOMINATED)
            or diagnosis.has(FindingCode.PRIOR_SENSITIVE))
    if diagnosis.sensitivity or done:
        return diagnosis
    sens = prior_sensitivity(tree, spec)
    return replace(diagnosis, sensitivity=sens,
                   findings=diagnosis.findings + tuple(check_sensitivity(sens, spec)))
