"""kill -9 at random moments while a writer appends (and rotates now and then), and at the
moments the guarantee rests on (just before and after a checkpoint is written, just after an
acknowledgement): after a final drain the index holds exactly the documents of a whole-file
parse, whole — none missing, none extra, none cut short."""

from __future__ import annotations

import random
import subprocess
import time

import pytest

from .test_daemon_support import (
    HOST_NAME,
    SCALE,
    BackgroundWriter,
    DaemonProcess,
    TranscriptWriter,
    assert_same_documents,
    expected_documents,
    indexed_documents,
    run_once,
    write_config,
    xeams_input,
)

pytestmark = [pytest.mark.integration, pytest.mark.soak]


CRASH_POINTS = ["before-checkpoint", "after-checkpoint", "after-ack"]


def test_sigkill_at_random_moments_loses_and_duplicates_nothing(tmp_path, opensearch, opensearch_url, index_prefix):
    """≥20 SIGKILLs of `python -m shipper run` during continuous appends (×SMTP_SHIPPER_SOAK_SCALE):
    every third one aimed at a checkpoint write or an acknowledgement (the daemon kills itself
    there: SMTP_SHIPPER_TEST_CRASH), the others at a random moment; restart each time; then
    `run --once` drains: the index holds exactly the parse's documents."""
    rounds = max(20, int(20 * SCALE))
    rand = random.Random(20241127)
    log = tmp_path / "SMTPOutboundConversation.log"
    writer = TranscriptWriter(log, tmp_path / "journal.log", concurrency=6, seed=3)
    state = tmp_path / "state"
    cfg = write_config(tmp_path / "cfg.yml", url=opensearch_url, prefix=index_prefix, state_dir=state,
                       inputs=[xeams_input(str(tmp_path / "SMTPOutbound*.log"))])
    rotated: list = []
    aimed = 0
    bg = BackgroundWriter(writer, interval=0.005, lines=4)
    bg.start()
    try:
        for i in range(rounds):
            if i % 5 == 4:  # rename-and-create now and then: sessions span files, crashes hit both
                with writer.lock:
                    rotated.append(tmp_path / f"SMTPOutboundConversation-{len(rotated) + 1}.log")
                    log.rename(rotated[-1])
                    writer.reopen()
            if i % 3 == 2:  # aimed: the daemon kills itself at the n-th pass of a point
                point = f"{CRASH_POINTS[i // 3 % len(CRASH_POINTS)]}:{rand.randint(1, 4)}"
                d = DaemonProcess(cfg, tmp_path / "daemon.log", env={"SMTP_SHIPPER_TEST_CRASH": point})
                try:
                    d.proc.wait(20)
                except subprocess.TimeoutExpired:  # the point not reached that often: kill it anyway
                    d.kill()
                else:
                    aimed += 1
                    d.wait(1)
            else:
                d = DaemonProcess(cfg, tmp_path / "daemon.log")
                # Python start-up takes ~0.5 s; kill before, during and after the first shipments.
                time.sleep(rand.uniform(0.2, 2.0))
                d.kill()
            assert d.proc.returncode == -9, f"round {i}: the daemon exited by itself:\n{d.log_text()[-3000:]}"
    finally:
        bg.stop()
    writer.finish_all()
    writer.close()
    assert run_once(cfg, tmp_path / "daemon.log") == 0, (tmp_path / "daemon.log").read_text()[-3000:]

    assert aimed >= rounds // 3 // 2, "the aimed kill points were hardly ever reached"
    expected = expected_documents([*rotated, log], HOST_NAME)
    assert len(expected) > 100
    assert_same_documents(expected, *indexed_documents(opensearch, index_prefix))
