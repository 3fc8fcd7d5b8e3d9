"""shipper.checkpoint: atomic, durable, identity-checked positions in real files."""

from __future__ import annotations

import json
import os

from shipper import checkpoint
from shipper.checkpoint import Checkpoint, CheckpointStore


def _cp(path, offset=10, **kw):
    st = os.stat(path)
    return Checkpoint(path=str(path), dev=st.st_dev, ino=st.st_ino, fingerprint="", fp_len=0,
                      offset=offset, **kw)


def test_round_trip(tmp_path):
    """What is saved is what a new store loads, replay filter included."""
    log = tmp_path / "a.log"
    log.write_bytes(b"x\n")
    store = CheckpointStore(tmp_path / "state")
    cp = _cp(log, replay_until=20, replay_sessions=("7054286",))
    assert store.save({cp.key: cp})
    loaded = CheckpointStore(tmp_path / "state").load()
    assert loaded == {cp.key: cp}
    assert json.loads((tmp_path / "state" / "checkpoints.json").read_text())["version"] == 1


def test_save_unchanged_does_not_write(tmp_path):
    """Saving the same positions again is a no-op (no fsync every tick)."""
    log = tmp_path / "a.log"
    log.write_bytes(b"x\n")
    store = CheckpointStore(tmp_path)
    cp = _cp(log)
    assert store.save({cp.key: cp})
    assert not store.save({cp.key: cp})


def test_atomic_write_leaves_no_temp_files_and_is_private(tmp_path):
    """The file is replaced by rename; no temporary file remains; mode 0600."""
    checkpoint.write_atomic(str(tmp_path / "f.json"), b"{}")
    checkpoint.write_atomic(str(tmp_path / "f.json"), b"{\"a\": 1}")
    assert os.listdir(tmp_path) == ["f.json"]
    assert (tmp_path / "f.json").read_bytes() == b"{\"a\": 1}"
    assert (os.stat(tmp_path / "f.json").st_mode & 0o777) == 0o600


def test_lookup_rejects_reused_inode(tmp_path):
    """An entry whose fingerprint no longer matches the file's first bytes is ignored."""
    log = tmp_path / "a.log"
    log.write_bytes(b"x\n")
    store = CheckpointStore(tmp_path)
    cp = _cp(log)
    store.entries = {cp.key: cp}
    assert store.lookup(cp.dev, cp.ino, lambda fp, n: True) == cp
    assert store.lookup(cp.dev, cp.ino, lambda fp, n: False) is None
    assert store.lookup(cp.dev, cp.ino + 1, lambda fp, n: True) is None


def test_entries_of_vanished_files_are_dropped_others_kept(tmp_path):
    """Loaded entries of files not followed now survive a save only while the file exists."""
    a, b = tmp_path / "a.log", tmp_path / "b.log"
    a.write_bytes(b"a\n")
    b.write_bytes(b"b\n")
    store = CheckpointStore(tmp_path / "s")
    ca, cb = _cp(a), _cp(b)
    store.save({ca.key: ca, cb.key: cb})
    store2 = CheckpointStore(tmp_path / "s")
    store2.load()
    b.unlink()
    c = tmp_path / "c.log"
    c.write_bytes(b"c\n")
    cc = _cp(c)
    store2.save({cc.key: cc})
    assert set(CheckpointStore(tmp_path / "s").load()) == {ca.key, cc.key}


def test_corrupt_file_is_moved_aside(tmp_path, caplog):
    """A corrupt checkpoint file does not stop the daemon: it is kept aside and logged."""
    (tmp_path / "checkpoints.json").write_text("{not json")
    assert CheckpointStore(tmp_path).load() == {}
    assert any(n.startswith("checkpoints.json.corrupt-") for n in os.listdir(tmp_path))
    assert "unreadable" in caplog.text
