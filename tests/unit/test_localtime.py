"""Local timestamps → Moments (shipper.localtime): the per-second and per-minute caches give
exactly what a datetime made from the digits gives — ISO text and POSIX time — in any zone,
around DST changes (the gap, both passes of the repeated hour) and offset changes at odd
seconds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from shipper.localtime import LocalTime
from shipper.model import Moment

ZONES = ["Europe/Berlin", "America/New_York", "Asia/Kathmandu", "Australia/Lord_Howe", "UTC",
         "Europe/Dublin", "America/St_Johns"]


def expected(local: datetime) -> Moment:
    """What the digits of ``local`` (an aware datetime) mean, the slow and obvious way."""
    return Moment(local.isoformat(timespec="milliseconds"),
                  (local - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1))


def logged(local: datetime) -> str:
    return f"{local:%Y-%m-%d %H:%M:%S},{local.microsecond // 1000:03d}"


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(ZONES),
       st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2040, 12, 31)),
       st.sampled_from([timedelta(0), timedelta(hours=1), timedelta(minutes=30), timedelta(seconds=1)]),
       st.integers(0, 1))
def test_cached_moments_equal_moments_made_from_their_digits(zone: str, when: datetime, shift: timedelta,
                                                            fold: int) -> None:
    times = LocalTime(ZoneInfo(zone))
    when = when.replace(microsecond=when.microsecond // 1000 * 1000)
    for t in (when, when + shift, when + timedelta(seconds=1), when):  # cached on the second pass
        local = t.replace(tzinfo=ZoneInfo(zone), fold=fold)
        assert expected(local) == times.at(logged(local), fold)


# Offset changes at odd seconds of a minute (local mean time to a standard time, a 28-second
# step, the end of a repeated period at 02:25:21): such a minute must not be made as one.
ODD_CHANGES = [
    ("Africa/Monrovia", datetime(1972, 1, 7, 0, 44, 30, tzinfo=UTC)),
    ("Africa/Monrovia", datetime(1919, 3, 1, 0, 43, 8, tzinfo=UTC)),
    ("Europe/Amsterdam", datetime(1937, 6, 30, 22, 40, 28, tzinfo=UTC)),
    ("Europe/Amsterdam", datetime(1916, 9, 30, 22, 40, 28, tzinfo=UTC)),
    ("Europe/Dublin", datetime(1916, 10, 1, 2, 25, 21, tzinfo=UTC)),
    ("Asia/Kolkata", datetime(1905, 12, 31, 18, 38, 50, tzinfo=UTC)),
    ("America/New_York", datetime(1883, 11, 18, 17, 0, 0, tzinfo=UTC)),
    ("Europe/Berlin", datetime(1893, 3, 31, 23, 6, 32, tzinfo=UTC)),
    ("Pacific/Apia", datetime(1892, 7, 4, 11, 26, 56, tzinfo=UTC)),
    ("Asia/Riyadh", datetime(1947, 3, 13, 20, 53, 8, tzinfo=UTC)),
]


def test_minutes_with_an_offset_change_at_an_odd_second() -> None:
    """Every second of the minutes around such changes, both folds, reached in time order and
    backwards (either end of the minute can fill the caches first)."""
    for name, change in ODD_CHANGES:
        zone = ZoneInfo(name)
        for order in (1, -1):
            times = LocalTime(zone)
            for k in range(-150, 151)[::order]:
                local = (change + timedelta(seconds=k, microseconds=123_000)).astimezone(zone)
                for fold in (0, 1):
                    wall = local.replace(fold=fold)
                    assert expected(wall) == times.at(logged(wall), fold), (name, wall)


def test_digits_other_than_ascii_read_as_datetime_reads_them() -> None:
    """The layouts' \\d admits other digits; such a time is made the slow way, in ASCII."""
    times = LocalTime(ZoneInfo("Europe/Berlin"))
    assert times.at("2024-03-21 11:39:49,\u0661\u0662\u0663").iso == "2024-03-21T11:39:49.123+01:00"
