"""Shared fixtures. Seeds are fixed per test; warnings are errors (pyproject)."""

from __future__ import annotations

import os

import matplotlib
import pandas as pd
import pytest

matplotlib.use("Agg")
os.environ.setdefault("MPLBACKEND", "Agg")

from poolwise.datasets import example_path  # noqa: E402


@pytest.fixture(scope="session")
def bangladesh() -> pd.DataFrame:
    return pd.read_csv(example_path("bangladesh"), sep=";")


@pytest.fixture(scope="session")
def bangladesh_first3(bangladesh: pd.DataFrame) -> pd.DataFrame:
    """The seed's failing case: the first three districts (117, 20 and 2 women)."""
    return bangladesh[bangladesh["district"].isin([1, 2, 3])].reset_index(drop=True)
