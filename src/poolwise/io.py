"""Saving a fit: ``fit.nc`` (the DataTree), ``summary.csv`` and ``result.json``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import xarray as xr

if TYPE_CHECKING:
    from poolwise.fit import Fit

__all__ = ["save_fit", "storable"]

#: nutpie sample stats that are strings or per-divergence records; not needed downstream
_DROP_STATS = ("divergence_message", "divergence_draw", "divergence_energy_error")


def storable(tree: xr.DataTree) -> xr.DataTree:
    """A copy of the tree that netCDF and zarr can store losslessly."""
    groups = {}
    for node in tree.subtree:
        if node is tree:
            continue
        ds = node.to_dataset()
        if node.name == "sample_stats":
            ds = ds.drop_vars([v for v in _DROP_STATS if v in ds])
        for name in list(ds.coords):
            if ds[name].dtype == object:
                ds = ds.assign_coords({name: ds[name].values.astype(str)})
        groups[node.path] = ds
    out = xr.DataTree.from_dict(groups)
    out.attrs.update(tree.attrs)
    return out


def save_fit(fit: Fit, out_dir: str | Path) -> dict[str, Path]:
    from poolwise.summary import result_dict

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"fit": out / "fit.nc", "summary": out / "summary.csv", "result": out / "result.json"}
    storable(fit.idata).to_netcdf(paths["fit"], engine="h5netcdf")
    fit.summary().to_csv(paths["summary"], index_label="parameter")
    paths["result"].write_text(json.dumps(result_dict(fit), indent=2, default=_json_default) + "\n")
    return paths


def _json_default(v: object) -> object:
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return float(v)
    if isinstance(v, np.ndarray):
        return v.tolist()
    raise TypeError(f"not JSON serializable: {type(v).__name__}")
