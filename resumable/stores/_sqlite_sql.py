"""The SQL of the SQLite store: its schema, statements, transactions, and reading rows.

Statements are module constants; values are always bound parameters. Text SQLite cannot hold
is encoded by :data:`ROWS` (see :class:`~resumable.stores._sql.SQLRows`).
"""

# ruff: noqa: S608 - statements are built from module constants; values are always bound

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from resumable.locks import keep_trying

from ._sql import SQLRows

#: Records <-> rows: text that is not UTF-8, or starts with NUL, is stored NUL + its hex.
ROWS = SQLRows("\x00", param="?")

#: 1: operations, checkpoints, results. 2: + claims (shared operations). 3: a checkpoint's
#: payload is its row's last column (SQLite writes a large one without building it in memory).
SCHEMA_VERSION = 3

SCHEMA = """
CREATE TABLE IF NOT EXISTS operations (
    op_id TEXT PRIMARY KEY, name TEXT NOT NULL,
    state TEXT NOT NULL, owner TEXT, heartbeat REAL NOT NULL, attempts INTEGER NOT NULL,
    created REAL NOT NULL, updated REAL NOT NULL, error TEXT, meta TEXT, checksum TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS checkpoints (
    op_id TEXT NOT NULL, slot INTEGER NOT NULL, seq INTEGER NOT NULL, position INTEGER NOT NULL,
    state TEXT NOT NULL, progress REAL NOT NULL, timestamp REAL NOT NULL,
    serializer TEXT NOT NULL, metadata TEXT, checksum TEXT NOT NULL, payload BLOB NOT NULL,
    PRIMARY KEY (op_id, slot)
);
CREATE TABLE IF NOT EXISTS results (
    op_id TEXT NOT NULL, key TEXT NOT NULL, serializer TEXT NOT NULL, payload BLOB NOT NULL,
    created REAL NOT NULL, checksum TEXT NOT NULL, PRIMARY KEY (op_id, key)
);
CREATE TABLE IF NOT EXISTS claims (
    op_id TEXT NOT NULL, grp TEXT NOT NULL, batch INTEGER NOT NULL, owner TEXT,
    epoch INTEGER NOT NULL DEFAULT 0, expires REAL NOT NULL DEFAULT 0,
    done INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (op_id, grp, batch)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS claims_open ON claims (op_id, grp, batch) WHERE done = 0;
CREATE INDEX IF NOT EXISTS claims_owner ON claims (owner) WHERE done = 0;
"""

UPSERT_CHECKPOINT = """
INSERT INTO checkpoints (op_id, slot, seq, position, state, progress, timestamp, serializer,
                         payload, metadata, checksum)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (op_id, slot) DO UPDATE SET
    seq = excluded.seq, position = excluded.position,
    state = excluded.state, progress = excluded.progress, timestamp = excluded.timestamp,
    serializer = excluded.serializer, payload = excluded.payload, metadata = excluded.metadata,
    checksum = excluded.checksum
"""

UPSERT_OPERATION = """
INSERT INTO operations (op_id, name, state, owner, heartbeat, attempts, created, updated, error,
                        meta, checksum)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (op_id) DO UPDATE SET
    name = excluded.name, state = excluded.state, owner = excluded.owner,
    heartbeat = excluded.heartbeat, attempts = excluded.attempts, created = excluded.created,
    updated = excluded.updated, error = excluded.error, meta = excluded.meta,
    checksum = excluded.checksum
"""

#: A checkpoint whose payload is larger than this is written through SQLite's incremental
#: blob I/O in slices, so it is never copied whole by the driver and again by SQLite.
BIG_PAYLOAD = 1 << 20
UPSERT_CHECKPOINT_SPACE = (
    UPSERT_CHECKPOINT.replace("?, ?, ?)", "zeroblob(?), ?, ?)", 1) + " RETURNING rowid"
)

#: A payload column as read: NULL unless it holds a BLOB. A value whose type changed (TEXT,
#: a number) is never read as bytes: its record fails to build, so it is a damaged one.
_PAYLOAD = "CASE typeof(payload) WHEN 'blob' THEN payload END"
RESULT_COLUMNS = f"op_id, key, serializer, {_PAYLOAD}, created, checksum"

OP_COLUMNS = (
    "op_id, name, state, owner, heartbeat, attempts, created, updated, error, meta, checksum"
)
# checkpoint_id is not stored: it is derived from the op id and seq (see CheckpointRecord).
CKPT_COLUMNS = (
    "op_id, seq, position, state, progress, timestamp, serializer, "
    + _PAYLOAD
    + ", metadata, checksum"
)

#: The results of an operation whose key starts with a prefix (its length and text bound),
#: and any whose key is stored encoded (NUL + hex, below "\x01": see SQLRows.enc), which the
#: caller decodes and matches.
RESULTS_UNDER = "op_id = ? AND (substr(key, 1, ?) = ? OR key < ?)"
#: Those counted by serializer; an encoded key comes back on a row of its own (SQLRows.tally).
COUNT_RESULTS = (
    "SELECT CASE WHEN key < ? THEN key END, serializer, count(*) FROM results "
    f"WHERE {RESULTS_UNDER} GROUP BY 1, 2"
)
#: Those written by one serializer.
SERIALIZER_RESULTS = (
    f"SELECT {RESULT_COLUMNS} FROM results WHERE serializer = ? AND {RESULTS_UNDER}"
)


def under(op_id: str, prefix: str) -> tuple[str, int, str, str]:
    """The arguments of :data:`RESULTS_UNDER`: the op id, the prefix (twice), the mark's end."""
    return ROWS.enc(op_id), len(prefix), prefix, "\x01"


UPSERT_RESULT = (
    "INSERT OR REPLACE INTO results (op_id, key, serializer, payload, created, checksum) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)


def _lenient(raw: bytes) -> str | bytes:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return raw


#: How SQLite's driver says a TEXT value is not UTF-8 (it refuses to return the row).
_NOT_UTF8 = "Could not decode to UTF-8"


def query(conn: sqlite3.Connection, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """The rows of ``sql``; a TEXT value that is not UTF-8 comes back as ``bytes``.

    The driver raises OperationalError for such a value, which would read as a store that
    cannot be read. Bytes where text belongs make the record one that fails its checksum
    (the row builders of :mod:`._rows` accept only ``str`` there): corruption, found and
    named, and the other rows read as usual. The caller holds the store's guard, so switching the
    connection's text factory is safe.
    """
    try:
        return conn.execute(sql, args).fetchall()
    except sqlite3.OperationalError as exc:
        if not str(exc).startswith(_NOT_UTF8):
            raise
    conn.text_factory = _lenient
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.text_factory = str


def put_big_checkpoint(conn: sqlite3.Connection, row: tuple[Any, ...], payload: bytes) -> None:
    """Upsert a checkpoint row with room for ``payload``, then write it in 1 MiB slices.

    Inside the caller's transaction. The driver binds a blob by copying it, and SQLite
    builds the row image from that copy: for a 200 MB state, two more copies. Here neither.
    """
    i = 8  # the payload's place in the row (see SQLRows.checkpoint_row)
    (rowid,) = conn.execute(
        UPSERT_CHECKPOINT_SPACE, (*row[:i], len(payload), *row[i + 1 :])
    ).fetchone()
    view = memoryview(payload)
    with conn.blobopen("checkpoints", "payload", rowid) as blob:
        for at in range(0, len(view), 1 << 20):
            blob.write(view[at : at + (1 << 20)])


def schema_version(conn: sqlite3.Connection) -> int:
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    return int(version)


def _move_payload_last(conn: sqlite3.Connection) -> None:
    """Schema 2 -> 3: rebuild ``checkpoints`` with the payload as the last column.

    SQLite writes a zeroblob without materializing it only at the end of a row, and the
    incremental write of a large checkpoint (:func:`put_big_checkpoint`) relies on it.
    """
    conn.execute("ALTER TABLE checkpoints RENAME TO checkpoints_v2")
    statement = next(s for s in SCHEMA.split(";") if "TABLE IF NOT EXISTS checkpoints" in s)
    conn.execute(statement)
    columns = "op_id, slot, seq, position, state, progress, timestamp, serializer, metadata, "
    columns += "checksum, payload"
    conn.execute(f"INSERT INTO checkpoints ({columns}) SELECT {columns} FROM checkpoints_v2")
    conn.execute("DROP TABLE checkpoints_v2")


def create_schema(conn: sqlite3.Connection, path: Path, timeout: float) -> None:
    """Create the tables and switch the file to WAL (a property of the file, set once here).

    Several processes may open a new store at once. ``BEGIN IMMEDIATE`` waits for the others
    through the busy timeout; the switch to WAL does not (SQLite answers "database is locked"
    at once while another connection reads the file), so it is retried until the timeout.
    """
    with transaction(conn):
        found = schema_version(conn)
        if found > SCHEMA_VERSION:
            raise sqlite3.DatabaseError(
                f"{path} has schema version {found}, written by a newer resumable than this one "
                f"(which knows version {SCHEMA_VERSION}); upgrade resumable"
            )
        if 0 < found < 3:
            _move_payload_last(conn)
        for statement in SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    mode = ""

    def switch() -> bool:
        nonlocal mode
        try:
            (mode,) = conn.execute("PRAGMA journal_mode=WAL").fetchone()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc):
                raise
            return False
        return True

    if not keep_trying(switch, timeout, most=0.01):
        (mode,) = conn.execute("PRAGMA journal_mode=WAL").fetchone()  # still locked: raises
    if str(mode).lower() != "wal":
        raise sqlite3.DatabaseError(f"{path}: SQLite refused WAL mode (got {mode!r})")


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``; ``ROLLBACK`` if the block or the commit fails."""
    try:  # BEGIN inside the try: an interrupt right after it must still roll back
        conn.execute("BEGIN IMMEDIATE")
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
