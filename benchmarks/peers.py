"""What a user would write by hand instead, measured beside `resumable` in the same run.

- per-item loop overhead: `cp.iterate` against a plain loop and against a hand-written
  checkpoint (pickle the state and position to a temp file and `os.replace` it, once a second,
  the same policy as `cp.iterate`'s default);
- a checkpoint commit of the file store (durability full) against a raw atomic file write of
  the same bytes (temp file, write, fsync, rename, directory fsync);
- DBOS Transact (one step per item; crash to first resumed item): optional, and not compared
  yet; its row says so.

Run through `benchmarks/run.py`.
"""

from __future__ import annotations

import os
import pickle
import time
from dataclasses import dataclass
from pathlib import Path

import _util
from _util import Row, median


@dataclass(frozen=True)
class Plan:
    items: int
    rounds: int
    commits: int


FULL = Plan(items=2_000_000, rounds=7, commits=2000)
QUICK = Plan(items=300_000, rounds=3, commits=300)


def _plain(n: int) -> float:
    started = time.perf_counter()
    total = 0
    for x in range(n):
        total += x
    return time.perf_counter() - started


def _hand_written(n: int, path: Path) -> float:
    """The loop a careful user writes without a library: state + position, atomically."""
    started = time.perf_counter()
    state = {"total": 0}
    last = time.monotonic()
    for x in range(n):
        state["total"] += x
        now = time.monotonic()  # a user checks the clock each item: no adaptive stride
        if now - last >= 1.0:
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(pickle.dumps((x + 1, state), protocol=5))
            os.replace(tmp, path)
            last = now
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(pickle.dumps((n, state), protocol=5))
    os.replace(tmp, path)
    return time.perf_counter() - started


def _resumable(n: int, url: str, op_id: str, *, state_writes: bool) -> float:
    from resumable import checkpointed

    started = time.perf_counter()
    with checkpointed(op_id, store=url, state={"total": 0}) as cp:
        if state_writes:
            state = cp.state
            for x in cp.iterate(range(n)):
                state.total += x  # recorded in the undo log: rolled back if the item fails
        else:
            total = 0
            for x in cp.iterate(range(n)):
                total += x
            cp.state.total = total
    return time.perf_counter() - started


def bench_loop(directory: Path, plan: Plan) -> list[Row]:
    """Per-item cost of cp.iterate against a plain loop and a hand-written checkpoint."""
    url = f"sqlite:///{directory}/peers.db"
    times: dict[str, list[float]] = {"plain": [], "hand": [], "lib": [], "lib+state": []}
    for r in range(plan.rounds):
        times["plain"].append(_plain(plan.items))
        times["hand"].append(_hand_written(plan.items, directory / f"hand{r}.pickle"))
        times["lib"].append(_resumable(plan.items, url, f"loop-{r}", state_writes=False))
        times["lib+state"].append(_resumable(plan.items, url, f"state-{r}", state_writes=True))
    per = {k: median(v) / plan.items * 1e9 for k, v in times.items()}
    lib, hand = per["lib"] - per["plain"], per["hand"] - per["plain"]
    with_state = per["lib+state"] - per["plain"]
    common = (
        f"hand-written pickle-to-file checkpoint once a second: {hand:.0f} ns/item over the "
        f"plain loop ({per['plain']:.0f} ns/item); {plan.items:,} items"
    )
    return [
        Row(
            "per-item overhead of `cp.iterate` over a plain loop",
            f"{lib:.0f} ns/item",
            "<= 150 ns/item",
            common,
            f"{lib / hand:.2f}x hand-written" if hand > 0 else "n/a",
            value=lib,
            limit=150.0,
        ),
        Row(
            "the same, with one `cp.state` field assigned per item (undo log)",
            f"{with_state:.0f} ns/item",
            "reported",
            common + "; the hand-written loop updates a dict and can roll nothing back",
            f"{with_state / hand:.2f}x hand-written" if hand > 0 else "n/a",
            value=with_state,
            limit=with_state,
            gated=False,
        ),
    ]


def bench_file_commit(directory: Path, plan: Plan) -> list[Row]:
    """A file-store checkpoint (durability full) against a raw durable atomic write."""
    from resumable import open_store
    from resumable.operation import CheckpointRecord, ProcessState

    store = open_store(f"file://{directory}/files?durability=full")
    payload = pickle.dumps({"position": 1, "rows": list(range(20))}, protocol=5)
    raw_dir = directory / "raw"
    raw_dir.mkdir()
    lib, raw = [], []
    for i in range(plan.commits):
        rec = CheckpointRecord.create("op", i + 1, i, ProcessState.RUNNING, 0.0, "pickle", payload)
        started = time.perf_counter()
        store.add_checkpoint(rec)
        lib.append(time.perf_counter() - started)
        started = time.perf_counter()
        _raw_atomic(raw_dir / f"{i % 3}.json", payload)
        raw.append(time.perf_counter() - started)
    store.close()
    a, b = median(lib) * 1e6, median(raw) * 1e6
    return [
        Row(
            "file store checkpoint p50, durability full",
            f"{a:.0f} us",
            "<= 1.5x raw",
            f"raw atomic write (temp, write, fsync, rename, dir fsync) of the same bytes: "
            f"{b:.0f} us; {plan.commits} each, in turns",
            _util.fmt_ratio(a, b),
            value=a / b,
            limit=1.5,
        )
    ]


def _raw_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def bench_dbos() -> list[Row]:
    """DBOS Transact is not installed by the bench extra: the row says it was not compared."""
    return [
        Row(
            "one step per item, and crash to first resumed item, vs DBOS Transact",
            "not compared",
            "reported",
            "optional: DBOS Transact is not in the bench extra and this comparison is not "
            "written yet (see the closing notes of issue 8)",
            "n/a",
            value=0.0,
            limit=1.0,
            gated=False,
        )
    ]


def run(directory: Path, quick: bool) -> list[Row]:
    plan = QUICK if quick else FULL
    return [*bench_loop(directory, plan), *bench_file_commit(directory, plan), *bench_dbos()]
