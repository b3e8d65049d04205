"""Compact displays at the prompt and in notebooks: ``repr`` and ``_repr_html_`` of Fit,
Diagnosis, PoolingComparison and RepairLog show the model, status, the population-level
table and the findings in a few KB, never the DataTree or one row per group."""

from __future__ import annotations

import dataclasses
import warnings

import pytest

import poolwise
from poolwise.comparison.pooling import compare_pooling
from poolwise.inference.diagnostics import Finding
from poolwise.textfmt import fmt_sig

FORMULA = "use.contraception ~ urban + age.centered + (1 | district)"


@pytest.fixture(scope="module")
def comp(bangladesh):
    data = bangladesh[bangladesh["district"] <= 8].reset_index(drop=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", poolwise.ConvergenceWarning)
        # PSIS leave-one-group-out: the exact refits are tested in tests/test_logo.py
        return compare_pooling(FORMULA, data, tune=300, draws=300, seed=7, logo="psis")


def test_fit_repr_is_compact(comp):
    fit = comp.main_fit
    text = repr(fit)
    assert len(text.encode()) < 3000
    assert text.startswith("<poolwise.Fit> " + FORMULA)
    assert ("status: OK" if fit.ok else "status: NOT OK") in text
    assert f"{fit.spec.design.n_rows} rows -> {fit.spec.design.n_cells} binomial cells" in text
    s = fit.summary()
    for name in ("Intercept", "b_urban", "b_age.centered", "sd_district"):
        row = next(line for line in text.splitlines() if line.strip().startswith(name + " "))
        assert fmt_sig(s.loc[name, "mean"]) in row.split()  # same mean as the summary table
    assert "a_district[" not in text  # no per-group rows
    assert "DataTree" not in text and "<xarray" not in text
    assert ".idata" in text and ".summary()" in text  # the full data, one attribute away
    assert fit.idata is not None and len(fit.summary()) > 4


def test_fit_repr_html(comp):
    fit = comp.main_fit
    page = fit._repr_html_()
    assert len(page.encode()) < 8000
    assert "<table>" in page and "b_age.centered" in page and "sd_district" in page
    assert "use.contraception ~ urban + age.centered + (1 | district)" in page
    assert "a_district[" not in page and "<script" not in page


def test_diagnosis_repr_uses_its_own_verdicts(comp):
    d = comp.main_fit.diagnosis
    text = repr(d)
    assert len(text.encode()) < 3000
    assert text.startswith("<poolwise.Diagnosis> " + ("OK" if d.ok else "NOT OK"))
    for name, state, value, _ in d.checks():
        line = next(x for x in text.splitlines() if x.strip().startswith(name))
        assert state.upper() in line and value in line
    html = d._repr_html_()
    assert 'class="badge pass"' in html or 'class="badge fail"' in html


def test_repair_log_repr(comp):
    log = comp.main_fit.repair_log
    text = repr(log)
    assert text.startswith(f"<poolwise.RepairLog> {len(log)} attempt(s)")
    lines = text.splitlines()
    assert lines[1].split()[:2] == ["attempt", "action"]
    for a in log.attempts:  # one row per attempt: number, action, result
        row = next(x for x in lines if x.strip().startswith(f"{a.number} "))
        assert a.action[:40] in row
        assert ("passed" if a.ok else "failed") in row
    assert "seconds" not in text  # wall-clock times stay in .attempts
    assert "<table>" in log._repr_html_()


def test_comparison_repr(comp):
    text = repr(comp)
    assert len(text.encode()) < 4000
    assert text.startswith("<poolwise.PoolingComparison> " + FORMULA)
    assert f"pooling of 'district' ({len(comp.groups)} groups)" in text
    for q in ("a_bar", "sigma", "p_typical_group", "raw_pooled_proportion"):
        assert q in text
    top = comp.groups["shift_p"].abs().idxmax()
    assert any(line.split()[:1] == [str(top)] for line in text.splitlines())
    assert "predictors besides the intercept" in text  # the comparison's note
    assert "<table>" in comp._repr_html_()


def test_diagnosis_badges_come_from_findings(comp):
    """An R-hat above 1.01 for a few group-level parameters is a warning under the 1% rule:
    the check shows WARN, never FAIL, and the diagnosis stays ok."""
    d = comp.main_fit.diagnosis
    warn = Finding("rhat", "warning", "R-hat is above 1.01 for 0 population-level and 1 of "
                   "200 group-level parameters", ("a_district[3]",))
    d2 = dataclasses.replace(d, max_rhat=1.02, findings=(warn,))
    states = {name: state for name, state, _, _ in d2.checks()}
    assert d2.ok and states["largest R-hat"] == "warn"
    assert "fail" not in states.values()
    err = dataclasses.replace(warn, severity="error")
    d3 = dataclasses.replace(d, max_rhat=1.02, findings=(err,))
    assert not d3.ok and dict((n, s) for n, s, _, _ in d3.checks())["largest R-hat"] == "fail"


def test_all_0_all_1_levels_are_said_once(comp):
    from poolwise.inference.display import finding_items, restates_a_note

    fit = comp.main_fit
    f = fit.diagnosis.finding("extreme_levels")
    assert f is not None  # district 3: 2 of 2
    notes = fit.spec.design.notes
    assert restates_a_note(f, notes)
    assert not restates_a_note(f, ("detected delimiter ';'",))  # nothing else says it: keep
    codes = [x.code for _, x in finding_items(fit.diagnosis, notes=notes)]
    assert "extreme_levels" not in codes
    assert "extreme_levels" in [x.code for _, x in finding_items(fit.diagnosis)]
    assert repr(fit).count("all 1") == 1  # the note, not the finding again
