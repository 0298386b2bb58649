"""Damaged records: a lost final checkpoint is resumed, and bytes that do not decode are corruption.

A completed operation whose final checkpoint rots must not report an older state as its final
result: it resumes from the newest good checkpoint and ends with the uninterrupted result.
Every way a stored record can fail to decode (encoding, JSON, types, missing fields, a column
whose type changed) is a fallback past it or CheckpointCorrupt naming it, never StoreError.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import structlog
from conftest import STORE_KINDS, url_for
from test_stores import corrupt_checkpoint

from resumable import CheckpointCorrupt, StoreError, checkpointed, open_store
from resumable.operation import ProcessState
from resumable.stores import Store, resolve_store
from resumable.stores.files import FileStore
from resumable.stores.sqlite import SQLiteStore

SCRIPT = Path(sys.executable).with_name("resumable")
ITEMS = 1000
OP = "loop"


class Job:
    """A block with a step, a map and a 1,000-item loop, counting what each run calls."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.steps = 0
        self.mapped: list[int] = []
        self.looped: list[int] = []

    def setup(self) -> int:
        self.steps += 1
        return 7

    def square(self, x: int) -> int:
        self.mapped.append(x)
        return x * x

    def run(self) -> tuple[dict[str, Any], bool, bool]:
        """Run the block; its final state, completed_before and resumed."""
        with checkpointed(OP, store=self.url, state={"n": 0, "total": 0}, every=300) as cp:
            base = cp.step("setup", self.setup)
            squares = cp.map(self.square, range(5), workers=2)
            for i in cp.iterate(range(ITEMS)):
                self.looped.append(i)
                cp.state.n += 1
                cp.state.total += i + base + sum(squares)
        return cp.state.to_dict(), cp.completed_before, cp.resumed


FINAL = {"n": ITEMS, "total": sum(range(ITEMS)) + ITEMS * (7 + 30)}


def list_json(url: str) -> dict[str, Any]:
    """`resumable list --json` of the store, from the real console script."""
    proc = subprocess.run(
        [str(SCRIPT), "list", "--store", url, "--json"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    (op,) = json.loads(proc.stdout)["operations"]
    return dict(op)


@pytest.mark.parametrize("kind", STORE_KINDS)
def test_completed_loop_whose_final_checkpoint_rots_resumes_to_the_final_state(
    kind: str, tmp_path: Path
) -> None:
    """A rotted final checkpoint: the next run re-runs items 900-999, ending in the final state."""
    url = url_for(kind, tmp_path)
    job = Job(url)
    assert job.run() == (FINAL, False, False)
    store = resolve_store(url)
    final = store.latest_checkpoint(OP)
    assert final is not None and final.state is ProcessState.COMPLETED
    corrupt_checkpoint(store, OP, final.seq)
    if kind != "memory":  # the console script cannot see this process's memory store
        listed = list_json(url)
        assert listed["state"] != "completed", listed
        assert listed["position"] == 900 and listed["corrupt_checkpoints"] == [final.seq]

    job.looped.clear()
    with structlog.testing.capture_logs() as logs:
        state, completed_before, resumed = job.run()
    reopened = [e for e in logs if e["event"] == "resumable.operation.reopened"]
    good = final.seq - 1  # the checkpoint before the rotted final one, at item 900
    assert [(e["using_seq"], e["position"]) for e in reopened] == [(good, 900)]
    assert state == FINAL  # not the state at item 900
    assert (completed_before, resumed) == (False, True)
    assert job.looped == list(range(900, ITEMS))  # only the items after the good checkpoint
    assert job.steps == 1 and sorted(job.mapped) == list(range(5))  # stored results reused
    op = store.load_operation(OP)
    assert op is not None and op.state is ProcessState.COMPLETED and op.attempts == 2
    if kind != "memory":
        listed = list_json(url)
        assert (listed["state"], listed["position"]) == ("completed", ITEMS)
    job.looped.clear()
    assert job.run() == (FINAL, True, False)  # and now it is done
    assert job.looped == []


def test_show_says_a_lost_final_checkpoint_is_resumed(tmp_path: Path) -> None:
    """`resumable show` of such an operation: state recovering, next run resumes at 900."""
    url = url_for("sqlite", tmp_path)
    Job(url).run()
    store = resolve_store(url)
    final = store.latest_checkpoint(OP)
    assert final is not None
    corrupt_checkpoint(store, OP, final.seq)
    proc = subprocess.run(
        [str(SCRIPT), "show", OP, "--store", url, "--json"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    doc = json.loads(proc.stdout)
    assert (doc["state"], doc["record_state"]) == ("recovering", "completed")
    assert doc["decision"]["action"] == "resume" and doc["decision"]["position"] == 900
    assert "not the final state" in doc["decision"]["reason"]


# --- the file store: bytes that are not UTF-8, JSON that is not a record -------------------


def _file_store(tmp_path: Path) -> tuple[str, FileStore, Path]:
    url = url_for("file", tmp_path)
    store = resolve_store(url)
    assert isinstance(store, FileStore)
    return url, store, store.root / "ops"


def _fail_at(url: str, n: int, fail: int) -> None:
    with (
        pytest.raises(ValueError, match="bad item"),
        checkpointed(OP, store=url, state={"n": 0}, every_seconds=0) as cp,
    ):
        for i in cp.iterate(range(n)):
            if i == fail:
                raise ValueError("bad item")
            cp.state.n += 1


def _resume(url: str, n: int) -> tuple[int, int]:
    """Run the loop to its end; (items run now, final n)."""
    ran = 0
    with checkpointed(OP, store=url, state={"n": 0}, every_seconds=0) as cp:
        for _ in cp.iterate(range(n)):
            ran += 1
            cp.state.n += 1
    return ran, cp.state.n


def _newest_file(ops: Path) -> Path:
    return max(ops.glob("*/checkpoints/*.json"))


DAMAGES: dict[str, Callable[[bytes], bytes]] = {
    "invalid utf-8": lambda data: data.replace(b'"state"', b'"st\xff\xfeate"', 1),
    "not json": lambda data: data[: len(data) // 2],
    "a list": lambda data: b"[" + data + b"]",
    "a missing field": lambda data: _edit(data, lambda doc: doc.pop("position")),
    "a string seq": lambda data: _edit(data, lambda doc: doc.update(seq="4")),
    "metadata a list": lambda data: _edit(data, lambda doc: doc.update(metadata=[1])),
    "payload a number": lambda data: _edit(data, lambda doc: doc.update(payload=12)),
    "payload not base64": lambda data: _edit(data, lambda doc: doc.update(payload="*&^")),
    "an unknown state": lambda data: _edit(data, lambda doc: doc.update(state="done-ish")),
}


def _edit(data: bytes, change: Callable[[dict[str, Any]], object]) -> bytes:
    doc = json.loads(data)
    change(doc)
    return json.dumps(doc).encode()


@pytest.mark.parametrize("damage", DAMAGES)
def test_file_checkpoint_that_does_not_decode_is_fallen_back_past(
    damage: str, tmp_path: Path
) -> None:
    """A newest checkpoint file that does not decode: the run resumes from the one before."""
    url, store, ops = _file_store(tmp_path)
    _fail_at(url, 10, 6)  # checkpoints at 4, 5, 6 (and the FAILED one at 6)
    newest = _newest_file(ops)
    newest.write_bytes(DAMAGES[damage](newest.read_bytes()))
    rec, bad = store.find_good_checkpoint(OP)
    assert rec is not None and bad == (int(newest.stem),)
    ran, n = _resume(url, 10)
    assert n == 10 and ran == 10 - rec.position


@pytest.mark.parametrize("damage", ["invalid utf-8", "not json", "a missing field", "a list"])
def test_file_operation_record_that_does_not_decode_is_corrupt(damage: str, tmp_path: Path) -> None:
    """A damaged operation.json: CheckpointCorrupt naming the op and its file, not StoreError."""
    url, _, ops = _file_store(tmp_path)
    _fail_at(url, 10, 6)
    (record,) = ops.glob("*/operation.json")
    data = record.read_bytes().replace(b'"state"', b'"st\xffate"', 1)
    changes = {
        "invalid utf-8": data,
        "not json": record.read_bytes()[:40],
        "a missing field": _edit(record.read_bytes(), lambda doc: doc.pop("state")),
        "a list": b"[]",
    }
    record.write_bytes(changes[damage])
    with pytest.raises(CheckpointCorrupt) as caught:
        _resume(url, 10)
    message = str(caught.value)
    assert repr(OP) in message and str(record) in message
    assert "Reset the operation" in message


def test_file_result_that_does_not_decode_counts_as_missing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A result file with invalid UTF-8: the step runs again, logged; never StoreError."""
    url, store, ops = _file_store(tmp_path)
    calls: list[int] = []
    with pytest.raises(ValueError, match="stop"), checkpointed(OP, store=url) as cp:
        cp.step("s", lambda: calls.append(1) or 5)
        raise ValueError("stop")
    (result,) = ops.glob("*/results/*.json")
    result.write_bytes(result.read_bytes().replace(b'"key"', b'"k\xffey"'))
    with checkpointed(OP, store=url) as cp:
        assert cp.step("s", lambda: calls.append(2) or 5) == 5
    assert calls == [1, 2]
    assert list(store.iter_results(OP, "")) != []  # rewritten by the second run
    assert any(getattr(r, "event", "") == "resumable.result.corrupt" for r in caplog.records)


# --- SQLite: a column whose type changed, text that is not UTF-8 -----------------------------


def _sqlite(tmp_path: Path) -> tuple[str, SQLiteStore]:
    url = url_for("sqlite", tmp_path)
    store = resolve_store(url)
    assert isinstance(store, SQLiteStore)
    return url, store


SQL_DAMAGES = {
    "payload TEXT": "payload = CAST(payload AS TEXT)",
    "payload INTEGER": "payload = 123456",
    "state not UTF-8": "state = CAST(x'ff72756e6e696e67' AS TEXT)",
    "metadata not JSON": "metadata = '{not json'",
    "seq TEXT": "seq = 'x' || seq",
}


@pytest.mark.parametrize("damage", SQL_DAMAGES)
def test_sqlite_checkpoint_with_a_changed_column_is_fallen_back_past(
    damage: str, tmp_path: Path
) -> None:
    """A newest checkpoint row that does not decode: the run resumes from the one before."""
    url, store = _sqlite(tmp_path)
    _fail_at(url, 10, 6)
    newest = store.latest_checkpoint(OP)
    assert newest is not None
    with sqlite3.connect(store.path) as conn:
        changed = conn.execute(
            f"UPDATE checkpoints SET {SQL_DAMAGES[damage]} WHERE seq = ?", (newest.seq,)
        ).rowcount
    conn.close()
    assert changed == 1
    rec, bad = store.find_good_checkpoint(OP)
    assert rec is not None and rec.seq < newest.seq and len(bad) == 1
    ran, n = _resume(url, 10)
    assert n == 10 and ran == 10 - rec.position


@pytest.mark.parametrize(
    "column", ["name = CAST(x'ff' AS TEXT)", "state = 'bogus'", "meta = '[1'", "attempts = 'x'"]
)
def test_sqlite_operation_record_that_does_not_decode_is_corrupt(
    column: str, tmp_path: Path
) -> None:
    """A damaged operation row: CheckpointCorrupt naming the operation, not StoreError."""
    url, store = _sqlite(tmp_path)
    _fail_at(url, 10, 6)
    with sqlite3.connect(store.path) as conn:
        conn.execute(f"UPDATE operations SET {column}")
    conn.close()
    with pytest.raises(CheckpointCorrupt, match=f"the record of operation {OP!r}"):
        _resume(url, 10)


def test_sqlite_result_whose_payload_became_text_counts_as_missing(tmp_path: Path) -> None:
    """A result whose payload is TEXT that is not UTF-8: the step runs again; not StoreError."""
    url, store = _sqlite(tmp_path)
    calls: list[int] = []
    with pytest.raises(ValueError, match="stop"), checkpointed(OP, store=url) as cp:
        cp.step("s", lambda: calls.append(1) or b"\xff\xfe")
        raise ValueError("stop")
    with sqlite3.connect(store.path) as conn:
        conn.execute("UPDATE results SET payload = CAST(payload AS TEXT)")
    conn.close()
    assert store.load_result(OP, "step:s") is None
    assert store.load_results(OP, "") == {}
    with checkpointed(OP, store=url) as cp:
        assert cp.step("s", lambda: calls.append(2) or b"\xff\xfe") == b"\xff\xfe"
    assert calls == [1, 2]


# --- PostgreSQL: rows someone changed ----------------------------------------------------------


def _pg_update(store: Store, statement: str) -> None:
    import psycopg
    from psycopg import sql

    from resumable.stores.postgres import PostgresStore

    assert isinstance(store, PostgresStore)
    with psycopg.connect(store._conninfo, autocommit=True) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(store.schema)))
        conn.execute(statement)  # type: ignore[arg-type] # the test's own constant


def test_postgres_rows_that_do_not_decode_are_corruption(tmp_path: Path) -> None:
    """Postgres: bad JSON in a checkpoint falls back; a bad operation row is CheckpointCorrupt."""
    url = url_for("postgres", tmp_path)
    store = resolve_store(url)
    _fail_at(url, 10, 6)
    newest = store.latest_checkpoint(OP)
    assert newest is not None
    _pg_update(store, f"UPDATE checkpoints SET metadata = '{{bad' WHERE seq = {newest.seq}")
    rec, bad = store.find_good_checkpoint(OP)
    assert rec is not None and bad == (newest.seq,)
    _pg_update(store, "UPDATE operations SET state = 'bogus'")
    with pytest.raises(CheckpointCorrupt, match=f"the record of operation {OP!r}"):
        _resume(url, 10)


# --- StoreError says only what was checked -------------------------------------------------------


def test_store_error_claims_nothing_unchecked(tmp_path: Path) -> None:
    """A store that cannot be opened: StoreError says what failed, not that anything is intact."""
    (tmp_path / "a-file").write_text("not a folder")
    with pytest.raises(StoreError) as caught:
        open_store(f"sqlite:///{tmp_path}/a-file/state.db")
    message = str(caught.value)
    assert "a-file" in message and "intact" not in message


def test_a_file_sqlite_cannot_decode_is_corruption_not_an_outage(tmp_path: Path) -> None:
    """Bytes SQLite cannot decode are CheckpointCorrupt saying so, never StoreError."""
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database" * 100)
    with pytest.raises(CheckpointCorrupt) as caught:
        open_store(f"sqlite:///{garbage}")
    message = str(caught.value)
    assert "damaged" in message and "resumable restore" in message and "intact" not in message
