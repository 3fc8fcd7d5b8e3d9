"""One input of the daemon: its files (``Follower``), its ``Pipeline``, where it resumes.

All files of an input feed the same pipeline, so that a session spanning a rotation is joined.
Where a file resumes after a restart comes from the checkpoints (``shipper.checkpoint``) — or, for
a stateful format (Postfix's queue IDs), from the format's saved state and the positions it was
taken at (``FormatState``), which are then that input's checkpoints.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from typing import Any

from shipper import follow, formats
from shipper.checkpoint import CheckpointStore, FormatState
from shipper.model import Defect, Direction
from shipper.pipeline import ParseOptions, Pipeline
from shipper.reasons import Classifier
from shipper.sender import Work
from shipper.settings import InputSettings, Settings

log = logging.getLogger("shipper.daemon")

STATE_INTERVAL = 2.0  # seconds between snapshots of a stateful format (Postfix's queue IDs)


class InputState:
    """One configured input: its follower and its own pipeline (sessions spanning a rotation
    are joined because all files of an input feed the same pipeline)."""

    def __init__(self, spec: InputSettings, settings: Settings, store: CheckpointStore,
                 classifier: Classifier | None) -> None:
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
        # A stateful format (Postfix): its state is saved with the positions it was taken at
        # (shipper.checkpoint.FormatState); those positions are its files' checkpoints.
        self.saved: FormatState | None = None
        self.committed: dict[follow.TrackedFile, int] = {}  # positions of the last saved snapshot
        self.first_offset: dict[follow.TrackedFile, int] = {}  # where reading a file began
        self.pending: tuple[int, dict[follow.TrackedFile, int], dict[str, Any]] | None = None
        self.snapshot_time = 0.0
        if self.pipeline.stateful:
            key = hashlib.sha256("\x1f".join([spec.format, *spec.paths]).encode()).hexdigest()[:16]
            self.saved = FormatState(store.state_dir, key)
            state = self.saved.load()
            if state is not None:
                self.pipeline.restore_state(state)

    def _lookup(self, f: follow.TrackedFile) -> int | None:
        if self.saved is not None:
            offset = self.saved.lookup(f.dev, f.ino, f.matches)
            if offset is not None:
                self.committed[f] = offset
                return offset
        cp = self.store.lookup(f.dev, f.ino, f.matches)
        if cp is None:
            return None
        if cp.replay_until > cp.offset:
            self.pipeline.skip_replayed(f, cp.replay_until, cp.replay_sessions)
        return cp.offset

    def describe(self) -> str:
        return ", ".join(self.spec.paths)

    def save_state(self, now: float, force: bool, seq: int, inflight: Iterable[Work]) -> None:
        """A stateful format's snapshot, taken when documents up to ``seq`` had been made, is
        saved once none of them is in flight any more (its positions become those files'
        checkpoints); then, every ``STATE_INTERVAL`` (or with ``force``), the next is taken."""
        assert self.saved is not None
        if self.pending is not None:
            taken, positions, state = self.pending
            if all(w.seq > taken for w in inflight):
                try:
                    self.saved.save(state, {f"{f.dev}:{f.ino}": {
                        "path": f.path or f.label, "fingerprint": f.fingerprint, "fp_len": f.fp_len,
                        "offset": off} for f, off in positions.items()})
                except OSError as exc:
                    log.error("cannot write %s: %s", self.saved.path, exc)
                else:
                    self.committed = positions
                    self.pending = None
        if self.pending is None and (force or now - self.snapshot_time >= STATE_INTERVAL):
            positions = {f: f.offset for f in self.follower.files}
            if positions != self.committed:
                self.snapshot_time = now
                snapshot = self.pipeline.save_state()
                assert snapshot is not None
                self.pending = (seq, positions, snapshot)
                if force and not any(True for _ in inflight):  # at shutdown: nothing to wait for
                    self.save_state(now, False, seq, ())


def _direction(spec: InputSettings, fmt: formats.AnyFormat) -> Direction | None:
    """The direction of an input's pipeline: as configured, or for ``auto`` what the file
    names say (as ``parse``/``backfill`` do), else None: per session from its content."""
    if spec.direction != "auto":
        return Direction(spec.direction)
    names = {fmt.direction_from_name(p) for p in spec.paths}
    return names.pop() if len(names) == 1 else None


def _log_defect(defect: Defect) -> None:
    log.debug("defect: %s", defect)


