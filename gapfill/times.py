"""The time axis of a field: CF time units, calendar dates in every CF calendar, days since the first frame.

Times are numeric `<unit> since <date>` in the file's calendar. Times in months (or years) since a date count
calendar months of that calendar (30 days in `360_day`), so `days_since_first` (`Field.time_days`) is in real
days for every CF calendar. `sort_time` puts a file's frames in increasing time and refuses a missing or a
repeated time.
"""
from __future__ import annotations

import logging
import math
import re

import cftime
import numpy as np

from gapfill.errors import DataError

log = logging.getLogger(__name__)

# fixed-length time units (cftime's spellings) in days; months and years are calendar units (see _add_months)
_UNIT_DAYS = {**dict.fromkeys(("microseconds", "microsecond", "microsecs", "microsec", "us"), 1 / 86400e6),
              **dict.fromkeys(("milliseconds", "millisecond", "millisecs", "millisec", "msecs", "msec", "ms"),
                              1 / 86400e3),
              **dict.fromkeys(("seconds", "second", "secs", "sec", "s"), 1 / 86400),
              **dict.fromkeys(("minutes", "minute", "mins", "min"), 1 / 1440),
              **dict.fromkeys(("hours", "hour", "hrs", "hr", "h"), 1 / 24),
              **dict.fromkeys(("days", "day", "d"), 1.0), **dict.fromkeys(("weeks", "week"), 7.0)}
_UNIT_MONTHS = {**dict.fromkeys(("months", "month", "mon"), 1), **dict.fromkeys(("years", "year", "yr"), 12)}


def time_unit(units: str | None) -> tuple[str | None, str | None]:
    """('hour', '1980-01-14') from 'hour since 1980-01-14'; (None, None) when not '<unit> since <date>'."""
    m = re.fullmatch(r"\s*([A-Za-z_]+)\s+since\s+(.+?)\s*", units or "")
    return (m.group(1).lower(), m.group(2)) if m else (None, None)


def _add_months(start, months: float):
    """The cftime date `months` calendar months after `start` (the day clamped to the month's length); a
    fraction of a month is that fraction of the following month's length."""
    whole = math.floor(months)

    def shift(k):
        y, m = divmod(start.month - 1 + k, 12)
        first = start.replace(year=start.year + y, month=m + 1, day=1)
        return first.replace(day=min(start.day, first.daysinmonth))
    a = shift(whole)
    return a if months == whole else a + (shift(whole + 1) - a) * (months - whole)


def decode_times(time: np.ndarray, units: str | None, calendar: str | None) -> np.ndarray | None:
    """(T,) cftime dates of numeric times in CF `units` and `calendar` (default standard), None when they do
    not decode. `months/years since` count calendar months (cftime alone takes them only for 360_day)."""
    unit, ref = time_unit(units)
    if unit is None:
        return None
    cal = calendar or "standard"
    t = np.asarray(time, dtype=np.float64)
    for year_zero in (None, True):                 # 'since 0000-01-01' (NOAA, Ferret) needs year zero
        kw = {} if year_zero is None else {"has_year_zero": True}
        try:
            if unit in _UNIT_MONTHS:
                start = cftime.num2date(0, f"days since {ref}", cal, **kw)
                return np.array([_add_months(start, _UNIT_MONTHS[unit] * v) for v in t], dtype=object)
            return np.asarray(cftime.num2date(t, units, cal, **kw), dtype=object)
        except Exception:  # noqa: S112  cftime raises ValueError/TypeError for units it does not know
            continue
    return None


def days_since_first(time: np.ndarray, units: str | None, calendar: str | None) -> np.ndarray:
    """(T,) float64 days since the first of the numeric times `time` in CF `units` and `calendar` (frame index
    if the units are unknown)."""
    t = np.asarray(time, dtype=np.float64)
    unit, _ = time_unit(units)
    if unit in _UNIT_DAYS:                                     # fixed length: exact in every calendar
        return (t - t[0]) * _UNIT_DAYS[unit]
    dates = decode_times(time, units, calendar) if unit is not None else None
    if dates is None:
        return np.arange(len(t), dtype=np.float64)
    return np.array([(d - dates[0]).total_seconds() / 86400 for d in dates], dtype=np.float64)


def _time_label(value: float, units: str | None, calendar: str | None) -> str:
    dates = decode_times(np.array([value]), units, calendar)
    return f"{value:g}" if dates is None else f"{dates[0].isoformat()} ({value:g} {units})"


def sort_time(path, values: np.ndarray, time: np.ndarray, units, calendar) -> tuple[np.ndarray, np.ndarray]:
    """values (T, B, Y, X) and time (T,) in increasing time: sorted with a warning when the file's frames are
    not in order; DataError for a missing or a repeated time."""
    if not np.isfinite(time).all():
        raise DataError(f"{path}: time has {int((~np.isfinite(time)).sum())} missing values; every frame needs its time")
    if np.all(np.diff(time) > 0):
        return values, time
    order = np.argsort(time, kind="stable")
    same = np.flatnonzero(np.diff(time[order]) == 0)
    if same.size:
        v = time[order][same[0]]
        i, j = np.flatnonzero(time == v)[:2]
        raise DataError(f"{path}: duplicate time {_time_label(v, units, calendar)} at frames {i} and {j}; "
                        "every frame needs its own time")
    log.warning("%s: the time axis is not sorted; frames sorted by time (%d frames)", path, len(time))
    return values[order], time[order]
