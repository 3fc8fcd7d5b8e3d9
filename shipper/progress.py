"""Progress of a one-shot job (backfill): a bar redrawn with ``\\r`` on a terminal, a plain
line every few seconds otherwise (a log file, a pipe, CI). The formatting is pure."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO


@dataclass(frozen=True)
class Snapshot:
    bytes_done: int
    bytes_total: int
    sessions: int
    documents: int
    elapsed: float  # seconds


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def format_duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _rate_and_eta(s: Snapshot) -> tuple[float, float | None]:
    rate = s.bytes_done / s.elapsed if s.elapsed > 0 else 0.0
    if rate <= 0 or s.bytes_total <= 0:
        return rate, None
    return rate, max(0.0, (s.bytes_total - s.bytes_done) / rate)


def format_bar(s: Snapshot, width: int = 80) -> str:
    """One terminal line, at most ``width`` characters:
    `` 42% [######·········] 12.3/29.1 MiB 1,234 sessions 3.4 MiB/s ETA 0:05``"""
    fraction = min(1.0, s.bytes_done / s.bytes_total) if s.bytes_total > 0 else 0.0
    rate, eta = _rate_and_eta(s)
    tail = (
        f" {format_bytes(s.bytes_done)}/{format_bytes(s.bytes_total)}"
        f" {s.sessions:,} sessions {s.documents:,} docs {format_bytes(rate)}/s"
        f" ETA {format_duration(eta) if eta is not None else '?'}"
    )
    head = f"{fraction * 100:3.0f}% "
    bar_width = width - len(head) - len(tail) - 2
    if bar_width < 5:  # narrow terminal: drop the bar, keep the numbers
        return (head + tail.lstrip())[:width]
    filled = int(bar_width * fraction)
    return f"{head}[{'#' * filled}{'.' * (bar_width - filled)}]{tail}"


def format_line(s: Snapshot) -> str:
    """A plain progress line for logs (no terminal control characters)."""
    fraction = s.bytes_done / s.bytes_total * 100 if s.bytes_total > 0 else 0.0
    rate, eta = _rate_and_eta(s)
    return (
        f"progress: {fraction:.0f}% of {format_bytes(s.bytes_total)}, {s.sessions:,} sessions, "
        f"{s.documents:,} documents, {format_bytes(rate)}/s, elapsed {format_duration(s.elapsed)}, "
        f"ETA {format_duration(eta) if eta is not None else '?'}"
    )


class Progress:
    """Call ``update`` as often as you like; it draws at most ``redraw`` times a second on a
    terminal, or a line every ``interval`` seconds otherwise. ``finish`` ends the bar's line."""

    def __init__(
        self,
        bytes_total: int,
        *,
        stream: TextIO | None = None,
        tty: bool | None = None,
        interval: float = 10.0,
        redraw: float = 0.2,
        width: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.bytes_total = bytes_total
        self._clock = clock
        self._start = clock()
        self._period = redraw if self.tty else interval
        self._last = self._start
        self._width = width
        self._drawn = False
        self.snapshot = Snapshot(0, bytes_total, 0, 0, 0.0)

    def update(self, bytes_done: int, sessions: int, documents: int, *, force: bool = False) -> None:
        now = self._clock()
        self.snapshot = Snapshot(bytes_done, self.bytes_total, sessions, documents, now - self._start)
        if not force and now - self._last < self._period:
            return
        self._last = now
        if self.tty:
            width = self._width or _terminal_width(self.stream)
            # padded: a shorter line must not leave the end of the previous one on screen
            self.stream.write("\r" + format_bar(self.snapshot, width - 1).ljust(width - 1))
            self._drawn = True
        else:
            self.stream.write(format_line(self.snapshot) + "\n")
        self.stream.flush()

    def finish(self) -> None:
        if self.tty and self._drawn:
            width = self._width or _terminal_width(self.stream)
            self.stream.write("\r" + format_bar(self.snapshot, width - 1).ljust(width - 1) + "\n")
            self.stream.flush()


def _terminal_width(stream: TextIO) -> int:
    import shutil

    return shutil.get_terminal_size((80, 24)).columns
