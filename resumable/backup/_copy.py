"""How the bytes of a backup move in: one-pass copies and SQLite snapshots.

Every file operation goes through ``resumable._fs``. An SQLite database is only ever opened
through SQLite: a plain descriptor on it, once closed, would drop the POSIX locks that SQLite
connections of this process hold on the file, and another process could then write under
them.

The SQLite pieces here (:func:`open_database`, :func:`snapshot`, :func:`busy_guard`) serve
the restore as well (``_restore``), which writes into a live database through SQLite.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import xxhash

from resumable import _fs
from resumable._log import log

__all__ = [
    "BUSY_POLL",
    "SQLITE_BUSY_SECONDS",
    "SQLITE_HEADER",
    "Copied",
    "Progress",
    "busy_guard",
    "copy_into",
    "digest",
    "open_database",
    "snapshot",
]

#: Longest stretch an SQLite database may stay locked by another process before a backup or
#: a restore of it gives up.
SQLITE_BUSY_SECONDS = 60.0
#: Every SQLite database file starts with these 16 bytes.
SQLITE_HEADER = b"SQLite format 3\x00"
#: Wait between two attempts at a database another process holds locked.
BUSY_POLL = 0.05
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


def digest(path: Path, *, trusted: bool = False) -> str:
    """The xxh3-128 hex digest of the file at ``path`` (see :func:`_fs.hash_file`)."""
    hasher = xxhash.xxh3_128()
    _fs.hash_file(path, hasher, trusted=trusted)
    return hasher.hexdigest()


def open_database(path: Path, size: int) -> sqlite3.Connection | None:
    """A connection to ``path`` if SQLite reads it as a database (by its header), else None."""
    if size < _MIN_PAGE:
        return None  # SQLite takes a file this small (even 1 byte) for an empty database
    try:
        con = sqlite3.connect(f"{path.as_uri()}?mode=rw", uri=True, timeout=10)
    except sqlite3.Error:
        return None  # unreadable: the plain copy reports the actual error
    try:  # may wait out the busy timeout (10 s) for a writer: a likely moment for Ctrl-C
        pages = con.execute("PRAGMA page_count").fetchone()[0]
    except sqlite3.Error as exc:
        if getattr(exc, "sqlite_errorcode", None) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
            return con  # locked by a writer: a database; the backup waits for it
        pages = 0
    except BaseException:
        con.close()  # the caller never got the connection to close
        raise
    if pages == 0:
        con.close()
        return None
    return con


Progress = Callable[[int, int, int], object]


def busy_guard(error: Callable[[float], BaseException]) -> Progress:
    """A backup ``progress`` callback: raises ``error(seconds)`` once SQLite has been busy too long.

    Too long is :data:`SQLITE_BUSY_SECONDS` (the ``seconds`` handed to ``error`` for its
    message); the backup API itself would retry forever.
    """
    seconds = SQLITE_BUSY_SECONDS
    deadline = time.monotonic() + seconds

    def progress(status: int, remaining: int, total: int) -> None:
        if status in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) and time.monotonic() > deadline:
            raise error(seconds)

    return progress


def snapshot(db: sqlite3.Connection, tmp: Path, progress: Progress) -> None:
    """Write a consistent copy of database ``db`` into the new file ``tmp``."""
    _fs.create_new(tmp)
    dest = sqlite3.connect(tmp, isolation_level=None)
    try:
        dest.execute("PRAGMA journal_mode=OFF")  # a temp file, fsynced and renamed by the caller
        dest.execute("PRAGMA synchronous=OFF")
        db.backup(dest, pages=-1, progress=progress, sleep=BUSY_POLL)  # one read transaction
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
    locked = busy_guard(
        lambda seconds: TimeoutError(
            f"{source} stayed locked by another process for {seconds:g} s; "
            "back it up when its writer pauses"
        )
    )
    try:
        snapshot(db, tmp, locked)
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
