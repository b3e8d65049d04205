"""The sampler adapter: the only module that imports nutpie.

Two ways to hand the compiled density to nutpie's Rust NUTS:

* ``"cfunc"`` (default): the numba C callbacks of :mod:`poolwise.engine.density`, called from
  Rust without the GIL. This goes through nutpie's compiled-model interface (the one its PyMC
  backend uses: ``nutpie._lib.PyMcModel``), which is not part of nutpie's documented API; the
  version is pinned and ``tests/engine/test_sampler.py`` checks that it gives the same draws
  as the public path.
* ``"pyfunc"``: nutpie's public ``from_pyfunc``; a Python call per gradient.

Before the ``"cfunc"`` path is used, :func:`cfunc_interface` checks nutpie's version and that
every piece of the compiled-model interface is there. When it is not (a nutpie release that
changed it), poolwise warns once and samples through the public path instead: slower, never a
crash.

nutpie keeps its trace in memory (Arrow), or for a large trace in a temporary zarr store on
disk (:data:`TraceStore`); either way only the draws after tuning become the DataTree, with the
same values (:func:`_after_tuning`, :func:`_from_zarr`).

An interrupt stops sampling and propagates: nutpie's blocking ``sample`` catches the
``KeyboardInterrupt`` of Ctrl-C while it waits and returns the trace so far, so poolwise starts
the sampler in the background and waits itself (:func:`_wait`); a trace that is shorter than
asked anyway raises :class:`~poolwise.errors.Interrupted` (:func:`check_complete`).

Why one module: it is the one place that imports nutpie (docs/architecture.md); the two ways
of handing it the model and the two ways of reading its trace back depend on the same private
pieces of nutpie (its compiled-model interface, its converter, its store's layout), which a
nutpie release changes together.
"""

from __future__ import annotations

import contextlib
import importlib
import tempfile
import time
import warnings
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
import xarray as xr

from poolwise.engine import density as D
from poolwise.engine.layout import PackedModel
from poolwise.errors import Interrupted, PoolwiseWarning, SamplingError, SpecError
from poolwise.progress import sampling_callback

__all__ = ["SamplerConfig", "run_nuts", "EngineKind", "STAT_NAMES", "TraceStore",
           "cfunc_interface", "check_complete", "large_trace", "stored_dtypes", "trace_bytes",
           "trace_on_disk"]

#: nutpie releases whose compiled-model interface the "cfunc" path was written and tested against
CFUNC_NUTPIE_VERSIONS = ("0.16.",)

EngineKind = Literal["cfunc", "pyfunc"]

#: nutpie's sample-stat names -> the canonical names used by ArviZ and poolwise
STAT_NAMES = {
    "depth": "tree_depth",
    "maxdepth_reached": "reached_max_treedepth",
    "mean_tree_accept": "acceptance_rate",
    "logp": "lp",
}


@dataclass(frozen=True)
class SamplerConfig:
    """Sampler settings, in PyMC / nutpie vocabulary."""

    chains: int = 4
    tune: int = 1000
    draws: int = 1000
    seed: int | None = None
    target_accept: float = 0.8
    max_treedepth: int = 10
    cores: int | None = None
    progress: bool = False
    engine: EngineKind = "cfunc"

    def __post_init__(self) -> None:
        def whole(name: str, v: Any, lo: int) -> None:
            if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < lo:
                raise SpecError(f"{name} must be a whole number >= {lo}; got {v!r}")

        whole("chains", self.chains, 1)
        if isinstance(self.tune, int | np.integer) and not isinstance(self.tune, bool) \
                and self.tune == 0:
            # nutpie panics without a tuning step (its adaptation state is never set up)
            raise SpecError(
                "tune must be a whole number >= 1; got 0 (the sampler needs tuning steps to "
                "adapt its step size; use tune >= 100 for a usable fit)"
            )
        whole("tune", self.tune, 1)
        whole("draws", self.draws, 1)
        whole("max_treedepth", self.max_treedepth, 1)
        if self.seed is not None:
            whole("seed", self.seed, 0)
            if self.seed >= 2**63:
                raise SpecError(f"seed must be below 2**63; got {self.seed}")
        if self.cores is not None:
            whole("cores", self.cores, 1)
        ta = self.target_accept
        if isinstance(ta, bool) or not isinstance(ta, float | int) or not 0.0 < ta < 1.0:
            raise SpecError(f"target_accept must lie strictly between 0 and 1; got {ta!r}")
        if self.engine not in ("cfunc", "pyfunc"):
            raise SpecError(f"engine must be 'cfunc' or 'pyfunc'; got {self.engine!r}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "chains": self.chains,
            "tune": self.tune,
            "draws": self.draws,
            "seed": self.seed,
            "target_accept": self.target_accept,
            "max_treedepth": self.max_treedepth,
            "engine": self.engine,
        }


def _str_coords(packed: PackedModel) -> dict[str, list[str]]:
    return {k: [str(v) for v in vals] for k, vals in packed.coords.items()}


def _initial_point(dim: int):
    def init(seed: int) -> np.ndarray:
        return np.random.default_rng(seed).uniform(-2.0, 2.0, size=dim)

    return init


def _import_nutpie() -> Any:
    """Import nutpie without the plotting stack.

    nutpie's ``sample`` module does ``import arviz`` but only calls ``arviz.from_dict`` and
    ``arviz.dict_to_dataset``, which live in arviz-base; the ``arviz`` meta-package also
    imports arviz-plots and matplotlib.pyplot (about 0.5 s of every CLI run). Unless the user
    has imported arviz already, nutpie is handed arviz-base under that name while it is
    imported, and ``sys.modules`` is restored right after, so a later ``import arviz`` anywhere
    gets the real package.
    """
    import sys

    if "nutpie.sample" in sys.modules or "arviz" in sys.modules:
        import nutpie

        return nutpie
    import arviz_base

    sys.modules["arviz"] = arviz_base
    try:
        import nutpie
    finally:
        if sys.modules.get("arviz") is arviz_base:
            del sys.modules["arviz"]
    return nutpie


_INTERFACE: tuple[bool, str] | None = None


def cfunc_interface() -> tuple[bool, str]:
    """Whether nutpie's compiled-model interface is usable here, and why not if it is not.

    Checks the nutpie version against :data:`CFUNC_NUTPIE_VERSIONS` and that every name the
    ``"cfunc"`` path calls exists. The answer is computed once per process.
    """
    global _INTERFACE
    if _INTERFACE is None:
        nutpie = _import_nutpie()
        version = str(getattr(nutpie, "__version__", "unknown"))
        missing = []
        try:
            from nutpie import _lib

            nutpie_sample = importlib.import_module("nutpie.sample")
        except ImportError as err:  # pragma: no cover - depends on the installed nutpie
            _INTERFACE = (False, f"nutpie {version} has no compiled-model interface ({err})")
            return _INTERFACE
        for owner, name in ((_lib, "PyMcModel"), (_lib, "LogpFunc"), (_lib, "ExpandFunc"),
                            (_lib, "PyVariable"), (_lib, "PySampler"),
                            (nutpie_sample, "CompiledModel")):
            if not hasattr(owner, name):
                missing.append(name)
        if not missing and not hasattr(_lib.PySampler, "from_pymc"):
            missing.append("PySampler.from_pymc")
        if missing:
            _INTERFACE = (False, f"nutpie {version} lacks {', '.join(missing)}")
        elif not version.startswith(CFUNC_NUTPIE_VERSIONS):
            tested = ", ".join(v + "x" for v in CFUNC_NUTPIE_VERSIONS)
            _INTERFACE = (False, f"nutpie {version} is not a release the C-callback path was "
                                 f"tested with ({tested})")
        else:
            _INTERFACE = (True, "")
    return _INTERFACE


def _compiled_cfunc(packed: PackedModel, dtypes: list[str]):
    _import_nutpie()
    from nutpie import _lib
    from nutpie.sample import CompiledModel

    @dataclass(frozen=True)
    class _Compiled(CompiledModel):
        packed: PackedModel | None = None

        @property
        def n_dim(self) -> int:
            return packed.dim

        @property
        def shapes(self) -> dict[str, tuple[int, ...]]:
            return {v.name: (v.size,) if v.dims else () for v in packed.variables}

        @property
        def coords(self) -> dict[str, list]:
            return _str_coords(packed)

        def _make_sampler(self, settings, init_mean, cores, progress_type, *rest):
            return _lib.PySampler.from_pymc(
                settings, cores, self._make_model(init_mean), progress_type, *rest
            )

        def _make_model(self, init_mean):
            buf_ptr = packed.buffer.ctypes.data
            expand_fn = _lib.ExpandFunc(
                packed.dim, packed.n_expanded, D.expand_cfunc.address, buf_ptr, self
            )
            logp_fn = _lib.LogpFunc(D.logp_cfunc.address, buf_ptr, self)
            coords = _str_coords(packed)
            dim_sizes = {k: len(v) for k, v in coords.items()}
            variables = _lib.PyVariable.new_variables(
                [v.name for v in packed.variables],
                list(dtypes),
                [(v.size,) if v.dims else () for v in packed.variables],
                dim_sizes,
                {v.name: v.dims for v in packed.variables if v.dims},
            )
            return _lib.PyMcModel(
                logp_fn,
                expand_fn,
                variables,
                packed.dim,
                dim_sizes,
                coords,
                _initial_point(packed.dim),
                None,
            )

    return _Compiled(dims={v.name: v.dims for v in packed.variables if v.dims}, packed=packed)


def _compiled_pyfunc(packed: PackedModel, dtypes: list[str]):
    _import_nutpie()
    from nutpie.compiled_pyfunc import from_pyfunc

    ib, fb = packed.ib, packed.fb
    names = [v.name for v in packed.variables]
    sizes = [v.size for v in packed.variables]
    shapes = [(v.size,) if v.dims else () for v in packed.variables]

    def make_logp():
        def logp(x):
            grad = np.empty_like(x)
            val = D.logp_grad(x, grad, ib, fb)
            return val, grad

        return logp

    def make_expand(seed1, seed2, chain):
        def expand(x):
            out = np.empty(packed.n_expanded)
            D.expand(x, out, ib, fb)
            parts = np.split(out, np.cumsum(sizes)[:-1])
            return {nm: p.reshape(sh).astype(dt, copy=False)
                    for nm, p, sh, dt in zip(names, parts, shapes, dtypes, strict=True)}

        return expand

    return from_pyfunc(
        packed.dim,
        make_logp,
        make_expand,
        [np.dtype(dt) for dt in dtypes],
        shapes,
        names,
        coords=_str_coords(packed),
        dims={v.name: v.dims for v in packed.variables if v.dims},
        make_initial_point_fn=_initial_point(packed.dim),
    )


#: nutpie's per-draw statistics that exist only with ``store_*`` settings poolwise never turns
#: on (the columns are there, all null); nutpie's own conversion skips them the same way
_UNSTORED_STATS = (
    "gradient", "unconstrained_draw", "mass_matrix_inv", "mass_matrix_eigvals",
    "mass_matrix_stds", "divergence_start", "divergence_end", "divergence_momentum",
    "divergence_start_gradient", "transformed_position", "transformed_gradient",
    "transformation_mu",
)


def _after_tuning(raw: Any, packed: PackedModel) -> xr.DataTree:
    """The DataTree (posterior, sample_stats) of nutpie's raw Arrow trace, from the draws after
    tuning only.

    nutpie keeps the tuning draws in its trace, and its own conversion turns them into NumPy
    arrays too before ``save_warmup=False`` drops them: with 10^5 group effects that is
    chains x tune x 10^5 values (3.2 GB at 4 x 1000) converted for nothing, and as long again
    as the draws kept. Here each chain's rows after tuning are handed to the same converter
    (nutpie's ``_arrow_to_arviz``), so the arrays are the ones nutpie would return."""
    from nutpie import __version__
    from nutpie.sample import _arrow_to_arviz

    draws, stats = raw.get_arrow_trace()
    post_draws, post_stats = [], []
    for d, s in zip(draws, stats, strict=True):
        n_tune = int(np.asarray(s.column("tuning").to_numpy()).sum())
        post_draws.append(d.slice(n_tune, d.num_rows - n_tune))
        post_stats.append(s.slice(n_tune, s.num_rows - n_tune))
    del draws, stats
    return _arrow_to_arviz(
        post_draws, post_stats, skip_vars=list(_UNSTORED_STATS),
        coords={k: pd.Index(v) for k, v in _str_coords(packed).items()}, save_warmup=False,
        attrs={"sample_stats": {"inference_library": "nutpie",
                                "inference_library_version": __version__}},
    )


#: where nutpie keeps its trace while it samples: "memory" (its Arrow trace, every tuning draw
#: included) or "disk" (a temporary zarr store: memory stays flat while it samples, and only
#: the draws after tuning are read back); "auto": on disk for a large trace
TraceStore = Literal["auto", "memory", "disk"]
#: a trace of this size or more (stored values x chains x iterations x 8 bytes) is large: with
#: "auto" it goes to disk (below it the Arrow trace is faster: no compression, no files), and
#: the group-level totals are stored as float32 (:func:`stored_dtypes`)
LARGE_TRACE_BYTES = 1 << 30


def trace_bytes(n_values: int, chains: int, iterations: int) -> int:
    """Bytes of nutpie's trace of ``n_values`` stored values per draw at the end of sampling,
    ``iterations`` (tuning included) per chain, at 8 bytes a value."""
    return 8 * int(n_values) * int(chains) * int(iterations)


def large_trace(n_values: int, chains: int, iterations: int) -> bool:
    """Whether the trace is large (:data:`LARGE_TRACE_BYTES`)."""
    return trace_bytes(n_values, chains, iterations) >= LARGE_TRACE_BYTES


def trace_on_disk(n_values: int, chains: int, iterations: int,
                  store: TraceStore = "auto") -> bool:
    """Whether nutpie's trace goes to a temporary zarr store (see :data:`TraceStore`)."""
    if store == "auto":
        return large_trace(n_values, chains, iterations)
    return store == "disk"


def stored_dtypes(packed: PackedModel, large: bool) -> list[str]:
    """The dtype nutpie stores each variable's draws in: float64, except the group-level
    totals of a large trace, float32. The sampler works in float64 either way (the same
    draws); float32 keeps 7 significant digits of each stored draw (CmdStan's CSV output
    keeps 6), far finer than the Monte Carlo error, and halves the memory and disk that 10^5
    group levels x 4000 draws take (3.2 GB -> 1.6 GB)."""
    return ["float32" if large and v.kind == "total" else "float64" for v in packed.variables]


#: nutpie's per-divergence statistics: in its zarr store one entry per divergence, in its Arrow
#: trace one per draw (filled at the divergent draws); given per draw here, as from Arrow, with
#: these values at draws without an entry
_DIVERGENCE_STATS = {"divergence_draw": np.uint64(0), "divergence_energy_error": np.nan,
                     "divergence_message": None}


def _per_draw(records: np.ndarray, diverging: np.ndarray, fill: Any) -> np.ndarray:
    """A per-divergence statistic (chain, entry) as one value per draw (chain, draw): chain
    c's k-th entry at its k-th divergent draw. nutpie 0.16's zarr store can lose a chain's
    entries (its chains resize the shared array, and the last resize wins): a chain whose
    entries are not all there gets none (``fill`` at every draw). poolwise reads only
    ``diverging``; saved fits never keep these details (:mod:`poolwise.output.io`)."""
    chains, draws = diverging.shape
    out = np.full((chains, draws), fill, dtype=object if fill is None else np.asarray(fill).dtype)
    for c in range(chains):
        where = np.flatnonzero(diverging[c])
        if c < records.shape[0] and len(where) <= records.shape[1]:
            vals = records[c, : len(where)]
            out[c, where] = vals.astype(object) if fill is None else vals
    return out


#: per-event statistics that only tuning has (mass-matrix updates): per draw in the Arrow
#: trace, with this value after tuning
_TUNING_EVENTS = {"transformation_update_id": np.int64(0)}


def _from_zarr(path: str, packed: PackedModel) -> xr.DataTree:
    """The DataTree (posterior, sample_stats) of nutpie's zarr store at ``path``, as
    :func:`_after_tuning` gives it from the Arrow trace: the same draws and statistics (its
    ``posterior`` and ``sample_stats`` groups hold the draws after tuning only; the warm-up
    groups are never read)."""
    import arviz_base
    import zarr
    from nutpie import __version__

    with _blosc_single_threaded():
        root = zarr.open_group(path, mode="r")
        post_g, stats_g = root["posterior"], root["sample_stats"]
        dims: dict[str, list[str]] = {}
        posterior = {}
        for v in packed.variables:
            posterior[v.name] = post_g[v.name][...]
            if v.dims:
                dims[v.name] = list(v.dims)
        diverging = np.asarray(stats_g["diverging"][...], dtype=bool)
        chains, draws = diverging.shape
        stats: dict[str, np.ndarray] = {}
        for name in stats_g.array_keys():
            if name in _UNSTORED_STATS:
                continue
            arr = stats_g[name]
            if name in _DIVERGENCE_STATS:
                stats[name] = _per_draw(arr[...], diverging, _DIVERGENCE_STATS[name])
            elif name in _TUNING_EVENTS:  # after tuning: no events, the Arrow trace's fill value
                if arr.shape[1] != 0:
                    raise SamplingError(f"nutpie's store has {name} entries after tuning")
                stats[name] = np.full((chains, draws), _TUNING_EVENTS[name])
            elif tuple(arr.metadata.dimension_names or ()) == ("chain", "draw"):
                stats[name] = arr[...]
    return arviz_base.from_dict(
        {"posterior": posterior, "sample_stats": stats}, dims=dims,
        coords={k: pd.Index(v) for k, v in _str_coords(packed).items()},
        attrs={"sample_stats": {"inference_library": "nutpie",
                                "inference_library_version": __version__}},
    )


@contextlib.contextmanager
def _blosc_single_threaded():
    """Blosc decompresses each chunk in one thread while this is active. zarr decodes its
    chunks in a pool of threads already, and Blosc's own global threads on top made reading
    nutpie's store about 10 times slower (25 s instead of 3 s for 1.6 GB of draws)."""
    try:
        from numcodecs import blosc
    except ImportError:  # pragma: no cover - zarr without numcodecs' Blosc
        yield
        return
    before = blosc.use_threads
    blosc.use_threads = False
    try:
        yield
    finally:
        blosc.use_threads = before


def run_nuts(packed: PackedModel, config: SamplerConfig, *,
             store: TraceStore = "auto") -> tuple[xr.DataTree, float]:
    """Sample with nutpie; returns the DataTree (posterior, sample_stats) and sampling seconds.
    ``store``: where nutpie's trace lives while it samples (:data:`TraceStore`); the draws are
    the same either way."""
    nutpie = _import_nutpie()
    engine = config.engine
    if engine == "cfunc":
        usable, why = cfunc_interface()
        if not usable:
            warnings.warn(
                f"{why}; sampling through nutpie's public from_pyfunc path instead (same draws, "
                "slower). Install a supported nutpie (see pyproject.toml) for full speed.",
                PoolwiseWarning,
                stacklevel=2,
            )
            engine = "pyfunc"
    iterations = config.tune + config.draws
    dtypes = stored_dtypes(packed, large_trace(packed.n_expanded, config.chains, iterations))
    compiled = (_compiled_cfunc(packed, dtypes) if engine == "cfunc"
                else _compiled_pyfunc(packed, dtypes))
    cores = config.cores or min(config.chains, _cpu_count())
    # the draws after tuning converted here (_after_tuning) where nutpie's converter is there
    raw = hasattr(importlib.import_module("nutpie.sample"), "_arrow_to_arviz")
    disk = trace_on_disk(packed.n_expanded, config.chains, iterations, store) \
        and hasattr(nutpie, "zarr_store")
    tmp = tempfile.TemporaryDirectory(prefix="poolwise-trace-") if disk else None
    extra = {"zarr_store": nutpie.zarr_store.LocalStore(tmp.name)} if tmp is not None else {}
    start = time.perf_counter()
    try:
        background = nutpie.sample(
            compiled,
            draws=config.draws,
            tune=config.tune,
            chains=config.chains,
            cores=cores,
            seed=config.seed,
            save_warmup=False,
            **_progress(config),
            target_accept=float(config.target_accept),
            maxdepth=config.max_treedepth,
            return_raw_trace=raw or disk,
            blocking=False,
            **extra,
        )
        tree = _wait(background)
        del background
        if tmp is not None:
            del tree  # nutpie's handle on the store; the draws are read from its files
            tree = _from_zarr(tmp.name, packed)
        elif raw:
            tree = _after_tuning(tree, packed)
    except Exception as err:  # noqa: BLE001 - nutpie raises RuntimeError/ValueError variants
        reason = str(err).split("Stack backtrace:")[0].strip()
        raise SamplingError(f"the sampler failed: {reason}") from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                tmp.cleanup()
    elapsed = time.perf_counter() - start
    check_complete(tree, config)
    _relabel(tree, packed)
    return tree, elapsed


def _relabel(tree: xr.DataTree, packed: PackedModel) -> None:
    """Put the original group labels back on the posterior (nutpie takes string coordinates)
    and poolwise's names on the sampler statistics (:data:`STAT_NAMES`), in place."""
    for group in ("posterior",):
        ds = tree[group].to_dataset()
        ds = ds.assign_coords(
            {k: _label_array(v) for k, v in packed.coords.items() if k in ds.dims}
        )
        tree[group] = xr.DataTree(ds)
    stats = tree["sample_stats"].to_dataset()
    stats = stats.rename({k: v for k, v in STAT_NAMES.items() if k in stats})
    tree["sample_stats"] = xr.DataTree(stats)


def _progress(config: SamplerConfig) -> dict[str, Any]:
    """nutpie's progress arguments: the active reporter's callback (:mod:`poolwise.progress`,
    the command line's display) in place of nutpie's bar when there is one, else nutpie's bar
    as ``config.progress`` says."""
    callback = sampling_callback()
    if callback is None:
        return {"progress_bar": config.progress}
    return {"progress_bar": False, "progress_callback": callback, "progress_rate": 250}


def _wait(background: Any) -> Any:
    """The result of nutpie's background sampler once it has finished. An interrupt while it
    waits (Ctrl-C's ``KeyboardInterrupt``, the command line's SIGTERM) stops the sampler,
    discards its draws and propagates. nutpie's own blocking ``sample`` catches the
    ``KeyboardInterrupt`` instead and returns the trace so far, NaN-padded to the longest
    chain: an interrupted fit looked finished, and the repair loop sampled it again."""
    try:
        return background.wait()
    except BaseException:
        with contextlib.suppress(Exception):
            background.cancel()
        raise


def check_complete(tree: xr.DataTree, config: SamplerConfig) -> None:
    """Raise :class:`~poolwise.errors.Interrupted` when a sampler's trace is shorter than
    ``config`` asks: fewer chains or draws, or chains whose last draws are NaN in every
    variable (nutpie pads the chains of an interrupted run to the longest one). A partial
    trace is never diagnosed, repaired or saved as a fit."""
    post = tree["posterior"]
    chains, draws = post.sizes.get("chain", 0), post.sizes.get("draw", 0)
    have = [draws] * chains + [0] * max(0, config.chains - chains)
    floats = [v for v in post.data_vars.values()
              if v.dtype.kind == "f" and v.dims[:2] == ("chain", "draw")]
    if floats and draws:
        probe = min(floats, key=lambda v: v.size)
        flat = np.asarray(probe.values).reshape(chains, draws, -1)
        for c in range(chains):
            blank = np.isnan(flat[c]).all(axis=1)
            kept = np.flatnonzero(~blank)
            n = int(kept[-1]) + 1 if kept.size else 0
            if n < draws and all(np.isnan(np.asarray(v.values[c, n:])).all() for v in floats):
                have[c] = n
    short = [(c, n) for c, n in enumerate(have) if n < config.draws]
    if short:
        where = ", ".join(f"chain {c} has {n} of {config.draws}" for c, n in short[:4])
        more = f" and {len(short) - 4} more chains" if len(short) > 4 else ""
        raise Interrupted(f"the sampler stopped before the end ({where} draws{more})")


def _label_array(labels: list) -> np.ndarray:
    """Labels as an array; text stays Python str (object dtype): numpy's fixed-width unicode
    dtype drops trailing NUL characters, which turned label 'a\\x00' into 'a' and '\\x00' into ''
    (a label that no longer matched its group, or two labels that collided)."""
    arr = np.asarray(labels)
    return np.asarray(labels, dtype=object) if arr.dtype.kind == "U" else arr


def _cpu_count() -> int:
    import os

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)
