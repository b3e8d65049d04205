"""A self-contained HTML report of a fit or of a pooling comparison.

:func:`write_report` writes one file: CSS inline, figures embedded as base64 PNG, no
scripts, no external URL, every user-supplied string (labels, formula, paths, messages)
HTML-escaped. The sections always come in this order (``SECTIONS``): model and priors, data,
sampling settings, diagnostics (pass/fail badges), repair journal, posterior summary, pooling
comparison and narrative, figures, reproducibility footer (versions, seed, command, data
hash).

The same inputs give a byte-identical file: no timestamps or timings are written, the PNGs
are saved without the software tag (``metadata={"Software": None}``) and with a fixed
``svg.hashsalt``, and every simulation in the figures is seeded from the fit's seed.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import io
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from importlib.resources import files
from pathlib import Path
from string import Template
from typing import TYPE_CHECKING, Any

import numpy as np

from poolwise import naming
from poolwise.errors import SpecError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from poolwise.fit import Fit
    from poolwise.model import ModelSpec
    from poolwise.pooling import PoolingComparison

__all__ = ["write_report", "render_report", "SECTIONS", "figure_png"]

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


class _Html(str):
    """A string that is already HTML (not escaped again)."""


def _e(v: Any) -> str:
    if isinstance(v, _Html):
        return v
    return html.escape(str(v), quote=True)


def _num(v: Any, digits: int = 3) -> str:
    """A number as table text: ``digits`` decimals, '' for missing values."""
    if v is None:
        return ""
    if isinstance(v, bool | np.bool_):
        return "yes" if v else "no"
    if isinstance(v, int | np.integer):
        return str(int(v))
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    if math.isnan(f):
        return ""
    if math.isinf(f):
        return str(f)
    return f"{f:.{digits}f}"


def _table(
    header: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    cls: str = "",
    text_cols: Sequence[int] = (),
) -> _Html:
    out = [f'<table class="{_e(cls)}">' if cls else "<table>", "<thead><tr>"]
    for i, h in enumerate(header):
        out.append(f'<th class="text">{_e(h)}</th>' if i in text_cols else f"<th>{_e(h)}</th>")
    out.append("</tr></thead><tbody>")
    for row in rows:
        out.append("<tr>")
        for i, c in enumerate(row):
            out.append(f'<td class="text">{_e(c)}</td>' if i in text_cols else f"<td>{_e(c)}</td>")
        out.append("</tr>")
    out.append("</tbody></table>")
    return _Html("".join(out))


def _kv(pairs: Iterable[tuple[str, Any]]) -> _Html:
    return _table(["item", "value"], [(k, v) for k, v in pairs], cls="kv", text_cols=(1,))


def _badge(state: str) -> _Html:
    label = {"pass": "PASS", "fail": "FAIL", "warn": "WARN"}[state]
    return _Html(f'<span class="badge {state}">{label}</span>')


def _p(text: str) -> str:
    return f"<p>{_e(text)}</p>\n"


# ---- figures --------------------------------------------------------------------------------


def figure_png(fig: Figure, *, dpi: int = DPI) -> bytes:
    """PNG bytes of ``fig``, reproducible byte for byte (no software tag, fixed hash salt)."""
    import matplotlib

    buf = io.BytesIO()
    with matplotlib.rc_context({"svg.hashsalt": "poolwise"}):
        fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    return buf.getvalue()


def _figure_html(name: str, caption: str, fig: Figure) -> str:
    data = base64.b64encode(figure_png(fig)).decode("ascii")
    return (
        f'<figure id="fig-{_e(name)}" data-figure="{_e(name)}">'
        f'<img alt="{_e(caption)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{_e(caption)}</figcaption></figure>\n"
    )


# ---- section builders -----------------------------------------------------------------------


def _response_text(spec: ModelSpec) -> tuple[str, str]:
    r = spec.formula.response
    if r.kind == "bernoulli":
        return f"{r.successes}_i", "Bernoulli(p_i)"
    trials = r.trials if r.kind == "trials" else f"{r.successes}_i + {r.failures}_i"
    return f"{r.successes}_i", f"Binomial({trials}, p_i)"


def model_lines(spec: ModelSpec) -> list[str]:
    """The model in statistical notation, one line per statement (plain text)."""
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
        for sd, p in zip(sds, t.sd_priors, strict=True):
            lines.append(f"{sd} ~ {p}")
    for name, p in zip(d.fixed_names, spec.fixed_priors, strict=True):
        if name in unpooled:
            continue
        lines.append(f"{naming.fixed(name)} ~ {p}")
    return lines


def _section_model(fits: Mapping[str, Fit]) -> str:
    from poolwise.summary import priors_by_parameter

    out: list[str] = ['<div class="models">']
    for key, f in fits.items():
        spec = f.spec
        out.append("<div>")
        out.append(f"<h3>{_e(MODEL_TITLES.get(key, key))}</h3>")
        out.append(f'<pre class="model">{_e(chr(10).join(model_lines(spec)))}</pre>')
        pairs = [
            ("formula", spec.formula.text),
            ("pooling", spec.pooling),
            ("link", spec.link),
        ]
        pairs += [
            (f"parameterization ({t})", p) for t, p in spec.parameterization_by_term().items()
        ]
        out.append(_kv(pairs))
        try:
            priors = priors_by_parameter(spec)
        except Exception:  # noqa: BLE001 - older specs: fall back to the prior classes
            priors = spec.priors.to_dict()
        out.append(_table(["parameter", "prior"], sorted(priors.items()), text_cols=(1,)))
        out.append("</div>")
    out.append("</div>")
    return "\n".join(out) + "\n"


def _section_data(main: Fit, comp: PoolingComparison | None) -> str:
    d = main.spec.design
    total_s = float(d.y.sum())
    total_n = float(d.n.sum())
    pairs: list[tuple[str, Any]] = [
        ("source", d.source),
        ("SHA-256 of the input", d.data_sha256),
        ("rows used", d.n_rows),
        ("binomial cells (rows with identical predictors and groups)", d.n_cells),
        ("successes / trials", f"{_num(total_s, 0)} / {_num(total_n, 0)}"),
        ("raw pooled proportion", f"{total_s / total_n:.3f}" if total_n else ""),
        ("columns used", ", ".join(d.formula.columns)),
    ]
    for g in d.groups:
        n = g.level_trials
        zero = int((g.level_successes == 0).sum())
        full = int((g.level_successes == n).sum())
        pairs.append((
            f"groups: {g.name}",
            f"{g.n_levels} levels; trials per level min {_num(n.min(), 0)}, median "
            f"{float(np.median(n)):g}, max {_num(n.max(), 0)}; {zero} with no successes, "
            f"{full} with only successes",
        ))
    out: list[str] = [_kv(pairs)]
    if d.warnings:
        out.append("<h3>Data warnings</h3><ul>")
        out.extend(f"<li>{_e(w)}</li>" for w in d.warnings)
        out.append("</ul>")
    if d.notes:
        out.append("<h3>Notes</h3><ul>")
        out.extend(f"<li>{_e(w)}</li>" for w in d.notes)
        out.append("</ul>")
    if comp is None and d.groups:
        g = d.groups[0]
        rows = [
            (lab, _num(n, 0), _num(s, 0), _num(s / n if n else float("nan")))
            for lab, n, s in zip(g.labels, g.level_trials, g.level_successes, strict=True)
        ]
        out.append(f"<h3>Observations per {_e(g.name)}</h3>")
        out.append('<div class="scroll tall">')
        out.append(_table([g.name, "n", "successes", "raw proportion"], rows))
        out.append("</div>")
    return "\n".join(out) + "\n"


def _section_sampling(fits: Mapping[str, Fit]) -> str:
    cfgs = {k: f.config.to_dict() for k, f in fits.items()}
    keys = list(dict.fromkeys(k for c in cfgs.values() for k in c))
    rows = [[k] + [_num(c.get(k), 3) if not isinstance(c.get(k), str) else c.get(k)
                   for c in cfgs.values()] for k in keys]
    header = ["setting"] + [MODEL_TITLES.get(k, k) for k in fits]
    return _table(header, rows) + "\n"


def _diag_rows(f: Fit) -> list[tuple[str, str, Any, str]]:
    from poolwise.diagnostics import BFMI_MIN, ESS_PER_CHAIN, RHAT_MAX

    d = f.diagnosis
    ess_min = ESS_PER_CHAIN * d.chains
    bfmi = min(d.bfmi) if d.bfmi else float("nan")
    sat = max(d.treedepth_saturation) if d.treedepth_saturation else 0.0
    return [
        ("divergent transitions", "pass" if d.divergences == 0 else "fail", d.divergences, "0"),
        ("largest R-hat", "pass" if d.max_rhat <= RHAT_MAX else "fail", _num(d.max_rhat, 3),
         f"<= {RHAT_MAX}"),
        ("smallest bulk ESS", "pass" if d.min_ess_bulk >= ess_min else "fail",
         _num(d.min_ess_bulk, 0), f">= {ess_min}"),
        ("smallest tail ESS", "pass" if d.min_ess_tail >= ess_min else "fail",
         _num(d.min_ess_tail, 0), f">= {ess_min}"),
        ("smallest E-BFMI", "pass" if not d.bfmi or bfmi >= BFMI_MIN else "fail",
         _num(bfmi, 2), f">= {BFMI_MIN}"),
        ("draws at max tree depth", "pass" if sat == 0 else "warn", f"{100 * sat:.1f}%", "0%"),
    ]


def _section_diagnostics(fits: Mapping[str, Fit], comp: PoolingComparison | None) -> str:
    out = []
    for key, f in fits.items():
        verdict = _badge("pass" if f.ok else "fail")
        out.append(f'<h3 id="diag-{_e(key)}">{_e(MODEL_TITLES.get(key, key))} {verdict}</h3>')
        rows: list[Sequence[Any]] = [
            (name, _badge(state), value, need) for name, state, value, need in _diag_rows(f)
        ]
        out.append(_table(["check", "result", "value", "needed"], rows))
        if f.diagnosis.findings:
            out.append('<ul class="findings">')
            for fi in f.diagnosis.findings:
                state = "fail" if fi.severity == "error" else "warn"
                out.append(f"<li>{_badge(state)} {_e(fi.message)}</li>")
            out.append("</ul>")
        if f.warnings:
            out.append('<ul class="findings">')
            out.extend(f"<li>{_badge('warn')} {_e(w)}</li>" for w in f.warnings)
            out.append("</ul>")
    if comp is not None and comp.pareto_k:
        out.append("<h3>PSIS-LOO Pareto k</h3>")
        k_rows: list[Sequence[Any]] = [
            (MODEL_TITLES.get(m, m), _badge("pass" if pk.ok else "fail"), pk.n_bad,
             _num(pk.max_k, 2), f"<= {pk.threshold:.2f}")
            for m, pk in comp.pareto_k.items()
        ]
        out.append(_table(["model", "result", "rows with bad k", "largest k", "needed"], k_rows))
    return "\n".join(out) + "\n"


#: fields that hold wall-clock times: left out of the report so that it is reproducible
_VOLATILE = re.compile(r"(^|_)(seconds|secs|time|times|timing|timings|elapsed|duration|wall|s)$")
_BIG = 8  # mappings / sequences longer than this are summarised


def _stable(v: Any) -> Any:
    """``v`` without wall-clock fields (recursively), dataclasses as dicts."""
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        v = dataclasses.asdict(v)
    if isinstance(v, Mapping):
        return {str(k): _stable(x) for k, x in v.items() if not _VOLATILE.search(str(k))}
    if isinstance(v, list | tuple):
        return [_stable(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    return v


def _jsonish(v: Any) -> str:
    """Readable text for one field of a journal entry."""
    if v is None:
        return ""
    if isinstance(v, str):
        return v
    if isinstance(v, bool | np.bool_):
        return "yes" if v else "no"
    if isinstance(v, float | np.floating):
        return _num(v, 4)
    if isinstance(v, Mapping) and len(v) > _BIG:
        vals = {
            k: x for k, x in v.items() if isinstance(x, int | float) and not isinstance(x, bool)
        }
        if len(vals) == len(v):
            lo = min(vals, key=lambda k: vals[k])
            hi = max(vals, key=lambda k: vals[k])
            return (f"{len(v)} values; smallest {_num(vals[lo], 4)} ({lo}), largest "
                    f"{_num(vals[hi], 4)} ({hi})")
    if isinstance(v, list | tuple) and len(v) > _BIG:
        shown = json.dumps(list(v[:_BIG]), default=str, ensure_ascii=False)
        return f"{len(v)} items: {shown[:-1]}, ...]"
    if isinstance(v, list | tuple) and all(isinstance(x, str) for x in v):
        return "; ".join(v)
    try:
        return json.dumps(v, default=str, ensure_ascii=False)
    except (TypeError, ValueError):
        return str(v)


def _section_repair(fits: Mapping[str, Fit]) -> str:
    out = []
    any_entries = False
    for key, f in fits.items():
        log = getattr(f, "repair_log", ()) or ()
        entries = list(log)
        if not entries:
            continue
        any_entries = True
        out.append(f"<h3>{_e(MODEL_TITLES.get(key, key))}: {len(entries)} attempt(s)</h3>")
        dicts = [_stable(e) if (dataclasses.is_dataclass(e) or isinstance(e, Mapping)) else None
                 for e in entries]
        if all(d is not None for d in dicts):
            fields = list(dict.fromkeys(k for d in dicts for k in d))  # type: ignore[union-attr]
            rows = [[k] + [_jsonish(d.get(k)) for d in dicts] for k in fields]  # type: ignore[union-attr]
            header = ["field"] + [f"attempt {i}" for i in range(1, len(dicts) + 1)]
            out.append('<div class="scroll">')
            out.append(_table(header, rows, text_cols=tuple(range(len(header)))))
            out.append("</div>")
        else:
            out.append("<ol>")
            out.extend(f"<li>{_e(e)}</li>" for e in entries)
            out.append("</ol>")
        # the journal's own fields besides its entries (e.g. advice, why it stopped)
        if dataclasses.is_dataclass(log) and not isinstance(log, type):
            extra = {
                fl.name: getattr(log, fl.name) for fl in dataclasses.fields(log)
                if not isinstance(getattr(log, fl.name), tuple) or fl.name != _entries_field(log)
            }
            extra = {k: v for k, v in _stable(extra).items() if v not in (None, "", [], {})}
            if extra:
                out.append(_kv((k, _jsonish(v)) for k, v in extra.items()))
    if not any_entries:
        out.append(_p("No repair journal: every fit in this report was sampled once, as "
                      "specified."))
    else:
        out.append(_p("Wall-clock times are left out of this report so that it is reproducible."))
    return "\n".join(out) + "\n"


def _entries_field(log: Any) -> str | None:
    """The name of the dataclass field that holds the entries a journal iterates over."""
    entries = list(log)
    for fl in dataclasses.fields(log):
        v = getattr(log, fl.name)
        if isinstance(v, tuple | list) and len(v) == len(entries) and list(v) == entries:
            return fl.name
    return None


def _summary_table(f: Fit, prob: float, kind: str) -> _Html:
    from poolwise.summary import summary

    df = summary(f, prob=prob, kind=kind)  # type: ignore[arg-type]
    pct = f"{100 * prob:g}%"
    cols = ["mean", "sd", "lower", "upper", "mcse_mean", "ess_bulk", "ess_tail", "r_hat", "n",
            "successes", "raw_proportion"]
    names = ["mean", "sd", f"{kind} {pct} lower", f"{kind} {pct} upper", "MCSE", "ESS bulk",
             "ESS tail", "R-hat", "n", "successes", "raw proportion"]
    digits = {"ess_bulk": 0, "ess_tail": 0, "n": 0, "successes": 0, "r_hat": 3, "mcse_mean": 4}
    rows = [
        [name] + [_num(r[c], digits.get(c, 3)) for c in cols]
        for name, r in df.iterrows()
    ]
    return _table(["parameter"] + names, rows)


def _section_summary(fits: Mapping[str, Fit], main_key: str, prob: float, kind: str) -> str:
    out = []
    for key, f in fits.items():
        open_ = " open" if key == main_key else ""
        out.append(f"<details{open_}><summary>{_e(MODEL_TITLES.get(key, key))}</summary>")
        out.append('<div class="scroll tall">')
        out.append(_summary_table(f, prob, kind))
        out.append("</div></details>")
    out.append(_p(
        "Group rows (a_<group>[label]) are each group's intercept on the log-odds scale, with "
        "the group's number of trials (n), successes and raw proportion."
    ))
    return "\n".join(out) + "\n"


def _section_pooling(comp: PoolingComparison | None) -> str:
    if comp is None:
        return _p(
            "Not run for this report. `poolwise compare DATA --formula F --report` fits complete, "
            "no and partial pooling with the same settings and explains how they differ."
        )
    ci = f"{100 * comp.prob:g}% {comp.kind.upper()}"
    out = ['<h3>What the comparison shows</h3><div class="narrative">']
    out.extend(_p(t) for t in comp.narrative)
    out.append("</div>")
    out.append("<h3>Population</h3>")
    pop = comp.population
    rows = [
        (q, r["description"], r["model"], r["scale"], _num(r["mean"]), _num(r["sd"]),
         _num(r["lower"]), _num(r["upper"]))
        for q, r in pop.iterrows()
    ]
    out.append(_table(["quantity", "meaning", "model", "scale", "mean", "sd", f"{ci} lower",
                       f"{ci} upper"], rows, text_cols=(1,)))
    if comp.loo is not None:
        out.append("<h3>Predictive comparison (PSIS-LOO)</h3>")
        out.append(_p(f"Predictive unit: {comp.loo_unit}"))
        t = comp.loo
        loo_rows: list[Sequence[Any]] = [
            (m, _num(r["rank"], 0), _num(r["elpd"], 1), _num(r["se"], 1), _num(r["elpd_diff"], 1),
             _num(r["dse"], 1), _num(r["p"], 1), _num(r["weight"], 2),
             _badge("pass" if r["pareto_k_bad"] == 0 else "fail"))
            for m, r in t.iterrows()
        ]
        out.append(_table(["model", "rank", "elpd", "SE", "elpd difference", "SE of difference",
                           "effective parameters", "stacking weight", "Pareto k"], loo_rows))
    g = comp.groups
    out.append(f"<h3>Per {_e(comp.group)}: no pooling vs partial pooling</h3>")
    out.append(_p(
        f"Log-odds columns: posterior mean, SD and {ci} of each {comp.group}'s intercept. "
        f"Proportion columns: the same on the outcome scale. Shrinkage: the weight the "
        f"partial-pooling estimate gives to the population mean (0: its own data, 1: the "
        f"population mean)."
    ))
    header = [comp.group, "n", "successes", "raw prop.",
              "none mean", "none sd", "none lower", "none upper",
              "partial mean", "partial sd", "partial lower", "partial upper",
              "none prop.", "none prop. lower", "none prop. upper",
              "partial prop.", "partial prop. lower", "partial prop. upper",
              "shift (prop.)", "SD ratio", "shrinkage", "boundary"]
    cols = ["n", "successes", "raw_proportion", "none_mean", "none_sd", "none_lower",
            "none_upper", "partial_mean", "partial_sd", "partial_lower", "partial_upper",
            "none_p_mean", "none_p_lower", "none_p_upper", "partial_p_mean", "partial_p_lower",
            "partial_p_upper", "shift_p", "sd_ratio", "shrinkage"]
    digits = {"n": 0, "successes": 0}
    group_rows: list[Sequence[Any]] = [
        [lab] + [_num(r[c], digits.get(c, 3)) for c in cols] + [r["boundary"]]
        for lab, r in g.iterrows()
    ]
    out.append('<div class="scroll tall">')
    out.append(_table(header, group_rows, text_cols=(len(header) - 1,)))
    out.append("</div>")
    return "\n".join(out) + "\n"


def _section_figures(
    main: Fit, comp: PoolingComparison | None, prob: float, figures: bool
) -> str:
    if not figures:
        return _p("Figures were not requested for this report.")
    from poolwise.plots.pooling import fit_figures, pooling_figures

    figs = pooling_figures(comp) if comp is not None else fit_figures(main, prob=prob)
    out = []
    for name, (caption, fig) in figs.items():
        out.append(_figure_html(name, caption, fig))
    return "".join(out)


def _section_repro(fits: Mapping[str, Fit], main: Fit, command: str | None) -> str:
    from poolwise.fit import versions

    attrs = main.idata.attrs
    try:
        vers = json.loads(attrs["poolwise_versions"])
    except (KeyError, ValueError):
        vers = versions()
    seeds = {MODEL_TITLES.get(k, k): f.config.seed for k, f in fits.items()}
    seed_text = (
        str(next(iter(seeds.values()))) if len(set(seeds.values())) == 1
        else "; ".join(f"{k}: {v}" for k, v in seeds.items())
    )
    d = main.spec.design
    pairs = [
        ("command", command or "Python API (no command line recorded)"),
        ("seed", seed_text),
        ("formula", d.formula.text),
        ("data source", d.source),
        ("data SHA-256", d.data_sha256),
        ("rows used", d.n_rows),
    ]
    pairs += [(f"version: {k}", v) for k, v in vers.items()]
    return _kv(pairs) + "\n" + _p(
        "Re-running the command with the same data, seed and versions on the same platform "
        "reproduces the draws and this file byte for byte."
    )


# ---- assembly -------------------------------------------------------------------------------


def _resolve(result: Any) -> tuple[dict[str, Fit], str, PoolingComparison | None]:
    from poolwise.fit import Fit
    from poolwise.pooling import PoolingComparison

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
    parts = []
    for sid, heading in SECTIONS:
        tag = "footer" if sid == "reproducibility" else "section"
        cls = ' class="repro"' if sid == "reproducibility" else ""
        parts.append(
            f'<{tag} id="{sid}"{cls}>\n<h2>{_e(heading)}</h2>\n{bodies[sid]}</{tag}>\n'
        )
    toc = "".join(
        f'<li><a href="#{sid}">{i}. {_e(h)}</a></li>\n' for i, (sid, h) in enumerate(SECTIONS, 1)
    )
    formula = main.spec.formula.text
    if title is None:
        title = (f"poolwise: pooling comparison for {formula}" if comp is not None
                 else f"poolwise: {formula}")
    status = "all fits passed their diagnostics" if all(f.ok for f in fits.values()) else (
        "some fits did NOT pass their diagnostics: do not trust them"
    )
    models = ", ".join(MODEL_TITLES.get(k, k) for k in fits)
    subtitle = f"{models}; {main.spec.design.n_rows} rows; {status}."
    from poolwise import __version__

    template = Template(files("poolwise.report").joinpath("template.html").read_text("utf-8"))
    style = files("poolwise.report").joinpath("style.css").read_text("utf-8")
    return template.substitute(
        title=_e(title), subtitle=_e(subtitle), toc=toc, body="".join(parts), style=style,
        version=_e(__version__),
    )


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

    ``command`` is recorded in the reproducibility footer (the CLI passes its own command
    line). ``prob``/``kind`` set the intervals (default: the comparison's, else 89% HDI).
    Returns the path written. The same inputs give a byte-identical file.
    """
    text = render_report(result, command=command, title=title, prob=prob, kind=kind,
                         figures=figures)
    out = Path(path)
    if out.parent and not out.parent.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(text.encode("utf-8"))
    return out
