"""The result of a fit: :class:`Fit` (an ArviZ DataTree of draws plus the model, the sampler
settings, the diagnosis, timings and the repair journal), the versions that made it, and its
row-level view (:func:`expand_rows`).

A Fit is made by :func:`poolwise.inference.sampling.sample_spec` (one run), the repair loop
(:mod:`poolwise.inference.repair`) and :func:`poolwise.fit`, and read back by
:func:`poolwise.load_fit`. Its compact displays and its summary table are built in this layer
(:mod:`poolwise.inference.display`, :mod:`poolwise.inference.summary`).
"""

from __future__ import annotations

import functools
import platform
from dataclasses import dataclass, field
from importlib.metadata import version
from typing import TYPE_CHECKING, Any

import pandas as pd
import xarray as xr

from poolwise.data.patterns import PATTERN_DIM, _row_index
from poolwise.errors import SpecError
from poolwise.resources import available_memory_bytes, fmt_bytes

if TYPE_CHECKING:
    from poolwise.engine.sampler import SamplerConfig
    from poolwise.inference.diagnostics import Diagnosis
    from poolwise.model.spec import ModelSpec

__all__ = ["COMMAND_ATTR", "Fit", "expand_rows", "versions", "with_command"]

#: the root attribute of a fit's DataTree that holds the command line that made it (written by
#: ``poolwise fit`` and ``poolwise compare``, saved with the fit, shown by the report)
COMMAND_ATTR = "poolwise_command"


def expand_rows(fit: Fit) -> xr.DataTree:
    """The fit's DataTree with every per-pattern group repeated to one entry per data row
    (dimension ``obs``, coordinate: the 1-based data row numbers), as ArviZ expects it. Memory:
    rows x draws x 8 bytes for the log-likelihood; meant for small data."""
    idx, rows = _row_index(fit.spec.design)
    if "log_likelihood" in fit.idata.children:
        ll = fit.idata["log_likelihood"]["y"]
        need = 8 * len(rows) * ll.sizes["chain"] * ll.sizes["draw"]
        avail = available_memory_bytes()
        if avail is not None and need > avail:
            raise SpecError(
                f"the row-level view needs {fmt_bytes(need)} ({len(rows):,} rows x "
                f"{ll.sizes['chain'] * ll.sizes['draw']:,} draws x 8 bytes) but "
                f"{fmt_bytes(avail)} is available; use the per-pattern values with their "
                "counts (poolwise.comparison.loo.row_loo gives row-level LOO from them)"
            )
    groups: dict[str, xr.Dataset] = {}
    for node in fit.idata.subtree:
        if node is fit.idata:
            continue
        ds = node.to_dataset()
        if PATTERN_DIM not in ds.dims:
            groups[node.path] = ds
            continue
        out = ds.isel({PATTERN_DIM: idx}).rename({PATTERN_DIM: "obs"})
        out = out.drop_vars([v for v in ("count", "cell", "first_row") if v in out.data_vars])
        out = out.drop_vars(PATTERN_DIM, errors="ignore").assign_coords(obs=rows)
        out.attrs = {k: v for k, v in out.attrs.items() if k != "poolwise_unit"}
        groups[node.path] = out
    tree = xr.DataTree.from_dict(groups)
    tree.attrs.update(fit.idata.attrs)
    return tree


@dataclass(frozen=True, eq=False)
class Fit:
    """A fitted model: the ArviZ DataTree of draws plus everything that produced it."""

    idata: xr.DataTree
    spec: ModelSpec
    config: SamplerConfig
    diagnosis: Diagnosis
    timings: dict[str, float]
    warnings: tuple[str, ...] = ()
    #: the repair journal, a :class:`poolwise.inference.repair.RepairLog` (iterating it yields the
    #: attempts), also for a fit loaded with :func:`poolwise.load_fit`; ``()`` without repair
    repair_log: Any = field(default_factory=tuple)
    #: summary tables already computed, by (prob, kind, scale): the CLI prints the table and
    #: saves it, and with 10^4-10^5 group levels each table costs seconds
    _summaries: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        """False whenever the diagnostics do not support trusting the draws."""
        return self.diagnosis.ok

    @property
    def method(self) -> str:
        """How the draws were made: ``"nuts"`` or ``"approx"``
        (:mod:`poolwise.inference.approx`)."""
        return str(self.idata.attrs.get("poolwise_method", "nuts"))

    def _approx_numbers(self) -> dict[str, Any]:
        """The approximation's self-check as saved with the draws (empty without one)."""
        import json

        from poolwise.inference.diagnostics.approx_check import APPROX_ATTR

        text = self.idata.attrs.get(APPROX_ATTR)
        return json.loads(text) if text else {}

    @property
    def nuts_check(self) -> Any:
        """The check against a short NUTS run (``check_against_nuts=True``), a
        :class:`~poolwise.inference.diagnostics.approx_check.NutsCheck`; None without it."""
        from poolwise.inference.diagnostics.approx_check import NutsCheck

        saved = self._approx_numbers().get("against_nuts")
        return NutsCheck.from_dict(saved) if saved else None

    @property
    def importance_ess_text(self) -> str | None:
        """An approximate fit's importance ESS in words, for its status line ("importance ESS
        3,512 of 4,000 proposals": what its resampled population-level draws are worth, where
        their chain-based R-hat and ESS take repeats for fresh draws); None for a sampler's
        fit or when nothing was importance-sampled."""
        from poolwise.inference.diagnostics.approx_check import importance_text

        numbers = self._approx_numbers() if self.method == "approx" else {}
        return importance_text(numbers) if numbers else None

    @property
    def posterior(self) -> xr.Dataset:
        return self.idata["posterior"].to_dataset()

    def summary(self, **kwargs: Any) -> pd.DataFrame:
        """One row per parameter: mean, sd, interval, MCSE, bulk/tail ESS, R-hat.

        The same as :func:`poolwise.summary` applied to this fit.

        Parameters
        ----------
        **kwargs : Any
            Keyword arguments of :func:`poolwise.summary`: ``prob`` (default 0.89), ``kind``
            (``"hdi"`` or ``"eti"``, default ``"hdi"``) and ``scale`` (``"logit"`` or
            ``"probability"``, default ``"logit"``).

        Returns
        -------
        pandas.DataFrame
            The table, indexed by parameter name.

        Raises
        ------
        SpecError
            When ``prob`` is not strictly between 0 and 1.
        """
        from poolwise.inference.summary import summary

        prob, kind, scale = (kwargs.get("prob", 0.89), kwargs.get("kind", "hdi"),
                             kwargs.get("scale", "logit"))
        try:
            key = (float(prob), str(kind), str(scale))
        except (TypeError, ValueError):
            return summary(self, **kwargs)  # summary() reports the bad argument
        if key not in self._summaries:
            self._summaries[key] = summary(self, **kwargs)
        return self._summaries[key].copy(deep=True)

    def __repr__(self) -> str:
        """Compact: model, data size, status, population parameters, findings (the draws are
        ``.idata``, the full table ``.summary()``)."""
        from poolwise.inference.display import fit_text

        return fit_text(self)

    def _repr_html_(self) -> str:
        from poolwise.inference.display import fit_html

        return fit_html(self)

    def row_level(self) -> xr.DataTree:
        """The DataTree with one entry per data row in ``observed_data`` and ``log_likelihood``.

        The fit stores them per row pattern (:mod:`poolwise.data.patterns`); ArviZ expects them per
        row
        (dimension ``obs``). For small data: it holds rows x draws values.

        Returns
        -------
        xarray.DataTree
            The fit's DataTree with every per-pattern group repeated to one entry per data row
            (coordinate ``obs``: the 1-based data row numbers).

        Raises
        ------
        SpecError
            When the row-level log-likelihood (rows x draws x 8 bytes) would not fit in the
            available memory.
        """
        return expand_rows(self)


def with_command(fit: Fit, command: str) -> Fit:
    """``fit`` with ``command`` (the command line that made it) recorded in its DataTree's
    attributes (:data:`COMMAND_ATTR`), so that a saved fit says how to reproduce its draws.
    The draws are shared, not copied."""
    from dataclasses import replace

    idata = fit.idata.copy(deep=False)
    idata.attrs = {**fit.idata.attrs, COMMAND_ATTR: str(command)}
    return replace(fit, idata=idata)


@functools.cache
def _versions() -> tuple[tuple[str, str], ...]:
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("poolwise", "nutpie", "numba", "numpy", "arviz-base", "arviz-stats", "xarray",
                "pandas"):
        try:
            out[pkg] = version(pkg)
        except Exception:  # noqa: BLE001 - not installed as a distribution
            out[pkg] = "unknown"
    return tuple(out.items())


def versions() -> dict[str, str]:
    """Versions of Python, the platform and every library that shapes the result."""
    return dict(_versions())
