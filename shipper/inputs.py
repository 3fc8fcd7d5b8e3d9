"""Whole-file input for ``parse`` and ``backfill`` (I/O): paths, globs, ``-`` and ``.gz`` → chunks.

Opening and reading files is all that happens here: ``read_chunks`` hands the bytes of one file
to ``shipper.lines`` and yields its chunks; what becomes of them is ``shipper.pipeline``'s.

Byte offsets are positions in the file as read — for a ``.gz`` file, in the decompressed stream.
"""

from __future__ import annotations

import glob
import gzip
import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import IO

from shipper.errors import InputError
from shipper.lines import MAX_LINE, Chunk, LineSplitter

STDIN = "-"
STDIN_NAME = "<stdin>"
BLOCK = 256 * 1024  # bytes read at a time
_GLOB_CHARS = frozenset("*?[")


def read_chunks(path: str, max_line: int = MAX_LINE, size: int = BLOCK) -> Iterator[Chunk]:
    """The chunks of lines of ``path`` (``-``: stdin), read ``size`` bytes at a time."""
    with open_input(path) as stream:
        yield from stream_chunks(stream, max_line, size)


def stream_chunks(stream: IO[bytes], max_line: int = MAX_LINE, size: int = BLOCK) -> Iterator[Chunk]:
    """The chunks of lines of a binary stream; memory ``size + max_line`` at most."""
    read = getattr(stream, "read1", stream.read)  # what is there: a pipe is not waited on
    splitter = LineSplitter(max_line)
    while data := read(size):
        yield from splitter.feed(data)
    yield from splitter.end()


# -- opening -----------------------------------------------------------------------------------

def expand_paths(paths: Iterable[str]) -> list[str]:
    """Globs expanded (sorted), ``-`` kept; every file checked readable before any is parsed,
    so that a typo fails fast with ``InputError`` instead of after half the output."""
    result: list[str] = []
    for path in paths:
        if path == STDIN:
            result.append(path)
            continue
        if _GLOB_CHARS.intersection(path) and not os.path.exists(path):
            matches = sorted(p for p in glob.glob(path) if os.path.isfile(p))
            if not matches:
                raise InputError(f"{path}: no file matches this pattern")
            result.extend(matches)
            continue
        if os.path.isdir(path):
            raise InputError(f"{path}: is a directory", hint="give the log files, or a glob such "
                             "as 'logs/SMTPOutboundConversation*.log'")
        if not os.path.exists(path):
            raise InputError(f"{path}: no such file")
        if not os.access(path, os.R_OK):
            raise InputError(f"{path}: permission denied")
        result.append(path)
    return result or [STDIN]


@contextmanager
def open_input(path: str) -> Iterator[IO[bytes]]:
    """A binary stream of ``path`` (``-`` = stdin), transparently gunzipped when it starts
    with the gzip magic bytes (whatever its name)."""
    if path == STDIN:
        raw: IO[bytes] = sys.stdin.buffer
        close = False
    else:
        try:
            raw = open(path, "rb")  # closed below
        except OSError as exc:
            raise InputError(f"{path}: cannot open: {exc.strerror or exc}") from exc
        close = True
    try:
        peek = getattr(raw, "peek", None)
        magic = peek(2)[:2] if peek is not None else b""
        if magic == b"\x1f\x8b":
            with gzip.GzipFile(fileobj=raw, mode="rb") as gz:
                yield gz  # type: ignore[misc]  # GzipFile reads like the BinaryIO it wraps; typeshed disagrees
        else:
            yield raw
    finally:
        if close:
            raw.close()
