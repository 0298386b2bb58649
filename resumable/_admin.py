"""Store-wide work: what the command line shows and does, over any store.

Listing, recoverable operations (also the FailsafeManager's ``get_recoverable_operations``),
reset, verify, statistics and garbage collection. Each is a function over a
:class:`~resumable.stores.base.Store` (and a backup directory where backups are concerned);
``resumable/cli.py`` only parses arguments and prints what these return.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ._explain import effective_state
from ._log import log
from ._time import iso_time
from .errors import BackupRefused, OperationLocked
from .operation import CheckpointRecord, OperationRecord, ProcessState

if TYPE_CHECKING:
    from .stores.base import Store

__all__ = [
    "Bad",
    "GcItem",
    "Summary",
    "collect_garbage",
    "describe",
    "recoverable_operations",
    "reset_operation",
    "statistics",
    "store_missing",
    "summaries",
    "verify_backups",
    "verify_store",
]

_S = ProcessState
_ACTIVE = (_S.INITIALIZED, _S.RUNNING, _S.PAUSED, _S.RECOVERING)
#: Result keys of finished ``@resumable`` calls: returned as hits even without a record.
_CALL_RESULT = "return:"


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


# --- listing ------------------------------------------------------------------------------


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
    with store.errors("list operations"):
        ops = list(store.list_operations())
    heads = store.checkpoint_heads()
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
        if op.state not in _ACTIVE and op.state is not _S.FAILED:
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
    log.info("resumable.operation.reset", op_id=op_id, **counts)
    return counts if any(counts.values()) else None


# --- verify -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Bad:
    """A record or backup that failed verification."""

    kind: str  # "operation", "checkpoint", "result", "file" or "backup"
    name: str  # the op id or the backup id ("" if unknown)
    what: str  # which record, in words
    problem: str

    def as_json(self) -> dict[str, str]:
        """A JSON-ready dict."""
        return {"kind": self.kind, "name": self.name, "what": self.what, "problem": self.problem}

    def __str__(self) -> str:
        owner = f" of operation {self.name!r}" if self.kind != "backup" else ""
        if self.kind == "backup":
            return f"backup {self.name}: {self.what} {self.problem}"
        return f"{self.what}{owner}: {self.problem}"


def verify_store(store: Store) -> tuple[dict[str, int], list[Bad]]:
    """Check every operation record, every stored checkpoint and every result.

    Returns how many of each kind were checked, and the bad ones.
    """
    checked = {"operations": 0, "checkpoints": 0, "results": 0, "unreadable": 0}
    bad: list[Bad] = []
    for found in store.scan_records():
        rec = found.record
        kind = (
            "file"
            if rec is None
            else "operation"
            if isinstance(rec, OperationRecord)
            else "checkpoint"
            if isinstance(rec, CheckpointRecord)
            else "result"
        )
        checked["unreadable" if rec is None else kind + "s"] += 1
        if found.ok():
            continue
        if found.problem:
            problem = found.problem
        elif rec is None:
            problem = "cannot be parsed"
        elif not rec.verify():
            problem = "failed its checksum"
        else:
            problem = f"belongs to operation {rec.op_id!r}, not to this one"
        bad.append(Bad(kind, found.op_id, found.what, problem))
    return checked, bad


def verify_backups(backup_dir: Path) -> tuple[int, list[Bad]]:
    """Check every backup in ``backup_dir``: its manifest is trusted, its copy hashes right.

    Trusted: signed when a secret is set, else yours (see ``backup._manifest.read``).
    """
    from . import _fs
    from .backup import Backups, _manifest
    from .backup._check import CopyChecks

    backups = Backups(backup_dir)
    checked, bad = 0, []
    for name in sorted(_fs.list_names(backups.dir)):
        backup_id = name[:-5]
        if not (name.endswith(".json") and _manifest.ID_RE.fullmatch(backup_id)):
            continue
        checked += 1
        try:
            m = _manifest.read(backups.dir, backup_id)
        except FileNotFoundError:
            checked -= 1  # deleted meanwhile
            continue
        except BackupRefused as exc:
            bad.append(Bad("backup", backup_id, f"manifest {name}", f"{exc.reason}; {exc.fix}"))
            continue
        problem = CopyChecks(backups.dir).check(m)  # what is wrong, not just whether
        if problem is not None:
            bad.append(Bad("backup", backup_id, f"copy {m.data_file}", problem))
    return checked, bad


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
        "active": sum(by_state[s.value] for s in _ACTIVE),
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


# --- garbage collection -------------------------------------------------------------------


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
    log.info("resumable.gc.done", removed=len(gc.removed), kept=len(gc.kept), dry_run=dry_run)
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
            if op.state is not _S.COMPLETED or age < older_than:
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
