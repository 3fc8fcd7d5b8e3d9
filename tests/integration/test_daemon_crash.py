"""kill -9 at random moments while a writer appends (and rotates now and then): after a final
drain the index holds exactly the documents of a whole-file parse — none missing, none extra."""

from __future__ import annotations

import random
import time
from collections import Counter

import pytest

from .test_daemon_support import (
    HOST_NAME,
    SCALE,
    BackgroundWriter,
    DaemonProcess,
    TranscriptWriter,
    expected_ids,
    indexed_ids,
    run_once,
    write_config,
    xeams_input,
)

pytestmark = [pytest.mark.integration, pytest.mark.soak]


def test_sigkill_at_random_moments_loses_and_duplicates_nothing(tmp_path, opensearch, opensearch_url, index_prefix):
    """≥20 SIGKILLs of `python -m shipper run` during continuous appends (×SMTP_SHIPPER_SOAK_SCALE);
    restart each time; then `run --once` drains: index ids == expected ids, count equal."""
    rounds = max(20, int(20 * SCALE))
    rand = random.Random(20241127)
    log = tmp_path / "SMTPOutboundConversation.log"
    writer = TranscriptWriter(log, tmp_path / "journal.log", concurrency=6, seed=3)
    state = tmp_path / "state"
    cfg = write_config(tmp_path / "cfg.yml", url=opensearch_url, prefix=index_prefix, state_dir=state,
                       inputs=[xeams_input(str(tmp_path / "SMTPOutbound*.log"))])
    rotated: list = []
    bg = BackgroundWriter(writer, interval=0.005, lines=4)
    bg.start()
    try:
        for i in range(rounds):
            if i % 5 == 4:  # rename-and-create now and then: sessions span files, crashes hit both
                with writer.lock:
                    rotated.append(tmp_path / f"SMTPOutboundConversation-{len(rotated) + 1}.log")
                    log.rename(rotated[-1])
                    writer.reopen()
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

    expected = expected_ids([*rotated, log], HOST_NAME)
    assert len(expected) == len(set(expected)) > 100
    got = indexed_ids(opensearch, index_prefix)
    dupes = [k for k, n in Counter(got).items() if n > 1]
    assert not dupes
    missing = set(expected) - set(got)
    extra = set(got) - set(expected)
    assert not missing and not extra, f"{len(missing)} missing, {len(extra)} extra of {len(expected)}"
    assert len(got) == len(expected)
