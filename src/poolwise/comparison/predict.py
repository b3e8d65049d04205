"""Predictions on the probability scale for new rows, in existing and unseen groups.

What is predicted
-----------------
For each row of ``new_data``, the posterior distribution of the success probability
``p = inverse_link(eta)`` of that row: the expected proportion of successes for an observation
with these predictor values in this group. It is not the predictive distribution of a 0/1
outcome or of a count (add binomial noise with the trials you have in mind for that).
``predict`` returns its mean, SD and a ``prob`` interval; ``predict_draws`` returns the draws.

Groups
------
* A label seen in the data uses that group's posterior (its own intercept and slopes).
* An unseen label (or a missing value) depends on ``new_groups``:

  - ``"population"`` (default): the group effect is set to the population mean, i.e. the
    deviation is zero. This is the prediction for a *typical* group (the median group on
    the link scale); its interval reflects only the uncertainty about the population mean.
    This is lme4's ``allow.new.levels`` behaviour.
  - ``"sample"``: a new group effect is drawn, per posterior draw, from the fitted
    population distribution ``Normal(0, Sigma)`` (with the correlations of a correlated
    term). This is the prediction for a *new, randomly chosen* group; the interval adds the
    spread between groups (brms ``sample_new_levels = "gaussian"``). All rows that share an
    unseen label share its draw.

  With ``pooling="none"`` there is no population distribution: ``"sample"`` draws a new
  group's coefficients from their fixed prior (which is what that model says about a group
  it has not seen), and ``"population"`` is an error. With ``pooling="complete"`` groups
  play no role.

Predictors are used as given, on the original scale of the data the model was fitted to
(poolwise reports every coefficient on that scale, whatever it standardized for sampling),
and encoded exactly as the fitted data were (``Design.encoding``): ``log(x)``, ``I(x^2)`` are
computed from the new values; ``scale(x)`` and ``poly(x, d)`` use the center, scale and
polynomial coefficients learnt from the fitted rows (R's ``predict`` does the same), and
``factor(x)`` / categorical columns map onto the fitted levels. Numeric predictors must be
numeric; a categorical predictor's value must be one of the fitted levels; any other value is
an error. An offset in the formula is evaluated on ``new_data`` (or given with ``offset=``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from poolwise.data.design import ARRAY_OFFSET
from poolwise.errors import DataError, SpecError
from poolwise.formula.terms import Call
from poolwise.formula.transforms import (
    categorical_values,
    evaluate,
    full_coding,
    level_codes,
    term_columns,
)
from poolwise.inference.summary import interval_columns
from poolwise.model.predictor import Rows, inverse_link, linear_predictor, new_level_draws

if TYPE_CHECKING:
    from poolwise.inference.fitted import Fit

__all__ = ["NewGroups", "as_frame", "new_rows", "predict", "predict_draws", "read_frame"]

NewGroups = Literal["population", "sample"]


def as_frame(new_data: Any) -> pd.DataFrame:
    """``new_data`` as a pandas frame (a frame, a polars frame, a dict of columns, a
    :class:`Table` or a path read with :func:`read_table`)."""
    if isinstance(new_data, pd.DataFrame):
        return new_data.reset_index(drop=True)
    if hasattr(new_data, "to_pandas"):  # polars
        return new_data.to_pandas()
    if isinstance(new_data, dict):
        return pd.DataFrame(new_data)
    from poolwise.data.table import Table, read_table

    table = new_data if isinstance(new_data, Table) else read_table(new_data)
    return table.frame.reset_index(drop=True)


def _source_columns(d: Any, labels: Any) -> list[str]:
    out: list[str] = []
    for lab in labels:
        out.extend(c for c in d.formula.expr(lab).columns if c not in out)
    return out


def _bad_rows(mask: np.ndarray) -> str:
    idx = np.flatnonzero(mask)
    more = f" and {len(idx) - 5} more" if len(idx) > 5 else ""
    return ", ".join(str(i + 1) for i in idx[:5]) + more


def _variable_values(d: Any, frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """Every predictor of the model for the rows of ``frame``, encoded exactly as the Design
    encoded the data it was fitted to (``Design.encoding``): numeric variables through the
    same functions and stored states (scale's center and scale, poly's coefficients),
    categorical ones as codes into the stored levels."""
    enc = d.encoding
    if enc is None:
        raise SpecError(
            "this fit has no record of how its predictors were encoded (it was saved by an "
            "older poolwise); fit the model again to predict from it"
        )
    f = d.formula
    states = enc.state_map
    rows = np.arange(1, len(frame) + 1)
    out: dict[str, np.ndarray] = {}
    for ve in enc.variables:
        var = ve.label
        e = f.expr(var)
        if ve.kind == "categorical":
            if isinstance(e, Call):
                raw = categorical_values(e, frame, rows, states, learn=False)
                values = np.array([None if pd.isna(v) else v for v in raw.astype(object)],
                                  dtype=object)
            else:
                values = frame[var].astype(object).to_numpy()
            codes = level_codes(values, ve.levels)
            missing = np.array([v is None or (isinstance(v, float) and np.isnan(v))
                                for v in values], dtype=bool)
            if missing.any():
                raise DataError(
                    f"predictor '{var}' is missing in new_data (rows {_bad_rows(missing)})"
                )
            unknown = codes < 0
            if unknown.any():
                vals = list(dict.fromkeys(values[unknown].tolist()))
                raise DataError(
                    f"predictor '{var}' has value(s) {', '.join(map(repr, vals[:5]))} in "
                    f"new_data (rows {_bad_rows(unknown)}) that the model was not fitted with; "
                    f"known levels: {ve.levels[0]!r} (reference), "
                    + ", ".join(repr(lv) for lv in ve.levels[1:])
                )
            out[var] = codes
        else:
            x = evaluate(e, frame, rows, states, learn=False).reshape(len(frame), -1)
            bad = ~np.all(np.isfinite(x), axis=1)
            if bad.any():
                raise DataError(
                    f"predictor '{var}' must be numeric and not missing in new_data "
                    f"(rows {_bad_rows(bad)})"
                )
            out[var] = x
    return out


def _design_rows(
    d: Any, values: dict[str, np.ndarray], n: int, wanted: tuple[str, ...], terms: list[Any],
    intercept: bool, siblings: Any, formula_intercept: bool,
) -> np.ndarray:
    """Matrix with one column per name in ``wanted`` (zeros where a term is absent); the
    terms are coded as build_design coded them (``siblings``, ``formula_intercept``: the terms
    and intercept of the same part of the formula, for R's coding rule)."""
    out = np.zeros((n, len(wanted)))
    index = {nm: i for i, nm in enumerate(wanted)}
    if intercept and "Intercept" in index:
        out[:, index["Intercept"]] = 1.0
    for term in terms:
        full = full_coding(term.variables, siblings, formula_intercept, d.encoding)
        names, cols, _ = term_columns(term.variables, values, d.encoding, n, full)
        for nm, col in zip(names, cols.T, strict=True):
            if nm in index:
                out[:, index[nm]] = col
    return out


def _new_offset(d: Any, frame: pd.DataFrame, offset: Any) -> np.ndarray | None:
    """The offset of each new row: ``offset=`` as given, else the model's offset expressions
    evaluated on ``new_data``."""
    n = len(frame)
    if offset is not None:
        values = np.asarray(offset, dtype=float).reshape(-1)
        if values.shape[0] != n:
            raise SpecError(
                f"offset has {values.shape[0]} values but new_data has {n} rows"
            )
        if not np.all(np.isfinite(values)):
            bad = ~np.isfinite(values)
            raise DataError(f"offset is missing or not finite (rows {_bad_rows(bad)})")
        return values
    labels = d.formula.offsets
    if not labels:
        return None
    if ARRAY_OFFSET in labels:
        raise SpecError(
            "the model was fitted with offset= values (one per data row); pass offset= to "
            "predict with one value per row of new_data"
        )
    states = d.encoding.state_map if d.encoding is not None else {}
    rows = np.arange(1, n + 1)
    total = np.zeros(n)
    for lab in labels:
        v = evaluate(d.formula.expr(lab), frame, rows, states, learn=False)
        bad = ~np.isfinite(v)
        if bad.any():
            raise DataError(f"{lab} is missing or not finite in new_data (rows {_bad_rows(bad)})")
        total += v
    return total


def _group_key(frame: pd.DataFrame, columns: tuple[str, ...]) -> np.ndarray:
    if len(columns) == 1:
        s = frame[columns[0]]
        if pd.api.types.is_float_dtype(s.dtype):
            vals = s.to_numpy()
            whole = np.isfinite(vals) & (vals == np.round(vals))
            if whole[~s.isna().to_numpy()].all():
                return np.array([None if pd.isna(v) else int(v) for v in vals], dtype=object)
        return np.array([None if pd.isna(v) else (v.item() if hasattr(v, "item") else v)
                         for v in s.to_numpy(dtype=object)], dtype=object)
    return np.array(
        [":".join(str(v) for v in vals) for vals in zip(*(frame[c] for c in columns), strict=True)],
        dtype=object,
    )


def new_rows(fit: Fit, frame: pd.DataFrame, offset: Any = None) -> tuple[Rows, list[str]]:
    """The rows of ``frame`` as the linear predictor takes them (:class:`Rows`): the fixed
    columns and each group term's codes (-1 for a label the fit has not seen) and Z values,
    encoded exactly as the fitted data were, and the offset; plus notes (unseen labels).
    Raises :class:`DataError` for a missing column or an unusable value."""
    rows, keys_of, _ = _rows_and_keys(fit, frame, offset)
    notes = []
    for term, codes, keys in zip(fit.spec.terms, rows.codes, keys_of, strict=True):
        if (codes < 0).any():
            unseen = list(dict.fromkeys(str(k) for k in keys[codes < 0]))
            notes.append(f"{len(unseen)} {term.name} label(s) the fit has not seen ("
                         + ", ".join(unseen[:5]) + (", ..." if len(unseen) > 5 else "")
                         + "): predicted at the population mean")
    return rows, notes


def _rows_and_keys(fit: Fit, frame: pd.DataFrame, offset: Any
                   ) -> tuple[Rows, list[np.ndarray], pd.DataFrame]:
    """:func:`new_rows`, with each group term's key of every row and the frame of
    ``<group>_status`` columns."""
    spec = fit.spec
    d = spec.design
    missing = [c for c in _model_columns(spec, offset) if c not in frame.columns]
    if missing:
        raise DataError(
            f"new_data lacks the column(s) {', '.join(missing)} that the model uses; "
            f"it has {', '.join(map(str, frame.columns))}"
        )
    unpooled = {c for t in spec.terms if not t.estimated for c in t.group.coef_names}
    fixed_terms = [t for t in d.formula.terms if t.name not in unpooled]
    values = _variable_values(d, frame)
    X = _design_rows(d, values, len(frame), d.fixed_names, fixed_terms, d.has_intercept,
                     [t.variables for t in d.formula.terms], d.formula.intercept)
    codes, Zs, keys_of, info = _group_rows(spec, frame, values)
    rows = Rows(X=X, offset=_new_offset(d, frame, offset), codes=tuple(codes), Z=tuple(Zs))
    return rows, keys_of, info


def read_frame(source: str) -> tuple[pd.DataFrame, str | None]:
    """The table a fit was made from, read again from its recorded path, with its SHA-256
    (None where the source is not a file poolwise can read again)."""
    from pathlib import Path

    from poolwise.data.table import read_table

    path = Path(str(source))
    if not path.is_file():
        raise DataError(
            f"the data this fit was made from ({source}) are not a file poolwise can read "
            "again; give them as newdata="
        )
    table = read_table(path)
    return table.frame.reset_index(drop=True), table.sha256


def predict_draws(
    fit: Fit,
    new_data: Any,
    *,
    new_groups: NewGroups = "population",
    seed: int | None = None,
    offset: Any = None,
) -> tuple[np.ndarray, pd.DataFrame]:
    """Posterior draws of the success probability for each row of ``new_data``.

    Returns ``(draws, info)``: draws of shape (chain * draw, rows) and a frame with one
    column ``<group>_status`` per group term ('existing' or 'new'). See the module docstring
    for the semantics; ``seed`` (default: the fit's seed) drives the draws of new groups
    under ``new_groups="sample"``. ``offset``: the offset of each new row (default: the
    model's offset expressions evaluated on ``new_data``; required when the model was fitted
    with ``offset=`` values).
    """
    if new_groups not in ("population", "sample"):
        raise SpecError(f"new_groups must be 'population' or 'sample'; got {new_groups!r}")
    spec = fit.spec
    frame = as_frame(new_data)
    if len(frame) == 0:
        raise DataError("new_data has no rows")
    rows, keys_of, info = _rows_and_keys(fit, frame, offset)
    post = fit.posterior
    # an unseen level has deviation 0 here: the population mean
    eta = linear_predictor(spec, post, rows)
    rng = np.random.default_rng([int((fit.config.seed or 0) if seed is None else seed), 23])
    for term, idx, keys, Z in zip(spec.terms, rows.codes, keys_of, rows.Z, strict=True):
        new = idx < 0
        if not new.any():
            continue
        _check_population(term, keys[new], new_groups)
        if new_groups == "sample":  # one draw per unseen label, shared by its rows
            eta[:, new] += _sampled_levels(spec, post, term, keys[new], Z[new], rng)
    return inverse_link(spec.link, eta), info


def _model_columns(spec: Any, offset: Any) -> list[str]:
    """The columns of new data that the model reads, once each: the predictors', the offset
    expressions' (unless ``offset`` is given) and the grouping factors'."""
    d = spec.design
    offsets = [lab for lab in d.formula.offsets if lab != ARRAY_OFFSET] if offset is None else []
    return list(dict.fromkeys(
        _source_columns(d, d.formula.predictors) + _source_columns(d, offsets)
        + [c for t in spec.terms for c in t.group.term.group]
    ))


def _group_rows(
    spec: Any, frame: pd.DataFrame, values: dict[str, np.ndarray]
) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray], pd.DataFrame]:
    """Per group term, for the new rows: the index of each row's level among the fitted labels
    (-1: unseen), the varying-coefficient columns, the group key of each row, and a frame
    with one column ``<group>_status`` ('existing' or 'new') per term."""
    d = spec.design
    codes, Zs, keys_of = [], [], []
    info = pd.DataFrame(index=frame.index)
    for term in spec.terms:
        g = term.group
        Zs.append(_design_rows(d, values, len(frame), g.coef_names, list(g.term.terms),
                               g.term.intercept, [t.variables for t in g.term.terms],
                               g.term.intercept))
        keys = _group_key(frame, g.term.group)
        lookup = {
            (lab.item() if hasattr(lab, "item") else lab): j for j, lab in enumerate(g.labels)
        }
        codes.append(np.array([lookup.get(k, -1) if k is not None else -1 for k in keys],
                              dtype=np.int64))
        keys_of.append(keys)
        info[f"{g.name}_status"] = np.where(codes[-1] >= 0, "existing", "new")
    return codes, Zs, keys_of, info


def _check_population(term: Any, keys: np.ndarray, new_groups: NewGroups) -> None:
    """SpecError for unseen levels (``keys``) of a no-pooling term under
    ``new_groups="population"``: that model has no population."""
    if new_groups == "population" and not term.estimated:
        g = term.group
        new_keys = list(dict.fromkeys(str(k) for k in keys))
        raise SpecError(
            f"the no-pooling model has no population of {g.name} groups, so it cannot "
            f"predict the unseen {g.name}(s) {', '.join(new_keys[:5])} with "
            "new_groups='population'; use new_groups='sample' (a draw from the fixed "
            "prior) or a partial-pooling fit"
        )


def _sampled_levels(
    spec: Any, post: Any, term: Any, keys: np.ndarray, Z: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """What the rows of unseen levels (``keys``, their columns ``Z``) add to eta under
    ``new_groups="sample"`` (draws, rows): one draw of each unseen label's effect from the
    fitted population (or the fixed prior), shared by its rows."""
    new_keys = list(dict.fromkeys(str(k) for k in keys))
    S = post.sizes["chain"] * post.sizes["draw"]
    mean, chol = new_level_draws(spec, post, term)
    z = rng.standard_normal((S, len(new_keys), term.group.n_coefs))
    v = mean[:, None, :] + np.einsum("sij,snj->sni", chol, z)
    pos = {k: i for i, k in enumerate(new_keys)}
    cols = np.array([pos[str(k)] for k in keys])
    return np.einsum("snc,nc->sn", v[:, cols, :], Z)


def predict(
    fit: Fit,
    new_data: Any,
    *,
    new_groups: NewGroups = "population",
    prob: float = 0.89,
    kind: Literal["hdi", "eti"] = "hdi",
    seed: int | None = None,
    offset: Any = None,
) -> pd.DataFrame:
    """Predicted success probability for each row of ``new_data``, with a ``prob`` interval.

    See the module docstring for what is predicted and how unseen groups are handled.

    Parameters
    ----------
    fit : Fit
        The fitted model.
    new_data : pandas.DataFrame, polars.DataFrame, Table or str
        Rows to predict, with the model's predictor and group columns (on the original scale of
        the fitted data); a path is read with :func:`read_table`.
    new_groups : {"population", "sample"}, default "population"
        For a group label not seen in the fit: the population mean (a typical group) or a new
        group effect drawn from the fitted population distribution (a new random group).
    prob : float, default 0.89
        Probability mass of the intervals, strictly between 0 and 1.
    kind : {"hdi", "eti"}, default "hdi"
        Highest-density (``"hdi"``) or equal-tailed (``"eti"``) intervals.
    seed : int or None, default None
        Random seed for ``new_groups="sample"``.
    offset : str, array-like or None, default None
        The offset for ``new_data``: an expression of its columns or one value per row; None
        evaluates the formula's offset on ``new_data``.

    Returns
    -------
    pandas.DataFrame
        ``new_data``'s model columns plus ``mean``, ``sd`` and the interval, its columns
        named with its kind and probability (``hdi_89_lower``, ``hdi_89_upper``; ``attrs``
        hold ``prob`` and ``kind``) on the probability scale, and ``<group>_status``
        (``"existing"`` or ``"new"``) per group term.

    Raises
    ------
    SpecError
        When ``prob``, ``kind`` or ``new_groups`` is invalid, or ``new_groups="population"`` is
        asked of a no-pooling fit.
    DataError
        When ``new_data`` has no rows, lacks a model column, or holds a missing, non-numeric or
        unknown categorical value in a model column or the offset.
    """
    from arviz_stats.base import array_stats

    if not 0.0 < prob < 1.0:
        raise SpecError(f"prob must lie strictly between 0 and 1; got {prob!r}")
    if kind not in ("hdi", "eti"):
        raise SpecError(f"kind must be 'hdi' or 'eti'; got {kind!r}")
    draws, info = predict_draws(fit, new_data, new_groups=new_groups, seed=seed, offset=offset)
    frame = as_frame(new_data)
    out = frame[_model_columns(fit.spec, offset)].copy()
    fn = array_stats.hdi if kind == "hdi" else array_stats.eti
    iv = fn(draws, prob, axis=0)
    out["mean"] = draws.mean(axis=0)
    out["sd"] = draws.std(axis=0, ddof=1)
    lo, hi = interval_columns(prob, kind)
    out[lo] = iv[:, 0]
    out[hi] = iv[:, 1]
    for c in info.columns:
        out[c] = info[c].to_numpy()
    out.attrs.update({"prob": prob, "kind": kind, "new_groups": new_groups, "scale": "probability"})
    return out
