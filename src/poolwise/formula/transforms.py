"""What the functions of a formula compute, and the state they keep for new data.

Element-wise: ``log``, ``log2``, ``log10``, ``log1p``, ``exp``, ``sqrt``, ``abs`` and
``I(expr)`` (arithmetic ``+ - * / ^``). Stateful (they learn from the rows the model is fitted
to, and apply exactly that to new data, as R's ``makepredictcall`` does):

* ``scale(x)``: ``(x - mean) / sd`` with R's ``sd`` (divisor n - 1); stores center and scale;
* ``poly(x, d)``: R's orthogonal polynomials. The fitted basis is ``Q diag(R)`` of the QR of
  the centered Vandermonde matrix ``[1, x - mean, ..., (x - mean)^d]``, each column divided by
  its norm; R's ``alpha`` (d values) and ``norm2`` (d + 2 values, starting 1) are stored and new
  data go through R's ``predict.poly`` three-term recurrence (both in
  :mod:`poolwise.formula.poly`). ``poly(x, d, raw = TRUE)`` is ``x, x^2, ..., x^d``;
* ``factor(x)`` / ``C(x)``: categorical; the levels (sorted, numbers numerically, or a pandas
  Categorical's order) and the reference level are stored on the :class:`Encoding`.
  ``C(x, ref = "b")``, ``C(x, Treatment("b"))`` pick the reference level, ``C(x, base = k)``
  the k-th level (R's ``contr.treatment(base = k)``).

The :class:`Encoding` on :class:`poolwise.data.design.Design` is everything needed to rebuild the
model matrix for new rows: each variable's kind, levels and columns, and these states.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from poolwise.errors import DataError
from poolwise.formula.poly import poly_degree, poly_fit, poly_predict, poly_raw
from poolwise.formula.terms import BinOp, Bool, Call, Col, Expr, Neg, Num, Paren, Str

__all__ = [
    "Encoding",
    "TransformState",
    "VariableEncoding",
    "evaluate",
    "level_codes",
    "poly_fit",
    "poly_predict",
    "term_columns",
]

_MATH = {
    "log": np.log,
    "log2": np.log2,
    "log10": np.log10,
    "log1p": np.log1p,
    "exp": np.exp,
    "sqrt": np.sqrt,
    "abs": np.abs,
}
# (lowest allowed value, whether it is allowed itself, what to suggest)
_DOMAIN = {
    "log": (0.0, False, "add a constant first, e.g. log(x + 1)"),
    "log2": (0.0, False, "add a constant first, e.g. log2(x + 1)"),
    "log10": (0.0, False, "add a constant first, e.g. log10(x + 1)"),
    "log1p": (-1.0, False, "log1p(x) needs x > -1"),
    "sqrt": (0.0, True, "sqrt(x) needs x >= 0"),
}
CATEGORICAL_FUNCTIONS = ("factor", "C")


@dataclass(frozen=True)
class TransformState:
    """What a stateful function learned from the fitted rows. ``label`` is the call's text
    (``scale(age)``, ``poly(age, 2)``); ``fn`` is ``scale`` or ``poly``."""

    label: str
    fn: str
    center: float = 0.0
    scale: float = 1.0
    alpha: tuple[float, ...] = ()
    norm2: tuple[float, ...] = ()


@dataclass(frozen=True)
class VariableEncoding:
    """How one model variable becomes model-matrix columns.

    ``kind`` numeric: ``columns`` are the names of its columns (the label, or for ``poly`` the
    label followed by 1, 2, ...). ``kind`` categorical: ``levels`` with the reference first;
    ``columns`` are ``label + level`` for every level but the reference (treatment coding).
    """

    label: str
    kind: Literal["numeric", "categorical"]
    columns: tuple[str, ...]
    levels: tuple[Any, ...] = ()

    @property
    def reference(self) -> Any:
        return self.levels[0] if self.levels else None


@dataclass(frozen=True)
class Encoding:
    """The encoding of every predictor of a Design, the states of its stateful functions and
    its offsets (labels), so that new data get exactly the fitted model matrix."""

    variables: tuple[VariableEncoding, ...]
    states: tuple[TransformState, ...] = ()
    offsets: tuple[str, ...] = ()

    def variable(self, label: str) -> VariableEncoding:
        for v in self.variables:
            if v.label == label:
                return v
        raise KeyError(label)

    @property
    def state_map(self) -> dict[str, TransformState]:
        return {s.label: s for s in self.states}

    @property
    def numeric(self) -> tuple[str, ...]:
        return tuple(v.label for v in self.variables if v.kind == "numeric")

    @property
    def categorical(self) -> tuple[str, ...]:
        return tuple(v.label for v in self.variables if v.kind == "categorical")


# -- evaluation --------------------------------------------------------------------------


def _rows(mask: np.ndarray, rows: np.ndarray, limit: int = 5) -> str:
    idx = np.flatnonzero(mask)
    shown = ", ".join(str(int(rows[i])) for i in idx[:limit])
    more = f" and {len(idx) - limit} more" if len(idx) > limit else ""
    return f"row{'s' if len(idx) > 1 else ''} {shown}{more}"


def _values(v: np.ndarray, limit: int = 5) -> str:
    uniq = list(dict.fromkeys(v.tolist()))
    shown = ", ".join(repr(u) if isinstance(u, str) else f"{u:g}" if isinstance(u, float)
                      else str(u) for u in uniq[:limit])
    return shown + (", ..." if len(uniq) > limit else "")


def numeric_column(frame: pd.DataFrame, col: str, rows: np.ndarray, used_in: str) -> np.ndarray:
    """A data column as float64 (NaN where missing); DataError for text that is not a number."""
    s = frame[col]
    if pd.api.types.is_bool_dtype(s.dtype):
        return s.to_numpy(dtype=float)
    if pd.api.types.is_numeric_dtype(s.dtype) and not isinstance(s.dtype, pd.CategoricalDtype):
        return s.to_numpy(dtype=float, na_value=np.nan)
    obj = s.astype(object)
    conv = pd.to_numeric(obj, errors="coerce")
    bad = conv.isna().to_numpy() & ~obj.isna().to_numpy()
    if bad.any():
        raise DataError(
            f"column '{col}' is used in {used_in}, which needs numbers, but it holds "
            f"{_values(obj.to_numpy()[bad])} ({_rows(bad, rows)}); for a categorical predictor "
            f"write factor({col}) as a term of its own"
        )
    return conv.to_numpy(dtype=float)


def evaluate(
    e: Expr,
    frame: pd.DataFrame,
    rows: np.ndarray,
    states: dict[str, TransformState],
    *,
    learn: bool,
) -> np.ndarray:
    """The numeric values (n,) of an expression (or (n, d) for ``poly``). Stateful functions
    use ``states``; with ``learn=True`` a function without a state learns it from these rows
    (ignoring missing values) and stores it. ``rows`` are the 1-based data rows, for messages.
    """
    n = len(frame)
    if isinstance(e, Col):
        return numeric_column(frame, e.name, rows, "an expression")
    if isinstance(e, Num):
        return np.full(n, float(e.value))
    if isinstance(e, Bool):
        return np.full(n, float(e.value))
    if isinstance(e, Paren):
        return evaluate(e.inner, frame, rows, states, learn=learn)
    if isinstance(e, Neg):
        return -evaluate(e.operand, frame, rows, states, learn=learn)
    if isinstance(e, BinOp):
        return _arithmetic(e, frame, rows, states, learn)
    if isinstance(e, Str):
        raise DataError(f"text {e.label} cannot be used as a number")
    assert isinstance(e, Call)
    fn = e.fn
    if fn in ("I", "offset"):
        return evaluate(e.args[0], frame, rows, states, learn=learn)
    if fn in _MATH:
        return _math(e, frame, rows, states, learn)
    if fn == "scale":
        return _scale(e, frame, rows, states, learn)
    if fn == "poly":
        return _poly(e, frame, rows, states, learn)
    raise DataError(f"{fn}() makes a categorical variable; it has no numeric value")


def _arithmetic(
    e: BinOp, frame: pd.DataFrame, rows: np.ndarray, states: dict[str, TransformState],
    learn: bool,
) -> np.ndarray:
    """``a + b``, ``a - b``, ``a * b``, ``a / b`` or ``a ^ b``, element-wise (inf / NaN where
    numpy gives them)."""
    a = evaluate(e.left, frame, rows, states, learn=learn)
    b = evaluate(e.right, frame, rows, states, learn=learn)
    with np.errstate(all="ignore"):
        if e.op == "+":
            return a + b
        if e.op == "-":
            return a - b
        if e.op == "*":
            return a * b
        if e.op == "/":
            return a / b
        return np.power(a, b)


def _math(
    e: Call, frame: pd.DataFrame, rows: np.ndarray, states: dict[str, TransformState],
    learn: bool,
) -> np.ndarray:
    """An element-wise function of ``_MATH``; DataError for a value outside its domain."""
    fn, inner = e.fn, e.args[0]
    x = _inner_numeric(inner, frame, rows, states, learn, e.label)
    if fn in _DOMAIN:
        lo, inclusive, hint = _DOMAIN[fn]
        bad = np.isfinite(x) & ((x < lo) if inclusive else (x <= lo))
        if bad.any():
            raise DataError(
                f"{e.label}: {inner.label} has values outside the domain of {fn}() "
                f"({_values(x[bad])} in {_rows(bad, rows)}); {hint}"
            )
    with np.errstate(all="ignore"):
        return np.asarray(_MATH[fn](x), dtype=float)


def _scale(
    e: Call, frame: pd.DataFrame, rows: np.ndarray, states: dict[str, TransformState],
    learn: bool,
) -> np.ndarray:
    """``scale(x)``: ``(x - center) / scale``, learning both (R's ``sd``, divisor n - 1) from
    the finite values when there is no state yet and ``learn``."""
    inner = e.args[0]
    x = _inner_numeric(inner, frame, rows, states, learn, e.label)
    st = states.get(e.label)
    if st is None:
        if not learn:
            raise KeyError(e.label)
        ok = np.isfinite(x)
        if ok.sum() < 2 or np.std(x[ok]) == 0.0:
            raise DataError(
                f"{e.label}: {inner.label} is constant in the rows used, so it cannot be "
                "scaled; remove the term"
            )
        center = float(np.mean(x[ok]))
        sd = float(np.std(x[ok], ddof=1))
        st = TransformState(e.label, "scale", center=center, scale=sd)
        states[e.label] = st
    return (x - st.center) / st.scale


def _poly(
    e: Call, frame: pd.DataFrame, rows: np.ndarray, states: dict[str, TransformState],
    learn: bool,
) -> np.ndarray:
    """``poly(x, d)``: the raw powers, or R's orthogonal basis (learnt from the finite values
    when there is no state yet and ``learn``; NaN rows elsewhere), or its prediction for
    these rows from a stored state."""
    inner = e.args[0]
    x = _inner_numeric(inner, frame, rows, states, learn, e.label)
    degree = poly_degree(e)
    if poly_raw(e):
        return np.column_stack([x**k for k in range(1, degree + 1)])
    st = states.get(e.label)
    if st is not None:
        return poly_predict(x, st.alpha, st.norm2)
    if not learn:
        raise KeyError(e.label)
    ok = np.isfinite(x)
    n_unique = np.unique(x[ok]).size
    if degree >= n_unique:
        raise DataError(
            f"{e.label}: the degree must be less than the number of distinct values of "
            f"{inner.label} ({n_unique} in the rows used); lower the degree"
        )
    basis, alpha, norm2 = poly_fit(x[ok], degree)
    states[e.label] = TransformState(e.label, "poly", alpha=alpha, norm2=norm2)
    out = np.full((len(frame), degree), np.nan)
    out[ok] = basis
    return out


def _inner_numeric(
    inner: Expr, frame: pd.DataFrame, rows: np.ndarray, states: dict[str, TransformState],
    learn: bool, where: str,
) -> np.ndarray:
    if isinstance(inner, Col):
        return numeric_column(frame, inner.name, rows, where)
    return evaluate(inner, frame, rows, states, learn=learn)


def categorical_values(e: Call, frame: pd.DataFrame, rows: np.ndarray,
                       states: dict[str, TransformState], *, learn: bool) -> pd.Series:
    """The values of ``factor(x)`` / ``C(x)`` as a pandas Categorical (levels sorted: numbers
    numerically, text alphabetically; a Categorical column keeps its category order)."""
    inner = e.args[0]
    while isinstance(inner, Paren):
        inner = inner.inner
    if isinstance(inner, Col):
        s = frame[inner.name]
        if isinstance(s.dtype, pd.CategoricalDtype):
            return s.reset_index(drop=True)
        if pd.api.types.is_bool_dtype(s.dtype) or pd.api.types.is_numeric_dtype(s.dtype):
            v = s.to_numpy(dtype=float, na_value=np.nan)
        else:
            obj = s.astype(object)
            present = [u for u in pd.unique(obj) if not pd.isna(u)]
            return pd.Series(pd.Categorical(obj, categories=sorted(present, key=str)))
    else:
        v = evaluate(inner, frame, rows, states, learn=learn)
    codes, uniq = pd.factorize(v, use_na_sentinel=True)  # NaN: -1
    u = np.asarray(uniq, dtype=float)
    whole = bool(np.all(u == np.round(u)))
    order = np.argsort(u, kind="stable")
    rank = np.empty(len(u), dtype=np.int64)
    rank[order] = np.arange(len(u))
    cats = [int(u[i]) if whole else float(u[i]) for i in order]
    new_codes = np.where(codes >= 0, rank[np.maximum(codes, 0)], -1)
    return pd.Series(pd.Categorical.from_codes(new_codes, categories=cats))


def contrast_reference(e: Call, levels: list[Any]) -> Any:
    """The reference level a ``C(x, ...)`` call asks for (None: the default, the first)."""
    if e.fn != "C":
        return None
    kw = dict(e.kwargs)
    if "base" in kw:
        b = kw["base"]
        assert isinstance(b, Num)
        k = int(b.value)
        if k > len(levels):
            raise DataError(
                f"{e.label}: base = {k} but {e.args[0].label} has only {len(levels)} levels "
                "in the data"
            )
        return levels[k - 1]
    ref: Expr | None = kw.get("ref", kw.get("reference"))
    if ref is None and len(e.args) == 2 and isinstance(e.args[1], Call):
        t = e.args[1]
        ref = t.args[0] if t.args else dict(t.kwargs).get("reference")
    if ref is None:
        return None
    if isinstance(ref, Str):
        return ref.value
    if isinstance(ref, Num):
        v = float(ref.value)
        return int(v) if v.is_integer() else v
    if isinstance(ref, Bool):
        return ref.value
    return ref.label


def level_codes(values: np.ndarray, levels: tuple[Any, ...] | list[Any]) -> np.ndarray:
    """Index of each value in ``levels`` (-1 for a value that is not a level). Values match
    levels as Python values (``2 == 2.0``), else by their text (``'2'`` for ``2``)."""
    exact: dict[Any, int] = {}
    text: dict[str, int] = {}
    for i, lv in enumerate(levels):
        try:
            exact.setdefault(lv, i)
        except TypeError:
            pass
        text.setdefault(str(lv), i)
    codes, uniq = pd.factorize(pd.Series(values, dtype=object), use_na_sentinel=True)
    mapped = np.full(len(uniq) + 1, -1, dtype=np.int64)  # the last entry: missing values
    for j, v in enumerate(uniq):
        if isinstance(v, np.generic):
            v = v.item()
        try:
            hit = exact.get(v)
        except TypeError:
            hit = None
        if hit is None:
            hit = text.get(str(v))
            if hit is None and isinstance(v, float) and v.is_integer():
                hit = text.get(str(int(v)))
        if hit is not None:
            mapped[j] = hit
    return mapped[np.where(codes >= 0, codes, len(uniq))]


# -- the model matrix of a term ----------------------------------------------------------------


def full_coding(
    variables: tuple[str, ...], siblings: Any, intercept: bool, encoding: Encoding
) -> frozenset[str]:
    """The categorical variables of a term that get one column per level, by R's rule: a
    factor is coded by contrasts when the term without it is in the model (the intercept
    counting as the empty term), otherwise by an indicator for every level (``0 + f``, or
    ``f:x`` without ``x``). ``siblings``: the variable tuples of the terms of the same part
    (the fixed effects, or one group term)."""
    present = {frozenset(t) for t in siblings}
    if intercept:
        present.add(frozenset())
    out = set()
    for v in variables:
        if encoding.variable(v).kind != "categorical":
            continue
        if frozenset(w for w in variables if w != v) not in present:
            out.add(v)
    return frozenset(out)


def term_columns(
    variables: tuple[str, ...],
    values: Mapping[str, np.ndarray],
    encoding: Encoding,
    n: int,
    full: frozenset[str] = frozenset(),
) -> tuple[list[str], np.ndarray, list[tuple[str, ...]]]:
    """The columns of one (interaction) term: numeric variables as they are (a ``poly`` gives
    several), categorical ones treatment-coded against their reference level (the first of
    ``levels``), or with an indicator for every level for those in ``full`` (see
    :func:`full_coding`). ``values``: per numeric label an (n, k) matrix, per categorical
    label its level codes (n,) into ``levels``. Returns the names, the matrix and, per
    column, the numeric columns multiplied into it (for standardization)."""
    names: list[str] = [""]
    cols: list[np.ndarray] = [np.ones(n)]
    parts: list[tuple[str, ...]] = [()]
    for var in variables:
        enc = encoding.variable(var)
        new_names: list[str] = []
        new_cols: list[np.ndarray] = []
        new_parts: list[tuple[str, ...]] = []
        if enc.kind == "categorical":
            codes = values[var]
            if var in full:
                coded = list(enumerate(f"{var}{lv}" for lv in enc.levels))  # naming: as R
            else:
                coded = list(enumerate(enc.columns, start=1))
            for k, name in coded:
                ind = (codes == k).astype(float)
                for nm, c, p in zip(names, cols, parts, strict=True):
                    new_names.append(f"{nm}:{name}" if nm else name)
                    new_cols.append(c * ind)
                    new_parts.append(p)
        else:
            M = np.asarray(values[var], dtype=float).reshape(n, -1)
            for j, name in enumerate(enc.columns):
                for nm, c, p in zip(names, cols, parts, strict=True):
                    new_names.append(f"{nm}:{name}" if nm else name)
                    new_cols.append(c * M[:, j])
                    new_parts.append(p + (name,))
        names, cols, parts = new_names, new_cols, new_parts
    return names, (np.column_stack(cols) if cols else np.empty((n, 0))), parts
