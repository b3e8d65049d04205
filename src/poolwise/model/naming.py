"""Parameter names: the one place that builds them and reads them back.

Natural-scale variables (what the posterior holds; group-level ones are indexed by the
original group labels):

=====================  =====================================================
``Intercept``          the fixed intercept
``b_<coef>``           a fixed coefficient
``sd_<g>``             SD of the varying intercepts of a term with no slopes
``sd_<g>__<coef>``     SD of a varying coefficient (intercept or slope)
``cor_<g>__<c1>__<c2>``  correlation of two varying coefficients
``a_<g>``              the per-group intercepts (dimension ``<g>``)
``b_<g>__<coef>``      the per-group slopes (dimension ``<g>``)
=====================  =====================================================

One element of a per-group variable is written ``a_<g>[label]``. The engine's
unconstrained parameters are ``log_sd_...``, ``atanh_cpc_cor_...`` and, per level,
``u_<g>__<coef>[label]`` (centered) or ``z_<g>__<coef>[label]`` (non-centered).

A coefficient written with a division inside a formula expression (``I((age - 30)/10)``)
keeps its label on the Design, but its parameter name shows the division slash U+2215
(``b_I((age - 30)∕10)``): an ArviZ DataTree refuses '/' in a variable name. Data columns whose
own names contain '/' are refused before fitting (docs/reliability.md).

``__`` separates a group from a coefficient. Group names may contain ``:`` (``a:b``);
:func:`parse` reads a name back and, for names whose column names themselves contain
``__``, takes the known group names to resolve the ambiguity.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "INTERCEPT",
    "SEP",
    "Name",
    "fixed",
    "sd",
    "cor",
    "total",
    "element",
    "fixed_name",
    "sd_name",
    "cor_name",
    "total_name",
    "log_sd_name",
    "cpc_name",
    "level_param_name",
    "parse",
    "kind",
]

INTERCEPT = "Intercept"
SEP = "__"

Kind = Literal["fixed", "sd", "cor", "total", "log_sd", "cpc", "level"]


# ---- building, from plain strings --------------------------------------------------------

#: '/' (DataTree path separator) -> U+2215 DIVISION SLASH, which reads the same
_SLASH = str.maketrans({"/": "\u2215"})


def _p(part: str) -> str:
    return part.translate(_SLASH)



def fixed(coef: str) -> str:
    """``Intercept`` or ``b_<coef>``."""
    return INTERCEPT if coef == INTERCEPT else f"b_{_p(coef)}"


def sd(group: str, coef: str, n_coefs: int) -> str:
    """``sd_<g>`` (a term with only an intercept) or ``sd_<g>__<coef>``."""
    if n_coefs == 1 and coef == INTERCEPT:
        return f"sd_{_p(group)}"
    return f"sd_{_p(group)}{SEP}{_p(coef)}"


def cor(group: str, coef1: str, coef2: str) -> str:
    """``cor_<g>__<c1>__<c2>``."""
    return f"cor_{_p(group)}{SEP}{_p(coef1)}{SEP}{_p(coef2)}"


def total(group: str, coef: str) -> str:
    """``a_<g>`` (per-group intercepts) or ``b_<g>__<coef>`` (per-group slopes)."""
    return f"a_{_p(group)}" if coef == INTERCEPT else f"b_{_p(group)}{SEP}{_p(coef)}"


def element(name: str, label: Any) -> str:
    """One element of a per-group variable: ``a_<g>[label]``."""
    return f"{name}[{label}]"


# ---- building, from a term (anything with .name and .group.n_coefs, e.g. a TermSpec) -----


def fixed_name(coef: str) -> str:
    return fixed(coef)


def sd_name(term: Any, coef: str) -> str:
    return sd(term.name, coef, term.group.n_coefs)


def cor_name(term: Any, coef1: str, coef2: str) -> str:
    return cor(term.name, coef1, coef2)


def total_name(term: Any, coef: str) -> str:
    return total(term.name, coef)


def log_sd_name(term: Any, coef: str) -> str:
    """The engine's parameter for an SD: ``log_sd_...``."""
    return f"log_{sd_name(term, coef)}"


def cpc_name(term: Any, coef1: str, coef2: str) -> str:
    """The engine's parameter for a correlation: ``atanh_cpc_cor_...``."""
    return f"atanh_cpc_{cor_name(term, coef1, coef2)}"


def level_param_name(term: Any, coef: str, label: Any, centered: bool) -> str:
    """The engine's parameter of one level: ``u_<g>__<coef>[label]`` (centered) or
    ``z_<g>__<coef>[label]`` (non-centered)."""
    return element(f"{'u' if centered else 'z'}_{_p(term.name)}{SEP}{_p(coef)}", label)


# ---- reading back ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Name:
    """A parsed name. ``group`` is None for fixed coefficients; ``coef2`` is set for
    correlations only; ``label`` for one element (``a_g[label]``) and level parameters;
    ``centered`` for level parameters only."""

    kind: Kind
    coef: str
    group: str | None = None
    coef2: str | None = None
    label: str | None = None
    centered: bool | None = None
    single: bool = False  # an SD written sd_<g> (a term with only an intercept)

    @property
    def variable(self) -> str:
        """The natural-scale variable this name belongs to (for ``log_sd`` its SD, for
        ``cpc`` its correlation, for a level parameter the per-group variable)."""
        if self.kind == "fixed":
            return fixed(self.coef)
        if self.kind in ("cor", "cpc"):
            return cor(str(self.group), self.coef, str(self.coef2))
        if self.kind in ("total", "level"):
            return total(str(self.group), self.coef)
        return sd(str(self.group), self.coef, 1 if self.single else 2)

    @property
    def effect(self) -> str | None:
        """For an SD (``sd`` / ``log_sd``): the per-group variable it scales."""
        if self.kind in ("sd", "log_sd"):
            return total(str(self.group), self.coef)
        return None


def _split(rest: str, groups: Collection[str] | None) -> tuple[str, str | None]:
    """``<g>__<tail>`` -> (g, tail), using the known groups when given; (rest, None) when
    there is no separator."""
    if groups:
        for g in sorted(groups, key=len, reverse=True):
            if rest.startswith(g + SEP):
                return g, rest[len(g) + len(SEP):]
            if rest == g:
                return g, None
    g, sep, tail = rest.partition(SEP)
    return (g, tail) if sep else (rest, None)


def parse(name: str, groups: Collection[str] | None = None) -> Name:
    """Read a name made by this module back into its parts.

    ``groups``: the model's grouping-factor names; needed only when a column or group name
    itself contains ``__``. ValueError for a name this module does not make.
    """
    base, label = name, None
    if name.endswith("]") and "[" in name:
        i = name.index("[")
        base, label = name[:i], name[i + 1 : -1]
    if base == INTERCEPT and label is None:
        return Name("fixed", INTERCEPT)
    if base.startswith("log_sd_") and label is None:
        inner = parse(base[len("log_"):], groups)
        return Name("log_sd", inner.coef, inner.group, single=inner.single)
    if base.startswith("atanh_cpc_cor_") and label is None:
        inner = parse(base[len("atanh_cpc_"):], groups)
        return Name("cpc", inner.coef, inner.group, inner.coef2)
    if base.startswith("sd_") and label is None:
        g, coef = _split(base[3:], groups)
        return Name("sd", coef or INTERCEPT, g, single=coef is None)
    if base.startswith("cor_") and label is None:
        g, tail = _split(base[4:], groups)
        if tail is not None:
            c1, sep, c2 = tail.partition(SEP)
            if sep:
                return Name("cor", c1, g, c2)
    if base.startswith("a_"):
        g = base[2:]
        if SEP not in g or (groups and g in groups):
            return Name("total", INTERCEPT, g, label=label)
    if base.startswith(("u_", "z_")) and label is not None:
        g, coef = _split(base[2:], groups)
        if coef is not None:
            return Name("level", coef, g, label=label, centered=base[0] == "u")
    if base.startswith("b_"):
        rest = base[2:]
        if groups is not None:
            g, coef = _split(rest, groups)
            is_group = coef is not None and g in groups
        else:
            g, coef = _split(rest, None)
            is_group = coef is not None
        if is_group:
            return Name("total", str(coef), g, label=label)
        if label is None:
            return Name("fixed", rest)
    raise ValueError(f"{name!r} is not a poolwise parameter name")


def kind(name: str, groups: Collection[str] | None = None) -> Kind | None:
    """The kind of ``name`` (``"sd"``, ``"total"``, ...), or None for a name this module does
    not make."""
    try:
        return parse(name, groups).kind
    except ValueError:
        return None
