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
