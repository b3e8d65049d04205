"""The repository as others receive it: no machine paths in any tracked file (benchmark results
and docs name files relative to the repository root)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: absolute paths of somebody's machine: home and work folders, Windows user folders
MACHINE_PATH = re.compile(r"(?<![\w.])(/(?:home|root|Users|work)/|[A-Z]:\\Users\\)\w")


def _tracked() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [ROOT / line for line in out.splitlines() if line]


def test_no_machine_paths_in_tracked_files():
    found = []
    for path in _tracked():
        if path.suffix in (".csv", ".png") or not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for n, line in enumerate(text.splitlines(), 1):
            if MACHINE_PATH.search(line) and "MACHINE_PATH" not in line:
                found.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()[:100]}")
    assert not found, "machine paths in the repository:\n" + "\n".join(found[:20])
