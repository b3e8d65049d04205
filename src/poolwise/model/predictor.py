"""The linear predictor: the one place in poolwise that defines eta.

For a row r in posterior draw s::

    eta[s, r] = offset[r] + sum_k X[r, k] beta[s, k]
                + sum over group terms t and their varying coefficients c of
                  (u_t[s, level_t(r), c] - m_t,c[s]) * Z_t[r, c]

``beta`` are the fixed coefficients, ``u_t[s, j, c]`` the per-level totals the posterior
reports (``a_<g>[label]``, ``b_<g>__<coef>[label]``) and ``m_t,c`` the fixed coefficient that
is their population mean (``Intercept`` for ``a_<g>``; nothing, i.e. 0, for the unpooled
intercepts of ``pooling="none"`` or a varying coefficient without a fixed counterpart). A row
whose level of a term the fit has not seen (new data, a group left out) gets deviation 0 there:
the population mean. :func:`new_level_draws` gives the distribution of a new level's deviation
when it should be drawn or integrated instead.

Every quantity derived from the model reads eta from here: the log-likelihood per pattern and
in total (:mod:`poolwise.model.likelihood`, hence LOO and the prior sensitivity check),
leave-one-group-out, predictions, the predictive checks, shrinkage and the narrative. The rows
are the design's cells (:meth:`Rows.of_design`) or any other rows built with the same columns
(new data, a subset of cells); the coefficients are posterior draws on the original scale or,
for the prior predictive check, prior draws on the engine's standardized scale
(:meth:`Rows.of_design` with ``engine_scale=True``). The engine's numba density computes the same
eta on the engine's scale while sampling, fused with its gradient;
``tests/test_consistency.py`` holds both, and every path above, to a direct computation.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numba
import numpy as np
import xarray as xr

from poolwise.model import links
from poolwise.model.naming import cor_name, fixed_name, sd_name, total_name

if TYPE_CHECKING:
    from poolwise.data.design import Design
    from poolwise.model.spec import ModelSpec, TermSpec

__all__ = [
    "Coefficients",
    "Rows",
    "coefficients",
    "draws",
    "inverse_link",
    "linear_predictor",
    "new_level_draws",
    "with_new_levels",
]


def draws(post: xr.Dataset, name: str) -> np.ndarray:
    """One variable's draws flattened over chains: shape (chain * draw, ...) (a view)."""
    v = post[name].values
    return v.reshape((-1,) + v.shape[2:])


def inverse_link(link: str, eta: np.ndarray) -> np.ndarray:
    """p from the linear predictor (:mod:`poolwise.model.links`; SpecError for an unknown
    link)."""
    return links.get(link).inverse(eta)


@dataclass(frozen=True, eq=False)
class Rows:
    """The rows eta is computed for.

    ``X`` (n, K): the fixed-effect columns, in the order of the model's ``fixed_names``;
    ``offset`` (n,) or None; per group term of the model, in order, ``codes[t]`` (n,) the level
    of each row (``-1``: a level the coefficients do not have, which gets the population mean)
    and ``Z[t]`` (n, C_t) its value of every varying coefficient (1 for the intercept).
    """

    X: np.ndarray
    offset: np.ndarray | None
    codes: tuple[np.ndarray, ...]
    Z: tuple[np.ndarray, ...]

    @property
    def n(self) -> int:
        return int(self.X.shape[0])

    @classmethod
    def of_design(cls, design: Design, *, engine_scale: bool = False) -> Rows:
        """The design's binomial cells; ``engine_scale``: with the centered and scaled columns
        the engine samples (for coefficients on that scale)."""
        X = design.X_engine if engine_scale else design.X
        Z = tuple(g.Z_engine if engine_scale else g.Z for g in design.groups)
        return cls(X=X, offset=design.offset, codes=tuple(g.codes for g in design.groups), Z=Z)

    def take(self, index: np.ndarray) -> Rows:
        """The rows at ``index`` (an integer or boolean index)."""
        return Rows(
            X=self.X[index], offset=None if self.offset is None else self.offset[index],
            codes=tuple(c[index] for c in self.codes), Z=tuple(z[index] for z in self.Z),
        )

    def with_codes(self, term: int, codes: np.ndarray) -> Rows:
        """The same rows with other level codes for group term ``term``."""
        new = list(self.codes)
        new[term] = np.asarray(codes, dtype=np.int64)
        return replace(self, codes=tuple(new))


@dataclass(frozen=True, eq=False)
class Coefficients:
    """Draws of the predictor's coefficients, flattened over chains.

    ``beta`` (S, K) the fixed coefficients; ``tot`` (S, M) every term's per-level totals side
    by side (coefficient-major within a term: the levels of its first coefficient, then of the
    second, ...; the posterior's own array, not a copy, where the model has one term with one
    coefficient: with 10^5 levels a copy costs seconds and gigabytes); per (term, coefficient)
    ``j`` in model order, ``start[j]`` the column of its first level in ``tot`` and ``mu[j]``
    the column of ``beta`` that is its mean (-1: none). ``tot`` may be float32 (the totals of a
    large trace); everything else is float64.
    """

    beta: np.ndarray
    tot: np.ndarray
    start: np.ndarray
    mu: np.ndarray
    n_coefs: tuple[int, ...]  # per term

    @property
    def n_draws(self) -> int:
        return int(self.beta.shape[0])

    def take(self, index: np.ndarray) -> Coefficients:
        """The draws at ``index`` (flattened over chains)."""
        return replace(self, beta=self.beta[index], tot=np.ascontiguousarray(self.tot[index]))


def coefficients(spec: ModelSpec, post: xr.Dataset) -> Coefficients:
    """The coefficients of ``spec``'s linear predictor from a posterior (original scale)."""
    d = spec.design
    S = post.sizes["chain"] * post.sizes["draw"]
    beta = (np.column_stack([draws(post, fixed_name(c)) for c in d.fixed_names])
            if d.fixed_names else np.zeros((S, 0)))
    tots, start, mu = [], [], []
    off = 0
    for term in spec.terms:
        for c, coef in enumerate(term.group.coef_names):
            total = draws(post, total_name(term, coef))
            tots.append(total)
            start.append(off)
            mu.append(term.mu_index[c])
            off += total.shape[1]
    return _coefficients(beta, tots, start, mu, tuple(t.group.n_coefs for t in spec.terms))


def _coefficients(beta: np.ndarray, tots: list[np.ndarray], start: list[int], mu: list[int],
                  n_coefs: tuple[int, ...]) -> Coefficients:
    S = beta.shape[0]
    if len(tots) == 1 and tots[0].dtype in (np.float32, np.float64):
        tot = np.ascontiguousarray(tots[0])  # a view of the posterior's array
    else:
        tot = np.ascontiguousarray(np.column_stack(tots) if tots else np.zeros((S, 0)),
                                   dtype=np.float64)
    return Coefficients(
        beta=np.ascontiguousarray(beta, dtype=np.float64), tot=tot,
        start=np.asarray(start, dtype=np.int64), mu=np.asarray(mu, dtype=np.int64),
        n_coefs=n_coefs,
    )


def engine_coefficients(spec: ModelSpec, beta: np.ndarray,
                        deviations: list[np.ndarray]) -> Coefficients:
    """Coefficients from fixed effects ``beta`` (S, K) and per term the level deviations
    (S, L_t, C_t) from the population mean: the totals are ``beta[mu] + deviation`` (what the
    prior predictive check simulates, on the engine's scale)."""
    tots, start, mu = [], [], []
    off = 0
    for term, dev in zip(spec.terms, deviations, strict=True):
        for c in range(term.group.n_coefs):
            mi = term.mu_index[c]
            tots.append(dev[:, :, c] + (beta[:, [mi]] if mi >= 0 else 0.0))
            start.append(off)
            mu.append(mi)
            off += dev.shape[1]
    return _coefficients(beta, tots, start, mu, tuple(t.group.n_coefs for t in spec.terms))


def with_new_levels(spec: ModelSpec, coefs: Coefficients,
                    deviations: list[np.ndarray]) -> Coefficients:
    """``coefs`` with new levels appended to every group term, after its fitted ones:
    ``deviations[t]`` (S, Q_t, C_t) are the new levels' deviations from the population mean
    (draws of :func:`new_level_draws`, or quadrature nodes), so a row with code ``L_t + q``
    of term ``t`` has the effects of new level ``q``."""
    tots, starts, j = [], [], 0
    for term, dev in zip(spec.terms, deviations, strict=True):
        L = term.group.n_levels
        for c in range(term.group.n_coefs):
            fitted = np.asarray(coefs.tot[:, coefs.start[j]:coefs.start[j] + L],
                                dtype=np.float64)
            mi = coefs.mu[j]
            new = dev[:, :, c] + (coefs.beta[:, [mi]] if mi >= 0 else 0.0)
            starts.append(sum(b.shape[1] for b in tots))
            tots.append(np.concatenate([fitted, new], axis=1))
            j += 1
    if not tots:
        return coefs
    return replace(coefs, tot=np.ascontiguousarray(np.concatenate(tots, axis=1)),
                   start=np.asarray(starts, dtype=np.int64))


def predictor_arrays(coefs: Coefficients, rows: Rows) -> tuple[np.ndarray, ...]:
    """The kernel's view of the rows: ``X`` (n, K), ``offset`` (n,), and per (term, coefficient)
    ``j`` the column of ``coefs.tot`` of each row, ``col`` (J, n) (-1: a new level), and its
    Z value, ``z`` (J, n)."""
    n = rows.n
    cols, zs = [], []
    j = 0
    for t, (codes, Z) in enumerate(zip(rows.codes, rows.Z, strict=True)):
        codes = np.asarray(codes, dtype=np.int64)
        if Z.shape[1] != coefs.n_coefs[t]:
            raise ValueError(f"term {t} has {Z.shape[1]} columns for {coefs.n_coefs[t]} "
                             "coefficients")
        for c in range(coefs.n_coefs[t]):
            cols.append(np.where(codes >= 0, codes + coefs.start[j], -1))
            zs.append(np.asarray(Z[:, c], dtype=np.float64))
            j += 1
    X = np.ascontiguousarray(rows.X, dtype=np.float64).reshape(n, -1)
    if X.shape[1] != coefs.beta.shape[1]:
        raise ValueError(f"the rows have {X.shape[1]} fixed columns for {coefs.beta.shape[1]} "
                         "coefficients")
    offset = (np.zeros(n) if rows.offset is None
              else np.ascontiguousarray(rows.offset, dtype=np.float64))
    col = np.array(cols, dtype=np.int64).reshape(len(cols), n)
    z = np.array(zs, dtype=np.float64).reshape(len(zs), n)
    return X, offset, col, z


@numba.njit(cache=True, inline="always", error_model="numpy")
def eta_at(s, r, beta, tot, mu, X, offset, col, z):  # pragma: no cover - compiled
    """eta of row ``r`` in draw ``s`` (the module docstring's sum, in that order)."""
    eta = offset[r]
    for k in range(X.shape[1]):
        eta += X[r, k] * beta[s, k]
    for j in range(col.shape[0]):
        c = col[j, r]
        if c >= 0:
            dev = tot[s, c]
            if mu[j] >= 0:
                dev -= beta[s, mu[j]]
            eta += dev * z[j, r]
    return eta


@numba.njit(cache=True, parallel=True, error_model="numpy")
def _eta(beta, tot, mu, X, offset, col, z):  # pragma: no cover - compiled
    S = beta.shape[0]
    n = X.shape[0]
    out = np.empty((S, n))
    for s in numba.prange(S):
        for r in range(n):
            out[s, r] = eta_at(s, r, beta, tot, mu, X, offset, col, z)
    return out


def linear_predictor(spec: ModelSpec, post: xr.Dataset | Coefficients,
                     rows: Rows | None = None) -> np.ndarray:
    """eta of every row (default: the design's cells) in every draw, shape (S, n).

    ``post``: a posterior (natural variables, original scale) or :class:`Coefficients`.
    Memory: S x n x 8 bytes; for big data use :mod:`poolwise.model.likelihood`, which never
    holds eta."""
    coefs = post if isinstance(post, Coefficients) else coefficients(spec, post)
    rows = Rows.of_design(spec.design) if rows is None else rows
    return _eta(coefs.beta, coefs.tot, coefs.mu, *predictor_arrays(coefs, rows))


# ---- a level the fit has not seen ----------------------------------------------------------


def new_level_draws(spec: ModelSpec, post: xr.Dataset, term: TermSpec
                    ) -> tuple[np.ndarray, np.ndarray]:
    """The distribution of a new level's deviation, per draw: ``(mean, chol)`` with mean
    (S, C) and the Cholesky factor of its covariance (S, C, C), on the original scale, so that
    ``eta`` of a row of the new level is the predictor's eta (deviation 0) plus ``Z @ v`` with
    ``v ~ N(mean, chol chol')``.

    * partial pooling: ``N(0, Sigma)``, Sigma from the group SDs and correlations;
    * no pooling: the fixed prior of a level's coefficients, which applies on the engine's
      scale: the intercept's prior ``normal(0, s)`` is centered at the predictors' means, so on
      the original scale its mean is ``-sum_k b_k x_center_k``; a slope's SD is divided by its
      column's scale.
    """
    g = term.group
    C = g.n_coefs
    S = post.sizes["chain"] * post.sizes["draw"]
    mean = np.zeros((S, C))
    if term.estimated:
        sds = np.column_stack([draws(post, sd_name(term, c)) for c in g.coef_names])
        R = np.broadcast_to(np.eye(C), (S, C, C)).copy()
        if term.correlated and C > 1:
            for i in range(1, C):
                for k in range(i):
                    r = draws(post, cor_name(term, g.coef_names[k], g.coef_names[i]))
                    R[:, i, k] = r
                    R[:, k, i] = r
        chol = np.linalg.cholesky(R) * sds[:, :, None]
        return mean, chol
    d = spec.design
    zs = np.ones(C) if g.z_scale is None else np.asarray(g.z_scale, dtype=float)
    sd = np.asarray(term.sd_fixed, dtype=float) / zs
    chol = np.broadcast_to(np.diag(sd), (S, C, C)).copy()
    if "Intercept" in g.coef_names and d.x_center is not None and d.fixed_names:
        beta = np.column_stack([draws(post, fixed_name(c)) for c in d.fixed_names])
        shift = -(beta * np.asarray(d.x_center, dtype=float)[None, :]).sum(axis=1)
        mean[:, g.coef_names.index("Intercept")] = shift
    return mean, chol
