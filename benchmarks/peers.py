"""What a user would write by hand instead, and DBOS Transact, measured beside `resumable`.

- per-item loop overhead: `cp.iterate` against a plain loop and against a hand-written
  checkpoint (pickle the running total and position to a temp file and `os.replace` it, once
  a second, the same policy as `cp.iterate`'s default), all three keeping the total the same way;
- a checkpoint commit of the file store (durability full) against a raw atomic file write of
  the same bytes (temp file, write, fsync, rename, directory fsync);
- DBOS Transact on its SQLite system database (`benchmarks/versus_dbos.py`): one durable step
  per item against a loop committing every item, and crash to first resumed item in a new
  process. Without the ``dbos`` package (the ``bench`` extra) these rows are absent.

Every pair runs in turns, the side that goes first changing from round to round.
Run through `benchmarks/run.py`.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import pickle
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import _util
import versus_dbos
from _util import Row, median


@dataclass(frozen=True)
class Plan:
    items: int
    rounds: int
    commits: int
    #: Items per job and jobs per side of the one-step-per-item figure.
    step_items: int
    step_rounds: int
    #: The item during which the job is killed, and kill-and-resume rounds per side.
    crash_at: int
    crash_rounds: int


FULL = Plan(
    items=2_000_000, rounds=7, commits=2000,
    step_items=200, step_rounds=7, crash_at=50, crash_rounds=5,
)  # fmt: skip
QUICK = Plan(
    items=300_000, rounds=7, commits=300,
    step_items=50, step_rounds=3, crash_at=50, crash_rounds=3,
)  # fmt: skip

#: The hand-written loop reads the clock once per this many items.
CLOCK_EVERY = 1000


def _plain(n: int) -> float:
    started = time.perf_counter()
    total = 0
    for x in range(n):
        total += x
    return time.perf_counter() - started


def _save(path: Path, position: int, total: int) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(pickle.dumps((position, {"total": total}), protocol=5))
    os.replace(tmp, path)


def _hand_written(n: int, path: Path) -> float:
    """The loop a careful user writes without a library: position and total, atomically,
    once a second; the clock is read every CLOCK_EVERY items (the item is its position)."""
    total = 0
    last = time.monotonic()
    check_at = CLOCK_EVERY
    started = time.perf_counter()
    for x in range(n):
        total += x
        if x >= check_at:
            check_at = x + CLOCK_EVERY
            now = time.monotonic()
            if now - last >= 1.0:
                _save(path, x + 1, total)
                last = now
    elapsed = time.perf_counter() - started
    _save(path, n, total)
    return elapsed


def _resumable(n: int, url: str, op_id: str) -> float:
    from resumable import checkpointed

    with checkpointed(op_id, store=url, state={"total": 0}) as cp:
        total = 0
        started = time.perf_counter()
        for x in cp.iterate(range(n)):
            total += x
        elapsed = time.perf_counter() - started
        cp.state.total = total
    return elapsed


def bench_loop(directory: Path, plan: Plan) -> list[Row]:
    """Per-item cost of cp.iterate against a plain loop and a hand-written checkpoint."""
    url = f"sqlite:///{directory}/peers.db"
    times: dict[str, list[float]] = {"plain": [], "hand": [], "lib": []}
    sides = {
        "plain": lambda r: _plain(plan.items),
        "hand": lambda r: _hand_written(plan.items, directory / f"hand{r}.pickle"),
        "lib": lambda r: _resumable(plan.items, url, f"loop-{r}"),
    }
    names = list(sides)
    for r in range(plan.rounds):
        for name in names[r % 3 :] + names[: r % 3]:  # each side goes first in turn
            times[name].append(sides[name](r))
    per = {k: median(v) / plan.items * 1e9 for k, v in times.items()}
    lib, hand = per["lib"] - per["plain"], per["hand"] - per["plain"]
    return [
        Row(
            "per-item overhead of `cp.iterate` over a plain loop",
            f"{lib:.0f} ns/item",
            compared=f"all three loops add each item to a local total. Hand-written "
            f"checkpoint: reads the clock every {CLOCK_EVERY:,} items (one integer comparison "
            f"per item) and "
            f"pickles position and total to a temp file + `os.replace` once a second (and, "
            f"untimed, at the end): {hand:.0f} ns/item over the plain loop "
            f"({per['plain']:.0f} ns/item). "
            f"`cp.iterate`: its default policy (a commit once a second). Timed around the "
            f"`for` loop only (no final save, no block entry or exit); {plan.items:,} items, "
            f"median of {plan.rounds} rounds, the side that goes first rotating",
            ratio=f"{lib / hand:.2f}x hand-written" if hand > 0 else "n/a",
            value=lib,
            **_util.goal(150.0, "ns/item"),
        )
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

    def lib_side(i: int) -> None:
        rec = CheckpointRecord.create("op", i + 1, i, ProcessState.RUNNING, 0.0, "pickle", payload)
        started = time.perf_counter()
        store.add_checkpoint(rec)
        lib.append(time.perf_counter() - started)

    def raw_side(i: int) -> None:
        started = time.perf_counter()
        _raw_atomic(raw_dir / f"{i % 3}.json", payload)
        raw.append(time.perf_counter() - started)

    for i in range(plan.commits):
        for side in (lib_side, raw_side) if i % 2 == 0 else (raw_side, lib_side):
            side(i)
    store.close()
    a, b = median(lib) * 1e6, median(raw) * 1e6
    return [
        Row(
            "file store checkpoint p50, durability full",
            f"{a:.0f} us",
            "<= 1.5x raw",
            f"raw atomic write (temp, write, fsync, rename, dir fsync) of the same bytes: "
            f"{b:.0f} us; {plan.commits} each, in turns, the side that goes first alternating",
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


def _dbos_version() -> str | None:
    """The installed DBOS Transact's version; None, said on stderr, if it is not installed
    (in CI, which installs the bench extra, the run fails)."""
    if importlib.util.find_spec("dbos") is None:
        if os.environ.get("CI") == "true":
            raise SystemExit("CI: DBOS Transact is not installed (pip install -e '.[bench]')")
        print("... DBOS rows skipped: the dbos package is not installed", file=sys.stderr)
        return None
    return importlib.metadata.version("dbos")


def bench_dbos(directory: Path, plan: Plan) -> list[Row]:
    """One durable step per item, and crash to first resumed item, against DBOS Transact."""
    version = _dbos_version()
    if version is None:
        return []
    steps_dir = directory / "dbos-steps"
    steps_dir.mkdir()
    found = _util.run_child(
        str(Path(versus_dbos.__file__)),
        "steps",
        str(steps_dir),
        str(plan.step_items),
        str(plan.step_rounds),
        cwd=steps_dir,
    )
    per_dbos = median(found["dbos"]) * 1e3  # type: ignore[arg-type]
    per_lib = median(found["lib"]) * 1e3  # type: ignore[arg-type]
    k = plan.crash_at
    waits: dict[str, list[float]] = {"dbos": [], "resumable": []}
    for side in waits:  # killed once; each round resumes a copy of the files it left
        versus_dbos.crash(directory / f"{side}-killed", side, k)
    for r in range(plan.crash_rounds):
        for side in ("dbos", "resumable") if r % 2 == 0 else ("resumable", "dbos"):
            copy = directory / f"{side}-{r}"
            shutil.copytree(directory / f"{side}-killed", copy)
            waits[side].append(versus_dbos.resume(copy, side, k))
    wait_dbos, wait_lib = median(waits["dbos"]), median(waits["resumable"])
    return [
        Row(
            "one durable step per item: a `checkpointed` loop committing every item, "
            "vs a DBOS workflow of one `@DBOS.step()` per item",
            f"{per_lib:.2f} ms/item",
            "<= 1.0x DBOS",
            f"DBOS Transact {version}: {per_dbos:.2f} ms/item. Both on SQLite files in one "
            f"directory, each item durable (power loss too) before the next starts. DBOS "
            f"records each step's output (its defaults: journal_mode={found['dbos_journal']}, "
            f"synchronous={found['dbos_synchronous']}); `cp.iterate` with every_seconds=0 "
            f"commits position and state (`cp.state.total += x`) after each item, "
            f"durability=full (journal_mode={found['lib_journal']}, synchronous=FULL). "
            f"Whole jobs of {plan.step_items} items timed, median of {plan.step_rounds} per "
            f"side, in turns in one process",
            _util.fmt_ratio(per_lib, per_dbos),
            value=per_lib / per_dbos,
            limit=1.0,
        ),
        Row(
            "crash to first resumed item, new process: re-running a `checkpointed` job "
            "vs DBOS recovery",
            f"{wait_lib:.2f} s",
            "<= 1.0x DBOS",
            f"DBOS Transact {version}: {wait_dbos:.2f} s (`DBOS.launch()` re-enqueues the "
            f"PENDING workflow, which replays its {k} recorded steps and runs step {k}). "
            f"Both sides: the job of the row above, of {2 * k} items, SIGKILLed during item {k}, "
            f"then a new interpreter running the same script on a copy of the files it left, "
            f"timed from its start (imports included) until item {k} starts, checked to get "
            f"the total of items 0..{k - 1}; median of {plan.crash_rounds}, the side that "
            f"goes first alternating",
            _util.fmt_ratio(wait_lib, wait_dbos),
            value=wait_lib / wait_dbos,
            limit=1.0,
        ),
    ]


def run(directory: Path, quick: bool) -> list[Row]:
    plan = QUICK if quick else FULL
    return [
        *bench_loop(directory, plan),
        *bench_file_commit(directory, plan),
        *bench_dbos(directory, plan),
    ]
