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

:func:`build_design` is a short pipeline of phases, each a function of its own: the predictors
on the rows (the model frame, transforms, references, encodings, scales and model-matrix
columns) are in :mod:`poolwise.data.encode`, the compression of rows into binomial cells in
:mod:`poolwise.data.cells`; the split adds no pass over the rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from poolwise.data.cells import Cells, binomial_constant, compress, level_totals
from poolwise.data.encode import (
    ARRAY_OFFSET,
    GroupColumns,
    bind_offset,
    encode,
    fixed_centers,
    fixed_columns,
    group_columns,
    lower,
    modelled_values,
    offset_argument,
    with_references,
    without_poly_scaling,
)
from poolwise.data.size import check_design_size
from poolwise.data.table import Table, read_table
from poolwise.data.validate import CheckedData, check_design, check_model_data, emit_warnings
from poolwise.data.weights import Weighting
from poolwise.errors import SpecError
from poolwise.formula import Formula, GroupTerm, parse_formula
from poolwise.formula.transforms import Encoding

__all__ = ["ARRAY_OFFSET", "Design", "GroupDesign", "build_design"]


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
    #: the weights (``weights=``, :mod:`poolwise.data.weights`): column, kind and totals; None
    #: without weights. Frequency weights are in ``row_count`` (a row of weight w stands for
    #: w rows); survey weights in ``row_weight``
    weighting: Weighting | None = None
    #: survey weights: each entry's weight as given (summed over the rows it stands for); the
    #: likelihood multiplies each entry's log-likelihood by ``row_weight * weighting.scale``
    #: (:attr:`likelihood_weight`). None otherwise
    row_weight: np.ndarray | None = None

    @property
    def likelihood_weight(self) -> np.ndarray | None:
        """Survey weights: each entry's weight in the pseudo-likelihood (they sum to the rows);
        None without survey weights."""
        if self.row_weight is None or self.weighting is None:
            return None
        return self.row_weight * self.weighting.scale

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


def _read(
    f: Formula, data: Any, *, success: Any, drop_missing: bool, offset: Any,
    weights: str | None = None, weights_kind: str | None = None,
) -> tuple[Formula, Table]:
    """The data as a Table: a frame or a small file read by pandas, or a large source
    validated and counted into row patterns by a data engine (the formula then reads the
    columns of an ``offset=`` expression too)."""
    if isinstance(data, Table):
        return f, data
    from poolwise.data import ingest  # imports DuckDB / PySpark only when they are used

    if not ingest.wants_engine(data):  # files, globs, DuckDB relations, Spark DataFrames
        return f, read_table(data)
    if offset is not None and not isinstance(offset, str):
        raise SpecError(
            "offset given as an array of per-row values, but the data are counted "
            "into row patterns by a data engine (no per-row order); give the offset "
            "as an expression of columns (offset='log(exposure)')"
        )
    f, _ = offset_argument(f, offset, 0)  # an expression: its columns are read too
    return f, ingest.read_patterns(f, data, success=success, drop_missing=drop_missing,
                                   weights=weights, weights_kind=weights_kind)


def _read_and_check(
    f: Formula, data: Any, *, success: Any, drop_missing: bool, offset: Any, pooling: str,
    weights: str | None, weights_kind: str | None,
) -> tuple[Formula, Table, CheckedData]:
    """The first phases: read, offset, model frame, validation (the weights included)."""
    f, table = _read(f, data, success=success, drop_missing=drop_missing, offset=offset,
                     weights=weights, weights_kind=weights_kind)
    f, extra = bind_offset(f, table, offset)
    lowered, _ = lower(f, table, extra)
    checked = check_model_data(
        f, lowered, success=success, drop_missing=drop_missing, pooling=pooling,
        weights=weights, weights_kind=weights_kind,
    )
    return f, table, checked


def _group_design(gc: GroupColumns, cells: Cells, successes: np.ndarray, trials: np.ndarray,
                  counts: np.ndarray | None) -> GroupDesign:
    """A group term's columns on the rows as a GroupDesign on the cells."""
    level_rows, level_trials, level_successes = level_totals(
        gc.codes, len(gc.labels), successes, trials, counts)
    return GroupDesign(
        term=gc.term,
        name=gc.term.group_name,
        coef_names=gc.coef_names,
        labels=gc.labels,
        codes=gc.codes[cells.first_rows],
        Z=np.ascontiguousarray(gc.Z[cells.first_rows]),
        level_rows=level_rows,
        level_trials=level_trials,
        level_successes=level_successes,
        z_scale=gc.z_scale,
    )


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
    weights: str | None = None,
    weights_kind: str | None = None,
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
    ``weights``: a column of row weights, ``weights_kind`` "frequency" (a row of weight w
    stands for w rows; the default when every weight is whole) or "survey" (a
    pseudo-likelihood; :mod:`poolwise.data.weights`).

    The phases, in order: read, offset, model frame, validation, the modelled rows' values,
    reference levels, encodings and scales, the size of the fixed effects (refused when a
    factor with many levels would not fit), fixed columns (with the collinearity and separation
    checks, then every data warning), group columns, cells, the binomial constant, centering.
    """
    f = formula if isinstance(formula, Formula) else parse_formula(formula)
    f, table, checked = _read_and_check(
        f, data, success=success, drop_missing=drop_missing, offset=offset, pooling=pooling,
        weights=weights, weights_kind=weights_kind)
    modelled = modelled_values(f, checked)
    checked = with_references(f, checked, reference)
    checked = without_poly_scaling(checked, modelled.poly_labels)
    enc = encode(f, checked, modelled, standardize)
    check_design_size(f, enc, pooling, len(checked.frame))  # before anything is built [R.18]
    fixed = fixed_columns(f, enc, pooling, len(checked.frame))
    data_warnings = check_design(  # collinearity (error) and separation (warning)
        checked, fixed.names, fixed.X, checked.successes, checked.trials,
        outcome=f.response.successes,
    )
    emit_warnings(data_warnings)  # from here: the warnings name the caller (stacklevel 3)
    group_terms = f.groups if pooling != "complete" else ()
    grouped = [group_columns(g, checked, enc) for g in group_terms]
    row_y, row_n, w = checked.successes, checked.trials, checked.counts
    cells = compress(fixed.X, grouped, modelled.row_offset if f.offsets else None,
                     row_y, row_n, w)
    return Design(
        formula=f,
        fixed_names=fixed.names,
        X=np.ascontiguousarray(fixed.X[cells.first_rows]),
        y=cells.y,
        n=cells.n,
        groups=tuple(_group_design(gc, cells, row_y, row_n, w) for gc in grouped),
        row_cell=cells.row_cell,
        row_y=row_y,
        row_n=row_n,
        row_number=checked.row_number,
        log_binom_const=_log_binom_const(checked),
        data_sha256=table.sha256,
        source=table.source,
        warnings=data_warnings,
        notes=tuple(dict.fromkeys(table.notes + checked.notes + modelled.notes)),
        predictor_scaling=enc.scales,
        x_center=fixed_centers(fixed, group_terms, pooling, standardize, enc.scales, w),
        x_scale=fixed.scale,
        standardize=standardize,
        reference={col: levels[0] for col, levels in checked.categorical.items()},
        encoding=enc.encoding,
        offset=np.ascontiguousarray(modelled.row_offset[cells.first_rows]) if f.offsets else None,
        row_count=None if w is None else np.asarray(w, dtype=np.int64),
        weighting=checked.weighting,
        row_weight=checked.row_weight,
    )


def _log_binom_const(checked: CheckedData) -> float:
    """The sum over rows of ``log C(n, y)``, each row's term times its survey weight (scaled)
    when the data have survey weights."""
    row_y, row_n = checked.successes, checked.trials
    if checked.row_weight is None:
        return binomial_constant(row_y, row_n, checked.counts)
    return binomial_constant(row_y, row_n, checked.row_weight) * checked.weighting.scale
