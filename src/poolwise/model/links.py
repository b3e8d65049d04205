"""The link registry: every link function the model family supports, one entry each.

An entry holds everything the rest of the package needs about a link: the id of its
branch in the compiled likelihood (:func:`poolwise.engine.density.cell_loglik`), the
inverse link, the derivative ``dp/deta``, ``log p`` and ``log(1 - p)``, and the Fisher
weight of one binomial cell, ``n (dp/deta)^2 / (p (1 - p))`` (which is ``n p (1 - p)``
only for the logit). Code that needs a link looks it up here with :func:`get`, which
raises :class:`~poolwise.errors.SpecError` for an unknown name; nothing else switches on
link names.

Adding a link: write its branch in ``density.cell_loglik`` under a new id, add one
:class:`LinkSpec` to ``_REGISTRY`` below, add the name to ``poolwise.model.Link`` (a
``Literal`` for type checkers) and let ``tests/test_registry.py`` check it against SciPy
and finite differences (it iterates over the registry, so no new test code is needed
unless the link has a closed form worth a dedicated check).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.special import expit, log_expit, log_ndtr, logit, ndtr, ndtri

from poolwise.errors import SpecError

__all__ = ["LinkSpec", "get", "names"]

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


@dataclass(frozen=True)
class LinkSpec:
    """One link function ``g``: ``eta = g(p)``, ``p = g^-1(eta)``.

    The numpy functions are ufunc compositions, so they accept arrays, scalars and
    xarray objects alike.
    """

    name: str
    kernel_id: int  # the link's branch in poolwise.engine.density.cell_loglik
    inverse_name: str  # how the narrative names the inverse link ("logistic")
    link: Callable[[np.ndarray], np.ndarray]  # p -> eta
    inverse: Callable[[np.ndarray], np.ndarray]  # eta -> p
    log_p_q: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]  # eta -> log p, log(1-p)
    dp_deta: Callable[[np.ndarray], np.ndarray]  # eta -> dp/deta
    _fisher: Callable[[np.ndarray], np.ndarray]  # eta -> (dp/deta)^2 / (p (1 - p)), stable

    def fisher_weight(self, n: np.ndarray | float, eta: np.ndarray) -> np.ndarray:
        """Fisher information about ``eta`` of a binomial cell with ``n`` trials:
        ``n (dp/deta)^2 / (p (1 - p))``, computed without cancellation in the tails."""
        return np.asarray(n, dtype=float) * self._fisher(np.asarray(eta, dtype=float))


# ---- logit --------------------------------------------------------------------------------


def _logit_log_p_q(eta):
    return log_expit(eta), log_expit(-eta)


def _logit_dp(eta):
    p = expit(eta)
    return p * (1.0 - p)


def _logit_fisher(eta):
    return np.exp(log_expit(eta) + log_expit(-eta))


# ---- probit -------------------------------------------------------------------------------


def _probit_log_p_q(eta):
    return log_ndtr(eta), log_ndtr(-eta)


def _probit_dp(eta):
    return np.exp(-0.5 * eta**2 - _LOG_SQRT_2PI)


def _probit_fisher(eta):
    return np.exp(-(eta**2) - 2.0 * _LOG_SQRT_2PI - log_ndtr(eta) - log_ndtr(-eta))


# ---- complementary log-log ----------------------------------------------------------------


def _cloglog_link(p):
    return np.log(-np.log1p(-p))


def _cloglog_inverse(eta):
    return -np.expm1(-np.exp(eta))


def _cloglog_log_p_q(eta):
    mu = np.exp(eta)
    with np.errstate(divide="ignore"):
        return np.log(-np.expm1(-mu)), -mu


def _cloglog_dp(eta):
    return np.exp(eta - np.exp(eta))


def _cloglog_fisher(eta):
    # (mu e^-mu)^2 / ((1 - e^-mu) e^-mu) = mu^2 e^-mu / (1 - e^-mu), mu = e^eta
    with np.errstate(over="ignore", invalid="ignore"):
        mu = np.exp(eta)
        out = np.exp(2.0 * eta - mu) / -np.expm1(-mu)
    return np.where(mu < 1e-300, mu, out)  # mu -> 0: the weight -> mu


_REGISTRY: dict[str, LinkSpec] = {
    spec.name: spec
    for spec in (
        LinkSpec("logit", 0, "logistic", logit, expit, _logit_log_p_q, _logit_dp, _logit_fisher),
        LinkSpec("probit", 1, "inverse probit", ndtri, ndtr, _probit_log_p_q, _probit_dp,
                 _probit_fisher),
        LinkSpec("cloglog", 2, "inverse cloglog", _cloglog_link, _cloglog_inverse,
                 _cloglog_log_p_q, _cloglog_dp, _cloglog_fisher),
    )
}


def names() -> tuple[str, ...]:
    """The known link names, in registry order (logit first: the default)."""
    return tuple(_REGISTRY)


def get(name: str) -> LinkSpec:
    """The registry entry of ``name``; :class:`SpecError` for an unknown link."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise SpecError(f"link must be one of {', '.join(_REGISTRY)}; got {name!r}") from None
