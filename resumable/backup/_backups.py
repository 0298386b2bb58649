"""``Backups``: the public calls, their argument checks, locking, dedup and rotation.

The bytes move in ``_copy`` (in) and ``_restore`` (out); ``_manifest`` says what a backup
directory holds, ``_check`` whether a copy is whole, ``_watch`` what changed since a backup.
"""

from __future__ import annotations

import builtins
import dataclasses
import os
import stat
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from resumable import _fs, _trust
from resumable._log import log
from resumable._time import iso_time
from resumable.errors import BackupRefused

from . import _manifest
from ._check import CopyChecks
from ._copy import copy_into, digest, open_database
from ._manifest import ID_RE, LOCK, Manifest
from ._restore import destination, restore_into
from ._watch import AutoBackup, SourceState, source_state

__all__ = ["BackupInfo", "Backups"]

#: How long ``stop_auto()`` waits for the thread (a copy in progress finishes on its own).
STOP_WAIT = 0.9
#: One lock per backup directory in this process, shared by every ``Backups`` on it.
_DIR_LOCKS: dict[str, threading.RLock] = {}


@dataclasses.dataclass(frozen=True, slots=True)
class BackupInfo:
    """One backup: the specification's fields.

    Attributes:
        backup_id: Sortable, unique id: UTC time and a digest of the source path.
        source_path: The backed-up file (absolute, symlinks resolved).
        backup_path: The copy inside the backup directory.
        timestamp: When the backup was made: ISO 8601, local time with its UTC offset.
        size_bytes: Size of the copy (for a database: of the snapshot).
        checksum: xxh3-128 of the copy, hex (what ``xxhsum -H2`` prints).
    """

    backup_id: str
    source_path: str
    backup_path: str
    timestamp: str
    size_bytes: int
    checksum: str


def _str_arg(value: object, name: str) -> str:
    """``value`` as a non-empty str path, or a TypeError/ValueError."""
    if not isinstance(value, str | os.PathLike):
        raise TypeError(f"{name} must be a path (str or os.PathLike), not {type(value).__name__}")
    raw = os.fspath(value)
    if not isinstance(raw, str):
        raise TypeError(f"{name} must be a str path, not bytes; decode it first")
    if not raw:
        raise ValueError(f"{name} is empty; pass the path of a file")
    return raw


def _path_arg(value: object, name: str) -> Path:
    """``value`` as an absolute path with symlinks resolved, or a TypeError/ValueError."""
    return Path(os.path.realpath(_str_arg(value, name)))


def _source_arg(value: object, name: str) -> Path:
    """A file to back up: its real path, through no other user's symlink (it is restored there).

    Raises:
        UnsafePath: a symlink on the way, or the file's own name, is another user's link.
    """
    return _trust.resolve_file(Path(_str_arg(value, name)))


class Backups:
    """Backups of files into one directory, ``max_backups`` kept per source.

    Args:
        backup_dir: Where backups are kept; created (0700) on the first backup. It and the
            directories above it must be yours or root's and not writable by others (see
            docs/backups.md, "Trust"); a symlink on the way is followed only if you or root
            made it.
        max_backups: Backups kept per source; older ones are removed after each new backup,
            never the newest one that verifies.
        durable: fsync every file and directory change, so a backup survives power loss.
    """

    def __init__(
        self,
        backup_dir: str | os.PathLike[str] = "data/backups",
        *,
        max_backups: int = 5,
        durable: bool = True,
    ) -> None:
        self.dir = _trust.resolve_dir(Path(_str_arg(backup_dir, "backup_dir")))
        if isinstance(max_backups, bool) or not isinstance(max_backups, int):
            raise TypeError(f"max_backups must be an int, not {type(max_backups).__name__}")
        if max_backups < 1:
            raise ValueError(f"max_backups must be at least 1, not {max_backups}")
        if not isinstance(durable, bool):
            raise TypeError(f"durable must be True or False, not {durable!r}")
        self.max_backups = max_backups
        self.durable = durable
        self._lock = _DIR_LOCKS.setdefault(str(self.dir), threading.RLock())
        self._copies = CopyChecks(self.dir)
        self._auto: AutoBackup | None = None

    def _info(self, m: Manifest) -> BackupInfo:
        return BackupInfo(
            m.backup_id,
            m.source_path,
            str(self.dir / m.data_file),
            m.timestamp,
            m.size_bytes,
            m.checksum,
        )

    # --- creating -----------------------------------------------------------------------------

    def create(self, path: str | os.PathLike[str]) -> BackupInfo:
        """Back up the file at ``path``; an unchanged file returns its newest backup.

        Raises:
            FileNotFoundError: ``path`` does not exist.
            ValueError: ``path`` is a directory or not a regular file.
            UnsafePath: ``path`` is reached through another user's symlink (a StoreError),
                or the backup directory is unsafe (see docs/security.md).
        """
        source = _source_arg(path, "path")
        try:
            st = source.stat()
        except FileNotFoundError:
            raise FileNotFoundError(
                f"cannot back up {os.fspath(path)!r}: no such file; check the path"
            ) from None
        if stat.S_ISDIR(st.st_mode):
            raise ValueError(
                f"cannot back up {source}: it is a directory; back up files, not directories "
                "(pass each file)"
            )
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"cannot back up {source}: not a regular file")
        with self._lock:
            _fs.makedirs(self.dir)
            self._clean_strays()
            with _fs.locked(self.dir / LOCK, exclusive=False):
                return self._create(source, st)

    def _create(self, source: Path, st: os.stat_result) -> BackupInfo:
        started = time.perf_counter()
        state = source_state(source)  # before any read: a change during the copy shows later
        history = _manifest.scan(self.dir, str(source))
        db = open_database(source, st.st_size)
        try:
            same = self._unchanged(source, state, history, database=db is not None)
            if same is not None:
                log.debug("resumable.backup.unchanged", backup_id=same.backup_id)
                self._rotate(str(source))  # one that failed after an earlier backup
                return self._info(same)
            newest = history[0].backup_id if history else None
            backup_id, when = _manifest.new_id(self.dir, source, newest)
            data = self.dir / _manifest.data_name(source, backup_id)
            tmp = _fs.temp_path(data)
            try:
                copied = copy_into(source, tmp, db, durable=self.durable)
                _fs.replace(tmp, data, durable=self.durable)
            except BaseException:
                _fs.remove(tmp)
                raise
        finally:
            if db is not None:
                db.close()  # copy_into closed it already; closing twice is harmless
        m = Manifest(
            backup_id=backup_id,
            source_path=str(source),
            data_file=data.name,
            timestamp=iso_time(when),
            size_bytes=copied.size,
            checksum=copied.checksum,
            kind=copied.kind,
            mode=st.st_mode & 0o7777,
            state=state,
            source_digest=copied.source_digest,
        )
        try:
            _manifest.write(self.dir, m, durable=self.durable)  # the commit point
        except BaseException:
            # The manifest may be in place already (its directory fsync failed): never leave
            # a listed backup without its data.
            _fs.remove(self.dir / f"{backup_id}.json")
            _fs.remove(data)
            raise
        self._copies.remember(backup_id, data)
        log.debug(
            "resumable.backup.created",
            backup_id=backup_id,
            source=str(source),
            kind=copied.kind,
            size_bytes=copied.size,
            seconds=round(time.perf_counter() - started, 4),
        )
        self._rotate(str(source))
        return self._info(m)

    def _unchanged(
        self, source: Path, state: SourceState, history: builtins.list[Manifest], *, database: bool
    ) -> Manifest | None:
        """The newest good backup if ``source`` has not changed since it was made."""
        for m in history:
            if m.state.files != state.files:
                return None
            if not self._copies.is_good(m):
                continue  # damaged: the one before it decides
            if database:  # never read raw (see _copy): a non-racy size and mtime decide
                return None if m.state.racy else m
            return m if digest(source) == m.source_digest else None
        return None

    # --- reading and checking -----------------------------------------------------------------

    def _get(self, backup_id: object) -> Manifest:
        """The checked manifest of ``backup_id``.

        Raises:
            ValueError: there is no such backup.
            BackupRefused: its manifest cannot be read or trusted (a ValueError too).
        """
        if not isinstance(backup_id, str):
            raise TypeError(f"backup_id must be a str, not {type(backup_id).__name__}")
        try:
            if ID_RE.fullmatch(backup_id):
                return _manifest.read(self.dir, backup_id)
        except FileNotFoundError:
            pass
        raise ValueError(f"no backup {backup_id!r} in {self.dir}; list() shows the backups there")

    def verify(self, backup_id: str) -> bool:
        """Whether backup ``backup_id`` is whole: its copy hashes to its checksum.

        Raises:
            ValueError: there is no backup ``backup_id``.
            BackupRefused: its manifest cannot be read or trusted (a ValueError too).
        """
        return self._copies.check(self._get(backup_id)) is None

    def list(self, source_path: str | os.PathLike[str] | None = None) -> builtins.list[BackupInfo]:
        """The backups (of ``source_path`` only, if given), newest first."""
        source = None if source_path is None else str(_path_arg(source_path, "source_path"))
        return [self._info(m) for m in _manifest.scan(self.dir, source)]

    def statistics(self) -> dict[str, Any]:
        """Counts, total size in MiB, sources, and the auto-backup thread's status."""
        found = _manifest.scan(self.dir)
        auto = self._auto
        return {
            "total": len(found),
            "total_size_mb": sum(m.size_bytes for m in found) / (1024 * 1024),
            "sources": len({m.source_path for m in found}),
            "auto_backup": {
                "running": self.auto_running,
                "interval": auto.interval if auto else 0.0,
                "paths": [str(p) for p in auto.paths] if auto else [],
                "last_error": auto.last_error if auto else None,
            },
        }

    # --- restoring ----------------------------------------------------------------------------

    def restore(self, backup_id: str, restore_path: str | os.PathLike[str] | None = None) -> str:
        """Put backup ``backup_id`` at ``restore_path`` (default: its source); return that path.

        The manifest is checked first (its signature with a secret set, else its owner), and
        the copy is verified before anything at the destination changes. A database backup
        restored over a database is written into it through SQLite (its online backup API),
        so programs that have it open see one switch and go on with the restored content;
        SQLite rolls it back if it fails. Any other file is swapped in atomically (a temp file
        beside it, renamed over it), the current one kept aside (a hard link) until the swap
        has succeeded. An existing directory as ``restore_path`` receives the file under the
        source's name. A symlink at the destination is never followed: it is refused.
        Permission bits only are applied (never setuid, setgid or sticky).

        Raises:
            ValueError: no backup ``backup_id``, its manifest is refused (``BackupRefused``:
                unsigned, forged, another user's, damaged), or its copy is corrupt; nothing
                changed.
            UnsafePath: the destination is a symlink, not a regular file, a hard link or
                another user's file, or a directory on its way is unsafe (a ``StoreError``
                and ``PermissionError``); nothing changed.
            ResumableError: the destination is a database that another program kept locked
                for 60 s, or that SQLite failed to write; the message says whether it changed.
        """
        m = self._get(backup_id)
        target = m.source_path if restore_path is None else _str_arg(restore_path, "restore_path")
        started = time.perf_counter()
        with self._lock:
            dest, current = destination(Path(target), Path(m.source_path).name)
            # The current file's permissions stay; never more than permission bits.
            mode = (m.mode if current is None else current.st_mode) & 0o777
            how = restore_into(
                self.dir / m.data_file,
                dest,
                current,
                checksum=m.checksum,
                backup_id=m.backup_id,
                mode=mode,
                durable=self.durable,
            )
        log.info(
            "resumable.backup.restored",
            backup_id=m.backup_id,
            path=str(dest),
            how=how,
            seconds=round(time.perf_counter() - started, 4),
        )
        return str(dest)

    # --- removing -----------------------------------------------------------------------------

    def delete(self, backup_id: str) -> bool:
        """Remove backup ``backup_id``; False if there is no such backup.

        A backup whose manifest is refused loses its manifest only (never trusted to name
        its copy); the copy is then a leftover, removed by the next backup or ``gc``.
        """
        if not isinstance(backup_id, str) or not ID_RE.fullmatch(backup_id):
            return False
        with self._lock:
            try:
                m = _manifest.read(self.dir, backup_id)
            except FileNotFoundError:
                return False
            except BackupRefused as exc:
                _fs.remove(Path(exc.path))
                log.debug("resumable.backup.deleted", backup_id=backup_id, refused=exc.reason)
                return True
            self._remove([m])
        log.debug("resumable.backup.deleted", backup_id=backup_id)
        return True

    def _remove(self, gone: Iterable[Manifest]) -> None:
        for m in gone:  # the manifest first: a crash in between leaves a stray copy, no backup
            _fs.remove(self.dir / f"{m.backup_id}.json")
            _fs.remove(self.dir / m.data_file)
            self._copies.forget(m.backup_id)
        if self.durable:
            _fs.fsync_dir(self.dir)

    def _rotate(self, source: str) -> None:
        history = _manifest.scan(self.dir, source)
        if len(history) <= self.max_backups:
            return
        keep = {m.backup_id for m in history[: self.max_backups]}
        newest_good = next((m for m in history if self._copies.is_good(m)), None)
        if newest_good is not None:
            keep.add(newest_good.backup_id)
        gone = [m for m in history if m.backup_id not in keep]
        self._remove(gone)
        log.debug("resumable.backup.rotated", source=source, removed=[m.backup_id for m in gone])

    def _clean_strays(self) -> None:
        """Remove temp files and uncommitted copies, unless another creator is at work."""
        with _fs.locked(self.dir / LOCK, exclusive=True, wait=False) as alone:
            if not alone:
                return
            stray = []
            for name in _manifest.strays(_fs.list_names(self.dir)):
                try:  # unlink: a link goes, never what it points to
                    _fs.remove(self.dir / name)
                except OSError as exc:  # a directory of that name, say: not ours to remove
                    log.warning("resumable.backup.stray_kept", file=name, error=repr(exc))
                else:
                    stray.append(name)
        if stray:
            log.debug("resumable.backup.strays_removed", files=stray)

    # --- automatic backups --------------------------------------------------------------------

    def start_auto(self, paths: Iterable[str | os.PathLike[str]], interval: float) -> None:
        """Back up each of ``paths`` that changed, now and every ``interval`` seconds.

        Runs in a daemon thread; a running one is stopped first. Errors (a missing file, a
        full disk) are logged and the thread goes on.
        """
        if isinstance(paths, str | bytes | os.PathLike) or not isinstance(paths, Iterable):
            raise TypeError("paths must be a list of file paths, e.g. ['data/app.db']")
        targets = tuple(dict.fromkeys(_source_arg(p, "each path") for p in paths))
        if not targets:
            raise ValueError("paths is empty; pass the files to back up")
        for target in targets:
            if target.is_dir():
                raise ValueError(f"{target} is a directory; back up files, not directories")
        if isinstance(interval, bool) or not isinstance(interval, int | float):
            raise TypeError(f"interval must be a number of seconds, not {type(interval).__name__}")
        if not interval > 0:
            raise ValueError(f"interval must be a positive number of seconds, not {interval}")
        self.stop_auto()
        self._auto = AutoBackup(self.create, targets, float(interval))
        self._auto.start()
        log.debug(
            "resumable.backup.auto_started", paths=[str(t) for t in targets], interval=interval
        )

    def stop_auto(self) -> None:
        """Stop the auto-backup thread; returns within a second (a copy in progress finishes)."""
        if self._auto is not None and self._auto.running:
            self._auto.stop(STOP_WAIT)
            log.debug("resumable.backup.auto_stopped")

    @property
    def auto_running(self) -> bool:
        """Whether the auto-backup thread runs."""
        return self._auto is not None and self._auto.running
