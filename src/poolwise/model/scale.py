"""From the engine's standardized scale to the original scale of the predictors.

The engine samples a centered and scaled copy of the design (:mod:`poolwise.data.design`); every
draw a user sees is on the original scale (:func:`to_original_scale`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import xarray as xr

from poolwise.model.naming import fixed_name, sd_name, total_name

if TYPE_CHECKING:
    from poolwise.model.spec import ModelSpec

__all__ = ["to_original_scale"]


def to_original_scale(spec: ModelSpec, post: xr.Dataset) -> xr.Dataset:
    """Draws of the engine (centered / scaled design, see :mod:`poolwise.data.design`) on the
    original scale of the predictors. Exact, draw by draw:

    * ``b_<col> = b_std / scale`` and ``Intercept = Intercept_std - sum_k b_k * center_k``
      (the log-odds at all predictors = 0 on their original scale);
    * per-level totals ``a_<g>[j]`` get the same intercept shift (when their mean is the fixed
      intercept, or they are the unpooled intercepts of ``pooling="none"``) and slopes
      ``b_<g>__<coef>[j]`` and their SDs ``sd_<g>__<coef>`` are divided by the column's scale;
      correlations are unchanged (the group-level columns are never centered).
    """
    d = spec.design
    if not d.rescaled:
        return post
    out = post.copy()
    K = len(d.fixed_names)
    center = d.x_center if d.x_center is not None else np.zeros(K)
    scale = d.x_scale if d.x_scale is not None else np.ones(K)
    shift = None
    for k, coef in enumerate(d.fixed_names):
        if coef == "Intercept":
            continue
        name = fixed_name(coef)
        out[name] = post[name] / scale[k]
        if center[k] != 0.0:
            contrib = out[name] * center[k]
            shift = -contrib if shift is None else shift - contrib
    if shift is not None and "Intercept" in d.fixed_names:
        out["Intercept"] = post["Intercept"] + shift
    for term in spec.terms:
        g = term.group
        zs = g.z_scale if g.z_scale is not None else np.ones(g.n_coefs)
        for c, coef in enumerate(g.coef_names):
            name = total_name(term, coef)
            if coef == "Intercept":
                mi = term.mu_index[c]
                carries = (mi >= 0 and d.fixed_names[mi] == "Intercept") or (
                    mi < 0 and "Intercept" not in d.fixed_names
                )
                if shift is not None and carries:
                    # in the totals' own dtype (float32 for a large trace: no float64 copy)
                    out[name] = post[name] + shift.astype(post[name].dtype)
            elif zs[c] != 1.0:
                out[name] = post[name] / post[name].dtype.type(zs[c])
                sdn = sd_name(term, coef)
                if sdn in post:
                    out[sdn] = post[sdn] / zs[c]
    return out
