"""Report benchmark: ``poolwise report DIR`` of a fit with many groups.

    PYTHONPATH=src .venv/bin/python bench/report_bench.py                  # 20,000 groups
    PYTHONPATH=src .venv/bin/python bench/report_bench.py --groups 5000 --work /tmp/rb
    PYTHONPATH=src .venv/bin/python bench/report_bench.py --work /tmp/rb --repeat 3

Writes ``GROUPS`` groups x ``ROWS`` Bernoulli rows with one numeric predictor (fixed seed)
to ``WORK/data.csv``, fits ``y ~ x + (1 | g)`` once with ``poolwise fit --seed 3 --out
WORK/fit`` (defaults otherwise: 4 chains x (1000 tune + 1000 draws); reused when the folder
is there), then times ``poolwise report WORK/fit -o WORK/report-N.html`` under
``/usr/bin/time -v``, ``--repeat`` times, and prints the wall time, the peak RSS and the
size of each report. The target (docs/reliability.md, P.4): at most 20 s and 1 GB for
20,000 groups.

Numbers depend on the machine: record its cores and load with them (``uptime``).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd


def write_data(path: Path, groups: int, rows: int, seed: int = 1) -> None:
    rng = np.random.default_rng(seed)
    a = rng.normal(-0.3, 0.8, groups)
    g = np.repeat(np.arange(groups), rows)
    x = rng.normal(size=groups * rows)
    p = 1 / (1 + np.exp(-(a[g] + 0.4 * x)))
    y = (rng.random(groups * rows) < p).astype(int)
    pd.DataFrame({"y": y, "x": x.round(3), "g": g}).to_csv(path, index=False)


def timed(argv: list[str]) -> tuple[float, float, int]:
    """(wall seconds, peak RSS in MB, exit code) of ``python -m poolwise.cli ARGV``."""
    cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "poolwise.cli", *argv]
    run = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", run.stderr)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", run.stderr)
    if wall is None or rss is None:
        raise RuntimeError(f"no timing from /usr/bin/time:\n{run.stderr[-2000:]}")
    secs = 0.0
    for part in wall.group(1).split(":"):
        secs = secs * 60 + float(part)
    return secs, int(rss.group(1)) / 1024, run.returncode


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--groups", type=int, default=20_000)
    ap.add_argument("--rows", type=int, default=5, help="Bernoulli rows per group")
    ap.add_argument("--work", default="bench/.report", help="folder for data, fit, reports")
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    data, fit = work / "data.csv", work / "fit"
    if not data.exists():
        write_data(data, args.groups, args.rows)
    if not (fit / "poolwise.json").exists():
        secs, mb, rc = timed(["fit", str(data), "-f", "y ~ x + (1 | g)", "--seed", "3",
                              "--out", str(fit), "-q"])
        print(f"fit: {secs:.1f} s, peak RSS {mb:.0f} MB (exit {rc})")
    print(f"{args.groups:,} groups x {args.rows} rows; {os.cpu_count()} cores, load "
          f"{os.getloadavg()[0]:.1f}")
    print("run  wall s  peak RSS MB  report MB")
    for i in range(args.repeat):
        out = work / f"report-{i}.html"
        secs, mb, rc = timed(["report", str(fit), "-o", str(out)])
        if rc != 0:
            raise SystemExit(f"poolwise report exited {rc}")
        print(f"{i:>3}  {secs:6.1f}  {mb:11.0f}  {out.stat().st_size / 1e6:9.2f}")


if __name__ == "__main__":
    main()
