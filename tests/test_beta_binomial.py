"""The beta-binomial family: the engine's density and gradient, phi's prior, the check that
flags overdispersion in a binomial fit (cbpp-like data: yes; data without it: no), its errors,
the command line and saved fits. Every quantity computed from its draws is held to a direct
computation with SciPy's betabinom in tests/test_consistency.py."""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.special import expit

import poolwise
from poolwise.cli import main
from poolwise.engine import density as D
from poolwise.engine.layout import pack
from poolwise.errors import SpecError
from poolwise.inference.diagnostics.predictive import overdispersion_p_value
from poolwise.model.spec import build_model


def herds(seed: int, extra_sd: float) -> pd.DataFrame:
    """cbpp-like: 15 herds x 4 periods, trials 5-30; ``extra_sd``: an observation-level effect
    (the overdispersion a herd effect does not explain)."""
    rng = np.random.default_rng(seed)
    rows = []
    for h in range(15):
        u = rng.normal(0, 0.5)
        for period in range(4):
            size = int(rng.integers(5, 30))
            p = expit(-1.5 + u - 0.4 * period + rng.normal(0, extra_sd))
            rows.append({"herd": h, "period": period, "size": size,
                         "incidence": int(rng.binomial(size, p))})
    return pd.DataFrame(rows)


FORMULA = "incidence | trials(size) ~ period + (1 | herd)"


@pytest.fixture(scope="module")
def spec():
    return build_model(FORMULA, herds(1, 0.8), family="beta_binomial",
                       parameterization="noncentered")


def test_the_engine_gradient_matches_finite_differences(spec, fd_gradient):
    packed = pack(spec)
    assert packed.param_names[-1] == "log_phi" and packed.variables[-1].name == "phi"
    rng = np.random.default_rng(3)
    for _ in range(10):
        x = rng.normal(0.0, 0.7, packed.dim)
        grad = np.empty(packed.dim)
        D.logp_grad(x, grad, packed.ib, packed.fb)
        fd = fd_gradient(packed, x, 1e-6)
        assert (np.abs(grad - fd) / np.maximum(1.0, np.abs(fd))).max() < 1e-5


def test_phi_has_its_prior_and_jacobian(spec):
    """Without data the density is the priors: moving log phi changes it by phi's prior
    exponential(0.05) and the Jacobian of phi = exp(log phi)."""
    d = spec.design
    empty = replace(spec, design=replace(d, y=0 * d.y, n=0 * d.n, row_y=0 * d.row_y,
                                         row_n=0 * d.row_n, log_binom_const=0.0))
    packed = pack(empty)
    x = np.zeros(packed.dim)
    grad = np.empty(packed.dim)
    base = D.logp_grad(x, grad, packed.ib, packed.fb)
    for log_phi in (-1.0, 0.5, 3.0):
        x2 = x.copy()
        x2[-1] = log_phi
        got = D.logp_grad(x2, grad, packed.ib, packed.fb) - base
        prior = stats.expon(scale=20.0)
        want = (prior.logpdf(np.exp(log_phi)) + log_phi) - (prior.logpdf(1.0) + 0.0)
        assert got == pytest.approx(want, rel=1e-12, abs=1e-12)


def test_the_binomial_limit_loses_no_digits():
    """phi -> infinity: the beta-binomial tends to the binomial, computed without cancellation."""
    for y, n, p in ((3.0, 10.0, 0.3), (0.0, 40.0, 0.05), (25.0, 25.0, 0.9)):
        v = D.beta_binomial_loglik(y, n, p, 1 - p, 1e12)[0]
        assert v == pytest.approx(y * np.log(p) + (n - y) * np.log(1 - p), rel=1e-9, abs=1e-9)


@pytest.mark.parametrize(("extra_sd", "flagged"), [(0.9, True), (0.0, False)])
def test_overdispersion_is_flagged_only_where_it_is(extra_sd, flagged):
    df = herds(7, extra_sd)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = poolwise.fit(FORMULA, df, seed=2, tune=400, draws=400, prior_sensitivity=False)
    codes = [f.code for f in fit.diagnosis.findings]
    assert ("overdispersion" in codes) is flagged
    if flagged:
        msg = next(f.message for f in fit.diagnosis.findings if f.code == "overdispersion")
        assert "family='beta_binomial'" in msg and "(1 | row_id)" in msg
    assert fit.ok  # a warning: the fit itself converged


def test_0_1_rows_have_no_overdispersion_to_check(bangladesh_first3):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = poolwise.fit("use.contraception ~ 1 + (1 | district)", bangladesh_first3,
                           seed=1, tune=200, draws=200, prior_sensitivity=False)
    assert overdispersion_p_value(fit.spec, fit.posterior) is None


def test_errors_name_the_family_and_the_fix(bangladesh_first3):
    with pytest.raises(SpecError, match="did you mean 'beta_binomial'"):
        poolwise.fit(FORMULA, "no.csv", family="betabinomial")
    with warnings.catch_warnings(), pytest.raises(SpecError,
                                                  match="every row here has one trial"):
        warnings.simplefilter("ignore")  # three districts: a DataWarning
        poolwise.fit("use.contraception ~ 1 + (1 | district)", bangladesh_first3,
                     family="beta_binomial")
    with pytest.raises(SpecError, match="a prior is given for 'phi'"):
        poolwise.fit(FORMULA, "no.csv", priors=poolwise.Priors(phi="exponential(1)"))


def test_the_command_line_fits_saves_and_loads_it(tmp_path, capsys):
    data = tmp_path / "herds.csv"
    herds(1, 0.8).to_csv(data, index=False)
    out = tmp_path / "bb"
    rc = main(["fit", str(data), "-f", FORMULA, "--family", "beta_binomial", "--seed", "3",
               "--tune", "300", "--draws", "300", "--out", str(out)])
    printed = capsys.readouterr().out
    assert rc in (0, 1) and "phi" in printed
    loaded = poolwise.load_fit(out)
    assert loaded.spec.family == "beta_binomial" and "phi" in loaded.posterior
    assert loaded.spec.priors.phi == poolwise.exponential(0.05)


def test_a_misspelled_family_is_a_clear_error_before_any_data_is_read(capsys):
    import poolwise
    from poolwise.cli import main
    from poolwise.errors import SpecError

    with pytest.raises(SpecError, match=r"family must be one of binomial, beta_binomial; got "
                       r"'betabinomial' \(did you mean 'beta_binomial'\?\)"):
        poolwise.fit("y ~ 1", "no-such-file.csv", family="betabinomial")
    with pytest.raises(SystemExit) as stop:  # a usage error, as every invalid choice
        main(["fit", "no-such-file.csv", "-f", "y ~ 1", "--family", "betabinomial"])
    err = capsys.readouterr().err
    assert stop.value.code == 2
    assert "invalid choice: 'betabinomial' (choose from 'binomial', 'beta_binomial')" in err
