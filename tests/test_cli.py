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
