"""flows.progress: throttled lines with counts, rate and time left; a bar only on a terminal."""

from __future__ import annotations

import io
import threading

import pytest

from flows.progress import Progress, heartbeat, use_bar


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_lines_come_at_most_every_interval_with_counts_rate_and_eta():
    clock, lines = Clock(), []
    with Progress("aligning photos", 300, unit="photos", every_s=10, out=lines.append, clock=clock, bar=False) as p:
        for _ in range(30):          # 30 photos in 7.5 s: no line yet
            clock.t += 0.25
            p.advance()
        assert lines == []
        clock.t += 2.5               # 10 s since the start: one line
        p.advance()
        assert lines == ["aligning photos: 31/300 photos (10%), 3.1 photos/s, about 87 s left"]
        clock.t += 5.0
        p.advance(10)                # 5 s later: still throttled
        assert len(lines) == 1
    assert len(lines) == 2 and lines[-1].startswith("aligning photos: 41/300 photos (14%)")


def test_the_last_line_says_done_and_how_long_it_took():
    clock, lines = Clock(), []
    p = Progress("projecting", 4, unit="photos", out=lines.append, clock=clock, bar=False)
    clock.t += 120
    p.update(4)
    p.close()
    p.close()                        # idempotent
    # the throttled update already said it once; close says it again, once
    assert lines == ["projecting: 4/4 photos (100%) in 2 min"] * 2


def test_counts_never_go_backwards_or_past_the_total():
    p = Progress("x", 10, out=lambda _: None, bar=False)
    p.update(7)
    p.update(3)
    assert p.done == 7
    p.advance(20)
    assert p.done == 10


def test_nothing_to_do_writes_nothing():
    lines: list[str] = []
    with Progress("materialising", 0, out=lines.append, bar=False):
        pass
    assert lines == []


@pytest.mark.parametrize(("env", "tty", "want"), [("", True, True), ("", False, False), ("lines", True, False)])
def test_a_bar_only_on_a_terminal_unless_lines_are_asked_for(monkeypatch, env, tty, want):
    monkeypatch.setenv("FACESURV_PROGRESS", env)
    stream = io.StringIO()
    stream.isatty = lambda: tty      # type: ignore[method-assign]
    assert use_bar(stream) is want


def test_a_heartbeat_speaks_while_a_silent_call_runs_and_says_how_it_ended():
    lines: list[str] = []
    seen_two = threading.Event()

    def out(line: str) -> None:
        lines.append(line)
        if len(lines) >= 2:
            seen_two.set()

    with heartbeat("materialising", every_s=0.001, out=out):
        assert seen_two.wait(10), "no heartbeat line while the body ran"
    assert all(line.startswith("materialising: still running, ") for line in lines[:-1])
    assert lines[-1].startswith("materialising: done in ")


def test_a_heartbeat_says_failed_when_the_call_raises_and_lets_the_error_through():
    lines: list[str] = []
    with pytest.raises(KeyError, match="boom"), heartbeat("fitting", every_s=60, out=lines.append):
        raise KeyError("boom")
    assert lines == ["fitting: failed after 0 s"]


def test_a_heartbeat_keeps_quiet_while_the_stage_reports_its_own_progress(monkeypatch):
    import time

    import flows.progress as progress

    # as if a progress line had just been said, and went on being said: the heartbeat must not add to it
    monkeypatch.setattr(progress, "_last_spoken", [time.monotonic() + 3600])
    lines: list[str] = []
    ticks = threading.Event()
    with heartbeat("projecting", every_s=0.001, out=lines.append):
        ticks.wait(0.05)
    assert len(lines) == 1 and lines[0].startswith("projecting: done in ")
