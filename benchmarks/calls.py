"""``@resumable`` calls against joblib.Memory and diskcache, measured in one process.

Each side caches the same trivial function in its own temporary directory. A *miss* is the
first call with new arguments (the function runs and its result is stored); a *hit* is a call
whose result is stored. The sides take turns by blocks of 100 calls, so a noisy machine moves
them alike while each runs with warm caches; the figures are medians. joblib and diskcache
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


def bench_calls(n: int) -> list[Row]:
    """The @resumable rows: hit and miss, each against its absolute goal and joblib.Memory.

    The absolute hit goal gates the run. The ratio goals were set against a joblib.Memory hit
    of ~250 us and miss of ~450 us; here joblib is faster, and the miss goal is a known miss
    (see docs/benchmarks.md), so those rows are reported without failing the run.
    """
    m = measure(n)
    rows = []
    for phase, limit_us, limit_ratio in (("hit", 15.0, 0.06), ("miss", 60.0, 0.15)):
        ours, joblib_us, disk_us = m[phase]["resumable"], m[phase]["joblib"], m[phase]["diskcache"]
        compared = (
            f"joblib.Memory {phase}: {joblib_us:.1f} us; diskcache memoize: {disk_us:.1f} us; "
            f"{n} calls each, in turns"
        )
        ratios = f"{fmt_ratio(ours, joblib_us)} joblib, {fmt_ratio(ours, disk_us)} diskcache"
        what = f"`@resumable` {phase}, trivial function, SQLite store, durability normal"
        rows.append(
            Row(
                figure=what,
                measured=f"{ours:.1f} us",
                goal=f"<= {limit_us:g} us",
                compared=compared,
                ratio=ratios,
                value=ours,
                limit=limit_us,
                gated=phase == "hit",
            )
        )
        rows.append(
            Row(
                figure=f"{what}, relative to joblib.Memory",
                measured=fmt_ratio(ours, joblib_us),
                goal=f"<= {limit_ratio:g}x joblib.Memory",
                compared=compared,
                ratio=ratios,
                value=ours / joblib_us,
                limit=limit_ratio,
                gated=False,
            )
        )
    return rows


if __name__ == "__main__":
    for row in bench_calls(3000):
        print(row.figure, row.measured, row.compared, row.result)
