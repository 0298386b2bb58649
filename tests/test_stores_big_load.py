"""Loading a large checkpoint from SQLite: its payload read through the blob API.

A payload of at least ``BIG_PAYLOAD`` bytes is read with SQLite's incremental blob I/O, after
the row's other columns: both inside one read transaction, so the record is one row as it
was at one moment, whatever another process writes meanwhile.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from resumable import open_store
from resumable.operation import CheckpointRecord, OperationRecord, ProcessState
from resumable.stores import sqlite as sqlite_store
from resumable.stores._sqlite_sql import BIG_PAYLOAD

OP = "big-load"


def _store_with(path: Path, *payloads: bytes) -> Any:
    store = open_store(f"sqlite:///{path}")
    op = OperationRecord.new(OP, OP, ProcessState.RUNNING)
    for seq, payload in enumerate(payloads, 1):
        store.save(
            op, CheckpointRecord.create(OP, seq, seq, ProcessState.RUNNING, 0.5, "pickle", payload)
        )
    return store


def test_big_payload_loads_whole_and_verifies(tmp_path: Path) -> None:
    small, big = os.urandom(1000), os.urandom(BIG_PAYLOAD + 12345)
    store = _store_with(tmp_path / "s.db", small, big)
    try:
        rec, bad = store.find_good_checkpoint(OP)
        assert rec is not None and bad == () and rec.seq == 2 and rec.payload == big
        older = list(store.iter_checkpoints(OP))
        assert [c.payload for c in older] == [big, small]
        assert all(c.verify() for c in older)
    finally:
        store.close()


def test_big_payload_is_read_with_its_row_while_another_connection_rewrites_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between the columns and the blob, another connection commits a new payload in place."""
    path = tmp_path / "s.db"
    big = os.urandom(2 * BIG_PAYLOAD)
    store = _store_with(path, big)
    real, rewrites = sqlite_store.query, []

    def racing(conn: sqlite3.Connection, sql: str, args: Any = ()) -> Any:
        rows = real(conn, sql, args)
        if "typeof(payload) FROM checkpoints WHERE rowid" in sql:
            other = sqlite3.connect(path, isolation_level=None)
            other.execute(
                "UPDATE checkpoints SET payload = ? WHERE rowid = ?",
                (os.urandom(len(big)), args[0]),
            )
            other.close()
            rewrites.append(args[0])
        return rows

    monkeypatch.setattr(sqlite_store, "query", racing)
    try:
        rec, bad = store.find_good_checkpoint(OP)
    finally:
        store.close()
    assert rewrites  # the rewrite happened between the two reads
    assert rec is not None and bad == () and rec.payload == big


def test_big_payload_that_is_no_blob_is_a_damaged_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = _store_with(path, os.urandom(100), os.urandom(2 * BIG_PAYLOAD))
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("UPDATE checkpoints SET payload = CAST(hex(payload) AS TEXT) WHERE seq = 2")
    con.close()
    try:
        rec, bad = store.find_good_checkpoint(OP)
    finally:
        store.close()
    assert rec is not None and rec.seq == 1 and bad == (2,)
