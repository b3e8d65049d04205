"""Saving and loading a fit.

``save_fit(fit, dir)`` writes ``fit.nc`` (netCDF via h5netcdf; or ``fit.zarr``, zarr 3, with
``format="zarr"``), ``summary.csv``, ``result.json`` and the manifest ``poolwise.json``, and
replaces the folder as a whole (:mod:`poolwise.output.store`: atomic, locked, verified on load).
``load_fit(dir)`` rebuilds a usable
:class:`~poolwise.fit.Fit` from that folder alone, without the original data file, so
``summary()``, ``diagnose()`` and reports work on a loaded fit.

What the tree holds besides the draws (``posterior``, ``sample_stats``, ``observed_data``,
``log_likelihood``):

* a ``poolwise_design`` group: every array of the ModelSpec (the cell design X, y, n; each
  group term's codes, Z, labels and per-level counts; the row -> cell mapping; per-level
  centering flags; scaling vectors) as variables named by their path (``spec.design.X``,
  ``spec.design.groups.0.labels``...), and in its attribute ``poolwise_fit`` the JSON of
  everything else in the Fit: the spec's formula, priors, link, pooling, per-term settings,
  the SamplerConfig, the Diagnosis, timings, warnings and repair log. The schema (format
  ``"2"``) is explicit: each object is ``{"__type__": NAME, "fields": {...}}`` where NAME is
  one of the allowlist :func:`_types` (ModelSpec, Design, GroupDesign, TermSpec, Formula,
  Response, Term, GroupTerm, Prior, Priors, SamplerConfig, Diagnosis, Finding, Funnel,
  RepairLog, RepairAttempt, TermChoice, AutoChoice, RepairPolicy) and the fields are that
  class's init fields (new fields of these classes are saved without changes here). The
  decoder never imports or looks up a name from the file: an unknown type, field, tag or
  format version raises :class:`~poolwise.errors.StoreError` (CLI exit 3). Format 1 files
  (types named ``module:qualname``) are read through the same allowlist, matched exactly;
* root attributes, all JSON strings (netCDF cannot store dict attributes and changes
  1-element and empty lists; docs/reliability.md G4): the provenance written by
  :func:`poolwise.fit.sample_spec` (formula, settings, seed, versions of poolwise, nutpie,
  numba, numpy..., input SHA-256, rows and columns used), plus ``poolwise_timings``,
  ``poolwise_warnings``, ``poolwise_repair_log``, ``poolwise_diagnosis`` (readable copies for
  other tools), ``poolwise_variable_order`` (readers list variables alphabetically) and
  ``poolwise_format``.

Both formats round-trip losslessly (``DataTree.identical``), including non-ASCII,
space-containing and numeric-looking string labels and boolean ``diverging``.

Why one module: the saved-fit schema (the allowlist of types, the encoder and the decoder) is
one contract, kept in one place so that saving and loading cannot drift apart.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import json
import logging
import os
import re
import signal
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import xarray as xr

from poolwise.errors import StoreError
from poolwise.output.store import (
    FORMAT_VERSION,
    MANIFEST,
    read_manifest,
    safe_csv,
    verify_folder,
    write_folder,
    write_manifest,
)

if TYPE_CHECKING:
    from poolwise.comparison.pooling import PoolingComparison
    from poolwise.inference.fitted import Fit

log = logging.getLogger(__name__)

__all__ = [
    "save_fit",
    "load_fit",
    "storable",
    "to_datatree",
    "from_datatree",
    "write_tree",
    "read_tree",
    "write_fit_files",
    "estimate_tree_bytes",
    "estimate_fit_bytes",
    "estimate_comparison_bytes",
    "save_comparison",
    "load_comparison",
    "load_result",
    "read_kfold",
    "DESIGN_GROUP",
    "FORMAT_VERSION",
]

#: nutpie sample stats that are strings or per-divergence records; not needed downstream
_DROP_STATS = ("divergence_message", "divergence_draw", "divergence_energy_error")

DESIGN_GROUP = "poolwise_design"
#: formats this version reads; format 1 named types by module path (matched exactly)
READABLE_FORMATS = ("1", "2")
StoreFormat = Literal["netcdf", "zarr"]
_FILES = {"netcdf": "fit.nc", "zarr": "fit.zarr"}


#: a string variable whose values were escaped on the way out: HDF5 and numpy's fixed-width
#: strings end a string at its first NUL, so labels such as 'nul\x00' are stored as 'nul\\0'
#: (and a backslash as two) and restored on load
NUL_ESCAPED = "poolwise_nul_escaped"


def _escape_nul(items: list[str]) -> list[str]:
    return [x.replace("\\", "\\\\").replace("\x00", "\\0") for x in items]


def _unescape_nul(items: list[str]) -> list[str]:
    import re

    return [re.sub(r"\\(\\|0)", lambda m: "\\" if m.group(1) == "\\" else "\x00", x)
            for x in items]


def _has_nul(items: list[Any]) -> bool:
    return any(isinstance(x, str) and "\x00" in x for x in items)


def restore_nul_labels(tree: xr.DataTree) -> xr.DataTree:
    """Undo :data:`NUL_ESCAPED` escaping on every variable of a tree read from a file."""
    for node in tree.subtree:
        ds = node.to_dataset()
        changed = False
        for name in list(ds.variables):
            var = ds[name]
            if var.attrs.get(NUL_ESCAPED):
                vals = np.empty(var.shape, dtype=object)
                vals.reshape(-1)[:] = _unescape_nul([str(x) for x in var.values.ravel().tolist()])
                attrs = {k: v for k, v in var.attrs.items() if k != NUL_ESCAPED}
                new = xr.Variable(var.dims, vals, attrs)
                ds = ds.assign_coords({name: new}) if name in ds.coords else ds.assign({name: new})
                changed = True
        if changed:
            node.dataset = ds
    return tree


def storable(tree: xr.DataTree) -> xr.DataTree:
    """A copy of the tree that netCDF and zarr can store losslessly: nutpie's per-divergence
    string records dropped, object-dtype string coordinates and variables as fixed strings,
    dict attributes as JSON strings. Raises ``TypeError`` for any other object-dtype
    variable rather than dropping it silently."""
    groups = {}
    for node in tree.subtree:
        if node is tree:
            continue
        ds = node.to_dataset()
        if node.name == "sample_stats":
            ds = ds.drop_vars([v for v in _DROP_STATS if v in ds])
        for name in list(ds.variables):
            var = ds[name]
            if var.dtype != object:
                continue
            if not all(isinstance(v, str) for v in var.values.ravel().tolist()):
                raise TypeError(
                    f"cannot store {node.path}/{name}: object values that are not all strings"
                )
            items = var.values.ravel().tolist()
            attrs = dict(var.attrs)
            if _has_nul(items):
                items = _escape_nul(items)
                attrs[NUL_ESCAPED] = 1
            new = xr.Variable(var.dims, np.asarray(items, dtype=str).reshape(var.shape), attrs)
            ds = ds.assign_coords({name: new}) if name in ds.coords else ds.assign({name: new})
        ds.attrs = _storable_attrs(ds.attrs)
        groups[node.path] = ds
    out = xr.DataTree.from_dict(groups)
    out.attrs.update(_storable_attrs(tree.attrs))
    return out


def _storable_attrs(attrs: Mapping[Any, Any]) -> dict[Any, Any]:
    return {k: json.dumps(_jsonable(v)) if isinstance(v, Mapping) else v for k, v in attrs.items()}


# --------------------------------------------------------------------------------------------
# Fit <-> DataTree
# --------------------------------------------------------------------------------------------


@functools.cache
def _types() -> dict[str, type]:
    """The schema's allowlist: every type a saved fit may contain, by its stable name. The
    decoder builds these and nothing else; no name in a file is ever imported or looked up.
    A class added to the Fit's fields must be added here (saving it raises until it is)."""
    from poolwise.data.design import Design, GroupDesign
    from poolwise.data.weights import Weighting
    from poolwise.engine.sampler import SamplerConfig
    from poolwise.formula.terms import (
        BinOp,
        Bool,
        Call,
        Col,
        Formula,
        GroupTerm,
        Neg,
        Num,
        Paren,
        Response,
        Str,
        Term,
    )
    from poolwise.formula.transforms import Encoding, TransformState, VariableEncoding
    from poolwise.inference.diagnostics import Diagnosis, Finding, Funnel
    from poolwise.inference.repair import (
        AutoChoice,
        RepairAttempt,
        RepairLog,
        RepairPolicy,
        TermChoice,
    )
    from poolwise.model.priors import Prior, Priors
    from poolwise.model.spec import ModelSpec, TermSpec

    classes = (
        ModelSpec, TermSpec, Design, GroupDesign, Formula, Response, Term, GroupTerm, Prior,
        Priors, SamplerConfig, Diagnosis, Finding, Funnel, RepairLog, RepairAttempt,
        TermChoice, AutoChoice, RepairPolicy, Encoding, VariableEncoding, TransformState,
        Col, Num, Str, Bool, Paren, Neg, BinOp, Call, Weighting,
    )
    return {c.__name__: c for c in classes}


@functools.cache
def _legacy_types() -> dict[str, type]:
    """Format 1 named types by ``module:qualname`` of the modules they lived in then; the same
    allowlist, matched as exact strings (nothing is imported)."""
    out: dict[str, type] = {}
    for name, c in _types().items():
        for module in _FORMAT1_MODULES[name]:
            out[f"{module}:{c.__qualname__}"] = c
    return out


#: where each saved type lived when format 1 was written (AutoChoice and TermChoice moved from
#: poolwise.repair to poolwise.parameterization while format 1 was current)
_FORMAT1_MODULES: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(("ModelSpec", "TermSpec"), ("poolwise.model",)),
    **dict.fromkeys(("Design", "GroupDesign"), ("poolwise.design",)),
    **dict.fromkeys(("Formula", "Response", "Term", "GroupTerm", "Col", "Num", "Str", "Bool",
                     "Paren", "Neg", "BinOp", "Call"), ("poolwise.formula.terms",)),
    **dict.fromkeys(("Encoding", "VariableEncoding", "TransformState"),
                    ("poolwise.formula.transforms",)),
    **dict.fromkeys(("Prior", "Priors"), ("poolwise.priors",)),
    "SamplerConfig": ("poolwise.engine.sampler",),
    **dict.fromkeys(("Diagnosis", "Finding", "Funnel"), ("poolwise.diagnostics",)),
    **dict.fromkeys(("RepairLog", "RepairAttempt", "RepairPolicy"), ("poolwise.repair",)),
    **dict.fromkeys(("TermChoice", "AutoChoice"),
                    ("poolwise.parameterization", "poolwise.repair")),
    "Weighting": (),  # newer than format 1
}


@functools.cache
def _init_fields(cls: type) -> frozenset[str]:
    return frozenset(f.name for f in dataclasses.fields(cls) if f.init)


_ARRAY_KINDS = ("native", "object", "object-str", "object-str-nul")


class _Encoder:
    """Encodes the Fit's objects by the schema: each dataclass of the allowlist
    (:func:`_types`) as ``{"__type__": name, "fields": {...}}`` of its init fields, arrays as
    variables of the design group, tuples and dicts tagged, everything else plain JSON.
    Objects seen twice (a term's GroupDesign is also in ``design.groups``) are stored once
    and come back as the same object."""

    def __init__(self) -> None:
        self.arrays: dict[str, tuple[np.ndarray, str]] = {}
        self._seen: dict[int, str] = {}
        self._names = {c: name for name, c in _types().items()}

    def encode(self, v: Any, path: str) -> Any:
        if isinstance(v, np.ndarray):
            if id(v) in self._seen:
                return {"__ref__": self._seen[id(v)]}
            self._seen[id(v)] = path
            arr, how = _label_array(v)
            self.arrays[path] = (arr, how)
            return {"__array__": path, "kind": how}
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            if id(v) in self._seen:
                return {"__ref__": self._seen[id(v)]}
            name = self._names.get(type(v))
            if name is None:
                raise TypeError(
                    f"cannot save {path}: {type(v).__qualname__} is not in the saved-fit schema; "
                    "add it to poolwise.output.io._types"
                )
            self._seen[id(v)] = path
            fields = {
                f.name: self.encode(getattr(v, f.name), f"{path}.{f.name}")
                for f in dataclasses.fields(v) if f.init
            }
            return {"__type__": name, "__path__": path, "fields": fields}
        if isinstance(v, np.generic):
            return v.item()
        if v is None or isinstance(v, bool | int | float | str):
            return v
        if isinstance(v, tuple):
            return {"__tuple__": [self.encode(x, f"{path}.{i}") for i, x in enumerate(v)]}
        if isinstance(v, list):
            return [self.encode(x, f"{path}.{i}") for i, x in enumerate(v)]
        if isinstance(v, Mapping):
            return {"__dict__": [[self.encode(k, f"{path}.k{i}"), self.encode(x, f"{path}.{i}")]
                                 for i, (k, x) in enumerate(v.items())]}
        log.warning("saving %s (%s) as text; it will load as a string", path, type(v).__name__)
        return {"__str__": str(v)}


class _Decoder:
    """Rebuilds what :class:`_Encoder` wrote, strictly: only allowlisted types, only their
    init fields, arrays only from the design group, references only to objects already
    rebuilt. Anything else is a :class:`StoreError`."""

    def __init__(self, ds: xr.Dataset, fmt: str) -> None:
        self.ds = ds
        self.legacy = fmt == "1"
        self._done: dict[str, Any] = {}

    def decode(self, v: Any, depth: int = 0) -> Any:
        if depth > 64:
            raise StoreError("the saved fit's metadata is nested too deeply")
        if isinstance(v, list):
            return [self.decode(x, depth + 1) for x in v]
        if not isinstance(v, dict):
            return v
        tags = [k for k in v if isinstance(k, str) and k.startswith("__")]
        if not tags:
            return {k: self.decode(x, depth + 1) for k, x in v.items()}
        tag = ("__dataclass__" if "__dataclass__" in v
               else "__type__" if "__type__" in v else tags[0])
        if tag == "__ref__":
            ref = v["__ref__"]
            if not isinstance(ref, str) or ref not in self._done:
                raise StoreError(f"the saved fit refers to an unknown object {ref!r}")
            return self._done[ref]
        if tag == "__array__":
            name, how = v.get("__array__"), v.get("kind")
            known = isinstance(name, str) and name in self.ds.data_vars
            if not known or how not in _ARRAY_KINDS:
                raise StoreError(f"the saved fit refers to an unknown array {name!r} ({how!r})")
            out = _restore_labels(self.ds[name].values, how)
            if out.dtype.kind not in "biufUO" or (
                out.dtype == object and not all(
                    isinstance(x, str | int | float | bool) for x in out.ravel().tolist())
            ):
                raise StoreError(f"array {name!r} of the saved fit has an unsupported type")
            self._done[name] = out
            return out
        if tag in ("__type__", "__dataclass__"):
            return self._object(v, tag, depth)
        if tag == "__tuple__" and isinstance(v["__tuple__"], list):
            return tuple(self.decode(x, depth + 1) for x in v["__tuple__"])
        if tag == "__dict__" and isinstance(v["__dict__"], list):
            items = v["__dict__"]
            if not all(isinstance(kv, list) and len(kv) == 2 for kv in items):
                raise StoreError("a saved mapping is malformed")
            out_d = {}
            for k, x in items:
                key = self.decode(k, depth + 1)
                if not isinstance(key, str | int | float | bool | tuple | None):
                    raise StoreError("a saved mapping has an unsupported key")
                out_d[key] = self.decode(x, depth + 1)
            return out_d
        if tag == "__str__" and isinstance(v["__str__"], str):
            return v["__str__"]
        raise StoreError(f"the saved fit holds an unknown entry {tag!r}; it was not written by "
                         "this version of poolwise")

    def _object(self, v: dict[str, Any], tag: str, depth: int) -> Any:
        name = v[tag]
        if tag == "__dataclass__" and not self.legacy:
            raise StoreError(f"refusing to rebuild {name!r}: format {FORMAT_VERSION} names "
                             "types by their schema name only")
        table = _legacy_types() if tag == "__dataclass__" else _types()
        cls = table.get(name) if isinstance(name, str) else None
        if cls is None:
            raise StoreError(
                f"refusing to rebuild {name!r}: not a type of the saved-fit schema (allowed: "
                f"{', '.join(sorted(_types()))}); the file was crafted or written by another "
                "program"
            )
        fields, path = v.get("fields"), v.get("__path__")
        if not isinstance(fields, dict) or not isinstance(path, str):
            raise StoreError(f"the saved {cls.__name__} is malformed")
        unknown = sorted(set(fields) - _init_fields(cls))
        if unknown:
            raise StoreError(
                f"the saved {cls.__name__} has fields this version does not know "
                f"({', '.join(map(str, unknown[:5]))}); it was written by another version"
            )
        kwargs = {k: self.decode(x, depth + 1) for k, x in fields.items()}
        try:
            out = cls(**kwargs)
        except (TypeError, ValueError) as err:
            raise StoreError(f"the saved {cls.__name__} cannot be rebuilt: {err}") from None
        self._done[path] = out
        return out


def _label_array(values: np.ndarray) -> tuple[np.ndarray, str]:
    """An array as netCDF / zarr can store it, and how to restore its type: 'native'
    (numeric, bool and str arrays) or 'object' (an object array of Python scalars of one
    type, e.g. string group labels) or 'object-str' (mixed types, stored as text)."""
    if values.dtype != object:
        return values, "native"
    items = values.ravel().tolist()
    if _has_nul(items):  # fixed-width strings would cut 'nul\x00' to 'nul'
        esc = _escape_nul([str(x) for x in items])
        return np.asarray(esc, dtype=str).reshape(values.shape), "object-str-nul"
    arr = np.asarray(items).reshape(values.shape) if items else np.array([], dtype=str)
    if arr.dtype.kind in "biufU" and len({type(x) for x in items}) <= 1:
        return arr, "object"
    return np.asarray([str(x) for x in items], dtype=str).reshape(values.shape), "object-str"


def _restore_labels(values: np.ndarray, how: str) -> np.ndarray:
    if how == "object-str-nul":
        out = np.empty(values.shape, dtype=object)
        out.reshape(-1)[:] = _unescape_nul([str(x) for x in values.ravel().tolist()])
        return out
    if how == "native":
        return values.astype(str) if values.dtype == object else values
    out = np.empty(values.shape, dtype=object)
    items = values.ravel().tolist()
    if how == "object-str" or values.dtype.kind in "OU":
        items = [str(x) for x in items]
    flat = out.reshape(-1)
    flat[:] = items
    return out


def _fit_fields(fit: Fit) -> dict[str, Any]:
    return {f.name: getattr(fit, f.name) for f in dataclasses.fields(fit)
            if f.name != "idata" and f.init}


def _design_group(fit: Fit) -> xr.Dataset:
    enc = _Encoder()
    meta = {name: enc.encode(v, name) for name, v in _fit_fields(fit).items()}
    data = {
        name: (tuple(f"{name}:{k}" for k in range(arr.ndim)), arr)
        for name, (arr, _) in enc.arrays.items()
    }
    return xr.Dataset(data, attrs={"poolwise_fit": json.dumps(meta)})


def _fit_from(ds: xr.Dataset, fmt: str) -> dict[str, Any]:
    from poolwise.inference.fitted import Fit

    dec = _Decoder(ds, fmt)
    raw = ds.attrs.get("poolwise_fit")
    if not isinstance(raw, str):
        raise StoreError(f"the '{DESIGN_GROUP}' group has no 'poolwise_fit' attribute")
    try:
        meta = json.loads(raw)
    except ValueError as err:
        raise StoreError(f"the saved fit's metadata is not valid JSON ({err})") from None
    if not isinstance(meta, dict):
        raise StoreError("the saved fit's metadata is not a JSON object")
    allowed = {f.name for f in dataclasses.fields(Fit) if f.name != "idata" and f.init}
    unknown = sorted(set(meta) - allowed)
    if unknown:
        raise StoreError(f"the saved fit has unknown entries {', '.join(unknown[:5])}")
    out = {name: dec.decode(v) for name, v in meta.items()}
    kinds = {"spec": "ModelSpec", "config": "SamplerConfig", "diagnosis": "Diagnosis"}
    for name, cls in kinds.items():
        if type(out.get(name)) is not _types()[cls]:
            raise StoreError(f"the saved fit's {name} is not a {cls}")
    return out


def _jsonable(v: Any) -> Any:
    """Repair-log entries and the like as plain JSON values."""
    if hasattr(v, "to_dict"):
        return _jsonable(v.to_dict())
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return {f.name: _jsonable(getattr(v, f.name)) for f in dataclasses.fields(v)}
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.ndarray):
        return _jsonable(v.tolist())
    if isinstance(v, np.generic):
        return v.item()
    if v is None or isinstance(v, bool | int | float | str):
        return v
    return str(v)


def to_datatree(fit: Fit) -> xr.DataTree:
    """The storable tree of a fit: its draws and groups, the ``poolwise_design`` group, and
    all metadata as JSON string attributes."""
    tree = storable(fit.idata)
    tree[DESIGN_GROUP] = xr.DataTree(_design_group(fit))
    tree.attrs.update({
        "poolwise_format": FORMAT_VERSION,
        "poolwise_settings": json.dumps(fit.config.to_dict()),
        "poolwise_timings": json.dumps({k: float(v) for k, v in fit.timings.items()}),
        "poolwise_warnings": json.dumps(list(fit.warnings)),
        "poolwise_repair_log": json.dumps(_jsonable(fit.repair_log)),
        "poolwise_diagnosis": json.dumps(fit.diagnosis.to_dict()),
        # netCDF and zarr readers list variables alphabetically; summaries follow this order
        "poolwise_variable_order": json.dumps(
            {node.path: list(node.data_vars) for node in tree.subtree if node is not tree}
        ),
    })
    return tree


#: root attributes that hold JSON; a loaded fit's are checked to parse
_JSON_ATTRS = (
    "poolwise_parameterization", "poolwise_priors", "poolwise_settings", "poolwise_versions",
    "poolwise_columns_used", "poolwise_repair", "poolwise_prior_predictive", "poolwise_timings",
    "poolwise_warnings", "poolwise_repair_log", "poolwise_diagnosis", "poolwise_variable_order",
)


def from_datatree(tree: xr.DataTree) -> Fit:
    """Rebuild a Fit from a tree written by :func:`to_datatree`: the same spec (design,
    priors, parameterization), config, diagnosis, timings, warnings and repair log.

    Only the schema's types are built (see :func:`_types`); a tree naming anything else, an
    unknown format version or malformed metadata raises :class:`StoreError`."""
    if DESIGN_GROUP not in tree.children:
        raise StoreError(
            f"this file has no '{DESIGN_GROUP}' group, so the model cannot be rebuilt from it; "
            "it was not written by poolwise.save_fit (or by a version before format 1)"
        )
    fmt = tree.attrs.get("poolwise_format")
    if fmt not in READABLE_FORMATS:
        raise StoreError(
            f"unsupported poolwise file format {fmt!r} (this version reads "
            f"{', '.join(map(repr, READABLE_FORMATS))}); a newer poolwise wrote it, or it is "
            "not a poolwise file"
        )
    try:
        return _from_datatree(tree, fmt)
    except StoreError:
        raise
    except Exception as err:  # noqa: BLE001 - any malformed content is a clear load error
        raise StoreError(
            f"the saved fit is damaged or not a poolwise fit ({type(err).__name__}: {err})"
        ) from None


def _from_datatree(tree: xr.DataTree, fmt: str) -> Fit:
    from poolwise.inference.fitted import Fit

    attrs = dict(tree.attrs)
    for key, value in attrs.items():
        if isinstance(key, str) and key.startswith("poolwise_") and not isinstance(value, str):
            raise StoreError(f"attribute {key} of the saved fit is not text")
    for key in _JSON_ATTRS:
        if key in attrs:
            try:
                json.loads(attrs[key])
            except ValueError:
                raise StoreError(f"attribute {key} of the saved fit is not valid JSON") from None
    fields = _fit_from(tree[DESIGN_GROUP].to_dataset(), fmt)
    order = json.loads(attrs.get("poolwise_variable_order", "{}"))
    if not isinstance(order, dict) or not all(
        isinstance(v, list) and all(isinstance(x, str) for x in v) for v in order.values()
    ):
        raise StoreError("attribute poolwise_variable_order of the saved fit is malformed")
    nodes = {node.path: node for node in tree.subtree
             if node is not tree and node.name != DESIGN_GROUP}
    groups = {}
    for path in [p for p in order if p in nodes] + [p for p in nodes if p not in order]:
        ds = nodes[path].to_dataset()
        names = [v for v in order.get(path, []) if v in ds.data_vars]
        names += [v for v in ds.data_vars if v not in names]
        groups[path] = ds[names]
    if "/posterior" not in groups or "/sample_stats" not in groups:
        raise StoreError("the saved fit has no posterior or sample_stats group")
    idata = xr.DataTree.from_dict(groups)
    idata.attrs.update(attrs)
    return Fit(idata=idata, **fields)


# --------------------------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------------------------


def write_tree(tree: xr.DataTree, path: str | Path) -> Path:
    """Write a tree to ``*.nc`` (netCDF4 via h5netcdf) or ``*.zarr`` (zarr format 3).

    A write error (a full disk, a quota) raises a plain ``OSError`` naming the file, after
    the netCDF library has closed the file cleanly (:class:`_NetCDFTarget`)."""
    path = Path(path)
    if path.suffix == ".zarr":
        # consolidated metadata is not part of the zarr 3 spec (and warns)
        tree.to_zarr(path, mode="w", consolidated=False)
    else:
        # a Fletcher-32 checksum on every numeric array: a damaged (bit-flipped) file fails
        # to read instead of loading changed draws (HDF5 filters cannot apply to strings)
        # Large arrays of the design group (the row maps: cell, successes, trials and row
        # number of every data row) and large integer arrays are also deflated with byte
        # shuffling: 1..n and cell codes shrink 10-100x, at a fraction of a second per million
        # rows. Draws (floats) barely compress; they are left as they are.
        def var_encoding(node: xr.DataTree, var: xr.Variable) -> dict[str, Any]:
            enc: dict[str, Any] = {"fletcher32": True}
            row_map = node.name == DESIGN_GROUP or var.dtype.kind in "biu"
            if row_map and var.size >= 100_000:
                enc.update(compression="gzip", compression_opts=1, shuffle=True)
            return enc

        encoding = {
            node.path: {name: var_encoding(node, var)
                        for name, var in node.to_dataset().variables.items()
                        if var.ndim >= 1 and var.size > 0 and var.dtype.kind in "biufc"}
            for node in tree.subtree
        }
        target = _NetCDFTarget(path)
        try:
            # no signal handler may raise inside HDF5's calls into the target (see below)
            with _signals_deferred():
                tree.to_netcdf(target, engine="h5netcdf", encoding=encoding)
        finally:
            target.close()
        if target.error is not None:
            err = target.error
            raise OSError(err.errno, err.strerror or str(err), str(path)) from None
    return path


class _NetCDFTarget(io.RawIOBase):
    """The file HDF5 writes ``fit.nc`` through (h5py's file-object driver), whose write errors
    never reach HDF5.

    After a failed write (``No space left on device`` on a full disk) HDF5's clean-up crashed
    the process with a segmentation fault (in h5py's deallocation of its objects, or in the next
    HDF5 call on the damaged metadata cache): the finished fit and its fallback folder were
    lost. Here the first failed write is recorded, and it and every later one go to pages in
    memory instead (reads see them, so HDF5 keeps a consistent file and closes it normally);
    :func:`write_tree` then raises the recorded error as a plain ``OSError``. Memory holds
    only what is written after the failure. Until then every write goes straight to the file
    (``pwrite``)."""

    PAGE = 1 << 16

    def __init__(self, path: Path) -> None:
        super().__init__()
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
        self._pos = 0
        self._size = 0  # the file's logical size (on disk until a write fails)
        self._disk_end = 0  # spilled: file bytes at or beyond this offset read as zeros
        self._pages: dict[int, bytearray] | None = None  # spilled: the pages written since
        self.error: OSError | None = None

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self._size}[whence]
        self._pos = base + offset
        return self._pos

    def tell(self) -> int:
        return self._pos

    def flush(self) -> None:
        pass

    def _spill(self, err: OSError) -> None:
        self.error = err
        self._pages = {}
        self._disk_end = self._size

    def _disk(self, offset: int, n: int) -> bytes:
        n = max(0, min(n, self._disk_end - offset))
        if n == 0:
            return b""
        try:
            return os.pread(self._fd, n, offset)
        except OSError:
            return b""

    def _page(self, index: int) -> bytearray:
        assert self._pages is not None
        page = self._pages.get(index)
        if page is None:
            page = bytearray(self.PAGE)
            data = self._disk(index * self.PAGE, self.PAGE)
            page[: len(data)] = data
            self._pages[index] = page
        return page

    def write(self, b: Any) -> int:
        view = memoryview(b).cast("B")
        total = len(view)
        if self._pages is None:
            try:
                done = 0
                while done < total:
                    done += os.pwrite(self._fd, view[done:], self._pos + done)
            except OSError as err:
                self._spill(err)
            else:
                self._pos += total
                self._size = max(self._size, self._pos)
                return total
        offset = self._pos
        while view:
            index, at = divmod(offset, self.PAGE)
            n = min(self.PAGE - at, len(view))
            self._page(index)[at : at + n] = view[:n]
            offset += n
            view = view[n:]
        self._pos += total
        self._size = max(self._size, self._pos)
        return total

    def readinto(self, b: Any) -> int:
        view = memoryview(b).cast("B")
        if self._pages is None:
            n = os.preadv(self._fd, [view], self._pos)
            self._pos += n
            return n
        n = max(0, min(len(view), self._size - self._pos))
        offset, done = self._pos, 0
        while done < n:
            index, at = divmod(offset, self.PAGE)
            k = min(self.PAGE - at, n - done)
            page = self._pages.get(index)
            if page is not None:
                view[done : done + k] = page[at : at + k]
            else:
                data = self._disk(offset, k)
                view[done : done + len(data)] = data
                view[done + len(data) : done + k] = bytes(k - len(data))
            offset += k
            done += k
        self._pos += n
        return n

    def truncate(self, size: int | None = None) -> int:
        size = self._pos if size is None else size
        if self._pages is None:
            try:
                os.ftruncate(self._fd, size)
            except OSError as err:
                self._spill(err)
            else:
                self._size = size
                return size
        assert self._pages is not None
        self._disk_end = min(self._disk_end, size)
        last = size // self.PAGE
        for index in [i for i in self._pages if i > last]:
            del self._pages[index]
        if last in self._pages:
            self._pages[last][size % self.PAGE :] = bytes(self.PAGE - size % self.PAGE)
        self._size = size
        return size

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
            self._pages = None
        super().close()


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold Ctrl-C (SIGINT) and SIGTERM until the block ends, then act on the first one as its
    handler would (the ``KeyboardInterrupt`` is raised then). HDF5 calls back into Python
    (:class:`_NetCDFTarget`) while it writes, and an exception raised there by a signal handler
    would be a failed write inside HDF5 again. Only the main thread runs signal handlers; in
    any other thread this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[tuple[int, Any]] = []
    before: dict[int, Any] = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        handler = signal.getsignal(signum)
        if handler is None:  # set outside Python: leave it
            continue
        before[signum] = handler
        signal.signal(signum, lambda n, frame: pending.append((n, frame)))
    try:
        yield
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)
        if pending:
            signum, frame = pending[0]
            handler = before[signum]
            if callable(handler):
                handler(signum, frame)
            elif handler == signal.SIG_DFL:
                signal.raise_signal(signum)


#: zarr codecs a poolwise fit uses; a store naming any other (e.g. numcodecs' pickle) is refused
_ZARR_CODECS = frozenset({
    "bytes", "zstd", "gzip", "blosc", "crc32c", "transpose", "sharding_indexed", "vlen-utf8",
    "vlen-bytes",
})
_ZARR_TYPE = re.compile(
    r"(bool|u?int(8|16|32|64)|float(16|32|64)|complex(64|128)|string|bytes|"
    r"variable_length_(utf8|bytes)|fixed_length_(utf32|ucs4|ascii|bytes)|r\d+)"
)


def _check_zarr(path: Path) -> None:
    """Refuse a zarr store that could make the reader run code or that poolwise did not
    write: format-2 metadata (whose object codecs include pickle), codecs outside
    :data:`_ZARR_CODECS`, object data types."""
    for root, _dirs, files in os.walk(path):
        for name in files:
            if name in (".zarray", ".zattrs", ".zgroup", ".zmetadata"):
                raise StoreError(f"'{path}' is a zarr format 2 store; poolwise writes and reads "
                                 "zarr format 3 only")
            if name != "zarr.json":
                continue
            try:
                meta = json.loads((Path(root) / name).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                raise StoreError(f"'{Path(root) / name}' is not valid zarr metadata") from None
            _check_zarr_meta(meta, Path(root) / name)


def _check_zarr_meta(meta: Any, where: Path) -> None:
    if not isinstance(meta, dict):
        raise StoreError(f"'{where}' is not valid zarr metadata")
    dtype = meta.get("data_type")
    if dtype is not None:
        name = dtype.get("name") if isinstance(dtype, dict) else dtype
        if not isinstance(name, str) or not _ZARR_TYPE.fullmatch(name):
            raise StoreError(f"'{where}' has data type {name!r}, which a poolwise fit never uses")
    for key in ("codecs", "filters", "compressor"):
        value = meta.get(key)
        items = value if isinstance(value, list) else [] if value is None else [value]
        for codec in items:
            cname = codec.get("name", codec.get("id")) if isinstance(codec, dict) else codec
            if cname not in _ZARR_CODECS:
                raise StoreError(f"'{where}' uses the codec {cname!r}, which a poolwise fit "
                                 "never uses; refusing to read it")
            conf = codec.get("configuration") if isinstance(codec, dict) else None
            if isinstance(conf, dict) and "codecs" in conf:
                _check_zarr_meta({"codecs": conf["codecs"]}, where)
                _check_zarr_meta({"codecs": conf.get("index_codecs")}, where)


def read_tree(path: str | Path) -> xr.DataTree:
    """Read a tree written by :func:`write_tree` fully into memory (the file is closed).
    A file that is not a readable netCDF / zarr tree raises :class:`StoreError`."""
    path = Path(path)
    if not path.exists():
        raise StoreError(f"no saved fit at '{path}'")
    try:
        if path.suffix == ".zarr" or path.is_dir():
            _check_zarr(path)
            with xr.open_datatree(path, engine="zarr", consolidated=False) as tree:
                return restore_nul_labels(tree.load())
        if path.stat().st_size == 0:
            raise StoreError(f"'{path}' is empty: it is not a saved fit")
        with open(path, "rb") as f:
            magic = f.read(8)
        if magic != b"\x89HDF\r\n\x1a\n":
            raise StoreError(f"'{path}' is not a netCDF-4 / HDF5 file, so not a saved fit")
        with xr.open_datatree(path, engine="h5netcdf") as tree:
            return restore_nul_labels(tree.load())
    except StoreError:
        raise
    except Exception as err:  # noqa: BLE001 - a damaged file fails in many ways
        raise StoreError(
            f"'{path}' cannot be read as a saved fit; it is truncated, damaged or not a "
            f"poolwise file ({type(err).__name__}: {err})"
        ) from None


#: what HDF5 adds per variable (object header, attributes, dimension scales, chunk index), per
#: group and per file, and per string of a variable-length string array (heap id and object)
_NC_PER_VARIABLE, _NC_PER_GROUP, _NC_BASE, _NC_PER_STRING = 8192, 8192, 1 << 16, 48


def estimate_tree_bytes(tree: xr.DataTree) -> int:
    """An upper estimate of the bytes :func:`write_tree` writes for ``tree`` as netCDF: every
    array at its size in memory (uncompressed; a text array at its widest value in UTF-32 plus
    HDF5's per-string cost), the attributes' text, and HDF5's overhead per variable and
    group. Compression only makes the file smaller."""
    total = _NC_BASE
    for node in tree.subtree:
        total += _NC_PER_GROUP + sum(len(str(v)) + 64 for v in node.attrs.values())
        for var in node.to_dataset(inherit=False).variables.values():
            total += _NC_PER_VARIABLE + sum(len(str(v)) + 64 for v in var.attrs.values())
            if var.dtype.kind in "OUS":
                items = var.values.ravel().tolist()
                width = max((len(str(x).encode("utf-8")) for x in items), default=0)
                total += var.size * (_NC_PER_STRING + 4 * width)
            else:
                total += var.size * var.dtype.itemsize
    return int(total * 1.02)


def estimate_fit_bytes(fit: Fit, tree: xr.DataTree | None = None) -> int:
    """An upper estimate of the bytes :func:`save_fit` writes: the netCDF file
    (:func:`estimate_tree_bytes` of ``tree``, the fit's storable tree) and the summary and
    result files (a few hundred bytes per parameter value)."""
    tree = to_datatree(fit) if tree is None else tree
    values = sum(int(np.prod([n for d, n in v.sizes.items() if d not in ("chain", "draw")]))
                 for v in fit.posterior.data_vars.values())
    return estimate_tree_bytes(tree) + 600 * values + (1 << 16)


def estimate_comparison_bytes(comp: PoolingComparison,
                              trees: Mapping[str, xr.DataTree] | None = None) -> int:
    """An upper estimate of the bytes :func:`save_comparison` writes: its fits (``trees``:
    their :func:`to_datatree`, when the caller has them), and the comparison tables (a few
    hundred bytes per group and model)."""
    rows = sum(len(t) for t in (comp.groups, comp.population) if t is not None)
    fits = sum(estimate_fit_bytes(f, (trees or {}).get(k)) for k, f in comp.fits.items())
    return fits + 2000 * rows + (1 << 16)


def write_fit_files(fit: Fit, folder: Path, *, format: StoreFormat = "netcdf",
                    tree: xr.DataTree | None = None) -> dict[str, Path]:
    """Write ``fit.nc`` (or ``fit.zarr``), ``summary.csv`` and ``result.json`` into the
    (new, empty) ``folder``; no manifest, no swap (see :func:`save_fit`). ``tree``: the
    fit's :func:`to_datatree`, when the caller has it already."""
    from poolwise.output.results import result_dict

    if format not in _FILES:
        raise ValueError(f"format must be 'netcdf' or 'zarr'; got {format!r}")
    paths = {"fit": folder / _FILES[format], "summary": folder / "summary.csv",
             "result": folder / "result.json"}
    write_tree(to_datatree(fit) if tree is None else tree, paths["fit"])
    table = fit.summary()
    safe_csv(table, paths["summary"], index_label="parameter")
    result = result_dict(fit, table=table)
    paths["result"].write_text(result_json(result), encoding="utf-8")
    return paths


def result_json(result: Mapping[str, Any]) -> str:
    """``result.json``'s text: indented, with its ``parameters`` one per line, each encoded by
    the json module's C encoder (the indenting encoder is pure Python: 10^6 group levels took
    half a minute, now seconds)."""
    params = result.get("parameters")
    if not isinstance(params, Mapping) or not params:
        return json.dumps(result, indent=2, default=_json_default) + "\n"
    token = f"parameters-{uuid.uuid4().hex}"  # where the parameters go, in the keys' order
    text = json.dumps({**result, "parameters": token}, indent=2, default=_json_default)
    enc = json.JSONEncoder(default=_json_default).encode
    values = list(params.values())
    # encoded in one call and split where one entry ends and the next begins ("}, {"); a
    # "}, {" inside an entry (a text, a list of objects) splits it too, so the pieces no
    # longer match the entries: then each is encoded alone
    rows = ["{" + r + "}" for r in enc(values)[2:-2].split("}, {")]
    if len(rows) != len(values) or not all(isinstance(v, Mapping) and v for v in values):
        rows = [enc(v) for v in values]
    body = ",\n".join(f"    {enc(str(k))}: {r}" for k, r in zip(params, rows, strict=True))
    return text.replace(f'"{token}"', "{\n" + body + "\n  }", 1) + "\n"


Extra = Mapping[str, Callable[[Path], object]]


def _write_extra(folder: Path, extra: Extra | None) -> None:
    for rel, write in (extra or {}).items():
        dest = folder / rel
        if dest.exists() or Path(rel).is_absolute() or ".." in Path(rel).parts:
            raise StoreError(f"'{rel}' would overwrite a file of the result")
        dest.parent.mkdir(parents=True, exist_ok=True)
        write(dest)


def save_fit(
    fit: Fit, out_dir: str | Path, *, format: StoreFormat = "netcdf", extra: Extra | None = None,
) -> dict[str, Path]:
    """Write ``fit.nc`` (or ``fit.zarr``), ``summary.csv``, ``result.json`` and the manifest
    ``poolwise.json`` into ``out_dir``, replacing the folder as a whole (atomically: an
    interrupted save leaves the previous result).

    The folder alone is enough for :func:`load_fit`.

    Parameters
    ----------
    fit : Fit
        The fit to save.
    out_dir : str or pathlib.Path
        The result folder; created when missing, replaced as a whole when it holds an earlier
        result.
    format : {"netcdf", "zarr"}, default "netcdf"
        Storage of the draws: ``fit.nc`` (netCDF) or ``fit.zarr``.
    extra : Mapping[str, Callable[[pathlib.Path], object]] or None, default None
        Further file names (relative to the folder) mapped to functions that write them (e.g.
        the HTML report) into the same folder, before the swap.

    Returns
    -------
    dict[str, pathlib.Path]
        The path of each written file, keyed by ``"fit"``, ``"summary"``, ``"result"`` and
        ``"manifest"``.

    Raises
    ------
    StoreError
        When ``out_dir`` is a file, holds files poolwise did not write, is not writable, or is
        being written by another process, when its disk has less free space than the result
        needs (checked before anything is written), or when an ``extra`` name would overwrite
        a file of the result. A write that fails all the same (a disk filled by another
        program meanwhile) raises its ``OSError``, naming the file; the folder is left as it
        was, and nothing is left beside it.
    """
    if format not in _FILES:
        raise ValueError(f"format must be 'netcdf' or 'zarr'; got {format!r}")
    out = Path(out_dir)
    tree = to_datatree(fit)
    with write_folder(out, "fit", needed=estimate_fit_bytes(fit, tree)) as staged:
        paths = write_fit_files(fit, staged, format=format, tree=tree)
        _write_extra(staged, extra)
    return {k: out / p.name for k, p in paths.items()}


def _fit_file(folder: Path, manifest: Mapping[str, Any]) -> Path:
    names = manifest["files"]
    for name in _FILES.values():
        if name in names or any(n.startswith(name + "/") for n in names):
            return folder / name
    raise StoreError(f"the manifest of '{folder}' lists no fit file")


def _reuse_saved_summary(fit: Fit, folder: Path) -> None:
    """The folder's ``summary.csv`` (verified by the manifest) is the fit's summary at the
    interval ``result.json`` names: keep it on the loaded fit instead of computing it again
    (seconds with 10^4-10^5 levels). Anything that does not match exactly is ignored."""
    import pandas as pd

    from poolwise.inference.summary import reuse_summary
    from poolwise.output.store import neutralize

    try:
        interval = json.loads((folder / "result.json").read_text("utf-8"))["interval"]
        table = pd.read_csv(folder / "summary.csv", index_col=0, dtype={0: str},
                            keep_default_na=False, na_values=[""])
        reuse_summary(fit, table, prob=float(interval["prob"]), kind=str(interval["kind"]),
                      written=neutralize)
    except (OSError, ValueError, KeyError, TypeError):
        return


def _load_fit_folder(path: Path, manifest: Mapping[str, Any]) -> Fit:
    """The fit of a result folder whose manifest has been verified."""
    fit = from_datatree(read_tree(_fit_file(path, manifest)))
    _reuse_saved_summary(fit, path)
    return fit


def load_fit(path: str | Path) -> Fit:
    """Load a fit saved by :func:`save_fit`. The original data file is not needed.

    Parameters
    ----------
    path : str or pathlib.Path
        A result folder (with ``fit.nc`` or ``fit.zarr``) or the ``.nc`` / ``.zarr`` path
        itself. A folder's manifest is verified first.

    Returns
    -------
    Fit
        The fit as saved: draws, model specification, diagnostics and metadata.

    Raises
    ------
    StoreError
        When nothing is saved at ``path``, a file is missing, truncated, changed or mixed in
        from another result, the folder holds a pooling comparison, or the file is not a
        poolwise fit.
    """
    path = Path(path)
    if not path.exists():
        raise StoreError(f"no saved fit at '{path}'")
    if path.is_dir() and path.suffix != ".zarr":
        if read_manifest(path) is None:
            found = [name for name in _FILES.values() if (path / name).exists()]
            if not found:
                raise StoreError(
                    f"'{path}' holds no saved fit (looked for {MANIFEST} and "
                    f"{', '.join(_FILES.values())}); write one with `poolwise fit ... --out DIR` "
                    "or poolwise.save_fit"
                )
        m = verify_folder(path)
        if m["kind"] != "fit":
            raise StoreError(
                f"'{path}' holds a pooling comparison, not one fit; load one of its fits, "
                f"e.g. '{path / 'partial'}', or run `poolwise report {path}`"
            )
        return _load_fit_folder(path, m)
    parent = path.parent
    m = read_manifest(parent)
    if m is not None:
        verify_folder(parent, kinds=("fit",))
        if not any(n == path.name or n.startswith(path.name + "/") for n in m["files"]):
            raise StoreError(f"'{path}' is not part of the saved result in '{parent}'")
    return from_datatree(read_tree(path))


# --------------------------------------------------------------------------------------------
# comparison folders
# --------------------------------------------------------------------------------------------


def save_comparison(
    comp: PoolingComparison, out_dir: str | Path, *, format: StoreFormat = "netcdf",
    extra: Extra | None = None,
) -> dict[str, Path]:
    """Write a pooling comparison into ``out_dir`` as a whole (atomically, like
    :func:`save_fit`): one fit folder per model (``complete/``, ``none/``, ``partial/``, each
    loadable alone), ``pooling_groups.csv``, ``pooling_population.csv``, ``pooling_loo.csv``
    (with LOO), ``pooling_logo.csv`` and ``pooling_logo_groups.csv`` (with leave-one-group-out),
    ``pooling_kfold.csv``, ``pooling_kfold_groups.csv``, ``pooling_kfold_folds.csv`` and
    ``pooling_kfold_mcse.csv`` (with grouped K-fold; its group term, K and predictive unit in
    the manifest's ``"kfold"``, so that :func:`load_comparison` reads it back without the
    refits) and ``narrative.txt``, and a manifest of kind ``"comparison"``."""
    out = Path(out_dir)
    names: dict[str, Path] = {}
    # how each fit's draws were made ("nuts" / "approx"), beside each fit's own result.json
    meta: dict[str, Any] = {"fits": list(comp.fits), "group": str(comp.group),
                            "methods": {k: f.method for k, f in comp.fits.items()}}
    kfold = getattr(comp, "kfold", None)
    if kfold is not None:
        meta["kfold"] = {"group": str(kfold.group), "k": int(kfold.k), "unit": str(kfold.unit)}
    trees = {key: to_datatree(f) for key, f in comp.fits.items()}
    with write_folder(out, "comparison", manifest_extra=meta,
                      needed=estimate_comparison_bytes(comp, trees)) as staged:
        for key, f in comp.fits.items():
            sub = staged / key
            sub.mkdir()
            write_fit_files(f, sub, format=format, tree=trees.pop(key))
            write_manifest(sub, "fit")
            names[key] = out / key
        safe_csv(comp.groups, staged / "pooling_groups.csv", index_label=str(comp.group))
        safe_csv(comp.population, staged / "pooling_population.csv")
        names["groups"] = out / "pooling_groups.csv"
        names["population"] = out / "pooling_population.csv"
        if comp.loo is not None:
            safe_csv(comp.loo, staged / "pooling_loo.csv")
            names["loo"] = out / "pooling_loo.csv"
        logo = getattr(comp, "logo", None)
        if logo is not None:  # leave-one-group-out: per strategy, and per held-out group
            safe_csv(logo.table, staged / "pooling_logo.csv")
            safe_csv(logo.pointwise, staged / "pooling_logo_groups.csv")
            names["logo"] = out / "pooling_logo.csv"
            names["logo_groups"] = out / "pooling_logo_groups.csv"
        if kfold is not None:  # grouped K-fold: per strategy, per group, the folds' seeds, and
            # each group's Monte Carlo SE
            frames = {"kfold": kfold.table, "kfold_groups": kfold.pointwise,
                      "kfold_folds": kfold.folds, "kfold_mcse": kfold.mcse}
            for key, frame in frames.items():
                safe_csv(frame, staged / KFOLD_FILES[key], index=key != "kfold_folds")
                names[key] = out / KFOLD_FILES[key]
        (staged / "narrative.txt").write_text("\n\n".join(comp.narrative) + "\n",
                                              encoding="utf-8")
        names["narrative"] = out / "narrative.txt"
        _write_extra(staged, extra)
    return names


#: the grouped K-fold files of a comparison folder, by their key in save_comparison's answer
KFOLD_FILES = {"kfold": "pooling_kfold.csv", "kfold_groups": "pooling_kfold_groups.csv",
               "kfold_folds": "pooling_kfold_folds.csv", "kfold_mcse": "pooling_kfold_mcse.csv"}


def _read_saved_csv(path: Path, **kwargs: Any) -> Any:
    """A CSV table written by :func:`safe_csv`: its numbers as written (pandas' default
    parser reads back the shortest repr it wrote, exactly), its text as text (no ``NA`` /
    ``null`` read as missing; an empty cell is missing)."""
    import pandas as pd

    try:
        return pd.read_csv(path, keep_default_na=False, na_values=[""], **kwargs)
    except (OSError, ValueError) as err:
        raise StoreError(f"cannot read '{path}' ({err}); write the comparison again") from None


class _KFoldFiles:
    """Reading the K-fold files of one comparison folder back, each checked against the group
    term and labels of its fits (the CSVs hold the labels made spreadsheet-safe)."""

    def __init__(self, folder: Path, group: str, labels: list[str]) -> None:
        import pandas as pd

        self.folder, self.group, self.labels = folder, group, labels
        self.index = pd.Index(list(labels), name=group)

    def bad(self, what: str) -> StoreError:
        return StoreError(f"the K-fold files of '{self.folder}' do not match its fits ({what}); "
                          "write the comparison again")

    def table(self) -> Any:
        """``pooling_kfold.csv``: elpd, se, elpd_diff and dse by model."""
        import pandas as pd

        table = _read_saved_csv(self.folder / KFOLD_FILES["kfold"], index_col=0, dtype={0: str})
        if (list(table.columns) != ["elpd", "se", "elpd_diff", "dse"]
                or table.index.name != "model" or not len(table)
                or not all(pd.api.types.is_float_dtype(t) for t in table.dtypes)):
            raise self.bad("pooling_kfold.csv is not a table of elpd, se, elpd_diff and dse by "
                           "model")
        table.index = pd.Index([str(m) for m in table.index], name="model")
        return table

    def per_group(self, key: str, first: list[str], models: list[str]) -> Any:
        """A table with one row per level (the fits' labels as its index): ``first``
        columns, then one per model."""
        from poolwise.output.store import neutralize

        name = KFOLD_FILES[key]
        df = _read_saved_csv(self.folder / name, index_col=0, dtype={0: str})
        # the index's name is written as it is, its labels made spreadsheet-safe
        if df.index.name not in (self.group, neutralize(self.group)) or [
                str(v) for v in df.index] != [neutralize(v) for v in self.labels]:
            raise self.bad(f"{name} is not one row per level of '{self.group}', in its order")
        if list(df.columns[:len(first)]) != first or sorted(df.columns[len(first):]) != sorted(
                models):
            raise self.bad(f"{name} has the columns {list(df.columns)}")
        df.index = self.index
        return df

    def folds(self, fold: Any, k_saved: Any) -> Any:
        """``pooling_kfold_folds.csv``, checked against each level's fold; its labels the
        fits'."""
        import numpy as np
        import pandas as pd

        from poolwise.output.store import neutralize

        folds = _read_saved_csv(self.folder / KFOLD_FILES["kfold_folds"], dtype={"labels": str})
        k = len(folds)
        if (list(folds.columns) != ["fold", "groups", "seed", "labels"]
                or not all(pd.api.types.is_integer_dtype(folds[c])
                           for c in ("fold", "groups", "seed"))
                or folds["fold"].tolist() != list(range(k)) or k < 2 or not len(fold)
                or fold.min() < 0 or fold.max() >= k
                or folds["groups"].tolist() != np.bincount(fold, minlength=k).tolist()
                or k_saved not in (None, k)):
            raise self.bad("pooling_kfold_folds.csv does not describe the folds of "
                           "pooling_kfold_groups.csv")
        # each fold's labels as saved (made spreadsheet-safe), rebuilt from the fits' labels
        labels = [" ".join(self.labels[j] for j in np.flatnonzero(fold == f)) for f in range(k)]
        if ["" if pd.isna(v) else str(v) for v in folds["labels"]] != [
                neutralize(v) for v in labels]:
            raise self.bad("pooling_kfold_folds.csv names other levels in its folds")
        folds["labels"] = labels
        return folds


def read_kfold(folder: str | Path, manifest: Mapping[str, Any], group: str,
               labels: list[str]) -> Any:
    """The grouped K-fold result (:class:`~poolwise.comparison.kfold.KFoldComparison`) saved
    in the comparison folder ``folder`` (its ``manifest`` already verified), or None when the
    folder has none. ``group`` and ``labels``: the compared group term and its levels, as the
    loaded fits have them (the CSVs hold the labels made spreadsheet-safe, which may not be
    undone; they are checked against these, and these are used). The numbers are the saved
    ones: nothing is refitted. A folder written before ``pooling_kfold_mcse.csv`` was saved
    has every Monte Carlo SE missing (NaN), and the predictive unit of K-fold (the unit of
    leave-one-group-out, the only one it has had)."""
    import numpy as np
    import pandas as pd

    from poolwise.comparison.kfold import KFoldComparison

    folder = Path(folder)
    files = manifest.get("files", {})
    present = [name for name in KFOLD_FILES.values() if name in files]
    if not present:
        return None
    needed = [KFOLD_FILES[k] for k in ("kfold", "kfold_groups", "kfold_folds")]
    if missing := [n for n in needed if n not in files]:
        raise StoreError(f"'{folder}' has {', '.join(present)} but not {', '.join(missing)}: "
                         "its K-fold result is incomplete; write the comparison again")
    saved = _KFoldFiles(folder, group, labels)
    info = manifest.get("kfold")
    info = info if isinstance(info, Mapping) else {}
    if "group" in info and info["group"] != group:
        raise saved.bad(f"K-fold of '{info['group']}', the comparison of '{group}'")
    table = saved.table()
    models = list(table.index)
    pointwise = saved.per_group("kfold_groups", ["fold"], models)
    if not pd.api.types.is_integer_dtype(pointwise["fold"]):
        raise saved.bad("pooling_kfold_groups.csv has a fold that is not a whole number")
    folds = saved.folds(pointwise["fold"].to_numpy(), info.get("k"))
    if KFOLD_FILES["kfold_mcse"] in files:
        mcse = saved.per_group("kfold_mcse", [], models)
    else:  # written before the Monte Carlo SEs were saved: unknown, not made up
        mcse = pd.DataFrame(np.nan, index=saved.index, columns=list(pointwise.columns[1:]))
    kw = {"unit": str(info["unit"])} if isinstance(info.get("unit"), str) else {}
    table.attrs["unit"] = kw.get("unit", KFoldComparison.unit)
    return KFoldComparison(group=group, k=len(folds), table=table, pointwise=pointwise,
                           mcse=mcse, folds=folds, **kw)


def load_comparison(
    path: str | Path, *, prob: float = 0.89, kind: Literal["hdi", "eti"] = "hdi",
    loo: bool = True, logo: bool | Literal["psis"] = True,
) -> PoolingComparison:
    """A comparison saved by :func:`save_comparison`, compared again from its folder alone.

    Its fits are loaded, and the per-group and population tables, LOO and leave-one-group-out
    computed from them (:func:`~poolwise.comparison.pooling.compare_fits`); the grouped K-fold
    result is read back from its files when it was saved (:func:`read_kfold`: its refits are
    not run again), so ``kfold`` holds the numbers of the original comparison.

    Parameters
    ----------
    path : str or pathlib.Path
        A folder written by :func:`save_comparison` (``poolwise compare --out DIR``).
    prob : float, default 0.89
        Probability mass of the intervals.
    kind : {"hdi", "eti"}, default "hdi"
        Highest-density or equal-tailed intervals.
    loo : bool, default True
        Compute row-level PSIS-LOO again.
    logo : bool or "psis", default True
        Compute leave-one-group-out again (``"psis"``: PSIS only; False: skip).

    Returns
    -------
    PoolingComparison
        The comparison, with the saved K-fold result as ``kfold`` (None when none was saved).

    Raises
    ------
    StoreError
        When the folder is not a complete comparison (a file missing, changed or mixed in; see
        :func:`load_result`) or its K-fold files are incomplete or do not match its fits.
    """
    import dataclasses

    from poolwise.comparison.pooling import compare_fits

    path = Path(path)
    if not path.is_dir():
        raise StoreError(f"'{path}' is not a folder written by `poolwise compare --out`")
    m = verify_folder(path, kinds=("comparison",))
    fits = _comparison_fits(path, m)
    group = m.get("group") if isinstance(m.get("group"), str) else None
    comp = compare_fits(fits, group=group, prob=prob, kind=kind, loo=loo, logo=logo)
    kfold = read_kfold(path, m, comp.group, [str(v) for v in comp.groups.index])
    if kfold is None:
        return comp
    if sorted(kfold.table.index) != sorted(comp.fits):
        raise StoreError(f"the K-fold files of '{path}' compare {', '.join(kfold.table.index)}, "
                         f"its fits are {', '.join(comp.fits)}; write the comparison again")
    return dataclasses.replace(comp, kfold=kfold)


def _comparison_fits(path: Path, m: Mapping[str, Any]) -> dict[str, Fit]:
    """The fits of a comparison folder whose manifest has been verified."""
    from poolwise.comparison.pooling import POOLINGS

    subs = m.get("fits")
    if not isinstance(subs, list) or not set(subs) <= set(POOLINGS) or len(subs) < 2:
        raise StoreError(f"the manifest of '{path}' lists no valid fits ({subs!r})")
    return {k: load_fit(path / k) for k in subs}


def load_result(path: str | Path) -> tuple[str, Any]:
    """What a saved folder holds, as its manifest says: ``("fit", Fit)`` or
    ``("comparison", {"complete": Fit, "none": Fit, "partial": Fit})``. A ``.nc`` / ``.zarr``
    path loads as a fit."""
    path = Path(path)
    if not path.exists():
        raise StoreError(
            f"'{path}' does not exist; give a folder written by `poolwise fit --out` or "
            "`poolwise compare --out`"
        )
    if not path.is_dir() or path.suffix == ".zarr":
        return "fit", load_fit(path)
    m = verify_folder(path)
    if m["kind"] == "fit":
        return "fit", _load_fit_folder(path, m)  # verified once (it hashes every file)
    return "comparison", _comparison_fits(path, m)


def _json_default(v: object) -> object:
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return float(v)
    if isinstance(v, np.ndarray):
        return v.tolist()
    raise TypeError(f"not JSON serializable: {type(v).__name__}")
