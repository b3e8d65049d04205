"""Grouped K-fold cross-validation: how well does each pooling strategy predict new groups,
when there are too many groups to refit each one or PSIS leave-one-group-out is unreliable?

The levels of the compared group term are split into ``K`` folds, stratified by group size
(the levels sorted by their rows and dealt out in turn, so every fold holds small and large
groups alike; ties broken by a seeded shuffle). For each fold and model, the model is fitted
again without the fold's rows (every per-cell and per-row array subset, the same priors,
standardization, sampler settings and repair policy; one recorded seed per fold), and each
left-out group's rows are scored as a new group, its effects integrated out exactly as
leave-one-group-out does (:func:`poolwise.comparison.logo.group_log_lik`)::

    elpd_j = log mean_s p(y_j | theta_s),   theta_s from the fit without j's fold

Unlike leave-one-group-out, the other groups of j's fold are missing from that fit too, so the
estimate is slightly pessimistic for small K (the usual K-fold bias); with K = the number of
groups it is exact leave-one-group-out. Folds run in parallel processes when the machine has
cores to spare beyond each fit's chains (``workers``).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from poolwise.comparison.logo import (
    LOGO_UNIT,
    group_log_lik,
    log_mean_exp,
    logo_term,
    mcse_log_mean_exp,
    refit_without,
)
from poolwise.data.weights import refuse_cross_validation
from poolwise.errors import SpecError

if TYPE_CHECKING:
    from poolwise.inference.fitted import Fit
    from poolwise.model.spec import ModelSpec

__all__ = ["KFoldComparison", "fold_of_levels", "kfold_compare"]


@dataclass(frozen=True, eq=False)
class KFoldComparison:
    """Grouped K-fold elpd of each pooling strategy.

    ``table``: one row per model (elpd, se, elpd_diff and dse against the best);
    ``pointwise``: ``elpd_j`` per group (rows) and model (columns), with the group's fold;
    ``mcse``: the Monte Carlo SE of each ``elpd_j``; ``folds``: per fold, its groups and the
    seed its refits used.
    """

    group: str
    k: int
    table: pd.DataFrame
    pointwise: pd.DataFrame
    mcse: pd.DataFrame
    folds: pd.DataFrame
    unit: str = LOGO_UNIT

    @property
    def best(self) -> str:
        return str(self.table.index[0])

    def __repr__(self) -> str:
        return (f"KFoldComparison(group={self.group!r}, k={self.k}, "
                f"groups={len(self.pointwise)}, best={self.best!r})")


def fold_of_levels(sizes: np.ndarray, k: int, seed: int) -> np.ndarray:
    """The fold (0 .. k-1) of every level: stratified by size (levels sorted by their rows,
    ties in a seeded random order, dealt out in turn)."""
    sizes = np.asarray(sizes)
    rng = np.random.default_rng([int(seed), 53])
    order = np.lexsort((rng.permutation(len(sizes)), sizes))
    fold = np.empty(len(sizes), dtype=np.int64)
    fold[order] = np.arange(len(sizes)) % k
    return fold


def _fold_seed(seed: int, fold: int) -> int:
    return int(np.random.SeedSequence([int(seed), 59, fold]).generate_state(1)[0])


def _score_fold(fit: Fit, scoring: ModelSpec, group: str, levels: list[int],
                seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The refit without the fold, and its elpd and MCSE of each of the fold's levels."""
    sub = refit_without(fit, levels, scoring, group, seed=seed)
    ll = group_log_lik(sub, scoring, group=group, levels=np.asarray(sorted(levels)))
    return log_mean_exp(ll), mcse_log_mean_exp(ll, sub.posterior.sizes["chain"])


def _default_workers(fits: Mapping[str, Fit]) -> int:
    chains = max(f.config.chains for f in fits.values())
    return max(1, (os.cpu_count() or 1) // chains)


def kfold_compare(fits: Mapping[str, Fit], k: int = 10, *, group: str | None = None,
                  seed: int | None = None, workers: int | None = None) -> KFoldComparison:
    """Grouped K-fold elpd of each pooling fit (keys ``complete``, ``none``, ``partial``),
    leaving out folds of the levels of the group term ``group`` (default: the model's only
    group term). ``seed`` (default: the partial fit's) makes the folds and each fold's refit
    seed; ``workers`` parallel processes (default: the cores beyond one fit's chains)."""
    ref = fits["partial"] if "partial" in fits else fits["none"]
    scoring = ref.spec
    refuse_cross_validation(scoring.design, "K-fold cross-validation")
    t = logo_term(scoring, group)
    term = scoring.terms[t]
    G = term.group.n_levels
    if isinstance(k, bool) or not isinstance(k, int) or not 2 <= k <= G:
        raise SpecError(f"kfold must be a whole number from 2 to the number of groups ({G}); "
                        f"got {k!r}")
    seed = int(ref.config.seed or 0) if seed is None else int(seed)
    fold = fold_of_levels(term.group.level_rows, k, seed)
    seeds = [_fold_seed(seed, f) for f in range(k)]
    jobs = [(key, f) for key in fits for f in range(k)]
    workers = _default_workers(fits) if workers is None else max(1, int(workers))
    args = [(fits[key], scoring, term.name, [int(j) for j in np.flatnonzero(fold == f)],
             seeds[f]) for key, f in jobs]
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(_score_fold, *zip(*args, strict=True)))
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            results = [_score_fold(*a) for a in args]
    elpd = {key: np.full(G, np.nan) for key in fits}
    mcse = {key: np.full(G, np.nan) for key in fits}
    for (key, f), (e, se) in zip(jobs, results, strict=True):
        levels = np.flatnonzero(fold == f)
        elpd[key][levels], mcse[key][levels] = e, se
    return _comparison(term.name, k, [str(v) for v in term.group.labels], fold, seeds, elpd,
                       mcse)


def _comparison(group: str, k: int, labels: list[str], fold: np.ndarray, seeds: list[int],
                elpd: dict[str, np.ndarray], mcse: dict[str, np.ndarray]) -> KFoldComparison:
    G = len(labels)
    index = pd.Index(labels, name=group)
    pointwise = pd.DataFrame(elpd, index=index)
    pointwise.insert(0, "fold", fold)
    best = max(elpd, key=lambda m: elpd[m].sum())
    rows = {}
    for key, e in elpd.items():
        diff = e - elpd[best]
        rows[key] = {
            "elpd": float(e.sum()),
            "se": float(math.sqrt(G * np.var(e, ddof=1))),
            "elpd_diff": float(diff.sum()),
            "dse": float(math.sqrt(G * np.var(diff, ddof=1))),
        }
    table = pd.DataFrame.from_dict(rows, orient="index").sort_values("elpd", ascending=False)
    table.index.name = "model"
    table.attrs["unit"] = LOGO_UNIT
    folds = pd.DataFrame({
        "fold": np.arange(k),
        "groups": [int(np.sum(fold == f)) for f in range(k)],
        "seed": seeds,
        "labels": [" ".join(labels[j] for j in np.flatnonzero(fold == f)) for f in range(k)],
    })
    return KFoldComparison(group=group, k=k, table=table, pointwise=pointwise,
                           mcse=pd.DataFrame(mcse, index=index), folds=folds)

