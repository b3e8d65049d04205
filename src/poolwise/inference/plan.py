"""The run plan, checked right before sampling: settings that need the model, and memory.

:func:`check_run` is called by :func:`poolwise.inference.sampling.sample_spec` (and
:func:`poolwise.fit`
for the whole plan): flat priors on separated or constant data give an improper posterior
[§7.22 of docs/reliability.md], the memory of the whole plan - every attempt of the repair
ladder, the per-pattern log-likelihood and post-processing - must fit [§7.31, R.10], and
weak but valid settings warn in PyMC's words [§7.33]. The data checks that come before it
are in :mod:`poolwise.data.validate`. :func:`check_approx_run` is the same for
``method="approx"``, whose plan decides how many draws it stores (:func:`approx_plan`).

Why one module: both methods' plans count memory alike (the stored values per draw, the
float32 rule of a large fit, the cell temporaries of a block of draws) and run the same
model checks; split, each rule would be written twice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from poolwise.data.validate import (
    CHAINS_WARNING,
    DRAWS_WARNING,
    MIN_DRAWS,
    RECOMMENDED_CHAINS,
    _check_estimable,
    _did_you_mean,
    emit_warnings,
    separated_coefficients,
)
from poolwise.errors import FormulaError, SpecError
from poolwise.resources import available_memory_bytes, fmt_bytes, memory_backed

__all__ = [
    "APPROX_COPIES",
    "APPROX_MAX_VALUES",
    "APPROX_MIN_DRAWS",
    "ApproxPlan",
    "MemoryPlan",
    "approx_group_dtype",
    "approx_plan",
    "check_approx_run",
    "available_memory_bytes",
    "check_run",
    "estimate_draws_bytes",
    "memory_plan",
    "stored_values_per_draw",
]




def estimate_draws_bytes(chains: int, draws: int, n_params: int, n_rows: int) -> int:
    """Bytes of the stored draws: chains x draws x (parameters + log-likelihood values) x 8."""
    return int(chains) * int(draws) * (int(n_params) + int(n_rows)) * 8




#: bytes per stored value of the posterior at its peak: nutpie's trace, its DataTree, and the
#: original-scale copy (:func:`poolwise.model.predictor.to_original_scale`) live at the same time;
#: one fewer when nutpie's trace is on disk (:func:`poolwise.engine.sampler.trace_on_disk`)
POSTERIOR_COPIES = 3
#: sampler statistics stored per draw (diverging, energy, step size, depth, ...)
STATS_PER_DRAW = 12
#: cell-sized arrays per draw of the post-processing that holds draws x cells values for a
#: block of draws (the prior predictive check: eta, p and the per-level sums; the
#: log-likelihood itself holds none, :mod:`poolwise.model.likelihood`)
CELL_TEMPORARIES = 3
#: cell values per chain in such a block (the blocks of draws are ``draw_chunk(n_cells)`` long)
CHUNK_VALUES = 1 << 21


def draw_chunk(n_cells: int) -> int:
    """Draws per chain in a block of post-processing (cell-sized temporaries: chains x this x
    cells)."""
    return max(1, CHUNK_VALUES // max(int(n_cells), 1))
#: nutpie's trace holds every tuning draw's stored values too until sampling ends (the draws
#: after tuning are converted from it: poolwise.engine.sampler); bytes per tuning draw and
#: stored value (none when the trace is on disk)
TUNING_COPIES = 1


@dataclass(frozen=True)
class MemoryPlan:
    """Estimated peak bytes of a fit, before anything samples.

    Per draw (chains x draws of them): ``POSTERIOR_COPIES`` x the stored parameters, the
    sampler statistics and, with the log-likelihood group, one value per row pattern (cell x
    outcome, :mod:`poolwise.data.patterns`); plus ``CELL_TEMPORARIES`` cell-sized arrays for one
    block of draws (:func:`draw_chunk`) of post-processing.
    nutpie's trace also holds the tuning draws' stored values while it samples
    (``TUNING_COPIES`` x parameters x 8 bytes per tuning draw).
    A large trace (:data:`poolwise.engine.sampler.LARGE_TRACE_BYTES` or more) goes to a
    temporary zarr store on disk while nutpie samples (``trace_on_disk``, of the first
    attempt), and its group-level totals are stored as float32 (4 bytes a value, not 8): then
    neither the trace nor its tuning draws count here, and ``trace_bytes`` (the largest
    attempt's) is the disk it needs, checked against ``disk_free`` (the temporary folder's).
    ``first_attempt`` is the plan at the requested tune and draws, ``ladder`` at ``max_tune``
    and ``max_draws`` (the largest attempt of the repair ladder); ``draws_that_fit`` is the
    most draws per chain that fit in ``available`` next to ``max_tune`` tuning draws (None:
    unknown memory)."""

    chains: int
    draws: int
    max_draws: int
    tune: int
    max_tune: int
    n_params: int
    n_group_params: int
    n_patterns: int
    n_cells: int
    log_likelihood: bool
    per_draw: int
    first_attempt: int
    ladder: int
    available: int | None
    draws_that_fit: int | None
    trace_on_disk: bool = False
    trace_bytes: int = 0
    temp_dir: str = ""
    disk_free: int | None = None
    temp_in_memory: bool = False

    def disk_message(self) -> str:
        iterations = self.max_tune + self.max_draws
        return (
            f"nutpie's trace of this fit ({self.chains} chains x {iterations:,} iterations x "
            f"{self.n_params:,} values = {fmt_bytes(self.trace_bytes)}) is "
            f"kept on disk while it samples, in {self.temp_dir}, which has "
            f"{fmt_bytes(self.disk_free or 0)} free - point TMPDIR to a folder with room, or "
            "reduce draws or chains (--draws, --chains; draws=, chains=)"
        )

    def message(self) -> str:
        ll = (f" + {self.n_patterns:,} log-likelihood values (one per row pattern)"
              if self.log_likelihood else "")
        fit_draws = (f"; at most {self.draws_that_fit:,} draws per chain fit"
                     if self.draws_that_fit else "")
        fix = (", or skip the log-likelihood (--no-log-likelihood; log_likelihood=False), which "
               "only LOO needs" if self.log_likelihood else "")
        if self.temp_in_memory:
            fix += (f"; the sampler's trace counts too: it goes to {self.temp_dir}, which is held "
                    "in memory (tmpfs) - point TMPDIR to a folder on disk")
        avail = fmt_bytes(self.available) if self.available is not None else "?"
        copies = POSTERIOR_COPIES - (1 if self.trace_on_disk else 0)
        f32 = " (4 for the group-level totals)" if self.trace_on_disk else ""
        tuning = ("" if self.trace_on_disk
                  else f"{self.tune:,} tuning draws of the parameters per chain and ")
        return (
            f"model has {self.n_group_params:,} group parameters ({self.n_params:,} parameters "
            f"in all); estimated memory {fmt_bytes(self.first_attempt)} for {self.chains} "
            f"chains x {self.draws:,} draws x ({copies} x {self.n_params:,} parameters + "
            f"{STATS_PER_DRAW} sampler statistics{ll}) x 8 bytes{f32}, plus {tuning}"
            f"cell-sized temporaries, exceeds {avail} "
            "available"
            f"{fit_draws} - reduce draws or chains (--draws, --chains; draws=, chains=){fix}"
        )


@dataclass(frozen=True)
class _Footprint:
    """The bytes of a fit's parts at any number of tuning draws ``t`` and draws ``dr`` per
    chain (:class:`MemoryPlan` says what counts); ``lg``: whether the trace is large (on disk,
    float32 group-level totals); ``in_ram``: whether the temporary folder is held in memory."""

    n_params: int
    n_totals: int
    n_patterns: int
    n_cells: int
    chains: int
    in_ram: bool

    def large(self, t: int, dr: int) -> bool:
        """A large trace: on disk, float32 totals."""
        from poolwise.engine.sampler import large_trace

        return large_trace(self.n_params, self.chains, t + dr)

    def stored(self, lg: bool) -> int:
        """Bytes of one draw's stored values."""
        return (4 if lg else 8) * self.n_totals + 8 * (self.n_params - self.n_totals)

    def per(self, lg: bool) -> int:
        """Bytes per draw of every chain."""
        return ((POSTERIOR_COPIES - int(lg)) * self.stored(lg)
                + 8 * (STATS_PER_DRAW + self.n_patterns))

    def trace_in_memory(self, t: int, dr: int, lg: bool) -> int:
        """nutpie's Arrow trace holds the tuning draws; a large trace in a tmpfs folder holds
        every iteration; one on disk holds nothing in memory."""
        if not lg:
            return TUNING_COPIES * self.stored(lg) * self.chains * t
        return self.stored(lg) * self.chains * (t + dr) if self.in_ram else 0

    def temp(self, dr: int) -> int:
        """Cell-sized temporaries: a block of draws at a time (:func:`draw_chunk`)."""
        return (8 * CELL_TEMPORARIES * self.n_cells * self.chains
                * min(dr, draw_chunk(self.n_cells)))

    def attempt(self, t: int, dr: int) -> int:
        """The peak of one attempt."""
        lg = self.large(t, dr)
        return self.per(lg) * self.chains * dr + self.temp(dr) + self.trace_in_memory(t, dr, lg)

    def draws_that_fit(self, avail: int, top: int, top_tune: int) -> int:
        """The most draws per chain that fit in ``avail`` next to ``top_tune`` tuning draws:
        with the trace in memory (unless even no draws make it large), and with a large
        trace."""
        room = max(avail - self.temp(top), 0)
        small_fit = 0 if self.large(top_tune, 0) else int(
            max(room - self.trace_in_memory(top_tune, 0, False), 0)
            // max(self.per(False) * self.chains, 1))
        ram = self.stored(True) if self.in_ram else 0  # per draw of a large trace in tmpfs
        large_fit = int(max(room - ram * self.chains * top_tune, 0)
                        // max((self.per(True) + ram) * self.chains, 1))
        return max(small_fit, large_fit) if self.large(top_tune, large_fit) else small_fit


def _disk_free(temp_dir: str) -> int | None:
    """The free bytes of the temporary folder (None: unknown)."""
    import shutil

    try:
        return shutil.disk_usage(temp_dir).free
    except OSError:
        return None


def memory_plan(
    spec: Any,
    config: Any,
    *,
    n_params: int | None = None,
    log_likelihood: bool = True,
    max_draws: int | None = None,
    max_tune: int | None = None,
) -> MemoryPlan:
    """The memory a fit of ``spec`` with ``config`` needs at its peak, repair ladder included
    (:class:`MemoryPlan`)."""
    import tempfile

    from poolwise.data.patterns import row_patterns

    d = spec.design
    if n_params is None:
        n_params = stored_values_per_draw(spec)
    chains, draws, tune = int(config.chains), int(config.draws), int(config.tune)
    top = max(draws, int(max_draws) if max_draws is not None else draws)
    top_tune = max(tune, int(max_tune) if max_tune is not None else tune)
    # a temporary folder in memory (tmpfs, as /tmp is on many systems): the trace "on disk"
    # takes memory after all, tuning draws included
    temp_dir = tempfile.gettempdir()
    fp = _Footprint(
        n_params=int(n_params),
        n_totals=sum(t.group.n_levels * t.group.n_coefs for t in spec.terms),
        n_patterns=row_patterns(d).n_patterns if log_likelihood else 0,
        n_cells=d.n_cells,  # the prior-sensitivity check needs them too
        chains=chains,
        in_ram=memory_backed(temp_dir),
    )
    avail = available_memory_bytes()
    disk = fp.large(top_tune, top)
    return MemoryPlan(
        chains=chains, draws=draws, max_draws=top, tune=tune, max_tune=top_tune,
        n_params=fp.n_params,
        n_group_params=fp.n_totals,
        n_patterns=fp.n_patterns,
        n_cells=fp.n_cells, log_likelihood=log_likelihood, per_draw=fp.per(fp.large(tune, draws)),
        first_attempt=fp.attempt(tune, draws),
        ladder=fp.attempt(top_tune, top),
        available=avail,
        draws_that_fit=fp.draws_that_fit(avail, top, top_tune) if avail is not None else None,
        trace_on_disk=fp.large(tune, draws),
        trace_bytes=fp.stored(True) * chains * (top_tune + top) if disk else 0,
        temp_dir=temp_dir, disk_free=_disk_free(temp_dir) if disk else None,
        temp_in_memory=fp.in_ram and disk,
    )




#: bytes per stored value of ``method="approx"`` at its peak, per draw: the draws, their copy
#: on the original scale (:func:`poolwise.model.scale.to_original_scale`) and the summary's
#: temporaries (a block at a time, but the clustered MCSE's reordered copy of a block and the
#: file's encoding buffers come on top); measured: see bench/README.md "approx at scale"
APPROX_COPIES = 3
#: the fewest draws per chain ``method="approx"`` stores when memory is short (4 chains: the
#: Monte Carlo error of a mean is then at most sd / 14)
APPROX_MIN_DRAWS = 50
#: the most group-effect values ``method="approx"`` stores (draws x levels): 1.6 GB as
#: float32, in memory and in the saved fit.nc; 4 x 1000 draws of 100,000 levels, 4 x 100 of
#: 10^6 (each draw costs its share of every later step: the summary, the checks, the file)
APPROX_MAX_VALUES = 400_000_000


@dataclass(frozen=True)
class ApproxPlan:
    """How many draws per chain ``method="approx"`` stores: the draws asked for, or fewer when
    those would not fit in the available memory (its draws are independent, so fewer draws
    cost only Monte Carlo precision, which the note states); too little memory even for
    ``APPROX_MIN_DRAWS`` is an error before anything runs (:meth:`message`)."""

    chains: int
    draws: int
    stored: int
    values_per_draw: int
    patterns: int
    per_draw: int
    available: int | None
    capped: bool = False  # by APPROX_MAX_VALUES, not by memory
    temporaries: int = 0  # bytes of the cell-sized temporaries of a block of draws

    @property
    def fits(self) -> bool:
        return self.stored >= min(self.draws, APPROX_MIN_DRAWS)

    def _need(self, draws: int) -> str:
        ll = (f" + {self.patterns:,} log-likelihood values" if self.patterns else "")
        return (f"{self.chains} chains x {draws:,} draws x ({APPROX_COPIES} x "
                f"{self.values_per_draw:,} stored values{ll}), with "
                f"{fmt_bytes(self.temporaries)} of cell-sized temporaries, need "
                f"{fmt_bytes(self.per_draw * self.chains * draws + self.temporaries)} of the "
                f"{fmt_bytes(self.available or 0)} available")

    def _fix(self) -> str:
        return (", or skip the log-likelihood (--no-log-likelihood; log_likelihood=False), "
                "which only LOO needs" if self.patterns else "")

    def note(self) -> str | None:
        """What was stored instead of what was asked, and what it costs; None when all."""
        if self.stored >= self.draws:
            return None
        total = self.chains * self.stored
        why = (f"it stores at most {APPROX_MAX_VALUES:,} group-effect values (draws x levels; "
               "1.6 GB as float32, in memory and in the saved fit)" if self.capped
               else self._need(self.draws))
        more = "" if self.capped else f"; a machine with more memory stores more{self._fix()}"
        return (f"method='approx' stores {self.chains} x {self.stored:,} draws, not "
                f"{self.chains} x {self.draws:,}: {why}; its draws are independent, so the "
                f"Monte Carlo error of a posterior mean is about its sd / "
                f"{math.sqrt(total):.0f} ({total:,} draws){more}")

    def message(self) -> str:
        return (f"not enough memory for method='approx': {self._need(APPROX_MIN_DRAWS)} even "
                f"at its fewest ({APPROX_MIN_DRAWS} draws per chain) - use a machine with more "
                f"memory{self._fix()}")


def approx_group_dtype(spec: Any, chains: int, draws: int) -> Any:
    """The dtype ``method="approx"`` stores its group effects in: float32 when the fit is
    large, by the rule of the sampler's large trace (:func:`poolwise.engine.sampler.
    large_trace`, the same 7 significant digits of each draw), float64 otherwise."""
    from poolwise.engine.sampler import large_trace

    large = large_trace(stored_values_per_draw(spec), chains, draws)
    return np.float32 if large and spec.terms else np.float64


def approx_plan(spec: Any, config: Any, *, log_likelihood: bool = True) -> ApproxPlan:
    """The draws per chain ``method="approx"`` stores (:class:`ApproxPlan`): per draw, every
    stored value ``APPROX_COPIES`` times (the group effects of a large fit as float32, by the
    sampler's rule: :func:`approx_group_dtype`) and one log-likelihood
    value per row pattern; plus the cell-sized temporaries of one block of draws
    (:func:`draw_chunk`)."""
    from poolwise.data.patterns import row_patterns

    d = spec.design
    chains, draws = int(config.chains), int(config.draws)
    values = stored_values_per_draw(spec)
    totals = sum(t.group.n_levels * t.group.n_coefs for t in spec.terms)
    patterns = row_patterns(d).n_patterns if log_likelihood else 0

    def per(dr: int) -> int:  # bytes per draw of every chain at dr draws per chain
        size = np.dtype(approx_group_dtype(spec, chains, dr)).itemsize
        return APPROX_COPIES * (size * totals + 8 * (values - totals)) + 8 * patterns

    avail = available_memory_bytes()
    # the cap on stored group values, never below the fewest draws (memory decides below it)
    cap = max(APPROX_MAX_VALUES // max(totals * chains, 1), APPROX_MIN_DRAWS)
    stored = min(draws, cap)
    temp = 8 * CELL_TEMPORARIES * d.n_cells * chains * min(draws, draw_chunk(d.n_cells))
    if avail is not None:
        room = max(avail - temp, 0)
        stored = min(stored, room // max(per(draws) * chains, 1))
        if stored < draws and per(stored) != per(draws):  # fewer draws: no longer large
            stored = min(stored, room // max(per(stored) * chains, 1))
    return ApproxPlan(chains=chains, draws=draws, stored=int(stored), values_per_draw=values,
                      patterns=patterns, per_draw=per(draws), available=avail,
                      capped=cap < draws and stored == cap, temporaries=temp)


def check_approx_run(spec: Any, config: Any, *, log_likelihood: bool = True) -> ApproxPlan:
    """:func:`check_run`'s checks for ``method="approx"``, before it runs: an SD prior that
    names no grouping factor, an improper posterior (a flat prior on a separated
    coefficient), and memory (:func:`approx_plan`: SpecError when even the fewest draws do not
    fit). Returns the plan."""
    _check_sd_prior_names(spec)
    _check_proper_posterior(spec)
    plan = approx_plan(spec, config, log_likelihood=log_likelihood)
    if not plan.fits:
        raise SpecError(plan.message())
    return plan


def stored_values_per_draw(spec: Any) -> int:
    """Natural-scale values stored per draw: fixed coefficients, group SDs, correlations and
    every group-level effect (as :func:`poolwise.engine.layout.pack` lays them out)."""
    n = len(spec.design.fixed_names)
    for t in spec.terms:
        L, C = t.group.n_levels, t.group.n_coefs
        n += (C if t.estimated else 0) + (C * (C - 1) // 2 if t.correlated else 0) + L * C
    return n


def _check_sd_prior_names(spec: Any) -> None:
    """[§7.33] a prior for the SD of a grouping factor the formula does not have would be
    ignored silently (a typo such as sd_distrcit): SpecError."""
    groups = [g.group_name for g in spec.design.formula.groups]
    unknown = [k for k in spec.priors.sd_by_group if k not in groups]
    if unknown:
        close = _did_you_mean(unknown[0], groups) if groups else []
        hint = f"did you mean sd_{close[0]}? " if close else ""
        have = ", ".join(groups) if groups else "none (the formula has no group term)"
        raise SpecError(
            f"prior sd_{unknown[0]} names no grouping factor of the formula; {hint}its grouping "
            f"factors are: {have}"
        )


def _check_proper_posterior(spec: Any) -> None:
    """[§7.22] improper posteriors: SpecError for a flat prior on a coefficient that separates
    the outcome, or on the intercept of a constant outcome."""
    d = spec.design
    flat = [
        name
        for name, prior in zip(d.fixed_names, spec.fixed_priors, strict=True)
        if not prior.spec.proper
    ]
    if not flat:
        return
    outcome = d.formula.response.successes
    sep = separated_coefficients(d.fixed_names, d.X, d.y, d.n, outcome)
    for name in flat:
        if name in sep:
            raise SpecError(
                f"flat prior with separated data gives an improper posterior: predictor "
                f"'{name}' perfectly separates the outcome ({sep[name]}); give its "
                "coefficient a proper prior, e.g. b=normal(0, 2.5)"
            )
    if "Intercept" in flat and (not d.y.any() or np.array_equal(d.y, d.n)):
        raise SpecError(
            f"flat prior with a constant outcome gives an improper posterior: outcome "
            f"'{outcome}' is the same in all {d.n_rows} rows; give the intercept a proper "
            "prior, e.g. intercept=normal(0, 1.5)"
        )


def check_run(
    spec: Any,
    config: Any,
    *,
    n_params: int | None = None,
    log_likelihood: bool = True,
    warn_settings: bool = True,
    max_draws: int | None = None,
) -> tuple[str, ...]:
    """Checks that need the priors and the sampler settings; run before anything samples
    (:func:`poolwise.fit.fit` calls it before the pilot run; :func:`poolwise.fit.sample_spec`
    repeats the error checks with ``warn_settings=False``).

    Raises :class:`SpecError` for a flat prior on a separated coefficient or on the intercept
    of a constant outcome [§7.22, §7.11], and when the first attempt would not fit in the
    available memory [§7.31] (:func:`memory_plan`; ``max_draws``: the most draws a repair
    attempt may use; :func:`poolwise.fit.fit` caps the ladder at what fits).
    With ``warn_settings``, emits and returns the warnings for weak but valid
    settings [§7.33]; otherwise returns ``()``.
    """
    d = spec.design
    # [R.8] nothing to estimate (also when complete pooling drops every group term)
    if not d.fixed_names and not spec.terms:
        _check_estimable(d.formula, "complete")
        raise FormulaError("the model has no parameters to estimate; add an intercept or terms",
                           d.formula.text)
    _check_sd_prior_names(spec)
    _check_proper_posterior(spec)
    # [§7.31] memory for the whole plan: every attempt of the repair ladder, post-processing
    plan = memory_plan(spec, config, n_params=n_params, log_likelihood=log_likelihood,
                       max_draws=max_draws)
    if plan.available is not None and plan.first_attempt > plan.available:
        raise SpecError(plan.message())
    if plan.disk_free is not None and plan.trace_bytes > plan.disk_free:
        raise SpecError(plan.disk_message())
    # [§7.33] weak but valid settings, in PyMC's words
    if not warn_settings:
        return ()
    warn: list[str] = []
    if config.chains < RECOMMENDED_CHAINS:
        warn.append(f"{CHAINS_WARNING} (chains={config.chains})")
    if config.draws < MIN_DRAWS:
        warn.append(f"{DRAWS_WARNING} (draws={config.draws} per chain; use at least {MIN_DRAWS})")
    emit_warnings(warn, stacklevel=4)
    return tuple(warn)
