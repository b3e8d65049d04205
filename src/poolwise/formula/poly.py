"""R's orthogonal polynomials, ``poly(x, d)`` and ``predict.poly``, and how a ``poly()`` call
of a formula reads (its degree, ``raw = TRUE``, its columns' names). The evaluation of
``poly()`` in a formula, and the state it keeps for new data, is in
:mod:`poolwise.formula.transforms`.
"""

from __future__ import annotations

import numpy as np

from poolwise.formula.terms import Bool, Call, Num

__all__ = ["poly_columns", "poly_degree", "poly_fit", "poly_predict", "poly_raw"]


def poly_fit(x: np.ndarray, degree: int) -> tuple[np.ndarray, tuple[float, ...], tuple[float, ...]]:
    """R's ``poly(x, degree)``: the basis (n, degree), ``alpha`` and ``norm2``."""
    x = np.asarray(x, dtype=float)
    xbar = float(np.mean(x))
    xc = x - xbar
    V = np.vander(xc, degree + 1, increasing=True)
    Q, R = np.linalg.qr(V)
    Z = Q * np.diag(R)[None, :]
    norm2 = np.sum(Z**2, axis=0)
    alpha = (np.sum(xc[:, None] * Z**2, axis=0) / norm2 + xbar)[:degree]
    norm2_full = np.concatenate([[1.0], norm2])
    basis = Z / np.sqrt(norm2_full[1:])[None, :]
    return basis[:, 1:], tuple(float(a) for a in alpha), tuple(float(v) for v in norm2_full)


def poly_predict(
    x: np.ndarray, alpha: tuple[float, ...], norm2: tuple[float, ...]
) -> np.ndarray:
    """R's ``predict(poly(...), newdata)``: the three-term recurrence with the stored
    ``alpha`` and ``norm2``."""
    x = np.asarray(x, dtype=float)
    degree = len(alpha)
    n2 = np.asarray(norm2, dtype=float)
    Z = np.ones((len(x), degree + 1))
    Z[:, 1] = x - alpha[0]
    for i in range(1, degree):
        Z[:, i + 1] = (x - alpha[i]) * Z[:, i] - (n2[i + 1] / n2[i]) * Z[:, i - 1]
    Z = Z / np.sqrt(n2[1:])[None, :]
    return Z[:, 1:]


def poly_degree(e: Call) -> int:
    kw = dict(e.kwargs)
    deg = kw.get("degree", e.args[1] if len(e.args) > 1 else Num(1.0))
    assert isinstance(deg, Num)
    return int(deg.value)


def poly_raw(e: Call) -> bool:
    raw = dict(e.kwargs).get("raw", Bool(False))
    return bool(isinstance(raw, Bool) and raw.value)


def poly_columns(e: Call) -> tuple[str, ...]:
    return tuple(f"{e.label}{k}" for k in range(1, poly_degree(e) + 1))  # naming: as R
