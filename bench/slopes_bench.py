"""poolwise on the varying-slopes model, timed in a live process after a warm-up.

    use.contraception ~ urban + (1 + urban | district)     (bangladesh: 1934 rows, 60 districts)

Run with the project's interpreter:

    .venv/bin/python bench/slopes_bench.py [--repeats 5] [--seed 1] [--out PATH]

Settings match ``bench/run.py --model slopes`` (PyMC + nutpie peers): 4 chains x (1000 tune +
1000 draws), one untimed warm-up call first (imports, numba cache load), then ``--repeats``
timed calls of ``poolwise.fit`` with ``time.perf_counter`` around each. Variants:

* ``default``: ``poolwise.fit(formula, data)`` as a user calls it (standardize=True: the urban
  column centered for sampling; parameterization "auto", which includes a short pilot run;
  repair on);
* ``same-model-as-peers``: ``standardize=False, parameterization="noncentered"``: exactly the
  peers' model (intercept prior on urban = 0, non-centered district effects, LKJ(2),
  Exponential(1) SDs), so its sampling time compares like for like with bench/run.py's
  PyMC + nutpie numbers;
* ``pyfunc``: the same-model variant through nutpie's public ``from_pyfunc`` entry point (a
  Python call per gradient) instead of the numba C callback.

Per run it records wall time, the fit's own timings, divergences, max R-hat, the smallest bulk
ESS (and bulk ESS per second of sampling) and the posterior mean of the intercept-slope
correlation. The markdown table goes to stdout; everything to
``bench/results/<date>-slopes-poolwise.json``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
FORMULA = "use.contraception ~ urban + (1 + urban | district)"
CHAINS, TUNE, DRAWS = 4, 1000, 1000
VARIANTS = {
    "default": {},
    "same-model-as-peers": {"standardize": False, "parameterization": "noncentered"},
    "pyfunc": {"standardize": False, "parameterization": "noncentered", "engine": "pyfunc"},
}


def log(msg: str) -> None:
    print(f"[slopes-bench] {msg}", file=sys.stderr, flush=True)


def one_run(poolwise, data, seed: int, kw: dict) -> dict:
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = poolwise.fit(FORMULA, data, chains=CHAINS, tune=TUNE, draws=DRAWS, seed=seed, **kw)
    wall = time.perf_counter() - t
    d = fit.diagnosis
    timings = {k: float(v) for k, v in fit.timings.items()}
    sampling = timings.get("sampling_s")
    cor = float(fit.posterior["cor_district__Intercept__urban"].mean())
    return {
        "wall_s": wall,
        "timings": timings,
        "divergences": int(d.divergences),
        "max_rhat": float(d.max_rhat),
        "min_ess_bulk": float(d.min_ess_bulk),
        "min_ess_bulk_per_s": float(d.min_ess_bulk) / sampling if sampling else None,
        "cor_mean": cor,
        "ok": bool(fit.ok),
        "repair_attempts": len(fit.repair_log),
    }


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    t = time.perf_counter()
    import poolwise
    from poolwise.inference.fitted import versions

    import_s = time.perf_counter() - t
    data = poolwise.load_example("bangladesh")
    out: dict = {
        "model": FORMULA,
        "settings": {"chains": CHAINS, "tune": TUNE, "draws": DRAWS, "seed": args.seed,
                     "repeats": args.repeats},
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "cpu_count": os.cpu_count(),
                    "loadavg_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None},
        "versions": versions(),
        "import_s": import_s,
        "variants": {},
    }
    for name in args.variants.split(","):
        kw = VARIANTS[name]
        log(f"{name}: warm-up")
        t = time.perf_counter()
        one_run(poolwise, data, args.seed, kw)
        warm = time.perf_counter() - t
        runs = []
        for r in range(args.repeats):
            rec = one_run(poolwise, data, args.seed + r, kw)
            runs.append(rec)
            log(f"{name} {r + 1}/{args.repeats}: wall {rec['wall_s']:.2f}s sampling "
                f"{rec['timings'].get('sampling_s', float('nan')):.2f}s div {rec['divergences']} "
                f"rhat {rec['max_rhat']:.4f} cor {rec['cor_mean']:.3f}")
        out["variants"][name] = {
            "kwargs": kw,
            "warmup_s": warm,
            "runs": runs,
            "median_wall_s": med([r["wall_s"] for r in runs]),
            "median_sampling_s": med([r["timings"].get("sampling_s") for r in runs]),
            "median_min_ess_bulk_per_s": med([r["min_ess_bulk_per_s"] for r in runs]),
            "divergences_total": sum(r["divergences"] for r in runs),
            "max_rhat": max(r["max_rhat"] for r in runs),
            "cor_mean_median": med([r["cor_mean"] for r in runs]),
        }
    out["machine"]["loadavg_at_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    path = Path(args.out) if args.out else RESULTS / f"{_dt.date.today()}-slopes-poolwise.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")

    print(f"\n{FORMULA}: {CHAINS} chains x ({TUNE} tune + {DRAWS} draws), "
          f"median of {args.repeats} after a warm-up\n")
    print("| variant | fit wall (s) | sampling (s) | min bulk ESS/s | divergences (all runs) "
          "| max R-hat | cor mean |")
    print("|---|---|---|---|---|---|---|")
    for name, v in out["variants"].items():
        print(f"| {name} | {v['median_wall_s']:.2f} | {v['median_sampling_s']:.2f} | "
              f"{v['median_min_ess_bulk_per_s']:.0f} | {v['divergences_total']} | "
              f"{v['max_rhat']:.4f} | {v['cor_mean_median']:.3f} |")
    print(f"\nimport poolwise: {import_s:.2f}s; results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
