"""Independent long reference run for the varying-slopes model of the seed data.

    use.contraception ~ urban + (1 + urban | district)      (bangladesh, 1934 women, 60 districts)

with poolwise's default priors, written out by hand in NumPy (row-level Bernoulli likelihood,
no compression into cells, no numba, no poolwise code) and sampled with nutpie's public
``from_pyfunc``:

    alpha_c ~ Normal(0, 1.5)      intercept at the mean of urban (poolwise centers fixed columns)
    beta    ~ Normal(0, 1)        urban is 0/1, not scaled
    sigma_a, sigma_b ~ Exponential(1)
    rho     ~ LKJ(2)              for a 2 x 2 matrix: p(rho) proportional to (1 - rho^2)^(2 - 1)
    (u_j, v_j) = (sigma_a z0_j, sigma_b (rho z0_j + sqrt(1 - rho^2) z1_j)),  z ~ Normal(0, 1)
    logit p_i = alpha_c + beta (urban_i - mean(urban)) + u_j[i] + v_j[i] urban_i

and reported like poolwise: Intercept = alpha_c - beta mean(urban), b_urban = beta,
sd_district__Intercept = sigma_a, sd_district__urban = sigma_b, cor = rho,
a_district[j] = Intercept + u_j, b_district__urban[j] = beta + v_j.

Unlike the engine (Cholesky factor from canonical partial correlations, LKJ-Cholesky kernel),
the correlation is sampled directly as rho = tanh(y) with the 2 x 2 LKJ density, so the two
implementations share no code and no derivation beyond the model itself.

Run: .venv/bin/python tests/reference/slopes_bangladesh.py  (a few minutes on 2 cores);
it writes ``slopes_bangladesh.json`` next to this file (means, sds and MCSEs from arviz-stats).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import expit, log_expit

HERE = Path(__file__).resolve().parent
OUT = HERE / "slopes_bangladesh.json"
CHAINS, TUNE, DRAWS, SEED = 8, 2000, 10_000, 20240605


def load():
    from poolwise.data.datasets import example_path

    df = pd.read_csv(example_path("bangladesh"), sep=";")
    y = df["use.contraception"].to_numpy(float)
    u = df["urban"].to_numpy(float)
    labels, codes = np.unique(df["district"].to_numpy(), return_inverse=True)
    return y, u, codes.reshape(-1), labels


def make_logp(y, u, codes, J):
    m = u.mean()
    uc = u - m

    def logp(theta):
        alpha, beta, lsa, lsb, yr = theta[:5]
        z = theta[5:].reshape(J, 2)
        sa, sb, rho = np.exp(lsa), np.exp(lsb), np.tanh(yr)
        c = np.sqrt(1.0 - rho * rho)
        da = sa * z[:, 0]
        db = sb * (rho * z[:, 0] + c * z[:, 1])
        eta = alpha + beta * uc + da[codes] + db[codes] * u
        lp = (
            -0.5 * (alpha / 1.5) ** 2
            - np.log(1.5)
            - 0.5 * np.log(2 * np.pi)
            - 0.5 * beta**2
            - 0.5 * np.log(2 * np.pi)
            + (-sa + lsa)
            + (-sb + lsb)  # Exponential(1) and the log-Jacobians
            + 2.0 * np.log1p(-rho * rho)  # LKJ(2) kernel (1 - rho^2) and tanh Jacobian
            - 0.5 * np.sum(z * z)
            - J * np.log(2 * np.pi)
            + np.sum(y * log_expit(eta) + (1 - y) * log_expit(-eta))
        )
        r = y - expit(eta)
        ga = np.bincount(codes, weights=r, minlength=J)
        gb = np.bincount(codes, weights=r * u, minlength=J)
        grad = np.empty_like(theta)
        grad[0] = r.sum() - alpha / 1.5**2
        grad[1] = np.sum(r * uc) - beta
        grad[2] = np.sum(ga * da) - sa + 1.0
        grad[3] = np.sum(gb * db) - sb + 1.0
        grad[4] = (1 - rho * rho) * np.sum(gb * sb * (z[:, 0] - rho / c * z[:, 1])) - 4.0 * rho
        gz = np.empty((J, 2))
        gz[:, 0] = -z[:, 0] + ga * sa + gb * sb * rho
        gz[:, 1] = -z[:, 1] + gb * sb * c
        grad[5:] = gz.ravel()
        return float(lp), grad

    return logp, m


def check_gradient(logp, dim, rng):
    for _ in range(5):
        x = rng.normal(scale=0.5, size=dim)
        _, g = logp(x)
        fd = np.empty(dim)
        for i in range(dim):
            e = np.zeros(dim)
            e[i] = 1e-6
            fd[i] = (logp(x + e)[0] - logp(x - e)[0]) / 2e-6
        assert np.max(np.abs(fd - g) / np.maximum(1, np.abs(g))) < 1e-5


def main() -> None:
    import arviz_stats as azs
    import nutpie
    import xarray as xr
    from nutpie.compiled_pyfunc import from_pyfunc

    y, u, codes, labels = load()
    J = len(labels)
    logp, m = make_logp(y, u, codes, J)
    dim = 5 + 2 * J
    check_gradient(logp, dim, np.random.default_rng(0))

    def make_logp_fn():
        return logp

    def make_expand_fn(seed1, seed2, chain):
        def expand(theta):
            alpha, beta, lsa, lsb, yr = theta[:5]
            z = theta[5:].reshape(J, 2)
            sa, sb, rho = np.exp(lsa), np.exp(lsb), np.tanh(yr)
            intercept = alpha - beta * m
            return {
                "Intercept": np.asarray(intercept),
                "b_urban": np.asarray(beta),
                "sd_district__Intercept": np.asarray(sa),
                "sd_district__urban": np.asarray(sb),
                "cor_district__Intercept__urban": np.asarray(rho),
                "a_district": intercept + sa * z[:, 0],
                "b_district__urban": beta + sb * (rho * z[:, 0] + np.sqrt(1 - rho**2) * z[:, 1]),
            }

        return expand

    names = [
        "Intercept",
        "b_urban",
        "sd_district__Intercept",
        "sd_district__urban",
        "cor_district__Intercept__urban",
        "a_district",
        "b_district__urban",
    ]
    shapes = [(), (), (), (), (), (J,), (J,)]
    model = from_pyfunc(
        dim,
        make_logp_fn,
        make_expand_fn,
        [np.dtype("float64")] * len(names),
        shapes,
        names,
        coords={"district": [str(v) for v in labels]},
        dims={"a_district": ("district",), "b_district__urban": ("district",)},
        make_initial_point_fn=lambda seed: np.random.default_rng(seed).uniform(-1, 1, dim),
    )
    t0 = time.perf_counter()
    tree = nutpie.sample(
        model, draws=DRAWS, tune=TUNE, chains=CHAINS, seed=SEED, progress_bar=False, cores=2
    )
    elapsed = time.perf_counter() - t0
    post = tree["posterior"].to_dataset()
    stats = tree["sample_stats"].to_dataset()
    s = azs.summary(xr.DataTree.from_dict({"posterior": post}), round_to="none")
    out = {
        "model": "use.contraception ~ urban + (1 + urban | district), poolwise default priors",
        "implementation": "tests/reference/slopes_bangladesh.py (NumPy, nutpie.from_pyfunc)",
        "chains": CHAINS,
        "tune": TUNE,
        "draws": DRAWS,
        "seed": SEED,
        "divergences": int(stats["diverging"].sum()),
        "sampling_s": round(elapsed, 1),
        "versions": {"nutpie": nutpie.__version__, "numpy": np.__version__},
        "parameters": {},
    }
    keep = names[:5] + [
        "a_district[1]",
        "a_district[11]",
        "b_district__urban[1]",
        "b_district__urban[11]",
    ]
    for k in keep:
        row = s.loc[k]
        out["parameters"][k] = {
            "mean": float(row["mean"]),
            "sd": float(row["sd"]),
            "mcse_mean": float(row["mcse_mean"]),
            "ess_bulk": float(row["ess_bulk"]),
            "r_hat": float(row["r_hat"]),
        }
    OUT.write_text(json.dumps(out, indent=2) + "\n")
    json.dump(out, sys.stdout, indent=2)


if __name__ == "__main__":
    main()
