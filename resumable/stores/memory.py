"""``memory://``: a store that lives in this process only, for tests and notebooks."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator, Sequence
from typing import ClassVar

from resumable.locks import Lock, ThreadLock
from resumable.operation import CheckpointRecord, OperationRecord, ResultRecord

from .base import DEFAULT_HISTORY, Durability, Store

__all__ = ["MemoryStore"]

_instances = itertools.count()


class MemoryStore(Store):
    """Operations, checkpoints and results in dictionaries; gone when the process ends.

    Args:
        durability: accepted for symmetry; nothing here survives the process.
        history: checkpoints kept per operation.
    """

    schemes: ClassVar[tuple[str, ...]] = ("memory",)

    def __init__(
        self, *, durability: Durability = "normal", history: int = DEFAULT_HISTORY
    ) -> None:
        super().__init__(durability=durability, history=history)
        self.url = "memory://"
        self._scope = next(_instances)
        self._guard = threading.RLock()
        self._ops: dict[str, OperationRecord] = {}
        self._checkpoints: dict[str, list[CheckpointRecord]] = {}
        self._results: dict[tuple[str, str], ResultRecord] = {}

    def get_operation(self, op_id: str) -> OperationRecord | None:
        """The operation record, or None."""
        return self._ops.get(op_id)

    def list_operations(self) -> Iterator[OperationRecord]:
        """Every operation record, in id order."""
        with self._guard:
            return iter(sorted(self._ops.values(), key=lambda op: op.op_id))

    def iter_checkpoints(self, op_id: str) -> Iterator[CheckpointRecord]:
        """The operation's checkpoints, newest first."""
        with self._guard:
            return iter(list(self._checkpoints.get(op_id, ())))

    def get_result(self, op_id: str, key: str) -> ResultRecord | None:
        """The stored result, or None."""
        return self._results.get((op_id, key))

    def add_checkpoint(self, checkpoint: CheckpointRecord) -> None:
        """Prepend the checkpoint and trim the history."""
        with self._guard:
            kept = self._checkpoints.setdefault(checkpoint.op_id, [])
            kept.insert(0, checkpoint)
            del kept[self.history :]

    def put_operation(self, op: OperationRecord) -> None:
        """Store the operation record (after its results and checkpoint: see Store.save)."""
        with self._guard:
            self._ops[op.op_id] = op

    def put_results(self, results: Sequence[ResultRecord]) -> None:
        """Store the results."""
        with self._guard:
            for result in results:
                self._results[result.op_id, result.key] = result

    def iter_results(self, op_id: str, prefix: str) -> Iterator[ResultRecord]:
        """The operation's results whose key starts with ``prefix``."""
        with self._guard:
            found = [
                r for (o, k), r in self._results.items() if o == op_id and k.startswith(prefix)
            ]
        return iter(found)

    def delete_operation(self, op_id: str) -> bool:
        """Forget the operation, its checkpoints and results."""
        with self._guard:
            found = self._ops.pop(op_id, None) is not None
            found |= self._checkpoints.pop(op_id, None) is not None
            for key in [k for k in self._results if k[0] == op_id]:
                del self._results[key]
        return found

    def stored_op_ids(self) -> list[str]:
        """Every op id with a record, checkpoints or results, sorted."""
        with self._guard:
            ids = {*self._ops, *self._checkpoints, *(op_id for op_id, _ in self._results)}
        return sorted(ids)

    def lock(self, op_id: str) -> Lock:
        """A process-local lock."""
        return ThreadLock(self._scope, op_id)
