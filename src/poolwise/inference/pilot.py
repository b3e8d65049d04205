"""The pilot run behind ``parameterization="auto"``: a short non-centered run that estimates
the plausible range of every group SD, from which the rule of
:mod:`poolwise.model.parameterization` centers the data-rich levels.

See :mod:`poolwise.model.parameterization` for the rule and its calibration.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from poolwise.engine.layout import pack
from poolwise.engine.sampler import check_complete, run_nuts
from poolwise.model.naming import sd_name
from poolwise.model.parameterization import (
    SD_QUANTILES,
    AutoChoice,
    _term_choice,
    data_sd_range,
    recommend_target_accept,
    resolve_parameterization,
    sd_prior_range,
)
from poolwise.model.predictor import inverse_link, linear_predictor
from poolwise.model.scale import to_original_scale
from poolwise.progress import phase

if TYPE_CHECKING:
    from poolwise.engine.sampler import SamplerConfig
    from poolwise.model.spec import ModelSpec

__all__ = ["choose_parameterization", "inverse_p"]

#: the pilot of parameterization="auto"
PILOT_TUNE = 300


PILOT_DRAWS = 300


PILOT_TARGET_ACCEPT = 0.9


def _sd_draws(post: Any, term: Any) -> list[np.ndarray]:
    return [np.asarray(post[sd_name(term, c)].values, dtype=float).ravel()
            for c in term.group.coef_names]


def _sd_range_from(post: Any, term: Any) -> np.ndarray:
    rows = []
    for x in _sd_draws(post, term):
        x = x[np.isfinite(x)]
        rows.append(np.quantile(x, SD_QUANTILES) if x.size else [np.nan, np.nan])
    return np.array(rows, dtype=float)


def _cell_p(spec: ModelSpec, post: Any) -> np.ndarray:
    eta = linear_predictor(spec, to_original_scale(spec, post))
    return np.asarray(inverse_link(spec.link, eta), dtype=float).mean(axis=0)


def choose_parameterization(
    spec: ModelSpec, config: SamplerConfig, *, pilot: bool = True
) -> tuple[ModelSpec, AutoChoice]:
    """Resolve every term whose requested parameterization is ``"auto"``.

    A term whose SD range the data decide (:func:`data_sd_range`) needs no pilot. For the
    others, with ``pilot`` (and at least one estimated SD among them) a short pilot run
    estimates the SD ranges and the cell probabilities; otherwise the SD priors' 5%-95% ranges
    are used.
    Returns the resolved spec and what was decided (with the recommended target_accept).
    """
    t0 = time.perf_counter()
    auto_idx = [i for i, t in enumerate(spec.terms) if t.requested == "auto"]
    if not auto_idx:
        return spec, AutoChoice((), None, 0.0)
    post = None
    cell_p = None
    # where the data decide the SD's range (many levels, each well informed), no pilot;
    # correlated terms are always non-centered, but their funnel severity (and so the
    # recommended target_accept) needs the SD range of a pilot too: the prior's range (0.05-3
    # for exponential(1)) overstates it several times (bench/README.md, target_accept suite)
    from_data = {i: data_sd_range(spec, i) for i in auto_idx}
    from_data = {i: r for i, r in from_data.items() if r is not None}
    if pilot and any(spec.terms[i].estimated and i not in from_data for i in auto_idx):
        post = _pilot(spec.with_parameterization("noncentered"), config)
        cell_p = _cell_p(spec, post)
    elif from_data:
        # each cell at its level's empirical proportion (the data-decided term is the only one)
        g = spec.terms[next(iter(from_data))].group
        s_, n_ = np.asarray(g.level_successes, float), np.asarray(g.level_trials, float)
        cell_p = ((s_ + 0.5) / (n_ + 1.0))[g.codes]
    terms = list(spec.terms)
    choices = []
    for i in auto_idx:
        t = terms[i]
        if not t.estimated:
            rng, source = sd_prior_range(t), "fixed SD"
        elif post is not None:
            rng, source = _sd_range_from(post, t), "pilot"
        elif i in from_data:
            rng, source = from_data[i], "data"
        else:
            rng, source = sd_prior_range(t, SD_QUANTILES), "prior"
        if not np.isfinite(rng).all():
            rng, source = sd_prior_range(t, SD_QUANTILES), "prior"
        flags = resolve_parameterization(t, "auto", spec.design, sd_range=rng, cell_p=cell_p,
                                         link=spec.link)
        terms[i] = replace(t, centered=flags)
        choices.append((i, rng, source, flags))
    choices = _one_centered_term_per_mean(terms, choices)
    new_spec = replace(spec, terms=tuple(terms))
    picked = tuple(_term_choice(new_spec, i, rng, src, cell_p, fl) for i, rng, src, fl in choices)
    sev = max((c.severity for c in picked), default=1.0)
    return new_spec, AutoChoice(picked, recommend_target_accept(sev), time.perf_counter() - t0)


def _one_centered_term_per_mean(terms: list, choices: list) -> list:
    """Crossed terms that are centered on the same fixed coefficient (say two intercept terms
    ``(1 | a) + (1 | b)``) put that coefficient on a ridge: their centered effects all move
    with it. Keep centered levels in only one of them, the one with the most data per level,
    and make the others non-centered."""
    by_mean: dict[int, list[int]] = {}
    for pos, (i, _rng, _src, flags) in enumerate(choices):
        if flags.any():
            for mi in set(terms[i].mu_index) - {-1}:
                by_mean.setdefault(mi, []).append(pos)
    demote: set[int] = set()
    for positions in by_mean.values():
        if len(positions) > 1:
            def richness(pos: int) -> float:
                g = terms[choices[pos][0]].group
                return float(np.sum(g.level_trials) / max(g.n_levels, 1))

            keep = max(positions, key=richness)
            demote.update(p for p in positions if p != keep)
    out = []
    for pos, (i, rng, src, flags) in enumerate(choices):
        if pos in demote:
            flags = np.zeros_like(flags)
            terms[i] = replace(terms[i], centered=flags)
        out.append((i, rng, src, flags))
    return out


def _pilot(spec: ModelSpec, config: SamplerConfig) -> Any:
    """The short non-centered run. It shows its progress when the fit does (``progress``):
    with many levels it takes minutes too (two crossed terms of 43,000 levels on 100,000 rows:
    80 CPU seconds per chain, about 30% of the first attempt; docs/reliability.md R.18)."""
    cfg = replace(
        config, tune=min(PILOT_TUNE, config.tune) or PILOT_TUNE, draws=PILOT_DRAWS,
        target_accept=max(PILOT_TARGET_ACCEPT, config.target_accept),
    )
    with phase("sampling"):
        tree, _ = run_nuts(pack(spec), cfg)
        check_complete(tree, cfg)
    return tree["posterior"].to_dataset()


def inverse_p(spec: ModelSpec, post: Any) -> np.ndarray:
    """Posterior mean success probability of each cell (natural-scale draws)."""
    return np.asarray(inverse_link(spec.link, linear_predictor(spec, post)),
                      dtype=float).mean(axis=0)


def _engine_scale_range(post: Any, term: Any) -> np.ndarray:
    """SD range on the engine's scale (slopes' SDs are reported divided by the column scale)."""
    rng = _sd_range_from(post, term)
    zs = getattr(term.group, "z_scale", None)
    if zs is not None:
        rng = rng * np.asarray(zs, dtype=float)[:, None]
    return rng
