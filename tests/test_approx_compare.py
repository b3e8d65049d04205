"""``method="approx"`` for the other two poolings and in a comparison of pooling strategies:
no pooling (the group intercepts' prior SD fixed, so theta is the fixed effects alone) and
complete pooling (no group term: no integral) held to NUTS on the bundled example with the
partial-pooling test's bar; ``compare_pooling(method="approx")`` and ``poolwise compare
--method approx`` end to end; the self-check's parts that do not apply said so, never passed.

As in tests/test_approx.py, every test that runs the compiled approximation is in the slow
tier (its kernels compile in about 45 s, once per install); the rules and refusals stay in the
default tier."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from test_approx import _agree_with_nuts  # the partial-pooling test's accuracy bar

import poolwise
from poolwise.cli import main
from poolwise.errors import SpecError
from poolwise.inference import approx
from poolwise.inference.diagnostics.approx_check import (
    applies,
    approx_rows,
    check_approx,
    checked_names,
)
from poolwise.model.spec import build_model
from poolwise.output.io import load_result

FORMULA = "use.contraception ~ 1 + urban + (1 | district)"
GOOD = {"refinement_change": 1e-6, "failed_group_draws": 0, "pareto_k": 0.2,
        "is_ess": 3000.0, "proposals": 4000, "nodes": 15, "refined_nodes": 31}


# ---- the default tier: rules and refusals ---------------------------------------------------


@pytest.mark.parametrize("pooling", ["partial", "none", "complete"])
def test_every_pooling_of_one_varying_intercept_is_covered(bangladesh, pooling):
    spec = build_model(FORMULA, bangladesh, pooling=pooling)
    approx.check_supported(spec)  # no SpecError


def test_a_check_that_does_not_apply_does_not_run_and_says_so():
    # complete pooling: no group integrals; numbers that would fail are never judged
    complete = {**GOOD, "refinement_change": 0.0, "failed_group_draws": 0,
                "quadrature": False}
    assert applies(complete) == (False, True) and check_approx(complete) == []
    rows = approx_rows(complete, check_approx(complete))
    assert [r[1] for r in rows] == ["info", "info", "pass", "pass"]
    assert rows[0][2] == "not applicable" and "complete pooling" in rows[0][3]
    assert checked_names(complete) == ["Pareto k", "ESS"]
    # no pooling without fixed effects: nothing to importance-sample
    exact = {**GOOD, "pareto_k": 0.0, "is_ess": 4000.0, "importance": False}
    assert applies(exact) == (True, False) and check_approx(exact) == []
    assert [r[1] for r in approx_rows(exact, [])] == ["pass", "pass", "info", "info"]
    assert checked_names(exact) == ["quadrature"]
    # a fit saved before the flags ran every part
    assert applies(GOOD) == (True, True)
    assert checked_names(GOOD) == ["quadrature", "Pareto k", "ESS"]
    # a part that applies still fails on its own numbers
    bad = {**complete, "pareto_k": 0.9}
    assert [f.severity for f in check_approx(bad)] == ["error"]


def test_the_check_against_nuts_names_only_what_it_compared():
    from poolwise.inference.diagnostics.approx_check import NutsCheck

    base = dict(chains=4, tune=500, draws=500, seed=1, sd_ratio_min=0.97, sd_ratio_max=1.01,
                divergences=0, max_rhat=1.003)
    complete = NutsCheck(population_max=0.02, population_name="Intercept", group_max=0.0,
                         group_name="", group_p95=0.0, **base)
    assert "no group effects" in complete.lines()[0] and complete.passed
    row = approx_rows({**GOOD, "quadrature": False, "against_nuts": complete.to_dict()}, [])
    assert row[-1][2] == "0.02 / - NUTS sd"
    exact = NutsCheck(population_max=0.0, population_name="", group_max=0.05,
                      group_name="a_g[5]", group_p95=0.04, **base)
    assert exact.lines()[0].startswith("check against NUTS (4 x 500): no population-level")
    assert "sd ratio" not in exact.lines()[0]


@pytest.mark.parametrize(("formula", "kw", "what"), [
    ("use.contraception ~ 1 + urban + (1 | district) + (1 | living.children)", {},
     "crossed or nested"),
    (FORMULA, {"family": "beta_binomial"}, "beta_binomial family"),
])
def test_compare_refuses_what_approx_does_not_cover_before_fitting_any(bangladesh, monkeypatch,
                                                                       formula, kw, what):
    """The partial model is checked first: nothing is approximated (complete pooling has no
    group term, and would otherwise have been fitted before the refusal)."""
    def never(*args, **kwargs):
        raise AssertionError("a model was approximated before the refusal")

    monkeypatch.setattr(approx, "approx_fit", never)
    df = bangladesh.assign(n=3, y=lambda d: d["use.contraception"] + d["urban"])
    if kw:
        formula = "y | trials(n) ~ 1 + urban + (1 | district)"
    with warnings.catch_warnings(), pytest.raises(SpecError, match="does not yet cover") as err:
        warnings.simplefilter("ignore")
        poolwise.compare_pooling(formula, df, method="approx", **kw)
    assert what in str(err.value) and "--method nuts" in str(err.value)


def test_compare_with_check_is_refused_before_the_data_are_read(tmp_path, capsys):
    code = main(["compare", str(tmp_path / "missing.csv"), "-f", FORMULA, "--method",
                 "approx", "--check"])
    err = capsys.readouterr().err
    assert code == 3
    assert "does not take check_against_nuts (--check)" in err
    assert "missing.csv" not in err  # refused before the file is looked at


# ---- the slow tier: the compiled approximation ---------------------------------------------


@pytest.fixture(scope="module")
def pairs(bangladesh):
    """Approximation and NUTS of the no- and complete-pooling models (seeds fixed)."""
    out = {}
    for pooling in ("none", "complete"):
        a = poolwise.fit(FORMULA, bangladesh, pooling=pooling, method="approx", seed=21)
        n = poolwise.fit(FORMULA, bangladesh, pooling=pooling, seed=22)
        out[pooling] = (a, n)
    return out


@pytest.mark.slow
def test_no_pooling_agrees_with_nuts(pairs):
    a, n = pairs["none"]
    assert a.ok and n.ok and a.method == "approx"
    # the sampler's variables, dimensions and coordinates: the unpooled intercepts centred at
    # 0 (no fixed intercept), no group SD
    assert set(a.posterior.data_vars) == set(n.posterior.data_vars) == {"b_urban",
                                                                        "a_district"}
    for v in n.posterior.data_vars:
        assert a.posterior[v].dims == n.posterior[v].dims, v
    assert (a.posterior["district"].values == n.posterior["district"].values).all()
    _agree_with_nuts(a, n, ("b_urban",), "a_district")
    numbers = json.loads(a.idata.attrs["poolwise_approx"])
    assert numbers["quadrature"] and numbers["importance"]
    assert len(numbers["mode"]) == 1  # theta is beta only: no log sd


@pytest.mark.slow
def test_complete_pooling_agrees_with_nuts(pairs):
    a, n = pairs["complete"]
    assert a.ok and n.ok
    assert set(a.posterior.data_vars) == set(n.posterior.data_vars) == {"Intercept", "b_urban"}
    pa, pn = a.posterior, n.posterior
    for name in ("Intercept", "b_urban"):
        sd = float(pn[name].std())
        assert abs(float(pa[name].mean()) - float(pn[name].mean())) < 0.15 * sd, name
        assert abs(float(pa[name].std()) / sd - 1.0) < 0.20, name
    numbers = json.loads(a.idata.attrs["poolwise_approx"])
    assert numbers["quadrature"] is False and numbers["refinement_change"] == 0.0
    states = {r[0]: r[1] for r in a.diagnosis.checks()}
    assert states["quadrature refinement"] == "info"  # did not run: not a pass
    assert states["importance weights' Pareto k"] == "pass"


@pytest.mark.slow
def test_no_pooling_without_fixed_effects_draws_every_group_exactly(bangladesh):
    """``y ~ 1 + (1 | g)`` under no pooling: theta has no dimension, the draws are the groups'
    exact conditionals; the importance sampling's checks did not run and say so."""
    f = "use.contraception ~ 1 + (1 | district)"
    a = poolwise.fit(f, bangladesh, pooling="none", method="approx", seed=5)
    n = poolwise.fit(f, bangladesh, pooling="none", seed=6)
    assert a.ok and set(a.posterior.data_vars) == {"a_district"}
    dims = ("chain", "draw")
    pa, pn = a.posterior["a_district"], n.posterior["a_district"]
    z = np.abs(pa.mean(dims) - pn.mean(dims)) / pn.std(dims)
    assert float(np.quantile(z.values, 0.95)) < 0.25
    assert float(np.max(np.abs(pa.std(dims) / pn.std(dims) - 1))) < 0.2
    states = {r[0]: r[1] for r in a.diagnosis.checks()}
    assert states["importance sampling ESS"] == "info"
    assert states["quadrature refinement"] == "pass"


@pytest.mark.slow
@pytest.mark.parametrize(("formula", "pooling"), [(FORMULA, "complete"), (FORMULA, "none"),
                                                  ("use.contraception ~ 1 + (1 | district)",
                                                   "none")])
def test_the_check_against_nuts_covers_every_pooling(bangladesh, formula, pooling):
    a = poolwise.fit(formula, bangladesh, pooling=pooling, method="approx", seed=9, chains=2,
                     draws=500, check_against_nuts=True)
    c = a.nuts_check
    assert a.ok and c is not None and c.passed and c.healthy
    assert bool(c.group_name) is (pooling == "none")
    assert bool(c.population_name) is (formula == FORMULA)


@pytest.fixture(scope="module")
def comparison(bangladesh):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return poolwise.compare_pooling(FORMULA, bangladesh, method="approx", seed=7,
                                        chains=2, draws=500, kfold=2)


@pytest.mark.slow
def test_compare_pooling_fits_all_three_by_approx(comparison):
    c = comparison
    assert set(c.fits) == {"complete", "none", "partial"}
    assert all(f.method == "approx" for f in c.fits.values()) and c.method == "approx"
    assert c.ok
    assert c.loo is not None and set(c.loo.index) == {"complete pooling", "no pooling",
                                                      "partial pooling"}
    assert np.isfinite(c.loo["elpd"]).all()
    assert c.logo is not None and np.isfinite(c.logo.table["elpd"]).all()
    assert c.kfold is not None and np.isfinite(c.kfold.table["elpd"]).all()
    assert any("method='approx'" in n for n in c.notes)  # the narrative says so too
    assert any("method='approx'" in p for p in c.narrative)
    assert "method: approx" in repr(c)


@pytest.mark.slow
def test_refits_use_the_approximation(comparison, monkeypatch):
    """Leave-one-group-out's and K-fold's refits of an approximate fit are approximate: the
    sampler's repair loop is never called."""
    from poolwise.comparison import logo

    def no_nuts(*args, **kwargs):
        raise AssertionError("a refit of an approximate fit ran NUTS")

    monkeypatch.setattr(logo, "repair_fit", no_nuts)
    partial = comparison.fits["partial"]
    for key in ("complete", "none", "partial"):
        sub = logo.refit_without(comparison.fits[key], [0, 1], partial.spec, "district",
                                 seed=3)
        assert sub.method == "approx" and sub.spec.pooling == key
        assert "1" not in {str(v) for v in sub.posterior.coords.get("district", [])}


@pytest.mark.slow
def test_the_command_line_compares_by_approx_and_loads_back(tmp_path, bangladesh, capsys):
    data = tmp_path / "survey.csv"
    bangladesh.to_csv(data, index=False)
    out = tmp_path / "cmp"
    code = main(["compare", str(data), "-f", FORMULA, "--method", "approx", "--seed", "8",
                 "--draws", "500", "--out", str(out), "--report"])
    text = capsys.readouterr().out
    assert code == 0
    assert "method: approx" in text  # the header
    assert "status: OK | method approx | complete: ok | none: ok | partial: ok" in text
    assert "PSIS-LOO, per row" in text and "made by method='approx'" in text
    manifest = json.loads((out / "poolwise.json").read_text())
    assert manifest["methods"] == {"complete": "approx", "none": "approx", "partial": "approx"}
    for key in ("complete", "none", "partial"):
        r = json.loads((out / key / "result.json").read_text())
        assert r["method"] == "approx" and r["diagnostics"]["ok"] is True
        assert r["approx_check"]["quadrature"] is (key != "complete")
    assert (out / "pooling_loo.csv").exists()
    assert "method='approx'" in (out / "narrative.txt").read_text()
    html = (out / "report.html").read_text()
    assert "approx" in html and "not applicable" in html
    kind, fits = load_result(out)
    assert kind == "comparison"
    assert {k: f.method for k, f in fits.items()} == manifest["methods"]
    assert all(f.ok for f in fits.values())
    assert main(["diagnose", str(out / "complete")]) == 0
    diag = capsys.readouterr().out
    assert "N/A   quadrature refinement: not applicable" in diag
    assert "status: OK | method approx" in diag
    assert main(["report", str(out), "--output", str(tmp_path / "again.html")]) == 0
