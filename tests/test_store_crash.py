"""Crash consistency and concurrent writers (issue 10, "never half-written, never mixed").

A result folder killed (SIGKILL) at a random moment of a write holds the complete old result
or the complete new one: its manifest verifies, it loads, ``diagnose`` agrees with its
``result.json``, and no file of one write sits beside a file of the other. Two writers of
one folder: the second fails at once, the first finishes intact."""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import re
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import poolwise
from poolwise.cli import main
from poolwise.errors import ConvergenceWarning
from poolwise.output.io import load_fit, save_fit
from poolwise.output.store import verify_folder

SRC = str(Path(poolwise.__file__).resolve().parents[1])
OLD, NEW = "y ~ 1 + (1 | g)", "y ~ 1 + x + (1 | g)"
QUICK = ["--tune", "100", "--draws", "100", "--chains", "2", "--seed", "4", "-q", "--no-repair"]


def _frame() -> pd.DataFrame:
    rng = np.random.default_rng(5)
    g = np.repeat(np.arange(6), 20)
    return pd.DataFrame({"y": rng.integers(0, 2, g.size), "x": rng.normal(size=g.size),
                         "g": np.array(list("abcdef"), dtype=object)[g]})


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": SRC}


def _check_consistent(folder: Path, allowed: set[str]) -> str:
    """The folder is one complete result: manifest verified; `poolwise diagnose` loads it and
    agrees with its result.json (same model, one of ``allowed``, same verdict and numbers)."""
    verify_folder(folder)
    result = json.loads((folder / "result.json").read_text())
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        rc = main(["diagnose", str(folder)])
    lines = out.getvalue().strip().splitlines()
    assert rc == (0 if result["diagnostics"]["ok"] else 1), err.getvalue()
    model = next(ln for ln in lines if ln.startswith("model: "))
    formula = model.removeprefix("model: ").split("   ")[0]
    assert formula in allowed
    assert result["formula"] == formula
    status = lines[-1]
    assert int(re.search(r"divergences (\d+)", status)[1]) == result["diagnostics"]["divergences"]
    shown = re.search(r"max R-hat ([0-9.]+)", status)[1]  # as printed, to its last digit
    digits = len(shown.split(".")[1]) if "." in shown else 0
    assert abs(float(shown) - result["diagnostics"]["max_rhat"]) <= 0.5 * 10.0**-digits + 1e-12
    return formula


# ---------------------------------------------------------------------------------------------
# kills during the write itself (forked writers: no import time, many kills)
# ---------------------------------------------------------------------------------------------

DRIVER = textwrap.dedent('''
    import json, os, random, signal, sys, time, warnings
    from pathlib import Path
    warnings.simplefilter("ignore")
    from poolwise.output.io import load_fit, save_fit

    old_dir, new_dir, target, n, seed = sys.argv[1:6]
    fits = [load_fit(old_dir), load_fit(new_dir)]
    target = Path(target)
    save_fit(fits[1], target.parent / "timing")  # the first save also imports; not timed
    t0 = time.perf_counter()
    save_fit(fits[1], target.parent / "timing")
    seconds = time.perf_counter() - t0
    save_fit(fits[0], target)
    rng = random.Random(int(seed))
    kills = []
    for i in range(int(n)):
        fit = fits[(i + 1) % 2]  # alternate, so that old and new always differ
        pid = os.fork()
        if pid == 0:
            try:
                save_fit(fit, target)
            finally:
                os._exit(0)
        # stratified random moments from the start of the write to twice its length
        delay = 2.0 * seconds * (i + rng.random()) / int(n)
        time.sleep(delay)
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        staged = [p.name for p in target.parent.iterdir() if ".poolwise-tmp-" in p.name]
        kills.append({"delay": delay, "killed": os.WIFSIGNALED(status),
                      "mid_write": bool(staged), "new": fit.spec.formula.text})
        print(json.dumps(kills[-1]), flush=True)
        # the parent checks the folder before the next write
        assert sys.stdin.readline().strip() == "next"
    print(json.dumps({"save_seconds": seconds}), flush=True)
''')


@pytest.fixture(scope="module")
def two_results(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("results")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, formula in (("old", OLD), ("new", NEW)):
            fit = poolwise.fit(formula, _frame(), seed=1, chains=2, tune=100, draws=100,
                               repair=False)
            save_fit(fit, base / name)
    return base / "old", base / "new"


def _kill_saves(two_results, tmp_path: Path, n: int) -> None:
    """``n`` SIGKILLs at random moments of save_fit into a folder holding a good result."""
    old, new = two_results
    target = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(old), str(new), str(target), str(n), "1234"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=_env(),
    )
    assert proc.stdin is not None and proc.stdout is not None
    current = OLD
    outcomes = []
    with proc:
        for _ in range(n):
            line = proc.stdout.readline()
            assert line, proc.stderr.read() if proc.stderr else ""
            kill = json.loads(line)
            got = _check_consistent(target, {current, kill["new"]})
            outcomes.append((kill, got == kill["new"]))
            current = got
            proc.stdin.write("next\n")
            proc.stdin.flush()
        proc.stdin.close()
        assert proc.wait(timeout=120) == 0, proc.stderr.read() if proc.stderr else ""
    # the kills did land during writes, and both outcomes happened
    assert sum(k["mid_write"] and k["killed"] for k, _ in outcomes) >= 1
    assert any(replaced for _, replaced in outcomes)
    assert any(not replaced for _, replaced in outcomes)
    # nothing left over beside the folder once the next write has run
    save_fit(load_fit(old), target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "timing"]


@pytest.mark.slow  # 7 s; the default tier's budget (5 min on 2 cores) is spent elsewhere
def test_sigkill_during_save_leaves_old_or_new(two_results, tmp_path):
    _kill_saves(two_results, tmp_path, 6)


@pytest.mark.slow
def test_sigkill_during_save_20_times(two_results, tmp_path):
    _kill_saves(two_results, tmp_path, 20)


# ---------------------------------------------------------------------------------------------
# kills of the real command line
# ---------------------------------------------------------------------------------------------


def _kill_cli_runs(tmp_path: Path, old: Path, n: int, seed: int) -> list[bool]:
    data = tmp_path / "d.csv"
    _frame().to_csv(data, index=False)
    target = tmp_path / "out"
    save_fit(load_fit(old), target)
    argv = [sys.executable, "-m", "poolwise.cli", "fit", str(data), "-f", NEW, *QUICK,
            "--out", str(target)]
    t0 = time.perf_counter()
    subprocess.run(argv, env=_env(), capture_output=True, timeout=300, check=False)
    whole = time.perf_counter() - t0
    save_fit(load_fit(old), target)
    rng = random.Random(seed)
    replaced = []
    for i in range(n):
        proc = subprocess.Popen(argv, env=_env(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        if i % 2 == 0:  # a random moment of the whole run
            time.sleep(rng.uniform(0.3 * whole, 1.1 * whole))
        else:  # a random moment after the write has begun
            deadline = time.perf_counter() + 2 * whole + 30
            while proc.poll() is None and time.perf_counter() < deadline and not any(
                ".poolwise-tmp-" in p.name for p in tmp_path.iterdir()
            ):
                time.sleep(0.002)
            time.sleep(rng.uniform(0, 0.3))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        formula = _check_consistent(target, {OLD, NEW})
        replaced.append(formula == NEW)
        if formula == NEW:
            save_fit(load_fit(old), target)
    return replaced


@pytest.mark.slow  # 7 s, beside the 20 kills below
def test_sigkill_of_fit_out_leaves_old_or_new(two_results, tmp_path):
    _kill_cli_runs(tmp_path, two_results[0], 3, 99)


@pytest.mark.slow
def test_sigkill_of_fit_out_20_times(two_results, tmp_path):
    replaced = _kill_cli_runs(tmp_path, two_results[0], 20, 7)
    assert not all(replaced)


# ---------------------------------------------------------------------------------------------
# concurrent writers
# ---------------------------------------------------------------------------------------------


def test_two_writers_second_fails_at_once_first_intact(two_results, tmp_path):
    """Two `poolwise fit --out D` started together: whichever takes the lock writes; the
    other exits 3 at once (before sampling), naming the folder and the writer's pid."""
    data = tmp_path / "d.csv"
    _frame().to_csv(data, index=False)
    target = tmp_path / "out"
    argv = [sys.executable, "-m", "poolwise.cli", "fit", str(data), "-f", NEW, "--tune", "300",
            "--draws", "2000", "--chains", "4", "--seed", "4", "-q", "--no-repair",
            "--out", str(target)]
    first = subprocess.Popen(argv, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    lock = tmp_path / ".out.poolwise-lock"
    deadline = time.perf_counter() + 120
    while not lock.exists() and first.poll() is None and time.perf_counter() < deadline:
        time.sleep(0.01)
    second = subprocess.run(argv, env=_env(), capture_output=True, text=True, timeout=300)
    with first:
        _, err1 = first.communicate(timeout=300)
    if second.returncode == 3:
        assert "Traceback" not in second.stderr
        errors = [ln for ln in second.stderr.splitlines() if ln.startswith("error: ")]
        assert len(errors) == 1
        assert f"is being written by process {first.pid}" in errors[0]
        assert str(target) in errors[0]
        assert "status:" not in second.stdout  # it did not sample
    else:  # the first had already finished: the two did not overlap
        assert second.returncode in (0, 1), second.stderr
    assert first.returncode in (0, 1), err1
    _check_consistent(target, {NEW})
    fit = load_fit(target)
    draws = fit.posterior["Intercept"].values if "Intercept" in fit.posterior else None
    arrays = [fit.posterior[v].values for v in fit.posterior.data_vars]
    assert all(np.isfinite(a).all() for a in arrays)
    assert not all((a == 0).all() for a in arrays)
    assert draws is None or draws.std() > 0
    assert not lock.exists()
