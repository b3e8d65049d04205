"""What this machine has: available memory, whether a folder is held in memory.

The one place that reads them (the memory plan, the row-level view and the saved-result
writer ask here).
"""

from __future__ import annotations

import os

__all__ = ["available_memory_bytes", "fmt_bytes", "memory_backed"]


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
