"""Bytes → lines: the one line splitter, for whole files and for followed files. Pure.

A ``LineSplitter`` is fed the bytes of one file as they come (a whole file read in blocks, or
a followed file read as it grows) and hands out ``Chunk``s that cover them exactly, in order:

* a block of whole lines, each ending in ``"\\n"`` and at most ``max_line`` bytes before it
  (blank lines included: what a blank line is, is ``is_blank``'s to say), or
* one suspect line, without its terminator, with a ``note`` saying why: cut because longer than
  ``max_line`` (its first ``max_line`` bytes; the rest is skipped as it arrives, never held in
  memory), or the last line of the input without a newline (``end()``).

A partial last line is held back until its newline arrives (a writer may be in the middle of
it) or the input ends. Memory: one read plus ``max_line`` bytes at most.
"""

from __future__ import annotations

from typing import NamedTuple

MAX_LINE = 64 * 1024  # longer lines are cut here (a defect), in every reader of the shipper
NO_NEWLINE = "last line has no newline (truncated?)"
_BLANK = frozenset(b" \t\r\n\x0b\x0c")  # what bytes.strip() strips


class Chunk(NamedTuple):
    offset: int  # of the chunk's first byte in the file
    data: bytes
    note: str | None = None  # None: whole lines; else ``data`` is one suspect line


def cut_note(max_line: int) -> str:
    return f"line longer than {max_line} bytes (cut)"


def is_blank(raw: bytes) -> bool:
    """A line of nothing but white space: no defect, no record (writers pad and split)."""
    return not raw or (raw[0] in _BLANK and not raw.strip())


class LineSplitter:
    """Splits one file's bytes into ``Chunk``s; see the module docstring."""

    def __init__(self, max_line: int = MAX_LINE, offset: int = 0) -> None:
        self.max_line = max_line
        self.offset = offset  # where the next chunk starts: everything before it is handed out
        self.position = offset  # where the next bytes fed start
        self._held = b""  # the start of a line whose newline has not come yet
        self._cut: bytes | None = None  # the kept start of an over-long line still being skipped

    @property
    def pending(self) -> int:
        """Bytes fed but not handed out yet (a partial line, or one being skipped)."""
        return self.position - self.offset

    def feed(self, data: bytes) -> list[Chunk]:
        """The chunks that ``data`` completes."""
        out: list[Chunk] = []
        start = self.position
        self.position += len(data)
        if self._cut is not None:  # still inside an over-long line: skip to its end
            end = data.find(b"\n")
            if end < 0:
                return out
            out.append(Chunk(self.offset, self._cut, cut_note(self.max_line)))
            self._cut = None
            self.offset = start + end + 1
            data = data[end + 1:]
        held = self._held + data if self._held else data
        whole = held.rfind(b"\n") + 1
        if whole:
            self._whole_lines(held[:whole] if whole < len(held) else held, out)
            held = held[whole:]
        if len(held) > self.max_line:  # no newline in more than max_line bytes: cut the line here
            self._cut = held[:self.max_line]
            held = b""
        self._held = held
        return out

    def end(self) -> list[Chunk]:
        """At the end of the input: what is held back, as a suspect line."""
        out: list[Chunk] = []
        if self._cut is not None:
            out.append(Chunk(self.offset, self._cut,
                             cut_note(self.max_line) + "; no newline at end of input"))
        elif self._held and not is_blank(self._held):
            out.append(Chunk(self.offset, self._held, NO_NEWLINE))
        self._cut = None
        self._held = b""
        self.offset = self.position
        return out

    def _whole_lines(self, block: bytes, out: list[Chunk]) -> None:
        """``block`` (whole lines) as chunks, with each over-long line cut out on its own.

        A line longer than ``max_line`` covers at least one whole window of ``max_line // 2``
        bytes aligned on the block's start, so only windows without a newline need a closer
        look: a handful of ``find``s per block rather than a look at every line."""
        limit = self.max_line
        size = len(block)
        start = 0  # of what is not handed out yet
        if size > limit:
            window = max(1, limit // 2)
            at = 0
            while at + window <= size:
                if block.find(b"\n", at, at + window) >= 0:
                    at += window
                    continue
                first = block.rfind(b"\n", 0, at) + 1  # the line holding this window
                last = block.find(b"\n", at + window)  # found: the block ends in a newline
                if last - first > limit:
                    if first > start:
                        out.append(Chunk(self.offset, block[start:first]))
                        self.offset += first - start
                    out.append(Chunk(self.offset, block[first:first + limit], cut_note(limit)))
                    self.offset += last + 1 - first
                    start = last + 1
                at = max(at + window, last + 1 - (last + 1) % window)
        if start < size:
            out.append(Chunk(self.offset, block[start:] if start else block))
            self.offset += size - start
