"""Unix seconds as the export writes them: `datetime.fromtimestamp(t, tz).isoformat(sep=" ")`,
character for character, without building a datetime per value.

Contract: `LocalTimes(tz)(t)` equals that expression for every int `t` (it falls back to it
for any hour it cannot vouch for). Why: an export of a long history formats two times per
call, and the zone's rules (a `ZoneInfo` lookup, then `isoformat`) cost more than the rest of
the row. How: the zone's offset is looked up once per UTC hour, at its first and last second;
when both agree the whole hour has that offset (no zone changes twice within an hour) and a
time of it is the local day's text (kept per day), the time of day from a table and the
offset's text. Memory stays flat: each table forgets what it holds past `LIMIT` entries.
"""

from __future__ import annotations

from datetime import date, datetime, tzinfo

HOUR = 3600
DAY = 86400
LIMIT = 4096
EPOCH = date(1970, 1, 1).toordinal()
CLOCK = tuple(f"{m // 60:02d}:{m % 60:02d}:" for m in range(24 * 60))  # minute of the day -> "HH:MM:"
SECONDS = tuple(f"{s:02d}" for s in range(60))


class LocalTimes:
    """See the module contract."""

    def __init__(self, tz: tzinfo) -> None:
        self.tz = tz
        self.hours: dict[int, tuple[int, str] | None] = {}  # UTC hour -> (offset, its text); None: fall back
        self.days: dict[int, str] = {}  # local day (days since 1970-01-01) -> "YYYY-MM-DD "

    def slow(self, timestamp: int) -> str:
        return datetime.fromtimestamp(timestamp, self.tz).isoformat(sep=" ")

    def _hour(self, hour: int) -> tuple[int, str] | None:
        if len(self.hours) >= LIMIT:
            self.hours.clear()
        found: tuple[int, str] | None = None
        try:
            first = datetime.fromtimestamp(hour * HOUR, self.tz)
            last = datetime.fromtimestamp(hour * HOUR + HOUR - 1, self.tz)
        except (OverflowError, OSError, ValueError):
            pass  # `slow` raises what the export raised before
        else:
            offset = first.utcoffset()
            if offset is not None and offset == last.utcoffset() and not offset.microseconds:
                found = (offset.days * DAY + offset.seconds, first.isoformat(sep=" ")[19:])
        self.hours[hour] = found
        return found

    def _day(self, day: int) -> str:
        if len(self.days) >= LIMIT:
            self.days.clear()
        self.days[day] = found = date.fromordinal(day + EPOCH).isoformat() + " "
        return found

    def __call__(self, timestamp: int) -> str:
        hour = timestamp // HOUR
        found = self.hours[hour] if hour in self.hours else self._hour(hour)
        if found is None:
            return self.slow(timestamp)
        offset, suffix = found
        day, second = divmod(timestamp + offset, DAY)
        text = self.days.get(day) or self._day(day)
        return f"{text}{CLOCK[second // 60]}{SECONDS[second % 60]}{suffix}"
