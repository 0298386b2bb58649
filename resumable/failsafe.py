"""The specification's ``FailsafeManager``: explicit checkpoints, resume, recovery, backups.

A facade over the same operations, records and stores as ``checkpointed``: a FailsafeManager
checkpoint is a :class:`~resumable.operation.CheckpointRecord` of an operation in a
``file://`` store under ``checkpoint_dir`` (one JSON file per checkpoint, the specification's
fields), and every state change goes through the one transition table. Backups are
:mod:`resumable.backup`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from . import _admin, _crashpoint, serializers
from ._log import log
from ._owner import Owner
from ._time import iso_time as _iso
from .backup import BackupInfo, Backups
from .errors import ResumableError
from .operation import CheckpointRecord, OperationRecord, ProcessState, validate_op_id
from .stores.base import Durability
from .stores.files import FileStore

__all__ = ["BackupInfo", "CheckpointData", "FailsafeManager", "get_failsafe_manager"]

T = TypeVar("T")


@dataclass
class CheckpointData:
    """A checkpoint, with exactly the specification's fields."""

    checkpoint_id: str
    operation_id: str
    operation_name: str
    state: ProcessState
    timestamp: str
    progress: float  # 0.0 - 1.0
    data: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)


class FailsafeManager:
    """Checkpoints, resume, crash recovery and backups, as the specification describes.

    Args:
        checkpoint_dir: where checkpoints live (JSON files, created if missing).
        backup_dir: where backups live.
        auto_backup_interval: seconds between automatic backups.
        max_checkpoints: checkpoints kept per operation (older ones are removed).
        max_backups: backups kept per source file.
        durability: ``"full"`` (default: a saved checkpoint survives power loss) or
            ``"normal"``.
        serializer: how ``data`` is stored (default ``"json"``, readable in the files).
    """

    def __init__(
        self,
        checkpoint_dir: str | Path = "data/checkpoints",
        backup_dir: str | Path = "data/backups",
        auto_backup_interval: float = 300,
        max_checkpoints: int = 10,
        max_backups: int = 5,
        *,
        durability: Durability = "full",
        serializer: str | serializers.Serializer = "json",
    ) -> None:
        for name, value in (("max_checkpoints", max_checkpoints), ("max_backups", max_backups)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a whole number >= 1, not {value!r}")
        if isinstance(auto_backup_interval, bool) or not isinstance(
            auto_backup_interval, int | float
        ):
            raise TypeError(f"auto_backup_interval must be seconds, not {auto_backup_interval!r}")
        if auto_backup_interval <= 0:
            raise ValueError(f"auto_backup_interval must be > 0, not {auto_backup_interval!r}")
        self.checkpoint_dir = Path(checkpoint_dir)
        self.backup_dir = Path(backup_dir)
        self.auto_backup_interval = float(auto_backup_interval)
        self.max_checkpoints = max_checkpoints
        self.max_backups = max_backups
        self._serializer = serializers.get_serializer(serializer)
        self.store = FileStore(self.checkpoint_dir, durability=durability, history=max_checkpoints)
        self.backups = Backups(self.backup_dir, max_backups=max_backups)
        self._cache: dict[str, CheckpointData] = {}  # checkpoint_id -> data (the spec's cache)
        self._seqs: dict[str, int] = {}  # op id -> newest checkpoint seq written here
        self._guard = threading.RLock()

    def __repr__(self) -> str:
        return f"<FailsafeManager checkpoints={self.checkpoint_dir} backups={self.backup_dir}>"

    # --- checkpoints ------------------------------------------------------------------------

    def save_checkpoint(  # noqa: PLR0917 - the specification's signature, positional allowed
        self,
        operation_id: str,
        operation_name: str,
        state: ProcessState,
        progress: float,
        data: Mapping[str, Any],
        metadata: Mapping[str, Any] | None = None,
    ) -> str:
        """Save a checkpoint of ``operation_id``; return its checkpoint id.

        Raises:
            TypeError, ValueError: a bad argument (progress outside [0, 1], a state that is
                not a ProcessState, data that is not a dict).
            SerializationError: ``data`` cannot be stored by the serializer (JSON by default);
                the message names the field.
            InvalidTransition: a state change the transition table forbids.
            StoreError: the checkpoint could not be written; the previous one is intact.
        """
        validate_op_id(operation_id)
        if not isinstance(operation_name, str):
            raise TypeError(f"operation_name must be a str, not {type(operation_name).__name__}")
        state = _as_state(state)
        if isinstance(progress, bool) or not isinstance(progress, int | float):
            raise TypeError(f"progress must be a number from 0.0 to 1.0, not {progress!r}")
        if not 0.0 <= progress <= 1.0:
            raise ValueError(f"progress must be from 0.0 to 1.0, not {progress!r}")
        if not isinstance(data, Mapping):
            raise TypeError(f"data must be a dict, not {type(data).__name__}")
        if metadata is not None and not isinstance(metadata, Mapping):
            raise TypeError(f"metadata must be a dict or None, not {type(metadata).__name__}")
        ser, payload = serializers.encode(self._serializer, dict(data), "data")
        meta = dict(metadata or {})
        serializers.encode(serializers.get_serializer("json"), meta, "metadata")  # JSON-only
        with self._guard:
            before = self.store.load_operation(operation_id)
            op = self._next_op(before, operation_id, operation_name, state)
            # Another manager (or process) may have saved since: the files have the last word.
            seq = max(self._seqs.get(operation_id, 0), self.store.last_seq(operation_id)) + 1
            rec = CheckpointRecord.create(
                operation_id, seq, 0, state, float(progress), ser, payload, meta
            )
            if _crashpoint.ARMED:
                _crashpoint.reached("before", "failsafe", operation_id)
            if op is before:  # same state, name and owner: the checkpoint file alone
                self.store.add_checkpoint(rec)
            else:
                self.store.save(op, rec)
            if _crashpoint.ARMED:
                _crashpoint.reached("after", "failsafe", operation_id)
            self._seqs[operation_id] = seq
            checkpoint = self._to_data(rec, operation_name, dict(data))
            self._remember(checkpoint)
        log.debug(
            "resumable.failsafe.checkpoint_saved", op_id=operation_id, state=state.value,
            progress=progress, checkpoint_id=rec.checkpoint_id,
        )  # fmt: skip
        return rec.checkpoint_id

    def _next_op(
        self, op: OperationRecord | None, op_id: str, name: str, state: ProcessState
    ) -> OperationRecord:
        owner, now = Owner.current(), time.time()
        if op is None:
            return OperationRecord.new(op_id, name, state, owner=owner, heartbeat=now, attempts=1)
        if op.state is state:
            if op.name == name and op.owner == owner:
                return op  # nothing to record but the checkpoint (its time is the heartbeat)
            return op.with_changes(name=name, owner=owner, heartbeat=now)
        if op.state is ProcessState.COMPLETED:  # a new run of a finished operation
            op = op.to(ProcessState.INITIALIZED, attempts=op.attempts + 1)
        return op.to(state, name=name, owner=owner, heartbeat=now)

    def _to_data(self, rec: CheckpointRecord, name: str, data: Any = None) -> CheckpointData:
        if data is None:
            data = serializers.decode(rec.serializer, rec.payload)
        return CheckpointData(
            rec.checkpoint_id, rec.op_id, name, rec.state, _iso(rec.timestamp), rec.progress,
            data, dict(rec.metadata),
        )  # fmt: skip

    def _remember(self, checkpoint: CheckpointData) -> None:
        self._cache[checkpoint.checkpoint_id] = checkpoint
        mine = [k for k, v in self._cache.items() if v.operation_id == checkpoint.operation_id]
        for stale in mine[: -self.max_checkpoints]:
            del self._cache[stale]

    def load_checkpoint(self, checkpoint_id: str) -> CheckpointData | None:
        """The checkpoint with this id, or None if there is none.

        Raises:
            CheckpointCorrupt: it exists but failed its checksum (never loaded as good data).
        """
        if not isinstance(checkpoint_id, str):
            raise TypeError(f"checkpoint_id must be a str, not {type(checkpoint_id).__name__}")
        with self._guard:
            cached = self._cache.get(checkpoint_id)
            if cached is not None:
                return cached
            rec = self.store.checkpoint_by_id(checkpoint_id)
            if rec is None:
                return None
            op = self.store.load_operation(rec.op_id)
            checkpoint = self._to_data(rec, op.name if op else rec.op_id)
            self._remember(checkpoint)
            return checkpoint

    def latest_checkpoint(self, operation_id: str) -> CheckpointData | None:
        """The newest good checkpoint of an operation, or None."""
        rec = self.store.latest_checkpoint(validate_op_id(operation_id))
        if rec is None:
            return None
        op = self.store.load_operation(operation_id)
        return self._to_data(rec, op.name if op else operation_id)

    # --- resume -----------------------------------------------------------------------------

    def can_resume(self, operation_id: str) -> bool:
        """True if the operation has a checkpoint and has not completed."""
        op = self.store.load_operation(validate_op_id(operation_id))
        if op is None or op.state is ProcessState.COMPLETED:
            return False
        return self.store.latest_checkpoint(operation_id) is not None

    def resume_operation(self, operation_id: str, callback: Callable[[CheckpointData], T]) -> T:
        """Resume an operation from its newest checkpoint by calling ``callback`` with it.

        The operation is RECOVERING while the callback runs; if the callback raises, it is
        FAILED and the error re-raised; if it returns and left the operation RECOVERING (saved
        no other state), it is COMPLETED.

        Raises:
            ValueError: nothing to resume (no such operation, no checkpoint, or completed).
        """
        if not callable(callback):
            raise TypeError(f"callback must be callable, not {callback!r}")
        if not self.can_resume(operation_id):
            raise ValueError(
                f"operation {operation_id!r} cannot be resumed (unknown, without a checkpoint, "
                "or completed); check can_resume() first"
            )
        checkpoint = self.latest_checkpoint(operation_id)
        assert checkpoint is not None  # noqa: S101 - can_resume said so
        self._mark(operation_id, ProcessState.RECOVERING)
        log.info("resumable.failsafe.resuming", op_id=operation_id, progress=checkpoint.progress)
        try:
            result = callback(checkpoint)
        except BaseException as exc:
            self._mark(operation_id, ProcessState.FAILED, error=serializers.error_text(exc))
            raise
        op = self.store.load_operation(operation_id)
        if op is not None and op.state is ProcessState.RECOVERING:
            latest = self.latest_checkpoint(operation_id)
            self.save_checkpoint(
                operation_id, op.name, ProcessState.COMPLETED, 1.0,
                latest.data if latest else {}, latest.metadata if latest else None,
            )  # fmt: skip
        return result

    def _mark(self, op_id: str, state: ProcessState, error: str | None = None) -> None:
        with self._guard:
            op = self.store.load_operation(op_id)
            if op is None:
                raise ResumableError(f"operation {op_id!r} disappeared from {self.store.url}")
            changes: dict[str, Any] = {"owner": Owner.current(), "heartbeat": time.time()}
            if error is not None:
                changes["error"] = error
            self.store.save(op.to(state, **changes))

    # --- crash recovery ---------------------------------------------------------------------

    def get_recoverable_operations(self) -> list[dict[str, Any]]:
        """Unfinished operations that can be recovered, newest first.

        Each is a dict with ``operation_id``, ``operation_name``, ``state``, ``progress``,
        ``checkpoint_id``, ``timestamp``, ``strategy`` (``"resume"``, ``"retry"`` or
        ``"restart"``), ``owner`` and ``owner_alive``. A RUNNING or RECOVERING operation whose
        owner (host, pid and process start time) is still alive is not listed: it is running.
        (The same as ``resumable recover`` on this manager's store.)
        """
        return _admin.recoverable_operations(self.store)

    # --- backups ----------------------------------------------------------------------------

    def create_backup(self, path: str | Path) -> BackupInfo:
        """Back up a file; FileNotFoundError if it does not exist."""
        return self.backups.create(path)

    def restore_backup(self, backup_id: str, restore_path: str | Path | None = None) -> str:
        """Restore a backup (to its source, or ``restore_path``); return the restored path.

        A database backup restored over a database is written into it through SQLite, so
        programs that have it open see one consistent switch (docs/backups.md).

        Raises:
            ValueError: unknown or corrupt backup, or one whose manifest is refused
                (``BackupRefused``: unsigned with a secret set, forged, another user's);
                the current file is left as it was.
            UnsafePath: the destination is a symlink, a hard link or another user's file,
                or a directory on its way is unsafe; nothing changed.
            ResumableError: the destination is an SQLite database that another program kept
                locked, or that SQLite failed to write; the message says whether it changed.
        """
        return self.backups.restore(backup_id, restore_path)

    def start_auto_backup(self, paths: Iterable[str | Path]) -> None:
        """Back up ``paths`` every ``auto_backup_interval`` seconds when they change."""
        self.backups.start_auto(paths, self.auto_backup_interval)

    def stop_auto_backup(self) -> None:
        """Stop automatic backups (returns within a second)."""
        self.backups.stop_auto()

    def list_backups(self, source_path: str | Path | None = None) -> list[BackupInfo]:
        """Backups, newest first (of one source, if given)."""
        return self.backups.list(source_path)

    def verify_backup(self, backup_id: str) -> bool:
        """True if the backup's file matches its checksum, False if it is damaged.

        Raises:
            ValueError: no backup has this id, or its manifest is refused (``BackupRefused``).
        """
        return self.backups.verify(backup_id)

    def delete_backup(self, backup_id: str) -> bool:
        """Delete a backup; True if it existed."""
        return self.backups.delete(backup_id)

    # --- statistics -------------------------------------------------------------------------

    def get_statistics(self) -> dict[str, Any]:
        """Counts of checkpoints, operations by state, and backups."""
        ops = list(self.store.list_operations())
        by_state = {s.value: 0 for s in ProcessState}
        for op in ops:
            by_state[op.state.value] += 1
        total = sum(len(self.store.checkpoint_files(op.op_id)) for op in ops)
        backups = self.backups.statistics()
        auto = dict(backups.get("auto_backup", {}))
        if not auto.get("interval"):
            auto["interval"] = self.auto_backup_interval
        return {
            "checkpoints": {
                "total": total,
                "operations": len(ops),
                "active_operations": sum(by_state[s.value] for s in _admin.ACTIVE_STATES),
                "by_state": by_state,
                "cached": len(self._cache),
            },
            "backups": backups,
            "auto_backup": auto,
        }


def _as_state(state: object) -> ProcessState:
    if isinstance(state, ProcessState):
        return state
    if isinstance(state, str):
        try:
            return ProcessState(state)
        except ValueError:
            pass
    raise TypeError(
        f"state must be a ProcessState (e.g. ProcessState.RUNNING), not {state!r}; one of "
        f"{[s.value for s in ProcessState]}"
    )


_instance: FailsafeManager | None = None
_instance_guard = threading.Lock()


def get_failsafe_manager() -> FailsafeManager:
    """The process-wide FailsafeManager (default directories), made on first use.

    The first call logs the operations it finds recoverable.
    """
    global _instance  # noqa: PLW0603 - the specification's process-wide instance
    if _instance is None:
        with _instance_guard:
            if _instance is None:
                manager = FailsafeManager()
                recoverable = manager.get_recoverable_operations()
                if recoverable:
                    log.warning(
                        "resumable.failsafe.recoverable", count=len(recoverable),
                        operations=[r["operation_id"] for r in recoverable],
                    )  # fmt: skip
                _instance = manager
    return _instance
