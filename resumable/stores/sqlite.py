"""``sqlite:///path/to.db``: the default store, one file shared by the processes of one machine.

WAL journal; ``synchronous=NORMAL`` (durability normal: survives a process crash) or ``FULL``
(durability full: a commit that returned survives power loss). The connection runs in
autocommit mode and every multi-statement write opens ``BEGIN IMMEDIATE`` itself: the stdlib's
default transaction handling starts deferred transactions that lose updates between processes.
A checkpoint commit during a loop is a single upsert, so it costs about one SQLite write.
Operation locks are OS locks on a file in ``<db>.locks/`` beside the database (see
:mod:`resumable.locks`). Shared operations (``shared=True``) claim batches of items in the
``claims`` table under leases timed by this machine's clock: one machine, many processes.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

from resumable import _trust
from resumable.errors import CheckpointCorrupt, StoreError
from resumable.locks import Lock, LockFile, store_lock
from resumable.operation import (
    CheckpointRecord,
    OperationRecord,
    ResultRecord,
    canonical_json,
    op_key,
)

from . import _rows, _sqlite_files
from .base import (
    DEFAULT_HISTORY,
    DEFAULT_LEASE,
    Durability,
    Store,
    check_lease,
)

__all__ = ["SQLiteStore"]

#: SQLite's result codes for a file whose bytes it cannot decode: damage, not an outage.
_DAMAGED = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})

#: 1: operations, checkpoints, results. 2: + claims (shared operations). 3: a checkpoint's
#: payload is its row's last column (SQLite writes a large one without building it in memory).
SCHEMA_VERSION = 3

_SCHEMA = """
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

_CLAIM = """
UPDATE claims SET owner = ?, epoch = epoch + 1, expires = ?
WHERE op_id = ? AND grp = ? AND batch IN (
    SELECT batch FROM claims
    WHERE op_id = ? AND grp = ? AND done = 0 AND (owner IS NULL OR expires < ?)
    ORDER BY batch LIMIT ?
)
RETURNING batch, epoch
"""

_UPSERT_CHECKPOINT = """
INSERT INTO checkpoints (op_id, slot, seq, position, state, progress, timestamp, serializer,
                         payload, metadata, checksum)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (op_id, slot) DO UPDATE SET
    seq = excluded.seq, position = excluded.position,
    state = excluded.state, progress = excluded.progress, timestamp = excluded.timestamp,
    serializer = excluded.serializer, payload = excluded.payload, metadata = excluded.metadata,
    checksum = excluded.checksum
"""

_UPSERT_OPERATION = """
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
_BIG_PAYLOAD = 1 << 20
_UPSERT_CHECKPOINT_SPACE = (
    _UPSERT_CHECKPOINT.replace("?, ?, ?)", "zeroblob(?), ?, ?)", 1) + " RETURNING rowid"
)

#: A payload column as read: NULL unless it holds a BLOB. A value whose type changed (TEXT,
#: a number) is never read as bytes: its record fails to build, so it is a damaged one.
_PAYLOAD = "CASE typeof(payload) WHEN 'blob' THEN payload END"
_RESULT_COLUMNS = f"op_id, key, serializer, {_PAYLOAD}, created, checksum"

_OP_COLUMNS = (
    "op_id, name, state, owner, heartbeat, attempts, created, updated, error, meta, checksum"
)
# checkpoint_id is not stored: it is derived from the op id and seq (see CheckpointRecord).
_CKPT_COLUMNS = (
    "op_id, seq, position, state, progress, timestamp, serializer, "
    + _PAYLOAD
    + ", metadata, checksum"
)


def _enc(text: str) -> str:
    """``text`` as SQLite can bind it.

    Strict UTF-8 cannot hold lone surrogates (which ``os.fsdecode`` makes of undecodable file
    names), so such strings, and any starting with NUL, are stored as NUL + the hex of their
    surrogate-preserving UTF-8 bytes. The mapping is one-to-one.
    """
    if text.isascii() and not text.startswith("\x00"):
        return text
    try:
        text.encode()
    except UnicodeEncodeError:
        return "\x00" + text.encode("utf-8", "surrogatepass").hex()
    return "\x00" + text.encode().hex() if text.startswith("\x00") else text


def _dec(text: str) -> str:
    """The inverse of :func:`_enc`."""
    if text.startswith("\x00"):
        return bytes.fromhex(text[1:]).decode("utf-8", "surrogatepass")
    return text


def _dumps(data: dict[str, Any] | None) -> str | None:
    return canonical_json(data) or None


# Rows -> records (a damaged row makes a record that never verifies): see _rows.
def _text(value: object) -> str:
    return _rows.text(value, _dec)


def _op_from_row(row: tuple[Any, ...]) -> OperationRecord:
    return _rows.operation(row, _dec)


def _result_from_row(row: tuple[Any, ...]) -> ResultRecord:
    return _rows.result(row, _dec)


def _ckpt_from_row(row: tuple[Any, ...]) -> CheckpointRecord:
    return _rows.checkpoint(row, _dec)


_UPSERT_RESULT = (
    "INSERT OR REPLACE INTO results (op_id, key, serializer, payload, created, checksum) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)


def _result_row(r: ResultRecord) -> tuple[Any, ...]:
    return (_enc(r.op_id), _enc(r.key), r.serializer, r.payload, r.created, r.checksum)


def _lenient(raw: bytes) -> str | bytes:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return raw


#: How SQLite's driver says a TEXT value is not UTF-8 (it refuses to return the row).
_NOT_UTF8 = "Could not decode to UTF-8"


def _query(conn: sqlite3.Connection, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """The rows of ``sql``; a TEXT value that is not UTF-8 comes back as ``bytes``.

    The driver raises OperationalError for such a value, which would read as a store that
    cannot be read. Bytes where text belongs make the record one that fails its checksum
    (the row builders above accept only ``str`` there): corruption, found and named, and the
    other rows read as usual. The caller holds the store's guard, so switching the
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


class SQLiteStore(Store):
    """A store in one SQLite database file.

    Args:
        path: the database file; its directory is created if missing.
        durability: ``"normal"`` or ``"full"``, see :class:`~resumable.stores.base.Store`.
        history: checkpoints kept per operation.
        timeout: seconds a writer waits for another process's write to finish.
        lease: seconds a shared map's claim on a batch lasts unless renewed.
        heartbeat: how often a live participant renews its claims (default 2 s, or a
            quarter of a shorter lease).
    """

    schemes: ClassVar[tuple[str, ...]] = ("sqlite",)
    shares: ClassVar[bool] = True
    driver_errors: ClassVar[tuple[type[BaseException], ...]] = (sqlite3.Error, OSError)

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        durability: Durability = "normal",
        history: int = DEFAULT_HISTORY,
        timeout: float = 30.0,
        lease: float = DEFAULT_LEASE,
        heartbeat: float | None = None,
    ) -> None:
        super().__init__(durability=durability, history=history)
        self.lease, self.heartbeat = check_lease(lease, heartbeat)
        self.path = Path(path).absolute()
        self.timeout = float(timeout)
        self.url = f"sqlite:///{self.path}"
        # Beside the real database: processes that reach it through different links of yours
        # share one lock directory. (Another user's link is refused when connecting.)
        real = self.path
        with contextlib.suppress(OSError):
            real = _trust.resolve_file(self.path)
        self.lock_dir = real.with_name(real.name + ".locks")
        self._lock_file = LockFile(self.lock_dir / "operations.lock")
        self._guard = threading.RLock()
        self._pid = -1
        self._conn: sqlite3.Connection | None = None
        self._closer: weakref.finalize[[sqlite3.Connection, int], SQLiteStore] | None = None
        self._abandoned: list[sqlite3.Connection] = []
        with self.errors("open the database"):
            self._connection()

    def _connection(self) -> sqlite3.Connection:
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        if self._conn is not None:
            # Inherited over fork: never use or close it in the child (SQLite forbids both).
            self._abandoned.append(self._conn)
        # The directory, the database and its sidecar files, checked before SQLite opens
        # them by name (it follows symlinks); the database opened by its real path. Once per
        # connection: see _sqlite_files.
        real, checked = _sqlite_files.prepare(self.path)
        conn = None
        try:  # connect inside: an interrupt on any line after it must not leak the connection
            conn = sqlite3.connect(
                real, timeout=self.timeout, isolation_level=None, check_same_thread=False
            )
            # connect(timeout=) is SQLite's busy timeout; synchronous is per connection.
            sync = "FULL" if self.durability == "full" else "NORMAL"
            conn.execute(f"PRAGMA synchronous={sync}")
            version = _schema_version(conn)  # the first read: SQLite opens -wal and -shm
            # Still the file that was checked, before any record is read or anything written.
            _sqlite_files.check_opened(real, checked)
            if version != SCHEMA_VERSION:
                _create_schema(conn, self.path, self.timeout)
                _sqlite_files.check_opened(real, checked)  # the WAL files SQLite just made
            # The store owns the connection: close() closes it, and so does dropping the store
            # (or its half-built self, if __init__ is interrupted) without close().
            self._closer = weakref.finalize(self, _close_own, conn, os.getpid())
        except BaseException:
            if conn is not None:
                conn.close()  # never leave a half-set-up connection holding a lock
            raise
        self._conn, self._pid = conn, os.getpid()
        return conn

    def store_error(self, doing: str, exc: BaseException) -> StoreError | CheckpointCorrupt:
        """As :meth:`Store.store_error`, saying what a "database is locked" means here.

        A database file whose bytes SQLite cannot decode ("database disk image is malformed",
        "file is not a database") is corruption, not a failure to reach the store: that is
        CheckpointCorrupt, naming what was being read or written.
        """
        if getattr(exc, "sqlite_errorcode", None) in _DAMAGED:
            return CheckpointCorrupt(
                f"{self.url}: could not {doing}: the database file is damaged ({exc}); "
                "nothing was loaded from the damaged part. Restore the file from a backup "
                "(resumable backups, then resumable restore ID), or move it aside to start over"
            )
        error = super().store_error(doing, exc)
        if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
            error.args = (
                f"{error} (another process held the database's write lock for the whole "
                f"busy timeout of {self.timeout:g} s: is one paused, e.g. with Ctrl-Z or "
                "SIGSTOP, or hung? Let it continue or end it; ?timeout= sets the wait)",
            )
        return error

    def close(self) -> None:
        """Close the connection and the lock file (reopened if the store is used again).

        The lock file stays open while a block of this process holds a lock through it.
        """
        with self._guard:
            closer, self._closer = self._closer, None
            if closer is not None:
                closer()  # closes the connection if this process opened it (see _close_own)
            self._conn = None
            self._lock_file.close()

    # --- reads ----------------------------------------------------------------------------

    def get_operation(self, op_id: str) -> OperationRecord | None:
        """The stored operation record, unverified, or None."""
        with self._guard:
            rows = _query(
                self._connection(),
                f"SELECT {_OP_COLUMNS} FROM operations WHERE op_id = ?",
                (_enc(op_id),),
            )
        return _op_from_row(rows[0]) if rows else None

    def list_operations(self) -> Iterator[OperationRecord]:
        """Every operation record, unverified, in id order."""
        with self._guard:
            rows = _query(
                self._connection(), f"SELECT {_OP_COLUMNS} FROM operations ORDER BY op_id"
            )
        return map(_op_from_row, rows)

    def iter_checkpoints(self, op_id: str) -> Iterator[CheckpointRecord]:
        """The operation's checkpoints, newest first, unverified, read one at a time.

        The first query lists the rows without their payloads; each row is then read whole
        (its payload included, in one statement: one consistent row) only when the caller
        asks for the next record. Loading the newest of a large state reads one payload.
        """
        with self._guard:
            slots = _query(
                self._connection(),
                "SELECT rowid FROM checkpoints WHERE op_id = ? ORDER BY seq DESC",
                (_enc(op_id),),
            )
        return self._checkpoints_at([rowid for (rowid,) in slots])

    def _checkpoints_at(self, rowids: list[int]) -> Iterator[CheckpointRecord]:
        for rowid in rowids:
            with self._guard:
                rows = _query(
                    self._connection(), f"SELECT {_CKPT_COLUMNS} FROM checkpoints WHERE rowid = ?",
                    (rowid,),
                )  # fmt: skip
            if not rows:
                continue  # removed meanwhile: fell out of the history
            rec = _ckpt_from_row(rows[0])
            del rows  # the caller may keep the record; nothing else holds its payload
            yield rec
            del rec

    def get_result(self, op_id: str, key: str) -> ResultRecord | None:
        """The stored result, unverified, or None."""
        with self._guard:
            rows = _query(
                self._connection(),
                f"SELECT {_RESULT_COLUMNS} FROM results WHERE op_id = ? AND key = ?",
                (_enc(op_id), _enc(key)),
            )
        return _result_from_row(rows[0]) if rows else None

    # --- writes ---------------------------------------------------------------------------

    def _checkpoint_row(self, c: CheckpointRecord) -> tuple[Any, ...]:
        return (
            _enc(c.op_id), c.seq % self.history, c.seq, c.position, c.state.value,
            c.progress, c.timestamp, c.serializer, c.payload, _dumps(c.metadata), c.checksum,
        )  # fmt: skip

    def add_checkpoint(self, checkpoint: CheckpointRecord) -> None:
        """Upsert ``checkpoint`` into its ring slot: one statement, one transaction."""
        row = self._checkpoint_row(checkpoint)
        try:  # the hot path of every loop commit: no context manager, no message unless needed
            with self._guard:
                conn = self._connection()
                if len(checkpoint.payload) <= _BIG_PAYLOAD:
                    conn.execute(_UPSERT_CHECKPOINT, row)
                else:
                    with _transaction(conn):
                        _put_big_checkpoint(conn, row, checkpoint.payload)
        except self.driver_errors as exc:
            raise self.store_error(f"save a checkpoint of {checkpoint.op_id!r}", exc) from exc

    def save(
        self,
        op: OperationRecord,
        checkpoint: CheckpointRecord | None = None,
        results: Sequence[ResultRecord] = (),
    ) -> None:
        """Write ``op``, ``checkpoint`` and ``results`` in one ``BEGIN IMMEDIATE`` transaction."""
        owner = json.dumps(op.owner.to_json()) if op.owner is not None else None
        op_row = (
            _enc(op.op_id), _enc(op.name), op.state.value, owner, op.heartbeat,
            op.attempts, op.created, op.updated, None if op.error is None else _enc(op.error),
            _dumps(op.meta), op.checksum,
        )  # fmt: skip
        with self.errors(f"save operation {op.op_id!r}"), self._guard:
            conn = self._connection()
            with _transaction(conn):
                conn.execute(_UPSERT_OPERATION, op_row)
                if checkpoint is not None and len(checkpoint.payload) > _BIG_PAYLOAD:
                    _put_big_checkpoint(conn, self._checkpoint_row(checkpoint), checkpoint.payload)
                elif checkpoint is not None:
                    conn.execute(_UPSERT_CHECKPOINT, self._checkpoint_row(checkpoint))
                if results:
                    conn.executemany(_UPSERT_RESULT, map(_result_row, results))

    def put_results(self, results: Sequence[ResultRecord]) -> None:
        """Store ``results`` in one transaction (a group commit)."""
        if not results:
            return
        with self.errors(f"save {len(results)} results of {results[0].op_id!r}"), self._guard:
            conn = self._connection()
            with _transaction(conn):
                conn.executemany(_UPSERT_RESULT, map(_result_row, results))

    def iter_results(self, op_id: str, prefix: str) -> Iterator[ResultRecord]:
        """The operation's results whose key starts with ``prefix``, unverified."""
        with self._guard:
            rows = _query(
                self._connection(),
                # Keys stored encoded (see _enc) are decoded and filtered by the caller.
                f"SELECT {_RESULT_COLUMNS} FROM results "
                "WHERE op_id = ? AND (substr(key, 1, ?) = ? OR key < ?)",
                (_enc(op_id), len(prefix), prefix, "\x01"),
            )
        found = map(_result_from_row, rows)
        # A damaged row whose key cannot be read is kept: the caller logs it as corrupt.
        return (r for r in found if r.key.startswith(prefix) or r.checksum == _rows.DAMAGED)

    def delete_operation(self, op_id: str) -> bool:
        """Remove the operation, its checkpoints and results."""
        with self.errors(f"delete operation {op_id!r}"), self._guard:
            conn = self._connection()
            with _transaction(conn):
                key = (_enc(op_id),)
                found = conn.execute("DELETE FROM operations WHERE op_id = ?", key).rowcount
                found += conn.execute("DELETE FROM checkpoints WHERE op_id = ?", key).rowcount
                conn.execute("DELETE FROM results WHERE op_id = ?", key)
                conn.execute("DELETE FROM claims WHERE op_id = ?", key)
        return found > 0

    # --- store-wide reads (see base.py): one query each ------------------------------------

    def stored_op_ids(self) -> list[str]:
        """Every op id with a record, checkpoints, results or claims, sorted."""
        with self.errors("list operations"), self._guard:
            rows = _query(
                self._connection(),
                "SELECT op_id FROM operations UNION SELECT op_id FROM checkpoints "
                "UNION SELECT op_id FROM results UNION SELECT op_id FROM claims",
            )
        return sorted(_text(row[0]) for row in rows)

    def checkpoint_heads(self) -> dict[str, CheckpointRecord]:
        """The newest stored checkpoint of each operation, unverified, by op id."""
        # SQLite takes the bare columns of an aggregate query from the row that has the max.
        columns = _CKPT_COLUMNS.replace("seq,", "max(seq),", 1)
        with self.errors("read checkpoints"), self._guard:
            rows = _query(self._connection(), f"SELECT {columns} FROM checkpoints GROUP BY op_id")
        return {c.op_id: c for c in map(_ckpt_from_row, rows)}

    def record_counts(self, op_id: str | None = None) -> dict[str, int]:
        """How many operations, checkpoints and results are stored (of ``op_id`` only)."""
        tables = ("operations", "checkpoints", "results")
        where = " WHERE op_id = ?" if op_id is not None else ""
        query = ", ".join(f"(SELECT count(*) FROM {table}{where})" for table in tables)
        args = (_enc(op_id),) * len(tables) if op_id is not None else ()
        with self.errors("count records"), self._guard:
            counts = self._connection().execute("SELECT " + query, args).fetchone()
        return dict(zip(tables, map(int, counts), strict=True))

    # --- shared operations (see base.py) -----------------------------------------------------

    def claim_batches(
        self, op_id: str, group: str, batches: int, want: int, owner: str
    ) -> list[tuple[int, int]]:
        """Claim up to ``want`` unfinished batches, free or with an expired lease."""
        op, grp = _enc(op_id), _enc(group)
        with self.errors(f"claim work of {op_id!r}"), self._guard:
            conn = self._connection()
            with _transaction(conn):
                if conn.execute(
                    "SELECT 1 FROM claims WHERE op_id = ? AND grp = ? LIMIT 1", (op, grp)
                ).fetchone() is None:  # fmt: skip
                    conn.executemany(
                        "INSERT OR IGNORE INTO claims (op_id, grp, batch) VALUES (?, ?, ?)",
                        ((op, grp, b) for b in range(batches)),
                    )
                now = time.time()
                rows = conn.execute(
                    _CLAIM, (owner, now + self.lease, op, grp, op, grp, now, want)
                ).fetchall()
        return sorted((int(b), int(e)) for b, e in rows)

    def finish_batch(  # noqa: PLR0917 - see Store.finish_batch
        self,
        op_id: str,
        group: str,
        batch: int,
        epoch: int,
        owner: str,
        results: Sequence[ResultRecord],
        *,
        failed: bool = False,
    ) -> bool:
        """Store ``results`` and mark the batch done, if the claim is still ``owner``'s."""
        with self.errors(f"record finished work of {op_id!r}"), self._guard:
            conn = self._connection()
            with _transaction(conn):
                mine = conn.execute(
                    "UPDATE claims SET done = ? WHERE op_id = ? AND grp = ? AND batch = ? "
                    "AND owner = ? AND epoch = ? AND done = 0",
                    (2 if failed else 1, _enc(op_id), _enc(group), batch, owner, epoch),
                ).rowcount == 1  # fmt: skip
                if mine:  # else taken over: the transaction changed nothing
                    conn.executemany(_UPSERT_RESULT, map(_result_row, results))
        return mine

    def reopen_failed(self, op_id: str, group: str) -> None:
        """Make batches finished with failures claimable again."""
        with self.errors(f"reopen failed work of {op_id!r}"), self._guard:
            self._connection().execute(
                "UPDATE claims SET done = 0, owner = NULL, expires = 0 "
                "WHERE op_id = ? AND grp = ? AND done = 2",
                (_enc(op_id), _enc(group)),
            )

    def release_batches(self, op_id: str, group: str, owner: str) -> None:
        """Give back ``owner``'s unfinished claims in ``group``."""
        with self.errors(f"release claims on {op_id!r}"), self._guard:
            self._connection().execute(
                "UPDATE claims SET owner = NULL, expires = 0 "
                "WHERE op_id = ? AND grp = ? AND owner = ? AND done = 0",
                (_enc(op_id), _enc(group), owner),
            )

    def batches_left(self, op_id: str, group: str) -> tuple[int, float | None]:
        """Unfinished batches and the seconds until one can be claimed."""
        with self.errors(f"read claims of {op_id!r}"), self._guard:
            now = time.time()
            left, soonest, rows = (
                self._connection()
                .execute(
                    "SELECT sum(done = 0), min(CASE WHEN done = 0 THEN "
                    "  CASE WHEN owner IS NULL OR expires < ? THEN 0 ELSE expires - ? END END), "
                    "count(*) FROM claims WHERE op_id = ? AND grp = ?",
                    (now, now, _enc(op_id), _enc(group)),
                )
                .fetchone()
            )
        if not rows:
            return 0, None
        return int(left), 0.0 if soonest is None else float(soonest)

    def claim_holders(self, op_id: str, group: str) -> list[str]:
        """The owners holding unfinished claims of ``group``."""
        with self.errors(f"read claims of {op_id!r}"), self._guard:
            rows = (
                self._connection()
                .execute(
                    "SELECT DISTINCT owner FROM claims "
                    "WHERE op_id = ? AND grp = ? AND done = 0 AND owner IS NOT NULL",
                    (_enc(op_id), _enc(group)),
                )
                .fetchall()
            )
        return [row[0] for row in rows]

    def renew_claims(self, owner: str) -> None:
        """Extend the lease of ``owner``'s unfinished claims."""
        with self.errors("renew claims"), self._guard:
            self._connection().execute(
                "UPDATE claims SET expires = ? WHERE owner = ? AND done = 0",
                (time.time() + self.lease, owner),
            )

    def lock(self, op_id: str) -> Lock:
        """The operation's lock, in ``<db>.locks/`` (see :mod:`resumable.locks`)."""
        return store_lock(self._lock_file, op_id, op_key(op_id))


def _close_own(conn: sqlite3.Connection, pid: int) -> None:
    """Close ``conn`` if process ``pid`` opened it; one inherited over fork is never closed."""
    if os.getpid() == pid:
        conn.close()


def _put_big_checkpoint(conn: sqlite3.Connection, row: tuple[Any, ...], payload: bytes) -> None:
    """Upsert a checkpoint row with room for ``payload``, then write it in 1 MiB slices.

    Inside the caller's transaction. The driver binds a blob by copying it, and SQLite
    builds the row image from that copy: for a 200 MB state, two more copies. Here neither.
    """
    i = 8  # the payload's place in the row (see _checkpoint_row)
    (rowid,) = conn.execute(
        _UPSERT_CHECKPOINT_SPACE, (*row[:i], len(payload), *row[i + 1 :])
    ).fetchone()
    view = memoryview(payload)
    with conn.blobopen("checkpoints", "payload", rowid) as blob:
        for at in range(0, len(view), 1 << 20):
            blob.write(view[at : at + (1 << 20)])


def _schema_version(conn: sqlite3.Connection) -> int:
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    return int(version)


def _move_payload_last(conn: sqlite3.Connection) -> None:
    """Schema 2 -> 3: rebuild ``checkpoints`` with the payload as the last column.

    SQLite writes a zeroblob without materializing it only at the end of a row, and the
    incremental write of a large checkpoint (:func:`_put_big_checkpoint`) relies on it.
    """
    conn.execute("ALTER TABLE checkpoints RENAME TO checkpoints_v2")
    statement = next(s for s in _SCHEMA.split(";") if "TABLE IF NOT EXISTS checkpoints" in s)
    conn.execute(statement)
    columns = "op_id, slot, seq, position, state, progress, timestamp, serializer, metadata, "
    columns += "checksum, payload"
    conn.execute(f"INSERT INTO checkpoints ({columns}) SELECT {columns} FROM checkpoints_v2")
    conn.execute("DROP TABLE checkpoints_v2")


def _create_schema(conn: sqlite3.Connection, path: Path, timeout: float) -> None:
    """Create the tables and switch the file to WAL (a property of the file, set once here).

    Several processes may open a new store at once. ``BEGIN IMMEDIATE`` waits for the others
    through the busy timeout; the switch to WAL does not (SQLite answers "database is locked"
    at once while another connection reads the file), so it is retried until the timeout.
    """
    with _transaction(conn):
        found = _schema_version(conn)
        if found > SCHEMA_VERSION:
            raise sqlite3.DatabaseError(
                f"{path} has schema version {found}, written by a newer resumable than this one "
                f"(which knows version {SCHEMA_VERSION}); upgrade resumable"
            )
        if 0 < found < 3:
            _move_payload_last(conn)
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    deadline = time.monotonic() + timeout
    while True:
        try:
            (mode,) = conn.execute("PRAGMA journal_mode=WAL").fetchone()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)
            continue
        if str(mode).lower() == "wal":
            return
        raise sqlite3.DatabaseError(f"{path}: SQLite refused WAL mode (got {mode!r})")


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``; ``ROLLBACK`` if the block or the commit fails."""
    try:  # BEGIN inside the try: an interrupt right after it must still roll back
        conn.execute("BEGIN IMMEDIATE")
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
