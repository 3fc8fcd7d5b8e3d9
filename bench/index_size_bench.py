#!/usr/bin/env python3
"""What writing a session's transcript once costs or saves in index size (issue 13, item 5).

    .venv/bin/python bench/index_size_bench.py --url http://127.0.0.1:9200
    .venv/bin/python bench/index_size_bench.py --sessions 5000 --mass 200,1000

1. generates a week of outbound Xeams sessions: ``--sessions`` ordinary ones with 1, 2 or 3
   recipients (70/20/10%; 90% delivered, some rejected or greylisted), and one mass mailing per
   number in ``--mass`` (that many recipients in one session, e.g. a newsletter to one MX);
2. backfills the same log under one prefix per way of writing transcripts (``limits``):
   ``every document`` (each document repeats its session's transcript, as before),
   ``default`` (within ``session_transcript_bytes``, 1 MiB, per session) and ``first only``
   (``session_transcript_bytes: 0``: one copy per session);
3. refreshes, force-merges each prefix to one segment per index (merges would otherwise make
   the sizes differ by when they ran) and prints ``_cat/indices``' store size, per variant and
   per document, without and with the mass mailings (two logs). Deletes the indices.

Figures of a run are in docs/fields.md ("Sizes").
"""

from __future__ import annotations

import argparse
import json
import random
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

DOMAINS = ["gmail.com", "example.com", "example.org", "outlook.com", "yahoo.com"]
REPLIES = [("250 2.1.5 OK", 0.90),
           ("550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown in virtual mailbox table", 0.06),
           ("451 4.7.1 Greylisted, please try again later", 0.04)]
VARIANTS = {  # name → limits
    "every document": {"transcript_bytes": 1_000_000, "session_transcript_bytes": 10**12},
    "default": {},
    "first only": {"session_transcript_bytes": 0},
}


def session(sid: int, when: float, rcpts: list[str], rng: random.Random) -> list[str]:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(when)) + f",{rng.randrange(1000):03d}"
    t = f"{stamp} - [{sid:>10}]"
    q = f"e9e14a558f8ab-36cb9d1c563si{sid}.14 - gsmtp"
    lines = [f"{t} ************ New (secure) connection to: 198.51.{rng.randrange(256)}.{rng.randrange(1, 255)}",
             f"{t} S <-- EHLO mail.synametrics.com",
             f"{t} C --> 250-mx.example.net at your service, [162.255.85.54]",
             f"{t} C --> 250-SIZE 157286400", f"{t} C --> 250-8BITMIME", f"{t} C --> 250-ENHANCEDSTATUSCODES",
             f"{t} C --> 250-PIPELINING", f"{t} C --> 250-CHUNKING", f"{t} C --> 250 SMTPUTF8",
             f"{t} S <-- MAIL FROM:<newsletter@synametrics.com>", f"{t} C --> 250 2.1.0 OK {q}"]
    accepted = False
    for rcpt in rcpts:
        reply = rng.choices([r for r, _ in REPLIES], [w for _, w in REPLIES])[0].format(rcpt=rcpt)
        accepted |= reply.startswith("2")
        lines += [f"{t} S <-- RCPT TO:<{rcpt}>", f"{t} C --> {reply} {q}"]
    if accepted:
        lines += [f"{t} S <-- DATA", f"{t} C --> 354  Go ahead {q}", f"{t} C --> 250 2.0.0 OK  1716305989 {q}"]
    return lines + [f"{t} S <-- QUIT", f"{t} C --> 221 2.0.0 closing connection {q}",
                    f"{t} ~~~~~~~~~~~~ Connection Terminated ( 842)"]


def generate(path: Path, sessions: int, mass: list[int], seed: int = 13) -> int:
    """The log; the number of documents it gives (one per recipient)."""
    rng = random.Random(seed)
    start, step = 1711000000.0, 7 * 86400 / max(sessions, 1)
    mass_at = {rng.randrange(sessions): n for n in mass}
    docs = 0
    with path.open("w", encoding="utf-8") as out:
        for n in range(sessions):
            count = rng.choices([1, 2, 3], [0.7, 0.2, 0.1])[0]
            # distinct: a recipient twice in one transaction is one document (the same id)
            rcpts = [f"user{n}@{rng.choice(DOMAINS)}" for n in rng.sample(range(50_000), count)]
            out.write("\n".join(session(7_000_000 + n, start + n * step, rcpts, rng)) + "\n")
            docs += count
            if n in mass_at:
                rcpts = [f"reader{i:05d}@{DOMAINS[0]}" for i in range(mass_at[n])]
                out.write("\n".join(session(8_000_000 + n, start + n * step, rcpts, rng)) + "\n")
                docs += len(rcpts)
    return docs


def call(url: str, method: str, path: str) -> object:
    request = urllib.request.Request(url + path, method=method)
    with urllib.request.urlopen(request, timeout=600) as response:
        return json.loads(response.read() or b"null")


def store_bytes(url: str, prefix: str) -> tuple[int, int]:
    """(documents, store bytes) of ``prefix``'s indices, merged down to one segment each."""
    call(url, "POST", f"/{prefix}-*/_refresh")
    call(url, "POST", f"/{prefix}-*/_forcemerge?max_num_segments=1")
    call(url, "POST", f"/{prefix}-*/_flush")
    rows = call(url, "GET", f"/_cat/indices/{prefix}-*?format=json&bytes=b&h=index,docs.count,store.size")
    assert isinstance(rows, list)
    return sum(int(r["docs.count"]) for r in rows), sum(int(r["store.size"]) for r in rows)


def measure(url: str, log: Path, tmp: Path) -> dict[str, tuple[int, int]]:
    results = {}
    for name, limits in VARIANTS.items():
        prefix = f"bench-size-{secrets.token_hex(3)}"
        cfg = tmp / f"{prefix}.yml"
        cfg.write_text(json.dumps({"opensearch": {"hosts": [url], "index_prefix": prefix, "refresh_interval": "-1"},
                                   "state_dir": str(tmp / prefix), "limits": limits}))
        base = [sys.executable, "-m", "shipper"]
        try:
            subprocess.run([*base, "setup", "--config", str(cfg)], check=True, capture_output=True, cwd=ROOT)
            subprocess.run([*base, "backfill", "--config", str(cfg), "--no-progress", "--timezone", "UTC", str(log)],
                           check=True, capture_output=True, cwd=ROOT)
            results[name] = store_bytes(url, prefix)
        finally:
            call(url, "DELETE", f"/{prefix}-*")
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:9200")
    parser.add_argument("--sessions", type=int, default=20_000, help="ordinary sessions (1-3 recipients)")
    parser.add_argument("--mass", default="200,500,1000,1000,2000",
                        help="recipients of each mass-mailing session, comma-separated")
    args = parser.parse_args()
    mass = [int(n) for n in args.mass.split(",") if n]
    with tempfile.TemporaryDirectory(prefix="index-size-") as tmp_name:
        tmp = Path(tmp_name)
        print(f"{'log':40} {'variant':15} {'documents':>9} {'store MB':>9} {'bytes/doc':>9} {'vs every':>8}")
        for label, masses in (("ordinary sessions only", []), (f"+ mass mailings {args.mass}", mass)):
            log = tmp / "SMTPOutboundConversation.log"
            expected = generate(log, args.sessions, masses)
            results = measure(args.url, log, tmp)
            every = results["every document"][1]
            for i, (name, (docs, size)) in enumerate(results.items()):
                assert docs == expected, (name, docs, expected)
                print(f"{label if i == 0 else '':40} {name:15} {docs:9,} {size / 1e6:9.1f} {size / docs:9,.0f} "
                      f"{size / every:8.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
