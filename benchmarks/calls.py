"""``@resumable`` calls against joblib.Memory and diskcache, measured in one process.

Each side caches the same trivial function in its own temporary directory. A *miss* is the
first call with new arguments (the function runs and its result is stored); a *hit* is a call
whose result is stored. The sides take turns by blocks of 100 calls, in an order reversed at
every block, so a noisy machine moves them alike while each runs with warm caches; the
figures are medians. joblib and diskcache
come with the ``bench`` extra.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _util import Row, fmt_ratio, median


def trivial(x: int) -> int:
    return x + 1


def _sides(directory: Path) -> dict[str, Callable[[int], Any]]:
    import diskcache
    import joblib

    from resumable import resumable

    sides: dict[str, Callable[[int], Any]] = {
        "resumable": resumable(store=f"sqlite:///{directory}/calls.db")(trivial),
        "joblib": joblib.Memory(str(directory / "joblib"), verbose=0).cache(trivial),
        "diskcache": diskcache.Cache(str(directory / "diskcache")).memoize()(trivial),
    }
    return sides


def measure(n: int) -> dict[str, dict[str, float]]:
    """Median microseconds per call: {"miss"/"hit": {side: us}}."""
    directory = Path(tempfile.mkdtemp(prefix="bench-calls-"))
    cwd = Path.cwd()
    os.chdir(directory)
    try:
        sides = _sides(directory)
        clock = time.perf_counter_ns
        out: dict[str, dict[str, list[int]]] = {"miss": {}, "hit": {}}
        block = 100  # sides take turns by blocks of calls: each runs warm, none is favoured
        for phase in ("miss", "hit"):
            for start in range(0, n, block):
                order = list(sides.items())
                if start // block % 2:
                    order.reverse()
                for name, fn in order:
                    times = out[phase].setdefault(name, [])
                    for i in range(start, min(n, start + block)):
                        t0 = clock()
                        fn(i)
                        times.append(clock() - t0)
    finally:
        os.chdir(cwd)
    return {p: {k: median(v) / 1e3 for k, v in d.items()} for p, d in out.items()}


#: The goals of issue 16: a hit and a miss each at most half of diskcache's, in the same run.
GOAL_RATIO = 0.5


def bench_calls(n: int) -> list[Row]:
    """The @resumable rows: hit and miss, each gated at GOAL_RATIO x diskcache's memoize.

    joblib.Memory's figures are reported beside them (it is far behind on both), not gated.
    """
    m = measure(n)
    rows = []
    for phase in ("hit", "miss"):
        ours, joblib_us, disk_us = m[phase]["resumable"], m[phase]["joblib"], m[phase]["diskcache"]
        compared = (
            f"diskcache memoize {phase}: {disk_us:.1f} us; joblib.Memory {phase}: "
            f"{joblib_us:.1f} us (reported, not gated); {n} calls each, the sides in turns, "
            "their order alternating"
        )
        rows.append(
            Row(
                figure=f"`@resumable` {phase}, trivial function, SQLite store, durability normal",
                measured=f"{ours:.1f} us",
                goal=f"<= {GOAL_RATIO:g}x diskcache memoize",
                compared=compared,
                ratio=f"{fmt_ratio(ours, disk_us)} diskcache, {fmt_ratio(ours, joblib_us)} joblib",
                value=ours / disk_us,
                limit=GOAL_RATIO,
                gated=phase == "hit",
                why=""
                if phase == "hit"
                else "issue 16's goal 1, not met yet for a miss: it takes the operation's lock, "
                "runs the call and writes the COMPLETED record and the result in one "
                "transaction over two tables; building and checksumming those records in "
                "Python costs more than the write.",
                guard=0.0 if phase == "hit" else 3.0,  # the miss was 1.6-1.9x diskcache before
            )
        )
    return rows


if __name__ == "__main__":
    for row in bench_calls(3000):
        print(row.figure, row.measured, row.ratio, row.compared, row.result, sep=" | ")
