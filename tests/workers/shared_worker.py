"""One participant of a shared operation, run as a real process by tests/test_shared.py.

    python shared_worker.py --store URL --op ID --n N --log PATH --out PATH
                            [--cost SECONDS] [--workers W] [--stop-after K | --kill-after K]
                            [--fail-item X --marker PATH] [--shuffle SEED]

Inside ``checkpointed(ID, shared=True)``: ``cp.step("prepare", ...)`` (which logs ``STEP``),
then ``cp.map`` of :func:`work` over ``range(N)`` (shuffled by ``random.Random(SEED)`` with
``--shuffle``) on ``W`` threads. Each item appends
``<pid> <x> <time>`` to ``--log`` (one ``write`` in append mode: lines never mix), sleeps
``--cost`` seconds and returns ``[x, pid]``, so the store shows which participant's run of an
item was recorded. ``--stop-after K`` makes this process SIGSTOP itself as its K-th item
starts (that item's batch is claimed and unfinished); ``--kill-after K`` SIGKILLs it there.
With ``--fail-item X``, item X raises while ``--marker`` exists (``on_error="skip"``).

At the end, ``--out`` gets a JSON object: the step's result, the map's results (an exception
as ``{"error": text}``) and ``cp.failed``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import random
import signal
import threading
import time
from typing import Any

from resumable import checkpointed

_started = 0
_count_lock = threading.Lock()


#: The store this process uses (set on entering the block).
_store: Any = None


def _halt(sig: signal.Signals) -> None:
    """Send ``sig`` to this process between two store calls.

    A process stopped inside an SQLite write transaction blocks every writer of the file
    until it continues (SQLite cannot take a lock away; see docs/scaling.md), so the stop
    waits for the store's own lock, which every SQLite call holds.
    """
    with getattr(_store, "_guard", contextlib.nullcontext()):
        os.kill(os.getpid(), sig)


def work(args: argparse.Namespace, x: int) -> list[int]:
    """One item: log its start, take ``cost`` seconds, stop or die if told to."""
    global _started  # noqa: PLW0603 - a per-process counter of started items
    with _count_lock:
        _started += 1
        started = _started
    fd = os.open(args.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"{os.getpid()} {x} {time.time():.6f}\n".encode())
    finally:
        os.close(fd)
    if started == args.kill_after:
        _halt(signal.SIGKILL)
    if started == args.stop_after:
        _halt(signal.SIGSTOP)
    time.sleep(args.cost)
    if x == args.fail_item and os.path.exists(args.marker):
        raise ValueError(f"item {x} is broken while the marker exists")
    return [x, os.getpid()]


def prepare(log: str) -> str:
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"{os.getpid()} STEP {time.time():.6f}\n".encode())
    finally:
        os.close(fd)
    return "prepared"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--store", required=True)
    parser.add_argument("--op", required=True)
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--cost", type=float, default=0.01)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--stop-after", type=int, default=-1)
    parser.add_argument("--kill-after", type=int, default=-1)
    parser.add_argument("--fail-item", type=int, default=-1)
    parser.add_argument("--marker", default="")
    parser.add_argument("--shuffle", type=int)
    args = parser.parse_args()

    items = list(range(args.n))
    if args.shuffle is not None:
        random.Random(args.shuffle).shuffle(items)

    on_error = "skip" if args.fail_item >= 0 else "raise"
    global _store  # noqa: PLW0603 - read by work() in the map's threads
    with checkpointed(args.op, store=args.store, shared=True) as cp:
        _store = cp.store
        step = cp.step("prepare", prepare, args.log)
        results: list[Any] = cp.map(
            functools.partial(work, args),
            items,
            workers=args.workers,
            on_error=on_error,
        )
    shown = [{"error": repr(r)} if isinstance(r, BaseException) else r for r in results]
    out = {"step": step, "results": shown, "failed": sorted(cp.failed)}
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(out, f)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
