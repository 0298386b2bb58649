"""Batch claims of the PostgreSQL store: ``FOR UPDATE SKIP LOCKED``, leases on the server's clock.

Shared maps claim numbered batches of items under the same kind of lease as an operation's
(see :mod:`resumable.stores._claims`); participants run on several machines, so every expiry
is read and written on the server's clock.
"""

# ruff: noqa: S608 - statements are built from the server clock expression; values are bound

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

from resumable.operation import ResultRecord

from ._claims import Claim, SQLClaims
from ._pg_sql import NOW, ROWS, upsert_results

if TYPE_CHECKING:
    import psycopg

__all__ = ["PostgresClaims"]

_enc, _dec = ROWS.enc, ROWS.dec

_CREATE_CLAIMS = (
    "INSERT INTO claims (op_id, grp, batch, owner, epoch, expires, done) "
    "SELECT %(op)s, %(grp)s, b, NULL, 0, 0, false FROM generate_series(0, %(n)s - 1) AS b "
    "WHERE NOT EXISTS (SELECT FROM claims WHERE op_id = %(op)s AND grp = %(grp)s "
    "AND batch = %(n)s - 1) ON CONFLICT DO NOTHING"
)
_CLAIM = (
    "WITH pick AS (SELECT batch FROM claims WHERE op_id = %(op)s AND grp = %(grp)s "
    "AND NOT done AND (owner IS NULL OR expires < " + NOW + ") "
    "ORDER BY batch LIMIT %(want)s FOR UPDATE SKIP LOCKED) "
    "UPDATE claims AS c SET owner = %(owner)s, epoch = c.epoch + 1, "
    "expires = " + NOW + " + %(lease)s FROM pick "
    "WHERE c.op_id = %(op)s AND c.grp = %(grp)s AND c.batch = pick.batch "
    "RETURNING c.batch, c.epoch"
)
_FINISH_CLAIM = (
    "UPDATE claims SET done = true, failed = %s WHERE op_id = %s AND grp = %s AND batch = %s "
    "AND owner = %s AND epoch = %s AND NOT done"
)
_BATCHES_LEFT = (
    "WITH now AS (SELECT " + NOW + " AS t) "
    "SELECT count(*) FILTER (WHERE NOT done), count(*), "
    "coalesce(bool_or(NOT done AND (owner IS NULL OR expires < now.t)), false), "
    "min(expires - now.t) FILTER (WHERE NOT done AND owner IS NOT NULL) "
    "FROM claims CROSS JOIN now WHERE op_id = %s AND grp = %s"
)

_HOLDERS = (
    "SELECT DISTINCT owner FROM claims "
    "WHERE op_id = %s AND grp = %s AND NOT done AND owner IS NOT NULL"
)
_REOPEN = (
    "UPDATE claims SET done = false, failed = false, owner = NULL, expires = 0 "
    "WHERE op_id = %s AND grp = %s AND done AND failed"
)
_RELEASE = (
    "UPDATE claims SET owner = NULL, expires = 0 WHERE op_id = %s AND grp = %s "
    "AND owner = %s AND NOT done"
)
_RENEW = "UPDATE claims SET expires = " + NOW + " + %s WHERE owner = %s AND NOT done"


_Connection: TypeAlias = "psycopg.Connection[Any]"


class PostgresClaims(SQLClaims[_Connection]):
    """The claims of one PostgreSQL store (a connection of its pool: ``connected``)."""

    def claim(
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
        # Two statements, each committed by the server as it ends (autocommit), not one
        # pipeline: a client stopped before a pipeline's Sync keeps its claimed rows locked,
        # and SKIP LOCKED hides them from every other participant for as long as it is stopped.
        with self.connected(f"claim batches of {op_id!r}") as conn:
            conn.execute(_CREATE_CLAIMS, args)
            rows = conn.execute(_CLAIM, args).fetchall()
        return sorted((int(b), int(e)) for b, e in rows)

    def finish(self, claim: Claim, results: Sequence[ResultRecord], *, failed: bool) -> bool:
        """Store ``results`` and mark the batch done, if ``owner`` still holds it at ``epoch``.

        All or nothing, in one transaction. ``failed`` marks a batch some of whose items
        failed and were set aside: done for this run, reopened by :meth:`reopen_failed`.
        Returns False, having written nothing, if the claim was taken over (or is done).
        """
        c = claim
        args = (bool(failed), _enc(c.op_id), _enc(c.group), c.batch, _enc(c.owner), c.epoch)
        rows = [ROWS.result_row(r) for r in results]  # before the transaction: it stays short
        with (
            self.connected(f"record finished batch {c.batch} of {c.op_id!r}") as conn,
            conn.transaction() as tx,
        ):
            if not conn.execute(_FINISH_CLAIM, args).rowcount:
                tx.force_rollback = True  # taken over: nothing was written
                return False
            if rows:
                upsert_results(conn, rows)
        return True

    def reopen_failed(self, op_id: str, group: str) -> None:
        """Make the batches finished with ``failed=True`` claimable again (a new run)."""
        self.run(f"reopen failed batches of {op_id!r}", _REOPEN, (_enc(op_id), _enc(group)))

    def release(self, op_id: str, group: str, owner: str) -> None:
        """Give back ``owner``'s unfinished claims in ``group`` (so others take them at once)."""
        args = (_enc(op_id), _enc(group), _enc(owner))
        self.run(f"release batches of {op_id!r}", _RELEASE, args)

    def left(self, op_id: str, group: str) -> tuple[int, float | None]:
        """Unfinished batches of ``group`` and the seconds until one can be claimed.

        The seconds: until the soonest lease on an unfinished batch runs out, on the server's
        clock (0 if one is free now, or none is left; None if the group has no claim rows).
        """
        with self.connected(f"count the batches left of {op_id!r}") as conn:
            rows = conn.execute(_BATCHES_LEFT, (_enc(op_id), _enc(group))).fetchall()
        left, total, free, soonest = rows[0]
        if not total:
            return 0, None
        if free or not left or soonest is None:
            return int(left), 0.0
        return int(left), max(0.0, float(soonest))

    def holders(self, op_id: str, group: str) -> list[str]:
        """The owners holding unfinished claims of ``group``."""
        args = (_enc(op_id), _enc(group))
        rows = self.fetch(f"read claims of {op_id!r}", _HOLDERS, args)
        return [_dec(row[0]) for row in rows]

    def renew(self, owner: str) -> None:
        """Extend the lease of every unfinished claim ``owner`` holds (the heartbeat)."""
        self.run("renew batch claims", _RENEW, (self.lease, _enc(owner)))
