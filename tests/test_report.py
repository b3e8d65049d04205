"""The HTML report: `poolwise compare --example bangladesh --report` end to end, structure,
escaping, reproducibility, the repair journal, `poolwise report DIR`, and a headless-Chromium
check (no network request, no console error, every section and figure rendered)."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import io
import json
import os
import re
import select
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from poolwise.cli import main
from poolwise.comparison.pooling import compare_pooling
from poolwise.errors import SpecError
from poolwise.inference.diagnostics import Finding
from poolwise.inference.repair import RepairAttempt, RepairLog
from poolwise.output.report import SECTIONS, render_report, write_report
from poolwise.textfmt import fmt_sig

FIGURES = ("forest", "sd", "proportions", "shrinkage", "ppc", "prior")
#: the figures of the comparison's report: its own, then the chains of the partial-pooling fit
REPORT_FIGURES = (*FIGURES, "trace", "rank", "energy")
CLI_SETTINGS = ["--tune", "500", "--draws", "500", "--seed", "1301"]


def _run(argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        rc = main(argv)
    return rc, out.getvalue()


@pytest.fixture(scope="module")
def bangladesh_run(tmp_path_factory):
    """`poolwise compare --example bangladesh --out DIR --report`, once for the module."""
    out = tmp_path_factory.mktemp("compare")
    rc, stdout = _run(["compare", "--example", "bangladesh", *CLI_SETTINGS, "--out", str(out),
                       "--report"])
    return rc, stdout, out


SMALL_FORMULA = "use.contraception ~ 1 + (1 | district)"


@pytest.fixture(scope="module")
def small_run(bangladesh, tmp_path_factory):
    """`poolwise compare DATA --out DIR --report r.html` on eight districts, run from DIR."""
    base = tmp_path_factory.mktemp("small")
    data = base / "eight.csv"
    bangladesh[bangladesh["district"] <= 8].to_csv(data, sep=";", index=False)
    argv = ["compare", str(data), "--formula", SMALL_FORMULA, "--tune", "300", "--draws", "300",
            "--seed", "5", "--out", ".", "--report", "r.html"]
    run = base / "one"
    run.mkdir()
    cwd = os.getcwd()
    try:
        os.chdir(run)
        rc, _ = _run(argv)
    finally:
        os.chdir(cwd)
    assert rc == 0
    return argv, run


@pytest.fixture(scope="module")
def evil_comp():
    """Group labels that are HTML."""
    labels = ["<b>bold</b>", "a&b", '"quoted"', "it's", "<script>alert(1)</script>", "plain"]
    n = np.array([40, 35, 50, 30, 45, 38])
    y = np.array([10, 14, 22, 9, 20, 15])
    df = pd.DataFrame({"g": labels, "y": y, "n": n})
    # PSIS leave-one-group-out (its table shows the labels too); the exact refits are tested in
    # tests/test_logo.py
    return compare_pooling("y | trials(n) ~ 1 + (1 | g)", df, tune=400, draws=400, seed=41,
                           logo="psis")


def _sections_in_order(text: str) -> list[str]:
    return re.findall(r'<(?:section|footer) id="([a-z]+)"', text)


# ---- the seed's exercise from the command line ------------------------------------------


def test_compare_cli_reproduces_the_seed(bangladesh_run):
    rc, stdout, out = bangladesh_run
    assert rc == 0
    assert "status: OK" in stdout
    g = pd.read_csv(out / "pooling_groups.csv", index_col=0)
    g.index = g.index.astype(str)
    # the 2-woman district (both users) moves most on the outcome scale
    assert g["shift_p"].abs().idxmax() == "3"
    assert (g.loc["3", "n"], g.loc["3", "successes"]) == (2, 2)
    # the all-zero district gets a finite partial-pooling estimate
    r = g.loc["11"]
    assert r["successes"] == 0 and 0 < r["partial_p_hdi_89_lower"] < r["partial_p_mean"] < 0.5
    # mixed-effects SDs below fixed-effects SDs for small districts, close for large ones
    by_n = g.sort_values("n")
    assert (by_n.iloc[:15]["partial_sd"] < by_n.iloc[:15]["none_sd"]).all()
    assert by_n.iloc[-15:]["sd_ratio"].median() > 0.85
    narrative = (out / "narrative.txt").read_text()
    assert f"district 3 (2 of 2: no pooling {fmt_sig(g.loc['3', 'none_p_mean'])}" in narrative
    # printed with significant digits; the CSV keeps full precision
    assert len(repr(float(g.loc["3", "none_p_mean"])).split(".")[1]) > 6
    assert "district 3 (2 of 2" in stdout
    for key in ("complete", "none", "partial"):
        assert (out / key / "result.json").exists()
    loo = pd.read_csv(out / "pooling_loo.csv", index_col=0)
    assert set(loo.index) == {"partial pooling", "no pooling", "complete pooling"}


def test_the_comparison_saves_and_shows_leave_one_group_out(bangladesh_run):
    """pooling_logo.csv (one row per model) and pooling_logo_groups.csv (one per district) are
    saved, and the report shows the table with its predictive unit."""
    _, _, out = bangladesh_run
    logo = pd.read_csv(out / "pooling_logo.csv", index_col=0)
    assert set(logo.index) == {"partial", "none", "complete"}
    assert {"elpd", "se", "elpd_diff", "dse", "n_psis", "n_refit", "n_bad_k"} <= set(logo.columns)
    per_group = pd.read_csv(out / "pooling_logo_groups.csv", index_col=0)
    assert len(per_group) == 60 and np.isfinite(per_group.to_numpy()).all()
    text = (out / "report.html").read_text(encoding="utf-8")
    assert "Predicting a new group (leave-one-group-out)" in text
    assert "all rows of a new, unseen group" in text
    best = logo["elpd"].idxmax()
    assert {"partial": "partial pooling", "none": "no pooling",
            "complete": "complete pooling"}[best] in text


def test_report_structure(bangladesh_run):
    _, _, out = bangladesh_run
    text = (out / "report.html").read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    assert _sections_in_order(text) == [sid for sid, _ in SECTIONS]
    assert re.findall(r'<figure id="fig-([a-z_]+)"', text) == list(REPORT_FIGURES)
    for name in FIGURES:
        m = re.search(rf'<figure id="fig-{name}"[^>]*><img alt="[^"]+" '
                      r'src="data:image/png;base64,([A-Za-z0-9+/=]+)">', text)
        assert m, name
        assert base64.b64decode(m.group(1)).startswith(b"\x89PNG")
    # self-contained: nothing to fetch, nothing to run
    assert not re.search(r"https?://|<script|<link|<iframe|url\(|@import|src=\"(?!data:)", text)
    assert text.count('class="badge pass"') >= 18  # 6 checks x 3 models
    assert "PSIS-LOO" in text and "existing group" in text
    assert "district 3 (2 of 2" in text
    assert "poolwise compare --example bangladesh --tune 500" in text  # the command line
    assert "44153e2c9c2fa7281b2d0af80d162e7cc37fee3de4822" in text  # the data's SHA-256
    repair = text[text.index('<section id="repair"'):text.index('<section id="summary"')]
    # every fit has a journal (attempt 1 at least), shown as a table, never as raw JSON
    assert repair.count('<th class="text">why</th>') == 3
    assert "initial fit" in repair and "No repair journal" not in repair
    assert "{" not in repair and "&#34;" not in repair


def _footer(text: str) -> dict[str, str]:
    """The reproducibility footer's rows, item -> value (HTML-unescaped)."""
    import html

    part = text[text.index('<footer id="reproducibility"'):]
    return {html.unescape(k): html.unescape(v) for k, v in re.findall(
        r'<tr><td>([^<]*)</td><td class="text">([^<]*)</td></tr>', part)}


def test_report_dir_rebuilds_the_same_report(small_run, tmp_path):
    """`poolwise report DIR` shows the command that made the fits (saved with them by
    `poolwise compare`), says it was rebuilt from DIR and by which command; the rest of the
    page is the original report's."""
    from poolwise.output.io import load_fit

    argv, out = small_run
    import shlex

    # the data file was given by its absolute path: the report names the file only
    original = shlex.join(["poolwise", argv[0], Path(argv[1]).name, *argv[2:]])
    for key in ("complete", "none", "partial"):
        saved = load_fit(out / key).idata.attrs["poolwise_command"]
        assert saved.startswith("poolwise compare ") and saved.endswith("--report r.html")
    target = tmp_path / "again.html"
    rc, _ = _run(["report", str(out), "-o", str(target)])
    assert rc == 0
    first, again = (out / "r.html").read_text(), target.read_text()
    assert _footer(first)["command"] == original
    rows = _footer(again)
    assert rows["command that made the fit"] == original
    assert rows["report rebuilt from"] == f"the saved folder {out.name}"
    assert rows["report rebuilt by"] == f"poolwise report {out.name} -o {target.name}"
    assert f"This report was rebuilt from the saved folder {out.name}" in again
    assert "re-running the command that made the fit" in again

    def strip_footer(t: str) -> str:
        return t[:t.index('<footer id="reproducibility"')]

    assert strip_footer(again) == strip_footer(first)
    # the Python API: a fit without a recorded command says so
    fit = load_fit(out / "partial")
    fit.idata.attrs.pop("poolwise_command")
    text = render_report(fit, figures=False, rebuilt_from=str(out))
    assert _footer(text)["command that made the fit"].startswith("not recorded")
    assert "reproduces the draws" not in text


# ---- escaping, reproducibility, the repair journal ----------------------------------------


@pytest.fixture(scope="module")
def evil_html(evil_comp):
    return {
        "comparison": render_report(evil_comp, command="poolwise <compare> & 'x'"),
        "fit": render_report(evil_comp.fits["partial"], command="poolwise <compare> & 'x'"),
    }


def test_user_strings_are_escaped(evil_html):
    for text in evil_html.values():
        assert "<b>bold</b>" not in text and "<script>" not in text
        assert "&lt;b&gt;bold&lt;/b&gt;" in text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
        assert "a&amp;b" in text and "&#34;quoted&#34;" in text  # markupsafe's escapes
        assert "poolwise &lt;compare&gt; &amp; &#39;x&#39;" in text
        assert _sections_in_order(text) == [sid for sid, _ in SECTIONS]


def test_single_fit_report(evil_html):
    text = evil_html["fit"]
    assert "Not run for this report" in text  # no pooling comparison for one fit
    assert 'id="fig-ppc"' in text and 'id="fig-prior"' in text
    assert 'id="fig-forest"' not in text


def test_same_command_gives_the_same_bytes(small_run, tmp_path, monkeypatch):
    argv, first = small_run
    monkeypatch.chdir(tmp_path)
    rc, _ = _run(argv)
    assert rc == 0
    assert (tmp_path / "r.html").read_bytes() == (first / "r.html").read_bytes()


def _attempt(number, action, ok, next_step, **kw):
    fields = dict(settings={"target_accept": 0.8 if number == 1 else 0.95, "tune": 300,
                            "draws": 300},
                  parameterization={"g": "centered" if number == 1 else "noncentered"},
                  divergences=0 if ok else 12, min_ess_bulk=812.4, min_ess_tail=640.2,
                  max_rhat=1.003 if ok else 1.04, min_bfmi=0.9, ok=ok, seconds=1.234,
                  problems=() if ok else ("divergences", "rhat"), culprit=None,
                  next_step=next_step)
    fields.update(kw)
    return RepairAttempt(number=number, action=action, **fields)


def test_repair_journal_is_a_readable_table(evil_comp):
    log = RepairLog(
        attempts=(
            _attempt(1, "initial fit <centered>", False,
                     "divergences concentrate where sd_g < 0.12: non-center g",
                     culprit="sd_g"),
            _attempt(2, "non-center (g) & target_accept 0.95", True, ""),
        ),
        ok=True, stopped="diagnostics passed after 2 attempts",
        advice=("report sd_g with its prior",),
    )
    fit = dataclasses.replace(evil_comp.fits["partial"], repair_log=log)
    text = render_report(fit, figures=False)
    section = text[text.index('id="repair"'):text.index('id="summary"')]
    rows = re.findall(r"<tr>(.*?)</tr>", section, flags=re.S)
    cells = [re.findall(r"<td[^>]*>(.*?)</td>", r, flags=re.S) for r in rows]
    attempts = [c for c in cells if len(c) == 5]
    assert [c[0] for c in attempts] == ["1", "2"]
    assert attempts[0][1] == "initial fit &lt;centered&gt;"
    assert attempts[1][1] == "non-center (g) &amp; target_accept 0.95"
    # why attempt 2 was made: the verdict of attempt 1
    assert attempts[1][2] == ("divergences concentrate where sd_g &lt; 0.12: non-center g "
                              "(culprit: sd_g)")
    assert attempts[0][4].startswith("failed (divergences, rhat): divergences 12, max R-hat 1.040")
    assert attempts[1][4].startswith("passed: divergences 0, max R-hat 1.003")
    assert "g: noncentered; target_accept 0.95; tune 300; draws 300" in attempts[1][3]
    assert "diagnostics passed after 2 attempts" in section
    assert "report sd_g with its prior" in section
    assert "1.234" not in section and "seconds" not in section  # wall-clock times left out
    assert "{" not in section  # no raw JSON


def test_badges_come_from_the_diagnosis(evil_comp):
    """R-hat 1.02 on one of many group-level parameters is a warning under the 1% rule: the
    Diagnosis is ok, so the report must not show a FAIL badge for R-hat (it used to decide
    'largest R-hat > 1.01: FAIL' by itself)."""
    fit = evil_comp.fits["partial"]
    d = fit.diagnosis
    warn = Finding("rhat", "warning", "R-hat is above 1.01 for 0 population-level and 1 of "
                   "600 group-level parameters (0.2%)", ("a_g[plain]",))
    ok_fit = dataclasses.replace(fit, diagnosis=dataclasses.replace(
        d, max_rhat=1.02, findings=(warn,)))
    assert ok_fit.ok
    text = render_report(ok_fit, figures=False)
    section = text[text.index('id="diagnostics"'):text.index('id="repair"')]
    rhat_row = next(r for r in re.findall(r"<tr>(.*?)</tr>", section, flags=re.S)
                    if "largest R-hat" in r)
    assert 'class="badge warn"' in rhat_row and "1.020" in rhat_row
    assert 'class="badge fail"' not in section
    assert "the fit passed its diagnostics" in text
    # the same numbers with an error finding: FAIL, from the diagnosis again
    bad = dataclasses.replace(fit, diagnosis=dataclasses.replace(
        d, max_rhat=1.02, findings=(dataclasses.replace(warn, severity="error"),)))
    text = render_report(bad, figures=False)
    section = text[text.index('id="diagnostics"'):text.index('id="repair"')]
    rhat_row = next(r for r in re.findall(r"<tr>(.*?)</tr>", section, flags=re.S)
                    if "largest R-hat" in r)
    assert 'class="badge fail"' in rhat_row


def test_fit_report_cli(bangladesh, tmp_path):
    data = tmp_path / "twelve.csv"
    bangladesh[bangladesh["district"] <= 12].to_csv(data, sep=";", index=False)
    rc, stdout = _run(["fit", str(data), "--formula",
                       "use.contraception ~ urban + age.centered + (1 | district)",
                       "--tune", "300", "--draws", "300", "--seed", "3",
                       "--out", str(tmp_path / "fit"), "--report"])
    assert rc == 0
    text = (tmp_path / "fit" / "report.html").read_text()
    assert _sections_in_order(text) == [sid for sid, _ in SECTIONS]
    assert "poolwise fit" in text
    # districts 3 (2 of 2) and 11 (0 of 21): said once, as the data note (it used to be
    # printed a second time as an 'info' finding)
    assert stdout.count("maximum-likelihood estimates are infinite") == 1
    assert "group 11 (21 obs) has all 0" in stdout
    assert text.count("maximum-likelihood estimates are infinite") == 1
    # the prior of a standardized predictor, with the scale it applies on
    sd_age = float(np.std(bangladesh.loc[bangladesh["district"] <= 12, "age.centered"]))
    prior = (f"b_age.centered ~ normal(0, 1) on the standardized scale (per {fmt_sig(sd_age)} "
             "units of age.centered)")
    assert prior in stdout and prior in text
    # significant digits: the small age coefficient keeps 3 of them, MCSE 2
    s = pd.read_csv(tmp_path / "fit" / "summary.csv", index_col=0)
    row = next(x for x in stdout.splitlines() if x.startswith("b_age.centered "))
    assert row.split()[1] == fmt_sig(s.loc["b_age.centered", "mean"])
    assert row.split()[5] == fmt_sig(s.loc["b_age.centered", "mcse_mean"], 2)
    assert not re.search(r"(?<![\d.])-?0\.0+(?![\d.e])", row)  # never 0.000 for a nonzero value


def test_fit_report_records_its_command_and_no_folder(bangladesh, tmp_path):
    """`poolwise fit --out` saves its own command line with the fit; the report names the
    data by file name and hash, never by the folders it sits in (absolute paths in a command
    are shortened to their last component), also when rebuilt with `poolwise report`."""
    from poolwise.output.io import load_fit

    data = tmp_path / "five.csv"
    bangladesh[bangladesh["district"] <= 5].to_csv(data, sep=";", index=False)
    out = tmp_path / "fit"
    argv = ["fit", str(data), "--formula", "use.contraception ~ 1 + (1 | district)",
            "--tune", "200", "--draws", "200", "--seed", "4", "--out", str(out), "--report",
            "--quiet"]
    rc, _ = _run(argv)
    assert rc in (0, 1)
    assert load_fit(out).idata.attrs["poolwise_command"] == " ".join(["poolwise", *argv]) \
        .replace("use.contraception ~ 1 + (1 | district)",
                 "'use.contraception ~ 1 + (1 | district)'")
    rc, _ = _run(["report", str(out), "-o", str(tmp_path / "again.html")])
    assert rc == 0
    for html_file in (out / "report.html", tmp_path / "again.html"):
        text = html_file.read_text()
        assert str(tmp_path) not in text and str(tmp_path.parent) not in text
        rows = _footer(text)
        assert rows["data file"] == "five.csv"
        assert len(rows["data SHA-256"]) == 64
        made = rows.get("command that made the fit", rows.get("command"))
        assert made.startswith("poolwise fit five.csv --formula") and "--out fit" in made
    assert "detected delimiter" in text  # the data note quotes the source: by name only


def test_portable_command():
    from poolwise.output.report import portable_command

    assert portable_command(
        "poolwise fit /data/ana/x.csv --out=/srv/res/ -f 'y ~ 1 + (1 | g)' -o rel/r.html"
    ) == "poolwise fit x.csv --out=res -f 'y ~ 1 + (1 | g)' -o rel/r.html"
    assert portable_command("poolwise report out -o 'my report.html'") == (
        "poolwise report out -o 'my report.html'")  # nothing to shorten: as recorded


@pytest.fixture(scope="module")
def failing_fit(bangladesh_first3):
    """The seed's centered fit of three districts, short chains, not repaired: it fails."""
    import warnings

    import poolwise

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", poolwise.ConvergenceWarning)
        warnings.simplefilter("ignore", poolwise.DataWarning)
        fit = poolwise.fit("use.contraception ~ 1 + (1 | district)", bangladesh_first3,
                           parameterization="centered", target_accept=0.8, tune=200,
                           draws=200, seed=1, repair=False)
    assert not fit.ok
    return fit


def test_a_failing_fit_shows_its_chains_first(failing_fit):
    """Right after the status under the title: what failed, then the trace and rank plots of
    the parameters with the worst R-hat / ESS and the group SD, worst first; the diagnostics
    section points there, and the Figures section does not repeat them."""
    text = render_report(failing_fit, command="poolwise fit first3.csv")
    head = text[:text.index('<section id="model"')]
    assert "partial pooling (varying intercepts); 139 rows; this fit did NOT pass its " \
           "diagnostics" in head
    assert "some fits" not in text
    status = head[head.index('id="status-partial"'):]
    assert 'class="badge fail">FAIL</span> largest R-hat' in status
    figures = re.findall(r'<figure id="([a-z_-]+)"', text)
    assert figures[:3] == ["status-partial-trace", "status-partial-rank", "status-partial-energy"]
    assert not {"fig-trace", "fig-rank", "fig-energy"} & set(figures)
    caption = re.search(r'id="status-partial-trace".*?<figcaption>(.*?)</figcaption>', text,
                        flags=re.S).group(1)
    d = failing_fit.diagnosis
    worst = d.parameters[int(np.argmax(d.rhat))]
    listed = caption.split("and the group SDs: ")[1]
    assert listed.startswith(f"{worst} (R-hat {d.max_rhat:.3f}")
    assert "sd_district (R-hat" in listed
    diag = text[text.index('<section id="diagnostics"'):text.index('<section id="repair"')]
    assert 'href="#status-partial"' in diag
    # the few-levels warning: once, as the diagnosis finding (it was in the data warnings,
    # the finding and the fit's warnings)
    assert text.count("strongly influenced by the prior") == 1
    assert "Grouping factor &#39;district&#39; has only 3 levels" in diag


def test_fit_report_figures_show_model_and_sampler(evil_html):
    text = evil_html["fit"]
    figs = text[text.index('<section id="figures"'):]
    assert re.findall(r'<figure id="fig-([a-z_]+)"', figs) == [
        "coefficients", "caterpillar_a_g", "ppc", "prior", "trace", "rank", "energy"]
    assert "partial pooling (varying intercepts); 6 rows; the fit passed its diagnostics" in text


@pytest.fixture(scope="module")
def slopes_fit(bangladesh):
    import warnings

    import poolwise

    df = bangladesh[bangladesh["district"] <= 10]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", poolwise.ConvergenceWarning)
        return poolwise.fit("use.contraception ~ urban + (1 + urban | district)", df,
                            tune=200, draws=200, seed=2, repair=False)


def test_varying_slopes_report(slopes_fit):
    """Titled by the model that was fitted, with a caterpillar of the intercepts and of the
    slopes, the coefficient plot and the intercept-slope plot."""
    text = render_report(slopes_fit)
    assert "(varying intercepts)" not in text
    model = "partial pooling (varying intercepts and slopes of urban, correlated)"
    assert f"<h3>{model}</h3>" in text
    assert re.findall(r'<figure id="fig-([a-z_]+)"', text)[:6] == [
        "coefficients", "caterpillar_a_district", "caterpillar_b_district__urban",
        "intercept_slope_district", "ppc", "prior"]
    caption = re.search(r'id="fig-prior".*?<figcaption>(.*?)</figcaption>', text,
                        flags=re.S).group(1)
    assert f"under the priors of {model}" in caption


def test_one_of_several_fits_failing_is_named(evil_comp):
    comp = evil_comp
    d = comp.fits["none"].diagnosis
    bad = dataclasses.replace(d, findings=(Finding("rhat", "error", "R-hat is above 1.01",
                                                   ("a_g[plain]",)),))
    fits = dict(comp.fits)
    fits["none"] = dataclasses.replace(fits["none"], diagnosis=bad)
    text = render_report(dataclasses.replace(comp, fits=fits), figures=False)
    assert ("1 of 3 fits did NOT pass their diagnostics (no pooling (fixed effects)): do not "
            "trust its estimates") in text
    assert "some fits" not in text
    assert 'id="status-none"' in text and 'id="status-partial"' not in text
    assert "all 3 fits passed their diagnostics" in render_report(comp, figures=False)


def test_tables_print_in_full(evil_html):
    """No table is cut in print: the scroll boxes lose their height limit and overflow in
    the print style sheet, and no table sits in a closed <details>."""
    text = evil_html["comparison"]
    css = text[text.index("<style>"):text.index("</style>")]
    rule = re.search(r"@media print\s*\{(.*)\}\s*$", css.strip(), flags=re.S)
    assert rule, "no print style sheet"
    body = rule.group(1)
    scroll = re.search(r"\.scroll, \.scroll\.tall \{([^}]*)\}", body).group(1)
    assert "max-height: none" in scroll and "overflow: visible" in scroll
    assert "thead { display: table-header-group; }" in body
    assert "<details" not in text
    summary = text[text.index('<section id="summary"'):text.index('<section id="pooling"')]
    assert summary.count("<table") == 3  # one per model, all shown


def test_long_tables_show_the_extremes(evil_comp, monkeypatch):
    from poolwise.output import report

    monkeypatch.setattr(report, "MAX_TABLE_LEVELS", 4)
    monkeypatch.setattr(report, "TOP_K", 2)
    fit = evil_comp.fits["partial"]
    text = render_report(fit, figures=False)
    summary = text[text.index('<section id="summary"'):text.index('<section id="pooling"')]
    rows = re.findall(r"<tr><td>(a_g\[[^<]*\])</td>", summary)
    means = fit.summary()["mean"]
    a = means[[i for i in means.index if i.startswith("a_g[")]].sort_values(kind="stable")
    import html

    assert [html.unescape(r) for r in rows] == [*a.index[:2], *a.index[-2:]]
    assert "a_g: 6 levels; shown are the 2 lowest and the 2 highest posterior means" in summary


def test_interval_columns_say_kind_and_probability(evil_comp):
    fit = evil_comp.fits["partial"]
    text = render_report(fit, figures=False)
    assert "<th>89% HDI lower</th><th>89% HDI upper</th>" in text
    text = render_report(fit, figures=False, prob=0.95, kind="eti")
    assert "<th>95% ETI lower</th><th>95% ETI upper</th>" in text
    text = render_report(evil_comp, figures=False)
    pooling = text[text.index('<section id="pooling"'):text.index('<section id="figures"')]
    assert "<th>partial 89% HDI lower</th>" in pooling
    assert "<th>none prop. 89% HDI upper</th>" in pooling


def test_write_report_needs_a_fit_or_comparison(tmp_path):
    with pytest.raises(SpecError, match="Fit or a PoolingComparison"):
        write_report(tmp_path / "x.html", {"not": "a fit"})  # type: ignore[arg-type]


# ---- headless Chromium ----------------------------------------------------------------------


def _chromium() -> str | None:
    for cand in (os.environ.get("POOLWISE_CHROMIUM"), shutil.which("chromium"),
                 "/usr/bin/chromium"):
        if cand and os.access(cand, os.X_OK):
            return cand
    return None


class _DevTools:
    """A minimal Chrome DevTools Protocol client over --remote-debugging-pipe (fd 3 / 4)."""

    def __init__(self, exe: str, profile: Path) -> None:
        import fcntl

        r_chrome, w_ours = os.pipe()
        r_ours, w_chrome = os.pipe()
        ends = []
        for fd in (r_chrome, w_chrome):  # above 9, so 3<& / 4>& below cannot clash
            ends.append(fcntl.fcntl(fd, fcntl.F_DUPFD, 10))
            os.close(fd)
        r_chrome, w_chrome = ends
        args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run",
                f"--user-data-dir={profile}", "--remote-debugging-pipe", "--hide-scrollbars",
                "about:blank"]
        script = f'exec "$0" "$@" 3<&{r_chrome} 4>&{w_chrome} {r_chrome}<&- {w_chrome}>&-'
        self.proc = subprocess.Popen(
            ["bash", "-c", script, exe, *args], pass_fds=(r_chrome, w_chrome),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        os.close(r_chrome)
        os.close(w_chrome)
        self.w, self.r = w_ours, r_ours
        self.buf = b""
        self.next_id = 0
        self.events: list[dict] = []

    def send(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = 60) -> dict:
        self.next_id += 1
        msg: dict = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self.w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            for m in self._read(deadline):
                if m.get("id") == msg["id"]:
                    if "error" in m:
                        raise RuntimeError(f"{method}: {m['error']}")
                    return m.get("result", {})
                self.events.append(m)

    def wait_event(self, method: str, timeout: float = 60, *, after: int = 0,
                   session: str | None = None) -> dict:
        """The first ``method`` event among those received after the first ``after`` events
        (so a load event of the blank start page is never taken for the page's own)."""
        deadline = time.monotonic() + timeout
        while True:
            for m in self.events[after:]:
                if m.get("method") == method and (session is None or m.get("sessionId") == session):
                    return m
            self.events.extend(self._read(deadline))

    def _read(self, deadline: float) -> list[dict]:
        left = deadline - time.monotonic()
        ready = select.select([self.r], [], [], max(left, 0))[0] if left > 0 else []
        if not ready:
            raise TimeoutError("chromium did not answer in time")
        chunk = os.read(self.r, 1 << 20)
        if not chunk:
            raise RuntimeError("chromium closed the DevTools pipe")
        self.buf += chunk
        *msgs, self.buf = self.buf.split(b"\0")
        return [json.loads(m) for m in msgs if m]

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self.w, b'{"id": 999999, "method": "Browser.close"}\0')
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        os.close(self.w)
        os.close(self.r)


_PAGE_FACTS = """JSON.stringify({
  sections: Array.from(document.querySelectorAll('main > section, main > footer')).map(s => s.id),
  headings: Array.from(document.querySelectorAll('main > section > h2, main > footer > h2'))
    .map(h => h.textContent),
  figures: Array.from(document.querySelectorAll('figure')).map(f => ({
    id: f.id, loaded: f.querySelector('img').complete,
    width: f.querySelector('img').naturalWidth,
    caption: f.querySelector('figcaption').textContent.length})),
  height: document.documentElement.scrollHeight
})"""


def _open_in_chromium(html: Path, profile: Path, screenshot: Path | None) -> dict:
    exe = _chromium()
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("headless Chromium is missing on CI (/usr/bin/chromium): the browser "
                        "tier must run there; `make test` installs Debian's chromium package")
        pytest.skip("headless Chromium is not installed (/usr/bin/chromium); `make test` "
                    "installs Debian's chromium package, or run `apt-get install chromium`")
    chrome = _DevTools(exe, profile)
    try:
        tid = chrome.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        sid = chrome.send("Target.attachToTarget", {"targetId": tid, "flatten": True})["sessionId"]
        for domain in ("Network.enable", "Runtime.enable", "Log.enable", "Page.enable"):
            chrome.send(domain, session=sid)
        chrome.send("Emulation.setDeviceMetricsOverride",
                    {"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": False},
                    session=sid)
        seen = len(chrome.events)
        chrome.send("Page.navigate", {"url": html.resolve().as_uri()}, session=sid)
        chrome.wait_event("Page.loadEventFired", after=seen, session=sid)
        res = chrome.send("Runtime.evaluate", {"expression": _PAGE_FACTS, "returnByValue": True},
                          session=sid)
        facts = json.loads(res["result"]["value"])
        if screenshot is not None:
            shot = chrome.send("Page.captureScreenshot", {
                "format": "png", "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": 1280, "height": facts["height"], "scale": 1},
            }, session=sid)
            screenshot.write_bytes(base64.b64decode(shot["data"]))
        # let late events (console, requests) arrive before looking at them
        with contextlib.suppress(TimeoutError):
            chrome.send("Runtime.evaluate", {"expression": "1"}, session=sid, timeout=5)
    finally:
        chrome.close()
    mine = [e for e in chrome.events if e.get("sessionId") == sid]
    facts["requests"] = [e["params"]["request"]["url"] for e in mine
                         if e.get("method") == "Network.requestWillBeSent"]
    facts["console"] = [
        e["params"] for e in mine
        if e.get("method") in ("Runtime.exceptionThrown", "Runtime.consoleAPICalled")
        or (e.get("method") == "Log.entryAdded"
            and e["params"]["entry"]["level"] in ("error", "warning"))
    ]
    return facts


@pytest.mark.browser
def test_report_in_headless_chromium(bangladesh_run, tmp_path):
    _, _, out = bangladesh_run
    shot_dir = Path(os.environ.get("POOLWISE_SCREENSHOT_DIR", tmp_path))
    shot_dir.mkdir(parents=True, exist_ok=True)
    screenshot = shot_dir / "report.png"
    facts = _open_in_chromium(out / "report.html", tmp_path / "profile", screenshot)
    assert facts["sections"] == [sid for sid, _ in SECTIONS]
    assert facts["headings"] == [h for _, h in SECTIONS]
    assert [f["id"] for f in facts["figures"]] == [f"fig-{n}" for n in REPORT_FIGURES]
    for f in facts["figures"]:
        assert f["loaded"] and f["width"] >= 700 and f["caption"] > 20, f
    # the only things loaded are the file itself and its inline images
    assert facts["requests"][0].startswith("file://")
    assert all(u.startswith(("file://", "data:")) for u in facts["requests"]), facts["requests"]
    assert facts["console"] == []
    assert screenshot.read_bytes().startswith(b"\x89PNG")
    assert facts["height"] > 5000


@pytest.mark.browser
def test_chromium_check_catches_requests_and_errors(tmp_path):
    """The harness itself: a page that fetches and logs an error must fail the checks."""
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><html><body><main><section id="x"></section>'
                   '<img src="http://127.0.0.1:9/x.png"><script>console.error("boom")</script>'
                   "</main></body></html>")
    facts = _open_in_chromium(bad, tmp_path / "profile", None)
    assert any(u.startswith("http://127.0.0.1:9") for u in facts["requests"])
    assert facts["console"], "console.error was not seen"


# ---- significant digits ---------------------------------------------------------------------


@pytest.mark.parametrize(("value", "digits", "text"), [
    (0.392, 3, "0.392"), (-0.00512, 3, "-0.00512"), (1.2449, 3, "1.24"), (12.345, 3, "12.3"),
    (1234.4, 3, "1234"), (0.9996, 3, "1.00"), (0.000493, 2, "0.00049"), (88.94, 3, "88.9"),
    (3.14e-6, 3, "3.14e-6"), (0.0, 3, "0"), (float("nan"), 3, ""), (812.6, None, "813"),
])
def test_significant_digits(value, digits, text):
    assert fmt_sig(value, digits) == text


@pytest.mark.parametrize("value", [1e-9, -4.2e-5, 0.00049, 3e-4, 0.0051, -0.05])
def test_a_nonzero_value_never_prints_as_zero(value):
    for digits in (2, 3):
        shown = float(fmt_sig(value, digits))
        assert shown != 0 and abs(shown - value) <= 0.05 * abs(value)


def test_rhat_never_hides_a_failure():
    from poolwise.textfmt import fmt_rhat

    assert fmt_rhat(1.0103) == "1.0103"  # 3 decimals would read "1.010", a pass
    assert fmt_rhat(1.0098) == "1.010" and fmt_rhat(1.02) == "1.020"
    assert fmt_rhat(float("nan")) == "" and fmt_rhat(float("inf")) == "inf"
