"""Sessions → delivery documents (one per recipient per transaction), their ids and indices. Pure.

A document is a plain JSON-ready dict of nested objects; absent values are omitted (never
``None``). The fields are PRODUCT.md's table plus ``smtp.reason`` and ``smtp.incomplete``
(docs/CONTRACTS.md).
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any, Protocol

from shipper import reasons
from shipper.model import Direction, Outcome, Session, Transaction, Verdict


class _Classifier(Protocol):
    def classify(self, code: str | None, enhanced: str | None, text: str | None,
                 stage: Any = None) -> str: ...


def _iso(dt: datetime) -> str:
    return dt.isoformat(timespec="milliseconds")


def build_documents(session: Session, *, host_name: str, dataset: str,
                    classifier: _Classifier | None = None) -> list[dict[str, Any]]:
    """The documents of one session: one per recipient of each transaction; one per
    transaction that got no recipient; one for a session that never reached MAIL."""
    docs: list[dict[str, Any]] = []
    transcript = "\n".join(session.lines)
    for txn in session.transactions:
        if txn.recipients:
            for rcpt in txn.recipients:
                docs.append(_document(session, transcript, host_name, dataset, classifier,
                                      txn, rcpt.address, rcpt.outcome))
        else:
            docs.append(_document(session, transcript, host_name, dataset, classifier,
                                  txn, None, txn.outcome))
    if not session.transactions:
        assert session.outcome is not None
        docs.append(_document(session, transcript, host_name, dataset, classifier,
                              None, None, session.outcome))
    return docs


def _document(session: Session, transcript: str, host_name: str, dataset: str,
              classifier: _Classifier | None, txn: Transaction | None,
              recipient: str | None, outcome: Outcome) -> dict[str, Any]:
    reply = outcome.reply
    # aware datetimes sharing one tzinfo subtract as wall times (ignoring fold): go through UTC
    delta = session.end.astimezone(UTC) - session.start.astimezone(UTC)
    duration = max(0, (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds)
    verdict = outcome.verdict

    smtp: dict[str, Any] = {
        "verdict": verdict.value,
        "stage": outcome.stage.value,
        "direction": session.direction.value,
        "session_id": session.session_id,
        "tls": session.tls,
        "transcript": transcript,
    }
    if reply is not None:
        smtp_reply = {"code": reply.code}
        if reply.enhanced:
            smtp_reply["enhanced"] = reply.enhanced
        if reply.text:
            smtp_reply["text"] = reply.text
        smtp["reply"] = smtp_reply
    if verdict is not Verdict.DELIVERED:
        code, enhanced, text = ((reply.code, reply.enhanced, reply.text) if reply is not None
                                else (None, None, None))
        # the stage lets the classifier tell e.g. a 554 greeting from a 554 after DATA
        classify = classifier.classify if classifier is not None else reasons.classify
        smtp["reason"] = classify(code, enhanced, text, outcome.stage)
    if txn is not None:
        smtp["transaction"] = txn.index
    if session.helo:
        smtp["helo"] = session.helo
    remote = {}
    if session.remote_ip:
        remote["ip"] = session.remote_ip
    if session.remote_host:
        remote["host"] = session.remote_host
    if remote:
        smtp["remote"] = remote
    if session.extensions:
        smtp["extensions"] = list(session.extensions)
    if session.incomplete:
        smtp["incomplete"] = True

    doc: dict[str, Any] = {
        "@timestamp": _iso(reply.timestamp if reply is not None else session.start),
        "event": {
            "start": _iso(session.start),
            "end": _iso(session.end),
            "duration": duration * 1000,
            "dataset": dataset,
            "outcome": verdict.outcome,
        },
        "smtp": smtp,
        "log": {"file": {"path": session.path}, "offset": session.offset},
        "host": {"name": host_name},
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
    if session.remote_ip:
        role = "source" if session.direction is Direction.INBOUND else "destination"
        doc[role] = {"ip": session.remote_ip}
    return doc


def _get(doc: dict[str, Any], dotted: str) -> Any:
    value: Any = doc
    for key in dotted.split("."):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def document_id(doc: dict[str, Any]) -> str:
    """Deterministic id: a hash of host, session id, session start, transaction and recipient,
    so re-sending a document after a crash overwrites it instead of duplicating it."""
    parts = [_get(doc, "host.name"), _get(doc, "smtp.session_id"), _get(doc, "event.start"),
             _get(doc, "smtp.transaction"), _get(doc, "email.to.address")]
    key = "\x1f".join("" if p is None else str(p) for p in parts)
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def index_name(prefix: str, doc: dict[str, Any]) -> str:
    """``<prefix>-YYYY.MM.DD`` from the document's own ``@timestamp``, in UTC."""
    stamp = datetime.fromisoformat(doc["@timestamp"]).astimezone(UTC)
    return f"{prefix}-{stamp:%Y.%m.%d}"
