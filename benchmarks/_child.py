"""The measurements that run in a new interpreter, and the block helpers they share.

Run as ``python benchmarks/_child.py KIND URL MODE``; prints one JSON object. This module
imports next to nothing besides ``resumable``, so a new process measures what a user's
re-run pays, not modules the benchmark harness happened to load first.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import suppress

perf = time.perf_counter

ONE_M = 1_000_000
TEN_M = 10_000_000
RESUME_AT = 9_999_000
#: The state every benchmark block starts with (and the commit benchmark writes).
SMALL_STATE = {"done": 0, "bytes": 0, "name": "x" * 30}


class Stop(Exception):
    """Raised inside a block to leave it as an interrupted run would."""


def first_item(url: str, op_id: str, data: range) -> tuple[float, object]:
    """Seconds from entering a block to its first item; then leave as a crash would."""
    from resumable import checkpointed

    first: object = None
    started = perf()
    with suppress(Stop), checkpointed(op_id, store=url, state=dict(SMALL_STATE)) as cp:
        first = next(iter(cp.iterate(data)))
        elapsed = perf() - started
        raise Stop  # the item stays unfinished: the committed position does not move
    return elapsed, first


def reenter_completed(url: str, op_id: str, data: range) -> float:
    """Seconds to enter a COMPLETED operation, iterate (nothing) and leave."""
    from resumable import checkpointed

    started = perf()
    with checkpointed(op_id, store=url, state=dict(SMALL_STATE)) as cp:
        for _ in cp.iterate(data):
            raise AssertionError("a completed operation yielded an item")
    elapsed = perf() - started
    if not cp.completed_before:
        raise AssertionError("the operation was not found COMPLETED")
    return elapsed


def rss_bytes() -> int:
    """The current resident set size of this process (``VmRSS``), in bytes."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource  # the peak, not the current size: the best a system without /proc offers

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def cold(url: str, mode: str) -> dict[str, object]:
    """The first block of a new process, after ``import resumable``."""
    import resumable  # noqa: F401 - loaded before the clock starts: import time is its own row

    if mode == "resume":
        seconds, first = first_item(url, "resume-10m", range(TEN_M))
        if first != RESUME_AT:
            raise AssertionError(f"resumed at item {first!r}")
    elif mode == "completed":
        seconds = reenter_completed(url, "done-1m", range(ONE_M))
    else:
        op_id = f"cold-new-{os.getpid()}-{time.time_ns()}"
        seconds, first = first_item(url, op_id, range(TEN_M))
        if first != 0:
            raise AssertionError(f"a new operation started at item {first!r}")
    return {"seconds": seconds}


def _generator(n: int) -> Iterator[int]:
    yield from range(n)  # a generator: no len(), no seek(), not a Sequence


def memory(url: str, mode: str) -> dict[str, object]:
    """RSS before and at the peak of a loop over a 10M-item generator (plain or cp.iterate)."""
    from resumable import checkpointed

    # Pay every first-use cost (store, lock directory, logging) before the baseline.
    with checkpointed("memory-warmup", store=url, state=dict(SMALL_STATE), fresh=True) as cp:
        for _ in cp.iterate(_generator(10_000)):
            pass
    every = 250_000

    def loop(items: Iterator[int]) -> tuple[int, int]:
        gc.collect()
        base = peak = rss_bytes()
        for x in items:
            if not x % every:
                peak = max(peak, rss_bytes())
        gc.collect()
        return base, max(peak, rss_bytes())

    if mode == "plain":
        base, peak = loop(_generator(TEN_M))
    else:
        with checkpointed("memory", store=url, state=dict(SMALL_STATE), fresh=True) as cp:
            base, peak = loop(cp.iterate(_generator(TEN_M)))
            if cp.position != TEN_M:
                raise AssertionError(f"position {cp.position} after the loop, not {TEN_M}")
    return {"base": base, "peak": peak}


def main(argv: list[str]) -> int:
    kind, url, mode = argv
    out = cold(url, mode) if kind == "cold" else memory(url, mode)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
