"""The library's one time format, for every time it shows or writes as text."""

from __future__ import annotations

import datetime as dt

__all__ = ["iso_time"]


def iso_time(when: float | dt.datetime, *, timespec: str = "microseconds") -> str:
    """``when`` (POSIX seconds, or an aware datetime) in the library's one time format.

    Local ISO 8601 with the UTC offset: ``2026-11-30T09:05:12.123456+09:00``. Backup
    timestamps, operation and checkpoint times (the command line, the FailsafeManager, the
    file store) all use it; the command line's tables pass ``timespec="seconds"``. A value
    that is no time (out of range, NaN: a damaged record) is shown as the number it is.
    """
    if not isinstance(when, dt.datetime):
        try:
            when = dt.datetime.fromtimestamp(when, dt.UTC)
        except (OverflowError, OSError, ValueError):  # a damaged record's time, say
            return f"{when!r} (not a time)"
    return when.astimezone().isoformat(timespec=timespec)
