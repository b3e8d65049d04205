"""The predictors of a formula on the rows of the data, phase by phase (called in order by
:func:`poolwise.data.design.build_design`, whose module docstring says what each rule means):

1. :func:`bind_offset`: the ``offset=`` argument joins the formula;
2. :func:`lower`: the model frame, one column per expression label, on every row (what
   :func:`poolwise.data.validate.check_model_data` validates);
3. :func:`modelled_values`: the numeric predictors and the offset on the rows that are
   modelled, where the stateful functions (``scale``, ``poly``) learn;
4. :func:`with_references` and :func:`without_poly_scaling`: the reference level of each
   categorical predictor; ``poly()`` bases are exempt from the extreme-scale rule;
5. :func:`encode`: each variable's encoding (what ``predict`` applies to new data), the level
   codes of the categorical ones, and the scale each numeric column is sampled on;
6. :func:`fixed_columns`, :func:`group_columns`: the model-matrix columns of the fixed effects
   and of each group term, one row per data row (or row pattern), after
   :func:`poolwise.data.size.check_design_size` has counted them from the levels and the rows;
7. :func:`fixed_centers`: the centers of the fixed columns for sampling.

The rows become binomial cells afterwards (:mod:`poolwise.data.cells`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from poolwise.data.table import Table
from poolwise.data.validate import CheckedData, moments
from poolwise.data.validate import _check_columns as check_columns
from poolwise.errors import FormulaError, SpecError
from poolwise.formula import Formula, GroupTerm
from poolwise.formula.parser import parse_expression
from poolwise.formula.poly import poly_columns
from poolwise.formula.terms import Call, Col
from poolwise.formula.transforms import (
    CATEGORICAL_FUNCTIONS,
    Encoding,
    TransformState,
    VariableEncoding,
    categorical_values,
    contrast_reference,
    evaluate,
    full_coding,
    level_codes,
    term_columns,
)

__all__ = [
    "ARRAY_OFFSET",
    "Encoded",
    "FixedColumns",
    "GroupColumns",
    "ModelledValues",
    "bind_offset",
    "encode",
    "fixed_centers",
    "fixed_columns",
    "group_columns",
    "lower",
    "modelled_values",
    "unpooled_coefficients",
    "with_references",
    "without_poly_scaling",
]

#: the label of an offset given as an array of values
ARRAY_OFFSET = "offset(<values>)"

#: a numeric predictor with this many distinct whole-number values or fewer (and more than
#: two) gets a note suggesting factor()
FEW_INTEGER_VALUES = 10


# -- the offset argument and the model frame ----------------------------------------------------


def offset_argument(f: Formula, offset: Any, n_rows: int) -> tuple[Formula, dict[str, Any]]:
    """``offset=``: an expression of columns (``"log(n)"``) joins the formula's offsets; an
    array of per-row values becomes the column ``offset(<values>)``."""
    if offset is None:
        return f, {}
    if isinstance(offset, str):
        e = parse_expression(offset)
        label = f"offset({e.label})"
        if label in f.offsets:
            return f, {}
        return replace(
            f, exprs=f.exprs + ((label, Call("offset", (e,))),), offsets=f.offsets + (label,)
        ), {}
    values = np.asarray(offset, dtype=float).reshape(-1)
    if values.shape[0] != n_rows:
        raise SpecError(
            f"offset has {values.shape[0]} values but the data has {n_rows} rows; give one value "
            "per data row, or the name of a column (offset='exposure')"
        )
    return replace(f, offsets=f.offsets + (ARRAY_OFFSET,)), {ARRAY_OFFSET: values}


def bind_offset(f: Formula, table: Table, offset: Any) -> tuple[Formula, dict[str, Any]]:
    """The formula with the ``offset=`` argument among its offsets, and the extra model-frame
    column of an offset given as values; every data column the formula reads is checked first
    (for an array: before its length)."""
    if offset is not None and not isinstance(offset, str):
        check_columns(f, table)
    f, extra = offset_argument(f, offset, len(table.frame))
    if not extra:
        check_columns(f, table)  # every data column the formula reads, before evaluating
    return f, extra


def lower(
    f: Formula, table: Table, extra: Mapping[str, np.ndarray]
) -> tuple[Table, dict[str, TransformState]]:
    """The table with one column per expression label of ``f`` (the model frame), evaluated on
    every row: what :func:`check_model_data` validates. ``poly()`` is passed through as its
    argument (the basis is made from the rows that survive validation)."""
    frame = table.frame
    rows = np.arange(1, len(frame) + 1)
    states: dict[str, TransformState] = {}
    derived: dict[str, Any] = {}
    for label in f.columns:
        e = f.expr(label)
        if isinstance(e, Col):
            continue
        if label in frame.columns:
            raise FormulaError(
                f"the data has a column named '{label}', the same as the expression "
                f"{label}; rename that column",
                f.text,
            )
        if isinstance(e, Call) and e.fn in CATEGORICAL_FUNCTIONS:
            derived[label] = categorical_values(e, frame, rows, states, learn=True)
        elif isinstance(e, Call) and e.fn == "poly":
            derived[label] = evaluate(e.args[0], frame, rows, states, learn=True)
        else:
            derived[label] = evaluate(e, frame, rows, states, learn=True)
    derived.update(extra)
    if not derived:
        return table, states
    out = frame.copy()
    for label, v in derived.items():
        out[label] = v.array if isinstance(v, pd.Series) else v
    return replace(table, frame=out), states


# -- the modelled rows ----------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ModelledValues:
    """The numeric predictors (label -> (rows, columns)) and the summed offset on the rows that
    are modelled, what the stateful functions learnt from them, the ``poly()`` labels and the
    notes on predictors with few whole-number values."""

    values: dict[str, np.ndarray]
    states: dict[str, TransformState]
    row_offset: np.ndarray
    poly_labels: tuple[str, ...]
    notes: tuple[str, ...]


def _few_integers_note(var: str, x: np.ndarray) -> str | None:
    u = np.unique(x)
    if not (2 < u.size <= FEW_INTEGER_VALUES) or not np.all(u == np.round(u)):
        return None
    shown = ", ".join(f"{v:g}" for v in u)
    return (
        f"predictor '{var}' has only {u.size} distinct whole-number values ({shown}) and is "
        f"fitted as one linear slope; if it codes categories (periods, classes), write "
        f"factor({var}) in the formula (or --categorical {var})"
    )


def _no_learning_on_patterns(states: Mapping[str, TransformState], counts: Any,
                             weighting: Any = None) -> None:
    """scale() / poly() learn from the rows; on row patterns (or rows with frequency weights)
    they would learn from the distinct values instead: SpecError."""
    if not states or counts is None:
        return
    shown = ", ".join(sorted(states))
    fix = ("drop them (standardize=True already scales numeric predictors for sampling) or "
           "read the data with pandas")
    if weighting is not None and getattr(weighting, "kind", None) == "frequency":
        where = (f"these rows carry frequency weights (column '{weighting.column}'), each "
                 "standing for several rows")
        fix = ("drop them (standardize=True already scales numeric predictors for sampling, "
               "weighted by the frequencies) or expand the rows")
    else:
        where = "these data were counted into row patterns by a data engine"
    raise SpecError(f"{shown} learn from the data rows, but {where}; {fix}")


def modelled_values(f: Formula, checked: CheckedData) -> ModelledValues:
    """The numeric predictors and the offset, evaluated again on the rows that are modelled
    (R computes ``poly`` / ``scale`` on the model frame), learning the stateful functions."""
    frame, rows = checked.frame, checked.row_number
    n_rows = len(frame)
    states: dict[str, TransformState] = {}
    values: dict[str, np.ndarray] = {}
    notes: list[str] = []
    poly_labels: list[str] = []
    for var in f.predictors:
        if var in checked.categorical:
            continue
        e = f.expr(var)
        if isinstance(e, Col):
            x = checked.numeric[var]
            note = _few_integers_note(var, x)
            if note:
                notes.append(note)
            values[var] = x[:, None]
        else:
            values[var] = evaluate(e, frame, rows, states, learn=True).reshape(n_rows, -1)
            if isinstance(e, Call) and e.fn == "poly":
                poly_labels.append(var)
    row_offset = np.zeros(n_rows)
    for lab in f.offsets:
        row_offset += evaluate(f.expr(lab), frame, rows, states, learn=True)
    _no_learning_on_patterns(states, checked.counts, checked.weighting)
    return ModelledValues(values, states, row_offset, tuple(poly_labels), tuple(notes))


# -- reference levels --------------------------------------------------------------------------


def _with_reference(
    checked: CheckedData, f: Formula, reference: Mapping[str, Any]
) -> tuple[CheckedData, dict[str, Any]]:
    """Put the chosen reference level of each categorical predictor first. A key may name the
    variable (``factor(period)``) or the column inside a ``factor()`` / ``C()`` of it."""
    categorical = dict(checked.categorical)
    alias: dict[str, str] = {}
    for lab in categorical:
        e = f.expr(lab)
        if isinstance(e, Call) and isinstance(e.args[0], Col):
            alias.setdefault(e.args[0].name, lab)
    chosen: dict[str, Any] = {}
    for key, level in reference.items():
        col = key if key in f.predictors or key not in alias else alias[key]
        _check_reference_column(f, col, categorical)
        levels = categorical[col]
        first = _matching_level(col, level, levels)
        categorical[col] = [first] + [lv for lv in levels if lv is not first]
        chosen[col] = first
    return replace(checked, categorical=categorical), chosen


def _check_reference_column(f: Formula, col: str, categorical: Mapping[str, Any]) -> None:
    """SpecError unless ``col`` is a categorical predictor of the model."""
    if col not in f.predictors:
        raise SpecError(
            f"reference names column '{col}', which is not a predictor of the model "
            f"(predictors: {', '.join(f.predictors) or 'none'})"
        )
    if col not in categorical:
        raise SpecError(
            f"reference applies to categorical predictors, but '{col}' is numeric; "
            f"write factor({col}) in the formula, or convert it first, e.g. "
            f"data['{col}'] = data['{col}'].astype('category') (--categorical {col})"
        )


def _matching_level(col: str, level: Any, levels: Sequence[Any]) -> Any:
    """The level of ``col`` that ``level`` names (as a value, else by its text)."""
    match = [lv for lv in levels if lv == level]
    if not match:  # '2' for the label 2, or 2 for the label '2'
        match = [lv for lv in levels if str(lv) == str(level)]
    if not match:
        more = ", ..." if len(levels) > 10 else ""
        shown = ", ".join(repr(lv) for lv in levels[:10]) + more
        raise SpecError(
            f"reference level {level!r} is not a level of '{col}' in the data; "
            f"its levels are {shown}"
        )
    return match[0]


def with_references(
    f: Formula, checked: CheckedData, reference: Mapping[str, Any] | None
) -> CheckedData:
    """The checked data with each categorical predictor's reference level first:
    ``C(x, ref = ...)`` first, then the ``reference=`` option."""
    wanted: dict[str, Any] = {}
    for var in checked.categorical:
        e = f.expr(var)
        if isinstance(e, Call):
            ref = contrast_reference(e, list(checked.categorical[var]))
            if ref is not None:
                wanted[var] = ref
    wanted.update(reference or {})
    if wanted:
        checked, _ = _with_reference(checked, f, wanted)
    return checked


def without_poly_scaling(checked: CheckedData, poly_labels: Sequence[str]) -> CheckedData:
    """A ``poly()`` basis is orthonormal: its argument's extreme scale is neither rescaled nor
    warned about."""
    extreme = {k: v for k, v in checked.scaling.items() if k not in poly_labels}
    data_warn = tuple(w for w in checked.warnings if not any(
        w.startswith(f"predictor '{p}' has an extreme scale") for p in poly_labels))
    return replace(checked, warnings=data_warn, scaling=extreme)


# -- encodings and sampling scales --------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Encoded:
    """Every predictor encoded: ``values`` per numeric label an (rows, columns) matrix, per
    categorical label its level codes; ``scales``: numeric column -> (mean, scale) of those
    rescaled for sampling."""

    encoding: Encoding
    values: dict[str, np.ndarray]
    scales: dict[str, tuple[float, float]]


def _predictor_scales(
    values: Mapping[str, np.ndarray],
    encoding: Encoding,
    extreme: Mapping[str, tuple[float, float]],
    standardize: bool,
    counts: np.ndarray | None = None,
) -> dict[str, tuple[float, float]]:
    """Numeric columns that are rescaled for sampling: column name -> (mean, scale);
    ``counts``: the rows each entry stands for (patterns counted by a data engine)."""
    out: dict[str, tuple[float, float]] = {}
    for var in encoding.numeric:
        M = values[var]
        for j, col in enumerate(encoding.variable(var).columns):
            x = M[:, j]
            if var in extreme and M.shape[1] == 1:  # extreme scale: always (validate.py warns)
                center, scale = extreme[var]
                out[col] = (float(center), float(scale))
            elif standardize and np.unique(x).size > 2:
                mean, sd = moments(x, counts)  # rows or patterns: the same numbers
                if sd > 0.0:
                    out[col] = (mean, sd)
    return out


def encode(
    f: Formula, checked: CheckedData, modelled: ModelledValues, standardize: bool
) -> Encoded:
    """Each predictor's encoding (kind, columns, levels with the reference first; the transform
    states and offsets), the level codes of the categorical ones and the sampling scales."""
    values = dict(modelled.values)
    variables: list[VariableEncoding] = []
    for var in f.predictors:
        if var in checked.categorical:
            levels = tuple(checked.categorical[var])
            variables.append(VariableEncoding(
                # naming: a level's column is the variable's label followed by the level (R's)
                var, "categorical", tuple(f"{var}{lv}" for lv in levels[1:]), levels))
            values[var] = level_codes(checked.frame[var].astype(object).to_numpy(), levels)
        else:
            e = f.expr(var)
            cols = (poly_columns(e) if isinstance(e, Call) and e.fn == "poly" else (var,))
            variables.append(VariableEncoding(var, "numeric", cols))
    encoding = Encoding(tuple(variables), tuple(modelled.states.values()), f.offsets)
    scales = _predictor_scales(values, encoding, checked.scaling, standardize, checked.counts)
    return Encoded(encoding, values, scales)


# -- model-matrix columns ----------------------------------------------------------------------


def _column_scale(parts: tuple[str, ...], scales: Mapping[str, tuple[float, float]]) -> float:
    """Divisor of a model-matrix column: the product of its numeric factors' scales."""
    s = 1.0
    for col in parts:
        if col in scales:
            s *= scales[col][1]
    return s


def _part_columns(
    terms: Sequence[Any], siblings: Sequence[Any], intercept: bool, with_intercept: bool,
    enc: Encoded, n_rows: int,
) -> tuple[list[str], list[np.ndarray], list[tuple[str, ...]]]:
    """The columns of one part of the formula (the fixed effects, or one group term): an
    intercept column when ``with_intercept``, then each of ``terms`` coded by R's rule among
    ``siblings`` (``intercept``: whether the part has one). Returns the names, the column
    blocks and, per column, the numeric columns multiplied into it (the intercept: none)."""
    names: list[str] = []
    blocks: list[np.ndarray] = []
    parts: list[tuple[str, ...]] = []
    if with_intercept:
        names.append("Intercept")
        blocks.append(np.ones((n_rows, 1)))
        parts.append(())
    for term in terms:
        full = full_coding(term.variables, siblings, intercept, enc.encoding)
        term_names, cols, term_parts = term_columns(
            term.variables, enc.values, enc.encoding, n_rows, full)
        names.extend(term_names)
        blocks.append(cols)
        parts.extend(term_parts)
    return names, blocks, parts


def unpooled_coefficients(f: Formula, pooling: str) -> set[str]:
    """The coefficients that vary by group without pooling (``pooling="none"``): they leave
    the fixed effects."""
    out: set[str] = set()
    if pooling == "none":
        for g in f.groups:
            out.update(g.coef_names)
    return out


@dataclass(frozen=True, eq=False)
class FixedColumns:
    """The fixed-effect columns on the rows: ``X`` (rows, K), each column's divisor for
    sampling and whether any of its numeric factors is rescaled."""

    names: tuple[str, ...]
    X: np.ndarray
    scale: np.ndarray
    rescaled: tuple[bool, ...]


def fixed_columns(f: Formula, enc: Encoded, pooling: str, n_rows: int) -> FixedColumns:
    """The fixed effects' columns (an unpooled coefficient is left to its group term)."""
    unpooled = unpooled_coefficients(f, pooling)
    names, blocks, parts = _part_columns(
        [t for t in f.terms if t.name not in unpooled], [t.variables for t in f.terms],
        f.intercept, f.intercept and "Intercept" not in unpooled, enc, n_rows,
    )
    X = np.column_stack(blocks) if blocks else np.empty((n_rows, 0))
    scale = np.array([_column_scale(p, enc.scales) for p in parts], dtype=float)
    rescaled = tuple(any(c in enc.scales for c in p) for p in parts)
    return FixedColumns(tuple(names), X, scale, rescaled)


@dataclass(frozen=True, eq=False)
class GroupColumns:
    """One group term on the rows: each row's level code into ``labels`` (sorted), its
    columns ``Z`` (rows, C) and each column's divisor for sampling."""

    term: GroupTerm
    codes: np.ndarray
    labels: np.ndarray
    Z: np.ndarray
    coef_names: tuple[str, ...]
    z_scale: np.ndarray


def group_columns(g: GroupTerm, checked: CheckedData, enc: Encoded) -> GroupColumns:
    """The level codes and varying-coefficient columns of group term ``g``."""
    n_rows = len(checked.frame)
    codes, labels = pd.factorize(checked.group_keys[g.group_name], sort=True)
    names, blocks, parts = _part_columns(
        g.terms, [t.variables for t in g.terms], g.intercept, g.intercept, enc, n_rows)
    return GroupColumns(
        term=g,
        codes=codes.astype(np.int64),
        labels=np.asarray(labels),
        Z=np.column_stack(blocks),
        coef_names=tuple(names),
        z_scale=np.array([_column_scale(p, enc.scales) for p in parts]),
    )


def fixed_centers(
    fixed: FixedColumns,
    group_terms: Sequence[GroupTerm],
    pooling: str,
    standardize: bool,
    scales: Mapping[str, tuple[float, float]],
    counts: np.ndarray | None,
) -> np.ndarray:
    """The mean of each fixed column over the rows, subtracted for sampling (brms style), only
    where an intercept absorbs the shift: the fixed intercept, or the one unpooled per-group
    intercept of ``pooling="none"``; zeros elsewhere. ``counts``: rows per pattern."""
    x_center = np.zeros(len(fixed.names))
    carrier = "Intercept" in fixed.names or (
        pooling == "none" and sum(1 for g in group_terms if g.intercept) == 1
    )
    if carrier and (standardize or scales):
        for k, name in enumerate(fixed.names):
            if name == "Intercept":
                continue
            if standardize or fixed.rescaled[k]:
                x_center[k] = moments(fixed.X[:, k], counts)[0]
    return x_center
