"""`smtp-shipper trace ADDRESS`: the delivery attempts to or from an address, newest first.

    smtp-shipper trace synametrics@gmail.com
    smtp-shipper trace @gmail.com --since 7d --verdict rejected
    smtp-shipper trace bob@example.com --transcript
    smtp-shipper trace bob@example.com --json | jq .smtp.verdict

The query and the formatting are pure functions (``build_query``, ``format_table``), tested
without a cluster. Every value shown comes from a document, and much of it from the remote peer
(addresses, reply text, the transcript): it is shown through ``shipper.terminal.printable``, so
that control characters appear as ``\x1b`` instead of reaching the terminal; ``--json`` is exact.

A session's transcript is written once in a large session (``shipper.limits``): the documents
after the budget name the document that holds it (``smtp.transcript_ref``), and ``--transcript``
fetches it from there (``fill_transcripts``), so every recipient shows it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import shutil
import sys
from collections.abc import Sequence
from typing import Any

from shipper import config
from shipper.documents import get_field
from shipper.errors import ExitStatus, ShipperError
from shipper.opensearch import make_client, translate_errors
from shipper.terminal import json_line, printable

VERDICTS = ("delivered", "rejected", "deferred", "failed")
_RELATIVE = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class UsageError(ShipperError):
    exit_status = ExitStatus.USAGE


def parse_since(text: str, now: dt.datetime) -> dt.datetime:
    """``24h``, ``30m``, ``7d``, ``2w`` before ``now``, or an ISO date/time (local zone when
    it has none)."""
    match = _RELATIVE.match(text)
    if match:
        return now - dt.timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    try:
        when = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(
            f"--since {text!r}: expected a duration (30m, 24h, 7d, 2w) or an ISO date (2024-03-21, 2024-03-21T11:00)"
        ) from None
    if when.tzinfo is None:
        when = when.astimezone()  # naive: the local zone, like the times we print
    return when


def build_query(address: str, *, since: dt.datetime | None, verdict: str | None) -> dict[str, Any]:
    """Exact, case-insensitive match of the recipient or the sender; ``@domain`` matches the
    recipient domain."""
    address = address.strip()
    if address.startswith("@"):
        who: dict[str, Any] = {"term": {"smtp.recipient_domain": address[1:].lower()}}
    else:
        # case_insensitive term queries (OpenSearch >= 1.0) find "Bob@Example.com" stored as
        # written, whatever case the user typed; lower-cased and original are both covered.
        who = {
            "bool": {
                "should": [
                    {"term": {field: {"value": address, "case_insensitive": True}}}
                    for field in ("email.to.address", "email.from.address")
                ],
                "minimum_should_match": 1,
            }
        }
    filters: list[dict[str, Any]] = [who]
    if since is not None:
        filters.append({"range": {"@timestamp": {"gte": since.isoformat()}}})
    if verdict:
        filters.append({"term": {"smtp.verdict": verdict}})
    return {"bool": {"filter": filters}}


def local_time(value: str | None, tz: dt.tzinfo | None = None) -> str:
    """The time in this machine's zone (or ``tz``), with the zone's name: the transcript below a
    row shows the mail server's own clock, which may be another zone."""
    if not value:
        return "?"
    try:
        when = dt.datetime.fromisoformat(value)  # Python >= 3.11 reads "Z" and offsets
    except ValueError:
        return value
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S %Z")


def _cut(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


COLUMNS = ("time", "dir", "sender → recipient", "remote ip", "verdict", "reason", "code", "reply")


def row(doc: dict[str, Any], tz: dt.tzinfo | None = None) -> tuple[str, ...]:
    """The cells of one attempt, each ``printable``."""
    sender = get_field(doc, "email.from.address")
    sender = "<>" if sender == "" else (sender or "?")
    recipient = get_field(doc, "email.to.address") or "(no recipient)"
    code = get_field(doc, "smtp.reply.code") or "-"
    enhanced = get_field(doc, "smtp.reply.enhanced")
    cells = (
        local_time(get_field(doc, "@timestamp"), tz),
        {"outbound": "out", "inbound": "in"}.get(get_field(doc, "smtp.direction") or "", "?"),
        f"{sender} → {recipient}",
        get_field(doc, "smtp.remote.ip") or "-",
        get_field(doc, "smtp.verdict") or "?",
        get_field(doc, "smtp.reason") or "-",  # why not delivered (docs/reasons.md); absent when delivered
        f"{code} {enhanced}" if enhanced else code,
        get_field(doc, "smtp.reply.text") or (f"(no reply; broke off at {get_field(doc, 'smtp.stage')})" if get_field(doc, "smtp.stage") else ""),
    )
    return tuple(printable(str(cell)) for cell in cells)


def format_table(docs: Sequence[dict[str, Any]], *, tz: dt.tzinfo | None = None, width: int = 120) -> str:
    """A plain-text table; the reply column takes what is left of ``width`` and is cut short."""
    rows = [row(doc, tz) for doc in docs]
    fixed = len(COLUMNS) - 1
    widths = [max(len(COLUMNS[i]), *(len(r[i]) for r in rows)) for i in range(fixed)]
    reply_width = max(20, width - sum(widths) - 2 * fixed)
    lines = []
    header = [c.ljust(w) for c, w in zip(COLUMNS, widths)] + [COLUMNS[-1]]
    lines.append("  ".join(header).rstrip())
    for r in rows:
        cells = [c.ljust(w) for c, w in zip(r, widths)] + [_cut(r[-1], reply_width)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def format_transcript(doc: dict[str, Any], tz: dt.tzinfo | None = None) -> str:
    r = row(doc, tz)
    reason = f" ({r[5]})" if r[5] != "-" else ""
    title = f"── {r[0]}  {r[2]}  {r[4]}{reason} {r[6]}  session {get_field(doc, 'smtp.session_id') or '?'}"
    source = get_field(doc, "log.file.path")
    if source:
        title += f"  ({source}:{get_field(doc, 'log.offset')})"
    transcript = get_field(doc, "smtp.transcript")
    if transcript is None:
        ref = get_field(doc, "smtp.transcript_ref")
        transcript = (f"(the transcript is in document {ref} of the same session, which was not found)"
                      if ref else "(no transcript stored)")
    return f"{printable(title)}\n{printable(transcript.rstrip(), keep_newlines=True)}\n"


def fill_transcripts(client: Any, index: str, docs: Sequence[dict[str, Any]]) -> None:
    """Give each document that names the one holding its session's transcript
    (``smtp.transcript_ref``, docs/fields.md) that transcript, fetched in one search."""
    refs = sorted({ref for doc in docs
                   if get_field(doc, "smtp.transcript") is None and (ref := get_field(doc, "smtp.transcript_ref"))})
    if not refs:
        return
    response = client.search(index=index, body={"query": {"ids": {"values": refs}}, "size": len(refs),
                                                "_source": ["smtp.transcript"]},
                             ignore_unavailable=True, allow_no_indices=True)
    found = {hit["_id"]: get_field(hit["_source"], "smtp.transcript") for hit in response["hits"]["hits"]}
    for doc in docs:
        transcript = found.get(get_field(doc, "smtp.transcript_ref") or "")
        if transcript is not None and get_field(doc, "smtp.transcript") is None:
            doc["smtp"]["transcript"] = transcript


def empty_message(address: str, since_text: str | None, verdict: str | None, prefix: str) -> str:
    what = f"no {verdict} deliveries" if verdict else "no deliveries"
    when = f"since {since_text}" if since_text else f"in any {prefix}-* index"
    return f"{what} found for {address} {when}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    config.add_config_argument(parser)
    parser.add_argument("address", metavar="ADDRESS", help="an e-mail address (sender or recipient), or @domain for a recipient domain")
    parser.add_argument("--since", metavar="WHEN", help="only attempts since: 30m, 24h, 7d, 2w or an ISO date (default: all)")
    parser.add_argument("--verdict", choices=VERDICTS, help="only attempts with this verdict")
    parser.add_argument("--limit", type=int, default=20, metavar="N", help="at most N attempts, newest first (default 20)")
    parser.add_argument("--transcript", action="store_true", help="print the whole SMTP conversation of each attempt (with --json: add smtp.transcript to documents that name the one holding it)")
    parser.add_argument("--json", action="store_true", help="one JSON document per line, for scripts")


def run(args: argparse.Namespace) -> int:
    settings = config.settings_from_args(args)
    os_settings = settings.opensearch
    if args.limit < 1:
        raise UsageError("--limit must be at least 1")
    since = parse_since(args.since, dt.datetime.now(dt.UTC)) if args.since else None
    query = build_query(args.address, since=since, verdict=args.verdict)
    client = make_client(os_settings)
    with translate_errors(os_settings, "search"):
        response = client.search(
            index=f"{os_settings.index_prefix}-*",
            body={"query": query, "sort": [{"@timestamp": {"order": "desc"}}], "size": args.limit},
            ignore_unavailable=True,
            allow_no_indices=True,
        )
    docs = [hit["_source"] for hit in response["hits"]["hits"]]
    if args.transcript:
        with translate_errors(os_settings, "search"):
            fill_transcripts(client, f"{os_settings.index_prefix}-*", docs)
    out = sys.stdout
    if args.json:
        for doc in docs:
            out.write(json_line(doc) + "\n")
        return int(ExitStatus.OK)
    if not docs:
        print(empty_message(args.address, args.since, args.verdict, os_settings.index_prefix))
        return int(ExitStatus.OK)
    if args.transcript:
        for doc in docs:
            out.write(format_transcript(doc) + "\n")
    else:
        out.write(format_table(docs, width=shutil.get_terminal_size((160, 24)).columns) + "\n")
    total = response["hits"]["total"]
    total_value = total["value"] if isinstance(total, dict) else total
    if total_value > len(docs):
        more = f"{total_value}+" if isinstance(total, dict) and total.get("relation") == "gte" else str(total_value)
        print(f"({len(docs)} of {more} shown, newest first; --limit for more)")
    return int(ExitStatus.OK)
