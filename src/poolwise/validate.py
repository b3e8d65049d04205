"""Validation of the columns a model uses, before anything is compiled or sampled.

Every message names the column, up to five offending values and the first offending data
rows (1-based, as a user sees them in the file) and says how to fix the problem. Nothing is
silently dropped or remapped. See RELIABILITY.md section 7 for the full table of bad inputs.
"""

from __future__ import annotations

import difflib
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from poolwise.data import Table
from poolwise.errors import DataError, DataWarning, FormulaError
from poolwise.formula import Formula

__all__ = ["CheckedData", "check_model_data", "fmt_rows", "fmt_values"]


@dataclass(frozen=True, eq=False)
class CheckedData:
    """The model's columns, validated and converted."""

    frame: pd.DataFrame
    successes: np.ndarray  # per row, float64 whole numbers
    trials: np.ndarray  # per row
    numeric: dict[str, np.ndarray]
    categorical: dict[str, list[Any]]  # levels, reference first
    group_keys: dict[str, np.ndarray]  # group name -> labels per row
    row_number: np.ndarray
    warnings: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    scaling: dict[str, tuple[float, float]] = field(default_factory=dict)


def fmt_rows(mask_or_idx: np.ndarray, row_number: np.ndarray, limit: int = 5) -> str:
    idx = np.flatnonzero(mask_or_idx) if mask_or_idx.dtype == bool else np.asarray(mask_or_idx)
    shown = ", ".join(str(int(row_number[i])) for i in idx[:limit])
    more = f" and {len(idx) - limit} more" if len(idx) > limit else ""
    return f"row{'s' if len(idx) > 1 else ''} {shown}{more}"


def fmt_values(values: Any, limit: int = 5) -> str:
    uniq: list[Any] = []
    for v in values:
        if v not in uniq:
            uniq.append(v)
        if len(uniq) > limit:
            break
    shown = ", ".join(_fmt_scalar(v) for v in uniq[:limit])
    return "{" + shown + (", ..." if len(uniq) > limit else "") + "}"


def _fmt_scalar(v: Any) -> str:
    if isinstance(v, float | np.floating) and float(v).is_integer():
        return str(int(v))
    if isinstance(v, str):
        return repr(v)
    return str(v)


def _missing_mask(s: pd.Series) -> np.ndarray:
    return np.asarray(s.isna(), dtype=bool)


def _check_columns(f: Formula, frame: pd.DataFrame) -> None:
    available = list(frame.columns)
    for col in f.columns:
        if col not in frame.columns:
            close = difflib.get_close_matches(col, available, n=1, cutoff=0.6)
            hint = f"did you mean '{close[0]}'? " if close else ""
            start = f.text.find(col)
            span = (start, start + len(col)) if start >= 0 else None
            raise FormulaError(
                f"column '{col}' not found; {hint}available: {', '.join(available)}",
                f.text,
                span,
            )


def _numeric(frame: pd.DataFrame, col: str, rows: np.ndarray, what: str) -> np.ndarray:
    s = frame[col]
    if pd.api.types.is_bool_dtype(s.dtype):
        return s.to_numpy(dtype=float)
    if not pd.api.types.is_numeric_dtype(s.dtype):
        conv = pd.to_numeric(s, errors="coerce")
        bad = np.asarray(conv.isna() & ~s.isna())
        vals = s[bad].astype(str).tolist()
        hint = (
            " - decimal comma? pass decimal=','"
            if any("," in v and v.replace(",", "", 1).lstrip("-").isdigit() for v in vals)
            else ""
        )
        raise DataError(
            f"{what} '{col}' must be numeric; could not parse {fmt_values(vals)} "
            f"({fmt_rows(bad, rows)}){hint}"
        )
    x = s.to_numpy(dtype=float, na_value=np.nan)
    inf = np.isinf(x)
    if inf.any():
        raise DataError(
            f"column '{col}' has infinite values ({fmt_rows(inf, rows)}); "
            "replace or remove them before fitting"
        )
    return x


def _whole(x: np.ndarray, col: str, rows: np.ndarray, what: str) -> None:
    frac = np.abs(x - np.round(x)) > 0
    if frac.any():
        raise DataError(
            f"{what} must be whole numbers; column '{col}' has {fmt_values(x[frac])} "
            f"({fmt_rows(frac, rows)})"
        )
    neg = x < 0
    if neg.any():
        raise DataError(
            f"{what} must be >= 0; column '{col}' has {fmt_values(x[neg])} ({fmt_rows(neg, rows)})"
        )


def _response(
    f: Formula, frame: pd.DataFrame, rows: np.ndarray, success: Any
) -> tuple[np.ndarray, np.ndarray]:
    r = f.response
    if r.kind == "bernoulli":
        s = frame[r.successes]
        col = r.successes
        if pd.api.types.is_bool_dtype(s.dtype):
            y = s.to_numpy(dtype=float)
        else:
            values = s.to_numpy(dtype=object)
            uniq = list(pd.unique(values))
            if success is not None:
                if success not in uniq:
                    raise DataError(
                        f"success={success!r} is not a value of outcome '{col}'; "
                        f"its values are {fmt_values(uniq)}"
                    )
                if len(uniq) > 2:
                    raise DataError(
                        f"outcome '{col}' has {len(uniq)} levels {fmt_values(uniq)}; "
                        "a Bernoulli model needs exactly 2"
                    )
                y = (values == success).astype(float)
            elif pd.api.types.is_numeric_dtype(s.dtype):
                x = s.to_numpy(dtype=float)
                bad = ~np.isin(x, [0.0, 1.0])
                if bad.any():
                    if len(uniq) == 2:
                        raise DataError(
                            f"outcome '{col}' has two values {fmt_values(sorted(uniq))}; "
                            f"specify which is the success with success={_fmt_scalar(max(uniq))}"
                        )
                    raise DataError(
                        f"outcome '{col}' must be 0/1 for a Bernoulli model; found values "
                        f"{fmt_values(x[bad])} ({fmt_rows(bad, rows)}). For counts out of n "
                        "use the binomial form 'successes | trials(n)' or 'cbind(successes, failures)'"
                    )
                y = x
            else:
                if len(uniq) == 2:
                    raise DataError(
                        f"outcome '{col}' has two values {fmt_values(uniq)}; specify which "
                        f"is the success with success={uniq[0]!r} (or success={uniq[1]!r})"
                    )
                raise DataError(
                    f"outcome '{col}' has {len(uniq)} levels {fmt_values(uniq)}; "
                    "a Bernoulli model needs exactly 2"
                )
        return y, np.ones_like(y)
    succ = _numeric(frame, r.successes, rows, "successes column")
    _whole(succ, r.successes, rows, "successes")
    if r.kind == "cbind":
        assert r.failures is not None
        fail = _numeric(frame, r.failures, rows, "failures column")
        _whole(fail, r.failures, rows, "failures")
        trials = succ + fail
    else:
        assert r.trials is not None
        trials = _numeric(frame, r.trials, rows, "trials column")
        _whole(trials, r.trials, rows, "trials")
        over = succ > trials
        if over.any():
            pairs = ", ".join(
                f"{int(succ[i])} > {int(trials[i])}" for i in np.flatnonzero(over)[:5]
            )
            raise DataError(
                f"successes exceed trials in {int(over.sum())} "
                f"row{'s' if over.sum() > 1 else ''} ({fmt_rows(over, rows)}: {pairs}); "
                f"check columns '{r.successes}' and '{r.trials}'"
            )
    return succ, trials


def check_model_data(
    f: Formula, table: Table, *, success: Any = None, drop_missing: bool = False
) -> CheckedData:
    """Validate and convert the columns ``f`` uses. Raises DataError / FormulaError."""
    frame = table.frame
    _check_columns(f, frame)
    rows = np.arange(1, len(frame) + 1)
    warn: list[str] = []
    notes: list[str] = []

    used = list(f.columns)
    missing = np.zeros(len(frame), dtype=bool)
    per_col: list[tuple[str, np.ndarray]] = []
    for col in used:
        m = _missing_mask(frame[col])
        if m.any():
            per_col.append((col, m))
            missing |= m
    if per_col:
        if not drop_missing:
            col, m = per_col[0]
            others = f" (also in {', '.join(c for c, _ in per_col[1:])})" if len(per_col) > 1 else ""
            raise DataError(
                f"column '{col}' has {int(m.sum())} missing value{'s' if m.sum() > 1 else ''} "
                f"({fmt_rows(m, rows)}){others}; drop them with drop_missing=True "
                "(--drop-missing) or impute before fitting"
            )
        msg = (
            f"dropped {int(missing.sum())} of {len(frame)} rows with missing values in "
            f"{', '.join(c for c, _ in per_col)}"
        )
        warn.append(msg)
        warnings.warn(msg, DataWarning, stacklevel=3)
        frame = frame.loc[~missing].reset_index(drop=True)
        rows = rows[~missing]
        if len(frame) == 0:
            raise DataError("data has no observations (0 rows) after dropping missing values")
    for col in frame.columns:
        if col not in used:
            m = _missing_mask(frame[col])
            if m.any():
                notes.append(
                    f"ignored column '{col}' ({int(m.sum())} missing values, not used by the model)"
                )

    successes, trials = _response(f, frame, rows, success)

    numeric: dict[str, np.ndarray] = {}
    categorical: dict[str, list[Any]] = {}
    for var in f.predictors:
        s = frame[var]
        if (
            pd.api.types.is_numeric_dtype(s.dtype) or pd.api.types.is_bool_dtype(s.dtype)
        ) and not isinstance(s.dtype, pd.CategoricalDtype):
            numeric[var] = _numeric(frame, var, rows, "predictor")
        else:
            if isinstance(s.dtype, pd.CategoricalDtype):
                levels = [lv for lv in s.cat.categories if (s == lv).any()]
            else:
                levels = sorted(pd.unique(s.astype(object)), key=str)
            categorical[var] = list(levels)

    group_keys: dict[str, np.ndarray] = {}
    for g in f.groups:
        if len(g.group) == 1:
            key = frame[g.group[0]].to_numpy(dtype=object)
            # keep integer labels as Python ints (1..61, not 1.0..61.0)
            if pd.api.types.is_integer_dtype(frame[g.group[0]].dtype):
                key = frame[g.group[0]].to_numpy(dtype=np.int64)
        else:
            key = np.array(
                [":".join(str(v) for v in vals) for vals in zip(*(frame[c] for c in g.group), strict=True)],
                dtype=object,
            )
        group_keys[g.group_name] = key

    return CheckedData(
        frame=frame,
        successes=np.asarray(successes, dtype=float),
        trials=np.asarray(trials, dtype=float),
        numeric=numeric,
        categorical=categorical,
        group_keys=group_keys,
        row_number=rows,
        warnings=tuple(warn),
        notes=tuple(notes),
    )
