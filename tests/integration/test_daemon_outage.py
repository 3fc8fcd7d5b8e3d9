"""OpenSearch unreachable for a while, and OpenSearch answering 429 to some bulk items: nothing is
lost, buffered data stays bounded, the shipper catches up."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from .test_daemon_support import (
    HOST_NAME,
    BackgroundWriter,
    DaemonProcess,
    FaultProxy,
    TranscriptWriter,
    expected_ids,
    indexed_docs,
    indexed_ids,
    read_status,
    wait_until,
    write_config,
    xeams_input,
)

pytestmark = pytest.mark.integration

LIMIT = 256 * 1024


def test_outage_pauses_reading_at_the_limit_and_catches_up(tmp_path, opensearch, opensearch_url, index_prefix):
    """The proxy drops every connection for ~8 s while ~1 MB of transcripts is written; reading
    pauses at pipeline.max_buffered_bytes (status.json never reports more buffered than the limit
    plus one read), RSS stays bounded, and afterwards every document arrives exactly once."""
    proxy = FaultProxy(opensearch_url)
    log = tmp_path / "SMTPOutboundConversation.log"
    writer = TranscriptWriter(log, tmp_path / "journal.log", concurrency=8, seed=11)
    state = tmp_path / "state"
    cfg = write_config(tmp_path / "cfg.yml", url=proxy.url, prefix=index_prefix, state_dir=state,
                       inputs=[xeams_input(str(log))], max_buffered_bytes=LIMIT)
    d = DaemonProcess(cfg, tmp_path / "daemon.log")
    bg = BackgroundWriter(writer, interval=0.002, lines=10)
    seen_buffered, rss = [], []
    try:
        bg.start()
        wait_until(lambda: indexed_ids(opensearch, index_prefix), 30, "the first documents")
        proxy.down = True
        t_end = time.monotonic() + 8
        while time.monotonic() < t_end:
            if st := read_status(state):
                seen_buffered.append(st["max_buffered_bytes_seen"])
            rss.append(d.rss_kib())
            time.sleep(0.5)
        st = read_status(state)
        assert st and st["paused"], st  # the writer outran the limit: reading is paused
        assert "cannot reach OpenSearch" in (st["last_error"] or "") or "not accepted" in (st["last_error"] or ""), st
        assert log.stat().st_size - st["files"][0]["read_offset"] > LIMIT  # and the rest waits on disk
        proxy.down = False
        bg.stop()
        writer.finish_all()
        writer.close()
        expected = expected_ids([log], HOST_NAME)
        wait_until(lambda: len(indexed_ids(opensearch, index_prefix)) >= len(expected), 90, "catching up")
        final = read_status(state)
    finally:
        bg.stop_event.set()
        rc = d.stop()
        proxy.close()
    assert rc == 0
    assert proxy.cut_requests > 0
    got = indexed_ids(opensearch, index_prefix)
    assert sorted(got) == sorted(expected)
    # A read is cut at the remaining room, but a whole chunk's lines are taken: ≤ limit + 64 KiB.
    assert max(seen_buffered + [final["max_buffered_bytes_seen"]]) <= LIMIT + 64 * 1024
    assert max(rss) < 200 * 1024, rss  # KiB: the queue did not grow with the backlog


def test_429_on_some_bulk_items_all_documents_arrive(tmp_path, opensearch, opensearch_url, index_prefix):
    """A third of the bulk items come back 429 (in fact indexed): the shipper re-sends exactly
    those, with backoff — counted, and none dead-lettered (the proxy indexed them, so an
    index that is complete alone would not tell a retry from a dead letter) — and every
    document is in the index once."""
    proxy = FaultProxy(opensearch_url)
    proxy.reject_fraction = 0.33
    log = tmp_path / "SMTPOutboundConversation.log"
    writer = TranscriptWriter(log, tmp_path / "journal.log", concurrency=5, seed=13)
    for _ in range(300):
        writer.step(10)
    writer.finish_all()
    writer.close()
    expected = expected_ids([log], HOST_NAME)
    state = tmp_path / "s"
    cfg = write_config(tmp_path / "cfg.yml", url=proxy.url, prefix=index_prefix, state_dir=state,
                       inputs=[xeams_input(str(log))])
    d = DaemonProcess(cfg, tmp_path / "daemon.log", "--once")
    try:
        assert d.wait(120) == 0, d.log_text()[-2000:]
    finally:
        proxy.close()
    assert proxy.rejected_items > 10
    got = indexed_ids(opensearch, index_prefix)
    assert sorted(got) == sorted(expected)
    assert "not accepted" in d.log_text()
    counters = read_status(state)["counters"]
    assert counters["documents_retried"] >= proxy.rejected_items
    assert counters.get("dead_lettered", 0) == 0
    assert not (state / "dead-letter.ndjson").exists()


def test_deleted_file_is_released_after_the_grace_while_opensearch_is_down(
        tmp_path, opensearch, opensearch_url, index_prefix):
    """OpenSearch unreachable, the log file deleted: the daemon lets go of it after
    pipeline.deleted_file_grace (logged, disk space returned); what it had read is still
    shipped once OpenSearch is back."""
    proxy = FaultProxy(opensearch_url)
    proxy.down = True
    log = tmp_path / "SMTPOutboundConversation.log"
    writer = TranscriptWriter(log, tmp_path / "journal.log")
    sids = [writer.write_session() for _ in range(5)]
    writer.close()
    cfg = write_config(tmp_path / "cfg.yml", url=proxy.url, prefix=index_prefix, state_dir=tmp_path / "s",
                       inputs=[xeams_input(str(log))], deleted_file_grace=3)
    d = DaemonProcess(cfg, tmp_path / "daemon.log")
    try:
        st = wait_until(lambda: (x := read_status(tmp_path / "s")) and x["files"] and
                        x["files"][0]["read_offset"] == log.stat().st_size and x, 30, "the file to be read")
        assert st["in_flight_documents"] == 5
        log.unlink()

        def holds_deleted() -> bool:
            fds = Path(f"/proc/{d.pid}/fd")
            for fd in os.listdir(fds):
                try:
                    if os.readlink(fds / fd) == f"{log} (deleted)":
                        return True
                except OSError:  # closed meanwhile
                    pass
            return False

        assert wait_until(holds_deleted, 5, "the daemon to hold the deleted file")
        wait_until(lambda: not holds_deleted(), 20, "the deleted file to be released")
        assert "not acknowledged yet (pipeline.deleted_file_grace)" in d.log_text()
        proxy.down = False
        wait_until(lambda: len(indexed_ids(opensearch, index_prefix)) == 5, 60, "the 5 documents")
    finally:
        rc = d.stop()
        proxy.close()
    assert rc == 0
    got = {h["_source"]["smtp"]["session_id"] for h in indexed_docs(opensearch, index_prefix)}
    assert got == set(sids)
