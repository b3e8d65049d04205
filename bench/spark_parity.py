"""DuckDB and local Spark on the same large Parquet file: identical cells, identical draws.

    PYTHONPATH=src .venv/bin/python bench/spark_parity.py --rows 10000000

Writes the data of ``bench/ingest_bench.py`` (N Bernoulli rows, 1000 groups, a binary and a
3-level predictor) to a temporary folder (or ``--dir``), builds the Design through DuckDB
(``poolwise.data.ingest.FileSource``) and through ``spark.read.parquet`` (local mode, all cores),
compares the cells, then fits ``y ~ x + f + (1 | g)`` both ways with the same seed and
compares every draw. Prints the times of both routes; needs pyspark and Java 17.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest_bench import FORMULA, generate  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--dir", default=None, help="folder for the data (default: a temp folder)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    from pyspark.sql import SparkSession

    import poolwise
    from poolwise.data.design import build_design
    from poolwise.data.ingest import FileSource

    with tempfile.TemporaryDirectory() as tmp:
        path = generate(Path(args.dir or tmp), args.rows, False)
        spark = (SparkSession.builder.master("local[*]").config("spark.ui.enabled", "false")
                 .config("spark.driver.memory", "2g").getOrCreate())
        spark.sparkContext.setLogLevel("ERROR")
        warnings.simplefilter("ignore")
        t = time.perf_counter()
        dd = build_design(FORMULA, FileSource(path))
        t_duck = time.perf_counter() - t
        t = time.perf_counter()
        ds = build_design(FORMULA, spark.read.parquet(path))
        t_spark = time.perf_counter() - t
        cells = (np.array_equal(dd.y, ds.y) and np.array_equal(dd.n, ds.n)
                 and np.array_equal(dd.X, ds.X) and np.array_equal(dd.row_y, ds.row_y)
                 and all(np.array_equal(a.codes, b.codes)
                         for a, b in zip(dd.groups, ds.groups, strict=True)))
        t = time.perf_counter()
        fd = poolwise.fit(FORMULA, FileSource(path), seed=args.seed)
        f_duck = time.perf_counter() - t
        t = time.perf_counter()
        fs = poolwise.fit(FORMULA, spark.read.parquet(path), seed=args.seed)
        f_spark = time.perf_counter() - t
        draws = all(np.array_equal(fd.posterior[v].values, fs.posterior[v].values)
                    for v in fd.posterior.data_vars)
        spark.stop()
    print(f"rows {dd.n_rows:,} (Spark {ds.n_rows:,}), cells {dd.n_cells:,} (Spark "
          f"{ds.n_cells:,}), identical cells: {cells}")
    print(f"design: DuckDB {t_duck:.1f} s, Spark {t_spark:.1f} s (JVM start included)")
    print(f"fit (seed {args.seed}): DuckDB {f_duck:.1f} s, Spark {f_spark:.1f} s; status "
          f"{'OK' if fd.ok else 'NOT OK'} / {'OK' if fs.ok else 'NOT OK'}; identical draws: "
          f"{draws}")
    return 0 if cells and draws else 1


if __name__ == "__main__":
    raise SystemExit(main())
