"""The pipeline, wired once: a log's bytes → records → sessions → delivery documents.

    chunks of lines ─▶ format.parse_block ─▶ SessionGrouper.feed ─▶ smtp.follow ─▶ build_documents
    (shipper.lines)    (shipper.formats)     (shipper.sessions)     (shipper.smtp)   (shipper.documents)

A session format (``shipper.formats.SessionFormat``: logs that say what came of each
conversation, joined by an id, rather than transcribe it) takes the place of the first three
stages and hands finished sessions straight to ``build_documents``; it keeps its joining state
itself, which ``save_state``/``restore_state`` carry across a restart of the daemon.

``Pipeline`` is one stream of a log — the files of one input, in order, on one side of the
conversation — and every command drives it: ``parse`` and ``backfill`` through
``documents_of_files`` (whole files, read in blocks), the daemon through ``Pipeline.feed`` with
the chunks of the files it follows. Where chunks come from and where documents go are the
callers' business; what happens in between is here only.

Malformed lines are data: each becomes a ``Defect`` that is counted, reported through
``on_defect`` and skipped, unless ``strict`` asks for the first to stop everything.
"""

from __future__ import annotations

import gc
import os
import time
import zlib
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Any, NamedTuple, cast

from shipper import formats, smtp
from shipper.documents import build_documents
from shipper.errors import StrictParseError
from shipper.inputs import STDIN, STDIN_NAME, expand_paths, read_chunks
from shipper.limits import bound
from shipper.lines import MAX_LINE, Chunk
from shipper.localtime import LocalTime, StreamClock, resolve_zone
from shipper.model import Collected, Defect, Direction, Record, Session
from shipper.reasons import Classifier
from shipper.sessions import SessionGrouper
from shipper.settings import LimitsSettings


@dataclass(frozen=True)
class ParseOptions:
    format: str = "xeams"
    direction: Direction | None = None  # None: from the file name, then from content
    tz: tzinfo | None = None  # None: the machine's local zone
    host_name: str = "localhost"
    strict: bool = False
    classifier: Classifier | None = None  # None: the built-in rules
    on_defect: Callable[[Defect], None] | None = None
    max_line: int = MAX_LINE
    # The year of the first line of a log whose timestamps carry none (Postfix's classic
    # syslog prefix); None: from the file's modification time.
    year: int | None = None
    limits: LimitsSettings = field(default_factory=LimitsSettings)  # sizes a peer controls (shipper.limits)


@dataclass
class ParseStats:
    lines: int = 0
    sessions: int = 0
    documents: Counter[str] = field(default_factory=Counter)  # verdict → count
    defects: int = 0
    kept_defects: list[Defect] = field(default_factory=list)  # the first KEEP_DEFECTS
    skipped: int = 0  # lines of other programs in the same log (a session format's)
    noted: Counter[str] = field(default_factory=Counter)  # events counted, not shipped
    KEEP_DEFECTS = 1000

    def summary(self) -> str:
        verdicts = ", ".join(f"{v} {self.documents.get(v, 0)}"
                             for v in ("delivered", "rejected", "deferred", "failed"))
        total = sum(self.documents.values())
        text = (f"{self.lines} lines, {self.sessions} sessions, {total} documents "
                f"({verdicts}), {self.defects} defects")
        if self.skipped:
            text += f", {self.skipped} lines of other programs skipped"
        if self.noted:
            text += "; not shipped: " + ", ".join(f"{n} {what}" for what, n in sorted(self.noted.items()))
        return text


class Shipment(NamedTuple):
    """A finished session and its documents."""

    session: Session
    documents: list[dict[str, Any]]


class Pipeline:
    """One stream of a log → documents. Not thread-safe: one thread feeds it.

    ``direction`` is the side the log was written on (None: per session, from its content).
    Sources are what the caller reads from (a path, the daemon's followed-file object): a
    session's ``files`` and ``open_positions`` are per source; ``path`` names the source in
    documents and defects."""

    def __init__(self, fmt: formats.AnyFormat, options: ParseOptions, stats: ParseStats | None = None, *,
                 direction: Direction | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.format = fmt
        # A session format joins lines into sessions itself (module docstring).
        self.joiner = fmt if isinstance(fmt, formats.SessionFormat) else None
        self.options = options
        self.stats = stats if stats is not None else ParseStats()
        self.times = LocalTime(options.tz if options.tz is not None else resolve_zone(None))
        if self.joiner is not None:
            self.joiner.start(self.times)
        self.grouper = SessionGrouper(direction, StreamClock(self.times), clock)
        self.defects_by_source: Counter[Hashable] = Counter()
        self._replay: dict[Hashable, tuple[int, frozenset[str]]] = {}
        self._tags_checked: set[Hashable] = set()  # sources whose first exchange was checked

    @property
    def stateful(self) -> bool:
        """Whether the format keeps state that ``save_state`` must carry across a restart
        (instead of open sessions holding checkpoints back)."""
        return self.joiner is not None

    def save_state(self) -> dict[str, Any] | None:
        """The format's joining state after everything fed so far (JSON-ready), or None."""
        return self.joiner.snapshot() if self.joiner is not None else None

    def restore_state(self, state: dict[str, Any]) -> None:
        """Continue from a ``save_state`` (before anything is fed)."""
        if self.joiner is not None:
            self.joiner.restore(state)

    def feed(self, source: Hashable, path: str, chunk: Chunk, when: float | None = None) -> list[Shipment]:
        """Take a chunk of ``source``'s lines; return the sessions it finished. ``when``: the
        file's modification time, for formats whose timestamps carry no year (default: now)."""
        offset, data, note = chunk
        if self.joiner is not None:
            return self._join(source, path, chunk, time.time() if when is None else when)
        records, defects = cast(formats.Format, self.format).parse_block(data if note is None else data + b"\n", offset, path)
        if note is not None:
            defects = _noted(defects, records, note, path, offset)
        replay = self._replay.get(source)
        if replay is not None:
            if offset >= replay[0]:
                del self._replay[source]
            else:
                records, defects = _unreplayed(replay, records, defects)
        lines = len(records)
        if defects:
            self._report(source, defects, records)
            read = {r.offset for r in records}
            lines += sum(1 for d in defects if d.offset not in read)  # lines no record came of
        self.stats.lines += lines
        return self._finish(self.grouper.feed(source, path, records))

    def _join(self, source: Hashable, path: str, chunk: Chunk, when: float) -> list[Shipment]:
        assert self.joiner is not None
        offset, data, note = chunk
        fed = self.joiner.feed(data if note is None else data + b"\n", offset, path, source, when)
        defects = fed.defects
        if note is not None:
            defects = _noted(defects, [], note, path, offset) or [
                Defect(path, offset, note, formats.excerpt(data.decode(errors="replace")))]
        self.stats.lines += fed.lines
        self.stats.skipped += fed.skipped
        if fed.noted:
            self.stats.noted.update(fed.noted)
        if defects:
            self._report(source, defects, [])
        return self._ship(fed.sessions)

    def skip_replayed(self, source: Hashable, until: int, sessions: Iterable[str]) -> None:
        """After a restart: of ``source``'s lines before ``until``, take only those of
        ``sessions`` (the others belong to sessions shipped before; see ``shipper.checkpoint``)."""
        self._replay[source] = (until, frozenset(sessions))

    def forget(self, source: Hashable) -> None:
        """``source`` starts over (truncated): its replay filter means nothing any more."""
        self._replay.pop(source, None)
        self._tags_checked.discard(source)

    def flush_idle(self, now: float, idle_seconds: float,
                   ended_seconds: float | None = None) -> list[Shipment]:
        if self.joiner is not None:
            return []  # it holds back by the log's own time, never by the wall clock's
        return self._finish(self.grouper.flush_idle(now, idle_seconds, ended_seconds))

    def flush_all(self) -> list[Shipment]:
        if self.joiner is not None:
            return self._ship(self.joiner.flush_all())
        return self._finish(self.grouper.flush_all())

    def open_positions(self) -> dict[Hashable, tuple[int, set[str]]]:
        """Per source, how far back the checkpoint must stay for sessions still open; a
        stateful format holds nothing back (its state is saved instead)."""
        if self.joiner is not None:
            return {}
        return self.grouper.open_positions()

    def _finish(self, collected: list[Collected]) -> list[Shipment]:
        sessions = []
        for c in collected:
            session = smtp.follow(c, self.times)
            if session.tags_agree is not None:
                self._check_tags(session)
            sessions.append(session)
        return self._ship(sessions)

    def _ship(self, sessions: list[Session]) -> list[Shipment]:
        shipments = []
        stats = self.stats
        options = self.options
        dataset = self.format.dataset
        for session in sessions:
            docs = bound(build_documents(session, host_name=options.host_name, dataset=dataset,
                                         classifier=options.classifier), options.limits)
            stats.sessions += 1
            for doc in docs:
                stats.documents[doc["smtp"]["verdict"]] += 1
            shipments.append(Shipment(session, docs))
        return shipments

    def _check_tags(self, session: Session) -> None:
        """The first exchange of each file tells whether its lines say who wrote them as we
        read them (PRODUCT.md, "Input"); a file that contradicts it is reported, once."""
        source = next(iter(session.files))
        if source in self._tags_checked:
            return
        self._tags_checked.add(source)
        if not session.tags_agree:
            reason = ("who wrote which line contradicts the first exchange: the client's first line "
                      "is a reply and the server's a command (is the direction right? the verdicts "
                      "of this file cannot be trusted)")
            excerpt = formats.excerpt(next((line for line in session.lines[1:]), session.lines[0]))
            self._report(source, [Defect(session.path, session.offset, reason, excerpt,
                                         session.session_id)], [])

    def _report(self, source: Hashable, defects: list[Defect], records: list[Record]) -> None:
        if self.options.strict:
            first = defects[0]
            self.stats.lines += sum(1 for r in records if r.offset < first.offset) + 1
            raise StrictParseError(f"{first}", hint="run without --strict to skip bad lines")
        self.defects_by_source[source] += len(defects)
        record_defects(defects, self.options, self.stats)


def record_defects(defects: list[Defect], options: ParseOptions, stats: ParseStats) -> None:
    """Count and report defects."""
    stats.defects += len(defects)
    room = stats.KEEP_DEFECTS - len(stats.kept_defects)
    if room > 0:
        stats.kept_defects.extend(defects[:room])
    if options.on_defect is not None:
        for defect in defects:
            options.on_defect(defect)


def _noted(defects: list[Defect], records: list[Record], note: str, path: str,
           offset: int) -> list[Defect]:
    """The defect of a suspect line (cut, or last without a newline): the format's own with
    the note added, or the note alone when the format could read the line."""
    if defects:
        d = defects[0]
        return [Defect(d.path, d.offset, f"{d.reason}; {note}", d.excerpt, d.session_id)]
    if records:
        r = records[0]
        return [Defect(path, offset, note, formats.excerpt(r.text), r.session_id)]
    return []


def _unreplayed(replay: tuple[int, frozenset[str]], records: list[Record],
                defects: list[Defect]) -> tuple[list[Record], list[Defect]]:
    """What is new of a chunk read again after a restart: lines past the replay range, and
    lines in it of sessions that were not shipped; defects before it were reported already."""
    until, keep = replay
    return ([r for r in records if r.offset >= until or r.session_id in keep],
            [d for d in defects if d.offset >= until])


# -- whole files ---------------------------------------------------------------------------------

def documents_of_files(paths: Iterable[str], options: ParseOptions,
                       stats: ParseStats) -> Iterator[dict[str, Any]]:
    """Documents of whole files, in the order their sessions finish. Files are read in the
    order given, through one pipeline per direction, so that a session continued in the next
    (rotated) file is joined up; sessions still open at the end are emitted then
    (``smtp.incomplete``)."""
    fmt = formats.get(options.format)
    pipelines: dict[Direction | None, Pipeline] = {}
    with _fewer_collections():
        for path in expand_paths(paths):
            direction = options.direction or fmt.direction_from_name(path)
            pipeline = pipelines.get(direction)
            if pipeline is None:
                pipeline = pipelines[direction] = Pipeline(fmt, options, stats, direction=direction)
            name = STDIN_NAME if path == STDIN else path
            when = _year_end(options.year) if options.year else _modified(path)
            try:
                for chunk in read_chunks(path, options.max_line):
                    for shipment in pipeline.feed(name, name, chunk, when):
                        yield from shipment.documents
            except (OSError, EOFError, zlib.error) as exc:  # a corrupt or truncated .gz
                record_defects([Defect(name, -1, f"cannot read further: {exc}", "")], options, stats)
        for pipeline in pipelines.values():
            for shipment in pipeline.flush_all():
                yield from shipment.documents


def _year_end(year: int) -> float:
    """A file time that puts a yearless log's first line in ``year`` (its last second)."""
    return datetime(year, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp()


def _modified(path: str) -> float:
    """When ``path`` was last written (stdin: now): the year of a log whose lines carry none."""
    if path == STDIN:
        return time.time()
    try:
        return os.stat(path).st_mtime
    except OSError:
        return time.time()


GC_YOUNG = 10_000  # allocations between young-generation collections while parsing (Python: 700)


@contextmanager
def _fewer_collections() -> Iterator[None]:
    """Parsing allocates a few tuples and strings per line, nearly all short-lived and none in
    a cycle; at Python's default threshold the cyclic collector runs every 700 of them
    (bench/parse_bench.py). The threshold is raised while parsing and put back afterwards
    (unless someone else changed it since)."""
    old = gc.get_threshold()
    ours = (max(old[0], GC_YOUNG), *old[1:])
    gc.set_threshold(*ours)
    try:
        yield
    finally:
        if gc.get_threshold() == ours:
            gc.set_threshold(*old)

