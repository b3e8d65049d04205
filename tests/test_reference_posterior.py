"""poolwise against the exact quadrature reference posterior (docs/reliability.md C2).

Model: y_j ~ Binomial(n_j, logit^-1(a_j)), a_j ~ Normal(mu, tau), mu ~ Normal(0, 1.5),
tau ~ Exponential(1) or HalfNormal(1). In poolwise's names mu = ``Intercept``,
tau = ``sd_g``, a_j = ``a_g[label]``. For every parameter the posterior mean, sd and 5% / 95%
quantiles must agree with the reference within 4 Monte Carlo standard errors
(z = |estimate - exact| / MCSE < 4; MCSE of the mean, of the sd, and of each quantile from
arviz-stats), on fits that pass R-hat <= 1.01, bulk and tail ESS >= 400 for every parameter,
and have no divergences. Seeds are fixed, so the outcome is deterministic.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
from arviz_stats.base import array_stats
from reference.quadrature import reference_posterior

import poolwise

Z_MAX = 4.0
RHAT_MAX = 1.01
ESS_MIN = 400
STATS = ("mean", "sd", "q05", "q95")

SEEDS_R = [10, 23, 23, 26, 17, 5, 53, 55, 32, 46, 10, 8, 10, 8, 23, 0, 3, 22, 15, 32, 3]
SEEDS_N = [39, 62, 81, 51, 39, 6, 74, 72, 51, 79, 13, 16, 30, 28, 45, 4, 12, 41, 30, 51, 7]


@dataclass(frozen=True)
class Case:
    name: str
    y: tuple[int, ...]
    n: tuple[int, ...]
    labels: tuple[object, ...]
    tau_prior: tuple[str, float]
    fit_kwargs: tuple[tuple[str, object], ...]
    bernoulli_rows: bool = False  # fit the expanded 0/1 rows instead of binomial cells

    def frame(self) -> tuple[str, pd.DataFrame]:
        labels = np.array(self.labels, dtype=object)
        if self.bernoulli_rows:
            g = np.repeat(np.arange(len(self.y)), self.n)
            y = np.concatenate(
                [[1] * k + [0] * (m - k) for k, m in zip(self.y, self.n, strict=True)]
            )
            return "y ~ 1 + (1 | g)", pd.DataFrame({"y": y, "g": labels[g]})
        frame = pd.DataFrame({"y": self.y, "n": self.n, "g": labels})
        return "y | trials(n) ~ 1 + (1 | g)", frame


CASES = [
    # the seed's failing case: bangladesh districts 1-3 (30/117, 7/20, 2/2), as Bernoulli rows
    Case("three", (30, 7, 2), (117, 20, 2), (1, 2, 3), ("exponential", 1.0),
         (("parameterization", "noncentered"), ("target_accept", 0.99), ("draws", 4000)),
         bernoulli_rows=True),
    # seeds-like: the 21 plates of Crowder's seeds data (posteriordb seeds_data r, n)
    Case("seeds21", tuple(SEEDS_R), tuple(SEEDS_N), tuple(range(1, 22)), ("half_normal", 1.0),
         ()),
    # near-empty (n = 1), all-0 and all-1 groups, with awkward string labels
    Case("extreme", (0, 1, 0, 0, 5, 12, 3, 7), (1, 1, 8, 25, 5, 12, 10, 15),
         ("x y", "é", "10", "2", "a", "B", "zz", "Ünï"), ("exponential", 1.0), ()),
]


def _prior(tau_prior: tuple[str, float]) -> poolwise.Prior:
    kind, value = tau_prior
    return poolwise.exponential(value) if kind == "exponential" else poolwise.half_normal(value)


def _draws(post, key: str, labels: tuple[object, ...]) -> np.ndarray:
    """(chain, draw) draws of a reference key: mu, tau or a[j]."""
    if key == "mu":
        return post["Intercept"].values
    if key == "tau":
        return post["sd_g"].values
    j = int(key[2:-1])
    return post["a_g"].sel(g=labels[j]).transpose("chain", "draw").values


def compare(case: Case, seed: int = 20260611) -> tuple[pd.DataFrame, poolwise.Fit]:
    """One row per (parameter, statistic): estimate, exact value, MCSE, z, R-hat, ESS."""
    ref = reference_posterior(case.y, case.n, mu_prior=(0.0, 1.5), tau_prior=case.tau_prior)
    formula, frame = case.frame()
    priors = poolwise.Priors(intercept=poolwise.normal(0.0, 1.5), sd=_prior(case.tau_prior))
    with warnings.catch_warnings():
        # few groups, all-0 / all-1 groups: expected notes about these data sets
        warnings.simplefilter("ignore", poolwise.DataWarning)
        fit = poolwise.fit(formula, frame, priors=priors, seed=seed, **dict(case.fit_kwargs))
    post = fit.posterior
    rows = []
    for key, exact in ref.items():
        x = _draws(post, key, case.labels)
        flat = x.ravel()
        est = {"mean": flat.mean(), "sd": flat.std(ddof=1),
               "q05": np.quantile(flat, 0.05), "q95": np.quantile(flat, 0.95)}
        mcse = {
            "mean": array_stats.mcse(x, method="mean"),
            "sd": array_stats.mcse(x, method="sd"),
            "q05": array_stats.mcse(x, method="quantile", prob=0.05),
            "q95": array_stats.mcse(x, method="quantile", prob=0.95),
        }
        rhat = float(array_stats.rhat(x))
        ess_bulk = float(array_stats.ess(x, method="bulk"))
        ess_tail = float(array_stats.ess(x, method="tail", prob=(0.05, 0.95)))
        for stat in STATS:
            rows.append({
                "case": case.name, "parameter": key, "stat": stat, "estimate": float(est[stat]),
                "exact": exact[stat], "mcse": float(mcse[stat]),
                "z": abs(float(est[stat]) - exact[stat]) / float(mcse[stat]),
                "rhat": rhat, "ess_bulk": ess_bulk, "ess_tail": ess_tail,
            })
    return pd.DataFrame(rows), fit


@pytest.fixture(scope="module", params=CASES, ids=[c.name for c in CASES])
def comparison(request) -> tuple[Case, pd.DataFrame, poolwise.Fit]:
    table, fit = compare(request.param)
    return request.param, table, fit


def test_fit_is_trustworthy(comparison):
    case, table, fit = comparison
    assert fit.ok, [f.message for f in fit.diagnosis.findings if f.severity == "error"]
    assert fit.diagnosis.divergences == 0
    assert table["rhat"].max() <= RHAT_MAX, table.loc[table["rhat"].idxmax()].to_dict()
    assert table["ess_bulk"].min() >= ESS_MIN, table.loc[table["ess_bulk"].idxmin()].to_dict()
    assert table["ess_tail"].min() >= ESS_MIN, table.loc[table["ess_tail"].idxmin()].to_dict()


@pytest.mark.parametrize("stat", STATS)
def test_agrees_with_exact_posterior(comparison, stat):
    case, table, _ = comparison
    sub = table[table["stat"] == stat]
    assert len(sub) == len(case.y) + 2  # mu, tau and every group
    worst = sub.loc[sub["z"].idxmax()]
    assert worst["z"] < Z_MAX, (
        f"{case.name}: {worst['parameter']} {stat} = {worst['estimate']:.4f}, exact "
        f"{worst['exact']:.4f}, MCSE {worst['mcse']:.4f} (z = {worst['z']:.2f})"
    )


def test_labels_map_to_the_right_groups(comparison):
    """A mislabelled group would show as a huge z; also check the order directly: the exact
    posterior means of the groups, sorted, match the estimates sorted the same way."""
    case, table, _ = comparison
    means = table[(table["stat"] == "mean") & table["parameter"].str.startswith("a[")]
    assert np.corrcoef(means["estimate"], means["exact"])[0, 1] > 0.99
