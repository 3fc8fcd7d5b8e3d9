"""``smtp-shipper parse [FILE ...]``: transcripts → delivery documents as NDJSON on stdout.

Needs no OpenSearch. A summary line and one warning per defect go to stderr; the exit status
is non-zero only for unreadable input (or, with ``--strict``, for the first defect).
"""

from __future__ import annotations

import argparse
import json
import socket
import sys

from shipper import formats
from shipper.errors import ConfigError, ExitStatus, ShipperError
from shipper.localtime import resolve_zone
from shipper.model import Defect, Direction
from shipper.pipeline import ParseOptions, ParseStats, documents_of_files
from shipper.terminal import printable


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="*", metavar="FILE",
                        help="log files or globs ('-' or none: stdin); .gz is read transparently")
    parser.add_argument("--format", default="xeams", choices=formats.names(),
                        help="log format (default: %(default)s)")
    parser.add_argument("--direction", default="auto", choices=("outbound", "inbound", "auto"),
                        help="which side wrote the log; auto: from the file name "
                             "(SMTPOutboundConversation* → outbound, SMTPConversation*/"
                             "SMTPProxyConversation* → inbound), else from 'connection to:/from:' "
                             "lines (default: %(default)s)")
    parser.add_argument("--timezone", default=None, metavar="ZONE",
                        help="IANA zone of the log's timestamps, e.g. America/New_York "
                             "(default: this machine's zone)")
    parser.add_argument("--year", type=int, default=None, metavar="YEAR",
                        help="year of the first line, for logs whose timestamps carry none (Postfix's "
                             "classic syslog prefix; default: from the file's modification time)")
    parser.add_argument("--host-name", default=None,
                        help="host.name of the documents (default: this machine's host name)")
    parser.add_argument("--strict", action="store_true",
                        help="fail on the first malformed line instead of reporting and skipping it")


def _warn(defect: Defect) -> None:
    print(printable(f"warning: {defect}"), file=sys.stderr)


def options_from_args(args: argparse.Namespace) -> ParseOptions:
    try:
        tz = resolve_zone(args.timezone)
    except ValueError as exc:
        raise ConfigError(f"--timezone: {exc}") from exc
    direction = None if args.direction == "auto" else Direction(args.direction)
    return ParseOptions(format=args.format, direction=direction, tz=tz,
                        host_name=args.host_name or socket.gethostname(), strict=args.strict, year=args.year,
                        on_defect=_warn)


def run(args: argparse.Namespace) -> int:
    options = options_from_args(args)
    stats = ParseStats()
    out = sys.stdout
    dumps = json.JSONEncoder(ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode
    try:
        for doc in documents_of_files(args.files, options, stats):
            out.write(dumps(doc))
            out.write("\n")
        out.flush()
    except ShipperError:
        if stats.lines:  # how far it got (e.g. up to a --strict defect); nothing to say before any line
            print(f"smtp-shipper parse: {stats.summary()}", file=sys.stderr)
        raise
    print(f"smtp-shipper parse: {stats.summary()}", file=sys.stderr)
    return int(ExitStatus.OK)
