"""The SQL of the PostgreSQL store: its schema, its statements, and large payloads by COPY.

Statements are built from the constants here (column lists, the server clock expression);
values are always bound parameters. Text PostgreSQL cannot hold is encoded by :data:`ROWS`
(see :class:`~resumable.stores._sql.SQLRows`). The statements of leases and claims are in
``_pg_leases`` and ``_pg_claims``.
"""

# ruff: noqa: S608

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any

from ._sql import SQLRows

if TYPE_CHECKING:
    import psycopg

#: Records <-> rows: text holding NUL, starting with \x01 or not UTF-8 is stored \x01 + hex.
ROWS = SQLRows("\x01", forbidden="\x00", param="%s")

SCHEMA_VERSION = 1
#: The advisory lock that serializes creating and migrating the tables (b"resumabl").
SCHEMA_LOCK = 0x726573756D61626C
#: The server's clock, in seconds since the epoch: every lease and claim time comes from it.
NOW = "extract(epoch from clock_timestamp())::float8"

SCHEMA = """
CREATE TABLE IF NOT EXISTS resumable_schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS operations (
    op_id TEXT COLLATE "C" PRIMARY KEY, name TEXT NOT NULL, state TEXT NOT NULL, owner TEXT,
    heartbeat DOUBLE PRECISION NOT NULL, attempts BIGINT NOT NULL,
    created DOUBLE PRECISION NOT NULL, updated DOUBLE PRECISION NOT NULL, error TEXT,
    meta TEXT, checksum TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS checkpoints (
    op_id TEXT COLLATE "C" NOT NULL, slot INTEGER NOT NULL, seq BIGINT NOT NULL,
    "position" BIGINT NOT NULL, state TEXT NOT NULL, progress DOUBLE PRECISION NOT NULL,
    "timestamp" DOUBLE PRECISION NOT NULL, serializer TEXT NOT NULL, payload BYTEA NOT NULL,
    metadata TEXT, checksum TEXT NOT NULL, PRIMARY KEY (op_id, slot)
);
CREATE TABLE IF NOT EXISTS results (
    op_id TEXT COLLATE "C" NOT NULL, key TEXT COLLATE "C" NOT NULL, serializer TEXT NOT NULL,
    payload BYTEA NOT NULL, created DOUBLE PRECISION NOT NULL, checksum TEXT NOT NULL,
    PRIMARY KEY (op_id, key)
);
CREATE TABLE IF NOT EXISTS leases (
    op_id TEXT COLLATE "C" PRIMARY KEY, owner TEXT, epoch BIGINT NOT NULL,
    expires DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS leases_owner ON leases (owner);
CREATE TABLE IF NOT EXISTS claims (
    op_id TEXT COLLATE "C" NOT NULL, grp TEXT COLLATE "C" NOT NULL, batch INTEGER NOT NULL,
    owner TEXT, epoch BIGINT NOT NULL, expires DOUBLE PRECISION NOT NULL,
    done BOOLEAN NOT NULL, failed BOOLEAN NOT NULL DEFAULT false,
    PRIMARY KEY (op_id, grp, batch)
);
CREATE INDEX IF NOT EXISTS claims_owner ON claims (owner) WHERE NOT done
"""

# --- statements (column lists and clauses are constants; values are always bound) ---------

OP_COLUMNS = (
    "op_id, name, state, owner, heartbeat, attempts, created, updated, error, meta, checksum"
)
CKPT_COLUMNS = (
    'op_id, seq, "position", state, progress, "timestamp", serializer, payload, metadata, checksum'
)
RESULT_COLUMNS = "op_id, key, serializer, payload, created, checksum"
#: The results of an operation whose key starts with a prefix, and any whose key is stored
#: encoded (see SQLRows.enc), which the caller decodes and matches. Arguments: the op id, the
#: prefix (the mark if the prefix itself needs encoding), the mark.
RESULTS_UNDER = "op_id = %s AND (starts_with(key, %s) OR starts_with(key, %s))"
#: Those counted by serializer; an encoded key comes back on a row of its own (SQLRows.tally).
COUNT_RESULTS = (
    "SELECT CASE WHEN starts_with(key, %s) THEN key END, serializer, count(*) FROM results "
    "WHERE " + RESULTS_UNDER + " GROUP BY 1, 2"
)
#: Those written by one serializer.
SERIALIZER_RESULTS = (
    "SELECT " + RESULT_COLUMNS + " FROM results WHERE serializer = %s AND " + RESULTS_UNDER
)
#: A checkpoint's columns without its payload, and the payload's length, by op id and seq.
CKPT_HEAD = (
    'SELECT op_id, seq, "position", state, progress, "timestamp", serializer, '
    "octet_length(payload), metadata, checksum FROM checkpoints WHERE op_id = %s AND seq = %s"
)
#: One slice of a payload (substring counts from 1). Read in slices, a large payload never
#: passes whole through libpq's buffers, which keep their largest size for the connection.
CKPT_SLICE = (
    "SELECT substring(payload FROM %s FOR %s) FROM checkpoints WHERE op_id = %s AND seq = %s"
)

CKPT_INSERT = (
    'INSERT INTO checkpoints (op_id, slot, seq, "position", state, progress, "timestamp", '
    "serializer, payload, metadata, checksum) "
)
CKPT_CONFLICT = (
    " ON CONFLICT (op_id, slot) DO UPDATE SET seq = excluded.seq, "
    '"position" = excluded."position", state = excluded.state, progress = excluded.progress, '
    '"timestamp" = excluded."timestamp", serializer = excluded.serializer, '
    "payload = excluded.payload, metadata = excluded.metadata, checksum = excluded.checksum"
)
CKPT_VALUES = "%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s"
UPSERT_CHECKPOINT = CKPT_INSERT + "VALUES (" + CKPT_VALUES + ")" + CKPT_CONFLICT
#: A large payload is streamed into this session's temporary table, then upserted from it.
#: Stored there uncompressed (EXTERNAL): a pickle's header makes pglz try to compress all of
#: a payload it then stores as it was, which costs more than the copy itself.
UPLOAD_TABLE = (
    "CREATE TEMP TABLE resumable_upload (payload BYTEA NOT NULL) ON COMMIT DROP; "
    "ALTER TABLE pg_temp.resumable_upload ALTER COLUMN payload SET STORAGE EXTERNAL"
)
UPLOAD_COPY = "COPY pg_temp.resumable_upload (payload) FROM STDIN (FORMAT BINARY)"
UPSERT_FROM_UPLOAD = (
    CKPT_INSERT
    + "SELECT %s, %s, %s, %s, %s, %s, %s, %s, u.payload, %s, %s FROM pg_temp.resumable_upload u"
    + CKPT_CONFLICT
)
#: The fence: the lease row, still ours, locked FOR SHARE until the write commits, so that a
#: takeover either waits for this write or makes it see the new epoch and write nothing.
#: Its arguments: LeasedStore.fence_args.
FENCE = (
    "WITH fence AS (SELECT FROM leases WHERE op_id = %s AND owner = %s AND epoch = %s FOR SHARE) "
)
FENCED_CHECKPOINT = FENCE + CKPT_INSERT + "SELECT " + CKPT_VALUES + " FROM fence" + CKPT_CONFLICT
CHECK_FENCE = "SELECT FROM leases WHERE op_id = %s AND owner = %s AND epoch = %s FOR SHARE"

UPSERT_OPERATION = (
    "INSERT INTO operations (op_id, name, state, owner, heartbeat, attempts, created, updated, "
    "error, meta, checksum) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
    "ON CONFLICT (op_id) DO UPDATE SET name = excluded.name, state = excluded.state, "
    "owner = excluded.owner, heartbeat = excluded.heartbeat, attempts = excluded.attempts, "
    "created = excluded.created, updated = excluded.updated, error = excluded.error, "
    "meta = excluded.meta, checksum = excluded.checksum"
)
#: Results written by one statement, whatever their number. Not ``executemany``: it sends its
#: rows in pipeline mode, and a client stopped (SIGSTOP, a debugger) before the pipeline's Sync
#: leaves its session "active", not "idle in transaction", so the server's
#: ``idle_in_transaction_session_timeout`` never ends it and its row locks stay.
UPSERT_RESULTS = (
    "INSERT INTO results (op_id, key, serializer, payload, created, checksum) "
    "SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::bytea[], %s::float8[], "
    "%s::text[]) ON CONFLICT (op_id, key) DO UPDATE SET "
    "serializer = excluded.serializer, payload = excluded.payload, "
    "created = excluded.created, checksum = excluded.checksum"
)
#: Payload bytes bound in one statement of :func:`upsert_results` (more go in another).
RESULTS_BYTES = 32 << 20

#: Bytes of a checkpoint's payload read per query, or written per COPY message.
SLICE = 4 << 20
#: A checkpoint whose payload is larger than this is written through COPY in slices (see
#: put_big_checkpoint), never bound whole.
BIG_PAYLOAD = 1 << 20
#: COPY's binary format around one row of one field (the signature, flags and header
#: extension length; the field count; then the field's length and bytes; the trailer).
_COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
_COPY_TRAILER = struct.pack("!h", -1)


def under(op_id: str, prefix: str) -> tuple[str, str, str]:
    """The arguments of :data:`RESULTS_UNDER`.

    A prefix that needs encoding can only begin encoded keys: then only those are matched.
    """
    plain = prefix if ROWS.enc(prefix) == prefix else ROWS.mark
    return ROWS.enc(op_id), plain, ROWS.mark


def put_big_checkpoint(conn: psycopg.Connection[Any], row: tuple[Any, ...]) -> None:
    """Upsert checkpoint ``row``, its payload streamed to the server, inside a transaction.

    A bound payload is copied by psycopg and again into libpq's output buffer, which keeps
    that size for the connection's life: for a 100 MB state, two more copies. Here the
    payload goes through ``COPY ... FROM STDIN`` in slices into a temporary table (dropped
    at the commit), and the server upserts the row from it.
    """
    i = 8  # the payload's place in the row (see SQLRows.checkpoint_row)
    conn.execute(UPLOAD_TABLE)
    view = memoryview(row[i])
    with conn.cursor().copy(UPLOAD_COPY) as copy:
        copy.write(_COPY_SIGNATURE + struct.pack("!hi", 1, len(view)))
        for at in range(0, len(view), SLICE):
            copy.write(view[at : at + SLICE])
        copy.write(_COPY_TRAILER)
    conn.execute(UPSERT_FROM_UPLOAD, (*row[:i], *row[i + 1 :]))


def upsert_results(conn: psycopg.Connection[Any], rows: list[tuple[Any, ...]]) -> None:
    """Upsert result ``rows`` (``ROWS.result_row``) with one statement per ~32 MiB of payloads.

    A key given twice keeps its last row (one statement cannot update a row twice). Between
    two statements the client waits for the first, so a pause there leaves the session idle in
    its transaction, where the server's timeout ends it.
    """
    latest = {(row[0], row[1]): row for row in rows}
    batch: list[tuple[Any, ...]] = []
    size = 0
    for row in latest.values():
        batch.append(row)
        size += len(row[3])
        if size >= RESULTS_BYTES:
            conn.execute(UPSERT_RESULTS, [list(column) for column in zip(*batch, strict=True)])
            batch, size = [], 0
    if batch:
        conn.execute(UPSERT_RESULTS, [list(column) for column in zip(*batch, strict=True)])
