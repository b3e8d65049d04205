"""The memory plan covers the whole fit, repair ladder included; running out of memory is a
clear error (exit 3) that names the flags that fix it, never a traceback."""

from __future__ import annotations

import importlib
import warnings

import numpy as np
import pytest

import poolwise
import poolwise.inference.plan as planning
import poolwise.resources as resources
from poolwise.cli import main
from poolwise.data.patterns import row_patterns
from poolwise.engine.sampler import SamplerConfig
from poolwise.errors import SpecError
from poolwise.inference.repair import RepairPolicy

fit_module = importlib.import_module("poolwise.inference.fit")
sampling_module = importlib.import_module("poolwise.inference.sampling")  # sample_spec's module

FORMULA = "use.contraception ~ 1 + urban + (1 | district)"


@pytest.fixture(scope="module")
def small(bangladesh):
    return bangladesh[bangladesh["district"].isin(range(4, 12))].reset_index(drop=True)


def test_plan_counts_patterns_not_rows(small):
    spec = poolwise.build_model(FORMULA, small)
    cfg = SamplerConfig(chains=4, tune=1000, draws=1000, seed=1)
    plan = planning.memory_plan(spec, cfg, log_likelihood=True, max_draws=8000)
    n_pat = row_patterns(spec.design).n_patterns
    assert plan.n_patterns == n_pat < spec.design.n_rows
    per_draw = 8 * (planning.POSTERIOR_COPIES * planning.stored_values_per_draw(spec)
                    + planning.STATS_PER_DRAW + n_pat)
    cells = spec.design.n_cells
    def temp(d):
        return 8 * planning.CELL_TEMPORARIES * cells * 4 * min(d, planning.draw_chunk(cells))

    # nutpie's trace keeps every tuning draw's parameters until sampling ends
    def tuning(t):
        return 8 * planning.TUNING_COPIES * planning.stored_values_per_draw(spec) * 4 * t

    assert plan.per_draw == per_draw
    assert plan.first_attempt == 4 * 1000 * per_draw + temp(1000) + tuning(1000)
    assert plan.ladder == 4 * 8000 * per_draw + temp(8000) + tuning(1000)
    longer = planning.memory_plan(spec, cfg, max_draws=8000, max_tune=8000)
    assert longer.ladder == plan.ladder + tuning(7000)
    off = planning.memory_plan(spec, cfg, log_likelihood=False)
    assert off.per_draw == per_draw - 8 * n_pat


def test_ladder_draws_follow_the_repair_policy():
    p = RepairPolicy(max_attempts=6, tune_factor=2, max_draws=8000)
    assert fit_module._ladder_draws(p, 1000, True) == 8000
    assert fit_module._ladder_draws(p, 100, True) == 3200
    assert fit_module._ladder_draws(p, 1000, False) == 1000
    assert fit_module._ladder_draws(RepairPolicy(max_attempts=1), 1000, True) == 1000
    assert fit_module._ladder_draws(p, 9000, True) == 9000


def _policy_handed_to_repair(small, monkeypatch, avail):
    monkeypatch.setattr(planning, "available_memory_bytes", lambda: avail)
    seen = {}

    def fake_repair_fit(spec, config, *, policy, **kw):
        seen["policy"] = policy
        raise SpecError("stop here")

    monkeypatch.setattr(fit_module, "repair_fit", fake_repair_fit)
    with pytest.raises(SpecError, match="stop here"):
        poolwise.fit(FORMULA, small, chains=4, tune=100, draws=200, seed=1, prior_check=False)
    return seen["policy"]


@pytest.mark.parametrize("extra_draws", [300, 3000])
def test_fit_caps_the_ladder_at_what_fits(small, monkeypatch, extra_draws):
    """The first attempt fits, the ladder's largest would not (its draws reach 6400 per chain,
    its tuning 3200, and nutpie holds the tuning draws too): the policy handed to the repair
    loop caps tuning and draws so that every attempt fits in the available memory."""
    spec = poolwise.build_model(FORMULA, small)
    cfg = SamplerConfig(chains=4, tune=100, draws=200, seed=1)
    first = planning.memory_plan(spec, cfg)
    avail = first.first_attempt + first.per_draw * 4 * extra_draws
    policy = _policy_handed_to_repair(small, monkeypatch, avail)
    top_draws = fit_module._ladder_draws(policy, 200, True)
    top_tune = fit_module._ladder_tune(policy, 100, True)
    assert 200 < top_draws < 6400 and 100 < top_tune < 3200
    ladder = planning.memory_plan(spec, cfg, max_draws=top_draws, max_tune=top_tune)
    assert ladder.ladder <= avail
    # and not needlessly small: a few more draws and tuning draws per chain would not fit
    bigger = planning.memory_plan(spec, cfg, max_draws=int(top_draws * 1.02) + 2,
                                  max_tune=int(top_tune * 1.02) + 1)
    assert bigger.ladder > avail


def test_first_attempt_too_large_names_the_flags(small, monkeypatch):
    monkeypatch.setattr(planning, "available_memory_bytes", lambda: 100_000)
    with pytest.raises(SpecError) as info:
        poolwise.fit(FORMULA, small, seed=1, prior_check=False)
    msg = str(info.value)
    for flag in ("--draws", "--chains", "--no-log-likelihood", "exceeds 100.0 kB available"):
        assert flag in msg


def test_memory_error_after_sampling_is_a_clear_error(small, monkeypatch):
    def boom(*a, **k):
        raise MemoryError

    monkeypatch.setattr(sampling_module, "_log_likelihood_group", boom)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(SpecError,
                           match="ran out of memory after sampling.*--no-log-likelihood"):
            poolwise.fit(FORMULA, small, chains=4, tune=100, draws=100, seed=1, repair=False,
                         parameterization="noncentered", prior_check=False)


def test_cli_memory_error_exit_3(small, tmp_path, monkeypatch, capsys):
    path = tmp_path / "d.csv"
    small.to_csv(path, index=False)
    monkeypatch.setattr(planning, "available_memory_bytes", lambda: 100_000)
    # with --log-likelihood it is saved, so the plan includes it and names the flag
    rc = main(["fit", str(path), "-f", FORMULA, "--seed", "1", "--log-likelihood",
               "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 3
    assert "error:" in err and "--no-log-likelihood" in err and "Traceback" not in err


@pytest.mark.parametrize("flag", [None, "--no-log-likelihood"])
def test_cli_no_log_likelihood(small, tmp_path, capsys, flag):
    """fit.nc holds the draws and the design; the log-likelihood is stored only on request."""
    path = tmp_path / "d.csv"
    small.to_csv(path, index=False)
    out = tmp_path / "out"
    rc = main(["fit", str(path), "-f", FORMULA, "--seed", "1", "--tune", "200", "--draws",
               "200", *([flag] if flag else []), "--out", str(out), "-q"])
    assert rc in (0, 1)
    loaded = poolwise.load_fit(out)
    assert "log_likelihood" not in loaded.idata.children
    assert "posterior" in loaded.idata.children
    # the prior-sensitivity check still ran (it needs only the cells)
    assert loaded.diagnosis.sensitivity
    assert np.isfinite(list(loaded.diagnosis.sensitivity.values())[0]).all()


def test_cli_log_likelihood_on_request_equals_the_recomputed_one(small, tmp_path):
    """--log-likelihood stores the per-pattern values; LOO of a fit saved without them
    recomputes the same numbers from the draws."""
    from poolwise.model.likelihood import log_likelihood_group

    path = tmp_path / "d.csv"
    small.to_csv(path, index=False)
    args = ["fit", str(path), "-f", FORMULA, "--seed", "1", "--tune", "200", "--draws", "200",
            "-q"]
    assert main([*args, "--log-likelihood", "--out", str(tmp_path / "with")]) in (0, 1)
    assert main([*args, "--out", str(tmp_path / "without")]) in (0, 1)
    with_ll = poolwise.load_fit(tmp_path / "with")
    without = poolwise.load_fit(tmp_path / "without")
    stored = with_ll.idata["log_likelihood"].to_dataset()
    assert "log_likelihood" not in without.idata.children
    again = log_likelihood_group(without.spec, without.idata.posterior.to_dataset())
    for name in stored.data_vars:
        np.testing.assert_allclose(again[name].values, stored[name].values, rtol=1e-12, atol=0)


def test_trace_on_disk_in_the_plan(small, monkeypatch):
    """A large trace (LARGE_TRACE_BYTES or more) goes to disk with float32 group-level totals:
    neither nutpie's trace copy of the draws nor its tuning draws count in memory then, and
    the totals take 4 bytes; below it, 8 bytes and both copies count."""
    from poolwise.engine import sampler as S

    spec = poolwise.build_model(FORMULA, small)
    cfg = SamplerConfig(chains=4, tune=1000, draws=1000, seed=1)
    n = planning.stored_values_per_draw(spec)
    n_tot = sum(t.group.n_levels * t.group.n_coefs for t in spec.terms)
    n_pat = row_patterns(spec.design).n_patterns
    mem = planning.memory_plan(spec, cfg, log_likelihood=True)
    assert not mem.trace_on_disk and mem.trace_bytes == 0 and mem.disk_free is None
    tuning = 8 * planning.TUNING_COPIES * n * 4 * 1000
    temp = mem.first_attempt - 4 * 1000 * mem.per_draw - tuning
    monkeypatch.setattr(S, "LARGE_TRACE_BYTES", S.trace_bytes(n, 4, 2000))  # exactly this fit
    disk = planning.memory_plan(spec, cfg, log_likelihood=True)
    stored = 4 * n_tot + 8 * (n - n_tot)
    assert disk.trace_on_disk and disk.trace_bytes == stored * 4 * 2000
    assert disk.per_draw == (planning.POSTERIOR_COPIES - 1) * stored + 8 * (
        planning.STATS_PER_DRAW + n_pat)
    assert disk.first_attempt == 4 * 1000 * disk.per_draw + temp
    assert disk.disk_free is not None and disk.temp_dir
    # fewer iterations than the threshold: in memory again
    assert not planning.memory_plan(spec, SamplerConfig(chains=4, tune=999, draws=1000)) \
        .trace_on_disk


def test_no_room_for_the_trace_on_disk_names_tmpdir(small, monkeypatch, tmp_path):
    import shutil
    import tempfile
    from collections import namedtuple

    from poolwise.engine import sampler as S

    monkeypatch.setattr(S, "LARGE_TRACE_BYTES", 1)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(SpecError) as info:
        poolwise.fit(FORMULA, small, seed=1, prior_check=False)
    msg = str(info.value)
    for part in ("kept on disk", str(tmp_path), "1.0 kB free", "TMPDIR", "--draws",
                 "--chains"):
        assert part in msg


def test_large_trace_fit_saves_and_loads(small, monkeypatch, tmp_path):
    """The whole fit of a large trace (on disk while sampling, float32 group-level totals):
    the diagnosis, the summary and the prior sensitivity are computed, and the saved fit
    loads back identically (float32 stays float32)."""
    from poolwise.engine import sampler as S
    from poolwise.output.io import load_fit, save_fit

    monkeypatch.setattr(S, "LARGE_TRACE_BYTES", 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f = poolwise.fit(FORMULA, small, chains=2, tune=300, draws=300, seed=3, repair=False,
                         prior_check=False)
    total = f.posterior["a_district"]
    assert total.dtype == np.float32 and f.posterior["Intercept"].dtype == np.float64
    assert np.isfinite(f.summary().loc[:, "mean"]).all()
    assert f.diagnosis.max_rhat < 1.1
    save_fit(f, tmp_path / "out")
    back = load_fit(tmp_path / "out")
    assert back.posterior["a_district"].dtype == np.float32
    np.testing.assert_array_equal(back.posterior["a_district"].values, total.values)
    assert back.summary().equals(f.summary())


def test_a_trace_in_a_tmpfs_folder_counts_in_memory(small, monkeypatch):
    """Where the temporary folder is held in memory (tmpfs), the trace "on disk" counts in
    the memory plan, tuning draws included, and the message says to point TMPDIR to disk."""
    from poolwise.engine import sampler as S

    spec = poolwise.build_model(FORMULA, small)
    cfg = SamplerConfig(chains=4, tune=1000, draws=1000, seed=1)
    monkeypatch.setattr(S, "LARGE_TRACE_BYTES", 1)
    disk = planning.memory_plan(spec, cfg)
    monkeypatch.setattr(planning, "memory_backed", lambda path: True)
    ram = planning.memory_plan(spec, cfg)
    assert ram.temp_in_memory and not disk.temp_in_memory
    assert ram.first_attempt == disk.first_attempt + disk.trace_bytes
    monkeypatch.setattr(planning, "available_memory_bytes", lambda: disk.first_attempt + 1)
    with pytest.raises(SpecError, match="held in memory \\(tmpfs\\) - point TMPDIR"):
        planning.check_run(spec, cfg, warn_settings=False)


def test_memory_backed_reads_the_mount_table(tmp_path):
    with open("/proc/mounts", encoding="utf-8") as fh:
        mounts = [line.split() for line in fh]
    shm = any(m[1] == "/dev/shm" and m[2] == "tmpfs" for m in mounts)
    assert resources.memory_backed("/dev/shm") == shm
    assert resources.memory_backed(str(tmp_path / "not-yet")) == resources.memory_backed(
        str(tmp_path))
