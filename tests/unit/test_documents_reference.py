"""build_documents gives exactly the documents of its definition as first written: same values,
same key order, same JSON bytes, the same classifier calls, and no dict or list shared between
two documents — for every golden session in several zones and for generated sessions."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import parsing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shipper import reasons
from shipper.documents import build_documents
from shipper.model import (
    Direction,
    Moment,
    Outcome,
    Recipient,
    Reply,
    Session,
    Stage,
    Transaction,
    Verdict,
)

GOLDEN = Path(__file__).resolve().parents[1] / "golden"


# -- the reference: build_documents as it was first written (commit 699ed5e) -------------------


def reference_documents(session: Session, *, host_name: str, dataset: str,
                        classifier: Any = None) -> list[dict[str, Any]]:
    classify = classifier.classify if classifier is not None else reasons.classify
    transcript = "\n".join(session.lines)
    start = session.start.iso
    end = session.end.iso
    duration = max(0, session.end.micros - session.start.micros) * 1000

    def document(txn: Transaction | None, recipient: str | None, outcome: Outcome) -> dict[str, Any]:
        reply = outcome.reply
        smtp: dict[str, Any] = {
            "verdict": outcome.verdict.value,
            "stage": outcome.stage.value,
            "direction": session.direction.value,
            "session_id": session.session_id,
            "tls": session.tls,
            "transcript": transcript,
        }
        if reply is not None:
            smtp["reply"] = {"code": reply.code}
            if reply.enhanced:
                smtp["reply"]["enhanced"] = reply.enhanced
            if reply.text:
                smtp["reply"]["text"] = reply.text
        if outcome.verdict is not Verdict.DELIVERED:
            if reply is not None:
                smtp["reason"] = classify(reply.code, reply.enhanced, reply.text, outcome.stage)
            else:
                smtp["reason"] = classify(None, None, None, outcome.stage)
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
            "@timestamp": reply.timestamp.iso if reply is not None else start,
            "event": {"start": start, "end": end, "duration": duration, "dataset": dataset,
                      "outcome": outcome.verdict.outcome},
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

    docs = []
    for txn in session.transactions:
        if txn.recipients:
            docs.extend(document(txn, r.address, r.outcome) for r in txn.recipients)
        else:
            docs.append(document(txn, None, txn.outcome))
    if not session.transactions:
        assert session.outcome is not None
        docs.append(document(None, None, session.outcome))
    return docs


# -- comparison --------------------------------------------------------------------------------


class Recording:
    """A classifier that records its calls and answers from them."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def classify(self, *args: Any) -> str:
        self.calls.append(args)
        return f"reason-{len(self.calls)}"


def _containers(value: Any) -> list[int]:
    if isinstance(value, dict):
        return [id(value), *(i for v in value.values() for i in _containers(v))]
    if isinstance(value, list):
        return [id(value), *(i for v in value for i in _containers(v))]
    return []


def assert_same(session: Session) -> None:
    expected_clf, actual_clf = Recording(), Recording()
    expected = reference_documents(session, host_name="h", dataset="xeams.smtp", classifier=expected_clf)
    actual = build_documents(session, host_name="h", dataset="xeams.smtp", classifier=actual_clf)
    assert expected == actual
    # key order and types (True is not 1) too: the bulk body is these bytes
    assert [json.dumps(d) for d in expected] == [json.dumps(d) for d in actual]
    assert expected_clf.calls == actual_clf.calls
    assert [reference_documents(session, host_name="h", dataset="d")] == [
        build_documents(session, host_name="h", dataset="d")]  # the built-in classifier
    ids = [i for doc in actual for i in _containers(doc)]
    assert len(ids) == len(set(ids)), "a dict or list is shared between documents"


def sessions_of(path: Path, tz: tzinfo, direction: Direction = Direction.OUTBOUND) -> list[Session]:
    return parsing.sessions(path.read_bytes(), direction, tz, path.name)


def test_golden_sessions_in_several_zones() -> None:
    """Every golden scenario, read in zones with and without DST and with odd offsets."""
    zones: list[tzinfo] = [ZoneInfo("America/New_York"), ZoneInfo("Europe/Berlin"),
                           ZoneInfo("Asia/Kathmandu"), ZoneInfo("Australia/Lord_Howe"),
                           timezone(timedelta(hours=5, minutes=45)), UTC]
    count = 0
    for path in sorted(GOLDEN.rglob("*.log")):
        for tz in zones:
            for direction in Direction:
                for session in sessions_of(path, tz, direction):
                    assert_same(session)
                    count += 1
    assert count > 400


# -- generated sessions ------------------------------------------------------------------------


class Odd(tzinfo):
    """A tzinfo the time cache does not know: its offset depends on the microseconds."""

    def utcoffset(self, dt: datetime | None) -> timedelta:
        return timedelta(minutes=30 if dt is not None and dt.microsecond >= 500_000 else 0)

    def dst(self, dt: datetime | None) -> timedelta:
        return timedelta(0)

    def tzname(self, dt: datetime | None) -> str:
        return "odd"


ZONES: list[tzinfo | None] = [
    ZoneInfo("America/New_York"), ZoneInfo("Europe/Berlin"), ZoneInfo("Europe/Dublin"),
    ZoneInfo("Asia/Kathmandu"), ZoneInfo("Australia/Lord_Howe"), ZoneInfo("UTC"), UTC,
    timezone(timedelta(hours=-3, minutes=-30)), timezone(timedelta(hours=5, minutes=45)),
    timezone(timedelta(seconds=3723, microseconds=5)), Odd(), None,
]
# Local times near DST changes (the gap and the repeated hour, both folds)
NEAR = [datetime(2024, 3, 10, 2, 0), datetime(2024, 11, 3, 1, 0), datetime(2024, 3, 31, 2, 0),
        datetime(2024, 10, 27, 2, 0), datetime(2024, 10, 6, 2, 0), datetime(2024, 4, 7, 1, 30),
        datetime(2024, 12, 31, 23, 59, 59), datetime(2024, 2, 29, 0, 0)]


def moment(dt: datetime) -> Moment:
    return Moment(dt.isoformat(timespec="milliseconds"),
                  (dt.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1))


@st.composite
def times(draw: Any, tz: tzinfo | None) -> datetime:
    if draw(st.booleans()):
        base = draw(st.sampled_from(NEAR)) + timedelta(seconds=draw(st.integers(-3700, 3700)))
    else:
        base = draw(st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2040, 1, 1)))
    base = base.replace(microsecond=draw(st.sampled_from([0, 999, 1000, 499_999, 500_000, 999_999]))
                        if draw(st.booleans()) else draw(st.integers(0, 999_999)))
    return base.replace(tzinfo=tz, fold=draw(st.integers(0, 1)))


words = st.text(st.sampled_from("ab@.C-1 é\n"), max_size=12)
maybe_words = st.none() | words


@st.composite
def outcomes(draw: Any, tz: tzinfo | None) -> Outcome:
    reply = None
    if draw(st.booleans()):
        reply = Reply(draw(st.sampled_from(["250", "451", "550", "554"])),
                      draw(st.sampled_from([None, "", "5.1.1", "4.7.1"])), draw(words), moment(draw(times(tz))))
    return Outcome(draw(st.sampled_from(list(Verdict))), draw(st.sampled_from(list(Stage))), reply)


@st.composite
def sessions(draw: Any) -> Session:
    tz = draw(st.sampled_from(ZONES))
    start = draw(times(tz))
    end = start if draw(st.booleans()) else draw(
        st.sampled_from([start + timedelta(microseconds=draw(st.integers(-10**7, 10**10))),
                         draw(times(tz))]))
    transactions = tuple(
        Transaction(i, draw(maybe_words),
                    tuple(Recipient(draw(words), draw(outcomes(tz)))
                          for _ in range(draw(st.integers(0, 3)))),
                    draw(outcomes(tz)))
        for i in range(draw(st.integers(0, 3))))
    return Session(
        session_id=draw(words), direction=draw(st.sampled_from(list(Direction))),
        path=draw(words), offset=draw(st.integers(0, 2**40)), files={}, start=moment(start),
        end=moment(end),
        incomplete=draw(st.booleans()), lines=tuple(draw(st.lists(words, max_size=4))),
        remote_ip=draw(maybe_words), remote_host=draw(maybe_words), helo=draw(maybe_words),
        tls=draw(st.booleans()), extensions=tuple(draw(st.lists(words, max_size=3))),
        transactions=transactions, outcome=draw(outcomes(tz)))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sessions())
def test_generated_sessions(session: Session) -> None:
    """Any session: any zone (cached or not, naive), fold, microsecond, optional field."""
    assert_same(session)
