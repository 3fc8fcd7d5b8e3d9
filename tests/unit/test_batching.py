"""Ids, index names and bulk bytes made the cheap way (direct reads, a cache per local hour and
offset, the action line's head per index, one body per batch) are those of their
straightforward definitions."""

from __future__ import annotations

import hashlib
import json
import pickle
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from shipper import batching
from shipper.batching import BatchBuilder, BulkBatch, BulkItem, batches, document_id, index_name, prepare
from shipper.config import BulkSettings, OpenSearchSettings
from shipper.documents import get_field
from shipper.opensearch import BulkShipper
from shipper.pipeline import ParseOptions, ParseStats, documents_of_files

GOLDEN = Path(__file__).resolve().parents[1] / "golden"


# -- the definitions ---------------------------------------------------------------------------


def reference_index_name(prefix: str, doc: dict[str, Any]) -> str:
    return f"{prefix}-{datetime.fromisoformat(doc['@timestamp']).astimezone(UTC):%Y.%m.%d}"


def reference_id(doc: dict[str, Any]) -> str:
    parts = [get_field(doc, f) for f in ("host.name", "smtp.session_id", "event.start",
                                         "smtp.transaction", "email.to.address")]
    key = "\x1f".join("" if p is None else str(p) for p in parts)
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def reference_item(doc: dict[str, Any], prefix: str) -> BulkItem:
    idx, doc_id = reference_index_name(prefix, doc), reference_id(doc)
    action = batching.dumps({"index": {"_index": idx, "_id": doc_id}}) + b"\n"
    return BulkItem(idx, doc_id, action, batching.dumps(doc) + b"\n")


def golden_docs() -> list[dict[str, Any]]:
    docs = []
    for zone in ("America/New_York", "Asia/Kathmandu", "Pacific/Chatham"):
        options = ParseOptions(tz=ZoneInfo(zone), host_name="h1")
        docs += list(documents_of_files(sorted(str(p) for p in GOLDEN.glob("*.log")), options, ParseStats()))
    return docs


# -- index names -------------------------------------------------------------------------------

ZONES = [ZoneInfo(z) for z in ("America/New_York", "Europe/Berlin", "Asia/Kathmandu", "Asia/Kolkata",
                               "America/St_Johns", "Pacific/Chatham", "Australia/Lord_Howe",
                               "Pacific/Kiritimati", "Pacific/Pago_Pago", "UTC")]
ZONES += [timezone(timedelta(hours=5, minutes=45)), timezone(timedelta(hours=-9, minutes=-30)),
          timezone(timedelta(hours=14)), timezone(timedelta(hours=-12))]


@st.composite
def stamps(draw: Any) -> str:
    """@timestamp texts as build_documents writes them, many of them near a UTC midnight or a
    DST change."""
    zone = draw(st.sampled_from(ZONES))
    if draw(st.booleans()):  # near a UTC midnight
        utc = datetime(2024, 1, 1, tzinfo=UTC) + timedelta(days=draw(st.integers(0, 3000)),
                                                          seconds=draw(st.integers(-7200, 7200)))
    else:  # near a DST change in March/April or October/November, or anywhere
        utc = datetime(draw(st.integers(2000, 2037)), draw(st.sampled_from([3, 4, 10, 11, 1, 6])), 1,
                       tzinfo=UTC) + timedelta(days=draw(st.integers(0, 30)), hours=draw(st.integers(0, 23)),
                                               seconds=draw(st.integers(0, 3599)))
    utc += timedelta(microseconds=draw(st.integers(0, 999_999)))
    return utc.astimezone(zone).isoformat(timespec="milliseconds")


@settings(max_examples=3000, deadline=None)
@given(stamps(), st.sampled_from(["smtp-deliveries", "p", "x-y", ""]))
@example("2024-01-01T05:44:59.999+05:45", "p")  # 23:59:59.999 UTC
@example("2024-01-01T05:45:00.000+05:45", "p")  # midnight UTC
@example("2024-01-01T05:14:00.000+05:45", "p")  # the same local hour, the day before in UTC
@example("2024-03-10T03:00:00.000-04:00", "p")  # New York, just after the spring gap
@example("2024-11-03T01:30:00.000-05:00", "p")  # New York, the repeated hour (second pass)
@example("2024-11-03T01:30:00.000-04:00", "p")  # ... and the first
@example("2024-11-03T20:00:00.000-04:00", "p")  # 00:00 UTC
@example("2024-11-03T19:59:59.999-04:00", "p")
@example("2024-12-31T23:59:59.999+00:00", "p")
def test_index_name_is_the_definition(stamp: str, prefix: str) -> None:
    """Any time, in any zone: the UTC day of the definition, first (cache empty) or again."""
    doc = {"@timestamp": stamp}
    assert reference_index_name(prefix, doc) == index_name(prefix, doc)
    assert reference_index_name(prefix, doc) == index_name(prefix, doc)


def test_index_name_within_an_hour_that_crosses_midnight_utc() -> None:
    """Every minute of a +05:45 hour around midnight UTC, in both orders (either can fill the
    cache first), in the right index."""
    for minutes in (range(60), reversed(range(60))):
        batching._hour_day.cache_clear()
        for minute in minutes:
            doc = {"@timestamp": f"2024-01-01T05:{minute:02d}:30.500+05:45"}
            assert reference_index_name("p", doc) == index_name("p", doc)


@pytest.mark.parametrize("stamp", [
    "2024-01-01T05:61:00.000+05:45", "2024-01-01T05:00:60.000+00:00", "2024-01-01T24:00:00.000+00:00",
    "2024-13-01T05:00:00.000+00:00", "2024-01-01T05:00:00.000+25:00", "not a time at all, 29 chars!",
])
def test_index_name_of_a_bad_timestamp_fails_as_the_definition(stamp: str) -> None:
    """Not a time: the definition's ValueError, before and after a good time of the same hour."""
    good = {"@timestamp": stamp[:13] + ":00:00.000" + stamp[23:]}
    for _ in range(2):
        with pytest.raises(ValueError):
            reference_index_name("p", {"@timestamp": stamp})
        with pytest.raises(ValueError):
            index_name("p", {"@timestamp": stamp})
        try:
            index_name("p", good)
        except ValueError:
            pass


@pytest.mark.parametrize("stamp", [
    "2024-01-01T05:00:00+05:45", "2024-01-01T05:00:00.123456+05:45", "2024-01-01T05:00:00.123Z",
    "2024-01-01T05:00:00.123+05:45:30", "2024-01-01 23:00:00.123-04:00",
])
def test_index_name_of_other_iso_forms(stamp: str) -> None:
    """Other forms fromisoformat reads take the plain way, with the same result."""
    assert reference_index_name("p", {"@timestamp": stamp}) == index_name("p", {"@timestamp": stamp})


# -- ids ---------------------------------------------------------------------------------------


def test_ids_of_golden_documents_are_the_definition() -> None:
    docs = golden_docs()
    assert len(docs) > 100
    assert [reference_id(d) for d in docs] == [document_id(d) for d in docs]


class Sub(dict):  # type: ignore[type-arg]
    """A dict subclass: get_field reads it like a dict."""


@pytest.mark.parametrize("doc", [
    {},
    {"host": {"name": "h"}, "smtp": {"session_id": "1"}, "event": {"start": "s"}},
    {"host": {"name": "h"}, "smtp": {"session_id": "1", "transaction": 0}, "event": {"start": "s"},
     "email": {"to": {"address": "a@b"}}},
    {"host": {"name": "h"}, "smtp": {"session_id": "1"}, "event": {"start": "s"}, "email": {"from": {}}},
    {"host": {"name": "h"}, "smtp": {"session_id": "1"}, "event": {"start": "s"}, "email": {"to": None}},
    {"host": {"name": "h"}, "smtp": {"session_id": "1"}, "event": {"start": "s"}, "email": Sub(to={"address": "a"})},
    {"host": Sub(name="h"), "smtp": {"session_id": None, "transaction": True}, "event": {"start": 5}},
    {"host": {"name": "h"}, "smtp": {"session_id": "1"}, "event": None, "email": None},
    Sub(host={"name": "h"}, smtp={"session_id": "\udcff"}, event={"start": "é"}),
])
def test_ids_of_odd_shapes_are_the_definition(doc: dict[str, Any]) -> None:
    """Missing parts, parts that are None, dict subclasses: the id get_field gives. (Ids are
    defined for documents whose parts are objects, as build_documents makes them.)"""
    assert reference_id(doc) == document_id(doc)


# -- bulk items and batches --------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["smtp-deliveries", 'q"uote\\', "é-ü", "a\nb"])
def test_items_are_the_definition(prefix: str) -> None:
    """prepare: the index, id, action line and source line of the definition, byte for byte
    (the action's head is cached per index: escaping still applies)."""
    for doc in golden_docs()[:60]:
        assert reference_item(doc, prefix) == prepare(doc, prefix)


def test_action_of_an_id_that_is_not_hex() -> None:
    for doc_id in ["ABC", 'a"b', "é", "", "a b"]:
        expected = batching.dumps({"index": {"_index": "i", "_id": doc_id}}) + b"\n"
        assert expected == batching._action("i", doc_id)


@pytest.mark.parametrize(("max_docs", "max_bytes"), [(1000, 10 * 2**20), (7, 10**9), (1000, 9000), (3, 1)])
def test_batch_builder_is_batches_of_prepare(max_docs: int, max_bytes: int) -> None:
    """The same grouping as ``batches`` (count, bytes, an oversized item alone), each body the
    join of the items, each item cut back out of it equal to prepare's, through pickling too."""
    docs = golden_docs()
    expected = list(batches((prepare(d, "p") for d in docs), max_docs, max_bytes))
    builder = BatchBuilder("p", max_docs, max_bytes)
    got = [b for b in (builder.add(d) for d in docs) if b is not None]
    last = builder.flush()
    assert last is not None and builder.flush() is None
    got.append(last)
    assert [len(b) for b in expected] == [len(b) for b in got]
    for want, batch in zip(expected, got):
        assert b"".join(i.action + i.source for i in want) == batch.body
        again = BulkBatch(*pickle.loads(pickle.dumps(batch.payload())))
        assert want == list(batch) == list(again) == again[:]
        assert want[-1] == again[-1]


class FakeBulk:
    """The client's bulk call: answers from a script of per-item statuses."""

    def __init__(self, script: list[list[int]]) -> None:
        self.script = script
        self.bodies: list[bytes] = []

    def bulk(self, body: bytes, filter_path: str) -> dict[str, Any]:
        self.bodies.append(body)
        statuses = self.script.pop(0)
        if all(200 <= s < 300 for s in statuses):
            return {"errors": False}
        return {"errors": True, "items": [
            {"index": {"status": s, **({"error": {"type": "x", "reason": "y"}} if s >= 300 else {})}}
            for s in statuses]}


def test_a_body_batch_is_retried_and_dead_lettered_per_item(tmp_path: Path) -> None:
    """A BulkBatch is posted as it is; its 429 items are re-sent alone, its 400 items
    dead-lettered with their own source: as for a list of items."""
    docs = golden_docs()[:4]
    builder = BatchBuilder("p", 100, 10**9)
    for doc in docs:
        assert builder.add(doc) is None
    batch = builder.flush()
    assert batch is not None
    fake = FakeBulk([[201, 429, 400, 200], [200]])
    bulk = BulkSettings(max_docs=100, max_bytes=10**9, max_retries=3, initial_backoff=0.01, max_backoff=0.01)
    settings_ = OpenSearchSettings(hosts=("http://127.0.0.1:1",), index_prefix="p", bulk=bulk)
    shipper = BulkShipper(fake, settings_, tmp_path / "dead.ndjson", sleep=lambda _: None)  # type: ignore[arg-type]
    result = shipper.ship_batch(batch)
    items = [prepare(d, "p") for d in docs]
    assert fake.bodies == [batch.body, items[1].action + items[1].source]
    assert (3, 1, 1) == (result.acknowledged, result.dead_lettered, result.retried)
    (dead,) = [json.loads(line) for line in (tmp_path / "dead.ndjson").read_text().splitlines()]
    assert (items[2].id, items[2].index, docs[2]) == (dead["id"], dead["index"], dead["document"])
