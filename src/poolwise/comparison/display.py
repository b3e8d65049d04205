"""How a pooling comparison reads at the Python prompt and in notebooks (its ``__repr__`` and
``_repr_html_``): the population table, the groups that move most, the LOO verdict."""

from __future__ import annotations

from typing import TYPE_CHECKING

from poolwise.inference.display import _cut, _dl, _e, _status, _wrap, table_html
from poolwise.inference.summary import interval_of
from poolwise.textfmt import LabelShortener, Table, fmt_sig

if TYPE_CHECKING:
    from poolwise.comparison.pooling import PoolingComparison

__all__ = ["comparison_html", "comparison_text"]


def _population_rows(comp: PoolingComparison) -> Table:
    pop = comp.population
    lo, hi = interval_of(pop)
    rows = [
        (q, str(r["model"]), str(r["scale"]), fmt_sig(r["mean"]), fmt_sig(r[lo]),
         fmt_sig(r[hi]))
        for q, r in pop.iterrows()
    ]
    pct = f"{100 * comp.prob:g}% {comp.kind.upper()}"
    return Table(("quantity", "model", "scale", "mean", f"{pct} lower", f"{pct} upper"),
                 tuple(rows), text_cols=(1, 2))


def _movers(comp: PoolingComparison, k: int = 3) -> Table:
    g = comp.groups
    order = g["shift_p"].abs().sort_values(ascending=False, kind="stable").index[:k]
    short = LabelShortener(order)  # a long label shortened, distinct from the others shown
    rows = [
        (short(lab), fmt_sig(g.loc[lab, "n"], None), fmt_sig(g.loc[lab, "none_p_mean"]),
         fmt_sig(g.loc[lab, "partial_p_mean"]), fmt_sig(g.loc[lab, "shift_p"]))
        for lab in order
    ]
    return Table((comp.group, "n", "no pooling", "partial pooling", "shift"), tuple(rows))


def comparison_text(comp: PoolingComparison) -> str:
    lines = [f"<poolwise.PoolingComparison> {comp.formula}"]
    lines.append(f"  pooling of '{comp.group}' ({len(comp.groups)} groups): "
                 + ", ".join(f"{k} {'ok' if f.ok else 'NOT OK'}" for k, f in comp.fits.items()))
    lines.append(f"  status: {_status(comp.ok)}   method: {comp.method}")
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


def comparison_html(comp: PoolingComparison) -> str:
    parts = [
        _dl([("formula", comp.formula), ("group", f"{comp.group} ({len(comp.groups)} groups)"),
             ("fits", ", ".join(f"{k} {'ok' if f.ok else 'NOT OK'}"
                                for k, f in comp.fits.items())), ("method", comp.method)]),
        "<div>Population</div>", table_html(_population_rows(comp)),
        "<div>Groups that move most</div>", table_html(_movers(comp)),
    ]
    parts += [f"<p>{_e(n)}</p>" for n in comp.notes]
    parts.append("<div>Full data: <code>.groups</code>, <code>.population</code>, "
                 "<code>.loo</code>, <code>.narrative</code></div>")
    return _wrap("poolwise.PoolingComparison", comp.ok, parts)
