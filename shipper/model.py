"""The typed vocabulary of the parsing pipeline: events, defects, replies, sessions.

``bytes → Record | Defect`` (a format, ``shipper.formats``) ``→ Session`` (``shipper.sessions``
groups records, ``shipper.smtp`` follows the dialogue) ``→ documents`` (``shipper.documents``).
Everything here is immutable.

``Record`` and the per-session types are ``NamedTuple``s rather than frozen dataclasses: a
frozen dataclass costs a setattr per field to construct, a named tuple one tuple build, and a
session is a dozen of them. ``Defect`` (rare) and ``Transaction`` (whose field ``index`` would
shadow ``tuple.index``) stay frozen dataclasses.
"""

from __future__ import annotations

import enum
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import NamedTuple


class Direction(enum.Enum):
    """Which side of the conversation the logging server was on."""

    OUTBOUND = "outbound"  # we connected out and delivered (we are the SMTP client)
    INBOUND = "inbound"  # a peer connected to us (we are the SMTP server)
    # A hand-over inside the mail system that is not itself the receipt or the delivery of a
    # message (a content filter or relay on the same host, an address probe): the dashboards
    # and monitors count outbound and inbound documents only, so a message is never counted
    # twice because it passed through a filter. Only formats that see such hops use it.
    INTERNAL = "internal"


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


class Side(enum.Enum):
    """Who wrote a line of the dialogue, as the log says (Xeams: its direction tag): the mail
    server whose log it is, or the peer it talked to. Which of them sends commands depends on
    the session's direction; what a line *is* (a reply or a command) depends on who wrote it
    first and on its content second (PRODUCT.md, "Input")."""

    LOCAL = "local"  # written by the logging server (Xeams: "S <--")
    PEER = "peer"  # read from the peer (Xeams: "C -->")


class Kind(enum.Enum):
    """What a log line is to the session it belongs to."""

    CONNECT = "connect"  # the connection opened (Xeams: "************ New connection to: IP")
    PROTOCOL = "protocol"  # a line of the SMTP dialogue: a command or a reply
    END = "end"  # the connection ended (Xeams: "~~~~~~~~~~~~ Connection Terminated ( N)")
    NOTE = "note"  # any other well-formed line of the session: kept in the transcript only


class Connect(NamedTuple):
    """What a connection line says."""

    peer: str | None  # the peer as logged (an address, a name, both)
    secure: bool  # the connection was already secured (implicit TLS)
    outbound: bool | None  # we connected out (True), the peer connected to us (False), unknown


class Record(NamedTuple):
    """One log line, as a format reads it. A named tuple rather than a frozen dataclass: one
    is made per line, and a named tuple is one tuple build (a frozen dataclass pays a setattr
    per field)."""

    kind: Kind
    session_id: str
    timestamp: str  # local time exactly as logged: "YYYY-MM-DD HH:MM:SS,mmm"
    side: Side | None  # PROTOCOL: who wrote it; None when the log does not say
    payload: str  # the protocol part (after the direction tag), or the note
    text: str  # the whole line, decoded (invalid UTF-8 replaced), without its terminator
    offset: int  # byte offset of the line's first byte in its file (decompressed, for .gz)
    connect: Connect | None = None  # CONNECT only
    fold: int = 0  # PEP 495: 1 in the second pass of a repeated local hour (set by the grouping)


class Collected(NamedTuple):
    """One session's records, in order, with where they were read: what ``shipper.sessions``
    groups and ``shipper.smtp`` follows."""

    session_id: str
    direction: Direction
    path: str  # the file of its first line, as documents name it
    offset: int  # of its first line in that file
    files: dict[Hashable, int]  # every source holding a line of it → offset of its first line there
    records: list[Record]
    connect: Connect | None  # what its (last) connection line said
    incomplete: bool  # no termination line


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


class Moment(NamedTuple):
    """A point in time as documents write it: ISO 8601 to the millisecond with its UTC offset
    ("2024-03-21T11:39:49.869-04:00"), and the POSIX time in microseconds (for durations).
    Made once from the log's own text (``shipper.localtime``), never reformatted per document."""

    iso: str
    micros: int


class Reply(NamedTuple):
    """One complete (possibly multi-line) SMTP reply."""

    code: str  # from the last line (RFC 5321 §4.2.1)
    enhanced: str | None  # RFC 3463 x.y.z at the start of the text, when its class matches
    text: str  # text after the code; continuation lines joined with a space
    timestamp: Moment  # of the reply's last line

    @property
    def positive(self) -> bool:
        """2xx or 3xx: the conversation may go on."""
        return self.code[0] in "23"


class Outcome(NamedTuple):
    """The fate of one recipient (or of a transaction/session that got no recipient)."""

    verdict: Verdict
    stage: Stage
    reply: Reply | None = None  # the deciding reply; None for FAILED (no reply is invented)
    # The mail server's own explanation when no reply of the peer decided (Postfix: "connect
    # to ...: Connection refused", "Host or domain name not found"); never a peer's reply.
    detail: str | None = None
    # What the server's own explanation classifies by when there is no reply: its RFC 3463
    # status (Postfix's dsn=), which is never shown as the peer's enhanced code.
    status: str | None = None


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
    line was read; ``files`` maps every source (a file: its path, or the daemon's followed-file
    object) holding a line of this session to the byte offset of its first line *in that
    source* (a session may span a rotation, so two files). A file position is safe to
    checkpoint once it is past ``files[source]`` of every unfinished session.
    """

    session_id: str
    direction: Direction
    path: str
    offset: int
    files: Mapping[Hashable, int]
    start: Moment
    end: Moment
    incomplete: bool  # no termination line (log cut, idle flush, end of input)
    lines: tuple[str, ...]  # the transcript as logged, secrets redacted
    remote_ip: str | None = None
    remote_host: str | None = None
    helo: str | None = None
    tls: bool = False
    extensions: tuple[str, ...] = ()
    tags_agree: bool | None = None  # its first exchange fits who-wrote-what; None: nothing to tell
    transactions: tuple[Transaction, ...] = ()
    outcome: Outcome | None = None  # for a session without any transaction
    # Formats whose logs join lines by a queue ID (Postfix): the message's queue ID, its
    # Message-ID header, and the queue ID it went on under after a hop (Direction.INTERNAL).
    queue_id: str | None = None
    message_id: str | None = None
    next_queue_id: str | None = None
