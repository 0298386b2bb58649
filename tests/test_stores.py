"""The store contract: every store passes these, whatever it keeps its records in."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sqlite3
import sys
import threading
from pathlib import Path

import pytest

from resumable import (
    CheckpointCorrupt,
    CheckpointRecord,
    InvalidTransition,
    OperationRecord,
    ProcessState,
    StoreError,
    open_store,
)
from resumable.operation import ResultRecord
from resumable.stores import Store
from resumable.stores.files import FileStore
from resumable.stores.memory import MemoryStore
from resumable.stores.sqlite import SQLiteStore

RUNNING = ProcessState.RUNNING


def ckpt(
    op_id: str, seq: int, payload: bytes = b"p", state: ProcessState = RUNNING
) -> CheckpointRecord:
    return CheckpointRecord.create(op_id, seq, seq * 10, state, seq / 100, "pickle", payload)


def corrupt_checkpoint(store: Store, op_id: str, seq: int) -> None:
    """Flip one byte of the stored checkpoint ``seq`` of ``op_id``, the way a bad disk would."""
    if isinstance(store, SQLiteStore):
        with contextlib.closing(sqlite3.connect(store.path)) as conn, conn:
            (payload,) = conn.execute(
                "SELECT payload FROM checkpoints WHERE op_id = ? AND seq = ?", (op_id, seq)
            ).fetchone()
            flipped = bytes([payload[0] ^ 1]) + payload[1:]
            conn.execute(
                "UPDATE checkpoints SET payload = ? WHERE op_id = ? AND seq = ?",
                (flipped, op_id, seq),
            )
    elif isinstance(store, FileStore):
        path = next(p for p in store.root.rglob(f"{seq:012d}.json"))
        doc = json.loads(path.read_text())
        doc["position"] += 1
        path.write_text(json.dumps(doc))
    elif isinstance(store, MemoryStore):
        kept = store._checkpoints[op_id]
        i = next(i for i, c in enumerate(kept) if c.seq == seq)
        kept[i] = dataclasses.replace(kept[i], payload=b"tampered")
    elif type(store).__name__ == "PostgresStore":
        _corrupt_postgres(store, op_id, seq)
    else:  # pragma: no cover - a new store must teach this helper how to damage it
        raise NotImplementedError(type(store))


def _corrupt_postgres(store: Store, op_id: str, seq: int) -> None:
    import psycopg
    from psycopg import sql

    from resumable.stores.postgres import PostgresStore

    assert isinstance(store, PostgresStore)
    with psycopg.connect(store._conninfo, autocommit=True) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(store.schema)))
        flipped = conn.execute(
            "UPDATE checkpoints SET payload = set_byte(payload, 0, get_byte(payload, 0) # 1) "
            "WHERE op_id = %s AND seq = %s",
            (op_id, seq),
        ).rowcount
    assert flipped == 1


def test_operation_round_trips(store: Store) -> None:
    """An operation record saved is loaded back equal and verified."""
    op = OperationRecord.new("op", "My op", RUNNING).with_changes(attempts=2, meta={"k": [1]})
    store.save(op)
    assert store.load_operation("op") == op
    assert store.load_operation("other") is None
    assert [o.op_id for o in store.list_operations()] == ["op"]


def test_save_writes_operation_and_checkpoint_together(store: Store) -> None:
    """save(op, checkpoint) stores both; the checkpoint is the latest."""
    op = OperationRecord.new("op", "n", RUNNING)
    store.save(op.to(ProcessState.COMPLETED), ckpt("op", 1, state=ProcessState.COMPLETED))
    assert store.load_operation("op").state is ProcessState.COMPLETED  # type: ignore[union-attr]
    assert store.latest_checkpoint("op").state is ProcessState.COMPLETED  # type: ignore[union-attr]


def test_checkpoints_newest_first_and_history_kept(store_url: str) -> None:
    """A store keeps the newest `history` checkpoints of an operation, newest first."""
    store = open_store(store_url, history=3)
    for seq in range(1, 8):
        store.add_checkpoint(ckpt("op", seq, payload=bytes([seq])))
    kept = list(store.iter_checkpoints("op"))
    assert all(c.verify() for c in kept)
    assert [c.seq for c in kept] == [7, 6, 5]
    assert kept[0].payload == b"\x07"
    assert store.latest_checkpoint("op") == kept[0]
    assert store.latest_checkpoint("nothing") is None


def test_corrupt_newest_checkpoint_falls_back_to_previous(store: Store) -> None:
    """A checkpoint that fails its checksum is skipped; the previous good one is used."""
    for seq in (1, 2, 3):
        store.add_checkpoint(ckpt("op", seq))
    corrupt_checkpoint(store, "op", 3)
    latest = store.latest_checkpoint("op")
    assert latest is not None
    assert latest.seq == 2
    assert latest.verify()


def test_a_checkpoint_is_stored_with_its_own_metadata(store: Store) -> None:
    """A store writes the metadata of the record it is given, whatever was made since: a
    record made earlier loads with its own, and one whose metadata changed after sealing
    (not the text its checksum covers) is refused, never stored as the sealed one."""
    first = CheckpointRecord.create("a", 1, 1, RUNNING, 0.5, "pickle", b"p", {"m": 1})
    last = CheckpointRecord.create("b", 1, 1, RUNNING, 0.5, "pickle", b"p", {"m": 2})
    store.add_checkpoint(first)
    loaded = store.latest_checkpoint("a")
    assert loaded is not None
    assert loaded.metadata == {"m": 1}
    assert loaded.verify()
    store.add_checkpoint(dataclasses.replace(last, metadata={"m": 3}))
    with pytest.raises(CheckpointCorrupt, match="failed its checksum"):
        store.latest_checkpoint("b")
    made = CheckpointRecord.create("c", 1, 1, RUNNING, 0.5, "pickle", b"p", {"m": 4})
    store.save(OperationRecord.new("c", "n", RUNNING), dataclasses.replace(made, metadata={}))
    with pytest.raises(CheckpointCorrupt, match="failed its checksum"):
        store.latest_checkpoint("c")


def test_all_checkpoints_corrupt_raises(store: Store) -> None:
    """With no good checkpoint left, loading raises CheckpointCorrupt and loads nothing."""
    store.add_checkpoint(ckpt("op", 1))
    corrupt_checkpoint(store, "op", 1)
    with pytest.raises(CheckpointCorrupt, match="failed its checksum"):
        store.latest_checkpoint("op")


def test_results_round_trip_and_corrupt_ones_are_missing(store: Store) -> None:
    """Results are stored by key; a corrupt one reads as missing, never as data."""
    rec = ResultRecord.create("op", "step:a", "pickle", b"value")
    store.put_result(rec)
    assert store.load_result("op", "step:a") == rec
    assert store.load_result("op", "step:b") is None
    store.put_result(dataclasses.replace(rec, payload=b"other"))
    assert store.load_result("op", "step:a") is None


def test_delete_removes_everything_of_one_operation(store: Store) -> None:
    """Deleting an operation drops its record, checkpoints and results, and nothing else."""
    for op_id in ("a", "b"):
        store.save(OperationRecord.new(op_id, op_id, RUNNING), ckpt(op_id, 1))
        store.put_result(ResultRecord.create(op_id, "k", "pickle", b"v"))
    assert store.delete_operation("a")
    assert not store.delete_operation("a")
    assert store.load_operation("a") is None
    assert store.latest_checkpoint("a") is None
    assert store.load_result("a", "k") is None
    assert store.load_operation("b") is not None
    assert store.load_result("b", "k") is not None


def test_locks_exclude_a_second_holder(store: Store) -> None:
    """One holder per operation; released, the lock can be taken again."""
    from resumable import OperationLocked

    first, second = store.lock("op"), store.lock("op")
    first.acquire()
    with pytest.raises(OperationLocked):
        second.acquire()
    store.lock("other").acquire()
    first.release()
    second.acquire()
    second.release()


@pytest.mark.parametrize("kind", ["sqlite", "file", "postgres"])
def test_durability_full_round_trips(kind: str, tmp_path: Path) -> None:
    """durability=full stores and loads like normal."""
    from conftest import url_for

    store = open_store(url_for(kind, tmp_path, durability="full"))
    assert store.durability == "full"
    store.save(OperationRecord.new("op", "n", RUNNING), ckpt("op", 1))
    assert store.latest_checkpoint("op").seq == 1  # type: ignore[union-attr]


def test_sqlite_checkpoints_go_through_the_connection_in_use(tmp_path: Path) -> None:
    """The SQLite store keeps one cursor for its checkpoint upsert: after close() (which
    closes the connection) and in a forked child (which opens its own), the next checkpoint
    goes through the new connection, never the closed or inherited one."""
    store = SQLiteStore(tmp_path / "state.db")
    store.add_checkpoint(ckpt("op", 1))
    store.close()
    store.add_checkpoint(ckpt("op", 2))  # a cursor of the closed connection would raise
    assert store.latest_checkpoint("op").seq == 2  # type: ignore[union-attr]
    if sys.platform == "win32":  # pragma: no cover - no fork
        return
    inherited = store._connection()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child's coverage is not collected
        code = 1
        try:
            store.add_checkpoint(ckpt("op", 3))
            used = store._upsert
            code = 0 if used is not None and used.connection is not inherited else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    store.add_checkpoint(ckpt("op", 4))
    assert [c.seq for c in store.iter_checkpoints("op")] == [4, 3, 2]
    store.close()


def test_a_failed_sqlite_checkpoint_write_keeps_the_last_and_frees_the_store(
    tmp_path: Path,
) -> None:
    """A checkpoint write that fails (here: its connection closed underneath) raises
    StoreError, leaves the last good checkpoint, and releases the store's guard, as a
    successful one does: another thread can use the store at once."""
    store = SQLiteStore(tmp_path / "state.db")
    store.add_checkpoint(ckpt("op", 1))
    store._connection().close()
    with pytest.raises(StoreError, match="save a checkpoint"):
        store.add_checkpoint(ckpt("op", 2))
    taken: list[bool] = []

    def take() -> None:
        taken.append(store._guard.acquire(timeout=5))
        if taken[-1]:
            store._guard.release()

    other = threading.Thread(target=take)
    other.start()
    other.join()
    assert taken == [True]
    reopened = SQLiteStore(tmp_path / "state.db")
    assert [c.seq for c in reopened.iter_checkpoints("op")] == [1]
    reopened.close()


def test_sqlite_full_durability_sets_synchronous_full(tmp_path: Path) -> None:
    """SQLite durability maps onto WAL with synchronous NORMAL or FULL."""
    normal = open_store(f"sqlite:///{tmp_path}/n.db")
    full = open_store(f"sqlite:///{tmp_path}/f.db", durability="full")
    assert isinstance(normal, SQLiteStore)
    assert isinstance(full, SQLiteStore)
    assert normal._connection().execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert normal._connection().execute("PRAGMA synchronous").fetchone() == (1,)
    assert full._connection().execute("PRAGMA synchronous").fetchone() == (2,)


def test_relative_sqlite_url_is_under_the_working_directory(tmp_path: Path) -> None:
    """sqlite:///rel.db (three slashes) is relative, like SQLAlchemy; four is absolute."""
    rel = open_store("sqlite:///sub/rel.db")
    assert isinstance(rel, SQLiteStore)
    assert rel.path == tmp_path / "sub" / "rel.db"
    absolute = open_store(f"sqlite:///{tmp_path}/abs.db")
    assert isinstance(absolute, SQLiteStore)
    assert absolute.path == tmp_path / "abs.db"
    files = open_store("file:relative/dir")
    assert isinstance(files, FileStore)
    assert files.root == tmp_path / "relative" / "dir"


@pytest.mark.parametrize(
    "url",
    ["ftp://x", "sqlite://host/x.db", "sqlite:///", "file://host/x", "nonsense", ""],
)
def test_bad_urls_are_refused_with_examples(url: str) -> None:
    """An unusable URL raises ValueError showing a good one."""
    with pytest.raises(ValueError, match=r"sqlite:///|file:///"):
        open_store(url)


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"durability": "maybe"}, ValueError),
        ({"history": 0}, ValueError),
        ({"history": "x"}, ValueError),
    ],
)
def test_bad_store_options_are_refused(options: dict[str, object], error: type) -> None:
    """A bad durability or history raises at open_store."""
    with pytest.raises(error):
        open_store("memory://", **options)


def test_open_store_needs_a_string() -> None:
    """open_store(42) is a TypeError."""
    with pytest.raises(TypeError):
        open_store(42)  # type: ignore[arg-type]


def test_unopenable_store_raises_store_error(tmp_path: Path) -> None:
    """A store that cannot be created raises StoreError saying the last checkpoint is intact."""
    (tmp_path / "afile").write_text("x")
    with pytest.raises(StoreError, match="could not"):
        open_store(f"sqlite:///{tmp_path}/afile/state.db")
    with pytest.raises(StoreError, match="could not"):
        open_store(f"file://{tmp_path}/afile/store")


def test_store_files_are_owner_only(tmp_path: Path) -> None:
    """Store files are created 0600 in 0700 directories."""
    s = open_store(f"file://{tmp_path}/store")
    s.save(OperationRecord.new("op", "n", RUNNING), ckpt("op", 1))
    for p in (tmp_path / "store").rglob("*"):
        assert p.stat().st_mode & 0o077 == 0, p
    db = open_store(f"sqlite:///{tmp_path}/db/state.db")
    assert isinstance(db, SQLiteStore)
    assert db.path.stat().st_mode & 0o077 == 0


def test_file_store_checkpoints_use_the_specification_fields(tmp_path: Path) -> None:
    """A file-store checkpoint is a JSON file with the specification's field names."""
    s = open_store(f"file://{tmp_path}/store")
    payload = b'{"processed":50,"total":100}'
    s.add_checkpoint(CheckpointRecord.create("batch_001", 1, 50, RUNNING, 0.5, "json", payload))
    (path,) = (tmp_path / "store").rglob("000000000001.json")
    doc = json.loads(path.read_text())
    assert doc["operation_id"] == "batch_001"
    assert doc["state"] == "running"
    assert doc["progress"] == 0.5
    assert doc["data"] == {"processed": 50, "total": 100}
    assert {"checkpoint_id", "timestamp", "metadata", "checksum"} <= doc.keys()
    assert s.latest_checkpoint("batch_001").payload == payload  # type: ignore[union-attr]


def test_file_store_ignores_half_written_temp_files(tmp_path: Path) -> None:
    """A temp file left by a crash mid-write is never read as a checkpoint."""
    s = open_store(f"file://{tmp_path}/store")
    s.add_checkpoint(ckpt("op", 1))
    (folder,) = {p.parent for p in (tmp_path / "store").rglob("000000000001.json")}
    (folder / "000000000002.json.tmp-abc.123").write_text('{"trunc')
    assert s.latest_checkpoint("op").seq == 1  # type: ignore[union-attr]


def test_truncated_checkpoint_file_is_detected(tmp_path: Path) -> None:
    """A checkpoint file cut short is treated as corrupt and skipped."""
    s = open_store(f"file://{tmp_path}/store")
    s.add_checkpoint(ckpt("op", 1))
    s.add_checkpoint(ckpt("op", 2))
    (path,) = (tmp_path / "store").rglob("000000000002.json")
    path.write_bytes(path.read_bytes()[:40])
    assert s.latest_checkpoint("op").seq == 1  # type: ignore[union-attr]


def test_corrupt_operation_record_raises(tmp_path: Path) -> None:
    """An operation record that fails its checksum is refused with a way out."""
    s = open_store(f"sqlite:///{tmp_path}/s.db")
    assert isinstance(s, SQLiteStore)
    s.save(OperationRecord.new("op", "n", RUNNING))
    with contextlib.closing(sqlite3.connect(s.path)) as conn, conn:
        conn.execute("UPDATE operations SET attempts = 99")
    with pytest.raises(CheckpointCorrupt, match="reset"):
        s.load_operation("op")


def test_an_sqlite_store_of_schema_2_is_migrated_with_its_checkpoints(tmp_path: Path) -> None:
    """Schema 3 moved a checkpoint's payload to the end of its row; old stores keep theirs."""
    path = tmp_path / "old.db"
    record = ckpt("op", 4, payload=b"old payload")
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.execute(
            "CREATE TABLE checkpoints (op_id TEXT NOT NULL, slot INTEGER NOT NULL, "
            "seq INTEGER NOT NULL, position INTEGER NOT NULL, state TEXT NOT NULL, "
            "progress REAL NOT NULL, timestamp REAL NOT NULL, serializer TEXT NOT NULL, "
            "payload BLOB NOT NULL, metadata TEXT, checksum TEXT NOT NULL, "
            "PRIMARY KEY (op_id, slot))"
        )
        conn.execute(
            "INSERT INTO checkpoints VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            ("op", 1, 4, record.position, record.state.value, record.progress,
             record.timestamp, "pickle", record.payload, None, record.checksum),
        )  # fmt: skip
        conn.execute("PRAGMA user_version=2")
    store = open_store(f"sqlite:///{path}")
    assert store.latest_checkpoint("op") == record
    with contextlib.closing(sqlite3.connect(path)) as conn:
        columns = [row[1] for row in conn.execute("PRAGMA table_info(checkpoints)")]
        assert columns[-1] == "payload"
        assert conn.execute("PRAGMA user_version").fetchone() == (3,)


def test_transition_table_is_enforced() -> None:
    """A state change the table forbids raises InvalidTransition naming the allowed ones."""
    op = OperationRecord.new("op", "n", ProcessState.COMPLETED)
    with pytest.raises(InvalidTransition, match="completed to running"):
        op.to(RUNNING)
    assert op.to(ProcessState.INITIALIZED).state is ProcessState.INITIALIZED
    with pytest.raises(InvalidTransition):
        OperationRecord.new("op", "n", ProcessState.RECOVERING)
    failed = OperationRecord.new("op", "n", ProcessState.FAILED)
    assert failed.to(ProcessState.RECOVERING).to(RUNNING).to(ProcessState.COMPLETED).verify()


def test_results_in_batches_and_by_prefix(store: Store) -> None:
    """A batch of results is stored at once and found again by key prefix."""
    batch = [ResultRecord.create("op", f"map0:{i}", "pickle", bytes([i])) for i in range(50)]
    batch.append(ResultRecord.create("op", "map1:0", "pickle", b"other"))
    batch.append(ResultRecord.create("op", "map0:\udc80odd", "pickle", b"surrogate key"))
    store.put_results(batch)
    found = store.load_results("op", "map0:")
    assert len(found) == 51
    assert found["map0:7"].payload == b"\x07"
    assert found["map0:\udc80odd"].payload == b"surrogate key"
    assert set(store.load_results("op", "map1:")) == {"map1:0"}
    assert store.load_results("other", "map0:") == {}


def test_save_stores_results_with_the_operation(store: Store) -> None:
    """save(op, checkpoint, results) writes all three; the results read back verified."""
    op = OperationRecord.new("op", "n", RUNNING).to(ProcessState.COMPLETED)
    result = ResultRecord.create("op", "return", "pickle", b"42")
    store.save(op, ckpt("op", 1, state=ProcessState.COMPLETED), [result])
    assert store.load_result("op", "return") == result
    assert store.load_operation("op").state is ProcessState.COMPLETED  # type: ignore[union-attr]


def test_results_counted_and_read_by_serializer(store: Store) -> None:
    """count_results counts a prefix's results by serializer (keys stored encoded included);
    results_with_serializer reads only those one serializer wrote."""
    batch = [ResultRecord.create("op", f"map0:{i}", "pickle", bytes([i])) for i in range(20)]
    batch += [ResultRecord.create("op", f"map0:s{i}", "!error", b"ValueError") for i in (3, 4)]
    batch.append(ResultRecord.create("op", "map0:s\udc80odd", "!error", b"surrogate key"))
    batch.append(ResultRecord.create("op", "map0:\x00\x01marks", "json", b"1"))
    batch.append(ResultRecord.create("op", "map1:0", "!error", b"other map"))
    batch.append(ResultRecord.create("other", "map0:0", "pickle", b"other op"))
    store.put_results(batch)
    assert store.count_results("op", "map0:") == {"pickle": 20, "!error": 3, "json": 1}
    assert store.count_results("op", "map1:") == {"!error": 1}
    assert store.count_results("op", "") == {"pickle": 20, "!error": 4, "json": 1}
    assert store.count_results("op", "map2:") == {}
    assert store.count_results("none", "map0:") == {}
    errors = store.results_with_serializer("op", "map0:", "!error")
    assert sorted(r.key for r in errors) == ["map0:s3", "map0:s4", "map0:s\udc80odd"]
    assert all(r.verify() for r in errors)
    assert store.results_with_serializer("op", "map1:", "pickle") == []
