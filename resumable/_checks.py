"""Argument checks shared by ``checkpointed()`` and ``@resumable``."""

from __future__ import annotations

import os

__all__ = ["check_number", "path_name"]


def path_name(call: str, path: object) -> str:
    """``path`` (a str, bytes or os.PathLike) as a str; TypeError naming ``call`` otherwise."""
    if not isinstance(path, str | bytes | os.PathLike):
        raise TypeError(f"{call}(path) needs a str or os.PathLike path, not {path!r}")
    return os.fsdecode(os.fspath(path))


def check_number(name: str, value: object, *, allow_zero: bool, kind: type = float) -> None:
    """Refuse ``value`` unless it is None or a number (whole if ``kind`` is int) > 0 (or >= 0).

    Raises:
        TypeError: not a number (a bool is not one).
        ValueError: negative, or zero where ``allow_zero`` is false.
    """
    if value is None:
        return
    ok_types: tuple[type, ...] = (int,) if kind is int else (int, float)
    if isinstance(value, bool) or not isinstance(value, ok_types):
        raise TypeError(f"{name} must be a {'whole ' if kind is int else ''}number, not {value!r}")
    number = float(value)  # type: ignore[arg-type] # checked just above
    if number < 0 or (number == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, not {value!r}")
