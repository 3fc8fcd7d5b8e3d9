"""`run --once`: drains what is there and exits; sessions still open at the end stay open (the
checkpoint stays before them) unless `--flush-open` ships them as incomplete."""

from __future__ import annotations

import json

import pytest

from .test_daemon_support import (
    TranscriptWriter,
    indexed_docs,
    run_once,
    write_config,
    xeams_input,
)

pytestmark = pytest.mark.integration


def test_once_leaves_open_sessions_then_flush_open_ships_them(tmp_path, opensearch, opensearch_url, index_prefix):
    """First --once: only the terminated session; the checkpoint sits at the open session's first
    line. The session then ends in the file: the next --once ships it whole. A third, unended
    session is shipped as incomplete by --once --flush-open."""
    log = tmp_path / "SMTPOutboundConversation.log"
    writer = TranscriptWriter(log, tmp_path / "journal.log")
    done = writer.write_session()
    start_of_open = log.stat().st_size
    sid = str(writer.next_id)
    writer.next_id += 1
    lines = writer.session_lines(sid)
    writer.write_raw(b"".join(writer._format(sid, p) for p in lines[:5]))
    state = tmp_path / "s"
    cfg = write_config(tmp_path / "cfg.yml", url=opensearch_url, prefix=index_prefix, state_dir=state,
                       inputs=[xeams_input(str(log))])

    assert run_once(cfg, tmp_path / "d.log") == 0
    sessions = {h["_source"]["smtp"]["session_id"] for h in indexed_docs(opensearch, index_prefix)}
    assert sessions == {done}
    (cp,) = json.loads((state / "checkpoints.json").read_text())["files"].values()
    assert cp["offset"] == start_of_open

    writer.write_raw(b"".join(writer._format(sid, p) for p in lines[5:]))
    assert run_once(cfg, tmp_path / "d.log") == 0
    docs = {h["_source"]["smtp"]["session_id"]: h["_source"] for h in indexed_docs(opensearch, index_prefix)}
    assert set(docs) == {done, sid}
    assert docs[sid]["smtp"]["verdict"] == "delivered" and not docs[sid]["smtp"].get("incomplete")

    cut = writer.write_session(terminate=False)
    writer.close()
    assert run_once(cfg, tmp_path / "d.log", "--flush-open") == 0
    docs = {h["_source"]["smtp"]["session_id"]: h["_source"] for h in indexed_docs(opensearch, index_prefix)}
    assert set(docs) == {done, sid, cut}
    assert docs[cut]["smtp"]["incomplete"] is True
    (cp,) = json.loads((state / "checkpoints.json").read_text())["files"].values()
    assert cp["offset"] == log.stat().st_size


def test_once_gives_up_on_an_unreachable_cluster_with_exit_5_and_keeps_the_checkpoint(tmp_path):
    """Cron must not pile up runs that wait forever: `--once` retries `opensearch.bulk.max_retries`
    times, then exits 5 naming the cluster; nothing is checkpointed past the unshipped documents,
    so the next run sends them. (A closed loopback port: no cluster involved.)"""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]  # free once the socket is closed: nothing listens there
    log = tmp_path / "SMTPOutboundConversation.log"
    writer = TranscriptWriter(log, tmp_path / "journal.log")
    writer.write_session()
    writer.close()
    state = tmp_path / "s"
    cfg = write_config(tmp_path / "cfg.yml", url=f"http://127.0.0.1:{closed_port}", prefix="never", state_dir=state,
                       inputs=[xeams_input(str(log))])
    text = cfg.read_text().replace("initial_backoff: 0.2", "initial_backoff: 0.05\n    max_retries: 2")
    cfg.write_text(text)

    assert run_once(cfg, tmp_path / "d.log", timeout=60) == 5
    stderr = (tmp_path / "d.log").read_text()
    assert f"cannot reach OpenSearch at http://127.0.0.1:{closed_port}" in stderr
    assert "gave up after opensearch.bulk.max_retries (2) retries" in stderr
    assert "Traceback" not in stderr
    files = json.loads((state / "checkpoints.json").read_text())["files"] if (state / "checkpoints.json").exists() else {}
    assert all(cp["offset"] == 0 for cp in files.values())
