"""docs/reliability.md section 7: every bad input gets the specified error or warning, before any
sampling. One parametrized case per row of the table (some rows have several cases).

Nothing here samples: for error cases ``run_nuts`` is replaced by a spy that fails the test;
for warning / note / accepted cases it is replaced by a fake that returns random draws of the
right shape (and ``diagnose`` by a stub), so the whole ``poolwise.fit`` pipeline runs and the
test can check that the warning texts end up in ``Fit.warnings``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import poolwise
import poolwise.engine.sampler as sampler_module
import poolwise.inference.plan as planning
import poolwise.resources as resources
from poolwise.data import validate
from poolwise.data.table import read_table
from poolwise.data.validate import check_design, check_model_data
from poolwise.errors import DataError, DataWarning, FormulaError, SpecError
from poolwise.formula import parse_formula
from poolwise.inference.diagnostics import Diagnosis
from poolwise.model.priors import Priors, flat, normal

# sample_spec calls run_nuts
sampling_module = importlib.import_module("poolwise.inference.sampling")

N = 120  # rows of the base data set (bad rows 4, 17, 90 exist)
FIT_DEFAULTS: dict[str, Any] = {
    "chains": 4,
    "draws": 100,
    "tune": 10,
    "seed": 1,
    "log_likelihood": False,
    "parameterization": "noncentered",  # no pilot run: one call of the (fake) sampler
}


# -- sampler stand-ins -------------------------------------------------------------------


def forbid_sampler(monkeypatch: pytest.MonkeyPatch) -> None:
    def spy(*args: Any, **kwargs: Any) -> Any:
        pytest.fail("the sampler was called for input that should have been rejected")

    monkeypatch.setattr(sampler_module, "run_nuts", spy)
    monkeypatch.setattr(sampling_module, "run_nuts", spy)


def fake_sampler(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Random draws of the right shape instead of NUTS; returns the list of configs seen."""
    seen: list[Any] = []

    def fake_run_nuts(packed: Any, config: Any) -> tuple[xr.DataTree, float]:
        seen.append(config)
        rng = np.random.default_rng(0)
        C, D = config.chains, config.draws
        data = {}
        for v in packed.variables:
            shape = (C, D, v.size) if v.dims else (C, D)
            draws = rng.normal(size=shape)
            if v.kind == "sd":
                draws = np.abs(draws)
            if v.kind == "cor":
                draws = np.tanh(draws)
            data[v.name] = (("chain", "draw", *v.dims), draws)
        coords = {"chain": np.arange(C), "draw": np.arange(D)}
        coords.update({k: np.asarray(vals) for k, vals in packed.coords.items()})
        post = xr.Dataset(data, coords={k: v for k, v in coords.items()})
        stats = xr.Dataset(
            {"diverging": (("chain", "draw"), np.zeros((C, D), dtype=bool))},
            coords={"chain": np.arange(C), "draw": np.arange(D)},
        )
        return xr.DataTree.from_dict({"posterior": post, "sample_stats": stats}), 0.0

    def fake_diagnose(tree: Any, **kwargs: Any) -> Diagnosis:
        """A clean diagnosis (the real one is tested elsewhere and needs real draws)."""
        post = tree["posterior"].to_dataset()
        target_accept = kwargs.get("target_accept")
        return Diagnosis(
            chains=post.sizes["chain"],
            draws=post.sizes["draw"],
            divergences=0,
            divergences_per_chain=(),
            max_rhat=1.0,
            min_ess_bulk=1e3,
            min_ess_tail=1e3,
            bfmi=(),
            treedepth_saturation=(),
            mean_accept=0.8,
            target_accept=target_accept,
        )

    monkeypatch.setattr(sampler_module, "run_nuts", fake_run_nuts)
    monkeypatch.setattr(sampling_module, "run_nuts", fake_run_nuts)
    monkeypatch.setattr(sampling_module, "diagnose", fake_diagnose)
    return seen


# -- data builders -----------------------------------------------------------------------


def base(n: int = N, groups: int = 8) -> pd.DataFrame:
    """y alternates within every group; x does not separate y; g has labels 1..groups."""
    i = np.arange(n)
    return pd.DataFrame(
        {
            "y": ((i // groups) % 2).astype(np.int64),
            "x": np.round(2 * np.sin(i), 3),
            "g": (i % groups + 1).astype(np.int64),
        }
    )


def binom(n: int = N) -> pd.DataFrame:
    i = np.arange(n)
    return pd.DataFrame(
        {
            "s": (i % 4).astype(np.int64),
            "k": np.full(n, 5, dtype=np.int64),
            "x": np.round(2 * np.sin(i), 3),
            "g": (i % 8 + 1).astype(np.int64),
        }
    )


def with_values(
    df: pd.DataFrame, col: str, rows: list[int], values: list[Any], dtype: Any = None
) -> pd.DataFrame:
    """Set 1-based ``rows`` of ``col`` to ``values`` (casting the column first)."""
    df = df.copy()
    if dtype is not None:
        df[col] = df[col].astype(dtype)
    idx = [r - 1 for r in rows]
    df.loc[idx, col] = values
    return df


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def csv_text(df: pd.DataFrame, sep: str = ",") -> str:
    return df.to_csv(index=False, sep=sep)


@dataclass
class Ctx:
    tmp: Path
    n: int
    monkeypatch: pytest.MonkeyPatch


@dataclass
class Lazy:
    """A keyword value built inside the ``pytest.raises`` block (its construction may raise)."""

    make: Callable[[], Any]


Builder = Callable[[Ctx], tuple[str, Any, dict[str, Any]]]
FORM = "y ~ x + (1 | g)"


@dataclass
class Case:
    row: int
    name: str
    build: Builder
    kind: str  # "error", "warning", "note", "ok"
    contains: tuple[str, ...] = ()
    exc: type[Exception] | None = None
    check: Callable[[Any], None] | None = None
    scalable: bool = False  # a frame with the bad value in the first rows: part of the 100k guard
    warned_first: bool = False  # an error found after the data warnings (priors, settings)

    @property
    def id(self) -> str:
        return f"row{self.row:02d}-{self.name}"


def _(formula: str, data: Any, **kw: Any) -> tuple[str, Any, dict[str, Any]]:
    return formula, data, kw


def _labels_of(fit: Any, group: str = "g") -> list[Any]:
    (g,) = [t.group for t in fit.spec.terms if t.name == group]
    return list(g.labels.tolist())


def _bangladesh_like(c: Ctx) -> pd.DataFrame:
    labels = [lab for lab in range(1, 62) if lab != 54]
    i = np.arange(max(c.n, 4 * len(labels)))
    return pd.DataFrame(
        {
            "y": ((i // len(labels)) % 2).astype(np.int64),
            "x": np.round(np.sin(i), 3),
            "district": np.array(labels)[i % len(labels)],
        }
    )


def _groups_constant(c: Ctx) -> pd.DataFrame:
    # group 3: 2 obs, both 1; groups 11 and 49: all 0; groups 1, 2, 4, 5: mixed
    rows = [(3, 1), (3, 1)] + [(11, 0)] * 5 + [(49, 0)] * 4
    rows += [(lab, k % 2) for k in range(max(c.n - len(rows), 16)) for lab in (1, 2, 4, 5)][
        : max(c.n - len(rows), 16)
    ]
    df = pd.DataFrame(rows, columns=["g", "y"])
    df["x"] = np.round(np.sin(np.arange(len(df))), 3)
    return df


def _separated(c: Ctx) -> pd.DataFrame:
    df = base(c.n)
    df["x"] = np.where(df["y"] == 1, 0.5, 0.0) + (np.arange(c.n) % 7) / 100
    return df


def _r_write_table(c: Ctx) -> Path:
    """R's write.table(): quoted header without a field for the row names."""
    df = base(c.n)
    lines = ['"y","x","g"'] + [
        f'"{i + 1}",{r.y},{r.x},{r.g}' for i, r in enumerate(df.itertuples(index=False))
    ]
    return write(c.tmp / "r.csv", "\n".join(lines) + "\n")


def _too_small_memory(c: Ctx) -> tuple[str, Any, dict[str, Any]]:
    c.monkeypatch.setattr(planning, "available_memory_bytes", lambda: 100_000)
    return _(FORM, base(c.n), log_likelihood=True)


def _unused_levels(c: Ctx) -> pd.DataFrame:
    df = base(c.n, groups=6)
    df["g"] = pd.Categorical(df["g"], categories=list(range(1, 9)))
    return df


CASES: list[Case] = [
    # 1 file missing or unreadable
    Case(
        1,
        "missing-file",
        lambda c: _(FORM, c.tmp / "nope.csv"),
        "error",
        exc=DataError,
        contains=("cannot read data file", "nope.csv", "No such file or directory"),
    ),
    Case(
        1,
        "unreadable-directory",
        lambda c: _(FORM, c.tmp),
        "error",
        exc=DataError,
        contains=("cannot read data file", "a folder with no data files"),
    ),
    Case(
        1,
        "corrupt-parquet",
        lambda c: _(FORM, write(c.tmp / "d.parquet", "not parquet")),
        "error",
        exc=DataError,
        contains=("cannot read data file", "d.parquet"),
    ),
    # 2 empty file, header only, 0 rows
    Case(
        2,
        "empty-file",
        lambda c: _(FORM, write(c.tmp / "e.csv", "")),
        "error",
        exc=DataError,
        contains=("data has no observations (0 rows)", "e.csv"),
    ),
    Case(
        2,
        "header-only",
        lambda c: _(FORM, write(c.tmp / "h.csv", "y,x,g\n")),
        "error",
        exc=DataError,
        contains=("data has no observations (0 rows)", "h.csv"),
    ),
    Case(
        2,
        "zero-row-frame",
        lambda c: _(FORM, base(c.n).iloc[:0]),
        "error",
        exc=DataError,
        contains=("data has no observations (0 rows)",),
    ),
    # 3 wrong delimiter
    Case(
        3,
        "semicolon-read-as-comma",
        lambda c: _(
            FORM, read_table(write(c.tmp / "s.csv", csv_text(base(c.n), ";")), delimiter=",")
        ),
        "error",
        exc=DataError,
        contains=(
            "read 1 column 'y;x;g'",
            "needs columns y, x, g",
            "';'-delimited",
            "delimiter=';'",
            "read with delimiter ','",
        ),
    ),
    Case(
        3,
        "one-column-frame",
        lambda c: _(FORM, pd.read_csv(write(c.tmp / "s.csv", csv_text(base(c.n), ";")))),
        "error",
        exc=DataError,
        contains=("read 1 column 'y;x;g'", "delimiter=';'"),
    ),
    # 4 R row names
    Case(
        4,
        "row-name-column",
        lambda c: _(FORM, _r_write_table(c)),
        "note",
        contains=("first column treated as row names (header has 3 fields, rows have 4)",),
        check=lambda fit: (fit.spec.design.n_rows == N) or pytest.fail("rows lost"),
    ),
    Case(
        4,
        "row-longer-than-header",
        lambda c: _(FORM, write(c.tmp / "r.csv", "y,x,g\n1,0.5,1\n0,0.2,2,9,9\n")),
        "error",
        exc=DataError,
        contains=("header has 3 fields", "data row 2 has 5"),
    ),
    # 5 missing values in a model column
    Case(
        5,
        "na-in-predictor",
        lambda c: _(
            FORM,
            write(
                c.tmp / "m.csv",
                csv_text(with_values(base(c.n), "x", [4, 17, 90], [np.nan, np.nan, np.nan])),
            ),
        ),
        "error",
        exc=DataError,
        contains=("column 'x' has 3 missing values (rows 4, 17, 90)", "drop_missing=True"),
    ),
    Case(
        5,
        "na-tokens-NA-empty-dot",
        lambda c: _(
            FORM, write(c.tmp / "m.csv", "y,x,g\n1,NA,1\n0,,2\n1,.,3\n0,NaN,4\n1,0.5,5\n0,0.1,1\n")
        ),
        "error",
        exc=DataError,
        contains=("column 'x' has 4 missing values (rows 1, 2, 3, 4)",),
    ),
    Case(
        5,
        "na-frame",
        lambda c: _(FORM, with_values(base(c.n), "x", [4, 17, 90], [np.nan] * 3)),
        "error",
        exc=DataError,
        scalable=True,
        contains=("column 'x' has 3 missing values (rows 4, 17, 90)",),
    ),
    Case(
        5,
        "drop-missing",
        lambda c: _(
            FORM, with_values(base(c.n), "x", [4, 17, 90], [np.nan] * 3), drop_missing=True
        ),
        "warning",
        scalable=True,
        contains=("dropped 3 of", "rows with missing values in x (rows 4, 17, 90)"),
        check=lambda fit: (
            (
                fit.spec.design.n_rows == N - 3
                and 4 not in fit.spec.design.row_number.tolist()
                and 5 in fit.spec.design.row_number.tolist()
            )
            or pytest.fail("wrong rows dropped")
        ),
    ),
    # 6 NA in columns the model does not use
    Case(
        6,
        "na-in-unused-column",
        lambda c: _(FORM, base(c.n).assign(w=np.where(np.arange(c.n) % 10 == 0, np.nan, 1.0))),
        "note",
        contains=("ignored column 'w' (12 missing values, not used by the model)",),
        check=lambda fit: (fit.spec.design.n_rows == N) or pytest.fail("rows dropped"),
    ),
    # 7 unknown column
    Case(
        7,
        "unknown-column",
        lambda c: _("y ~ x + (1 | distrcit)", base(c.n).rename(columns={"g": "district"})),
        "error",
        exc=FormulaError,
        contains=(
            "column 'distrcit' not found",
            "did you mean 'district'?",
            "available: y, x, district",
        ),
    ),
    # 8 Bernoulli outcome outside {0, 1}
    Case(
        8,
        "outcome-not-01",
        lambda c: _(
            FORM, with_values(base(c.n), "y", [2, 3, 5, 7], [2.0, 3.0, -1.0, 0.5], dtype=float)
        ),
        "error",
        exc=DataError,
        scalable=True,
        contains=(
            "outcome 'y' must be 0/1 for a Bernoulli model",
            "{2, 3, -1, 0.5}",
            "rows 2, 3, 5, 7",
            "'successes/trials'",
        ),
    ),
    Case(
        8,
        "outcome-all-half",
        lambda c: _(FORM, base(c.n).assign(y=0.5)),
        "error",
        exc=DataError,
        contains=("outcome 'y' must be 0/1", "{0.5}", "rows 1, 2, 3, 4, 5 and"),
    ),
    # 9 two values need success=
    Case(
        9,
        "coded-1-2",
        lambda c: _(FORM, base(c.n).assign(y=base(c.n)["y"] + 1)),
        "error",
        exc=DataError,
        scalable=True,
        contains=("outcome 'y' has two values {1, 2}", "success=2", "2 in rows 9, 10, 11"),
    ),
    Case(
        9,
        "coded-5-7",
        lambda c: _(FORM, base(c.n).assign(y=np.where(base(c.n)["y"] == 1, 7, 5))),
        "error",
        exc=DataError,
        contains=("outcome 'y' has two values {5, 7}", "success=7"),
    ),
    Case(
        9,
        "yes-no",
        lambda c: _(FORM, base(c.n).assign(y=np.where(base(c.n)["y"] == 1, "yes", "no"))),
        "error",
        exc=DataError,
        scalable=True,
        contains=(
            "outcome 'y' has two values {'no', 'yes'}",
            "success='no'",
            "success='yes'",
            "'yes' in rows 9, 10, 11",
        ),
    ),
    Case(
        9,
        "yes-no-with-success",
        lambda c: _(
            FORM, base(c.n).assign(y=np.where(base(c.n)["y"] == 1, "yes", "no")), success="yes"
        ),
        "ok",
        check=lambda fit: np.testing.assert_array_equal(fit.spec.design.row_y, base()["y"]),
    ),
    Case(
        9,
        "numeric-success-from-cli-text",
        lambda c: _(FORM, base(c.n).assign(y=base(c.n)["y"] + 1), success="2"),
        "ok",
        check=lambda fit: np.testing.assert_array_equal(fit.spec.design.row_y, base()["y"]),
    ),
    Case(
        9,
        "bool-accepted",
        lambda c: _(FORM, base(c.n).assign(y=base(c.n)["y"] == 1)),
        "ok",
        check=lambda fit: np.testing.assert_array_equal(fit.spec.design.row_y, base()["y"]),
    ),
    Case(
        9,
        "success-not-a-value",
        lambda c: _(
            FORM, base(c.n).assign(y=np.where(base(c.n)["y"] == 1, "yes", "no")), success="Yes"
        ),
        "error",
        exc=DataError,
        contains=("success='Yes' is not a value of outcome 'y'", "{'no', 'yes'}"),
    ),
    # 10 three or more levels
    Case(
        10,
        "three-levels",
        lambda c: _(FORM, base(c.n).assign(y=np.array(["a", "b", "c"])[np.arange(c.n) % 3])),
        "error",
        exc=DataError,
        scalable=True,
        contains=(
            "outcome 'y' has 3 levels {'a', 'b', 'c'}",
            "a Bernoulli model needs exactly 2",
            "'c' in rows 3, 6, 9",
        ),
    ),
    # 11 constant outcome overall
    Case(
        11,
        "all-zero",
        lambda c: _(FORM, base(c.n).assign(y=0)),
        "warning",
        scalable=True,
        contains=("outcome 'y' is 0 in all 120 rows", "determined by the priors"),
    ),
    Case(
        11,
        "all-one",
        lambda c: _(FORM, base(c.n).assign(y=1)),
        "warning",
        contains=("outcome 'y' is 1 in all 120 rows",),
    ),
    Case(
        11,
        "all-zero-flat-intercept",
        lambda c: _(FORM, base(c.n).assign(y=0), priors=Priors(intercept=flat())),
        "error",
        exc=SpecError,
        warned_first=True,
        contains=("flat prior with a constant outcome", "'y'"),
    ),
    # 12 constant within groups (info in the result)
    Case(
        12,
        "groups-all-0-or-1",
        lambda c: _(FORM, _groups_constant(c)),
        "note",
        contains=(
            "groups 11 (5 obs), 49 (4 obs) have all 0",
            "group 3 (2 obs) has all 1",
            "maximum-likelihood estimates are infinite",
        ),
    ),
    # 13 successes > trials
    Case(
        13,
        "successes-exceed-trials",
        lambda c: _("s | trials(k) ~ x + (1 | g)", with_values(binom(c.n), "s", [5, 9], [7, 7])),
        "error",
        exc=DataError,
        scalable=True,
        contains=("successes exceed trials in 2 rows (rows 5, 9: 7 > 5, 7 > 5)", "'s'", "'k'"),
    ),
    # 14 negative counts
    Case(
        14,
        "negative-successes",
        lambda c: _("s | trials(k) ~ x + (1 | g)", with_values(binom(c.n), "s", [1], [-1])),
        "error",
        exc=DataError,
        scalable=True,
        contains=("successes must be >= 0", "column 's' has {-1} (row 1)"),
    ),
    Case(
        14,
        "negative-trials",
        lambda c: _("s | trials(k) ~ x + (1 | g)", with_values(binom(c.n), "k", [1, 3], [-2, -5])),
        "error",
        exc=DataError,
        contains=("trials must be >= 0", "column 'k' has {-2, -5} (rows 1, 3)"),
    ),
    Case(
        14,
        "negative-failures",
        lambda c: _("cbind(s, k) ~ x + (1 | g)", with_values(binom(c.n), "k", [2], [-1])),
        "error",
        exc=DataError,
        contains=("failures must be >= 0", "column 'k' has {-1} (row 2)"),
    ),
    # 15 non-integer counts; 3.0 accepted
    Case(
        15,
        "fractional-successes",
        lambda c: _(
            "s | trials(k) ~ x + (1 | g)", with_values(binom(c.n), "s", [1], [2.5], dtype=float)
        ),
        "error",
        exc=DataError,
        scalable=True,
        contains=("successes must be whole numbers", "column 's' has {2.5} (row 1)"),
    ),
    Case(
        15,
        "integral-floats-accepted",
        lambda c: _("s | trials(k) ~ x + (1 | g)", binom(c.n).astype({"s": float, "k": float})),
        "ok",
        check=lambda fit: np.testing.assert_array_equal(fit.spec.design.row_y, binom()["s"]),
    ),
    # 16 trials = 0 rows: dropped, with a warning
    Case(
        16,
        "zero-trials",
        lambda c: _(
            "s | trials(k) ~ x + (1 | g)",
            with_values(binom(c.n), "k", [4, 9], [0, 0]).pipe(
                lambda d: with_values(d, "s", [4, 9], [0, 0])
            ),
        ),
        "warning",
        scalable=True,
        contains=(
            "2 rows have trials = 0 (rows 4, 9) and contribute no information",
            "they were dropped",
        ),
        check=lambda fit: (fit.spec.design.n_rows == N - 2) or pytest.fail("not dropped"),
    ),
    # 17 binomial without a trials column
    Case(
        17,
        "counts-without-trials",
        lambda c: _("s ~ x + (1 | g)", binom(c.n)),
        "error",
        exc=DataError,
        scalable=True,
        contains=(
            "outcome 's' must be 0/1",
            "{2, 3}",
            "rows 3, 4, 7",
            "a binomial model needs a trials column",
            "'s | trials(n) ~ ...'",
        ),
    ),
    # 18 infinities
    Case(
        18,
        "inf-in-predictor",
        lambda c: _(FORM, with_values(base(c.n), "x", [2, 5], [np.inf, -np.inf])),
        "error",
        exc=DataError,
        scalable=True,
        contains=("column 'x' has infinite values {inf, -inf} (rows 2, 5)",),
    ),
    Case(
        18,
        "inf-in-csv",
        lambda c: _(FORM, write(c.tmp / "i.csv", "y,x,g\n1,0.5,1\n0,Inf,2\n1,0.1,3\n0,0.2,1\n")),
        "error",
        exc=DataError,
        contains=("column 'x' has infinite values {inf} (row 2)",),
    ),
    Case(
        18,
        "inf-in-trials",
        lambda c: _(
            "s | trials(k) ~ x + (1 | g)", with_values(binom(c.n), "k", [3], [np.inf], dtype=float)
        ),
        "error",
        exc=DataError,
        contains=("column 'k' has infinite values {inf} (row 3)",),
    ),
    # 19 text in a numeric column
    Case(
        19,
        "decimal-comma-in-frame",
        lambda c: _(FORM, with_values(base(c.n), "x", [8], ["1,5"], dtype=object)),
        "error",
        exc=DataError,
        scalable=True,
        contains=(
            "column 'x' must be numeric",
            "could not parse {'1,5'} (row 8)",
            "decimal comma? pass decimal=','",
        ),
    ),
    Case(
        19,
        "decimal-comma-file",
        lambda c: _(FORM, write(c.tmp / "d.csv", "y;x;g\n1;1,5;1\n0;2,25;2\n1;3;1\n0;0,5;2\n")),
        "error",
        exc=DataError,
        contains=(
            "column 'x' must be numeric",
            "'1,5', '2,25', '0,5'",
            "rows 1, 2, 4",
            "decimal=','",
        ),
    ),
    Case(
        19,
        "text-in-counts",
        lambda c: _(
            "s | trials(k) ~ x + (1 | g)",
            with_values(binom(c.n), "s", [6], ["three"], dtype=object),
        ),
        "error",
        exc=DataError,
        contains=("column 's' must be numeric", "{'three'} (row 6)"),
    ),
    Case(
        19,
        "text-in-mostly-numeric-predictor",
        lambda c: _(FORM, with_values(base(c.n), "x", [3, 50], ["unknown", "?"], dtype=object)),
        "error",
        exc=DataError,
        scalable=True,
        contains=("column 'x' must be numeric", "could not parse {'unknown', '?'} (rows 3, 50)"),
    ),
    # 20 constant predictor
    Case(
        20,
        "constant-predictor",
        lambda c: _("y ~ x + c + (1 | g)", base(c.n).assign(c=1)),
        "error",
        exc=DataError,
        scalable=True,
        contains=(
            "predictor 'c' is constant (value 1 in all 120 rows)",
            "collinear with the intercept",
        ),
    ),
    Case(
        20,
        "one-level-factor",
        lambda c: _("y ~ x + c + (1 | g)", base(c.n).assign(c="a")),
        "error",
        exc=DataError,
        contains=("predictor 'c' is constant (value 'a' in all 120 rows)",),
    ),
    # 21 exactly collinear predictors
    Case(
        21,
        "collinear-pair",
        lambda c: _("y ~ x + x2 + (1 | g)", base(c.n).assign(x2=lambda d: 2 * d["x"])),
        "error",
        exc=DataError,
        scalable=True,
        contains=("predictors 'x' and 'x2' are perfectly collinear (rank 2 < 3)",),
    ),
    Case(
        21,
        "collinear-three",
        lambda c: _(
            "y ~ x + z + w + (1 | g)",
            base(c.n).assign(z=lambda d: np.cos(np.arange(c.n)), w=lambda d: d["x"] + d["z"]),
        ),
        "error",
        exc=DataError,
        contains=("predictors 'x', 'z' and 'w' are linearly dependent (rank 3 < 4)",),
    ),
    # 22 separation
    Case(
        22,
        "separation",
        lambda c: _(FORM, _separated(c)),
        "warning",
        scalable=True,
        contains=(
            "predictor 'x' perfectly separates the outcome",
            "all y=1 when x >= 0.5",
            "identified only by its prior",
        ),
    ),
    Case(
        22,
        "separation-flat-prior",
        lambda c: _(FORM, _separated(c), priors=Priors(b=flat())),
        "error",
        exc=SpecError,
        warned_first=True,
        contains=("flat prior with separated data gives an improper posterior", "'x'"),
    ),
    # 23 extreme predictor scale
    Case(
        23,
        "huge-scale",
        lambda c: _(FORM, base(c.n).assign(x=lambda d: d["x"] * 1e6)),
        "warning",
        scalable=True,
        contains=("predictor 'x' has an extreme scale", "standardized"),
        check=lambda fit: np.testing.assert_allclose(
            fit.spec.design.predictor_scaling["x"],
            (np.mean(base()["x"] * 1e6), np.std(base()["x"] * 1e6)),
        ),
    ),
    Case(
        23,
        "tiny-scale",
        lambda c: _(FORM, base(c.n).assign(x=lambda d: d["x"] * 1e-6)),
        "warning",
        contains=("predictor 'x' has an extreme scale",),
    ),
    # 24 one level
    Case(
        24,
        "one-level",
        lambda c: _(FORM, base(c.n).assign(g=7)),
        "error",
        exc=DataError,
        scalable=True,
        contains=("grouping factor 'g' has only 1 level (7 in all 120 rows)", "drop '(1 | g)'"),
    ),
    # 25 2-4 levels
    Case(
        25,
        "three-levels",
        lambda c: _(FORM, base(c.n, groups=3)),
        "warning",
        scalable=True,
        contains=("grouping factor 'g' has 3 levels", "strongly influenced by the prior"),
    ),
    # 26 declared levels without observations
    Case(
        26,
        "unused-categories",
        lambda c: _(FORM, _unused_levels(c)),
        "note",
        contains=("levels 7, 8 of 'g' have no observations and were not modelled",),
        check=lambda fit: _labels_of(fit) == [1, 2, 3, 4, 5, 6] or pytest.fail(_labels_of(fit)),
    ),
    # 27 non-contiguous integer labels: no phantom group
    Case(
        27,
        "labels-1-61-without-54",
        lambda c: _("y ~ x + (1 | district)", _bangladesh_like(c)),
        "ok",
        check=lambda fit: (
            (_labels_of(fit, "district") == [v for v in range(1, 62) if v != 54])
            or pytest.fail("phantom or renumbered group")
        ),
    ),
    Case(
        27,
        "text-labels-kept",
        lambda c: _(
            FORM,
            base(c.n).assign(
                g=np.array(["x y", "é", "10", "2", "B", "a"], dtype=object)[np.arange(c.n) % 6]
            ),
        ),
        "ok",
        check=lambda fit: (
            sorted(map(str, _labels_of(fit))) == sorted(["x y", "é", "10", "2", "B", "a"])
            or pytest.fail(_labels_of(fit))
        ),
    ),
    # 28 labels that look like duplicates
    Case(
        28,
        "text-1-and-number-1",
        lambda c: _(FORM, with_values(base(c.n), "g", [1], ["1"], dtype=object)),
        "warning",
        scalable=True,
        contains=(
            "grouping factor 'g' has labels that look like duplicates",
            "'1' and 1",
            "treated as different groups",
        ),
    ),
    Case(
        28,
        "case-and-space",
        lambda c: _(
            FORM,
            base(c.n).assign(
                g=np.array(["A", "a ", "b", "c", "d"], dtype=object)[np.arange(c.n) % 5]
            ),
        ),
        "warning",
        contains=("look like duplicates: 'A' and 'a '",),
    ),
    # 29 NA in the grouping factor
    Case(
        29,
        "na-in-group",
        lambda c: _(FORM, with_values(base(c.n), "g", [3, 7], [None, None], dtype="Int64")),
        "error",
        exc=DataError,
        scalable=True,
        contains=("grouping column 'g' has 2 missing values (rows 3, 7)", "drop_missing=True"),
    ),
    # 30 one observation per group
    Case(
        30,
        "one-obs-per-group",
        lambda c: _(FORM, base(c.n).assign(g=np.arange(c.n))),
        "warning",
        scalable=True,
        contains=("every group of 'g' has exactly one observation", "weakly identified"),
    ),
    # 31 model too large for memory
    Case(
        31,
        "memory",
        _too_small_memory,
        "error",
        exc=SpecError,
        contains=(
            "model has 8 group parameters",
            "estimated memory",
            "exceeds 100.0 kB available",
            "reduce draws or chains",
        ),
    ),
    # 32 duplicate column names
    Case(
        32,
        "duplicate-columns-csv",
        lambda c: _(FORM, write(c.tmp / "d.csv", "y,x,x,g\n1,2,3,1\n")),
        "error",
        exc=DataError,
        contains=("duplicate column name 'x' (columns 2 and 3)",),
    ),
    Case(
        32,
        "duplicate-columns-frame",
        lambda c: _(FORM, pd.DataFrame([[1, 2, 3, 1]], columns=["y", "x", "g", "x"])),
        "error",
        exc=DataError,
        contains=("duplicate column name 'x' (columns 2 and 4)",),
    ),
    # 33 invalid settings, and weak but valid ones
    Case(
        33,
        "chains-0",
        lambda c: _(FORM, base(c.n), chains=0),
        "error",
        exc=SpecError,
        contains=("chains must be a whole number >= 1", "got 0"),
    ),
    Case(
        33,
        "draws-0",
        lambda c: _(FORM, base(c.n), draws=0),
        "error",
        exc=SpecError,
        contains=("draws must be a whole number >= 1", "got 0"),
    ),
    Case(
        33,
        "target-accept-1.5",
        lambda c: _(FORM, base(c.n), target_accept=1.5),
        "error",
        exc=SpecError,
        contains=("target_accept must lie strictly between 0 and 1", "got 1.5"),
    ),
    Case(
        33,
        "target-accept-0",
        lambda c: _(FORM, base(c.n), target_accept=0.0),
        "error",
        exc=SpecError,
        contains=("target_accept must lie strictly between 0 and 1",),
    ),
    Case(
        33,
        "seed-negative",
        lambda c: _(FORM, base(c.n), seed=-1),
        "error",
        exc=SpecError,
        contains=("seed must be a whole number >= 0", "got -1"),
    ),
    Case(
        33,
        "seed-fractional",
        lambda c: _(FORM, base(c.n), seed=1.5),
        "error",
        exc=SpecError,
        contains=("seed must be a whole number >= 0", "got 1.5"),
    ),
    Case(
        33,
        "prior-scale-negative",
        lambda c: _(FORM, base(c.n), priors=Lazy(lambda: Priors(b=normal(0, -1)))),
        "error",
        exc=SpecError,
        contains=("normal() needs sigma > 0", "got -1"),
    ),
    Case(
        33,
        "prior-scale-zero",
        lambda c: _(FORM, base(c.n), priors=Lazy(lambda: Priors(sd=poolwise.half_normal(0)))),
        "error",
        exc=SpecError,
        contains=("half_normal() needs sigma > 0", "got 0"),
    ),
    Case(
        33,
        "two-chains",
        lambda c: _(FORM, base(c.n), chains=2),
        "warning",
        contains=(
            "We recommend running at least 4 chains for robust computation of convergence "
            "diagnostics",
        ),
    ),
    Case(
        33,
        "fifty-draws",
        lambda c: _(FORM, base(c.n), draws=50),
        "warning",
        contains=("The number of samples is too small to check convergence reliably",),
    ),
]


def _resolve(kw: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.make() if isinstance(v, Lazy) else v) for k, v in kw.items()}


def test_every_table_row_has_a_case() -> None:
    assert sorted({c.row for c in CASES}) == list(range(1, 34))


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    formula, data, kw = case.build(Ctx(tmp_path, N, monkeypatch))
    kw = {**FIT_DEFAULTS, **kw}
    if case.kind == "error":
        forbid_sampler(monkeypatch)
        assert case.exc is not None
        with pytest.raises(case.exc) as info:
            if case.warned_first:
                with pytest.warns(DataWarning):
                    poolwise.fit(formula, data, **_resolve(kw))
            else:
                poolwise.fit(formula, data, **_resolve(kw))
        assert type(info.value) is case.exc
        message = str(info.value)
        for text in case.contains:
            assert text in message, f"{text!r} not in {message!r}"
        return
    seen = fake_sampler(monkeypatch)
    if case.kind == "warning":
        with pytest.warns(DataWarning) as record:
            fit = poolwise.fit(formula, data, **_resolve(kw))
        texts = [str(w.message) for w in record if issubclass(w.category, DataWarning)]
        hits = [t for t in texts if all(s in t for s in case.contains)]
        assert hits, f"no warning contains {case.contains}: {texts}"
        assert hits[0] in fit.warnings  # kept in the result, not only printed
    else:  # "note" and "ok" emit no warning at all (warnings are errors in this suite)
        fit = poolwise.fit(formula, data, **_resolve(kw))
        assert fit.warnings == ()
        if case.kind == "note":
            notes = fit.spec.design.notes
            assert any(all(s in n for s in case.contains) for n in notes), notes
    assert seen  # validation passed and the (fake) sampler was reached
    if case.check is not None:
        case.check(fit)


# -- the 100 000-row guard -------------------------------------------------------------------


def _validate_only(formula: str, data: Any, kw: dict[str, Any]) -> None:
    """check_model_data + check_design, as build_design calls them (numeric predictors)."""
    f = parse_formula(formula)
    checked = check_model_data(
        f, read_table(data), success=kw.get("success"), drop_missing=kw.get("drop_missing", False)
    )
    names = ["Intercept", *checked.numeric]
    X = np.column_stack([np.ones(len(checked.frame)), *checked.numeric.values()])
    check_design(checked, names, X, checked.successes, checked.trials)


@pytest.mark.parametrize("case", [c for c in CASES if c.scalable], ids=lambda c: c.id)
def test_validation_of_100k_rows(
    case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bad value is found and named in a 100 000-row frame. How long that takes is
    measured in bench/validation_bench.py (tests never assert timings)."""
    formula, data, kw = case.build(Ctx(tmp_path, 100_000, monkeypatch))
    assert len(data) == 100_000
    if case.kind == "error":
        assert case.exc is not None
        with pytest.raises(case.exc) as info:
            _validate_only(formula, data, kw)
        assert case.contains[0].replace("120", "100000") in str(info.value)
    else:
        checked_warnings: tuple[str, ...] = ()
        f = parse_formula(formula)
        checked = check_model_data(f, read_table(data), drop_missing=kw.get("drop_missing", False))
        names = ["Intercept", *checked.numeric]
        X = np.column_stack([np.ones(len(checked.frame)), *checked.numeric.values()])
        checked_warnings = check_design(checked, names, X, checked.successes, checked.trials)
        assert checked_warnings


# -- details -----------------------------------------------------------------------------


def test_warnings_reach_fit_warnings_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_sampler(monkeypatch)
    df = base(N, groups=3).assign(x=lambda d: d["x"] * 1e6)
    with pytest.warns(DataWarning) as record:
        fit = poolwise.fit(FORM, df, **{**FIT_DEFAULTS, "chains": 2})
    texts = [str(w.message) for w in record]
    assert list(fit.warnings) == texts
    assert any("3 levels" in t for t in fit.warnings)
    assert any("extreme scale" in t for t in fit.warnings)
    assert any("at least 4 chains" in t for t in fit.warnings)


def test_no_warning_is_emitted_for_rejected_data(monkeypatch: pytest.MonkeyPatch) -> None:
    # 3 levels (a warning) and a constant predictor (an error): only the error is seen
    forbid_sampler(monkeypatch)
    with pytest.raises(DataError, match="constant"):
        poolwise.fit("y ~ x + c + (1 | g)", base(N, groups=3).assign(c=2.0), **FIT_DEFAULTS)


def test_clean_data_gets_no_warning_or_note(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_sampler(monkeypatch)
    fit = poolwise.fit(FORM, base(), **FIT_DEFAULTS)
    assert fit.warnings == ()
    assert fit.spec.design.notes == ()
    assert fit.spec.design.n_rows == N


def test_complete_pooling_skips_group_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_sampler(monkeypatch)
    fit = poolwise.fit(FORM, base().assign(g=1), pooling="complete", **FIT_DEFAULTS)
    assert fit.warnings == ()


def test_missing_values_listed_for_every_column() -> None:
    df = with_values(base(), "x", [4], [np.nan])
    df = with_values(df, "g", [6], [None], dtype="Int64")
    with pytest.raises(DataError) as info:
        poolwise.build_model(FORM, df)
    assert "column 'x' has 1 missing value (row 4) (also in 'g')" in str(info.value)


def test_memory_estimate() -> None:
    assert planning.estimate_draws_bytes(4, 1000, 61, 1934) == 4 * 1000 * (61 + 1934) * 8
    avail = resources.available_memory_bytes()
    assert avail is None or avail > 0


def test_separated_coefficients_on_cells() -> None:
    X = np.array([[1, 0.0], [1, 1.0], [1, 2.0], [1, 3.0]])
    names = ["Intercept", "x"]
    # binomial cells: a cell with both successes and failures is on both sides
    assert (
        validate.separated_coefficients(
            names, X, np.array([1, 1, 3, 0.0]), np.array([3, 3, 3, 3.0])
        )
        == {}
    )
    quasi = validate.separated_coefficients(
        names, X, np.array([0, 1, 3, 3.0]), np.array([3, 3, 3, 3.0])
    )
    assert quasi == {"x": "all y=1 when x > 1"}  # x = 1 is mixed, the rest is not
    sep = validate.separated_coefficients(
        names, X, np.array([0, 0, 3, 3.0]), np.array([3, 3, 3, 3.0])
    )
    assert sep == {"x": "all y=1 when x >= 2 and all y=0 when x <= 1"}


def test_dummy_level_with_one_outcome_is_quasi_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_sampler(monkeypatch)
    df = base().assign(c=np.where(np.arange(N) % 2 == 0, "u", "v"))
    df.loc[(df["y"] == 1) & (df["g"] == 1), "c"] = "w"  # level w: only successes
    with pytest.warns(DataWarning, match="predictor 'cw' perfectly separates"):
        poolwise.fit("y ~ x + c + (1 | g)", df, **FIT_DEFAULTS)


def test_float_group_labels_stay_integer_labels(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_sampler(monkeypatch)
    df = with_values(base(), "g", [3], [np.nan], dtype=float)
    with pytest.warns(DataWarning, match="dropped 1 of 120 rows"):
        fit = poolwise.fit(FORM, df, drop_missing=True, **FIT_DEFAULTS)
    assert _labels_of(fit) == list(range(1, 9))


def test_text_predictor_of_numbers_stays_categorical(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_sampler(monkeypatch)
    df = base().assign(c=np.array(["1", "2", "3"], dtype=object)[np.arange(N) % 3])
    fit = poolwise.fit("y ~ x + c + (1 | g)", df, **FIT_DEFAULTS)
    assert fit.spec.design.fixed_names == ("Intercept", "x", "c2", "c3")


def test_success_with_a_binomial_outcome_is_a_spec_error(monkeypatch: pytest.MonkeyPatch) -> None:
    forbid_sampler(monkeypatch)
    with pytest.raises(SpecError, match="success= only applies to a 0/1 outcome"):
        poolwise.fit("s | trials(k) ~ x + (1 | g)", binom(), success=1, **FIT_DEFAULTS)


@pytest.mark.parametrize(
    ("formula", "pooling"),
    [
        (FORM, "partial"),
        ("y ~ x + (1 + x | g)", "partial"),
        ("y ~ x + (1 + x || g)", "partial"),
        (FORM, "none"),
        (FORM, "complete"),
    ],
)
def test_stored_values_match_the_layout(formula: str, pooling: str) -> None:
    from poolwise.engine.layout import pack

    spec = poolwise.build_model(formula, base(), pooling=pooling, parameterization="noncentered")
    assert planning.stored_values_per_draw(spec) == pack(spec).n_expanded


@pytest.mark.parametrize(
    "case",
    [c for c in CASES if c.name in ("separation-flat-prior", "all-zero-flat-intercept", "memory")],
    ids=lambda c: c.id,
)
def test_run_checks_come_before_the_pilot_run(
    case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With parameterization='auto' a pilot run samples first: the checks must precede it."""
    formula, data, kw = case.build(Ctx(tmp_path, N, monkeypatch))
    forbid_sampler(monkeypatch)  # the pilot imports run_nuts from poolwise.engine.sampler
    kw = {**FIT_DEFAULTS, **kw, "parameterization": "auto"}
    with pytest.raises(SpecError):
        if case.warned_first:
            with pytest.warns(DataWarning):
                poolwise.fit(formula, data, **kw)
        else:
            poolwise.fit(formula, data, **kw)


def test_fmt_helpers() -> None:
    assert validate.fmt_values([2.0, 3.0, 2.0, "a", 0.5]) == "{2, 3, 'a', 0.5}"
    assert validate.fmt_values(range(10)) == "{0, 1, 2, 3, 4, ...}"
    rows = np.arange(1, 11)
    assert validate.fmt_rows(np.array([True] + [False] * 9), rows) == "row 1"
    assert validate.fmt_rows(np.ones(10, dtype=bool), rows) == "rows 1, 2, 3, 4, 5 and 5 more"
