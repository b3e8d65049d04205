"""What a long run is doing, as it does it: named phases and the sampler's progress.

The run marks its stretches with :func:`phase` ("reading and checking the data", "the pilot",
"sampling", "repair attempt 2", "LOO", "the report", ...). A phase does two things: it names
the phase on an interrupt passing through it (:func:`poolwise.errors.phase`, for the command
line's one line about it), and it tells the active :class:`Reporter`, if any, that the phase
started and ended. The sampler reports its draws through :func:`sampling_callback` (nutpie
calls it from its own thread a few times a second), and a fit announces its model before it
samples (:func:`announce`).

Nothing is shown unless a reporter is active (:func:`reporting`): the Python API is silent by
default (``progress=True`` shows nutpie's own bar). The command line installs one on standard
error: :class:`LiveReporter` in a terminal (one line, rewritten, with a bar and the time left)
or :class:`LineReporter` elsewhere (plain lines, flushed, at most every 10% or 10 s of a
sampling run: what a batch job's log can hold). ``--quiet`` and ``--no-progress`` install none.
"""

from __future__ import annotations

import contextlib
import contextvars
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from poolwise import errors

__all__ = [
    "HeaderReporter",
    "LineReporter",
    "LiveReporter",
    "Reporter",
    "SamplingProgress",
    "announce",
    "phase",
    "reporting",
    "sampling_callback",
]


@dataclass(frozen=True)
class SamplingProgress:
    """The sampler's progress over all chains: draws done of the total (warm-up included),
    divergences so far, whether a chain is still warming up, and the seconds since sampling
    started."""

    done: int
    total: int
    chains: int
    divergences: int
    tuning: bool
    seconds: float

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 0.0

    @property
    def seconds_left(self) -> float | None:
        """The time left if the remaining draws go as fast as the finished ones (None before
        the first draw)."""
        if self.done <= 0 or self.done >= self.total:
            return None if self.done <= 0 else 0.0
        return self.seconds * (self.total - self.done) / self.done


class Reporter:
    """Receives the run's events; this base class shows nothing. Methods may be called from
    the sampler's thread (:meth:`sampled`): subclasses lock around their output."""

    def started(self, path: tuple[str, ...]) -> None:
        """A phase began; ``path``: its name after those of the phases around it."""

    def ended(self, path: tuple[str, ...], seconds: float, finished: bool = True) -> None:
        """A phase ended; ``finished`` False: an interrupt or an error stopped it."""

    def sampled(self, path: tuple[str, ...], progress: SamplingProgress) -> None:
        """The sampler's progress inside the phase ``path``."""

    def model(self, spec: Any, config: Any) -> None:
        """A fit's model is built and checked, and sampling is next (``spec``: the
        ModelSpec, ``config``: the SamplerConfig)."""

    def close(self) -> None:
        """The run is over: stop showing anything (:func:`reporting` calls it)."""


@dataclass
class _State:
    reporter: Reporter
    path: list[str] = field(default_factory=list)


_ACTIVE: contextvars.ContextVar[_State | None] = contextvars.ContextVar(
    "poolwise_reporter", default=None)


@contextlib.contextmanager
def reporting(reporter: Reporter | None) -> Iterator[None]:
    """Send the events of the run inside the block to ``reporter`` (None: to nobody)."""
    token = _ACTIVE.set(_State(reporter) if reporter is not None else None)
    try:
        yield
    finally:
        _ACTIVE.reset(token)
        if reporter is not None:
            reporter.close()


@contextlib.contextmanager
def phase(name: str, *, shown: str | None = None) -> Iterator[None]:
    """A named stretch of the run: the name goes on an interrupt passing through
    (:func:`poolwise.errors.phase`) and, as ``shown`` when given, to the active reporter."""
    state = _ACTIVE.get()
    if state is None:
        with errors.phase(name):
            yield
        return
    state.path.append(shown or name)
    path = tuple(state.path)
    start = time.perf_counter()
    state.reporter.started(path)
    finished = False
    try:
        with errors.phase(name):
            yield
        finished = True
    finally:
        state.path.pop()
        state.reporter.ended(path, time.perf_counter() - start, finished)


def announce(spec: Any, config: Any) -> None:
    """Tell the active reporter that a fit's model is ready to sample."""
    state = _ACTIVE.get()
    if state is not None:
        state.reporter.model(spec, config)


def sampling_callback() -> Callable[[Sequence[Any]], None] | None:
    """nutpie's ``progress_callback`` for the active reporter (None when there is none): it
    receives nutpie's per-chain progress (``finished_draws``, ``total_draws``,
    ``divergences``, ``tuning``) and passes the sum over chains on."""
    state = _ACTIVE.get()
    if state is None:
        return None
    reporter, path, start = state.reporter, tuple(state.path), time.perf_counter()

    def callback(chains: Sequence[Any]) -> None:
        reporter.sampled(path, SamplingProgress(
            done=sum(int(c.finished_draws) for c in chains),
            total=sum(int(c.total_draws) for c in chains),
            chains=len(chains),
            divergences=sum(int(c.divergences) for c in chains),
            tuning=any(bool(c.tuning) for c in chains),
            seconds=time.perf_counter() - start,
        ))

    return callback


# ---- the command line's reporters --------------------------------------------------------


def duration(seconds: float) -> str:
    """``0.42 s``, ``12 s``, ``2 min 05 s``, ``1 h 02 min``."""
    if seconds < 10:
        return f"{seconds:.1f} s" if seconds >= 0.95 else f"{seconds:.2f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"


def title(path: tuple[str, ...]) -> str:
    """A phase's name after those around it: ``repair attempt 2 > sampling``."""
    return " > ".join(path)


def sampling_text(p: SamplingProgress) -> str:
    """``40% of 12,000 draws (4 chains, warming up), 0 divergences, 4.1 s, about 6.2 s
    left``."""
    stage = "warming up" if p.tuning else "warm-up done"
    left = p.seconds_left
    eta = f", about {duration(left)} left" if left is not None and p.done < p.total else ""
    return (f"{100 * p.fraction:.0f}% of {p.total:,} draws ({p.chains} "
            f"chain{'s' if p.chains != 1 else ''}, {stage}), {p.divergences:,} divergence"
            f"{'s' if p.divergences != 1 else ''}, {duration(p.seconds)}{eta}")


def live_text(p: SamplingProgress) -> str:
    """The live line's part for the sampler: ``[##########----------] 50% (warming up),
    0 divergences, 4.0 s, about 4.0 s left``."""
    filled = int(round(20 * p.fraction))
    left = p.seconds_left
    eta = f", about {duration(left)} left" if left is not None and p.done < p.total else ""
    return (f"[{'#' * filled}{'-' * (20 - filled)}] {100 * p.fraction:.0f}%"
            f"{' (warming up)' if p.tuning else ''}, {p.divergences:,} divergence"
            f"{'s' if p.divergences != 1 else ''}, {duration(p.seconds)}{eta}")


class HeaderReporter(Reporter):
    """Shows no progress; prints a fit's header once (``header(spec, config)``: its lines) to
    ``header_stream`` when the model is ready. The base of the printing reporters, whose
    lines go to ``stream``."""

    def __init__(self, stream: TextIO, *, header: Callable[[Any, Any], list[str]] | None = None,
                 header_stream: TextIO | None = None):
        self.stream = stream
        self.header = header
        self.header_stream = header_stream or stream
        self.lock = threading.Lock()
        self._announced = False

    def _line(self, text: str) -> None:
        with self.lock:
            self._clear()
            print(text, file=self.stream, flush=True)

    def _clear(self) -> None:
        """Remove a live line, if there is one (with the lock held)."""

    def model(self, spec: Any, config: Any) -> None:
        if self.header is None or self._announced:
            return
        self._announced = True
        lines = self.header(spec, config)
        with self.lock:
            self._clear()
            self.stream.flush()
            for line in lines:
                print(line, file=self.header_stream)
            self.header_stream.flush()


class _Phases(HeaderReporter):
    """The phases under way, innermost last, and a clock thread that calls :meth:`_tick`
    twice a second from the first phase on (ended by :meth:`close`; ``clock=False``: none,
    the caller ticks). A phase shorter than ``quiet`` seconds leaves no line."""

    quiet = 1.0

    def __init__(self, stream: TextIO, *, clock: bool = True, **kw: Any):
        super().__init__(stream, **kw)
        self._ticking = clock
        self._open: list[list[Any]] = []  # [path, start, shown]
        self._sampling: dict[tuple[str, ...], SamplingProgress] = {}
        self._stop = threading.Event()
        self._clock: threading.Thread | None = None

    def started(self, path: tuple[str, ...]) -> None:
        with self.lock:
            self._open.append([path, time.monotonic(), False])
            if self._clock is None and self._ticking:
                self._clock = threading.Thread(target=self._run, name="poolwise-progress",
                                               daemon=True)
                self._clock.start()

    def ended(self, path: tuple[str, ...], seconds: float, finished: bool = True) -> None:
        with self.lock:
            shown = any(o[0] == path and o[2] for o in self._open)
            self._open = [o for o in self._open if o[0] != path]
            self._sampling.pop(path, None)
        if shown or seconds >= self.quiet:
            how = "done in" if finished else "stopped after"
            self._line(f"{title(path)}: {how} {duration(seconds)}")

    def sampled(self, path: tuple[str, ...], progress: SamplingProgress) -> None:
        with self.lock:
            self._sampling[path] = progress

    def close(self) -> None:
        self._stop.set()
        if self._clock is not None:
            self._clock.join(timeout=2.0)
        with self.lock:
            self._clear()
            self.stream.flush()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            with contextlib.suppress(Exception):  # a closed stream never stops the run
                self._tick(time.monotonic())

    def _tick(self, now: float) -> None:
        raise NotImplementedError


class LineReporter(_Phases):
    """Plain lines for a log file or a pipe: a phase when it has run for ``quiet`` seconds
    (and how long it took when it ends), the sampler's progress every ``step`` of the draws or
    every ``every`` seconds, whichever comes first, and for a long phase without a sampler a
    line every ``every`` seconds."""

    def __init__(self, stream: TextIO, *, step: float = 0.1, every: float = 10.0, **kw: Any):
        super().__init__(stream, **kw)
        self.step = step
        self.every = every
        self._said: dict[tuple[str, ...], tuple[float, float]] = {}  # fraction, time

    def _tick(self, now: float) -> None:
        with self.lock:
            if not self._open:
                return
            entry = self._open[-1]
            path, start, shown = entry
            progress = self._sampling.get(path)
            fraction, said = self._said.get(path, (0.0, start))
        if not shown:
            if now - start < self.quiet:
                return
            entry[2] = True
            self._said[path] = (fraction, now)
            self._line(f"{title(path)} ...")
            return
        if progress is not None and progress.done < progress.total:
            crossed = int(progress.fraction / self.step) > int(fraction / self.step)
            if crossed or now - said >= self.every:
                self._said[path] = (progress.fraction, now)
                self._line(f"{title(path)}: {sampling_text(progress)}")
        elif now - said >= self.every:
            self._said[path] = (fraction, now)
            self._line(f"{title(path)}: still running, {duration(now - start)}")


class LiveReporter(_Phases):
    """For a terminal: one live line, rewritten in place (the phase and its time, and while
    sampling a bar, the draws and the time left), and a line that stays when a phase of more
    than ``quiet`` seconds ends."""

    def __init__(self, stream: TextIO, **kw: Any):
        super().__init__(stream, **kw)
        self._live = False

    def _clear(self) -> None:
        if self._live:
            self.stream.write("\r\x1b[2K")
            self._live = False

    def _tick(self, now: float) -> None:
        with self.lock:
            if not self._open:
                return
            path, start, _ = self._open[-1]
            progress = self._sampling.get(path)
            if progress is not None:
                text = f"{title(path)} {live_text(progress)}"
            else:
                text = f"{title(path)} ... {duration(now - start)}"
            width = shutil.get_terminal_size((100, 24)).columns - 1
            if len(text) > width:
                text = text[: max(1, width - 1)] + "\u2026"
            self.stream.write("\r\x1b[2K" + text)
            self.stream.flush()
            self._live = True
