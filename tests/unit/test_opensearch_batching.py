"""Bulk batching, backoff, and the per-item retry / dead-letter loop of BulkShipper.

The fake here is only the client's ``bulk`` call (the network); the loop under test is real."""

from __future__ import annotations

import json
import threading
import time

import opensearchpy
import pytest

from shipper.batching import BulkItem, batches
from shipper.config import BulkSettings, OpenSearchSettings
from shipper.errors import ConnectionFailed, RequestRefused
from shipper.opensearch import (
    BulkShipper,
    PipelinedShipper,
    ShippingStopped,
    ShipResult,
    backoff_delay,
    sender_time,
)


def item(n: int, size: int = 10) -> BulkItem:
    source = json.dumps({"n": n, "pad": "x" * size}).encode() + b"\n"
    return BulkItem(f"p-2024.03.{n % 28 + 1:02d}", f"id{n}", b'{"index":{}}\n', source)


def settings(**bulk) -> OpenSearchSettings:
    defaults = {"max_docs": 3, "max_bytes": 10_000, "compression": False, "max_retries": 3, "initial_backoff": 0.5, "max_backoff": 60.0}
    defaults.update(bulk)
    return OpenSearchSettings(hosts=("http://127.0.0.1:1",), index_prefix="p", bulk=BulkSettings(**defaults))


def test_batches_bounded_by_count():
    """max_docs items per batch, the rest in a last, smaller batch."""
    sizes = [len(b) for b in batches((item(i) for i in range(7)), max_docs=3, max_bytes=10**9)]
    assert [3, 3, 1] == sizes


def test_batches_bounded_by_bytes():
    """A batch never exceeds max_bytes unless a single item does."""
    items = [item(i, size=100) for i in range(10)]
    limit = items[0].size * 3 + 1
    got = list(batches(items, max_docs=1000, max_bytes=limit))
    assert all(sum(i.size for i in b) <= limit for b in got)
    assert [3, 3, 3, 1] == [len(b) for b in got]
    assert [i.id for b in got for i in b] == [i.id for i in items]


def test_oversized_item_travels_alone():
    """An item bigger than max_bytes is sent alone rather than never."""
    small, big = item(1), item(2, size=5000)
    got = list(batches([small, big, small], max_docs=10, max_bytes=1000))
    assert [[small], [big], [small]] == got


def test_backoff_doubles_with_jitter_and_caps():
    """Equal jitter: between half and all of initial*2**retry, never above max."""
    assert 0.25 == backoff_delay(0, 0.5, 60, rand=lambda: 0.0)
    assert 0.5 == backoff_delay(0, 0.5, 60, rand=lambda: 1.0)
    assert 4.0 == backoff_delay(3, 0.5, 60, rand=lambda: 1.0)
    assert 60.0 == backoff_delay(30, 0.5, 60, rand=lambda: 1.0)
    assert 30.0 == backoff_delay(10_000, 0.5, 60, rand=lambda: 0.0)


class FakeBulk:
    """Answers each bulk call from a script: a list of per-item statuses, or an exception."""

    def __init__(self, script):
        self.script = list(script)
        self.calls: list[list[str]] = []

    def bulk(self, body: bytes, filter_path: str):
        lines = body.decode().splitlines()
        ids = [json.loads(line)["n"] for line in lines[1::2]]
        self.calls.append(ids)
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        statuses = step(ids) if callable(step) else step
        items = []
        for status in statuses:
            answer = {"status": status}
            if status >= 300:
                answer["error"] = {"type": "mapper_parsing_exception" if status == 400 else "es_rejected_execution_exception", "reason": "r"}
            items.append({"index": answer})
        return {"errors": any(s >= 300 for s in statuses), "items": items}


def test_only_failed_items_are_resent(tmp_path):
    """429 and 5xx items are re-sent, alone; acknowledged items are not sent again."""
    fake = FakeBulk([[201, 429, 201, 503], [201, 201]])
    sleeps: list[float] = []
    shipper = BulkShipper(fake, settings(max_docs=10), tmp_path / "dead.ndjson", sleep=sleeps.append, rand=lambda: 1.0)
    result = shipper.ship_items([item(i) for i in range(4)])
    assert [[0, 1, 2, 3], [1, 3]] == fake.calls
    assert (4, 0, 2) == (result.acknowledged, result.dead_lettered, result.retried)
    assert [0.5] == sleeps
    assert not (tmp_path / "dead.ndjson").exists()


def test_refused_items_go_to_dead_letters_and_do_not_block(tmp_path):
    """A 400 item is written to the dead-letter file with its reason; the others are acknowledged."""
    fake = FakeBulk([[201, 400, 201]])
    dead = tmp_path / "state" / "dead.ndjson"
    result = BulkShipper(fake, settings(), dead, sleep=lambda s: None).ship_items([item(i) for i in range(3)])
    assert (2, 1) == (result.acknowledged, result.dead_lettered)
    (record,) = [json.loads(line) for line in dead.read_text().splitlines()]
    assert {"@timestamp", "index", "id", "status", "error", "document"} == set(record)
    assert ("id1", 400, "mapper_parsing_exception", 1) == (
        record["id"], record["status"], record["error"]["type"], record["document"]["n"])


def test_connection_error_retries_whole_request_then_gives_up(tmp_path):
    """Backfill mode: after max_retries rounds, ConnectionFailed names how many documents are left."""
    down = opensearchpy.ConnectionError("N/A", "[Errno 111] Connection refused", None)
    fake = FakeBulk([down] * 3)
    shipper = BulkShipper(fake, settings(max_retries=2), tmp_path / "d", sleep=lambda s: None)
    with pytest.raises(ConnectionFailed) as caught:
        shipper.ship_items([item(0), item(1)])
    assert 3 == len(fake.calls)
    assert "2 documents after 2 retries" in str(caught.value)
    assert "connection refused" in str(caught.value)


def test_retry_forever_until_accepted(tmp_path):
    """max_retries=None (the daemon) keeps going through many failures."""
    down = opensearchpy.TransportError(503, "unavailable", {})
    fake = FakeBulk([down] * 20 + [[201]])
    shipper = BulkShipper(fake, settings(max_retries=3), tmp_path / "d", max_retries=None, sleep=lambda s: None)
    assert 1 == shipper.ship_items([item(0)]).acknowledged
    assert 21 == len(fake.calls)


def test_stop_event_ends_the_wait(tmp_path):
    """A set stop event turns the wait into ShippingStopped instead of sleeping on."""
    stop = threading.Event()
    fake = FakeBulk([opensearchpy.TransportError(429, "busy", {})] * 5)

    def sleep(seconds: float) -> None:
        stop.set()

    shipper = BulkShipper(fake, settings(), tmp_path / "d", max_retries=None, stop=stop, sleep=sleep)
    with pytest.raises(ShippingStopped):
        shipper.ship_items([item(0)])
    assert 1 == len(fake.calls)


def test_non_retryable_request_error_raises(tmp_path):
    """A 400 for the whole request is a bug or a misconfiguration: RequestRefused at once."""
    fake = FakeBulk([opensearchpy.RequestError(400, "illegal_argument_exception", {})])
    with pytest.raises(RequestRefused):
        BulkShipper(fake, settings(), tmp_path / "d", sleep=lambda s: None).ship_items([item(0)])


def test_serialisation_is_the_same_bytes_with_and_without_orjson(monkeypatch):
    """orjson is optional (the `fast` extra): the json fallback must write exactly the same bulk
    lines, including non-ASCII text, so ids, sizes and batching do not depend on the install."""
    pytest.importorskip("orjson", reason="orjson is part of the test extra; without it only one path exists")
    from shipper import batching

    doc = {"@timestamp": "2024-03-21T11:39:49.869-04:00", "smtp": {"transcript": "Grüße \u00e9\t\"q\"\n", "transaction": 0,
           "tls": True, "extensions": ["SIZE 1", "8BITMIME"]}, "email": {"to": {"address": "ü@exämple.com"}}}
    fast = batching.dumps(doc)
    monkeypatch.setattr(batching, "orjson", None)
    assert fast == batching.dumps(doc)
    assert json.loads(fast) == doc


# -- where the sender's time goes (the summary's "sender:" line) ---------------------------


def test_ship_batch_counts_its_time_retries_and_back_off_included(tmp_path):
    """bulk_seconds is the wall time of ship_batch: each request and each back-off wait."""
    slow = FakeBulk([lambda ids: (time.sleep(0.05), [429] * len(ids))[1], lambda ids: (time.sleep(0.05), [201] * len(ids))[1]])
    # initial_backoff 0.2, equal jitter with rand 0: waits 0.1 s
    shipper = BulkShipper(slow, settings(initial_backoff=0.2), tmp_path / "d", sleep=time.sleep, rand=lambda: 0.0)
    result = shipper.ship_batch([item(0), item(1)])
    assert (2, 2) == (result.acknowledged, result.retried)
    assert result.bulk_seconds >= 0.05 + 0.1 + 0.05
    assert 0.0 == result.parser_wait_seconds  # nothing upstream of a bare ship_batch


def test_pipelined_sender_counts_waiting_for_the_parser(tmp_path):
    """The sender thread of PipelinedShipper counts how long it waited for a full batch."""

    class Accepts:  # every item of every request: 201
        def bulk(self, body: bytes, filter_path: str):
            return {"errors": False, "items": [{"index": {"status": 201}}] * (body.count(b"\n") // 2)}

    docs = [{"@timestamp": f"2024-03-21T11:39:{n:02d}.000Z", "smtp": {"session_id": str(n)}} for n in range(4)]
    shipper = BulkShipper(Accepts(), settings(max_docs=3), tmp_path / "d", sleep=lambda s: None)
    sender = PipelinedShipper(shipper)
    for doc in docs:
        time.sleep(0.1)  # a slow parser: the sender has nothing to send meanwhile
        sender.submit(doc)
    result = sender.close()
    assert (4, 2) == (result.acknowledged, result.requests)
    # the first batch is full after 0.3 s, the second (flushed by close) 0.1 s after that: both
    # waits count (one alone would be 0.3 or 0.1); minus the first request's few milliseconds
    assert result.parser_wait_seconds >= 0.35
    assert result.bulk_seconds > 0


def test_ship_results_add_up_their_times():
    a = ShipResult(acknowledged=1, bulk_seconds=1.5, parser_wait_seconds=0.25)
    a.add(ShipResult(acknowledged=2, bulk_seconds=2.0, parser_wait_seconds=0.5))
    assert (3, 3.5, 0.75) == (a.acknowledged, a.bulk_seconds, a.parser_wait_seconds)


def test_sender_time_line_gives_shares_and_seconds():
    line = sender_time(ShipResult(bulk_seconds=24.0, parser_wait_seconds=1.0))
    assert "sender: 96% of the time in bulk requests (24.0 s), 4% of the time waiting for the parser (1.0 s)" == line
    assert "sender: no bulk request was sent" == sender_time(ShipResult())
