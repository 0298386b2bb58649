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


def _enter_once(store: object, op_id: str) -> float:
    """Seconds to enter, and leave unchanged, one paused operation of the store."""
    from resumable import checkpointed

    started = time.perf_counter()
    with checkpointed(op_id, store=store, lock=False) as cp:  # type: ignore[arg-type]
        _ = cp.position
    return time.perf_counter() - started


def _list_once(store: object) -> float:
    """Seconds to read and verify every operation record."""
    started = time.perf_counter()
    ops = [op for op in store.list_operations() if op.verify()]  # type: ignore[attr-defined]
    seconds = time.perf_counter() - started
    assert ops
    return seconds


class _Stop(Exception):
    pass


def _stop_at(data: range, position: int, url: str, op_id: str) -> None:
    """Run ``op_id`` until item ``position``, then fail: ``position`` items committed."""
    from resumable import checkpointed

    with checkpointed(op_id, store=url) as cp:
        for i in cp.iterate(data):
            if i == position:
                raise _Stop


def _stopped_at(directory: Path, position: int, rounds: int) -> str:
    """A store holding ``rounds`` operations stopped at item ``position`` (one per round)."""
    url = f"sqlite:///{directory}/items-{position}.db"
    for r in range(rounds):
        with contextlib.suppress(_Stop):
            _stop_at(range(position + 1), position, url, f"items-{r}")
    return url


def _resume_once(url: str, op_id: str, position: int) -> float:
    """Seconds from entering a block to its first item, resumed at ``position``."""
    from resumable import checkpointed

    started = time.perf_counter()
    with checkpointed(op_id, store=url) as cp:
        first = next(iter(cp.iterate(range(position + 1))))
    seconds = time.perf_counter() - started
    assert first == position
    return seconds


def measure(directory: Path, quick: bool) -> dict[str, dict[int, float]]:
    """Median seconds per series and size.

    Every store is prepared first; then each round times every size of one series after the
    other, the sizes in increasing order in one round and decreasing in the next, so no size
    is always timed right after its own preparation (a 1M-item loop leaves the caches cold)
    or always first. The listing's rounds come after all the others (see below).
    """
    from resumable.stores import resolve_store

    sizes = QUICK_SIZES if quick else FULL_SIZES
    rounds = 5 if quick else 15
    stores = {n: resolve_store(_store_with(directory, n)) for n in sizes}
    stopped = {n: _stopped_at(directory, n, rounds) for n in sizes}
    names = (
        "resume one operation among N",
        "list N operations, per operation",
        "resume at item N of a sequence",
    )
    samples: dict[str, dict[int, list[float]]] = {name: {n: [] for n in sizes} for name in names}
    for r in range(rounds):
        order = sizes if r % 2 == 0 else sizes[::-1]
        for n in order:
            samples[names[0]][n].append(_enter_once(stores[n], f"op-{n // 2:07d}"))
        for n in order:
            samples[names[2]][n].append(_resume_once(stopped[n], f"items-{r}", n))
    # The listing after all the rest: a block entered right after N operations were listed
    # (and their records freed) in the same process took longer the larger N was, while
    # without a listing before it, it stays flat: these series time entering, not the
    # after-effects of a listing.
    for r in range(3):
        for n in sizes if r % 2 == 0 else sizes[::-1]:
            samples[names[1]][n].append(_list_once(stores[n]) / n)
    return {name: {n: median(v) for n, v in by_size.items()} for name, by_size in samples.items()}


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
