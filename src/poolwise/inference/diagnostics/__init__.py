"""Diagnosis of a fit: is it trustworthy, and if not, where is the problem?

:func:`diagnose` runs every check and returns a :class:`Diagnosis`. One module per concern:

* :mod:`~poolwise.inference.diagnostics.findings`: the records (:class:`Finding`, coded by a
  :class:`FindingCode`; :class:`Funnel`; :class:`Diagnosis`) and the thresholds of the
  headline checks;
* :mod:`~poolwise.inference.diagnostics.numbers`: the numbers the checks read (R-hat, bulk /
  tail ESS, divergences, E-BFMI, tree depth, acceptance), from arviz-stats' algorithms;
* :mod:`~poolwise.inference.diagnostics.sampler`: the sampler checks (divergences, R-hat,
  ESS, E-BFMI, tree depth, acceptance, non-finite or constant draws, one chain);
* :mod:`~poolwise.inference.diagnostics.funnels`: where the divergences concentrate (the
  funnel of a centered term at small values of its SD, the inverted funnel at large ones);
* :mod:`~poolwise.inference.diagnostics.structure`: grouping factors with fewer than 5 levels,
  levels whose outcomes are all 0 or all 1;
* :mod:`~poolwise.inference.diagnostics.sensitivity`: power-scaling prior sensitivity of the
  intercept, coefficients and group SDs (``arviz_stats.psense``, each prior on the scale where
  it applies).

The codes themselves are :class:`poolwise.inference.finding_codes.FindingCode` (a module of
its own, so the displays can read them without importing this package). To add a check: one
``check_*`` function that returns ``Finding``s in the module of its concern, called from
:func:`diagnose`.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import xarray as xr

from poolwise.inference.diagnostics.approx_check import APPROX_ATTR, approx_rows, check_approx
from poolwise.inference.diagnostics.findings import (
    ACCEPT_TOLERANCE,
    BFMI_MIN,
    ESS_PER_CHAIN,
    RHAT_GROUP_FRACTION,
    RHAT_MAX,
    Diagnosis,
    Finding,
    FindingCode,
    Funnel,
    Severity,
)
from poolwise.inference.diagnostics.funnels import check_funnels, localise_funnels
from poolwise.inference.diagnostics.numbers import (
    TAIL_PROB,
    Convergence,
    acceptance_per_chain,
    bfmi_per_chain,
    convergence_numbers,
    divergent_draws,
    stack_draws,
    treedepth_saturation,
)
from poolwise.inference.diagnostics.predictive import check_overdispersion
from poolwise.inference.diagnostics.sampler import (
    check_acceptance,
    check_bfmi,
    check_constant,
    check_divergences,
    check_ess,
    check_nonfinite,
    check_one_chain,
    check_rhat,
    check_treedepth,
)
from poolwise.inference.diagnostics.sensitivity import (
    PSENSE_THRESHOLD,
    check_sensitivity,
    prior_scale_draws,
    prior_sensitivity,
    sd_prior_logpdf,
    with_sensitivity,
)
from poolwise.inference.diagnostics.structure import MIN_LEVELS, check_structure

if TYPE_CHECKING:
    from poolwise.inference.fitted import Fit
    from poolwise.model.spec import ModelSpec

__all__ = [
    "Convergence",
    "Diagnosis",
    "Finding",
    "FindingCode",
    "Funnel",
    "Severity",
    "check_sensitivity",
    "convergence_numbers",
    "diagnose",
    "with_sensitivity",
    "localise_funnels",
    "prior_scale_draws",
    "prior_sensitivity",
    "sd_prior_logpdf",
    "stack_draws",
    "RHAT_MAX",
    "ESS_PER_CHAIN",
    "BFMI_MIN",
    "ACCEPT_TOLERANCE",
    "PSENSE_THRESHOLD",
    "MIN_LEVELS",
    "RHAT_GROUP_FRACTION",
    "TAIL_PROB",
]


def diagnose(
    fit: Fit | xr.DataTree,
    *,
    target_accept: float | None = None,
    spec: ModelSpec | None = None,
    sensitivity: bool | None = None,
) -> Diagnosis:
    """Run every check on a :class:`~poolwise.fit.Fit` or on a DataTree.

    Divergences, R-hat, bulk / tail ESS, E-BFMI, tree-depth saturation and acceptance rate;
    with a model, also the model-aware checks.

    Parameters
    ----------
    fit : Fit or xarray.DataTree
        A fit, or a DataTree with a ``posterior`` and (optionally) a ``sample_stats`` group.
    target_accept : float or None, default None
        The target acceptance rate the draws were made with (judges the acceptance check);
        None takes it from the Fit.
    spec : ModelSpec or None, default None
        The model (taken from a Fit when None); enables the model-aware checks: the few-levels
        and all-0/all-1 notes and the prior sensitivity.
    sensitivity : bool or None, default None
        Compute the power-scaling prior sensitivity of the intercept, every coefficient and
        every group SD (from the cells); None means True when a model is known.

    Returns
    -------
    Diagnosis
        The numbers of every check and the findings (errors, warnings, notes); ``ok`` is False
        whenever a finding is an error.
    """
    tree, fit_spec, fit_ta = _as_tree(fit)
    spec = spec if spec is not None else fit_spec
    target_accept = target_accept if target_accept is not None else fit_ta
    post = tree["posterior"].to_dataset()
    stats = tree["sample_stats"].to_dataset() if "sample_stats" in tree.children else xr.Dataset()
    chains, draws = post.sizes.get("chain", 1), post.sizes.get("draw", 0)

    div = divergent_draws(stats, chains, draws)
    approx = json.loads(tree.attrs[APPROX_ATTR]) if APPROX_ATTR in tree.attrs else None
    # an approximate fit's group effects are exact independent draws: no R-hat or ESS
    conv = convergence_numbers(post, group_numbers=approx is None)
    bfmi = bfmi_per_chain(stats)
    sat = treedepth_saturation(stats)
    acc_chain, acc = acceptance_per_chain(stats)
    funnels = localise_funnels(post, div, spec=spec)
    findings = [
        *check_divergences(div, chains, draws),
        *check_nonfinite(conv),
        *check_constant(conv),
        *check_one_chain(conv, chains),
        *(_mixing(conv, chains) if approx is None else ()),
        *check_bfmi(bfmi),
        *check_treedepth(sat),
        *check_acceptance(acc_chain, target_accept),
        *check_funnels(funnels, int(div.sum()), spec),
    ]
    if approx is not None:  # an approximate fit: its self-check
        findings.extend(check_approx(approx))
    sens: dict[str, tuple[float, float]] = {}
    if spec is not None:
        findings.extend(check_structure(spec))
        findings.extend(check_overdispersion(spec, post))
        if sensitivity is None:  # it needs only the cells, not the log_likelihood group
            sensitivity = True
        if sensitivity:
            sens = prior_sensitivity(tree, spec)
            findings.extend(check_sensitivity(sens, spec))

    return Diagnosis(
        chains=chains, draws=draws, divergences=int(div.sum()),
        divergences_per_chain=tuple(int(c) for c in div.sum(axis=1)),
        max_rhat=conv.max_rhat, min_ess_bulk=conv.min_ess("bulk"),
        min_ess_tail=conv.min_ess("tail"), bfmi=bfmi, treedepth_saturation=sat,
        mean_accept=acc, target_accept=target_accept, findings=tuple(findings),
        accept_per_chain=acc_chain, funnels=funnels, sensitivity=sens,
        parameters=tuple(conv.names), rhat=conv.rhat, ess_bulk=conv.ess_bulk,
        ess_tail=conv.ess_tail,
        approx_checks=None if approx is None else approx_rows(approx, findings),
    )


def _mixing(conv: Any, chains: int) -> list[Finding]:
    """R-hat and ESS per chain: how a sampler's chains mix. An approximate fit has no chains:
    its "chains" are groups of independent draws (an R-hat above 1.01 is then only noise: 4 x
    100 draws give 1.02 by chance), resampled from importance-weighted proposals (how many
    distinct proposals carry them is its self-check's importance ESS)."""
    return [*check_rhat(conv), *check_ess(conv, chains, "bulk"),
            *check_ess(conv, chains, "tail")]


def _as_tree(obj: Any) -> tuple[xr.DataTree, ModelSpec | None, float | None]:
    """The DataTree, model and target_accept of a Fit; a DataTree alone has neither."""
    if isinstance(obj, xr.DataTree):
        return obj, None, None
    if hasattr(obj, "idata") and hasattr(obj, "spec"):
        return obj.idata, obj.spec, obj.config.target_accept
    raise TypeError(f"diagnose() takes a Fit or an xarray.DataTree; got {type(obj).__name__}")
