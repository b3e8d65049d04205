"""A small recursive-descent parser for the lme4 / brms formula grammar.

::

    formula   := response "~" rhs
    response  := NAME | "cbind(" NAME "," NAME ")" | NAME "|" "trials(" NAME ")" | NAME "/" NAME
    rhs       := part (("+" | "-") part)*
    part      := "1" | "0" | group | product
    group     := "(" ["0" "+" | "1" "+"] product-list ("|" | "||") grouping ")"
    grouping  := factor (("/" | ":") factor)*
    product   := NAME ((":" | "*") NAME)*

Names may contain letters, digits, ``.`` and ``_`` (``use.contraception``) or be quoted in
backticks (```living children```). ``x*z`` expands to ``x + z + x:z``; ``(1 | a/b)`` expands to
``(1 | a) + (1 | a:b)``. As in R's ``terms()``, terms are ordered by degree: main effects, then
two-way interactions, and so on (``y ~ x*z + w`` gives ``x, z, w, x:z``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from poolwise.errors import FormulaError
from poolwise.formula.terms import Formula, GroupTerm, Response, Term

__all__ = ["parse_formula"]

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<name>[A-Za-z_.][A-Za-z0-9_.]*)
  | (?P<quoted>`[^`]*`)
  | (?P<number>[0-9]+(?:\.[0-9]*)?)
  | (?P<op>\|\||[~+\-:*/|(),])
    """,
    re.VERBOSE,
)


@dataclass(frozen=True)
class _Tok:
    kind: str  # "name", "number", "op", "end"
    text: str
    start: int
    end: int


def _tokenize(text: str) -> list[_Tok]:
    toks: list[_Tok] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise FormulaError(
                f"unexpected character {text[pos]!r} in formula", text, (pos, pos + 1)
            )
        kind = m.lastgroup or ""
        if kind == "quoted":
            toks.append(_Tok("name", m.group()[1:-1], m.start(), m.end()))
        elif kind != "ws":
            toks.append(_Tok(kind, m.group(), m.start(), m.end()))
        pos = m.end()
    toks.append(_Tok("end", "", len(text), len(text)))
    return toks


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.toks = _tokenize(text)
        self.i = 0

    # -- token helpers -------------------------------------------------------------------
    @property
    def tok(self) -> _Tok:
        return self.toks[self.i]

    def peek(self, k: int = 1) -> _Tok:
        return self.toks[min(self.i + k, len(self.toks) - 1)]

    def error(self, message: str, tok: _Tok | None = None) -> FormulaError:
        tok = tok or self.tok
        span = (tok.start, max(tok.end, tok.start + 1))
        return FormulaError(message, self.text, span)

    def accept(self, text: str) -> bool:
        if self.tok.kind == "op" and self.tok.text == text:
            self.i += 1
            return True
        return False

    def expect(self, text: str, what: str) -> _Tok:
        tok = self.tok
        if not self.accept(text):
            found = "the end of the formula" if tok.kind == "end" else repr(tok.text)
            raise self.error(f"expected {what}, found {found}", tok)
        return tok

    def name(self, what: str) -> str:
        tok = self.tok
        if tok.kind != "name":
            found = "the end of the formula" if tok.kind == "end" else repr(tok.text)
            raise self.error(f"expected {what}, found {found}", tok)
        self.i += 1
        return tok.text

    # -- grammar -------------------------------------------------------------------------
    def formula(self) -> Formula:
        if "~" not in self.text:
            raise FormulaError(
                "a formula needs '~' between the outcome and the predictors, "
                "e.g. 'y ~ 1 + (1 | group)'",
                self.text,
                (0, len(self.text)),
            )
        response = self.response()
        self.expect("~", "'~' after the outcome")
        intercept, terms, groups = self.rhs()
        if self.tok.kind != "end":
            raise self.error(f"unexpected {self.tok.text!r}; join terms with '+'")
        return Formula(self.text, response, intercept, terms, groups)

    def response(self) -> Response:
        tok = self.tok
        if tok.kind == "name" and tok.text == "cbind" and self.peek().text == "(":
            self.i += 2
            succ = self.name("the successes column inside cbind(...)")
            self.expect(",", "',' between successes and failures in cbind(successes, failures)")
            fail = self.name("the failures column inside cbind(...)")
            self.expect(")", "')' to close cbind(")
            return Response("cbind", succ, failures=fail)
        succ = self.name("the outcome column before '~'")
        if self.accept("|"):
            fn = self.tok
            if not (fn.kind == "name" and fn.text == "trials"):
                raise self.error("expected 'trials(n)' after '|' in the outcome", fn)
            self.i += 1
            self.expect("(", "'(' after trials")
            trials = self.name("the trials column inside trials(...)")
            self.expect(")", "')' to close trials(")
            return Response("trials", succ, trials=trials)
        if self.accept("/"):
            trials = self.name("the trials column after '/'")
            return Response("trials", succ, trials=trials)
        if self.tok.kind == "op" and self.tok.text not in ("~",):
            raise self.error(
                f"unexpected {self.tok.text!r} in the outcome; use 'y', "
                "'cbind(successes, failures)' or 'successes | trials(n)'"
            )
        return Response("bernoulli", succ)

    def rhs(self) -> tuple[bool, tuple[Term, ...], tuple[GroupTerm, ...]]:
        intercept = True
        terms: list[Term] = []
        groups: list[GroupTerm] = []
        sign = "+"
        first = True
        while True:
            if not first:
                if self.accept("+"):
                    sign = "+"
                elif self.accept("-"):
                    sign = "-"
                else:
                    break
            elif self.accept("-"):
                sign = "-"
            first = False
            tok = self.tok
            if tok.kind == "number":
                if tok.text not in ("0", "1"):
                    raise self.error("only 1 (intercept) or 0 (no intercept) may stand alone", tok)
                self.i += 1
                intercept = (tok.text == "1") == (sign == "+")
            elif tok.kind == "op" and tok.text == "(":
                if sign == "-":
                    raise self.error("group terms cannot be removed with '-'", tok)
                for g in self.group():
                    if any(existing.group == g.group for existing in groups):
                        raise FormulaError(
                            f"grouping factor '{g.group_name}' appears in more than one group "
                            "term; put all its varying effects in one term, e.g. (1 + x | g)",
                            self.text,
                            (tok.start, self.toks[self.i - 1].end),
                        )
                    groups.append(g)
            elif tok.kind == "name":
                new = self.product()
                if sign == "-":
                    terms = [t for t in terms if t not in new]
                else:
                    terms.extend(t for t in new if t not in terms)
            else:
                found = "the end of the formula" if tok.kind == "end" else repr(tok.text)
                raise self.error(f"expected a predictor, 1, 0 or a group term, found {found}", tok)
        # R's terms(): main effects first, then two-way interactions, ... (stable within order)
        terms.sort(key=lambda t: len(t.variables))
        return intercept, tuple(terms), tuple(groups)

    def product(self) -> list[Term]:
        """``a:b*c`` -> terms in lme4 order (main effects before interactions)."""
        factors: list[list[str]] = [[self.name("a predictor name")]]
        while self.tok.kind == "op" and self.tok.text in (":", "*"):
            op = self.tok.text
            self.i += 1
            nxt = self.name(f"a predictor name after '{op}'")
            if op == ":":
                factors[-1].append(nxt)
            else:
                factors.append([nxt])
        # expand a*b*c over the ':'-joined blocks
        result: list[tuple[str, ...]] = [()]
        for block in factors:
            result = result + [r + tuple(block) for r in result]
        seen: list[Term] = []
        for combo in sorted((r for r in result if r), key=len):
            t = Term(tuple(dict.fromkeys(combo)))
            if t not in seen:
                seen.append(t)
        return seen

    def group(self) -> list[GroupTerm]:
        open_tok = self.expect("(", "'('")
        intercept = True
        terms: list[Term] = []
        first = True
        while True:
            tok = self.tok
            if tok.kind == "op" and tok.text in ("|", "||"):
                break
            if not first and not self.accept("+"):
                raise self.error("expected '+', '|' or '||' inside the group term")
            first = False
            tok = self.tok
            if tok.kind == "number":
                if tok.text not in ("0", "1"):
                    raise self.error("only 1 or 0 may stand alone in a group term", tok)
                intercept = tok.text == "1"
                self.i += 1
            elif tok.kind == "name":
                terms.extend(t for t in self.product() if t not in terms)
            else:
                found = "the end of the formula" if tok.kind == "end" else repr(tok.text)
                raise self.error(
                    f"a group term looks like (1 | group) or (1 + x | group); found {found}", tok
                )
        bar = self.tok
        self.i += 1
        correlated = bar.text == "|"
        terms.sort(key=lambda t: len(t.variables))
        if not intercept and not terms:
            raise self.error("this group term has no intercept and no slope", open_tok)
        chain = [self.name("the grouping column after '|'")]
        ops: list[str] = []
        while self.tok.kind == "op" and self.tok.text in ("/", ":"):
            ops.append(self.tok.text)
            self.i += 1
            chain.append(self.name("a grouping column"))
        close = self.tok
        if not self.accept(")"):
            raise self.error("expected ')' to close the group term", close)
        if "/" in ops and ":" in ops:
            raise FormulaError(
                "mixing '/' and ':' in one grouping is ambiguous; write the nesting as separate "
                "terms, e.g. (1 | a) + (1 | a:b)",
                self.text,
                (open_tok.start, close.end),
            )
        if "/" in ops:  # nesting a/b/c -> a, a:b, a:b:c
            groups = [tuple(chain[: k + 1]) for k in range(len(chain))]
        else:
            groups = [tuple(chain)]
        return [GroupTerm(intercept, tuple(terms), g, correlated) for g in groups]


def parse_formula(text: str) -> Formula:
    """Parse an lme4 / brms style formula.

    >>> f = parse_formula("use.contraception ~ 1 + (1 | district)")
    >>> f.response.successes, [g.group_name for g in f.groups]
    ('use.contraception', ['district'])
    """
    if not isinstance(text, str) or not text.strip():
        raise FormulaError("the formula is empty; write e.g. 'y ~ 1 + (1 | group)'")
    return _Parser(text).formula()
