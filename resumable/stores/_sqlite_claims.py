"""Batch claims of the SQLite store: the ``claims`` table, leases timed by this machine's clock.

One machine, many processes: every claim, renewal and "done" mark is one ``BEGIN IMMEDIATE``
transaction (or one statement) on the store's connection.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence

from resumable.operation import ResultRecord

from ._claims import Claim, SQLClaims
from ._sqlite_sql import ROWS, UPSERT_RESULT, transaction

__all__ = ["SQLiteClaims"]

_enc = ROWS.enc

_CLAIM = """
UPDATE claims SET owner = ?, epoch = epoch + 1, expires = ?
WHERE op_id = ? AND grp = ? AND batch IN (
    SELECT batch FROM claims
    WHERE op_id = ? AND grp = ? AND done = 0 AND (owner IS NULL OR expires < ?)
    ORDER BY batch LIMIT ?
)
RETURNING batch, epoch
"""

_HOLDERS = (
    "SELECT DISTINCT owner FROM claims "
    "WHERE op_id = ? AND grp = ? AND done = 0 AND owner IS NOT NULL"
)
_REOPEN = (
    "UPDATE claims SET done = 0, owner = NULL, expires = 0 WHERE op_id = ? AND grp = ? AND done = 2"
)
_RELEASE = (
    "UPDATE claims SET owner = NULL, expires = 0 "
    "WHERE op_id = ? AND grp = ? AND owner = ? AND done = 0"
)


class SQLiteClaims(SQLClaims[sqlite3.Connection]):
    """The claims of one SQLite store (its connection under its guard: ``connected``)."""

    def claim(
        self, op_id: str, group: str, batches: int, want: int, owner: str
    ) -> list[tuple[int, int]]:
        """Claim up to ``want`` unfinished batches, free or with an expired lease."""
        op, grp = _enc(op_id), _enc(group)
        with self.connected(f"claim work of {op_id!r}") as conn, transaction(conn):
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

    def finish(self, claim: Claim, results: Sequence[ResultRecord], *, failed: bool) -> bool:
        """Store ``results`` and mark the batch done, if the claim is still ``owner``'s."""
        c = claim
        with self.connected(f"record finished work of {c.op_id!r}") as conn, transaction(conn):
            mine = conn.execute(
                "UPDATE claims SET done = ? WHERE op_id = ? AND grp = ? AND batch = ? "
                "AND owner = ? AND epoch = ? AND done = 0",
                (2 if failed else 1, _enc(c.op_id), _enc(c.group), c.batch, c.owner, c.epoch),
            ).rowcount == 1  # fmt: skip
            if mine:  # else taken over: the transaction changed nothing
                conn.executemany(UPSERT_RESULT, map(ROWS.result_row, results))
        return mine

    def reopen_failed(self, op_id: str, group: str) -> None:
        """Make batches finished with failures claimable again."""
        self.run(f"reopen failed work of {op_id!r}", _REOPEN, (_enc(op_id), _enc(group)))

    def release(self, op_id: str, group: str, owner: str) -> None:
        """Give back ``owner``'s unfinished claims in ``group``."""
        args = (_enc(op_id), _enc(group), owner)
        self.run(f"release claims on {op_id!r}", _RELEASE, args)

    def left(self, op_id: str, group: str) -> tuple[int, float | None]:
        """Unfinished batches and the seconds until one can be claimed."""
        with self.connected(f"read claims of {op_id!r}") as conn:
            now = time.time()
            left, soonest, rows = conn.execute(
                "SELECT sum(done = 0), min(CASE WHEN done = 0 THEN "
                "  CASE WHEN owner IS NULL OR expires < ? THEN 0 ELSE expires - ? END END), "
                "count(*) FROM claims WHERE op_id = ? AND grp = ?",
                (now, now, _enc(op_id), _enc(group)),
            ).fetchone()
        if not rows:
            return 0, None
        return int(left), 0.0 if soonest is None else float(soonest)

    def holders(self, op_id: str, group: str) -> list[str]:
        """The owners holding unfinished claims of ``group``."""
        args = (_enc(op_id), _enc(group))
        rows = self.fetch(f"read claims of {op_id!r}", _HOLDERS, args)
        return [row[0] for row in rows]

    def renew(self, owner: str) -> None:
        """Extend the lease of ``owner``'s unfinished claims."""
        args = (time.time() + self.lease, owner)
        self.run("renew claims", "UPDATE claims SET expires = ? WHERE owner = ? AND done = 0", args)
