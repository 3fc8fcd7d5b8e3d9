"""The daemon's sender thread: ships finished work in order and hands it back acknowledged.

The main thread puts ``Work`` (the documents of finished sessions and where their lines are) on
``Sender.todo``; the sender takes whatever is waiting at once (as few bulk requests as possible),
ships it with ``BulkShipper.ship`` — which returns when every document is acknowledged or
dead-lettered, retrying 429s and 5xx per document — and puts each item on ``done`` for the main
thread to checkpoint. A whole request that fails (OpenSearch unreachable, TLS, credentials) is
retried forever with backoff, or, with ``give_up`` (``run --once``), becomes the run's failure.

If the thread dies of anything else (a bug), ``crash`` says why: the main thread checks
``alive`` on every turn and stops the daemon with that reason (systemd then restarts it), rather
than reading on while nothing is shipped.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
import traceback
from collections import Counter
from typing import Any

from shipper import batching, opensearch
from shipper.errors import ConnectionFailed, ShipperError
from shipper.follow import TrackedFile
from shipper.opensearch import BulkShipper, ShippingStopped

log = logging.getLogger(__name__)

MAX_DOCS_PER_SHIP = 20_000  # work taken at once by one ship() call


@dataclasses.dataclass
class Work:
    """Documents of finished sessions, on their way to OpenSearch."""

    docs: list[dict[str, Any]]
    # (tracked file, first offset in it, session id) for every file holding a line of a session
    positions: list[tuple[TrackedFile, int, str]]
    nbytes: int
    created: float
    acked: float = 0.0
    verdicts: Counter[str] = dataclasses.field(default_factory=Counter)
    dead_lettered: int = 0
    seq: int = 0  # emission order: a format snapshot is saved once all work before it is acked


class Sender(threading.Thread):
    """Ships Work items in order; puts them on ``done`` once acknowledged or dead-lettered."""

    def __init__(self, shipper: BulkShipper, done: queue.Queue[Work], abort: threading.Event, *,
                 give_up: bool = False) -> None:
        super().__init__(name="sender", daemon=True)
        self.shipper = shipper
        self.todo: queue.Queue[Work | None] = queue.Queue()
        self.done = done
        self.abort = abort
        # --once (cron) gives up when the shipper's finite retries are exhausted, instead of
        # waiting forever like the service: the failure is kept here and becomes exit status 5.
        self.give_up = give_up
        self.failure: ShipperError | None = None
        self.crash: str | None = None  # why the thread died, when it died of something unexpected
        self.last_error: str | None = None
        self.last_error_time: float | None = None
        self.retried = 0  # documents sent again after a 429 or 5xx of their own

    def run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # noqa: BLE001 — reported to the main thread, which stops
            self.crash = f"{type(exc).__name__}: {exc}"
            log.error("the sender thread died:\n%s", traceback.format_exc().rstrip())

    def _loop(self) -> None:
        while True:
            item = self.todo.get()
            if item is None:
                return
            batch = [item]
            ndocs = len(item.docs)
            stop_after = False
            while ndocs < MAX_DOCS_PER_SHIP:  # whatever else is waiting: one ship() call
                try:
                    nxt = self.todo.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop_after = True
                    break
                batch.append(nxt)
                ndocs += len(nxt.docs)
            try:
                self._ship(batch)
            except ShippingStopped:
                return
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
        if result is not None:
            self.retried += result.retried
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
