"""Sessions → delivery documents (one per recipient per transaction), their ids and indices. Pure.

A document is a plain JSON-ready dict of nested objects; absent values are omitted (never
``None``). The fields are PRODUCT.md's table plus ``smtp.reason`` and ``smtp.incomplete``
(docs/CONTRACTS.md).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timezone
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from shipper import reasons
from shipper.model import Direction, Outcome, Session, Transaction, Verdict


class _Classifier(Protocol):
    def classify(self, code: str | None, enhanced: str | None, text: str | None,
                 stage: Any = None) -> str: ...


_DELIVERED = Verdict.DELIVERED
_INBOUND = Direction.INBOUND
_OUTCOMES = {verdict.value: verdict.outcome for verdict in Verdict}  # by value: Enum hashes slowly


def _iso(dt: datetime) -> str:
    return dt.isoformat(timespec="milliseconds")


# -- times -------------------------------------------------------------------------------------
# Every document carries three ISO times (@timestamp, event.start, event.end) and a duration;
# ``isoformat`` and ``astimezone`` cost about a microsecond each, and a log's times repeat to
# the minute (one session's lines, and the sessions around it). So the parts of a time that do
# not depend on its seconds are made once per minute and zone: the text before the seconds
# and after the milliseconds, and the minute in UTC microseconds since the epoch. (Per second
# was tried first: a log with a session every few seconds then missed on every session, and a
# miss costs more than the plain way.)

_EPOCH_ORDINAL = datetime(1970, 1, 1).toordinal()
_SECONDS = tuple(f":{s:02d}" for s in range(60))
_MILLIS = tuple(f".{ms:03d}" for ms in range(1000))  # isoformat's milliseconds: truncated
_MINUTES_KEPT = 4096
# (minute, hour, ordinal day, fold, tzinfo) → ("YYYY-MM-DDTHH:MM", "+HH:MM", UTC µs of the minute)
_minutes: dict[tuple[Any, ...], tuple[str, str, int] | None] = {}
# Zones whose offset is a step function of the wall time (and fold): zoneinfo and fixed
# offsets. Any other tzinfo (or none) takes the plain way.
_CACHEABLE_ZONES = (ZoneInfo, timezone)


def _minute(dt: datetime) -> tuple[str, str, int] | None:
    """The cached parts of ``dt``'s minute; None for a zone that is not cached, or a minute
    whose offset changes within it (a zone's change from local mean time, at odd seconds).
    (The lookup is repeated inline where it is hot: a call costs as much as the lookup.)"""
    key = (dt.minute, dt.hour, dt.toordinal(), dt.fold, dt.tzinfo)
    parts = _minutes.get(key)
    if parts is None and key not in _minutes:
        if not isinstance(dt.tzinfo, _CACHEABLE_ZONES):
            return None
        offset = dt.replace(second=0, microsecond=0).utcoffset()
        # one offset at both ends: one all minute (a zone changes its offset months apart)
        if offset is not None and offset == dt.replace(second=59, microsecond=999_999).utcoffset():
            text = dt.isoformat(timespec="milliseconds")
            local = ((dt.toordinal() - _EPOCH_ORDINAL) * 86_400 + dt.hour * 3600 + dt.minute * 60)
            parts = (text[:16], text[23:],
                     local * 1_000_000 - ((offset.days * 86_400 + offset.seconds) * 1_000_000
                                          + offset.microseconds))
        if len(_minutes) >= _MINUTES_KEPT:
            _minutes.clear()
        _minutes[key] = parts
    return parts


def _stamp(dt: datetime) -> str:
    """``dt.isoformat(timespec="milliseconds")``."""
    parts = _minutes.get((dt.minute, dt.hour, dt.toordinal(), dt.fold, dt.tzinfo)) or _minute(dt)
    if parts is None:
        return dt.isoformat(timespec="milliseconds")
    return f"{parts[0]}{_SECONDS[dt.second]}{_MILLIS[dt.microsecond // 1000]}{parts[1]}"


def _span(start: datetime, end: datetime) -> tuple[str, str, int]:
    """ISO start, ISO end and the duration in nanoseconds (never negative) of a session."""
    first = _minutes.get((start.minute, start.hour, start.toordinal(), start.fold,
                          start.tzinfo)) or _minute(start)
    last = _minutes.get((end.minute, end.hour, end.toordinal(), end.fold,
                         end.tzinfo)) or _minute(end)
    if first is None or last is None:
        # aware datetimes sharing one tzinfo subtract as wall times (ignoring fold): via UTC
        delta = end.astimezone(UTC) - start.astimezone(UTC)
        micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
        return _iso(start), _iso(end), max(0, micros) * 1000
    start_s, start_us, end_s, end_us = start.second, start.microsecond, end.second, end.microsecond
    micros = last[2] - first[2] + (end_s - start_s) * 1_000_000 + end_us - start_us
    return (f"{first[0]}{_SECONDS[start_s]}{_MILLIS[start_us // 1000]}{first[1]}",
            f"{last[0]}{_SECONDS[end_s]}{_MILLIS[end_us // 1000]}{last[1]}",
            (micros if micros > 0 else 0) * 1000)


# -- documents ---------------------------------------------------------------------------------


def build_documents(session: Session, *, host_name: str, dataset: str,
                    classifier: _Classifier | None = None) -> list[dict[str, Any]]:
    """The documents of one session: one per recipient of each transaction; one per
    transaction that got no recipient; one for a session that never reached MAIL.

    What the documents of a session have in common is worked out once, into locals; each
    document still gets its own dicts and lists: nothing mutable is shared between them.
    Keys are inserted in a fixed order (the JSON sent to OpenSearch follows it)."""
    classify = (classifier if classifier is not None else reasons.default_classifier()).classify
    start, end, duration = _span(session.start, session.end)
    transcript = "\n".join(session.lines)
    direction = session.direction
    direction_value = direction._value_
    session_id = session.session_id
    tls = session.tls
    helo = session.helo
    ip = session.remote_ip
    remote_host = session.remote_host
    extensions = session.extensions
    incomplete = session.incomplete
    log_path = session.path
    log_offset = session.offset
    role = "source" if direction is _INBOUND else "destination"

    # (transaction, recipient, outcome) of each document, in order
    transactions = session.transactions
    parts: Sequence[tuple[Transaction | None, str | None, Outcome]]
    if len(transactions) == 1 and len(transactions[0].recipients) == 1:  # the usual session
        only = transactions[0]
        rcpt = only.recipients[0]
        parts = ((only, rcpt.address, rcpt.outcome),)
    else:
        many: list[tuple[Transaction | None, str | None, Outcome]] = []
        parts = many
        for transaction in transactions:
            if transaction.recipients:
                many.extend([(transaction, rcpt.address, rcpt.outcome)
                             for rcpt in transaction.recipients])
            else:
                many.append((transaction, None, transaction.outcome))
        if not many:
            assert session.outcome is not None
            many.append((None, None, session.outcome))

    docs: list[dict[str, Any]] = []
    for txn, recipient, outcome in parts:
        reply = outcome.reply
        verdict = outcome.verdict
        # ``_value_``: Enum.value is a Python-level property, read a few times per document
        verdict_value = verdict._value_
        smtp: dict[str, Any] = {
            "verdict": verdict_value,
            "stage": outcome.stage._value_,
            "direction": direction_value,
            "session_id": session_id,
            "tls": tls,
            "transcript": transcript,
        }
        if reply is not None:
            enhanced = reply.enhanced
            text = reply.text
            if enhanced and text:
                smtp["reply"] = {"code": reply.code, "enhanced": enhanced, "text": text}
            else:
                smtp_reply = {"code": reply.code}
                if enhanced:
                    smtp_reply["enhanced"] = enhanced
                if text:
                    smtp_reply["text"] = text
                smtp["reply"] = smtp_reply
            if verdict is not _DELIVERED:
                # the stage lets the classifier tell e.g. a 554 greeting from a 554 after DATA
                smtp["reason"] = classify(reply.code, enhanced, text, outcome.stage)
            ts = reply.timestamp
            stamp_parts = _minutes.get((ts.minute, ts.hour, ts.toordinal(), ts.fold, ts.tzinfo))
            timestamp = (f"{stamp_parts[0]}{_SECONDS[ts.second]}{_MILLIS[ts.microsecond // 1000]}{stamp_parts[1]}"
                         if stamp_parts is not None else _stamp(ts))
        else:
            if verdict is not _DELIVERED:
                smtp["reason"] = classify(None, None, None, outcome.stage)
            timestamp = start
        if txn is not None:
            smtp["transaction"] = txn.index
        if helo:
            smtp["helo"] = helo
        if ip:
            smtp["remote"] = {"ip": ip, "host": remote_host} if remote_host else {"ip": ip}
        elif remote_host:
            smtp["remote"] = {"host": remote_host}
        if extensions:
            smtp["extensions"] = [*extensions]
        if incomplete:
            smtp["incomplete"] = True

        doc: dict[str, Any] = {
            "@timestamp": timestamp,
            "event": {
                "start": start,
                "end": end,
                "duration": duration,
                "dataset": dataset,
                "outcome": _OUTCOMES[verdict_value],
            },
            "smtp": smtp,
            "log": {"file": {"path": log_path}, "offset": log_offset},
            "host": {"name": host_name},
        }
        mail_from = txn.mail_from if txn is not None else None
        if recipient is not None:
            domain = recipient.rpartition("@")[2].lower()
            if domain:
                smtp["recipient_domain"] = domain
            if mail_from is not None:
                doc["email"] = {"from": {"address": mail_from}, "to": {"address": recipient}}
            else:
                doc["email"] = {"to": {"address": recipient}}
        elif mail_from is not None:
            doc["email"] = {"from": {"address": mail_from}}
        if ip:
            doc[role] = {"ip": ip}
        docs.append(doc)
    return docs


def get_field(doc: dict[str, Any], dotted: str) -> Any:
    """The value at a dotted field name (``smtp.reply.code``) of a nested document, or None."""
    value: Any = doc
    for key in dotted.split("."):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


_ID_FIELDS = ("host.name", "smtp.session_id", "event.start", "smtp.transaction", "email.to.address")


def document_id(doc: dict[str, Any]) -> str:
    """Deterministic id: a hash of host, session id, session start, transaction and recipient,
    so re-sending a document after a crash overwrites it instead of duplicating it."""
    key = "\x1f".join(["" if p is None else str(p) for p in _id_parts(doc)])
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _id_parts(doc: dict[str, Any]) -> tuple[Any, ...]:
    """``get_field`` of each of ``_ID_FIELDS``; read directly when the document is made of plain
    dicts, as ``build_documents`` makes them (five ``get_field`` calls cost 1.5 µs)."""
    if doc.__class__ is dict:
        host, smtp, event, email = doc.get("host"), doc.get("smtp"), doc.get("event"), doc.get("email")
        if host.__class__ is dict and smtp.__class__ is dict and event.__class__ is dict:
            if email is None:
                address = None
            elif email.__class__ is dict:
                to = email.get("to")
                address = None if to is None else to.get("address") if to.__class__ is dict else _OTHER
            else:
                address = _OTHER
            if address is not _OTHER:
                return (host.get("name"), smtp.get("session_id"), event.get("start"),
                        smtp.get("transaction"), address)
    return tuple([get_field(doc, name) for name in _ID_FIELDS])


_OTHER = object()  # a shape the direct reading does not handle: get_field decides


# The UTC day of an ``@timestamp`` as build_documents writes it ("2024-03-21T23:39:49.869-04:00")
# is that of every time in its local hour, unless the day changes in UTC within that hour (an
# offset such as +05:45 moves midnight to a quarter past): so it is worked out once per prefix,
# local hour and offset, with whether it holds for the whole hour.
_DAYS: dict[tuple[str, str, str], str | None] = {}  # → the index name; None: not the same all hour
_DAYS_KEPT = 4096
# the rest of such a timestamp after its hour, as fromisoformat would accept it
_AFTER_HOUR = re.compile(r":[0-5][0-9]:[0-5][0-9]\.[0-9]{3}[+-]")


def index_name(prefix: str, doc: dict[str, Any]) -> str:
    """``<prefix>-YYYY.MM.DD`` from the document's own ``@timestamp``, in UTC."""
    stamp = doc["@timestamp"]
    if stamp.__class__ is str and len(stamp) == 29 and _AFTER_HOUR.match(stamp, 13):
        key = (prefix, stamp[:13], stamp[23:])
        name = _DAYS.get(key, "")
        if name:
            return name
        if name == "":  # not known yet
            name = _whole_hour(prefix, stamp)
            if len(_DAYS) >= _DAYS_KEPT:
                _DAYS.clear()
            _DAYS[key] = name
            if name is not None:
                return name
    return _index_name(prefix, stamp)


def _whole_hour(prefix: str, stamp: str) -> str | None:
    """The index name of every time of ``stamp``'s local hour, or None if they differ."""
    name = _index_name(prefix, stamp)  # raises as the plain way does for a bad timestamp
    hour, offset = stamp[:13], stamp[23:]
    first = _index_name(prefix, f"{hour}:00:00.000{offset}")
    last = _index_name(prefix, f"{hour}:59:59.999{offset}")
    return name if first == name == last else None


def _index_name(prefix: str, stamp: str) -> str:
    day = datetime.fromisoformat(stamp).astimezone(UTC)
    return f"{prefix}-{day:%Y.%m.%d}"
