"""How long validation takes on 100 000 rows (issue: bad input is reported in < 1 s).

Run: .venv/bin/python bench/validation_bench.py
Times poolwise's checks alone (no sampler) for clean data and several bad inputs placed in
the last rows, median of 5 runs each.
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import pandas as pd

from poolwise.data.design import build_design
from poolwise.errors import PoolwiseError

N = 100_000


def frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({
        "y": rng.integers(0, 2, N),
        "x": rng.normal(size=N),
        "s": rng.integers(0, 5, N),
        "n": np.full(N, 5),
        "g": rng.integers(1, 200, N),
    })


def cases() -> dict[str, tuple[str, pd.DataFrame]]:
    base = frame()
    out = {"clean (Bernoulli)": ("y ~ x + (1 | g)", base)}
    bad = base.copy()
    bad.loc[N - 3 :, "y"] = 2
    out["outcome 2"] = ("y ~ x + (1 | g)", bad)
    bad = base.copy().astype({"x": float})
    bad.loc[N - 2, "x"] = np.nan
    out["missing predictor"] = ("y ~ x + (1 | g)", bad)
    bad = base.copy()
    bad.loc[N - 1, "s"] = 9
    out["successes > trials"] = ("s | trials(n) ~ x + (1 | g)", bad)
    bad = base.copy()
    bad.loc[N - 1, "x"] = np.inf
    out["infinite predictor"] = ("y ~ x + (1 | g)", bad)
    return out


def main() -> None:
    print(f"{'case':24s} median s (5 runs), {N} rows")
    for name, (formula, data) in cases().items():
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            try:
                build_design(formula, data)
            except PoolwiseError:
                pass
            times.append(time.perf_counter() - t0)
        print(f"{name:24s} {statistics.median(times):.3f}")


if __name__ == "__main__":
    main()
