"""What this machine has: available memory, free disk space, whether a folder is held in
memory.

The one place that reads them (the memory plan, the row-level view and the saved-result
writer ask here).
"""

from __future__ import annotations

import os

__all__ = ["available_memory_bytes", "fmt_bytes", "free_disk_bytes", "memory_backed"]


def available_memory_bytes() -> int | None:
    """MemAvailable from /proc/meminfo, or None where it cannot be read."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def fmt_bytes(b: float) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if b >= size:
            return f"{b / size:.1f} {unit}"
    return f"{int(b)} bytes"


def free_disk_bytes(path: str | os.PathLike[str]) -> int | None:
    """Bytes an unprivileged process may still write on the file system of ``path`` (or of
    its nearest existing parent), or None where it cannot be read."""
    p = os.path.abspath(os.fspath(path))
    while not os.path.exists(p) and os.path.dirname(p) != p:
        p = os.path.dirname(p)
    try:
        st = os.statvfs(p)
    except OSError:
        return None
    return int(st.f_bavail) * int(st.f_frsize)


def memory_backed(path: str) -> bool:
    """Whether ``path`` lies on a file system held in memory (tmpfs, ramfs), from the mount
    table (/proc/mounts; False where it cannot be read)."""
    try:
        real = os.path.realpath(path)
        best, kind = "", ""
        with open("/proc/mounts", encoding="utf-8") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) < 3:
                    continue
                mnt = parts[1].replace("\\040", " ")
                inside = real == mnt or real.startswith(mnt.rstrip("/") + "/")
                if inside and len(mnt) >= len(best):
                    best, kind = mnt, parts[2]
    except OSError:
        return False
    return kind in ("tmpfs", "ramfs")
