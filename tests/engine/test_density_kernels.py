"""The pieces of the fast density: its elementary functions against libm, the per-link cell
loops against the per-cell reference ``cell_loglik``, the struct-of-arrays layout, the per-cell
offset, and bitwise agreement of the C callback nutpie calls with the jitted function."""

from __future__ import annotations

import copy
import ctypes
import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
from scipy.special import gammaln, log_expit

from poolwise.engine import density as D
from poolwise.engine.layout import pack
from poolwise.errors import SpecError
from poolwise.model.spec import build_model

_ULP1 = np.finfo(float).eps  # 2.2e-16


def test_exp_nonpos_is_within_one_ulp_of_libm():
    a = -np.concatenate([np.linspace(0.0, 50.0, 200_001), np.geomspace(1e-300, 1.0, 2_000),
                         np.linspace(50.0, 708.0, 20_001)])
    ours = np.array([D.exp_nonpos(v) for v in a])
    ref = np.exp(a)
    assert np.max(np.abs(ours - ref) / ref) <= 1.5 * _ULP1
    assert D.exp_nonpos(0.0) == 1.0
    # documented floor, far below anything used
    assert D.exp_nonpos(-800.0) == pytest.approx(math.exp(-708.0), rel=2 * _ULP1)


def test_log1p_unit_is_within_two_ulp_of_libm():
    e = np.concatenate([np.linspace(0.0, 1.0, 200_001), np.geomspace(1e-300, 1.0, 2_000),
                        [D._SQRT2_M1, np.nextafter(D._SQRT2_M1, 1.0), 1.0]])
    ours = np.array([D.log1p_unit(v) for v in e])
    ref = np.log1p(e)
    assert np.all(np.abs(ours - ref) <= 2.0 * _ULP1 * np.maximum(ref, 1e-300))
    assert D.log1p_unit(0.0) == 0.0


def test_log_pos_is_within_one_ulp_of_libm():
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.uniform(0.0, 1.0, 100_000), np.exp(rng.uniform(-700, 700, 100_000)),
                        np.geomspace(2.3e-308, 1.7e308, 2_001), [0.5, 1.0, 2.0, math.sqrt(2.0),
                                                                 np.nextafter(math.sqrt(2), 2)]])
    ours = np.array([D.log_pos(v) for v in x])
    ref = np.log(x)
    assert np.all(np.abs(ours - ref) <= np.spacing(np.abs(ref)) + 1e-300)
    assert D.log_pos(1.0) == 0.0
    assert D.log_pos(math.inf) == math.inf and math.isnan(D.log_pos(math.nan))


def test_log1p_any_is_within_two_ulp_of_libm():
    rng = np.random.default_rng(4)
    w = np.concatenate([rng.uniform(-1.0, 1.0, 100_000), -np.geomspace(1e-300, 1 - 1e-16, 2_001),
                        np.geomspace(1e-300, 1e300, 2_001), [0.0, -0.5, 1.0, 1e-17, -1e-17]])
    ours = np.array([D.log1p_any(v) for v in w])
    ref = np.log1p(w)
    assert np.all(np.abs(ours - ref) <= 2.0 * np.spacing(np.abs(ref)) + 1e-300)
    assert D.log1p_any(0.0) == 0.0 and D.log1p_any(math.inf) == math.inf


def _cells(rng, size):
    n = rng.integers(0, 40, size=size).astype(float)
    n[:5] = [0.0, 1.0, 1.0, 30.0, 30.0]
    y = np.floor(rng.uniform(0.0, 1.0, size=size) * (n + 1.0))
    y[:5] = [0.0, 0.0, 1.0, 0.0, 30.0]  # n = 0, and y at both ends
    return y, n


@pytest.mark.parametrize(("link", "loop"), [(D.LOGIT, D._loglik_logit),
                                            (D.PROBIT, D._loglik_probit),
                                            (D.CLOGLOG, D._loglik_cloglog)])
def test_link_loops_match_the_per_cell_reference(link, loop):
    """Every cell of the hoisted loop agrees with cell_loglik, from eta = -40 to 40 (both
    tails; probit's asymptotic branch beyond 35; cloglog up to exp(eta) large), n = 0 included."""
    rng = np.random.default_rng(11)
    size = 4003  # not a multiple of 8: the remainder of the 8-lane sums is used
    y, n = _cells(rng, size)
    eta = np.concatenate([np.linspace(-40.0, 40.0, 2001), rng.normal(scale=3.0, size=size - 2001)])
    if link == D.CLOGLOG:
        eta = np.clip(eta, -40.0, 6.0)  # exp(6) = 403: log(1 - p) = -403 n, still finite
    ref_ll = np.empty(size)
    ref_d = np.empty(size)
    for i in range(size):
        ref_ll[i], ref_d[i] = D.cell_loglik(link, y[i], n[i], eta[i])
    r = np.empty(size)
    work = eta.copy()
    total = loop(y, n, work, r)
    # atol 1e-12: the reference's own rounding. For logit it forms log(1 - p) as log p - eta,
    # off by up to ulp(40) = 7e-15 per trial (n <= 40); the loop does not (checked against
    # scipy's log_expit at 1e-14 below)
    np.testing.assert_allclose(work, ref_ll, rtol=1e-13, atol=1e-12)
    np.testing.assert_allclose(r, ref_d, rtol=1e-12, atol=1e-12)
    assert total == pytest.approx(math.fsum(ref_ll), rel=1e-14, abs=1e-10)


def test_logit_loop_matches_scipy_log_expit():
    rng = np.random.default_rng(5)
    y, n = _cells(rng, 1001)
    eta = np.linspace(-745.0, 745.0, 1001)
    r = np.empty(1001)
    work = eta.copy()
    D._loglik_logit(y, n, work, r)
    ref = y * log_expit(eta) + (n - y) * log_expit(-eta)
    np.testing.assert_allclose(work, ref, rtol=1e-14, atol=1e-14)
    np.testing.assert_allclose(r, y - n * np.exp(log_expit(eta)), rtol=1e-14, atol=1e-14)


def test_sums_keep_a_fixed_order_and_are_exact_enough():
    rng = np.random.default_rng(2)
    for size in (0, 1, 7, 8, 9, 1001):
        a, b = rng.normal(size=size), rng.normal(size=size)
        assert D._sum(a) == pytest.approx(math.fsum(a), abs=1e-12)
        assert D._dot(a, b) == pytest.approx(math.fsum(a * b), abs=1e-12)
        assert D._sum(a) == D._sum(a.copy())


@pytest.fixture(scope="module")
def slopes_spec():
    rng = np.random.default_rng(8)
    rows = 300
    df = pd.DataFrame({"g": rng.integers(0, 12, rows), "x": rng.normal(size=rows),
                       "n": rng.integers(1, 15, rows)})
    df["s"] = rng.binomial(df["n"], 0.4)
    return build_model("s | trials(n) ~ 1 + x + (1 + x | g)", df)


def test_layout_is_struct_of_arrays(slopes_spec):
    """X and each term's Z are stored column by column: cell i of column k at off + k N + i."""
    d = slopes_spec.design
    packed = pack(slopes_spec)
    ib, fb = packed.ib, packed.fb
    N, K = ib[D.H_N], ib[D.H_K]
    assert N == d.n_cells and K == 2
    X = d.X_engine
    for k in range(K):
        np.testing.assert_array_equal(fb[ib[D.H_X] + k * N : ib[D.H_X] + (k + 1) * N], X[:, k])
    rec = ib[D.H_TERMS]
    Z = d.groups[0].Z_engine
    for c in range(Z.shape[1]):
        zoff = ib[rec + D.T_Z]
        np.testing.assert_array_equal(fb[zoff + c * N : zoff + (c + 1) * N], Z[:, c])
    codes = ib[ib[rec + D.T_CODES] : ib[rec + D.T_CODES] + N]
    np.testing.assert_array_equal(codes, d.groups[0].codes)
    np.testing.assert_array_equal(fb[ib[D.H_OFFSET] : ib[D.H_OFFSET] + N], np.zeros(N))


def test_cfunc_equals_jitted_function_bitwise(slopes_spec):
    """The C callback nutpie calls and the jitted function (the pyfunc engine's path) give the
    same bits: same loops, same order."""
    packed = pack(slopes_spec)
    f = D.logp_cfunc.ctypes
    dp = ctypes.POINTER(ctypes.c_double)
    rng = np.random.default_rng(4)
    for _ in range(5):
        x = rng.normal(size=packed.dim)
        g1, g2, lp = np.empty(packed.dim), np.empty(packed.dim), np.empty(1)
        rc = f(packed.dim, x.ctypes.data_as(dp), g1.ctypes.data_as(dp), lp.ctypes.data_as(dp),
               ctypes.c_void_p(packed.buffer.ctypes.data))
        assert rc == 0
        v = D.logp_grad(x, g2, packed.ib, packed.fb)
        assert lp[0] == v
        np.testing.assert_array_equal(g1, g2)


def _with_offset(spec, offset):
    design = copy.copy(spec.design)
    object.__setattr__(design, "offset", offset)
    return dataclasses.replace(spec, design=design)


def test_offset_enters_eta(fd_gradient):
    """A per-cell offset adds to eta: the change of the log density equals the change of the
    binomial log-likelihood computed independently, and the gradient still matches."""
    rng = np.random.default_rng(6)
    rows = 80
    df = pd.DataFrame({"x": rng.normal(size=rows), "n": rng.integers(1, 12, rows)})
    df["s"] = rng.binomial(df["n"], 0.3)
    spec = build_model("s | trials(n) ~ 1 + x", df)
    d = spec.design
    off = rng.normal(scale=0.7, size=d.n_cells)
    p0, p1 = pack(spec), pack(_with_offset(spec, off))
    y, n = d.y.astype(float), d.n.astype(float)

    def binom(eta):
        return np.sum(gammaln(n + 1) - gammaln(y + 1) - gammaln(n - y + 1)
                      + y * log_expit(eta) + (n - y) * log_expit(-eta))

    for _ in range(10):
        x = rng.normal(size=p0.dim)
        eta = d.X_engine @ x[: p0.dim]
        a = D.logp_grad(x, np.empty(p0.dim), p0.ib, p0.fb)
        g = np.empty(p1.dim)
        b = D.logp_grad(x, g, p1.ib, p1.fb)
        assert b - a == pytest.approx(binom(eta + off) - binom(eta), abs=1e-9)
        fd = fd_gradient(p1, x)
        assert np.max(np.abs(g - fd) / np.maximum(1.0, np.abs(fd))) < 1e-5


def test_offset_must_fit_the_cells(slopes_spec):
    N = slopes_spec.design.n_cells
    with pytest.raises(SpecError, match="one per binomial cell"):
        pack(_with_offset(slopes_spec, np.zeros(N + 1)))
    bad = np.zeros(N)
    bad[3] = np.nan
    with pytest.raises(SpecError, match="non-finite"):
        pack(_with_offset(slopes_spec, bad))
