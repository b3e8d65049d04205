"""nutpie's own work per leapfrog step, apart from the model's density: the floor under NUTS
at many groups.

    PYTHONPATH=src .venv/bin/python bench/nutpie_overhead.py [--dims 10000,50000,100000]
        [--tune 300] [--draws 300] [--json PATH]

A d-dimensional standard normal (the best-conditioned posterior there is) through nutpie's
public ``from_pyfunc``, one chain on one core, nutpie's defaults otherwise (diagonal mass
matrix). The log density and its gradient are two NumPy expressions whose time is measured
inside the callback; nutpie's own time is the wall time less that, per leapfrog step (tuning
included) and per dimension. It covers the trajectory's vector updates, the tree's U-turn
checks, the mass matrix's adaptation and storing each draw: what a faster density cannot
remove. Steps per draw are counted after tuning (nutpie's ``n_steps``).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def measure(d: int, tune: int, draws: int, seed: int = 1) -> dict[str, float]:
    import nutpie
    from nutpie.compiled_pyfunc import from_pyfunc

    spent = [0.0, 0]

    def make_logp():
        def logp(x):
            t = time.perf_counter()
            value = -0.5 * float(x @ x)
            grad = -x
            spent[0] += time.perf_counter() - t
            spent[1] += 1
            return value, grad

        return logp

    def make_expand(seed1, seed2, chain):
        def expand(x):
            return {"x": x[:1].copy()}  # one stored value: storing d values is not the point

        return expand

    model = from_pyfunc(d, make_logp, make_expand, [np.dtype("float64")], [(1,)], ["x"])
    t0 = time.perf_counter()
    trace = nutpie.sample(model, draws=draws, tune=tune, chains=1, cores=1, seed=seed,
                          save_warmup=True, progress_bar=False)
    wall = time.perf_counter() - t0
    steps = int(trace.warmup_sample_stats["n_steps"].sum() + trace.sample_stats["n_steps"].sum())
    own = wall - spent[0]
    return {"dim": d, "wall_s": wall, "steps": steps,
            "steps_per_draw_after_tuning": float(trace.sample_stats["n_steps"].mean()),
            "density_s": spent[0], "density_calls": spent[1],
            "own_us_per_step": 1e6 * own / steps, "own_ns_per_dim_step": 1e9 * own / steps / d}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dims", default="10000,50000,100000")
    ap.add_argument("--tune", type=int, default=300)
    ap.add_argument("--draws", type=int, default=300)
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    rows = [measure(int(d), a.tune, a.draws) for d in a.dims.split(",")]
    print(f"{'dim':>8} {'wall s':>7} {'steps':>7} {'steps/draw':>10} {'density s':>9} "
          f"{'own us/step':>11} {'own ns/dim/step':>15}")
    for r in rows:
        print(f"{r['dim']:>8,} {r['wall_s']:>7.2f} {r['steps']:>7,} "
              f"{r['steps_per_draw_after_tuning']:>10.1f} {r['density_s']:>9.2f} "
              f"{r['own_us_per_step']:>11.1f} {r['own_ns_per_dim_step']:>15.2f}")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(rows, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
