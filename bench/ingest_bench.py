"""Out-of-core ingestion: time and peak memory of validating and counting N Bernoulli rows into
cells with DuckDB (poolwise.data.ingest), up to the Design the sampler gets.

Data: N rows, 1000 groups, a binary predictor ``x`` and a 3-level predictor ``f`` (so at most
1000 x 2 x 3 = 6000 cells and 12000 patterns), written as Parquet (one file, or a glob of
files of 10M rows each). Each measurement runs in a fresh process; peak RSS is that process's
maximum resident set size.

    python bench/ingest_bench.py --rows 10000000
    python bench/ingest_bench.py --rows 100000000 --glob       # 10 files of 10M rows
    python bench/ingest_bench.py --rows 10000000 --pandas      # also the pandas path
    python bench/ingest_bench.py --rows 10000000 --spark       # also local Spark

"design s" is reading + validating + counting + build_design; "import s" is importing
poolwise (which imports the sampler stack) and pandas.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHUNK = 10_000_000
FORMULA = "y ~ x + f + (1 | g)"


def generate(folder: Path, rows: int, glob: bool, seed: int = 1) -> str:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    a = rng.normal(0.0, 0.7, 1000)
    levels = np.array(["low", "mid", "high"])
    effect = np.array([0.0, 0.3, -0.4])

    def chunk(n: int) -> pa.Table:
        g = rng.integers(0, 1000, n, dtype=np.int16)
        x = rng.integers(0, 2, n, dtype=np.int8)
        fi = rng.integers(0, 3, n, dtype=np.int8)
        eta = -0.5 + a[g] + 0.8 * x + effect[fi]
        y = (rng.random(n) < 1.0 / (1.0 + np.exp(-eta))).astype(np.int8)
        f = pa.DictionaryArray.from_arrays(pa.array(fi), pa.array(levels))
        return pa.table({"y": y, "x": x, "f": f, "g": g})

    if glob:
        left, i = rows, 0
        while left > 0:
            n = min(CHUNK, left)
            pq.write_table(chunk(n), folder / f"part{i:03d}.parquet", row_group_size=1 << 20)
            left, i = left - n, i + 1
        return str(folder / "part*.parquet")
    path = folder / "data.parquet"
    writer = None
    left = rows
    while left > 0:
        n = min(CHUNK, left)
        t = chunk(n)
        if writer is None:
            writer = pq.ParquetWriter(path, t.schema)
        writer.write_table(t, row_group_size=1 << 20)
        left -= n
    assert writer is not None
    writer.close()
    return str(path)


CHILD = r"""
import json, sys, time, warnings, resource
t0 = time.perf_counter()
from poolwise.data.design import build_design
from poolwise.data.ingest import FileSource
import pandas as pd
t1 = time.perf_counter()
path, route = sys.argv[1], sys.argv[2]
if route == "duckdb":
    data = FileSource(path)
elif route == "spark":
    from pyspark.sql import SparkSession
    spark = (SparkSession.builder.master("local[*]").config("spark.ui.enabled", "false")
             .config("spark.driver.memory", "2g").getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    data = spark.read.parquet(path)
else:
    data = pd.read_parquet(path)
t2 = time.perf_counter()
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    d = build_design("FORMULA", data)
t3 = time.perf_counter()
print(json.dumps({
    "route": route, "rows": d.n_rows, "patterns": len(d.row_y), "cells": d.n_cells,
    "groups": d.groups[0].n_levels, "import_s": t1 - t0, "read_s": t2 - t1,
    "design_s": t3 - t2, "total_s": t3 - t0,
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
}))
""".replace("FORMULA", FORMULA)


def measure(path: str, route: str) -> dict:
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", CHILD, path, route], capture_output=True,
                         text=True, env=env, check=True)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["wall_s"] = time.perf_counter() - t0
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--glob", action="store_true", help="write files of 10M rows, read a glob")
    ap.add_argument("--pandas", action="store_true", help="also time the pandas path")
    ap.add_argument("--spark", action="store_true",
                    help="also time local Spark (RSS: the Python driver only; the JVM is apart)")
    ap.add_argument("--dir", default=None, help="folder for the data (default: a temp folder)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        t0 = time.perf_counter()
        path = generate(Path(tmp), args.rows, args.glob)
        gen_s = time.perf_counter() - t0
        size = sum(p.stat().st_size for p in Path(tmp).iterdir()) / 1e6
        print(f"generated {args.rows:,} rows as {'a glob' if args.glob else 'one file'} "
              f"({size:.0f} MB) in {gen_s:.1f} s")
        routes = ["duckdb"] + (["spark"] if args.spark else []) + (
            ["pandas"] if args.pandas else []
        )
        print(f"{'route':8} {'rows':>12} {'patterns':>9} {'cells':>6} {'import s':>9} "
              f"{'design s':>9} {'process s':>10} {'peak RSS MB':>12}")
        for route in routes:
            r = measure(path, route)
            print(f"{route:8} {r['rows']:>12,} {r['patterns']:>9,} {r['cells']:>6,} "
                  f"{r['import_s']:>9.2f} {r['read_s'] + r['design_s']:>9.2f} "
                  f"{r['wall_s']:>10.2f} {r['peak_rss_mb']:>12.0f}")


if __name__ == "__main__":
    main()
