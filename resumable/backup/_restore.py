"""How a backup comes back: checked destinations, verified copies, the swap or the SQLite write.

A restore over a live SQLite database goes through SQLite. Swapping the file would not do:
a process that has the database open keeps writing to the old file (its descriptors point
there) while its WAL frames, found by name, get applied to the new one. Instead the verified
copy is written into the database with SQLite's online backup API: one write transaction on
the database, taken under SQLite's locks, so every connection sees the old content or the
restored one, and a failure rolls the whole restore back.

A restore never writes through a symlink (:func:`destination`): the directories on the way
are checked as a store's are, and the destination itself must be absent or a regular file of
yours or root's with one link; a symlink there is refused, not followed and not replaced.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sqlite3
import stat
from pathlib import Path

import xxhash

from resumable import _fs, _trust
from resumable._log import log
from resumable._owner import Owner
from resumable.errors import ResumableError, UnsafePath
from resumable.stores._sqlite_files import check_sidecars

from ._copy import BUSY_POLL, SQLITE_HEADER, busy_guard, open_database, snapshot

__all__ = ["CorruptBackup", "destination", "restore_into"]


def destination(target: Path, name: str) -> tuple[Path, os.stat_result | None]:
    """Where a restore to ``target`` writes, and the status of the file there now (None: none).

    The directories on the way are created (0700) or checked (:func:`_fs.makedirs`: yours or
    root's, not writable by others; a symlink on the way only if you or root made it). The
    last component is never followed: an existing directory there (or your or root's
    symlink to one) receives the file as ``name``; any other symlink is refused, as is
    anything but a regular file of yours or root's with one link.

    Raises:
        UnsafePath: see above; nothing was written (missing directories may have been made).
    """
    full = Path(os.path.normpath(Path.cwd() / target))
    st = _fs.lstat_or_none(full)
    if st is not None and stat.S_ISLNK(st.st_mode):
        with contextlib.suppress(NotADirectoryError):  # another user's link: refused, named
            real = _trust.resolve_dir(full)
            if (found := _fs.lstat_or_none(real)) is not None and stat.S_ISDIR(found.st_mode):
                full, st = real, found
    if st is not None and stat.S_ISDIR(st.st_mode):
        dest = _fs.makedirs(full) / name
    else:
        dest = _fs.makedirs(full.parent) / full.name
    # First: a killed restore's safety link would count as a second link of the file.
    _remove_dead_temps(dest)
    current = _fs.lstat_or_none(dest)
    if current is not None and stat.S_ISLNK(current.st_mode):
        raise UnsafePath(
            dest,
            "it is a symbolic link, and a restore never writes through one (nor replaces it)",
            "remove the link, or restore to another path",
        )
    if current is not None:
        _trust.check_file(dest, current, links=1 + _safety_links(dest, current))
    return dest, current


def _safety_links(dest: Path, st: os.stat_result) -> int:
    """How many of the file's other names are restores' own safety links beside ``dest``.

    A restore that failed in a process still alive (an interrupt at the wrong instant) can
    leave one; it is this file under our own temp name, not another user's.
    """
    if st.st_nlink == 1:
        return 0
    prefix = f"{dest.name}.pre-restore{_fs.TEMP_MARK}"
    found = 0
    for name in _fs.list_names(dest.parent):
        if name.startswith(prefix) and (link := _fs.lstat_or_none(dest.parent / name)) is not None:
            found += os.path.samestat(link, st)
    return found


def _settle_database(dest: Path) -> None:
    """Fold a leftover WAL or journal of the database at ``dest`` into it, or refuse.

    Left beside the restored file, it would be applied to it by the next connection.
    """
    sidecars = [dest.with_name(dest.name + s) for s in ("-wal", "-journal")]

    def pending() -> list[Path]:
        return [p for p in sidecars if (st := _fs.lstat_or_none(p)) is not None and st.st_size > 0]

    if not pending():
        return
    if _fs.lstat_or_none(dest) is not None:  # checked by destination(): a regular file of yours
        try:
            con = sqlite3.connect(f"{dest.as_uri()}?mode=rw", uri=True, timeout=1)
            try:
                con.execute("PRAGMA schema_version").fetchone()  # rolls back a hot journal
                con.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            finally:
                con.close()
        except sqlite3.Error:
            pass  # the check below says what is wrong
    left = pending()
    if left:
        raise ResumableError(
            f"cannot restore over {dest}: {left[0].name} holds changes of the current "
            "database (is it open in another program?); stop every program using it and "
            "restore again, or restore to another path"
        )


class CorruptBackup(ValueError):
    """A backup's copy does not match its checksum; nothing at the destination changed.

    A ``ValueError``, as the specification asks. :meth:`advice` words the message for the
    interface the user is in (the Python API or the command line).

    Attributes:
        backup_id: The corrupt backup.
    """

    def __init__(self, backup_id: str) -> None:
        self.backup_id = backup_id
        super().__init__(self.advice("FailsafeManager.list_backups() or Backups.list()"))

    def advice(self, lister: str) -> str:
        """The message, naming ``lister`` as what shows the other backups."""
        return (
            f"backup {self.backup_id} is corrupt (its checksum does not match); the destination "
            f"was left as it was; restore an older backup ({lister} lists them)"
        )


class _Head:
    """Hashes what a copy reads and keeps its first 16 bytes, to tell an SQLite database."""

    def __init__(self) -> None:
        self.hasher = xxhash.xxh3_128()
        self.head = b""

    def update(self, data: memoryview, /) -> None:
        if len(self.head) < len(SQLITE_HEADER):
            self.head += bytes(data[: len(SQLITE_HEADER) - len(self.head)])
        self.hasher.update(data)


def _fetch(
    data: Path, tmp: Path, *, checksum: str, backup_id: str, mode: int, durable: bool
) -> bool:
    """Copy ``data`` into the new file ``tmp``, hashed on the way; refuse a mismatch.

    Returns whether the copy is an SQLite database (by its 16-byte header).
    """
    seen = _Head()
    _fs.copy_file(data, tmp, durable=durable, hasher=seen, mode=mode, trusted=True)
    if seen.hasher.hexdigest() != checksum:
        log.error("resumable.backup.corrupt", backup_id=backup_id, path=str(data))
        raise CorruptBackup(backup_id)
    return seen.head == SQLITE_HEADER


def restore_into(
    data: Path,
    dest: Path,
    current: os.stat_result | None,
    *,
    checksum: str,
    backup_id: str,
    mode: int,
    durable: bool,
) -> str:
    """Put the backup copy ``data`` at ``dest``, verified first; return how (for the log).

    ``dest`` and ``current`` (its status, None if absent) come from :func:`destination`,
    which checked them. The copy (a regular file of yours or root's with one link) goes to
    a temp file created beside ``dest`` with the permission bits of ``mode`` and is hashed
    on the way: nothing at ``dest`` changes unless it matches ``checksum``. If the copy is
    an SQLite database and ``dest`` is one SQLite can open, the copy is written into it
    through SQLite (``"sqlite"``); otherwise the temp file replaces ``dest`` atomically
    (``"swap"``).

    Raises:
        CorruptBackup: the copy does not match ``checksum``; ``dest`` is untouched.
        UnsafePath: the copy, or a file SQLite keeps beside the database, is unsafe.
        ResumableError: ``dest`` is a database that stayed locked, or that SQLite failed to
            write; the message says whether it changed.
    """
    tmp = _fs.temp_path(dest)
    try:
        database = _fetch(
            data, tmp, checksum=checksum, backup_id=backup_id, mode=mode, durable=durable
        )
        if database:
            check_sidecars(dest)
        live = open_database(dest, current.st_size) if database and current is not None else None
    except BaseException:
        _fs.remove(tmp)
        raise
    if live is None:
        _swap_in(tmp, dest, existing=current is not None, database=database, durable=durable)
        how = "swap"
    else:
        try:
            _write_through_sqlite(tmp, live, dest, backup_id=backup_id, durable=durable)
        finally:
            live.close()
            _fs.remove(tmp)
        how = "sqlite"
    _remove_dead_temps(dest)
    return how


def _swap_in(tmp: Path, dest: Path, *, existing: bool, database: bool, durable: bool) -> None:
    """Replace ``dest`` with the verified temp file ``tmp``, atomically, rolled back on error.

    The current file (``existing``) is kept aside (a hard link, or a copy; never through a
    symlink) until ``tmp`` has replaced it; if that step fails it is put back.
    """
    safety = None
    try:
        if database:
            _settle_database(dest)
        if existing:
            safety = _fs.temp_path(dest.with_name(f"{dest.name}.pre-restore"))
            _fs.link_or_copy(dest, safety)
        try:
            _fs.replace(tmp, dest, durable=durable)
        except BaseException:
            if safety is not None:
                _fs.replace(safety, dest, durable=durable)
                _fs.remove(safety)  # still there if the swap never happened (same file)
                log.warning("resumable.backup.restore_rolled_back", path=str(dest))
            raise
    except BaseException:
        _fs.remove(tmp)
        raise
    if safety is not None:
        try:
            _fs.remove(safety)
        except OSError as exc:
            log.warning("resumable.backup.cleanup_failed", path=str(dest), error=repr(exc))


def _schema_cookie(con: sqlite3.Connection) -> int | None:
    """The database's schema cookie, which a committed backup-API write always bumps."""
    try:
        return int(con.execute("PRAGMA schema_version").fetchone()[0])
    except sqlite3.Error:
        return None


def _write_through_sqlite(
    copy: Path, live: sqlite3.Connection, dest: Path, *, backup_id: str, durable: bool
) -> None:
    """Write the verified database ``copy`` into the database ``dest`` that ``live`` opened.

    SQLite's online backup API, in one step: one write transaction on ``dest``, under its
    locks. Other connections, in this process or another, see the old content until it
    commits and the restored content after; the WAL and its index stay SQLite's own. If it
    fails, SQLite rolls the transaction back. A snapshot of the current database is kept
    aside first (``<name>.pre-restore.tmp-...``) and removed once the outcome is known; it
    stays only if a failed restore may have changed the database.
    """
    where = f"cannot restore backup {backup_id} into the database {dest}"
    locked = busy_guard(
        lambda seconds: ResumableError(
            f"{where}: it stayed locked by another program for {seconds:g} s (a "
            "write transaction that does not end, or a program paused with Ctrl-Z); the "
            "database was not changed; let that program finish or stop it, then restore again"
        )
    )
    safety = _fs.temp_path(dest.with_name(f"{dest.name}.pre-restore"))
    keep_safety = False
    # Nothing between the connect and the try: a Ctrl-C there would leave src open.
    src = sqlite3.connect(f"{copy.as_uri()}?immutable=1", uri=True)  # our temp file: no locks
    try:
        size = int(src.execute("PRAGMA page_size").fetchone()[0])
        live_size = int(live.execute("PRAGMA page_size").fetchone()[0])
        if size != live_size and live.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
            raise ResumableError(  # SQLite refuses this (SQLITE_READONLY); say why first
                f"{where}: its page size ({live_size} bytes) differs from the backup's "
                f"({size}), which SQLite cannot change in a WAL database; the database was "
                "not changed; stop every program using it, restore to another path and move "
                "that file (without the -wal and -shm files) in its place"
            )
        try:
            snapshot(live, safety, locked)
        except sqlite3.Error as exc:
            raise ResumableError(
                f"{where}: SQLite could not read it to keep a copy of its current content "
                f"({exc}); the database was not changed; stop every program using it, "
                "restore to another path and move that file in its place"
            ) from exc
        if durable:
            _fs.fsync_file(safety)
        live.execute(f"PRAGMA synchronous={'FULL' if durable else 'OFF'}")
        live.execute(f"PRAGMA busy_timeout={int(BUSY_POLL * 1000)}")  # the guard bounds it
        before = _schema_cookie(live)
        try:
            src.backup(live, pages=-1, progress=locked, sleep=BUSY_POLL)
        except BaseException as exc:
            # A commit bumps the schema cookie: unchanged, nothing was committed.
            if before is None or _schema_cookie(live) != before:
                keep_safety = True
                log.error("resumable.backup.restore_failed", path=str(dest), kept=str(safety))
                if not isinstance(exc, Exception):
                    raise
                raise ResumableError(
                    f"{where}: {exc}; the database may have changed: its content from "
                    f"before the restore is kept in {safety}"
                ) from exc
            log.warning("resumable.backup.restore_rolled_back", path=str(dest))
            if not isinstance(exc, sqlite3.Error):
                raise
            raise ResumableError(
                f"{where}: SQLite failed while writing it ({exc}) and rolled the restore "
                "back; the database was not changed; fix the cause (disk space, "
                "permissions) and restore again"
            ) from exc
    finally:
        src.close()
        if not keep_safety:
            _fs.remove(safety)


def _remove_dead_temps(dest: Path) -> None:
    """Remove the temp copies that restores killed part-way left beside ``dest``.

    They carry their writer's pid (see :func:`_fs.temp_path`); only a dead writer's are
    removed, so a restore running now in another process keeps its own. Names only (unlink
    never follows a link). A failure is logged: it must not make a restore fail.
    """
    prefixes = (f"{dest.name}{_fs.TEMP_MARK}", f"{dest.name}.pre-restore{_fs.TEMP_MARK}")
    try:
        for name in _fs.list_names(dest.parent):
            if not name.startswith(prefixes):
                continue
            pid = name.rpartition(".")[2]
            if (
                pid.isdigit()
                and int(pid) != os.getpid()
                and Owner(socket.gethostname(), int(pid), None).is_alive() is False
            ):
                _fs.remove(dest.parent / name)
    except OSError as exc:
        log.warning("resumable.backup.cleanup_failed", path=str(dest), error=repr(exc))
