"""`smtp-shipper trace` against real documents backfilled from real-format transcripts."""

from __future__ import annotations

import json

import pytest

from shipper.cli import main

from .xeams_samples import mixed_log, session

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _env(monkeypatch, tmp_path):
    for name in ("SMTP_SHIPPER_CONFIG", "SMTP_SHIPPER_OPENSEARCH_HOSTS", "SMTP_SHIPPER_INDEX_PREFIX"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SMTP_SHIPPER_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("TZ", "UTC")


@pytest.fixture
def loaded(capsys, opensearch_url, index_prefix, tmp_path):
    """The seed and four made-up sessions, backfilled into a fresh prefix."""
    log = tmp_path / "SMTPOutboundConversation.log"
    log.write_text(mixed_log())
    common = ["--opensearch", opensearch_url, "--index-prefix", index_prefix]
    assert 0 == main(["setup", *common])
    assert 0 == main(["backfill", "--timezone", "UTC", "--no-progress", str(log), *common])
    capsys.readouterr()

    def trace(*args: str) -> tuple[int, str]:
        code = main(["trace", *args, *common])
        out, _ = capsys.readouterr()
        return code, out

    return trace


def test_the_seed_question_in_one_command(loaded):
    """"I sent it — did the other side take it?": yes, 250 2.0.0, from Google's 142.251.171.26."""
    code, out = loaded("synametrics@gmail.com")
    assert 0 == code
    _, row = out.splitlines()
    assert row.startswith("2024-03-21 11:39:49 UTC  out  support@synametrics.com → synametrics@gmail.com  142.251.171.26  delivered  -       250 2.0.0")


def test_newest_first_case_insensitive_with_verdicts(loaded):
    _, out = loaded("BOB@example.COM", "--json")
    docs = [json.loads(line) for line in out.splitlines()]
    assert ["deferred", "rejected", "delivered"] == [d["smtp"]["verdict"] for d in docs]
    assert ["451", "550", "250"] == [d["smtp"]["reply"]["code"] for d in docs]


def test_filters_limit_and_domain(loaded):
    _, out = loaded("bob@example.com", "--verdict", "rejected", "--json")
    assert ["5.1.1"] == [json.loads(line)["smtp"]["reply"]["enhanced"] for line in out.splitlines()]
    _, out = loaded("bob@example.com", "--limit", "1")
    assert 3 == len(out.splitlines())  # header, one row, "(1 of 3 shown ...)"
    assert "(1 of 3 shown" in out and "deferred" in out
    _, out = loaded("@EXAMPLE.com", "--json")
    assert 3 == len(out.splitlines())
    _, out = loaded("support@synametrics.com", "--json")  # as sender
    assert 5 == len(out.splitlines())


def test_transcript_is_printed_in_full(loaded):
    _, out = loaded("alice@example.org", "--transcript")
    assert "RCPT TO:<alice@example.org>" in out and "Connection Terminated" in out


def test_nothing_found_is_a_plain_message(loaded):
    code, out = loaded("bob@example.com", "--since", "1d")
    assert (0, "no deliveries found for bob@example.com since 1d\n") == (code, out)
    code, out = loaded("nobody@example.net")
    assert 0 == code and out.startswith("no deliveries found for nobody@example.net in any ")


def test_a_hostile_peer_cannot_drive_the_terminal(capsys, opensearch_url, index_prefix, tmp_path):
    """Control characters a peer put into its replies are indexed as they were; trace shows them
    as escapes (table and transcript) and --json gives them back exactly."""
    reply = "550 5.7.1 \x1b]0;pwned\x07Relay \x9b2J denied\x7f"
    log = tmp_path / "SMTPOutboundConversation.log"
    log.write_text(session(9000001, "2024-03-23 09:00:00", "victim@example.com", reply), encoding="utf-8")
    common = ["--opensearch", opensearch_url, "--index-prefix", index_prefix]
    assert 0 == main(["setup", *common])
    assert 0 == main(["backfill", "--timezone", "UTC", "--no-progress", str(log), *common])
    capsys.readouterr()
    raw = ("\x1b", "\x07", "\x9b", "\x7f")
    for flags in ([], ["--transcript"]):
        assert 0 == main(["trace", "victim@example.com", *flags, *common])
        out = capsys.readouterr().out
        shown = "5.7.1 \\x1b]0;pwned\\x07Relay \\x9b2J" if not flags else "5.7.1 \\x1b]0;pwned\\x07Relay \\x9b2J denied\\x7f\n"
        assert shown in out  # the table cuts the reply to the terminal's width
        assert not any(ch in out for ch in raw)
    assert 0 == main(["trace", "victim@example.com", "--json", *common])
    (line,) = capsys.readouterr().out.splitlines()
    assert reply[4:] == json.loads(line)["smtp"]["reply"]["text"]
    assert line.isprintable()
