"""Validation of the columns a model uses, before anything is compiled or sampled.

Every message names the column, up to five offending values and the first offending data
rows (1-based, as a user sees them in the file) and says how to fix the problem. Nothing is
silently dropped or remapped. See docs/reliability.md for the full table of bad inputs (its
section 7 follows the numbering of the shared reliability notes); the row of that table each
check implements is given as ``[§7.n]``, and the later rows as ``[R.n]``.

Two entry points, called in this order:

* :func:`check_model_data` (from :func:`poolwise.data.design.build_design`): columns and values;
  raises :class:`DataError` / :class:`FormulaError`, collects warnings and notes;
* :func:`check_design` (from ``build_design``, on the fixed-effects matrix): collinearity
  (error) and separation (warning); then :func:`emit_warnings` emits everything collected,
  so no warning is shown for a data set that is then rejected;
* then, right before sampling, :func:`poolwise.inference.plan.check_run` (the sampling layer) checks
  the run: flat priors on separated or constant data, the memory of the whole plan, and weak
  sampler settings.

Decisions recorded here:

* rows with ``trials = 0`` carry no information about any parameter; they are **dropped**,
  with a :class:`DataWarning` naming the rows [§7.16];
* integral floats in count columns (``3.0``) are accepted as whole numbers [§7.15]; a float
  grouping column whose values are all whole (``1.0``, ``2.0``, as pandas makes of an integer
  column with missing values) keeps integer labels (``1``, ``2``);
* a weight of 0 (``weights=``) is refused, not dropped: dropping it would drop a row on
  poolwise's own [R.26]; frequency weights are folded into the rows' counts before any rule
  that counts rows, so every rule sees the rows the weights stand for;
* group labels are never renumbered: levels are the labels present in the data [§7.26-27];
  labels that are equal as Python values (``1`` and ``1.0``) are one group, labels that only
  look alike (``'1'`` and ``1``, ``'A'`` and ``'a '``) are different groups, with a warning
  [§7.28].

Why one module: it is the table of bad-input rules, one short function per row of
docs/reliability.md section 7, and the message builders those rows share with the SQL route of
:mod:`poolwise.data.ingest`; split by rule family, the rows and their shared texts would scatter.
"""

from __future__ import annotations

import difflib
import math
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, NoReturn

import numpy as np
import pandas as pd

from poolwise.data.table import Table
from poolwise.data.weights import Weighting
from poolwise.errors import DataError, DataWarning, FormulaError, SpecError
from poolwise.formula import Formula

__all__ = [
    "CheckedData",
    "check_model_data",
    "check_design",
    "emit_warnings",
    "separated_coefficients",
    "fmt_rows",
    "fmt_values",
    "moments",
    "SCALE_MAX",
    "SCALE_MIN",
    "MIN_LEVELS",
    "RECOMMENDED_CHAINS",
    "MIN_DRAWS",
    "MAX_COUNT",
]

#: predictor standard deviations outside [SCALE_MIN, SCALE_MAX] are "extreme" [§7.23]
SCALE_MAX = 1e4
SCALE_MIN = 1e-4
#: grouping factors with fewer levels than this get a warning [§7.25]
MIN_LEVELS = 5
#: a text predictor with at least this many distinct values that are all numbers is a
#: number-format mistake (decimal mark), not a factor [R.14]
MANY_LEVELS = 10
#: counts from this value on are not all exact in float64, the model's numbers [R.17]
MAX_COUNT = 2**53
#: PyMC's thresholds for weak-but-valid sampler settings [§7.33]
RECOMMENDED_CHAINS = 4
MIN_DRAWS = 100
CHAINS_WARNING = (
    "We recommend running at least 4 chains for robust computation of convergence diagnostics"
)
DRAWS_WARNING = "The number of samples is too small to check convergence reliably"

_DELIMITER_NAMES = {",": "','", ";": "';'", "\t": "'\\t'", "|": "'|'"}
_DECIMAL_COMMA = re.compile(r"[-+]?[\d.]*\d,\d+")


@dataclass(frozen=True, eq=False)
class CheckedData:
    """The model's columns, validated and converted.

    ``warnings`` are the texts of the :class:`DataWarning` s this data set gets (they are
    emitted by :func:`emit_warnings` and kept in ``Fit.warnings``); ``notes`` are
    informational (unused columns with missing values, unused levels, groups whose outcome is
    constant); ``scaling`` maps each predictor with an extreme scale to its (center, scale).
    """

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
    #: rows per entry when the frame holds distinct row patterns (:mod:`poolwise.data.ingest`)
    #: or rows with frequency weights; None: one row per entry
    counts: np.ndarray | None = None
    #: the weights (``weights=``): their column, kind and totals; None without weights
    weighting: Weighting | None = None
    #: survey weights: each entry's weight (the sum over the rows it stands for), scaled so
    #: that they sum to the rows; None otherwise (frequency weights are in ``counts``)
    row_weight: np.ndarray | None = None


# -- formatting --------------------------------------------------------------------------


def fmt_rows(mask_or_idx: np.ndarray, row_number: np.ndarray, limit: int = 5) -> str:
    """``rows 4, 17, 90`` (1-based data rows), at most ``limit`` of them."""
    idx = np.flatnonzero(mask_or_idx) if mask_or_idx.dtype == bool else np.asarray(mask_or_idx)
    shown = ", ".join(str(int(row_number[i])) for i in idx[:limit])
    more = f" and {len(idx) - limit} more" if len(idx) > limit else ""
    return f"row{'s' if len(idx) > 1 else ''} {shown}{more}"


def fmt_values(values: Any, limit: int = 5) -> str:
    """``{2, 3, 'a'}``: the first ``limit`` distinct values, in order of appearance."""
    uniq: list[Any] = []
    seen: set[Any] = set()
    for v in values:
        key = (type(v).__name__, v) if not _is_nan(v) else ("nan", "nan")
        if key not in seen:
            seen.add(key)
            uniq.append(v)
        if len(uniq) > limit:
            break
    shown = ", ".join(_fmt_scalar(v) for v in uniq[:limit])
    return "{" + shown + (", ..." if len(uniq) > limit else "") + "}"


def _is_nan(v: Any) -> bool:
    return isinstance(v, float | np.floating) and math.isnan(v)


def _fmt_scalar(v: Any) -> str:
    if isinstance(v, bool | np.bool_):
        return str(bool(v))
    if isinstance(v, float | np.floating):
        f = float(v)
        if f.is_integer():
            return str(int(f))
        return f"{f:g}" if math.isfinite(f) else str(f)
    if isinstance(v, np.integer):
        return str(int(v))
    if isinstance(v, str):
        return repr(v)
    return str(v)


def _fmt_num(v: float) -> str:
    return f"{v:.4g}"


def _total(weights: np.ndarray | None, n: int) -> int:
    """Rows represented by ``n`` entries: ``n``, or the sum of the pattern counts."""
    return n if weights is None else int(np.sum(weights))


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _labels(values: Sequence[Any], limit: int = 5) -> str:
    shown = ", ".join(_fmt_label(v) for v in values[:limit])
    return shown + (f" and {len(values) - limit} more" if len(values) > limit else "")


def _fmt_label(v: Any) -> str:
    """Group and level labels as a user writes them: ``3``, ``urban``; odd text quoted."""
    return v if isinstance(v, str) and v and v.strip() == v else _fmt_scalar(v)


# -- message builders ------------------------------------------------------------------
# One text per rule, shared by the pandas checks below and the SQL checks of
# :mod:`poolwise.data.ingest` (which pass the first offending values and a ``rows`` text made by
# :func:`fmt_rows` from the first offending row numbers and the count).


def not_numeric_message(role: str, col: str, values: Sequence[str], rows: str) -> str:
    """[§7.19] text that is not a number in a numeric column."""
    comma = any(_DECIMAL_COMMA.fullmatch(str(v).strip()) for v in values)
    hint = (
        " - decimal comma? pass decimal=',' (--decimal ',')"
        if comma
        else "; fix or remove those values"
    )
    return (
        f"{role} column '{col}' must be numeric; could not parse {fmt_values(values)} "
        f"({rows}){hint}"
    )


def infinite_message(role: str, col: str, values: Sequence[Any], rows: str) -> str:
    """[§7.18]"""
    return (
        f"{role} column '{col}' has infinite values {fmt_values(values)} "
        f"({rows}); replace or remove them before fitting"
    )


def fraction_message(what: str, col: str, values: Sequence[Any], rows: str) -> str:
    """[§7.15]"""
    return (
        f"{what} must be whole numbers; column '{col}' has {fmt_values(values)} "
        f"({rows}); counts cannot be fractions"
    )


def negative_message(what: str, col: str, values: Sequence[Any], rows: str) -> str:
    """[§7.14]"""
    return f"{what} must be >= 0; column '{col}' has {fmt_values(values)} ({rows})"


def too_large_message(what: str, col: str, values: Sequence[Any], rows: str) -> str:
    """[R.17] counts of 2^53 or more: not exact in 64-bit floating point."""
    return (
        f"{what} must be below 2^53 = 9,007,199,254,740,992; column '{col}' has "
        f"{fmt_values(values)} ({rows}): counts this large are not exact in 64-bit floating "
        "point, in which the model is computed; check the column (a unit or parsing mistake?)"
    )


def not_binary_message(
    col: str, values: Sequence[Any], rows: str, *, whole: bool, nonneg: bool
) -> str:
    """[§7.8] a Bernoulli outcome with values outside {0, 1}."""
    if whole and nonneg:  # [§7.17] looks like counts: a binomial model needs trials
        counts = (
            ". These look like counts: a binomial model needs a trials column, e.g. "
            f"'{col} | trials(n) ~ ...' or '{col}/n ~ ...' (n: the number of trials per row)"
        )
    else:
        counts = (
            ". For counts out of n use the binomial form 'successes | trials(n)' or "
            "'successes/trials'"
        )
    return (
        f"outcome '{col}' must be 0/1 for a Bernoulli model; found values "
        f"{fmt_values(values)} ({rows}){counts}"
    )


def value_rows_text(parts: Sequence[tuple[Any, str]]) -> str:
    """``0 in rows 1, 2; 1 in row 3``: each value with the text of its first rows."""
    return "; ".join(f"{_fmt_scalar(u)} in {where}" for u, where in parts[:5])


def two_values_message(col: str, uniq: Sequence[Any], where: str, *, numeric: bool) -> str:
    """[§7.9] two outcome values and no success=: poolwise never guesses."""
    if numeric:
        hint = f"success={_fmt_scalar(uniq[1])}"
        cli = f"--success {_fmt_scalar(uniq[1])}"
    else:
        hint = f"success={uniq[0]!r} (or success={uniq[1]!r})"
        cli = f"--success {uniq[0]}"
    return (
        f"outcome '{col}' has two values {fmt_values(uniq)} ({where}); specify which is the "
        f"success with {hint} ({cli} on the command line); poolwise never guesses"
    )


def single_value_message(col: str, uniq: Sequence[Any], n_rows: int) -> str:
    return (
        f"outcome '{col}' has a single value {fmt_values(uniq)} in all {n_rows} rows; "
        f"say whether it is the success with success={uniq[0]!r}"
    )


def levels_message(col: str, uniq: Sequence[Any], where: str, match: Any = None) -> str:
    """[§7.10] 3+ outcome levels (``match``: the success= value, when given)."""
    text = (
        f"outcome '{col}' has {len(uniq)} levels {fmt_values(uniq)} "
        f"({where}); a Bernoulli model needs exactly 2"
    )
    if match is None:
        return text
    return (
        text + f" - recode it to two values first (e.g. {match!r} vs the rest) if that is what "
        "you mean"
    )


def success_not_value_message(success: Any, col: str, uniq: Sequence[Any]) -> str:
    return (
        f"success={success!r} is not a value of outcome '{col}'; its values are "
        f"{fmt_values(uniq)}"
    )


def exceed_message(
    count: int, rows: str, pairs: Sequence[tuple[Any, Any]], scol: str, tcol: str
) -> str:
    """[§7.13]"""
    text = ", ".join(f"{int(a)} > {int(b)}" for a, b in pairs[:5])
    return (
        f"successes exceed trials in {_plural(count, 'row')} "
        f"({rows}: {text}); check columns '{scol}' and '{tcol}'"
    )


def missing_message(role: str, col: str, count: int, rows: str, others: Sequence[str]) -> str:
    """[§7.5, §7.29]"""
    also = f" (also in {', '.join(repr(c) for c in others)})" if others else ""
    return (
        f"{role} column '{col}' has {_plural(count, 'missing value')} "
        f"({rows}){also}; drop them with drop_missing=True "
        "(--drop-missing) or impute before fitting"
    )


def dropped_missing_message(count: int, n_all: int, cols: Sequence[str], rows: str) -> str:
    return (
        f"dropped {count} of {n_all} rows with missing values in "
        f"{', '.join(cols)} ({rows})"
    )


def weights_column_message(col: str, available: Sequence[str]) -> str:
    """[R.22] the weights column is not in the data."""
    close = _did_you_mean(col, available)
    hint = f"did you mean '{close[0]}'? " if close else ""
    listed = ", ".join(available[:20]) + (
        f", ... ({len(available)} in all)" if len(available) > 20 else ""
    )
    return f"weights column '{col}' not found; {hint}available: {listed}"


def weights_used_message(col: str, role: str) -> str:
    """[R.23] the weights column is also a column of the model."""
    return (
        f"weights column '{col}' is also used by the model ({role}); a weight says how much a "
        "row counts and cannot also be part of the model - give the weights in a column of "
        "their own (weights='...', --weights COL)"
    )


def weights_missing_message(col: str, count: int, rows: str) -> str:
    """[R.24] missing weights."""
    return (
        f"weights column '{col}' has {_plural(count, 'missing value')} ({rows}); a row "
        "without a weight cannot be counted - fill them in, or drop those rows with "
        "drop_missing=True (--drop-missing)"
    )


def weights_negative_message(col: str, values: Sequence[Any], rows: str) -> str:
    """[R.25] negative weights."""
    return (
        f"weights must be > 0; column '{col}' has negative values {fmt_values(values)} "
        f"({rows}): a weight is how much a row counts, and a negative one has no meaning - "
        "fix the column"
    )


def weights_zero_message(col: str, count: int, rows: str) -> str:
    """[R.26] zero weights: refused, never dropped silently."""
    return (
        f"weights must be > 0; column '{col}' has 0 in {_plural(count, 'row')} ({rows}): a "
        "row of weight 0 contributes nothing, and poolwise drops no rows on its own - remove "
        f"those rows first (e.g. data[data['{col}'] > 0], or WHERE \"{col}\" > 0 in DuckDB or "
        "Spark)"
    )


def weights_fraction_message(col: str, values: Sequence[Any], rows: str,
                             given: str | None) -> str:
    """[R.27] weights that are not whole numbers without weights_kind='survey'."""
    why = ("weights_kind='frequency' says each row stands for that many identical rows"
           if given == "frequency" else
           "whole-number weights are frequency weights (a row of weight w stands for w "
           "identical rows), the default")
    return (
        f"weights in column '{col}' are not whole numbers: {fmt_values(values)} ({rows}); "
        f"{why}. If these are survey (sampling) weights, pass weights_kind='survey' "
        "(--weights-kind survey): a pseudo-likelihood, each row's log-likelihood times its "
        "weight"
    )


def weights_total_message(col: str, total: float) -> str:
    """[R.28] frequency weights that make more rows than float64 counts exactly."""
    return (
        f"frequency weights in column '{col}' stand for {total:,.0f} trials in all, at least "
        "2^53 = 9,007,199,254,740,992: counts this large are not exact in 64-bit floating "
        "point, in which the model is computed; check the column (a unit or parsing mistake?)"
    )


def zero_trials_message(count: int, rows: str) -> str:
    """[§7.16] the warning for rows with trials = 0 (they are dropped)."""
    return (
        f"{_plural(count, 'row')} ha{'s' if count == 1 else 've'} trials = 0 "
        f"({rows}) and contribute no information; "
        f"{'it was' if count == 1 else 'they were'} dropped"
    )


def unused_missing_note(col: str, count: int) -> str:
    """[§7.6] the note for missing values in a column the model does not use."""
    return f"ignored column '{col}' ({_plural(count, 'missing value')}, not used by the model)"


def all_zero_trials_message(n_rows: int, col: str | None) -> str:
    return f"data has no observations: trials are 0 in all {n_rows} rows of column '{col}'"


def moments(x: np.ndarray, weights: np.ndarray | None = None) -> tuple[float, float]:
    """Mean and standard deviation (``np.std``, ddof 0) of ``x`` repeated ``weights`` times.

    Computed from the distinct values and their counts, so rows and the same rows collapsed
    into weighted patterns (:mod:`poolwise.data.ingest`) give bitwise the same numbers.
    """
    v, inv = np.unique(np.asarray(x, dtype=float), return_inverse=True)
    inv = inv.reshape(-1)
    c = np.bincount(inv, weights=None if weights is None else np.asarray(weights, dtype=float),
                    minlength=len(v)).astype(float)
    total = float(c.sum())
    mean = float(np.dot(c, v) / total)
    sd = float(np.sqrt(np.dot(c, (v - mean) ** 2) / total))
    return mean, sd


# -- columns ---------------------------------------------------------------------------


def _check_columns(f: Formula, table: Table) -> None:
    frame = table.frame
    available = list(frame.columns)
    absent = [c for c in f.source_columns if c not in frame.columns]
    if not absent:
        return
    # [§7.3] a wrong delimiter reads the whole header as one (or a few) column(s)
    for d in (";", "\t", ",", "|"):
        if d == table.delimiter:
            continue
        for col in available:
            if d not in col:
                continue
            parts = [p.strip().strip('"').strip("'") for p in col.split(d)]
            if any(a in parts for a in absent):
                shown = ", ".join(repr(c) for c in available[:3])
                more = ", ..." if len(available) > 3 else ""
                was = table.delimiter
                used = (
                    f" (it was read with delimiter {_DELIMITER_NAMES.get(was, repr(was))})"
                    if was
                    else ""
                )
                name = _DELIMITER_NAMES[d]
                raise DataError(
                    f"read {_plural(len(available), 'column')} {shown}{more} but the model needs "
                    f"columns {', '.join(f.columns)}; the file looks {name}-delimited{used} - "
                    f"pass delimiter={name} (--delimiter {name} on the command line)"
                )
    # [§7.7] unknown column: did you mean ...
    col = absent[0]
    close = _did_you_mean(col, available)
    hint = f"did you mean '{close[0]}'? " if close else ""
    listed = ", ".join(available[:20]) + (
        f", ... ({len(available)} in all)" if len(available) > 20 else ""
    )
    start = _find_name(f.text, col)
    span = (start, start + len(col)) if start >= 0 else None
    raise FormulaError(f"column '{col}' not found; {hint}available: {listed}", f.text, span)


def _check_estimable(f: Formula, pooling: str) -> None:
    """[R.8] a model with no parameter at all (``y ~ 0``, ``y ~ -1``, ``y ~ 1 - 1``)."""
    groups = bool(f.groups) and pooling != "complete"
    if f.intercept or f.terms or groups:
        return
    tilde = f.text.find("~")
    rhs = f.text[tilde + 1:] if tilde >= 0 else ""
    start = tilde + 1 + len(rhs) - len(rhs.lstrip())
    span = (start, len(f.text.rstrip())) if rhs.strip() else None
    why = (
        "its group terms are dropped by pooling='complete', and it has no intercept and no "
        "predictors"
        if f.groups
        else "it removes the intercept (0, -1 or 1 - 1) and has no predictors or group terms"
    )
    raise FormulaError(
        f"the model has no parameters to estimate: {why}; write '{f.response} ~ 1' for an "
        "intercept-only model, or add terms",
        f.text,
        span,
    )


def _check_names(f: Formula) -> None:
    """[R.8] predictor and grouping columns name variables of the saved draws (``b_x``,
    ``sd_g``, ``a_g``); an ArviZ DataTree refuses a variable name with '/'."""
    for col in f.source_columns:  # expressions such as I(x/10) are named by poolwise.model.naming
        if "/" in col:
            raise DataError(
                f"column '{col}' has a '/' in its name: poolwise names the parameters after "
                "predictor and grouping columns, and the draws are stored in an ArviZ "
                "DataTree, whose variable names cannot contain '/'; rename the column (e.g. "
                f"'{col.replace('/', '_')}') before fitting"
            )


def _check_number_format(var: str, s: pd.Series, table: Table, rows: np.ndarray) -> None:
    """[R.14] a text predictor whose values are all numbers with a decimal mark, and many of
    them: read as a factor it would get one coefficient per value. The usual cause is the
    number format (decimal=',' on a file written with '.'), so it is an error, not a factor."""
    codes, uniq = pd.factorize(s.astype(object), use_na_sentinel=True)
    if len(uniq) < MANY_LEVELS:
        return
    text = pd.Series(np.asarray(uniq, dtype=object)).astype(str).str.strip()
    dot = pd.to_numeric(text, errors="coerce").notna()
    comma = pd.to_numeric(text.str.replace(",", ".", regex=False), errors="coerce").notna()
    if dot.all() and text.str.contains(".", regex=False).any():
        mark = "."
    elif comma.all() and text.str.contains(",", regex=False).any():
        mark = ","
    else:
        return
    shown = fmt_values(list(text[:5]))
    first = f"predictor column '{var}' would become a categorical predictor with {len(uniq)} "
    if table.decimal is not None and table.decimal != mark:
        raise DataError(
            f"{first}levels {shown}: its values are numbers written with a {mark!r} decimal "
            f"mark, but '{table.source}' was read with decimal={table.decimal!r}; the number "
            f"format setting is the likely cause - pass decimal={mark!r} (--decimal '{mark}')"
        )
    raise DataError(
        f"{first}levels {shown}: its values are numbers stored as text; convert the column "
        "to numbers (e.g. pd.to_numeric), or make it a pandas Categorical if it really is a "
        f"factor with {len(uniq)} levels"
    )


def _did_you_mean(col: str, available: Sequence[str]) -> list[str]:
    """Same name in another case; else the closest spelling; else a prefix ('g' for 'grp')."""
    lower = {c.casefold(): c for c in available}
    if col.casefold() in lower:
        return [lower[col.casefold()]]
    close = difflib.get_close_matches(col, list(available), n=1, cutoff=0.6)
    if close:
        return close
    key = col.casefold()
    prefixes = [
        c for c in available if key.startswith(c.casefold()) or c.casefold().startswith(key)
    ]
    return sorted(prefixes, key=lambda c: -len(c))[:1]


def _find_name(text: str, name: str) -> int:
    m = re.search(r"(?<![A-Za-z0-9_.])" + re.escape(name) + r"(?![A-Za-z0-9_.])", text)
    return m.start() if m else text.find(name)


def _role(f: Formula, col: str) -> str:
    r = f.response
    if col == r.successes:
        return "outcome" if r.kind == "bernoulli" else "successes"
    if col == r.failures:
        return "failures"
    if col == r.trials:
        return "trials"
    if col in f.predictors:
        return "predictor"
    if col in f.offsets:
        return "offset"
    return "grouping"


def _numeric(frame: pd.DataFrame, col: str, rows: np.ndarray, role: str) -> np.ndarray:
    """The column as float64; DataError for text that is not a number [§7.19] or ±Inf [§7.18]."""
    s = frame[col]
    if pd.api.types.is_bool_dtype(s.dtype):
        return s.to_numpy(dtype=float)
    if not pd.api.types.is_numeric_dtype(s.dtype) or isinstance(s.dtype, pd.CategoricalDtype):
        codes, uniq = pd.factorize(s.astype(object), use_na_sentinel=True)
        conv = pd.to_numeric(pd.Series(np.asarray(uniq, dtype=object)), errors="coerce")
        bad_u = np.flatnonzero(conv.isna().to_numpy())
        if len(bad_u) == 0:  # text that is all numbers (e.g. a str column of a DataFrame)
            return _finite(conv.to_numpy(dtype=float)[codes], col, rows, role)
        bad = np.isin(codes, bad_u)
        vals = [str(v) for v in np.asarray(uniq, dtype=object)[bad_u]]
        raise DataError(not_numeric_message(role, col, vals, fmt_rows(bad, rows)))
    x = s.to_numpy(dtype=float, na_value=np.nan)
    return _finite(x, col, rows, role)


def _finite(x: np.ndarray, col: str, rows: np.ndarray, role: str) -> np.ndarray:
    inf = np.isinf(x)
    if inf.any():
        raise DataError(infinite_message(role, col, x[inf], fmt_rows(inf, rows)))
    return x


def _numbers_with_text(s: pd.Series, weights: np.ndarray | None = None) -> bool:
    """A text column meant to be numeric but with some values that are not numbers [§7.19]:
    a decimal comma anywhere, or >= 90% of the rows are numbers and the rest is not.

    A text column whose values are *all* numbers ('1', '2', '3' as str) stays categorical:
    the user chose that type, and reading it as numbers would change the model silently.
    """
    codes, uniq = pd.factorize(s.astype(object), use_na_sentinel=True)
    if len(uniq) == 0:
        return False
    text = pd.Series(np.asarray(uniq, dtype=object)).astype(str).str.strip()
    if text.str.fullmatch(_DECIMAL_COMMA.pattern).any():
        return True
    ok = pd.to_numeric(text, errors="coerce").notna().to_numpy()
    if ok.all() or not ok.any():
        return False
    w = None if weights is None else np.asarray(weights, dtype=float)[codes >= 0]
    counts = np.bincount(codes[codes >= 0], weights=w, minlength=len(uniq))
    return bool(counts[ok].sum() >= 0.9 * counts.sum())


def _whole(x: np.ndarray, col: str, rows: np.ndarray, what: str) -> None:
    """Counts must be whole numbers >= 0 [§7.14-15] and below 2^53 [R.17]; 3.0 is accepted
    as 3."""
    frac = np.abs(x - np.round(x)) > 0
    if frac.any():
        raise DataError(fraction_message(what, col, x[frac], fmt_rows(frac, rows)))
    neg = x < 0
    if neg.any():
        raise DataError(negative_message(what, col, x[neg], fmt_rows(neg, rows)))
    big = x >= MAX_COUNT  # [R.17]
    if big.any():
        raise DataError(too_large_message(what, col, x[big], fmt_rows(big, rows)))


# -- the response ------------------------------------------------------------------------


def _first_rows_of(values: np.ndarray, uniq: Sequence[Any], rows: np.ndarray) -> str:
    parts = []
    for u in uniq[:5]:
        m = values == u
        parts.append((u, fmt_rows(np.asarray(m, dtype=bool), rows, limit=3)))
    return value_rows_text(parts)


def _match_success(success: Any, uniq: list[Any]) -> Any:
    if any(success == u and type(success) is type(u) for u in uniq):
        return success
    for u in uniq:  # '2' from the command line for a numeric outcome, 2 for 2.0, ...
        if str(success).strip() == _fmt_scalar(u).strip("'") or (
            not isinstance(u, str) and _num_equal(success, u)
        ):
            return u
    return None


def _num_equal(a: Any, b: Any) -> bool:
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return False


def _bernoulli(
    frame: pd.DataFrame, col: str, rows: np.ndarray, success: Any,
    weights: np.ndarray | None = None,
) -> np.ndarray:
    s = frame[col]
    if pd.api.types.is_bool_dtype(s.dtype) and success is None:  # [§7.9] bool is accepted
        return s.to_numpy(dtype=float)
    values = s.to_numpy(dtype=object)
    codes, uniq_arr = pd.factorize(values)
    uniq = list(uniq_arr)
    if success is not None:
        match = _match_success(success, uniq)
        if match is None:
            raise DataError(success_not_value_message(success, col, uniq))
        if len(uniq) > 2:
            raise DataError(
                levels_message(col, uniq, _first_rows_of(values, uniq, rows), match)
            )
        return (codes == uniq.index(match)).astype(float)
    numeric = pd.api.types.is_numeric_dtype(s.dtype) and not isinstance(
        s.dtype, pd.CategoricalDtype
    )
    if not numeric:
        conv = pd.to_numeric(pd.Series(np.asarray(uniq, dtype=object)), errors="coerce")
        if conv.notna().all() and len(uniq) > 0:  # '0'/'1' as text
            numeric = True
            x = conv.to_numpy(dtype=float)[codes]
            uniq = list(conv.to_numpy(dtype=float))
    if numeric:
        if pd.api.types.is_numeric_dtype(s.dtype):
            x = s.to_numpy(dtype=float)
        bad = ~np.isin(x, [0.0, 1.0])
        if not bad.any():
            return x
        whole = bool(np.all(np.abs(x - np.round(x)) == 0)) and np.isfinite(x).all()
        nonneg = bool(np.all(x >= 0))
        if len(uniq) == 2 and whole:
            # [§7.9] never remap 1/2 or 5/7 to 0/1 silently
            vals = sorted(float(u) for u in uniq)
            return _two_values(col, vals, values, rows, numeric=True)
        raise DataError(
            not_binary_message(col, x[bad], fmt_rows(bad, rows), whole=whole, nonneg=nonneg)
        )
    if len(uniq) == 2:
        return _two_values(col, uniq, values, rows, numeric=False)
    if len(uniq) == 1:
        raise DataError(single_value_message(col, uniq, _total(weights, len(values))))
    # [§7.10] 3+ levels: never collapse to "first level vs rest"
    raise DataError(levels_message(col, uniq, _first_rows_of(values, uniq, rows)))


def _two_values(
    col: str, uniq: list[Any], values: np.ndarray, rows: np.ndarray, *, numeric: bool
) -> NoReturn:
    where = (
        _first_rows_of(np.asarray(values), uniq, rows)
        if not numeric
        else _first_rows_of(
            pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=float), uniq, rows
        )
    )
    raise DataError(two_values_message(col, uniq, where, numeric=numeric))


def _response(
    f: Formula, frame: pd.DataFrame, rows: np.ndarray, success: Any,
    weights: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    r = f.response
    if r.kind == "bernoulli":
        y = _bernoulli(frame, r.successes, rows, success, weights)
        return y, np.ones_like(y)
    if success is not None:
        raise SpecError(
            f"success= only applies to a 0/1 outcome; the binomial outcome '{r}' already counts "
            "successes"
        )
    succ = _numeric(frame, r.successes, rows, "successes")
    _whole(succ, r.successes, rows, "successes")
    if r.kind == "cbind":
        assert r.failures is not None
        fail = _numeric(frame, r.failures, rows, "failures")
        _whole(fail, r.failures, rows, "failures")
        _whole(succ + fail, f"{r.successes} + {r.failures}", rows, "trials")  # [R.17]
        return succ, succ + fail
    assert r.trials is not None
    trials = _numeric(frame, r.trials, rows, "trials")
    _whole(trials, r.trials, rows, "trials")
    over = succ > trials  # [§7.13]
    if over.any():
        pairs = [(succ[i], trials[i]) for i in np.flatnonzero(over)[:5]]
        raise DataError(
            exceed_message(int(over.sum()), fmt_rows(over, rows), pairs, r.successes, r.trials)
        )
    return succ, trials


# -- group labels --------------------------------------------------------------------------


def _group_key(s: pd.Series) -> np.ndarray:
    dt = s.dtype
    if pd.api.types.is_integer_dtype(dt):
        return s.to_numpy(dtype=np.int64)
    if pd.api.types.is_float_dtype(dt):
        x = s.to_numpy(dtype=float)
        if np.all(np.isfinite(x)) and np.all(x == np.round(x)) and np.all(np.abs(x) < 2**53):
            return x.astype(np.int64)
        return x
    return s.to_numpy(dtype=object)


def _normalized_label(v: Any) -> str:
    if isinstance(v, bool | np.bool_):
        return str(bool(v)).casefold()
    if isinstance(v, int | np.integer):
        return str(int(v))
    if isinstance(v, float | np.floating):
        return str(int(v)) if float(v).is_integer() else repr(float(v))
    text = str(v).strip().casefold()
    try:
        num = float(text)
    except ValueError:
        return text
    return str(int(num)) if num.is_integer() else repr(num)


def _lookalike_labels(uniq: Sequence[Any]) -> list[tuple[Any, ...]]:
    by_norm: dict[str, list[Any]] = {}
    for u in uniq:
        by_norm.setdefault(_normalized_label(u), []).append(u)
    return [tuple(v) for v in by_norm.values() if len(v) > 1]


# -- the main check ------------------------------------------------------------------------


def check_model_data(
    f: Formula,
    table: Table,
    *,
    success: Any = None,
    drop_missing: bool = False,
    pooling: str = "partial",
    weights: str | None = None,
    weights_kind: str | None = None,
) -> CheckedData:
    """Validate and convert the columns ``f`` uses.

    Raises :class:`DataError` / :class:`FormulaError` for input that cannot be fitted as
    given; returns the warnings and notes in the result (not yet emitted: see
    :func:`emit_warnings`). One step per group of rules, in this order: columns and names,
    missing values, the weights, infinities, the response, rows with no trials, a constant
    outcome, the predictors, the grouping factors, then the weights' totals.

    ``weights``: the column of row weights (:mod:`poolwise.data.weights`), ``weights_kind``
    "frequency" or "survey" (None: frequency when every weight is a whole number). Frequency
    weights become the rows' ``counts``; survey weights ``row_weight``. A table counted by a
    data engine has applied and checked its weights already (``table.weights_column``).
    """
    frame = table.frame
    _check_columns(f, table)
    _check_estimable(f, pooling)
    _check_names(f)
    # a table of distinct row patterns (poolwise.data.ingest) carries its counts and first rows
    weights_col = None if getattr(table, "weights_column", None) else weights
    if weights_col is not None:
        check_weights_column(f, list(frame.columns), weights_col)  # [R.22, R.23]
    weights_arr = getattr(table, "counts", None)
    given_rows = getattr(table, "row_number", None)
    rows = np.arange(1, len(frame) + 1) if given_rows is None else np.asarray(given_rows)
    warn: list[str] = list(getattr(table, "warnings", ()))
    notes: list[str] = []
    frame, rows, weights_arr = _missing_values(f, frame, rows, weights_arr, drop_missing, warn,
                                               notes, weights_col)
    weights_arr, kind = _apply_weights(frame, rows, weights_arr, weights_col, weights_kind)
    checked = _check_values(f, table, frame, rows, weights_arr, success, pooling, warn, notes)
    return _with_weighting(checked, table, weights_col, kind)


def _check_values(
    f: Formula, table: Table, frame: pd.DataFrame, rows: np.ndarray,
    weights: np.ndarray | None, success: Any, pooling: str, warn: list[str], notes: list[str],
) -> CheckedData:
    """The rules from the infinities on (see :func:`check_model_data`)."""
    _infinities(f, frame, rows)
    successes, trials = _response(f, frame, rows, success, weights)
    frame, rows, successes, trials, weights = _zero_trials(
        f, frame, rows, successes, trials, weights, warn
    )
    n = _total(weights, len(frame))
    constant_outcome = _constant_outcome(f, successes, trials, n, warn)
    numeric, categorical, scaling = _predictors(f, frame, table, rows, weights, n, warn, notes)
    group_keys = _grouping(f, frame, successes, trials, pooling, constant_outcome, weights,
                           warn, notes)
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
        scaling=scaling,
        counts=weights,
    )


def _missing_values(
    f: Formula, frame: pd.DataFrame, rows: np.ndarray, weights: np.ndarray | None,
    drop_missing: bool, warn: list[str], notes: list[str], weights_col: str | None = None,
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray | None]:
    """Missing values in the model's columns (and the weights column): an error, or
    (``drop_missing``) the rows dropped with a warning; missing values elsewhere only get a
    note."""
    n_all = len(frame)
    # [§7.5, §7.29, R.24] missing values in the model's columns and the weights
    used = list(f.columns) + ([weights_col] if weights_col is not None else [])
    missing = np.zeros(n_all, dtype=bool)
    per_col: list[tuple[str, np.ndarray]] = []
    for col in used:
        m = np.asarray(frame[col].isna(), dtype=bool)
        if m.any():
            per_col.append((col, m))
            missing |= m
    if per_col:
        if not drop_missing:
            col, m = per_col[0]
            if col == weights_col:
                raise DataError(weights_missing_message(col, int(m.sum()), fmt_rows(m, rows)))
            raise DataError(
                missing_message(
                    _role(f, col), col, int(m.sum()), fmt_rows(m, rows),
                    [c for c, _ in per_col[1:]],
                )
            )
        msg = dropped_missing_message(
            int(missing.sum()), n_all, [c for c, _ in per_col], fmt_rows(missing, rows)
        )
        warn.append(msg)
        frame = frame.loc[~missing].reset_index(drop=True)
        rows = rows[~missing]
        weights = None if weights is None else weights[~missing]
        if len(frame) == 0:
            raise DataError("data has no observations (0 rows) after dropping missing values")
    # [§7.6] missing values elsewhere change nothing
    for col in frame.columns:
        if col not in used and col not in f.source_columns:
            k = int(frame[col].isna().sum())
            if k:
                notes.append(unused_missing_note(col, k))

    return frame, rows, weights


def check_weights_column(f: Formula, columns: Sequence[str], col: str) -> None:
    """[R.22] the weights column must be in the data; [R.23] and not be a column of the model
    (outcome, trials, predictor, group, offset, or read by an expression)."""
    if col not in columns:
        raise DataError(weights_column_message(col, [str(c) for c in columns]))
    if col in f.source_columns:
        raise SpecError(weights_used_message(col, source_role(f, col)))


def source_role(f: Formula, col: str) -> str:
    """The role of a data column in ``f``: its own, or that of the first expression that
    reads it."""
    if col in f.columns:
        return _role(f, col)
    for label in f.columns:
        if col in f.expr(label).columns:
            return _role(f, label)
    return "predictor"  # pragma: no cover - every source column is read by some label


def _apply_weights(
    frame: pd.DataFrame, rows: np.ndarray, counts: np.ndarray | None, col: str | None,
    kind: str | None,
) -> tuple[np.ndarray | None, str | None]:
    """Check the weights of column ``col`` [R.24-R.29] and resolve their kind: frequency
    weights multiply the rows' counts; survey weights are read again by
    :func:`_with_weighting` (after every row that is dropped is gone)."""
    if col is None:
        return counts, None
    if counts is not None:
        raise SpecError("weights= applies to a table of rows; these data were counted into row "
                        "patterns already (give the weights to the data engine's source)")
    w = _numeric(frame, col, rows, "weights")  # [R.29] text, infinities
    neg = w < 0
    if neg.any():  # [R.25]
        raise DataError(weights_negative_message(col, w[neg], fmt_rows(neg, rows)))
    zero = w == 0
    if zero.any():  # [R.26]
        raise DataError(weights_zero_message(col, int(zero.sum()), fmt_rows(zero, rows)))
    frac = w != np.round(w)
    if kind != "survey" and frac.any():  # [R.27]
        raise DataError(weights_fraction_message(col, w[frac], fmt_rows(frac, rows), kind))
    if kind == "survey":
        return counts, "survey"
    big = w >= MAX_COUNT  # [R.28]
    if big.any():
        raise DataError(too_large_message("frequency weights", col, w[big], fmt_rows(big, rows)))
    return w.astype(np.int64), "frequency"


def _weight_stats(checked: CheckedData, table: Table, col: str) -> np.ndarray:
    """Per entry of ``checked``: the rows it stands for, the sum of their weights (as given)
    and the sum of their squares, (entries, 3). A table counted by a data engine brings them
    (``table.weight_stats``, by entry; entries are found by their first row)."""
    stats = getattr(table, "weight_stats", None)
    if stats is not None:
        pos = np.searchsorted(np.asarray(table.row_number), checked.row_number)
        return np.asarray(stats, dtype=float)[pos]
    w = checked.frame[col].to_numpy(dtype=float)
    return np.column_stack([np.ones_like(w), w, w * w])


def _with_weighting(checked: CheckedData, table: Table, col: str | None,
                    kind: str | None) -> CheckedData:
    """``checked`` with its :class:`~poolwise.data.weights.Weighting` and, for survey weights,
    each entry's weight (the caveat joins the warnings); frequency weights whose rows make
    2^53 trials or more are a DataError [R.28]."""
    if getattr(table, "weights_column", None):
        col, kind = table.weights_column, table.weights_kind
    if col is None or kind is None:
        return checked
    stats = _weight_stats(checked, table, col)
    if kind == "frequency":
        counts = checked.counts if checked.counts is not None else stats[:, 1]
        total = float(np.sum(np.asarray(counts, dtype=float)))
        if float(np.dot(np.asarray(counts, dtype=float), checked.trials)) >= MAX_COUNT:
            raise DataError(weights_total_message(col, float(np.dot(counts, checked.trials))))
        return replace(checked, weighting=Weighting(col, kind, int(stats[:, 0].sum()), total))
    total = float(stats[:, 1].sum())
    weighting = Weighting(col, kind, _total(checked.counts, len(checked.frame)), total,
                          ess=total * total / float(stats[:, 2].sum()))
    return replace(checked, weighting=weighting, row_weight=stats[:, 1].copy(),
                   warnings=checked.warnings + (weighting.caveat(),))


def _infinities(f: Formula, frame: pd.DataFrame, rows: np.ndarray) -> None:
    used = list(f.columns)
    # [§7.18] infinities in any numeric model column
    for col in used:
        s = frame[col]
        if pd.api.types.is_float_dtype(s.dtype):
            _finite(s.to_numpy(dtype=float), col, rows, _role(f, col))



def _zero_trials(
    f: Formula, frame: pd.DataFrame, rows: np.ndarray, successes: np.ndarray,
    trials: np.ndarray, weights: np.ndarray | None, warn: list[str],
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    # [§7.16] rows with trials = 0 carry no information: dropped, with a warning
    zero = trials == 0
    if zero.any():
        if zero.all():
            raise DataError(
                all_zero_trials_message(len(zero), f.response.trials or f.response.failures)
            )
        warn.append(zero_trials_message(int(zero.sum()), fmt_rows(zero, rows)))
        keep = ~zero
        frame = frame.loc[keep].reset_index(drop=True)
        rows, successes, trials = rows[keep], successes[keep], trials[keep]
        weights = None if weights is None else weights[keep]

    return frame, rows, successes, trials, weights


def _constant_outcome(
    f: Formula, successes: np.ndarray, trials: np.ndarray, n: int, warn: list[str]
) -> bool:
    # [§7.11] constant outcome overall: a warning, the priors decide
    ycol = f.response.successes
    constant_outcome = False
    if not successes.any():
        constant_outcome = True
        warn.append(
            f"outcome '{ycol}' is 0 in all {n} rows; the intercept and group effects will be "
            "determined by the priors"
        )
    elif np.array_equal(successes, trials):
        constant_outcome = True
        what = "1" if f.response.kind == "bernoulli" else "a success in every trial"
        warn.append(
            f"outcome '{ycol}' is {what} in all {n} rows; the intercept and group effects will "
            "be determined by the priors"
        )

    return constant_outcome


def _predictors(
    f: Formula, frame: pd.DataFrame, table: Table, rows: np.ndarray,
    weights: np.ndarray | None, n: int, warn: list[str], notes: list[str],
) -> tuple[dict[str, np.ndarray], dict[str, list[Any]], dict[str, tuple[float, float]]]:
    """Each predictor: numeric (constant, extreme scale) or categorical (levels, unused
    levels, one level, '/' in a level)."""
    numeric: dict[str, np.ndarray] = {}
    categorical: dict[str, list[Any]] = {}
    scaling: dict[str, tuple[float, float]] = {}
    for var in f.predictors:
        s = frame[var]
        if _is_numeric_predictor(var, s, table, rows, weights):
            numeric[var] = _numeric_predictor(var, frame, rows, weights, n, warn, scaling)
        else:
            categorical[var] = _categorical_levels(var, s, n, notes)

    return numeric, categorical, scaling


def _is_numeric_predictor(
    var: str, s: pd.Series, table: Table, rows: np.ndarray, weights: np.ndarray | None
) -> bool:
    """Whether predictor ``var`` is numeric: numbers or booleans, or text that is mostly
    numbers ([§7.19]: :func:`_numeric` then raises, naming the values that are not numbers);
    other text is checked for numbers written in another format [R.14]."""
    is_cat = isinstance(s.dtype, pd.CategoricalDtype)
    is_num = (
        pd.api.types.is_numeric_dtype(s.dtype) or pd.api.types.is_bool_dtype(s.dtype)
    ) and not is_cat
    if not is_num and not is_cat and _numbers_with_text(s, weights):
        is_num = True  # [§7.19] _numeric raises, naming the values that are not numbers
    elif not is_num and not is_cat:
        _check_number_format(var, s, table, rows)  # [R.14]
    return is_num


def _numeric_predictor(
    var: str, frame: pd.DataFrame, rows: np.ndarray, weights: np.ndarray | None, n: int,
    warn: list[str], scaling: dict[str, tuple[float, float]],
) -> np.ndarray:
    """A numeric predictor's values; DataError when it is constant [§7.20]; an extreme scale
    [§7.23] goes into ``scaling`` (center, sd), with a warning."""
    x = _numeric(frame, var, rows, "predictor")
    lo, hi = float(np.min(x)), float(np.max(x))
    if lo == hi:  # [§7.20]
        raise DataError(
            f"predictor '{var}' is constant (value {_fmt_scalar(lo)} in all {n} rows) "
            "and is collinear with the intercept; remove it"
        )
    center, sd = moments(x, weights)
    if sd > SCALE_MAX or sd < SCALE_MIN:  # [§7.23]
        scaling[var] = (center, sd)
        warn.append(
            f"predictor '{var}' has an extreme scale (sd {_fmt_num(sd)}, values "
            f"{_fmt_num(lo)} to {_fmt_num(hi)}); it is standardized for sampling "
            f"(center {_fmt_num(center)}, scale {_fmt_num(sd)}) and its coefficient is "
            "transformed back to the original units"
        )
    return x


def _categorical_levels(var: str, s: pd.Series, n: int, notes: list[str]) -> list[Any]:
    """A categorical predictor's levels: a Categorical's used categories in their order (the
    unused ones get a note [§7.26]), otherwise the values sorted; DataError for a '/' in a
    level or a single level."""
    codes, present = pd.factorize(s.astype(object), sort=False)
    if isinstance(s.dtype, pd.CategoricalDtype):
        cats = list(s.cat.categories)
        used_mask = np.zeros(len(cats), dtype=bool)
        used_mask[np.unique(s.cat.codes.to_numpy())] = True
        levels = [c for c, u in zip(cats, used_mask, strict=True) if u]
        unused = [c for c, u in zip(cats, used_mask, strict=True) if not u]
        if unused:  # [§7.26]
            notes.append(
                f"level{'s' if len(unused) > 1 else ''} {_labels(unused)} of '{var}' "
                "have no observations and were not modelled"
            )
    else:
        levels = sorted(present, key=str)
    slashed = [lev for lev in levels if "/" in str(lev)]
    if slashed:  # [R.8] the level becomes part of a variable name (b_<column><level>)
        raise DataError(
            f"predictor '{var}' has level{'s' if len(slashed) > 1 else ''} "
            f"{fmt_values(slashed)} with a '/': a level names a coefficient, and the "
            "draws are stored in an ArviZ DataTree, whose variable names cannot contain "
            "'/'; recode the level(s), e.g. replace '/' by '-'"
        )
    if len(levels) == 1:  # [§7.20] a one-level factor has no contrast at all
        raise DataError(
            f"predictor '{var}' is constant (value {_fmt_scalar(levels[0])} in all {n} "
            "rows) and is collinear with the intercept; remove it"
        )
    return list(levels)


def _grouping(
    f: Formula, frame: pd.DataFrame, successes: np.ndarray, trials: np.ndarray, pooling: str,
    constant_outcome: bool, weights: np.ndarray | None, warn: list[str], notes: list[str],
) -> dict[str, np.ndarray]:
    """Each grouping factor's labels per row (a key joined from several columns for a:b), and
    its checks (:func:`_check_group`)."""
    group_keys: dict[str, np.ndarray] = {}
    for g in f.groups:
        if len(g.group) == 1:
            s = frame[g.group[0]]
            key = _group_key(s)
            if isinstance(s.dtype, pd.CategoricalDtype):
                used_codes = set(np.unique(s.cat.codes.to_numpy()).tolist())
                unused = [c for i, c in enumerate(s.cat.categories) if i not in used_codes]
                if unused:  # [§7.26] labels preserved; nothing renumbered
                    notes.append(
                        f"level{'s' if len(unused) > 1 else ''} {_labels(unused)} of "
                        f"'{g.group_name}' ha{'ve' if len(unused) > 1 else 's'} no observations "
                        "and w" + ("ere" if len(unused) > 1 else "as") + " not modelled"
                    )
        else:
            key = np.array(
                [
                    ":".join(str(v) for v in vals)
                    for vals in zip(*(_group_key(frame[c]) for c in g.group), strict=True)
                ],
                dtype=object,
            )
        group_keys[g.group_name] = key
        if pooling != "complete":
            _check_group(
                g, key, successes, trials, pooling, constant_outcome, warn, notes, weights
            )

    return group_keys


def _check_group(
    g: Any,
    key: np.ndarray,
    successes: np.ndarray,
    trials: np.ndarray,
    pooling: str,
    constant_outcome: bool,
    warn: list[str],
    notes: list[str],
    weights: np.ndarray | None = None,
) -> None:
    """One grouping factor: look-alike labels [§7.28], too few levels [§7.24, §7.25], one 0/1
    outcome per level [§7.30], and levels whose outcome is all 0 or all 1 [§7.12]."""
    name = g.group_name
    codes, uniq = pd.factorize(key, sort=False)
    L = len(uniq)
    n_rows = _total(weights, len(key))
    w = np.ones(len(key)) if weights is None else np.asarray(weights, dtype=float)
    if key.dtype == object:  # [§7.28]
        _lookalike_warning(name, uniq, warn)
    if pooling == "partial":
        _level_count(g, uniq, n_rows, warn)
    level_trials = np.bincount(codes, weights=trials * w, minlength=L)
    level_rows = np.bincount(codes, weights=w, minlength=L)
    if pooling == "partial" and L > 1 and np.all(level_rows == 1) and np.all(level_trials <= 1):
        warn.append(  # [§7.30]
            f"every group of '{name}' has exactly one observation ({L} groups, {n_rows} rows); "
            "group effects are only weakly identified: one 0/1 outcome per group says nothing "
            "about how much the groups differ (only about the overall proportion), so the "
            "group SD is set by its prior and the sampler may not converge (no repair can "
            f"fix that) - drop '{g}', or group at a coarser level"
        )
    if constant_outcome or not g.intercept:
        return
    level_succ = np.bincount(codes, weights=successes * w, minlength=L)
    _all_same_outcome_note(name, uniq, level_succ, level_trials, notes)


def _lookalike_warning(name: str, uniq: Any, warn: list[str]) -> None:
    """[§7.28] labels that differ only in case, surrounding spaces or number format: a warning."""
    dupes = _lookalike_labels(list(uniq))
    if dupes:
        pairs = "; ".join(" and ".join(_fmt_scalar(v) for v in d) for d in dupes[:5])
        warn.append(
            f"grouping factor '{name}' has labels that look like duplicates: {pairs}; they "
            "are treated as different groups - make the labels consistent if they name the "
            "same group"
        )


def _level_count(g: Any, uniq: Any, n_rows: int, warn: list[str]) -> None:
    """Partial pooling: DataError for one level [§7.24], a warning for fewer than
    ``MIN_LEVELS`` [§7.25]."""
    name, L = g.group_name, len(uniq)
    if L == 1:  # [§7.24]
        raise DataError(
            f"grouping factor '{name}' has only 1 level ({_fmt_scalar(uniq[0])} in all "
            f"{n_rows} rows); a group-level standard deviation cannot be estimated - drop "
            f"'{g}'"
        )
    if L < MIN_LEVELS:  # [§7.25]
        warn.append(
            f"grouping factor '{name}' has {L} levels ({_labels(list(uniq))}); its standard "
            "deviation will be strongly influenced by the prior "
            "(see prior-vs-posterior overlap)"
        )


def _all_same_outcome_note(
    name: str, uniq: Any, level_succ: np.ndarray, level_trials: np.ndarray, notes: list[str]
) -> None:
    """[§7.12] levels whose outcomes are all 0 or all 1: a note for the shrinkage report."""
    zeros = np.flatnonzero(level_succ == 0)
    ones = np.flatnonzero(level_succ == level_trials)
    if not (len(zeros) or len(ones)):
        return
    parts = []
    for idx, val in ((zeros, 0), (ones, 1)):
        if len(idx):
            labs = ", ".join(
                f"{_fmt_label(uniq[i])} ({int(level_trials[i])} obs)" for i in idx[:5]
            )
            more = f" and {len(idx) - 5} more" if len(idx) > 5 else ""
            parts.append(
                f"group{'s' if len(idx) > 1 else ''} {labs}{more} "
                f"ha{'ve' if len(idx) > 1 else 's'} all {val}"
            )
    notes.append(
        f"'{name}': {'; '.join(parts)}; their maximum-likelihood estimates are infinite, "
        "so their estimates are set by the prior (no pooling) or pulled toward the "
        "population mean (partial pooling)"
    )


# -- design-level checks ---------------------------------------------------------------------


def separated_coefficients(
    names: Sequence[str], X: np.ndarray, y: np.ndarray, n: np.ndarray, outcome: str = "y"
) -> dict[str, str]:
    """Coefficients whose column alone (quasi-)separates successes from failures [§7.22].

    Works on rows or on binomial cells: a cell with both successes and failures is on both
    sides. Returns coefficient name -> a description such as ``all y=1 when x > 0.3``.
    """
    has_s = y > 0
    has_f = (n - y) > 0
    out: dict[str, str] = {}
    if not has_s.any() or not has_f.any():
        return out
    for j, name in enumerate(names):
        if name == "Intercept":
            continue
        x = X[:, j]
        xs, xf = x[has_s], x[has_f]
        s_lo, s_hi, f_lo, f_hi = xs.min(), xs.max(), xf.min(), xf.max()
        if f_hi <= s_lo:  # successes at the top
            if f_hi < s_lo:
                out[name] = (
                    f"all {outcome}=1 when {name} >= {_fmt_num(s_lo)} and all {outcome}=0 when "
                    f"{name} <= {_fmt_num(f_hi)}"
                )
            else:
                out[name] = (
                    f"all {outcome}=1 when {name} > {_fmt_num(f_hi)}"
                    if (x > f_hi).any()
                    else (f"all {outcome}=0 when {name} < {_fmt_num(s_lo)}")
                )
        elif s_hi <= f_lo:  # successes at the bottom
            if s_hi < f_lo:
                out[name] = (
                    f"all {outcome}=1 when {name} <= {_fmt_num(s_hi)} and all {outcome}=0 when "
                    f"{name} >= {_fmt_num(f_lo)}"
                )
            else:
                out[name] = (
                    f"all {outcome}=0 when {name} > {_fmt_num(s_hi)}"
                    if (x > s_hi).any()
                    else (f"all {outcome}=1 when {name} < {_fmt_num(f_lo)}")
                )
    return out


def _collinearity(names: Sequence[str], X: np.ndarray) -> None:
    """[§7.21] exact linear dependence among the fixed-effects columns."""
    K = X.shape[1]
    if K < 2:
        return
    norms = np.sqrt(np.sum(X * X, axis=0))
    norms[norms == 0] = 1.0
    Xn = X / norms
    if Xn.shape[0] > K:
        r = np.linalg.qr(Xn, mode="r")
    else:
        r = Xn
    _, sv, vt = np.linalg.svd(r, full_matrices=False)
    tol = sv.max() * max(X.shape) * np.finfo(float).eps * 10
    rank = int(np.sum(sv > tol))
    if sv.shape[0] < K:
        rank = min(rank, sv.shape[0])
    if rank >= K:
        return
    null = vt[-1] if vt.shape[0] == K else np.linalg.svd(Xn)[2][-1]
    involved = [names[i] for i in np.flatnonzero(np.abs(null) > 1e-6 * np.abs(null).max())]
    if len(involved) == 2:
        a, b = involved
        raise DataError(
            f"predictors '{a}' and '{b}' are perfectly collinear (rank {rank} < {K}); remove one "
            "of them"
        )
    listed = ", ".join(f"'{v}'" for v in involved[:-1]) + f" and '{involved[-1]}'"
    raise DataError(
        f"predictors {listed} are linearly dependent (rank {rank} < {K}): one is an exact "
        "combination of the others; remove one of them"
    )


def check_design(
    checked: CheckedData,
    fixed_names: Sequence[str],
    X: np.ndarray,
    y: np.ndarray,
    n: np.ndarray,
    *,
    outcome: str = "y",
) -> tuple[str, ...]:
    """Checks on the fixed-effects matrix (rows or cells): collinearity raises
    :class:`DataError`; separation by one predictor gives a warning. Returns every warning
    for this data set (those of ``checked`` first)."""
    _collinearity(fixed_names, X)
    warn = list(checked.warnings)
    for name, how in separated_coefficients(fixed_names, X, y, n, outcome).items():
        warn.append(
            f"predictor '{name}' perfectly separates the outcome ({how}); the coefficient is "
            "identified only by its prior (a flat prior would make the posterior improper)"
        )
    return tuple(warn)


def emit_warnings(texts: Sequence[str], stacklevel: int = 3) -> None:
    """Emit each text as a :class:`DataWarning` (the texts are also kept in the result)."""
    for text in texts:
        warnings.warn(text, DataWarning, stacklevel=stacklevel)
