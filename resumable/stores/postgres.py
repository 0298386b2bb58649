"""``postgresql://user@host/db``: one store shared by many processes on many machines.

psycopg 3 with a connection pool (autocommit connections; ``synchronous_commit`` off for
durability normal, on for full). The store creates and migrates its own tables, in the schema
named by ``?schema=`` (default ``public``). A checkpoint commit during a loop is one upsert:
one round trip.

One runner per operation is a **lease** on the server's clock, and every write of an operation
this process holds is **fenced** on it (see :mod:`resumable.stores._pg_leases`). Shared maps
claim numbered batches of items with ``FOR UPDATE SKIP LOCKED`` under the same kind of lease
(see :mod:`resumable.stores._pg_claims`).

Options, as keyword arguments or in the URL query (keyword arguments win): ``durability``,
``history``, ``lease``, ``heartbeat``, ``schema``, ``pool_size``. libpq's own parameters in the
query go to libpq (``connect_timeout``, default 5; ``sslmode``; ...); any other name is a
ValueError that names the valid ones (see :mod:`resumable.stores._pg_url`).
"""

# Statements are built from module constants (column lists, the server clock expression);
# values are always bound parameters, and identifiers go through psycopg.sql.
# ruff: noqa: S608

from __future__ import annotations

import contextlib
import io
import os
import threading
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

from resumable.errors import CheckpointCorrupt, StoreError
from resumable.operation import CheckpointRecord, OperationRecord, ResultRecord

from . import _sql
from ._claims import Claims
from ._pg_claims import PostgresClaims
from ._pg_leases import LeasedStore, LeaseLock
from ._pg_sql import (
    BIG_PAYLOAD,
    CKPT_COLUMNS,
    CKPT_HEAD,
    CKPT_SLICE,
    COUNT_RESULTS,
    FENCED_CHECKPOINT,
    OP_COLUMNS,
    RESULT_COLUMNS,
    RESULTS_UNDER,
    ROWS,
    SCHEMA,
    SCHEMA_LOCK,
    SCHEMA_VERSION,
    SERIALIZER_RESULTS,
    SLICE,
    UPSERT_CHECKPOINT,
    UPSERT_OPERATION,
    put_big_checkpoint,
    under,
    upsert_results,
)
from ._pg_url import read_url
from .base import Durability, check_lease

try:
    import psycopg
    from psycopg import sql
    from psycopg_pool import ConnectionPool
except ImportError as exc:  # pragma: no cover - the postgres extra is installed in tests
    raise StoreError(
        "the PostgreSQL store needs psycopg 3 and psycopg_pool: pip install 'resumable[postgres]'"
    ) from exc

__all__ = ["LeaseLock", "PostgresStore"]

_enc, _dec = ROWS.enc, ROWS.dec

#: Guards rebuilding a store's pool; made anew in a forked child (a fork may copy it taken).
_rebuild_lock = threading.Lock()


def _new_rebuild_lock() -> None:
    global _rebuild_lock  # noqa: PLW0603 - replaced in the child only, before any thread runs
    _rebuild_lock = threading.Lock()


os.register_at_fork(after_in_child=_new_rebuild_lock)


class PostgresStore(LeasedStore):
    """A store in a PostgreSQL database, shared by processes on many machines.

    Options left as None come from the URL query, else take their defaults.

    Args:
        url: ``postgresql://user:password@host:port/dbname?options`` (or ``postgres://``).
        durability: ``"normal"`` (default; ``synchronous_commit=off``: a commit survives a
            crash of this process, and of the server unless it loses power) or ``"full"``
            (``synchronous_commit=on``).
        history: checkpoints kept per operation (default 3).
        lease: seconds an operation lease or a batch claim lasts without renewal (default 10).
        heartbeat: seconds between renewals, at most half the lease (default 2, or a
            quarter of a shorter lease).
        schema: the schema that holds the tables, created if missing (default ``public``).
        pool_size: at most this many connections per process (default 4).

    Raises:
        ValueError: a bad option.
        StoreError: the server could not be reached, refused the login, has no such
            database, or holds tables written by a newer resumable.
    """

    schemes: ClassVar[tuple[str, ...]] = ("postgresql", "postgres")
    driver_errors: ClassVar[tuple[type[BaseException], ...]] = (psycopg.Error, OSError)
    shares: ClassVar[bool] = True

    def __init__(
        self,
        url: str,
        *,
        durability: Durability | None = None,
        history: int | None = None,
        lease: float | None = None,
        heartbeat: float | None = None,
        schema: str | None = None,
        pool_size: int | None = None,
    ) -> None:
        if not isinstance(url, str):
            raise TypeError(f"a store URL must be a str, not {type(url).__name__}")
        keywords = {
            "durability": durability, "history": history, "lease": lease,
            "heartbeat": heartbeat, "schema": schema, "pool_size": pool_size,
        }  # fmt: skip
        target, opts = read_url(PostgresStore, url, keywords)
        super().__init__(durability=opts["durability"], history=opts["history"])
        self.lease, self.heartbeat = check_lease(opts["lease"], opts["heartbeat"])
        self.schema = opts["schema"]
        self.pool_size: int = opts["pool_size"]
        self._target = target
        self._conninfo = target.conninfo
        #: For messages: who logs in, to which server, which database.
        self.user, self.server, self.dbname = target.user, target.server, target.dbname
        self.url = target.url
        self.connect_timeout = target.connect_timeout

        self._claims = PostgresClaims(self.connected, self.lease)
        self._pool: ConnectionPool[psycopg.Connection[Any]] | None = None
        self._pid = -1
        self._abandoned: list[object] = []
        try:
            with psycopg.connect(self._conninfo, autocommit=True) as conn:
                self._create_schema(conn)
        except (psycopg.Error, OSError) as exc:
            raise self._open_error(exc) from exc
        self._connections()

    # --- connections ----------------------------------------------------------------------

    def _connections(self) -> ConnectionPool[psycopg.Connection[Any]]:
        """This process's pool (a new one in a forked child, or after close())."""
        pool = self._pool
        if pool is not None and self._pid == os.getpid():
            return pool
        with _rebuild_lock:
            if self._pool is not None and self._pid == os.getpid():
                return self._pool
            forked = self._pool is not None
            if forked:
                # Inherited over fork: psycopg connections must not cross it. Never use or
                # close the parent's pool here; keep it referenced so it is never collected.
                self._abandoned.append(self._pool)
            self.new_process(forked=forked)
            pool = ConnectionPool(
                self._conninfo, kwargs={"autocommit": True}, min_size=1,
                max_size=self.pool_size, open=True, configure=self._configure, num_workers=1,
                timeout=2 * self.connect_timeout + 5, name=f"resumable-{self.schema}",
            )  # fmt: skip
            self._pool, self._pid = pool, os.getpid()
            if self._held:  # reopened after close() while holding leases: renew them again
                self.start_heartbeat()
            return pool

    def connection(self) -> contextlib.AbstractContextManager[psycopg.Connection[Any]]:
        """A connection of this process's pool, for one block."""
        return self._connections().connection()

    @contextlib.contextmanager
    def connected(self, doing: str) -> Iterator[psycopg.Connection[Any]]:
        """A connection of this process's pool, for one call.

        A driver error raised in the block is a StoreError saying it happened while ``doing``.
        """
        with self.errors(doing), self.connection() as conn:
            yield conn

    def ours(self) -> bool:
        """Whether this process opened the pool (not a child that forked)."""
        return self._pid == os.getpid()

    def claims(self) -> Claims:
        """The batch claims of shared maps, in the ``claims`` table."""
        return self._claims

    def _configure(self, conn: psycopg.Connection[Any]) -> None:
        """Set up a new connection of the pool: schema, durability, paused transactions.

        A holder paused inside a transaction (between the fence check and the commit) keeps
        its lease row locked; the server ends such a session once it has idled for a lease,
        so that a takeover waits at most that long.
        """
        sync = "on" if self.durability == "full" else "off"
        idle = max(1000, round(self.lease * 1000))
        conn.execute(
            sql.SQL(
                "SET search_path TO {}; SET synchronous_commit TO {}; "
                "SET idle_in_transaction_session_timeout TO {}"
            ).format(sql.Identifier(self.schema), sql.SQL(sync), sql.Literal(idle))
        )

    def close(self) -> None:
        """Stop renewing leases and close the connections (reopened if used again)."""
        self.stop_heartbeat()
        pool, self._pool = self._pool, None
        if pool is not None and self.ours():
            pool.close()

    def _create_schema(self, conn: psycopg.Connection[Any]) -> None:
        """Create or migrate the tables, once, whoever else opens the store at the same time."""
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))
        if _schema_version(conn) == SCHEMA_VERSION:
            return
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
            if self.schema != "public":
                conn.execute(
                    sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema))
                )
            found = _schema_version(conn)
            if found > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.url}: the tables in schema {self.schema!r} have schema version "
                    f"{found}, written by a newer resumable than this one (which knows version "
                    f"{SCHEMA_VERSION}); upgrade resumable"
                )
            if found < SCHEMA_VERSION:
                for statement in SCHEMA.split(";"):
                    conn.execute(statement)
                conn.execute("DELETE FROM resumable_schema_version")
                conn.execute(
                    "INSERT INTO resumable_schema_version (version) VALUES (%s)",
                    (SCHEMA_VERSION,),
                )

    def _open_error(self, exc: BaseException) -> StoreError | CheckpointCorrupt:
        error = self._target.open_error(exc, self.schema)
        return error if error is not None else self.store_error("open the store", exc)

    def store_error(self, doing: str, exc: BaseException) -> StoreError | CheckpointCorrupt:
        """The StoreError for a driver error, with any password in its text masked."""
        error = super().store_error(doing, exc)
        if self._target.secrets:
            return StoreError(self.scrub(str(error)))
        return error

    def scrub(self, text: str) -> str:
        """``text`` with any password of the URL masked."""
        return self._target.scrub(text)

    # --- reads ----------------------------------------------------------------------------

    def _fetch(self, query: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        with self.connection() as conn:
            return conn.execute(query, params).fetchall()

    def get_operation(self, op_id: str) -> OperationRecord | None:
        """The stored operation record, unverified, or None."""
        rows = self._fetch(
            "SELECT " + OP_COLUMNS + " FROM operations WHERE op_id = %s", (_enc(op_id),)
        )
        return ROWS.operation(rows[0]) if rows else None

    def list_operations(self) -> Iterator[OperationRecord]:
        """Every operation record, unverified, in id order."""
        return map(
            ROWS.operation,
            self._fetch("SELECT " + OP_COLUMNS + " FROM operations ORDER BY op_id", ()),
        )

    def iter_checkpoints(self, op_id: str) -> Iterator[CheckpointRecord]:
        """The operation's checkpoints, newest first, unverified, read one at a time.

        The first query lists their seqs; each checkpoint is read only when the caller asks
        for the next record: loading the newest of a large state reads one payload.
        """
        key = _enc(op_id)
        seqs = self._fetch("SELECT seq FROM checkpoints WHERE op_id = %s ORDER BY seq DESC", (key,))
        return self._checkpoints_at(key, [seq for (seq,) in seqs])

    def _checkpoints_at(self, key: str, seqs: list[int]) -> Iterator[CheckpointRecord]:
        for seq in seqs:
            row = self._read_checkpoint(key, seq)
            if row is None:
                continue  # removed meanwhile: fell out of the history
            rec = ROWS.checkpoint(row)
            del row  # the caller may keep the record; nothing else holds its payload
            yield rec
            del rec

    def _read_checkpoint(self, key: str, seq: int) -> tuple[Any, ...] | None:
        """Checkpoint ``seq``'s row, its payload read in slices; None if it is gone.

        One REPEATABLE READ transaction: the row and every slice come from one snapshot, so
        a writer replacing the row meanwhile cannot mix two checkpoints. The slices are read
        in binary (the text form of bytea is twice its size) into one buffer, whose bytes
        are the payload without another copy.
        """
        with self.connection() as conn, conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            head = conn.execute(CKPT_HEAD, (key, seq)).fetchone()
            if head is None:
                return None
            size = head[7]
            if type(size) is not int:
                return (*head[:7], None, *head[8:])  # a damaged row: fails to build
            payload = io.BytesIO()
            for at in range(0, size, SLICE):
                found = conn.execute(CKPT_SLICE, (at + 1, SLICE, key, seq), binary=True)
                (part,) = found.fetchone() or (None,)
                if type(part) is not bytes:
                    return (*head[:7], part, *head[8:])  # not bytea: fails to build
                payload.write(part)
                del part
        # getvalue() hands over the buffer itself when nothing else uses it.
        return (*head[:7], payload.getvalue(), *head[8:])

    def get_result(self, op_id: str, key: str) -> ResultRecord | None:
        """The stored result, unverified, or None."""
        rows = self._fetch(
            "SELECT " + RESULT_COLUMNS + " FROM results WHERE op_id = %s AND key = %s",
            (_enc(op_id), _enc(key)),
        )
        return ROWS.result(rows[0]) if rows else None

    def iter_results(self, op_id: str, prefix: str) -> Iterator[ResultRecord]:
        """The operation's results whose key starts with ``prefix``, unverified."""
        # Encoded keys (see SQLRows.enc) are decoded and filtered here; a prefix that needs
        # encoding can only begin encoded keys.
        rows = self._fetch(
            "SELECT " + RESULT_COLUMNS + " FROM results WHERE " + RESULTS_UNDER,
            under(op_id, prefix),
        )
        return (r for r in map(ROWS.result, rows) if r.key.startswith(prefix))

    def count_results(self, op_id: str, prefix: str) -> dict[str, int]:
        """As :meth:`Store.count_results`, in one query that reads no payload."""
        with self.errors(f"count results of {op_id!r}"):
            rows = self._fetch(COUNT_RESULTS, (ROWS.mark, *under(op_id, prefix)))
        return ROWS.tally(rows, prefix)

    def results_with_serializer(
        self, op_id: str, prefix: str, serializer: str
    ) -> list[ResultRecord]:
        """As :meth:`Store.results_with_serializer`, reading only those rows."""
        with self.errors(f"read results of {op_id!r}"):
            rows = self._fetch(SERIALIZER_RESULTS, (serializer, *under(op_id, prefix)))
        return [r for r in map(ROWS.result, rows) if r.key.startswith(prefix)]

    # --- store-wide reads (see base.py): one query each ------------------------------------

    def stored_op_ids(self) -> list[str]:
        """Every op id with a record, checkpoints, results or claims, sorted."""
        with self.errors("list operations"):
            rows = self._fetch(_sql.STORED_OP_IDS, ())
        return sorted(_dec(row[0]) for row in rows)

    def checkpoint_heads(self) -> dict[str, CheckpointRecord]:
        """The newest stored checkpoint of each operation, unverified, by op id."""
        with self.errors("read checkpoints"):
            rows = self._fetch(
                "SELECT DISTINCT ON (op_id) " + CKPT_COLUMNS + " FROM checkpoints "
                "ORDER BY op_id, seq DESC",
                (),
            )
        return {c.op_id: c for c in map(ROWS.checkpoint, rows)}

    def record_counts(self, op_id: str | None = None) -> dict[str, int]:
        """How many operations, checkpoints and results are stored (of ``op_id`` only)."""
        query, args = ROWS.count_query(op_id)
        with self.errors("count records"):
            (counts,) = self._fetch(query, args)
        return ROWS.counts(counts)

    # --- writes (fenced if this process holds the operation's lease) -----------------------

    def add_checkpoint(self, checkpoint: CheckpointRecord) -> None:
        """Upsert ``checkpoint`` into its ring slot: one statement (fenced if leased).

        Raises:
            LeaseLost: this process held the operation's lease and another took it over.
        """
        row = ROWS.checkpoint_row(checkpoint, self.history)
        try:  # the hot path of every loop commit: no context manager, no message unless needed
            pool = self._connections()
            held = self.fence(checkpoint.op_id)
            with pool.connection() as conn:
                if len(checkpoint.payload) > BIG_PAYLOAD:
                    with conn.transaction():
                        self.check_fence(conn, checkpoint.op_id, held)
                        put_big_checkpoint(conn, row)
                    return
                if held is None:
                    conn.execute(UPSERT_CHECKPOINT, row)
                    return
                done = conn.execute(FENCED_CHECKPOINT, (*self.fence_args(held), *row)).rowcount
        except self.driver_errors as exc:
            raise self.store_error(f"save a checkpoint of {checkpoint.op_id!r}", exc) from exc
        if not done:
            raise self.lost(checkpoint.op_id, held)

    def save(
        self,
        op: OperationRecord,
        checkpoint: CheckpointRecord | None = None,
        results: Sequence[ResultRecord] = (),
    ) -> None:
        """Write ``op``, ``checkpoint`` and ``results`` in one transaction (fenced if leased).

        Raises:
            LeaseLost: this process held the operation's lease and another took it over.
        """
        # Every row is made before the transaction, which sends its statements one by one,
        # each awaited (no pipeline): a writer stopped between two of them is idle in its
        # transaction, and the server ends it after a lease (see _configure).
        op_row = ROWS.operation_row(op)
        ckpt_row = None if checkpoint is None else ROWS.checkpoint_row(checkpoint, self.history)
        result_rows = [ROWS.result_row(r) for r in results]
        with self.errors(f"save operation {op.op_id!r}"):
            pool = self._connections()
            held = self.fence(op.op_id)
            with pool.connection() as conn, conn.transaction():
                self.check_fence(conn, op.op_id, held)
                conn.execute(UPSERT_OPERATION, op_row)
                if ckpt_row is not None:
                    if len(ckpt_row[8]) > BIG_PAYLOAD:  # the payload (see SQLRows.checkpoint_row)
                        put_big_checkpoint(conn, ckpt_row)
                    else:
                        conn.execute(UPSERT_CHECKPOINT, ckpt_row)
                if result_rows:
                    upsert_results(conn, result_rows)

    def put_results(self, results: Sequence[ResultRecord]) -> None:
        """Store ``results`` in one transaction (a group commit; fenced if leased).

        Raises:
            LeaseLost: this process held the operation's lease and another took it over.
        """
        if not results:
            return
        op_id = results[0].op_id
        with self.errors(f"save {len(results)} results of {op_id!r}"):
            pool = self._connections()
            held = self.fence(op_id)
            rows = [ROWS.result_row(r) for r in results]
            with pool.connection() as conn, conn.transaction():  # no pipeline: see save
                self.check_fence(conn, op_id, held)
                upsert_results(conn, rows)

    def delete_operation(self, op_id: str) -> bool:
        """Remove the operation, its checkpoints, results and batch claims (fenced if leased).

        The lease row stays: its epoch only ever grows.

        Raises:
            LeaseLost: this process held the operation's lease and another took it over.
        """
        key = (_enc(op_id),)
        with self.errors(f"delete operation {op_id!r}"):
            pool = self._connections()
            held = self.fence(op_id)
            with pool.connection() as conn, conn.transaction():  # no pipeline: see save
                self.check_fence(conn, op_id, held)
                ops = conn.execute("DELETE FROM operations WHERE op_id = %s", key)
                ckpts = conn.execute("DELETE FROM checkpoints WHERE op_id = %s", key)
                conn.execute("DELETE FROM results WHERE op_id = %s", key)
                conn.execute("DELETE FROM claims WHERE op_id = %s", key)
            return ops.rowcount + ckpts.rowcount > 0


def _schema_version(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT to_regclass('resumable_schema_version') IS NOT NULL").fetchone()
    if not row or not row[0]:
        return 0
    found = conn.execute("SELECT max(version) FROM resumable_schema_version").fetchone()
    return int(found[0]) if found and found[0] is not None else 0
