"""shipper.terminal: text a remote peer wrote never drives the terminal, and JSON stays exact.

A hostile SMTP peer controls reply texts, HELO names, addresses and the transcript; what the
shipper prints of them (trace, status, defects, errors, log lines) goes through ``printable``.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import socket

import pytest

from shipper import systemd
from shipper.terminal import PrintableFormatter, json_line, printable

# What an attacker would send: OSC (set the window title), CSI as ESC [ and as the C1 byte,
# BEL, DEL, a bidi override, NUL, a carriage return, NEL and the line separator (fake lines).
HOSTILE = "\x1b]0;pwned\x07\x1b[2J\x9b31m\x7f\u202eevil\x00\r\x85\u2028"


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("\x1b]0;pwned\x07", "\\x1b]0;pwned\\x07"),
        ("\x9b2J", "\\x9b2J"),
        ("a\x7fb", "a\\x7fb"),
        ("\u202ecod.exe", "\\u202ecod.exe"),
        ("x\x00y\r\n\t", "x\\x00y\\r\\n\\t"),
        ("NEL\x85LS\u2028PS\u2029", "NEL\\x85LS\\u2028PS\\u2029"),
        ("tag\U000e0041", "tag\\U000e0041"),
    ],
)
def test_control_characters_are_shown_as_escapes(text: str, shown: str) -> None:
    """C0, C1, DEL, format and separator characters become visible escapes."""
    assert shown == printable(text)


@pytest.mark.parametrize("text", ["plain 550 5.1.1 user unknown", "Jürgen Müller", "café", "日本語のメール", "😀", "a\\x1b"])
def test_printable_text_is_left_as_it_is(text: str) -> None:
    """Letters of any script, emoji and backslashes are not touched."""
    assert text == printable(text)


def test_newlines_kept_only_when_asked() -> None:
    """A transcript keeps its line breaks; a table cell does not."""
    assert "S <-- EHLO \\x1b[31mx\nC --> 250 ok" == printable("S <-- EHLO \x1b[31mx\nC --> 250 ok", keep_newlines=True)
    assert "a\\nb" == printable("a\nb")


def test_json_line_is_exact_and_safe_for_a_terminal() -> None:
    """json_line decodes to the very same data, shows non-ASCII letters as they are, and has
    no character a terminal would act on (json.dumps leaves DEL and C1 raw)."""
    doc = {"smtp": {"reply": {"text": HOSTILE + " Müller \U000e0041"}, "helo": "日本"}, "n": [1, 2.5, None, True]}
    line = json_line(doc)
    assert doc == json.loads(line)
    assert line.isprintable()
    assert "Müller" in line and "日本" in line
    assert not json.dumps(doc, ensure_ascii=False).isprintable()  # what json_line is for


def test_log_lines_are_printable_and_cannot_be_forged() -> None:
    """A peer's text in a log message is escaped, under systemd and on a terminal alike: no
    terminal sequence, and no line break the journal would take for a new line (str.splitlines
    breaks at NEL and LS too); a traceback keeps its lines."""
    for env in ({"JOURNAL_STREAM": "8:1"}, {}):
        out = emit(env, "bulk refused: %s", "x\x85<0>forged\x1b[2J")
        assert 1 == len(out.splitlines()), out
        assert "x\\x85<0>forged\\x1b[2J" in out
    formatter = PrintableFormatter("%(message)s")
    try:
        raise ValueError("boom")
    except ValueError as exc:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed \x1b", None, (type(exc), exc, exc.__traceback__))
    text = formatter.format(record)
    assert text.startswith("failed \\x1b\nTraceback (most recent call last):\n")


def test_systemd_status_line_is_printable(tmp_path) -> None:
    """STATUS= (shown by systemctl status) carries the last error: escaped too."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify")
    sock.bind(path)
    sock.settimeout(2)
    try:
        notifier = systemd.Notifier({"NOTIFY_SOCKET": path})
        assert notifier.status("last error \x1b]0;x\x07")
        assert b"STATUS=last error \\x1b]0;x\\x07" == sock.recv(200)
        notifier.close()
    finally:
        sock.close()


def emit(env: dict[str, str], msg: str, *args: object) -> str:
    buf = io.StringIO()
    root = logging.getLogger()
    old_handlers, old_level = list(root.handlers), root.level
    try:
        systemd.setup_logging("debug", env=env, stream=buf)
        logging.getLogger("shipper.x").warning(msg, *args)
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in old_handlers:
            root.addHandler(h)
        root.setLevel(old_level)
    return buf.getvalue()



def test_status_shows_the_last_error_escaped() -> None:
    """`status` prints the daemon's last error, which can quote OpenSearch quoting a document
    (a peer's value): escaped, like every line it prints."""
    from shipper.commands.status import format_status

    now = dt.datetime.now(dt.UTC).isoformat()
    status = {
        "pid": 1, "updated": now, "docs_per_min": 0, "lag_seconds": 0.0, "buffered_bytes": 0,
        "max_buffered_bytes_seen": 0, "max_buffered_bytes": 1, "in_flight_documents": 0,
        "last_error": "bulk: 1 documents refused (mapper_parsing_exception: value [\x1b]0;x\x07])",
        "last_error_time": now, "counters": {},
        "files": [{"path": "/var/log/x.log", "state": "following", "position": 0, "size": 0, "lag_bytes": 0,
                   "sessions_open": 0, "defects": 0, "last_shipped": None}],
    }
    text = format_status(status)
    assert "value [\\x1b]0;x\\x07]" in text
    assert all(line.isprintable() for line in text.splitlines())
