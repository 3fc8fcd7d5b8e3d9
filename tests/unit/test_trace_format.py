"""trace: --since parsing, the query, and the table/transcript formatting (no cluster)."""

from __future__ import annotations

import datetime as dt

import pytest

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
