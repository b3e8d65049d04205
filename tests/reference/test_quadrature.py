"""Accuracy of the quadrature reference posterior in ``quadrature.py``.

Three independent checks: a single group against a brute-force integration
in different coordinates, self-convergence under doubled resolution, and the
prior reproduced exactly when there are no data.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
from scipy.integrate import quad
from scipy.interpolate import CubicSpline
from scipy.special import logsumexp, ndtr, ndtri

from .quadrature import reference_posterior

Summary = dict[str, dict[str, float]]
PROBS = {"q05": 0.05, "q95": 0.95}


# ---------------------------------------------------------------------------
# (1) one group against a brute-force integration
# ---------------------------------------------------------------------------


def _psi(z: np.ndarray) -> np.ndarray:
    """Antiderivative of the standard normal CDF."""
    return np.asarray(z * ndtr(z) + np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi))


def _brute_force_one_group(
    y: int,
    n: int,
    mu_prior: tuple[float, float],
    tau_prior: tuple[str, float],
) -> tuple[Summary, dict[str, Callable[[float], float]]]:
    """Posterior moments and CDFs for J = 1 by a dense grid over (log tau, a).

    With one group ``mu`` integrates out analytically:
    ``a | tau ~ N(m0, sqrt(s0^2 + tau^2))`` and ``mu | a, tau`` is normal.  The
    remaining 2-D posterior is summed on a dense uniform grid in ``t = log tau``
    times a uniform grid in ``u = asinh(a)`` (no adaptivity, no inner
    quadrature, no Newton solves).  The CDFs of ``tau`` and ``a`` integrate
    cubic splines of the marginals.  The CDF of ``mu`` averages
    ``Phi((x - E[mu | t, a]) / sd)`` exactly over each a-cell, which is
    second-order accurate even where that kernel is a step (tau -> 0), and is
    Richardson-extrapolated from two a-resolutions.
    """
    m0, s0 = mu_prior
    kind, par = tau_prior
    t_hi = math.log(60.0 / par) if kind == "exponential" else math.log(11.0 * par)
    t = np.linspace(-40.0, t_hi, 1500)
    u = np.linspace(-math.asinh(300.0), math.asinh(300.0), 4001)
    a = np.sinh(u)
    tau = np.exp(t)[:, None]
    if kind == "exponential":
        log_prior_t = math.log(par) - par * tau + t[:, None]
    else:
        log_prior_t = (
            0.5 * math.log(2.0 / math.pi) - math.log(par) - 0.5 * (tau / par) ** 2 + t[:, None]
        )
    var_a = s0**2 + tau**2
    log_p = (
        log_prior_t
        - 0.5 * (a - m0) ** 2 / var_a
        - 0.5 * np.log(var_a)
        + y * a
        - n * np.logaddexp(0.0, a)
        + np.log(np.cosh(u))
    )
    w = np.exp(log_p - logsumexp(log_p))
    shrink = s0**2 / var_a
    mean_mu = shrink * a + (1.0 - shrink) * m0  # E[mu | t, a]
    var_mu = shrink * tau**2  # Var[mu | t, a]
    raw = {
        "mu": (np.sum(w * mean_mu), np.sum(w * (mean_mu**2 + var_mu))),
        "tau": (np.sum(w * tau), np.sum(w * tau**2)),
        "a[0]": (np.sum(w * a), np.sum(w * a**2)),
    }
    moments = {k: {"mean": float(m), "sd": math.sqrt(s - m * m)} for k, (m, s) in raw.items()}

    spline_t = CubicSpline(t, w.sum(axis=1) / (t[1] - t[0]))
    spline_u = CubicSpline(u, w.sum(axis=0) / (u[1] - u[0]))

    # mu: cell averages of the conditional CDF over the a-cells, on the
    # significant part of the grid, at the full and at half a-resolution
    levels = []
    for step in (1, 2):
        ww = w[:, ::step] / w[:, ::step].sum()
        half = 0.5 * step * (u[1] - u[0])
        rows, cols = np.nonzero(ww > 1e-20)
        uu = u[::step][cols]
        sh = np.broadcast_to(shrink, w.shape)[rows, 0]
        levels.append(
            (
                ww[rows, cols],
                sh * np.sinh(uu - half) + (1.0 - sh) * m0,  # E[mu | t, a] at the cell edges
                sh * np.sinh(uu + half) + (1.0 - sh) * m0,
                np.sqrt(sh) * tau[rows, 0],  # sd of mu | t, a
            )
        )

    def cdf_mu_level(level: int, x: float) -> float:
        weight, edge_lo, edge_hi, sd = levels[level]
        z_lo, z_hi = (x - edge_lo) / sd, (x - edge_hi) / sd  # z_lo > z_hi
        cell = (z_hi >= 40.0).astype(float)  # cells wholly below x, up to Phi(-40)
        mixed = (z_lo > -40.0) & (z_hi < 40.0)
        zl, zh = z_lo[mixed], z_hi[mixed]
        cell[mixed] = (_psi(zl) - _psi(zh)) / (zl - zh)
        return float(np.sum(weight * cell))

    cdfs: dict[str, Callable[[float], float]] = {
        "mu": lambda x: (4.0 * cdf_mu_level(0, x) - cdf_mu_level(1, x)) / 3.0,
        "tau": lambda x: float(spline_t.integrate(t[0], math.log(x))),
        "a[0]": lambda x: float(spline_u.integrate(u[0], math.asinh(x))),
    }
    return moments, cdfs


@pytest.mark.parametrize(
    ("y", "n", "mu_prior", "tau_prior"),
    [
        (7, 20, (0.0, 1.5), ("exponential", 1.0)),
        (0, 10, (0.5, 1.0), ("halfnormal", 1.0)),  # all zeros
        (12, 12, (0.0, 1.5), ("exponential", 2.0)),  # all ones
    ],
)
def test_single_group_matches_brute_force(
    y: int, n: int, mu_prior: tuple[float, float], tau_prior: tuple[str, float]
) -> None:
    ref = reference_posterior([y], [n], mu_prior=mu_prior, tau_prior=tau_prior)
    moments, cdfs = _brute_force_one_group(y, n, mu_prior, tau_prior)
    for name in ("mu", "tau", "a[0]"):
        for stat in ("mean", "sd"):
            assert ref[name][stat] == pytest.approx(moments[name][stat], abs=1e-7), (name, stat)
        for stat, prob in PROBS.items():
            x = ref[name][stat]
            step = 1e-3 * ref[name]["sd"]
            density = (cdfs[name](x + step) - cdfs[name](x - step)) / (2.0 * step)
            # first-order distance from x to the brute-force quantile
            quantile_error = (cdfs[name](x) - prob) / density
            assert abs(quantile_error) < 1e-6, (name, stat, quantile_error)


# ---------------------------------------------------------------------------
# (2) convergence under doubled resolution
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("y", "n"),
    [
        ((60, 5, 2), (117, 20, 2)),
        ((0, 12, 9, 0), (0, 12, 30, 15)),  # empty, all-ones, ordinary, all-zeros
    ],
)
def test_doubling_the_resolution_changes_nothing(y: tuple[int, ...], n: tuple[int, ...]) -> None:
    base = reference_posterior(y, n)
    fine = reference_posterior(y, n, n_grid=400, n_gh=80)
    assert list(base) == ["mu", "tau"] + [f"a[{j}]" for j in range(len(y))]
    for name, summary in base.items():
        assert list(summary) == ["mean", "sd", "q05", "q95"]
        for stat, value in summary.items():
            # observed changes are below 3e-8
            assert value == pytest.approx(fine[name][stat], abs=1e-6), (name, stat)


# ---------------------------------------------------------------------------
# (3) no data: the prior comes back
# ---------------------------------------------------------------------------


def _prior_tau(kind: str, par: float) -> dict[str, float]:
    if kind == "exponential":
        return {
            "mean": 1.0 / par,
            "sd": 1.0 / par,
            "q05": -math.log(0.95) / par,
            "q95": -math.log(0.05) / par,
        }
    return {
        "mean": par * math.sqrt(2.0 / math.pi),
        "sd": par * math.sqrt(1.0 - 2.0 / math.pi),
        "q05": par * float(ndtri(0.525)),
        "q95": par * float(ndtri(0.975)),
    }


def _prior_intercept_quantile(
    prob: float, mu_prior: tuple[float, float], kind: str, par: float
) -> float:
    """Quantile of a = mu + tau z under the prior, by 1-D quadrature over tau."""
    m0, s0 = mu_prior

    def tau_density(tau: float) -> float:
        if kind == "exponential":
            return par * math.exp(-par * tau)
        return math.sqrt(2.0 / math.pi) / par * math.exp(-0.5 * (tau / par) ** 2)

    def cdf(x: float) -> float:
        def integrand(tau: float) -> float:
            return tau_density(tau) * float(ndtr((x - m0) / math.hypot(s0, tau)))

        return float(quad(integrand, 0.0, math.inf, epsabs=1e-14, epsrel=1e-12, limit=200)[0])

    lo, hi = m0 - 50.0, m0 + 50.0
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if cdf(mid) < prob else (lo, mid)
    return 0.5 * (lo + hi)


@pytest.mark.parametrize("tau_prior", [("exponential", 2.0), ("halfnormal", 1.5)])
def test_no_data_returns_the_prior(tau_prior: tuple[str, float]) -> None:
    kind, par = tau_prior
    mu_prior = (0.3, 0.8)
    ref = reference_posterior([0, 0, 0], [0, 0, 0], mu_prior=mu_prior, tau_prior=tau_prior)
    z95 = float(ndtri(0.95))
    expected_mu = {"mean": 0.3, "sd": 0.8, "q05": 0.3 - 0.8 * z95, "q95": 0.3 + 0.8 * z95}
    expected_tau = _prior_tau(kind, par)
    mean_tau2 = expected_tau["sd"] ** 2 + expected_tau["mean"] ** 2
    expected_a = {
        "mean": 0.3,
        "sd": math.sqrt(0.8**2 + mean_tau2),
        "q05": _prior_intercept_quantile(0.05, mu_prior, kind, par),
        "q95": _prior_intercept_quantile(0.95, mu_prior, kind, par),
    }
    for stat in ("mean", "sd", "q05", "q95"):
        assert ref["mu"][stat] == pytest.approx(expected_mu[stat], abs=1e-8), stat
        assert ref["tau"][stat] == pytest.approx(expected_tau[stat], abs=1e-8), stat
        for j in range(3):
            assert ref[f"a[{j}]"][stat] == pytest.approx(expected_a[stat], abs=1e-8), stat


# ---------------------------------------------------------------------------
# interface
# ---------------------------------------------------------------------------


def test_groups_with_equal_data_share_their_summary() -> None:
    ref = reference_posterior(np.array([3, 1, 3]), np.array([9, 4, 9]), n_grid=64, n_gh=16)
    assert list(ref) == ["mu", "tau", "a[0]", "a[1]", "a[2]"]
    assert ref["a[0]"] == ref["a[2]"]
    assert ref["a[0]"] != ref["a[1]"]


@pytest.mark.parametrize(
    ("y", "n", "kwargs"),
    [
        ([3], [2], {}),
        ([-1], [2], {}),
        ([1.5], [3], {}),
        ([1, 2], [3], {}),
        ([], [], {}),
        ([1], [3], {"tau_prior": ("cauchy", 1.0)}),
        ([1], [3], {"tau_prior": ("exponential", 0.0)}),
        ([1], [3], {"mu_prior": (0.0, -1.0)}),
    ],
)
def test_invalid_input_is_rejected(
    y: list[float], n: list[float], kwargs: dict[str, object]
) -> None:
    with pytest.raises(ValueError):
        reference_posterior(y, n, **kwargs)  # type: ignore[arg-type]
