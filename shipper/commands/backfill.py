"""`smtp-shipper backfill FILE ...`: parse old (rotated, gzipped) logs once and ship them.

Idempotent like everything we write (deterministic ids, ``index`` = overwrite): running the
same backfill twice leaves the same documents. Parsing runs in this thread while one sender
thread has a bulk request in flight (``PipelinedShipper``).
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import multiprocessing as mp
import os
import queue
import resource
import signal
import struct
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from shipper import config
from shipper.batching import BatchBuilder, BulkBatch
from shipper.errors import (
    ConfigError,
    ExitStatus,
    InputError,
    ShipperError,
    StrictParseError,
)
from shipper.inputs import STDIN, expand_paths
from shipper.localtime import resolve_zone
from shipper.model import Direction
from shipper.opensearch import (
    BulkShipper,
    PipelinedShipper,
    ShipResult,
    display_hosts,
    make_client,
    sender_time,
    translate_errors,
)
from shipper.pipeline import ParseOptions, ParseStats, documents_of_files
from shipper.progress import Progress, format_duration
from shipper.reasons import Classifier
from shipper.settings import DEAD_LETTER_FILE
from shipper.setup import names, template_installed
from shipper.terminal import printable

log = logging.getLogger(__name__)



def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", metavar="FILE", help="log files or globs (.gz too; - for stdin)")
    parser.add_argument("--format", default="xeams", help="log format (default: xeams)")
    parser.add_argument(
        "--direction", choices=("outbound", "inbound", "auto"), default="auto",
        help="which side the logging server was on (default: from the file name, else the content)",
    )
    parser.add_argument("--timezone", metavar="ZONE", help="IANA zone of the transcript timestamps (default: this machine's)")
    parser.add_argument("--year", type=int, metavar="YEAR",
                        help="year of the first line, for logs whose timestamps carry none (Postfix's classic "
                             "syslog prefix; default: from the file's modification time)")
    parser.add_argument("--host-name", metavar="NAME", help="host.name of the documents (default: host_name of the config)")
    parser.add_argument("--no-refresh", action="store_true", help="do not refresh the indices at the end (documents become searchable within refresh_interval)")
    parser.add_argument("--dead-letters", metavar="PATH", help=f"dead-letter file (default: STATE_DIR/{DEAD_LETTER_FILE})")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar or progress lines")
    parser.add_argument("--no-worker", action="store_true", help="parse in this process instead of a worker process (slower; for debugging)")
    config.add_config_argument(parser)


def parse_options(args: argparse.Namespace, settings: config.Settings) -> ParseOptions:
    try:
        tz = resolve_zone(args.timezone)
    except ValueError as exc:
        raise ConfigError(f"--timezone: {exc}") from None
    classifier = Classifier.from_files(settings.reasons.rules_files)
    return ParseOptions(
        format=args.format,
        direction=None if args.direction == "auto" else Direction(args.direction),
        tz=tz,
        host_name=args.host_name or settings.host_name,
        classifier=classifier,
        year=args.year,
        limits=settings.limits,
    )


def logical_size(path: str) -> int:
    """Bytes the parser will read: the file size, or for gzip the uncompressed size from the
    trailer (ISIZE, RFC 1952 §2.3.1: the size modulo 2**32; fine for a progress bar)."""
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        if fh.read(2) != b"\x1f\x8b" or size < 18:
            return size
        fh.seek(-4, os.SEEK_END)
        return int(struct.unpack("<I", fh.read(4))[0])


class _Position:
    """Approximate bytes parsed so far, from the documents' ``log.file.path``/``log.offset``
    (the parser reports no byte position; a session's first line is close enough)."""

    def __init__(self, sizes: dict[str, int]) -> None:
        self._sizes = sizes
        self._done = 0
        self._path: str | None = None
        self._offset = 0

    def see(self, doc: dict[str, Any]) -> int:
        log_info = doc.get("log") or {}
        path = (log_info.get("file") or {}).get("path")
        offset = int(log_info.get("offset") or 0)
        if path != self._path and path in self._sizes:
            if self._path is not None:
                self._done += self._sizes.get(self._path, 0)
            self._path, self._offset = path, 0
        self._offset = max(self._offset, offset)
        return self._done + self._offset


def run(args: argparse.Namespace) -> int:
    settings = config.settings_from_args(args)
    os_settings = settings.opensearch
    options = parse_options(args, settings)
    files = expand_paths(args.files)  # InputError (exit 4) before touching the cluster
    sizes = {p: logical_size(p) for p in files if p != STDIN}
    dead_path = Path(args.dead_letters) if args.dead_letters else settings.dead_letter_path

    client = make_client(os_settings)
    with translate_errors(os_settings, "checking the index template"):
        if not template_installed(client, os_settings.index_prefix):
            raise ConfigError(
                f"the index template {names(os_settings.index_prefix)['index_template']} is not installed "
                f"in OpenSearch at {display_hosts(os_settings)}: run `smtp-shipper setup` first",
                hint="the template's strict mapping is what keeps the documents searchable as designed",
            )

    progress = None if args.no_progress else Progress(sum(sizes.values()))
    shipper = BulkShipper(client, settings.opensearch, dead_path)
    started = time.monotonic()
    # multiprocessing gives a worker /dev/null for stdin, so `-` is parsed here
    use_worker = not args.no_worker and "fork" in mp.get_all_start_methods() and STDIN not in files
    with translate_errors(os_settings, "bulk"):
        ship = _ship_with_worker if use_worker else _ship_in_process
        stats, result = ship(files, options, sizes, shipper, progress)
        if progress is not None:
            progress.update(sum(sizes.values()), stats.sessions, sum(stats.documents.values()), force=True)
            progress.finish()
        if not args.no_refresh:
            client.indices.refresh(index=f"{os_settings.index_prefix}-*", ignore_unavailable=True, allow_no_indices=True)
    elapsed = time.monotonic() - started
    print(summary(stats, result, elapsed, dead_path), file=sys.stdout)
    if stats.defects and stats.kept_defects:
        print(printable(f"first defect: {stats.kept_defects[0]}"), file=sys.stderr)
    return int(ExitStatus.OK)


def _ship_in_process(
    files: list[str], options: ParseOptions, sizes: dict[str, int], shipper: BulkShipper, progress: Progress | None
) -> tuple[ParseStats, ShipResult]:
    """Parse here, ship from one sender thread (where fork is not available)."""
    stats = ParseStats()
    position = _Position(sizes)
    sender = PipelinedShipper(shipper)
    try:
        for doc in documents_of_files(files, options, stats):
            sender.submit(doc)
            if progress is not None:
                progress.update(position.see(doc), stats.sessions, sum(stats.documents.values()))
    finally:
        result = sender.close()
    return stats, result


# -- the parser in a worker process ---------------------------------------------------------
# Parsing is CPU-bound Python; in one process it shares the GIL with serialisation and the
# HTTP client, and the run becomes parse time + send time. A forked worker parses and
# serialises (to the very bytes of the bulk body) while this process only sends: the
# critical path is then the parser alone, with OpenSearch indexing on the other core.

_QUEUE_DEPTH = 4  # batches in flight between worker and sender: enough slack, bounded memory


_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _die_with_parent(parent: int) -> None:
    """Have the kernel SIGKILL this worker when its parent dies (Linux's ``PR_SET_PDEATHSIG``).
    A parent killed outright (SIGKILL, the OOM killer) cannot stop its worker, which would
    otherwise wait forever on the queue nobody reads. ``parent`` is the pid before the fork: a
    parent that died before the call is seen too. Elsewhere (no ``prctl``) nothing is done."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return
    prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(1)


def _produce(out: Any, parent: int, files: list[str], options: ParseOptions, sizes: dict[str, int],
             prefix: str, max_docs: int, max_bytes: int) -> None:  # pragma: no cover - runs in the worker
    _die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it ends us
    stats = ParseStats()
    position = _Position(sizes)
    # Each batch travels as one bytes object, the body of its bulk request, plus the index and
    # id of each item (BulkBatch.payload): what a queue message costs to pickle here and to
    # unpickle there no longer grows with four objects per document.
    builder = BatchBuilder(prefix, max_docs, max_bytes)
    add = builder.add
    see = position.see
    pos = 0
    try:
        for doc in documents_of_files(files, options, stats):
            pos = see(doc)
            full = add(doc)
            if full is not None:
                out.put(("batch", full.payload(), (pos, stats.sessions, sum(stats.documents.values()))))
        last = builder.flush()
        if last is not None:
            out.put(("batch", last.payload(), (pos, stats.sessions, sum(stats.documents.values()))))
        del stats.kept_defects[20:]  # only the first is shown; keep the message small
        usage = resource.getrusage(resource.RUSAGE_SELF)
        out.put(("done", stats, usage.ru_utime + usage.ru_stime))
    except ShipperError as exc:
        out.put(("error", (type(exc).__name__, exc.message, exc.hint)))
    except BaseException:  # noqa: BLE001 - reported by the parent, with the traceback
        out.put(("crash", traceback.format_exc()))


_ERRORS = {cls.__name__: cls for cls in (InputError, StrictParseError, ConfigError)}


def _ship_with_worker(
    files: list[str], options: ParseOptions, sizes: dict[str, int], shipper: BulkShipper, progress: Progress | None
) -> tuple[ParseStats, ShipResult]:
    ctx = mp.get_context("fork")  # fork: the options (classifier, zone) need no pickling
    batches_q = ctx.Queue(maxsize=_QUEUE_DEPTH)
    bulk = shipper._bulk
    worker = ctx.Process(
        target=_produce,
        args=(batches_q, os.getpid(), files, options, sizes, shipper.prefix, bulk.max_docs, bulk.max_bytes),
        name="smtp-shipper-parser",
        daemon=True,
    )
    worker.start()
    result = ShipResult()
    clock = time.monotonic
    try:
        while True:
            waiting = clock()
            try:
                message = batches_q.get(timeout=1.0)
            except queue.Empty:
                if not worker.is_alive():
                    raise ShipperError(f"the parser process ended unexpectedly (exit code {worker.exitcode})") from None
                continue
            finally:
                result.parser_wait_seconds += clock() - waiting
            kind = message[0]
            if kind == "batch":
                _, payload, (pos, sessions, documents) = message
                result.add(shipper.ship_batch(BulkBatch(*payload)))
                if progress is not None:
                    progress.update(pos, sessions, documents)
            elif kind == "done":
                log.info("parser worker: %.1f CPU seconds (parse and serialise)", message[2])
                return message[1], result
            elif kind == "error":
                name, text, hint = message[1]
                raise _ERRORS.get(name, ShipperError)(text, hint=hint)
            else:
                raise ShipperError(f"the parser failed:\n{message[1]}")
    finally:
        if worker.is_alive():
            worker.terminate()
        worker.join(timeout=10)
        batches_q.close()
        batches_q.cancel_join_thread()


def summary(stats: ParseStats, result: ShipResult, elapsed: float, dead_path: Path) -> str:
    total = sum(stats.documents.values())
    verdicts = ", ".join(f"{v} {stats.documents.get(v, 0)}" for v in ("delivered", "rejected", "deferred", "failed"))
    rate = total / elapsed if elapsed > 0 else 0.0
    lines = [
        f"backfill: {total} documents from {stats.sessions} sessions ({verdicts}) in {format_duration(elapsed)} ({rate:,.0f} documents/s)",
        (
            f"indexed {result.acknowledged}, dead-lettered {result.dead_lettered}, re-sent {result.retried}, "
            f"{stats.defects} defects in {stats.lines} lines"
        ),
        sender_time(result),
    ]
    if result.dead_lettered:
        lines.append(f"refused documents are in {dead_path}")
    return "\n".join(lines)
