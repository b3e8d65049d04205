"""The command line as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys

from poolwise.cli import main


def test_fit_example_writes_outputs(tmp_path, capsys):
    code = main(["fit", "--example", "bangladesh", "--seed", "3", "--draws", "500",
                 "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0
    assert "status: OK" in out and "sd_district" in out and "a_district[61]" in out
    for name in ("fit.nc", "summary.csv", "result.json"):
        assert (tmp_path / name).exists()
    r = json.loads((tmp_path / "result.json").read_text())
    assert r["diagnostics"]["ok"] is True and r["settings"]["seed"] == 3


def test_fit_file_with_formula(tmp_path, bangladesh, capsys):
    path = tmp_path / "survey.csv"
    bangladesh.to_csv(path, index=False)
    code = main(["fit", str(path), "--formula", "use.contraception ~ 1 + (1 | district)",
                 "--pooling", "none", "--seed", "1", "-q"])
    assert code == 0
    assert capsys.readouterr().out.startswith("status: OK")


def test_console_script_runs_as_a_process():
    proc = subprocess.run(
        [sys.executable, "-m", "poolwise.cli", "fit", "--example", "bangladesh", "--seed", "2",
         "--quiet"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "status: OK" in proc.stdout


#: a label of 10,000 characters (it padded every row of the printed summary to 10,099), two
#: labels alike at both ends, and an ordinary one
LONG = "x" * 10_000
ONE, TWO = "A" * 30 + "one" + "B" * 30, "A" * 30 + "two" + "B" * 30


def _long_labels_csv(path):
    import numpy as np
    import pandas as pd

    labels = ["short", LONG, ONE, TWO, "mid"]
    g = np.repeat(np.arange(len(labels)), 30)
    y = (np.random.default_rng(1).random(g.size) < 0.4).astype(int)
    y[g == 1] = 0  # all failures: the diagnosis names the level
    pd.DataFrame({"y": y, "g": np.array(labels, dtype=object)[g]}).to_csv(path, index=False)


def test_long_labels_are_shortened_on_the_terminal_and_whole_in_the_files(tmp_path, capsys):
    """docs/reliability.md R.20: a label longer than 40 characters prints as its head, '...'
    and its tail (labels alike at both ends show where they differ) in the summary, the
    comparison's group table, the narrative and the findings of fit and diagnose; the CSV
    and JSON files keep it whole. The interval columns print as the files name them (R.21)."""
    import pandas as pd

    data = tmp_path / "long.csv"
    _long_labels_csv(data)
    settings = ["-f", "y ~ 1 + (1 | g)", "--tune", "300", "--draws", "300", "--seed", "1",
                "--no-progress"]
    main(["fit", str(data), *settings, "--out", str(tmp_path / "fit")])
    fit_out = capsys.readouterr().out
    main(["diagnose", str(tmp_path / "fit")])
    diagnose_out = capsys.readouterr().out
    main(["compare", str(data), *settings, "--logo", "off", "--out", str(tmp_path / "cmp")])
    compare_out = capsys.readouterr().out

    short_long = "x" * 25 + "..." + "x" * 12
    short_one = "A" * 12 + "..." + "AAoneBBBBB" + "..." + "B" * 12
    short_two = "A" * 12 + "..." + "AAtwoBBBBB" + "..." + "B" * 12
    for out in (fit_out, diagnose_out, compare_out):
        assert LONG[:100] not in out and ONE not in out
        assert max(len(line) for line in out.splitlines()) < 1000  # messages, not labels
    rows = {line.split()[0]: line for line in fit_out.splitlines() if line.startswith("a_g[")}
    assert set(rows) == {f"a_g[{lab}]" for lab in ("short", "mid", short_long, short_one,
                                                   short_two)}
    assert max(len(line) for line in rows.values()) < 150  # was 10,099
    header = next(line for line in fit_out.splitlines() if "hdi_89_lower" in line).split()
    assert header[:4] == ["mean", "sd", "hdi_89_lower", "hdi_89_upper"]
    assert f"Levels of 'g': {short_long} have all outcomes 0" in diagnose_out
    assert f"group {short_long} (30 obs) has all 0" in fit_out  # the data note
    lines = compare_out.splitlines()
    first = next(i for i, line in enumerate(lines) if "p_partial" in line) + 1
    table = lines[first:lines.index("", first)]
    groups = [line.split()[0] for line in table]
    assert sorted(groups) == sorted([short_one, short_two, short_long, "short", "mid"])
    assert f"only failures or only successes (g {short_long})" in compare_out
    population = next(line for line in compare_out.splitlines() if "hdi_89_lower" in line
                      and "model" in line)
    assert population.split() == ["model", "scale", "mean", "hdi_89_lower", "hdi_89_upper"]

    # the files keep every label whole
    summary = pd.read_csv(tmp_path / "fit" / "summary.csv", index_col=0)
    assert f"a_g[{LONG}]" in summary.index and f"a_g[{ONE}]" in summary.index
    result = json.loads((tmp_path / "fit" / "result.json").read_text())
    assert f"a_g[{TWO}]" in result["parameters"]
    groups = pd.read_csv(tmp_path / "cmp" / "pooling_groups.csv", index_col=0)
    assert set(groups.index) == {"short", LONG, ONE, TWO, "mid"}
    assert summary.loc[f"a_g[{LONG}]", "n"] == 30 and groups.loc[LONG, "successes"] == 0
