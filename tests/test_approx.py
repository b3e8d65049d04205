"""``method="approx"`` (poolwise.inference.approx): held to NUTS on the bundled example, to the
truth on simulated data, to the general quadrature of leave-one-group-out; its refusals; its
self-check failing where it must; the command line end to end.

Every test that runs the compiled approximation is in the slow tier: numba compiles its kernels
(inlined for speed: the draws 1.6-1.9x faster at 10,000 groups) in about 45 s, once per
install, which the default tier (5 minutes on 2 cores) cannot spend; the checks' rules, the
refusals and the options stay in the default tier."""

from __future__ import annotations

import dataclasses
import json
import warnings

import numpy as np
import pandas as pd
import pytest
from reference.marginal import direct_log_density

import poolwise
from poolwise.cli import main
from poolwise.errors import ConvergenceWarning, SpecError
from poolwise.inference import approx
from poolwise.inference.diagnostics.approx_check import approx_rows, check_approx
from poolwise.inference.finding_codes import FindingCode
from poolwise.model import links
from poolwise.model.likelihood import CellLikelihood
from poolwise.model.quadrature import (
    NewLevelPrior,
    intercept_draws,
    intercept_log_integrals,
    new_level_log_density,
)
from poolwise.output.io import load_fit, save_fit

FORMULA = "use.contraception ~ 1 + urban + (1 | district)"
POPULATION = ("Intercept", "b_urban", "sd_district")


def _agree_with_nuts(a: poolwise.Fit, n: poolwise.Fit, population: tuple[str, ...],
                     group: str) -> None:
    """The issue's accuracy bar: population-level means within 0.15 NUTS posterior sd, their
    sds within 20%; group-level means within 0.25 sd at the 95th percentile."""
    pa, pn = a.posterior, n.posterior
    for name in population:
        sd = float(pn[name].std())
        assert abs(float(pa[name].mean()) - float(pn[name].mean())) < 0.15 * sd, name
        assert abs(float(pa[name].std()) / sd - 1.0) < 0.20, name
    dims = ("chain", "draw")
    z = np.abs(pa[group].mean(dims) - pn[group].mean(dims)) / pn[group].std(dims)
    assert float(np.quantile(z.values, 0.95)) < 0.25


@pytest.fixture(scope="module")
def bangladesh_pair(bangladesh):
    a = poolwise.fit(FORMULA, bangladesh, method="approx", seed=11)
    n = poolwise.fit(FORMULA, bangladesh, seed=12)
    return a, n


@pytest.mark.slow
def test_bangladesh_agrees_with_nuts(bangladesh_pair):
    a, n = bangladesh_pair
    assert a.ok and n.ok and a.method == "approx" and n.method == "nuts"
    _agree_with_nuts(a, n, POPULATION, "a_district")


@pytest.mark.slow
def test_the_posterior_has_the_samplers_variables_and_no_sampler_statistics(bangladesh_pair):
    a, n = bangladesh_pair
    pa, pn = a.posterior, n.posterior
    assert set(pa.data_vars) == set(pn.data_vars)
    for v in pn.data_vars:
        assert pa[v].dims == pn[v].dims, v
    assert (pa["district"].values == pn["district"].values).all()
    stats = a.idata["sample_stats"].to_dataset()
    assert not {"diverging", "energy", "tree_depth", "acceptance_rate"} & set(stats.data_vars)
    d = a.diagnosis
    assert d.divergences == 0 and not d.bfmi and not d.treedepth_saturation
    numbers = json.loads(a.idata.attrs["poolwise_approx"])
    assert numbers["pareto_k"] < 0.7 and numbers["refinement_change"] < 0.01
    # downstream reads it like any fit: the summary, row-level LOO, predictions
    assert {"Intercept", "sd_district", "a_district[1]"} <= set(a.summary().index)
    from poolwise.comparison.loo import row_loo

    assert np.isfinite(float(row_loo(a).elpd))
    new = pd.DataFrame({"urban": [0, 1], "district": [1, 999]})
    assert poolwise.predict(a, new).shape[0] == 2


@pytest.mark.slow
def test_the_fast_path_equals_the_general_quadrature():
    """The compiled one-intercept path gives leave-one-group-out's integrals, every link."""
    rng = np.random.default_rng(3)
    G, S = 40, 3
    codes = np.repeat(np.arange(G), 2)  # two cells per level
    n = rng.integers(1, 30, codes.size).astype(float)
    y = rng.binomial(n.astype(int), 0.3).astype(float)
    order = np.argsort(codes, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(codes[order]) != 0])
    sd = np.array([0.3, 0.8, 2.0])
    eta0 = rng.normal(-0.5, 0.5, (S, codes.size))
    for link in links.names():
        prior = NewLevelPrior.of(np.zeros((S, 1)), sd.reshape(S, 1, 1))
        ref = new_level_log_density(CellLikelihood(link), eta0[:, order], y[order], n[order],
                                    np.ones((codes.size, 1)), starts, prior)
        got = intercept_log_integrals(links.get(link).kernel_id, eta0, y, n, codes, G, sd)[0]
        np.testing.assert_allclose(got, ref, atol=1e-9, err_msg=link)


@pytest.mark.slow
def test_the_group_draws_follow_the_conditional_posterior():
    """The rejection sampler: the draws' mean and sd equal those of the conditional density
    computed on a dense grid; about 19 in 20 proposals are accepted."""
    y, n, eta0, sd = np.array([3.0]), np.array([12.0]), -0.4, 0.9
    S = 40_000
    draws, counts = intercept_draws(0, np.full((S, 1), eta0), y, n, np.zeros(1, dtype=int), 1,
                                    np.full(S, sd), np.zeros(1), key=7)
    draws = draws[:, 0]
    assert counts.failed == 0 and counts.draws == S
    assert counts.most <= 10 and counts.proposals / S < 1.2
    u = np.linspace(-6, 6, 40_001)
    p = 1 / (1 + np.exp(-(eta0 + u)))
    lp = y * np.log(p) + (n - y) * np.log1p(-p) - u * u / (2 * sd * sd)
    w = np.exp(lp - lp.max())
    w /= w.sum()
    mean = float((w * u).sum())
    sdev = float(np.sqrt((w * (u - mean) ** 2).sum()))
    assert abs(draws.mean() - mean) < 4 * sdev / np.sqrt(S)
    assert abs(draws.std() / sdev - 1) < 0.015
    # the same draws in any batches
    again = intercept_draws(0, np.full((10, 1), eta0), y, n, np.zeros(1, dtype=int), 1,
                            np.full(10, sd), np.zeros(1), key=7, first=100)[0][:, 0]
    np.testing.assert_array_equal(again, draws[100:110])


@pytest.mark.slow
def test_draws_that_share_their_parameters_share_envelopes_and_draw_the_same():
    """Resampling repeats proposals: draws whose parameters are one row of eta0 and sd
    (``draws_of``) take the same draws, bitwise, as with a row per draw (the envelope is made
    once per row, the uniforms are keyed by draw and group), in float64 and float32."""
    rng = np.random.default_rng(3)
    y, n = np.array([3.0, 0.0, 7.0, 2.0]), np.array([12.0, 9.0, 7.0, 5.0])
    codes = np.array([0, 1, 2, 2])  # the third level has two cells
    members = (np.array([4, 0, 2, 5, 1, 3, 6]), np.array([0, 3, 5, 7]), 7)
    rows = rng.normal(-0.3, 0.4, size=(5, 4))
    sd = rng.uniform(0.5, 1.5, size=5)
    of = np.array([2, 0, 2, 4, 1, 2, 0, 3, 4, 2, 1, 0])  # the row of each of 12 draws
    for dtype in (np.float64, np.float32):
        ref, rc = intercept_draws(0, rows[of], y, n, codes, 3, sd[of], np.zeros(3), key=5,
                                  members=members, out=np.empty((12, 7), dtype=dtype))
        order = np.argsort(of, kind="stable")
        starts = np.concatenate([[0], np.cumsum(np.bincount(of, minlength=5))])
        got, gc = intercept_draws(0, rows, y, n, codes, 3, sd, np.zeros(3), key=5,
                                  members=members, out=np.empty((12, 7), dtype=dtype),
                                  draws_of=(order, starts))
        np.testing.assert_array_equal(got, ref)
        assert gc == rc and gc.draws == 12 * 7 and gc.failed == 0


@pytest.mark.slow
@pytest.mark.parametrize("link", ["logit", "probit", "cloglog"])
@pytest.mark.parametrize("cells", [((3.0,), (12.0,)), ((0.0,), (30.0,)), ((25.0,), (25.0,)),
                                   ((1.0, 9.0), (4.0, 40.0))], ids=["3/12", "0/30", "25/25",
                                                                    "two-cells"])
def test_many_groups_of_one_level_draw_its_conditional_exactly(link, cells):
    """20,000 groups with the same cells (one level: the chunked first proposals without
    branches, then the density and further proposals for the few the squeeze leaves) at one
    draw of the shared parameters: their draws follow the conditional posterior computed on a
    dense grid, by the Kolmogorov-Smirnov distance (1.63 / sqrt(N) bounds it with probability
    0.99 for exact draws; the seed is fixed)."""
    y, n = (np.array(v) for v in cells)
    eta0, sd, G = np.array([[-0.4, 0.7][:len(y)]]), 1.3, 20_000
    members = (np.arange(G), np.array([0, G]), G)
    draws, counts = intercept_draws(links.get(link).kernel_id, eta0, y, n,
                                    np.zeros(len(y), dtype=int), 1, np.array([sd]),
                                    np.zeros(1), key=11, members=members)
    assert counts.failed == 0 and counts.draws == G and counts.proposals / G < 1.15
    u = np.linspace(-12, 12, 200_001)
    lp = -u * u / (2 * sd * sd)
    for c in range(len(y)):
        p = links.get(link).inverse(eta0[0, c] + u)
        lp = lp + y[c] * np.log(np.maximum(p, 1e-300)) + (n[c] - y[c]) * np.log(
            np.maximum(1 - p, 1e-300))
    cdf = np.cumsum(np.exp(lp - lp.max()))
    cdf /= cdf[-1]
    got = np.sort(draws[0])
    ref = np.interp(got, u, cdf)
    ks = max(np.max(np.arange(1, G + 1) / G - ref), np.max(ref - np.arange(G) / G))
    assert ks < 1.63 / np.sqrt(G), ks
    # a batch of the groups (another chunking of the same level) gives the same draws
    part = intercept_draws(links.get(link).kernel_id, eta0, y, n, np.zeros(len(y), dtype=int),
                           1, np.array([sd]), np.zeros(1), key=11,
                           members=(np.arange(100, 300), np.array([0, 200]), G))[0]
    np.testing.assert_array_equal(part[0, 100:300], draws[0, 100:300])


def _simulated(G: int, seed: int, sd: float = 0.8, link: str = "logit",
               offset: bool = False) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=G)
    n = rng.integers(5, 31, size=G)
    exposure = rng.uniform(0.5, 2.0, size=G)
    eta = -0.5 + 0.4 * x + rng.normal(0, sd, size=G) + (np.log(exposure) if offset else 0)
    p = links.get(link).inverse(eta)
    return pd.DataFrame({"y": rng.binomial(n, p), "n": n, "x": x, "g": np.arange(G),
                         "exposure": exposure})


@pytest.mark.slow
def test_many_small_groups_cover_the_true_sd():
    """2,000 groups of 5-30 trials, true SD 0.8: the posterior of the SD covers it."""
    df = _simulated(2000, seed=5)
    a = poolwise.fit("y | trials(n) ~ 1 + x + (1 | g)", df, method="approx", seed=1,
                     chains=2, draws=500)
    assert a.ok
    sd = a.posterior["sd_g"].values.ravel()
    lo, hi = np.quantile(sd, [0.005, 0.995])
    assert lo < 0.8 < hi
    assert abs(float(a.posterior["b_x"].mean()) - 0.4) < 4 * float(a.posterior["b_x"].std())


@pytest.mark.slow
@pytest.mark.parametrize(("link", "offset"), [("probit", False), ("logit", True)])
def test_probit_and_offset_agree_with_nuts(link, offset):
    df = _simulated(80, seed=7, sd=0.6, link=link, offset=offset)
    formula = "y | trials(n) ~ 1 + x + (1 | g)" + (" + offset(log(exposure))" if offset else "")
    kw = {"link": link, "chains": 4, "draws": 1000}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", poolwise.DataWarning)
        a = poolwise.fit(formula, df, method="approx", seed=2, **kw)
        n = poolwise.fit(formula, df, seed=3, **kw)
    assert a.ok and n.ok
    _agree_with_nuts(a, n, ("Intercept", "b_x", "sd_g"), "a_g")


@pytest.mark.slow
def test_frequency_weights_equal_repeated_rows(bangladesh):
    """Frequency weights are the rows' counts: the same cells, hence the same draws, as the
    data with each row repeated."""
    small = bangladesh[bangladesh["district"] <= 10].reset_index(drop=True)
    w = (np.arange(len(small)) % 3 + 1)
    weighted = small.assign(w=w)
    repeated = small.loc[small.index.repeat(w)].reset_index(drop=True)
    a = poolwise.fit(FORMULA, weighted, weights="w", method="approx", seed=4, chains=2,
                     draws=300, prior_sensitivity=False)
    b = poolwise.fit(FORMULA, repeated, method="approx", seed=4, chains=2, draws=300,
                     prior_sensitivity=False)
    for v in POPULATION:
        np.testing.assert_allclose(a.posterior[v].values, b.posterior[v].values, rtol=1e-6)


@pytest.mark.parametrize(("formula", "kw", "what"), [
    ("y | trials(n) ~ 1 + x + (1 | g)", {"family": "beta_binomial"}, "beta_binomial family"),
    ("y | trials(n) ~ 1 + x + (1 | g) + (1 | h)", {}, "crossed or nested"),
    ("y | trials(n) ~ 1 + x + (1 | h/g)", {}, "crossed or nested"),
    ("y | trials(n) ~ 1 + x + (1 + x + x2 + x3 | g)", {}, "4 varying coefficients"),
    ("y | trials(n) ~ 1 + x + (1 + x + x2 + x3 | g)", {"pooling": "none"},
     "4 varying coefficients"),
    ("y | trials(n) ~ 1 + x + (1 | g) + (1 | h)", {"pooling": "none"}, "crossed or nested"),
    ("y | trials(n) ~ 1 + x", {"family": "beta_binomial"}, "beta_binomial family"),
])
def test_models_it_does_not_cover_are_refused(formula, kw, what):
    df = _simulated(60, seed=8).assign(h=lambda d: d["g"] % 6, x2=lambda d: d["x"] ** 2,
                                       x3=lambda d: d["x"] ** 3)
    with pytest.raises(SpecError, match="does not yet cover") as err:
        poolwise.fit(formula, df, method="approx", seed=1, **kw)
    assert what in str(err.value) and "--method nuts" in str(err.value)


def test_a_comparison_with_check_and_an_unknown_method_are_refused(bangladesh):
    # (survey weights are covered: tests/test_approx_weights.py)
    # a comparison takes method='approx' (tests/test_approx_compare.py), but not --check:
    # refused before the data are read
    with pytest.raises(SpecError, match="does not take check_against_nuts"):
        poolwise.compare_pooling(FORMULA, "no/such/file.csv", method="approx",
                                 check_against_nuts=True)
    with pytest.raises(SpecError, match="method must be one of nuts, approx"):
        poolwise.fit(FORMULA, bangladesh, method="laplace")


@pytest.mark.slow
def test_a_fit_failing_its_check_is_not_ok(bangladesh, monkeypatch):
    """One Gauss-Hermite node per group (the Laplace approximation, forced through the
    module's knobs, with no automatic refinement): the refinement check fails, the fit is NOT
    OK and says how to run NUTS."""
    monkeypatch.setattr(approx, "NODES", 1)
    monkeypatch.setattr(approx, "MAX_NODES", 1)
    with pytest.warns(ConvergenceWarning, match="did not pass its diagnostics") as rec:
        a = poolwise.fit(FORMULA, bangladesh, method="approx", seed=1, chains=1, draws=200)
    assert not a.ok
    assert a.diagnosis.has(FindingCode.APPROX_QUADRATURE)
    assert "--method nuts" in str(rec[0].message)


@pytest.mark.slow
def test_a_quadrature_that_fails_its_refinement_is_refined_automatically(bangladesh,
                                                                         monkeypatch):
    """From one node per group (the Laplace approximation, whose log density moves by far
    more than 0.01 with 31 nodes) the mode is found again with 31 nodes, which pass against
    63: the fit is OK, says where the refinement started and ended, and agrees with the fit
    that started at 15."""
    from poolwise.inference.diagnostics.approx_check import APPROX_ATTR

    ref = poolwise.fit(FORMULA, bangladesh, method="approx", seed=3, chains=2, draws=300)
    monkeypatch.setattr(approx, "NODES", 1)
    a = poolwise.fit(FORMULA, bangladesh, method="approx", seed=3, chains=2, draws=300)
    assert a.ok
    check = json.loads(a.idata.attrs[APPROX_ATTR])
    assert (check["first_nodes"], check["nodes"], check["refined_nodes"]) == (1, 31, 63)
    assert check["refinement_change"] < approx.QUADRATURE_TOL
    row = next(r for r in a.diagnosis.approx_checks if r[0] == "quadrature refinement")
    assert "31 -> 63 nodes per group; refined automatically from 1" in row[3]
    for name in POPULATION:
        assert abs(float(a.posterior[name].mean() - ref.posterior[name].mean())) < 0.1 * float(
            ref.posterior[name].std())


def test_each_check_fails_on_its_own_numbers():
    good = {"refinement_change": 1e-6, "failed_group_draws": 0, "pareto_k": 0.2,
            "is_ess": 3000.0, "proposals": 4000, "nodes": 15, "refined_nodes": 31}
    assert check_approx(good) == []
    for bad, code in [({"refinement_change": 0.5}, FindingCode.APPROX_QUADRATURE),
                      ({"failed_group_draws": 3}, FindingCode.APPROX_QUADRATURE),
                      ({"pareto_k": 0.9}, FindingCode.APPROX_PARETO_K),
                      ({"is_ess": 150.0}, FindingCode.APPROX_ESS),
                      ({"pareto_k": float("nan")}, FindingCode.APPROX_PARETO_K)]:
        found = check_approx({**good, **bad})
        assert [f.code for f in found] == [code], bad
        assert found[0].severity == "error" and "--method nuts" in found[0].message


@pytest.mark.slow
def test_the_command_line_writes_a_folder_that_loads_back(tmp_path, bangladesh, capsys):
    data = tmp_path / "survey.csv"
    bangladesh.to_csv(data, index=False)
    out = tmp_path / "fit"
    code = main(["fit", str(data), "-f", FORMULA, "--method", "approx", "--seed", "5",
                 "--draws", "500", "--out", str(out)])
    text = capsys.readouterr().out
    assert code == 0
    assert "method: approx" in text and "status: OK | method approx" in text
    status = text.split("status:")[1].split("\n")[0]
    assert "divergences" not in status
    # what the resampled population-level draws are worth, not their chain-based ESS
    r = json.loads((out / "result.json").read_text())
    ess, proposals = r["approx_check"]["is_ess"], r["approx_check"]["proposals"]
    assert f"importance ESS {ess:,.0f} of {proposals:,} proposals" in status
    assert "R-hat" not in status and "min ESS" not in status
    assert r["method"] == "approx" and r["diagnostics"]["ok"] is True
    assert r["approx_check"]["pareto_k"] < 0.7
    loaded = poolwise.load_fit(out)
    assert loaded.method == "approx" and loaded.ok
    assert loaded.posterior["a_district"].shape == (4, 500, 60)
    capsys.readouterr()
    assert main(["diagnose", str(out)]) == 0
    diag = capsys.readouterr().out
    assert "method: approx" in diag
    assert diag.strip().splitlines()[-1] == (
        f"status: OK | method approx | importance ESS {ess:,.0f} of {proposals:,} proposals")


@pytest.mark.slow
def test_the_command_line_says_not_ok_and_how_to_run_nuts(tmp_path, bangladesh, capsys,
                                                          monkeypatch):
    # the Laplace approximation, not refined automatically: the check fails
    monkeypatch.setattr(approx, "NODES", 1)
    monkeypatch.setattr(approx, "MAX_NODES", 1)
    data = tmp_path / "survey.csv"
    bangladesh.to_csv(data, index=False)
    code = main(["fit", str(data), "-f", FORMULA, "--method", "approx", "--seed", "5",
                 "--draws", "200", "--out", str(tmp_path / "fit")])
    out = capsys.readouterr().out
    assert code == 1
    assert "status: NOT OK" in out and "--method nuts" in out
    r = json.loads((tmp_path / "fit" / "result.json").read_text())
    assert r["diagnostics"]["ok"] is False and r["approx_check"]["refinement_change"] > 0.01
    assert not poolwise.load_fit(tmp_path / "fit").ok  # judged alike when loaded


@pytest.mark.slow
@pytest.mark.parametrize("link", links.names())
def test_the_marginal_density_equals_a_direct_computation(link):
    """log p(theta | y) up to its constant, against the data frame row by row: each group's
    integral on a dense grid, the priors from SciPy (unstandardized predictors, so theta is
    on the data's scale), with an offset and repeated groups."""
    from poolwise.model.spec import build_model

    df = _simulated(30, seed=9, sd=0.7, link=link, offset=True)
    df = pd.concat([df, df.iloc[:5]], ignore_index=True)  # five levels twice: same cells
    df["g"] = np.arange(len(df)) % 33
    spec = build_model("y | trials(n) ~ 1 + x + (1 | g) + offset(log(exposure))", df,
                       link=link, standardize=False)
    problem = approx._Problem.of(spec)
    thetas = np.array([[-0.4, 0.3, np.log(0.7)], [0.1, -0.2, np.log(1.3)]])
    got = problem.log_density(thetas, nodes=61)  # quadrature error far below 1e-6
    default = problem.log_density(thetas)  # 15 nodes: within the check's tolerance
    np.testing.assert_allclose(default, got, atol=1e-3)
    for theta, value in zip(thetas, got, strict=True):
        # the model layer leaves out log C(n, y): so does the direct value
        assert value == pytest.approx(direct_log_density(df, link, theta), abs=1e-6), link


@pytest.mark.slow
def test_the_report_says_the_method(tmp_path, bangladesh_pair):
    a, _ = bangladesh_pair
    path = tmp_path / "report.html"
    poolwise.write_report(path, a)
    html = path.read_text()
    assert "approx" in html


@pytest.mark.slow
@pytest.mark.parametrize("case", ["no group variation", "almost all zero"])
def test_hard_posteriors_of_the_sd_agree_with_nuts(case):
    """A group SD whose posterior piles up near 0 (skewed: the second round of proposals), and
    outcomes almost all 0 (an intercept near -6, the SD's draws down to 1e-3: each level's
    search for its mode starts far out)."""
    rng = np.random.default_rng(0)
    G = 200
    y = rng.binomial(10, 0.3, G) if case == "no group variation" else np.zeros(G, dtype=int)
    if case == "almost all zero":
        y[0] = 1
    df = pd.DataFrame({"y": y, "n": 10, "g": np.arange(G)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", poolwise.DataWarning)
        a = poolwise.fit("y | trials(n) ~ 1 + (1 | g)", df, method="approx", seed=1)
        n = poolwise.fit("y | trials(n) ~ 1 + (1 | g)", df, seed=1)
    assert a.ok and n.ok
    _agree_with_nuts(a, n, ("Intercept", "sd_g"), "a_g")


# --- the check against NUTS (check_against_nuts=True, --method approx --check) -------------


@pytest.fixture(scope="module")
def checked(bangladesh):
    """An approximate fit checked against NUTS, and the NUTS run the check made."""
    from poolwise.inference import approx_nuts

    runs = []
    real = approx_nuts._short_nuts

    def spy(fit):
        runs.append(real(fit))
        return runs[-1]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(approx_nuts, "_short_nuts", spy)
        a = poolwise.fit(FORMULA, bangladesh, method="approx", seed=11, draws=500,
                         check_against_nuts=True, prior_sensitivity=False)
    return a, runs[0]


@pytest.mark.slow
def test_the_check_against_nuts_passes_and_equals_a_direct_computation(checked):
    a, n = checked
    c = a.nuts_check
    assert a.ok and c.passed and c.healthy
    assert not a.diagnosis.has(FindingCode.APPROX_VS_NUTS)
    assert (c.chains, c.tune, c.draws) == (4, 500, 500)
    assert n.posterior.sizes == {"chain": 4, "draw": 500, "district": 60}
    pa, pn = a.posterior, n.posterior
    dims = ("chain", "draw")
    pop = {v: abs(float(pa[v].mean()) - float(pn[v].mean())) / float(pn[v].std())
           for v in POPULATION}
    name = max(pop, key=pop.get)
    assert c.population_name == name and c.population_max == pytest.approx(pop[name])
    ratio = [float(pa[v].std()) / float(pn[v].std()) for v in POPULATION]
    assert c.sd_ratio_min == pytest.approx(min(ratio))
    assert c.sd_ratio_max == pytest.approx(max(ratio))
    z = (np.abs(pa["a_district"].mean(dims) - pn["a_district"].mean(dims))
         / pn["a_district"].std(dims)).values
    assert c.group_max == pytest.approx(z.max())
    assert c.group_p95 == pytest.approx(np.quantile(z, 0.95))
    assert c.group_name == f"a_district[{pn['district'].values[z.argmax()]}]"
    assert c.divergences == n.diagnosis.divergences == 0
    assert c.max_rhat == pytest.approx(n.diagnosis.max_rhat)
    assert c.population_max < 0.15 and c.group_p95 < 0.25
    assert "nuts_check_s" in a.timings
    # the points the report's figure draws: every compared parameter, both means, NUTS's sd
    p = c.points
    assert p["name"][:3] == list(POPULATION) and p["group"] == [False] * 3 + [True] * 60
    labels = [f"a_district[{lab}]" for lab in pn["district"].values]
    assert p["name"][3:] == labels
    np.testing.assert_allclose(p["approx_mean"][3:], pa["a_district"].mean(dims).values)
    np.testing.assert_allclose(p["nuts_mean"][:3], [float(pn[v].mean()) for v in POPULATION])
    np.testing.assert_allclose(p["nuts_sd"][3:], pn["a_district"].std(dims).values)


@pytest.mark.slow
def test_the_report_draws_the_check_against_nuts(checked, tmp_path):
    """The figure of the comparison is in the report of a checked fit, also after a save and
    a load; a fit without --check (or saved before the points were kept) has none."""
    from poolwise.output.plots.estimates import plot_approx_vs_nuts

    a, _ = checked
    save_fit(a, tmp_path / "a")
    loaded = load_fit(tmp_path / "a")
    assert loaded.nuts_check.points == a.nuts_check.points
    fig = plot_approx_vs_nuts(loaded)
    assert fig is not None and len(fig.axes) == 3  # two panels and the colour bar
    poolwise.write_report(tmp_path / "r.html", loaded)
    assert "The approximation against a short NUTS run" in (tmp_path / "r.html").read_text()
    from poolwise.inference.diagnostics.approx_check import APPROX_ATTR

    tree = a.idata.copy(deep=True)
    saved = json.loads(tree.attrs[APPROX_ATTR])
    del saved["against_nuts"]["points"]  # as a folder saved before the points were kept
    tree.attrs[APPROX_ATTR] = json.dumps(saved)
    older = dataclasses.replace(a, idata=tree)
    assert older.nuts_check.points is None and plot_approx_vs_nuts(older) is None


@pytest.mark.slow
def test_the_check_against_nuts_fails_where_the_draws_are_off(bangladesh, monkeypatch):
    """The approximate posterior shifted by half a NUTS sd (its draws moved after the fact):
    the check makes the fit NOT OK and names the command that runs NUTS."""
    from poolwise.inference import approx_nuts

    real = approx_nuts.compare_posteriors

    def shifted(spec, a, n):
        a = a.assign(b_urban=a["b_urban"] + 0.5 * float(n["b_urban"].std()))
        return real(spec, a, n)

    monkeypatch.setattr(approx_nuts, "compare_posteriors", shifted)
    monkeypatch.setattr(approx_nuts, "NUTS_TUNE", 300)
    monkeypatch.setattr(approx_nuts, "NUTS_DRAWS", 300)
    with pytest.warns(ConvergenceWarning, match="did not pass its diagnostics") as rec:
        a = poolwise.fit(FORMULA, bangladesh, method="approx", seed=3, chains=2, draws=300,
                         check_against_nuts=True, prior_sensitivity=False)
    assert not a.ok and not a.nuts_check.passed
    assert a.nuts_check.population_name == "b_urban" and a.nuts_check.population_max > 0.35
    errors = [f for f in a.diagnosis.errors if f.code == FindingCode.APPROX_VS_NUTS]
    assert len(errors) == 1 and "--method nuts" in errors[0].message
    assert "b_urban" in errors[0].message and "--method nuts" in str(rec[0].message)


def test_the_check_findings_on_their_own_numbers():
    from poolwise.inference.diagnostics.approx_check import NutsCheck, check_nuts

    good = NutsCheck(chains=4, tune=500, draws=500, seed=1, population_max=0.05,
                     population_name="b_x", group_max=0.2, group_name="a_g[3]", group_p95=0.1,
                     sd_ratio_min=0.98, sd_ratio_max=1.01, divergences=0, max_rhat=1.01)
    assert check_nuts(good) == []
    assert NutsCheck.from_dict(good.to_dict()) == good
    for bad, severity in [({"population_max": 0.2}, "error"), ({"group_p95": 0.3}, "error"),
                          ({"divergences": 3}, "warning"), ({"max_rhat": 1.2}, "warning"),
                          ({"group_p95": 0.3, "divergences": 3}, "error")]:
        c = dataclasses.replace(good, **bad)
        found = check_nuts(c)
        assert [(f.code, f.severity) for f in found] == [(FindingCode.APPROX_VS_NUTS, severity)]
        assert "--method nuts" in found[0].message
        assert ("not healthy" in c.lines()[1]) == (not c.healthy)
    # the max group effect alone is not the bar: its 95th percentile is
    assert check_nuts(dataclasses.replace(good, group_max=0.6)) == []


def test_check_with_nuts_is_refused_before_the_data_are_read(tmp_path, capsys):
    with pytest.raises(SpecError, match=r"check_against_nuts \(--check\).*--method approx"):
        poolwise.fit(FORMULA, "no/such/file.csv", check_against_nuts=True)
    with pytest.raises(SpecError, match="check_against_nuts must be True or False"):
        poolwise.fit(FORMULA, "no/such/file.csv", method="approx", check_against_nuts="yes")
    out = tmp_path / "fit"
    assert main(["fit", "--example", "bangladesh", "--check", "--out", str(out)]) == 3
    assert "--method approx" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.slow
def test_the_command_line_check_prints_saves_and_loads_back(tmp_path, bangladesh, capsys,
                                                            monkeypatch):
    from poolwise.inference import approx_nuts

    monkeypatch.setattr(approx_nuts, "NUTS_TUNE", 300)
    monkeypatch.setattr(approx_nuts, "NUTS_DRAWS", 300)
    data = tmp_path / "survey.csv"
    bangladesh.to_csv(data, index=False)
    out = tmp_path / "fit"
    code = main(["fit", str(data), "-f", FORMULA, "--method", "approx", "--check", "--seed",
                 "5", "--draws", "500", "--out", str(out)])
    text = capsys.readouterr().out
    assert code == 0
    line = next(s for s in text.splitlines() if s.startswith("check against NUTS (4 x 300)"))
    assert "largest difference" in line and "95th pct" in line and "sd ratio" in line
    assert "NUTS run: 0 divergences" in text
    assert text.index("check against NUTS") < text.index("status: OK")
    r = json.loads((out / "result.json").read_text())
    saved = r["approx_check"]["against_nuts"]
    assert saved["draws"] == 300 and saved["population_max"] < 0.15
    loaded = poolwise.load_fit(out)
    assert loaded.ok and loaded.nuts_check.to_dict() == saved
    # the saved diagnosis' table has the check's row (the report shows that table)
    assert ("against NUTS (4 x 300)", "pass") in [r[:2] for r in loaded.diagnosis.checks()]
    assert f"{loaded.nuts_check.population_max:.2f}" in line
    assert "checked: quadrature, Pareto k, ESS, NUTS" in text
    assert main(["diagnose", str(out)]) == 0
    assert line in capsys.readouterr().out


# ---- what an approximate fit shows: its self-check in place of the sampler's checks, and
# only the settings it used (no tuning, target_accept, tree depth or engine) --------------------

SAMPLER_ROWS = {"divergent transitions", "smallest E-BFMI", "draws at max tree depth",
                "mean acceptance"}
APPROX_ROWS = ["quadrature refinement", "group effects drawn", "importance weights' Pareto k",
               "importance sampling ESS"]


@pytest.fixture(scope="module")
def approx_fit():
    return poolwise.fit(FORMULA, poolwise.load_example("bangladesh"), method="approx", seed=3,
                        chains=2, draws=500)


@pytest.mark.slow
def test_the_checks_are_the_approximations_not_the_samplers(approx_fit, tmp_path):
    rows = approx_fit.diagnosis.checks()
    names = [r[0] for r in rows]
    assert names[:4] == APPROX_ROWS
    assert not SAMPLER_ROWS & set(names)
    assert all(r[1] == "pass" for r in rows[:4])
    # R-hat and ESS are shown for the fixed effects and SDs but not judged (no PASS for a
    # check that did not run: independent draws have no chains to mix)
    shown = {r[0]: r for r in rows[4:]}
    for name in ("largest R-hat", "smallest bulk ESS", "smallest tail ESS"):
        row = shown[f"{name} (fixed effects and SDs)"]
        assert row[1] == "info" and row[3].startswith("not judged")
    # the values are the check's own numbers
    check = approx_fit.diagnosis.approx_checks
    pareto = next(r for r in check if r[0] == "importance weights' Pareto k")
    assert float(pareto[2]) < 0.7 and pareto[3] == "< 0.7"
    # a saved fit loads back with the same table
    save_fit(approx_fit, tmp_path / "a")
    assert load_fit(tmp_path / "a").diagnosis.checks() == rows


@pytest.mark.slow
def test_a_failing_check_fails_its_row(monkeypatch):
    monkeypatch.setattr(approx, "NODES", 1)
    monkeypatch.setattr(approx, "MAX_NODES", 1)  # no automatic refinement
    with pytest.warns(ConvergenceWarning):
        a = poolwise.fit(FORMULA, poolwise.load_example("bangladesh"), method="approx", seed=1,
                         chains=1, draws=200)
    states = {r[0]: r[1] for r in a.diagnosis.checks()}
    assert states["quadrature refinement"] == "fail"
    assert states["importance weights' Pareto k"] in ("pass", "fail")  # its own finding decides
    assert a.diagnosis.ok is False


def test_rows_take_their_state_from_the_findings():
    from poolwise.inference.diagnostics.approx_check import check_approx

    numbers = {"refinement_change": 1e-6, "failed_group_draws": 0, "pareto_k": 0.95,
               "is_ess": 3000.0, "proposals": 4000, "nodes": 15, "refined_nodes": 31}
    rows = approx_rows(numbers, check_approx(numbers))
    assert [r[1] for r in rows] == ["pass", "pass", "fail", "pass"]
    assert rows[2][2] == "0.95" and rows[3][2] == "3000 of 4000" and rows[3][3] == ">= 400"


@pytest.mark.slow
def test_the_report_shows_only_the_settings_used(approx_fit, tmp_path):
    path = tmp_path / "r.html"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        poolwise.write_report(path, approx_fit)
    html = path.read_text()
    settings = html.split("Sampling settings", 2)[-1].split("Diagnostics", 1)[0]
    assert "approx" in settings and "draws" in settings and "seed" in settings
    for unused in ("target_accept", "max_treedepth", "tune", "engine"):
        assert unused not in settings, unused
    assert "quadrature refinement" in html and "smallest E-BFMI" not in html
    assert "parameterization (district)" not in html


@pytest.mark.slow
def test_diagnose_prints_the_self_check(approx_fit, tmp_path, capsys):
    from poolwise.cli import main

    save_fit(approx_fit, tmp_path / "a")
    capsys.readouterr()
    assert main(["diagnose", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    lines = [ln.strip() for ln in out.splitlines()]
    for name in APPROX_ROWS:
        assert any(ln.startswith("PASS") and name in ln for ln in lines), name
    assert "chain  divergences" not in out and "target_accept" not in out


@pytest.mark.slow
def test_the_trace_caption_speaks_of_independent_draws(approx_fit):
    from poolwise.output.plots.diagnostic import chain_figures

    caption = chain_figures(approx_fit)["trace"][0]
    assert "divergent" not in caption and "independent draws" in caption


def test_the_check_against_nuts_has_its_row():
    from dataclasses import asdict

    from poolwise.inference.diagnostics.approx_check import NutsCheck, check_approx

    base = {"refinement_change": 1e-6, "failed_group_draws": 0, "pareto_k": 0.2,
            "is_ess": 3000.0, "proposals": 4000, "nodes": 15, "refined_nodes": 31}
    nuts = NutsCheck(chains=4, tune=500, draws=500, seed=1, population_max=0.4,
                     population_name="b_x", group_max=0.3, group_name="a_g[2]", group_p95=0.1,
                     sd_ratio_min=0.9, sd_ratio_max=1.1, divergences=0, max_rhat=1.004)
    numbers = {**base, "against_nuts": asdict(nuts)}
    rows = approx_rows(numbers, check_approx(numbers))
    assert rows[-1][0] == "against NUTS (4 x 500)" and rows[-1][1] == "fail"
    assert rows[-1][2] == "0.40 / 0.10 NUTS sd"
    assert len(approx_rows(base, check_approx(base))) == 4  # no row without --check
