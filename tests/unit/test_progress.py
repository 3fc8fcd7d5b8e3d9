"""The backfill progress formatter and its terminal / non-terminal output."""

from __future__ import annotations

import io

from shipper.progress import (
    Progress,
    Snapshot,
    format_bar,
    format_bytes,
    format_duration,
    format_line,
)


def test_bar_shows_fraction_sizes_rate_and_eta():
    s = Snapshot(bytes_done=50 * 1024 * 1024, bytes_total=100 * 1024 * 1024, sessions=1234, documents=2345, elapsed=10.0)
    line = format_bar(s, width=100)
    assert line.startswith(" 50% [")
    assert "50.0 MiB/100.0 MiB" in line
    assert "1,234 sessions" in line and "2,345 docs" in line
    assert "5.0 MiB/s" in line and "ETA 0:10" in line
    assert 100 == len(line)
    bar = line[line.index("[") + 1 : line.index("]")]
    assert bar.count("#") == len(bar) // 2


def test_bar_fits_narrow_terminal_and_unknown_eta():
    s = Snapshot(0, 0, 0, 0, 0.0)
    line = format_bar(s, width=30)
    assert len(line) <= 30
    assert "ETA ?" in format_bar(s, width=200)


def test_plain_line_has_no_control_characters():
    line = format_line(Snapshot(1024, 4096, 3, 4, 65.0))
    assert "\r" not in line and "\x1b" not in line
    assert "25% of 4.0 KiB" in line and "elapsed 1:05" in line


def test_units():
    assert "512 B" == format_bytes(512)
    assert "1.5 GiB" == format_bytes(1.5 * 1024**3)
    assert "1:01:01" == format_duration(3661)


def test_tty_redraws_in_place_and_throttles():
    out = io.StringIO()
    now = [0.0]
    p = Progress(1000, stream=out, tty=True, redraw=0.2, width=80, clock=lambda: now[0])
    now[0] = 0.1
    p.update(100, 1, 1)  # within the redraw period: nothing drawn
    assert "" == out.getvalue()
    now[0] = 0.3
    p.update(300, 2, 2)
    p.finish()
    text = out.getvalue()
    assert text.startswith("\r") and text.count("\r") == 2 and text.endswith("\n")
    assert " 30% [" in text


def test_non_tty_prints_periodic_lines():
    out = io.StringIO()
    now = [0.0]
    p = Progress(1000, stream=out, tty=False, interval=10, clock=lambda: now[0])
    for t in range(1, 31):
        now[0] = float(t)
        p.update(t * 10, t, t)
    p.finish()
    lines = out.getvalue().splitlines()
    assert 3 == len(lines) and all(line.startswith("progress: ") for line in lines)
