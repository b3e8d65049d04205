"""The command line's model options at work: --categorical, --reference, --no-standardize,
--offset, per-term --parameterization, and compare names its --group flag (that every option
of fit() and compare_pooling() has its flag: tests/test_options.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import poolwise
from poolwise.cli import main


def _herds(tmp_path) -> str:
    rng = np.random.default_rng(6)
    rows = []
    for h in range(8):
        u = rng.normal(0, 0.4)
        for period in (1, 2, 3, 4):
            size = int(rng.integers(5, 20))
            eta = -1.0 + u + {1: 0.0, 2: -0.8, 3: -1.0, 4: -1.5}[period]
            rows.append({"herd": h, "period": period, "size": size,
                         "incidence": int(rng.binomial(size, 1 / (1 + np.exp(-eta))))})
    path = tmp_path / "herds.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return str(path)


def test_fit_with_model_flags(tmp_path, capsys):
    path = _herds(tmp_path)
    code = main(["fit", path, "-f", "cbind(incidence, size - incidence) ~ period + (1 | herd)",
                 "--categorical", "period", "--reference", "period=2", "--no-standardize",
                 "--offset", "log(size)", "--parameterization", "herd=noncentered",
                 "--seed", "4", "--tune", "300", "--draws", "200", "--no-prior-check",
                 "--out", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert code in (0, 1)
    for name in ("b_period1", "b_period3", "b_period4"):
        assert name in out
    assert "write factor(period)" not in out  # it is categorical now
    d = poolwise.load_fit(tmp_path / "out").spec.design
    assert d.reference == {"period": 2}
    assert d.standardize is False and not d.rescaled
    assert d.formula.offsets == ("offset(log(size))",)
    assert "parameterization of (herd): noncentered" in out


def test_numeric_coded_factor_note_is_printed(tmp_path, capsys):
    path = _herds(tmp_path)
    main(["fit", path, "-f", "incidence | trials(size) ~ period + (1 | herd)", "--seed", "1",
          "--tune", "200", "--draws", "100", "--no-prior-check"])
    out = capsys.readouterr().out
    assert "note: predictor 'period' has only 4 distinct whole-number values (1, 2, 3, 4)" in out
    assert "write factor(period) in the formula (or --categorical period)" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["compare", "-f", "incidence | trials(size) ~ (1 | herd) + (1 | period)"],
         "choose the one to compare with --group, e.g. --group herd"),
        (["compare", "-f", "incidence | trials(size) ~ (1 | herd)", "--group", "farm"],
         "--group farm: no group term with a varying intercept for 'farm'"),
        (["fit", "-f", "incidence | trials(size) ~ (1 | herd)", "--categorical", "farm"],
         "--categorical names column 'farm', which is not in the data"),
        (["fit", "-f", "incidence | trials(size) ~ (1 | herd)", "--reference", "period"],
         "--reference takes COL=LEVEL"),
        (["fit", "-f", "incidence | trials(size) ~ (1 | herd)", "--parameterization", "wobbly"],
         "--parameterization takes auto, centered, noncentered or GROUP=KIND; got 'wobbly'"),
        (["fit", "-f", "incidence | trials(size) ~ (1 | herd)", "--offset", "lg(size)"],
         "unknown function 'lg()'"),
    ],
)
def test_flag_errors_exit_3_and_name_the_flag(tmp_path, capsys, argv, message):
    path = _herds(tmp_path)
    code = main([argv[0], path, *argv[1:]])
    err = capsys.readouterr().err
    assert code == 3
    assert message in err
