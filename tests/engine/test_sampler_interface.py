"""The sampler adapter's guards around nutpie: the private interface check and the arviz alias."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from poolwise.engine import sampler as S
from poolwise.errors import PoolwiseWarning


def _tiny() -> pd.DataFrame:
    rng = np.random.default_rng(3)
    g = np.repeat(np.arange(6), 15)
    y = rng.binomial(1, 0.3 + 0.1 * g / 5)
    return pd.DataFrame({"y": y, "g": g})


def _draws(**kwargs):
    import poolwise

    fit = poolwise.fit("y ~ 1", _tiny(), chains=4, tune=300, draws=300, seed=5,
                       repair=False, log_likelihood=False, **kwargs)
    assert fit.ok
    return fit.idata.posterior["Intercept"].values


def test_interface_check_accepts_the_pinned_nutpie() -> None:
    usable, why = S.cfunc_interface()
    assert usable, why


def test_missing_interface_falls_back_to_the_public_path(monkeypatch: pytest.MonkeyPatch) -> None:
    reference = _draws()
    from nutpie import _lib

    monkeypatch.setattr(S, "_INTERFACE", None)
    monkeypatch.delattr(_lib, "PyMcModel")
    usable, why = S.cfunc_interface()
    assert not usable and "PyMcModel" in why
    with pytest.warns(PoolwiseWarning, match="from_pyfunc"):
        fallback = _draws()
    # The public path gives the same draws as the C callbacks (tests/test_reproducibility.py).
    np.testing.assert_array_equal(fallback, reference)
    monkeypatch.setattr(S, "_INTERFACE", None)


def test_untested_nutpie_version_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    import nutpie

    monkeypatch.setattr(S, "_INTERFACE", None)
    monkeypatch.setattr(nutpie, "__version__", "9.9.0")
    usable, why = S.cfunc_interface()
    assert not usable and "9.9.0" in why
    with pytest.warns(PoolwiseWarning, match="9.9.0"):
        _draws()
    monkeypatch.setattr(S, "_INTERFACE", None)


def test_arviz_alias_does_not_leak() -> None:
    """nutpie is imported with arviz-base standing in for arviz; afterwards `import arviz`
    gets the real package and matplotlib.pyplot was never imported on the way."""
    code = (
        "import sys\n"
        "from poolwise.engine.sampler import _import_nutpie\n"
        "_import_nutpie()\n"
        "assert 'nutpie.sample' in sys.modules\n"
        "assert 'arviz' not in sys.modules, 'alias left behind'\n"
        "assert 'matplotlib.pyplot' not in sys.modules\n"
        "import arviz, arviz_base\n"
        "assert arviz is not arviz_base and hasattr(arviz, 'plot_forest')\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_draws_after_tuning_equal_nutpies_own_conversion(monkeypatch: pytest.MonkeyPatch) -> None:
    """run_nuts converts only the draws after tuning from nutpie's raw trace; the posterior and
    the sample statistics equal those of nutpie's own conversion of the whole trace."""
    import importlib
    import types

    import xarray as xr

    import poolwise
    from poolwise.engine.layout import pack

    data = _tiny().assign(x=np.linspace(-1.0, 1.0, 90))
    packed = pack(poolwise.build_model("y ~ x + (1 + x | g)", data))
    config = S.SamplerConfig(chains=2, tune=150, draws=80, seed=9)
    ours, _ = S.run_nuts(packed, config)
    # without nutpie's converter at hand, run_nuts lets nutpie convert the whole trace
    monkeypatch.setattr(S, "importlib", types.SimpleNamespace(import_module=lambda name: object()))
    theirs, _ = S.run_nuts(packed, config)
    monkeypatch.setattr(S, "importlib", importlib)
    assert sorted(ours.children) == sorted(theirs.children) == ["posterior", "sample_stats"]
    for group in ("posterior", "sample_stats"):
        a, b = ours[group].to_dataset(), theirs[group].to_dataset()
        assert a.sizes["draw"] == 80
        xr.testing.assert_identical(a.drop_attrs(), b.drop_attrs())


def _divergent_spec():
    """Two districts of the bangladesh data, centered: divergences at target_accept 0.6."""
    import poolwise
    from poolwise.data.datasets import load_example

    data = load_example("bangladesh").frame
    data = data[data["district"].isin([1, 11])]
    with pytest.warns(Warning):  # two levels: the SD is mostly the prior's
        return poolwise.build_model("use.contraception ~ 1 + (1 | district)", data,
                                    parameterization="centered")


@pytest.mark.parametrize("case", ["divergent", "correlated"])
def test_trace_on_disk_gives_the_same_draws_and_statistics(case, tmp_path, monkeypatch):
    """With nutpie's trace in a temporary zarr store (large models), the posterior and every
    sample statistic equal those of the Arrow trace in memory; the divergence details sit at
    the same draws; the store is removed afterwards."""
    import tempfile

    import xarray as xr

    import poolwise
    from poolwise.engine.layout import pack

    if case == "divergent":
        packed = pack(_divergent_spec())
        config = S.SamplerConfig(chains=3, tune=200, draws=200, seed=3, target_accept=0.6)
    else:
        data = _tiny().assign(x=np.linspace(-1.0, 1.0, 90))
        packed = pack(poolwise.build_model("y ~ x + (1 + x | g)", data))
        config = S.SamplerConfig(chains=2, tune=150, draws=80, seed=9)
    memory, _ = S.run_nuts(packed, config, store="memory")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    disk, _ = S.run_nuts(packed, config, store="disk")
    assert list(tmp_path.iterdir()) == []
    assert sorted(disk.children) == ["posterior", "sample_stats"]
    xr.testing.assert_identical(disk["posterior"].to_dataset().drop_attrs(),
                                memory["posterior"].to_dataset().drop_attrs())
    a, b = disk["sample_stats"].to_dataset(), memory["sample_stats"].to_dataset()
    assert sorted(a.data_vars) == sorted(b.data_vars)
    diverging = b["diverging"].values
    if case == "divergent":
        assert (diverging.sum(axis=1) > 0).all()
    details = ["divergence_message", "divergence_draw", "divergence_energy_error"]
    xr.testing.assert_identical(a.drop_vars(details).drop_attrs(),
                                b.drop_vars(details).drop_attrs())
    assert a.attrs["inference_library"] == "nutpie"
    # the divergence details: the Arrow trace's at each divergent draw, or none where nutpie's
    # store lost that chain's entries (S._per_draw); no entry at the other draws
    msg_a, msg_b = a["divergence_message"].values, b["divergence_message"].values
    kept = np.array([[m is not None and m == m for m in row] for row in msg_a])
    assert not kept[~diverging].any()
    assert (msg_a[kept] == msg_b[kept]).all()
    for name in details[1:]:
        np.testing.assert_array_equal(a[name].values[kept], b[name].values[kept])
        np.testing.assert_array_equal(a[name].values[~kept], S._DIVERGENCE_STATS[name])


def test_divergence_entries_go_to_their_draws():
    diverging = np.array([[False, True, False, True], [False] * 4, [True, False, False, False]])
    records = np.array([[7, 9], [0, 0], [3, 0]], dtype=np.uint64)
    out = S._per_draw(records, diverging, np.uint64(0))
    np.testing.assert_array_equal(out, [[0, 7, 0, 9], [0] * 4, [3, 0, 0, 0]])
    # a store that lost entries (fewer columns than a chain's divergences): none for that chain
    lost = S._per_draw(np.array([["a"], [""], ["b"]]), diverging, None)
    assert lost[0].tolist() == [None] * 4 and lost[2].tolist() == ["b", None, None, None]


def test_auto_trace_store_follows_the_trace_size():
    per_value = 8 * 4 * 2000  # 4 chains x (1000 tuning + 1000) draws
    assert not S.trace_on_disk(S.LARGE_TRACE_BYTES // per_value - 1, 4, 2000)
    assert S.trace_on_disk(S.LARGE_TRACE_BYTES // per_value + 1, 4, 2000)
    assert S.trace_on_disk(10, 4, 2000, "disk") and not S.trace_on_disk(10**9, 4, 2000, "memory")


@pytest.mark.parametrize("store", ["memory", "disk"])
def test_large_trace_stores_totals_as_float32(store, monkeypatch):
    """A large trace stores the group-level totals as float32: the same draws (the sampler
    works in float64 either way), each rounded to float32; everything else is float64."""
    import poolwise
    from poolwise.engine.layout import pack

    data = _tiny().assign(x=np.linspace(-1.0, 1.0, 90))
    packed = pack(poolwise.build_model("y ~ x + (1 + x | g)", data))
    config = S.SamplerConfig(chains=2, tune=100, draws=60, seed=4)
    ref, _ = S.run_nuts(packed, config, store=store)
    monkeypatch.setattr(S, "LARGE_TRACE_BYTES", 1)
    small, _ = S.run_nuts(packed, config, store=store)
    kinds = {v.name: v.kind for v in packed.variables}
    for name, kind in kinds.items():
        a, b = small["posterior"][name].values, ref["posterior"][name].values
        if kind == "total":
            assert a.dtype == np.float32 and b.dtype == np.float64
            np.testing.assert_array_equal(a, b.astype(np.float32))
        else:
            assert a.dtype == np.float64
            np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(small["sample_stats"]["lp"].values,
                                  ref["sample_stats"]["lp"].values)


class _Background:
    """nutpie's background sampler, as far as run_nuts uses it; its wait is interrupted."""

    def __init__(self) -> None:
        self.cancelled = False

    def wait(self):
        raise KeyboardInterrupt

    def cancel(self) -> None:
        self.cancelled = True


def test_an_interrupt_while_nutpie_samples_cancels_it_and_propagates(monkeypatch):
    """nutpie's blocking sample() catches Ctrl-C and returns the draws so far, which poolwise
    took for a finished fit; run_nuts samples in the background and waits itself instead."""
    import nutpie

    from poolwise.engine.layout import pack
    from poolwise.model.spec import build_model

    started: list[dict] = []
    background = _Background()

    def sample(compiled, **kwargs):
        started.append(kwargs)
        return background

    monkeypatch.setattr(nutpie, "sample", sample)
    packed = pack(build_model("y ~ 1 + (1 | g)", _tiny()))
    with pytest.raises(KeyboardInterrupt):
        S.run_nuts(packed, S.SamplerConfig(chains=2, tune=10, draws=10, seed=1))
    assert started and started[0]["blocking"] is False
    assert background.cancelled


@pytest.mark.slow
@pytest.mark.parametrize("store", ["memory", "disk"])
def test_ctrl_c_stops_real_sampling_at_once(store, tmp_path, monkeypatch):
    """A real SIGINT while nutpie samples (2 million draws): KeyboardInterrupt within seconds,
    and the trace's temporary folder is gone."""
    import os
    import signal
    import tempfile
    import threading
    import time

    from poolwise.engine.layout import pack
    from poolwise.model.spec import build_model

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)
    packed = pack(build_model("y ~ 1 + (1 | g)", _tiny()))
    S.run_nuts(packed, S.SamplerConfig(chains=2, tune=10, draws=10, seed=1))  # compiled
    sent: list[float] = []

    def interrupt() -> None:
        time.sleep(3.0)
        sent.append(time.perf_counter())
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        S.run_nuts(packed, S.SamplerConfig(chains=4, tune=100, draws=2_000_000, seed=1),
                   store=store)
    # "At once" against the full run, which would take over 40 s in memory and over an hour
    # on disk (0.65 ms per draw and chain for this model). The disk store flushes its open
    # chunks when cancelled: 1.2 s on an idle machine, 6.7 s on the 2-core CI with the other
    # test worker busy, so the bound is 20 s, not a speed claim.
    assert sent and time.perf_counter() - sent[0] < 20.0
    assert list(tmp_path.iterdir()) == []
