"""`smtp-shipper parse` end to end through shipper.cli.main, on real files."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import pytest

from shipper.cli import main

SEED = Path(__file__).resolve().parents[2] / "samples" / "xeams" / "SMTPOutboundConversation.log"
GOLDEN = Path(__file__).resolve().parents[1] / "golden"
TZ = ["--timezone", "America/New_York", "--host-name", "cli-host"]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[dict], str]:
    code = main(["parse", *TZ, *argv])
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines()], err


def test_file_to_ndjson_with_summary(capsys: pytest.CaptureFixture[str]) -> None:
    """One line per document on stdout; a one-line summary on stderr."""
    code, docs, err = run(capsys, str(SEED))
    assert 0 == code
    assert ["synametrics@gmail.com"] == [d["email"]["to"]["address"] for d in docs]
    assert "cli-host" == docs[0]["host"]["name"]
    assert "19 lines, 1 sessions, 1 documents (delivered 1, rejected 0, deferred 0, failed 0), 0 defects" in err


def test_stdin(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """'-' reads stdin (bytes), and log.file.path says so."""
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(SEED.read_bytes())))
    code, docs, _ = run(capsys, "-")
    assert (0, "<stdin>") == (code, docs[0]["log"]["file"]["path"])


def test_gz_and_glob(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A glob picks plain and gzipped files alike."""
    (tmp_path / "SMTPOutboundConversation.1.log.gz").write_bytes(
        gzip.compress((GOLDEN / "rcpt-550-unknown-user-gmail.log").read_bytes()))
    (tmp_path / "SMTPOutboundConversation.2.log").write_bytes(SEED.read_bytes())
    code, docs, _ = run(capsys, str(tmp_path / "SMTPOutboundConversation.*"))
    assert 0 == code
    assert ["rejected", "delivered"] == [d["smtp"]["verdict"] for d in docs]


def test_missing_file_exits_with_input_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Unreadable input is exit status 4 and no documents."""
    code, docs, err = run(capsys, str(SEED), str(tmp_path / "nope.log"))
    assert (4, []) == (code, docs)
    assert "nope.log: no such file" in err
    assert "0 lines" not in err  # nothing was read: the error alone, no empty summary


def test_messy_input_exits_zero_with_warnings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Garbage lines are warnings naming file, offset and session; the exit status stays 0."""
    code, docs, err = run(capsys, str(GOLDEN / "garbage-lines-inside-session.log"))
    assert (0, 1) == (code, len(docs))
    assert "garbage-lines-inside-session.log:825: session 7054286 line matches no Xeams layout" in err
    assert "4 defects" in err


def test_strict_fails_on_first_defect(capsys: pytest.CaptureFixture[str]) -> None:
    """--strict: exit status 7 at the first defect."""
    code, _, err = run(capsys, "--strict", str(GOLDEN / "garbage-lines-inside-session.log"))
    assert 7 == code
    assert "garbage-lines-inside-session.log:710" in err
    assert "smtp-shipper parse: 11 lines, " in err  # how far it got before the defect


def test_direction_flag_overrides_inference(capsys: pytest.CaptureFixture[str]) -> None:
    """--direction inbound makes the peer the source."""
    _, docs, _ = run(capsys, "--direction", "inbound", str(SEED))
    assert ("inbound", {"ip": "142.251.171.26"}) == (docs[0]["smtp"]["direction"], docs[0]["source"])


def test_bad_timezone_is_a_config_error(capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown zone is exit status 3 with a hint of what is expected."""
    assert 3 == main(["parse", "--timezone", "Mars/Base", str(SEED)])
    assert "IANA" in capsys.readouterr().err
