"""Whole-file input for ``parse`` and ``backfill``: paths/globs/``-``/``.gz`` → lines → documents.

Opening files is the only I/O here; splitting into lines (``iter_lines``) works on any binary
stream, and everything after it is the pure pipeline (format → ``SessionAssembler`` →
``build_documents``).

Byte offsets are positions in the file as read — for a ``.gz`` file, in the decompressed stream.
"""

from __future__ import annotations

import gc
import gzip
import io
import os
import sys
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from collections.abc import Set as AbstractSet
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import tzinfo
from typing import IO, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from shipper import formats
from shipper.conversation import SessionAssembler
from shipper.documents import build_documents
from shipper.errors import InputError, StrictParseError
from shipper.model import Defect, Direction, Event

MAX_LINE = 64 * 1024  # longer lines are cut here (a defect); the rest is skipped, not buffered
STDIN = "-"
STDIN_NAME = "<stdin>"
_GLOB_CHARS = frozenset("*?[")
_BLANK_FIRST = frozenset(b" \t\r\n\x0b\x0c")  # what bytes.strip() strips


# -- time zones --------------------------------------------------------------------------------

def resolve_zone(name: str | None) -> tzinfo:
    """The IANA zone ``name``, or the machine's local zone when ``name`` is None/"local".
    ``ValueError`` for an unknown name."""
    if name and name.lower() != "local":
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {name!r} (expected an IANA name such as "
                             f"Europe/Berlin or America/New_York)") from exc
    return _local_zone()


def _local_zone() -> tzinfo:
    env = os.environ.get("TZ", "").lstrip(":")
    candidates = [env] if env else []
    try:  # /etc/localtime → /usr/share/zoneinfo/Europe/Berlin
        target = os.path.realpath("/etc/localtime")
        if "zoneinfo/" in target:
            candidates.append(target.split("zoneinfo/", 1)[1])
    except OSError:
        pass
    try:
        with open("/etc/timezone", encoding="utf-8") as fh:
            candidates.append(fh.read().strip())
    except OSError:
        pass
    for candidate in candidates:
        try:
            return ZoneInfo(candidate)
        except (ZoneInfoNotFoundError, ValueError):
            continue
    try:
        with open("/etc/localtime", "rb") as fh:
            return ZoneInfo.from_file(fh, key="localtime")
    except (OSError, ValueError):
        return ZoneInfo("UTC")


_NO_NEWLINE = "last line has no newline (truncated?)"


def _cut_note(max_line: int) -> str:
    return f"line longer than {max_line} bytes (cut)"


# -- lines -------------------------------------------------------------------------------------

def iter_lines(stream: IO[bytes], max_line: int = MAX_LINE) -> Iterator[tuple[int, bytes, str | None]]:
    """``(offset, line without "\\n", note)`` for each non-blank line. ``note`` is None for a
    clean line, else why the line is suspect: cut because longer than ``max_line`` (the rest of
    it is read and dropped, never held in memory), or last in the input without a newline."""
    offset = 0
    readline = stream.readline
    blank_first = _BLANK_FIRST
    while True:
        line = readline(max_line + 1)
        if not line:
            return
        n = len(line)
        if line[-1] == 10:  # b"\n"
            if line[0] in blank_first and not line.strip():
                offset += n
                continue
            yield offset, line[:-1], None
            offset += n
        elif n > max_line:
            start = offset
            offset += n
            ended = False
            while True:
                more = readline(1 << 20)
                if not more:
                    break
                offset += len(more)
                if more[-1] == 10:
                    ended = True
                    break
            note = _cut_note(max_line)
            if not ended:
                note += "; no newline at end of input"
            yield start, line[:max_line], note
        else:
            if line.strip():
                yield offset, line, _NO_NEWLINE
            offset += n


BLOCK = 256 * 1024  # bytes read at a time by iter_blocks


def iter_blocks(stream: IO[bytes], max_line: int = MAX_LINE,
                size: int = BLOCK) -> Iterator[tuple[int, bytes, str | None]]:
    """``(offset, data, note)``, in order, covering the stream: with ``note`` None, ``data`` is
    a block of whole lines, each ending in ``"\\n"`` (blank ones included); otherwise ``data``
    is one line without terminator and ``note`` says why it is suspect, as in ``iter_lines``:
    cut because longer than ``max_line`` (the rest of it is read and dropped, never held in
    memory), or last in the input without a newline. Memory: ``size + max_line`` at most."""
    read = getattr(stream, "read1", stream.read)  # what is there: a pipe is not waited on
    offset = 0
    buf = b""
    eof = False
    while not eof:
        data = read(size)
        if data:
            buf = buf + data if buf else data
        else:
            eof = True
        cut = buf.rfind(b"\n") + 1
        if cut:
            yield offset, buf[:cut], None
            offset += cut
            buf = buf[cut:]
        if len(buf) > max_line:  # no newline in more than max_line bytes: cut the line here
            start, line, skipped = offset, buf[:max_line], len(buf)
            buf = b""
            ended = False
            while not ended:
                more = read(size)
                if not more:
                    eof = True
                    break
                end = more.find(b"\n")
                if end >= 0:
                    skipped += end + 1
                    buf = more[end + 1:]
                    ended = True
                else:
                    skipped += len(more)
            note = _cut_note(max_line)
            if not ended:
                note += "; no newline at end of input"
            yield start, line, note
            offset = start + skipped
    if buf.strip():
        yield offset, buf, _NO_NEWLINE


# -- opening -----------------------------------------------------------------------------------

def expand_paths(paths: Iterable[str]) -> list[str]:
    """Globs expanded (sorted), ``-`` kept; every file checked readable before any is parsed,
    so that a typo fails fast with ``InputError`` instead of after half the output."""
    import glob

    result: list[str] = []
    for path in paths:
        if path == STDIN:
            result.append(path)
            continue
        if _GLOB_CHARS.intersection(path) and not os.path.exists(path):
            matches = sorted(p for p in glob.glob(path) if os.path.isfile(p))
            if not matches:
                raise InputError(f"{path}: no file matches this pattern")
            result.extend(matches)
            continue
        if os.path.isdir(path):
            raise InputError(f"{path}: is a directory", hint="give the log files, or a glob such "
                             "as 'logs/SMTPOutboundConversation*.log'")
        if not os.path.exists(path):
            raise InputError(f"{path}: no such file")
        if not os.access(path, os.R_OK):
            raise InputError(f"{path}: permission denied")
        result.append(path)
    return result or [STDIN]


@contextmanager
def open_input(path: str) -> Iterator[IO[bytes]]:
    """A binary stream of ``path`` (``-`` = stdin), transparently gunzipped when it starts
    with the gzip magic bytes (whatever its name)."""
    if path == STDIN:
        raw: IO[bytes] = sys.stdin.buffer
        close = False
    else:
        try:
            raw = open(path, "rb")  # closed below
        except OSError as exc:
            raise InputError(f"{path}: cannot open: {exc.strerror or exc}") from exc
        close = True
    try:
        peek = getattr(raw, "peek", None)
        magic = peek(2)[:2] if peek is not None else b""
        if magic == b"\x1f\x8b":
            with gzip.GzipFile(fileobj=raw, mode="rb") as gz:
                yield gz  # type: ignore[misc]  # GzipFile reads like the BinaryIO it wraps; typeshed disagrees
        else:
            yield raw
    finally:
        if close:
            raw.close()


# -- the whole pipeline ------------------------------------------------------------------------

@dataclass(frozen=True)
class ParseOptions:
    format: str = "xeams"
    direction: Direction | None = None  # None: from the file name, then from content
    tz: tzinfo | None = None  # None: the machine's local zone
    host_name: str = "localhost"
    strict: bool = False
    classifier: Any = None  # a reasons.Classifier; None → reasons.classify
    on_defect: Callable[[Defect], None] | None = None
    max_line: int = MAX_LINE


@dataclass
class ParseStats:
    lines: int = 0
    sessions: int = 0
    documents: Counter[str] = field(default_factory=Counter)  # verdict → count
    defects: int = 0
    kept_defects: list[Defect] = field(default_factory=list)  # the first KEEP_DEFECTS
    KEEP_DEFECTS = 1000

    def summary(self) -> str:
        verdicts = ", ".join(f"{v} {self.documents.get(v, 0)}"
                             for v in ("delivered", "rejected", "deferred", "failed"))
        total = sum(self.documents.values())
        return (f"{self.lines} lines, {self.sessions} sessions, {total} documents "
                f"({verdicts}), {self.defects} defects")


def iter_documents(paths: Iterable[str], options: ParseOptions,
                   stats: ParseStats) -> Iterator[dict[str, Any]]:
    """Documents of whole files, in the order their sessions finish. Sessions left open at
    the end of the last file are emitted then (``smtp.incomplete``). Files are read in the
    order given, through one assembler per direction, so a session continued in the next
    (rotated) file is joined up."""
    fmt = formats.get(options.format)
    tz = options.tz if options.tz is not None else resolve_zone(None)
    assemblers: dict[Direction | None, SessionAssembler] = {}
    with _fewer_collections():
        for path in expand_paths(paths):
            direction = options.direction or fmt.direction_from_name(path)
            assembler = assemblers.get(direction)
            if assembler is None:
                assembler = assemblers[direction] = SessionAssembler(direction=direction, tz=tz)
            yield from _parse_file(path, fmt, assembler, options, stats)
        for assembler in assemblers.values():
            for session in assembler.flush_all():
                yield from _documents(session, fmt.dataset, options, stats)


GC_YOUNG = 10_000  # allocations between young-generation collections while parsing (Python: 700)


@contextmanager
def _fewer_collections() -> Iterator[None]:
    """Parsing allocates a few tuples and strings per line, nearly all short-lived and none in
    a cycle; at Python's default threshold the cyclic collector runs every 700 of them and
    costs ~4 % of the parse (counted with callgrind on the parse-bench corpus). The threshold
    is raised while parsing and put back afterwards (unless someone else changed it since)."""
    old = gc.get_threshold()
    ours = (max(old[0], GC_YOUNG), *old[1:])
    gc.set_threshold(*ours)
    try:
        yield
    finally:
        if gc.get_threshold() == ours:
            gc.set_threshold(*old)


def _parse_file(path: str, fmt: formats.Format, assembler: SessionAssembler,
                options: ParseOptions, stats: ParseStats) -> Iterator[dict[str, Any]]:
    """The documents of the sessions that end in ``path``, in order.

    Blocks of ASCII lines go through the format's ``scan`` and the assembler's
    ``feed_scanned`` (the usual-layout lines of open sessions are collected without an
    ``Event`` each); everything else — other blocks, unusual lines, cut lines — goes line by
    line through ``parse_line`` and ``feed``, with the same result."""
    name = STDIN_NAME if path == STDIN else path
    parse_line = fmt.parse_line
    feed = assembler.feed
    dataset = fmt.dataset
    max_line = options.max_line
    scan = getattr(fmt, "scan", None)  # a format without a block scanner goes line by line
    good_seconds: AbstractSet[str] = getattr(fmt, "good_seconds", frozenset())
    untagged = getattr(fmt, "untagged_event", None)
    blank = 0

    def line(raw: bytes, offset: int, note: str | None = None) -> Event | None:
        """One line's event (its defect recorded), or None: a blank line or a defect."""
        nonlocal blank
        if note is None:
            if len(raw) > max_line:
                raw = raw[:max_line]
                note = _cut_note(max_line)
            elif not raw.strip():
                blank += 1
                return None
        item = parse_line(raw, offset, name)
        if isinstance(item, Event):
            if note is not None or item.defect is not None:
                _event_defect(item, note, options, stats)
            return item
        if note is not None:
            item = Defect(item.path, item.offset, f"{item.reason}; {note}", item.excerpt,
                          item.session_id)
        record_defect(item, options, stats)
        return None

    at = 0  # the offset of the last line scanned_line took

    def scanned_line(text: str, offset: int) -> Event | None:
        nonlocal at
        at = offset
        return line(text.encode(), offset)

    lines = 0
    with open_input(path) as stream:
        try:
            for start, data, note in iter_blocks(stream, max_line, BLOCK):
                if note is not None:
                    lines += 1
                    ev = line(data, start, note)
                    if ev is not None:
                        for session in feed(ev):
                            yield from _documents(session, dataset, options, stats)
                elif scan is not None and untagged is not None and data.isascii():
                    crlf = b"\r" in data
                    items = scan(data.decode(), crlf)
                    try:
                        sessions = assembler.feed_scanned(items, name, start, 2 if crlf else 1,
                                                          max_line - 1 if crlf else max_line,
                                                          good_seconds, untagged, scanned_line)
                    except StrictParseError:  # count the lines up to the bad one, as line by line
                        lines += data.count(b"\n", 0, at - start) + 1
                        raise
                    lines += len(items)
                    for session in sessions:
                        yield from _documents(session, dataset, options, stats)
                else:
                    for offset, raw, cut in iter_lines(io.BytesIO(data), max_line):
                        lines += 1
                        ev = line(raw, start + offset, cut)
                        if ev is not None:
                            for session in feed(ev):
                                yield from _documents(session, dataset, options, stats)
        except (OSError, EOFError, zlib.error) as exc:  # corrupt or truncated .gz
            record_defect(Defect(name, -1, f"cannot read further: {exc}", ""), options, stats)
        finally:
            stats.lines += lines - blank


def _event_defect(ev: Event, note: str | None, options: ParseOptions, stats: ParseStats) -> None:
    reason = "; ".join(r for r in (ev.defect, note) if r)
    record_defect(Defect(ev.path, ev.offset, reason, formats.excerpt(ev.text), ev.session_id),
                  options, stats)


def record_defect(defect: Defect, options: ParseOptions, stats: ParseStats) -> None:
    """Count and report a defect; with ``strict``, the first one is an error."""
    if options.strict:
        raise StrictParseError(f"{defect}", hint="run without --strict to skip bad lines")
    stats.defects += 1
    if len(stats.kept_defects) < stats.KEEP_DEFECTS:
        stats.kept_defects.append(defect)
    if options.on_defect is not None:
        options.on_defect(defect)


def _documents(session: Any, dataset: str, options: ParseOptions,
               stats: ParseStats) -> list[dict[str, Any]]:
    stats.sessions += 1
    docs = build_documents(session, host_name=options.host_name, dataset=dataset,
                           classifier=options.classifier)
    for doc in docs:
        stats.documents[doc["smtp"]["verdict"]] += 1
    return docs
