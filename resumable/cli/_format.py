"""How the commands print: aligned tables, ``key  value`` lines, JSON, times, ages, counts.

Text from a store (op ids, hosts, errors, paths) goes through :func:`printable` first: it
cannot garble a terminal.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import math
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import click

from resumable._time import iso_time

if TYPE_CHECKING:
    from resumable._owner import Owner

__all__ = [
    "age_text",
    "clip",
    "display_width",
    "owner_text",
    "plural",
    "print_fields",
    "print_json",
    "print_table",
    "printable",
    "styled_state",
    "time_text",
]

_COLOURS = {
    "completed": "green", "failed": "red", "running": "cyan", "paused": "yellow",
    "recovering": "magenta", "initialized": "blue",
}  # fmt: skip


def print_json(doc: Any) -> None:
    """One JSON document: indented on a terminal, one line otherwise (the fast encoder)."""
    click.echo(json.dumps(doc, indent=2 if sys.stdout.isatty() else None))


def printable(value: object) -> str:
    """``value`` as text that cannot garble a terminal (control characters escaped)."""
    text = str(value)
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


def plural(count: int, word: str) -> str:
    """``1 record``, ``2 records``."""
    return f"{count} {word}{'s' * (count != 1)}"


def time_text(when: float | str) -> str:
    """A time (POSIX seconds, or an ISO string from a JSON-ready dict) as tables show it.

    The library's one format (``_time.iso_time``), to the second.
    """
    if isinstance(when, str):
        return iso_time(dt.datetime.fromisoformat(when), timespec="seconds")
    # What iso_time(when, timespec="seconds") returns, from time.localtime and strftime, in
    # half the time a datetime takes (``resumable list`` prints one per operation).
    try:
        fraction, whole = math.modf(when)
        micros = round(fraction * 1e6)  # as datetime rounds: half to even, to the microsecond
        second = int(whole) + (micros >= 1_000_000) - (micros < 0)
        # The zone's names and offsets in the key: time.tzset() may change them meanwhile.
        text = _second_text(second, time.tzname, time.timezone, time.altzone)
    except (OverflowError, OSError, ValueError, TypeError):
        text = None
    return iso_time(when, timespec="seconds") if text is None else text


@functools.lru_cache(maxsize=1024)  # operations listed together were often updated together
def _second_text(second: int, *_zone: object) -> str | None:
    """The POSIX ``second`` in local time, as :func:`time_text` writes it.

    None outside the years 1000 to 9998, which strftime would not pad or datetime cannot hold.
    """
    t = time.localtime(second)
    if not 999 < t.tm_year < 9999:  # strftime pads no year to 4 digits; datetime's limits
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", t) + _utc_offset(t.tm_gmtoff)


@functools.lru_cache(maxsize=64)
def _utc_offset(offset: int) -> str:
    """A UTC offset in seconds as ``isoformat`` writes it: ``+09:00``, ``-00:25:21``."""
    hours, rest = divmod(abs(offset), 3600)
    minutes, seconds = divmod(rest, 60)
    text = f"{'-' if offset < 0 else '+'}{hours:02d}:{minutes:02d}"
    return text + (f":{seconds:02d}" if seconds else "")


def age_text(seconds: float | None) -> str:
    """An age in its largest unit: ``2.5 h old``."""
    if seconds is None:
        return "age unknown"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit} old"
    return f"{seconds:.0f} s old"


def styled_state(value: str) -> str:
    """A state in its colour (click drops the colour where stdout is no terminal)."""
    return click.style(value, fg=_COLOURS.get(value), bold=value == "failed")


def display_width(text: str) -> int:
    """The terminal columns ``text`` takes.

    2 for a wide or fullwidth character (CJK, most emoji), 0 for a combining mark or a
    zero-width format character, else 1: Unicode's East Asian Width and general category.
    """
    if text.isascii():
        return len(text)
    return sum(map(_char_width, text))


@functools.lru_cache(maxsize=4096)
def _char_width(char: str) -> int:
    import unicodedata  # loaded when a table holds more than ASCII

    if unicodedata.category(char) in ("Mn", "Me", "Cf"):  # combining marks, zero-width format
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def _fit(text: str, columns: int) -> str:
    """The longest start of ``text`` that takes at most ``columns`` columns."""
    used = 0
    for i, char in enumerate(text):
        used += _char_width(char)
        if used > columns:
            return text[:i]
    return text


def clip(text: str, columns: int) -> str:
    """``text``, or if it takes more than ``columns`` columns, its start and end around ``…``.

    Both ends stay: ids differ at the start (their family) and at the end (a batch number,
    a digest). ``columns`` is at least 3.
    """
    if display_width(text) <= columns:
        return text
    keep = columns - 1
    head = _fit(text, keep - keep // 2)
    tail = _fit(text[::-1], keep // 2)[::-1]
    while tail and not _char_width(tail[0]):  # a mark whose base was cut off
        tail = tail[1:]
    return f"{head}…{tail}"


def print_table(
    head: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()
) -> None:
    """Print aligned columns; the second (a state) coloured when stdout is a terminal.

    Columns are measured in terminal columns (:func:`display_width`), not in characters.
    """
    widths: list[int] = []
    narrow = True  # every cell is ASCII: a character is a column
    for column in zip(head, *rows, strict=True):
        if "".join(column).isascii():
            widths.append(max(map(len, column)))
        else:
            narrow = False
            widths.append(max(map(display_width, column)))
    last = len(head) - 1
    # One format for every line (str.format pads as ljust and rjust do, in C) ...
    formats = [f"{{:{'>' if i in right else '<'}{w}}}" for i, w in enumerate(widths)]
    line = "  ".join([*formats[:last], "{}"])

    def render(cells: Sequence[str]) -> str:
        # ... and its padding made up by hand in a row that holds wide or combining characters.
        if narrow or "".join(cells).isascii():
            return line.format(*cells)
        padded = [
            " " * (w - display_width(c)) + c if i in right else c + " " * (w - display_width(c))
            for i, (c, w) in enumerate(zip(cells[:last], widths, strict=False))
        ]
        return "  ".join([*padded, cells[last]])

    tty = sys.stdout.isatty()
    if not tty:
        click.echo("\n".join(render(cells).rstrip() for cells in [head, *rows]))
        return
    import shutil  # with bz2 and lzma: loaded when a table is printed, not for --help

    width = shutil.get_terminal_size().columns
    state_cell = formats[1]
    states: dict[str, str] = {}
    lines = []
    for n, cells in enumerate([head, *rows]):
        text = render(cells).rstrip()
        if width and display_width(text) > width:  # a terminal: keep one line per row
            text = _fit(text, width - 1) + "…"
        if n == 0:
            text = click.style(text, bold=True)
        else:
            # Where the state starts: after the first cell as padded, in characters.
            start = len(cells[0]) + widths[0] - display_width(cells[0]) + 2
            padded = state_cell.format(cells[1])
            if text[start : start + len(padded)] == padded:  # not cut off by the terminal
                if (styled := states.get(padded)) is None:
                    styled = states[padded] = padded.replace(cells[1], styled_state(cells[1]), 1)
                text = text[:start] + styled + text[start + len(padded) :]
        lines.append(text)
    click.echo("\n".join(lines))


def owner_text(owner: Owner | None) -> tuple[str, bool | None]:
    """The owner in words, and whether it is alive (None: on another host, cannot tell)."""
    if owner is None:
        return "none", False
    alive = owner.is_alive()
    verdict = {True: "alive", False: "gone", None: "another host: cannot tell"}[alive]
    return f"pid {owner.pid} on {printable(owner.host)} ({verdict})", alive


def print_fields(pairs: Sequence[tuple[str, str]]) -> None:
    """Print ``key   value`` lines, keys in bold on a terminal."""
    click.echo("\n".join(f"{click.style(k.ljust(12), bold=True)}{v}" for k, v in pairs))
