"""Shared operations: several real processes split one map, one dies or stalls, none loses work.

The participants are real processes (tests/workers/shared_worker.py) on one SQLite file or one
PostgreSQL database; they are SIGKILLed and SIGSTOPped for real. Leases are 1 s here.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import url_for

from resumable import LeaseLost, StoreError, checkpointed
from resumable.keys import digest_value
from resumable.operation import ResultRecord
from resumable.serializers import decode
from resumable.stores import Store, open_store

WORKER = Path(__file__).parent / "workers" / "shared_worker.py"
LEASE = 1.0
SHARED_KINDS = ["sqlite", "postgres"]


@pytest.fixture(params=SHARED_KINDS)
def shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store URL that several processes can share, with a short lease."""
    return url_for(request.param, tmp_path) + f"&lease={LEASE:g}&heartbeat=0.25"


class Participants:
    """Worker processes of one shared operation, and what they logged."""

    def __init__(self, tmp_path: Path, url: str, op_id: str, n: int) -> None:
        self.tmp, self.url, self.op_id, self.n = tmp_path, url, op_id, n
        self.log = tmp_path / "exec.log"
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, *extra: str) -> subprocess.Popen[str]:
        out = self.tmp / f"out{len(self.procs)}.json"
        proc = subprocess.Popen(
            [
                sys.executable, str(WORKER), "--store", self.url, "--op", self.op_id,
                "--n", str(self.n), "--log", str(self.log), "--out", str(out), *extra,
            ],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        proc.out = out  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    def wait(self, proc: subprocess.Popen[str], timeout: float = 60) -> tuple[int, str]:
        _, err = proc.communicate(timeout=timeout)
        return proc.returncode, err

    def output(self, proc: subprocess.Popen[str]) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(proc.out.read_text())  # type: ignore[attr-defined]
        return data

    def executions(self) -> list[tuple[int, str, float]]:
        """``(pid, item or "STEP", time)`` of every start logged, in order."""
        if not self.log.exists():
            return []
        rows = []
        for line in self.log.read_text().splitlines():
            pid, what, at = line.split()
            rows.append((int(pid), what, float(at)))
        return rows

    def wait_for(self, check: Any, timeout: float = 30, what: str = "") -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.01)

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


@pytest.fixture
def participants(tmp_path: Path, shared_url: str) -> Iterator[Participants]:
    group = Participants(tmp_path, shared_url, "shared-job", 600)
    try:
        yield group
    finally:
        group.kill_all()


def stored(url: str, op_id: str, n: int) -> dict[int, Any]:
    """The recorded results of map 0 over ``range(n)`` (item -> result), found by the items'
    default keys (``d`` and the digest of the item); a record of no item fails."""
    store = open_store(url)
    try:
        records: dict[str, ResultRecord] = store.load_results(op_id, "map0:")
    finally:
        store.close()
    by_key = {f"map0:d{digest_value(x)}": x for x in range(n)}
    stray = records.keys() - by_key.keys()
    assert not stray, f"records of no item: {sorted(stray)[:5]}"
    return {by_key[k]: decode(r.serializer, r.payload) for k, r in records.items()}


@pytest.mark.slow
def test_three_participants_one_killed_every_item_recorded_once(
    participants: Participants,
) -> None:
    n = participants.n
    doomed = participants.start("--cost", "0.02", "--kill-after", "40")
    survivors = [participants.start("--cost", "0.02") for _ in range(2)]
    for proc in survivors:
        code, err = participants.wait(proc)
        assert code == 0, err
    assert participants.wait(doomed)[0] == -signal.SIGKILL

    expected = list(range(n))
    recorded = stored(participants.url, participants.op_id, n)
    assert sorted(recorded) == expected  # every item recorded (once: one row per key)
    for proc in survivors:  # each survivor returns all results, in order, as recorded
        out = participants.output(proc)
        assert [r[0] for r in out["results"]] == expected
        assert out["results"] == [recorded[i] for i in expected]
        assert out["step"] == "prepared"

    runs = participants.executions()
    steps = [pid for pid, what, _ in runs if what == "STEP"]
    assert len(steps) == 1  # cp.step ran once across the participants
    by_item: dict[int, list[int]] = {}
    for pid, what, _ in runs:
        if what != "STEP":
            by_item.setdefault(int(what), []).append(pid)
    assert sorted(by_item) == expected
    pids = {p.pid for p in participants.procs}
    assert {pid for pid, what, _ in runs if what != "STEP"} == pids  # all three did work
    assert all(recorded[i][1] != doomed.pid for i in expected if len(by_item[i]) > 1)
    for item, ran_by in by_item.items():
        if len(ran_by) > 1:  # re-run only if the dead one ran it and it was never recorded
            assert ran_by[0] == doomed.pid and doomed.pid not in ran_by[1:], (item, ran_by)
            assert recorded[item][1] != doomed.pid
    assert Counter(len(v) for v in by_item.values())[2] >= 1  # the dead one's claim moved

    # Takeover: the dead one's unrecorded items started again within lease + 1 s.
    death = max(at for pid, what, at in runs if pid == doomed.pid and what != "STEP")
    retaken = [
        at for pid, what, at in runs if what != "STEP" and pid != doomed.pid
        and len(by_item[int(what)]) > 1
    ]  # fmt: skip
    assert min(retaken) - death <= LEASE + 1.0


@pytest.mark.slow
def test_claims_of_a_participant_killed_on_this_host_move_without_waiting_out_the_lease(
    participants: Participants,
) -> None:
    participants.url = participants.url.replace(f"lease={LEASE:g}&heartbeat=0.25", "lease=60")
    participants.n = 200
    doomed = participants.start("--kill-after", "10")
    other = participants.start()
    started = time.monotonic()
    code, err = participants.wait(other)
    assert code == 0, err
    assert time.monotonic() - started < 30  # not the 60 s lease
    assert participants.wait(doomed)[0] == -signal.SIGKILL
    assert sorted(stored(participants.url, participants.op_id, 200)) == list(range(200))


@pytest.mark.slow
def test_a_stopped_participant_resumed_after_takeover_writes_nothing(
    participants: Participants,
) -> None:
    n = participants.n
    stalled = participants.start("--stop-after", "20")
    participants.wait_for(
        lambda: sum(1 for pid, *_ in participants.executions() if pid == stalled.pid) >= 20,
        what="the first participant to stop itself",
    )
    other = participants.start()
    code, err = participants.wait(other)  # takes over the stalled claims and finishes
    assert code == 0, err
    before = stored(participants.url, participants.op_id, n)
    assert sorted(before) == list(range(n))

    stalled.send_signal(signal.SIGCONT)
    code, err = participants.wait(stalled)
    assert code != 0
    assert "LeaseLost" in err, err
    assert stored(participants.url, participants.op_id, n) == before  # nothing overwritten


@pytest.mark.slow
def test_a_lone_participant_killed_is_taken_over_by_the_next_run(
    participants: Participants,
) -> None:
    n = 60
    participants.n = n
    doomed = participants.start("--kill-after", "10")
    assert participants.wait(doomed)[0] == -signal.SIGKILL
    again = participants.start()
    code, err = participants.wait(again)
    assert code == 0, err
    assert participants.output(again)["results"] == [
        [i, stored(participants.url, participants.op_id, n)[i][1]] for i in range(n)
    ]
    runs = [(pid, what) for pid, what, _ in participants.executions() if what != "STEP"]
    first = {int(w) for p, w in runs if p == doomed.pid}
    second = {int(w) for p, w in runs if p == again.pid}
    assert first | second == set(range(n))
    assert len(first & second) <= 2 * 2 * 1  # at most the dead one's claimed batches


@pytest.mark.slow
def test_failures_set_aside_by_participants_rerun_alone_next_time(
    participants: Participants, tmp_path: Path
) -> None:
    participants.n = 40
    marker = tmp_path / "broken"
    marker.touch()
    procs = [participants.start("--fail-item", "7", "--marker", str(marker)) for _ in range(2)]
    for proc in procs:
        code, err = participants.wait(proc)
        assert code == 0, err
        out = participants.output(proc)
        assert out["failed"] == [7]  # every participant reports the set-aside item
        assert "ValueError" in out["results"][7]["error"]
    before = len(participants.executions())
    marker.unlink()
    again = participants.start("--fail-item", "7", "--marker", str(marker))
    code, err = participants.wait(again)
    assert code == 0, err
    assert participants.output(again)["failed"] == []
    rerun = [what for _, what, _ in participants.executions()[before:]]
    assert rerun == ["7"]


@pytest.mark.slow
def test_a_killed_participant_then_a_run_over_the_input_shuffled(
    participants: Participants,
) -> None:
    """Items are found by their digest, not their place: after a participant dies, a run
    over the same items shuffled returns each item's own result and starts only the rest."""
    n = 60
    participants.n = n
    doomed = participants.start("--kill-after", "10")
    assert participants.wait(doomed)[0] == -signal.SIGKILL
    done = stored(participants.url, participants.op_id, n)
    assert done, "nothing recorded before the kill: the test proved nothing"

    again = participants.start("--shuffle", "5")
    code, err = participants.wait(again)
    assert code == 0, err
    items = list(range(n))
    random.Random(5).shuffle(items)
    results = participants.output(again)["results"]
    assert [r[0] for r in results] == items
    assert all(results[i] == done[x] for i, x in enumerate(items) if x in done)
    ran = [int(w) for p, w, _ in participants.executions() if p == again.pid and w != "STEP"]
    assert sorted(ran) == sorted(set(range(n)) - done.keys())


# --- in one process ------------------------------------------------------------------------


class Counted:
    """A map function over ints that counts its calls (threads of one process) and fails at
    ``bad`` while ``broken``."""

    def __init__(self, bad: int) -> None:
        self.bad, self.broken = bad, True
        self.calls: Counter[int] = Counter()
        self._lock = threading.Lock()

    def __call__(self, x: int) -> int:
        with self._lock:
            self.calls[x] += 1
        if x == self.bad and self.broken:
            raise ValueError(f"broken at {x}")
        return x * 10


def test_a_shared_map_rerun_over_its_input_reordered(shared_url: str) -> None:
    """Batches are runs of slots: a re-run over the same items in another order claims new
    ones, so no batch marked done stands for items without a result."""
    fn = Counted(bad=45)
    with (
        pytest.raises(ValueError, match="broken at 45"),
        checkpointed("moved", store=shared_url, shared=True) as cp,
    ):
        cp.map(fn, range(60), workers=1)
    done = stored(shared_url, "moved", 60)
    assert done and 45 not in done
    fn.broken, fn.calls = False, Counter()
    items = list(reversed(range(60)))
    with checkpointed("moved", store=shared_url, shared=True) as cp:
        assert cp.map(fn, items, workers=1) == [x * 10 for x in items]
    assert set(fn.calls) == set(range(60)) - done.keys()
    assert set(fn.calls.values()) == {1}


def test_repeated_items_run_once_across_participants(shared_url: str) -> None:
    """Three participants, each item three times, one item failing (skip): every other item
    runs once in all, every participant fills every slot and sets the failing item aside; the
    next run reopens the failed batch (all three 7s: batches hold 3 items) and runs 7 once."""
    fn = Counted(bad=7)
    items = [x // 3 for x in range(600)]
    outs: list[tuple[list[Any], set[Any]]] = []

    def participant() -> None:
        with checkpointed("repeated", store=shared_url, shared=True) as cp:
            out = cp.map(fn, items, workers=2, on_error="skip")
        outs.append((out, set(cp.failed)))

    threads = [threading.Thread(target=participant) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(outs) == 3
    # Each distinct item once, in all; the failing one at most once per participant: a batch
    # finished with a failure set aside is reopened by a participant whose map starts later.
    assert fn.calls - Counter({7: fn.calls[7]}) == Counter(set(range(200)) - {7})
    assert 1 <= fn.calls[7] <= 3
    for out, failed in outs:
        assert failed == {7}
        assert all(isinstance(out[i], Exception) for i in (21, 22, 23))
        assert [out[i] for i in range(600) if items[i] != 7] == [x * 10 for x in items if x != 7]

    fn.broken, fn.calls = False, Counter()
    with checkpointed("repeated", store=shared_url, shared=True) as cp:
        assert cp.map(fn, items, workers=2, on_error="skip") == [x * 10 for x in items]
    assert fn.calls == Counter({7: 1}) and cp.failed == set()


def test_a_shared_map_across_threads_of_one_process(shared_url: str) -> None:
    import threading

    outs: list[list[int]] = []

    def participant() -> None:
        with checkpointed("threads", store=shared_url, shared=True) as cp:
            outs.append(cp.map(lambda x: x + 1, range(100), workers=2))

    threads = [threading.Thread(target=participant) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert outs == [list(range(1, 101))] * 3
    with checkpointed("threads", store=shared_url, shared=True) as cp:
        assert cp.completed_before
        assert cp.map(lambda x: -1, range(100)) == list(range(1, 101))


def test_what_a_shared_block_refuses(shared_url: str) -> None:
    with checkpointed("refusals", store=shared_url, shared=True) as cp:
        with pytest.raises(ValueError, match=r"cp\.iterate\(\) cannot run in a shared block"):
            cp.iterate(range(3))
        with pytest.raises(ValueError, match="nothing to commit"):
            cp.commit()
    with (
        pytest.raises(ValueError, match="cannot be shared"),
        checkpointed("x", store="memory://", shared=True),
    ):
        pass
    with pytest.raises(ValueError, match="no operation lock"):
        checkpointed("x", shared=True, lock=5)
    with pytest.raises(ValueError, match="fresh=True cannot be combined"):
        checkpointed("x", shared=True, fresh=True)
    with pytest.raises(TypeError, match="shared must be True or False"):
        checkpointed("x", shared=1)  # type: ignore[arg-type]


def test_a_failing_step_lets_another_participant_run_it(shared_url: str) -> None:
    def boom() -> int:
        raise OSError("disk")

    with (
        pytest.raises(OSError, match="disk"),
        checkpointed("steps", store=shared_url, shared=True) as cp,
    ):
        cp.step("s", boom)
    with checkpointed("steps", store=shared_url, shared=True) as cp:
        assert cp.step("s", lambda: 5) == 5  # the claim was given back: runs at once
        assert cp.step("s", lambda: 6) == 5


# --- the claim primitives of the store -------------------------------------------------------


@pytest.fixture
def shared_store(shared_url: str) -> Iterator[Store]:
    store = open_store(shared_url)
    try:
        yield store
    finally:
        store.close()


def rec(key: str) -> ResultRecord:
    return ResultRecord.create("op", key, "pickle", b"v")


def test_claims_are_exclusive_until_their_lease_runs_out(shared_store: Store) -> None:
    s = shared_store
    assert s.batches_left("op", "g") == (0, None)
    a = s.claim_batches("op", "g", 5, 2, "A")
    assert a == [(0, 1), (1, 1)]
    b = s.claim_batches("op", "g", 5, 10, "B")
    assert [batch for batch, _ in b] == [2, 3, 4]
    assert s.claim_batches("op", "g", 5, 10, "C") == []
    left, wait = s.batches_left("op", "g")
    assert left == 5 and wait is not None and 0 < wait <= LEASE

    assert s.finish_batch("op", "g", 0, 1, "A", [rec("k0")])
    assert not s.finish_batch("op", "g", 0, 1, "A", [rec("k0")])  # done already
    assert s.batches_left("op", "g")[0] == 4
    s.release_batches("op", "g", "B")  # B gives 2, 3, 4 back
    assert s.batches_left("op", "g")[1] == 0
    assert [b for b, _ in s.claim_batches("op", "g", 5, 10, "C")] == [2, 3, 4]

    deadline = time.monotonic() + 5
    while True:  # A's batch 1 expires (A never renews); C renews, so keeps 2-4
        s.renew_claims("C")
        taken = s.claim_batches("op", "g", 5, 10, "D")
        if taken:
            break
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert taken == [(1, 2)]  # the next epoch
    assert not s.finish_batch("op", "g", 1, 1, "A", [rec("k1")])  # A was taken over
    assert s.get_result("op", "k1") is None  # ... and wrote nothing
    assert s.finish_batch("op", "g", 1, 2, "D", [rec("k1")])
    assert s.get_result("op", "k1") is not None


def test_failed_batches_reopen_for_the_next_run(shared_store: Store) -> None:
    s = shared_store
    (b0, e0), (b1, e1) = s.claim_batches("op", "g", 2, 2, "A")
    assert s.finish_batch("op", "g", b0, e0, "A", [], failed=True)
    assert s.finish_batch("op", "g", b1, e1, "A", [])
    assert s.batches_left("op", "g")[0] == 0
    s.reopen_failed("op", "g")
    assert s.claim_batches("op", "g", 2, 2, "B") == [(0, 2)]
    assert s.delete_operation("op") is False  # no operation record, but claims go too
    assert s.batches_left("op", "g") == (0, None)


def test_lease_options_are_checked(tmp_path: Path) -> None:
    short = open_store(f"sqlite:///{tmp_path}/s.db?lease=3")
    assert (short.lease, short.heartbeat) == (3.0, 0.75)  # a shorter lease beats faster
    short.close()
    with pytest.raises(ValueError, match="at most half"):
        open_store(f"sqlite:///{tmp_path}/s.db?lease=1&heartbeat=0.9")
    with pytest.raises(ValueError, match="lease must be"):
        open_store(f"sqlite:///{tmp_path}/s.db", lease=0)
    with pytest.raises(ValueError, match="not a number"):
        open_store(f"sqlite:///{tmp_path}/s.db?lease=soon")


def test_lease_lost_names_the_operation() -> None:
    err = LeaseLost("job", "its claim on items 3-5")
    assert "job" in str(err) and "items 3-5" in str(err) and "lease" in str(err)
    assert os.environ.get("RESUMABLE_SECRET") is None


def test_a_write_lock_held_too_long_is_explained(tmp_path: Path) -> None:
    """SQLite cannot take a lock from a paused process: the error says what to look for."""
    import sqlite3

    store = open_store(f"sqlite:///{tmp_path}/s.db?timeout=0.1")
    blocker = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreError, match=r"paused, e\.g\. with Ctrl-Z or SIGSTOP"):
            store.claim_batches("op", "g", 1, 1, "A")
    finally:
        blocker.close()
        store.close()


def test_a_shared_map_whose_input_grew_runs_only_the_new_items(shared_url: str) -> None:
    calls: list[int] = []

    def fn(x: int) -> int:
        calls.append(x)
        return x * 10

    with (
        pytest.raises(RuntimeError, match="stop"),
        checkpointed("grows", store=shared_url, shared=True) as cp,
    ):
        assert cp.map(fn, range(50), workers=2) == [x * 10 for x in range(50)]
        raise RuntimeError("stop")  # the block ends FAILED: it runs again
    calls.clear()
    with checkpointed("grows", store=shared_url, shared=True) as cp:
        assert cp.map(fn, range(80), workers=2) == [x * 10 for x in range(80)]
    assert sorted(calls) == list(range(50, 80))
