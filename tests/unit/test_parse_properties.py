"""Property-based: junk never crashes the parser nor changes the valid sessions around it."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from parsing import pipeline

from shipper.batching import document_id
from shipper.inputs import stream_chunks
from shipper.model import Direction, Verdict

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
VALID = (GOLDEN / "interleaved-sessions.log").read_bytes() + (
    GOLDEN / "pipelining-outlook.log").read_bytes() + (
    GOLDEN / "auth-login-and-plain-redacted.log").read_bytes()
VALID_LINES = VALID.splitlines(keepends=True)
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def parse(data: bytes) -> tuple[list[dict[str, Any]], int]:
    """Documents and defect count of ``data`` through the real pipeline, as one stream."""
    p = pipeline(Direction.OUTBOUND, ZoneInfo("Europe/Berlin"), host_name="h")
    shipments = [s for chunk in stream_chunks(io.BytesIO(data)) for s in p.feed("p.log", "p.log", chunk)]
    docs = [d for s in shipments + p.flush_all() for d in s.documents]
    return docs, p.stats.defects


def comparable(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Documents without their byte offsets (junk lines move those)."""
    result = []
    for doc in docs:
        doc = dict(doc, log={"file": doc["log"]["file"]})
        result.append(doc)
    return sorted(result, key=lambda d: (d["smtp"]["session_id"], d["event"]["start"],
                                         d.get("email", {}).get("to", {}).get("address", "")))


BASELINE = comparable(parse(VALID)[0])

junk_line = st.binary(min_size=1, max_size=200).map(lambda b: b.replace(b"\n", b" ") + b"\n")


@FAST
@given(st.lists(st.tuples(st.integers(0, len(VALID_LINES)), junk_line), max_size=15))
def test_junk_lines_never_alter_valid_sessions(insertions: list[tuple[int, bytes]]) -> None:
    """Arbitrary byte lines mixed into a valid stream: same documents, junk counted as defects."""
    lines = list(VALID_LINES)
    for position, junk in sorted(insertions, reverse=True):
        lines.insert(position, junk)
    docs, defects = parse(b"".join(lines))
    assert BASELINE == comparable(docs)
    blank = sum(1 for _, junk in insertions if not junk.strip())
    assert len(insertions) - blank == defects


@FAST
@given(st.binary(max_size=3000))
def test_arbitrary_bytes_never_crash(data: bytes) -> None:
    """Any bytes at all: the parser returns events or defects, and documents come out valid."""
    docs, _ = parse(data)
    for doc in docs:
        assert doc["smtp"]["verdict"] in {v.value for v in Verdict}


_payloads = st.sampled_from([
    "************ New (secure) connection to: 192.0.2.1", "************ New connection from: ::1",
    "~~~~~~~~~~~~ Connection Terminated ( 1)", "S <-- EHLO x", "S <-- MAIL FROM:<a@b>",
    "S <-- MAIL FROM:<>", "S <-- RCPT TO:<c@d>", "S <-- DATA", "S <-- BDAT 10 LAST", "S <-- RSET",
    "S <-- QUIT", "S <-- AUTH LOGIN", "S <-- STARTTLS", "S <-- ", "C --> 220 hi", "C --> 250-x",
    "C --> 250 ok", "C --> 354 go", "C --> 334 VXNlcg==", "C --> 421 4.4.2 bye", "C --> 451 4.7.1 later",
    "C --> 550 5.1.1 no", "C --> 999", "C --> 5", "whatever",
])
_lines = st.lists(st.tuples(st.sampled_from(["1", "2", "3"]), _payloads,
                            st.integers(0, 3)), max_size=80)


@FAST
@given(_lines)
def test_any_order_of_smtp_lines_is_deterministic(steps: list[tuple[str, str, int]]) -> None:
    """Random, protocol-violating conversations never crash, and parse identically twice."""
    ms = 0
    out = []
    for sid, payload, step in steps:
        ms += step
        out.append(f"2024-10-27 02:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"
                   f" - [{sid:>5}] {payload}\n")
    data = "".join(out).encode()
    first, _ = parse(data)
    second, _ = parse(data)
    assert first == second
    assert [document_id(d) for d in first] == [document_id(d) for d in second]
    for doc in first:
        reply = doc["smtp"].get("reply")
        if doc["smtp"]["verdict"] == "failed":
            assert reply is None  # never invent a reply
        else:
            assert reply is not None and reply["code"][0] in "2345"
