"""The SQLite store's memory of results (stores/_sqlite_cache.py) never returns a stale one.

A hit may be answered from memory only while the database is unchanged: a reset or a new
result written by another process, another connection of this process or this very store is
seen by the next call, and a caller that mutates what it got never changes the next hit.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from resumable import CheckpointCorrupt, configure, resumable
from resumable.operation import OperationRecord, ProcessState, ResultRecord
from resumable.stores import resolve_store
from resumable.stores.sqlite import SQLiteStore

#: Another process's version of the function below: same op ids and result key, other results.
OTHER = """
import sys
import pytest

from resumable import CheckpointCorrupt, configure, resumable

@resumable(store=sys.argv[1], op_id="value-{x}", version=1)
def value(x):
    return x + 100

value.reset(int(sys.argv[2]))
print(value(int(sys.argv[2])))
"""


def _counted(url: str) -> tuple[list[int], object]:
    ran: list[int] = []

    @resumable(store=url, op_id="value-{x}", version=1)
    def value(x: int) -> int:
        ran.append(x)
        return x + 1

    return ran, value


def test_reset_and_new_result_by_another_process_are_seen(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'calls.db'}"
    ran, value = _counted(url)
    assert value(1) == 2  # type: ignore[operator]
    assert value(1) == 2  # type: ignore[operator]
    assert ran == [1]
    done = subprocess.run(
        [sys.executable, "-c", OTHER, url, "1"], capture_output=True, text=True, timeout=60,
        check=True,
    )  # fmt: skip
    assert done.stdout.strip() == "101"
    assert value(1) == 101  # type: ignore[operator]  # the other process's result, at once
    assert ran == [1]


def test_reset_through_another_connection_is_seen(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'calls.db'}"
    ran, value = _counted(url)
    assert value(2) == 3  # type: ignore[operator]
    other = SQLiteStore(tmp_path / "calls.db")
    try:
        assert other.delete_operation("value-2")
    finally:
        other.close()
    assert value(2) == 3  # type: ignore[operator]
    assert ran == [2, 2]  # it ran again: the reset was seen


def test_write_through_the_same_store_is_seen(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'calls.db'}"
    ran, value = _counted(url)
    assert value(3) == 4  # type: ignore[operator]
    store = resolve_store(url)
    (key,) = store.load_results("value-3", "return:")
    store.put_results([ResultRecord.create("value-3", key, "pickle", pickle.dumps(-3))])
    assert value(3) == -3  # type: ignore[operator]
    value.reset(3)  # type: ignore[attr-defined]
    assert value(30) == 31  # type: ignore[operator]  # a miss's write comes after the reset
    assert value(3) == 4  # type: ignore[operator]
    assert ran == [3, 30, 3]


def test_a_mutated_result_does_not_change_the_next_hit(tmp_path: Path) -> None:
    @resumable(store=f"sqlite:///{tmp_path / 'calls.db'}")
    def listed(x: int) -> list[int]:
        return [x]

    first = listed(5)
    first.append(6)
    second = listed(5)
    assert second == [5]
    second.append(7)
    assert listed(5) == [5]


def test_a_result_kept_before_a_secret_was_set_is_checked_again(tmp_path: Path) -> None:
    """Unsigned records do not verify once a secret is in force (docs/security.md)."""
    url = f"sqlite:///{tmp_path / 'calls.db'}"
    ran, value = _counted(url)
    assert value(4) == 5  # type: ignore[operator]
    assert value(4) == 5  # type: ignore[operator]  # a hit: now it is kept in memory
    previous = configure(secret="s" * 32)
    try:
        # The unsigned result kept in memory is not returned: the store is read, the result
        # fails its check, and so does the unsigned record of the operation.
        with pytest.raises(CheckpointCorrupt, match="unsigned"):
            value(4)  # type: ignore[operator]
        assert ran == [4]
    finally:
        configure(secret=previous.secret)


def test_a_reset_made_inside_a_call_is_seen_after_it(tmp_path: Path) -> None:
    """The call's own write comes after the reset: it must not make the kept result valid."""
    url = f"sqlite:///{tmp_path / 'calls.db'}"
    ran, value = _counted(url)
    assert value(6) == 7  # type: ignore[operator]
    assert value(6) == 7  # type: ignore[operator]  # kept in memory now

    @resumable(store=url)
    def resets(x: int) -> int:
        value.reset(x)  # type: ignore[attr-defined]
        return x

    assert resets(6) == 6
    assert value(6) == 7  # type: ignore[operator]
    assert ran == [6, 6]


def test_a_call_finished_elsewhere_while_this_one_took_the_lock_is_not_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The read before the lock found no record; one written before the lock is seen."""
    url = f"sqlite:///{tmp_path / 'calls.db'}"
    ran, value = _counted(url)
    store = resolve_store(url)
    op_id, key = "value-8", "return:v:1"
    real_lock = store.lock
    # Made here, before the call: the checksum mode is settled, so only the write can matter.
    done = OperationRecord.new(op_id, "value", ProcessState.COMPLETED, meta={"result": key})
    result = ResultRecord.create(op_id, key, "pickle", pickle.dumps(-8))

    class FinishedMeanwhile:
        """Another process finishes the call just before this one takes the lock."""

        def __init__(self, op_id: str) -> None:
            self.lock = real_lock(op_id)

        def acquire(self, timeout: float | None = None) -> None:
            other = SQLiteStore(tmp_path / "calls.db")
            try:
                other.save(done, None, [result])
            finally:
                other.close()
            self.lock.acquire(timeout)

        def release(self) -> None:
            self.lock.release()

    monkeypatch.setattr(store, "lock", FinishedMeanwhile)
    assert value(8) == -8  # type: ignore[operator]
    assert ran == []


def test_a_record_written_by_this_process_is_read_after_a_code_change(tmp_path: Path) -> None:
    """The new code's first call finds the old code's record: warn, and reuse its result."""
    url = f"sqlite:///{tmp_path / 'calls.db'}"
    ran: list[str] = []

    @resumable(store=url, op_id="twice")
    def old() -> str:
        ran.append("old")
        return "old"

    @resumable(store=url, op_id="twice")
    def new() -> str:
        ran.append("new")
        return "new" + "!"

    @resumable(store=url, op_id="first")
    def first() -> None:
        """The first call settles the checksum mode: the memory is used from the next."""

    first()
    assert old() == "old"
    assert new() == "old"  # on_code_change="warn": the stored result, not a run
    assert ran == ["old"]
