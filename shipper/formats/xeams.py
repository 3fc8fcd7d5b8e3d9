"""Xeams SMTP conversation logs: lines → ``Record``s (or ``Defect``s). Pure.

Layout (PRODUCT.md, "Input"; the seed transcript in ``samples/xeams/``)::

    2024-03-21 11:39:49,056 - [   7054286] ************ New (secure) connection to: 142.251.171.26
    2024-03-21 11:39:49,056 - [   7054286] S <-- EHLO mail.synametrics.com
    2024-03-21 11:39:49,170 - [   7054286] C --> 250-mx.google.com at your service, [162.255.85.54]
    2024-03-21 11:39:49,898 - [   7054286] ~~~~~~~~~~~~ Connection Terminated ( 842)

The direction tag says who wrote a line: ``S <--`` the mail server whose log it is, ``C -->``
what it read from its peer (PRODUCT.md explains this reading of tags that Xeams' pages
contest). Which of them is a reply is not decided here: that depends on the session's direction
(``shipper.smtp``). An untagged line is part of the dialogue when it starts with an SMTP verb or
a reply code, a connection or termination line by its markers, and a note otherwise.

Whole blocks of lines are split by one regex (``_SCAN_LF``/``_SCAN_CRLF``); a line in the usual
layout whose date and time ``_LINE`` has already accepted once becomes a record at once, any
other line goes through ``_LINE``, which decides.
"""

from __future__ import annotations

import functools
import re
from datetime import date

from shipper.cache import Bounded
from shipper.formats import excerpt
from shipper.lines import is_blank
from shipper.model import Connect, Defect, Direction, Kind, Record, Side
from shipper.smtp import COMMAND, VERBS, line_shape

DATASET = "xeams.smtp"

# One line, any variant: groups timestamp, session id, direction tag.
# Month/day/hour/minute/second ranges are checked here; impossible dates (Feb 30) in _valid_date.
_LINE = re.compile(
    r"(\d{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01]) (?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d,\d{3})"
    r" - \[\s*([^\]\s]+)\s*\] ?"
    r"(?:([SC] (?:<--|-->)) ?)?"
)
# A block of lines, each ending in "\n" (``_SCAN_CRLF``: in "\r\n"): per line the groups line,
# timestamp, its first 19 characters, session id, direction tag, payload for the usual layout
# (one space after "]", spaces and digits in the id), or only the last group, the line as it is,
# for any other line. ``.`` rather than ``[^\n]`` (it stops at "\n" all the same) is half the
# cost of the match. In a CRLF block a line ending in "\n" alone, or holding a "\r" elsewhere,
# is an "other" line, left to ``_LINE``.
_SCAN_LF = re.compile(
    r"^(?:(((.{19}),\d{3}) - \[ *(\d+)\] (?:([SC] (?:<--|-->)) ?)?(.*))|(.*))\n", re.M
).findall
_SCAN_CRLF = re.compile(
    r"^(?:(((.{19}),\d{3}) - \[ *(\d+)\] (?:([SC] (?:<--|-->)) ?)?([^\r\n]*))\r|(.*))\n",
    re.M,
).findall
# Who wrote a line, by its tag; any other tag (or none) says nothing we can trust.
_SIDES = {"S <--": Side.LOCAL, "C -->": Side.PEER, "S -->": None, "C <--": None, "": None, None: None}
_CONNECT = re.compile(r"\*+\s*New\s+(\(secure\)\s+)?connection\s+(to|from)\s*:?\s*(.*?)\s*$", re.IGNORECASE)
_TERMINATE = re.compile(r"~+\s*Connection\s+Terminated\b", re.IGNORECASE)
_SESSION_ID = re.compile(r"\[\s*(\d+)\s*\]")
_FILE_DIRECTIONS = (
    ("smtpoutboundconversation", Direction.OUTBOUND),
    ("smtpproxyconversation", Direction.INBOUND),
    ("smtpconversation", Direction.INBOUND),
)
_INVALID_UTF8 = "invalid UTF-8 (decoded with replacement characters)"
_PROTOCOL = Kind.PROTOCOL
_new = tuple.__new__  # a Record without NamedTuple's Python-level __new__: one per line


class XeamsFormat:
    name = "xeams"
    dataset = DATASET

    def __init__(self) -> None:
        # "YYYY-MM-DD HH:MM:SS" prefixes ``_LINE`` has accepted: a usual-layout line with one
        # of them needs no other check. Seconds repeat while sessions interleave, then move on.
        self._good_seconds: Bounded[str, bool] = Bounded(4096)

    def direction_from_name(self, path: str) -> Direction | None:
        """``SMTPOutboundConversation*`` → outbound; ``SMTPConversation*`` and
        ``SMTPProxyConversation*`` → inbound; anything else → None (decide from content)."""
        base = path.replace("\\", "/").rsplit("/", 1)[-1].lower()
        for prefix, direction in _FILE_DIRECTIONS:
            if base.startswith(prefix):
                return direction
        return None

    def parse_block(self, data: bytes, offset: int, path: str) -> tuple[list[Record], list[Defect]]:
        records: list[Record] = []
        defects: list[Defect] = []
        try:
            text = data.decode()
        except UnicodeDecodeError:  # line by line: only the bad lines are defects
            for raw in data.split(b"\n")[:-1]:
                if not is_blank(raw):
                    self._parse_line(raw, offset, path, records, defects)
                offset += len(raw) + 1
            return records, defects
        ascii_only = len(text) == len(data)
        crlf = "\r" in text
        newline = 2 if crlf else 1
        good = self._good_seconds
        append = records.append
        for line, ts, second, sid, tag, payload, other in (_SCAN_CRLF if crlf else _SCAN_LF)(text):
            if line:
                size = (len(line) if ascii_only else len(line.encode())) + newline
                if second not in good:
                    self._parse_line(line.encode(), offset, path, records, defects)
                elif tag:
                    append(_new(Record, (_PROTOCOL, sid, ts, _SIDES[tag], payload, line, offset,
                                         None, 0)))
                else:
                    append(_untagged(ts, sid, payload, line, offset))
            else:
                raw = other.encode()
                size = len(raw) + 1
                if not is_blank(raw):
                    self._parse_line(raw, offset, path, records, defects)
            offset += size
        return records, defects

    def _parse_line(self, raw: bytes, offset: int, path: str, records: list[Record],
                    defects: list[Defect]) -> None:
        """Any one line (without its "\\n"), with the full layout regex."""
        if raw[-1:] == b"\r":
            raw = raw[:-1]
        unclean = None
        try:
            text = raw.decode()
        except UnicodeDecodeError:
            text = raw.decode(errors="replace")
            unclean = _INVALID_UTF8
        m = _LINE.match(text)
        if m is None:
            defects.append(_defect(text, offset, path, "line matches no Xeams layout"))
            return
        ts, sid, tag = m.groups()
        if not _valid_date(ts[:10]):
            defects.append(_defect(text, offset, path, f"impossible date {ts[:10]}"))
            return
        self._good_seconds.put(ts[:19], True)
        payload = text[m.end():]
        if tag:
            records.append(Record(_PROTOCOL, sid, ts, _SIDES[tag], payload, text, offset))
        else:
            records.append(_untagged(ts, sid, payload, text, offset))
        if unclean is not None:
            defects.append(Defect(path, offset, unclean, excerpt(text), sid))


def _untagged(ts: str, sid: str, payload: str, text: str, offset: int) -> Record:
    """A line without direction tag: a connection or termination line, a line of the dialogue
    by its first word (whose writer the log does not say), or a note."""
    first = payload[:1]
    kind = Kind.NOTE
    connect = None
    if first == "*":
        connect = _connect(payload)
        if connect is not None:
            kind = Kind.CONNECT
    elif first == "~":
        if _TERMINATE.match(payload):
            kind = Kind.END
    elif payload.split(" ", 1)[0].upper() in VERBS or line_shape(payload) != COMMAND:
        kind = _PROTOCOL
    return Record(kind, sid, ts, None, payload, text, offset, connect)


@functools.lru_cache(maxsize=1024)  # connection lines repeat (the same MX hosts all day)
def _connect(payload: str) -> Connect | None:
    """What a connection line says; None if it is not one."""
    c = _CONNECT.match(payload)
    if c is None:
        return None
    return Connect(c.group(3) or None, c.group(1) is not None, c.group(2).lower() == "to")


@functools.lru_cache(maxsize=64)  # a log's dates: one a day
def _valid_date(day: str) -> bool:
    try:
        date(int(day[:4]), int(day[5:7]), int(day[8:10]))
    except ValueError:
        return False
    return True


def _defect(text: str, offset: int, path: str, reason: str) -> Defect:
    sid = _SESSION_ID.search(text, 0, 80)
    return Defect(path, offset, reason, excerpt(text), sid.group(1) if sid else None)


def make_format() -> XeamsFormat:
    return XeamsFormat()
