"""The typed vocabulary of the parsing pipeline: events, defects, replies, sessions.

``lines → Event | Defect`` (a format module) ``→ Session`` (``shipper.conversation``)
``→ documents`` (``shipper.documents``). Everything here is immutable.

``Event`` and the per-session types are ``NamedTuple``s rather than frozen dataclasses on
purpose: a frozen dataclass costs ~0.1 µs per field to construct (``object.__setattr__``
each), a named tuple one tuple build; a session with its transactions, recipients, outcomes
and replies is a dozen of them, a measurable share of the per-session budget (see
``bench/parse_bench.py``). ``Defect`` (rare) and ``Transaction`` (whose field ``index`` would
shadow ``tuple.index``) stay frozen dataclasses.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple


class Direction(enum.Enum):
    """Which side of the conversation the logging server was on."""

    OUTBOUND = "outbound"  # we connected out and delivered (we are the SMTP client)
    INBOUND = "inbound"  # a peer connected to us (we are the SMTP server)


class Verdict(enum.Enum):
    """Fate of one recipient, seen from the sending side (PRODUCT.md, "Verdict")."""

    DELIVERED = "delivered"
    REJECTED = "rejected"
    DEFERRED = "deferred"
    FAILED = "failed"

    @property
    def outcome(self) -> str:
        """ECS ``event.outcome`` for this verdict."""
        return _OUTCOMES[self]


_OUTCOMES = {
    Verdict.DELIVERED: "success",
    Verdict.REJECTED: "failure",
    Verdict.FAILED: "failure",
    Verdict.DEFERRED: "unknown",
}


class Stage(enum.Enum):
    """The SMTP step whose reply decided (or that was in progress when the log broke off)."""

    CONNECT = "connect"  # the greeting
    HELO = "helo"  # EHLO / HELO
    STARTTLS = "starttls"
    AUTH = "auth"
    MAIL = "mail"
    RCPT = "rcpt"
    DATA = "data"  # the DATA command (or a non-final BDAT chunk)
    DOT = "dot"  # the end-of-data reply (or the reply to ``BDAT n LAST``)


class EventKind(enum.Enum):
    CONNECT = "connect"  # "************ New (secure) connection to: IP"
    COMMAND = "command"  # anything on a protocol line that is not a reply line
    REPLY = "reply"  # ^\d{3}([ -]|$)
    TERMINATE = "terminate"  # "~~~~~~~~~~~~ Connection Terminated ( N)"
    OTHER = "other"  # a well-formed log line that is none of the above (kept in the transcript)


class Event(NamedTuple):
    """One parsed log line. ``text`` is the whole line decoded (UTF-8, invalid bytes replaced,
    line terminator removed); ``payload`` is its protocol part (after the direction tag)."""

    timestamp: str  # local time exactly as logged: "YYYY-MM-DD HH:MM:SS,mmm"
    session_id: str
    kind: EventKind
    payload: str
    text: str
    raw: bytes
    offset: int  # byte offset of the line's first byte in its file (decompressed stream for .gz)
    path: str
    peer: str | None = None  # CONNECT only: the peer as logged
    secure: bool = False  # CONNECT only: "(secure)"
    connected_out: bool | None = None  # CONNECT only: "to:" → True, "from:" → False
    defect: str | None = None  # the line was usable but not clean (e.g. invalid UTF-8)


@dataclass(frozen=True, slots=True)
class Defect:
    """A line that could not be (fully) understood. Kept as data, reported, never raised
    (unless ``--strict``)."""

    path: str
    offset: int
    reason: str
    excerpt: str  # the line, decoded with replacement, secrets masked, cut short
    session_id: str | None = None

    def __str__(self) -> str:
        sid = f" session {self.session_id}" if self.session_id else ""
        return f"{self.path}:{self.offset}:{sid} {self.reason}: {self.excerpt!r}"


class Reply(NamedTuple):
    """One complete (possibly multi-line) SMTP reply."""

    code: str  # from the last line (RFC 5321 §4.2.1)
    enhanced: str | None  # RFC 3463 x.y.z at the start of the text, when its class matches
    text: str  # text after the code; continuation lines joined with a space
    timestamp: datetime  # of the reply's last line, zone-aware

    @property
    def positive(self) -> bool:
        """2xx or 3xx: the conversation may go on."""
        return self.code[0] in "23"


class Outcome(NamedTuple):
    """The fate of one recipient (or of a transaction/session that got no recipient)."""

    verdict: Verdict
    stage: Stage
    reply: Reply | None = None  # the deciding reply; None for FAILED (no reply is invented)


class Recipient(NamedTuple):
    address: str
    outcome: Outcome


@dataclass(frozen=True, slots=True)
class Transaction:
    """One MAIL transaction. ``outcome`` is for the transaction itself when it has no recipient
    (e.g. MAIL FROM rejected before any RCPT was sent)."""

    index: int
    mail_from: str | None  # "" for the null sender; None when the MAIL command is not in the log
    recipients: tuple[Recipient, ...]
    outcome: Outcome


class Session(NamedTuple):
    """One SMTP connection as assembled from the log.

    Positions, for the daemon's checkpoints: ``path``/``offset`` is where the session's first
    line was read; ``files`` maps every file holding a line of this session to the byte offset
    of its first line *in that file* (a session may span a rotation, so two files). A file
    position is safe to checkpoint once it is past ``files[path]`` of every unfinished session.
    """

    session_id: str
    direction: Direction
    path: str
    offset: int
    files: Mapping[str, int]
    start: datetime
    end: datetime
    incomplete: bool  # no termination line (log cut, idle flush, end of input)
    lines: tuple[str, ...]  # the transcript as logged, secrets redacted
    remote_ip: str | None = None
    remote_host: str | None = None
    helo: str | None = None
    tls: bool = False
    extensions: tuple[str, ...] = ()
    transactions: tuple[Transaction, ...] = ()
    outcome: Outcome | None = None  # for a session without any transaction
