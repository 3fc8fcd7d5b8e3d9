"""BulkShipper against a real node: refused documents go to the dead-letter file while the
rest are indexed; 429s and 503s from a (rewriting) proxy in front of the node are retried per
document until every document has arrived."""

from __future__ import annotations

import http.client
import http.server
import json
import threading
import urllib.parse
from collections.abc import Iterator

import pytest

from shipper.config import load
from shipper.opensearch import BulkShipper, make_client
from shipper.setup import index_steps

pytestmark = pytest.mark.integration


def settings(url: str, prefix: str, **bulk):
    overrides = {"opensearch.hosts": [url], "opensearch.index_prefix": prefix, "opensearch.bulk.initial_backoff": 0.01,
                 "opensearch.bulk.max_backoff": 0.05}
    overrides.update({f"opensearch.bulk.{k}": v for k, v in bulk.items()})
    return load(None, overrides=overrides, env={}, log_warnings=False)


def doc(n: int, **extra) -> dict:
    stamp = f"2024-03-{n % 3 + 20:02d}T11:39:{n % 60:02d}.000Z"
    d = {
        "@timestamp": stamp,
        "event": {"start": stamp, "end": stamp, "dataset": "xeams.smtp", "outcome": "success"},
        "smtp": {"verdict": "delivered", "session_id": str(7000000 + n), "transaction": 0, "direction": "outbound",
                 "remote": {"ip": "142.251.171.26"}, "reply": {"code": "250", "text": "2.0.0 OK"}},
        "email": {"from": {"address": "support@synametrics.com"}, "to": {"address": f"user{n}@example.com"}},
        "smtp_extra": None,
        "host": {"name": "test"},
    }
    del d["smtp_extra"]
    for dotted, value in extra.items():
        node = d
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return d


@pytest.fixture
def installed(opensearch, opensearch_url, index_prefix):
    s = settings(opensearch_url, index_prefix)
    for step in index_steps(s, opensearch):
        step.run(dry_run=False)
    return s


def count(opensearch, prefix: str) -> int:
    opensearch.indices.refresh(index=f"{prefix}-*")
    return opensearch.count(index=f"{prefix}-*")["count"]


def test_refused_documents_are_dead_lettered_and_the_rest_indexed(opensearch, installed, index_prefix, tmp_path):
    """An unknown field (strict mapping) and a bad IP are refused for good; 8 others arrive."""
    docs = [doc(n) for n in range(10)]
    docs[3] = doc(3, **{"smtp.surprise": "x"})
    docs[7] = doc(7, **{"smtp.remote.ip": "not-an-ip"})
    dead = tmp_path / "dead-letters.ndjson"
    shipper = BulkShipper(make_client(installed.opensearch), installed.opensearch, dead)
    result = shipper.ship(docs)
    assert (8, 2) == (result.acknowledged, result.dead_lettered)
    assert 8 == count(opensearch, index_prefix)
    records = [json.loads(line) for line in dead.read_text().splitlines()]
    by_user = {r["document"]["email"]["to"]["address"]: r for r in records}
    assert {"user3@example.com", "user7@example.com"} == set(by_user)
    assert "strict_dynamic_mapping_exception" == by_user["user3@example.com"]["error"]["type"]
    assert "mapper_parsing_exception" == by_user["user7@example.com"]["error"]["type"]
    assert all(400 == r["status"] and r["index"].startswith(index_prefix) and r["id"] for r in records)


class RewritingProxy(http.server.BaseHTTPRequestHandler):
    """Forwards to the node; answers the first bulk request with a 503, and then answers
    each document's first attempt with a 429 item for every third document (those are not
    forwarded, as a node that rejects them would not index them)."""

    upstream: str = ""
    state: dict  # set per test by the fixture

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with self.state["lock"]:
            self.state["requests"] += 1
            first = self.state["requests"] == 1
        if first:
            return self.reply(503, b'{"error":{"type":"unavailable","reason":"warming up"},"status":503}')
        lines = body.splitlines()
        pairs = list(zip(lines[0::2], lines[1::2]))
        forward, rejected = [], set()
        for i, (action, source) in enumerate(pairs):
            doc_id = json.loads(action)["index"]["_id"]
            with self.state["lock"]:
                reject = i % 3 == 0 and doc_id not in self.state["rejected_once"]
                if reject:
                    self.state["rejected_once"].add(doc_id)
            if reject:
                rejected.add(i)
            else:
                forward.append(action + b"\n" + source + b"\n")
        answers = iter([])
        if forward:
            _, data = self.upstream_call(self.path, b"".join(forward))
            answers = iter(json.loads(data).get("items", []))
        items = []
        for i in range(len(pairs)):
            if i in rejected:
                items.append({"index": {"status": 429, "error": {"type": "es_rejected_execution_exception", "reason": "queue full"}}})
            else:
                items.append(next(answers))
        self.reply(200, json.dumps({"errors": bool(rejected) or any(
            it["index"].get("status", 200) >= 300 for it in items), "items": items}).encode())

    def upstream_call(self, path: str, body: bytes) -> tuple[int, bytes]:
        parts = urllib.parse.urlsplit(self.upstream)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        try:
            conn.request("POST", path, body=body, headers={"Content-Type": "application/x-ndjson"})
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def reply(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def proxy(opensearch_url) -> Iterator[tuple[str, dict]]:
    state = {"lock": threading.Lock(), "requests": 0, "rejected_once": set()}
    handler = type("P", (RewritingProxy,), {"upstream": opensearch_url, "state": state})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", state
    server.shutdown()
    server.server_close()


def test_429_items_and_503_requests_are_retried_until_all_arrive(opensearch, installed, index_prefix, proxy, tmp_path):
    """Every document arrives exactly once, though a third were refused with 429 once each."""
    url, state = proxy
    s = settings(url, index_prefix, max_docs=30)
    docs = [doc(n) for n in range(100)]
    shipper = BulkShipper(make_client(s.opensearch), s.opensearch, tmp_path / "dead.ndjson")
    result = shipper.ship(docs)
    assert (100, 0) == (result.acknowledged, result.dead_lettered)
    assert len(state["rejected_once"]) > 30
    assert result.retried >= len(state["rejected_once"])
    assert 100 == count(opensearch, index_prefix)
    assert not (tmp_path / "dead.ndjson").exists()


def test_gzip_request_bodies(opensearch, installed, opensearch_url, index_prefix, tmp_path):
    """opensearch.bulk.compression: true sends gzip bodies; the node indexes them all the same."""
    s = settings(opensearch_url, index_prefix, compression=True)
    client = make_client(s.opensearch)
    assert client.transport.connection_pool.connections[0].http_compress
    result = BulkShipper(client, s.opensearch, tmp_path / "dead.ndjson").ship(doc(n) for n in range(25))
    assert (25, 0) == (result.acknowledged, result.dead_lettered)
    assert 25 == count(opensearch, index_prefix)
