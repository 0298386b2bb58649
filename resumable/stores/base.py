"""The store protocol: where operations, checkpoints and results live.

A store subclass implements a few raw reads and atomic writes; this base class holds what
every store shares: checksum verification, falling back past corrupt checkpoints, and the
translation of driver errors into :class:`~resumable.errors.StoreError`.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

from resumable._log import log
from resumable._signing import signature_hint
from resumable.errors import CheckpointCorrupt, StoreError
from resumable.locks import Lock
from resumable.operation import (
    CheckpointRecord,
    OperationRecord,
    ResultRecord,
)

if TYPE_CHECKING:  # claims load with the first shared map, not with every store
    from ._claims import Claims


__all__ = [
    "DEFAULT_HEARTBEAT",
    "DEFAULT_HISTORY",
    "DEFAULT_LEASE",
    "Durability",
    "Store",
    "Stored",
    "Swept",
]

Durability = Literal["normal", "full"]

#: How many checkpoints per operation a store keeps by default: the newest, plus older good
#: ones to fall back to if the newest is found corrupt.
DEFAULT_HISTORY = 3

#: Seconds a lease (on an operation, or on a claimed batch of a shared map) lasts unless its
#: holder renews it, and how often a live holder renews it. A holder paused for longer than
#: the lease loses it to the next process that asks.
DEFAULT_LEASE = 10.0
DEFAULT_HEARTBEAT = 2.0


def check_lease(lease: object, heartbeat: object = None) -> tuple[float, float]:
    """Validated ``(lease, heartbeat)`` seconds: heartbeat at most half the lease.

    Without a heartbeat: :data:`DEFAULT_HEARTBEAT`, or a quarter of a shorter lease.
    """
    if heartbeat is None and isinstance(lease, int | float) and not isinstance(lease, bool):
        heartbeat = min(DEFAULT_HEARTBEAT, lease / 4)
    for name, value in (("lease", lease), ("heartbeat", heartbeat)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise ValueError(f"store option {name} must be a number of seconds > 0, not {value!r}")
    lease_s, beat_s = float(lease), float(heartbeat)  # type: ignore[arg-type] # checked above
    if beat_s * 2 > lease_s:
        raise ValueError(
            f"heartbeat={beat_s:g} must be at most half of lease={lease_s:g}, so that a live "
            "holder renews its lease before it runs out"
        )
    return lease_s, beat_s


@dataclass(frozen=True, slots=True)
class Stored:
    """One stored record, as :meth:`Store.scan_records` finds it (unverified)."""

    #: The operation it belongs to ("" if that cannot be told: an unreadable file).
    op_id: str
    #: Which record it is, in words: ``record``, ``checkpoint seq 4``, ``result 'step:x'``.
    what: str
    #: The record; None if it could not even be parsed.
    record: OperationRecord | CheckpointRecord | ResultRecord | None
    #: What is wrong beyond the record's own checks, in words ("" if nothing): a file the
    #: store refused to read, a checkpoint stored under another seq than its own.
    problem: str = ""

    def ok(self) -> bool:
        """Whether the record was parsed, passes its checksum and belongs to ``op_id``.

        And the store saw nothing else wrong with it (``problem``).
        """
        rec = self.record
        return rec is not None and not self.problem and rec.op_id == self.op_id and rec.verify()


@dataclass(frozen=True, slots=True)
class Swept:
    """A leftover of a crash that :meth:`Store.sweep` removed (or would remove)."""

    what: str  # e.g. a path relative to the store's root
    age: float  # seconds since it last changed


class Store(ABC):
    """Base class of every store.

    Args:
        durability: ``"normal"`` (a commit survives a process crash) or ``"full"`` (a commit
            that returned survives power loss).
        history: how many checkpoints to keep per operation (at least 1).
    """

    #: URL schemes this store answers to.
    schemes: ClassVar[tuple[str, ...]] = ()
    #: Errors of the underlying driver that mean "the store could not be read or written".
    driver_errors: ClassVar[tuple[type[BaseException], ...]] = (OSError,)

    def __init__(
        self, *, durability: Durability = "normal", history: int = DEFAULT_HISTORY
    ) -> None:
        if durability not in ("normal", "full"):
            raise ValueError(f"durability must be 'normal' or 'full', not {durability!r}")
        if not isinstance(history, int) or isinstance(history, bool) or history < 1:
            raise ValueError(f"history must be a whole number >= 1, not {history!r}")
        self.durability: Durability = durability
        self.history = history
        self.url = ""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url}>"

    # --- what a store implements -------------------------------------------------------

    @abstractmethod
    def get_operation(self, op_id: str) -> OperationRecord | None:
        """The stored operation record, unverified, or None."""

    @abstractmethod
    def list_operations(self) -> Iterator[OperationRecord]:
        """Every operation record, unverified."""

    def save(
        self,
        op: OperationRecord,
        checkpoint: CheckpointRecord | None = None,
        results: Sequence[ResultRecord] = (),
    ) -> None:
        """Write ``op``, ``checkpoint`` and ``results`` together: all of it or none of it.

        The SQL stores write them in one transaction. This default, for stores that write
        each record atomically on its own (files, memory), writes the results, then the
        checkpoint, then the operation record (:meth:`put_operation`): a crash between them
        leaves newer results or a newer checkpoint beside an older operation record, which
        readers resolve by trusting the checkpoint's state.
        """
        self.put_results(results)
        if checkpoint is not None:
            self.add_checkpoint(checkpoint)
        self.put_operation(op)

    def put_operation(self, op: OperationRecord) -> None:
        """Write the operation record ``op`` atomically (the last step of the default save)."""
        raise NotImplementedError(f"{type(self).__name__} implements save() itself")

    @abstractmethod
    def add_checkpoint(self, checkpoint: CheckpointRecord) -> None:
        """Append ``checkpoint`` atomically, keeping the newest ``history`` of its operation."""

    @abstractmethod
    def iter_checkpoints(self, op_id: str) -> Iterator[CheckpointRecord]:
        """The operation's stored checkpoints, newest first, unverified."""

    @abstractmethod
    def put_results(self, results: Sequence[ResultRecord]) -> None:
        """Store ``results`` (one group commit), replacing those with the same keys."""

    @abstractmethod
    def get_result(self, op_id: str, key: str) -> ResultRecord | None:
        """The stored result, unverified, or None."""

    @abstractmethod
    def iter_results(self, op_id: str, prefix: str) -> Iterator[ResultRecord]:
        """The operation's results whose key starts with ``prefix``, unverified."""

    @abstractmethod
    def delete_operation(self, op_id: str) -> bool:
        """Remove the operation, its checkpoints and results; True if it existed."""

    @abstractmethod
    def lock(self, op_id: str) -> Lock:
        """A lock object for ``op_id`` (not yet acquired)."""

    # --- sharing one operation among processes (checkpointed(shared=True)) ----------------
    #
    # Batches of a shared map claimed under leases: see resumable.stores._claims. A store that
    # several processes can share answers these calls with its claims(); the others raise.

    #: True if several processes may share one operation (claims under leases).
    shares: ClassVar[bool] = False
    #: Seconds a claim lasts without renewal, and how often its holder renews it.
    lease: float = DEFAULT_LEASE
    heartbeat: float = DEFAULT_HEARTBEAT

    def claims(self) -> Claims:
        """The store's batch claims (see :mod:`resumable.stores._claims`).

        Raises:
            ValueError: the store cannot be shared by several processes.
        """
        raise self.cannot_share()

    def cannot_share(self) -> ValueError:
        """The error for a shared operation on this store, when it does not share."""
        return ValueError(
            f"{self.url}: this store cannot be shared by several processes at once; use "
            "sqlite:///path.db (one machine) or postgresql://... (many machines) with "
            "shared=True"
        )

    def claim_batches(
        self, op_id: str, group: str, batches: int, want: int, owner: str
    ) -> list[tuple[int, int]]:
        """Claim up to ``want`` unfinished batches of ``group`` for ``owner``.

        Creates the group's ``batches`` claim rows on first use. A batch can be claimed if
        no one holds it or its holder's lease has run out. Returns ``(batch, epoch)`` pairs
        in batch order; empty if nothing is free now.
        """
        return self.claims().claim(op_id, group, batches, want, owner)

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
        failed and were set aside (``on_error="skip"``): done for this run, reopened by
        :meth:`reopen_failed` in the next. Returns False, having written nothing, if the
        claim was taken over.
        """
        from ._claims import Claim

        claim = Claim(op_id, group, batch, epoch, owner)
        return self.claims().finish(claim, results, failed=failed)

    def reopen_failed(self, op_id: str, group: str) -> None:
        """Make the batches finished with ``failed=True`` claimable again (a new run)."""
        self.claims().reopen_failed(op_id, group)

    def release_batches(self, op_id: str, group: str, owner: str) -> None:
        """Give back ``owner``'s unfinished claims in ``group`` (so others take them at once)."""
        self.claims().release(op_id, group, owner)

    def batches_left(self, op_id: str, group: str) -> tuple[int, float | None]:
        """Unfinished batches of ``group`` and the seconds until one can be claimed.

        The seconds: until the soonest lease on an unfinished batch runs out (0 if one is
        free now; None if the group has no claim rows yet).
        """
        return self.claims().left(op_id, group)

    def claim_holders(self, op_id: str, group: str) -> list[str]:
        """The owners holding unfinished claims of ``group`` (expired or not)."""
        return self.claims().holders(op_id, group)

    def renew_claims(self, owner: str) -> None:
        """Extend the lease of every unfinished claim ``owner`` holds (the heartbeat)."""
        self.claims().renew(owner)

    # --- store-wide reads and upkeep (the command line: list, verify, stats, gc) ----------
    #
    # Defaults built on the methods above; stores override them where one query does it.

    def stored_op_ids(self) -> list[str]:
        """Every op id the store holds anything of (record, checkpoints, results, claims).

        Sorted. Includes operations whose record is gone, where the store can find them; the
        default knows only those with a record.
        """
        with self.errors("list operations"):
            return sorted({op.op_id for op in self.list_operations()})

    def checkpoint_heads(self) -> dict[str, CheckpointRecord]:
        """The newest stored checkpoint of each operation that has one, unverified, by op id."""
        found: dict[str, CheckpointRecord] = {}
        with self.errors("read checkpoints"):
            for op_id in self.stored_op_ids():
                newest = next(iter(self.iter_checkpoints(op_id)), None)
                if newest is not None:
                    found[op_id] = newest
        return found

    def operations_and_heads(self) -> tuple[list[OperationRecord], dict[str, CheckpointRecord]]:
        """:meth:`list_operations` and :meth:`checkpoint_heads`, for ``resumable list``.

        A store that can read both in one pass over its operations overrides this.
        """
        with self.errors("list operations"):
            ops = list(self.list_operations())
        return ops, self.checkpoint_heads()

    def record_counts(self, op_id: str | None = None) -> dict[str, int]:
        """How many ``operations``, ``checkpoints`` and ``results`` are stored.

        Of ``op_id`` only, if given. The default reads every record; stores count instead.
        """
        counts = {"operations": 0, "checkpoints": 0, "results": 0}
        with self.errors("count records"):
            for one in [op_id] if op_id is not None else self.stored_op_ids():
                counts["operations"] += self.get_operation(one) is not None
                counts["checkpoints"] += sum(1 for _ in self.iter_checkpoints(one))
                counts["results"] += sum(1 for _ in self.iter_results(one, ""))
        return counts

    def count_results(self, op_id: str, prefix: str) -> dict[str, int]:
        """How many results of ``op_id`` have a key that starts with ``prefix``, by serializer.

        Unverified. The default reads each such result; the SQL stores count in one query
        that reads no payload.
        """
        counts: dict[str, int] = {}
        with self.errors(f"count results of {op_id!r}"):
            for rec in self.iter_results(op_id, prefix):
                counts[rec.serializer] = counts.get(rec.serializer, 0) + 1
        return counts

    def results_with_serializer(
        self, op_id: str, prefix: str, serializer: str
    ) -> list[ResultRecord]:
        """The results of ``op_id`` under ``prefix`` written by ``serializer``, unverified.

        The default reads every result under ``prefix``; the SQL stores read only those.
        """
        with self.errors(f"read results of {op_id!r}"):
            return [r for r in self.iter_results(op_id, prefix) if r.serializer == serializer]

    def scan_records(self) -> Iterator[Stored]:
        """Every stored record, unverified, operation by operation (orphans included)."""
        for op_id in self.stored_op_ids():
            with self.errors(f"read operation {op_id!r}"):
                op = self.get_operation(op_id)
                checkpoints = list(self.iter_checkpoints(op_id))
            if op is not None:
                yield Stored(op_id, "record", op)
            for ckpt in checkpoints:
                yield Stored(op_id, f"checkpoint seq {ckpt.seq}", ckpt)
            with self.errors(f"read results of {op_id!r}"):
                results = list(self.iter_results(op_id, ""))
            for result in results:
                yield Stored(op_id, f"result {result.key!r}", result)

    def sweep(self, older_than: float, *, dry_run: bool = False) -> list[Swept]:
        """Remove leftovers of crashes (temp files) last changed before ``older_than``.

        ``older_than`` is a time in seconds since the epoch. Returns what was removed (with
        ``dry_run``: what would be). Stores that leave no such files remove nothing.
        """
        del older_than, dry_run
        return []

    def close(self) -> None:  # noqa: B027 - optional hook; most stores hold nothing to close
        """Release connections and handles."""

    # --- shared logic ---------------------------------------------------------------------

    @contextlib.contextmanager
    def errors(self, doing: str) -> Iterator[None]:
        """Turn driver errors raised inside the block into StoreError.

        A StoreError raised inside (an UnsafePath naming the file and what to do) goes through
        as it is: it is an OSError too, but already says everything.
        """
        try:
            yield
        except StoreError:
            raise
        except self.driver_errors as exc:
            raise self.store_error(doing, exc) from exc

    def store_error(self, doing: str, exc: BaseException) -> StoreError | CheckpointCorrupt:
        """The StoreError for a driver error ``exc`` raised while ``doing`` something.

        A store whose driver reports damaged bytes (SQLite's "database disk image is
        malformed") returns CheckpointCorrupt instead.
        """
        # Only what was seen: the store answered with an error. Whether an earlier write
        # survived is not known here (decoding a stored record never ends up here: that is
        # CheckpointCorrupt, or a fallback to an older checkpoint).
        if isinstance(exc, StoreError):  # the library's own refusal: it says what to do
            return StoreError(f"{self.url}: could not {doing}: {exc}")
        return StoreError(
            f"{self.url}: could not {doing}: {exc}. Fix the cause (disk space, permissions, "
            "a server that is down) and run again"
        )

    def record_name(self, op_id: str, seq: int | None = None) -> str:
        """The stored record of ``op_id`` in words: its operation record, or checkpoint ``seq``.

        For messages about a damaged record; stores that can say where it lies add that.
        """
        if seq is None:
            return f"the record of operation {op_id!r}"
        return f"checkpoint seq {seq} of operation {op_id!r}"

    def load_operation(self, op_id: str) -> OperationRecord | None:
        """The operation record, verified.

        Raises:
            CheckpointCorrupt: the record fails its checksum or cannot be decoded.
        """
        with self.errors(f"read operation {op_id!r}"):
            op = self.get_operation(op_id)
        if op is not None and not (op.op_id == op_id and op.verify()):
            hint = signature_hint(op.checksum)
            raise CheckpointCorrupt(
                f"{self.url}: {self.record_name(op_id)} cannot be decoded or failed its "
                "checksum; nothing was loaded. "
                + (
                    hint
                    or "Reset the operation (resumable reset OP) to start it over, or restore "
                    "the store from a backup"
                )
            )
        return op

    def latest_checkpoint(self, op_id: str) -> CheckpointRecord | None:
        """The newest checkpoint that passes its checksum, falling back past corrupt ones.

        Raises:
            CheckpointCorrupt: checkpoints exist but none is good.
        """
        rec, bad = self.find_good_checkpoint(op_id)
        if rec is None and bad:
            with self.errors(f"read checkpoints of {op_id!r}"):
                newest = next(iter(self.iter_checkpoints(op_id)), None)
            hint = signature_hint(newest.checksum) if newest is not None else ""
            del newest
            raise CheckpointCorrupt(
                f"{self.url}: every stored checkpoint of {op_id!r} cannot be decoded or failed "
                f"its checksum ({'; '.join(self.record_name(op_id, seq) for seq in bad)}); "
                "nothing was loaded. "
                + (
                    hint
                    or "Reset the operation to start it over, or restore the store from a backup"
                )
            )
        if bad and rec is not None:
            log.warning(
                "resumable.checkpoint.fallback", op_id=op_id, corrupt_seqs=list(bad),
                using_seq=rec.seq,
            )  # fmt: skip
        return rec

    def find_good_checkpoint(self, op_id: str) -> tuple[CheckpointRecord | None, tuple[int, ...]]:
        """The newest checkpoint that passes its checksum, and the seqs of newer failed ones.

        The checkpoint is None if none passes; nothing is raised for corrupt records. Reads
        lazily, newest first: an older checkpoint is read only if every newer one failed, so
        re-entering an operation with a large state holds one payload, not its history.
        """
        bad: list[int] = []
        with self.errors(f"read checkpoints of {op_id!r}"):
            found = self.iter_checkpoints(op_id)
            try:
                while (rec := next(found, None)) is not None:
                    if rec.op_id == op_id and rec.verify():
                        return rec, tuple(bad)
                    bad.append(rec.seq)
                    rec = None  # drop its payload before the next one is read
            finally:
                close = getattr(found, "close", None)
                if close is not None:
                    close()
        return None, tuple(bad)

    def put_result(self, result: ResultRecord) -> None:
        """Store one result."""
        self.put_results((result,))

    def load_results(self, op_id: str, prefix: str) -> dict[str, ResultRecord]:
        """Results under ``prefix`` that pass their checksum, by key (corrupt ones logged)."""
        with self.errors(f"read results of {op_id!r}"):
            records = list(self.iter_results(op_id, prefix))
        good: dict[str, ResultRecord] = {}
        for rec in records:
            if rec.verify() and rec.op_id == op_id and rec.key.startswith(prefix):
                good[rec.key] = rec
            else:
                log.warning("resumable.result.corrupt", op_id=op_id, key=rec.key)
        return good

    def known_absent(self, op_id: str) -> bool:
        """True if ``op_id`` is known to have no record without reading it; False if unsure.

        A store that can prove the database unchanged since a read found no record answers
        from that (SQLite); the others always say False, and the caller reads.
        """
        del op_id
        return False

    def load_result(self, op_id: str, key: str) -> ResultRecord | None:
        """A stored result that passes its checksum; None if missing or corrupt (logged)."""
        try:  # the hit path of every @resumable call: no context manager, no message
            rec = self.get_result(op_id, key)
        except StoreError:
            raise  # already says everything (see errors())
        except self.driver_errors as exc:
            raise self.store_error(f"read result {key!r} of {op_id!r}", exc) from exc
        if rec is not None and not (rec.verify() and rec.op_id == op_id and rec.key == key):
            log.warning("resumable.result.corrupt", op_id=op_id, key=key)
            return None
        return rec
