"""`smtp-shipper run`: the daemon — follow the configured log files and ship them.

    smtp-shipper run                      # forever (systemd: Type=notify)
    smtp-shipper run --once               # drain what is there now, then exit (cron, tests)
    smtp-shipper run --once --flush-open  # ... and ship sessions still open at the end as incomplete
"""

from __future__ import annotations

import argparse

from shipper import config
from shipper.errors import ExitStatus


def add_arguments(parser: argparse.ArgumentParser) -> None:
    config.add_config_argument(parser)
    parser.add_argument("--once", action="store_true",
                        help="read every file to its current end, ship, checkpoint and exit")
    parser.add_argument("--flush-open", action="store_true",
                        help="with --once: ship sessions still open at the end as incomplete documents "
                             "(default: leave them open, the checkpoint stays before them)")
    parser.add_argument("--stop-timeout", type=float, default=None, metavar="SECONDS",
                        help="at SIGTERM, how long to wait for OpenSearch to acknowledge what was read "
                             "(default 20; keep it below systemd's TimeoutStopSec)")


def run(args: argparse.Namespace) -> int:
    from shipper.daemon import STOP_TIMEOUT, Daemon
    from shipper.systemd import setup_logging

    settings = config.settings_from_args(args)
    level = "debug" if args.verbose > 1 else settings.log_level
    setup_logging(level)

    def reload() -> config.Settings:
        return config.settings_from_args(args)

    daemon = Daemon(settings, reload=reload, once=args.once, flush_open=args.flush_open,
                    stop_timeout=args.stop_timeout if args.stop_timeout is not None else STOP_TIMEOUT)
    daemon.install_signal_handlers()
    daemon.run()
    return int(ExitStatus.OK)
