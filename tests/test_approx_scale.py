"""``method="approx"`` at scale: the plan of how many draws it stores (memory, the cap on stored
group values, the note and the error), the float32 group effects of a large fit, and what its
summary reports for the group effects (no R-hat or ESS; an MCSE that counts the repeated draws
of the population-level parameters).

The plan's rules and its refusals run no compiled approximation (default tier); the fits are in
the slow tier (the approximation's kernels compile in about 45 s once per install)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import poolwise
import poolwise.inference.plan as plan
from poolwise.errors import DataWarning, SpecError
from poolwise.inference.convergence import clustered_mcse, draw_clusters
from poolwise.inference.options import FitOptions
from poolwise.model.spec import build_model

FORMULA = "y | trials(n) ~ 1 + (1 | g)"


def _groups(G: int, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = rng.integers(5, 31, size=G)
    p = 1 / (1 + np.exp(-(-0.5 + rng.normal(0, 0.8, size=G))))
    return pd.DataFrame({"y": rng.binomial(n, p), "n": n, "g": np.arange(G)})


def _config(draws: int = 1000, chains: int = 4):
    return FitOptions(draws=draws, chains=chains, seed=1, method="approx").sampler_config()


# ---- the plan (no fit) ----------------------------------------------------------------------

def test_the_draws_asked_for_are_stored_when_they_fit(monkeypatch):
    spec = build_model(FORMULA, _groups(200))
    monkeypatch.setattr(plan, "available_memory_bytes", lambda: 10 << 30)
    p = plan.check_approx_run(spec, _config())
    assert p.stored == 1000 and p.note() is None


def test_short_memory_stores_fewer_draws_and_says_what_it_costs(monkeypatch):
    spec = build_model(FORMULA, _groups(200))
    full = plan.approx_plan(spec, _config())  # per_draw: bytes per draw and chain
    monkeypatch.setattr(plan, "available_memory_bytes",
                        lambda: full.temporaries + 4 * 300 * full.per_draw)
    p = plan.check_approx_run(spec, _config())
    assert p.stored == 300
    note = p.note()
    assert f"stores 4 x {p.stored:,} draws, not 4 x 1,000" in note
    assert "available" in note and f"sd / {np.sqrt(4 * p.stored):.0f}" in note
    assert "--no-log-likelihood" in note  # the log-likelihood is on: skipping it makes room


def test_too_little_memory_for_even_the_fewest_draws_is_an_error(monkeypatch):
    spec = build_model(FORMULA, _groups(200))
    monkeypatch.setattr(plan, "available_memory_bytes", lambda: 1000)
    with pytest.raises(SpecError, match=r"not enough memory for method='approx'.*fewest "
                                        rf"\({plan.APPROX_MIN_DRAWS} draws per chain\)"):
        plan.check_approx_run(spec, _config())


def test_the_cap_on_stored_group_values_limits_the_draws(monkeypatch):
    spec = build_model(FORMULA, _groups(200))
    monkeypatch.setattr(plan, "available_memory_bytes", lambda: 100 << 30)
    monkeypatch.setattr(plan, "APPROX_MAX_VALUES", 200 * 4 * 150)  # 150 draws per chain
    p = plan.check_approx_run(spec, _config())
    assert p.stored == 150 and p.capped
    assert "stores at most" in p.note() and "available" not in p.note()


def test_the_cap_never_goes_below_the_fewest_draws(monkeypatch):
    """So many groups that the cap would leave fewer than 50 draws per chain: 50 are stored
    when memory holds them (memory, not the cap, decides below that)."""
    spec = build_model(FORMULA, _groups(200))
    monkeypatch.setattr(plan, "available_memory_bytes", lambda: 100 << 30)
    monkeypatch.setattr(plan, "APPROX_MAX_VALUES", 200 * 4 * 10)  # 10 draws per chain
    p = plan.check_approx_run(spec, _config())
    assert p.stored == plan.APPROX_MIN_DRAWS and p.capped


def test_a_flat_prior_on_separated_data_is_refused_before_approx():
    """The run checks NUTS has before it samples apply to approx too (an improper
    posterior has no mode to find)."""
    from poolwise.model.priors import Priors, flat

    df = pd.DataFrame({"y": [0, 0, 0, 1, 1, 1] * 3, "x": [0, 0, 0, 1, 1, 1] * 3,
                       "g": np.repeat(["a", "b", "c"], 6)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the separation warning that comes first
        with pytest.raises(SpecError, match="flat prior with separated data"):
            poolwise.fit("y ~ 1 + x + (1 | g)", df, method="approx", seed=1,
                         priors=Priors(b=flat()))


def test_the_cli_refuses_too_little_memory_before_fitting(tmp_path, monkeypatch, capsys):
    from poolwise.cli import main

    path = tmp_path / "d.csv"
    _groups(200).to_csv(path, index=False)
    monkeypatch.setattr(plan, "available_memory_bytes", lambda: 1000)
    rc = main(["fit", str(path), "-f", FORMULA, "--method", "approx", "-q"])
    assert rc == 3
    assert "not enough memory for method='approx'" in capsys.readouterr().err


# ---- the MCSE of independent draws ------------------------------------------------------------

def test_the_clustered_mcse_is_the_cluster_robust_variance_of_a_mean():
    rng = np.random.default_rng(0)
    S = 4000
    pick = rng.integers(0, 1500, S)  # resampling: repeated draws of the population level
    x = rng.normal(size=(3, 4, 1000)) + pick.reshape(4, 1000) * 0.001
    got = clustered_mcse(x, draw_clusters(pick[:, None]))
    flat = x.reshape(3, -1)
    dev = flat - flat.mean(axis=1, keepdims=True)
    ref = [np.sqrt(sum(dev[p][pick == c].sum() ** 2 for c in np.unique(pick))) / S
           for p in range(3)]
    np.testing.assert_allclose(got, ref, rtol=1e-12)
    # no repeats: the usual sd / sqrt(S) (with divisor S)
    alone = clustered_mcse(x, draw_clusters(np.arange(S)[:, None]))
    np.testing.assert_allclose(alone, flat.std(axis=1) / np.sqrt(S), rtol=1e-12)


# ---- fits (slow tier) ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_fit():
    return poolwise.fit(FORMULA, _groups(300), method="approx", seed=5)


@pytest.mark.slow
def test_the_group_rows_have_no_rhat_or_ess_and_a_clustered_mcse(small_fit):
    table = small_fit.summary()
    groups = table[table.index.str.startswith("a_g[")]
    pop = table.loc[["Intercept", "sd_g"]]
    assert groups[["ess_bulk", "ess_tail", "r_hat"]].isna().all().all()
    assert pop[["ess_bulk", "ess_tail", "r_hat"]].notna().all().all()
    post = small_fit.posterior
    keys = np.column_stack([post[v].values.reshape(-1) for v in ("Intercept", "sd_g")])
    x = post["a_g"].transpose("g", "chain", "draw").values
    np.testing.assert_allclose(groups["mcse_mean"].to_numpy(),
                               clustered_mcse(x, draw_clusters(keys)), rtol=1e-10)
    # the population level's MCSE counts its repeated draws too: the importance sampling's
    # and the resampling's variance, more than sd / sqrt(draws) of independent draws
    np.testing.assert_allclose(pop["mcse_mean"].to_numpy(),
                               clustered_mcse(keys.T[:, None, :], draw_clusters(keys)),
                               rtol=1e-10)
    assert (pop["mcse_mean"] > pop["sd"] / np.sqrt(len(keys))).all()
    # the diagnosis has none either, and judges no ESS per chain
    d = small_fit.diagnosis
    grouped = np.array([p.startswith("a_g[") for p in d.parameters])
    assert np.isnan(np.asarray(d.rhat)[grouped]).all()
    assert np.isfinite(np.asarray(d.rhat)[~grouped]).all() and np.isfinite(d.max_rhat)
    assert small_fit.ok


@pytest.mark.slow
def test_the_terminal_and_the_report_explain_the_blank_columns(small_fit, tmp_path, capsys):
    from poolwise.cli import main

    path = tmp_path / "d.csv"
    _groups(300).to_csv(path, index=False)
    rc = main(["fit", str(path), "-f", FORMULA, "--method", "approx", "--seed", "5",
               "--out", str(tmp_path / "out"), "--report"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "group effects: exact independent draws" in out and "no R-hat or ESS" in out
    html = (tmp_path / "out" / "report.html").read_text()
    assert "Group effects: exact independent draws" in html


@pytest.mark.slow
def test_fewer_stored_draws_come_with_a_warning_kept_in_the_result(monkeypatch):
    df = _groups(300)
    monkeypatch.setattr(plan, "APPROX_MAX_VALUES", 300 * 4 * 120)
    with pytest.warns(DataWarning, match="stores 4 x 120 draws, not 4 x 1,000"):
        f = poolwise.fit(FORMULA, df, method="approx", seed=2)
    assert f.posterior.sizes["draw"] == 120 and f.config.draws == 120
    assert any("stores 4 x 120 draws" in w for w in f.warnings)


@pytest.mark.slow
def test_a_large_fit_stores_float32_group_effects_drawn_as_in_float64(monkeypatch, tmp_path):
    """By the sampler's rule for a large trace; the kernel computes each draw in float64 and
    rounds it once as it stores it, so float32 storage holds the float64 draws rounded (in
    batches of 7 draws too: the uniforms are keyed by draw and group), and they save and
    load back identically."""
    import poolwise.engine.sampler as sampler
    from poolwise.inference import approx

    df = _groups(300)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        small = poolwise.fit(FORMULA, df, method="approx", seed=4, chains=2, draws=200)
    assert small.posterior["a_g"].dtype == np.float64
    monkeypatch.setattr(sampler, "LARGE_TRACE_BYTES", 1000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        large = poolwise.fit(FORMULA, df, method="approx", seed=4, chains=2, draws=200)
    assert large.posterior["a_g"].dtype == np.float32
    # float32 keeps 7 significant digits of the same draws
    np.testing.assert_allclose(large.posterior["a_g"].values, small.posterior["a_g"].values,
                               rtol=1e-6, atol=1e-6)
    problem = approx._Problem.of(build_model(FORMULA, df))
    theta = np.column_stack([np.linspace(-0.7, -0.3, 40), np.log(np.linspace(0.6, 1.0, 40))])
    start = problem.modes(theta[0])
    u64 = approx._group_draws(problem, theta, start, np.random.default_rng(1))[0]
    monkeypatch.setattr(approx, "DRAW_BATCH_VALUES", 300 * 7)  # 7 draws per kernel call
    u32 = approx._group_draws(problem, theta, start, np.random.default_rng(1), np.float32)[0]
    assert u32.dtype == np.float32
    np.testing.assert_array_equal(u32, u64.astype(np.float32))
    poolwise.save_fit(large, tmp_path / "f")
    back = poolwise.load_fit(tmp_path / "f")
    np.testing.assert_array_equal(back.posterior["a_g"].values, large.posterior["a_g"].values)
