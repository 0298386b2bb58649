"""DBOS Transact beside `resumable`: one durable step per item, and crash to first resumed item.

DBOS runs on its SQLite system database (a file in the benchmark's temporary directory: no
PostgreSQL, no network, no DBOS Conductor or cloud), `resumable` on its SQLite store at
``durability=full``: both make each item durable, against power loss too, before the next one
starts. Measured by `benchmarks/peers.py` (group ``peers`` of `benchmarks/run.py`), which runs
this file in child processes:

    python versus_dbos.py steps DIR ITEMS ROUNDS     # (a) both sides in one process, in turns
    python versus_dbos.py job SIDE DIR K first|resume   # (b) one side's job, killed or resumed

The file is not named ``dbos.py``: it would shadow the ``dbos`` package on ``sys.path``.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

#: A child that says nothing for this long is killed and the run fails.
TIMEOUT = 300.0


def _dbos(directory: str) -> Any:
    """The DBOS class, configured on a SQLite system database in ``directory``."""
    from dbos import DBOS

    DBOS(
        config={
            "name": "resumable-bench",
            "system_database_url": f"sqlite:///{directory}/dbos.sqlite",
            "log_level": "WARNING",
        }
    )
    return DBOS


def _store(directory: str) -> str:
    return f"sqlite:///{directory}/resumable.db?durability=full"


# --- (a) one durable step per item, both sides in this process ---------------------------------


def steps(directory: str, items: int, rounds: int) -> dict[str, Any]:
    """Per-item seconds of a DBOS workflow of one step per item and of a checkpointed loop
    committing every item, in turns (the side that goes first alternates)."""
    from dbos import SetWorkflowID

    from resumable import checkpointed

    dbos = _dbos(directory)

    @dbos.step()
    def add(x: int) -> int:
        return x

    @dbos.workflow()
    def job(n: int) -> int:
        total = 0
        for x in range(n):
            total += add(x)  # recorded (the step's output) before the next step starts
        return total

    dbos.launch()
    store = _store(directory)

    def dbos_side(tag: str, n: int) -> float:
        started = time.perf_counter()
        with SetWorkflowID(tag):
            total = job(n)
        elapsed = time.perf_counter() - started
        assert total == n * (n - 1) // 2, total
        return elapsed

    def lib_side(tag: str, n: int) -> float:
        started = time.perf_counter()
        with checkpointed(tag, store=store, state={"total": 0}, every_seconds=0) as cp:
            for x in cp.iterate(range(n)):
                cp.state.total += x  # committed with the position after every item
        elapsed = time.perf_counter() - started
        assert cp.state.total == n * (n - 1) // 2, cp.state.total
        return elapsed

    dbos_side("warm-up", 5)
    lib_side("warm-up", 5)
    times: dict[str, list[float]] = {"dbos": [], "lib": []}
    for r in range(rounds):
        sides = [("dbos", dbos_side), ("lib", lib_side)]
        for name, side in sides if r % 2 == 0 else sides[::-1]:
            times[name].append(side(f"round-{r}", items) / items)
    dbos.destroy()
    return {**times, **_sqlite_modes(directory)}


def _sqlite_modes(directory: str) -> dict[str, str]:
    """The journal mode of each side's database and the synchronous level DBOS leaves as is."""
    modes = {}
    for name, file in (("dbos_journal", "dbos.sqlite"), ("lib_journal", "resumable.db")):
        conn = sqlite3.connect(Path(directory) / file)
        try:
            modes[name] = str(conn.execute("PRAGMA journal_mode").fetchone()[0])
            if name == "dbos_journal":  # DBOS sets no synchronous pragma: SQLite's default
                level = conn.execute("PRAGMA synchronous").fetchone()[0]
                modes["dbos_synchronous"] = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}[level]
        finally:
            conn.close()
    return modes


# --- (b) a job killed in the middle, and the new process that resumes it -----------------------


def _item_body(x: int, total: int, k: int, phase: str) -> None:
    if phase == "first" and x == k:
        print(f"hang {x}", flush=True)  # items 0..k-1 are recorded; the parent kills us here
        time.sleep(TIMEOUT)
    if phase == "resume":
        print(f"first {x} {total}", flush=True)  # the first item this process runs
        os._exit(0)


def job(side: str, directory: str, k: int, phase: str) -> None:
    """A job of 2k items that hangs in item k (``first``) or stops after the first item it
    runs (``resume``), printing it and the running total it was given."""
    if side == "resumable":
        from resumable import checkpointed

        store = _store(directory)
        with checkpointed("job", store=store, state={"total": 0}, every_seconds=0) as cp:
            for x in cp.iterate(range(2 * k)):
                _item_body(x, cp.state.total, k, phase)
                cp.state.total += x
        return
    from dbos import SetWorkflowID

    dbos = _dbos(directory)

    @dbos.step()
    def item(x: int, total: int) -> int:
        _item_body(x, total, k, phase)
        return x

    @dbos.workflow()
    def work(n: int) -> int:
        total = 0
        for x in range(n):
            total += item(x, total)
        return total

    dbos.launch()  # in a new process: re-enqueues this executor's PENDING workflows
    if phase == "first":
        with SetWorkflowID("job"):
            work(2 * k)
    else:
        time.sleep(TIMEOUT)  # recovery runs the workflow on DBOS's threads


def _start(side: str, directory: Path, k: int, phase: str) -> subprocess.Popen[str]:
    log = (directory / f"{side}-{phase}.log").open("a")
    try:
        return subprocess.Popen(
            [sys.executable, __file__, "job", side, str(directory), str(k), phase],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            cwd=directory,
        )
    finally:
        log.close()


def _read_line(proc: subprocess.Popen[str], what: str, log: Path) -> str:
    timer = threading.Timer(TIMEOUT, proc.kill)
    timer.start()
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
    finally:
        timer.cancel()
    if not line:
        proc.kill()
        proc.wait()
        raise RuntimeError(f"{what}: the child printed nothing:\n{log.read_text()}")
    return line.strip()


def crash(directory: Path, side: str, k: int) -> None:
    """Run ``side``'s job in ``directory`` (new) and SIGKILL it during item k."""
    directory.mkdir()
    proc = _start(side, directory, k, "first")
    line = _read_line(proc, f"{side} first run", directory / f"{side}-first.log")
    assert line == f"hang {k}", line
    proc.kill()  # SIGKILL, in the middle of item k: items 0..k-1 are recorded
    proc.wait()


def resume(directory: Path, side: str, k: int) -> float:
    """Seconds from starting a new process on what ``crash`` left to the start of item k."""
    started = time.perf_counter()
    proc = _start(side, directory, k, "resume")
    line = _read_line(proc, f"{side} resumed run", directory / f"{side}-resume.log")
    elapsed = time.perf_counter() - started
    proc.wait(TIMEOUT)
    expected = f"first {k} {k * (k - 1) // 2}"
    if line != expected:
        raise RuntimeError(f"{side} resumed at {line!r}, not {expected!r}")
    return elapsed


def main(argv: list[str]) -> None:
    if argv[0] == "steps":
        print(json.dumps(steps(argv[1], int(argv[2]), int(argv[3]))))
    elif argv[0] == "job":
        job(argv[1], argv[2], int(argv[3]), argv[4])
    else:
        raise SystemExit(f"unknown mode {argv[0]!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
