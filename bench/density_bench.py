"""The log density + gradient kernel alone: nanoseconds per binomial cell per gradient.

    PYTHONPATH=src .venv/bin/python bench/density_bench.py [--cells 2000,20000,100000]
        [--repeats 7] [--links logit,probit,cloglog] [--models intercepts,slopes] [--json PATH]

Models (synthetic binomial cells, ``s | trials(n)``, every row its own cell):

* ``intercepts``: ``s | trials(n) ~ 1 + (1 | g)``, one group per cell (the worst case for the
  per-level work: as many levels as cells), non-centered;
* ``slopes``: ``s | trials(n) ~ 1 + x + (1 + x | g)``, a continuous covariate, correlated varying
  intercepts and slopes, cells / 100 groups (at least 20), non-centered.

Timing calls the same compiled C callback nutpie calls (``density.logp_cfunc``), by its
address, from a numba loop (as nutpie's Rust loop does; no Python per call), on the packed
buffer: per repeat, a batch of calls at 16 random parameter vectors of scale 0.5, timed in CPU
time of the calling thread (``thread_time_ns``: on a shared machine, time spent preempted is not
counted; wall time would be), then ns per cell per gradient = batch time / calls / cells. The
figure reported is the median over repeats (medians, not means). The fixed
cost per call is printed from a 3-cell model; it is included in every figure.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings

import numpy as np
import pandas as pd


def make_data(model: str, cells: int, seed: int = 1) -> tuple[str, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    n = rng.integers(1, 30, size=cells)
    if model == "intercepts":
        g = np.arange(cells)
        a = rng.normal(0.0, 0.8, size=cells)
        eta = -0.3 + a
        df = pd.DataFrame({"g": g})
        formula = "s | trials(n) ~ 1 + (1 | g)"
    else:
        groups = max(20, cells // 100)
        g = rng.integers(0, groups, size=cells)
        x = rng.normal(size=cells)
        a = rng.normal(0.0, 0.8, size=groups)
        b = rng.normal(0.0, 0.4, size=groups)
        eta = -0.3 + 0.5 * x + a[g] + b[g] * x
        df = pd.DataFrame({"g": g, "x": x})
        formula = "s | trials(n) ~ 1 + x + (1 + x | g)"
    p = 1.0 / (1.0 + np.exp(-eta))
    df["n"] = n
    df["s"] = rng.binomial(n, p)
    return formula, df


def build(model: str, cells: int, link: str):
    from poolwise.engine.layout import pack
    from poolwise.model.spec import build_model

    formula, df = make_data(model, cells)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        spec = build_model(formula, df, link=link, parameterization="noncentered")
    return pack(spec)


def _batch_loop():
    """A numba loop that calls the C callback ``calls`` times, as nutpie's Rust loop does."""
    import numba

    @numba.njit
    def loop(f, dim, xs, grad, lp, buf, calls):
        bad = 0
        for i in range(calls):
            bad += f(dim, xs[i & 15].ctypes, grad.ctypes, lp.ctypes, buf.ctypes) != 0
        return bad

    return loop


def time_kernel(packed, repeats: int, target_s: float = 0.15) -> float:
    """Median seconds per call of the C callback ``density.logp_cfunc``."""
    from poolwise.engine import density as D

    f = D.logp_cfunc.ctypes
    loop = _batch_loop()
    dim = packed.dim
    rng = np.random.default_rng(0)
    xs = rng.normal(scale=0.5, size=(16, dim))
    grad = np.empty(dim)
    lp = np.empty(1)
    if loop(f, dim, xs, grad, lp, packed.buffer, 16):  # warm-up; every point must be finite
        raise RuntimeError("the kernel reported a non-finite density or gradient")
    t0 = time.perf_counter()
    loop(f, dim, xs, grad, lp, packed.buffer, 16)
    per = (time.perf_counter() - t0) / 16
    calls = max(16, int(target_s / max(per, 1e-7)))
    out = []
    for _ in range(repeats):
        t0 = time.thread_time_ns()
        loop(f, dim, xs, grad, lp, packed.buffer, calls)
        out.append((time.thread_time_ns() - t0) / calls)
    return statistics.median(out) * 1e-9


def adaptation_compare(groups: int, trials: int, param: str, seed: int, chains: int,
                       draws: int, tune: int) -> list[dict]:
    """nutpie's mass-matrix adaptations on a many-group intercepts model: gradients per draw,
    sampling time, and the smallest bulk ESS (per second and per 1000 gradients)."""
    import warnings

    from arviz_stats.base import array_stats

    from poolwise.engine import sampler as S
    from poolwise.engine.layout import pack
    from poolwise.model.spec import build_model

    rng = np.random.default_rng(seed)
    a = rng.normal(0.0, 0.5, size=groups)
    df = pd.DataFrame({"g": np.arange(groups), "n": trials})
    df["s"] = rng.binomial(trials, 1.0 / (1.0 + np.exp(-(-0.5 + a))))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        spec = build_model("s | trials(n) ~ 1 + (1 | g)", df, parameterization=param)
    packed = pack(spec)
    nutpie = S._import_nutpie()
    out = []
    for adaptation in ("diag", "low_rank"):
        compiled = S._compiled_cfunc(packed, S.stored_dtypes(packed, False))
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tree = nutpie.sample(compiled, draws=draws, tune=tune, chains=chains,
                                 cores=min(chains, 2), seed=seed, save_warmup=True,
                                 progress_bar=False, adaptation=adaptation)
        wall = time.perf_counter() - t0
        post = tree["posterior"].to_dataset()
        ess = []
        for name in post.data_vars:
            v = post[name].values.reshape(chains, draws, -1)
            for j in range(v.shape[2]):
                ess.append(float(array_stats.ess(v[:, :, j], method="bulk")))
        steps_post = float(tree["sample_stats"]["n_steps"].values.sum())
        steps_all = steps_post + float(tree["warmup_sample_stats"]["n_steps"].values.sum())
        div = int(tree["sample_stats"]["diverging"].values.sum())
        row = {"groups": groups, "trials": trials, "param": param, "adaptation": adaptation,
               "wall_s": wall, "grad_per_draw": steps_post / (chains * draws),
               "grad_total": steps_all, "min_ess_bulk": min(ess),
               "min_ess_per_s": min(ess) / wall,
               "min_ess_per_1k_grad": 1000.0 * min(ess) / steps_all, "divergences": div}
        out.append(row)
        print(f"{groups:>6} {trials:>6} {param:<11} {adaptation:<9} {wall:>7.1f} "
              f"{row['grad_per_draw']:>8.1f} {steps_all:>10.0f} {min(ess):>8.0f} "
              f"{row['min_ess_per_s']:>8.1f} {row['min_ess_per_1k_grad']:>8.2f} {div:>4}",
              flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", default="2000,20000,100000")
    ap.add_argument("--models", default="intercepts,slopes")
    ap.add_argument("--links", default="logit,probit,cloglog")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--json", default=None)
    ap.add_argument("--adaptation", action="store_true",
                    help="instead: compare nutpie's diag and low_rank mass-matrix adaptation on "
                         "a many-group intercepts model (sampling, 4 chains on 2 cores)")
    ap.add_argument("--groups", type=int, default=2000)
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--draws", type=int, default=1000)
    ap.add_argument("--tune", type=int, default=1000)
    ap.add_argument("--cases", default="5:noncentered,50:centered",
                    help="trials per group : parameterization, comma separated")
    a = ap.parse_args(argv)
    if a.adaptation:
        print(f"{'groups':>6} {'trials':>6} {'param':<11} {'adapt':<9} {'wall_s':>7} "
              f"{'grad/dr':>8} {'grad_all':>10} {'minESS':>8} {'ESS/s':>8} {'ESS/kgr':>8} "
              f"{'div':>4}")
        rows = []
        for case in a.cases.split(","):
            trials, param = case.split(":")
            rows += adaptation_compare(a.groups, int(trials), param, seed=1, chains=a.chains,
                                       draws=a.draws, tune=a.tune)
        if a.json:
            with open(a.json, "w") as fh:
                json.dump({"adaptation": rows}, fh, indent=1)
        return 0
    cells_list = [int(c) for c in a.cells.split(",")]
    rows = []
    one = build("intercepts", 3, "logit")
    overhead = time_kernel(one, a.repeats)
    print(f"a 3-cell model: {overhead * 1e9:.0f} ns per call (fixed cost per gradient)")
    print(f"{'model':<11} {'link':<8} {'cells':>7} {'dim':>7} {'us/grad':>9} {'ns/cell':>8}")
    for model in a.models.split(","):
        for link in a.links.split(","):
            for cells in cells_list:
                packed = build(model, cells, link)
                sec = time_kernel(packed, a.repeats)
                ns = sec * 1e9 / cells
                rows.append({"model": model, "link": link, "cells": cells, "dim": packed.dim,
                             "us_per_grad": sec * 1e6, "ns_per_cell": ns})
                print(f"{model:<11} {link:<8} {cells:>7} {packed.dim:>7} {sec * 1e6:>9.1f} "
                      f"{ns:>8.2f}", flush=True)
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({"overhead_ns": overhead * 1e9, "rows": rows}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
