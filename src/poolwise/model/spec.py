"""ModelSpec: the design plus family, link, priors and the parameterization of each term."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from poolwise.data.design import Design, GroupDesign, build_design
from poolwise.errors import SpecError
from poolwise.formula import Formula
from poolwise.model import families, links
from poolwise.model.parameterization import (
    AUTO_SD_QUANTILES,
    PARAMETERIZATIONS,
    level_information,
    resolve_parameterization,
    sd_prior_range,
)
from poolwise.model.priors import Prior, Priors

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
    "AUTO_SD_QUANTILES",
    "PARAMETERIZATIONS",
]

Pooling = Literal["partial", "none", "complete"]
# for type checkers; the registry: poolwise.model.links
Family = Literal["binomial", "beta_binomial"]
FAMILIES: tuple[str, ...] = ("binomial", "beta_binomial")
Link = Literal["logit", "probit", "cloglog"]
Parameterization = Literal["centered", "noncentered", "auto"]

POOLINGS: tuple[str, ...] = ("partial", "none", "complete")
LINKS: tuple[str, ...] = links.names()


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
    #: the outcome's distribution given p: "binomial", or "beta_binomial" (overdispersed
    #: counts, with the precision phi; :mod:`poolwise.engine.density`)
    family: Family = "binomial"

    @property
    def formula(self) -> Formula:
        return self.design.formula

    def parameterization_by_term(self) -> dict[str, str]:
        return {t.name: t.parameterization for t in self.terms}

    def with_parameterization(
        self, choice: dict[str, Parameterization] | Parameterization
    ) -> ModelSpec:
        """The spec with each term's parameterization resolved by
        :func:`poolwise.model.parameterization.resolve_parameterization` (``choice``: one for all
        terms, or per term name)."""
        from dataclasses import replace

        terms = []
        for t in self.terms:
            req = choice if isinstance(choice, str) else choice.get(t.name, t.requested)
            terms.append(
                replace(t, requested=req, centered=resolve_parameterization(
                    t, req, self.design, link=self.link))
            )
        return replace(self, terms=tuple(terms))


def _term_spec(
    g: GroupDesign, fixed_names: tuple[str, ...], pooling: Pooling, priors: Priors
) -> TermSpec:
    """Group term ``g`` with its priors, not yet parameterized: estimated SDs under partial
    pooling, the fixed prior SDs of the unpooled coefficients under no pooling."""
    mu_index = tuple(fixed_names.index(c) if c in fixed_names else -1 for c in g.coef_names)
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
    return TermSpec(
        group=g,
        sd_priors=sd_priors,
        sd_fixed=fixed,
        correlated=correlated,
        lkj_eta=priors.cor.params[0],
        mu_index=mu_index,
        requested="auto",
        centered=np.zeros(g.n_levels, dtype=bool),
    )


def check_family(family: Any) -> None:
    """SpecError (with a did-you-mean) for a family poolwise does not have."""
    if family not in FAMILIES:
        import difflib

        close = difflib.get_close_matches(str(family), FAMILIES, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise SpecError(f"family must be one of {', '.join(FAMILIES)}; got {family!r}{hint}")


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
    offset: Any = None,
    family: Family = "binomial",
    weights: str | None = None,
    weights_kind: str | None = None,
) -> ModelSpec:
    """Bind ``formula`` to ``data`` and fix family, link, priors and parameterization.

    Nothing is sampled; :func:`fit` calls this first. ``standardize`` and ``reference``: see
    :func:`poolwise.data.design.build_design`.

    Parameters
    ----------
    formula : str or Formula
        lme4 / brms style formula (``y ~ 1 + x + (1 | g)``, ``cbind(s, f) ~ ...``,
        ``s | trials(n) ~ ...``) or one parsed by :func:`parse_formula`.
    data : str, pathlib.Path, Table, pandas.DataFrame or polars.DataFrame
        The data: a CSV/TSV/Parquet path (read with :func:`read_table`), a :class:`Table` or a
        data frame.
    pooling : {"partial", "none", "complete"}, default "partial"
        Partial pooling (multilevel: group effects drawn from a fitted population), no pooling
        (independent per-group intercepts) or complete pooling (groups ignored).
    link : {"logit", "probit", "cloglog"}, default "logit"
        Link function of the success probability.
    priors : Priors or None, default None
        Priors by class (:class:`Priors`); None means ``Priors()``, the defaults (intercept
        normal(0, 1.5), coefficients normal(0, 1), group SDs exponential(1), correlations
        lkj(2)). Priors are never changed by repair.
    parameterization : {"auto", "centered", "noncentered"} or dict[str, str], default "auto"
        Centered or non-centered group effects, for every group term or per grouping factor
        (``{"district": "noncentered"}``); ``"auto"`` is resolved by :func:`fit` from a pilot
        run.
    success : Any, default None
        For a 0/1 outcome column with two other values (e.g. ``"yes"`` / ``"no"``): the value
        that counts as a success. Not needed for 0/1, True/False or count outcomes.
    drop_missing : bool, default False
        Drop rows with a missing value in a model column (reported in the notes) instead of
        raising :class:`DataError`.
    standardize : bool, default True
        Sample with numeric predictors scaled by their SD and the fixed-effect columns centered,
        so the default priors fit any units; every result is reported on the original scale
        (see :mod:`poolwise.data.design`).
    reference : Mapping[str, Any] or None, default None
        Reference level per categorical predictor (``{"col": level}``); by default the first
        level (in category order for a pandas categorical, otherwise sorted).
    offset : str, array-like or None, default None
        Known per-row addition to the linear predictor: an expression of columns
        (``"log(exposure)"``, the same as ``+ offset(log(exposure))`` in the formula) or one
        value per data row.
    family : {"binomial", "beta_binomial"}, default "binomial"
        The outcome's distribution given the success probability: binomial, or beta-binomial
        for overdispersed counts (rows of several trials whose spread exceeds the binomial's;
        precision ``phi`` with the prior ``priors.phi``).
    weights : str or None, default None
        A column of row weights; ``weights_kind`` says what they are ("frequency" or
        "survey"; :func:`poolwise.fit`).
    weights_kind : {"frequency", "survey"} or None, default None
        None: frequency weights when every weight is a whole number.

    Returns
    -------
    ModelSpec
        The design (binomial cells, fixed-effect columns, group terms), priors, link and
        parameterization per term, ready for the engine.

    Raises
    ------
    FormulaError
        When the formula cannot be parsed or names a column the data lack.
    DataError
        When the data cannot be read or are unusable, naming the column and rows.
    SpecError
        When ``pooling``, ``link``, ``priors`` or ``parameterization`` is invalid.
    """
    if pooling not in POOLINGS:
        raise SpecError(f"pooling must be one of {', '.join(POOLINGS)}; got {pooling!r}")
    links.get(link)  # SpecError for an unknown link
    check_family(family)
    priors = priors or Priors()
    design = build_design(
        formula, data, pooling=pooling, success=success, drop_missing=drop_missing,
        standardize=standardize, reference=reference, offset=offset, weights=weights,
        weights_kind=weights_kind,
    )
    fixed_priors = tuple(
        priors.intercept if name == "Intercept" else priors.b for name in design.fixed_names
    )
    terms = [_term_spec(g, design.fixed_names, pooling, priors) for g in design.groups]
    for p in fixed_priors + tuple(q for t in terms for q in t.sd_priors):
        families.get(p.family).kernel_words(p.params)  # SpecError: unknown family / parameters
    if family == "beta_binomial" and np.all(design.row_n <= 1):
        raise SpecError(
            "family='beta_binomial' models rows of several trials whose spread exceeds the "
            "binomial's; every row here has one trial (0/1 outcomes), where the overdispersion "
            "is not identified. Use the binomial family, or a group term (1 | group) for "
            "variation between groups"
        )
    families.get(priors.phi.family).kernel_words(priors.phi.params)
    spec = ModelSpec(
        design=design,
        pooling=pooling,
        link=link,
        priors=priors,
        fixed_priors=fixed_priors,
        terms=tuple(terms),
        family=family,
    )
    return spec.with_parameterization(parameterization)
