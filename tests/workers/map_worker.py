"""A ``cp.map`` job over a process pool that the map tests run as a real process, kill, and rerun.

    python map_worker.py --store URL --op ID --n N --log PATH [--cost SECONDS] [--workers W]
                         [--fail-item K --marker PATH] [--shuffle SEED]

Inside ``checkpointed(ID)``, ``cp.map`` runs :func:`work` over ``range(N)`` (shuffled by
``random.Random(SEED)`` with ``--shuffle``) on a ``ProcessPoolExecutor`` of ``W`` processes.
Each call appends ``START <x>`` to ``--log`` (one ``write`` of a line in append mode, so lines
from several processes never mix), sleeps ``--cost`` seconds and returns ``x * x``. With
``--fail-item K``, item K raises while the file ``--marker`` exists, and the map runs with
``on_error="skip"``.

When the block is done, stdout gets one JSON line: ``results`` (an exception as
``{"error": text}``), ``failed`` (sorted ``cp.failed``), ``completed_before`` and ``resumed``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from resumable import checkpointed


def work(log: str, cost: float, fail_item: int | None, marker: str | None, x: int) -> int:
    """One item: log its start, take ``cost`` seconds, fail if told to."""
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"START {x}\n".encode())
    finally:
        os.close(fd)
    time.sleep(cost)
    if x == fail_item and marker is not None and os.path.exists(marker):
        raise ValueError(f"item {x} is broken while {marker} exists")
    return x * x


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--store", required=True)
    parser.add_argument("--op", required=True)
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--cost", type=float, default=0.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--fail-item", type=int)
    parser.add_argument("--marker")
    parser.add_argument("--shuffle", type=int)
    args = parser.parse_args()

    items = list(range(args.n))
    if args.shuffle is not None:
        random.Random(args.shuffle).shuffle(items)

    fn = functools.partial(work, args.log, args.cost, args.fail_item, args.marker)
    on_error = "skip" if args.fail_item is not None else "raise"
    with (
        checkpointed(args.op, store=args.store) as cp,
        ProcessPoolExecutor(args.workers) as pool,
    ):
        results: list[Any] = cp.map(fn, items, executor=pool, on_error=on_error)
    shown: list[Any] = [
        {"error": f"{type(r).__name__}: {r}"} if isinstance(r, BaseException) else r
        for r in results
    ]
    print(
        json.dumps(
            {
                "results": shown,
                "failed": sorted(cp.failed),
                "completed_before": cp.completed_before,
                "resumed": cp.resumed,
            }
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
