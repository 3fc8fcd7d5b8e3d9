"""A session's records → a ``Session``: the SMTP state machine. Pure.

The dialogue is followed the way the peers followed it:

* Every command is queued and every final reply answers the oldest queued command
  (RFC 5321 §4.1.1; with PIPELINING, RFC 2920 §3, a client sends MAIL, RCPTs and DATA before
  the first reply arrives, and the replies come back in the same order).
* ``250-...`` lines are continuations; the reply is complete at the line with a space or bare
  code, whose code counts (RFC 5321 §4.2.1).
* A reply with nothing queued before any other line is the greeting. ``354`` to DATA and ``334``
  to AUTH are intermediate: the end-of-data reply (the body itself is not logged) or the next
  AUTH step is then awaited first.
* MAIL opens a transaction; RSET or a second MAIL abandons it (RFC 5321 §4.1.1.5). What each
  recipient's path of replies means is ``shipper.verdicts``'s to say.
* ``421`` ends the session (RFC 5321 §3.8): nothing after it decides.

Who wrote a line decides what it can be (PRODUCT.md, "Input"): everything the client side
wrote is a command, whatever it looks like, so that a peer cannot forge or shift a reply; a
line of the server side is a reply when it has a reply's shape (``line_shape``) and otherwise
decides nothing; only a line whose writer the log does not say is judged by its shape alone.

Credentials never reach a document (RFC 4954 §4): inside an AUTH exchange — from the AUTH
command, or from any ``334`` challenge, until a reply that is not ``334`` — every line the
client writes that is not an SMTP command is redacted, whatever the alignment of replies and
commands; so are AUTH's initial response and any other client line that is a lone token but
no SMTP command (a credential of an exchange the log does not show, e.g. in a file that
begins inside one).
"""

from __future__ import annotations

import operator
import re
from collections import deque
from typing import NamedTuple

from shipper import addresses, verdicts
from shipper.localtime import LocalTime
from shipper.model import (
    Collected,
    Direction,
    Kind,
    Outcome,
    Recipient,
    Record,
    Session,
    Side,
    Stage,
    Transaction,
)
from shipper.verdicts import ASSUMED_OK, Closing, RawReply

REDACTED = "[redacted]"
_PROTOCOL = Kind.PROTOCOL
_TEXT = operator.attrgetter("text")
# Enum members read for every command and reply, as module names: the enum metaclass serves
# them as class attributes in Python, at ~0.1 µs each (bench/parse_bench.py --stages).
_AT_CONNECT, _AT_HELO, _AT_STARTTLS, _AT_AUTH = Stage.CONNECT, Stage.HELO, Stage.STARTTLS, Stage.AUTH
_AT_MAIL, _AT_RCPT, _AT_DATA, _AT_DOT = Stage.MAIL, Stage.RCPT, Stage.DATA, Stage.DOT
_OUTBOUND, _LOCAL, _PEER = Direction.OUTBOUND, Side.LOCAL, Side.PEER


# SMTP commands (RFC 5321 §4.1, 1869, 2645, 3030, 3207, 4468, 4954, and the XCLIENT/XFORWARD
# extensions of Postfix): a client line that starts with none of these is not a command.
VERBS = frozenset(["EHLO", "HELO", "LHLO", "MAIL", "RCPT", "DATA", "BDAT", "BURL", "RSET", "NOOP",
                   "QUIT", "VRFY", "EXPN", "HELP", "STARTTLS", "AUTH", "ETRN", "ATRN", "TURN",
                   "XCLIENT", "XFORWARD"])

# What a line of the dialogue is (``line_shape``).
COMMAND = 0
CONTINUED = 1  # a line of a multi-line reply with more to come: "250-..."
LAST = 2  # the last (or only) line of a reply: "250 ...", "250"


def line_shape(payload: str) -> int:
    """``LAST`` or ``CONTINUED`` for a reply line, ``^\\d{3}([ -]|$)`` (RFC 5321 §4.2, the
    hyphen marking a continuation), else ``COMMAND``."""
    c = payload[3:4]
    if c == "-":
        return CONTINUED if payload[:3].isdecimal() else COMMAND
    if (c == " " or (c == "" and len(payload) == 3)) and payload[:3].isdecimal():
        return LAST
    return COMMAND


class _Step:
    """What a queued command awaits the reply to. Plain ints, not an Enum: they are compared
    for every reply, and the enum metaclass serves its members in Python (~0.1 µs each)."""

    GREETING, HELO, STARTTLS, AUTH, MAIL, RCPT, DATA = range(7)
    DOT = 7  # the end-of-data reply, after 354
    BDAT, BDAT_LAST = 8, 9
    OTHER = 10  # RSET, NOOP, VRFY, QUIT, ...: their replies decide nothing (except 421)


# The stage a step's reply decides, for the steps that decide one.
_STAGES = {_Step.GREETING: Stage.CONNECT, _Step.HELO: Stage.HELO, _Step.STARTTLS: Stage.STARTTLS,
           _Step.AUTH: Stage.AUTH, _Step.MAIL: Stage.MAIL, _Step.RCPT: Stage.RCPT,
           _Step.DATA: Stage.DATA, _Step.DOT: Stage.DOT, _Step.BDAT: Stage.DATA,
           _Step.BDAT_LAST: Stage.DOT}


class _Rcpt:
    __slots__ = ("address", "reply")

    def __init__(self, address: str) -> None:
        self.address = address
        self.reply: RawReply | None = None


class _Txn:
    __slots__ = ("close", "data_reply", "dot_reply", "index", "mail_from", "mail_reply",
                 "progress", "recipients")

    def __init__(self, index: int, mail_from: str | None, assumed: bool = False) -> None:
        self.index = index
        self.mail_from = mail_from
        self.mail_reply: RawReply | None = ASSUMED_OK if assumed else None
        self.recipients: list[_Rcpt] = []
        self.data_reply: RawReply | None = None
        self.dot_reply: RawReply | None = None
        self.progress = _AT_MAIL
        self.close: Closing | None = None


class _Pending(NamedTuple):
    """A queued command: the step it awaits, and the transaction or recipient it is about."""

    step: int  # a _Step
    txn: _Txn | None = None
    rcpt: _Rcpt | None = None


# The steps outside a transaction carry nothing else: one of each serves every session.
_GREETING, _HELO, _STARTTLS, _AUTH, _OTHER = (
    _Pending(step) for step in (_Step.GREETING, _Step.HELO, _Step.STARTTLS, _Step.AUTH, _Step.OTHER))


class _Dialogue:
    """One session's dialogue while it is followed."""

    __slots__ = ("close", "extensions", "fail", "helo", "in_auth", "in_data", "lines",
                 "progress", "queue", "server_name", "talked", "tls", "txn", "txns")

    def __init__(self, lines: list[str], tls: bool) -> None:
        self.lines = lines  # the transcript, redacted in place
        self.tls = tls
        self.helo: str | None = None
        self.server_name: str | None = None
        self.extensions: tuple[str, ...] = ()
        self.queue: deque[_Pending] = deque()
        self.txns: list[_Txn] = []
        self.txn: _Txn | None = None  # the open (not abandoned) transaction
        self.fail: Closing | None = None  # the first refusal outside a transaction
        self.close: Closing | None = None  # the 421 that ended the session
        self.progress = _AT_CONNECT
        self.in_auth = False  # inside an AUTH exchange: the client's lines are credentials
        self.in_data = False  # between 354 and the end-of-data reply
        self.talked = False  # a command or reply has been seen

    # -- replies --------------------------------------------------------------------------------

    def reply(self, r: RawReply) -> None:
        """A complete reply: it answers the oldest queued command."""
        self.in_data = False
        self.in_auth = r[0] == "334"  # a challenge: the client's next line is a credential
        if self.queue:
            pending = self.queue.popleft()
        elif not self.talked:
            pending = _GREETING
        else:
            pending = _OTHER  # unsolicited (e.g. a 421 idle timeout)
        self.talked = True
        if self.close is not None:
            return  # the server already ended the session: nothing after it decides
        code = r[0]
        if code[0] not in "2345":
            return  # not an SMTP reply code (RFC 5321 §4.2.1): it answered, but decides nothing
        step, txn, rcpt = pending
        if rcpt is not None:
            rcpt.reply = r
        elif txn is not None:
            self._transaction_reply(step, txn, r)
        else:
            self._session_reply(step, r)
        if code == "421":
            self._closed(r, pending)

    def _transaction_reply(self, step: int, txn: _Txn, r: RawReply) -> None:
        if step == _Step.MAIL:
            txn.mail_reply = r
        elif step == _Step.DATA:
            txn.data_reply = r
            if r[0] == "354":
                self.queue.appendleft(_Pending(_Step.DOT, txn))
                txn.progress = _AT_DOT
                self.in_data = True
        elif step == _Step.DOT:
            txn.dot_reply = r
        elif step == _Step.BDAT:
            if txn.data_reply is None or txn.data_reply[0][0] in "23":
                txn.data_reply = r
        elif step == _Step.BDAT_LAST:
            if txn.data_reply is None:
                txn.data_reply = ASSUMED_OK
            txn.dot_reply = r

    def _session_reply(self, step: int, r: RawReply) -> None:
        code = r[0]
        positive = code[0] in "23"
        if step == _Step.HELO:
            if code[0] == "2":
                self.extensions = tuple([t.strip() for t in r[1][1:] if t.strip()])
                if self.server_name is None:
                    self.server_name = addresses.first_word(r[1][0])
            else:
                self._refused(r, _AT_HELO)
        elif step == _Step.GREETING:
            if positive:  # a refusal's first word is its status code, not a name
                self.server_name = addresses.first_word(r[1][0])
            else:
                self._refused(r, _AT_CONNECT)
        elif step == _Step.STARTTLS:
            if code == "220":
                self.tls = True
                self.extensions = ()  # RFC 3207 §4.2: the client must forget what it learned
            else:
                self._refused(r, _AT_STARTTLS)
        elif step == _Step.AUTH:
            if code == "334":
                self.queue.appendleft(_AUTH)
            elif not positive:
                self._refused(r, _AT_AUTH)

    def _refused(self, r: RawReply, stage: Stage) -> None:
        if self.fail is None:
            self.fail = (r, stage)

    def _closed(self, r: RawReply, pending: _Pending) -> None:
        """A 421: the session is over, and the transactions it touched are closed by it."""
        current = self.txn
        stage = _STAGES.get(pending.step)
        if stage is None:
            stage = current.progress if current is not None else self.progress
        self.close = (r, stage)
        for t in (pending.txn, current):
            if t is not None and t.close is None:
                t.close = (r, stage)
        self.queue.clear()

    # -- commands -------------------------------------------------------------------------------

    def command(self, i: int, payload: str) -> None:
        """The command on line ``i`` (a pending multi-line reply is already taken)."""
        if self.in_auth and payload.split(" ", 1)[0].upper() not in VERBS:
            # an answer to a challenge: a credential (an SMTP command is still one: a server
            # that sends 334 out of turn must not hide the client's commands)
            self.lines[i] = _redact(self.lines[i], payload, REDACTED)
            return
        if self.in_data:
            return  # a body line (Xeams does not log the body; a variant might)
        self.talked = True
        verb = payload[:4].upper()
        if verb == "RCPT":
            self._recipient(payload)
        elif verb == "MAIL":
            self.queue.append(_Pending(_Step.MAIL, self._new_txn(addresses.mail_address(payload))))
        elif verb == "DATA" or verb == "BDAT":
            self._data(verb, payload)
        elif verb == "EHLO" or verb == "HELO":
            self.helo = payload[5:].strip() or self.helo
            self.progress = _AT_HELO
            self.queue.append(_HELO)
        elif verb == "STAR" and payload[:8].upper() == "STARTTLS":
            self.progress = _AT_STARTTLS
            self.queue.append(_STARTTLS)
        elif verb == "AUTH":
            words = payload.split(None, 2)
            if len(words) > 2:  # AUTH mechanism initial-response (RFC 4954 §4)
                self.lines[i] = _redact(self.lines[i], payload, f"{words[0]} {words[1]} {REDACTED}")
            self.progress = _AT_AUTH
            self.queue.append(_AUTH)
            self.in_auth = True
        else:  # QUIT, NOOP, VRFY, EXPN, HELP, anything unknown: answered, decides nothing
            if verb == "RSET":
                self.txn = None
            elif _lone_token(payload):  # no command: a credential of an exchange not logged
                self.lines[i] = _redact(self.lines[i], payload, REDACTED)
            self.queue.append(_OTHER)

    def _recipient(self, payload: str) -> None:
        txn = self.txn
        if txn is None:  # RCPT without a logged MAIL: the log began mid-transaction
            txn = self._new_txn(None, assumed=True)
        rcpt = _Rcpt(addresses.mail_address(payload) or "")
        txn.recipients.append(rcpt)
        if txn.progress is _AT_MAIL:
            txn.progress = _AT_RCPT
        self.queue.append(_Pending(_Step.RCPT, txn, rcpt))

    def _data(self, verb: str, payload: str) -> None:
        txn = self.txn
        if txn is None:
            self.queue.append(_OTHER)
        elif verb == "DATA":
            txn.progress = _AT_DATA
            self.queue.append(_Pending(_Step.DATA, txn))
        else:  # BDAT size [LAST] (RFC 3030 §2)
            last = "LAST" in payload.upper().split()[2:]
            txn.progress = _AT_DOT if last else _AT_DATA
            self.queue.append(_Pending(_Step.BDAT_LAST if last else _Step.BDAT, txn))

    def _new_txn(self, mail_from: str | None, assumed: bool = False) -> _Txn:
        txn = _Txn(len(self.txns), mail_from, assumed)
        self.txns.append(txn)
        self.txn = txn
        return txn


def follow(collected: Collected, times: LocalTime) -> Session:
    """Follow the dialogue of a finished session's records, in order, and judge it."""
    records = collected.records
    connect = collected.connect
    client = _LOCAL if collected.direction is _OUTBOUND else _PEER
    d = _Dialogue(list(map(_TEXT, records)), connect.secure if connect is not None else False)
    parts: list[str] = []  # the texts of a multi-line reply so far
    last_part = ""  # the last continuation line's payload (its code counts if the reply is cut)
    for i, (kind, _sid, ts, side, payload, _text, _offset, _connect, fold) in enumerate(records):
        if kind is not _PROTOCOL:
            continue
        shape = COMMAND if side is client else line_shape(payload)
        if shape == COMMAND and side is not client and side is not None:
            continue  # the server wrote it, but it is no reply: it decides nothing
        if shape == CONTINUED:  # most reply lines are (EHLO)
            parts.append(payload[4:])
            last_part = payload
        elif shape == LAST:
            if parts:  # the last line of a multi-line reply
                parts.append(payload[4:])
                d.reply((payload[:3], parts, ts, fold))
                parts = []
            else:  # a one-line reply: most replies are
                d.reply((payload[:3], [payload[4:]], ts, fold))
        else:
            if parts:  # a multi-line reply interrupted by a command: take what came as the reply
                d.reply((last_part[:3], parts, ts, fold))
                parts = []
            d.command(i, payload)
    return _session(collected, d, times, _tags_agree(records, client))


def _tags_agree(records: list[Record], client: Side) -> bool | None:
    """Whether the session's first exchange fits the reading of who wrote what: the client
    side's first line no reply, or the server side's first line no command. None when the
    session shows no line of both sides to tell."""
    client_first = server_first = None
    for r in records:
        if r.kind is _PROTOCOL and r.side is not None:
            if r.side is client and client_first is None:
                client_first = r.payload
            elif r.side is not client and server_first is None:
                server_first = r.payload
            if client_first is not None and server_first is not None:
                swapped = (line_shape(client_first) != COMMAND
                           and server_first.split(" ", 1)[0].upper() in VERBS)
                return not swapped
    return None


# What a Java mail server logs when it could not connect at all (java.net exceptions).
_CONNECT_FAILED = re.compile(r"connection refused|connect timed out|unable to connect|could not connect|"
                             r"no route to host|network is unreachable|unknownhost", re.IGNORECASE)


def dialogue_ended(records: list[Record], direction: Direction) -> bool:
    """Whether a session's lines so far plainly end its dialogue, termination line or not: the
    server's last word was 221 (closing, RFC 5321 §4.2.2) or 421 (closing down, §3.8), or
    the log says the connection could not be made."""
    client = _LOCAL if direction is _OUTBOUND else _PEER
    for r in reversed(records):
        if r.kind is _PROTOCOL and r.side is not client:
            return r.payload[:3] in ("221", "421") and line_shape(r.payload) == LAST
        if r.kind is Kind.NOTE and _CONNECT_FAILED.search(r.payload):
            return True
    return False


def _lone_token(payload: str) -> bool:
    """One word that is no SMTP verb: what SASL credentials look like (base64, RFC 4954 §4)."""
    word = payload.strip()
    return bool(word) and " " not in word and word.upper() not in VERBS


def _session(collected: Collected, d: _Dialogue, times: LocalTime, tags_agree: bool | None) -> Session:
    remote_ip, peer_host = addresses.peer(collected.connect.peer if collected.connect else None)
    if collected.direction is _OUTBOUND:
        remote_host = d.server_name or peer_host
    else:
        remote_host = d.helo or peer_host
    first, last = collected.records[0], collected.records[-1]
    start = times.at(first.timestamp, first.fold)
    return Session(
        session_id=collected.session_id,
        direction=collected.direction,
        path=collected.path,
        offset=collected.offset,
        files=dict(collected.files),
        start=start,
        end=start if last is first else times.at(last.timestamp, last.fold),
        incomplete=collected.incomplete,
        lines=tuple(d.lines),
        remote_ip=remote_ip,
        remote_host=remote_host,
        helo=d.helo,
        tls=d.tls,
        extensions=d.extensions,
        tags_agree=tags_agree,
        transactions=tuple([_transaction(t, times) for t in d.txns]),
        outcome=None if d.txns else verdicts.session_outcome(d.fail, d.close, d.progress, times),
    )


def _transaction(t: _Txn, times: LocalTime) -> Transaction:
    recipients = tuple([
        Recipient(r.address, verdicts.path_outcome(
            ((_AT_MAIL, t.mail_reply), (_AT_RCPT, r.reply), (_AT_DATA, t.data_reply),
             (_AT_DOT, t.dot_reply)), t.progress, t.close, times))
        for r in t.recipients])
    if recipients:
        outcome: Outcome = recipients[0].outcome
    else:
        outcome = verdicts.path_outcome(((_AT_MAIL, t.mail_reply),), _AT_MAIL, t.close, times)
    return Transaction(t.index, t.mail_from, recipients, outcome)


def _redact(text: str, payload: str, replacement: str) -> str:
    """The logged line with its payload replaced (the prefix — time, id, tag — kept)."""
    return text[: len(text) - len(payload)] + replacement
