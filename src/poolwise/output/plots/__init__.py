"""Figures for poolwise fits and comparisons.

Every function returns a :class:`matplotlib.figure.Figure` (drawn with the Agg canvas) and
never shows it. matplotlib and arviz-plots are imported only inside the functions, so
``import poolwise.output.plots`` costs nothing; the functions are looked up lazily in the
submodules below (``from poolwise.output.plots import plot_trace`` works).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

#: submodules searched, in order, for a public name
_SUBMODULES = ("diagnostic", "pooling", "estimates")


def __getattr__(name: str) -> Any:
    if name.startswith("_"):
        raise AttributeError(name)
    for sub in _SUBMODULES:
        try:
            mod = import_module(f"{__name__}.{sub}")
        except ModuleNotFoundError as err:
            if err.name == f"{__name__}.{sub}":
                continue
            raise
        if name in getattr(mod, "__all__", ()):
            return getattr(mod, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
