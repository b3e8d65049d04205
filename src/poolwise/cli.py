"""Command line: ``poolwise fit ...``. The only place that prints, configures logging or sets
exit codes. Exit codes: 0 fit ok, 1 fit not ok (diagnostics failed), 2 usage error,
3 data / formula / settings error."""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from collections.abc import Sequence
from typing import Any

EXIT_OK, EXIT_NOT_OK, EXIT_USAGE, EXIT_INPUT = 0, 1, 2, 3

PRIOR_CLASSES = ("intercept", "b", "sd", "cor", "unpooled")


def _add_sampler_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("sampler")
    g.add_argument("--chains", type=int, default=4)
    g.add_argument("--tune", type=int, default=1000)
    g.add_argument("--draws", type=int, default=1000)
    g.add_argument("--target-accept", type=float, default=0.8)
    g.add_argument("--max-treedepth", type=int, default=10)
    g.add_argument("--seed", type=int, default=None, help="random seed (default: drawn and recorded)")
    g.add_argument("--cores", type=int, default=None)


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", nargs="?", help="CSV / TSV / Parquet file")
    p.add_argument("--example", choices=["bangladesh"], help="use bundled example data")
    p.add_argument("--formula", "-f", help="lme4/brms formula, e.g. 'y ~ 1 + (1 | g)'")
    p.add_argument("--link", choices=["logit", "probit", "cloglog"], default="logit")
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
    return parser


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
        )
    for w in caught:
        if not issubclass(w.category, ConvergenceWarning):
            print(f"warning: {w.message}", file=sys.stderr)
    if not args.quiet:
        print(f"model: {fit.spec.formula.text}   pooling: {fit.spec.pooling}   link: {fit.spec.link}")
        print(f"data: {fit.spec.design.source} ({fit.spec.design.n_rows} rows -> "
              f"{fit.spec.design.n_cells} binomial cells)")
        for term, par in fit.spec.parameterization_by_term().items():
            print(f"parameterization of ({term}): {par}")
        print(f"seed: {fit.config.seed}   chains: {fit.config.chains} x "
              f"({fit.config.tune} tune + {fit.config.draws} draws)\n")
        _print_summary(fit.summary(prob=args.prob, kind=args.interval), args.prob, args.interval)
        print()
        for f in fit.diagnosis.findings:
            print(f"{f.severity}: {f.message}")
    print(_status_line(fit))
    if args.out:
        paths = poolwise.save_fit(fit, args.out)
        print(f"wrote {', '.join(str(p) for p in paths.values())}")
    return EXIT_OK if fit.ok else EXIT_NOT_OK


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        format="%(levelname)s: %(message)s")
    from poolwise.errors import DataError, FormulaError, SamplingError, SpecError

    try:
        if args.command == "fit":
            return _cmd_fit(args, parser)
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
