"""The verdict rules (PRODUCT.md, "Verdict"): the replies on a recipient's path → its outcome. Pure.

A recipient's path is MAIL → RCPT → DATA → end-of-data. The earliest reply on it that is not
positive decides (5xx rejected, 4xx deferred); otherwise the end-of-data reply does (2xx
delivered). A path that breaks off before a reply decides is ``failed`` at the step in
progress — no reply is invented — unless a reply ended the session first (a ``421``), which
defers everything still pending with its code.
"""

from __future__ import annotations

import re

from shipper.localtime import LocalTime
from shipper.model import Outcome, Reply, Stage, Verdict

# A reply while a session is followed: (code, its lines' texts, local timestamp of its last
# line, fold). Made into a ``Reply`` only when it decides something.
RawReply = tuple[str, list[str], str, int]
# The reply that ended a session (a 421) and the step it ended.
Closing = tuple[RawReply, Stage]
# A step before the log began (e.g. MAIL not logged): it went well, or the rest would not be.
ASSUMED_OK: RawReply = ("250", [""], "", 0)

# Enum members as module names: the enum metaclass serves class attributes in Python (~0.1 µs).
_DELIVERED, _REJECTED, _DEFERRED, _FAILED = (
    Verdict.DELIVERED, Verdict.REJECTED, Verdict.DEFERRED, Verdict.FAILED)
_AT_MAIL, _AT_RCPT, _AT_DOT = Stage.MAIL, Stage.RCPT, Stage.DOT
_ENHANCED = re.compile(r"([245])\.\d{1,3}\.\d{1,3}(?=\s|$)")


def path_outcome(steps: tuple[tuple[Stage, RawReply | None], ...], progress: Stage,
                 close: Closing | None, times: LocalTime) -> Outcome:
    """The outcome of the path ``steps`` (each step with its reply, None when none came);
    ``progress`` is the step the transaction had reached, ``close`` what ended the session."""
    last: RawReply | None = None
    for stage, reply in steps:
        if reply is None:  # the conversation broke off here
            if close is not None:
                return Outcome(_DEFERRED, close[1], make_reply(close[0], times))
            if stage is _AT_MAIL or stage is _AT_RCPT:
                return Outcome(_FAILED, stage)
            return Outcome(_FAILED, progress)
        if reply[0][0] not in "23":
            return Outcome(_verdict(reply[0]), stage, make_reply(reply, times))
        last = reply
    if len(steps) == 1:  # MAIL accepted, but no recipient was ever given
        if close is not None:
            return Outcome(_DEFERRED, close[1], make_reply(close[0], times))
        return Outcome(_FAILED, _AT_MAIL)
    assert last is not None
    if last[0][0] == "2":
        return Outcome(_DELIVERED, _AT_DOT, make_reply(last, times))
    return Outcome(_FAILED, _AT_DOT)  # a 3xx to end-of-data: nonsense, no verdict


def session_outcome(fail: Closing | None, close: Closing | None, progress: Stage,
                    times: LocalTime) -> Outcome:
    """The outcome of a session that never began a transaction: its first refusal (greeting,
    EHLO, STARTTLS, AUTH), else the reply that ended it, else ``failed`` where it stopped."""
    if fail is not None:
        reply, stage = fail
        return Outcome(_verdict(reply[0]), stage, make_reply(reply, times))
    if close is not None:
        reply, stage = close
        return Outcome(_DEFERRED, stage, make_reply(reply, times))
    return Outcome(_FAILED, progress)


def make_reply(raw: RawReply, times: LocalTime) -> Reply:
    """The ``Reply`` of a followed reply: multi-line texts joined, the enhanced code (RFC 3463)
    when the first line starts with one of the code's class (RFC 2034 §4 repeats it on every
    line: the repetitions are dropped)."""
    code, texts, ts, fold = raw
    first = texts[0].strip()
    m = _ENHANCED.match(first)
    enhanced = m.group(0) if m is not None and m.group(1) == code[0] else None
    if len(texts) == 1:  # a one-line reply: its text as it is
        return Reply(code, enhanced, first, times.at(ts, fold))
    joined = [first]
    for line in texts[1:]:
        line = line.strip()
        if enhanced is not None and line.startswith(enhanced):
            line = line[len(enhanced):].lstrip()
        if line:
            joined.append(line)
    return Reply(code, enhanced, " ".join([t for t in joined if t]), times.at(ts, fold))


def _verdict(code: str) -> Verdict:
    return _DEFERRED if code[0] == "4" else _REJECTED
