"""Rotation while writing: rename-and-create, copytruncate, delete-while-open; a session that
spans the rotation point arrives whole; a session without termination is emitted when idle."""

from __future__ import annotations

import os
import shutil
import time

import pytest

from .test_daemon_support import (
    HOST_NAME,
    BackgroundWriter,
    DaemonProcess,
    TranscriptWriter,
    assert_same_documents,
    expected_documents,
    indexed_docs,
    indexed_documents,
    read_status,
    wait_until,
    write_config,
    xeams_input,
)

pytestmark = pytest.mark.integration


def _fully_read(state, log) -> bool:
    status = read_status(state)
    if not status:
        return False
    size = os.path.getsize(log)
    return any(f["path"] == str(log) and f["read_offset"] == size for f in status["files"])


def _start_spanning_session(writer: TranscriptWriter) -> tuple[str, list[str]]:
    """Write the first half of a session now; return its id and the remaining lines."""
    with writer.lock:
        sid = str(writer.next_id)
        writer.next_id += 1
        lines = writer.session_lines(sid)
        writer.write_raw(b"".join(writer._format(sid, p) for p in lines[:6]))
        return sid, lines[6:]


def _end_spanning_session(writer: TranscriptWriter, sid: str, rest: list[str]) -> None:
    with writer.lock:
        writer.write_raw(b"".join(writer._format(sid, p) for p in rest))


def test_rename_copytruncate_and_delete_while_writing(tmp_path, opensearch, opensearch_url, index_prefix):
    """Three rotations in one run while a writer appends; every session arrives once, and the
    sessions spanning each rotation point arrive whole (delivered, not incomplete)."""
    log = tmp_path / "SMTPOutboundConversation.log"
    writer = TranscriptWriter(log, tmp_path / "journal.log", concurrency=4, seed=5)
    state = tmp_path / "state"
    cfg = write_config(tmp_path / "cfg.yml", url=opensearch_url, prefix=index_prefix, state_dir=state,
                       inputs=[xeams_input(str(tmp_path / "SMTPOutbound*.log"), exclude=["*.copy"])],
                       deleted_file_grace=30)
    d = DaemonProcess(cfg, tmp_path / "daemon.log")
    bg = BackgroundWriter(writer, interval=0.01, lines=3)
    bg.start()
    spanning = []
    try:
        time.sleep(1.5)
        # 1. rename-and-create: the old file now matches the glob under a new name, too.
        sid, rest = _start_spanning_session(writer)
        with writer.lock:
            os.rename(log, tmp_path / "SMTPOutboundConversation-1.log")
            writer.reopen()
        _end_spanning_session(writer, sid, rest)
        spanning.append(sid)
        time.sleep(1.5)
        # 2. copytruncate: copy aside (excluded), truncate in place; the writer keeps its fd.
        sid, rest = _start_spanning_session(writer)
        with writer.lock:
            wait_until(lambda: _fully_read(state, log), 20, "the daemon to read the file to its end")
            shutil.copyfile(log, tmp_path / "SMTPOutboundConversation.log.copy")
            os.truncate(log, 0)
            writer.fh.seek(0)
        _end_spanning_session(writer, sid, rest)
        spanning.append(sid)
        time.sleep(1.5)
        # 3. delete while open: lines written just before the unlink are drained from the fd.
        sid, rest = _start_spanning_session(writer)
        with writer.lock:
            writer.write_raw(b"")
            os.unlink(log)
            writer.reopen()
        _end_spanning_session(writer, sid, rest)
        spanning.append(sid)
        time.sleep(1.5)
    finally:
        bg.stop()
    writer.finish_all()
    writer.close()
    expected = expected_documents([tmp_path / "journal.log"], HOST_NAME)

    def arrived():
        docs = indexed_docs(opensearch, index_prefix)
        return docs if len(docs) >= len(expected) else None

    docs = wait_until(arrived, 60, f"{len(expected)} documents")
    wait_until(lambda: "finished and released" in d.log_text(), 15, "the deleted file to be released")
    assert d.stop() == 0, d.log_text()[-3000:]
    assert_same_documents(expected, *indexed_documents(opensearch, index_prefix))
    docs = indexed_docs(opensearch, index_prefix)
    by_session = {}
    for h in docs:
        by_session.setdefault(h["_source"]["smtp"]["session_id"], []).append(h["_source"])
    for sid in spanning:
        for src in by_session[sid]:
            assert src["smtp"]["verdict"] == "delivered", src
            assert not src["smtp"].get("incomplete"), src
    text = d.log_text()
    assert "truncated" in text  # copytruncate was noticed and logged
    assert "deleted" in text
    assert "finished and released" in text  # the deleted file was let go


def test_idle_session_is_emitted_incomplete(tmp_path, opensearch, opensearch_url, index_prefix):
    """A session without termination (and no end of its dialogue: no QUIT) comes out after
    idle_timeout with smtp.incomplete: true."""
    log = tmp_path / "SMTPOutboundConversation.log"
    writer = TranscriptWriter(log, tmp_path / "journal.log")
    cfg = write_config(tmp_path / "cfg.yml", url=opensearch_url, prefix=index_prefix, state_dir=tmp_path / "s",
                       inputs=[xeams_input(str(log))], idle_timeout=2)
    d = DaemonProcess(cfg, tmp_path / "daemon.log")
    try:
        sid = writer.write_session(terminate=False, quit=False)
        writer.close()
        t0 = time.monotonic()
        docs = wait_until(lambda: indexed_docs(opensearch, index_prefix), 30, "the idle session")
        elapsed = time.monotonic() - t0
    finally:
        assert d.stop() == 0
    assert elapsed >= 1.5  # not before the idle time
    (doc,) = docs
    assert doc["_source"]["smtp"]["session_id"] == sid
    assert doc["_source"]["smtp"]["incomplete"] is True


def test_a_dialogue_that_plainly_ended_is_shipped_at_once(tmp_path, opensearch, opensearch_url, index_prefix):
    """A session ending in the server's 221 to QUIT, with no termination line after it, is
    shipped within seconds (not after idle_timeout, 300 s here), and is not incomplete."""
    log = tmp_path / "SMTPOutboundConversation.log"
    writer = TranscriptWriter(log, tmp_path / "journal.log")
    cfg = write_config(tmp_path / "cfg.yml", url=opensearch_url, prefix=index_prefix, state_dir=tmp_path / "s",
                       inputs=[xeams_input(str(log))], idle_timeout=300)
    d = DaemonProcess(cfg, tmp_path / "daemon.log")
    try:
        sid = writer.write_session(terminate=False)
        open_one = writer.write_session(terminate=False, quit=False)
        writer.close()
        docs = wait_until(lambda: indexed_docs(opensearch, index_prefix), 20, "the ended session")
    finally:
        assert d.stop() == 0
    (doc,) = docs  # the other one is still waiting for its next line
    assert (sid, None) == (doc["_source"]["smtp"]["session_id"], doc["_source"]["smtp"].get("incomplete"))
    assert open_one != sid
