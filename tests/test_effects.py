"""Effects on the outcome scale (predictions, comparisons, slopes) and poststratification:
against a direct computation from the draws, against a simulation whose true average effect
is known, and their errors and command line."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit

import poolwise
from poolwise.cli import main
from poolwise.comparison.effects import comparisons, predictions, slopes
from poolwise.comparison.poststratify import poststratify
from poolwise.errors import DataError, SpecError
from poolwise.model.naming import total_name


def _flat(fit, name):
    v = fit.posterior[name].values
    return v.reshape((-1,) + v.shape[2:])


@pytest.fixture(scope="module")
def data() -> pd.DataFrame:
    rng = np.random.default_rng(11)
    G, R = 12, 40
    g = np.repeat(np.arange(G), R)
    x = rng.integers(0, 2, G * R)
    z = rng.normal(0.0, 1.0, G * R).round(2)
    a = rng.normal(0.0, 0.6, G)
    eta = -0.4 + 0.9 * x + 0.5 * z + a[g]
    return pd.DataFrame({"y": rng.binomial(1, expit(eta)), "x": x, "z": z, "g": g})


@pytest.fixture(scope="module")
def fit(data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return poolwise.fit("y ~ x + z + (1 | g)", data, seed=5, tune=400, draws=400,
                            prior_sensitivity=False)


def _eta(fit, data, x=None, z=None):
    """eta of every data row, written out: Intercept + b_x x + b_z z + a_g - Intercept."""
    xv = data["x"].to_numpy() if x is None else np.broadcast_to(x, len(data))
    zv = data["z"].to_numpy() if z is None else z
    b0, bx, bz = (_flat(fit, n) for n in ("Intercept", "b_x", "b_z"))
    term = fit.spec.terms[0]
    labels = list(term.group.labels)
    a = _flat(fit, total_name(term, "Intercept"))[:, [labels.index(v) for v in data["g"]]]
    return b0[:, None] + bx[:, None] * xv + bz[:, None] * zv + (a - b0[:, None])


def test_comparisons_are_the_average_risk_difference_of_the_draws(fit, data):
    c = comparisons(fit, "x", data)
    direct = (expit(_eta(fit, data, x=1)) - expit(_eta(fit, data, x=0))).mean(axis=1)
    assert c.loc[0, "contrast"] == "1 - 0"
    assert c.loc[0, "estimate"] == pytest.approx(direct.mean(), rel=1e-10)
    assert c.loc[0, "sd"] == pytest.approx(direct.std(ddof=1), rel=1e-8)
    assert {"hdi_89_lower", "hdi_89_upper"} <= set(c.columns)
    by = comparisons(fit, "x", data, by="g")
    for j, row in by.iterrows():
        rows = (data["g"] == row["g"]).to_numpy()
        want = (expit(_eta(fit, data, x=1)) - expit(_eta(fit, data, x=0)))[:, rows].mean(axis=1)
        assert row["estimate"] == pytest.approx(want.mean(), rel=1e-10), j


def test_slopes_and_predictions_against_the_draws(fit, data):
    s = slopes(fit, "z", data)
    h = 1e-5
    direct = ((expit(_eta(fit, data, z=data["z"].to_numpy() + h))
               - expit(_eta(fit, data, z=data["z"].to_numpy() - h))) / (2 * h)).mean(axis=1)
    assert s.loc[0, "contrast"] == "dP/dx"
    assert s.loc[0, "estimate"] == pytest.approx(direct.mean(), rel=1e-5)
    p = predictions(fit, data, by="x")
    for _, row in p.iterrows():
        rows = (data["x"] == row["x"]).to_numpy()
        assert row["estimate"] == pytest.approx(expit(_eta(fit, data))[:, rows].mean(), 1e-10)
    one = predictions(fit, data.head(4))
    np.testing.assert_allclose(one["estimate"], expit(_eta(fit, data.head(4))).mean(axis=0),
                               rtol=1e-10)


def test_a_new_group_by_quadrature_equals_monte_carlo_over_the_population(fit, data):
    """groups='new': each row in a new group, its intercept integrated over N(0, sigma): the
    quadrature against 20,000 Monte Carlo draws per posterior draw, written out here."""
    c = comparisons(fit, "x", data.head(50), groups="new")
    assert "Gauss-Hermite" in c.attrs["groups"]
    rng = np.random.default_rng(0)
    sigma = _flat(fit, "sd_g")
    b0, bx, bz = (_flat(fit, n) for n in ("Intercept", "b_x", "b_z"))
    zv = data["z"].to_numpy()[:50]
    u = rng.standard_normal((len(sigma), 4000)) * sigma[:, None]
    diff = np.zeros(len(sigma))
    for r in range(50):
        base = b0[:, None] + bz[:, None] * zv[r] + u
        diff += (expit(base + bx[:, None]) - expit(base)).mean(axis=1)
    diff /= 50
    assert c.loc[0, "estimate"] == pytest.approx(diff.mean(), abs=5e-4)
    avg = comparisons(fit, "x", data, groups="average")
    assert "combinations of fitted group levels" in avg.attrs["groups"]
    assert avg.loc[0, "estimate"] == pytest.approx(comparisons(fit, "x", data).loc[0, "estimate"],
                                                   abs=0.01)


@pytest.mark.slow  # a 1800-row fit
def test_the_average_effect_of_a_simulation_is_recovered():
    """Data from a known model: the true average risk difference over the data (the true
    parameters, each row in its own group) lies within 3 posterior SDs of the estimate."""
    rng = np.random.default_rng(21)
    G, R = 30, 60
    g = np.repeat(np.arange(G), R)
    x = rng.integers(0, 2, G * R)
    a = rng.normal(0.0, 0.8, G)
    truth = (expit(-0.5 + 1.2 + a[g]) - expit(-0.5 + a[g])).mean()
    df = pd.DataFrame({"y": rng.binomial(1, expit(-0.5 + 1.2 * x + a[g])), "x": x, "g": g})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f = poolwise.fit("y ~ x + (1 | g)", df, seed=3, tune=400, draws=400,
                         prior_sensitivity=False)
    c = comparisons(f, "x", df)
    assert abs(c.loc[0, "estimate"] - truth) < 3 * c.loc[0, "sd"]


def test_categorical_predictors_compare_each_level_with_the_reference(data):
    df = data.assign(k=np.where(data["z"] > 0.5, "hi", np.where(data["z"] < -0.5, "lo", "mid")))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f = poolwise.fit("y ~ k + (1 | g)", df, seed=5, tune=300, draws=300,
                         prior_sensitivity=False)
    c = comparisons(f, "k", df)
    assert list(c["contrast"]) == ["lo - hi", "mid - hi"]
    with pytest.raises(SpecError, match="categorical; a slope needs a numeric"):
        slopes(f, "k", df)


def test_bad_requests_are_clear_errors(fit, data):
    with pytest.raises(SpecError, match="'w' is not a predictor of the model"):
        comparisons(fit, "w", data)
    with pytest.raises(SpecError, match="groups must be"):
        comparisons(fit, "x", data, groups="mine")
    with pytest.raises(DataError, match="by names column"):
        comparisons(fit, "x", data, by="nope")
    with pytest.raises(DataError, match="not a file poolwise can read again"):
        comparisons(fit, "x")  # fitted from a DataFrame: the rows are not kept


# ---- poststratification -----------------------------------------------------------------


def test_poststratification_is_the_count_weighted_mean_of_the_cells(fit, data):
    pop = data[["x", "z", "g"]].iloc[::8].copy()  # 60 cells from every group
    pop["N"] = np.arange(1, len(pop) + 1) * 10
    pop["region"] = np.where(pop["g"] < 6, "north", "south")
    keep = np.arange(fit.posterior.sizes["chain"] * fit.posterior.sizes["draw"])
    out = poststratify(fit, pop, count="N", by="region", draws=len(keep))
    p = expit(_eta(fit, pop.reset_index(drop=True)))
    N = pop["N"].to_numpy(dtype=float)
    for _, row in out.iterrows():
        rows = np.ones(len(pop), bool) if row["level"] == "total" else \
            (pop["region"] == row["level"]).to_numpy()
        want = (p[:, rows] * N[rows]).sum(axis=1) / N[rows].sum()
        assert row["estimate"] == pytest.approx(want.mean(), rel=1e-10), row["level"]
        assert row["population"] == N[rows].sum()
    assert list(out["level"]) == ["north", "south", "total"]


def test_the_survey_as_its_own_population_gives_the_average_prediction(fit, data):
    pop = data[["x", "z", "g"]].assign(N=1)
    total = poststratify(fit, pop, draws=10_000).iloc[-1]
    assert total["estimate"] == pytest.approx(
        predictions(fit, data, by=True).loc[0, "estimate"], rel=1e-10)


def test_unseen_population_levels_get_new_group_draws_with_a_note(fit, data):
    pop = pd.DataFrame({"x": [0, 1, 0], "z": [0.0, 0.0, 0.0], "g": [0, 0, 99], "N": [5, 5, 90]})
    out = poststratify(fit, pop)
    assert any("1 g level(s) of the population the survey never saw (99; 1 cells)" in n
               for n in out.attrs["notes"])
    # the unseen district carries the spread between groups: a wider interval
    only_new = poststratify(fit, pop.iloc[[2]])
    only_old = poststratify(fit, pop.iloc[[0]].assign(x=0))
    assert only_new.loc[0, "sd"] > only_old.loc[0, "sd"]


def test_poststratification_errors_name_the_column(fit, data):
    with pytest.raises(DataError, match="no count column 'N'"):
        poststratify(fit, data[["x", "z", "g"]])
    with pytest.raises(DataError, match="lacks the column\\(s\\) z"):
        poststratify(fit, data[["x", "g"]].assign(N=1))
    with pytest.raises(DataError, match="numbers >= 0; rows 2"):
        poststratify(fit, data[["x", "z", "g"]].head(3).assign(N=[1, -1, 2]))


def test_the_command_line_writes_the_tables(tmp_path, capsys):
    out = tmp_path / "fit"
    assert main(["fit", "--example", "bangladesh", "-f",
                 "use.contraception ~ urban + (1 | district)", "--seed", "2", "--tune", "300",
                 "--draws", "300", "--quiet", "--out", str(out)]) == 0
    assert main(["effects", str(out), "--variable", "urban", "--by", "urban",
                 "--out", str(tmp_path / "e.csv")]) == 0
    e = pd.read_csv(tmp_path / "e.csv")
    assert list(e.columns) == ["term", "contrast", "urban", "estimate", "sd", "hdi_89_lower",
                               "hdi_89_upper"]
    assert main(["effects", str(out), "--new-group"]) == 0
    assert "Gauss-Hermite" in capsys.readouterr().out
    pop = tmp_path / "pop.csv"
    pd.DataFrame({"urban": [0, 1], "district": [1, 1], "N": [10, 30]}).to_csv(pop, index=False)
    assert main(["poststratify", str(out), "--population", str(pop), "--out",
                 str(tmp_path / "p.csv")]) == 0
    p = pd.read_csv(tmp_path / "p.csv")
    assert list(p["level"]) == ["total"] and p.loc[0, "population"] == 40


# -- the report's section (issue 21 item 1: the average comparison of each predictor) -------


def _section_text(html: str, sid: str) -> str:
    import re

    start = html.index(f'id="{sid}"')
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html[start:html.index("</section>",
                                                                             start)]))


def test_the_report_shows_the_average_comparisons(fit, data, tmp_path):
    """From a file: the table's numbers are those of comparisons(), and the plot is there."""
    from poolwise.output.report import render_report
    from poolwise.textfmt import fmt_sig

    path = tmp_path / "d.csv"
    data.to_csv(path, index=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f = poolwise.fit("y ~ x + z + (1 | g)", str(path), seed=5, tune=300, draws=300,
                         prior_sensitivity=False)
    html = render_report(f)
    text = _section_text(html, "effects")
    expected = poolwise.comparisons(f, ["x", "z"])
    for _, r in expected.iterrows():
        row = (f"{r['term']} {r['contrast']} {fmt_sig(r['estimate'])} {fmt_sig(r['sd'])} "
               f"{fmt_sig(r['hdi_89_lower'])} {fmt_sig(r['hdi_89_upper'])}")
        assert row in text
    assert 'data-figure="effects"' in html
    assert "over the 480 rows the model was fitted to" in text


def test_the_report_says_why_effects_are_missing(fit):
    """A frame given in Python cannot be read again: the section says so and how to get them;
    a model without predictors has nothing to compare."""
    from poolwise.output.report import render_report

    text = _section_text(render_report(fit, figures=False), "effects")
    assert "Not computed here: the data this fit was made from" in text
    assert "poolwise effects DIR" in text
    bare = poolwise.fit("use.contraception ~ 1 + (1 | district)", poolwise.load_example(),
                        seed=1, tune=200, draws=200, prior_sensitivity=False)
    assert "The model has no predictors" in _section_text(render_report(bare, figures=False),
                                                          "effects")
