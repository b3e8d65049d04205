"""``method="approx"`` with varying slopes (poolwise.inference.approx): the compiled C-d
quadrature against the general one of leave-one-group-out, the exact group draws against a
dense grid of their conditional density, and the whole fit against NUTS (the bundled example
with ``(1 + urban | district)``, correlated and not, no pooling, three varying coefficients on
simulated data with a probit link and an offset).

Every test is in the slow tier: the compiled kernels compile once per install (about 40 s)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
from test_approx import _agree_with_nuts

import poolwise
from poolwise.model import links
from poolwise.model.likelihood import CellLikelihood
from poolwise.model.quadrature import (
    NewLevelPrior,
    kd_draws,
    kd_log_integrals,
    new_level_log_density,
)

SLOPES = "use.contraception ~ 1 + urban + (1 + urban | district)"


def _dense_moments(y, n, Z, eta0, cov, link="logit"):
    """Mean (2,), covariance (2, 2) of ``prod_c Binom(y_c | n_c, p(eta0_c + Z_c v)) N(v | 0,
    cov)`` on a dense 2-d grid."""
    g = np.linspace(-7, 7, 1401)
    V = np.stack(np.meshgrid(g, g, indexing="ij"), axis=-1).reshape(-1, 2)
    eta = eta0[None, :] + V @ Z.T
    p = np.clip(links.get(link).inverse(eta), 1e-300, 1 - 1e-16)
    lp = (y * np.log(p) + (n - y) * np.log1p(-p)).sum(axis=1)
    lp -= 0.5 * np.einsum("qi,ij,qj->q", V, np.linalg.inv(cov), V)
    w = np.exp(lp - lp.max())
    w /= w.sum()
    mean = w @ V
    r = V - mean
    return mean, (r.T * w) @ r


@pytest.mark.slow
def test_the_slope_draws_follow_their_conditional_posterior():
    """Two levels (one with 4 cells of an urban-like 0/1 slope, one with a continuous slope
    and a saturated cell), two draws of the prior, 20,000 draws per (draw, level): their means
    and covariances equal those of a dense grid; two groups sharing a level get independent
    draws; nothing fails; the envelope accepts about 1 proposal in 2-4; any split into batches
    gives the same draws."""
    Z = np.array([[1, 0], [1, 1], [1, 0], [1, 1], [1, -1.2], [1, 0.3], [1, 2.0]], dtype=float)
    y = np.array([3, 5, 0, 9, 0, 4, 7], dtype=float)
    n = np.array([12, 9, 4, 10, 6, 10, 7], dtype=float)
    starts = np.array([0, 4])
    chols = np.array([[[0.8, 0.0], [-0.3, 0.6]], [[1.5, 0.0], [0.9, 0.7]]])
    eta0 = np.array([[-0.4, 0.2, -0.4, 0.2, -0.1, -0.1, -0.1],
                     [0.1, 0.1, 0.1, 0.1, -0.6, -0.6, -0.6]])
    R = 20_000
    S = 2 * R
    prior = NewLevelPrior.of(np.zeros((S, 2)), np.repeat(chols, R, axis=0))
    level_of_group = np.array([0, 1, 1])  # groups 1 and 2 share level 1's cells
    members = (np.array([0, 1, 2]), np.array([0, 1, 3]), 3)
    eta = np.repeat(eta0, R, axis=0)
    draws, counts = kd_draws(0, eta, y, n, Z, starts, prior, np.zeros((2, 2)), key=5,
                             members=members)
    assert draws.shape == (S, 3, 2) and counts.failed == 0 and counts.draws == 3 * S
    assert 1.2 < counts.proposals / counts.draws < 5
    for d in range(2):
        block = draws[d * R:(d + 1) * R]
        for group, level in enumerate(level_of_group):
            cells = slice(starts[level], starts[level + 1] if level + 1 < len(starts) else None)
            mean, cov = _dense_moments(y[cells], n[cells], Z[cells], eta0[d, cells],
                                       chols[d] @ chols[d].T)
            got = block[:, group]
            sd = np.sqrt(np.diag(cov))
            assert np.all(np.abs(got.mean(axis=0) - mean) < 4 * sd / np.sqrt(R)), (d, group)
            np.testing.assert_allclose(got.std(axis=0), sd, rtol=0.03)
            corr = cov[0, 1] / (sd[0] * sd[1])
            assert abs(np.corrcoef(got.T)[0, 1] - corr) < 0.03
        assert abs(np.corrcoef(block[:, 1, 0], block[:, 2, 0])[0, 1]) < 0.03
    part = NewLevelPrior.of(np.zeros((10, 2)), prior.chol[100:110])
    again = kd_draws(0, eta[100:110], y, n, Z, starts, part, np.zeros((2, 2)), key=5, first=100,
                     members=members)[0]
    np.testing.assert_array_equal(again, draws[100:110])
    # draws that share their parameters (draws_of: one row of eta and the prior for draws 100,
    # 103 and 107, another for 101 and 102) draw what they draw with a row each, bitwise
    of = np.array([100, 103, 107, 101, 102])
    rows = NewLevelPrior.of(np.zeros((2, 2)), prior.chol[[100, 101]])
    shared, sc = kd_draws(0, eta[[100, 101]], y, n, Z, starts, rows, np.zeros((2, 2)), key=5,
                          members=members, out=np.zeros_like(draws),
                          draws_of=(of, np.array([0, 3, 5])))
    for d, row in zip(of, [100, 100, 100, 101, 101], strict=True):
        alone = kd_draws(0, eta[[row]], y, n, Z, starts,
                         NewLevelPrior.of(np.zeros((1, 2)), prior.chol[[row]]),
                         np.zeros((2, 2)), key=5, first=d, members=members)[0]
        np.testing.assert_array_equal(shared[d], alone[0])
    assert sc.draws == 5 * 3 and sc.failed == 0


@pytest.mark.slow
@pytest.mark.parametrize("C", [2, 3])
def test_the_compiled_quadrature_equals_the_general_one(C):
    """kd_log_integrals (the approximation's path) gives leave-one-group-out's integrals, every
    link, to the mode search's tolerance: the same nodes, at the approximation's count."""
    rng = np.random.default_rng(3)
    G, S = 30, 3
    codes = np.repeat(np.arange(G), 3)
    n = rng.integers(1, 30, codes.size).astype(float)
    y = rng.binomial(n.astype(int), 0.3).astype(float)
    Z = np.column_stack([np.ones(codes.size), rng.normal(size=(codes.size, C - 1))])
    starts = np.flatnonzero(np.r_[True, np.diff(codes) != 0])
    A = rng.normal(0, 0.4, (S, C, C))
    chol = np.linalg.cholesky(A @ A.transpose(0, 2, 1) + 0.3 * np.eye(C))
    prior = NewLevelPrior.of(np.zeros((S, C)), chol)
    eta0 = rng.normal(-0.5, 0.5, (S, codes.size))
    for link in links.names():
        k = 7 if C == 2 else 5
        got, mode = kd_log_integrals(links.get(link).kernel_id, eta0, y, n, Z, starts, prior, k)
        ref = new_level_log_density(CellLikelihood(link), eta0, y, n, Z, starts, prior, nodes=k,
                                    compiled=False)
        # leave-one-group-out's call takes the compiled path, its prior's mean moved into eta0
        shifted = NewLevelPrior.of(rng.normal(0, 0.3, (S, C)), chol)
        np.testing.assert_allclose(
            new_level_log_density(CellLikelihood(link), eta0, y, n, Z, starts, shifted,
                                  nodes=k),
            new_level_log_density(CellLikelihood(link), eta0, y, n, Z, starts, shifted,
                                  nodes=k, compiled=False), atol=1e-8, err_msg=link)
        np.testing.assert_allclose(got, ref, atol=1e-8, err_msg=link)
        assert mode.shape == (S, G, C)


@pytest.fixture(scope="module")
def slopes_pair(bangladesh):
    a = poolwise.fit(SLOPES, bangladesh, method="approx", seed=11)
    n = poolwise.fit(SLOPES, bangladesh, seed=12)
    return a, n


@pytest.mark.slow
def test_bangladesh_with_urban_slopes_agrees_with_nuts(slopes_pair):
    a, n = slopes_pair
    assert a.ok and n.ok
    population = ("Intercept", "b_urban", "sd_district__Intercept", "sd_district__urban",
                  "cor_district__Intercept__urban")
    _agree_with_nuts(a, n, population, "a_district")
    _agree_with_nuts(a, n, (), "b_district__urban")
    pa, pn = a.posterior, n.posterior
    assert set(pa.data_vars) == set(pn.data_vars)
    for v in pn.data_vars:
        assert pa[v].dims == pn[v].dims, v
    check = json.loads(a.idata.attrs["poolwise_approx"])
    assert check["coefficients"] == 2 and check["nodes"] == 7 and check["failed_group_draws"] == 0
    row = next(r for r in a.diagnosis.approx_checks if r[0] == "quadrature refinement")
    assert "7 -> 15 nodes per dimension of each group's 2-d grid" in row[3]
    # downstream reads it like any fit
    from poolwise.comparison.loo import row_loo

    assert np.isfinite(float(row_loo(a).elpd))
    new = pd.DataFrame({"urban": [0, 1], "district": [1, 999]})
    assert poolwise.predict(a, new).shape[0] == 2


@pytest.mark.slow
@pytest.mark.parametrize("formula", [
    "use.contraception ~ 1 + urban + (1 + urban || district)",
    "use.contraception ~ 1 + (1 + urban | district)",
])
def test_uncorrelated_slopes_and_a_slope_without_its_fixed_effect_agree_with_nuts(bangladesh,
                                                                                   formula):
    a = poolwise.fit(formula, bangladesh, method="approx", seed=3, chains=4, draws=1000)
    n = poolwise.fit(formula, bangladesh, seed=4, chains=4, draws=1000)
    assert a.ok and n.ok
    population = tuple(v for v in n.posterior.data_vars if n.posterior[v].ndim == 2)
    _agree_with_nuts(a, n, population, "a_district")
    _agree_with_nuts(a, n, (), "b_district__urban")


@pytest.mark.slow
def test_no_pooling_with_slopes_agrees_with_nuts(bangladesh):
    kw = {"pooling": "none", "chains": 4, "draws": 1000}
    a = poolwise.fit(SLOPES, bangladesh, method="approx", seed=3, **kw)
    n = poolwise.fit(SLOPES, bangladesh, seed=4, **kw)
    assert a.ok and n.ok
    assert set(a.posterior.data_vars) == set(n.posterior.data_vars)
    _agree_with_nuts(a, n, (), "a_district")
    _agree_with_nuts(a, n, (), "b_district__urban")


@pytest.mark.slow
def test_three_varying_coefficients_probit_and_offset_agree_with_nuts():
    """Simulated: 60 groups of 6 rows, an intercept and two slopes per group (SDs 0.6, 0.4,
    0.3, correlated), a probit link and an offset."""
    rng = np.random.default_rng(9)
    G, R = 60, 6
    g = np.repeat(np.arange(G), R)
    x1, x2 = rng.normal(size=G * R), rng.binomial(1, 0.5, G * R)
    exposure = rng.uniform(0.5, 2.0, G * R)
    L = np.linalg.cholesky(np.array([[1, 0.3, 0], [0.3, 1, -0.2], [0, -0.2, 1]]))
    b = (rng.normal(size=(G, 3)) @ L.T) * np.array([0.6, 0.4, 0.3])
    eta = (-0.3 + b[g, 0] + (0.5 + b[g, 1]) * x1 + (-0.4 + b[g, 2]) * x2
           + np.log(exposure))
    n = rng.integers(3, 15, G * R)
    df = pd.DataFrame({"y": rng.binomial(n, links.get("probit").inverse(eta)), "n": n,
                       "x1": x1, "x2": x2, "g": g, "exposure": exposure})
    formula = "y | trials(n) ~ 1 + x1 + x2 + (1 + x1 + x2 | g) + offset(log(exposure))"
    kw = {"link": "probit", "chains": 4, "draws": 1000}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", poolwise.DataWarning)
        a = poolwise.fit(formula, df, method="approx", seed=5, **kw)
        nuts = poolwise.fit(formula, df, seed=6, **kw)
    assert a.ok and nuts.ok
    assert json.loads(a.idata.attrs["poolwise_approx"])["coefficients"] == 3
    population = tuple(v for v in nuts.posterior.data_vars if nuts.posterior[v].ndim == 2)
    assert len(population) == 3 + 3 + 3
    _agree_with_nuts(a, nuts, population, "a_g")
    _agree_with_nuts(a, nuts, (), "b_g__x1")
    _agree_with_nuts(a, nuts, (), "b_g__x2")


@pytest.mark.slow
def test_slopes_with_survey_weights_agree_with_nuts(bangladesh):
    """The sampler's pseudo-likelihood cells (weighted sums of successes and trials, not whole
    numbers) under a varying slope: approx agrees with NUTS under the same survey weights."""
    df = bangladesh.assign(w=np.random.default_rng(20).uniform(0.5, 2.0, len(bangladesh)))
    kw = {"weights": "w", "weights_kind": "survey", "chains": 4, "draws": 1000}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", poolwise.DataWarning)
        a = poolwise.fit(SLOPES, df, method="approx", seed=7, **kw)
        n = poolwise.fit(SLOPES, df, seed=8, **kw)
    assert a.ok and n.ok
    population = tuple(v for v in n.posterior.data_vars if n.posterior[v].ndim == 2)
    _agree_with_nuts(a, n, population, "a_district")
    _agree_with_nuts(a, n, (), "b_district__urban")
