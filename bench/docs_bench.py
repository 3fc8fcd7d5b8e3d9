#!/usr/bin/env python3
"""What everything after a ``Session`` costs: ``python bench/docs_bench.py [--lines N]``.

The corpus (``parse_bench``'s interleaved outbound conversations, or with ``--corpus ingest``
``ingest_bench``'s one-recipient sessions) is parsed to ``Session`` objects once, untimed.
Then, per CPU second of this process, best of ``--repeat`` rounds:

* ``build_documents`` — sessions → document dicts (reason classifier included, as in backfill:
  a ``Classifier`` built from the built-in rules). Timing each call inside the parse loop
  instead, where the pipeline makes it, gave the same or higher figures (the parser's own
  work evicts the session from the CPU caches too), with more noise;
* ``limits`` — ``shipper.limits.bound`` on each session's documents with the default sizes
  (nothing in this corpus is over them: the cost every ordinary document pays);
* ``prepare`` — document → ``BulkItem`` (index name, id, action and source JSON);
* ``worker tail`` — what backfill's worker does per document after parsing: ``prepare``, the
  batching and the pickling of the queue payload (``multiprocessing.Queue`` pickles each
  message in the worker), measured on whole batches of ``bulk.max_docs``.

µs per session and per document. ``--profile`` prints the top functions of one round;
``--shipper DIR`` measures another copy of the package (before/after comparisons);
``--instructions`` counts instructions with callgrind instead (steady on a busy machine).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing
sys.path.insert(0, str(ROOT / "bench"))
if "--shipper" in sys.argv:  # before the imports below: the package to measure
    sys.path.insert(0, sys.argv[sys.argv.index("--shipper") + 1])

from shipper import formats  # noqa: E402 — after the sys.path lines above
from shipper.batching import BatchBuilder, prepare  # noqa: E402
from shipper.documents import build_documents  # noqa: E402
from shipper.inputs import read_chunks  # noqa: E402
from shipper.model import Direction, Session  # noqa: E402
from shipper.pipeline import ParseOptions, Pipeline  # noqa: E402
from shipper.reasons import Classifier  # noqa: E402

try:  # a package from before shipper.limits (--shipper DIR) has no such step: it counts 0
    from shipper.limits import bound
    from shipper.settings import LimitsSettings

    LIMITS = LimitsSettings()
except ImportError:
    bound = None  # type: ignore[assignment]  # the step is skipped

PREFIX = "smtp-deliveries"
MAX_DOCS = 1000  # config default of opensearch.bulk.max_docs


def load_sessions(path: str, tz: Any) -> list[Session]:
    pipeline = Pipeline(formats.get("xeams"), ParseOptions(tz=tz), direction=Direction.OUTBOUND)
    shipments = [s for chunk in read_chunks(path) for s in pipeline.feed(path, path, chunk)]
    return [s.session for s in shipments + pipeline.flush_all()]


def corpus(kind: str, lines: int, directory: str) -> str:
    path = os.path.join(directory, "SMTPOutboundConversation.log")
    if kind == "parse":
        import parse_bench

        parse_bench.generate(path, lines, 50)
    else:
        import ingest_bench

        sessions = max(1, lines // 16)  # ~16 lines per session
        # as many per minute as in ingest_bench's default run (200,000 over a week): times
        # repeat per minute, which the document builder's time cache relies on
        ingest_bench.generate(Path(path), sessions, seconds=7 * 86400 * sessions / 200_000)
    return path


def cpu() -> float:
    return time.process_time()


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    gc.collect()
    start = cpu()
    result = fn()
    return cpu() - start, result


def worker_tail(docs: list[dict[str, Any]]) -> int:
    """backfill's ``_produce`` after ``documents_of_files``: serialise, batch, pickle the message
    (``multiprocessing.Queue`` pickles in the worker)."""

    def message(payload: Any) -> int:
        return len(pickle.dumps(("batch", payload, (0, 0, 0)), protocol=pickle.HIGHEST_PROTOCOL))

    sink = 0
    builder = BatchBuilder(PREFIX, MAX_DOCS, 10 * 2**20)
    for doc in docs:
        full = builder.add(doc)
        if full is not None:
            sink += message(full.payload())
    last = builder.flush()
    return sink + (message(last.payload()) if last is not None else 0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, help="corpus lines (default 300000; 30000 with --instructions)")
    parser.add_argument("--corpus", choices=("parse", "ingest"), default="parse",
                        help="parse_bench's mixed conversations (default) or ingest_bench's sessions")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; the fastest counts")
    parser.add_argument("--timezone", default="Europe/Berlin")
    parser.add_argument("--profile", action="store_true", help="cProfile one round instead")
    parser.add_argument("--shipper", metavar="DIR",
                        help="import the shipper package from DIR instead, e.g. an older commit's: "
                             "git archive REV shipper | tar -x -C DIR (compare in alternate runs: "
                             "the figures of a shared machine vary by 20%%)")
    parser.add_argument("--instructions", action="store_true",
                        help="count instructions with valgrind's callgrind instead of timing: the "
                             "same figures however busy the machine is")
    parser.add_argument("--child", nargs=2, metavar=("STEP", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.instructions:
        return instructions(args)

    classifier = Classifier.from_files(())
    tz = ZoneInfo(args.timezone)
    if args.child:
        sessions = load_sessions(args.child[1], tz)
    else:
        with tempfile.TemporaryDirectory(prefix="docs-bench-") as tmp:
            path = corpus(args.corpus, args.lines or 300_000, tmp)
            sessions = load_sessions(path, tz)
    n_sessions = len(sessions)

    def build() -> int:
        # the documents are dropped as in the pipeline: keeping them all makes the cyclic GC
        # walk an ever larger heap and doubles the figure (measured: 27 → 54 µs per session)
        count = 0
        for session in sessions:
            count += len(build_documents(session, host_name="bench", dataset="xeams.smtp",
                                         classifier=classifier))
        return count

    per_session = [build_documents(session, host_name="bench", dataset="xeams.smtp", classifier=classifier)
                   for session in sessions]
    docs = [doc for session_docs in per_session for doc in session_docs]
    n_docs = len(docs)

    def bound_all() -> int:  # changes nothing here, so it can run again on the same documents
        if bound is None:
            return 0
        return sum(len(bound(session_docs, LIMITS)) for session_docs in per_session)

    def prep() -> int:
        return sum(len(prepare(doc, PREFIX).source) for doc in docs)

    if args.child:  # one step once, under callgrind (``none``: only what every child does)
        steps = {"none": lambda: 0, "build_documents": build, "limits": bound_all, "prepare": prep,
                 "worker tail": lambda: worker_tail(docs)}
        steps[args.child[0]]()
        print(json.dumps({"sessions": n_sessions, "documents": n_docs}))
        return 0

    if args.profile:
        import cProfile
        import pstats

        for name, fn in (("build_documents", build), ("limits", bound_all), ("prepare", prep),
                         ("worker tail", lambda: worker_tail(docs))):
            profiler = cProfile.Profile()
            profiler.runcall(fn)
            print(f"== {name}")
            pstats.Stats(profiler, stream=sys.stdout).sort_stats("tottime").print_stats(15)
        return 0

    best = {"build_documents": float("inf"), "limits": float("inf"), "prepare": float("inf"),
            "worker tail": float("inf")}
    for _ in range(max(1, args.repeat)):
        best["build_documents"] = min(best["build_documents"], timed(build)[0])
        best["limits"] = min(best["limits"], timed(bound_all)[0])
        best["prepare"] = min(best["prepare"], timed(prep)[0])
        best["worker tail"] = min(best["worker tail"], timed(lambda: worker_tail(docs))[0])

    import shipper

    print(f"shipper from {Path(shipper.__file__).parent}")
    print(f"{args.corpus} corpus: {n_sessions:,} sessions, {n_docs:,} documents "
          f"({n_docs / n_sessions:.2f} per session), zone {args.timezone}; "
          f"python {sys.version.split()[0]}; best of {args.repeat}, CPU time")
    print(f"{'step':22} {'CPU s':>7} {'µs/session':>11} {'µs/document':>12}")
    for name, seconds in best.items():
        print(f"{name:22} {seconds:7.3f} {seconds / n_sessions * 1e6:11.2f} {seconds / n_docs * 1e6:12.2f}")
    return 0


def instructions(args: argparse.Namespace) -> int:
    """Per session and per document: the instructions of a child that loads the corpus and runs
    one step once, minus those of a child that only loads it."""
    import shutil

    if shutil.which("valgrind") is None:
        print("valgrind is not installed (apt-get install valgrind)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="docs-bench-") as tmp:
        path = corpus(args.corpus, args.lines or 30_000, tmp)

        def count(step: str) -> tuple[int, dict[str, int]]:
            out = os.path.join(tmp, "callgrind.out")
            command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable,
                       __file__, "--child", step, path, "--timezone", args.timezone]
            if args.shipper:
                command += ["--shipper", args.shipper]
            run = subprocess.run(command, check=True, capture_output=True, text=True)
            for line in Path(out).read_text().splitlines():
                if line.startswith(("summary:", "totals:")):
                    return int(line.split()[1]), json.loads(run.stdout.strip().splitlines()[-1])
            raise RuntimeError("callgrind wrote no totals")

        base, counts = count("none")
        import shipper

        print(f"shipper from {Path(shipper.__file__).parent}")
        print(f"{args.corpus} corpus: {counts['sessions']:,} sessions, {counts['documents']:,} documents; "
              f"instructions (callgrind)")
        print(f"{'step':22} {'instr/session':>14} {'instr/document':>15}")
        for step in ("build_documents", "limits", "prepare", "worker tail"):
            spent = count(step)[0] - base
            print(f"{step:22} {spent / counts['sessions']:14,.0f} {spent / counts['documents']:15,.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
