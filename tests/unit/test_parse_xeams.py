"""The Xeams format: lines → Records and Defects (shipper.formats.xeams)."""

from __future__ import annotations

import pytest

from shipper import formats
from shipper.model import Defect, Direction, Kind, Record, Side

PREFIX = "2024-03-21 11:39:49,170 - [   7054286] "


def parse_all(payload: str | bytes, prefix: str = PREFIX) -> tuple[list[Record], list[Defect]]:
    """The records and defects of one line at offset 42 of x.log."""
    raw = payload if isinstance(payload, bytes) else (prefix + payload).encode()
    return formats.get("xeams").parse_block(raw + b"\n", 42, "x.log")


def parse(payload: str | bytes, prefix: str = PREFIX) -> Record | Defect:
    """The record of one line, or its defect when it gives none."""
    records, defects = parse_all(payload, prefix)
    return records[0] if records else defects[0]


@pytest.mark.parametrize(
    ("payload", "kind", "side", "protocol"),
    [
        ("S <-- EHLO mail.synametrics.com", Kind.PROTOCOL, Side.LOCAL, "EHLO mail.synametrics.com"),
        ("C --> 250-SIZE 157286400", Kind.PROTOCOL, Side.PEER, "250-SIZE 157286400"),
        ("C --> 250 SMTPUTF8", Kind.PROTOCOL, Side.PEER, "250 SMTPUTF8"),
        ("C --> 250", Kind.PROTOCOL, Side.PEER, "250"),
        # the tag says who wrote it, whatever it looks like
        ("C --> EHLO client.example", Kind.PROTOCOL, Side.PEER, "EHLO client.example"),
        ("S <-- 550 5.1.1 unknown", Kind.PROTOCOL, Side.LOCAL, "550 5.1.1 unknown"),
        ("S <-- 2500 bytes", Kind.PROTOCOL, Side.LOCAL, "2500 bytes"),
        ("S <-- dXNlcm5hbWU=", Kind.PROTOCOL, Side.LOCAL, "dXNlcm5hbWU="),
        ("~~~~~~~~~~~~ Connection Terminated ( 842)", Kind.END, None,
         "~~~~~~~~~~~~ Connection Terminated ( 842)"),
        ("QUIT", Kind.PROTOCOL, None, "QUIT"),  # untagged, but an SMTP verb: the writer is unknown
        ("250 2.0.0 OK", Kind.PROTOCOL, None, "250 2.0.0 OK"),  # untagged, but a reply code
        ("Resolving MX for gmail.com", Kind.NOTE, None, "Resolving MX for gmail.com"),
    ],
)
def test_payload_kinds(payload: str, kind: Kind, side: Side | None, protocol: str) -> None:
    """The tag says who wrote a line of the dialogue; untagged lines are the dialogue by their
    first word, connection and termination lines by their markers, notes otherwise."""
    ev = parse(payload)
    assert isinstance(ev, Record)
    assert (kind, side, protocol) == (ev.kind, ev.side, ev.payload)
    assert ("2024-03-21 11:39:49,170", "7054286", 42) == (ev.timestamp, ev.session_id, ev.offset)


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
    assert isinstance(ev, Record) and ev.connect is not None
    assert (Kind.CONNECT, peer, secure, out) == (ev.kind, ev.connect.peer, ev.connect.secure,
                                                 ev.connect.outbound)


def test_crlf_is_stripped_and_not_a_defect() -> None:
    """A CRLF file parses like an LF file."""
    records, defects = parse_all((PREFIX + "C --> 250 OK\r").encode())
    assert ("250 OK", []) == (records[0].payload, defects)
    assert not records[0].text.endswith("\r")


def test_invalid_utf8_is_kept_with_replacement_and_flagged() -> None:
    """Latin-1 bytes survive as U+FFFD in text; a defect at the same line says why it is not clean."""
    (ev,), (defect,) = parse_all((PREFIX + "C --> 550 5.1.1 h").encode() + b"\xe9l\xe8ne unknown")
    assert "550 5.1.1 h\ufffdl\ufffdne unknown" == ev.payload
    assert "UTF-8" in defect.reason and (42, "7054286") == (defect.offset, defect.session_id)


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
