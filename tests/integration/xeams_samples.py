"""Small Xeams outbound transcripts written by tests (the real seed plus made-up variations)."""

from __future__ import annotations

SEED = """\
2024-03-21 11:39:49,056 - [   7054286] ************ New (secure) connection to: 142.251.171.26
2024-03-21 11:39:49,056 - [   7054286] S <-- EHLO mail.synametrics.com
2024-03-21 11:39:49,170 - [   7054286] C --> 250-mx.google.com at your service, [162.255.85.54]
2024-03-21 11:39:49,170 - [   7054286] C --> 250 SMTPUTF8
2024-03-21 11:39:49,170 - [   7054286] S <-- MAIL FROM:<support@synametrics.com>
2024-03-21 11:39:49,194 - [   7054286] C --> 250 2.1.0 OK e9e14a558f8ab-36cb9d1c563si112041335ab.14 - gsmtp
2024-03-21 11:39:49,194 - [   7054286] S <-- RCPT TO:<synametrics@gmail.com>
2024-03-21 11:39:49,325 - [   7054286] C --> 250 2.1.5 OK e9e14a558f8ab-36cb9d1c563si112041335ab.14 - gsmtp
2024-03-21 11:39:49,325 - [   7054286] S <-- DATA
2024-03-21 11:39:49,350 - [   7054286] C --> 354  Go ahead e9e14a558f8ab-36cb9d1c563si112041335ab.14 - gsmtp
2024-03-21 11:39:49,869 - [   7054286] C --> 250 2.0.0 OK  1716305989 e9e14a558f8ab-36cb9d1c563si112041335ab.14 - gsmtp
2024-03-21 11:39:49,873 - [   7054286] S <-- QUIT
2024-03-21 11:39:49,898 - [   7054286] C --> 221 2.0.0 closing connection e9e14a558f8ab-36cb9d1c563si112041335ab.14 - gsmtp
2024-03-21 11:39:49,898 - [   7054286] ~~~~~~~~~~~~ Connection Terminated ( 842)
"""


def session(sid: int, when: str, rcpt: str, rcpt_reply: str, *, sender: str = "support@synametrics.com",
            ip: str = "203.0.113.7") -> str:
    """One outbound session: delivered when ``rcpt_reply`` is 2xx, else QUIT after the RCPT reply."""
    t = f"{when},100 - [{sid:>10}]"
    lines = [
        f"{t} ************ New (secure) connection to: {ip}",
        f"{t} S <-- EHLO mail.synametrics.com",
        f"{t} C --> 250 mx.example at your service",
        f"{t} S <-- MAIL FROM:<{sender}>",
        f"{t} C --> 250 2.1.0 OK",
        f"{t} S <-- RCPT TO:<{rcpt}>",
        f"{t} C --> {rcpt_reply}",
    ]
    if rcpt_reply.startswith("2"):
        lines += [f"{t} S <-- DATA", f"{t} C --> 354 Go ahead", f"{t} C --> 250 2.0.0 OK queued as {sid}"]
    lines += [f"{t} S <-- QUIT", f"{t} C --> 221 2.0.0 bye", f"{t} ~~~~~~~~~~~~ Connection Terminated ( 1)"]
    return "\n".join(lines) + "\n"


def mixed_log() -> str:
    """Bob: delivered (oldest), rejected, deferred (newest); Alice: delivered."""
    return "".join([
        SEED,
        session(8000001, "2024-03-22 09:00:00", "bob@example.com", "250 2.1.5 OK"),
        session(8000002, "2024-03-22 10:00:00", "Bob@Example.com", "550 5.1.1 <bob@example.com>: Recipient address rejected: User unknown in virtual mailbox table"),
        session(8000003, "2024-03-22 11:00:00", "bob@example.com", "451 4.7.1 Greylisted, try again later"),
        session(8000004, "2024-03-22 12:00:00", "alice@example.org", "250 2.1.5 OK"),
    ])
