"""Simulation-based calibration (SBC) of the whole pipeline: design, density, sampler.

Talts et al. (2018, arXiv:1804.06788); Modrák et al. (2023, doi:10.1214/23-BA1404). For each
replication: draw parameters from the prior, simulate data, fit the model, and rank the true
value of every parameter (and of the data log-likelihood, the most sensitive test quantity)
among roughly independent posterior draws. If everything is right the ranks are uniform.

* Ranks are taken on draws thinned by ``max(ceil(S / ESS_bulk), S // target_draws)``, with
  ``ESS_bulk`` the smallest bulk ESS of the ranked quantities in that replication, so they come
  from about ``target_draws`` roughly independent draws (the Stan User's Guide's advice;
  ranks on autocorrelated draws are not uniform even when the sampler is right).
* A rank ``r`` out of ``L`` draws is turned into a randomized PIT value ``(r + U) / (L + 1)``,
  ``U ~ Uniform(0, 1)``, which is exactly Uniform(0, 1) under calibration for any ``L``; that is
  what the chi-square test (equiprobable bins) and arviz-stats' ``uniformity_test`` (pot_c) see.
* No replication is dropped: divergent replications are counted and kept; a replication whose
  fit raises is recorded in ``failures`` (and the tests require none).
* Every replication has its own seed sequence ``SeedSequence([seed, rep])``, so the result does
  not depend on the number of worker processes or the order they finish in.

The generator of this module (:class:`VaryingInterceptGenerator`) simulates the
varying-intercept Bernoulli model; its ``sd_factor`` and ``index_shift`` inject the deliberate
faults of the negative controls (docs/reliability.md B3).
"""

from __future__ import annotations

import math
import multiprocessing
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from poolwise.errors import DataWarning
from poolwise.model.priors import Priors, half_normal, lkj, normal

__all__ = [
    "SBCSettings",
    "SBCResult",
    "Replication",
    "VaryingInterceptGenerator",
    "VaryingSlopeGenerator",
    "ecdf_in_bands",
    "run_sbc",
    "process_pool",
    "randomized_pit",
    "rank_statistics",
    "Ranked",
    "chi2_pvalue",
    "uniformity_pvalue",
]

Truth = dict[str, Any]
Generator = Callable[[np.random.Generator], tuple[pd.DataFrame, Truth]]

LOG_LIK = "log_lik"


@dataclass(frozen=True)
class VaryingInterceptGenerator:
    """``y_ij ~ Bernoulli(logit^-1(a_j))``, ``a_j = mu + sd z_j``, ``z_j ~ N(0, 1)``,
    ``mu ~ Normal(intercept_prior)``, ``sd ~ HalfNormal(sd_scale)``; ``per_group`` rows in each
    of ``groups`` groups labelled 1..groups.

    Faults for negative controls: ``sd_factor`` simulates the group effects with
    ``sd_factor * sd`` while reporting ``sd`` as the truth; ``index_shift`` simulates the rows
    of group ``j`` from the effect of group ``j + index_shift`` (an off-by-one group index).
    """

    groups: int = 3
    per_group: int = 20
    intercept_prior: tuple[float, float] = (0.0, 1.5)
    sd_scale: float = 1.0
    sd_factor: float = 1.0
    index_shift: int = 0

    formula: str = "y ~ 1 + (1 | g)"

    def priors(self) -> Priors:
        return Priors(intercept=normal(*self.intercept_prior), sd=half_normal(self.sd_scale))

    def __call__(self, rng: np.random.Generator) -> tuple[pd.DataFrame, Truth]:
        mu = rng.normal(*self.intercept_prior)
        sd = abs(rng.normal(0.0, self.sd_scale))
        a = mu + self.sd_factor * sd * rng.normal(size=self.groups)
        codes = np.repeat(np.arange(self.groups), self.per_group)
        p = 1.0 / (1.0 + np.exp(-a[(codes + self.index_shift) % self.groups]))
        y = (rng.random(codes.size) < p).astype(np.int64)
        labels = codes + 1
        frame = pd.DataFrame({"y": y, "g": labels})
        truth = {
            "Intercept": float(mu),
            "sd_g": float(sd),
            "a_g": {j + 1: float(a[j]) for j in range(self.groups)},
        }
        return frame, truth


@dataclass(frozen=True)
class VaryingSlopeGenerator:
    """The binomial varying intercept + varying slope model (docs/reliability.md B2):
    ``y_i ~ Binomial(n_i, logit^-1(a_g[i] + b_g[i] x_i))``, ``(a_j, b_j)`` bivariate normal
    around ``(Intercept, b_x)`` with SDs ``sd_g__Intercept``, ``sd_g__x`` ~ HalfNormal(sd_scale)
    and correlation ``cor_g__Intercept__x`` ~ LKJ(eta) (for 2 x 2: (r + 1) / 2 ~
    Beta(eta, eta)); ``Intercept ~ Normal(0, 1.5)``, ``b_x ~ Normal(0, 1)``.

    Unbalanced on purpose: each of ``groups`` groups has ``rows`` rows drawn from 1..40, each
    row 1..20 trials. ``x`` is standardized exactly (mean 0, SD 1 over the rows) in the
    generator, so the model's standardization is the identity and the priors of the
    generator and the model refer to the same parameters (the brms centering trap of
    docs/reliability.md B3 (iii) cannot arise). Ancillary quantities (sizes, trials, x) are drawn
    afresh in every replication, independent of the parameters.
    """

    groups: int = 8
    rows: tuple[int, int] = (1, 40)
    trials: tuple[int, int] = (1, 20)
    sd_scale: float = 1.0
    eta: float = 2.0

    formula: str = "y | trials(n) ~ 1 + x + (1 + x | g)"

    def priors(self) -> Priors:
        return Priors(intercept=normal(0.0, 1.5), b=normal(0.0, 1.0),
                      sd=half_normal(self.sd_scale), cor=lkj(self.eta))

    def __call__(self, rng: np.random.Generator) -> tuple[pd.DataFrame, Truth]:
        intercept = rng.normal(0.0, 1.5)
        slope = rng.normal(0.0, 1.0)
        sd = np.abs(rng.normal(0.0, self.sd_scale, 2))
        cor = 2.0 * rng.beta(self.eta, self.eta) - 1.0
        chol = np.array([[1.0, 0.0], [cor, np.sqrt(1.0 - cor * cor)]])
        u = (rng.normal(size=(self.groups, 2)) @ chol.T) * sd
        a, b = intercept + u[:, 0], slope + u[:, 1]
        sizes = rng.integers(self.rows[0], self.rows[1] + 1, self.groups)
        codes = np.repeat(np.arange(self.groups), sizes)
        x = rng.normal(size=codes.size)
        x = (x - x.mean()) / x.std()
        n = rng.integers(self.trials[0], self.trials[1] + 1, codes.size)
        eta = a[codes] + b[codes] * x
        y = rng.binomial(n, 1.0 / (1.0 + np.exp(-eta)))
        frame = pd.DataFrame({"y": y, "n": n, "x": x, "g": codes + 1})
        labels = range(1, self.groups + 1)
        truth = {
            "Intercept": float(intercept),
            "b_x": float(slope),
            "sd_g__Intercept": float(sd[0]),
            "sd_g__x": float(sd[1]),
            "cor_g__Intercept__x": float(cor),
            "a_g": {j: float(v) for j, v in zip(labels, a, strict=True)},
            "b_g__x": {j: float(v) for j, v in zip(labels, b, strict=True)},
        }
        return frame, truth


@dataclass(frozen=True)
class SBCSettings:
    """Sampler and ranking settings of one SBC run."""

    chains: int = 4
    tune: int = 500
    draws: int = 500  # docs/reliability.md B1: 4 x 500 (with 4 x 250, most fits had R-hat > 1.01)
    target_accept: float = 0.95  # few groups: the SD's posterior reaches 0
    parameterization: str = "noncentered"
    target_draws: int = 100  # ranks come from about this many thinned draws
    cores: int = 1  # nutpie threads per fit (replications run in parallel instead)


@dataclass(frozen=True)
class Replication:
    """What one replication contributes: PIT values, its rank basis and its diagnostics."""

    rep: int
    pit: dict[str, float]
    ranks: dict[str, int]
    n_ranked: int  # L: number of thinned draws the ranks are taken among
    thin: int
    divergences: int
    max_rhat: float
    min_ess_bulk: float
    error: str | None = None


@dataclass(frozen=True)
class SBCResult:
    names: tuple[str, ...]
    replications: tuple[Replication, ...]
    settings: SBCSettings
    seed: int
    bins: int = 10
    failures: tuple[tuple[int, str], ...] = field(default_factory=tuple)

    @property
    def ok_replications(self) -> tuple[Replication, ...]:
        return tuple(r for r in self.replications if r.error is None)

    def pit(self, name: str) -> np.ndarray:
        return np.array([r.pit[name] for r in self.ok_replications])

    @property
    def divergent_replications(self) -> int:
        return sum(r.divergences > 0 for r in self.ok_replications)

    @property
    def total_divergences(self) -> int:
        return sum(r.divergences for r in self.ok_replications)

    def tests(self, band_prob: float | None = None) -> pd.DataFrame:
        """Per quantity: chi-square p-value (``bins`` equiprobable bins), arviz-stats pot_c
        uniformity p-value, and the mean PIT (0.5 under calibration). With ``band_prob``
        (e.g. 0.99) also ``in_band``: whether the PIT ECDF stays inside the simultaneous band
        of level ``1 - (1 - band_prob) / n_quantities`` (Bonferroni over the quantities, so
        that ``band_prob`` holds for the whole family: with 22 quantities, 99% bands each
        would flag a calibrated pipeline one run in five)."""
        rows = []
        level = None if band_prob is None else 1.0 - (1.0 - band_prob) / max(len(self.names), 1)
        for name in self.names:
            u = self.pit(name)
            row: dict[str, Any] = {
                "quantity": name,
                "chi2_p": chi2_pvalue(u, self.bins),
                "uniformity_p": uniformity_pvalue(u),
                "mean_pit": float(np.mean(u)) if u.size else np.nan,
                "n": int(u.size),
            }
            if level is not None:
                row["in_band"] = ecdf_in_bands(u, level)
            rows.append(row)
        return pd.DataFrame(rows).set_index("quantity")

    def describe(self) -> str:
        n = len(self.replications)
        ls = np.array([r.n_ranked for r in self.ok_replications])
        high_rhat = sum(r.max_rhat > 1.01 for r in self.ok_replications)
        return (
            f"{n} replications, {len(self.failures)} failed, {self.divergent_replications} with "
            f"divergences ({self.total_divergences} divergent draws in all, kept), {high_rhat} "
            f"with max R-hat > 1.01 (kept); ranks among "
            f"{ls.min() if ls.size else 0}-{ls.max() if ls.size else 0} thinned draws"
        )


def randomized_pit(rank: int, n_draws: int, u: float) -> float:
    """A rank in {0..L} as a continuous PIT value, exactly Uniform(0, 1) under calibration."""
    return (rank + u) / (n_draws + 1)


def chi2_pvalue(pit: np.ndarray, bins: int = 10) -> float:
    from scipy.stats import chisquare

    counts, _ = np.histogram(pit, bins=bins, range=(0.0, 1.0))
    return float(chisquare(counts).pvalue)


def uniformity_pvalue(pit: np.ndarray) -> float:
    """arviz-stats' pointwise order test with Cauchy combination (pot_c)."""
    from arviz_stats.base import array_stats

    p, _, _ = array_stats.uniformity_test(np.asarray(pit, dtype=float), method="pot_c")
    return float(p)


@dataclass(frozen=True)
class Ranked:
    """Ranks of the true values among thinned draws, and their randomized PIT values."""

    pit: np.ndarray  # (n,)
    ranks: np.ndarray  # (n,) in 0..n_ranked
    n_ranked: int
    thin: int
    min_ess_bulk: float
    max_rhat: float


def rank_statistics(
    draws: np.ndarray,
    true: np.ndarray,
    target_draws: int = 100,
    rng: np.random.Generator | None = None,
    *,
    thin: int | None = None,
) -> Ranked:
    """Rank ``true`` (n,) among ``draws`` (n, chain, draw) thinned to be roughly independent.

    The thinning step is ``max(ceil(S / ESS), S // target_draws)`` with ``S`` the number of
    draws and ``ESS`` the smallest bulk ESS over the n quantities (one step for all, so the
    ranks of all quantities come from the same draws); every chain is thinned alike. Pass
    ``thin`` to force a step (``thin=1``: unthinned, for demonstrating why thinning matters).
    """
    from arviz_stats.base import array_stats

    draws = np.asarray(draws, dtype=float)
    true = np.asarray(true, dtype=float)
    n, chains, n_draws = draws.shape
    total = chains * n_draws
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ess = np.asarray(array_stats.ess(draws, chain_axis=-2, draw_axis=-1, method="bulk"))
        rhat = np.asarray(array_stats.rhat(draws, chain_axis=-2, draw_axis=-1))
    ess_min = float(np.nanmin(ess)) if np.isfinite(ess).any() else 1.0
    if thin is None:
        thin = max(math.ceil(total / max(ess_min, 1.0)), total // target_draws, 1)
    kept = draws[:, :, ::thin].reshape(n, -1)
    n_ranked = kept.shape[1]
    ranks = (kept < true[:, None]).sum(axis=1)
    jitter = (rng or np.random.default_rng()).random(n)
    return Ranked(
        pit=(ranks + jitter) / (n_ranked + 1),
        ranks=ranks,
        n_ranked=n_ranked,
        thin=int(thin),
        min_ess_bulk=ess_min,
        max_rhat=float(np.nanmax(rhat)) if np.isfinite(rhat).any() else np.nan,
    )


def ecdf_in_bands(pit: np.ndarray, prob: float = 0.99, n_simulations: int = 1000) -> bool:
    """True when the ECDF of the PIT values stays inside the ``prob`` simultaneous band of
    the uniform ECDF (Säilynoja, Bürkner & Vehtari 2022; arviz-stats ``ecdf_pit``). The band
    is simultaneous over the points of one ECDF; for several quantities at once, divide
    ``1 - prob`` by their number (see :meth:`SBCResult.tests`)."""
    from arviz_stats.ecdf_utils import ecdf_pit

    _, ecdf, lower, upper = ecdf_pit(np.asarray(pit, dtype=float), prob, n_simulations,
                                     rng=np.random.default_rng(214))
    return bool(np.all((ecdf >= lower) & (ecdf <= upper)))


# --------------------------------------------------------------------------------------------
# one replication
# --------------------------------------------------------------------------------------------


def _key(label: Any) -> Any:
    """A coordinate value as the Python scalar the generator used as a truth key."""
    return label.item() if hasattr(label, "item") else label


def _scalar_quantities(post: xr.Dataset, truth: Truth) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Names, (n, chain, draw) posterior draws and (n,) true values of every scalar parameter."""
    names: list[str] = []
    draws: list[np.ndarray] = []
    values: list[float] = []
    for var, da in post.data_vars.items():
        extra = [d for d in da.dims if d not in ("chain", "draw")]
        if not extra:
            names.append(str(var))
            draws.append(da.transpose("chain", "draw").values)
            values.append(float(truth[str(var)]))
            continue
        (dim,) = extra
        true_by_label = truth[str(var)]
        for lab in da[dim].values:
            names.append(f"{var}[{lab}]")
            draws.append(da.sel({dim: lab}).transpose("chain", "draw").values)
            values.append(float(true_by_label[_key(lab)]))
    return names, np.stack(draws), np.array(values)


def _truth_dataset(post: xr.Dataset, truth: Truth) -> xr.Dataset:
    """The true parameters as a one-chain, one-draw posterior (for test quantities)."""
    data: dict[Any, Any] = {}
    for var, da in post.data_vars.items():
        extra = [d for d in da.dims if d not in ("chain", "draw")]
        if not extra:
            data[var] = (("chain", "draw"), np.array([[truth[str(var)]]], dtype=float))
        else:
            (dim,) = extra
            vals = [truth[str(var)][_key(lab)] for lab in da[dim].values]
            data[var] = (("chain", "draw", dim), np.array(vals, dtype=float)[None, None, :])
    coords = {d: post[d].values for d in post.dims if d not in ("chain", "draw")}
    return xr.Dataset(data, coords={"chain": [0], "draw": [0], **coords})


def _data_log_lik(spec: Any, post: xr.Dataset) -> np.ndarray:
    """Log-likelihood of the whole data set at each draw, shape (chain, draw)."""
    from poolwise.model.likelihood import total_log_likelihood

    return total_log_likelihood(spec, post)


def _replicate(generator: Generator, formula: str, priors: Priors, settings: SBCSettings,
               seed: int, rep: int) -> Replication:
    from poolwise.engine.sampler import SamplerConfig
    from poolwise.inference.sampling import sample_spec
    from poolwise.model.spec import build_model

    ss = np.random.SeedSequence([seed, rep])
    data_ss, sampler_ss, pit_ss = ss.spawn(3)
    frame, truth = generator(np.random.default_rng(data_ss))
    try:
        config = SamplerConfig(
            chains=settings.chains, tune=settings.tune, draws=settings.draws,
            seed=int(sampler_ss.generate_state(1, np.uint32)[0]),
            target_accept=settings.target_accept, cores=settings.cores,
        )
        with warnings.catch_warnings():
            # few groups, all-0 / all-1 outcomes, short chains: expected here, not failures
            warnings.simplefilter("ignore", DataWarning)
            spec = build_model(formula, frame, priors=priors,
                               parameterization=settings.parameterization)  # type: ignore[arg-type]
            fit = sample_spec(spec, config, log_likelihood=False)
    except Exception as err:  # noqa: BLE001 - recorded, never dropped silently
        return Replication(rep, {}, {}, 0, 0, 0, np.nan, np.nan,
                           error=f"{type(err).__name__}: {err}")
    post = fit.posterior
    names, draws, true = _scalar_quantities(post, truth)
    names.append(LOG_LIK)
    draws = np.concatenate([draws, _data_log_lik(spec, post)[None]], axis=0)
    true = np.append(true, _data_log_lik(spec, _truth_dataset(post, truth))[0, 0])

    ranked = rank_statistics(draws, true, settings.target_draws, np.random.default_rng(pit_ss))
    return Replication(
        rep=rep,
        pit=dict(zip(names, ranked.pit.tolist(), strict=True)),
        ranks=dict(zip(names, ranked.ranks.tolist(), strict=True)),
        n_ranked=ranked.n_ranked,
        thin=ranked.thin,
        divergences=fit.diagnosis.divergences,
        max_rhat=ranked.max_rhat,
        min_ess_bulk=ranked.min_ess_bulk,
    )


def _replicate_chunk(generator: Generator, formula: str, priors: Priors, settings: SBCSettings,
                     seed: int, reps: Sequence[int]) -> list[Replication]:
    return [_replicate(generator, formula, priors, settings, seed, r) for r in reps]


def process_pool(workers: int) -> ProcessPoolExecutor:
    """A pool of spawned worker processes (nutpie's threads make fork unsafe)."""
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))


def run_sbc(
    generator: Generator,
    replications: int = 200,
    *,
    formula: str | None = None,
    priors: Priors | None = None,
    seed: int = 0,
    settings: SBCSettings | None = None,
    workers: int = 1,
    executor: Executor | None = None,
    bins: int = 10,
) -> SBCResult:
    """Run ``replications`` SBC replications of ``generator``.

    ``generator(rng) -> (data frame, truth)``; ``truth`` maps every posterior variable name to
    its true value (a ``{label: value}`` dict for group variables). ``formula`` and ``priors``
    default to the generator's own (``generator.formula``, ``generator.priors()``); they must
    match the generator's model, or SBC fails, which is what the negative controls check.
    With ``workers > 1`` replications run in a pool of processes (spawned, not forked: the
    sampler's threads do not survive a fork); the generator must then be picklable. Pass an
    ``executor`` (e.g. from :func:`process_pool`) to share one pool between several runs.
    """
    settings = settings or SBCSettings()
    formula = formula or getattr(generator, "formula")  # noqa: B009
    priors = priors or generator.priors()  # type: ignore[attr-defined]
    reps = list(range(replications))
    results: list[Replication] = []
    if executor is None and workers <= 1:
        results = _replicate_chunk(generator, formula, priors, settings, seed, reps)
    else:
        n_chunks = 4 * max(workers, getattr(executor, "_max_workers", 1))
        chunks = [reps[i::n_chunks] for i in range(n_chunks)]
        pool = executor or process_pool(workers)
        try:
            futures = [
                pool.submit(_replicate_chunk, generator, formula, priors, settings, seed, c)
                for c in chunks if c
            ]
            for fut in futures:
                results.extend(fut.result())
        finally:
            if executor is None:
                pool.shutdown()
    results.sort(key=lambda r: r.rep)
    names: tuple[str, ...] = ()
    for r in results:
        if r.error is None:
            names = tuple(r.pit)
            break
    failures = tuple((r.rep, r.error) for r in results if r.error is not None)
    return SBCResult(names, tuple(results), settings, seed, bins, failures)
