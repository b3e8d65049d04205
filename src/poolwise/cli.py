"""Command line: ``poolwise fit ...``. The only place that prints, configures logging or sets
exit codes. Exit codes: 0 fit ok, 1 fit not ok (diagnostics failed), 2 usage error,
3 data / formula / settings error (an output that cannot be written included), 130 interrupted
(Ctrl-C), 143 terminated (SIGTERM). An interrupt stops the run in whatever phase it is, writes
nothing, and says so in one line.

Why one module: the argument parser, its validation and the printing of each command are the
one place that prints and sets exit codes, and the options are declared beside their checks.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from poolwise.model import links

EXIT_OK, EXIT_NOT_OK, EXIT_USAGE, EXIT_INPUT = 0, 1, 2, 3
#: 128 + the signal's number, as a shell reports a process that a signal stopped
EXIT_INTERRUPTED, EXIT_TERMINATED = 130, 143

#: what must never reach a terminal raw (labels come from data files): C0 controls, DEL and
#: C1 controls (ANSI / OSC escape sequences start with ESC or CSI, NUL truncates or hides text,
#: CR overwrites a line), and the invisible bidirectional overrides. Each is shown escaped,
#: as Python's repr() would: \x1b, \x00, \r, \u202e.
_ESCAPES = {
    i: f"\\x{i:02x}" for i in [*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0)]
}
_ESCAPES.update({0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r"})
_ESCAPES.update({c: f"\\u{c:04x}" for c in [0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F),
                                           *range(0x2066, 0x206A)]})
_ESCAPES_KEEP_NEWLINE = {k: v for k, v in _ESCAPES.items() if k != 0x0A}


def safe_text(text: object, *, newlines: bool = False) -> str:
    """``text`` with every control character escaped (``\\x1b``, ``\\x00``, ``\\r``, ...);
    ``newlines=True`` keeps line breaks (for whole messages), otherwise they are escaped too
    (for labels in a table)."""
    return str(text).translate(_ESCAPES_KEEP_NEWLINE if newlines else _ESCAPES)


class _SafeStream:
    """A text stream that escapes control characters on the way to the terminal: every print
    path of the CLI (tables, findings, journal, notes, warnings, errors, argparse) goes
    through it, so no label from a data file can send escape sequences or NUL bytes."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(safe_text(text, newlines=True))
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _safe_index(df: Any) -> Any:
    """A table whose row labels (group labels from the data) are escaped, newlines included."""
    out = df.copy()
    out.index = [safe_text(i) for i in out.index]
    return out


def _label_index(df: Any) -> Any:
    """A table of group labels for the terminal: escaped (:func:`_safe_index`), and each
    longer than ``textfmt.MAX_LABEL`` characters shortened, distinct from the others
    (``textfmt.short_labels``; the saved files keep them whole)."""
    from poolwise.textfmt import short_labels

    out = _safe_index(df)
    short = short_labels(out.index)
    out.index = [short.get(i, i) for i in out.index]
    return out


def _label_cells(df: Any) -> Any:
    """A table whose text cells (group labels) are escaped and, when longer than
    ``textfmt.MAX_LABEL`` characters, shortened as :func:`_label_index` does."""
    import pandas as pd

    from poolwise.textfmt import short_labels

    out = df.copy()
    for col in out.columns:
        if pd.api.types.is_numeric_dtype(out[col].dtype):
            continue
        cells = [safe_text(v) if isinstance(v, str) else v for v in out[col]]
        short = short_labels(v for v in cells if isinstance(v, str))
        out[col] = pd.Series([short.get(v, v) if isinstance(v, str) else v for v in cells],
                             index=out.index, dtype=object)
    return out


def _shortener(spec: Any) -> Any:
    """Shortens the model's long group labels wherever they occur in a text printed to the
    terminal (a finding or note naming levels, the narrative; ``textfmt.LabelShortener``)."""
    from poolwise.textfmt import LabelShortener

    return LabelShortener(lab for g in spec.design.groups for lab in g.labels)

PRIOR_CLASSES = ("intercept", "b", "sd", "cor", "unpooled", "phi")

#: argparse's part of each option of poolwise.inference.options.OPTIONS (the table holds the
#: meaning); the defaults are the API's, except where the table gives a command-line default
FLAG_SPECS: dict[str, dict[str, Any]] = {
    "success": {"metavar": "VALUE"},
    "drop_missing": {"action": "store_true"},
    "offset": {"metavar": "EXPR"},
    "weights": {"metavar": "COL"},
    "weights_kind": {"choices": ["frequency", "survey"], "default": None},
    "reference": {"action": "append", "default": [], "metavar": "COL=LEVEL"},
    "pooling": {"choices": ["partial", "none", "complete"], "default": None},
    "link": {"choices": list(links.names()), "default": links.names()[0]},
    "family": {"choices": ["binomial", "beta_binomial"], "default": "binomial"},
    "parameterization": {"action": "append", "default": None, "metavar": "KIND|GROUP=KIND"},
    "standardize": {"dest": "standardize", "action": "store_false"},
    "priors": {"dest": "prior", "action": "append", "default": [], "metavar": "CLASS=PRIOR"},
    "method": {"choices": ["nuts", "approx"], "default": "nuts"},
    "check_against_nuts": {"dest": "check_against_nuts", "action": "store_true",
                           "default": False},
    "chains": {"type": int, "default": 4, "metavar": "N"},
    "tune": {"type": int, "default": 1000, "metavar": "N"},
    "draws": {"type": int, "default": 1000, "metavar": "N"},
    "seed": {"type": int, "default": None, "metavar": "N"},
    "target_accept": {"type": float, "default": None, "metavar": "P"},
    "max_treedepth": {"type": int, "default": 10, "metavar": "N"},
    "cores": {"type": int, "default": None, "metavar": "N"},
    "progress": {"action": argparse.BooleanOptionalAction, "default": None},
    "engine": {"choices": ["cfunc", "pyfunc"], "default": "cfunc"},
    "repair": {"action": argparse.BooleanOptionalAction, "default": True},
    "prior_check": {"dest": "prior_check", "action": "store_false"},
    "prior_sensitivity": {"action": argparse.BooleanOptionalAction, "default": None},
    "log_likelihood": {"action": argparse.BooleanOptionalAction, "default": False},
    "group": {"default": None, "metavar": "NAME"},
    "prob": {"type": float, "default": 0.89, "metavar": "P"},
    "kind": {"dest": "interval", "choices": ["hdi", "eti"], "default": "hdi"},
    "loo": {"dest": "loo", "action": "store_false"},
    "logo": {"choices": ["exact", "psis", "off"], "default": "exact"},
    "kfold": {"type": int, "default": None, "metavar": "K"},
}

_GROUP_TITLES = {
    "data": "data", "model": "model", "priors": "priors", "sampler": "sampler",
    "checks": "checks and repair", "comparison": "comparison", "output": "output",
}

FIT_EXAMPLES = """examples:
  poolwise fit --example bangladesh --out results/
  poolwise fit data.csv -f "y ~ 1 + x + (1 | g)" --seed 1 --out results/ --report
  poolwise fit data.csv -f "cbind(s, f) ~ 1 + (1 | g)" --prior "sd=half_normal(0.5)"
  poolwise fit data.csv -f "s | trials(n) ~ x + (1 + x | g)" --link probit
  poolwise fit --example bangladesh --pooling none     # the no-pooling model
"""

COMPARE_EXAMPLES = """examples:
  poolwise compare --example bangladesh --out compare/ --report
  poolwise compare data.csv -f "y ~ x + (1 | g) + (1 | h)" --group g --logo psis
  poolwise compare data.csv -f "y ~ x + (1 | g)" --method approx --out compare/
"""


def _help(name: str, spec: dict[str, Any]) -> str:
    """An option's meaning (from the options table) and its default."""
    from poolwise.inference.options import OPTIONS

    opt = next(o for o in OPTIONS if o.name == name)
    if opt.cli_default:
        return f"{opt.help} (default: {opt.cli_default})"
    action, default = spec.get("action"), spec.get("default")
    if action == "store_false":
        return f"turn off: {opt.help} (on by default)"
    if action in ("store_true", "append") or default is None:
        return opt.help
    if isinstance(default, bool):
        return f"{opt.help} (default: {'on' if default else 'off'})"
    return f"{opt.help} (default: {default})"


def _add_options(p: argparse.ArgumentParser, names: Sequence[str],
                 groups: dict[str, Any]) -> None:
    """The flags of ``names`` (options of poolwise.inference.options.OPTIONS), each in the
    argument group of its kind."""
    from poolwise.inference.options import OPTIONS

    by_name = {o.name: o for o in OPTIONS}
    for name in names:
        opt = by_name[name]
        spec = dict(FLAG_SPECS[name])
        if opt.group not in groups:
            groups[opt.group] = p.add_argument_group(_GROUP_TITLES[opt.group])
        groups[opt.group].add_argument(opt.flag, help=_help(name, spec), **spec)


def _add_data_args(p: argparse.ArgumentParser, groups: dict[str, Any]) -> None:
    g = groups.setdefault("data", p.add_argument_group("data"))
    g.add_argument("data", nargs="?", help="CSV / TSV / Parquet file, a glob or a folder of "
                   "Parquet files")
    g.add_argument("--example", choices=["bangladesh"], help="use the bundled example data")
    g.add_argument("--formula", "-f", help="lme4/brms formula, e.g. 'y ~ 1 + x + (1 | g)'")
    g.add_argument("--delimiter", help="CSV delimiter (default: detected)")
    g.add_argument("--decimal", default=".", help="decimal mark in CSV numbers (default: .)")
    g.add_argument(
        "--categorical", action="append", default=[], metavar="COL",
        help="treat column COL as categorical (like factor(COL) in the formula); repeatable",
    )


def _add_output_args(p: argparse.ArgumentParser, groups: dict[str, Any], what: str) -> None:
    g = groups.setdefault("output", p.add_argument_group("output"))
    g.add_argument("--out", metavar="DIR", help=what)
    g.add_argument("--quiet", "-q", action="store_true", help="print only the status line")
    _add_report_arg(g)


#: the options of poolwise.fit / poolwise.compare_pooling on each subcommand, in help order
FIT_OPTIONS = ("success", "drop_missing", "offset", "weights", "weights_kind", "reference",
               "pooling", "link", "family", "parameterization", "standardize", "priors",
               "method", "check_against_nuts", "chains", "tune", "draws", "seed",
               "target_accept", "max_treedepth", "cores", "progress", "engine", "repair",
               "prior_check", "prior_sensitivity", "log_likelihood", "prob", "kind")
COMPARE_OPTIONS = tuple(o for o in FIT_OPTIONS if o != "pooling") + ("group", "loo", "logo",
                                                                     "kfold")


class _Parser(argparse.ArgumentParser):
    """argparse with a did-you-mean for a misspelled flag or subcommand."""

    def error(self, message: str) -> Any:  # type: ignore[override]
        import difflib
        import re

        known = sorted({s for a in self._all_actions() for s in a.option_strings}
                       | set(self._commands()))
        bad = re.findall(r"unrecognized arguments: (.*)", message)
        words = bad[0].split() if bad else re.findall(r"invalid choice: '([^']*)'", message)
        for word in words:
            close = difflib.get_close_matches(word.split("=")[0], known, n=1, cutoff=0.6)
            if close:
                message += f" (did you mean {close[0]}?)"
                break
        super().error(message)

    def _all_actions(self) -> list[Any]:
        out = list(self._actions)
        for a in self._actions:
            if isinstance(a, argparse._SubParsersAction):  # noqa: SLF001
                for sub in a.choices.values():
                    out += sub._actions  # noqa: SLF001
        return out

    def _commands(self) -> list[str]:
        return [c for a in self._actions if isinstance(a, argparse._SubParsersAction)  # noqa: SLF001
                for c in a.choices]


def build_parser() -> argparse.ArgumentParser:
    from poolwise import __version__

    parser = _Parser(
        prog="poolwise", description="Bayesian multilevel binomial regression: fit, check, "
        "repair and compare pooling of grouped yes/no or count-out-of-n data.",
    )
    parser.add_argument("--version", action="version", version=f"poolwise {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _build_subcommands(sub)
    for subparser in sub.choices.values():  # --debug works after the subcommand too
        subparser.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks"
        )
    return parser


EFFECTS_EXAMPLES = """examples:
  poolwise effects results/ --variable urban                 # average risk difference
  poolwise effects results/ --variable urban --by district   # per district
  poolwise effects results/ --variable urban --new-group     # for a new district
  poolwise effects results/ --slopes --variable age.centered
  poolwise effects results/ --predictions --by urban --out p.csv
"""

POSTSTRATIFY_EXAMPLES = """examples:
  poolwise poststratify results/ --population census.csv --count N --by district
"""


def _add_interval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--prob", type=float, default=0.89, metavar="P",
                   help="probability mass of the intervals (default: 0.89)")
    p.add_argument("--interval", choices=["hdi", "eti"], default="hdi",
                   help="highest-density (hdi) or equal-tailed (eti) intervals (default: hdi)")


def _add_effects_parser(sub: argparse._SubParsersAction, fmt: Any) -> None:
    e = sub.add_parser(
        "effects", formatter_class=fmt, epilog=EFFECTS_EXAMPLES,
        help="effects of predictors on the outcome scale (average differences, slopes, "
        "predictions) from a saved fit",
    )
    e.add_argument("dir", help="folder written by `poolwise fit --out DIR` (or compare --out: "
                   "its partial-pooling fit)")
    e.add_argument("--variable", action="append", default=[], metavar="NAME",
                   help="predictor to change (repeatable; default: every predictor); a binary "
                   "or categorical one: each level against the reference, a numeric one: + 1 "
                   "unit")
    e.add_argument("--slopes", action="store_true",
                   help="derivatives dP/dx of numeric predictors instead of differences")
    e.add_argument("--predictions", action="store_true",
                   help="average predicted probabilities (per --by level) instead")
    e.add_argument("--by", action="append", default=[], metavar="COL",
                   help="average within each level of this column (repeatable)")
    e.add_argument("--groups", choices=["fitted", "new", "average"], default="fitted",
                   help="group effects: the rows' own fitted groups (default), a new group "
                   "integrated over the population, or the average over the fitted groups")
    e.add_argument("--new-group", dest="groups", action="store_const", const="new",
                   help="the same as --groups new")
    e.add_argument("--data", metavar="FILE",
                   help="rows to average over (default: the data the fit was made from, read "
                   "again from its recorded file)")
    _add_interval_args(e)
    e.add_argument("--out", metavar="FILE.csv", help="write the table as CSV")


def _add_poststratify_parser(sub: argparse._SubParsersAction, fmt: Any) -> None:
    s = sub.add_parser(
        "poststratify", formatter_class=fmt, epilog=POSTSTRATIFY_EXAMPLES,
        help="population and subgroup estimates from a saved fit and a population table (MRP)",
    )
    s.add_argument("dir", help="folder written by `poolwise fit --out DIR` (or compare --out: "
                   "its partial-pooling fit)")
    s.add_argument("--population", required=True, metavar="FILE",
                   help="population cells: the model's predictor and group columns and a count "
                   "(CSV, Parquet, a glob or a folder of Parquet files)")
    s.add_argument("--count", default="N", metavar="COL",
                   help="the column of people per cell (default: N)")
    s.add_argument("--by", action="append", default=[], metavar="COL",
                   help="estimate within each level of this column too (repeatable)")
    s.add_argument("--draws", type=int, default=1000, metavar="N",
                   help="posterior draws used at most, thinned evenly (default: 1000)")
    _add_interval_args(s)
    s.add_argument("--out", metavar="FILE.csv", help="write the table as CSV")


def _build_subcommands(sub: argparse._SubParsersAction) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser("fit", help="fit a model and print its summary and diagnostics",
                       epilog=FIT_EXAMPLES, formatter_class=fmt)
    groups: dict[str, Any] = {}
    _add_data_args(p, groups)
    _add_options(p, FIT_OPTIONS, groups)
    groups["checks"].add_argument("--max-attempts", type=int, default=6, metavar="N",
                                  help="the repair budget: fits at most (default: 6)")
    _add_output_args(p, groups, "write fit.nc, summary.csv and result.json into this folder")

    c = sub.add_parser(
        "compare", epilog=COMPARE_EXAMPLES, formatter_class=fmt,
        help="fit complete, no and partial pooling with the same settings and compare them",
    )
    groups = {}
    _add_data_args(c, groups)
    _add_options(c, COMPARE_OPTIONS, groups)
    groups["checks"].add_argument("--max-attempts", type=int, default=6, metavar="N",
                                  help="the repair budget: fits at most, per model (default: 6)")
    _add_output_args(c, groups, "write the three fits, the comparison tables and the narrative "
                     "into this folder")

    r = sub.add_parser("report", help="write the HTML report of a saved fit or comparison")
    r.add_argument(
        "dir", help="folder written by `poolwise fit --out DIR` or `poolwise compare --out DIR`"
    )
    r.add_argument("--output", "-o", help="the HTML file (default: DIR/report.html)")
    r.add_argument("--prob", type=float, default=0.89, help="interval probability (default 0.89)")
    r.add_argument("--interval", choices=["hdi", "eti"], default="hdi",
                   help="highest-density (hdi) or equal-tailed (eti) intervals (default: hdi)")

    _add_effects_parser(sub, fmt)
    _add_poststratify_parser(sub, fmt)

    d = sub.add_parser(
        "diagnose", help="diagnose a saved fit: divergences, R-hat, ESS, E-BFMI, funnels"
    )
    d.add_argument("dir", help="folder written by `poolwise fit --out DIR` (or the fit.nc file)")
    d.add_argument("--plots", metavar="OUT", help="also write diagnostic PNGs into this folder")



PARAMETERIZATIONS = ("auto", "centered", "noncentered")


def _parameterization(items: Sequence[str] | None) -> Any:
    from poolwise.errors import SpecError

    if not items:
        return "auto"
    plain = [it for it in items if "=" not in it]
    per_term = dict(it.split("=", 1) for it in items if "=" in it)
    for value in plain + list(per_term.values()):
        if value.strip() not in PARAMETERIZATIONS:
            raise SpecError(
                f"--parameterization takes {', '.join(PARAMETERIZATIONS)} or GROUP=KIND; "
                f"got {value!r}"
            )
    if plain and per_term or len(plain) > 1:
        raise SpecError(
            "give --parameterization once for every term (e.g. noncentered) or per term as "
            "GROUP=KIND, not both"
        )
    return plain[0].strip() if plain else {k.strip(): v.strip() for k, v in per_term.items()}


def _categorical(args: argparse.Namespace, table: Any) -> Any:
    """The table with the --categorical columns converted."""
    from dataclasses import replace

    import pandas as pd

    from poolwise.errors import DataError, SpecError

    frame = getattr(table, "frame", None)
    if frame is None:  # a file for DuckDB (poolwise.data.ingest.FileSource): no frame to convert
        if args.categorical:
            col = args.categorical[0]
            raise SpecError(
                f"--categorical {col}: {table.path} is read by DuckDB (a glob, a folder or a "
                f"large file), where columns are not converted; write factor({col}) in the "
                "formula instead"
            )
        return table
    for col in args.categorical:
        if col not in frame.columns:
            raise DataError(
                f"--categorical names column '{col}', which is not in the data; columns: "
                + ", ".join(map(str, frame.columns[:20]))
            )
        if not isinstance(frame[col].dtype, pd.CategoricalDtype):
            frame = frame.assign(**{col: pd.Categorical(frame[col])})
    return replace(table, frame=frame) if args.categorical else table


def _reference(items: Sequence[str]) -> dict[str, Any] | None:
    from poolwise.errors import SpecError

    reference: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise SpecError(f"--reference takes COL=LEVEL, e.g. urban=0; got {item!r}")
        col, level = item.split("=", 1)
        reference[col.strip()] = level.strip()
    return reference or None


def _option_values(args: argparse.Namespace, names: Sequence[str]) -> dict[str, Any]:
    """The keyword arguments of poolwise.fit / compare_pooling that the flags of ``names``
    set, with the command line's context-dependent defaults resolved (see OPTIONS)."""
    from poolwise.inference.repair import RepairPolicy

    convert = {
        "reference": lambda: _reference(args.reference),
        "parameterization": lambda: _parameterization(args.parameterization),
        "priors": lambda: _priors(args.prior),
        # nutpie's own bar stays off: the command line shows the progress itself (_reporter)
        "progress": lambda: False,
        "repair": lambda: RepairPolicy(max_attempts=args.max_attempts) if args.repair
        else False,
        # the findings are printed (not with --quiet) or saved; a quiet run that saves nothing
        # prints only the status line, which they never change
        "prior_sensitivity": lambda: (not args.quiet or bool(args.out)
                                      or args.report is not None)
        if args.prior_sensitivity is None else args.prior_sensitivity,
        # stored in the saved fits on request; never printed
        "log_likelihood": lambda: bool(args.log_likelihood and args.out),
        "kind": lambda: args.interval,
        "logo": lambda: {"exact": True, "psis": "psis", "off": False}[args.logo],
    }
    return {name: convert[name]() if name in convert else getattr(args, name)
            for name in names}


def _checked_options(args: argparse.Namespace, formula: str, names: Sequence[str],
                     compare: bool) -> dict[str, Any]:
    """Every option checked (the options table's rules, and those that need the formula)
    before any data are read: an error names the setting and the fix."""
    from poolwise.inference.options import (
        POOLINGS,
        CompareOptions,
        FitOptions,
        check_against_formula,
        check_comparison,
    )

    values = _option_values(args, names)
    fit_keys = {k: v for k, v in values.items() if k in FitOptions.__dataclass_fields__}
    options = FitOptions(**fit_keys)
    extra = {k: v for k, v in values.items() if k in CompareOptions.__dataclass_fields__}
    CompareOptions(**extra, fit=options)
    if compare:
        check_comparison(options)
    check_against_formula(options, formula, poolings=POOLINGS if compare else None)
    return values


def _check_group_flag(formula: str, group: str | None) -> None:
    """compare needs one grouping factor: name the --group flag before anything is fitted."""
    from poolwise.errors import SpecError
    from poolwise.formula import parse_formula

    names = [g.group_name for g in parse_formula(formula).groups if g.intercept]
    if group is None and len(names) > 1:
        raise SpecError(
            f"the formula has several grouping factors ({', '.join(names)}); choose the one to "
            f"compare with --group, e.g. --group {names[0]}"
        )
    if group is not None and names and group not in names:
        raise SpecError(
            f"--group {group}: no group term with a varying intercept for '{group}' in the "
            f"formula; group terms: {', '.join(names)}"
        )


def _add_report_arg(p: Any) -> None:
    p.add_argument(
        "--report", nargs="?", const="", default=None, metavar="FILE",
        help="write a self-contained HTML report (default file: OUT/report.html with --out, "
        "else ./report.html)",
    )


def _report_path(args: argparse.Namespace) -> Path | None:
    if args.report is None:
        return None
    if args.report:
        return Path(args.report)
    return Path(args.out) / "report.html" if args.out else Path("report.html")


def _command_line(argv: Sequence[str] | None) -> str:
    import shlex

    return shlex.join(["poolwise", *(sys.argv[1:] if argv is None else argv)])


def _priors(items: Sequence[str]) -> Any:
    from poolwise.errors import SpecError
    from poolwise.model.priors import Priors, parse_prior

    kwargs: dict[str, Any] = {}
    by_group: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise SpecError(f"--prior takes CLASS=PRIOR, e.g. sd=half_normal(0.5); got {item!r}")
        cls, text = item.split("=", 1)
        cls = cls.strip()
        if cls.startswith("sd_"):
            by_group[cls[3:]] = parse_prior(text)
        elif cls in PRIOR_CLASSES:
            kwargs[cls] = parse_prior(text)
        else:
            raise SpecError(
                f"unknown prior class {cls!r}; use one of {', '.join(PRIOR_CLASSES)} or sd_<group>"
            )
    return Priors(**kwargs, sd_by_group=by_group)


def _source_and_formula(args: argparse.Namespace,
                        parser: argparse.ArgumentParser) -> tuple[Any, str]:
    """Where the data are and the formula, without reading anything yet."""
    from poolwise.data.datasets import EXAMPLES, example_path

    if args.example and args.data:
        parser.error("give either a DATA file or --example, not both")
    if args.example:
        return example_path(args.example), args.formula or EXAMPLES[args.example][1]
    if args.data:
        if not args.formula:
            parser.error("--formula is required with a DATA file")
        return args.data, args.formula
    parser.error("give a DATA file or --example bangladesh")
    raise AssertionError  # parser.error exits


def _read(args: argparse.Namespace, path: Any) -> Any:
    """The data: read by pandas, or (a glob, a folder, a large file) a source that DuckDB
    validates and counts; the --categorical columns converted."""
    from poolwise.data.ingest import FileSource, wants_engine
    from poolwise.data.table import read_table
    from poolwise.progress import phase

    with phase("reading the data"):
        if wants_engine(path):
            return _categorical(args, FileSource(str(path), delimiter=args.delimiter,
                                                 decimal=args.decimal))
        return _categorical(args, read_table(path, delimiter=args.delimiter,
                                             decimal=args.decimal))


#: a group variable with more levels than 2 x this prints only its extremes (the full table
#: is in the CSV)
TOP_K = 10


def _extremes(df: Any, by: str, k: int = TOP_K) -> Any:
    """The ``k`` rows with the lowest and the ``k`` with the highest ``by``, in that order."""
    order = df[by].to_numpy().argsort(kind="stable")
    return df.iloc[list(order[:k]) + list(order[-k:])]


def _print_summary(df: Any, prob: float, kind: str, spec: Any = None,
                   full_table: str | None = None, note: str | None = None) -> None:
    """The summary with significant digits (summary.csv keeps them all) and labels escaped for
    the terminal; with many groups, the population parameters and each group variable's
    extremes only."""
    import pandas as pd

    from poolwise.inference.summary import summary_text
    from poolwise.model.naming import total_name

    big: list[tuple[str, int]] = []
    show = df
    if spec is not None:
        prefix = pd.Index([str(i).partition("[")[0] for i in df.index])
        parts = [df[~prefix.isin([total_name(t, c) for t in spec.terms
                                  for c in t.group.coef_names])]]
        for t in spec.terms:
            for c in t.group.coef_names:
                name = total_name(t, c)
                rows = df[prefix == name]
                if len(rows) > 2 * TOP_K:
                    big.append((name, len(rows)))
                    rows = _extremes(rows, "mean")
                parts.append(rows)
        show = pd.concat(parts)
    print(summary_text(_safe_index(show), prob, kind))
    where = full_table or "save it with --out DIR (summary.csv)"
    for name, n in big:
        print(f"({name}: {n:,} levels; shown are the {TOP_K} lowest and {TOP_K} highest means; "
              f"full table: {where})")
    if note:
        print(f"({note})")


def _status_line(fit: Any) -> str:
    from poolwise.textfmt import fmt_rhat

    d = fit.diagnosis
    verdict = "OK" if fit.ok else "NOT OK - do not trust these estimates"
    rhat = fmt_rhat(d.max_rhat) or "nan"
    if fit.method == "approx":  # no sampler: no divergences; the self-check is in the verdict
        import json

        from poolwise.inference.diagnostics.approx_check import APPROX_ATTR, checked_names

        # only the checks that ran (no quadrature under complete pooling, ...); the importance
        # ESS, not the chain-based R-hat and ESS of resampled (repeated) draws
        checks = ", ".join(checked_names(json.loads(fit.idata.attrs.get(APPROX_ATTR, "{}"))))
        ess = fit.importance_ess_text
        return (f"status: {verdict} | method approx (checked: {checks}) | "
                f"{ess + ' | ' if ess else ''}"
                f"approximation {fit.timings['sampling_s']:.2f} s, "
                f"total {fit.timings['total_s']:.2f} s")
    return (
        f"status: {verdict} | divergences {d.divergences} | max R-hat {rhat} | "
        f"min ESS bulk {d.min_ess_bulk:.0f}, tail {d.min_ess_tail:.0f} | "
        f"sampling {fit.timings['sampling_s']:.2f} s, total {fit.timings['total_s']:.2f} s"
    )


def _fit_header(spec: Any, config: Any, method: str = "nuts") -> list[str]:
    """What a fit will sample, printed before it samples: the model and every prior with the
    scale it applies on, the data (rows -> cells) and its notes, each group term's
    parameterization as asked, the seed and the chains (with ``method="approx"``: the
    method and the draws it makes instead)."""
    from poolwise.output.report import model_lines

    if method == "approx":
        lines = _fit_header(spec, config)[:-1]
        lines = [line for line in lines if not line.startswith("parameterization of (")]
        from poolwise.inference.approx import method_words

        return [*lines, f"method: approx ({method_words(spec.pooling)})",
                _approx_seed_line(config)]

    lines = [f"model: {spec.formula.text}   pooling: {spec.pooling}   link: {spec.link}"
             + (f"   family: {spec.family}" if spec.family != "binomial" else "")]
    lines += [f"  {line}" for line in model_lines(spec)]
    lines += _data_lines(spec)
    for t in spec.terms:
        how = ("auto (decided before sampling, from the data or a short pilot run)"
               if t.requested == "auto" else t.parameterization)
        lines.append(f"parameterization of ({t.name}): {how}")
    return [*lines, _seed_line(config)]


def _compare_header(spec: Any, config: Any, method: str = "nuts") -> list[str]:
    """The header of a comparison, printed when its first fit is ready to sample (with
    ``method="approx"``: the method, and the draws each fit makes)."""
    groups = [g.group_name for g in spec.formula.groups if g.intercept]  # complete pooling
    group = spec.terms[0].group.name if spec.terms else (groups[0] if groups else "?")
    lines = [f"model: {spec.formula.text}   compared: complete, no and partial pooling of "
             f"'{group}'"]
    if method == "approx":
        return [*lines, *_data_lines(spec), "method: approx (each of the three models: the "
                "fixed effects, and the group SD of partial pooling, by importance sampling "
                "from their exact marginal posterior, each group's effect by quadrature and "
                "exact draws; each fit checks itself)", _approx_seed_line(config)]
    return [*lines, *_data_lines(spec), _seed_line(config)]


def _approx_seed_line(config: Any) -> str:
    return f"seed: {config.seed}   draws: {config.chains} x {config.draws} independent"


def _data_lines(spec: Any) -> list[str]:
    d = spec.design
    short = _shortener(spec) if d.notes else None
    weights = [] if d.weighting is None else [d.weighting.describe()]
    return [f"data: {d.source} ({d.n_rows:,} rows -> {d.n_cells:,} binomial cells)",
            *weights, *(f"note: {short.text(note)}" for note in d.notes)]


def _seed_line(config: Any) -> str:
    return (f"seed: {config.seed}   chains: {config.chains} x ({config.tune} tune + "
            f"{config.draws} draws)")


def _reporter(args: argparse.Namespace) -> Any:
    """What the command shows while it works (:mod:`poolwise.progress`): nothing with --quiet;
    else the header of a fit or comparison (standard output) before it samples and, unless
    --no-progress, the phases and the sampler's progress on standard error: a live line in a
    terminal, plain lines (every 10% or 10 s of sampling) in a file or a pipe."""
    from poolwise import progress

    if getattr(args, "quiet", False):
        return None
    header = {"fit": _fit_header, "compare": _compare_header}.get(args.command)
    if header is not None and getattr(args, "method", "nuts") == "approx":
        header = functools.partial(header, method="approx")
    if getattr(args, "progress", None) is False:
        return (progress.HeaderReporter(sys.stderr, header=header, header_stream=sys.stdout)
                if header is not None else None)
    live = sys.stderr.isatty()
    kind = progress.LiveReporter if live else progress.LineReporter
    return kind(sys.stderr, header=header, header_stream=sys.stdout)


def _cmd_fit(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    with contextlib.ExitStack() as stack:
        outputs = _prepare_outputs(args, stack)
        return _run_fit(args, parser, outputs)


def _run_fit(args: argparse.Namespace, parser: argparse.ArgumentParser, outputs: Any) -> int:
    import poolwise
    from poolwise.errors import ConvergenceWarning

    path, formula = _source_and_formula(args, parser)
    kw = _checked_options(args, formula, FIT_OPTIONS, compare=False)  # before reading data
    table = _read(args, path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = poolwise.fit(formula, table, **{k: v for k, v in kw.items()
                                              if k not in ("prob", "kind")})
    short = _shortener(fit.spec)
    for w in caught:
        if not issubclass(w.category, ConvergenceWarning):
            print(f"warning: {short.text(str(w.message))}", file=sys.stderr)
    from poolwise.inference.fitted import with_command

    fit = with_command(fit, args.command_line)  # saved with the fit: how to reproduce it
    if not args.quiet:  # the header was printed before sampling (_fit_header)
        for term, par in fit.spec.parameterization_by_term().items():
            if fit.method == "approx":
                break  # no sampler: no parameterization
            if next(t for t in fit.spec.terms if t.name == term).requested == "auto":
                print(f"parameterization of ({term}): {par} (auto)")
        print()
        from poolwise.inference.summary import independent_draws_note

        _print_summary(fit.summary(prob=args.prob, kind=args.interval), args.prob, args.interval,
                       fit.spec, str(Path(args.out) / "summary.csv") if args.out else None,
                       independent_draws_note(fit))
        if fit.nuts_check is not None:  # --check: the comparison with a short NUTS run
            print("\n".join(fit.nuts_check.lines()))
        print()
        from poolwise.inference.display import restates_a_note

        for f in fit.diagnosis.findings:
            if restates_a_note(f, fit.spec.design.notes):
                continue  # the all-0 / all-1 levels: printed once, as the data note above
            print(f"{f.severity}: {short.text(f.message)}")
        _print_journal(fit.repair_log, short)
    print(_status_line(fit))

    def save(where: Path, extra: Any) -> list[Path]:
        return list(poolwise.save_fit(fit, where, extra=extra).values())

    def report(path: Path) -> None:
        _write_report_file(path, fit, command=args.command_line, prob=args.prob,
                           kind=args.interval)

    def needed() -> int:
        from poolwise.output.io import estimate_fit_bytes

        return estimate_fit_bytes(fit)

    code = _save_outputs(outputs, save, report, what="fit", needed=needed)
    return code if code is not None else (EXIT_OK if fit.ok else EXIT_NOT_OK)


def _cmd_compare(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    with contextlib.ExitStack() as stack:
        outputs = _prepare_outputs(args, stack)
        return _run_compare(args, parser, outputs)


def _run_compare(args: argparse.Namespace, parser: argparse.ArgumentParser, outputs: Any) -> int:
    import textwrap

    import pandas as pd

    from poolwise.comparison.logo import MODEL_NAMES
    from poolwise.comparison.pooling import compare_pooling
    from poolwise.errors import ConvergenceWarning

    path, formula = _source_and_formula(args, parser)
    kw = _checked_options(args, formula, COMPARE_OPTIONS, compare=True)  # before reading data
    _check_group_flag(formula, args.group)
    table = _read(args, path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        comp = compare_pooling(formula, table, **kw)
    short = _shortener(comp.main_fit.spec)
    for w in caught:
        tag = "warning" if not issubclass(w.category, ConvergenceWarning) else "NOT OK"
        print(f"{tag}: {short.text(str(w.message))}", file=sys.stderr)
    from dataclasses import replace

    from poolwise.inference.fitted import with_command

    # saved with each fit: how to reproduce its draws
    comp = replace(comp, fits={k: with_command(f, args.command_line)
                               for k, f in comp.fits.items()})
    from poolwise.inference.summary import interval_of
    from poolwise.textfmt import fmt_sig

    g = comp.groups
    pct = f"{100 * comp.prob:g}%"
    if not args.quiet:
        show = g[["n", "successes", "raw_proportion", "none_p_mean", "partial_p_mean",
                  "shift_p", "none_sd", "partial_sd", "shrinkage", "boundary"]].astype(
            {"n": int, "successes": int}).rename(
            columns={"raw_proportion": "raw", "none_p_mean": "p_none",
                     "partial_p_mean": "p_partial",
                     "shift_p": "shift", "none_sd": "sd_none", "partial_sd": "sd_partial"})
        many = len(show) > 2 * TOP_K
        if many:  # the full table is pooling_groups.csv
            show = _extremes(show, "p_partial")
        with pd.option_context("display.max_rows", 500, "display.width", 120):
            print(_label_index(show).to_string(float_format=fmt_sig))
            if many:
                where = (str(Path(args.out) / "pooling_groups.csv") if args.out
                         else "save it with --out DIR (pooling_groups.csv)")
                print(f"({len(g):,} groups; shown are the {TOP_K} lowest and {TOP_K} highest "
                      f"p_partial; full table: {where})")
            print(f"\n(p: predicted proportion; sd: posterior SD of the log-odds; intervals "
                  f"{pct} {comp.kind.upper()} are in the report and pooling_groups.csv: "
                  f"{', '.join(interval_of(g, 'partial_p_'))}, ...)\n")
            pop = comp.population[["model", "scale", "mean", *interval_of(comp.population)]]
            print(pop.to_string(float_format=fmt_sig, na_rep=""))
            if comp.loo is not None:
                print(f"\nPSIS-LOO, per row (a new observation in an existing "
                      f"{comp.group})")
                loo = comp.loo[["elpd", "se", "elpd_diff", "dse", "p", "pareto_k_bad"]]
                print(loo.to_string(float_format=lambda v: f"{v:.1f}"))
            if comp.logo is not None:
                how = ("exact refits" if comp.logo.exact
                       else "PSIS-LOGO, refits where Pareto k > 0.7")
                print(f"\nleave-one-group-out, per new {comp.group} (group; {how}; the "
                      f"{comp.group}'s own intercept integrated over its prior / population)")
                lg = comp.logo.table[["elpd", "se", "elpd_diff", "dse", "n_refit",
                                      "pareto_k_max", "n_bad_k"]].rename(index=MODEL_NAMES)
                print(lg.to_string(float_format=lambda v: f"{v:.2f}"))
            if comp.kfold is not None:
                print(f"\ngrouped {comp.kfold.k}-fold cross-validation, per new {comp.group} "
                      f"(folds of {comp.group}s stratified by size, each refitted)")
                kf = comp.kfold.table[["elpd", "se", "elpd_diff", "dse"]].rename(
                    index=MODEL_NAMES)
                print(kf.to_string(float_format=lambda v: f"{v:.2f}"))
        print()
        for para in comp.narrative:
            print(textwrap.fill(short.text(para), width=100))
            print()
    def save(where: Path, extra: Any) -> list[Path]:
        from poolwise.output.io import save_comparison

        return list(save_comparison(comp, where, extra=extra).values())

    def report(path: Path) -> None:
        _write_report_file(path, comp, command=args.command_line)

    def needed() -> int:
        from poolwise.output.io import estimate_comparison_bytes

        return estimate_comparison_bytes(comp)

    code = _save_outputs(outputs, save, report, what="comparison", needed=needed)
    if code is not None:
        return code
    status = "OK" if comp.ok else "NOT OK - a fit did not pass its diagnostics"
    # the method that made the draws, where it is not the sampler (--method approx)
    how = f"method {comp.method} | " if comp.method != "nuts" else ""
    print(f"status: {status} | {how}" + " | ".join(
        f"{k}: {'ok' if f.ok else 'NOT OK'}" for k, f in comp.fits.items()
    ))
    return EXIT_OK if comp.ok else EXIT_NOT_OK


def _saved_fit(folder: str) -> Any:
    """The fit of a result folder (a comparison's partial-pooling fit)."""
    from poolwise.output.io import load_result

    kind, loaded = load_result(folder)
    return loaded if kind == "fit" else loaded["partial"]


def _print_table(df: Any, out: str | None) -> None:
    """A result table: printed with significant digits and escaped labels, saved in full
    (with spreadsheet-safe text cells) to ``out``."""
    import pandas as pd

    from poolwise.textfmt import fmt_sig

    with pd.option_context("display.max_rows", 200, "display.width", 140):
        print(_label_cells(df).to_string(index=False, float_format=fmt_sig))
    for note in df.attrs.get("notes", ()):
        print(f"note: {note}")
    if out:
        from poolwise.output.store import check_output_file, safe_csv

        path = check_output_file(Path(out), option="--out")
        safe_csv(df, path, index=False)
        print(f"wrote {path}")


def _cmd_effects(args: argparse.Namespace) -> int:
    from poolwise.comparison.effects import comparisons, predictions, slopes

    fit = _saved_fit(args.dir)
    if args.out:
        from poolwise.output.store import check_output_file

        check_output_file(Path(args.out), option="--out")
    newdata = None if args.data is None else _read_data_file(args.data)
    by = args.by or None
    kw = {"by": by, "groups": args.groups, "prob": args.prob, "kind": args.interval}
    enc = fit.spec.design.encoding
    names = args.variable or [v.label for v in (enc.variables if enc else ())]
    if args.predictions:
        df = predictions(fit, newdata, **{**kw, "by": by or True})
    elif args.slopes:
        numeric = [v.label for v in enc.variables if v.kind == "numeric"] if enc else []
        df = slopes(fit, args.variable or numeric, newdata, **kw)
    else:
        if not names:
            from poolwise.errors import SpecError

            raise SpecError("the model has no predictor to compare; --predictions gives the "
                            "average predicted probability")
        df = comparisons(fit, names, newdata, **kw)
    print(f"model: {fit.spec.formula.text}   groups: {df.attrs['groups']}")
    _print_table(df, args.out)
    return EXIT_OK


def _read_data_file(path: str) -> Any:
    from poolwise.data.table import read_table

    return read_table(path).frame


def _cmd_poststratify(args: argparse.Namespace) -> int:
    from poolwise.comparison.poststratify import poststratify

    fit = _saved_fit(args.dir)
    if args.out:
        from poolwise.output.store import check_output_file

        check_output_file(Path(args.out), option="--out")
    df = poststratify(fit, args.population, count=args.count, by=args.by or None,
                      prob=args.prob, kind=args.interval, draws=args.draws)
    print(f"model: {fit.spec.formula.text}   population: {args.population}")
    _print_table(df, args.out)
    return EXIT_OK


def _cmd_report(args: argparse.Namespace) -> int:
    from poolwise.comparison.pooling import compare_fits
    from poolwise.errors import StoreError
    from poolwise.output.io import load_comparison, load_result
    from poolwise.output.store import check_output_file, read_manifest, result_root, update_folder
    from poolwise.progress import phase

    src = Path(args.dir)
    if not src.exists():
        raise StoreError(f"{src} does not exist; give a folder written by `poolwise fit --out` "
                         "or `poolwise compare --out`")
    src_abs = src.resolve()
    # the result folder that holds src: src itself, or the folder of a fit.nc given directly
    folder = None
    if src.is_dir() and src.suffix != ".zarr":
        folder = src_abs
    elif result_root(src_abs.parent) == src_abs.parent:
        folder = src_abs.parent
    if args.output:
        out = Path(args.output)
    elif folder is not None:
        out = folder / "report.html"
    else:
        out = src.with_suffix(".html")
    in_place = folder is not None and out.resolve() == folder / "report.html"
    if not in_place:
        check_output_file(out, option="--output")
    _watch(args, folder if in_place else out)
    # a comparison: its fits compared again (LOO, leave-one-group-out), its grouped K-fold
    # read back from the folder (its refits are not run again)
    manifest = read_manifest(folder) if folder is not None else None
    if folder is not None and manifest is not None and manifest["kind"] == "comparison":
        result = load_comparison(folder, prob=args.prob, kind=args.interval)
    else:
        kind, loaded = load_result(folder if folder is not None else src)
        result = loaded if kind == "fit" else compare_fits(loaded, prob=args.prob,
                                                           kind=args.interval)
    # the footer shows the command that made the fit (saved with it) and this one, which
    # rebuilt the report from the folder
    kw = {"command": args.command_line, "prob": args.prob, "kind": args.interval,
          "rebuilt_from": str(folder if folder is not None else src)}
    try:
        if in_place:
            assert folder is not None
            with update_folder(folder) as staged, phase("the report"):
                _write_report_file(staged / "report.html", result, **kw)
        else:
            with phase("the report"):
                _write_report_file(out, result, **kw)
    except OSError as err:
        raise StoreError(f"cannot write the report '{out}': {err.strerror or err}") from None
    print(f"wrote {out}")
    return EXIT_OK


def _prepare_outputs(args: argparse.Namespace, stack: contextlib.ExitStack) -> Any:
    """Check --out and --report before any work (exit 3 on a problem), and hold the write
    lock of --out until the command ends, so a second writer fails at once."""
    from poolwise.output.store import check_output_file, check_output_folder, lock_folder

    out = check_output_folder(args.out, option="--out") if args.out else None
    report = _report_path(args)
    rel = None
    if report is not None:
        report = check_output_file(report, option="--report", allow_in=out)
        if out is not None and out in report.parents:
            rel = report.relative_to(out).as_posix()
    if out is not None:
        stack.enter_context(lock_folder(out))
    for path in (out, report if rel is None else None):
        if path is not None:
            _watch(args, path)
    return out, report, rel


def _watch(args: argparse.Namespace, path: Path) -> None:
    """Remember what ``path`` holds now, so that an interrupt can say whether it was written."""
    args.watched.append((Path(path), _state(Path(path))))


def _state(path: Path) -> Any:
    """What a file or result folder holds, cheaply: its manifest's bytes (a result folder), its
    entries' sizes and times (another folder), its identity and size (a file), or None."""
    import os

    from poolwise.output.store import MANIFEST

    try:
        if path.is_dir():
            if (path / MANIFEST).is_file():
                return (path / MANIFEST).read_bytes()
            return sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns)
                          for p in path.iterdir())
        st = os.stat(path)
        return (st.st_ino, st.st_size, st.st_mtime_ns)
    except OSError:
        return None


def _interrupted(err: BaseException, args: argparse.Namespace | None, debug: bool) -> int:
    """The one line for an interrupt (Ctrl-C, SIGTERM, a sampler that stopped early): in which
    phase it stopped the run and what, if anything, had been written; exit 130 or 143."""
    import signal

    from poolwise.errors import Interrupted, interrupted_phases

    if debug:
        import traceback

        traceback.print_exception(err, file=sys.stderr)
    signum = err.signum if isinstance(err, Interrupted) else signal.SIGINT
    phases = interrupted_phases(err)
    where = ""
    if phases:
        where = f" during {phases[0]}" + (f" ({', '.join(phases[1:])})" if phases[1:] else "")
    why = "terminated (SIGTERM)" if signum == signal.SIGTERM else "interrupted"
    detail = str(err) if isinstance(err, Interrupted) and signum == signal.SIGINT else ""
    written = [str(p) for p, before in (args.watched if args is not None else [])
               if _state(p) != before]
    done = (f"{' and '.join(repr(w) for w in written)} had been written before it" if written
            else "nothing was written")
    print(f"{why}{where}{': ' + detail if detail else ''}; {done}", file=sys.stderr)
    return EXIT_TERMINATED if signum == signal.SIGTERM else EXIT_INTERRUPTED


def _save_outputs(outputs: Any, save: Any, report: Any, *, what: str,
                  needed: Any = lambda: 0) -> int | None:
    """Write the result folder (with the report inside it when --report points there) and
    the report. An output that fails now (a full disk included) never loses the finished
    result: it is saved to a new folder that can hold it (``needed()``: its size in bytes),
    which the error line names. Returns EXIT_INPUT then, else None."""
    from poolwise.errors import PoolwiseError
    from poolwise.progress import phase

    out, report_path, rel = outputs
    saved = False
    if out is not None:
        try:
            with phase("saving"):
                paths = save(out, {rel: report} if rel else None)
            print(f"wrote {', '.join(str(p) for p in paths)}"
                  + (f", {out / rel}" if rel else ""))
            saved = True
        except (PoolwiseError, OSError) as err:
            return _fallback(save, err, out, what, needed)
    if report_path is not None and rel is None:
        try:
            with phase("the report"):
                report(report_path)
            print(f"wrote {report_path}")
        except (PoolwiseError, OSError) as err:
            if not saved:
                return _fallback(save, err, report_path, what, needed)
            reason = getattr(err, "strerror", None) or err
            print(f"error: cannot write the report '{report_path}': {reason}; the {what} "
                  f"was saved to '{out}'", file=sys.stderr)
            return EXIT_INPUT
    return None


def _fallback(save: Any, err: BaseException, failed: Path, what: str,
              needed: Any = lambda: 0) -> int:
    """Save the finished result to a new folder in the first of the fallback places (the
    current directory, the temporary directory) that has room for it and takes the write;
    the error line names it, or says why each place failed."""
    import shutil

    from poolwise.output.store import fallback_bases, fallback_folder
    from poolwise.progress import phase

    reason = getattr(err, "strerror", None) or err
    tried = []
    with phase("saving"):
        try:
            size = int(needed())
        except Exception:  # noqa: BLE001 - an estimate only; the write is checked anyway
            size = 0
        for base in fallback_bases():
            try:
                where = fallback_folder(f"poolwise-{what}", needed=size, base=base)
            except Exception as err2:  # noqa: BLE001 - say why, try the next place
                tried.extend(getattr(err2, "reasons", None) or [f"'{base}': {err2}"])
                continue
            try:
                save(where, None)
            except BaseException as err2:
                shutil.rmtree(where, ignore_errors=True)  # the new folder only
                if not isinstance(err2, Exception):  # an interrupt: stop here
                    raise
                tried.append(f"'{base}': {getattr(err2, 'strerror', None) or err2}")
                continue
            print(f"error: cannot write '{failed}' ({reason}); the finished {what} was saved "
                  f"to '{where}' instead", file=sys.stderr)
            return EXIT_INPUT
    print(f"error: cannot write '{failed}' ({reason}), and no other folder could hold the "
          f"finished {what} either ({'; '.join(tried) or 'none found'}); free some disk space "
          "and run it again", file=sys.stderr)
    return EXIT_INPUT


def _write_report_file(path: Path, result: Any, **kw: Any) -> None:
    """The HTML report, written beside its place and renamed in (never half-written)."""
    import os

    from poolwise.output.report import write_report

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.poolwise-tmp-{os.getpid()}{path.suffix}")
    try:
        write_report(tmp, result, **kw)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _print_journal(log: Any, short: Any) -> None:
    """The repair journal (a RepairLog, fresh or loaded); nothing for a fit without one.
    ``short``: shortens the long labels it names (:func:`_shortener`)."""
    from poolwise.inference.repair import RepairLog

    lines = log.journal() if isinstance(log, RepairLog) else []
    if lines:
        print("\nrepair journal:")
        for line in lines:
            print(f"  {short.text(line)}")


def _cmd_diagnose(args: argparse.Namespace) -> int:
    from poolwise.errors import StoreError
    from poolwise.inference.diagnostics import diagnose
    from poolwise.output.io import load_fit
    from poolwise.output.store import check_output_dir

    plots = check_output_dir(args.plots, option="--plots") if args.plots else None
    if plots is not None:
        _watch(args, plots)
    fit = load_fit(args.dir)
    d = diagnose(fit)
    print(f"model: {fit.spec.formula.text}   pooling: {fit.spec.pooling}")
    for term, par in fit.spec.parameterization_by_term().items():
        if fit.method != "approx":  # no sampler: no parameterization
            print(f"parameterization of ({term}): {par}")
    if fit.method == "approx":
        print(f"method: approx: {d.chains} x {d.draws} independent draws (no sampler: no "
              "divergences, E-BFMI or tree depth)\nits self-check:")
        for name, state, value, need in d.approx_checks or ():
            if state == "info":  # a check that does not apply to this model: it did not run
                print(f"  N/A   {name}: not applicable: {need}")
            else:
                print(f"  {state.upper()}  {name}: {value}; needed {need}")
        print("\n".join([*(fit.nuts_check.lines() if fit.nuts_check else []), ""]))
    else:
        _print_chains(d)
    short = _shortener(fit.spec)
    for f in d.findings:
        print(f"{f.severity}: {short.text(f.message)}")
    if not d.findings:
        print("no problems found")
    _print_journal(fit.repair_log, short)
    if plots is not None:
        from poolwise.output.plots import diagnostic_figures

        out = Path(args.plots)
        try:
            out.mkdir(parents=True, exist_ok=True)
            for name, fig in diagnostic_figures(fit).items():
                fig.savefig(out / f"{name}.png", dpi=100)
                print(f"wrote {out / f'{name}.png'}")
        except OSError as err:
            raise StoreError(f"cannot write the plots into '{out}': {err.strerror or err}; "
                             "choose a folder you can write to") from None
    from poolwise.textfmt import fmt_rhat

    verdict = "OK" if d.ok else "NOT OK - do not trust these estimates"
    ess_b = "nan" if d.min_ess_bulk != d.min_ess_bulk else f"{d.min_ess_bulk:.0f}"
    ess_t = "nan" if d.min_ess_tail != d.min_ess_tail else f"{d.min_ess_tail:.0f}"
    rhat = fmt_rhat(d.max_rhat) or "nan"
    if fit.method == "approx":  # as fit's status line: the importance ESS
        ess = fit.importance_ess_text
        print(f"status: {verdict} | method approx{' | ' + ess if ess else ''}")
    else:
        print(f"status: {verdict} | divergences {d.divergences} | max R-hat {rhat} | "
              f"min ESS bulk {ess_b}, tail {ess_t}")
    return EXIT_OK if d.ok else EXIT_NOT_OK


def _print_chains(d: Any) -> None:
    """The sampler's numbers per chain (the diagnose command)."""
    print(f"chains: {d.chains} x {d.draws} draws   target_accept: {d.target_accept}\n")
    print("chain  divergences        E-BFMI  max-depth  accept")
    for i in range(d.chains):
        div = d.divergences_per_chain[i] if i < len(d.divergences_per_chain) else 0
        pct = 100.0 * div / d.draws if d.draws else 0.0
        bf = f"{d.bfmi[i]:.2f}" if i < len(d.bfmi) else "-"
        sat = f"{100 * d.treedepth_saturation[i]:.1f}%" if i < len(d.treedepth_saturation) else "-"
        acc = f"{d.accept_per_chain[i]:.2f}" if i < len(d.accept_per_chain) else "-"
        print(f"{i:>5}  {div:>5} ({pct:5.1f}%)  {bf:>7}  {sat:>9}  {acc:>6}")
    print()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code. Called without ``argv`` (the console
    script, ``python -m poolwise.cli``) it is the whole program and ends the process itself
    (:func:`_end_process`)."""
    if argv is None:
        _program_start()
    code = _run(argv)
    if argv is None:
        _end_process(code)
    return code


def _program_start() -> None:
    """The command line is the whole program: what is loaded now (poolwise and the libraries
    it imports, about a million objects) stays for the rest of the process, so it is moved out
    of the cyclic garbage collector's reach (``gc.freeze``), which would otherwise traverse it
    again in every full collection of the run."""
    import gc

    gc.freeze()


def _end_process(code: int) -> None:
    """End the process with ``code`` once the command is done, without the interpreter's
    teardown.

    The command has closed what it wrote (the result folder is complete and its files
    closed; a temporary trace folder is removed by the sampler), so what is left at exit is
    the interpreter taking apart the 2,000 modules the run imported (numba, xarray, pandas,
    h5py, ...): 0.3-0.5 s on a quiet 2-core machine, a tenth of the bundled example's whole
    run, which nobody waits for on purpose. So the exit functions registered with
    :mod:`atexit` run (logging's flush, weakref finalizers), the standard streams are
    flushed, and the process ends with ``os._exit``. Not while a non-daemon thread is still
    running (the interpreter would wait for it), nor under a tracer, a profiler or any
    ``sys.monitoring`` tool (``python -m cProfile``, coverage), which write their results at
    the interpreter's exit; the function then returns and the interpreter exits as usual."""
    import atexit
    import os
    import threading

    if sys.gettrace() is not None or sys.getprofile() is not None:
        return
    if any(sys.monitoring.get_tool(i) is not None for i in range(6)):
        return
    main_thread = threading.main_thread()
    if any(t is not main_thread and t.is_alive() and not t.daemon
           for t in threading.enumerate()):
        return
    atexit._run_exitfuncs()  # noqa: SLF001 - what the interpreter's exit would run first
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        with contextlib.suppress(Exception):  # a closed stream or a gone reader
            if stream is not None:
                stream.flush()
    os._exit(code)


def _run(argv: Sequence[str] | None) -> int:
    stdout, stderr = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _SafeStream(stdout), _SafeStream(stderr)
    try:
        with _sigterm_stops():
            code = _main(argv)
        sys.stdout.flush()
        return code
    except KeyboardInterrupt as err:  # while the arguments were parsed
        return _interrupted(err, None, debug=False)
    except BrokenPipeError:
        # the reader went away (`poolwise diagnose D | head -1`): stop quietly, as Unix tools
        # do, and keep Python from complaining again when it flushes stdout at exit
        import os

        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, stdout.fileno())
        return EXIT_NOT_OK
    finally:
        sys.stdout, sys.stderr = stdout, stderr


@contextlib.contextmanager
def _sigterm_stops() -> Any:
    """SIGTERM (``kill``, a scheduler's stop) stops the run as Ctrl-C does (an
    :class:`~poolwise.errors.Interrupted`: locks and temporary folders are removed, nothing
    half-written stays, exit 143) instead of killing the process on the spot. Only the main
    thread can set a handler; the previous one is restored."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        from poolwise.errors import Interrupted

        raise Interrupted("terminated (SIGTERM)", signum=signum)

    before = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before if before is not None else signal.SIG_DFL)


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.command_line = _command_line(argv)
    args.watched = []
    logging.getLogger("poolwise").setLevel(logging.DEBUG if args.debug else logging.WARNING)
    logging.basicConfig(level=logging.WARNING,
                        format="%(levelname)s: %(message)s")
    from poolwise.errors import DataError, FormulaError, SamplingError, SpecError
    from poolwise.progress import reporting

    try:
        with reporting(_reporter(args)):
            return _dispatch(args, parser)
    except (DataError, FormulaError, SpecError) as err:
        if args.debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        return EXIT_INPUT
    except SamplingError as err:
        if args.debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        return EXIT_NOT_OK
    except MemoryError:
        if args.debug:
            raise
        print("error: out of memory; reduce --draws or --chains, or add --no-log-likelihood",
              file=sys.stderr)
        return EXIT_INPUT
    except KeyboardInterrupt as err:  # Ctrl-C, SIGTERM (_sigterm_stops), a partial trace
        return _interrupted(err, args, debug=args.debug)


def _dispatch(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    commands = {"fit": _cmd_fit, "compare": _cmd_compare}
    if args.command in commands:
        return commands[args.command](args, parser)
    simple = {"diagnose": _cmd_diagnose, "report": _cmd_report, "effects": _cmd_effects,
              "poststratify": _cmd_poststratify}
    if args.command in simple:
        return simple[args.command](args)
    parser.error(f"unknown command {args.command}")
    return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
