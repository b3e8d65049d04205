"""Reproducibility (docs/reliability.md G1, G2).

* The same seed gives bitwise-identical draws and sample stats in separate processes, with
  sequential (cores=1) and parallel (cores=2) chains, and with the two ways of handing the
  density to nutpie: the "cfunc" engine (numba C callbacks through nutpie's *private*
  compiled-model interface, ``nutpie._lib.PyMcModel``) and the public "pyfunc" engine. The
  last check pins the private interface: a nutpie upgrade that changes it fails here.
* Different seeds give different draws whose summaries agree within z < 4, with
  z = |m1 - m2| / sqrt(MCSE1^2 + MCSE2^2).

Promise (and its limit): bitwise reproducibility holds for the same versions and platform
(the versions are recorded in the fit's ``poolwise_versions`` attribute); across platforms
only the statistical agreement is promised.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import xarray as xr
from arviz_stats.base import array_stats

import poolwise

FORMULA = "use.contraception ~ 1 + (1 | district)"
SLOPES = "use.contraception ~ 1 + urban + (1 + urban | district)"
SEED = 42
GROUPS = ("posterior", "sample_stats", "log_likelihood")
_SKIP_STATS = {"divergence_message"}  # strings (NaN when no divergence), not draws


def _arrays(fit: poolwise.Fit) -> dict[str, np.ndarray]:
    out = {}
    for group in GROUPS:
        if group not in fit.idata.children:
            continue
        ds = fit.idata[group].to_dataset()
        for name, da in ds.data_vars.items():
            if name not in _SKIP_STATS:
                out[f"{group}/{name}"] = da.values
    return out


def _assert_bitwise_equal(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    assert any(k.startswith("posterior/") for k in a)
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        assert np.array_equal(a[key], b[key], equal_nan=a[key].dtype.kind == "f"), key


_CHILD = textwrap.dedent(
    """
    import sys, numpy as np, poolwise
    fit = poolwise.fit({formula!r}, poolwise.load_example(), seed={seed})
    out = {{}}
    for group in {groups!r}:
        ds = fit.idata[group].to_dataset()
        for name, da in ds.data_vars.items():
            if name not in {skip!r}:
                out[group + "/" + name] = da.values
    np.savez(sys.argv[1], **out)
    """
)


@pytest.fixture(scope="module")
def bangladesh_fit() -> poolwise.Fit:
    return poolwise.fit(FORMULA, poolwise.load_example(), seed=SEED)


def test_same_seed_same_draws_in_separate_processes(bangladesh_fit, tmp_path):
    code = _CHILD.format(formula=FORMULA, seed=SEED, groups=GROUPS, skip=_SKIP_STATS)
    paths = [tmp_path / f"run{i}.npz" for i in range(2)]
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(p)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for p in paths
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]
    runs = []
    for p in paths:
        with np.load(p, allow_pickle=False) as z:
            runs.append({k: z[k] for k in z.files})
    _assert_bitwise_equal(runs[0], runs[1])
    _assert_bitwise_equal(runs[0], _arrays(bangladesh_fit))


@pytest.mark.parametrize("cores", [1, 2])
def test_sequential_and_parallel_chains_give_the_same_draws(bangladesh_fit, cores):
    fit = poolwise.fit(FORMULA, poolwise.load_example(), seed=SEED, cores=cores)
    assert fit.config.cores == cores
    _assert_bitwise_equal(_arrays(fit), _arrays(bangladesh_fit))


def test_private_cfunc_engine_matches_public_pyfunc_engine(bangladesh_fit):
    fit = poolwise.fit(FORMULA, poolwise.load_example(), seed=SEED, engine="pyfunc")
    assert bangladesh_fit.config.engine == "cfunc" and fit.config.engine == "pyfunc"
    _assert_bitwise_equal(_arrays(fit), _arrays(bangladesh_fit))


def test_engines_match_on_correlated_slopes(bangladesh):
    """Fixed slope, correlated varying intercept and slope (LKJ), standardized predictor:
    the other branches of the density, through both engines."""
    data = bangladesh[bangladesh["district"] <= 12]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", poolwise.ConvergenceWarning)  # short chains; not the point
        fits = [
            poolwise.fit(SLOPES, data, seed=7, engine=engine, draws=300, tune=400, repair=False,
                         parameterization="noncentered")
            for engine in ("cfunc", "pyfunc")
        ]
    _assert_bitwise_equal(_arrays(fits[0]), _arrays(fits[1]))


def _z_table(a: xr.Dataset, b: xr.Dataset) -> dict[str, float]:
    """Largest z of means and of sds over every scalar component of every variable."""
    worst: dict[str, float] = {"mean": 0.0, "sd": 0.0}
    for name, da in a.data_vars.items():
        x = da.transpose("chain", "draw", ...).values
        x = x.reshape(x.shape[0], x.shape[1], -1)
        y = b[name].transpose("chain", "draw", ...).values.reshape(x.shape)
        for i in range(x.shape[-1]):
            xi, yi = x[..., i], y[..., i]
            for stat, f in (("mean", np.mean), ("sd", lambda v: np.std(v, ddof=1))):
                se = np.hypot(array_stats.mcse(xi, method=stat), array_stats.mcse(yi, method=stat))
                worst[stat] = max(worst[stat], float(abs(f(xi) - f(yi)) / se))
    return worst


def test_different_seeds_agree_within_mcse(bangladesh_fit):
    other = poolwise.fit(FORMULA, poolwise.load_example(), seed=SEED + 1)
    a, b = bangladesh_fit.posterior, other.posterior
    assert not np.array_equal(a["a_district"].values, b["a_district"].values)
    worst = _z_table(a, b)
    assert worst["mean"] < 4.0, worst
    assert worst["sd"] < 4.0, worst
