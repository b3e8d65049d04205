"""One exception tree for poolwise.

Every error is also a builtin (``except ValueError`` keeps working), and every message says
what is wrong, names the column / values / rows concerned, and says how to fix it.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator

__all__ = [
    "PoolwiseError",
    "FormulaError",
    "DataError",
    "StoreError",
    "SpecError",
    "SamplingError",
    "Interrupted",
    "phase",
    "interrupted_phases",
    "PoolwiseWarning",
    "ConvergenceWarning",
    "DataWarning",
]


class PoolwiseError(Exception):
    """Root of every error raised by poolwise."""


class FormulaError(PoolwiseError, ValueError):
    """The formula cannot be parsed or does not fit the data.

    ``span`` is the (start, end) character range of the offending part of ``formula``; the
    message shows the formula with that span marked underneath.
    """

    def __init__(self, message: str, formula: str = "", span: tuple[int, int] | None = None):
        self.formula = formula
        self.span = span
        self.reason = message
        if formula and span is not None:
            start, end = span
            marker = " " * start + "^" * max(1, end - start)
            message = f"{message}\n  {formula}\n  {marker}"
        super().__init__(message)


class DataError(PoolwiseError, ValueError):
    """The data cannot be used as given (read errors, bad values, bad columns)."""


class StoreError(DataError):
    """A saved result cannot be read or written: not a poolwise result, corrupt, incomplete
    or mixed, an unknown schema version or type, locked by another writer, or an output path
    that cannot be used."""


class SpecError(PoolwiseError, ValueError):
    """An invalid setting: sampler options, priors, pooling or parameterization choices."""


class SamplingError(PoolwiseError, RuntimeError):
    """Sampling failed, or (with ``strict=True``) the fit did not pass its diagnostics."""


class Interrupted(KeyboardInterrupt):
    """The run was stopped before it finished: by SIGTERM (the command line turns it into this),
    or the sampler handed back fewer draws than asked, which is what nutpie returns when it is
    interrupted. A :class:`KeyboardInterrupt`, as Ctrl-C is: nothing that catches
    ``Exception`` stops it, so no repair attempt starts and no partial trace becomes a Fit.
    ``signum`` is the signal that stopped the run (SIGINT when it was not a signal)."""

    def __init__(self, message: str = "", signum: int = signal.SIGINT):
        super().__init__(message)
        self.signum = signum


_PHASES = "poolwise_phases"


@contextlib.contextmanager
def phase(name: str) -> Iterator[None]:
    """Name the phase of the run that a :class:`KeyboardInterrupt` (Ctrl-C, SIGTERM) passing
    through the block stopped: the names are kept on the exception, innermost first
    (:func:`interrupted_phases`), for the command line's one line about it."""
    try:
        yield
    except KeyboardInterrupt as err:
        phases = getattr(err, _PHASES, None)
        if phases is None:
            phases = []
            with contextlib.suppress(AttributeError, TypeError):
                setattr(err, _PHASES, phases)
        phases.append(name)
        raise


def interrupted_phases(err: BaseException) -> list[str]:
    """The phases (:func:`phase`) an interrupt passed through, innermost first."""
    return list(getattr(err, _PHASES, None) or [])


class PoolwiseWarning(UserWarning):
    """Root of the warnings poolwise emits."""


class ConvergenceWarning(PoolwiseWarning):
    """The sampler's diagnostics do not support trusting the result."""


class DataWarning(PoolwiseWarning):
    """The data are usable, but something about them affects the result."""
