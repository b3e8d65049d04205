"""Compact displays of results at the Python prompt (``__repr__``) and in notebooks
(``_repr_html_``), in the spirit of brms' ``print(fit)``: the model, the data size, the status,
the key table (population-level parameters, never one row per group) and the findings. The
full data stay one attribute away (``fit.idata``, ``fit.summary()``, ``comp.groups``, ...).
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

from poolwise.report.views import (
    Badge,
    Table,
    diagnosis_table,
    finding_items,
    population_table,
    repair_notes,
    repair_table,
)
from poolwise.summary import fmt_rhat, fmt_sig

if TYPE_CHECKING:
    from poolwise.diagnostics import Diagnosis
    from poolwise.fit import Fit
    from poolwise.pooling import PoolingComparison
    from poolwise.repair import RepairLog

__all__ = [
    "fit_text", "fit_html", "diagnosis_text", "diagnosis_html", "comparison_text",
    "comparison_html", "repair_text", "repair_html",
]

#: findings longer than this are cut in the compact displays (the full text: ``.findings``)
MAX_MESSAGE = 180
MAX_FINDINGS = 8


def _cut(text: str, n: int = MAX_MESSAGE) -> str:
    return text if len(text) <= n else text[: n - 3].rstrip() + "..."


def _status(ok: bool) -> str:
    return "OK" if ok else "NOT OK - do not trust these estimates"


def _finding_lines(d: Diagnosis, notes: tuple[str, ...] = ()) -> list[str]:
    items = finding_items(d, notes=notes)
    lines = [f"  {f.severity}: {_cut(f.message)}" for _, f in items[:MAX_FINDINGS]]
    if len(items) > MAX_FINDINGS:
        lines.append(f"  ... and {len(items) - MAX_FINDINGS} more (.diagnosis.findings)")
    return lines


def _group_line(fit: Fit) -> str:
    parts = [f"{t.name} ({t.group.n_levels} levels)" for t in fit.spec.terms]
    return ", ".join(parts) if parts else "none"


def _model_facts(fit: Fit) -> list[tuple[str, str]]:
    spec, d, cfg = fit.spec, fit.spec.design, fit.config
    par = "; ".join(f"({k}) {v}" for k, v in spec.parameterization_by_term().items())
    return [
        ("pooling", f"{spec.pooling}, link {spec.link}" + (f", parameterization {par}"
                                                             if par else "")),
        ("data", f"{d.n_rows} rows -> {d.n_cells} binomial cells ({d.source})"),
        ("groups", _group_line(fit)),
        ("sampling", f"{cfg.chains} chains x {cfg.draws} draws (tune {cfg.tune}), "
                     f"target_accept {cfg.target_accept:g}, seed {cfg.seed}"),
    ]


def _headline(d: Diagnosis) -> str:
    rhat = fmt_rhat(d.max_rhat) or "undefined"
    return (f"divergences {d.divergences}, max R-hat {rhat}, min ESS bulk "
            f"{fmt_sig(d.min_ess_bulk, None) or 'undefined'}")


# ---- text ---------------------------------------------------------------------------------


def fit_text(fit: Fit) -> str:
    lines = [f"<poolwise.Fit> {fit.spec.formula.text}"]
    lines += [f"  {k}: {v}" for k, v in _model_facts(fit)]
    lines.append(f"  status: {_status(fit.ok)} ({_headline(fit.diagnosis)})")
    lines.append("Population-level parameters (posterior mean, sd, 89% interval):")
    lines.append(population_table(fit).text())
    if fit.spec.terms:
        lines.append("Group-level parameters: one per level, in .summary() and .idata")
    notes = [f"  note: {_cut(n)}" for n in fit.spec.design.notes[:MAX_FINDINGS]]
    findings = _finding_lines(fit.diagnosis, fit.spec.design.notes[:MAX_FINDINGS])
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


def _population_rows(comp: PoolingComparison) -> Table:
    pop = comp.population
    rows = [
        (q, str(r["model"]), str(r["scale"]), fmt_sig(r["mean"]), fmt_sig(r["lower"]),
         fmt_sig(r["upper"]))
        for q, r in pop.iterrows()
    ]
    pct = f"{100 * comp.prob:g}% {comp.kind.upper()}"
    return Table(("quantity", "model", "scale", "mean", f"{pct} lower", f"{pct} upper"),
                 tuple(rows), text_cols=(1, 2))


def _movers(comp: PoolingComparison, k: int = 3) -> Table:
    g = comp.groups
    order = g["shift_p"].abs().sort_values(ascending=False, kind="stable").index[:k]
    rows = [
        (str(lab), fmt_sig(g.loc[lab, "n"], None), fmt_sig(g.loc[lab, "none_p_mean"]),
         fmt_sig(g.loc[lab, "partial_p_mean"]), fmt_sig(g.loc[lab, "shift_p"]))
        for lab in order
    ]
    return Table((comp.group, "n", "no pooling", "partial pooling", "shift"), tuple(rows))


def comparison_text(comp: PoolingComparison) -> str:
    lines = [f"<poolwise.PoolingComparison> {comp.formula}"]
    lines.append(f"  pooling of '{comp.group}' ({len(comp.groups)} groups): "
                 + ", ".join(f"{k} {'ok' if f.ok else 'NOT OK'}" for k, f in comp.fits.items()))
    lines.append(f"  status: {_status(comp.ok)}")
    lines.append("Population:")
    lines.append(_population_rows(comp).text())
    lines.append("Groups that move most between no and partial pooling (proportions):")
    lines.append(_movers(comp).text())
    if comp.loo is not None:
        best = comp.loo.index[0]
        lines.append(f"PSIS-LOO (one data row): best {best}; "
                     + "; ".join(f"{m} elpd_diff {fmt_sig(-r['elpd_diff'])} (SE "
                                 f"{fmt_sig(r['dse'])})" for m, r in comp.loo.iloc[1:].iterrows()))
    lines += [f"  note: {_cut(n)}" for n in comp.notes]
    lines.append("Full data: .groups, .population, .loo, .fits, .narrative")
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
                  ("status", f"{_status(fit.ok)} ({_headline(fit.diagnosis)})")]),
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


def comparison_html(comp: PoolingComparison) -> str:
    parts = [
        _dl([("formula", comp.formula), ("group", f"{comp.group} ({len(comp.groups)} groups)"),
             ("fits", ", ".join(f"{k} {'ok' if f.ok else 'NOT OK'}"
                                for k, f in comp.fits.items()))]),
        "<div>Population</div>", table_html(_population_rows(comp)),
        "<div>Groups that move most</div>", table_html(_movers(comp)),
    ]
    parts += [f"<p>{_e(n)}</p>" for n in comp.notes]
    parts.append("<div>Full data: <code>.groups</code>, <code>.population</code>, "
                 "<code>.loo</code>, <code>.narrative</code></div>")
    return _wrap("poolwise.PoolingComparison", comp.ok, parts)


def repair_html(log: RepairLog) -> str:
    table = repair_table(log)
    parts = [table_html(table)] if table is not None else []
    parts.append(_dl(repair_notes(log)))
    return _wrap(f"poolwise.RepairLog: {len(log)} attempt(s)", log.ok, parts)
