"""The block reader (``iter_blocks`` → format ``scan`` → ``SessionAssembler.feed_scanned``) is a
faster way to the very same result as reading line by line: same lines, offsets and notes; same
documents, defects and counts — whatever the bytes, the line endings and the block boundaries."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shipper import formats, inputs
from shipper.inputs import ParseOptions, ParseStats, iter_blocks, iter_documents, iter_lines
from shipper.model import Direction

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
VALID_LINES = b"".join((GOLDEN / name).read_bytes() for name in (
    "interleaved-sessions.log", "pipelining-outlook.log", "auth-login-and-plain-redacted.log",
    "bdat-chunking.log", "rcpt-451-greylisted-postfix.log")).splitlines(keepends=True)
_get_format = formats.get  # the real one (the tests below patch formats.get)
SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def lines_of_blocks(data: bytes, max_line: int, size: int) -> list[tuple[int, bytes, str | None]]:
    """What ``iter_lines`` yields, rebuilt from ``iter_blocks`` the way ``_parse_file`` reads
    blocks: blank lines skipped, lines longer than ``max_line`` cut."""
    out: list[tuple[int, bytes, str | None]] = []
    for start, block, note in iter_blocks(io.BytesIO(data), max_line, size):
        if note is not None:
            out.append((start, block, note))
            continue
        assert block.endswith(b"\n")
        offset = start
        for content in block.split(b"\n")[:-1]:
            if len(content) > max_line:
                out.append((offset, content[:max_line], f"line longer than {max_line} bytes (cut)"))
            elif content.strip():
                out.append((offset, content, None))
            offset += len(content) + 1
    return out


_line = st.one_of(
    st.sampled_from(VALID_LINES),
    st.binary(max_size=60).map(lambda b: b.replace(b"\n", b"") + b"\n"),
    st.sampled_from([b"\n", b"  \n", b"\t\r\n", b"x" * 70 + b"\n", b"y" * 200 + b"\n"]),
)


@SETTINGS
@given(st.lists(_line, max_size=30), st.booleans(), st.integers(1, 300), st.integers(8, 120))
def test_blocks_cover_the_stream_exactly_as_lines_do(lines: list[bytes], cut_last: bool, size: int,
                                                      max_line: int) -> None:
    data = b"".join(lines)
    if cut_last and data:
        data = data[:-1]  # a last line without newline
    assert list(iter_lines(io.BytesIO(data), max_line)) == lines_of_blocks(data, max_line, size)


class _LineByLine:
    """The Xeams format without its block scanner: ``_parse_file`` then reads line by line."""

    def __init__(self) -> None:
        self._fmt = _get_format("xeams")
        self.name, self.dataset = self._fmt.name, self._fmt.dataset
        self.parse_line = self._fmt.parse_line
        self.direction_from_name = self._fmt.direction_from_name


def parse_both(tmp_path: Path, data: bytes, monkeypatch: pytest.MonkeyPatch, block: int,
               max_line: int = inputs.MAX_LINE) -> tuple[Any, Any]:
    path = tmp_path / "SMTPOutboundConversation.log"
    path.write_bytes(data)
    results = []
    for line_by_line in (False, True):
        with monkeypatch.context() as m:
            m.setattr(inputs, "BLOCK", block)
            if line_by_line:
                m.setattr(inputs.formats, "get", lambda name: _LineByLine())
            stats = ParseStats()
            options = ParseOptions(tz=ZoneInfo("Europe/Berlin"), host_name="h", max_line=max_line)
            docs = list(iter_documents([str(path)], options, stats))
            results.append((docs, stats.lines, stats.sessions, stats.defects,
                            [(d.offset, d.reason, d.excerpt, d.session_id) for d in stats.kept_defects]))
    return results[0], results[1]


_junk = st.one_of(
    st.binary(min_size=1, max_size=120).map(lambda b: b.replace(b"\n", b" ") + b"\n"),
    st.sampled_from([
        b"\n", b"   \r\n",
        "2024-03-21 11:39:49,170 - [   7054286] C --> 250 caf\u00e9 \u00fcber\n".encode(),
        b"2024-02-30 11:39:49,170 - [   7054286] C --> 250 impossible date\n",
        b"2024-03-21 11:39:49,170 - [ 7054286 ] S <-- NOOP\n",
        b"2024-03-21 11:39:49,170 - [   7054286] S <-- RCPT TO:<x@y>\r\r\n",
        b"2024-03-21 11:39:49,170 - [   7054286] C --> 250 " + b"z" * 300 + b"\n",
        b"2024-03-21 11:39:49,170 - [   7054286] \xff\xfe broken\n",
    ]),
)


@SETTINGS
@given(st.lists(st.tuples(st.integers(0, len(VALID_LINES)), _junk), max_size=12),
       st.booleans(), st.integers(16, 4096), st.sampled_from([100, 64 * 1024]))
def test_block_reading_gives_what_line_by_line_gives(tmp_path_factory: pytest.TempPathFactory,
                                                     insertions: list[tuple[int, bytes]], crlf: bool,
                                                     block: int, max_line: int) -> None:
    """Valid sessions with junk, CRLF endings, non-ASCII and over-long lines, small blocks:
    the same documents (offsets included), line, session and defect counts and defects."""
    lines = list(VALID_LINES)
    for position, junk in sorted(insertions, reverse=True):
        lines.insert(position, junk)
    data = b"".join(lines)
    if crlf:
        data = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    with pytest.MonkeyPatch.context() as monkeypatch:
        fast, slow = parse_both(tmp_path_factory.mktemp("blocks"), data, monkeypatch, block, max_line)
    assert slow == fast


def test_a_crlf_log_gives_the_offsets_of_its_own_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = b"".join(VALID_LINES).replace(b"\n", b"\r\n")
    (docs, *_), _ = parse_both(tmp_path, data, monkeypatch, inputs.BLOCK)
    assert docs
    for doc in docs:  # every session starts at the first byte of one of its lines
        offset = doc["log"]["offset"]
        assert offset == 0 or data[offset - 2:offset] == b"\r\n"
        assert not doc["smtp"]["transcript"].count("\r")


def test_scan_splits_like_parse_line() -> None:
    """The block scanner's fields are those ``parse_line`` gives the same line."""
    fmt = formats.get("xeams")
    text = b"".join(VALID_LINES).decode()
    for line, ts, second, sid, tag, payload, other in fmt.scan(text, crlf=False):  # type: ignore[attr-defined]
        assert not other
        ev = fmt.parse_line(line.encode(), 0, "p")
        assert (ev.timestamp, ev.session_id, ev.payload, ev.text) == (ts, sid, payload, line)  # type: ignore[union-attr]
        assert second == ts[:19]
        assert bool(tag) == bool(re.match(r".{23} - \[ *\d+\] [SC] (<--|-->)", line))


def test_the_reference_path_reads_line_by_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A guard for the helper above: the reference path really is line by line."""
    seen = []
    original = inputs.iter_lines
    monkeypatch.setattr(inputs, "iter_lines", lambda *a: seen.append(1) or original(*a))
    path = tmp_path / "SMTPOutboundConversation.log"
    path.write_bytes(b"".join(VALID_LINES))
    with monkeypatch.context() as m:
        m.setattr(inputs.formats, "get", lambda name: _LineByLine())
        list(iter_documents([str(path)], ParseOptions(direction=Direction.OUTBOUND), ParseStats()))
    assert seen


def test_the_collector_runs_less_often_while_parsing_and_as_before_after(tmp_path: Path) -> None:
    import gc

    path = tmp_path / "SMTPOutboundConversation.log"
    path.write_bytes(b"".join(VALID_LINES))
    before = gc.get_threshold()
    docs = iter_documents([str(path)], ParseOptions(direction=Direction.OUTBOUND), ParseStats())
    next(docs)
    assert gc.get_threshold()[0] == max(before[0], inputs.GC_YOUNG)
    list(docs)
    assert gc.get_threshold() == before


_payloads = st.sampled_from([
    "************ New (secure) connection to: 192.0.2.1", "************ New connection from: ::1",
    "~~~~~~~~~~~~ Connection Terminated ( 1)", "S <-- EHLO x", "S <-- MAIL FROM:<a@b>",
    "S <-- RCPT TO:<c@d>", "S <-- DATA", "S <-- QUIT", "S <-- AUTH LOGIN", "S <-- dXNlcg==",
    "C --> 220 hi", "C --> 250-x", "C --> 250 ok", "C --> 354 go", "C --> 334 VXNlcg==",
    "C --> 421 4.4.2 bye", "C --> 550 5.1.1 no", "C --> 999", "whatever", "RSET",
])


@SETTINGS
@given(st.lists(st.tuples(st.integers(0, 5), _payloads, st.integers(-40, 40)), min_size=16,
                max_size=150),
       st.sets(st.integers(0, 5)),
       st.sampled_from(["2024-03-21 11", "2024-10-27 02", "2024-10-27 01"]),
       st.sampled_from([64, 2048, 1 << 16]))
def test_interleaved_sessions_read_in_blocks_as_line_by_line(tmp_path_factory: pytest.TempPathFactory,
                                                    steps: list[tuple[int, str, int]],
                                                    unannounced: set[int], hour: str,
                                                    block: int) -> None:
    """Sessions interleaved at random, most opened by a connection line, ids reused (sessions 4
    and 5 share the ids of 0 and 1), lines of sessions never opened, a clock that jumps back and
    forth, by minutes now and then, through a DST fold: reading in blocks (every line in the
    usual layout) gives what line by line gives."""
    millis = 30 * 60_000
    out = []
    started: set[int] = set()
    for session, payload, step in steps:
        jump = 60 if abs(step) == 40 else 1  # now and then, 40 minutes on or back
        millis = max(0, min(millis + step * 1000 * jump, 60 * 60_000 - 1))
        stamp = f"{hour}:{millis // 60000:02d}:{millis // 1000 % 60:02d},{millis % 1000:03d}"
        sid = f"{700 + session % 4:>6}"
        if session not in started and session not in unannounced:
            out.append(f"{stamp} - [{sid}] ************ New connection to: 192.0.2.{session}\n")
        started.add(session)
        out.append(f"{stamp} - [{sid}] {payload}\n")
    with pytest.MonkeyPatch.context() as monkeypatch:
        fast, slow = parse_both(tmp_path_factory.mktemp("grouped"), "".join(out).encode(), monkeypatch,
                                block)
    assert slow == fast
