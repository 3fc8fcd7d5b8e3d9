"""The SMTP state machine: records → sessions (shipper.sessions, shipper.smtp)."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from parsing import NY, feed, pipeline, sessions

from shipper.model import Direction, Session, Stage, Verdict


def lines(sid: int, *steps: str, start_ms: int = 0, hour: str = "10:00",
          inbound: bool = False) -> str:
    """Xeams lines of one session; '>' = what the client wrote, '<' = what the server wrote,
    other = as is. The tags are PRODUCT.md's reading: "S <--" is the logging server's own line
    (the client outbound, the server inbound), "C -->" its peer's."""
    client, server = ("C --> ", "S <-- ") if inbound else ("S <-- ", "C --> ")
    out = []
    for i, step in enumerate(steps):
        ms = start_ms + i * 10
        stamp = f"2024-03-20 {hour}:{ms // 1000:02d},{ms % 1000:03d}"
        if step.startswith("> "):
            payload = client + step[2:]
        elif step.startswith("< "):
            payload = server + step[2:]
        else:
            payload = step
        out.append(f"{stamp} - [{sid:>10}] {payload}\n")
    return "".join(out)


def assemble(text: str, direction: Direction | None = Direction.OUTBOUND,
             tz: ZoneInfo = NY) -> list[Session]:
    return sessions(text, direction, tz)


CONNECT = "************ New connection to: 203.0.113.9"
TERM = "~~~~~~~~~~~~ Connection Terminated ( 99)"


def outcomes(session: Session) -> list[tuple[str | None, str, str, str | None]]:
    result = []
    for txn in session.transactions:
        for r in txn.recipients:
            o = r.outcome
            result.append((r.address, o.verdict.value, o.stage.value,
                           o.reply.code if o.reply else None))
    return result


def test_pipelined_replies_answer_commands_in_order() -> None:
    """RFC 2920: MAIL, RCPT, RCPT, DATA sent at once; replies matched in order."""
    (s,) = assemble(lines(1, CONNECT, "< 220 mx ESMTP", "> EHLO me", "< 250 mx",
                          "> MAIL FROM:<a@me.example>", "> RCPT TO:<x@mx.example>",
                          "> RCPT TO:<y@mx.example>", "> DATA",
                          "< 250 2.1.0 Ok", "< 550 5.1.1 no such user", "< 250 2.1.5 Ok",
                          "< 354 go", "< 250 2.0.0 queued", "> QUIT", "< 221 bye", TERM))
    assert [("x@mx.example", "rejected", "rcpt", "550"),
            ("y@mx.example", "delivered", "dot", "250")] == outcomes(s)
    assert not s.incomplete


def test_unsolicited_421_after_354_defers_pending_recipients_at_dot() -> None:
    """A 421 nobody asked for (server timeout) ends the session: pending → deferred."""
    (s,) = assemble(lines(2, CONNECT, "> EHLO me", "< 250 mx", "> MAIL FROM:<a@me.example>",
                          "< 250 ok", "> RCPT TO:<x@mx.example>", "< 250 ok", "> DATA",
                          "< 354 go", "< 421 4.4.2 mx Error: timeout exceeded", TERM))
    assert [("x@mx.example", "deferred", "dot", "421")] == outcomes(s)


def test_quit_after_rcpt_without_data_is_failed_at_rcpt() -> None:
    """The client gave up before sending the message: no reply decided, nothing invented."""
    (s,) = assemble(lines(3, CONNECT, "> EHLO me", "< 250 mx", "> MAIL FROM:<a@me.example>",
                          "< 250 ok", "> RCPT TO:<x@mx.example>", "< 250 ok", "> QUIT",
                          "< 221 bye", TERM))
    (rcpt,) = s.transactions[0].recipients
    assert (Verdict.FAILED, Stage.RCPT, None) == (rcpt.outcome.verdict, rcpt.outcome.stage,
                                                  rcpt.outcome.reply)


def test_ehlo_rejected_is_one_session_outcome() -> None:
    """No transaction: the session itself carries the verdict of the refusing reply."""
    (s,) = assemble(lines(4, CONNECT, "< 220 mx", "> EHLO me", "< 550 5.7.1 go away",
                          "> HELO me", "< 550 5.7.1 still no", "> QUIT", TERM))
    assert () == s.transactions
    assert s.outcome is not None and s.outcome.reply is not None
    assert (Verdict.REJECTED, Stage.HELO, "550", "5.7.1 go away") == (
        s.outcome.verdict, s.outcome.stage, s.outcome.reply.code, s.outcome.reply.text)


def test_multiline_reply_code_from_last_line_and_enhanced_class_checked() -> None:
    """Continuation lines join into one text; an x.y.z whose class differs is no enhanced code."""
    (s,) = assemble(lines(5, CONNECT, "> EHLO me", "< 250 mx", "> MAIL FROM:<a@me.example>",
                          "< 250 ok", "> RCPT TO:<x@mx.example>", "< 550-4.1.1 first line",
                          "< 550-4.1.1 second line", "< 550 third line", TERM))
    reply = s.transactions[0].recipients[0].outcome.reply
    assert reply is not None
    assert ("550", None, "4.1.1 first line 4.1.1 second line third line") == (
        reply.code, reply.enhanced, reply.text)


def test_repeated_enhanced_code_is_dropped_from_continuations() -> None:
    """RFC 2034 repeats the enhanced code on every line; the text carries it once."""
    (s,) = assemble(lines(6, CONNECT, "> EHLO me", "< 250 mx", "> MAIL FROM:<a@me.example>",
                          "< 250 ok", "> RCPT TO:<x@mx.example>", "< 550-5.1.1 The account",
                          "< 550 5.1.1 does not exist", TERM))
    reply = s.transactions[0].recipients[0].outcome.reply
    assert reply is not None
    assert ("5.1.1", "5.1.1 The account does not exist") == (reply.enhanced, reply.text)


def test_body_lines_after_354_are_not_commands() -> None:
    """Should a variant log the body, its lines must not shift the reply matching."""
    (s,) = assemble(lines(7, CONNECT, "> EHLO me", "< 250 mx", "> MAIL FROM:<a@me.example>",
                          "< 250 ok", "> RCPT TO:<x@mx.example>", "< 250 ok", "> DATA",
                          "< 354 go", "> Subject: RSET", "> MAIL FROM:<evil@x>", "> .",
                          "< 250 2.0.0 queued", TERM))
    assert [("x@mx.example", "delivered", "dot", "250")] == outcomes(s)
    assert 1 == len(s.transactions)


def test_auth_secrets_do_not_survive_in_the_session() -> None:
    """The 334 answers and an initial response are redacted in the transcript lines."""
    (s,) = assemble(lines(8, CONNECT, "> EHLO me", "< 250-mx", "< 250 AUTH LOGIN PLAIN",
                          "> AUTH LOGIN dXNlckBleGFtcGxlLmNvbQ==", "< 334 UGFzc3dvcmQ6",
                          "> c2VjcmV0IQ==", "< 235 2.7.0 ok", "> AUTH PLAIN", "< 334 ",
                          "> AGJvYgBodW50ZXIy", "< 503 5.5.1 already authenticated", TERM))
    text = "\n".join(s.lines)
    for secret in ("dXNlckBleGFtcGxlLmNvbQ==", "c2VjcmV0IQ==", "AGJvYgBodW50ZXIy"):
        assert secret not in text
    assert 3 == text.count("[redacted]")


def test_new_connection_line_for_open_id_starts_a_new_session() -> None:
    """Ids are reused after a Xeams restart: the old session ends incomplete."""
    text = lines(9, CONNECT, "> EHLO me") + lines(9, CONNECT, "> EHLO me", TERM, start_ms=5000)
    first, second = assemble(text)
    assert (True, False) == (first.incomplete, second.incomplete)
    assert 0 == first.offset and second.offset > 0


def test_interleaved_sessions_are_kept_apart() -> None:
    """Lines of two connections alternate; each session gets only its own lines."""
    a = lines(10, CONNECT, "> EHLO a", "< 250 mx", TERM).splitlines(keepends=True)
    b = lines(11, CONNECT, "> EHLO b", "< 554 no", TERM).splitlines(keepends=True)
    mixed = "".join(x + y for x, y in zip(a, b, strict=True))
    sessions = {s.session_id: s for s in assemble(mixed)}
    assert ["a", "b"] == [sessions["10"].helo, sessions["11"].helo]
    assert all("[        10]" in line for line in sessions["10"].lines)
    assert sessions["11"].outcome is not None
    assert Verdict.REJECTED is sessions["11"].outcome.verdict


def test_flush_idle_uses_the_injected_clock() -> None:
    """Sessions without a line for longer than T are finished as incomplete; others stay."""
    now = [100.0]
    p = pipeline(clock=lambda: now[0])
    feed(p, lines(12, CONNECT, "> EHLO me"))
    now[0] = 150.0
    feed(p, lines(13, CONNECT))
    assert [] == p.flush_idle(now=155.0, idle_seconds=60)
    (idle,) = p.flush_idle(now=170.0, idle_seconds=60)
    assert ("12", True) == (idle.session.session_id, idle.session.incomplete)
    assert 1 == p.grouper.open_sessions


def test_open_positions_and_files_of_a_session_across_rotation() -> None:
    """A session's first line per file is what a checkpoint must not pass."""
    p = pipeline()
    part1 = lines(14, CONNECT, "> EHLO me")
    part2 = lines(14, "< 250 mx", TERM, start_ms=100)
    other = lines(15, CONNECT)
    assert [] == feed(p, part1, "old.log")
    assert {"old.log": (0, {"14"})} == p.open_positions()
    assert [] == feed(p, other, "old.log", offset=len(part1))
    (s,) = feed(p, part2, "new.log")
    assert ("old.log", 0, {"old.log": 0, "new.log": 0}) == (s.path, s.offset, dict(s.files))
    assert {"old.log": (len(part1), {"15"})} == p.open_positions()  # session 15 still open


def test_auto_direction_from_connection_line() -> None:
    """Without a configured direction, 'from:' means we were the server."""
    (s,) = assemble(lines(16, "************ New connection from: 198.51.100.7", "> EHLO peer",
                          "< 250 me", TERM, inbound=True), direction=None)
    assert (Direction.INBOUND, "peer", "198.51.100.7") == (s.direction, s.remote_host, s.remote_ip)


def test_dst_fold_second_pass_gets_the_later_offset() -> None:
    """Europe/Berlin repeats 02:00-03:00 on 2024-10-27; a clock jump back is the second pass."""
    text = (lines(17, CONNECT, hour="02:59", start_ms=59000)
            + lines(17, TERM, hour="02:00", start_ms=1000))
    text = text.replace("2024-03-20", "2024-10-27")
    (s,) = assemble(text, tz=ZoneInfo("Europe/Berlin"))
    assert ("+02:00", "+01:00") == (s.start.iso[-6:], s.end.iso[-6:])


def test_notes_before_the_connection_line_belong_to_the_session() -> None:
    """Non-SMTP lines logged before 'New connection' do not make a session of their own."""
    (s,) = assemble(lines(18, "Resolving MX records for example.org", CONNECT, "< 220 mx",
                          "> EHLO me", "< 250 mx", "> QUIT", "< 221 bye", TERM))
    assert ("203.0.113.9", False, 8) == (s.remote_ip, s.incomplete, len(s.lines))
