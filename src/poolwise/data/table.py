"""Reading tables: CSV (delimiter detection, quoted headers, NA tokens, R row names; plain or
gzip / bz2 / xz compressed, recognised by content, not by name), Parquet, pandas and polars
frames. Nothing is dropped or remapped here; validation of the columns a
model uses happens when data is bound to a formula (:mod:`poolwise.data.design`)."""

from __future__ import annotations

import bz2
import csv
import errno
import gzip
import hashlib
import io
import logging
import lzma
import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from poolwise.errors import DataError, SpecError

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
    #: the decimal mark the CSV was read with; None for frames and Parquet
    decimal: str | None = None
    #: a table of distinct row patterns (from :mod:`poolwise.data.ingest`): the rows each entry of
    #: ``frame`` stands for, and the 1-based source row number of its first row; None for a
    #: table of rows
    counts: Any = None
    row_number: Any = None
    #: warnings of rules already applied to the rows (rows dropped by the data engine)
    warnings: tuple[str, ...] = ()
    #: weights applied by the data engine (:mod:`poolwise.data.weights`): their column and
    #: kind, and per entry the rows it stands for, the sum of their weights and of their
    #: squares, (entries, 3); frequency weights are in ``counts`` then. None: no weights
    weights_column: str | None = None
    weights_kind: str | None = None
    weight_stats: Any = None


def _sniff_delimiter(head: str) -> str:
    best, best_score = ",", -1
    for d in _DELIMITERS:
        # csv.reader over the text (not over split lines): a quoted field may hold line breaks
        reader = csv.reader(io.StringIO(head, newline=""), delimiter=d)
        try:
            counts = [len(r) for r, _ in zip((r for r in reader if r), range(20), strict=False)]
        except csv.Error:
            continue
        if not counts:
            continue
        # consistent and > 1 fields wins; ties go to the most fields
        consistent = sum(c == counts[-1] for c in counts)
        score = consistent * 1000 + counts[-1] if counts[-1] > 1 else 0
        if score > best_score:
            best, best_score = d, score
    return best


def _check_delimiter(delimiter: str | None, decimal: str) -> str | None:
    """The delimiter as one character (``\\t`` and ``tab`` are a tab); SpecError otherwise."""
    if decimal not in (".", ","):
        raise SpecError(f"decimal must be '.' or ','; got {decimal!r}")
    if delimiter is None:
        return None
    if not isinstance(delimiter, str):
        raise SpecError(f"delimiter must be a single character such as ',', ';' or a tab; got "
                        f"{delimiter!r}")
    d = {"\\t": "\t", "tab": "\t", "TAB": "\t"}.get(delimiter, delimiter)
    if len(d) != 1 or d in ('"', "\r", "\n") or (d.isalnum() and d.isascii()):
        raise SpecError(
            f"delimiter must be a single character such as ',', ';', '|' or a tab ('\\t'); got "
            f"{delimiter!r}"
        )
    if d == decimal:
        raise SpecError(
            f"delimiter and decimal mark are both {d!r}; a number such as 1{d}5 could not be "
            "told from two fields - pass another delimiter or decimal"
        )
    return d


#: leading bytes of the compressed and binary formats a data file may come in
_GZIP, _BZ2, _XZ = b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00"
_ZSTD, _ZIP, _PARQUET = b"\x28\xb5\x2f\xfd", b"PK\x03\x04", b"PAR1"
#: bytes that never occur in a text table (C0 controls except tab, line breaks, form feed)
_BINARY_BYTES = bytes(i for i in range(32) if i not in (9, 10, 12, 13)) + b"\x7f"
_BINARY_SHARE = 0.05


def _decompress(path: Path, raw: bytes) -> bytes:
    """The file's bytes, decompressed when they start like gzip, bz2 or xz (whatever the name)."""
    for magic, name, opener in ((_GZIP, "gzip", gzip.decompress), (_BZ2, "bzip2", bz2.decompress),
                                (_XZ, "xz", lzma.decompress)):
        if raw.startswith(magic):
            try:
                return opener(raw)
            except (OSError, EOFError, ValueError, lzma.LZMAError, zlib.error) as err:
                raise DataError(
                    f"cannot read data file '{path}': it is {name}-compressed but could not be "
                    f"decompressed ({err or type(err).__name__}); the file is damaged or "
                    "truncated"
                ) from None
    for magic, name in ((_ZSTD, "zstd-compressed"), (_ZIP, "a zip archive")):
        if raw.startswith(magic):
            raise DataError(
                f"cannot read data file '{path}': it is {name}; extract the CSV first (poolwise "
                "reads CSV / TSV, plain or gzip / bz2 / xz compressed, and Parquet)"
            )
    return raw


def _decode(path: Path, raw: bytes, notes: list[str]) -> str:
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):  # UTF-16 with a byte-order mark (Excel)
        try:
            return raw.decode("utf-16")
        except UnicodeDecodeError as err:
            raise DataError(f"cannot read data file '{path}': it starts like UTF-16 text but is "
                            f"not valid UTF-16 ({err.reason} at byte {err.start})") from None
    sample = raw[:65536]
    nul_share = sample.count(0) / max(1, len(sample))
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = None
    # control bytes alone do not make a file binary (labels may hold escape sequences); not
    # being UTF-8 as well, or being mostly NUL bytes (UTF-16 without a byte-order mark), does
    binary = sum(sample.count(b) for b in _BINARY_BYTES)
    if (text is None and binary > _BINARY_SHARE * len(sample)) or nul_share > 0.1:
        raise DataError(
            f"cannot read data file '{path}': it is not a text table ({binary} of the first "
            f"{len(sample)} bytes are binary control bytes); poolwise reads CSV / TSV (UTF-8, "
            "Latin-1 or UTF-16 with a byte-order mark), plain or gzip / bz2 / xz compressed, "
            "and Parquet"
        )
    if text is not None:
        return text
    notes.append(f"'{path.name}' is not UTF-8; read it as Latin-1")
    return raw.decode("latin-1")


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


def _read_text(path: Path, notes: list[str]) -> str:
    """The file's text: read, decompressed and decoded; DataError for an empty file."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise DataError(f"cannot read data file '{path}': {err.strerror or err}") from err
    raw = _decompress(path, raw)
    text = _decode(path, raw, notes)
    if not text.strip():
        raise DataError(f"data has no observations (0 rows): '{path}' is empty")
    return text


def _head_rows(path: Path, text: str, sep: str) -> list[list[str]]:
    """The non-empty rows of the first 200,000 characters (whole lines only), parsed as CSV."""
    head = text[:200000]
    if len(text) > len(head) and "\n" in head:
        head = head[: head.rindex("\n")]  # drop a line cut in the middle
    try:
        rows = [r for r in csv.reader(io.StringIO(head, newline=""), delimiter=sep) if r]
    except csv.Error as err:
        raise DataError(
            f"cannot read '{path}' as a {sep!r}-delimited table: {err}; check the delimiter "
            "(delimiter=...) and quoting"
        ) from None
    if not rows:
        raise DataError(f"data has no observations (0 rows): '{path}' has no fields")
    return rows


def _row_names_column(path: Path, sep: str, rows: list[list[str]], notes: list[str]
                      ) -> int | None:
    """0 when the first column holds R row names (the header one field short), else None;
    DataError for a duplicate column name or a row with more fields than the header."""
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
    return index_col


def _parse_csv(path: Path, text: str, sep: str, decimal: str, index_col: int | None,
               n_header: int) -> pd.DataFrame:
    """The whole text read by pandas (missing-value tokens: :data:`NA_TOKENS`); DataError
    naming the line for a parser error."""
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
    except pd.errors.EmptyDataError:
        raise DataError(f"data has no observations (0 rows): '{path}' has no fields") from None
    except (pd.errors.ParserError, csv.Error, ValueError) as err:
        m = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(err))
        detail = (
            f"the header has {n_header} fields but line {m.group(2)} has {m.group(3)}"
            if m
            else str(err).strip()
        )
        raise DataError(
            f"cannot read '{path}' as a {sep!r}-delimited table: {detail}; check the "
            "delimiter (delimiter=...) and quoting"
        ) from None
    if index_col is not None:
        frame = frame.reset_index(drop=True)
    return frame


def _read_csv(
    path: Path, delimiter: str | None, decimal: str
) -> tuple[pd.DataFrame, list[str], str]:
    """A CSV file as a frame, the notes on how it was read, and the delimiter used."""
    notes: list[str] = []
    text = _read_text(path, notes)
    sep = delimiter or _sniff_delimiter(text[:20000])
    if delimiter is None and sep != ",":
        notes.append(f"detected delimiter {sep!r} in '{path.name}'")
    rows = _head_rows(path, text, sep)
    index_col = _row_names_column(path, sep, rows, notes)
    frame = _parse_csv(path, text, sep, decimal, index_col, len(rows[0]))
    return frame, notes, sep


def _read_file(path: Path, delimiter: str | None, decimal: str
               ) -> tuple[pd.DataFrame, list[str], str | None]:
    """A Parquet file (by its name or its first bytes) or a CSV file: the frame, the notes and
    the CSV delimiter (None for Parquet)."""
    if not path.exists():
        raise DataError(f"cannot read data file '{path}': {os.strerror(errno.ENOENT)}")
    if path.suffix.lower() in (".parquet", ".pq") or _starts_with(path, _PARQUET):
        try:
            return pd.read_parquet(path), [], None
        except Exception as err:  # noqa: BLE001 - pyarrow raises many types
            reason = getattr(err, "strerror", None) or str(err)
            raise DataError(f"cannot read data file '{path}': {reason}") from err
    return _read_csv(path, delimiter, decimal)


def _source_frame(source: Any, delimiter: str | None, decimal: str
                  ) -> tuple[pd.DataFrame, str, list[str], str | None]:
    """The frame of a pandas or polars frame or a file, its name for messages, the notes on
    how it was read and the CSV delimiter used (None but for CSV files)."""
    if isinstance(source, pd.DataFrame):
        return source.copy(), "<DataFrame>", [], None
    if type(source).__module__.startswith("polars"):
        return source.to_pandas(), "<polars DataFrame>", [], None
    if isinstance(source, str | Path):
        path = Path(source)
        frame, notes, sep = _read_file(path, delimiter, decimal)
        return frame, str(path), notes, sep
    raise DataError(
        f"cannot read data of type {type(source).__name__}; pass a file path, "
        "a pandas DataFrame or a polars DataFrame"
    )


def read_table(
    source: Any,
    *,
    delimiter: str | None = None,
    decimal: str = ".",
) -> Table:
    """Read data from a CSV/TSV/Parquet path, a pandas DataFrame or a polars DataFrame.

    CSV: ``NA``, ``NaN``, empty and ``.`` are missing values; a leading R row-name column
    (header one field short) is dropped, with a note in ``Table.notes``. Labels are kept as read
    (integers stay integers, strings stay strings). gzip, bz2 and xz files are decompressed and
    Parquet is recognised by their first bytes, whatever the file name; UTF-8 (with or without
    BOM), UTF-16 with a BOM and Latin-1 text are read; quoted fields may hold line breaks (LF,
    CRLF or CR).

    Parameters
    ----------
    source : str, pathlib.Path, pandas.DataFrame or polars.DataFrame
        A file path or a data frame.
    delimiter : str or None, default None
        The CSV field delimiter, one character (``"\\t"`` and ``"tab"`` mean a tab); None detects
        it among ``,`` ``;`` and tab (``Table.delimiter`` says which was used).
    decimal : {".", ","}, default "."
        The decimal mark of numbers in a CSV file.

    Returns
    -------
    Table
        The data frame with its source, SHA-256, notes and the delimiter / decimal mark used.

    Raises
    ------
    DataError
        For a missing or unreadable file, binary content, an empty table (0 rows), duplicate
        column names and rows with more fields than the header.
    SpecError
        For a ``delimiter`` that is not one character or a ``decimal`` other than ``.`` / ``,``.
    """
    delimiter = _check_delimiter(delimiter, decimal)
    if isinstance(source, Table):
        return source
    frame, name, notes, sep = _source_frame(source, delimiter, decimal)
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
    return Table(frame, name, frame_sha256(frame), tuple(notes), delimiter=sep,
                 decimal=decimal if sep is not None else None)


def _starts_with(path: Path, magic: bytes) -> bool:
    try:
        with path.open("rb") as fh:
            return fh.read(len(magic)) == magic
    except OSError:
        return False  # reported by the CSV reader with the OS reason


def frame_sha256(frame: pd.DataFrame) -> str:
    """A content hash of a frame (values and column names), for provenance."""
    h = hashlib.sha256()
    h.update("\x1f".join(map(str, frame.columns)).encode())
    h.update(pd.util.hash_pandas_object(frame, index=False).values.tobytes())
    return h.hexdigest()
