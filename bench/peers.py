"""Peer side of the poolwise benchmark: fit the same models with PyMC / nutpie / NumPyro.

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
  numpyro      NumPyro's NUTS (JAX on CPU, NumPyro's default float32):
               ``MCMC(NUTS(model), num_warmup=tune, num_samples=draws,
               num_chains=4, chain_method=...)`` on 2 host devices
               (``numpyro.set_host_device_count(cores)`` before JAX starts).
               ``chain_method="parallel"`` needs one device per chain: with 4
               chains on 2 devices NumPyro silently runs all 4 *sequentially*.
               So the chain_method is ``"parallel"`` when chains == devices
               and otherwise ``chains_over_devices(2)``: pmap over the 2
               devices (as "parallel" does), 2 chains one after another on
               each, like PyMC's ``chains=4, cores=2``; one compile.  JAX
               compiles inside ``mcmc.run``: compile_s is None and sample_s
               includes it.

Models
  intercepts   y_i ~ Bernoulli(logit^-1(a[district_i])), a_j ~ N(a_bar, sigma)
               (centered), a_bar ~ N(0, 1.5), sigma ~ Exponential(1).
  slopes       use.contraception ~ urban + (1 + urban | district): intercept
               N(0, 1.5), urban coefficient N(0, 1), district effects
               non-centered with LKJCholeskyCov(eta=2, sd_dist=Exponential(1))
               (NumPyro: sd ~ Exponential(1) x 2, LKJCholesky(2, 2)).
  cont20k      what ``poolwise fit DATA -f "y ~ 1 + x + (1 | g)"`` fits with
               its defaults, on bench/scale.py's ``cont20k`` data (20,000 rows,
               200 groups, continuous x; the CSV that ``scale.write_case``
               writes, default bench/.data/cont20k.csv, made if missing).
               poolwise standardizes x for sampling (xs = (x - mean) / sd,
               np.std ddof 0) and the priors apply on that scale:
                 y_i ~ Bernoulli(logit^-1(alpha_c + beta_z xs_i + sd_g z[g_i]))
                 alpha_c ~ N(0, 1.5)   (log-odds at the mean of x)
                 beta_z ~ N(0, 1)      (per SD of x)
                 sd_g ~ Exponential(1), z_j ~ N(0, 1) (non-centered)
               Reported on the original scale as poolwise does:
               b_x = beta_z / sd, Intercept = alpha_c - beta_z * mean / sd.

``--aggregate`` collapses the Bernoulli rows into binomial cells (60 district
cells for ``intercepts``; district x urban cells for ``slopes``); the
posterior is the same.  ``cont20k`` has no aggregated form (a continuous x:
every row is its own cell).

The JSON written to ``--json`` holds the in-process timings (seconds, all
``time.perf_counter``), diagnostics and posterior means; see bench/README.md.

``--out FILE.nc`` also writes the draws as an ArviZ netCDF file (the DataTree that the tool
returns, with h5netcdf: posterior and sample_stats; NumPyro's draws as the same two groups),
timed as ``save_s``: what a user's script does after sampling (bench/fixed_cost.py).
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
BENCH = REPO / "bench"
CONT20K_DEFAULT = BENCH / ".data" / "cont20k.csv"
TOOLS = ("pymc", "pymc-nutpie", "pymc-auto", "numpyro")
MODELS = ("intercepts", "slopes", "cont20k")


def find_data(explicit: str | None, model_name: str = "intercepts") -> Path:
    if explicit:
        return Path(explicit)
    if model_name == "cont20k":
        if not CONT20K_DEFAULT.is_file():  # the generator of bench/scale.py, not a copy
            sys.path.insert(0, str(BENCH))
            from scale import write_case  # noqa: PLC0415

            write_case("cont20k", CONT20K_DEFAULT)
        return CONT20K_DEFAULT
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


def load_cont20k(path: Path) -> dict:
    """y, x, g of bench/scale.py's cont20k CSV (header y,x,g); g -> 0..G-1 (sorted), and x
    standardized as poolwise does for sampling (mean and np.std, ddof 0, over the rows)."""
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    x = np.array([float(r["x"]) for r in rows])
    labels, idx = np.unique(np.array([int(r["g"]) for r in rows]), return_inverse=True)
    x_mean, x_sd = float(x.mean()), float(x.std())
    return {
        "y": np.array([int(r["y"]) for r in rows], dtype=np.int64),
        "x": x,
        "xs": (x - x_mean) / x_sd,
        "x_mean": x_mean,
        "x_sd": x_sd,
        "g": idx.astype(np.int64),
        "labels": labels,
    }


def load_data(model_name: str, explicit: str | None) -> dict:
    path = find_data(explicit, model_name)
    return load_cont20k(path) if model_name == "cont20k" else load_bangladesh(path)


def build_model(pm, model_name: str, data: dict, aggregate: bool):
    if model_name in ("intercepts", "slopes"):
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
    if model_name == "cont20k":
        y, xs, g = data["y"], data["xs"], data["g"]
        with pm.Model() as model:
            alpha_c = pm.Normal("alpha_c", 0.0, 1.5)  # intercept at the mean of x
            beta_z = pm.Normal("beta_z", 0.0, 1.0)  # per SD of x
            sd_g = pm.Exponential("sd_g", 1.0)
            z = pm.Normal("z", 0.0, 1.0, shape=len(data["labels"]))
            eta = alpha_c + beta_z * xs + sd_g * z[g]  # non-centered group intercepts
            pm.Bernoulli("y", logit_p=eta, observed=y)
        return model, len(y)
    raise SystemExit(f"unknown model {model_name!r}")


def numpyro_model(model_name: str, data: dict, aggregate: bool):
    """(model function, its data arguments, rows or cells): the same models in NumPyro."""
    import jax.numpy as jnp  # noqa: PLC0415
    import numpyro  # noqa: PLC0415
    import numpyro.distributions as dist  # noqa: PLC0415

    if model_name == "intercepts":
        y, d = data["y"], data["district"]
        n_d = len(data["labels"])

        def model(idx, n, k):
            a_bar = numpyro.sample("a_bar", dist.Normal(0.0, 1.5))
            sigma = numpyro.sample("sigma", dist.Exponential(1.0))
            with numpyro.plate("district", n_d):
                a = numpyro.sample("a", dist.Normal(a_bar, sigma))  # centered
            if n is None:
                numpyro.sample("y", dist.Bernoulli(logits=a[idx]), obs=k)
            else:
                numpyro.sample("y", dist.Binomial(total_count=n, logits=a), obs=k)

        if aggregate:
            n = np.bincount(d, minlength=n_d)
            k = np.bincount(d, weights=y, minlength=n_d)
            return model, (None, jnp.asarray(n), jnp.asarray(k)), n_d
        return model, (jnp.asarray(d), None, jnp.asarray(y)), len(y)

    if model_name == "slopes":
        y, urban, d = data["y"], data["urban"], data["district"]
        n_d = len(data["labels"])

        def model(idx, u_col, n, k):
            alpha = numpyro.sample("alpha", dist.Normal(0.0, 1.5))
            beta = numpyro.sample("beta", dist.Normal(0.0, 1.0))
            sd = numpyro.sample("sd_district", dist.Exponential(1.0).expand([2]).to_event(1))
            l_corr = numpyro.sample("l_corr", dist.LKJCholesky(2, concentration=2.0))
            numpyro.deterministic("rho", l_corr[1, 0])
            chol = sd[:, None] * l_corr
            z = numpyro.sample("z", dist.Normal(0.0, 1.0).expand([n_d, 2]).to_event(2))
            u = z @ chol.T  # non-centered district effects
            eta = alpha + u[idx, 0] + (beta + u[idx, 1]) * u_col
            if n is None:
                numpyro.sample("y", dist.Bernoulli(logits=eta), obs=k)
            else:
                numpyro.sample("y", dist.Binomial(total_count=n, logits=eta), obs=k)

        if aggregate:
            cell = d * 2 + urban.astype(np.int64)
            n_all = np.bincount(cell, minlength=2 * n_d)
            k_all = np.bincount(cell, weights=y, minlength=2 * n_d)
            keep = np.flatnonzero(n_all > 0)
            args = (jnp.asarray(keep // 2), jnp.asarray((keep % 2).astype(float)),
                    jnp.asarray(n_all[keep]), jnp.asarray(k_all[keep]))
            return model, args, len(keep)
        return model, (jnp.asarray(d), jnp.asarray(urban), None, jnp.asarray(y)), len(y)

    if model_name == "cont20k":
        n_g = len(data["labels"])

        def model(g, xs, y):
            alpha_c = numpyro.sample("alpha_c", dist.Normal(0.0, 1.5))
            beta_z = numpyro.sample("beta_z", dist.Normal(0.0, 1.0))
            sd_g = numpyro.sample("sd_g", dist.Exponential(1.0))
            with numpyro.plate("g", n_g):
                z = numpyro.sample("z", dist.Normal(0.0, 1.0))
            eta = alpha_c + beta_z * xs + sd_g * z[g]  # non-centered group intercepts
            with numpyro.plate("rows", xs.shape[0]):
                numpyro.sample("y", dist.Bernoulli(logits=eta), obs=y)

        args = (jnp.asarray(data["g"]), jnp.asarray(data["xs"]), jnp.asarray(data["y"]))
        return model, args, len(data["y"])
    raise SystemExit(f"unknown model {model_name!r}")


def chains_over_devices(n_dev: int):
    """A ``chain_method`` for NumPyro's MCMC (it takes a callable JAX transform): the chains
    are split over ``n_dev`` devices with ``jax.pmap`` (what ``chain_method="parallel"`` does)
    and the chains given to one device run one after another (``jax.lax.map``). With fewer
    devices than chains, ``"parallel"`` itself falls back to running *all* chains
    sequentially on one device."""
    import jax  # noqa: PLC0415

    def transform(f):
        def run(map_args):
            split = jax.tree.map(lambda a: a.reshape((n_dev, -1, *a.shape[1:])), map_args)
            out = jax.pmap(lambda a: jax.lax.map(f, a))(split)
            return jax.tree.map(lambda a: a.reshape((-1, *a.shape[2:])), out)

        return run

    return transform


def sample_numpyro(model, model_args, *, seed: int, chains: int, cores: int, tune: int,
                   draws: int, info: dict):
    """NUTS with `chains` chains, `cores` at a time in parallel on the host devices; returns
    {"posterior": Dataset, "sample_stats": Dataset} with dims (chain, draw, ...)."""
    import jax  # noqa: PLC0415
    import xarray as xr  # noqa: PLC0415
    from numpyro.infer import MCMC, NUTS  # noqa: PLC0415

    n_dev = min(cores, chains, jax.local_device_count())
    if chains % n_dev:
        raise SystemExit(f"numpyro: {chains} chains do not split evenly over {n_dev} devices")
    chain_method = "parallel" if n_dev == chains else chains_over_devices(n_dev)
    info["numpyro_chain_method"] = (
        "parallel" if n_dev == chains
        else f"pmap over {n_dev} devices x lax.map over {chains // n_dev} chains each")
    info["jax_devices"] = jax.local_device_count()
    info["jax_x64"] = bool(jax.config.jax_enable_x64)
    mcmc = MCMC(NUTS(model), num_warmup=tune, num_samples=draws, num_chains=chains,
                chain_method=chain_method, progress_bar=False)
    mcmc.run(jax.random.PRNGKey(seed), *model_args, extra_fields=("diverging", "num_steps"))
    # np.asarray waits for JAX's asynchronous result: sampling is over after this
    samples = {k: np.asarray(v, dtype=np.float64)
               for k, v in mcmc.get_samples(group_by_chain=True).items()}
    ext = mcmc.get_extra_fields(group_by_chain=True)
    stats = {"diverging": np.asarray(ext["diverging"]),
             "n_steps": np.asarray(ext["num_steps"], dtype=np.int64)}

    def _ds(arrays: dict) -> xr.Dataset:
        return xr.Dataset(
            {k: (("chain", "draw", *[f"{k}_dim_{i}" for i in range(v.ndim - 2)]), v)
             for k, v in arrays.items()},
            coords={"chain": np.arange(chains)},
        )

    return {"posterior": _ds(samples), "sample_stats": _ds(stats)}


def summarize(az, idata, model_name: str, data: dict) -> dict:
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
    elif model_name == "cont20k":
        names = ["alpha_c", "beta_z", "sd_g", "z"]
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
    if model_name == "cont20k":
        # poolwise's names and original scale (poolwise.model.predictor.to_original_scale)
        b_x = post["beta_z"] / data["x_sd"]
        orig = {"Intercept": post["alpha_c"] - b_x * data["x_mean"], "b_x": b_x,
                "sd_g": post["sd_g"]}
        for v, draws in orig.items():
            means[v] = float(draws.mean())
            sds[v] = float(draws.std())
    else:
        for v in ["a_bar", "sigma"] if model_name == "intercepts" else ["alpha", "beta", "rho"]:
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


def save_netcdf(idata, path: Path) -> None:
    """The draws as an ArviZ netCDF file, written with h5netcdf: the groups of the tool's
    DataTree (PyMC, nutpie) without the warm-up groups nutpie keeps (poolwise does not save
    them either) or, for NumPyro, its posterior and sample_stats."""
    import xarray as xr  # noqa: PLC0415

    if isinstance(idata, dict):  # sample_numpyro's groups
        idata = xr.DataTree.from_dict({f"/{k}": v for k, v in idata.items()})
    else:
        groups = {f"/{k}": v.to_dataset() for k, v in idata.children.items()
                  if not k.startswith("warmup_")}
        attrs = dict(idata.attrs)
        idata = xr.DataTree.from_dict(groups)
        idata.attrs.update(attrs)
    path.parent.mkdir(parents=True, exist_ok=True)
    idata.to_netcdf(path, engine="h5netcdf")


def _versions() -> dict:
    """Versions of the peer packages (from their metadata: nothing more is imported)."""
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    out = {"python": platform.python_version()}
    for pkg in ("pymc", "pytensor", "nutpie", "numpyro", "jax", "jaxlib", "arviz", "numpy",
                "h5netcdf"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tool", choices=TOOLS, required=True)
    ap.add_argument("--model", choices=MODELS, default="intercepts")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", dest="json_out", required=True, help="write results here")
    ap.add_argument("--aggregate", action="store_true", help="binomial cells instead of rows")
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--cores", type=int, default=2,
                    help="chains at a time (numpyro: host devices, chains per parallel round)")
    ap.add_argument("--tune", type=int, default=1000)
    ap.add_argument("--draws", type=int, default=1000)
    ap.add_argument("--data", default=None,
                    help="bangladesh.csv (intercepts, slopes) or the cont20k CSV")
    ap.add_argument("--out", default=None, metavar="FILE.nc",
                    help="also write the draws as an ArviZ netCDF file (h5netcdf)")
    args = ap.parse_args(argv)
    if args.aggregate and args.model == "cont20k":
        ap.error("cont20k has no aggregated form (continuous x: every row is its own cell)")

    timings: dict[str, float | None] = {}

    # ---- import -------------------------------------------------------------
    t = time.perf_counter()
    import warnings

    import arviz as az

    if args.tool == "numpyro":
        import numpyro

        # before JAX starts its backend: one CPU device per parallel chain
        numpyro.set_host_device_count(args.cores)
        import jax  # noqa: F401  (JAX's import is part of NumPyro's cost)
    else:
        import pymc as pm

        if args.tool == "pymc-nutpie":
            import nutpie
    timings["import_s"] = time.perf_counter() - t  # pymc (+nutpie) or numpyro + jax; arviz

    # ---- data + model construction --------------------------------------------
    t = time.perf_counter()
    data = load_data(args.model, args.data)
    if args.tool == "numpyro":
        np_model, np_args, n_obs = numpyro_model(args.model, data, args.aggregate)
    else:
        model, n_obs = build_model(pm, args.model, data, args.aggregate)
    timings["build_s"] = time.perf_counter() - t

    # ---- compile + sample -------------------------------------------------------
    info: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if args.tool == "numpyro":
            # JAX traces and compiles inside mcmc.run: not separable without compiling
            # twice, so compile_s is None and sample_s covers compile + warmup + draws.
            timings["compile_s"] = None
            t = time.perf_counter()
            idata = sample_numpyro(np_model, np_args, seed=args.seed, chains=args.chains,
                                   cores=args.cores, tune=args.tune, draws=args.draws,
                                   info=info)
            timings["sample_s"] = time.perf_counter() - t
        elif args.tool == "pymc-nutpie":
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
    diag = summarize(az, idata, args.model, data)
    timings["diagnostics_s"] = time.perf_counter() - t
    if args.out:
        t = time.perf_counter()
        save_netcdf(idata, Path(args.out))
        timings["save_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - _T0

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
        "versions": _versions(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
    }
    if args.tool != "numpyro":
        import pytensor

        result["pytensor_linker"] = type(pytensor.compile.mode.get_default_mode().linker).__name__
    if args.model == "cont20k":
        result["x_standardization"] = {"mean": data["x_mean"], "sd": data["x_sd"]}
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
