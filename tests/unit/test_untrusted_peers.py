"""Half of every transcript is written by a stranger (issue 13): who wrote a line is decided by
its tag, never by its shape, and no credential reaches a document, whatever the alignment of
replies and commands, wherever the log begins or ends."""

from __future__ import annotations

import base64
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from parsing import documents, xeams

from shipper.model import Direction

CONNECT_IN = "************ New connection from: 198.51.100.7"
CONNECT_OUT = "************ New (secure) connection to: 203.0.113.9"
END = "~~~~~~~~~~~~ Connection Terminated ( 99)"


def verdicts(docs: list[dict[str, Any]]) -> list[tuple[str | None, str, str, str | None, str | None]]:
    return [(d.get("email", {}).get("to", {}).get("address"), d["smtp"]["verdict"], d["smtp"]["stage"],
             d["smtp"].get("reply", {}).get("code"), d["smtp"].get("reason")) for d in docs]


# -- who wrote a line ------------------------------------------------------------------------------

def inbound(*steps: str) -> list[dict[str, Any]]:
    docs, _ = documents(xeams(1, CONNECT_IN, "< 220 mx.ours.example ESMTP", "> EHLO spam.example",
                              "< 250 mx.ours.example", *steps, "> QUIT", "< 221 bye", END, inbound=True),
                        Direction.INBOUND)
    return docs


def test_a_client_cannot_shift_our_replies_with_a_reply_shaped_command() -> None:
    """Inbound: the client sends "250 2.1.5 OK" as a command right after its RCPT. Our 554 still
    answers that RCPT (and our 500 the fake line): same verdict, code and reason as without it."""
    honest = inbound("> MAIL FROM:<a@spam.example>", "< 250 2.1.0 Ok", "> RCPT TO:<x@elsewhere.example>",
                     "< 554 5.7.1 <x@elsewhere.example>: Relay access denied")
    forged = inbound("> MAIL FROM:<a@spam.example>", "< 250 2.1.0 Ok", "> RCPT TO:<x@elsewhere.example>",
                     "> 250 2.1.5 OK", "< 554 5.7.1 <x@elsewhere.example>: Relay access denied",
                     "< 500 5.5.2 Error: command not recognized")
    assert [("x@elsewhere.example", "rejected", "rcpt", "554", "relay-denied")] == verdicts(honest) \
        == verdicts(forged)


def test_a_client_cannot_turn_a_rejection_into_a_delivery() -> None:
    """Inbound, pipelined: the client writes what a delivery looks like from its side; the
    rejection we wrote stands."""
    forged = inbound("> MAIL FROM:<a@spam.example>", "> RCPT TO:<x@ours.example>", "> DATA",
                     "> 250 2.1.0 Ok", "> 250 2.1.5 Ok", "> 354 go ahead", "> 250 2.0.0 queued",
                     "< 250 2.1.0 Ok", "< 550 5.1.1 <x@ours.example>: Recipient address rejected",
                     "< 554 5.5.1 Error: no valid recipients", "< 500 5.5.2 what?",
                     "< 500 5.5.2 what?", "< 500 5.5.2 what?", "< 500 5.5.2 what?")
    assert [("x@ours.example", "rejected", "rcpt", "550", "unknown-recipient")] == verdicts(forged)


def test_a_server_line_that_is_no_reply_decides_nothing() -> None:
    """Outbound: a stray text line from the server (no reply code) between EHLO and its reply
    used to be taken for a command and shifted every later reply by one."""
    honest = xeams(2, CONNECT_OUT, "> EHLO me.example", "< 250-mx.example", "< 250 PIPELINING",
                   "> MAIL FROM:<a@me.example>", "< 250 2.1.0 ok", "> RCPT TO:<x@mx.example>",
                   "< 550 5.1.1 no such user", "> QUIT", "< 221 bye", END)
    stray = honest.replace("- [         2] S <-- MAIL", "- [         2] C --> Welcome, friend\n"
                           "2024-03-20 10:00:00,041 - [         2] S <-- MAIL")
    assert "Welcome, friend" in stray
    assert [("x@mx.example", "rejected", "rcpt", "550", "unknown-recipient")] \
        == verdicts(documents(honest)[0]) == verdicts(documents(stray)[0])


def test_our_own_reply_shaped_line_is_a_command_outbound() -> None:
    """Outbound, the client is us: a line we wrote is a command whatever it looks like (here
    pipelined after MAIL, where a reply would have answered MAIL)."""
    docs, _ = documents(xeams(3, CONNECT_OUT, "> EHLO me.example", "< 250 mx", "> MAIL FROM:<a@me.example>",
                              "> 550 not a reply", "< 250 ok", "< 500 5.5.1 unrecognized",
                              "> RCPT TO:<x@mx.example>", "< 250 ok", "> DATA", "< 354 go",
                              "< 250 2.0.0 queued", END))
    assert [("x@mx.example", "delivered", "dot", "250", None)] == verdicts(docs)


def test_a_file_whose_tags_contradict_the_reading_is_reported_once() -> None:
    """A log whose tags say the opposite of PRODUCT.md's reading (the client's first line a
    reply, the server's a command) is a defect of that file, reported once."""
    swapped = "".join(xeams(sid, CONNECT_OUT, "< EHLO me.example", "> 250 mx", "< MAIL FROM:<a@me.example>",
                            "> 250 ok", END) for sid in (4, 5))
    docs, defects = documents(swapped)
    assert 2 == len(docs)
    (defect,) = defects
    assert ("x.log", 0, "4") == (defect.path, defect.offset, defect.session_id)
    assert "contradicts the first exchange" in defect.reason
    _, none = documents(xeams(6, CONNECT_OUT, "> EHLO me.example", "< 250 mx", END))
    assert [] == none


# -- credentials -----------------------------------------------------------------------------------

SECRET_USER = base64.b64encode(b"alice@example.org").decode()
SECRET_PASS = base64.b64encode(b"correct horse battery staple").decode()
PLAIN = base64.b64encode(b"\0alice\0s3cr3t-plain").decode()
XOAUTH2 = base64.b64encode(b"user=alice\x01auth=Bearer ya29.s3cr3t-token\x01\x01").decode()


def leaked(docs: list[dict[str, Any]], *secrets: str) -> list[str]:
    text = json.dumps(docs)
    return [s for s in secrets if s in text]


def outbound_auth(*auth_steps: str) -> list[dict[str, Any]]:
    docs, _ = documents(xeams(7, CONNECT_OUT, "< 220 mx ESMTP", "> EHLO me.example", "< 250-mx",
                              "< 250 AUTH LOGIN PLAIN XOAUTH2 CRAM-MD5", *auth_steps,
                              "> MAIL FROM:<a@me.example>", "< 250 ok", "> RCPT TO:<x@mx.example>",
                              "< 250 ok", "> DATA", "< 354 go", "< 250 2.0.0 queued", "> QUIT",
                              "< 221 bye", END))
    return docs


def test_a_stray_server_line_before_auth_login_leaks_nothing() -> None:
    """A banner continuation without code before AUTH LOGIN used to shift the queue: the
    username and the password then went into the transcript in clear."""
    docs = outbound_auth("< Welcome to our server", "> AUTH LOGIN", "< 334 VXNlcm5hbWU6",
                         f"> {SECRET_USER}", "< 334 UGFzc3dvcmQ6", f"> {SECRET_PASS}",
                         "< 235 2.7.0 Authentication successful")
    assert [] == leaked(docs, SECRET_USER, SECRET_PASS)
    assert [("x@mx.example", "delivered", "dot", "250", None)] == verdicts(docs)


def test_every_mechanism_leaks_nothing() -> None:
    """PLAIN and XOAUTH2 with an initial response, OAUTHBEARER and CRAM-MD5 after a challenge,
    and a mechanism we do not know: nothing the client sends inside the exchange is kept."""
    cram = base64.b64encode(b"alice 3f2c6e8b1a9d0c7e4f5a6b7c8d9e0f1a").decode()
    bearer = base64.b64encode(b"n,a=alice,\x01auth=Bearer s3cr3t-bearer\x01\x01").decode()
    unknown = base64.b64encode(b"who knows what this is").decode()
    for steps, secrets in [
        ((f"> AUTH PLAIN {PLAIN}", "< 235 ok"), (PLAIN,)),
        ((f"> AUTH XOAUTH2 {XOAUTH2}", "< 235 ok"), (XOAUTH2,)),
        (("> AUTH OAUTHBEARER", "< 334 ", f"> {bearer}", "< 235 ok"), (bearer,)),
        (("> AUTH CRAM-MD5", "< 334 PDQxOTI5NDIzNDEuMTI4Mjg0NzJAc291cmNlZm91ci5hbmRyZXcuY211LmVkdT4=",
          f"> {cram}", "< 235 ok"), (cram,)),
        (("> AUTH X-SOMETHING-NEW", "< 334 c3RlcCAx", f"> {unknown}", "< 334 c3RlcCAy", "> *",
          "< 501 5.7.0 cancelled"), (unknown,)),
    ]:
        docs = outbound_auth(*steps)
        assert [] == leaked(docs, *secrets), steps
        assert "[redacted]" in docs[0]["smtp"]["transcript"]


def test_a_log_that_begins_inside_an_auth_exchange_leaks_nothing() -> None:
    """A file (or a followed log started at its end) that begins with the client's credential:
    no AUTH command, no challenge seen before it."""
    text = xeams(8, f"> {SECRET_USER}", "< 334 UGFzc3dvcmQ6", f"> {SECRET_PASS}",
                 "< 235 2.7.0 Authentication successful", "> MAIL FROM:<a@me.example>", "< 250 ok",
                 "> RCPT TO:<x@mx.example>", "< 250 ok", "> DATA", "< 354 go", "< 250 2.0.0 queued", END)
    docs, _ = documents(text)
    assert [] == leaked(docs, SECRET_USER, SECRET_PASS)
    assert [("x@mx.example", "delivered", "dot", "250", None)] == verdicts(docs)


def test_a_334_out_of_turn_hides_no_command() -> None:
    """A server that answers MAIL with 334 does not make the client's next command a
    'credential': the recipient is still judged (and nothing is hidden that was no secret)."""
    docs, _ = documents(xeams(9, CONNECT_OUT, "> EHLO me.example", "< 250 mx", "> MAIL FROM:<a@me.example>",
                              "< 334 c2VuZCBtZSB5b3VyIHBhc3N3b3Jk", "> RCPT TO:<x@mx.example>",
                              "< 550 5.1.1 no such user", END))
    assert [("x@mx.example", "rejected", "rcpt", "550", "unknown-recipient")] == verdicts(docs)


# -- a property: secrets planted in AUTH exchanges, stray lines anywhere, cut anywhere ------------

_secret = st.binary(min_size=6, max_size=40).map(lambda b: base64.b64encode(b"pw:" + b).decode())
_stray = st.sampled_from(["< Welcome!", "< ...", "> 250 ok", "< 250-continued", "note without a tag",
                          "< 334 ", "> NOOP", "< 250 ok", "> RSET"])


@st.composite
def planted(draw: st.DrawFn) -> tuple[list[str], list[str]]:
    """Steps of an outbound session with an AUTH exchange of any mechanism holding secrets,
    stray lines inserted anywhere, and the secrets it holds."""
    secrets = draw(st.lists(_secret, min_size=1, max_size=3))
    mechanism = draw(st.sampled_from(["LOGIN", "PLAIN", "CRAM-MD5", "XOAUTH2", "OAUTHBEARER", "X-NEW"]))
    auth = [f"> AUTH {mechanism} {secrets[0]}" if draw(st.booleans()) else f"> AUTH {mechanism}"]
    for secret in secrets[0 if len(auth[0].split()) == 2 else 1:]:
        auth += ["< 334 " + draw(st.sampled_from(["", "VXNlcm5hbWU6", "UGFzc3dvcmQ6"])), f"> {secret}"]
    auth.append(draw(st.sampled_from(["< 235 2.7.0 ok", "< 535 5.7.8 bad credentials", "< 454 4.7.0 later"])))
    steps = [CONNECT_OUT, "< 220 mx", "> EHLO me.example", "< 250 AUTH LOGIN PLAIN", *auth,
             "> MAIL FROM:<a@me.example>", "< 250 ok", "> RCPT TO:<x@mx.example>", "< 250 ok", END]
    for _ in range(draw(st.integers(0, 4))):
        steps.insert(draw(st.integers(1, len(steps) - 1)), draw(_stray))
    return steps, secrets


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(planted(), st.data())
def test_no_secret_in_any_document_field(case: tuple[list[str], list[str]], data: st.DataObject) -> None:
    """Whatever the mechanism and the stray lines, and wherever the log is cut (it may begin
    or end anywhere), no planted secret appears in any field of any document."""
    steps, secrets = case
    text = xeams(10, *steps)
    lines = text.splitlines(keepends=True)
    first = data.draw(st.integers(0, len(lines) - 1))
    last = data.draw(st.integers(first + 1, len(lines)))
    docs, _ = documents("".join(lines[first:last]))
    assert [] == leaked(docs, *secrets)
