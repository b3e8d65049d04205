"""ModelSpec: the design plus family, link, priors and the parameterization of each term."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from poolwise import families, links
from poolwise.design import Design, GroupDesign, build_design
from poolwise.errors import SpecError
from poolwise.formula import Formula
from poolwise.priors import Prior, Priors

__all__ = [
    "ModelSpec",
    "TermSpec",
    "build_model",
    "Pooling",
    "Link",
    "Parameterization",
    "resolve_parameterization",
    "level_information",
    "sd_prior_range",
]

Pooling = Literal["partial", "none", "complete"]
Link = Literal["logit", "probit", "cloglog"]  # for type checkers; the registry: poolwise.links
Parameterization = Literal["centered", "noncentered", "auto"]

POOLINGS: tuple[str, ...] = ("partial", "none", "complete")
LINKS: tuple[str, ...] = links.names()
PARAMETERIZATIONS: tuple[str, ...] = ("centered", "noncentered", "auto")


@dataclass(frozen=True, eq=False)
class TermSpec:
    """One group term with its priors and its (resolved) parameterization.

    ``centered[j]`` says whether level j is sampled as its natural effect (centered) or as a
    standard normal (non-centered); ``requested`` is what the user asked for.
    """

    group: GroupDesign
    sd_priors: tuple[Prior, ...]  # estimated SDs (partial pooling); empty when fixed
    sd_fixed: tuple[float, ...]  # fixed prior SDs (no pooling); empty when estimated
    correlated: bool
    lkj_eta: float
    mu_index: tuple[int, ...]  # fixed coefficient that is each varying coef's mean, or -1
    requested: Parameterization
    centered: np.ndarray  # (n_levels,) bool

    @property
    def name(self) -> str:
        return self.group.name

    @property
    def estimated(self) -> bool:
        return not self.sd_fixed

    @property
    def parameterization(self) -> str:
        """'centered', 'noncentered', or 'mixed (k of L centered)'."""
        k = int(self.centered.sum())
        if k == len(self.centered):
            return "centered"
        if k == 0:
            return "noncentered"
        return f"mixed ({k} of {len(self.centered)} levels centered)"


@dataclass(frozen=True, eq=False)
class ModelSpec:
    """Everything that defines the posterior. Vary it with ``dataclasses.replace``."""

    design: Design
    pooling: Pooling
    link: Link
    priors: Priors
    fixed_priors: tuple[Prior, ...]
    terms: tuple[TermSpec, ...]

    @property
    def formula(self) -> Formula:
        return self.design.formula

    def parameterization_by_term(self) -> dict[str, str]:
        return {t.name: t.parameterization for t in self.terms}

    def with_parameterization(self, choice: dict[str, Parameterization] | Parameterization) -> ModelSpec:
        from dataclasses import replace

        terms = []
        for t in self.terms:
            req = choice if isinstance(choice, str) else choice.get(t.name, t.requested)
            terms.append(
                replace(t, requested=req, centered=resolve_parameterization(
                    t, req, self.design, link=self.link))
            )
        return replace(self, terms=tuple(terms))


#: quantiles of a group SD that stand for "the plausible range" in the ``auto`` rule
AUTO_SD_QUANTILES = (0.05, 0.95)


def level_information(
    term: TermSpec, design: Design, cell_p: np.ndarray | None = None, *, link: str = "logit"
) -> np.ndarray:
    """Fisher information that the data carry about each level's effects, shape (L, C):
    ``I_jc = sum over the level's cells of w_i Z_ic**2`` with the binomial Fisher weight of
    the link, ``w_i = n_i (dp/deta)^2 / (p_i (1 - p_i))`` (:meth:`poolwise.links.LinkSpec.
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
    and ``[s_lo, s_hi]`` the plausible range of that coefficient's SD (``sd_range``, shape (C, 2): the 5% and 95%
    posterior quantiles from a pilot run; default: the same quantiles of the SD's *prior*),
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
    level non-centered, the safe default. :func:`poolwise.repair.choose_parameterization`
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


def build_model(
    formula: str | Formula,
    data: Any,
    *,
    pooling: Pooling = "partial",
    link: Link = "logit",
    priors: Priors | None = None,
    parameterization: Parameterization | dict[str, Parameterization] = "auto",
    success: Any = None,
    drop_missing: bool = False,
    standardize: bool = True,
    reference: Mapping[str, Any] | None = None,
) -> ModelSpec:
    """Bind ``formula`` to ``data`` and fix family, link, priors and parameterization.

    ``standardize`` and ``reference``: see :func:`poolwise.design.build_design` (numeric
    predictors are scaled and the fixed columns centered for sampling, results reported on the
    original scale; ``reference={"col": level}`` picks a categorical's reference level).
    """
    if pooling not in POOLINGS:
        raise SpecError(f"pooling must be one of {', '.join(POOLINGS)}; got {pooling!r}")
    links.get(link)  # SpecError for an unknown link
    priors = priors or Priors()
    design = build_design(
        formula, data, pooling=pooling, success=success, drop_missing=drop_missing,
        standardize=standardize, reference=reference,
    )
    fixed_priors = tuple(
        priors.intercept if name == "Intercept" else priors.b for name in design.fixed_names
    )
    terms: list[TermSpec] = []
    for g in design.groups:
        mu_index = tuple(
            design.fixed_names.index(c) if c in design.fixed_names else -1 for c in g.coef_names
        )
        if pooling == "none":
            fixed = tuple(
                priors.unpooled.params[1] if c == "Intercept" else priors.b.params[-1]
                for c in g.coef_names
            )
            sd_priors: tuple[Prior, ...] = ()
            correlated = False
        else:
            fixed = ()
            sd_priors = tuple(priors.sd_for(g.name) for _ in g.coef_names)
            correlated = g.term.correlated and g.n_coefs > 1
        spec = TermSpec(
            group=g,
            sd_priors=sd_priors,
            sd_fixed=fixed,
            correlated=correlated,
            lkj_eta=priors.cor.params[0],
            mu_index=mu_index,
            requested="auto",
            centered=np.zeros(g.n_levels, dtype=bool),
        )
        terms.append(spec)
    for p in fixed_priors + tuple(q for t in terms for q in t.sd_priors):
        families.get(p.family).kernel_words(p.params)  # SpecError: unknown family / parameters
    spec = ModelSpec(
        design=design,
        pooling=pooling,
        link=link,
        priors=priors,
        fixed_priors=fixed_priors,
        terms=tuple(terms),
    )
    return spec.with_parameterization(parameterization)
