"""The one place where failures become exit codes (cf. httpie's ExitStatus).

Every known failure is a ``ShipperError`` subclass carrying a message meant for a
mail administrator; ``shipper.cli.main`` prints it and returns its exit status.
"""

from __future__ import annotations

import enum


class ExitStatus(enum.IntEnum):
    OK = 0
    ERROR = 1            # unexpected failure (a bug): traceback is printed
    USAGE = 2            # bad command line (argparse's own code)
    CONFIG = 3           # the configuration file is missing, unreadable or invalid
    INPUT = 4            # an input file is missing or unreadable
    CONNECTION = 5       # OpenSearch (or Dashboards) unreachable, TLS or auth failure
    REFUSED = 6          # OpenSearch answered but refused the request
    PARSE_STRICT = 7     # --strict and the input had a defect
    INTERRUPTED = 130    # Ctrl-C outside the daemon's normal shutdown path


class ShipperError(Exception):
    """A failure we expected and can explain in one message."""

    exit_status: ExitStatus = ExitStatus.ERROR

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\nhint: {self.hint}"


class ConfigError(ShipperError):
    exit_status = ExitStatus.CONFIG


class InputError(ShipperError):
    exit_status = ExitStatus.INPUT


class ConnectionFailed(ShipperError):
    exit_status = ExitStatus.CONNECTION


class RequestRefused(ShipperError):
    exit_status = ExitStatus.REFUSED


class StrictParseError(ShipperError):
    exit_status = ExitStatus.PARSE_STRICT
