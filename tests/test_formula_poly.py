"""Orthogonal polynomials exactly as R's ``poly()`` computes them, and R's ``predict.poly``
for new values."""

from __future__ import annotations

import warnings
from fractions import Fraction
from math import sqrt

import numpy as np
import pandas as pd
import pytest

from poolwise.data.design import build_design
from poolwise.formula.transforms import poly_fit, poly_predict

# R 4.x:  x <- c(1, 2, 3, 4, 5); round(poly(x, 2), 7)
R_POLY_1_5 = np.array([
    [-0.6324555, 0.5345225],
    [-0.3162278, -0.2672612],
    [0.0, -0.5345225],
    [0.3162278, -0.2672612],
    [0.6324555, 0.5345225],
])


def test_poly_matches_R_on_1_to_5():
    basis, alpha, norm2 = poly_fit(np.arange(1.0, 6.0), 2)
    np.testing.assert_allclose(basis, R_POLY_1_5, atol=5e-8)
    # attr(poly(x, 2), "coefs") in R: alpha = c(3, 3), norm2 = c(1, 5, 10, 14)
    np.testing.assert_allclose(alpha, [3.0, 3.0], rtol=1e-14)
    np.testing.assert_allclose(norm2, [1.0, 5.0, 10.0, 14.0], rtol=1e-14)


X_UNEVEN = [0, 1, 3, 7, 8, 12, 12, 20]


def _exact_R_poly(x: list[int], degree: int):
    """R's algorithm in exact arithmetic: Z = Q diag(R) of the centered Vandermonde matrix is
    Gram-Schmidt without normalization; norm2 = colSums(Z^2);
    alpha = colSums(x * Z^2) / norm2 + mean(x); the basis is Z / sqrt(norm2)."""
    n = len(x)
    xbar = Fraction(sum(x), n)
    xc = [Fraction(v) - xbar for v in x]
    Z: list[list[Fraction]] = []
    for j in range(degree + 1):
        v = [c**j for c in xc]
        for q in Z:
            coef = sum(a * b for a, b in zip(v, q, strict=True)) / sum(b * b for b in q)
            v = [a - coef * b for a, b in zip(v, q, strict=True)]
        Z.append(v)
    norm2 = [sum(v * v for v in col) for col in Z]
    alpha = [sum(c * v * v for c, v in zip(xc, col, strict=True)) / nn + xbar
             for col, nn in zip(Z[:degree], norm2[:degree], strict=True)]
    basis = np.array([[float(v) / sqrt(float(nn)) for v in col]
                      for col, nn in zip(Z[1:], norm2[1:], strict=True)]).T
    return basis, [float(a) for a in alpha], [1.0] + [float(v) for v in norm2]


def _R_predict_poly(newx: np.ndarray, alpha: list[float], norm2: list[float]) -> np.ndarray:
    """R's predict.poly (stats:::predict.poly, the code R runs on new data), transcribed."""
    degree = len(alpha)
    Z = np.ones((len(newx), degree + 1))
    Z[:, 1] = newx - alpha[0]
    for i in range(2, degree + 1):  # R: for (i in 2:degree)
        Z[:, i] = (newx - alpha[i - 1]) * Z[:, i - 1] - (norm2[i] / norm2[i - 1]) * Z[:, i - 2]
    Z = Z / np.sqrt(np.asarray(norm2[1:]))
    return Z[:, 1:]


def test_poly_matches_R_algorithm_on_uneven_values():
    basis, alpha, norm2 = poly_fit(np.array(X_UNEVEN, float), 3)
    ref, ref_alpha, ref_norm2 = _exact_R_poly(X_UNEVEN, 3)
    np.testing.assert_allclose(basis, ref, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(alpha, ref_alpha, rtol=1e-13)
    np.testing.assert_allclose(norm2, ref_norm2, rtol=1e-13)
    # orthonormal columns, orthogonal to the constant
    np.testing.assert_allclose(basis.T @ basis, np.eye(3), atol=1e-13)
    np.testing.assert_allclose(basis.sum(axis=0), 0.0, atol=1e-13)


def test_poly_predict_is_R_predict_poly_and_the_same_polynomials():
    x = np.array(X_UNEVEN, float)
    basis, alpha, norm2 = poly_fit(x, 3)
    # on the fitted values, predict reproduces the fitted basis
    np.testing.assert_allclose(poly_predict(x, alpha, norm2), basis, rtol=1e-11, atol=1e-13)
    newx = np.array([-3.0, 0.5, 5.0, 12.0, 25.0])
    ours = poly_predict(newx, alpha, norm2)
    _, ref_alpha, ref_norm2 = _exact_R_poly(X_UNEVEN, 3)
    np.testing.assert_allclose(ours, _R_predict_poly(newx, ref_alpha, ref_norm2), rtol=1e-12)
    # independently: column j is a degree-j polynomial in x; fitted exactly through the data
    # points and evaluated at the new values it gives the same numbers
    for j in range(3):
        coef = np.polyfit(x, basis[:, j], j + 1)
        np.testing.assert_allclose(ours[:, j], np.polyval(coef, newx), rtol=1e-8, atol=1e-10)


def test_poly_in_a_design_stores_R_coefs():
    rng = np.random.default_rng(4)
    n = len(X_UNEVEN) * 5
    data = pd.DataFrame({
        "y": rng.integers(0, 2, n),
        "x": np.tile(X_UNEVEN, 5).astype(float),
        "g": np.repeat(list("abcde"), len(X_UNEVEN)),
    })
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        d = build_design("y ~ poly(x, 3) + (1 | g)", data, standardize=False)
    assert d.fixed_names == ("Intercept", "poly(x, 3)1", "poly(x, 3)2", "poly(x, 3)3")
    ref, ref_alpha, ref_norm2 = _exact_R_poly(list(np.tile(X_UNEVEN, 5)), 3)
    np.testing.assert_allclose(d.X[d.row_cell][:, 1:], ref, rtol=1e-11, atol=1e-13)
    (st,) = d.encoding.states
    assert (st.label, st.fn) == ("poly(x, 3)", "poly")
    np.testing.assert_allclose(st.alpha, ref_alpha, rtol=1e-13)
    np.testing.assert_allclose(st.norm2, ref_norm2, rtol=1e-13)
    assert d.encoding.variable("poly(x, 3)").columns == ("poly(x, 3)1", "poly(x, 3)2",
                                                           "poly(x, 3)3")


def test_poly_degree_one_is_the_scaled_centered_value():
    x = np.array([2.0, 3.5, 9.0, 4.0])
    basis, alpha, norm2 = poly_fit(x, 1)
    xc = x - x.mean()
    np.testing.assert_allclose(basis[:, 0], xc / np.sqrt(np.sum(xc**2)), rtol=1e-14)
    assert alpha == pytest.approx((x.mean(),))
