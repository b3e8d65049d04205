"""Simulation-based calibration of the whole pipeline (docs/reliability.md B1, B3).

B1: the 3-group varying-intercept Bernoulli model (20 rows per group, non-centered,
Intercept ~ Normal(0, 1.5), sd ~ HalfNormal(1)), 200 replications, 4 chains x 500 draws,
ranks among ~100 draws thinned by bulk ESS, for Intercept, sd_g, a_g[1..3] and the data
log-likelihood. Pass: chi-square on 10 equiprobable bins and arviz-stats' uniformity test
(pot_c) both give p > 0.001 for every quantity; every replication is kept (divergent ones
are counted, reported and stay in the rank set).

B3: the same suite must fail (p < 1e-6) for a generator whose group SD is twice the model's
and for an off-by-one group index: proof that B1 has the power to see such bugs.

B2 (slow, ``make test-slow``): the binomial varying intercept + correlated varying slope
model, 8 unbalanced groups, 1000 replications, 20 bins, plus the 99% simultaneous ECDF bands.

The unit tests at the end check the rank machinery itself on exact (iid) posterior draws of
a conjugate normal model, where the answer is known, including why ranks must come from
thinned draws (docs/reliability.md B3 (iv): unthinned, strongly autocorrelated draws fail).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from scipy.signal import lfilter

from poolwise.inference.sbc import (
    SBCResult,
    VaryingInterceptGenerator,
    VaryingSlopeGenerator,
    chi2_pvalue,
    ecdf_in_bands,
    process_pool,
    rank_statistics,
    run_sbc,
    uniformity_pvalue,
)

REPLICATIONS = 200
SEED = 20260611
ALPHA = 0.001
FAIL_P = 1e-6
QUANTITIES = ["Intercept", "sd_g", "a_g[1]", "a_g[2]", "a_g[3]", "log_lik"]

SCENARIOS = {
    "calibrated": VaryingInterceptGenerator(),
    "sd_twice": VaryingInterceptGenerator(sd_factor=2.0),
    "off_by_one": VaryingInterceptGenerator(index_shift=1),
}


@pytest.fixture(scope="module")
def sbc_results() -> dict[str, SBCResult]:
    """All three scenarios through one pool of 2 spawned workers (1 nutpie thread each)."""
    with process_pool(2) as pool:
        return {
            name: run_sbc(gen, REPLICATIONS, seed=SEED, executor=pool)
            for name, gen in SCENARIOS.items()
        }


def _report(result: SBCResult) -> str:
    return f"{result.describe()}\n{result.tests().to_string(float_format=lambda v: f'{v:.3g}')}"


@pytest.mark.slow  # the 200 + 2 x 200 replications take about a minute
def test_calibrated_pipeline_passes(sbc_results):
    result = sbc_results["calibrated"]
    table = result.tests()
    assert list(table.index) == QUANTITIES
    assert (table["chi2_p"] > ALPHA).all(), _report(result)
    assert (table["uniformity_p"] > ALPHA).all(), _report(result)


@pytest.mark.slow  # the 200 + 2 x 200 replications take about a minute
def test_no_replication_is_dropped(sbc_results):
    for name, result in sbc_results.items():
        assert len(result.replications) == REPLICATIONS, name
        assert result.failures == (), (name, result.failures[:3])
        assert sorted(r.rep for r in result.replications) == list(range(REPLICATIONS))
        # divergent replications stay in the rank set: every quantity has all 200 ranks
        assert (result.tests()["n"] == REPLICATIONS).all(), name
    calibrated = sbc_results["calibrated"]
    # docs/reliability.md B1: at most 2% of the replications may have any divergence
    assert calibrated.divergent_replications <= 0.02 * REPLICATIONS, _report(calibrated)
    # ranks come from roughly 100 draws (fewer only where the ESS is lower)
    n_ranked = np.array([r.n_ranked for r in calibrated.replications])
    assert n_ranked.max() == 100 and np.median(n_ranked) == 100


@pytest.mark.slow  # the 200 + 2 x 200 replications take about a minute
@pytest.mark.parametrize(("scenario", "culprits"), [
    ("sd_twice", {"sd_g"}),
    ("off_by_one", {"a_g[1]", "a_g[2]", "a_g[3]", "log_lik"}),
])
def test_negative_controls_fail(sbc_results, scenario, culprits):
    result = sbc_results[scenario]
    table = result.tests()
    assert table["chi2_p"].min() < FAIL_P, _report(result)
    assert table["uniformity_p"].min() < FAIL_P, _report(result)
    flagged = set(table.index[(table["chi2_p"] < FAIL_P) | (table["uniformity_p"] < FAIL_P)])
    assert flagged & culprits, _report(result)


@pytest.mark.slow  # the 200 + 2 x 200 replications take about a minute
def test_results_do_not_depend_on_the_number_of_workers(sbc_results):
    """Each replication has its own seed sequence: in-process == pooled, replication by
    replication (here the first 3)."""
    alone = run_sbc(SCENARIOS["calibrated"], 3, seed=SEED, workers=1)
    assert alone.names == tuple(QUANTITIES)
    assert [r.pit for r in alone.replications] == [
        r.pit for r in sbc_results["calibrated"].replications[:3]
    ]


# --- B2 (slow): binomial varying intercept + correlated varying slope -----------------------


@pytest.mark.slow
def test_varying_slope_model_is_calibrated():
    """docs/reliability.md B2: 8 groups of 1-40 rows, 1-20 trials per row, LKJ(2) correlation;
    1000 replications (``POOLWISE_SBC_REPS`` to change), 20 bins, p > 0.001 for both tests
    for each of the 22 quantities, and every PIT ECDF inside the 99% band, simultaneous over
    the points and (Bonferroni) over the 22 quantities."""
    reps = int(os.environ.get("POOLWISE_SBC_REPS", "1000"))
    with process_pool(2) as pool:
        result = run_sbc(VaryingSlopeGenerator(), reps, seed=SEED, executor=pool, bins=20)
    table = result.tests(band_prob=0.99)
    report = f"{result.describe()}\n{table.to_string(float_format=lambda v: f'{v:.3g}')}"
    assert result.failures == () and len(result.replications) == reps, report
    assert len(table) == 22, report
    assert (table["chi2_p"] > ALPHA).all(), report
    assert (table["uniformity_p"] > ALPHA).all(), report
    assert table["in_band"].all(), report


# --- the rank machinery on exactly known posteriors ------------------------------------------


def _conjugate_normal(rng: np.random.Generator, n_sims: int, *, chains: int = 4,
                      draws: int = 250, rho: float = 0.0, width: float = 1.0):
    """theta ~ N(0, 1), 5 observations y ~ N(theta, 1): posterior N(sum(y) / 6, 1 / 6).
    Chains are exact AR(1) processes with stationary distribution = the posterior (times
    ``width`` for a wrong posterior), so every marginal is exact when width = 1."""
    out = []
    for _ in range(n_sims):
        theta = rng.normal()
        y = rng.normal(theta, 1.0, 5)
        mean, sd = y.sum() / 6.0, width / np.sqrt(6.0)
        e = rng.normal(size=(chains, draws))
        e[:, 0] /= np.sqrt(1 - rho**2)  # start in the stationary distribution
        x = lfilter([np.sqrt(1 - rho**2)], [1.0, -rho], e, axis=1)
        out.append((mean + sd * x[None], np.array([theta])))
    return out


def _pits(sims, **kw) -> np.ndarray:
    rng = np.random.default_rng(1)
    return np.array([rank_statistics(d, t, 100, rng, **kw).pit[0] for d, t in sims])


def test_exact_posterior_draws_are_uniform():
    sims = _conjugate_normal(np.random.default_rng(5), 400)
    u = _pits(sims)
    assert chi2_pvalue(u) > ALPHA and uniformity_pvalue(u) > ALPHA
    assert ecdf_in_bands(u)


def test_too_narrow_posterior_fails():
    sims = _conjugate_normal(np.random.default_rng(6), 400, width=0.5)
    u = _pits(sims)
    assert chi2_pvalue(u) < FAIL_P and uniformity_pvalue(u) < FAIL_P
    assert not ecdf_in_bands(u)


def test_autocorrelated_draws_need_thinning():
    """AR(1) chains with rho = 0.999 whose marginals are exact: ranks on ESS-thinned draws
    are uniform, ranks on all (unthinned) draws are not (they pile up at 0 and L: the chi-square
    on 10 bins barely sees it, the order test does)."""
    sims = _conjugate_normal(np.random.default_rng(7), 300, rho=0.999, draws=500)
    thinned = rank_statistics(sims[0][0], sims[0][1], 100)
    assert thinned.thin > 20  # ESS-driven, not the 2000 // 100 floor
    u_thin = _pits(sims)
    u_all = _pits(sims, thin=1)
    assert chi2_pvalue(u_thin) > ALPHA and uniformity_pvalue(u_thin) > ALPHA
    assert chi2_pvalue(u_all) < FAIL_P and uniformity_pvalue(u_all) < FAIL_P


def test_randomized_pit_is_uniform_for_any_number_of_draws():
    rng = np.random.default_rng(3)
    for n_ranked in (1, 9, 99):
        ranks = rng.integers(0, n_ranked + 1, 5000)
        u = (ranks + rng.random(ranks.size)) / (n_ranked + 1)
        assert chi2_pvalue(u) > ALPHA, n_ranked
