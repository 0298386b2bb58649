"""The SQL of the PostgreSQL store: its schema, its statements, and rows <-> records.

Statements are built from the constants here (column lists, the server clock expression);
values are always bound parameters. Text PostgreSQL cannot hold is encoded by :func:`_enc`.
"""

# ruff: noqa: S608

from __future__ import annotations

from typing import Any

from resumable.operation import (
    CheckpointRecord,
    OperationRecord,
    ResultRecord,
)

from . import _rows

SCHEMA_VERSION = 1
#: The advisory lock that serializes creating and migrating the tables (b"resumabl").
_SCHEMA_LOCK = 0x726573756D61626C
#: The server's clock, in seconds since the epoch: every lease and claim time comes from it.
_NOW = "extract(epoch from clock_timestamp())::float8"

_SCHEMA = """
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

_OP_COLUMNS = (
    "op_id, name, state, owner, heartbeat, attempts, created, updated, error, meta, checksum"
)
_CKPT_COLUMNS = (
    'op_id, seq, "position", state, progress, "timestamp", serializer, payload, metadata, checksum'
)
_RESULT_COLUMNS = "op_id, key, serializer, payload, created, checksum"
#: A checkpoint's columns without its payload, and the payload's length, by op id and seq.
_CKPT_HEAD = (
    'SELECT op_id, seq, "position", state, progress, "timestamp", serializer, '
    "octet_length(payload), metadata, checksum FROM checkpoints WHERE op_id = %s AND seq = %s"
)
#: One slice of a payload (substring counts from 1). Read in slices, a large payload never
#: passes whole through libpq's buffers, which keep their largest size for the connection.
_CKPT_SLICE = (
    "SELECT substring(payload FROM %s FOR %s) FROM checkpoints WHERE op_id = %s AND seq = %s"
)

_CKPT_INSERT = (
    'INSERT INTO checkpoints (op_id, slot, seq, "position", state, progress, "timestamp", '
    "serializer, payload, metadata, checksum) "
)
_CKPT_CONFLICT = (
    " ON CONFLICT (op_id, slot) DO UPDATE SET seq = excluded.seq, "
    '"position" = excluded."position", state = excluded.state, progress = excluded.progress, '
    '"timestamp" = excluded."timestamp", serializer = excluded.serializer, '
    "payload = excluded.payload, metadata = excluded.metadata, checksum = excluded.checksum"
)
_CKPT_VALUES = "%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s"
_UPSERT_CHECKPOINT = _CKPT_INSERT + "VALUES (" + _CKPT_VALUES + ")" + _CKPT_CONFLICT
#: A large payload is streamed into this session's temporary table, then upserted from it.
#: Stored there uncompressed (EXTERNAL): a pickle's header makes pglz try to compress all of
#: a payload it then stores as it was, which costs more than the copy itself.
_UPLOAD_TABLE = (
    "CREATE TEMP TABLE resumable_upload (payload BYTEA NOT NULL) ON COMMIT DROP; "
    "ALTER TABLE pg_temp.resumable_upload ALTER COLUMN payload SET STORAGE EXTERNAL"
)
_UPLOAD_COPY = "COPY pg_temp.resumable_upload (payload) FROM STDIN (FORMAT BINARY)"
_UPSERT_FROM_UPLOAD = (
    _CKPT_INSERT
    + "SELECT %s, %s, %s, %s, %s, %s, %s, %s, u.payload, %s, %s FROM pg_temp.resumable_upload u"
    + _CKPT_CONFLICT
)
#: The fence: the lease row, still ours, locked FOR SHARE until the write commits, so that a
#: takeover either waits for this write or makes it see the new epoch and write nothing.
_FENCE = (
    "WITH fence AS (SELECT FROM leases WHERE op_id = %s AND owner = %s AND epoch = %s FOR SHARE) "
)
_FENCED_CHECKPOINT = (
    _FENCE + _CKPT_INSERT + "SELECT " + _CKPT_VALUES + " FROM fence" + _CKPT_CONFLICT
)
_CHECK_FENCE = "SELECT FROM leases WHERE op_id = %s AND owner = %s AND epoch = %s FOR SHARE"

_UPSERT_OPERATION = (
    "INSERT INTO operations (op_id, name, state, owner, heartbeat, attempts, created, updated, "
    "error, meta, checksum) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
    "ON CONFLICT (op_id) DO UPDATE SET name = excluded.name, state = excluded.state, "
    "owner = excluded.owner, heartbeat = excluded.heartbeat, attempts = excluded.attempts, "
    "created = excluded.created, updated = excluded.updated, error = excluded.error, "
    "meta = excluded.meta, checksum = excluded.checksum"
)
_UPSERT_RESULT = (
    "INSERT INTO results (op_id, key, serializer, payload, created, checksum) "
    "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (op_id, key) DO UPDATE SET "
    "serializer = excluded.serializer, payload = excluded.payload, "
    "created = excluded.created, checksum = excluded.checksum"
)

_TAKE_LEASE = (
    "INSERT INTO leases AS l (op_id, owner, epoch, expires) "
    "VALUES (%(op)s, %(owner)s, 1, " + _NOW + " + %(lease)s) "
    "ON CONFLICT (op_id) DO UPDATE SET owner = excluded.owner, epoch = l.epoch + 1, "
    "expires = excluded.expires "
    "WHERE l.owner IS NULL OR l.expires < " + _NOW + " RETURNING epoch"
)
_TAKE_DEAD_LEASE = (
    "UPDATE leases SET owner = %(owner)s, epoch = epoch + 1, expires = " + _NOW + " + %(lease)s "
    "WHERE op_id = %(op)s AND owner = %(dead)s RETURNING epoch"
)
_RENEW_LEASES = (
    "UPDATE leases SET expires = " + _NOW + " + %s WHERE owner = %s RETURNING op_id, epoch"
)
_GIVE_BACK_LEASE = (
    "UPDATE leases SET owner = NULL, expires = 0 WHERE op_id = %s AND owner = %s AND epoch = %s"
)

_CREATE_CLAIMS = (
    "INSERT INTO claims (op_id, grp, batch, owner, epoch, expires, done) "
    "SELECT %(op)s, %(grp)s, b, NULL, 0, 0, false FROM generate_series(0, %(n)s - 1) AS b "
    "WHERE NOT EXISTS (SELECT FROM claims WHERE op_id = %(op)s AND grp = %(grp)s "
    "AND batch = %(n)s - 1) ON CONFLICT DO NOTHING"
)
_CLAIM = (
    "WITH pick AS (SELECT batch FROM claims WHERE op_id = %(op)s AND grp = %(grp)s "
    "AND NOT done AND (owner IS NULL OR expires < " + _NOW + ") "
    "ORDER BY batch LIMIT %(want)s FOR UPDATE SKIP LOCKED) "
    "UPDATE claims AS c SET owner = %(owner)s, epoch = c.epoch + 1, "
    "expires = " + _NOW + " + %(lease)s FROM pick "
    "WHERE c.op_id = %(op)s AND c.grp = %(grp)s AND c.batch = pick.batch "
    "RETURNING c.batch, c.epoch"
)
_FINISH_CLAIM = (
    "UPDATE claims SET done = true, failed = %s WHERE op_id = %s AND grp = %s AND batch = %s "
    "AND owner = %s AND epoch = %s AND NOT done"
)
_BATCHES_LEFT = (
    "WITH now AS (SELECT " + _NOW + " AS t) "
    "SELECT count(*) FILTER (WHERE NOT done), count(*), "
    "coalesce(bool_or(NOT done AND (owner IS NULL OR expires < now.t)), false), "
    "min(expires - now.t) FILTER (WHERE NOT done AND owner IS NOT NULL) "
    "FROM claims CROSS JOIN now WHERE op_id = %s AND grp = %s"
)

#: Text starting with this, or holding NUL, or unencodable, is stored as it + UTF-8 hex.
_MARK = "\x01"


def _enc(text: str) -> str:
    r"""``text`` as a PostgreSQL TEXT value can hold it.

    PostgreSQL text cannot hold NUL or the lone surrogates that ``os.fsdecode`` makes of
    undecodable file names, so such strings (and any starting with ``\\x01``) are stored as
    ``\\x01`` + the hex of their surrogate-preserving UTF-8 bytes. The mapping is one-to-one.
    (SQLite's encoding marks with a leading NUL, which PostgreSQL refuses.)
    """
    if "\x00" not in text and not text.startswith(_MARK):
        if text.isascii():
            return text
        try:
            text.encode()
        except UnicodeEncodeError:
            pass
        else:
            return text
    return _MARK + text.encode("utf-8", "surrogatepass").hex()


def _dec(text: str) -> str:
    """The inverse of :func:`_enc`."""
    if text.startswith(_MARK):
        return bytes.fromhex(text[1:]).decode("utf-8", "surrogatepass")
    return text


# Rows -> records (a damaged row makes a record that never verifies): see _rows.
def _op_from_row(row: tuple[Any, ...]) -> OperationRecord:
    return _rows.operation(row, _dec)


def _ckpt_from_row(row: tuple[Any, ...]) -> CheckpointRecord:
    return _rows.checkpoint(row, _dec)


def _result_row(r: ResultRecord) -> tuple[Any, ...]:
    return (_enc(r.op_id), _enc(r.key), r.serializer, r.payload, r.created, r.checksum)


def _result_from_row(row: tuple[Any, ...]) -> ResultRecord:
    return _rows.result(row, _dec)
