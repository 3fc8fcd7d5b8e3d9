"""Durable per-file positions (I/O): ``<state_dir>/checkpoints.json``.

One JSON object, keyed by ``"<dev>:<inode>"``, each entry holding the path, the fingerprint of
the file's first bytes (and how many bytes it covers), the byte ``offset`` from which reading
must resume, and the replay filter below. Written atomically: temporary file, fsync, rename,
fsync of the directory — after a crash the file is either the old or the new version.

The replay filter. The checkpoint ``offset`` of a file is held back to the first line of the
oldest session that is still open (or shipped but not yet acknowledged), while sessions that
started after it may already be finished and acknowledged. On restart, lines in
``[offset, replay_until)`` are fed to the assembler only when they belong to one of
``replay_sessions`` (the sessions that were not yet acknowledged): re-feeding the tail of an
already shipped session would otherwise create a second, truncated session with its own id.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
import time
from collections.abc import Mapping
from typing import Any

log = logging.getLogger(__name__)

FILE_NAME = "checkpoints.json"
VERSION = 1


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    path: str
    dev: int
    ino: int
    fingerprint: str
    fp_len: int
    offset: int
    replay_until: int = 0
    replay_sessions: tuple[str, ...] = ()
    updated: float = 0.0

    @property
    def key(self) -> str:
        return f"{self.dev}:{self.ino}"

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["replay_sessions"] = list(self.replay_sessions)
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Checkpoint:
        return cls(
            path=str(d["path"]), dev=int(d["dev"]), ino=int(d["ino"]),
            fingerprint=str(d.get("fingerprint", "")), fp_len=int(d.get("fp_len", 0)),
            offset=int(d["offset"]), replay_until=int(d.get("replay_until", 0)),
            replay_sessions=tuple(str(x) for x in d.get("replay_sessions", ())),
            updated=float(d.get("updated", 0.0)),
        )


class CheckpointStore:
    """Reads and writes ``checkpoints.json`` in ``state_dir``."""

    def __init__(self, state_dir: str | os.PathLike[str]) -> None:
        self.state_dir = os.fspath(state_dir)
        self.path = os.path.join(self.state_dir, FILE_NAME)
        self.entries: dict[str, Checkpoint] = {}
        self._last_written: dict[str, Checkpoint] = {}

    def load(self) -> dict[str, Checkpoint]:
        """Read the file; a missing file means no checkpoints. A corrupt file is renamed aside
        (and logged): starting over re-sends documents with the same ids, which is harmless."""
        try:
            with open(self.path, "rb") as fh:
                raw = json.load(fh)
            files = raw.get("files", {}) if isinstance(raw, dict) else {}
            self.entries = {k: Checkpoint.from_json(v) for k, v in files.items()}
        except FileNotFoundError:
            self.entries = {}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            aside = f"{self.path}.corrupt-{int(time.time())}"
            log.error("%s is unreadable (%s); moved aside to %s, starting without checkpoints",
                      self.path, exc, aside)
            os.replace(self.path, aside)
            self.entries = {}
        self._last_written = dict(self.entries)
        return self.entries

    def lookup(self, dev: int, ino: int, matches: Any) -> Checkpoint | None:
        """The checkpoint of the file with this device and inode, if ``matches(fingerprint,
        fp_len)`` confirms its first bytes are the ones we saw (inode reuse check)."""
        cp = self.entries.get(f"{dev}:{ino}")
        if cp is None:
            return None
        if not matches(cp.fingerprint, cp.fp_len):
            log.info("inode %s:%s of %s was reused by another file; its old checkpoint is ignored",
                     dev, ino, cp.path)
            return None
        return cp

    def save(self, current: Mapping[str, Checkpoint]) -> bool:
        """Write ``current`` merged with loaded entries whose file still exists unchanged at its
        path (files not followed right now keep their position). Returns False if unchanged."""
        merged: dict[str, Checkpoint] = {}
        for key, cp in self.entries.items():
            if key in current:
                continue
            try:
                st = os.stat(cp.path)
            except OSError:
                continue
            if st.st_dev == cp.dev and st.st_ino == cp.ino:
                merged[key] = cp
        merged.update(current)
        if _same(merged, self._last_written):
            return False
        write_atomic(self.path, json.dumps(
            {"version": VERSION, "files": {k: v.to_json() for k, v in sorted(merged.items())}},
            indent=1).encode())
        self.entries = merged
        self._last_written = dict(merged)
        return True


def _same(a: Mapping[str, Checkpoint], b: Mapping[str, Checkpoint]) -> bool:
    if a.keys() != b.keys():
        return False
    return all(dataclasses.replace(a[k], updated=0) == dataclasses.replace(b[k], updated=0) for k in a)


def write_atomic(path: str, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves either the old or the new file."""
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dfd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


# -- the saved state of a stateful format ---------------------------------------------------------

STATE_DIR = "format-state"


class FormatState:
    """The joining state of one input whose format keeps state (``Pipeline.stateful``: Postfix
    joins lines by queue ID) and the file positions it was taken at (I/O):
    ``<state_dir>/format-state/<key>.json``, written atomically.

    The state and its positions are one snapshot: everything before the positions is in the
    state, nothing after. The daemon saves one only when OpenSearch has acknowledged every
    document made from the lines before it, and after a restart resumes from these positions
    with this state; documents of the lines after them are made again, identical, with the same
    ids. Written before ``checkpoints.json``: after a crash between the two, these positions
    (not the older checkpoints) go with the state."""

    def __init__(self, state_dir: str | os.PathLike[str], key: str) -> None:
        self.path = os.path.join(os.fspath(state_dir), STATE_DIR, f"{key}.json")
        self.positions: dict[str, dict[str, Any]] = {}

    def load(self) -> dict[str, Any] | None:
        """The saved state (None: none, or unreadable: logged, and the input starts without)."""
        try:
            with open(self.path, "rb") as fh:
                raw = json.load(fh)
            self.positions = dict(raw["positions"])
            state: dict[str, Any] = raw["state"]
            return state
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as exc:
            log.error("%s is unreadable (%s); this input starts without its saved state", self.path, exc)
            self.positions = {}
            return None

    def lookup(self, dev: int, ino: int, matches: Any) -> int | None:
        """The position of the file with this device and inode in the saved snapshot."""
        entry = self.positions.get(f"{dev}:{ino}")
        if entry is None or not matches(entry["fingerprint"], entry["fp_len"]):
            return None
        return int(entry["offset"])

    def save(self, state: dict[str, Any], positions: Mapping[str, dict[str, Any]]) -> None:
        write_atomic(self.path, json.dumps({"version": VERSION, "positions": dict(positions),
                                            "state": state}, separators=(",", ":")).encode())
        self.positions = dict(positions)
