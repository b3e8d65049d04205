"""An interrupt stops, and stops cleanly (docs/reliability.md R.15).

Ctrl-C (SIGINT) or SIGTERM in any phase ends the run with exit 130 / 143 and one line saying
where it stopped and that nothing was written; the previous result in ``--out`` stays byte for
byte, no lock or staging folder is left, and no repair attempt starts. A sampler that hands
back a partial trace (what nutpie returns when it is interrupted) raises instead of becoming a
fit. The default tier uses a stand-in sampler; the slow tier interrupts a real fit."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from conftest import stand_in_run_nuts  # random draws of the right shape instead of NUTS

import poolwise
import poolwise.engine.sampler as sampler_module
import poolwise.inference.pilot as pilot_module
import poolwise.inference.sampling as sampling_module
from poolwise.cli import EXIT_INTERRUPTED, EXIT_TERMINATED, main
from poolwise.engine.sampler import SamplerConfig, check_complete
from poolwise.errors import ConvergenceWarning, Interrupted, interrupted_phases, phase
from poolwise.output.io import save_fit

SRC = str(Path(poolwise.__file__).resolve().parents[1])
FORMULA = "y ~ 1 + (1 | g)"
# noncentered: no pilot run, so the stand-in's first call is the first attempt's sampling
ARGS = ["-f", FORMULA, "--chains", "4", "--tune", "30", "--draws", "100", "--seed", "2", "-q",
        "--parameterization", "noncentered"]


def _frame() -> pd.DataFrame:
    rng = np.random.default_rng(8)
    g = np.repeat(np.arange(8), 15)
    return pd.DataFrame({"y": rng.integers(0, 2, g.size), "g": [f"g{i}" for i in g]})


class Sampler:
    """A stand-in for run_nuts (in every module that calls it) that counts its calls and, at
    the calls named in ``plan``, does: "ctrl-c" (raise KeyboardInterrupt), "sigterm" (send
    SIGTERM to this process), "partial" (hand back nutpie's trace of an interrupted run) or
    "apart" (chains far apart: R-hat fails, and repair samples again)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, plan: dict[int, str] | None = None):
        self.calls, self.plan = 0, plan or {}
        for module in (sampler_module, sampling_module, pilot_module):
            monkeypatch.setattr(module, "run_nuts", self)

    def __call__(self, packed, config):
        self.calls += 1
        tree, seconds = stand_in_run_nuts(packed, config)
        what = self.plan.get(self.calls, "")
        if what == "ctrl-c":
            raise KeyboardInterrupt
        if what == "sigterm":
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(500):  # the handler raises in here
                time.sleep(0.01)
            raise AssertionError("SIGTERM did not stop the run")
        if what == "partial":
            return _partial(tree), seconds
        if what == "apart":
            post = tree["posterior"].to_dataset()
            shift = xr.DataArray(np.arange(config.chains) * 5.0, dims="chain")
            tree["posterior"] = xr.DataTree(post + shift)
        return tree, seconds


def _partial(tree: xr.DataTree, kept: int = 23) -> xr.DataTree:
    """nutpie's trace of an interrupted run: the short chains padded with NaN."""
    post = tree["posterior"].to_dataset().copy(deep=True)
    for name, var in post.data_vars.items():
        values = var.values.copy()
        values[2, kept:] = np.nan
        values[3, :] = np.nan
        post[name] = (var.dims, values)
    groups = {"posterior": post}
    if "sample_stats" in tree.children:
        groups["sample_stats"] = tree["sample_stats"].to_dataset()
    return xr.DataTree.from_dict(groups)


def _cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def old(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path, dict[str, bytes]]:
    """A data file and a folder holding a good earlier result (with its snapshot)."""
    data = tmp_path / "d.csv"
    _frame().to_csv(data, index=False)
    with monkeypatch.context() as m:
        Sampler(m)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = poolwise.fit(FORMULA, _frame(), chains=4, tune=30, draws=100, seed=1)
    out = tmp_path / "out"
    save_fit(fit, out)
    monkeypatch.chdir(tmp_path)
    return data, out, _snapshot(out)


def _assert_untouched(out: Path, before: dict[str, bytes]) -> None:
    assert _snapshot(out) == before  # byte for byte
    left = [p.name for p in out.parent.iterdir() if ".poolwise-" in p.name]
    assert not left, left  # no lock file, no staging folder
    assert not [p for p in out.parent.iterdir() if p.name.startswith("poolwise-")]


def _one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("repair", [True, False])
def test_ctrl_c_during_sampling_stops_and_writes_nothing(old, monkeypatch, repair):
    data, out, before = old
    sampler = Sampler(monkeypatch, {1: "ctrl-c"})
    argv = ["fit", str(data), *ARGS, "--out", str(out), *([] if repair else ["--no-repair"])]
    rc, stdout, err = _cli(argv)
    assert rc == EXIT_INTERRUPTED == 130
    line = _one_line(err)
    assert line.startswith("interrupted during sampling") and line.endswith(
        "; nothing was written"), line
    assert "status:" not in stdout
    assert sampler.calls == 1  # no repair attempt, nothing after the interrupt
    _assert_untouched(out, before)


def test_a_partial_trace_is_an_interrupt_not_a_failed_attempt(old, monkeypatch):
    """nutpie's answer to Ctrl-C (the draws so far, NaN-padded) used to be diagnosed as a
    failed attempt (R-hat nan), repaired by sampling again, and saved over the old result."""
    data, out, before = old
    sampler = Sampler(monkeypatch, {1: "partial"})
    rc, stdout, err = _cli(["fit", str(data), *ARGS, "--out", str(out)])
    assert rc == EXIT_INTERRUPTED
    line = _one_line(err)
    assert line == ("interrupted during sampling: the sampler stopped before the end (chain 2 "
                    "has 23 of 100, chain 3 has 0 of 100 draws); nothing was written"), line
    assert sampler.calls == 1 and "repair" not in stdout
    _assert_untouched(out, before)


def test_a_repair_attempt_is_interrupted_like_the_first(old, monkeypatch):
    data, out, before = old
    # the first attempt fails its diagnostics: repair samples again, and is stopped there
    sampler = Sampler(monkeypatch, {1: "apart", 2: "ctrl-c"})
    rc, _, err = _cli(["fit", str(data), *ARGS, "--out", str(out)])
    assert rc == EXIT_INTERRUPTED
    assert _one_line(err) == "interrupted during sampling (repair attempt 2); nothing was written"
    assert sampler.calls == 2
    _assert_untouched(out, before)


def test_sigterm_stops_like_ctrl_c_and_the_handler_is_restored(old, monkeypatch):
    data, out, before = old
    handler = signal.getsignal(signal.SIGTERM)
    sampler = Sampler(monkeypatch, {1: "sigterm"})
    rc, _, err = _cli(["fit", str(data), *ARGS, "--out", str(out)])
    assert rc == EXIT_TERMINATED == 143
    line = _one_line(err)
    assert line.startswith("terminated (SIGTERM) during sampling"), line
    assert line.endswith("; nothing was written")
    assert sampler.calls == 1
    assert signal.getsignal(signal.SIGTERM) == handler
    _assert_untouched(out, before)


def _raise_interrupt(*args, **kwargs):
    raise KeyboardInterrupt


@pytest.mark.parametrize(("where", "target", "phase_text"), [
    ("reading", "poolwise.data.table.read_table", "reading the data"),
    ("pilot", "poolwise.inference.repair.choose_parameterization", "the pilot"),
    ("log-likelihood", "poolwise.inference.repair.with_log_likelihood",
     "the log-likelihood and prior sensitivity"),
    ("saving", "poolwise.output.io.write_fit_files", "saving"),
])
def test_every_phase_stops_cleanly(old, monkeypatch, where, target, phase_text):
    data, out, before = old
    Sampler(monkeypatch)
    monkeypatch.setattr(target, _raise_interrupt)
    rc, _, err = _cli(["fit", str(data), *ARGS, "--out", str(out)])
    assert rc == EXIT_INTERRUPTED
    assert _one_line(err) == f"interrupted during {phase_text}; nothing was written"
    _assert_untouched(out, before)


@pytest.mark.slow  # runs the compiled approximation: its kernels take about a minute to
# compile on a fresh machine (tests/test_approx.py keeps every such test in the slow tier)
def test_ctrl_c_during_approx_group_draws_stops_at_the_next_kernel_call(old, monkeypatch):
    """approx draws the group effects in kernel calls of at most ``DRAW_BATCH_VALUES``
    values: an interrupt is acted on between two calls (a fraction of a second at 50,000
    groups), not once every draw is made; the run stops like any other phase."""
    import poolwise.inference.approx as approx

    data, out, before = old
    calls = []
    real = approx.intercept_draws

    def draws(*args, **kwargs):
        calls.append(len(kwargs["draws_of"][0]))  # the draws this call makes
        if len(calls) == 2:
            raise KeyboardInterrupt  # what a SIGINT between two calls raises
        return real(*args, **kwargs)

    monkeypatch.setattr(approx, "intercept_draws", draws)
    monkeypatch.setattr(approx, "DRAW_BATCH_VALUES", 8 * 10)  # 10 draws of the 8 groups a call
    rc, _, err = _cli(["fit", str(data), "-f", FORMULA, "--method", "approx", "--seed", "2",
                       "-q", "--out", str(out)])
    assert rc == EXIT_INTERRUPTED
    # of about 400 calls of at most 10 draws: the run stopped at the second
    assert len(calls) == 2 and all(1 <= c <= 10 for c in calls)
    assert _one_line(err) == ("interrupted during the approximation: the group effects; "
                              "nothing was written")
    _assert_untouched(out, before)


def test_an_interrupt_in_the_report_says_what_was_written(old, monkeypatch, tmp_path):
    data, out, before = old
    Sampler(monkeypatch)
    monkeypatch.setattr("poolwise.output.report.write_report", _raise_interrupt)
    report = tmp_path / "r.html"
    rc, _, err = _cli(["fit", str(data), *ARGS, "--out", str(out), "--report", str(report)])
    assert rc == EXIT_INTERRUPTED
    assert _one_line(err) == (f"interrupted during the report; '{out.resolve()}' had been "
                              "written before it")
    assert not report.exists() and not list(tmp_path.glob(".r.poolwise-tmp-*"))
    assert _snapshot(out) != before  # the fit was saved before the report began


def test_an_interrupt_in_compare_names_the_fit_and_loo(old, monkeypatch):
    data, out, before = old
    Sampler(monkeypatch)
    monkeypatch.setattr("poolwise.comparison.pooling._loo_compare", _raise_interrupt)
    rc, _, err = _cli(["compare", str(data), *ARGS, "--out", str(out)])
    assert rc == EXIT_INTERRUPTED
    assert _one_line(err) == "interrupted during LOO; nothing was written"
    _assert_untouched(out, before)
    sampler = Sampler(monkeypatch, {2: "ctrl-c"})
    rc, _, err = _cli(["compare", str(data), *ARGS, "--out", str(out)])
    assert rc == EXIT_INTERRUPTED
    assert _one_line(err).startswith("interrupted during sampling (")
    assert "pooling fit)" in err and sampler.calls == 2
    _assert_untouched(out, before)


# ---------------------------------------------------------------------------------------------
# the Python API
# ---------------------------------------------------------------------------------------------


def test_keyboard_interrupt_propagates_from_fit(monkeypatch):
    sampler = Sampler(monkeypatch, {1: "ctrl-c"})
    with pytest.raises(KeyboardInterrupt) as info:
        poolwise.fit(FORMULA, _frame(), chains=4, tune=30, draws=100, seed=1,
                     parameterization="noncentered")
    assert interrupted_phases(info.value)[0] == "sampling"
    assert sampler.calls == 1


def test_a_partial_trace_never_becomes_a_fit(monkeypatch):
    sampler = Sampler(monkeypatch, {1: "partial"})
    with pytest.raises(Interrupted, match="chain 2 has 23 of 100, chain 3 has 0 of 100 draws"):
        poolwise.fit(FORMULA, _frame(), chains=4, tune=30, draws=100, seed=1,
                     parameterization="noncentered")
    assert sampler.calls == 1  # the repair loop did not sample again
    assert issubclass(Interrupted, KeyboardInterrupt)


def _tree(chains: int = 4, draws: int = 50) -> xr.DataTree:
    rng = np.random.default_rng(0)
    post = xr.Dataset({"a": (("chain", "draw"), rng.normal(size=(chains, draws))),
                       "b": (("chain", "draw", "g"), rng.normal(size=(chains, draws, 3)))})
    return xr.DataTree.from_dict({"posterior": post})


@pytest.mark.parametrize(("make", "message"), [
    (lambda: _tree(draws=40), "chain 0 has 40 of 50"),
    (lambda: _tree(chains=3), "chain 3 has 0 of 50"),
    (lambda: _partial(_tree(), kept=10), "chain 2 has 10 of 50, chain 3 has 0 of 50"),
])
def test_check_complete_finds_short_and_padded_chains(make, message):
    with pytest.raises(Interrupted, match=message):
        check_complete(make(), SamplerConfig(chains=4, draws=50))


def test_check_complete_accepts_a_whole_trace_with_non_finite_draws():
    """A NaN in some draws is a diagnostic finding (non-finite draws), not a short chain: only
    trailing draws that are NaN in every variable are padding."""
    tree = _tree()
    tree["posterior"]["a"].values[1, -5:] = np.nan  # not NaN in 'b' too
    tree["posterior"]["b"].values[2, 10, :] = np.nan
    check_complete(tree, SamplerConfig(chains=4, draws=50))


def test_phase_names_are_kept_innermost_first():
    with pytest.raises(KeyboardInterrupt) as info, phase("outer"), phase("inner"):
        raise KeyboardInterrupt
    assert interrupted_phases(info.value) == ["inner", "outer"]
    with pytest.raises(ValueError) as plain, phase("outer"):
        raise ValueError("not an interrupt")
    assert interrupted_phases(plain.value) == []


# ---------------------------------------------------------------------------------------------
# a real fit, interrupted (slow tier)
# ---------------------------------------------------------------------------------------------


def _interrupt_real_fit(tmp_path: Path, sig: int, extra: list[str]) -> tuple[int, str, float]:
    data = tmp_path / "d.csv"
    _frame().to_csv(data, index=False)
    out = tmp_path / "out"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        save_fit(poolwise.fit(FORMULA, _frame(), chains=2, tune=100, draws=100, seed=1), out)
    before = _snapshot(out)
    argv = [sys.executable, "-m", "poolwise.cli", "fit", str(data), "-f", FORMULA, "--draws",
            "2000000", "--seed", "3", "-q", "--out", str(out), *extra]
    env = {**os.environ, "PYTHONPATH": SRC}
    proc = subprocess.Popen(argv, env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    lock = tmp_path / ".out.poolwise-lock"
    deadline = time.perf_counter() + 120
    while not lock.exists() and proc.poll() is None and time.perf_counter() < deadline:
        time.sleep(0.01)
    time.sleep(8.0)  # reading, compiling, the pilot: sampling by now (2 million draws)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(sig)
    t0 = time.perf_counter()
    _, err = proc.communicate(timeout=120)
    seconds = time.perf_counter() - t0
    _assert_untouched(out, before)
    return proc.returncode, err, seconds


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code", "word"), [
    (signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated (SIGTERM)")])
@pytest.mark.parametrize("extra", [[], ["--no-repair"]])
def test_a_real_fit_interrupted_during_sampling(tmp_path, sig, code, word, extra):
    rc, err, seconds = _interrupt_real_fit(tmp_path, sig, extra)
    assert rc == code, err
    line = _one_line(err)
    assert line == f"{word} during sampling; nothing was written", line
    assert seconds < 15  # it stops; repair does not sample again
