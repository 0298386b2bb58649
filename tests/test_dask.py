"""``cp.map`` on a real Dask cluster: ``LocalCluster`` worker processes, ``client.get_executor()``.

A worker process SIGKILLed mid-map is restarted by its nanny and its tasks rescheduled; the
driver records every item's result exactly once. A driver process killed mid-map (with its
whole cluster) is run again and runs only the items without a recorded result.
``on_error="skip"`` works across the cluster as it does on a local pool, and the map keeps
every thread of a cluster bigger than the driver's CPU count busy.

Items run :func:`dask_worker.work`, which logs ``START``/``END`` lines with the worker's pid
to a side file (one ``O_APPEND`` write per line). Every wait polls the store or that file
under a deadline. The worker to kill is told to hold its item (:func:`dask_worker.held_work`)
and is killed only once it says it holds one, so the kill always interrupts a known item.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import require_package, url_for
from dask_worker import ItemBroken, held_work, work

from resumable import ProcessState, Store, checkpointed, open_store
from resumable.keys import digest_value
from resumable.serializers import decode
from resumable.stores import resolve_store

distributed = require_package("distributed", "pip install 'resumable[dask]'")

WORKER = Path(__file__).parent / "workers" / "dask_worker.py"
TIMEOUT = 30.0


# --- helpers ------------------------------------------------------------------------------


@contextlib.contextmanager
def local_cluster(threads_per_worker: int = 1) -> Iterator[Any]:
    """A client of a fresh cluster of 2 worker processes, each under a nanny; closed after."""
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=threads_per_worker,
        processes=True,
        # The scheduler's HTTP server (/health, /metrics) runs even without a dashboard,
        # on port 8787 unless told otherwise: another cluster there means a warning,
        # an error under filterwarnings=error. Any free port on loopback, no dashboard.
        dashboard_address="127.0.0.1:0",
        scheduler_kwargs={"dashboard": False},
        silence_logs=logging.ERROR,  # a killed worker is the point, not news
    )
    try:
        with distributed.Client(cluster) as client:
            yield client
    finally:
        cluster.close()


@pytest.fixture
def client() -> Iterator[Any]:
    """A client of a fresh cluster: 2 worker processes, 1 thread each."""
    with local_cluster() as c:
        yield c


def key(item: int) -> str:
    """The record key of an item of map 0: its default key, ``d`` and the item's digest."""
    return f"map0:d{digest_value(item)}"


#: The item of each record key, for the items these tests map over.
ITEM_OF = {key(i): i for i in range(1000)}


def recorded(store: Store, op_id: str) -> set[int]:
    """The items of map 0 that have a stored result (failures excluded)."""
    return {
        ITEM_OF[k]
        for k, rec in store.load_results(op_id, "map0:").items()
        if rec.serializer != "!error"
    }


def events(log: Path) -> list[tuple[str, int, int]]:
    """The side file's lines as ``(START|END, item, pid)``, in the order they were written."""
    try:
        text = log.read_text()
    except FileNotFoundError:
        return []
    out = []
    for line in text.splitlines():
        what, item, pid = line.split()
        out.append((what, int(item), int(pid)))
    return out


def unfinished(log: Path, pid: int) -> set[int]:
    """Items that process ``pid`` started and has not (yet) finished."""
    running: set[int] = set()
    for what, item, who in events(log):
        if who == pid and what == "START":
            running.add(item)
        elif who == pid and what == "END":
            running.discard(item)
    return running


def held(log: Path, pid: int) -> set[int]:
    """Items that process ``pid`` holds (``HOLD`` lines of :func:`dask_worker.held_work`)."""
    return {item for what, item, who in events(log) if what == "HOLD" and who == pid}


class WorkerKiller(threading.Thread):
    """SIGKILLs one worker process mid-item once ``after`` results are recorded.

    It then names the victim in the ``hold`` file, waits for the victim's ``HOLD`` line
    (:func:`dask_worker.held_work`: that item never ends on its own) and kills it: the
    interrupted item is known exactly, whatever the timing.
    """

    def __init__(
        self, url: str, op_id: str, log: Path, hold: Path, victim: int, after: int
    ) -> None:
        super().__init__(name="worker-killer", daemon=True)
        self.url, self.op_id, self.log, self.hold = url, op_id, log, hold
        self.victim, self.after = victim, after
        self.stop = threading.Event()
        self.done_at_kill: set[int] | None = None  # what the store held just before the kill
        self.running_at_kill: set[int] = set()
        self.error: str | None = None

    def run(self) -> None:
        store = open_store(self.url)  # its own connection: the map's store is in use
        try:
            deadline = time.monotonic() + TIMEOUT
            named = False
            while not self.stop.is_set():
                done = recorded(store, self.op_id)
                if not named and len(done) >= self.after:
                    tmp = self.hold.with_suffix(".tmp")
                    tmp.write_text(str(self.victim))
                    tmp.replace(self.hold)  # whole or absent for the worker that reads it
                    named = True
                running = held(self.log, self.victim) if named else set()
                if running:  # that item waits for this kill and never logs END
                    self.done_at_kill = recorded(store, self.op_id)
                    os.kill(self.victim, signal.SIGKILL)
                    self.running_at_kill = running
                    return
                if time.monotonic() > deadline:
                    self.error = f"no kill after {TIMEOUT}s: {len(done)} results recorded"
                    return
                time.sleep(0.002)
            self.error = "the map ended before the kill"
        except Exception as exc:  # reported to the test, which fails with it
            self.error = repr(exc)
        finally:
            store.close()


def rows(db: Path, op_id: str) -> dict[str, int]:
    """Straight from the SQLite file: how many result rows each key of ``op_id`` has."""
    conn = sqlite3.connect(db)
    try:
        found = conn.execute(
            "SELECT key, COUNT(*) FROM results WHERE op_id = ? AND key LIKE 'map0:%' GROUP BY key",
            (op_id,),
        ).fetchall()
    finally:
        conn.close()
    return dict(found)


# --- 1. a worker process dies mid-map -------------------------------------------------------


@pytest.mark.slow
def test_a_killed_worker_loses_nothing_and_records_each_item_once(
    client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGKILL one worker mid-map: its work is rescheduled; every item recorded exactly once."""
    n, cost = 120, 0.03
    url, log, hold = url_for("sqlite", tmp_path), tmp_path / "items.log", tmp_path / "hold"
    pids: dict[str, int] = client.run(os.getpid)
    assert len(set(pids.values())) == 2
    victim = pids[min(pids)]

    store = resolve_store(url)  # the very store checkpointed(store=url) uses
    written = Counter[str]()
    put = store.put_results

    def counting(results: Any) -> None:
        put(results)
        written.update(r.key for r in results)

    monkeypatch.setattr(store, "put_results", counting)

    killer = WorkerKiller(url, "dask-kill", log, hold, victim, after=20)
    killer.start()
    try:
        with checkpointed("dask-kill", store=url) as cp:
            out = cp.map(
                functools.partial(held_work, str(log), cost, str(hold)),
                range(n),
                executor=client.get_executor(),
            )
    finally:
        killer.stop.set()
        killer.join(TIMEOUT)
    assert killer.error is None, killer.error
    assert killer.done_at_kill is not None
    assert 20 <= len(killer.done_at_kill) < n, "the kill did not land mid-map"

    # The map returned everything, in order; each key was written once, and is one row.
    assert out == [x * x for x in range(n)]
    assert written == Counter(key(i) for i in range(n))
    assert rows(tmp_path / "state.db", "dask-kill") == {key(i): 1 for i in range(n)}
    stored = store.load_results("dask-kill", "map0:")
    assert {k: decode(r.serializer, r.payload) for k, r in stored.items()} == {
        key(i): i * i for i in range(n)
    }
    assert store.load_operation("dask-kill").state is ProcessState.COMPLETED

    # The item the kill interrupted was run again, to the end, by another worker process.
    log_events = events(log)
    interrupted = unfinished(log, victim)
    assert len(killer.running_at_kill) == 1
    assert killer.running_at_kill <= interrupted
    finished_elsewhere = {item for what, item, pid in log_events if what == "END" and pid != victim}
    assert interrupted <= finished_elsewhere
    assert {item for what, item, _ in log_events if what == "END"} == set(range(n))

    # The nanny replaced the dead worker process.
    deadline = time.monotonic() + TIMEOUT
    while True:
        now = set(client.run(os.getpid).values())
        if len(now) == 2 and victim not in now:
            break
        assert time.monotonic() < deadline, f"the killed worker was not replaced: {now}"
        time.sleep(0.05)


# --- 2. the driver process dies mid-map -----------------------------------------------------


class Driver:
    """One run of dask_worker.py (driver + its LocalCluster) in its own process group."""

    def __init__(self, tmp_path: Path, name: str, *args: str) -> None:
        self.log = tmp_path / f"{name}.log"
        self.err = tmp_path / f"{name}.err"
        with self.err.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, str(WORKER), "--log", str(self.log), *args],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=err,
                start_new_session=True,  # pgid == pid: one killpg reaches the workers too
            )

    def kill_group_once(self, store: Store, op_id: str, recorded_at_least: int) -> None:
        """SIGKILL the whole process group once the store holds enough results."""
        deadline = time.monotonic() + TIMEOUT
        while len(recorded(store, op_id)) < recorded_at_least:
            assert self.proc.poll() is None, f"the driver ended before the kill: {self.stderr()}"
            assert time.monotonic() < deadline, f"too few results recorded: {self.stderr()}"
            time.sleep(0.005)
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(TIMEOUT)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        deadline = time.monotonic() + TIMEOUT
        while left := live_members(self.proc.pid):  # the scheduler, nannies and workers
            assert time.monotonic() < deadline, f"processes outlived the kill: {left}"
            time.sleep(0.01)

    def finish(self) -> dict[str, Any]:
        out, _ = self.proc.communicate(timeout=TIMEOUT)
        assert self.proc.returncode == 0, self.stderr()
        result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
        return result

    def starts(self) -> Counter[int]:
        return Counter(item for what, item, _ in events(self.log) if what == "START")

    def stderr(self) -> str:
        return self.err.read_text(errors="replace")


def live_members(pgid: int) -> list[int]:
    """Pids of the process group's processes that are not zombies (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        # pid (comm) state ppid pgrp ...: comm may hold spaces, so split after its ")".
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_a_killed_driver_reruns_only_unrecorded_items(tmp_path: Path) -> None:
    """Kill the driver (and its cluster) mid-map; the re-run runs only what was not recorded."""
    n, url = 150, url_for("sqlite", tmp_path)
    args = ("--store", url, "--op", "dask-driver", "--n", str(n), "--cost", "0.03")
    store = open_store(url)
    try:
        first = Driver(tmp_path, "run1", *args)
        first.kill_group_once(store, "dask-driver", recorded_at_least=30)
        done = recorded(store, "dask-driver")
        assert 30 <= len(done) < n, "the kill did not land mid-map"
        assert done <= set(first.starts())
        assert store.load_operation("dask-driver").state is ProcessState.RUNNING

        second = Driver(tmp_path, "run2", *args)
        result = second.finish()
        assert result["results"] == [x * x for x in range(n)]
        assert not result["completed_before"]
        ran = second.starts()
        assert set(ran) == set(range(n)) - done  # exactly the items without a result
        assert set(ran.values()) == {1}  # each once
        assert recorded(store, "dask-driver") == set(range(n))
        assert store.load_operation("dask-driver").state is ProcessState.COMPLETED
    finally:
        store.close()


# --- 3. on_error="skip" over Dask -----------------------------------------------------------


def test_skip_sets_a_failing_item_aside_across_the_cluster(client: Any, tmp_path: Path) -> None:
    """The worker's exception comes back as its own type; the rest is recorded; a fixed
    item runs alone on the next run."""
    url, log, marker = url_for("sqlite", tmp_path), tmp_path / "items.log", tmp_path / "broken"
    marker.touch()
    fn = functools.partial(work, str(log), 0.0, 7, str(marker))
    store = resolve_store(url)

    with checkpointed("dask-skip", store=url) as cp:
        out = cp.map(fn, range(20), executor=client.get_executor(), on_error="skip")
    assert cp.failed == {7}
    assert type(out[7]) is ItemBroken and "item 7 is broken" in str(out[7])
    assert "in work" in str(out[7].__cause__)  # the worker's traceback
    assert [out[i] for i in range(20) if i != 7] == [i * i for i in range(20) if i != 7]
    assert recorded(store, "dask-skip") == set(range(20)) - {7}
    aside = store.load_results("dask-skip", key(7))[key(7)]
    assert aside.serializer == "!error" and b"ItemBroken" in aside.payload
    op = store.load_operation("dask-skip")
    assert op.state is ProcessState.FAILED and "7" in (op.error or "")

    marker.unlink()
    log.unlink()
    with checkpointed("dask-skip", store=url) as cp:
        out = cp.map(fn, range(20), executor=client.get_executor(), on_error="skip")
    assert [item for what, item, _ in events(log) if what == "START"] == [7]
    assert cp.failed == set() and out == [i * i for i in range(20)]
    assert store.load_operation("dask-skip").state is ProcessState.COMPLETED


# --- 4. width: how many chunks cp.map keeps in flight ---------------------------------------


def peak_concurrency(log: Path) -> int:
    """The most items running at once, from the side file's START/END lines in write order."""
    running = peak = 0
    for what, _, _ in events(log):
        running += 1 if what == "START" else -1
        peak = max(peak, running)
    return peak


def test_the_map_keeps_every_thread_of_a_bigger_cluster_busy(tmp_path: Path) -> None:
    """A cluster with more threads than the driver has CPUs still runs one item per thread."""
    cpus = os.cpu_count() or 1
    url, log = url_for("sqlite", tmp_path), tmp_path / "items.log"
    with local_cluster(threads_per_worker=2 * cpus) as client:  # 4 x cpus threads in all
        threads = sum(client.nthreads().values())
        assert threads == 4 * cpus
        with checkpointed("dask-wide", store=url) as cp:
            out = cp.map(
                functools.partial(work, str(log), 0.1, None, None),
                range(4 * threads),
                executor=client.get_executor(),
            )
    assert out == [x * x for x in range(4 * threads)]
    # Today at most 2 x cpus chunks (one item each here) are in flight: half the threads.
    assert peak_concurrency(log) >= 0.75 * threads
