"""The command line's start and end as a process (bench/fixed_cost.py measures them): the
garbage collector is paused while poolwise is imported and set back as it was, and the
console entry point ends the process itself once the command is done, after the exit
functions and with its streams flushed, except where something still needs the interpreter's
own exit (a running thread, a tracer or profiler)."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("enabled", [True, False])
def test_import_sets_the_garbage_collector_back_as_it_was(enabled):
    done = _python(
        "import gc\n"
        f"gc.enable() if {enabled} else gc.disable()\n"
        "import poolwise\n"
        "print(gc.isenabled(), hasattr(poolwise, '_gc'))\n"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(enabled), "False"]


END = (
    "import atexit, sys\n"
    "from poolwise.cli import _end_process\n"
    "atexit.register(lambda: print('exit functions ran'))\n"
    "print('output', end=' ')\n"
    "{before}\n"
    "_end_process(7)\n"
    "print('returned', end=' ')\n"
)


def test_end_process_runs_the_exit_functions_flushes_and_exits_with_the_code():
    done = _python(END.format(before="sys.stderr.write('err')"))
    assert done.returncode == 7
    assert done.stdout == "output exit functions ran\n"
    assert done.stderr == "err"


@pytest.mark.parametrize("before", [
    # a non-daemon thread still running: the interpreter's exit waits for it
    "import threading, time\nthreading.Thread(target=time.sleep, args=(0.5,)).start()",
    # a tracer (coverage.py's older core) or a profiler writes its results at exit
    "sys.settrace(lambda *a: None)",
    "sys.setprofile(lambda *a: None)",
    # cProfile and coverage.py on Python 3.12 are sys.monitoring tools
    "sys.monitoring.use_tool_id(sys.monitoring.PROFILER_ID, 'a profiler')",
], ids=["thread", "settrace", "setprofile", "monitoring"])
def test_end_process_leaves_the_exit_to_the_interpreter_when_it_must(before):
    done = _python(END.format(before=before))
    assert done.returncode == 0, done.stderr
    assert done.stdout == "output returned exit functions ran\n"


def test_command_line_under_cprofile_still_writes_its_profile(tmp_path):
    """``python -m cProfile -o FILE -m poolwise.cli ...``: the profile is written."""
    prof = tmp_path / "cli.prof"
    done = subprocess.run(
        [sys.executable, "-m", "cProfile", "-o", str(prof), "-m", "poolwise.cli", "fit",
         "--example", "bangladesh", "--chains", "2", "--tune", "100", "--draws", "100",
         "--seed", "1", "--quiet"],
        capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("status: OK")
    assert prof.stat().st_size > 0
