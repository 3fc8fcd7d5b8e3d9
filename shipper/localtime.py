"""Local timestamps as logged → zone-aware datetimes, and the DST fold of a stream. Pure.

Mail servers log wall-clock time without a zone ("2024-10-27 02:30:00,000"). The zone is
configured (``--timezone``, ``inputs[].timezone``; default the machine's), and one hour a year
repeats: when the clock of a log goes back by about an hour into such an hour, its lines are in
the second pass, ``fold=1`` (PEP 495), until that hour is over. ``StreamClock`` follows this
along the order of lines in a stream; ``LocalTime`` makes the ``Moment``s documents carry.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from shipper.cache import Bounded
from shipper.model import Moment

_MILLIS = {f"{ms:03d}": ms * 1000 for ms in range(1000)}  # "869" → its microseconds
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_new = tuple.__new__  # a Moment without NamedTuple's Python-level __new__: several per session


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
    """``"YYYY-MM-DD HH:MM:SS,mmm"`` in ``tz`` → a ``Moment`` (ISO text and POSIX time).

    A log's times repeat to the second while sessions interleave, and to the minute in a quiet
    log, while a datetime's isoformat and UTC arithmetic cost more than the rest of a document
    (bench/parse_bench.py --stages): so the text around the milliseconds and the POSIX time are
    made once per second, from the minute's when its offset is the same all minute long."""

    def __init__(self, tz: tzinfo) -> None:
        self.tz = tz
        # "YYYY-MM-DD HH:MM:SS" (fold 0) → ("YYYY-MM-DDTHH:MM:SS", "+HH:MM", POSIX µs of it)
        self._seconds: Bounded[str, tuple[str, str, int]] = Bounded(4096)
        # "YYYY-MM-DD HH:MM" (fold 0) → the same for its first second; None: not one offset all minute
        self._minutes: Bounded[str, tuple[str, str, int] | None] = Bounded(1024)

    def at(self, ts: str, fold: int = 0) -> Moment:
        second = self._seconds.get(ts[:19])
        micros = _MILLIS.get(ts[20:23])
        if second is None or micros is None or fold:
            return self._slow(ts, fold)
        head, tail, base = second
        return _new(Moment, (f"{head}.{ts[20:23]}{tail}", base + micros))

    def datetime(self, ts: str, fold: int = 0) -> datetime:
        """The aware datetime of ``ts``."""
        return datetime(int(ts[0:4]), int(ts[5:7]), int(ts[8:10]), int(ts[11:13]),
                        int(ts[14:16]), int(ts[17:19]), int(ts[20:23]) * 1000,
                        tzinfo=self.tz, fold=fold)

    def ambiguous(self, ts: str) -> bool:
        """Whether ``ts`` names a wall time that occurs twice (a DST fold)."""
        early = self.datetime(ts)
        return early.utcoffset() != early.replace(fold=1).utcoffset()

    def _slow(self, ts: str, fold: int) -> Moment:
        if fold or not ts.isascii() or ts[20:23] not in _MILLIS:  # digits other than 0-9 (\d allows them)
            return _moment(self.datetime(ts, fold))
        second = self._seconds.get(ts[:19])
        if second is None:
            second = self._seconds.put(ts[:19], self._second(ts))
        head, tail, base = second
        return _new(Moment, (f"{head}.{ts[20:23]}{tail}", base + _MILLIS[ts[20:23]]))

    def _second(self, ts: str) -> tuple[str, str, int]:
        key = ts[:16]
        minute = self._minutes[key] if key in self._minutes else self._minutes.put(key, self._minute(ts))
        if minute is None:  # the offset changes within this minute: this second on its own
            return _parts(self.datetime(ts[:19] + ",000"))
        head, tail, base = minute
        return f"{head}:{ts[17:19]}", tail, base + int(ts[17:19]) * 1_000_000

    def _minute(self, ts: str) -> tuple[str, str, int] | None:
        first = self.datetime(ts[:16] + ":00,000")
        if first.utcoffset() != first.replace(second=59, microsecond=999_999).utcoffset():
            return None  # some zones left local mean time at an odd second
        head, tail, base = _parts(first)
        return head[:16], tail, base


def _parts(dt: datetime) -> tuple[str, str, int]:
    """The ISO text of ``dt``'s second, its offset's, and the second's POSIX microseconds."""
    text = dt.isoformat(timespec="milliseconds")
    return text[:19], text[23:], (dt.replace(microsecond=0) - _EPOCH) // _MICROSECOND


def _moment(dt: datetime) -> Moment:
    return Moment(dt.isoformat(timespec="milliseconds"), (dt - _EPOCH) // _MICROSECOND)


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
