"""Fixed cost: the command a new user runs, as whole processes, against its peers.

    poolwise fit --example bangladesh --seed 1 --out DIR

is timed from outside (wall clock, interpreter start to exit) against whole peer processes
that do the same work on the same model (bench/peers.py: imports, model building, sampling
4 chains x (1000 tune + 1000 draws), convergence diagnostics, and an ArviZ netCDF file written
with ``--out``): PyMC + nutpie on the aggregated binomial cells and NumPyro on the rows and on
the cells. Run with the project's interpreter (the peers run in bench/.venv-peers):

    PYTHONPATH=src .venv/bin/python bench/fixed_cost.py --repeats 5 [--phases 5] [--cold 1]

* every command is run ``--warmup`` times first (untimed: the on-disk caches of every tool,
  poolwise's numba cache and PyTensor's compile cache, are then warm), then ``--repeats``
  rounds, each round one run of every tool, the order rotating from round to round;
* ``--cold``: runs of poolwise after deleting its numba caches (``*.nbi`` / ``*.nbc`` beside
  the sources: what a fresh install does once), reported on their own; the caches are
  written again by the run;
* ``--phases``: runs of poolwise's command in a process that records when each of its
  phases (``poolwise.progress.phase``) begins and ends, with the start-up and imports before
  them and the interpreter's exit after, median per phase;
* ``--importtime``: one more such run under ``python -X importtime``, its imports summed per
  phase (the imports inflate under it: read them as shares).

poolwise runs from this checkout's ``src`` (PYTHONPATH), through the console script next to
``sys.executable``, with its modules compiled to bytecode first (``compileall``), as an
installed package has them (pip compiles at install; an editable install under
``PYTHONDONTWRITEBYTECODE`` compiles ~60 modules from source in every run instead, about
0.1 s; ``--no-compile`` keeps that). Each run writes into a fresh folder under ``--work``
(default: a temporary folder), removed at the end. The load of the machine is recorded per
run (CPU seconds used by other processes while it ran, from /proc/stat) and at the start and
end. Results:
``bench/results/<date>-fixed-cost.json`` (no machine paths) and a markdown table on stdout.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
SRC = REPO / "src"
sys.path.insert(0, str(BENCH))
import run as harness  # noqa: E402  (bench/run.py: machine info and load measurement)

PEER_PY_DEFAULT = BENCH / ".venv-peers" / "bin" / "python"
SEED = 1
POOLWISE_ARGS = ["fit", "--example", "bangladesh", "--seed", str(SEED)]
#: peer tool name -> bench/peers.py arguments (the seed model, 4 chains x (1000 + 1000))
PEERS = {
    "pymc-nutpie (aggregated)": ["--tool", "pymc-nutpie", "--aggregate"],
    "numpyro": ["--tool", "numpyro"],
    "numpyro (aggregated)": ["--tool", "numpyro", "--aggregate"],
}
#: the target: poolwise <= 1/3 of this peer, and faster than every NumPyro variant
PYMC_REFERENCE = "pymc-nutpie (aggregated)"

# The phase recorder: poolwise's command with a reporter that notes when each phase begins
# and ends (time.time(), comparable with the harness's clock), the summary's printing, and
# when main() returned. argv[1]: the JSON file of marks; the rest: the command's arguments.
RECORDER = r"""
import time
_marks = [("process started", time.time())]
import os
def _mark(label):
    _marks.append((label, time.time()))
    os.write(2, ("@@mark " + label + "\n").encode())  # places -X importtime's lines
import json, sys
import poolwise.cli as cli
from poolwise import progress
_mark("imported")
class _Rec(progress.Reporter):
    def __init__(self, inner):
        self.inner = inner
    def started(self, path):
        _mark("begin " + " > ".join(path))
        if self.inner is not None:
            self.inner.started(path)
    def ended(self, path, seconds):
        _mark("end " + " > ".join(path))
        if self.inner is not None:
            self.inner.ended(path, seconds)
    def sampled(self, path, p):
        if self.inner is not None:
            self.inner.sampled(path, p)
    def model(self, spec, config):
        if self.inner is not None:
            self.inner.model(spec, config)
    def close(self):
        if self.inner is not None:
            self.inner.close()
_reporter = cli._reporter
cli._reporter = lambda args: _Rec(_reporter(args))
_print_summary = cli._print_summary
def _printed(*a, **k):
    _mark("begin printing the summary")
    try:
        return _print_summary(*a, **k)
    finally:
        _mark("end printing the summary")
cli._print_summary = _printed
_out = sys.argv[1]
def _write():
    with open(_out, "w") as fh:
        json.dump(_marks, fh)
_os_exit = os._exit
def _exit(code):  # the command ends its process itself: note when
    _mark("main returned")
    _write()
    _os_exit(code)
os._exit = _exit
sys.argv = ["poolwise", *sys.argv[2:]]  # as the console script runs it
code = cli.main()
_mark("main returned")
_write()
sys.exit(code)
"""


def log(msg: str) -> None:
    print(f"[fixed-cost] {msg}", file=sys.stderr, flush=True)


def median(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def _jiffies() -> tuple[int, int] | None:
    return harness._cpu_jiffies()  # noqa: SLF001


def _env(src: Path = SRC) -> dict[str, str]:
    """The environment of poolwise's runs: its sources (this checkout's) first."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(src), env.get("PYTHONPATH", "")) if p)
    return env


def timed(argv: list[str], env: dict[str, str] | None, timeout: float) -> dict:
    """One whole process: outside wall time, its CPU and the CPU others used meanwhile."""
    busy = harness.wait_for_idle(harness.IDLE["threshold"], harness.IDLE["max_wait"])
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    j0 = _jiffies()
    t0 = time.time()
    t = time.perf_counter()
    try:
        proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=timeout)
        rc, err = proc.returncode, proc.stderr
    except subprocess.TimeoutExpired:
        rc, err = None, f"timed out after {timeout} s"
    wall = time.perf_counter() - t
    t1 = time.time()
    j1 = _jiffies()
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    rec: dict = {"wall_s": wall, "cpu_s": cpu, "rc": rc, "t_start": t0, "t_end": t1,
                 "busy_cores_before": busy}
    if j0 is not None and j1 is not None:
        rec["foreign_cpu_s"] = max(0.0, (j1[0] - j0[0]) / harness._HZ - cpu)  # noqa: SLF001
        rec["steal_s"] = (j1[1] - j0[1]) / harness._HZ  # noqa: SLF001
    if rc != 0:
        rec["stderr_tail"] = (err or "")[-2000:]
    return rec


class Tool:
    """A whole-process command; ``argv(folder)`` gives its arguments for one run that writes
    into ``folder``."""

    def __init__(self, name: str, argv, env: dict[str, str] | None, peer: bool):
        self.name, self.argv, self.env, self.peer = name, argv, env, peer
        self.runs: list[dict] = []
        self.warmups: list[dict] = []
        self.failed: str | None = None

    def run_once(self, work: Path, tag: str, timeout: float) -> dict:
        folder = work / f"{self.name.replace(' ', '_').replace('(', '').replace(')', '')}-{tag}"
        argv = self.argv(folder)
        if self.peer:
            folder.mkdir(parents=True, exist_ok=True)
        rec = timed(argv, self.env, timeout)
        rec["tag"] = tag
        if rec["rc"] == 0:
            if self.peer:
                rec["inside"] = json.loads((folder / "peer.json").read_text())
                rec["netcdf_bytes"] = (folder / "fit.nc").stat().st_size
            else:
                rec["netcdf_bytes"] = (folder / "fit.nc").stat().st_size
        shutil.rmtree(folder, ignore_errors=True)
        return rec


def poolwise_tool(src: Path = SRC, name: str = "poolwise") -> Tool:
    script = Path(sys.executable).parent / "poolwise"
    if not script.exists():
        raise SystemExit(f"no poolwise console script next to {sys.executable}")
    tool = Tool(name, lambda folder: [str(script), *POOLWISE_ARGS, "--out", str(folder)],
                _env(src), peer=False)
    tool.src = src
    return tool


def peer_tool(name: str, peer_py: Path) -> Tool:
    def argv(folder: Path) -> list[str]:
        return [str(peer_py), str(BENCH / "peers.py"), *PEERS[name], "--model", "intercepts",
                "--seed", str(SEED), "--chains", "4", "--tune", "1000", "--draws", "1000",
                "--json", str(folder / "peer.json"), "--out", str(folder / "fit.nc")]

    return Tool(name, argv, None, peer=True)


def numba_caches(src: Path = SRC) -> list[Path]:
    return [p for ext in ("*.nbi", "*.nbc") for p in (src / "poolwise").rglob(ext)]


# ------------------------------------------------------------------------------ phases
def _phase_durations(marks: list[tuple[str, float]], t_spawn: float, t_end: float) -> dict:
    """Seconds per phase from the recorder's marks: start-up (spawn to the first line),
    imports, each phase (nested ones as 'outer > inner'), the exit, and 'other' (what lies
    between the top-level phases of the command)."""
    at = dict()
    begins: dict[str, float] = {}
    out: dict[str, float] = {}
    for label, t in marks:
        at.setdefault(label, t)
        if label.startswith("begin "):
            begins[label[6:]] = t
        elif label.startswith("end "):
            name = label[4:]
            if name in begins:
                out[name] = out.get(name, 0.0) + t - begins.pop(name)
    started, imported = at["process started"], at["imported"]
    returned = at.get("main returned", t_end)
    top = sum(v for k, v in out.items() if " > " not in k)
    res = {"interpreter start-up": started - t_spawn, "imports (poolwise.cli)": imported - started}
    res.update(out)
    res["other (between the phases)"] = returned - imported - top
    res["exit (after main returned)"] = t_end - returned
    return res


def run_phases(n: int, work: Path, timeout: float, importtime: bool = False,
               src: Path = SRC, name: str = "poolwise") -> list[dict]:
    runs = []
    for i in range(n + (1 if importtime else 0)):
        it = importtime and i == n
        folder = work / f"phases-{name.replace(' ', '_')}-{i}"
        marks_file = work / f"phases-{name.replace(' ', '_')}-{i}.json"
        argv = [sys.executable, *(["-X", "importtime"] if it else []), "-c", RECORDER,
                str(marks_file), *POOLWISE_ARGS, "--out", str(folder)]
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        j0 = _jiffies()
        t_spawn = time.time()
        proc = subprocess.run(argv, cwd=REPO, env=_env(src), capture_output=True, text=True,
                              timeout=timeout)
        t_end = time.time()
        j1 = _jiffies()
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
        shutil.rmtree(folder, ignore_errors=True)
        if proc.returncode != 0 or not marks_file.is_file():
            raise SystemExit(f"phase run failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
        marks = json.loads(marks_file.read_text())
        rec = {"tool": name, "wall_s": t_end - t_spawn,
               "phases": _phase_durations(marks, t_spawn, t_end)}
        if j0 is not None and j1 is not None:
            rec["foreign_cpu_s"] = max(0.0, (j1[0] - j0[0]) / harness._HZ - cpu)  # noqa: SLF001
        if it:
            rec["imports_by_phase"] = _imports_by_phase(proc.stderr)
            rec["importtime"] = True
        runs.append(rec)
        log(f"phases run {i + 1} ({name}): {rec['wall_s']:.2f} s"
            + (" (-X importtime)" if it else ""))
    return runs


def _imports_by_phase(stderr: str) -> dict[str, dict[str, float]]:
    """-X importtime's top-level imports (cumulative seconds) per phase: the recorder writes
    its marks to standard error between importtime's lines. Each phase lists its imports
    above 5 ms and their total."""
    out: dict[str, dict[str, float]] = {}
    where = "start-up and imports"
    for line in stderr.splitlines():
        if line.startswith("@@mark "):
            label = line[7:]
            where = (label[6:] if label.startswith("begin ")
                     else f"after {label.removeprefix('end ')}")
            continue
        parts = line.split("|")
        if not line.startswith("import time:") or len(parts) != 3:
            continue
        if parts[2].startswith("   ") or not parts[1].strip().isdigit():
            continue  # nested: inside its parent's cumulative time
        seconds = int(parts[1]) / 1e6
        bucket = out.setdefault(where, {"total": 0.0})
        bucket["total"] += seconds
        if seconds >= 0.005:
            bucket[parts[2].strip()] = bucket.get(parts[2].strip(), 0.0) + seconds
    return out


# ------------------------------------------------------------------------------ main
def _clean(obj, replace: list[tuple[str, str]]):
    """``obj`` with machine paths replaced (results carry none)."""
    if isinstance(obj, str):
        for a, b in replace:
            obj = obj.replace(a, b)
        return obj
    if isinstance(obj, dict):
        return {k: _clean(v, replace) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v, replace) for v in obj]
    return obj


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5, help="timed rounds (default 5)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed runs of each command first")
    ap.add_argument("--cold", type=int, default=1,
                    help="poolwise runs after deleting its numba caches (default 1)")
    ap.add_argument("--phases", type=int, default=0, help="poolwise runs with phase marks")
    ap.add_argument("--importtime", action="store_true",
                    help="with --phases: one more run under -X importtime")
    ap.add_argument("--tools", default=",".join(PEERS),
                    help=f"peers, comma-separated (default: {','.join(PEERS)}); '' for none")
    ap.add_argument("--peer-python", default=str(PEER_PY_DEFAULT))
    ap.add_argument("--work", default=None, help="folder for the runs' output (default: temp)")
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument("--out", default=None,
                    help="JSON (default bench/results/<date>-fixed-cost.json)")
    ap.add_argument("--label", default="", help="a note stored with the results")
    ap.add_argument("--wait-idle", type=float, default=0.0, metavar="SECONDS",
                    help="before each run wait up to SECONDS for fewer than --idle-threshold "
                    "cores to be busy (bench/run.py's rule; 0: do not wait, only record)")
    ap.add_argument("--idle-threshold", type=float, default=0.3, metavar="CORES")
    ap.add_argument("--no-compile", action="store_true",
                    help="do not compile poolwise's modules to bytecode first")
    ap.add_argument("--baseline", default=None, metavar="SRC",
                    help="another poolwise source folder (e.g. `git archive` of an earlier "
                    "commit, its src/) timed alongside as 'poolwise (baseline)'")
    args = ap.parse_args(argv)

    harness.IDLE["threshold"], harness.IDLE["max_wait"] = args.idle_threshold, args.wait_idle
    started = _dt.datetime.now(_dt.UTC)
    machine = harness.machine_info()
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="poolwise-fixed-"))
    work.mkdir(parents=True, exist_ok=True)
    tools = [poolwise_tool()]
    if args.baseline:
        tools.append(poolwise_tool(Path(args.baseline).resolve(), "poolwise (baseline)"))
    pw_tools = list(tools)
    if not args.no_compile:
        import compileall  # noqa: PLC0415

        for t in pw_tools:
            compileall.compile_dir(str(t.src / "poolwise"), quiet=1)
    names = [t.strip() for t in args.tools.split(",") if t.strip()]
    if names:
        peer_py = Path(args.peer_python)
        if not peer_py.exists():
            raise SystemExit(f"peer environment missing: {peer_py} (see bench/README.md)")
        tools += [peer_tool(n, peer_py) for n in names]
    log(f"{machine.get('cpu_model')} x{machine['cpu_count']}, load average "
        f"{machine.get('loadavg_at_start')}; tools: {', '.join(t.name for t in tools)}")
    try:
        for w in range(args.warmup):
            for tool in tools:
                rec = tool.run_once(work, f"warmup{w}", args.timeout)
                tool.warmups.append(rec)
                log(f"warm-up {tool.name}: {rec['wall_s']:.2f} s (exit {rec['rc']})")
                if rec["rc"] != 0:
                    tool.failed = rec.get("stderr_tail", "")[-500:]
        for r in range(args.repeats):
            k = r % len(tools)
            for tool in tools[k:] + tools[:k]:  # the order rotates from round to round
                if tool.failed:
                    continue
                rec = tool.run_once(work, f"r{r}", args.timeout)
                tool.runs.append(rec)
                log(f"round {r + 1}/{args.repeats} {tool.name}: {rec['wall_s']:.2f} s, cpu "
                    f"{rec['cpu_s']:.2f} s, foreign cpu {rec.get('foreign_cpu_s', 0):.2f} s")
                if rec["rc"] != 0:
                    tool.failed = rec.get("stderr_tail", "")[-500:]
        phases = []
        if args.phases:
            for _ in range(args.phases):  # interleaved when there is a baseline
                for t in pw_tools:
                    phases += run_phases(1, work, args.timeout, False, t.src, t.name)
            if args.importtime:
                for t in pw_tools:
                    phases += run_phases(0, work, args.timeout, True, t.src, t.name)
        cold = []
        for c in range(args.cold):
            for t in pw_tools:
                removed = numba_caches(t.src)
                for p in removed:
                    p.unlink()
                rec = t.run_once(work, f"cold{c}", args.timeout)
                rec["tool"] = t.name
                rec["numba_cache_files_removed"] = len(removed)
                cold.append(rec)
                log(f"cold {t.name} ({len(removed)} numba cache files removed): "
                    f"{rec['wall_s']:.2f} s (exit {rec['rc']})")
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    load_end = os.getloadavg()

    def whole(tool: Tool) -> float | None:
        return median([r["wall_s"] for r in tool.runs if r["rc"] == 0])

    pw = whole(tools[0])
    rows = []
    for tool in tools:
        ok = [r for r in tool.runs if r["rc"] == 0]
        w = whole(tool)
        row = {
            "tool": tool.name, "n": len(ok), "whole_process_s": w,
            "runs_s": [round(r["wall_s"], 3) for r in ok],
            "cpu_s": median([r["cpu_s"] for r in ok]),
            "foreign_cpu_s": [round(r.get("foreign_cpu_s", 0.0), 2) for r in ok],
            "netcdf_bytes": ok[0].get("netcdf_bytes") if ok else None,
            "ratio": (pw / w) if (tool is not tools[0] and pw and w) else None,
        }
        if tool.peer and ok:
            ins = [r["inside"]["timings"] for r in ok]
            row["inside"] = {k: median([t.get(k) for t in ins])
                             for k in ("import_s", "build_s", "compile_s", "sample_s",
                                       "diagnostics_s", "save_s", "total_s")}
            row["posterior_mean"] = ok[0]["inside"]["posterior_mean"]
        if tool.failed:
            row["failed"] = tool.failed
        rows.append(row)
    phase_median: dict[str, dict[str, float | None]] = {}
    for t in pw_tools:
        runs = [p for p in phases if not p.get("importtime") and p["tool"] == t.name]
        if runs:
            keys = list(dict.fromkeys(k for p in runs for k in p["phases"]))
            phase_median[t.name] = {k: median([p["phases"].get(k) for p in runs]) for k in keys}
            phase_median[t.name]["whole process"] = median([p["wall_s"] for p in runs])

    md = [f"### Fixed cost: `poolwise {' '.join(POOLWISE_ARGS)} --out DIR`, whole processes, "
          f"median of {args.repeats} (warm caches)", "",
          f"{machine['cpu_count']} cores ({machine.get('cpu_model', '?')}); load average at "
          f"start {tuple(round(x, 2) for x in machine.get('loadavg_at_start', ()))}, at end "
          f"{tuple(round(x, 2) for x in load_end)}", "",
          "| tool | whole process (s) | runs (s) | CPU (s) | foreign CPU per run (s) | "
          "poolwise / tool |", "|---|---:|---|---:|---|---:|"]
    for row in rows:
        md.append(f"| {row['tool']} | {harness.fmt(row['whole_process_s'])} | "
                  f"{', '.join(f'{x:.2f}' for x in row['runs_s'])} | "
                  f"{harness.fmt(row['cpu_s'])} | {row['foreign_cpu_s']} | "
                  f"{harness.fmt(row['ratio'])} |")
    if cold:
        md += ["", "with its numba caches deleted first (cold): "
               + ", ".join(f"{c['tool']} {c['wall_s']:.2f} s" for c in cold)]
    if phase_median:
        names = list(phase_median)
        md += ["", f"phases (median of {args.phases} runs with phase marks each):", "",
               "| phase | " + " | ".join(names) + " |",
               "|---|" + "---:|" * len(names)]
        keys = list(dict.fromkeys(k for v in phase_median.values() for k in v))
        md += [f"| {k} | " + " | ".join(harness.fmt(phase_median[n].get(k), 3) for n in names)
               + " |" for k in keys]
    for p in phases:
        if p.get("importtime"):
            md += ["", f"{p['tool']}: imports per phase (one run under -X importtime, "
                   "cumulative s; inflated by it):", ""]
            for where, mods in p["imports_by_phase"].items():
                top = sorted(((m, v) for m, v in mods.items() if m != "total"),
                             key=lambda kv: -kv[1])[:6]
                md.append(f"- {where}: {mods['total']:.3f} s ("
                          + ", ".join(f"{m} {v:.3f}" for m, v in top) + ")")
    text = "\n".join(md)
    print(text)

    out = Path(args.out) if args.out else (
        BENCH / "results" / f"{started.date().isoformat()}-fixed-cost.json")
    payload = {
        "command": f"poolwise {' '.join(POOLWISE_ARGS)} --out DIR",
        "label": args.label,
        "started_utc": started.isoformat(),
        "finished_utc": _dt.datetime.now(_dt.UTC).isoformat(),
        "machine": machine, "loadavg_at_end": load_end,
        "repeats": args.repeats, "warmup": args.warmup,
        "poolwise_bytecode_compiled": not args.no_compile,
        "table": rows, "markdown": text,
        "cold_runs": cold, "phases_median": phase_median, "phase_runs": phases,
        "raw": {t.name: {"command": " ".join(t.argv(Path("DIR"))), "warmups": t.warmups,
                         "runs": t.runs} for t in tools},
    }
    replace = [(str(work), "<work>"), (str(REPO) + "/", ""), (str(REPO), "."),
               *([(str(Path(args.baseline).resolve()), "<baseline-src>")] if args.baseline
                 else []),
               (str(Path(sys.executable).parent), "<python-bin>"),
               (str(Path(args.peer_python).parent), "<peer-python-bin>"),
               (str(Path.home()), "~")]
    payload = _clean(payload, replace)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    log(f"wrote {out.relative_to(REPO) if out.is_relative_to(REPO) else out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
