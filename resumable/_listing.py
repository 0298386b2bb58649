"""What ``resumable list`` and ``resumable show`` read: operations and their good checkpoints.

Each is a function over a :class:`~resumable.stores.base.Store`; the effective state of an
operation is :func:`~resumable._explain.effective_state`'s, never decided here.

``list`` shows blocks and hides the records of ``@resumable`` calls unless asked
(:func:`is_call`); an operation whose runs ran a ``cp.map`` shows its items done / total
(:mod:`resumable._map_records`), counted only for the operations it shows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._explain import effective_state
from ._map_records import Items, count_items, map_totals, set_aside
from ._time import iso_time
from .operation import CheckpointRecord, OperationRecord, ProcessState

if TYPE_CHECKING:
    from .stores.base import Store

__all__ = ["Listing", "Summary", "describe", "is_call", "listing", "summaries"]


def is_call(op: OperationRecord) -> bool:
    """Whether ``op`` is the record of a ``@resumable`` call, not of a block.

    Every record a call writes names its function in ``meta["function"]``: the first one
    (``_run_call.first_record``), and the COMPLETED one with its result (``Call.finish``);
    no block writes that key. A RUNNING or FAILED call record of an earlier version, which
    had no meta yet, counts as a block until the call completes.
    """
    return "function" in op.meta


@dataclass(frozen=True, slots=True)
class Summary:
    """One operation as ``resumable list`` shows it."""

    op: OperationRecord
    #: The newest checkpoint that passed its checksum.
    checkpoint: CheckpointRecord | None
    #: Seqs of newer checkpoints that failed theirs (passed over).
    corrupt: tuple[int, ...]
    #: Whether the operation record passed its checksum.
    record_ok: bool
    #: Its maps' items, if its runs ran a ``cp.map`` (see :func:`listing`; None otherwise).
    items: Items | None = None

    @property
    def state(self) -> ProcessState:
        """The effective state (see :func:`~resumable._explain.effective_state`)."""
        return effective_state(self.op, self.checkpoint)

    @property
    def call(self) -> bool:
        """Whether it is a ``@resumable`` call's record (one that fails its checksum: never)."""
        return self.record_ok and is_call(self.op)

    @property
    def progress(self) -> float | None:
        """Its maps' items done / total, else its checkpoint's progress (None: neither)."""
        if self.items is not None:
            return self.items.fraction
        return self.checkpoint.progress if self.checkpoint else None

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the shape ``resumable list --json`` prints)."""
        op, ckpt, items = self.op, self.checkpoint, self.items
        return {
            "op_id": op.op_id,
            "name": op.name,
            "call": self.call,
            "state": self.state.value,
            "position": ckpt.position if ckpt else 0,
            "progress": self.progress or 0.0,
            "items": items.as_json() if items else None,
            "attempts": op.attempts,
            "created": iso_time(op.created),
            "updated": iso_time(op.updated),
            "error": op.error,
            "owner": op.owner.to_json() if op.owner else None,
            "checkpoint_seq": ckpt.seq if ckpt else None,
            "corrupt_checkpoints": list(self.corrupt),
            "record_ok": self.record_ok,
        }


def summaries(store: Store, states: Iterable[ProcessState] = (), prefix: str = "") -> list[Summary]:
    """Every operation with a record, its newest good checkpoint, and what failed a checksum.

    Every record and every newest checkpoint is verified on the way; a corrupt newest
    checkpoint is passed over for the one before it, as a run would. ``states`` keeps only
    operations in those (effective) states; ``prefix`` only those whose op id starts with it.
    """
    wanted = frozenset(states)
    ops, heads = store.operations_and_heads()
    found = []
    for op in ops:
        if prefix and not op.op_id.startswith(prefix):
            continue
        head = heads.get(op.op_id)
        ckpt: CheckpointRecord | None = None
        corrupt: tuple[int, ...] = ()
        if head is not None:
            if head.op_id == op.op_id and head.verify():
                ckpt = head
            else:
                ckpt, corrupt = store.find_good_checkpoint(op.op_id)
        summary = Summary(op, ckpt, corrupt, op.verify())
        if not wanted or summary.state in wanted:
            found.append(summary)
    return found


@dataclass(frozen=True, slots=True)
class Listing:
    """What ``resumable list`` shows, and what it leaves out."""

    #: The operations shown, in op id order.
    shown: list[Summary]
    #: Call records matching the filters, left out (none with ``calls=True``).
    hidden_calls: int
    #: Operations matching the filters, left out by ``limit`` (the least recently updated).
    not_shown: int
    #: Op ids of the matching operations with a bad record or a corrupt newer checkpoint,
    #: shown or not (``limit`` does not hide damage).
    damaged: list[str]


def listing(
    store: Store,
    *,
    prefix: str = "",
    states: Iterable[ProcessState] = (),
    calls: bool = False,
    limit: int | None = None,
) -> Listing:
    """The operations ``resumable list`` shows: blocks, and calls with ``calls``.

    ``prefix`` and ``states`` keep those whose op id starts with ``prefix``, in those
    states. ``limit`` keeps the ``limit`` operations updated last (the UPDATED column),
    shown in op id order as always. The items of the maps of those shown are counted here
    (one count per map of an unfinished operation; none for the others).
    """
    kept: list[Summary] = []
    hidden = 0
    for summary in summaries(store, states, prefix):
        if not calls and summary.call:
            hidden += 1
        else:
            kept.append(summary)
    damaged = [s.op.op_id for s in kept if not s.record_ok or s.corrupt]
    not_shown = 0
    if limit is not None and len(kept) > limit:
        newest = sorted(range(len(kept)), key=lambda i: kept[i].op.updated, reverse=True)
        not_shown = len(kept) - limit
        kept = [kept[i] for i in sorted(newest[:limit])]
    # Only a record that names maps can have items (the check inline: 10,000 rows).
    shown = [_with_items(store, s) if "maps" in s.op.meta else s for s in kept]
    return Listing(shown, hidden, not_shown, damaged)


def _with_items(store: Store, summary: Summary) -> Summary:
    """``summary`` with its maps' items, if its record names maps (and passed its checksum)."""
    if not summary.record_ok:
        return summary
    items = _items(store, summary.op.op_id, map_totals(summary.op), summary.state)
    return summary if items is None else dataclasses.replace(summary, items=items)


def _items(store: Store, op_id: str, totals: dict[int, int], state: ProcessState) -> Items | None:
    """The items of maps ``totals`` (see :func:`map_totals`), in effective state ``state``."""
    if not totals:
        return None
    return count_items(store, op_id, totals, completed=state is ProcessState.COMPLETED)


def _without_payload(ckpt: CheckpointRecord) -> CheckpointRecord:
    return dataclasses.replace(ckpt, payload=b"")


def describe(store: Store, op_id: str) -> dict[str, Any] | None:
    """Everything about one operation, and its next run's decision; None if it has no record.

    The shape ``resumable show --json`` prints (docs/cli.md).

    Raises:
        CheckpointCorrupt: the operation record fails its checksum.
    """
    from ._explain import explain

    op = store.load_operation(op_id)
    if op is None:
        return None
    decision = explain(store, op_id)
    with store.errors(f"read checkpoints of {op_id!r}"):
        checkpoints = [  # kept without payloads: one in memory at a time, however large
            (_without_payload(c), c.op_id == op_id and c.verify())
            for c in store.iter_checkpoints(op_id)
        ]
    good = next((c for c, ok in checkpoints if ok), None)
    state = effective_state(op, good)
    totals = map_totals(op)
    items = _items(store, op_id, totals, state)
    return {
        "op_id": op.op_id,
        "name": op.name,
        "call": is_call(op),
        "state": state.value,
        "record_state": op.state.value,
        "position": decision.position,
        "progress": items.fraction if items else good.progress if good else 0.0,
        "items": items.as_json() if items else None,
        "failed_items": set_aside(store, op_id, list(totals)),
        "attempts": op.attempts,
        "owner": op.owner.to_json() if op.owner else None,
        "owner_alive": op.owner.is_alive() if op.owner else False,
        "error": op.error,
        "created": iso_time(op.created),
        "updated": iso_time(op.updated),
        "heartbeat": iso_time(op.heartbeat),
        "results": store.record_counts(op_id)["results"],
        "checkpoints": [
            {
                "seq": c.seq,
                "position": c.position,
                "progress": c.progress,
                "state": c.state.value,
                "timestamp": iso_time(c.timestamp),
                "ok": ok,
            }
            for c, ok in checkpoints
        ],
        "decision": {
            "action": decision.action,
            "reason": decision.reason,
            "position": decision.position,
            "corrupt": list(decision.corrupt),
        },
    }
