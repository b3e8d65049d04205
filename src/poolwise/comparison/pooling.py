"""Comparing pooling strategies: complete, none and partial pooling of one grouping factor.

:func:`compare_pooling` fits the three models with the same data, priors and sampler settings;
:func:`compare_fits` builds the comparison from fits you already have (loaded, or repaired).
The result, a frozen :class:`PoolingComparison`, holds

* ``groups``: one row per group (label, n, successes, raw proportion, the no-pooling and the
  partial-pooling estimate with sd and interval on the logit and the probability scale, the
  shift between them and the shrinkage fraction). Its columns name the model, the scale
  (``_p``: the probability scale) and, for an interval, its kind and probability:
  ``none_mean``, ``none_sd``, ``none_hdi_89_lower``, ``none_hdi_89_upper``, ``partial_...``,
  ``none_p_mean``, ``partial_p_hdi_89_upper``, ... (``interval_of(groups, "partial_p_")``);
* ``population``: the population-level estimates (``a_bar``, ``logistic(a_bar)``, the mean
  proportion of a new group, the group SD, the complete-pooling estimate, the raw proportions),
  with ``mean``, ``sd`` and the interval (``hdi_89_lower``, ``hdi_89_upper``);
* ``loo``: a PSIS-LOO comparison (``arviz_stats.compare``) whose predictive unit is stated in
  ``loo_unit``: one data row (a new observation in an *existing* group), with the Pareto k
  diagnostics per model in ``pareto_k``;
* ``logo``: leave-one-group-out elpd (:mod:`poolwise.comparison.logo`), whose unit is one *new*
  group:
  exact refits with at most 10 groups, PSIS-LOGO with refits of groups with Pareto k > 0.7
  otherwise (``None`` with ``logo=False``, or with a note when the model is outside its scope).

Shrinkage fraction
------------------
For group j the partial-pooling posterior of its intercept is, to a normal approximation
around the posterior, a precision-weighted average of what the group's own data say and the
population mean ``a_bar``. With ``sigma`` the group SD and ``I_j`` the Fisher information of
the group's data about its intercept (``sum_c n_c p_c (1 - p_c)`` over the group's cells for the
logit link; for any link the weights of :meth:`poolwise.model.links.LinkSpec.fisher_weight`), the
weight on the population mean is ``B_j = 1 / (1 + sigma^2 I_j)`` (the Efron-Morris shrinkage
factor, BDA3 section 5.5). ``shrinkage`` is its posterior mean, computed
per draw from the partial-pooling fit: 0 means the estimate is the group's own, 1 means it is
the population mean. It lies in [0, 1] by construction, falls as n grows and needs no
division by the (possibly tiny) distance between the no-pooling estimate and the population
mean, so it is defined for every group, including all-0 and all-1 groups.

``PoolingComparison``'s reprs are built by :mod:`poolwise.comparison.display`, in this layer.

Why one module: the group table, the population table and the predictive comparison are
built from the same three fits into one PoolingComparison; leave-one-group-out is in
poolwise.comparison.logo.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from poolwise.errors import SpecError
from poolwise.model import links
from poolwise.model.naming import sd_name, total_name
from poolwise.model.predictor import draws as _draws
from poolwise.model.predictor import inverse_link, linear_predictor
from poolwise.progress import phase

if TYPE_CHECKING:
    from arviz_stats.utils import ELPDDataLOO

    from poolwise.inference.fitted import Fit
    from poolwise.model.spec import Link, ModelSpec, TermSpec

__all__ = [
    "POOLINGS",
    "LOO_UNIT",
    "PoolingComparison",
    "ParetoK",
    "compare_fits",
    "compare_pooling",
    "row_loo",
]

#: the order in which models are fitted, listed and plotted
POOLINGS: tuple[str, ...] = ("complete", "none", "partial")
MODEL_NAMES = {
    "complete": "complete pooling",
    "none": "no pooling",
    "partial": "partial pooling",
}

LOO_UNIT = (
    "one data row: a new observation in an existing group (row-level PSIS-LOO). It does not "
    "measure how well a model predicts a new, unseen group; that needs leave-one-group-out "
    "cross-validation."
)

IntervalKind = Literal["hdi", "eti"]


@dataclass(frozen=True)
class ParetoK:
    """Pareto k diagnostics of one model's PSIS-LOO."""

    model: str
    threshold: float
    n_bad: int
    max_k: float
    bad_rows: tuple[int, ...]  # 1-based data row numbers with k > threshold (up to 20)

    @property
    def ok(self) -> bool:
        return self.n_bad == 0


@dataclass(frozen=True, eq=False)
class PoolingComparison:
    """Complete, none and partial pooling of one grouping factor, side by side.

    Build it with :func:`compare_pooling` or :func:`compare_fits`. ``narrative`` gives the
    data-driven explanation of the differences (every number from the fits).
    """

    formula: str
    group: str
    fits: Mapping[str, Fit]
    groups: pd.DataFrame
    population: pd.DataFrame
    loo: pd.DataFrame | None
    pareto_k: Mapping[str, ParetoK]
    prob: float
    kind: IntervalKind
    loo_unit: str = LOO_UNIT
    notes: tuple[str, ...] = field(default_factory=tuple)
    #: leave-one-group-out comparison (:class:`poolwise.comparison.logo.LogoComparison`) or None
    logo: Any = None
    #: grouped K-fold comparison (:class:`poolwise.comparison.kfold.KFoldComparison`) or None
    kfold: Any = None

    @property
    def ok(self) -> bool:
        """True when every fit passed its diagnostics."""
        return all(f.ok for f in self.fits.values())

    @property
    def narrative(self) -> tuple[str, ...]:
        """Paragraphs answering "how do the models disagree, and why"."""
        from poolwise.comparison.narrative import pooling_narrative

        return pooling_narrative(self)

    @property
    def method(self) -> str:
        """How the fits' draws were made: ``"nuts"`` or ``"approx"`` (each fit's
        ``Fit.method``), or, for fits made differently (:func:`compare_fits`), each model's
        joined, e.g. ``"complete: approx, none: nuts, partial: nuts"``."""
        methods = {k: f.method for k, f in self.fits.items()}
        if len(set(methods.values())) == 1:
            return next(iter(methods.values()))
        return ", ".join(f"{k}: {m}" for k, m in methods.items())

    @property
    def main_fit(self) -> Fit:
        """The partial-pooling fit."""
        return self.fits["partial"]

    def __repr__(self) -> str:
        from poolwise.comparison.display import comparison_text

        return comparison_text(self)

    def _repr_html_(self) -> str:
        from poolwise.comparison.display import comparison_html

        return comparison_html(self)


def compare_pooling(
    formula: Any,
    data: Any,
    *,
    group: str | None = None,
    parameterization: Any = "auto",
    priors: Any = None,
    link: Link = "logit",
    success: Any = None,
    drop_missing: bool = False,
    chains: int = 4,
    tune: int = 1000,
    draws: int = 1000,
    seed: int | None = None,
    target_accept: float | None = None,
    max_treedepth: int = 10,
    cores: int | None = None,
    progress: bool = False,
    engine: Literal["cfunc", "pyfunc"] = "cfunc",
    log_likelihood: bool = True,
    prior_sensitivity: bool = True,
    strict: bool = False,
    repair: Any = True,
    standardize: bool = True,
    reference: Mapping[str, Any] | None = None,
    prior_check: bool = True,
    offset: Any = None,
    family: Literal["binomial", "beta_binomial"] = "binomial",
    weights: str | None = None,
    weights_kind: Literal["frequency", "survey"] | None = None,
    method: Literal["nuts", "approx"] = "nuts",
    check_against_nuts: bool = False,
    prob: float = 0.89,
    kind: IntervalKind = "hdi",
    loo: bool = True,
    logo: bool | Literal["psis"] = True,
    kfold: int | None = None,
) -> PoolingComparison:
    """Fit complete, no and partial pooling with the same settings and compare them.

    All three models share ``data``, ``priors``, ``link`` and the sampler settings, including
    ``seed`` (drawn once and recorded when not given); the keyword arguments are those of
    :func:`poolwise.fit`. Warnings from the three fits (for example a
    :class:`~poolwise.ConvergenceWarning`) are emitted once each, prefixed with the model's
    name. See :func:`compare_fits` for the contents of the result.

    Parameters
    ----------
    formula : str or Formula
        lme4 / brms style formula (``y ~ 1 + x + (1 | g)``, ``cbind(s, f) ~ ...``,
        ``s | trials(n) ~ ...``) or one parsed by :func:`parse_formula`.
    data : str, pathlib.Path, Table, pandas.DataFrame or polars.DataFrame
        The data: a CSV/TSV/Parquet path (read with :func:`read_table`), a :class:`Table` or a
        data frame.
    group : str or None, default None
        The grouping factor to compare; needed only when the formula has several group terms
        with an intercept.
    parameterization : {"auto", "centered", "noncentered"}, default "auto"
        Centered or non-centered group effects; ``"auto"`` picks per term from a short pilot
        run of each fit (:func:`poolwise.inference.repair.choose_parameterization`).
    priors : Priors or None, default None
        Priors by class (:class:`Priors`); None means ``Priors()``, the defaults (intercept
        normal(0, 1.5), coefficients normal(0, 1), group SDs exponential(1), correlations
        lkj(2)). Priors are never changed by repair.
    link : {"logit", "probit", "cloglog"}, default "logit"
        Link function of the success probability.
    success : Any, default None
        For a 0/1 outcome column with two other values (e.g. ``"yes"`` / ``"no"``): the value
        that counts as a success. Not needed for 0/1, True/False or count outcomes.
    drop_missing : bool, default False
        Drop rows with a missing value in a model column (reported in the notes) instead of
        raising :class:`DataError`.
    chains : int, default 4
        Number of NUTS chains.
    tune : int, default 1000
        Warm-up (adaptation) draws per chain, discarded.
    draws : int, default 1000
        Kept draws per chain.
    seed : int or None, default None
        Random seed; drawn once and recorded in the fit when None, so any run can be repeated.
    target_accept : float or None, default None
        NUTS target acceptance rate; None means 0.8, or 0.95 / 0.99 when the automatic rule
        predicts a funnel that no parameterization removes. A given value is used as is for
        the first attempt.
    max_treedepth : int, default 10
        Maximum NUTS tree depth (at most 2**max_treedepth leapfrog steps per draw).
    cores : int or None, default None
        Chains run in parallel on this many cores; None means ``min(chains, CPU count)``.
    progress : bool, default False
        Show nutpie's progress bar.
    engine : {"cfunc", "pyfunc"}, default "cfunc"
        How nutpie calls the numba density: a compiled C function (fast) or a Python
        function (for debugging).
    log_likelihood : bool, default True
        Store the pointwise log-likelihood (per cell) for LOO / model comparison.
    prior_sensitivity : bool, default True
        Run the power-scaling prior-sensitivity check of the fixed intercept, the fixed
        coefficients and the group SDs (arviz-stats' ``psense``; its findings are warnings,
        never errors). False skips it, for a caller that shows neither the findings nor saves
        the fit; :func:`poolwise.inference.sampling.with_log_likelihood` adds it later.
    strict : bool, default False
        Raise :class:`SamplingError` when the fit fails its diagnostics instead of emitting a
        :class:`ConvergenceWarning`.
    repair : bool or RepairPolicy, default True
        Re-fit a failing model with remedies in order: non-center the culprit term, raise
        target_accept (0.9, 0.95, 0.99), tune longer; a
        :class:`~poolwise.inference.repair.RepairPolicy`
        sets the budget, False fits once.
    standardize : bool, default True
        Sample with numeric predictors scaled by their SD and the fixed-effect columns centered,
        so the default priors fit any units; every result is reported on the original scale
        (see :mod:`poolwise.data.design`).
    reference : Mapping[str, Any] or None, default None
        Reference level per categorical predictor (``{"col": level}``); by default the first
        level (in category order for a pandas categorical, otherwise sorted).
    prior_check : bool, default True
        Simulate group proportions from the priors and warn (:class:`DataWarning`) when they
        pile up near 0 or 1 (:mod:`poolwise.model.prior_predictive`).
    offset : str, array-like or None, default None
        Known per-row addition to the linear predictor: an expression of columns
        (``"log(exposure)"``, the same as ``+ offset(log(exposure))`` in the formula) or one
        value per data row.
    family : {"binomial", "beta_binomial"}, default "binomial"
        The outcome's distribution given the success probability: binomial, or beta-binomial
        for overdispersed counts (rows of several trials whose spread exceeds the binomial's;
        its precision ``phi`` has the prior ``priors.phi``, default exponential(0.05)).
    weights : str or None, default None
        A column of row weights (:func:`poolwise.fit`). Under survey weights LOO,
        leave-one-group-out and K-fold are not computed; the notes say why.
    weights_kind : {"frequency", "survey"} or None, default None
        What the weights are; None means frequency when every weight is a whole number.
    method : {"nuts", "approx"}, default "nuts"
        How each fit's draws are made (:func:`poolwise.fit`): the three models by the same
        method; with ``"approx"`` (one grouping factor with a varying intercept and up to two
        slopes, binomial)
        each fit checks itself, and the refits of leave-one-group-out and K-fold use it too.
        The comparison says the method (``PoolingComparison.method``, its notes, the report,
        each saved fit's ``result.json`` and the saved folder's manifest).
    check_against_nuts : bool, default False
        Not taken by a comparison (a SpecError before the data are read): check one of its
        models with :func:`poolwise.fit` (``method="approx", check_against_nuts=True``,
        ``pooling=...``).
    prob : float, default 0.89
        Probability mass of the intervals, strictly between 0 and 1.
    kind : {"hdi", "eti"}, default "hdi"
        Highest-density (``"hdi"``) or equal-tailed (``"eti"``) intervals.
    loo : bool, default True
        Compute row-level PSIS-LOO (predicting a new row in an existing group).
    logo : bool or "psis", default True
        Leave-one-group-out comparison (predicting a new group, :mod:`poolwise.comparison.logo`):
        True for exact refits where PSIS is unreliable, ``"psis"`` for PSIS-LOGO only, False
        to skip.
    kfold : int or None, default None
        Grouped K-fold cross-validation with this many folds of groups
        (:mod:`poolwise.comparison.kfold`): for many groups, or where PSIS leave-one-group-out
        is unreliable; None skips it.

    Returns
    -------
    PoolingComparison
        The three fits side by side (see :func:`compare_fits`).

    Raises
    ------
    FormulaError
        When the formula is invalid.
    DataError
        When the data are unusable (see :func:`poolwise.fit`).
    SpecError
        When a setting is invalid (``prob``, ``kind``, priors, sampler settings), the formula
        has no group term with a varying intercept, or ``group`` names none of them (or is
        missing while there are several).
    """
    from poolwise.data.table import Table, read_table
    from poolwise.inference.fit import fit_with_options
    from poolwise.inference.options import (
        CompareOptions,
        FitOptions,
        check_against_formula,
        check_comparison,
    )

    # every setting is checked here, before the data are read; the seed is drawn once (the
    # same way as fit's) and shared by the three fits
    options = FitOptions(
        parameterization=parameterization, priors=priors, link=link, success=success,
        drop_missing=drop_missing, chains=chains, tune=tune, draws=draws, seed=seed,
        target_accept=target_accept, max_treedepth=max_treedepth, cores=cores,
        progress=progress, engine=engine, log_likelihood=log_likelihood,
        prior_sensitivity=prior_sensitivity, strict=strict, repair=repair,
        standardize=standardize, reference=reference, prior_check=prior_check, offset=offset,
        family=family, weights=weights, weights_kind=weights_kind, method=method,
        check_against_nuts=check_against_nuts,
    ).with_seed()
    check_comparison(options)
    compare = CompareOptions(group=group, prob=prob, kind=kind, loo=loo, logo=logo,
                             kfold=kfold, fit=options)
    check_against_formula(options, formula, poolings=POOLINGS)  # before any data
    table = data if isinstance(data, Table) else read_table(data)
    fits: dict[str, Fit] = {}
    caught_all: list[tuple[str, warnings.WarningMessage]] = []
    # approx: the partial model first, so that a model it does not cover (varying slopes,
    # several group terms, ...) is refused before another is fitted (the order of the result
    # is POOLINGS' all the same)
    order = POOLINGS[::-1] if options.method == "approx" else POOLINGS
    for pooling in order:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with phase(f"the {pooling} pooling fit"):
                fits[pooling] = fit_with_options(formula, table,
                                                 replace(options, pooling=pooling))
        caught_all.extend((pooling, w) for w in caught)
    _reemit(caught_all)
    return compare_fits(fits, group=compare.group, prob=compare.prob, kind=compare.kind,
                        loo=compare.loo, logo=compare.logo, kfold=compare.kfold)


def _reemit(caught: list[tuple[str, warnings.WarningMessage]]) -> None:
    from poolwise.errors import ConvergenceWarning

    seen: set[tuple[type, str]] = set()
    for pooling, w in caught:
        msg = str(w.message)
        if issubclass(w.category, ConvergenceWarning):
            msg = f"{MODEL_NAMES[pooling]} fit: {msg}"
        key = (w.category, msg)
        if key in seen:
            continue
        seen.add(key)
        warnings.warn(msg, w.category, stacklevel=3)


def compare_fits(
    fits: Mapping[str, Fit],
    *,
    group: str | None = None,
    prob: float = 0.89,
    kind: IntervalKind = "hdi",
    loo: bool = True,
    logo: bool | Literal["psis"] = True,
    kfold: int | None = None,
) -> PoolingComparison:
    """Compare fits of one formula and data set that differ only in pooling.

    Parameters
    ----------
    fits : Mapping[str, Fit]
        Maps ``"none"`` and ``"partial"`` (required) and ``"complete"`` (optional) to fits of
        the same formula and data made with that pooling.
    group : str or None, default None
        The grouping factor to compare; needed only when the formula has several group terms
        with an intercept.
    prob : float, default 0.89
        Probability mass of the intervals, strictly between 0 and 1 (89% as in Statistical
        Rethinking).
    kind : {"hdi", "eti"}, default "hdi"
        Highest-density (``"hdi"``) or equal-tailed (``"eti"``) intervals.
    loo : bool, default True
        Compute row-level PSIS-LOO (predicting a new row in an existing group).
    logo : bool or "psis", default True
        Leave-one-group-out comparison (predicting a new group, :mod:`poolwise.comparison.logo`):
        True for exact refits where PSIS is unreliable, ``"psis"`` for PSIS-LOGO only, False
        to skip.
    kfold : int or None, default None
        Grouped K-fold cross-validation with this many folds of groups
        (:mod:`poolwise.comparison.kfold`): for many groups, or where PSIS leave-one-group-out
        is unreliable; None skips it.

    Returns
    -------
    PoolingComparison
        Per-group estimates under each pooling (``groups``), the population parameters
        (``population``), the LOO / LOGO / K-fold tables and a data-driven ``narrative``.

    Raises
    ------
    SpecError
        When ``prob`` or ``kind`` is invalid, a key of ``fits`` is unknown or missing, a fit was
        made with another pooling, the fits differ in formula, data or group labels, or
        ``group`` does not pick one group term with a varying intercept.
    """
    from poolwise.inference.summary import interval_columns, summary

    _check_fits(fits)
    if not 0.0 < prob < 1.0:
        raise SpecError(f"prob must lie strictly between 0 and 1; got {prob!r}")
    if kind not in ("hdi", "eti"):
        raise SpecError(f"kind must be 'hdi' or 'eti'; got {kind!r}")
    fits = {k: fits[k] for k in POOLINGS if k in fits}
    partial, none = fits["partial"], fits["none"]
    loo, logo, kfold, survey_notes = _without_cross_validation(partial, loo, logo, kfold)
    term_p = _intercept_term(partial.spec, group)
    term_n = _intercept_term(none.spec, term_p.name)
    name = total_name(term_p, "Intercept")

    cols = ["mean", "sd", *interval_columns(prob, kind)]
    tabs = {}
    for model, f in (("none", none), ("partial", partial)):
        tabs[model] = summary(f, prob=prob, kind=kind)
        tabs[model + "_p"] = summary(f, prob=prob, kind=kind, scale="probability")
    g = term_p.group
    keys = [f"{name}[{lab}]" for lab in g.labels]
    out = pd.DataFrame(
        {
            "label": g.labels,
            "n": g.level_trials,
            "rows": g.level_rows,
            "successes": g.level_successes,
            "raw_proportion": g.level_successes / g.level_trials,
        }
    )
    for model in ("none", "partial"):
        for scale, suffix in (("", ""), ("_p", "_p")):
            t = tabs[model + scale].loc[keys, cols]
            for c in cols:
                out[f"{model}{suffix}_{c}"] = t[c].to_numpy()
    if not np.array_equal(np.asarray(term_n.group.labels), np.asarray(g.labels)):
        raise SpecError("the no-pooling and partial-pooling fits have different group labels")
    out["shift_p"] = out["partial_p_mean"] - out["none_p_mean"]
    out["shift_logit"] = out["partial_mean"] - out["none_mean"]
    out["sd_ratio"] = out["partial_sd"] / out["none_sd"]
    out["shrinkage"] = shrinkage_fraction(partial, term_p)
    out["boundary"] = np.where(
        g.level_successes == 0, "all failures",
        np.where(g.level_successes == g.level_trials, "all successes", ""),
    )
    out.index = pd.Index([str(v) for v in g.labels], name=term_p.name)
    out.attrs.update({"prob": prob, "kind": kind, "group": term_p.name})

    population = _population_table(fits, term_p, prob, kind)
    with phase("LOO"):
        loo_table, pk = (_loo_compare(fits) if loo else (None, {}))
    notes = list(survey_notes)
    approx = [k for k, f in fits.items() if f.method == "approx"]
    if approx:
        which = (f"All {len(fits)} models' draws were" if len(approx) == len(fits) else
                 f"The {' and '.join(MODEL_NAMES[k] for k in approx)} fits' draws were")
        notes.append(
            f"{which} made by method='approx' (no sampler: the population-level parameters "
            "by importance sampling from their exact marginal posterior, each group's effect "
            "drawn exactly from its conditional posterior); each fit checked itself, and "
            "every refit (leave-one-group-out, K-fold) used the same method. Refit with "
            "method='nuts' (--method nuts) to confirm a close call."
        )
    if len(partial.spec.design.fixed_names) > 1 or g.n_coefs > 1:
        notes.append(
            "The model has predictors besides the intercept: group intercepts and the "
            "population mean are at predictor values of zero, so they are not directly "
            "comparable with raw proportions."
        )
    logo_cmp = None
    if logo:
        from poolwise.comparison.logo import logo_compare

        try:
            with phase("leave-one-group-out"):
                logo_cmp = logo_compare(fits, group=term_p.name, refit=logo != "psis")
        except SpecError as e:
            notes.append(f"Leave-one-group-out was not computed: {e}.")
    kfold_cmp = None
    if kfold is not None:
        from poolwise.comparison.kfold import kfold_compare

        with phase(f"grouped {kfold}-fold cross-validation"):
            kfold_cmp = kfold_compare(fits, kfold, group=term_p.name)
    return PoolingComparison(
        logo=logo_cmp,
        kfold=kfold_cmp,
        formula=partial.spec.formula.text,
        group=term_p.name,
        fits=fits,
        groups=out,
        population=population,
        loo=loo_table,
        pareto_k=pk,
        prob=prob,
        kind=kind,
        notes=tuple(notes),
    )


def _without_cross_validation(
    fit: Fit, loo: bool, logo: bool | Literal["psis"], kfold: int | None,
) -> tuple[bool, bool | Literal["psis"], int | None, list[str]]:
    """Under survey weights LOO, leave-one-group-out and K-fold are not computed
    (:func:`poolwise.data.weights.survey_reason`): the settings switched off, and a note
    saying why for each that was asked for."""
    w = fit.spec.design.weighting
    if w is None or not w.survey:
        return loo, logo, kfold, []
    from poolwise.data.weights import survey_reason

    asked = [what for what, on in (("Row-level LOO", loo), ("Leave-one-group-out", logo),
                                   ("K-fold cross-validation", kfold is not None)) if on]
    return False, False, None, [survey_reason(what) + "." for what in asked]


def _check_fits(fits: Mapping[str, Fit]) -> None:
    unknown = sorted(set(fits) - set(POOLINGS))
    if unknown:
        raise SpecError(f"fits must be keyed by {', '.join(POOLINGS)}; got {', '.join(unknown)}")
    missing = [k for k in ("none", "partial") if k not in fits]
    if missing:
        raise SpecError(f"compare_fits needs the {' and '.join(missing)} pooling fit(s)")
    for key, f in fits.items():
        if f.spec.pooling != key:
            raise SpecError(f"fits[{key!r}] was fitted with pooling={f.spec.pooling!r}")
    ref = fits["partial"].spec.design
    for key, f in fits.items():
        d = f.spec.design
        if d.data_sha256 != ref.data_sha256 or d.n_rows != ref.n_rows:
            raise SpecError(
                f"the {key} fit used different data (sha256 {d.data_sha256[:12]}, {d.n_rows} rows) "
                f"from the partial fit (sha256 {ref.data_sha256[:12]}, {ref.n_rows} rows)"
            )
        if str(d.formula.response) != str(ref.formula.response):
            raise SpecError(f"the {key} fit has a different response ({d.formula.response})")


def _intercept_term(spec: ModelSpec, group: str | None) -> TermSpec:
    cands = [t for t in spec.terms if "Intercept" in t.group.coef_names]
    if group is not None:
        hit = [t for t in cands if t.name == group]
        if not hit:
            have = ", ".join(t.name for t in cands) or "none"
            raise SpecError(
                f"no group term with a varying intercept for {group!r} in "
                f"{spec.formula.text!r} (pooling={spec.pooling}); group terms: {have}"
            )
        return hit[0]
    if not cands:
        raise SpecError(
            f"the formula {spec.formula.text!r} has no group term with a varying intercept, "
            "e.g. (1 | group); there is nothing to pool"
        )
    if len(cands) > 1:
        raise SpecError(
            f"the formula has several grouping factors ({', '.join(t.name for t in cands)}); "
            "choose one with group=..."
        )
    return cands[0]


def shrinkage_fraction(fit: Fit, term: TermSpec) -> np.ndarray:
    """Posterior mean of ``1 / (1 + sigma^2 I_j)`` per group (see the module docstring)."""
    spec = fit.spec
    post = fit.posterior
    d = spec.design
    sigma = _draws(post, sd_name(term, "Intercept"))  # (S,)
    eta = linear_predictor(spec, post)  # (S, n_cells)
    info_cell = links.get(spec.link).fisher_weight(d.n, eta)
    z = term.group.Z[:, term.group.coef_names.index("Intercept")]
    info_cell = info_cell * z**2
    L = term.group.n_levels
    info = np.zeros((info_cell.shape[0], L))
    for j in range(L):  # L is small; cells of level j
        info[:, j] = info_cell[:, term.group.codes == j].sum(axis=1)
    b = 1.0 / (1.0 + sigma[:, None] ** 2 * info)
    return np.clip(b.mean(axis=0), 0.0, 1.0)


# ---- population table -------------------------------------------------------------------

_GH_X, _GH_W = np.polynomial.hermite_e.hermegauss(41)
_GH_W = _GH_W / _GH_W.sum()


def _interval(x: np.ndarray, prob: float, kind: str) -> tuple[float, float]:
    from arviz_stats.base import array_stats

    fn = array_stats.hdi if kind == "hdi" else array_stats.eti
    lo, hi = fn(np.asarray(x, dtype=float), prob)
    return float(lo), float(hi)


def _row(x: np.ndarray, prob: float, kind: str, model: str, scale: str, what: str) -> dict:
    from poolwise.inference.summary import interval_columns

    lo_name, hi_name = interval_columns(prob, kind)
    lo, hi = _interval(x, prob, kind)
    return {"model": model, "scale": scale, "mean": float(np.mean(x)),
            "sd": float(np.std(x, ddof=1)), lo_name: lo, hi_name: hi, "description": what}


def _population_table(
    fits: Mapping[str, Fit], term: TermSpec, prob: float, kind: str
) -> pd.DataFrame:
    partial = fits["partial"]
    link = partial.spec.link
    post = partial.posterior
    S = post.sizes["chain"] * post.sizes["draw"]
    mi = term.mu_index[term.group.coef_names.index("Intercept")]
    a_bar = _draws(post, "Intercept") if mi >= 0 else np.zeros(S)
    sigma = _draws(post, sd_name(term, "Intercept"))
    rows: dict[str, dict] = {}
    rows["a_bar"] = _row(a_bar, prob, kind, "partial", "logit",
                         "population mean of the group intercepts (a_bar)")
    rows["p_typical_group"] = _row(
        inverse_link(link, a_bar), prob, kind, "partial", "probability",
        "proportion of a typical group: inverse link of a_bar (the median group)",
    )
    eta_new = a_bar[:, None] + sigma[:, None] * _GH_X[None, :]  # Gauss-Hermite nodes
    new_group = (inverse_link(link, eta_new) * _GH_W).sum(axis=1)
    rows["p_new_group_mean"] = _row(
        new_group, prob, kind, "partial", "probability",
        "expected proportion of a new group, averaged over the spread of groups",
    )
    rows["sigma"] = _row(sigma, prob, kind, "partial", "logit",
                         f"SD of the group intercepts ({sd_name(term, 'Intercept')})")
    if "complete" in fits and "Intercept" in fits["complete"].posterior:
        c = _draws(fits["complete"].posterior, "Intercept")
        rows["p_complete_pooling"] = _row(
            inverse_link(fits["complete"].spec.link, c), prob, kind, "complete", "probability",
            "one proportion for everybody (complete pooling)",
        )
    rows.update(_data_rows(term, prob, kind))
    df = pd.DataFrame.from_dict(rows, orient="index")
    df.index.name = "quantity"
    df.attrs.update({"prob": prob, "kind": kind})
    return df


def _data_rows(term: TermSpec, prob: float, kind: str) -> dict[str, dict]:
    """The population table's rows of the data themselves (no draws: no sd, no interval)."""
    from poolwise.inference.summary import interval_columns

    g = term.group
    pooled = float(g.level_successes.sum() / g.level_trials.sum())
    raw_mean = float(np.mean(g.level_successes / g.level_trials))
    empty = dict.fromkeys(["sd", *interval_columns(prob, kind)], float("nan"))
    return {
        "raw_pooled_proportion": {
            "model": "data", "scale": "probability", "mean": pooled, **empty,
            "description": "all successes / all trials (each observation weighs the same)"},
        "raw_mean_of_groups": {
            "model": "data", "scale": "probability", "mean": raw_mean, **empty,
            "description": "unweighted mean of the groups' raw proportions"},
    }


# ---- LOO ----------------------------------------------------------------------------------


def row_loo(fit: Fit) -> ELPDDataLOO:
    """Row-level PSIS-LOO (``arviz_stats.loo``) with pointwise values for every data row.

    The fit stores its log-likelihood per row pattern (cell x outcome) with counts
    (:mod:`poolwise.data.patterns`): rows of one pattern have identical log-likelihood draws, hence
    identical importance weights and LOO values, so PSIS runs once per pattern and elpd, se
    and p are count-weighted. The result equals ``arviz_stats.loo(fit.row_level(),
    pointwise=True)`` exactly, at a fraction of the cost and memory.
    """
    from poolwise.comparison.loo import row_loo as _row_loo

    return _row_loo(fit)


def _loo_compare(fits: Mapping[str, Fit]) -> tuple[pd.DataFrame, dict[str, ParetoK]]:
    import arviz_stats as azs

    loos = {}
    pk = {}
    for key, f in fits.items():
        res = row_loo(f)
        loos[MODEL_NAMES[key]] = res
        k = np.asarray(res.pareto_k.values)
        bad = k > res.good_k
        rows = res.pareto_k["obs"].values[bad]
        pk[key] = ParetoK(
            model=key, threshold=float(res.good_k), n_bad=int(bad.sum()),
            max_k=float(np.max(k)), bad_rows=tuple(dict.fromkeys(int(r) for r in rows))[:20],
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # diagnostics are carried in ParetoK and the table
        table = azs.compare(loos, round_to="none")
    keep = ["rank", "elpd", "se", "elpd_diff", "dse", "p", "weight"]
    table = table[[c for c in keep if c in table.columns]].copy()
    table["pareto_k_bad"] = [pk[_key(m)].n_bad for m in table.index]
    table["pareto_k_max"] = [pk[_key(m)].max_k for m in table.index]
    table.index.name = "model"
    table.attrs["unit"] = LOO_UNIT
    return table, pk


def _key(model_name: str) -> str:
    return {v: k for k, v in MODEL_NAMES.items()}[model_name]
