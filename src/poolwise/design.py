"""Binding a formula to data: design matrices, group codes with original labels, and the
compression of rows into binomial cells (sufficient statistics).

Rows with identical covariates and group memberships are collapsed into one cell
(successes, trials): the likelihood in the parameters is unchanged, up to the constant
``log_binom_const`` that the engine adds back so the log density equals the row-level one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import gammaln

from poolwise.data import Table, read_table
from poolwise.formula import Formula, GroupTerm, Term, parse_formula
from poolwise.validate import (
    CheckedData,
    check_model_data,
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

    @property
    def n_cells(self) -> int:
        return len(self.y)

    @property
    def n_rows(self) -> int:
        return len(self.row_y)

    @property
    def has_intercept(self) -> bool:
        return bool(self.fixed_names) and self.fixed_names[0] == "Intercept"


def _term_columns(term: Term, frame: pd.DataFrame, checked: CheckedData) -> tuple[list[str], np.ndarray]:
    """Columns for one (possibly interaction) term: numeric as is, categorical treatment-coded."""
    names: list[str] = [""]
    cols: list[np.ndarray] = [np.ones(len(frame))]
    for var in term.variables:
        if var in checked.categorical:
            levels = checked.categorical[var]
            values = frame[var].astype(object).to_numpy()
            new_names, new_cols = [], []
            for lev in levels[1:]:  # treatment coding against the reference level
                ind = (values == lev).astype(float)
                for nm, c in zip(names, cols, strict=True):
                    new_names.append(f"{nm}:{var}{lev}" if nm else f"{var}{lev}")
                    new_cols.append(c * ind)
            names, cols = new_names, new_cols
        else:
            x = checked.numeric[var]
            names = [f"{nm}:{var}" if nm else var for nm in names]
            cols = [c * x for c in cols]
    return names, (np.column_stack(cols) if cols else np.empty((len(frame), 0)))


def build_design(
    formula: str | Formula,
    data: Any,
    *,
    pooling: str = "partial",
    success: Any = None,
    drop_missing: bool = False,
) -> Design:
    """Validate ``data`` against ``formula`` and build the cell-level design."""
    f = formula if isinstance(formula, Formula) else parse_formula(formula)
    table = data if isinstance(data, Table) else read_table(data)
    checked = check_model_data(f, table, success=success, drop_missing=drop_missing)
    frame = checked.frame
    n_rows = len(frame)

    # fixed effects
    fixed_names: list[str] = []
    fixed_cols: list[np.ndarray] = []
    group_terms = f.groups if pooling != "complete" else ()
    unpooled_coefs: set[str] = set()
    if pooling == "none":
        for g in group_terms:
            unpooled_coefs.update(g.coef_names)
    if f.intercept and "Intercept" not in unpooled_coefs:
        fixed_names.append("Intercept")
        fixed_cols.append(np.ones((n_rows, 1)))
    for term in f.terms:
        if term.name in unpooled_coefs:
            continue
        names, cols = _term_columns(term, frame, checked)
        fixed_names.extend(names)
        fixed_cols.append(cols)
    X_rows = np.column_stack(fixed_cols) if fixed_cols else np.empty((n_rows, 0))

    # group terms, rows level
    g_codes: list[np.ndarray] = []
    g_labels: list[np.ndarray] = []
    g_Z: list[np.ndarray] = []
    g_coefs: list[tuple[str, ...]] = []
    for g in group_terms:
        key = checked.group_keys[g.group_name]
        codes, labels = pd.factorize(key, sort=True)
        g_codes.append(codes.astype(np.int64))
        g_labels.append(np.asarray(labels))
        zc: list[np.ndarray] = []
        coefs: list[str] = []
        if g.intercept:
            coefs.append("Intercept")
            zc.append(np.ones((n_rows, 1)))
        for term in g.terms:
            names, cols = _term_columns(term, frame, checked)
            coefs.extend(names)
            zc.append(cols)
        g_Z.append(np.column_stack(zc))
        g_coefs.append(tuple(coefs))

    # compression into cells
    key_parts = [X_rows] + [c[:, None].astype(float) for c in g_codes] + g_Z
    key = np.column_stack(key_parts) if key_parts else np.zeros((n_rows, 1))
    _, first, inverse = np.unique(key, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    order = np.argsort(first, kind="stable")  # cells in order of first appearance
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    row_cell = rank[inverse].astype(np.int64)
    first_rows = first[order]
    n_cells = len(first_rows)
    row_y = checked.successes
    row_n = checked.trials
    y = np.bincount(row_cell, weights=row_y, minlength=n_cells)
    n = np.bincount(row_cell, weights=row_n, minlength=n_cells)

    groups: list[GroupDesign] = []
    for g, codes, labels, Z, coefs in zip(group_terms, g_codes, g_labels, g_Z, g_coefs, strict=True):
        L = len(labels)
        groups.append(
            GroupDesign(
                term=g,
                name=g.group_name,
                coef_names=coefs,
                labels=labels,
                codes=codes[first_rows],
                Z=np.ascontiguousarray(Z[first_rows]),
                level_rows=np.bincount(codes, minlength=L),
                level_trials=np.bincount(codes, weights=row_n, minlength=L),
                level_successes=np.bincount(codes, weights=row_y, minlength=L),
            )
        )
    const = float(np.sum(gammaln(row_n + 1) - gammaln(row_y + 1) - gammaln(row_n - row_y + 1)))
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
        warnings=checked.warnings,
        notes=table.notes + checked.notes,
        predictor_scaling=checked.scaling,
    )
