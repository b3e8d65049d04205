"""A small recursive-descent parser for the lme4 / brms formula grammar.

::

    formula   := response "~" rhs
    response  := NAME | "cbind(" arith "," arith ")" | NAME "|" "trials(" arith ")"
               | NAME "/" NAME
    rhs       := part (("+" | "-") part)*
    part      := "1" | "0" | group | product | "offset(" arith ")"
    group     := "(" ["0" "+" | "1" "+"] product-list ("|" | "||") grouping ")"
    grouping  := factor (("/" | ":") factor)*
    product   := variable ((":" | "*") variable)*
    variable  := NAME | "factor(" arith ")" | "C(" arith ["," contrast] ")"
               | "poly(" arith ["," degree] ["," "raw" "=" bool] ")" | call
    call      := ("I" | "scale" | "log" | "log2" | "log10" | "log1p" | "exp" | "sqrt"
                  | "abs") "(" arith ")"
    arith     := arith ("+" | "-") arith | arith ("*" | "/") arith | "-" arith
               | arith "^" arith | "(" arith ")" | NUMBER | NAME | call

Names may contain letters, digits, ``.`` and ``_`` (``use.contraception``) or be quoted in
backticks (```living children```). ``x*z`` expands to ``x + z + x:z``; ``(1 | a/b)`` expands to
``(1 | a) + (1 | a:b)``. As in R's ``terms()``, terms are ordered by degree: main effects, then
two-way interactions, and so on (``y ~ x*z + w`` gives ``x, z, w, x:z``). Inside a function or
``cbind()`` / ``trials()``, ``+ - * / ^`` are arithmetic; outside they are formula operators,
so a power is written ``I(x^2)`` as in R. What each function computes is in
:mod:`poolwise.formula.transforms`.

Why one module: a recursive-descent parser is one grammar; its functions call each other in the
grammar's order and share the token stream and its error positions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from poolwise.errors import FormulaError
from poolwise.formula.terms import (
    BinOp,
    Bool,
    Call,
    Col,
    Expr,
    Formula,
    GroupTerm,
    Neg,
    Num,
    Paren,
    Response,
    Str,
    Term,
)

__all__ = ["parse_formula", "parse_expression", "SUPPORTED_FUNCTIONS"]

#: element-wise numeric functions (usable anywhere in arithmetic)
MATH_FUNCTIONS = ("log", "log2", "log10", "log1p", "exp", "sqrt", "abs")
#: functions that make a whole variable; not allowed inside arithmetic
TOP_FUNCTIONS = ("factor", "C", "poly", "offset")
SUPPORTED_FUNCTIONS = tuple(sorted(MATH_FUNCTIONS + ("I", "scale") + TOP_FUNCTIONS,
                                   key=str.lower))
_WHAT = {
    "factor": "factor() makes a categorical variable",
    "C": "C() makes a categorical variable",
    "poly": "poly() makes several columns",
    "offset": "offset() adds a known term to the linear predictor",
}

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<name>(?:[A-Za-z_]|\.(?![0-9]))[A-Za-z0-9_.]*)
  | (?P<quoted>`[^`]*`)
  | (?P<number>(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)
  | (?P<string>"[^"]*"|'[^']*')
  | (?P<op>\|\||\*\*|[~+\-:*/|(),^=])
    """,
    re.VERBOSE,
)


@dataclass(frozen=True)
class _Tok:
    kind: str  # "name", "number", "string", "op", "end"
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
        elif kind == "string":
            toks.append(_Tok("string", m.group()[1:-1], m.start(), m.end()))
        elif kind == "op" and m.group() == "**":
            toks.append(_Tok("op", "^", m.start(), m.end()))
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
        self.exprs: dict[str, Expr] = {}  # label -> expression, for labels that are not columns
        self.offsets: list[str] = []

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
            if self.tok.text == "^":
                raise self.error(
                    "unexpected '^': a power of a predictor is written I(x^2) (or poly(x, 2)); "
                    "'^' between terms is not supported"
                )
            raise self.error(f"unexpected {self.tok.text!r}; join terms with '+'")
        used = set(self.offsets) | {v for t in terms for v in t.variables}
        used |= {v for g in groups for v in g.variables} | set(response.columns)
        exprs = tuple((lab, e) for lab, e in self.exprs.items() if lab in used)
        return Formula(self.text, response, intercept, terms, groups, exprs, tuple(self.offsets))

    def response(self) -> Response:
        tok = self.tok
        if tok.kind == "name" and tok.text == "cbind" and self.peek().text == "(":
            self.i += 2
            succ = self.operand("the successes column inside cbind(...)")
            self.expect(",", "',' between successes and failures in cbind(successes, failures)")
            fail = self.operand("the failures column inside cbind(...)")
            self.expect(")", "')' to close cbind(")
            return Response("cbind", succ, failures=fail)
        succ = self.name("the outcome column before '~'")
        if self.accept("|"):
            fn = self.tok
            if not (fn.kind == "name" and fn.text == "trials"):
                raise self.error("expected 'trials(n)' after '|' in the outcome", fn)
            self.i += 1
            self.expect("(", "'(' after trials")
            trials = self.operand("the trials column inside trials(...)")
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

    def operand(self, what: str) -> str:
        """An arithmetic expression inside cbind() / trials(): its label (registered)."""
        tok = self.tok
        if tok.kind not in ("name", "number") and not (tok.kind == "op" and tok.text in "(-"):
            found = "the end of the formula" if tok.kind == "end" else repr(tok.text)
            raise self.error(f"expected {what}, found {found}", tok)
        return self.register(self.arith())

    def register(self, e: Expr) -> str:
        while isinstance(e, Paren):
            e = e.inner
        label = e.label
        if not isinstance(e, Col):
            self.exprs[label] = e
        return label

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
            elif tok.kind == "name" and tok.text == "offset" and self.peek().text == "(":
                if sign == "-":
                    raise self.error("an offset cannot be removed with '-'", tok)
                e = self.call()
                label = e.label
                self.exprs[label] = e
                if label not in self.offsets:
                    self.offsets.append(label)
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
        factors: list[list[str]] = [[self.variable("a predictor name")]]
        while self.tok.kind == "op" and self.tok.text in (":", "*"):
            op = self.tok.text
            self.i += 1
            nxt = self.variable(f"a predictor name after '{op}'")
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

    def variable(self, what: str) -> str:
        """A predictor: a column name, or a supported function of columns (its label)."""
        tok = self.tok
        if tok.kind == "name" and self.peek().text == "(":
            e = self.call()
            if e.fn == "offset":
                raise self.error(
                    "offset() is a term of its own: add it with '+', e.g. y ~ x + offset(log(n))",
                    tok,
                )
            return self.register(e)
        return self.name(what)

    # -- arithmetic (inside functions, cbind() and trials()) -----------------------------------
    def arith(self) -> Expr:
        left = self.arith_term()
        while self.tok.kind == "op" and self.tok.text in ("+", "-"):
            op = self.tok.text
            self.i += 1
            left = BinOp(op, left, self.arith_term())
        return left

    def arith_term(self) -> Expr:
        left = self.unary()
        while self.tok.kind == "op" and self.tok.text in ("*", "/"):
            op = self.tok.text
            self.i += 1
            left = BinOp(op, left, self.unary())
        return left

    def unary(self) -> Expr:
        if self.accept("-"):
            return Neg(self.unary())
        if self.accept("+"):
            return self.unary()
        return self.power()

    def power(self) -> Expr:
        base = self.atom()
        if self.accept("^"):
            return BinOp("^", base, self.unary())  # right-associative, as in R
        return base

    def atom(self) -> Expr:
        tok = self.tok
        if tok.kind == "number":
            self.i += 1
            return Num(float(tok.text))
        if tok.kind == "op" and tok.text == "(":
            self.i += 1
            inner = self.arith()
            self.expect(")", "')' to close '('")
            return Paren(inner)
        if tok.kind == "name":
            if self.peek().text == "(":
                e = self.call()
                if e.fn in TOP_FUNCTIONS:
                    raise self.error(
                        f"{_WHAT[e.fn]}; it cannot be used inside arithmetic or another "
                        f"function (write it as a term of its own: y ~ {e.label})",
                        tok,
                    )
                return e
            self.i += 1
            if tok.text in ("TRUE", "FALSE"):
                return Bool(tok.text == "TRUE")
            return Col(tok.text)
        found = "the end of the formula" if tok.kind == "end" else repr(tok.text)
        raise self.error(f"expected a number, a column or '(' in the expression, found {found}",
                         tok)

    def call(self, check: bool = True) -> Call:
        """``fn(arg, ..., name = value)`` for a supported function, checked."""
        fn_tok = self.tok
        fn = fn_tok.text
        self.i += 1
        open_tok = self.expect("(", f"'(' after {fn}")
        if fn not in SUPPORTED_FUNCTIONS and fn != "Treatment":
            depth, j = 1, self.i
            while depth and self.toks[j].kind != "end":
                depth += {"(": 1, ")": -1}.get(self.toks[j].text, 0) if self.toks[
                    j].kind == "op" else 0
                j += 1
            end = self.toks[j - 1].end if depth == 0 else open_tok.end
            raise FormulaError(
                f"unknown function '{fn}()'; supported functions: "
                + ", ".join(f"{f}()" for f in SUPPORTED_FUNCTIONS),
                self.text,
                (fn_tok.start, end),
            )
        args: list[Expr] = []
        kwargs: list[tuple[str, Expr]] = []
        first = True
        while not (self.tok.kind == "op" and self.tok.text == ")"):
            if not first:
                self.expect(",", f"',' or ')' in {fn}(...)")
            first = False
            if self.tok.kind == "name" and self.peek().kind == "op" and self.peek().text == "=":
                key = self.tok.text
                self.i += 2
                kwargs.append((key, self.argument()))
            else:
                if kwargs:
                    raise self.error(f"a positional argument follows a named one in {fn}(...)")
                args.append(self.argument())
        close = self.expect(")", f"')' to close {fn}(")
        e = Call(fn, tuple(args), tuple(kwargs))
        if check:
            _check_call(e, self.text, (fn_tok.start, close.end))
        return e

    def argument(self) -> Expr:
        if self.tok.kind == "name" and self.tok.text == "Treatment" and self.peek().text == "(":
            return self.call(check=False)  # a contrast: C() checks it
        if self.tok.kind == "string":
            tok = self.tok
            self.i += 1
            return Str(tok.text)
        return self.arith()

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


def _check_call(e: Call, text: str, span: tuple[int, int]) -> None:
    """Arity and argument types of a supported function (FormulaError with the call marked)."""

    def fail(msg: str) -> None:
        raise FormulaError(msg, text, span)

    fn = e.fn
    names = [k for k, _ in e.kwargs]
    if len(set(names)) < len(names):
        fail(f"an argument is given twice in {fn}(...)")
    if fn == "Treatment":
        fail("Treatment(...) is a contrast: use it inside C(), e.g. C(x, Treatment(\"b\"))")
    if not e.args:
        fail(f"{fn}() needs a column or expression, e.g. {fn}(x)")
    if isinstance(e.args[0], Str | Bool):
        fail(f"{fn}() needs a column or expression, not {e.args[0].label}")
    if fn == "poly":
        allowed = {"degree", "raw"}
        if len(e.args) > 2 or set(names) - allowed:
            fail("poly() takes poly(x, degree) and optionally raw = TRUE")
        deg = dict(e.kwargs).get("degree", e.args[1] if len(e.args) == 2 else Num(1.0))
        if "degree" in names and len(e.args) == 2:
            fail("poly(): the degree is given twice")
        if not (isinstance(deg, Num) and float(deg.value).is_integer() and deg.value >= 1):
            fail(f"poly(): the degree must be a whole number >= 1; got {deg.label}")
        raw = dict(e.kwargs).get("raw", Bool(False))
        if not isinstance(raw, Bool):
            fail(f"poly(): raw must be TRUE or FALSE; got {raw.label}")
        return
    if fn == "C":
        allowed = {"base", "ref", "reference"}
        if set(names) - allowed or len(e.args) > 2 or len(set(names) & allowed) > 1 or (
            len(e.args) == 2 and names
        ):
            fail("C() takes C(x), C(x, ref = \"level\"), C(x, base = k) (R: the k-th level is "
                 "the reference) or C(x, Treatment(\"level\"))")
        if len(e.args) == 2:
            c = e.args[1]
            if isinstance(c, Col) and c.name == "contr.treatment":
                return
            if isinstance(c, Call) and c.fn == "Treatment":
                if len(c.args) + len(c.kwargs) > 1 or any(k != "reference" for k, _ in c.kwargs):
                    fail("Treatment() takes one reference level, e.g. Treatment(\"b\")")
                return
            fail("C(): only treatment contrasts are supported: C(x, Treatment(\"level\")) or "
                 f"C(x, ref = \"level\"); got {c.label}")
        if "base" in names:
            b = dict(e.kwargs)["base"]
            if not (isinstance(b, Num) and float(b.value).is_integer() and b.value >= 1):
                fail(f"C(): base is the position of the reference level (1, 2, ...); got {b.label}")
        return
    if len(e.args) != 1 or e.kwargs:
        fail(f"{fn}() takes exactly one argument, e.g. {fn}(x)")


def parse_expression(text: str) -> Expr:
    """Parse one expression of columns (``log(exposure)``, ``n - k``): the right-hand side of
    an ``offset=`` argument, for example. Raises :class:`FormulaError` with the span marked."""
    if not isinstance(text, str) or not text.strip():
        raise FormulaError("the expression is empty; write a column name, e.g. 'log(n)'")
    p = _Parser(text)
    if p.tok.kind == "name" and p.tok.text == "offset" and p.peek().text == "(":
        e: Expr = p.call().args[0]
    else:
        e = p.arith()
    if p.tok.kind != "end":
        raise p.error(f"unexpected {p.tok.text!r} after the expression")
    while isinstance(e, Paren):
        e = e.inner
    return e


def parse_formula(text: str) -> Formula:
    """Parse an lme4 / brms style formula.

    >>> f = parse_formula("use.contraception ~ 1 + (1 | district)")
    >>> f.response.successes, [g.group_name for g in f.groups]
    ('use.contraception', ['district'])

    Parameters
    ----------
    text : str
        The formula: ``y ~ 1 + x + (1 | g)``, with the outcome as a 0/1 column, as
        ``cbind(successes, failures)`` or as ``successes | trials(n)``.

    Returns
    -------
    Formula
        The parsed outcome, fixed terms, group terms and offsets.

    Raises
    ------
    FormulaError
        When ``text`` is not a valid formula; the message points at the offending token.
    """
    if not isinstance(text, str) or not text.strip():
        raise FormulaError("the formula is empty; write e.g. 'y ~ 1 + (1 | group)'")
    return _Parser(text).formula()
