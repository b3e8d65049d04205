"""Frozen term objects produced by the parser.

A model *variable* is a label: a data column (``x``) or an expression of columns
(``log(x)``, ``I(age^2)``, ``poly(age, 2)``, ``factor(period)``, ``n - k``). Terms and the
response refer to variables by label; :attr:`Formula.exprs` maps every label that is not a
plain column to its expression tree (the nodes below). Labels are written as R deparses the
expression, so coefficient names read like lme4's (``factor(period)2``, ``poly(age, 2)1``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ResponseKind = Literal["bernoulli", "cbind", "trials"]

_PREC = {"+": 1, "-": 1, "*": 2, "/": 2, "^": 4}


@dataclass(frozen=True)
class Expr:
    """An expression node; ``label`` is its R-style text, ``columns`` the data columns."""

    @property
    def label(self) -> str:  # pragma: no cover - every node overrides it
        raise NotImplementedError

    @property
    def columns(self) -> tuple[str, ...]:
        return ()

    def __str__(self) -> str:
        return self.label


@dataclass(frozen=True)
class Col(Expr):
    """A data column."""

    name: str

    @property
    def label(self) -> str:
        return self.name

    @property
    def columns(self) -> tuple[str, ...]:
        return (self.name,)


@dataclass(frozen=True)
class Num(Expr):
    """A number literal."""

    value: float

    @property
    def label(self) -> str:
        v = float(self.value)
        return str(int(v)) if v.is_integer() and abs(v) < 1e15 else f"{v:.15g}"


@dataclass(frozen=True)
class Str(Expr):
    """A string literal (a level name in ``C(x, ref = "b")``)."""

    value: str

    @property
    def label(self) -> str:
        return '"' + self.value + '"'


@dataclass(frozen=True)
class Bool(Expr):
    """``TRUE`` / ``FALSE`` (``poly(x, 2, raw = TRUE)``)."""

    value: bool

    @property
    def label(self) -> str:
        return "TRUE" if self.value else "FALSE"


@dataclass(frozen=True)
class Paren(Expr):
    """``( expr )``, kept so labels show the parentheses that were written."""

    inner: Expr

    @property
    def label(self) -> str:
        return f"({self.inner.label})"

    @property
    def columns(self) -> tuple[str, ...]:
        return self.inner.columns


@dataclass(frozen=True)
class Neg(Expr):
    """Unary minus."""

    operand: Expr

    @property
    def label(self) -> str:
        return f"-{self.operand.label}"

    @property
    def columns(self) -> tuple[str, ...]:
        return self.operand.columns


@dataclass(frozen=True)
class BinOp(Expr):
    """``left op right`` with op one of ``+ - * / ^``."""

    op: str
    left: Expr
    right: Expr

    @property
    def label(self) -> str:
        sep = self.op if self.op in ("^", "/") else f" {self.op} "  # as R's deparse
        return f"{self.left.label}{sep}{self.right.label}"

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.left.columns + self.right.columns))


@dataclass(frozen=True)
class Call(Expr):
    """``fn(args, name = value)``."""

    fn: str
    args: tuple[Expr, ...]
    kwargs: tuple[tuple[str, Expr], ...] = ()

    @property
    def label(self) -> str:
        parts = [a.label for a in self.args] + [f"{k} = {v.label}" for k, v in self.kwargs]
        return f"{self.fn}({', '.join(parts)})"

    @property
    def columns(self) -> tuple[str, ...]:
        if self.fn == "C":  # the contrast argument names no column
            return self.args[0].columns
        out: list[str] = []
        for a in list(self.args) + [v for _, v in self.kwargs]:
            out.extend(c for c in a.columns if c not in out)
        return tuple(out)


@dataclass(frozen=True)
class Response:
    """The left-hand side.

    ``bernoulli``: ``y`` (0/1 rows); ``cbind``: ``cbind(successes, failures)``;
    ``trials``: ``successes | trials(n)`` or ``successes / n``.
    """

    kind: ResponseKind
    successes: str
    failures: str | None = None
    trials: str | None = None

    @property
    def columns(self) -> tuple[str, ...]:
        cols = [self.successes]
        if self.failures is not None:
            cols.append(self.failures)
        if self.trials is not None:
            cols.append(self.trials)
        return tuple(cols)

    def __str__(self) -> str:
        if self.kind == "cbind":
            return f"cbind({self.successes}, {self.failures})"
        if self.kind == "trials":
            return f"{self.successes} | trials({self.trials})"
        return self.successes


@dataclass(frozen=True)
class Term:
    """A fixed-effect term: one variable (``x``) or an interaction (``x:z``)."""

    variables: tuple[str, ...]

    @property
    def name(self) -> str:
        return ":".join(self.variables)

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class GroupTerm:
    """``(expr | group)``: varying intercept and/or slopes of ``terms`` by ``group``.

    ``group`` is a tuple of column names; more than one means the interaction ``a:b``
    (nesting ``(1 | a/b)`` expands to ``(1 | a) + (1 | a:b)``). ``correlated`` is False
    for ``||``.
    """

    intercept: bool
    terms: tuple[Term, ...]
    group: tuple[str, ...]
    correlated: bool = True

    @property
    def group_name(self) -> str:
        return ":".join(self.group)

    @property
    def coef_names(self) -> tuple[str, ...]:
        names = ("Intercept",) if self.intercept else ()
        return names + tuple(t.name for t in self.terms)

    @property
    def variables(self) -> tuple[str, ...]:
        out: list[str] = []
        for t in self.terms:
            out.extend(v for v in t.variables if v not in out)
        return tuple(out)

    def __str__(self) -> str:
        parts = (["1"] if self.intercept else ["0"]) + [t.name for t in self.terms]
        bar = "|" if self.correlated else "||"
        return f"({' + '.join(parts)} {bar} {self.group_name})"


@dataclass(frozen=True)
class Formula:
    """A parsed model formula. Build it with :func:`poolwise.parse_formula`.

    ``exprs`` maps each variable label that is not a plain data column (``log(x)``,
    ``n - k``, ``offset(log(n))``) to its expression; ``offsets`` are the labels of the
    ``offset(...)`` terms, each a known per-row addition to the linear predictor.
    """

    text: str
    response: Response
    intercept: bool
    terms: tuple[Term, ...]
    groups: tuple[GroupTerm, ...]
    exprs: tuple[tuple[str, Expr], ...] = ()
    offsets: tuple[str, ...] = ()

    def expr(self, label: str) -> Expr:
        """The expression behind a variable label (a plain column for a bare name)."""
        for lab, e in self.exprs:
            if lab == label:
                return e
        return Col(label)

    @property
    def columns(self) -> tuple[str, ...]:
        """Every model variable (label) the model uses, in order of first appearance: data
        columns as written, expressions by their label (see :attr:`source_columns`)."""
        out: list[str] = []

        def add(names: tuple[str, ...]) -> None:
            out.extend(n for n in names if n not in out)

        add(self.response.columns)
        for t in self.terms:
            add(t.variables)
        for g in self.groups:
            add(g.variables)
            add(g.group)
        add(self.offsets)
        return tuple(out)

    @property
    def source_columns(self) -> tuple[str, ...]:
        """The data columns the model reads (inside expressions too), first appearance order."""
        out: list[str] = []
        for label in self.columns:
            out.extend(c for c in self.expr(label).columns if c not in out)
        return tuple(out)

    @property
    def predictors(self) -> tuple[str, ...]:
        """Columns used as predictors (fixed or varying), not response or grouping columns."""
        out: list[str] = []
        for t in self.terms:
            out.extend(v for v in t.variables if v not in out)
        for g in self.groups:
            out.extend(v for v in g.variables if v not in out)
        return tuple(out)

    @property
    def grouping_columns(self) -> tuple[str, ...]:
        out: list[str] = []
        for g in self.groups:
            out.extend(c for c in g.group if c not in out)
        return tuple(out)

    def __str__(self) -> str:
        rhs = ["1" if self.intercept else "0"] + [t.name for t in self.terms]
        rhs += [str(g) for g in self.groups]
        rhs += list(self.offsets)
        return f"{self.response} ~ {' + '.join(rhs)}"
