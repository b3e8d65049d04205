"""The public API is stable: every name in poolwise.__all__ is the same object on every access,
none is a module, and calling a lazily imported function does not replace it (the second
poolwise.predict(fit, new) once raised "'module' object is not callable")."""

from __future__ import annotations

import importlib
import subprocess
import sys
import types
import warnings

import poolwise


def test_every_public_name_is_the_same_object_on_every_access_and_none_is_a_module():
    for name in poolwise.__all__:
        first = getattr(poolwise, name)
        assert not isinstance(first, types.ModuleType), name
        assert getattr(poolwise, name) is first, name


def test_calling_the_lazy_functions_twice_keeps_them_functions(bangladesh_first3):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = poolwise.fit("use.contraception ~ 1 + (1 | district)", bangladesh_first3,
                           seed=2, tune=200, draws=200, prior_sensitivity=False)
    new = bangladesh_first3.head(3)
    for _ in range(2):
        out = poolwise.predict(fit, new)
        assert len(out) == 3
        pp = poolwise.prior_predictive(fit.spec, draws=50, seed=1)
        assert pp.proportions.shape[0] == 50
    for name in ("predict", "prior_predictive", "compare_pooling", "write_report"):
        assert callable(getattr(poolwise, name)) and not isinstance(
            getattr(poolwise, name), types.ModuleType)


def test_no_submodule_shadows_a_public_name():
    """Importing every subpackage (as the lazy imports do) leaves the public names alone."""
    for pkg in ("data", "model", "engine", "inference", "comparison", "output"):
        importlib.import_module(f"poolwise.{pkg}")
    code = ("import poolwise, types;"
            "import poolwise.comparison.predict, poolwise.model.prior_predictive;"
            "bad=[n for n in poolwise.__all__ if isinstance(getattr(poolwise,n),types.ModuleType)];"
            "print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"
