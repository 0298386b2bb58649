"""``resumable gc``: remove what no run can need, from a store and a backup directory.

The policy is :func:`collect_garbage`'s docstring (and docs/cli.md).
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._log import log
from .errors import OperationLocked
from .operation import ProcessState

if TYPE_CHECKING:
    from .stores.base import Store

__all__ = ["GcItem", "collect_garbage"]

#: Result keys of finished ``@resumable`` calls: returned as hits even without a record.
_CALL_RESULT = "return:"


@dataclass(frozen=True, slots=True)
class GcItem:
    """Something gc removed (or would remove), or kept and why."""

    kind: str  # "temp-file", "orphan", "completed" or "backup-stray"
    what: str  # a path, an op id, a file name
    age: float | None  # seconds since it last changed (None: unknown)
    note: str  # what it is, or why it was kept

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        age = None if self.age is None else round(self.age, 1)
        return {"kind": self.kind, "what": self.what, "age_seconds": age, "note": self.note}


def collect_garbage(
    store: Store | None,
    backup_dir: Path | None,
    *,
    min_age: float,
    completed_older_than: float | None = None,
    dry_run: bool = False,
) -> tuple[list[GcItem], list[GcItem]]:
    """Remove what no run can need; return ``(removed, kept)``.

    The policy (docs/cli.md): temp files of interrupted writes and folders of interrupted
    deletes (file store) last changed ``min_age`` seconds ago or more; checkpoints, results
    and claims whose operation record is gone, the newest of them ``min_age`` old, except
    stored ``@resumable`` results (a finished call, returned without its record); copies in
    ``backup_dir`` that no manifest commits, while no backup is being made; and, only if
    ``completed_older_than`` (seconds) is given, COMPLETED operations not updated for that
    long. Operations are removed under their lock: one running now is kept. With
    ``dry_run`` nothing is removed or locked.
    """
    gc = _Collector(time.time(), min_age, dry_run)
    if store is not None:
        gc.removed += [
            GcItem("temp-file", swept.what, swept.age, "left by a crash")
            for swept in store.sweep(gc.now - min_age, dry_run=dry_run)
        ]
        gc.orphans(store)
        if completed_older_than is not None:
            gc.old_completed(store, completed_older_than)
    if backup_dir is not None:
        gc.backup_strays(backup_dir)
    log.debug("resumable.gc.done", removed=len(gc.removed), kept=len(gc.kept), dry_run=dry_run)
    return gc.removed, gc.kept


@dataclass(slots=True)
class _Collector:
    now: float
    min_age: float
    dry_run: bool
    removed: list[GcItem] = field(default_factory=list)
    kept: list[GcItem] = field(default_factory=list)

    def remove_operation(self, store: Store, op_id: str) -> str | None:
        """Delete ``op_id`` under its lock; None, or why it was kept."""
        if self.dry_run:
            return None
        lock = store.lock(op_id)
        try:
            lock.acquire(None)
        except OperationLocked:
            return "its lock is held: a process runs it now"
        try:
            with store.errors(f"delete operation {op_id!r}"):
                store.delete_operation(op_id)
        finally:
            lock.release()
        return None

    def orphans(self, store: Store) -> None:
        """Operations whose record is gone: their checkpoints, results and claims."""
        with store.errors("list operations"):
            with_record = {op.op_id for op in store.list_operations()}
        for op_id in store.stored_op_ids():
            if op_id in with_record:
                continue
            with store.errors(f"read operation {op_id!r}"):
                # A record that is there but was not listed (the file store refused or could
                # not parse it) is not gone: verify names it, reset removes it.
                unreadable = store.record_counts(op_id)["operations"] > 0
                times = [c.timestamp for c in store.iter_checkpoints(op_id)]
                results = list(store.iter_results(op_id, ""))
            times += [r.created for r in results]
            # Claims alone carry no time; a shared operation writes its record before it
            # claims anything, so they belong to no run.
            age = self.now - max(times) if times else None
            why: str | None
            if unreadable:
                why = "its operation record cannot be read: resumable verify names it"
            elif any(r.key.startswith(_CALL_RESULT) for r in results):
                why = "a finished @resumable call's result: calls still return it; reset removes it"
            elif age is not None and age < self.min_age:
                why = "younger than --min-age"
            else:
                why = self.remove_operation(store, op_id)
            if why is None:
                note = "checkpoints, results or claims without an operation record"
                self.removed.append(GcItem("orphan", op_id, age, note))
            else:
                self.kept.append(GcItem("orphan", op_id, age, why))

    def old_completed(self, store: Store, older_than: float) -> None:
        """COMPLETED operations not updated for ``older_than`` seconds."""
        with store.errors("list operations"):
            ops = list(store.list_operations())
        for op in ops:
            age = self.now - op.updated
            if op.state is not ProcessState.COMPLETED or age < older_than:
                continue
            why = "record failed its checksum" if not op.verify() else None
            why = why or self.remove_operation(store, op.op_id)
            if why is None:
                note = "completed; a new run starts over"
                self.removed.append(GcItem("completed", op.op_id, age, note))
            else:
                self.kept.append(GcItem("completed", op.op_id, age, why))

    def backup_strays(self, backup_dir: Path) -> None:
        """Copies no manifest commits, and temp files, while no backup is being made."""
        from . import _fs
        from .backup import _manifest

        try:  # never through a symlink; yours or root's, not writable by others
            os.close(_fs.open_dir(backup_dir))
        except (FileNotFoundError, NotADirectoryError):
            return
        strays = _manifest.strays(_fs.list_names(backup_dir))
        if not strays:
            return
        note = "a copy without a manifest, or a temp file: not a backup"
        if self.dry_run:
            self.removed += [self._stray(backup_dir, name, note) for name in strays]
            return
        # Creators hold this lock shared while they copy; alone, no backup is being made.
        with _fs.locked(backup_dir / _manifest.LOCK, exclusive=True, wait=False) as alone:
            if not alone:
                why = "a backup is being made now"
                self.kept += [self._stray(backup_dir, name, why) for name in strays]
                return
            for name in _manifest.strays(_fs.list_names(backup_dir)):
                found = self._stray(backup_dir, name, note)
                try:  # unlink: a link goes, never what it points to
                    _fs.remove(backup_dir / name)
                except OSError as exc:  # a directory of that name, say: not ours to remove
                    why = f"cannot be removed ({exc.strerror or exc})"
                    self.kept.append(dataclasses.replace(found, note=why))
                else:
                    self.removed.append(found)

    def _stray(self, backup_dir: Path, name: str, note: str) -> GcItem:
        try:
            st = (backup_dir / name).lstat()
        except FileNotFoundError:
            return GcItem("backup-stray", name, None, note)
        return GcItem("backup-stray", name, self.now - max(st.st_mtime, st.st_ctime), note)
