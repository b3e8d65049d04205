"""ModelSpec: the design plus family, link, priors and the parameterization of each term."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

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
]

Pooling = Literal["partial", "none", "complete"]
Link = Literal["logit", "probit", "cloglog"]
Parameterization = Literal["centered", "noncentered", "auto"]

POOLINGS: tuple[str, ...] = ("partial", "none", "complete")
LINKS: tuple[str, ...] = ("logit", "probit", "cloglog")
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
                replace(t, requested=req, centered=resolve_parameterization(t, req, self.design))
            )
        return replace(self, terms=tuple(terms))


def resolve_parameterization(term: TermSpec, requested: str, design: Design) -> np.ndarray:
    """Per-level centering flags.

    ``auto``: a level is centered when the data inform its effect more than the prior does,
    i.e. when its Fisher information ``n_j p (1 - p)`` (p: the pooled proportion) times the
    prior scale of the group SD squared exceeds 1; sparse levels are non-centered. Correlated
    terms are always non-centered (the centered multivariate form is not implemented).
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
    p = float(np.clip(design.y.sum() / max(design.n.sum(), 1.0), 0.02, 0.98))
    info = term.group.level_trials * p * (1 - p)
    scale = term.sd_fixed[0] if term.sd_fixed else _prior_scale(term.sd_priors[0])
    return info * scale**2 > 1.0


def _prior_scale(p: Prior) -> float:
    if p.family == "exponential":
        return 1.0 / p.params[0]
    if p.family == "half_normal":
        return p.params[0] * 0.8
    if p.family == "half_student_t":
        return p.params[1]
    return 1.0


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
) -> ModelSpec:
    """Bind ``formula`` to ``data`` and fix family, link, priors and parameterization."""
    if pooling not in POOLINGS:
        raise SpecError(f"pooling must be one of {', '.join(POOLINGS)}; got {pooling!r}")
    if link not in LINKS:
        raise SpecError(f"link must be one of {', '.join(LINKS)}; got {link!r}")
    priors = priors or Priors()
    design = build_design(
        formula, data, pooling=pooling, success=success, drop_missing=drop_missing
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
    spec = ModelSpec(
        design=design,
        pooling=pooling,
        link=link,
        priors=priors,
        fixed_priors=fixed_priors,
        terms=tuple(terms),
    )
    return spec.with_parameterization(parameterization)
