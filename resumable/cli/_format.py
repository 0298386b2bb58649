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


def print_table(
    head: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()
) -> None:
    """Print aligned columns; the second (a state) coloured when stdout is a terminal."""
    widths = [max(map(len, column)) for column in zip(head, *rows, strict=True)]
    last = len(head) - 1
    # One format for every line (str.format pads as ljust and rjust do, in C).
    formats = [f"{{:{'>' if i in right else '<'}{w}}}" for i, w in enumerate(widths)]
    line = "  ".join([*formats[:last], "{}"])
    tty = sys.stdout.isatty()
    if not tty:
        click.echo("\n".join(line.format(*cells).rstrip() for cells in [head, *rows]))
        return
    import shutil  # with bz2 and lzma: loaded when a table is printed, not for --help

    width = shutil.get_terminal_size().columns
    start = widths[0] + 2  # where the state column starts
    state_cell = formats[1]
    states: dict[str, str] = {}
    lines = []
    for n, cells in enumerate([head, *rows]):
        text = line.format(*cells).rstrip()
        if width and len(text) > width:  # a terminal: keep one line per row
            text = text[: width - 1] + "…"
        if n == 0:
            text = click.style(text, bold=True)
        else:
            padded = state_cell.format(cells[1])
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
