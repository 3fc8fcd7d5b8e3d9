"""Following log files: globs, file identity, rotation, truncation, partial lines (I/O).

A ``Follower`` watches the globs of one configured input. ``poll()`` looks at the file system
(new files, renames, truncation, deletion); ``read()`` returns complete lines, oldest file first,
so that a session whose lines continue in the file that replaced a rotated one is fed in order.

Identity of a file is device + inode + a fingerprint of its first bytes (sha256 of the first
``FINGERPRINT_BYTES``, recomputed until the file has that many bytes). Device + inode alone is
not enough: inodes are reused as soon as a file is deleted (a classic cause of skipped data in
log shippers), and a fingerprint alone is not enough either: two files can begin with the same
bytes (the same first line).

Nothing here parses: what a file gives is ``Chunk``s of whole lines from its own
``shipper.lines.LineSplitter`` (the one every reader uses), with their byte offsets.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import glob
import hashlib
import logging
import os
import time
from collections.abc import Callable, Sequence

from shipper.lines import MAX_LINE, Chunk, LineSplitter

log = logging.getLogger(__name__)

FINGERPRINT_BYTES = 1024
READ_CHUNK = 256 * 1024
# A rotated-away (renamed out of the globs, or deleted) file that has not grown for this long is
# finished: its last line is consumed even without a newline (a writer that still held the old
# file open had time to finish it).
FINISH_AFTER_SECONDS = 2.0


@dataclasses.dataclass(frozen=True)
class FileKey:
    """The identity of a file: device, inode and fingerprint of its first bytes."""

    dev: int
    ino: int
    fingerprint: str  # hex sha256 of the first min(size, FINGERPRINT_BYTES) bytes; "" if empty

    def as_str(self) -> str:
        return f"{self.dev}:{self.ino}:{self.fingerprint[:16]}"


def fingerprint_of(fd: int, size: int) -> tuple[str, int]:
    """sha256 (hex) of the first ``min(size, FINGERPRINT_BYTES)`` bytes and how many that was."""
    n = min(size, FINGERPRINT_BYTES)
    if n <= 0:
        return "", 0
    data = os.pread(fd, n, 0)
    return hashlib.sha256(data).hexdigest(), len(data)


class TrackedFile:
    """One open file being followed. ``label`` is the path it was opened under: documents and
    the session assembler see it; ``path`` is where it currently is (None when deleted or
    renamed out of the globs)."""

    def __init__(self, path: str, fd: int, st: os.stat_result, offset: int, seq: int,
                 max_line: int = MAX_LINE) -> None:
        self.label = path
        self.path: str | None = path
        self.fd = fd
        self.dev = st.st_dev
        self.ino = st.st_ino
        self.size = st.st_size
        self.mtime = st.st_mtime
        self.seq = seq  # discovery order; ties broken by it
        self.fingerprint, self.fp_len = fingerprint_of(fd, st.st_size)
        self.max_line = max_line
        self.lines = LineSplitter(max_line, offset)
        self.last_growth = time.monotonic()
        self.gone_since: float | None = None  # monotonic time it left the globs/was deleted
        self.deleted = False
        self.finished = False  # rotated away and drained: nothing more will come
        self.truncations = 0

    @property
    def key(self) -> FileKey:
        return FileKey(self.dev, self.ino, self.fingerprint)

    @property
    def offset(self) -> int:
        """Byte offset after the last line handed out."""
        return self.lines.offset

    @property
    def pending(self) -> int:
        """Bytes read after ``offset`` that are not a whole line yet."""
        return self.lines.pending

    def start_at(self, offset: int) -> None:
        self.lines = LineSplitter(self.max_line, offset)

    def matches(self, fingerprint: str, fp_len: int) -> bool:
        """Do the first ``fp_len`` bytes of this file still hash to ``fingerprint``?"""
        if fp_len == 0:
            return True
        try:
            data = os.pread(self.fd, fp_len, 0)
        except OSError:
            return False
        return len(data) == fp_len and hashlib.sha256(data).hexdigest() == fingerprint

    def close(self) -> None:
        if self.fd >= 0:
            try:
                os.close(self.fd)
            finally:
                self.fd = -1

    def __repr__(self) -> str:
        return f"TrackedFile({self.label!r} at {self.path!r}, {self.key.as_str()}, offset={self.offset})"


def _matches_any(path: str, patterns: Sequence[str]) -> bool:
    name = os.path.basename(path)
    return any(fnmatch.fnmatch(path, p) or fnmatch.fnmatch(name, p) for p in patterns)


def expand_globs(paths: Sequence[str], exclude: Sequence[str] = ()) -> list[str]:
    """Regular files matching any of ``paths`` and none of ``exclude`` (sorted, unique)."""
    found: set[str] = set()
    for pattern in paths:
        for p in glob.glob(os.path.expanduser(pattern)):
            if exclude and _matches_any(p, exclude):
                continue
            found.add(os.path.abspath(p))
    return sorted(found)


# Where to start a file never seen before: the checkpoint lookup returns an offset or None.
CheckpointLookup = Callable[["TrackedFile"], int | None]


class Follower:
    """Follows the files of one input. Not thread-safe: one thread polls and reads."""

    def __init__(
        self,
        paths: Sequence[str],
        exclude: Sequence[str] = (),
        *,
        start_at: str = "beginning",
        checkpoint_lookup: CheckpointLookup | None = None,
        on_restart: Callable[[TrackedFile], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_line: int = MAX_LINE,
    ) -> None:
        self.max_line = max_line
        self.paths = list(paths)
        self.exclude = list(exclude)
        self.start_at = start_at
        self.checkpoint_lookup = checkpoint_lookup or (lambda f: None)
        self.on_restart = on_restart or (lambda f: None)  # a file is read again from its start
        self.clock = clock
        self.files: list[TrackedFile] = []
        self._seq = 0
        self._first_poll = True

    # -- discovery ---------------------------------------------------------------------------
    def poll(self) -> None:
        """Look at the file system: pick up new files, notice renames, truncation, deletion."""
        now = self.clock()
        seen: set[int] = set()
        by_devino = {(f.dev, f.ino): f for f in self.files if f.fd >= 0}
        found: list[tuple[str, os.stat_result]] = []
        for path in expand_globs(self.paths, self.exclude):
            try:
                st = os.stat(path)
            except FileNotFoundError:
                continue
            except OSError as exc:
                log.warning("cannot stat %s: %s", path, exc)
                continue
            if _is_regular(st):
                found.append((path, st))
        # New files are opened oldest first, so that rotated files are read before newer ones.
        found.sort(key=lambda item: (item[1].st_mtime, item[0]))
        for path, st in found:
            tracked = by_devino.get((st.st_dev, st.st_ino))
            if tracked is None:
                tracked = self._open(path, st)
                if tracked is None:
                    continue
                by_devino[(tracked.dev, tracked.ino)] = tracked
            seen.add(id(tracked))
            if tracked.path != path:
                if tracked.path is not None:
                    log.info("%s was renamed to %s; following it there", tracked.path, path)
                tracked.path = path
                tracked.gone_since = None
            self._update_size(tracked, st)
        for f in self.files:
            if id(f) in seen or f.fd < 0:
                continue
            if f.gone_since is None:
                f.gone_since = now
                f.deleted = os.fstat(f.fd).st_nlink == 0
                where = "deleted" if f.deleted else "moved out of the configured paths"
                log.info("%s was %s; draining it to its end", f.path or f.label, where)
                f.path = None
            try:
                self._update_size(f, os.fstat(f.fd))
            except OSError:
                pass
            self._maybe_finish(f)
        self._first_poll = False

    def covers(self, path: str) -> bool:
        """Whether ``path`` is one of this input's files by name (its globs, not its excludes)."""
        return _matches_any(path, self.paths) and not (self.exclude and _matches_any(path, self.exclude))

    def adopt(self, path: str) -> TrackedFile | None:
        """Follow ``path`` although the globs no longer match it — a file of ours renamed while
        we were not running (logrotate's ``.1``) — from its checkpoint, to drain what is left
        of it: it is treated as rotated away from the start."""
        try:
            st = os.stat(path)
        except OSError as exc:
            log.warning("cannot stat %s: %s", path, exc)
            return None
        f = self._open(path, st)
        if f is not None:
            log.info("%s was renamed out of the configured paths while smtp-shipper was not running; "
                     "draining what is left of it", path)
            f.path = None
            f.gone_since = self.clock()
        return f

    def _open(self, path: str, st: os.stat_result) -> TrackedFile | None:
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError as exc:
            log.warning("cannot open %s: %s", path, exc)
            return None
        st = os.fstat(fd)
        self._seq += 1
        f = TrackedFile(path, fd, st, 0, self._seq, self.max_line)
        start = self.checkpoint_lookup(f)
        if start is not None:
            if start > st.st_size:
                log.warning("%s: file is shorter (%d bytes) than its checkpoint (%d); it was "
                            "truncated, reading from the start", path, st.st_size, start)
                start = 0
            how = f"from its checkpoint at byte {start}"
        elif self._first_poll and self.start_at == "end":
            start = st.st_size
            how = "from its end (start_at: end)"
        else:
            start = 0
            how = "from the start"
        f.start_at(start)
        f.size = st.st_size
        log.info("following %s (%s) %s", path, f.key.as_str(), how)
        self.files.append(f)
        return f

    def _restart(self, f: TrackedFile, st: os.stat_result) -> None:
        f.truncations += 1
        f.start_at(0)
        self.on_restart(f)
        f.size = st.st_size
        f.fingerprint, f.fp_len = fingerprint_of(f.fd, st.st_size)

    def _update_size(self, f: TrackedFile, st: os.stat_result) -> None:
        size = st.st_size
        if size < f.lines.position:
            log.warning("%s: file shrank from %d to %d bytes (truncated, copytruncate?); "
                        "reading it again from the start", f.path or f.label,
                        f.lines.position, size)
            self._restart(f, st)
        elif not f.matches(f.fingerprint, f.fp_len):
            # Same inode, but its first bytes changed: truncated and rewritten past our
            # position between two polls.
            log.warning("%s: the bytes at its start changed (truncated and rewritten?); "
                        "reading it again from the start", f.path or f.label)
            self._restart(f, st)
        elif size > f.size:
            f.last_growth = self.clock()
        f.size = size
        f.mtime = st.st_mtime
        if f.fp_len < FINGERPRINT_BYTES and size > f.fp_len:
            f.fingerprint, f.fp_len = fingerprint_of(f.fd, size)

    # -- reading -----------------------------------------------------------------------------
    def ordered(self) -> list[TrackedFile]:
        """Files oldest first: rotated-away ones before the files that replaced them."""
        return sorted(self.files, key=lambda f: (f.path is not None, f.mtime if f.path is None else 0,
                                                 f.seq))

    def read(self, budget: int) -> list[tuple[TrackedFile, Chunk]]:
        """Chunks of whole lines available now, about ``budget`` bytes at most, oldest file
        first."""
        out: list[tuple[TrackedFile, Chunk]] = []
        for f in self.ordered():
            if budget <= 0:
                break
            if f.fd < 0:
                continue
            chunks = self._read_file(f, budget)
            budget -= sum(len(c.data) for c in chunks)
            out.extend((f, c) for c in chunks)
        return out

    def _read_file(self, f: TrackedFile, budget: int) -> list[Chunk]:
        chunks: list[Chunk] = []
        while budget > 0:
            data = os.pread(f.fd, min(READ_CHUNK, max(budget, 4096)), f.lines.position)
            if not data:
                break
            if f.lines.position + len(data) > f.size:
                f.last_growth = self.clock()
                f.size = f.lines.position + len(data)
            got = f.lines.feed(data)
            budget -= len(data)
            chunks.extend(got)
        self._maybe_finish(f)
        if f.finished and f.pending:
            # The file was rotated away and stopped growing: its cut last line is final.
            chunks.extend(f.lines.end())
        return chunks

    def _maybe_finish(self, f: TrackedFile) -> None:
        if f.gone_since is None or f.finished:
            return
        now = self.clock()
        if (f.lines.position >= f.size and now - f.last_growth >= FINISH_AFTER_SECONDS
                and now - f.gone_since >= FINISH_AFTER_SECONDS):
            f.finished = True

    def release(self, should_release: Callable[[TrackedFile], bool]) -> list[TrackedFile]:
        """Close finished files for which ``should_release`` says yes; return them."""
        released = []
        for f in list(self.files):
            if f.finished and not f.pending and f.offset >= f.size and should_release(f):
                f.close()
                self.files.remove(f)
                released.append(f)
        return released

    def close(self) -> None:
        for f in self.files:
            f.close()
        self.files.clear()


def find_by_identity(directory: str, dev: int, ino: int) -> str | None:
    """The regular file in ``directory`` with device ``dev`` and inode ``ino``, if any."""
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.inode() == ino and entry.is_file(follow_symlinks=False) \
                        and entry.stat(follow_symlinks=False).st_dev == dev:
                    return entry.path
    except OSError:
        return None
    return None


def _is_regular(st: os.stat_result) -> bool:
    import stat as _stat

    return _stat.S_ISREG(st.st_mode)
