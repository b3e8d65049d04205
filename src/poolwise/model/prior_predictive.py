"""Prior predictive check on the probability scale.

Priors that look harmless on the link scale can be absurd on the probability scale: with
``normal(0, 10)`` on a logit intercept, most simulated groups have proportions of almost
exactly 0 or 1 (Gelman et al. 2020, "Bayesian workflow", sec. 2.4; Statistical Rethinking 2nd
ed., sec. 11.1.1). This module simulates parameters from the priors of a :class:`ModelSpec`
(exactly the priors the engine uses, on the engine's standardized scale), pushes them through
the design of the observed data and the inverse link, and summarises the *group proportions*:
for every level of every grouping factor, the expected proportion of successes over that
level's observed trials (for a model without group terms: every cell). When more than
``max_extreme`` (default 40 %) of these proportions fall outside ``[low, 1 - low]`` (default
``[0.01, 0.99]``) the priors pile their mass near 0 or 1 and :func:`check_prior_predictive`
warns (:class:`~poolwise.errors.DataWarning`). A flat prior cannot be simulated; the check is
then skipped and says so.

The correlation matrices of correlated terms are drawn from LKJ(eta) with the C-vine method of
Lewandowski, Kurowicka & Joe (2009): the canonical partial correlation of column ``j``
(0-based) is ``2 Beta(b, b) - 1`` with ``b = eta + (C - 2 - j) / 2``, assembled into the
Cholesky factor exactly as the engine does.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from poolwise.errors import DataWarning
from poolwise.model import families
from poolwise.model.predictive import level_sums
from poolwise.model.predictor import Rows, engine_coefficients, inverse_link, linear_predictor
from poolwise.model.priors import Prior
from poolwise.model.spec import ModelSpec

__all__ = [
    "PriorPredictive",
    "prior_predictive",
    "check_prior_predictive",
    "level_proportions",
    "sample_prior",
    "sample_prior_parameters",
    "sample_lkj_cholesky",
    "LOW",
    "MAX_EXTREME",
]

LOW = 0.01
MAX_EXTREME = 0.4
_BLOCK = 2_000_000  # draws x cells per block of the simulation


@dataclass(frozen=True, eq=False)
class PriorPredictive:
    """Prior predictive group proportions and their summary.

    ``proportions`` has shape (draws, units); ``units`` names each column (``district[3]``,
    or ``cell 17`` without group terms). ``frac_extreme`` is the fraction of all simulated
    proportions outside ``[low, 1 - low]``; ``ok`` is False when it exceeds ``max_extreme``.
    ``skipped`` gives the reason when nothing could be simulated (a flat prior).
    """

    proportions: np.ndarray
    units: tuple[str, ...]
    low: float
    max_extreme: float
    frac_extreme: float
    frac_low: float
    frac_high: float
    quantiles: dict[str, float] = field(default_factory=dict)
    skipped: str | None = None

    @property
    def ok(self) -> bool:
        return self.skipped is not None or self.frac_extreme <= self.max_extreme

    @property
    def message(self) -> str:
        if self.skipped is not None:
            return f"prior predictive check skipped: {self.skipped}"
        what = f"{self.frac_extreme:.0%} of the prior predictive group proportions"
        where = f"outside [{self.low:g}, {1 - self.low:g}]"
        if self.ok:
            return f"prior predictive check passed: {what} lie {where}"
        return (
            f"the priors pile their mass near 0 or 1: {what} lie {where} "
            f"({self.frac_low:.0%} below {self.low:g}, {self.frac_high:.0%} above "
            f"{1 - self.low:g}; more than {self.max_extreme:.0%} is a sign of priors that are "
            "too wide on the probability scale). Before seeing data the model claims that most "
            "groups almost never or almost always succeed; consider narrower priors, e.g. the "
            "defaults intercept=normal(0, 1.5), b=normal(0, 1), sd=exponential(1)"
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "low": self.low,
            "max_extreme": self.max_extreme,
            "frac_extreme": None if self.skipped else round(self.frac_extreme, 6),
            "frac_low": None if self.skipped else round(self.frac_low, 6),
            "frac_high": None if self.skipped else round(self.frac_high, 6),
            "quantiles": {k: round(v, 6) for k, v in self.quantiles.items()},
            "draws": int(self.proportions.shape[0]),
            "skipped": self.skipped,
            "message": self.message,
        }


def sample_prior(prior: Prior, rng: np.random.Generator, size: int | tuple[int, ...]) -> np.ndarray:
    """Draws from one prior (a flat prior raises ValueError: it cannot be simulated)."""
    try:
        return families.get(prior.family).draw(prior.params, rng, size)
    except ValueError as err:
        raise ValueError(f"cannot simulate from the prior {prior}: {err}") from err


def sample_lkj_cholesky(eta: float, C: int, rng: np.random.Generator, size: int) -> np.ndarray:
    """Cholesky factors of LKJ(eta) correlation matrices, shape (size, C, C) (C-vine method)."""
    L = np.zeros((size, C, C))
    L[:, 0, 0] = 1.0
    for i in range(1, C):
        rem = np.ones(size)  # 1 - sum of squares so far in row i
        for j in range(i):
            b = eta + (C - 2 - j) / 2.0
            z = 2.0 * rng.beta(b, b, size=size) - 1.0
            L[:, i, j] = z * np.sqrt(rem)
            rem = rem * (1.0 - z * z)
        L[:, i, i] = np.sqrt(rem)
    return L


def sample_prior_parameters(spec: ModelSpec, rng: np.random.Generator, S: int
                            ) -> tuple[np.ndarray, list[np.ndarray]]:
    """``S`` draws of the fixed coefficients (S, K) and, per group term, of its levels'
    deviations from their population mean (S, L, C), from the priors of ``spec`` on the
    engine's standardized scale (where they apply)."""
    beta = (
        np.column_stack([sample_prior(p, rng, S) for p in spec.fixed_priors])
        if spec.fixed_priors
        else np.zeros((S, 0))
    )
    deviations = []
    for term in spec.terms:
        g = term.group
        C, L = g.n_coefs, g.n_levels
        if term.estimated:
            sd = np.column_stack([sample_prior(p, rng, S) for p in term.sd_priors])
        else:
            sd = np.broadcast_to(np.asarray(term.sd_fixed, dtype=float), (S, C))
        zstd = rng.standard_normal((S, L, C))
        if term.correlated:
            Lc = sample_lkj_cholesky(term.lkj_eta, C, rng, S)
            dev = np.einsum("sck,slk->slc", Lc, zstd) * sd[:, None, :]
        else:
            dev = zstd * sd[:, None, :]
        deviations.append(dev)
    return beta, deviations


def level_proportions(p: np.ndarray, n: np.ndarray, codes: np.ndarray, L: int) -> np.ndarray:
    """Per draw, each level's expected proportion over its cells' trials: ``sum n p / sum n``
    (S, L); NaN for a level without trials."""
    tot = np.bincount(codes, weights=n, minlength=L)
    num = level_sums(n[None, :] * p, codes, L)
    return np.divide(num, tot, out=np.full((p.shape[0], L), np.nan), where=tot > 0)


def _flat_prior(spec: ModelSpec) -> str | None:
    for name, p in zip(spec.design.fixed_names, spec.fixed_priors, strict=True):
        if not p.spec.proper:
            return f"the prior of {name} is flat (improper), it cannot be simulated"
    return None


def _default_draws(n_cells: int) -> int:
    """1000 draws, fewer for large designs: the cost is draws x cells, so about 5 million
    simulated cells (at least 20 draws: 10^6 cells give 20 million proportions, whose
    fraction of extremes is exact to the fourth digit; 200 at least took 16 s there)."""
    return int(min(1000, max(20, 5_000_000 // max(1, n_cells))))


def prior_predictive(
    spec: ModelSpec,
    *,
    draws: int | None = None,
    seed: int = 0,
    low: float = LOW,
    max_extreme: float = MAX_EXTREME,
) -> PriorPredictive:
    """Simulate group proportions from the priors of ``spec`` (see the module docstring).

    Parameters
    ----------
    spec : ModelSpec
        The model (:func:`build_model`, or ``fit.spec``) whose priors and design are used.
    draws : int or None, default None
        Number of prior draws; None means 1000 (fewer, down to 20, for designs with more than
        5 000 cells).
    seed : int, default 0
        Random seed.
    low : float, default 0.01
        A proportion outside ``[low, 1 - low]`` counts as extreme.
    max_extreme : float, default 0.4
        The check fails (``ok`` is False) when more than this fraction of the simulated
        proportions is extreme.

    Returns
    -------
    PriorPredictive
        The simulated proportions (draws x units), the fractions near 0 and 1 and ``ok``;
        ``skipped`` says why nothing was simulated (a flat prior).
    """
    d = spec.design
    draws = _default_draws(d.n_cells) if draws is None else int(draws)
    rng = np.random.default_rng(seed)
    units = _units(spec)
    skipped = _flat_prior(spec)
    if skipped is not None:
        return PriorPredictive(
            np.empty((0, len(units))), tuple(units), low, max_extreme,
            float("nan"), float("nan"), float("nan"), skipped=skipped,
        )
    out = _simulate(spec, draws, len(units), rng)
    frac_low, frac_high, quantiles = _extremes(out, low)
    return PriorPredictive(
        out, tuple(units), low, max_extreme, frac_low + frac_high, frac_low, frac_high, quantiles
    )


def _units(spec: ModelSpec) -> list[str]:
    """The names of the simulated proportions: every level of every group term
    (``district[3]``), or every cell (``cell 17``) without group terms."""
    units: list[str] = []
    for term in spec.terms:
        units += [f"{term.name}[{lab}]" for lab in term.group.labels]
    if not spec.terms:
        units = [f"cell {i}" for i in range(spec.design.n_cells)]
    return units


def _simulate(spec: ModelSpec, draws: int, n_units: int, rng: np.random.Generator
              ) -> np.ndarray:
    """``draws`` prior predictive proportions of each unit (draws, units), a block of draws at
    a time (at most ``_BLOCK`` draws x cells)."""
    d = spec.design
    rows = Rows.of_design(d, engine_scale=True)
    n = d.n
    block = max(1, min(draws, _BLOCK // max(1, d.n_cells)))
    out = np.empty((draws, n_units))
    done = 0
    while done < draws:
        S = min(block, draws - done)
        beta, deviations = sample_prior_parameters(spec, rng, S)
        # a level's total is its mean (its fixed coefficient, or 0) plus the deviation; eta on
        # the engine's scale, where the priors apply
        eta = linear_predictor(spec, engine_coefficients(spec, beta, deviations), rows)
        with np.errstate(over="ignore"):
            prob = inverse_link(spec.link, eta)
        col = 0
        for term in spec.terms:
            g = term.group
            L = g.n_levels
            out[done : done + S, col : col + L] = level_proportions(prob, n, g.codes, L)
            col += L
        if not spec.terms:
            out[done : done + S] = prob
        done += S
    return out


def _extremes(out: np.ndarray, low: float) -> tuple[float, float, dict[str, float]]:
    """The fractions of the finite proportions below ``low`` and above ``1 - low``, and their
    5 %, 25 %, 50 %, 75 % and 95 % quantiles (none when no proportion is finite)."""
    # proportions are in [0, 1] or NaN (a level without trials); the finite ones are counted
    # in place, and copied once, to be partitioned for the quantiles (no second copy: with
    # 10^5 levels each copy is 160 MB of fresh memory)
    finite = np.isfinite(out)
    n_finite = int(np.count_nonzero(finite))
    frac_low = int(np.count_nonzero(out < low)) / n_finite if n_finite else 0.0
    frac_high = int(np.count_nonzero(out > 1.0 - low)) / n_finite if n_finite else 0.0
    qs = (0.05, 0.25, 0.5, 0.75, 0.95)
    quantiles: dict[str, float] = {}
    if n_finite:
        vals = out.ravel().copy() if n_finite == out.size else out[finite]
        # one call for the five quantiles: one partition of the values instead of five
        quantiles = {f"q{int(q * 100):02d}": float(v) for q, v in
                     zip(qs, np.quantile(vals, qs, overwrite_input=True), strict=True)}
    return frac_low, frac_high, quantiles


def check_prior_predictive(
    spec: ModelSpec,
    *,
    draws: int | None = None,
    seed: int = 0,
    low: float = LOW,
    max_extreme: float = MAX_EXTREME,
    emit: bool = True,
    stacklevel: int = 2,
) -> PriorPredictive:
    """:func:`prior_predictive`, and a :class:`DataWarning` (when ``emit``) if it fails."""
    pp = prior_predictive(spec, draws=draws, seed=seed, low=low, max_extreme=max_extreme)
    if emit and not pp.ok:
        warnings.warn(pp.message, DataWarning, stacklevel=stacklevel + 1)
    return pp
