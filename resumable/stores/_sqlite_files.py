"""The files of an SQLite store, checked before SQLite opens them (see :mod:`resumable._trust`).

SQLite opens its files by name. A symlinked database path it resolves (``realpath``-like) and
follows: it opens, creates or overwrites the file the link points to, and keeps the ``-wal``,
``-shm`` and ``-journal`` files beside that one. The sidecars it opens with ``O_NOFOLLOW``
(a symlink there fails, with "unable to open database file" or "database is locked"), but it
adopts any regular file there: it replays a ``-wal``'s frames and a hot ``-journal`` into the
database, so whoever plants one writes any record, a pickle included. The Python driver offers
no ``SQLITE_OPEN_NOFOLLOW``. So, before each connection (once per store and process, never per
commit):

- a symlink of yours or root's to the database (or on the way to it) is resolved, another
  user's refused (:func:`resumable._trust.resolve_file`); the directory is created or checked
  (:func:`resumable._fs.makedirs`), and the database is opened by its real path (no symlink
  left for SQLite to resolve);
- the database file is created here if missing (``O_EXCL | O_NOFOLLOW``, 0600), else looked at
  with ``lstat``: it must be a regular file of yours or root's with one link (a symlink
  planted after the resolution is refused);
- each sidecar that exists passes the same check (a link is refused here with a message that
  names it, rather than by SQLite with one that does not);
- where other users may add names (a sticky directory such as ``/tmp``, or one listed in
  ``RESUMABLE_SHARED_DIRS``), the sidecars of an existing database of yours are created here,
  empty and owner-only, so that SQLite opens files that are yours (in a sticky directory no one
  else can remove or rename them). Without that, another user could put one there between this
  check and SQLite's open. SQLite removes ``-wal`` and ``-shm`` when the last connection
  closes (the next open creates them again); the empty ``-journal`` stays (SQLite reads an
  empty journal as no journal), keeping the name yours. Two windows stay open, in such
  directories only: while a new database gets its tables (SQLite makes its journal and WAL
  itself), and while another process's last connection is removing the sidecars as this one
  opens. A directory of your own (the default ``.resumable/``) has neither;
- after connecting and reading, the path must still be the file that was checked (same device
  and inode) and every sidecar that now exists must pass the check.

A database file of yours that others may read is made owner-only, without following a link
and without ever closing a descriptor of it that could carry SQLite's locks: see
:func:`_owner_only`.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from resumable import _fs, _trust
from resumable.errors import UnsafePath

__all__ = ["SIDECARS", "check_opened", "check_sidecars", "prepare"]

#: The files SQLite keeps beside a database, by suffix.
SIDECARS = ("-wal", "-shm", "-journal")

#: A descriptor that names a file without opening it for I/O (Linux). Closing it does not drop
#: the POSIX record locks this process holds on the file (the kernel skips its lock cleanup
#: for such descriptors), which closing any other descriptor of it would.
_O_PATH: int | None = getattr(os, "O_PATH", None)


def _sidecar(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def prepare(path: Path) -> tuple[Path, os.stat_result]:
    """Check (or create) database ``path`` and its sidecars; return its real path and status.

    Raises:
        UnsafePath: the directory, the database or a sidecar is unsafe (see the module doc).
    """
    # A symlink of yours or root's (on the way, or as the database's own name) is followed,
    # so SQLite gets a path with none; another user's is refused.
    target = _trust.resolve_file(path)
    folder = _fs.makedirs(target.parent)
    real = folder / target.name
    st = _fs.lstat_or_none(real)
    created = False
    if st is None:
        try:
            _fs.create_new(real)
            created = True
        except FileExistsError:  # another process was first: its file is checked below
            pass
        st = os.lstat(real)
    if stat.S_ISLNK(st.st_mode):
        raise UnsafePath(
            real,
            "it is a symbolic link (SQLite would open the file it points to and write its "
            "-wal, -shm and -journal files beside that one)",
            "give the real path of the database, or remove the link",
        )
    _trust.check_file(real, st)
    _owner_only(real, st)
    if not created and st.st_uid == os.geteuid() and _crowded(folder):
        for suffix in SIDECARS:
            with contextlib.suppress(FileExistsError):
                _fs.create_new(_sidecar(real, suffix))
    for suffix in SIDECARS:
        side = _sidecar(real, suffix)
        found = _fs.lstat_or_none(side)
        if found is not None:
            _trust.check_file(side, found)
            _owner_only(side, found)
    return real, st


def check_opened(path: Path, st: os.stat_result) -> None:
    """Once SQLite has opened and read the database: refuse it if it was replaced meanwhile.

    ``path`` must still be the file ``st`` describes, and each sidecar that exists now must
    pass :func:`_trust.check_file`.

    Raises:
        UnsafePath: the file was replaced, or a sidecar is unsafe.
    """
    now = _fs.lstat_or_none(path)
    if now is None or not os.path.samestat(now, st):
        raise UnsafePath(
            path,
            "it was removed or replaced while SQLite opened it, so what SQLite opened is not "
            "the file that was checked",
            "find out who changes files in its directory, then run again",
        )
    check_sidecars(path)


def check_sidecars(path: Path) -> None:
    """Refuse the database at ``path`` if a sidecar that exists fails :func:`_trust.check_file`.

    SQLite opens them by name, through a symlink if there is one, and replays what a ``-wal``
    or a hot ``-journal`` holds.

    Raises:
        UnsafePath: a sidecar is a symlink, not a regular file, a hard link or another's file.
    """
    for suffix in SIDECARS:
        side = _sidecar(path, suffix)
        found = _fs.lstat_or_none(side)
        if found is not None:
            _trust.check_file(side, found)


def _crowded(folder: Path) -> bool:
    """Whether users other than its owner may add names to directory ``folder``.

    ``folder`` passed :func:`_trust.check_dir`: others may write it only if it is sticky, its
    group is its owner's private one, or it is shared on purpose.
    """
    mode = os.lstat(folder).st_mode
    return bool(mode & (stat.S_IWGRP | stat.S_IWOTH)) or _trust.shared(folder)


def _owner_only(path: Path, st: os.stat_result) -> None:
    """Make ``path`` (your regular file, status ``st``) mode 0600 if others may read it.

    Never a path-based ``chmod`` (it follows a link swapped in meanwhile). Nor ``fchmod`` on a
    descriptor opened for reading: closing that descriptor would drop every POSIX lock this
    process's SQLite connections hold on the file (SQLite locks with ``fcntl``). Another store
    of this process may have it open: its connection holds a SHARED lock on the database for
    as long as it is open in WAL mode, and without it another process takes itself for the
    last connection and checkpoints and removes the WAL under this one. An ``O_PATH``
    descriptor (Linux) carries no such effect: it is opened without following a link,
    compared with ``st``, and the mode set through ``/proc/self/fd``. Where there is neither
    (other systems, no ``/proc``), the mode is left as it is: a file the library creates is
    0600 from its first instant anyway, and SQLite gives its sidecars the database's mode.
    """
    if not st.st_mode & 0o077 or st.st_uid != os.geteuid() or _O_PATH is None:
        return
    fd = os.open(path, _O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        now = os.fstat(fd)
        if not os.path.samestat(now, st):
            raise UnsafePath(path, "it was replaced while it was checked", "run again")
        with contextlib.suppress(FileNotFoundError):  # no /proc: leave the mode
            Path(f"/proc/self/fd/{fd}").chmod(0o600)
    finally:
        os.close(fd)
