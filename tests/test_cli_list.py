"""What ``resumable list`` prints per operation: its time column, its table.

The table measures cells in terminal columns (CJK: 2, combining marks: 0), and ids too wide
are cut in the middle.

``time_text`` formats a time with ``time.localtime`` and ``strftime`` (``list`` prints one
per operation), which must give what the library's one time format, ``_time.iso_time``,
gives to the second: the same rounding at the microsecond, every UTC offset (also those
with seconds), the same text for what is no time.
"""

from __future__ import annotations

import io
import math
import os
import random
import re
import sys
import time
from collections.abc import Iterator

import pytest

from resumable._time import iso_time
from resumable.cli._format import clip, display_width, print_table, time_text

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


def test_display_width() -> None:
    """CJK and fullwidth characters take 2 columns, combining marks 0."""
    assert display_width("photos") == 6
    assert display_width("写真の処理") == 10
    assert display_width("\uff21\uff22") == 4  # fullwidth Latin AB
    assert display_width("cafe\u0301") == 4  # e + combining acute accent
    assert display_width("한국어") == 6


def test_a_wide_table_on_a_terminal_is_cut_by_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a terminal, a row is cut at its width in columns (CJK counted twice), and the state
    is coloured where it starts after a wide id."""
    import shutil

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Terminal()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(shutil, "get_terminal_size", lambda: os.terminal_size((30, 24)))
    print_table(
        ["ID", "STATE", "NOTE"], [["写真写真", "failed", "x" * 40], ["ab", "completed", ""]]
    )
    plain = [re.sub(r"\x1b\[[0-9;]*m", "", line) for line in out.getvalue().splitlines()]
    # ID is 8 columns wide (4 CJK characters), STATE 9 ("completed"): 8 + 2 + 9 + 2 + "NOTE".
    assert [display_width(line) for line in plain] == [25, 30, 19]
    assert plain[1].endswith("…") and plain[1].startswith("写真写真  failed     xxx")
    assert "\x1b[31m\x1b[1mfailed" in out.getvalue().splitlines()[1]


def test_clip_keeps_both_ends_within_the_columns() -> None:
    """A too wide text keeps its start and end around `…`, in at most that many columns."""
    assert clip("short", 60) == "short"
    assert clip("batch-" + "x" * 100 + "-00017", 20) == "batch-xxxx…xxx-00017"
    cut = clip("写真" * 40, 21)
    assert display_width(cut) <= 21 and cut.startswith("写真") and cut.endswith("写真")
    cut = clip("e\u0301" * 50, 9)  # a base and its mark stay together
    assert cut == "e\u0301" * 4 + "…" + "e\u0301" * 4
