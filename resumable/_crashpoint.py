"""Crash points: the testing interface that kills a job at its k-th commit, on purpose.

``resumable.testing.assert_crash_safe`` runs a user's job again and again, each time killed at
another commit point, and compares the outcome with an uninterrupted run's. The crash is
armed here, inside the library, by two environment variables read once at import:

- ``RESUMABLE_CRASH_AT=<before|after>:<n>[:<KILL|INT|TERM>]`` sends the signal (``KILL`` if
  none is named) to this process just before, or just after, its ``n``-th commit (counted
  from 1);
- ``RESUMABLE_CRASH_LOG=<path>`` appends one JSON line to that file at each crash point
  reached, ``{"point": "before:3", "kind": "checkpoint", "op_id": "job", "position": 24}``:
  the uninterrupted run's log says how many commits there are, and where each one is.

A **commit point** is a write that records progress: a checkpoint of a ``checkpointed()``
block (``Run.commit``: a loop's commits, ``cp.commit()``, the first ``cp.open`` of a file, the
final commit and an exit's commit), the stored result of a ``@resumable`` call or of a
``cp.step``, a group of ``cp.map`` results written together (several items at once), a
shared map's finished batch, and a FailsafeManager ``save_checkpoint``. "Before" is once
everything the commit covers has been written out (the ``cp.before_commit`` functions have
run, the ``cp.open`` files have been flushed) and the store write has not happened; "after" is
once the store write returned.

Only the process that imports ``resumable`` first is armed: both variables are removed from
``os.environ`` when read, so the processes the job starts (a process pool, a subprocess) are
neither killed nor counted, and a forked child, which inherits this module, is recognised by
its pid. Processes that run one after another (``sh -c "python a.py && python b.py"``) count
on from each other: a process's first commit is numbered after the ``before`` lines already in
the log.

With neither variable set, this module costs one lookup at import and :data:`ARMED`, a
module constant, checked at each commit point.
"""

from __future__ import annotations

import json
import os
import re
import signal
from typing import Final

__all__ = ["ARMED", "AT_VAR", "LOG_VAR", "SIGNALS", "CrashAt", "parse", "reached"]

AT_VAR: Final = "RESUMABLE_CRASH_AT"
LOG_VAR: Final = "RESUMABLE_CRASH_LOG"
#: The signals a crash point may send, by the names the variable uses.
SIGNALS: Final = {"KILL": signal.SIGKILL, "INT": signal.SIGINT, "TERM": signal.SIGTERM}

_FORMAT: Final = re.compile(r"(before|after):([1-9][0-9]*)(?::(?:SIG)?(KILL|INT|TERM))?", re.I)


class CrashAt:
    """Where to crash, and with which signal: the parsed value of ``RESUMABLE_CRASH_AT``."""

    __slots__ = ("number", "signal", "when")

    def __init__(self, when: str, number: int, signal: str = "KILL") -> None:
        self.when, self.number, self.signal = when, number, signal

    def __str__(self) -> str:
        return f"{self.when}:{self.number}:{self.signal}"


def parse(value: str) -> CrashAt:
    """The crash point ``value`` names (``"before:3:KILL"``); ValueError if it names none."""
    found = _FORMAT.fullmatch(value.strip())
    if found is None:
        raise ValueError(
            f"{AT_VAR}={value!r} names no crash point: write before:N or after:N, optionally "
            "followed by :KILL, :INT or :TERM (the signal; KILL if none), such as "
            f"{AT_VAR}=before:3:KILL (just before the job's third commit)"
        )
    return CrashAt(found[1].lower(), int(found[2]), (found[3] or "KILL").upper())


def _arm() -> tuple[CrashAt | None, str | None, int]:
    """Read and remove both variables; the commits an earlier process logged."""
    at_value = os.environ.pop(AT_VAR, None)
    log = os.environ.pop(LOG_VAR, None) or None
    at = parse(at_value) if at_value else None
    counted = 0
    if log is not None:
        try:
            with open(log, encoding="utf-8") as f:
                counted = sum(1 for line in f if '"before:' in line)
        except FileNotFoundError:
            pass
    return at, log, counted


# One lookup when unset; the rest only for a test run.
if AT_VAR in os.environ or LOG_VAR in os.environ:  # pragma: no branch
    _AT, _LOG, _count = _arm()
else:
    _AT, _LOG, _count = None, None, 0
#: True when a crash point is armed or commits are logged: each commit point checks it.
ARMED: Final = _AT is not None or _LOG is not None
_PID: Final = os.getpid()
_fired = False


def reached(when: str, kind: str, op_id: str, position: int | None = None) -> None:
    """A commit point: log it, and send the armed signal if it is this one.

    ``when`` is ``"before"`` (called once per commit, before its store write; it numbers the
    commit) or ``"after"``; ``kind`` says what is committed (``"checkpoint"``, ``"call"``,
    ``"step"``, ``"map"``, ``"failsafe"``), ``position`` a checkpoint's position.
    """
    global _count, _fired  # noqa: PLW0603 - one process-wide count, as the variable is
    if os.getpid() != _PID:
        return  # a forked child: its parent is the process under test
    if when == "before":
        _count += 1
    point = f"{when}:{_count}"
    if _LOG is not None:
        line = {"point": point, "kind": kind, "op_id": op_id, "position": position}
        fd = os.open(_LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, (json.dumps(line) + "\n").encode())
        finally:
            os.close(fd)
    at = _AT
    if at is not None and not _fired and at.when == when and at.number == _count:
        _fired = True
        os.kill(os.getpid(), SIGNALS[at.signal])
