"""The visualizations, run against real data in a real OpenSearch.

Transcripts are parsed by the real pipeline (``shipper.pipeline.documents_of_files``): the golden
scenarios of tests/golden/*.log and a set written here that is sure to hold rejections,
deferrals, failures, several domains, reasons and a session without TLS. The documents are
indexed under the real index template. Then each visualization's aggregation is sent the way
Dashboards would send it (its visState aggs and its search source, translated below), and the
buckets must equal what is counted from the documents in plain Python.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from shipper import dashboards
from shipper.config import Settings
from shipper.documents import document_id
from shipper.localtime import resolve_zone
from shipper.model import Direction
from shipper.opensearch import prepare
from shipper.pipeline import ParseOptions, ParseStats, documents_of_files
from shipper.setup import index_steps

pytestmark = pytest.mark.integration

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
HOUR_MS = 3_600_000


# --------------------------------------------------------------------------- transcripts
def _session(lines: list[str], sid: int, start: str, peer: str, *, secure: bool = True) -> list[str]:
    """Xeams outbound log lines: connection line, the protocol lines (one second apart), end."""
    base = datetime.fromisoformat(start)
    out = [f"{start},000 - [{sid:>10}] ************ New {'(secure) ' if secure else ''}connection to: {peer}"]
    for n, payload in enumerate(lines, 1):
        stamp = datetime.fromtimestamp(base.timestamp() + n, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")
        out.append(f"{stamp},{n * 7 % 1000:03d} - [{sid:>10}] {payload}")
    stamp = datetime.fromtimestamp(base.timestamp() + len(lines) + 1, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")
    out.append(f"{stamp},999 - [{sid:>10}] ~~~~~~~~~~~~ Connection Terminated ( 1)")
    return out


def _delivery(rcpts: list[tuple[str, str]], *, greeting: str = "250-mx.example at your service",
              final: str = "250 2.0.0 OK queued") -> list[str]:
    lines = ["S <-- EHLO mail.ourcompany.example", f"C --> {greeting}", "C --> 250 ENHANCEDSTATUSCODES",
             "S <-- MAIL FROM:<john@ourcompany.example>", "C --> 250 2.1.0 OK"]
    accepted = False
    for rcpt, reply in rcpts:
        lines += [f"S <-- RCPT TO:<{rcpt}>", f"C --> {reply}"]
        accepted |= reply.startswith("2")
    if accepted:
        lines += ["S <-- DATA", "C --> 354 Go ahead", f"C --> {final}"]
    return lines + ["S <-- QUIT", "C --> 221 2.0.0 closing connection"]


def written_transcripts() -> str:
    t = "2026-11-20 10:00:00"
    sessions = [
        _session(_delivery([("randy@gmail.dashtest.example", "250 2.1.5 OK")]), 1001, t, "142.251.171.26"),
        _session(_delivery([("randy@gmail.dashtest.example", "250 2.1.5 OK")]), 1002, "2026-11-20 11:05:00", "142.251.171.27"),
        _session(_delivery([("nobody@gmail.dashtest.example", "550 5.1.1 The email account that you tried to reach does not exist"),
                            ("randy@gmail.dashtest.example", "250 2.1.5 OK")]), 1003, "2026-11-20 11:10:00", "142.251.171.26"),
        _session(_delivery([("a@blocked.dashtest.example", "554 5.7.1 Service unavailable; client host blocked using zen.spamhaus.org")]),
                 1004, "2026-11-20 11:20:00", "203.0.113.5", secure=False),
        _session(_delivery([("b@blocked.dashtest.example", "554 5.7.1 Service unavailable; client host blocked using zen.spamhaus.org"),
                            ("c@blocked.dashtest.example", "554 5.7.1 Service unavailable; client host blocked using zen.spamhaus.org")]),
                 1005, "2026-11-20 11:25:00", "203.0.113.5", secure=False),
        _session(_delivery([("grey@slow.dashtest.example", "451 4.7.1 Greylisted, please try again later")]),
                 1006, "2026-11-20 12:00:00", "198.51.100.7"),
        _session(_delivery([("full@slow.dashtest.example", "452 4.2.2 Mailbox full")]), 1007, "2026-11-20 12:30:00", "198.51.100.8"),
        _session(_delivery([("x@big.dashtest.example", "250 2.1.5 OK")], final="552 5.3.4 Message size exceeds fixed limit"),
                 1008, "2026-11-20 13:00:00", "192.0.2.44"),
        _session(["C --> 554 5.7.1 Connection refused by policy"], 1009, "2026-11-20 13:30:00", "192.0.2.45"),
        _session(_delivery([("y@dropped.dashtest.example", "250 2.1.5 OK")])[:9], 1010, "2026-11-20 14:00:00", "192.0.2.46"),
    ]
    return "\r\n".join(line for s in sessions for line in s) + "\r\n"


def parse(paths: list[str], *, direction: str = "auto", zone: str = "UTC") -> list[dict[str, Any]]:
    # direction "auto": from the file name (SMTPOutboundConversation.log → outbound), then content.
    options = ParseOptions(
        direction=None if direction == "auto" else Direction(direction), tz=resolve_zone(zone), host_name="test-host"
    )
    return list(documents_of_files(paths, options, ParseStats()))


def golden_scenarios() -> Iterator[list[dict[str, Any]]]:
    """The documents of each golden scenario, parsed as tests/test_golden.py does (a .log file
    or a folder of them; ``<name>.args.json`` for direction and zone, else auto and New York)."""
    for entry in sorted(GOLDEN.iterdir()):
        if entry.suffix == ".log":
            name, paths = entry.stem, [str(entry)]
        elif entry.is_dir():
            name, paths = entry.name, [str(p) for p in sorted(entry.glob("*.log"))]
        else:
            continue
        args_file = GOLDEN / f"{name}.args.json"
        args = json.loads(args_file.read_text()) if args_file.exists() else {}
        yield parse(paths, direction=args.get("direction", "auto"), zone=args.get("timezone", "America/New_York"))


# --------------------------------------------------------------------------- visState → DSL
def search_source_query(source: dict[str, Any]) -> dict[str, Any]:
    """The query of a search source: its (empty) query bar plus its enabled filter pills."""
    query = source.get("query", {})
    assert query.get("query", "") == "", "the translator only knows empty query bars; use filter pills"
    filters = [dashboards.filter_query(f) for f in source.get("filter", []) if not f["meta"].get("disabled")]
    return {"bool": {"filter": filters}}


def translate_aggs(aggs: list[dict[str, Any]], *, unlimited: bool = False) -> dict[str, Any]:
    """Nest the enabled bucket aggs in their order, as Dashboards' AggConfigs does; a count
    metric is each bucket's doc_count. Unknown agg types fail, so a new one gets a translation.
    ``unlimited`` lifts the terms sizes (a display limit) so every bucket can be compared."""
    buckets = [a for a in aggs if a.get("enabled", True) and a["schema"] != "metric"]
    metrics = [a for a in aggs if a.get("enabled", True) and a["schema"] == "metric"]
    assert [m["type"] for m in metrics] == ["count"], "only count metrics are translated"
    tree: dict[str, Any] = {}
    for agg in reversed(buckets):
        params = agg["params"]
        if agg["type"] == "terms":
            size = 10_000 if unlimited else params["size"]
            body: dict[str, Any] = {"terms": {"field": params["field"], "size": size, "order": {"_count": params["order"]}}}
            if params.get("missingBucket"):
                body["terms"]["missing"] = "__missing__"
        elif agg["type"] == "date_histogram":
            # "auto" picks an interval from the time range; the data here spans hours → 1h.
            body = {"date_histogram": {"field": params["field"], "fixed_interval": "1h", "min_doc_count": params["min_doc_count"]}}
        elif agg["type"] == "filters":
            body = {"filters": {"filters": {f["label"] or f["input"]["query"]: {"query_string": {"query": f["input"]["query"]}} for f in params["filters"]}}}
        else:
            raise AssertionError(f"no translation for agg type {agg['type']}")
        if tree:
            body["aggs"] = tree
        tree = {agg["id"]: body}
    return tree


def flatten(aggs: list[dict[str, Any]], result: dict[str, Any]) -> Counter[tuple[Any, ...]]:
    """Rows of key tuples → doc_count, one column per bucket agg (a data table's rows). Terms
    keys of booleans are read as "true"/"false" (key_as_string), dates as epoch ms (key)."""
    bucket_aggs = [a for a in aggs if a["schema"] != "metric"]
    rows: Counter[tuple[Any, ...]] = Counter()

    def walk(node: dict[str, Any], depth: int, keys: tuple[Any, ...]) -> None:
        if depth == len(bucket_aggs):
            rows[keys] += node["doc_count"]
            return
        agg = bucket_aggs[depth]
        for bucket in node[agg["id"]]["buckets"]:
            key = bucket.get("key_as_string", bucket["key"]) if agg["type"] == "terms" else bucket["key"]
            walk(bucket, depth + 1, keys + (key,))

    walk(result, 0, ())
    return rows


# --------------------------------------------------------------------------- the oracle
def get(doc: dict[str, Any], dotted: str, default: Any = None) -> Any:
    node: Any = doc
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def hour(doc: dict[str, Any]) -> int:
    ts = datetime.fromisoformat(get(doc, "@timestamp").replace("Z", "+00:00"))
    return int(ts.timestamp() * 1000) // HOUR_MS * HOUR_MS


def count(docs, where: Callable[[dict], bool], *keys: Callable[[dict], Any]) -> Counter[tuple[Any, ...]]:
    return Counter(tuple(k(d) for k in keys) for d in docs if where(d) and all(k(d) is not None for k in keys))


NON_DELIVERY = ("rejected", "deferred")
EXPECTED: dict[str, Callable[[list[dict]], Counter]] = {
    "vis-deliveries-over-time": lambda docs: count(docs, lambda d: True, hour, lambda d: get(d, "smtp.verdict")),
    "vis-verdict-share": lambda docs: count(docs, lambda d: True, lambda d: get(d, "smtp.verdict")),
    "vis-rejections-by-domain": lambda docs: count(
        docs, lambda d: get(d, "smtp.verdict") == "rejected", lambda d: get(d, "smtp.recipient_domain")
    ),
    "vis-reply-codes": lambda docs: count(
        docs, lambda d: get(d, "smtp.verdict") in NON_DELIVERY,
        lambda d: get(d, "smtp.reply.code"), lambda d: get(d, "smtp.reply.enhanced", "__missing__"),
    ),
    "vis-remote-servers": lambda docs: count(
        docs, lambda d: get(d, "smtp.verdict") in NON_DELIVERY,
        lambda d: get(d, "smtp.remote.ip"), lambda d: get(d, "smtp.remote.host", "__missing__"), lambda d: get(d, "smtp.verdict"),
    ),
    "vis-tls-share": lambda docs: count(docs, lambda d: True, lambda d: "true" if get(d, "smtp.tls") else "false"),
    "vis-reasons": lambda docs: count(
        docs, lambda d: get(d, "smtp.reason") is not None, lambda d: get(d, "smtp.reason"), lambda d: get(d, "smtp.verdict")
    ),
}


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def documents(tmp_path_factory) -> list[dict[str, Any]]:
    folder = tmp_path_factory.mktemp("transcripts")
    written = folder / "SMTPOutboundConversation.log"
    written.write_bytes(written_transcripts().encode())
    docs = parse([str(written)])
    for scenario in golden_scenarios():  # each on its own: a golden scenario is a whole story
        docs += scenario
    # Scenarios built from the same seed session share document ids: the index keeps one of
    # each (the last written), and so does the oracle.
    return list({document_id(d): d for d in docs}.values())


@pytest.fixture
def indexed(opensearch, index_prefix, documents) -> tuple[str, list[dict[str, Any]]]:
    base = Settings()
    settings = dataclasses.replace(base, opensearch=dataclasses.replace(base.opensearch, index_prefix=index_prefix))
    for step in index_steps(settings, opensearch):
        step.run(dry_run=False)
    items = [prepare(doc, index_prefix) for doc in documents]
    body = b"".join(item.action + item.source for item in items)
    answer = opensearch.bulk(body=body, refresh=True)
    failed = [i for i in answer["items"] if i["index"].get("error")]
    assert not failed, failed[:3]
    return index_prefix, documents


# --------------------------------------------------------------------------- tests
def test_the_data_holds_what_the_visualizations_are_about(documents):
    """Guard: the oracle is not vacuous (rejections, deferrals, reasons, no-TLS, failures)."""
    verdicts = Counter(get(d, "smtp.verdict") for d in documents)
    assert verdicts["rejected"] >= 4 and verdicts["deferred"] >= 2 and verdicts["delivered"] >= 3 and verdicts["failed"] >= 1
    assert len({get(d, "smtp.recipient_domain") for d in documents if get(d, "smtp.verdict") == "rejected"}) >= 2
    assert {get(d, "smtp.tls") for d in documents} >= {True, False}
    assert len({get(d, "smtp.reason") for d in documents if get(d, "smtp.reason")}) >= 2


@pytest.mark.parametrize("suffix", sorted(EXPECTED))
def test_visualization_buckets_match_the_documents(opensearch, indexed, suffix):
    prefix, docs = indexed
    (vis_obj,) = [o for o in dashboards.render_saved_objects(prefix) if o["id"] == f"smtp-shipper-{prefix}-{suffix}"]
    vis = json.loads(vis_obj["attributes"]["visState"])
    source = json.loads(vis_obj["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"])
    expected = EXPECTED[suffix](docs)
    assert expected, f"{suffix}: the data has nothing for this visualization"

    def run(aggs: dict[str, Any]) -> Counter[tuple[Any, ...]]:
        body = {"size": 0, "query": search_source_query(source), "aggs": aggs}
        return flatten(vis["aggs"], opensearch.search(index=f"{prefix}-*", body=body)["aggregations"])

    # Every bucket, sizes lifted: exactly the counts made in Python.
    assert dict(run(translate_aggs(vis["aggs"], unlimited=True))) == dict(expected)
    # As shipped: the top rows only, each with its exact count.
    shown = run(translate_aggs(vis["aggs"]))
    assert shown and shown.items() <= expected.items()


def test_rejections_by_domain_lists_exactly_the_rejecting_domains(opensearch, indexed):
    """The example of the brief, spelled out on the transcripts written above."""
    prefix, _docs = indexed
    (vis_obj,) = [o for o in dashboards.render_saved_objects(prefix) if o["id"].endswith("-vis-rejections-by-domain")]
    source = json.loads(vis_obj["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"])
    vis = json.loads(vis_obj["attributes"]["visState"])
    result = opensearch.search(index=f"{prefix}-*", body={"size": 0, "query": search_source_query(source), "aggs": translate_aggs(vis["aggs"])})
    got = {key[0]: n for key, n in flatten(vis["aggs"], result["aggregations"]).items()}
    assert got["blocked.dashtest.example"] == 3
    assert got["gmail.dashtest.example"] == 1
    assert "slow.dashtest.example" not in got  # deferred, not rejected
    assert "ourcompany.example" not in got


def test_saved_search_finds_every_attempt_to_an_address(opensearch, indexed):
    """Typing "randy@gmail.dashtest.example" (quoted) in Discover's query bar: every attempt, each with
    the columns of the saved search and its transcript."""
    prefix, docs = indexed
    (search,) = [o for o in dashboards.render_saved_objects(prefix) if o["id"].endswith("-search-deliveries")]
    columns = search["attributes"]["columns"]
    # What Dashboards sends for a quoted KQL free-text query.
    typed = {"multi_match": {"type": "phrase", "query": "randy@gmail.dashtest.example", "lenient": True}}
    result = opensearch.search(
        index=f"{prefix}-*", body={"size": 100, "query": typed, "sort": [{"@timestamp": "desc"}]}
    )
    hits = [h["_source"] for h in result["hits"]["hits"]]
    attempts = [d for d in docs if get(d, "email.to.address") == "randy@gmail.dashtest.example"]
    assert len(attempts) == 3
    found_to_randy = [h for h in hits if get(h, "email.to.address") == "randy@gmail.dashtest.example"]
    assert len(found_to_randy) == len(attempts)
    for hit in found_to_randy:
        assert "RCPT TO:<randy@gmail.dashtest.example>" in get(hit, "smtp.transcript")
        assert all(get(hit, c) is not None for c in columns), [c for c in columns if get(hit, c) is None]


def test_rejected_and_deferred_search_shows_only_those_with_a_reason(opensearch, indexed):
    prefix, docs = indexed
    (search,) = [o for o in dashboards.render_saved_objects(prefix) if o["id"].endswith("-search-non-deliveries")]
    source = json.loads(search["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"])
    result = opensearch.search(index=f"{prefix}-*", body={"size": 500, "query": search_source_query(source)})
    hits = [h["_source"] for h in result["hits"]["hits"]]
    assert len(hits) == sum(1 for d in docs if get(d, "smtp.verdict") in NON_DELIVERY)
    assert all(get(h, "smtp.verdict") in NON_DELIVERY and get(h, "smtp.reason") for h in hits)


def test_index_pattern_field_list_agrees_with_field_caps(opensearch, indexed):
    """The shipped field list says what OpenSearch itself says of each field of a real index."""
    prefix, _docs = indexed
    (pattern,) = [o for o in dashboards.render_saved_objects(prefix) if o["type"] == "index-pattern"]
    listed = {f["name"]: f for f in json.loads(pattern["attributes"]["fields"]) if not f["name"].startswith("_")}
    caps = opensearch.field_caps(index=f"{prefix}-*", fields="*")["fields"]
    caps = {
        name: next(iter(by_type.items()))
        for name, by_type in caps.items()
        if not name.startswith("_") and "object" not in by_type  # objects are paths, not fields
    }
    assert set(listed) == set(caps)
    for name, (es_type, cap) in caps.items():
        assert listed[name]["esTypes"] == [es_type], name
        assert (listed[name]["searchable"], listed[name]["aggregatable"]) == (cap["searchable"], cap["aggregatable"]), name

