"""Posterior summary tables (like the seeds' ``az.summary``): mean, sd, interval, MCSE, ESS and
R-hat of every parameter, on the link or the probability scale."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import xarray as xr

from poolwise.model.describe import priors_by_parameter, scaling_dict
from poolwise.model.naming import INTERCEPT, total_name
from poolwise.model.predictor import inverse_link
from poolwise.textfmt import fmt_rhat, fmt_sig, short_row_names

if TYPE_CHECKING:
    from poolwise.inference.fitted import Fit

__all__ = ["format_summary", "interval_columns", "interval_of", "reuse_summary",
           "summarise_draws", "summary", "summary_text", "table_columns"]

#: the per-level data columns of a summary table: set on the rows of varying intercepts only
LEVEL_COLUMNS = ["n", "successes", "raw_proportion"]


def table_columns(prob: float, kind: str, *, levels: bool = True) -> list[str]:
    """The columns of a summary table, in order, its interval named with its kind and
    probability (:func:`interval_columns`): ``mean``, ``sd``, ``hdi_89_lower``,
    ``hdi_89_upper``, ``mcse_mean``, ``ess_bulk``, ``ess_tail``, ``r_hat`` and, with
    ``levels``, ``n``, ``successes``, ``raw_proportion``."""
    lo, hi = interval_columns(prob, kind)
    numbers = ["mean", "sd", lo, hi, "mcse_mean", "ess_bulk", "ess_tail", "r_hat"]
    return numbers + LEVEL_COLUMNS if levels else numbers


def _labels(name: str, v: xr.DataArray, extra: list[str]) -> list[str]:
    """ArviZ's row labels: ``a``, ``b[x]``, ``c[p, 0]``."""
    if not extra:
        return [name]
    grids = np.meshgrid(*[v[d].values for d in extra], indexing="ij")
    flat = [g.ravel() for g in grids]
    return [f"{name}[{', '.join(str(f[i]) for f in flat)}]" for i in range(len(flat[0]))]


def _known_numbers(names: list[str], known: Any) -> tuple[np.ndarray, ...]:
    out = tuple(np.full(len(names), np.nan) for _ in range(3))
    params = getattr(known, "parameters", ())
    if len(params) and len(known.rhat) == len(params):
        where = {p: i for i, p in enumerate(params)}
        rows = np.array([where.get(n, -1) for n in names], dtype=int)
        hit = rows >= 0
        for dst, src in zip(out, (known.rhat, known.ess_bulk, known.ess_tail), strict=True):
            dst[hit] = np.asarray(src, dtype=float)[rows[hit]]
    return out


def _numbers_table(
    post: xr.Dataset, prob: float, kind: str, known: Any = None, independent: bool = False
) -> pd.DataFrame:
    """The numbers of ``arviz_stats.summary`` (mean, sd, interval, MCSE, ESS, R-hat) for
    every scalar component, computed for all components at once (:mod:`poolwise.
    convergence`; equal to ArviZ's table to 1e-10, tested). One difference, on purpose: the
    tail ESS is taken at the 5% and 95% quantiles, as the diagnostics take it
    (``TAIL_PROB``), where ArviZ's table uses its interval probability (11% and 89%), so
    that the table and the verdict show the same number.

    ``known``: a :class:`poolwise.inference.diagnostics.Diagnosis` of the same draws, whose R-hat
    and
    ESS are reused for the components it names with finite numbers (the others, e.g.
    constant draws, which the diagnosis marks undefined, are computed here).

    ``independent``: the draws of ``method="approx"``: the group-level components are exact
    independent draws given the population-level ones (repeated by resampling), so they get
    no R-hat or ESS (NaN); the MCSE of every mean counts those repeats
    (:func:`poolwise.inference.convergence.clustered_mcse`: for a population-level component,
    whose draws within a cluster are one value, the importance sampling's variance plus the
    resampling's, where the chain-based MCSE took the resampled draws as independent)."""
    from poolwise.inference import convergence as cv
    from poolwise.inference.diagnostics import TAIL_PROB

    names: list[str] = []
    parts: list[dict[str, np.ndarray]] = []
    skip: list[np.ndarray] = []  # components that get no R-hat or ESS
    clusters = _draw_clusters(post) if independent else None
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        for name, v, extra, start, x in cv.component_blocks(post):
            k = x.shape[0]
            if start == 0:
                labels = _labels(name, v, extra)
            names.extend(labels[start:start + k])
            grouped = clusters is not None and bool(extra)
            parts.append(cv.table_numbers(x, prob, kind, clusters))
            skip.append(np.full(k, grouped))
        lo, hi = interval_columns(prob, kind)
        table = {name: np.concatenate([p[c] for p in parts]) if parts else np.zeros(0)
                 for c, name in (("mean", "mean"), ("sd", "sd"), ("lower", lo),
                                 ("upper", hi), ("mcse_mean", "mcse_mean"))}
        rhat, ess_b, ess_t = _known_numbers(names, known)
        skipped = np.concatenate(skip) if skip else np.zeros(0, dtype=bool)
        todo = np.flatnonzero(~(np.isfinite(rhat) & np.isfinite(ess_b) & np.isfinite(ess_t))
                              & ~skipped)
        if len(todo):  # components the diagnosis does not cover: their draws, by block
            done = 0
            for _, _, _, _, x in cv.component_blocks(post):
                k = x.shape[0]
                mine = todo[(todo >= done) & (todo < done + k)]
                if len(mine):
                    r, b, t = cv.diagnostics(x[mine - done], TAIL_PROB)
                    rhat[mine], ess_b[mine], ess_t[mine] = r, b, t
                done += k
        table.update({"ess_bulk": ess_b, "ess_tail": ess_t, "r_hat": rhat})
    cols = table_columns(prob, kind, levels=False)
    return pd.DataFrame(table, index=pd.Index(names, dtype=object))[cols].astype(float)


def independent_draws_note(fit: Fit) -> str | None:
    """What the blank R-hat and ESS of an approximate fit's group effects mean (None for a
    sampler's fit): the note under its summary table, in the terminal and the report."""
    if fit.method != "approx":
        return None
    return ("group effects: exact independent draws given each draw of the fixed effects and "
            "SDs (method approx): no chains to mix, so no R-hat or ESS; their MCSE counts the "
            "draws of those that resampling repeats")


def _draw_clusters(post: xr.Dataset) -> tuple[np.ndarray, int]:
    """The draws that share their population-level values (:func:`poolwise.inference.
    convergence.draw_clusters`); without population-level variables (no pooling and no
    fixed effect) every draw is its own."""
    from poolwise.inference import convergence as cv

    keys = [v.transpose("chain", "draw").values.reshape(-1, 1)
            for v in post.data_vars.values() if set(v.dims) == {"chain", "draw"}]
    if not keys:
        S = post.sizes["chain"] * post.sizes["draw"]
        return np.arange(S, dtype=np.int64), S
    return cv.draw_clusters(np.hstack(keys))


def summary(
    fit: Fit,
    *,
    prob: float = 0.89,
    kind: Literal["hdi", "eti"] = "hdi",
    scale: Literal["logit", "probability"] = "logit",
) -> pd.DataFrame:
    """One row per parameter: mean, sd, ``prob`` interval, MCSE, bulk/tail ESS, R-hat.

    The interval's columns say its kind and probability (:func:`interval_columns`:
    ``hdi_89_lower``, ``hdi_89_upper``; ``eti_95_...``), as the table's ``attrs`` do
    (``prob``, ``kind``, ``scale``; :func:`interval_of` reads the names back). The rows of
    varying intercepts (``a_<group>[<label>]``) also carry the level's ``n`` (trials),
    ``successes`` and raw proportion, the data its intercept is estimated from; the rows of
    varying slopes (``b_<group>__<x>[<label>]``) leave them empty (how much a level's data
    say about its slope of x depends on how x varies within the level, not on its count,
    and a proportion is no slope).

    Parameters
    ----------
    fit : Fit
        The fit to summarise.
    prob : float, default 0.89
        Probability mass of the intervals, strictly between 0 and 1.
    kind : {"hdi", "eti"}, default "hdi"
        Highest-density (``"hdi"``) or equal-tailed (``"eti"``) intervals.
    scale : {"logit", "probability"}, default "logit"
        ``"probability"`` summarises the intercept and the per-group intercepts after the
        inverse link (the predicted proportion of a group at zero predictors).

    Returns
    -------
    pandas.DataFrame
        The table, indexed by parameter name.

    Raises
    ------
    SpecError
        When ``prob`` is not strictly between 0 and 1.
    """
    if not 0.0 < prob < 1.0:
        from poolwise.errors import SpecError

        raise SpecError(f"prob must lie strictly between 0 and 1; got {prob!r}")
    spec = fit.spec
    post = fit.posterior
    if scale == "probability":
        data = {}
        if "Intercept" in post:
            data["Intercept"] = inverse_link(spec.link, post["Intercept"])
        for term in spec.terms:
            if "Intercept" in term.group.coef_names:
                name = total_name(term, "Intercept")
                data[name] = inverse_link(spec.link, post[name])
        post = xr.Dataset(data)
    df = _numbers_table(post, prob, kind, known=fit.diagnosis if scale == "logit" else None,
                        independent=fit.method == "approx")
    _level_data(df, spec)
    _describe(df, spec, prob, kind, scale)
    return df


def _level_data(df: pd.DataFrame, spec: Any) -> None:
    """``n``, ``successes`` and ``raw_proportion`` of each level on its varying intercept's
    row (``a_<group>[<label>]``); empty on every other row, a varying slope's included."""
    for col in LEVEL_COLUMNS:
        df[col] = np.nan
    keys: list[str] = []
    trials: list[np.ndarray] = []
    succ: list[np.ndarray] = []
    for term in spec.terms:
        g = term.group
        if INTERCEPT in g.coef_names:
            name = total_name(term, INTERCEPT)
            keys.extend(f"{name}[{lab}]" for lab in g.labels)
            trials.append(np.asarray(g.level_trials, dtype=float))
            succ.append(np.asarray(g.level_successes, dtype=float))
    if keys:  # one vectorized lookup, not one .loc per level (10^5 levels)
        pos = df.index.get_indexer(pd.Index(keys))
        hit = pos >= 0
        n_all, s_all = np.concatenate(trials)[hit], np.concatenate(succ)[hit]
        rows = pos[hit]
        for col, vals in (("n", n_all), ("successes", s_all), ("raw_proportion", s_all / n_all)):
            arr = df[col].to_numpy(dtype=float, copy=True)
            arr[rows] = vals
            df[col] = arr


def _describe(df: pd.DataFrame, spec: Any, prob: float, kind: str, scale: str) -> None:
    df.attrs.update({"prob": prob, "kind": kind, "scale": scale})
    df.attrs["priors"] = priors_by_parameter(spec)
    df.attrs["scaling"] = scaling_dict(spec)


def interval_of(table: pd.DataFrame, prefix: str = "") -> tuple[str, str]:
    """The names of ``table``'s interval columns, from the probability and kind its
    ``attrs`` hold (a :func:`summary`, a prediction or comparison table): ``("hdi_89_lower",
    "hdi_89_upper")``; with ``prefix`` those of one model of a comparison's groups table
    (``prefix="partial_p_"``: ``partial_p_hdi_89_lower``, ...)."""
    lo, hi = interval_columns(table.attrs["prob"], table.attrs["kind"])
    return prefix + lo, prefix + hi


def reuse_summary(fit: Fit, table: pd.DataFrame, *, prob: float, kind: str,
                  written: Callable[[str], str] | None = None) -> bool:
    """Keep ``table``, ``summary(fit, prob=prob, kind=kind)`` as a saved ``summary.csv`` holds
    it, as the fit's summary at ``prob`` / ``kind`` (:meth:`Fit.summary`), so that it is not
    computed again: with 10^4-10^5 levels that costs seconds. It is taken only when its
    columns are the summary's at ``prob`` / ``kind`` (:func:`table_columns`; a table written
    before the interval's columns said their kind and probability, with ``lower`` /
    ``upper``, is not: the summary is computed again) and its rows are the posterior's
    components in order (``written``: how a row label was written, e.g. neutralized for a
    CSV); its row labels become the components' names. Returns whether it was taken."""
    if not 0.0 < prob < 1.0 or list(table.columns) != table_columns(prob, kind):
        return False
    names: list[str] = []
    for name, v in fit.posterior.data_vars.items():
        extra = [d for d in v.dims if d not in ("chain", "draw")]
        names.extend(_labels(str(name), v, extra))
    shown = names if written is None else [written(n) for n in names]
    if len(shown) != len(table) or any(a != str(b) for a, b in zip(shown, table.index,
                                                                   strict=True)):
        return False
    out = table.astype(float)
    out.index = pd.Index(names, dtype=object)
    _describe(out, fit.spec, prob, kind, "logit")
    fit._summaries[(float(prob), str(kind), "logit")] = out  # noqa: SLF001 - its cache
    return True


# ---- printed form: significant digits (CSV / JSON keep full precision) ----------------------

#: significant digits per summary column in printed tables (3 for any other column, the
#: interval's included); ``None``: a whole number
DIGITS: dict[str, int | None] = {
    "mean": 3, "sd": 3, "mcse_mean": 2, "mcse_sd": 2,
    "ess_bulk": None, "ess_tail": None, "n": None, "successes": None, "raw_proportion": 3,
}




def format_summary(df: pd.DataFrame, digits: dict[str, int | None] | None = None) -> pd.DataFrame:
    """The summary table as text for people: significant digits per column (``DIGITS``;
    R-hat with 3 decimals), missing values blank."""
    rules = dict(DIGITS)
    rules.update(digits or {})
    out = pd.DataFrame(index=df.index)
    for c in df.columns:
        if c == "r_hat":
            out[c] = [fmt_rhat(v) for v in df[c]]
        else:
            out[c] = [fmt_sig(v, rules.get(c, 3)) for v in df[c]]
    return out




def summary_text(df: pd.DataFrame, prob: float, kind: str) -> str:
    """The summary as the CLI prints it: the columns of ``summary.csv`` under the same names
    (``hdi_89_lower``, ...; ``successes`` left out), estimates to 3 significant digits, MCSE
    to 2, ESS and counts as whole numbers, R-hat to 3 decimals, and labels longer than
    :data:`~poolwise.textfmt.MAX_LABEL` characters shortened (``short_row_names``; the file
    keeps them whole)."""
    cols = [c for c in table_columns(prob, kind) if c != "successes"]
    show = format_summary(df[[c for c in cols if c in df.columns]])
    show.index = pd.Index(short_row_names(show.index), dtype=object)
    with pd.option_context("display.max_rows", 500, "display.width", 160):
        return show.to_string()


# ---- draws of any quantity -------------------------------------------------------------------


def interval_columns(prob: float, kind: str) -> tuple[str, str]:
    """The names of an interval's columns, saying their kind and probability:
    ``hdi_89_lower``, ``hdi_89_upper`` (``eti_95_...``, ``hdi_89.5_...``)."""
    pct = f"{100 * prob:.10g}"
    return f"{kind}_{pct}_lower", f"{kind}_{pct}_upper"


def summarise_draws(draws: np.ndarray, prob: float, kind: str) -> dict[str, np.ndarray]:
    """Posterior mean, SD and interval of each column of ``draws`` (S, k)."""
    from arviz_stats.base import array_stats

    fn = array_stats.hdi if kind == "hdi" else array_stats.eti
    iv = np.asarray(fn(draws, prob, axis=0)).reshape(-1, 2)
    lo, hi = interval_columns(prob, kind)
    return {"estimate": draws.mean(axis=0), "sd": draws.std(axis=0, ddof=1),
            lo: iv[:, 0], hi: iv[:, 1]}
