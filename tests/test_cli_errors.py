"""The command line's error path: data / formula / settings errors exit 3 with one clear
``error: ...`` message and no traceback (unless --debug); usage errors exit 2. Nothing here
samples: the sampler is replaced by a spy that fails the test."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import poolwise.engine.sampler as sampler_module
from poolwise.cli import EXIT_INPUT, EXIT_USAGE, main
from poolwise.errors import DataError, FormulaError, SpecError

# sample_spec calls run_nuts
sampling_module = importlib.import_module("poolwise.inference.sampling")


@pytest.fixture(autouse=True)
def no_sampling(monkeypatch: pytest.MonkeyPatch) -> None:
    def spy(*args: Any, **kwargs: Any) -> Any:
        pytest.fail("the sampler was called")

    monkeypatch.setattr(sampler_module, "run_nuts", spy)
    monkeypatch.setattr(sampling_module, "run_nuts", spy)


def rows(n: int = 40) -> list[tuple[int, float, int]]:
    return [((i // 8) % 2, round((i % 7) / 3, 3), i % 8 + 1) for i in range(n)]


def csv(path: Path, header: str, body: list[tuple[Any, ...]], sep: str = ",") -> str:
    lines = [header] + [sep.join(str(v) for v in r) for r in body]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    good = rows()
    return {
        "good": csv(tmp_path / "good.csv", "y,x,g", good),
        "semicolon": csv(tmp_path / "semi.csv", "y;x;g", good, sep=";"),
        "yesno": csv(
            tmp_path / "yn.csv", "y,x,g", [("yes" if y else "no", x, g) for y, x, g in good]
        ),
        "na_group": csv(
            tmp_path / "nag.csv",
            "y,x,g",
            [(y, x, "NA" if i in (2, 6) else g) for i, (y, x, g) in enumerate(good)],
        ),
        "counts": csv(
            tmp_path / "counts.csv",
            "s,n,g",
            [(7 if i == 4 else i % 4, 5, i % 8 + 1) for i in range(40)],
        ),
    }


CASES = [
    (
        "semicolon",
        ["--formula", "y ~ x + (1 | g)", "--delimiter", ","],
        "error: read 1 column 'y;x;g' but the model needs columns y, x, g; the file looks "
        "';'-delimited (it was read with delimiter ',') - pass delimiter=';' "
        "(--delimiter ';' on the command line)",
    ),
    ("yesno", ["--formula", "y ~ x + (1 | g)"], "error: outcome 'y' has two values {'no', 'yes'}"),
    (
        "good",
        ["--formula", "y ~ x + (1 | grp)"],
        "error: column 'grp' not found; did you mean 'g'? available: y, x, g",
    ),
    (
        "counts",
        ["--formula", "s | trials(n) ~ 1 + (1 | g)"],
        "error: successes exceed trials in 1 row (row 5: 7 > 5); check columns 's' and 'n'",
    ),
    (
        "na_group",
        ["--formula", "y ~ x + (1 | g)"],
        "error: grouping column 'g' has 2 missing values (rows 3, 7); drop them with "
        "drop_missing=True (--drop-missing) or impute before fitting",
    ),
    (
        "good",
        ["--formula", "y ~ x + (1 | g)", "--chains", "0"],
        "error: chains must be a whole number >= 1; got 0",
    ),
    (
        "good",
        ["--formula", "y ~ x + (1 | g)", "--target-accept", "1.5"],
        "error: target_accept must lie strictly between 0 and 1; got 1.5",
    ),
    (
        "good",
        ["--formula", "y ~ x + (1 | g)", "--seed", "-3"],
        "error: seed must be a whole number >= 0; got -3",
    ),
    (
        "good",
        ["--formula", "y ~ x + (1 | g)", "--prior", "b=normal(0, -1)"],
        "error: normal() needs sigma > 0 (a finite positive number); got -1.0",
    ),
    (
        "good",
        ["--formula", "y ~ x + (1 | g)", "--prior", "sd=normal(0, 1)"],
        "error: prior for the group SD 'sd' must be positive-only",
    ),
    (
        "missing",
        ["--formula", "y ~ x + (1 | g)"],
        "error: cannot read data file 'MISSING': No such file or directory",
    ),
]


@pytest.mark.parametrize(
    ("which", "args", "expected"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)]
)
def test_input_errors_exit_3(
    files: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    which: str,
    args: list[str],
    expected: str,
) -> None:
    path = files.get(which, str(tmp_path / "missing.csv"))
    expected = expected.replace("MISSING", path)
    rc = main(["fit", path, *args, "--no-progress"])
    out, err = capsys.readouterr()
    assert rc == EXIT_INPUT == 3
    assert out == ""
    assert "Traceback" not in err
    assert err.startswith(expected), err
    if not expected.startswith("error: column"):
        assert err.count("\n") == 1  # exactly one line
    assert err.count("error:") == 1


def test_formula_error_marks_the_column(
    files: dict[str, str], capsys: pytest.CaptureFixture
) -> None:
    rc = main(["fit", files["good"], "--formula", "y ~ x + (1 | grp)"])
    _, err = capsys.readouterr()
    assert rc == 3
    assert err.splitlines() == [
        "error: column 'grp' not found; did you mean 'g'? available: y, x, g",
        "  y ~ x + (1 | grp)",
        "               ^^^",
    ]


def test_unparsable_formula_exits_3(files: dict[str, str], capsys: pytest.CaptureFixture) -> None:
    rc = main(["fit", files["good"], "--formula", "y ~ x + (1 | )"])
    _, err = capsys.readouterr()
    assert rc == 3 and err.startswith("error: ") and "Traceback" not in err


@pytest.mark.parametrize(
    ("which", "args", "exc"),
    [
        ("yesno", ["--formula", "y ~ x + (1 | g)"], DataError),
        ("good", ["--formula", "y ~ x + (1 | grp)"], FormulaError),
        ("good", ["--formula", "y ~ x + (1 | g)", "--chains", "0"], SpecError),
    ],
)
def test_debug_shows_the_exception(
    files: dict[str, str], which: str, args: list[str], exc: type[Exception]
) -> None:
    with pytest.raises(exc):
        main(["--debug", "fit", files[which], *args])


@pytest.mark.parametrize(
    "argv",
    [
        ["fit", "DATA"],  # --formula missing
        ["fit"],  # neither data nor --example
        ["fit", "DATA", "--example", "bangladesh"],
        ["fit", "DATA", "--formula", "y ~ 1", "--chains", "four"],
        ["fit", "DATA", "--formula", "y ~ 1", "--no-such-option"],
        ["fit", "DATA", "--formula", "y ~ 1", "--pooling", "some"],
        ["frobnicate"],
        [],
    ],
    ids=[
        "no-formula",
        "no-data",
        "data-and-example",
        "chains-not-int",
        "unknown-option",
        "bad-choice",
        "unknown-command",
        "no-command",
    ],
)
def test_usage_errors_exit_2(
    files: dict[str, str], capsys: pytest.CaptureFixture, argv: list[str]
) -> None:
    argv = [files["good"] if a == "DATA" else a for a in argv]
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == EXIT_USAGE == 2
    _, err = capsys.readouterr()
    assert "usage:" in err and "Traceback" not in err


def test_real_process_prints_one_line(files: dict[str, str]) -> None:
    """The installed entry point, as a user runs it: exit 3, one line, no traceback."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "poolwise.cli",
            "fit",
            files["yesno"],
            "--formula",
            "y ~ x + (1 | g)",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: outcome 'y' has two values")
