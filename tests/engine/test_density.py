"""The compiled log density against an independent SciPy implementation (to 1e-8), and its
gradient against central finite differences (to 1e-5)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.special import expit, gammaln, log_expit

from poolwise.engine import density as D
from poolwise.engine.layout import pack
from poolwise.model.spec import build_model


def _synthetic_binomial(seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    labels = ["b", "a", "x y", "é", "10", "c"]
    rows = []
    for _ in range(40):
        n = int(rng.integers(0, 12))
        rows.append({"g": labels[int(rng.integers(0, len(labels)))], "n": n,
                     "s": int(rng.integers(0, n + 1)), "x": float(rng.normal())})
    return pd.DataFrame(rows)


def _scipy_logp(spec, x: np.ndarray, *, pmf: bool = False) -> float:
    """Row-level log posterior of the intercept-only model family, written independently."""
    d = spec.design
    frame_y, frame_n = d.row_y, d.row_n
    K = len(d.fixed_names)
    beta = x[:K]
    lp = 0.0
    for name, b in zip(d.fixed_names, beta, strict=True):
        prior = spec.priors.intercept if name == "Intercept" else spec.priors.b
        lp += stats.norm.logpdf(b, *prior.params)
    # fixed part of eta, per row: cells are rows with identical covariates
    eta_rows = (d.X_engine @ beta)[d.row_cell]  # the engine samples the standardized design
    pos = K
    for term in spec.terms:
        g = term.group
        L = g.n_levels
        if term.estimated:
            log_sd = x[pos]
            sd = np.exp(log_sd)
            lp += stats.expon.logpdf(sd, scale=1.0 / spec.priors.sd.params[0]) + log_sd
            pos += 1
            mu = beta[d.fixed_names.index("Intercept")]
        else:
            sd = term.sd_fixed[0]
            mu = 0.0
        lev = x[pos : pos + L]
        pos += L
        a = np.where(term.centered, lev, mu + sd * lev)
        lp += np.sum(np.where(term.centered, stats.norm.logpdf(lev, mu, sd),
                              stats.norm.logpdf(lev)))
        level_of_row = g.codes[d.row_cell]
        eta_rows = eta_rows + (a - (mu if term.estimated else 0.0))[level_of_row]
    if pmf:  # scipy's binomial pmf; loses precision once expit(eta) rounds to 0 or 1
        lp += np.sum(stats.binom.logpmf(frame_y, frame_n, expit(eta_rows)))
    else:
        lp += np.sum(
            gammaln(frame_n + 1) - gammaln(frame_y + 1) - gammaln(frame_n - frame_y + 1)
            + frame_y * log_expit(eta_rows) + (frame_n - frame_y) * log_expit(-eta_rows)
        )
    assert pos == len(x)
    return float(lp)


CASES = [
    ("bangladesh", "use.contraception ~ 1 + (1 | district)", "partial", "centered"),
    ("bangladesh", "use.contraception ~ 1 + (1 | district)", "partial", "noncentered"),
    ("bangladesh", "use.contraception ~ 1 + (1 | district)", "partial", "auto"),
    ("bangladesh", "use.contraception ~ 1 + (1 | district)", "none", "centered"),
    ("bangladesh", "use.contraception ~ 1 + (1 | district)", "complete", "centered"),
    ("bangladesh", "use.contraception ~ 1 + urban + (1 | district)", "partial", "noncentered"),
    ("synthetic", "s | trials(n) ~ 1 + (1 | g)", "partial", "centered"),
    ("synthetic", "s | trials(n) ~ 1 + (1 | g)", "partial", "noncentered"),
    ("synthetic", "s | trials(n) ~ 1 + x + (1 | g)", "none", "noncentered"),
]


@pytest.fixture(scope="module")
def datasets(bangladesh):
    return {"bangladesh": bangladesh, "synthetic": _synthetic_binomial()}


@pytest.mark.parametrize(("data", "formula", "pooling", "param"), CASES)
def test_log_density_matches_scipy(datasets, data, formula, pooling, param):
    spec = build_model(formula, datasets[data], pooling=pooling, parameterization=param)
    packed = pack(spec)
    rng = np.random.default_rng(20160911)
    for _ in range(100):
        x = rng.normal(scale=1.0, size=packed.dim)
        grad = np.empty(packed.dim)
        ours = D.logp_grad(x, grad, packed.ib, packed.fb)
        assert ours == pytest.approx(_scipy_logp(spec, x), abs=1e-8, rel=1e-12)
    for _ in range(20):  # moderate points, where scipy.stats.binom.logpmf itself is exact
        x = rng.normal(scale=0.3, size=packed.dim)
        ours = D.logp_grad(x, np.empty(packed.dim), packed.ib, packed.fb)
        assert ours == pytest.approx(_scipy_logp(spec, x, pmf=True), abs=1e-8, rel=1e-12)


@pytest.mark.parametrize(("data", "formula", "pooling", "param"), CASES)
def test_gradient_matches_finite_differences(datasets, fd_gradient, data, formula, pooling,
                                             param):
    spec = build_model(formula, datasets[data], pooling=pooling, parameterization=param)
    packed = pack(spec)
    rng = np.random.default_rng(7)
    for _ in range(20):
        x = rng.normal(size=packed.dim)
        grad = np.empty(packed.dim)
        D.logp_grad(x, grad, packed.ib, packed.fb)
        fd = fd_gradient(packed, x, 1e-6)
        rel = np.abs(grad - fd) / np.maximum(1.0, np.abs(fd))
        assert rel.max() < 1e-5


def test_bernoulli_rows_equal_compressed_cells(bangladesh):
    """Collapsing rows into binomial cells changes nothing: the density of 1934 Bernoulli rows
    (60 cells) equals the density with one cell per row."""
    spec = build_model("use.contraception ~ 1 + (1 | district)", bangladesh,
                       parameterization="noncentered")
    # a per-row identifier as a predictor with a zero-prior effect would change the model;
    # instead rebuild the data so that every row is its own binomial cell of one trial
    rows = bangladesh.assign(n=1)
    spec_rows = build_model("use.contraception | trials(n) ~ 1 + (1 | district)", rows,
                            parameterization="noncentered")
    assert spec.design.n_cells == 60 and spec.design.n_rows == 1934
    packed, packed_rows = pack(spec), pack(spec_rows)
    assert packed.dim == packed_rows.dim
    rng = np.random.default_rng(1)
    for _ in range(20):
        x = rng.normal(size=packed.dim)
        g1, g2 = np.empty(packed.dim), np.empty(packed.dim)
        a = D.logp_grad(x, g1, packed.ib, packed.fb)
        b = D.logp_grad(x, g2, packed_rows.ib, packed_rows.fb)
        assert a == pytest.approx(b, abs=1e-8)
        np.testing.assert_allclose(g1, g2, atol=1e-8)
        # and the sum of independent per-row Bernoulli log-pmfs agrees too
        assert a == pytest.approx(_scipy_logp(spec, x), abs=1e-8)


def test_expand_reports_natural_group_effects(bangladesh):
    """Whatever the parameterization, the expanded output is a_j on the natural scale."""
    spec_c = build_model("use.contraception ~ 1 + (1 | district)", bangladesh,
                         parameterization="centered")
    spec_n = spec_c.with_parameterization("noncentered")
    pc, pn = pack(spec_c), pack(spec_n)
    rng = np.random.default_rng(5)
    x_nc = rng.normal(size=pn.dim)
    mu, sd = x_nc[0], np.exp(x_nc[1])
    a = mu + sd * x_nc[2:]
    x_c = np.concatenate([x_nc[:2], a])
    out_c, out_n = np.empty(pc.n_expanded), np.empty(pn.n_expanded)
    D.expand(x_c, out_c, pc.ib, pc.fb)
    D.expand(x_nc, out_n, pn.ib, pn.fb)
    np.testing.assert_allclose(out_c, out_n, atol=1e-12)
    np.testing.assert_allclose(out_c[2:], a, atol=1e-12)
