"""systemd integration without libsystemd: sd_notify, the watchdog, journald-friendly logging.

The notify protocol (sd_notify(3)): newline-separated ``KEY=VALUE`` assignments sent as one
datagram to the AF_UNIX socket named by ``$NOTIFY_SOCKET``; a name starting with ``@`` is in the
abstract namespace (the ``@`` stands for a leading NUL byte).

Logging (sd-daemon(3)): under systemd, stderr goes to the journal, which adds its own
timestamps; a line may start with ``<N>`` (syslog priority) to set its level.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from collections.abc import Mapping
from typing import TextIO

from shipper.terminal import PrintableFormatter, printable

log = logging.getLogger(__name__)

# sd-daemon(3) priorities
SD_PRIORITY = {
    logging.CRITICAL: 2,  # SD_CRIT
    logging.ERROR: 3,     # SD_ERR
    logging.WARNING: 4,   # SD_WARNING
    logging.INFO: 6,      # SD_INFO
    logging.DEBUG: 7,     # SD_DEBUG
}


def _priority(levelno: int) -> int:
    for level in (logging.CRITICAL, logging.ERROR, logging.WARNING, logging.INFO):
        if levelno >= level:
            return SD_PRIORITY[level]
    return SD_PRIORITY[logging.DEBUG]


class Notifier:
    """Speaks sd_notify on ``$NOTIFY_SOCKET``; does nothing when not run by systemd."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self.address = _socket_address(env.get("NOTIFY_SOCKET", ""))
        self._sock: socket.socket | None = None
        self.watchdog_interval = watchdog_interval(env)
        self._last_ping = 0.0

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, **fields: str | int) -> bool:
        """Send ``KEY=VALUE`` lines, e.g. ``notify(READY=1, STATUS="up")``. Never raises: losing
        a status message must not stop the daemon."""
        if self.address is None:
            return False
        payload = "\n".join(f"{k}={v}" for k, v in fields.items()).encode()
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(payload, self.address)
            return True
        except OSError as exc:
            log.debug("sd_notify to %r failed: %s", self.address, exc)
            return False

    def ready(self, status: str | None = None) -> bool:
        fields: dict[str, str | int] = {"READY": 1, "MAINPID": os.getpid()}
        if status:
            fields["STATUS"] = status
        return self.notify(**fields)

    def status(self, text: str) -> bool:
        # The status line carries the last error, which may quote a peer (systemctl status shows it).
        return self.notify(STATUS=printable(text))

    def stopping(self, status: str | None = None) -> bool:
        fields: dict[str, str | int] = {"STOPPING": 1}
        if status:
            fields["STATUS"] = status
        return self.notify(**fields)

    def reloading(self) -> bool:
        # MONOTONIC_USEC lets systemd (>= 253) match the reload to its request (sd_notify(3)).
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify(RELOADING=1, MONOTONIC_USEC=usec)

    def watchdog(self, now: float | None = None) -> bool:
        """Ping the watchdog if half of WatchdogSec has passed since the last ping."""
        if self.watchdog_interval is None:
            return False
        now = time.monotonic() if now is None else now
        if now - self._last_ping < self.watchdog_interval:
            return False
        self._last_ping = now
        return self.notify(WATCHDOG=1)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _socket_address(value: str) -> str | bytes | None:
    if not value:
        return None
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    return None  # sd_notify ignores other forms (vsock is not supported here)


def watchdog_interval(env: Mapping[str, str]) -> float | None:
    """Seconds between watchdog pings: half of ``$WATCHDOG_USEC`` (as sd_watchdog_enabled(3)
    recommends), if the watchdog is meant for this process (``$WATCHDOG_PID``)."""
    usec = env.get("WATCHDOG_USEC")
    if not usec:
        return None
    pid = env.get("WATCHDOG_PID")
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 2e6 if value > 0 else None


def under_systemd(env: Mapping[str, str] | None = None) -> bool:
    env = os.environ if env is None else env
    return bool(env.get("JOURNAL_STREAM") or env.get("INVOCATION_ID"))


class JournalFormatter(PrintableFormatter):
    """``<N>logger: message`` — the journal adds time, host and unit itself."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        prefix = f"<{_priority(record.levelno)}>"
        # Each line of a multi-line message (a traceback) gets the priority too.
        return "\n".join(prefix + line for line in text.splitlines() or [""])


def setup_logging(level: str | int = "info", *, env: Mapping[str, str] | None = None,
                  stream: TextIO | None = None) -> logging.Handler:
    """Configure the root logger for the daemon: journald-friendly under systemd, timestamps
    on a terminal. Replaces handlers installed earlier (the CLI's basicConfig)."""
    stream = sys.stderr if stream is None else stream
    handler = logging.StreamHandler(stream)
    if under_systemd(env):
        handler.setFormatter(JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(PrintableFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    if isinstance(level, str):
        level = getattr(logging, level.upper(), logging.INFO)
    root.setLevel(level)
    # opensearch-py logs every failed request at WARNING; our retry loop says it once.
    logging.getLogger("opensearch").setLevel(max(level, logging.ERROR))
    logging.getLogger("urllib3").setLevel(max(level, logging.ERROR))
    return handler
