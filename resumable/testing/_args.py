"""The arguments of ``assert_crash_safe``, checked where they are given.

Each refusal says what was given and what to write instead: a command given as one string,
``outputs="out.txt"`` (a string is an iterable of characters) and ``signals="KILL"`` are the
mistakes a first use makes.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from resumable._crashpoint import SIGNALS

__all__ = ["checked"]


def checked(
    *,
    cmd: object,
    outputs: object,
    cwd: object,
    signals: object,
    max_points: object,
    timeout: object,
    workdir: object,
) -> dict[str, Any]:
    """The keyword arguments of ``_check.check``, from those of ``assert_crash_safe``."""
    source = _directory("cwd", cwd, default=Path.cwd())
    work = None if workdir is None else _directory("workdir", workdir, default=None)
    if work is not None and work.is_relative_to(source):
        raise ValueError(
            f"workdir={str(work)!r} is inside cwd, which is copied for every run: "
            "give a directory outside it"
        )
    return {
        "cmd": _command(cmd),
        "outputs": _outputs(outputs),
        "source": source,
        "signals": _signals(signals),
        "max_points": _max_points(max_points),
        "timeout": _timeout(timeout),
        "workdir": work,
    }


def _command(cmd: object) -> list[str]:
    if isinstance(cmd, str | bytes) or not isinstance(cmd, Sequence):
        raise TypeError(
            f"cmd must be a list of arguments, as for subprocess.run, such as "
            f"[sys.executable, 'job.py'], not {cmd!r}"
        )
    args = list(cmd)
    if not args:
        raise ValueError("cmd is empty: give the command that runs the job, such as "
                         "[sys.executable, 'job.py']")  # fmt: skip
    for arg in args:
        if not isinstance(arg, str | os.PathLike):
            raise TypeError(f"each argument of cmd must be a str or a path, not {arg!r}")
    return [os.fspath(arg) for arg in args]


def _outputs(outputs: object) -> tuple[str, ...]:
    if isinstance(outputs, str | bytes | os.PathLike) or not isinstance(outputs, Iterable):
        raise TypeError(
            f"outputs must be a list of paths, such as outputs=['out.txt'], not {outputs!r}"
        )
    names: list[str] = []
    for path in outputs:
        if not isinstance(path, str | os.PathLike):
            raise TypeError(f"each of outputs must be a str or a path, not {path!r}")
        name = os.fspath(path)
        if not name or Path(name).is_absolute() or ".." in Path(name).parts:
            raise ValueError(
                f"outputs must be paths relative to cwd, inside it (each run has a copy of "
                f"its own), not {name!r}"
            )
        names.append(name)
    return tuple(names)


def _directory(what: str, value: object, *, default: Path | None) -> Path:
    if value is None and default is not None:
        return default
    if not isinstance(value, str | os.PathLike):
        raise TypeError(f"{what} must be a directory path, not {value!r}")
    path = Path(value).resolve()
    if not path.is_dir():
        raise ValueError(f"{what}={os.fspath(value)!r} is not a directory")
    return path


def _signals(signals: object) -> tuple[str, ...]:
    if isinstance(signals, str | bytes) or not isinstance(signals, Iterable):
        raise TypeError(
            f"signals must be a list of signal names, such as signals=('KILL', 'INT', 'TERM'), "
            f"not {signals!r}"
        )
    names: list[str] = []
    for sig in signals:
        name = sig.upper().removeprefix("SIG") if isinstance(sig, str) else None
        if name not in SIGNALS:
            raise ValueError(f"signals: {sig!r} is not one of 'KILL', 'INT' (Ctrl-C) and 'TERM'")
        if name not in names:
            names.append(name)
    if not names:
        raise ValueError("signals is empty: give at least one, such as signals=('KILL',)")
    return tuple(names)


def _max_points(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"max_points must be an int, not {value!r}")
    if value < 1:
        raise ValueError(f"max_points must be at least 1, not {value}")
    return value


def _timeout(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"timeout must be a number of seconds, not {value!r}")
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"timeout must be a positive number of seconds, not {value!r}")
    return float(value)
