"""Saved results are safe to open (issue 10): a crafted file runs no code, a damaged or mixed
folder is refused with one `error:` line (exit 3), output problems are found before
sampling, a failed final write never loses the fit, and CSV cells cannot run as formulas."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import pickle
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import poolwise
from poolwise.cli import main
from poolwise.errors import ConvergenceWarning, DataError, StoreError
from poolwise.output.io import DESIGN_GROUP, load_fit, load_result, read_tree, save_fit, write_tree
from poolwise.output.store import (
    MANIFEST,
    check_output_folder,
    lock_folder,
    neutralize,
    safe_csv,
    verify_folder,
    write_manifest,
)

SRC = str(Path(poolwise.__file__).resolve().parents[1])
FORMULA = "y ~ 1 + (1 | g)"
QUICK = ["--tune", "100", "--draws", "100", "--chains", "2", "--seed", "4", "-q"]


def _frame(labels=("a", "b", "c", "d", "e"), seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(len(labels)), 20)
    return pd.DataFrame({"y": rng.integers(0, 2, g.size),
                         "g": np.array(labels, dtype=object)[g]})


def _quick_fit(frame: pd.DataFrame, formula: str = FORMULA, **kw) -> poolwise.Fit:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return poolwise.fit(formula, frame, seed=4, chains=2, tune=100, draws=100, **kw)


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    """A good saved fit folder; tests copy it before changing anything."""
    out = tmp_path_factory.mktemp("saved") / "fit"
    save_fit(_quick_fit(_frame()), out)
    return out


def _copy(saved: Path, tmp_path: Path, name: str = "copy") -> Path:
    dest = tmp_path / name
    shutil.copytree(saved, dest)
    return dest


def _cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


def _cli_process(argv: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": SRC}
    return subprocess.run([sys.executable, "-m", "poolwise.cli", *argv], capture_output=True,
                          text=True, timeout=300, env=env, cwd=cwd)


def _one_error_line(err: str, *needles: str) -> None:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in errors[0], errors[0]


_READ: dict[str, xr.DataTree] = {}


def _rewrite_tree(folder: Path, edit) -> None:
    """Change the saved tree of ``folder`` with ``edit(tree)`` and rewrite its manifest, as
    someone crafting a folder would (the manifest is a checksum, not a signature). Folders
    are copies of a few saved fits: each file is read once and copied for every edit."""
    key = hashlib.sha256((folder / "fit.nc").read_bytes()).hexdigest()
    if key not in _READ:
        _READ[key] = read_tree(folder / "fit.nc")
    tree = _READ[key].copy(deep=True)
    edit(tree)
    (folder / "fit.nc").unlink()
    write_tree(tree, folder / "fit.nc")
    write_manifest(folder, "fit")


class _Pickled:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


# ---------------------------------------------------------------------------------------------
# crafted files run no code
# ---------------------------------------------------------------------------------------------

CLASS_PATHS = [
    "poolwise.data:os.system", "os:system", "builtins:eval", "subprocess:Popen",
    "poolwise.output.io:importlib.import_module", "posix:system", "ModelSpec.__init__",
]


def _payload_object(name: str, marker: Path, tag: str = "__type__") -> dict:
    return {tag: name, "__path__": "evil",
            "fields": {"command": f"touch {marker}",
                       "source": f"__import__('os').system('touch {marker}')"}}


@pytest.mark.parametrize("tag", ["__type__", "__dataclass__"])
def test_class_path_payloads_are_refused_and_run_nothing(saved, tmp_path, tag):
    marker = tmp_path / "pwned"
    for i, name in enumerate(CLASS_PATHS):
        folder = _copy(saved, tmp_path, f"c{i}")

        def edit(tree, name=name):
            meta = json.loads(tree[DESIGN_GROUP].attrs["poolwise_fit"])
            meta["warnings"] = _payload_object(name, marker, tag)  # a field the loader builds
            tree[DESIGN_GROUP].attrs["poolwise_fit"] = json.dumps(meta)
            if tag == "__dataclass__":  # format 1 named types by module path
                tree.attrs["poolwise_format"] = "1"

        _rewrite_tree(folder, edit)
        with pytest.raises(StoreError, match="refusing to rebuild"):
            load_fit(folder)
        if i < 2:
            for argv in (["diagnose", str(folder)],
                         ["report", str(folder), "-o", str(tmp_path / "r.html")]):
                rc, _, err = _cli(argv)
                assert rc == 3
                _one_error_line(err, "refusing to rebuild")
    assert not marker.exists()


def test_the_top_level_type_cannot_be_swapped(saved, tmp_path):
    marker = tmp_path / "pwned"
    for i, name in enumerate(CLASS_PATHS):
        folder = _copy(saved, tmp_path, f"c{i}")

        def edit(tree, name=name):
            meta = json.loads(tree[DESIGN_GROUP].attrs["poolwise_fit"])
            meta["spec"]["__type__"] = name
            meta["config"] = _payload_object(name, marker)
            tree[DESIGN_GROUP].attrs["poolwise_fit"] = json.dumps(meta)

        _rewrite_tree(folder, edit)
        with pytest.raises(StoreError, match="refusing to rebuild"):
            load_fit(folder)
    assert not marker.exists()


def test_unknown_schema_version_and_fields_are_clear_errors(saved, tmp_path):
    for i, (edit, match) in enumerate([
        (lambda t: t.attrs.update(poolwise_format="99"), "unsupported poolwise file format"),
        (lambda t: t[DESIGN_GROUP].attrs.update(poolwise_fit=t[DESIGN_GROUP].attrs[
            "poolwise_fit"].replace('"fields": {"design"', '"fields": {"exec": 1, "design"', 1)),
         "fields this version does not know"),
        (lambda t: t[DESIGN_GROUP].attrs.update(poolwise_fit='{"spec": {"__ref__": "x"}}'),
         "unknown object"),
        (lambda t: t[DESIGN_GROUP].attrs.update(poolwise_fit="not json"), "not valid JSON"),
    ]):
        folder = _copy(saved, tmp_path, f"c{i}")
        _rewrite_tree(folder, edit)
        with pytest.raises(StoreError, match=match):
            load_fit(folder)
        rc, _, err = _cli(["diagnose", str(folder)])
        assert rc == 3
        _one_error_line(err, match)
    # an unknown manifest schema
    folder = _copy(saved, tmp_path, "m")
    m = json.loads((folder / MANIFEST).read_text())
    m["poolwise_manifest"] = 7
    (folder / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(StoreError, match="manifest schema 7"):
        load_fit(folder)


TEXT_ATTRS = ("poolwise_formula", "poolwise_pooling", "poolwise_link", "poolwise_seed",
              "poolwise_data_sha256", "poolwise_data_source", "poolwise_rows_used")


def _shell_payloads(marker: Path) -> list[str]:
    return [f"$(touch {marker})", f"`touch {marker}`", f"x; touch {marker}",
            f"| touch {marker}", f"{{{{ ''.__class__ }}}} <script>touch {marker}</script>"]


def test_shell_payloads_in_text_attributes_are_only_text(saved, tmp_path):
    """Commands in every text attribute load as text; diagnose and report print or escape
    them, nothing runs."""
    marker = tmp_path / "pwned"
    payloads = _shell_payloads(marker)
    folder = _copy(saved, tmp_path)

    def edit(tree):
        for i, key in enumerate(TEXT_ATTRS):
            tree.attrs[key] = payloads[i % len(payloads)]

    _rewrite_tree(folder, edit)
    fit = load_fit(folder)
    assert fit.idata.attrs["poolwise_formula"] == payloads[0]
    proc = _cli_process(["diagnose", str(folder)])
    assert proc.returncode in (0, 1), proc.stderr
    assert "Traceback" not in proc.stderr
    rc, _, err = _cli(["report", str(folder), "-o", str(tmp_path / "r.html")])
    assert rc == 0, err
    assert not marker.exists()


def test_payloads_in_json_attributes_are_refused_or_inert(saved, tmp_path):
    marker = tmp_path / "pwned"
    blob = pickle.dumps(_Pickled(marker), protocol=0).decode("latin-1")  # no NUL bytes
    obj = json.dumps(_payload_object("os:system", marker))
    json_attrs = [k for k in read_tree(saved / "fit.nc").attrs
                  if k.startswith("poolwise_") and k not in TEXT_ATTRS and k != "poolwise_format"]
    assert "poolwise_settings" in json_attrs and "poolwise_versions" in json_attrs
    for i, payload in enumerate([blob, *_shell_payloads(marker)]):
        folder = _copy(saved, tmp_path, f"p{i}")
        _rewrite_tree(folder, lambda t, p=payload: t.attrs.update({k: p for k in json_attrs}))
        with pytest.raises(StoreError, match="not valid JSON"):
            load_fit(folder)
    # JSON that names a class is only data in these (readable) copies
    folder = _copy(saved, tmp_path, "obj")
    _rewrite_tree(folder, lambda t: t.attrs.update(poolwise_repair_log=obj, poolwise_warnings=obj))
    load_fit(folder)
    rc, _, err = _cli(["diagnose", str(folder)])
    assert rc in (0, 1), err
    assert not marker.exists()


def test_pickles_and_payloads_in_the_folder_files_run_nothing(saved, tmp_path):
    marker = tmp_path / "pwned"
    probe = tmp_path / "probe"
    blob = pickle.dumps(_Pickled(marker))
    pickle.loads(pickle.dumps(_Pickled(probe)))  # the payload is live when unpickled ...
    assert probe.exists()
    # ... but result.json and summary.csv are never interpreted, so a folder whose manifest
    # matches them still loads, and runs nothing
    folder = _copy(saved, tmp_path, "files")
    (folder / "result.json").write_bytes(blob)
    (folder / "summary.csv").write_text(json.dumps(_payload_object("os:system", marker)))
    write_manifest(folder, "fit")
    load_fit(folder)
    rc, _, err = _cli(["report", str(folder), "-o", str(tmp_path / "r.html")])
    assert rc == 0, err
    # a pickle in place of fit.nc or of the manifest is refused
    for name, match in [("fit.nc", "not a netCDF"), (MANIFEST, "not a readable poolwise manifest")]:
        folder = _copy(saved, tmp_path, f"pk-{name}")
        (folder / name).write_bytes(blob)
        if name != MANIFEST:
            write_manifest(folder, "fit")
        rc, _, err = _cli(["diagnose", str(folder)])
        assert rc == 3
        _one_error_line(err, match)
    # a manifest naming something else as its kind, or listing files outside the folder
    for edit, match in [({"kind": "os:system"}, "not a valid poolwise manifest"),
                        ({"files": {"../../etc/passwd": {"sha256": "0", "size": 1}}},
                         "outside its folder")]:
        folder = _copy(saved, tmp_path, f"mk-{len(edit)}-{match[:3]}")
        m = json.loads((folder / MANIFEST).read_text())
        m.update(edit)
        (folder / MANIFEST).write_text(json.dumps(m))
        with pytest.raises(StoreError, match=match):
            load_fit(folder)
    assert not marker.exists()


def test_zarr_stores_with_foreign_codecs_are_refused(tmp_path):
    marker = tmp_path / "pwned"
    fit = _quick_fit(_frame())
    good = tmp_path / "z"
    save_fit(fit, good, format="zarr")
    assert load_fit(good).summary().equals(fit.summary())
    meta_path = next((good / "fit.zarr").rglob("zarr.json"))
    for i, edit in enumerate([
        lambda m: m.update(codecs=[{"name": "numcodecs.pickle"}, *m.get("codecs", [])]),
        lambda m: m.update(data_type="object"),
    ]):
        folder = _copy(good, tmp_path, f"z{i}")
        path = folder / meta_path.relative_to(good)
        m = json.loads(path.read_text())
        edit(m)
        path.write_text(json.dumps(m))
        write_manifest(folder, "fit")
        with pytest.raises(StoreError, match="never uses"):
            load_fit(folder)
    # a zarr format 2 array whose object codec is pickle
    folder = _copy(good, tmp_path, "v2")
    arr = folder / "fit.zarr" / "evil"
    arr.mkdir()
    (arr / ".zarray").write_text(json.dumps({
        "zarr_format": 2, "shape": [1], "chunks": [1], "dtype": "|O", "compressor": None,
        "filters": [{"id": "pickle"}], "fill_value": None, "order": "C"}))
    (arr / "0").write_bytes(pickle.dumps(np.array([_Pickled(marker)], dtype=object)))
    write_manifest(folder, "fit")
    with pytest.raises(StoreError, match="zarr format 2"):
        load_fit(folder)
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------
# damaged, mixed and non-fit inputs: one error line, exit 3, no traceback
# ---------------------------------------------------------------------------------------------


def test_damaged_fit_files_give_one_error_line(saved, tmp_path):
    data = (saved / "fit.nc").read_bytes()
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x10
    cases = {"truncated": data[: len(data) // 3], "flipped": bytes(flipped), "empty": b""}
    (tmp_path / "notes.txt").write_text("not a fit\n")
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "data.csv").write_text("y,g\n1,a\n")
    for name, content in cases.items():
        folder = _copy(saved, tmp_path, name)
        (folder / "fit.nc").write_bytes(content)
        (tmp_path / f"{name}.nc").write_bytes(content)
        with pytest.raises(StoreError, match="does not match the manifest"):
            load_fit(folder)
    # in a folder, every damage is caught by the manifest; as bare files, by the reader
    argvs = [[cmd, str(tmp_path / name)] for cmd in ("diagnose", "report")
             for name in ("truncated", "flipped", "empty")]
    argvs += [["diagnose", str(tmp_path / f"{n}.nc")] for n in ("truncated", "empty")]
    argvs += [["diagnose", str(tmp_path / "notes.txt")], ["report", str(tmp_path / "plain")],
              ["diagnose", str(tmp_path / "plain")], ["diagnose", str(tmp_path / "missing")]]
    for argv in argvs:
        rc, _, err = _cli(argv)
        assert rc == 3, argv
        _one_error_line(err)
    # as a user runs it: a separate process, no traceback
    for argv in (["diagnose", str(tmp_path / "truncated.nc")],
                 ["report", str(tmp_path / "notes.txt")]):
        proc = _cli_process(argv)
        assert proc.returncode == 3
        _one_error_line(proc.stderr)


def test_a_bit_flip_in_a_bare_fit_file_is_caught(saved, tmp_path):
    """Outside a folder there is no manifest; the arrays' Fletcher-32 checksums catch a
    flipped bit in the draws."""
    import h5py

    with h5py.File(saved / "fit.nc", "r") as f:
        chunk = f["posterior"]["a_g"].id.get_chunk_info(0)
    data = bytearray((saved / "fit.nc").read_bytes())
    for k, at in enumerate((chunk.byte_offset, chunk.byte_offset + chunk.size // 2)):
        flipped = bytearray(data)
        flipped[at] ^= 0x01
        path = tmp_path / f"flipped{k}.nc"
        path.write_bytes(flipped)
        with pytest.raises(StoreError, match="cannot be read as a saved fit"):
            load_fit(path)
        rc, _, err = _cli(["diagnose", str(path)])
        assert rc == 3
        _one_error_line(err, "damaged")


def test_mixed_and_incomplete_folders_are_refused(saved, tmp_path):
    # a result.json from another write
    folder = _copy(saved, tmp_path, "mixed")
    r = json.loads((folder / "result.json").read_text())
    r["formula"] = "y ~ 1"
    (folder / "result.json").write_text(json.dumps(r))
    with pytest.raises(StoreError, match="corrupt or mixed: result.json"):
        load_fit(folder)
    # a missing file
    folder = _copy(saved, tmp_path, "incomplete")
    (folder / "summary.csv").unlink()
    with pytest.raises(StoreError, match="incomplete: summary.csv"):
        load_fit(folder)
    # an unlisted file in poolwise's place
    folder = _copy(saved, tmp_path, "stray")
    (folder / "fit.zarr").mkdir()
    (folder / "fit.zarr" / "zarr.json").write_text("{}")
    with pytest.raises(StoreError, match="mixed: fit.zarr/zarr.json"):
        load_fit(folder)
    # files of an old poolwise without a manifest
    folder = _copy(saved, tmp_path, "nomanifest")
    (folder / MANIFEST).unlink()
    with pytest.raises(StoreError, match="no manifest"):
        load_fit(folder)
    # other files the user keeps there do not matter
    folder = _copy(saved, tmp_path, "notes")
    (folder / "notes.txt").write_text("mine\n")
    assert verify_folder(folder)["kind"] == "fit"
    load_fit(folder)
    assert isinstance(StoreError("x"), DataError)  # `except DataError` keeps working


# ---------------------------------------------------------------------------------------------
# outputs: checked before sampling; a failed final write never loses the fit
# ---------------------------------------------------------------------------------------------


def _fit_argv(tmp_path: Path) -> list[str]:
    data = tmp_path / "d.csv"
    if not data.exists():
        _frame().to_csv(data, index=False)
    return ["fit", str(data), "-f", FORMULA, *QUICK]


def test_output_problems_are_found_before_sampling(saved, tmp_path):
    (tmp_path / "afile").write_text("x")
    (tmp_path / "adir").mkdir()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("keep me")
    base = _fit_argv(tmp_path)
    cases = [
        (["--out", str(tmp_path / "afile")], "is an existing file"),
        (["--report", str(tmp_path / "adir")], "is an existing folder"),
        (["--out", str(tmp_path / "afile" / "sub")], "is a file, not a folder"),
        (["--out", "/proc/poolwise-out"], "cannot write"),
        (["--out", str(tmp_path / "mine")], "holds files poolwise did not write (thesis.tex)"),
        (["--out", str(saved / "inner")], "inside the saved result folder"),
        (["--report", str(saved / "fit.nc")], "inside the saved result folder"),
        (["--out", str(tmp_path / "o"), "--report", str(tmp_path / "o" / "fit.nc")],
         "would overwrite 'fit.nc'"),
        (["--out", str(tmp_path / "o"), "--report", str(tmp_path / "o")],
         "is the result folder itself"),
    ]
    before = (saved / "fit.nc").read_bytes()
    for extra, needle in cases:
        rc, out, err = _cli([*base, *extra])
        assert rc == 3, (extra, err)
        _one_error_line(err, needle)
        assert "status:" not in out  # refused before sampling
    assert (saved / "fit.nc").read_bytes() == before
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "keep me"
    assert not (tmp_path / "o").exists()
    # report and diagnose outputs
    for argv, needle in [
        (["report", str(saved), "-o", str(saved / "fit.nc")], "inside the saved result"),
        (["report", str(saved), "-o", str(tmp_path / "adir")], "is an existing folder"),
        (["diagnose", str(saved), "--plots", str(tmp_path / "afile")], "is an existing file"),
        (["diagnose", str(saved), "--plots", str(saved / "plots")], "inside the saved result"),
    ]:
        rc, out, err = _cli(argv)
        assert rc == 3, (argv, err)
        _one_error_line(err, needle)
        assert "status:" not in out
    assert (saved / "fit.nc").read_bytes() == before
    verify_folder(saved)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_folder_is_found_before_sampling(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        rc, out, err = _cli([*_fit_argv(tmp_path), "--out", str(ro / "out")])
    finally:
        ro.chmod(0o755)
    assert rc == 3 and "status:" not in out
    _one_error_line(err, "cannot write")


def test_write_probe_is_a_real_write(tmp_path):
    """The check writes a file rather than trusting permission bits (which mean nothing for
    root): a folder on a read-only file system is refused whoever runs it."""
    with pytest.raises(StoreError, match="cannot write"):
        check_output_folder("/proc/self/poolwise-out")
    assert check_output_folder(tmp_path / "new") == (tmp_path / "new").resolve()
    assert not list(tmp_path.iterdir())  # the probe leaves nothing behind


def test_a_failed_final_write_keeps_the_fit(tmp_path, monkeypatch):
    import poolwise.output.io as pio

    real = pio.write_fit_files
    target = (tmp_path / "out").resolve()

    def failing(fit, folder, **kw):
        if folder.parent == target.parent and folder.name.startswith(".out."):
            raise OSError(28, "No space left on device")
        return real(fit, folder, **kw)

    monkeypatch.setattr(pio, "write_fit_files", failing)
    monkeypatch.chdir(tmp_path)
    rc, out, err = _cli([*_fit_argv(tmp_path), "--out", str(target)])
    assert rc == 3
    _one_error_line(err, "No space left on device", "was saved to")
    where = Path(err.split("was saved to '")[1].split("'")[0])
    assert where.parent == tmp_path and where.name.startswith("poolwise-fit-")
    assert load_fit(where).spec.formula.text == FORMULA
    assert not target.exists()  # nothing half-written at the intended place
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_report_into_a_result_folder_replaces_it_as_a_whole(saved, tmp_path):
    folder = _copy(saved, tmp_path)
    files = json.loads((folder / MANIFEST).read_text())["files"]
    rc, out, err = _cli(["report", str(folder)])
    assert rc == 0, err
    m = verify_folder(folder)
    assert set(m["files"]) == set(files) | {"report.html"}
    assert all(m["files"][n] == files[n] for n in files)  # the result itself is unchanged
    # a fit.nc given directly reports into its folder too
    rc, _, err = _cli(["report", str(folder / "fit.nc")])
    assert rc == 0, err
    verify_folder(folder)
    assert not (folder / "fit.html").exists()


def test_newest_write_decides_what_a_folder_holds(tmp_path):
    """compare --out D, then fit --out D: D holds the fit only, and report D reports it."""
    data = _frame()
    from poolwise.comparison.pooling import compare_fits
    from poolwise.output.io import save_comparison

    fits = {k: _quick_fit(data, pooling=k) for k in ("complete", "none", "partial")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        comp = compare_fits(fits)
    out = tmp_path / "D"
    save_comparison(comp, out)
    assert load_result(out)[0] == "comparison"
    assert load_fit(out / "partial").spec.pooling == "partial"
    with pytest.raises(StoreError, match="holds a pooling comparison"):
        load_fit(out)
    save_fit(fits["none"], out)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [MANIFEST, "fit.nc", "summary.csv", "result.json"])
    kind, fit = load_result(out)
    assert kind == "fit" and fit.spec.pooling == "none"


def test_a_held_lock_stops_a_second_writer_at_once(tmp_path):
    out = tmp_path / "out"
    with lock_folder(out):
        proc = _cli_process([*_fit_argv(tmp_path), "--out", str(out)])
    assert proc.returncode == 3
    _one_error_line(proc.stderr, f"being written by process {os.getpid()}", str(out))
    assert "status:" not in proc.stdout
    assert not out.exists()
    # released: the lock file is gone and the next writer goes ahead
    assert not [p for p in tmp_path.iterdir() if "lock" in p.name]
    save_fit(_quick_fit(_frame()), out)
    verify_folder(out)


# ---------------------------------------------------------------------------------------------
# CSV exports
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("writer", ["pandas", "pyarrow"])
def test_csv_label_cells_cannot_run_as_formulas(tmp_path, writer, monkeypatch):
    """Both writers: pandas, and pyarrow for large tables (here forced on a small one)."""
    import poolwise.output.store as store

    if writer == "pyarrow":
        monkeypatch.setattr(store, "ARROW_CSV_ROWS", 1)
    labels = ['=HYPERLINK("http://evil","x")', "+1+cmd", "@SUM(A1)", "-2+3+cmd|' /C calc'!A0",
              "\tTAB", "\rCR", "-1.5", "plain"]
    df = pd.DataFrame({"label": labels, "value": [-1.5, 2.0, -3.0, 0.0, 1.0, -2.0, 4.0, -5.0]},
                      index=pd.Index(labels, name="@group"))
    safe_csv(df, tmp_path / "t.csv", index_label="=g")
    with (tmp_path / "t.csv").open(newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["'=g", "label", "value"]
    for (idx, label, value), raw in zip(rows[1:], labels, strict=True):
        for cell in (idx, label):
            # a label "-1.5" is text too: a spreadsheet would make it a number
            assert cell == (raw if raw == "plain" else "'" + raw)
        assert not value.startswith("'")
    back = pd.read_csv(tmp_path / "t.csv")
    assert back["value"].tolist() == df["value"].tolist()  # numeric columns untouched
    assert neutralize(-1.5) == -1.5 and neutralize("=1") == "'=1"


def test_a_large_table_reads_back_equal_from_either_writer(tmp_path, monkeypatch):
    """The pyarrow writer of large tables (ARROW_CSV_ROWS) gives the same values as pandas':
    every float to the last bit, missing values, an unnamed index with its label."""
    import poolwise.output.store as store

    rng = np.random.default_rng(1)
    df = pd.DataFrame({"mean": rng.normal(size=50) * 10.0 ** rng.integers(-9, 9, 50),
                       "n": np.where(np.arange(50) % 3, rng.integers(1, 99, 50), np.nan)},
                      index=[f"a_g[{i}]" for i in range(50)])
    safe_csv(df, tmp_path / "pandas.csv", index_label="parameter")
    monkeypatch.setattr(store, "ARROW_CSV_ROWS", 1)
    safe_csv(df, tmp_path / "arrow.csv", index_label="parameter")
    a = pd.read_csv(tmp_path / "arrow.csv", index_col=0)
    p = pd.read_csv(tmp_path / "pandas.csv", index_col=0)
    pd.testing.assert_frame_equal(a, p)
    pd.testing.assert_frame_equal(a, df.rename_axis("parameter"))
    safe_csv(df, tmp_path / "noindex.csv", index=False)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "noindex.csv"),
                                  df.reset_index(drop=True))


def test_saved_comparison_csvs_are_neutralized(tmp_path):
    labels = ('=HYPERLINK("http://evil")', "+1", "@SUM(A1)", "-x", "ok")
    data = _frame(labels)
    from poolwise.comparison.pooling import compare_fits
    from poolwise.output.io import save_comparison

    fits = {k: _quick_fit(data, pooling=k) for k in ("complete", "none", "partial")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        comp = compare_fits(fits)
    save_comparison(comp, tmp_path / "c")
    with (tmp_path / "c" / "pooling_groups.csv").open(newline="") as f:
        rows = list(csv.reader(f))
    cells = [r[0] for r in rows[1:]]
    assert sorted(cells) == sorted(["'" + x if x != "ok" else x for x in labels])
    for name in ("pooling_groups.csv", "pooling_population.csv", "summary.csv"):
        path = tmp_path / "c" / name if name != "summary.csv" else tmp_path / "c/none" / name
        with path.open(newline="") as f:
            cells = [cell for row in csv.reader(f) for cell in row]
        for cell in cells:
            assert not cell.startswith(("=", "+", "@", "\t", "\r")), (name, cell)
            try:
                float(cell)
            except ValueError:
                assert not cell.startswith("-"), (name, cell)


def test_out_can_be_the_current_folder(saved, tmp_path, monkeypatch):
    """A folder holding the current directory cannot be renamed away: it is replaced entry
    by entry (manifest first out, last in), and files of the previous result go."""
    fit = load_fit(saved)
    run = tmp_path / "run"
    run.mkdir()
    monkeypatch.chdir(run)
    save_fit(fit, ".", extra={"r.html": lambda p: p.write_text("old report")})
    assert "r.html" in verify_folder(run)["files"]
    save_fit(fit, ".")
    assert not (run / "r.html").exists()
    assert sorted(verify_folder(run)["files"]) == ["fit.nc", "result.json", "summary.csv"]
    assert Path.cwd() == run.resolve() and load_fit(".").spec.formula.text == FORMULA
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
