"""Calibration of the automatic target_accept (issue 13, item 12).

For every model of the suite and every seed, the ``auto`` rule runs its pilot
(:func:`poolwise.inference.repair.choose_parameterization`: parameterization per level and the worst
remaining funnel severity); the resolved model is then sampled at each target_accept of
``TAS`` with the same seed (4 chains, reduced tuning/draws, no repair) and its divergent
transitions are counted. For each model the *calibrated* target_accept is the lowest one with
0 divergences in at least 95% of the seeds (with 10 seeds: all of them). The rule in
:data:`poolwise.inference.repair.SEVERITY_LADDER` is then fitted to those choices (see
bench/README.md).

    PYTHONPATH=src python bench/target_accept_suite.py [--seeds 10] [--tune 500] [--draws 500]

Results: a markdown table on stdout and ``bench/results/target_accept_suite.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from poolwise.data.datasets import example_path
from poolwise.engine.layout import pack
from poolwise.engine.sampler import SamplerConfig, run_nuts
from poolwise.inference.repair import choose_parameterization
from poolwise.model.spec import build_model

OUT = Path(__file__).parent / "results" / "target_accept_suite.json"
TAS = (0.8, 0.9, 0.95, 0.99)


def _bangladesh() -> pd.DataFrame:
    return pd.read_csv(example_path("bangladesh"), sep=";")


def _small_n_many_groups() -> pd.DataFrame:
    """120 groups with 4 Bernoulli rows each, true SD 0.5 (weakly identified levels)."""
    rng = np.random.default_rng(7)
    g = np.repeat(np.arange(120), 4)
    a = rng.normal(0.0, 0.5, 120)
    y = rng.binomial(1, 1.0 / (1.0 + np.exp(-(-0.3 + a[g]))))
    return pd.DataFrame({"y": y, "g": g})


def suite() -> list[tuple[str, str, pd.DataFrame]]:
    b = _bangladesh()
    b3 = b[b["district"].isin([1, 2, 3])].reset_index(drop=True)
    return [
        ("intercepts (60 districts)", "use.contraception ~ 1 + (1 | district)", b),
        ("three districts (funnel)", "use.contraception ~ 1 + (1 | district)", b3),
        ("six districts", "use.contraception ~ 1 + (1 | district)",
         b[b["district"].isin(range(1, 7))].reset_index(drop=True)),
        ("twelve districts", "use.contraception ~ 1 + (1 | district)",
         b[b["district"].isin(range(1, 13))].reset_index(drop=True)),
        ("correlated slopes",
         "use.contraception ~ age.centered + urban + (urban | district)", b),
        ("crossed district x children",
         "use.contraception ~ urban + (1 | district) + (1 | living.children)", b),
        ("small n, 120 groups x 4 rows", "y ~ 1 + (1 | g)", _small_n_many_groups()),
    ]


def _pilot_severity(spec0, spec, cfg) -> float:
    """Worst severity with *every* estimated term's SD range from a pilot (today the pilot is
    skipped when only correlated terms are auto, and their range comes from the prior)."""
    from poolwise.inference.repair import _cell_p, _pilot, _sd_range_from, _term_choice

    post = _pilot(spec0.with_parameterization("noncentered"), cfg)
    cp = _cell_p(spec0, post)
    out = 1.0
    for i, t in enumerate(spec.terms):
        if t.estimated:
            c = _term_choice(spec, i, _sd_range_from(post, t), "pilot", cp, t.centered)
            out = max(out, c.severity)
    return out


def run(seeds: int, tune: int, draws: int) -> dict:
    rows = []
    for label, formula, data in suite():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            spec0 = build_model(formula, data)
        sev: list[float] = []
        sev_pilot: list[float] = []
        div: dict[float, list[int]] = {ta: [] for ta in TAS}
        t0 = time.perf_counter()
        for s in range(seeds):
            cfg = SamplerConfig(chains=4, tune=tune, draws=draws, seed=1000 + s)
            spec, auto = choose_parameterization(spec0, cfg)
            sev.append(max((c.severity for c in auto.terms), default=1.0))
            sev_pilot.append(_pilot_severity(spec0, spec, cfg))
            packed = pack(spec)
            for ta in TAS:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    tree, _ = run_nuts(packed, replace(cfg, target_accept=ta))
                div[ta].append(int(tree["sample_stats"]["diverging"].values.sum()))
        clean = {ta: sum(d == 0 for d in div[ta]) / seeds for ta in TAS}
        chosen = next((ta for ta in TAS if clean[ta] >= 0.95), None)
        row = {
            "model": label, "formula": formula, "n_rows": len(data),
            "severity_median": statistics.median(sev), "severity_max": max(sev),
            "severity": sev, "severity_pilot": sev_pilot,
            "severity_pilot_median": statistics.median(sev_pilot),
            "divergences": {str(k): v for k, v in div.items()},
            "clean_share": {str(k): v for k, v in clean.items()},
            "calibrated": chosen, "seconds": time.perf_counter() - t0,
        }
        rows.append(row)
        print(f"{label}: severity median {row['severity_median']:.2f} "
              f"(all-pilot {row['severity_pilot_median']:.2f}) "
              f"(max {row['severity_max']:.2f}); clean "
              + ", ".join(f"{k}: {v:.0%}" for k, v in clean.items())
              + f" -> {chosen}  [{row['seconds']:.0f} s]", flush=True)
    return {"seeds": seeds, "tune": tune, "draws": draws, "chains": 4, "rows": rows}


def table(res: dict) -> str:
    head = ("| model | severity (median / max over seeds) | all-pilot severity (median) | "
            + " | ".join(f"div-free seeds at {ta}" for ta in TAS) + " | calibrated |")
    out = [head, "|" + "---|" * (4 + len(TAS))]
    n = res["seeds"]
    for r in res["rows"]:
        cells = [f"{round(r['clean_share'][str(ta)] * n)}/{n}" for ta in TAS]
        out.append(f"| {r['model']} | {r['severity_median']:.2f} / {r['severity_max']:.2f} | "
                   f"{r['severity_pilot_median']:.2f} | "
                   + " | ".join(cells) + f" | {r['calibrated']} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--tune", type=int, default=500)
    ap.add_argument("--draws", type=int, default=500)
    a = ap.parse_args(argv)
    res = run(a.seeds, a.tune, a.draws)
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(res, indent=1))
    print(table(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
