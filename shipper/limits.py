"""Sizes a peer controls, bounded: the documents of a finished session, cut to what OpenSearch
accepts and what is worth storing. Pure.

A remote server or client writes much of what a document holds (host names, addresses, ESMTP
extensions, the reply text, the transcript), and nothing makes it keep RFC 5321's limits
(§4.5.3.1: 256 octets for a path, 512 for a line). A line is cut at 64 KiB where it is read
(``shipper.lines``), but a multi-line reply joins as many lines as the peer sends, and a session
holds as many lines as it likes. Left alone, such values cost:

* a keyword term over 32,766 UTF-8 bytes makes OpenSearch refuse the whole document (Lucene's
  term limit): a peer could keep its sessions out of the index;
* a text field over 1,000,000 characters fails every search that highlights it
  (``index.highlight.max_analyzed_offset``; Discover highlights);
* the transcript belongs to the session, and each of its documents repeated it: a thousand
  recipients, a thousand copies.

``bound(docs, limits)`` takes the documents of one session, in order, and, in place:

* cuts each value of ``PEER_FIELDS`` to ``limits.field_bytes`` UTF-8 bytes, at a character
  boundary, ending in a marker with the original size and a hash of the whole value (two long
  values that share their start stay two values: the document id hashes the recipient);
  ``smtp.extensions`` keeps whole entries within that many bytes and sums up the rest in one;
* cuts the transcript to ``limits.transcript_bytes``: its start and its end are kept, each up to
  a line end when one is near, with a marker line where the middle was;
* writes the transcript in the session's first document, and in the next ones while the bytes
  written stay within ``limits.session_transcript_bytes`` (0: in the first only); the documents
  after that hold ``smtp.transcript_ref``, the id of the first document (``trace --transcript``
  fetches it from there);
* names what it cut in ``smtp.truncated``.

The common document is small and is only measured: ``len`` first (a character is at most four
bytes), ``str.isascii`` (constant time in CPython) next; a value is encoded only when it may be
over its limit.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from shipper.batching import document_id
from shipper.settings import LimitsSettings

#: Fields a peer fills, directly or through what it announces, and which are cut at
#: ``field_bytes``: keywords (their term must stay under Lucene's 32,766 bytes, ``.lowercase``
#: sub-fields included) and the reply text (a text field, but one per document, and repeated in
#: each). ``email.message_id``, ``smtp.detail`` (the mail server's explanation, which quotes
#: names and addresses a peer chose) and ``smtp.next_queue_id`` (read from a peer's reply) come
#: with the Postfix format. Every keyword and text field of
#: the mapping is either here or written from the shipper's own vocabulary
#: (tests/unit/test_limits.py checks the mapping against this list).
PEER_FIELDS = ("smtp.helo", "smtp.remote.host", "smtp.extensions", "smtp.reply.text",
               "email.from.address", "email.to.address", "smtp.recipient_domain", "email.message_id",
               "smtp.detail", "smtp.next_queue_id")
TRANSCRIPT = "smtp.transcript"
#: Room kept for the marker of a cut list (``…[cut: K more, N bytes, sha256 X]``), and for the
#: marker line of a cut transcript with its two line ends.
_MARK_ROOM = 64
_LINE_ROOM = 200


def bound(docs: list[dict[str, Any]], limits: LimitsSettings) -> list[dict[str, Any]]:
    """``docs`` (one session's, in order) with every size a peer controls bounded; see the
    module docstring. Changes the documents in place and returns the list.

    Each field of ``PEER_FIELDS`` is looked at where documents hold it, written out one by one
    rather than walked by dotted name, and only measured unless it is longer than ``quick``
    characters: this runs for every document (bench/docs_bench.py, step ``limits``)."""
    limit = limits.field_bytes
    quick = limit // 4  # a value of at most this many characters fits, whatever they are
    budget = limits.session_transcript_bytes
    spent = 0
    last: str | None = None  # the transcript of the document before (shared within a session)
    written, size, cut = "", 0, False
    carrier: dict[str, Any] | None = None  # the first document holding ``last``
    ref: str | None = None
    for doc in docs:
        names: list[str] | None = None
        smtp = doc["smtp"]
        if len(smtp.get("helo", "")) > quick:
            names = _cut(smtp, "helo", "smtp.helo", limit, names)
        remote = smtp.get("remote")
        if remote is not None and len(remote.get("host", "")) > quick:
            names = _cut(remote, "host", "smtp.remote.host", limit, names)
        extensions = smtp.get("extensions")
        if extensions is not None and sum(map(len, extensions)) > quick:
            kept = cut_list(extensions, limit)
            if kept is not None:
                smtp["extensions"] = kept
                names = [*(names or ()), "smtp.extensions"]
        reply = smtp.get("reply")
        if reply is not None and len(reply.get("text", "")) > quick:
            names = _cut(reply, "text", "smtp.reply.text", limit, names)
        if len(smtp.get("recipient_domain", "")) > quick:
            names = _cut(smtp, "recipient_domain", "smtp.recipient_domain", limit, names)
        if len(smtp.get("detail", "")) > quick:
            names = _cut(smtp, "detail", "smtp.detail", limit, names)
        if len(smtp.get("next_queue_id", "")) > quick:
            names = _cut(smtp, "next_queue_id", "smtp.next_queue_id", limit, names)
        email = doc.get("email")
        if email is not None:
            holder = email.get("from")
            if holder is not None and len(holder.get("address", "")) > quick:
                names = _cut(holder, "address", "email.from.address", limit, names)
            holder = email.get("to")
            if holder is not None and len(holder.get("address", "")) > quick:
                names = _cut(holder, "address", "email.to.address", limit, names)
            if len(email.get("message_id", "")) > quick:
                names = _cut(email, "message_id", "email.message_id", limit, names)
        transcript = smtp.get("transcript")
        if transcript is not None:
            if transcript is not last:
                last, carrier, ref = transcript, None, None
                written, cut = bound_transcript(transcript, limits.transcript_bytes)
                size = utf8_len(written)
            if carrier is None or spent + size <= budget:
                spent += size
                if cut:
                    smtp["transcript"] = written
                    names = [*(names or ()), TRANSCRIPT]
                if carrier is None:
                    carrier = doc
            else:
                del smtp["transcript"]
                if ref is None:
                    ref = document_id(carrier)
                smtp["transcript_ref"] = ref
        if names:
            smtp["truncated"] = names
    return docs


def utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def fits(text: str, limit: int) -> bool:
    """``text`` is at most ``limit`` UTF-8 bytes (encoded only when it cannot be told cheaper)."""
    n = len(text)
    return n <= limit // 4 or (n <= limit and (text.isascii() or utf8_len(text) <= limit))


def cut_value(text: str, limit: int) -> str:
    """``text`` if it fits in ``limit`` UTF-8 bytes; else its start, cut at a character
    boundary, and ``…[cut: N bytes, sha256 X]`` (N the whole value's size, X its first 16 hex
    digits), ``limit`` bytes at most."""
    if fits(text, limit):
        return text
    data = text.encode("utf-8", "surrogatepass")
    mark = f"…[cut: {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()[:16]}]"
    return _head(data, limit - utf8_len(mark)).decode("utf-8", "surrogatepass") + mark


def cut_list(values: Sequence[str], limit: int) -> list[str] | None:
    """None if the values fit in ``limit`` UTF-8 bytes together; else the first ones that do,
    within ``limit`` less the room for one last entry that sums up the rest:
    ``…[cut: K more, N bytes, sha256 X]``."""
    if sum(map(len, values)) <= limit // 4 or sum(map(utf8_len, values)) <= limit:
        return None
    room, used, kept = limit - _MARK_ROOM, 0, []
    for value in values:
        n = utf8_len(value)
        if used + n > room:
            break
        kept.append(value)
        used += n
    rest = "\n".join(values[len(kept):]).encode("utf-8", "surrogatepass")
    more = len(values) - len(kept)
    kept.append(f"…[cut: {more} more, {len(rest)} bytes, sha256 {hashlib.sha256(rest).hexdigest()[:16]}]")
    return kept


def bound_transcript(text: str, limit: int) -> tuple[str, bool]:
    """(the transcript within ``limit`` UTF-8 bytes, whether it was cut). A cut transcript keeps
    its start and its end, about half of ``limit`` each, with a marker line in between::

        [smtp-shipper: 1835209 bytes (24871 lines) cut here; the transcript was 2097152 bytes, limits.transcript_bytes is 262144]

    Each half ends (starts) at a line end when there is one in its last (first) half, else at a
    character boundary: a transcript of a few huge lines is cut inside one."""
    if fits(text, limit):
        return text, False
    data = text.encode("utf-8", "surrogatepass")
    half = (limit - _LINE_ROOM) // 2
    end = data.rfind(b"\n", half // 2, half + 1)
    head = data[:end] if end >= 0 else _head(data, half)
    start = data.find(b"\n", len(data) - half - 1, len(data) - half // 2)
    tail = data[start + 1:] if start >= 0 else _tail(data, half)
    gone = data[len(head):len(data) - len(tail)]
    # the lines cut, wholly or partly: a line end that starts or ends the gap parts no line
    lines = gone.count(b"\n") + 1 - gone.startswith(b"\n") - gone.endswith(b"\n")
    line = (f"[smtp-shipper: {len(gone)} bytes ({lines} lines) cut here; the transcript was "
            f"{len(data)} bytes, limits.transcript_bytes is {limit}]")
    joined = head + b"\n" + line.encode() + b"\n" + tail
    return joined.decode("utf-8", "surrogatepass"), True


def _head(data: bytes, n: int) -> bytes:
    """The first ``n`` bytes or fewer, not ending inside a character: the byte after the cut
    must not be a continuation byte (0b10xxxxxx)."""
    while n > 0 and (data[n] & 0xC0) == 0x80:
        n -= 1
    return data[:n]


def _tail(data: bytes, n: int) -> bytes:
    """The last ``n`` bytes or fewer, not starting inside a character."""
    start = len(data) - n
    while start < len(data) and (data[start] & 0xC0) == 0x80:
        start += 1
    return data[start:]


def _cut(holder: dict[str, Any], key: str, name: str, limit: int, names: list[str] | None) -> list[str] | None:
    """Cuts ``holder[key]`` if it is over ``limit`` bytes; ``names`` with ``name`` added if so."""
    value = holder[key]
    if fits(value, limit):
        return names
    holder[key] = cut_value(value, limit)
    return [*(names or ()), name]
