"""Binding a formula to data: design matrices, group codes with original labels, and the
compression of rows into binomial cells (sufficient statistics).

Rows with identical covariates and group memberships are collapsed into one cell
(successes, trials): the likelihood in the parameters is unchanged, up to the constant
``log_binom_const`` that the engine adds back so the log density equals the row-level one.

Standardization (``standardize=True``, the default; brms / rstanarm style)
-----------------------------------------------------------------------------
The priors of the coefficients (``b``, the group SDs of slopes) are meant for predictors on a
unit scale, so the *engine* samples a rescaled copy of the design; ``X`` and ``Z`` keep the
original scale and every draw is transformed back after sampling
(:func:`poolwise.model.predictor.to_original_scale`), so users only ever see original-scale numbers:

* a numeric predictor with more than two distinct values is divided by its standard deviation
  (``np.std``, over the data rows) wherever it appears: main effect, interactions, varying
  slopes. Its coefficient prior ``normal(0, 1)`` is per standard deviation of the predictor;
* a numeric predictor with exactly two values (0/1 indicators, booleans) is *not* scaled: its
  coefficient is the log-odds difference between the two values, like a categorical contrast;
* every fixed-effect column except the intercept is centered at its mean over the data rows
  (only the *fixed* columns, as brms does; group-level columns are scaled, never centered, so
  the group-level SDs and correlations refer to the model exactly as written). Centering
  changes nothing but the meaning of the sampled intercept: the intercept prior
  ``normal(0, 1.5)`` applies to the log-odds at the predictors' means (an average unit);
* predictors with an extreme scale (sd > 1e4 or < 1e-4, found by :mod:`poolwise.data.validate` and
  listed in ``CheckedData.scaling``) are scaled and centered even with ``standardize=False``.

The reported ``Intercept`` is always the log-odds at all predictors = 0 on their original scale
(reference level of every categorical predictor), exactly lme4's / brms' ``Intercept``; the
reported ``b_<col>`` are per original unit; ``a_<g>[label]`` is that group's intercept at all
predictors = 0 and ``b_<g>__<coef>[label]`` its slope per original unit. With
``standardize=False`` the priors apply to these original-scale parameters directly.

Reference level of a categorical predictor: the first category of a pandas ``Categorical``
(in category order), otherwise the first level in sorted order; ``reference={"col": level}``
(or ``C(col, ref = "level")`` in the formula) picks another one.

Functions in the formula (``factor``, ``C``, ``poly``, ``scale``, ``log``, ``I``, ``offset``...)
are evaluated by :mod:`poolwise.formula.transforms`: first on every row, so that
:func:`poolwise.data.validate.check_model_data` validates the model frame (one column per
variable label), then, for the stateful ones (``scale``, ``poly``), again on the rows that are
modelled, as R does. What was learnt (levels, reference levels, ``scale``'s center and scale,
``poly``'s ``alpha`` and ``norm2``, the columns of each variable) is kept in
``Design.encoding``, and ``predict`` applies exactly that to new data.

A numeric predictor with only 3 to 10 distinct whole-number values (``period`` coded 1-4)
gets a note suggesting ``factor(period)``: it is fitted as one linear slope otherwise.

Why one module: lowering a formula onto data is one pass over the rows: the cells, the
predictors' encoding and the group designs are built together and must agree row for row.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import gammaln

from poolwise.data.table import Table, read_table
from poolwise.data.validate import (
    CheckedData,
    check_design,
    check_model_data,
    emit_warnings,
    moments,
)
from poolwise.data.validate import _check_columns as check_columns
from poolwise.errors import FormulaError, SpecError
from poolwise.formula import Formula, GroupTerm, parse_formula
from poolwise.formula.parser import parse_expression
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
    poly_columns,
    term_columns,
)

__all__ = ["Design", "GroupDesign", "build_design"]


@dataclass(frozen=True, eq=False)
class GroupDesign:
    """One group term bound to data.

    ``labels`` are the original group labels (sorted, only those present in the data);
    ``codes`` map each cell to its label; ``Z`` holds each cell's value of every varying
    coefficient (1 for the intercept).
    """

    term: GroupTerm
    name: str
    coef_names: tuple[str, ...]
    labels: np.ndarray
    codes: np.ndarray  # (n_cells,) int64
    Z: np.ndarray  # (n_cells, C) float64
    level_rows: np.ndarray  # rows per level
    level_trials: np.ndarray  # trials per level
    level_successes: np.ndarray  # successes per level
    z_scale: np.ndarray | None = None  # (C,) divisor of each Z column for sampling; None: 1

    @property
    def Z_engine(self) -> np.ndarray:
        """``Z`` as the engine samples it: each column divided by ``z_scale``."""
        if self.z_scale is None:
            return self.Z
        return np.ascontiguousarray(self.Z / self.z_scale)

    @property
    def n_levels(self) -> int:
        return len(self.labels)

    @property
    def n_coefs(self) -> int:
        return len(self.coef_names)


@dataclass(frozen=True, eq=False)
class Design:
    """Everything the engine needs about the data, in cells, plus the row mapping."""

    formula: Formula
    fixed_names: tuple[str, ...]
    X: np.ndarray  # (n_cells, K)
    y: np.ndarray  # (n_cells,) successes, float64 (whole numbers)
    n: np.ndarray  # (n_cells,) trials
    groups: tuple[GroupDesign, ...]
    row_cell: np.ndarray  # (n_rows,) cell of each row
    row_y: np.ndarray  # (n_rows,) successes per row
    row_n: np.ndarray  # (n_rows,) trials per row
    row_number: np.ndarray  # (n_rows,) 1-based data row numbers as in the source
    log_binom_const: float
    data_sha256: str
    source: str
    warnings: tuple[str, ...]
    notes: tuple[str, ...]
    predictor_scaling: dict[str, tuple[float, float]]
    x_center: np.ndarray | None = None  # (K,) subtracted from each X column for sampling
    x_scale: np.ndarray | None = None  # (K,) then divided by this
    standardize: bool = False  # what was asked for; predictor_scaling says what was done
    reference: dict[str, Any] = field(default_factory=dict)  # each categorical -> its reference
    #: how every predictor was encoded (kinds, levels, transform states, columns): what
    #: :func:`poolwise.predict` applies to new data
    encoding: Encoding | None = None
    offset: np.ndarray | None = None  # (n_cells,) known addition to eta; None: no offset
    #: data aggregated by a data engine (poolwise.data.ingest): the ``row_*`` arrays then hold one
    #: entry per distinct row pattern (cell x outcome), standing for ``row_count`` identical
    #: rows, and ``row_number`` is the first row of each pattern; None: one entry per row
    row_count: np.ndarray | None = None

    @property
    def X_engine(self) -> np.ndarray:
        """``X`` as the engine samples it: ``(X - x_center) / x_scale``."""
        if self.x_center is None or self.x_scale is None:
            return self.X
        return np.ascontiguousarray((self.X - self.x_center) / self.x_scale)

    @property
    def rescaled(self) -> bool:
        """True when the engine samples a centered or scaled copy of the design."""
        return bool(
            (self.x_center is not None and np.any(self.x_center != 0.0))
            or (self.x_scale is not None and np.any(self.x_scale != 1.0))
            or any(g.z_scale is not None and np.any(g.z_scale != 1.0) for g in self.groups)
        )

    @property
    def n_cells(self) -> int:
        return len(self.y)

    @property
    def n_rows(self) -> int:
        """Data rows used (the sum of the pattern counts for aggregated data)."""
        if self.row_count is not None:
            return int(np.sum(self.row_count))
        return len(self.row_y)

    @property
    def has_intercept(self) -> bool:
        return bool(self.fixed_names) and self.fixed_names[0] == "Intercept"


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
        levels = categorical[col]
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
        categorical[col] = [match[0]] + [lv for lv in levels if lv is not match[0]]
        chosen[col] = match[0]
    return replace(checked, categorical=categorical), chosen


#: a numeric predictor with this many distinct whole-number values or fewer (and more than
#: two) gets a note suggesting factor()
FEW_INTEGER_VALUES = 10


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


def _lower(
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


def _offset_argument(f: Formula, offset: Any, n_rows: int) -> tuple[Formula, dict[str, Any]]:
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


#: the label of an offset given as an array of values
ARRAY_OFFSET = "offset(<values>)"


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


def _column_scale(parts: tuple[str, ...], scales: Mapping[str, tuple[float, float]]) -> float:
    """Divisor of a model-matrix column: the product of its numeric factors' scales."""
    s = 1.0
    for col in parts:
        if col in scales:
            s *= scales[col][1]
    return s


def build_design(
    formula: str | Formula,
    data: Any,
    *,
    pooling: str = "partial",
    success: Any = None,
    drop_missing: bool = False,
    standardize: bool = True,
    reference: Mapping[str, Any] | None = None,
    offset: Any = None,
) -> Design:
    """Validate ``data`` against ``formula`` and build the cell-level design.

    ``data``: a pandas/polars frame or a small file (read by pandas); a glob or a folder of
    Parquet files, a large CSV/Parquet file, a :class:`poolwise.data.ingest.FileSource`, a DuckDB
    relation or a Spark DataFrame are validated and counted into row patterns by DuckDB or
    Spark (:mod:`poolwise.data.ingest`), giving the same cells, with ``row_count`` set.

    ``standardize`` (default True): numeric predictors with more than two values are scaled
    by their SD and the fixed-effect columns centered *for sampling*; results are reported on
    the original scale (see the module docstring). ``reference={"col": level}`` chooses the
    reference level of a categorical predictor (default: first category of a pandas
    Categorical, else the first level in sorted order). ``offset``: a known per-row addition
    to the linear predictor, as an expression of columns (``"log(exposure)"``, like
    ``offset(log(exposure))`` in the formula) or an array with one value per data row.
    """
    f = formula if isinstance(formula, Formula) else parse_formula(formula)
    if isinstance(data, Table):
        table = data
    else:
        from poolwise.data import ingest  # imports DuckDB / PySpark only when they are used

        if ingest.wants_engine(data):  # files, globs, DuckDB relations, Spark DataFrames
            if offset is not None and not isinstance(offset, str):
                raise SpecError(
                    "offset given as an array of per-row values, but the data are counted "
                    "into row patterns by a data engine (no per-row order); give the offset "
                    "as an expression of columns (offset='log(exposure)')"
                )
            f, _ = _offset_argument(f, offset, 0)  # an expression: its columns are read too
            table = ingest.read_patterns(f, data, success=success, drop_missing=drop_missing)
        else:
            table = read_table(data)
    if offset is not None and not isinstance(offset, str):
        check_columns(f, table)
    f, extra = _offset_argument(f, offset, len(table.frame))
    if not extra:
        check_columns(f, table)  # every data column the formula reads, before evaluating
    lowered, _ = _lower(f, table, extra)
    checked = check_model_data(
        f, lowered, success=success, drop_missing=drop_missing, pooling=pooling
    )
    frame = checked.frame
    n_rows = len(frame)
    rows = checked.row_number

    # transforms on the rows that are modelled (R computes poly / scale on the model frame)
    states: dict[str, TransformState] = {}
    values: dict[str, np.ndarray] = {}
    notes = list(table.notes + checked.notes)
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
    if states and checked.counts is not None:
        # scale() / poly() learn from the rows; on row patterns they would learn from the
        # distinct values instead
        shown = ", ".join(sorted(states))
        raise SpecError(
            f"{shown} learn from the data rows, but these data were counted into row patterns "
            "by a data engine; drop them (standardize=True already scales numeric predictors "
            "for sampling) or read the data with pandas"
        )
    # reference levels: C(x, ref = ...) first, then the reference= option
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
    extreme = {k: v for k, v in checked.scaling.items() if k not in poly_labels}
    data_warn = tuple(w for w in checked.warnings if not any(
        w.startswith(f"predictor '{p}' has an extreme scale") for p in poly_labels))
    checked = replace(checked, warnings=data_warn, scaling=extreme)

    variables: list[VariableEncoding] = []
    for var in f.predictors:
        if var in checked.categorical:
            levels = tuple(checked.categorical[var])
            variables.append(VariableEncoding(
                # naming: a level's column is the variable's label followed by the level (R's)
                var, "categorical", tuple(f"{var}{lv}" for lv in levels[1:]), levels))
            values[var] = level_codes(frame[var].astype(object).to_numpy(), levels)
        else:
            e = f.expr(var)
            cols = (poly_columns(e) if isinstance(e, Call) and e.fn == "poly" else (var,))
            variables.append(VariableEncoding(var, "numeric", cols))
    encoding = Encoding(tuple(variables), tuple(states.values()), f.offsets)
    scales = _predictor_scales(values, encoding, checked.scaling, standardize, checked.counts)

    # fixed effects
    fixed_names: list[str] = []
    fixed_cols: list[np.ndarray] = []
    group_terms = f.groups if pooling != "complete" else ()
    unpooled_coefs: set[str] = set()
    if pooling == "none":
        for g in group_terms:
            unpooled_coefs.update(g.coef_names)
    fixed_scale: list[float] = []
    fixed_rescaled: list[bool] = []
    if f.intercept and "Intercept" not in unpooled_coefs:
        fixed_names.append("Intercept")
        fixed_cols.append(np.ones((n_rows, 1)))
        fixed_scale.append(1.0)
        fixed_rescaled.append(False)
    for term in f.terms:
        if term.name in unpooled_coefs:
            continue
        full = full_coding(term.variables, [t.variables for t in f.terms], f.intercept,
                           encoding)
        names, cols, parts = term_columns(term.variables, values, encoding, n_rows, full)
        fixed_names.extend(names)
        fixed_cols.append(cols)
        fixed_scale.extend(_column_scale(p, scales) for p in parts)
        fixed_rescaled.extend(any(c in scales for c in p) for p in parts)
    X_rows = np.column_stack(fixed_cols) if fixed_cols else np.empty((n_rows, 0))
    # collinearity (error) and separation (warning), then emit every data warning
    data_warnings = check_design(
        checked, fixed_names, X_rows, checked.successes, checked.trials,
        outcome=f.response.successes,
    )
    emit_warnings(data_warnings)

    # group terms, rows level
    g_codes: list[np.ndarray] = []
    g_labels: list[np.ndarray] = []
    g_Z: list[np.ndarray] = []
    g_coefs: list[tuple[str, ...]] = []
    g_zscale: list[np.ndarray] = []
    for g in group_terms:
        key = checked.group_keys[g.group_name]
        codes, labels = pd.factorize(key, sort=True)
        g_codes.append(codes.astype(np.int64))
        g_labels.append(np.asarray(labels))
        zc: list[np.ndarray] = []
        coefs: list[str] = []
        zs: list[float] = []
        if g.intercept:
            coefs.append("Intercept")
            zc.append(np.ones((n_rows, 1)))
            zs.append(1.0)
        for term in g.terms:
            full = full_coding(term.variables, [t.variables for t in g.terms], g.intercept,
                               encoding)
            names, cols, parts = term_columns(term.variables, values, encoding, n_rows, full)
            coefs.extend(names)
            zc.append(cols)
            zs.extend(_column_scale(p, scales) for p in parts)
        g_Z.append(np.column_stack(zc))
        g_coefs.append(tuple(coefs))
        g_zscale.append(np.array(zs))

    # compression into cells (rows with different offsets stay apart)
    key_parts = [X_rows] + [c[:, None].astype(float) for c in g_codes] + g_Z
    if f.offsets:
        key_parts.append(row_offset[:, None])
    key = np.column_stack(key_parts) if key_parts else np.zeros((n_rows, 1))
    # cells in order of first appearance; patterns counted by a data engine (poolwise.data.ingest)
    # come in order of their first row, so they give the same cells in the same order
    _, first, inverse = np.unique(key, axis=0, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    row_cell = rank[inverse.reshape(-1)].astype(np.int64)
    first_rows = first[order]
    n_cells = len(first_rows)
    row_y = checked.successes
    row_n = checked.trials
    w = checked.counts  # rows per pattern; None: one row per entry
    y = np.bincount(row_cell, weights=row_y if w is None else row_y * w, minlength=n_cells)
    n = np.bincount(row_cell, weights=row_n if w is None else row_n * w, minlength=n_cells)

    groups: list[GroupDesign] = []
    for g, codes, labels, Z, coef_names, zscale in zip(
        group_terms, g_codes, g_labels, g_Z, g_coefs, g_zscale, strict=True
    ):
        L = len(labels)
        groups.append(
            GroupDesign(
                term=g,
                name=g.group_name,
                coef_names=coef_names,
                labels=labels,
                codes=codes[first_rows],
                Z=np.ascontiguousarray(Z[first_rows]),
                level_rows=(
                    np.bincount(codes, minlength=L) if w is None
                    else np.bincount(codes, weights=w, minlength=L).astype(np.int64)
                ),
                level_trials=np.bincount(codes, weights=row_n if w is None else row_n * w,
                                         minlength=L),
                level_successes=np.bincount(codes, weights=row_y if w is None else row_y * w,
                                            minlength=L),
                z_scale=zscale,
            )
        )
    # sum over the distinct (successes, trials) pairs with their row counts: rows and patterns
    # give the same number
    if np.all(row_n == 1):  # Bernoulli rows: every term is exactly 0
        const = 0.0
    else:
        pairs, pair_of = np.unique(np.column_stack([row_y, row_n]), axis=0, return_inverse=True)
        pair_rows = np.bincount(pair_of.reshape(-1), weights=w, minlength=len(pairs))
        py, pn = pairs[:, 0], pairs[:, 1]
        const = float(np.dot(pair_rows.astype(float),
                             gammaln(pn + 1) - gammaln(py + 1) - gammaln(pn - py + 1)))
    # center the fixed columns (brms style) only where an intercept absorbs the shift: the fixed
    # intercept, or the one unpooled per-group intercept of pooling="none"
    x_center = np.zeros(len(fixed_names))
    carrier = "Intercept" in fixed_names or (
        pooling == "none" and sum(1 for g in group_terms if g.intercept) == 1
    )
    if carrier and (standardize or scales):
        for k, name in enumerate(fixed_names):
            if name == "Intercept":
                continue
            if standardize or fixed_rescaled[k]:
                x_center[k] = moments(X_rows[:, k], w)[0]
    return Design(
        formula=f,
        fixed_names=tuple(fixed_names),
        X=np.ascontiguousarray(X_rows[first_rows]),
        y=y,
        n=n,
        groups=tuple(groups),
        row_cell=row_cell,
        row_y=row_y,
        row_n=row_n,
        row_number=checked.row_number,
        log_binom_const=const,
        data_sha256=table.sha256,
        source=table.source,
        warnings=data_warnings,
        notes=tuple(dict.fromkeys(notes)),
        predictor_scaling=scales,
        x_center=x_center,
        x_scale=np.array(fixed_scale, dtype=float),
        standardize=standardize,
        reference={col: levels[0] for col, levels in checked.categorical.items()},
        encoding=encoding,
        offset=np.ascontiguousarray(row_offset[first_rows]) if f.offsets else None,
        row_count=None if w is None else np.asarray(w, dtype=np.int64),
    )
