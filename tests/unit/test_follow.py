"""shipper.follow on real files in tmp_path: identity, partial lines, rotation, truncation."""

from __future__ import annotations

import os
import re

import pytest

from shipper import follow


def _follower(tmp_path, pattern="app*.log", **kw):
    return follow.Follower([str(tmp_path / pattern)], **kw)


def _lines(chunks: list) -> list[tuple[bytes, int, str | None]]:
    """(line with its ending, offset, note) of each line of the chunks ``read()`` gave."""
    out = []
    for _file, (offset, data, note) in chunks:
        if note is not None:
            out.append((data, offset, note))
            continue
        for line in re.findall(rb"[^\n]*\n|[^\n]+$", data):
            out.append((line, offset, None))
            offset += len(line)
    return out


def _read(f: follow.Follower) -> list[bytes]:
    f.poll()
    return [line for line, _, _ in _lines(f.read(1 << 20))]


def test_partial_line_is_not_consumed_until_completed(tmp_path):
    """A last line without newline stays pending; it is handed out once completed."""
    p = tmp_path / "app.log"
    p.write_bytes(b"one\ntw")
    f = _follower(tmp_path)
    assert _read(f) == [b"one\n"]
    assert f.files[0].offset == 4
    with p.open("ab") as fh:
        fh.write(b"o\n")
    assert _read(f) == [b"two\n"]
    assert f.files[0].offset == 8


def test_offsets_are_byte_offsets_of_line_starts(tmp_path):
    """Each line carries the byte offset of its first byte; CRLF endings stay in the line."""
    (tmp_path / "app.log").write_bytes(b"a\r\nbb\n\xff\xfe\n")
    f = _follower(tmp_path)
    f.poll()
    lines = _lines(f.read(1 << 20))
    assert [(x, o) for x, o, _ in lines] == [(b"a\r\n", 0), (b"bb\n", 3), (b"\xff\xfe\n", 6)]


def test_new_file_is_picked_up_and_start_at_end_only_for_files_present_at_start(tmp_path):
    """start_at=end skips what existing files hold; a file appearing later is read from 0."""
    (tmp_path / "app1.log").write_bytes(b"old\n")
    f = _follower(tmp_path, start_at="end")
    assert _read(f) == []
    (tmp_path / "app2.log").write_bytes(b"new\n")
    assert _read(f) == [b"new\n"]


def test_checkpoint_lookup_sets_the_start(tmp_path):
    """A file with a checkpoint resumes there; one beyond the file's size restarts at 0."""
    (tmp_path / "app.log").write_bytes(b"aaa\nbbb\n")
    f = _follower(tmp_path, checkpoint_lookup=lambda tf: 4)
    assert _read(f) == [b"bbb\n"]
    g = _follower(tmp_path, checkpoint_lookup=lambda tf: 100)
    assert _read(g) == [b"aaa\n", b"bbb\n"]


def test_rename_and_create_drains_old_file_first(tmp_path):
    """After a rename the old file's remaining lines come before the new file's lines."""
    p = tmp_path / "app.log"
    p.write_bytes(b"1\n")
    f = _follower(tmp_path, pattern="app.log")
    assert _read(f) == [b"1\n"]
    with p.open("ab") as fh:
        fh.write(b"2\n")
    os.rename(p, tmp_path / "app.log.1")
    p.write_bytes(b"3\n")
    assert _read(f) == [b"2\n", b"3\n"]


def test_renamed_file_still_matching_keeps_its_position(tmp_path):
    """A file renamed to a name the glob still matches is recognised by identity, not re-read."""
    p = tmp_path / "app.log"
    p.write_bytes(b"1\n")
    f = _follower(tmp_path, pattern="app*")
    assert _read(f) == [b"1\n"]
    os.rename(p, tmp_path / "app.log.1")
    p.write_bytes(b"2\n")
    assert _read(f) == [b"2\n"]
    assert sorted(x.path for x in f.files) == [str(p), str(tmp_path / "app.log.1")]


def test_copytruncate_restarts_at_zero(tmp_path, caplog):
    """Size below the position → the file was truncated: read again from 0, with a warning."""
    p = tmp_path / "app.log"
    p.write_bytes(b"first line\nsecond line\n")
    f = _follower(tmp_path)
    assert len(_read(f)) == 2
    with p.open("r+b") as fh:
        fh.truncate(0)
    p.write_bytes(b"x\n")
    assert _read(f) == [b"x\n"]
    assert "truncated" in caplog.text


def test_truncate_and_rewrite_beyond_position_is_detected_by_fingerprint(tmp_path):
    """Same inode, longer than before, different first bytes: re-read from the start."""
    p = tmp_path / "app.log"
    p.write_bytes(b"aaaa\n")
    f = _follower(tmp_path)
    assert _read(f) == [b"aaaa\n"]
    with p.open("r+b") as fh:
        fh.truncate(0)
        fh.write(b"bbbb\ncccc\n")
    assert _read(f) == [b"bbbb\n", b"cccc\n"]


def test_fingerprint_grows_to_1k_then_stays(tmp_path):
    """The fingerprint covers the first min(size, 1 KiB) bytes and is recomputed as it grows."""
    p = tmp_path / "app.log"
    p.write_bytes(b"x" * 10 + b"\n")
    f = _follower(tmp_path)
    _read(f)
    tf = f.files[0]
    assert tf.fp_len == 11
    with p.open("ab") as fh:
        fh.write(b"y" * 2000 + b"\n")
    _read(f)
    assert tf.fp_len == follow.FINGERPRINT_BYTES
    assert tf.matches(tf.fingerprint, tf.fp_len)


def test_deleted_file_is_drained_finished_and_released(tmp_path, monkeypatch):
    """A deleted file is read to its end (its cut last line too) and then released."""
    monkeypatch.setattr(follow, "FINISH_AFTER_SECONDS", 0.0)
    p = tmp_path / "app.log"
    p.write_bytes(b"a\n")
    f = _follower(tmp_path)
    assert _read(f) == [b"a\n"]
    with p.open("ab") as fh:
        fh.write(b"b\ncut")
    p.unlink()
    f.poll()
    assert f.files[0].deleted
    assert _lines(f.read(1 << 20)) == [(b"b\n", 2, None),
                                       (b"cut", 4, "last line has no newline (truncated?)")]
    released = f.release(lambda tf: True)
    assert len(released) == 1 and f.files == []


def test_budget_limits_reading(tmp_path):
    """read() stops after about `budget` bytes and resumes where it stopped."""
    (tmp_path / "app.log").write_bytes(b"".join(b"%04d\n" % i for i in range(1000)))
    f = _follower(tmp_path)
    f.poll()
    first = _lines(f.read(100))
    assert 20 <= len(first) < 1000
    rest = _lines(f.read(1 << 20))
    assert [x for x, _, _ in first + rest] == [b"%04d\n" % i for i in range(1000)]


def test_exclude(tmp_path):
    """Excluded globs are never opened."""
    (tmp_path / "app.log").write_bytes(b"a\n")
    (tmp_path / "app.log.gz").write_bytes(b"zz\n")
    f = follow.Follower([str(tmp_path / "app*")], exclude=["*.gz"])
    assert _read(f) == [b"a\n"]


@pytest.mark.parametrize("n", [0, 1])
def test_empty_file_identity_then_growth(tmp_path, n):
    """An empty file has an empty fingerprint, filled in once bytes arrive."""
    p = tmp_path / "app.log"
    p.write_bytes(b"q\n" * n)
    f = _follower(tmp_path)
    _read(f)
    with p.open("ab") as fh:
        fh.write(b"r\n")
    assert _read(f) == [b"r\n"]
    assert f.files[0].fingerprint != ""


def test_overlong_line_is_cut_and_its_rest_skipped(tmp_path):
    """A line longer than max_line comes out cut (flagged) and is never held whole in memory;
    the lines around it are intact and offsets stay byte-exact."""
    p = tmp_path / "app.log"
    long = b"x" * 5000
    p.write_bytes(b"a\n" + long + b"\nb\n")
    f = _follower(tmp_path, max_line=100)
    f.poll()
    lines = _lines(f.read(1 << 20))
    assert lines == [(b"a\n", 0, None), (b"x" * 100, 2, "line longer than 100 bytes (cut)"),
                     (b"b\n", 5003, None)]


def test_overlong_partial_line_is_cut_while_it_grows(tmp_path):
    """An over-long line still being written is cut once past max_line (only its first
    max_line bytes are kept); its tail is dropped as it arrives, and the cut line is handed
    out when its newline comes."""
    p = tmp_path / "app.log"
    p.write_bytes(b"y" * 300)
    f = _follower(tmp_path, max_line=100)
    f.poll()
    assert _lines(f.read(1 << 20)) == []
    assert (0, 300) == (f.files[0].offset, f.files[0].pending)
    with p.open("ab") as fh:
        fh.write(b"y" * 50 + b"\nnext\n")
    assert _lines(f.read(1 << 20)) == [(b"y" * 100, 0, "line longer than 100 bytes (cut)"),
                                       (b"next\n", 351, None)]
