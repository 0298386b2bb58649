"""What ``resumable list`` prints per operation: its time column, its table.

``time_text`` formats a time with ``time.localtime`` and ``strftime`` (``list`` prints one
per operation), which must give what the library's one time format, ``_time.iso_time``,
gives to the second: the same rounding at the microsecond, every UTC offset (also those
with seconds), the same text for what is no time.
"""

from __future__ import annotations

import io
import math
import random
import sys
import time
from collections.abc import Iterator

import pytest

from resumable._time import iso_time
from resumable.cli._format import print_table, time_text

ZONES = (
    "UTC", "Asia/Kolkata", "America/New_York", "Europe/Amsterdam", "Africa/Monrovia",
    "Australia/Lord_Howe", "America/St_Johns",
)  # fmt: skip


@pytest.fixture
def zone(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("TZ", request.param)
    time.tzset()
    yield request.param
    monkeypatch.undo()
    time.tzset()


def _times() -> list[float]:
    rng = random.Random(16)
    found = [rng.uniform(-2e9, 4e9) for _ in range(3000)]
    # Fractions where rounding to the microsecond carries into the next second, or not.
    edges = (0.9999995, 0.99999949, 0.9999996, 0.0000005, -0.0000005, 0.5, 0.0)
    found += [math.floor(t) + f for t in found[:300] for f in edges]
    # Before 1970, around offsets with seconds (Amsterdam until 1937, Monrovia until 1972).
    found += [-1.5e9 + 0.9999996, -1e9, -0.4, 0, 1, 1764892840.9999995]
    return found


@pytest.mark.parametrize("zone", ZONES, indirect=True)
def test_time_text_is_iso_time_to_the_second(zone: str) -> None:
    for when in _times():
        assert time_text(when) == iso_time(when, timespec="seconds"), (zone, when)


@pytest.mark.parametrize("when", [float("nan"), float("inf"), -float("inf"), 1e20, -1e20])
def test_time_text_of_no_time_is_iso_times_text(when: float) -> None:
    assert time_text(when) == iso_time(when, timespec="seconds")
    assert "(not a time)" in time_text(when)


def test_time_text_of_an_iso_string() -> None:
    when = 1764892840.25
    assert time_text(iso_time(when)) == iso_time(when, timespec="seconds")


def test_table_columns_align_left_and_right(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    print_table(
        ["ID", "STATE", "N", "NOTE"], [["a", "failed", "7", "x y"], ["bbb", "ok", "10", ""]], (2,)
    )
    assert out.getvalue().splitlines() == [
        "ID   STATE    N  NOTE",
        "a    failed   7  x y",
        "bbb  ok      10",
    ]
