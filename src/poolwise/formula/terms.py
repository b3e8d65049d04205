"""Frozen term objects produced by the parser."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ResponseKind = Literal["bernoulli", "cbind", "trials"]


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
    """A parsed model formula. Build it with :func:`poolwise.parse_formula`."""

    text: str
    response: Response
    intercept: bool
    terms: tuple[Term, ...]
    groups: tuple[GroupTerm, ...]

    @property
    def columns(self) -> tuple[str, ...]:
        """Every data column the model uses, in order of first appearance."""
        out: list[str] = []

        def add(names: tuple[str, ...]) -> None:
            out.extend(n for n in names if n not in out)

        add(self.response.columns)
        for t in self.terms:
            add(t.variables)
        for g in self.groups:
            add(g.variables)
            add(g.group)
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
        return f"{self.response} ~ {' + '.join(rhs)}"
