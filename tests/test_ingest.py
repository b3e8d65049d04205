"""Data engines: DuckDB (files, relations) and Spark (DataFrames) validate and count rows into
patterns; the design built from them equals the one pandas builds from the rows."""

from __future__ import annotations

import os
import shutil
import warnings

import numpy as np
import pandas as pd
import pytest

from poolwise.data.design import build_design
from poolwise.data.ingest import FileSource, read_patterns, wants_engine
from poolwise.errors import DataError, FormulaError

JAVA = shutil.which("java") is not None or bool(os.environ.get("JAVA_HOME"))
_needs_java = pytest.mark.skipif(
    not JAVA and not os.environ.get("CI"),
    reason="Spark needs Java (no java on PATH, JAVA_HOME unset); CI runs these tests",
)


def spark_only(test):
    """Spark tests start a JVM (10-20 s): they run in the slow tier, which CI runs, and skip
    only where Java is missing and CI is not set."""
    return pytest.mark.slow(_needs_java(test))


@pytest.fixture(scope="session")
def spark():
    from pyspark.sql import SparkSession

    session = (
        SparkSession.builder.master("local[1]")
        .appName("poolwise-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.driver.memory", "1g")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def _bernoulli(n: int = 3000, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "y": rng.integers(0, 2, n),
        "x": rng.integers(0, 2, n),
        "f": rng.choice(["lo", "mid", "hi"], n),
        "z": np.round(rng.normal(size=n), 1),
        "g": rng.integers(1, 40, n),
        "w": np.where(rng.random(n) < 0.1, np.nan, 1.0),  # unused: its NaNs drop nothing
    })


def _binomial(n: int = 800, seed: int = 2) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    trials = rng.integers(1, 12, n)
    return pd.DataFrame({
        "s": rng.binomial(trials, 0.3),
        "n": trials,
        "x": np.round(rng.uniform(0, 5, n), 0),
        "g": rng.choice([f"site{i}" for i in range(25)], n),
    })


def _crossed(n: int = 2000, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "correct": rng.integers(0, 2, n),
        "person": rng.integers(0, 60, n),
        "item": rng.choice([f"q{i:02d}" for i in range(30)], n),
        "easy": rng.integers(0, 2, n).astype(bool),
    })


CASES = [
    ("bernoulli", _bernoulli, "y ~ x + f + z + (1 | g)"),
    ("binomial", _binomial, "s | trials(n) ~ x + (1 + x | g)"),
    ("crossed", _crossed, "correct ~ easy + (1 | person) + (1 | item)"),
    # formula expressions are evaluated on the patterns: functions, factor(), an offset and
    # an expression in the response
    ("functions", _bernoulli, "y ~ log(z + 5) + factor(x) + I(z^2) + f + (1 | g)"),
    ("offset", _binomial, "cbind(s, n - s) ~ factor(x) + offset(log(n)) + (1 | g)"),
]


def _same_design(a, b) -> None:
    """Identical cells, in the same order, with the same labels and the same scaling."""
    assert a.fixed_names == b.fixed_names
    assert a.n_rows == b.n_rows
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_array_equal(a.y, b.y)
    np.testing.assert_array_equal(a.n, b.n)
    np.testing.assert_array_equal(a.x_center, b.x_center)
    np.testing.assert_array_equal(a.x_scale, b.x_scale)
    assert a.predictor_scaling == b.predictor_scaling
    assert a.log_binom_const == b.log_binom_const
    assert len(a.groups) == len(b.groups)
    for ga, gb in zip(a.groups, b.groups, strict=True):
        assert ga.coef_names == gb.coef_names
        assert list(ga.labels) == list(gb.labels)
        np.testing.assert_array_equal(ga.codes, gb.codes)
        np.testing.assert_array_equal(ga.Z, gb.Z)
        np.testing.assert_array_equal(ga.level_rows, gb.level_rows)
        np.testing.assert_array_equal(ga.level_trials, gb.level_trials)
        np.testing.assert_array_equal(ga.level_successes, gb.level_successes)
    assert a.warnings == b.warnings
    assert a.notes == b.notes


def _row_patterns(d) -> pd.DataFrame:
    """(cell, successes, trials) -> rows, from a design of rows or of counted patterns."""
    counts = np.ones(len(d.row_y), dtype=np.int64) if d.row_count is None else d.row_count
    df = pd.DataFrame({"cell": d.row_cell, "y": d.row_y, "n": d.row_n, "rows": counts})
    return df.groupby(["cell", "y", "n"], as_index=False)["rows"].sum()


def _quiet_design(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_design(*args, **kwargs)


@pytest.mark.parametrize(("name", "make", "formula"), CASES, ids=[c[0] for c in CASES])
def test_duckdb_and_pandas_give_identical_cells(tmp_path, name, make, formula):
    df = make()
    path = tmp_path / f"{name}.parquet"
    df.to_parquet(path)
    rows = _quiet_design(formula, pd.read_parquet(path))
    cells = _quiet_design(formula, FileSource(str(path)))
    assert cells.row_count is not None and rows.row_count is None
    assert len(cells.row_y) < rows.n_rows  # patterns, not rows, came back
    _same_design(rows, cells)
    pd.testing.assert_frame_equal(_row_patterns(rows), _row_patterns(cells))
    # the first row of each pattern is a row of that pattern
    first = cells.row_number - 1
    np.testing.assert_array_equal(rows.row_cell[first], cells.row_cell)


@pytest.mark.parametrize("term", ["scale(z)", "poly(z, 2)"])
def test_learned_transforms_on_patterns_are_refused(tmp_path, term):
    from poolwise.errors import SpecError

    path = tmp_path / "d.parquet"
    _bernoulli(300).to_parquet(path)
    _quiet_design(f"y ~ x + {term} + (1 | g)", pd.read_parquet(path))  # rows: fine
    with pytest.raises(SpecError, match="counted into row patterns by a data engine"):
        _quiet_design(f"y ~ x + {term} + (1 | g)", FileSource(str(path)))


def test_offset_expression_argument_reads_its_columns_in_the_engine(tmp_path):
    from poolwise.errors import SpecError

    df = _binomial()
    path = tmp_path / "b.parquet"
    df.to_parquet(path)
    formula = "s | trials(n) ~ x + (1 | g)"
    rows = _quiet_design(formula, df, offset="log(n)")
    cells = _quiet_design(formula, FileSource(str(path)), offset="log(n)")
    _same_design(rows, cells)
    np.testing.assert_array_equal(rows.offset, cells.offset)
    with pytest.raises(SpecError, match="offset given as an array"):
        _quiet_design(formula, FileSource(str(path)), offset=np.zeros(len(df)))


def test_csv_glob_and_relation_give_the_same_cells(tmp_path):
    import duckdb

    df = _bernoulli()
    formula = "y ~ x + f + z + (1 | g)"
    rows = _quiet_design(formula, df)
    df.to_csv(tmp_path / "all.csv", index=False)
    parts = tmp_path / "parts"
    parts.mkdir()
    for i, start in enumerate(range(0, len(df), 1000)):
        df.iloc[start:start + 1000].to_parquet(parts / f"part{i}.parquet")
    con = duckdb.connect()
    rel = con.read_parquet(str(parts / "*.parquet"))
    csv = FileSource(str(tmp_path / "all.csv"))
    for source in (csv, str(parts / "*.parquet"), str(parts), rel):
        assert wants_engine(source)
        _same_design(rows, _quiet_design(formula, source))


def test_small_frames_and_files_keep_the_pandas_path(tmp_path, monkeypatch):
    import poolwise.data.ingest as ingest

    df = _bernoulli(50)
    df.to_csv(tmp_path / "small.csv", index=False)
    df.to_parquet(tmp_path / "small.parquet")
    assert not wants_engine(df)
    assert not wants_engine(str(tmp_path / "small.csv"))
    assert not wants_engine(str(tmp_path / "small.parquet"))
    assert wants_engine(str(tmp_path / "*.csv"))
    monkeypatch.setattr(ingest, "ENGINE_MIN_ROWS", 50)  # a Parquet file's rows, from its footer
    assert wants_engine(str(tmp_path / "small.parquet"))
    monkeypatch.setattr(ingest, "ENGINE_MIN_BYTES", 100)
    assert wants_engine(str(tmp_path / "small.csv"))


def test_drop_missing_and_zero_trials_warn_as_pandas_does(tmp_path):
    df = _binomial()
    df["x"] = df["x"].astype(float)
    df.loc[[4, 77, 500], "x"] = np.nan
    df.loc[[10, 11, 600], "n"] = 0
    df.loc[[10, 11, 600], "s"] = 0
    path = tmp_path / "b.parquet"
    df.to_parquet(path)
    formula = "s | trials(n) ~ x + (1 | g)"
    rows = _quiet_design(formula, pd.read_parquet(path), drop_missing=True)
    cells = _quiet_design(formula, FileSource(str(path)), drop_missing=True)
    assert any("dropped 3 of 800 rows" in w for w in cells.warnings)
    assert any("trials = 0 (rows 11, 12, 601)" in w for w in cells.warnings)
    _same_design(rows, cells)


# -- bad input: the same messages as the pandas path ---------------------------------------


def _bad_cases() -> list[tuple[str, str, pd.DataFrame, dict]]:
    base = _bernoulli(400)
    bino = _binomial(300)
    out: list[tuple[str, str, pd.DataFrame, dict]] = []
    d = base.copy()
    d["z"] = d["z"].astype(float)
    d.loc[[6, 90, 91, 92, 93, 94, 300], "z"] = np.nan
    d["g"] = d["g"].astype(object)
    d.loc[[8], "g"] = None
    out.append(("missing", "y ~ x + z + (1 | g)", d, {}))
    d = base.assign(z=base["z"].astype(str))
    d.loc[[3, 250], "z"] = ["abc", "1,5"]
    out.append(("not numeric", "y ~ z + (1 | g)", d, {}))
    d = base.assign(z=base["z"].astype(float))
    d.loc[[17, 18], "z"] = [np.inf, -np.inf]
    out.append(("infinite", "y ~ z + (1 | g)", d, {}))
    d = base.copy()
    d.loc[[0, 5, 399], "y"] = [2, 3, 2]
    out.append(("not 0/1", "y ~ x + (1 | g)", d, {}))
    out.append(("two numbers", "y ~ x + (1 | g)", base.assign(y=base["y"] + 1), {}))
    yes = base.assign(y=np.where(base["y"] == 1, "yes", "no"))
    out.append(("two labels", "y ~ x + (1 | g)", yes, {}))
    three = base.assign(y=np.array(["a", "b", "c"])[np.arange(len(base)) % 3])
    out.append(("three levels", "y ~ x + (1 | g)", three, {}))
    out.append(("three levels with success", "y ~ x + (1 | g)", three, {"success": "a"}))
    d = bino.copy()
    d.loc[[7, 40], "s"] = d.loc[[7, 40], "n"] + 2
    out.append(("successes > trials", "s | trials(n) ~ x + (1 | g)", d, {}))
    d = bino.copy()
    d.loc[[12], "s"] = -1
    out.append(("negative", "s | trials(n) ~ x + (1 | g)", d, {}))
    d = bino.assign(s=bino["s"].astype(float))
    d.loc[[2, 3], "s"] = [0.5, 2.5]
    out.append(("fraction", "s | trials(n) ~ x + (1 | g)", d, {}))
    d = bino.copy()
    d["f"] = d["n"] - d["s"]
    d.loc[[1], "f"] = -3
    out.append(("negative failures", "cbind(s, f) ~ x + (1 | g)", d, {}))
    d = bino.copy()
    d.loc[[5, 9], "n"] = [10**16, 2**53]  # [R.17] not exact in float64
    out.append(("trials of 2^53 or more", "s | trials(n) ~ x + (1 | g)", d, {}))
    d = bino.copy()
    d["f"] = d["n"] - d["s"]
    d.loc[[4], ["s", "f"]] = [2**52, 2**52]
    out.append(("successes + failures of 2^53", "cbind(s, f) ~ x + (1 | g)", d, {}))
    d = bino.assign(n=0, s=0)
    out.append(("all trials zero", "s | trials(n) ~ x + (1 | g)", d, {}))
    out.append(("unknown column", "y ~ x + (1 | grp)", base, {}))
    out.append(("single value", "y ~ x + (1 | g)", base.assign(y="yes"), {}))
    return out


BAD = _bad_cases()


def _message(formula, data, **kw) -> tuple[type, str]:
    with pytest.raises((DataError, FormulaError)) as err:
        _quiet_design(formula, data, **kw)
    return type(err.value), str(err.value)


@pytest.mark.parametrize(("name", "formula", "df", "kw"), BAD, ids=[c[0] for c in BAD])
def test_bad_input_gets_the_pandas_message_from_duckdb(tmp_path, name, formula, df, kw):
    path = tmp_path / "bad.parquet"
    df.to_parquet(path)
    expected = _message(formula, pd.read_parquet(path), **kw)
    assert _message(formula, FileSource(str(path)), **kw) == expected


def test_a_bad_value_deep_in_a_large_file_is_found_with_its_row(tmp_path):
    n = 1_000_000  # past DuckDB's first chunks and the first row groups
    rng = np.random.default_rng(0)
    df = pd.DataFrame({
        "y": rng.integers(0, 2, n, dtype=np.int8),
        "x": rng.integers(0, 2, n, dtype=np.int8),
        "g": rng.integers(0, 1000, n, dtype=np.int16),
    })
    df.loc[987_653, "y"] = 7  # data row 987,654
    path = tmp_path / "big.parquet"
    df.to_parquet(path, row_group_size=125_000)
    del df
    kind, msg = _message("y ~ x + (1 | g)", str(path))  # a plain path; a glob the same
    assert kind is DataError
    assert "outcome 'y' must be 0/1 for a Bernoulli model; found values {7} (row 987654)" in msg
    csv = tmp_path / "big.csv"
    import duckdb

    duckdb.sql(f"COPY (SELECT * FROM '{path}') TO '{csv}' (HEADER)")
    assert _message("y ~ x + (1 | g)", FileSource(str(csv)))[1] == msg


def test_same_seed_same_draws_through_duckdb_and_pandas(tmp_path):
    import poolwise

    df = _bernoulli(1500)
    path = tmp_path / "d.parquet"
    df.to_parquet(path)
    kw = dict(chains=2, tune=100, draws=50, seed=11, repair=False, log_likelihood=False,
              prior_check=False, parameterization="noncentered")
    formula = "y ~ x + f + (1 | g)"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = poolwise.fit(formula, pd.read_parquet(path), **kw)
        b = poolwise.fit(formula, FileSource(str(path)), **kw)
    assert b.spec.design.row_count is not None
    for var in a.posterior.data_vars:
        np.testing.assert_array_equal(a.posterior[var].values, b.posterior[var].values)


def test_row_level_loo_of_engine_patterns_equals_pandas_rows(tmp_path):
    """Default settings (log_likelihood=True): the DuckDB route stores the log-likelihood per
    (cell, outcome) pattern with counts summed from the engine's row counts, and its row-level
    LOO equals the one from the same rows read by pandas."""
    import poolwise
    from poolwise.comparison.loo import pattern_loo
    from poolwise.comparison.pooling import row_loo
    from poolwise.data.patterns import row_patterns

    path = tmp_path / "d.parquet"
    df = _bernoulli(1500)
    df["z"] = np.round(df["z"], 0)  # a few values: engine patterns stand for several rows
    df.to_parquet(path)
    kw = dict(chains=2, tune=100, draws=100, seed=5, repair=False, prior_check=False,
              parameterization="noncentered")
    formula = "y ~ x + f + z + (1 | g)"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = poolwise.fit(formula, pd.read_parquet(path), **kw)
        b = poolwise.fit(formula, FileSource(str(path)), **kw)
    da, db = a.spec.design, b.spec.design
    assert da.row_count is None and db.row_count is not None
    assert len(db.row_y) < len(df) and db.n_rows == len(df)
    for var in a.posterior.data_vars:
        np.testing.assert_array_equal(a.posterior[var].values, b.posterior[var].values)
    # the same (cell, outcome) patterns with the same row counts, stored per pattern
    pa, pb = row_patterns(da), row_patterns(db)
    np.testing.assert_array_equal(pa.count, pb.count)
    np.testing.assert_array_equal(pa.cell, pb.cell)
    np.testing.assert_array_equal(pa.y, pb.y)
    assert pb.n_rows == len(df)
    assert b.idata["log_likelihood"]["y"].sizes["pattern"] == pb.n_patterns
    la, lb = pattern_loo(a), pattern_loo(b)
    for name in ("elpd_i", "p_i", "pareto_k", "count"):
        np.testing.assert_allclose(getattr(lb, name), getattr(la, name), rtol=0, atol=1e-10)
    ra, rb = row_loo(a), row_loo(b)
    assert rb.n_data_points == ra.n_data_points == len(df)
    for name in ("elpd", "se", "p"):
        assert abs(getattr(rb, name) - getattr(ra, name)) <= 1e-10, name
    # per row: the engine route has one value per data row; each row of an engine pattern has
    # the value pandas gives that pattern's first row, and the multisets of row values agree
    ka, kb = ra.pareto_k.values, rb.pareto_k.values
    assert kb.shape == ka.shape == (len(df),)
    np.testing.assert_allclose(np.sort(kb), np.sort(ka), rtol=0, atol=1e-10)
    np.testing.assert_allclose(np.sort(rb.elpd_i.values), np.sort(ra.elpd_i.values),
                               rtol=0, atol=1e-10)
    first = rb.pareto_k["obs"].values
    np.testing.assert_allclose(kb, ka[first - 1], rtol=0, atol=1e-10)
    # and the expanded row-level tree gives ArviZ's own numbers
    import arviz_stats as azs

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = azs.loo(b.row_level(), pointwise=True)
    assert abs(ref.elpd - rb.elpd) <= 1e-8 and abs(ref.p - rb.p) <= 1e-8


def test_importing_poolwise_imports_no_engine():
    import subprocess
    import sys

    code = (
        "import sys, poolwise, poolwise.data.design, poolwise.data.ingest; "
        "print('duckdb' in sys.modules, 'pyspark' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


# -- Spark -----------------------------------------------------------------------------------


@spark_only
@pytest.mark.parametrize(("name", "make", "formula"), CASES, ids=[c[0] for c in CASES])
def test_spark_duckdb_and_pandas_give_identical_cells(spark, tmp_path, name, make, formula):
    df = make()
    path = tmp_path / f"{name}.parquet"
    df.to_parquet(path)
    rows = _quiet_design(formula, pd.read_parquet(path))
    duck = _quiet_design(formula, FileSource(str(path)))
    sdf = spark.read.parquet(str(path))
    cells = _quiet_design(formula, sdf)
    _same_design(rows, cells)
    _same_design(duck, cells)
    np.testing.assert_array_equal(duck.row_count, cells.row_count)
    np.testing.assert_array_equal(duck.row_number, cells.row_number)


@spark_only
@pytest.mark.parametrize(("name", "formula", "df", "kw"), BAD, ids=[c[0] for c in BAD])
def test_bad_input_gets_the_pandas_message_from_spark(spark, tmp_path, name, formula, df, kw):
    path = tmp_path / "bad.parquet"
    df.to_parquet(path)
    expected = _message(formula, pd.read_parquet(path), **kw)
    assert _message(formula, spark.read.parquet(str(path)), **kw) == expected


@spark_only
def test_spark_draws_equal_duckdb_draws(spark, tmp_path):
    import poolwise

    path = tmp_path / "d.parquet"
    _bernoulli(1500).to_parquet(path)
    kw = dict(chains=2, tune=100, draws=50, seed=11, repair=False, log_likelihood=False,
              prior_check=False, parameterization="noncentered")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = poolwise.fit("y ~ x + f + (1 | g)", FileSource(str(path)), **kw)
        b = poolwise.fit("y ~ x + f + (1 | g)", spark.read.parquet(str(path)), **kw)
    for var in a.posterior.data_vars:
        np.testing.assert_array_equal(a.posterior[var].values, b.posterior[var].values)


@spark_only
def test_spark_weights_equal_duckdb_and_pandas_weights(spark, tmp_path):
    """Weights through Spark SQL (summed where rows are counted): the model the sampler reads
    is the pandas path's, for frequency weights and for survey weights with few binary digits
    (their sums are exact in any order); a bad weight gets the pandas message."""
    from poolwise.engine.layout import pack
    from poolwise.model.spec import build_model

    rng = np.random.default_rng(4)
    df = _bernoulli(1500).assign(fw=rng.integers(1, 5, 1500),
                                 sv=rng.choice([0.25, 0.5, 1.25, 3.0], 1500))
    path = tmp_path / "d.parquet"
    df.to_parquet(path)
    formula = "y ~ x + f + (1 | g)"
    for kw in ({"weights": "fw"}, {"weights": "sv", "weights_kind": "survey"}):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            a = build_model(formula, pd.read_parquet(path), **kw)
            b = build_model(formula, FileSource(str(path)), **kw)
            c = build_model(formula, spark.read.parquet(str(path)), **kw)
        np.testing.assert_array_equal(pack(a).buffer, pack(b).buffer)
        np.testing.assert_array_equal(pack(a).buffer, pack(c).buffer)
        assert a.design.weighting == c.design.weighting
    bad = tmp_path / "bad.parquet"
    df.assign(fw=np.where(np.arange(1500) % 400 == 3, 0, df["fw"])).to_parquet(bad)
    expected = _message(formula, pd.read_parquet(bad), weights="fw")
    assert "has 0 in 4 rows (rows 4, 404, 804, 1204)" in expected[1]
    assert _message(formula, spark.read.parquet(str(bad)), weights="fw") == expected


def test_read_patterns_counts_every_row(tmp_path):
    df = _crossed()
    path = tmp_path / "c.parquet"
    df.to_parquet(path)
    from poolwise.formula import parse_formula

    t = read_patterns(parse_formula("correct ~ easy + (1 | person) + (1 | item)"), str(path))
    assert int(t.counts.sum()) == len(df)
    assert list(t.frame.columns) == ["correct", "easy", "person", "item"]
    assert t.frame["easy"].dtype == bool
    assert np.all(np.diff(t.row_number) > 0)  # in order of first appearance


@spark_only
def test_spark_counts_rows_of_a_glob_in_file_name_order(spark, tmp_path):
    """Files of different sizes (Spark orders its splits by size): rows are numbered across
    the files in name order, as DuckDB and pandas number them."""
    df = _bernoulli(3000)
    parts = tmp_path / "parts"
    parts.mkdir()
    for i, (a, b) in enumerate([(0, 400), (400, 2200), (2200, 3000)]):
        df.iloc[a:b].to_parquet(parts / f"part{i}.parquet")
    formula = "y ~ x + f + z + (1 | g)"
    rows = _quiet_design(formula, df)
    duck = _quiet_design(formula, str(parts / "*.parquet"))
    cells = _quiet_design(formula, spark.read.parquet(str(parts)))
    _same_design(rows, cells)
    np.testing.assert_array_equal(duck.row_number, cells.row_number)
    bad = df.copy()
    bad.loc[[2500, 2990], "y"] = 5  # data rows 2501 and 2991, in the third file
    for i, (a, b) in enumerate([(0, 400), (400, 2200), (2200, 3000)]):
        bad.iloc[a:b].to_parquet(parts / f"part{i}.parquet")
    expected = _message(formula, bad)
    assert "(rows 2501, 2991)" in expected[1]
    assert _message(formula, spark.read.parquet(str(parts))) == expected
    assert _message(formula, str(parts / "*.parquet")) == expected


def test_cli_fits_a_glob_with_default_settings(tmp_path, capsys):
    """`poolwise fit 'data/*.parquet' -f ...` with the defaults: the saved fit keeps the
    engine's row counts, its (cell, outcome) patterns cover every row, and LOO from the saved
    fit (log-likelihood per pattern, recomputed from the draws) equals LOO of the same rows
    read by pandas."""
    import poolwise
    from poolwise.cli import EXIT_INPUT, main
    from poolwise.comparison.pooling import row_loo
    from poolwise.data.patterns import row_patterns
    from poolwise.output.io import load_fit

    df = _bernoulli(1200)
    parts = tmp_path / "data"
    parts.mkdir()
    df.iloc[:500].to_parquet(parts / "a.parquet")
    df.iloc[500:].to_parquet(parts / "b.parquet")
    out = tmp_path / "out"
    args = [str(parts / "*.parquet"), "-f", "y ~ x + f + (1 | g)", "--seed", "3",
            "--chains", "2", "--tune", "150", "--draws", "100", "--no-prior-check"]
    code = main(["fit", *args, "--out", str(out)])
    assert code in (0, 1)  # 1: a short run may miss the ESS bar; the fit is saved either way
    saved = load_fit(out / "fit.nc")
    d = saved.spec.design
    assert d.row_count is not None and d.n_rows == len(df)
    counts = row_patterns(d).count
    assert len(counts) < len(df) and counts.sum() == len(df)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = poolwise.fit("y ~ x + f + (1 | g)", df, chains=2, tune=150, draws=100, seed=3,
                           prior_check=False)
        a, b = row_loo(ref), row_loo(saved)
    for name in ("elpd", "se", "p"):
        assert abs(getattr(a, name) - getattr(b, name)) <= 1e-10, name
    capsys.readouterr()
    code = main(["fit", *args, "--categorical", "x"])
    assert code == EXIT_INPUT
    assert "write factor(x) in the formula" in capsys.readouterr().err


# -- folders of Parquet as Spark and Hive write them (docs/reliability.md R.19) ---------------


def _spark_litter(folder) -> None:
    """What Spark and Hadoop write beside the data: a success marker, checksums, a staging
    folder."""
    (folder / "_SUCCESS").write_bytes(b"")
    (folder / "_committed_1234").write_text("{}")
    (folder / ".part-00000.snappy.parquet.crc").write_bytes(b"crc!")
    (folder / "_temporary").mkdir(exist_ok=True)
    (folder / "_temporary" / "part-99999.parquet").write_bytes(b"not parquet at all")


def _write_partitioned(df: pd.DataFrame, root, key: str) -> pd.DataFrame:
    """``key=value/part-0000k.parquet`` folders (the key's column left out of the files, as
    Spark's partitionBy writes them); returns the rows in the order they are read."""
    parts = []
    for value, sub in df.groupby(key, sort=True):
        folder = root / f"{key}={value}"
        folder.mkdir(parents=True)
        half = len(sub) // 2
        for k, piece in enumerate((sub.iloc[:half], sub.iloc[half:])):
            piece.drop(columns=key).to_parquet(folder / f"part-{k:05d}-c000.snappy.parquet")
            parts.append(piece)
        _spark_litter(folder)
    _spark_litter(root)
    return pd.concat(parts, ignore_index=True)


def test_hive_partition_folders_are_read_as_columns(tmp_path):
    df = _bernoulli(600).assign(wave=lambda d: np.arange(len(d)) % 3)
    # a key=value folder above the folder given is not a partition of these data
    root = tmp_path / "country=fr" / "survey"
    in_order = _write_partitioned(df, root, "wave")
    formula = "y ~ x + factor(wave) + (1 | g)"
    rows = _quiet_design(formula, in_order)
    for source in (str(root), FileSource(str(root)), str(root / "*" / "*.parquet")):
        assert wants_engine(source)
        _same_design(rows, _quiet_design(formula, source))
    from poolwise.formula import parse_formula

    t = read_patterns(parse_formula("y ~ x + factor(wave)"), str(root))
    assert int(t.counts.sum()) == len(df)  # every data file once; no litter read
    with pytest.raises(FormulaError, match="column 'country' not found"):
        _quiet_design("y ~ x + country", str(root))


def test_spark_output_folders_and_nested_folders(tmp_path):
    """A folder holding Spark output folders whose names end in .parquet, and a nested one."""
    df = _bernoulli(900)
    root = tmp_path / "exports"
    pieces = []
    for name, (a, b) in (("2023.parquet", (0, 300)), ("2024.parquet", (300, 700))):
        folder = root / name
        folder.mkdir(parents=True)
        for k, start in enumerate(range(a, b, 200)):
            piece = df.iloc[start:min(start + 200, b)]
            piece.to_parquet(folder / f"part-{k:05d}-9f3c-c000.snappy.parquet")
            pieces.append(piece)
        _spark_litter(folder)
    nested = root / "late" / "batch1"
    nested.mkdir(parents=True)
    df.iloc[700:].to_parquet(nested / "part-00000.parquet")
    pieces.append(df.iloc[700:])
    formula = "y ~ x + f + z + (1 | g)"
    rows = _quiet_design(formula, pd.concat(pieces, ignore_index=True))
    cells = _quiet_design(formula, str(root))
    _same_design(rows, cells)
    assert cells.data_sha256  # a hash of the files, not an IsADirectoryError
    # a glob that matches the output folders reads the files inside them
    only = _quiet_design(formula, str(root / "*.parquet"))
    assert only.n_rows == 700
    _same_design(_quiet_design(formula, df.iloc[:700]), only)


def test_file_names_are_read_literally(tmp_path):
    """A '*', '?' or '[' in a file's name is not a wildcard: that one file is read, once."""
    df = _bernoulli(400)
    folder = tmp_path / "odd"
    folder.mkdir()
    files = {"a*b.parquet": df.iloc[:100], "axb.parquet": df.iloc[100:250],
             "x[1].parquet": df.iloc[250:300], "x1.parquet": df.iloc[300:370],
             "q?.parquet": df.iloc[370:]}
    for name, part in files.items():
        part.to_parquet(folder / name)
    formula = "y ~ x + f + (1 | g)"
    for name, part in files.items():
        cells = _quiet_design(formula, FileSource(str(folder / name)))
        assert cells.n_rows == len(part), name
        _same_design(_quiet_design(formula, part), cells)
    whole = _quiet_design(formula, str(folder))  # each file once, in name order
    assert whole.n_rows == len(df)
    order = pd.concat([files[n] for n in sorted(files)], ignore_index=True)
    _same_design(_quiet_design(formula, order), whole)


def test_the_hash_of_a_folder_covers_its_files_and_partitions(tmp_path):
    df = _bernoulli(300).assign(wave=lambda d: np.arange(len(d)) % 2)
    a, b = tmp_path / "a", tmp_path / "b"
    _write_partitioned(df, a, "wave")
    _write_partitioned(df, b, "wave")
    formula = "y ~ x + (1 | g)"
    sha = _quiet_design(formula, str(a)).data_sha256
    assert sha == _quiet_design(formula, str(b)).data_sha256  # same files, same names
    (b / "wave=1").rename(b / "wave=7")  # the same bytes as another partition
    assert _quiet_design(formula, str(b)).data_sha256 != sha
    df.iloc[:10].drop(columns="wave").to_parquet(a / "wave=0" / "part-00000-c000.snappy.parquet")
    assert _quiet_design(formula, str(a)).data_sha256 != sha


def test_folders_without_data_or_with_mixed_files_are_clear_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    _spark_litter(empty)
    with pytest.raises(DataError, match="a folder with no data files in it or below it"):
        _quiet_design("y ~ x", str(empty))
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    _bernoulli(50).to_parquet(mixed / "a.parquet")
    _bernoulli(50).to_csv(mixed / "b.csv", index=False)
    with pytest.raises(DataError, match="holds Parquet files and other files"):
        _quiet_design("y ~ x", str(mixed))


@spark_only
def test_spark_reads_partition_folders_as_duckdb_does(spark, tmp_path):
    """The same partitioned folder through Spark (which reads key=value folders itself) and
    DuckDB: the same cells, and the same row numbers in messages."""
    df = _bernoulli(600).assign(wave=lambda d: np.arange(len(d)) % 3)
    root = tmp_path / "survey"
    in_order = _write_partitioned(df, root, "wave")
    formula = "y ~ x + factor(wave) + (1 | g)"
    duck = _quiet_design(formula, str(root))
    cells = _quiet_design(formula, spark.read.parquet(str(root)))
    _same_design(duck, cells)
    _same_design(_quiet_design(formula, in_order), cells)
    np.testing.assert_array_equal(duck.row_number, cells.row_number)
