"""Bytes → lines (shipper.lines): one splitter for whole files and followed files."""

from __future__ import annotations

from shipper.lines import LineSplitter, is_blank


def lines(data: bytes, max_line: int = 64 * 1024, size: int = 1 << 18) -> list[tuple[int, bytes, str | None]]:
    """(offset, line without "\\n", note) of every line that is not blank, from the chunks of
    ``data`` fed ``size`` bytes at a time."""
    splitter = LineSplitter(max_line)
    chunks = [c for i in range(0, len(data), size) for c in splitter.feed(data[i:i + size])]
    out = []
    for offset, block, note in chunks + splitter.end():
        if note is not None:
            out.append((offset, block, note))
            continue
        for line in block.split(b"\n")[:-1]:
            if not is_blank(line):
                out.append((offset, line, None))
            offset += len(line) + 1
    return out


def test_offsets_skip_blank_lines_and_survive_crlf() -> None:
    """Offsets are byte positions of each line's first byte; blank lines are skipped silently."""
    data = b"a\r\n\n  \r\nbb\ncc"
    assert [(0, b"a\r", None), (8, b"bb", None),
            (11, b"cc", "last line has no newline (truncated?)")] == lines(data)


def test_a_huge_line_is_cut_and_the_next_line_keeps_its_offset() -> None:
    """A 1 MB line is cut at max_line (never held whole) and reading goes on after it."""
    big = b"x" * 1_000_000
    data = b"first\n" + big + b"\nlast\n"
    got = lines(data, max_line=1000, size=4096)
    assert [0, 6, 6 + len(big) + 1] == [o for o, _, _ in got]
    assert 1000 == len(got[1][1])
    assert got[1][2] is not None and "longer than 1000 bytes" in got[1][2]
    assert (b"last", None) == got[2][1:]


def test_a_partial_line_waits_for_its_newline() -> None:
    """A followed file's last line may still be written: nothing of it is handed out before
    its newline arrives, and its offset is where it began."""
    splitter = LineSplitter()
    assert [] == splitter.feed(b"2024 half a li")
    assert (0, 14) == (splitter.offset, splitter.pending)
    (chunk,) = splitter.feed(b"ne\nnext")
    assert (0, b"2024 half a line\n", None) == chunk
    assert (17, 4) == (splitter.offset, splitter.pending)
    assert [(17, b"next", "last line has no newline (truncated?)")] == splitter.end()
    assert (21, 0) == (splitter.offset, splitter.pending)


def test_an_over_long_line_inside_a_block_is_cut_out_on_its_own() -> None:
    """A block of whole lines with one too long among them: the lines around it stay one chunk
    each side, the long one is its own chunk, cut, with a note."""
    data = b"a\n" + b"x" * 50 + b"\nb\nc\n"
    chunks = LineSplitter(max_line=20).feed(data)
    assert [(0, b"a\n", None), (2, b"x" * 20, "line longer than 20 bytes (cut)"), (53, b"b\nc\n", None)] == chunks
