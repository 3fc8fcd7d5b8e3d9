"""Sizes a peer controls, against a real node (issue 13, items 4 and 5): a 1 MB HELO, a 1 MB reply
text and a 2 MB transcript each land as a searchable document with nothing dead-lettered; the
mapping's net holds for any document; a 1,000-recipient session writes its transcript within its
budget and `trace --transcript` still shows it for every recipient."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from opensearchpy.exceptions import RequestError
from parsing import xeams

from shipper.cli import main
from shipper.setup import rendered_bodies

from .test_daemon_support import indexed_docs, run_once, write_config, xeams_input

pytestmark = pytest.mark.integration

MB = 1024 * 1024


@pytest.fixture(autouse=True)
def _env(monkeypatch, tmp_path):
    for name in ("SMTP_SHIPPER_CONFIG", "SMTP_SHIPPER_OPENSEARCH_HOSTS", "SMTP_SHIPPER_INDEX_PREFIX"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SMTP_SHIPPER_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("TZ", "UTC")


def ship(tmp_path: Path, opensearch_url: str, prefix: str, *logs: Path, limits: dict[str, int] | None = None) -> Path:
    """setup, then backfill ``logs`` (with ``limits`` in a config file); the dead-letter file's path."""
    common = ["--opensearch", opensearch_url, "--index-prefix", prefix]
    if limits:
        cfg = tmp_path / "config.yml"
        cfg.write_text(yaml.safe_dump({"limits": limits}))
        common += ["--config", str(cfg)]
    assert 0 == main(["setup", *common])
    assert 0 == main(["backfill", "--timezone", "UTC", "--no-progress", *map(str, logs), *common])
    return tmp_path / "state" / "dead-letter.ndjson"


def search(client: Any, prefix: str, query: dict[str, Any], **body: Any) -> list[dict[str, Any]]:
    client.indices.refresh(index=f"{prefix}-*")
    hits = client.search(index=f"{prefix}-*", body={"query": query, "size": 2000, **body})["hits"]["hits"]
    return list(hits)


def the_doc(client: Any, prefix: str, query: dict[str, Any]) -> dict[str, Any]:
    (hit,) = search(client, prefix, query)
    return dict(hit["_source"])


def outbound(sid: int, *middle: str, rcpts: tuple[str, ...] = ("r@example.net",), reply: tuple[str, ...] = ("250 2.1.5 OK",)) -> str:
    steps = ["************ New (secure) connection to: 203.0.113.9", "> EHLO mail.example.org", "< 250 mx.example.net",
             *middle, "> MAIL FROM:<s@example.org>", "< 250 2.1.0 OK"]
    for rcpt in rcpts:
        steps += [f"> RCPT TO:<{rcpt}>", *[f"< {line}" for line in reply]]
    if reply[-1].startswith("2"):
        steps += ["> DATA", "< 354 go ahead", "< 250 2.0.0 queued"]
    steps += ["> QUIT", "< 221 bye", "~~~~~~~~~~~~ Connection Terminated ( 1)"]
    return xeams(sid, *steps)


def test_a_huge_helo_reply_and_transcript_each_land_searchable(tmp_path, opensearch, opensearch_url, index_prefix):
    """The issue's three cases, shipped by backfill with the default limits: each document is
    indexed (none dead-lettered), found by its recipient and by the cut value itself, and says
    what was cut; the transcript is found by a phrase with Discover's highlighting."""
    inbound = tmp_path / "SMTPConversation.log"
    inbound.write_text(xeams(
        101, "************ New connection from: 198.51.100.7", "< 220 mx.example.net ESMTP",
        f"> EHLO {'h' * MB}", "< 250 mx.example.net", "> MAIL FROM:<s@example.org>", "< 250 2.1.0 OK",
        "> RCPT TO:<helo@example.net>", "< 550 5.7.1 relay denied", "> QUIT", "< 221 bye",
        "~~~~~~~~~~~~ Connection Terminated ( 1)", inbound=True))
    out = tmp_path / "SMTPOutboundConversation.log"
    # continuation lines of 52 KB (a line is cut at 64 KiB when read), 1 MB joined
    long_reply = tuple(f"550-5.7.1 {i:02d} {'blocked ' * 6500}" for i in range(20)) + ("550 5.7.1 blocked",)
    noops = [step for _ in range(1000) for step in (f"> NOOP {'n' * 2048}", "< 250 OK")]
    out.write_text(outbound(102, rcpts=("reply@example.net",), reply=long_reply)
                   + outbound(103, *noops, rcpts=("transcript@example.net",)))
    assert out.stat().st_size > 3 * MB

    dead = ship(tmp_path, opensearch_url, index_prefix, inbound, out)

    assert not dead.exists() or dead.read_text() == ""
    assert 3 == len(search(opensearch, index_prefix, {"match_all": {}}))
    helo = the_doc(opensearch, index_prefix, {"prefix": {"smtp.helo.lowercase": "hhhhhhhh"}})
    assert "helo@example.net" == helo["email"]["to"]["address"]
    assert ["smtp.helo", "smtp.remote.host"] == helo["smtp"]["truncated"]  # the line was cut at 64 KiB when read
    assert len(helo["smtp"]["helo"].encode()) <= 2048

    reply = the_doc(opensearch, index_prefix, {"bool": {"filter": [
        {"term": {"email.to.address": "reply@example.net"}}, {"term": {"smtp.truncated": "smtp.reply.text"}},
        {"match": {"smtp.reply.text": "blocked"}}]}})
    assert ("rejected", "550", "5.7.1") == (reply["smtp"]["verdict"], reply["smtp"]["reply"]["code"],
                                            reply["smtp"]["reply"]["enhanced"])

    hits = search(opensearch, index_prefix, {"bool": {"filter": [{"term": {"email.to.address": "transcript@example.net"}}],
                                                      "must": [{"match_phrase": {"smtp.transcript": "Connection Terminated"}}]}},
                  highlight={"fields": {"*": {}}})  # what Discover asks for (highlightAll)
    (hit,) = hits
    transcript = hit["_source"]["smtp"]["transcript"]
    assert 256 * 1024 >= len(transcript.encode()) and "[smtp-shipper: " in transcript
    assert "delivered" == hit["_source"]["smtp"]["verdict"] and ["smtp.transcript"] == hit["_source"]["smtp"]["truncated"]
    assert any("Connection" in fragment for fragment in hit["highlight"]["smtp.transcript"])


def test_the_mappings_net_holds_for_any_document(opensearch, index_prefix):
    """Written straight to an index (no shipper cut): a peer keyword of 8,191 characters of
    three bytes, or of a character that lower-cases to a longer one, is indexed, main field and
    .lowercase; a longer one is kept in _source but not indexed; nothing is refused. Without
    ignore_above, the same long value refuses the document (what the net is for)."""
    bodies = rendered_bodies(index_prefix, replicas=0, refresh_interval="1s", retention_days=1)
    index = f"{index_prefix}-2024.03.22"
    opensearch.indices.create(index=index, body={"mappings": bodies["mappings"]["template"]["mappings"]})
    values = {"euro": "€" * 8191, "grows": "Ⱥ" * 8191, "emoji": "😀" * 8191, "long": "x" * 40000}
    for name, value in values.items():
        opensearch.index(index=index, id=name, body={"@timestamp": "2024-03-22T10:00:00.000Z",
                                                     "smtp": {"helo": value, "remote": {"host": value}},
                                                     "email": {"to": {"address": value}}})
    opensearch.indices.refresh(index=index)

    def found(query: dict[str, Any]) -> list[str]:
        return sorted(h["_id"] for h in opensearch.search(index=index, body={"query": query})["hits"]["hits"])

    assert ["emoji", "euro", "grows", "long"] == found({"match_all": {}})
    assert ["euro"] == found({"term": {"smtp.helo": values["euro"]}})
    assert ["grows"] == found({"term": {"email.to.address.lowercase": "ⱥ" * 8191}})  # 24,573 bytes lower-cased
    assert [] == found({"term": {"smtp.remote.host": values["long"]}})  # kept, not indexed
    # ignore_above counts UTF-16 units: 8,191 emoji are 16,382 of them, kept but not indexed
    assert ["euro", "grows"] == found({"exists": {"field": "smtp.helo"}})
    raw = f"{index_prefix}-raw"
    opensearch.indices.create(index=raw, body={"mappings": {"properties": {"helo": {"type": "keyword"}}}})
    with pytest.raises(RequestError, match="immense term"):
        opensearch.index(index=raw, body={"helo": values["long"]})


@pytest.mark.parametrize(("length", "refused"), [(1_000_000, False), (1_000_001, True)])
def test_the_largest_transcript_is_still_highlighted(opensearch, index_prefix, length, refused):
    """limits.transcript_bytes stops at 1,000,000: a transcript that long is highlighted, one
    character more and the search that highlights it fails (index.highlight.max_analyzed_offset)."""
    bodies = rendered_bodies(index_prefix, replicas=0, refresh_interval="1s", retention_days=1)
    index = f"{index_prefix}-2024.03.22"
    opensearch.indices.create(index=index, body={"mappings": bodies["mappings"]["template"]["mappings"]})
    text = ("word " * (length // 5 + 1))[:length - 6] + " last."
    assert length == len(text)
    opensearch.index(index=index, id="t", body={"smtp": {"transcript": text}}, refresh=True)
    body = {"query": {"match": {"smtp.transcript": "last"}}, "highlight": {"fields": {"smtp.transcript": {}}}}
    if refused:
        with pytest.raises(RequestError, match="max_analyzed_offset"):
            opensearch.search(index=index, body=body)
    else:
        (hit,) = opensearch.search(index=index, body=body)["hits"]["hits"]
        assert "<em>last</em>" in hit["highlight"]["smtp.transcript"][-1]


def test_a_thousand_recipients_and_trace_shows_every_transcript(tmp_path, capsys, opensearch, opensearch_url, index_prefix):
    """With room for two transcripts per session, the first two documents hold it and the 998
    others name the first; trace --transcript shows it for the last recipient all the same, and
    --json --transcript gives it back exactly."""
    log = tmp_path / "SMTPOutboundConversation.log"
    rcpts = tuple(f"user{i:04d}@example.net" for i in range(1000))
    log.write_text(outbound(104, rcpts=rcpts))
    dead = ship(tmp_path, opensearch_url, index_prefix, log,
                limits={"transcript_bytes": 65536, "session_transcript_bytes": 131072})
    assert not dead.exists() or dead.read_text() == ""

    docs = [h["_source"] for h in indexed_docs(opensearch, index_prefix)]
    assert 1000 == len(docs)
    holders = [d for d in docs if "transcript" in d["smtp"]]
    assert 2 == len(holders) and {"user0000@example.net", "user0001@example.net"} == {
        d["email"]["to"]["address"] for d in holders}
    first = the_doc(opensearch, index_prefix, {"term": {"email.to.address": "user0000@example.net"}})
    (first_id,) = {d["smtp"]["transcript_ref"] for d in docs if "transcript" not in d["smtp"]}
    (named,) = search(opensearch, index_prefix, {"ids": {"values": [first_id]}})
    assert first == named["_source"]

    common = ["--opensearch", opensearch_url, "--index-prefix", index_prefix]
    capsys.readouterr()
    assert 0 == main(["trace", "user0999@example.net", "--transcript", *common])
    out = capsys.readouterr().out
    assert "user0999@example.net" in out.splitlines()[0]
    assert "New (secure) connection to: 203.0.113.9" in out and "[smtp-shipper: " in out
    assert out.rstrip().endswith("Connection Terminated ( 1)")
    assert 0 == main(["trace", "user0999@example.net", "--json", "--transcript", *common])
    (line,) = capsys.readouterr().out.splitlines()
    shown = json.loads(line)
    assert first["smtp"]["transcript"] == shown["smtp"]["transcript"] and first_id == shown["smtp"]["transcript_ref"]


def test_the_daemon_cuts_with_the_configured_limits(tmp_path, opensearch, opensearch_url, index_prefix):
    """`run --once` takes limits from its config (here field_bytes: 512): a 1 MB HELO is indexed,
    cut to 512 bytes."""
    log = tmp_path / "SMTPConversation.log"
    log.write_text(xeams(
        105, "************ New connection from: 198.51.100.7", "< 220 mx.example.net ESMTP",
        f"> EHLO {'d' * MB}", "< 250 mx.example.net", "> QUIT", "< 221 bye",
        "~~~~~~~~~~~~ Connection Terminated ( 1)", inbound=True))
    state = tmp_path / "daemon-state"
    cfg = write_config(tmp_path / "cfg.yml", url=opensearch_url, prefix=index_prefix, state_dir=state,
                       inputs=[xeams_input(str(log), direction="inbound")])
    settings = yaml.safe_load(cfg.read_text())
    cfg.write_text(yaml.safe_dump({**settings, "limits": {"field_bytes": 512}}))
    assert 0 == main(["setup", "--config", str(cfg)])
    assert 0 == run_once(cfg, tmp_path / "daemon.log")
    (doc,) = [h["_source"] for h in indexed_docs(opensearch, index_prefix)]
    assert 512 == len(doc["smtp"]["helo"].encode()) and doc["smtp"]["helo"].startswith("dddd")
    assert "smtp.helo" in doc["smtp"]["truncated"]
    assert not (state / "dead-letter.ndjson").exists() or (state / "dead-letter.ndjson").read_text() == ""
