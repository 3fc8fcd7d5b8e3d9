"""Local timestamps → zone-aware datetimes (shipper.localtime): the per-minute cache gives exactly
what building each datetime from its digits gives, DST changes included."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from shipper.localtime import LocalTime

ZONES = ["Europe/Berlin", "America/New_York", "Asia/Kathmandu", "Australia/Lord_Howe", "UTC",
         "Europe/Dublin", "America/St_Johns"]


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(ZONES),
       st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2040, 12, 31)),
       st.sampled_from([timedelta(0), timedelta(hours=1), timedelta(minutes=30)]))
def test_cached_times_equal_times_made_from_their_digits(zone: str, when: datetime, shift: timedelta) -> None:
    times = LocalTime(ZoneInfo(zone))
    when = when.replace(microsecond=when.microsecond // 1000 * 1000)
    for t in (when, when + shift, when + timedelta(seconds=1), when):  # cached on the second pass
        ts = f"{t:%Y-%m-%d %H:%M:%S},{t.microsecond // 1000:03d}"
        got = times.at(ts)
        want = datetime(t.year, t.month, t.day, t.hour, t.minute, t.second, t.microsecond,
                        tzinfo=ZoneInfo(zone))
        assert got == want
        assert (got.utcoffset(), got.tzinfo, got.fold) == (want.utcoffset(), want.tzinfo, 0)
        assert got.isoformat() == want.isoformat()
