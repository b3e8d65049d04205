"""``--method approx`` against NUTS: whole ``poolwise fit`` CLI processes on many small groups.

    PYTHONPATH=src .venv/bin/python bench/approx.py                     # 10k and 50k groups
    PYTHONPATH=src .venv/bin/python bench/approx.py --groups 10000 --runs 3
    PYTHONPATH=src .venv/bin/python bench/approx.py --json bench/results/approx.json
    PYTHONPATH=src .venv/bin/python bench/approx.py --groups 100000 --approx-only 1000000 --runs 1
    PYTHONPATH=src .venv/bin/python bench/approx.py --glmer 10000 --glmer 50000 --runs 3
    PYTHONPATH=src .venv/bin/python bench/approx.py --slopes --groups 10000 --runs 1

``--glmer`` runs approx against lme4's glmer (``bench/glmer.R``, whole Rscript processes:
reading the CSV, the Laplace fit, writing each group's conditional mode and SD) instead of
NUTS, and one glmer fit with ``--agq`` adaptive quadrature points (25) for its group SD.

Each case writes one binomial row per group (5-30 trials, intercept -0.5, true group SD 0.8,
fixed seed) to a CSV in a temporary folder, then runs

    python -m poolwise.cli fit DATA -f "y | trials(n) ~ 1 + (1 | g)" --seed S --out DIR -q
        [--method approx]

``--runs`` times per method (the wall time of the whole process: start-up, reading, the fit,
writing), and prints the medians, their ratio, and the accuracy of approx against NUTS read
from the saved ``result.json`` files of the last runs: the group SD's posterior mean under
each (and the truth, 0.8), the intercept's, the largest difference of a population-level
mean in NUTS posterior sds, and the group means' 95th percentile of |difference| / NUTS sd.
Whether each run passed its checks (``status``) is printed too.

``--slopes``: two binomial rows per group instead (x = 0 and 1, 5-30 trials each; intercept
-0.5, slope 0.4, group SDs 0.8 and 0.5, correlation -0.4) and the formula
``y | trials(n) ~ 1 + x + (1 + x | g)``; the accuracy columns then read the intercept's SD
(``sd_g__Intercept``) and take every population-level parameter (both SDs and the correlation
among them).

Numbers depend on the machine: record its cores and load with the table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parent.parent
FORMULA = "y | trials(n) ~ 1 + (1 | g)"
SLOPES = "y | trials(n) ~ 1 + x + (1 + x | g)"
TRUE_SD = 0.8
#: the population-level parameters the accuracy reads, and the group SD it prints
POPULATION = {FORMULA: ("Intercept", "sd_g"),
              SLOPES: ("Intercept", "b_x", "sd_g__Intercept", "sd_g__x",
                       "cor_g__Intercept__x")}
SD_NAME = {FORMULA: "sd_g", SLOPES: "sd_g__Intercept"}


def write_case(groups: int, folder: Path, seed: int = 1, formula: str = FORMULA) -> Path:
    """One binomial row per group: 5-30 trials, logit p = -0.5 + N(0, 0.8^2); for ``SLOPES``
    two (x = 0, 1), logit p = -0.5 + 0.4 x + a_g + b_g x, (a_g, b_g) with SDs 0.8 and 0.5 and
    correlation -0.4."""
    rng = np.random.default_rng(seed)
    if formula == SLOPES:
        g, x = np.repeat(np.arange(groups), 2), np.tile([0, 1], groups)
        L = np.linalg.cholesky(np.array([[1.0, -0.4], [-0.4, 1.0]]))
        b = (rng.normal(size=(groups, 2)) @ L.T) * np.array([TRUE_SD, 0.5])
        n = rng.integers(5, 31, size=2 * groups)
        p = 1.0 / (1.0 + np.exp(-(-0.5 + b[g, 0] + (0.4 + b[g, 1]) * x)))
        path = folder / f"slopes{groups}.csv"
        pd.DataFrame({"y": rng.binomial(n, p), "n": n, "x": x, "g": g}).to_csv(path,
                                                                             index=False)
        return path
    n = rng.integers(5, 31, size=groups)
    p = 1.0 / (1.0 + np.exp(-(-0.5 + rng.normal(0.0, TRUE_SD, size=groups))))
    path = folder / f"groups{groups}.csv"
    pd.DataFrame({"y": rng.binomial(n, p), "n": n, "g": np.arange(groups)}).to_csv(
        path, index=False)
    return path


def run_cli(data: Path, out: Path, method: str, seed: int,
            formula: str = FORMULA) -> tuple[float, dict]:
    """The whole process's wall time and its result.json."""
    cmd = [sys.executable, "-m", "poolwise.cli", "fit", str(data), "-f", formula,
           "--seed", str(seed), "--out", str(out), "-q", "--method", method]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode not in (0, 1):  # 1: a fit that is not OK (reported)
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    return wall, json.loads((out / "result.json").read_text())


def _groups_table(out: Path) -> pd.DataFrame:
    table = pd.read_csv(out / "summary.csv", index_col=0)
    return table[table.index.str.startswith("a_g[")]


def accuracy(approx_dir: Path, nuts_dir: Path, formula: str = FORMULA) -> dict[str, float]:
    """approx against NUTS, from the saved folders."""
    a = pd.read_csv(approx_dir / "summary.csv", index_col=0)
    n = pd.read_csv(nuts_dir / "summary.csv", index_col=0)
    pop, sd = POPULATION[formula], SD_NAME[formula]
    ga, gn = _groups_table(approx_dir), _groups_table(nuts_dir)
    z = (ga["mean"] - gn.loc[ga.index, "mean"]).abs() / gn.loc[ga.index, "sd"]
    return {
        "sd_g_approx": float(a.loc[sd, "mean"]),
        "sd_g_nuts": float(n.loc[sd, "mean"]),
        "intercept_approx": float(a.loc["Intercept", "mean"]),
        "intercept_nuts": float(n.loc["Intercept", "mean"]),
        "max_population_diff_in_nuts_sd": float(max(
            abs(a.loc[p, "mean"] - n.loc[p, "mean"]) / n.loc[p, "sd"] for p in pop)),
        "population_sd_ratio_max_dev": float(max(
            abs(a.loc[p, "sd"] / n.loc[p, "sd"] - 1.0) for p in pop)),
        "group_means_p95_diff_in_nuts_sd": float(np.quantile(z, 0.95)),
    }


def run_glmer(data: Path, prefix: Path, nagq: int = 1) -> tuple[float, dict]:
    """glmer (``bench/glmer.R``) as a whole Rscript process: its wall time and estimates."""
    cmd = ["Rscript", str(REPO / "bench" / "glmer.R"), str(data), str(prefix), str(nagq)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    return wall, json.loads(proc.stdout.strip().splitlines()[-1])


def glmer_case(groups: int, runs: int, folder: Path, agq: int) -> dict:
    """approx against glmer (Laplace; and one fit with ``agq`` quadrature points for its SD),
    alternately, ``runs`` times each."""
    data = write_case(groups, folder)
    times: dict[str, list[float]] = {"approx": [], "glmer": []}
    for r in range(runs):
        wall, result = run_cli(data, folder / f"approx{groups}", "approx", seed=r + 1)
        times["approx"].append(wall)
        print(f"  {groups:>7,} groups  approx run {r + 1}: {wall:7.1f} s  "
              f"ok={result['diagnostics']['ok']}", flush=True)
        wall, est = run_glmer(data, folder / f"glmer{groups}")
        times["glmer"].append(wall)
        print(f"  {groups:>7,} groups  glmer  run {r + 1}: {wall:7.1f} s  sd {est['sd_g']:.4f}",
              flush=True)
    agq_wall, agq_est = run_glmer(data, folder / f"glmer_agq{groups}", agq) if agq else (
        float("nan"), {"sd_g": float("nan")})
    a = pd.read_csv(folder / f"approx{groups}" / "summary.csv", index_col=0)
    med = {m: statistics.median(t) for m, t in times.items()}
    return {"groups": groups, "runs": runs, "median_s": med, "times_s": times,
            "approx_over_glmer": med["approx"] / med["glmer"],
            "approx_draws": f"{result['settings']['chains']} x {result['settings']['draws']}",
            "sd_g": {"approx": float(a.loc["sd_g", "mean"]), "glmer_laplace": est["sd_g"],
                     f"glmer_agq{agq}": agq_est["sd_g"], "truth": TRUE_SD},
            "glmer_agq_s": agq_wall}


def run_case(groups: int, runs: int, folder: Path, nuts: bool = True,
             formula: str = FORMULA) -> dict:
    data = write_case(groups, folder, formula=formula)
    methods = ("approx", "nuts") if nuts else ("approx",)
    times: dict[str, list[float]] = {m: [] for m in methods}
    status: dict[str, list[bool]] = {m: [] for m in methods}
    stored: list[str] = []
    for r in range(runs):
        for method in methods:
            wall, result = run_cli(data, folder / f"{method}{groups}", method, seed=r + 1,
                                   formula=formula)
            times[method].append(wall)
            status[method].append(bool(result["diagnostics"]["ok"]))
            if method == "approx":  # the draws the memory plan stored
                stored.append(f"{result['settings']['chains']} x {result['settings']['draws']}")
            print(f"  {groups:>7,} groups  {method:<6} run {r + 1}: {wall:7.1f} s  "
                  f"ok={status[method][-1]}", flush=True)
    med = {m: statistics.median(t) for m, t in times.items()}
    if not nuts:
        return {"groups": groups, "runs": runs, "median_s": med, "times_s": times,
                "ok": status, "approx_draws": stored[-1]}
    return {"groups": groups, "runs": runs, "median_s": med, "times_s": times,
            "ok": status, "approx_draws": stored[-1], "formula": formula,
            "ratio_nuts_over_approx": med["nuts"] / med["approx"],
            "accuracy": accuracy(folder / f"approx{groups}", folder / f"nuts{groups}",
                                 formula)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--groups", type=int, action="append", help="10000 and 50000 by default")
    ap.add_argument("--approx-only", type=int, action="append", default=[],
                    help="group counts to run with approx alone (NUTS would take too long)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--glmer", type=int, action="append", default=[],
                    help="group counts to run approx against glmer (R and lme4: "
                         "apt-get install r-cran-lme4), instead of NUTS")
    ap.add_argument("--agq", type=int, default=25,
                    help="glmer's quadrature points for its accurate SD (0: skip)")
    ap.add_argument("--slopes", action="store_true",
                    help=f"two rows per group and {SLOPES!r} (NUTS and approx)")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args()
    formula = SLOPES if args.slopes else FORMULA
    if args.slopes and args.glmer:
        ap.error("--slopes runs against NUTS; bench/glmer.R fits the intercept model only")
    results = []
    if args.glmer:
        with tempfile.TemporaryDirectory() as tmp:
            for g in args.glmer:
                results.append(glmer_case(g, args.runs, Path(tmp), args.agq))
        print(f"\ncores: {os.cpu_count()}, load: {os.getloadavg()[0]:.1f}")
        print(f"{'groups':>9} {'approx s':>9} {'glmer s':>8} {'approx/glmer':>12} "
              f"{'sd approx':>9} {'sd glmer':>9} {'sd AGQ':>7}")
        for r in results:
            sd = r["sd_g"]
            print(f"{r['groups']:>9,} {r['median_s']['approx']:>9.1f} "
                  f"{r['median_s']['glmer']:>8.1f} {r['approx_over_glmer']:>12.1f} "
                  f"{sd['approx']:>9.4f} {sd['glmer_laplace']:>9.4f} "
                  f"{sd[f'glmer_agq{args.agq}']:>7.4f}")
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
        return
    with tempfile.TemporaryDirectory() as tmp:
        for g in args.groups or [10_000, 50_000]:
            results.append(run_case(g, args.runs, Path(tmp), formula=formula))
        for g in args.approx_only:
            results.append(run_case(g, args.runs, Path(tmp), nuts=False, formula=formula))
    print(f"\ncores: {os.cpu_count()}, load: {os.getloadavg()[0]:.1f}; {formula}; true group "
          f"SD {TRUE_SD}")
    print(f"{'groups':>8} {'approx s':>9} {'nuts s':>8} {'nuts/approx':>11} {'sd approx':>9} "
          f"{'sd nuts':>8} {'pop diff/sd':>11} {'group p95':>9}")
    for r in results:
        if "accuracy" not in r:
            print(f"{r['groups']:>8,} {r['median_s']['approx']:>9.1f} {'-':>8} {'-':>11}   "
                  f"(approx alone; stored {r['approx_draws']} draws)")
            continue
        a = r["accuracy"]
        print(f"{r['groups']:>8,} {r['median_s']['approx']:>9.1f} {r['median_s']['nuts']:>8.1f} "
              f"{r['ratio_nuts_over_approx']:>11.1f} {a['sd_g_approx']:>9.4f} "
              f"{a['sd_g_nuts']:>8.4f} {a['max_population_diff_in_nuts_sd']:>11.3f} "
              f"{a['group_means_p95_diff_in_nuts_sd']:>9.3f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
