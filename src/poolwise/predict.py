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
(poolwise reports every coefficient on that scale, whatever it standardized for sampling).
Numeric predictors must be numeric; a categorical predictor's value must be its reference
level or one of the levels the model has a coefficient for; any other value is an error.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from poolwise.engine.layout import fixed_name, sd_name, total_name
from poolwise.errors import DataError, SpecError
from poolwise.posterior import _draws, inverse_link

if TYPE_CHECKING:
    from poolwise.fit import Fit
    from poolwise.model import TermSpec

__all__ = ["predict", "predict_draws", "NewGroups"]

NewGroups = Literal["population", "sample"]


def _frame(new_data: Any) -> pd.DataFrame:
    if isinstance(new_data, pd.DataFrame):
        return new_data.reset_index(drop=True)
    if hasattr(new_data, "to_pandas"):  # polars
        return new_data.to_pandas()
    if isinstance(new_data, dict):
        return pd.DataFrame(new_data)
    from poolwise.data import Table, read_table

    table = new_data if isinstance(new_data, Table) else read_table(new_data)
    return table.frame.reset_index(drop=True)


def _numeric_vars(fit: Fit) -> set[str]:
    """Predictors the model treats as numeric: those whose bare name is part of a coefficient
    name (categorical predictors appear as ``<var><level>``)."""
    d = fit.spec.design
    names = list(d.fixed_names) + [c for g in d.groups for c in g.coef_names]
    parts = {p for nm in names for p in nm.split(":")}
    return {v for v in d.formula.predictors if v in parts}


def _columns(
    variables: tuple[str, ...], frame: pd.DataFrame, numeric: set[str], known: set[str],
    reference: dict[str, Any],
) -> tuple[list[str], np.ndarray]:
    """Columns of one (interaction) term for new rows, with poolwise's coefficient names."""
    n = len(frame)
    names: list[str] = [""]
    cols: list[np.ndarray] = [np.ones(n)]
    for var in variables:
        if var in numeric:
            x = pd.to_numeric(frame[var], errors="coerce").to_numpy(dtype=float)
            bad = ~np.isfinite(x)
            if bad.any():
                rows = ", ".join(str(i + 1) for i in np.flatnonzero(bad)[:5])
                raise DataError(
                    f"predictor '{var}' must be numeric and not missing in new_data (rows {rows})"
                )
            names = [f"{nm}:{var}" if nm else var for nm in names]
            cols = [c * x for c in cols]
        else:
            values = frame[var].astype(object).to_numpy()
            levels = sorted({str(v) for v in values}, key=str)
            coded = [lv for lv in levels if any(f"{var}{lv}" in k.split(":") for k in known)]
            uncoded = [lv for lv in levels if lv not in coded]
            if var in reference:
                unknown = [lv for lv in uncoded if lv != str(reference[var])]
                if unknown:
                    raise DataError(
                        f"predictor '{var}' has value(s) {', '.join(map(repr, unknown))} in "
                        "new_data that the model was not fitted with; known levels: "
                        f"{str(reference[var])!r} (reference) and "
                        + ", ".join(repr(k[len(var):]) for k in sorted(known) if k.startswith(var))
                    )
            elif len(uncoded) > 1:
                raise DataError(
                    f"predictor '{var}' has values {', '.join(map(repr, uncoded))} in new_data "
                    "that "
                    "the model has no coefficient for; at most one of them can be the reference "
                    "level (the others were not in the data the model was fitted to)"
                )
            # the reference level and levels absent from new_data stay 0 (see _design_rows)
            new_names, new_cols = [], []
            sv = np.array([str(v) for v in values], dtype=object)
            for lev in coded:
                ind = (sv == lev).astype(float)
                for nm, c in zip(names, cols, strict=True):
                    new_names.append(f"{nm}:{var}{lev}" if nm else f"{var}{lev}")
                    new_cols.append(c * ind)
            names, cols = new_names, new_cols
    return names, np.column_stack(cols) if cols else np.empty((n, 0))


def _design_rows(
    fit: Fit, frame: pd.DataFrame, wanted: tuple[str, ...], terms: list[Any], intercept: bool
) -> np.ndarray:
    """Matrix with one column per name in ``wanted`` (zeros where a term is absent)."""
    numeric = _numeric_vars(fit)
    known = set(wanted)
    reference = dict(getattr(fit.spec.design, "reference", None) or {})
    out = np.zeros((len(frame), len(wanted)))
    index = {nm: i for i, nm in enumerate(wanted)}
    if intercept and "Intercept" in index:
        out[:, index["Intercept"]] = 1.0
    for term in terms:
        names, cols = _columns(term.variables, frame, numeric, known, reference)
        for nm, col in zip(names, cols.T, strict=True):
            if nm in index:
                out[:, index[nm]] = col
    return out


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


def _new_effects(
    term: TermSpec, post: Any, n_new: int, S: int, rng: np.random.Generator
) -> np.ndarray:
    """Draws (S, n_new, C) of new groups' deviations from the population distribution."""
    C = term.group.n_coefs
    coefs = term.group.coef_names
    if not term.estimated:
        sd = np.broadcast_to(np.asarray(term.sd_fixed, dtype=float), (S, C))
        return rng.standard_normal((S, n_new, C)) * sd[:, None, :]
    sds = np.column_stack([_draws(post, sd_name(term, c)) for c in coefs])  # (S, C)
    z = rng.standard_normal((S, n_new, C))
    if term.correlated and C > 1:
        R = np.broadcast_to(np.eye(C), (S, C, C)).copy()
        for i in range(1, C):
            for j in range(i):
                r = _draws(post, f"cor_{term.name}__{coefs[j]}__{coefs[i]}")
                R[:, i, j] = r
                R[:, j, i] = r
        Lc = np.linalg.cholesky(R)  # (S, C, C)
        z = np.einsum("sij,snj->sni", Lc, z)
    return z * sds[:, None, :]


def predict_draws(
    fit: Fit,
    new_data: Any,
    *,
    new_groups: NewGroups = "population",
    seed: int | None = None,
) -> tuple[np.ndarray, pd.DataFrame]:
    """Posterior draws of the success probability for each row of ``new_data``.

    Returns ``(draws, info)``: draws of shape (chain * draw, rows) and a frame with one
    column ``<group>_status`` per group term ('existing' or 'new'). See the module docstring
    for the semantics; ``seed`` (default: the fit's seed) drives the draws of new groups
    under ``new_groups="sample"``.
    """
    if new_groups not in ("population", "sample"):
        raise SpecError(f"new_groups must be 'population' or 'sample'; got {new_groups!r}")
    spec = fit.spec
    d = spec.design
    frame = _frame(new_data)
    if len(frame) == 0:
        raise DataError("new_data has no rows")
    needed = [c for c in d.formula.predictors] + [
        c for t in spec.terms for c in t.group.term.group
    ]
    missing = [c for c in dict.fromkeys(needed) if c not in frame.columns]
    if missing:
        raise DataError(
            f"new_data lacks the column(s) {', '.join(missing)} that the model uses; "
            f"it has {', '.join(map(str, frame.columns))}"
        )
    post = fit.posterior
    S = post.sizes["chain"] * post.sizes["draw"]
    unpooled = {c for t in spec.terms if not t.estimated for c in t.group.coef_names}
    fixed_terms = [t for t in d.formula.terms if t.name not in unpooled]
    X = _design_rows(fit, frame, d.fixed_names, fixed_terms, d.has_intercept)
    beta = (np.column_stack([_draws(post, fixed_name(c)) for c in d.fixed_names])
            if d.fixed_names else np.zeros((S, 0)))
    eta = beta @ X.T  # (S, rows)
    rng = np.random.default_rng([int((fit.config.seed or 0) if seed is None else seed), 23])
    info = pd.DataFrame(index=frame.index)
    for term in spec.terms:
        g = term.group
        Z = _design_rows(fit, frame, g.coef_names, list(g.term.terms), g.term.intercept)
        keys = _group_key(frame, g.term.group)
        lookup = {
            (lab.item() if hasattr(lab, "item") else lab): j for j, lab in enumerate(g.labels)
        }
        idx = np.array([lookup.get(k, -1) if k is not None else -1 for k in keys])
        info[f"{g.name}_status"] = np.where(idx >= 0, "existing", "new")
        mu = np.column_stack([
            beta[:, mi] if mi >= 0 else np.zeros(S) for mi in term.mu_index
        ])  # (S, C)
        totals = np.stack([_draws(post, total_name(term, c)) for c in g.coef_names], axis=-1)
        dev_known = totals - mu[:, None, :]  # (S, L, C)
        dev = np.zeros((S, len(frame), g.n_coefs))
        known = idx >= 0
        dev[:, known, :] = dev_known[:, idx[known], :]
        if (~known).any():
            new_keys = list(dict.fromkeys(str(k) for k in keys[~known]))
            if new_groups == "sample":
                draws_new = _new_effects(term, post, len(new_keys), S, rng)
                pos = {k: i for i, k in enumerate(new_keys)}
                cols = np.array([pos[str(k)] for k in keys[~known]])
                dev[:, ~known, :] = draws_new[:, cols, :]
            elif not term.estimated:
                raise SpecError(
                    f"the no-pooling model has no population of {g.name} groups, so it cannot "
                    f"predict the unseen {g.name}(s) {', '.join(new_keys[:5])} with "
                    "new_groups='population'; use new_groups='sample' (a draw from the fixed "
                    "prior) or a partial-pooling fit"
                )
            # population: deviation 0, i.e. the population mean
        eta += np.einsum("snc,nc->sn", dev, Z)
    return inverse_link(spec.link, eta), info


def predict(
    fit: Fit,
    new_data: Any,
    *,
    new_groups: NewGroups = "population",
    prob: float = 0.89,
    kind: Literal["hdi", "eti"] = "hdi",
    seed: int | None = None,
) -> pd.DataFrame:
    """Predicted success probability for each row of ``new_data``, with a ``prob`` interval.

    Returns ``new_data``'s model columns plus ``mean``, ``sd``, ``lower``, ``upper`` (on the
    probability scale) and ``<group>_status`` ('existing' or 'new') per group term. See the
    module docstring for what is predicted and how unseen groups are handled.
    """
    from arviz_stats.base import array_stats

    if not 0.0 < prob < 1.0:
        raise SpecError(f"prob must lie strictly between 0 and 1; got {prob!r}")
    if kind not in ("hdi", "eti"):
        raise SpecError(f"kind must be 'hdi' or 'eti'; got {kind!r}")
    draws, info = predict_draws(fit, new_data, new_groups=new_groups, seed=seed)
    frame = _frame(new_data)
    d = fit.spec.design
    cols = [c for c in dict.fromkeys(
        list(d.formula.predictors) + [c for t in fit.spec.terms for c in t.group.term.group]
    )]
    out = frame[cols].copy()
    fn = array_stats.hdi if kind == "hdi" else array_stats.eti
    iv = fn(draws, prob, axis=0)
    out["mean"] = draws.mean(axis=0)
    out["sd"] = draws.std(axis=0, ddof=1)
    out["lower"] = iv[:, 0]
    out["upper"] = iv[:, 1]
    for c in info.columns:
        out[c] = info[c].to_numpy()
    out.attrs.update({"prob": prob, "kind": kind, "new_groups": new_groups, "scale": "probability"})
    return out
