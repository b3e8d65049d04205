"""Shared fixtures. Seeds are fixed per test; warnings are errors (pyproject)."""

from __future__ import annotations

import os

import matplotlib
import numpy as np
import pandas as pd
import pytest
import xarray as xr

matplotlib.use("Agg")
os.environ.setdefault("MPLBACKEND", "Agg")

from poolwise.data.datasets import example_path  # noqa: E402


@pytest.fixture(scope="session")
def bangladesh() -> pd.DataFrame:
    return pd.read_csv(example_path("bangladesh"), sep=";")


@pytest.fixture(scope="session")
def bangladesh_first3(bangladesh: pd.DataFrame) -> pd.DataFrame:
    """The seed's failing case: the first three districts (117, 20 and 2 women)."""
    return bangladesh[bangladesh["district"].isin([1, 2, 3])].reset_index(drop=True)


@pytest.fixture(scope="session")
def fd_gradient():
    """Central finite differences of the compiled log density: ``fd_gradient(packed, x, h)``."""
    from poolwise.engine import density as D

    def gradient(packed, x: np.ndarray, h: float = 1e-6) -> np.ndarray:
        fd = np.empty(packed.dim)
        scratch = np.empty(packed.dim)
        for i in range(packed.dim):
            e = np.zeros(packed.dim)
            e[i] = h
            fd[i] = (
                D.logp_grad(x + e, scratch, packed.ib, packed.fb)
                - D.logp_grad(x - e, scratch, packed.ib, packed.fb)
            ) / (2 * h)
        return fd

    return gradient


@pytest.fixture(scope="session")
def clipped_texts():
    """``clipped_texts(fig)``: every title, axis label and legend text of a figure that
    reaches outside it (a clipped title), drawn at the figure's own size."""

    def clipped(fig) -> list[str]:
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        box = fig.bbox
        texts = [fig._suptitle] if fig._suptitle is not None else []
        for ax in fig.axes:
            texts += [ax.title, ax.xaxis.label, ax.yaxis.label]
        for leg in [*fig.legends, *(ax.get_legend() for ax in fig.axes)]:
            if leg is not None:
                texts += list(leg.get_texts())
        out = []
        for t in texts:
            if not t.get_text() or not t.get_visible():
                continue
            e = t.get_window_extent(renderer)
            if e.x0 < box.x0 - 1 or e.x1 > box.x1 + 1 or e.y0 < box.y0 - 1 or e.y1 > box.y1 + 1:
                out.append(t.get_text())
        return out

    return clipped


def stand_in_run_nuts(packed, config):
    """Random draws of the right shape and sign instead of NUTS."""
    rng = np.random.default_rng(0)
    C, D = config.chains, config.draws
    data = {}
    for v in packed.variables:
        draws = rng.normal(size=(C, D, v.size) if v.dims else (C, D))
        if v.kind == "sd":
            draws = np.abs(draws) + 0.1
        elif v.kind == "cor":
            draws = np.tanh(draws)
        data[v.name] = (("chain", "draw", *v.dims), draws)
    coords: dict = {"chain": np.arange(C), "draw": np.arange(D)}
    coords.update({k: np.asarray(vals, dtype=object) for k, vals in packed.coords.items()})
    post = xr.Dataset(data, coords=coords)
    stats = xr.Dataset(
        {"diverging": (("chain", "draw"), np.zeros((C, D), dtype=bool))},
        coords={"chain": np.arange(C), "draw": np.arange(D)},
    )
    return xr.DataTree.from_dict({"posterior": post, "sample_stats": stats}), 0.0
