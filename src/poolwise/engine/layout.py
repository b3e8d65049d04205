"""Packing a ModelSpec into the one buffer the compiled density reads, and naming the
parameters and the natural-scale variables it produces."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from poolwise.data.cells import likelihood_cells
from poolwise.data.patterns import row_patterns
from poolwise.engine import density as D
from poolwise.errors import SpecError
from poolwise.model import families, links
from poolwise.model.naming import (
    cor_name,
    cpc_name,
    fixed_name,
    level_param_name,
    log_sd_name,
    sd_name,
    total_name,
)
from poolwise.model.priors import Prior
from poolwise.model.spec import ModelSpec, TermSpec

__all__ = ["PackedModel", "pack", "Variable", "fixed_name", "sd_name", "total_name"]


@dataclass(frozen=True)
class Variable:
    """A named natural-scale output: ``size`` consecutive values of the expanded vector."""

    name: str
    dims: tuple[str, ...]
    size: int
    kind: str  # "fixed", "sd", "cor", "total", "phi"
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
    """A scalar prior as the density reads it: its kernel id, then three parameters."""
    return families.get(p.family).kernel_words(p.params)


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


def _term_parameters(term: TermSpec, pos: int) -> tuple[list[int], list[str], list[Variable], int]:
    """One term's record (without the word offsets of its arrays), the names of its
    parameters from position ``pos`` on (log SDs, canonical partial correlations, level
    effects), its natural-scale variables, and the position after them."""
    g = term.group
    L, C = g.n_levels, g.n_coefs
    rec = [0] * D.TERM_WORDS
    rec[D.T_L], rec[D.T_C] = L, C
    rec[D.T_CORR] = int(term.correlated)
    rec[D.T_SDFIXED] = int(not term.estimated)
    param_names: list[str] = []
    variables: list[Variable] = []
    if term.estimated:
        rec[D.T_PSD] = pos
        for c in g.coef_names:
            param_names.append(log_sd_name(term, c))
            variables.append(Variable(sd_name(term, c), (), 1, "sd", term.name, c))
        pos += C
    if term.correlated:
        rec[D.T_PCORR] = pos
        for i in range(1, C):
            for j in range(i):
                ci, cj = g.coef_names[i], g.coef_names[j]
                param_names.append(cpc_name(term, cj, ci))
                variables.append(Variable(cor_name(term, cj, ci), (), 1, "cor", term.name))
        pos += C * (C - 1) // 2
    rec[D.T_PLEV] = pos
    for j in range(L):
        for c in g.coef_names:
            param_names.append(level_param_name(term, c, g.labels[j], bool(term.centered[j])))
    pos += L * C
    for c in g.coef_names:
        variables.append(Variable(total_name(term, c), (term.name,), L, "total", term.name, c))
    return rec, param_names, variables, pos


def _engine_cells(spec: ModelSpec) -> tuple[np.ndarray, ...]:
    """What the engine calls cells: each one's design cell, successes, trials and weight. The
    binomial samples the design's cells (rows summed, weight 1); the beta-binomial the row
    patterns with their counts as weights (the sum of beta-binomial rows is not
    beta-binomial). Survey weights (:mod:`poolwise.data.weights`): the beta-binomial's
    pattern weights are the sums of their rows' weights; the binomial's cells hold the
    weighted sums of successes and trials (its kernel is linear in them)."""
    d = spec.design
    if spec.family == "beta_binomial":
        pat = row_patterns(d)
        return pat.cell, pat.y, pat.n, pat.likelihood_weight
    y, n = likelihood_cells(d)  # survey weights: data.cells.survey_cells
    return np.arange(d.n_cells), y, n, np.ones(d.n_cells)


def _term_arrays(term: TermSpec, cells: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """One term's int arrays (level codes, mean indices, centered flags) and float arrays (Z
    column by column, SD priors or fixed SDs, LKJ eta), for the engine's ``cells``."""
    g = term.group
    ints = [g.codes[cells].astype(np.int64), np.array(term.mu_index, dtype=np.int64),
            term.centered.astype(np.int64)]
    sdp = (
        np.array([w for p in term.sd_priors for w in _prior_words(p)])
        if term.estimated
        else np.array(term.sd_fixed, dtype=float)
    )
    # struct of arrays: column c of Z is N contiguous words (cell i at zoff + c * N + i)
    floats = [g.Z_engine[cells].astype(float).T.ravel(), sdp, np.array([term.lkj_eta])]
    return ints, floats


def _cell_arrays(spec: ModelSpec, cells: tuple[np.ndarray, ...]) -> list[np.ndarray]:
    """The float arrays ahead of the terms': successes, trials, X, fixed priors, the constant,
    the offset, phi's prior, the weights (the header's H_Y ... H_OFFSET, H_PHIPRIOR, H_WEIGHT,
    in this order)."""
    d = spec.design
    index, y, n, weight = cells
    phi_prior = (_prior_words(spec.priors.phi) if spec.family == "beta_binomial"
                 else [0.0, 0.0, 0.0, 0.0])
    return [
        np.asarray(y, dtype=float),
        np.asarray(n, dtype=float),
        d.X_engine[index].astype(float).T.ravel(),  # centered / scaled: design.py; by column
        np.array([w for p in spec.fixed_priors for w in _prior_words(p)], dtype=float),
        np.array([d.log_binom_const]),
        _cell_offset(d)[index],
        np.array(phi_prior, dtype=float),
        np.asarray(weight, dtype=float),
    ]


def _word_offsets(start: int, blobs: list[np.ndarray]) -> tuple[list[int], int]:
    """The word offset of each array laid out one after another from ``start``, and the end."""
    offsets = []
    off = start
    for blob in blobs:
        offsets.append(off)
        off += len(blob)
    return offsets, off


def _header(spec: ModelSpec, words: int, dim: int, n_expanded: int, n_cells: int,
            float_offsets: list[int]) -> list[int]:
    """The header words: sizes, the link and family, and the word offsets of the cell arrays
    and records."""
    d = spec.design
    header = [0] * D.HEADER
    header[D.H_WORDS] = words
    header[D.H_N], header[D.H_K], header[D.H_T] = n_cells, len(d.fixed_names), len(spec.terms)
    header[D.H_LINK] = links.get(spec.link).kernel_id
    header[D.H_DIM] = dim
    header[D.H_NEXP] = n_expanded
    header[D.H_Y], header[D.H_NTRIALS], header[D.H_X], header[D.H_BPRIOR], header[D.H_CONST] = (
        float_offsets[:5]
    )
    header[D.H_OFFSET] = float_offsets[5]
    bb = spec.family == "beta_binomial"
    header[D.H_FAMILY] = D.BETA_BINOMIAL if bb else D.BINOMIAL
    header[D.H_PPHI] = dim - 1 if bb else -1
    header[D.H_PHIPRIOR], header[D.H_WEIGHT] = float_offsets[6], float_offsets[7]
    header[D.H_TERMS] = D.HEADER
    return header


def _link_term_arrays(records: list[int], n_terms: int, int_offsets: list[int],
                      float_offsets: list[int]) -> None:
    """Write the word offsets of each term's arrays into its record (three int arrays and three
    float arrays per term, the float ones after the eight cell arrays)."""
    for t in range(n_terms):
        base = t * D.TERM_WORDS
        records[base + D.T_CODES] = int_offsets[3 * t]
        records[base + D.T_MUIDX] = int_offsets[3 * t + 1]
        records[base + D.T_CENTERED] = int_offsets[3 * t + 2]
        records[base + D.T_Z] = float_offsets[8 + 3 * t]
        records[base + D.T_SDPRIOR] = float_offsets[8 + 3 * t + 1]
        records[base + D.T_LKJ] = float_offsets[8 + 3 * t + 2]


def pack(spec: ModelSpec) -> PackedModel:
    """The read-only buffer of ``spec``: header, term records, then int arrays, then float
    arrays (docs/architecture.md, "The engine's buffer"), with the parameters' names."""
    d = spec.design
    K, T = len(d.fixed_names), len(spec.terms)
    records = [0] * (D.TERM_WORDS * T)
    int_blobs: list[np.ndarray] = []
    float_blobs: list[np.ndarray] = []
    variables: list[Variable] = [
        Variable(fixed_name(c), (), 1, "fixed", coef=c) for c in d.fixed_names
    ]
    param_names = [fixed_name(c) for c in d.fixed_names]
    coords: dict[str, list] = {}
    cells = _engine_cells(spec)
    pos = K
    for t, term in enumerate(spec.terms):
        rec, names, term_variables, pos = _term_parameters(term, pos)
        param_names += names
        variables += term_variables
        coords[term.name] = list(term.group.labels.tolist())
        records[t * D.TERM_WORDS : (t + 1) * D.TERM_WORDS] = rec
        ints, floats = _term_arrays(term, cells[0])
        int_blobs += ints
        float_blobs += floats
    if spec.family == "beta_binomial":  # log phi, last
        param_names.append("log_phi")
        variables.append(Variable("phi", (), 1, "phi"))
        pos += 1
    n_expanded = sum(v.size for v in variables)
    float_blobs = _cell_arrays(spec, cells) + float_blobs
    int_offsets, off = _word_offsets(D.HEADER + len(records), int_blobs)
    float_offsets, words = _word_offsets(off, float_blobs)
    buf = np.zeros(words, dtype=np.int64)
    fview = buf.view(np.float64)
    for o, blob in zip(int_offsets, int_blobs, strict=True):
        buf[o : o + len(blob)] = blob
    for o, blob in zip(float_offsets, float_blobs, strict=True):
        fview[o : o + len(blob)] = blob
    _link_term_arrays(records, T, int_offsets, float_offsets)
    buf[: D.HEADER] = _header(spec, words, pos, n_expanded, len(cells[0]), float_offsets)
    buf[D.HEADER : D.HEADER + len(records)] = records
    buf.flags.writeable = False
    return PackedModel(buf, pos, n_expanded, tuple(variables), coords, tuple(param_names))
