"""Parse rate and peak memory of the Postfix format on a generated maillog (default 1M lines).

    .venv/bin/python bench/postfix_bench.py [--lines 1000000] [--keep FILE]

The maillog is what a busy relay writes: messages whose lines interleave (pickup, cleanup,
qmgr, TLS, one to four recipients with mixed outcomes, removed), a quarter deferred and
retried 2,000 messages later, inbound refusals, and lines of other programs. The whole file is
parsed as ``smtp-shipper parse --format postfix`` does (documents built, not written); the
figures are lines per CPU second of this process (one core) and its peak resident memory,
which stays bounded by the queue-ID state (``shipper.formats.postfix.MAX_QUEUE_IDS``), not by
the file's size. A benchmark reports figures; it asserts nothing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import resource
import sys
import tempfile
import time
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shipper.pipeline import ParseOptions, ParseStats, documents_of_files


def generate(path: Path, lines: int, seed: int = 1) -> int:
    rand = random.Random(seed)
    clock = dt.datetime(2026, 3, 1, 8, 0, 0)
    written = 0
    later: dict[int, list[str]] = {}
    pending: list[list[str]] = []

    def stamp() -> str:
        nonlocal clock
        clock += dt.timedelta(milliseconds=rand.randint(1, 30))
        return f"{clock:%b %d %H:%M:%S} relay"

    with path.open("w") as fh:
        n = 0
        while written < lines:
            qid = f"{n + 0x100000:X}{rand.randrange(16):X}"
            pid = 1000 + n % 50
            relay = f"mx{n % 97}.example.org[192.0.2.{n % 250 + 1}]:25"
            msg = [f"{stamp()} postfix/pickup[10]: {qid}: uid=33 from=<app{n % 300}@example.net>",
                   f"{stamp()} postfix/cleanup[11]: {qid}: message-id=<{n}.{qid}@example.net>",
                   f"{stamp()} postfix/qmgr[12]: {qid}: from=<app{n % 300}@example.net>, size={900 + n % 5000}, nrcpt=2 (queue active)",
                   f"{stamp()} postfix/smtp[{pid}]: Trusted TLS connection established to {relay}: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)"]
            for r in range(2):
                kind = rand.random()
                if kind < 0.7:
                    status = "dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as 4Xyz)"
                elif kind < 0.8:
                    status = ("dsn=5.1.1, status=bounced (host x[192.0.2.1] said: 550-5.1.1 The account does not "
                              "exist. 550 5.1.1 Try again (in reply to RCPT TO command))")
                else:
                    status = "dsn=4.4.1, status=deferred (connect to mx.example.org[192.0.2.9]:25: Connection refused)"
                    later.setdefault(n + 2000, []).extend([
                        f"{stamp()} postfix/qmgr[12]: {qid}: from=<app{n % 300}@example.net>, size=900, nrcpt=1 (queue active)",
                        f"{stamp()} postfix/smtp[{pid}]: {qid}: to=<u{n}.{r}@example.org>, relay={relay}, delay=900, "
                        "delays=899/0/0.5/0.5, dsn=2.0.0, status=sent (250 2.0.0 Ok)"])
                msg.append(f"{stamp()} postfix/smtp[{pid}]: {qid}: to=<u{n}.{r}@example.org>, relay={relay}, "
                           f"delay=1.2, delays=0.1/0/0.6/0.5, {status}")
            msg.append(f"{stamp()} postfix/qmgr[12]: {qid}: removed")
            if n % 10 == 0:
                msg.append(f"{stamp()} postfix/smtpd[{2000 + n % 40}]: NOQUEUE: reject: RCPT from unknown[198.51.100.{n % 200}]: "
                           f"554 5.7.1 Service unavailable; Client host [198.51.100.{n % 200}] blocked using zen.spamhaus.org; "
                           f"from=<x@spam.example> to=<u{n}@example.net> proto=ESMTP helo=<spam>")
                msg.append(f"{stamp()} dovecot: imap-login: Login: user=<u{n}>")
            pending.append(msg)
            pending.extend([x] for x in later.pop(n, []))
            while len(pending) > 8:
                part = pending[rand.randrange(len(pending))]
                fh.write(part.pop(0) + "\n")
                written += 1
                if not part:
                    pending.remove(part)
            n += 1
        for part in pending:
            fh.write("".join(x + "\n" for x in part))
            written += len(part)
    return written


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--keep", help="write the maillog here (default: a temporary file)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.keep or os.path.join(tmp, "mail.log"))
        lines = generate(path, args.lines)
        size = path.stat().st_size
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        stats = ParseStats()
        cpu, wall = time.process_time(), time.perf_counter()
        docs = sum(1 for _ in documents_of_files([str(path)], ParseOptions(format="postfix", tz=ZoneInfo("UTC"),
                                                                          host_name="bench"), stats))
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"postfix: {lines:,} lines ({size / 1e6:.0f} MB), {docs:,} documents, {stats.defects} defects")
    print(f"  {lines / cpu:,.0f} lines/s per core ({docs / cpu:,.0f} documents/s), {cpu:.1f} s CPU, {wall:.1f} s wall")
    print(f"  peak memory {peak / 1024:.0f} MB (before parsing: {before / 1024:.0f} MB)")


if __name__ == "__main__":
    main()
