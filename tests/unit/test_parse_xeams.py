"""The Xeams format: one raw line → one Event or one Defect (shipper.formats.xeams)."""

from __future__ import annotations

import pytest

from shipper import formats
from shipper.model import Defect, Direction, Event, EventKind

PREFIX = "2024-03-21 11:39:49,170 - [   7054286] "


def parse(payload: str | bytes, prefix: str = PREFIX) -> Event | Defect:
    raw = payload if isinstance(payload, bytes) else (prefix + payload).encode()
    return formats.get("xeams").parse_line(raw, 42, "x.log")


@pytest.mark.parametrize(
    ("payload", "kind", "protocol"),
    [
        ("S <-- EHLO mail.synametrics.com", EventKind.COMMAND, "EHLO mail.synametrics.com"),
        ("C --> 250-SIZE 157286400", EventKind.REPLY, "250-SIZE 157286400"),
        ("C --> 250 SMTPUTF8", EventKind.REPLY, "250 SMTPUTF8"),
        ("C --> 250", EventKind.REPLY, "250"),
        # the letters are not trusted: content decides
        ("C --> EHLO client.example", EventKind.COMMAND, "EHLO client.example"),
        ("S <-- 550 5.1.1 unknown", EventKind.REPLY, "550 5.1.1 unknown"),
        ("S <-- 2500 bytes", EventKind.COMMAND, "2500 bytes"),
        ("S <-- dXNlcm5hbWU=", EventKind.COMMAND, "dXNlcm5hbWU="),
        ("~~~~~~~~~~~~ Connection Terminated ( 842)", EventKind.TERMINATE,
         "~~~~~~~~~~~~ Connection Terminated ( 842)"),
        ("QUIT", EventKind.COMMAND, "QUIT"),  # untagged, but an SMTP verb
        ("Resolving MX for gmail.com", EventKind.OTHER, "Resolving MX for gmail.com"),
    ],
)
def test_payload_kinds(payload: str, kind: EventKind, protocol: str) -> None:
    """A payload matching ^\\d{3}([ -]|$) is a reply line; anything else tagged is a command."""
    ev = parse(payload)
    assert isinstance(ev, Event)
    assert (kind, protocol) == (ev.kind, ev.payload)
    assert ("2024-03-21 11:39:49,170", "7054286", 42, "x.log") == (
        ev.timestamp, ev.session_id, ev.offset, ev.path)


@pytest.mark.parametrize(
    ("payload", "peer", "secure", "out"),
    [
        ("************ New (secure) connection to: 142.251.171.26", "142.251.171.26", True, True),
        ("************ New connection from: 2001:db8::7", "2001:db8::7", False, False),
        ("************ New connection to: mx.example.com/203.0.113.5",
         "mx.example.com/203.0.113.5", False, True),
    ],
)
def test_connection_lines(payload: str, peer: str, secure: bool, out: bool) -> None:
    """Connection lines carry the peer, whether it was secure, and who connected to whom."""
    ev = parse(payload)
    assert isinstance(ev, Event)
    assert (EventKind.CONNECT, peer, secure, out) == (ev.kind, ev.peer, ev.secure, ev.connected_out)


def test_crlf_is_stripped_and_not_a_defect() -> None:
    """A CRLF file parses like an LF file."""
    ev = parse((PREFIX + "C --> 250 OK\r").encode())
    assert isinstance(ev, Event)
    assert ("250 OK", None) == (ev.payload, ev.defect)
    assert not ev.text.endswith("\r")


def test_invalid_utf8_is_kept_with_replacement_and_flagged() -> None:
    """Latin-1 bytes survive as U+FFFD in text; the event says why it is not clean."""
    ev = parse((PREFIX + "C --> 550 5.1.1 h").encode() + b"\xe9l\xe8ne unknown")
    assert isinstance(ev, Event)
    assert "550 5.1.1 h\ufffdl\ufffdne unknown" == ev.payload
    assert ev.defect is not None and "UTF-8" in ev.defect
    assert ev.raw.endswith(b"\xe9l\xe8ne unknown")


@pytest.mark.parametrize(
    ("raw", "reason", "sid"),
    [
        (b"java.net.SocketException: Connection reset", "matches no Xeams layout", None),
        (b"2024-03-21 11:39:49,1 - [   7054286] S <-- NOOP", "matches no Xeams layout", "7054286"),
        (b"2024-02-30 11:39:49,100 - [  12] C --> 250 OK", "impossible date 2024-02-30", "12"),
        (b"2024-13-01 11:39:49,100 - [  12] C --> 250 OK", "matches no Xeams layout", "12"),
    ],
)
def test_unparseable_lines_are_defects(raw: bytes, reason: str, sid: str | None) -> None:
    """A line that is not Xeams is a Defect naming file, offset, reason and session if known."""
    d = parse(raw)
    assert isinstance(d, Defect)
    assert ("x.log", 42, sid) == (d.path, d.offset, d.session_id)
    assert reason in d.reason
    assert d.excerpt == raw.decode()


def test_defect_excerpt_is_cut_and_masks_auth() -> None:
    """A broken AUTH line never leaks its credential through a warning, and long lines are cut."""
    d = parse(b"garbage S <-- AUTH PLAIN AHVzZXIAc2VjcmV0 " + b"x" * 500)
    assert isinstance(d, Defect)
    assert "AHVzZXIAc2VjcmV0" not in d.excerpt
    assert "AUTH PLAIN [redacted]" in d.excerpt
    assert len(d.excerpt) <= formats.EXCERPT_CHARS + 1


@pytest.mark.parametrize(
    ("path", "direction"),
    [
        ("/opt/Xeams/logs/SMTPOutboundConversation.log", Direction.OUTBOUND),
        ("SMTPOutboundConversation.2024-03-20.log.gz", Direction.OUTBOUND),
        ("logs/SMTPConversation.log", Direction.INBOUND),
        ("SMTPProxyConversation.2024-03-19.log", Direction.INBOUND),
        ("capture.log", None),
        ("-", None),
    ],
)
def test_direction_from_file_name(path: str, direction: Direction | None) -> None:
    """The Xeams file names say which side wrote the log."""
    assert direction == formats.get("xeams").direction_from_name(path)


def test_unknown_format_names_the_known_ones() -> None:
    """The registry rejects an unknown format with the list of known ones."""
    with pytest.raises(KeyError, match="xeams"):
        formats.get("exchange-csv")
    assert "xeams" in formats.names()
