"""Several hosts: the client options chosen in ``make_client`` (round robin, failover to the next
host, dead-host timeout, no sniffing), and which refusals ``BulkShipper`` retries during a
failover and which it dead-letters.

The fake is the lowest seam, opensearch-py's ``Connection`` (one per host): the client's own
transport and connection pool above it are real, and so is ``BulkShipper``'s loop."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import opensearchpy
import pytest
from opensearchpy.connection_pool import ConnectionPool, RoundRobinSelector

from shipper.config import BulkSettings, OpenSearchSettings
from shipper.errors import RequestRefused
from shipper.opensearch import DEAD_TIMEOUT, BulkShipper, make_client, retryable

HOSTS = ("http://127.0.0.1:9320", "http://127.0.0.1:9321", "http://127.0.0.1:9322")
# What each fake node does with a request: port → behaviour(method, url, body) → (status, answer),
# or raises an opensearch-py ConnectionError / ConnectionTimeout. Set per test.
Behaviour = Callable[[str, str, bytes | None], tuple[int, dict[str, Any]]]
NODES: dict[int, Behaviour] = {}
CALLS: list[tuple[int, str]] = []


class FakeNode(opensearchpy.Connection):
    """One host of the pool: answers as ``NODES[port]`` says, and raises for error statuses as
    the real connection classes do (``_raise_error``)."""

    def perform_request(self, method, url, params=None, body=None, timeout=None, ignore=(), headers=None):
        CALLS.append((self.port, url))
        status, answer = NODES[self.port](method, url, body)
        raw = json.dumps(answer)
        if not (200 <= status < 300) and status not in ignore:
            self._raise_error(status, raw, "application/json")
        return status, {"content-type": "application/json"}, raw


@pytest.fixture(autouse=True)
def _reset() -> None:
    NODES.clear()
    CALLS.clear()


def settings(*hosts: str, max_retries: int = 5) -> OpenSearchSettings:
    bulk = BulkSettings(max_docs=100, max_retries=max_retries, initial_backoff=0.01, max_backoff=0.01)
    return OpenSearchSettings(hosts=hosts or HOSTS, index_prefix="p", bulk=bulk)


def client(*hosts: str, **overrides: Any) -> opensearchpy.OpenSearch:
    return make_client(settings(*hosts), connection_class=FakeNode, **overrides)


def ok(method: str, url: str, body: bytes | None) -> tuple[int, dict[str, Any]]:
    return 200, {"acknowledged": True}


def refused(method: str, url: str, body: bytes | None) -> tuple[int, dict[str, Any]]:
    raise opensearchpy.ConnectionError("N/A", "[Errno 111] Connection refused", OSError(111, "Connection refused"))


def timed_out(method: str, url: str, body: bytes | None) -> tuple[int, dict[str, Any]]:
    raise opensearchpy.ConnectionTimeout("TIMEOUT", "Read timed out. (read timeout=30)", TimeoutError())


def error(status: int, kind: str) -> dict[str, Any]:
    return {"type": kind, "reason": f"{kind} (fake)"}


# --------------------------------------------------------------------------- the client options


def test_several_hosts_round_robin_fail_over_and_no_sniffing():
    """Three hosts: opensearch-py's round-robin pool from a random start, each host tried once
    per request (2 retries, timeouts included), no retry on an HTTP status, our dead timeout,
    no sniffing."""
    transport = client().transport
    pool = transport.connection_pool
    assert isinstance(pool, ConnectionPool) and isinstance(pool.selector, RoundRobinSelector)
    assert (DEAD_TIMEOUT, 3) == (pool.dead_timeout, len(pool.connections))
    assert (2, True, ()) == (transport.max_retries, transport.retry_on_timeout, tuple(transport.retry_on_status))
    assert (False, False, None) == (transport.sniff_on_start, transport.sniff_on_connection_fail, transport.sniffer_timeout)


def test_one_host_is_never_retried_by_the_transport():
    """One host: no failover to make; BulkShipper's rounds with backoff are the only retries."""
    transport = client("http://127.0.0.1:9320").transport
    assert (0, False) == (transport.max_retries, transport.retry_on_timeout)


def test_requests_are_spread_over_the_hosts():
    """Six requests over three healthy hosts: two each."""
    for port in (9320, 9321, 9322):
        NODES[port] = ok
    c = client()
    for _ in range(6):
        c.indices.refresh()
    assert {9320: 2, 9321: 2, 9322: 2} == {p: [port for port, _ in CALLS].count(p) for p in NODES}


@pytest.mark.parametrize("failure", [refused, timed_out], ids=["refused", "timed-out"])
def test_a_host_that_does_not_answer_is_skipped_until_its_dead_timeout(failure):
    """A node that refuses connections (killed) or does not answer in time: the same request
    goes on to the next host at once, and the node is left out until its dead timeout has
    passed; then it is tried again, and used once it answers."""
    NODES.update({9320: ok, 9321: failure, 9322: ok})
    c = client(dead_timeout=0.3)
    for _ in range(9):
        c.indices.refresh()  # each succeeds: a refused host costs a retry, not an error
    tried = [port for port, _ in CALLS]
    assert 1 == tried.count(9321)  # once, then out of the rotation
    assert 9 == tried.count(9320) + tried.count(9322)
    NODES[9321] = ok  # the node is back
    time.sleep(0.35)
    CALLS.clear()
    for _ in range(6):
        c.indices.refresh()
    assert 9321 in [port for port, _ in CALLS]


def test_an_error_status_is_not_sent_to_another_host():
    """A 503 is the cluster's answer (no cluster manager yet): the transport raises it at once
    instead of asking the next node, which would say the same; BulkShipper waits and retries."""
    NODES.update({p: (lambda m, u, b: (503, {"error": error(503, "cluster_block_exception"), "status": 503}))
                  for p in (9320, 9321, 9322)})
    with pytest.raises(opensearchpy.TransportError) as caught:
        client().indices.refresh()
    assert (503, 1) == (caught.value.status_code, len(CALLS))


def test_all_hosts_down_raises_a_connection_error_after_trying_each_once():
    """The whole cluster unreachable: one attempt per host, then ConnectionError (BulkShipper
    backs off and tries again)."""
    NODES.update({p: refused for p in (9320, 9321, 9322)})
    with pytest.raises(opensearchpy.ConnectionError):
        client().indices.refresh()
    assert [9320, 9321, 9322] == sorted(port for port, _ in CALLS)


# --------------------------------------------------------------------------- what a failover answers


@pytest.mark.parametrize(("status", "kind", "expected"), [
    (503, "no_shard_available_action_exception", True),
    (503, "unavailable_shards_exception", True),
    (503, "cluster_block_exception", True),       # no cluster manager elected (yet)
    (503, "cluster_manager_not_discovered_exception", True),
    (403, "cluster_block_exception", True),       # index.blocks.write, lifted by the operator
    (429, "cluster_block_exception", True),       # read-only after a full disk
    (404, "shard_not_found_exception", True),     # the primary moved between routing and arrival
    (429, "es_rejected_execution_exception", True),
    (500, "node_not_connected_exception", True),
    (400, "mapper_parsing_exception", False),
    (400, "strict_dynamic_mapping_exception", False),
    (400, "illegal_argument_exception", False),
    (404, "index_not_found_exception", False),
])
def test_retryable(status, kind, expected):
    """Refusals about the cluster's state are retried, refusals of the document are not."""
    assert expected == retryable(status, error(status, kind))


def test_retryable_reads_the_root_cause():
    """A whole-request error names its type in ``root_cause`` too; either is read."""
    wrapped = {"root_cause": [error(403, "cluster_block_exception")], "type": "cluster_block_exception"}
    assert retryable(403, wrapped) and not retryable(403, {"type": "security_exception"})


def bulk_node(plans: list[list[tuple[int, str | None]] | tuple[int, str]]) -> Behaviour:
    """A node answering its successive ``_bulk`` requests: a list of per-item (status, error
    type) — as many as the request has items, the last one repeated — or one (status, type)
    for the whole request."""

    def answer(method: str, url: str, body: bytes | None) -> tuple[int, dict[str, Any]]:
        plan = plans.pop(0) if len(plans) > 1 else plans[0]
        if isinstance(plan, tuple):
            status, kind = plan
            return status, {"error": {"root_cause": [error(status, kind)], **error(status, kind)}, "status": status}
        count = len((body or b"").splitlines()) // 2
        items = []
        for n in range(count):
            status, kind = plan[min(n, len(plan) - 1)]
            detail: dict[str, Any] = {"status": status}
            if kind:
                detail["error"] = error(status, kind)
            items.append({"index": detail})
        return 200, {"errors": any(s >= 300 for s, _ in plan), "items": items}

    return answer


def docs(n: int) -> list[dict[str, Any]]:
    return [{"@timestamp": "2024-03-21T11:00:00.000Z", "n": i} for i in range(n)]


def shipper(tmp_path: Path, **kw: Any) -> BulkShipper:
    s = settings("http://127.0.0.1:9320", **kw)
    return BulkShipper(make_client(s, connection_class=FakeNode), s, tmp_path / "dead.ndjson", sleep=lambda _: None)


def test_failover_refusals_of_bulk_items_are_retried_and_a_mapping_rejection_dead_lettered(tmp_path):
    """During a failover the items come back 503 no_shard_available, 503 and 403 cluster
    blocks, 404 shard not found and 429; sent again, they are indexed. Only the 400 mapping
    rejection goes to the dead-letter file."""
    first = [(201, None), (503, "no_shard_available_action_exception"), (503, "cluster_block_exception"),
             (403, "cluster_block_exception"), (404, "shard_not_found_exception"),
             (429, "es_rejected_execution_exception"), (400, "mapper_parsing_exception")]
    NODES[9320] = bulk_node([first, [(201, None)]])
    result = shipper(tmp_path).ship(docs(7))
    assert (6, 1, 5, 2) == (result.acknowledged, result.dead_lettered, result.retried, result.requests)
    (record,) = [json.loads(line) for line in (tmp_path / "dead.ndjson").read_text().splitlines()]
    assert (400, "mapper_parsing_exception", 6) == (record["status"], record["error"]["type"], record["document"]["n"])


@pytest.mark.parametrize(("status", "kind"), [
    (503, "cluster_block_exception"),   # no cluster manager: the whole bulk request is blocked
    (503, "no_shard_available_action_exception"),
    (403, "cluster_block_exception"),
    (429, "es_rejected_execution_exception"),
])
def test_a_whole_bulk_request_refused_by_a_failover_is_retried(tmp_path, status, kind):
    """The whole request refused (twice) for the cluster's state: sent again after a backoff,
    every document indexed, none dead-lettered."""
    NODES[9320] = bulk_node([(status, kind), (status, kind), [(201, None)]])
    result = shipper(tmp_path).ship(docs(4))
    assert (4, 0, 8, 3) == (result.acknowledged, result.dead_lettered, result.retried, result.requests)
    assert not (tmp_path / "dead.ndjson").exists()


def test_a_whole_bulk_request_refused_for_its_content_is_not_retried(tmp_path):
    """A 400 for the whole request is not a failover: reported at once, nothing dead-lettered
    (the documents are still the caller's), no second request."""
    NODES[9320] = bulk_node([(400, "illegal_argument_exception"), [(201, None)]])
    with pytest.raises(RequestRefused, match="400"):
        shipper(tmp_path).ship(docs(2))
    assert 1 == len(CALLS)


# --------------------------------------------------------------------------- replicas: auto


@pytest.mark.parametrize(("data_nodes", "expected"), [(1, 0), (2, 1), (3, 1), (7, 1)])
def test_auto_replicas_follow_the_data_nodes(data_nodes, expected):
    """``replicas: auto``: 0 on one data node (a replica could never be allocated), 1 from two
    data nodes on (each document survives the loss of one node); a number is taken as it is."""
    from shipper.opensearch import resolve_replicas

    NODES[9320] = lambda m, u, b: (200, {"status": "green", "number_of_nodes": data_nodes + 1,
                                         "number_of_data_nodes": data_nodes})
    c = client("http://127.0.0.1:9320")
    assert expected == resolve_replicas("auto", c)
    assert 2 == resolve_replicas(2, c)


def test_a_cluster_block_is_reported_as_unavailable_not_as_a_permission(tmp_path):
    """`setup` or `trace` refused with a 403 write block: the cluster is unavailable for writes
    (an operator's block), not the user short of a permission."""
    from shipper.errors import ConnectionFailed
    from shipper.opensearch import translate_errors

    NODES[9320] = bulk_node([(403, "cluster_block_exception")])
    s = settings("http://127.0.0.1:9320")
    with pytest.raises(ConnectionFailed) as caught, translate_errors(s, "setup"):
        make_client(s, connection_class=FakeNode).indices.refresh()
    assert "is unavailable (403) (setup): cluster_block_exception" in str(caught.value)
    assert "permission" not in str(caught.value)
