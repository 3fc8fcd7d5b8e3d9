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
_MILLIS = {f"{ms:03d}": timedelta(milliseconds=ms) for ms in range(1000)}
_DELIVERED = Verdict.DELIVERED
_DEFERRED = Verdict.DEFERRED
_FAILED = Verdict.FAILED

# A reply record while a session is open: (code, text lines, local timestamp, fold).
# Converted into a ``Reply`` only when it decides something.
_R = tuple[str, list[str], str, int]
_ASSUMED_OK: _R = ("250", [""], "", 0)  # a step before the log began (e.g. MAIL not logged)

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
    """One session being assembled (mutable; frozen into a ``Session`` when it ends)."""

    __slots__ = (
        "auth_next",
        "close",
        "connected_out",
        "extensions",
        "fail",
        "files",
        "helo",
        "in_data",
        "last",
        "last_path",
        "lines",
        "offset",
        "parts",
        "parts_code",
        "path",
        "peer",
        "progress",
        "queue",
        "secure",
        "seen",
        "server_name",
        "sid",
        "start",
        "talked",
        "tls",
        "txn",
        "txns",
    )

    def __init__(self, ev: Event, fold: int, seen: float) -> None:
        self.sid = ev.session_id
        self.path = ev.path
        self.offset = ev.offset
        self.files = {ev.path: ev.offset}
        self.last_path = ev.path
        self.lines: list[str] = []
        self.start = (ev.timestamp, fold)
        self.last = self.start
        self.seen = seen
        self.peer: str | None = None
        self.secure = False
        self.connected_out: bool | None = None
        self.tls = False
        self.helo: str | None = None
        self.server_name: str | None = None
        self.extensions: tuple[str, ...] = ()
        self.queue: deque[tuple[Any, _Txn | None, _Rcpt | None]] = deque()
        self.parts: list[str] = []  # continuation lines of a multi-line reply
        self.parts_code = ""
        self.txns: list[_Txn] = []
        self.txn: _Txn | None = None  # the open (not abandoned) transaction
        self.fail: tuple[_R, Stage] | None = None  # first negative session-level reply
        self.close: tuple[_R, Stage] | None = None  # the 421 that ended the session
        self.progress = Stage.CONNECT
        self.auth_next = False  # the next client line answers a 334 challenge
        self.in_data = False  # between 354 and the end-of-data reply
        self.talked = False  # a command or reply has been seen


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

    # -- public API (docs/CONTRACTS.md) ------------------------------------------------------

    def feed(self, ev: Event) -> list[Session]:
        """Take one event; return the sessions it finished (usually none)."""
        # one unpacking instead of an attribute lookup per field: this runs once per log line
        ts, sid, kind, payload, text, _raw, offset, path, _peer, _secure, _out, _defect = ev
        if ts < self._last_ts:
            self._clock_went_back(ts)
        elif self._fold and not self._ambiguous(ts):
            self._fold = 0
        self._last_ts = ts

        s = self._open.get(sid)
        if s is not None and kind is not _CONNECT:  # the usual case: a line of an open session
            if path is not s.last_path and path != s.last_path:
                s.files.setdefault(path, offset)
                s.last_path = path
            s.last = (ts, self._fold)
            s.seen = self._clock()
            s.lines.append(text)
            if kind is _REPLY:
                if payload[3:4] == "-":  # a continuation line: most reply lines are (EHLO)
                    s.parts.append(payload[4:])
                    s.parts_code = payload[:3]
                elif s.parts:  # the last line of a multi-line reply
                    texts = s.parts
                    texts.append(payload[4:])
                    s.parts = []
                    self._final_reply(s, (payload[:3], texts, ts, self._fold))
                else:  # a one-line reply (as _reply, inline: most replies are)
                    self._final_reply(s, (payload[:3], [payload[4:]], ts, self._fold))
            elif kind is _COMMAND:
                self._command(s, ev)
            elif kind is _TERMINATE:
                del self._open[sid]
                return [self._finish(s, incomplete=False)]
            return []

        done: list[Session] = []
        if kind is _CONNECT:
            if s is not None and (s.talked or s.connected_out is not None):
                # id reused (e.g. after a restart): the old session is over
                del self._open[sid]
                done.append(self._finish(s, incomplete=True))
                s = None
            if s is None:
                s = self._open[sid] = _Open(ev, self._fold, self._clock())
            else:  # only non-SMTP lines so far (notes logged before connecting): same session
                s.last = (ts, self._fold)
                s.seen = self._clock()
            s.peer = ev.peer
            s.secure = s.tls = ev.secure
            s.connected_out = ev.connected_out
            if ev.connected_out is not None:
                self._seen_out = ev.connected_out
        else:  # the log began mid-session (or the connection line was lost)
            s = self._open[sid] = _Open(ev, self._fold, self._clock())
        s.lines.append(text)

        if kind is _REPLY:
            if payload[3:4] == "-":
                s.parts.append(payload[4:])
                s.parts_code = payload[:3]
            else:
                self._reply(s, payload, ts)
        elif kind is _COMMAND:
            self._command(s, ev)
        elif kind is _TERMINATE:
            del self._open[sid]
            done.append(self._finish(s, incomplete=False))
        return done

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

    # -- replies -----------------------------------------------------------------------------

    def _reply(self, s: _Open, payload: str, ts: str) -> None:
        """A final reply line (continuations are collected by ``feed``)."""
        code = payload[:3]
        texts = s.parts + [payload[4:]] if s.parts else [payload[4:]]
        s.parts = []
        self._final_reply(s, (code, texts, ts, self._fold))

    def _final_reply(self, s: _Open, r: _R) -> None:
        s.in_data = False
        code = r[0]
        if s.queue:
            kind, txn, rcpt = s.queue.popleft()
        elif not s.talked:
            kind, txn, rcpt = _GREETING, None, None
        else:
            kind, txn, rcpt = None, None, None  # unsolicited (e.g. 421 idle timeout)
        s.talked = True
        if s.close is not None:
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
                s.queue.appendleft((_DOT, txn, None))
                txn.progress = Stage.DOT  # type: ignore[union-attr]
                s.in_data = True
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
                s.extensions = tuple([t.strip() for t in r[1][1:] if t.strip()])
                if s.server_name is None:
                    s.server_name = _first_word(r[1][0])
            else:
                self._fail(s, r, Stage.HELO)
        elif kind is _GREETING:
            if positive:  # a refusal's first word is its status code, not a name
                s.server_name = _first_word(r[1][0])
            else:
                self._fail(s, r, Stage.CONNECT)
        elif kind is _STARTTLS:
            if code == "220":
                s.tls = True
                s.extensions = ()  # RFC 3207 §4.2: the client must forget what it learned
            else:
                self._fail(s, r, Stage.STARTTLS)
        elif kind is _AUTH:
            if code == "334":
                s.queue.appendleft((_AUTH, None, None))
                s.auth_next = True
            elif not positive:
                self._fail(s, r, Stage.AUTH)
        if code == "421":
            self._close(s, r, kind, txn)

    def _fail(self, s: _Open, r: _R, stage: Stage) -> None:
        if s.fail is None:
            s.fail = (r, stage)

    def _close(self, s: _Open, r: _R, kind: Any, txn: _Txn | None) -> None:
        current = s.txn
        if isinstance(kind, Stage):
            stage = kind
        elif kind in (_BDAT, _BDAT_LAST):
            stage = Stage.DOT if kind is _BDAT_LAST else Stage.DATA
        else:
            stage = current.progress if current is not None else s.progress
        s.close = (r, stage)
        for t in (txn, current):
            if t is not None and t.close is None:
                t.close = (r, stage)
        s.queue.clear()

    # -- commands ----------------------------------------------------------------------------

    def _command(self, s: _Open, ev: Event) -> None:
        payload = ev.payload
        if s.parts:  # a multi-line reply interrupted by a command: take what came as the reply
            texts, s.parts = s.parts, []
            self._final_reply(s, (s.parts_code, texts, ev.timestamp, self._fold))
        if s.auth_next:  # the client's answer to a 334 challenge is a credential
            s.auth_next = False
            s.lines[-1] = _redact(ev.text, payload, REDACTED)
            return
        if s.in_data:
            return  # a body line (Xeams does not log the body; a variant might)
        s.talked = True
        verb = payload[:4].upper()
        queue = s.queue
        if verb == "RCPT":
            txn = s.txn
            if txn is None:  # RCPT without a logged MAIL: the log began mid-transaction
                txn = self._new_txn(s, None, assumed=True)
            rcpt = _Rcpt(_address(payload) or "")
            txn.recipients.append(rcpt)
            if txn.progress is Stage.MAIL:
                txn.progress = Stage.RCPT
            queue.append((_RCPT, txn, rcpt))
        elif verb == "MAIL":
            txn = self._new_txn(s, _address(payload))
            queue.append((_MAIL, txn, None))
        elif verb == "DATA":
            txn = s.txn
            if txn is not None:
                txn.progress = Stage.DATA
                queue.append((_DATA, txn, None))
            else:
                queue.append((_OTHER, None, None))
        elif verb == "BDAT":
            txn = s.txn
            last = "LAST" in payload.upper().split()[2:]
            if txn is not None:
                txn.progress = Stage.DOT if last else Stage.DATA
                queue.append((_BDAT_LAST if last else _BDAT, txn, None))
            else:
                queue.append((_OTHER, None, None))
        elif verb in ("EHLO", "HELO"):
            s.helo = payload[5:].strip() or s.helo
            s.progress = Stage.HELO
            queue.append((_HELO, None, None))
        elif verb == "STAR" and payload[:8].upper() == "STARTTLS":
            s.progress = Stage.STARTTLS
            queue.append((_STARTTLS, None, None))
        elif verb == "AUTH":
            words = payload.split(None, 2)
            if len(words) > 2:  # AUTH mechanism initial-response (RFC 4954 §4)
                s.lines[-1] = _redact(ev.text, payload, f"{words[0]} {words[1]} {REDACTED}")
            s.progress = Stage.AUTH
            queue.append((_AUTH, None, None))
        elif verb == "RSET":
            s.txn = None
            queue.append((_OTHER, None, None))
        else:  # QUIT, NOOP, VRFY, EXPN, HELP, anything unknown: answered, decides nothing
            queue.append((_OTHER, None, None))

    def _new_txn(self, s: _Open, mail_from: str | None, assumed: bool = False) -> _Txn:
        txn = _Txn(len(s.txns), mail_from, assumed)
        s.txns.append(txn)
        s.txn = txn
        return txn

    # -- finishing ---------------------------------------------------------------------------

    def _finish(self, s: _Open, incomplete: bool) -> Session:
        direction = self.direction
        if direction is None:
            out = s.connected_out if s.connected_out is not None else self._seen_out
            direction = Direction.INBOUND if out is False else Direction.OUTBOUND
        remote_ip, peer_host = _peer(s.peer)
        if direction is Direction.OUTBOUND:
            remote_host = s.server_name or peer_host
        else:
            remote_host = s.helo or peer_host
        return Session(
            session_id=s.sid,
            direction=direction,
            path=s.path,
            offset=s.offset,
            files=dict(s.files),
            start=self._time(s.start),
            end=self._time(s.last),
            incomplete=incomplete,
            lines=tuple(s.lines),
            remote_ip=remote_ip,
            remote_host=remote_host,
            helo=s.helo,
            tls=s.tls,
            extensions=s.extensions,
            transactions=tuple([self._transaction(s, t) for t in s.txns]),
            outcome=None if s.txns else self._session_outcome(s),
        )

    def _transaction(self, s: _Open, t: _Txn) -> Transaction:
        recipients = tuple([Recipient(r.address, self._recipient_outcome(s, t, r))
                            for r in t.recipients])
        if recipients:
            outcome = recipients[0].outcome
        else:
            outcome = self._path_outcome(t, ((Stage.MAIL, t.mail_reply),), Stage.MAIL)
        return Transaction(t.index, t.mail_from, recipients, outcome)

    def _recipient_outcome(self, s: _Open, t: _Txn, r: _Rcpt) -> Outcome:
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

    def _session_outcome(self, s: _Open) -> Outcome:
        if s.fail is not None:
            rep, stage = s.fail
            return Outcome(_verdict(rep[0]), stage, self._make_reply(rep))
        if s.close is not None:
            rep, stage = s.close
            return Outcome(Verdict.DEFERRED, stage, self._make_reply(rep))
        return Outcome(Verdict.FAILED, s.progress)

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
            second = self._seconds[ts[:19]] = self._make_time(ts[:19] + ",000", 0)
        millis = _MILLIS.get(ts[20:23])
        if millis is None:  # digits other than 0-9 (the layout's \d allows them)
            return self._make_time(ts, 0)
        return second + millis

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
