"""Events → sessions: the SMTP state machine. Pure (no I/O; the clock is injected).

The conversation is followed the way the peers followed it, not line by line:

* Every command is queued and every final reply answers the oldest queued command
  (RFC 5321 §4.1.1; with PIPELINING, RFC 2920 §3, a client sends MAIL, RCPTs and DATA before
  the first reply arrives, and the replies come back in the same order).
* ``250-...`` lines are continuations; the reply is complete at the line with a space or bare
  code, whose code counts (RFC 5321 §4.2.1).
* A reply with nothing queued before any other line is the greeting. ``354`` to DATA and ``334``
  to AUTH are intermediate: the end-of-data reply (the body itself is not logged by Xeams) or the
  next AUTH step is then awaited first. The line the client sends after a ``334`` is a credential
  and is redacted (RFC 4954 §4).
* MAIL opens a transaction; RSET or a second MAIL abandons it (RFC 5321 §4.1.1.5); each
  transaction's recipients are judged along their own path MAIL → RCPT → DATA → end-of-data: the
  earliest non-positive reply decides, otherwise the end-of-data reply does (PRODUCT.md, "Verdict").
* ``421`` ends the session (RFC 5321 §3.8): recipients still pending are deferred with it.
  A log that stops leaves pending recipients ``failed`` at the step in progress; no reply is
  invented.

Memory grows with the number of open sessions only: a finished session is returned and forgotten.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import time
from collections import deque
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from datetime import datetime, timedelta, tzinfo
from typing import Any

from shipper.model import (
    Direction,
    Event,
    EventKind,
    Outcome,
    Recipient,
    Reply,
    Session,
    Stage,
    Transaction,
    Verdict,
)

REDACTED = "[redacted]"

_CONNECT = EventKind.CONNECT
_COMMAND = EventKind.COMMAND
_REPLY = EventKind.REPLY
_TERMINATE = EventKind.TERMINATE

# Kinds of queued commands awaiting a reply (the Stage they decide, or a marker).
_GREETING = Stage.CONNECT
_HELO = Stage.HELO
_STARTTLS = Stage.STARTTLS
_AUTH = Stage.AUTH
_MAIL = Stage.MAIL
_RCPT = Stage.RCPT
_DATA = Stage.DATA
_DOT = Stage.DOT
_BDAT = "bdat"
_BDAT_LAST = "bdat-last"
_OTHER = "other"  # RSET, NOOP, VRFY, QUIT, ...: their replies decide nothing (except 421)

_ORDER = {stage: i for i, stage in enumerate(Stage)}
# An aware datetime plus a timedelta is a wall-clock sum that keeps the tzinfo (fold 0), so a
# time is its minute plus these, exactly: the zone is consulted only when an offset is asked for.
_MILLIS = {f"{ms:03d}": timedelta(milliseconds=ms) for ms in range(1000)}
_SECONDS = {f"{s:02d}": timedelta(seconds=s) for s in range(60)}
_DELIVERED = Verdict.DELIVERED
_DEFERRED = Verdict.DEFERRED
_FAILED = Verdict.FAILED

# A reply record while a session is open: (code, text lines, local timestamp, fold).
# Converted into a ``Reply`` only when it decides something.
_R = tuple[str, list[str], str, int]
_ASSUMED_OK: _R = ("250", [""], "", 0)  # a step before the log began (e.g. MAIL not logged)

# An IPv4 address in the form ``str(ipaddress.ip_address(...))`` gives (no leading zeros): such
# a peer is its own address, without the ~5 µs of parsing it (peers repeat, but a busy server
# talks to more of them than a cache holds).
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_DOTTED_QUAD = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")
_ENHANCED = re.compile(r"([245])\.\d{1,3}\.\d{1,3}(?=\s|$)")
_ADDRESS = re.compile(r"(?:FROM|TO)\s*:\s*", re.IGNORECASE)


class _Txn:
    __slots__ = (
        "close",
        "data_reply",
        "dot_reply",
        "index",
        "mail_from",
        "mail_reply",
        "progress",
        "recipients",
    )

    def __init__(self, index: int, mail_from: str | None, assumed: bool = False) -> None:
        self.index = index
        self.mail_from = mail_from
        self.mail_reply: _R | None = _ASSUMED_OK if assumed else None
        self.recipients: list[_Rcpt] = []
        self.data_reply: _R | None = None
        self.dot_reply: _R | None = None
        self.progress = Stage.MAIL
        self.close: tuple[_R, Stage] | None = None


class _Rcpt:
    __slots__ = ("address", "reply")

    def __init__(self, address: str) -> None:
        self.address = address
        self.reply: _R | None = None


class _Open:
    """One session being collected: its lines, in order, until it ends. The SMTP conversation
    is followed only then (``_interpret``), over the whole list at once: per line, collecting
    costs an append, and following costs one pass of a tight loop instead of a method call."""

    __slots__ = ("connected_out", "files", "last_path", "offset", "path", "peer", "records",
                 "secure", "seen", "sid")

    def __init__(self, sid: str, path: str, offset: int, seen: float) -> None:
        self.sid = sid
        self.path = path
        self.offset = offset
        self.files = {path: offset}
        self.last_path = path
        self.records: list[_Record] = []
        self.seen = seen
        self.peer: str | None = None
        self.secure = False
        self.connected_out: bool | None = None


# A line of a session: ``(text, timestamp, fold, session_id, kind, payload, "")`` from ``feed``,
# or the very tuple ``scan`` made of it, ``(text, timestamp, second, session_id, tag, payload,
# "")``, whose direction tag (a ``str`` where ``feed`` puts an ``EventKind``) says: a protocol
# line, a reply or a command by its content, fold 0 (feed_scanned takes lines so only then).
_Record = tuple[str, str, Any, str, Any, str, str]


class _Conv:
    """The state of one SMTP conversation while ``_interpret`` follows it."""

    __slots__ = (
        "auth_next",
        "close",
        "extensions",
        "fail",
        "helo",
        "in_data",
        "lines",
        "progress",
        "queue",
        "server_name",
        "talked",
        "tls",
        "txn",
        "txns",
    )

    def __init__(self, lines: list[str], tls: bool) -> None:
        self.lines = lines
        self.tls = tls
        self.helo: str | None = None
        self.server_name: str | None = None
        self.extensions: tuple[str, ...] = ()
        self.queue: deque[tuple[Any, _Txn | None, _Rcpt | None]] = deque()
        self.txns: list[_Txn] = []
        self.txn: _Txn | None = None  # the open (not abandoned) transaction
        self.fail: tuple[_R, Stage] | None = None  # first negative session-level reply
        self.close: tuple[_R, Stage] | None = None  # the 421 that ended the session
        self.progress = Stage.CONNECT
        self.auth_next = False  # the next client line answers a 334 challenge
        self.in_data = False  # between 354 and the end-of-data reply
        self.talked = False  # a command or reply has been seen


def _is_reply(payload: str) -> bool:
    """A protocol line is a reply line when it starts ``^\\d{3}([ -]|$)`` (the format's rule)."""
    c = payload[3:4]
    return (c == " " or c == "-" or c == "") and len(payload) >= 3 and payload[:3].isdecimal()


class SessionAssembler:
    """Groups events into sessions by session id and follows each SMTP conversation.

    ``direction``: the side the log was written on; ``None`` decides per session from its
    connection line (``to:`` → outbound, ``from:`` → inbound), else from the last connection
    line seen in the stream, else outbound.
    ``tz``: the zone the log's local timestamps are in. ``clock``: for ``flush_idle``.
    """

    def __init__(self, direction: Direction | None = None, tz: tzinfo | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        from shipper.inputs import (
            resolve_zone,  # local import: inputs imports this module
        )

        self.direction = direction
        self.tz = tz if tz is not None else resolve_zone(None)
        self._clock = clock
        self._open: dict[str, _Open] = {}
        self._last_ts = ""
        self._fold = 0
        self._seen_out: bool | None = None  # the last connection line's "to:"/"from:"
        self._seconds: dict[str, datetime] = {}  # for _time
        self._minutes: dict[str, datetime] = {}  # for _second

    # -- public API (docs/CONTRACTS.md) ------------------------------------------------------

    def feed(self, ev: Event) -> list[Session]:
        """Take one event; return the sessions it finished (usually none)."""
        # one unpacking instead of an attribute lookup per field: this runs once per log line
        ts, sid, kind, payload, text, _raw, offset, path, _peer, _secure, _out, _defect = ev
        if ts < self._last_ts or self._fold:
            self._advance(ts)
        self._last_ts = ts

        s = self._open.get(sid)
        if s is not None and kind is not _CONNECT:  # the usual case: a line of an open session
            if path is not s.last_path and path != s.last_path:
                s.files.setdefault(path, offset)
                s.last_path = path
            s.seen = self._clock()
            s.records.append((text, ts, self._fold, sid, kind, payload, ""))
            if kind is _TERMINATE:
                del self._open[sid]
                return [self._finish(s, incomplete=False)]
            return []

        done: list[Session] = []
        if kind is _CONNECT:
            if s is not None and (s.connected_out is not None or _talked(s.records)):
                # id reused (e.g. after a restart): the old session is over
                del self._open[sid]
                done.append(self._finish(s, incomplete=True))
                s = None
            if s is None:
                s = self._open[sid] = _Open(sid, path, offset, self._clock())
            else:  # only non-SMTP lines so far (notes logged before connecting): same session
                s.seen = self._clock()
            s.peer = ev.peer
            s.secure = ev.secure
            s.connected_out = ev.connected_out
            if ev.connected_out is not None:
                self._seen_out = ev.connected_out
        else:  # the log began mid-session (or the connection line was lost)
            s = self._open[sid] = _Open(sid, path, offset, self._clock())
        s.records.append((text, ts, self._fold, sid, kind, payload, ""))
        if kind is _TERMINATE:
            del self._open[sid]
            done.append(self._finish(s, incomplete=False))
        return done

    def feed_scanned(self, items: list[_Record], path: str,
                     offset: int, newline: int, limit: int, good_seconds: AbstractSet[str],
                     untagged: Callable[[str, str, str, str, int, str], Event],
                     slow: Callable[[str, int], Event | None]) -> list[Session]:
        """Take the lines of a block of a file at once (the batch reader's path; the same
        sessions as ``feed`` on each line's event).

        ``items``: per line of the block, in order, ``(line, timestamp, second, session_id,
        tag, payload, other)`` — a line in the usual layout has ``line`` (without its
        terminator), ``timestamp``, its first 19 characters ``second``, ``session_id``,
        ``tag`` (the direction tag, ``""`` when there is none) and ``payload``; any other line
        has only ``other`` (with a ``"\\r"`` it may end in). ``offset``: the block's position
        in ``path``; ``newline``: the terminator's length after a usual-layout line (1 or 2).
        A usual-layout line at most ``limit`` long whose ``second`` is in ``good_seconds`` is
        taken here: tagged, it is a protocol line (a reply or a command by its content);
        untagged, its event is ``untagged(timestamp, session_id, payload, line, offset,
        path)``. Every other line is handed to ``slow(text, offset)``, which returns its event
        or None (not a line of a session: a defect, a blank line).
        """
        done: list[Session] = []
        get = self._open.get
        last_ts = self._last_ts
        fold = self._fold
        now = self._clock()
        ev: Event | None
        for item in items:
            line, ts, second, sid, tag, payload, other = item
            if line:
                n = len(line)
                known = n <= limit and second in good_seconds
                if known and tag:
                    s = get(sid)
                    if s is not None:  # a protocol line of an open session: most lines
                        if ts < last_ts or fold:
                            self._last_ts = last_ts
                            self._advance(ts)
                            fold = self._fold
                        last_ts = ts
                        if s.last_path is not path:
                            if path != s.last_path:
                                s.files.setdefault(path, offset)
                            s.last_path = path
                        s.seen = now
                        if fold:
                            s.records.append((line, ts, fold, sid,
                                              _REPLY if _is_reply(payload) else _COMMAND,
                                              payload, ""))
                        else:
                            s.records.append(item)
                        offset += n + newline
                        continue
                if known and not tag:  # a connection, termination or other untagged line
                    ev = untagged(ts, sid, payload, line, offset, path)
                else:  # a line to check, or a protocol line opening a session: as parse_line decides
                    ev = slow(line + "\r" if newline == 2 else line, offset)
                offset += n + newline
            else:
                ev = slow(other, offset)
                offset += len(other) + 1
            if ev is not None:
                self._last_ts = last_ts
                done += self.feed(ev)
                fold = self._fold
                last_ts = self._last_ts
        self._last_ts = last_ts
        return done

    def _advance(self, ts: str) -> None:
        """Keep track of the fold (PEP 495) of the stream's local time at ``ts``."""
        if ts < self._last_ts:
            self._clock_went_back(ts)
        elif self._fold and not self._ambiguous(ts):
            self._fold = 0
        self._last_ts = ts

    def flush_idle(self, now: float, idle_seconds: float) -> list[Session]:
        """Finish (as incomplete) the sessions with no line since ``now - idle_seconds``;
        ``now`` comes from the same clock as the assembler's (``time.monotonic`` by default)."""
        cutoff = now - idle_seconds
        stale = [sid for sid, s in self._open.items() if s.seen < cutoff]
        return [self._finish(self._open.pop(sid), incomplete=True) for sid in stale]

    def flush_all(self) -> list[Session]:
        """Finish every open session (end of input), oldest first, as incomplete."""
        sessions = [self._finish(s, incomplete=True) for s in self._open.values()]
        self._open.clear()
        return sessions

    def open_positions(self) -> dict[str, int]:
        """Per file, the smallest byte offset of a line of a still-open session in that file:
        a checkpoint for that file must not pass it."""
        positions: dict[str, int] = {}
        for s in self._open.values():
            for path, offset in s.files.items():
                if offset < positions.get(path, offset + 1):
                    positions[path] = offset
        return positions

    @property
    def open_sessions(self) -> int:
        return len(self._open)

    # -- following the conversation ------------------------------------------------------------

    def _interpret(self, s: _Open) -> _Conv:
        """Follow the SMTP conversation of a finished session's lines, in order."""
        records = s.records
        c = _Conv([r[0] for r in records], s.secure)
        final_reply = self._final_reply
        command = self._command
        parts: list[str] = []  # the lines of a multi-line reply so far
        last_part = ""  # the last continuation line's payload (its code counts if cut short)
        i = -1
        for _text, ts, fold, _sid, kind, payload, _other in records:
            i += 1
            if kind.__class__ is str:  # a scanned protocol line: a reply (^\d{3}([ -]|$)) or a command
                fold = 0
                c3 = payload[3:4]
                if c3 == "-":
                    if payload[:3].isdecimal():  # a continuation line: most reply lines are (EHLO)
                        parts.append(payload[4:])
                        last_part = payload
                        continue
                    kind = _COMMAND
                elif (c3 == " " or (c3 == "" and len(payload) == 3)) and payload[:3].isdecimal():
                    kind = _REPLY
                else:
                    kind = _COMMAND
            if kind is _REPLY:
                if payload[3:4] == "-":  # a continuation line (of an event from feed)
                    parts.append(payload[4:])
                    last_part = payload
                elif parts:  # the last line of a multi-line reply
                    parts.append(payload[4:])
                    final_reply(c, (payload[:3], parts, ts, fold))
                    parts = []
                else:  # a one-line reply: most replies are
                    final_reply(c, (payload[:3], [payload[4:]], ts, fold))
            elif kind is _COMMAND:
                if parts:  # a multi-line reply interrupted by a command: take what came as the reply
                    final_reply(c, (last_part[:3], parts, ts, fold))
                    parts = []
                command(c, i, payload)
        return c

    def _final_reply(self, c: _Conv, r: _R) -> None:
        c.in_data = False
        code = r[0]
        if c.queue:
            kind, txn, rcpt = c.queue.popleft()
        elif not c.talked:
            kind, txn, rcpt = _GREETING, None, None
        else:
            kind, txn, rcpt = None, None, None  # unsolicited (e.g. 421 idle timeout)
        c.talked = True
        if c.close is not None:
            return  # the server already ended the session: nothing after it decides
        if code[0] not in "2345":
            return  # not an SMTP reply code (RFC 5321 §4.2.1): it answered, but decides nothing
        positive = code[0] in "23"
        # The queue pairs every transaction-bound kind (MAIL, DATA, DOT, BDAT) with its transaction
        # and RCPT with its recipient (see the command handlers): the `union-attr` ignores below are
        # for mypy, which cannot see that pairing through the tuple; a None here would be our bug.
        if kind is _RCPT:
            rcpt.reply = r  # type: ignore[union-attr]
        elif kind is _MAIL:
            txn.mail_reply = r  # type: ignore[union-attr]
        elif kind is _DATA:
            txn.data_reply = r  # type: ignore[union-attr]
            if code == "354":
                c.queue.appendleft((_DOT, txn, None))
                txn.progress = Stage.DOT  # type: ignore[union-attr]
                c.in_data = True
        elif kind is _DOT:
            txn.dot_reply = r  # type: ignore[union-attr]
        elif kind is _BDAT:
            if txn.data_reply is None or txn.data_reply[0][0] in "23":  # type: ignore[union-attr]
                txn.data_reply = r  # type: ignore[union-attr]
        elif kind is _BDAT_LAST:
            if txn.data_reply is None:  # type: ignore[union-attr]
                txn.data_reply = _ASSUMED_OK  # type: ignore[union-attr]
            txn.dot_reply = r  # type: ignore[union-attr]
        elif kind is _HELO:
            if code[0] == "2":
                c.extensions = tuple([t.strip() for t in r[1][1:] if t.strip()])
                if c.server_name is None:
                    c.server_name = _first_word(r[1][0])
            else:
                self._fail(c, r, Stage.HELO)
        elif kind is _GREETING:
            if positive:  # a refusal's first word is its status code, not a name
                c.server_name = _first_word(r[1][0])
            else:
                self._fail(c, r, Stage.CONNECT)
        elif kind is _STARTTLS:
            if code == "220":
                c.tls = True
                c.extensions = ()  # RFC 3207 §4.2: the client must forget what it learned
            else:
                self._fail(c, r, Stage.STARTTLS)
        elif kind is _AUTH:
            if code == "334":
                c.queue.appendleft((_AUTH, None, None))
                c.auth_next = True
            elif not positive:
                self._fail(c, r, Stage.AUTH)
        if code == "421":
            self._close(c, r, kind, txn)

    def _fail(self, c: _Conv, r: _R, stage: Stage) -> None:
        if c.fail is None:
            c.fail = (r, stage)

    def _close(self, c: _Conv, r: _R, kind: Any, txn: _Txn | None) -> None:
        current = c.txn
        if isinstance(kind, Stage):
            stage = kind
        elif kind in (_BDAT, _BDAT_LAST):
            stage = Stage.DOT if kind is _BDAT_LAST else Stage.DATA
        else:
            stage = current.progress if current is not None else c.progress
        c.close = (r, stage)
        for t in (txn, current):
            if t is not None and t.close is None:
                t.close = (r, stage)
        c.queue.clear()

    # -- commands ----------------------------------------------------------------------------

    def _command(self, c: _Conv, i: int, payload: str) -> None:
        """The command on line ``i`` (a pending multi-line reply is already taken)."""
        if c.auth_next:  # the client's answer to a 334 challenge is a credential
            c.auth_next = False
            c.lines[i] = _redact(c.lines[i], payload, REDACTED)
            return
        if c.in_data:
            return  # a body line (Xeams does not log the body; a variant might)
        c.talked = True
        verb = payload[:4].upper()
        queue = c.queue
        if verb == "RCPT":
            txn = c.txn
            if txn is None:  # RCPT without a logged MAIL: the log began mid-transaction
                txn = self._new_txn(c, None, assumed=True)
            rcpt = _Rcpt(_address(payload) or "")
            txn.recipients.append(rcpt)
            if txn.progress is Stage.MAIL:
                txn.progress = Stage.RCPT
            queue.append((_RCPT, txn, rcpt))
        elif verb == "MAIL":
            txn = self._new_txn(c, _address(payload))
            queue.append((_MAIL, txn, None))
        elif verb == "DATA":
            txn = c.txn
            if txn is not None:
                txn.progress = Stage.DATA
                queue.append((_DATA, txn, None))
            else:
                queue.append((_OTHER, None, None))
        elif verb == "BDAT":
            txn = c.txn
            last = "LAST" in payload.upper().split()[2:]
            if txn is not None:
                txn.progress = Stage.DOT if last else Stage.DATA
                queue.append((_BDAT_LAST if last else _BDAT, txn, None))
            else:
                queue.append((_OTHER, None, None))
        elif verb in ("EHLO", "HELO"):
            c.helo = payload[5:].strip() or c.helo
            c.progress = Stage.HELO
            queue.append((_HELO, None, None))
        elif verb == "STAR" and payload[:8].upper() == "STARTTLS":
            c.progress = Stage.STARTTLS
            queue.append((_STARTTLS, None, None))
        elif verb == "AUTH":
            words = payload.split(None, 2)
            if len(words) > 2:  # AUTH mechanism initial-response (RFC 4954 §4)
                c.lines[i] = _redact(c.lines[i], payload, f"{words[0]} {words[1]} {REDACTED}")
            c.progress = Stage.AUTH
            queue.append((_AUTH, None, None))
        elif verb == "RSET":
            c.txn = None
            queue.append((_OTHER, None, None))
        else:  # QUIT, NOOP, VRFY, EXPN, HELP, anything unknown: answered, decides nothing
            queue.append((_OTHER, None, None))

    def _new_txn(self, c: _Conv, mail_from: str | None, assumed: bool = False) -> _Txn:
        txn = _Txn(len(c.txns), mail_from, assumed)
        c.txns.append(txn)
        c.txn = txn
        return txn

    # -- finishing ---------------------------------------------------------------------------

    def _finish(self, s: _Open, incomplete: bool) -> Session:
        c = self._interpret(s)
        direction = self.direction
        if direction is None:
            out = s.connected_out if s.connected_out is not None else self._seen_out
            direction = Direction.INBOUND if out is False else Direction.OUTBOUND
        remote_ip, peer_host = _peer(s.peer)
        if direction is Direction.OUTBOUND:
            remote_host = c.server_name or peer_host
        else:
            remote_host = c.helo or peer_host
        first, last = s.records[0], s.records[-1]
        start = self._time(_stamp(first))
        return Session(
            session_id=s.sid,
            direction=direction,
            path=s.path,
            offset=s.offset,
            files=dict(s.files),
            start=start,
            end=start if last is first else self._time(_stamp(last)),
            incomplete=incomplete,
            lines=tuple(c.lines),
            remote_ip=remote_ip,
            remote_host=remote_host,
            helo=c.helo,
            tls=c.tls,
            extensions=c.extensions,
            transactions=tuple([self._transaction(t) for t in c.txns]),
            outcome=None if c.txns else self._session_outcome(c),
        )

    def _transaction(self, t: _Txn) -> Transaction:
        recipients = tuple([Recipient(r.address, self._recipient_outcome(t, r))
                            for r in t.recipients])
        if recipients:
            outcome = recipients[0].outcome
        else:
            outcome = self._path_outcome(t, ((Stage.MAIL, t.mail_reply),), Stage.MAIL)
        return Transaction(t.index, t.mail_from, recipients, outcome)

    def _recipient_outcome(self, t: _Txn, r: _Rcpt) -> Outcome:
        return self._path_outcome(t, ((_MAIL, t.mail_reply), (_RCPT, r.reply),
                                      (_DATA, t.data_reply), (_DOT, t.dot_reply)), t.progress)

    def _path_outcome(self, t: _Txn, steps: tuple[tuple[Stage, _R | None], ...],
                      progress: Stage) -> Outcome:
        last: _R | None = None
        for stage, rep in steps:
            if rep is None:  # the conversation broke off here
                if t.close is not None:
                    return Outcome(_DEFERRED, t.close[1], self._make_reply(t.close[0]))
                if stage is _MAIL or stage is _RCPT:
                    return Outcome(_FAILED, stage)
                return Outcome(_FAILED, progress)
            if rep[0][0] not in "23":
                return Outcome(_verdict(rep[0]), stage, self._make_reply(rep))
            last = rep
        if len(steps) == 1:  # MAIL accepted, but no recipient was ever given
            if t.close is not None:
                return Outcome(_DEFERRED, t.close[1], self._make_reply(t.close[0]))
            return Outcome(_FAILED, _MAIL)
        assert last is not None
        if last[0][0] == "2":
            return Outcome(_DELIVERED, _DOT, self._make_reply(last))
        return Outcome(_FAILED, _DOT)  # a 3xx to end-of-data: nonsense, no verdict

    def _session_outcome(self, c: _Conv) -> Outcome:
        if c.fail is not None:
            rep, stage = c.fail
            return Outcome(_verdict(rep[0]), stage, self._make_reply(rep))
        if c.close is not None:
            rep, stage = c.close
            return Outcome(Verdict.DEFERRED, stage, self._make_reply(rep))
        return Outcome(Verdict.FAILED, c.progress)

    def _make_reply(self, r: _R) -> Reply:
        code, texts, ts, fold = r
        first = texts[0].strip()
        m = _ENHANCED.match(first)
        enhanced = m.group(0) if m is not None and m.group(1) == code[0] else None
        if len(texts) == 1:  # a one-line reply: its text as it is
            return Reply(code, enhanced, first, self._time((ts, fold)))
        joined = [first]
        for line in texts[1:]:
            line = line.strip()
            if enhanced is not None and line.startswith(enhanced):
                line = line[len(enhanced):].lstrip()  # RFC 2034 repeats it on every line
            if line:
                joined.append(line)
        return Reply(code, enhanced, " ".join([t for t in joined if t]), self._time((ts, fold)))

    # -- time --------------------------------------------------------------------------------

    def _time(self, stamp: tuple[str, int]) -> datetime:
        ts, fold = stamp
        if fold:
            return self._make_time(ts, fold)
        # Timestamps repeat to the second: the zone-aware second is made once, its milliseconds
        # added (an aware datetime plus a timedelta keeps the tzinfo, with fold 0).
        second = self._seconds.get(ts[:19])
        if second is None:
            if len(self._seconds) >= 4096:
                self._seconds.clear()
            second = self._seconds[ts[:19]] = self._second(ts)
        millis = _MILLIS.get(ts[20:23])
        if millis is None:  # digits other than 0-9 (the layout's \d allows them)
            return self._make_time(ts, 0)
        return second + millis

    def _second(self, ts: str) -> datetime:
        """The zone-aware second of ``ts`` (fold 0), from its minute's: a quiet log has a new
        second on nearly every session, a new minute much less often."""
        minute = self._minutes.get(ts[:16])
        if minute is None:
            if len(self._minutes) >= 1024:
                self._minutes.clear()
            minute = self._minutes[ts[:16]] = self._make_time(ts[:16] + ":00,000", 0)
        seconds = _SECONDS.get(ts[17:19])
        if seconds is None:  # digits other than 0-9
            return self._make_time(ts[:19] + ",000", 0)
        return minute + seconds

    def _make_time(self, ts: str, fold: int) -> datetime:
        return datetime(int(ts[0:4]), int(ts[5:7]), int(ts[8:10]), int(ts[11:13]),
                        int(ts[14:16]), int(ts[17:19]), int(ts[20:23]) * 1000,
                        tzinfo=self.tz, fold=fold)

    def _ambiguous(self, ts: str) -> bool:
        early = self._time((ts, 0))
        return early.utcoffset() != early.replace(fold=1).utcoffset()

    def _clock_went_back(self, ts: str) -> None:
        # Local time repeats an hour when DST ends. When the log's clock jumps back into such
        # an hour, the second pass is fold=1 (PEP 495) until the ambiguous hour is over.
        last = self._last_ts
        if ts[:15] == last[:15] or ts[:10] != last[:10]:
            return  # same ten minutes (threads logging out of order), or a new file/day
        back = (int(last[11:13]) - int(ts[11:13])) * 60 + int(last[14:16]) - int(ts[14:16])
        if back >= 30 and self._ambiguous(ts):
            self._fold = 1


def _stamp(record: _Record) -> tuple[str, int]:
    """(timestamp, fold) of a session's line."""
    return record[1], 0 if record[4].__class__ is str else record[2]


def _talked(records: list[_Record]) -> bool:
    """Whether a command or a whole reply has been seen among a session's lines (a connection
    line for its id then starts a new session)."""
    for _text, _ts, _fold, _sid, kind, payload, _other in records:
        if kind.__class__ is str:
            kind = _REPLY if _is_reply(payload) else _COMMAND
        if kind is _COMMAND or (kind is _REPLY and payload[3:4] != "-"):
            return True
    return False


def _verdict(code: str) -> Verdict:
    return Verdict.DEFERRED if code[0] == "4" else Verdict.REJECTED


def _first_word(text: str) -> str | None:
    word = text.strip().split(" ", 1)[0].strip(",;")
    return word or None


def _redact(text: str, payload: str, replacement: str) -> str:
    """The logged line with its payload replaced (the prefix — time, id, tag — kept)."""
    return text[: len(text) - len(payload)] + replacement


@functools.lru_cache(maxsize=1024)  # senders repeat (MAIL FROM of the same few addresses all day)
def _address(payload: str) -> str | None:
    """The address of ``MAIL FROM:<a>`` / ``RCPT TO:<a>`` (parameters dropped, domain
    lower-cased, source route removed); ``""`` for the null sender ``<>``."""
    m = _ADDRESS.search(payload, 4)
    if m is None:
        return None
    rest = payload[m.end():].strip()
    if rest.startswith("<"):
        end = _closing_bracket(rest)
        addr = rest[1:end].strip()
    else:
        addr = rest.split(None, 1)[0] if rest else ""
    if addr.startswith("@") and ":" in addr:  # RFC 5321 §4.1.2 source route: <@a,@b:user@d>
        addr = addr.split(":", 1)[1]
    local, at, domain = addr.rpartition("@")  # the last @: a quoted local part may hold one
    return f"{local}@{domain.lower()}" if at else addr


def _closing_bracket(rest: str) -> int:
    if '"' not in rest:  # no quoted local part: the first ">" (or none)
        end = rest.find(">", 1)
        return end if end >= 0 else len(rest)
    quoted = False
    for i, ch in enumerate(rest[1:], 1):
        if ch == '"':
            quoted = not quoted
        elif ch == ">" and not quoted:
            return i
    return len(rest)


@functools.lru_cache(maxsize=4096)  # peers repeat (the same MX hosts all day); parsing is ~5 µs
def _peer(peer: str | None) -> tuple[str | None, str | None]:
    """(ip, host) from the connection line's peer: ``1.2.3.4``, ``2001:db8::1``,
    ``[2001:db8::1]``, ``1.2.3.4:25``, ``mx.example.com/1.2.3.4``, ``mx.example.com [1.2.3.4]``."""
    if not peer:
        return None, None
    if _DOTTED_QUAD.fullmatch(peer):  # the usual case, already as ipaddress would write it
        return peer, None
    host = None
    candidates = [peer]
    for sep in ("/", " "):
        if sep in peer:
            name, _, addr = peer.partition(sep)
            candidates.append(addr.strip())
            host = name.strip() or None
    for cand in candidates:
        cand = cand.strip("[]() ")
        for attempt in (cand, cand.rsplit(":", 1)[0].strip("[]")):
            try:
                return str(ipaddress.ip_address(attempt)), host
            except ValueError:
                continue
    return None, peer
