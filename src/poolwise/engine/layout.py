"""Packing a ModelSpec into the one buffer the compiled density reads, and naming the
parameters and the natural-scale variables it produces."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from poolwise.engine import density as D
from poolwise.errors import SpecError
from poolwise.model import ModelSpec, TermSpec
from poolwise.priors import Prior

__all__ = ["PackedModel", "pack", "Variable"]

_LINK_CODE = {"logit": D.LOGIT, "probit": D.PROBIT, "cloglog": D.CLOGLOG}


@dataclass(frozen=True)
class Variable:
    """A named natural-scale output: ``size`` consecutive values of the expanded vector."""

    name: str
    dims: tuple[str, ...]
    size: int
    kind: str  # "fixed", "sd", "cor", "total"
    term: str | None = None
    coef: str | None = None


@dataclass(frozen=True, eq=False)
class PackedModel:
    buffer: np.ndarray  # int64 words; the float64 view shares memory
    dim: int
    n_expanded: int
    variables: tuple[Variable, ...]
    coords: dict[str, list]
    param_names: tuple[str, ...]

    @property
    def ib(self) -> np.ndarray:
        return self.buffer

    @property
    def fb(self) -> np.ndarray:
        return self.buffer.view(np.float64)


def _prior_words(p: Prior) -> list[float]:
    fam = p.family
    params = list(p.params)
    code = {
        "flat": D.FLAT,
        "normal": D.NORMAL,
        "student_t": D.STUDENT_T,
        "exponential": D.EXPONENTIAL,
        "half_normal": D.HALF_NORMAL,
        "half_student_t": D.HALF_STUDENT_T,
    }[fam]
    return [float(code)] + params + [0.0] * (3 - len(params))


def sd_name(term: TermSpec, coef: str) -> str:
    if term.group.n_coefs == 1 and coef == "Intercept":
        return f"sd_{term.name}"
    return f"sd_{term.name}__{coef}"


def total_name(term: TermSpec, coef: str) -> str:
    return f"a_{term.name}" if coef == "Intercept" else f"b_{term.name}__{coef}"


def fixed_name(coef: str) -> str:
    return "Intercept" if coef == "Intercept" else f"b_{coef}"


def _cell_offset(d) -> np.ndarray:
    """Per-cell additive term of eta: the design's ``offset`` when it has one, else zeros."""
    off = getattr(d, "offset", None)
    if off is None:
        return np.zeros(d.n_cells)
    off = np.asarray(off, dtype=float).ravel()
    if off.shape != (d.n_cells,):
        raise SpecError(f"the design's offset has {off.size} values for {d.n_cells} cells; "
                        "it needs one per binomial cell")
    if not np.all(np.isfinite(off)):
        raise SpecError("the design's offset has non-finite values; an offset must be finite")
    return off


def pack(spec: ModelSpec) -> PackedModel:
    d = spec.design
    N, K, T = d.n_cells, len(d.fixed_names), len(spec.terms)
    ints: list[int] = []  # we assemble two lists and lay them out afterwards
    floats: list[float] = []

    # layout: header, term records, then int arrays, then float arrays
    header = [0] * D.HEADER
    records = [0] * (D.TERM_WORDS * T)
    int_blobs: list[np.ndarray] = []
    float_blobs: list[np.ndarray] = []

    variables: list[Variable] = [
        Variable(fixed_name(c), (), 1, "fixed", coef=c) for c in d.fixed_names
    ]
    param_names = [fixed_name(c) for c in d.fixed_names]
    coords: dict[str, list] = {}
    pos = K
    for t, term in enumerate(spec.terms):
        g = term.group
        L, C = g.n_levels, g.n_coefs
        rec = [0] * D.TERM_WORDS
        rec[D.T_L], rec[D.T_C] = L, C
        rec[D.T_CORR] = int(term.correlated)
        rec[D.T_SDFIXED] = int(not term.estimated)
        if term.estimated:
            rec[D.T_PSD] = pos
            for c in g.coef_names:
                param_names.append(f"log_{sd_name(term, c)}")
                variables.append(Variable(sd_name(term, c), (), 1, "sd", term.name, c))
            pos += C
        if term.correlated:
            rec[D.T_PCORR] = pos
            for i in range(1, C):
                for j in range(i):
                    nm = f"cor_{term.name}__{g.coef_names[j]}__{g.coef_names[i]}"
                    param_names.append(f"atanh_cpc_{nm}")
                    variables.append(Variable(nm, (), 1, "cor", term.name))
            pos += C * (C - 1) // 2
        rec[D.T_PLEV] = pos
        for j in range(L):
            for c in g.coef_names:
                kind = "u" if term.centered[j] else "z"
                param_names.append(f"{kind}_{term.name}__{c}[{g.labels[j]}]")
        pos += L * C
        for c in g.coef_names:
            variables.append(Variable(total_name(term, c), (term.name,), L, "total", term.name, c))
        coords[term.name] = list(g.labels.tolist())
        records[t * D.TERM_WORDS : (t + 1) * D.TERM_WORDS] = rec
        int_blobs += [g.codes.astype(np.int64), np.array(term.mu_index, dtype=np.int64),
                      term.centered.astype(np.int64)]
        sdp = (
            np.array([w for p in term.sd_priors for w in _prior_words(p)])
            if term.estimated
            else np.array(term.sd_fixed, dtype=float)
        )
        # struct of arrays: column c of Z is N contiguous words (cell i at zoff + c * N + i)
        float_blobs += [g.Z_engine.astype(float).T.ravel(), sdp, np.array([term.lkj_eta])]
    dim = pos
    n_expanded = sum(v.size for v in variables)

    float_head = [
        d.y.astype(float),
        d.n.astype(float),
        d.X_engine.astype(float).T.ravel(),  # centered / scaled: design.py; column-major
        np.array([w for p in spec.fixed_priors for w in _prior_words(p)], dtype=float),
        np.array([d.log_binom_const]),
        _cell_offset(d),
    ]
    # assign offsets
    off = D.HEADER + len(records)
    int_offsets = []
    for blob in int_blobs:
        int_offsets.append(off)
        off += len(blob)
    float_offsets = []
    for blob in float_head + float_blobs:
        float_offsets.append(off)
        off += len(blob)
    words = off
    buf = np.zeros(words, dtype=np.int64)
    fview = buf.view(np.float64)
    for o, blob in zip(int_offsets, int_blobs, strict=True):
        buf[o : o + len(blob)] = blob
    for o, blob in zip(float_offsets, float_head + float_blobs, strict=True):
        fview[o : o + len(blob)] = blob
    header[D.H_WORDS] = words
    header[D.H_N], header[D.H_K], header[D.H_T] = N, K, T
    header[D.H_LINK] = _LINK_CODE[spec.link]
    header[D.H_DIM] = dim
    header[D.H_NEXP] = n_expanded
    header[D.H_Y], header[D.H_NTRIALS], header[D.H_X], header[D.H_BPRIOR], header[D.H_CONST] = (
        float_offsets[:5]
    )
    header[D.H_OFFSET] = float_offsets[5]
    header[D.H_TERMS] = D.HEADER
    for t in range(T):
        base = t * D.TERM_WORDS
        records[base + D.T_CODES] = int_offsets[3 * t]
        records[base + D.T_MUIDX] = int_offsets[3 * t + 1]
        records[base + D.T_CENTERED] = int_offsets[3 * t + 2]
        records[base + D.T_Z] = float_offsets[6 + 3 * t]
        records[base + D.T_SDPRIOR] = float_offsets[6 + 3 * t + 1]
        records[base + D.T_LKJ] = float_offsets[6 + 3 * t + 2]
    buf[: D.HEADER] = header
    buf[D.HEADER : D.HEADER + len(records)] = records
    buf.flags.writeable = False
    del ints, floats
    return PackedModel(buf, dim, n_expanded, tuple(variables), coords, tuple(param_names))
