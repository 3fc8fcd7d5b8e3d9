"""Records → the lines of each session, grouped by session id. Pure (the clock is injected).

Sessions of many connections interleave line by line in one log, and one may continue in the
next file after a rotation. A ``SessionGrouper`` collects each session's records until its end
(a termination line, a connection line reusing its id, an idle timeout, the end of the input)
and hands it over whole, as ``Collected``: following its SMTP dialogue is ``shipper.smtp``'s
business, once, when it is over. Per line, grouping costs a look-up and an append.

Memory grows with the number of open sessions only: a finished session is handed over and
forgotten.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Iterable

from shipper.localtime import StreamClock
from shipper.model import Collected, Connect, Direction, Kind, Record
from shipper.smtp import CONTINUED, dialogue_ended, line_shape

_CONNECT = Kind.CONNECT
_END = Kind.END


class _Open:
    __slots__ = ("connect", "files", "last_source", "offset", "path", "records", "seen", "sid")

    def __init__(self, sid: str, source: Hashable, path: str, offset: int, seen: float) -> None:
        self.sid = sid
        self.path = path
        self.offset = offset
        self.files: dict[Hashable, int] = {source: offset}
        self.last_source = source
        self.records: list[Record] = []
        self.seen = seen
        self.connect: Connect | None = None


class SessionGrouper:
    """Groups one stream's records into sessions.

    ``direction``: the side the log was written on; ``None`` decides per session from its
    connection line (``to:`` → outbound, ``from:`` → inbound), else from the last connection
    line seen in the stream, else outbound. ``clock``: for idle timeouts (``flush_idle``).
    """

    def __init__(self, direction: Direction | None, stream_clock: StreamClock,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.direction = direction
        self._stream_clock = stream_clock
        self._clock = clock
        self._open: dict[str, _Open] = {}
        self._last_ts = ""
        self._seen_out: bool | None = None  # what the last connection line said

    def feed(self, source: Hashable, path: str, records: Iterable[Record]) -> list[Collected]:
        """Take records read from ``source`` (named ``path`` in documents); return the
        sessions they finished, in the order they finished."""
        done: list[Collected] = []
        get = self._open.get
        last_ts = self._last_ts
        fold = self._stream_clock.fold
        now = self._clock()
        for record in records:
            kind, sid, ts = record[0], record[1], record[2]
            if ts < last_ts or fold:
                fold = self._stream_clock.advance(last_ts, ts)
                if fold:
                    record = record._replace(fold=fold)
            last_ts = ts
            s = get(sid)
            if s is not None and kind is not _CONNECT:  # a line of an open session: most lines
                if s.last_source is not source:
                    s.files.setdefault(source, record.offset)
                    s.last_source = source
                s.seen = now
                s.records.append(record)
                if kind is _END:
                    done.append(self._finish(self._open.pop(sid), incomplete=False))
                continue
            s = self._start(s, record, source, path, now, done)
            s.records.append(record)
            if kind is _END:
                done.append(self._finish(self._open.pop(sid), incomplete=False))
        self._last_ts = last_ts
        return done

    def _start(self, s: _Open | None, record: Record, source: Hashable, path: str, now: float,
               done: list[Collected]) -> _Open:
        """The session a connection line, or a line of an unknown session, belongs to."""
        sid = record.session_id
        if record.kind is not _CONNECT:  # the log began mid-session (or lost the connection line)
            s = self._open[sid] = _Open(sid, source, path, record.offset, now)
            return s
        if s is not None and (s.connect is not None or _talked(s.records)):
            # the id is reused (e.g. after a restart of the server): the old session is over
            done.append(self._finish(self._open.pop(sid), incomplete=True))
            s = None
        if s is None:
            s = self._open[sid] = _Open(sid, source, path, record.offset, now)
        else:  # only notes so far (logged before connecting): the same session
            s.seen = now
        s.connect = record.connect
        if record.connect is not None and record.connect.outbound is not None:
            self._seen_out = record.connect.outbound
        return s

    def flush_idle(self, now: float, idle_seconds: float,
                   ended_seconds: float | None = None) -> list[Collected]:
        """Finish the sessions with no line since ``now - idle_seconds`` (as incomplete) and,
        with ``ended_seconds``, those whose dialogue plainly ended (``smtp.dialogue_ended``) with
        no line since ``now - ended_seconds`` though no termination line came. ``now`` comes
        from the same clock as the grouper's (``time.monotonic`` by default)."""
        done = []
        for sid, s in list(self._open.items()):
            if s.seen < now - idle_seconds:
                done.append(self._finish(self._open.pop(sid), incomplete=True))
            elif (ended_seconds is not None and s.seen < now - ended_seconds
                  and dialogue_ended(s.records, self._direction(s))):
                done.append(self._finish(self._open.pop(sid), incomplete=False))
        return done

    def flush_all(self) -> list[Collected]:
        """Finish every open session (end of input), oldest first, as incomplete."""
        sessions = [self._finish(s, incomplete=True) for s in self._open.values()]
        self._open.clear()
        return sessions

    def open_positions(self) -> dict[Hashable, tuple[int, set[str]]]:
        """Per source, the smallest offset of a line of a still-open session in it — a
        checkpoint for that source must not pass it — and the ids of those sessions."""
        positions: dict[Hashable, tuple[int, set[str]]] = {}
        for s in self._open.values():
            for source, offset in s.files.items():
                held = positions.get(source)
                if held is None:
                    positions[source] = (offset, {s.sid})
                else:
                    held[1].add(s.sid)
                    if offset < held[0]:
                        positions[source] = (offset, held[1])
        return positions

    @property
    def open_sessions(self) -> int:
        return len(self._open)

    def _finish(self, s: _Open, incomplete: bool) -> Collected:
        return Collected(s.sid, self._direction(s), s.path, s.offset, s.files, s.records, s.connect,
                         incomplete)

    def _direction(self, s: _Open) -> Direction:
        if self.direction is not None:
            return self.direction
        out = s.connect.outbound if s.connect is not None else None
        if out is None:
            out = self._seen_out
        return Direction.INBOUND if out is False else Direction.OUTBOUND


def _talked(records: list[Record]) -> bool:
    """Whether a command or a whole reply is among a session's records (a connection line for
    its id then starts a new session)."""
    return any(r.kind is Kind.PROTOCOL and line_shape(r.payload) != CONTINUED for r in records)
