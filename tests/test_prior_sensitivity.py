"""Power-scaling prior sensitivity of the fixed effects (issue 13, item 11): the intercept
and the coefficients are checked like the group SDs, each prior on the scale where it applies,
and the finding names the prior."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import poolwise
from poolwise.inference.diagnostics import (
    PSENSE_THRESHOLD,
    check_sensitivity,
    prior_scale_draws,
)
from poolwise.model.priors import Priors, normal
from poolwise.model.spec import build_model


def _fit(formula: str, data: pd.DataFrame, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return poolwise.fit(formula, data, seed=1, tune=500, draws=500, **kw)


@pytest.fixture(scope="module")
def coral_like() -> pd.DataFrame:
    """Coral-predation-like: predation (y) by treatment (x, 0/1) in 6 blocks of 8; under
    treatment 1 of 24 corals is eaten, so the treatment's log-odds ratio is weakly identified
    (its maximum-likelihood estimate is about -3.6 with a huge standard error)."""
    rng = np.random.default_rng(1)
    g = np.repeat(np.arange(6), 8)
    x = np.tile([0, 1], 24)
    y = np.where(x == 1, 0, rng.binomial(1, 0.6, 48))
    y[1] = 1
    return pd.DataFrame({"y": y, "x": x, "g": g})


def test_prior_dominated_coefficient_is_named_with_its_prior(coral_like):
    fit = _fit("y ~ x + (1 | g)", coral_like)
    ps, _ = fit.diagnosis.sensitivity["b_x"]
    assert ps >= PSENSE_THRESHOLD
    found = [f for f in fit.diagnosis.findings
             if f.code in ("prior_sensitive", "prior_dominated") and f.parameters == ("b_x",)]
    assert len(found) == 1
    msg = found[0].message
    assert "its prior normal(0, 1)" in msg and "normal(0, 10)" in msg
    assert f"{ps:.3f}" in msg
    # the finding is right: under the wider prior the estimate moves a long way
    wide = _fit("y ~ x + (1 | g)", coral_like, priors=Priors(b=normal(0, 10)))
    b1 = float(fit.posterior["b_x"].mean())
    b10 = float(wide.posterior["b_x"].mean())
    assert b10 < b1 - 1.0, (b1, b10)


def test_well_identified_coefficient_is_not_flagged(bangladesh):
    fit = _fit("use.contraception ~ urban + (1 | district)", bangladesh)
    ps, _ = fit.diagnosis.sensitivity["b_urban"]
    assert ps < PSENSE_THRESHOLD
    assert "Intercept" in fit.diagnosis.sensitivity
    flagged = {p for f in fit.diagnosis.findings
               if f.code in ("prior_sensitive", "prior_dominated") for p in f.parameters}
    assert "b_urban" not in flagged and "Intercept" not in flagged


def test_priors_are_evaluated_on_the_standardized_scale():
    rng = np.random.default_rng(3)
    n = 200
    df = pd.DataFrame({
        "y": rng.binomial(1, 0.4, n),
        "age": rng.normal(30.0, 9.0, n),
        "urban": rng.binomial(1, 0.3, n),
    })
    spec = build_model("y ~ age + urban", df)
    d = spec.design
    k_age, k_urb = d.fixed_names.index("age"), d.fixed_names.index("urban")
    s_age = float(np.std(df["age"]))
    assert d.x_scale[k_age] == pytest.approx(s_age) and d.x_scale[k_urb] == 1.0
    dims = ("chain", "draw")
    b_age = rng.normal(-0.02, 0.01, (2, 50))
    b_urb = rng.normal(0.5, 0.1, (2, 50))
    icpt = rng.normal(-0.3, 0.2, (2, 50))
    post = xr.Dataset({"Intercept": (dims, icpt), "b_age": (dims, b_age),
                       "b_urban": (dims, b_urb)})
    got = {name: (prior, x) for name, prior, x in prior_scale_draws(post, spec)}
    # coefficient per SD of age; 0/1 indicator unscaled; intercept at the predictors' means
    np.testing.assert_allclose(got["b_age"][1], b_age * s_age)
    np.testing.assert_allclose(got["b_urban"][1], b_urb)
    want = icpt + b_age * df["age"].mean() + b_urb * df["urban"].mean()
    np.testing.assert_allclose(got["Intercept"][1], want)
    assert str(got["b_age"][0]) == "normal(0, 1)" and str(got["Intercept"][0]) == "normal(0, 1.5)"
    # the finding says on which scale the prior applies
    out = check_sensitivity({"b_age": (0.12, 0.2)}, spec)
    assert len(out) == 1 and out[0].code == "prior_sensitive"
    assert "its prior normal(0, 1) on the standardized scale" in out[0].message
    assert f"per {np.std(df['age']):.3g} units of age" in out[0].message
    assert "normal(0, 10)" in out[0].message
    assert check_sensitivity({"b_age": (0.01, 0.2)}, spec) == []


def test_skipped_check_can_be_added_later_with_the_same_numbers(coral_like):
    """``prior_sensitivity=False`` skips the check (no numbers, no findings);
    ``with_log_likelihood`` adds it afterwards, equal to a fit that ran it."""
    full = _fit("y ~ x + (1 | g)", coral_like, log_likelihood=False)
    lean = _fit("y ~ x + (1 | g)", coral_like, log_likelihood=False, prior_sensitivity=False)
    codes = ("prior_sensitive", "prior_dominated")
    assert lean.diagnosis.sensitivity == {}
    assert not [f for f in lean.diagnosis.findings if f.code in codes]
    xr.testing.assert_identical(lean.posterior.drop_attrs(), full.posterior.drop_attrs())
    from poolwise.inference.sampling import with_log_likelihood

    later = with_log_likelihood(lean, group=False)
    assert later.diagnosis.sensitivity == full.diagnosis.sensitivity
    assert [f.message for f in later.diagnosis.findings if f.code in codes] == \
        [f.message for f in full.diagnosis.findings if f.code in codes]
    assert "log_likelihood" not in later.idata.children


def test_quiet_cli_without_outputs_skips_the_check_and_no_run_imports_scipy_stats(tmp_path):
    """`poolwise fit --quiet` with nothing to save prints only the status line, which the
    prior-sensitivity findings (warnings) never change: the check is skipped. With
    --prior-sensitivity or --out it runs (and its numbers are saved); in no case does the
    command import arviz-stats or scipy.stats (about 0.5 s of imports:
    :mod:`poolwise.inference.power_scaling` computes psense's numbers, and the default priors'
    log densities are NumPy's)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from poolwise.cli import main\n"
        "from poolwise.inference.diagnostics import sensitivity\n"
        "calls = []\n"
        "real = sensitivity.prior_sensitivity\n"
        "sensitivity.prior_sensitivity = lambda *a: calls.append(1) or real(*a)\n"
        "rc = main(['fit', '--example', 'bangladesh', '--chains', '2', '--tune', '150',\n"
        "           '--draws', '150', '--seed', '1', '--quiet'{out}])\n"
        "print(rc, len(calls), 'arviz_stats' in sys.modules, 'scipy.stats' in sys.modules)\n"
    )

    def run(out: str) -> list[str]:
        done = subprocess.run([sys.executable, "-c", code.format(out=out)], capture_output=True,
                              text=True, check=True)
        return done.stdout.splitlines()[-1].split()[1:]

    assert run("") == ["0", "False", "False"]
    assert run(", '--prior-sensitivity'") == ["1", "False", "False"]
    out = tmp_path / "fit"
    assert run(f", '--out', r'{out}'") == ["1", "False", "False"]
    assert set(poolwise.load_fit(out).diagnosis.sensitivity) == {"Intercept", "sd_district"}


def _psense_case(rng: np.random.Generator, chains: int, draws: int) -> tuple:
    """Autocorrelated draws of a parameter, its log prior and a total log-likelihood."""
    x = (np.cumsum(rng.normal(size=(chains, draws)), axis=1) * rng.uniform(0, 0.2)
         + rng.normal(size=(chains, draws)))
    if rng.uniform() < 0.4:
        x = np.abs(x)  # a positive parameter (an SD)
    log_prior = -0.5 * x**2 * rng.uniform(0.1, 3) + rng.normal(size=x.shape) * 0.1
    log_lik = -x * rng.uniform(-5, 5) + rng.normal(size=x.shape) * rng.uniform(0, 3)
    return x, log_prior, log_lik


@pytest.mark.parametrize("chains,draws", [(4, 1000), (2, 500), (1, 301), (4, 101)])
def test_power_scaling_equals_arviz_stats_psense(chains, draws):
    """poolwise's power-scaling sensitivity is arviz-stats' psense, number for number."""
    import arviz_stats as azs

    from poolwise.inference.power_scaling import power_scale_sensitivity

    rng = np.random.default_rng(chains * 1000 + draws)
    dims = ("chain", "draw")
    coords = {"chain": np.arange(chains), "draw": np.arange(draws)}
    for _ in range(6):
        x, log_prior, log_lik = _psense_case(rng, chains, draws)
        tree = xr.DataTree.from_dict({
            "posterior": xr.Dataset({"t": (dims, x)}, coords=coords),
            "log_prior": xr.Dataset({"t": (dims, log_prior)}, coords=coords),
            "log_likelihood": xr.Dataset({"y": (dims, log_lik)}, coords=coords),
        })
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            want_prior = float(azs.psense(tree, var_names=["t"], group="prior")["t"])
            want_lik = float(azs.psense(tree, var_names=["t"], group="likelihood")["t"])
        with np.errstate(all="ignore"):
            got_prior = power_scale_sensitivity(x, log_prior)
            got_lik = power_scale_sensitivity(x, log_lik)
        assert got_prior == pytest.approx(want_prior, rel=1e-10, abs=1e-12)
        assert got_lik == pytest.approx(want_lik, rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("n", [4000, 2000, 200, 37])
def test_psis_log_weights_equal_arviz_stats_psislw(n):
    """approx's importance weights: arviz-stats' psislw (of the negated log ratios), number for
    number, for light and heavy tails (Pareto k from below 0 to above 1) and few draws
    (n / 5 in the tail)."""
    from arviz_stats.base import array_stats

    from poolwise.inference.power_scaling import psis_log_weights

    rng = np.random.default_rng(n)
    for scale, df in [(0.1, None), (1.0, None), (1.0, 3.0), (2.0, 1.0), (3.0, 0.7)]:
        z = rng.standard_t(df, size=n) if df else rng.normal(size=n)
        logw = scale * z
        got, k = psis_log_weights(logw - logw.max())
        want, want_k = array_stats.psislw(logw.max() - logw, r_eff=1.0)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
        # NaN both (the tail's first quartile at its smallest: no fit) for the heaviest
        np.testing.assert_allclose(k, float(want_k), rtol=1e-12, atol=1e-12, equal_nan=True)


@pytest.mark.slow  # runs the compiled approximation: about a minute of compiling on a fresh
# machine, which the default tier cannot spend (tests/test_approx.py)
def test_the_approximate_path_does_not_import_arviz_stats():
    """``fit --method approx --out`` imports neither arviz-stats nor scipy.stats (0.4-0.5 s of
    its start): the importance weights are :func:`psis_log_weights`."""
    import subprocess
    import sys

    code = (
        "import sys, tempfile\n"
        "from poolwise.cli import main\n"
        "rc = main(['fit', '--example', 'bangladesh', '--method', 'approx', '--draws', '200',\n"
        "           '--seed', '1', '--quiet', '--out', tempfile.mkdtemp() + '/f'])\n"
        "print(rc, 'arviz_stats' in sys.modules, 'scipy.stats' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.splitlines()[-1].split() == ["0", "False", "False"]


def test_fast_fourier_length_is_scipys():
    from scipy.fft import next_fast_len

    from poolwise.inference.power_scaling import _next_fast_len

    for n in [*range(1, 3000), 3999, 4000, 4001, 8000, 20002, 65537]:
        assert _next_fast_len(n) == next_fast_len(n, real=True), n
