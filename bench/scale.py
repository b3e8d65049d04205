"""Scale benchmark: whole ``poolwise fit`` CLI runs on generated data of growing size.

    PYTHONPATH=src .venv/bin/python bench/scale.py                      # every case
    PYTHONPATH=src .venv/bin/python bench/scale.py --case cont20k --case groups10k
    PYTHONPATH=src .venv/bin/python bench/scale.py --json bench/results/scale.json
    .venv/bin/python bench/scale.py --case cont20k --write-data bench/.data   # CSV only, no fit

Each case writes its data (fixed seed) to a CSV in a temporary folder, then runs
``python -m poolwise.cli fit DATA -f FORMULA --seed 1 --out DIR -q`` (defaults otherwise:
4 chains x (1000 tune + 1000 draws), auto parameterization, repair, log-likelihood saved)
under ``/usr/bin/time -v``, and prints one table:

rows, groups, cells, patterns (distinct cell x outcome rows), wall time of the whole process,
its parts (pilot, sampling, post-processing, from ``result.json``), peak RSS, ``fit.nc`` size
and ns per cell per gradient (the compiled log density alone, timed in this process on the
same design at a random point: one logp+gradient call / cells).

The ratio against the peers is not printed here: ``bench/run.py --model cont20k`` times the
``cont20k`` case against PyMC+nutpie and NumPyro (``bench/peers.py``) on the CSV that
``write_case`` writes (``--write-data DIR`` writes the chosen cases' CSVs and stops).

Numbers depend on the machine: record its cores and load with the table.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parent.parent


def _bern1m(rng: np.random.Generator) -> tuple[pd.DataFrame, str]:
    n, g = 1_000_000, 1000
    grp = rng.integers(0, g, n)
    x = rng.integers(0, 2, n)
    a = rng.normal(-0.5, 0.6, g)
    p = 1 / (1 + np.exp(-(a[grp] + 0.4 * x)))
    return pd.DataFrame({"y": rng.binomial(1, p), "x": x, "g": grp}), "y ~ 1 + x + (1 | g)"


def _crossed(rng: np.random.Generator) -> tuple[pd.DataFrame, str]:
    persons, items = 316, 24  # 7,584 binary answers
    pid = np.repeat(np.arange(persons), items)
    iid = np.tile(np.arange(items), persons)
    th = rng.normal(0, 1.0, persons)
    b = rng.normal(0, 0.8, items)
    p = 1 / (1 + np.exp(-(th[pid] - b[iid])))
    df = pd.DataFrame({"y": rng.binomial(1, p), "person": pid, "item": iid})
    return df, "y ~ 1 + (1 | person) + (1 | item)"


def _continuous(rng: np.random.Generator, n: int, g: int) -> tuple[pd.DataFrame, str]:
    grp = rng.integers(0, g, n)
    x = rng.normal(0, 1, n)
    a = rng.normal(-0.3, 0.5, g)
    p = 1 / (1 + np.exp(-(a[grp] + 0.7 * x)))
    return pd.DataFrame({"y": rng.binomial(1, p), "x": x, "g": grp}), "y ~ 1 + x + (1 | g)"


def _cont20k(rng: np.random.Generator) -> tuple[pd.DataFrame, str]:
    return _continuous(rng, 20_000, 200)


def _cont100k(rng: np.random.Generator) -> tuple[pd.DataFrame, str]:
    return _continuous(rng, 100_000, 1000)


def _groups10k_binomial(rng: np.random.Generator) -> tuple[pd.DataFrame, str]:
    """10k groups, one row each, but a row is 10 trials: the group SD is identified."""
    g = 10_000
    a = rng.normal(-0.2, 0.7, g)
    k = rng.binomial(10, 1 / (1 + np.exp(-a)))
    return (pd.DataFrame({"k": k, "n": 10, "g": np.arange(g)}),
            "k | trials(n) ~ 1 + (1 | g)")


def _groups100k(rng: np.random.Generator) -> tuple[pd.DataFrame, str]:
    g = 100_000
    a = rng.normal(-0.2, 0.7, g)
    grp = np.repeat(np.arange(g), 10)
    p = 1 / (1 + np.exp(-a[grp]))
    return pd.DataFrame({"y": rng.binomial(1, p), "g": grp}), "y ~ 1 + (1 | g)"


def _groups10k(rng: np.random.Generator) -> tuple[pd.DataFrame, str]:
    g = 10_000
    a = rng.normal(-0.2, 0.7, g)
    p = 1 / (1 + np.exp(-a))
    return pd.DataFrame({"y": rng.binomial(1, p), "g": np.arange(g)}), "y ~ 1 + (1 | g)"


CASES: dict[str, tuple[str, Callable[[np.random.Generator], tuple[pd.DataFrame, str]]]] = {
    "bern1m": ("1M Bernoulli rows, 1000 groups, binary predictor", _bern1m),
    "crossed": ("7.6k binary rows, crossed person x item", _crossed),
    "cont20k": ("20k rows, continuous covariate, 200 groups", _cont20k),
    "groups10k": ("10k groups x 1 row (0/1: the group SD is not identified)", _groups10k),
    "groups10k_binomial": ("10k groups x 1 row of 10 trials", _groups10k_binomial),
    "cont100k": ("100k rows, continuous covariate, 1000 groups", _cont100k),
    "groups100k": ("100k groups x 10 rows", _groups100k),
}


def density_ns_per_cell(data: Path, formula: str) -> tuple[int, int, int, float]:
    """(rows, cells, patterns, ns per cell per logp+gradient) of the compiled density."""
    import poolwise
    from poolwise.engine import density as D
    from poolwise.engine.layout import pack

    spec = poolwise.build_model(formula, data, parameterization="noncentered")
    packed = pack(spec)
    x = np.random.default_rng(0).normal(0, 0.3, packed.dim)
    grad = np.empty(packed.dim)
    D.logp_grad(x, grad, packed.ib, packed.fb)  # warm (compiled and cached)
    n = max(20, min(2000, int(2e7 // max(spec.design.n_cells, 1))))
    t0 = time.perf_counter()
    for _ in range(n):
        D.logp_grad(x, grad, packed.ib, packed.fb)
    dt = (time.perf_counter() - t0) / n
    d = spec.design
    keys = np.column_stack([d.row_cell, d.row_y, d.row_n])
    patterns = len(np.unique(keys, axis=0))
    return d.n_rows, d.n_cells, patterns, 1e9 * dt / max(d.n_cells, 1)


#: seed of every case's generator
DATA_SEED = 20261201


def write_case(name: str, path: Path) -> tuple[pd.DataFrame, str]:
    """Generate case ``name`` (fixed seed) and write it to the CSV ``path``; the data frame
    and the formula poolwise fits. bench/run.py and bench/peers.py share data through this."""
    df, formula = CASES[name][1](np.random.default_rng(DATA_SEED))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    df.to_csv(tmp, index=False)
    tmp.replace(path)  # atomic: a concurrent reader never sees half a file
    return df, formula


def run_case(name: str, tmp: Path, extra: list[str], timeout: float, src: Path) -> dict:
    label = CASES[name][0]
    data = tmp / f"{name}.csv"
    df, formula = write_case(name, data)
    rows, cells, patterns, ns = density_ns_per_cell(data, formula)
    groups = int(sum(df[c].nunique() for c in df.columns if c in ("g", "person", "item")))
    out = tmp / f"{name}_out"
    cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "poolwise.cli", "fit", str(data),
           "-f", formula, "--seed", "1", "--out", str(out), "-q", *extra]
    env = dict(os.environ, PYTHONPATH=str(src))
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
        rc, err = proc.returncode, proc.stderr
    except subprocess.TimeoutExpired as e:
        rc = "timeout"
        err = e.stderr.decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
    wall = time.perf_counter() - t0
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", err)
    rss = int(m.group(1)) * 1024 if m else None
    nc = out / "fit.nc"
    timings = {}
    rj = out / "result.json"
    if rj.exists():
        timings = json.loads(rj.read_text()).get("timings", {})
    tail = [ln for ln in err.splitlines() if ln.startswith(("error", "warning"))][:3]
    return {
        "case": name, "label": label, "rows": rows, "groups": groups, "cells": cells,
        "patterns": patterns, "rc": rc, "wall_s": wall, "peak_rss": rss,
        "fit_nc": nc.stat().st_size if nc.exists() else None, "ns_per_cell_grad": ns,
        "pilot_s": timings.get("pilot_s"), "sampling_s": timings.get("sampling_s"),
        "postprocess_s": timings.get("postprocess_s"), "attempts": timings.get("attempts"),
        "messages": tail,
    }


def _fmt(v: float | None, unit: str = "") -> str:
    if v is None:
        return "-"
    if unit == "B":
        return f"{v / 1e6:,.1f} MB"
    return f"{v:,.1f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--case", action="append", choices=list(CASES), help="default: all")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per case")
    ap.add_argument("--json", help="also write the rows as JSON here")
    ap.add_argument("--src", default=str(REPO / "src"),
                    help="the poolwise sources the CLI runs (default: this checkout's src)")
    ap.add_argument("--write-data", metavar="DIR",
                    help="only write the cases' CSVs (DIR/<case>.csv) and exit; no fit")
    ap.add_argument("extra", nargs="*", help="extra flags for `poolwise fit` (after --)")
    args = ap.parse_args(argv)
    names = args.case or list(CASES)
    if args.write_data:
        for name in names:
            path = Path(args.write_data) / f"{name}.csv"
            _, formula = write_case(name, path)
            print(f"{path}  ({formula})")
        return 0
    rows = []
    with tempfile.TemporaryDirectory(prefix="poolwise-scale-") as d:
        for name in names:
            rows.append(run_case(name, Path(d), args.extra, args.timeout, Path(args.src)))
    head = ("case", "rows", "groups", "cells", "patterns", "rc", "wall s", "pilot s",
            "sampling s", "post s", "peak RSS", "fit.nc", "ns/cell/grad")
    table = [head]
    for r in rows:
        table.append((r["case"], f"{r['rows']:,}", f"{r['groups']:,}", f"{r['cells']:,}",
                      f"{r['patterns']:,}", str(r["rc"]), _fmt(r["wall_s"]), _fmt(r["pilot_s"]),
                      _fmt(r["sampling_s"]), _fmt(r["postprocess_s"]), _fmt(r["peak_rss"], "B"),
                      _fmt(r["fit_nc"], "B"), f"{r['ns_per_cell_grad']:.1f}"))
    widths = [max(len(str(row[i])) for row in table) for i in range(len(head))]
    for row in table:
        print("  ".join(str(c).rjust(w) for c, w in zip(row, widths, strict=True)))
    print(f"\n{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end")
    for r in rows:
        for msg in r["messages"]:
            print(f"{r['case']}: {msg}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
