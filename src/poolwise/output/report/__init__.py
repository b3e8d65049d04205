"""A self-contained HTML report of a fit or of a pooling comparison.

:func:`write_report` writes one file: CSS inline, figures embedded as base64 PNG, no
scripts, no external URL. The page is rendered from jinja2 templates (``template.html``, the
page; ``sections.html``, one macro per section) with autoescape on, so every user-supplied
string (labels, formula, paths, messages) is HTML-escaped. Each section is built from its
typed source: the model block from the ModelSpec, the data from the Design, the badges from
the :class:`~poolwise.inference.diagnostics.Diagnosis` only (:meth:`Diagnosis.checks`), the repair
journal from the :class:`~poolwise.inference.repair.RepairLog` as a table (attempt, action, why,
settings, result). The sections always come in this order (``SECTIONS``): model and priors,
data, sampling settings, diagnostics (pass/fail badges), repair journal, posterior summary,
pooling comparison and narrative, figures, reproducibility footer (versions, seed, command,
data hash). Numbers are printed with significant digits (:func:`poolwise.summary.fmt_sig`).

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
from collections.abc import Mapping
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from poolwise.errors import SpecError
from poolwise.inference.display import diagnosis_table, finding_items, repair_notes, repair_table
from poolwise.textfmt import Badge, Table, fmt_sig

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from poolwise.comparison.pooling import PoolingComparison
    from poolwise.inference.fitted import Fit
    from poolwise.model.spec import ModelSpec

__all__ = ["write_report", "render_report", "SECTIONS", "figure_png", "model_lines"]

#: (id, heading) of every section, in the order they appear
SECTIONS: tuple[tuple[str, str], ...] = (
    ("model", "Model and priors"),
    ("data", "Data"),
    ("sampling", "Sampling settings"),
    ("diagnostics", "Diagnostics"),
    ("repair", "Repair journal"),
    ("summary", "Posterior summary"),
    ("pooling", "Pooling comparison"),
    ("figures", "Figures"),
    ("reproducibility", "Reproducibility"),
)

MODEL_TITLES = {
    "complete": "complete pooling",
    "none": "no pooling (fixed effects)",
    "partial": "partial pooling (varying intercepts)",
}
DPI = 100


def _table(header: list[str], rows: list[Any], *, cls: str = "",
           text_cols: tuple[int, ...] = ()) -> Table:
    return Table(tuple(header), tuple(tuple(r) for r in rows), cls=cls, text_cols=text_cols)


def _kv(pairs: list[tuple[str, Any]]) -> Table:
    return _table(["item", "value"], [(k, str(v)) for k, v in pairs], cls="kv",
                  text_cols=(1,))


def _title(key: str) -> str:
    return MODEL_TITLES.get(key, key)


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
    for key, f in fits.items():
        spec = f.spec
        facts = [("formula", spec.formula.text), ("pooling", spec.pooling), ("link", spec.link)]
        facts += [
            (f"parameterization ({t})", p) for t, p in spec.parameterization_by_term().items()
        ]
        priors = priors_by_parameter(spec)
        models.append({
            "title": _title(key),
            "lines": model_lines(spec),
            "facts": _kv(facts),
            "priors": _table(["parameter", "prior (and the scale it applies on)"],
                             sorted(priors.items()), text_cols=(1,)),
        })
    return {"models": models}


def _section_data(main: Fit, comp: PoolingComparison | None) -> dict[str, Any]:
    d = main.spec.design
    total_s = float(d.y.sum())
    total_n = float(d.n.sum())
    pairs: list[tuple[str, Any]] = [
        ("source", d.source),
        ("SHA-256 of the input", d.data_sha256),
        ("rows used", d.n_rows),
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
            f"{g.n_levels} levels; trials per level min {n.min():.0f}, median "
            f"{float(np.median(n)):g}, max {n.max():.0f}; {zero} with no successes, "
            f"{full} with only successes",
        ))
    view: dict[str, Any] = {"facts": _kv(pairs), "warnings": list(d.warnings),
                            "notes": list(d.notes), "groups": None, "group_name": ""}
    if comp is None and d.groups:
        g = d.groups[0]
        rows = [
            (str(lab), fmt_sig(n, None), fmt_sig(s, None),
             fmt_sig(s / n if n else float("nan")))
            for lab, n, s in zip(g.labels, g.level_trials, g.level_successes, strict=True)
        ]
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
    cfgs = {k: f.config.to_dict() for k, f in fits.items()}
    keys = list(dict.fromkeys(k for c in cfgs.values() for k in c))
    rows = [[k] + [_setting(c.get(k)) for c in cfgs.values()] for k in keys]
    return _table(["setting"] + [_title(k) for k in fits], rows)


def _section_diagnostics(fits: Mapping[str, Fit], comp: PoolingComparison | None
                         ) -> dict[str, Any]:
    models = []
    for key, f in fits.items():
        d = f.diagnosis
        # the all-0 / all-1 levels are a data note (Data section); their finding restates it
        notes = f.spec.design.notes
        models.append({
            "key": key,
            "title": _title(key),
            "verdict": Badge("pass" if d.ok else "fail"),
            "checks": diagnosis_table(d),
            "findings": [(b, fi.message) for b, fi in finding_items(d, notes=notes)],
            "warnings": [(Badge("warn"), w) for w in f.warnings],
        })
    pareto = None
    if comp is not None and comp.pareto_k:
        pareto = _table(
            ["model", "result", "rows with bad k", "largest k", "needed"],
            [(_title(m), Badge("pass" if pk.ok else "fail"), str(pk.n_bad), fmt_sig(pk.max_k, 2),
              f"<= {pk.threshold:.2f}") for m, pk in comp.pareto_k.items()],
        )
    return {"models": models, "pareto_k": pareto}


def _section_repair(fits: Mapping[str, Fit]) -> dict[str, Any]:
    models = []
    for key, f in fits.items():
        table = repair_table(f.repair_log)
        if table is None:
            continue
        notes = repair_notes(f.repair_log)
        models.append({
            "title": _title(key), "n": len(table.rows), "attempts": table,
            "notes": _kv(notes) if notes else None,
        })
    footnote = (
        "No repair journal: every fit in this report was sampled once, as specified."
        if not models else
        "Each attempt is one fit; 'why' is the verdict of the attempt before it. Wall-clock "
        "times are left out of this report so that it is reproducible."
    )
    return {"models": models, "footnote": footnote}


#: significant digits of the summary columns in the report (None: a whole number)
_SUMMARY_COLS = ("mean", "sd", "lower", "upper", "mcse_mean", "ess_bulk", "ess_tail", "r_hat",
                 "n", "successes", "raw_proportion")


def _summary_table(f: Fit, prob: float, kind: str) -> Table:
    from poolwise.inference.summary import format_summary, summary

    df = summary(f, prob=prob, kind=kind)  # type: ignore[arg-type]
    pct = f"{100 * prob:g}%"
    names = ["mean", "sd", f"{kind} {pct} lower", f"{kind} {pct} upper", "MCSE", "ESS bulk",
             "ESS tail", "R-hat", "n", "successes", "raw proportion"]
    text = format_summary(df[list(_SUMMARY_COLS)])
    rows = [[str(name)] + list(r) for name, r in zip(text.index, text.to_numpy(), strict=True)]
    return _table(["parameter"] + names, rows)


def _section_summary(fits: Mapping[str, Fit], main_key: str, prob: float, kind: str
                     ) -> dict[str, Any]:
    models = [
        {"title": _title(key), "open": key == main_key, "table": _summary_table(f, prob, kind)}
        for key, f in fits.items()
    ]
    notes = [
        "Estimates are printed with 3 significant digits, MCSE with 2 (summary.csv and "
        "result.json keep full precision).",
        "Group rows (a_<group>[label]) are each group's intercept on the log-odds scale, with "
        "the group's number of trials (n), successes and raw proportion.",
    ]
    if any(len(f.spec.design.fixed_names) > 1 for f in fits.values()):
        notes.append(
            "The model has predictors: Intercept and the group intercepts are log-odds at the "
            "predictors' zero values (reference levels of categorical predictors), not at the "
            "data's own values."
        )
    return {"models": models, "notes": notes}


_GROUP_COLS = ("n", "successes", "raw_proportion", "none_mean", "none_sd", "none_lower",
               "none_upper", "partial_mean", "partial_sd", "partial_lower", "partial_upper",
               "none_p_mean", "none_p_lower", "none_p_upper", "partial_p_mean",
               "partial_p_lower", "partial_p_upper", "shift_p", "sd_ratio", "shrinkage")


def _logo_table(comp: PoolingComparison) -> tuple[Table | None, str | None]:
    """The leave-one-group-out table of a comparison and its predictive unit."""
    if comp.logo is None:
        return None, None
    lg = comp.logo
    names = {"complete": "complete pooling", "none": "no pooling", "partial": "partial pooling"}
    table = _table(
        ["model", "elpd", "SE", "elpd difference", "SE of difference", "PSIS", "refits",
         "exact", "max Pareto k", "Pareto k"],
        [(names.get(str(m), str(m)), f"{r['elpd']:.1f}", f"{r['se']:.1f}",
          f"{r['elpd_diff']:.1f}", f"{r['dse']:.1f}", fmt_sig(r["n_psis"], None),
          fmt_sig(r["n_refit"], None), fmt_sig(r["n_exact"], None),
          fmt_sig(r["pareto_k_max"], 2), Badge("pass" if r["n_bad_k"] == 0 else "fail"))
         for m, r in lg.table.iterrows()],
    )
    how = ("every group refitted exactly" if lg.exact else
           "PSIS-LOGO, with exact refits of the groups whose Pareto k exceeds 0.7")
    unit = (f"Predictive unit: {lg.unit}. Per group of '{lg.group}': {how}; the per-group "
            "values are in pooling_logo_groups.csv. " + " ".join(lg.notes))
    return table, unit


def _section_pooling(comp: PoolingComparison | None) -> dict[str, Any]:
    if comp is None:
        return {"comparison": None, "absent": (
            "Not run for this report. `poolwise compare DATA --formula F --report` fits "
            "complete, no and partial pooling with the same settings and explains how they "
            "differ."
        )}
    ci = f"{100 * comp.prob:g}% {comp.kind.upper()}"
    pop = comp.population
    population = _table(
        ["quantity", "meaning", "model", "scale", "mean", "sd", f"{ci} lower", f"{ci} upper"],
        [(str(q), r["description"], r["model"], r["scale"], fmt_sig(r["mean"]),
          fmt_sig(r["sd"]), fmt_sig(r["lower"]), fmt_sig(r["upper"]))
         for q, r in pop.iterrows()],
        text_cols=(1,),
    )
    loo = None
    if comp.loo is not None:
        loo = _table(
            ["model", "rank", "elpd", "SE", "elpd difference", "SE of difference",
             "effective parameters", "stacking weight", "Pareto k"],
            [(str(m), fmt_sig(r["rank"], None), f"{r['elpd']:.1f}", f"{r['se']:.1f}",
              f"{r['elpd_diff']:.1f}", f"{r['dse']:.1f}", f"{r['p']:.1f}",
              fmt_sig(r["weight"], 2), Badge("pass" if r["pareto_k_bad"] == 0 else "fail"))
             for m, r in comp.loo.iterrows()],
        )
    logo, logo_unit = _logo_table(comp)
    header = [comp.group, "n", "successes", "raw prop.",
              "none mean", "none sd", "none lower", "none upper",
              "partial mean", "partial sd", "partial lower", "partial upper",
              "none prop.", "none prop. lower", "none prop. upper",
              "partial prop.", "partial prop. lower", "partial prop. upper",
              "shift (prop.)", "SD ratio", "shrinkage", "boundary"]
    whole = {"n", "successes"}
    groups = _table(
        header,
        [[str(lab)] + [fmt_sig(r[c], None if c in whole else 3) for c in _GROUP_COLS]
         + [str(r["boundary"])] for lab, r in comp.groups.iterrows()],
        text_cols=(len(header) - 1,),
    )
    at = (" at the predictors' zero values (reference levels)"
          if len(comp.main_fit.spec.design.fixed_names) > 1 else "")
    groups_note = (
        f"Log-odds columns: posterior mean, SD and {ci} of each {comp.group}'s intercept{at}. "
        f"Proportion columns: the same on the outcome scale. Shrinkage: the weight the "
        f"partial-pooling estimate gives to the population mean (0: its own data, 1: the "
        f"population mean)."
    )
    return {"comparison": {
        "narrative": list(comp.narrative), "population": population, "loo": loo,
        "loo_unit": f"Predictive unit: {comp.loo_unit}", "group": comp.group,
        "logo": logo, "logo_unit": logo_unit,
        "groups": groups, "groups_note": groups_note,
    }}


def _section_figures(
    main: Fit, comp: PoolingComparison | None, prob: float, figures: bool
) -> dict[str, Any]:
    if not figures:
        return {"figures": [], "absent": "Figures were not requested for this report."}
    from poolwise.output.plots.pooling import fit_figures, pooling_figures

    figs = pooling_figures(comp) if comp is not None else fit_figures(main, prob=prob)
    return {"figures": [_figure_view(name, caption, fig)
                        for name, (caption, fig) in figs.items()], "absent": ""}


def _section_repro(fits: Mapping[str, Fit], main: Fit, command: str | None) -> dict[str, Any]:
    from poolwise.inference.fitted import versions

    attrs = main.idata.attrs
    try:
        vers = json.loads(attrs["poolwise_versions"])
    except (KeyError, ValueError):
        vers = versions()
    seeds = {_title(k): f.config.seed for k, f in fits.items()}
    seed_text = (
        str(next(iter(seeds.values()))) if len(set(seeds.values())) == 1
        else "; ".join(f"{k}: {v}" for k, v in seeds.items())
    )
    d = main.spec.design
    pairs: list[tuple[str, Any]] = [
        ("command", command or "Python API (no command line recorded)"),
        ("seed", seed_text),
        ("formula", d.formula.text),
        ("data source", d.source),
        ("data SHA-256", d.data_sha256),
        ("rows used", d.n_rows),
    ]
    pairs += [(f"version: {k}", v) for k, v in vers.items()]
    return {"facts": _kv(pairs), "note": (
        "Re-running the command with the same data, seed and versions on the same platform "
        "reproduces the draws and this file byte for byte."
    )}


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
) -> str:
    """The report as one HTML string (see :func:`write_report`)."""
    fits, main_key, comp = _resolve(result)
    main = fits[main_key]
    prob = prob if prob is not None else (comp.prob if comp is not None else 0.89)
    kind = kind if kind is not None else (comp.kind if comp is not None else "hdi")
    if not 0.0 < prob < 1.0:
        raise SpecError(f"prob must lie strictly between 0 and 1; got {prob!r}")
    if kind not in ("hdi", "eti"):
        raise SpecError(f"kind must be 'hdi' or 'eti'; got {kind!r}")
    bodies = {
        "model": _section_model(fits),
        "data": _section_data(main, comp),
        "sampling": _section_sampling(fits),
        "diagnostics": _section_diagnostics(fits, comp),
        "repair": _section_repair(fits),
        "summary": _section_summary(fits, main_key, prob, kind),
        "pooling": _section_pooling(comp),
        "figures": _section_figures(main, comp, prob, figures),
        "reproducibility": _section_repro(fits, main, command),
    }
    formula = main.spec.formula.text
    if title is None:
        title = (f"poolwise: pooling comparison for {formula}" if comp is not None
                 else f"poolwise: {formula}")
    status = "all fits passed their diagnostics" if all(f.ok for f in fits.values()) else (
        "some fits did NOT pass their diagnostics: do not trust them"
    )
    models = ", ".join(_title(k) for k in fits)
    subtitle = f"{models}; {main.spec.design.n_rows} rows; {status}."
    from poolwise import __version__

    return _environment().get_template("template.html").render(
        title=title, subtitle=subtitle, sections=SECTIONS, bodies=bodies,
        style=files("poolwise.output.report").joinpath("style.css").read_text("utf-8"),
        version=__version__,
    )


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
        Recorded in the reproducibility footer (the CLI passes its own command line).
    title : str or None, default None
        Page title; None derives one from the formula.
    prob : float or None, default None
        Interval mass; None means the comparison's, else 0.89.
    kind : {"hdi", "eti"} or None, default None
        Interval kind; None means the comparison's, else ``"hdi"``.
    figures : bool, default True
        Include the figures (inline SVG).

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
                         figures=figures)
    out = Path(path)
    if out.parent and not out.parent.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(text.encode("utf-8"))
    return out
