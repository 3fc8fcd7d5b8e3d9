"""Sessions → delivery documents (one per recipient per transaction), their ids and indices. Pure.

A document is a plain JSON-ready dict of nested objects; absent values are omitted (never
``None``). The fields are PRODUCT.md's table plus ``smtp.reason`` and ``smtp.incomplete``
(docs/CONTRACTS.md).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from shipper import reasons
from shipper.model import Direction, Outcome, Session, Transaction, Verdict


class _Classifier(Protocol):
    def classify(self, code: str | None, enhanced: str | None, text: str | None,
                 stage: Any = None) -> str: ...


_DELIVERED = Verdict.DELIVERED
_OUTCOMES = {verdict.value: verdict.outcome for verdict in Verdict}  # by value: Enum hashes slowly


def _iso(dt: datetime) -> str:
    return dt.isoformat(timespec="milliseconds")


def build_documents(session: Session, *, host_name: str, dataset: str,
                    classifier: _Classifier | None = None) -> list[dict[str, Any]]:
    """The documents of one session: one per recipient of each transaction; one per
    transaction that got no recipient; one for a session that never reached MAIL."""
    shared = _Shared(session, host_name, dataset,
                     classifier.classify if classifier is not None else reasons.classify)
    docs: list[dict[str, Any]] = []
    append = docs.append
    for txn in session.transactions:
        if txn.recipients:
            for rcpt in txn.recipients:
                append(shared.document(txn, rcpt.address, rcpt.outcome))
        else:
            append(shared.document(txn, None, txn.outcome))
    if not session.transactions:
        assert session.outcome is not None
        append(shared.document(None, None, session.outcome))
    return docs


class _Shared:
    """What every document of one session has in common, computed once per session (time
    zone conversions and ISO strings cost microseconds each; a session may have many
    recipients). Each document still gets its own dicts: nothing mutable is shared."""

    __slots__ = ("classify", "dataset", "direction", "duration", "end", "extensions", "helo",
                 "host_name", "incomplete", "ip", "offset", "path", "remote_host", "role",
                 "session", "session_id", "start", "tls", "transcript")

    def __init__(self, session: Session, host_name: str, dataset: str,
                 classify: Callable[..., str]) -> None:
        self.session = session
        self.host_name = host_name
        self.dataset = dataset
        self.classify = classify
        self.transcript = "\n".join(session.lines)
        start, end = session.start, session.end
        self.start = _iso(start)
        self.end = self.start if end is start else _iso(end)
        # aware datetimes sharing one tzinfo subtract as wall times (ignoring fold): go through UTC
        delta = end.astimezone(UTC) - start.astimezone(UTC)
        self.duration = max(0, (delta.days * 86_400 + delta.seconds) * 1_000_000
                            + delta.microseconds) * 1000
        self.direction = session.direction._value_
        self.session_id = session.session_id
        self.tls = session.tls
        self.helo = session.helo
        self.ip = session.remote_ip
        self.remote_host = session.remote_host
        self.extensions = session.extensions
        self.incomplete = session.incomplete
        self.path = session.path
        self.offset = session.offset
        self.role = "source" if session.direction is Direction.INBOUND else "destination"

    def document(self, txn: Transaction | None, recipient: str | None,
                 outcome: Outcome) -> dict[str, Any]:
        reply = outcome.reply
        verdict = outcome.verdict
        # ``_value_``: Enum.value is a Python-level property, read a few times per document
        verdict_value = verdict._value_
        smtp: dict[str, Any] = {
            "verdict": verdict_value,
            "stage": outcome.stage._value_,
            "direction": self.direction,
            "session_id": self.session_id,
            "tls": self.tls,
            "transcript": self.transcript,
        }
        if reply is not None:
            smtp_reply = {"code": reply.code}
            if reply.enhanced:
                smtp_reply["enhanced"] = reply.enhanced
            if reply.text:
                smtp_reply["text"] = reply.text
            smtp["reply"] = smtp_reply
        if verdict is not _DELIVERED:
            # the stage lets the classifier tell e.g. a 554 greeting from a 554 after DATA
            if reply is not None:
                smtp["reason"] = self.classify(reply.code, reply.enhanced, reply.text,
                                               outcome.stage)
            else:
                smtp["reason"] = self.classify(None, None, None, outcome.stage)
        if txn is not None:
            smtp["transaction"] = txn.index
        if self.helo:
            smtp["helo"] = self.helo
        remote = {}
        if self.ip:
            remote["ip"] = self.ip
        if self.remote_host:
            remote["host"] = self.remote_host
        if remote:
            smtp["remote"] = remote
        if self.extensions:
            smtp["extensions"] = list(self.extensions)
        if self.incomplete:
            smtp["incomplete"] = True

        doc: dict[str, Any] = {
            "@timestamp": _iso(reply.timestamp) if reply is not None else self.start,
            "event": {
                "start": self.start,
                "end": self.end,
                "duration": self.duration,
                "dataset": self.dataset,
                "outcome": _OUTCOMES[verdict_value],
            },
            "smtp": smtp,
            "log": {"file": {"path": self.path}, "offset": self.offset},
            "host": {"name": self.host_name},
        }
        email: dict[str, Any] = {}
        if txn is not None and txn.mail_from is not None:
            email["from"] = {"address": txn.mail_from}
        if recipient is not None:
            email["to"] = {"address": recipient}
            domain = recipient.rpartition("@")[2].lower()
            if domain:
                smtp["recipient_domain"] = domain
        if email:
            doc["email"] = email
        if self.ip:
            doc[self.role] = {"ip": self.ip}
        return doc


def get_field(doc: dict[str, Any], dotted: str) -> Any:
    """The value at a dotted field name (``smtp.reply.code``) of a nested document, or None."""
    value: Any = doc
    for key in dotted.split("."):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def document_id(doc: dict[str, Any]) -> str:
    """Deterministic id: a hash of host, session id, session start, transaction and recipient,
    so re-sending a document after a crash overwrites it instead of duplicating it."""
    parts = [get_field(doc, "host.name"), get_field(doc, "smtp.session_id"), get_field(doc, "event.start"),
             get_field(doc, "smtp.transaction"), get_field(doc, "email.to.address")]
    key = "\x1f".join("" if p is None else str(p) for p in parts)
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def index_name(prefix: str, doc: dict[str, Any]) -> str:
    """``<prefix>-YYYY.MM.DD`` from the document's own ``@timestamp``, in UTC."""
    stamp = datetime.fromisoformat(doc["@timestamp"]).astimezone(UTC)
    return f"{prefix}-{stamp:%Y.%m.%d}"
