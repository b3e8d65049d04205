"""Result folders: written whole or not at all, one writer at a time, checked on every read.

Every folder poolwise writes (``fit --out``, ``compare --out``, :func:`poolwise.save_fit`) is
built in a temporary folder beside the target and then swapped in as a whole (an atomic
``renameat2(RENAME_EXCHANGE)`` on Linux; elsewhere rename-aside, rename-in, remove). A
SIGKILL at any moment leaves the target holding either the complete old result or the
complete new one, never a mix.

The folder's manifest, ``poolwise.json``, says what it holds (``"kind"``: ``"fit"`` or
``"comparison"``), which schema wrote it, and the SHA-256 and size of every file. Loading
verifies it first, so a truncated, corrupted, mixed or hand-edited folder is refused with a
:class:`~poolwise.errors.StoreError` instead of being read. The manifest is an integrity
check, not a signature: the readers in :mod:`poolwise.output.io` are also safe on crafted files
(they build only an allowlist of types and run no code named by the file).

A lock file beside the target (``.NAME.poolwise-lock``, held with ``flock``, so it is
released when its process dies) lets only one process write a folder at a time; a second
writer fails at once with the other one's pid.

A full disk: the free space is checked against the result's estimated size before anything
is written (:func:`check_free_space`); a write that fails all the same leaves the target as it
was and removes the staging folder, and :func:`fallback_folder` finds a place with room for the
finished result.

:func:`safe_csv` writes CSV files whose text cells cannot run as spreadsheet formulas.

Why one module: the atomic swap, the lock and the manifest are one protocol (write whole, one
writer, verify on read); split, the guarantees would be spread over files that must change
together.
"""

from __future__ import annotations

import contextlib
import csv
import ctypes
import errno
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

from poolwise.errors import StoreError
from poolwise.resources import fmt_bytes, free_disk_bytes

__all__ = [
    "MANIFEST",
    "MANIFEST_SCHEMA",
    "OWNED",
    "Kind",
    "lock_folder",
    "write_folder",
    "update_folder",
    "read_manifest",
    "verify_folder",
    "result_root",
    "check_output_folder",
    "check_output_file",
    "check_output_dir",
    "fallback_bases",
    "fallback_folder",
    "check_free_space",
    "safe_csv",
    "neutralize",
]

MANIFEST = "poolwise.json"
#: version of the manifest format; a reader refuses any other
MANIFEST_SCHEMA = 1
#: the saved-fit schema: "2" names types by their schema name (:func:`poolwise.output.io._types`);
#: the manifest records it, and the readers of :mod:`poolwise.output.io` check it
FORMAT_VERSION = "2"
Kind = Literal["fit", "comparison"]
KINDS = ("fit", "comparison")

#: names poolwise writes into a result folder. A folder holding other files is not replaced
#: (they would be lost); an unlisted entry with one of these names makes a folder "mixed".
OWNED = frozenset({
    MANIFEST, "fit.nc", "fit.zarr", "summary.csv", "result.json", "report.html",
    "complete", "none", "partial", "pooling_groups.csv", "pooling_population.csv",
    "pooling_loo.csv", "narrative.txt",
})
_TMP_TAG = ".poolwise-tmp-"
_OLD_TAG = ".poolwise-old-"
_LOCK_TAG = ".poolwise-lock"


# --------------------------------------------------------------------------------------------
# the lock
# --------------------------------------------------------------------------------------------

_held: dict[Path, tuple[int, int]] = {}  # lock path -> (fd, depth): re-entrant in one process


def _lock_path(target: Path) -> Path:
    return target.parent / f".{target.name}{_LOCK_TAG}"


@contextlib.contextmanager
def lock_folder(target: str | Path) -> Iterator[Path]:
    """Hold the write lock of ``target`` (re-entrant within one process). Raises
    :class:`StoreError` at once, naming the other process, when another process holds it."""
    import fcntl

    target = _absolute(target)
    path = _lock_path(target)
    if path in _held:
        fd, depth = _held[path]
        _held[path] = (fd, depth + 1)
        try:
            yield target
        finally:
            fd, depth = _held[path]
            _held[path] = (fd, depth - 1)
        return
    _make_parent(target)
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise StoreError(_os_message(err, target, "lock")) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            other = _read_pid(fd)
            os.close(fd)
            if err.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise StoreError(_os_message(err, target, "lock")) from None
            who = f"process {other}" if other else "another process"
            raise StoreError(
                f"'{target}' is being written by {who} (lock file {path}); wait until it "
                "finishes, or write to another folder"
            ) from None
        # the file may have been unlinked by the holder that released it just now
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    with contextlib.suppress(OSError):  # the pid only informs a second writer (a full disk)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
    _held[path] = (fd, 1)
    try:
        yield target
    finally:
        del _held[path]
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(fd)  # closing releases the flock


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


# --------------------------------------------------------------------------------------------
# manifest
# --------------------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _files(folder: Path) -> list[str]:
    """Every file below ``folder`` as a POSIX relative path; symlinks and special files are
    refused (a result folder holds plain files and folders only)."""
    out = []
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            p = Path(root) / name
            if p.is_symlink() or not (p.is_dir() or p.is_file()):
                raise StoreError(
                    f"'{p}' is a link or special file; a poolwise result folder holds plain "
                    "files only"
                )
        out += [(Path(root) / name).relative_to(folder).as_posix() for name in files]
    return sorted(out)


def write_manifest(folder: Path, kind: Kind, *, extra: Mapping[str, Any] | None = None) -> Path:
    """Write ``folder/poolwise.json`` listing every file below ``folder`` with its hash."""
    names = [n for n in _files(folder) if n != MANIFEST]
    manifest = {
        "poolwise_manifest": MANIFEST_SCHEMA,
        "kind": kind,
        "format": FORMAT_VERSION,
        "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **(extra or {}),
        "files": {n: {"sha256": _sha256(folder / n), "size": (folder / n).stat().st_size}
                  for n in names},
    }
    path = folder / MANIFEST
    path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return path


def read_manifest(folder: str | Path) -> dict[str, Any] | None:
    """The parsed manifest of ``folder`` (checked for shape, not hashes), or None if it has
    none."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        return None
    try:
        raw = path.read_bytes()
        if len(raw) > 64 << 20:
            raise ValueError("too large")
        m = json.loads(raw.decode("utf-8"))
    except (OSError, ValueError) as err:
        raise StoreError(
            f"'{path}' is not a readable poolwise manifest ({err}); the folder is damaged: "
            "write the result again"
        ) from None
    if not isinstance(m, dict) or m.get("poolwise_manifest") != MANIFEST_SCHEMA:
        version = m.get("poolwise_manifest") if isinstance(m, dict) else None
        raise StoreError(
            f"'{path}' has manifest schema {version!r}; this version of poolwise reads schema "
            f"{MANIFEST_SCHEMA} (a result written by a newer poolwise needs that version)"
        )
    files = m.get("files")
    if m.get("kind") not in KINDS or not isinstance(files, dict) or not all(
        isinstance(k, str) and isinstance(v, dict) and isinstance(v.get("sha256"), str)
        and isinstance(v.get("size"), int) for k, v in files.items()
    ):
        raise StoreError(f"'{path}' is not a valid poolwise manifest; write the result again")
    for name in files:
        parts = Path(name).parts
        if Path(name).is_absolute() or ".." in parts or not parts or name == MANIFEST:
            raise StoreError(f"'{path}' lists a file outside its folder ({name!r})")
    return m


def verify_folder(folder: str | Path, *, kinds: tuple[str, ...] = KINDS) -> dict[str, Any]:
    """Check that ``folder`` is a complete poolwise result: a manifest of one of ``kinds``,
    every listed file present with its size and SHA-256, and no unlisted file in poolwise's
    place. Returns the manifest; raises :class:`StoreError` saying what is wrong."""
    folder = Path(folder)
    m = read_manifest(folder)
    if m is None:
        present = (sorted(p.name for p in folder.iterdir() if p.name in OWNED)
                   if folder.is_dir() else [])
        if present:
            raise StoreError(
                f"'{folder}' has {', '.join(present)} but no manifest ({MANIFEST}): it is not a "
                "complete poolwise result (written by a poolwise older than format 2, or by "
                "hand, or a write was interrupted); write it again with poolwise"
            )
        raise StoreError(
            f"'{folder}' holds no saved fit or comparison (no {MANIFEST}); give a folder written "
            "by `poolwise fit --out DIR`, `poolwise compare --out DIR` or poolwise.save_fit"
        )
    if m["kind"] not in kinds:
        raise StoreError(f"'{folder}' holds a {m['kind']}, not a {' or '.join(kinds)}")
    listed: dict[str, Any] = m["files"]
    present = set(_files(folder)) - {MANIFEST}
    missing = sorted(set(listed) - present)
    if missing:
        raise StoreError(
            f"'{folder}' is incomplete: {_few(missing)} listed in its manifest "
            f"{'is' if len(missing) == 1 else 'are'} missing; write the result again"
        )
    changed = [n for n, meta in listed.items()
               if (folder / n).stat().st_size != meta["size"]
               or _sha256(folder / n) != meta["sha256"]]
    if changed:
        raise StoreError(
            f"'{folder}' is corrupt or mixed: {_few(sorted(changed))} "
            f"{'does' if len(changed) == 1 else 'do'} not match the manifest (changed, "
            "truncated or from another write); write the result again"
        )
    dirs = {p for n in listed for p in [str(Path(n).parent)] if p != "."}
    stray = sorted(n for n in present - set(listed)
                   if n.split("/")[0] in OWNED or any(n.startswith(d + "/") for d in dirs))
    if stray:
        raise StoreError(
            f"'{folder}' is mixed: {_few(stray)} {'is' if len(stray) == 1 else 'are'} not part "
            "of the result its manifest describes; write the result again into a new folder"
        )
    return m


def _few(names: list[str]) -> str:
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def result_root(path: str | Path) -> Path | None:
    """The nearest folder at or above ``path`` that holds a poolwise manifest, or None."""
    p = _absolute(path)
    for folder in [p, *p.parents]:
        if (folder / MANIFEST).is_file():
            return folder
    return None


# --------------------------------------------------------------------------------------------
# output checks (before any sampling)
# --------------------------------------------------------------------------------------------


def _absolute(path: str | Path) -> Path:
    # resolve symlinks of existing parts: a folder is replaced where it really is
    return Path(os.path.abspath(Path(path).expanduser().resolve()))


def _make_parent(target: Path) -> None:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise StoreError(_os_message(err, target.parent, "create")) from None


def _os_message(err: OSError, path: Path, action: str) -> str:
    reason = err.strerror or str(err)
    return f"cannot {action} '{path}': {reason}; choose a folder you can write to"


def _probe_writable(folder: Path, what: str) -> None:
    """A real write test (permission bits say nothing for root, or on read-only mounts)."""
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise StoreError(f"cannot write {what} '{folder}': '{existing}' is a file, not a folder")
    try:
        fd, name = tempfile.mkstemp(prefix=".poolwise-probe-", dir=existing)
        os.close(fd)
        os.unlink(name)
    except OSError as err:
        raise StoreError(
            f"cannot write {what} into '{existing}': {err.strerror or err}; choose a folder "
            "you can write to"
        ) from None


def _foreign(folder: Path) -> list[str]:
    """Entries of an existing folder that poolwise did not write (and would lose)."""
    m = None
    with contextlib.suppress(StoreError):
        m = read_manifest(folder)
    listed = {n.split("/")[0] for n in (m or {}).get("files", {})}
    out = []
    for p in folder.iterdir():
        n = p.name
        if n in OWNED or n in listed:
            continue
        out.append(n)
    return sorted(out)


def check_output_folder(out: str | Path, *, option: str = "--out") -> Path:
    """Check before any work that ``out`` can receive a result folder: not an existing file,
    not a folder holding files poolwise did not write (they would be lost when the folder is
    replaced), and writable. Returns the absolute path."""
    target = _absolute(out)
    if target.exists() and not target.is_dir():
        raise StoreError(
            f"{option} '{out}' is an existing file; {option} names a folder (poolwise writes "
            "fit.nc, summary.csv and result.json into it): choose a folder name"
        )
    if target == Path(target.anchor):
        raise StoreError(f"{option} '{out}' is the file system root; choose a folder")
    outer = result_root(target.parent)
    if outer is not None:
        raise StoreError(
            f"{option} '{out}' is inside the saved result folder '{outer}'; poolwise does not "
            "write into a saved result: choose a folder outside it"
        )
    if target.is_dir():
        foreign = _foreign(target)
        if foreign:
            raise StoreError(
                f"{option} '{out}' holds files poolwise did not write ({_few(foreign)}); a "
                "result replaces the whole folder, so poolwise will not write there: choose a "
                "new or empty folder"
            )
    _probe_writable(target.parent, f"{option} folder")
    if target.is_dir():
        _probe_writable(target, f"{option} folder")
    return target


def check_output_file(path: str | Path, *, option: str, allow_in: Path | None = None) -> Path:
    """Check before any work that the file ``path`` can be written: not an existing folder,
    not inside a saved result folder (except the folder ``allow_in`` being written now), and
    its folder writable."""
    target = _absolute(path)
    if target.is_dir():
        raise StoreError(f"{option} '{path}' is an existing folder; give a file name, e.g. "
                         f"{Path(path) / 'report.html'}")
    root = result_root(target.parent)
    if root is not None and root != allow_in:
        raise StoreError(
            f"{option} '{path}' is inside the saved result folder '{root}'; poolwise does not "
            "write into a saved result (it would overwrite or mix its files): choose a file "
            "outside it"
        )
    if allow_in is not None and target == allow_in:
        raise StoreError(f"{option} '{path}' is the result folder itself; give a file name, "
                         f"e.g. {Path(path) / 'report.html'}")
    if allow_in is not None and _inside(target, allow_in):
        rel = target.relative_to(allow_in)
        if rel.parts[0] in OWNED - {"report.html"} or rel.parts[0] == MANIFEST:
            raise StoreError(
                f"{option} '{path}' would overwrite '{rel.parts[0]}' of the result written to "
                f"'{allow_in}'; choose another file name"
            )
        return target
    _probe_writable(target.parent, option)
    return target


def check_output_dir(path: str | Path, *, option: str) -> Path:
    """Check before any work that the folder ``path`` (for plots) can be written."""
    target = _absolute(path)
    if target.exists() and not target.is_dir():
        raise StoreError(f"{option} '{path}' is an existing file; {option} names a folder")
    root = result_root(target)
    if root is not None:
        raise StoreError(
            f"{option} '{path}' is inside the saved result folder '{root}'; poolwise does not "
            "write into a saved result: choose a folder outside it"
        )
    _probe_writable(target, option)
    return target


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


# --------------------------------------------------------------------------------------------
# atomic writes
# --------------------------------------------------------------------------------------------


_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap the two paths (Linux renameat2). False when not available here."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd = -100
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _staging(target: Path) -> Path:
    """A new empty folder beside ``target``, with the permissions a plain mkdir would give."""
    try:
        staged = Path(tempfile.mkdtemp(prefix=f".{target.name}{_TMP_TAG}", dir=target.parent))
        mask = os.umask(0o022)
        os.umask(mask)
        os.chmod(staged, 0o777 & ~mask)
    except OSError as err:
        raise StoreError(_os_message(err, target.parent, "write into")) from None
    return staged


def _fsync_tree(folder: Path) -> None:
    for root, _dirs, files in os.walk(folder):
        for name in files:
            fd = os.open(Path(root) / name, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(root))


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _contains_cwd(target: Path) -> bool:
    try:
        return _inside(Path(os.getcwd()).resolve(), target)
    except OSError:
        return False


def _swap_in(staged: Path, target: Path) -> None:
    """Make ``staged`` the folder at ``target``, replacing what is there as a whole."""
    if not target.exists():
        os.rename(staged, target)
        _fsync_dir(target.parent)
        return
    if _contains_cwd(target):
        _replace_entries(staged, target)
        return
    if _exchange(staged, target):  # staged now holds the old folder
        _fsync_dir(target.parent)
        shutil.rmtree(staged, ignore_errors=True)
        return
    aside = Path(tempfile.mkdtemp(prefix=f".{target.name}{_OLD_TAG}", dir=target.parent))
    aside.rmdir()
    os.rename(target, aside)
    try:
        os.rename(staged, target)
    except BaseException:
        os.rename(aside, target)
        raise
    _fsync_dir(target.parent)
    shutil.rmtree(aside, ignore_errors=True)


def _replace_entries(staged: Path, target: Path) -> None:
    """Replace a folder that cannot be renamed (the current directory is in it) entry by
    entry: the manifest goes first and comes back last, so an interrupted write leaves a
    folder that loading refuses, never one that loads mixed."""
    old = None
    with contextlib.suppress(StoreError):
        old = read_manifest(target)
    listed = {n.split("/")[0] for n in (old or {}).get("files", {})}
    with contextlib.suppress(FileNotFoundError):
        (target / MANIFEST).unlink()
    _fsync_dir(target)
    for p in target.iterdir():
        if (p.name in OWNED or p.name in listed) and not (staged / p.name).exists():
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
    for p in sorted(staged.iterdir(), key=lambda q: q.name == MANIFEST):
        dest = target / p.name
        if dest.is_dir() and not dest.is_symlink():
            shutil.rmtree(dest)
        os.replace(p, dest)
    _fsync_dir(target)
    shutil.rmtree(staged, ignore_errors=True)


def _recover(target: Path) -> None:
    """After a crash between the two renames of the non-Linux swap: put the old folder back
    when the target is missing. Stale temporary folders are removed."""
    for p in target.parent.glob(f".{target.name}{_OLD_TAG}*"):
        if not target.exists() and (p / MANIFEST).is_file():
            os.rename(p, target)
        else:
            shutil.rmtree(p, ignore_errors=True)
    for p in target.parent.glob(f".{target.name}{_TMP_TAG}*"):
        shutil.rmtree(p, ignore_errors=True)


def _amount(n: int) -> str:
    return f"{fmt_bytes(n)} ({n:,} bytes)"


def check_free_space(folder: str | Path, needed: int, *, what: str = "the result") -> None:
    """Raise :class:`StoreError` before anything is written when the file system of
    ``folder`` has less than ``needed`` bytes free, naming the folder, both amounts and the
    fix. Where the free space cannot be read, nothing is checked."""
    free = free_disk_bytes(folder)
    if free is not None and free < needed:
        raise StoreError(
            f"not enough free space to save {what} in '{folder}': it needs about "
            f"{_amount(needed)} and {_amount(free)} are free there; free some disk space, or "
            "save to a folder on a disk with room"
        )


@contextlib.contextmanager
def write_folder(
    out: str | Path, kind: Kind, *, manifest_extra: Mapping[str, Any] | None = None,
    needed: int = 0,
) -> Iterator[Path]:
    """Build a result folder in a temporary folder beside ``out`` (yielded) and, when the
    block succeeds, write its manifest and swap it in as a whole. On an error (a full disk
    included) or an interrupt the target is left as it was and the temporary folder is
    removed. ``needed``: the bytes the result will take (an estimate); a file system with less
    free space is refused before anything is written (:func:`check_free_space`). Holds the
    write lock of ``out`` throughout."""
    target = check_output_folder(out, option="output folder")
    with lock_folder(target):
        _recover(target)
        check_free_space(target, needed, what=f"the {kind}")
        staged = _staging(target)
        try:
            yield staged
            write_manifest(staged, kind, extra=manifest_extra)
            _fsync_tree(staged)
            _swap_in(staged, target)
        except BaseException:
            shutil.rmtree(staged, ignore_errors=True)
            raise


@contextlib.contextmanager
def update_folder(folder: str | Path, *, replace: tuple[str, ...] = ("report.html",)
                  ) -> Iterator[Path]:
    """Add or replace the files named in ``replace`` (e.g. the HTML report) of a saved
    result folder the same way: a verified copy (hard links where possible) of everything
    else is staged beside it, the block writes into it, and the new manifest and the swap
    follow. The result's own files cannot be changed this way."""
    target = _absolute(folder)
    outer = result_root(target.parent)
    if outer is not None:
        raise StoreError(
            f"'{target}' is part of the saved result '{outer}'; poolwise does not change it "
            f"alone (that would break the outer folder): give --output FILE outside '{outer}', "
            f"or report the whole result with `poolwise report {outer}`"
        )
    if any(n in OWNED - {"report.html"} for n in replace):
        raise StoreError(f"refusing to replace the result's own files ({', '.join(replace)})")
    with lock_folder(target):
        m = verify_folder(target)
        staged = _staging(target)
        try:
            keep = {n: v["sha256"] for n, v in m["files"].items() if n not in replace}
            for name in keep:
                dest = staged / name
                dest.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.link(target / name, dest)
                except OSError:
                    shutil.copy2(target / name, dest)
            yield staged
            for name, sha in keep.items():
                if not (staged / name).is_file() or _sha256(staged / name) != sha:
                    raise StoreError(f"refusing to change '{name}' of the saved result '{target}'")
            extra = {k: v for k, v in m.items()
                     if k not in ("files", "kind", "poolwise_manifest", "format", "written")}
            write_manifest(staged, m["kind"], extra=extra)
            _fsync_tree(staged)
            _swap_in(staged, target)
        except BaseException:
            shutil.rmtree(staged, ignore_errors=True)
            raise


def fallback_bases() -> list[Path]:
    """Where a result goes when its intended folder cannot take it, in order: the current
    directory, then the system's temporary directory."""
    out: list[Path] = []
    for base in (os.getcwd, tempfile.gettempdir):
        try:
            p = Path(base()).resolve()
        except OSError:  # the current directory was removed
            continue
        if p not in out:
            out.append(p)
    return out


def fallback_folder(name: str = "poolwise-result", *, needed: int = 0,
                    base: str | Path | None = None) -> Path:
    """A new folder for a result whose intended output failed: in ``base``, or else in the
    first of :func:`fallback_bases` where it can be created and ``needed`` bytes are free.
    Raises :class:`StoreError` saying, for each place, why it cannot hold the result."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    reasons = []
    for b in [Path(base)] if base is not None else fallback_bases():
        free = free_disk_bytes(b)
        if free is not None and free < needed:
            reasons.append(f"'{b}' has {fmt_bytes(free)} free, about {fmt_bytes(needed)} needed")
            continue
        try:
            return Path(tempfile.mkdtemp(prefix=f"{name}-{stamp}-", dir=b))
        except OSError as err:
            reasons.append(f"'{b}': {err.strerror or err}")
    err = StoreError(f"no folder can hold the result ({'; '.join(reasons) or 'none found'})")
    err.reasons = reasons  # type: ignore[attr-defined]
    raise err


# --------------------------------------------------------------------------------------------
# CSV without spreadsheet formulas
# --------------------------------------------------------------------------------------------

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def neutralize(v: Any) -> Any:
    """A text cell that a spreadsheet would run as a formula (it starts with ``=``, ``+``,
    ``-``, ``@``, a tab or a carriage return) gets a leading ``'`` (the OWASP rule), also a
    label like ``+1`` or ``-1.5`` (a spreadsheet would turn that label into a number).
    Numbers (in numeric columns) are never changed."""
    if isinstance(v, str) and v.startswith(_FORMULA_START):
        return "'" + v
    return v


def safe_csv(df: Any, path: str | Path, **kwargs: Any) -> None:
    """``df.to_csv(path, **kwargs)`` with every text cell of the index, the column names and
    the text columns passed through :func:`neutralize`; numeric columns are untouched."""
    import pandas as pd

    def text(dtype: Any) -> bool:
        return (pd.api.types.is_object_dtype(dtype) or pd.api.types.is_string_dtype(dtype)
                or isinstance(dtype, pd.CategoricalDtype))

    out = df.copy()
    for col in out.columns:
        if text(out[col].dtype):
            out[col] = out[col].astype(object).map(neutralize)
    out.columns = [neutralize(c) for c in out.columns]
    if isinstance(out.index, pd.MultiIndex):
        out.index = out.index.map(lambda t: tuple(neutralize(x) for x in t))
    elif text(out.index.dtype):
        out.index = pd.Index([neutralize(x) for x in out.index], name=out.index.name, dtype=object)
    if "index_label" in kwargs and isinstance(kwargs["index_label"], str):
        kwargs["index_label"] = neutralize(kwargs["index_label"])
    cells = [*out.columns, *(out.index.to_flat_index() if out.index.dtype == object else []),
             *(v for c in out.columns if out[c].dtype == object for v in out[c])]
    if any(isinstance(v, str) and "\r" in v for v in cells):
        # the csv module quotes a field with a line break only if it is in the line
        # terminator ("\n"): quote all text so a carriage return stays inside its field
        kwargs.setdefault("quoting", csv.QUOTE_NONNUMERIC)
    if len(out) >= ARROW_CSV_ROWS and _arrow_csv(out, path, **kwargs):
        return
    out.to_csv(path, **kwargs)


#: a table of this many rows or more is written by pyarrow's CSV writer: the same values
#: (read back equal), every text quoted; pandas formats each float in Python (a summary of
#: 10^6 group levels: 7 s, pyarrow 0.9 s)
ARROW_CSV_ROWS = 100_000


def _arrow_csv(df: Any, path: str | Path, *, index: bool = True, index_label: Any = None,
               **kwargs: Any) -> bool:
    """``df`` (already neutralized) to ``path`` by pyarrow; False (nothing written) for what
    it does not take: other keywords, a MultiIndex, columns arrow cannot type."""
    import pandas as pd
    import pyarrow as pa
    from pyarrow import csv as pacsv

    if set(kwargs) - {"quoting"} or isinstance(df.index, pd.MultiIndex):
        return False
    frame = df
    try:
        if index:
            name = index_label if index_label is not None else (df.index.name or "")
            frame = df.reset_index(drop=True)
            frame.insert(0, name, df.index.to_numpy())
        table = pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError):
        return False
    pacsv.write_csv(table, str(path))
    return True
