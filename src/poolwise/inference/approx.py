"""``method="approx"``: a posterior without a sampler, for one grouping factor with a varying
intercept (and up to two varying slopes) under any pooling, checked against the exact density
of its low-dimensional part.

The model: binomial cells, ``eta = offset + X beta + u[level]``, ``u ~ N(0, sd^2)`` (the one
linear predictor, :mod:`poolwise.model.predictor`, on the engine's standardized scale where
the priors apply). Given ``theta = (beta, log sd)`` the levels are independent, so

    log p(theta | y) = log prior(theta) + log sd
                       + sum over levels of log int prod_c Binom(y_c | n_c, p(eta0_c + u))
                                                     N(u | 0, sd^2) du  + const

is exact up to quadrature error: each level's integral by adaptive Gauss-Hermite quadrature
(:func:`poolwise.model.quadrature.intercept_log_integrals`, every level at once, compiled;
groups with the same cells share theirs).

**Varying slopes** (``(1 + x | g)``, up to three varying coefficients): the same with
``eta = eta0 + Z_c v[level]``, ``v ~ N(0, Sigma)``, ``Sigma = diag(sd) R diag(sd)``, and theta
also holding every SD's log and, for a correlated term, the canonical partial correlations on
the atanh scale (the sampler's own parameters, Jacobians and LKJ prior,
:mod:`poolwise.engine.density`). Each level's integral is a C-d adaptive Gauss-Hermite
quadrature on a tensor grid (``KD_NODES`` per dimension around the level's mode, compiled over
every (draw, level) pair: :func:`poolwise.model.quadrature.kd_log_integrals`), and each
group's effects are drawn exactly by rejection from a Gaussian envelope that the concave
log-likelihood guarantees (:func:`poolwise.model.quadrature.kd_draws`). Accuracy
against NUTS on the bundled example with ``(1 + urban | district)``: population-level means
within 0.03 NUTS posterior sd, their sds within 3%, group means within 0.04 sd at the 95th
percentile (docs/reliability.md A.9). The tensor grid makes it costlier per level than one
intercept (49 nodes for two coefficients instead of 15), and groups with a slope rarely share
their cells: at 10,000 groups of two rows it takes 60 s against NUTS's 132 s (bench/README.md,
"sixth round").

The other poolings use the same machinery (:class:`_Problem`), with a smaller ``theta``:

* **no pooling** (``pooling="none"``): the group intercepts' prior SD is fixed
  (``term.sd_fixed``, the ``unpooled`` prior), so ``theta = beta`` (no log sd, no Jacobian)
  and each level's integral and conditional draws take that SD; the intercepts' prior is
  centred at 0 on the engine's scale (no pooling has no fixed intercept: ``mu_index`` is -1),
  as the sampler's density has it. With no fixed effect at all (``y ~ 1 + (1 | g)``) theta has
  no dimension: no mode, no importance sampling, every draw exact;
* **complete pooling** (``pooling="complete"``): no group term, so no integral: the log
  density is the log-likelihood of every cell (:class:`poolwise.model.likelihood.CellLikelihood`
  on eta from :mod:`poolwise.model.predictor`) plus the log prior; no group draws.

1. the mode of ``theta`` (BFGS, gradients by central differences over the few dimensions, all
   evaluated in one call) and the curvature there (central second differences);
2. ``M`` draws from a multivariate Student-t (``PROPOSAL_DF`` degrees of freedom) at the mode
   with that curvature (where their Pareto k is ``ADAPT_K`` or more, a second round at the
   first's weighted moments), importance-weighted against the exact log density above; the log
   weights Pareto-smoothed (PSIS, arviz-stats' ``psislw`` as
   :func:`poolwise.inference.power_scaling.psis_log_weights` computes it) and resampled to
   ``chains x draws`` draws, reported as ``chains`` chains of independent draws (resampling
   repeats proposals: the fixed effects' and SD's information is that of the importance
   sampling's effective sample size, the check's ``is_ess``, which the status lines give and
   the summary's ESS of those columns, computed as for distinct draws, can exceed; their
   MCSE counts the repeats);
3. each level's intercept per draw from its conditional posterior given ``theta``, exactly
   (rejection from an envelope of its log-concave density,
   :func:`poolwise.model.quadrature.intercept_draws`; the draws that resampling gave the same
   proposal share its envelopes, :func:`_distinct`);
4. the draws go back to the original scale (:func:`poolwise.model.scale.to_original_scale`),
   under the names the sampler's posterior has, so everything downstream reads them alike.

**The self-check** (:mod:`poolwise.inference.diagnostics.approx_check`, its numbers saved
with the fit): each failure is an error finding that makes the fit not ok, says why and gives
the command that runs NUTS: (a) quadrature refinement: the log density at the mode with
``REFINED_NODES`` nodes per level instead of ``NODES``, and every group effect drawn; (b) the
Pareto k of the importance weights; (c) the importance sampling's effective sample size.
(a) runs only where there are group integrals, (b) and (c) only where theta has a dimension;
a part that does not run is saved as such (``ApproxCheck.quadrature`` / ``importance``) and
shown as "not applicable", never as passed.

**Weights**: frequency weights are the rows' counts, in the cells' successes and trials as
for the sampler. Survey weights give the sampler's pseudo-likelihood (each row's binomial
log-likelihood times its weight, the weights scaled to sum to the rows): the cells' ``y`` and
``n`` above are then the sums of ``w y`` and ``w n`` over their rows
(:func:`poolwise.data.cells.likelihood_cells`, what the sampler's binomial density takes),
whose kernel ``y log p + (n - y) log(1 - p)`` is the weighted sum of the rows' kernels and,
not being whole numbers, stays concave in eta (the integrals, the modes and the exact draws
need no more). The fit carries the same caveat as a NUTS fit (model-based intervals, Kish's
effective sample size), and row-level LOO, leave-one-group-out and K-fold refuse it alike.

Not covered (a :class:`~poolwise.errors.SpecError` naming ``--method nuts``): the
beta-binomial, several group terms (crossed or nested), more than three varying coefficients
per group.

Why one module: the steps above are one pipeline over one :class:`_Problem` (its log density
is what the mode, the curvature, the importance weights and the refinement check all
evaluate), and the self-check's numbers are made where the steps that they judge run; the
check's rules live in :mod:`poolwise.inference.diagnostics.approx_check`, the model itself in
the model layer.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from poolwise.data.cells import likelihood_cells
from poolwise.data.patterns import observed_group
from poolwise.errors import SpecError
from poolwise.inference.diagnostics import diagnose
from poolwise.inference.diagnostics.approx_check import (
    APPROX_ATTR,
    MIN_IS_ESS,
    MIN_IS_ESS_FRACTION,
    PARETO_K_MAX,
    QUADRATURE_TOL,
    nuts_command,
)
from poolwise.inference.fitted import Fit
from poolwise.inference.plan import approx_group_dtype
from poolwise.model import families, links
from poolwise.model.likelihood import CellLikelihood, log_likelihood_group
from poolwise.model.naming import cor_name, fixed_name, sd_name, total_name
from poolwise.model.predictor import Rows, engine_coefficients, linear_predictor
from poolwise.model.quadrature import (
    NewLevelPrior,
    intercept_draws,
    intercept_log_integrals,
    kd_draws,
    kd_log_integrals,
)
from poolwise.model.scale import to_original_scale
from poolwise.progress import phase

if TYPE_CHECKING:
    from poolwise.engine.sampler import SamplerConfig
    from poolwise.model.spec import ModelSpec

__all__ = [
    "MIN_IS_ESS",
    "MIN_IS_ESS_FRACTION",
    "PARETO_K_MAX",
    "QUADRATURE_TOL",
    "ApproxCheck",
    "METHODS",
    "approx_fit",
    "check_supported",
]

#: the methods of a fit: the sampler (NUTS), or this module's approximation
METHODS: tuple[str, ...] = ("nuts", "approx")
#: Gauss-Hermite nodes per level for the marginal density, and for its refinement check
NODES = 15
#: with C varying coefficients (slopes), nodes per dimension of each level's tensor grid,
#: refined to 2 n + 1 per dimension up to KD_MAX_NODES (7 -> 15 -> 31 for two). The error
#: adds up over the levels: at 10,000 groups of two cells 5 a side moves the log density at
#: the mode by 0.18 against 23 (the check would refine it), 7 by 0.004
KD_NODES = {2: 7, 3: 5}
KD_MAX_NODES = {2: 31, 3: 11}
REFINED_NODES = 31
#: automatic node refinement goes up to this many nodes per level (15 -> 31 -> 63)
MAX_NODES = 63
#: proposals: at least this many, and at least chains x draws
MIN_PROPOSALS = 2000
PROPOSAL_DF = 7
#: a second round of proposals where the first's Pareto k reaches ADAPT_K: a t with ADAPT_DF
#: degrees of freedom at the weighted moments of the first, the covariance times ADAPT_INFLATE
ADAPT_K = 0.5
ADAPT_DF = 4
ADAPT_INFLATE = 1.5
#: draws per batch (memory: batch x cells x 8 bytes for eta)
BATCH_CELLS = 4_000_000
#: group effects drawn per call of the compiled kernel at most: Ctrl-C is acted on between
#: calls (each about 0.1 s on 2 cores), not after every group of every draw
DRAW_BATCH_VALUES = 4_000_000


def check_supported(spec: ModelSpec) -> None:
    """SpecError unless the approximation covers ``spec`` (see the module docstring)."""
    d = spec.design

    def refuse(what: str) -> None:
        raise SpecError(f"method='approx' does not yet cover {what}; fit it with "
                        f"{nuts_command()}")

    if spec.family != "binomial":
        refuse(f"the {spec.family} family (only the binomial)")
    if spec.pooling == "complete":
        if not d.fixed_names:
            refuse("a model with no parameter (no fixed effect and no group term)")
        return
    if len(spec.terms) != 1:
        kinds = "crossed or nested group terms" if len(spec.terms) > 1 else "no group term"
        refuse(f"{kinds} ({len(spec.terms)} group terms: "
               f"{', '.join(t.name for t in spec.terms)}); only one grouping factor")
    term = spec.terms[0]
    if term.group.n_coefs > max(KD_NODES):
        refuse(f"{term.group.n_coefs} varying coefficients ({' + '.join(term.group.coef_names)}"
               f" | {term.name}); at most {max(KD_NODES)} per group")


def method_words(pooling: str) -> str:
    """How the approximation makes the draws of a model with this pooling, in words (the
    command line's header)."""
    if pooling == "complete":
        return ("the fixed effects by importance sampling from their exact posterior; no group "
                "effects; checked against that posterior")
    if pooling == "none":
        return ("the fixed effects by importance sampling from their exact marginal posterior, "
                "each group's own effects (their fixed prior SDs) by quadrature and exact draws; "
                "checked against that posterior")
    return ("the fixed effects and group SDs by importance sampling from their exact marginal "
            "posterior, each group's effects by quadrature and exact draws; checked against "
            "that posterior")


@dataclass(frozen=True)
class _Problem:
    """The low-dimensional part of one model on the engine's scale: the cells (``rows``
    without the group, so that eta is ``eta0``), their level codes, successes, trials, the
    link's kernel id and the priors of ``theta``: ``(beta, log sd)`` under partial pooling,
    ``beta`` alone under no pooling (the group intercepts' prior SD is fixed,
    ``term.sd_fixed``) and complete pooling (no group term: no integral, the cells'
    log-likelihood itself).

    The successes and trials are the cells' as the sampler's binomial density has them
    (:func:`poolwise.data.cells.likelihood_cells`): with survey weights the sums of ``w y``
    and ``w n`` over each cell's rows (the weights scaled to sum to the rows), whose kernel
    ``y log p + (n - y) log(1 - p)`` is the pseudo-likelihood (each row's times its weight).
    They are not whole numbers then, which nothing here assumes: the kernel stays concave in
    eta, so each level's conditional density stays log-concave for the rejection sampler.

    Groups whose cells are the same (the same predictors, offset, successes and trials: one
    binomial row of 12 trials with 3 successes, say) have the same integral and the same
    conditional posterior given theta: the problem keeps one *level* per distinct set of
    cells, with its number of groups (``weight``), and ``members`` says which groups each
    level stands for (``(groups, starts, n_groups)``).

    With C > 1 varying coefficients (an intercept and slopes) theta also holds the C SDs'
    logs and, for a correlated term, the canonical partial correlations on the atanh scale
    (the sampler's parameters, :mod:`poolwise.engine.density`, with the same Jacobians and
    LKJ prior); the cells are kept in runs per level (``starts``) with their varying columns
    ``Z`` for the general quadrature (:func:`poolwise.model.quadrature.
    new_level_log_density`, ``KD_NODES`` per dimension) and the exact draws
    (:func:`poolwise.model.quadrature.kd_draws`)."""

    spec: Any
    rows: Rows
    codes: np.ndarray
    n_levels: int
    y: np.ndarray
    n: np.ndarray
    link_id: int
    weight: np.ndarray
    members: tuple[np.ndarray, np.ndarray, int]
    nodes: int = NODES
    starts: np.ndarray | None = None

    @classmethod
    def of(cls, spec: ModelSpec, nodes: int | None = None) -> _Problem:
        d = spec.design
        rows = Rows.of_design(d, engine_scale=True)
        y, n = (np.asarray(a, dtype=float) for a in likelihood_cells(d))  # survey: weighted
        link_id = links.get(spec.link).kernel_id
        if not spec.terms:  # complete pooling: every cell, no group
            none = np.zeros(0, dtype=np.int64)
            return cls(spec, rows, none, 0, y, n, link_id, np.zeros(0),
                       (none, np.zeros(1, dtype=np.int64), 0), nodes or NODES)
        codes = np.asarray(rows.codes[0], dtype=np.int64)
        rows = rows.with_codes(0, np.full(codes.shape, -1))  # eta0: the level's effect apart
        C = spec.terms[0].group.n_coefs
        level, weight, keep = _distinct_groups(rows, codes, y, n,
                                               spec.terms[0].group.n_levels, C > 1)
        groups = np.argsort(level, kind="stable")
        members = (groups, np.concatenate([[0], np.cumsum(weight)]), len(level))
        starts = None
        if C > 1:  # the cells in runs per level, for the general quadrature
            keep = keep[np.argsort(level[codes[keep]], kind="stable")]
            starts = np.flatnonzero(np.r_[True, np.diff(level[codes[keep]]) != 0])
        return cls(spec, rows.take(keep), level[codes[keep]], len(weight), y[keep], n[keep],
                   link_id, weight.astype(float), members,
                   nodes or (NODES if C == 1 else KD_NODES[C]), starts)

    @property
    def grouped(self) -> bool:
        """Whether the model has a group term (its effects integrated, then drawn)."""
        return bool(self.spec.terms)

    @property
    def estimated(self) -> bool:
        """Whether theta ends with the group SD's log (partial pooling)."""
        return self.grouped and self.spec.terms[0].estimated

    @property
    def n_fixed(self) -> int:
        return len(self.spec.design.fixed_names)

    @property
    def n_coefs(self) -> int:
        """The varying coefficients per level (0 without a group term)."""
        return self.spec.terms[0].group.n_coefs if self.grouped else 0

    @property
    def n_corr(self) -> int:
        """The correlations theta holds (a correlated term with estimated SDs)."""
        C = self.n_coefs
        term = self.spec.terms[0] if self.grouped else None
        return C * (C - 1) // 2 if term is not None and term.estimated and term.correlated \
            else 0

    @property
    def dim(self) -> int:
        return self.n_fixed + (self.n_coefs if self.estimated else 0) + self.n_corr

    def sd(self, theta: np.ndarray) -> np.ndarray:
        """The group intercepts' SD per row of ``theta``: estimated, or the fixed prior SD of
        no pooling (one varying coefficient)."""
        if self.estimated:
            return np.exp(theta[:, self.n_fixed])
        return np.full(len(theta), float(self.spec.terms[0].sd_fixed[0]))

    def sds(self, theta: np.ndarray) -> np.ndarray:
        """Every varying coefficient's SD per row of ``theta`` (S, C)."""
        K, C = self.n_fixed, self.n_coefs
        if self.estimated:
            return np.exp(theta[:, K:K + C])
        return np.broadcast_to(np.asarray(self.spec.terms[0].sd_fixed, dtype=float),
                               (len(theta), C))

    def corr_chol(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The Cholesky factor of the correlation matrix per row of ``theta`` (S, C, C) and
        its log Jacobian (S,) (:func:`_corr_chol`; the identity without correlations)."""
        return _corr_chol(theta[:, self.dim - self.n_corr:] if self.n_corr
                          else np.zeros((len(theta), 0)), self.n_coefs)

    def prior(self, theta: np.ndarray) -> NewLevelPrior:
        """The levels' effects ``N(0, Sigma)`` per row of ``theta`` (deviations from the fixed
        effects, on the engine's scale)."""
        chol = self.corr_chol(theta)[0] * self.sds(theta)[:, :, None]
        return NewLevelPrior.of(np.zeros((len(theta), self.n_coefs)), chol)

    def eta0(self, theta: np.ndarray) -> np.ndarray:
        """The linear predictor without the group (S, cells) for ``theta`` (S, dim)."""
        beta = np.ascontiguousarray(theta[:, :self.n_fixed])
        dev = [np.zeros((len(theta), 1, self.n_coefs))] if self.grouped else []
        coefs = engine_coefficients(self.spec, beta, dev)
        return linear_predictor(self.spec, coefs, self.rows)

    def log_prior(self, theta: np.ndarray) -> np.ndarray:
        """log prior of beta and, under partial pooling, of each sd plus log sd (the Jacobian
        of log sd) and, for a correlated term, the LKJ density of the correlations with the
        Jacobian of their canonical partial correlations (the sampler's, without the LKJ's
        normalizing constant), per row."""
        out = np.zeros(len(theta))
        K = self.n_fixed
        priors = list(self.spec.fixed_priors)
        if self.estimated:
            priors.extend(self.spec.terms[0].sd_priors)
        for k, p in enumerate(priors):
            fam = families.get(p.family)
            if not fam.proper:  # a flat prior: a constant
                continue
            x = np.exp(theta[:, k]) if k >= K else theta[:, k]
            out += fam.logpdf(p.params, x)
        if self.estimated:
            out += theta[:, K:K + self.n_coefs].sum(axis=1)
        if self.n_corr:
            C, eta = self.n_coefs, float(self.spec.terms[0].lkj_eta)
            L, logj = self.corr_chol(theta)
            out += logj
            for i in range(1, C):
                out += (C - i - 1 + 2.0 * (eta - 1.0)) * np.log(L[:, i, i])
        return out

    def refined(self, nodes: int) -> int:
        """The nodes (per dimension) the refinement check takes after ``nodes``."""
        return max(REFINED_NODES, 2 * nodes + 1) if self.starts is None else 2 * nodes + 1

    @property
    def max_nodes(self) -> int:
        """The most nodes (per dimension) the automatic refinement goes to."""
        return MAX_NODES if self.starts is None else KD_MAX_NODES[self.n_coefs]

    def batch(self, nodes: int | None = None) -> int:
        """Draws per batch: the cells' eta (and, with several varying coefficients, the
        tensor grid's terms of every level) within ``BATCH_CELLS`` values."""
        size = len(self.y)
        if self.starts is not None:
            nodes = self.nodes if nodes is None else nodes
            size = max(size, nodes ** self.n_coefs * len(self.starts))
        return max(1, BATCH_CELLS // max(1, size))

    def log_density(self, theta: np.ndarray, nodes: int | None = None,
                    start: np.ndarray | None = None) -> np.ndarray:
        """log p(theta | y) up to a constant, per row of ``theta`` (S, dim), with ``nodes``
        Gauss-Hermite nodes per level (None: the problem's)."""
        theta = np.atleast_2d(theta)
        nodes = self.nodes if nodes is None else nodes
        out = np.empty(len(theta))
        b = self.batch(nodes)
        for i in range(0, len(theta), b):
            t = theta[i:i + b]
            with np.errstate(over="ignore", invalid="ignore"):
                if self.starts is not None:  # varying slopes: the general quadrature
                    ll = kd_log_integrals(self.link_id, self.eta0(t), self.y, self.n,
                                          self.Z, self.starts, self.prior(t), nodes,
                                          start)[0] @ self.weight
                elif self.grouped:
                    ll = intercept_log_integrals(self.link_id, self.eta0(t), self.y, self.n,
                                                 self.codes, self.n_levels, self.sd(t),
                                                 start, nodes)[0] @ self.weight
                else:  # complete pooling: the cells' log-likelihood (model.likelihood)
                    ll = CellLikelihood(self.spec.link).log_lik(self.y, self.n,
                                                                self.eta0(t)).sum(axis=1)
            out[i:i + b] = ll + self.log_prior(t)
        return np.where(np.isfinite(out), out, -np.inf)

    @property
    def Z(self) -> np.ndarray:
        """The kept cells' varying columns (cells, C) on the engine's scale."""
        return np.ascontiguousarray(self.rows.Z[0], dtype=np.float64)

    def modes(self, theta: np.ndarray) -> np.ndarray:
        """Each level's conditional mode at one ``theta`` (levels,; with several varying
        coefficients levels, C): where the searches for the modes start at other thetas."""
        if not self.grouped:
            return np.zeros(0)
        t = np.atleast_2d(theta)
        if self.starts is not None:
            return kd_log_integrals(self.link_id, self.eta0(t), self.y, self.n, self.Z,
                                    self.starts, self.prior(t), 1)[1][0]
        return intercept_log_integrals(self.link_id, self.eta0(t), self.y, self.n, self.codes,
                                       self.n_levels, self.sd(t), None, 1)[1][0]


def _corr_chol(cpc: np.ndarray, C: int) -> tuple[np.ndarray, np.ndarray]:
    """The correlation matrix's Cholesky factor (S, C, C) from the canonical partial
    correlations on the atanh scale (S, C (C - 1) / 2) as the sampler's density makes it
    (:func:`poolwise.engine.density._chol_corr`), and its log Jacobian (S,); none: the
    identity."""
    from poolwise.engine.density import _chol_corr

    L = np.broadcast_to(np.eye(C), (len(cpc), C, C)).copy()
    logj = np.zeros(len(cpc))
    if cpc.shape[1]:
        cpc = np.ascontiguousarray(cpc, dtype=np.float64)
        for i in range(len(cpc)):
            logj[i] = _chol_corr(cpc[i], C, L[i])
    return L, logj


def _row_ids(a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The distinct rows of ``a`` (n, k) in sorted order: the index of each one's first row,
    each row's id, and each id's count (``np.unique(a, axis=0, ...)``, by a pandas groupby:
    np.unique sorts the rows as bytes, 10^6 rows in a second)."""
    import pandas as pd

    if a.shape[1] == 1:
        _, first, ids, n = np.unique(a[:, 0], return_index=True, return_inverse=True,
                                     return_counts=True)
        return first, np.asarray(ids, dtype=np.int64).ravel(), n
    frame = pd.DataFrame(a)
    ids = frame.groupby(list(frame.columns), sort=True, dropna=False).ngroup().to_numpy()
    ids = ids.astype(np.int64)
    n = np.bincount(ids)
    first = np.full(len(n), len(ids), dtype=np.int64)
    np.minimum.at(first, ids, np.arange(len(ids)))
    return first, ids, n


def _distinct_groups(rows: Rows, codes: np.ndarray, y: np.ndarray, n: np.ndarray,
                     n_groups: int, varying: bool = False
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Groups by their set of cells: each group's level (n_groups,), each level's number of
    groups, and the cells of one group per level (the cells the problem keeps). ``varying``:
    the cells' varying columns count too (slopes; an intercept's column is all ones)."""
    content = [rows.X, y[:, None], n[:, None]]
    if varying:
        content.append(np.asarray(rows.Z[0], dtype=float))
    if rows.offset is not None:
        content.append(np.asarray(rows.offset, dtype=float)[:, None])
    kind = _row_ids(np.column_stack(content))[1]
    order = np.lexsort((kind, codes))
    counts = np.bincount(codes, minlength=n_groups)
    starts = np.concatenate([[0], np.cumsum(counts)])
    sorted_kind = kind[order]
    if n_groups and counts.min() == counts.max():  # as many cells in every group: a row each
        first, level, weight = _row_ids(sorted_kind.reshape(n_groups, -1))
    else:
        signature = np.empty(n_groups, dtype=object)
        signature[:] = [sorted_kind[starts[g]:starts[g + 1]].tobytes()
                        for g in range(n_groups)]
        _, first, level, weight = np.unique(signature, return_index=True,
                                            return_inverse=True, return_counts=True)
    level = np.asarray(level, dtype=np.int64).ravel()
    keep = np.flatnonzero(np.isin(codes, first))
    return level, weight, keep


def _gradient_points(theta: np.ndarray, h: float) -> np.ndarray:
    d = len(theta)
    return np.concatenate([theta + h * np.eye(d), theta - h * np.eye(d)])


def _mode(problem: _Problem) -> tuple[np.ndarray, float]:
    """The mode of log p(theta | y) (BFGS; central-difference gradients in one call)."""
    from scipy.optimize import minimize

    d, h = problem.dim, 1e-5
    if d == 0:  # no pooling without fixed effects: nothing to optimize
        return np.zeros(0), float(problem.log_density(np.zeros((1, 0)))[0])

    def value_and_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
        pts = np.concatenate([theta[None], _gradient_points(theta, h)])
        v = problem.log_density(pts)
        if not np.isfinite(v[0]):
            return 1e300, np.zeros(d)
        grad = (v[1:d + 1] - v[d + 1:]) / (2 * h)
        return -float(v[0]), -np.where(np.isfinite(grad), grad, 0.0)

    theta0 = np.zeros(d)
    if problem.estimated:  # each SD at 0.5, the correlations at 0
        K = problem.n_fixed
        theta0[K:K + problem.n_coefs] = math.log(0.5)
    res = minimize(value_and_grad, theta0, jac=True, method="BFGS",
                   options={"gtol": 1e-4, "maxiter": 500})
    return res.x, -float(res.fun)


def _hessian(problem: _Problem, mode: np.ndarray, h: float = 1e-3) -> np.ndarray:
    """The Hessian of log p(theta | y) at ``mode`` by central second differences."""
    d = len(mode)
    E = h * np.eye(d)
    pts = [mode]
    for i in range(d):
        for j in range(d):
            pts += [mode + E[i] + E[j], mode + E[i] - E[j], mode - E[i] + E[j],
                    mode - E[i] - E[j]]
    v = problem.log_density(np.array(pts))[1:].reshape(d, d, 4)
    H = (v[..., 0] - v[..., 1] - v[..., 2] + v[..., 3]) / (4 * h * h)
    return 0.5 * (H + H.T)


@dataclass(frozen=True)
class ApproxCheck:
    """The numbers of the self-check (see the module docstring)."""

    mode: tuple[float, ...]
    log_density_at_mode: float
    refinement_change: float
    pareto_k: float
    is_ess: float
    proposals: int
    failed_group_draws: int
    group_proposals_per_draw: float
    nodes: int
    refined_nodes: int
    #: whether the model has group integrals (no: complete pooling), and whether theta has a
    #: dimension to importance-sample (no: no pooling without fixed effects, whose draws are
    #: exact); a check that does not apply did not run, and says so
    quadrature: bool = True
    importance: bool = True
    #: the nodes per level the refinement started from (``nodes`` is where it ended)
    first_nodes: int | None = None
    #: varying coefficients per group: above 1 the node counts are per dimension of a tensor
    #: grid
    coefficients: int = 1

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


def _proposal(center: np.ndarray, cov: np.ndarray, df: float, M: int,
              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """M Student-t draws (``df`` degrees of freedom) at ``center`` with scale matrix ``cov``
    and their log density (up to a constant)."""
    d = len(center)
    w, V = np.linalg.eigh(0.5 * (cov + cov.T))
    w = np.maximum(w, 1e-12 * max(1e-300, float(np.max(np.abs(w)))))
    L = V * np.sqrt(w)  # L L' = cov
    z = rng.standard_normal((M, d))
    chi = rng.chisquare(df, size=M) / df
    theta = center + (z / np.sqrt(chi)[:, None]) @ L.T
    r = (theta - center) @ (V / np.sqrt(w))  # L^-1 (theta - center)
    logq = -0.5 * (df + d) * np.log1p((r * r).sum(axis=1) / df)
    return theta, logq


def _weights(logp: np.ndarray, logq: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Pareto-smoothed normalized importance weights, their Pareto k and ESS (arviz-stats'
    ``psislw``, as :func:`poolwise.inference.power_scaling.psis_log_weights` computes it)."""
    from poolwise.inference.power_scaling import psis_log_weights

    logw = logp - logq
    finite = np.isfinite(logw)
    logw = np.where(finite, logw, np.min(logw[finite]) - 1e3 if finite.any() else 0.0)
    smoothed, khat = psis_log_weights(logw - np.max(logw), r_eff=1.0)
    w = np.exp(smoothed - np.max(smoothed))
    w /= w.sum()
    return w, float(khat), float(1.0 / np.sum(w * w))


def _inverse(H: np.ndarray) -> np.ndarray:
    """``(-H)^-1``, a flat direction made wide instead of singular."""
    w, V = np.linalg.eigh(-0.5 * (H + H.T))
    w = np.maximum(w, 1e-8 * max(1.0, float(np.max(np.abs(w)))))
    return (V / w) @ V.T


def _importance(problem: _Problem, mode: np.ndarray, H: np.ndarray, M: int,
                rng: np.random.Generator, start: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float]:
    """Proposals, their log density, their Pareto-smoothed normalized weights, the Pareto k
    and the ESS. A Student-t at the mode with the inverse curvature; where its Pareto k is
    ``ADAPT_K`` or more (a skewed posterior: a group SD near 0, few groups), a second round
    from a heavier-tailed t at the first round's weighted mean and covariance (inflated),
    kept if its k is lower. With no dimension (no pooling without fixed effects) the
    posterior of theta is a point: every weight equal, no Pareto k to speak of (0)."""
    if problem.dim == 0:
        theta = np.zeros((M, 0))
        logp = problem.log_density(theta[:1], start=start).repeat(M)
        return theta, logp, np.full(M, 1.0 / M), 0.0, float(M)
    theta, logq = _proposal(mode, _inverse(H), PROPOSAL_DF, M, rng)
    logp = problem.log_density(theta, start=start)
    w, khat, ess = _weights(logp, logq)
    if khat >= ADAPT_K:
        center = w @ theta
        cov = ((theta - center).T * w) @ (theta - center)
        theta2, logq2 = _proposal(center, ADAPT_INFLATE * cov, ADAPT_DF, M, rng)
        logp2 = problem.log_density(theta2, start=start)
        w2, k2, ess2 = _weights(logp2, logq2)
        if k2 < khat:
            return theta2, logp2, w2, k2, ess2
    return theta, logp, w, khat, ess


def _group_draws(problem: _Problem, theta: np.ndarray, start: np.ndarray,
                 rng: np.random.Generator, dtype: Any = np.float64
                 ) -> tuple[np.ndarray, int, float]:
    """Each group's effects per draw (S, groups; with several varying coefficients S,
    groups, C), exact draws from their conditional posterior
    (:func:`poolwise.model.quadrature.intercept_draws`, or ``kd_draws``), stored as ``dtype``
    (float32 for a large fit: each draw computed in float64 and rounded once as the kernel
    stores it); how many pairs found no
    draw, and the mean proposals per draw. The draws do not depend on the batches (each
    uniform is keyed by its draw and group)."""
    S, G = len(theta), problem.members[2]
    shape = (S, G) if problem.starts is None else (S, G, problem.n_coefs)
    u = np.empty(shape, dtype=dtype)
    if not problem.grouped:  # complete pooling: no group effects
        return u, 0, 0.0
    key = int(rng.integers(2**63))
    failed, proposals = 0, 0
    per_draw = int(np.prod(shape[1:]))
    b = max(1, min(problem.batch(1), DRAW_BATCH_VALUES // max(1, per_draw)))
    # a proposal that resampling repeated: its modes and envelopes made once for its draws
    for t, draws_of in _distinct(theta, b):
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            if problem.starts is None:
                _, counts = intercept_draws(problem.link_id, problem.eta0(t), problem.y,
                                            problem.n, problem.codes, problem.n_levels,
                                            problem.sd(t), start, key, members=problem.members,
                                            out=u, draws_of=draws_of)
            else:
                _, counts = kd_draws(problem.link_id, problem.eta0(t), problem.y, problem.n,
                                     problem.Z, problem.starts, problem.prior(t), start, key,
                                     members=problem.members, out=u, draws_of=draws_of)
        failed += counts.failed
        proposals += counts.proposals
    return u, failed, proposals / max(1, u.size)


def _distinct(theta: np.ndarray, b: int):
    """The distinct rows of ``theta`` (S, dim), in batches of at most ``b`` draws (at least
    one distinct row each): each batch's rows and ``(draws, starts)``, the draws (rows of
    ``theta``) that each row stands for. Resampling repeats a proposal for about a third of
    the draws."""
    rows, inverse = np.unique(theta, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    draws = np.argsort(inverse, kind="stable")
    starts = np.concatenate([[0], np.cumsum(np.bincount(inverse, minlength=len(rows)))])
    j0 = 0
    while j0 < len(rows):
        j1 = max(j0 + 1, int(np.searchsorted(starts, starts[j0] + b, side="right")) - 1)
        yield rows[j0:j1], (draws[starts[j0]:starts[j1]], starts[j0:j1 + 1] - starts[j0])
        j0 = j1


def _posterior(spec: ModelSpec, theta: np.ndarray, u: np.ndarray, chains: int,
               draws: int) -> xr.Dataset:
    """The draws as the sampler's posterior names them, on the original scale: the fixed
    effects; with a group term its intercepts (``a_<g>``, centred at the fixed intercept where
    that is their mean, else at 0: the unpooled intercepts of no pooling) and, under partial
    pooling, their SD."""
    shape = (chains, draws)
    data: dict[str, Any] = {}
    for k, coef in enumerate(spec.design.fixed_names):
        data[fixed_name(coef)] = (("chain", "draw"), theta[:, k].reshape(shape))
    coords: dict[str, Any] = {"chain": np.arange(chains), "draw": np.arange(draws)}
    if spec.terms:
        term = spec.terms[0]
        g = term.group
        K, C = len(spec.design.fixed_names), g.n_coefs
        if term.estimated:
            for c, coef in enumerate(g.coef_names):
                data[sd_name(term, coef)] = (("chain", "draw"),
                                             np.exp(theta[:, K + c]).reshape(shape))
        if term.estimated and term.correlated and C > 1:
            L = _corr_chol(theta[:, K + C:], C)[0]
            R = np.einsum("sij,skj->sik", L, L)
            for i in range(1, C):
                for j in range(i):
                    data[cor_name(term, g.coef_names[j], g.coef_names[i])] = (
                        ("chain", "draw"), R[:, i, j].reshape(shape))
        for c, coef in enumerate(g.coef_names):
            mi = term.mu_index[c]
            tot = u if C == 1 else u[:, :, c]
            if mi >= 0:  # in place: u is not used again (S x levels: the fit's size)
                tot += theta[:, [mi]].astype(tot.dtype)
            data[total_name(term, coef)] = (("chain", "draw", g.name),
                                            tot.reshape(chains, draws, -1))
        coords[g.name] = np.asarray(g.labels)
    ds = xr.Dataset(data, coords=coords)
    ds.attrs.update({"creation_library": "poolwise", "inference_method": "approx",
                     "sample_dims": ["chain", "draw"]})
    return to_original_scale(spec, ds)


@dataclass(frozen=True)
class _Mode:
    """The mode of theta at the quadrature that passed its refinement (or at the most nodes
    tried): the problem at those nodes, the mode, each level's conditional mode there, the log
    density at the mode, how much it moved when refined, and the refined node count."""

    problem: _Problem
    theta: np.ndarray
    start: np.ndarray
    at_mode: float
    change: float
    refined_nodes: int


def _refined_mode(problem: _Problem) -> _Mode:
    """The mode of theta, with automatic node refinement: at ``problem.nodes`` per level, the
    log density at the mode is recomputed with ``max(REFINED_NODES, 2 n + 1)`` nodes; when it
    moves by ``QUADRATURE_TOL`` or more, the mode is found again with that many nodes (15 -> 31
    -> 63), up to ``MAX_NODES``. Without group integrals (complete pooling) there is nothing to
    refine (the change 0 by definition, not measured)."""
    while True:
        theta, _ = _mode(problem)
        start = problem.modes(theta)
        at_mode = float(problem.log_density(theta[None], start=start)[0])
        refined_nodes = problem.refined(problem.nodes)
        change = 0.0
        if problem.grouped:
            change = abs(float(problem.log_density(theta[None], nodes=refined_nodes,
                                                   start=start)[0]) - at_mode)
        if change < QUADRATURE_TOL or refined_nodes > problem.max_nodes:
            return _Mode(problem, theta, start, at_mode, change, refined_nodes)
        problem = dataclasses.replace(problem, nodes=refined_nodes)


def _check(m: _Mode, first_nodes: int, khat: float, ess: float, M: int,
           groups: tuple[int, float]) -> ApproxCheck:
    """The self-check's numbers (``quadrature=False``: no group integrals to refine)."""
    problem = m.problem
    return ApproxCheck(mode=tuple(float(v) for v in m.theta), log_density_at_mode=m.at_mode,
                       refinement_change=m.change, pareto_k=khat, is_ess=ess,
                       proposals=M, failed_group_draws=groups[0],
                       group_proposals_per_draw=groups[1], nodes=problem.nodes,
                       refined_nodes=m.refined_nodes, quadrature=problem.grouped,
                       importance=problem.dim > 0, first_nodes=first_nodes,
                       coefficients=max(1, problem.n_coefs))


def approx_fit(spec: ModelSpec, config: SamplerConfig, *, log_likelihood: bool = True,
               sensitivity: bool = True, nodes: int | None = None) -> Fit:
    """The approximate posterior of ``spec`` as a :class:`Fit` (see the module docstring);
    ``config`` gives chains, draws and the seed. ``nodes``: Gauss-Hermite nodes per level
    (None: ``NODES``, read when called)."""
    check_supported(spec)
    t0 = time.perf_counter()
    rng = np.random.default_rng(config.seed)
    with phase("the approximation: the mode"):
        first = _Problem.of(spec, None if nodes is None else int(nodes))
        m = _refined_mode(first)
        problem, mode, start = m.problem, m.theta, m.start
        H = _hessian(problem, mode)
    S = config.chains * config.draws
    M = max(MIN_PROPOSALS, S)
    with phase("the approximation: importance sampling"):
        theta, logp, w, khat, ess = _importance(problem, mode, H, M, rng, start)
        pick = rng.choice(M, size=S, replace=True, p=w)
        theta, logp = theta[pick], logp[pick]
    with phase("the approximation: the group effects"):
        u, failed, per_draw = _group_draws(problem, theta, start, rng,
                                           approx_group_dtype(spec, config.chains, config.draws))
    check = _check(m, first.nodes, khat, ess, M, (failed, per_draw))
    t1 = time.perf_counter()
    return _as_fit(spec, config, (theta, logp, u), check, log_likelihood, sensitivity,
                   (t0, t1))


def _as_fit(spec: ModelSpec, config: SamplerConfig, draws: tuple[np.ndarray, ...],
            check: ApproxCheck, log_likelihood: bool, sensitivity: bool,
            times: tuple[float, float]) -> Fit:
    """The draws ``(theta, log p(theta | y), u)`` as a Fit: the posterior, a sample_stats
    group with no sampler's statistics (only each draw's ``approx_log_density``, the log
    marginal density of its fixed effects and SD), the diagnosis with the self-check."""
    theta, logp, u = draws
    shape = (config.chains, config.draws)
    stats = xr.Dataset({"approx_log_density": (("chain", "draw"), logp.reshape(shape))},
                       coords={"chain": np.arange(shape[0]), "draw": np.arange(shape[1])},
                       attrs={"inference_library": "poolwise (method='approx')"})
    groups: dict[str, xr.Dataset] = {
        "posterior": _posterior(spec, theta, u, config.chains, config.draws),
        "sample_stats": stats,
        "observed_data": observed_group(spec.design),
    }
    if log_likelihood:
        groups["log_likelihood"] = log_likelihood_group(spec, groups["posterior"])
    idata = xr.DataTree.from_dict(groups)
    from poolwise.inference.sampling import provenance

    idata.attrs.update(provenance(spec, config))
    idata.attrs["poolwise_method"] = "approx"
    idata.attrs[APPROX_ATTR] = json.dumps(check.to_dict())  # diagnose() reads the check
    with phase("the diagnostics"):
        diagnosis = diagnose(idata, target_accept=config.target_accept, spec=spec,
                             sensitivity=sensitivity)
    t2 = time.perf_counter()
    timings = {"sampling_s": times[1] - times[0], "total_s": t2 - times[0],
               "postprocess_s": t2 - times[1]}
    return Fit(idata, spec, config, diagnosis, timings, warnings=spec.design.warnings)
