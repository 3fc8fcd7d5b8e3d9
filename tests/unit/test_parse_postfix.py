"""The Postfix format: the same documents however the log is cut into chunks or the state is
saved and restored between them; bounded state; layouts and fields the goldens do not show."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shipper import formats
from shipper.formats import postfix
from shipper.lines import Chunk
from shipper.pipeline import ParseOptions, ParseStats, Pipeline

GOLDEN = Path(__file__).parents[1] / "golden"
LOGS = sorted(GOLDEN.glob("postfix-*.log"))
WHEN = 1796000000.0  # 2026-11-30: the year of the goldens' yearless lines
BERLIN = ZoneInfo("Europe/Berlin")


def pipeline() -> Pipeline:
    return Pipeline(formats.get("postfix"), ParseOptions(format="postfix", tz=BERLIN, host_name="h"), ParseStats())


def documents(data: bytes, cuts: list[int], restore_at: set[int] = frozenset()) -> list[dict[str, Any]]:
    """Feed ``data`` in pieces ending at the line boundaries ``cuts``; at the pieces in
    ``restore_at``, carry on in a new pipeline from the old one's saved state (a restart)."""
    p = pipeline()
    docs: list[dict[str, Any]] = []
    start = 0
    for i, end in enumerate([*cuts, len(data)]):
        if end > start:
            docs += [d for s in p.feed("f", "f", Chunk(start, data[start:end]), WHEN) for d in s.documents]
        start = max(start, end)
        if i in restore_at:
            state = json.loads(json.dumps(p.save_state()))  # as written to disk
            p = pipeline()
            p.restore_state(state)
    return docs + [d for s in p.flush_all() for d in s.documents]


@pytest.mark.parametrize("log", LOGS, ids=[p.stem for p in LOGS])
def test_chunks_and_restarts_change_nothing(log: Path) -> None:
    """Every golden log, cut after every line and restored from a saved state after every
    line, gives the documents of one whole read."""
    data = log.read_bytes()
    ends = [i + 1 for i, b in enumerate(data) if b == 10]
    whole = documents(data, [])
    assert whole
    assert documents(data, ends) == whole
    assert documents(data, ends, set(range(len(ends)))) == whole


@settings(max_examples=60, deadline=None)
@given(st.randoms(use_true_random=False))
def test_random_cuts_and_restarts_change_nothing(rand: random.Random) -> None:
    """All golden logs as one stream, cut and restarted at random line boundaries."""
    data = b"".join(p.read_bytes() for p in LOGS if "journald" not in p.name)
    ends = [i + 1 for i, b in enumerate(data) if b == 10]
    cuts = sorted(rand.sample(ends, min(len(ends), rand.randint(1, 12))))
    restarts = {i for i in range(len(cuts)) if rand.random() < 0.5}
    assert documents(data, cuts, restarts) == documents(data, [])


def test_state_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Messages never removed (a log cut, a lost line) do not grow the state past its bounds;
    the oldest go first, and a later attempt of one still gets its sender from qmgr."""
    monkeypatch.setattr(postfix, "MAX_QUEUE_IDS", 100)
    fmt = postfix.PostfixFormat()
    lines = [f"Mar  1 08:00:{n % 60:02d} mx postfix/qmgr[9]: {0xB00000 + n:06X}: from=<s{n}@x.example>, "
             f"size=1, nrcpt=1 (queue active)\n" for n in range(1000)]
    fmt.feed("".join(lines).encode(), 0, "f", "f", WHEN)
    assert len(fmt.queue) == 100
    assert "B00000" not in fmt.queue and f"{0xB00000 + 999:06X}" in fmt.queue
    retry = (b"Mar  1 09:00:00 mx postfix/qmgr[9]: B00000: from=<s0@x.example>, size=1, nrcpt=1 (queue active)\n"
             b"Mar  1 09:00:01 mx postfix/smtp[8]: B00000: to=<r@y.example>, relay=y[192.0.2.1]:25, delay=1, "
             b"delays=0/0/0/1, dsn=2.0.0, status=sent (250 2.0.0 Ok)\n")
    (session,) = fmt.feed(retry, 0, "f", "f", WHEN).sessions
    assert session.transactions[0].mail_from == "s0@x.example"
    assert session.message_id is None


@pytest.mark.parametrize(("line", "expected"), [
    ("Nov 26 19:24:32 mx postfix/smtp[1]: X", "2026-11-26T19:24:32.000+01:00"),
    ("Jan  5 08:00:00 mx postfix/smtp[1]: X", "2026-01-05T08:00:00.000+01:00"),  # syslog pads with a space
    ("Jan 05 08:00:00 mx postfix/smtp[1]: X", "2026-01-05T08:00:00.000+01:00"),  # maillog_file with a zero
    ("2026-07-01T10:00:00.123456+02:00 mx postfix/smtp[1]: X", "2026-07-01T10:00:00.123+02:00"),
    ("2026-07-01T10:00:00+0200 mx postfix/smtp[1]: X", "2026-07-01T10:00:00.000+02:00"),  # journalctl short-iso
    ("2026-07-01T08:00:00Z mx postfix/smtp[1]: X", "2026-07-01T08:00:00.000+00:00"),
])
def test_timestamps(line: str, expected: str) -> None:
    """Each prefix gives its moment; yearless ones take the year from the file's time."""
    fmt = postfix.PostfixFormat()
    fmt.start(pipeline().times)
    head = fmt._prefix(line, WHEN)
    assert head is not None
    assert head[0].iso == expected


@pytest.mark.parametrize(("text", "code", "enhanced", "joined"), [
    ("550-5.1.1 a 550-5.1.1 b 550 5.1.1 c", "550", "5.1.1", "5.1.1 a b c"),
    ("550 5.7.1 Service unavailable; client blocked", "550", "5.7.1", "5.7.1 Service unavailable; client blocked"),
    ("451 Try later", "451", None, "Try later"),
    ("550 4.7.1 mismatch", "550", None, "4.7.1 mismatch"),  # a class that disagrees is no enhanced code
    ("5.7.1 Blocked by SpamAssassin", "", "5.7.1", "5.7.1 Blocked by SpamAssassin"),  # milter-reject
])
def test_replies_as_postfix_quotes_them(text: str, code: str, enhanced: str | None, joined: str) -> None:
    """Multi-line replies arrive joined; the enhanced code is the peer's own, when its class
    agrees with the code."""
    reply = postfix._reply(text, postfix.Moment("t", 0))
    assert (reply.code, reply.enhanced, reply.text) == (code, enhanced, joined)


def test_other_programs_and_garbage() -> None:
    """Another program's lines are skipped and counted; a line in no syslog layout is a defect."""
    fed = postfix.PostfixFormat().feed(
        b"Nov 26 19:24:32 mx dovecot: imap-login: Login\nNov 26 19:24:32 mx amavis[3]: (1) Passed CLEAN\n"
        b"Nov 26 19:24:32 mx CRON[4]: (root) CMD (x)\ngarbage\n", 0, "f", "f", WHEN)
    assert (fed.lines, fed.skipped, fed.sessions) == (4, 3, [])
    assert [d.reason for d in fed.defects] == ["line matches no syslog layout"]


def test_credentials_never_reach_a_transcript() -> None:
    """AUTH under debug_peer_list, either side's: the initial response and what answers a 334
    are redacted in every document's transcript (RFC 4954 §4)."""
    log = (b"Mar  1 08:00:00 mx postfix/submission/smtpd[5]: connect from c.example[192.0.2.5]\n"
           b"Mar  1 08:00:00 mx postfix/submission/smtpd[5]: < c.example[192.0.2.5]: AUTH LOGIN\n"
           b"Mar  1 08:00:00 mx postfix/submission/smtpd[5]: > c.example[192.0.2.5]: 334 VXNlcm5hbWU6\n"
           b"Mar  1 08:00:00 mx postfix/submission/smtpd[5]: < c.example[192.0.2.5]: am9objpzZWNyZXQ=\n"
           b"Mar  1 08:00:01 mx postfix/submission/smtpd[5]: 0B1C2D3E4F: client=c.example[192.0.2.5]\n"
           b"Mar  1 08:00:01 mx postfix/qmgr[9]: 0B1C2D3E4F: from=<j@example.net>, size=1, nrcpt=1 (queue active)\n"
           b"Mar  1 08:00:02 mx postfix/smtp[6]: > mx.example.com[192.0.2.9]:587: AUTH PLAIN AGpvaG4Ac2VjcmV0\n"
           b"Mar  1 08:00:02 mx postfix/smtp[6]: 0B1C2D3E4F: to=<r@example.com>, relay=mx.example.com[192.0.2.9]:587, "
           b"delay=1, delays=0/0/0.5/0.5, dsn=2.0.0, status=sent (250 2.0.0 Ok)\n")
    docs = documents(log, [])
    assert [d["smtp"]["direction"] for d in docs] == ["inbound", "outbound"]
    for doc in docs:
        transcript = doc["smtp"]["transcript"]
        assert "am9objpzZWNyZXQ=" not in transcript and "AGpvaG4Ac2VjcmV0" not in transcript
        assert "[redacted]" in transcript


def test_document_ids_unique_in_every_golden() -> None:
    """No two documents of a Postfix golden share an id (a receipt and its delivery, a last
    deferral and its expiry, retries of one recipient): none would overwrite another."""
    from shipper.batching import document_id

    for log in LOGS:
        ids = [document_id(d) for d in documents(log.read_bytes(), [])]
        assert len(ids) == len(set(ids)), log.name
