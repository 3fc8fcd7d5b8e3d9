"""Opening inputs (shipper.inputs) and the whole-file pipeline (shipper.pipeline.documents_of_files)."""

from __future__ import annotations

import gzip
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from shipper.errors import InputError, StrictParseError
from shipper.inputs import expand_paths, open_input
from shipper.localtime import resolve_zone
from shipper.model import Defect
from shipper.pipeline import ParseOptions, ParseStats, documents_of_files

SEED = Path(__file__).resolve().parents[2] / "samples" / "xeams" / "SMTPOutboundConversation.log"


def test_a_1mb_line_inside_a_session_loses_nothing(tmp_path: Path) -> None:
    """The session around a 1 MB line still yields its document; the line is one defect."""
    lines = SEED.read_bytes().splitlines(keepends=True)
    huge = b"2024-03-21 11:39:49,171 - [   7054286] C --> 250-X-JUNK " + b"A" * 1_048_576 + b"\n"
    path = tmp_path / "big.log"
    path.write_bytes(b"".join(lines[:5]) + huge + b"".join(lines[5:]))
    stats = ParseStats()
    docs = list(documents_of_files([str(path)], ParseOptions(tz=ZoneInfo("UTC")), stats))
    assert ["delivered"] == [d["smtp"]["verdict"] for d in docs]
    assert 1 == stats.defects
    (defect,) = stats.kept_defects
    assert ("7054286", True) == (defect.session_id, "longer than" in defect.reason)
    assert len(docs[0]["smtp"]["transcript"]) < 200_000  # the cut line, not the megabyte


def test_gzip_is_read_transparently(tmp_path: Path) -> None:
    """A .gz (recognised by its magic bytes) gives the same lines as the plain file."""
    gz = tmp_path / "rotated.log.gz"
    gz.write_bytes(gzip.compress(SEED.read_bytes()))
    with open_input(str(gz)) as stream:
        assert SEED.read_bytes() == stream.read()


def test_corrupt_gzip_is_a_defect_not_a_crash(tmp_path: Path) -> None:
    """A truncated .gz yields what it holds and one defect."""
    gz = tmp_path / "cut.log.gz"
    gz.write_bytes(gzip.compress(SEED.read_bytes() * 50)[:-40])
    stats = ParseStats()
    docs = list(documents_of_files([str(gz)], ParseOptions(tz=ZoneInfo("UTC")), stats))
    assert docs and stats.defects >= 1
    assert any("cannot read further" in d.reason for d in stats.kept_defects)


def test_expand_paths_globs_sorted_and_fails_fast(tmp_path: Path) -> None:
    """Globs are sorted; a missing file or an empty glob is an InputError before any output."""
    for name in ("b.log", "a.log"):
        (tmp_path / name).write_text("")
    assert [str(tmp_path / "a.log"), str(tmp_path / "b.log")] == expand_paths([str(tmp_path / "*.log")])
    assert ["-"] == expand_paths([])
    with pytest.raises(InputError, match="no such file"):
        expand_paths([str(tmp_path / "a.log"), str(tmp_path / "missing.log")])
    with pytest.raises(InputError, match="no file matches"):
        expand_paths([str(tmp_path / "*.gz")])
    with pytest.raises(InputError, match="is a directory"):
        expand_paths([str(tmp_path)])


def test_resolve_zone() -> None:
    """IANA names resolve; unknown names say what is expected; None gives some local zone."""
    assert "America/New_York" == str(resolve_zone("America/New_York"))
    with pytest.raises(ValueError, match="IANA"):
        resolve_zone("Mars/Olympus_Mons")
    assert resolve_zone(None) is not None


def test_strict_raises_on_first_defect(tmp_path: Path) -> None:
    """--strict turns the first defect into StrictParseError naming file and offset."""
    path = tmp_path / "x.log"
    path.write_bytes(SEED.read_bytes() + b"garbage\n")
    with pytest.raises(StrictParseError, match=r"x\.log:\d+"):
        list(documents_of_files([str(path)], ParseOptions(tz=ZoneInfo("UTC"), strict=True), ParseStats()))


def test_defects_are_streamed_to_the_callback(tmp_path: Path) -> None:
    """Each defect reaches on_defect as it happens, and the summary counts it."""
    path = tmp_path / "x.log"
    path.write_bytes(b"junk one\n" + SEED.read_bytes() + b"junk two\n")
    seen: list[Defect] = []
    stats = ParseStats()
    options = ParseOptions(tz=ZoneInfo("UTC"), on_defect=seen.append)
    docs = list(documents_of_files([str(path)], options, stats))
    assert [0, 9 + len(SEED.read_bytes())] == [d.offset for d in seen]
    assert 1 == len(docs)
    assert stats.summary().startswith("21 lines, 1 sessions, 1 documents (delivered 1,")
    assert stats.summary().endswith("2 defects")
