"""Long work a user can follow (issue "trust at the edges", item 7): the fit's header before it
samples, titled phases, the sampler's progress with the time left, plain lines at a sane rate
where the output is a file, nothing with --quiet."""

from __future__ import annotations

import io
import sys
from types import SimpleNamespace

import pytest

import poolwise
from poolwise import progress
from poolwise.errors import interrupted_phases
from poolwise.progress import (
    LineReporter,
    LiveReporter,
    Reporter,
    SamplingProgress,
    phase,
    reporting,
    sampling_callback,
)


class Recorder(Reporter):
    """Keeps every event, in order."""

    def __init__(self) -> None:
        self.events: list[tuple] = []

    def started(self, path):
        self.events.append(("started", path))

    def ended(self, path, seconds, finished=True):
        self.events.append(("ended", path) if finished else ("stopped", path))

    def sampled(self, path, p):
        self.events.append(("sampled", path, p))

    def model(self, spec, config):
        self.events.append(("model", spec.formula.text, config.seed))


def _progress(done: int, total: int = 1000, *, seconds: float = 2.0, tuning: bool = False,
              divergences: int = 0) -> SamplingProgress:
    return SamplingProgress(done=done, total=total, chains=4, divergences=divergences,
                            tuning=tuning, seconds=seconds)


def test_the_time_left_follows_the_draws_so_far():
    assert _progress(0).seconds_left is None
    assert _progress(250, seconds=3.0).seconds_left == pytest.approx(9.0)
    assert _progress(1000).seconds_left == 0.0
    assert progress.sampling_text(_progress(250, seconds=3.0, tuning=True, divergences=1)) == (
        "25% of 1,000 draws (4 chains, warming up), 1 divergence, 3.0 s, about 9.0 s left")
    assert progress.duration(0.42) == "0.42 s"
    assert progress.duration(125) == "2 min 05 s"
    assert progress.duration(3720) == "1 h 02 min"


def test_phases_nest_and_still_name_an_interrupt():
    rec = Recorder()
    with reporting(rec):
        with phase("the pilot"), phase("sampling"):
            pass
        with pytest.raises(KeyboardInterrupt) as caught:
            with phase("repair attempt 2", shown="repair attempt 2 of at most 6"), \
                    phase("sampling"):
                raise KeyboardInterrupt
    assert rec.events == [
        ("started", ("the pilot",)), ("started", ("the pilot", "sampling")),
        ("ended", ("the pilot", "sampling")), ("ended", ("the pilot",)),
        ("started", ("repair attempt 2 of at most 6",)),
        ("started", ("repair attempt 2 of at most 6", "sampling")),
        ("stopped", ("repair attempt 2 of at most 6", "sampling")),
        ("stopped", ("repair attempt 2 of at most 6",)),
    ]
    # the interrupt's own names (the command line's one line) are the labels, not the titles
    assert interrupted_phases(caught.value) == ["sampling", "repair attempt 2"]


def test_without_a_reporter_nothing_is_reported():
    assert sampling_callback() is None
    with phase("sampling"):  # names interrupts only
        assert sampling_callback() is None


def test_the_callback_sums_nutpies_chains():
    rec = Recorder()
    chain = SimpleNamespace(finished_draws=30, total_draws=200, divergences=1, tuning=True)
    done = SimpleNamespace(finished_draws=200, total_draws=200, divergences=2, tuning=False)
    with reporting(rec), phase("sampling"):
        callback = sampling_callback()
    callback([chain, done])  # from nutpie's thread, after the block: the path was captured
    _, path, p = rec.events[-1]
    assert path == ("sampling",)
    assert (p.done, p.total, p.chains, p.divergences, p.tuning) == (230, 400, 2, 3, True)


def test_lines_come_at_a_sane_rate():
    """A phase is shown once it has run a second; sampling every 10% of the draws or every
    10 s, never twice a second; the end says how long the phase took."""
    out = io.StringIO()
    rep = LineReporter(out, clock=False)
    rep.started(("sampling",))
    start = rep._open[-1][1]
    rep._tick(start + 0.5)
    assert out.getvalue() == ""  # too short to mention yet
    rep._tick(start + 1.0)
    assert out.getvalue() == "sampling ...\n"
    rep.sampled(("sampling",), _progress(50, seconds=1.2))
    rep._tick(start + 1.5)
    assert out.getvalue().count("\n") == 1  # 5%: no 10% mark crossed, 10 s not passed
    rep.sampled(("sampling",), _progress(120, seconds=1.9))
    rep._tick(start + 2.0)
    assert out.getvalue().splitlines()[-1] == (
        "sampling: 12% of 1,000 draws (4 chains, warm-up done), 0 divergences, 1.9 s, "
        "about 14 s left")
    rep.sampled(("sampling",), _progress(130, seconds=5.0))
    rep._tick(start + 5.0)
    assert out.getvalue().count("\n") == 2  # the same 10% band
    rep._tick(start + 12.5)
    assert out.getvalue().count("\n") == 3  # 10 s since the last line
    rep.ended(("sampling",), 13.0)
    assert out.getvalue().splitlines()[-1] == "sampling: done in 13 s"
    assert "\r" not in out.getvalue()


def test_a_long_phase_without_a_sampler_says_it_is_still_running():
    out = io.StringIO()
    rep = LineReporter(out, clock=False)
    rep.started(("LOO",))
    start = rep._open[-1][1]
    rep._tick(start + 1.2)
    rep._tick(start + 11.5)
    assert out.getvalue().splitlines() == ["LOO ...", "LOO: still running, 12 s"]


def test_an_interrupted_phase_says_it_stopped_not_that_it_is_done():
    """Ctrl-C during a compiled kernel is raised when the kernel returns, inside the phase:
    its line says how long it ran before it stopped."""
    out = io.StringIO()
    rep = LineReporter(out, clock=False)
    rep.quiet = 0.0  # a line however short the phase
    with reporting(rep):
        with pytest.raises(KeyboardInterrupt), phase("the group effects"):
            raise KeyboardInterrupt
    assert out.getvalue().splitlines()[-1].startswith("the group effects: stopped after ")


def test_a_short_phase_leaves_no_line():
    out = io.StringIO()
    rep = LineReporter(out, clock=False)
    rep.started(("the diagnostics",))
    rep.ended(("the diagnostics",), 0.3)
    assert out.getvalue() == ""


def test_the_live_line_is_rewritten_in_place(monkeypatch):
    monkeypatch.setenv("COLUMNS", "120")
    out = io.StringIO()
    rep = LiveReporter(out, clock=False)
    rep.started(("repair attempt 2 of at most 6",))
    rep.started(("repair attempt 2 of at most 6", "sampling"))
    rep.sampled(("repair attempt 2 of at most 6", "sampling"), _progress(500, seconds=4.0))
    rep._tick(rep._open[-1][1] + 1.0)
    text = out.getvalue()
    assert text.startswith("\r\x1b[2K")
    assert text == ("\r\x1b[2Krepair attempt 2 of at most 6 > sampling [##########----------] "
                    "50%, 0 divergences, 4.0 s, about 4.0 s left")
    rep.ended(("repair attempt 2 of at most 6", "sampling"), 8.0)
    # the live line is cleared, the finished phase stays on its own line
    assert out.getvalue().endswith(
        "\r\x1b[2Krepair attempt 2 of at most 6 > sampling: done in 8.0 s\n")
    monkeypatch.setenv("COLUMNS", "40")  # a narrow terminal: the line is cut, never wrapped
    rep.sampled(("repair attempt 2 of at most 6",), _progress(500, seconds=4.0))
    rep._tick(rep._open[-1][1] + 1.0)
    last = out.getvalue().rsplit("\r\x1b[2K", 1)[1]
    assert len(last) == 39 and last.endswith("\u2026")


@pytest.fixture(scope="module")
def bangladesh():
    return poolwise.load_example("bangladesh")


def test_a_fit_announces_its_model_before_it_samples(bangladesh):
    rec = Recorder()
    with reporting(rec):
        poolwise.fit("use.contraception ~ 1 + (1 | district)", bangladesh, seed=3, chains=4,
                     tune=200, draws=200)
    kinds = [e[0] for e in rec.events]
    first_sampling = next(i for i, e in enumerate(rec.events)
                          if e[0] == "started" and e[1][-1] == "sampling")
    assert kinds.index("model") < first_sampling
    assert rec.events[kinds.index("model")][1:] == (
        "use.contraception ~ 1 + (1 | district)", 3)
    sampled = [e for e in rec.events if e[0] == "sampled" and e[1] == ("sampling",)]
    assert sampled, "the sampler reported no progress"
    assert all(e[2].total == 4 * 400 and e[2].chains == 4 for e in sampled)
    assert max(e[2].done for e in sampled) <= 1600


def test_the_command_line_prints_the_header_and_progress_lines(capsys, monkeypatch):
    from poolwise.cli import main

    monkeypatch.setattr(LineReporter, "quiet", 0.0)  # every phase, however short
    code = main(["fit", "--example", "bangladesh", "--seed", "1", "--chains", "2", "--tune",
                 "200", "--draws", "200"])
    assert code == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].startswith("model: use.contraception ~ 1 + (1 | district)")
    assert "seed: 1   chains: 2 x (200 tune + 200 draws)" in lines
    assert "parameterization of (district): auto (decided before sampling" in out
    err_lines = err.splitlines()
    assert "sampling: done in" in err and "the pilot: done in" in err
    assert "\r" not in err and "\x1b" not in err  # a file gets plain lines
    assert all(not line.startswith("model:") for line in err_lines)


def test_quiet_prints_no_header_and_no_progress(capsys, monkeypatch):
    from poolwise.cli import main

    monkeypatch.setattr(LineReporter, "quiet", 0.0)
    main(["fit", "--example", "bangladesh", "--seed", "1", "--chains", "2", "--tune", "200",
          "--draws", "200", "--quiet"])
    out, err = capsys.readouterr()
    assert out.startswith("status: ") and out.count("\n") == 1
    assert "done in" not in err


def test_no_progress_keeps_the_header(capsys, monkeypatch):
    from poolwise.cli import main

    monkeypatch.setattr(LineReporter, "quiet", 0.0)
    main(["fit", "--example", "bangladesh", "--seed", "1", "--chains", "2", "--tune", "200",
          "--draws", "200", "--no-progress"])
    out, err = capsys.readouterr()
    assert out.startswith("model: ")
    assert "done in" not in err


def test_a_terminal_gets_the_live_line(monkeypatch):
    from poolwise.cli import _reporter, build_parser

    args = build_parser().parse_args(["fit", "--example", "bangladesh"])
    tty = SimpleNamespace(isatty=lambda: True, write=sys.stderr.write, flush=lambda: None)
    monkeypatch.setattr(sys, "stderr", tty)
    assert isinstance(_reporter(args), LiveReporter)
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert type(_reporter(args)) is LineReporter
    quiet = build_parser().parse_args(["fit", "--example", "bangladesh", "--quiet"])
    assert _reporter(quiet) is None
