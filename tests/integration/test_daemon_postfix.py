"""The daemon on a Postfix maillog against a real node: kill -9 while Postfix lines are appended
(messages interleaved, deferred ones retried many lines later, so that the queue-ID state
matters across every restart); after a final drain the index holds exactly the documents of a
``parse`` of the same file, field for field — none missing, none extra, none without the
sender or Message-ID that lines before the crash had said."""

from __future__ import annotations

import datetime as dt
import random
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from .test_daemon_support import (
    HOST_NAME,
    SCALE,
    DaemonProcess,
    indexed_docs,
    run_once,
    write_config,
)

pytestmark = [pytest.mark.integration, pytest.mark.soak]


class MaillogWriter(threading.Thread):
    """Appends Postfix lines (classic syslog prefix, as maillog_file writes them): messages
    whose lines interleave; a third deferred first and delivered at a retry 40 messages later."""

    def __init__(self, path: Path, messages: int, seed: int = 15) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.messages = messages
        self.rand = random.Random(seed)
        self.clock = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(hours=2)
        self.stop_now = threading.Event()

    def _line(self, prog: str, text: str) -> str:
        self.clock += dt.timedelta(milliseconds=self.rand.randint(5, 400))
        return f"{self.clock:%b %d %H:%M:%S} mx postfix/{prog}: {text}\n"

    def _message(self, n: int) -> list[list[str]]:
        qid = f"{0xA00000 + n:06X}B{n % 7}"
        first = [
            ("pickup[10]", f"{qid}: uid=0 from=<sender{n}@example.net>"),
            (f"cleanup[{20 + n % 3}]", f"{qid}: message-id=<m{n}@example.net>"),
            ("qmgr[30]", f"{qid}: from=<sender{n}@example.net>, size={500 + n}, nrcpt=1 (queue active)"),
            (f"smtp[{40 + n % 5}]", f"Trusted TLS connection established to mx{n % 4}.example.org[192.0.2.{n % 4 + 1}]:25: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)"),
        ]
        relay = f"mx{n % 4}.example.org[192.0.2.{n % 4 + 1}]:25"
        if n % 3 == 0:  # deferred now, delivered at a retry much later
            first.append((f"smtp[{40 + n % 5}]", f"{qid}: to=<rcpt{n}@example.org>, relay={relay}, delay=1, delays=0/0/0.5/0.5, dsn=4.7.1, status=deferred (host {relay[:-3]} said: 451 4.7.1 Greylisted, try again (in reply to RCPT TO command))"))
            later = [("qmgr[30]", f"{qid}: from=<sender{n}@example.net>, size={500 + n}, nrcpt=1 (queue active)"),
                     (f"smtp[{40 + n % 5}]", f"{qid}: to=<rcpt{n}@example.org>, relay={relay}, delay=900, delays=899/0/0.5/0.5, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as R{n})"),
                     ("qmgr[30]", f"{qid}: removed")]
            return [[self._line(p, t) for p, t in first], [self._line(p, t) for p, t in later]]
        status = ("dsn=5.1.1, status=bounced (host x said: 550 5.1.1 <rcpt@example.org>: User unknown (in reply to RCPT TO command))"
                  if n % 3 == 1 else "dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as R)")
        first += [(f"smtp[{40 + n % 5}]", f"{qid}: to=<rcpt{n}@example.org>, relay={relay}, delay=1, delays=0/0/0.5/0.5, {status}"),
                  ("qmgr[30]", f"{qid}: removed")]
        return [[self._line(p, t) for p, t in first]]

    def run(self) -> None:
        later: dict[int, list[str]] = {}
        open_parts: list[list[str]] = []
        with self.path.open("a") as fh:
            for n in range(self.messages):
                parts = self._message(n)
                open_parts.append(parts[0])
                if len(parts) > 1:
                    later[n + 40] = parts[1]
                if n in later:
                    open_parts.append(later.pop(n))
                while len(open_parts) > 3 or (n == self.messages - 1 and open_parts):
                    part = open_parts[self.rand.randrange(len(open_parts))]
                    fh.write(part.pop(0))
                    if not part:
                        open_parts.remove(part)
                fh.flush()
                if not self.stop_now.is_set():
                    time.sleep(0.004)
            for rest in later.values():
                fh.write("".join(rest))


def parse_documents(path: Path) -> dict[str, dict[str, Any]]:
    from zoneinfo import ZoneInfo

    from shipper import batching
    from shipper.pipeline import ParseOptions, ParseStats, documents_of_files

    options = ParseOptions(format="postfix", tz=ZoneInfo("UTC"), host_name=HOST_NAME)
    return {batching.document_id(d): d for d in documents_of_files([str(path)], options, ParseStats())}


def test_postfix_sigkill_loses_duplicates_and_degrades_nothing(tmp_path, opensearch, opensearch_url, index_prefix):
    """≥10 SIGKILLs of `python -m shipper run` on a growing Postfix maillog; restart each time;
    `run --once` drains: the index holds exactly the parse's documents, equal field for field
    (the queue-ID state survived every restart: each retry still has its sender and
    Message-ID)."""
    rounds = max(10, int(10 * SCALE))
    rand = random.Random(1515)
    log = tmp_path / "mail.log"
    log.touch()
    writer = MaillogWriter(log, messages=600)
    cfg = write_config(tmp_path / "cfg.yml", url=opensearch_url, prefix=index_prefix, state_dir=tmp_path / "state",
                       inputs=[{"paths": [str(log)], "format": "postfix", "timezone": "UTC"}])
    writer.start()
    try:
        for i in range(rounds):
            d = DaemonProcess(cfg, tmp_path / "daemon.log")
            time.sleep(rand.uniform(0.6, 2.5))
            d.kill()
            assert d.proc.returncode == -9, f"round {i}: the daemon exited by itself:\n{d.log_text()[-3000:]}"
    finally:
        writer.stop_now.set()
        writer.join(60)
    assert run_once(cfg, tmp_path / "daemon.log") == 0, (tmp_path / "daemon.log").read_text()[-3000:]
    assert (tmp_path / "state" / "format-state").is_dir()

    expected = parse_documents(log)
    assert len(expected) > 500
    assert all(d["email"].get("message_id") for d in expected.values())
    indexed = {h["_id"]: h["_source"] for h in indexed_docs(opensearch, index_prefix)}
    assert sorted(expected) == sorted(indexed)
    assert [i for i in expected if expected[i] != indexed[i]] == []
