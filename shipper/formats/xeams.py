"""Xeams SMTP conversation logs: one raw line → one ``Event`` (or a ``Defect``). Pure.

Layout (PRODUCT.md, "Input"; the seed transcript in ``samples/xeams/``)::

    2024-03-21 11:39:49,056 - [   7054286] ************ New (secure) connection to: 142.251.171.26
    2024-03-21 11:39:49,056 - [   7054286] S <-- EHLO mail.synametrics.com
    2024-03-21 11:39:49,170 - [   7054286] C --> 250-mx.google.com at your service, [162.255.85.54]
    2024-03-21 11:39:49,898 - [   7054286] ~~~~~~~~~~~~ Connection Terminated ( 842)

The direction letters are not trusted (Xeams' documentation and its own sample disagree on what
``C`` and ``S`` mean): a payload matching ``^\\d{3}([ -]|$)`` is a reply line, anything else on a
tagged line is a command.
"""

from __future__ import annotations

import functools
import re
from datetime import date

from shipper.formats import excerpt
from shipper.model import Defect, Direction, Event, EventKind

_REPLY = EventKind.REPLY
_COMMAND = EventKind.COMMAND

DATASET = "xeams.smtp"

# One pass classifies the line: groups ts, session id, direction tag, reply code.
# Month/day/hour/minute/second ranges are checked here; impossible dates (Feb 30) in _valid_date.
_LINE = re.compile(
    r"(\d{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01]) (?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d,\d{3})"
    r" - \[\s*([^\]\s]+)\s*\] ?"
    r"((?:[SC] (?:<--|-->) ?)?)"
    r"(\d{3}(?:[ -]|$))?"
)
_CONNECT = re.compile(r"\*+\s*New\s+(\(secure\)\s+)?connection\s+(to|from)\s*:?\s*(.*?)\s*$", re.IGNORECASE)
_TERMINATE = re.compile(r"~+\s*Connection\s+Terminated\b", re.IGNORECASE)
# What Xeams writes (see _is_terminated).
_TERMINATED = "~~~~~~~~~~~~ Connection Terminated"
_TERMINATED_LEN = len(_TERMINATED)
_SESSION_ID = re.compile(r"\[\s*(\d+)\s*\]")
# Untagged lines are commands only when they start with an SMTP verb (RFC 5321 §4.1, 3030, 4954, 3207).
_VERBS = frozenset(
    ["EHLO", "HELO", "MAIL", "RCPT", "DATA", "BDAT", "RSET", "NOOP", "QUIT", "VRFY", "EXPN", "HELP", "STARTTLS", "AUTH"]
)

# The usual layout only (one space after "]", spaces and digits for the id), from the comma
# before the milliseconds on (the date and time before it are looked up in a set of seconds
# ``_LINE`` accepted); groups: session id, direction tag, reply code (``_LINE``'s test, looked
# ahead at), payload (all the rest, newlines included as in ``text[m.end():]``).
_FAST = re.compile(
    r"(?s),\d{3} - \[ *(\d+)\] (?:([SC] (?:<--|-->)) ?)?(?=(\d{3}(?:[ -]|$))?)(.*)"
).match
_new = tuple.__new__  # builds an Event without NamedTuple's Python-level __new__

# The same usual layout for a whole block of lines at once (``scan``): per line, the groups
# line, timestamp, its first 19 characters, session id, direction tag, payload — or, for any
# other line, only the last group, the line as it is (``SessionAssembler.feed_scanned``); ``.``
# rather than ``[^\n]`` (it stops at "\n" all the same) is half the cost of the match. One
# for blocks without "\r" and one for blocks of CRLF lines (where a line ending in "\n" alone
# or holding a "\r" elsewhere is an "other" line, left to ``parse_line``).
_SCAN_LF = re.compile(
    r"^(?:(((.{19}),\d{3}) - \[ *(\d+)\] (?:([SC] (?:<--|-->)) ?)?(.*))|(.*))\n", re.M
).findall
_SCAN_CRLF = re.compile(
    r"^(?:(((.{19}),\d{3}) - \[ *(\d+)\] (?:([SC] (?:<--|-->)) ?)?([^\r\n]*))\r|(.*))\n",
    re.M,
).findall

_FILE_DIRECTIONS = (
    ("smtpoutboundconversation", Direction.OUTBOUND),
    ("smtpproxyconversation", Direction.INBOUND),
    ("smtpconversation", Direction.INBOUND),
)


class XeamsFormat:
    name = "xeams"
    dataset = DATASET

    def __init__(self) -> None:
        self._good_dates: set[str] = set()
        # "YYYY-MM-DD HH:MM:SS" prefixes the full regex has accepted (valid date and time)
        self._good_seconds: set[str] = set()

    @property
    def good_seconds(self) -> set[str]:
        """The "YYYY-MM-DD HH:MM:SS" prefixes known valid (a usual-layout line with one of
        them needs no further checking); ``parse_line`` adds each new one it accepts."""
        return self._good_seconds

    def scan(self, text: str, crlf: bool) -> list[tuple[str, str, str, str, str, str, str]]:
        """The lines of a block of ASCII text, each ending in "\\n" (with ``crlf``, in
        "\\r\\n"), split by the usual layout: see ``SessionAssembler.feed_scanned``."""
        return (_SCAN_CRLF if crlf else _SCAN_LF)(text)

    def untagged_event(self, timestamp: str, session_id: str, payload: str, text: str,
                       offset: int, path: str) -> Event:
        """The event of a usual-layout line without direction tag that ``scan`` split (its
        second among ``good_seconds``): a connection or termination line, a command by its
        verb, or another line — as ``parse_line`` decides."""
        return self._untagged(timestamp, session_id, payload, text, text.encode(), offset, path,
                              None)

    def direction_from_name(self, path: str) -> Direction | None:
        """``SMTPOutboundConversation*`` → outbound; ``SMTPConversation*`` and
        ``SMTPProxyConversation*`` → inbound; anything else → None (decide from content)."""
        base = path.replace("\\", "/").rsplit("/", 1)[-1].lower()
        for prefix, direction in _FILE_DIRECTIONS:
            if base.startswith(prefix):
                return direction
        return None

    def parse_line(self, raw: bytes, offset: int, path: str) -> Event | Defect:
        if raw[-1:] == b"\r":
            raw = raw[:-1]
        try:
            text = raw.decode()
        except UnicodeDecodeError:
            return self._parse(raw, offset, path)
        # Fast path for the usual layout, with a simpler regex than ``_LINE`` (the date and time
        # are checked once per distinct second): it accepts a subset of what ``_LINE`` accepts
        # and splits it the same way. Anything else goes through ``_parse``, which decides.
        if text[:19] not in self._good_seconds:
            return self._parse(raw, offset, path, text)
        m = _FAST(text, 19)
        if m is None:
            return self._parse(raw, offset, path, text)
        sid, tag, code, payload = m.groups()
        if code is not None:
            return _new(Event, (text[:23], sid, _REPLY, payload, text, raw, offset, path,
                                None, False, None, None))
        if tag is not None:
            return _new(Event, (text[:23], sid, _COMMAND, payload, text, raw, offset, path,
                                None, False, None, None))
        return self._untagged(text[:23], sid, payload, text, raw, offset, path, None)

    def _parse(self, raw: bytes, offset: int, path: str, text: str | None = None) -> Event | Defect:
        """The general case: any line, with the full layout regex."""
        defect = None
        if text is None:
            try:
                text = raw.decode()
            except UnicodeDecodeError:
                text = raw.decode(errors="replace")
                defect = "invalid UTF-8 (decoded with replacement characters)"
        m = _LINE.match(text)
        if m is None:
            return self._defect(text, offset, path, "line matches no Xeams layout")
        ts, sid, tag, code = m.groups()
        if ts[:10] not in self._good_dates and not self._valid_date(ts[:10]):
            return self._defect(text, offset, path, f"impossible date {ts[:10]}")
        good = self._good_seconds
        if len(good) >= 4096:  # bounded: seconds repeat while sessions interleave, then move on
            good.clear()
        good.add(ts[:19])
        if code is not None:
            return Event(ts, sid, _REPLY, text[m.start(4):], text, raw, offset, path,
                         None, False, None, defect)
        payload = text[m.end():]
        if tag:
            return Event(ts, sid, _COMMAND, payload, text, raw, offset, path,
                         None, False, None, defect)
        return self._untagged(ts, sid, payload, text, raw, offset, path, defect)

    @staticmethod
    def _untagged(ts: str, sid: str, payload: str, text: str, raw: bytes, offset: int, path: str,
                  defect: str | None) -> Event:
        first = payload[:1]
        if first == "*":
            c = _connect_fields(payload)
            if c is not None:
                peer, secure, out = c
                return _new(Event, (ts, sid, EventKind.CONNECT, payload, text, raw, offset, path,
                                    peer, secure, out, defect))
        elif first == "~" and (_is_terminated(payload) or _TERMINATE.match(payload)):
            return _new(Event, (ts, sid, EventKind.TERMINATE, payload, text, raw, offset, path,
                                None, False, None, defect))
        elif payload.split(" ", 1)[0].upper() in _VERBS:
            return _new(Event, (ts, sid, EventKind.COMMAND, payload, text, raw, offset, path,
                                None, False, None, defect))
        return _new(Event, (ts, sid, EventKind.OTHER, payload, text, raw, offset, path,
                            None, False, None, defect))

    def _valid_date(self, day: str) -> bool:
        try:
            date(int(day[:4]), int(day[5:7]), int(day[8:10]))
        except ValueError:
            return False
        if len(self._good_dates) > 4096:  # bounded: a long-running daemon sees one date a day
            self._good_dates.clear()
        self._good_dates.add(day)
        return True

    @staticmethod
    def _defect(text: str, offset: int, path: str, reason: str) -> Defect:
        sid = _SESSION_ID.search(text, 0, 80)
        return Defect(path, offset, reason, excerpt(text), sid.group(1) if sid else None)


def _is_terminated(payload: str) -> bool:
    """Xeams' own termination text, which _TERMINATE matches (\\b holds before " " or the end)."""
    return (payload[:_TERMINATED_LEN] == _TERMINATED
            and payload[_TERMINATED_LEN:_TERMINATED_LEN + 1] in (" ", ""))


@functools.lru_cache(maxsize=1024)  # connection lines repeat (the same MX hosts all day)
def _connect_fields(payload: str) -> tuple[str | None, bool, bool] | None:
    """(peer, secure, connected out) of a connection line, None if it is not one."""
    c = _CONNECT.match(payload)
    if c is None:
        return None
    return c.group(3) or None, c.group(1) is not None, c.group(2).lower() == "to"


def make_format() -> XeamsFormat:
    return XeamsFormat()
