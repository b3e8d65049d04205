"""Two versions of poolwise on the same workloads, interleaved: is one slower?

    .venv/bin/python bench/commits.py --before DIR_A --after DIR_B [--repeats 3]
        [--cases seed,slopes,cont20k,groups10k,compare] [--json PATH]

``DIR_A`` / ``DIR_B``: checkouts of the two versions (``git worktree add /tmp/old <commit>``);
each case runs ``python -m poolwise.cli ...`` as a whole process with ``PYTHONPATH=DIR/src``, the
two versions alternating (A, B, A, B, ...) so that a machine busy with other work slows both
alike. Each version keeps its own numba cache (inside its tree); one untimed warm-up run per
case and version fills it first. Reported per case and version: the median wall time and the
median CPU time of the process (user + system, all threads: less sensitive to other load than
wall time), and the ratios B / A.

Cases (the command lines that exist in both versions):

* ``seed``: ``fit --example bangladesh --seed 1 --quiet`` (the seed model, 60 districts);
* ``slopes``: the same with ``-f "use.contraception ~ urban + (1 + urban | district)"``;
* ``cont20k``: ``fit cont20k.csv -f "y ~ 1 + x + (1 | g)"``: 20,000 rows, a continuous x, 200
  groups (every row its own cell);
* ``groups10k``: ``fit groups10k.csv -f "k | trials(n) ~ 1 + (1 | g)"``: 10,000 groups of one
  binomial row each (the per-level work of the density, the pattern log-likelihood and prior
  sensitivity at 10^4 levels);
* ``compare``: ``compare --example bangladesh --seed 1 --quiet`` (three fits, LOO and
  leave-one-group-out).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd


def _data(folder: Path) -> dict[str, Path]:
    rng = np.random.default_rng(20261206)
    g = rng.integers(0, 200, 20_000)
    x = rng.normal(size=20_000)
    a = rng.normal(-0.3, 0.5, 200)
    y = rng.binomial(1, 1 / (1 + np.exp(-(a[g] + 0.7 * x))))
    cont = folder / "cont20k.csv"
    pd.DataFrame({"y": y, "x": x, "g": g}).to_csv(cont, index=False)
    n = rng.integers(5, 31, 10_000)
    p = 1 / (1 + np.exp(-rng.normal(-0.5, 0.8, 10_000)))
    groups = folder / "groups10k.csv"
    pd.DataFrame({"k": rng.binomial(n, p), "n": n, "g": np.arange(10_000)}).to_csv(
        groups, index=False)
    return {"cont20k": cont, "groups10k": groups}


def cases(files: dict[str, Path]) -> dict[str, list[str]]:
    seed = ["--seed", "1", "--quiet"]
    return {
        "seed": ["fit", "--example", "bangladesh", *seed],
        "slopes": ["fit", "--example", "bangladesh", "-f",
                   "use.contraception ~ urban + (1 + urban | district)", *seed],
        "cont20k": ["fit", str(files["cont20k"]), "-f", "y ~ 1 + x + (1 | g)", *seed],
        "groups10k": ["fit", str(files["groups10k"]), "-f", "k | trials(n) ~ 1 + (1 | g)",
                      *seed],
        "compare": ["compare", "--example", "bangladesh", *seed],
    }


def run_once(tree: Path, argv: list[str]) -> tuple[float, float, int]:
    """Wall and CPU seconds of one whole process, and its exit code."""
    env = dict(os.environ, PYTHONPATH=str(tree / "src"))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "poolwise.cli", *argv], env=env,
                          capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{tree}: {' '.join(argv)} failed ({proc.returncode}):\n"
                         f"{proc.stderr[-2000:]}")
    return wall, cpu, proc.returncode


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--before", required=True, type=Path)
    ap.add_argument("--after", required=True, type=Path)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cases", default="seed,slopes,cont20k,groups10k,compare")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    trees = {"before": args.before.resolve(), "after": args.after.resolve()}
    with tempfile.TemporaryDirectory(prefix="poolwise-bench-") as tmp:
        all_cases = cases(_data(Path(tmp)))
        out: dict[str, dict] = {}
        for name in args.cases.split(","):
            argv = all_cases[name]
            for tree in trees.values():
                run_once(tree, argv)  # warm-up: numba caches, file system
            times: dict[str, list[tuple[float, float]]] = {k: [] for k in trees}
            for _ in range(args.repeats):
                for key, tree in trees.items():
                    wall, cpu, _ = run_once(tree, argv)
                    times[key].append((wall, cpu))
            row = {k: {"wall_s": statistics.median(w for w, _ in v),
                       "cpu_s": statistics.median(c for _, c in v)} for k, v in times.items()}
            row["ratio_wall"] = row["after"]["wall_s"] / row["before"]["wall_s"]
            row["ratio_cpu"] = row["after"]["cpu_s"] / row["before"]["cpu_s"]
            out[name] = row
            print(f"{name:10s} wall {row['before']['wall_s']:7.2f} s -> "
                  f"{row['after']['wall_s']:7.2f} s (x{row['ratio_wall']:.2f})   cpu "
                  f"{row['before']['cpu_s']:7.2f} s -> {row['after']['cpu_s']:7.2f} s "
                  f"(x{row['ratio_cpu']:.2f})", flush=True)
    if args.json:
        meta = {"repeats": args.repeats, "cpus": os.cpu_count(),
                "load_before": os.getloadavg()}
        args.json.write_text(json.dumps({"meta": meta, "cases": out}, indent=1))


if __name__ == "__main__":
    main()
