"""Command line: builds the parser, dispatches to one module per command, and is the
single exception → exit-code boundary (see ``shipper.errors``).

Each command lives in ``shipper/commands/<name>.py`` and exposes two functions:

* ``add_arguments(parser: argparse.ArgumentParser) -> None``
* ``run(args: argparse.Namespace) -> int``  (returns an ``ExitStatus``)
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from shipper import __version__
from shipper.errors import ExitStatus, ShipperError
from shipper.terminal import PrintableFormatter, printable

# command name → (module, one-line help). Order is the order of `--help`.
COMMANDS: dict[str, tuple[str, str]] = {
    "parse": ("shipper.commands.parse", "parse transcripts and write delivery documents as NDJSON"),
    "setup": ("shipper.commands.setup", "install index templates, ISM policy, monitors and dashboards"),
    "run": ("shipper.commands.run", "follow the configured log files and ship them (the daemon)"),
    "backfill": ("shipper.commands.backfill", "parse and ship old (rotated, gzipped) logs once"),
    "trace": ("shipper.commands.trace", "show the delivery attempts to or from an address"),
    "check-config": ("shipper.commands.check_config", "validate the configuration file"),
    "status": ("shipper.commands.status", "show per-file positions and counters of the daemon"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="smtp-shipper",
        description="Turn SMTP conversation transcripts into searchable delivery records in OpenSearch.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (repeatable)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(command_parser)
        command_parser.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(PrintableFormatter("%(levelname)s %(name)s: %(message)s"))
        logging.basicConfig(level=logging.WARNING - 10 * min(args.verbose, 2), handlers=[handler])
    try:
        return int(args._run(args))
    except ShipperError as exc:
        # A message may quote what a peer wrote (a --strict defect, OpenSearch refusing a value).
        print(printable(f"smtp-shipper {args.command}: error: {exc}", keep_newlines=True), file=sys.stderr)
        return int(exc.exit_status)
    except KeyboardInterrupt:
        print(f"smtp-shipper {args.command}: interrupted", file=sys.stderr)
        return int(ExitStatus.INTERRUPTED)
    except BrokenPipeError:
        # `smtp-shipper parse big.log | head`: the reader went away; not an error of ours.
        sys.stderr.close()
        return int(ExitStatus.OK)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
