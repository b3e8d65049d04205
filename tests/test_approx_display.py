"""What an approximate fit (``method="approx"``) shows: its self-check in place of the
sampler's checks (it has no divergences, E-BFMI or tree depth), and only the settings it used
(no tuning, target_accept, tree depth or engine), in the diagnosis, the report and after a
save and load."""

from __future__ import annotations

import warnings

import pytest

import poolwise
from poolwise.errors import ConvergenceWarning
from poolwise.inference import approx
from poolwise.inference.diagnostics.approx_check import approx_rows
from poolwise.output.io import load_fit, save_fit

FORMULA = "use.contraception ~ 1 + urban + (1 | district)"
SAMPLER_ROWS = {"divergent transitions", "smallest E-BFMI", "draws at max tree depth",
                "mean acceptance"}
APPROX_ROWS = ["quadrature refinement", "group effects drawn", "importance weights' Pareto k",
               "importance sampling ESS"]


@pytest.fixture(scope="module")
def approx_fit():
    return poolwise.fit(FORMULA, poolwise.load_example("bangladesh"), method="approx", seed=3,
                        chains=2, draws=500)


def test_the_checks_are_the_approximations_not_the_samplers(approx_fit, tmp_path):
    rows = approx_fit.diagnosis.checks()
    names = [r[0] for r in rows]
    assert names[:4] == APPROX_ROWS
    assert not SAMPLER_ROWS & set(names)
    assert {"largest R-hat", "smallest bulk ESS", "smallest tail ESS"} <= set(names)
    assert all(r[1] == "pass" for r in rows[:4])
    # the values are the check's own numbers
    check = approx_fit.diagnosis.approx_checks
    pareto = next(r for r in check if r[0] == "importance weights' Pareto k")
    assert float(pareto[2]) < 0.7 and pareto[3] == "< 0.7"
    # a saved fit loads back with the same table
    save_fit(approx_fit, tmp_path / "a")
    assert load_fit(tmp_path / "a").diagnosis.checks() == rows


def test_a_failing_check_fails_its_row(monkeypatch):
    monkeypatch.setattr(approx, "NODES", 1)
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
