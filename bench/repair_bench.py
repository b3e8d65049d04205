"""Benchmarks of issue 3: diagnosis, auto parameterization and repair.

Run with the project's interpreter, in a live process (imports and numba caches warmed by one
untimed fit first):

    python bench/repair_bench.py [--seeds 5] [--part all|repair|efficiency|ta|reference]

* ``repair``: the seed's failing case (bangladesh districts 1-3: 117, 20 and 2 women). The
  whole ``poolwise.fit(...)`` call, timed with ``time.perf_counter``, (a) started centered at
  target_accept 0.8 (the repair loop non-centers district and raises target_accept), and (b)
  with the defaults (``parameterization="auto"``, pilot included). Target: <= 2 s.
* ``efficiency``: all 60 districts (1934 women), ``repair=False``, 4 chains x (1000 + 1000):
  centered vs non-centered vs auto. Efficiency = min over all parameters of min(bulk ESS,
  tail ESS) per second, per second of NUTS sampling and per second of the whole fit call
  (auto pays for its pilot there). Runs are interleaved over seeds so machine drift hits every
  variant alike; medians are reported.
* ``ta``: three districts, non-centered, target_accept 0.95 vs 0.99 (why auto picks 0.95).
* ``reference``: the long non-centered reference run used by tests/test_repair.py
  (8 chains x 10 000 draws, target_accept 0.99, seed 20240601), printed with MCSEs.

Results: a markdown table on stdout, raw numbers in ``bench/results/repair_bench.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import pandas as pd

import poolwise
from poolwise.data.datasets import example_path

FORMULA = "use.contraception ~ 1 + (1 | district)"
OUT = Path(__file__).parent / "results" / "repair_bench.json"


def _data() -> tuple[pd.DataFrame, pd.DataFrame]:
    full = pd.read_csv(example_path("bangladesh"), sep=";")
    return full, full[full["district"].isin([1, 2, 3])].reset_index(drop=True)


def _fit(data: pd.DataFrame, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return poolwise.fit(FORMULA, data, **kw)


def _min_ess(fit) -> float:
    d = fit.diagnosis
    return float(min(d.min_ess_bulk, d.min_ess_tail))


def bench_repair(d3: pd.DataFrame, seeds: list[int]) -> dict:
    rows = []
    for seed in seeds:
        for label, kw in (
            ("centered, target_accept 0.8 -> repair", dict(parameterization="centered",
                                                          target_accept=0.8)),
            ("defaults (auto)", {}),
        ):
            t0 = time.perf_counter()
            f = _fit(d3, seed=seed, **kw)
            wall = time.perf_counter() - t0
            log = f.repair_log
            rows.append({
                "variant": label, "seed": seed, "wall_s": wall, "ok": f.ok,
                "attempts": len(log), "first_divergences": log[0].divergences,
                "final_divergences": f.diagnosis.divergences, "max_rhat": f.diagnosis.max_rhat,
                "min_ess_bulk": f.diagnosis.min_ess_bulk, "min_ess_tail": f.diagnosis.min_ess_tail,
                "final_target_accept": f.config.target_accept,
                "parameterization": f.spec.parameterization_by_term()["district"],
            })
    return {"runs": rows}


def bench_efficiency(full: pd.DataFrame, seeds: list[int]) -> dict:
    rows = []
    for seed in seeds:
        for par in ("centered", "noncentered", "auto"):
            t0 = time.perf_counter()
            f = _fit(full, seed=seed, parameterization=par, repair=False)
            wall = time.perf_counter() - t0
            ess = _min_ess(f)
            rows.append({
                "parameterization": par, "seed": seed, "ok": f.ok,
                "divergences": f.diagnosis.divergences, "min_ess": ess,
                "min_ess_bulk": f.diagnosis.min_ess_bulk, "min_ess_tail": f.diagnosis.min_ess_tail,
                "sampling_s": f.timings["sampling_s"], "pilot_s": f.timings.get("pilot_s", 0.0),
                "wall_s": wall, "ess_per_sampling_s": ess / f.timings["sampling_s"],
                "ess_per_sampling_and_pilot_s": ess / (f.timings["sampling_s"]
                                                       + f.timings.get("pilot_s", 0.0)),
                "ess_per_wall_s": ess / wall, "target_accept": f.config.target_accept,
                "used": f.spec.parameterization_by_term()["district"],
            })
    return {"runs": rows}


def bench_ta(d3: pd.DataFrame, seeds: list[int]) -> dict:
    rows = []
    for seed in seeds:
        for ta in (0.95, 0.99):
            f = _fit(d3, seed=seed, parameterization="noncentered", target_accept=ta,
                     repair=False)
            rows.append({"target_accept": ta, "seed": seed,
                         "divergences": f.diagnosis.divergences, "min_ess": _min_ess(f),
                         "max_rhat": f.diagnosis.max_rhat, "sampling_s": f.timings["sampling_s"],
                         "ess_per_sampling_s": _min_ess(f) / f.timings["sampling_s"]})
    return {"runs": rows}


def bench_reference(d3: pd.DataFrame) -> dict:
    f = _fit(d3, seed=20240601, parameterization="noncentered", target_accept=0.99,
             chains=8, tune=2000, draws=10_000, repair=False, log_likelihood=False)
    s = f.summary()
    return {
        "settings": "noncentered, target_accept 0.99, 8 chains x (2000 tune + 10000 draws), "
                    "seed 20240601",
        "divergences": f.diagnosis.divergences, "max_rhat": f.diagnosis.max_rhat,
        "mean": {k: float(s.loc[k, "mean"]) for k in s.index},
        "mcse_mean": {k: float(s.loc[k, "mcse_mean"]) for k in s.index},
    }


def _median(rows: list[dict], key: str, **match) -> float:
    vals = [r[key] for r in rows if all(r[k] == v for k, v in match.items())]
    return float(statistics.median(vals)) if vals else float("nan")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--part", default="all",
                    choices=["all", "repair", "efficiency", "ta", "reference"])
    args = ap.parse_args(argv)
    seeds = list(range(1, args.seeds + 1))
    full, d3 = _data()
    _fit(d3, seed=999, parameterization="centered", target_accept=0.8)  # warm-up, untimed
    _fit(full, seed=999)
    out: dict = {
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "cpus": _cpus()},
        "versions": poolwise.fit.__globals__["versions"](),
    }
    parts = ["repair", "efficiency", "ta", "reference"] if args.part == "all" else [args.part]
    if "repair" in parts:
        r = bench_repair(d3, seeds)
        out["repair"] = r
        print("\n## Three districts: whole fit call, live process (target <= 2 s)\n")
        print("| start | median s | max s | attempts (median) | first-attempt divergences "
              "(median) | final divergences (max) | all ok |")
        print("|---|---|---|---|---|---|---|")
        for v in ("centered, target_accept 0.8 -> repair", "defaults (auto)"):
            runs = [x for x in r["runs"] if x["variant"] == v]
            print(f"| {v} | {_median(runs, 'wall_s'):.2f} | "
                  f"{max(x['wall_s'] for x in runs):.2f} | {_median(runs, 'attempts'):.0f} | "
                  f"{_median(runs, 'first_divergences'):.0f} | "
                  f"{max(x['final_divergences'] for x in runs)} | "
                  f"{all(x['ok'] for x in runs)} |")
    if "efficiency" in parts:
        e = bench_efficiency(full, seeds)
        out["efficiency"] = e
        print("\n## All 60 districts: min(bulk, tail) ESS per second, medians over seeds\n")
        print("| parameterization | used | divergences (max) | min ESS | sampling s | "
              "ESS/s sampling | ESS/s sampling+pilot | whole fit s | ESS/s whole fit |")
        print("|---|---|---|---|---|---|---|---|---|")
        for par in ("centered", "noncentered", "auto"):
            runs = [x for x in e["runs"] if x["parameterization"] == par]
            print(f"| {par} | {runs[0]['used']} | {max(x['divergences'] for x in runs)} | "
                  f"{_median(runs, 'min_ess'):.0f} | {_median(runs, 'sampling_s'):.3f} | "
                  f"{_median(runs, 'ess_per_sampling_s'):.0f} | "
                  f"{_median(runs, 'ess_per_sampling_and_pilot_s'):.0f} | "
                  f"{_median(runs, 'wall_s'):.2f} | {_median(runs, 'ess_per_wall_s'):.0f} |")
    if "ta" in parts:
        t = bench_ta(d3, seeds)
        out["ta"] = t
        print("\n## Three districts, non-centered: target_accept 0.95 vs 0.99 (medians)\n")
        print("| target_accept | divergences (max) | min ESS | max R-hat (max) | sampling s | "
              "ESS/s |")
        print("|---|---|---|---|---|---|")
        for ta in (0.95, 0.99):
            runs = [x for x in t["runs"] if x["target_accept"] == ta]
            print(f"| {ta} | {max(x['divergences'] for x in runs)} | "
                  f"{_median(runs, 'min_ess'):.0f} | {max(x['max_rhat'] for x in runs):.3f} | "
                  f"{_median(runs, 'sampling_s'):.3f} | "
                  f"{_median(runs, 'ess_per_sampling_s'):.0f} |")
    if "reference" in parts:
        ref = bench_reference(d3)
        out["reference"] = ref
        print(f"\n## Reference run ({ref['settings']}): divergences {ref['divergences']}, "
              f"max R-hat {ref['max_rhat']:.4f}\n")
        for k, m in ref["mean"].items():
            print(f"    {k:<16} mean {m: .5f}  mcse {ref['mcse_mean'][k]:.5f}")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    prev = json.loads(OUT.read_text()) if OUT.exists() else {}
    prev.update(out)
    OUT.write_text(json.dumps(prev, indent=1, default=float) + "\n")
    print(f"\nraw numbers: {OUT}")
    return 0


def _cpus() -> int:
    import os

    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        return os.cpu_count() or 1


if __name__ == "__main__":
    sys.exit(main())
