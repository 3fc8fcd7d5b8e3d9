"""Local timestamps as logged → zone-aware datetimes, and the DST fold of a stream. Pure.

Mail servers log wall-clock time without a zone ("2024-10-27 02:30:00,000"). The zone is
configured (``--timezone``, ``inputs[].timezone``; default the machine's), and one hour a year
repeats: when the clock of a log goes back by about an hour into such an hour, its lines are in
the second pass, ``fold=1`` (PEP 495), until that hour is over. ``StreamClock`` follows this
along the order of lines in a stream; ``LocalTime`` makes the datetimes.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from shipper.cache import Bounded

# An aware datetime plus a timedelta is wall-clock arithmetic that keeps the tzinfo (fold 0),
# so a time is exactly its minute plus these: the zone is consulted once per minute.
_MILLIS = {f"{ms:03d}": timedelta(milliseconds=ms) for ms in range(1000)}
_SECONDS = {f"{s:02d}": timedelta(seconds=s) for s in range(60)}


def resolve_zone(name: str | None) -> tzinfo:
    """The IANA zone ``name``, or the machine's local zone when ``name`` is None/"local".
    ``ValueError`` for an unknown name."""
    if name and name.lower() != "local":
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {name!r} (expected an IANA name such as "
                             f"Europe/Berlin or America/New_York)") from exc
    return _local_zone()


def _local_zone() -> tzinfo:
    env = os.environ.get("TZ", "").lstrip(":")
    candidates = [env] if env else []
    try:  # /etc/localtime → /usr/share/zoneinfo/Europe/Berlin
        target = os.path.realpath("/etc/localtime")
        if "zoneinfo/" in target:
            candidates.append(target.split("zoneinfo/", 1)[1])
    except OSError:
        pass
    try:
        with open("/etc/timezone", encoding="utf-8") as fh:
            candidates.append(fh.read().strip())
    except OSError:
        pass
    for candidate in candidates:
        try:
            return ZoneInfo(candidate)
        except (ZoneInfoNotFoundError, ValueError):
            continue
    try:
        with open("/etc/localtime", "rb") as fh:
            return ZoneInfo.from_file(fh, key="localtime")
    except (OSError, ValueError):
        return ZoneInfo("UTC")


class LocalTime:
    """``"YYYY-MM-DD HH:MM:SS,mmm"`` in ``tz`` → an aware datetime."""

    def __init__(self, tz: tzinfo) -> None:
        self.tz = tz
        # Zone-aware seconds and minutes (fold 0): a log's times repeat to the second while
        # sessions interleave, and to the minute in a quiet log; building a datetime from digits
        # costs several look-ups and additions (bench/parse_bench.py --stages).
        self._seconds: Bounded[str, datetime] = Bounded(4096)
        self._minutes: Bounded[str, datetime] = Bounded(1024)

    def at(self, ts: str, fold: int = 0) -> datetime:
        second = self._seconds.get(ts[:19])
        millis = _MILLIS.get(ts[20:23])
        if second is None or millis is None or fold:
            return self._slow(ts, fold)
        return second + millis

    def _slow(self, ts: str, fold: int) -> datetime:
        if fold:
            return self._make(ts, fold)
        minute = self._minutes.get(ts[:16])
        if minute is None:
            minute = self._minutes.put(ts[:16], self._make(ts[:16] + ":00,000", 0))
        seconds = _SECONDS.get(ts[17:19])
        millis = _MILLIS.get(ts[20:23])
        if seconds is None or millis is None:  # digits other than 0-9 (the layouts' \d allows them)
            return self._make(ts, 0)
        return self._seconds.put(ts[:19], minute + seconds) + millis

    def ambiguous(self, ts: str) -> bool:
        """Whether ``ts`` names a wall time that occurs twice (a DST fold)."""
        early = self.at(ts)
        return early.utcoffset() != early.replace(fold=1).utcoffset()

    def _make(self, ts: str, fold: int) -> datetime:
        return datetime(int(ts[0:4]), int(ts[5:7]), int(ts[8:10]), int(ts[11:13]),
                        int(ts[14:16]), int(ts[17:19]), int(ts[20:23]) * 1000,
                        tzinfo=self.tz, fold=fold)


class StreamClock:
    """The fold of a stream's local time, line after line. Callers compare timestamps
    themselves (a string comparison per line) and call ``advance`` only when the clock went
    back or a fold is under way, the rare cases."""

    def __init__(self, times: LocalTime) -> None:
        self.times = times
        self.fold = 0

    def advance(self, last: str, ts: str) -> int:
        """The fold at ``ts``, the line after one at ``last``."""
        if ts < last:
            self._went_back(last, ts)
        elif self.fold and not self.times.ambiguous(ts):
            self.fold = 0
        return self.fold

    def _went_back(self, last: str, ts: str) -> None:
        # Local time repeats an hour when DST ends. When the log's clock jumps back into such
        # an hour, the second pass is fold=1 (PEP 495) until the ambiguous hour is over.
        if ts[:15] == last[:15] or ts[:10] != last[:10]:
            return  # same ten minutes (threads logging out of order), or a new file/day
        back = (int(last[11:13]) - int(ts[11:13])) * 60 + int(last[14:16]) - int(ts[14:16])
        if back >= 30 and self.times.ambiguous(ts):
            self.fold = 1
