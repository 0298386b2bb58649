"""Operation leases of the PostgreSQL store: one runner per operation across machines.

One runner per operation is a **lease**: a row of ``leases`` with an owner token, an epoch that
grows by one at every takeover, and an expiry on the *server's* clock (participants run on
several machines). A daemon thread renews this process's leases; a holder paused for longer
than the lease (SIGSTOP, a cut network) loses it to the next process that asks. Every write of
an operation this process holds is **fenced** (:meth:`LeasedStore.fence`,
:meth:`LeasedStore.check_fence`): it happens only if the lease row still has this process's
owner and epoch, checked in the same statement with the row locked ``FOR SHARE``, so a paused
holder that wakes up after a takeover writes nothing and raises
:class:`~resumable.errors.LeaseLost`.
"""

# ruff: noqa: S608 - statements are built from the server clock expression; values are bound

from __future__ import annotations

import weakref
from abc import abstractmethod
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from resumable._heartbeat import Heartbeat
from resumable._log import log
from resumable._owner import Owner
from resumable.errors import LeaseLost, OperationLocked
from resumable.locks import keep_trying

from ._pg_sql import CHECK_FENCE, NOW, ROWS
from .base import Store

if TYPE_CHECKING:
    import psycopg

__all__ = ["Held", "LeaseLock", "LeasedStore"]

_enc, _dec = ROWS.enc, ROWS.dec

_TAKE_LEASE = (
    "INSERT INTO leases AS l (op_id, owner, epoch, expires) "
    "VALUES (%(op)s, %(owner)s, 1, " + NOW + " + %(lease)s) "
    "ON CONFLICT (op_id) DO UPDATE SET owner = excluded.owner, epoch = l.epoch + 1, "
    "expires = excluded.expires "
    "WHERE l.owner IS NULL OR l.expires < " + NOW + " RETURNING epoch"
)
_TAKE_DEAD_LEASE = (
    "UPDATE leases SET owner = %(owner)s, epoch = epoch + 1, expires = " + NOW + " + %(lease)s "
    "WHERE op_id = %(op)s AND owner = %(dead)s RETURNING epoch"
)
_RENEW_LEASES = (
    "UPDATE leases SET expires = " + NOW + " + %s WHERE owner = %s RETURNING op_id, epoch"
)
_GIVE_BACK_LEASE = (
    "UPDATE leases SET owner = NULL, expires = 0 WHERE op_id = %s AND owner = %s AND epoch = %s"
)


@dataclass(slots=True)
class Held:
    """A lease this store holds: its epoch, and whether the heartbeat found it taken over."""

    key: str  # the encoded op id
    epoch: int
    lost: bool = False


class LeasedStore(Store):
    """A store whose operations are locked by leases in PostgreSQL (the base of PostgresStore).

    The store provides its connections (:meth:`connection`) and says whether this process
    opened them (:meth:`ours`); this class holds, renews, fences and gives back the leases.
    """

    #: The schema of the store's tables (names the heartbeat thread).
    schema: str

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._token = ""
        self._held: dict[str, Held] = {}
        self._beat: Heartbeat | None = None

    @abstractmethod
    def connection(self) -> AbstractContextManager[psycopg.Connection[Any]]:
        """A connection of this process's pool, for one block."""

    @abstractmethod
    def ours(self) -> bool:
        """Whether this process opened the store's connections (not a child that forked)."""

    def new_process(self, *, forked: bool) -> None:
        """Take this process's owner token, before its first connection.

        A forked child forgets the parent's leases: they are not its own.
        """
        if forked:
            self._held = {}
            self._beat = None
        self._token = _enc(Owner.current().token())

    def lock(self, op_id: str) -> LeaseLock:
        """The operation's lease (not yet taken), see :class:`LeaseLock`."""
        return LeaseLock(self, op_id)

    def take_lease(self, op_id: str) -> int | None:
        """Take the lease of ``op_id``; its new epoch, or None if another holder lives.

        Taken if free, expired, or held by a process that died on this host.
        """
        key = _enc(op_id)
        with self.errors(f"take the lease of operation {op_id!r}"), self.connection() as conn:
            # (Asked after the connection: a forked child's first one forgets the parent's.)
            if op_id in self._held:
                return None  # another block of this process holds it
            row = conn.execute(
                _TAKE_LEASE, {"op": key, "owner": self._token, "lease": self.lease}
            ).fetchone()
            if row is None:
                row = self._take_from_dead(conn, op_id, key)
        if row is None:
            return None
        epoch = int(row[0])
        self._held[op_id] = Held(key, epoch)
        self.start_heartbeat()
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

    def lease_holder(self, op_id: str) -> str:
        """Who holds the lease of ``op_id``, in words."""
        try:
            with self.connection() as conn:
                query = "SELECT owner FROM leases WHERE op_id = %s"
                rows = conn.execute(query, (_enc(op_id),)).fetchall()
        except self.driver_errors:
            rows = []
        owner = _dec(rows[0][0]) if rows and rows[0][0] else ""
        if owner == self._token:
            return "another block in this process"
        holder = Owner.from_token(owner)
        return f"process {holder.pid} on {holder.host}" if holder else "another process"

    def give_back(self, op_id: str, epoch: int) -> None:
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
            if self.ours():
                with self.connection() as conn:
                    conn.execute(_GIVE_BACK_LEASE, (held.key, self._token, epoch))
        except self.driver_errors as exc:
            log.warning(
                "resumable.lease.release_failed", op_id=op_id, store=self.url,
                error=self.scrub(repr(exc)),
            )  # fmt: skip

    @abstractmethod
    def scrub(self, text: str) -> str:
        """``text`` with any secret of the store's URL masked."""

    def start_heartbeat(self) -> None:
        """Renew this process's leases in a daemon thread (started once)."""
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

    def stop_heartbeat(self) -> None:
        """Stop renewing leases (close(); they run out unless the store is used again)."""
        beat, self._beat = self._beat, None
        if beat is not None and self.ours():
            beat.stop()

    def _renew_leases(self) -> None:
        """Extend this process's leases; mark those another process took over as lost."""
        if not self._held or not self.ours():
            return
        before = dict(self._held)
        with self.connection() as conn:
            rows = conn.execute(_RENEW_LEASES, (self.lease, self._token)).fetchall()
        alive = {(key, epoch) for key, epoch in rows}
        for op_id, held in before.items():
            lost = (held.key, held.epoch) not in alive and not held.lost
            if lost and self._held.get(op_id) is held:
                self.lost(op_id, held)

    # --- fencing the writes of a held operation -------------------------------------------

    def fence(self, op_id: str) -> Held | None:
        """The lease this process holds on ``op_id`` (None: writes are not fenced).

        Raises:
            LeaseLost: the heartbeat already found the lease taken over.
        """
        held = self._held.get(op_id)
        if held is not None and held.lost:
            raise LeaseLost(op_id)
        return held

    def fence_args(self, held: Held) -> tuple[str, str, int]:
        """The arguments of the fence statements (``_pg_sql.FENCE``) for ``held``."""
        return held.key, self._token, held.epoch

    def lost(self, op_id: str, held: Held) -> LeaseLost:
        """Mark ``held`` lost; the error to raise.

        Logged once: the heartbeat and a write may both find it.
        """
        if not held.lost:
            held.lost = True
            log.warning("resumable.lease.lost", op_id=op_id, epoch=held.epoch, store=self.url)
        return LeaseLost(op_id)

    def check_fence(self, conn: psycopg.Connection[Any], op_id: str, held: Held | None) -> None:
        """Inside a transaction: lock our lease row FOR SHARE, or raise LeaseLost."""
        if held is None:
            return
        if conn.execute(CHECK_FENCE, self.fence_args(held)).fetchone() is None:
            raise self.lost(op_id, held)


class LeaseLock:
    """The lease of one operation in a :class:`PostgresStore`: one holder across machines.

    Taking it upserts the operation's ``leases`` row: it is taken if free or expired (on the
    server's clock), with a new epoch. While held, the store's heartbeat renews it; every
    write of the operation from this process is fenced on the epoch.
    """

    def __init__(self, store: LeasedStore, op_id: str) -> None:
        self.store = store
        self.op_id = op_id
        self._epoch: int | None = None

    def _take(self) -> bool:
        self._epoch = self.store.take_lease(self.op_id)
        return self._epoch is not None

    def acquire(self, timeout: float | None = None) -> None:
        """Take the lease; retry for up to ``timeout`` seconds (None: once).

        Raises:
            OperationLocked: another live process (or block) holds it.
            StoreError: the store could not be reached.
        """
        if self._epoch is not None:
            raise RuntimeError(f"lock for {self.op_id!r} is already held by this object")
        try:
            if keep_trying(self._take, timeout):
                return
        except BaseException:
            self.release()  # an interrupt right after taking it must give it back
            raise
        raise OperationLocked(self.op_id, self.store.lease_holder(self.op_id), timeout or 0)

    def release(self) -> None:
        """Give the lease back (no-op if not held)."""
        epoch, self._epoch = self._epoch, None
        if epoch is not None:
            self.store.give_back(self.op_id, epoch)

    @property
    def epoch(self) -> int | None:
        """The epoch this lock holds the lease at (None if not held)."""
        return self._epoch
