"""Issue 10, item 2: labels from a data file never reach the terminal raw. ANSI / OSC escape
sequences, NUL bytes, carriage returns and bidirectional overrides are shown escaped (as
``repr`` would: ``\\x1b``, ``\\x00``) in every print path of the CLI; and a label with a NUL
byte keeps its group's n and raw proportion in the summary."""

from __future__ import annotations

import csv
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import poolwise
import poolwise.cli as cli
from poolwise.cli import EXIT_INPUT, main, safe_text
from poolwise.errors import ConvergenceWarning

ESC_RED = "c\x1b[31mRED"
OSC_LINK = "e\x1b]8;;http://evil.example\x07link"
NUL_END = "nul\x00"
NUL_ONLY = "\x00"
CR = "over\rwrite"
BIDI = "abc\u202edcba"
LABELS = ["a", ESC_RED, OSC_LINK, NUL_END, NUL_ONLY, CR, BIDI, "b"]

#: what may appear raw on the terminal: printable text, newlines
RAW_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def labelled(n: int = 160) -> pd.DataFrame:
    i = np.arange(n)
    return pd.DataFrame({
        "y": ((i // len(LABELS)) % 2).astype(np.int64),
        "x": np.round(np.sin(i), 3),
        "g": np.array(LABELS, dtype=object)[i % len(LABELS)],
    })


def test_safe_text_escapes_like_repr() -> None:
    assert safe_text("a\x1b[31mb") == "a\\x1b[31mb"
    assert safe_text("a\x00") == "a\\x00"
    assert safe_text("a\rb\tc") == "a\\rb\\tc"
    assert safe_text("x\ny") == "x\\ny"
    assert safe_text("x\ny", newlines=True) == "x\ny"
    assert safe_text("\x9b2J\x7f") == "\\x9b2J\\x7f"
    assert safe_text(BIDI) == "abc\\u202edcba"
    assert safe_text("é ü 10 x y") == "é ü 10 x y"


@pytest.mark.filterwarnings("ignore::poolwise.errors.ConvergenceWarning")
def test_nul_labels_keep_their_counts() -> None:
    """numpy's fixed-width strings dropped trailing NULs from the posterior coordinates, so
    'nul\\x00' and '\\x00' no longer matched their groups: n and raw proportion were blank."""
    df = labelled()
    fit = poolwise.fit("y ~ x + (1 | g)", df, chains=4, draws=100, tune=100, seed=3,
                       repair=False, parameterization="noncentered", log_likelihood=False,
                       prior_check=False)
    coords = list(fit.posterior["g"].values)
    assert sorted(coords) == sorted(LABELS)
    table = fit.summary()
    for lab in LABELS:
        row = table.loc[f"a_g[{lab}]"]
        assert row["n"] == (df["g"] == lab).sum()
        assert row["raw_proportion"] == pytest.approx(df.loc[df["g"] == lab, "y"].mean())


@pytest.mark.parametrize("suffix", ["fit.nc", "fit.zarr"])
def test_nul_labels_survive_save_and_load(tmp_path: Path, suffix: str) -> None:
    """HDF5 and numpy's fixed-width strings end a string at its first NUL: saved labels are
    escaped and restored on load, so 'nul\\x00', '\\x00' and a label holding the escape
    text itself ('a\\\\0') all come back as they were, with their counts."""
    df = labelled()
    df.loc[df["g"] == "b", "g"] = "a\\0"
    labels = sorted(set(df["g"]))
    with warnings.catch_warnings():  # short chains: the verdict is not what is tested here
        warnings.simplefilter("ignore", ConvergenceWarning)
        fit = poolwise.fit("y ~ x + (1 | g)", df, chains=4, draws=100, tune=100, seed=3,
                           repair=False, parameterization="noncentered", log_likelihood=False,
                           prior_check=False)
    fmt = "zarr" if suffix.endswith("zarr") else "netcdf"
    poolwise.save_fit(fit, tmp_path / "out", format=fmt)
    loaded = poolwise.load_fit(tmp_path / "out")
    assert sorted(loaded.posterior["g"].values.tolist()) == labels
    assert sorted(loaded.spec.design.groups[0].labels.tolist()) == labels
    table = loaded.summary()
    for lab in labels:
        assert table.loc[f"a_g[{lab}]", "n"] == (df["g"] == lab).sum()
    np.testing.assert_array_equal(loaded.posterior["a_g"].values, fit.posterior["a_g"].values)


def test_cli_output_has_no_raw_control_characters(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    p = tmp_path / "labels.csv"
    labelled().to_csv(p, index=False, quoting=csv.QUOTE_NONNUMERIC)
    code = main(["fit", str(p), "-f", "y ~ x + (1 | g)", "--chains", "2", "--draws", "40",
                 "--tune", "40", "--seed", "3", "--no-repair", "--parameterization",
                 "noncentered"])
    out, err = capsys.readouterr()
    assert code in (0, 1)
    assert not RAW_CONTROL.search(out), repr(RAW_CONTROL.search(out))
    assert not RAW_CONTROL.search(err)
    assert "a_g[c\\x1b[31mRED]" in out
    assert "a_g[e\\x1b]8;;http://evil.example\\x07link]" in out
    assert "a_g[over\\rwrite]" in out and "a_g[abc\\u202edcba]" in out
    # the NUL rows have their n and raw proportion (the last two columns)
    for key in ("a_g[nul\\x00]", "a_g[\\x00]"):
        (line,) = [ln for ln in out.splitlines() if ln.startswith(key + " ")]
        n, raw = line.split()[-2:]
        assert float(n) == 20.0 and 0.0 <= float(raw) <= 1.0


def test_error_messages_are_escaped(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """An outcome with three levels, one of them an escape sequence that clears the screen."""
    p = tmp_path / "bad.csv"
    df = labelled().assign(y=np.array(["yes", "no", "\x1b[2J\x1b[Hpwned"], dtype=object)[
        np.arange(160) % 3])
    df.to_csv(p, index=False, quoting=csv.QUOTE_NONNUMERIC)
    code = main(["fit", str(p), "-f", "y ~ x + (1 | g)"])
    out, err = capsys.readouterr()
    assert code == EXIT_INPUT
    assert "\x1b" not in err and "\\x1b[2J\\x1b[Hpwned" in err


def test_every_print_path_goes_through_the_escaping_stream(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """Whatever a command prints (journal, notes, narrative, warnings) is escaped on the way
    out; the streams are restored afterwards."""
    import sys

    before = sys.stdout, sys.stderr

    def fake_fit(args: object, parser: object) -> int:
        print("note: label \x1b[31mred\x00 here")
        print("warning: \x1b]0;title\x07", file=sys.stderr)
        print("attempt 1: fit \x1b[1m -> ok")  # as the repair journal prints its lines
        return 0

    monkeypatch.setattr(cli, "_cmd_fit", fake_fit)
    assert main(["fit", "--example", "bangladesh"]) == 0
    out, err = capsys.readouterr()
    assert "note: label \\x1b[31mred\\x00 here" in out
    assert "fit \\x1b[1m" in out
    assert err == "warning: \\x1b]0;title\\x07\n"
    assert (sys.stdout, sys.stderr) == before


def test_a_closed_pipe_ends_quietly() -> None:
    """`poolwise ... | head -1`: the reader goes away; no BrokenPipeError traceback."""
    import os
    import subprocess
    import sys

    r, w = os.pipe()
    os.close(r)  # every write to stdout now fails with EPIPE
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "poolwise.cli", "fit", "--example", "bangladesh",
             "--chains", "2", "--tune", "100", "--draws", "100", "--seed", "1", "--no-repair"],
            stdout=w, stderr=subprocess.PIPE, text=True, timeout=300,
        )
    finally:
        os.close(w)
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr
    assert proc.returncode == 1


# ---- long labels (docs/reliability.md R.20) --------------------------------------------------


def test_long_labels_keep_their_head_and_tail():
    from poolwise.textfmt import ELLIPSIS, MAX_LABEL, short_labels

    fits, over = "f" * MAX_LABEL, "o" * (MAX_LABEL + 1)
    long = "Department of Health, Region 4: " + "x" * 9_950 + " (office 12)"
    short = short_labels(["a", fits, over, long])
    assert set(short) == {over, long}  # labels that fit are shown as they are
    assert short[long] == "Department of Health, Reg" + ELLIPSIS + "x (office 12)"[-12:]
    assert short[long] == long[:25] + "..." + long[-12:] and len(short[long]) == MAX_LABEL
    assert short[over] == "o" * 25 + "..." + "o" * 12


def test_labels_alike_at_both_ends_show_where_they_differ():
    from poolwise.textfmt import short_labels

    urls = [f"https://example.org/survey/region/{i:05d}/district/index.html"
            for i in (12345, 12346, 99999)]
    short = short_labels(urls)
    # all three share their first 25 and last 12 characters: each shows its own number
    assert short == {u: u[:12] + "..." + u[34:44] + "..." + u[-12:] for u in urls}
    assert [short[u] for u in urls] == [f"https://exam...{i}/dist...t/index.html"
                                        for i in (12345, 12346, 99999)]


def test_a_shortened_label_never_looks_like_another_label():
    from poolwise.textfmt import short_labels

    # a label that is another's shortened form, and labels that differ only in length
    whole = "a" * 25 + "..." + "b" * 12
    long = "a" * 25 + "Q" * 10 + "b" * 12
    short = short_labels([whole, long, "x" * 50, "x" * 51])
    assert whole not in short and short[long] != whole
    assert len(set(short.values())) == 3
    assert short["x" * 50] != short["x" * 51]


@settings(max_examples=60, derandomize=True, deadline=None)
@given(st.lists(st.text(alphabet="ab1.", min_size=38, max_size=60), min_size=1, max_size=40))
def test_distinct_labels_stay_distinct_on_screen(labels):
    from poolwise.textfmt import MAX_LABEL, short_labels

    short = short_labels(labels)
    shown = {lab: short.get(lab, lab) for lab in set(labels)}
    assert len(set(shown.values())) == len(shown)  # never two labels shown the same
    assert all(len(s) <= MAX_LABEL + 4 for lab, s in shown.items() if lab in short)


def test_long_labels_are_replaced_in_running_text():
    from poolwise.textfmt import LabelShortener

    a, b = "q" * 100, "q" * 100 + "r" * 20  # one label starts another: the longer matches
    short = LabelShortener([a, b, "short"])
    text = f"levels {a}, {b} and short; {a}."
    assert short.text(text) == (f"levels {short(a)}, {short(b)} and short; {short(a)}.")
    assert short(a) == "q" * 25 + "..." + "q" * 12 and short(b) != short(a)
    assert short("short") == "short" and short.text("no labels here") == "no labels here"
