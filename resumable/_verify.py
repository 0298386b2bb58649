"""``resumable verify``: every record of a store and every backup, checked against its checksum."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import BackupRefused
from .operation import CheckpointRecord, OperationRecord

if TYPE_CHECKING:
    from .stores.base import Store

__all__ = ["Bad", "verify_backups", "verify_store"]


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
