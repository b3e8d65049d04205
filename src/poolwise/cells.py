"""Row patterns: per-row quantities stored once per distinct row, with a count.

Rows that fall in the same binomial cell and have the same outcome (successes, trials) have
identical pointwise values in every draw: log-likelihood, posterior predictive, LOO. So the
fit stores them once per *pattern* (cell x outcome for Bernoulli rows; the cell itself for a
binomial row that is alone in its cell) with the number of rows that share it, and memory and
disk follow patterns x draws instead of rows x draws.

Row-level PSIS-LOO stays exact: PSIS is deterministic in the log-likelihood draws, so each row
gets its pattern's ``elpd_i``, ``p_loo_i`` and Pareto k, and

* ``elpd_loo = sum_i count_i elpd_i``, ``p_loo = sum_i count_i p_i``;
* ``se = sqrt(N var(elpd over rows))`` with ``var`` the count-weighted variance (``ddof=1``
  over the ``N = sum count_i`` rows), exactly what ArviZ computes on the expanded rows.

The groups of :attr:`poolwise.fit.Fit.idata`:

* ``observed_data``: ``y``, ``trials``, ``count``, ``cell`` and ``first_row`` (1-based row
  number of the pattern's first data row), dimension ``pattern``;
* ``log_likelihood``: ``y`` with dimensions ``(chain, draw, pattern)``; its attribute
  ``poolwise_unit`` is ``"pattern"``.

ArviZ functions that take a DataTree (``arviz_stats.loo``) treat each pattern as one
observation; for the row-level tree they expect, use :func:`expand_rows` (``fit.row_level()``),
which repeats each pattern's values for its rows (for data small enough to hold rows x draws).

Import cycle: poolwise.cells -> poolwise.plan: before :func:`expand_rows` builds rows x draws
values it asks the run plan's reading of the available memory (imported lazily), the one
place that reads it; the plan in turn sizes the draws by row pattern.
"""

from __future__ import annotations

import math
import warnings
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numba
import numpy as np
import xarray as xr
from scipy.special import gammaln

from poolwise.engine.density import exp_nonpos, log1p_unit

if TYPE_CHECKING:
    from arviz_stats.utils import ELPDDataLOO

    from poolwise.design import Design
    from poolwise.fit import Fit
    from poolwise.model import ModelSpec

__all__ = [
    "RowPatterns",
    "expand_rows",
    "pattern_log_likelihood",
    "pattern_loo",
    "row_loo",
    "row_patterns",
    "total_log_likelihood",
    "PATTERN_DIM",
]

PATTERN_DIM = "pattern"


@dataclass(frozen=True, eq=False)
class RowPatterns:
    """The distinct (cell, successes, trials) rows of a design, in a deterministic order (by
    cell, then trials, then successes), with their counts and the row -> pattern map."""

    cell: np.ndarray  # (P,) int64
    y: np.ndarray  # (P,) float64
    n: np.ndarray  # (P,) float64
    count: np.ndarray  # (P,) int64 rows per pattern
    first_row: np.ndarray  # (P,) 1-based data row number of the first row of each pattern
    row_pattern: np.ndarray  # (entries,) int64: the pattern of each of the design's row entries

    @property
    def n_patterns(self) -> int:
        return len(self.cell)

    @property
    def n_rows(self) -> int:
        """Data rows (the sum of the counts; engine data hold fewer entries than rows)."""
        return int(np.sum(self.count))

    @property
    def log_binom_const(self) -> np.ndarray:
        """log C(n, y) per pattern (per row of the pattern)."""
        return gammaln(self.n + 1) - gammaln(self.y + 1) - gammaln(self.n - self.y + 1)


_CACHE: weakref.WeakKeyDictionary[Any, RowPatterns] = weakref.WeakKeyDictionary()


def row_patterns(design: Design) -> RowPatterns:
    """The row patterns of a design (computed once per Design object)."""
    try:
        return _CACHE[design]
    except (KeyError, TypeError):
        pass
    cell = np.asarray(design.row_cell, dtype=np.int64)
    y = np.asarray(design.row_y, dtype=np.float64)
    n = np.asarray(design.row_n, dtype=np.float64)
    if cell.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        out = RowPatterns(empty, y, n, empty, empty, empty)
    else:
        yi = y.astype(np.int64)
        ni = n.astype(np.int64)
        m = int(ni.max()) + 1
        whole = np.array_equal(yi, y) and np.array_equal(ni, n)
        if whole and (int(cell.max()) + 1) * m < 2**62 // max(m, 1):
            key = (cell * m + ni) * m + yi
            _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
        else:
            keys = np.column_stack([cell.astype(np.float64), n, y])
            _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
        inverse = np.asarray(inverse, dtype=np.int64).reshape(-1)
        # patterns counted by a data engine (Design.row_count): each entry stands for that
        # many identical rows, so the row-level quantities stay exact
        weights = getattr(design, "row_count", None)
        count = np.rint(np.bincount(inverse, weights=weights, minlength=len(first))).astype(
            np.int64
        )
        rows = np.asarray(design.row_number)
        out = RowPatterns(
            cell=cell[first], y=y[first], n=n[first], count=count,
            first_row=np.asarray(rows[first], dtype=np.int64), row_pattern=inverse,
        )
    try:
        _CACHE[design] = out
    except TypeError:  # pragma: no cover - not weak-referenceable
        pass
    return out


def _row_index(design: Design) -> tuple[np.ndarray, np.ndarray]:
    """(pattern of every data row, its 1-based row number). For data counted by a data engine
    (``design.row_count``) each entry is repeated for the rows it stands for, in order of the
    entries' first rows, and those rows carry the first row number of their entry."""
    pat = row_patterns(design)
    rows = np.asarray(design.row_number)
    idx = pat.row_pattern
    w = getattr(design, "row_count", None)
    if w is not None:
        w = np.asarray(w, dtype=np.int64)
        idx, rows = np.repeat(idx, w), np.repeat(rows, w)
    return idx, rows


# ---- pointwise quantities --------------------------------------------------------------------


#: cell values per chain held at once while pointwise quantities are computed (the draws are
#: processed in chunks of ``draw_chunk(n_cells)``, so temporaries stay small on big data)
CHUNK_VALUES = 1 << 21


def draw_chunk(n_cells: int) -> int:
    """Draws per chain processed at once (cell-sized temporaries: chains x this x cells)."""
    return max(1, CHUNK_VALUES // max(int(n_cells), 1))


def _chunks(post: xr.Dataset, n_cells: int) -> Any:
    D = post.sizes["draw"]
    step = draw_chunk(n_cells)
    for a in range(0, D, step):
        yield a, min(a + step, D), post.isel(draw=slice(a, min(a + step, D)))


def _eta_parts(spec: ModelSpec, post: xr.Dataset) -> tuple[np.ndarray, ...]:
    """The linear predictor as data for the fused kernel: ``beta`` (S, K) with ``X`` (cells, K),
    and the per-level totals ``tot`` (S, M) of every group term and coefficient side by side,
    with ``idx`` (J, cells) each cell's column in ``tot``, ``z`` (J, cells) its Z value and
    ``mu`` (J,) the column of ``beta`` that is the totals' mean (-1: none); the deviation is
    ``tot - beta[mu]`` (the same algebra as :func:`poolwise.posterior.cell_eta`). The totals
    are the posterior's own arrays where one term has one coefficient: no copy of draws x
    levels values, which with 10^4-10^5 levels cost seconds."""
    from poolwise.engine.layout import fixed_name, total_name
    from poolwise.posterior import _draws

    d = spec.design
    S = post.sizes["chain"] * post.sizes["draw"]
    beta = (np.column_stack([_draws(post, fixed_name(c)) for c in d.fixed_names])
            if d.fixed_names else np.zeros((S, 0)))
    tots, idx, zs, mus = [], [], [], []
    off = 0
    for term in spec.terms:
        g = term.group
        for c, coef in enumerate(g.coef_names):
            total = _draws(post, total_name(term, coef))
            tots.append(total)
            mus.append(term.mu_index[c])
            idx.append(np.asarray(g.codes, dtype=np.int64) + off)
            zs.append(np.asarray(g.Z[:, c], dtype=np.float64))
            off += total.shape[1]
    n = d.n_cells
    if len(tots) == 1:  # float32 totals (a large trace) stay float32: the kernel takes both
        tot = np.ascontiguousarray(tots[0])
        if tot.dtype not in (np.float32, np.float64):
            tot = tot.astype(np.float64)
    else:
        tot = np.ascontiguousarray(np.column_stack(tots) if tots else np.zeros((S, 0)),
                                   dtype=np.float64)
    idx_a = np.array(idx, dtype=np.int64).reshape(len(idx), n)
    z_a = np.array(zs, dtype=np.float64).reshape(len(zs), n)
    return (np.ascontiguousarray(beta, dtype=np.float64),
            np.ascontiguousarray(d.X, dtype=np.float64), tot, idx_a, z_a,
            np.array(mus, dtype=np.int64))


@numba.njit(cache=True, parallel=True)
def _fused_logit(beta, X, tot, idx, z, mu, cell, y, n, const, count, store):  # pragma: no cover
    """Per draw: each pattern's log-likelihood (into ``out`` when ``store``) and the
    count-weighted total, for the logit link, without cell-sized temporaries."""
    S = beta.shape[0]
    P = cell.shape[0]
    K = X.shape[1]
    J = idx.shape[0]
    out = np.empty((S, P if store else 0))
    total = np.zeros(S)
    for s in numba.prange(S):
        acc = 0.0
        last = -1
        lp = 0.0
        lq = 0.0
        for p in range(P):
            c = cell[p]
            if c != last:
                eta = 0.0
                for k in range(K):
                    eta += X[c, k] * beta[s, k]
                for j in range(J):
                    dev = tot[s, idx[j, c]]
                    if mu[j] >= 0:
                        dev -= beta[s, mu[j]]
                    eta += dev * z[j, c]
                # log expit(eta) and log expit(-eta), stable on both sides (the density's
                # exp and log1p: within about 1 ulp of libm's, without a call per cell)
                if eta >= 0.0:
                    lp = -log1p_unit(exp_nonpos(-eta))
                    lq = lp - eta
                else:
                    lq = -log1p_unit(exp_nonpos(eta))
                    lp = lq + eta
                last = c
            v = const[p]
            # skip zero counts: 0 * -inf would be nan where p is exactly 0 or 1
            if y[p] > 0:
                v += y[p] * lp
            if n[p] - y[p] > 0:
                v += (n[p] - y[p]) * lq
            if store:
                out[s, p] = v
            acc += count[p] * v
        total[s] = acc
    return out, total


def _pointwise(spec: ModelSpec, post: xr.Dataset, store: bool) -> tuple[np.ndarray, np.ndarray]:
    pat = row_patterns(spec.design)
    beta, X, tot, idx, z, mu = _eta_parts(spec, post)
    return _fused_logit(beta, X, tot, idx, z, mu, pat.cell, pat.y, pat.n, pat.log_binom_const,
                        pat.count.astype(np.float64), store)


def pattern_log_likelihood(spec: ModelSpec, post: xr.Dataset) -> np.ndarray:
    """Log-likelihood of one row of each pattern, shape (chain, draw, n_patterns)."""
    C, D = post.sizes["chain"], post.sizes["draw"]
    if spec.link == "logit":
        return _pointwise(spec, post, True)[0].reshape(C, D, -1)
    return _pattern_ll_numpy(spec, post)


def _pattern_ll_numpy(spec: ModelSpec, post: xr.Dataset) -> np.ndarray:
    """Any link: cell by cell with numpy / scipy, in chunks of draws."""
    from poolwise.posterior import _gather_rows, cell_eta, log_p_q

    pat = row_patterns(spec.design)
    C, D = post.sizes["chain"], post.sizes["draw"]
    out = np.empty((C, D, pat.n_patterns))
    const = pat.log_binom_const
    for a, b, part in _chunks(post, spec.design.n_cells):
        lp, lq = log_p_q(spec.link, cell_eta(spec, part))
        ll = _gather_rows(lp, lq, pat.cell, pat.y, pat.n, const)
        out[:, a:b, :] = ll.reshape(C, b - a, -1)
    return out


def total_log_likelihood(spec: ModelSpec, post: xr.Dataset) -> np.ndarray:
    """The log-likelihood of all data rows, per draw, shape (chain, draw), from the cells
    (equal to the sum of every row's log-likelihood)."""
    from poolwise.posterior import cell_eta, log_p_q

    d = spec.design
    C, D = post.sizes["chain"], post.sizes["draw"]
    if spec.link == "logit":
        return _pointwise(spec, post, False)[1].reshape(C, D)
    y = np.asarray(d.y, dtype=float)
    f = np.asarray(d.n, dtype=float) - y
    out = np.empty((C, D))
    for a, b, part in _chunks(post, d.n_cells):
        lp, lq = log_p_q(spec.link, cell_eta(spec, part))
        # skip zero counts: 0 * -inf would be nan where p is exactly 0 or 1
        tot = np.where(y > 0, lp * y, 0.0).sum(axis=1) + np.where(f > 0, lq * f, 0.0).sum(axis=1)
        out[:, a:b] = tot.reshape(C, b - a)
    pat = row_patterns(d)
    return out + float(np.sum(pat.log_binom_const * pat.count))


def observed_group(spec: ModelSpec) -> xr.Dataset:
    """The ``observed_data`` group: one entry per row pattern, with its count."""
    pat = row_patterns(spec.design)
    coords = {PATTERN_DIM: np.arange(pat.n_patterns)}
    return xr.Dataset(
        {
            "y": (PATTERN_DIM, pat.y),
            "trials": (PATTERN_DIM, pat.n),
            "count": (PATTERN_DIM, pat.count),
            "cell": (PATTERN_DIM, pat.cell),
            "first_row": (PATTERN_DIM, pat.first_row),
        },
        coords=coords,
        attrs={"poolwise_unit": PATTERN_DIM},
    )


def log_likelihood_group(spec: ModelSpec, post: xr.Dataset) -> xr.Dataset:
    """The ``log_likelihood`` group: ``y`` per (chain, draw, pattern)."""
    ll = pattern_log_likelihood(spec, post)
    return xr.Dataset(
        {"y": (("chain", "draw", PATTERN_DIM), ll)},
        coords={"chain": post["chain"].values, "draw": post["draw"].values,
                PATTERN_DIM: np.arange(ll.shape[-1])},
        attrs={"poolwise_unit": PATTERN_DIM},
    )


def expand_rows(fit: Fit) -> xr.DataTree:
    """The fit's DataTree with every per-pattern group repeated to one entry per data row
    (dimension ``obs``, coordinate: the 1-based data row numbers), as ArviZ expects it. Memory:
    rows x draws x 8 bytes for the log-likelihood; meant for small data."""
    from poolwise.errors import SpecError
    from poolwise.plan import _fmt_bytes, available_memory_bytes

    idx, rows = _row_index(fit.spec.design)
    if "log_likelihood" in fit.idata.children:
        ll = fit.idata["log_likelihood"]["y"]
        need = 8 * len(rows) * ll.sizes["chain"] * ll.sizes["draw"]
        avail = available_memory_bytes()
        if avail is not None and need > avail:
            raise SpecError(
                f"the row-level view needs {_fmt_bytes(need)} ({len(rows):,} rows x "
                f"{ll.sizes['chain'] * ll.sizes['draw']:,} draws x 8 bytes) but "
                f"{_fmt_bytes(avail)} is available; use the per-pattern values with their "
                "counts (poolwise.cells.row_loo gives row-level LOO from them)"
            )
    groups: dict[str, xr.Dataset] = {}
    for node in fit.idata.subtree:
        if node is fit.idata:
            continue
        ds = node.to_dataset()
        if PATTERN_DIM not in ds.dims:
            groups[node.path] = ds
            continue
        out = ds.isel({PATTERN_DIM: idx}).rename({PATTERN_DIM: "obs"})
        out = out.drop_vars([v for v in ("count", "cell", "first_row") if v in out.data_vars])
        out = out.drop_vars(PATTERN_DIM, errors="ignore").assign_coords(obs=rows)
        out.attrs = {k: v for k, v in out.attrs.items() if k != "poolwise_unit"}
        groups[node.path] = out
    tree = xr.DataTree.from_dict(groups)
    tree.attrs.update(fit.idata.attrs)
    return tree


# ---- LOO -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PatternLOO:
    """PSIS-LOO per row pattern (each row of a pattern has these values) with the counts."""

    elpd_i: np.ndarray  # (P,)
    p_i: np.ndarray  # (P,)
    pareto_k: np.ndarray  # (P,)
    count: np.ndarray  # (P,)
    n_samples: int
    good_k: float
    warning: bool

    def summary(self) -> tuple[float, float, float]:
        """(elpd, se, p_loo) over the rows, exactly as ArviZ computes them on the rows."""
        c = self.count.astype(float)
        N = float(c.sum())
        elpd = float(np.sum(c * self.elpd_i))
        p = float(np.sum(c * self.p_i))
        if N > 1:
            mean = elpd / N
            var = float(np.sum(c * (self.elpd_i - mean) ** 2)) / (N - 1.0)
            se = math.sqrt(N * var)
        else:
            se = 0.0
        return elpd, se, p


def pattern_loo(fit: Fit) -> PatternLOO:
    """PSIS-LOO (``arviz_stats.loo``) on the pattern-level log-likelihood (the fit's
    ``log_likelihood`` group, or computed from its draws when it has none)."""
    import arviz_stats as azs
    from scipy.special import logsumexp

    from poolwise.errors import SpecError

    if "log_likelihood" in fit.idata.children:
        ll = fit.idata["log_likelihood"]["y"]
    else:  # a deterministic function of the draws and the design: computed when needed
        ll = log_likelihood_group(fit.spec, fit.posterior)["y"]
    if PATTERN_DIM not in ll.dims:
        raise SpecError(
            "this fit stores a per-row log_likelihood (an older format); fit it again"
        )
    pat = row_patterns(fit.spec.design)
    if ll.sizes[PATTERN_DIM] != pat.n_patterns:
        raise SpecError(
            f"the log_likelihood group has {ll.sizes[PATTERN_DIM]} patterns but the design "
            f"has {pat.n_patterns}; the saved fit is inconsistent"
        )
    tree = xr.DataTree.from_dict({
        "posterior": fit.idata["posterior"].to_dataset(),
        "log_likelihood": xr.Dataset({"y": ll}),
    })
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pareto k warnings: reported by the caller instead
        res = azs.loo(tree, pointwise=True)
    v = ll.transpose("chain", "draw", PATTERN_DIM).values.reshape(-1, ll.sizes[PATTERN_DIM])
    lppd = logsumexp(v, axis=0) - math.log(v.shape[0])
    elpd_i = np.asarray(res.elpd_i.values, dtype=float)
    return PatternLOO(
        elpd_i=elpd_i, p_i=lppd - elpd_i, pareto_k=np.asarray(res.pareto_k.values, dtype=float),
        count=pat.count, n_samples=int(res.n_samples), good_k=float(res.good_k),
        warning=bool(res.warning),
    )


def row_loo(fit: Fit) -> ELPDDataLOO:
    """Row-level PSIS-LOO from the pattern-level values: an ``ELPDDataLOO`` whose pointwise
    ``elpd_i`` and ``pareto_k`` have one entry per data row (coordinate ``obs``: the 1-based
    row numbers), and whose elpd, se and p equal ``arviz_stats.loo(expand_rows(fit))``. For
    data counted by a data engine the rows come grouped by entry, each with its entry's first
    row number (the other row numbers are not kept)."""
    from arviz_stats.utils import ELPDDataLOO

    res = pattern_loo(fit)
    idx, obs = _row_index(fit.spec.design)
    elpd, se, p = res.summary()
    elpd_i = xr.DataArray(res.elpd_i[idx], dims=["obs"], coords={"obs": obs})
    k_i = xr.DataArray(res.pareto_k[idx], dims=["obs"], coords={"obs": obs})
    return ELPDDataLOO(
        elpd=elpd, se=se, p=p, n_samples=res.n_samples, n_data_points=len(obs), scale="log",
        warning=res.warning, good_k=res.good_k, elpd_i=elpd_i, pareto_k=k_i,
        approx_posterior=False,
    )
