"""Out-of-core data: rows are validated and counted into patterns inside a data engine, and
only the patterns come back to Python.

Files (CSV, Parquet, a glob or a folder of Parquet files) go through **DuckDB** (embedded, the
default); a **Spark** DataFrame goes through Spark SQL, so data that outgrow one machine are
aggregated where they live. Both run the same SQL text (the few dialect differences are in
:class:`_Dialect`). A DuckDB relation is accepted too.

Folders as Spark and Hive write them (docs/reliability.md R.19): every data file in a folder
and in the folders below it is read (Spark output folders named ``*.parquet`` included), in
path order, skipping what is written beside the data (names starting with ``_`` or ``.``:
``_SUCCESS``, ``_temporary/``, ``.crc`` checksums); ``key=value`` folders below the folder
given are columns (DuckDB's ``hive_partitioning``). DuckDB gets each file's path literally
(:func:`_glob_escape`), so a file named ``a*b.parquet`` is that one file.

What runs in the engine, before anything is sampled:

* the row-level rules of RELIABILITY.md section 7 that name rows: missing values [§7.5, §7.29],
  infinite values [§7.18], text in a numeric column [§7.19], a Bernoulli outcome that is not
  0/1 or has two values without ``success=`` [§7.8-10], counts that are fractions or negative
  [§7.14-15], successes > trials [§7.13], trials = 0 [§7.16]. The messages are built by the
  same functions as the pandas checks (:mod:`poolwise.data.validate`), with the first offending
  values and the 1-based row numbers of the first offending rows (in a glob or a folder, rows
  are counted across the files in path order; for a Spark DataFrame, in its partition order);
* ``GROUP BY`` the model's columns (the outcome included): one *pattern* per distinct
  combination, with the number of rows it stands for and its first row; with ``weights=``
  (:mod:`poolwise.data.weights`, checked here by the same rules [R.22-R.29]) also the sum of
  its rows' weights and of their squares: frequency weights become the pattern's count (SUM
  of the weights where rows are counted).

The patterns are then bound to the formula by :func:`poolwise.data.design.build_design` as a
:class:`~poolwise.data.Table` with ``counts``: the rules that need no row numbers (constant
outcome or predictor, scale, levels, groups) run there, weighted by the counts, and the design
has exactly the cells, in the same order, that the same rows give through pandas. Peak memory
follows the patterns, not the rows.

Importing this module imports neither DuckDB nor PySpark; they are imported when used.

Why one module: the one SQL text that DuckDB and Spark both run, its small dialect class
and the adapters for files, relations and Spark DataFrames change together.
"""

from __future__ import annotations

import glob as globlib
import hashlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from poolwise.data import validate as V
from poolwise.data.table import NA_TOKENS, Table
from poolwise.errors import DataError
from poolwise.formula import Formula

__all__ = ["FileSource", "ENGINE_MIN_BYTES", "ENGINE_MIN_ROWS", "wants_engine", "read_patterns"]

#: a single CSV file at least this large is read by DuckDB rather than pandas
ENGINE_MIN_BYTES = 32 * 2**20
#: a single Parquet file with at least this many rows (from its footer) is read by DuckDB
ENGINE_MIN_ROWS = 1_000_000
_ENGINE_SUFFIXES = (".parquet", ".pq", ".csv", ".tsv", ".txt")
_PARQUET = (".parquet", ".pq")


@dataclass(frozen=True)
class FileSource:
    """A file, a glob or a folder of files to be read by DuckDB, with the CSV options."""

    path: str
    delimiter: str | None = None
    decimal: str = "."


def _module(data: Any) -> str:
    return type(data).__module__ or ""


def wants_engine(data: Any) -> bool:
    """True for data that go through a data engine: a :class:`FileSource`, a DuckDB relation,
    a Spark DataFrame, a glob or a folder of files, a Parquet file of at least
    :data:`ENGINE_MIN_ROWS` rows or a CSV file of at least :data:`ENGINE_MIN_BYTES`. Small
    files and in-memory frames keep the pandas path."""
    if isinstance(data, FileSource):
        return True
    mod = _module(data)
    if mod.startswith("duckdb") or mod.startswith("pyspark"):
        return True
    if isinstance(data, str | Path):
        p = Path(data)
        if p.is_dir():  # a folder of data files (nested, partitioned), or one that says why not
            return True
        if not p.exists():
            return globlib.has_magic(str(data))
        suffix = p.suffix.lower()
        if suffix in _PARQUET:
            return _parquet_rows(p) >= ENGINE_MIN_ROWS
        return suffix in _ENGINE_SUFFIXES and p.stat().st_size >= ENGINE_MIN_BYTES
    return False


def _parquet_rows(path: Path) -> int:
    """Rows in a Parquet file's footer; 0 when it cannot be read (pandas then says why)."""
    import pyarrow.parquet as pq

    try:
        return int(pq.ParquetFile(path).metadata.num_rows)
    except Exception:  # noqa: BLE001 - not Parquet after all: the pandas reader reports it
        return 0


# -- engines -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Dialect:
    name: str

    def q(self, col: str) -> str:
        if self.name == "spark":
            return "`" + col.replace("`", "``") + "`"
        return '"' + col.replace('"', '""') + '"'

    def full_match(self, expr: str, pattern: str) -> str:
        lit = "'" + pattern.replace("\\", "\\\\" if self.name == "spark" else "\\").replace(
            "'", "''"
        ) + "'"
        if self.name == "spark":
            return f"({expr} RLIKE {lit[0]}^(?:{lit[1:-1]})${lit[-1]})"
        return f"regexp_full_match({expr}, {lit})"


def _kind(type_name: str) -> str:
    t = type_name.upper()
    if t.startswith("BOOL"):
        return "bool"
    if t.startswith("INTERVAL"):
        return "other"
    if any(t.startswith(p) for p in ("TINYINT", "SMALLINT", "INT", "BIGINT", "HUGEINT",
                                      "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT",
                                      "UHUGEINT", "LONG", "SHORT", "BYTE")):
        return "int"
    if any(t.startswith(p) for p in ("FLOAT", "DOUBLE", "DECIMAL", "REAL")):
        return "float"
    if t.startswith("VARCHAR") or t.startswith("STRING") or t.startswith("CHAR"):
        return "str"
    return "other"


class _Engine:
    """Runs SQL text on a source that has every column plus ``_rn``, the 1-based row number."""

    dialect: _Dialect
    columns: dict[str, str]  # name -> kind
    source: str
    delimiter: str | None = None

    def src(self, cols: Sequence[str], rn: bool = True) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def fetch(self, sql: str) -> list[tuple[Any, ...]]:  # pragma: no cover - abstract
        raise NotImplementedError

    def sha256(self) -> str | None:
        return None


class _DuckDB(_Engine):
    def __init__(self, data: Any) -> None:
        import duckdb

        self.dialect = _Dialect("duckdb")
        self.relation = None
        self.files: list[str] = []
        self.root = ""
        self.con = duckdb.connect()
        if _module(data).startswith("duckdb"):
            self.relation = data
            self.source = "<DuckDB relation>"
            self.scan = "_poolwise_raw"
            described = list(zip(data.columns, [str(t) for t in data.types], strict=True))
        else:
            src = data if isinstance(data, FileSource) else FileSource(str(data))
            found = _expand(src.path)
            self.files, self.root = found.files, found.root
            self.source = src.path
            self.delimiter = src.delimiter
            self.scan = _file_scan(src, found)
            try:
                described = [
                    (r[0], str(r[1])) for r in self.con.sql(f"DESCRIBE SELECT * FROM {self.scan}")
                    .fetchall()
                ]
            except duckdb.Error as err:
                raise DataError(f"cannot read data file '{self.source}': {err}") from err
            # key=value folders above the folder given are not partitions of these data
            described = [(n, t) for n, t in described if n not in found.outer_keys]
        self.columns = {name: _kind(t) for name, t in described}

    def src(self, cols: Sequence[str], rn: bool = True) -> str:
        q = self.dialect.q
        sel = ", ".join(
            q(c) if self.columns[c] != "other" else f"CAST({q(c)} AS VARCHAR) AS {q(c)}"
            for c in cols
        )
        if not rn:
            return f"SELECT {sel} FROM {self.scan}"
        # row_number() over () follows the scan order (insertion order is preserved), and
        # DuckDB computes it with a streaming operator
        return f"SELECT {sel}, row_number() OVER () AS _rn FROM {self.scan}"

    def fetch(self, sql: str) -> list[tuple[Any, ...]]:
        import duckdb

        try:
            if self.relation is not None:
                return self.relation.query(self.scan, sql).fetchall()
            return self.con.sql(sql).fetchall()
        except duckdb.Error as err:
            raise DataError(f"cannot read data '{self.source}': {err}") from err

    def sha256(self) -> str | None:
        """The bytes of a single file; for several (a glob, a folder): each file's path below
        the folder given (partition values live there), its size and its bytes, in the order
        they are read."""
        if not self.files:
            return None
        h = hashlib.sha256()
        several = len(self.files) > 1
        for f in self.files:
            if several:
                rel = os.path.relpath(f, self.root)
                h.update(f"{rel}\0{os.path.getsize(f)}\0".encode("utf-8", "surrogateescape"))
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 22), b""):
                    h.update(block)
        return h.hexdigest()


def _file_scan(src: FileSource, found: _Files) -> str:
    """The DuckDB table function that reads the files: each path literally (DuckDB would glob
    a ``*``, ``?`` or ``[`` in a file's name again); partition folders (``key=value``) below
    the folder given become columns, as DuckDB's ``hive_partitioning`` reads them."""
    paths = _str_list([_glob_escape(f) for f in found.files])
    hive = f"hive_partitioning = {'true' if found.partitions else 'false'}"
    if found.parquet:
        return f"read_parquet({paths}, {hive})"
    opts = [
        hive,
        "header = true",
        "sample_size = -1",  # types from every row: a stray text value -> VARCHAR
        f"nullstr = {_str_list(NA_TOKENS)}",
    ]
    if src.delimiter:
        opts.append(f"delim = {_str_lit(src.delimiter)}")
    if src.decimal != ".":
        opts.append(f"decimal_separator = {_str_lit(src.decimal)}")
    return f"read_csv({paths}, {', '.join(opts)})"


class _Spark(_Engine):
    def __init__(self, df: Any) -> None:
        self.dialect = _Dialect("spark")
        self.df = df
        self.spark = df.sparkSession
        self.source = "<Spark DataFrame>"
        self.columns = {name: _kind(t) for name, t in df.dtypes}
        tag = f"{os.getpid()}_{id(df)}"
        self.raw = f"_poolwise_raw_{tag}"
        self.offsets = f"_poolwise_off_{tag}"
        # row numbers. A DataFrame read from Parquet files: position in its file + the rows of
        # the files before it in name order, as DuckDB counts a glob. Otherwise: the offset of
        # each partition + position in it (monotonically_increasing_id puts the partition in
        # the upper 31 bits), in the DataFrame's partition order.
        try:
            df = df.selectExpr(
                "*", "_metadata.file_path AS _poolwise_file", "_metadata.row_index AS _poolwise_idx"
            )
            self.by_file = True
        except Exception:  # noqa: BLE001 - not a file scan (AnalysisException)
            self.by_file = False
        df.createOrReplaceTempView(self.raw)
        key = "_poolwise_file" if self.by_file else "spark_partition_id()"
        counts = self.spark.sql(
            f"SELECT {key} AS _p, count(*) AS _c FROM {self.raw} GROUP BY 1"
        ).collect()
        pairs = sorted((r[0], int(r[1])) for r in counts)
        offs, total = [], 0
        for p, c in pairs:
            offs.append((p, total))
            total += c
        if self.by_file:
            values = ", ".join(f"({_str_lit(str(p))}, CAST({o} AS BIGINT))" for p, o in offs)
        else:
            values = ", ".join(f"({p}, CAST({o} AS BIGINT))" for p, o in (offs or [(0, 0)]))
        if not values:
            values = "('', CAST(0 AS BIGINT))"
        # SQL, not createDataFrame: no Python worker is needed anywhere
        self.spark.sql(
            f"CREATE OR REPLACE TEMPORARY VIEW {self.offsets} AS "
            f"SELECT * FROM VALUES {values} AS t(_p, _off)"
        )

    def src(self, cols: Sequence[str], rn: bool = True) -> str:
        q = self.dialect.q
        sel = ", ".join(
            q(c) if self.columns[c] != "other" else f"CAST({q(c)} AS STRING) AS {q(c)}"
            for c in cols
        )
        if not rn:
            return f"SELECT {sel} FROM {self.raw}"
        inner = ", ".join(f"r.{q(c)}" for c in cols)
        if self.by_file:
            return (
                f"SELECT {inner}, o._off + r._poolwise_idx + 1 AS _rn FROM (SELECT {sel}, "
                f"_poolwise_file, _poolwise_idx FROM {self.raw}) r "
                f"JOIN {self.offsets} o ON r._poolwise_file = o._p"
            )
        return (
            f"SELECT {inner}, o._off + (r._mid - shiftleft(CAST(r._p AS BIGINT), 33)) + 1 AS _rn "
            f"FROM (SELECT {sel}, spark_partition_id() AS _p, "
            "monotonically_increasing_id() AS _mid "
            f"FROM {self.raw}) r JOIN {self.offsets} o ON r._p = o._p"
        )

    def fetch(self, sql: str) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in self.spark.sql(sql).collect()]

    def close(self) -> None:
        self.spark.catalog.dropTempView(self.raw)
        self.spark.catalog.dropTempView(self.offsets)


def _str_lit(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _str_list(items: Sequence[str]) -> str:
    return "[" + ", ".join(_str_lit(s) for s in items) + "]"


@dataclass(frozen=True)
class _Files:
    """The data files of a path, in the order they are read (path order), the folder they are
    under (the folder given, or a glob's folder before its first wildcard), whether they are
    Parquet, the partition keys (``key=value`` folders) below that folder, and the keys of
    ``key=value`` folders above it (not columns of these data)."""

    files: list[str]
    root: str
    parquet: bool
    partitions: frozenset[str]
    outer_keys: frozenset[str]


def _skipped(name: str) -> bool:
    """What Spark, Hadoop and Hive write beside the data: ``_SUCCESS``, ``_committed_*``,
    ``_temporary/``, ``.crc`` checksums, hidden files and folders."""
    return name.startswith(("_", ".")) or name.lower().endswith(".crc")


def _folder_files(root: str) -> list[str]:
    """The data files in a folder and every folder below it (Spark output folders, whose
    names may end in ``.parquet``; ``key=value`` partition folders), in path order."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not _skipped(d)]
        out.extend(
            os.path.join(dirpath, f) for f in filenames
            if not _skipped(f) and Path(f).suffix.lower() in _ENGINE_SUFFIXES
        )
    return sorted(out)


def _glob_root(pattern: str) -> str:
    """The folder of a glob before its first wildcard."""
    parts = Path(pattern).parts
    fixed = []
    for part in parts[:-1]:
        if globlib.has_magic(part):
            break
        fixed.append(part)
    return str(Path(*fixed)) if fixed else "."


def _keys(folder: str) -> set[str]:
    return {part.split("=", 1)[0] for part in Path(folder).parts if "=" in part[1:]}


def _expand(path: str) -> _Files:
    """The files of a file, a folder (every data file below it) or a glob (a folder it
    matches: every data file below that folder)."""
    p = Path(path)
    if p.is_dir():
        files, root = _folder_files(path), path
        if not files:
            raise DataError(
                f"cannot read data file '{path}': it is a folder with no data files in it or "
                f"below it (names ending in {', '.join(_ENGINE_SUFFIXES)}; names starting with "
                "'_' or '.' are skipped); give a file, a glob or a folder of the data"
            )
    elif p.exists():
        files, root = [str(p)], str(p.parent)
    else:
        root = _glob_root(path)
        files = []
        for match in sorted(globlib.glob(path, recursive=True)):
            if any(_skipped(part) for part in Path(os.path.relpath(match, root)).parts):
                continue  # below the wildcards: nothing that Spark writes beside the data
            files.extend(_folder_files(match) if os.path.isdir(match) else [match])
        files = sorted(dict.fromkeys(files))
    if not files:
        raise DataError(f"cannot read data file '{path}': {os.strerror(2)} (no file matches)")
    parquet = [Path(f).suffix.lower() in _PARQUET for f in files]
    if any(parquet) and not all(parquet):
        other = next(f for f, pq in zip(files, parquet, strict=True) if not pq)
        raise DataError(
            f"cannot read data '{path}': it holds Parquet files and other files (such as "
            f"'{other}'); give a glob that matches only one kind, e.g. '{path}/**/*.parquet'"
        )
    below: set[str] = set()
    for f in files:
        below |= _keys(os.path.relpath(os.path.dirname(f), root))
    outer = _keys(os.path.abspath(root)) - below if below else set()  # hive reads them too
    return _Files(files, root, all(parquet), frozenset(below), frozenset(outer))


def _glob_escape(path: str) -> str:
    """A path that DuckDB's glob matches literally: ``*``, ``?`` and ``[`` in brackets."""
    return re.sub(r"([*?\[])", r"[\1]", path)


# -- the checks ----------------------------------------------------------------------------


class _Checker:
    """The row-level rules as SQL; ``where`` grows as rows are dropped (as in the pandas path)."""

    def __init__(self, engine: _Engine, f: Formula, cols: Sequence[str] | None = None,
                 weights: str | None = None) -> None:
        self.e = engine
        self.f = f
        # the data columns the formula reads (inside expressions too): expressions are
        # evaluated on the patterns by build_design; then the weights column, if any
        self.cols = list(f.source_columns if cols is None else cols)
        self.weights = weights
        if weights is not None and weights not in self.cols:
            self.cols.append(weights)
        self.with_src = f"WITH src AS ({engine.src(self.cols)}) "
        # without row numbers, for counts: Spark then needs no join with partition offsets
        self.with_plain = f"WITH src AS ({engine.src(self.cols, rn=False)}) "
        self.where = "TRUE"

    def q(self, col: str) -> str:
        return self.e.dialect.q(col)

    def one(self, select: str) -> tuple[Any, ...]:
        return self.e.fetch(f"{self.with_plain}SELECT {select} FROM src WHERE {self.where}")[0]

    def count(self, cond: str) -> int:
        return int(self.one(f"count_if({cond})")[0])

    def first_rows(self, cond: str, limit: int = 5) -> np.ndarray:
        rows = self.e.fetch(
            f"{self.with_src}SELECT _rn FROM src WHERE {self.where} AND ({cond}) "
            f"ORDER BY _rn LIMIT {limit}"
        )
        return np.array([int(r[0]) for r in rows], dtype=np.int64)

    def rows_text(self, cond: str, count: int, limit: int = 5) -> str:
        """The ``rows 4, 17 and 3 more`` text of :func:`poolwise.data.validate.fmt_rows`."""
        return V.fmt_rows(np.arange(count), self.first_rows(cond, limit), limit=limit)

    def first_values(self, expr: str, cond: str, limit: int = 6) -> list[Any]:
        """The first ``limit`` distinct values of ``expr`` where ``cond``, in row order."""
        rows = self.e.fetch(
            f"{self.with_src}SELECT v FROM (SELECT {expr} AS v, min(_rn) AS r FROM src "
            f"WHERE {self.where} AND ({cond}) GROUP BY {expr}) t ORDER BY r LIMIT {limit}"
        )
        return [r[0] for r in rows]

    def num(self, col: str) -> str:
        """The column as DOUBLE (text that is not a number: NULL)."""
        kind = self.e.columns[col]
        if kind in ("str", "other"):
            return f"TRY_CAST({self.q(col)} AS DOUBLE)"
        return f"CAST({self.q(col)} AS DOUBLE)"

    def missing(self, col: str) -> str:
        if self.e.columns[col] == "float":
            return f"({self.q(col)} IS NULL OR isnan({self.q(col)}))"
        return f"({self.q(col)} IS NULL)"

    def is_inf(self, expr: str) -> str:
        return f"(abs({expr}) = CAST('Infinity' AS DOUBLE))"

    def raise_(self, message: str) -> None:
        raise DataError(message)

    # [§7.19, §7.18] -- as validate._numeric
    def numeric(self, col: str, role: str) -> str:
        kind = self.e.columns[col]
        x = self.num(col)
        if kind in ("str", "other"):
            bad = f"({self.q(col)} IS NOT NULL AND {x} IS NULL)"
            k = self.count(bad)
            if k:
                vals = [str(v) for v in self.first_values(self.q(col), bad)]
                self.raise_(V.not_numeric_message(role, col, vals, self.rows_text(bad, k)))
        if kind != "int":
            inf = self.is_inf(x)
            k = self.count(inf)
            if k:
                vals = self.first_values(x, inf)
                self.raise_(V.infinite_message(role, col, vals, self.rows_text(inf, k)))
        return x

    # [§7.14-15, R.17] -- as validate._whole
    def whole(self, x: str, col: str, what: str) -> None:
        frac = f"({x} <> floor({x}))"
        k = self.count(frac)
        if k:
            self.raise_(V.fraction_message(what, col, self.first_values(x, frac),
                                           self.rows_text(frac, k)))
        neg = f"({x} < 0)"
        k = self.count(neg)
        if k:
            self.raise_(V.negative_message(what, col, self.first_values(x, neg),
                                           self.rows_text(neg, k)))
        big = f"({x} >= {float(V.MAX_COUNT)!r})"  # [R.17]
        k = self.count(big)
        if k:
            self.raise_(V.too_large_message(what, col, self.first_values(x, big),
                                            self.rows_text(big, k)))

    def value_rows(self, expr: str, values: Sequence[Any], counts: Sequence[int]) -> str:
        parts = []
        for v, c in zip(values[:5], counts[:5], strict=False):
            cond = f"({expr} = {_literal(v)})"
            parts.append((v, V.fmt_rows(np.arange(c), self.first_rows(cond, 3), limit=3)))
        return V.value_rows_text(parts)

    # [§7.8-10] -- as validate._bernoulli; what needs no row numbers is left to the patterns
    def bernoulli(self, col: str, success: Any) -> None:
        kind = self.e.columns[col]
        if kind == "bool" and success is None:
            return
        qc = self.q(col)
        table = self.e.fetch(
            f"{self.with_src}SELECT v, c, r, count(*) OVER () AS k FROM (SELECT {qc} AS v, "
            f"count(*) AS c, min(_rn) AS r FROM src WHERE {self.where} GROUP BY {qc}) t "
            "ORDER BY r LIMIT 1000"
        )
        uniq = [t[0] for t in table]
        counts = [int(t[1]) for t in table]
        k = int(table[0][3]) if table else 0
        if success is not None:
            if k > 2:
                match = V._match_success(success, uniq)
                if match is not None:
                    self.raise_(V.levels_message(col, uniq, self.value_rows(qc, uniq, counts),
                                                 match))
            return  # other success= errors name no rows: the patterns get them
        numeric = kind in ("int", "float")
        conv = uniq
        if not numeric:
            conv_s = pd.to_numeric(pd.Series(np.asarray(uniq, dtype=object)), errors="coerce")
            if conv_s.notna().all() and k > 0 and k <= len(uniq):  # '0'/'1' as text
                numeric = True
                conv = list(conv_s.to_numpy(dtype=float))
        if numeric:
            x = self.num(col)
            bad = f"({x} NOT IN (0, 1))"
            nbad = self.count(bad)
            if not nbad:
                return
            whole, nonneg = self.one(
                f"min(CASE WHEN {x} = floor({x}) AND NOT {self.is_inf(x)} THEN 1 ELSE 0 END), "
                f"min(CASE WHEN {x} >= 0 THEN 1 ELSE 0 END)"
            )
            if k == 2 and whole == 1:
                vals = sorted(float(u) for u in conv)
                order = sorted(range(2), key=lambda i: float(conv[i]))
                where = self.value_rows(x, vals, [counts[i] for i in order])
                self.raise_(V.two_values_message(col, vals, where, numeric=True))
            vals = self.first_values(x, bad)
            self.raise_(V.not_binary_message(col, vals, self.rows_text(bad, nbad),
                                             whole=whole == 1, nonneg=nonneg == 1))
        if k == 2:
            self.raise_(V.two_values_message(col, uniq, self.value_rows(qc, uniq, counts),
                                             numeric=False))
        if k > 2:
            self.raise_(V.levels_message(col, uniq, self.value_rows(qc, uniq, counts)))


def _literal(v: Any) -> str:
    if isinstance(v, bool | np.bool_):
        return "TRUE" if v else "FALSE"
    if isinstance(v, int | np.integer):
        return str(int(v))
    if isinstance(v, float | np.floating):
        return repr(float(v))
    return _str_lit(str(v))


def _role(f: Formula, col: str) -> str:
    """The role of a data column: its own, or that of the first expression that reads it."""
    if col in f.columns:
        return V._role(f, col)
    for label in f.columns:
        if col in f.expr(label).columns:
            return V._role(f, label)
    return "predictor"  # pragma: no cover - every source column is read by some label


def _check_rows(chk: _Checker, f: Formula, success: Any, drop_missing: bool,
                weights_kind: str | None = None) -> tuple[list[str], str | None, int]:
    """The rules that name rows, in the order of :func:`poolwise.data.validate.check_model_data`.
    Returns the warnings, the kind of the weights (None without) and the number of rows read."""
    warn, n_all = _missing_rows(chk, f, drop_missing)
    kind = _weight_rows(chk, weights_kind)
    _infinite_rows(chk, f)
    zero = _response_rows(chk, f, success)
    warn += _zero_trial_rows(chk, f, zero)
    _text_in_predictors(chk, f)
    return warn, kind, n_all


def _missing_rows(chk: _Checker, f: Formula, drop_missing: bool) -> tuple[list[str], int]:
    """[§7.5, §7.29] missing values in the model's columns: DataError, or dropped (a warning)
    with ``drop_missing``; also DataError for a table without rows. Returns the warnings and
    the number of rows read."""
    used = chk.cols
    n_all, *miss = chk.one("count(*), " + ", ".join(f"count_if({chk.missing(c)})" for c in used))
    n_all = int(n_all)
    if n_all == 0:
        raise DataError(
            f"data has no observations (0 rows): {chk.e.source} has only a header; give a table "
            "with at least one data row"
        )
    per_col = [(c, int(m)) for c, m in zip(used, miss, strict=True) if m]
    if not per_col:
        return [], n_all
    any_missing = " OR ".join(chk.missing(c) for c, _ in per_col)
    if not drop_missing:
        col, k = per_col[0]
        if col == chk.weights:  # [R.24]
            chk.raise_(V.weights_missing_message(col, k, chk.rows_text(chk.missing(col), k)))
        chk.raise_(V.missing_message(_role(f, col), col, k,
                                     chk.rows_text(chk.missing(col), k),
                                     [c for c, _ in per_col[1:]]))
    k = chk.count(any_missing)
    warn = [V.dropped_missing_message(
        k, n_all, [c for c, _ in per_col], chk.rows_text(any_missing, k)
    )]
    if k == n_all:
        raise DataError("data has no observations (0 rows) after dropping missing values")
    chk.where = f"NOT ({any_missing})"
    return warn, n_all


def _infinite_rows(chk: _Checker, f: Formula) -> None:
    """[§7.18] infinities in the float model columns: DataError."""
    for col in chk.cols:
        if chk.e.columns[col] == "float" and col != chk.weights:
            inf = chk.is_inf(chk.q(col))
            k = chk.count(inf)
            if k:
                vals = chk.first_values(chk.q(col), inf)
                chk.raise_(V.infinite_message(_role(f, col), col, vals, chk.rows_text(inf, k)))


def _weight_rows(chk: _Checker, kind: str | None) -> str | None:
    """The weights' rules, as :func:`poolwise.data.validate._apply_weights`: text and
    infinities [R.29], negative [R.25] and zero [R.26] weights, fractions without
    weights_kind='survey' [R.27], frequency weights of 2^53 or more [R.28]. Returns the kind
    (None without weights)."""
    col = chk.weights
    if col is None:
        return None
    x = chk.numeric(col, "weights")
    neg = f"({x} < 0)"
    k = chk.count(neg)
    if k:
        chk.raise_(V.weights_negative_message(col, chk.first_values(x, neg),
                                              chk.rows_text(neg, k)))
    zero = f"({x} = 0)"
    k = chk.count(zero)
    if k:
        chk.raise_(V.weights_zero_message(col, k, chk.rows_text(zero, k)))
    if kind == "survey":
        return kind
    frac = f"({x} <> floor({x}))"
    k = chk.count(frac)
    if k:
        chk.raise_(V.weights_fraction_message(col, chk.first_values(x, frac),
                                              chk.rows_text(frac, k), kind))
    big = f"({x} >= {float(V.MAX_COUNT)!r})"
    k = chk.count(big)
    if k:
        chk.raise_(V.too_large_message("frequency weights", col, chk.first_values(x, big),
                                       chk.rows_text(big, k)))
    return "frequency"


def _response_rows(chk: _Checker, f: Formula, success: Any) -> str | None:
    """The outcome's rules (0/1 values; whole, numeric counts; successes not above trials).
    Returns the SQL condition of a row without trials (None for 0/1 outcomes and expressions,
    which are checked on the patterns)."""
    r = f.response
    if not all(c in chk.e.columns for c in r.columns):
        return None  # an expression in the response: checked on the patterns (naming first rows)
    if r.kind == "bernoulli":
        chk.bernoulli(r.successes, success)
        return None
    s = chk.numeric(r.successes, "successes")
    chk.whole(s, r.successes, "successes")
    if r.kind == "cbind":
        assert r.failures is not None
        fl = chk.numeric(r.failures, "failures")
        chk.whole(fl, r.failures, "failures")
        chk.whole(f"({s} + {fl})", f"{r.successes} + {r.failures}", "trials")  # [R.17]
        return f"({s} + {fl} = 0)"
    assert r.trials is not None
    t = chk.numeric(r.trials, "trials")
    chk.whole(t, r.trials, "trials")
    over = f"({s} > {t})"
    k = chk.count(over)
    if k:
        pairs = chk.e.fetch(
            f"{chk.with_src}SELECT {s}, {t} FROM src WHERE {chk.where} AND {over} "
            "ORDER BY _rn LIMIT 5"
        )
        chk.raise_(V.exceed_message(k, chk.rows_text(over, k), pairs, r.successes, r.trials))
    return f"({t} = 0)"


def _zero_trial_rows(chk: _Checker, f: Formula, zero: str | None) -> list[str]:
    """[§7.16] rows with 0 trials (``zero``: their SQL condition) are dropped, with a warning;
    DataError when every row has 0 trials."""
    if zero is None:
        return []
    k, n_left = chk.one(f"count_if({zero}), count(*)")
    if not k:
        return []
    r = f.response
    if k == n_left:
        raise DataError(V.all_zero_trials_message(int(n_left), r.trials or r.failures))
    warn = [V.zero_trials_message(int(k), chk.rows_text(zero, int(k)))]
    chk.where = f"{chk.where} AND NOT {zero}"
    return warn


def _text_in_predictors(chk: _Checker, f: Formula) -> None:
    """[§7.19] text in a numeric predictor (as validate._numbers_with_text, then _numeric):
    DataError naming the rows."""
    e = chk.e
    for var in f.predictors:
        if e.columns.get(var, "expr") not in ("str", "other"):  # expressions: on the patterns
            continue  # numbers; infinities were checked above
        qc = chk.q(var)
        # on the distinct values with their row counts: text functions run once per value
        comma_v = e.dialect.full_match("trim(v)", V._DECIMAL_COMMA.pattern)
        nonnull, ok, comma = e.fetch(
            f"{chk.with_plain}SELECT sum(c), sum(CASE WHEN TRY_CAST(v AS DOUBLE) IS NOT NULL "
            f"THEN c ELSE 0 END), count_if({comma_v}) FROM (SELECT CAST({qc} AS "
            f"{'STRING' if e.dialect.name == 'spark' else 'VARCHAR'}) AS v, count(*) AS c "
            f"FROM src WHERE {chk.where} AND {qc} IS NOT NULL GROUP BY {qc}) t"
        )[0]
        nonnull, ok, comma = int(nonnull or 0), int(ok or 0), int(comma or 0)
        if comma or (0 < ok < nonnull and ok >= 0.9 * nonnull):
            chk.numeric(var, "predictor")


def _unused_missing_notes(engine: _Engine, f: Formula, where: str,
                          weights: str | None = None) -> list[str]:
    """[§7.6] missing values in columns the model does not use: a note, nothing dropped."""
    others = [c for c in engine.columns if c not in f.source_columns and c != weights]
    if not others:
        return []
    chk = _Checker(engine, f, list(engine.columns))
    chk.where = where
    counts = chk.one(", ".join(f"count_if({chk.missing(c)})" for c in others))
    return [
        V.unused_missing_note(c, int(k)) for c, k in zip(others, counts, strict=True) if k
    ]


def read_patterns(
    f: Formula,
    data: Any,
    *,
    success: Any = None,
    drop_missing: bool = False,
    weights: str | None = None,
    weights_kind: str | None = None,
) -> Table:
    """Validate ``data`` for ``f`` in its data engine and count its rows into patterns.

    Returns a :class:`~poolwise.data.Table` with one entry per distinct combination of the
    model's columns (outcome included), in order of first appearance, with ``counts`` (rows
    per pattern), ``row_number`` (the first row of each) and the warnings of the rules that
    dropped rows. Raises :class:`~poolwise.errors.DataError` (or
    :class:`~poolwise.errors.FormulaError` for an unknown column) with the same message as
    the pandas path.

    ``weights`` (a column of row weights, :mod:`poolwise.data.weights`) are checked here
    too, and summed where rows are counted: each pattern's ``counts`` are the sum of its
    rows' frequency weights; with survey weights the rows, and ``weight_stats`` holds per
    pattern its rows, the sum of their weights and of their squares.
    """
    engine: _Engine = _Spark(data) if _module(data).startswith("pyspark") else _DuckDB(data)
    try:
        header = Table(pd.DataFrame(columns=list(engine.columns)), engine.source, "",
                       delimiter=engine.delimiter)
        V._check_columns(f, header)  # [§7.3, §7.7] unknown columns, did you mean ...
        if weights is not None:
            V.check_weights_column(f, list(engine.columns), weights)  # [R.22, R.23]
        chk = _Checker(engine, f, weights=weights)
        warn, kind, n_all = _check_rows(chk, f, success, drop_missing, weights_kind)
        notes = _unused_missing_notes(engine, f, chk.where, weights)
        rows = engine.fetch(_patterns_sql(chk))
    finally:
        if isinstance(engine, _Spark):
            engine.close()
    return _patterns_table(engine, chk, rows, warn, notes, kind)


def _patterns_sql(chk: _Checker) -> str:
    """GROUP BY the model's columns: each pattern's rows and first row and, with weights, the
    sum of its rows' weights and of their squares."""
    q = chk.e.dialect.q
    model = [c for c in chk.cols if c != chk.weights]
    cols = ", ".join(q(c) for c in model)
    weighted = ""
    if chk.weights is not None:
        x = chk.num(chk.weights)
        weighted = f"sum({x}) AS _wsum, sum({x} * {x}) AS _wsq, "
    return (f"{chk.with_src}SELECT {cols}, count(*) AS _count, {weighted}min(_rn) AS _first "
            f"FROM src WHERE {chk.where} GROUP BY {cols} ORDER BY _first")


def _patterns_table(engine: _Engine, chk: _Checker, rows: list[tuple[Any, ...]],
                    warn: list[str], notes: list[str], kind: str | None) -> Table:
    """The patterns as a Table: counts (the sums of frequency weights), first rows, and the
    weights' statistics per pattern."""
    model = [c for c in chk.cols if c != chk.weights]
    extra = ["_wsum", "_wsq"] if kind is not None else []
    frame = pd.DataFrame.from_records(rows, columns=[*model, "_count", *extra, "_first"])
    counts = frame.pop("_count").to_numpy(dtype=np.int64)
    first = frame.pop("_first").to_numpy(dtype=np.int64)
    stats = None
    if kind is not None:
        wsum = frame.pop("_wsum").to_numpy(dtype=np.float64)
        stats = np.column_stack([counts.astype(np.float64), wsum,
                                 frame.pop("_wsq").to_numpy(dtype=np.float64)])
        if kind == "frequency":  # a row of weight w stands for w rows
            counts = wsum.astype(np.int64)
    for col in model:  # bool columns stay bool, text stays text
        if engine.columns[col] == "bool":
            frame[col] = frame[col].astype(bool)
    sha = engine.sha256()
    if sha is None:
        from poolwise.data.table import frame_sha256

        hashed = frame.assign(_count=counts)
        if stats is not None:
            hashed = hashed.assign(_wsum=stats[:, 1], _wsq=stats[:, 2])
        sha = frame_sha256(hashed)
    return Table(
        frame, engine.source, sha, tuple(notes), delimiter=engine.delimiter,
        counts=counts, row_number=first, warnings=tuple(warn),
        weights_column=chk.weights if kind is not None else None, weights_kind=kind,
        weight_stats=stats,
    )
