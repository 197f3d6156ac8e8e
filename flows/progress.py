"""Progress of long work, so that no stage is silent for long.

    with Progress("aligning photos", total=300, unit="photos") as bar:
        for photo in photos:
            ...
            bar.advance()

On a terminal it draws a rich progress bar. Anywhere else (a log file, CI, a Prefect worker,
`FACESURV_PROGRESS=lines`) it writes a line such as

    aligning photos: 120/300 photos (40%), 3.1 photos/s, about 58 s left

at most every `every_s` seconds, and once more at the end, through `out` (`say` by default:
standard error, which a terminal, a CI log and a Prefect worker's log all show; plain print
inside a flow would go to Prefect's run logs only, which `facesurv demo` keeps quiet).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any

EVERY_S = 10.0
_last_spoken = [time.monotonic()]   # when anything last reached the user (see heartbeat)


def _spoke() -> None:
    _last_spoken[0] = time.monotonic()


def say(line: str) -> None:
    """One progress line on standard error, flushed at once."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()
    _spoke()


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def use_bar(stream: Any = None) -> bool:
    """A bar only on an interactive terminal, and not when FACESURV_PROGRESS=lines asks for lines."""
    if os.environ.get("FACESURV_PROGRESS", "").lower() == "lines":
        return False
    stream = stream if stream is not None else sys.stderr
    return bool(getattr(stream, "isatty", lambda: False)())


class Progress:
    """Counts toward `total`; reports through a bar or throttled lines (see the module doc).

    out: where lines go (default say); clock: seconds, monotonic (tests pass a fake);
    bar: None decides by use_bar(); False forces lines.
    """

    def __init__(self, what: str, total: int, *, unit: str = "", every_s: float = EVERY_S,
                 out: Callable[[str], None] | None = None, clock: Callable[[], float] = time.monotonic,
                 bar: bool | None = None) -> None:
        self.what, self.total, self.unit = what, max(int(total), 0), unit
        self.every_s, self.out, self.clock = float(every_s), out or say, clock
        self.done = 0
        self.started = clock()
        self._last_line = self.started
        self._closed = False
        self._bar: Any = None
        if (use_bar() if bar is None else bar) and self.total > 0:
            from rich.progress import BarColumn, MofNCompleteColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress("[bold]{task.description}", BarColumn(), MofNCompleteColumn(),
                                     TimeRemainingColumn(), transient=False)
            self._task = self._bar.add_task(what, total=self.total)
            self._bar.start()

    def line(self) -> str:
        """The current state as one line: counts, share, rate and the time left."""
        elapsed = max(self.clock() - self.started, 1e-9)
        unit = f" {self.unit}" if self.unit else ""
        share = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        rate = self.done / elapsed
        text = f"{self.what}: {self.done}/{self.total}{unit}{share}"
        if self.done and self.done < self.total:
            text += f", {rate:.3g}{unit}/s, about {_duration((self.total - self.done) / rate)} left"
        elif self.done >= self.total:
            text += f" in {_duration(elapsed)}"
        return text

    def update(self, done: int) -> None:
        """Set the count (never backwards) and report when `every_s` has passed since the last line."""
        self.done = min(max(int(done), self.done), self.total) if self.total else max(int(done), self.done)
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done)
            _spoke()
            return
        now = self.clock()
        if now - self._last_line >= self.every_s:
            self._last_line = now
            self.out(self.line())

    def advance(self, n: int = 1) -> None:
        self.update(self.done + n)

    def close(self) -> None:
        """The last line (or stop the bar); idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.stop()
        elif self.total:
            self.out(self.line())

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


@contextlib.contextmanager
def heartbeat(what: str, *, every_s: float = EVERY_S, out: Callable[[str], None] | None = None,
              clock: Callable[[], float] = time.monotonic, final: bool = True) -> Iterator[None]:
    """Lines for one long call that cannot count its own work (Feast's materialize, a model fit).

    A daemon thread writes "<what>: still running, 40 s so far" while the body runs whenever
    nothing else has been said for `every_s` seconds (so a stage that reports its own progress
    is not drowned), and "<what>: done in 52 s" (or "failed after") when it ends: a user
    watching a log knows the stage is alive even when the library says nothing. final=False
    leaves the last line to a caller that reports the end itself.
    """
    out = out or say
    started = clock()
    stop = threading.Event()

    def tick() -> None:
        while not stop.wait(every_s):
            if time.monotonic() - _last_spoken[0] >= every_s:
                out(f"{what}: still running, {_duration(clock() - started)} so far")
                _spoke()

    thread = threading.Thread(target=tick, name=f"heartbeat:{what}", daemon=True)
    thread.start()
    ok = False
    try:
        yield
        ok = True
    finally:
        stop.set()
        thread.join()
        if final:
            out(f"{what}: {'done in' if ok else 'failed after'} {_duration(clock() - started)}")
