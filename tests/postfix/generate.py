"""Regenerate the Postfix golden logs from a real Postfix (Debian's ``postfix`` package).

    sudo .venv/bin/python tests/postfix/generate.py          # then review: git diff tests/golden

Run as root on a disposable machine: it reconfigures the local Postfix (loopback only, its own
``maillog_file``), starts it, and stops it at the end. Test receivers on 127.0.0.1 answer like
real servers (``Receiver``); each scenario sends its mail (outbound through ``sendmail``,
inbound over SMTP to Postfix's port 25), waits until Postfix has logged everything, and writes
the lines it logged to ``tests/golden/postfix-<scenario>.log``. The expected documents are then
made with ``UPDATE_GOLDEN=1 pytest tests/test_golden.py`` and checked by hand. CI never runs
this: the logs are committed.
"""

from __future__ import annotations

import asyncio
import json
import smtplib
import subprocess
import threading
import time
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
MAILLOG = Path("/var/log/postfix-golden.log")
TRANSPORT = Path("/etc/postfix/golden_transport")
REFUSED_PORT = 2599  # nothing listens there


class Receiver:
    """A scripted SMTP server: ``replies`` maps a step to the reply it gets (``None``: stay
    silent), ``rcpt`` answers each recipient; everything else is a plain success."""

    def __init__(self, port: int, *, greeting: str | None = "220 mx.receiver.test ESMTP",
                 ehlo: list[str] | None = None, mail: str = "250 2.1.0 Ok",
                 rcpt: Callable[[str], str] = lambda a: "250 2.1.5 Ok",
                 dot: Callable[[int], str] = lambda n: f"250 2.0.0 Ok: queued as RCV{n:05d}",
                 relay_to: int | None = None) -> None:
        self.port, self.greeting, self.mail, self.rcpt, self.dot = port, greeting, mail, rcpt, dot
        self.ehlo = ehlo or ["250-mx.receiver.test", "250-PIPELINING", "250-8BITMIME", "250 SMTPUTF8"]
        self.relay_to = relay_to  # re-inject each message there (a content filter on this host)
        self.count = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def say(line: str) -> None:
            writer.write(line.encode() + b"\r\n")
            await writer.drain()

        try:
            if self.greeting is None:
                await asyncio.sleep(30)  # the client times out waiting for the greeting
                return
            await say(self.greeting)
            if self.greeting[0] != "2":
                await reader.readline()
                return
            rcpts: list[str] = []
            sender = ""
            while line := (await reader.readline()).decode(errors="replace").rstrip("\r\n"):
                verb = line[:4].upper()
                if verb in ("EHLO", "HELO", "LHLO"):
                    for reply in self.ehlo:
                        await say(reply)
                elif verb == "MAIL":
                    sender = line.split(":", 1)[1].split()[0].strip("<>")
                    rcpts = []
                    await say(self.mail)
                    if self.mail.startswith("421"):
                        return
                elif verb == "RCPT":
                    address = line.split(":", 1)[1].split()[0].strip("<>")
                    reply = self.rcpt(address)
                    if reply.startswith("2"):
                        rcpts.append(address)
                    await say(reply)
                elif verb == "DATA":
                    await say("354 End data with <CR><LF>.<CR><LF>")
                    body = []
                    while (chunk := await reader.readline()) not in (b".\r\n", b".\n", b""):
                        body.append(chunk)
                    self.count += 1
                    reply = self.dot(self.count)
                    if self.relay_to is not None:
                        qid = await asyncio.to_thread(self._reinject, sender, rcpts, b"".join(body))
                        reply = f"250 2.0.0 Ok: queued as {qid}"
                    await say(reply)
                elif verb == "QUIT":
                    await say("221 2.0.0 Bye")
                    return
                else:
                    await say("250 2.0.0 Ok")
        finally:
            writer.close()

    def _reinject(self, sender: str, rcpts: list[str], body: bytes) -> str:
        with smtplib.SMTP("127.0.0.1", self.relay_to) as s:
            s.ehlo("filter.golden.test")
            s.mail(sender)
            for r in rcpts:
                s.rcpt(r.replace("@hop.test", "@accept.test"))
            _code, text = s.data(body.replace(b"\r\n", b"\n"))
        return text.decode().rsplit(" ", 1)[-1]


RECEIVERS = {
    "accept.test": Receiver(2601),
    "greylist.test": Receiver(2602, rcpt=lambda a: f"451 4.7.1 <{a}>: Recipient address rejected: Greylisted, "
                              "see http://postgrey.schweikert.ch/help/greylist.test.html"),
    "unknown.test": Receiver(2603, rcpt=lambda a: (
        "550-5.1.1 The email account that you tried to reach does not exist. Please try\r\n"
        "550-5.1.1 double-checking the recipient's email address for typos or\r\n"
        "550-5.1.1 unnecessary spaces. For more information, go to\r\n"
        "550 5.1.1  https://support.google.com/mail/?p=NoSuchUser x1si2 - gsmtp")),
    "full.test": Receiver(2604, dot=lambda n: "552 5.2.2 <user@full.test>: Mailbox is full / Quota exceeded"),
    "drop421.test": Receiver(2605, mail="421 4.7.0 Try again later, closing connection."),
    "greet554.test": Receiver(2606, greeting="554 5.7.1 Service unavailable; Client host [127.0.0.1] "
                              "blocked using zen.spamhaus.org"),
    "timeout.test": Receiver(2607, greeting=None),
    "small.test": Receiver(2608, ehlo=["250-mx.small.test", "250-PIPELINING", "250-SIZE 1000", "250 8BITMIME"]),
    "mixed.test": Receiver(2609, rcpt=lambda a: (
        f"550 5.1.1 <{a}>: Recipient address rejected: User unknown in virtual mailbox table"
        if a.startswith("bad") else f"452 4.2.2 <{a}>: Mailbox full" if a.startswith("full") else "250 2.1.5 Ok")),
    "hop.test": Receiver(2610, relay_to=10025),
}


def sh(*args: str, check: bool = True) -> str:
    return subprocess.run(args, check=check, capture_output=True, text=True).stdout


def configure() -> None:
    TRANSPORT.write_text("".join(f"{d} smtp:[127.0.0.1]:{r.port}\n" for d, r in RECEIVERS.items())
                         + f"refused.test smtp:[127.0.0.1]:{REFUSED_PORT}\n")
    sh("postmap", str(TRANSPORT))
    settings = {
        "inet_interfaces": "loopback-only", "inet_protocols": "ipv4", "myhostname": "mx.golden.test",
        "mydomain": "golden.test", "mydestination": "mx.golden.test, localhost",
        "mynetworks": "127.0.0.2/32",  # SMTP clients on 127.0.0.1 are strangers: no relaying
        "maillog_file": str(MAILLOG), "transport_maps": f"hash:{TRANSPORT}",
        "smtp_connect_timeout": "2s", "smtp_helo_timeout": "3s", "smtp_tls_security_level": "none",
        "minimal_backoff_time": "300s", "maximal_backoff_time": "600s", "queue_run_delay": "300s",
        "relayhost": "", "smtpd_banner": "$myhostname ESMTP", "biff": "no",
        "default_destination_concurrency_limit": "1", "smtp_connection_cache_on_demand": "no",
    }
    sh("postconf", "-e", *(f"{k}={v}" for k, v in settings.items()))
    master = Path("/etc/postfix/master.cf")
    if "127.0.0.1:10025" not in master.read_text():  # where the "content filter" re-injects
        with master.open("a") as fh:
            fh.write("127.0.0.1:10025 inet n - y - - smtpd\n  -o content_filter=\n"
                     "  -o mynetworks=127.0.0.0/8\n  -o smtpd_recipient_restrictions=permit_mynetworks,reject\n")
    sh("postfix", "stop", check=False)
    time.sleep(1)
    MAILLOG.unlink(missing_ok=True)
    sh("postfix", "start")
    time.sleep(2)


def settle(timeout: float = 20.0) -> None:
    """Wait until the active and incoming queues are empty and the log has been quiet."""
    deadline = time.monotonic() + timeout
    last = -1
    while time.monotonic() < deadline:
        time.sleep(1.0)
        queue = [json.loads(x) for x in sh("postqueue", "-j").splitlines() if x.strip()]
        busy = [m for m in queue if m.get("queue_name") in ("active", "incoming", "maildrop")]
        size = MAILLOG.stat().st_size if MAILLOG.exists() else 0
        if not busy and size == last:
            return
        last = size
    raise RuntimeError("Postfix did not settle")


def send(sender: str, rcpts: list[str], subject: str, size: int = 200) -> None:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, ", ".join(rcpts), subject
    msg["Message-ID"] = f"<{subject.replace(' ', '-')}@golden.test>"
    msg.set_content("x" * size)
    subprocess.run(["/usr/sbin/sendmail", "-f", sender, "--", *rcpts], input=msg.as_bytes(), check=True)


def inbound(rcpts: list[str], subject: str) -> None:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "alice@sender.test", ", ".join(rcpts), subject
    msg["Message-ID"] = f"<{subject.replace(' ', '-')}@sender.test>"
    msg.set_content("hello")
    with smtplib.SMTP("127.0.0.1", 25) as s:
        s.ehlo("client.sender.test")
        s.mail("alice@sender.test")
        ok = [r for r in rcpts if s.rcpt(r)[0] < 300]
        if ok:
            s.data(msg.as_bytes())


def deferred_ids() -> list[str]:
    return [m["queue_id"] for m in (json.loads(x) for x in sh("postqueue", "-j").splitlines() if x.strip())]


SCENARIOS: dict[str, Callable[[], None]] = {
    "delivered": lambda: send("bob@golden.test", ["carol@accept.test"], "plain delivery"),
    "rcpt-550-multiline": lambda: send("bob@golden.test", ["nobody@unknown.test"], "unknown user"),
    "dot-552-mailbox-full": lambda: send("bob@golden.test", ["user@full.test"], "mailbox full"),
    "mail-421-mid-session": lambda: send("bob@golden.test", ["dan@drop421.test"], "421 after MAIL"),
    "greeting-554": lambda: send("bob@golden.test", ["erin@greet554.test"], "554 greeting"),
    "connection-refused": lambda: send("bob@golden.test", ["frank@refused.test"], "refused"),
    "greeting-timeout": lambda: send("bob@golden.test", ["gina@timeout.test"], "timeout"),
    "size-limit": lambda: send("bob@golden.test", ["hank@small.test"], "too big", size=4000),
    "mixed-recipients": lambda: send("bob@golden.test", ["ok1@mixed.test", "bad1@mixed.test", "full1@mixed.test",
                                                         "ok2@mixed.test"], "mixed outcomes"),
    "inbound-accepted-local": lambda: inbound(["root@mx.golden.test"], "inbound accepted"),
    "inbound-rejected": lambda: inbound(["nosuch@mx.golden.test", "someone@elsewhere.test"], "inbound rejected"),
    "hop-through-filter": lambda: send("bob@golden.test", ["ivy@hop.test"], "through a filter"),
}


def greylist_retried() -> None:
    """Deferred by a greylisting server, retried (``postqueue -i``) and then accepted."""
    send("bob@golden.test", ["jay@greylist.test"], "greylisted then delivered")
    settle()
    greylist = RECEIVERS["greylist.test"]
    greylist.rcpt = lambda a: "250 2.1.5 Ok"
    for qid in deferred_ids():
        sh("postqueue", "-i", qid)
    settle()


SCENARIOS["greylisted-then-delivered"] = greylist_retried


def main() -> None:
    loop = asyncio.new_event_loop()
    servers = [loop.run_until_complete(asyncio.start_server(r.handle, "127.0.0.1", r.port))
               for r in RECEIVERS.values()]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        configure()
        for name, scenario in SCENARIOS.items():
            start = MAILLOG.stat().st_size if MAILLOG.exists() else 0
            scenario()
            settle()
            for qid in deferred_ids():  # what stays deferred is taken out of the next scenario
                sh("postsuper", "-d", qid)
            settle()
            data = MAILLOG.read_bytes()[start:]
            (GOLDEN / f"postfix-{name}.log").write_bytes(data)
            (GOLDEN / f"postfix-{name}.args.json").write_text(
                json.dumps({"format": "postfix", "timezone": "UTC", "year": time.gmtime().tm_year}) + "\n")
            print(name, data.count(10), "lines")
    finally:
        sh("postfix", "stop", check=False)
        for s in servers:
            s.close()
        loop.call_soon_threadsafe(loop.stop)


if __name__ == "__main__":
    main()
