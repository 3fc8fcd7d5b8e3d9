"""Sessions → delivery documents (one per recipient per transaction), their ids and indices. Pure.

A document is a plain JSON-ready dict of nested objects; absent values are omitted (never
``None``). The fields are PRODUCT.md's table plus ``smtp.reason`` and ``smtp.incomplete``
(docs/CONTRACTS.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from shipper import reasons
from shipper.model import Direction, Outcome, Session, Transaction, Verdict

_DELIVERED = Verdict.DELIVERED
_INBOUND = Direction.INBOUND
# ECS event.outcome by verdict value (an Enum hashes in Python, its value in C)
_OUTCOMES = {verdict.value: verdict.outcome for verdict in Verdict}


class _Classifier(Protocol):
    def classify(self, code: str | None, enhanced: str | None, text: str | None,
                 stage: Any = None) -> str: ...


def build_documents(session: Session, *, host_name: str, dataset: str,
                    classifier: _Classifier | None = None) -> list[dict[str, Any]]:
    """The documents of one session: one per recipient of each transaction; one per
    transaction that got no recipient; one for a session that never reached MAIL.

    Each document gets its own dicts and lists: nothing mutable is shared between them. Keys
    are inserted in a fixed order (the JSON sent to OpenSearch follows it)."""
    classify = (classifier if classifier is not None else reasons.default_classifier()).classify
    common = _Common(session, host_name, dataset)
    return [_document(common, txn, recipient, outcome, classify)
            for txn, recipient, outcome in _parts(session)]


def _parts(session: Session) -> list[tuple[Transaction | None, str | None, Outcome]]:
    """(transaction, recipient, outcome) of each document, in order."""
    parts: list[tuple[Transaction | None, str | None, Outcome]] = []
    for txn in session.transactions:
        if txn.recipients:
            parts += [(txn, rcpt.address, rcpt.outcome) for rcpt in txn.recipients]
        else:
            parts.append((txn, None, txn.outcome))
    if not parts:
        assert session.outcome is not None
        parts.append((None, None, session.outcome))
    return parts


class _Common:
    """What the documents of one session share, worked out once."""

    __slots__ = ("direction", "event", "extensions", "helo", "host_name", "incomplete", "ip",
                 "log", "message_id", "next_queue_id", "queue_id", "remote", "role", "session_id",
                 "tls", "transcript")

    def __init__(self, session: Session, host_name: str, dataset: str) -> None:
        # ECS event.duration is in nanoseconds
        self.event = (session.start.iso, session.end.iso,
                      max(0, session.end.micros - session.start.micros) * 1000, dataset)
        self.direction = session.direction._value_  # not .value: a Python-level property
        self.session_id = session.session_id
        self.tls = session.tls
        self.transcript = "\n".join(session.lines)
        self.helo = session.helo
        self.ip = session.remote_ip
        self.remote = {k: v for k, v in (("ip", session.remote_ip), ("host", session.remote_host)) if v}
        self.extensions = session.extensions
        self.incomplete = session.incomplete
        self.log = (session.path, session.offset)
        self.host_name = host_name
        self.role = "source" if session.direction is _INBOUND else "destination"
        self.queue_id = session.queue_id
        self.message_id = session.message_id
        self.next_queue_id = session.next_queue_id


def _document(c: _Common, txn: Transaction | None, recipient: str | None, outcome: Outcome,
              classify: Callable[..., str]) -> dict[str, Any]:
    verdict = outcome.verdict
    reply = outcome.reply
    smtp: dict[str, Any] = {"verdict": verdict._value_, "stage": outcome.stage._value_,
                            "direction": c.direction, "session_id": c.session_id, "tls": c.tls,
                            "transcript": c.transcript}
    if reply is not None:
        smtp["reply"] = {"code": reply.code} if reply.code else {}  # "": the log omits it
        if reply.enhanced:
            smtp["reply"]["enhanced"] = reply.enhanced
        if reply.text:
            smtp["reply"]["text"] = reply.text
    detail = outcome.detail
    if detail:
        smtp["detail"] = detail
    if verdict is not _DELIVERED:
        # the stage lets the classifier tell e.g. a 554 greeting from a 554 after DATA
        smtp["reason"] = (classify(reply.code, reply.enhanced, reply.text, outcome.stage)
                          if reply is not None
                          else classify(None, outcome.status, detail, outcome.stage))
    if txn is not None:
        smtp["transaction"] = txn.index
    if c.helo:
        smtp["helo"] = c.helo
    if c.remote:
        smtp["remote"] = dict(c.remote)  # each document its own copy of what is mutable
    if c.extensions:
        smtp["extensions"] = list(c.extensions)
    if c.incomplete:
        smtp["incomplete"] = True
    if c.queue_id:
        smtp["queue_id"] = c.queue_id
    if c.next_queue_id:
        smtp["next_queue_id"] = c.next_queue_id
    start, end, duration, dataset = c.event
    doc: dict[str, Any] = {
        "@timestamp": reply.timestamp.iso if reply is not None else start,
        "event": {"start": start, "end": end, "duration": duration, "dataset": dataset,
                  "outcome": _OUTCOMES[verdict._value_]},
        "smtp": smtp,
        "log": {"file": {"path": c.log[0]}, "offset": c.log[1]},
        "host": {"name": c.host_name},
    }
    mail_from = txn.mail_from if txn is not None else None
    email: dict[str, Any] = {}
    if mail_from is not None:
        email["from"] = {"address": mail_from}
    if c.message_id:
        email["message_id"] = c.message_id
    if recipient is not None:
        email["to"] = {"address": recipient}
        domain = recipient.rpartition("@")[2].lower()
        if domain:
            smtp["recipient_domain"] = domain
    if email:
        doc["email"] = email
    if c.ip:
        doc[c.role] = {"ip": c.ip}
    return doc


def get_field(doc: dict[str, Any], dotted: str) -> Any:
    """The value at a dotted field name (``smtp.reply.code``) of a nested document, or None."""
    value: Any = doc
    for key in dotted.split("."):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value
