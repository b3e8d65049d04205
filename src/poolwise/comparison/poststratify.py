"""Poststratification (MRP): population and subgroup estimates from a model fitted to a survey.

A population table has one row per population cell: the model's predictors and grouping
columns, and ``count``, how many people the cell holds. For each posterior draw, each cell's
success probability comes from the model's linear predictor (:mod:`poolwise.model.predictor`:
fixed effects, offset, group effects); the estimate for a subgroup (a level of ``by``) and
for the whole population is the count-weighted mean of its cells' probabilities::

    theta_b = sum_{c in b} N_c p_c / sum_{c in b} N_c

summarised over the draws (posterior mean, SD, a ``prob`` interval). A group level the survey
never saw gets a new group's effects, one draw from the population distribution (partial
pooling) or the fixed prior of a level (no pooling) per posterior draw, shared by the cells of
that level (a note says how many levels and cells); its uncertainty thus carries the spread
between groups.

The population table is read like data (a pandas or polars frame, CSV, Parquet, a glob or a
folder of Parquet files through DuckDB). Cost follows the population cells: the probabilities
are summed cell by cell inside one compiled loop (:func:`poolwise.model.predictive.
mean_probabilities`), never held as draws x cells, and the draws are thinned evenly to at most
``draws`` (default 1000; enough for a posterior mean and interval, and said in the result).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from poolwise.comparison.grouping import by_levels
from poolwise.comparison.predict import as_frame, new_rows
from poolwise.errors import DataError, SpecError
from poolwise.inference.summary import summarise_draws
from poolwise.model.predictive import mean_probabilities, thinned_draws
from poolwise.model.predictor import coefficients, new_level_draws, with_new_levels

if TYPE_CHECKING:
    from poolwise.inference.fitted import Fit

__all__ = ["poststratify", "read_population"]

#: draws used at most (thinned evenly)
MAX_DRAWS = 1000


def read_population(population: Any) -> pd.DataFrame:
    """A population table as a pandas frame: a frame, a polars frame, a dict of columns, a CSV
    or Parquet file, or a glob / folder of Parquet files (read by DuckDB)."""
    from pathlib import Path

    if isinstance(population, str | Path):
        path = Path(population)
        if path.is_dir() or any(ch in str(population) for ch in "*?["):
            import duckdb

            pattern = str(path / "**" / "*.parquet") if path.is_dir() else str(population)
            try:
                return duckdb.sql("SELECT * FROM read_parquet(?, hive_partitioning = true)",
                                  params=[pattern]).df()
            except duckdb.Error as err:
                raise DataError(f"cannot read the population table {population}: {err}") from None
        if not path.is_file():
            raise DataError(f"the population table {population} does not exist")
    frame = as_frame(population)
    if len(frame) == 0:
        raise DataError("the population table has no rows")
    return frame


def _counts(frame: pd.DataFrame, count: str) -> np.ndarray:
    if count not in frame.columns:
        raise DataError(
            f"the population table has no count column {count!r}; its columns: "
            f"{', '.join(map(str, frame.columns[:20]))} (give the column of people per cell "
            "with count=...)"
        )
    n = pd.to_numeric(frame[count], errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(n) | (n < 0)
    if bad.any():
        rows = ", ".join(str(i + 1) for i in np.flatnonzero(bad)[:5])
        raise DataError(f"the count column {count!r} must hold numbers >= 0; rows {rows} do not")
    if n.sum() <= 0:
        raise DataError(f"the count column {count!r} sums to 0: the population is empty")
    return n


def poststratify(fit: Fit, population: Any, *, count: str = "N",
                 by: str | list[str] | None = None, prob: float = 0.89, kind: str = "hdi",
                 draws: int = MAX_DRAWS, offset: Any = None,
                 seed: int | None = None) -> pd.DataFrame:
    """Population and subgroup estimates of the success probability (multilevel regression
    and poststratification).

    Parameters
    ----------
    fit : Fit
        The model fitted to the survey.
    population : pandas.DataFrame, polars.DataFrame, dict or str
        The population cells: the model's predictor and grouping columns and the count column
        (a path: CSV, Parquet, or a glob / folder of Parquet files).
    count : str, default "N"
        The column with the number of people in each cell.
    by : str, list of str or None, default None
        Estimate within each level of these columns too (the total is always given).
    prob : float, default 0.89
        Probability mass of the intervals.
    kind : {"hdi", "eti"}, default "hdi"
        Highest-density or equal-tailed intervals.
    draws : int, default 1000
        Posterior draws used at most (thinned evenly).
    offset : array-like or None, default None
        The offset of each cell, where the model was fitted with ``offset=`` values.
    seed : int or None, default None
        Seed of the new-group draws of unseen levels (default: the fit's seed).

    Returns
    -------
    pandas.DataFrame
        One row per level of ``by`` and a last row ``level == "total"``: ``level``, the ``by``
        columns, ``estimate`` (posterior mean), ``sd``, the interval columns
        (``hdi_89_lower``, ``hdi_89_upper``) and ``population`` (the summed count); ``attrs``
        hold the notes (unseen levels, draws used).

    Raises
    ------
    DataError
        When the population table lacks a predictor, a grouping column or the count, or holds
        an unusable value.
    SpecError
        When an option is invalid.
    """
    if not 0.0 < prob < 1.0:
        raise SpecError(f"prob must lie strictly between 0 and 1 (e.g. 0.89); got {prob!r}")
    if kind not in ("hdi", "eti"):
        raise SpecError(f"kind must be 'hdi' or 'eti'; got {kind!r}")
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 10:
        raise SpecError(f"draws must be a whole number >= 10; got {draws!r}")
    frame = read_population(population)
    weight = _counts(frame, count)
    rows, _ = new_rows(fit, frame, offset)
    keep = thinned_draws(fit.posterior, draws)
    coefs = coefficients(fit.spec, fit.posterior).take(keep)
    seed = int(fit.config.seed or 0) if seed is None else int(seed)
    coefs, rows, notes = _new_levels(fit, coefs, rows, frame, keep, seed)
    if by is None:  # the total alone
        level_all, both, weights, n_out = np.zeros(rows.n, dtype=np.int64), rows, weight, 1
        levels = None
    else:  # every level of by, then the total as one more level
        level, levels = by_levels(frame, by)
        level_all = np.concatenate([level, np.full(len(frame), len(levels))])
        both = rows.take(np.concatenate([np.arange(rows.n)] * 2))
        weights, n_out = np.concatenate([weight, weight]), len(levels) + 1
    sums = mean_probabilities(fit.spec, coefs, both, weights, level_all, n_out)
    pop = np.bincount(level_all, weights=weights, minlength=n_out)
    p = sums / np.where(pop > 0, pop, np.nan)
    if by is None:
        table, names = pd.DataFrame(index=[0]), ["total"]
    else:
        out = levels.reset_index(drop=True).astype(object)
        table = pd.concat([out, pd.DataFrame({c: ["(all)"] for c in out.columns})],
                          ignore_index=True)
        names = list(levels.astype(str).agg(":".join, axis=1)) + ["total"]
    table.insert(0, "level", names)
    for k, v in summarise_draws(p, prob, kind).items():
        table[k] = v
    table["population"] = pop
    notes.append(f"{len(keep)} of {fit.posterior.sizes['chain'] * fit.posterior.sizes['draw']} "
                 "posterior draws used (thinned evenly)")
    table.attrs.update({"notes": tuple(notes), "prob": prob, "kind": kind,
                        "scale": "probability", "count": count})
    return table


def _new_levels(fit: Fit, coefs: Any, rows: Any, frame: pd.DataFrame, keep: np.ndarray,
                seed: int) -> tuple[Any, Any, list[str]]:
    """Unseen group labels of the population as virtual levels: one draw of a new group's
    effects per posterior draw and label, appended to the coefficients."""
    spec = fit.spec
    rng = np.random.default_rng([seed, 41])
    notes: list[str] = []
    codes = list(rows.codes)
    deviations = []
    for t, term in enumerate(spec.terms):
        g = term.group
        unseen = codes[t] < 0
        keys = frame[list(g.term.group)].astype(str).agg(":".join, axis=1).to_numpy()
        labels = list(dict.fromkeys(keys[unseen]))
        K = len(labels)
        if K:
            notes.append(f"{K} {g.name} level(s) of the population the survey never saw "
                         f"({', '.join(labels[:5])}{', ...' if K > 5 else ''}; "
                         f"{int(unseen.sum())} cells): each gets a new group's effects, drawn "
                         + ("from the population distribution" if term.estimated
                            else "from the fixed prior of a level (no pooling)"))
            pos = {k: i for i, k in enumerate(labels)}
            codes[t] = np.where(unseen, g.n_levels + np.array([pos.get(k, 0) for k in keys]),
                                codes[t])
        mean, chol = new_level_draws(spec, fit.posterior, term)
        z = rng.standard_normal((len(keep), K, g.n_coefs))
        deviations.append(mean[keep][:, None, :] + np.einsum("sij,skj->ski", chol[keep], z))
    return with_new_levels(spec, coefs, deviations), replace(rows, codes=tuple(codes)), notes
