"""Leave-one-group-out (LOGO) cross-validation: how well does each pooling strategy predict
a *new* group?

The unit is a group: for group j, ``elpd_j = log p(y_j | y_-j)``, the log predictive density
of all of group j's rows by a model fitted without them, with group j treated as a group the
model has never seen:

* **complete pooling**: the common intercept (and coefficients) predict every row;
* **no pooling**: a new group has no estimate of its own, only its prior: its intercept is
  drawn from the unpooled prior ``normal(0, s)`` (on the engine's scale: the intercept at the
  predictors' means), the coefficients come from the other groups;
* **partial pooling**: its intercept is drawn from the population, ``a_new ~ N(a_bar, sigma)``.

For no and partial pooling the new group's intercept is integrated out: per posterior draw of
the shared parameters, ``p(y_j | theta) = integral prod_rows Binom(y_r | n_r, p(eta_r + u))
N(u | 0, tau) du`` (``tau = sigma``, or ``s`` for no pooling), computed by adaptive
Gauss-Hermite quadrature (21 nodes around the mode of the integrand, found by Fisher scoring;
within 1e-6 of a dense quadrature for these smooth one-dimensional integrands, see the tests).
:func:`group_log_lik` returns these per-draw, per-group log densities.

Two ways to get ``elpd_j``:

* **exact refits** (when there are at most :data:`EXACT_MAX_GROUPS` groups): the model is
  fitted again without group j's rows (same priors, the same standardization of the
  predictors as the full fit, the same sampler settings and repair policy), and
  ``elpd_j = log mean_s p(y_j | theta_s)`` over the refit's draws;
* **PSIS-LOGO** otherwise: the group-level log densities above, from the full fit, go through
  Pareto-smoothed importance sampling (``arviz_stats.loo`` with one "observation" per group).
  Because the group's own intercept is integrated out, the importance ratio
  ``1 / p(y_j | theta)`` is exactly the one that turns the posterior of the shared parameters
  into their posterior without group j. Groups whose Pareto k exceeds
  :data:`K_THRESHOLD` (0.7) are refitted exactly (at most ``max_refits``; any left are
  counted in ``n_bad_k``).

When group j's log density does not depend on any estimated parameter (no pooling with an
intercept only: a new group's prediction is its prior predictive), it is computed exactly
without a refit.

Scope: the compared grouping factor must be the model's only group term, with a varying
intercept only (no varying slopes); otherwise :func:`logo_compare` raises
:class:`~poolwise.errors.SpecError` and :func:`poolwise.compare_pooling` leaves LOGO out with
a note. Fixed predictors are supported.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy.special import gammaln, logsumexp

from poolwise.errors import SpecError
from poolwise.model import links
from poolwise.model.naming import fixed_name, sd_name

if TYPE_CHECKING:
    from poolwise.inference.fitted import Fit
    from poolwise.model.spec import ModelSpec, TermSpec

__all__ = [
    "LOGO_UNIT",
    "EXACT_MAX_GROUPS",
    "K_THRESHOLD",
    "LogoComparison",
    "group_log_lik",
    "logo_compare",
]

#: at most this many groups: every group is refitted exactly
EXACT_MAX_GROUPS = 10
#: Pareto k above which a group's PSIS estimate is replaced by an exact refit
K_THRESHOLD = 0.7

LOGO_UNIT = (
    "one group: all rows of a new, unseen group (leave-one-group-out; the group's own "
    "intercept is integrated over its prior or population distribution)"
)

_AGH_X, _AGH_W = np.polynomial.hermite_e.hermegauss(21)  # weights sum to sqrt(2 pi)
_LOG_AGH_W = np.log(_AGH_W)
_LOG_2PI = math.log(2.0 * math.pi)

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


# ---- the new-group log density per draw ---------------------------------------------------


def _only_term(spec: ModelSpec, group: str | None) -> TermSpec:
    terms = spec.terms
    if len(terms) != 1:
        raise SpecError(
            "leave-one-group-out needs a model with exactly one group term; "
            f"{spec.formula.text!r} has {len(terms)}"
        )
    t = terms[0]
    if group is not None and t.name != group:
        raise SpecError(f"the group term is {t.name!r}, not {group!r}")
    if tuple(t.group.coef_names) != ("Intercept",):
        raise SpecError(
            f"leave-one-group-out is implemented for a varying intercept only; the term "
            f"{t.group.term} also has varying slopes ({', '.join(t.group.coef_names[1:])})"
        )
    return t


def _draws(post: Any, name: str) -> np.ndarray:
    return np.asarray(post[name].values, dtype=float).reshape(-1)


def _fixed_eta(fit: Fit, X: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
    """``X beta`` (original scale) per draw, shape (S, cells), with ``X``'s columns named
    ``names`` (those of the scoring design); for no pooling plus the shift that takes an
    engine-scale group intercept to the original scale."""
    spec = fit.spec
    post = fit.posterior
    S = post.sizes["chain"] * post.sizes["draw"]
    d = spec.design
    own = d.fixed_names
    eta = np.zeros((S, X.shape[0]))
    if own:
        beta = np.column_stack([_draws(post, fixed_name(c)) for c in own])
        eta = beta @ X[:, [names.index(c) for c in own]].T
    if spec.pooling == "none" and "Intercept" not in own and d.x_center is not None and own:
        shift = -(beta * np.asarray(d.x_center)[None, :]).sum(axis=1)
        eta = eta + shift[:, None]
    return eta


def _integrated(link: str, eta0: np.ndarray, y: np.ndarray, n: np.ndarray,
                starts: np.ndarray, tau: np.ndarray) -> np.ndarray:
    """``log integral prod_c Binom(y_c | n_c, p(eta0_c + u)) N(u | 0, tau) du`` (without the
    binomial coefficients) for each group (cells ``starts[j]:starts[j+1]``) and draw.
    eta0: (S, C); tau: (S,). Returns (S, G)."""
    L = links.get(link)
    S = eta0.shape[0]
    G = len(starts)
    tau = np.broadcast_to(np.asarray(tau, dtype=float), (S,))[:, None]  # (S, 1)
    tau = np.maximum(tau, 1e-300)
    gidx = np.repeat(np.arange(G), np.diff(np.append(starts, eta0.shape[1])))

    def gsum(a: np.ndarray) -> np.ndarray:
        return np.add.reduceat(a, starts, axis=-1)

    u = np.zeros((S, G))
    for _ in range(50):
        eta = eta0 + u[:, gidx]
        p = L.inverse(eta)
        dp = L.dp_deta(eta)
        with np.errstate(divide="ignore", invalid="ignore"):
            score = np.where(dp > 0, (y - n * p) * dp / np.maximum(p * (1.0 - p), 1e-300), 0.0)
        info = gsum(L.fisher_weight(n, eta)) + 1.0 / tau**2
        step = np.clip((gsum(score) - u / tau**2) / info, -2.0, 2.0)
        u = u + step
        if np.max(np.abs(step)) < 1e-10:
            break
    eta = eta0 + u[:, gidx]
    s = 1.0 / np.sqrt(gsum(L.fisher_weight(n, eta)) + 1.0 / tau**2)  # (S, G)
    terms = []
    for x, lw in zip(_AGH_X, _LOG_AGH_W, strict=True):
        uk = u + s * x
        lp, lq = L.log_p_q(eta0 + uk[:, gidx])
        ll = gsum(np.where(y > 0, y * lp, 0.0) + np.where(n - y > 0, (n - y) * lq, 0.0))
        log_prior = -0.5 * (uk / tau) ** 2 - np.log(tau) - 0.5 * _LOG_2PI
        terms.append(lw + ll + log_prior + 0.5 * x**2)
    return np.log(s) + logsumexp(np.stack(terms), axis=0)


def _cells_of(spec_full: ModelSpec, term_name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cell order sorted by group, the start of each group's cells, and each group's sum of
    row-level binomial coefficients (so that the result is the sum of row log-likelihoods)."""
    d = spec_full.design
    g = next(t.group for t in spec_full.terms if t.name == term_name)
    order = np.argsort(g.codes, kind="stable")
    counts = np.bincount(g.codes, minlength=g.n_levels)
    if np.any(counts == 0):
        raise SpecError(f"every level of {term_name!r} needs at least one row")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    row_g = g.codes[d.row_cell]
    const = gammaln(d.row_n + 1) - gammaln(d.row_y + 1) - gammaln(d.row_n - d.row_y + 1)
    const_g = np.bincount(row_g, weights=const, minlength=g.n_levels)
    return order, starts, const_g


def group_log_lik(fit: Fit, scoring: ModelSpec, *, levels: np.ndarray | None = None
                  ) -> np.ndarray:
    """Per draw of ``fit`` and per level of the group term of ``scoring`` (the partial- or
    no-pooling model of the same data, which knows the groups): the log density of that
    level's rows *as a new group* (its intercept integrated out; see the module docstring),
    shape (S, G). ``levels``: only those level codes (ascending)."""
    term = _only_term(scoring, None)
    d = scoring.design
    order, starts, const_g = _cells_of(scoring, term.name)
    g = term.group
    if levels is not None:
        levels = np.asarray(levels, dtype=int)
        keep = np.isin(g.codes[order], levels)
        order = order[keep]
        counts = np.bincount(g.codes[order], minlength=g.n_levels)[levels]
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        const_g = const_g[levels]
    X = d.X[order]
    y, n = d.y[order], d.n[order]
    eta0 = _fixed_eta(fit, X, d.fixed_names)
    pooling = fit.spec.pooling
    if pooling == "complete":
        lp, lq = links.get(fit.spec.link).log_p_q(eta0)
        ll = np.add.reduceat(np.where(y > 0, y * lp, 0.0) + np.where(n - y > 0, (n - y) * lq, 0.0),
                             starts, axis=-1)
    else:
        fterm = fit.spec.terms[0]
        if pooling == "partial":
            tau = _draws(fit.posterior, sd_name(fterm, "Intercept"))
        else:
            tau = np.full(eta0.shape[0], float(fterm.sd_fixed[0]))
        ll = _integrated(fit.spec.link, eta0, y, n, starts, tau)
    return ll + const_g[None, :]


# ---- refits without one group ---------------------------------------------------------------


def _without_level(spec: ModelSpec, j: int) -> ModelSpec:
    """``spec`` with level ``j`` of its (only) group term and all its rows removed; priors and
    the standardization (centers and scales) of the full model are kept."""
    from poolwise.data.design import GroupDesign  # noqa: F401 - documents the replaced type

    d = spec.design
    t = spec.terms[0]
    g = t.group
    keep_cell = g.codes != j
    new_cell = np.cumsum(keep_cell) - 1
    keep_row = keep_cell[d.row_cell]
    codes = g.codes[keep_cell]
    codes = codes - (codes > j)
    lv = np.arange(g.n_levels) != j
    g2 = replace(
        g, labels=g.labels[lv], codes=codes, Z=g.Z[keep_cell],
        level_rows=g.level_rows[lv], level_trials=g.level_trials[lv],
        level_successes=g.level_successes[lv],
    )
    ry, rn = d.row_y[keep_row], d.row_n[keep_row]
    const = float(np.sum(gammaln(rn + 1) - gammaln(ry + 1) - gammaln(rn - ry + 1)))
    d2 = replace(
        d, X=d.X[keep_cell], y=d.y[keep_cell], n=d.n[keep_cell], groups=(g2,),
        row_cell=new_cell[d.row_cell[keep_row]], row_y=ry, row_n=rn,
        row_number=d.row_number[keep_row], log_binom_const=const,
    )
    t2 = replace(t, group=g2, centered=np.zeros(g2.n_levels, dtype=bool))
    s2 = replace(spec, design=d2, terms=(t2,))
    return s2.with_parameterization({t2.name: t.requested})


def _refit_without(fit: Fit, j: int, scoring: ModelSpec) -> Fit:
    from poolwise.inference.repair import repair_fit

    if fit.spec.pooling == "complete":
        base = _without_level(scoring, j)
        d = replace(base.design, groups=())
        if tuple(d.fixed_names) != tuple(fit.spec.design.fixed_names):
            raise SpecError("the complete-pooling fit has other fixed effects than the "
                            "partial-pooling fit")
        spec = replace(fit.spec, design=d, terms=())
    else:
        spec = _without_level(fit.spec, j)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return repair_fit(spec, fit.config, log_likelihood=False)


def _log_mean_exp(ll: np.ndarray) -> np.ndarray:
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


def _mcse_log_mean_exp(ll: np.ndarray, C: int) -> np.ndarray:
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


def logo_model(fit: Fit, scoring: ModelSpec, *, exact: bool, max_refits: int = EXACT_MAX_GROUPS
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """elpd_j, Pareto k (NaN where not PSIS), method and Monte Carlo SE per group for one fit;
    ``scoring`` is the partial- or no-pooling model that defines the groups."""
    G = _only_term(scoring, None).group.n_levels
    ll = group_log_lik(fit, scoring)
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
        sub = _refit_without(fit, int(j), scoring)
        llj = group_log_lik(sub, scoring, levels=np.array([j]))
        elpd[j] = float(_log_mean_exp(llj)[0])
        mcse[j] = float(_mcse_log_mean_exp(llj, sub.posterior.sizes["chain"])[0])
        method[j] = "refit"
    return elpd, k, method, mcse


def logo_compare(fits: Mapping[str, Fit], *, group: str | None = None,
                 exact: bool | None = None, max_refits: int = EXACT_MAX_GROUPS,
                 refit: bool = True) -> LogoComparison:
    """Leave-one-group-out elpd of each pooling fit (keys ``complete``, ``none``,
    ``partial``). ``exact`` (default: at most :data:`EXACT_MAX_GROUPS` groups) refits every
    group; otherwise PSIS with exact refits of up to ``max_refits`` groups whose Pareto k
    exceeds :data:`K_THRESHOLD`. ``refit=False``: PSIS only, no sampling at all (groups with
    a bad k are counted in ``n_bad_k`` and named in the notes)."""
    ref = fits["partial"] if "partial" in fits else fits["none"]
    scoring = ref.spec
    term = _only_term(scoring, group)
    labels = [str(v) for v in term.group.labels]
    G = len(labels)
    if not refit:
        exact, max_refits = False, 0
    elif exact is None:
        exact = G <= EXACT_MAX_GROUPS
    pw, ks, meth, se = {}, {}, {}, {}
    for key, f in fits.items():
        if f.spec.pooling != "complete":
            _only_term(f.spec, term.name)
        e, k, m, mc = logo_model(f, scoring, exact=exact, max_refits=max_refits)
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
