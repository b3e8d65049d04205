"""Reading tables: CSV (delimiter detection, quoted headers, NA tokens, R row names), Parquet,
pandas and polars frames. Nothing is dropped or remapped here; validation of the columns a
model uses happens when data is bound to a formula (:mod:`poolwise.design`)."""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from poolwise.errors import DataError, DataWarning

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


def _read_csv(path: Path, delimiter: str | None, decimal: str) -> tuple[pd.DataFrame, list[str]]:
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
    rows = list(csv.reader(io.StringIO(text[:200000]), delimiter=sep))
    rows = [r for r in rows if r]
    header = rows[0]
    dupes = [h for i, h in enumerate(header) if h in header[:i]]
    if dupes:
        first = dupes[0]
        idx = [i + 1 for i, h in enumerate(header) if h == first]
        raise DataError(
            f"duplicate column name '{first}' (columns {', '.join(map(str, idx))}) in '{path}'; "
            "rename one of them"
        )
    index_col: int | None = None
    if len(rows) > 1 and len(rows[1]) == len(header) + 1:
        index_col = 0
        notes.append(
            f"first column treated as row names (header has {len(header)} fields, "
            f"rows have {len(header) + 1})"
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
        raise DataError(f"cannot parse '{path}' as a {sep!r}-delimited table: {err}") from err
    if index_col is not None:
        frame = frame.reset_index(drop=True)
    return frame, notes


def read_table(
    source: Any,
    *,
    delimiter: str | None = None,
    decimal: str = ".",
) -> Table:
    """Read data from a CSV/TSV/Parquet path, a pandas DataFrame or a polars DataFrame.

    CSV: the delimiter (``,`` ``;`` tab) is detected unless given; ``NA``, empty and ``.`` are
    missing values; a leading R row-name column (header one field short) is dropped, with a
    note. Labels are kept as read (integers stay integers, strings stay strings).
    """
    notes: list[str] = []
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
            raise DataError(f"cannot read data file '{path}': no such file")
        if path.suffix.lower() in (".parquet", ".pq"):
            try:
                frame = pd.read_parquet(path)
            except Exception as err:  # noqa: BLE001 - pyarrow raises many types
                raise DataError(f"cannot read data file '{path}': {err}") from err
        else:
            frame, notes = _read_csv(path, delimiter, decimal)
    else:
        raise DataError(
            f"cannot read data of type {type(source).__name__}; pass a file path, "
            "a pandas DataFrame or a polars DataFrame"
        )
    if frame.columns.duplicated().any():
        first = str(frame.columns[frame.columns.duplicated()][0])
        idx = [i + 1 for i, c in enumerate(frame.columns) if c == first]
        raise DataError(
            f"duplicate column name '{first}' (columns {', '.join(map(str, idx))}); rename one"
        )
    frame.columns = [str(c) for c in frame.columns]
    if len(frame) == 0:
        raise DataError(f"data has no observations (0 rows) in {name}")
    for note in notes:
        log.info(note)
        if note.startswith("first column treated as row names"):
            warnings.warn(note, DataWarning, stacklevel=2)
    return Table(frame.reset_index(drop=True), name, frame_sha256(frame), tuple(notes))


def frame_sha256(frame: pd.DataFrame) -> str:
    """A content hash of a frame (values and column names), for provenance."""
    h = hashlib.sha256()
    h.update("\x1f".join(map(str, frame.columns)).encode())
    h.update(pd.util.hash_pandas_object(frame, index=False).values.tobytes())
    return h.hexdigest()
