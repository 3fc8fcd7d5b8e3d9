"""Sizes a peer controls (shipper.limits, issue 13 items 4 and 5): every value a peer fills is cut
to what OpenSearch indexes, at a character boundary and visibly; the transcript is cut at its
middle; a large session writes its transcript a bounded number of times and the other documents
name the one that holds it."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from parsing import pipeline, xeams

from shipper import limits
from shipper.batching import document_id
from shipper.documents import get_field
from shipper.inputs import stream_chunks
from shipper.model import Direction
from shipper.settings import MAX_FIELD_BYTES, MAX_TRANSCRIPT_BYTES, LimitsSettings
from shipper.setup import rendered_bodies

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# one of each UTF-8 length, and a character that lower-cases to a longer one (U+023A → U+2C65)
CHARS = ["a", "é", "€", "😀", "Ⱥ"]


def documents(text: str, direction: Direction = Direction.OUTBOUND, **sizes: int) -> list[dict[str, Any]]:
    """The documents of ``text`` through the real pipeline, with ``sizes`` as ``limits``."""
    p = pipeline(direction, host_name="h", limits=LimitsSettings(**sizes))
    done = [s for chunk in stream_chunks(io.BytesIO(text.encode())) for s in p.feed("x.log", "x.log", chunk)]
    return [d for s in done + p.flush_all() for d in s.documents]


def outbound(sid: int, *, rcpts: list[str], helo: str = "mail.example.org", ehlo: list[str] | None = None,
             reply: str = "250 2.0.0 OK queued", sender: str = "a@example.org") -> str:
    ehlo = ehlo if ehlo is not None else ["mx.example.net", "PIPELINING", "8BITMIME"]
    steps = ["************ New (secure) connection to: 203.0.113.9", f"> EHLO {helo}"]
    steps += [f"< 250-{e}" for e in ehlo[:-1]] + [f"< 250 {ehlo[-1]}", f"> MAIL FROM:<{sender}>", "< 250 2.1.0 OK"]
    for rcpt in rcpts:
        steps += [f"> RCPT TO:<{rcpt}>", "< 250 2.1.5 OK"]
    steps += ["> DATA", "< 354 go ahead", f"< {reply}", "> QUIT", "< 221 bye",
              "~~~~~~~~~~~~ Connection Terminated ( 1)"]
    return xeams(sid, *steps)


def utf8(text: str) -> int:
    return len(text.encode("utf-8"))


# --------------------------------------------------------------------------- the common case


def test_an_ordinary_session_is_left_as_built() -> None:
    """Nothing in a usual session comes near a limit: no field cut, no smtp.truncated, every
    document holds the transcript."""
    docs = documents(outbound(1, rcpts=["b@example.net", "c@example.net"]))
    assert 2 == len(docs)
    for doc in docs:
        assert "truncated" not in doc["smtp"] and "transcript_ref" not in doc["smtp"]
        assert doc["smtp"]["transcript"].endswith("Connection Terminated ( 1)")
        assert "mail.example.org" == doc["smtp"]["helo"]


# --------------------------------------------------------------------------- one value


@FAST
@given(st.text(alphabet=st.sampled_from(CHARS), min_size=0, max_size=3000), st.integers(256, 2048))
def test_cut_value_fits_ends_on_a_character_and_keeps_the_start(text: str, limit: int) -> None:
    """Whatever the characters, a cut value is at most ``limit`` UTF-8 bytes, starts with the
    value's own start (never half a character: it is a str, and its start is a prefix of the
    value), and ends in the marker with the whole value's size; a value that fits is kept."""
    cut = limits.cut_value(text, limit)
    assert utf8(cut) <= limit
    if utf8(text) <= limit:
        assert text == cut
    else:
        head, mark = cut.rsplit("…[cut: ", 1)
        assert text.startswith(head)
        assert mark.startswith(f"{utf8(text)} bytes, sha256 ") and mark.endswith("]")
        assert utf8(head) > limit - 70  # the room given up for the marker, no more


def test_a_character_is_never_cut_in_the_middle() -> None:
    """Cut points falling inside a 2-, 3- or 4-byte character move back to its first byte."""
    for char in ("é", "€", "😀"):
        for pad in range(4):
            text = "x" * pad + char * 2000
            cut = limits.cut_value(text, 1024)
            head = cut.rsplit("…[cut: ", 1)[0]
            assert head == text[:len(head)] and utf8(head) + len(char.encode()) > 1024 - utf8(cut[len(head):])


def test_two_long_values_with_the_same_start_stay_two() -> None:
    """Two recipients that share their first kilobytes keep different values (and ids)."""
    a, b = "x" * 5000 + "@a.example", "x" * 5000 + "@b.example"
    assert limits.cut_value(a, 1024) != limits.cut_value(b, 1024)


def test_extensions_keep_whole_entries_and_sum_up_the_rest() -> None:
    ehlo = ["mx.example.net", "PIPELINING", *[f"X-JUNK-{i:05d}-{'z' * 40}" for i in range(3000)], "SMTPUTF8"]
    kept = limits.cut_list(ehlo[1:], 2048)
    assert kept is not None
    assert sum(map(utf8, kept)) <= 2048
    assert ["PIPELINING", "X-JUNK-00000-" + "z" * 40] == kept[:2]
    rest = len(ehlo) - 1 - (len(kept) - 1)
    assert kept[-1].startswith(f"…[cut: {rest} more, ")
    assert limits.cut_list(["PIPELINING", "SIZE 1000"], 2048) is None


def test_one_huge_extension_is_summed_up() -> None:
    kept = limits.cut_list(["PIPELINING", "Y" * 60000], 2048)
    assert kept is not None and "PIPELINING" == kept[0]
    assert kept[1].startswith("…[cut: 1 more, 60000 bytes, sha256 ")


# --------------------------------------------------------------------------- every field a peer fills


def test_every_field_a_peer_fills_is_cut_and_named() -> None:
    """A session where the peer made every value huge (and multi-byte): each is cut to
    field_bytes, the document keeps its shape, and smtp.truncated names each field."""
    big = "é" * 40000  # 80,000 bytes
    text = xeams(
        7, "************ New connection from: 198.51.100.7",
        f"< 220 {big}.example ESMTP", f"> EHLO {big}", "< 250-mx.example.net", f"< 250 X{big}",
        f"> MAIL FROM:<{big}@from.example>", "< 250 2.1.0 OK",
        f"> RCPT TO:<{big}@{big}.example>", *[f"< 550-5.7.1 {big}" for _ in range(12)], "< 550 5.7.1 no",
        "> QUIT", "< 221 bye", "~~~~~~~~~~~~ Connection Terminated ( 1)", inbound=True)
    [doc] = documents(text, Direction.INBOUND)
    fields = ["smtp.helo", "smtp.remote.host", "smtp.extensions", "smtp.reply.text",
              "email.from.address", "email.to.address", "smtp.recipient_domain"]
    assert sorted([*fields, "smtp.transcript"]) == sorted(doc["smtp"]["truncated"])  # 14 lines of 80 KB
    for name in fields:
        value = get_field(doc, name)
        total = sum(map(utf8, value)) if isinstance(value, list) else utf8(value)
        assert total <= 2048, name
    assert doc["email"]["to"]["address"].startswith("éééé")
    assert "rejected" == doc["smtp"]["verdict"] and "550" == doc["smtp"]["reply"]["code"]


@pytest.mark.parametrize("name", sorted(set(limits.PEER_FIELDS) - {"smtp.extensions"}))
def test_each_peer_field_is_cut_where_it_is(name: str) -> None:
    """bound() finds each field of PEER_FIELDS where documents hold it (the code walks them
    one by one; this keeps it and the list in step)."""
    doc: dict[str, Any] = {"smtp": {"verdict": "rejected"}}
    holder = doc
    *parents, last = name.split(".")
    for key in parents:
        holder = holder.setdefault(key, {})
    holder[last] = "v" * 9000
    limits.bound([doc], LimitsSettings())
    assert [name] == doc["smtp"]["truncated"]
    assert 2048 == utf8(get_field(doc, name))


# --------------------------------------------------------------------------- the transcript


@FAST
@given(st.lists(st.text(alphabet=st.sampled_from(CHARS + [" "]), max_size=300), min_size=1, max_size=200),
       st.integers(4096, 20000))
def test_a_cut_transcript_keeps_its_start_and_its_end(lines: list[str], limit: int) -> None:
    text = "\n".join(lines)
    cut, was_cut = limits.bound_transcript(text, limit)
    assert utf8(cut) <= limit
    assert was_cut == (utf8(text) > limit)
    if not was_cut:
        assert text == cut
        return
    head, marker, tail = cut.split("\n[smtp-shipper: ", 1)[0], *cut.split("\n[smtp-shipper: ", 1)[1].split("]\n", 1)
    assert text.startswith(head) and text.endswith(tail)
    assert utf8(head) + utf8(tail) >= limit - 200 - 2 * 300 * 4  # at most a line given up on each side
    gone = utf8(text) - utf8(head) - utf8(tail)
    assert marker.startswith(f"{gone} bytes (") and f"the transcript was {utf8(text)} bytes" in marker


def test_the_marker_counts_the_lines_cut() -> None:
    lines = [f"line {i:04d} " + "x" * 90 for i in range(100)]
    cut, _ = limits.bound_transcript("\n".join(lines), 4096)
    shown = cut.split("\n")
    marker = next(s for s in shown if s.startswith("[smtp-shipper: "))
    kept = [s for s in shown if s.startswith("line ")]
    assert f"({100 - len(kept)} lines) cut here" in marker
    assert lines[:len(kept) // 2] == kept[:len(kept) // 2] and lines[-1] == kept[-1]


def test_a_2_mb_transcript_is_cut_in_the_document() -> None:
    """Many recipients' worth of lines: the document's transcript is transcript_bytes at most,
    from the connection line to Connection Terminated, and smtp.truncated says so."""
    junk = [step for _ in range(1000) for step in (f"> NOOP {'n' * 2000}", "< 250 OK")]
    text = xeams(8, "************ New (secure) connection to: 203.0.113.9", "> EHLO a.example",
                 "< 250 b.example", *junk, "> MAIL FROM:<a@a.example>", "< 250 OK", "> RCPT TO:<b@b.example>",
                 "< 250 OK", "> DATA", "< 354 go", "< 250 queued", "> QUIT", "< 221 bye",
                 "~~~~~~~~~~~~ Connection Terminated ( 1)")
    assert len(text) > 2_000_000
    [doc] = documents(text)
    transcript = doc["smtp"]["transcript"]
    assert utf8(transcript) <= 256 * 1024
    assert "New (secure) connection to" in transcript.split("\n")[0]
    assert transcript.endswith("Connection Terminated ( 1)")
    assert ["smtp.transcript"] == doc["smtp"]["truncated"]
    assert "delivered" == doc["smtp"]["verdict"]  # cut after the verdict was read, never before


# --------------------------------------------------------------------------- many recipients


def test_a_thousand_recipients_write_the_transcript_within_the_session_budget() -> None:
    """Item 5: the first documents hold the transcript while the session's budget lasts; the
    others name the first document (by the id it is indexed under), and nothing else differs."""
    rcpts = [f"user{i:04d}@example.net" for i in range(1000)]
    docs = documents(outbound(9, rcpts=rcpts), transcript_bytes=65536, session_transcript_bytes=262144)
    assert 1000 == len(docs)
    holding = [d for d in docs if "transcript" in d["smtp"]]
    size = utf8(docs[0]["smtp"]["transcript"])
    assert 65536 >= size > 60000  # the session's transcript is about 90 KB: cut
    assert sum(utf8(d["smtp"]["transcript"]) for d in holding) <= 262144
    assert docs[:len(holding)] == holding and len(holding) == 262144 // size
    first = document_id(docs[0])
    assert all(first == d["smtp"]["transcript_ref"] for d in docs[len(holding):])
    assert all("transcript_ref" not in d["smtp"] for d in holding)
    assert rcpts == [d["email"]["to"]["address"] for d in docs]


def test_a_budget_of_one_transcript_writes_it_once() -> None:
    """A budget smaller than two copies writes one; 0 is "the first document only"."""
    ehlo = ["mx.example.net", *[f"X-EXTENSION-{i}" for i in range(60)]]  # a transcript of 3-4 KB
    docs = documents(outbound(10, rcpts=["a@x.example", "b@x.example", "c@x.example"], ehlo=ehlo),
                     transcript_bytes=4096, session_transcript_bytes=4096)
    assert 2048 < utf8(docs[0]["smtp"]["transcript"]) <= 4096
    assert ["transcript" in d["smtp"] for d in docs] == [True, False, False]
    docs = documents(outbound(10, rcpts=["a@x.example", "b@x.example", "c@x.example"]), session_transcript_bytes=0)
    assert ["transcript" in d["smtp"] for d in docs] == [True, False, False]
    assert {document_id(docs[0])} == {d["smtp"]["transcript_ref"] for d in docs[1:]}
    assert "truncated" not in docs[1]["smtp"]  # nothing of its own was cut


def test_the_documents_serialise_as_json() -> None:
    """Cut values are valid text for the bulk body (no lone surrogate, no half character)."""
    big = "😀" * 20000
    docs = documents(outbound(11, rcpts=[f"{big}@x.example"], helo=big, reply=f"250 {big}"))
    json.dumps(docs, ensure_ascii=False).encode("utf-8")


# --------------------------------------------------------------------------- the mapping agrees


def _fields(properties: dict[str, Any], prefix: str = "") -> dict[str, dict[str, Any]]:
    out = {}
    for name, spec in properties.items():
        if "properties" in spec:
            out.update(_fields(spec["properties"], f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = spec
    return out


MAPPING = _fields(rendered_bodies("x", replicas=0, refresh_interval="1s", retention_days=1)
                  ["mappings"]["template"]["mappings"]["properties"])
#: Keyword fields the shipper writes from its own vocabulary (or the log's own layout), never a
#: peer's text; smtp.queue_id comes with the Postfix format (Postfix writes it).
OURS = {"event.dataset", "event.outcome", "smtp.verdict", "smtp.stage", "smtp.reason", "smtp.reply.code",
        "smtp.reply.enhanced", "smtp.direction", "smtp.session_id", "smtp.transcript_ref", "smtp.truncated",
        "log.file.path", "host.name", "smtp.queue_id"}


def test_every_string_field_of_the_mapping_is_bounded_or_ours() -> None:
    """A keyword or text field added to the mapping must be in limits.PEER_FIELDS (cut) or be
    written from the shipper's own vocabulary: this fails until someone decides which."""
    strings = {name for name, spec in MAPPING.items() if spec["type"] in ("keyword", "text")}
    assert set() == strings - set(limits.PEER_FIELDS) - {limits.TRANSCRIPT} - OURS


def test_every_peer_keyword_has_the_net_under_it() -> None:
    """ignore_above on each peer keyword and its sub-fields equals the largest field_bytes, so
    that a value the shipper cut is always indexed and any other never refuses a document."""
    for name in limits.PEER_FIELDS:
        spec = MAPPING.get(name)
        if spec is None:  # email.message_id: not mapped before the Postfix format
            continue
        keywords = [spec] if spec["type"] == "keyword" else []
        keywords += [sub for sub in spec.get("fields", {}).values() if sub["type"] == "keyword"]
        assert keywords, name
        for kw in keywords:
            assert kw.get("ignore_above", 1 << 31) <= MAX_FIELD_BYTES, name
        if spec["type"] == "keyword":
            assert all(MAX_FIELD_BYTES == kw["ignore_above"] for kw in keywords), name
    assert "keyword" == MAPPING["smtp.truncated"]["type"] == MAPPING["smtp.transcript_ref"]["type"]


def test_the_largest_settings_stay_within_opensearch() -> None:
    """The maxima of the checks are the numbers the mapping and OpenSearch impose."""
    assert 3 * MAX_FIELD_BYTES <= 32766  # UTF-8 bytes per UTF-16 unit, at most 3
    assert 1_000_000 == MAX_TRANSCRIPT_BYTES  # index.highlight.max_analyzed_offset's default


# --------------------------------------------------------------------------- trace


def test_trace_says_where_a_missing_transcript_was() -> None:
    """A document naming the holder of its transcript, which trace could not fetch (its index
    deleted by retention, or the holder dead-lettered), says so instead of "no transcript"."""
    from shipper.commands.trace import format_transcript

    doc = {"@timestamp": "2024-03-20T10:00:00.000Z", "smtp": {"verdict": "delivered", "session_id": "9",
                                                              "transcript_ref": "0123abcd"}}
    assert "(the transcript is in document 0123abcd of the same session, which was not found)" in format_transcript(doc)
    del doc["smtp"]["transcript_ref"]
    assert "(no transcript stored)" in format_transcript(doc)
