"""Results a SQLite store's connection read or wrote, kept while the database is unchanged.

A ``@resumable`` hit is one result read. This cache answers it from memory instead, but only
after proving that nothing changed the database since the record was read or written:

- ``PRAGMA data_version`` differs between two calls on one connection if *another*
  connection (this process's or another's) committed in between: a reset, a new result, a
  repaired row. It is read on every lookup, so such a change is seen at once;
- the connection's ``total_changes`` counts the rows this connection changed, so a write of
  this process (a reset, any other write) is seen as well. The store's own result writes
  re-validate it with the records they wrote (:meth:`ResultCache.wrote`);
- the secret in force: a record is verified under one checksum mode (see :mod:`._signing`),
  and ``configure(secret=...)`` changes the mode.

The read that fills it (:data:`CALL_READ`) also tells whether the operation has a record at
all, so a call that goes on to run, having taken its lock, need not read the record again
while the database is unchanged (:meth:`ResultCache.absent`).

Any of them changed: everything is forgotten and the next lookup reads the table. Entries are
verified :class:`~resumable.operation.ResultRecord` objects: immutable, holding the payload's
bytes, so each hit decodes its own copy and a caller that mutates what it got changes nothing
the next hit returns. A payload above :data:`MAX_PAYLOAD` is never kept, and the cache keeps
at most :data:`MAX_BYTES` of payloads (the oldest entries go first).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable
from typing import Any, Final

from resumable import _signing
from resumable.operation import ResultRecord

__all__ = ["CALL_READ", "MAX_BYTES", "MAX_PAYLOAD", "ResultCache"]

#: One result (its columns are NULL if there is none) and whether its operation has a record.
#: Its parameters are (op id, op id, key): plain ``?`` placeholders, since Python 3.12 warns
#: (and 3.14 refuses) numbered ones bound from a sequence.
CALL_READ = """
SELECT r.op_id, r.key, r.serializer, CASE typeof(r.payload) WHEN 'blob' THEN r.payload END,
       r.created, r.checksum, EXISTS (SELECT 1 FROM operations WHERE op_id = ?)
FROM (SELECT 1) LEFT JOIN results AS r ON r.op_id = ? AND r.key = ?
"""

#: The largest payload kept; decoding a larger one costs more than reading it again.
MAX_PAYLOAD: Final = 64 << 10
#: Payload bytes kept at most, over all entries.
MAX_BYTES: Final = 16 << 20
#: Operations known to have no record, kept at most.
MAX_ABSENT: Final = 10_000


class ResultCache:
    """Verified results by (op id, key), valid for one connection while nothing changed.

    Every method is called under the store's guard, with the store's current connection.
    """

    __slots__ = ("bytes", "changes", "conn", "missing", "records", "signer", "version")

    def __init__(self) -> None:
        self.conn: sqlite3.Connection | None = None
        self.version = -1
        self.changes = -1
        self.signer: Callable[..., Any] | None = None
        self.records: dict[tuple[str, str], ResultRecord] = {}
        self.bytes = 0
        self.missing: set[str] = set()  # op ids without a record

    def sync(self, conn: sqlite3.Connection) -> None:
        """Forget everything if the database or the checksum mode changed since the last call.

        Called before a lookup, and before the read whose record :meth:`put` keeps: a record
        read after this call is at least as new as the state it validated.
        """
        (version,) = conn.execute("PRAGMA data_version").fetchone()
        signer = _signing.digest
        if (
            version != self.version
            or conn.total_changes != self.changes
            or conn is not self.conn
            or signer is not self.signer
        ):
            self.records.clear()
            self.missing.clear()
            self.bytes = 0
            self.conn, self.version, self.changes = conn, version, conn.total_changes
            self.signer = signer

    def get(self, op_id: str, key: str) -> ResultRecord | None:
        """The record kept for (op_id, key), if any (call :meth:`sync` first)."""
        return self.records.get((op_id, key))

    def absent(self, op_id: str) -> bool:
        """True if ``op_id`` is known to have no operation record (call :meth:`sync` first)."""
        return op_id in self.missing

    def note_record(self, op_id: str, *, exists: bool) -> None:
        """Whether ``op_id`` had a record, in a read made after the last :meth:`sync`."""
        if exists:
            self.missing.discard(op_id)
            return
        if len(self.missing) >= MAX_ABSENT:
            self.missing.clear()
        self.missing.add(op_id)

    def put(self, rec: ResultRecord) -> None:
        """Keep a verified record read after the last :meth:`sync`."""
        size = len(rec.payload)
        if size > MAX_PAYLOAD:
            return
        records = self.records
        old = records.pop((rec.op_id, rec.key), None)
        if old is not None:
            self.bytes -= len(old.payload)
        while records and self.bytes + size > MAX_BYTES:
            oldest = next(iter(records))
            self.bytes -= len(records.pop(oldest).payload)
        records[rec.op_id, rec.key] = rec
        self.bytes += size

    def wrote(
        self, conn: sqlite3.Connection, before: int, op_id: str, results: Iterable[ResultRecord]
    ) -> None:
        """This connection committed ``op_id``'s record and ``results`` since ``before`` changes.

        If the cache was valid just before that write (no other change by this connection
        since its last :meth:`sync`), it stays valid with these records, which are what the
        table now holds for their keys; otherwise it is already stale and is left to the next
        :meth:`sync`. Changes by other connections meanwhile move ``data_version``: the next
        :meth:`sync` sees them and forgets everything.
        """
        if conn is not self.conn or before != self.changes or _signing.digest is not self.signer:
            return
        self.changes = conn.total_changes
        self.missing.discard(op_id)
        for rec in results:
            self.put(rec)
