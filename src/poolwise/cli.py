"""Command line: ``poolwise fit ...``. The only place that prints, configures logging or sets
exit codes. Exit codes: 0 fit ok, 1 fit not ok (diagnostics failed), 2 usage error,
3 data / formula / settings error."""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from poolwise import links

EXIT_OK, EXIT_NOT_OK, EXIT_USAGE, EXIT_INPUT = 0, 1, 2, 3

PRIOR_CLASSES = ("intercept", "b", "sd", "cor", "unpooled")


def _add_sampler_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("sampler")
    g.add_argument("--chains", type=int, default=4)
    g.add_argument("--tune", type=int, default=1000)
    g.add_argument("--draws", type=int, default=1000)
    g.add_argument(
        "--target-accept", type=float, default=None,
        help="default 0.8, or 0.95 / 0.99 when the auto parameterization predicts a funnel",
    )
    g.add_argument("--max-treedepth", type=int, default=10)
    g.add_argument("--seed", type=int, default=None, help="random seed (default: drawn and recorded)")
    g.add_argument("--cores", type=int, default=None)


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", nargs="?", help="CSV / TSV / Parquet file")
    p.add_argument("--example", choices=["bangladesh"], help="use bundled example data")
    p.add_argument("--formula", "-f", help="lme4/brms formula, e.g. 'y ~ 1 + (1 | g)'")
    p.add_argument("--link", choices=links.names(), default=links.names()[0])
    p.add_argument(
        "--prior",
        action="append",
        default=[],
        metavar="CLASS=PRIOR",
        help="e.g. sd=half_normal(0.5), intercept='normal(0, 1.5)', sd_district=exponential(2)",
    )
    p.add_argument("--success", help="the outcome value that counts as a success (e.g. yes)")
    p.add_argument("--drop-missing", action="store_true", help="drop rows with missing model values")
    p.add_argument("--delimiter", help="CSV delimiter (default: detected)")
    p.add_argument("--decimal", default=".", help="decimal mark in CSV numbers")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="poolwise", description="Bayesian multilevel binomial regression."
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)
    _build_subcommands(sub)
    for subparser in sub.choices.values():  # --debug works after the subcommand too
        subparser.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks"
        )
    return parser


def _build_subcommands(sub: argparse._SubParsersAction) -> None:

    p = sub.add_parser("fit", help="fit a model and print its summary and diagnostics")
    _add_model_args(p)
    p.add_argument("--pooling", choices=["partial", "none", "complete"], default="partial")
    p.add_argument(
        "--parameterization", choices=["auto", "centered", "noncentered"], default="auto"
    )
    _add_sampler_args(p)
    p.add_argument("--out", help="write fit.nc, summary.csv and result.json into this folder")
    p.add_argument("--prob", type=float, default=0.89, help="interval probability (default 0.89)")
    p.add_argument("--interval", choices=["hdi", "eti"], default="hdi")
    p.add_argument("--quiet", "-q", action="store_true", help="print only the status line")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument(
        "--repair", action=argparse.BooleanOptionalAction, default=True,
        help="re-fit a failing model with remedies (non-center, target_accept, tuning)",
    )
    p.add_argument("--max-attempts", type=int, default=6, help="repair budget (fits, default 6)")
    _add_report_arg(p)

    c = sub.add_parser(
        "compare",
        help="fit complete, no and partial pooling with the same settings and compare them",
    )
    _add_model_args(c)
    c.add_argument("--group", help="grouping factor to compare (default: the only one)")
    c.add_argument(
        "--parameterization", choices=["auto", "centered", "noncentered"], default="auto"
    )
    _add_sampler_args(c)
    c.add_argument("--out", help="write the three fits, the comparison tables and the narrative")
    c.add_argument("--prob", type=float, default=0.89, help="interval probability (default 0.89)")
    c.add_argument("--interval", choices=["hdi", "eti"], default="hdi")
    c.add_argument("--quiet", "-q", action="store_true", help="print only the status line")
    c.add_argument(
        "--repair", action=argparse.BooleanOptionalAction, default=True,
        help="re-fit a failing model with remedies (non-center, target_accept, tuning)",
    )
    c.add_argument("--max-attempts", type=int, default=6, help="repair budget (fits, default 6)")
    _add_report_arg(c)

    r = sub.add_parser("report", help="write the HTML report of a saved fit or comparison")
    r.add_argument(
        "dir", help="folder written by `poolwise fit --out DIR` or `poolwise compare --out DIR`"
    )
    r.add_argument("--output", "-o", help="the HTML file (default: DIR/report.html)")
    r.add_argument("--prob", type=float, default=0.89, help="interval probability (default 0.89)")
    r.add_argument("--interval", choices=["hdi", "eti"], default="hdi")

    d = sub.add_parser(
        "diagnose", help="diagnose a saved fit: divergences, R-hat, ESS, E-BFMI, funnels"
    )
    d.add_argument("dir", help="folder written by `poolwise fit --out DIR` (or the fit.nc file)")
    d.add_argument("--plots", metavar="OUT", help="also write diagnostic PNGs into this folder")


def _add_report_arg(p: argparse.ArgumentParser) -> None:
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
    from poolwise.priors import Priors, parse_prior

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


def _data_and_formula(args: argparse.Namespace, parser: argparse.ArgumentParser) -> tuple[Any, str]:
    from poolwise.data import read_table
    from poolwise.datasets import EXAMPLES, example_path

    if args.example and args.data:
        parser.error("give either a DATA file or --example, not both")
    if args.example:
        path = example_path(args.example)
        formula = args.formula or EXAMPLES[args.example][1]
    elif args.data:
        path = args.data
        if not args.formula:
            parser.error("--formula is required with a DATA file")
        formula = args.formula
    else:
        parser.error("give a DATA file or --example bangladesh")
    from poolwise.ingest import FileSource, wants_engine

    if wants_engine(path):  # a glob, a folder or a large file: validated and counted by DuckDB
        return FileSource(str(path), delimiter=args.delimiter, decimal=args.decimal), formula
    return read_table(path, delimiter=args.delimiter, decimal=args.decimal), formula


def _print_summary(df: Any, prob: float, kind: str) -> None:
    import pandas as pd

    cols = ["mean", "sd", "lower", "upper", "ess_bulk", "ess_tail", "r_hat", "n", "raw_proportion"]
    show = df[cols].copy()
    pct = f"{100 * prob:g}%"
    show = show.rename(columns={"lower": f"{kind}_{pct}_lo", "upper": f"{kind}_{pct}_hi",
                                "raw_proportion": "raw_prop"})
    with pd.option_context("display.max_rows", 500, "display.width", 120):
        print(show.to_string(float_format=lambda v: f"{v:.3f}", na_rep=""))


def _status_line(fit: Any) -> str:
    d = fit.diagnosis
    verdict = "OK" if fit.ok else "NOT OK - do not trust these estimates"
    return (
        f"status: {verdict} | divergences {d.divergences} | max R-hat {d.max_rhat:.3f} | "
        f"min ESS bulk {d.min_ess_bulk:.0f}, tail {d.min_ess_tail:.0f} | "
        f"sampling {fit.timings['sampling_s']:.2f} s, total {fit.timings['total_s']:.2f} s"
    )


def _cmd_fit(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    import poolwise
    from poolwise.errors import ConvergenceWarning
    from poolwise.repair import RepairPolicy

    table, formula = _data_and_formula(args, parser)
    priors = _priors(args.prior)
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = poolwise.fit(
            formula, table, pooling=args.pooling, parameterization=args.parameterization,
            priors=priors, link=args.link, success=args.success, drop_missing=args.drop_missing,
            chains=args.chains, tune=args.tune, draws=args.draws, seed=args.seed,
            target_accept=args.target_accept, max_treedepth=args.max_treedepth,
            cores=args.cores, progress=progress,
            repair=RepairPolicy(max_attempts=args.max_attempts) if args.repair else False,
        )
    for w in caught:
        if not issubclass(w.category, ConvergenceWarning):
            print(f"warning: {w.message}", file=sys.stderr)
    if not args.quiet:
        print(f"model: {fit.spec.formula.text}   pooling: {fit.spec.pooling}   link: {fit.spec.link}")
        print(f"data: {fit.spec.design.source} ({fit.spec.design.n_rows} rows -> "
              f"{fit.spec.design.n_cells} binomial cells)")
        for note in fit.spec.design.notes:
            print(f"note: {note}")
        for term, par in fit.spec.parameterization_by_term().items():
            print(f"parameterization of ({term}): {par}")
        print(f"seed: {fit.config.seed}   chains: {fit.config.chains} x "
              f"({fit.config.tune} tune + {fit.config.draws} draws)\n")
        _print_summary(fit.summary(prob=args.prob, kind=args.interval), args.prob, args.interval)
        print()
        for f in fit.diagnosis.findings:
            print(f"{f.severity}: {f.message}")
        _print_journal(fit.repair_log)
    print(_status_line(fit))
    if args.out:
        paths = poolwise.save_fit(fit, args.out)
        print(f"wrote {', '.join(str(p) for p in paths.values())}")
    report = _report_path(args)
    if report is not None:
        from poolwise.report import write_report

        write_report(report, fit, command=args.command_line, prob=args.prob, kind=args.interval)
        print(f"wrote {report}")
    return EXIT_OK if fit.ok else EXIT_NOT_OK


def _cmd_compare(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    import textwrap

    import pandas as pd

    from poolwise.errors import ConvergenceWarning
    from poolwise.pooling import compare_pooling
    from poolwise.repair import RepairPolicy

    table, formula = _data_and_formula(args, parser)
    priors = _priors(args.prior)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        comp = compare_pooling(
            formula, table, group=args.group, priors=priors, link=args.link,
            parameterization=args.parameterization, success=args.success,
            drop_missing=args.drop_missing, chains=args.chains, tune=args.tune,
            draws=args.draws, seed=args.seed, target_accept=args.target_accept,
            max_treedepth=args.max_treedepth, cores=args.cores,
            repair=RepairPolicy(max_attempts=args.max_attempts) if args.repair else False,
            prob=args.prob, kind=args.interval,
        )
    for w in caught:
        tag = "warning" if not issubclass(w.category, ConvergenceWarning) else "NOT OK"
        print(f"{tag}: {w.message}", file=sys.stderr)
    g = comp.groups
    pct = f"{100 * comp.prob:g}%"
    if not args.quiet:
        print(f"model: {comp.formula}   compared: complete, no and partial pooling of "
              f"'{comp.group}'")
        print(f"seed: {comp.main_fit.config.seed}   chains: {comp.main_fit.config.chains} x "
              f"({comp.main_fit.config.tune} tune + {comp.main_fit.config.draws} draws)\n")
        show = g[["n", "successes", "raw_proportion", "none_p_mean", "partial_p_mean",
                  "shift_p", "none_sd", "partial_sd", "shrinkage", "boundary"]].astype(
            {"n": int, "successes": int}).rename(
            columns={"raw_proportion": "raw", "none_p_mean": "p_none",
                     "partial_p_mean": "p_partial",
                     "shift_p": "shift", "none_sd": "sd_none", "partial_sd": "sd_partial"})
        with pd.option_context("display.max_rows", 500, "display.width", 120):
            print(show.to_string(float_format=lambda v: f"{v:.3f}"))
            print(f"\n(p: predicted proportion; sd: posterior SD of the log-odds; intervals "
                  f"{pct} {comp.kind.upper()} are in the report and the CSV files)\n")
            pop = comp.population[["model", "scale", "mean", "lower", "upper"]]
            print(pop.to_string(float_format=lambda v: f"{v:.3f}", na_rep=""))
            if comp.loo is not None:
                print(f"\nPSIS-LOO, predictive unit: {comp.loo_unit}")
                loo = comp.loo[["elpd", "se", "elpd_diff", "dse", "p", "pareto_k_bad"]]
                print(loo.to_string(float_format=lambda v: f"{v:.1f}"))
        print()
        for para in comp.narrative:
            print(textwrap.fill(para, width=100))
            print()
    if args.out:
        from poolwise.io import save_fit

        out = Path(args.out)
        for key, f in comp.fits.items():
            save_fit(f, out / key)
        g.to_csv(out / "pooling_groups.csv", index_label=comp.group)
        comp.population.to_csv(out / "pooling_population.csv")
        if comp.loo is not None:
            comp.loo.to_csv(out / "pooling_loo.csv")
        (out / "narrative.txt").write_text("\n\n".join(comp.narrative) + "\n", encoding="utf-8")
        print(f"wrote {', '.join(str(out / k) for k in comp.fits)} (fits), "
              f"{out / 'pooling_groups.csv'}, {out / 'pooling_population.csv'}, "
              f"{out / 'narrative.txt'}")
    report = _report_path(args)
    if report is not None:
        from poolwise.report import write_report

        write_report(report, comp, command=args.command_line)
        print(f"wrote {report}")
    status = "OK" if comp.ok else "NOT OK - a fit did not pass its diagnostics"
    print(f"status: {status} | " + " | ".join(
        f"{k}: {'ok' if f.ok else 'NOT OK'}" for k, f in comp.fits.items()
    ))
    return EXIT_OK if comp.ok else EXIT_NOT_OK


def _cmd_report(args: argparse.Namespace) -> int:
    from poolwise.errors import DataError
    from poolwise.io import load_fit
    from poolwise.pooling import POOLINGS, compare_fits
    from poolwise.report import write_report

    folder = Path(args.dir)
    if not folder.exists():
        raise DataError(f"{folder} does not exist; give a folder written by `poolwise fit --out` "
                        "or `poolwise compare --out`")
    subs = [k for k in POOLINGS if (folder / k).is_dir()]
    result: Any
    if {"none", "partial"} <= set(subs):
        fits = {k: load_fit(folder / k) for k in subs}
        result = compare_fits(fits, prob=args.prob, kind=args.interval)
    else:
        result = load_fit(folder)
    out = Path(args.output) if args.output else (
        folder / "report.html" if folder.is_dir() else folder.with_suffix(".html")
    )
    write_report(out, result, command=args.command_line, prob=args.prob, kind=args.interval)
    print(f"wrote {out}")
    return EXIT_OK


def _print_journal(log: Any) -> None:
    """The repair journal (a RepairLog, fresh or loaded); nothing for a fit without one."""
    from poolwise.repair import RepairLog

    lines = log.journal() if isinstance(log, RepairLog) else []
    if lines:
        print("\nrepair journal:")
        for line in lines:
            print(f"  {line}")


def _cmd_diagnose(args: argparse.Namespace) -> int:
    from poolwise.diagnostics import diagnose
    from poolwise.io import load_fit

    fit = load_fit(args.dir)
    d = diagnose(fit)
    print(f"model: {fit.spec.formula.text}   pooling: {fit.spec.pooling}")
    for term, par in fit.spec.parameterization_by_term().items():
        print(f"parameterization of ({term}): {par}")
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
    for f in d.findings:
        print(f"{f.severity}: {f.message}")
    if not d.findings:
        print("no problems found")
    _print_journal(fit.repair_log)
    if args.plots:
        from poolwise.plots import diagnostic_figures

        out = Path(args.plots)
        out.mkdir(parents=True, exist_ok=True)
        for name, fig in diagnostic_figures(fit).items():
            fig.savefig(out / f"{name}.png", dpi=100)
            print(f"wrote {out / f'{name}.png'}")
    verdict = "OK" if d.ok else "NOT OK - do not trust these estimates"
    ess_b = "nan" if d.min_ess_bulk != d.min_ess_bulk else f"{d.min_ess_bulk:.0f}"
    ess_t = "nan" if d.min_ess_tail != d.min_ess_tail else f"{d.min_ess_tail:.0f}"
    print(f"status: {verdict} | divergences {d.divergences} | max R-hat {d.max_rhat:.3f} | "
          f"min ESS bulk {ess_b}, tail {ess_t}")
    return EXIT_OK if d.ok else EXIT_NOT_OK


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.command_line = _command_line(argv)
    logging.getLogger("poolwise").setLevel(logging.DEBUG if args.debug else logging.WARNING)
    logging.basicConfig(level=logging.WARNING,
                        format="%(levelname)s: %(message)s")
    from poolwise.errors import DataError, FormulaError, SamplingError, SpecError

    try:
        if args.command == "fit":
            return _cmd_fit(args, parser)
        if args.command == "diagnose":
            return _cmd_diagnose(args)
        if args.command == "compare":
            return _cmd_compare(args, parser)
        if args.command == "report":
            return _cmd_report(args)
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
    parser.error(f"unknown command {args.command}")
    return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
