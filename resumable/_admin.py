"""Store-wide work over any store: where a store is, recoverable operations, reset, statistics.

Recoverable operations are also the FailsafeManager's ``get_recoverable_operations``. The rest
of what the command line shows and does is beside this module: listing in
:mod:`resumable._listing`, verification in :mod:`resumable._verify`, garbage collection in
:mod:`resumable._gc`. Each is a function over a :class:`~resumable.stores.base.Store` (and a
backup directory where backups are concerned); ``resumable/cli/`` only parses arguments and
prints what these return.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ._log import log
from ._time import iso_time
from .operation import ProcessState

if TYPE_CHECKING:
    from .stores.base import Store

__all__ = [
    "ACTIVE_STATES",
    "backup_statistics",
    "recoverable_operations",
    "reset_operation",
    "statistics",
    "store_missing",
]

_S = ProcessState
#: The states of an operation that has not finished (neither COMPLETED nor FAILED).
ACTIVE_STATES = (_S.INITIALIZED, _S.RUNNING, _S.PAUSED, _S.RECOVERING)


def store_missing(url: str) -> str | None:
    """Why there is no store at ``url`` yet (None if there is one, or it cannot be told).

    Opening a ``sqlite:`` or ``file:`` store creates it; commands that only read must not.
    PostgreSQL stores are not checked here: the database must exist, and the store creates
    its tables in it.

    Raises:
        ValueError: ``url`` is not a store URL.
    """
    from . import stores

    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "sqlite":
        path = Path(stores.sqlite_path(url, parts.netloc, parts.path))
        missing = not path.exists()
    elif scheme == "file":
        path = Path(stores.file_path(url, parts.netloc, parts.path)) / "ops"
        missing = not path.is_dir()
    else:
        return None
    if not missing:
        return None
    return (
        f"no store at {url}: {path.absolute()} does not exist (nothing has run with this store "
        "yet); pass --store URL or set RESUMABLE_STORE"
    )


# --- recovery -----------------------------------------------------------------------------


def recoverable_operations(store: Store) -> list[dict[str, Any]]:
    """Unfinished operations that can be recovered, newest first.

    Each is a dict with ``operation_id``, ``operation_name``, ``state``, ``progress``,
    ``checkpoint_id``, ``timestamp``, ``strategy`` (``"resume"``, ``"retry"`` or
    ``"restart"``), ``error``, ``owner`` and ``owner_alive``. A RUNNING or RECOVERING
    operation whose owner (host, pid and process start time) is still alive is not listed:
    it is running. Neither is one of another host, whose owner cannot be judged.

    Raises:
        CheckpointCorrupt: every checkpoint of a listed operation failed its checksum.
    """
    found: list[dict[str, Any]] = []
    with store.errors("list operations"):
        ops = list(store.list_operations())
    for op in ops:
        if op.state not in ACTIVE_STATES and op.state is not _S.FAILED:
            continue
        if not op.verify():
            log.warning("resumable.failsafe.corrupt_operation", op_id=op.op_id)
            continue
        alive = op.owner.is_alive() if op.owner is not None else False
        running = op.state in (_S.RUNNING, _S.RECOVERING)
        if running and alive is not False:
            continue  # its owner still runs it (or runs on another host: cannot tell)
        ckpt = store.latest_checkpoint(op.op_id)
        found.append(
            {
                "operation_id": op.op_id,
                "operation_name": op.name,
                "state": op.state.value,
                "progress": ckpt.progress if ckpt else 0.0,
                "checkpoint_id": ckpt.checkpoint_id if ckpt else None,
                "timestamp": iso_time(ckpt.timestamp if ckpt else op.updated),
                "strategy": _strategy(op.state, has_checkpoint=ckpt is not None),
                "error": op.error,
                "owner": op.owner.to_json() if op.owner else None,
                "owner_alive": alive,
            }
        )
    found.sort(key=lambda d: str(d["timestamp"]), reverse=True)
    return found


def _strategy(state: ProcessState, *, has_checkpoint: bool) -> str:
    if state is _S.FAILED:
        return "retry"
    if not has_checkpoint or state is _S.INITIALIZED:
        return "restart"
    return "resume"


# --- reset --------------------------------------------------------------------------------


def reset_operation(store: Store, op_id: str) -> dict[str, int] | None:
    """Delete everything stored of ``op_id`` under its lock; what was removed, or None.

    Raises:
        OperationLocked: a live process runs the operation (nothing is removed).
    """
    lock = store.lock(op_id)
    lock.acquire(None)
    try:
        counts = store.record_counts(op_id)
        with store.errors(f"reset operation {op_id!r}"):
            store.delete_operation(op_id)
    finally:
        lock.release()
    log.debug("resumable.operation.reset", op_id=op_id, **counts)
    return counts if any(counts.values()) else None


# --- statistics ---------------------------------------------------------------------------


def statistics(store: Store) -> dict[str, Any]:
    """Operations by state, records by kind, and how many records failed their checksum."""
    by_state = {s.value: 0 for s in ProcessState}
    corrupt = 0
    with store.errors("list operations"):
        ops = list(store.list_operations())
    for op in ops:
        by_state[op.state.value] += 1
        corrupt += not op.verify()
    counts = store.record_counts()
    orphans = len(set(store.stored_op_ids()) - {op.op_id for op in ops})
    return {
        "operations": len(ops),
        "by_state": by_state,
        "active": sum(by_state[s.value] for s in ACTIVE_STATES),
        "corrupt_records": corrupt,
        "orphaned_operations": orphans,
        "checkpoints": counts["checkpoints"],
        "results": counts["results"],
    }


def backup_statistics(backup_dir: Path) -> dict[str, Any]:
    """Backups: how many, their total size in MiB, how many sources."""
    from .backup import Backups

    backups = Backups(backup_dir)
    found = backups.statistics()
    return {
        "backup_dir": str(backups.dir),
        "total": found["total"],
        "total_size_mb": found["total_size_mb"],
        "sources": found["sources"],
    }
