"""lme4 / brms formula grammar: tokenizer, parser and frozen term objects."""

from poolwise.formula.parser import parse_formula
from poolwise.formula.terms import Formula, GroupTerm, Response, Term

__all__ = ["Formula", "GroupTerm", "Response", "Term", "parse_formula"]
