"""A checkpointed job that the crash tests run as a real process, then kill and run again.

    python crash_worker.py --store URL --op ID --n N [--cost SECONDS] [--every-seconds S]
                           [--lock true|SECONDS] [--log PATH] [--pad BYTES]

The job folds the items ``range(N)`` into an order-sensitive hash kept in ``cp.state``
(``h``) together with a count (``n``), sleeping ``--cost`` seconds per item. ``h`` is assigned
before the sleep and ``n`` after it, so a signal during the sleep leaves the item half-applied.
``--pad`` adds a constant field of that many bytes to the state, so that each commit writes
that much and takes long enough for a kill to land in the middle of one.

What it tells the test:

- stdout: ``started`` once inside the block, then, after the block, one JSON line with the
  final ``state``, ``position``, ``bodies`` (loop bodies this run entered), ``completed_before``,
  ``resumed`` and ``enter_seconds`` (time to enter the block).
- ``--log PATH``: ``start P`` (P: the position the run resumes at) on entering the block, then
  each item's number as its body starts; appended and flushed line by line.
- exit code 0 when done; 3 with a JSON line ``{"locked": true, "seconds": ...}`` when
  ``OperationLocked`` was raised on entering.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import signal
import sys
import time
from typing import TextIO

from resumable import OperationLocked, checkpointed

LOCKED_EXIT = 3


def fold(h: str, x: int) -> str:
    """The hash after item ``x``; the order of the items changes the result."""
    return hashlib.sha256((h + str(x)).encode()).hexdigest()


def _lock(value: str) -> bool | float:
    return True if value == "true" else float(value)


def _note(log: TextIO | None, line: str) -> None:
    if log is not None:
        log.write(line + "\n")
        log.flush()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--store", required=True)
    parser.add_argument("--op", required=True)
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--cost", type=float, default=0.0)
    parser.add_argument("--every-seconds", type=float, default=0.01)
    parser.add_argument("--lock", type=_lock, default=True)
    parser.add_argument("--log")
    parser.add_argument("--pad", type=int, default=0)
    args = parser.parse_args()

    # A process started in the background inherits SIGINT ignored, and then Python installs no
    # KeyboardInterrupt handler; a job run from a terminal has the defaults, so restore them.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)

    log = open(args.log, "a", encoding="utf-8") if args.log else None  # noqa: SIM115
    bodies = 0
    started = time.perf_counter()
    try:
        with checkpointed(
            args.op,
            store=args.store,
            state={"h": "", "n": 0, "pad": "x" * args.pad},
            every_seconds=args.every_seconds,
            lock=args.lock,
        ) as cp:
            entered = time.perf_counter() - started
            _note(log, f"start {cp.position}")
            print("started", flush=True)
            for x in cp.iterate(range(args.n)):
                _note(log, str(x))
                bodies += 1
                cp.state.h = fold(cp.state.h, x)
                time.sleep(args.cost)
                cp.state.n += 1
    except OperationLocked:
        seconds = time.perf_counter() - started
        print(json.dumps({"locked": True, "seconds": seconds}), flush=True)
        return LOCKED_EXIT
    finally:
        if log is not None:
            log.close()
    result = {
        "state": dict(cp.state),
        "position": cp.position,
        "bodies": bodies,
        "completed_before": cp.completed_before,
        "resumed": cp.resumed,
        "enter_seconds": entered,
    }
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
