"""Text bound for a terminal or a log: what a remote peer wrote, made safe to show.

Half of what smtp-shipper prints was written by a remote SMTP peer: reply texts, HELO names,
addresses, whole transcripts. Printed raw, an ESC or CSI sequence from a hostile peer drives the
operator's terminal (sets the window title, moves the cursor, rewrites or hides lines, on some
terminals answers back), and a carriage return or a line separator forges a log line.
``printable`` shows every such character as an escape (``\\x1b``, ``\\x9b``, ``\\x7f``,
``\\u202e``) and leaves every printable character, letters of any script included, as it is.
``json_line`` does the same for JSON output, where the escapes are JSON's own: the text still
decodes to exactly the same data.
"""

from __future__ import annotations

import json
import logging

_SHORT = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape(ch: str) -> str:
    code = ord(ch)
    if ch in _SHORT:
        return _SHORT[ch]
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def printable(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` with each character that is not printable (``str.isprintable``: C0 and C1
    controls, DEL, format characters such as bidi overrides, line and paragraph separators,
    unassigned code points) written as a visible escape; ``keep_newlines`` keeps ``\\n`` as a
    line break (a transcript, a multi-line message). Backslashes are left alone: this is for
    reading, ``--json`` is for exact data."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() or (keep_newlines and ch == "\n") else _escape(ch) for ch in text)


def _json_escape(ch: str) -> str:
    code = ord(ch)
    if code < 0x10000:
        return f"\\u{code:04x}"
    code -= 0x10000  # JSON writes a code point beyond the BMP as a UTF-16 surrogate pair
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def json_line(value: object) -> str:
    """``value`` as one line of JSON that decodes to exactly ``value``, with non-ASCII letters
    as they are but every non-printable character as a ``\\uXXXX`` escape (``json.dumps``
    escapes only C0 controls; DEL, C1 controls and the rest would reach the terminal raw)."""
    text = json.dumps(value, ensure_ascii=False)
    if text.isprintable():
        return text
    # Outside strings json.dumps writes only printable ASCII, so every character here is inside one.
    return "".join(ch if ch.isprintable() else _json_escape(ch) for ch in text)


class PrintableFormatter(logging.Formatter):
    """A log formatter whose lines are ``printable`` (line breaks of multi-line messages and
    tracebacks kept): peer text in a log message can neither drive a terminal nor forge a line."""

    def format(self, record: logging.LogRecord) -> str:
        return printable(super().format(record), keep_newlines=True)
