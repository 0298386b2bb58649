"""How the cost of resuming and of listing grows with the number of operations and items.

An index makes a lookup logarithmic: resuming one operation among N, or at position P of a
sequence, must stay flat (at most twice the cost at the smallest N), not grow with N. Listing
reads every operation, so it is linear by nature: its cost *per operation* must stay flat.

Run through `benchmarks/run.py`; the chart plots each series against N.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from _util import Row, median

FULL_SIZES = (1_000, 10_000, 100_000, 1_000_000)
QUICK_SIZES = (1_000, 10_000)


def _store_with(directory: Path, n: int) -> str:
    """An SQLite store holding ``n`` paused operations, each with one checkpoint."""
    from resumable import open_store
    from resumable.operation import CheckpointRecord, OperationRecord, ProcessState

    url = f"sqlite:///{directory}/ops-{n}.db"
    store = open_store(url)
    payload = b"\x80\x05K\x00."  # pickle of 0
    for i in range(n):
        op_id = f"op-{i:07d}"
        op = OperationRecord.new(op_id, op_id, ProcessState.PAUSED)
        ckpt = CheckpointRecord.create(op_id, 1, i, ProcessState.PAUSED, 0.5, "pickle", payload)
        store.save(op, ckpt)
    store.close()
    return url


def _enter_one(url: str, op_id: str, rounds: int) -> float:
    """Median seconds to enter, and leave unchanged, one paused operation of the store."""
    from resumable import checkpointed
    from resumable.stores import resolve_store

    store = resolve_store(url)
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        with checkpointed(op_id, store=store, lock=False) as cp:
            _ = cp.position
        times.append(time.perf_counter() - started)
    return median(times)


def _list_all(url: str, rounds: int) -> float:
    """Median seconds to read and verify every operation record."""
    from resumable.stores import resolve_store

    store = resolve_store(url)
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        ops = [op for op in store.list_operations() if op.verify()]
        times.append(time.perf_counter() - started)
        assert ops
    return median(times)


class _Stop(Exception):
    pass


def _stop_at(data: range, position: int, url: str, op_id: str) -> None:
    """Run ``op_id`` until item ``position``, then fail: ``position`` items committed."""
    from resumable import checkpointed

    with checkpointed(op_id, store=url) as cp:
        for i in cp.iterate(data):
            if i == position:
                raise _Stop


def _resume_at(directory: Path, position: int, rounds: int) -> float:
    """Median seconds from entering a block to its first item, resumed at ``position``."""
    from resumable import checkpointed

    url = f"sqlite:///{directory}/items-{position}.db"
    data = range(position + 1)
    times = []
    for r in range(rounds):
        op_id = f"items-{r}"
        with contextlib.suppress(_Stop):
            _stop_at(data, position, url, op_id)
        started = time.perf_counter()
        with checkpointed(op_id, store=url) as cp:
            first = next(iter(cp.iterate(data)))
        times.append(time.perf_counter() - started)
        assert first == position
    return median(times)


def measure(directory: Path, quick: bool) -> dict[str, dict[int, float]]:
    """Seconds per series and size."""
    sizes = QUICK_SIZES if quick else FULL_SIZES
    rounds = 5 if quick else 15
    series: dict[str, dict[int, float]] = {
        "resume one operation among N": {},
        "list N operations, per operation": {},
        "resume at item N of a sequence": {},
    }
    for n in sizes:
        url = _store_with(directory, n)
        series["resume one operation among N"][n] = _enter_one(url, f"op-{n // 2:07d}", rounds)
        series["list N operations, per operation"][n] = _list_all(url, 3) / n
        series["resume at item N of a sequence"][n] = _resume_at(directory, n, rounds)
    return series


def rows_for(series: dict[str, dict[int, float]]) -> list[Row]:
    rows = []
    for name, points in series.items():
        sizes = sorted(points)
        low, high = points[sizes[0]], points[sizes[-1]]
        ratio = high / low
        rows.append(
            Row(
                f"{name}: N = {sizes[-1]:,} vs N = {sizes[0]:,}",
                f"{high * 1e6:.1f} us vs {low * 1e6:.1f} us",
                "flat (<= 2x)",
                ", ".join(f"{n:,}: {points[n] * 1e6:.2f} us" for n in sizes),
                f"{ratio:.2f}x",
                value=ratio,
                limit=2.0,
            )
        )
    return rows
