"""What the daemon tells about itself: the one-line status (systemd's STATUS=, the periodic log
line), the last error of the output, and the times in ``status.json``."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

STATUS_FILE = "status.json"


class LastError(logging.Handler):
    """Remembers the last warning of the output (BulkShipper logs each failed round there while
    it retries forever), for ``status`` and systemd's STATUS= line."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.message: str | None = None
        self.time: float | None = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.message = record.getMessage().splitlines()[0][:300]
        except Exception:  # noqa: BLE001 — a logging handler must never raise
            return
        self.time = record.created


def iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def human(n: float) -> str:
    for unit in ("", "k", "M", "G"):
        if abs(n) < 1000:
            return f"{n:.0f}{unit}" if unit == "" else f"{n:.1f}{unit}"
        n /= 1000
    return f"{n:.1f}T"


def status_line(status: dict[str, Any]) -> str:
    """The one-line summary for systemd's STATUS= and the periodic log line."""
    parts = [f"shipping {len(status['files'])} files",
             f"{human(status['docs_per_min'])} docs/min",
             f"lag {status['lag_seconds']:.1f} s"]
    if status.get("paused"):
        parts.append("reading paused (output behind)")
    if status.get("last_error") and status.get("last_error_recent", True):
        parts.append(f"last error {status['last_error'][:120]}")
    return ", ".join(parts)
