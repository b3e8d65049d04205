"""Effects on the outcome scale, in marginaleffects' vocabulary: :func:`predictions`,
:func:`comparisons` and :func:`slopes`.

Everything is computed per posterior draw on the probability scale and summarised over the
draws at the end (posterior mean, SD and a ``prob`` interval), so every interval is a
posterior interval of the quantity itself, not a delta-method approximation.

* :func:`predictions`: the success probability of each row of ``newdata``, or its average over
  the rows of each level of ``by``;
* :func:`comparisons`: the difference in the success probability when a predictor changes
  (a binary or categorical predictor: each level against the reference; a numeric one: from
  its value to its value + 1 unit, or between two given values), averaged over the rows (of
  each level of ``by``): the average risk difference;
* :func:`slopes`: the derivative of the success probability with respect to a numeric
  predictor (a central difference), averaged the same way.

The rows are ``newdata``, or by default the data the model was fitted to (read again from the
file the fit records, checked against its SHA-256; rows the fit dropped stay out), each row
weighted by the data rows it stands for (its frequency weight, or the count of a row pattern);
with survey weights, by its survey weight (the average over the population the sample
represents).

Group effects (``groups``):

* ``"fitted"`` (default): each row in its own fitted group (conditional on the groups; an
  unseen label gets the population mean, with a note);
* ``"new"``: each row in a new group, whose effects are integrated over the population
  distribution (partial pooling) or the fixed prior of a level (no pooling): by Gauss-Hermite
  quadrature when the model's group terms have at most two varying coefficients in all (21
  nodes for one, 11 x 11 for two), otherwise by Monte Carlo (400 draws of the new groups' effects
  per posterior draw, seeded); the result says which;
* ``"average"``: each row in every fitted group in turn, weighted by the group's share of the
  data rows (for several group terms: every combination of levels that occurs in the data,
  weighted by its rows): the average over the fitted groups.

The linear predictor and the probabilities come from the model layer
(:mod:`poolwise.model.predictor`, :func:`poolwise.model.predictive.mean_probabilities`), so
every term, link and the offset count as in the fit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from poolwise.comparison.grouping import by_levels, evaluation, mean_p
from poolwise.comparison.predict import new_rows, read_frame
from poolwise.errors import DataError, SpecError
from poolwise.inference.summary import summarise_draws

if TYPE_CHECKING:
    from poolwise.inference.fitted import Fit

__all__ = ["comparisons", "predictions", "slopes"]

Groups = Literal["fitted", "new", "average"]


def _check(prob: float, kind: str, groups: str) -> None:
    if not 0.0 < prob < 1.0:
        raise SpecError(f"prob must lie strictly between 0 and 1 (e.g. 0.89); got {prob!r}")
    if kind not in ("hdi", "eti"):
        raise SpecError(f"kind must be 'hdi' or 'eti'; got {kind!r}")
    if groups not in ("fitted", "new", "average"):
        raise SpecError(f"groups must be 'fitted', 'new' or 'average'; got {groups!r}")


# ---- the rows ------------------------------------------------------------------------------


def _fitted_data(fit: Fit) -> tuple[pd.DataFrame, np.ndarray]:
    """The rows the model was fitted to, read again from the recorded file (its SHA-256 must
    match), with the data rows each stands for."""
    d = fit.spec.design
    frame, sha = read_frame(d.source)
    if sha is not None and sha != d.data_sha256:
        raise DataError(
            f"the fit was made from data with SHA-256 {d.data_sha256[:12]}..., but "
            f"{d.source} now has {sha[:12]}...; give the data it was fitted to as newdata="
        )
    rows = frame.iloc[np.asarray(d.row_number) - 1].reset_index(drop=True)
    weight = (np.ones(len(rows)) if d.row_count is None
              else np.asarray(d.row_count, dtype=float))
    if d.likelihood_weight is not None:  # survey weights: the average over the population
        weight = np.asarray(d.likelihood_weight, dtype=float)
    return rows, weight


def _frame_and_weight(fit: Fit, newdata: Any) -> tuple[pd.DataFrame, np.ndarray]:
    if newdata is None:
        return _fitted_data(fit)
    from poolwise.comparison.predict import as_frame

    frame = as_frame(newdata)
    if len(frame) == 0:
        raise DataError("newdata has no rows")
    return frame, np.ones(len(frame))


# ---- the public functions -----------------------------------------------------------------


def predictions(fit: Fit, newdata: Any = None, *, by: str | list[str] | bool | None = None,
                groups: Groups = "fitted", prob: float = 0.89, kind: str = "hdi",
                offset: Any = None, seed: int | None = None) -> pd.DataFrame:
    """Predicted success probabilities on the outcome scale, with posterior intervals.

    Parameters
    ----------
    fit : Fit
        The fitted model.
    newdata : pandas.DataFrame, polars.DataFrame, dict, str or None, default None
        The rows to predict (the model's predictor and group columns, on the original scale);
        None: the data the model was fitted to.
    by : str, list of str, bool or None, default None
        None: one row per row of ``newdata``; a column (or columns): the average over the rows
        of each of its levels; True: the average over all rows.
    groups : {"fitted", "new", "average"}, default "fitted"
        How group effects count (module docstring): the rows' own fitted groups, a new group
        integrated over the population, or the average over the fitted groups.
    prob : float, default 0.89
        Probability mass of the intervals.
    kind : {"hdi", "eti"}, default "hdi"
        Highest-density or equal-tailed intervals.
    offset : array-like or None, default None
        The offset of each row of ``newdata`` where the model was fitted with ``offset=``
        values.
    seed : int or None, default None
        Seed of the Monte Carlo integration of new groups (default: the fit's seed).

    Returns
    -------
    pandas.DataFrame
        ``estimate`` (posterior mean probability), ``sd`` and the interval columns
        (``hdi_89_lower``, ``hdi_89_upper``), per row or per level of ``by``; ``attrs`` say
        how groups were handled.

    Raises
    ------
    SpecError
        When ``prob``, ``kind`` or ``groups`` is invalid.
    DataError
        When the rows lack a model column or hold an unusable value, or the fitted data
        cannot be read again.
    """
    _check(prob, kind, groups)
    frame, weight = _frame_and_weight(fit, newdata)
    rows, notes = new_rows(fit, frame, offset)
    seed = int(fit.config.seed or 0) if seed is None else int(seed)
    if by is None:
        level, levels = np.arange(len(frame)), frame.reset_index(drop=True)
    elif by is True:
        level, levels = np.zeros(len(frame), dtype=np.int64), pd.DataFrame(index=[0])
    else:
        level, levels = by_levels(frame, by)
    ev = evaluation(fit, rows, weight, level, groups, seed)
    p = mean_p(fit, ev, len(levels))
    out = levels.reset_index(drop=True).copy()
    for k, v in summarise_draws(p, prob, kind).items():
        out[k] = v
    out.attrs.update({"groups": ev.method, "notes": tuple(notes), "prob": prob, "kind": kind,
                      "scale": "probability"})
    return out


def _contrasts(fit: Fit, frame: pd.DataFrame, variable: str, contrast: Any
               ) -> list[tuple[str, pd.DataFrame, pd.DataFrame, float]]:
    """(label, rows at the low value, rows at the high value, divisor) per contrast."""
    enc = fit.spec.design.encoding
    if enc is None:
        raise SpecError("this fit has no record of how its predictors were encoded (saved by "
                        "an older poolwise); fit it again")
    var = next((ve for ve in enc.variables if ve.label == variable), None)
    if var is None:
        names = ", ".join(ve.label for ve in enc.variables) or "none"
        raise SpecError(f"{variable!r} is not a predictor of the model; its predictors: {names}")
    col = _source_column(fit, variable)
    if var.kind == "categorical":
        levels = list(var.levels)
        pairs = [(levels[0], lv) for lv in levels[1:]] if contrast is None else [contrast]
        return [(f"{hi} - {lo}", frame.assign(**{col: lo}), frame.assign(**{col: hi}), 1.0)
                for lo, hi in pairs]
    x = pd.to_numeric(frame[col], errors="coerce").to_numpy(dtype=float)
    if contrast is None:
        values = np.unique(x[np.isfinite(x)])
        if len(values) <= 2 and set(values.tolist()) <= {0.0, 1.0}:
            contrast = (0.0, 1.0)
        else:
            return [("+1", frame, frame.assign(**{col: x + 1.0}), 1.0)]
    if contrast == "slope":
        h = 1e-4 * max(float(np.nanstd(x)), 1e-8)
        return [("dP/dx", frame.assign(**{col: x - h}), frame.assign(**{col: x + h}), 2 * h)]
    lo, hi = contrast
    return [(f"{hi:g} - {lo:g}", frame.assign(**{col: float(lo)}),
             frame.assign(**{col: float(hi)}), 1.0)]


def _source_column(fit: Fit, variable: str) -> str:
    """The data column a predictor is computed from (``factor(period)`` -> ``period``)."""
    cols = fit.spec.formula.expr(variable).columns
    if len(cols) != 1:
        raise SpecError(f"predictor {variable!r} is computed from {len(cols)} columns "
                        f"({', '.join(cols)}); comparisons change one column at a time")
    return cols[0]


def comparisons(fit: Fit, variables: str | list[str] | dict[str, Any], newdata: Any = None, *,
                by: str | list[str] | None = None, groups: Groups = "fitted",
                prob: float = 0.89, kind: str = "hdi", offset: Any = None,
                seed: int | None = None, _slope: bool = False) -> pd.DataFrame:
    """Average differences in the success probability when a predictor changes, with
    posterior intervals (marginaleffects' ``avg_comparisons``).

    Parameters
    ----------
    fit : Fit
        The fitted model.
    variables : str, list of str or dict
        The predictor(s) to change. A binary (0/1) or categorical predictor: each level
        against the reference (a dict value ``(lo, hi)`` picks two levels); a numeric one:
        + 1 unit (a dict value ``(lo, hi)`` compares two values).
    newdata : pandas.DataFrame, polars.DataFrame, dict, str or None, default None
        The rows to average over; None: the data the model was fitted to.
    by : str, list of str or None, default None
        Average within each level of these columns instead of over all rows.
    groups : {"fitted", "new", "average"}, default "fitted"
        How group effects count (module docstring).
    prob : float, default 0.89
        Probability mass of the intervals.
    kind : {"hdi", "eti"}, default "hdi"
        Highest-density or equal-tailed intervals.
    offset : array-like or None, default None
        The offset of each row of ``newdata`` where the model was fitted with ``offset=``.
    seed : int or None, default None
        Seed of the Monte Carlo integration of new groups (default: the fit's seed).
    _slope : bool, default False
        Internal (:func:`slopes`): derivatives instead of differences.

    Returns
    -------
    pandas.DataFrame
        One row per variable, contrast and level of ``by``: ``term``, ``contrast``, the
        ``by`` columns, ``estimate`` (the posterior mean of the average difference on the
        probability scale), ``sd`` and the interval columns (``hdi_89_lower``, ...).

    Raises
    ------
    SpecError
        When a variable is not a predictor of the model, or an option is invalid.
    DataError
        When the rows lack a model column or the fitted data cannot be read again.
    """
    _check(prob, kind, groups)
    frame, weight = _frame_and_weight(fit, newdata)
    if isinstance(variables, str):
        variables = {variables: None}
    elif not isinstance(variables, dict):
        variables = dict.fromkeys(variables)
    level, levels = by_levels(frame, by)
    seed = int(fit.config.seed or 0) if seed is None else int(seed)
    parts, method, notes = [], "", []
    for variable, contrast in variables.items():
        spec = "slope" if _slope else contrast
        for label, lo_frame, hi_frame, div in _contrasts(fit, frame, variable, spec):
            p = []
            for f in (lo_frame, hi_frame):
                rows, note = new_rows(fit, f, offset)
                notes += note
                ev = evaluation(fit, rows, weight, level, groups, seed)
                method = ev.method
                p.append(mean_p(fit, ev, len(levels)))
            table = levels.reset_index(drop=True).copy()
            table.insert(0, "contrast", label)
            table.insert(0, "term", variable)
            for k, v in summarise_draws((p[1] - p[0]) / div, prob, kind).items():
                table[k] = v
            parts.append(table)
    out = pd.concat(parts, ignore_index=True)
    out.attrs.update({"groups": method, "notes": tuple(dict.fromkeys(notes)), "prob": prob,
                      "kind": kind, "scale": "probability"})
    return out


def slopes(fit: Fit, variables: str | list[str], newdata: Any = None, *,
           by: str | list[str] | None = None, groups: Groups = "fitted", prob: float = 0.89,
           kind: str = "hdi", offset: Any = None, seed: int | None = None) -> pd.DataFrame:
    """Average derivatives of the success probability with respect to numeric predictors
    (a central difference per row), with posterior intervals (marginaleffects'
    ``avg_slopes``).

    Parameters
    ----------
    fit : Fit
        The fitted model.
    variables : str or list of str
        Numeric predictors.
    newdata : pandas.DataFrame, polars.DataFrame, dict, str or None, default None
        The rows to average over; None: the data the model was fitted to.
    by : str, list of str or None, default None
        Average within each level of these columns.
    groups : {"fitted", "new", "average"}, default "fitted"
        How group effects count (module docstring).
    prob : float, default 0.89
        Probability mass of the intervals.
    kind : {"hdi", "eti"}, default "hdi"
        Highest-density or equal-tailed intervals.
    offset : array-like or None, default None
        The offset of each row of ``newdata`` where the model was fitted with ``offset=``.
    seed : int or None, default None
        Seed of the Monte Carlo integration of new groups.

    Returns
    -------
    pandas.DataFrame
        As :func:`comparisons`, with ``contrast`` ``"dP/dx"`` (per unit of the predictor).

    Raises
    ------
    SpecError
        When a variable is not a numeric predictor of the model, or an option is invalid.
    DataError
        When the rows lack a model column or the fitted data cannot be read again.
    """
    names = [variables] if isinstance(variables, str) else list(variables)
    enc = fit.spec.design.encoding
    for v in names:
        ve = next((x for x in (enc.variables if enc else ()) if x.label == v), None)
        if ve is not None and ve.kind == "categorical":
            raise SpecError(f"{v!r} is categorical; a slope needs a numeric predictor (use "
                            "comparisons() for its levels)")
    return comparisons(fit, names, newdata, by=by, groups=groups, prob=prob, kind=kind,
                       offset=offset, seed=seed, _slope=True)
