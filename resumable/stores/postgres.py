"""``postgresql://user@host/db``: one store shared by many processes on many machines.

psycopg 3 with a connection pool (autocommit connections; ``synchronous_commit`` off for
durability normal, on for full). The store creates and migrates its own tables, in the schema
named by ``?schema=`` (default ``public``). A checkpoint commit during a loop is one upsert:
one round trip.

One runner per operation is a **lease**: a row of ``leases`` with an owner token, an epoch that
grows by one at every takeover, and an expiry on the *server's* clock (participants run on
several machines). A daemon thread renews this process's leases; a holder paused for longer
than the lease (SIGSTOP, a cut network) loses it to the next process that asks. Every write of
an operation this process holds is **fenced**: it happens only if the lease row still has this
process's owner and epoch, checked in the same statement with the row locked ``FOR SHARE``, so
a paused holder that wakes up after a takeover writes nothing and raises
:class:`~resumable.errors.LeaseLost`.

Shared maps claim numbered batches of items with ``FOR UPDATE SKIP LOCKED`` under the same
kind of lease (see the sharing section of :class:`~resumable.stores.base.Store`).

Options, as keyword arguments or in the URL query (keyword arguments win): ``durability``,
``history``, ``lease``, ``heartbeat``, ``schema``, ``pool_size``. libpq's own parameters in the
query go to libpq (``connect_timeout``, default 5; ``sslmode``; ...); any other name is a
ValueError that names the valid ones.
"""

# Statements are built from module constants (column lists, the server clock expression);
# values are always bound parameters, and identifiers go through psycopg.sql.
# ruff: noqa: S608

from __future__ import annotations

import contextlib
import io
import json
import os
import struct
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from resumable._heartbeat import Heartbeat
from resumable._log import log
from resumable._owner import Owner
from resumable.errors import CheckpointCorrupt, LeaseLost, OperationLocked, StoreError
from resumable.operation import (
    CheckpointRecord,
    OperationRecord,
    ResultRecord,
)

from . import check_options
from ._pg_sql import (
    _BATCHES_LEFT,
    _CHECK_FENCE,
    _CKPT_COLUMNS,
    _CKPT_HEAD,
    _CKPT_SLICE,
    _CLAIM,
    _CREATE_CLAIMS,
    _FENCED_CHECKPOINT,
    _FINISH_CLAIM,
    _GIVE_BACK_LEASE,
    _MARK,
    _NOW,
    _OP_COLUMNS,
    _RENEW_LEASES,
    _RESULT_COLUMNS,
    _SCHEMA,
    _SCHEMA_LOCK,
    _TAKE_DEAD_LEASE,
    _TAKE_LEASE,
    _UPLOAD_COPY,
    _UPLOAD_TABLE,
    _UPSERT_CHECKPOINT,
    _UPSERT_FROM_UPLOAD,
    _UPSERT_OPERATION,
    _UPSERT_RESULT,
    SCHEMA_VERSION,
    _ckpt_from_row,
    _dec,
    _enc,
    _op_from_row,
    _result_from_row,
    _result_row,
)
from .base import DEFAULT_HISTORY, DEFAULT_LEASE, Durability, Store, check_lease
from .sqlite import _dumps

try:
    import psycopg
    from psycopg import sql
    from psycopg_pool import ConnectionPool
except ImportError as exc:  # pragma: no cover - the postgres extra is installed in tests
    raise StoreError(
        "the PostgreSQL store needs psycopg 3 and psycopg_pool: pip install 'resumable[postgres]'"
    ) from exc

__all__ = ["LeaseLock", "PostgresStore"]

#: Store options (the rest of a URL's query goes to libpq) and how a query string parses.
_OPTIONS: dict[str, Callable[[str], Any]] = {
    "durability": str,
    "history": int,
    "lease": float,
    "heartbeat": float,
    "schema": str,
    "pool_size": int,
}
_SECRET_PARAMS = ("password", "sslpassword")
#: Bytes of a checkpoint's payload read per query, or written per COPY message.
_SLICE = 4 << 20
#: A checkpoint whose payload is larger than this is written through COPY in slices (see
#: _put_big_checkpoint), never bound whole.
_BIG_PAYLOAD = 1 << 20
#: COPY's binary format around one row of one field (the signature, flags and header
#: extension length; the field count; then the field's length and bytes; the trailer).
_COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
_COPY_TRAILER = struct.pack("!h", -1)
#: What libpq says when the login is refused, and when the server cannot be reached.
_REFUSED = ("password authentication failed", "no pg_hba.conf entry", "authentication failed")
_UNREACHABLE = (
    "Connection refused", "timeout expired", "could not translate host name",
    "Name or service not known", "No route to host", "Network is unreachable",
    "Temporary failure in name resolution", "No such file or directory",
)  # fmt: skip


#: SQLSTATEs of a server that will not hold the tables in the schema asked for: a reserved name
#: (``pg_catalog``, any ``pg_*``), no privilege to create the schema or tables in it.
_SCHEMA_REFUSED = frozenset({"42939", "42501"})


@dataclass(slots=True)
class _Held:
    """A lease this store holds: its epoch, and whether the heartbeat found it taken over."""

    key: str  # the encoded op id
    epoch: int
    lost: bool = False


#: Guards rebuilding a store's pool; made anew in a forked child (a fork may copy it taken).
_rebuild_lock = threading.Lock()


def _new_rebuild_lock() -> None:
    global _rebuild_lock  # noqa: PLW0603 - replaced in the child only, before any thread runs
    _rebuild_lock = threading.Lock()


os.register_at_fork(after_in_child=_new_rebuild_lock)


class PostgresStore(Store):
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
        parts = urlsplit(url)
        if parts.scheme.lower() not in self.schemes:
            raise ValueError(f"{url!r} is not a postgresql://user@host/dbname URL")
        query = parse_qsl(parts.query, keep_blank_values=True)
        given: dict[str, Any] = {k: v for k, v in query if k in _OPTIONS}
        keywords = {
            "durability": durability, "history": history, "lease": lease,
            "heartbeat": heartbeat, "schema": schema, "pool_size": pool_size,
        }  # fmt: skip
        given.update((k, v) for k, v in keywords.items() if v is not None)
        opts = _parse_options(given)
        super().__init__(durability=opts["durability"], history=opts["history"])
        self.lease, self.heartbeat = check_lease(opts["lease"], opts["heartbeat"])
        self.schema: str = opts["schema"]
        self.pool_size: int = opts["pool_size"]

        libpq = [(k, v) for k, v in query if k not in _OPTIONS]
        if not any(k == "connect_timeout" for k, _ in libpq):
            libpq.append(("connect_timeout", "5"))
        self._conninfo = urlunsplit(
            (parts.scheme, parts.netloc, parts.path, urlencode(libpq), parts.fragment)
        )
        asked = dict(query)
        password = [parts.password or "", *(v for k, v in query if k in _SECRET_PARAMS)]
        self._secrets = sorted({x for p in password for x in (p, unquote(p)) if x}, key=len)[::-1]
        #: For messages: who logs in, to which server, which database.
        self.user: str = unquote(parts.username or "") or asked.get("user") or _os_user()
        host = unquote(parts.hostname or "") or asked.get("host") or "localhost"
        self.server = f"{host}:{parts.port or asked.get('port') or 5432}"
        self.dbname: str = unquote(parts.path.lstrip("/")) or asked.get("dbname") or self.user
        # Shown in messages and reprs: the URL without any password.
        netloc = parts.netloc.rpartition("@")[2]
        at = f"{parts.username}@" if parts.username else ""
        shown = [(k, v) for k, v in query if k not in _SECRET_PARAMS]
        self.url = urlunsplit((parts.scheme, at + netloc, parts.path, urlencode(shown), ""))
        # A name that is neither an option nor libpq's is a typo: say so, rather than let
        # libpq refuse the URL at connect time (a StoreError about the server).
        check_options(
            PostgresStore, self.url, (k for k, _ in libpq), also=_libpq_parameters(),
            also_what="libpq's connection parameters (connect_timeout, sslmode, ...)",
        )  # fmt: skip
        try:
            self.connect_timeout = float(dict(libpq)["connect_timeout"] or 5)
        except ValueError:
            raise ValueError(f"{self.url}: connect_timeout must be a number of seconds") from None

        self._token = ""
        self._held: dict[str, _Held] = {}
        self._beat: Heartbeat | None = None
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
            if self._pool is not None:
                # Inherited over fork: psycopg connections must not cross it. Never use or
                # close the parent's pool here; keep it referenced so it is never collected.
                self._abandoned.append(self._pool)
                self._held = {}  # the parent's leases, not ours
                self._beat = None
            self._token = _enc(Owner.current().token())
            pool = ConnectionPool(
                self._conninfo, kwargs={"autocommit": True}, min_size=1,
                max_size=self.pool_size, open=True, configure=self._configure, num_workers=1,
                timeout=2 * self.connect_timeout + 5, name=f"resumable-{self.schema}",
            )  # fmt: skip
            self._pool, self._pid = pool, os.getpid()
            if self._held:  # reopened after close() while holding leases: renew them again
                self._start_heartbeat()
            return pool

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
        beat, self._beat = self._beat, None
        if beat is not None and self._pid == os.getpid():
            beat.stop()
        pool, self._pool = self._pool, None
        if pool is not None and self._pid == os.getpid():
            pool.close()

    def _create_schema(self, conn: psycopg.Connection[Any]) -> None:
        """Create or migrate the tables, once, whoever else opens the store at the same time."""
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))
        if _schema_version(conn) == SCHEMA_VERSION:
            return
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
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
                for statement in _SCHEMA.split(";"):
                    conn.execute(statement)
                conn.execute("DELETE FROM resumable_schema_version")
                conn.execute(
                    "INSERT INTO resumable_schema_version (version) VALUES (%s)",
                    (SCHEMA_VERSION,),
                )

    def _open_error(self, exc: BaseException) -> StoreError | CheckpointCorrupt:
        text = " ".join(self._scrub(str(exc)).split())
        if any(m in text for m in _REFUSED) or ("role" in text and "does not exist" in text):
            why = (
                f"the server refused the login of user {self.user!r}: check the user and "
                "password in the URL"
            )
        elif "database" in text and "does not exist" in text:
            why = (
                f"the server at {self.server} has no database {self.dbname!r}: create it "
                f"(createdb {self.dbname}) or fix the URL"
            )
        elif any(m in text for m in _UNREACHABLE):
            why = f"could not reach the PostgreSQL server at {self.server} — is it running?"
        elif getattr(exc, "sqlstate", None) in _SCHEMA_REFUSED:
            why = (
                f"the server refused to keep the store's tables in schema {self.schema!r}: "
                "choose another schema (?schema=NAME), one this user may create tables in"
            )
        else:
            return self.store_error("open the store", exc)
        return StoreError(f"{self.url}: {why} ({text})")

    def store_error(self, doing: str, exc: BaseException) -> StoreError | CheckpointCorrupt:
        """The StoreError for a driver error, with any password in its text masked."""
        error = super().store_error(doing, exc)
        if self._secrets:
            return StoreError(self._scrub(str(error)))
        return error

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    # --- reads ----------------------------------------------------------------------------

    def _fetch(self, query: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        with self._connections().connection() as conn:
            return conn.execute(query, params).fetchall()

    def _execute(self, query: str, params: Sequence[Any]) -> None:
        with self._connections().connection() as conn:
            conn.execute(query, params)

    def get_operation(self, op_id: str) -> OperationRecord | None:
        """The stored operation record, unverified, or None."""
        rows = self._fetch(
            "SELECT " + _OP_COLUMNS + " FROM operations WHERE op_id = %s", (_enc(op_id),)
        )
        return _op_from_row(rows[0]) if rows else None

    def list_operations(self) -> Iterator[OperationRecord]:
        """Every operation record, unverified, in id order."""
        return map(
            _op_from_row,
            self._fetch("SELECT " + _OP_COLUMNS + " FROM operations ORDER BY op_id", ()),
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
            rec = _ckpt_from_row(row)
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
        with self._connections().connection() as conn, conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            head = conn.execute(_CKPT_HEAD, (key, seq)).fetchone()
            if head is None:
                return None
            size = head[7]
            if type(size) is not int:
                return (*head[:7], None, *head[8:])  # a damaged row: fails to build
            payload = io.BytesIO()
            for at in range(0, size, _SLICE):
                found = conn.execute(_CKPT_SLICE, (at + 1, _SLICE, key, seq), binary=True)
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
            "SELECT " + _RESULT_COLUMNS + " FROM results WHERE op_id = %s AND key = %s",
            (_enc(op_id), _enc(key)),
        )
        return _result_from_row(rows[0]) if rows else None

    def iter_results(self, op_id: str, prefix: str) -> Iterator[ResultRecord]:
        """The operation's results whose key starts with ``prefix``, unverified."""
        # Encoded keys (see _enc) are decoded and filtered here; a prefix that needs encoding
        # can only begin encoded keys.
        plain = prefix if _enc(prefix) == prefix else _MARK
        rows = self._fetch(
            "SELECT " + _RESULT_COLUMNS + " FROM results WHERE op_id = %s "
            "AND (starts_with(key, %s) OR starts_with(key, %s))",
            (_enc(op_id), plain, _MARK),
        )
        return (r for r in map(_result_from_row, rows) if r.key.startswith(prefix))

    # --- store-wide reads (see base.py): one query each ------------------------------------

    def stored_op_ids(self) -> list[str]:
        """Every op id with a record, checkpoints, results or claims, sorted."""
        with self.errors("list operations"):
            rows = self._fetch(
                "SELECT op_id FROM operations UNION SELECT op_id FROM checkpoints "
                "UNION SELECT op_id FROM results UNION SELECT op_id FROM claims",
                (),
            )
        return sorted(_dec(row[0]) for row in rows)

    def checkpoint_heads(self) -> dict[str, CheckpointRecord]:
        """The newest stored checkpoint of each operation, unverified, by op id."""
        with self.errors("read checkpoints"):
            rows = self._fetch(
                "SELECT DISTINCT ON (op_id) " + _CKPT_COLUMNS + " FROM checkpoints "
                "ORDER BY op_id, seq DESC",
                (),
            )
        return {c.op_id: c for c in map(_ckpt_from_row, rows)}

    def record_counts(self, op_id: str | None = None) -> dict[str, int]:
        """How many operations, checkpoints and results are stored (of ``op_id`` only)."""
        tables = ("operations", "checkpoints", "results")
        where = " WHERE op_id = %s" if op_id is not None else ""
        query = ", ".join(f"(SELECT count(*) FROM {table}{where})" for table in tables)
        args = (_enc(op_id),) * len(tables) if op_id is not None else ()
        with self.errors("count records"):
            (counts,) = self._fetch("SELECT " + query, args)
        return dict(zip(tables, map(int, counts), strict=True))

    # --- writes ---------------------------------------------------------------------------

    def _fence(self, op_id: str) -> _Held | None:
        """The lease this process holds on ``op_id`` (None: writes are not fenced).

        Raises:
            LeaseLost: the heartbeat already found the lease taken over.
        """
        held = self._held.get(op_id)
        if held is not None and held.lost:
            raise LeaseLost(op_id)
        return held

    def _lost(self, op_id: str, held: _Held) -> LeaseLost:
        held.lost = True
        log.warning("resumable.lease.lost", op_id=op_id, epoch=held.epoch, store=self.url)
        return LeaseLost(op_id)

    def _check_fence(self, conn: psycopg.Connection[Any], op_id: str, held: _Held | None) -> None:
        """Inside a transaction: lock our lease row FOR SHARE, or raise LeaseLost."""
        if held is None:
            return
        if conn.execute(_CHECK_FENCE, (held.key, self._token, held.epoch)).fetchone() is None:
            raise self._lost(op_id, held)

    def _checkpoint_row(self, c: CheckpointRecord) -> tuple[Any, ...]:
        return (
            _enc(c.op_id), c.seq % self.history, c.seq, c.position, c.state.value,
            c.progress, c.timestamp, c.serializer, c.payload, _dumps(c.metadata), c.checksum,
        )  # fmt: skip

    def add_checkpoint(self, checkpoint: CheckpointRecord) -> None:
        """Upsert ``checkpoint`` into its ring slot: one statement (fenced if leased).

        Raises:
            LeaseLost: this process held the operation's lease and another took it over.
        """
        row = self._checkpoint_row(checkpoint)
        try:  # the hot path of every loop commit: no context manager, no message unless needed
            pool = self._connections()
            held = self._fence(checkpoint.op_id)
            with pool.connection() as conn:
                if len(checkpoint.payload) > _BIG_PAYLOAD:
                    with conn.transaction():
                        self._check_fence(conn, checkpoint.op_id, held)
                        _put_big_checkpoint(conn, row)
                    return
                if held is None:
                    conn.execute(_UPSERT_CHECKPOINT, row)
                    return
                done = conn.execute(
                    _FENCED_CHECKPOINT, (held.key, self._token, held.epoch, *row)
                ).rowcount
        except self.driver_errors as exc:
            raise self.store_error(f"save a checkpoint of {checkpoint.op_id!r}", exc) from exc
        if not done:
            raise self._lost(checkpoint.op_id, held)

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
        owner = json.dumps(op.owner.to_json()) if op.owner is not None else None
        op_row = (
            _enc(op.op_id), _enc(op.name), op.state.value, owner, op.heartbeat,
            op.attempts, op.created, op.updated, None if op.error is None else _enc(op.error),
            _dumps(op.meta), op.checksum,
        )  # fmt: skip
        with self.errors(f"save operation {op.op_id!r}"):
            pool = self._connections()
            held = self._fence(op.op_id)
            big = checkpoint is not None and len(checkpoint.payload) > _BIG_PAYLOAD
            with (
                pool.connection() as conn,
                contextlib.nullcontext() if big else conn.pipeline(),  # COPY cannot pipeline
                conn.transaction(),
            ):
                self._check_fence(conn, op.op_id, held)
                conn.execute(_UPSERT_OPERATION, op_row)
                if checkpoint is not None and big:
                    _put_big_checkpoint(conn, self._checkpoint_row(checkpoint))
                elif checkpoint is not None:
                    conn.execute(_UPSERT_CHECKPOINT, self._checkpoint_row(checkpoint))
                if results:
                    conn.cursor().executemany(_UPSERT_RESULT, map(_result_row, results))

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
            held = self._fence(op_id)
            with pool.connection() as conn, conn.pipeline(), conn.transaction():
                self._check_fence(conn, op_id, held)
                conn.cursor().executemany(_UPSERT_RESULT, map(_result_row, results))

    def delete_operation(self, op_id: str) -> bool:
        """Remove the operation, its checkpoints, results and batch claims (fenced if leased).

        The lease row stays: its epoch only ever grows.

        Raises:
            LeaseLost: this process held the operation's lease and another took it over.
        """
        key = (_enc(op_id),)
        with self.errors(f"delete operation {op_id!r}"):
            pool = self._connections()
            held = self._fence(op_id)
            with pool.connection() as conn, conn.pipeline(), conn.transaction():
                self._check_fence(conn, op_id, held)
                ops = conn.execute("DELETE FROM operations WHERE op_id = %s", key)
                ckpts = conn.execute("DELETE FROM checkpoints WHERE op_id = %s", key)
                conn.execute("DELETE FROM results WHERE op_id = %s", key)
                conn.execute("DELETE FROM claims WHERE op_id = %s", key)
            return ops.rowcount + ckpts.rowcount > 0

    # --- leases ---------------------------------------------------------------------------

    def lock(self, op_id: str) -> LeaseLock:
        """The operation's lease (not yet taken), see :class:`LeaseLock`."""
        return LeaseLock(self, op_id)

    def _take_lease(self, op_id: str) -> int | None:
        """Take the lease of ``op_id``; its new epoch, or None if another holder lives.

        Taken if free, expired, or held by a process that died on this host.
        """
        key = _enc(op_id)
        with self.errors(f"take the lease of operation {op_id!r}"):
            pool = self._connections()
            if op_id in self._held:
                return None  # another block of this process holds it
            with pool.connection() as conn:
                row = conn.execute(
                    _TAKE_LEASE, {"op": key, "owner": self._token, "lease": self.lease}
                ).fetchone()
                if row is None:
                    row = self._take_from_dead(conn, op_id, key)
        if row is None:
            return None
        epoch = int(row[0])
        self._held[op_id] = _Held(key, epoch)
        self._start_heartbeat()
        return epoch

    def _take_from_dead(
        self, conn: psycopg.Connection[Any], op_id: str, key: str
    ) -> tuple[Any, ...] | None:
        """Take the lease from a holder that died on this host, without waiting it out."""
        found = conn.execute("SELECT owner FROM leases WHERE op_id = %s", (key,)).fetchone()
        dead: str | None = found[0] if found else None
        holder = Owner.from_token(_dec(dead)) if dead else None
        if dead is None or holder is None or holder.is_alive() is not False:
            return None  # alive, or on another host: only its lease can tell
        params = {"op": key, "owner": self._token, "lease": self.lease, "dead": dead}
        row = conn.execute(_TAKE_DEAD_LEASE, params).fetchone()
        if row is not None:
            log.info("resumable.lease.taken_from_dead", op_id=op_id, dead=_dec(dead))
        return row

    def _lease_holder(self, op_id: str) -> str:
        """Who holds the lease of ``op_id``, in words."""
        try:
            rows = self._fetch("SELECT owner FROM leases WHERE op_id = %s", (_enc(op_id),))
        except self.driver_errors:
            rows = []
        owner = _dec(rows[0][0]) if rows and rows[0][0] else ""
        if owner == self._token:
            return "another block in this process"
        holder = Owner.from_token(owner)
        return f"process {holder.pid} on {holder.host}" if holder else "another process"

    def _give_back(self, op_id: str, epoch: int) -> None:
        """Release the lease of ``op_id`` taken at ``epoch`` (best effort: else it expires)."""
        held = self._held.get(op_id)
        if held is None or held.epoch != epoch:
            return
        # Forget the lease before giving it back, not after: the heartbeat reports as lost
        # every lease it still counts as held that its renewal did not find, and between
        # the release's commit and a later forget it would find this one gone. (A block of
        # this process asking for the lease meanwhile just finds it still taken, and waits.)
        del self._held[op_id]
        try:
            if self._pid == os.getpid():
                with self._connections().connection() as conn:
                    conn.execute(_GIVE_BACK_LEASE, (held.key, self._token, epoch))
        except self.driver_errors as exc:
            log.warning(
                "resumable.lease.release_failed", op_id=op_id, store=self.url,
                error=self._scrub(repr(exc)),
            )  # fmt: skip

    def _start_heartbeat(self) -> None:
        if self._beat is not None:
            return
        ref = weakref.ref(self)

        def beat() -> None:
            store = ref()
            if store is not None:
                store._renew_leases()

        self._beat = beat_thread = Heartbeat(f"resumable-lease-{self.schema}", self.heartbeat, beat)
        weakref.finalize(self, beat_thread.stop)
        beat_thread.start()

    def _renew_leases(self) -> None:
        """Extend this process's leases; mark those another process took over as lost."""
        if not self._held or self._pid != os.getpid():
            return
        before = dict(self._held)
        with self._connections().connection() as conn:
            rows = conn.execute(_RENEW_LEASES, (self.lease, self._token)).fetchall()
        alive = {(key, epoch) for key, epoch in rows}
        for op_id, held in before.items():
            lost = (held.key, held.epoch) not in alive and not held.lost
            if lost and self._held.get(op_id) is held:
                self._lost(op_id, held)

    # --- sharing one operation among processes --------------------------------------------

    def claim_batches(
        self, op_id: str, group: str, batches: int, want: int, owner: str
    ) -> list[tuple[int, int]]:
        """Claim up to ``want`` unfinished batches of ``group`` for ``owner``.

        Creates the group's ``batches`` claim rows on first use. A batch can be claimed if
        no one holds it or its holder's lease has run out (on the server's clock); rows others
        are claiming right now are skipped (``SKIP LOCKED``). Returns ``(batch, epoch)`` pairs
        in batch order; empty if nothing is free now.
        """
        if batches < 1 or want < 1:
            return []
        args = {
            "op": _enc(op_id), "grp": _enc(group), "n": batches, "want": want,
            "owner": _enc(owner), "lease": self.lease,
        }  # fmt: skip
        with (
            self.errors(f"claim batches of {op_id!r}"),
            self._connections().connection() as conn,
            conn.pipeline(),
        ):
            conn.execute(_CREATE_CLAIMS, args)
            rows = conn.execute(_CLAIM, args).fetchall()
        return sorted((int(b), int(e)) for b, e in rows)

    def finish_batch(  # noqa: PLR0917 - the claim's identity, then what it produced
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
        """Store ``results`` and mark the batch done, if ``owner`` still holds it at ``epoch``.

        All or nothing, in one transaction. ``failed`` marks a batch some of whose items
        failed and were set aside: done for this run, reopened by :meth:`reopen_failed`.
        Returns False, having written nothing, if the claim was taken over (or is done).
        """
        claim = (bool(failed), _enc(op_id), _enc(group), batch, _enc(owner), epoch)
        with (
            self.errors(f"record finished batch {batch} of {op_id!r}"),
            self._connections().connection() as conn,
            conn.transaction() as tx,
        ):
            if not conn.execute(_FINISH_CLAIM, claim).rowcount:
                tx.force_rollback = True  # taken over: nothing was written
                return False
            if results:
                conn.cursor().executemany(_UPSERT_RESULT, map(_result_row, results))
        return True

    def reopen_failed(self, op_id: str, group: str) -> None:
        """Make the batches finished with ``failed=True`` claimable again (a new run)."""
        with self.errors(f"reopen failed batches of {op_id!r}"):
            self._execute(
                "UPDATE claims SET done = false, failed = false, owner = NULL, expires = 0 "
                "WHERE op_id = %s AND grp = %s AND done AND failed",
                (_enc(op_id), _enc(group)),
            )

    def release_batches(self, op_id: str, group: str, owner: str) -> None:
        """Give back ``owner``'s unfinished claims in ``group`` (so others take them at once)."""
        with self.errors(f"release batches of {op_id!r}"):
            self._execute(
                "UPDATE claims SET owner = NULL, expires = 0 WHERE op_id = %s AND grp = %s "
                "AND owner = %s AND NOT done",
                (_enc(op_id), _enc(group), _enc(owner)),
            )

    def batches_left(self, op_id: str, group: str) -> tuple[int, float | None]:
        """Unfinished batches of ``group`` and the seconds until one can be claimed.

        The seconds: until the soonest lease on an unfinished batch runs out, on the server's
        clock (0 if one is free now, or none is left; None if the group has no claim rows).
        """
        with self.errors(f"count the batches left of {op_id!r}"):
            rows = self._fetch(_BATCHES_LEFT, (_enc(op_id), _enc(group)))
        left, total, free, soonest = rows[0]
        if not total:
            return 0, None
        if free or not left or soonest is None:
            return int(left), 0.0
        return int(left), max(0.0, float(soonest))

    def claim_holders(self, op_id: str, group: str) -> list[str]:
        """The owners holding unfinished claims of ``group``."""
        with self.errors(f"read claims of {op_id!r}"):
            rows = self._fetch(
                "SELECT DISTINCT owner FROM claims "
                "WHERE op_id = %s AND grp = %s AND NOT done AND owner IS NOT NULL",
                (_enc(op_id), _enc(group)),
            )
        return [_dec(row[0]) for row in rows]

    def renew_claims(self, owner: str) -> None:
        """Extend the lease of every unfinished claim ``owner`` holds (the heartbeat)."""
        with self.errors("renew batch claims"):
            self._execute(
                "UPDATE claims SET expires = " + _NOW + " + %s WHERE owner = %s AND NOT done",
                (self.lease, _enc(owner)),
            )


class LeaseLock:
    """The lease of one operation in a :class:`PostgresStore`: one holder across machines.

    Taking it upserts the operation's ``leases`` row: it is taken if free or expired (on the
    server's clock), with a new epoch. While held, the store's heartbeat renews it; every
    write of the operation from this process is fenced on the epoch.
    """

    def __init__(self, store: PostgresStore, op_id: str) -> None:
        self.store = store
        self.op_id = op_id
        self._epoch: int | None = None

    def acquire(self, timeout: float | None = None) -> None:
        """Take the lease; retry every 50 ms for up to ``timeout`` seconds (None: once).

        Raises:
            OperationLocked: another live process (or block) holds it.
            StoreError: the store could not be reached.
        """
        if self._epoch is not None:
            raise RuntimeError(f"lock for {self.op_id!r} is already held by this object")
        deadline = time.monotonic() + (timeout or 0.0)
        try:
            while True:
                self._epoch = self.store._take_lease(self.op_id)
                if self._epoch is not None:
                    return
                remaining = deadline - time.monotonic()
                if timeout is None or remaining <= 0:
                    break
                time.sleep(min(0.05, remaining))
        except BaseException:
            self.release()  # an interrupt right after taking it must give it back
            raise
        raise OperationLocked(self.op_id, self.store._lease_holder(self.op_id), timeout or 0)

    def release(self) -> None:
        """Give the lease back (no-op if not held)."""
        epoch, self._epoch = self._epoch, None
        if epoch is not None:
            self.store._give_back(self.op_id, epoch)

    @property
    def epoch(self) -> int | None:
        """The epoch this lock holds the lease at (None if not held)."""
        return self._epoch


def _schema_version(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT to_regclass('resumable_schema_version') IS NOT NULL").fetchone()
    if not row or not row[0]:
        return 0
    found = conn.execute("SELECT max(version) FROM resumable_schema_version").fetchone()
    return int(found[0]) if found and found[0] is not None else 0


def _parse_options(given: dict[str, Any]) -> dict[str, Any]:
    """Store options from the query string and keyword arguments, checked, with defaults."""
    opts: dict[str, Any] = {
        "durability": "normal", "history": DEFAULT_HISTORY, "lease": DEFAULT_LEASE,
        "heartbeat": None, "schema": "public", "pool_size": 4,
    }  # fmt: skip
    for name, value in given.items():
        kind = _OPTIONS[name]
        if isinstance(value, str) and kind is not str:
            try:
                value = kind(value)  # noqa: PLW2901 - the parsed form of the same value
            except ValueError:
                raise ValueError(f"store option {name}={value!r} is not a number") from None
        opts[name] = value
    pool_size = opts["pool_size"]
    if isinstance(pool_size, bool) or not isinstance(pool_size, int) or pool_size < 1:
        raise ValueError(f"store option pool_size must be a whole number >= 1, not {pool_size!r}")
    schema = opts["schema"]
    if not isinstance(schema, str) or not schema or "\x00" in schema or len(schema) > 63:
        raise ValueError(
            f"store option schema must be a PostgreSQL schema name (1 to 63 characters), "
            f"not {schema!r}"
        )
    return opts


def _libpq_parameters() -> tuple[str, ...]:
    """The connection parameters the installed libpq knows (``sslmode``, ...)."""
    return tuple(o.keyword.decode() for o in psycopg.pq.Conninfo.get_defaults())


def _os_user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):  # pragma: no cover - no user name in this environment
        return "?"


def _put_big_checkpoint(conn: psycopg.Connection[Any], row: tuple[Any, ...]) -> None:
    """Upsert checkpoint ``row``, its payload streamed to the server, inside a transaction.

    A bound payload is copied by psycopg and again into libpq's output buffer, which keeps
    that size for the connection's life: for a 100 MB state, two more copies. Here the
    payload goes through ``COPY ... FROM STDIN`` in slices into a temporary table (dropped
    at the commit), and the server upserts the row from it.
    """
    i = 8  # the payload's place in the row (see _checkpoint_row)
    conn.execute(_UPLOAD_TABLE)
    view = memoryview(row[i])
    with conn.cursor().copy(_UPLOAD_COPY) as copy:
        copy.write(_COPY_SIGNATURE + struct.pack("!hi", 1, len(view)))
        for at in range(0, len(view), _SLICE):
            copy.write(view[at : at + _SLICE])
        copy.write(_COPY_TRAILER)
    conn.execute(_UPSERT_FROM_UPLOAD, (*row[:i], *row[i + 1 :]))
