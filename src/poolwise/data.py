"""Reading tables: CSV (delimiter detection, quoted headers, NA tokens, R row names), Parquet,
pandas and polars frames. Nothing is dropped or remapped here; validation of the columns a
model uses happens when data is bound to a formula (:mod:`poolwise.design`)."""

from __future__ import annotations

import csv
import errno
import hashlib
import io
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from poolwise.errors import DataError

__all__ = ["Table", "read_table", "NA_TOKENS"]

log = logging.getLogger(__name__)

NA_TOKENS = ("", "NA", "N/A", "NaN", "nan", "null", "NULL", ".")
_DELIMITERS = (",", ";", "\t")


@dataclass(frozen=True, eq=False)
class Table:
    """A data frame plus where it came from (for provenance and messages)."""

    frame: pd.DataFrame
    source: str
    sha256: str
    notes: tuple[str, ...] = ()
    #: the CSV delimiter used (given or detected); None for frames and Parquet
    delimiter: str | None = None
    #: a table of distinct row patterns (from :mod:`poolwise.ingest`): the rows each entry of
    #: ``frame`` stands for, and the 1-based source row number of its first row; None for a
    #: table of rows
    counts: Any = None
    row_number: Any = None
    #: warnings of rules already applied to the rows (rows dropped by the data engine)
    warnings: tuple[str, ...] = ()


def _sniff_delimiter(head: str) -> str:
    lines = [ln for ln in head.splitlines() if ln.strip()][:20]
    best, best_score = ",", -1
    for d in _DELIMITERS:
        counts = [len(next(csv.reader([ln], delimiter=d))) for ln in lines]
        if not counts:
            continue
        # consistent and > 1 fields wins; ties go to the most fields
        consistent = sum(c == counts[-1] for c in counts)
        score = consistent * 1000 + counts[-1] if counts[-1] > 1 else 0
        if score > best_score:
            best, best_score = d, score
    return best


def _columns_phrase(idx: list[int]) -> str:
    nums = [str(i) for i in idx]
    return " and ".join(nums) if len(nums) <= 2 else ", ".join(nums[:-1]) + " and " + nums[-1]


def _duplicate_error(header: list[str], where: str) -> DataError | None:
    seen: set[str] = set()
    for h in header:
        if h in seen:
            idx = [i + 1 for i, c in enumerate(header) if c == h]
            return DataError(
                f"duplicate column name '{h}' (columns {_columns_phrase(idx)}){where}; "
                "rename one of them"
            )
        seen.add(h)
    return None


def _read_csv(
    path: Path, delimiter: str | None, decimal: str
) -> tuple[pd.DataFrame, list[str], str]:
    notes: list[str] = []
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise DataError(f"cannot read data file '{path}': {err.strerror or err}") from err
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
        notes.append(f"'{path.name}' is not UTF-8; read it as Latin-1")
    if not text.strip():
        raise DataError(f"data has no observations (0 rows): '{path}' is empty")
    sep = delimiter or _sniff_delimiter(text[:20000])
    if delimiter is None and sep != ",":
        notes.append(f"detected delimiter {sep!r} in '{path.name}'")
    head = text[:200000]
    if len(text) > len(head) and "\n" in head:
        head = head[: head.rindex("\n")]  # drop a line cut in the middle
    rows = [r for r in csv.reader(io.StringIO(head), delimiter=sep) if r]
    header = rows[0]
    dup = _duplicate_error(header, f" in '{path}'")
    if dup is not None:
        raise dup
    index_col: int | None = None
    expected = len(header)
    if len(rows) > 1 and len(rows[1]) == len(header) + 1:
        index_col = 0
        expected = len(header) + 1
        notes.append(
            f"first column treated as row names (header has {len(header)} fields, "
            f"rows have {len(header) + 1})"
        )
    for r, fields in enumerate(rows[1:], start=1):
        if len(fields) > expected:
            raise DataError(
                f"cannot read '{path}' as a {sep!r}-delimited table: the header has "
                f"{len(header)} fields but data row {r} has {len(fields)}; check the delimiter "
                "(delimiter=...) and quoting"
            )
    try:
        frame = pd.read_csv(
            io.StringIO(text),
            sep=sep,
            decimal=decimal,
            na_values=list(NA_TOKENS),
            keep_default_na=False,
            index_col=index_col,
            dtype_backend="numpy_nullable",
        )
    except pd.errors.ParserError as err:
        m = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(err))
        detail = (
            f"the header has {len(header)} fields but line {m.group(2)} has {m.group(3)}"
            if m
            else str(err).strip()
        )
        raise DataError(
            f"cannot read '{path}' as a {sep!r}-delimited table: {detail}; check the "
            "delimiter (delimiter=...) and quoting"
        ) from None
    if index_col is not None:
        frame = frame.reset_index(drop=True)
    return frame, notes, sep


def read_table(
    source: Any,
    *,
    delimiter: str | None = None,
    decimal: str = ".",
) -> Table:
    """Read data from a CSV/TSV/Parquet path, a pandas DataFrame or a polars DataFrame.

    CSV: the delimiter (``,`` ``;`` tab) is detected unless given (``Table.delimiter`` says
    which was used); ``NA``, ``NaN``, empty and ``.`` are missing values; a leading R row-name
    column (header one field short) is dropped, with a note in ``Table.notes``. Labels are
    kept as read (integers stay integers, strings stay strings). Raises :class:`DataError`
    for a missing or unreadable file, an empty table (0 rows), duplicate column names and
    rows with more fields than the header.
    """
    notes: list[str] = []
    sep: str | None = None
    if isinstance(source, Table):
        return source
    if isinstance(source, pd.DataFrame):
        frame = source.copy()
        name = "<DataFrame>"
    elif type(source).__module__.startswith("polars"):
        frame = source.to_pandas()
        name = "<polars DataFrame>"
    elif isinstance(source, str | Path):
        path = Path(source)
        name = str(path)
        if not path.exists():
            raise DataError(f"cannot read data file '{path}': {os.strerror(errno.ENOENT)}")
        if path.suffix.lower() in (".parquet", ".pq"):
            try:
                frame = pd.read_parquet(path)
            except Exception as err:  # noqa: BLE001 - pyarrow raises many types
                reason = getattr(err, "strerror", None) or str(err)
                raise DataError(f"cannot read data file '{path}': {reason}") from err
        else:
            frame, notes, sep = _read_csv(path, delimiter, decimal)
    else:
        raise DataError(
            f"cannot read data of type {type(source).__name__}; pass a file path, "
            "a pandas DataFrame or a polars DataFrame"
        )
    columns = [str(c) for c in frame.columns]
    dup = _duplicate_error(columns, "")
    if dup is not None:
        raise dup
    frame.columns = columns
    if len(frame) == 0:
        what = "only a header" if len(columns) else "no columns"
        raise DataError(
            f"data has no observations (0 rows): {name} has {what}; give a table with at "
            "least one data row"
        )
    for note in notes:
        log.info(note)
    frame = frame.reset_index(drop=True)
    return Table(frame, name, frame_sha256(frame), tuple(notes), delimiter=sep)


def frame_sha256(frame: pd.DataFrame) -> str:
    """A content hash of a frame (values and column names), for provenance."""
    h = hashlib.sha256()
    h.update("\x1f".join(map(str, frame.columns)).encode())
    h.update(pd.util.hash_pandas_object(frame, index=False).values.tobytes())
    return h.hexdigest()
