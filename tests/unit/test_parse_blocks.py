"""Reading in blocks (``shipper.lines.LineSplitter`` → the format's block scanner) is a faster
way to the very same result as reading line by line: same lines, offsets and notes; same
documents, defects and counts — whatever the bytes, the line endings and the block boundaries."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shipper import inputs, pipeline
from shipper.formats.xeams import XeamsFormat
from shipper.lines import NO_NEWLINE, LineSplitter, cut_note, is_blank
from shipper.model import Defect, Direction, Record
from shipper.pipeline import ParseOptions, ParseStats, documents_of_files

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
VALID_LINES = b"".join((GOLDEN / name).read_bytes() for name in (
    "interleaved-sessions.log", "pipelining-outlook.log", "auth-login-and-plain-redacted.log",
    "bdat-chunking.log", "rcpt-451-greylisted-postfix.log")).splitlines(keepends=True)
_get_format = pipeline.formats.get  # the real one (the tests below patch it)
SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def reference_lines(data: bytes, max_line: int) -> list[tuple[int, bytes, str | None]]:
    """The rules of lines, one line at a time: (offset, line without "\\n", note) for each
    line that is not blank; a line longer than ``max_line`` is cut, the last without a newline
    noted."""
    out: list[tuple[int, bytes, str | None]] = []
    offset = 0
    for line in re.findall(rb"[^\n]*\n|[^\n]+$", data):
        content = line[:-1] if line.endswith(b"\n") else line
        if len(content) > max_line:
            note = cut_note(max_line) + ("" if line.endswith(b"\n") else "; no newline at end of input")
            out.append((offset, content[:max_line], note))
        elif not line.endswith(b"\n"):
            if not is_blank(content):
                out.append((offset, content, NO_NEWLINE))
        elif not is_blank(content):
            out.append((offset, content, None))
        offset += len(line)
    return out


def lines_of_chunks(data: bytes, max_line: int, size: int) -> list[tuple[int, bytes, str | None]]:
    """The same, rebuilt from the chunks a ``LineSplitter`` makes of ``data`` fed ``size`` bytes
    at a time."""
    splitter = LineSplitter(max_line)
    chunks = [c for i in range(0, len(data), size) for c in splitter.feed(data[i:i + size])]
    chunks += splitter.end()
    out: list[tuple[int, bytes, str | None]] = []
    at = 0
    for offset, block, note in chunks:
        assert offset >= at  # in order, never overlapping
        if note is not None:
            out.append((offset, block, note))
            at = offset + 1
            continue
        assert block.endswith(b"\n")
        for content in block.split(b"\n")[:-1]:
            assert len(content) <= max_line
            if not is_blank(content):
                out.append((offset, content, None))
            offset += len(content) + 1
        at = offset
    assert splitter.offset == len(data) and splitter.pending == 0
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
    assert reference_lines(data, max_line) == lines_of_chunks(data, max_line, size)


class _LineByLine(XeamsFormat):
    """The Xeams format without its block scanner: every line through the full layout regex."""

    def parse_block(self, data: bytes, offset: int, path: str) -> tuple[list[Record], list[Defect]]:
        records: list[Record] = []
        defects: list[Defect] = []
        for raw in data.split(b"\n")[:-1]:
            if not is_blank(raw):
                self._parse_line(raw, offset, path, records, defects)
            offset += len(raw) + 1
        return records, defects


def parse_both(tmp_path: Path, data: bytes, monkeypatch: pytest.MonkeyPatch, block: int,
               max_line: int = inputs.MAX_LINE) -> tuple[Any, Any]:
    path = tmp_path / "SMTPOutboundConversation.log"
    path.write_bytes(data)
    results = []
    for line_by_line in (False, True):
        with monkeypatch.context() as m:
            m.setattr(inputs, "BLOCK", block)
            if line_by_line:  # and a chunk per line, as a follower reading each as it comes
                m.setattr(pipeline.formats, "get", lambda name: _LineByLine())
                m.setattr(inputs, "BLOCK", 1)
            stats = ParseStats()
            options = ParseOptions(tz=ZoneInfo("Europe/Berlin"), host_name="h", max_line=max_line)
            docs = list(documents_of_files([str(path)], options, stats))
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


def test_the_block_scanner_gives_the_records_of_the_full_regex() -> None:
    """Records of a block through the scanner are those of each line through ``_LINE``."""
    data = b"".join(VALID_LINES)
    fast = XeamsFormat()
    fast.parse_block(data, 0, "p")  # now every second of the block is known: the scanner takes all
    assert _LineByLine().parse_block(data, 0, "p") == fast.parse_block(data, 0, "p")
    for crlf in (b"\r\n",):
        again = data.replace(b"\n", crlf)
        records, defects = fast.parse_block(again, 0, "p")
        assert ([r.text for r in records], []) == ([r.text for r in _LineByLine().parse_block(data, 0, "p")[0]],
                                                   defects)


def test_the_reference_path_reads_line_by_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A guard for the helper above: the reference path really goes line by line."""
    seen: list[int] = []
    original = _LineByLine._parse_line
    monkeypatch.setattr(_LineByLine, "_parse_line", lambda *a: seen.append(1) or original(*a))
    monkeypatch.setattr(XeamsFormat, "_parse_line", lambda *a: pytest.fail("the scanner path ran"))
    path = tmp_path / "SMTPOutboundConversation.log"
    path.write_bytes(b"".join(VALID_LINES))
    with monkeypatch.context() as m:
        m.setattr(pipeline.formats, "get", lambda name: _LineByLine())
        list(documents_of_files([str(path)], ParseOptions(direction=Direction.OUTBOUND), ParseStats()))
    assert len(seen) == len(VALID_LINES)


def test_the_collector_runs_less_often_while_parsing_and_as_before_after(tmp_path: Path) -> None:
    import gc

    path = tmp_path / "SMTPOutboundConversation.log"
    path.write_bytes(b"".join(VALID_LINES))
    before = gc.get_threshold()
    docs = documents_of_files([str(path)], ParseOptions(direction=Direction.OUTBOUND), ParseStats())
    next(docs)
    assert gc.get_threshold()[0] == max(before[0], pipeline.GC_YOUNG)
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
