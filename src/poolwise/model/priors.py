"""Prior objects, their defaults, and parsing of prior text such as ``half_normal(0.5)``."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from poolwise.errors import SpecError
from poolwise.model import families

__all__ = [
    "Prior",
    "Priors",
    "normal",
    "student_t",
    "cauchy",
    "exponential",
    "half_normal",
    "half_student_t",
    "half_cauchy",
    "flat",
    "lkj",
    "parse_prior",
]

PriorFamily = Literal[
    "flat", "normal", "student_t", "exponential", "half_normal", "half_student_t", "lkj"
]


@dataclass(frozen=True)
class Prior:
    """A prior distribution: ``family`` (a name in :mod:`poolwise.model.families`) and its
    parameters
    (in the order of the constructor). An unknown family or invalid parameters raise
    :class:`SpecError` here, when the prior is made."""

    family: PriorFamily
    params: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        checked = families.get(self.family).check_params(tuple(self.params))
        object.__setattr__(self, "params", checked)

    def __str__(self) -> str:
        args = ", ".join(f"{p:g}" for p in self.params)
        return f"{self.family}({args})"

    @property
    def spec(self) -> families.FamilySpec:
        """The family's registry entry (log density, quantiles, draws, kernel)."""
        return families.get(self.family)

    @property
    def positive(self) -> bool:
        return self.spec.support == "positive"


def normal(mu: float = 0.0, sigma: float = 1.0) -> Prior:
    """Normal prior (on the link scale for the intercept and coefficients).

    Parameters
    ----------
    mu : float, default 0.0
        Mean.
    sigma : float, default 1.0
        Standard deviation (> 0).

    Returns
    -------
    Prior
        The prior, to pass in :class:`Priors`.

    Raises
    ------
    SpecError
        When a parameter is out of range (not finite, or not positive where it must be).
    """
    return Prior("normal", (mu, sigma))


def student_t(nu: float, mu: float = 0.0, sigma: float = 1.0) -> Prior:
    """Student-t prior.

    Parameters
    ----------
    nu : float
        Degrees of freedom (> 0).
    mu : float, default 0.0
        Location.
    sigma : float, default 1.0
        Scale (> 0).

    Returns
    -------
    Prior
        The prior, to pass in :class:`Priors`.

    Raises
    ------
    SpecError
        When a parameter is out of range (not finite, or not positive where it must be).
    """
    return Prior("student_t", (nu, mu, sigma))


def cauchy(mu: float = 0.0, sigma: float = 1.0) -> Prior:
    """Cauchy prior: a Student-t with one degree of freedom.

    Parameters
    ----------
    mu : float, default 0.0
        Location.
    sigma : float, default 1.0
        Scale (> 0).

    Returns
    -------
    Prior
        The prior, to pass in :class:`Priors`.

    Raises
    ------
    SpecError
        When a parameter is out of range (not finite, or not positive where it must be).
    """
    return student_t(1.0, mu, sigma)


def exponential(rate: float = 1.0) -> Prior:
    """Exponential prior for a group standard deviation (positive).

    Parameters
    ----------
    rate : float, default 1.0
        Rate (> 0); the mean is ``1 / rate``.

    Returns
    -------
    Prior
        The prior, to pass in :class:`Priors`.

    Raises
    ------
    SpecError
        When a parameter is out of range (not finite, or not positive where it must be).
    """
    return Prior("exponential", (rate,))


def half_normal(sigma: float = 1.0) -> Prior:
    """Half-normal prior for a group standard deviation (positive).

    Parameters
    ----------
    sigma : float, default 1.0
        Scale (> 0) of the normal folded at 0.

    Returns
    -------
    Prior
        The prior, to pass in :class:`Priors`.

    Raises
    ------
    SpecError
        When a parameter is out of range (not finite, or not positive where it must be).
    """
    return Prior("half_normal", (sigma,))


def half_student_t(nu: float, sigma: float = 1.0) -> Prior:
    """Half-Student-t prior for a group standard deviation (positive).

    Parameters
    ----------
    nu : float
        Degrees of freedom (> 0).
    sigma : float, default 1.0
        Scale (> 0).

    Returns
    -------
    Prior
        The prior, to pass in :class:`Priors`.

    Raises
    ------
    SpecError
        When a parameter is out of range (not finite, or not positive where it must be).
    """
    return Prior("half_student_t", (nu, sigma))


def half_cauchy(sigma: float = 1.0) -> Prior:
    """Half-Cauchy prior: a half-Student-t with one degree of freedom.

    Parameters
    ----------
    sigma : float, default 1.0
        Scale (> 0).

    Returns
    -------
    Prior
        The prior, to pass in :class:`Priors`.

    Raises
    ------
    SpecError
        When a parameter is out of range (not finite, or not positive where it must be).
    """
    return half_student_t(1.0, sigma)


def flat() -> Prior:
    """Improper flat prior (uniform on the whole real line).

    It adds nothing to the density; on separated data (a predictor that splits successes from
    failures) the posterior is improper, which poolwise refuses before sampling.

    Returns
    -------
    Prior
        The prior, to pass in :class:`Priors`.
    """
    return Prior("flat", ())


def lkj(eta: float = 2.0) -> Prior:
    """LKJ prior on the correlation matrix of correlated group terms (``(1 + x | g)``).

    Parameters
    ----------
    eta : float, default 2.0
        Shape (> 0): 1 is uniform over correlations, larger values favour
        weaker correlations.

    Returns
    -------
    Prior
        The prior, to pass in :class:`Priors`.

    Raises
    ------
    SpecError
        When a parameter is out of range (not finite, or not positive where it must be).
    """
    return Prior("lkj", (eta,))


_CONSTRUCTORS = {
    "normal": normal,
    "student_t": student_t,
    "cauchy": cauchy,
    "exponential": exponential,
    "half_normal": half_normal,
    "halfnormal": half_normal,
    "half_student_t": half_student_t,
    "half_cauchy": half_cauchy,
    "flat": flat,
    "lkj": lkj,
}


def parse_prior(text: str) -> Prior:
    """``"half_normal(0.5)"`` -> :func:`half_normal` (0.5). Every family of
    :mod:`poolwise.model.families` is known by its name (with its parameters in registry order);
    the constructors above add defaults and aliases (``cauchy``, ``half_cauchy``)."""
    known = sorted(set(_CONSTRUCTORS) | set(families.names()))
    m = re.fullmatch(r"\s*([A-Za-z_]+)\s*\(([^)]*)\)\s*", text)
    if m is None or m.group(1).lower() not in known:
        import difflib

        word = (m.group(1) if m is not None else text.partition("(")[0]).strip().lower()
        close = difflib.get_close_matches(word, known, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}? " if close else ""
        raise SpecError(
            f"cannot read prior {text!r}; {hint}write e.g. normal(0, 1.5), exponential(1), "
            f"half_normal(0.5); known: {', '.join(known)}"
        )
    args = [a.strip() for a in m.group(2).split(",") if a.strip()]
    try:
        values = [float(a) for a in args]
    except ValueError as err:
        raise SpecError(f"prior {text!r} has a non-numeric parameter") from err
    name = m.group(1).lower()
    if name not in _CONSTRUCTORS:
        return Prior(name, tuple(values))  # type: ignore[arg-type]
    try:
        return _CONSTRUCTORS[name](*values)  # type: ignore[operator]
    except TypeError as err:
        raise SpecError(f"prior {text!r} has the wrong number of parameters") from err


@dataclass(frozen=True)
class Priors:
    """Priors by class. Defaults follow the seeds' models (Statistical Rethinking, ch. 13).

    * ``intercept``: the population intercept (``a_bar``), default normal(0, 1.5); with
      ``standardize=True`` it applies to the log-odds at the predictors' means (the fixed
      columns are centered for sampling), while the reported ``Intercept`` is always the
      log-odds at all predictors = 0;
    * ``b``: each fixed coefficient, default normal(0, 1): with ``standardize=True`` (the
      default of ``fit`` / ``build_model``) per standard deviation of a numeric predictor with
      more than two values, per unit of a 0/1 predictor or a categorical contrast; with
      ``standardize=False`` per original unit. Results are always reported per original unit
      (see :mod:`poolwise.data.design`);
    * ``sd``: each group standard deviation, default exponential(1) (for a varying slope of a
      standardized predictor: per standard deviation of the predictor); ``sd_by_group``
      overrides it per grouping factor (``{"district": half_normal(0.5)}``);
    * ``cor``: correlations of varying effects, default lkj(2);
    * ``unpooled``: the independent per-group intercepts of ``pooling="none"``,
      default normal(0, 1.5);
    * ``phi``: the precision of the beta-binomial family (``family="beta_binomial"``: a
      row's trials share a success probability drawn from a beta distribution with the
      model's mean and this precision; small phi: strong overdispersion, phi -> infinity: the
      binomial), default exponential(0.05) (mean 20, 95% below 60: from strong to mild
      overdispersion).
    """

    intercept: Prior = field(default_factory=lambda: normal(0.0, 1.5))
    b: Prior = field(default_factory=lambda: normal(0.0, 1.0))
    sd: Prior = field(default_factory=lambda: exponential(1.0))
    sd_by_group: Mapping[str, Prior] = field(default_factory=dict)
    cor: Prior = field(default_factory=lambda: lkj(2.0))
    unpooled: Prior = field(default_factory=lambda: normal(0.0, 1.5))
    phi: Prior = field(default_factory=lambda: exponential(0.05))

    def __post_init__(self) -> None:
        # prior text wherever a prior is taken: Priors(sd="exponential(2)")
        for name in ("intercept", "b", "sd", "cor", "unpooled", "phi"):
            value = getattr(self, name)
            if isinstance(value, str):
                object.__setattr__(self, name, parse_prior(value))
            elif not isinstance(value, Prior):
                raise SpecError(
                    f"prior for {name} must be a prior such as normal(0, 1) or its text "
                    f"'normal(0, 1)'; got {value!r}"
                )
        if not isinstance(self.sd_by_group, Mapping):
            raise SpecError("sd_by_group maps a grouping factor to its SD prior, e.g. "
                            f"{{'district': 'half_normal(0.5)'}}; got {self.sd_by_group!r}")
        object.__setattr__(self, "sd_by_group", {
            str(k): parse_prior(v) if isinstance(v, str) else v
            for k, v in self.sd_by_group.items()
        })
        for name in ("intercept", "b", "unpooled"):
            p = getattr(self, name)
            if p.spec.support != "real":
                raise SpecError(f"prior for {name} must be on the whole real line; got {p}")
        for key, p in [("sd", self.sd), *self.sd_by_group.items()]:
            if not p.positive:
                raise SpecError(
                    f"prior for the group SD {key!r} must be positive-only "
                    f"(exponential, half_normal, half_student_t, half_cauchy); got {p}"
                )
        if self.cor.spec.support != "correlation":
            raise SpecError(f"prior for correlations must be lkj(eta); got {self.cor}")
        if not self.phi.positive:
            raise SpecError(f"prior for phi must be positive-only (exponential, half_normal, "
                            f"half_student_t); got {self.phi}")
        if self.unpooled.family not in ("normal",):
            raise SpecError(
                f"prior for unpooled group intercepts must be normal; got {self.unpooled}"
            )

    def sd_for(self, group: str) -> Prior:
        return self.sd_by_group.get(group, self.sd)

    def given(self) -> tuple[str, ...]:
        """The prior classes set to something other than their default (``sd_<group>`` for
        each entry of ``sd_by_group``): what a model must have a parameter for."""
        default = Priors()
        out = [name for name in ("intercept", "b", "sd", "cor", "unpooled", "phi")
               if getattr(self, name) != getattr(default, name)]
        return tuple(out + [f"sd_{g}" for g in self.sd_by_group])

    def to_dict(self) -> dict[str, str]:
        out = {
            "intercept": str(self.intercept),
            "b": str(self.b),
            "sd": str(self.sd),
            "cor": str(self.cor),
            "unpooled": str(self.unpooled),
            "phi": str(self.phi),
        }
        out.update({f"sd_{g}": str(p) for g, p in self.sd_by_group.items()})
        return out
