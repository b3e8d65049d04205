"""How a fit, its diagnosis and its repair journal read: at the Python prompt (``__repr__``),
in notebooks (``_repr_html_``) and as the tables the HTML report shows.

In the spirit of brms' ``print(fit)``: the model, the data size, the status, the key table
(population-level parameters, never one row per group) and the findings; the full data stay
one attribute away (``fit.idata``, ``fit.summary()``, ...). Each view turns one typed source
(a :class:`~poolwise.inference.diagnostics.Diagnosis`, a :class:`~poolwise.inference.repair.
RepairLog`, a :class:`~poolwise.Fit`) into a :class:`~poolwise.textfmt.Table` of text and badge
cells; escaping is left to whoever renders the table (jinja2's autoescape for the report,
``html.escape`` for ``_repr_html_``). The result types import this module when displayed; it
imports none of them (only the finding codes, :mod:`poolwise.inference.finding_codes`, which
import nothing).
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from poolwise.inference.finding_codes import FindingCode
from poolwise.textfmt import Badge, Cell, LabelShortener, Table, fmt_rhat, fmt_sig

if TYPE_CHECKING:
    from poolwise.inference.diagnostics import Diagnosis, Finding
    from poolwise.inference.fitted import Fit
    from poolwise.inference.repair import RepairLog

__all__ = [
    "diagnosis_html",
    "diagnosis_table",
    "diagnosis_text",
    "finding_items",
    "fit_html",
    "fit_text",
    "population_table",
    "repair_html",
    "repair_notes",
    "repair_table",
    "repair_text",
    "restates_a_finding",
    "restates_a_note",
    "table_html",
]


def restates_a_note(f: Finding, notes: Sequence[str]) -> bool:
    """True for a finding that says again what a note of the data checks says: the all-0 /
    all-1 levels of a grouping factor (``extreme_levels``) when the data checks noted the same
    factor. Such a finding is shown once, as the data note (which also gives the counts)."""
    if f.code != FindingCode.EXTREME_LEVELS:
        return False
    m = re.match(r"Levels of '(.*?)':", f.message)
    if m is None:
        return False
    head = f"'{m.group(1)}': "
    return any(n.startswith(head) and "maximum-likelihood estimates are infinite" in n
               for n in notes)



def restates_a_finding(warning: str, findings: Iterable[Finding]) -> bool:
    """True for a data warning that a diagnosis finding says again, with more: the few
    levels of a grouping factor (``few_levels``, which also says what it means for the SD's
    posterior). Such a warning is shown once, as the finding."""
    m = re.match(r"grouping factor '(.*?)' has \d+ levels", warning)
    if m is None:
        return False
    head = f"Grouping factor '{m.group(1)}' has only"
    return any(f.code == FindingCode.FEW_LEVELS and f.message.startswith(head)
               for f in findings)


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
    """The attempts of a :class:`~poolwise.inference.repair.RepairLog`, or of a journal loaded as
    the
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
    pct = f"{100 * prob:g}% ETI"  # the kind too: the summary's default is an HDI
    return _table(["parameter", "mean", "sd", f"{pct} lower", f"{pct} upper", "R-hat",
                   "ESS bulk"], rows)
#: findings longer than this are cut in the compact displays (the full text: ``.findings``)
MAX_MESSAGE = 180
MAX_FINDINGS = 8


def _cut(text: str, n: int = MAX_MESSAGE) -> str:
    return text if len(text) <= n else text[: n - 3].rstrip() + "..."


def _status(ok: bool) -> str:
    return "OK" if ok else "NOT OK - do not trust these estimates"


def _finding_lines(d: Diagnosis, notes: tuple[str, ...] = (),
                   short: LabelShortener | None = None) -> list[str]:
    """The findings as the text displays list them, ``short`` shortening the long labels
    they name."""
    items = finding_items(d, notes=notes)
    text = short.text if short is not None else str
    lines = [f"  {f.severity}: {_cut(text(f.message))}" for _, f in items[:MAX_FINDINGS]]
    if len(items) > MAX_FINDINGS:
        lines.append(f"  ... and {len(items) - MAX_FINDINGS} more (.diagnosis.findings)")
    return lines


def _group_line(fit: Fit) -> str:
    parts = [f"{t.name} ({t.group.n_levels} levels)" for t in fit.spec.terms]
    return ", ".join(parts) if parts else "none"


def _model_facts(fit: Fit) -> list[tuple[str, str]]:
    spec, d, cfg = fit.spec, fit.spec.design, fit.config
    approx = fit.method == "approx"
    par = "" if approx else "; ".join(
        f"({k}) {v}" for k, v in spec.parameterization_by_term().items())
    how = (("method", f"approx: {cfg.chains} x {cfg.draws} independent draws, seed "
                      f"{cfg.seed}") if approx else
           ("sampling", f"{cfg.chains} chains x {cfg.draws} draws (tune {cfg.tune}), "
                        f"target_accept {cfg.target_accept:g}, seed {cfg.seed}"))
    return [
        ("pooling", f"{spec.pooling}, link {spec.link}" + (f", parameterization {par}"
                                                             if par else "")),
        ("data", f"{d.n_rows} rows -> {d.n_cells} binomial cells ({d.source})"),
        *([] if d.weighting is None else [("weights", d.weighting.describe()
                                           .removeprefix("weights: "))]),
        ("groups", _group_line(fit)),
        how,
    ]


def _headline(fit: Fit) -> str:
    d = fit.diagnosis
    if fit.method == "approx":  # the importance ESS, not R-hat and ESS of resampled draws
        ess = fit.importance_ess_text
        return "method approx (self-checked)" + (f", {ess}" if ess else "")
    rhat = fmt_rhat(d.max_rhat) or "undefined"
    return (f"divergences {d.divergences}, max R-hat {rhat}, min ESS bulk "
            f"{fmt_sig(d.min_ess_bulk, None) or 'undefined'}")


# ---- text ---------------------------------------------------------------------------------


def fit_text(fit: Fit) -> str:
    lines = [f"<poolwise.Fit> {fit.spec.formula.text}"]
    lines += [f"  {k}: {v}" for k, v in _model_facts(fit)]
    lines.append(f"  status: {_status(fit.ok)} ({_headline(fit)})")
    lines.append("Population-level parameters (posterior mean, sd, 89% interval):")
    lines.append(population_table(fit).text())
    if fit.spec.terms:
        lines.append("Group-level parameters: one per level, in .summary() and .idata")
    # a long label (docs/reliability.md R.20) shortened where a note or finding names it
    short = LabelShortener(lab for g in fit.spec.design.groups for lab in g.labels)
    notes = [f"  note: {_cut(short.text(n))}" for n in fit.spec.design.notes[:MAX_FINDINGS]]
    findings = _finding_lines(fit.diagnosis, fit.spec.design.notes[:MAX_FINDINGS], short)
    if notes or findings:
        lines.append("Findings:")
        lines += notes + findings
    log = fit.repair_log
    if log is not None and len(log) > 1:
        lines.append(f"Repair: {len(log)} attempts; {getattr(log, 'stopped', '')} "
                     "(.repair_log)".replace("; (", " ("))
    lines.append("Full data: .idata (draws), .summary(), .diagnosis, .spec, .repair_log")
    return "\n".join(lines)


def diagnosis_text(d: Diagnosis) -> str:
    lines = [f"<poolwise.Diagnosis> {_status(d.ok)} ({d.chains} chains x {d.draws} draws)"]
    lines.append(diagnosis_table(d).text())
    findings = _finding_lines(d)
    if findings:
        lines.append("Findings:")
        lines += findings
    lines.append("Per parameter: .rhat, .ess_bulk, .ess_tail (aligned with .parameters)")
    return "\n".join(lines)








def repair_text(log: RepairLog) -> str:
    verdict = "passed" if log.ok else "NOT OK"
    lines = [f"<poolwise.RepairLog> {len(log)} attempt(s), {verdict}"]
    table = repair_table(log)
    if table is not None:
        keep = (0, 1, 4)  # attempt, action, result; the why is in .journal()
        lines.append(Table(tuple(table.header[i] for i in keep),
                           tuple(tuple(r[i] for i in keep) for r in table.rows),
                           text_cols=(1, 2)).text(max_width=90))
    lines += [f"  {k}: {_cut(v)}" for k, v in repair_notes(log)]
    lines.append("Full data: .attempts, .journal(), .to_dict()")
    return "\n".join(lines)


# ---- HTML (notebooks) ---------------------------------------------------------------------

_STYLE = (
    "<style>.pw-repr table{border-collapse:collapse;font-size:12px;margin:4px 0}"
    ".pw-repr th,.pw-repr td{padding:1px 8px;border-bottom:1px solid #ddd;text-align:right}"
    ".pw-repr th:first-child,.pw-repr td:first-child,.pw-repr td.text{text-align:left}"
    ".pw-repr .badge{padding:0 6px;border-radius:8px;color:#fff;font-weight:bold;font-size:11px}"
    ".pw-repr .pass{background:#1e7b34}.pw-repr .fail{background:#b3261e}"
    ".pw-repr .warn{background:#9a6700}.pw-repr .info{background:#5b6670}</style>"
)


def _e(v: Any) -> str:
    return html.escape(str(v), quote=True)


def _cell(c: Any) -> str:
    if isinstance(c, Badge):
        return f'<span class="badge {c.state}">{c.label}</span>'
    return _e(c)


def table_html(t: Table) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in t.header)
    body = "".join(
        "<tr>" + "".join(
            f'<td class="text">{_cell(c)}</td>' if i in t.text_cols else f"<td>{_cell(c)}</td>"
            for i, c in enumerate(r)
        ) + "</tr>"
        for r in t.rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _wrap(title: str, ok: bool | None, parts: list[str]) -> str:
    badge = "" if ok is None else _cell(Badge("pass" if ok else "fail"))
    return (f'{_STYLE}<div class="pw-repr"><b>{_e(title)}</b> {badge}'
            + "".join(parts) + "</div>")


def _dl(pairs: list[tuple[str, str]]) -> str:
    return "<ul>" + "".join(f"<li><b>{_e(k)}</b>: {_e(v)}</li>" for k, v in pairs) + "</ul>"


def _findings_html(d: Diagnosis, notes: tuple[str, ...] = ()) -> str:
    items = finding_items(d, notes=notes)[:MAX_FINDINGS]
    if not items:
        return ""
    return "<ul>" + "".join(f"<li>{_cell(b)} {_e(_cut(f.message, 400))}</li>"
                            for b, f in items) + "</ul>"


def fit_html(fit: Fit) -> str:
    parts = [_dl([("formula", fit.spec.formula.text), *_model_facts(fit),
                  ("status", f"{_status(fit.ok)} ({_headline(fit)})")]),
             "<div>Population-level parameters</div>", table_html(population_table(fit))]
    notes = "".join(f"<li>{_cell(Badge('info'))} {_e(_cut(n, 400))}</li>"
                    for n in fit.spec.design.notes)
    parts.append((f"<ul>{notes}</ul>" if notes else "")
                 + _findings_html(fit.diagnosis, fit.spec.design.notes))
    parts.append("<div>Full data: <code>.idata</code>, <code>.summary()</code>, "
                 "<code>.diagnosis</code>, <code>.repair_log</code></div>")
    return _wrap("poolwise.Fit", fit.ok, parts)


def diagnosis_html(d: Diagnosis) -> str:
    return _wrap(f"poolwise.Diagnosis ({d.chains} chains x {d.draws} draws)", d.ok,
                 [table_html(diagnosis_table(d)), _findings_html(d)])




def repair_html(log: RepairLog) -> str:
    table = repair_table(log)
    parts = [table_html(table)] if table is not None else []
    parts.append(_dl(repair_notes(log)))
    return _wrap(f"poolwise.RepairLog: {len(log)} attempt(s)", log.ok, parts)
