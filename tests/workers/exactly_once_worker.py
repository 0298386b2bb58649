"""A checkpointed job whose results must come out exactly once, however often it is stopped.

    python exactly_once_worker.py state --store URL --op ID --n N [--cost S]
                                  [--every-seconds S] [--log PATH] [--fail-at X --marker PATH]
    python exactly_once_worker.py file --store URL --op ID --n N --out PATH [--mode a|w|ab|wb]
                                  [--cost S] [--every-seconds S] [--log PATH]

``state``: the state holds a ``collections.Counter``, a list and a numpy array changed in place,
and an int assigned. Item ``x`` does ``counts[x % 7] += 1`` and ``seen.append(x)``, sleeps
``--cost`` seconds, then ``arr[x % 10] += x`` and ``n = n + 1``: a signal during the sleep leaves
the item half-applied in memory. With ``--fail-at X`` the item ``X`` raises ``Boom`` after its
changes, once: it first creates ``--marker``, and does not raise while that file exists.

``file``: item ``x`` appends one line to a file opened with ``cp.open(--out, --mode)``; it writes
the first half, flushes (so the half line reaches the disk), sleeps ``--cost`` seconds, then
writes the rest. The text line of ``x`` is :func:`text_line`, the binary one :func:`binary_line`.

What it tells the test:

- stdout: ``started`` once inside the block, then after the block one JSON line with the
  final ``state`` (``state`` job, as :func:`plain`), ``position`` and ``bodies``.
- ``--log PATH``: ``start P`` (P: the position the run resumes at) on entering the block (``file``
  job: ``start P S``, S the file's size when ``cp.open`` returned), then
  each item's number as its body starts; appended and flushed line by line.
- exit code 0 when done; an exception or a signal ends it as Python does.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from resumable import checkpointed

SLOTS = 10  # the numpy array's length
KEYS = 7  # the Counter's keys


class Boom(Exception):
    """The one failure of the ``--fail-at`` item."""


def text_line(x: int) -> tuple[str, str]:
    """The two halves of item ``x``'s line in a text file (non-ASCII on purpose)."""
    return f"item {x:05d} é", " fin\n"


def binary_line(x: int) -> tuple[bytes, bytes]:
    """The two halves of item ``x``'s record in a binary file."""
    return f"rec {x:05d}".encode(), b"\x00\xff\r\n"


def plain(state: Any) -> dict[str, Any]:
    """The ``state`` job's state as JSON-able values (Counter keys as strings, array as list)."""
    return {
        "counts": {str(k): v for k, v in sorted(state["counts"].items())},
        "seen": list(state["seen"]),
        "arr": [int(v) for v in state["arr"]],
        "n": state["n"],
    }


def _note(log: TextIO | None, line: str) -> None:
    if log is not None:
        log.write(line + "\n")
        log.flush()


def state_job(args: argparse.Namespace, log: TextIO | None) -> dict[str, Any]:
    import numpy as np

    initial = {
        "counts": collections.Counter(),
        "seen": [],
        "arr": np.zeros(SLOTS, dtype=np.int64),
        "n": 0,
    }
    bodies = 0
    marker = Path(args.marker) if args.marker else None
    with checkpointed(
        args.op, store=args.store, state=initial, every_seconds=args.every_seconds
    ) as cp:
        _note(log, f"start {cp.position}")
        print("started", flush=True)
        for x in cp.iterate(range(args.n)):
            _note(log, str(x))
            bodies += 1
            cp.state.counts[x % KEYS] += 1
            cp.state.seen.append(x)
            time.sleep(args.cost)
            cp.state.arr[x % SLOTS] += x
            cp.state.n = cp.state.n + 1
            if x == args.fail_at and marker is not None and not marker.exists():
                marker.touch()
                raise Boom(x)
    return {"state": plain(cp.state), "position": cp.position, "bodies": bodies}


def file_job(args: argparse.Namespace, log: TextIO | None) -> dict[str, Any]:
    bodies = 0
    binary = "b" in args.mode
    with checkpointed(args.op, store=args.store, every_seconds=args.every_seconds) as cp:
        if binary:
            out: Any = cp.open(args.out, args.mode)
        else:
            out = cp.open(args.out, args.mode, encoding="utf-8")
        _note(log, f"start {cp.position} {os.fstat(out.fileno()).st_size}")
        print("started", flush=True)
        for x in cp.iterate(range(args.n)):
            _note(log, str(x))
            bodies += 1
            head, tail = binary_line(x) if binary else text_line(x)
            out.write(head)
            out.flush()
            time.sleep(args.cost)
            out.write(tail)
    return {"position": cp.position, "bodies": bodies, "closed": out.closed}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("job", choices=["state", "file"])
    parser.add_argument("--store", required=True)
    parser.add_argument("--op", required=True)
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--cost", type=float, default=0.0)
    parser.add_argument("--every-seconds", type=float, default=0.01)
    parser.add_argument("--log")
    parser.add_argument("--fail-at", type=int)
    parser.add_argument("--marker")
    parser.add_argument("--out")
    parser.add_argument("--mode", default="a")
    args = parser.parse_args()

    # A process started in the background inherits SIGINT ignored, and then Python installs no
    # KeyboardInterrupt handler; a job run from a terminal has the defaults, so restore them.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)

    log = open(args.log, "a", encoding="utf-8") if args.log else None  # noqa: SIM115
    try:
        result = state_job(args, log) if args.job == "state" else file_job(args, log)
    finally:
        if log is not None:
            log.close()
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
