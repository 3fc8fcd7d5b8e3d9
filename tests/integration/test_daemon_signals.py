"""Signals and systemd: SIGTERM during ingest exits 0 with checkpoints written; SIGHUP picks up
a new input (and survives a bad config); the notify protocol on a socket the test binds; the
unit file passes `systemd-analyze verify` without a word and rates ≤ 2.0 in `security`."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .test_daemon_support import (
    HOST_NAME,
    REPO,
    BackgroundWriter,
    DaemonProcess,
    TranscriptWriter,
    assert_same_documents,
    expected_documents,
    indexed_docs,
    indexed_documents,
    read_status,
    run_once,
    wait_until,
    write_config,
    xeams_input,
)

pytestmark = pytest.mark.integration


def test_sigterm_during_ingest_exits_0_with_checkpoints(tmp_path, opensearch, opensearch_url, index_prefix):
    """SIGTERM while lines keep coming: exit 0 well within the stop timeout, checkpoints.json
    names the file, and its offset is at most the file size; a restart then ships the rest."""
    log = tmp_path / "SMTPOutboundConversation.log"
    writer = TranscriptWriter(log, tmp_path / "journal.log")
    state = tmp_path / "state"
    cfg = write_config(tmp_path / "cfg.yml", url=opensearch_url, prefix=index_prefix, state_dir=state,
                       inputs=[xeams_input(str(log))])
    bg = BackgroundWriter(writer, interval=0.005, lines=4)
    bg.start()
    d = DaemonProcess(cfg, tmp_path / "daemon.log")
    try:
        wait_until(lambda: indexed_docs(opensearch, index_prefix), 30, "the first documents")
        t0 = time.monotonic()
        d.signal(signal.SIGTERM)
        rc = d.wait(30)
        took = time.monotonic() - t0
    finally:
        bg.stop()
    assert rc == 0, d.log_text()[-2000:]
    assert took < 20
    cps = json.loads((state / "checkpoints.json").read_text())["files"]
    (cp,) = cps.values()
    assert cp["path"] == str(log)
    assert 0 < cp["offset"] <= log.stat().st_size
    assert "received SIGTERM" in d.log_text()
    # The restart ships the rest, from the checkpoint: every document of the file, once, whole.
    writer.finish_all()
    writer.close()
    assert run_once(cfg, tmp_path / "daemon.log") == 0, d.log_text()[-2000:]
    assert_same_documents(expected_documents([log], HOST_NAME), *indexed_documents(opensearch, index_prefix))


def test_sighup_adds_an_input_and_survives_a_bad_config(tmp_path, opensearch, opensearch_url, index_prefix):
    """A second input added to the file + SIGHUP → its file is shipped; a broken config + SIGHUP
    → an error is logged and the daemon goes on with the old configuration."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    wa = TranscriptWriter(a / "SMTPOutboundConversation.log", tmp_path / "ja.log", first_id=1000)
    wb = TranscriptWriter(b / "SMTPOutboundConversation.log", tmp_path / "jb.log", first_id=9000)
    sid_a = wa.write_session()
    sid_b = wb.write_session()
    wa.close()
    wb.close()
    cfg_path = tmp_path / "cfg.yml"
    kw = {"url": opensearch_url, "prefix": index_prefix, "state_dir": tmp_path / "s"}
    write_config(cfg_path, inputs=[xeams_input(str(a / "*.log"))], **kw)
    d = DaemonProcess(cfg_path, tmp_path / "daemon.log")
    try:
        def sessions():
            return {h["_source"]["smtp"]["session_id"] for h in indexed_docs(opensearch, index_prefix)}

        wait_until(lambda: sid_a in sessions(), 30, "input a")
        cfg_path.write_text("inputs: [this is not: valid")
        d.signal(signal.SIGHUP)
        wait_until(lambda: "reload failed" in d.log_text(), 10, "the reload error")
        assert d.proc.poll() is None
        write_config(cfg_path, inputs=[xeams_input(str(a / "*.log")), xeams_input(str(b / "*.log"))], **kw)
        d.signal(signal.SIGHUP)
        wait_until(lambda: sid_b in sessions(), 30, "input b after SIGHUP")
    finally:
        assert d.stop() == 0
    assert "configuration reloaded: 2 inputs" in d.log_text()


def _recv_all(sock: socket.socket, until: float) -> list[str]:
    msgs = []
    while time.monotonic() < until:
        try:
            msgs.append(sock.recv(4096).decode())
        except TimeoutError:
            continue
        if any("STOPPING=1" in m for m in msgs):
            break
    return msgs


def test_notify_protocol_ready_status_watchdog_stopping(tmp_path, opensearch, opensearch_url, index_prefix):
    """On the NOTIFY_SOCKET we bind: READY=1 (with MAINPID), STATUS= lines, WATCHDOG=1 pings at
    half of WATCHDOG_USEC, and STOPPING=1 after SIGTERM; journald-style log lines on stderr."""
    log = tmp_path / "SMTPOutboundConversation.log"
    writer = TranscriptWriter(log, tmp_path / "journal.log")
    writer.write_session()
    writer.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    name = f"smtp-shipper-notify-{os.getpid()}-{time.monotonic_ns()}"
    sock.bind(b"\0" + name.encode())  # abstract namespace, as systemd may hand out
    sock.settimeout(0.2)
    cfg = write_config(tmp_path / "cfg.yml", url=opensearch_url, prefix=index_prefix, state_dir=tmp_path / "s",
                       inputs=[xeams_input(str(log))])
    d = DaemonProcess(cfg, tmp_path / "daemon.log",
                      env={"NOTIFY_SOCKET": "@" + name, "WATCHDOG_USEC": "1000000", "INVOCATION_ID": "test"})
    try:
        first = _recv_all(sock, time.monotonic() + 6)  # 6 s of running (STOPPING is not sent yet)
        d.signal(signal.SIGTERM)
        rest = _recv_all(sock, time.monotonic() + 15)
        assert d.wait(30) == 0
    finally:
        sock.close()
        if d.proc.poll() is None:
            d.kill()
    msgs = first + rest
    ready = [m for m in msgs if "READY=1" in m]
    assert ready and f"MAINPID={d.pid}" in ready[0]
    assert any(m.startswith("STATUS=shipping 1 files") for m in msgs), msgs
    # every 0.5 s for the ~5 s after start-up; ≥ 6 leaves slack for a slow start
    assert sum(m == "WATCHDOG=1" for m in first) >= 6, first
    assert any("STOPPING=1" in m for m in rest)
    text = d.log_text()
    assert re.search(r"^<6>shipper\.daemon: started", text, re.MULTILINE), text[:500]
    assert not re.search(r"^\d{4}-\d\d-\d\d", text, re.MULTILINE)  # no timestamps of our own


def _unit_for_here(tmp_path: Path) -> Path:
    exe = shutil.which("smtp-shipper", path=str(Path(sys.executable).parent)) or sys.executable
    unit = (REPO / "deploy" / "smtp-shipper.service").read_text()
    assert "ExecStart=/usr/bin/smtp-shipper run" in unit
    path = tmp_path / "smtp-shipper.service"
    path.write_text(unit.replace("ExecStart=/usr/bin/smtp-shipper", f"ExecStart={exe}"))
    return path


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed (apt-get install systemd)")
def test_unit_file_verifies_clean_and_rates_secure(tmp_path):
    """`systemd-analyze verify` prints nothing (it exits 0 even on unknown keys, so its output is
    the check) and `systemd-analyze security --offline=true` rates the unit ≤ 2.0."""
    unit = _unit_for_here(tmp_path)
    verify = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)], check=False, capture_output=True, text=True)
    assert verify.returncode == 0
    assert verify.stdout.strip() == "" and verify.stderr.strip() == "", verify.stdout + verify.stderr
    sec = subprocess.run(["systemd-analyze", "security", "--offline=true", "--no-pager", str(unit)],
                         check=False, capture_output=True, text=True)
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d)", sec.stdout)
    assert m, sec.stdout[-2000:] + sec.stderr
    assert float(m.group(1)) <= 2.0
    text = unit.read_text()
    for key in ("Type=notify", "StateDirectory=smtp-shipper", "User=smtp-shipper", "WatchdogSec=",
                "ProtectSystem=strict", "NoNewPrivileges=yes", "CapabilityBoundingSet=\n",
                "SystemCallFilter=@system-service", "UMask=0077", "ReadOnlyPaths="):
        assert key in text, key


def test_status_command_reads_status_json(tmp_path, opensearch, opensearch_url, index_prefix):
    """`smtp-shipper status` shows per file position, size, lag, open sessions, defects."""
    log = tmp_path / "SMTPOutboundConversation.log"
    writer = TranscriptWriter(log, tmp_path / "journal.log")
    writer.write_session()
    writer.write_session(terminate=False, quit=False)  # still talking: open
    writer.write_raw(b"garbage that is no xeams line\n")
    writer.close()
    state = tmp_path / "s"
    cfg = write_config(tmp_path / "cfg.yml", url=opensearch_url, prefix=index_prefix, state_dir=state,
                       inputs=[xeams_input(str(log))])
    d = DaemonProcess(cfg, tmp_path / "daemon.log")
    try:
        st = wait_until(lambda: (s := read_status(state)) and s["counters"].get("documents") and s, 30, "status")
        out = subprocess.run([sys.executable, "-m", "shipper", "status", "--config", str(cfg)],
                             check=False, capture_output=True, text=True, cwd=str(REPO))
    finally:
        assert d.stop() == 0
    (f,) = st["files"]
    assert f["size"] == log.stat().st_size and f["read_offset"] == f["size"]
    assert f["sessions_open"] == 1 and f["defects"] == 1
    assert 0 < f["position"] < f["size"]  # held before the open session
    assert f["lag_bytes"] == f["size"] - f["position"]
    assert out.returncode == 0, out.stderr
    assert str(log) in out.stdout and "documents_delivered=1" in out.stdout
    assert "not running" not in out.stdout
    after = subprocess.run([sys.executable, "-m", "shipper", "status", "--config", str(cfg)],
                           check=False, capture_output=True, text=True, cwd=str(REPO))
    assert after.returncode == 0 and "(not running: this is its last status)" in after.stdout
