"""Saving and loading a fit.

``save_fit(fit, dir)`` writes ``fit.nc`` (netCDF via h5netcdf; or ``fit.zarr``, zarr 3, with
``format="zarr"``), ``summary.csv`` and ``result.json``. ``load_fit(dir)`` rebuilds a usable
:class:`~poolwise.fit.Fit` from that folder alone, without the original data file, so
``summary()``, ``diagnose()`` and reports work on a loaded fit.

What the tree holds besides the draws (``posterior``, ``sample_stats``, ``observed_data``,
``log_likelihood``):

* a ``poolwise_design`` group: every array of the ModelSpec (the cell design X, y, n; each
  group term's codes, Z, labels and per-level counts; the row -> cell mapping; per-level
  centering flags; scaling vectors) as variables named by their path (``spec.design.X``,
  ``spec.design.groups.0.labels``...), and in its attribute ``poolwise_fit`` the JSON of
  everything else in the Fit: the spec's formula, priors, link, pooling, per-term settings,
  the SamplerConfig, the Diagnosis, timings, warnings and repair log. The encoding walks the
  dataclass fields generically, so fields added to these classes are saved and restored
  without changes here; the rebuilt objects are of the same classes, with equal values;
* root attributes, all JSON strings (netCDF cannot store dict attributes and changes
  1-element and empty lists; RELIABILITY.md section 4): the provenance written by
  :func:`poolwise.fit.sample_spec` (formula, settings, seed, versions of poolwise, nutpie,
  numba, numpy..., input SHA-256, rows and columns used), plus ``poolwise_timings``,
  ``poolwise_warnings``, ``poolwise_repair_log``, ``poolwise_diagnosis`` (readable copies for
  other tools), ``poolwise_variable_order`` (readers list variables alphabetically) and
  ``poolwise_format``.

Both formats round-trip losslessly (``DataTree.identical``), including non-ASCII,
space-containing and numeric-looking string labels and boolean ``diverging``.
"""
from __future__ import annotations

import dataclasses
import importlib
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import xarray as xr

from poolwise.errors import DataError

if TYPE_CHECKING:
    from poolwise.fit import Fit

log = logging.getLogger(__name__)

__all__ = [
    "save_fit",
    "load_fit",
    "storable",
    "to_datatree",
    "from_datatree",
    "write_tree",
    "read_tree",
    "DESIGN_GROUP",
    "FORMAT_VERSION",
]

#: nutpie sample stats that are strings or per-divergence records; not needed downstream
_DROP_STATS = ("divergence_message", "divergence_draw", "divergence_energy_error")

DESIGN_GROUP = "poolwise_design"
FORMAT_VERSION = "1"
StoreFormat = Literal["netcdf", "zarr"]
_FILES = {"netcdf": "fit.nc", "zarr": "fit.zarr"}


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
            ds = (ds.assign_coords({name: var.values.astype(str)}) if name in ds.coords
                  else ds.assign({name: var.astype(str)}))
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


class _Encoder:
    """Encodes poolwise's frozen dataclasses (ModelSpec, Design, GroupDesign, TermSpec,
    Formula, Prior(s), SamplerConfig, Diagnosis, repair steps...) field by field: arrays become
    variables of the design group, everything else JSON. Generic on purpose, so fields added
    to these classes are saved without changes here. Objects seen twice (a term's GroupDesign
    is also in ``design.groups``) are stored once and come back as the same object."""

    def __init__(self) -> None:
        self.arrays: dict[str, tuple[np.ndarray, str]] = {}
        self._seen: dict[int, str] = {}

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
            self._seen[id(v)] = path
            cls = type(v)
            if not cls.__module__.startswith("poolwise."):
                return {"__str__": str(v)}
            fields = {
                f.name: self.encode(getattr(v, f.name), f"{path}.{f.name}")
                for f in dataclasses.fields(v) if f.init
            }
            return {"__dataclass__": f"{cls.__module__}:{cls.__qualname__}", "__path__": path,
                    "fields": fields}
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
    def __init__(self, ds: xr.Dataset) -> None:
        self.ds = ds
        self._done: dict[str, Any] = {}

    def decode(self, v: Any) -> Any:
        if isinstance(v, list):
            return [self.decode(x) for x in v]
        if not isinstance(v, dict):
            return v
        if "__ref__" in v:
            return self._done[v["__ref__"]]
        if "__array__" in v:
            name = v["__array__"]
            out = _restore_labels(self.ds[name].values, v["kind"])
            self._done[name] = out
            return out
        if "__dataclass__" in v:
            module, _, qualname = v["__dataclass__"].partition(":")
            if not module.startswith("poolwise."):
                raise DataError(f"refusing to rebuild {v['__dataclass__']!r}: not a poolwise class")
            obj: Any = importlib.import_module(module)
            for part in qualname.split("."):
                obj = getattr(obj, part)
            out = obj(**{k: self.decode(x) for k, x in v["fields"].items()})
            self._done[v["__path__"]] = out
            return out
        if "__tuple__" in v:
            return tuple(self.decode(x) for x in v["__tuple__"])
        if "__dict__" in v:
            return {self.decode(k): self.decode(x) for k, x in v["__dict__"]}
        if "__str__" in v:
            return v["__str__"]
        return {k: self.decode(x) for k, x in v.items()}


def _label_array(values: np.ndarray) -> tuple[np.ndarray, str]:
    """An array as netCDF / zarr can store it, and how to restore its type: 'native'
    (numeric, bool and str arrays) or 'object' (an object array of Python scalars of one
    type, e.g. string group labels) or 'object-str' (mixed types, stored as text)."""
    if values.dtype != object:
        return values, "native"
    items = values.ravel().tolist()
    arr = np.asarray(items).reshape(values.shape) if items else np.array([], dtype=str)
    if arr.dtype.kind in "biufU" and len({type(x) for x in items}) <= 1:
        return arr, "object"
    return np.asarray([str(x) for x in items], dtype=str).reshape(values.shape), "object-str"


def _restore_labels(values: np.ndarray, how: str) -> np.ndarray:
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
    return {f.name: getattr(fit, f.name) for f in dataclasses.fields(fit) if f.name != "idata"}


def _design_group(fit: Fit) -> xr.Dataset:
    enc = _Encoder()
    meta = {name: enc.encode(v, name) for name, v in _fit_fields(fit).items()}
    data = {
        name: (tuple(f"{name}:{k}" for k in range(arr.ndim)), arr)
        for name, (arr, _) in enc.arrays.items()
    }
    return xr.Dataset(data, attrs={"poolwise_fit": json.dumps(meta)})


def _fit_from(ds: xr.Dataset) -> dict[str, Any]:
    dec = _Decoder(ds)
    return {name: dec.decode(v) for name, v in json.loads(ds.attrs["poolwise_fit"]).items()}


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


def from_datatree(tree: xr.DataTree) -> Fit:
    """Rebuild a Fit from a tree written by :func:`to_datatree`: the same spec (design,
    priors, parameterization), config, diagnosis, timings, warnings and repair log."""
    from poolwise.fit import Fit

    if DESIGN_GROUP not in tree.children:
        raise DataError(
            f"this file has no '{DESIGN_GROUP}' group, so the model cannot be rebuilt from it; "
            "it was not written by poolwise.save_fit (or by a version before format 1)"
        )
    attrs = dict(tree.attrs)
    fmt = attrs.get("poolwise_format")
    if fmt != FORMAT_VERSION:
        raise DataError(
            f"unsupported poolwise file format {fmt!r} (this version reads {FORMAT_VERSION!r})"
        )
    fields = _fit_from(tree[DESIGN_GROUP].to_dataset())
    order = json.loads(attrs.get("poolwise_variable_order", "{}"))
    nodes = {node.path: node for node in tree.subtree
             if node is not tree and node.name != DESIGN_GROUP}
    groups = {}
    for path in [p for p in order if p in nodes] + [p for p in nodes if p not in order]:
        ds = nodes[path].to_dataset()
        names = [v for v in order.get(path, []) if v in ds.data_vars]
        names += [v for v in ds.data_vars if v not in names]
        groups[path] = ds[names]
    idata = xr.DataTree.from_dict(groups)
    idata.attrs.update(attrs)
    return Fit(idata=idata, **fields)


# --------------------------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------------------------


def write_tree(tree: xr.DataTree, path: str | Path) -> Path:
    """Write a tree to ``*.nc`` (netCDF4 via h5netcdf) or ``*.zarr`` (zarr format 3)."""
    path = Path(path)
    if path.suffix == ".zarr":
        # consolidated metadata is not part of the zarr 3 spec (and warns)
        tree.to_zarr(path, mode="w", consolidated=False)
    else:
        tree.to_netcdf(path, engine="h5netcdf")
    return path


def read_tree(path: str | Path) -> xr.DataTree:
    """Read a tree written by :func:`write_tree` fully into memory (the file is closed)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"no saved fit at '{path}'")
    if path.suffix == ".zarr" or path.is_dir():
        with xr.open_datatree(path, engine="zarr", consolidated=False) as tree:
            return tree.load()
    with xr.open_datatree(path, engine="h5netcdf") as tree:
        return tree.load()


def save_fit(fit: Fit, out_dir: str | Path, *, format: StoreFormat = "netcdf") -> dict[str, Path]:
    """Write ``fit.nc`` (or ``fit.zarr``), ``summary.csv`` and ``result.json`` into ``out_dir``.

    The folder alone is enough for :func:`load_fit`.
    """
    from poolwise.summary import result_dict

    if format not in _FILES:
        raise ValueError(f"format must be 'netcdf' or 'zarr'; got {format!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"fit": out / _FILES[format], "summary": out / "summary.csv",
             "result": out / "result.json"}
    write_tree(to_datatree(fit), paths["fit"])
    table = fit.summary()
    table.to_csv(paths["summary"], index_label="parameter")
    result = result_dict(fit, table=table)
    paths["result"].write_text(json.dumps(result, indent=2, default=_json_default) + "\n")
    return paths


def load_fit(path: str | Path) -> Fit:
    """Load a fit saved by :func:`save_fit`: a folder (with ``fit.nc`` or ``fit.zarr``) or the
    ``.nc`` / ``.zarr`` path itself. The original data file is not needed."""
    path = Path(path)
    if path.is_dir() and path.suffix != ".zarr":
        found = [path / name for name in _FILES.values() if (path / name).exists()]
        if not found:
            raise DataError(
                f"'{path}' holds no saved fit (looked for {', '.join(_FILES.values())}); "
                "write one with `poolwise fit ... --out DIR` or poolwise.save_fit"
            )
        path = found[0]
    return from_datatree(read_tree(path))


def _json_default(v: object) -> object:
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return float(v)
    if isinstance(v, np.ndarray):
        return v.tolist()
    raise TypeError(f"not JSON serializable: {type(v).__name__}")
