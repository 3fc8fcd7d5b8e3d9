"""trace: --since parsing, the query, and the table/transcript formatting (no cluster)."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from shipper import config
from shipper.cli import main
from shipper.commands import trace
from shipper.commands.trace import (
    UsageError,
    build_query,
    empty_message,
    format_table,
    format_transcript,
    parse_since,
)

NOW = dt.datetime(2024, 3, 21, 12, 0, tzinfo=dt.UTC)

DOC = {
    "@timestamp": "2024-03-21T11:39:49.869Z",
    "smtp": {
        "direction": "outbound",
        "verdict": "delivered",
        "session_id": "7054286",
        "remote": {"ip": "142.251.171.26"},
        "reply": {"code": "250", "enhanced": "2.0.0", "text": "2.0.0 OK  1716305989 e9e14a558f8ab-36cb9d1c563si112041335ab.14 - gsmtp"},
        "transcript": "2024-03-21 11:39:49,056 - [   7054286] S <-- EHLO mail.synametrics.com\n",
    },
    "email": {"from": {"address": "support@synametrics.com"}, "to": {"address": "synametrics@gmail.com"}},
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("24h", NOW - dt.timedelta(hours=24)),
        ("7d", NOW - dt.timedelta(days=7)),
        ("30m", NOW - dt.timedelta(minutes=30)),
        ("2w", NOW - dt.timedelta(weeks=2)),
        ("2024-03-01T00:00+00:00", dt.datetime(2024, 3, 1, tzinfo=dt.UTC)),
    ],
)
def test_parse_since(text, expected):
    assert expected == parse_since(text, NOW)


def test_parse_since_naive_date_is_local_and_garbage_refused():
    assert parse_since("2024-03-01", NOW).tzinfo is not None
    with pytest.raises(UsageError):
        parse_since("yesterday", NOW)


def test_query_matches_sender_or_recipient_case_insensitively():
    q = build_query("Bob@Example.com", since=NOW, verdict="rejected")
    who, since, verdict = q["bool"]["filter"]
    terms = who["bool"]["should"]
    assert {"email.to.address", "email.from.address"} == {next(iter(t["term"])) for t in terms}
    assert all(next(iter(t["term"].values())) == {"value": "Bob@Example.com", "case_insensitive": True} for t in terms)
    assert "2024-03-21T12:00:00+00:00" == since["range"]["@timestamp"]["gte"]
    assert {"term": {"smtp.verdict": "rejected"}} == verdict


def test_query_domain():
    assert [{"term": {"smtp.recipient_domain": "example.com"}}] == build_query("@Example.COM", since=None, verdict=None)["bool"]["filter"]


def test_table_row_in_given_zone_with_reply_cut_short():
    table = format_table([DOC], tz=dt.timezone(dt.timedelta(hours=-4)), width=170)
    header, line = table.splitlines()
    assert header.startswith("time") and "verdict" in header
    assert line.startswith("2024-03-21 07:39:49 UTC-04:00  out  support@synametrics.com → synametrics@gmail.com  142.251.171.26  delivered  -       250 2.0.0")
    assert line.endswith("…") and 170 == len(line)


def test_failed_attempt_without_reply_and_null_sender():
    doc = {"@timestamp": "2024-03-21T11:00:00Z", "smtp": {"verdict": "failed", "stage": "rcpt", "direction": "inbound"},
           "email": {"from": {"address": ""}, "to": {"address": "a@b.c"}}}
    line = format_table([doc], tz=dt.UTC).splitlines()[1]
    assert "<> → a@b.c" in line and "failed" in line and "(no reply; broke off at rcpt)" in line


def test_reason_of_a_non_delivery_is_a_column_and_in_the_transcript_title():
    doc = {"@timestamp": "2024-03-20T13:14:02Z",
           "smtp": {"verdict": "rejected", "reason": "unknown-recipient", "direction": "outbound",
                    "reply": {"code": "550", "enhanced": "5.1.1", "text": "5.1.1 The email account does not exist"}},
           "email": {"from": {"address": "a@b.c"}, "to": {"address": "typo@gmail.com"}}}
    header, line = format_table([doc], tz=dt.UTC).splitlines()
    assert header.index("reason") == line.index("unknown-recipient")
    assert "rejected  unknown-recipient  550 5.1.1" in line
    assert "rejected (unknown-recipient) 550 5.1.1" in format_transcript(doc, tz=dt.UTC).splitlines()[0]


def test_transcript_block_and_empty_message():
    block = format_transcript(DOC, tz=dt.UTC)
    assert "session 7054286" in block and "EHLO mail.synametrics.com" in block
    assert "no deliveries found for x@y.z since 7d" == empty_message("x@y.z", "7d", None, "p")
    assert "no rejected deliveries found for x@y.z in any p-* index" == empty_message("x@y.z", None, "rejected", "p")


# -- what a hostile peer wrote is shown, never obeyed -------------------------------------------

HOSTILE = {
    "@timestamp": "2024-03-21T11:00:00Z",
    "smtp": {
        "direction": "inbound", "verdict": "rejected", "session_id": "42", "reason": "relay-denied",
        "remote": {"ip": "192.0.2.7"},
        "reply": {"code": "554", "text": "5.7.1 \x1b]0;you are hacked\x07Relay \x9b2J denied\x7f"},
        "transcript": "x - [ 42] C --> EHLO \x1b[31mevil\u202e\r\nx - [ 42] C --> MAIL FROM:<jürgen@bad\x07.example>",
    },
    "email": {"from": {"address": "jürgen@bad\x07.example"}, "to": {"address": "to\x1b[8m@example.com"}},
}
RAW = ("\x1b", "\x07", "\x9b", "\x7f", "\u202e", "\r")


def test_table_escapes_what_the_peer_wrote():
    """Reply text and addresses: every control character shown as an escape, the row stays one
    line, ordinary non-ASCII letters stay readable."""
    table = format_table([HOSTILE], tz=dt.UTC, width=400)
    assert not any(ch in table for ch in RAW)
    _, line = table.splitlines()
    assert "jürgen@bad\\x07.example → to\\x1b[8m@example.com" in line
    assert line.endswith("5.7.1 \\x1b]0;you are hacked\\x07Relay \\x9b2J denied\\x7f")


def test_transcript_escapes_what_the_peer_wrote():
    """--transcript keeps the transcript's lines and escapes the rest (HELO, addresses, reply)."""
    block = format_transcript(HOSTILE, tz=dt.UTC)
    assert not any(ch in block for ch in RAW)
    assert "C --> EHLO \\x1b[31mevil\\u202e\\r\nx - [ 42] C --> MAIL FROM:<jürgen@bad\\x07.example>\n" in block
    assert "jürgen@bad\\x07.example → to\\x1b[8m@example.com" in block.splitlines()[0]


@pytest.fixture
def no_config(monkeypatch, tmp_path):
    """Built-in defaults: no configuration file of this machine, no environment overrides."""
    monkeypatch.setattr(config, "DEFAULT_CONFIG_PATH", tmp_path / "none.yml")
    for name in [config.CONFIG_ENV, *(n for n, _ in config.ENV_OVERRIDES)]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(trace, "make_client", lambda _settings: FakeClient())


class FakeClient:
    """The one seam faked: OpenSearch's answer to the search."""

    def search(self, **_: object) -> dict:
        return {"hits": {"total": {"value": 1, "relation": "eq"}, "hits": [{"_source": HOSTILE}]}}


@pytest.mark.parametrize("flags", [[], ["--transcript"]])
def test_trace_command_prints_no_control_character(flags, no_config, capsys):
    """The whole command, table or transcript: nothing raw reaches stdout."""
    assert 0 == main(["trace", "to@example.com", *flags])
    out = capsys.readouterr().out
    assert "\\x1b" in out and not any(ch in out for ch in RAW)


def test_trace_json_stays_exact(no_config, capsys):
    """--json: each line decodes to the stored document exactly, and is itself printable."""
    assert 0 == main(["trace", "to@example.com", "--json"])
    (line,) = capsys.readouterr().out.splitlines()
    assert HOSTILE == json.loads(line)
    assert line.isprintable()
