"""The prior-family registry: every prior distribution the model family supports, one entry
each.

An entry holds everything the package needs about a family: its parameter names and which of
them must be positive, its support (the whole real line, positive, or correlation matrices),
the id of its branch in the compiled density (``poolwise.engine.density._prior_logp_grad``)
and the name of the numba kernel that branch calls (log density and its gradient at one
value), and its log density (NumPy closed forms where SciPy is not needed: the default
priors' normal, exponential and half-normal; held equal to SciPy's by
``tests/test_registry.py``), quantile function and random draw. Code that needs a
family looks it up here with :func:`get`, which raises :class:`~poolwise.errors.SpecError` for
an unknown name; nothing else switches on family names.

The compiled kernels include every normalizing constant (the half families their ``log 2``),
so ``kernel(params, v)[0] == logpdf(params, v)`` exactly, not up to a constant; only ``flat``
is improper (log density 0 everywhere).

Adding a family: write its kernel ``_<name>_logp_grad(p1, p2, p3, v)`` in
``poolwise/engine/density.py`` (the numba cache only notices edits to that file, so the
kernels live there), give it a new id and one ``if kind == ...`` line in
``_prior_logp_grad``, and add one :class:`FamilySpec` below. ``tests/test_registry.py``
iterates over the registry and checks the kernel, its gradient and the dispatch against SciPy
and finite differences; a constructor in :mod:`poolwise.model.priors` is optional sugar.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from poolwise.errors import SpecError

__all__ = ["FamilySpec", "get", "names", "KERNEL_PARAMS"]

#: the compiled density reads every scalar prior as (kernel id, p1, p2, p3)
KERNEL_PARAMS = 3

Support = Literal["real", "positive", "correlation"]

_LOG2 = math.log(2.0)


@dataclass(frozen=True)
class FamilySpec:
    """One prior family. ``params`` are in the order of its constructor in
    :mod:`poolwise.model.priors` (and of ``Prior.params``)."""

    name: str
    params: tuple[str, ...]
    positive: tuple[str, ...]  # parameters that must be finite and > 0
    support: Support
    kernel_id: int | None  # branch of density._prior_logp_grad; None: not a scalar prior
    kernel_name: str | None  # numba kernel in poolwise.engine.density
    proper: bool = True  # False: integrates to infinity (no draws, no quantiles)
    _logpdf: Callable[..., Any] | None = None  # (x, *params) -> log density
    _ppf: Callable[..., Any] | None = None  # (q, *params) -> quantile
    _draw: Callable[..., Any] | None = None  # (rng, size, *params) -> draws

    # ---- parameters -------------------------------------------------------------------
    def check_params(self, values: Sequence[Any]) -> tuple[float, ...]:
        """Validated parameters as floats; :class:`SpecError` naming the family and the
        parameter otherwise."""
        if len(values) != len(self.params):
            want = ", ".join(self.params) if self.params else "no parameters"
            raise SpecError(
                f"{self.name}() takes {len(self.params)} parameter(s) ({want}); "
                f"got {len(values)}: {tuple(values)!r}"
            )
        out = []
        for key, v in zip(self.params, values, strict=True):
            numeric = isinstance(v, int | float | np.integer | np.floating) and not isinstance(
                v, bool
            )
            if key in self.positive:
                if not (numeric and math.isfinite(v) and v > 0):
                    raise SpecError(
                        f"{self.name}() needs {key} > 0 (a finite positive number); got {v!r}"
                    )
            elif not (numeric and math.isfinite(v)):
                raise SpecError(f"{self.name}() needs {key} to be a finite number; got {v!r}")
            out.append(float(v))
        return tuple(out)

    # ---- the compiled kernel -----------------------------------------------------------
    @property
    def kernel(self) -> Callable[[float, float, float, float], tuple[float, float]]:
        """The numba kernel ``(p1, p2, p3, v) -> (log density, d/dv)`` that the compiled
        density dispatches to for this family (imported lazily: numba loads on first use)."""
        if self.kernel_name is None:
            raise SpecError(f"the {self.name} prior has no scalar density kernel")
        from poolwise.engine import density

        return getattr(density, self.kernel_name)

    def kernel_words(self, params: Sequence[float]) -> list[float]:
        """The prior as the compiled density reads it: kernel id, then the parameters padded
        to :data:`KERNEL_PARAMS`."""
        if self.kernel_id is None:
            raise SpecError(
                f"the {self.name} prior cannot be put on a single parameter; it is the prior "
                "of a correlation matrix"
            )
        p = list(self.check_params(params))
        return [float(self.kernel_id)] + p + [0.0] * (KERNEL_PARAMS - len(p))

    # ---- densities, quantiles, draws (NumPy or SciPy) ---------------------------------
    def _need(self, what: str, fn: Callable[..., Any] | None) -> Callable[..., Any]:
        if fn is None:
            raise ValueError(f"the {self.name} prior has no {what}")
        return fn

    def logpdf(self, params: Sequence[float], x: Any) -> np.ndarray:
        """Log density at ``x``, with all normalizing constants (SciPy's values)."""
        return self._need("log density", self._logpdf)(np.asarray(x, dtype=float), *params)

    def ppf(self, params: Sequence[float], q: Any) -> np.ndarray:
        """Quantile function (SciPy)."""
        return self._need("quantile function", self._ppf)(np.asarray(q, dtype=float), *params)

    def draw(self, params: Sequence[float], rng: np.random.Generator, size: Any) -> np.ndarray:
        """Random draws from the prior (a flat prior raises ValueError: it is improper)."""
        return self._need("random draws (it is improper)", self._draw)(rng, size, *params)


# ---- SciPy / numpy implementations ---------------------------------------------------------


def _stats() -> Any:
    """scipy.stats, imported on first use: it takes about 0.35 s, and a fit with the default
    priors needs none of it (its quantiles and draws are closed forms and NumPy's)."""
    from scipy import stats

    return stats


def _half_t_logpdf(x, nu, sigma):
    return np.where(x >= 0.0, _LOG2 + _stats().t.logpdf(x, nu, scale=sigma), -np.inf)


#: log(sqrt(2 pi)), the normal's constant as SciPy writes it
_LOG_SQRT_2PI = math.log(math.sqrt(2 * math.pi))
_LOG_SQRT_2_OVER_PI = 0.5 * math.log(2.0 / math.pi)


# The default priors' log densities in NumPy, as SciPy computes them (standardize, the
# standard density, minus the log of the scale; -inf outside the support): the prior
# sensitivity check of every fit evaluates them, and scipy.stats would cost its 0.35 s import.
def _normal_logpdf(x, mu, sigma):
    y = (x - mu) / sigma
    return -y**2 / 2.0 - _LOG_SQRT_2PI - math.log(sigma)


def _exponential_logpdf(x, rate):
    scale = 1.0 / rate
    y = x / scale
    return np.where(y < 0.0, -np.inf, -y - math.log(scale))


def _half_normal_logpdf(x, sigma):
    y = x / sigma
    return np.where(y < 0.0, -np.inf, _LOG_SQRT_2_OVER_PI - y * y / 2.0 - math.log(sigma))


_FAMILIES = (
    FamilySpec(
        "flat", (), (), "real", 0, "_flat_logp_grad", proper=False,
        _logpdf=lambda x: np.zeros_like(x),
    ),
    FamilySpec(
        "normal", ("mu", "sigma"), ("sigma",), "real", 1, "_normal_logp_grad",
        _logpdf=_normal_logpdf,
        _ppf=lambda q, mu, sigma: _stats().norm.ppf(q, mu, sigma),
        _draw=lambda rng, size, mu, sigma: rng.normal(mu, sigma, size=size),
    ),
    FamilySpec(
        "student_t", ("nu", "mu", "sigma"), ("nu", "sigma"), "real", 2, "_student_t_logp_grad",
        _logpdf=lambda x, nu, mu, sigma: _stats().t.logpdf(x, nu, mu, sigma),
        _ppf=lambda q, nu, mu, sigma: mu + sigma * _stats().t.ppf(q, nu),
        _draw=lambda rng, size, nu, mu, sigma: mu + sigma * rng.standard_t(nu, size=size),
    ),
    FamilySpec(
        "exponential", ("rate",), ("rate",), "positive", 3, "_exponential_logp_grad",
        _logpdf=_exponential_logpdf,
        _ppf=lambda q, rate: -np.log1p(-q) / rate,
        _draw=lambda rng, size, rate: rng.exponential(1.0 / rate, size=size),
    ),
    FamilySpec(
        "half_normal", ("sigma",), ("sigma",), "positive", 4, "_half_normal_logp_grad",
        _logpdf=_half_normal_logpdf,
        _ppf=lambda q, sigma: sigma * _stats().norm.ppf(0.5 + 0.5 * q),
        _draw=lambda rng, size, sigma: np.abs(rng.normal(0.0, sigma, size=size)),
    ),
    FamilySpec(
        "half_student_t", ("nu", "sigma"), ("nu", "sigma"), "positive", 5,
        "_half_student_t_logp_grad",
        _logpdf=_half_t_logpdf,
        _ppf=lambda q, nu, sigma: sigma * _stats().t.ppf(0.5 + 0.5 * q, nu),
        _draw=lambda rng, size, nu, sigma: np.abs(sigma * rng.standard_t(nu, size=size)),
    ),
    # the prior of a correlation matrix (its density lives in the engine's correlation code)
    FamilySpec("lkj", ("eta",), ("eta",), "correlation", None, None),
)

_REGISTRY: dict[str, FamilySpec] = {f.name: f for f in _FAMILIES}


def names(support: Support | None = None) -> tuple[str, ...]:
    """Known family names (those with the given support, if given)."""
    return tuple(n for n, f in _REGISTRY.items() if support is None or f.support == support)


def get(name: str) -> FamilySpec:
    """The registry entry of ``name``; :class:`SpecError` for an unknown family."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise SpecError(
            f"unknown prior family {name!r}; known: {', '.join(_REGISTRY)}"
        ) from None
