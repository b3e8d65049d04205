"""The size of the fixed effects' model matrix, counted from the levels and the rows before
anything is built (:func:`check_design_size`, a phase of :func:`poolwise.data.design.
build_design` between the encodings and :func:`poolwise.data.encode.fixed_columns`).

A categorical predictor gets a column per level but one; the model matrix is dense, so a
factor with 200,000 levels on 200,000 rows would be 320 GB (docs/reliability.md R.18). Such a
design is refused with its estimate and the advice to write the factor as a group term, when
:data:`DESIGN_COPIES` copies of it exceed the available memory or it has more than
:data:`MAX_FIXED_COLUMNS` columns.
"""

from __future__ import annotations

from poolwise.data.encode import Encoded, unpooled_coefficients
from poolwise.errors import DataError
from poolwise.formula import Formula
from poolwise.formula.terms import Call, Col
from poolwise.formula.transforms import Encoding, full_coding
from poolwise.resources import available_memory_bytes, fmt_bytes

__all__ = ["DESIGN_COPIES", "MAX_FIXED_COLUMNS", "check_design_size"]

#: fixed-effect columns beyond this are refused whatever the memory [R.18]: no sampler
#: estimates that many coefficients well, and a factor with that many levels is a group term
MAX_FIXED_COLUMNS = 10_000
#: building the fixed effects holds about this many copies of their matrix at once (the
#: columns of each term, the matrix, the collinearity check's normalised copy) [R.18]
DESIGN_COPIES = 3


def _term_width(variables: tuple[str, ...], enc: Encoding, full: frozenset[str]) -> int:
    """The number of columns :func:`poolwise.formula.transforms.term_columns` makes for a
    term, without making them."""
    width = 1
    for var in variables:
        v = enc.variable(var)
        if v.kind == "categorical":
            width *= len(v.levels) if var in full else len(v.levels) - 1
        else:
            width *= len(v.columns)
    return width


def _group_term_advice(f: Formula, variables: tuple[str, ...], enc: Encoding) -> str:
    """``(1 | id)`` for a factor, ``(0 + x | id)`` for its interaction with numbers."""
    cats, nums = [], []
    for var in variables:
        if enc.variable(var).kind == "categorical":
            e = f.expr(var)
            inner = e.args[0] if isinstance(e, Call) and e.args else e
            cats.append(inner.name if isinstance(inner, Col) else var)
        else:
            nums.append(var)
    lhs = "1" if not nums else "0 + " + ":".join(nums)
    return f"({lhs} | {':'.join(cats)})"


def check_design_size(
    f: Formula, enc: Encoded, pooling: str, n_rows: int, available: int | None = None
) -> None:
    """[R.18] The fixed effects' model matrix (columns x rows x 8 bytes), counted from the
    levels and the rows before anything is built: DataError when it has more than
    :data:`MAX_FIXED_COLUMNS` columns, or when :data:`DESIGN_COPIES` copies of it exceed the
    available memory (``available``; default: :func:`available_memory_bytes`). The message
    names the widest term and suggests writing it as a group term."""
    unpooled = unpooled_coefficients(f, pooling)
    siblings = [t.variables for t in f.terms]
    widths = [(t, _term_width(t.variables, enc.encoding,
                              full_coding(t.variables, siblings, f.intercept, enc.encoding)))
              for t in f.terms if t.name not in unpooled]
    columns = int(f.intercept and "Intercept" not in unpooled) + sum(w for _, w in widths)
    if not widths:
        return
    size = columns * n_rows * 8
    available = available_memory_bytes() if available is None else available
    too_many = columns > MAX_FIXED_COLUMNS
    if not too_many and (available is None or size * DESIGN_COPIES <= available):
        return
    term, width = max(widths, key=lambda tw: tw[1])
    cats = [v for v in term.variables if enc.encoding.variable(v).kind == "categorical"]
    made = (f"term '{term.name}' alone makes {width:,} of them from the levels of "
            + " x ".join(f"'{v}' ({len(enc.encoding.variable(v).levels):,})" for v in cats)
            if cats else f"the widest term, '{term.name}', makes {width:,}")
    why = (f"more than the {MAX_FIXED_COLUMNS:,} fixed coefficients poolwise accepts (no "
           "sampler estimates that many separate coefficients well)" if too_many else
           f"and building it takes about {DESIGN_COPIES} times that, more than the "
           f"{fmt_bytes(available or 0)} of memory available")
    advice = (f"; write it as a group term, "
              f"'{_group_term_advice(f, term.variables, enc.encoding)}' instead of "
              f"'{term.name}': its levels are then partially pooled, with one standard "
              "deviation instead of a coefficient each" if cats else
              "; use fewer predictors or a lower polynomial degree")
    raise DataError(
        f"the fixed effects would be a matrix of {fmt_bytes(size)} ({columns:,} columns x "
        f"{n_rows:,} rows x 8 bytes; {made}), {why}{advice}"
    )
