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
import os
import sqlite3
import threading
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from resumable import _trust
from resumable._log import log
from resumable.errors import CheckpointCorrupt, StoreError
from resumable.locks import Lock, LockFile, store_lock
from resumable.operation import (
    CheckpointRecord,
    OperationRecord,
    ResultRecord,
    op_key,
)

from . import _rows, _sql, _sqlite_files
from ._sqlite_cache import CALL_READ, ResultCache
from ._sqlite_sql import (
    BIG_PAYLOAD,
    CKPT_COLUMNS,
    COUNT_RESULTS,
    OP_COLUMNS,
    RESULT_COLUMNS,
    RESULTS_UNDER,
    ROWS,
    SCHEMA_VERSION,
    SERIALIZER_RESULTS,
    UPSERT_CHECKPOINT,
    UPSERT_OPERATION,
    UPSERT_RESULT,
    create_schema,
    put_big_checkpoint,
    query,
    schema_version,
    transaction,
    under,
)
from .base import (
    DEFAULT_HISTORY,
    DEFAULT_LEASE,
    Durability,
    Store,
    check_lease,
)

if TYPE_CHECKING:  # claims load with the first shared map, not with every store
    from ._claims import Claims

__all__ = ["SQLiteStore"]

#: SQLite's result codes for a file whose bytes it cannot decode: damage, not an outage.
_DAMAGED = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})

_enc = ROWS.enc
#: A checkpoint's columns without its payload: CKPT_COLUMNS's before it, then after it.
CKPT_HEAD_COLUMNS = (
    "op_id, seq, position, state, progress, timestamp, serializer, metadata, checksum"
)
#: A payload's size if it is a blob, else NULL (from the row's header: the blob is not read).
_PAYLOAD_SIZE = "CASE typeof(payload) WHEN 'blob' THEN length(payload) END"


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
        self._claims: Claims | None = None  # made on first use: only shared maps claim
        self._upsert: sqlite3.Cursor | None = None  # add_checkpoint's
        self._cache = ResultCache()  # what @resumable hits read, while nothing changed
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
            version = schema_version(conn)  # the first read: SQLite opens -wal and -shm
            # Still the file that was checked, before any record is read or anything written.
            _sqlite_files.check_opened(real, checked)
            if version != SCHEMA_VERSION:
                create_schema(conn, self.path, self.timeout)
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
            self._cache = ResultCache()  # holds nothing of the closed connection
            self._lock_file.close()

    @contextlib.contextmanager
    def connected(self, doing: str) -> Iterator[sqlite3.Connection]:
        """This process's connection, under the store's guard, for one call.

        A driver error raised in the block is a StoreError saying it happened while ``doing``.
        """
        with self.errors(doing), self._guard:
            yield self._connection()

    def claims(self) -> Claims:
        """The batch claims of shared operations, in the ``claims`` table."""
        if self._claims is None:
            from ._sqlite_claims import SQLiteClaims  # not loaded for stores that never share

            with self._guard:
                if self._claims is None:
                    self._claims = SQLiteClaims(self.connected, self.lease)
        return self._claims

    # --- reads ----------------------------------------------------------------------------

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._guard:
            return query(self._connection(), sql, args)

    def get_operation(self, op_id: str) -> OperationRecord | None:
        """The stored operation record, unverified, or None."""
        rows = self._query(f"SELECT {OP_COLUMNS} FROM operations WHERE op_id = ?", (_enc(op_id),))
        return ROWS.operation(rows[0]) if rows else None

    def list_operations(self) -> Iterator[OperationRecord]:
        """Every operation record, unverified, in id order."""
        return map(
            ROWS.operation, self._query(f"SELECT {OP_COLUMNS} FROM operations ORDER BY op_id")
        )

    def iter_checkpoints(self, op_id: str) -> Iterator[CheckpointRecord]:
        """The operation's checkpoints, newest first, unverified, read one at a time.

        The first query lists the rows and their payloads' sizes, not the payloads; each row
        is then read whole (one consistent row) only when the caller asks for the next
        record. Loading the newest of a large state reads one payload.
        """
        slots = self._query(
            f"SELECT rowid, {_PAYLOAD_SIZE} FROM checkpoints WHERE op_id = ? ORDER BY seq DESC",
            (_enc(op_id),),
        )
        return self._checkpoints_at(slots)

    def _checkpoints_at(self, slots: list[tuple[int, int | None]]) -> Iterator[CheckpointRecord]:
        for rowid, size in slots:
            if size is not None and size >= BIG_PAYLOAD:
                row = self._big_checkpoint_row(rowid)
            else:
                rows = self._query(
                    f"SELECT {CKPT_COLUMNS} FROM checkpoints WHERE rowid = ?", (rowid,)
                )
                row = rows[0] if rows else None
                del rows
            if row is None:
                continue  # removed meanwhile: fell out of the history
            rec = ROWS.checkpoint(row)
            del row  # the caller may keep the record; nothing else holds its payload
            yield rec
            del rec

    def _big_checkpoint_row(self, rowid: int) -> tuple[Any, ...] | None:
        """Checkpoint row ``rowid`` (CKPT_COLUMNS), its large payload read as SQLite's blob.

        A SELECT of a payload copies it twice (SQLite builds the value, the driver copies it
        into bytes); the blob API reads it into the bytes object at once (a 100 MiB state
        re-entered in 0.6-0.7x the time). The columns and the payload are read inside one
        read transaction: one consistent row, whatever another process writes meanwhile.
        """
        with self._guard:
            conn = self._connection()
            conn.execute("BEGIN")  # deferred: a read transaction (a snapshot, in WAL mode)
            try:
                rows = query(
                    conn,
                    f"SELECT {CKPT_HEAD_COLUMNS}, typeof(payload) FROM checkpoints WHERE rowid = ?",
                    (rowid,),
                )
                if not rows:
                    return None
                *head, kind = rows[0]
                payload = None  # not a blob: the record is a damaged one (see _PAYLOAD)
                if kind == "blob":
                    with conn.blobopen("checkpoints", "payload", rowid, readonly=True) as blob:
                        payload = blob.read()
            finally:
                if conn.in_transaction:  # (an I/O error may have ended it already)
                    conn.execute("COMMIT")  # a read transaction: ends it, writes nothing
        return (*head[:7], payload, *head[7:])

    def get_result(self, op_id: str, key: str) -> ResultRecord | None:
        """The stored result, unverified, or None."""
        rows = self._query(
            f"SELECT {RESULT_COLUMNS} FROM results WHERE op_id = ? AND key = ?",
            (_enc(op_id), _enc(key)),
        )
        return ROWS.result(rows[0]) if rows else None

    def load_result(self, op_id: str, key: str) -> ResultRecord | None:
        """As :meth:`Store.load_result`, from memory while the database is unchanged.

        See :mod:`._sqlite_cache`: one ``PRAGMA data_version`` proves that no connection
        changed the database since the record was read or written here.
        """
        try:  # the hit path of every @resumable call: no context manager, no message
            with self._guard:
                conn = self._connection()
                cache = self._cache
                cache.sync(conn)
                rec = cache.get(op_id, key)
                if rec is not None:
                    return rec
                # Read after sync: at least as new as what it validated.
                op = _enc(op_id)
                (row,) = query(conn, CALL_READ, (op, op, _enc(key)))
                cache.note_record(op_id, exists=bool(row[6]))
                if row[0] is None:
                    return None
                rec = ROWS.result(row[:6])
                if not (rec.verify() and rec.op_id == op_id and rec.key == key):
                    log.warning("resumable.result.corrupt", op_id=op_id, key=key)
                    return None
                cache.put(rec)
                return rec
        except StoreError:
            raise
        except self.driver_errors as exc:
            raise self.store_error(f"read result {key!r} of {op_id!r}", exc) from exc

    def known_absent(self, op_id: str) -> bool:
        """True if ``op_id`` has no record, proven without reading it (see :mod:`._sqlite_cache`).

        So it is when a read since which the database has not changed found none.
        """
        try:
            with self._guard:
                conn = self._connection()
                self._cache.sync(conn)
                return self._cache.absent(op_id)
        except self.driver_errors as exc:
            raise self.store_error(f"read operation {op_id!r}", exc) from exc

    def iter_results(self, op_id: str, prefix: str) -> Iterator[ResultRecord]:
        """The operation's results whose key starts with ``prefix``, unverified."""
        rows = self._query(
            # Keys stored encoded (see SQLRows.enc) are decoded and filtered by the caller.
            f"SELECT {RESULT_COLUMNS} FROM results WHERE {RESULTS_UNDER}",
            under(op_id, prefix),
        )
        found = map(ROWS.result, rows)
        # A damaged row whose key cannot be read is kept: the caller logs it as corrupt.
        return (r for r in found if r.key.startswith(prefix) or r.checksum == _rows.DAMAGED)

    def count_results(self, op_id: str, prefix: str) -> dict[str, int]:
        """As :meth:`Store.count_results`, in one query that reads no payload."""
        args = ("\x01", *under(op_id, prefix))
        with self.errors(f"count results of {op_id!r}"):
            return ROWS.tally(self._query(COUNT_RESULTS, args), prefix)

    def results_with_serializer(
        self, op_id: str, prefix: str, serializer: str
    ) -> list[ResultRecord]:
        """As :meth:`Store.results_with_serializer`, reading only those rows."""
        args = (serializer, *under(op_id, prefix))
        with self.errors(f"read results of {op_id!r}"):
            found = map(ROWS.result, self._query(SERIALIZER_RESULTS, args))
            return [r for r in found if r.key.startswith(prefix)]

    # --- writes ---------------------------------------------------------------------------

    def add_checkpoint(self, checkpoint: CheckpointRecord) -> None:
        """Upsert ``checkpoint`` into its ring slot: one statement, one transaction."""
        row = ROWS.checkpoint_row(checkpoint, self.history)
        # The hot path of every loop commit: no context manager (`with` on the guard costs
        # twice its acquire and release), no message unless needed.
        guard = self._guard
        guard.acquire()
        try:
            conn = self._connection()
            if len(checkpoint.payload) <= BIG_PAYLOAD:
                # One cursor of the connection in use, kept for this statement: making one
                # per commit (conn.execute does) costs as much as the rest of this call.
                cursor = self._upsert
                if cursor is None or cursor.connection is not conn:
                    cursor = self._upsert = conn.cursor()
                cursor.execute(UPSERT_CHECKPOINT, row)
            else:
                with transaction(conn):
                    put_big_checkpoint(conn, row, checkpoint.payload)
        except self.driver_errors as exc:
            raise self.store_error(f"save a checkpoint of {checkpoint.op_id!r}", exc) from exc
        finally:
            guard.release()

    def save(
        self,
        op: OperationRecord,
        checkpoint: CheckpointRecord | None = None,
        results: Sequence[ResultRecord] = (),
    ) -> None:
        """Write ``op``, ``checkpoint`` and ``results`` in one ``BEGIN IMMEDIATE`` transaction."""
        op_row = ROWS.operation_row(op)
        try:  # every call's final write: no message built unless needed
            with self._guard:
                conn = self._connection()
                before = conn.total_changes
                with transaction(conn):
                    conn.execute(UPSERT_OPERATION, op_row)
                    if checkpoint is not None:
                        row = ROWS.checkpoint_row(checkpoint, self.history)
                        if len(checkpoint.payload) > BIG_PAYLOAD:
                            put_big_checkpoint(conn, row, checkpoint.payload)
                        else:
                            conn.execute(UPSERT_CHECKPOINT, row)
                    for result in results:
                        conn.execute(UPSERT_RESULT, ROWS.result_row(result))
                if results:
                    self._cache.wrote(conn, before, op.op_id, results)
        except StoreError:
            raise  # already says everything (see errors())
        except self.driver_errors as exc:
            raise self.store_error(f"save operation {op.op_id!r}", exc) from exc

    def put_results(self, results: Sequence[ResultRecord]) -> None:
        """Store ``results`` in one transaction (a group commit)."""
        if not results:
            return
        doing = f"save {len(results)} results of {results[0].op_id!r}"
        with self.connected(doing) as conn, transaction(conn):
            conn.executemany(UPSERT_RESULT, map(ROWS.result_row, results))

    def delete_operation(self, op_id: str) -> bool:
        """Remove the operation, its checkpoints and results."""
        with self.connected(f"delete operation {op_id!r}") as conn, transaction(conn):
            key = (_enc(op_id),)
            found = conn.execute("DELETE FROM operations WHERE op_id = ?", key).rowcount
            found += conn.execute("DELETE FROM checkpoints WHERE op_id = ?", key).rowcount
            conn.execute("DELETE FROM results WHERE op_id = ?", key)
            conn.execute("DELETE FROM claims WHERE op_id = ?", key)
        return found > 0

    # --- store-wide reads (see base.py): one query each ------------------------------------

    def stored_op_ids(self) -> list[str]:
        """Every op id with a record, checkpoints, results or claims, sorted."""
        with self.errors("list operations"):
            rows = self._query(_sql.STORED_OP_IDS)
        return sorted(ROWS.text(row[0]) for row in rows)

    def checkpoint_heads(self) -> dict[str, CheckpointRecord]:
        """The newest stored checkpoint of each operation, unverified, by op id."""
        # SQLite takes the bare columns of an aggregate query from the row that has the max.
        columns = CKPT_COLUMNS.replace("seq,", "max(seq),", 1)
        with self.errors("read checkpoints"):
            rows = self._query(f"SELECT {columns} FROM checkpoints GROUP BY op_id")
        return {c.op_id: c for c in map(ROWS.checkpoint, rows)}

    def record_counts(self, op_id: str | None = None) -> dict[str, int]:
        """How many operations, checkpoints and results are stored (of ``op_id`` only)."""
        sql, args = ROWS.count_query(op_id)
        with self.connected("count records") as conn:
            return ROWS.counts(conn.execute(sql, args).fetchone())

    def lock(self, op_id: str) -> Lock:
        """The operation's lock, in ``<db>.locks/`` (see :mod:`resumable.locks`)."""
        return store_lock(self._lock_file, op_id, op_key(op_id))


def _close_own(conn: sqlite3.Connection, pid: int) -> None:
    """Close ``conn`` if process ``pid`` opened it; one inherited over fork is never closed."""
    if os.getpid() == pid:
        conn.close()
