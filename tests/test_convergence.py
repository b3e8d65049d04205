"""poolwise.inference.convergence computes ArviZ's R-hat, ESS, MCSE and intervals for all
parameters at
once; every number must equal arviz-stats' own, parameter by parameter."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from arviz_stats.base import array_stats

from poolwise.inference import convergence as cv

SHAPES = [(4, 1000), (4, 101), (1, 7), (2, 4), (3, 5), (1, 1000), (2, 6), (8, 33), (2, 3)]


def _ar1(rng: np.random.Generator, P: int, C: int, D: int) -> np.ndarray:
    """AR(1) chains with coefficients from -0.9 to 0.99, plus the awkward cases ArviZ
    special-cases: constant, tied, shifted chain, nearly constant, two values, one chain
    stuck."""
    phi = rng.uniform(-0.9, 0.99, P)
    e = rng.normal(size=(P, C, D))
    x = np.zeros((P, C, D))
    for t in range(D):
        x[:, :, t] = (phi[:, None] * x[:, :, t - 1] if t else 0.0) + e[:, :, t]
    x[0] = 3.0
    x[1] = np.round(x[1])
    x[2, 0] += 5.0
    x[3] = 1e-17 * x[3] + 1.0
    x[4] = np.sign(x[4])
    x[5, 0] = 0.25
    return x


def _same(ref, mine, tol=1e-10):
    ref = np.asarray(ref, dtype=float)
    assert np.array_equal(np.isnan(ref), np.isnan(mine))
    assert np.array_equal(np.isinf(ref), np.isinf(mine))
    fin = np.isfinite(ref)
    np.testing.assert_allclose(mine[fin], ref[fin], rtol=tol, atol=tol)


@pytest.mark.parametrize(("C", "D"), SHAPES)
def test_every_number_equals_arviz(C, D):
    rng = np.random.default_rng(C * 1000 + D)
    x = _ar1(rng, 40, C, D)
    kw = {"chain_axis": -2, "draw_axis": -1}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ref = {
            "rhat": array_stats.rhat(x, **kw),
            "bulk": array_stats.ess(x, method="bulk", **kw),
            "tail": array_stats.ess(x, method="tail", prob=(0.05, 0.95), **kw),
            "mean": array_stats.ess(x, method="mean", **kw),
            "mcse": array_stats.mcse(x, method="mean", **kw),
            "mcse_sd": array_stats.mcse(x, method="sd", **kw),
        }
        mine = {
            "rhat": cv.rhat(x), "bulk": cv.ess_bulk(x), "tail": cv.ess_tail(x),
            "mean": cv.ess_mean(x), "mcse": cv.mcse_mean(x), "mcse_sd": cv.mcse_sd(x),
        }
        together = cv.diagnostics(x)
    for k in ref:
        _same(ref[k], mine[k])
    for a, b in zip(together, (mine["rhat"], mine["bulk"], mine["tail"]), strict=True):
        assert np.array_equal(a, b, equal_nan=True)


def test_blocks_and_threads_do_not_change_numbers(monkeypatch):
    rng = np.random.default_rng(3)
    x = _ar1(rng, 150, 4, 200)
    one = cv.diagnostics(x)
    monkeypatch.setattr(cv, "_BLOCK", 7)
    for a, b in zip(one, cv.diagnostics(x), strict=True):
        assert np.array_equal(a, b, equal_nan=True)


def test_nonfinite_draws_give_nan():
    x = np.random.default_rng(1).normal(size=(3, 4, 50))
    x[1, 2, 7] = np.nan
    x[2, 0, 0] = np.inf
    for v in cv.diagnostics(x):
        assert np.isfinite(v[0]) and np.isnan(v[1:]).all()


@pytest.mark.parametrize("prob", [0.3, 0.5, 0.89, 0.95, 0.99])
@pytest.mark.parametrize("ties", [False, True])
def test_hdi_equals_arviz(prob, ties):
    """Both of hdi's ways (the two tails selected, or every draw sorted when they overlap),
    with ties and an odd number of draws."""
    x = _ar1(np.random.default_rng(7), 30, 4, 251)
    if ties:
        x = np.round(x, 1)
    ref = np.stack([array_stats.hdi(x[i].ravel(), prob) for i in range(30)])
    np.testing.assert_array_equal(cv.hdi(x, prob), ref)


def test_hdi_of_nonfinite_draws_as_a_full_sort_gives():
    x = np.random.default_rng(2).normal(size=(4, 2, 300))
    x[1, 0, 5] = np.nan
    x[2, 1, 7] = np.inf
    x[3, 0, :3] = -np.inf
    flat = np.sort(x.reshape(4, -1), axis=1)
    inc = int(np.floor(0.89 * 600))
    i = np.argmin(flat[:, inc:] - flat[:, :600 - inc], axis=1)
    ref = np.stack([flat[np.arange(4), i], flat[np.arange(4), i + inc]], axis=1)
    np.testing.assert_array_equal(cv.hdi(x, 0.89), ref)


@pytest.mark.parametrize("kind", ["hdi", "eti"])
def test_summary_table_equals_arviz_summary(kind):
    """The table of poolwise.summary equals arviz_stats.summary, labels included; the tail
    ESS is ArviZ's at the 5%/95% quantiles, as the diagnostics use (ArviZ's table takes its
    interval probability, 11%/89%)."""
    import arviz_stats as azs

    from poolwise.inference.summary import _numbers_table, interval_columns

    rng = np.random.default_rng(11)
    ds = xr.Dataset(
        {
            "Intercept": (("chain", "draw"), rng.normal(size=(4, 300))),
            "a_g": (("chain", "draw", "g"), rng.normal(size=(4, 300, 3))),
            "cor": (("chain", "draw", "i", "j"), rng.normal(size=(4, 300, 2, 2))),
        },
        coords={"g": ["x", "y z", "1"], "i": ["p", "q"], "j": [0, 1]},
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ref = azs.summary(xr.DataTree.from_dict({"posterior": ds}), ci_prob=0.89,
                          ci_kind=kind, round_to="none")
    lb = next(c for c in ref.columns if c.endswith("_lb"))
    ub = next(c for c in ref.columns if c.endswith("_ub"))
    ref = ref.rename(columns=dict(zip((lb, ub), interval_columns(0.89, kind), strict=True)))
    mine = _numbers_table(ds, 0.89, kind)
    assert list(mine.index) == list(ref.index)
    cols = [c for c in mine.columns if c != "ess_tail"]
    pd.testing.assert_frame_equal(mine[cols], ref[cols].astype(float), rtol=1e-10,
                                  atol=1e-12, check_index_type=False)
    tail = [array_stats.ess(ds[v].values.reshape(4, 300, -1)[..., i], chain_axis=-2,
                            draw_axis=-1, method="tail", prob=(0.05, 0.95))
            for v in ds.data_vars for i in range(int(np.prod(ds[v].shape[2:])))]
    _same(tail, mine["ess_tail"].to_numpy())


def test_ranks_equal_scipy_with_ties():
    """The ranks from one sort: of the draws, and of their distances to the median (merged
    from the sorted draws), equal scipy's average ranks, ties included."""
    from scipy import stats

    rng = np.random.default_rng(5)
    flat = np.round(rng.normal(size=(60, 301)), 1)
    flat[0] = 1.0
    flat[1] = rng.normal(size=301)
    flat[2, :150] = -2.0  # the median among a run of ties
    even = np.round(rng.normal(size=(40, 300)), 2)  # even counts: the two middle ones tie
    for x in (flat, even, rng.normal(size=(5, 4)), np.ones((2, 1))):
        order = np.argsort(x, axis=1)
        srt = np.take_along_axis(x, order, axis=1)
        ranks, table = np.empty_like(x), cv._rank_table(x.shape[1])
        cv._tied_ranks(srt, order, table, ranks)
        np.testing.assert_array_equal(ranks, stats.rankdata(x, axis=1))
        med = np.median(x, axis=1)
        cv._folded_ranks(srt, order, med, table, ranks)
        np.testing.assert_array_equal(ranks, stats.rankdata(np.abs(x - med[:, None]), axis=1))


@pytest.mark.parametrize("n", [4, 5, 21, 300, 1000, 4000])
def test_quantiles_of_sorted_rows_are_numpys_bits(n):
    rng = np.random.default_rng(n)
    x = np.sort(np.concatenate([rng.normal(size=(200, n)), np.round(rng.normal(size=(50, n)))]),
                axis=1)
    for q in (0.0, 0.05, 0.11, 0.5, 0.89, 0.95, 1.0):
        np.testing.assert_array_equal(cv._sorted_quantile(x, q), np.quantile(x, q, axis=1))


def test_summary_reuses_the_diagnosis_numbers_exactly():
    """The summary takes R-hat and ESS from the fit's diagnosis (same draws, same
    algorithm) instead of computing them twice: the table is the same either way."""
    from dataclasses import replace

    import poolwise
    from poolwise.inference.summary import _numbers_table

    with warnings.catch_warnings():  # short chains: the verdict does not matter here
        warnings.simplefilter("ignore")
        fit = poolwise.fit("use.contraception ~ 1 + (1 | district)",
                           poolwise.load_example("bangladesh"), chains=4, tune=150,
                           draws=150, seed=3, repair=False)
    assert len(fit.diagnosis.parameters) == 62
    reused = _numbers_table(fit.posterior, 0.89, "hdi", known=fit.diagnosis)
    fresh = _numbers_table(fit.posterior, 0.89, "hdi")
    pd.testing.assert_frame_equal(reused, fresh)
    bad = replace(fit.diagnosis, rhat=np.full(62, 7.0))
    assert (_numbers_table(fit.posterior, 0.89, "hdi", known=bad)["r_hat"] == 7.0).all()


def test_blockwise_numbers_equal_the_stacked_ones():
    """convergence_numbers and the summary read the posterior a block of components at a
    time (no stacked copy of 10^5 levels); a variable with more components than a block
    gives the same numbers, names and order as the stacked array."""
    from poolwise.inference.diagnostics import convergence_numbers, stack_draws
    from poolwise.inference.summary import _numbers_table

    rng = np.random.default_rng(4)
    ds = xr.Dataset(
        {
            "Intercept": (("chain", "draw"), rng.normal(size=(4, 40))),
            "a_g": (("chain", "draw", "g"), rng.normal(size=(4, 40, 5000))),
            "cor": (("chain", "draw", "i", "j"), rng.normal(size=(4, 40, 2, 2))),
        },
        coords={"g": np.arange(5000) * 3, "i": ["p", "q"], "j": [0, 1]},
    )
    ds["a_g"][:, :, 17] = 2.0  # constant
    conv = convergence_numbers(ds)
    names, stacked, group_level = stack_draws(ds)
    assert conv.names == names
    assert np.array_equal(conv.group_level, group_level)
    r, b, t = cv.diagnostics(stacked)
    assert np.array_equal(conv.rhat[~conv.constant], r[~conv.constant], equal_nan=True)
    assert np.array_equal(conv.ess_bulk[~conv.constant], b[~conv.constant], equal_nan=True)
    assert conv.constant.sum() == 1 and np.isnan(conv.ess_tail[18])
    table = _numbers_table(ds, 0.89, "eti")
    assert len(table) == 5005 and table.index[1] == "a_g[0]" and table.index[-1] == "cor[q, 1]"
    np.testing.assert_array_equal(table["mean"].to_numpy(), stacked.mean(axis=(1, 2)))


def test_bfmi_equals_arviz():
    rng = np.random.default_rng(8)
    energy = np.cumsum(rng.normal(size=(4, 500)), axis=1) * 0.1 + rng.normal(size=(4, 500))
    for e in (energy, energy[:1], rng.normal(size=(3, 7))):
        np.testing.assert_allclose(cv.bfmi(e), array_stats.bfmi(e, chain_axis=-2, draw_axis=-1),
                                   rtol=1e-14, atol=0)
