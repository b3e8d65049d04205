"""Leave-one-group-out (LOGO) cross-validation: how well does each pooling strategy predict
a *new* group?

The unit is one level ``j`` of a chosen group term ``t``: ``elpd_j = log p(y_j | y_-j)``, the
log predictive density of all of level j's rows by a model fitted without them, with level j
treated as a level the model has never seen:

* **complete pooling**: the common coefficients predict every row;
* **no pooling**: a new level has no estimate of its own, only its prior (the fixed prior of a
  level's coefficients, :func:`poolwise.model.predictor.new_level_draws`); the coefficients
  shared with other levels come from them;
* **partial pooling**: its effects are drawn from the population, ``N(0, Sigma_t)`` around the
  population means (the group SDs and, for a correlated term, the correlations).

Everything else the rows depend on stays as fitted: fixed effects, the offset, and the levels
of *other* group terms that have rows outside level j (crossed terms). A level of another term
whose rows all lie inside level j (a nested term, ``(1 | a/b)`` left out by ``a``) has no data
left either, so it is new too and integrated out with level j. The new effects are integrated
out per posterior draw of the shared parameters::

    p(y_j | theta) = int prod_rows Binom(y_r | n_r, p(eta_r + Z_r v)) N(v | m, Sigma) dv

(times the same integral over each nested level's own effects, inside), computed by adaptive
Gauss-Hermite quadrature around the mode of the integrand (:mod:`poolwise.model.quadrature`).
eta comes from the one linear predictor (:mod:`poolwise.model.predictor`) and the
log-likelihood from the one kernel (:mod:`poolwise.model.likelihood`), so every term, link and
the offset count exactly as in the fit. :func:`group_log_lik` returns these per-draw, per-level
log densities.

Two ways to get ``elpd_j``:

* **exact refits** (when there are at most :data:`EXACT_MAX_GROUPS` levels): the model is
  fitted again without level j's rows (every per-cell and per-row array subset, the offset
  included; same priors, the same standardization of the predictors as the full fit, the same
  sampler settings and repair policy), and ``elpd_j = log mean_s p(y_j | theta_s)`` over the
  refit's draws;
* **PSIS-LOGO** otherwise: the level-wise log densities above, from the full fit, go through
  Pareto-smoothed importance sampling (``arviz_stats.loo`` with one "observation" per level).
  Because level j's own effects are integrated out, the importance ratio
  ``1 / p(y_j | theta)`` is exactly the one that turns the posterior of the shared parameters
  into their posterior without level j. Levels whose Pareto k exceeds :data:`K_THRESHOLD`
  (0.7) are refitted exactly (at most ``max_refits``; any left are counted in ``n_bad_k``).

When level j's log density does not depend on any estimated parameter (no pooling with a
varying intercept only: a new level's prediction is its prior predictive), it is computed
exactly without a refit.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy.special import logsumexp

from poolwise.data.patterns import row_patterns
from poolwise.data.weights import refuse_cross_validation
from poolwise.errors import SpecError
from poolwise.inference.approx import approx_fit
from poolwise.inference.repair import repair_fit
from poolwise.model.likelihood import CellLikelihood
from poolwise.model.predictor import Rows, linear_predictor, new_level_draws
from poolwise.model.quadrature import NewLevelPrior, new_level_log_density, segment_sums
from poolwise.model.subset import without_levels

if TYPE_CHECKING:
    from poolwise.data.design import Design
    from poolwise.inference.fitted import Fit
    from poolwise.model.spec import ModelSpec

__all__ = [
    "LOGO_UNIT",
    "EXACT_MAX_GROUPS",
    "K_THRESHOLD",
    "LogoComparison",
    "group_log_lik",
    "log_mean_exp",
    "logo_compare",
    "mcse_log_mean_exp",
    "refit_without",
    "logo_term",
]

#: at most this many levels: every level is refitted exactly
EXACT_MAX_GROUPS = 10
#: Pareto k above which a level's PSIS estimate is replaced by an exact refit
K_THRESHOLD = 0.7

LOGO_UNIT = (
    "one group: all rows of a new, unseen group (leave-one-group-out; the group's own "
    "effects are integrated over their prior or population distribution)"
)


MODEL_NAMES = {"complete": "complete pooling", "none": "no pooling", "partial": "partial pooling"}


@dataclass(frozen=True, eq=False)
class LogoComparison:
    """Leave-one-group-out elpd of each pooling strategy.

    ``table``: one row per model (elpd, se, elpd_diff and dse against the best, how many groups
    were estimated by PSIS, refitted exactly, or exact without a refit, the largest Pareto k
    among the PSIS groups and how many groups keep k > 0.7). ``pointwise``: ``elpd_j`` per
    group (rows) and model (columns). ``method``: per group and model, ``"psis"``, ``"refit"``
    or ``"exact"``. ``mcse``: Monte Carlo SE of each ``elpd_j`` (0 where exact).
    """

    group: str
    table: pd.DataFrame
    pointwise: pd.DataFrame
    pareto_k: pd.DataFrame
    method: pd.DataFrame
    mcse: pd.DataFrame
    exact: bool
    unit: str = LOGO_UNIT
    notes: tuple[str, ...] = ()

    @property
    def best(self) -> str:
        """The pooling key (``"partial"``, ...) with the highest LOGO elpd."""
        return str(self.table.index[0])

    def __repr__(self) -> str:
        return (f"LogoComparison(group={self.group!r}, groups={len(self.pointwise)}, "
                f"exact={self.exact}, best={self.best!r})")


# ---- which levels are left out together -----------------------------------------------------


def logo_term(spec: ModelSpec, group: str | None) -> int:
    """The index of the group term whose levels are left out: the one named ``group``, or the
    model's only group term."""
    names = [t.name for t in spec.terms]
    if group is not None:
        if group not in names:
            raise SpecError(
                f"no group term {group!r} in {spec.formula.text!r} (pooling={spec.pooling}); "
                f"group terms: {', '.join(names) or 'none'}"
            )
        return names.index(group)
    if len(names) != 1:
        raise SpecError(
            f"leave-one-group-out leaves out the levels of one group term; "
            f"{spec.formula.text!r} has {len(names)} ({', '.join(names)}): choose one with "
            "group=..."
        )
    return 0


def _owned_levels(design: Design, t: int) -> dict[int, np.ndarray]:
    """Per other group term u: for each of its levels, the level of term ``t`` that holds all
    its cells (-1 where its cells lie in several). A level owned this way has no data left when
    its owner is left out (a nested term)."""
    gt = design.groups[t]
    out: dict[int, np.ndarray] = {}
    for u, gu in enumerate(design.groups):
        if u == t:
            continue
        lo = np.full(gu.n_levels, np.iinfo(np.int64).max)
        hi = np.full(gu.n_levels, -1)
        np.minimum.at(lo, gu.codes, gt.codes)
        np.maximum.at(hi, gu.codes, gt.codes)
        owner = np.where(lo == hi, hi, -1)
        if np.any(owner >= 0):
            out[u] = owner
    return out


@dataclass(frozen=True, eq=False)
class _Scoring:
    """The units of the scoring model (the design's cells for the binomial, its data rows for
    the beta-binomial, whose rows cannot be summed), with each unit's design ``cell``,
    successes ``y`` and trials ``n``, in level order of the left-out term ``t``: ``order``
    (the unit at each position), ``level`` of each position, ``starts`` of each level's run,
    each level's sum of ``log C(n, y)`` over its rows, and the nested term (if any) whose
    levels are left out with their owner: ``inner`` its index, ``inner_level`` per position
    (-1: a unit whose level of that term is known)."""

    design: Design
    t: int
    cell: np.ndarray
    y: np.ndarray
    n: np.ndarray
    order: np.ndarray
    level: np.ndarray
    starts: np.ndarray
    const: np.ndarray
    inner: int | None
    inner_level: np.ndarray


def _scoring(spec: ModelSpec, t: int) -> _Scoring:
    d = spec.design
    refuse_cross_validation(d, "leave-one-group-out")
    gt = d.groups[t]
    owned = _owned_levels(d, t)
    if len(owned) > 1:
        names = ", ".join(d.groups[u].name for u in owned)
        raise SpecError(
            f"leaving out a level of {gt.name!r} leaves levels of several other group terms "
            f"({names}) without data; leave-one-group-out integrates one nested term; choose "
            "group= one of those terms instead"
        )
    inner = next(iter(owned), None)
    pat = row_patterns(d)
    if spec.family == "beta_binomial":  # every data row on its own
        row = np.repeat(np.arange(pat.n_patterns), pat.count)
        cell, y, n = pat.cell[row], pat.y[row], pat.n[row]
    else:
        cell, y, n = np.arange(d.n_cells), d.y, d.n
    if inner is None:
        inner_level = np.full(len(cell), -1, dtype=np.int64)
    else:
        codes = d.groups[inner].codes[cell]
        inner_level = np.where(owned[inner][codes] >= 0, codes, -1)
    level = gt.codes[cell]
    order = np.lexsort((inner_level, level))  # by level of t, then nested level
    counts = np.bincount(level, minlength=gt.n_levels)
    if np.any(counts == 0):
        raise SpecError(f"every level of {gt.name!r} needs at least one row")
    # sum of the rows' log C(n, y), from the row patterns with their counts
    const = np.bincount(gt.codes[pat.cell], weights=pat.log_binom_const * pat.count,
                        minlength=gt.n_levels)
    return _Scoring(
        design=d, t=t, cell=cell, y=y, n=n, order=order, level=level[order],
        starts=np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64), const=const,
        inner=inner, inner_level=inner_level[order],
    )


def _fit_rows(fit: Fit, sc: _Scoring, positions: np.ndarray) -> Rows:
    """The scoring units at ``positions`` as rows of ``fit``'s linear predictor: its fixed
    columns by name, the offset, and each of its group terms' codes mapped by label (-1 for
    the left-out level and the levels nested in it, and for any level the fit lacks)."""
    spec = fit.spec
    d = sc.design
    cells = sc.cell[sc.order[positions]]
    names = list(d.fixed_names)
    missing = [c for c in spec.design.fixed_names if c not in names]
    if missing:
        raise SpecError(f"the {spec.pooling} fit has fixed effects ({', '.join(missing)}) that "
                        "the scoring model lacks")
    X = d.X[np.ix_(cells, [names.index(c) for c in spec.design.fixed_names])]
    offset = None if d.offset is None else d.offset[cells]
    codes, Z = [], []
    scoring_names = [g.name for g in d.groups]
    for term in spec.terms:
        if term.name not in scoring_names:
            raise SpecError(f"the {spec.pooling} fit has a group term {term.name!r} that the "
                            "scoring model lacks")
        u = scoring_names.index(term.name)
        gu = d.groups[u]
        if tuple(gu.coef_names) != tuple(term.group.coef_names):
            raise SpecError(f"the {spec.pooling} fit's term {term.name!r} has other varying "
                            "coefficients than the scoring model's")
        if u == sc.t:
            c = np.full(len(cells), -1, dtype=np.int64)
        else:
            mapped = pd.Index(term.group.labels).get_indexer(gu.labels)
            c = mapped[gu.codes[cells]].astype(np.int64)
            if u == sc.inner:
                c = np.where(sc.inner_level[positions] >= 0, -1, c)
        codes.append(c)
        Z.append(gu.Z[cells])
    return Rows(X=X, offset=offset, codes=tuple(codes), Z=tuple(Z))


# ---- adaptive Gauss-Hermite quadrature over a new level's effects --------------------------


# ---- per draw and level: the log density of a level's rows as a new level -----------------


def _term_prior(fit: Fit, name: str) -> NewLevelPrior:
    term = next(t for t in fit.spec.terms if t.name == name)
    return NewLevelPrior.of(*new_level_draws(fit.spec, fit.posterior, term))


def group_log_lik(fit: Fit, scoring: ModelSpec, *, group: str | None = None,
                  levels: np.ndarray | None = None) -> np.ndarray:
    """Per draw of ``fit`` and per level of the group term ``group`` of ``scoring`` (the
    partial- or no-pooling model of the same data, which knows the levels): the log density
    of that level's rows *as a new level* (its effects, and those of levels nested in it,
    integrated out; see the module docstring), shape (S, G). ``levels``: only those level
    codes (ascending)."""
    t = logo_term(scoring, group)
    sc = _scoring(scoring, t)
    G = scoring.design.groups[t].n_levels
    levels = np.arange(G) if levels is None else np.asarray(levels, dtype=int)
    positions = np.flatnonzero(np.isin(sc.level, levels))
    lv = sc.level[positions]
    starts = np.flatnonzero(np.r_[True, np.diff(lv) != 0])
    d = sc.design
    units = sc.order[positions]
    cells, y, n = sc.cell[units], sc.y[units], sc.n[units]
    eta0 = linear_predictor(fit.spec, fit.posterior, _fit_rows(fit, sc, positions))
    name = d.groups[t].name
    lik = CellLikelihood.of(fit.spec, fit.posterior)
    if fit.spec.pooling == "complete" or name not in {x.name for x in fit.spec.terms}:
        ll = segment_sums(lik.log_lik(y, n, eta0), starts)
    else:
        inner = None
        if sc.inner is not None:
            gi = d.groups[sc.inner]
            inner_name = gi.name
            if inner_name in {x.name for x in fit.spec.terms}:
                il = sc.inner_level[positions]
                own = il >= 0
                # runs of nested levels (positions are sorted by level, then nested level)
                in_starts = np.flatnonzero(own & np.r_[True, (np.diff(il) != 0)
                                                       | (np.diff(lv) != 0)])
                in_outer = np.searchsorted(starts, in_starts, side="right") - 1
                inner = (gi.Z[cells], in_starts, in_outer, _term_prior(fit, inner_name), own)
        ll = new_level_log_density(lik, eta0, y, n, d.groups[t].Z[cells], starts,
                                   _term_prior(fit, name), inner)
    return ll + sc.const[levels][None, :]


# ---- refits without one level ---------------------------------------------------------------


def refit_without(fit: Fit, levels: list[int], scoring: ModelSpec, group: str, *,
                  seed: int | None = None) -> Fit:
    """``fit``'s model fitted again without the rows of ``levels`` (codes of the group term
    ``group`` of ``scoring``): the same priors, standardization, sampler settings (the seed
    replaced by ``seed`` when given) and repair policy, or method="approx"'s approximation."""
    sub = without_levels(scoring, group, levels)
    if fit.spec.pooling == "complete":
        d = replace(sub.design, groups=())
        if tuple(d.fixed_names) != tuple(fit.spec.design.fixed_names):
            raise SpecError("the complete-pooling fit has other fixed effects than the "
                            "partial-pooling fit")
        spec = replace(fit.spec, design=d, terms=())
    elif fit.spec is scoring:
        spec = sub
    else:
        spec = without_levels(fit.spec, group, levels)
    config = fit.config if seed is None else replace(fit.config, seed=int(seed))
    with warnings.catch_warnings(action="ignore"):
        if fit.method == "approx":  # an approximate fit is refitted the same way
            return approx_fit(spec, config, log_likelihood=False, sensitivity=False)
        return repair_fit(spec, config, log_likelihood=False)


def log_mean_exp(ll: np.ndarray) -> np.ndarray:
    return logsumexp(ll, axis=0) - math.log(ll.shape[0])


# ---- the comparison ---------------------------------------------------------------------------


def _ess(x: np.ndarray, C: int) -> np.ndarray:
    """Bulk ESS of each column of x (S, G) with C chains (arviz-stats)."""
    from arviz_stats.base import array_stats

    xs = x.reshape(C, -1, x.shape[-1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        e = np.asarray(array_stats.ess(np.moveaxis(xs, -1, 0), chain_axis=-2, draw_axis=-1))
    return np.where(np.isfinite(e) & (e > 0), e, x.shape[0])


def mcse_log_mean_exp(ll: np.ndarray, C: int) -> np.ndarray:
    """Monte Carlo SE of ``log mean_s exp(ll_s)`` per column (delta method: the relative SE
    of the mean of ``exp(ll)``, with its effective sample size)."""
    w = np.exp(ll - ll.max(axis=0))
    m = w.mean(axis=0)
    return w.std(axis=0, ddof=1) / (m * np.sqrt(_ess(w, C)))


def _psis(fit: Fit, ll: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PSIS-LOGO: elpd_j, Pareto k and a Monte Carlo SE per group. The SE is that of the
    self-normalized importance-sampling estimate ``log sum_s w_s p_s`` (delta method,
    ``sqrt(sum_s w_s^2 (p_s - E)^2) / E`` with normalized smoothed weights ``w``), scaled by
    the relative efficiency of the draws of ``p_s``."""
    import arviz_stats as azs
    import xarray as xr

    post = fit.posterior
    C, D = post.sizes["chain"], post.sizes["draw"]
    tree = xr.DataTree.from_dict({
        "posterior": post,
        "log_likelihood": xr.Dataset({"y": (("chain", "draw", "group"),
                                            ll.reshape(C, D, -1))}),
    })
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = azs.loo(tree, pointwise=True)
    elpd = np.asarray(res.elpd_i.values, dtype=float)
    lw = np.asarray(res.log_weights.values, dtype=float).reshape(C * D, -1)
    lw = lw - logsumexp(lw, axis=0)
    p = np.exp(ll - ll.max(axis=0))
    w = np.exp(lw)
    e = (w * p).sum(axis=0)
    var = (w**2 * (p - e) ** 2).sum(axis=0)
    reff = _ess(p, C) / (C * D)
    mcse = np.sqrt(var / np.minimum(reff, 1.0)) / e
    return elpd, np.asarray(res.pareto_k.values, dtype=float), mcse


def logo_model(fit: Fit, scoring: ModelSpec, *, group: str | None = None, exact: bool,
               max_refits: int = EXACT_MAX_GROUPS
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """elpd_j, Pareto k (NaN where not PSIS), method and Monte Carlo SE per level of the group
    term ``group`` for one fit; ``scoring`` is the partial- or no-pooling model that defines
    the levels."""
    t = logo_term(scoring, group)
    name = scoring.terms[t].name
    G = scoring.terms[t].group.n_levels
    ll = group_log_lik(fit, scoring, group=name)
    constant = np.ptp(ll, axis=0) < 1e-9
    elpd = np.full(G, np.nan)
    k = np.full(G, np.nan)
    mcse = np.zeros(G)
    method = np.array(["psis"] * G, dtype=object)
    elpd[constant] = ll[0, constant]
    method[constant] = "exact"
    todo = ~constant
    if exact:
        refit = np.flatnonzero(todo)
    else:
        if todo.any():
            e, kk, se = _psis(fit, ll[:, todo])
            elpd[todo], k[todo], mcse[todo] = e, kk, se
        bad = np.flatnonzero(todo & (k > K_THRESHOLD))
        refit = bad[np.argsort(-k[bad])][:max_refits]
    for j in refit:
        sub = refit_without(fit, [int(j)], scoring, name)
        llj = group_log_lik(sub, scoring, group=name, levels=np.array([j]))
        elpd[j] = float(log_mean_exp(llj)[0])
        mcse[j] = float(mcse_log_mean_exp(llj, sub.posterior.sizes["chain"])[0])
        method[j] = "refit"
    return elpd, k, method, mcse


def logo_compare(fits: Mapping[str, Fit], *, group: str | None = None,
                 exact: bool | None = None, max_refits: int = EXACT_MAX_GROUPS,
                 refit: bool = True) -> LogoComparison:
    """Leave-one-group-out elpd of each pooling fit (keys ``complete``, ``none``,
    ``partial``), leaving out the levels of the group term ``group`` (default: the model's
    only group term). ``exact`` (default: at most :data:`EXACT_MAX_GROUPS` levels) refits every
    level; otherwise PSIS with exact refits of up to ``max_refits`` levels whose Pareto k
    exceeds :data:`K_THRESHOLD`. ``refit=False``: PSIS only, no sampling at all (levels with
    a bad k are counted in ``n_bad_k`` and named in the notes)."""
    ref = fits["partial"] if "partial" in fits else fits["none"]
    scoring = ref.spec
    refuse_cross_validation(scoring.design, "leave-one-group-out")
    t = logo_term(scoring, group)
    term = scoring.terms[t]
    labels = [str(v) for v in term.group.labels]
    G = len(labels)
    if not refit:
        exact, max_refits = False, 0
    elif exact is None:
        exact = G <= EXACT_MAX_GROUPS
    pw, ks, meth, se = {}, {}, {}, {}
    for key, f in fits.items():
        e, k, m, mc = logo_model(f, scoring, group=term.name, exact=exact,
                                 max_refits=max_refits)
        pw[key], ks[key], meth[key], se[key] = e, k, m, mc
    pointwise = pd.DataFrame(pw, index=pd.Index(labels, name=term.name))
    kdf = pd.DataFrame(ks, index=pointwise.index)
    mdf = pd.DataFrame(meth, index=pointwise.index)
    mcse = pd.DataFrame(se, index=pointwise.index)
    best = max(pw, key=lambda m: pw[m].sum())
    rows = {}
    for key, e in pw.items():
        diff = e - pw[best]
        k = ks[key]
        psis_k = k[mdf[key].to_numpy() == "psis"]
        rows[key] = {
            "elpd": float(e.sum()),
            "se": float(math.sqrt(G * np.var(e, ddof=1))) if G > 1 else float("nan"),
            "elpd_diff": float(diff.sum()),
            "dse": float(math.sqrt(G * np.var(diff, ddof=1))) if G > 1 else float("nan"),
            "n_psis": int(np.sum(mdf[key] == "psis")),
            "n_refit": int(np.sum(mdf[key] == "refit")),
            "n_exact": int(np.sum(mdf[key] == "exact")),
            "pareto_k_max": float(np.max(psis_k)) if psis_k.size else float("nan"),
            "n_bad_k": int(np.sum(psis_k > K_THRESHOLD)),
        }
    table = pd.DataFrame.from_dict(rows, orient="index").sort_values("elpd", ascending=False)
    table.index.name = "model"
    table.attrs["unit"] = LOGO_UNIT
    notes = []
    left = int(table["n_bad_k"].sum())
    if left:
        notes.append(
            f"{left} group estimate(s) keep Pareto k > {K_THRESHOLD} (at most {max_refits} "
            "refits per model): their PSIS-LOGO values are unreliable."
        )
    return LogoComparison(group=term.name, table=table, pointwise=pointwise, pareto_k=kdf,
                          method=mdf, mcse=mcse, exact=bool(exact), notes=tuple(notes))
