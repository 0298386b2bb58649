"""How the bytes of a backup move: one-pass copies, SQLite snapshots, the restore swap.

Every file operation goes through ``resumable._fs``. An SQLite database is only ever opened
through SQLite: a plain descriptor on it, once closed, would drop the POSIX locks that SQLite
connections of this process hold on the file, and another process could then write under
them.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import sqlite3
import time
from pathlib import Path

import xxhash

from . import _fs
from ._log import log
from .errors import ResumableError
from .operation import Owner

__all__ = ["SQLITE_BUSY_SECONDS", "Copied", "copy_into", "digest", "open_database", "swap_in"]

#: Longest stretch an SQLite source may stay locked by a writer before a backup gives up.
SQLITE_BUSY_SECONDS = 60.0
#: Attempts at a plain copy of a file that keeps changing while it is read.
_COPY_ATTEMPTS = 3
#: The smallest SQLite page: a file shorter than one page holds no database.
_MIN_PAGE = 512


@dataclasses.dataclass(frozen=True, slots=True)
class Copied:
    """What :func:`copy_into` wrote."""

    size: int
    checksum: str
    kind: str  # "file" or "sqlite"
    #: Digest of the source as read (plain files: equal to ``checksum``); None for a database.
    source_digest: str | None


def digest(path: Path) -> str:
    """The xxh3-128 hex digest of the file at ``path``."""
    hasher = xxhash.xxh3_128()
    _fs.hash_file(path, hasher)
    return hasher.hexdigest()


def open_database(path: Path, size: int) -> sqlite3.Connection | None:
    """A connection to ``path`` if SQLite reads it as a database (by its header), else None."""
    if size < _MIN_PAGE:
        return None  # SQLite takes a file this small (even 1 byte) for an empty database
    try:
        con = sqlite3.connect(f"{path.as_uri()}?mode=rw", uri=True, timeout=10)
    except sqlite3.Error:
        return None  # unreadable: the plain copy reports the actual error
    try:
        pages = con.execute("PRAGMA page_count").fetchone()[0]
    except sqlite3.Error as exc:
        if getattr(exc, "sqlite_errorcode", None) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
            return con  # locked by a writer: a database; the backup waits for it
        pages = 0
    if pages == 0:
        con.close()
        return None
    return con


def _snapshot(db: sqlite3.Connection, source: Path, tmp: Path) -> None:
    """Write a consistent copy of database ``db`` into the new file ``tmp``."""
    _fs.create_new(tmp)
    dest = sqlite3.connect(tmp, isolation_level=None)
    deadline = time.monotonic() + SQLITE_BUSY_SECONDS

    def progress(status: int, remaining: int, total: int) -> None:
        if status in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) and time.monotonic() > deadline:
            raise TimeoutError(
                f"{source} stayed locked by another process for {SQLITE_BUSY_SECONDS:g} s; "
                "back it up when its writer pauses"
            )

    try:
        dest.execute("PRAGMA journal_mode=OFF")  # a temp file, fsynced and renamed by the caller
        dest.execute("PRAGMA synchronous=OFF")
        db.backup(dest, pages=-1, progress=progress)  # one step: one read transaction
    finally:
        dest.close()


def _copy_plain(source: Path, tmp: Path, *, durable: bool) -> Copied:
    """Copy and hash ``source`` in one pass; again (up to 3 times) while it changes under it."""
    for attempt in range(1, _COPY_ATTEMPTS + 1):
        hasher = xxhash.xxh3_128()
        before, after = _fs.copy_file(source, tmp, durable=durable, hasher=hasher)
        if (before.st_size, before.st_mtime_ns) == (after.st_size, after.st_mtime_ns):
            break
        if attempt < _COPY_ATTEMPTS:
            _fs.remove(tmp)
            continue
        log.warning(
            "resumable.backup.source_changing",
            source=str(source),
            attempts=attempt,
            hint="the copy may mix versions; back the file up when nothing writes to it",
        )
    checksum = hasher.hexdigest()
    return Copied(tmp.stat().st_size, checksum, "file", checksum)


def copy_into(source: Path, tmp: Path, db: sqlite3.Connection | None, *, durable: bool) -> Copied:
    """Copy ``source`` into the new file ``tmp``, fsynced when ``durable``; closes ``db``.

    With a connection ``db`` to the source, the copy is an SQLite online-backup snapshot; a
    database SQLite cannot read whole is copied byte for byte instead (with a warning).
    """
    if db is None:
        return _copy_plain(source, tmp, durable=durable)
    try:
        _snapshot(db, source, tmp)
    except sqlite3.DatabaseError as exc:
        log.warning("resumable.backup.sqlite_unreadable", source=str(source), error=repr(exc))
        _fs.remove(tmp)
        db.close()
        return _copy_plain(source, tmp, durable=durable)
    finally:
        db.close()
    hasher = xxhash.xxh3_128()
    size = _fs.hash_file(tmp, hasher)
    if durable:
        _fs.fsync_file(tmp)
    return Copied(size, hasher.hexdigest(), "sqlite", None)


def _settle_database(dest: Path) -> None:
    """Fold a leftover WAL or journal of the database at ``dest`` into it, or refuse.

    Left beside the restored file, it would be applied to it by the next connection.
    """
    sidecars = [dest.with_name(dest.name + s) for s in ("-wal", "-journal")]

    def pending() -> list[Path]:
        return [p for p in sidecars if p.exists() and p.stat().st_size > 0]

    if not pending():
        return
    if dest.exists():
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
            "restore again, or pass restore_path= to restore elsewhere"
        )


def _fetch(
    data: Path, tmp: Path, *, checksum: str, backup_id: str, mode: int, durable: bool
) -> None:
    """Copy ``data`` into the new file ``tmp``, hashed on the way; refuse a mismatch."""
    hasher = xxhash.xxh3_128()
    _fs.copy_file(data, tmp, durable=durable, hasher=hasher, mode=mode)
    if hasher.hexdigest() != checksum:
        log.error("resumable.backup.corrupt", backup_id=backup_id, path=str(data))
        raise ValueError(
            f"backup {backup_id} is corrupt (its checksum does not match); the destination was "
            "left as it was; restore an older backup (see list())"
        )


def swap_in(
    data: Path,
    dest: Path,
    *,
    checksum: str,
    backup_id: str,
    database: bool,
    mode: int,
    durable: bool,
) -> None:
    """Replace ``dest`` with the backup copy ``data``, verified, atomically, rolled back on error.

    The copy goes to a temp file beside ``dest`` and is hashed on the way: nothing at
    ``dest`` changes unless it matches ``checksum``. The current file is kept aside (a hard
    link, or a copy) until the temp file has replaced it; if that step fails it is put back.

    Raises:
        ValueError: the copy does not match ``checksum``; ``dest`` is untouched.
    """
    tmp = _fs.temp_path(dest)
    safety = None
    try:
        _fetch(data, tmp, checksum=checksum, backup_id=backup_id, mode=mode, durable=durable)
        if database:
            _settle_database(dest)
        if dest.exists():
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
    # Restored. What follows is cleanup: it must not make a restore that happened fail.
    try:
        if safety is not None:
            _fs.remove(safety)
        _remove_dead_temps(dest)
    except OSError as exc:
        log.warning("resumable.backup.cleanup_failed", path=str(dest), error=repr(exc))


def _remove_dead_temps(dest: Path) -> None:
    """Remove the temp copies that restores killed part-way left beside ``dest``.

    They carry their writer's pid (see :func:`_fs.temp_path`); only a dead writer's are
    removed, so a restore running now in another process keeps its own.
    """
    prefixes = (f"{dest.name}{_fs.TEMP_MARK}", f"{dest.name}.pre-restore{_fs.TEMP_MARK}")
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
