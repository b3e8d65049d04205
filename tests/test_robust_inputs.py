"""Issue 10, items 8, 9 and 14: settings, formulas and input files that used to end in a
traceback (or in a fit that should not exist) give one ``error:`` line and exit 3, before
anything is sampled; gzip, CR-in-field and UTF-16 files are read as the text tables they are.

Nothing here samples: the sampler is replaced by a spy that fails the test.
"""

from __future__ import annotations

import bz2
import gzip
import importlib
import lzma
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import poolwise
import poolwise.engine.sampler as sampler_module
from poolwise.cli import EXIT_INPUT, main
from poolwise.data.table import read_table
from poolwise.engine.sampler import SamplerConfig
from poolwise.errors import DataError, FormulaError, SpecError

# sample_spec calls run_nuts
sampling_module = importlib.import_module("poolwise.inference.sampling")
FAST = ["--draws", "20", "--tune", "20", "--chains", "2", "--seed", "1", "--no-repair"]


@pytest.fixture(autouse=True)
def no_sampling(monkeypatch: pytest.MonkeyPatch) -> None:
    def spy(*args: Any, **kwargs: Any) -> Any:
        pytest.fail("the sampler was called for input that should have been rejected")

    monkeypatch.setattr(sampler_module, "run_nuts", spy)
    monkeypatch.setattr(sampling_module, "run_nuts", spy)


def frame(n: int = 60) -> pd.DataFrame:
    i = np.arange(n)
    return pd.DataFrame({
        "y": ((i // 6) % 2).astype(np.int64),
        "x": np.round(np.sin(i) * 2, 3),
        "g": (i % 6 + 1).astype(np.int64),
    })


def run_cli(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def error_lines(err: str) -> list[str]:
    return [ln for ln in err.splitlines() if ln.startswith("error:")]


@pytest.fixture
def good_csv(tmp_path: Path) -> Path:
    p = tmp_path / "good.csv"
    frame().to_csv(p, index=False)
    return p


# -- item 8: sampler settings and formulas ------------------------------------------------


def test_tune_zero_is_a_settings_error() -> None:
    with pytest.raises(SpecError, match="tune must be a whole number >= 1; got 0"):
        SamplerConfig(tune=0)
    assert SamplerConfig(tune=1).tune == 1


def test_cli_tune_zero_exits_3_before_sampling(
    good_csv: Path, capsys: pytest.CaptureFixture
) -> None:
    code, out, err = run_cli(
        ["fit", str(good_csv), "-f", "y ~ x + (1 | g)", "--tune", "0", "--draws", "20"], capsys
    )
    assert code == EXIT_INPUT
    assert error_lines(err) == [error_lines(err)[0]] and "tune" in err
    assert "Traceback" not in err + out


@pytest.mark.parametrize("formula", ["y ~ 0", "y ~ -1", "y ~ 1 - 1", "y ~ 0 + 1 - 1"])
def test_formula_without_parameters_exits_3(
    formula: str, good_csv: Path, capsys: pytest.CaptureFixture
) -> None:
    code, out, err = run_cli(["fit", str(good_csv), "-f", formula, *FAST], capsys)
    assert code == EXIT_INPUT
    (line,) = error_lines(err)
    assert "no parameters to estimate" in line and "'y ~ 1'" in line
    assert out == ""


def test_complete_pooling_of_a_group_only_formula_is_rejected() -> None:
    with pytest.raises(FormulaError, match="dropped by pooling='complete'"):
        poolwise.fit("y ~ 0 + (1 | g)", frame(), pooling="complete", chains=2, draws=20,
                     tune=20, seed=1, repair=False)


@pytest.mark.parametrize("delimiter", ["ab", "", "\n", '"', "x"])
def test_bad_delimiter_is_a_settings_error(delimiter: str, good_csv: Path) -> None:
    with pytest.raises(SpecError, match="delimiter must be a single character"):
        read_table(good_csv, delimiter=delimiter)


def test_cli_delimiter_ab_exits_3(good_csv: Path, capsys: pytest.CaptureFixture) -> None:
    code, _, err = run_cli(
        ["fit", str(good_csv), "-f", "y ~ x + (1 | g)", "--delimiter", "ab", *FAST], capsys
    )
    assert code == EXIT_INPUT
    (line,) = error_lines(err)
    assert "'ab'" in line


def test_delimiter_typed_as_backslash_t_is_a_tab(tmp_path: Path) -> None:
    p = tmp_path / "d.tsv"
    frame().to_csv(p, sep="\t", index=False)
    t = read_table(p, delimiter="\\t")
    assert t.delimiter == "\t" and list(t.frame.columns) == ["y", "x", "g"]


def test_delimiter_equal_to_decimal_mark_is_refused(good_csv: Path) -> None:
    with pytest.raises(SpecError, match="both ','"):
        read_table(good_csv, delimiter=",", decimal=",")


def test_column_with_slash_is_named_before_sampling(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    p = tmp_path / "slash.csv"
    frame().rename(columns={"x": "a/b"}).to_csv(p, index=False)
    code, _, err = run_cli(["fit", str(p), "-f", "y ~ `a/b` + (1 | g)", *FAST], capsys)
    assert code == EXIT_INPUT
    (line,) = error_lines(err)
    assert "column 'a/b'" in line and "rename the column" in line


def test_grouping_column_with_slash_is_named() -> None:
    df = frame().rename(columns={"g": "g/h"})
    with pytest.raises(DataError, match="column 'g/h' has a '/'"):
        poolwise.fit("y ~ x + (1 | `g/h`)", df, chains=2, draws=20, tune=20, seed=1)


def test_level_with_slash_is_named() -> None:
    df = frame().assign(c=np.array(["N/S", "E", "W"], dtype=object)[np.arange(60) % 3])
    with pytest.raises(DataError, match=r"predictor 'c' has level \{'N/S'\}"):
        poolwise.fit("y ~ c + (1 | g)", df, chains=2, draws=20, tune=20, seed=1)


# -- item 9: input files --------------------------------------------------------------------


@pytest.mark.parametrize("name", ["data.csv.gz", "data.csv", "data"])
@pytest.mark.parametrize("codec", ["gzip", "bz2", "xz"])
def test_compressed_csv_is_read_whatever_its_name(tmp_path: Path, name: str, codec: str) -> None:
    text = frame().to_csv(index=False).encode()
    packed = {"gzip": gzip.compress, "bz2": bz2.compress, "xz": lzma.compress}[codec](text)
    p = tmp_path / name
    p.write_bytes(packed)
    t = read_table(p)
    pd.testing.assert_frame_equal(t.frame, read_table(frame()).frame, check_dtype=False)


def test_gzip_csv_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A gzip file gets as far as the sampler (the spy): it was read and validated."""
    p = tmp_path / "data.csv"
    p.write_bytes(gzip.compress(frame().to_csv(index=False).encode()))
    with pytest.raises(pytest.fail.Exception, match="the sampler was called"):
        main(["fit", str(p), "-f", "y ~ x + (1 | g)", *FAST, "--parameterization",
              "noncentered"])


def test_truncated_gzip_names_the_file(tmp_path: Path) -> None:
    p = tmp_path / "cut.csv.gz"
    p.write_bytes(gzip.compress(frame().to_csv(index=False).encode())[:40])
    with pytest.raises(DataError, match=r"cut\.csv\.gz.*gzip-compressed but could not be"):
        read_table(p)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_binary_garbage_names_the_file(
    tmp_path: Path, seed: int, capsys: pytest.CaptureFixture
) -> None:
    p = tmp_path / "garbage.csv"
    p.write_bytes(np.random.default_rng(seed).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    code, _, err = run_cli(["fit", str(p), "-f", "y ~ x + (1 | g)", *FAST], capsys)
    assert code == EXIT_INPUT
    (line,) = error_lines(err)
    assert "garbage.csv" in line and "not a text table" in line


@pytest.mark.parametrize("kind", ["zip", "zstd"])
def test_archives_get_a_clear_error(tmp_path: Path, kind: str) -> None:
    p = tmp_path / "d.csv"
    p.write_bytes((b"PK\x03\x04" if kind == "zip" else b"\x28\xb5\x2f\xfd") + b"\x00" * 64)
    with pytest.raises(DataError, match="extract the CSV first"):
        read_table(p)


def test_parquet_without_its_suffix(tmp_path: Path) -> None:
    p = tmp_path / "data.bin"
    frame().to_parquet(p)
    pd.testing.assert_frame_equal(read_table(p).frame, frame(), check_dtype=False)


@pytest.mark.parametrize("eol", ["\n", "\r\n", "\r"], ids=["lf", "crlf", "cr"])
def test_quoted_carriage_return_inside_a_field(tmp_path: Path, eol: str) -> None:
    lines = ["y,x,g", '1,0.5,"a\rb"', '0,0.25,"c\r\nd"', "1,1.5,e", '0,2.5,"f""g"']
    p = tmp_path / "cr.csv"
    p.write_bytes(eol.join(lines).encode() + eol.encode())
    t = read_table(p)
    assert t.delimiter == ","
    assert list(t.frame["g"]) == ["a\rb", "c\r\nd", "e", 'f"g']
    assert list(t.frame["x"]) == [0.5, 0.25, 1.5, 2.5]


def test_utf16_with_bom_is_read(tmp_path: Path) -> None:
    p = tmp_path / "excel.csv"
    p.write_bytes(frame().to_csv(index=False, sep="\t").encode("utf-16"))
    t = read_table(p)
    assert t.delimiter == "\t"
    pd.testing.assert_frame_equal(t.frame, frame(), check_dtype=False)


def test_plots_at_an_existing_file_fails_before_loading(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import poolwise.output.io

    def no_load(*args: Any, **kwargs: Any) -> Any:
        pytest.fail("the fit was loaded although the --plots target is unusable")

    monkeypatch.setattr(poolwise.output.io, "load_fit", no_load)
    target = tmp_path / "plots.png"
    target.write_text("not a folder")
    code, _, err = run_cli(["diagnose", str(tmp_path / "fit"), "--plots", str(target)], capsys)
    assert code == EXIT_INPUT
    (line,) = error_lines(err)
    assert "plots.png" in line and "existing file" in line
    nested = target / "sub"
    code, _, err = run_cli(["diagnose", str(tmp_path / "fit"), "--plots", str(nested)], capsys)
    assert code == EXIT_INPUT and "is a file" in err


# -- item 14: number format -----------------------------------------------------------------


def test_decimal_comma_on_a_dot_decimal_file_names_the_column(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    p = tmp_path / "dots.csv"
    df = frame(200)
    df["x"] = np.round(np.linspace(-3, 3, 200) + 0.0005, 4)
    df.to_csv(p, index=False)
    code, out, err = run_cli(
        ["fit", str(p), "-f", "y ~ x + (1 | g)", "--decimal", ",", *FAST], capsys
    )
    assert code == EXIT_INPUT
    (line,) = error_lines(err)
    assert "predictor column 'x'" in line and "200 levels" in line
    assert "decimal=','" in line and "--decimal '.'" in line
    assert "status" not in out


def test_text_numbers_with_many_levels_in_a_frame() -> None:
    df = frame().assign(x=[f"{v:.3f}" for v in np.linspace(0, 1, 60)])
    with pytest.raises(DataError, match="numbers stored as text"):
        poolwise.fit("y ~ x + (1 | g)", df, chains=2, draws=20, tune=20, seed=1)


def test_decimal_comma_in_text_with_many_levels_points_at_the_setting(tmp_path: Path) -> None:
    """The other direction: a ';' file with decimal commas read with decimal='.'."""
    p = tmp_path / "commas.csv"
    df = frame()
    lines = ["y;x;g"] + [f"{r.y};{r.x:.3f};{r.g}".replace(".", ",") for r in df.itertuples()]
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="decimal comma"):
        poolwise.fit("y ~ x + (1 | g)", p, chains=2, draws=20, tune=20, seed=1)


def test_a_real_factor_with_decimal_labels_and_few_levels_stays_a_factor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Three dose levels written as text are a factor: the check needs many levels."""
    from poolwise.model.spec import build_model

    df = frame().assign(dose=np.array(["0.5", "1.5", "2.5"], dtype=object)[np.arange(60) % 3])
    spec = build_model("y ~ dose + (1 | g)", df)
    assert spec.design.fixed_names == ("Intercept", "dose1.5", "dose2.5")


# -- found while fuzzing the settings -------------------------------------------------------


def test_prior_for_an_unknown_grouping_factor_is_an_error(
    good_csv: Path, capsys: pytest.CaptureFixture
) -> None:
    """sd_<group> for a group the formula does not have was ignored silently (exit 0)."""
    code, _, err = run_cli(
        ["fit", str(good_csv), "-f", "y ~ x + (1 | g)", "--prior", "sd_gg=exponential(2)",
         *FAST], capsys
    )
    assert code == EXIT_INPUT
    (line,) = error_lines(err)
    assert "prior sd_gg names no grouping factor" in line and "did you mean sd_g?" in line


# -- counts beyond exact integers (docs/reliability.md R.17) --------------------------------


def _binomial_counts(trials: list[int], successes: list[int] | None = None) -> pd.DataFrame:
    n = len(trials)
    s = successes if successes is not None else [min(3, t) for t in trials]
    return pd.DataFrame({"s": s, "n": trials, "x": np.round(np.sin(np.arange(n)), 3)})


@pytest.mark.parametrize(("formula", "what", "column"), [
    ("s | trials(n) ~ x", "trials", "n"),
    ("cbind(s, n) ~ x", "failures", "n"),
])
def test_trials_of_2_53_or_more_are_a_data_error(formula: str, what: str, column: str) -> None:
    trials = [10] * 12
    trials[3], trials[7] = 10**16, 2**53  # rows 4 and 8
    df = _binomial_counts(trials)
    with pytest.raises(DataError) as info:
        poolwise.fit(formula, df, chains=2, draws=20, tune=20)
    msg = str(info.value)
    assert msg.startswith(f"{what} must be below 2^53 = 9,007,199,254,740,992; column '{column}'")
    assert "{10000000000000000, 9007199254740992}" in msg and "(rows 4, 8)" in msg
    # 1e12 trials stay fine: only counts that float64 cannot hold exactly are refused
    from poolwise.data.design import build_design

    trials[3], trials[7] = 10**12, 10**12
    assert build_design(formula, _binomial_counts(trials)).n.max() >= 10**12


def test_successes_and_their_sum_beyond_2_53_are_named() -> None:
    from poolwise.data.design import build_design

    big = _binomial_counts([2**53 + 2] * 4 + [10] * 8, [2**53 + 2] * 4 + [3] * 8)
    with pytest.raises(DataError, match=r"^successes must be below 2\^53.*column 's'"):
        build_design("s | trials(n) ~ x", big)
    half = _binomial_counts([2**52] * 3 + [10] * 9, [2**52] * 3 + [3] * 9)
    expected = r"^trials must be below 2\^53.*column 's \+ n'.*rows 1, 2, 3"
    with pytest.raises(DataError, match=expected):
        build_design("cbind(s, n) ~ x", half)


def test_cli_trials_of_1e16_exit_3(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "t.csv"
    _binomial_counts([10**16] * 4 + [10] * 8).to_csv(path, index=False)
    code, _, err = run_cli(["fit", str(path), "-f", "s | trials(n) ~ x", *FAST], capsys)
    assert code == EXIT_INPUT
    assert error_lines(err) and "trials must be below 2^53" in error_lines(err)[0]
    assert "Traceback" not in err


# -- a fixed-effect factor with many levels (docs/reliability.md R.18) ----------------------


def _many_levels(n: int, levels: int | None = None) -> pd.DataFrame:
    i = np.arange(n)
    return pd.DataFrame({
        "y": ((i * 7) % 3 == 0).astype(np.int64),
        "x": np.round(np.sin(i), 3),
        "id": [f"p{k}" for k in i % (levels or n)],
    })


@pytest.fixture()
def nothing_built(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fixed effects' matrix must never be made for a refused design."""
    import poolwise.data.design as design_module

    def spy(*args: Any, **kwargs: Any) -> Any:
        pytest.fail("the fixed-effect columns were built for a design that should be refused")

    monkeypatch.setattr(design_module, "fixed_columns", spy)


@pytest.mark.usefixtures("nothing_built")
def test_a_factor_with_many_levels_is_refused_before_it_is_built() -> None:
    """12,000 levels on 12,000 rows: 1.2 GB of columns, never made; more than the 10,000
    fixed coefficients poolwise accepts, whatever the memory."""
    with pytest.raises(DataError) as info:
        poolwise.fit("y ~ x + id", _many_levels(12_000), chains=2, draws=20, tune=20)
    msg = str(info.value)
    assert msg.startswith("the fixed effects would be a matrix of 1.2 GB (12,001 columns x "
                          "12,000 rows x 8 bytes; term 'id' alone makes 11,999 of them from "
                          "the levels of 'id' (12,000))")
    assert "more than the 10,000 fixed coefficients poolwise accepts" in msg
    assert "write it as a group term, '(1 | id)' instead of 'id'" in msg


@pytest.mark.usefixtures("nothing_built")
@pytest.mark.parametrize(("formula", "term", "advice"), [
    ("y ~ factor(id)", "factor(id)", "'(1 | id)' instead of 'factor(id)'"),
    ("y ~ x:id", "x:id", "'(0 + x | id)' instead of 'x:id'"),
])
def test_a_design_larger_than_the_memory_is_refused_with_its_estimate(
    monkeypatch: pytest.MonkeyPatch, formula: str, term: str, advice: str
) -> None:
    import poolwise.data.size as size_module

    monkeypatch.setattr(size_module, "available_memory_bytes", lambda: 5_000_000)
    from poolwise.data.design import build_design

    with pytest.raises(DataError) as info:
        build_design(formula, _many_levels(2_000, 500))
    msg = str(info.value)
    assert "x 2,000 rows x 8 bytes" in msg and f"term '{term}' alone makes" in msg
    assert "takes about 3 times that, more than the 5.0 MB of memory available" in msg
    assert advice in msg


def test_a_factor_with_few_levels_is_built(monkeypatch: pytest.MonkeyPatch) -> None:
    import poolwise.data.size as size_module
    from poolwise.data.design import build_design

    monkeypatch.setattr(size_module, "available_memory_bytes", lambda: None)  # unknown
    d = build_design("y ~ x + id", _many_levels(400, 20))
    assert d.X.shape[1] == 21


def test_cli_many_levels_exit_3(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "ids.csv"
    _many_levels(10_500).to_csv(path, index=False)
    code, _, err = run_cli(["fit", str(path), "-f", "y ~ id", *FAST], capsys)
    assert code == EXIT_INPUT
    assert "write it as a group term, '(1 | id)'" in error_lines(err)[0]
