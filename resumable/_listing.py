"""What ``resumable list`` and ``resumable show`` read: operations and their good checkpoints.

Each is a function over a :class:`~resumable.stores.base.Store`; the effective state of an
operation is :func:`~resumable._explain.effective_state`'s, never decided here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._explain import effective_state
from ._time import iso_time
from .operation import CheckpointRecord, OperationRecord, ProcessState

if TYPE_CHECKING:
    from .stores.base import Store

__all__ = ["Summary", "describe", "summaries"]


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

    @property
    def state(self) -> ProcessState:
        """The effective state (see :func:`~resumable._explain.effective_state`)."""
        return effective_state(self.op, self.checkpoint)

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the shape ``resumable list --json`` prints)."""
        op, ckpt = self.op, self.checkpoint
        return {
            "op_id": op.op_id,
            "name": op.name,
            "state": self.state.value,
            "position": ckpt.position if ckpt else 0,
            "progress": ckpt.progress if ckpt else 0.0,
            "attempts": op.attempts,
            "created": iso_time(op.created),
            "updated": iso_time(op.updated),
            "error": op.error,
            "owner": op.owner.to_json() if op.owner else None,
            "checkpoint_seq": ckpt.seq if ckpt else None,
            "corrupt_checkpoints": list(self.corrupt),
            "record_ok": self.record_ok,
        }


def summaries(store: Store, states: Iterable[ProcessState] = ()) -> list[Summary]:
    """Every operation with a record, its newest good checkpoint, and what failed a checksum.

    Every record and every newest checkpoint is verified; a corrupt newest checkpoint is
    passed over for the one before it, as a run would. ``states`` keeps only operations
    in those (effective) states.
    """
    wanted = frozenset(states)
    ops, heads = store.operations_and_heads()
    found = []
    for op in ops:
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
    return {
        "op_id": op.op_id,
        "name": op.name,
        "state": state.value,
        "record_state": op.state.value,
        "position": decision.position,
        "progress": good.progress if good else 0.0,
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
