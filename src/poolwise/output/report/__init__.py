"""A self-contained HTML report of a fit or of a pooling comparison.

:func:`write_report` writes one file: CSS inline, figures embedded as base64 PNG, no
scripts, no external URL. The page is rendered from jinja2 templates (``template.html``, the
page; ``sections.html``, one macro per section) with autoescape on, so every user-supplied
string (labels, formula, paths, messages) is HTML-escaped. Each section is built from its
typed source: the model block from the ModelSpec, the data from the Design, the badges from
the :class:`~poolwise.inference.diagnostics.Diagnosis` only (:meth:`Diagnosis.checks`), the repair
journal from the :class:`~poolwise.inference.repair.RepairLog` as a table (attempt, action, why,
settings, result). Under the title, the status; a fit that failed its diagnostics shows there
what failed and the chains (trace and rank) of its worst parameters, before anything else.
The sections always come in this order (``SECTIONS``): model and priors,
data, sampling settings, diagnostics (pass/fail badges), repair journal, posterior summary,
effects on the outcome scale (the average comparison of each predictor, table and plot),
pooling comparison and narrative, figures (estimates, predictive checks, the chains of a fit
that passed), reproducibility footer (versions, seed, the command that made the fit and, for
``poolwise report DIR``, the one that rebuilt the report, data file name and hash). Numbers
are printed with significant digits (:func:`poolwise.summary.fmt_sig`); a table of more than
``MAX_TABLE_LEVELS`` group levels shows the extremes. No absolute path is written: the data
and folders are named by their last component.

The same inputs give a byte-identical file: no timestamps or timings are written, the PNGs
are saved without the software tag (``metadata={"Software": None}``) and with a fixed
``svg.hashsalt``, and every simulation in the figures is seeded from the fit's seed.

Why one module: the assembly of one page (sections in order, figures, the comparison or the
single fit) is one sequence read top to bottom; the HTML is in the templates, the tables in
report.views.
"""

from __future__ import annotations

import base64
import functools
import io
import json
import re
import shlex
from collections.abc import Mapping
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from poolwise.errors import SpecError
from poolwise.inference.display import (
    diagnosis_table,
    finding_items,
    repair_notes,
    repair_table,
    restates_a_finding,
)
from poolwise.inference.summary import interval_of
from poolwise.textfmt import Badge, Table, fmt_sig

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from poolwise.comparison.pooling import PoolingComparison
    from poolwise.inference.fitted import Fit
    from poolwise.model.spec import ModelSpec

__all__ = ["write_report", "render_report", "SECTIONS", "figure_png", "model_lines",
           "portable_command"]

#: (id, heading) of every section, in the order they appear
SECTIONS: tuple[tuple[str, str], ...] = (
    ("model", "Model and priors"),
    ("data", "Data"),
    ("sampling", "Sampling settings"),
    ("diagnostics", "Diagnostics"),
    ("repair", "Repair journal"),
    ("summary", "Posterior summary"),
    ("effects", "Effects on the outcome scale"),
    ("pooling", "Pooling comparison"),
    ("figures", "Figures"),
    ("reproducibility", "Reproducibility"),
)

DPI = 100
#: a table with more group levels than this shows the extremes (``TOP_K`` each side) and says
#: where every level is; the HTML of 10^4-10^5 rows is megabytes nobody reads
MAX_TABLE_LEVELS = 200
TOP_K = 20


def _table(header: list[str], rows: list[Any], *, cls: str = "",
           text_cols: tuple[int, ...] = ()) -> Table:
    return Table(tuple(header), tuple(tuple(r) for r in rows), cls=cls, text_cols=text_cols)


def _kv(pairs: list[tuple[str, Any]]) -> Table:
    return _table(["item", "value"], [(k, str(v)) for k, v in pairs], cls="kv",
                  text_cols=(1,))


def _title(fit: Fit) -> str:
    """The fitted model in words: pooling and what varies by group."""
    from poolwise.model.describe import pooling_title

    return pooling_title(fit.spec)


def _source_name(source: str) -> str:
    """The data named by its file name only: a folder path would tell whoever reads a shared
    report where its author keeps files."""
    text = str(source).rstrip("/\\")
    return re.split(r"[/\\]", text)[-1] if re.search(r"[/\\]", text) else text


def _is_absolute(token: str) -> bool:
    return token.startswith(("/", "~", "\\")) or bool(re.match(r"^[A-Za-z]:[\\/]", token))


def portable_command(command: str) -> str:
    """``command`` with every absolute path argument (``/data/ana/survey.csv``,
    ``--out=/srv/x``, ``C:\\data\\x.csv``) shortened to its last component, so that a shared
    report does not show its author's folders; relative paths are kept as typed."""
    try:
        tokens = shlex.split(command)
    except ValueError:
        return command
    if not any(_is_absolute(t.partition("=")[2] if t.startswith("-") else t) for t in tokens):
        return command  # as it was recorded
    out = []
    for tok in tokens:
        flag, eq, value = tok.partition("=")
        if eq and tok.startswith("-") and _is_absolute(value):
            out.append(f"{flag}={_source_name(value)}")
        elif _is_absolute(tok):
            out.append(_source_name(tok))
        else:
            out.append(tok)
    return shlex.join(out)


def _private_paths(fits: Mapping[str, Fit], commands: list[str | None],
                   rebuilt_from: str | None) -> dict[str, str]:
    """Absolute paths that the report could otherwise show (the data source as given, the
    commands' path arguments, the folder a report was rebuilt from), each mapped to its last
    component; the rendered page is cleaned of them (notes and findings quote the source)."""
    paths = [f.spec.design.source for f in fits.values()]
    paths += [rebuilt_from or ""]
    for cmd in commands:
        try:
            paths += [t.partition("=")[2] if t.startswith("-") else t
                      for t in shlex.split(cmd or "")]
        except ValueError:
            continue
    return {p: _source_name(p) for p in paths if p and _is_absolute(p)}


# ---- figures --------------------------------------------------------------------------------


def figure_png(fig: Figure, *, dpi: int = DPI) -> bytes:
    """PNG bytes of ``fig``, reproducible byte for byte (no software tag, fixed hash salt)."""
    import matplotlib

    buf = io.BytesIO()
    with matplotlib.rc_context({"svg.hashsalt": "poolwise"}):
        fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    return buf.getvalue()


def _figure_view(name: str, caption: str, fig: Figure) -> dict[str, str]:
    return {"name": name, "caption": caption,
            "png": base64.b64encode(figure_png(fig)).decode("ascii")}


# ---- section builders: each returns the view its macro in sections.html renders ------------


def _response_text(spec: ModelSpec) -> tuple[str, str]:
    r = spec.formula.response
    if r.kind == "bernoulli":
        return f"{r.successes}_i", "Bernoulli(p_i)"
    trials = r.trials if r.kind == "trials" else f"{r.successes}_i + {r.failures}_i"
    return f"{r.successes}_i", f"Binomial({trials}, p_i)"


def model_lines(spec: ModelSpec) -> list[str]:
    """The model in statistical notation, one line per statement (plain text); every prior
    with the scale it applies on (:func:`poolwise.summary.priors_by_parameter`)."""
    from poolwise.model import naming
    from poolwise.model.describe import priors_by_parameter

    by_parameter = priors_by_parameter(spec)
    y, dist = _response_text(spec)
    lines = [f"{y} ~ {dist}"]
    d = spec.design
    unpooled = {c for t in spec.terms if not t.estimated for c in t.group.coef_names}
    rhs: list[str] = []
    for name in d.fixed_names:
        if name == "Intercept":
            if not any(t.estimated and "Intercept" in t.group.coef_names for t in spec.terms):
                rhs.append("Intercept")
        else:
            if not any(t.estimated and name in t.group.coef_names for t in spec.terms):
                rhs.append(f"{naming.fixed(name)} * {name}_i")
    for t in spec.terms:
        g = t.name
        for c in t.group.coef_names:
            idx = f"{g}[i]"
            eff = naming.element(naming.total(g, c), idx)
            rhs.append(eff if c == naming.INTERCEPT else f"{eff} * {c}_i")
    lines.append(f"{spec.link}(p_i) = {' + '.join(rhs) if rhs else '0'}")
    for t in spec.terms:
        g = t.name
        coefs = t.group.coef_names
        names = [naming.element(naming.total(g, c), "j") for c in coefs]
        if not t.estimated:
            for nm, fixed in zip(names, t.sd_fixed, strict=True):
                lines.append(
                    f"{nm} ~ normal(0, {fixed:g})   (independent, fixed prior: no pooling)"
                )
            continue
        means = [
            naming.fixed(c) if mi >= 0 else "0"
            for c, mi in zip(coefs, t.mu_index, strict=True)
        ]
        sds = [naming.sd_name(t, c) for c in coefs]
        if t.correlated and len(coefs) > 1:
            lines.append(
                f"({', '.join(names)}) ~ MVNormal(({', '.join(means)}), S_{g}),  "
                f"S_{g} = diag({', '.join(sds)}) R_{g} diag(...)"
            )
            lines.append(f"R_{g} ~ lkj({t.lkj_eta:g})")
        else:
            for nm, mu, sd in zip(names, means, sds, strict=True):
                lines.append(f"{nm} ~ normal({mu}, {sd})   (adaptive prior: partial pooling)")
        for sd in sds:
            lines.append(f"{sd} ~ {by_parameter[sd]}")
    for name in d.fixed_names:
        if name in unpooled:
            continue
        par = naming.fixed(name)
        lines.append(f"{par} ~ {by_parameter[par]}")
    return lines


def _section_model(fits: Mapping[str, Fit]) -> dict[str, Any]:
    from poolwise.model.describe import priors_by_parameter

    models = []
    for f in fits.values():
        spec = f.spec
        facts = [("formula", spec.formula.text), ("pooling", spec.pooling), ("link", spec.link)]
        facts += [  # how a sampler sees the group effects: an approximate fit has none
            (f"parameterization ({t})", p) for t, p in spec.parameterization_by_term().items()
        ] if f.method == "nuts" else [("method", f.method)]
        priors = priors_by_parameter(spec)
        models.append({
            "title": _title(f),
            "lines": model_lines(spec),
            "facts": _kv(facts),
            "priors": _table(["parameter", "prior (and the scale it applies on)"],
                             sorted(priors.items()), text_cols=(1,)),
        })
    return {"models": models}


def _extremes(values: np.ndarray) -> np.ndarray:
    """Positions of the ``TOP_K`` lowest and the ``TOP_K`` highest ``values``, in that
    order."""
    k = TOP_K
    order = np.argsort(values, kind="stable")
    return np.concatenate([order[:k], order[-k:]])


def _section_data(fits: Mapping[str, Fit], main: Fit, comp: PoolingComparison | None
                  ) -> dict[str, Any]:
    d = main.spec.design
    total_s = float(d.y.sum())
    total_n = float(d.n.sum())
    pairs: list[tuple[str, Any]] = [
        ("source (file name)", _source_name(d.source)),
        ("SHA-256 of the input", d.data_sha256),
        ("rows used", d.n_rows),
        *([] if d.weighting is None else [("weights", d.weighting.describe()
                                           .removeprefix("weights: "))]),
        ("binomial cells (rows with identical predictors and groups)", d.n_cells),
        ("successes / trials", f"{total_s:.0f} / {total_n:.0f}"),
        ("raw pooled proportion", fmt_sig(total_s / total_n) if total_n else ""),
        ("columns used", ", ".join(d.formula.columns)),
    ]
    for g in d.groups:
        n = g.level_trials
        zero = int((g.level_successes == 0).sum())
        full = int((g.level_successes == n).sum())
        pairs.append((
            f"groups: {g.name}",
            f"{g.n_levels:,} levels; trials per level min {n.min():.0f}, median "
            f"{float(np.median(n)):g}, max {n.max():.0f}; {zero:,} with no successes, "
            f"{full:,} with only successes",
        ))
    # a warning that a diagnosis finding says again (with more) is shown once, as the finding
    findings = [fi for f in fits.values() for fi in f.diagnosis.findings]
    warnings = [w for w in d.warnings if not restates_a_finding(w, findings)]
    view: dict[str, Any] = {"facts": _kv(pairs), "warnings": warnings,
                            "notes": list(d.notes), "groups": None, "group_name": "",
                            "groups_note": ""}
    if comp is None and d.groups:
        g = d.groups[0]
        n, succ = np.asarray(g.level_trials, float), np.asarray(g.level_successes, float)
        with np.errstate(invalid="ignore", divide="ignore"):
            raw = np.where(n > 0, succ / np.where(n > 0, n, 1), np.nan)
        idx = np.arange(g.n_levels)
        if g.n_levels > MAX_TABLE_LEVELS:
            idx = _extremes(np.nan_to_num(raw, nan=-1.0))
            view["groups_note"] = (
                f"{g.n_levels:,} levels of {g.name}: shown are the {TOP_K} with the lowest and "
                f"the {TOP_K} with the highest raw proportion; summary.csv of the saved fit "
                f"has every level (n, successes, raw proportion).")
        rows = [(str(g.labels[i]), fmt_sig(n[i], None), fmt_sig(succ[i], None),
                 fmt_sig(raw[i])) for i in idx]
        view["groups"] = _table([g.name, "n", "successes", "raw proportion"], rows)
        view["group_name"] = g.name
    return view


def _setting(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, str):
        return v
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def _section_sampling(fits: Mapping[str, Fit]) -> Table:
    # the method first: "approx" made its draws without a sampler (poolwise.inference.approx;
    # its tune, target_accept, max_treedepth and engine were not used)
    cfgs = {k: ({"method": f.method} if any(g.method != "nuts" for g in fits.values())
                else {}) | _used_settings(f) for k, f in fits.items()}
    keys = list(dict.fromkeys(k for c in cfgs.values() for k in c))
    rows = [[k] + [_setting(c.get(k)) for c in cfgs.values()] for k in keys]
    return _table(["setting"] + [_title(f) for f in fits.values()], rows)


def _used_settings(f: Fit) -> dict[str, Any]:
    """The sampler settings a fit used: all of them for NUTS; for an approximate fit the
    number of draws and the seed (it has no tuning, step size, tree or engine)."""
    cfg = f.config.to_dict()
    if f.method == "nuts":
        return cfg
    return {k: v for k, v in cfg.items() if k in ("chains", "draws", "seed")}


def _section_diagnostics(fits: Mapping[str, Fit], comp: PoolingComparison | None,
                         chains: Mapping[str, list[dict[str, str]]]) -> dict[str, Any]:
    models = []
    for key, f in fits.items():
        d = f.diagnosis
        design = f.spec.design
        # the all-0 / all-1 levels are a data note (Data section); their finding restates it
        notes = design.notes
        # the data's warnings are shown once, in the Data section (or as their finding)
        own = [w for w in f.warnings if w not in design.warnings]
        models.append({
            "key": key,
            "title": _title(f),
            "verdict": Badge("pass" if d.ok else "fail"),
            "checks": diagnosis_table(d),
            "findings": [(b, fi.message) for b, fi in finding_items(d, notes=notes)],
            "warnings": [(Badge("warn"), w) for w in own],
            "chains_at_top": bool(chains.get(key)),
        })
    pareto = None
    if comp is not None and comp.pareto_k:
        pareto = _table(
            ["model", "result", "rows with bad k", "largest k", "needed"],
            [(_title(fits[m]) if m in fits else str(m), Badge("pass" if pk.ok else "fail"),
              str(pk.n_bad), fmt_sig(pk.max_k, 2), f"<= {pk.threshold:.2f}")
             for m, pk in comp.pareto_k.items()],
        )
    return {"models": models, "pareto_k": pareto}


def _section_repair(fits: Mapping[str, Fit]) -> dict[str, Any]:
    models = []
    for f in fits.values():
        table = repair_table(f.repair_log)
        if table is None:
            continue
        notes = repair_notes(f.repair_log)
        models.append({
            "title": _title(f), "n": len(table.rows), "attempts": table,
            "notes": _kv(notes) if notes else None,
        })
    footnote = (
        "No repair journal: every fit in this report was made once, as specified."
        if not models else
        "Each attempt is one fit; 'why' is the verdict of the attempt before it. Wall-clock "
        "times are left out of this report so that it is reproducible."
    )
    return {"models": models, "footnote": footnote}


def interval_names(prob: float, kind: str) -> tuple[str, str]:
    """The headings of an interval's bounds, with its probability and kind: ``("89% HDI
    lower", "89% HDI upper")``."""
    ci = f"{100 * prob:g}% {kind.upper()}"
    return f"{ci} lower", f"{ci} upper"


def _summary_table(f: Fit, prob: float, kind: str) -> tuple[Table, list[str]]:
    """The summary table as the report shows it, and a note per group variable cut to its
    extremes (more than ``MAX_TABLE_LEVELS`` levels)."""
    import pandas as pd

    from poolwise.inference.summary import format_summary, independent_draws_note, table_columns
    from poolwise.model.naming import total_name

    df = f.summary(prob=prob, kind=kind)
    notes: list[str] = []
    prefix = pd.Index([str(i).partition("[")[0] for i in df.index])
    names = [total_name(t, c) for t in f.spec.terms for c in t.group.coef_names]
    if any(int((prefix == n).sum()) > MAX_TABLE_LEVELS for n in names):
        parts = [df[~prefix.isin(names)]]
        for name in names:
            rows = df[prefix == name]
            if len(rows) > MAX_TABLE_LEVELS:
                notes.append(f"{name}: {len(rows):,} levels; shown are the {TOP_K} lowest and "
                             f"the {TOP_K} highest posterior means (summary.csv of the saved "
                             "fit has every level).")
                rows = rows.iloc[_extremes(rows["mean"].to_numpy())]
            parts.append(rows)
        df = pd.concat(parts)
    note = independent_draws_note(f)
    if note is not None:
        notes.append(note[0].upper() + note[1:] + ".")
    lower, upper = interval_names(prob, kind)
    header = ["mean", "sd", lower, upper, "MCSE", "ESS bulk", "ESS tail", "R-hat", "n",
              "successes", "raw proportion"]
    text = format_summary(df[table_columns(prob, kind)])
    rows = [[str(name)] + list(r) for name, r in zip(text.index, text.to_numpy(), strict=True)]
    return _table(["parameter"] + header, rows), notes


def _section_summary(fits: Mapping[str, Fit], prob: float, kind: str) -> dict[str, Any]:
    models = []
    for f in fits.values():
        table, cut = _summary_table(f, prob, kind)
        models.append({"title": _title(f), "table": table, "notes": cut})
    notes = [
        "Estimates are printed with 3 significant digits, MCSE with 2 (summary.csv and "
        "result.json keep full precision).",
        "Group rows (a_<group>[label]) are each group's intercept on the log-odds scale, "
        "with the group's number of trials (n), successes and raw proportion; "
        "b_<group>__<x>[label] is its slope of x, whose rows leave these empty (a proportion "
        "is no slope, and what a group's data say about its slope depends on how x varies "
        "within it, not on its count).",
    ]
    if any(len(f.spec.design.fixed_names) > 1 for f in fits.values()):
        notes.append(
            "The model has predictors: Intercept and the group intercepts are log-odds at the "
            "predictors' zero values (reference levels of categorical predictors), not at the "
            "data's own values."
        )
    return {"models": models, "notes": notes}


def _group_cols(groups: Any) -> list[str]:
    """The columns of a comparison's groups table the report shows, in its order."""
    cols = ["n", "successes", "raw_proportion"]
    for model in ("none", "partial"):
        cols += [f"{model}_mean", f"{model}_sd", *interval_of(groups, f"{model}_")]
    for model in ("none", "partial"):
        cols += [f"{model}_p_mean", *interval_of(groups, f"{model}_p_")]
    return [*cols, "shift_p", "sd_ratio", "shrinkage"]


#: the first columns of the leave-one-group-out and K-fold tables
ELPD_COLUMNS = ("model", "elpd", "SE", "elpd difference", "SE of difference")


def _elpd_cells(model: Any, row: Any) -> tuple[str, ...]:
    """A model's row of :data:`ELPD_COLUMNS` (the comparison's own model names)."""
    from poolwise.comparison.pooling import MODEL_NAMES

    return (MODEL_NAMES.get(str(model), str(model)), f"{row['elpd']:.1f}", f"{row['se']:.1f}",
            f"{row['elpd_diff']:.1f}", f"{row['dse']:.1f}")


def _logo_table(comp: PoolingComparison) -> tuple[Table | None, str | None]:
    """The leave-one-group-out table of a comparison and its predictive unit."""
    if comp.logo is None:
        return None, None
    lg = comp.logo
    table = _table(
        [*ELPD_COLUMNS, "PSIS", "refits", "exact", "max Pareto k", "Pareto k"],
        [(*_elpd_cells(m, r), fmt_sig(r["n_psis"], None), fmt_sig(r["n_refit"], None),
          fmt_sig(r["n_exact"], None), fmt_sig(r["pareto_k_max"], 2),
          Badge("pass" if r["n_bad_k"] == 0 else "fail"))
         for m, r in lg.table.iterrows()],
    )
    how = ("every group refitted exactly" if lg.exact else
           "PSIS-LOGO, with exact refits of the groups whose Pareto k exceeds 0.7")
    unit = (f"Predictive unit: {lg.unit}. Per group of '{lg.group}': {how}; the per-group "
            "values are in pooling_logo_groups.csv. " + " ".join(lg.notes))
    return table, unit


def _kfold_table(comp: PoolingComparison) -> tuple[Table | None, str | None]:
    """The grouped K-fold table of a comparison and what it measured."""
    if comp.kfold is None:
        return None, None
    kf = comp.kfold
    table = _table(list(ELPD_COLUMNS), [_elpd_cells(m, r) for m, r in kf.table.iterrows()])
    unit = (f"Predictive unit: {kf.unit}. The {len(kf.pointwise):,} levels of '{kf.group}' in "
            f"{kf.k} folds, stratified by their size; each fold left out and refitted, its "
            "levels scored as new groups. Per level: pooling_kfold_groups.csv; the folds and "
            "their refits' seeds: pooling_kfold_folds.csv.")
    return table, unit


def _loo_table(comp: PoolingComparison) -> Any:
    """The PSIS-LOO comparison of the three models, or None when it was not run."""
    if comp.loo is None:
        return None
    return _table(
        ["model", "rank", "elpd", "SE", "elpd difference", "SE of difference",
         "effective parameters", "stacking weight", "Pareto k"],
        [(str(m), fmt_sig(r["rank"], None), f"{r['elpd']:.1f}", f"{r['se']:.1f}",
          f"{r['elpd_diff']:.1f}", f"{r['dse']:.1f}", f"{r['p']:.1f}",
          fmt_sig(r["weight"], 2), Badge("pass" if r["pareto_k_bad"] == 0 else "fail"))
         for m, r in comp.loo.iterrows()],
    )


def _groups_table(comp: PoolingComparison, ci: str) -> tuple[Any, str]:
    """The per-group table of the comparison (the extremes when there are many groups) and
    its note."""
    header = [comp.group, "n", "successes", "raw prop.",
              "none mean", "none sd", f"none {ci} lower", f"none {ci} upper",
              "partial mean", "partial sd", f"partial {ci} lower", f"partial {ci} upper",
              "none prop.", f"none prop. {ci} lower", f"none prop. {ci} upper",
              "partial prop.", f"partial prop. {ci} lower", f"partial prop. {ci} upper",
              "shift (prop.)", "SD ratio", "shrinkage", "boundary"]
    whole = {"n", "successes"}
    shown = comp.groups
    cut = ""
    if len(shown) > MAX_TABLE_LEVELS:
        shown = shown.iloc[_extremes(shown["partial_p_mean"].to_numpy())]
        cut = (f" {len(comp.groups):,} {comp.group}s: shown are the {TOP_K} lowest and the "
               f"{TOP_K} highest partial-pooling proportions; pooling_groups.csv has every "
               f"{comp.group}.")
    cols = _group_cols(comp.groups)
    groups = _table(
        header,
        [[str(lab)] + [fmt_sig(r[c], None if c in whole else 3) for c in cols]
         + [str(r["boundary"])] for lab, r in shown.iterrows()],
        text_cols=(len(header) - 1,),
    )
    at = (" at the predictors' zero values (reference levels)"
          if len(comp.main_fit.spec.design.fixed_names) > 1 else "")
    groups_note = (
        f"Log-odds columns: posterior mean, SD and {ci} of each {comp.group}'s intercept{at}. "
        f"Proportion columns: the same on the outcome scale. Shrinkage: the weight the "
        f"partial-pooling estimate gives to the population mean (0: its own data, 1: the "
        f"population mean).{cut}"
    )
    return groups, groups_note


def _section_effects(main: Fit, prob: float, kind: str, figures: bool) -> dict[str, Any]:
    """The average comparison of each predictor on the probability scale over the data the
    model was fitted to (:func:`poolwise.comparison.effects.comparisons`): a table and a plot.
    Absent, with the reason, when the model has no predictor or its data cannot be read
    again (a data frame given in Python, a file changed since, a folder of Parquet)."""
    from poolwise.errors import DataError

    spec = main.spec
    enc = spec.design.encoding
    names = [v.label for v in (enc.variables if enc else ())]
    how = ("`poolwise effects DIR` computes them for a saved fit (--by for subgroups, --groups "
           "new for a new group, --slopes for derivatives, --data for other rows).")
    if not names:
        return {"absent": "The model has no predictors: there is no effect to compare. " + how}
    from poolwise.comparison.effects import comparisons

    try:
        df = comparisons(main, names, prob=prob, kind=kind)
    except DataError as err:
        return {"absent": f"Not computed here: {err}. " + how}
    from poolwise.inference.summary import interval_columns

    lo, hi = interval_columns(prob, kind)
    ci = f"{100 * prob:g}% {kind.upper()}"
    table = _table(
        ["predictor", "contrast", "mean", "sd", f"{ci} lower", f"{ci} upper"],
        [(str(r["term"]), str(r["contrast"]), fmt_sig(r["estimate"]), fmt_sig(r["sd"]),
          fmt_sig(r[lo]), fmt_sig(r[hi])) for _, r in df.iterrows()],
        text_cols=(1,),
    )
    outcome = spec.formula.response.successes
    note = (f"The average difference in the probability of {outcome} when a predictor "
            f"changes (a level against the reference level; a numeric predictor by + 1 unit of "
            f"its original scale), the other predictors as they are, over the "
            f"{spec.design.n_rows:,} rows the model was fitted to, each with its own fitted "
            f"group effects ({df.attrs['groups']}): marginaleffects' avg_comparisons, per "
            f"posterior draw, then the mean and the {ci}. " + how)
    figure = None
    if figures:
        from poolwise.output.plots.effects import plot_comparisons

        fig = plot_comparisons(df, outcome=outcome, title=(
            f"Average comparisons on the probability scale, {_title(main)}"))
        figure = _figure_view("effects", f"Average difference in the probability of "
                              f"{outcome} per predictor (mean and {ci}).", fig)
    return {"absent": "", "table": table, "note": note, "figure": figure}


def _section_pooling(comp: PoolingComparison | None) -> dict[str, Any]:
    if comp is None:
        return {"comparison": None, "absent": (
            "Not run for this report. `poolwise compare DATA --formula F --report` fits "
            "complete, no and partial pooling with the same settings and explains how they "
            "differ."
        )}
    ci = f"{100 * comp.prob:g}% {comp.kind.upper()}"
    pop = comp.population
    lo, hi = interval_of(pop)
    population = _table(
        ["quantity", "meaning", "model", "scale", "mean", "sd", f"{ci} lower", f"{ci} upper"],
        [(str(q), r["description"], r["model"], r["scale"], fmt_sig(r["mean"]),
          fmt_sig(r["sd"]), fmt_sig(r[lo]), fmt_sig(r[hi]))
         for q, r in pop.iterrows()],
        text_cols=(1,),
    )
    loo = _loo_table(comp)
    logo, logo_unit = _logo_table(comp)
    kfold, kfold_unit = _kfold_table(comp)
    groups, groups_note = _groups_table(comp, ci)
    return {"comparison": {
        "narrative": list(comp.narrative), "population": population, "loo": loo,
        "loo_unit": f"Predictive unit: {comp.loo_unit}", "group": comp.group,
        "logo": logo, "logo_unit": logo_unit, "kfold": kfold, "kfold_unit": kfold_unit,
        "groups": groups, "groups_note": groups_note,
    }}


def _chain_views(fit: Fit) -> list[dict[str, str]]:
    from poolwise.output.plots.diagnostic import chain_figures

    return [_figure_view(name, caption, fig)
            for name, (caption, fig) in chain_figures(fit).items()]


def _section_figures(
    main: Fit, comp: PoolingComparison | None, prob: float, kind: str, figures: bool
) -> dict[str, Any]:
    if not figures:
        return {"figures": [], "absent": "Figures were not requested for this report."}
    from poolwise.output.plots.pooling import fit_figures, pooling_figures

    figs = (pooling_figures(comp) if comp is not None
            else fit_figures(main, prob=prob, kind=kind))
    views = [_figure_view(name, caption, fig) for name, (caption, fig) in figs.items()]
    if main.ok:  # a fit that fails shows its chains at the top, right after its status
        views += _chain_views(main)
    return {"figures": views, "absent": ""}


def _status(fits: Mapping[str, Fit], figures: bool) -> dict[str, Any]:
    """The verdict under the title and, for every fit that failed its diagnostics, what
    failed and the chains of its worst parameters (trace and rank), before anything else."""
    failed = {k: f for k, f in fits.items() if not f.ok}
    if not failed:
        text = ("the fit passed its diagnostics" if len(fits) == 1
                else f"all {len(fits)} fits passed their diagnostics")
        return {"text": text, "failed": []}
    if len(fits) == 1:
        text = "this fit did NOT pass its diagnostics: do not trust its estimates"
    else:
        text = (f"{len(failed)} of {len(fits)} fits did NOT pass their diagnostics ("
                + ", ".join(_title(f) for f in failed.values()) + "): do not trust "
                + ("its" if len(failed) == 1 else "their") + " estimates")
    views = []
    for key, f in failed.items():
        checks = [(Badge(state), f"{name}: {value} (needed {need})")
                  for name, state, value, need in f.diagnosis.checks() if state == "fail"]
        views.append({"key": key, "title": _title(f), "checks": checks,
                      "figures": _chain_views(f) if figures else []})
    return {"text": text, "failed": views}


def _section_repro(fits: Mapping[str, Fit], main: Fit, command: str | None,
                   rebuilt_from: str | None) -> dict[str, Any]:
    from poolwise.inference.fitted import COMMAND_ATTR, versions

    attrs = main.idata.attrs
    try:
        vers = json.loads(attrs["poolwise_versions"])
    except (KeyError, ValueError):
        vers = versions()
    seeds = {_title(f): f.config.seed for f in fits.values()}
    seed_text = (
        str(next(iter(seeds.values()))) if len(set(seeds.values())) == 1
        else "; ".join(f"{k}: {v}" for k, v in seeds.items())
    )
    d = main.spec.design
    original = attrs.get(COMMAND_ATTR)
    original = original if isinstance(original, str) and original else None
    paths = "; absolute paths are shown by their last component"
    if rebuilt_from is not None:
        pairs: list[tuple[str, Any]] = [
            ("command that made the fit", portable_command(original) if original else
             "not recorded (a fit made with the Python API, or saved by an older poolwise)"),
            ("report rebuilt from", f"the saved folder {_source_name(rebuilt_from)}"),
            ("report rebuilt by", portable_command(command) if command else "the Python API"),
        ]
        note = (
            f"This report was rebuilt from the saved folder {_source_name(rebuilt_from)}; "
            + ("re-running the command that made the fit, with the same data, seed and "
               "versions on the same platform, reproduces the draws"
               if original else "the command that made the fit was not recorded")
            + ", and re-running the rebuilding command on that folder reproduces this file "
            f"byte for byte{paths}."
        )
    else:
        shown = command or original
        pairs = [("command", portable_command(shown) if shown
                  else "Python API (no command line recorded)")]
        note = ("Re-running the command with the same data, seed and versions on the same "
                f"platform reproduces the draws and this file byte for byte{paths}."
                if shown else "No command line was recorded: the fit was made with the "
                "Python API.")
    pairs += [
        ("seed", seed_text),
        ("formula", d.formula.text),
        ("data file", _source_name(d.source)),
        ("data SHA-256", d.data_sha256),
        ("rows used", d.n_rows),
    ]
    pairs += [(f"version: {k}", v) for k, v in vers.items()]
    return {"facts": _kv(pairs), "note": note}


# ---- assembly -------------------------------------------------------------------------------


def _resolve(result: Any) -> tuple[dict[str, Fit], str, PoolingComparison | None]:
    from poolwise.comparison.pooling import PoolingComparison
    from poolwise.inference.fitted import Fit

    if isinstance(result, PoolingComparison):
        return dict(result.fits), "partial", result
    if isinstance(result, Fit):
        return {result.spec.pooling: result}, result.spec.pooling, None
    raise SpecError(
        f"write_report needs a Fit or a PoolingComparison; got {type(result).__name__}"
    )


def render_report(
    result: Fit | PoolingComparison,
    *,
    command: str | None = None,
    title: str | None = None,
    prob: float | None = None,
    kind: str | None = None,
    figures: bool = True,
    rebuilt_from: str | None = None,
) -> str:
    """The report as one HTML string (see :func:`write_report`)."""
    import markupsafe

    from poolwise.inference.fitted import COMMAND_ATTR

    fits, main_key, comp = _resolve(result)
    main = fits[main_key]
    prob = prob if prob is not None else (comp.prob if comp is not None else 0.89)
    kind = kind if kind is not None else (comp.kind if comp is not None else "hdi")
    if not 0.0 < prob < 1.0:
        raise SpecError(f"prob must lie strictly between 0 and 1; got {prob!r}")
    if kind not in ("hdi", "eti"):
        raise SpecError(f"kind must be 'hdi' or 'eti'; got {kind!r}")
    status = _status(fits, figures)
    chains = {v["key"]: v["figures"] for v in status["failed"]}
    bodies = {
        "model": _section_model(fits),
        "data": _section_data(fits, main, comp),
        "sampling": _section_sampling(fits),
        "diagnostics": _section_diagnostics(fits, comp, chains),
        "repair": _section_repair(fits),
        "summary": _section_summary(fits, prob, kind),
        "effects": _section_effects(main, prob, kind, figures),
        "pooling": _section_pooling(comp),
        "figures": _section_figures(main, comp, prob, kind, figures),
        "reproducibility": _section_repro(fits, main, command, rebuilt_from),
    }
    formula = main.spec.formula.text
    if title is None:
        title = (f"poolwise: pooling comparison for {formula}" if comp is not None
                 else f"poolwise: {formula}")
    models = ", ".join(_title(f) for f in fits.values())
    subtitle = f"{models}; {main.spec.design.n_rows:,} rows; {status['text']}."
    from poolwise import __version__

    text = _environment().get_template("template.html").render(
        title=title, subtitle=subtitle, status=status, sections=SECTIONS, bodies=bodies,
        style=files("poolwise.output.report").joinpath("style.css").read_text("utf-8"),
        version=__version__,
    )
    originals = [f.idata.attrs.get(COMMAND_ATTR) for f in fits.values()]
    private = _private_paths(fits, [command, *originals], rebuilt_from)
    for path in sorted(private, key=len, reverse=True):  # /a/b/c.csv before /a/b
        for form in {path, str(markupsafe.escape(path))}:
            text = text.replace(form, str(markupsafe.escape(private[path])))
    return text


@functools.cache
def _environment() -> Any:
    """The jinja2 environment: templates from this package, autoescape on, strict names."""
    import jinja2

    def load(name: str) -> str:
        return files("poolwise.output.report").joinpath(name).read_text("utf-8")

    env = jinja2.Environment(
        loader=jinja2.FunctionLoader(load), autoescape=True, trim_blocks=True,
        lstrip_blocks=True, keep_trailing_newline=True, undefined=jinja2.StrictUndefined,
    )
    env.tests["badge"] = lambda v: isinstance(v, Badge)
    return env


def write_report(
    path: str | Path,
    result: Fit | PoolingComparison,
    *,
    command: str | None = None,
    title: str | None = None,
    prob: float | None = None,
    kind: str | None = None,
    figures: bool = True,
    rebuilt_from: str | None = None,
) -> Path:
    """Write the self-contained HTML report of ``result`` (a Fit or a PoolingComparison).

    The same inputs give a byte-identical file.

    Parameters
    ----------
    path : str or pathlib.Path
        The HTML file to write.
    result : Fit or PoolingComparison
        What to report.
    command : str or None, default None
        Recorded in the reproducibility footer (the CLI passes its own command line); None
        shows the command that made the fit when the fit records one (``poolwise fit`` and
        ``poolwise compare`` do).
    title : str or None, default None
        Page title; None derives one from the formula.
    prob : float or None, default None
        Interval mass; None means the comparison's, else 0.89.
    kind : {"hdi", "eti"} or None, default None
        Interval kind; None means the comparison's, else ``"hdi"``.
    figures : bool, default True
        Include the figures (inline PNG).
    rebuilt_from : str or None, default None
        The saved folder the result was loaded from (``poolwise report DIR``): the footer
        then shows the command that made the fit, and ``command`` as the one that rebuilt
        the report.

    Returns
    -------
    pathlib.Path
        The path written.

    Raises
    ------
    SpecError
        When ``result`` is neither a Fit nor a PoolingComparison, or ``prob`` / ``kind`` is
        invalid.
    """
    text = render_report(result, command=command, title=title, prob=prob, kind=kind,
                         figures=figures, rebuilt_from=rebuilt_from)
    out = Path(path)
    if out.parent and not out.parent.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(text.encode("utf-8"))
    return out
