"""Reading tables (docs/reliability.md F2): R-export CSV dialects parse correctly or fail
clearly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from poolwise.data.datasets import example_path
from poolwise.data.table import Table, frame_sha256, read_table
from poolwise.errors import DataError


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


EXPECTED = pd.DataFrame({"y": [1, 0, 1], "x": [0.5, 1.5, 2.0], "g": ["a", "b", "a"]})


def assert_expected(frame: pd.DataFrame) -> None:
    assert list(frame.columns) == ["y", "x", "g"]
    np.testing.assert_array_equal(frame["y"].to_numpy(dtype=float), [1, 0, 1])
    np.testing.assert_allclose(frame["x"].to_numpy(dtype=float), [0.5, 1.5, 2.0])
    assert frame["g"].astype(str).tolist() == ["a", "b", "a"]


@pytest.mark.parametrize(
    ("text", "kwargs", "delimiter"),
    [
        ("y,x,g\n1,0.5,a\n0,1.5,b\n1,2,a\n", {}, ","),
        ("y;x;g\n1;0.5;a\n0;1.5;b\n1;2;a\n", {}, ";"),
        ("y\tx\tg\n1\t0.5\ta\n0\t1.5\tb\n1\t2\ta\n", {}, "\t"),
        ('"y";"x";"g"\n1;0.5;"a"\n0;1.5;"b"\n1;2;"a"\n', {}, ";"),  # quoted header
        ("y;x;g\n1;0,5;a\n0;1,5;b\n1;2;a\n", {"decimal": ","}, ";"),  # R write.csv2
        ("y;x;g\n1;0.5;a\n0;1.5;b\n1;2;a\n", {"delimiter": ";"}, ";"),
    ],
    ids=["comma", "semicolon", "tab", "quoted-header", "decimal-comma", "explicit"],
)
def test_dialects(tmp_path: Path, text: str, kwargs: dict, delimiter: str) -> None:
    table = read_table(write(tmp_path / "d.csv", text), **kwargs)
    assert_expected(table.frame)
    assert table.delimiter == delimiter


def test_r_row_names_are_dropped_with_a_note(tmp_path: Path) -> None:
    path = write(tmp_path / "r.csv", '"y","x","g"\n"1",1,0.5,"a"\n"2",0,1.5,"b"\n"3",1,2,"a"\n')
    table = read_table(path)
    assert_expected(table.frame)
    assert table.notes == ("first column treated as row names (header has 3 fields, rows have 4)",)


def test_utf8_bom_and_latin1(tmp_path: Path) -> None:
    t = read_table(write(tmp_path / "bom.csv", "\ufeffy,x,g\n1,0.5,a\n0,1.5,b\n1,2,a\n"))
    assert_expected(t.frame)
    t = read_table(write(tmp_path / "l1.csv", "y,x,g\n1,0.5,é\n", encoding="latin-1"))
    assert t.frame["g"].tolist() == ["é"]
    assert any("Latin-1" in n for n in t.notes)


def test_na_tokens_are_missing_but_rows_are_kept(tmp_path: Path) -> None:
    text = "y,x,w\n1,0.5,NA\n0,,x\n1,.,NaN\n0,2,null\n"
    frame = read_table(write(tmp_path / "na.csv", text)).frame
    assert len(frame) == 4  # nothing dropped at read time
    assert frame["x"].isna().tolist() == [False, True, True, False]
    assert frame["w"].isna().tolist() == [True, False, True, True]


def test_integer_labels_stay_integers(tmp_path: Path) -> None:
    frame = read_table(example_path("bangladesh")).frame
    assert pd.api.types.is_integer_dtype(frame["district"].dtype)
    assert sorted(set(frame["district"].tolist())) == [v for v in range(1, 62) if v != 54]
    assert len(frame) == 1934


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda p: p / "missing.csv",
            "cannot read data file '{p}/missing.csv': No such file or directory",
        ),
        (lambda p: p, "cannot read data file '{p}': Is a directory"),
        (
            lambda p: write(p / "e.csv", ""),
            "data has no observations (0 rows): '{p}/e.csv' is empty",
        ),
        (lambda p: write(p / "w.csv", " \n\n"), "data has no observations (0 rows)"),
        (
            lambda p: write(p / "h.csv", "y,x\n"),
            "data has no observations (0 rows): {p}/h.csv has only a header",
        ),
        (
            lambda p: write(p / "d.csv", "y,x,y\n1,2,3\n"),
            "duplicate column name 'y' (columns 1 and 3)",
        ),
        (
            lambda p: write(p / "l.csv", "y,x\n1,2\n3,4,5,6\n"),
            "the header has 2 fields but data row 2 has 4",
        ),
        (
            lambda p: write(p / "l.csv", "y,x\n1,2,3,4\n"),
            "the header has 2 fields but data row 1 has 4",
        ),
        (lambda p: write(p / "b.parquet", "junk"), "cannot read data file '{p}/b.parquet'"),
    ],
    ids=[
        "missing",
        "directory",
        "empty",
        "blank",
        "header-only",
        "duplicate",
        "long-row",
        "two-extra-fields",
        "bad-parquet",
    ],
)
def test_read_errors(tmp_path: Path, make, message: str) -> None:
    with pytest.raises(DataError) as info:
        read_table(make(tmp_path))
    assert type(info.value) is DataError
    assert message.format(p=tmp_path) in str(info.value)


def test_frames(tmp_path: Path) -> None:
    df = EXPECTED.copy()
    table = read_table(df)
    assert table.source == "<DataFrame>" and table.delimiter is None
    assert_expected(table.frame)
    assert read_table(table) is table
    df.loc[0, "y"] = 5
    assert table.frame.loc[0, "y"] == 1  # a copy, not a view of the caller's frame
    with pytest.raises(DataError, match=r"duplicate column name 'x' \(columns 1 and 2\)"):
        read_table(pd.DataFrame([[1, 2]], columns=["x", "x"]))
    with pytest.raises(DataError, match=r"duplicate column name '1' \(columns 1 and 2\)"):
        read_table(pd.DataFrame([[1, 2]], columns=[1, "1"]))
    with pytest.raises(DataError, match="cannot read data of type list"):
        read_table([1, 2, 3])


def test_polars_and_parquet(tmp_path: Path) -> None:
    polars = pytest.importorskip("polars")
    assert_expected(read_table(polars.from_pandas(EXPECTED)).frame)
    path = tmp_path / "d.parquet"
    EXPECTED.to_parquet(path)
    assert_expected(read_table(path).frame)


def test_sha_depends_on_values_and_names() -> None:
    a = frame_sha256(EXPECTED)
    assert a == frame_sha256(EXPECTED.copy())
    assert a != frame_sha256(EXPECTED.rename(columns={"x": "z"}))
    assert a != frame_sha256(EXPECTED.assign(x=[0.5, 1.5, 2.5]))
    assert isinstance(read_table(EXPECTED), Table)
