"""poolwise benchmark harness: poolwise vs PyMC (own NUTS), PyMC + nutpie and NumPyro.

Run with the project's interpreter (``make bench`` does this):

    python bench/run.py [--model intercepts|slopes|cont20k] [--repeats 3] [--skip-peers]

Everything is measured in this one run, on this machine:

* peers: each repeat is a whole fresh process
  ``bench/.venv-peers/bin/python bench/peers.py --tool T --model M --seed N --json F``;
  the harness records the outside wall time and reads the inside timings from F;
* poolwise, whole process: ``poolwise fit --example bangladesh --chains 4
  --tune 1000 --draws 1000 --seed N --quiet`` (the console script next to
  ``sys.executable``), outside wall time; for ``cont20k``
  ``poolwise fit bench/.data/cont20k.csv -f "y ~ 1 + x + (1 | g)" ...`` on the CSV
  of bench/scale.py's ``cont20k`` case (written once, shared with the peers);
* poolwise, live in-process: ``poolwise.fit(formula, data, ...)`` in this
  process, after one untimed warm-up call, timed with ``time.perf_counter``
  (the fit's own ``.timings["sampling_s"]`` / ``["total_s"]`` are recorded too).

Whole-process runs are interleaved (repeat 1 of every tool, then repeat 2, ...)
so that slow drifts of the machine hit all tools alike.  Before the timed
repeats every whole-process command is run ``--warmup`` times (default 1,
untimed in the medians but recorded) so on-disk compile caches are in the same
state for everybody.

The table goes to stdout as markdown; everything (raw runs, medians, machine,
versions, commands) goes to ``bench/results/<date>-<model>.json``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import resource
import shlex
import signal
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = BENCH / "results"
PEER_PY_DEFAULT = BENCH / ".venv-peers" / "bin" / "python"

CHAINS, TUNE, DRAWS = 4, 1000, 1000
FORMULAS = {
    "intercepts": "use.contraception ~ 1 + (1 | district)",
    "slopes": "use.contraception ~ urban + (1 + urban | district)",
    "cont20k": "y ~ 1 + x + (1 | g)",
}
# bench/scale.py's cont20k case (20,000 rows, 200 groups, continuous x), one shared CSV
CONT20K_CSV = BENCH / ".data" / "cont20k.csv"
# Whole-process poolwise command per model (after the console script); a model
# without an entry is skipped for the whole-process measurement.
POOLWISE_CLI = {
    "intercepts": ["fit", "--example", "bangladesh"],
    "slopes": ["fit", "--example", "bangladesh", "--formula", FORMULAS["slopes"]],
    "cont20k": ["fit", str(CONT20K_CSV.relative_to(REPO)), "-f", FORMULAS["cont20k"]],
}
PEER_TOOLS = ("pymc", "pymc-nutpie", "numpyro")
# per model where it differs: PyMC's own NUTS takes minutes on 20k Bernoulli rows
# (add it with --tools pymc,pymc-nutpie,numpyro)
DEFAULT_TOOLS = {"cont20k": ("pymc-nutpie", "numpyro")}
# peers.py has no binomial-cell form of these models (every row is its own cell)
NO_AGGREGATE = {"cont20k"}


def ensure_data(model: str) -> Path | None:
    """The data file the peers (and poolwise's CLI) read for `model`; None: the bundled
    bangladesh data. cont20k: written once with bench/scale.py's generator."""
    if model != "cont20k":
        return None
    if not CONT20K_CSV.is_file():
        sys.path.insert(0, str(BENCH))
        from scale import write_case  # noqa: PLC0415

        write_case("cont20k", CONT20K_CSV)
        log(f"wrote {CONT20K_CSV.relative_to(REPO)} (bench/scale.py's cont20k case)")
    return CONT20K_CSV


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, digits=2):
    return "—" if x is None else f"{x:.{digits}f}"


def machine_info() -> dict:
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "sched_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
        info["mem_total"] = Path("/proc/meminfo").read_text().splitlines()[0].split(":", 1)[1].strip()
    except OSError:
        pass
    try:
        info["loadavg_at_start"] = os.getloadavg()
    except OSError:
        pass
    return info


# ------------------------------------------------------------------ machine load
def _cpu_jiffies() -> tuple[int, int] | None:
    """(busy, steal) jiffies summed over all CPUs from /proc/stat (None off Linux)."""
    try:
        with open("/proc/stat") as fh:
            parts = fh.readline().split()[1:]
    except OSError:
        return None
    vals = [int(x) for x in parts[:8]]
    idle = vals[3] + vals[4]  # idle + iowait
    steal = vals[7]  # time the hypervisor gave our vCPUs to someone else
    return sum(vals) - idle - steal, steal


_HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def busy_cores(interval: float = 1.0) -> float | None:
    """How many cores were busy (any process) over the next `interval` seconds."""
    a = _cpu_jiffies()
    time.sleep(interval)
    b = _cpu_jiffies()
    if a is None or b is None:
        return None
    return (b[0] - a[0]) / _HZ / interval


def _own_cpu() -> float:
    """CPU seconds of this process + its threads + waited-for children."""
    a = resource.getrusage(resource.RUSAGE_SELF)
    b = resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


def wait_for_idle(threshold: float, max_wait: float) -> float | None:
    """Block until fewer than `threshold` cores are busy (or max_wait passes)."""
    deadline = time.monotonic() + max_wait
    busy = busy_cores()
    announced = False
    while busy is not None and busy > threshold and time.monotonic() < deadline:
        if not announced:
            log(f"  machine busy ({busy:.2f} cores in use by others); waiting up to {max_wait:.0f}s")
            announced = True
        busy = busy_cores(2.0)
    return busy


# --------------------------------------------------------------------------- runs
IDLE = {"threshold": 0.3, "max_wait": 0.0}


class Job:
    """One whole-process command that is run repeatedly."""

    def __init__(self, name: str, argv: list[str], peer_json: bool, env: dict | None = None):
        self.name = name
        self.argv = argv
        self.peer_json = peer_json  # the command writes the peers.py JSON to a --json path
        self.env = env
        self.runs: list[dict] = []
        self.warmups: list[dict] = []
        self.discarded: list[dict] = []  # contaminated runs that were re-run
        self.failed: str | None = None

    def run_once(self, tag: str, timeout: float) -> dict:
        argv = list(self.argv)
        tmp = None
        if self.peer_json:
            RESULTS.mkdir(parents=True, exist_ok=True)
            tmp = RESULTS / f"{self.name.replace(' ', '_')}-{tag}-{os.getpid()}.json.tmp"
            argv += ["--json", str(tmp)]
        busy_before = wait_for_idle(IDLE["threshold"], IDLE["max_wait"])
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        j0 = _cpu_jiffies()
        t = time.perf_counter()
        try:
            proc = subprocess.run(
                argv, cwd=REPO, env=self.env, capture_output=True, text=True, timeout=timeout
            )
            wall = time.perf_counter() - t
            rc, out, err = proc.returncode, proc.stdout, proc.stderr
        except subprocess.TimeoutExpired:
            wall, rc, out, err = time.perf_counter() - t, None, "", f"timed out after {timeout}s"
        j1 = _cpu_jiffies()
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        # CPU seconds of the command and all descendants it waited for
        cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
        rec: dict = {"tag": tag, "wall_s": wall, "rc": rc, "cpu_s": cpu,
                     "busy_cores_before": busy_before}
        if j0 is not None and j1 is not None:
            # CPU seconds used on the machine during the run by anything else:
            # a direct measure of contamination by other processes.
            rec["foreign_cpu_s"] = max(0.0, (j1[0] - j0[0]) / _HZ - cpu)
            rec["steal_s"] = (j1[1] - j0[1]) / _HZ
        if rc != 0:
            rec["stderr_tail"] = (err or "")[-2000:]
            rec["stdout_tail"] = (out or "")[-1000:]
        if tmp is not None:
            if tmp.is_file():
                rec["inside"] = json.loads(tmp.read_text())
                tmp.unlink()
            elif rc == 0:
                rec["rc_note"] = "peer wrote no JSON"
        return rec


def _contaminated(rec: dict, limit: float | None) -> bool:
    f = rec.get("foreign_cpu_s")
    return limit is not None and rec["rc"] == 0 and f is not None and f > limit


def run_jobs(jobs: list[Job], repeats: int, warmup: int, timeout: float,
             max_foreign: float | None = None, max_retries: int = 5) -> None:
    """Warm-ups, then interleaved repeats.  With `max_foreign`, a run during which
    other processes used more than that many CPU seconds is set aside (kept in
    job.discarded) and run again, at most `max_retries` extra times per repeat."""
    for w in range(warmup):
        for job in jobs:
            if job.failed:
                continue
            log(f"warm-up {w + 1}/{warmup}: {job.name}")
            rec = job.run_once(f"warmup{w}", timeout)
            job.warmups.append(rec)
            if rec["rc"] != 0:
                job.failed = f"exit {rec['rc']}: {rec.get('stderr_tail', '')[-500:]}"
                log(f"  FAILED ({job.name}); it is left out: {job.failed}")
            else:
                log(f"  {rec['wall_s']:.2f}s foreign cpu {fmt(rec.get('foreign_cpu_s'))}s")
    for r in range(repeats):
        for job in jobs:
            if job.failed:
                continue
            for attempt in range(max_retries + 1):
                log(f"repeat {r + 1}/{repeats}: {job.name}" + (f" (retry {attempt})" if attempt else ""))
                rec = job.run_once(f"r{r}a{attempt}", timeout)
                if rec["rc"] != 0:
                    job.runs.append(rec)
                    job.failed = f"exit {rec['rc']}: {rec.get('stderr_tail', '')[-500:]}"
                    log(f"  FAILED ({job.name}): {job.failed}")
                    break
                extra = ""
                ins = rec.get("inside")
                if ins:
                    t = ins["timings"]
                    extra = (
                        f" (inside: import {t['import_s']:.2f} compile {fmt(t.get('compile_s'))}"
                        f" sample {t['sample_s']:.2f}; div={ins['divergences']}"
                        f" minESS={ins['min_ess_bulk']:.0f})"
                    )
                log(f"  {rec['wall_s']:.2f}s cpu {rec['cpu_s']:.2f}s"
                    f" foreign cpu {fmt(rec.get('foreign_cpu_s'))}s{extra}")
                if _contaminated(rec, max_foreign) and attempt < max_retries:
                    job.discarded.append(rec)
                    log(f"  contaminated (foreign cpu > {max_foreign}s): set aside, running again")
                    continue
                job.runs.append(rec)
                break


def peer_in_process_fit(ins: dict) -> float:
    """Fit cost in an already-imported process: build + compile + sample."""
    t = ins["timings"]
    return t["build_s"] + (t.get("compile_s") or 0.0) + t["sample_s"]


def summarize_peer(job: Job) -> dict:
    ok = [r for r in job.runs if r["rc"] == 0 and "inside" in r]
    ins = [r["inside"] for r in ok]
    s = {
        "tool": job.name,
        "n": len(ok),
        "whole_process_s": median([r["wall_s"] for r in ok]),
        "whole_process_cpu_s": median([r["cpu_s"] for r in ok]),
        "foreign_cpu_s": [round(r["foreign_cpu_s"], 2) for r in ok if r.get("foreign_cpu_s") is not None],
        "in_process_s": median([peer_in_process_fit(i) for i in ins]),
        "sampling_s": median([i["timings"]["sample_s"] for i in ins]),
        "import_s": median([i["timings"]["import_s"] for i in ins]),
        "compile_s": median([i["timings"].get("compile_s") for i in ins]),
        "inside_total_s": median([i["timings"]["total_s"] for i in ins]),
        "first_run_whole_process_s": job.warmups[0]["wall_s"] if job.warmups else None,
        "discarded_runs": len(job.discarded),
        "divergences": [i["divergences"] for i in ins],
        "min_ess_bulk": [round(i["min_ess_bulk"], 1) for i in ins],
        "max_rhat": [round(i["max_rhat"], 4) for i in ins],
        "mean_n_steps": ins[0].get("mean_n_steps") if ins else None,
        "posterior_mean": ins[0]["posterior_mean"] if ins else None,
    }
    if job.failed:
        s["failed"] = job.failed
    return s


# ---------------------------------------------------------------- poolwise in-process
def poolwise_in_process(model: str, seed: int, repeats: int, tune: int = TUNE,
                        draws: int = DRAWS) -> dict:
    """Import poolwise here and time poolwise.fit after one warm-up call (the data are
    read before the clock starts: the bundled example, or the cont20k CSV with pandas)."""
    res: dict = {"tool": "poolwise (in-process)"}
    t = time.perf_counter()
    try:
        import poolwise  # noqa: PLC0415
    except Exception as exc:  # ImportError, or a half-written package
        res["skipped"] = f"import poolwise failed: {type(exc).__name__}: {exc}"
        return res
    res["import_s"] = time.perf_counter() - t
    res["version"] = getattr(poolwise, "__version__", None)
    formula = FORMULAS[model]
    kw = dict(chains=CHAINS, tune=tune, draws=draws)
    try:
        if model == "cont20k":
            import pandas as pd  # noqa: PLC0415

            data = pd.read_csv(ensure_data(model))
        else:
            data = poolwise.load_example("bangladesh")
        log("poolwise in-process: warm-up fit")
        t = time.perf_counter()
        poolwise.fit(formula, data, seed=seed, **kw)
        res["warmup_s"] = time.perf_counter() - t
        runs = []
        for r in range(repeats):
            busy_before = wait_for_idle(IDLE["threshold"], IDLE["max_wait"])
            j0, c0 = _cpu_jiffies(), _own_cpu()
            t = time.perf_counter()
            fit = poolwise.fit(formula, data, seed=seed, **kw)
            wall = time.perf_counter() - t
            j1, c1 = _cpu_jiffies(), _own_cpu()
            foreign = None
            if j0 is not None and j1 is not None:
                foreign = max(0.0, (j1[0] - j0[0]) / _HZ - (c1 - c0))
            timings = dict(getattr(fit, "timings", {}) or {})
            runs.append(
                {
                    "wall_s": wall,
                    "cpu_s": c1 - c0,
                    "foreign_cpu_s": foreign,
                    "busy_cores_before": busy_before,
                    "sampling_s": timings.get("sampling_s"),
                    "total_s": timings.get("total_s"),
                    "timings": {k: v for k, v in timings.items() if isinstance(v, (int, float))},
                }
            )
            log(f"poolwise in-process repeat {r + 1}/{repeats}: {wall:.2f}s"
                f" cpu {c1 - c0:.2f}s foreign cpu {fmt(foreign)}s")
    except Exception as exc:
        res["skipped"] = (
            f"poolwise API call failed: {type(exc).__name__}: {exc}"
        )
        res["traceback"] = traceback.format_exc()[-3000:]
        return res
    res["runs"] = runs
    try:  # the last fit's scalar posterior means (original scale), to compare with the peers
        post = fit.posterior
        res["posterior_mean"] = {str(k): float(v.mean()) for k, v in post.data_vars.items()
                                 if set(v.dims) <= {"chain", "draw"}}
    except Exception as exc:  # noqa: BLE001  (a sanity column only)
        res["posterior_mean_error"] = f"{type(exc).__name__}: {exc}"
    res["in_process_s"] = median([r["wall_s"] for r in runs])
    res["sampling_s"] = median([r["sampling_s"] for r in runs])
    res["reported_total_s"] = median([r["total_s"] for r in runs])
    return res


# --------------------------------------------------------------------------- main
def _on_sigterm(signum, frame):  # noqa: ARG001
    raise KeyboardInterrupt


def _repo_relative(text: str) -> str:
    """``text`` with this checkout's absolute path taken out (results carry no machine paths:
    commands read as run from the repository root)."""
    return text.replace(str(REPO) + "/", "")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", choices=sorted(FORMULAS), default="intercepts")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1, help="untimed whole-process runs per tool first")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--skip-peers", action="store_true")
    ap.add_argument("--skip-poolwise", action="store_true")
    ap.add_argument("--tools", default=None,
                    help="comma-separated peer tools (default: pymc,pymc-nutpie,numpyro; "
                         "for cont20k pymc-nutpie,numpyro)")
    ap.add_argument("--tune", type=int, default=TUNE,
                    help="tuning draws per chain, every tool (smoke tests only: default 1000)")
    ap.add_argument("--draws", type=int, default=DRAWS,
                    help="draws per chain, every tool (smoke tests only: default 1000)")
    ap.add_argument(
        "--aggregate", action="store_true", help="also time the peers on binomial cells"
    )
    ap.add_argument("--peer-python", default=str(PEER_PY_DEFAULT))
    ap.add_argument(
        "--wait-idle", type=float, default=0.0, metavar="SECONDS",
        help="before each whole-process run wait up to SECONDS for the machine to be idle "
             "(< --idle-threshold cores busy); 0 = don't wait, just record the load")
    ap.add_argument("--idle-threshold", type=float, default=0.3, metavar="CORES")
    ap.add_argument(
        "--max-foreign-cpu", type=float, default=None, metavar="SECONDS",
        help="re-run a timed run if other processes used more CPU than this during it")
    ap.add_argument("--max-retries", type=int, default=5, help="per repeat, with --max-foreign-cpu")
    ap.add_argument("--timeout", type=float, default=900.0, help="per whole-process run, s")
    ap.add_argument("--out", default=None, help="JSON path (default bench/results/<date>-<model>.json)")
    args = ap.parse_args(argv)

    IDLE["threshold"], IDLE["max_wait"] = args.idle_threshold, args.wait_idle
    tune, draws = args.tune, args.draws
    tools = args.tools if args.tools is not None else ",".join(
        DEFAULT_TOOLS.get(args.model, PEER_TOOLS))
    # SIGTERM -> KeyboardInterrupt, so subprocess.run kills the running child too
    signal.signal(signal.SIGTERM, _on_sigterm)
    started = _dt.datetime.now(_dt.UTC)
    machine = machine_info()
    log(f"machine: {machine.get('cpu_model')} x{machine['cpu_count']}; model={args.model} "
        f"chains={CHAINS} tune={tune} draws={draws} seed={args.seed} repeats={args.repeats}")

    jobs: list[Job] = []
    notes: list[str] = []
    if (tune, draws) != (TUNE, DRAWS):
        notes.append(f"NOT the benchmark: tune={tune} draws={draws} (a smoke test); "
                     f"the benchmark is {TUNE} + {DRAWS}")
    data_file = ensure_data(args.model)
    # ---- peers
    if not args.skip_peers:
        peer_py = Path(args.peer_python)
        if not peer_py.exists():
            msg = (f"peer environment missing ({peer_py}); create it with: python3.12 -m venv "
                   f"bench/.venv-peers && bench/.venv-peers/bin/pip install -r "
                   f"bench/requirements-peers.txt  (or use --skip-peers)")
            log(msg)
            notes.append(msg)
        else:
            variants = [False, True] if args.aggregate else [False]
            if args.aggregate and args.model in NO_AGGREGATE:
                variants = [False]
                msg = f"--aggregate: {args.model} has no binomial-cell form; rows only"
                log(msg)
                notes.append(msg)
            for tool in [t.strip() for t in tools.split(",") if t.strip()]:
                for agg in variants:
                    cmd = [str(peer_py), str(BENCH / "peers.py"), "--tool", tool,
                           "--model", args.model, "--seed", str(args.seed),
                           "--chains", str(CHAINS), "--tune", str(tune), "--draws", str(draws)]
                    if data_file is not None:
                        cmd += ["--data", str(data_file)]
                    if agg:
                        cmd.append("--aggregate")
                    jobs.append(Job(tool + (" (aggregated)" if agg else ""), cmd, peer_json=True))
    # ---- poolwise whole process
    pw_job = None
    if not args.skip_poolwise:
        script = Path(sys.executable).parent / "poolwise"
        if args.model not in POOLWISE_CLI:
            msg = f"poolwise whole-process: no CLI command defined for model {args.model!r}; skipped"
            log(msg)
            notes.append(msg)
        elif not script.exists():
            msg = f"poolwise whole-process skipped: console script not found at {script} (is poolwise installed in this interpreter?)"
            log(msg)
            notes.append(msg)
        else:
            cmd = [str(script), *POOLWISE_CLI[args.model], "--chains", str(CHAINS),
                   "--tune", str(tune), "--draws", str(draws), "--seed", str(args.seed), "--quiet"]
            pw_job = Job("poolwise", cmd, peer_json=False)
            jobs.insert(0, pw_job)

    run_jobs(jobs, args.repeats, args.warmup, args.timeout, args.max_foreign_cpu, args.max_retries)

    # ---- poolwise in process (after the whole-process runs: it loads this process)
    pw_inproc = None
    if not args.skip_poolwise:
        pw_inproc = poolwise_in_process(args.model, args.seed, args.repeats, tune, draws)
        if "skipped" in pw_inproc:
            log(f"poolwise in-process SKIPPED: {pw_inproc['skipped']}")
            notes.append(f"poolwise in-process skipped: {pw_inproc['skipped']}")

    # ---- summaries
    peers = [summarize_peer(j) for j in jobs if j.peer_json]
    pw_whole = None
    if pw_job is not None:
        ok = [r for r in pw_job.runs if r["rc"] == 0]
        pw_whole = median([r["wall_s"] for r in ok])
        if ok:
            notes.append(
                f"poolwise whole process: CPU {fmt(median([r['cpu_s'] for r in ok]))}s (median), "
                f"foreign CPU per run {[round(r.get('foreign_cpu_s') or 0, 2) for r in ok]}s, "
                f"first run {fmt(pw_job.warmups[0]['wall_s'] if pw_job.warmups else None)}s")
        if pw_job.failed:
            notes.append(f"poolwise whole-process failed: {pw_job.failed}")
    pw_in = pw_inproc.get("in_process_s") if pw_inproc else None
    pw_samp = pw_inproc.get("sampling_s") if pw_inproc else None

    def ratio(a, b):
        return None if a is None or b is None or b == 0 else a / b

    rows = []
    rows.append({
        "tool": "poolwise",
        "whole_process_s": pw_whole,
        "in_process_s": pw_in,
        "sampling_s": pw_samp,
        "ratio_whole": None,
        "ratio_in_process": None,
    })
    for p in peers:
        rows.append({
            "tool": p["tool"],
            "whole_process_s": p["whole_process_s"],
            "in_process_s": p["in_process_s"],
            "sampling_s": p["sampling_s"],
            "ratio_whole": ratio(pw_whole, p["whole_process_s"]),
            "ratio_in_process": ratio(pw_in, p["in_process_s"]),
        })

    md = []
    md.append(f"### {args.model}: {CHAINS} chains x ({tune} tune + {draws} draws), seed {args.seed}, "
              f"median of {args.repeats}, {machine['cpu_count']} cores ({machine.get('cpu_model', '?')})")
    md.append("")
    md.append("| tool | whole process (s) | in-process fit (s) | sampling only (s) | poolwise / peer, whole | poolwise / peer, in-process |")
    md.append("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        pend = r["tool"] == "poolwise"
        md.append(
            f"| {r['tool']} | {fmt(r['whole_process_s']) if not (pend and r['whole_process_s'] is None) else 'pending'}"
            f" | {fmt(r['in_process_s']) if not (pend and r['in_process_s'] is None) else 'pending'}"
            f" | {fmt(r['sampling_s']) if not (pend and r['sampling_s'] is None) else 'pending'}"
            f" | {fmt(r['ratio_whole'])} | {fmt(r['ratio_in_process'])} |"
        )
    md.append("")
    md.append("Ratios < 1 mean poolwise is faster. Peer in-process fit = model build + compile + "
              "sampling inside the peer process (imports excluded); poolwise in-process = "
              "`poolwise.fit(...)` after one warm-up call.")
    if peers:
        md.append("")
        md.append("| peer | import (s) | compile (s) | first run, whole (s) | whole-process CPU (s) | foreign CPU per run (s) | divergences | min bulk ESS | max R-hat | leapfrog steps / draw | posterior means |")
        md.append("|---|---:|---:|---:|---:|---|---|---|---|---:|---|")
        for p in peers:
            pm_ = ", ".join(f"{k}={v:.3f}" for k, v in (p["posterior_mean"] or {}).items())
            md.append(
                f"| {p['tool']} | {fmt(p['import_s'])} | {fmt(p['compile_s']) if p['compile_s'] is not None else 'in sampling'}"
                f" | {fmt(p['first_run_whole_process_s'])} | {fmt(p['whole_process_cpu_s'])} | {p['foreign_cpu_s']} | {p['divergences']} | {p['min_ess_bulk']} | {p['max_rhat']} | {fmt(p['mean_n_steps'], 1)} | {pm_} |"
            )
    if pw_inproc and pw_inproc.get("posterior_mean"):
        md.append("")
        md.append("poolwise posterior means (in-process fit, original scale): " + ", ".join(
            f"{k}={v:.3f}" for k, v in pw_inproc["posterior_mean"].items()))
    md.append("")
    md.append("Foreign CPU = CPU seconds used on the machine by other processes while a run "
              "was going on (from /proc/stat); well above ~0.5 s means the timing is contaminated.")
    if notes:
        md.append("")
        md.extend(f"- note: {n}" for n in notes)
    text = "\n".join(md)
    print(text)

    out = Path(args.out) if args.out else RESULTS / f"{started.date().isoformat()}-{args.model}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "model": args.model,
        "formula": FORMULAS[args.model],
        "chains": CHAINS, "tune": tune, "draws": draws,
        "data": str(data_file.relative_to(REPO)) if data_file else "bangladesh (bundled)",
        "seed": args.seed, "repeats": args.repeats, "warmup": args.warmup,
        "started_utc": started.isoformat(),
        "finished_utc": _dt.datetime.now(_dt.UTC).isoformat(),
        "machine": machine,
        "harness_python": _repo_relative(sys.executable),
        "table": rows,
        "markdown": text,
        "peers": peers,
        "poolwise_whole_process": {
            "command": _repo_relative(shlex.join(pw_job.argv)) if pw_job else None,
            "median_s": pw_whole,
            "runs": pw_job.runs if pw_job else [],
            "warmups": pw_job.warmups if pw_job else [],
            "discarded": pw_job.discarded if pw_job else [],
        },
        "poolwise_in_process": pw_inproc,
        "raw": {j.name: {"command": _repo_relative(shlex.join(j.argv)), "warmups": j.warmups, "runs": j.runs, "discarded": j.discarded,
                         "failed": j.failed} for j in jobs if j.peer_json},
        "notes": notes,
    }
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    tmp.replace(out)
    log(f"wrote {out.relative_to(REPO) if out.is_relative_to(REPO) else out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
