"""Issue 10, proof: CSV fuzzing through the command line's entry point.

Random bytes, and tables built from random cells (labels with quotes, delimiters, line
breaks, control characters; numbers in either decimal convention; NA tokens) written with a
random delimiter, quoting, line ending, encoding and compression, possibly cut short, are
given to ``poolwise.cli.main(["fit", FILE, ...])``, with random --delimiter / --decimal
settings. Every run ends with exit code 0, 1 or 3 and an ``error:`` line when it is not 0;
no exception escapes. The sampler is replaced by a stand-in with random draws.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import importlib
import io
import warnings
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
from conftest import stand_in_run_nuts  # random draws of the right shape instead of NUTS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import poolwise.engine.sampler as sampler_module
from poolwise.cli import main

# sample_spec calls run_nuts
sampling_module = importlib.import_module("poolwise.inference.sampling")

FUZZ = settings(
    max_examples=60, deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def run_cli(path: Path, extra: list[str], monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    monkeypatch.setattr(sampler_module, "run_nuts", stand_in_run_nuts)
    monkeypatch.setattr(sampling_module, "run_nuts", stand_in_run_nuts)
    out, err = io.StringIO(), io.StringIO()
    argv = ["fit", str(path), "--formula=y ~ x + (1 | g)", "--chains", "2", "--draws", "150",
            "--tune", "30", "--seed", "1", "--max-attempts", "1", *extra]
    with redirect_stdout(out), redirect_stderr(err), warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        try:
            code = main(argv)
        except SystemExit as exc:
            code = int(exc.code or 0)
    return code, out.getvalue() + err.getvalue()


def check(code: int, text: str, what: str) -> None:
    assert code in (0, 1, 3), f"exit {code} for {what}:\n{text}"
    if code != 0:
        assert any(ln.startswith("error:") for ln in text.splitlines()), f"{what}:\n{text}"
    assert "Traceback" not in text


# -- random bytes ---------------------------------------------------------------------------


@FUZZ
@given(raw=st.one_of(
    st.binary(max_size=3000),
    st.binary(max_size=500).map(lambda b: b"y,x,g\n" + b),
    st.binary(max_size=500).map(gzip.compress),
    st.binary(max_size=300).map(lambda b: gzip.compress(b"y,x,g\n1,2,3\n")[:20] + b),
))
def test_random_bytes(raw: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "data.csv"
    path.write_bytes(raw)
    code, text = run_cli(path, [], monkeypatch)
    check(code, text, f"bytes {raw[:80]!r}")


# -- random tables ----------------------------------------------------------------------------

labels = st.one_of(
    st.sampled_from(["a", "b", "c", "d", "e", "1", "2", "NA", "", ".", "a b", "é", "x;y",
                     'q"t', "l\nm", "r\rs", "\x1b[31m", "n\x00", "\t", "=SUM(A1)"]),
    st.text(max_size=6),
)
numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=32).map(lambda v: f"{v:.3g}"),
    st.integers(-5, 5).map(str),
    st.sampled_from(["0,5", "1.5", "1e3", "NaN", "Inf", "-", "1,234.5", " 2 "]),
)
outcomes = st.sampled_from(["0", "1", "1", "0", "yes", "2", "", "TRUE", "0.5"])


@st.composite
def tables(draw: st.DrawFn) -> tuple[bytes, list[str]]:
    n = draw(st.integers(0, 60))
    mostly_ok = draw(st.booleans())
    header = ["y", "x", "g"]
    if draw(st.integers(0, 4)) == 0:
        header = draw(st.permutations(header + draw(st.lists(labels, max_size=2))))
    rows = []
    for i in range(n):
        if mostly_ok:
            cells = {"y": str(i % 2), "x": f"{(i * 7 % 11) / 3:.3f}", "g": "abcde"[i % 5]}
            if draw(st.integers(0, 9)) == 0:  # now and then one odd cell
                cells[draw(st.sampled_from(["y", "x", "g"]))] = draw(
                    st.one_of(labels, numbers, outcomes))
        else:
            cells = {"y": draw(outcomes), "x": draw(numbers), "g": draw(labels)}
        rows.append([cells.get(h, draw(labels)) for h in header])
    delimiter = draw(st.sampled_from([",", ";", "\t", "|", " "]))
    quoting = draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL, csv.QUOTE_NONE]))
    eol = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    buf = io.StringIO()
    try:
        writer = csv.writer(buf, delimiter=delimiter, quoting=quoting, lineterminator=eol,
                            escapechar="\\" if quoting == csv.QUOTE_NONE else None)
        writer.writerow(header)
        writer.writerows(rows)
    except csv.Error:
        buf = io.StringIO(eol.join(delimiter.join(r) for r in [header, *rows]) + eol)
    text = buf.getvalue()
    if draw(st.integers(0, 5)) == 0:
        text = text[: draw(st.integers(0, len(text)))]
    encoding = draw(st.sampled_from(["utf-8", "utf-8-sig", "latin-1", "cp1252", "utf-16"]))
    raw = text.encode(encoding, errors="replace")
    packer = draw(st.sampled_from([None, None, gzip.compress, bz2.compress]))
    if packer is not None:
        raw = packer(raw)
    extra: list[str] = []
    if draw(st.integers(0, 5)) == 0:
        extra += ["--delimiter", draw(st.sampled_from([",", ";", "\\t", "|", "ab", ".", " "]))]
    if draw(st.integers(0, 5)) == 0:
        extra += ["--decimal", draw(st.sampled_from([".", ",", ";", ""]))]
    if draw(st.booleans()):
        extra += ["--drop-missing"]
    return raw, extra


@FUZZ
@given(table=tables())
def test_random_tables(
    table: tuple[bytes, list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw, extra = table
    path = tmp_path / "data.csv"
    path.write_bytes(raw)
    code, text = run_cli(path, extra, monkeypatch)
    check(code, text, f"table {raw[:120]!r} {extra}")


def test_a_clean_table_reaches_the_sampler(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The harness is able to pass: a plain table fits (with the stand-in sampler)."""
    path = tmp_path / "data.csv"
    rows = [f"{i % 2},{(i * 7 % 11) / 3:.3f},{'abcde'[i % 5]}" for i in range(40)]
    path.write_text("y,x,g\n" + "\n".join(rows) + "\n")
    code, text = run_cli(path, [], monkeypatch)
    assert code in (0, 1) and "status:" in text
