"""`smtp-shipper status`: what the daemon is doing, from ``<state_dir>/status.json``.

The daemon rewrites that file every few seconds; this command only reads it, so it works
for any user who can read the state directory, without talking to the daemon or OpenSearch.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from typing import Any

from shipper import config
from shipper.errors import ExitStatus, ShipperError
from shipper.terminal import printable


class StatusUnavailable(ShipperError):
    exit_status = ExitStatus.INPUT


def add_arguments(parser: argparse.ArgumentParser) -> None:
    config.add_config_argument(parser)
    parser.add_argument("--json", action="store_true", help="print status.json as it is")


def _age(iso: str | None) -> str:
    if not iso:
        return "never"
    t = dt.datetime.fromisoformat(iso)
    secs = (dt.datetime.now(dt.UTC) - t).total_seconds()
    return f"{secs:.0f}s ago" if secs < 120 else f"{secs / 60:.0f}m ago"


def _running(pid: int) -> bool:
    """Whether a process with this pid exists (status.json outlives `run --once` and crashes)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, but another user's (the service user's)
        return True
    return True


def format_status(status: dict[str, Any], *, running: bool = True) -> str:
    """A human summary: one line per file, then the counters; every line ``printable``."""
    from shipper.status import status_line

    state = "" if running else " (not running: this is its last status)"
    out = [f"smtp-shipper pid {status['pid']}{state}, status updated {_age(status['updated'])}: {status_line(status)}"]
    out.append(f"buffered {status['buffered_bytes']} bytes (max seen {status['max_buffered_bytes_seen']}, "
               f"limit {status['max_buffered_bytes']}), {status['in_flight_documents']} documents in flight")
    if status.get("last_error"):
        out.append(f"last error ({_age(status.get('last_error_time'))}): {status['last_error']}")
    out.append("")
    paths = [f["path"] if f["state"] == "following" else f"{f['path']} ({f['state']})" for f in status["files"]]
    width = max([4, *map(len, paths)])
    out.append(f"{'FILE':<{width}} {'POSITION':>12} {'SIZE':>12} {'LAG':>10} {'OPEN':>5} {'DEFECTS':>7}  LAST SHIPPED")
    for path, f in zip(paths, status["files"]):
        out.append(f"{path:<{width}} {f['position']:>12} {f['size']:>12} {f['lag_bytes']:>10} "
                   f"{f['sessions_open']:>5} {f['defects']:>7}  {_age(f['last_shipped'])}")
    out.append("")
    counters = status.get("counters", {})
    out.append("counters: " + (", ".join(f"{k}={v}" for k, v in sorted(counters.items())) or "none yet"))
    # last_error can quote OpenSearch quoting a document, hence a peer: never raw to the terminal
    return "\n".join(printable(line) for line in out)


def run(args: argparse.Namespace) -> int:
    from shipper.status import STATUS_FILE

    settings = config.settings_from_args(args)
    path = os.path.join(settings.state_dir, STATUS_FILE)
    try:
        with open(path, encoding="utf-8") as fh:
            status = json.load(fh)
    except FileNotFoundError:
        raise StatusUnavailable(f"{path} does not exist",
                                hint="is `smtp-shipper run` running with this configuration (state_dir)?") from None
    except (OSError, ValueError) as exc:
        raise StatusUnavailable(f"cannot read {path}: {exc}") from None
    if args.json:
        json.dump(status, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        print(format_status(status, running=_running(int(status["pid"]))))
    return int(ExitStatus.OK)
