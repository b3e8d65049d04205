"""Saves survive a full disk (docs/reliability.md R.16).

Free space is checked against the estimated size before anything is written; a write that
fails all the same, inside the netCDF library included, is a clear error, the finished result
goes to a fallback folder that can hold it (or the error says where none could), the folder
being replaced keeps its old result byte for byte, and nothing is left beside it.

Default tier: ENOSPC injected at every step of the save (every write HDF5 makes included).
Slow tier: a real, small tmpfs (needs root to mount one; skipped otherwise)."""

from __future__ import annotations

import contextlib
import errno
import io
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from conftest import stand_in_run_nuts  # random draws of the right shape instead of NUTS

import poolwise
import poolwise.engine.sampler as sampler_module
import poolwise.inference.pilot as pilot_module
import poolwise.inference.sampling as sampling_module
import poolwise.output.io as pio
import poolwise.output.store as store
from poolwise.cli import EXIT_INPUT, _save_outputs
from poolwise.errors import StoreError
from poolwise.output.io import (
    estimate_fit_bytes,
    estimate_tree_bytes,
    load_fit,
    save_fit,
    to_datatree,
    write_tree,
)
from poolwise.output.store import verify_folder

SRC = str(Path(poolwise.__file__).resolve().parents[1])
FORMULA = "y ~ 1 + (1 | g)"
ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _frame(groups: int = 6) -> pd.DataFrame:
    rng = np.random.default_rng(2)
    g = np.repeat(np.arange(groups), 12)
    return pd.DataFrame({"y": rng.integers(0, 2, g.size), "g": [f"g{i}" for i in g]})


@pytest.fixture(scope="module")
def fits() -> tuple[poolwise.Fit, poolwise.Fit]:
    """Two fits (an old and a new result) from the stand-in sampler."""
    mp = pytest.MonkeyPatch()
    try:
        for module in (sampler_module, sampling_module, pilot_module):
            mp.setattr(module, "run_nuts", stand_in_run_nuts)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return tuple(poolwise.fit(FORMULA, _frame(n), chains=2, tune=20, draws=100, seed=1,
                                      parameterization="noncentered") for n in (6, 9))
    finally:
        mp.undo()


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _beside(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.parent.iterdir() if ".poolwise-" in p.name)


# ---------------------------------------------------------------------------------------------
# the estimate and the check before writing
# ---------------------------------------------------------------------------------------------


def test_the_estimate_is_an_upper_bound(fits, tmp_path):
    for fit in fits:
        tree = to_datatree(fit)
        write_tree(tree, tmp_path / "f.nc")
        size = (tmp_path / "f.nc").stat().st_size
        assert size <= estimate_tree_bytes(tree) <= 3 * size + (1 << 20)
        paths = save_fit(fit, tmp_path / "out")
        total = sum(p.stat().st_size for p in paths.values())
        assert total <= estimate_fit_bytes(fit)


def test_too_little_free_space_is_refused_before_writing(fits, tmp_path, monkeypatch):
    old, new = fits
    out = tmp_path / "out"
    save_fit(old, out)
    before = _snapshot(out)
    monkeypatch.setattr(store, "free_disk_bytes", lambda path: 5000)
    with pytest.raises(StoreError) as info:
        save_fit(new, out)
    msg = str(info.value)
    needed = estimate_fit_bytes(new)
    assert f"in '{out.resolve()}'" in msg
    assert f"({needed:,} bytes)" in msg and "(5,000 bytes) are free there" in msg
    assert "free some disk space, or save to a folder on a disk with room" in msg
    assert _snapshot(out) == before and _beside(out) == []


# ---------------------------------------------------------------------------------------------
# ENOSPC inside the netCDF library: every write HDF5 makes
# ---------------------------------------------------------------------------------------------


def _tree() -> xr.DataTree:
    rng = np.random.default_rng(0)
    post = xr.Dataset({"a": (("chain", "draw", "g"), rng.normal(size=(2, 50, 30))),
                       "lab": ("g", np.array([f"level {i}" for i in range(30)]))})
    design = xr.Dataset({"rows": ("row", np.arange(150_000))})  # gzip-compressed, chunked
    tree = xr.DataTree.from_dict({"posterior": post, "poolwise_design": design})
    tree.attrs["poolwise_fit"] = "{" + "x" * 5000 + "}"
    return tree


class _Disk:
    """os.pwrite / os.ftruncate as HDF5's writes reach them: the ``fail_at``-th call and every
    later one fail with ENOSPC (a disk, once full, stays full)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, fail_at: int | None = None):
        self.calls, self.fail_at = 0, fail_at
        real_pwrite, real_ftruncate = os.pwrite, os.ftruncate

        def pwrite(fd, data, offset):
            self._step()
            return real_pwrite(fd, data, offset)

        def ftruncate(fd, size):
            self._step()
            return real_ftruncate(fd, size)

        monkeypatch.setattr(pio.os, "pwrite", pwrite)
        monkeypatch.setattr(pio.os, "ftruncate", ftruncate)

    def _step(self) -> None:
        self.calls += 1
        if self.fail_at is not None and self.calls >= self.fail_at:
            raise ENOSPC


def _images(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The file as HDF5 saw it when it closed it (the disk and the pages held in memory)."""
    images: list[bytes] = []
    real = pio._NetCDFTarget.close

    def close(self):
        if not self.closed:
            self.seek(0, os.SEEK_END)
            buf = bytearray(self.tell())
            self.seek(0)
            self.readinto(buf)
            images.append(bytes(buf))
        real(self)

    monkeypatch.setattr(pio._NetCDFTarget, "close", close)
    return images


def test_a_write_error_inside_hdf5_at_every_write_is_a_clean_error(tmp_path, monkeypatch):
    """The segmentation fault after ENOSPC came from HDF5's own clean-up of a failed write.
    Its writes go through a file object that never fails toward HDF5: whichever write fails,
    the file closes normally, the error comes back as a plain OSError naming the file, and
    the file HDF5 saw is byte for byte the one a write without error makes."""
    tree = _tree()
    images = _images(monkeypatch)
    with monkeypatch.context() as m:
        disk = _Disk(m)
        write_tree(tree, tmp_path / "ok.nc")
    reference = (tmp_path / "ok.nc").read_bytes()
    assert images.pop() == reference
    back = xr.open_datatree(tmp_path / "ok.nc", engine="h5netcdf").load()
    assert back["posterior"].identical(tree["posterior"])
    writes = disk.calls
    assert writes > 20  # HDF5 writes in many pieces: each one is a case
    for k in range(1, writes + 1):
        path = tmp_path / f"k{k}.nc"
        with monkeypatch.context() as m:
            _Disk(m, fail_at=k)
            with pytest.raises(OSError) as info:
                write_tree(tree, path)
        assert info.value.errno == errno.ENOSPC and info.value.filename == str(path)
        assert images.pop() == reference, k  # HDF5 wrote a whole, consistent file
        path.unlink()
    with h5py.File(io.BytesIO(reference), "r") as f:  # and that file is a valid netCDF
        assert "posterior" in f


def test_an_interrupt_during_the_netcdf_write_waits_for_the_file_to_close(tmp_path,
                                                                          monkeypatch):
    """Ctrl-C while HDF5 writes would raise inside HDF5's call into Python (a failed write
    again): it is held until the file is closed, then raised."""
    import signal

    real = pio._NetCDFTarget.write
    seen = {"n": 0}

    def write(self, b):
        seen["n"] += 1
        if seen["n"] == 3:
            signal.raise_signal(signal.SIGINT)  # to this thread, before it returns
        return real(self, b)

    monkeypatch.setattr(pio._NetCDFTarget, "write", write)
    # Python's own handler, installed afresh (at the OS level too): the test failed now and
    # then in a full xdist run, never alone, as if the worker's SIGINT had another handler
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            write_tree(_tree(), tmp_path / "f.nc")
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, signal.SIG_DFL if before is None else before)
    assert seen["n"] > 3  # the write went on to the end
    back = xr.open_datatree(tmp_path / "f.nc", engine="h5netcdf").load()
    assert "posterior" in back.children


# ---------------------------------------------------------------------------------------------
# ENOSPC at every step of `fit --out`'s save: old result kept, fallback written, nothing left
# ---------------------------------------------------------------------------------------------


class _Steps:
    """Every write of a save, each a step: the staging folder, HDF5's writes (os.pwrite and
    os.ftruncate, through the netCDF target), summary.csv, result.json and the manifest
    (Path.write_text), the fsync and the swap. ``fail``: the steps that raise ENOSPC."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, fail=lambda k: False):
        self.names: list[str] = []
        self.fail = fail

        def wrap(owner, name):
            real = getattr(owner, name)

            def step(*args, **kwargs):
                if name in ("pwrite", "ftruncate") and not _is_netcdf(args[0]):
                    return real(*args, **kwargs)  # the lock file's pid: best effort
                self.names.append(name)
                if self.fail(len(self.names)):
                    raise ENOSPC
                return real(*args, **kwargs)

            monkeypatch.setattr(owner, name, step)

        for owner, name in ((store, "_staging"), (pio.os, "pwrite"), (pio.os, "ftruncate"),
                            (pio, "safe_csv"), (pathlib.Path, "write_text"),
                            (store, "_fsync_tree"), (store, "_swap_in")):
            wrap(owner, name)


def _is_netcdf(fd: int) -> bool:
    return os.readlink(f"/proc/self/fd/{fd}").endswith(".nc")


def _save(fit, out: Path) -> tuple[int | None, str]:
    err = io.StringIO()

    def save(where, extra):
        return list(save_fit(fit, where, extra=extra).values())

    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = _save_outputs((out, None, None), save, None, what="fit",
                           needed=lambda: estimate_fit_bytes(fit))
    return rc, err.getvalue()


def test_enospc_at_every_step_of_the_save(fits, tmp_path, monkeypatch):
    old, new = fits
    out = tmp_path / "disk" / "out"
    save_fit(old, out)
    before = _snapshot(out)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    with monkeypatch.context() as m:
        steps = _Steps(m)
        rc, _ = _save(new, tmp_path / "disk" / "probe")
    assert rc is None
    names = steps.names
    # every step but HDF5's many writes (each is a case of the test above); of those the
    # first two, one in the middle and the last
    hdf5 = [k for k, n in enumerate(names, 1) if n == "pwrite"]
    cases = sorted({k for k, n in enumerate(names, 1) if k not in hdf5}
                   | {hdf5[0], hdf5[1], hdf5[len(hdf5) // 2], hdf5[-1]})
    assert {"_staging", "pwrite", "safe_csv", "write_text", "_fsync_tree", "_swap_in"} <= {
        names[k - 1] for k in cases}
    for k in cases:
        with monkeypatch.context() as m:
            _Steps(m, fail=lambda n, k=k: n == k)
            rc, err = _save(new, out)
        assert rc == EXIT_INPUT, (k, names[k - 1])
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: cannot write"), err
        assert "No space left on device" in lines[0] and "was saved to" in lines[0], err
        where = Path(lines[0].split("was saved to '")[1].split("'")[0])
        assert where.parent == cwd.resolve()
        assert verify_folder(where)["kind"] == "fit"  # complete, every file as its manifest says
        if k == cases[0]:
            assert load_fit(where).spec.design.n_rows == new.spec.design.n_rows
        shutil.rmtree(where)
        assert _snapshot(out) == before, (k, names[k - 1])  # the old result, byte for byte
        assert _beside(out) == [], (k, names[k - 1])  # no staging folder, no lock
        assert list(cwd.iterdir()) == []


@pytest.mark.parametrize("first", [1, 2, 10])
def test_a_disk_full_everywhere_says_where_it_looked(fits, tmp_path, monkeypatch, first):
    old, new = fits
    out = tmp_path / "out"
    save_fit(old, out)
    before = _snapshot(out)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr("tempfile.tempdir", None)
    with monkeypatch.context() as m:
        _Steps(m, fail=lambda n: n >= first)
        rc, err = _save(new, out)
    assert rc == EXIT_INPUT
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "no other folder could hold the finished fit either" in lines[0]
    assert f"'{cwd.resolve()}'" in lines[0] and f"'{(tmp_path / 'tmp').resolve()}'" in lines[0]
    assert "free some disk space" in lines[0]
    assert _snapshot(out) == before and _beside(out) == []
    assert list(cwd.iterdir()) == [] and list((tmp_path / "tmp").iterdir()) == []


def test_the_fallback_skips_a_place_without_room(fits, tmp_path, monkeypatch):
    old, new = fits
    out = tmp_path / "out"
    save_fit(old, out)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    (tmp_path / "tmp").mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    monkeypatch.setattr("tempfile.tempdir", None)
    full = {out.resolve(), cwd.resolve()}
    real = store.free_disk_bytes
    monkeypatch.setattr(store, "free_disk_bytes",
                        lambda p: 1000 if Path(p).resolve() in full else real(p))
    rc, err = _save(new, out)
    assert rc == EXIT_INPUT
    assert "not enough free space to save the fit in" in err and "1,000 bytes" in err
    where = Path(err.split("was saved to '")[1].split("'")[0])
    assert where.parent == (tmp_path / "tmp").resolve()
    verify_folder(where)
    assert list(cwd.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# a real full disk: a small tmpfs (slow tier; mounting needs root)
# ---------------------------------------------------------------------------------------------

DRIVER = textwrap.dedent('''
    import sys
    import poolwise.output.io as pio
    from poolwise.cli import main
    if sys.argv[1] == "no-estimate":  # skip the check before writing: the disk fills mid-write
        pio.estimate_fit_bytes = lambda fit, tree=None: 0
    sys.exit(main(sys.argv[2:]))
''')


@pytest.fixture
def tiny_disk(tmp_path):
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def _run(mode: str, argv: list[str], cwd: Path, env: dict[str, str] | None = None):
    env = {**os.environ, "PYTHONPATH": SRC, **(env or {})}
    return subprocess.run([sys.executable, "-c", DRIVER, mode, *argv], capture_output=True,
                          text=True, timeout=600, env=env, cwd=cwd)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["check", "no-estimate"])
def test_a_real_full_disk(tiny_disk, tmp_path, mode):
    """A small old result on a 1 MB tmpfs, then `fit --out` of a 3 MB fit into it: exit 3 with
    one error line (refused before writing, or No space left on device from inside HDF5, which
    used to be a segmentation fault), the fit saved to the current folder, the old result byte
    for byte, nothing left on the tmpfs (whose space is free again)."""
    out = tiny_disk / "res"
    small = ["fit", "--example", "bangladesh", "-q", "--seed", "1", "--chains", "2",
             "--tune", "100", "--draws", "100", "--no-repair", "--out", str(out)]
    done = _run("check", small, tmp_path)
    assert done.returncode in (0, 1), done.stderr
    before = _snapshot(out)
    used = shutil.disk_usage(tiny_disk).used
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    done = _run(mode, ["fit", "--example", "bangladesh", "-q", "--seed", "2", "--out", str(out)],
                cwd)
    assert done.returncode == EXIT_INPUT, (done.returncode, done.stderr[-3000:])
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    reason = ("not enough free space to save the fit in" if mode == "check"
              else "No space left on device")
    assert reason in lines[0] and "was saved to" in lines[0], lines[0]
    where = Path(lines[0].split("was saved to '")[1].split("'")[0])
    assert where.parent == cwd.resolve()
    assert load_fit(where).config.draws == 1000
    assert _snapshot(out) == before
    assert sorted(p.name for p in tiny_disk.iterdir()) == ["res"]
    assert shutil.disk_usage(tiny_disk).used == used


@pytest.mark.slow
def test_a_real_full_disk_with_no_room_anywhere(tiny_disk):
    """The current folder and TMPDIR on the same full tmpfs: exit 3, one line naming both
    places, nothing left."""
    out = tiny_disk / "res"
    tmp = tiny_disk / "tmp"
    tmp.mkdir()
    done = _run("no-estimate", ["fit", "--example", "bangladesh", "-q", "--seed", "2",
                                "--out", str(out)], tiny_disk, env={"TMPDIR": str(tmp)})
    assert done.returncode == EXIT_INPUT, (done.returncode, done.stderr[-3000:])
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, done.stderr[-3000:]
    assert "no other folder could hold the finished fit either" in lines[0]
    assert f"'{tiny_disk}'" in lines[0] and f"'{tmp}'" in lines[0]
    assert sorted(p.name for p in tiny_disk.iterdir()) == ["tmp"]
    assert list(tmp.iterdir()) == []
