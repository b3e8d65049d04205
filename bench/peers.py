"""Peer side of the poolwise benchmark: fit the seed models with PyMC / nutpie.

Runs inside the separate benchmark environment (bench/.venv-peers), never with
the project's interpreter:

    bench/.venv-peers/bin/python bench/peers.py --tool pymc --model intercepts \
        --seed 1 --json out.json

Tools
  pymc         PyMC's own NUTS: ``pm.sample(..., nuts_sampler="pymc")``.  NOTE:
               with PyMC 6 a plain ``pm.sample()`` silently dispatches to nutpie
               whenever nutpie is installed and the default (numba) linker is in
               use, so PyMC's NUTS has to be requested explicitly.
  pymc-nutpie  ``nutpie.compile_pymc_model(model)`` + ``nutpie.sample(...)``.
  pymc-auto    a literal ``pm.sample(...)`` with no sampler argument (whatever
               PyMC 6 picks; with this environment that is nutpie).

Models
  intercepts   y_i ~ Bernoulli(logit^-1(a[district_i])), a_j ~ N(a_bar, sigma)
               (centered), a_bar ~ N(0, 1.5), sigma ~ Exponential(1).
  slopes       use.contraception ~ urban + (1 + urban | district): intercept
               N(0, 1.5), urban coefficient N(0, 1), district effects
               non-centered with LKJCholeskyCov(eta=2, sd_dist=Exponential(1)).

``--aggregate`` collapses the Bernoulli rows into binomial cells (60 district
cells for ``intercepts``; district x urban cells for ``slopes``); the
posterior is the same.

The JSON written to ``--json`` holds the in-process timings (seconds, all
``time.perf_counter``), diagnostics and posterior means; see bench/README.md.
"""

from __future__ import annotations

import time

_T0 = time.perf_counter()  # before any heavy import: start of the "in-process" clock

import argparse
import csv
import json
import os
import platform
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DATA_CANDIDATES = [
    REPO / "src" / "poolwise" / "datasets" / "bangladesh.csv",
    REPO.parent / "shared" / "data" / "bangladesh.csv",
]
TOOLS = ("pymc", "pymc-nutpie", "pymc-auto")
MODELS = ("intercepts", "slopes")


def find_data(explicit: str | None) -> Path:
    if explicit:
        return Path(explicit)
    for p in DATA_CANDIDATES:
        if p.is_file():
            return p
    raise SystemExit("bangladesh.csv not found; pass --data PATH")


def load_bangladesh(path: Path) -> dict[str, np.ndarray]:
    """Read the semicolon-delimited file; district labels -> 0..J-1 (sorted)."""
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter=";"))
    district = np.array([int(r["district"]) for r in rows])
    labels, idx = np.unique(district, return_inverse=True)
    return {
        "y": np.array([int(r["use.contraception"]) for r in rows], dtype=np.int64),
        "urban": np.array([float(r["urban"]) for r in rows]),
        "district": idx.astype(np.int64),
        "labels": labels,
    }


def build_model(pm, model_name: str, data: dict[str, np.ndarray], aggregate: bool):
    y, urban, d = data["y"], data["urban"], data["district"]
    n_d = len(data["labels"])
    if model_name == "intercepts":
        with pm.Model() as model:
            a_bar = pm.Normal("a_bar", 0.0, 1.5)
            sigma = pm.Exponential("sigma", 1.0)
            a = pm.Normal("a", a_bar, sigma, shape=n_d)
            if aggregate:
                n = np.bincount(d, minlength=n_d)
                k = np.bincount(d, weights=y, minlength=n_d).astype(np.int64)
                pm.Binomial("y", n=n, logit_p=a, observed=k)
            else:
                pm.Bernoulli("y", logit_p=a[d], observed=y)
        return model, len(y) if not aggregate else n_d
    if model_name == "slopes":
        with pm.Model() as model:
            alpha = pm.Normal("alpha", 0.0, 1.5)  # intercept
            beta = pm.Normal("beta", 0.0, 1.0)  # urban coefficient
            chol, corr, sds = pm.LKJCholeskyCov(
                "chol", n=2, eta=2.0, sd_dist=pm.Exponential.dist(1.0), compute_corr=True
            )
            pm.Deterministic("sd_district", sds)
            pm.Deterministic("rho", corr[0, 1])
            z = pm.Normal("z", 0.0, 1.0, shape=(n_d, 2))
            u = pm.Deterministic("u", z @ chol.T)  # non-centered district effects
            if aggregate:
                cell = d * 2 + urban.astype(np.int64)
                n_all = np.bincount(cell, minlength=2 * n_d)
                k_all = np.bincount(cell, weights=y, minlength=2 * n_d).astype(np.int64)
                keep = np.flatnonzero(n_all > 0)
                cd, cu = keep // 2, (keep % 2).astype(float)
                eta = alpha + u[cd, 0] + (beta + u[cd, 1]) * cu
                pm.Binomial("y", n=n_all[keep], logit_p=eta, observed=k_all[keep])
                n_obs = len(keep)
            else:
                eta = alpha + u[d, 0] + (beta + u[d, 1]) * urban
                pm.Bernoulli("y", logit_p=eta, observed=y)
                n_obs = len(y)
        return model, n_obs
    raise SystemExit(f"unknown model {model_name!r}")


def summarize(az, idata, model_name: str) -> dict:
    post = idata["posterior"]
    stats = idata["sample_stats"]
    if hasattr(post, "to_dataset"):  # DataTree node -> Dataset
        post, stats = post.to_dataset(), stats.to_dataset()
    out: dict = {}
    div = stats["diverging"]
    out["divergences"] = int(div.sum().item())
    if "n_steps" in stats:  # leapfrog steps = gradient evaluations (draw phase only)
        out["mean_n_steps"] = float(stats["n_steps"].mean())
        out["grad_evals_draws"] = int(stats["n_steps"].sum())
    if "tree_depth" in stats or "depth" in stats:
        depth = stats["tree_depth" if "tree_depth" in stats else "depth"]
        out["mean_tree_depth"] = float(depth.mean())
    if "draw" in div.dims:
        out["draws_per_chain"] = int(div.sizes["draw"])
        out["chains"] = int(div.sizes["chain"])
    # free (sampled) parameters only: deterministics are left out of ESS/R-hat
    if model_name == "intercepts":
        names = ["a_bar", "sigma", "a"]
    else:
        names = ["alpha", "beta", "z", "sd_district", "rho"]
    names = [n for n in names if n in post]
    sub = post[names]
    ess = az.ess(sub, method="bulk")
    ess_tail = az.ess(sub, method="tail")
    rhat = az.rhat(sub)

    def _min(ds):
        if hasattr(ds, "to_dataset"):
            ds = ds.to_dataset()
        return float(min(float(ds[v].min()) for v in ds.data_vars))

    def _max(ds):
        if hasattr(ds, "to_dataset"):
            ds = ds.to_dataset()
        return float(max(float(ds[v].max()) for v in ds.data_vars))

    out["min_ess_bulk"] = _min(ess)
    out["min_ess_tail"] = _min(ess_tail)
    out["max_rhat"] = _max(rhat)
    means = {}
    sds = {}
    if model_name == "intercepts":
        scalars = ["a_bar", "sigma"]
    else:
        scalars = ["alpha", "beta", "rho"]
    for v in scalars:
        means[v] = float(post[v].mean())
        sds[v] = float(post[v].std())
    if model_name == "slopes":
        sd = post["sd_district"]
        m = sd.mean(("chain", "draw")).values
        s = sd.std(("chain", "draw")).values
        means["sigma_intercept"], means["sigma_urban"] = float(m[0]), float(m[1])
        sds["sigma_intercept"], sds["sigma_urban"] = float(s[0]), float(s[1])
    out["posterior_mean"] = means
    out["posterior_sd"] = sds
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tool", choices=TOOLS, required=True)
    ap.add_argument("--model", choices=MODELS, default="intercepts")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", dest="json_out", required=True, help="write results here")
    ap.add_argument("--aggregate", action="store_true", help="binomial cells instead of rows")
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--tune", type=int, default=1000)
    ap.add_argument("--draws", type=int, default=1000)
    ap.add_argument("--data", default=None, help="path to bangladesh.csv")
    args = ap.parse_args(argv)

    timings: dict[str, float | None] = {}

    # ---- import -------------------------------------------------------------
    t = time.perf_counter()
    import warnings

    import arviz as az
    import pymc as pm

    if args.tool == "pymc-nutpie":
        import nutpie
    timings["import_s"] = time.perf_counter() - t  # pymc (+nutpie) + arviz

    # ---- data + model construction --------------------------------------------
    t = time.perf_counter()
    data = load_bangladesh(find_data(args.data))
    model, n_obs = build_model(pm, args.model, data, args.aggregate)
    timings["build_s"] = time.perf_counter() - t

    # ---- compile + sample -------------------------------------------------------
    info: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if args.tool == "pymc-nutpie":
            t = time.perf_counter()
            compiled = nutpie.compile_pymc_model(model)
            timings["compile_s"] = time.perf_counter() - t
            t = time.perf_counter()
            idata = nutpie.sample(
                compiled,
                draws=args.draws,
                tune=args.tune,
                chains=args.chains,
                cores=args.cores,
                seed=args.seed,
                progress_bar=False,
            )
            timings["sample_s"] = time.perf_counter() - t
        else:
            kw = {"nuts_sampler": "pymc"} if args.tool == "pymc" else {}
            # PyMC compiles logp/dlogp inside pm.sample: compile_s is not separable
            # without compiling twice, so it is reported as None and sample_s
            # covers compile + init + tune + draws (+ worker start-up).
            timings["compile_s"] = None
            t = time.perf_counter()
            idata = pm.sample(
                draws=args.draws,
                tune=args.tune,
                chains=args.chains,
                cores=args.cores,
                random_seed=args.seed,
                progressbar=False,
                model=model,
                **kw,
            )
            timings["sample_s"] = time.perf_counter() - t
            lib = idata["sample_stats"].attrs.get("inference_library")
            info["inference_library"] = lib
    # fit = everything up to having posterior draws (import + build + compile + sample)
    timings["fit_total_s"] = time.perf_counter() - _T0

    t = time.perf_counter()
    diag = summarize(az, idata, args.model)
    timings["diagnostics_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - _T0

    import nutpie as _np_ver  # version only (installed in the peer venv)
    import pytensor

    result = {
        "tool": args.tool,
        "model": args.model,
        "aggregate": args.aggregate,
        "n_obs_rows": n_obs,
        "seed": args.seed,
        "chains": args.chains,
        "cores": args.cores,
        "tune": args.tune,
        "draws": args.draws,
        "timings": timings,
        **diag,
        **info,
        "versions": {
            "python": platform.python_version(),
            "pymc": pm.__version__,
            "pytensor": pytensor.__version__,
            "nutpie": _np_ver.__version__,
            "arviz": az.__version__,
            "numpy": np.__version__,
        },
        "pytensor_linker": type(pytensor.compile.mode.get_default_mode().linker).__name__,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
    }
    out = Path(args.json_out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"{args.tool}/{args.model}{'/agg' if args.aggregate else ''}: "
        f"sample {timings['sample_s']:.2f}s total {timings['total_s']:.2f}s "
        f"div={diag['divergences']} minESS={diag['min_ess_bulk']:.0f} "
        f"means={ {k: round(v, 3) for k, v in diag['posterior_mean'].items()} }",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
