"""The daemon: follow files → ``shipper.pipeline`` → bulk → checkpoint.

Threads: the main thread polls the files and feeds what they give to each input's
``Pipeline`` (which parses, groups sessions and builds documents), and writes checkpoints and
status; one sender thread ships (``BulkShipper.ship`` blocks until every document is
acknowledged or dead-lettered, retrying forever) and hands acknowledged work back.

The delivery guarantee rests on one rule (PRODUCT.md, "Delivery guarantee"): the checkpoint of
a file is never past the first line of a session that is not yet acknowledged by OpenSearch:

    safe(file) = min(read position,
                     first offset in file of every session still open,
                     first offset in file of every session finished but not yet acknowledged)

and lines between ``safe`` and the read position that belong to sessions already acknowledged
are skipped when replayed after a restart (see ``shipper.checkpoint``), so that a restart never
creates a truncated twin of a session that was shipped whole.

Back-pressure: reading pauses while the bytes of finished sessions not yet acknowledged exceed
``pipeline.max_buffered_bytes``. Open sessions do not count: only reading further can finish
them, and memory for them is bounded by the log's own concurrency and ``idle_timeout``. Shutdown (SIGTERM, SIGINT) is one path: stop reading, ship
what is finished, wait for acknowledgements (bounded), write checkpoints, exit 0.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import queue
import signal
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shipper import batching, follow, formats, opensearch
from shipper.checkpoint import Checkpoint, CheckpointStore, write_atomic
from shipper.errors import ConnectionFailed, ShipperError
from shipper.lines import Chunk
from shipper.model import Defect, Direction, Session
from shipper.opensearch import ShippingStopped
from shipper.pipeline import ParseOptions, Pipeline, Shipment
from shipper.reasons import Classifier
from shipper.systemd import Notifier

log = logging.getLogger(__name__)

POLL_INTERVAL = 0.25  # seconds between looks at the file system
READ_BUDGET = 4 * 1024 * 1024  # bytes read per input per loop turn
STATUS_FILE_INTERVAL = 2.0  # seconds between writes of status.json
CHECKPOINT_INTERVAL = 0.5  # seconds between checkpoint writes (when changed)
STOP_TIMEOUT = 20.0  # seconds to wait for acknowledgements at shutdown (TimeoutStopSec=30)
STATUS_FILE = "status.json"
DEAD_LETTER_FILE = "dead-letter.ndjson"


@dataclasses.dataclass
class Work:
    """Documents of finished sessions, on their way to OpenSearch."""

    docs: list[dict[str, Any]]
    # (tracked file, first offset in it, session id) for every file holding a line of a session
    positions: list[tuple[follow.TrackedFile, int, str]]
    nbytes: int
    created: float
    acked: float = 0.0
    verdicts: Counter[str] = dataclasses.field(default_factory=Counter)
    dead_lettered: int = 0


class InputState:
    """One configured input: its follower and its own pipeline (sessions spanning a rotation
    are joined because all files of an input feed the same pipeline)."""

    def __init__(self, spec: Any, settings: Any, store: CheckpointStore, classifier: Classifier | None) -> None:
        self.spec = spec
        fmt = formats.get(spec.format)
        options = ParseOptions(format=spec.format, tz=spec.zone, host_name=settings.host_name,
                               classifier=classifier, on_defect=_log_defect, limits=settings.limits)
        self.pipeline = Pipeline(fmt, options, direction=_direction(spec, fmt))
        self.store = store
        self.follower = follow.Follower(
            spec.paths, spec.exclude, start_at=spec.start_at, checkpoint_lookup=self._lookup,
            on_restart=self.pipeline.forget)
        self.last_shipped: dict[follow.TrackedFile, float] = {}

    def _lookup(self, f: follow.TrackedFile) -> int | None:
        cp = self.store.lookup(f.dev, f.ino, f.matches)
        if cp is None:
            return None
        if cp.replay_until > cp.offset:
            self.pipeline.skip_replayed(f, cp.replay_until, cp.replay_sessions)
        return cp.offset

    def describe(self) -> str:
        return ", ".join(self.spec.paths)


def _direction(spec: Any, fmt: formats.Format) -> Direction | None:
    """The direction of an input's pipeline: as configured, or for ``auto`` what the file
    names say (as ``parse``/``backfill`` do), else None: per session from its content."""
    if spec.direction != "auto":
        return Direction(spec.direction)
    names = {fmt.direction_from_name(p) for p in spec.paths}
    return names.pop() if len(names) == 1 else None


def _log_defect(defect: Defect) -> None:
    log.debug("defect: %s", defect)


def _session_bytes(session: Session) -> int:
    """About the bytes a session's lines took in the log (its transcript and line ends)."""
    return sum(map(len, session.lines)) + len(session.lines)


class LastError(logging.Handler):
    """Remembers the last warning of the output (BulkShipper logs each failed round there while
    it retries forever), for ``status`` and systemd's STATUS= line."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.message: str | None = None
        self.time: float | None = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.message = record.getMessage().splitlines()[0][:300]
        except Exception:  # noqa: BLE001 — a logging handler must never raise
            return
        self.time = record.created


class Sender(threading.Thread):
    """Ships Work items in order; puts them on ``done`` once acknowledged or dead-lettered."""

    def __init__(self, shipper: Any, done: queue.Queue[Work], abort: threading.Event, *, give_up: bool = False) -> None:
        super().__init__(name="sender", daemon=True)
        self.shipper = shipper
        self.todo: queue.Queue[Work | None] = queue.Queue()
        self.done = done
        self.abort = abort
        # --once (cron) gives up when the shipper's finite retries are exhausted, instead of
        # waiting forever like the service: the failure is kept here and becomes exit status 5.
        self.give_up = give_up
        self.failure: ShipperError | None = None
        self.last_error: str | None = None
        self.last_error_time: float | None = None
        self.busy = False

    def run(self) -> None:
        while True:
            item = self.todo.get()
            if item is None:
                return
            batch = [item]
            ndocs = len(item.docs)
            stop_after = False
            # Take whatever else is waiting: one ship() call, as few bulk requests as possible.
            while ndocs < 20000:
                try:
                    nxt = self.todo.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop_after = True
                    break
                batch.append(nxt)
                ndocs += len(nxt.docs)
            self.busy = True
            try:
                self._ship(batch)
            except ShippingStopped:
                return
            finally:
                self.busy = False
            if stop_after:
                return

    def _ship(self, batch: list[Work]) -> None:
        docs = [d for w in batch for d in w.docs]
        attempt = 0
        while True:
            try:
                result = self.shipper.ship(docs) if docs else None
                break
            except ShippingStopped:
                raise
            except (ShipperError, OSError) as exc:  # refused whole request, TLS, auth: keep trying
                self.last_error = str(exc).splitlines()[0]
                self.last_error_time = time.time()
                if self.give_up:
                    self.failure = exc if isinstance(exc, ShipperError) else ConnectionFailed(str(exc))
                    self.abort.set()
                    raise ShippingStopped("gave up") from None
                delay = opensearch.backoff_delay(attempt, 1.0, 60.0)
                log.error("shipping %d documents failed: %s; retrying in %.0fs", len(docs),
                          self.last_error, delay)
                attempt += 1
                if self.abort.wait(delay):
                    raise ShippingStopped("stopped") from None
        dead = set(result.dead_letter_ids) if result else set()
        now = time.monotonic()
        for w in batch:
            w.acked = now
            for d in w.docs:
                if dead and batching.document_id(d) in dead:
                    w.dead_lettered += 1
                else:
                    w.verdicts[str(d.get("smtp", {}).get("verdict", "unknown"))] += 1
            self.done.put(w)


class Daemon:
    def __init__(
        self,
        settings: Any,
        *,
        config_path: str | None = None,
        reload: Callable[[], Any] | None = None,
        once: bool = False,
        flush_open: bool = False,
        notifier: Notifier | None = None,
        client: Any = None,
        stop_timeout: float = STOP_TIMEOUT,
    ) -> None:
        self.settings = settings
        self._reload_settings = reload
        self.once = once
        self.flush_open = flush_open
        self.notifier = notifier or Notifier()
        self.client = client
        self.stop_timeout = stop_timeout
        self.state_dir = Path(settings.state_dir)
        self.store = CheckpointStore(self.state_dir)
        self.inputs: list[InputState] = []
        self.stop_requested = threading.Event()
        self.reload_requested = threading.Event()
        self.abort = threading.Event()
        self.done: queue.Queue[Work] = queue.Queue()
        self.inflight: deque[Work] = deque()
        self.inflight_bytes = 0
        self.max_buffered_seen = 0
        self.counters: Counter[str] = Counter()  # documents per verdict, plus others
        self.shipped_times: deque[tuple[float, int]] = deque()  # (monotonic, docs) last minute
        self.last_lag = 0.0
        self.started = time.time()
        self._last_checkpoint = 0.0
        self._last_status_file = 0.0
        self._last_status_log = time.monotonic()
        self._paused_logged = False
        self._pause_said = -1e9
        self.sender: Sender | None = None
        self.last_error = LastError()
        # For bench/tail_latency_bench.py: "<session id> <wall time of acknowledgement>" lines.
        ack_log = os.environ.get("SMTP_SHIPPER_ACK_LOG")
        self._ack_log = open(ack_log, "a", encoding="utf-8") if ack_log else None
        self._classifier: Any = None

    # -- set-up ------------------------------------------------------------------------------
    def _setup(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.store.load()
        self._classifier = Classifier.from_files(tuple(self.settings.reasons.rules_files))
        self.inputs = [InputState(spec, self.settings, self.store, self._classifier)
                       for spec in self.settings.inputs]
        if not self.inputs:
            log.warning("no inputs configured: nothing to follow (see 'inputs:' in the configuration)")
        if self.client is None:
            self.client = opensearch.make_client(self.settings.opensearch)
        shipper = opensearch.BulkShipper(
            self.client, self.settings, self.state_dir / DEAD_LETTER_FILE,
            max_retries=self.settings.opensearch.bulk.max_retries if self.once else None, stop=self.abort)
        logging.getLogger("shipper.opensearch").addHandler(self.last_error)
        self.sender = Sender(shipper, self.done, self.abort, give_up=self.once)
        self.sender.start()
        for inp in self.inputs:
            inp.follower.poll()
        try:
            self.client.info()
        except Exception as exc:  # noqa: BLE001 — any failure: say so, keep going, retry later
            log.warning("OpenSearch at %s is not reachable yet (%s); documents wait until it is",
                        opensearch.display_hosts(self.settings.opensearch), type(exc).__name__)

    def install_signal_handlers(self) -> None:
        def stop(signum: int, frame: Any) -> None:
            log.info("received %s: shutting down", signal.Signals(signum).name)
            self.stop_requested.set()

        def hup(signum: int, frame: Any) -> None:
            self.reload_requested.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGHUP, hup)

    # -- the loop ----------------------------------------------------------------------------
    def run(self) -> int:
        self._setup()
        nfiles = sum(len(i.follower.files) for i in self.inputs)
        log.info("started: %d inputs, %d files, state in %s", len(self.inputs), nfiles, self.state_dir)
        self.notifier.ready(f"following {nfiles} files")
        idle_check = 0.0
        try:
            while not self.stop_requested.is_set() and not self._gave_up():
                if self.reload_requested.is_set():
                    self.reload_requested.clear()
                    self._reload()
                self._collect_acks()
                got = self._read_all()
                now = time.monotonic()
                if now - idle_check >= 1.0:
                    idle_check = now
                    self._flush_idle()
                self._release_files()
                self._housekeeping()
                if self.once and got == 0 and self._at_eof():
                    if self.flush_open:
                        self._flush_all()
                    break
                if got == 0 or self._paused():
                    self._wait_for_acks(POLL_INTERVAL)
        finally:
            self._shutdown()
        if self._gave_up():
            assert self.sender is not None and self.sender.failure is not None
            raise ConnectionFailed(
                f"{self.sender.failure.message}; gave up after opensearch.bulk.max_retries "
                f"({self.settings.opensearch.bulk.max_retries}) retries — checkpoints stay before the "
                "unshipped documents, the next run sends them"
            )
        return 0

    def _gave_up(self) -> bool:
        return self.sender is not None and self.sender.failure is not None

    def _read_all(self) -> int:
        """Poll and read every input; returns the bytes read."""
        total = 0
        for inp in self.inputs:
            if self._paused():
                break
            inp.follower.poll()
            room = self.settings.pipeline.max_buffered_bytes - self.inflight_bytes
            chunks = inp.follower.read(min(READ_BUDGET, room))
            if chunks:
                total += self._process(inp, chunks)
        return total

    def _paused(self) -> bool:
        buffered = self.inflight_bytes
        self.max_buffered_seen = max(self.max_buffered_seen, buffered)
        paused = bool(buffered >= self.settings.pipeline.max_buffered_bytes)
        if paused != self._paused_logged:
            # Said at most every 30 s: while catching up, reading pauses and resumes constantly.
            now = time.monotonic()
            if now - self._pause_said >= 30:
                self._pause_said = now
                if paused:
                    log.warning("reading paused: %d bytes wait for OpenSearch (pipeline.max_buffered_bytes=%d)",
                                buffered, self.settings.pipeline.max_buffered_bytes)
                else:
                    log.info("reading resumed")
        self._paused_logged = paused
        return paused

    def _process(self, inp: InputState, chunks: list[tuple[follow.TrackedFile, Chunk]]) -> int:
        nbytes = 0
        shipments: list[Shipment] = []
        defects = inp.pipeline.stats.defects
        for f, chunk in chunks:
            nbytes += len(chunk.data)
            shipments += inp.pipeline.feed(f, f.label, chunk)
        self.counters["defects"] += inp.pipeline.stats.defects - defects
        self._emit(shipments)
        return nbytes

    def _emit(self, shipments: list[Shipment]) -> None:
        if not shipments:
            return
        docs: list[dict[str, Any]] = []
        positions: list[tuple[follow.TrackedFile, int, str]] = []
        nbytes = 0
        for session, session_docs in shipments:
            docs += session_docs
            positions += [(f, off, session.session_id) for f, off in session.files.items()
                          if isinstance(f, follow.TrackedFile)]
            nbytes += _session_bytes(session)
        self.counters["sessions"] += len(shipments)
        w = Work(docs, positions, nbytes, time.monotonic())
        self.inflight.append(w)
        self.inflight_bytes += nbytes
        assert self.sender is not None
        self.sender.todo.put(w)

    def _flush_idle(self) -> None:
        idle = float(self.settings.idle_timeout)
        for inp in self.inputs:
            done = inp.pipeline.flush_idle(time.monotonic(), idle)
            if done:
                log.debug("%d idle sessions emitted as incomplete", len(done))
                self._emit(done)

    def _flush_all(self) -> None:
        for inp in self.inputs:
            self._emit(inp.pipeline.flush_all())

    def _at_eof(self) -> bool:
        return all(f.offset + f.pending >= f.size for i in self.inputs for f in i.follower.files)

    def _wait_for_acks(self, timeout: float) -> None:
        try:
            w = self.done.get(timeout=timeout)
        except queue.Empty:
            return
        self._acked(w)

    def _collect_acks(self) -> None:
        while True:
            try:
                w = self.done.get_nowait()
            except queue.Empty:
                return
            self._acked(w)

    def _acked(self, w: Work) -> None:
        # Work is acknowledged in order (one sender, FIFO), so it is the oldest in flight.
        try:
            self.inflight.remove(w)
        except ValueError:
            pass
        self.inflight_bytes -= w.nbytes
        self.counters.update({f"documents_{k}": v for k, v in w.verdicts.items()})
        self.counters["documents"] += sum(w.verdicts.values())
        self.counters["dead_lettered"] += w.dead_lettered
        self.shipped_times.append((w.acked, len(w.docs)))
        self.last_lag = w.acked - w.created
        now = time.time()
        if self._ack_log is not None:
            self._ack_log.write("".join(f"{d.get('smtp', {}).get('session_id')} {now:.4f}\n" for d in w.docs))
            self._ack_log.flush()
        for inp in self.inputs:
            for f, _, _ in w.positions:
                if f in inp.follower.files or f in inp.last_shipped:
                    inp.last_shipped[f] = now

    # -- checkpoints, release, status --------------------------------------------------------
    def _safe_positions(self) -> dict[follow.TrackedFile, tuple[int, set[str]]]:
        """Per file: where a checkpoint may be, and the sessions to read again from there."""
        safe: dict[follow.TrackedFile, tuple[int, set[str]]] = {}
        for inp in self.inputs:
            open_positions = inp.pipeline.open_positions()
            for f in inp.follower.files:
                held = open_positions.get(f)
                safe[f] = (min(f.offset, held[0]), set(held[1])) if held else (f.offset, set())
        for w in self.inflight:
            for f, off, sid in w.positions:
                if f in safe:
                    p, keep = safe[f]
                    keep.add(sid)
                    safe[f] = (min(p, off), keep)
        return safe

    def _checkpoints(self) -> dict[str, Checkpoint]:
        out: dict[str, Checkpoint] = {}
        now = time.time()
        for f, (pos, keep) in self._safe_positions().items():
            replay_until = f.offset if pos < f.offset else 0
            cp = Checkpoint(path=f.path or f.label, dev=f.dev, ino=f.ino, fingerprint=f.fingerprint,
                            fp_len=f.fp_len, offset=pos, replay_until=replay_until,
                            replay_sessions=tuple(sorted(keep)) if replay_until else (), updated=now)
            out[cp.key] = cp
        return out

    def write_checkpoints(self) -> None:
        try:
            self.store.save(self._checkpoints())
        except OSError as exc:
            log.error("cannot write checkpoints to %s: %s", self.store.path, exc)

    def _release_files(self) -> None:
        grace = float(self.settings.pipeline.deleted_file_grace)
        safe = None
        for inp in self.inputs:
            if not any(f.finished for f in inp.follower.files):
                continue
            if safe is None:
                safe = self._safe_positions()

            def releasable(f: follow.TrackedFile, safe: Any = safe, inp: InputState = inp) -> bool:
                pos = safe.get(f, (f.offset, set()))[0]
                if pos >= f.offset:
                    return True
                waited = time.monotonic() - (f.gone_since or time.monotonic())
                if waited >= grace:
                    log.warning("%s: released %.0fs after it was deleted/rotated although %d bytes "
                                "of it are not acknowledged yet (pipeline.deleted_file_grace); "
                                "a crash now would lose them", f.label, waited, f.offset - pos)
                    return True
                return False

            for f in inp.follower.release(releasable):
                log.info("%s (%s): finished and released", f.label, f.key.as_str())
                inp.pipeline.defects_by_source.pop(f, None)
                inp.last_shipped.pop(f, None)

    def _housekeeping(self, force: bool = False) -> None:
        now = time.monotonic()
        self.notifier.watchdog(now)
        if force or now - self._last_checkpoint >= CHECKPOINT_INTERVAL:
            self._last_checkpoint = now
            self.write_checkpoints()
        if force or now - self._last_status_file >= STATUS_FILE_INTERVAL:
            self._last_status_file = now
            status = self.status()
            try:
                write_atomic(str(self.state_dir / STATUS_FILE), json.dumps(status, indent=1).encode(), 0o644)
            except OSError as exc:
                log.error("cannot write %s: %s", self.state_dir / STATUS_FILE, exc)
            self.notifier.status(status_line(status))
        if now - self._last_status_log >= float(self.settings.pipeline.status_interval):
            self._last_status_log = now
            log.info("%s; counters: %s", status_line(self.status()),
                     ", ".join(f"{k}={v}" for k, v in sorted(self.counters.items())) or "none")
            # Replies no reason rule matched: what users (and we) should write rules for.
            if self._classifier is not None:
                self._classifier.log_unmatched(log, limit=5)

    def status(self) -> dict[str, Any]:
        now_m = time.monotonic()
        while self.shipped_times and now_m - self.shipped_times[0][0] > 60:
            self.shipped_times.popleft()
        safe = self._safe_positions()
        files = []
        for inp in self.inputs:
            open_positions = inp.pipeline.open_positions()
            for f in inp.follower.files:
                last = inp.last_shipped.get(f)
                files.append({
                    "path": f.path or f.label,
                    "label": f.label,
                    "identity": f.key.as_str(),
                    "position": safe.get(f, (f.offset, set()))[0],
                    "read_offset": f.offset,
                    "size": f.size,
                    "lag_bytes": max(0, f.size - safe.get(f, (f.offset, set()))[0]),
                    "unread_bytes": max(0, f.size - f.offset),
                    "last_shipped": _iso(last) if last else None,
                    "sessions_open": len(open_positions.get(f, (0, ()))[1]),
                    "defects": inp.pipeline.defects_by_source[f],
                    "state": "deleted" if f.deleted else ("rotated" if f.path is None else "following"),
                })
        sender = self.sender
        return {
            "pid": os.getpid(),
            "updated": _iso(time.time()),
            "started": _iso(self.started),
            "files": files,
            "counters": dict(self.counters),
            "docs_per_min": sum(n for _, n in self.shipped_times),
            "lag_seconds": round(self.last_lag, 3),
            "buffered_bytes": self.inflight_bytes,
            "max_buffered_bytes_seen": self.max_buffered_seen,
            "max_buffered_bytes": self.settings.pipeline.max_buffered_bytes,
            "paused": self._paused_logged,
            "in_flight_documents": sum(len(w.docs) for w in self.inflight),
            **self._last_error(sender),
        }

    def _last_error(self, sender: Sender | None) -> dict[str, Any]:
        errors = [(self.last_error.time, self.last_error.message)]
        if sender is not None:
            errors.append((sender.last_error_time, sender.last_error))
        when, text = max(((t, m) for t, m in errors if t is not None), default=(None, None))
        # Shown for 10 minutes in the one-line status; status.json keeps it with its time.
        recent = when is not None and time.time() - when < 600
        return {"last_error": text, "last_error_time": _iso(when) if when else None,
                "last_error_recent": recent}

    # -- reload and shutdown -----------------------------------------------------------------
    def _reload(self) -> None:
        self.notifier.reloading()
        try:
            new = self._reload_settings() if self._reload_settings else None
        except ShipperError as exc:
            log.error("configuration reload failed; keeping the running configuration:\n%s", exc)
            self.notifier.notify(READY=1, STATUS=f"reload failed: {str(exc).splitlines()[0]}")
            return
        if new is None:
            self.notifier.notify(READY=1)
            return
        old_specs = {i.spec: i for i in self.inputs}
        kept = [old_specs[s] for s in new.inputs if s in old_specs]
        added = [InputState(s, new, self.store, self._classifier) for s in new.inputs if s not in old_specs]
        removed = [i for s, i in old_specs.items() if s not in new.inputs]
        for inp in removed:
            log.info("input %s removed; its files are no longer followed", inp.describe())
            inp.follower.close()
        for inp in added:
            log.info("input %s added", inp.describe())
            inp.follower.poll()
        if new.opensearch != self.settings.opensearch or new.state_dir != self.settings.state_dir:
            log.warning("changes to opensearch.* and state_dir take effect after a restart")
        self.settings = dataclasses.replace(new, opensearch=self.settings.opensearch,
                                            state_dir=self.settings.state_dir)
        self.inputs = kept + added
        log.info("configuration reloaded: %d inputs", len(self.inputs))
        self.notifier.notify(READY=1, STATUS=f"reloaded: {len(self.inputs)} inputs")

    def _shutdown(self) -> None:
        self.notifier.stopping("stopping: shipping what is finished")
        sender = self.sender
        if sender is not None:
            sender.todo.put(None)
            # --once waits for OpenSearch as long as it takes, unless told to stop; a signal
            # bounds the wait by the stop timeout (systemd's TimeoutStopSec must not hit us).
            deadline = None if self.once and not self.stop_requested.is_set() else time.monotonic() + self.stop_timeout
            while self.inflight and not self._gave_up():
                if deadline is None and self.stop_requested.is_set():
                    deadline = time.monotonic() + self.stop_timeout
                if deadline is not None and time.monotonic() >= deadline:
                    break
                self._wait_for_acks(0.2)
                self.notifier.watchdog()
            if self.inflight:
                log.warning("stopping with %d documents not acknowledged; they stay behind the "
                            "checkpoint and are read again at the next start",
                            sum(len(w.docs) for w in self.inflight))
            self.abort.set()
            sender.join(timeout=5)
            self._collect_acks()
        self._housekeeping(force=True)
        for inp in self.inputs:
            inp.follower.close()
        logging.getLogger("shipper.opensearch").removeHandler(self.last_error)
        log.info("stopped: %s", ", ".join(f"{k}={v}" for k, v in sorted(self.counters.items())) or "nothing shipped")
        if self._classifier is not None:
            self._classifier.log_unmatched(log)
        self.notifier.close()
        if self._ack_log is not None:
            self._ack_log.close()


def _iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _human(n: float) -> str:
    for unit in ("", "k", "M", "G"):
        if abs(n) < 1000:
            return f"{n:.0f}{unit}" if unit == "" else f"{n:.1f}{unit}"
        n /= 1000
    return f"{n:.1f}T"


def status_line(status: dict[str, Any]) -> str:
    """The one-line summary for systemd's STATUS= and the periodic log line."""
    parts = [f"shipping {len(status['files'])} files",
             f"{_human(status['docs_per_min'])} docs/min",
             f"lag {status['lag_seconds']:.1f} s"]
    if status.get("paused"):
        parts.append("reading paused (output behind)")
    if status.get("last_error") and status.get("last_error_recent", True):
        parts.append(f"last error {status['last_error'][:120]}")
    return ", ".join(parts)
