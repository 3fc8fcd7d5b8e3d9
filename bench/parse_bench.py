"""Parse throughput and memory: ``python bench/parse_bench.py [--lines N] [--concurrency K]``.

Generates a large interleaved Xeams corpus (default 1,000,000 lines; K sessions open at once,
each a realistic outbound conversation: delivered, rejected 550 5.1.1, greylisted 451 4.7.1,
pipelined multi-recipient) into a temp dir and measures, each in a fresh child process so that
peak RSS is that run's own:

* ``baseline`` — one compiled regex splits each line and payloads are grouped by session id
  (a group is dropped at its termination line); no SMTP logic, same line reader.
* ``documents`` — the real in-process pipeline ``shipper.pipeline.documents_of_files`` (format →
  SessionAssembler → build_documents, including the reason classifier), at the full size and at
  a quarter of it (peak RSS must not grow with input size);
* ``json`` — the same plus JSON encoding of every document exactly as ``smtp-shipper parse``
  writes it (to a null sink, not /dev/null: no write syscalls measured);
* ``no-reasons`` — documents with the reason classifier replaced by a constant, to show its share.

Reports lines/s, MB/s, documents and peak RSS. The speed of one core is a guard, not a goal
(the product is pure Python; the search cluster is the limit): ``--instructions`` counts
instructions per line (``--stages``: per stage), the figure a change is compared by, and
peak RSS must not grow with the file.
Rates are per CPU second of the child (one core; other processes on a shared machine take wall
time, not CPU time), the best of ``--repeat`` runs taken alternately. ``--profile FILE`` runs
the pipeline once under cProfile instead; ``--only documents`` skips the secondary runs;
``--instructions`` counts instructions per line with callgrind (the same on a busy machine).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BASE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, BASE)

# -- corpus ------------------------------------------------------------------------------------

_CONVERSATIONS: list[list[tuple[str, str]]] = [
    [  # delivered (the seed)
        ("S <-- ", "EHLO mail.example.net"),
        ("C --> ", "250-mx.google.com at your service, [203.0.113.5]"),
        ("C --> ", "250-SIZE 157286400"),
        ("C --> ", "250-8BITMIME"),
        ("C --> ", "250-ENHANCEDSTATUSCODES"),
        ("C --> ", "250-PIPELINING"),
        ("C --> ", "250-CHUNKING"),
        ("C --> ", "250 SMTPUTF8"),
        ("S <-- ", "MAIL FROM:<support@example.net>"),
        ("C --> ", "250 2.1.0 OK x1-gsmtp"),
        ("S <-- ", "RCPT TO:<user{n}@gmail.com>"),
        ("C --> ", "250 2.1.5 OK x1-gsmtp"),
        ("S <-- ", "DATA"),
        ("C --> ", "354  Go ahead x1-gsmtp"),
        ("C --> ", "250 2.0.0 OK  1716305989 x1-gsmtp"),
        ("S <-- ", "QUIT"),
        ("C --> ", "221 2.0.0 closing connection x1-gsmtp"),
    ],
    [  # rejected at RCPT
        ("C --> ", "220 mail.example.org ESMTP Postfix (Debian/GNU)"),
        ("S <-- ", "EHLO mail.example.net"),
        ("C --> ", "250-mail.example.org"),
        ("C --> ", "250-PIPELINING"),
        ("C --> ", "250-SIZE 10240000"),
        ("C --> ", "250 8BITMIME"),
        ("S <-- ", "MAIL FROM:<alerts@example.net> SIZE=2048"),
        ("C --> ", "250 2.1.0 Ok"),
        ("S <-- ", "RCPT TO:<nobody{n}@example.org>"),
        ("C --> ", "550 5.1.1 <nobody{n}@example.org>: Recipient address rejected: User unknown in virtual mailbox table"),
        ("S <-- ", "QUIT"),
        ("C --> ", "221 2.0.0 Bye"),
    ],
    [  # greylisted, pipelined two recipients
        ("S <-- ", "EHLO mail.example.net"),
        ("C --> ", "250-mx.example.com"),
        ("C --> ", "250 PIPELINING"),
        ("S <-- ", "MAIL FROM:<news@example.net>"),
        ("S <-- ", "RCPT TO:<a{n}@example.com>"),
        ("S <-- ", "RCPT TO:<b{n}@example.com>"),
        ("S <-- ", "DATA"),
        ("C --> ", "250 2.1.0 Ok"),
        ("C --> ", "451 4.7.1 <a{n}@example.com>: Recipient address rejected: Greylisted, see http://postgrey.schweikert.ch/help/example.com.html"),
        ("C --> ", "250 2.1.5 Ok"),
        ("C --> ", "354 End data with <CR><LF>.<CR><LF>"),
        ("C --> ", "250 2.0.0 Ok: queued as 4F2B61C0A3"),
        ("S <-- ", "QUIT"),
        ("C --> ", "221 2.0.0 Bye"),
    ],
]


def generate(path: str, lines: int, concurrency: int, seed: int = 7) -> int:
    """Write about ``lines`` lines of interleaved sessions; return the number written."""
    rng = random.Random(seed)
    written = 0
    next_id = 1_000_000
    ms = 0
    open_sessions: list[list[Any]] = []  # [sid, steps, position]
    with open(path, "w", encoding="utf-8", newline="\n") as out:
        while written < lines or open_sessions:
            if len(open_sessions) < concurrency and written < lines:
                next_id += 1
                conv = rng.choice(_CONVERSATIONS)
                open_sessions.append([next_id, conv, -1])
            k = rng.randrange(len(open_sessions))
            session = open_sessions[k]
            sid, conv, pos = session
            ms += rng.randrange(0, 3)
            sec, milli = divmod(ms, 1000)
            minute, sec = divmod(sec, 60)
            hour, minute = divmod(minute, 60)
            day, hour = divmod(hour, 24)
            stamp = f"2024-03-{21 + day % 7:02d} {hour:02d}:{minute:02d}:{sec:02d},{milli:03d}"
            prefix = f"{stamp} - [{sid:>10}] "
            if pos == -1:
                out.write(f"{prefix}************ New (secure) connection to: 198.51.100.{sid % 250}\n")
            elif pos == len(conv):
                out.write(f"{prefix}~~~~~~~~~~~~ Connection Terminated ( {rng.randrange(90, 900)})\n")
                open_sessions.pop(k)
            else:
                tag, text = conv[pos]
                out.write(prefix + tag + text.replace("{n}", str(sid)) + "\n")
            session[2] = pos + 1
            written += 1
    return written


# -- the two measured runs (each in its own child process) -------------------------------------

_BASELINE = re.compile(r"(\S+ \S+) - \[\s*(\S+)\] (.*)")


def run_baseline(path: str) -> dict[str, Any]:
    groups: dict[str, list[str]] = {}
    lines = 0
    finished = 0
    match = _BASELINE.match
    with open(path, "rb") as stream:
        for raw in stream:
            lines += 1
            m = match(raw.decode(errors="replace"))
            if m is None:
                continue
            sid = m.group(2)
            payload = m.group(3)
            group = groups.get(sid)
            if group is None:
                group = groups[sid] = []
            group.append(payload)
            if payload[:1] == "~":
                del groups[sid]
                finished += 1
    return {"lines": lines, "sessions": finished}


class _FixedReason:
    """Stands in for the reason classifier, to show what the classifier itself costs."""

    def classify(self, *args: Any) -> str:
        return "other"


def run_stages(path: str, mode: str) -> dict[str, Any]:
    """The pipeline's stages one after another, up to ``mode``: ``records`` (the format),
    ``sessions`` (+ grouping), ``follow`` (+ the SMTP state machine); what each adds is the
    difference between two of these runs."""
    import gc
    from zoneinfo import ZoneInfo

    from shipper import formats, pipeline, smtp
    from shipper.inputs import read_chunks
    from shipper.localtime import LocalTime, StreamClock
    from shipper.model import Direction
    from shipper.sessions import SessionGrouper

    fmt = formats.get("xeams")
    times = LocalTime(ZoneInfo("Europe/Berlin"))
    grouper = SessionGrouper(Direction.OUTBOUND, StreamClock(times))
    lines = sessions = 0
    gc.set_threshold(pipeline.GC_YOUNG)  # as the whole pipeline runs
    for chunk in read_chunks(path):
        records, _defects = fmt.parse_block(chunk.data, chunk.offset, path)
        lines += len(records)
        if mode == "records":
            continue
        for collected in grouper.feed(path, path, records):
            sessions += 1
            if mode == "follow":
                smtp.follow(collected, times)
    return {"lines": lines, "sessions": sessions}


def run_pipeline(path: str, mode: str) -> dict[str, Any]:
    if mode in ("records", "sessions", "follow"):
        return run_stages(path, mode)
    from zoneinfo import ZoneInfo

    from shipper.model import Direction
    from shipper.pipeline import ParseOptions, ParseStats, documents_of_files

    options = ParseOptions(direction=Direction.OUTBOUND, tz=ZoneInfo("Europe/Berlin"),
                           host_name="bench",
                           classifier=_FixedReason() if mode == "no-reasons" else None)  # type: ignore[arg-type]  # a stand-in
    stats = ParseStats()
    encode = json.JSONEncoder(ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode
    size = 0
    if mode == "json":
        for doc in documents_of_files([path], options, stats):
            size += len(encode(doc))  # what `parse` writes, minus the write itself
    else:
        for _doc in documents_of_files([path], options, stats):
            pass
    return {"lines": stats.lines, "sessions": stats.sessions,
            "documents": sum(stats.documents.values()), "defects": stats.defects,
            "json_mb": round(size / 1e6, 1)}


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def child(mode: str, path: str, profile: str | None = None) -> None:
    profiler: Any = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    start, cpu = time.perf_counter(), _cpu()
    result = run_baseline(path) if mode == "baseline" else run_pipeline(path, mode)
    result["seconds"] = time.perf_counter() - start
    result["cpu_seconds"] = _cpu() - cpu
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if profiler is not None:
        import pstats

        profiler.disable()
        profiler.dump_stats(profile)
        pstats.Stats(profile, stream=sys.stderr).sort_stats("tottime").print_stats(25)
    print(json.dumps(result))


def measure(mode: str, path: str, profile: str | None = None) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", mode, path]
    if profile:
        cmd += ["--profile", profile]
    proc = subprocess.run(cmd, check=True, capture_output=True, text=True)
    if profile:
        print(proc.stderr, file=sys.stderr)
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    size_mb = os.path.getsize(path) / 1e6
    # Rates from CPU time (one core, and what other processes on the machine take from us
    # does not count); wall-clock rates are kept alongside.
    result["lines_per_s"] = result["lines"] / result["cpu_seconds"]
    result["mb_per_s"] = size_mb / result["cpu_seconds"]
    result["wall_lines_per_s"] = result["lines"] / result["seconds"]
    return result


def best(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The fastest of repeated runs (the least disturbed), with the largest peak RSS seen."""
    fastest = dict(max(runs, key=lambda r: r["lines_per_s"]))
    fastest["peak_rss_mb"] = max(r["peak_rss_mb"] for r in runs)
    return fastest


def _callgrind(mode: str, path: str) -> int:
    """Instructions executed by a child run (startup and imports included)."""
    with tempfile.NamedTemporaryFile(prefix="callgrind-", suffix=".out") as out:
        subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out.name}",
                        sys.executable, __file__, "--child", mode, path],
                       check=True, capture_output=True)
        for line in Path(out.name).read_text().splitlines():
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    raise RuntimeError("callgrind wrote no totals")


def instructions(tmp: str, big: str, n_big: int, concurrency: int, stages: bool = False) -> int:
    """Per line: instructions of a run on the corpus minus those of a run on a few lines (the
    interpreter's start and the imports), for the baseline and the pipeline → documents."""
    import shutil

    if shutil.which("valgrind") is None:
        print("valgrind is not installed (apt-get install valgrind)", file=sys.stderr)
        return 2
    tiny = os.path.join(tmp, "SMTPOutboundConversation.tiny.log")
    n_tiny = generate(tiny, 20, concurrency)
    print(f"{'run':36} {'instructions/line':>18}")
    per_line = {}
    runs = [("baseline (regex + group by id)", "baseline"), ("pipeline → documents", "documents")]
    if stages:
        runs += [("  format → records", "records"), ("  + grouping into sessions", "sessions"),
                 ("  + the SMTP state machine", "follow")]
    for name, mode in runs:
        per_line[mode] = (_callgrind(mode, big) - _callgrind(mode, tiny)) / (n_big - n_tiny)
        print(f"{name:36} {per_line[mode]:>18,.0f}")
    print(f"pipeline / baseline lines per instruction: {per_line['baseline'] / per_line['documents']:.0%}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--concurrency", type=int, default=50, help="sessions open at once")
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs of each measurement, alternating baseline and pipeline; "
                             "the fastest counts (the machine may be shared)")
    parser.add_argument("--profile", metavar="FILE",
                        help="cProfile the pipeline → documents run into FILE (pstats format) and "
                             "print its top functions; profiled rates are not comparable")
    parser.add_argument("--only", choices=("documents",),
                        help="measure only the baseline and pipeline → documents (quicker)")
    parser.add_argument("--instructions", action="store_true",
                        help="count CPU instructions per line of the baseline and the pipeline "
                             "with valgrind's callgrind instead of timing them: the same figures "
                             "on a busy machine (~50x slower: use --lines 100000)")
    parser.add_argument("--stages", action="store_true",
                        help="with --instructions: also count the format alone, then with the "
                             "grouping, then with the SMTP state machine (each stage's share)")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child, profile=args.profile)
        return 0
    with tempfile.TemporaryDirectory(prefix="parse-bench-") as tmp:
        big = os.path.join(tmp, "SMTPOutboundConversation.log")
        small = os.path.join(tmp, "SMTPOutboundConversation.small.log")
        n_big = generate(big, args.lines, args.concurrency)
        n_small = generate(small, args.lines // 4, args.concurrency)
        print(f"corpus: {n_big:,} lines ({os.path.getsize(big) / 1e6:.1f} MB) and "
              f"{n_small:,} lines ({os.path.getsize(small) / 1e6:.1f} MB), "
              f"{args.concurrency} sessions interleaved; python {sys.version.split()[0]}")
        if args.profile:
            measure("documents", big, profile=args.profile)
            return 0
        if args.instructions:
            return instructions(tmp, big, n_big, args.concurrency, args.stages)
        plan = [("baseline (regex + group by id)", n_big, "baseline", big),
                ("pipeline → documents", n_big, "documents", big)]
        if args.only is None:
            plan += [("pipeline → documents, quarter size", n_small, "documents", small),
                     ("pipeline → documents → JSON", n_big, "json", big),
                     ("pipeline, reason classifier stubbed", n_big, "no-reasons", big)]
        results: list[list[dict[str, Any]]] = [[] for _ in plan]
        for _ in range(max(1, args.repeat)):
            for i, (_name, _n, mode, path) in enumerate(plan):
                results[i].append(measure(mode, path))
        runs = [(name, n, best(rs)) for (name, n, _m, _p), rs in zip(plan, results)]
        base = runs[0][2]
        print(f"best of {max(1, args.repeat)} alternating runs; rates per CPU second "
              f"(wall-clock lines/s in the last column)")
        print(f"{'run':36} {'lines':>10} {'lines/s':>10} {'MB/s':>7} {'docs':>8} {'peak RSS':>9} "
              f"{'wall l/s':>10}")
        for name, n, r in runs:
            print(f"{name:36} {n:>10,} {r['lines_per_s']:>10,.0f} {r['mb_per_s']:>7.1f} "
                  f"{r.get('documents', '-'):>8} {r['peak_rss_mb']:>7.1f}MB "
                  f"{r['wall_lines_per_s']:>10,.0f}")
        ratio = runs[1][2]["lines_per_s"] / base["lines_per_s"]
        print(f"pipeline / baseline lines/s: {ratio:.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
