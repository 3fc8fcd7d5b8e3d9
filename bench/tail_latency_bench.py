"""Tail latency of `smtp-shipper run`: time from a session's last line being written to its
documents being searchable, with the daemon's CPU and RSS over time.

    .venv/bin/python bench/tail_latency_bench.py --opensearch http://127.0.0.1:9200 --rate 500 --seconds 60

A writer appends whole sessions (8 concurrent ones interleaved) at ``--rate`` sessions/s to a log
file; the daemon runs as a real subprocess (``python -m shipper run``). A poller refreshes the
index every ``--poll`` seconds and searches for the sessions written but not yet seen:

    latency = time first found by search − time the termination line was written

so it measures *search-visible with a forced refresh* (an upper bound of the bulk
acknowledgement latency, by at most one poll interval plus one refresh and search, which on a
loaded machine dominate). Without a forced refresh, add the index's refresh_interval (5 s with
the installed template). It also reports the *bulk acknowledgement* latency exactly, from the
daemon's ack log (``SMTP_SHIPPER_ACK_LOG``: one "session-id wall-time" line per acked document).
Both are given for all sessions and for those after ``--warmup`` seconds: the first documents
create the day's index on a node that has not yet served a bulk request, which takes 1-2 s once a
day and makes up the whole tail of a 60-second run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml
from opensearchpy import OpenSearch

REPO = Path(__file__).resolve().parents[1]


def session_lines(n: int) -> list[str]:
    return [f"************ New (secure) connection to: 10.0.{n // 256 % 256}.{n % 256}",
            "S <-- EHLO mail.example.net", "C --> 250-mx.example.com at your service", "C --> 250 SMTPUTF8",
            f"S <-- MAIL FROM:<sender{n}@example.net>", "C --> 250 2.1.0 OK",
            f"S <-- RCPT TO:<user{n}@example.org>", "C --> 250 2.1.5 OK",
            "S <-- DATA", "C --> 354  Go ahead", "C --> 250 2.0.0 OK queued",
            "S <-- QUIT", "C --> 221 2.0.0 closing connection", "~~~~~~~~~~~~ Connection Terminated ( 842)"]


class Writer(threading.Thread):
    def __init__(self, path: Path, rate: float, seconds: float, first_id: int) -> None:
        super().__init__(daemon=True)
        self.path, self.rate, self.seconds = path, rate, seconds
        self.next_id = first_id
        self.ended: dict[str, float] = {}  # session id → monotonic time its last line was written
        self.ended_wall: dict[str, float] = {}  # the same in wall-clock time (for the ack log)
        self.lock = threading.Lock()
        self.open: list[tuple[str, list[str]]] = []

    def run(self) -> None:
        tick = 0.01
        per_tick = self.rate * tick
        owed = 0.0
        t0 = time.monotonic()
        rand = random.Random(1)
        with self.path.open("ab") as fh:
            next_t = t0
            while time.monotonic() - t0 < self.seconds:
                owed += per_tick
                out = []
                ended = []
                # Start sessions at the target rate; each session's lines interleave with others'.
                while owed >= 1:
                    owed -= 1
                    sid = str(self.next_id)
                    self.next_id += 1
                    self.open.append((sid, session_lines(int(sid))))
                now = dt.datetime.now()
                stamp = now.strftime("%Y-%m-%d %H:%M:%S,") + f"{now.microsecond // 1000:03d}"
                # write the lines of all open sessions in this tick, shuffled across sessions
                lines = [(sid, ls) for sid, ls in self.open]
                rand.shuffle(lines)
                for sid, ls in lines:
                    take = len(ls) if len(self.open) < 16 else max(1, len(ls) // 2)
                    for _ in range(take):
                        out.append(f"{stamp} - [{sid:>10}] {ls.pop(0)}\n")
                    if not ls:
                        ended.append(sid)
                self.open = [(s, ls) for s, ls in self.open if ls]
                fh.write("".join(out).encode())
                fh.flush()
                t = time.monotonic()
                with self.lock:
                    for sid in ended:
                        self.ended[sid] = t
                        self.ended_wall[sid] = time.time()
                next_t += tick
                time.sleep(max(0.0, next_t - time.monotonic()))


def percentiles(latencies: list[float]) -> str:
    if len(latencies) < 2:
        return f"{len(latencies)} sessions"
    q = statistics.quantiles(latencies, n=100)
    return (f"p50 {q[49]:.3f} s, p90 {q[89]:.3f} s, p99 {q[98]:.3f} s, max {max(latencies):.3f} s "
            f"({len(latencies)} sessions)")


def proc_sample(pid: int) -> tuple[float, int]:
    """(cpu seconds, rss KiB) of a process from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    return cpu, rss


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--opensearch", default=os.environ.get("OPENSEARCH_URL", "http://127.0.0.1:9200"))
    ap.add_argument("--rate", type=float, default=500, help="sessions per second (default 500)")
    ap.add_argument("--seconds", type=float, default=60, help="how long the writer writes (default 60)")
    ap.add_argument("--poll", type=float, default=0.25, help="search poll interval (default 0.25 s)")
    ap.add_argument("--keep", action="store_true", help="keep the indices afterwards")
    ap.add_argument("--warmup", type=float, default=5,
                    help="seconds at the start also reported apart: the first documents create the day's "
                         "index (default 5)")
    args = ap.parse_args()

    client = OpenSearch(hosts=[args.opensearch], timeout=60)
    prefix = f"bench-tail-{secrets.token_hex(3)}"
    tmp = Path(tempfile.mkdtemp(prefix="tail-bench-"))
    log = tmp / "SMTPOutboundConversation.log"
    log.touch()
    cfg = tmp / "cfg.yml"
    cfg.write_text(yaml.safe_dump({
        "opensearch": {"hosts": [args.opensearch], "index_prefix": prefix},
        "inputs": [{"paths": [str(log)], "direction": "outbound"}],
        "state_dir": str(tmp / "state"), "pipeline": {"status_interval": 10}, "log_level": "info"}))
    ack_log = tmp / "acks.log"
    daemon = subprocess.Popen([sys.executable, "-m", "shipper", "run", "--config", str(cfg)],
                              stderr=(tmp / "daemon.log").open("wb"), cwd=str(REPO),
                              env={**os.environ, "SMTP_SHIPPER_ACK_LOG": str(ack_log)})
    time.sleep(2)  # start-up
    writer = Writer(log, args.rate, args.seconds, first_id=1_000_000)
    seen: dict[str, float] = {}
    samples: list[tuple[float, float, int]] = []
    t0 = time.monotonic()
    writer.start()
    last_sample = 0.0
    try:
        while True:
            now = time.monotonic()
            if now - last_sample >= 1.0:
                last_sample = now
                cpu, rss = proc_sample(daemon.pid)
                samples.append((now - t0, cpu, rss))
            with writer.lock:
                pending = [s for s in writer.ended if s not in seen]
            if not writer.is_alive() and not pending:
                break
            if not writer.is_alive() and now - t0 > args.seconds + 60:
                print(f"giving up: {len(pending)} sessions never became visible", file=sys.stderr)
                break
            if pending:
                client.indices.refresh(index=f"{prefix}-*", ignore_unavailable=True, allow_no_indices=True)
                for i in range(0, len(pending), 5000):
                    chunk = pending[i:i + 5000]
                    resp = client.search(index=f"{prefix}-*", size=10000, _source=["smtp.session_id"],
                                         ignore_unavailable=True, allow_no_indices=True,
                                         body={"query": {"bool": {"should": [
                                             {"terms": {"smtp.session_id": chunk}},
                                             {"terms": {"smtp.session_id.keyword": chunk}}]}}})
                    t = time.monotonic()
                    for hit in resp["hits"]["hits"]:
                        seen.setdefault(hit["_source"]["smtp"]["session_id"], t)
            time.sleep(args.poll)
    finally:
        daemon.send_signal(signal.SIGTERM)
        rc = daemon.wait(60)
        if not args.keep:
            client.indices.delete(index=f"{prefix}-*", ignore_unavailable=True, allow_no_indices=True)
    if not seen:
        print("no session became visible; see", tmp / "daemon.log")
        return 1
    acked: dict[str, float] = {}
    for line in ack_log.read_text().splitlines():
        sid, t = line.split()
        acked.setdefault(sid, float(t))
    # After the warm-up: the day's index exists and the node has served a few bulk requests.
    steady = {s for s, t in writer.ended.items() if t - t0 >= args.warmup}
    print(f"sessions written: {len(writer.ended)} in {args.seconds:.0f} s at {args.rate:.0f}/s target; "
          f"visible: {len(seen)}; daemon exit code {rc}")
    for label, sessions in (("all sessions", set(writer.ended)),
                            (f"after the first {args.warmup:g} s", steady)):
        ack_lat = sorted(acked[s] - writer.ended_wall[s] for s in acked.keys() & sessions)
        lat = sorted(seen[s] - writer.ended[s] for s in seen.keys() & sessions)
        print(f"{label}:")
        print(f"  last line written → bulk acknowledged (daemon's ack log):  {percentiles(ack_lat)}")
        print(f"  last line written → searchable (forced refresh, poll {args.poll}s): {percentiles(lat)}")
    print(f"{'t (s)':>6} {'CPU %':>6} {'RSS MiB':>8}")
    prev = None
    for t, cpu, rss in samples:
        if prev is not None and (int(t) % 5 == 0 or t == samples[-1][0]):
            pct = 100 * (cpu - prev[1]) / max(1e-9, t - prev[0])
            print(f"{t:6.0f} {pct:6.1f} {rss / 1024:8.1f}")
        prev = (t, cpu, rss)
    total_cpu = samples[-1][1] - samples[0][1] if len(samples) > 1 else 0
    print(f"daemon CPU total {total_cpu:.1f} s over {samples[-1][0] - samples[0][0]:.0f} s; "
          f"RSS first {samples[0][2] / 1024:.1f} MiB, max {max(s[2] for s in samples) / 1024:.1f} MiB, "
          f"last {samples[-1][2] / 1024:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
