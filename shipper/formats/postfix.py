"""Postfix maillog: lines of several processes, joined by queue ID → finished sessions. Pure.

Postfix does not transcribe a conversation; it says what came of it (PRODUCT.md, "Input:
Postfix maillog"), one line per recipient and delivery attempt, joined to the rest of the
message only by the queue ID::

    Nov 26 19:24:31 mx postfix/smtpd[811]: 4F1A2B3C4D: client=mail.example.net[192.0.2.7]
    Nov 26 19:24:31 mx postfix/cleanup[812]: 4F1A2B3C4D: message-id=<abc@example.net>
    Nov 26 19:24:31 mx postfix/qmgr[90]: 4F1A2B3C4D: from=<a@example.net>, size=812, nrcpt=1 (queue active)
    Nov 26 19:24:32 mx postfix/smtp[813]: Trusted TLS connection established to mx.example.org[198.51.100.4]:25: ...
    Nov 26 19:24:32 mx postfix/smtp[813]: 4F1A2B3C4D: to=<b@example.org>, relay=mx.example.org[198.51.100.4]:25,
        delay=1.2, delays=0.1/0/0.6/0.5, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as 9Z8Y7X)
    Nov 26 19:24:32 mx postfix/qmgr[90]: 4F1A2B3C4D: removed

So this format keeps the joining state (``_Queue``: per queue ID the sender, Message-ID, client,
lines; per process the lines that carry no queue ID, such as TLS and connect failures) and hands
out a finished ``Session`` per outcome:

* outbound — one per ``to=… status=…`` line of smtp, lmtp, local, virtual, pipe, error, discard,
  retry and qmgr: the verdict follows the DSN class (``sent`` 2.x delivered; 5.x rejected; 4.x
  deferred when the peer replied, failed when it did not), the stage the command the reply
  answered (``in reply to RCPT TO command``) or what broke off (``while sending DATA
  command``); a message-level ``status=expired`` rejects every recipient still deferred;
* inbound — ``smtpd``/``postscreen``/``cleanup`` refusals (``reject:``, ``milter-reject:``)
  and, for a message ``smtpd`` accepted (``client=``), one per original recipient when its
  first delivery line names it (Postfix does not log the accepted ``RCPT TO`` itself);
* internal — a hop: a ``sent`` whose reply says ``queued as NEWQID`` for a queue ID this log
  already holds (a content filter, a relay on this host: they re-inject before they answer), and
  ``forwarded as NEWQID``; the re-injection of such a message; address-verification probes.

Line layouts: the classic syslog prefix (no year: ``_Year`` infers it from the file's time and
the order of lines) and RFC 3339 (rsyslog, ``journalctl -o short-iso[-precise]``). Lines of
other programs are counted and skipped, never defects.

The state is bounded (``MAX_QUEUE_IDS`` messages, least recently used first out;
``MAX_LINES`` transcript lines each), depends on nothing but the lines (no wall clock), and is
saved and restored whole by ``snapshot``/``restore``. A message whose state was dropped (or
whose first lines are in a file not read) gets, at its next attempt, the sender, size and
recipient count that ``qmgr`` logs again at every attempt; its Message-ID and client are then
unknown.

One idea in one module, long because Postfix is: the line layouts, the joining state and the
rules of its outcomes.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections import Counter
from collections.abc import Hashable
from datetime import UTC, datetime
from typing import Any

from shipper.cache import Bounded
from shipper.formats import Fed, excerpt
from shipper.lines import is_blank
from shipper.localtime import LocalTime, StreamClock, resolve_zone
from shipper.model import (
    Defect,
    Direction,
    Moment,
    Outcome,
    Recipient,
    Reply,
    Session,
    Stage,
    Transaction,
    Verdict,
)

DATASET = "postfix.smtp"
MAX_QUEUE_IDS = 50_000  # messages whose state is kept (a deferred one waits hours for its retry)
MAX_LINES = 60  # transcript lines kept per message and per process
MAX_PROCESSES = 20_000  # processes with lines waiting for a queue ID, smtpd connections
MAX_RELAYS = 10_000  # relays whose last TLS state is remembered (for reused connections)
REDACTED = "[redacted]"

_MONTHS = {m: i for i, m in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}
# "Nov 26 19:24:32 host prog[pid]: text" (day space- or zero-padded; rsyslog may add fractions)
_CLASSIC = re.compile(
    r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) ([ 0-3]?\d) ([01]\d|2[0-3]):([0-5]\d):([0-5]\d)"
    r"(?:\.(\d+))? (\S+) ([^\s\[:]+)(?:\[(\d+)\])?: ?(.*)")
# "2026-11-26T19:24:32.123456+01:00 host prog[pid]: text" (journalctl short-iso: "+0100")
_ISO = re.compile(
    r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:[.,](\d+))?(Z|[+-]\d\d:?\d\d) (\S+) ([^\s\[:]+)(?:\[(\d+)\])?: ?(.*)")
# Postfix programs (postfix(1), master(5)); the service is the last part of the syslog name
# ("postfix-out/smtp", "postfix/submission/smtpd").
_SERVICES = frozenset("""smtp lmtp smtpd postscreen qmgr oqmgr cleanup pickup local virtual pipe error
    discard retry bounce defer trace verify flush showq anvil scache tlsmgr tlsproxy dnsblog master
    proxymap trivial-rewrite postlogd postdrop sendmail postsuper postqueue postfix-script spawn
    postmap postalias postcat postconf postkick postlock postlog postmulti""".split())
_DELIVERY = frozenset("smtp lmtp local virtual pipe error discard retry qmgr oqmgr".split())
# Short queue IDs are hex; long ones (enable_long_queue_ids) base 52 without vowels, "z" between
# the time and the inode part: neither can be an English word.
_QID = re.compile(r"([0-9A-F]{6,12}|[0-9B-DF-HJ-NP-TV-Yb-df-hj-np-tv-y]{6,}z[0-9B-DF-HJ-NP-TV-Yb-df-hj-np-tv-y]+): (.*)")
_DELIVERY_LINE = re.compile(r"to=<(.*?)>, (.*?)status=([\w-]+)(?: \((.*)\))?$")
_ORIG_TO = re.compile(r"orig_to=<(.*?)>, ")
_FIELD = re.compile(r"(relay|conn_use|delay|delays|dsn)=([^,]*)")
_QMGR_FROM = re.compile(r"from=<(.*?)>, size=(\d+), nrcpt=(\d+)")
_EXPIRED = re.compile(r"from=<(.*?)>, status=(expired|force-expired)")
_PICKUP = re.compile(r"uid=\d+ from=<(.*?)>")
_CLIENT = re.compile(r"client=([^,\s]*)(.*)")
_ORIG_QUEUE = re.compile(r"orig_queue_id=([0-9A-Za-z]+)")
_MESSAGE_ID = re.compile(r"message-id=<?(.*?)>?$")
_NOTIFICATION = re.compile(r"(?:sender|postmaster) (?:non-delivery|delay|delivery status) notification: ([0-9A-Za-z]+)")
_HOST_IP = re.compile(r"(.*?)\[([^\]]*)\](?::(\d+))?$")
_SAID = re.compile(r"host (\S+) said: (.*?)(?: \(in reply to (.*) command\))?$")
_REFUSED_TALK = re.compile(r"host (\S+) refused to talk to me: (.*)$")
_REPLY = re.compile(r"(\d{3})(?:[ -]|$)(.*)")
_ENHANCED = re.compile(r"([245])\.\d{1,3}\.\d{1,3}(?=\s|$)")
_QUEUED_AS = re.compile(r"\bqueued as ([0-9A-Za-z]{5,})")
_FORWARDED_AS = re.compile(r"^forwarded as ([0-9A-Za-z]{5,})")
_WHILE = re.compile(r"\bwhile (.*)$")
_PEER_IN_TEXT = re.compile(r"(?:^|: )(?:connect to|conversation with|lost connection with) (\S+?\[[^\]]*\](?::\d+)?)")
_SIZE = re.compile(r"^message size \d+ exceeds size limit")
# "NOQUEUE: reject: RCPT from host[ip]: 550 5.1.1 <x>: text; from=<a> to=<b> proto=ESMTP helo=<h>"
_REJECT = re.compile(r"(reject|milter-reject|reject_warning|discard): (\S+) from (\S+?):? (.*)$")
# The trailer after the last "; " (postscreen separates its fields with ", ")
_TRAILER = re.compile(r"(?:from=<(?P<f>.*?)>,? )?(?:to=<(?P<t>.*?)>,? )?(?:proto=(?P<p>[^\s,]+),? )?helo=<(?P<h>.*)>$")
# cleanup: "reject: header Subject: x from host[ip]; from=<a> to=<b> proto=ESMTP helo=<h>: 5.7.1 text"
_CONTENT_REJECT = re.compile(
    r"(reject|milter-reject): (?:header|body|END-OF-MESSAGE) .*? from (\S+?); (from=<.*?> (?:to=<.*?> )?"
    r"(?:proto=\S+ )?helo=<.*?>): (.*)$")
_TLS_TO = re.compile(r"^(\w+) TLS connection established to (\S+?):? ")
_TLS_FROM = re.compile(r"^(\w+) TLS connection established from (\S+?):? ")
_CONNECT_FROM = re.compile(r"^connect from (\S+)$")
_SMTPD_EVENT = re.compile(r"^(lost connection|too many errors|timeout) after (\S+)")
_POSTSCREEN_EVENT = re.compile(r"^(PREGREET|HANGUP|DNSBL|BARE NEWLINE|COMMAND PIPELINING|NON-SMTP COMMAND|"
                               r"COMMAND TIME LIMIT|COMMAND COUNT LIMIT|COMMAND LENGTH LIMIT|DENYLISTED|BLACKLISTED)\b")
_POSTSCREEN_CLIENT = re.compile(r"\[([0-9a-fA-F:.]+)\]:(\d+)")
_DEBUG = re.compile(r"^([<>]) (\S+): (.*)$")
_AUTH = re.compile(r"^(AUTH\s+\S+\s+)\S.*$", re.IGNORECASE)

_IN_REPLY = (("end of data", Stage.DOT), ("rcpt", Stage.RCPT), ("mail", Stage.MAIL),
             ("data", Stage.DATA), ("bdat", Stage.DOT), ("ehlo", Stage.HELO), ("helo", Stage.HELO),
             ("lhlo", Stage.HELO), ("starttls", Stage.STARTTLS), ("auth", Stage.AUTH),
             ("xforward", Stage.HELO), ("xclient", Stage.HELO))
_WHILE_STAGES = (("greeting", Stage.CONNECT), ("tls", Stage.STARTTLS), ("starttls", Stage.STARTTLS),
                 ("sasl", Stage.AUTH), ("auth", Stage.AUTH), ("ehlo", Stage.HELO), ("helo", Stage.HELO),
                 ("lhlo", Stage.HELO), ("xforward", Stage.HELO), ("mail from", Stage.MAIL),
                 ("rcpt to", Stage.RCPT), ("data command", Stage.DATA), ("message body", Stage.DOT),
                 ("end of data", Stage.DOT), ("bdat", Stage.DOT))
_REJECT_STAGES = {"CONNECT": Stage.CONNECT, "EHLO": Stage.HELO, "HELO": Stage.HELO,
                  "STARTTLS": Stage.STARTTLS, "AUTH": Stage.AUTH, "MAIL": Stage.MAIL,
                  "RCPT": Stage.RCPT, "DATA": Stage.DATA, "BDAT": Stage.DOT,
                  "END-OF-MESSAGE": Stage.DOT, "header": Stage.DOT, "body": Stage.DOT}
_INVALID_UTF8 = "invalid UTF-8 (decoded with replacement characters)"


class _Year:
    """The year of classic syslog lines: from the file's modification time for the first line
    (the latest year that does not put it in the future), then from the order of lines — a
    month smaller than the last one by more than half a year is the next year (New Year in the
    file), one larger by as much the year before (an older file fed after a newer one)."""

    def __init__(self) -> None:
        self.year = 0
        self.month = 0

    def of(self, month: int, day: int, when: float) -> int:
        if not self.year:
            ref = datetime.fromtimestamp(when, UTC)
            self.year = ref.year if (month, day) <= (ref.month, ref.day + 1) else ref.year - 1
        elif month < self.month - 6:
            self.year += 1
        elif month > self.month + 6:
            self.year -= 1
        self.month = month
        return self.year

    def saw(self, year: int, month: int) -> None:
        self.year, self.month = year, month


class PostfixFormat:
    name = "postfix"
    dataset = DATASET

    def __init__(self) -> None:
        self.times = LocalTime(resolve_zone("UTC"))
        self._clock = StreamClock(self.times)
        self._last_ts = ""
        self._year = _Year()
        # RFC 3339 seconds with their offset → (ISO text around the fraction, POSIX µs): a log's
        # seconds repeat (bench/postfix_bench.py)
        self._iso_seconds: Bounded[str, tuple[str, int]] = Bounded(4096)
        # queue ID → its state (a dict, JSON-ready); insertion order is recency (LRU)
        self.queue: dict[str, dict[str, Any]] = {}
        # "syslog name[pid]" → lines of that process not yet joined to a queue ID, its TLS
        # state, and for smtpd/postscreen the connection (client, start, helo, counter)
        self.procs: dict[str, dict[str, Any]] = {}
        self.relay_tls: dict[str, bool] = {}  # relay endpoint → TLS of its last connection

    # -- the format protocol ------------------------------------------------------------------
    def start(self, times: LocalTime) -> None:
        """The zone of timestamps that carry none (the classic syslog prefix)."""
        self.times = times
        self._clock = StreamClock(times)

    def direction_from_name(self, path: str) -> Direction | None:
        return None  # a maillog holds both directions: each session says its own

    def feed(self, data: bytes, offset: int, path: str, source: Hashable, when: float) -> Fed:
        sessions: list[Session] = []
        defects: list[Defect] = []
        noted: Counter[str] = Counter()
        lines = skipped = 0
        for raw in data.split(b"\n")[:-1] if data.endswith(b"\n") else data.split(b"\n"):
            size = len(raw) + 1
            if not is_blank(raw):
                lines += 1
                if raw.endswith(b"\r"):
                    raw = raw[:-1]
                try:
                    text = raw.decode()
                except UnicodeDecodeError:
                    text = raw.decode(errors="replace")
                    defects.append(Defect(path, offset, _INVALID_UTF8, excerpt(text)))
                kept = self._line(text, offset, path, source, when, sessions, defects, noted)
                if not kept:
                    skipped += 1
            offset += size
        return Fed(sessions, defects, lines, skipped, noted)

    def flush_all(self) -> list[Session]:
        return []  # every outcome is shipped when its line is read: nothing is held back

    def snapshot(self) -> dict[str, Any]:
        """The state as JSON-ready data of its own (a copy: feeding on does not change it)."""
        state: dict[str, Any] = json.loads(json.dumps({"version": 1, "last_ts": self._last_ts, "fold": self._clock.fold,
                "year": [self._year.year, self._year.month], "queue": self.queue,
                "procs": self.procs, "relay_tls": self.relay_tls}))
        return state

    def restore(self, state: dict[str, Any]) -> None:
        if state.get("version") != 1:
            raise ValueError(f"unknown Postfix state version {state.get('version')!r}")
        self._last_ts = str(state["last_ts"])
        self._clock.fold = int(state["fold"])
        self._year.year, self._year.month = (int(x) for x in state["year"])
        self.queue = dict(state["queue"])
        self.procs = dict(state["procs"])
        self.relay_tls = dict(state["relay_tls"])

    # -- one line -----------------------------------------------------------------------------
    def _line(self, text: str, offset: int, path: str, source: Hashable, when: float,
              sessions: list[Session], defects: list[Defect], noted: Counter[str]) -> bool:
        """Read one line; False when it is no Postfix line (skipped, counted)."""
        head = self._prefix(text, when)
        if head is None:
            if not text.startswith("-- ") and not _looks_like_syslog(text):
                defects.append(Defect(path, offset, "line matches no syslog layout", excerpt(text)))
                return True
            return False
        moment, prog, pid, body = head
        service = prog.rsplit("/", 1)[-1]
        if "/" not in prog or service not in _SERVICES:
            return False
        at = _At(moment, text, offset, path, source, f"{prog}[{pid}]", service)
        m = _QID.match(body)
        if m is not None:
            self._queued(m.group(1), m.group(2), at, sessions, noted)
        else:
            self._unqueued(body, at, sessions, noted)
        return True

    def _prefix(self, text: str, when: float) -> tuple[Moment, str, str, str] | None:
        c = _CLASSIC.match(text)
        if c is not None:
            mon, day, hh, mm, ss, frac, _host, prog, pid, body = c.groups()
            month = _MONTHS[mon]
            year = self._year.of(month, int(day), when)
            ts = f"{year:04d}-{month:02d}-{int(day):02d} {hh}:{mm}:{ss},{(frac or '0')[:3].ljust(3, '0')}"
            try:
                moment = self._local(ts)
            except ValueError:  # Feb 30
                return None
            return moment, prog, pid or "", body
        i = _ISO.match(text)
        if i is None:
            return None
        second, frac, zone, _host, prog, pid, body = i.groups()
        try:
            moment = self._aware(second, frac or "", zone)
        except ValueError:
            return None
        self._year.saw(int(second[:4]), int(second[5:7]))
        return moment, prog, pid or "", body

    def _local(self, ts: str) -> Moment:
        fold = self._clock.fold
        if ts < self._last_ts or fold:
            fold = self._clock.advance(self._last_ts, ts)
        self._last_ts = ts
        return self.times.at(ts, fold)

    def _aware(self, second: str, frac: str, zone: str) -> Moment:
        key = second + zone
        known = self._iso_seconds.get(key)
        if known is None:
            tz = "+00:00" if zone == "Z" else (zone if ":" in zone else f"{zone[:3]}:{zone[3:]}")
            dt = datetime.fromisoformat(second + tz)
            base = int(dt.timestamp()) * 1_000_000
            known = self._iso_seconds.put(key, (f"{second}.%s{tz}", base))
        ms = (frac[:3]).ljust(3, "0")
        return Moment(known[0] % ms, known[1] + int((frac[:6]).ljust(6, "0")))

    # -- lines with a queue ID ----------------------------------------------------------------
    def _queued(self, qid: str, body: str, at: _At, sessions: list[Session], noted: Counter[str]) -> None:
        q = self._message(qid, at)
        service = at.service
        if service in _DELIVERY:
            proc = self.procs.get(at.proc)
            if proc is not None:
                # what the process logged without a queue ID (TLS, connect failures, the
                # dialogue under debug_peer_list) belongs to the delivery it makes next; its
                # TLS state lasts as long as the connection (further recipients, conn_use)
                at.before = proc["lines"]
                proc["lines"] = []
                at.tls = proc.get("tls")
        if body.startswith("to=<") and service in _DELIVERY:
            self._delivery(qid, q, body, at, sessions)
            return
        for line in at.before:  # e.g. the connect failure before "host … refused to talk to me"
            _keep(q["lines"], line)
        _keep(q["lines"], at.text)
        if body == "removed":  # qmgr when done, postsuper -d
            del self.queue[qid]
            return
        if service == "qmgr" or service == "oqmgr":
            f = _QMGR_FROM.match(body)
            if f is not None:
                q["from"], q["size"] = f.group(1), f.group(2)
                q["attempt"] += 1
                q["astart"] = list(at.moment)
                return
            e = _EXPIRED.match(body)
            if e is not None:
                q["from"] = e.group(1)
                self._expired(qid, q, e.group(2), at, sessions)
            return
        if service == "cleanup":
            mid = _MESSAGE_ID.match(body)
            if mid is not None and body.startswith("message-id="):
                q["mid"] = mid.group(1) or None
                q["accepted"] = list(at.moment)
                return
            self._content_reject(qid, q, body, at, sessions, noted)
            return
        if service == "pickup":
            p = _PICKUP.match(body)
            if p is not None:
                q["from"] = p.group(1)
            return
        if service == "smtpd":
            self._smtpd_queued(qid, q, body, at, sessions, noted)
            return
        if service in ("bounce", "defer", "trace"):
            n = _NOTIFICATION.match(body)
            if n is not None:
                nq = self._message(n.group(1), at)
                nq["prev"] = qid
            return

    def _message(self, qid: str, at: _At) -> dict[str, Any]:
        q = self.queue.pop(qid, None)
        if q is None:
            q = {"lines": [], "from": None, "size": None, "mid": None, "client": None, "ctls": False,
                 "cstart": None, "accepted": None, "attempt": 0, "astart": None, "inbound": [],
                 "pending": {}, "prev": None, "internal": False, "n": 0}
            while len(self.queue) >= MAX_QUEUE_IDS:
                del self.queue[next(iter(self.queue))]
        self.queue[qid] = q  # most recently used last
        return q

    def _smtpd_queued(self, qid: str, q: dict[str, Any], body: str, at: _At, sessions: list[Session],
                      noted: Counter[str]) -> None:
        c = _CLIENT.match(body)
        conn = self.procs.get(at.proc)
        if c is not None:
            q["client"] = c.group(1)
            q["cstart"] = conn["start"] if conn is not None else list(at.moment)
            q["ctls"] = bool(conn and conn.get("tls"))
            if conn is not None:
                q["lines"][:0] = conn["lines"]
                del q["lines"][:-MAX_LINES]
            o = _ORIG_QUEUE.search(c.group(2))
            if o is not None:  # XFORWARD from a content filter: a re-injection
                q["prev"] = o.group(1)
                q["internal"] = True
            return
        self._reject(body, at, sessions, noted, qid=qid, q=q, conn=conn)

    def _delivery(self, qid: str, q: dict[str, Any], body: str, at: _At, sessions: list[Session]) -> None:
        m = _DELIVERY_LINE.match(body)
        if m is None:
            _keep(q["lines"], at.text)
            return
        to, rest, status, text = m.groups()
        text = text or ""
        orig = _ORIG_TO.search(rest)
        fields = dict(_FIELD.findall(_ORIG_TO.sub("", rest)))
        dsn = fields.get("dsn", "")
        relay = fields.get("relay", "none").strip()
        original = orig.group(1) if orig is not None else to
        if q["client"] is not None and original not in q["inbound"]:
            q["inbound"].append(original)
            sessions.append(self._accepted(qid, q, original, at))
        outcome, next_qid, remote = self._judge(status, dsn, text, at, relay)
        direction = Direction.OUTBOUND
        # A hop hands the message on to a queue ID this log already holds: a content filter
        # or a relay on this host re-injects the message before it answers (the new queue
        # ID's smtpd lines come first); local's .forward names the new queue ID itself.
        if next_qid is not None and (next_qid in self.queue or text.startswith("forwarded as")):
            direction = Direction.INTERNAL
            self._message(next_qid, at)["prev"] = qid
            self.queue[next_qid]["internal"] = True
            self.queue.pop(qid)
            self.queue[qid] = q  # keep this one the most recent
        else:
            next_qid = None
        if status in ("deliverable", "undeliverable"):
            direction = Direction.INTERNAL  # an address probe, not a delivery
        if outcome.verdict is Verdict.DEFERRED or outcome.verdict is Verdict.FAILED:
            q["pending"][to] = [status, text]
        else:
            q["pending"].pop(to, None)
        lines = [*q["lines"], *at.before, at.text]
        tls = bool(at.tls) and at.tls == remote[2] if remote[2] else False
        if remote[2] is not None:
            if at.tls is not None and at.tls == remote[2]:
                self.relay_tls[remote[2]] = True
                _bound(self.relay_tls, MAX_RELAYS)
            elif int(fields.get("conn_use", "1") or 1) > 1:
                tls = self.relay_tls.get(remote[2], False)  # a reused connection: as it began
        _keep(q["lines"], at.text)
        start = _start(q, at)
        sessions.append(self._session(
            qid, q, direction, at, start, lines, remote[0], remote[1], tls,
            Transaction(max(0, q["attempt"] - 1), q["from"], (Recipient(to, outcome),), outcome),
            next_qid))

    def _judge(self, status: str, dsn: str, text: str, at: _At,
               relay: str) -> tuple[Outcome, str | None, tuple[str | None, str | None, str | None]]:
        """The outcome of a delivery line, the queue ID it handed the message on to, and the
        relay's (ip, host, endpoint)."""
        remote = _endpoint(relay)
        klass = dsn[:1] if dsn[:1] in "245" and dsn else {"sent": "2", "deliverable": "2",
                                                            "bounced": "5", "expired": "5"}.get(status, "4")
        reply: Reply | None = None
        stage = Stage.DOT if klass == "2" else Stage.RCPT
        detail: str | None = None
        next_qid = None
        said = _SAID.match(text)
        refused = _REFUSED_TALK.match(text) if said is None else None
        if said is not None:
            reply = _reply(said.group(2), at.moment)
            stage = _in_reply(said.group(3)) if said.group(3) else Stage.DOT
            remote = _endpoint(said.group(1)) if remote[0] is None and remote[1] is None else remote
        elif refused is not None:
            reply = _reply(refused.group(2), at.moment)
            stage = Stage.CONNECT
        elif klass == "2" and _REPLY.match(text) is not None and text[:1] in "2345":
            reply = _reply(text, at.moment)
            stage = Stage.RCPT if status == "deliverable" else Stage.DOT
        else:
            detail = text or None
            stage = _own_stage(text, klass)
            peer = _PEER_IN_TEXT.search(text)
            if peer is not None and remote[0] is None and remote[1] is None:
                remote = _endpoint(peer.group(1))
        if reply is not None and reply.code[:1] in "245":
            q_as = _QUEUED_AS.search(reply.text)
            next_qid = q_as.group(1) if q_as is not None else None
        elif detail is not None:
            fw = _FORWARDED_AS.match(detail)
            next_qid = fw.group(1) if fw is not None else None
        if status == "expired":
            klass = "5"
            detail = f"message expired in the queue: {text}" if text else "message expired in the queue"
            reply = None
        if klass == "2":
            verdict = Verdict.DELIVERED
        elif klass == "5":
            verdict = Verdict.REJECTED
        else:
            verdict = Verdict.DEFERRED if reply is not None else Verdict.FAILED
        if reply is not None and verdict is not Verdict.DELIVERED:
            detail = None
        status_code = dsn if dsn and not dsn.endswith(".0.0") else None
        if status == "expired":
            status_code = None
        return Outcome(verdict, stage, reply, detail, status_code if reply is None else None), next_qid, remote

    def _expired(self, qid: str, q: dict[str, Any], status: str, at: _At, sessions: list[Session]) -> None:
        """A message-level expiry: each recipient still deferred is rejected by it."""
        for rcpt, (_last, text) in list(q["pending"].items()):
            detail = "message expired in the queue" + (f" ({status})" if status != "expired" else "")
            if text:
                detail += f": {text}"
            outcome = Outcome(Verdict.REJECTED, Stage.RCPT, None, detail)
            sessions.append(self._session(
                qid, q, Direction.OUTBOUND, at, _start(q, at), [*q["lines"]], None, None, False,
                Transaction(max(0, q["attempt"] - 1), q["from"], (Recipient(rcpt, outcome),), outcome), None))
        q["pending"] = {}

    def _accepted(self, qid: str, q: dict[str, Any], rcpt: str, at: _At) -> Session:
        """The inbound document of a recipient of a message smtpd accepted."""
        ip, host = _client(q["client"])
        accepted = q["accepted"] or q["astart"] or list(at.moment)
        moment = Moment(*accepted)
        outcome = Outcome(Verdict.DELIVERED, Stage.DOT, None, f"queued as {qid}")
        start = Moment(*q["cstart"]) if q["cstart"] else moment
        direction = Direction.INTERNAL if q["internal"] else Direction.INBOUND
        return Session(
            session_id=qid, direction=direction, path=at.path, offset=at.offset,
            files={at.source: at.offset}, start=start, end=moment, incomplete=False,
            lines=tuple(_redacted(q["lines"])), remote_ip=ip, remote_host=host, helo=None, tls=bool(q["ctls"]),
            transactions=(Transaction(0, q["from"], (Recipient(rcpt, outcome),), outcome),),
            queue_id=qid, message_id=q["mid"])

    def _session(self, sid: str, q: dict[str, Any] | None, direction: Direction, at: _At, start: Moment,
                 lines: list[str], ip: str | None, host: str | None, tls: bool,
                 txn: Transaction | None, next_qid: str | None, *, helo: str | None = None,
                 outcome: Outcome | None = None, queue_id: str | None = None) -> Session:
        return Session(
            session_id=sid, direction=direction, path=at.path, offset=at.offset,
            files={at.source: at.offset}, start=start, end=at.moment, incomplete=False,
            lines=tuple(_redacted(lines)), remote_ip=ip, remote_host=host, helo=helo, tls=tls,
            transactions=(txn,) if txn is not None else (), outcome=outcome,
            queue_id=queue_id if q is None else sid, message_id=q["mid"] if q is not None else None,
            next_queue_id=next_qid)

    # -- refusals -----------------------------------------------------------------------------
    def _content_reject(self, qid: str, q: dict[str, Any], body: str, at: _At, sessions: list[Session],
                        noted: Counter[str]) -> None:
        c = _CONTENT_REJECT.match(body)
        if c is not None:  # header/body checks: the reply comes after the trailer
            kind, client, trailer, reply_text = c.groups()
            body = f"{kind}: END-OF-MESSAGE from {client}: {reply_text}; {trailer}"
        self._reject(body, at, sessions, noted, qid=qid, q=q, conn=None)

    def _reject(self, body: str, at: _At, sessions: list[Session], noted: Counter[str], *,
                qid: str | None, q: dict[str, Any] | None, conn: dict[str, Any] | None) -> None:
        r = _REJECT.match(body)
        if r is None:
            if conn is not None:
                _keep(conn["lines"], at.text)
            return
        action, command, client, rest = r.groups()
        if conn is not None:
            _keep(conn["lines"], at.text)
        if action in ("reject_warning", "discard"):
            noted[f"{at.service} {action}"] += 1  # refuses nothing (a warning, or a silent discard)
            return
        stage = _REJECT_STAGES.get(command)
        cut = _trailer(rest)
        if stage is None or cut is None:
            noted[f"{at.service} reject of {command}"] += 1
            return
        reply_text, trailer = cut
        reply = _reply(reply_text, at.moment)
        if not reply.code and not reply.enhanced:
            noted[f"{at.service} reject of {command}"] += 1
            return
        klass = (reply.code or reply.enhanced or "5")[:1]
        verdict = Verdict.REJECTED if klass == "5" else Verdict.DEFERRED
        outcome = Outcome(verdict, stage, reply)
        ip, host = _client(client)
        if q is not None and qid is not None:
            sid = qid
            start = Moment(*q["cstart"]) if q["cstart"] else at.moment
            lines = [*q["lines"], at.text] if at.text not in q["lines"] else list(q["lines"])
            index = q["n"]
            q["n"] += 1
            tls = bool(q["ctls"])
            _keep(q["lines"], at.text)
            direction = Direction.INTERNAL if q["internal"] else Direction.INBOUND
        else:
            if conn is None:
                conn = self._conn(at, client)
            sid = f"NOQUEUE {at.proc}" + (f" {client}" if at.service == "postscreen" else "")
            start = Moment(*conn["start"])
            lines = list(conn["lines"])
            index = conn["n"]
            conn["n"] += 1
            tls = bool(conn.get("tls"))
            direction = Direction.INBOUND
        mail_from = trailer.group("f")
        to = trailer.group("t")
        helo = trailer.group("h") or None
        txn = None
        session_outcome = None
        if to is not None or mail_from is not None:
            txn = Transaction(index, mail_from, (Recipient(to, outcome),) if to is not None else (), outcome)
        else:
            session_outcome = outcome
        s = self._session(sid, q if qid is not None else None, direction, at, start, lines, ip, host, tls,
                          txn, None, helo=helo, outcome=session_outcome)
        sessions.append(s)

    # -- lines without a queue ID -------------------------------------------------------------
    def _unqueued(self, body: str, at: _At, sessions: list[Session], noted: Counter[str]) -> None:
        service = at.service
        if service == "smtpd":
            c = _CONNECT_FROM.match(body)
            if c is not None:
                self.procs.pop(at.proc, None)
                self._conn(at, c.group(1))
                return
            conn = self.procs.get(at.proc)
            if body.startswith("disconnect from "):
                self.procs.pop(at.proc, None)
                return
            if conn is None:
                conn = self._conn(at, None)
            if body.startswith("NOQUEUE: "):
                self._reject(body[9:], at, sessions, noted, qid=None, q=None, conn=conn)
                return
            _keep(conn["lines"], at.text)
            t = _TLS_FROM.match(body)
            if t is not None:
                conn["tls"] = True
                return
            e = _SMTPD_EVENT.match(body)
            if e is not None:
                noted[f"smtpd {e.group(1)}"] += 1
            return
        if service == "postscreen":
            if body.startswith("NOQUEUE: "):
                self._reject(body[9:], at, sessions, noted, qid=None, q=None, conn=None)
                return
            e = _POSTSCREEN_EVENT.match(body)
            if e is not None:
                noted[f"postscreen {e.group(1)}"] += 1
            return
        if service in _DELIVERY:
            proc = self.procs.pop(at.proc, None) or {"lines": [], "tls": None}
            self.procs[at.proc] = proc
            _bound(self.procs, MAX_PROCESSES)
            _keep(proc["lines"], at.text)
            t = _TLS_TO.match(body)
            if t is not None:
                proc["tls"] = _endpoint(t.group(2))[2]
            elif body.startswith("connect to "):
                proc["tls"] = None

    def _conn(self, at: _At, client: str | None) -> dict[str, Any]:
        conn = {"lines": [at.text], "start": list(at.moment), "client": client, "tls": False, "n": 0}
        key = at.proc if at.service != "postscreen" else f"{at.proc} {client}"
        if at.service != "postscreen":
            self.procs.pop(key, None)
            self.procs[key] = conn
            _bound(self.procs, MAX_PROCESSES)
        return conn


class _At:
    """Where and when a line was read, and who wrote it."""

    __slots__ = ("before", "moment", "offset", "path", "proc", "service", "source", "text", "tls")

    def __init__(self, moment: Moment, text: str, offset: int, path: str, source: Hashable, proc: str,
                 service: str) -> None:
        self.moment = moment
        self.text = text
        self.offset = offset
        self.path = path
        self.source = source
        self.proc = proc
        self.service = service
        self.before: list[str] = []
        self.tls: str | None = None


def _keep(lines: list[str], text: str) -> None:
    """A transcript line, within ``MAX_LINES`` (the first lines say most: the oldest after
    the first ten give way)."""
    lines.append(text)
    if len(lines) > MAX_LINES:
        del lines[10]


def _bound(d: dict[str, Any], limit: int) -> None:
    while len(d) > limit:
        del d[next(iter(d))]


def _start(q: dict[str, Any], at: _At) -> Moment:
    """When this attempt began: the message entered the active queue (qmgr), or this line."""
    return Moment(*q["astart"]) if q["astart"] else at.moment


def _endpoint(relay: str) -> tuple[str | None, str | None, str | None]:
    """``host[ip]:port`` → (ip, host, "host[ip]:port"); a socket path is no IP; ``none``,
    ``local``, a transport name: nothing."""
    m = _HOST_IP.match(relay.strip())
    if m is None:
        return None, None, None
    host, addr, _port = m.groups()
    ip = _ip(addr)
    return ip, (host if host and host != "unknown" else None), relay.strip()


def _client(client: str | None) -> tuple[str | None, str | None]:
    if not client:
        return None, None
    ip, host, _ = _endpoint(client)
    return ip, host


def _ip(text: str) -> str | None:
    text = text[5:] if text.lower().startswith("ipv6:") else text
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def _reply(text: str, moment: Moment) -> Reply:
    """A reply as Postfix quotes it: ``550 5.1.1 text``, lines of a multi-line reply joined
    with spaces (``550-5.1.1 a 550-5.1.1 b 550 5.1.1 c``); or an enhanced code alone where
    Postfix dropped the code (``milter-reject``: "5.7.1 text")."""
    text = text.strip()
    m = _REPLY.match(text)
    if m is None:
        e = _ENHANCED.match(text)
        return Reply("", e.group(0) if e else None, text, moment)
    code, rest = m.group(1), m.group(2)
    parts = re.split(rf"\s{code}[ -](?=\S)", rest) if f"{code}-" in text or f" {code} " in rest else [rest]
    first = parts[0].strip()
    e = _ENHANCED.match(first)
    enhanced = e.group(0) if e is not None and e.group(1) == code[0] else None
    joined = [first]
    for part in parts[1:]:
        part = part.strip()
        if enhanced is not None and part.startswith(enhanced):
            part = part[len(enhanced):].strip()
        if part:
            joined.append(part)
    return Reply(code, enhanced, " ".join(joined), moment)


def _in_reply(command: str) -> Stage:
    c = command.lower()
    for word, stage in _IN_REPLY:
        if c.startswith(word):
            return stage
    return Stage.DOT


def _own_stage(text: str, klass: str) -> Stage:
    """The step where Postfix's own explanation (no reply) places the break."""
    low = text.lower()
    if low.startswith("delivery temporarily suspended: "):
        low = low[32:]
    w = _WHILE.search(low)
    if w is not None:
        for word, stage in _WHILE_STAGES:
            if word in w.group(1):
                return stage
    if (low.startswith("connect to ") or "name not found" in low or "name service error" in low
            or "loops back to myself" in low or "no route to host" in low or "network is unreachable" in low):
        return Stage.CONNECT
    if "tls" in low and ("required" in low or "handshake" in low or "cannot start" in low):
        return Stage.STARTTLS
    if _SIZE.match(low):
        return Stage.MAIL
    return Stage.DOT if klass == "2" else Stage.RCPT


def _trailer(rest: str) -> tuple[str, re.Match[str]] | None:
    """The reply text and the ``from=<> to=<> proto= helo=<>`` trailer of a refusal, cut at the
    last "; " where the trailer begins (reply texts hold "; " too)."""
    at = len(rest)
    while True:
        at = rest.rfind("; ", 0, at)
        if at < 0:
            return None
        m = _TRAILER.fullmatch(rest, at + 2)
        if m is not None:
            return rest[:at], m


def _redacted(lines: list[str]) -> list[str]:
    """Credentials in a dialogue logged by ``debug_peer_list`` (RFC 4954 §4): AUTH's initial
    response and every client line after a 334 challenge."""
    out = []
    challenge = False
    for line in lines:
        d = _DEBUG.search(line.split(": ", 1)[1] if ": " in line else "")
        if d is not None:
            payload = d.group(3)
            a = _AUTH.match(payload)
            if a is not None:
                line = line[: len(line) - len(payload)] + a.group(1) + REDACTED
            elif challenge and not payload[:3].isdigit():
                line = line[: len(line) - len(payload)] + REDACTED
            challenge = payload.startswith("334")
        out.append(line)
    return out


def _looks_like_syslog(text: str) -> bool:
    """A line of another program in a layout we know (no defect), e.g. without ``[pid]``."""
    return bool(re.match(r"(?:[A-Z][a-z]{2} [ 0-3]?\d \d\d:\d\d:\d\d|\d{4}-\d\d-\d\dT\S+) \S+ \S", text))


def make_format() -> PostfixFormat:
    return PostfixFormat()
