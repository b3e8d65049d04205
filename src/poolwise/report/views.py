"""Typed views shared by the HTML report and the notebook / prompt displays.

Each function turns one typed source (a :class:`~poolwise.diagnostics.Diagnosis`, a
:class:`~poolwise.repair.RepairLog`, a :class:`~poolwise.fit.Fit`) into a :class:`Table`
of text cells and :class:`Badge` cells. Numbers are formatted here, with significant
digits (:func:`poolwise.summary.fmt_sig`); escaping is left to whoever renders the table
(jinja2's autoescape for the report, ``html.escape`` for ``_repr_html_``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from poolwise.summary import fmt_rhat, fmt_sig

if TYPE_CHECKING:
    from poolwise.diagnostics import Diagnosis, Finding
    from poolwise.fit import Fit

__all__ = [
    "Badge",
    "Table",
    "diagnosis_table",
    "finding_items",
    "repair_table",
    "repair_notes",
    "population_table",
    "restates_a_note",
]

def restates_a_note(f: Finding, notes: Sequence[str]) -> bool:
    """True for a finding that says again what a note of the data checks says: the all-0 /
    all-1 levels of a grouping factor (``extreme_levels``) when the data checks noted the same
    factor. Such a finding is shown once, as the data note (which also gives the counts)."""
    if f.code != "extreme_levels":
        return False
    m = re.match(r"Levels of '(.*?)':", f.message)
    if m is None:
        return False
    head = f"'{m.group(1)}': "
    return any(n.startswith(head) and "maximum-likelihood estimates are infinite" in n
               for n in notes)


@dataclass(frozen=True)
class Badge:
    """A PASS / WARN / FAIL badge."""

    state: str  # "pass", "warn", "fail", or "info" (a note, not a check)

    @property
    def label(self) -> str:
        return {"pass": "PASS", "warn": "WARN", "fail": "FAIL", "info": "NOTE"}[self.state]

    def __str__(self) -> str:
        return self.label


Cell = str | Badge


@dataclass(frozen=True)
class Table:
    """A table of text (and badge) cells. ``text_cols``: left-aligned, wrapping columns."""

    header: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]
    cls: str = ""
    text_cols: tuple[int, ...] = ()

    def text(self, *, indent: str = "  ", max_width: int = 60) -> str:
        """Aligned plain text (cells cut to ``max_width`` characters)."""
        def cut(c: Cell) -> str:
            s = str(c)
            return s if len(s) <= max_width else s[: max_width - 3] + "..."

        cells = [list(map(cut, self.header))] + [list(map(cut, r)) for r in self.rows]
        widths = [max(len(r[i]) for r in cells) for i in range(len(self.header))]
        lines = []
        for r in cells:
            parts = [
                c.ljust(w) if (i == 0 or i in self.text_cols) else c.rjust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            ]
            lines.append(indent + "  ".join(parts).rstrip())
        return "\n".join(lines)


def _table(header: Iterable[str], rows: Iterable[Sequence[Cell]], **kw: Any) -> Table:
    return Table(tuple(header), tuple(tuple(r) for r in rows), **kw)


# ---- diagnosis ----------------------------------------------------------------------------


def diagnosis_table(d: Diagnosis) -> Table:
    """The headline checks with their badges; every state comes from ``d.checks()``."""
    rows = [(name, Badge(state), value, need) for name, state, value, need in d.checks()]
    return _table(["check", "result", "value", "needed"], rows, text_cols=(3,))


def finding_items(d: Diagnosis, *, notes: Sequence[str] = ()) -> list[tuple[Badge, Finding]]:
    """Findings with the badge of their severity (error: FAIL, warning: WARN, info: NOTE),
    leaving out those that restate one of the data ``notes`` shown next to them."""
    out = []
    for f in d.findings:
        if restates_a_note(f, notes):
            continue
        state = {"error": "fail", "warning": "warn"}.get(f.severity, "info")
        out.append((Badge(state), f))
    return out


# ---- the repair journal -------------------------------------------------------------------


def _attempt_dicts(log: Any) -> list[dict[str, Any]]:
    """The attempts of a :class:`~poolwise.repair.RepairLog`, or of a journal loaded as the
    list of attempt dicts of ``result.json`` (``RepairAttempt.to_dict``)."""
    if log is None:
        return []
    if hasattr(log, "to_list"):
        return list(log.to_list())
    return [dict(a) for a in log if isinstance(a, Mapping)]


def _result_text(a: Mapping[str, Any]) -> str:
    def num(key: str, digits: int | None) -> str:
        v = a.get(key)
        return fmt_sig(v, digits) or "undefined"

    rhat_text = fmt_rhat(a.get("max_rhat")) or "undefined"
    numbers = (
        f"divergences {a.get('divergences')}, max R-hat {rhat_text}, "
        f"min ESS bulk {num('min_ess_bulk', None)} / tail {num('min_ess_tail', None)}"
    )
    if a.get("ok"):
        return f"passed: {numbers}"
    problems = ", ".join(str(p) for p in a.get("problems") or ()) or "diagnostics"
    return f"failed ({problems}): {numbers}"


def _settings_text(a: Mapping[str, Any]) -> str:
    s = a.get("settings") or {}
    par = "; ".join(f"{k}: {v}" for k, v in (a.get("parameterization") or {}).items())
    bits = [par] if par else []
    for key in ("target_accept", "tune", "draws"):
        if key in s:
            v = s[key]
            bits.append(f"{key} {v:g}" if isinstance(v, float) else f"{key} {v}")
    return "; ".join(bits)


def repair_table(log: Any) -> Table | None:
    """One row per attempt: attempt, action, why it was made (the previous attempt's verdict),
    its settings and its result. Wall-clock times are left out (reproducible output)."""
    attempts = _attempt_dicts(log)
    if not attempts:
        return None
    rows = []
    why = "the first fit, with the settings asked for"
    auto = getattr(log, "auto", None)
    if auto is not None and getattr(auto, "target_accept", None) is not None:
        why += f" (target_accept {auto.target_accept:g} chosen by the auto rule)"
    for a in attempts:
        rows.append((str(a.get("attempt", "")), str(a.get("action", "")), why,
                     _settings_text(a), _result_text(a)))
        nxt = a.get("next_step") or ""
        culprit = a.get("culprit")
        why = f"{nxt} (culprit: {culprit})" if culprit and nxt else nxt
    return _table(["attempt", "action", "why", "settings", "result"], rows,
                  text_cols=(1, 2, 3, 4))


def repair_notes(log: Any) -> list[tuple[str, str]]:
    """The journal's own statements besides the attempts: the auto parameterization choice,
    why the loop stopped, advice."""
    out: list[tuple[str, str]] = []
    auto = getattr(log, "auto", None)
    if auto is not None:
        for t in getattr(auto, "terms", ()):
            out.append(("auto parameterization", t.describe()))
    stopped = getattr(log, "stopped", "")
    if stopped:
        out.append(("outcome", stopped))
    for a in getattr(log, "advice", ()) or ():
        out.append(("advice", a))
    return out


# ---- population-level parameters ----------------------------------------------------------


def population_table(fit: Fit, *, prob: float = 0.89) -> Table:
    """Population-level parameters only (no per-group rows): mean, sd, equal-tailed ``prob``
    interval, R-hat and bulk ESS (from the fit's diagnosis)."""
    d = fit.diagnosis
    rhat = dict(zip(d.parameters, np.asarray(d.rhat, dtype=float), strict=False))
    ess = dict(zip(d.parameters, np.asarray(d.ess_bulk, dtype=float), strict=False))
    lo_q, hi_q = (1 - prob) / 2, 1 - (1 - prob) / 2
    rows = []
    # the population variables only: with 10^5 group levels, stacking every component to
    # skip the group-level ones would copy gigabytes
    for name, v in fit.posterior.data_vars.items():
        if set(v.dims) - {"chain", "draw"}:
            continue
        name = str(name)
        x = np.asarray(v.transpose("chain", "draw").values, dtype=float).ravel()
        x = x[np.isfinite(x)]
        if not len(x):
            rows.append((name, "", "", "", "", "", ""))
            continue
        lo, hi = np.quantile(x, [lo_q, hi_q])
        r = rhat.get(name, math.nan)
        rows.append((
            name, fmt_sig(x.mean()), fmt_sig(x.std(ddof=1) if len(x) > 1 else math.nan),
            fmt_sig(lo), fmt_sig(hi), fmt_rhat(r),
            fmt_sig(ess.get(name, math.nan), None),
        ))
    pct = f"{100 * prob:g}%"
    return _table(["parameter", "mean", "sd", f"{pct} lower", f"{pct} upper", "R-hat",
                   "ESS bulk"], rows)
