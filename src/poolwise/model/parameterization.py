"""Deciding the parameterization of every group term: centered or non-centered, per level.

The one module that decides it. :func:`resolve_parameterization` is the rule (from the Fisher
information of each level, :func:`level_information`, and the plausible range of the group
SD); :func:`choose_parameterization` feeds it the SD ranges (from the data, a pilot run or
the prior) and predicts the funnel left over (:func:`funnel_severity`) and so the
target_accept (:func:`recommend_target_accept`). :meth:`poolwise.model.ModelSpec.
with_parameterization` and the repair loop (:mod:`poolwise.inference.repair`) call in here.

The pilot run that feeds it, :func:`poolwise.inference.pilot.choose_parameterization`, samples
the model, so it lives in the inference layer; this module holds the rule alone.

Choosing the parameterization, and repairing a fit whose diagnostics fail.

``parameterization="auto"`` (:func:`choose_parameterization`): where the data decide the SD's
range (many levels, each with plenty of rows: :func:`data_sd_range`, a method-of-moments
estimate) no pilot runs; otherwise a short pilot run (every level
non-centered, 300 tuning + 300 draws per chain at target_accept 0.9, no log-likelihood, no
diagnostics) estimates the 5%-95% range ``[s_lo, s_hi]`` of every group SD and each cell's
success probability; :func:`poolwise.model.resolve_parameterization` then centers exactly the
levels whose data outweigh the group prior across that range (``I_j * s_lo**2 > 1``). What is
left is measured by the *funnel severity* of each level: how much its conditional posterior
scale changes as the SD moves across its range,

* centered level: ``sqrt((I + 1/s_lo**2) / (I + 1/s_hi**2))`` (the funnel);
* non-centered level: ``sqrt((1 + s_hi**2 I) / (1 + s_lo**2 I))`` (the inverted funnel).

One step size cannot serve scales that differ by more than a few times; when the worst level's
severity exceeds 3.2 and the user did not set ``target_accept``, the first attempt already uses
0.95, and above 7 it uses 0.99 (:data:`SEVERITY_LADDER`, calibrated on the suite of
``bench/target_accept_suite.py``). Correlated terms (always non-centered) get their SD range
from the pilot too: with the prior's range the correlated-slopes model of the bangladesh data
had a severity of 15 and got 0.99, while 0.8 gave 0 divergences in 10 of 10 seeds (pilot
severity 2.2). On the seed's three districts the
SD ranges over 0.05-2, so every district is non-centered and district 1 (117 women) keeps a
severity of 9-10: non-centered, the three districts have no divergences at 0.95 and at 0.99,
but at 0.95 half the seeds miss R-hat <= 1.01 or ESS >= 400 and need a second attempt, at 0.99
one in eight (``bench/repair_bench.py --part ta``). On all 60 districts the range is
0.38-0.68; the 26-28 districts with more than ~30 women are centered and the severity is
below 1.5, so the default 0.8 stays.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from poolwise.errors import SpecError
from poolwise.model import families, links

if TYPE_CHECKING:
    from poolwise.data.design import Design
    from poolwise.model.spec import ModelSpec, TermSpec

__all__ = [
    "AUTO_SD_QUANTILES",
    "AutoChoice",
    "PARAMETERIZATIONS",
    "SEVERITY_LADDER",
    "SEVERITY_RAISE",
    "TermChoice",
    "data_sd_range",
    "funnel_severity",
    "level_information",
    "recommend_target_accept",
    "resolve_parameterization",
    "sd_prior_range",
]

PARAMETERIZATIONS: tuple[str, ...] = ("centered", "noncentered", "auto")


#: quantiles of a group SD that stand for "the plausible range" in the ``auto`` rule
AUTO_SD_QUANTILES = (0.05, 0.95)


def level_information(
    term: TermSpec, design: Design, cell_p: np.ndarray | None = None, *, link: str = "logit"
) -> np.ndarray:
    """Fisher information that the data carry about each level's effects, shape (L, C):
    ``I_jc = sum over the level's cells of w_i Z_ic**2`` with the binomial Fisher weight of
    the link, ``w_i = n_i (dp/deta)^2 / (p_i (1 - p_i))`` (:meth:`poolwise.model.links.LinkSpec.
    fisher_weight`; ``n_i p_i (1 - p_i)`` for the logit), on the scale of the linear predictor
    (with ``Z`` as the engine samples it, so SDs are on the engine's scale too).

    ``cell_p``: each cell's success probability (e.g. from a pilot run's posterior mean);
    default: the pooled proportion, clipped to [0.02, 0.98], for every cell.
    """
    g = term.group
    lk = links.get(link)
    if cell_p is None:
        p = float(np.clip(design.y.sum() / max(design.n.sum(), 1.0), 0.02, 0.98))
        w = lk.fisher_weight(design.n, lk.link(np.full(len(design.n), p)))
    else:
        cp = np.clip(np.asarray(cell_p, dtype=float), 1e-6, 1.0 - 1e-6)
        w = lk.fisher_weight(design.n, lk.link(cp))
    # the engine's scale (predictors of varying slopes may be rescaled for sampling)
    Z = np.asarray(getattr(g, "Z_engine", g.Z), dtype=float).reshape(len(g.codes), g.n_coefs)
    info = np.zeros((g.n_levels, g.n_coefs))
    for c in range(g.n_coefs):
        info[:, c] = np.bincount(g.codes, weights=w * Z[:, c] ** 2, minlength=g.n_levels)
    return info


def sd_prior_range(term: TermSpec, q: tuple[float, float] = AUTO_SD_QUANTILES) -> np.ndarray:
    """The ``q`` quantiles of each group SD under its prior, shape (C, 2); a fixed SD (no
    pooling) gives its value twice."""
    if term.sd_fixed:
        return np.array([[s, s] for s in term.sd_fixed], dtype=float)
    u = np.asarray(q, dtype=float)
    return np.array([families.get(p.family).ppf(p.params, u) for p in term.sd_priors],
                    dtype=float)


def resolve_parameterization(
    term: TermSpec,
    requested: str,
    design: Design,
    *,
    sd_range: np.ndarray | None = None,
    cell_p: np.ndarray | None = None,
    link: str = "logit",
) -> np.ndarray:
    """Per-level centering flags (True: centered, False: non-centered).

    ``"centered"`` / ``"noncentered"``: every level alike. Correlated terms are always
    non-centered (the centered multivariate form is not implemented).

    ``"auto"`` decides level by level from how strongly the data inform the level compared
    with the group SD. With ``I_jc`` the Fisher information of level j's coefficient c
    (:func:`level_information`: ``n_j p (1 - p)`` for an intercept and the logit ``link``)
    and ``[s_lo, s_hi]`` the plausible range of that coefficient's SD (``sd_range``, shape
    (C, 2): the 5% and 95% posterior quantiles from a pilot run; default: the same quantiles
    of the SD's *prior*),
    a level is **centered when** ``I_jc * s_lo**2 > 1`` **for every coefficient**, i.e. when
    the data outweigh the group prior even at the small end of the SD's range (the
    likelihood's variance ``1 / I`` is below ``s_lo**2``); otherwise it is non-centered.

    Why the *low* end: a centered level whose data do not dominate when the SD is small is
    the funnel of Neal / Betancourt & Girolami (divergences, biased SD); a non-centered level
    whose data dominate when the SD is large is the "inverted funnel", which costs efficiency
    but rarely validity. So the rule centers only levels that are safe across the whole range
    and leaves the rest non-centered. With few groups the SD's range reaches near 0 and every
    level is non-centered (the seed's three districts); with 60 districts the range is narrow
    and the data-rich districts are centered (about 26 of 60 in the bangladesh data, n >~ 30).
    Without a pilot the prior range (e.g. 0.05-3.0 for exponential(1)) makes almost every
    level non-centered, the safe default. :func:`choose_parameterization`
    runs the pilot and also predicts how much funnel is left (and so the target_accept).
    A fixed SD (``pooling="none"``) has no range: centered when ``I_jc * sd**2 > 1``.
    """
    L = term.group.n_levels
    if requested not in PARAMETERIZATIONS:
        raise SpecError(
            f"parameterization must be one of {', '.join(PARAMETERIZATIONS)}; got {requested!r}"
        )
    if term.correlated:
        if requested == "centered":
            raise SpecError(
                f"the correlated term {term.group.term} can only be non-centered; use "
                "parameterization='noncentered' or write the term with '||'"
            )
        return np.zeros(L, dtype=bool)
    if requested == "centered":
        return np.ones(L, dtype=bool)
    if requested == "noncentered":
        return np.zeros(L, dtype=bool)
    info = level_information(term, design, cell_p, link=link)
    rng = sd_prior_range(term) if sd_range is None or term.sd_fixed else np.asarray(sd_range)
    s_lo = np.asarray(rng, dtype=float).reshape(term.group.n_coefs, 2)[:, 0]
    return np.all(info * s_lo[None, :] ** 2 > 1.0, axis=1)


#: worst-level funnel severity above which one step size cannot serve the whole SD range
SEVERITY_RAISE = 3.2
#: (severity above which, target_accept to use), most severe first. Calibrated on the suite
#: of ``bench/target_accept_suite.py`` (bench/README.md): the lowest target_accept with 0
#: divergences in >= 95% of 10 seeds was 0.8 at pilot severities up to 2.34, 0.95 at
#: 4.45-5.64 (six districts; twelve districts at the same severities needed only 0.9, so 0.9
#: cannot be told apart by the severity and is not used) and 0.99 from 8.66 on (three
#: districts). The thresholds are the geometric midpoints of the gaps: sqrt(2.34 * 4.45) = 3.2
#: and sqrt(5.64 * 8.66) = 7.0.
SEVERITY_LADDER = ((7.0, 0.99), (SEVERITY_RAISE, 0.95))
#: quantiles of a group SD that stand for its plausible range
SD_QUANTILES = (0.05, 0.95)


@dataclass(frozen=True)
class TermChoice:
    """What the ``auto`` rule decided for one group term, and why."""

    term: str
    sd_range: tuple[tuple[float, float], ...]  # per coefficient: (s_lo, s_hi)
    source: str  # "pilot", "data", "prior", "fixed SD" or "attempt N"
    n_centered: int
    n_levels: int
    severity: float
    worst_level: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "term": self.term, "sd_range": [list(map(_r, r)) for r in self.sd_range],
            "source": self.source, "n_centered": self.n_centered, "n_levels": self.n_levels,
            "severity": _r(self.severity), "worst_level": self.worst_level,
        }

    def describe(self) -> str:
        rng = ", ".join(f"{lo:.2g}-{hi:.2g}" for lo, hi in self.sd_range)
        return (
            f"({self.term}): {self.n_centered} of {self.n_levels} levels centered; SD range "
            f"{rng} ({self.source}); funnel severity {self.severity:.1f} (level "
            f"{self.worst_level})"
        )


@dataclass(frozen=True)
class AutoChoice:
    """The result of :func:`choose_parameterization`."""

    terms: tuple[TermChoice, ...]
    target_accept: float | None  # recommended; None: no reason to leave the default
    pilot_seconds: float

    @property
    def severity(self) -> float:
        return max((t.severity for t in self.terms), default=1.0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "terms": [t.to_dict() for t in self.terms],
            "recommended_target_accept": self.target_accept,
            "pilot_seconds": _r(self.pilot_seconds),
        }


def _r(v: float | None) -> float | None:
    if v is None:
        return None
    v = float(v)
    return round(v, 6) if math.isfinite(v) else None


def funnel_severity(info: np.ndarray, centered: np.ndarray, sd_range: np.ndarray) -> np.ndarray:
    """Per level: the factor by which its conditional posterior scale changes as the group SD
    moves across ``sd_range`` (shape (C, 2)), under the parameterization ``centered``; the
    worst coefficient counts. 1 means no funnel at all."""
    info = np.asarray(info, dtype=float)
    rng = np.asarray(sd_range, dtype=float).reshape(info.shape[1], 2)
    lo, hi = np.maximum(rng[:, 0], 1e-12), np.maximum(rng[:, 1], 1e-12)
    cen = np.sqrt((info + 1.0 / lo**2) / (info + 1.0 / hi**2))
    non = np.sqrt((1.0 + hi**2 * info) / (1.0 + lo**2 * info))
    ratio = np.where(np.asarray(centered, dtype=bool)[:, None], cen, non)
    return ratio.max(axis=1)








def _term_choice(spec: ModelSpec, t_index: int, sd_range: np.ndarray, source: str,
                 cell_p: np.ndarray | None, flags: np.ndarray) -> TermChoice:
    t = spec.terms[t_index]
    info = level_information(t, spec.design, cell_p, link=spec.link)
    sev = funnel_severity(info, flags, sd_range)
    worst = int(np.argmax(sev)) if sev.size else 0
    rng = tuple((float(lo), float(hi)) for lo, hi in np.asarray(sd_range).reshape(-1, 2))
    return TermChoice(
        term=t.name, sd_range=rng, source=source, n_centered=int(np.sum(flags)),
        n_levels=t.group.n_levels, severity=float(sev.max()) if sev.size else 1.0,
        worst_level=str(t.group.labels[worst]) if t.group.n_levels else "",
    )


def recommend_target_accept(severity: float) -> float | None:
    """The target_accept for a remaining funnel of this severity (None: keep the default)."""
    for above, ta in SEVERITY_LADDER:
        if severity > above:
            return ta
    return None




#: the SD range is taken from the data, without a pilot, only with at least this many levels
DATA_RANGE_MIN_LEVELS = 30
#: ... and when the data pin the SD down to within this factor (s_hi / s_lo)
DATA_RANGE_MAX_RATIO = 2.0


def data_sd_range(spec: ModelSpec, t_index: int) -> np.ndarray | None:
    """The plausible range of a group SD read off the data, or None where the data do not
    decide it (then the pilot does).

    For the one intercept-only group term of a logit model with at least
    :data:`DATA_RANGE_MIN_LEVELS` levels: each level's empirical log-odds
    ``e_j = log((s_j + 1/2) / (f_j + 1/2))`` with sampling variance
    ``v_j = 1/(s_j + 1/2) + 1/(f_j + 1/2)``; the between-level variance is the variance of the
    residuals of ``e_j`` on the levels' mean fixed-effect columns (so group-level predictors do
    not count as spread) minus the mean ``v_j`` (the method of moments, DerSimonian & Laird),
    with standard error ``sqrt(2 / (L - 1)) (tau^2 + mean v)``. The range is ``tau^2 +- 2 SE``;
    the data decide when its low end is above 0 and ``s_hi / s_lo <=``
    :data:`DATA_RANGE_MAX_RATIO` (many levels, each with plenty of rows: say 200 groups of 100
    rows). Sparse levels (the seed's districts with 2-10 women) make ``mean v`` large and
    leave the decision to the pilot.
    """
    t = spec.terms[t_index]
    g = t.group
    if (len(spec.terms) != 1 or spec.link != "logit" or not t.estimated or t.correlated
            or tuple(g.coef_names) != ("Intercept",) or g.n_levels < DATA_RANGE_MIN_LEVELS):
        return None
    d = spec.design
    s = np.asarray(g.level_successes, dtype=float)
    n = np.asarray(g.level_trials, dtype=float)
    f = n - s
    e = np.log((s + 0.5) / (f + 0.5))
    v = 1.0 / (s + 0.5) + 1.0 / (f + 0.5)
    L = g.n_levels
    X = np.asarray(d.X, dtype=float)
    if X.shape[1]:
        # each level's mean of every fixed column (weighted by trials)
        xbar = np.column_stack([
            np.bincount(g.codes, weights=d.n * X[:, k], minlength=L) / np.maximum(n, 1e-300)
            for k in range(X.shape[1])
        ])
        if "Intercept" not in d.fixed_names:
            xbar = np.column_stack([np.ones(L), xbar])
        coef, *_ = np.linalg.lstsq(xbar, e, rcond=None)
        rank = int(np.linalg.matrix_rank(xbar))
        resid = e - xbar @ coef
    else:
        rank, resid = 1, e - e.mean()
    if L - rank < DATA_RANGE_MIN_LEVELS:
        return None
    total = float(resid @ resid) / (L - rank)
    mv = float(v.mean())
    tau2 = total - mv
    se = math.sqrt(2.0 / (L - 1)) * (max(tau2, 0.0) + mv)
    lo2, hi2 = tau2 - 2.0 * se, tau2 + 2.0 * se
    if not (math.isfinite(lo2) and lo2 > 0.0) or math.sqrt(hi2 / lo2) > DATA_RANGE_MAX_RATIO:
        return None
    return np.array([[math.sqrt(lo2), math.sqrt(hi2)]])








