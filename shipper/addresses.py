"""Addresses and peers as SMTP and logs write them. Pure.

``mail_address`` reads the address of ``MAIL FROM:<a>`` / ``RCPT TO:<a>`` (RFC 5321 §4.1.2),
``peer`` the address and name of a connection line's peer, ``first_word`` a server's name in
its greeting or EHLO reply.
"""

from __future__ import annotations

import functools
import ipaddress
import re

_ADDRESS = re.compile(r"(?:FROM|TO)\s*:\s*", re.IGNORECASE)
# An IPv4 address in the form ``str(ipaddress.ip_address(...))`` gives (no leading zeros): such
# a peer is its own address, without parsing it.
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_DOTTED_QUAD = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")


@functools.lru_cache(maxsize=1024)  # senders repeat (MAIL FROM of the same few addresses all day)
def mail_address(payload: str) -> str | None:
    """The address of ``MAIL FROM:<a>`` / ``RCPT TO:<a>`` (parameters dropped, domain
    lower-cased, source route removed); ``""`` for the null sender ``<>``; None when the
    command names none."""
    m = _ADDRESS.search(payload, 4)
    if m is None:
        return None
    rest = payload[m.end():].strip()
    if rest.startswith("<"):
        addr = rest[1:_closing_bracket(rest)].strip()
    else:
        addr = rest.split(None, 1)[0] if rest else ""
    if addr.startswith("@") and ":" in addr:  # RFC 5321 §4.1.2 source route: <@a,@b:user@d>
        addr = addr.split(":", 1)[1]
    local, at, domain = addr.rpartition("@")  # the last @: a quoted local part may hold one
    return f"{local}@{domain.lower()}" if at else addr


def _closing_bracket(rest: str) -> int:
    if '"' not in rest:  # no quoted local part: the first ">" (or none)
        end = rest.find(">", 1)
        return end if end >= 0 else len(rest)
    quoted = False
    for i, ch in enumerate(rest[1:], 1):
        if ch == '"':
            quoted = not quoted
        elif ch == ">" and not quoted:
            return i
    return len(rest)


@functools.lru_cache(maxsize=4096)  # peers repeat (the same MX hosts all day)
def peer(logged: str | None) -> tuple[str | None, str | None]:
    """(ip, host) from a connection line's peer: ``1.2.3.4``, ``2001:db8::1``,
    ``[2001:db8::1]``, ``1.2.3.4:25``, ``mx.example.com/1.2.3.4``, ``mx.example.com [1.2.3.4]``."""
    if not logged:
        return None, None
    if _DOTTED_QUAD.fullmatch(logged):  # the usual case, already as ipaddress would write it
        return logged, None
    host = None
    candidates = [logged]
    for sep in ("/", " "):
        if sep in logged:
            name, _, addr = logged.partition(sep)
            candidates.append(addr.strip())
            host = name.strip() or None
    for cand in candidates:
        cand = cand.strip("[]() ")
        for attempt in (cand, cand.rsplit(":", 1)[0].strip("[]")):
            try:
                return str(ipaddress.ip_address(attempt)), host
            except ValueError:
                continue
    return None, logged


def first_word(text: str) -> str | None:
    """The first word of a reply's text (a server names itself there), without punctuation."""
    word = text.strip().split(" ", 1)[0].strip(",;")
    return word or None
